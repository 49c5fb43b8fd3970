/* e2e_hello.c — the first frame of a connection: HELLO accepted with what
 * HELLO_OK announces, and every way a HELLO is refused (token, ids, protocol
 * version, body, a first frame that is not HELLO), each followed by a close. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "token.h"

static uint64_t abs_diff(uint64_t a, uint64_t b) { return a > b ? a - b : b - a; }

static void hello_with_valid_token_gets_hello_ok(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--heartbeat-ms", "12345", "--max-frame", "65536", NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "alice", "phone", NULL) == 0);
  Hubu__V1__HelloOk *ok = NULL;
  if (EXPECT_HELLO_OK(fd, &ok)) {
    CHECK(ok->conn_id > 0);
    uint64_t wall_ms = (uint64_t)time(NULL) * 1000u;
    CHECKF(abs_diff(ok->server_time_ms, wall_ms) < 5000, "server_time_ms %llu is not near now (%llu)",
           (unsigned long long)ok->server_time_ms, (unsigned long long)wall_ms);
    CHECK_EQ(ok->heartbeat_ms, 12345);
    CHECK_EQ(ok->max_frame, 65536);
    CHECK_EQ(ok->last_client_id, 0);
    CHECK(ok->server && ok->server[0] != '\0');
  }
  /* A second connection of the same user gets another conn_id. */
  int fd2 = e2e_connect(s.port);
  REQUIRE(fd2 >= 0);
  CHECK(e2e_send_hello(fd2, "alice", "laptop", NULL) == 0);
  Hubu__V1__HelloOk *ok2 = NULL;
  if (EXPECT_HELLO_OK(fd2, &ok2) && ok) CHECKF(ok2->conn_id != ok->conn_id, "two connections share conn_id");
  CHECK(EXPECT_ALIVE(fd, 1));
  CHECK(EXPECT_ALIVE(fd2, 2));
  if (ok) hubu__v1__hello_ok__free_unpacked(ok, NULL);
  if (ok2) hubu__v1__hello_ok__free_unpacked(ok2, NULL);
  close(fd);
  close(fd2);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_ok_announces_default_heartbeat_and_max_frame(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "alice", "phone", NULL) == 0);
  Hubu__V1__HelloOk *ok = NULL;
  if (EXPECT_HELLO_OK(fd, &ok)) {
    CHECK_EQ(ok->heartbeat_ms, 30000);
    CHECK_EQ(ok->max_frame, 1048576);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* Sends HELLO(user, device, token) on a new connection and expects ERROR code, then a close. */
static void expect_hello_refused(const e2e_server *s, const char *what, const char *user, const char *device,
                                 const char *token, Hubu__V1__Code code) {
  int fd = e2e_connect(s->port);
  REQUIRE(fd >= 0);
  fprintf(stderr, "  HELLO with %s\n", what);
  CHECK(e2e_send_hello(fd, user, device, token) == 0);
  if (!EXPECT_ERROR(fd, code) || !EXPECT_EOF(fd)) fprintf(stderr, "  ... the case was: HELLO with %s\n", what);
  close(fd);
}

static void hello_with_token_of_another_secret_is_unauthenticated_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token_raw("another-secret", "alice", (uint64_t)time(NULL) + 3600, tok, sizeof tok);
  expect_hello_refused(&s, "a token minted with another secret", "alice", "phone", tok,
                       HUBU__V1__CODE__UNAUTHENTICATED);
  /* The same token with one MAC digit changed. */
  e2e_token_raw(E2E_SECRET, "alice", (uint64_t)time(NULL) + 3600, tok, sizeof tok);
  size_t n = strlen(tok);
  tok[n - 1] = tok[n - 1] == '0' ? '1' : '0';
  expect_hello_refused(&s, "a tampered MAC", "alice", "phone", tok, HUBU__V1__CODE__UNAUTHENTICATED);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_with_expired_token_is_unauthenticated_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token_raw(E2E_SECRET, "alice", (uint64_t)time(NULL) - 10, tok, sizeof tok);
  expect_hello_refused(&s, "a token expired 10 s ago", "alice", "phone", tok, HUBU__V1__CODE__UNAUTHENTICATED);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_with_another_users_token_is_unauthenticated_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token("bob", tok);
  expect_hello_refused(&s, "bob's token for user alice", "alice", "phone", tok, HUBU__V1__CODE__UNAUTHENTICATED);
  /* alice.x's token must not pass for alice (user ids contain dots). */
  e2e_token("alice.x", tok);
  expect_hello_refused(&s, "alice.x's token for user alice", "alice", "phone", tok, HUBU__V1__CODE__UNAUTHENTICATED);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_with_garbage_token_is_unauthenticated_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  expect_hello_refused(&s, "token \"garbage\"", "alice", "phone", "garbage", HUBU__V1__CODE__UNAUTHENTICATED);
  expect_hello_refused(&s, "an empty token", "alice", "phone", "", HUBU__V1__CODE__UNAUTHENTICATED);
  expect_hello_refused(&s, "token \"v1.alice.99999999999.zz\"", "alice", "phone", "v1.alice.99999999999.zz",
                       HUBU__V1__CODE__UNAUTHENTICATED);
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  memcpy(tok, "v2", 2);
  expect_hello_refused(&s, "a token of scheme v2", "alice", "phone", tok, HUBU__V1__CODE__UNAUTHENTICATED);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_with_invalid_user_or_device_id_is_invalid_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char long65[66];
  memset(long65, 'a', 65);
  long65[65] = '\0';
  const char *bad[] = {"", long65, "al ice", "alice/x", "al:ice", "ali\xc3\xa9"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char what[160], tok[256];
    /* A token computed by the scheme for that very user id: only the id is wrong. */
    e2e_token_raw(E2E_SECRET, bad[i], (uint64_t)time(NULL) + 3600, tok, sizeof tok);
    snprintf(what, sizeof what, "user_id \"%s\" (%zu bytes)", bad[i], strlen(bad[i]));
    expect_hello_refused(&s, what, bad[i], "phone", tok, HUBU__V1__CODE__INVALID);
    snprintf(what, sizeof what, "device_id \"%s\" (%zu bytes)", bad[i], strlen(bad[i]));
    expect_hello_refused(&s, what, "alice", bad[i], NULL, HUBU__V1__CODE__INVALID);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_accepts_64_byte_ids_of_the_whole_alphabet(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  const char *alphabet = "ABCXYZabcxyz0189_.@-";
  char id[65];
  for (int i = 0; i < 64; i++) id[i] = alphabet[i % 20];
  id[64] = '\0';
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, id, id, NULL) == 0);
  CHECK(EXPECT_HELLO_OK(fd, NULL));
  close(fd);
  fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "a", "b", NULL) == 0);
  CHECK(EXPECT_HELLO_OK(fd, NULL));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static int send_hello_version(int fd, uint32_t version) {
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = version;
  h.user_id = "alice";
  h.device_id = "phone";
  h.token = tok;
  return e2e_send_msg(fd, HUBU_FRAME_HELLO, &h.base);
}

static void hello_with_protocol_version_2_is_unsupported_version_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(send_hello_version(fd, 2) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__UNSUPPORTED_VERSION));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_with_protocol_version_0_or_1_is_accepted(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  for (uint32_t v = 0; v <= 1; v++) {
    int fd = e2e_connect(s.port);
    REQUIRE(fd >= 0);
    CHECK(send_hello_version(fd, v) == 0);
    CHECKF(EXPECT_HELLO_OK(fd, NULL), "protocol_version %u refused", v);
    CHECK(EXPECT_ALIVE(fd, 7));
    close(fd);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_with_undecodable_body_is_bad_body_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  /* field 2 (user_id) announces 16 bytes, one follows */
  static const uint8_t body[] = {0x12, 0x10, 'a'};
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_frame(fd, HUBU_FRAME_HELLO, 0, body, sizeof body) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_BODY));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void first_frame_other_than_hello_is_unauthenticated_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_ping(fd, HUBU_FRAME_PING, 42) == 0);
  CHECK(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__UNAUTHENTICATED, HUBU_FRAME_PING));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(hello_with_valid_token_gets_hello_ok),
      E2E_CASE(hello_ok_announces_default_heartbeat_and_max_frame),
      E2E_CASE(hello_with_token_of_another_secret_is_unauthenticated_and_closed),
      E2E_CASE(hello_with_expired_token_is_unauthenticated_and_closed),
      E2E_CASE(hello_with_another_users_token_is_unauthenticated_and_closed),
      E2E_CASE(hello_with_garbage_token_is_unauthenticated_and_closed),
      E2E_CASE(hello_with_invalid_user_or_device_id_is_invalid_and_closed),
      E2E_CASE(hello_accepts_64_byte_ids_of_the_whole_alphabet),
      E2E_CASE(hello_with_protocol_version_2_is_unsupported_version_and_closed),
      E2E_CASE(hello_with_protocol_version_0_or_1_is_accepted),
      E2E_CASE(hello_with_undecodable_body_is_bad_body_and_closed),
      E2E_CASE(first_frame_other_than_hello_is_unauthenticated_and_closed),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

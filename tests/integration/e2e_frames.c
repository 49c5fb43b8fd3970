/* e2e_frames.c — the frame layer on a live connection: header errors that
 * close (magic, version, size), errors that leave the connection open
 * (unknown or wrong-direction type, flags, a bad body), PING/PONG, and frames
 * split byte by byte or packed a hundred to a write. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "wire.h"

/* A header with any magic and version, and no body. */
static int send_header(int fd, uint8_t magic, uint8_t version, uint8_t type, uint32_t length) {
  uint8_t h[HUBU_FRAME_HEADER_SIZE];
  hubu_frame_header_encode(h, type, 0, length);
  h[0] = magic;
  h[1] = version;
  return e2e_send_raw(fd, h, sizeof h);
}

static void bad_magic_is_bad_frame_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  /* before HELLO */
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(send_header(fd, 0x5A, 1, HUBU_FRAME_HELLO, 0) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_FRAME));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  /* after HELLO_OK */
  fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(send_header(fd, 0x00, 1, HUBU_FRAME_PING, 0) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_FRAME));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void header_version_2_is_unsupported_version_and_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(send_header(fd, HUBU_FRAME_MAGIC, 2, HUBU_FRAME_HELLO, 0) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__UNSUPPORTED_VERSION));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(send_header(fd, HUBU_FRAME_MAGIC, 2, HUBU_FRAME_PING, 0) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__UNSUPPORTED_VERSION));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void frame_over_max_frame_is_too_large_before_its_body_arrives(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-frame", "1024", NULL) == 0);
  /* after HELLO_OK, which announces the limit */
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "alice", "d1", NULL) == 0);
  Hubu__V1__HelloOk *ok = NULL;
  if (EXPECT_HELLO_OK(fd, &ok)) {
    CHECK_EQ(ok->max_frame, 1024);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  /* A PING body of exactly 1024 bytes is within the limit: time_ms = 5 and
   * an unknown length-delimited field 2 of 1019 bytes (ignored). */
  uint8_t body[1024];
  memset(body, 'x', sizeof body);
  body[0] = 0x08, body[1] = 0x05, body[2] = 0x12, body[3] = 0xFB, body[4] = 0x07;
  CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, body, sizeof body) == 0);
  CHECK(EXPECT_PONG(fd, 5));
  /* 1025: refused from the header alone; no body follows. */
  CHECK(send_header(fd, HUBU_FRAME_MAGIC, 1, HUBU_FRAME_PING, 1025) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__FRAME_TOO_LARGE));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  /* before HELLO */
  fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(send_header(fd, HUBU_FRAME_MAGIC, 1, HUBU_FRAME_HELLO, 1025) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__FRAME_TOO_LARGE));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  /* a length near 4 GiB */
  fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(send_header(fd, HUBU_FRAME_MAGIC, 1, HUBU_FRAME_PING, 0xFFFFFFFFu) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__FRAME_TOO_LARGE));
  CHECK(EXPECT_EOF(fd));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void unknown_type_is_unsupported_type_and_connection_stays_open(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(e2e_send_frame(fd, 0x7F, 0, NULL, 0) == 0);
  CHECK(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__UNSUPPORTED_TYPE, 0x7F));
  CHECK(EXPECT_ALIVE(fd, 11));
  /* With a body, and a PING right behind it in the same write: the body is skipped. */
  hubu_buf b = {0};
  uint8_t h[HUBU_FRAME_HEADER_SIZE];
  hubu_frame_header_encode(h, 0x7F, 0, 10);
  hubu_buf_append(&b, h, sizeof h);
  hubu_buf_append(&b, "\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05", 10);
  hubu_wire_append_ping(&b, HUBU_FRAME_PING, 12);
  CHECK(e2e_send_raw(fd, hubu_buf_head(&b), hubu_buf_size(&b)) == 0);
  hubu_buf_free(&b);
  CHECK(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__UNSUPPORTED_TYPE, 0x7F));
  CHECK(EXPECT_PONG(fd, 12));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void nonzero_flags_is_bad_frame_and_connection_stays_open(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  static const uint8_t flags[] = {0x01, 0x80};
  for (size_t i = 0; i < sizeof flags; i++) {
    static const uint8_t ping_body[] = {0x08, 0x09}; /* time_ms = 9 */
    CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, flags[i], ping_body, sizeof ping_body) == 0);
    CHECKF(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_FRAME), "PING with flags 0x%02x", flags[i]);
    CHECKF(EXPECT_ALIVE(fd, 20 + i), "after PING with flags 0x%02x", flags[i]);
  }
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* time_ms (field 1, varint) with its varint cut short */
static const uint8_t bad_ping_body[] = {0x08, 0x80};

static void undecodable_ping_is_bad_body_and_connection_stays_open(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, bad_ping_body, sizeof bad_ping_body) == 0);
  CHECK(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__BAD_BODY, HUBU_FRAME_PING));
  CHECK(EXPECT_ALIVE(fd, 31));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void fifth_undecodable_body_closes_the_connection(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  for (int i = 1; i <= 4; i++) {
    CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, bad_ping_body, sizeof bad_ping_body) == 0);
    CHECKF(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_BODY), "BAD_BODY number %d", i);
  }
  CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, bad_ping_body, sizeof bad_ping_body) == 0);
  /* the fifth: ERROR BAD_BODY (or GOAWAY), then the close */
  e2e_frame f;
  int r = e2e_read_frame(fd, E2E_WAIT_MS, &f);
  if (r == E2E_READ_OK) {
    int ok_frame = f.type == HUBU_FRAME_GOAWAY;
    if (f.type == HUBU_FRAME_ERROR) {
      Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, f.len, f.body);
      ok_frame = e && e->code == HUBU__V1__CODE__BAD_BODY;
      if (e) hubu__v1__error__free_unpacked(e, NULL);
    }
    CHECKF(ok_frame, "after the fifth bad body: frame type 0x%02x instead of ERROR BAD_BODY and a close", f.type);
    e2e_frame_free(&f);
    CHECK(EXPECT_EOF_AFTER_GOAWAY(fd, E2E_WAIT_MS));
  } else {
    CHECKF(r == E2E_READ_EOF, "after the fifth bad body: %s", e2e_read_result_name(r));
  }
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void second_hello_is_invalid_and_connection_stays_open(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "alice", "d1", NULL) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__INVALID));
  CHECK(EXPECT_ALIVE(fd, 41));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void server_to_client_types_from_client_are_unsupported_type_and_connection_stays_open(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  static const uint8_t types[] = {
      HUBU_FRAME_HELLO_OK,    HUBU_FRAME_ERROR,       HUBU_FRAME_GOAWAY,    HUBU_FRAME_SEND_ACK,    HUBU_FRAME_PUSH,
      HUBU_FRAME_SYNC_RESULT, HUBU_FRAME_PULL_RESULT, HUBU_FRAME_PULL_HINT, HUBU_FRAME_CALL_RESULT, HUBU_FRAME_EVENT};
  for (size_t i = 0; i < sizeof types; i++) {
    CHECK(e2e_send_frame(fd, types[i], 0, NULL, 0) == 0);
    CHECKF(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__UNSUPPORTED_TYPE, types[i]), "client sent %s",
           hubu_frame_type_name(types[i]));
  }
  CHECK(EXPECT_ALIVE(fd, 51));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void ping_gets_pong_echoing_time_ms(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  const uint64_t values[] = {1, 0, 1700000000123ull, UINT64_MAX, hubu_now_ms()};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) CHECK(EXPECT_ALIVE(fd, values[i]));
  /* an empty body is Ping{time_ms = 0} */
  CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, NULL, 0) == 0);
  CHECK(EXPECT_PONG(fd, 0));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* HELLO for alice/d1 followed by pings PING{1..n}, in one buffer. */
static void append_hello_and_pings(hubu_buf *b, int n) {
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = "alice";
  h.device_id = "d1";
  h.token = tok;
  hubu_wire_append(b, HUBU_FRAME_HELLO, &h.base);
  for (int i = 1; i <= n; i++) hubu_wire_append_ping(b, HUBU_FRAME_PING, (uint64_t)i);
}

static void hello_and_ping_sent_one_byte_per_write_are_served(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = e2e_connect(s.port); /* TCP_NODELAY: one segment per byte */
  REQUIRE(fd >= 0);
  hubu_buf b = {0};
  append_hello_and_pings(&b, 1);
  const uint8_t *p = hubu_buf_head(&b);
  for (size_t i = 0; i < hubu_buf_size(&b); i++) {
    if (e2e_send_raw(fd, p + i, 1) != 0) {
      CHECKF(0, "write of byte %zu failed", i);
      break;
    }
    e2e_sleep_ms(1);
  }
  hubu_buf_free(&b);
  CHECK(EXPECT_HELLO_OK(fd, NULL));
  CHECK(EXPECT_PONG(fd, 1));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_and_100_pings_in_one_write_get_100_pongs_in_order(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  hubu_buf b = {0};
  append_hello_and_pings(&b, 100);
  ssize_t w = send(fd, hubu_buf_head(&b), hubu_buf_size(&b), MSG_NOSIGNAL);
  CHECKF(w == (ssize_t)hubu_buf_size(&b), "one write of %zu bytes wrote %zd", hubu_buf_size(&b), w);
  hubu_buf_free(&b);
  CHECK(EXPECT_HELLO_OK(fd, NULL));
  for (int i = 1; i <= 100; i++)
    if (!EXPECT_PONG(fd, (uint64_t)i)) break;
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void garbage_first_bytes_are_bad_frame_and_other_connections_unaffected(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  int good = CONNECT_HELLO(s.port, "alice");
  REQUIRE(good >= 0);
  srand(20261123);
  for (int round = 0; round < 5; round++) {
    uint8_t junk[64];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)rand();
    if (junk[0] == HUBU_FRAME_MAGIC) junk[0] = 0x00;
    int fd = e2e_connect(s.port);
    REQUIRE(fd >= 0);
    CHECK(e2e_send_raw(fd, junk, sizeof junk) == 0);
    CHECKF(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_FRAME), "garbage round %d (first byte 0x%02x)", round, junk[0]);
    CHECK(EXPECT_EOF(fd));
    close(fd);
    CHECKF(EXPECT_ALIVE(good, 100 + (uint64_t)round), "the other client after garbage round %d", round);
  }
  /* and a new client is still served */
  int fd = CONNECT_HELLO(s.port, "bob");
  CHECK(fd >= 0);
  if (fd >= 0) close(fd);
  close(good);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(bad_magic_is_bad_frame_and_closed),
      E2E_CASE(header_version_2_is_unsupported_version_and_closed),
      E2E_CASE(frame_over_max_frame_is_too_large_before_its_body_arrives),
      E2E_CASE(unknown_type_is_unsupported_type_and_connection_stays_open),
      E2E_CASE(nonzero_flags_is_bad_frame_and_connection_stays_open),
      E2E_CASE(undecodable_ping_is_bad_body_and_connection_stays_open),
      E2E_CASE(fifth_undecodable_body_closes_the_connection),
      E2E_CASE(second_hello_is_invalid_and_connection_stays_open),
      E2E_CASE(server_to_client_types_from_client_are_unsupported_type_and_connection_stays_open),
      E2E_CASE(ping_gets_pong_echoing_time_ms),
      E2E_CASE(hello_and_ping_sent_one_byte_per_write_are_served),
      E2E_CASE(hello_and_100_pings_in_one_write_get_100_pongs_in_order),
      E2E_CASE(garbage_first_bytes_are_bad_frame_and_other_connections_unaffected),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

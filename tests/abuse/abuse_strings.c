/* abuse_strings.c — ids that are not what a proto3 `string` promises: bytes
 * that are not UTF-8, or a NUL inside. protobuf-c takes any bytes and hands a
 * string on cut at its first NUL, so "d:alice:bob\0junk" was read as
 * "d:alice:bob" and a HELLO for "alice\0junk" with alice's token logged in as
 * alice; and an invalid session id was echoed back in SEND_ACK.session_id or
 * PULL_RESULT.session_id, a reply a strict decoder rejects. Now every string
 * field of HELLO, SEND, PULL, SYNC and DELIVER_ACK must be UTF-8 without NUL,
 * else INVALID, and a session id that is not one is echoed as "".
 *
 * Before: the HELLO got HELLO_OK, the SEND was stored in d:alice:bob (OK),
 * the PULL and the SYNC answered OK, the DELIVER_ACK moved the cursor. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "abuse.h"

/* A body built by hand (protobuf-c would stop at the NUL): fields appended. */
typedef struct {
  uint8_t b[1024];
  size_t n;
} raw_body;

static void put_varint(raw_body *r, uint32_t field, uint64_t v) {
  r->n += hubu_varint_put(r->b + r->n, (uint64_t)field << 3);
  r->n += hubu_varint_put(r->b + r->n, v);
}

static void put_bytes(raw_body *r, uint32_t field, const void *p, size_t len) {
  r->n += hubu_varint_put(r->b + r->n, (uint64_t)field << 3 | 2);
  r->n += hubu_varint_put(r->b + r->n, len);
  memcpy(r->b + r->n, p, len);
  r->n += len;
}

#define NUL_SESSION "d:alice:bob\0junk"
#define NUL_SESSION_LEN (sizeof NUL_SESSION - 1)

static void hello_with_nul_in_user_or_device_is_invalid(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  char token[512];
  e2e_token("alice", token);
  static const struct {
    const char *user, *device;
    size_t ulen, dlen;
  } bad[] = {
      {"alice\0junk", "phone", 10, 5},
      {"alice", "phone\0junk", 5, 10},
      {"alice", "ph\xffone", 5, 6},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int fd = abuse_connect(s.port, 0);
    REQUIRE(fd >= 0);
    raw_body r = {.n = 0};
    put_varint(&r, 1, 1);
    put_bytes(&r, 2, bad[i].user, bad[i].ulen);
    put_bytes(&r, 3, bad[i].device, bad[i].dlen);
    put_bytes(&r, 4, token, strlen(token));
    REQUIRE(e2e_send_frame(fd, HUBU_FRAME_HELLO, 0, r.b, r.n) == 0);
    CHECKF(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__INVALID, HUBU_FRAME_HELLO), "HELLO %zu: want ERROR INVALID", i);
    close(fd);
  }
  /* the clean login still works */
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  CHECK(a >= 0);
  if (a >= 0) close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void requests_with_nul_or_non_utf8_session_ids_are_invalid_and_echo_nothing(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  REQUIRE(a >= 0);
  static const struct {
    const char *id;
    size_t len;
  } bad[] = {{NUL_SESSION, NUL_SESSION_LEN}, {"d:alice:b\xffob", 12}};
  uint64_t cid = 1;
  for (size_t i = 0; i < 2; i++) {
    /* SEND: SEND_ACK INVALID, session_id "" */
    raw_body r = {.n = 0};
    put_varint(&r, 1, cid);
    put_bytes(&r, 2, bad[i].id, bad[i].len);
    put_bytes(&r, 3, "hi", 2);
    REQUIRE(e2e_send_frame(a, HUBU_FRAME_SEND, 0, r.b, r.n) == 0);
    Hubu__V1__SendAck *ack = ABUSE_ACK(a, cid);
    cid++;
    if (CHECK(ack != NULL)) {
      CHECKF(ack->code == HUBU__V1__CODE__INVALID, "SEND %zu: %s \"%s\" (want INVALID)", i, hubu_code_name(ack->code),
             ack->reason);
      CHECKF(ack->session_id[0] == '\0', "SEND %zu: session_id \"%s\" echoed", i, ack->session_id);
      hubu__v1__send_ack__free_unpacked(ack, NULL);
    }
    /* PULL: PULL_RESULT INVALID, session_id "" */
    r.n = 0;
    put_varint(&r, 1, 7);
    put_bytes(&r, 2, bad[i].id, bad[i].len);
    REQUIRE(e2e_send_frame(a, HUBU_FRAME_PULL, 0, r.b, r.n) == 0);
    e2e_frame f;
    if (abuse_expect_frame_at(__FILE__, __LINE__, a, HUBU_FRAME_PULL_RESULT, 1, E2E_WAIT_MS, &f)) {
      Hubu__V1__PullResult *pr = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
      e2e_frame_free(&f);
      if (CHECK(pr != NULL)) {
        CHECKF(pr->code == HUBU__V1__CODE__INVALID, "PULL %zu: %s (want INVALID)", i, hubu_code_name(pr->code));
        CHECKF(pr->session_id[0] == '\0', "PULL %zu: session_id \"%s\" echoed", i, pr->session_id);
        hubu__v1__pull_result__free_unpacked(pr, NULL);
      }
    }
    /* SYNC with such a known cursor: SYNC_RESULT INVALID */
    raw_body cur = {.n = 0};
    put_bytes(&cur, 1, bad[i].id, bad[i].len);
    put_varint(&cur, 2, 1);
    r.n = 0;
    put_varint(&r, 1, 9);
    put_bytes(&r, 2, cur.b, cur.n);
    REQUIRE(e2e_send_frame(a, HUBU_FRAME_SYNC, 0, r.b, r.n) == 0);
    if (abuse_expect_frame_at(__FILE__, __LINE__, a, HUBU_FRAME_SYNC_RESULT, 1, E2E_WAIT_MS, &f)) {
      Hubu__V1__SyncResult *sr = hubu__v1__sync_result__unpack(NULL, f.len, f.body);
      e2e_frame_free(&f);
      if (CHECK(sr != NULL)) {
        CHECKF(sr->code == HUBU__V1__CODE__INVALID, "SYNC %zu: %s (want INVALID)", i, hubu_code_name(sr->code));
        hubu__v1__sync_result__free_unpacked(sr, NULL);
      }
    }
    /* DELIVER_ACK with such a cursor: ERROR INVALID, the connection stays */
    r.n = 0;
    put_bytes(&r, 1, cur.b, cur.n);
    REQUIRE(e2e_send_frame(a, HUBU_FRAME_DELIVER_ACK, 0, r.b, r.n) == 0);
    CHECKF(EXPECT_ERROR_FT(a, HUBU__V1__CODE__INVALID, HUBU_FRAME_DELIVER_ACK), "DELIVER_ACK %zu: want ERROR INVALID",
           i);
    CHECK(EXPECT_ALIVE(a, 1000 + i));
  }
  /* nothing reached d:alice:bob */
  Hubu__V1__PullRequest pr = HUBU__V1__PULL_REQUEST__INIT;
  pr.request_id = 11;
  pr.session_id = "d:alice:bob";
  REQUIRE(e2e_send_msg(a, HUBU_FRAME_PULL, &pr.base) == 0);
  e2e_frame f;
  if (abuse_expect_frame_at(__FILE__, __LINE__, a, HUBU_FRAME_PULL_RESULT, 1, E2E_WAIT_MS, &f)) {
    Hubu__V1__PullResult *res = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
    e2e_frame_free(&f);
    if (CHECK(res != NULL)) {
      CHECKF(res->code == HUBU__V1__CODE__OK && res->n_messages == 0, "d:alice:bob: %s, %zu messages (want none)",
             hubu_code_name(res->code), res->n_messages);
      hubu__v1__pull_result__free_unpacked(res, NULL);
    }
  }
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(hello_with_nul_in_user_or_device_is_invalid),
      E2E_CASE(requests_with_nul_or_non_utf8_session_ids_are_invalid_and_echo_nothing),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

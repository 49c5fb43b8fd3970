/* abuse_sends.c — SENDs whose fields would break a promise later: a
 * client_id above 2^53 (the largest integer every JSON client can hold; one
 * at 2^64 - 1 made every later SEND of the device STALE) is refused with
 * INVALID and uses up nothing; a body too large for the PUSH and PULL_RESULT
 * that would carry it within max_frame is refused with INVALID "body too
 * large", and no PUSH or PULL_RESULT above max_frame is ever sent. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "abuse.h"

#define MAX_FRAME 65536u
#define SAFE_BODY (MAX_FRAME - 5120u) /* docs/protocol-notes.md: always accepted */

/* Sends one SEND (client_id, session, body of len bytes, content_type, meta
 * entries) and returns its SEND_ACK (NULL: reported). */
static Hubu__V1__SendAck *send_one(int fd, uint64_t client_id, const char *session, size_t len, const char *ctype,
                                   size_t n_meta, Hubu__V1__Send__MetaEntry **meta) {
  uint8_t *body = malloc(len ? len : 1);
  if (!body) return NULL;
  memset(body, 'b', len);
  Hubu__V1__Send s = HUBU__V1__SEND__INIT;
  s.client_id = client_id;
  s.session_id = (char *)session;
  s.body.data = body;
  s.body.len = len;
  s.content_type = (char *)(ctype ? ctype : "");
  s.n_meta = n_meta;
  s.meta = meta;
  int r = e2e_send_msg(fd, HUBU_FRAME_SEND, &s.base);
  free(body);
  if (r != 0) return NULL;
  return ABUSE_ACK(fd, client_id);
}

static void client_id_above_2_53_is_invalid_and_uses_up_nothing(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  REQUIRE(a >= 0);
  static const uint64_t too_big[] = {(1ull << 53) + 1, UINT64_MAX};
  for (size_t i = 0; i < 2; i++) {
    Hubu__V1__SendAck *ack = send_one(a, too_big[i], "d:alice:bob", 5, NULL, 0, NULL);
    if (CHECK(ack != NULL)) {
      CHECKF(ack->code == HUBU__V1__CODE__INVALID, "client_id %llu: %s \"%s\" (want INVALID)",
             (unsigned long long)too_big[i], hubu_code_name(ack->code), ack->reason);
      fprintf(stderr, "  client_id %llu: %s \"%s\"\n", (unsigned long long)too_big[i], hubu_code_name(ack->code),
              ack->reason);
      hubu__v1__send_ack__free_unpacked(ack, NULL);
    }
  }
  /* nothing was used up: client_id 1 is new, stored, and the mark says 1 */
  Hubu__V1__SendAck *ack = send_one(a, 1, "d:alice:bob", 5, NULL, 0, NULL);
  if (CHECK(ack != NULL)) {
    CHECKF(ack->code == HUBU__V1__CODE__OK && !ack->duplicate, "client_id 1 after the refused ones: %s \"%s\"",
           hubu_code_name(ack->code), ack->reason);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  close(a);
  a = abuse_connect(s.port, 0);
  REQUIRE(a >= 0 && e2e_send_hello(a, "alice", "phone", NULL) == 0);
  Hubu__V1__HelloOk *ok = NULL;
  if (CHECK(EXPECT_HELLO_OK(a, &ok))) {
    CHECK_EQ(ok->last_client_id, 1);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  /* 2^53 itself is the last one allowed */
  ack = send_one(a, 1ull << 53, "d:alice:bob", 5, NULL, 0, NULL);
  if (CHECK(ack != NULL)) {
    CHECKF(ack->code == HUBU__V1__CODE__OK, "client_id 2^53: %s \"%s\"", hubu_code_name(ack->code), ack->reason);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* The recipient's side: the next PUSH (PINGs answered, PULL_HINTs skipped);
 * checks its frame against max_frame, acknowledges it. Returns the seq of its
 * last message, 0 when none came. */
static uint64_t read_push(int fd, const char *session, uint32_t *max_seen) {
  e2e_frame f;
  if (!abuse_expect_frame_at(__FILE__, __LINE__, fd, HUBU_FRAME_PUSH, 1, E2E_WAIT_MS, &f)) return 0;
  if (f.len > *max_seen) *max_seen = f.len;
  CHECKF(f.len <= MAX_FRAME, "a PUSH frame of %u bytes (max_frame %u)", f.len, MAX_FRAME);
  Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, f.len, f.body);
  e2e_frame_free(&f);
  uint64_t seq = p && p->n_messages ? p->messages[p->n_messages - 1]->seq : 0;
  if (p) hubu__v1__push__free_unpacked(p, NULL);
  Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
  cur.session_id = (char *)session;
  cur.seq = seq;
  Hubu__V1__Cursor *curs[1] = {&cur};
  Hubu__V1__DeliverAck da = HUBU__V1__DELIVER_ACK__INIT;
  da.cursors = curs;
  da.n_cursors = 1;
  e2e_send_msg(fd, HUBU_FRAME_DELIVER_ACK, &da.base);
  return seq;
}

/* PULL of exactly seq, with the largest request_id: the PULL_RESULT frame fits. */
static void check_pull(int fd, const char *session, uint64_t seq, uint32_t *max_seen) {
  Hubu__V1__PullRequest pr = HUBU__V1__PULL_REQUEST__INIT;
  pr.request_id = UINT64_MAX;
  pr.session_id = (char *)session;
  pr.after_seq = seq - 1;
  pr.limit = 1;
  REQUIRE(e2e_send_msg(fd, HUBU_FRAME_PULL, &pr.base) == 0);
  e2e_frame f;
  if (!abuse_expect_frame_at(__FILE__, __LINE__, fd, HUBU_FRAME_PULL_RESULT, 1, E2E_WAIT_MS, &f)) return;
  if (f.len > *max_seen) *max_seen = f.len;
  CHECKF(f.len <= MAX_FRAME, "a PULL_RESULT frame of %u bytes (max_frame %u)", f.len, MAX_FRAME);
  Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
  e2e_frame_free(&f);
  CHECKF(r && r->n_messages == 1 && r->messages[0]->seq == seq, "PULL of seq %llu", (unsigned long long)seq);
  if (r) hubu__v1__pull_result__free_unpacked(r, NULL);
}

static void send_body_too_large_for_one_push_is_invalid_and_no_frame_exceeds_max_frame(void) {
  /* the longest names a direct session allows (128 bytes) and a 64-byte device */
  char a[64], b[64], session[160], device[65];
  memset(a, 'a', 62), a[62] = '\0';
  memset(b, 'b', 63), b[63] = '\0';
  memset(device, 'd', 64), device[64] = '\0';
  snprintf(session, sizeof session, "d:%s:%s", a, b);
  REQUIRE(strlen(session) == 128);
  char ctype[129];
  memset(ctype, 'c', 128), ctype[128] = '\0';
  /* the most meta a SEND may carry: 32 entries, 4096 bytes of keys and values */
  Hubu__V1__Send__MetaEntry entries[32], *meta[32];
  char keys[32][8], values[32][128];
  for (int i = 0; i < 32; i++) {
    hubu__v1__send__meta_entry__init(&entries[i]);
    snprintf(keys[i], sizeof keys[i], "k%02d", i);
    memset(values[i], 'v', 125), values[i][125] = '\0'; /* 3 + 125 = 128 bytes each, 4096 in all */
    entries[i].key = keys[i];
    entries[i].value = values[i];
    meta[i] = &entries[i];
  }

  e2e_server s;
  char mf[16];
  snprintf(mf, sizeof mf, "%u", MAX_FRAME);
  REQUIRE(e2e_server_start(&s, "--max-frame", mf, "--log-level", "warn", NULL) == 0);
  int sender = ABUSE_LOGIN(s.port, a, device);
  int recipient = ABUSE_LOGIN(s.port, b, "d1");
  REQUIRE(sender >= 0 && recipient >= 0);
  uint32_t max_push = 0, max_pull = 0;
  uint64_t cid = 0;

  /* a SEND frame of exactly max_frame: its body alone is nearly max_frame */
  {
    Hubu__V1__Send probe = HUBU__V1__SEND__INIT;
    probe.client_id = cid + 1;
    probe.session_id = session;
    probe.body.len = 0;
    size_t len = MAX_FRAME - protobuf_c_message_get_packed_size(&probe.base) - 1 - 3;
    probe.body.len = len;
    REQUIRE(protobuf_c_message_get_packed_size(&probe.base) == MAX_FRAME);
    Hubu__V1__SendAck *ack = send_one(sender, ++cid, session, len, NULL, 0, NULL);
    if (CHECK(ack != NULL)) {
      fprintf(stderr, "  a SEND frame of max_frame (body %zu): %s \"%s\"\n", len, hubu_code_name(ack->code),
              ack->reason);
      CHECKF(ack->code == HUBU__V1__CODE__INVALID && strstr(ack->reason, "body too large"),
             "body of %zu bytes in a SEND of max_frame: %s \"%s\" (want INVALID \"body too large\")", len,
             hubu_code_name(ack->code), ack->reason);
      if (ack->code == HUBU__V1__CODE__OK) {
        read_push(recipient, session, &max_push);
        check_pull(recipient, session, ack->seq, &max_pull);
      }
      hubu__v1__send_ack__free_unpacked(ack, NULL);
    }
  }
  CHECKF(max_push <= MAX_FRAME, "PUSH of %u bytes for a SEND of max_frame", max_push);

  /* the documented bound: max_frame - 5120 is accepted with the largest
   * content_type and meta, and its PUSH and PULL_RESULT fit */
  {
    Hubu__V1__SendAck *ack = send_one(sender, ++cid, session, SAFE_BODY, ctype, 32, meta);
    if (CHECK(ack != NULL)) {
      CHECKF(ack->code == HUBU__V1__CODE__OK, "a body of max_frame - 5120 with full meta: %s \"%s\"",
             hubu_code_name(ack->code), ack->reason);
      if (ack->code == HUBU__V1__CODE__OK) {
        CHECK_EQ(read_push(recipient, session, &max_push), ack->seq);
        check_pull(recipient, session, ack->seq, &max_pull);
      }
      hubu__v1__send_ack__free_unpacked(ack, NULL);
    }
  }

  /* bodies around the edge, without meta: each is refused or fits */
  int accepted = 0, refused = 0;
  size_t largest = 0;
  for (size_t len = MAX_FRAME - 700; len <= MAX_FRAME - 200; len += 20) {
    Hubu__V1__SendAck *ack = send_one(sender, ++cid, session, len, NULL, 0, NULL);
    if (!CHECK(ack != NULL)) break;
    if (ack->code == HUBU__V1__CODE__OK) {
      accepted++;
      largest = len;
      CHECK_EQ(read_push(recipient, session, &max_push), ack->seq);
      check_pull(recipient, session, ack->seq, &max_pull);
    } else {
      refused++;
      CHECKF(ack->code == HUBU__V1__CODE__INVALID && strstr(ack->reason, "body too large"), "body of %zu: %s \"%s\"",
             len, hubu_code_name(ack->code), ack->reason);
      cid--; /* a refused SEND uses up nothing */
    }
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  fprintf(stderr,
          "  bodies of max_frame - 700 .. - 200: %d accepted (largest %zu), %d refused; largest PUSH %u, "
          "PULL_RESULT %u bytes (max_frame %u)\n",
          accepted, largest, refused, max_push, max_pull, MAX_FRAME);
  CHECK(accepted > 0 && refused > 0);
  CHECK(max_push <= MAX_FRAME && max_pull <= MAX_FRAME);
  close(sender);
  close(recipient);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(client_id_above_2_53_is_invalid_and_uses_up_nothing),
      E2E_CASE(send_body_too_large_for_one_push_is_invalid_and_no_frame_exceeds_max_frame),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

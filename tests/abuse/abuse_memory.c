/* abuse_memory.c — what one logged-in client can make core hold with
 * well-formed requests (docs/security.md, "Memory a client can make the
 * server hold"): SENDs pipelined faster than the store writes them are
 * bounded in bytes, not only in count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "abuse.h"

#define MIB (1024l * 1024l)

/* 300 SENDs of a 1000000-byte body pipelined on one connection (the tails
 * kept small, so that only the SENDs waiting for the store count): before
 * the byte bound (--max-pending-send-bytes) only the count bound (1024)
 * paused the connection, and hubud held what the store had not written yet,
 * the decoded SEND and the message it becomes: a peak of ~330 MB here. With
 * the bound (4 MiB) the peak grows by ~110 MB (the device's last 32 sends,
 * kept for retries, and the allocator's and the store's own), and every
 * SEND is still answered OK. */
static void pipelined_large_sends_are_bounded_in_bytes(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", "--tail-cache-bytes", "1048576", "--fsync", "always", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  REQUIRE(a >= 0);
  long hwm0 = abuse_status_kb(s.pid, "VmHWM");
  enum { N = 300, LEN = 1000000 };
  uint8_t *body = malloc(LEN);
  REQUIRE(body != NULL);
  memset(body, 'm', LEN);
  for (uint64_t i = 1; i <= N; i++) {
    hubu_buf b = {0};
    REQUIRE(abuse_append_send(&b, i, "d:alice:bob", body, LEN) == 0);
    REQUIRE(e2e_send_raw(a, hubu_buf_head(&b), hubu_buf_size(&b)) == 0);
    hubu_buf_free(&b);
  }
  free(body);
  int ok = 0;
  for (uint64_t i = 1; i <= N; i++) {
    Hubu__V1__SendAck *ack = ABUSE_ACK(a, i);
    if (!ack) break;
    ok += ack->code == HUBU__V1__CODE__OK;
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECKF(ok == N, "%d of %d SENDs answered OK (nothing is refused)", ok, N);
  long hwm = abuse_status_kb(s.pid, "VmHWM");
  long bound_kb = (ABUSE_SANITIZED ? 300 : 200) * 1024;
  fprintf(stderr, "  VmHWM %ld KiB at login, %ld KiB after %d pipelined SENDs of %d bytes (bound +%ld KiB)\n", hwm0,
          hwm, N, LEN, bound_kb);
  CHECKF(hwm - hwm0 < bound_kb, "peak grew by %ld KiB (bound %ld KiB)", hwm - hwm0, bound_kb);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* One PULL of session after after_seq (limit 1); the message's seq and body
 * length, or 0 (reported). */
static uint64_t pull_one(int fd, uint64_t request_id, const char *session, uint64_t after_seq, size_t *body_len) {
  hubu_buf b = {0};
  REQUIRE(abuse_append_pull(&b, request_id, session, after_seq, 1) == 0);
  REQUIRE(e2e_send_raw(fd, hubu_buf_head(&b), hubu_buf_size(&b)) == 0);
  hubu_buf_free(&b);
  e2e_frame f;
  if (!abuse_expect_frame_at(__FILE__, __LINE__, fd, HUBU_FRAME_PULL_RESULT, 1, E2E_WAIT_MS, &f)) return 0;
  Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
  e2e_frame_free(&f);
  uint64_t seq = 0;
  if (CHECK(r && r->code == HUBU__V1__CODE__OK && r->n_messages == 1)) {
    seq = r->messages[0]->seq;
    *body_len = r->messages[0]->body.len;
    for (size_t i = 0; i < r->messages[0]->body.len; i++)
      if (r->messages[0]->body.data[i] != 't') {
        CHECKF(0, "PULL of %s after %llu: body byte %zu is %d", session, (unsigned long long)after_seq, i,
               r->messages[0]->body.data[i]);
        break;
      }
  }
  if (r) hubu__v1__pull_result__free_unpacked(r, NULL);
  return seq;
}

/* 50 messages of 1000000 bytes into each of 4 direct sessions: the tails
 * were bounded by count (512 messages each) and held each message twice
 * (its body and its encoded entry), ~400 MB here. Bounded in bytes
 * (--tail-cache-bytes, 64 MiB) and held once, hubud grows by ~150 MB (the
 * tails, the device's last sends, the allocator's own); a PULL below the
 * tail goes to the store and answers the same message. */
static void tails_are_bounded_in_bytes(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  REQUIRE(a >= 0);
  long hwm0 = abuse_status_kb(s.pid, "VmHWM");
  enum { SESSIONS = 4, N = 50, LEN = 1000000 };
  static const char *const sessions[SESSIONS] = {"d:alice:bob", "d:alice:carol", "d:alice:dave", "d:alice:erin"};
  uint8_t *body = malloc(LEN);
  REQUIRE(body != NULL);
  memset(body, 't', LEN);
  uint64_t cid = 0;
  for (int k = 0; k < SESSIONS; k++)
    for (int i = 0; i < N; i++) {
      hubu_buf b = {0};
      REQUIRE(abuse_append_send(&b, ++cid, sessions[k], body, LEN) == 0);
      REQUIRE(e2e_send_raw(a, hubu_buf_head(&b), hubu_buf_size(&b)) == 0);
      hubu_buf_free(&b);
      Hubu__V1__SendAck *ack = ABUSE_ACK(a, cid);
      REQUIRE(ack != NULL);
      CHECK(ack->code == HUBU__V1__CODE__OK);
      hubu__v1__send_ack__free_unpacked(ack, NULL);
    }
  free(body);
  long hwm = abuse_status_kb(s.pid, "VmHWM");
  long bound_kb = (ABUSE_SANITIZED ? 330 : 250) * 1024;
  fprintf(stderr, "  VmHWM %ld KiB at login, %ld KiB after %d messages of %d bytes in %d sessions (bound +%ld KiB)\n",
          hwm0, hwm, SESSIONS * N, LEN, SESSIONS, bound_kb);
  CHECKF(hwm - hwm0 < bound_kb, "peak grew by %ld KiB (bound %ld KiB)", hwm - hwm0, bound_kb);
  size_t len = 0;
  CHECK_EQ(pull_one(a, 1, sessions[0], 0, &len), 1); /* below the tail: from the store */
  CHECK_EQ(len, LEN);
  len = 0;
  CHECK_EQ(pull_one(a, 2, sessions[SESSIONS - 1], N - 1, &len), N); /* the newest: from the tail */
  CHECK_EQ(len, LEN);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* 100,000 PULLs for groups that do not exist (2.4 MB of requests): each
 * used to leave a cached empty session behind for 120 s, ~440 MB here. A
 * group the store does not know is answered FORBIDDEN and not kept; the
 * cache is bounded too (--session-cache-max). */
static void pulls_for_unknown_groups_keep_nothing(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  REQUIRE(a >= 0);
  long hwm0 = abuse_status_kb(s.pid, "VmHWM");
  enum { N = 100000, BATCH = 1000 };
  int forbidden = 0, answered = 0;
  for (int i = 0; i < N; i += BATCH) {
    hubu_buf b = {0};
    for (int j = i; j < i + BATCH; j++) {
      char sid[32];
      snprintf(sid, sizeof sid, "g:nope%d", j);
      REQUIRE(abuse_append_pull(&b, (uint64_t)j + 1, sid, 0, 10) == 0);
    }
    REQUIRE(e2e_send_raw(a, hubu_buf_head(&b), hubu_buf_size(&b)) == 0);
    hubu_buf_free(&b);
    for (int j = 0; j < BATCH; j++) {
      e2e_frame f;
      if (!abuse_expect_frame_at(__FILE__, __LINE__, a, HUBU_FRAME_PULL_RESULT, 1, E2E_WAIT_MS, &f)) break;
      Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
      e2e_frame_free(&f);
      answered++;
      forbidden += r && r->code == HUBU__V1__CODE__FORBIDDEN;
      if (r) hubu__v1__pull_result__free_unpacked(r, NULL);
    }
  }
  CHECKF(answered == N && forbidden == N, "%d of %d PULLs answered, %d FORBIDDEN", answered, N, forbidden);
  long hwm = abuse_status_kb(s.pid, "VmHWM");
  long bound_kb = (ABUSE_SANITIZED ? 150 : 100) * 1024;
  fprintf(stderr, "  VmHWM %ld KiB at login, %ld KiB after %d PULLs for unknown groups (bound +%ld KiB)\n", hwm0, hwm,
          N, bound_kb);
  CHECKF(hwm - hwm0 < bound_kb, "peak grew by %ld KiB (bound %ld KiB)", hwm - hwm0, bound_kb);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* KiB under the server's data directory (du), -1 when unreadable. */
static long data_kb(const e2e_server *s) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "du -sk '%s/data' 2>/dev/null", s->dir);
  FILE *p = popen(cmd, "r");
  long kb = -1;
  if (p) {
    if (fscanf(p, "%ld", &kb) != 1) kb = -1;
    pclose(p);
  }
  return kb;
}

/* DELIVER_ACKs with 200,000 cursors for made-up groups and other users'
 * direct sessions: each used to become a cursor in memory and a row in the
 * store (900,000 of them: 140 MB on disk; here ~860 KiB written within the
 * first sweeps, ~130 KiB now). Now a cursor is kept only for a
 * session the user may read; a frame with others gets one ERROR FORBIDDEN
 * (frame_type DELIVER_ACK) and nothing is kept. The user's own cursor goes
 * through without an answer. */
static void cursors_for_foreign_sessions_are_forbidden(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "alice", "phone");
  REQUIRE(a >= 0);
  enum { FRAMES = 10, PER = 20000 };
  static Hubu__V1__Cursor curs[PER];
  static Hubu__V1__Cursor *ptrs[PER];
  static char ids[PER][40];
  int forbidden = 0;
  for (int k = 0; k < FRAMES; k++) {
    for (int i = 0; i < PER; i++) {
      hubu__v1__cursor__init(&curs[i]);
      if (i % 2)
        snprintf(ids[i], sizeof ids[i], "g:madeup%d", k * PER + i);
      else
        snprintf(ids[i], sizeof ids[i], "d:bob:carol%d", k * PER + i);
      curs[i].session_id = ids[i];
      curs[i].seq = 5;
      ptrs[i] = &curs[i];
    }
    Hubu__V1__DeliverAck da = HUBU__V1__DELIVER_ACK__INIT;
    da.cursors = ptrs;
    da.n_cursors = PER;
    REQUIRE(e2e_send_msg(a, HUBU_FRAME_DELIVER_ACK, &da.base) == 0);
    e2e_frame f;
    if (!abuse_expect_frame_at(__FILE__, __LINE__, a, HUBU_FRAME_ERROR, 1, E2E_WAIT_MS, &f)) break;
    Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, f.len, f.body);
    e2e_frame_free(&f);
    forbidden += e && e->code == HUBU__V1__CODE__FORBIDDEN && e->frame_type == HUBU_FRAME_DELIVER_ACK;
    if (e) hubu__v1__error__free_unpacked(e, NULL);
  }
  CHECKF(forbidden == FRAMES, "%d of %d DELIVER_ACKs answered ERROR FORBIDDEN", forbidden, FRAMES);
  /* her own session: kept, no answer (a PING comes back first) */
  Hubu__V1__Cursor own = HUBU__V1__CURSOR__INIT;
  own.session_id = (char *)"d:alice:bob";
  own.seq = 0;
  Hubu__V1__Cursor *op[1] = {&own};
  Hubu__V1__DeliverAck da = HUBU__V1__DELIVER_ACK__INIT;
  da.cursors = op;
  da.n_cursors = 1;
  REQUIRE(e2e_send_msg(a, HUBU_FRAME_DELIVER_ACK, &da.base) == 0);
  Hubu__V1__Ping ping = HUBU__V1__PING__INIT;
  REQUIRE(e2e_send_msg(a, HUBU_FRAME_PING, &ping.base) == 0);
  e2e_frame f;
  if (abuse_expect_frame_at(__FILE__, __LINE__, a, HUBU_FRAME_PONG, 0, E2E_WAIT_MS, &f)) e2e_frame_free(&f);
  usleep(2500 * 1000); /* the sweep (each second) writes the cursors */
  long kb = data_kb(&s);
  fprintf(stderr, "  the store holds %ld KiB after %d foreign cursors (bound %d KiB)\n", kb, FRAMES * PER, 400);
  CHECKF(kb >= 0 && kb < 400, "the store holds %ld KiB", kb);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  abuse_limit_asan_quarantine();
  static const e2e_case cases[] = {
      E2E_CASE(pipelined_large_sends_are_bounded_in_bytes),
      E2E_CASE(tails_are_bounded_in_bytes),
      E2E_CASE(pulls_for_unknown_groups_keep_nothing),
      E2E_CASE(cursors_for_foreign_sessions_are_forbidden),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

/* msg_flows.c — the flows of PROTOCOL.md section 5, one guarantee per case,
 * over raw frames: SEND -> SEND_ACK and PUSH fan-out, idempotent retries and
 * HELLO_OK.last_client_id, STALE, refused sends, INVALID ids, pipelining,
 * groups, PULL paging and permissions, SYNC, the downstream window
 * (DELIVER_ACK, retransmission, GOAWAY TIMEOUT, PULL_HINT), and messages too
 * large to share a frame. Each case starts its own hubud on a fresh data dir
 * (groups made with hubuctl before the start). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "msgtest.h"

#define AB "d:alice:bob"

/* ---- helpers ---------------------------------------------------------------- */

/* Messages pushed to one connection, in arrival order. */
typedef struct {
  Hubu__V1__Push *p[512];
  size_t np;
  Hubu__V1__Message *m[2048];
  size_t nm;
} pushes;

/* Reads PUSH frames until ps holds want messages; any other frame or a timeout is reported. */
static int read_pushes_at(const char *file, int line, int fd, pushes *ps, size_t want, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  while (ps->nm < want && ps->np < 512) {
    uint64_t now = e2e_now_ms();
    Hubu__V1__Push *p = mt_expect_push_at(file, line, fd, now < deadline ? (int)(deadline - now) : 0);
    if (!p) {
      e2e_fail(file, line, "got %zu of %zu pushed messages", ps->nm, want);
      return 0;
    }
    ps->p[ps->np++] = p;
    for (size_t i = 0; i < p->n_messages && ps->nm < 2048; i++) ps->m[ps->nm++] = p->messages[i];
  }
  return ps->nm >= want;
}
#define READ_PUSHES(fd, ps, want) read_pushes_at(__FILE__, __LINE__, (fd), (ps), (want), E2E_WAIT_MS)

static void pushes_free(pushes *ps) {
  for (size_t i = 0; i < ps->np; i++) hubu__v1__push__free_unpacked(ps->p[i], NULL);
  memset(ps, 0, sizeof *ps);
}

static int body_is(const ProtobufCBinaryData *b, const char *s) {
  return b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

/* SEND_ACK of client_id with code; fills seq/msg_id/duplicate when asked. */
static int check_ack_at(const char *file, int line, Hubu__V1__SendAck *a, uint64_t cid, Hubu__V1__Code code) {
  if (!a) return 0;
  int ok = e2e_checkf(a->client_id == cid && a->code == code, file, line,
                      "SEND_ACK: want client_id %llu code %s, got client_id %llu code %s (seq %llu reason \"%s\")",
                      (unsigned long long)cid, hubu_code_name(code), (unsigned long long)a->client_id,
                      hubu_code_name(a->code), (unsigned long long)a->seq, a->reason);
  return ok;
}
#define CHECK_ACK(a, cid, code) check_ack_at(__FILE__, __LINE__, (a), (cid), (code))

/* Sends and expects OK; returns the seq (0 after a reported failure). */
static uint64_t send_ok_at(const char *file, int line, int fd, uint64_t cid, const char *session, const char *body,
                           uint64_t *msg_id) {
  Hubu__V1__SendAck *a = mt_send_ack_at(file, line, fd, cid, session, body);
  uint64_t seq = 0;
  if (check_ack_at(file, line, a, cid, HUBU__V1__CODE__OK)) {
    e2e_checkf(!a->duplicate, file, line, "client_id %llu: first send answered duplicate=true",
               (unsigned long long)cid);
    e2e_checkf(strcmp(a->session_id, session) == 0, file, line, "SEND_ACK session_id \"%s\", want \"%s\"",
               a->session_id, session);
    seq = a->seq;
    if (msg_id) *msg_id = a->msg_id;
  }
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  return seq;
}
#define SEND_OK(fd, cid, session, body) send_ok_at(__FILE__, __LINE__, (fd), (cid), (session), (body), NULL)

/* Sends and expects code (not OK); nothing else is checked. */
static void send_refused_at(const char *file, int line, int fd, uint64_t cid, const char *session,
                            Hubu__V1__Code code) {
  Hubu__V1__SendAck *a = mt_send_ack_at(file, line, fd, cid, session, "refused?");
  if (check_ack_at(file, line, a, cid, code))
    e2e_checkf(a->seq == 0 && a->msg_id == 0, file, line, "a %s SEND_ACK carries seq %llu msg_id %llu",
               hubu_code_name(code), (unsigned long long)a->seq, (unsigned long long)a->msg_id);
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
}
#define SEND_REFUSED(fd, cid, session, code) send_refused_at(__FILE__, __LINE__, (fd), (cid), (session), (code))

/* The whole session through PULL pages of limit; returns the count and checks order. */
static size_t pull_all_at(const char *file, int line, int fd, const char *session, uint64_t *seqs, size_t cap) {
  uint64_t after = 0;
  size_t n = 0;
  for (int page = 0; page < 1000; page++) {
    Hubu__V1__PullResult *r = mt_pull_at(file, line, fd, 900 + (uint64_t)page, session, after, 500);
    if (!r) return n;
    if (!e2e_checkf(r->code == HUBU__V1__CODE__OK, file, line, "PULL %s: %s", session, hubu_code_name(r->code))) {
      hubu__v1__pull_result__free_unpacked(r, NULL);
      return n;
    }
    for (size_t i = 0; i < r->n_messages; i++) {
      e2e_checkf(r->messages[i]->seq > after, file, line, "PULL %s after %llu returned seq %llu", session,
                 (unsigned long long)after, (unsigned long long)r->messages[i]->seq);
      after = r->messages[i]->seq;
      if (n < cap) seqs[n] = after;
      n++;
    }
    int more = r->has_more;
    hubu__v1__pull_result__free_unpacked(r, NULL);
    if (!more) return n;
  }
  e2e_fail(file, line, "PULL %s: has_more never ended", session);
  return n;
}
#define PULL_ALL(fd, session, seqs, cap) pull_all_at(__FILE__, __LINE__, (fd), (session), (seqs), (cap))

static void kill9(e2e_server *s) {
  e2e_server_signal(s, SIGKILL);
  CHECK(e2e_server_wait(s, 5000) == 128 + SIGKILL);
  e2e_server_cleanup(s);
}

/* ---- upstream ---------------------------------------------------------------- */

static void send_ack_ok_numbers_seqs_1_2_3_and_push_carries_the_same_message(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  uint64_t seq[4] = {0}, msg_id[4] = {0};
  for (int i = 1; i <= 3; i++) {
    char body[32], lang[8];
    snprintf(body, sizeof body, "hello %d", i);
    snprintf(lang, sizeof lang, "en-%d", i);
    uint64_t before = hubu_now_ms();
    REQUIRE(mt_send_full(a, (uint64_t)i, AB, body, strlen(body), "text/plain", "lang", lang) == 0);
    Hubu__V1__SendAck *ack = MT_ACK(a);
    REQUIRE(ack != NULL);
    CHECK_ACK(ack, (uint64_t)i, HUBU__V1__CODE__OK);
    CHECK_EQ(ack->seq, i);
    CHECK(ack->msg_id != 0);
    CHECKF(ack->msg_id > msg_id[i - 1], "msg_id %llu after %llu: not increasing", (unsigned long long)ack->msg_id,
           (unsigned long long)msg_id[i - 1]);
    CHECK(strcmp(ack->session_id, AB) == 0);
    CHECK(!ack->duplicate);
    CHECK(ack->server_time_ms + 1000 >= before);
    seq[i] = ack->seq;
    msg_id[i] = ack->msg_id;
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  pushes ps = {0};
  REQUIRE(READ_PUSHES(b, &ps, 3));
  CHECK_EQ(ps.nm, 3);
  for (size_t i = 0; i < ps.nm && i < 3; i++) {
    Hubu__V1__Message *m = ps.m[i];
    char body[32], lang[8];
    snprintf(body, sizeof body, "hello %zu", i + 1);
    snprintf(lang, sizeof lang, "en-%zu", i + 1);
    CHECK(strcmp(m->session_id, AB) == 0);
    CHECK_EQ(m->seq, seq[i + 1]);
    CHECK_EQ(m->msg_id, msg_id[i + 1]);
    CHECK(strcmp(m->sender, "alice") == 0);
    CHECK(strcmp(m->sender_device, "d1") == 0);
    CHECK_EQ(m->client_id, i + 1);
    CHECKF(body_is(&m->body, body), "pushed body of seq %zu differs", i + 1);
    CHECK(strcmp(m->content_type, "text/plain") == 0);
    CHECK(m->n_meta == 1 && strcmp(m->meta[0]->key, "lang") == 0 && strcmp(m->meta[0]->value, lang) == 0);
    CHECK(m->server_time_ms != 0);
  }
  pushes_free(&ps);
  CHECK(mt_deliver_ack(b, AB, 3) == 0);
  CHECK(MT_QUIET(a, 300)); /* the sender gets its ACKs, no PUSH */
  CHECK(MT_QUIET(b, 300));
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void push_reaches_senders_other_devices_and_connections_but_not_the_sending_one(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a1 = MT_HELLO(s.port, "alice", "d1", NULL);
  int a1b = MT_HELLO(s.port, "alice", "d1", NULL); /* a second connection of the same device */
  int a2 = MT_HELLO(s.port, "alice", "d2", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a1 >= 0 && a1b >= 0 && a2 >= 0 && b >= 0);

  CHECK_EQ(SEND_OK(a1, 1, AB, "from d1"), 1);
  int others[] = {a1b, a2, b};
  const char *names[] = {"alice/d1 (2nd connection)", "alice/d2", "bob/d1"};
  for (int i = 0; i < 3; i++) {
    pushes ps = {0};
    if (CHECKF(read_pushes_at(__FILE__, __LINE__, others[i], &ps, 1, E2E_WAIT_MS), "%s got no PUSH", names[i])) {
      CHECK_EQ(ps.nm, 1);
      CHECK_EQ(ps.m[0]->seq, 1);
      CHECK(body_is(&ps.m[0]->body, "from d1"));
      CHECK(strcmp(ps.m[0]->sender_device, "d1") == 0);
    }
    pushes_free(&ps);
    mt_deliver_ack(others[i], AB, 1);
  }
  CHECK(MT_QUIET(a1, 400)); /* only its SEND_ACK */

  /* alice's other device sends (its own client_id counter starts at 1) */
  CHECK_EQ(SEND_OK(a2, 1, AB, "from d2"), 2);
  int others2[] = {a1, a1b, b};
  for (int i = 0; i < 3; i++) {
    pushes ps = {0};
    if (READ_PUSHES(others2[i], &ps, 1)) {
      CHECK_EQ(ps.nm, 1);
      CHECK_EQ(ps.m[0]->seq, 2);
      CHECK(strcmp(ps.m[0]->sender_device, "d2") == 0);
    }
    pushes_free(&ps);
  }
  CHECK(MT_QUIET(a2, 400));
  close(a1);
  close(a1b);
  close(a2);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void retry_while_queued_or_after_stored_is_duplicate_with_same_seq_and_pushed_once(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);

  /* the same SEND twice in one write: the retry arrives while the first is queued */
  hubu_buf w = {0};
  REQUIRE(mt_append_send(&w, 1, AB, "once", 4) == 0 && mt_append_send(&w, 1, AB, "once", 4) == 0);
  REQUIRE(e2e_send_raw(a, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
  hubu_buf_free(&w);
  Hubu__V1__SendAck *x = MT_ACK(a), *y = MT_ACK(a);
  REQUIRE(x && y);
  CHECK_ACK(x, 1, HUBU__V1__CODE__OK);
  CHECK_ACK(y, 1, HUBU__V1__CODE__OK);
  CHECKF(x->seq == 1 && y->seq == 1, "seqs %llu and %llu, want 1 and 1", (unsigned long long)x->seq,
         (unsigned long long)y->seq);
  CHECK(x->msg_id == y->msg_id && x->msg_id != 0);
  CHECKF(x->duplicate + y->duplicate == 1, "duplicate flags %d and %d: want exactly the retry marked", x->duplicate,
         y->duplicate);
  uint64_t msg_id = x->msg_id;
  hubu__v1__send_ack__free_unpacked(x, NULL);
  hubu__v1__send_ack__free_unpacked(y, NULL);

  /* after it is stored */
  Hubu__V1__SendAck *z = MT_SEND_ACK(a, 1, AB, "once");
  if (CHECK_ACK(z, 1, HUBU__V1__CODE__OK)) {
    CHECK_EQ(z->seq, 1);
    CHECK_EQ(z->msg_id, msg_id);
    CHECK(z->duplicate);
  }
  if (z) hubu__v1__send_ack__free_unpacked(z, NULL);
  /* the next new send takes the next seq: the retries used up nothing */
  CHECK_EQ(SEND_OK(a, 2, AB, "twice"), 2);

  pushes ps = {0};
  if (READ_PUSHES(b, &ps, 2)) {
    CHECK_EQ(ps.nm, 2);
    CHECK(ps.m[0]->seq == 1 && ps.m[0]->msg_id == msg_id && body_is(&ps.m[0]->body, "once"));
    CHECK(ps.m[1]->seq == 2 && body_is(&ps.m[1]->body, "twice"));
  }
  pushes_free(&ps);
  mt_deliver_ack(b, AB, 2);
  CHECK(MT_QUIET(b, 500)); /* exactly one PUSH of seq 1 */
  uint64_t seqs[8];
  CHECK_EQ(PULL_ALL(b, AB, seqs, 8), 2);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void retry_on_a_new_connection_of_the_same_device_is_duplicate(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  REQUIRE(a >= 0);
  enum { N = 40 }; /* more than the server's ring of recent sends: cid 1 is found in the store */
  uint64_t seq[N + 1], msg_id[N + 1];
  for (uint64_t i = 1; i <= N; i++) seq[i] = send_ok_at(__FILE__, __LINE__, a, i, AB, "m", &msg_id[i]);
  close(a);
  uint64_t last = 0;
  a = MT_HELLO(s.port, "alice", "d1", &last);
  REQUIRE(a >= 0);
  CHECK_EQ(last, N);
  uint64_t retry[] = {1, 20, N - 1, N};
  for (size_t k = 0; k < sizeof retry / sizeof *retry; k++) {
    uint64_t cid = retry[k];
    Hubu__V1__SendAck *ack = MT_SEND_ACK(a, cid, AB, "m");
    if (CHECK_ACK(ack, cid, HUBU__V1__CODE__OK)) {
      CHECKF(ack->duplicate, "retry of client_id %llu on a new connection: duplicate=false", (unsigned long long)cid);
      CHECKF(ack->seq == seq[cid] && ack->msg_id == msg_id[cid],
             "retry of client_id %llu: seq %llu msg_id %llu, first answer seq %llu msg_id %llu",
             (unsigned long long)cid, (unsigned long long)ack->seq, (unsigned long long)ack->msg_id,
             (unsigned long long)seq[cid], (unsigned long long)msg_id[cid]);
    }
    if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ(SEND_OK(a, N + 1, AB, "new"), N + 1);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(b >= 0);
  uint64_t seqs[64];
  CHECK_EQ(PULL_ALL(b, AB, seqs, 64), N + 1);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hello_ok_last_client_id_is_the_highest_stored_one_also_after_restart(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:x", "bob", "carol", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  uint64_t last = 99;
  int a = MT_HELLO(s.port, "alice", "d1", &last);
  REQUIRE(a >= 0);
  CHECK_EQ(last, 0);
  uint64_t seq3 = 0, msg3 = 0;
  SEND_OK(a, 1, AB, "1");
  SEND_OK(a, 2, AB, "2");
  seq3 = send_ok_at(__FILE__, __LINE__, a, 3, AB, "3", &msg3);
  SEND_OK(a, 7, "d:alice:carol", "7"); /* client_ids may skip */
  SEND_REFUSED(a, 9, "g:x", HUBU__V1__CODE__FORBIDDEN);
  SEND_REFUSED(a, 10, "d:bob:carol", HUBU__V1__CODE__FORBIDDEN);
  close(a);

  a = MT_HELLO(s.port, "alice", "d1", &last);
  CHECK_EQ(last, 7);
  int a2 = MT_HELLO(s.port, "alice", "d2", &last);
  CHECK_EQ(last, 0);
  close(a);
  close(a2);

  kill9(&s);
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  a = MT_HELLO(s.port, "alice", "d1", &last);
  REQUIRE(a >= 0);
  CHECKF(last == 7, "after kill -9 and restart: last_client_id %llu, want 7", (unsigned long long)last);
  Hubu__V1__SendAck *ack = MT_SEND_ACK(a, 3, AB, "3"); /* a retry after the restart */
  if (CHECK_ACK(ack, 3, HUBU__V1__CODE__OK)) {
    CHECK(ack->duplicate);
    CHECK(ack->seq == seq3 && ack->msg_id == msg3);
  }
  if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  a2 = MT_HELLO(s.port, "alice", "d2", &last);
  CHECK_EQ(last, 0);
  close(a2);
  CHECK_EQ(SEND_OK(a, 8, AB, "8"), 4);
  close(a);

  CHECK_SERVER_STOPS_CLEANLY(&s);
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  a = MT_HELLO(s.port, "alice", "d1", &last);
  CHECKF(last == 8, "after a clean restart: last_client_id %llu, want 8", (unsigned long long)last);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void client_id_below_high_water_mark_never_stored_is_stale(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:x", "bob", "carol", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  REQUIRE(a >= 0);
  for (uint64_t i = 1; i <= 4; i++) CHECK_EQ(SEND_OK(a, i, AB, "ok"), i);
  SEND_REFUSED(a, 5, "g:x", HUBU__V1__CODE__FORBIDDEN); /* a group alice is not in */
  CHECK_EQ(SEND_OK(a, 6, AB, "six"), 5);
  SEND_REFUSED(a, 5, AB, HUBU__V1__CODE__STALE);
  SEND_REFUSED(a, 7, "d:bob:carol", HUBU__V1__CODE__FORBIDDEN); /* another pair's direct session */
  CHECK_EQ(SEND_OK(a, 8, AB, "eight"), 6);
  SEND_REFUSED(a, 7, AB, HUBU__V1__CODE__STALE);
  /* the same on a new connection, and after a restart (the store answers) */
  close(a);
  a = MT_HELLO(s.port, "alice", "d1", NULL);
  REQUIRE(a >= 0);
  SEND_REFUSED(a, 5, AB, HUBU__V1__CODE__STALE);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  a = MT_HELLO(s.port, "alice", "d1", NULL);
  REQUIRE(a >= 0);
  SEND_REFUSED(a, 7, AB, HUBU__V1__CODE__STALE);
  /* resent under a new client_id, the content is stored once */
  CHECK_EQ(SEND_OK(a, 9, AB, "five again"), 7);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(b >= 0);
  uint64_t seqs[16];
  CHECK_EQ(PULL_ALL(b, AB, seqs, 16), 7);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void refused_send_stores_nothing_and_uses_up_nothing(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:x", "bob", "carol", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  int c = MT_HELLO(s.port, "carol", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0 && c >= 0);

  SEND_REFUSED(a, 1, "d:bob:carol", HUBU__V1__CODE__FORBIDDEN);
  Hubu__V1__PullResult *r = MT_PULL(b, 1, "d:bob:carol", 0, 100);
  if (r) {
    CHECK(r->code == HUBU__V1__CODE__OK);
    CHECKF(r->n_messages == 0 && r->max_seq == 0, "d:bob:carol after a refused SEND: %zu messages, max_seq %llu",
           r->n_messages, (unsigned long long)r->max_seq);
    hubu__v1__pull_result__free_unpacked(r, NULL);
  }
  Hubu__V1__SendAck *ack = MT_SEND_ACK(a, 1, AB, "one");
  if (CHECK_ACK(ack, 1, HUBU__V1__CODE__OK))
    CHECKF(!ack->duplicate && ack->seq == 1, "seq %llu dup %d", (unsigned long long)ack->seq, ack->duplicate);
  if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);

  SEND_REFUSED(a, 2, "g:x", HUBU__V1__CODE__FORBIDDEN);
  r = MT_PULL(b, 2, "g:x", 0, 100);
  if (r) {
    CHECK(r->code == HUBU__V1__CODE__OK);
    CHECKF(r->n_messages == 0 && r->max_seq == 0, "g:x after a refused SEND: %zu messages, max_seq %llu", r->n_messages,
           (unsigned long long)r->max_seq);
    hubu__v1__pull_result__free_unpacked(r, NULL);
  }
  ack = MT_SEND_ACK(a, 2, AB, "two");
  if (CHECK_ACK(ack, 2, HUBU__V1__CODE__OK))
    CHECKF(!ack->duplicate && ack->seq == 2, "seq %llu dup %d", (unsigned long long)ack->seq, ack->duplicate);
  if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);

  /* carol (in g:x and named by d:bob:carol) has nothing to sync: no session came to be */
  CHECK(mt_sync_request(c, 5, 0, NULL, NULL) == 0);
  Hubu__V1__SyncResult *sr = MT_SYNC_RESULT(c);
  if (sr) {
    CHECK(sr->code == HUBU__V1__CODE__OK);
    for (size_t i = 0; i < sr->n_sessions; i++)
      e2e_fail(__FILE__, __LINE__, "carol's SYNC lists %s max_seq %llu after refused sends only",
               sr->sessions[i]->session_id, (unsigned long long)sr->sessions[i]->max_seq);
    hubu__v1__sync_result__free_unpacked(sr, NULL);
  }
  CHECK(MT_QUIET(c, 200)); /* and got no PUSH */
  close(a);
  uint64_t last = 0;
  a = MT_HELLO(s.port, "alice", "d1", &last);
  CHECK_EQ(last, 2);
  close(a);
  close(b);
  close(c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void malformed_session_ids_and_client_id_0_are_invalid(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  REQUIRE(a >= 0);
  SEND_REFUSED(a, 0, AB, HUBU__V1__CODE__INVALID);
  char longid[200];
  memset(longid, 'a', sizeof longid - 1);
  memcpy(longid, "g:", 2);
  longid[sizeof longid - 1] = '\0';
  const char *bad[] = {"",
                       "x",
                       "d:",
                       "d:alice",
                       "d:bob:alice",
                       "d:alice:alice",
                       "d::bob",
                       "d:alice:",
                       "g:",
                       "g:a b",
                       "g:caf\xc3\xa9",
                       "nocolon",
                       ":x",
                       "x:",
                       "d:alice:bob:carol",
                       longid};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    Hubu__V1__SendAck *ack = MT_SEND_ACK(a, 1, bad[i], "x");
    if (ack)
      CHECKF(ack->code == HUBU__V1__CODE__INVALID, "session_id \"%.40s\": %s, want INVALID", bad[i],
             hubu_code_name(ack->code));
    if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK(EXPECT_ALIVE(a, 7));
  /* nothing was used up: client_id 1 is still new */
  Hubu__V1__SendAck *ack = MT_SEND_ACK(a, 1, AB, "valid");
  if (CHECK_ACK(ack, 1, HUBU__V1__CODE__OK)) CHECK(!ack->duplicate && ack->seq == 1);
  if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void hundred_pipelined_sends_in_one_write_get_hundred_acks_with_seqs_in_client_id_order(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  enum { N = 100 };
  hubu_buf w = {0};
  for (uint64_t i = 1; i <= N; i++) {
    char body[16];
    int len = snprintf(body, sizeof body, "p%llu", (unsigned long long)i);
    REQUIRE(mt_append_send(&w, i, AB, body, (size_t)len) == 0);
  }
  REQUIRE(e2e_send_raw(a, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
  hubu_buf_free(&w);
  uint64_t seq[N + 1] = {0};
  int answered[N + 1] = {0};
  for (int k = 0; k < N; k++) {
    Hubu__V1__SendAck *ack = MT_ACK(a);
    if (!ack) break;
    if (CHECKF(ack->client_id >= 1 && ack->client_id <= N, "ACK for client_id %llu",
               (unsigned long long)ack->client_id)) {
      CHECKF(ack->code == HUBU__V1__CODE__OK && !ack->duplicate, "client_id %llu: %s dup %d",
             (unsigned long long)ack->client_id, hubu_code_name(ack->code), ack->duplicate);
      answered[ack->client_id]++;
      seq[ack->client_id] = ack->seq;
    }
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  for (int i = 1; i <= N; i++) {
    CHECKF(answered[i] == 1, "client_id %d answered %d times", i, answered[i]);
    if (i > 1)
      CHECKF(seq[i] > seq[i - 1], "client_id %d got seq %llu, client_id %d seq %llu", i, (unsigned long long)seq[i],
             i - 1, (unsigned long long)seq[i - 1]);
  }
  CHECK(MT_QUIET(a, 200));
  pushes ps = {0};
  if (READ_PUSHES(b, &ps, N)) {
    CHECK_EQ(ps.nm, N);
    for (size_t i = 0; i < ps.nm && i < N; i++) {
      char body[16];
      snprintf(body, sizeof body, "p%zu", i + 1);
      CHECKF(ps.m[i]->seq == seq[i + 1] && ps.m[i]->client_id == i + 1 && body_is(&ps.m[i]->body, body),
             "pushed #%zu: seq %llu client_id %llu", i, (unsigned long long)ps.m[i]->seq,
             (unsigned long long)ps.m[i]->client_id);
    }
    fprintf(stderr, "  100 messages came in %zu PUSH frames\n", ps.np);
  }
  pushes_free(&ps);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void group_message_reaches_every_members_connections(void) {
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:team", "alice", "bob", "carol", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a1 = MT_HELLO(s.port, "alice", "d1", NULL);
  int a2 = MT_HELLO(s.port, "alice", "d2", NULL);
  int b1 = MT_HELLO(s.port, "bob", "d1", NULL);
  int b2 = MT_HELLO(s.port, "bob", "d2", NULL);
  int c1 = MT_HELLO(s.port, "carol", "d1", NULL);
  int x = MT_HELLO(s.port, "dave", "d1", NULL);
  REQUIRE(a1 >= 0 && a2 >= 0 && b1 >= 0 && b2 >= 0 && c1 >= 0 && x >= 0);
  CHECK_EQ(SEND_OK(a1, 1, "g:team", "hi team"), 1);
  int members[] = {a2, b1, b2, c1};
  const char *names[] = {"alice/d2", "bob/d1", "bob/d2", "carol/d1"};
  for (int i = 0; i < 4; i++) {
    pushes ps = {0};
    if (CHECKF(read_pushes_at(__FILE__, __LINE__, members[i], &ps, 1, E2E_WAIT_MS), "%s: no PUSH", names[i]))
      CHECK(ps.nm == 1 && ps.m[0]->seq == 1 && strcmp(ps.m[0]->session_id, "g:team") == 0 &&
            body_is(&ps.m[0]->body, "hi team"));
    pushes_free(&ps);
  }
  CHECK(MT_QUIET(x, 300)); /* dave is no member */
  CHECK(MT_QUIET(a1, 100));
  SEND_REFUSED(x, 1, "g:team", HUBU__V1__CODE__FORBIDDEN);
  /* a member's message reaches the sender's other devices too */
  CHECK_EQ(SEND_OK(c1, 1, "g:team", "from carol"), 2);
  int others[] = {a1, a2, b1, b2};
  for (int i = 0; i < 4; i++) {
    pushes ps = {0};
    if (READ_PUSHES(others[i], &ps, 1)) CHECK(ps.nm == 1 && ps.m[0]->seq == 2);
    pushes_free(&ps);
  }
  CHECK(MT_QUIET(x, 200));
  close(a1);
  close(a2);
  close(b1);
  close(b2);
  close(c1);
  close(x);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* ---- PULL and SYNC ------------------------------------------------------------- */

static int check_page_at(const char *file, int line, Hubu__V1__PullResult *r, uint64_t request_id, uint64_t first,
                         size_t n, int has_more, uint64_t max_seq) {
  if (!r) return 0;
  int ok = e2e_checkf(r->code == HUBU__V1__CODE__OK && r->request_id == request_id && strcmp(r->session_id, AB) == 0,
                      file, line, "PULL_RESULT: code %s request_id %llu session \"%s\"", hubu_code_name(r->code),
                      (unsigned long long)r->request_id, r->session_id);
  ok &= e2e_checkf(r->n_messages == n && !!r->has_more == has_more && r->max_seq == max_seq, file, line,
                   "PULL_RESULT: %zu messages has_more %d max_seq %llu, want %zu, %d, %llu", r->n_messages, r->has_more,
                   (unsigned long long)r->max_seq, n, has_more, (unsigned long long)max_seq);
  for (size_t i = 0; i < r->n_messages && i < n; i++) {
    char body[16];
    snprintf(body, sizeof body, "m%llu", (unsigned long long)(first + i));
    ok &= e2e_checkf(r->messages[i]->seq == first + i && body_is(&r->messages[i]->body, body) &&
                         r->messages[i]->client_id == first + i && strcmp(r->messages[i]->sender, "alice") == 0,
                     file, line, "PULL_RESULT message %zu: seq %llu client_id %llu, want seq %llu", i,
                     (unsigned long long)r->messages[i]->seq, (unsigned long long)r->messages[i]->client_id,
                     (unsigned long long)(first + i));
  }
  hubu__v1__pull_result__free_unpacked(r, NULL);
  return ok;
}
#define CHECK_PAGE(r, rid, first, n, more, max) \
  check_page_at(__FILE__, __LINE__, (r), (rid), (first), (n), (more), (max))

static void pull_pages_by_after_seq_and_limit_with_has_more_and_max_seq(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, "--pull-limit-max", "6", NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  for (uint64_t i = 1; i <= 10; i++) {
    char body[16];
    snprintf(body, sizeof body, "m%llu", (unsigned long long)i);
    CHECK_EQ(SEND_OK(a, i, AB, body), i);
  }
  /* from the server's in-memory tail */
  CHECK_PAGE(MT_PULL(b, 11, AB, 0, 4), 11, 1, 4, 1, 10);
  CHECK_PAGE(MT_PULL(b, 12, AB, 4, 4), 12, 5, 4, 1, 10);
  CHECK_PAGE(MT_PULL(b, 13, AB, 8, 4), 13, 9, 2, 0, 10);
  CHECK_PAGE(MT_PULL(b, 14, AB, 10, 4), 14, 11, 0, 0, 10);
  CHECK_PAGE(MT_PULL(b, 15, AB, 0, 100), 15, 1, 6, 1, 10); /* capped by --pull-limit-max */
  CHECK_PAGE(MT_PULL(b, 16, AB, 0, 0), 16, 1, 6, 1, 10);   /* 0: the server's default, capped too */
  CHECK_PAGE(MT_PULL(a, 17, AB, 7, 6), 17, 8, 3, 0, 10);   /* the sender may pull as well */
  close(a);
  close(b);
  /* from the store, after a restart */
  CHECK_SERVER_STOPS_CLEANLY(&s);
  REQUIRE(MT_START(&s, &d, "--pull-limit-max", "6", NULL) == 0);
  b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(b >= 0);
  CHECK_PAGE(MT_PULL(b, 21, AB, 3, 4), 21, 4, 4, 1, 10);
  CHECK_PAGE(MT_PULL(b, 22, AB, 7, 4), 22, 8, 3, 0, 10);
  CHECK_PAGE(MT_PULL(b, 23, AB, 0, 100), 23, 1, 6, 1, 10);
  CHECK_PAGE(MT_PULL(b, 24, AB, 10, 100), 24, 11, 0, 0, 10);
  CHECK_PAGE(MT_PULL(b, 25, AB, 1000, 100), 25, 1001, 0, 0, 10);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void expect_pull_refused_at(const char *file, int line, int fd, const char *session, Hubu__V1__Code code) {
  Hubu__V1__PullResult *r = mt_pull_at(file, line, fd, 77, session, 0, 100);
  if (!r) return;
  e2e_checkf(r->code == code && r->n_messages == 0 && r->request_id == 77, file, line,
             "PULL %s: %s with %zu messages (request_id %llu), want %s and none", session, hubu_code_name(r->code),
             r->n_messages, (unsigned long long)r->request_id, hubu_code_name(code));
  hubu__v1__pull_result__free_unpacked(r, NULL);
}
#define EXPECT_PULL_REFUSED(fd, session, code) expect_pull_refused_at(__FILE__, __LINE__, (fd), (session), (code))

static void pull_is_forbidden_for_non_members_and_for_other_users_direct_sessions(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:team", "alice", "bob", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  int c = MT_HELLO(s.port, "carol", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0 && c >= 0);
  SEND_OK(a, 1, AB, "secret 1");
  SEND_OK(a, 2, AB, "secret 2");
  SEND_OK(a, 3, "g:team", "team secret");
  EXPECT_PULL_REFUSED(c, AB, HUBU__V1__CODE__FORBIDDEN);
  EXPECT_PULL_REFUSED(c, "g:team", HUBU__V1__CODE__FORBIDDEN);
  EXPECT_PULL_REFUSED(c, "g:nosuch", HUBU__V1__CODE__FORBIDDEN);
  EXPECT_PULL_REFUSED(c, "d:bob:alice", HUBU__V1__CODE__INVALID);
  EXPECT_PULL_REFUSED(c, "", HUBU__V1__CODE__INVALID);
  /* after a restart, with the sessions loaded from the store */
  close(a);
  close(b);
  close(c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  c = MT_HELLO(s.port, "carol", "d1", NULL);
  b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(b >= 0 && c >= 0);
  EXPECT_PULL_REFUSED(c, AB, HUBU__V1__CODE__FORBIDDEN);
  EXPECT_PULL_REFUSED(c, "g:team", HUBU__V1__CODE__FORBIDDEN);
  uint64_t seqs[8];
  CHECK_EQ(PULL_ALL(b, "g:team", seqs, 8), 1);
  CHECK_EQ(PULL_ALL(b, AB, seqs, 8), 2);
  CHECK(mt_sync_request(c, 3, 0, NULL, NULL) == 0);
  Hubu__V1__SyncResult *sr = MT_SYNC_RESULT(c);
  if (sr) {
    CHECKF(sr->n_sessions == 0, "carol's SYNC lists %zu sessions (first %s)", sr->n_sessions,
           sr->n_sessions ? sr->sessions[0]->session_id : "");
    hubu__v1__sync_result__free_unpacked(sr, NULL);
  }
  close(b);
  close(c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* The sessions of a SYNC_RESULT as "id=max_seq" joined by spaces, sorted by the server. */
static void sync_listing(int fd, uint64_t rid, size_t n, const char *const *ids, const uint64_t *seqs, char *out,
                         size_t size) {
  out[0] = '\0';
  CHECK(mt_sync_request(fd, rid, n, ids, seqs) == 0);
  Hubu__V1__SyncResult *r = MT_SYNC_RESULT(fd);
  if (!r) {
    snprintf(out, size, "(no SYNC_RESULT)");
    return;
  }
  CHECK(r->code == HUBU__V1__CODE__OK);
  CHECK_EQ(r->request_id, rid);
  size_t at = 0;
  for (size_t i = 0; i < r->n_sessions && at < size; i++)
    at += (size_t)snprintf(out + at, size - at, "%s%s=%llu", i ? " " : "", r->sessions[i]->session_id,
                           (unsigned long long)r->sessions[i]->max_seq);
  hubu__v1__sync_result__free_unpacked(r, NULL);
}

/* want: the listing with sessions in any order; compared as sets of words. */
static int same_words(const char *got, const char *want) {
  char g[512], w[512];
  snprintf(g, sizeof g, "%s", got);
  snprintf(w, sizeof w, "%s", want);
  size_t ng = 0, nw = 0;
  char *gw[32], *ww[32], *save;
  for (char *t = strtok_r(g, " ", &save); t && ng < 32; t = strtok_r(NULL, " ", &save)) gw[ng++] = t;
  for (char *t = strtok_r(w, " ", &save); t && nw < 32; t = strtok_r(NULL, " ", &save)) ww[nw++] = t;
  if (ng != nw) return 0;
  for (size_t i = 0; i < nw; i++) {
    int found = 0;
    for (size_t j = 0; j < ng; j++) found |= strcmp(ww[i], gw[j]) == 0;
    if (!found) return 0;
  }
  return 1;
}

static void sync_lists_sessions_above_the_known_cursor_including_unknown_ones(void) {
  mt_skip_pushes = 1; /* receivers' PUSHes are not under test here */
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:team", "alice", "bob", "carol", NULL) == 0);
  REQUIRE(mt_group_create(&d, "g:quiet", "bob", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int c = MT_HELLO(s.port, "carol", "d1", NULL);
  REQUIRE(a >= 0 && c >= 0);
  for (uint64_t i = 1; i <= 3; i++) SEND_OK(a, i, AB, "ab");
  SEND_OK(c, 1, "d:bob:carol", "bc");
  SEND_OK(c, 2, "d:bob:carol", "bc");
  SEND_OK(a, 4, "g:team", "team");
  SEND_OK(a, 5, "d:alice:carol", "not bob's");
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(b >= 0);
  char got[512];
  sync_listing(b, 1, 0, NULL, NULL, got, sizeof got);
  CHECKF(same_words(got, "d:alice:bob=3 d:bob:carol=2 g:team=1"), "SYNC with no cursors: \"%s\"", got);
  {
    const char *ids[] = {AB, "d:bob:carol"};
    uint64_t seqs[] = {3, 1};
    sync_listing(b, 2, 2, ids, seqs, got, sizeof got);
    CHECKF(same_words(got, "d:bob:carol=2 g:team=1"), "SYNC known {ab:3, bc:1}: \"%s\"", got);
  }
  {
    const char *ids[] = {AB, "d:bob:carol", "g:team"};
    uint64_t seqs[] = {3, 2, 1};
    sync_listing(b, 3, 3, ids, seqs, got, sizeof got);
    CHECKF(same_words(got, ""), "SYNC known at every max_seq: \"%s\"", got);
  }
  {
    const char *ids[] = {AB, "d:bob:carol", "g:team"};
    uint64_t seqs[] = {2, 9, 0};
    sync_listing(b, 4, 3, ids, seqs, got, sizeof got);
    CHECKF(same_words(got, "d:alice:bob=3 g:team=1"), "SYNC known {ab:2, bc:9, team:0}: \"%s\"", got);
  }
  /* a new message raises it again, and a restart changes nothing */
  SEND_OK(a, 6, AB, "ab4");
  {
    const char *ids[] = {AB, "d:bob:carol", "g:team"};
    uint64_t seqs[] = {3, 2, 1};
    sync_listing(b, 5, 3, ids, seqs, got, sizeof got);
    CHECKF(same_words(got, "d:alice:bob=4"), "SYNC after a new message: \"%s\"", got);
  }
  close(a);
  close(b);
  close(c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  b = MT_HELLO(s.port, "bob", "d2", NULL);
  REQUIRE(b >= 0);
  sync_listing(b, 6, 0, NULL, NULL, got, sizeof got);
  CHECKF(same_words(got, "d:alice:bob=4 d:bob:carol=2 g:team=1"), "SYNC after a restart: \"%s\"", got);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* ---- downstream window ------------------------------------------------------------ */

/* --hello-timeout-ms 1000 makes the server's sweep (which retransmits) run every 250 ms. */
#define FAST_SWEEP "--ack-timeout-ms", "300", "--hello-timeout-ms", "1000"

static void deliver_ack_retires_inflight_and_only_unacked_pushes_are_retransmitted(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, FAST_SWEEP, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  uint64_t id1 = 0, id2 = 0;
  send_ok_at(__FILE__, __LINE__, a, 1, AB, "m1", &id1);
  pushes ps = {0};
  REQUIRE(READ_PUSHES(b, &ps, 1));
  CHECK(ps.m[0]->seq == 1);
  pushes_free(&ps);
  CHECK(mt_deliver_ack(b, AB, 1) == 0);
  CHECK(MT_QUIET(b, 1200)); /* acknowledged: never again */

  send_ok_at(__FILE__, __LINE__, a, 2, AB, "m2", &id2);
  uint64_t t0 = e2e_now_ms();
  REQUIRE(READ_PUSHES(b, &ps, 1));
  CHECK(ps.nm == 1 && ps.m[0]->seq == 2);
  pushes_free(&ps);
  /* not acknowledged: the same message again after the ack timeout */
  if (read_pushes_at(__FILE__, __LINE__, b, &ps, 1, 3000)) {
    uint64_t dt = e2e_now_ms() - t0;
    CHECKF(ps.nm == 1 && ps.m[0]->seq == 2 && ps.m[0]->msg_id == id2 && body_is(&ps.m[0]->body, "m2"),
           "retransmit: %zu messages, first seq %llu", ps.nm, (unsigned long long)ps.m[0]->seq);
    CHECKF(dt >= 250, "retransmitted after %llu ms, before the 300 ms ack timeout", (unsigned long long)dt);
    fprintf(stderr, "  seq 2 retransmitted after %llu ms\n", (unsigned long long)dt);
  }
  pushes_free(&ps);
  CHECK(mt_deliver_ack(b, AB, 2) == 0);
  CHECK(MT_QUIET(b, 1200));
  CHECK(EXPECT_ALIVE(b, 42));
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void connection_that_never_acks_gets_goaway_timeout_after_3_retransmits(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, FAST_SWEEP, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  SEND_OK(a, 1, AB, "ack me");
  int pushed = 0, goaway = 0, eof = 0;
  uint64_t deadline = e2e_now_ms() + 8000;
  while (!eof && e2e_now_ms() < deadline) {
    e2e_frame f;
    int r = mt_next_frame(b, (int)(deadline - e2e_now_ms()), &f);
    if (r == E2E_READ_EOF) {
      eof = 1;
      break;
    }
    if (r != E2E_READ_OK) break;
    if (f.type == HUBU_FRAME_PUSH) {
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, f.len, f.body);
      CHECK(p && p->n_messages == 1 && p->messages[0]->seq == 1);
      if (p) hubu__v1__push__free_unpacked(p, NULL);
      CHECKF(!goaway, "PUSH after GOAWAY");
      pushed++;
    } else if (f.type == HUBU_FRAME_GOAWAY) {
      Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, f.len, f.body);
      CHECKF(g && g->code == HUBU__V1__CODE__TIMEOUT, "GOAWAY code %s, want TIMEOUT",
             g ? hubu_code_name(g->code) : "(undecodable)");
      if (g) hubu__v1__go_away__free_unpacked(g, NULL);
      goaway++;
    } else {
      e2e_fail(__FILE__, __LINE__, "unexpected %s", hubu_frame_type_name(f.type));
    }
    e2e_frame_free(&f);
  }
  fprintf(stderr, "  PUSH of seq 1 seen %d times, then GOAWAY x%d, EOF %d\n", pushed, goaway, eof);
  CHECKF(pushed == 4, "seq 1 pushed %d times, want 1 + 3 retransmits", pushed);
  CHECK_EQ(goaway, 1);
  CHECK(eof);
  close(b);
  /* the client reconnects and syncs: nothing is lost */
  b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(b >= 0);
  char got[256];
  sync_listing(b, 1, 0, NULL, NULL, got, sizeof got);
  CHECKF(same_words(got, "d:alice:bob=1"), "SYNC after the kick: \"%s\"", got);
  uint64_t seqs[4];
  CHECK_EQ(PULL_ALL(b, AB, seqs, 4), 1);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void unacked_push_is_retransmitted_even_while_other_sessions_are_acked(void) {
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:team", "alice", "bob", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, FAST_SWEEP, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  /* bob never acknowledges g:team seq 1 ... */
  CHECK_EQ(SEND_OK(a, 1, "g:team", "left unacked"), 1);
  pushes ps = {0};
  REQUIRE(READ_PUSHES(b, &ps, 1));
  CHECK(strcmp(ps.m[0]->session_id, "g:team") == 0 && ps.m[0]->seq == 1);
  pushes_free(&ps);
  /* ... while alice keeps writing in d:alice:bob and bob acknowledges those at once */
  uint64_t t0 = e2e_now_ms();
  int again = 0, rounds = 0;
  for (uint64_t cid = 2; e2e_now_ms() - t0 < 3000 && !again; cid++, rounds++) {
    CHECK(mt_send(a, cid, AB, "chatter") == 0);
    Hubu__V1__SendAck *ack = MT_ACK(a);
    if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
    uint64_t until = e2e_now_ms() + 100;
    while (e2e_now_ms() < until && !again) {
      e2e_frame f;
      int r = mt_next_frame(b, (int)(until - e2e_now_ms()), &f);
      if (r == E2E_READ_TIMEOUT) break;
      REQUIRE(r == E2E_READ_OK);
      if (f.type == HUBU_FRAME_PUSH) {
        Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, f.len, f.body);
        for (size_t i = 0; p && i < p->n_messages; i++) {
          if (strcmp(p->messages[i]->session_id, "g:team") == 0)
            again = 1;
          else
            mt_deliver_ack(b, AB, p->messages[i]->seq);
        }
        if (p) hubu__v1__push__free_unpacked(p, NULL);
      }
      e2e_frame_free(&f);
    }
  }
  fprintf(stderr, "  g:team seq 1 %s after %llu ms (%d acknowledged messages of d:alice:bob meanwhile)\n",
          again ? "retransmitted" : "NOT retransmitted", (unsigned long long)(e2e_now_ms() - t0), rounds);
  CHECKF(again,
         "an unacknowledged PUSH was not retransmitted in 3 s (--ack-timeout-ms 300) because the connection "
         "kept acknowledging another session");
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void fifth_message_to_a_non_acking_reader_comes_as_pull_hint_and_pull_fetches_it(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, "--max-inflight", "4", NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  hubu_buf w = {0};
  for (uint64_t i = 1; i <= 5; i++) {
    char body[8];
    int len = snprintf(body, sizeof body, "h%llu", (unsigned long long)i);
    REQUIRE(mt_append_send(&w, i, AB, body, (size_t)len) == 0);
  }
  REQUIRE(e2e_send_raw(a, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
  hubu_buf_free(&w);
  for (int i = 0; i < 5; i++) {
    Hubu__V1__SendAck *ack = MT_ACK(a);
    if (ack) CHECK(ack->code == HUBU__V1__CODE__OK);
    if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  pushes ps = {0};
  if (READ_PUSHES(b, &ps, 4)) {
    CHECK_EQ(ps.nm, 4);
    for (size_t i = 0; i < ps.nm; i++) CHECK_EQ(ps.m[i]->seq, i + 1);
  }
  pushes_free(&ps);
  Hubu__V1__PullHint *h = MT_HINT(b);
  if (h) {
    CHECKF(strcmp(h->session_id, AB) == 0 && h->max_seq == 5, "PULL_HINT{%s, %llu}, want {%s, 5}", h->session_id,
           (unsigned long long)h->max_seq, AB);
    hubu__v1__pull_hint__free_unpacked(h, NULL);
  }
  CHECK(MT_QUIET(b, 300));
  Hubu__V1__PullResult *r = MT_PULL(b, 1, AB, 4, 100);
  if (r) {
    CHECKF(r->code == HUBU__V1__CODE__OK && r->n_messages == 1 && r->messages[0]->seq == 5 &&
               body_is(&r->messages[0]->body, "h5") && !r->has_more && r->max_seq == 5,
           "PULL after 4: %s, %zu messages, max_seq %llu", hubu_code_name(r->code), r->n_messages,
           (unsigned long long)r->max_seq);
    hubu__v1__pull_result__free_unpacked(r, NULL);
  }
  /* acknowledged, the window opens again: the next message is pushed */
  CHECK(mt_deliver_ack(b, AB, 5) == 0);
  CHECK_EQ(SEND_OK(a, 6, AB, "h6"), 6);
  if (READ_PUSHES(b, &ps, 1)) CHECK(ps.nm == 1 && ps.m[0]->seq == 6);
  pushes_free(&ps);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* ---- frame size ------------------------------------------------------------------------ */

static void large_messages_are_split_into_push_and_pull_frames_within_max_frame(void) {
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, "--max-inflight-bytes", "67108864", NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  int b = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(a >= 0 && b >= 0);
  enum { N = 24, SIZE = 200 * 1024 };
  uint8_t *body = malloc(SIZE);
  REQUIRE(body != NULL);
  hubu_buf w = {0};
  for (int i = 1; i <= N; i++) {
    memset(body, 'a' + i % 26, SIZE);
    REQUIRE(mt_append_send(&w, (uint64_t)i, AB, body, SIZE) == 0);
  }
  REQUIRE(e2e_send_raw(a, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
  hubu_buf_free(&w);
  for (int i = 1; i <= N; i++) {
    Hubu__V1__SendAck *ack = MT_ACK(a);
    if (ack) CHECK(ack->code == HUBU__V1__CODE__OK);
    if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  /* pushed: every PUSH frame within max_frame (1 MiB), all 24 in order */
  uint64_t next = 1;
  int frames = 0;
  while (next <= N && frames < 100) {
    e2e_frame f;
    if (!mt_expect_frame_at(__FILE__, __LINE__, b, HUBU_FRAME_PUSH, E2E_WAIT_MS, &f)) break;
    frames++;
    CHECKF(f.len <= HUBU_FRAME_DEFAULT_MAX, "PUSH frame of %u bytes > max_frame", f.len);
    Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, f.len, f.body);
    e2e_frame_free(&f);
    REQUIRE(p != NULL);
    for (size_t i = 0; i < p->n_messages; i++, next++) {
      const Hubu__V1__Message *m = p->messages[i];
      CHECKF(m->seq == next && m->body.len == SIZE && m->body.data[0] == 'a' + next % 26 &&
                 m->body.data[SIZE - 1] == 'a' + next % 26,
             "pushed seq %llu (want %llu), body %zu bytes", (unsigned long long)m->seq, (unsigned long long)next,
             m->body.len);
    }
    hubu__v1__push__free_unpacked(p, NULL);
  }
  fprintf(stderr, "  %d messages of %d KiB pushed in %d frames\n", N, SIZE / 1024, frames);
  CHECK_EQ(next, N + 1);
  CHECK((unsigned)frames >= N * SIZE / HUBU_FRAME_DEFAULT_MAX);
  mt_deliver_ack(b, AB, N);
  /* pulled: pages within max_frame, has_more until the end */
  uint64_t after = 0;
  int pages = 0;
  while (pages < 100) {
    CHECK(mt_pull_request(b, 500 + (uint64_t)pages, AB, after, 500) == 0);
    e2e_frame f;
    if (!mt_expect_frame_at(__FILE__, __LINE__, b, HUBU_FRAME_PULL_RESULT, E2E_WAIT_MS, &f)) break;
    pages++;
    CHECKF(f.len <= HUBU_FRAME_DEFAULT_MAX, "PULL_RESULT frame of %u bytes > max_frame", f.len);
    Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
    e2e_frame_free(&f);
    REQUIRE(r != NULL && r->code == HUBU__V1__CODE__OK);
    CHECK(r->n_messages > 0 || !r->has_more);
    for (size_t i = 0; i < r->n_messages; i++) {
      CHECKF(r->messages[i]->seq == after + 1 && r->messages[i]->body.len == SIZE, "pulled seq %llu after %llu",
             (unsigned long long)r->messages[i]->seq, (unsigned long long)after);
      after = r->messages[i]->seq;
    }
    int more = r->has_more;
    hubu__v1__pull_result__free_unpacked(r, NULL);
    if (!more) break;
  }
  fprintf(stderr, "  pulled back in %d pages\n", pages);
  CHECK_EQ(after, N);
  CHECK((unsigned)pages >= N * SIZE / HUBU_FRAME_DEFAULT_MAX);
  free(body);
  close(a);
  close(b);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(send_ack_ok_numbers_seqs_1_2_3_and_push_carries_the_same_message),
      E2E_CASE(push_reaches_senders_other_devices_and_connections_but_not_the_sending_one),
      E2E_CASE(retry_while_queued_or_after_stored_is_duplicate_with_same_seq_and_pushed_once),
      E2E_CASE(retry_on_a_new_connection_of_the_same_device_is_duplicate),
      E2E_CASE(hello_ok_last_client_id_is_the_highest_stored_one_also_after_restart),
      E2E_CASE(client_id_below_high_water_mark_never_stored_is_stale),
      E2E_CASE(refused_send_stores_nothing_and_uses_up_nothing),
      E2E_CASE(malformed_session_ids_and_client_id_0_are_invalid),
      E2E_CASE(hundred_pipelined_sends_in_one_write_get_hundred_acks_with_seqs_in_client_id_order),
      E2E_CASE(group_message_reaches_every_members_connections),
      E2E_CASE(pull_pages_by_after_seq_and_limit_with_has_more_and_max_seq),
      E2E_CASE(pull_is_forbidden_for_non_members_and_for_other_users_direct_sessions),
      E2E_CASE(sync_lists_sessions_above_the_known_cursor_including_unknown_ones),
      E2E_CASE(deliver_ack_retires_inflight_and_only_unacked_pushes_are_retransmitted),
      E2E_CASE(connection_that_never_acks_gets_goaway_timeout_after_3_retransmits),
      E2E_CASE(unacked_push_is_retransmitted_even_while_other_sessions_are_acked),
      E2E_CASE(fifth_message_to_a_non_acking_reader_comes_as_pull_hint_and_pull_fetches_it),
      E2E_CASE(large_messages_are_split_into_push_and_pull_frames_within_max_frame),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof *cases);
}

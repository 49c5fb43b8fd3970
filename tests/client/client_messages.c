/* client_messages.c — libhubu-client's message layer against a real hubud:
 * what an application observes through on_stored, on_received and on_failed.
 * Each case checks the guarantee of PROTOCOL.md section 5 it names: stored
 * once, delivered once and in order, across pipelining, a server restart, a
 * client restart (the outbox), an offline receiver, PULL_HINTs, and refusals. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "harness_uv.h"
#include "hubu_client.h"
#include "token.h"
#include "wire.h"

/* ---- one client as the test sees it ---- */

typedef struct {
  uint64_t client_id, seq;
  int duplicate;
  char session[64];
} stored_rec;

typedef struct {
  uint64_t seq;
  char session[64];
  char sender[65];
  char body[64];
} received_rec;

typedef struct {
  uint64_t client_id;
  int code;
} failed_rec;

/* Records everything its client reports; arrays owned, freed by peer_free. */
typedef struct {
  hubu_client *c;
  char token[HUBU_TOKEN_MAX];
  int readies;
  int closed;
  stored_rec *stored;
  size_t n_stored, cap_stored;
  received_rec *received;
  size_t n_received, cap_received;
  failed_rec *failed;
  size_t n_failed, cap_failed;
} peer;

#define GROW(arr, n, cap)                            \
  do {                                               \
    if ((n) == (cap)) {                              \
      (cap) = (cap) ? 2 * (cap) : 64;                \
      (arr) = realloc((arr), (cap) * sizeof *(arr)); \
      REQUIRE((arr) != NULL);                        \
    }                                                \
  } while (0)

static void on_state(hubu_client *c, hubu_client_state st, int code, const char *reason, void *ud) {
  (void)ud;
  if (code || st == HUBU_CLIENT_READY)
    fprintf(stderr, "  %p %s code %d %s\n", (void *)c, hubu_client_state_name(st), code, reason ? reason : "");
}

static void on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)c;
  (void)info;
  ((peer *)ud)->readies++;
}

static void on_stored(hubu_client *c, uint64_t client_id, const char *session_id, uint64_t seq, uint64_t msg_id,
                      int duplicate, void *ud) {
  (void)c;
  (void)msg_id;
  peer *p = ud;
  GROW(p->stored, p->n_stored, p->cap_stored);
  stored_rec *r = &p->stored[p->n_stored++];
  r->client_id = client_id;
  r->seq = seq;
  r->duplicate = duplicate;
  snprintf(r->session, sizeof r->session, "%s", session_id);
}

static void on_received(hubu_client *c, const hubu_client_message *m, void *ud) {
  (void)c;
  peer *p = ud;
  GROW(p->received, p->n_received, p->cap_received);
  received_rec *r = &p->received[p->n_received++];
  r->seq = m->seq;
  snprintf(r->session, sizeof r->session, "%s", m->session_id);
  snprintf(r->sender, sizeof r->sender, "%s", m->sender);
  size_t n = m->body_len < sizeof r->body - 1 ? m->body_len : sizeof r->body - 1;
  memcpy(r->body, m->body, n);
  r->body[n] = '\0';
}

static void on_failed(hubu_client *c, uint64_t client_id, int code, const char *reason, void *ud) {
  (void)c;
  peer *p = ud;
  fprintf(stderr, "  failed: client_id %llu code %d %s\n", (unsigned long long)client_id, code, reason);
  GROW(p->failed, p->n_failed, p->cap_failed);
  p->failed[p->n_failed].client_id = client_id;
  p->failed[p->n_failed].code = code;
  p->n_failed++;
}

static void on_closed(void *ud) { ((peer *)ud)->closed = 1; }

typedef struct {
  const char *outbox;
  int no_reconnect;
  int no_auto_sync;
  uint32_t gap_wait_ms, send_timeout_ms;
} peer_opts;

static void peer_open(peer *p, uv_loop_t *loop, int port, const char *user, const char *device, const peer_opts *po) {
  memset(p, 0, sizeof *p);
  e2e_token(user, p->token);
  hubu_client_options opt = {0};
  opt.host = "127.0.0.1";
  opt.port = port;
  opt.user_id = user;
  opt.device_id = device;
  opt.token = p->token;
  opt.reconnect = !(po && po->no_reconnect);
  opt.backoff_min_ms = 50;
  opt.backoff_max_ms = 300;
  opt.connect_timeout_ms = 3000;
  opt.outbox_path = po ? po->outbox : NULL;
  opt.no_auto_sync = po ? po->no_auto_sync : 0;
  opt.gap_wait_ms = po ? po->gap_wait_ms : 0;
  opt.send_timeout_ms = po ? po->send_timeout_ms : 0;
  hubu_client_callbacks cb = {0};
  cb.on_state = on_state;
  cb.on_ready = on_ready;
  cb.on_stored = on_stored;
  cb.on_received = on_received;
  cb.on_failed = on_failed;
  p->c = hubu_client_new(loop, &opt, &cb, p);
  if (!p->c) fprintf(stderr, "  hubu_client_new: %s\n", hubu_client_last_error());
  REQUIRE(p->c != NULL);
}

static void peer_close(peer *p) {
  if (p->c) hubu_client_close(p->c, on_closed);
  p->c = NULL;
}

static void peer_free(peer *p) {
  free(p->stored);
  free(p->received);
  free(p->failed);
  p->stored = NULL;
  p->received = NULL;
  p->failed = NULL;
}

/* ---- waiting ---- */

typedef struct {
  peer *a, *b;
  size_t a_stored, b_received;
} want;

static int ready2(void *ud) {
  want *w = ud;
  return w->a->readies > 0 && (!w->b || w->b->readies > 0);
}

static int reached(void *ud) {
  want *w = ud;
  return (!w->a || w->a->n_stored + w->a->n_failed >= w->a_stored) && (!w->b || w->b->n_received >= w->b_received);
}

static int never(void *ud) {
  (void)ud;
  return 0;
}

static void settle(uv_loop_t *loop, int ms) { e2e_uv_run_until(loop, never, NULL, ms); }

/* Slower under the sanitizers. */
#ifdef HUBU_E2E_SANITIZED
#define WAIT_LONG_MS 60000
#else
#define WAIT_LONG_MS 30000
#endif

static uint64_t send_text(peer *p, const char *session, const char *text) {
  return hubu_client_send_message(p->c, session, (const uint8_t *)text, strlen(text), "text/plain", 0, NULL, NULL);
}

/* Checks that r[0..n) of session are in strictly increasing seq order and that
 * their bodies are prefix%04d for 0..n-1 in order, each once. */
static void check_in_order(const received_rec *r, size_t n, const char *session, const char *prefix) {
  int bad_order = 0, bad_body = 0, bad_session = 0;
  for (size_t i = 0; i < n; i++) {
    char want_body[64];
    snprintf(want_body, sizeof want_body, "%s%04zu", prefix, i);
    if (i > 0 && r[i].seq <= r[i - 1].seq && bad_order++ < 3)
      fprintf(stderr, "  out of order at %zu: seq %llu after %llu\n", i, (unsigned long long)r[i].seq,
              (unsigned long long)r[i - 1].seq);
    if (strcmp(r[i].body, want_body) != 0 && bad_body++ < 3)
      fprintf(stderr, "  at %zu: body '%s', want '%s'\n", i, r[i].body, want_body);
    if (strcmp(r[i].session, session) != 0) bad_session++;
  }
  CHECK_EQ(bad_order, 0);
  CHECK_EQ(bad_body, 0);
  CHECK_EQ(bad_session, 0);
}

/* Checks that stored client_ids are distinct and that seq order follows client_id order. */
static int cmp_stored(const void *x, const void *y) {
  const stored_rec *a = x, *b = y;
  return a->client_id < b->client_id ? -1 : a->client_id > b->client_id;
}

static void check_stored_order(peer *p) {
  stored_rec *s = malloc((p->n_stored ? p->n_stored : 1) * sizeof *s);
  REQUIRE(s != NULL);
  memcpy(s, p->stored, p->n_stored * sizeof *s);
  qsort(s, p->n_stored, sizeof *s, cmp_stored);
  int dup_ids = 0, bad = 0;
  for (size_t i = 1; i < p->n_stored; i++) {
    if (s[i].client_id == s[i - 1].client_id) dup_ids++;
    if (s[i].seq <= s[i - 1].seq && bad++ < 3)
      fprintf(stderr, "  client_id %llu has seq %llu, client_id %llu has seq %llu\n",
              (unsigned long long)s[i - 1].client_id, (unsigned long long)s[i - 1].seq,
              (unsigned long long)s[i].client_id, (unsigned long long)s[i].seq);
  }
  CHECK_EQ(dup_ids, 0);
  CHECK_EQ(bad, 0);
  free(s);
}

static void finish_loop(uv_loop_t *loop) { CHECK(e2e_uv_finish(loop, 5000) == 0); }

/* ---- cases ---- */

static void message_sent_by_alice_is_stored_and_received_by_bob_exactly_once(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, s.port, "alice", "phone", NULL);
  peer_open(&bob, &loop, s.port, "bob", "laptop", NULL);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, 0, 0};
  REQUIRE(e2e_uv_run_until(&loop, ready2, &w, 5000));

  uint64_t id = send_text(&alice, "d:alice:bob", "hello bob");
  CHECK(id > 0);
  CHECK_EQ(hubu_client_pending(alice.c), 1);
  w.a_stored = 1;
  w.b_received = 1;
  CHECK(e2e_uv_run_until(&loop, reached, &w, 5000));
  settle(&loop, 300); /* time for a duplicate to show up, if one were coming */

  REQUIRE(alice.n_stored == 1);
  CHECK_EQ(alice.stored[0].client_id, id);
  CHECK_EQ(alice.stored[0].seq, 1);
  CHECK_EQ(alice.stored[0].duplicate, 0);
  CHECK(!strcmp(alice.stored[0].session, "d:alice:bob"));
  CHECK_EQ(alice.n_failed, 0);
  CHECK_EQ(hubu_client_pending(alice.c), 0);
  REQUIRE(bob.n_received == 1);
  CHECK_EQ(bob.received[0].seq, 1);
  CHECK(!strcmp(bob.received[0].sender, "alice"));
  CHECK(!strcmp(bob.received[0].body, "hello bob"));
  CHECK_EQ(hubu_client_cursor(bob.c, "d:alice:bob"), 1);
  hubu_client_stats st;
  hubu_client_get_stats(bob.c, &st);
  CHECK(st.deliver_acks >= 1);
  CHECK_EQ(st.delivered, 1);

  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  CHECK(alice.closed && bob.closed);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

#define N_PIPELINED 1000

static void thousand_pipelined_sends_arrive_in_order_without_duplicates(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, s.port, "alice", "phone", NULL);
  peer_open(&bob, &loop, s.port, "bob", "laptop", NULL);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, 0, 0};
  REQUIRE(e2e_uv_run_until(&loop, ready2, &w, 5000));

  uint64_t prev = 0;
  int increasing = 1;
  for (int i = 0; i < N_PIPELINED; i++) { /* one loop turn: every SEND is outstanding at once */
    char body[32];
    snprintf(body, sizeof body, "p%04d", i);
    uint64_t id = send_text(&alice, "d:alice:bob", body);
    if (id <= prev) increasing = 0;
    prev = id;
  }
  CHECK(increasing);
  CHECK_EQ(hubu_client_pending(alice.c), N_PIPELINED);
  w.a_stored = N_PIPELINED;
  w.b_received = N_PIPELINED;
  CHECK(e2e_uv_run_until(&loop, reached, &w, WAIT_LONG_MS));
  settle(&loop, 300);

  CHECK_EQ(alice.n_stored, N_PIPELINED);
  CHECK_EQ(alice.n_failed, 0);
  check_stored_order(&alice);
  CHECK_EQ(bob.n_received, N_PIPELINED);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "p");
  hubu_client_stats st;
  hubu_client_get_stats(alice.c, &st);
  fprintf(stderr, "  alice: sends %llu resends %llu\n", (unsigned long long)st.sends, (unsigned long long)st.resends);
  CHECK_EQ(st.sends, N_PIPELINED);
  hubu_client_get_stats(bob.c, &st);
  fprintf(stderr, "  bob: pushed %llu pulled %llu duplicates %llu deliver_acks %llu\n", (unsigned long long)st.pushed,
          (unsigned long long)st.pulled, (unsigned long long)st.duplicates, (unsigned long long)st.deliver_acks);
  CHECK_EQ(st.delivered, N_PIPELINED);
  CHECK(st.deliver_acks < N_PIPELINED); /* cumulative, once per loop turn */

  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

typedef struct {
  e2e_server *server;
  int exited, status;
} exit_watch;

static int server_exited(void *ud) {
  exit_watch *x = ud;
  if (!x->exited) x->exited = e2e_server_poll(x->server, &x->status);
  return x->exited;
}

/* Sends prefix%04d messages from a timer, `per_tick` every 2 ms, until `total`:
 * traffic that is still in flight whenever the test pulls the plug. */
typedef struct {
  uv_timer_t timer;
  peer *from;
  const char *session, *prefix;
  int sent, total, per_tick;
} pacer;

static void on_pace(uv_timer_t *t) {
  pacer *pc = t->data;
  for (int i = 0; i < pc->per_tick && pc->sent < pc->total; i++, pc->sent++) {
    char body[32];
    snprintf(body, sizeof body, "%s%04d", pc->prefix, pc->sent);
    CHECK(send_text(pc->from, pc->session, body) > 0);
  }
  if (pc->sent >= pc->total) uv_timer_stop(t);
}

static void pacer_start(pacer *pc, uv_loop_t *loop, peer *from, const char *session, const char *prefix, int total,
                        int per_tick) {
  memset(pc, 0, sizeof *pc);
  pc->from = from;
  pc->session = session;
  pc->prefix = prefix;
  pc->total = total;
  pc->per_tick = per_tick;
  uv_timer_init(loop, &pc->timer);
  pc->timer.data = pc;
  uv_timer_start(&pc->timer, on_pace, 0, 2);
}

static void pacer_close(pacer *pc) { uv_close((uv_handle_t *)&pc->timer, NULL); }

#define N_RESTART 1000

/* Stops hubud with sig while alice's sends are in flight, restarts it on the
 * same port and data, and checks that every message was stored and delivered
 * exactly once, in order. */
static void restart_under_traffic(int sig) {
  int port = e2e_free_port();
  REQUIRE(port > 0);
  char listen[32], data[128];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  e2e_server first, second;
  REQUIRE(e2e_server_start(&first, "--listen", listen, "--drain-ms", "300", NULL) == 0);
  snprintf(data, sizeof data, "%s/data", first.dir);

  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, port, "alice", "phone", NULL);
  peer_open(&bob, &loop, port, "bob", "laptop", NULL);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, 0, 0};
  REQUIRE(e2e_uv_run_until(&loop, ready2, &w, 5000));

  pacer pc;
  pacer_start(&pc, &loop, &alice, "d:alice:bob", "r", N_RESTART, 40);
  w.a_stored = N_RESTART / 4; /* in the middle: stored, delivered, in flight and not yet sent, all at once */
  CHECK(e2e_uv_run_until(&loop, reached, &w, WAIT_LONG_MS));
  fprintf(stderr, "  signal %d to hubud: %d queued, %zu stored, %zu received\n", sig, pc.sent, alice.n_stored,
          bob.n_received);
  e2e_server_signal(&first, sig);
  exit_watch x = {&first, 0, 0};
  CHECK(e2e_uv_run_until(&loop, server_exited, &x, 10000));
  CHECKF(x.exited && x.status == (sig == SIGKILL ? 128 + SIGKILL : 0), "first hubud exit status %d", x.status);
  settle(&loop, 100); /* the pacer keeps queueing while the server is down */
  fprintf(stderr, "  restarting: %d queued, %zu stored, %zu pending\n", pc.sent, alice.n_stored,
          hubu_client_pending(alice.c));
  REQUIRE(e2e_server_start(&second, "--listen", listen, "--data", data, NULL) == 0);
  w.a_stored = N_RESTART;
  w.b_received = N_RESTART;
  CHECK(e2e_uv_run_until(&loop, reached, &w, WAIT_LONG_MS));
  settle(&loop, 500);

  CHECK(hubu_client_sessions(alice.c) >= 2);
  CHECK(hubu_client_sessions(bob.c) >= 2);
  CHECK_EQ(alice.n_failed, 0);
  CHECK_EQ(hubu_client_pending(alice.c), 0);
  CHECK_EQ(alice.n_stored, N_RESTART); /* on_stored once per message, duplicate answers included */
  check_stored_order(&alice);
  CHECK_EQ(bob.n_received, N_RESTART);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "r");
  size_t dups = 0;
  for (size_t i = 0; i < alice.n_stored; i++) dups += alice.stored[i].duplicate;
  hubu_client_stats st;
  hubu_client_get_stats(alice.c, &st);
  fprintf(stderr, "  alice: sends %llu resends %llu renumbered %llu, %zu answered as duplicates\n",
          (unsigned long long)st.sends, (unsigned long long)st.resends, (unsigned long long)st.renumbered, dups);
  hubu_client_get_stats(bob.c, &st);
  fprintf(stderr, "  bob: pushed %llu pulled %llu duplicates %llu gaps %llu pulls %llu syncs %llu\n",
          (unsigned long long)st.pushed, (unsigned long long)st.pulled, (unsigned long long)st.duplicates,
          (unsigned long long)st.gaps, (unsigned long long)st.pulls, (unsigned long long)st.syncs);
  CHECK_EQ(st.delivered, N_RESTART);

  pacer_close(&pc);
  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&second);
  e2e_server_cleanup(&first);
}

static void every_message_is_delivered_once_across_a_server_restart(void) { restart_under_traffic(SIGTERM); }

static void every_message_is_delivered_once_across_a_server_kill(void) { restart_under_traffic(SIGKILL); }

/* A temp dir for files the server does not own; removed by temp_dir_remove. */
static void temp_dir_make(char *dir, size_t size) {
  snprintf(dir, size, "/tmp/hubu-client-XXXXXX");
  REQUIRE(mkdtemp(dir) != NULL);
}

static void temp_dir_remove(const char *dir) { e2e_remove_tree(dir); }

#define N_OUTBOX 5

static void outbox_survives_a_client_restart_while_the_server_is_down(void) {
  int port = e2e_free_port();
  REQUIRE(port > 0);
  char dir[64], outbox[128], listen[32];
  temp_dir_make(dir, sizeof dir);
  snprintf(outbox, sizeof outbox, "%s/alice-phone.outbox", dir);
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);

  /* First process: the server is down; the messages are only queued. */
  uv_loop_t loop1;
  REQUIRE(uv_loop_init(&loop1) == 0);
  peer first;
  peer_opts po = {.outbox = outbox};
  peer_open(&first, &loop1, port, "alice", "phone", &po);
  CHECK(hubu_client_start(first.c) == 0);
  for (int i = 0; i < N_OUTBOX; i++) {
    char body[32];
    snprintf(body, sizeof body, "o%04d", i);
    CHECK(send_text(&first, "d:alice:bob", body) > 0);
  }
  CHECK_EQ(hubu_client_pending(first.c), N_OUTBOX);
  settle(&loop1, 200);
  CHECK_EQ(first.n_stored, 0);

  /* The outbox belongs to one process at a time. */
  uv_loop_t other;
  REQUIRE(uv_loop_init(&other) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  hubu_client_options opt = {
      .port = port, .user_id = "alice", .device_id = "phone", .token = tok, .outbox_path = outbox};
  CHECK(hubu_client_new(&other, &opt, NULL, NULL) == NULL);
  CHECKF(strstr(hubu_client_last_error(), "in use") != NULL, "last error: %s", hubu_client_last_error());
  CHECK(uv_loop_close(&other) == 0);

  peer_close(&first);
  finish_loop(&loop1);
  peer_free(&first);

  /* Second process, same outbox: it resends what the first never saw acknowledged. */
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, port, "alice", "phone", &po);
  CHECK_EQ(hubu_client_pending(alice.c), N_OUTBOX);
  peer_open(&bob, &loop, port, "bob", "laptop", NULL);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--listen", listen, NULL) == 0);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, N_OUTBOX, N_OUTBOX};
  CHECK(e2e_uv_run_until(&loop, reached, &w, 10000));
  settle(&loop, 300);
  CHECK_EQ(alice.n_stored, N_OUTBOX);
  CHECK_EQ(alice.n_failed, 0);
  for (size_t i = 0; i < alice.n_stored; i++) {
    CHECK_EQ(alice.stored[i].client_id, i + 1); /* the ids the first process was given */
    CHECK_EQ(alice.stored[i].seq, i + 1);
    CHECK_EQ(alice.stored[i].duplicate, 0);
  }
  CHECK_EQ(hubu_client_pending(alice.c), 0);
  CHECK_EQ(bob.n_received, N_OUTBOX);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "o");
  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);

  /* Third process: nothing left to send, and the next id continues. */
  uv_loop_t loop3;
  REQUIRE(uv_loop_init(&loop3) == 0);
  peer third;
  peer_open(&third, &loop3, port, "alice", "phone", &po);
  CHECK_EQ(hubu_client_pending(third.c), 0);
  CHECK_EQ(send_text(&third, "d:alice:bob", "after"), N_OUTBOX + 1);
  CHECK(hubu_client_start(third.c) == 0);
  want w3 = {&third, NULL, 1, 0};
  CHECK(e2e_uv_run_until(&loop3, reached, &w3, 5000));
  CHECK_EQ(third.n_stored, 1);
  if (third.n_stored) CHECK_EQ(third.stored[0].seq, N_OUTBOX + 1);
  peer_close(&third);
  finish_loop(&loop3);
  peer_free(&third);

  CHECK_SERVER_STOPS_CLEANLY(&s);
  temp_dir_remove(dir);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void append_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "ab");
  REQUIRE(f != NULL);
  CHECK(fwrite(data, 1, len, f) == len);
  fclose(f);
}

/* Opens a client on outbox (nothing listens on port 1) and reports its pending count; -1 when refused. */
static long pending_in_outbox(const char *outbox) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  hubu_client_options opt = {.port = 1, .user_id = "alice", .device_id = "phone", .token = tok, .outbox_path = outbox};
  hubu_client *c = hubu_client_new(&loop, &opt, NULL, NULL);
  long n = c ? (long)hubu_client_pending(c) : -1;
  if (!c) fprintf(stderr, "  hubu_client_new: %s\n", hubu_client_last_error());
  if (c) hubu_client_close(c, NULL);
  finish_loop(&loop);
  return n;
}

static void outbox_with_a_torn_tail_keeps_every_whole_record(void) {
  char dir[64], outbox[128];
  temp_dir_make(dir, sizeof dir);
  snprintf(outbox, sizeof outbox, "%s/alice-phone.outbox", dir);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer p;
  peer_opts po = {.outbox = outbox};
  peer_open(&p, &loop, 1, "alice", "phone", &po); /* never started: queue only */
  CHECK(send_text(&p, "d:alice:bob", "t0000") == 1);
  CHECK(send_text(&p, "d:alice:bob", "t0001") == 2);
  peer_close(&p);
  finish_loop(&loop);
  peer_free(&p);
  long whole = file_size(outbox);
  CHECK(whole > 8);

  /* A crash in the middle of an append: a record header promising more than is there. */
  static const uint8_t torn[] = {0x00, 0x00, 0x01, 0x00, 0x12, 0x34, 0x56, 0x78, 'Q', 0x00};
  append_bytes(outbox, torn, sizeof torn);
  CHECK_EQ(pending_in_outbox(outbox), 2);
  CHECK_EQ(file_size(outbox), whole); /* rewritten without the torn bytes */

  /* A record whose check does not match ends the log there too. */
  static const uint8_t corrupt[] = {0x00, 0x00, 0x00, 0x09, 0xde, 0xad, 0xbe, 0xef, 'D', 0, 0, 0, 0, 0, 0, 0, 1};
  append_bytes(outbox, corrupt, sizeof corrupt);
  CHECK_EQ(pending_in_outbox(outbox), 2);

  /* A file that is not an outbox is never overwritten. */
  char other[128];
  snprintf(other, sizeof other, "%s/notes.txt", dir);
  append_bytes(other, "my notes\n", 9);
  CHECK_EQ(pending_in_outbox(other), -1);
  CHECK(strstr(hubu_client_last_error(), "not a hubu outbox") != NULL);
  CHECK_EQ(file_size(other), 9);
  temp_dir_remove(dir);
}

#define N_COMPACT 300

static void outbox_is_compacted_once_everything_is_acknowledged(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char dir[64], outbox[128];
  temp_dir_make(dir, sizeof dir);
  snprintf(outbox, sizeof outbox, "%s/alice-phone.outbox", dir);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer p;
  peer_opts po = {.outbox = outbox};
  peer_open(&p, &loop, s.port, "alice", "phone", &po);
  char body[1024];
  memset(body, 'x', sizeof body);
  for (int i = 0; i < N_COMPACT; i++)
    CHECK(hubu_client_send_message(p.c, "d:alice:bob", (const uint8_t *)body, sizeof body, "text/plain", 0, NULL,
                                   NULL) == (uint64_t)i + 1);
  long grown = file_size(outbox);
  CHECKF(grown > N_COMPACT * (long)sizeof body, "outbox holds %ld bytes after %d sends", grown, N_COMPACT);
  CHECK(hubu_client_start(p.c) == 0);
  want w = {&p, NULL, N_COMPACT, 0};
  CHECK(e2e_uv_run_until(&loop, reached, &w, WAIT_LONG_MS));
  settle(&loop, 100);
  CHECK_EQ(p.n_stored, N_COMPACT);
  long compact = file_size(outbox);
  CHECKF(compact > 0 && compact < 256, "outbox holds %ld bytes with nothing pending", compact);
  peer_close(&p);
  finish_loop(&loop);
  peer_free(&p);
  /* The next process continues after the ids used. */
  uv_loop_t loop2;
  REQUIRE(uv_loop_init(&loop2) == 0);
  peer q;
  peer_open(&q, &loop2, s.port, "alice", "phone", &po);
  CHECK_EQ(hubu_client_pending(q.c), 0);
  CHECK_EQ(send_text(&q, "d:alice:bob", "next"), N_COMPACT + 1);
  peer_close(&q);
  finish_loop(&loop2);
  peer_free(&q);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  temp_dir_remove(dir);
}

#define N_OFFLINE 2000

static void offline_receiver_gets_2000_messages_in_order_after_connecting(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, s.port, "alice", "phone", NULL);
  CHECK(hubu_client_start(alice.c) == 0);
  for (int i = 0; i < N_OFFLINE; i++) {
    char body[32];
    snprintf(body, sizeof body, "f%04d", i);
    CHECK(send_text(&alice, "d:alice:bob", body) > 0);
  }
  want w = {&alice, NULL, N_OFFLINE, 0};
  CHECK(e2e_uv_run_until(&loop, reached, &w, WAIT_LONG_MS));
  CHECK_EQ(alice.n_stored, N_OFFLINE);

  peer_open(&bob, &loop, s.port, "bob", "laptop", NULL);
  CHECK(hubu_client_start(bob.c) == 0);
  want wb = {NULL, &bob, 0, N_OFFLINE};
  CHECK(e2e_uv_run_until(&loop, reached, &wb, WAIT_LONG_MS));
  settle(&loop, 300);
  CHECK_EQ(bob.n_received, N_OFFLINE);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "f");
  CHECK_EQ(hubu_client_cursor(bob.c, "d:alice:bob"), N_OFFLINE);
  hubu_client_stats st;
  hubu_client_get_stats(bob.c, &st);
  fprintf(stderr, "  bob: syncs %llu pulls %llu pulled %llu pushed %llu\n", (unsigned long long)st.syncs,
          (unsigned long long)st.pulls, (unsigned long long)st.pulled, (unsigned long long)st.pushed);
  CHECK(st.syncs >= 1);
  CHECK(st.pulls >= N_OFFLINE / 500);
  CHECK_EQ(st.pulled, N_OFFLINE);

  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

#define N_HINTED 400

static void gap_after_pull_hint_is_filled_by_pull(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-inflight", "4", NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, s.port, "alice", "phone", NULL);
  peer_open(&bob, &loop, s.port, "bob", "laptop", NULL);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, 0, 0};
  REQUIRE(e2e_uv_run_until(&loop, ready2, &w, 5000));
  /* Paced, so pushes resume (after bob's DELIVER_ACKs) while hinted seqs are
   * still missing: bob holds those pushes until his PULL fills the gap. */
  pacer pc;
  pacer_start(&pc, &loop, &alice, "d:alice:bob", "h", N_HINTED, 8);
  w.a_stored = N_HINTED;
  w.b_received = N_HINTED;
  CHECK(e2e_uv_run_until(&loop, reached, &w, WAIT_LONG_MS));
  settle(&loop, 300);
  CHECK_EQ(bob.n_received, N_HINTED);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "h");
  hubu_client_stats st;
  hubu_client_get_stats(bob.c, &st);
  fprintf(stderr, "  bob: pushed %llu pulled %llu hints %llu pulls %llu gaps %llu duplicates %llu\n",
          (unsigned long long)st.pushed, (unsigned long long)st.pulled, (unsigned long long)st.pull_hints,
          (unsigned long long)st.pulls, (unsigned long long)st.gaps, (unsigned long long)st.duplicates);
  CHECK(st.pull_hints > 0);
  CHECK(st.pulls > 0);
  CHECK(st.pulled > 0);
  CHECK_EQ(st.delivered, N_HINTED);

  pacer_close(&pc);
  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void send_to_a_direct_session_of_other_users_fails_forbidden(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice;
  peer_open(&alice, &loop, s.port, "alice", "phone", NULL);
  CHECK(hubu_client_start(alice.c) == 0);
  uint64_t id = send_text(&alice, "d:bob:carol", "not mine");
  CHECK(id > 0);
  want w = {&alice, NULL, 1, 0};
  CHECK(e2e_uv_run_until(&loop, reached, &w, 5000));
  REQUIRE(alice.n_failed == 1);
  CHECK_EQ(alice.failed[0].client_id, id);
  CHECK_EQ(alice.failed[0].code, HUBU__V1__CODE__FORBIDDEN);
  CHECK_EQ(alice.n_stored, 0);
  CHECK_EQ(hubu_client_pending(alice.c), 0);

  /* The refusal used up nothing: the next message is stored normally. */
  uint64_t next = send_text(&alice, "d:alice:bob", "mine");
  w.a_stored = 2;
  CHECK(e2e_uv_run_until(&loop, reached, &w, 5000));
  REQUIRE(alice.n_stored == 1);
  CHECK_EQ(alice.stored[0].client_id, next);
  CHECK_EQ(alice.stored[0].seq, 1);

  peer_close(&alice);
  finish_loop(&loop);
  peer_free(&alice);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* Stores one message as (alice, phone) with client_id over a raw connection. */
static void raw_store(int port, uint64_t client_id, const char *session, const char *text) {
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  REQUIRE(e2e_send_hello(fd, "alice", "phone", NULL) == 0);
  REQUIRE(EXPECT_HELLO_OK(fd, NULL));
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = client_id;
  m.session_id = (char *)session;
  m.body.data = (uint8_t *)text;
  m.body.len = strlen(text);
  REQUIRE(e2e_send_msg(fd, HUBU_FRAME_SEND, &m.base) == 0);
  int acked = 0;
  for (int i = 0; i < 20 && !acked; i++) {
    e2e_frame f;
    if (e2e_read_frame(fd, 3000, &f) != E2E_READ_OK) break;
    if (f.type == HUBU_FRAME_SEND_ACK) {
      Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, f.len, f.body);
      CHECK(a && a->code == HUBU__V1__CODE__OK && a->client_id == client_id);
      if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
      acked = 1;
    }
    e2e_frame_free(&f);
  }
  CHECK(acked);
  e2e_close(fd);
}

static void stale_resend_goes_out_under_a_new_client_id(void) {
  int port = e2e_free_port();
  REQUIRE(port > 0);
  char dir[64], outbox[128], listen[32], data[128];
  temp_dir_make(dir, sizeof dir);
  snprintf(outbox, sizeof outbox, "%s/alice-phone.outbox", dir);
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  e2e_server first, second;
  REQUIRE(e2e_server_start(&first, "--listen", listen, "--drain-ms", "300", NULL) == 0);
  snprintf(data, sizeof data, "%s/data", first.dir);

  /* A client that has seen the server's mark (0) queues three messages while the server is down. */
  uv_loop_t loop1;
  REQUIRE(uv_loop_init(&loop1) == 0);
  peer before;
  peer_opts po = {.outbox = outbox};
  peer_open(&before, &loop1, port, "alice", "phone", &po);
  CHECK(hubu_client_start(before.c) == 0);
  want w1 = {&before, NULL, 0, 0};
  REQUIRE(e2e_uv_run_until(&loop1, ready2, &w1, 5000));
  e2e_server_signal(&first, SIGTERM);
  exit_watch x = {&first, 0, 0};
  CHECK(e2e_uv_run_until(&loop1, server_exited, &x, 10000));
  for (int i = 0; i < 3; i++) {
    char body[32];
    snprintf(body, sizeof body, "s%04d", i + 1);
    CHECK_EQ(send_text(&before, "d:alice:bob", body), (uint64_t)i + 1);
  }
  peer_close(&before);
  finish_loop(&loop1);
  peer_free(&before);

  /* Meanwhile the same device stored client_id 5: 1..3 are now below its mark, never stored. */
  REQUIRE(e2e_server_start(&second, "--listen", listen, "--data", data, NULL) == 0);
  raw_store(port, 5, "d:alice:bob", "s0000");

  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, port, "alice", "phone", &po);
  peer_open(&bob, &loop, port, "bob", "laptop", NULL);
  CHECK_EQ(hubu_client_pending(alice.c), 3);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, 3, 4};
  CHECK(e2e_uv_run_until(&loop, reached, &w, 10000));
  settle(&loop, 300);
  CHECK_EQ(alice.n_failed, 0);
  REQUIRE(alice.n_stored == 3);
  for (size_t i = 0; i < 3; i++) {
    CHECK_EQ(alice.stored[i].client_id, i + 1); /* reported under the ids the app was given */
    CHECK_EQ(alice.stored[i].seq, i + 2);
    CHECK_EQ(alice.stored[i].duplicate, 0);
  }
  hubu_client_stats st;
  hubu_client_get_stats(alice.c, &st);
  CHECK_EQ(st.renumbered, 3);
  CHECK_EQ(bob.n_received, 4);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "s");

  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&second);
  e2e_server_cleanup(&first);
  temp_dir_remove(dir);
}

static void message_queued_before_connecting_takes_an_id_above_the_servers_mark(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  /* An earlier run of this device (without the outbox) used client_ids 1 and 7. */
  raw_store(s.port, 1, "d:alice:bob", "q0000");
  raw_store(s.port, 7, "d:alice:bob", "q0001");
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer alice, bob;
  peer_open(&alice, &loop, s.port, "alice", "phone", NULL);
  peer_open(&bob, &loop, s.port, "bob", "laptop", NULL);
  uint64_t id = send_text(&alice, "d:alice:bob", "q0002"); /* before the first HELLO_OK: id 1 again */
  CHECK_EQ(id, 1);
  CHECK(hubu_client_start(alice.c) == 0);
  CHECK(hubu_client_start(bob.c) == 0);
  want w = {&alice, &bob, 1, 3};
  CHECK(e2e_uv_run_until(&loop, reached, &w, 5000));
  settle(&loop, 200);
  REQUIRE(alice.n_stored == 1);
  CHECK_EQ(alice.stored[0].client_id, id);
  CHECK_EQ(alice.stored[0].duplicate, 0); /* not taken for the earlier run's message 1 */
  CHECK_EQ(alice.stored[0].seq, 3);
  CHECK_EQ(bob.n_received, 3);
  check_in_order(bob.received, bob.n_received, "d:alice:bob", "q");
  CHECK_EQ(send_text(&alice, "d:alice:bob", "q0003"), 9); /* after the renumbered 8 */

  peer_close(&alice);
  peer_close(&bob);
  finish_loop(&loop);
  peer_free(&alice);
  peer_free(&bob);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* ---- a scripted server: the exact frames the message layer sends ----
 * One thread accepts the client's connection, answers HELLO and then plays a
 * script of raw frames; what the script reads it checks itself. The real
 * server cannot be made to show a held gap, a hole or a STALE on demand. */

typedef struct {
  int listen_fd, port;
  uint64_t last_client_id; /* HelloOk.last_client_id */
  void (*script)(int fd);
  pthread_t thread;
  atomic_int done;
} fake_server;

/* What the script has seen besides the frames it waited for. */
static struct {
  char ack_session[8][64];
  uint64_t ack_seq[8];
  int n_acks;
  int pulls, syncs, sends;
} seen;

static void *fake_main(void *arg) {
  fake_server *fs = arg;
  struct pollfd pfd = {fs->listen_fd, POLLIN, 0};
  int fd = -1;
  if (poll(&pfd, 1, 5000) == 1) fd = accept(fs->listen_fd, NULL, NULL);
  CHECK(fd >= 0);
  if (fd >= 0) {
    e2e_frame f;
    int r = e2e_read_frame(fd, 5000, &f);
    CHECK(r == E2E_READ_OK && f.type == HUBU_FRAME_HELLO);
    if (r == E2E_READ_OK) e2e_frame_free(&f);
    Hubu__V1__HelloOk ok = HUBU__V1__HELLO_OK__INIT;
    ok.conn_id = 1;
    ok.heartbeat_ms = 30000;
    ok.last_client_id = fs->last_client_id;
    ok.max_frame = 1u << 20;
    ok.server = "scripted";
    CHECK(e2e_send_msg(fd, HUBU_FRAME_HELLO_OK, &ok.base) == 0);
    fs->script(fd);
    close(fd);
  }
  atomic_store(&fs->done, 1);
  return NULL;
}

static void fake_start(fake_server *fs, void (*script)(int fd), uint64_t last_client_id) {
  memset(fs, 0, sizeof *fs);
  memset(&seen, 0, sizeof seen);
  fs->script = script;
  fs->last_client_id = last_client_id;
  fs->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fs->listen_fd >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(bind(fs->listen_fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fs->listen_fd, 4) == 0);
  REQUIRE(getsockname(fs->listen_fd, (struct sockaddr *)&a, &len) == 0);
  fs->port = ntohs(a.sin_port);
  REQUIRE(pthread_create(&fs->thread, NULL, fake_main, fs) == 0);
}

static void fake_join(fake_server *fs) {
  pthread_join(fs->thread, NULL);
  close(fs->listen_fd);
}

static int fake_done(void *ud) { return atomic_load(&((fake_server *)ud)->done); }

static void record_ack(const e2e_frame *f) {
  Hubu__V1__DeliverAck *a = hubu__v1__deliver_ack__unpack(NULL, f->len, f->body);
  CHECK(a != NULL);
  if (!a) return;
  for (size_t i = 0; i < a->n_cursors; i++) {
    int k = 0;
    while (k < seen.n_acks && strcmp(seen.ack_session[k], a->cursors[i]->session_id) != 0) k++;
    if (k == seen.n_acks && k < 8) snprintf(seen.ack_session[seen.n_acks++], 64, "%s", a->cursors[i]->session_id);
    if (k < 8) {
      CHECKF(a->cursors[i]->seq >= seen.ack_seq[k], "DELIVER_ACK went back from %llu to %llu",
             (unsigned long long)seen.ack_seq[k], (unsigned long long)a->cursors[i]->seq);
      seen.ack_seq[k] = a->cursors[i]->seq;
    }
  }
  hubu__v1__deliver_ack__free_unpacked(a, NULL);
}

static uint64_t acked(const char *session) {
  for (int k = 0; k < seen.n_acks; k++)
    if (!strcmp(seen.ack_session[k], session)) return seen.ack_seq[k];
  return 0;
}

/* Reads frames for up to timeout_ms until one of type want (0: none wanted,
 * just watch); DELIVER_ACKs are recorded, PULL/SYNC/SEND counted. 1 when found. */
static int next_frame(int fd, uint8_t want, int timeout_ms, e2e_frame *out) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = e2e_now_ms();
    if (now >= deadline) return 0;
    /* Wait for the first byte here: e2e_read_frame's own timeout could cut a
     * frame in half and lose the stream's framing. */
    struct pollfd pfd = {fd, POLLIN, 0};
    int ready = poll(&pfd, 1, (int)(deadline - now));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return 0;
    e2e_frame f;
    int r = e2e_read_frame(fd, 5000, &f);
    if (r != E2E_READ_OK) return 0;
    if (f.type == HUBU_FRAME_DELIVER_ACK) record_ack(&f);
    if (f.type == HUBU_FRAME_PULL) seen.pulls++;
    if (f.type == HUBU_FRAME_SYNC) seen.syncs++;
    if (f.type == HUBU_FRAME_SEND) seen.sends++;
    if (want && f.type == want) {
      *out = f;
      return 1;
    }
    e2e_frame_free(&f);
  }
}

static int wait_acked(int fd, const char *session, uint64_t seq, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  while (acked(session) < seq && e2e_now_ms() < deadline) next_frame(fd, 0, 50, NULL);
  return CHECKF(acked(session) >= seq, "%s acknowledged up to %llu, want %llu", session,
                (unsigned long long)acked(session), (unsigned long long)seq);
}

/* The next PULL, decoded (free with hubu__v1__pull_request__free_unpacked). */
static Hubu__V1__PullRequest *expect_pull(int fd, int timeout_ms) {
  e2e_frame f;
  if (!CHECKF(next_frame(fd, HUBU_FRAME_PULL, timeout_ms, &f), "no PULL within %d ms", timeout_ms)) return NULL;
  Hubu__V1__PullRequest *r = hubu__v1__pull_request__unpack(NULL, f.len, f.body);
  e2e_frame_free(&f);
  CHECK(r != NULL);
  return r;
}

typedef struct {
  uint64_t seq;
  const char *body;
} msg_spec;

static void fill_message(Hubu__V1__Message *m, const char *session, const msg_spec *spec) {
  hubu__v1__message__init(m);
  m->session_id = (char *)session;
  m->seq = spec->seq;
  m->msg_id = 1000 + spec->seq;
  m->sender = "alice";
  m->sender_device = "phone";
  m->body.data = (uint8_t *)spec->body;
  m->body.len = strlen(spec->body);
  m->content_type = "text/plain";
}

static void push(int fd, const char *session, uint64_t seq, const char *body) {
  msg_spec spec = {seq, body};
  Hubu__V1__Message m;
  fill_message(&m, session, &spec);
  Hubu__V1__Message *ptr = &m;
  Hubu__V1__Push p = HUBU__V1__PUSH__INIT;
  p.n_messages = 1;
  p.messages = &ptr;
  CHECK(e2e_send_msg(fd, HUBU_FRAME_PUSH, &p.base) == 0);
}

static void pull_result(int fd, const Hubu__V1__PullRequest *req, const msg_spec *msgs, size_t n, uint64_t max_seq,
                        int has_more) {
  Hubu__V1__Message m[8];
  Hubu__V1__Message *ptrs[8];
  REQUIRE(n <= 8);
  for (size_t i = 0; i < n; i++) {
    fill_message(&m[i], req->session_id, &msgs[i]);
    ptrs[i] = &m[i];
  }
  Hubu__V1__PullResult r = HUBU__V1__PULL_RESULT__INIT;
  r.request_id = req->request_id;
  r.session_id = req->session_id;
  r.n_messages = n;
  r.messages = ptrs;
  r.max_seq = max_seq;
  r.has_more = has_more;
  CHECK(e2e_send_msg(fd, HUBU_FRAME_PULL_RESULT, &r.base) == 0);
}

static void pull_hint(int fd, const char *session, uint64_t max_seq) {
  Hubu__V1__PullHint h = HUBU__V1__PULL_HINT__INIT;
  h.session_id = (char *)session;
  h.max_seq = max_seq;
  CHECK(e2e_send_msg(fd, HUBU_FRAME_PULL_HINT, &h.base) == 0);
}

#define GAP_WAIT_MS 300

/* Runs the client against script; returns with the script done and the client closed. */
static void run_scripted(void (*script)(int fd), uint64_t last_client_id, const peer_opts *po, peer *p,
                         void (*before_start)(peer *p, uv_loop_t *loop)) {
  fake_server fs;
  fake_start(&fs, script, last_client_id);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  peer_open(p, &loop, fs.port, "bob", "laptop", po);
  if (before_start) before_start(p, &loop);
  CHECK(hubu_client_start(p->c) == 0);
  CHECK(e2e_uv_run_until(&loop, fake_done, &fs, 15000));
  settle(&loop, 50);
  fake_join(&fs);
  peer_close(p);
  finish_loop(&loop);
}

static void check_received(const peer *p, const char *session, const char *const *bodies, const uint64_t *seqs,
                           size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < p->n_received; i++) {
    if (strcmp(p->received[i].session, session) != 0) continue;
    if (CHECKF(k < n, "%s: unexpected extra message seq %llu", session, (unsigned long long)p->received[i].seq)) {
      CHECKF(p->received[i].seq == seqs[k] && !strcmp(p->received[i].body, bodies[k]),
             "%s #%zu: seq %llu '%s', want seq %llu '%s'", session, k, (unsigned long long)p->received[i].seq,
             p->received[i].body, (unsigned long long)seqs[k], bodies[k]);
    }
    k++;
  }
  CHECKF(k == n, "%s: %zu messages received, want %zu", session, k, n);
}

static void script_gap_then_pull(int fd) {
  push(fd, "d:alice:bob", 1, "a");
  push(fd, "d:alice:bob", 3, "c");
  uint64_t t0 = e2e_now_ms();
  Hubu__V1__PullRequest *req = expect_pull(fd, 3000);
  if (!req) return;
  uint64_t waited = e2e_now_ms() - t0;
  CHECKF(waited >= GAP_WAIT_MS - 50, "PULL after %llu ms; the gap wait is %d ms", (unsigned long long)waited,
         GAP_WAIT_MS);
  CHECK(!strcmp(req->session_id, "d:alice:bob"));
  CHECK_EQ(req->after_seq, 1);
  const msg_spec msgs[] = {{2, "b"}, {3, "c"}};
  pull_result(fd, req, msgs, 2, 3, 0);
  hubu__v1__pull_request__free_unpacked(req, NULL);
  push(fd, "d:alice:bob", 3, "c"); /* a retransmission: dropped */
  push(fd, "d:alice:bob", 4, "d");
  wait_acked(fd, "d:alice:bob", 4, 3000);
  CHECK_EQ(seen.pulls, 1);
}

static void held_push_waits_for_the_gap_then_pull_fills_it(void) {
  peer p;
  peer_opts po = {.no_reconnect = 1, .no_auto_sync = 1, .gap_wait_ms = GAP_WAIT_MS};
  run_scripted(script_gap_then_pull, 0, &po, &p, NULL);
  const char *bodies[] = {"a", "b", "c", "d"};
  const uint64_t seqs[] = {1, 2, 3, 4};
  check_received(&p, "d:alice:bob", bodies, seqs, 4);
  peer_free(&p);
}

static void script_late_push(int fd) {
  push(fd, "d:alice:bob", 1, "a");
  push(fd, "d:alice:bob", 3, "c");
  e2e_sleep_ms(GAP_WAIT_MS / 3);
  push(fd, "d:alice:bob", 2, "b");
  next_frame(fd, 0, GAP_WAIT_MS + 300, NULL); /* watch: no PULL may come */
  CHECKF(seen.pulls == 0, "%d PULLs for a gap that filled itself", seen.pulls);
  wait_acked(fd, "d:alice:bob", 3, 3000);
}

static void late_push_fills_the_gap_without_a_pull(void) {
  peer p;
  peer_opts po = {.no_reconnect = 1, .no_auto_sync = 1, .gap_wait_ms = GAP_WAIT_MS};
  run_scripted(script_late_push, 0, &po, &p, NULL);
  const char *bodies[] = {"a", "b", "c"};
  const uint64_t seqs[] = {1, 2, 3};
  check_received(&p, "d:alice:bob", bodies, seqs, 3);
  peer_free(&p);
}

static void script_holes(int fd) {
  push(fd, "d:alice:bob", 1, "a");
  push(fd, "d:alice:bob", 4, "d");
  Hubu__V1__PullRequest *req = expect_pull(fd, 3000);
  if (!req) return;
  CHECK_EQ(req->after_seq, 1);
  const msg_spec msgs[] = {{4, "d"}};
  pull_result(fd, req, msgs, 1, 6, 0); /* 2, 3, 5 and 6 do not exist */
  hubu__v1__pull_request__free_unpacked(req, NULL);
  wait_acked(fd, "d:alice:bob", 6, 3000);
  push(fd, "d:alice:bob", 7, "g"); /* the cursor's successor: delivered at once */
  wait_acked(fd, "d:alice:bob", 7, 3000);
  CHECK_EQ(seen.pulls, 1);
}

static void pull_result_proves_holes_and_the_cursor_jumps_them(void) {
  peer p;
  peer_opts po = {.no_reconnect = 1, .no_auto_sync = 1, .gap_wait_ms = GAP_WAIT_MS};
  run_scripted(script_holes, 0, &po, &p, NULL);
  const char *bodies[] = {"a", "d", "g"};
  const uint64_t seqs[] = {1, 4, 7};
  check_received(&p, "d:alice:bob", bodies, seqs, 3);
  peer_free(&p);
}

static void script_sync(int fd) {
  e2e_frame f;
  if (!CHECK(next_frame(fd, HUBU_FRAME_SYNC, 3000, &f))) return;
  Hubu__V1__SyncRequest *req = hubu__v1__sync_request__unpack(NULL, f.len, f.body);
  e2e_frame_free(&f);
  REQUIRE(req != NULL);
  CHECK_EQ(req->n_known, 1);
  if (req->n_known == 1) {
    CHECK(!strcmp(req->known[0]->session_id, "g:team"));
    CHECK_EQ(req->known[0]->seq, 10);
  }
  Hubu__V1__SessionState team = HUBU__V1__SESSION_STATE__INIT, direct = HUBU__V1__SESSION_STATE__INIT;
  team.session_id = "g:team";
  team.max_seq = 12;
  team.kind = "group";
  direct.session_id = "d:alice:bob";
  direct.max_seq = 2;
  direct.kind = "direct";
  Hubu__V1__SessionState *states[] = {&team, &direct};
  Hubu__V1__SyncResult r = HUBU__V1__SYNC_RESULT__INIT;
  r.request_id = req->request_id;
  r.n_sessions = 2;
  r.sessions = states;
  CHECK(e2e_send_msg(fd, HUBU_FRAME_SYNC_RESULT, &r.base) == 0);
  hubu__v1__sync_request__free_unpacked(req, NULL);

  int team_done = 0, direct_pulls = 0;
  for (int i = 0; i < 3; i++) { /* g:team once; d:alice:bob twice (has_more) */
    Hubu__V1__PullRequest *p = expect_pull(fd, 3000);
    if (!p) return;
    if (!strcmp(p->session_id, "g:team")) {
      CHECK_EQ(p->after_seq, 10);
      const msg_spec msgs[] = {{11, "k"}, {12, "l"}};
      pull_result(fd, p, msgs, 2, 12, 0);
      team_done++;
    } else if (!strcmp(p->session_id, "d:alice:bob")) {
      CHECK_EQ(p->after_seq, (uint64_t)direct_pulls); /* an unknown session starts at 0 */
      const msg_spec first[] = {{1, "a"}}, second[] = {{2, "b"}};
      pull_result(fd, p, direct_pulls ? second : first, 1, 2, direct_pulls == 0);
      direct_pulls++;
    } else {
      CHECKF(0, "PULL of %s", p->session_id);
    }
    hubu__v1__pull_request__free_unpacked(p, NULL);
  }
  CHECK_EQ(team_done, 1);
  CHECK_EQ(direct_pulls, 2);
  wait_acked(fd, "g:team", 12, 3000);
  wait_acked(fd, "d:alice:bob", 2, 3000);
  CHECK_EQ(seen.syncs, 1);
}

static void restore_team_cursor(peer *p, uv_loop_t *loop) {
  (void)loop;
  CHECK(hubu_client_set_cursor(p->c, "g:team", 10) == 0);
}

static void sync_after_hello_reports_cursors_and_pulls_what_is_behind(void) {
  peer p;
  peer_opts po = {.no_reconnect = 1, .gap_wait_ms = GAP_WAIT_MS};
  run_scripted(script_sync, 0, &po, &p, restore_team_cursor);
  const char *team_bodies[] = {"k", "l"}, *direct_bodies[] = {"a", "b"};
  const uint64_t team_seqs[] = {11, 12}, direct_seqs[] = {1, 2};
  check_received(&p, "g:team", team_bodies, team_seqs, 2);
  check_received(&p, "d:alice:bob", direct_bodies, direct_seqs, 2);
  peer_free(&p);
}

static void script_hints(int fd) {
  pull_hint(fd, "g:big", 3);
  Hubu__V1__PullRequest *req = expect_pull(fd, 3000);
  if (!req) return;
  CHECK_EQ(req->after_seq, 0);
  pull_hint(fd, "g:big", 5); /* while the first PULL is unanswered: no second PULL yet */
  next_frame(fd, 0, 200, NULL);
  CHECK_EQ(seen.pulls, 1);
  const msg_spec first[] = {{1, "a"}, {2, "b"}, {3, "c"}};
  pull_result(fd, req, first, 3, 3, 0);
  hubu__v1__pull_request__free_unpacked(req, NULL);
  req = expect_pull(fd, 3000); /* the hint's 5 is still above the cursor */
  if (!req) return;
  CHECK_EQ(req->after_seq, 3);
  const msg_spec second[] = {{4, "d"}, {5, "e"}};
  pull_result(fd, req, second, 2, 5, 0);
  hubu__v1__pull_request__free_unpacked(req, NULL);
  wait_acked(fd, "g:big", 5, 3000);
  CHECK_EQ(seen.pulls, 2);
}

static void pull_hints_are_pulled_one_pull_per_session_at_a_time(void) {
  peer p;
  peer_opts po = {.no_reconnect = 1, .no_auto_sync = 1, .gap_wait_ms = GAP_WAIT_MS};
  run_scripted(script_hints, 0, &po, &p, NULL);
  const char *bodies[] = {"a", "b", "c", "d", "e"};
  const uint64_t seqs[] = {1, 2, 3, 4, 5};
  check_received(&p, "g:big", bodies, seqs, 5);
  peer_free(&p);
}

static Hubu__V1__Send *expect_send(int fd, int timeout_ms) {
  e2e_frame f;
  if (!CHECKF(next_frame(fd, HUBU_FRAME_SEND, timeout_ms, &f), "no SEND within %d ms", timeout_ms)) return NULL;
  Hubu__V1__Send *m = hubu__v1__send__unpack(NULL, f.len, f.body);
  e2e_frame_free(&f);
  CHECK(m != NULL);
  return m;
}

static void send_ack(int fd, uint64_t client_id, Hubu__V1__Code code, uint64_t seq) {
  Hubu__V1__SendAck a = HUBU__V1__SEND_ACK__INIT;
  a.client_id = client_id;
  a.code = code;
  a.session_id = code == HUBU__V1__CODE__OK ? "d:alice:bob" : "";
  a.seq = seq;
  a.msg_id = seq ? 1000 + seq : 0;
  CHECK(e2e_send_msg(fd, HUBU_FRAME_SEND_ACK, &a.base) == 0);
}

#define SEND_TIMEOUT_MS 400

static void script_send_retries(int fd) {
  /* Queued before HELLO_OK as client_id 1, but this device already used up to 41. */
  Hubu__V1__Send *m = expect_send(fd, 3000);
  if (!m) return;
  CHECK_EQ(m->client_id, 42);
  CHECK(m->body.len == 5 && !memcmp(m->body.data, "first", 5));
  uint64_t t0 = e2e_now_ms();
  send_ack(fd, 42, HUBU__V1__CODE__UNAVAILABLE, 0); /* nothing assigned: the same SEND again, later */
  hubu__v1__send__free_unpacked(m, NULL);
  m = expect_send(fd, 3000);
  if (!m) return;
  CHECK_EQ(m->client_id, 42);
  CHECKF(e2e_now_ms() - t0 >= SEND_TIMEOUT_MS - 50, "retried after %llu ms", (unsigned long long)(e2e_now_ms() - t0));
  send_ack(fd, 42, HUBU__V1__CODE__STALE, 0); /* never stored: the same content under a new client_id */
  hubu__v1__send__free_unpacked(m, NULL);
  m = expect_send(fd, 3000);
  if (!m) return;
  CHECK_EQ(m->client_id, 43);
  CHECK(m->body.len == 5 && !memcmp(m->body.data, "first", 5));
  send_ack(fd, 43, HUBU__V1__CODE__OK, 1);
  hubu__v1__send__free_unpacked(m, NULL);

  /* Unanswered: resent under the same client_id after send_timeout_ms. */
  m = expect_send(fd, 3000);
  if (!m) return;
  uint64_t id = m->client_id;
  CHECK_EQ(id, 44);
  t0 = e2e_now_ms();
  hubu__v1__send__free_unpacked(m, NULL);
  m = expect_send(fd, 3000);
  if (!m) return;
  CHECK_EQ(m->client_id, id);
  CHECKF(e2e_now_ms() - t0 >= SEND_TIMEOUT_MS - 50, "resent after %llu ms", (unsigned long long)(e2e_now_ms() - t0));
  send_ack(fd, id, HUBU__V1__CODE__OK, 2);
  send_ack(fd, id, HUBU__V1__CODE__OK, 2); /* the answer to the first try, late: ignored */
  hubu__v1__send__free_unpacked(m, NULL);
  next_frame(fd, 0, 200, NULL);
}

typedef struct {
  uv_timer_t timer;
  peer *p;
} later_send;

static void on_later(uv_timer_t *t) {
  later_send *ls = t->data;
  if (ls->p->n_stored == 1 && ls->p->c) CHECK_EQ(send_text(ls->p, "d:alice:bob", "second"), 44);
  if (ls->p->n_stored >= 1 || !ls->p->c) uv_close((uv_handle_t *)t, NULL);
}

static later_send later;

static void queue_first(peer *p, uv_loop_t *loop) {
  CHECK_EQ(send_text(p, "d:alice:bob", "first"), 1);
  uv_timer_init(loop, &later.timer); /* sends "second" once "first" is stored */
  later.timer.data = &later;
  later.p = p;
  uv_timer_start(&later.timer, on_later, 10, 10);
}

static void unavailable_is_retried_and_stale_is_resent_under_a_new_client_id(void) {
  peer p;
  peer_opts po = {.no_reconnect = 1, .no_auto_sync = 1, .send_timeout_ms = SEND_TIMEOUT_MS};
  run_scripted(script_send_retries, 41, &po, &p, queue_first);
  CHECK_EQ(p.n_failed, 0);
  REQUIRE(p.n_stored == 2);
  CHECK_EQ(p.stored[0].client_id, 1); /* as the application was told */
  CHECK_EQ(p.stored[0].seq, 1);
  CHECK_EQ(p.stored[1].client_id, 44);
  CHECK_EQ(p.stored[1].seq, 2);
  peer_free(&p);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(message_sent_by_alice_is_stored_and_received_by_bob_exactly_once),
      E2E_CASE(thousand_pipelined_sends_arrive_in_order_without_duplicates),
      E2E_CASE(every_message_is_delivered_once_across_a_server_restart),
      E2E_CASE(every_message_is_delivered_once_across_a_server_kill),
      E2E_CASE(outbox_survives_a_client_restart_while_the_server_is_down),
      E2E_CASE(outbox_with_a_torn_tail_keeps_every_whole_record),
      E2E_CASE(outbox_is_compacted_once_everything_is_acknowledged),
      E2E_CASE(offline_receiver_gets_2000_messages_in_order_after_connecting),
      E2E_CASE(gap_after_pull_hint_is_filled_by_pull),
      E2E_CASE(send_to_a_direct_session_of_other_users_fails_forbidden),
      E2E_CASE(stale_resend_goes_out_under_a_new_client_id),
      E2E_CASE(message_queued_before_connecting_takes_an_id_above_the_servers_mark),
      E2E_CASE(held_push_waits_for_the_gap_then_pull_fills_it),
      E2E_CASE(late_push_fills_the_gap_without_a_pull),
      E2E_CASE(pull_result_proves_holes_and_the_cursor_jumps_them),
      E2E_CASE(sync_after_hello_reports_cursors_and_pulls_what_is_behind),
      E2E_CASE(pull_hints_are_pulled_one_pull_per_session_at_a_time),
      E2E_CASE(unavailable_is_retried_and_stale_is_resent_under_a_new_client_id),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

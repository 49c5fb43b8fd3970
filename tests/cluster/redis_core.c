/* redis_core.c — the seq allocator over Redis (runtime/cluster/redis_seq.c)
 * behind a real core (runtime/core, with a SQLite store: tests/core's
 * fixture) and a real private redis-server: SENDs of three devices to one
 * session wait for Redis' answers in core's seq queue and are stored and
 * acknowledged with seqs in client_id order per device; after FLUSHALL the
 * session's seqs jump and a PULL shows the hole empty; while Redis is down
 * a SEND is answered UNAVAILABLE with retry_after_ms, and its retry after
 * the restart is stored above everything before. The lease is the TEST
 * DOUBLE (an in-memory counter). */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "lease_counter_double.h"
#include "redis_fixture.h"
#include "redis_seq.h"

#define DIRECT "d:alice:bob"

typedef struct {
  test_peer *tp;
  size_t n;
} acks_arg;

static int has_acks(void *arg) {
  acks_arg *a = arg;
  return tp_count(a->tp, HUBU_FRAME_SEND_ACK) >= a->n;
}

/* The (client_id, seq, code) of every SEND_ACK in tp's output. */
static size_t acks(test_peer *tp, uint64_t *client_ids, uint64_t *seqs, int64_t *codes, uint32_t *retry, size_t max) {
  size_t n = 0;
  Hubu__V1__SendAck *a;
  for (size_t i = 0; (a = tp_send_ack(tp, i)); i++) {
    if (n < max) {
      client_ids[n] = a->client_id;
      seqs[n] = a->seq;
      codes[n] = a->code;
      if (retry) retry[n] = a->retry_after_ms;
      n++;
    }
    hubu__v1__send_ack__free_unpacked(a, NULL);
  }
  return n;
}

static void flushed_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)reply;
  *(int *)ud = st == HUBU_REDIS_OK ? 1 : -1;
}

static int flush_done(void *arg) { return *(int *)arg != 0; }

/* FLUSHALL through r; 1 when it was done. */
static int rfx_flushall(uv_loop_t *loop, hubu_redis *r) {
  int done = 0;
  const char *argv[1] = {"FLUSHALL"};
  if (hubu_redis_command(r, 0, flushed_cb, &done, 1, argv, NULL) != 0) return 0;
  rfx_run_until(loop, flush_done, &done, 3000);
  return done == 1;
}

/* Every SEND_ACK of tp OK, seqs rising with client_id; the highest seq. */
static uint64_t check_in_order(test_peer *tp, size_t want) {
  uint64_t ids[64], seqs[64];
  int64_t codes[64];
  size_t n = acks(tp, ids, seqs, codes, NULL, 64);
  CHECK_EQ_U64(n, want);
  uint64_t top = 0;
  for (size_t i = 0; i < n; i++) {
    CHECK_EQ_U64(codes[i], HUBU__V1__CODE__OK);
    for (size_t j = 0; j < n; j++)
      if (ids[j] < ids[i]) CHECK(seqs[j] < seqs[i]);
    if (seqs[i] > top) top = seqs[i];
  }
  return top;
}

static void core_sends_get_redis_seqs_in_order_jump_after_flushall_and_wait_out_a_restart(void) {
  core_fixture fx;
  test_peer phone, laptop, bob;
  if (fx_open(&fx, NULL) != 0) return;
  test_lease_counter_double lease;
  test_lease_counter_init(&lease, &fx.loop);
  hubu_redis_config cfg = rfx_config(2000, 3000);
  cfg.backoff_max_ms = 400;
  hubu_redis *redis = hubu_redis_new(&fx.loop, &cfg, NULL, NULL);
  hubu_redis_seq_config sc = {.block = 100};
  hubu_redis_seq *alloc = hubu_redis_seq_new(redis, &lease.base, &sc);
  CHECK(rfx_run_until(&fx.loop, rfx_is_up, redis, 5000));
  fx.core.seq = hubu_redis_seq_allocator(alloc);
  tp_connect(&fx, &phone, "alice", "phone");
  tp_connect(&fx, &laptop, "alice", "laptop");
  tp_connect(&fx, &bob, "bob", "phone");

  /* Pipelined from three devices: each waits its turn in the session's seq
   * queue, one Redis round trip at a time. */
  char body[32];
  for (uint64_t id = 1; id <= 20; id++) {
    snprintf(body, sizeof body, "phone %" PRIu64, id);
    tp_send(&phone, id, DIRECT, body);
    if (id <= 10) {
      snprintf(body, sizeof body, "laptop %" PRIu64, id);
      tp_send(&laptop, id, DIRECT, body);
      snprintf(body, sizeof body, "bob %" PRIu64, id);
      tp_send(&bob, id, DIRECT, body);
    }
  }
  acks_arg want_phone = {&phone, 20}, want_laptop = {&laptop, 10}, want_bob = {&bob, 10};
  CHECK(rfx_run_until(&fx.loop, has_acks, &want_phone, 10000));
  CHECK(rfx_run_until(&fx.loop, has_acks, &want_laptop, 10000));
  CHECK(rfx_run_until(&fx.loop, has_acks, &want_bob, 10000));
  fx_settle(&fx);
  uint64_t top = check_in_order(&phone, 20), top_laptop = check_in_order(&laptop, 10),
           top_bob = check_in_order(&bob, 10);
  if (top_laptop > top) top = top_laptop;
  if (top_bob > top) top = top_bob;
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages WHERE session_id = %Q", DIRECT), 40);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(DISTINCT seq) FROM messages WHERE session_id = %Q", DIRECT), 40);
  CHECK_EQ_U64(top, 40); /* one block: no jump yet */

  /* The cache is gone: the next seq is a new block's first, above 40, and
   * the seqs between are a hole that a PULL shows empty. */
  tp_discard(&phone);
  tp_discard(&bob);
  CHECK(rfx_flushall(&fx.loop, redis));
  tp_send(&phone, 21, DIRECT, "after the flush");
  acks_arg one = {&phone, 1};
  CHECK(rfx_run_until(&fx.loop, has_acks, &one, 5000));
  fx_settle(&fx);
  uint64_t ids[4], seqs[4];
  int64_t codes[4];
  uint32_t retry[4];
  if (CHECK_EQ_U64(acks(&phone, ids, seqs, codes, NULL, 4), 1)) {
    CHECK_EQ_U64(codes[0], HUBU__V1__CODE__OK);
    CHECK_EQ_U64(seqs[0], 101); /* the next block's first */
  }
  tp_pull(&bob, 1, DIRECT, 40, 0);
  fx_settle(&fx);
  Hubu__V1__PullResult *pr = tp_pull_result(&bob, 0);
  if (CHECK(pr != NULL)) {
    CHECK_EQ_U64(pr->code, HUBU__V1__CODE__OK);
    if (CHECK_EQ_U64(pr->n_messages, 1)) CHECK_EQ_U64(pr->messages[0]->seq, 101);
    CHECK_EQ_U64(pr->max_seq, 101);
    hubu__v1__pull_result__free_unpacked(pr, NULL);
  }

  /* Redis dies: a SEND is answered UNAVAILABLE (retry after 1 s) and uses
   * nothing up; its retry after the restart is stored above 101. */
  tp_discard(&phone);
  rfx_script("kill9");
  CHECK(rfx_run_until(&fx.loop, rfx_is_down, redis, 3000));
  tp_send(&phone, 22, DIRECT, "while down");
  CHECK(rfx_run_until(&fx.loop, has_acks, &one, 3000));
  fx_settle(&fx);
  if (CHECK_EQ_U64(acks(&phone, ids, seqs, codes, retry, 4), 1)) {
    CHECK_EQ_U64(codes[0], HUBU__V1__CODE__UNAVAILABLE);
    CHECK(retry[0] > 0);
  }
  rfx_script("restart");
  CHECK(rfx_run_until(&fx.loop, rfx_is_up, redis, 8000));
  tp_discard(&phone);
  tp_send(&phone, 22, DIRECT, "while down");
  CHECK(rfx_run_until(&fx.loop, has_acks, &one, 5000));
  fx_settle(&fx);
  if (CHECK_EQ_U64(acks(&phone, ids, seqs, codes, NULL, 4), 1)) {
    CHECK_EQ_U64(codes[0], HUBU__V1__CODE__OK);
    CHECK(seqs[0] > 101);
  }
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages WHERE session_id = %Q", DIRECT), 42);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages WHERE client_id = 22"), 1);

  tp_close(&phone);
  tp_close(&laptop);
  tp_close(&bob);
  fx.core.seq = NULL;
  CHECK_EQ_U64(hubu_redis_seq_pending(alloc), 0);
  hubu_redis_seq_free(alloc);
  hubu_redis_close(redis);
  fx_close(&fx);
}

int main(int argc, char **argv) {
  static const core_case cases[] = {
      CORE_CASE(core_sends_get_redis_seqs_in_order_jump_after_flushall_and_wait_out_a_restart),
  };
  signal(SIGPIPE, SIG_IGN);
  return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

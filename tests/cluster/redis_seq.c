/* redis_seq.c — the seq allocator of cluster mode (runtime/cluster/seq.lua
 * and redis_seq.c) against a real private redis-server, two "nodes" in one
 * process (two clients, two allocators) sharing the lease TEST DOUBLE (an
 * in-memory counter standing in for the store's durable lease): seqs of a
 * session strictly increase on each node and never repeat across nodes
 * under concurrent callers; after FLUSHALL, after a restart that comes back
 * empty, and with a cached block of another generation, the next seq jumps
 * above every seq handed out before; while Redis is down the allocator says
 * UNAVAILABLE, and afterwards it goes on above everything before. */
#include "redis_seq.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "lease_counter_double.h"
#include "redis_fixture.h"
#include "session.h"
#include "store.h"
#include "store_lease.h"

#define N_SESS 3
#define MAX_SEQS 2048

typedef struct node {
  hubu_redis *redis;
  hubu_redis_seq *seq;
  hubu_session sess[N_SESS];
  char ids[N_SESS][32];
  uint64_t got[N_SESS][MAX_SEQS];
  int n_got[N_SESS];
  int want; /* seqs to take per session */
  int asking[N_SESS];
  int refused;      /* answers without a seq */
  int unavailable;  /* next() answered UNAVAILABLE at once */
  int order_errors; /* a seq not above the node's last one */
} node;

/* The answer sink: core is the node (the allocator hands back what
 * sess->core_ref held). Asks again at once, as core's seq queue does. */
static void ask(node *n, int i);

static void test_answer(hubu_core *core, const char *session_id, int ok, uint64_t seq) {
  node *n = (node *)core;
  int i = 0;
  while (i < N_SESS && strcmp(n->ids[i], session_id) != 0) i++;
  if (!CHECK(i < N_SESS) || !CHECK(n->asking[i])) return;
  n->asking[i] = 0;
  if (!ok) {
    n->refused++;
    return;
  }
  if (seq <= n->sess[i].next_seq) n->order_errors++;
  n->sess[i].next_seq = seq;
  n->sess[i].committed_seq = seq;
  if (n->n_got[i] < MAX_SEQS) n->got[i][n->n_got[i]++] = seq;
  if (n->n_got[i] < n->want) ask(n, i);
}

static void ask(node *n, int i) {
  uint64_t seq = 0;
  hubu_seq_allocator *a = hubu_redis_seq_allocator(n->seq);
  hubu_seq_result r = a->ops->next(a, &n->sess[i], &seq);
  if (r == HUBU_SEQ_LATER)
    n->asking[i] = 1;
  else if (r == HUBU_SEQ_UNAVAILABLE)
    n->unavailable++;
  else
    CHECK(0); /* never NOW */
}

static void node_init(node *n, uv_loop_t *loop, hubu_seq_lease *lease, uint32_t block) {
  memset(n, 0, sizeof *n);
  hubu_redis_config cfg = rfx_config(2000, 3000);
  cfg.backoff_max_ms = 400;
  n->redis = hubu_redis_new(loop, &cfg, NULL, NULL);
  hubu_redis_seq_config sc = {.block = block, .answer = test_answer};
  n->seq = hubu_redis_seq_new(n->redis, lease, &sc);
  for (int i = 0; i < N_SESS; i++) {
    snprintf(n->ids[i], sizeof n->ids[i], "g:seqtest%d", i);
    n->sess[i].id = n->ids[i];
    n->sess[i].core_ref = (hubu_core *)n;
  }
}

static void node_free(node *n) {
  CHECK_EQ_U64(hubu_redis_seq_pending(n->seq), 0);
  hubu_redis_seq_free(n->seq);
  hubu_redis_close(n->redis);
}

static int node_idle(void *arg) {
  node *n = arg;
  for (int i = 0; i < N_SESS; i++)
    if (n->asking[i]) return 0;
  return 1;
}

typedef struct {
  node *a, *b;
} pair;

static int pair_idle(void *arg) {
  pair *p = arg;
  return node_idle(p->a) && node_idle(p->b);
}

static int pair_up(void *arg) {
  pair *p = arg;
  return hubu_redis_is_up(p->a->redis) && hubu_redis_is_up(p->b->redis);
}

/* A loop, the lease double and two nodes on it with blocks of block seqs,
 * both connected (checked). */
static pair two_nodes_up(uv_loop_t *loop, test_lease_counter_double *lease, node *a, node *b, uint32_t block) {
  uv_loop_init(loop);
  test_lease_counter_init(lease, loop);
  node_init(a, loop, &lease->base, block);
  node_init(b, loop, &lease->base, block);
  pair p = {a, b};
  CHECK(rfx_run_until(loop, pair_up, &p, 5000));
  return p;
}

static int pair_down(void *arg) {
  pair *p = arg;
  return !hubu_redis_is_up(p->a->redis) && !hubu_redis_is_up(p->b->redis);
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

/* The seqs of session i on both nodes: none twice. Returns the highest. */
static uint64_t check_no_repeat(node *a, node *b, int i) {
  size_t n = (size_t)a->n_got[i] + (size_t)(b ? b->n_got[i] : 0);
  uint64_t *all = malloc(n * sizeof *all + 1);
  memcpy(all, a->got[i], (size_t)a->n_got[i] * sizeof *all);
  if (b) memcpy(all + a->n_got[i], b->got[i], (size_t)b->n_got[i] * sizeof *all);
  qsort(all, n, sizeof *all, cmp_u64);
  size_t dups = 0;
  for (size_t k = 1; k < n; k++)
    if (all[k] == all[k - 1]) dups++;
  CHECK_EQ_U64(dups, 0);
  uint64_t top = n ? all[n - 1] : 0;
  free(all);
  return top;
}

/* Runs a command on n's client and waits for its answer. */
typedef struct {
  int done;
  hubu_redis_status st;
  long long integer;
  char str[4096];
} cmd_wait;

static void cmd_wait_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  cmd_wait *w = ud;
  w->done = 1;
  w->st = st;
  if (reply && reply->type == REDIS_REPLY_INTEGER) w->integer = reply->integer;
  if (reply && reply->str) snprintf(w->str, sizeof w->str, "%s", reply->str);
}

static int cmd_done(void *arg) { return ((cmd_wait *)arg)->done; }

/* Runs a command with its own timeout; its integer answer in *integer. */
static hubu_redis_status run_cmd_within(uv_loop_t *loop, hubu_redis *r, uint32_t timeout_ms, int argc,
                                        const char **argv, long long *integer) {
  cmd_wait w = {0};
  if (hubu_redis_command(r, timeout_ms, cmd_wait_cb, &w, argc, argv, NULL) != 0) return HUBU_REDIS_DOWN;
  rfx_run_until(loop, cmd_done, &w, timeout_ms + 2000);
  *integer = w.integer;
  return w.done ? w.st : HUBU_REDIS_TIMEOUT;
}

/* Until r's server says its replication link is up (a replica in sync); 1 if so. */
static int wait_replica_in_sync(uv_loop_t *loop, hubu_redis *r, int seconds) {
  static cmd_wait w;
  const char *info[2] = {"INFO", "replication"};
  for (int i = 0; i < seconds * 10; i++) {
    memset(&w, 0, sizeof w);
    if (hubu_redis_command(r, 0, cmd_wait_cb, &w, 2, info, NULL) != 0) return 0;
    rfx_run_until(loop, cmd_done, &w, 3000);
    if (w.done && strstr(w.str, "master_link_status:up")) return 1;
    rfx_run_for(loop, 100);
  }
  fprintf(stderr, "replica not in sync after %d s:\n%s\n", seconds, w.str);
  return 0;
}

static hubu_redis_status run_cmd(uv_loop_t *loop, hubu_redis *r, int argc, const char **argv) {
  cmd_wait w = {0};
  if (hubu_redis_command(r, 5000, cmd_wait_cb, &w, argc, argv, NULL) != 0) {
    hubu_redis_health h;
    hubu_redis_get_health(r, &h);
    fprintf(stderr, "%s: not sent (up %d, last error \"%s\")\n", argv[0], h.up, h.last_error);
    return HUBU_REDIS_DOWN;
  }
  rfx_run_until(loop, cmd_done, &w, 7000);
  if (!w.done || w.st != HUBU_REDIS_OK)
    fprintf(stderr, "%s: %s %s\n", argv[0], w.done ? hubu_redis_status_name(w.st) : "no answer", w.str);
  return w.done ? w.st : HUBU_REDIS_TIMEOUT;
}

/* Two nodes ask for the same three sessions' seqs at once, each waiting for
 * its previous answer (as core does per session); small blocks make them
 * lease often and race to install blocks. */
static void seqs_strictly_increase_and_never_repeat_across_two_nodes(void) {
  uv_loop_t loop;
  test_lease_counter_double lease;
  static node a, b;
  pair p = two_nodes_up(&loop, &lease, &a, &b, 7);
  a.want = b.want = 400;
  for (int i = 0; i < N_SESS; i++) {
    ask(&a, i);
    ask(&b, i);
  }
  CHECK(rfx_run_until(&loop, pair_idle, &p, 30000));
  for (int i = 0; i < N_SESS; i++) {
    CHECK_EQ_U64(a.n_got[i], 400);
    CHECK_EQ_U64(b.n_got[i], 400);
    uint64_t top = check_no_repeat(&a, &b, i);
    CHECK(top <= lease.hwm); /* every seq came from a leased block */
  }
  CHECK_EQ_U64(a.order_errors + b.order_errors, 0);
  CHECK_EQ_U64(a.refused + b.refused + a.unavailable + b.unavailable, 0);
  hubu_redis_seq_stats st;
  hubu_redis_seq_get_stats(a.seq, &st);
  CHECK_EQ_U64(st.allocated, 3 * 400);
  CHECK(st.leases >= 1);
  CHECK_EQ_U64(st.generation, 1);
  /* 2,400 seqs from blocks of 7: at least 343 leases between the two. */
  CHECK(lease.leases >= 2400 / 7);
  node_free(&a);
  node_free(&b);
  rfx_loop_close(&loop);
}

/* The cache is lost three ways; each time the next seq of every session is
 * above every seq handed out before, and none repeats. */
/* HGET key field on r: the answer as text ("" when none). */
static void hget(uv_loop_t *loop, hubu_redis *r, const char *key, const char *field, char *out, size_t size) {
  cmd_wait w = {0};
  const char *argv[3] = {"HGET", key, field};
  out[0] = '\0';
  if (hubu_redis_command(r, 2000, cmd_wait_cb, &w, 3, argv, NULL) != 0) return;
  rfx_run_until(loop, cmd_done, &w, 4000);
  if (w.done && w.st == HUBU_REDIS_OK && size) {
    size_t n = strnlen(w.str, size - 1);
    memcpy(out, w.str, n);
    out[n] = '\0';
  }
}

/* seq.lua's answer: {1, seq} or {0, REASON}. */
typedef struct {
  int done, ok;
  long long seq;
  char reason[32];
} script_wait;

static void script_wait_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  script_wait *w = ud;
  w->done = 1;
  if (st != HUBU_REDIS_OK || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) return;
  w->ok = (int)reply->element[0]->integer;
  if (reply->element[1]->type == REDIS_REPLY_INTEGER) w->seq = reply->element[1]->integer;
  if (reply->element[1]->str) snprintf(w->reason, sizeof w->reason, "%s", reply->element[1]->str);
}

static int script_done_p(void *arg) { return ((script_wait *)arg)->done; }

/* Calls seq.lua on r as a node of generation gen would, installing [lo, hi]. */
static script_wait install(uv_loop_t *loop, hubu_redis *r, const char *key, const char *gen, uint64_t lo, uint64_t hi) {
  script_wait w = {0};
  char los[24], his[24];
  snprintf(los, sizeof los, "%" PRIu64, lo);
  snprintf(his, sizeof his, "%" PRIu64, hi);
  char *src = malloc(hubu_seq_lua_len + 1);
  if (!CHECK(src != NULL)) return w;
  memcpy(src, hubu_seq_lua, hubu_seq_lua_len);
  src[hubu_seq_lua_len] = '\0';
  const char *argv[9] = {"EVAL", src, "1", key, gen, "0", los, his, "0"};
  if (CHECK(hubu_redis_command(r, 2000, script_wait_cb, &w, 9, argv, NULL) == 0))
    rfx_run_until(loop, script_done_p, &w, 4000);
  free(src);
  return w;
}

/* A lease still on its way when a newer block was installed, used and then
 * retired (a seq of it taken): installing the older block would hand out
 * seqs below ones already handed out. It is refused, as it is while the
 * newer block is cached, and the next seq comes from a new lease above. */
static void a_block_leased_before_the_cached_one_is_refused_even_after_a_taken_seq_retired_it(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  test_lease_counter_double lease;
  test_lease_counter_init(&lease, &loop);
  static node a;
  node_init(&a, &loop, &lease.base, 100);
  pair p = {&a, &a};
  CHECK(rfx_run_until(&loop, pair_up, &p, 5000));
  lease.hwm = 1000; /* blocks from 1001 on: room below for the "older" lease */
  a.want = 3;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, pair_idle, &p, 5000));
  CHECK_EQ_U64(a.n_got[0], 3);
  CHECK_EQ_U64(a.got[0][0], 1001);
  char key[64], gen[128];
  snprintf(key, sizeof key, "hubu:seq:{%s}", a.ids[0]);
  hubu_redis_health h;
  hubu_redis_get_health(a.redis, &h);
  snprintf(gen, sizeof gen, "%s:%s", h.run_id, h.replid);
  /* the older block [501, 600], leased before [1001, 1100]: while that one
   * is cached and not used up, the call takes its next seq instead */
  script_wait w = install(&loop, a.redis, key, gen, 501, 600);
  CHECK(w.done && w.ok && w.seq == 1004);
  hubu_seq_allocator *al = hubu_redis_seq_allocator(a.seq);
  al->ops->taken(al, &a.sess[0], a.got[0][2]);
  char cur[32], last[32];
  hget(&loop, a.redis, key, "cur", cur, sizeof cur);
  hget(&loop, a.redis, key, "last", last, sizeof last);
  CHECK_EQ_U64(strtoull(cur, NULL, 10), 1004); /* retired: nothing more to hand out, its end kept */
  CHECK_EQ_U64(strtoull(last, NULL, 10), 1004);
  w = install(&loop, a.redis, key, gen, 501, 600);
  if (!CHECK(w.done && !w.ok && strcmp(w.reason, "STALE_BLOCK") == 0))
    fprintf(stderr, "older block after the retire: ok %d seq %lld reason %s\n", w.ok, w.seq, w.reason);
  a.want = 4;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, pair_idle, &p, 5000));
  CHECK_EQ_U64(a.n_got[0], 4);
  CHECK(a.got[0][3] > 1100);
  CHECK_EQ_U64(a.order_errors, 0);
  node_free(&a);
  rfx_loop_close(&loop);
}

/* A block leased under one generation of Redis and answered after Redis
 * came back empty: another node's block, leased after it, was installed and
 * used before the loss, and the new server's hash knows nothing of it. The
 * block is leased again, so the seq is above the other node's. */
static void a_block_leased_before_redis_came_back_empty_is_leased_again(void) {
  uv_loop_t loop;
  test_lease_counter_double lease;
  static node a, b;
  pair p = two_nodes_up(&loop, &lease, &a, &b, 100);
  a.want = 1;
  ask(&a, 0); /* the first block, [1, 100] */
  CHECK(rfx_run_until(&loop, pair_idle, &p, 5000));
  hubu_seq_allocator *al = hubu_redis_seq_allocator(a.seq);
  al->ops->taken(al, &a.sess[0], a.got[0][0]); /* retired: the next seq on either node needs a lease */
  lease.delay_next_ms = 3000;
  a.want = 2;
  ask(&a, 0); /* leases [101, 200] now, hears of it in 3 s */
  rfx_run_for(&loop, 200);
  CHECK_EQ_U64(lease.hwm, 200);
  b.want = 1;
  ask(&b, 0); /* leases [201, 300], installs it, takes 201 */
  rfx_run_for(&loop, 300);
  CHECK_EQ_U64(b.n_got[0], 1);
  CHECK_EQ_U64(b.got[0][0], 201);
  rfx_script("kill9");
  CHECK(rfx_run_until(&loop, pair_down, &p, 3000));
  rfx_script("restart");
  CHECK(rfx_run_until(&loop, pair_up, &p, 8000));
  CHECK(rfx_run_until(&loop, pair_idle, &p, 10000)); /* a's lease answers, under the new generation */
  CHECK_EQ_U64(a.n_got[0], 2);
  if (!CHECK(a.got[0][1] > b.got[0][0]))
    fprintf(stderr, "a's seq %" PRIu64 " after b's %" PRIu64 "\n", a.got[0][1], b.got[0][0]);
  CHECK_EQ_U64(a.order_errors + b.order_errors, 0);
  node_free(&a);
  node_free(&b);
  rfx_loop_close(&loop);
}

/* SEQ_TAKEN (core calls taken()): the session's cached block is retired,
 * so the next seq, on any node, comes from a new lease above the old block. */
static void a_taken_seq_retires_the_cached_block_and_the_next_seq_comes_from_a_new_lease(void) {
  uv_loop_t loop;
  test_lease_counter_double lease;
  static node a, b;
  pair p = two_nodes_up(&loop, &lease, &a, &b, 100);
  a.want = 3;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, pair_idle, &p, 5000));
  CHECK_EQ_U64(a.n_got[0], 3);
  uint64_t block_end = lease.hwm; /* the one block leased so far */
  CHECK(block_end >= 100);
  hubu_seq_allocator *al = hubu_redis_seq_allocator(a.seq);
  al->ops->taken(al, &a.sess[0], a.got[0][2]);
  /* the retire went on a's connection; an answer after it there says it ran */
  char key[64], cur[32], last[32];
  snprintf(key, sizeof key, "hubu:seq:{%s}", a.ids[0]);
  hget(&loop, a.redis, key, "cur", cur, sizeof cur);
  hget(&loop, a.redis, key, "last", last, sizeof last);
  CHECK(cur[0] && strcmp(cur, last) == 0);
  b.want = 1; /* the other node: the block it would have used is used up too */
  ask(&b, 0);
  CHECK(rfx_run_until(&loop, pair_idle, &p, 5000));
  CHECK_EQ_U64(b.n_got[0], 1);
  CHECK(b.got[0][0] > block_end);
  a.want = 4;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, pair_idle, &p, 5000));
  CHECK_EQ_U64(a.n_got[0], 4);
  CHECK(a.got[0][3] > b.got[0][0]);
  hubu_redis_seq_stats st;
  hubu_redis_seq_get_stats(a.seq, &st);
  CHECK_EQ_U64(st.blocks_dropped, 1);
  CHECK_EQ_U64(a.order_errors + b.order_errors, 0);
  node_free(&a);
  node_free(&b);
  rfx_loop_close(&loop);
}

static void seq_jumps_above_every_earlier_seq_after_flushall_and_empty_restart(void) {
  uv_loop_t loop;
  test_lease_counter_double lease;
  static node a, b;
  pair p = two_nodes_up(&loop, &lease, &a, &b, 1000);

  uint64_t top[N_SESS] = {0};
  int round = 0;
  for (int step = 0; step < 5; step++) {
    /* 50 more seqs per session from each node. */
    round++;
    a.want = b.want = 50 * round;
    for (int i = 0; i < N_SESS; i++) {
      int a_before = a.n_got[i], b_before = b.n_got[i];
      ask(&a, i);
      ask(&b, i);
      CHECK(rfx_run_until(&loop, pair_idle, &p, 10000));
      CHECK_EQ_U64(a.n_got[i], 50 * round);
      CHECK_EQ_U64(b.n_got[i], 50 * round);
      if (step > 0) { /* the first seq after the loss is above everything before it */
        CHECK(a.got[i][a_before] > top[i] || b.got[i][b_before] > top[i]);
        CHECK(a.got[i][a_before] > top[i]);
        CHECK(b.got[i][b_before] > top[i]);
      }
      top[i] = check_no_repeat(&a, &b, i);
    }
    CHECK_EQ_U64(a.order_errors + b.order_errors, 0);
    CHECK_EQ_U64(a.refused + b.refused + a.unavailable + b.unavailable, 0);
    if (step == 0) {
      const char *flush[1] = {"FLUSHALL"};
      CHECK(run_cmd(&loop, a.redis, 1, flush) == HUBU_REDIS_OK);
    } else if (step == 1) {
      /* A restart that comes back empty: a new run_id and replid, a new
       * generation; the script is loaded again after NOSCRIPT. */
      rfx_script("kill9");
      CHECK(rfx_run_until(&loop, pair_down, &p, 3000));
      rfx_script("restart");
      CHECK(rfx_run_until(&loop, pair_up, &p, 8000));
    } else if (step == 2) {
      /* What a replica promoted with an old copy would hold: each block
       * back at a seq one node has passed and the other has not, under
       * another generation. The node that has not passed it would hand out
       * a seq the other node already did, were the generation not checked. */
      for (int i = 0; i < N_SESS; i++) {
        char key[64], cur[24];
        uint64_t a_last = a.got[i][a.n_got[i] - 1], b_last = b.got[i][b.n_got[i] - 1];
        snprintf(key, sizeof key, "hubu:seq:{%s}", a.ids[i]);
        snprintf(cur, sizeof cur, "%" PRIu64, a_last < b_last ? a_last : b_last);
        const char *hset[6] = {"HSET", key, "gen", "oldrunid:oldreplid", "cur", cur};
        CHECK(run_cmd(&loop, a.redis, 6, hset) == HUBU_REDIS_OK);
      }
    } else if (step == 3) {
      /* What a master resynchronised from another and promoted again
       * without a restart would hold: blocks of the node's own generation
       * gone back in time, but without this process's mark (the copy came
       * from another process). Not used either. */
      for (int i = 0; i < N_SESS; i++) {
        char key[64], cur[24];
        uint64_t a_last = a.got[i][a.n_got[i] - 1], b_last = b.got[i][b.n_got[i] - 1];
        snprintf(key, sizeof key, "hubu:seq:{%s}", a.ids[i]);
        snprintf(cur, sizeof cur, "%" PRIu64, a_last < b_last ? a_last : b_last);
        const char *hset[4] = {"HSET", key, "cur", cur};
        const char *hdel[3] = {"HDEL", key, "mark"};
        CHECK(run_cmd(&loop, a.redis, 4, hset) == HUBU_REDIS_OK);
        CHECK(run_cmd(&loop, a.redis, 3, hdel) == HUBU_REDIS_OK);
      }
    }
  }
  hubu_redis_seq_stats st;
  hubu_redis_seq_get_stats(a.seq, &st);
  CHECK_EQ_U64(st.generation, 2); /* before and after the restart */
  CHECK(st.refusals >= 4 * N_SESS);
  node_free(&a);
  node_free(&b);
  rfx_loop_close(&loop);
}

static int node_down(void *arg) { return !hubu_redis_is_up(((node *)arg)->redis); }
static int node_up(void *arg) { return hubu_redis_is_up(((node *)arg)->redis); }

/* Down: requests in flight are answered without a seq, new ones are
 * UNAVAILABLE at once; a lease that fails answers without a seq too. After
 * the restart the seqs go on above everything before. */
static void seq_unavailable_while_redis_down_and_back_after(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  test_lease_counter_double lease;
  test_lease_counter_init(&lease, &loop);
  static node a;
  node_init(&a, &loop, &lease.base, 100);
  CHECK(rfx_run_until(&loop, node_up, &a, 5000));
  a.want = 20;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, node_idle, &a, 5000));
  CHECK_EQ_U64(a.n_got[0], 20);
  uint64_t top = a.got[0][19];

  /* In flight when the server dies (sent, not answered). */
  a.want = 1000;
  ask(&a, 1);
  ask(&a, 2);
  rfx_script("kill9");
  CHECK(rfx_run_until(&loop, node_idle, &a, 3000));
  CHECK_EQ_U64(a.refused, 2);
  CHECK(rfx_run_until(&loop, node_down, &a, 1000));
  ask(&a, 0);
  CHECK_EQ_U64(a.unavailable, 1);
  CHECK(!a.asking[0]);

  rfx_script("restart");
  CHECK(rfx_run_until(&loop, node_up, &a, 8000));
  /* The lease fails: no seq, however often the script asks. */
  lease.refuse = 1;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, node_idle, &a, 3000));
  CHECK_EQ_U64(a.refused, 3);
  lease.refuse = 0;
  a.want = 30;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, node_idle, &a, 5000));
  CHECK_EQ_U64(a.n_got[0], 30);
  CHECK(a.got[0][20] > top);
  CHECK_EQ_U64(a.order_errors, 0);
  hubu_redis_seq_stats st;
  hubu_redis_seq_get_stats(a.seq, &st);
  CHECK_EQ_U64(st.unavailable, 4);
  node_free(&a);
  rfx_loop_close(&loop);
}

/* A replica promoted with a copy that lags: the seqs handed out after the
 * copy was taken are not in it. A node that was connected to the replica
 * before its promotion (its generation read then) asks for the session's
 * next seq knowing nothing of it (floor 0): the copy's block is not used,
 * the install after the lease finds the replication id changed under the
 * open connection, the node reads it again, and the seq it gets is above
 * every seq the old master handed out. */
static void seq_after_a_lagging_replica_is_promoted_is_above_everything_before(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  test_lease_counter_double lease;
  test_lease_counter_init(&lease, &loop);
  /* The replica: a second private server beside the test's own. */
  char rdir[512], renv[600], port[16], mport[16], line[1200];
  snprintf(rdir, sizeof rdir, "%s-replica", getenv("HUBU_REDIS_DIR"));
  snprintf(renv, sizeof renv, "%s/env", rdir);
  snprintf(line, sizeof line, "'%s' start '%s' >/dev/null", getenv("HUBU_REDIS_SCRIPT"), rdir);
  if (!CHECK(system(line) == 0)) return;
  CHECK(rfx_env("REDIS_PORT", mport, sizeof mport) == 0);
  const char *menv = getenv("HUBU_REDIS_ENV");
  setenv("HUBU_REDIS_ENV", renv, 1);
  CHECK(rfx_env("REDIS_PORT", port, sizeof port) == 0);
  static node a, b;
  node_init(&b, &loop, &lease.base, 1000); /* on the replica */
  setenv("HUBU_REDIS_ENV", menv, 1);
  node_init(&a, &loop, &lease.base, 1000); /* on the master */
  pair p = {&a, &b};
  CHECK(rfx_run_until(&loop, pair_up, &p, 5000));
  /* The first sync starts at once (Redis waits 5 s for more replicas by
   * default). */
  const char *nodelay[4] = {"CONFIG", "SET", "repl-diskless-sync-delay", "0"};
  CHECK(run_cmd(&loop, a.redis, 4, nodelay) == HUBU_REDIS_OK);
  const char *replicaof[3] = {"REPLICAOF", "127.0.0.1", mport};
  CHECK(run_cmd(&loop, b.redis, 3, replicaof) == HUBU_REDIS_OK);

  CHECK(wait_replica_in_sync(&loop, b.redis, 60));
  a.want = 100;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, node_idle, &a, 5000));
  CHECK_EQ_U64(a.n_got[0], 100);
  /* The replica has those 100 (WAIT: acknowledged by one replica). */
  const char *wait[3] = {"WAIT", "1", "15000"};
  long long acked = 0;
  CHECK(run_cmd_within(&loop, a.redis, 16000, 3, wait, &acked) == HUBU_REDIS_OK);
  CHECK_EQ_U64(acked, 1);
  /* It stops; 50 more are handed out that it never gets. */
  snprintf(line, sizeof line, "'%s' pause '%s'", getenv("HUBU_REDIS_SCRIPT"), rdir);
  CHECK(system(line) == 0);
  a.want = 150;
  ask(&a, 0);
  CHECK(rfx_run_until(&loop, node_idle, &a, 5000));
  CHECK_EQ_U64(a.n_got[0], 150);
  uint64_t top = a.got[0][149];
  rfx_script("kill9"); /* the master is lost */
  snprintf(line, sizeof line, "'%s' resume '%s'", getenv("HUBU_REDIS_SCRIPT"), rdir);
  CHECK(system(line) == 0);
  const char *promote[3] = {"REPLICAOF", "NO", "ONE"};
  CHECK(run_cmd(&loop, b.redis, 3, promote) == HUBU_REDIS_OK);
  hubu_redis_health h;
  hubu_redis_get_health(b.redis, &h);
  CHECK_EQ_U64(h.replid_changes, 0); /* b has not noticed anything yet */

  b.want = 10;
  ask(&b, 0);
  CHECK(rfx_run_until(&loop, node_idle, &b, 5000));
  CHECK_EQ_U64(b.n_got[0], 10);
  CHECK(b.got[0][0] > top);
  check_no_repeat(&a, &b, 0);
  CHECK_EQ_U64(b.refused, 0);
  hubu_redis_get_health(b.redis, &h);
  CHECK(h.replid_changes >= 1);
  hubu_redis_seq_stats st;
  hubu_redis_seq_get_stats(b.seq, &st);
  CHECK_EQ_U64(st.generation, 2);
  a.want = 0;
  node_free(&a);
  node_free(&b);
  rfx_loop_close(&loop);
  snprintf(line, sizeof line, "'%s' stop '%s'", getenv("HUBU_REDIS_SCRIPT"), rdir);
  CHECK(system(line) == 0);
}

static void lease_op_done(hubu_store_op *op) { *(int *)op->ud = 1; }

/* The allocator on the store's real lease (SEQ_LEASE, one SQLite file shared
 * by two nodes as a MariaDB database is): the cache lost twice (FLUSHALL, an
 * empty restart), each time every seq above every one handed out before and
 * none repeated; the leases on record end above every seq handed out. */
static void seq_leases_from_the_store_keep_seqs_above_everything_through_cache_losses(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char dir[] = "/tmp/hubu-lease-XXXXXX", url[128], err[256];
  if (!CHECK(mkdtemp(dir) != NULL)) return;
  snprintf(url, sizeof url, "sqlite:%s/hubu.db", dir);
  hubu_store_config cfg = {.url = url, .fsync = HUBU_FSYNC_BATCH};
  hubu_store *store = hubu_store_open(&loop, &cfg, err, sizeof err);
  if (!CHECK(store != NULL)) return;
  hubu_store_lease lease;
  hubu_store_lease_init(&lease, store);
  static node a, b;
  node_init(&a, &loop, &lease.base, 100);
  node_init(&b, &loop, &lease.base, 100);
  pair p = {&a, &b};
  CHECK(rfx_run_until(&loop, pair_up, &p, 5000));
  uint64_t top[N_SESS] = {0};
  for (int step = 0; step < 3; step++) {
    a.want = b.want = 50 * (step + 1);
    for (int i = 0; i < N_SESS; i++) {
      int a_before = a.n_got[i], b_before = b.n_got[i];
      ask(&a, i);
      ask(&b, i);
      CHECK(rfx_run_until(&loop, pair_idle, &p, 10000));
      CHECK_EQ_U64(a.n_got[i], 50 * (step + 1));
      CHECK_EQ_U64(b.n_got[i], 50 * (step + 1));
      if (step > 0) {
        CHECK(a.got[i][a_before] > top[i]);
        CHECK(b.got[i][b_before] > top[i]);
      }
      top[i] = check_no_repeat(&a, &b, i);
    }
    CHECK_EQ_U64(a.order_errors + b.order_errors + a.refused + b.refused + a.unavailable + b.unavailable, 0);
    if (step == 0) {
      const char *flush[1] = {"FLUSHALL"};
      CHECK(run_cmd(&loop, a.redis, 1, flush) == HUBU_REDIS_OK);
    } else if (step == 1) {
      rfx_script("kill9");
      CHECK(rfx_run_until(&loop, pair_down, &p, 3000));
      rfx_script("restart");
      CHECK(rfx_run_until(&loop, pair_up, &p, 8000));
    }
  }
  CHECK(lease.leased >= 3 * N_SESS); /* a block per session and per cache loss at least */
  CHECK_EQ_U64(lease.failed, 0);
  CHECK_EQ_U64(lease.in_flight, 0);
  node_free(&a);
  node_free(&b);
  /* on record: the next lease of each session starts above every seq handed out */
  for (int i = 0; i < N_SESS; i++) {
    hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SEQ_LEASE);
    if (!CHECK(op != NULL)) break;
    snprintf(op->seq_lease.session_id, sizeof op->seq_lease.session_id, "%s", a.ids[i]);
    op->seq_lease.count = 1;
    int done = 0;
    op->ud = &done;
    op->done = lease_op_done;
    hubu_store_submit(store, op);
    while (!done) uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ_U64(op->status, HUBU_STORE_OK);
    CHECK(op->seq_lease.lo > top[i]);
    hubu_store_op_free(op);
  }
  hubu_store_close(store);
  rfx_loop_close(&loop);
  char rm[128];
  snprintf(rm, sizeof rm, "rm -rf %s", dir);
  CHECK(system(rm) == 0);
}

int main(int argc, char **argv) {
  static const redis_case cases[] = {
      REDIS_CASE(seqs_strictly_increase_and_never_repeat_across_two_nodes),
      REDIS_CASE(seq_jumps_above_every_earlier_seq_after_flushall_and_empty_restart),
      REDIS_CASE(a_taken_seq_retires_the_cached_block_and_the_next_seq_comes_from_a_new_lease),
      REDIS_CASE(a_block_leased_before_the_cached_one_is_refused_even_after_a_taken_seq_retired_it),
      REDIS_CASE(a_block_leased_before_redis_came_back_empty_is_leased_again),
      REDIS_CASE(seq_unavailable_while_redis_down_and_back_after),
      REDIS_CASE(seq_after_a_lagging_replica_is_promoted_is_above_everything_before),
      REDIS_CASE(seq_leases_from_the_store_keep_seqs_above_everything_through_cache_losses),
  };
  return rfx_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

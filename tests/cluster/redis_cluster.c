/* redis_cluster.c — cluster mode's node layer (runtime/cluster/cluster.c)
 * with real cores and a real private redis-server: two or three nodes in
 * this one process, each a core (tests/core's fixture: its own loop and its
 * own SQLite store file, test peers) with its own hubu_cluster on the same
 * Redis. The loops take turns on this thread.
 *
 * What is checked: a message stored on one node reaches the other nodes'
 * peers of its recipients once, in the modes given, with one delivery per
 * target node; a node without a recipient gets nothing; kicks and
 * invalidations reach every other node through core's real entry points;
 * presence in Redis follows attach and detach; kill -9 and an empty restart
 * of Redis (health down then up, presence written again, deliveries flow
 * again); SIGSTOP of Redis (unhealthy within the timeout); a node that stops
 * refreshing its lease is no delivery target once it expired, and is again
 * after it refreshes; describe() is JSON listing the nodes; malformed bus
 * messages are counted and dropped. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "cluster.h"
#include "core_fixture.h"
#include "delivery.h"
#include "redis_fixture.h"
#include "session.h"

#define NODES_MAX 3
#define GROUP "g:team"

typedef struct {
  core_fixture fx;
  hubu_cluster *c;
  uint32_t id;
} node;

static node nodes[NODES_MAX];
static size_t n_nodes;
static hubu_redis *tr; /* the test's own client (on node 1's loop) */

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Every node's loop takes a turn until pred(arg) holds or ms pass; 1 if it held. */
static int run_until(int (*pred)(void *), void *arg, uint64_t ms) {
  uint64_t end = mono_ms() + ms;
  for (;;) {
    for (size_t i = 0; i < n_nodes; i++) uv_run(&nodes[i].fx.loop, UV_RUN_NOWAIT);
    if (pred && pred(arg)) return 1;
    if (mono_ms() >= end) return 0;
    usleep(500);
  }
}

static void run_for(uint64_t ms) { run_until(NULL, NULL, ms); }

static int all_healthy(void *arg) {
  (void)arg;
  for (size_t i = 0; i < n_nodes; i++)
    if (!hubu_cluster_healthy(nodes[i].c, NULL, 0)) return 0;
  return 1;
}

static int none_healthy(void *arg) {
  (void)arg;
  for (size_t i = 0; i < n_nodes; i++)
    if (hubu_cluster_healthy(nodes[i].c, NULL, 0)) return 0;
  return 1;
}

/* Every node sees every node live. */
static int all_see_all(void *arg) {
  (void)arg;
  for (size_t i = 0; i < n_nodes; i++)
    if (hubu_cluster_live_nodes(nodes[i].c) != n_nodes) return 0;
  return 1;
}

static hubu_cluster_stats stats_of(size_t i) {
  hubu_cluster_stats s;
  hubu_cluster_get_stats(nodes[i].c, &s);
  return s;
}

/* One more node, its cluster under node_id (its core's id is its place). */
static int node_start(uint32_t node_id, uint32_t lease_ms) {
  char url[128], err[200];
  if (!CHECK(rfx_env("REDIS_URL", url, sizeof url) == 0) || !CHECK(n_nodes < NODES_MAX)) return -1;
  node *nd = &nodes[n_nodes];
  memset(nd, 0, sizeof *nd);
  nd->id = node_id;
  hubu_core_config cfg = fx_config();
  cfg.node_id = (uint32_t)n_nodes + 1;
  if (fx_open(&nd->fx, &cfg) != 0) return -1;
  n_nodes++;
  char adv[64];
  snprintf(adv, sizeof adv, "tcp://127.0.0.1:%u (test node %u)", 7000 + nd->id, nd->id);
  hubu_cluster_config cc = {
      .redis_url = url, .node_id = nd->id, .lease_ms = lease_ms, .seq_block = 100, .advertise = adv};
  nd->c = hubu_cluster_start(&nd->fx.core, nd->fx.store, &cc, err, sizeof err);
  if (!CHECK(nd->c != NULL)) {
    fprintf(stderr, "    hubu_cluster_start: %s\n", err);
    return -1;
  }
  CHECK(nd->fx.core.bus != NULL);
  if (n_nodes == 1) { /* the test's client goes on the first node's loop */
    hubu_redis_config rc = rfx_config(2000, 2000);
    rc.backoff_max_ms = 300;
    tr = hubu_redis_new(&nodes[0].fx.loop, &rc, NULL, NULL);
  }
  return 0;
}

/* n nodes with ids 1..n, each healthy and seeing the others; 0, or -1. */
static int nodes_open(size_t n, uint32_t lease_ms) {
  n_nodes = 0;
  for (size_t i = 0; i < n; i++)
    if (node_start((uint32_t)i + 1, lease_ms) != 0) return -1;
  int ok = CHECK(run_until(all_healthy, NULL, 8000)) & CHECK(run_until(all_see_all, NULL, 8000));
  CHECK(tr != NULL && run_until(rfx_is_up, tr, 5000));
  return ok ? 0 : -1;
}

static void nodes_close(void) {
  hubu_redis_close(tr);
  tr = NULL;
  for (size_t i = 0; i < n_nodes; i++) {
    hubu_cluster_close(nodes[i].c);
    CHECK(nodes[i].fx.core.bus == NULL);
  }
  for (size_t i = 0; i < n_nodes; i++) {
    fx_close(&nodes[i].fx); /* runs the loop on: the close's commands are answered, the clients closed */
    hubu_cluster_free(nodes[i].c);
  }
  n_nodes = 0;
}

/* ---- the test's own Redis commands ---- */

typedef struct {
  int done;
  int type;
  long long integer;
  size_t n;
  char items[64][96];
  char str[512];
  size_t str_len;
} rq_reply;

static void rq_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  rq_reply *out = ud;
  out->done = st == HUBU_REDIS_OK ? 1 : -1;
  if (!reply) return;
  out->type = reply->type;
  out->integer = reply->integer;
  if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) {
    out->str_len = reply->len < sizeof out->str - 1 ? reply->len : sizeof out->str - 1;
    memcpy(out->str, reply->str, out->str_len);
    out->str[out->str_len] = '\0';
  }
  for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < 64; i++) {
    const redisReply *e = reply->element[i];
    if (e->type == REDIS_REPLY_STRING) snprintf(out->items[out->n], sizeof out->items[0], "%s", e->str);
    out->n++;
  }
}

static int rq_done(void *arg) { return ((rq_reply *)arg)->done != 0; }

/* Runs a command through the test's client; 1 when it was answered OK. */
static int rq(rq_reply *out, int argc, const char **argv, const size_t *argvlen) {
  memset(out, 0, sizeof *out);
  if (hubu_redis_command(tr, 0, rq_cb, out, argc, argv, argvlen) != 0) return 0;
  run_until(rq_done, out, 5000);
  return out->done == 1;
}

/* HGET hubu:pr:{user} "NODE:CONN" into dev: 1 when present. */
static int presence_has(const char *user, uint32_t node_id, uint64_t conn, char *dev, size_t size) {
  char key[96], field[48];
  snprintf(key, sizeof key, "hubu:pr:{%s}", user);
  snprintf(field, sizeof field, "%u:%" PRIu64, node_id, conn);
  const char *argv[3] = {"HGET", key, field};
  rq_reply r;
  if (!rq(&r, 3, argv, NULL) || r.type != REDIS_REPLY_STRING) return 0;
  if (dev && size) {
    size_t n = strlen(r.str) < size - 1 ? strlen(r.str) : size - 1;
    memcpy(dev, r.str, n);
    dev[n] = 0;
  }
  return 1;
}

static long long hlen(const char *user) {
  char key[96];
  snprintf(key, sizeof key, "hubu:pr:{%s}", user);
  const char *argv[2] = {"HLEN", key};
  rq_reply r;
  return rq(&r, 2, argv, NULL) ? r.integer : -1;
}

static int set_has(const char *key, const char *member) {
  const char *argv[3] = {"SISMEMBER", key, member};
  rq_reply r;
  return rq(&r, 3, argv, NULL) && r.integer == 1;
}

static long long scard(const char *key) {
  const char *argv[2] = {"SCARD", key};
  rq_reply r;
  return rq(&r, 2, argv, NULL) ? r.integer : -1;
}

/* ---- peers ---- */

typedef struct {
  test_peer *tp;
  size_t n;
} count_arg;

static int has_pushed(void *arg) {
  count_arg *a = arg;
  return tp_pushed(a->tp, NULL, NULL, 0) >= a->n;
}

static int has_acks(void *arg) {
  count_arg *a = arg;
  return tp_count(a->tp, HUBU_FRAME_SEND_ACK) >= a->n;
}

/* SEND and wait for its SEND_ACK OK; the seq. */
static uint64_t send_ok(test_peer *tp, uint64_t client_id, const char *session_id, const char *body) {
  size_t before = tp_count(tp, HUBU_FRAME_SEND_ACK);
  tp_send(tp, client_id, session_id, body);
  count_arg a = {tp, before + 1};
  if (!CHECK(run_until(has_acks, &a, 8000))) return 0;
  Hubu__V1__SendAck *ack = tp_send_ack(tp, before);
  uint64_t seq = 0;
  if (CHECK(ack != NULL)) {
    if (CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK)) seq = ack->seq;
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  return seq;
}

/* The messages pushed to tp: exactly one, of session_id with seq. */
static void pushed_once(test_peer *tp, const char *session_id, uint64_t seq) {
  uint64_t seqs[8];
  char sessions[8][32];
  size_t n = tp_pushed(tp, seqs, sessions, 8);
  if (CHECK_EQ_U64(n, 1)) {
    CHECK_EQ_U64(seqs[0], seq);
    CHECK_EQ_STR(sessions[0], session_id);
  }
}

/* ---- cases ---- */

static void delivery_reaches_the_other_nodes_peers_once_in_their_modes(void) {
  if (nodes_open(3, 0) != 0) goto out;
  test_peer alice, bob_phone, bob_laptop, carol, erin;
  tp_connect(&nodes[0].fx, &alice, "alice", "phone");
  tp_connect(&nodes[1].fx, &bob_phone, "bob", "phone");
  tp_connect(&nodes[1].fx, &bob_laptop, "bob", "laptop");
  tp_connect(&nodes[2].fx, &carol, "carol", "phone");
  tp_connect(&nodes[2].fx, &erin, "erin", "phone");
  const char *members[4] = {"alice", "bob", "carol", "dave"};
  fx_create_group(&nodes[0].fx, GROUP, members, 4);

  /* A group message stored on node 1: one delivery to node 2 (two devices of
   * bob), one to node 3 (carol); none back to node 1. */
  uint64_t seq = send_ok(&alice, 1, GROUP, "hello team");
  CHECK(seq > 0);
  count_arg want_bp = {&bob_phone, 1}, want_bl = {&bob_laptop, 1}, want_c = {&carol, 1};
  CHECK(run_until(has_pushed, &want_bp, 5000));
  CHECK(run_until(has_pushed, &want_bl, 5000));
  CHECK(run_until(has_pushed, &want_c, 5000));
  run_for(300); /* nothing more comes */
  pushed_once(&bob_phone, GROUP, seq);
  pushed_once(&bob_laptop, GROUP, seq);
  pushed_once(&carol, GROUP, seq);
  CHECK_EQ_U64(tp_pushed(&erin, NULL, NULL, 0), 0);
  CHECK_EQ_U64(tp_pushed(&alice, NULL, NULL, 0), 0); /* the sender's own device is not pushed its message */
  CHECK_EQ_U64(stats_of(0).deliveries_sent, 2);
  CHECK_EQ_U64(stats_of(1).deliveries_received, 1);
  CHECK_EQ_U64(stats_of(2).deliveries_received, 1);
  CHECK_EQ_U64(stats_of(0).deliveries_received, 0);
  tp_flush(&bob_phone);
  tp_flush(&bob_laptop);
  tp_flush(&carol);

  /* A direct message alice -> bob: node 3 holds neither and gets nothing. */
  seq = send_ok(&alice, 2, "d:alice:bob", "just bob");
  CHECK(run_until(has_pushed, &want_bp, 5000));
  CHECK(run_until(has_pushed, &want_bl, 5000));
  run_for(300);
  pushed_once(&bob_phone, "d:alice:bob", seq);
  pushed_once(&bob_laptop, "d:alice:bob", seq);
  CHECK_EQ_U64(tp_pushed(&carol, NULL, NULL, 0), 0);
  CHECK_EQ_U64(stats_of(0).deliveries_sent, 3);
  CHECK_EQ_U64(stats_of(1).deliveries_received, 2);
  CHECK_EQ_U64(stats_of(2).deliveries_received, 1);
  tp_flush(&bob_phone);
  tp_flush(&bob_laptop);

  /* The modes travel with the users: bob is hinted, carol pushed, through
   * node 1's bus as core calls it. */
  hubu_msg *m = fx_msg(GROUP, 1000, 40);
  const char *users[2] = {"bob", "carol"};
  const uint8_t modes[2] = {HUBU_ROUTE_HINT, HUBU_ROUTE_PUSH};
  nodes[0].fx.core.bus->ops->deliver(nodes[0].fx.core.bus, m, users, modes, 2);
  hubu_msg_unref(m);
  CHECK(run_until(has_pushed, &want_c, 5000));
  run_for(300);
  pushed_once(&carol, GROUP, 1000);
  Hubu__V1__Push *p = tp_push(&carol, 0);
  if (CHECK(p != NULL) && CHECK_EQ_U64(p->n_messages, 1)) {
    CHECK_EQ_STR(p->messages[0]->sender, "alice");
    CHECK_EQ_U64(p->messages[0]->body.len, 40);
  }
  if (p) hubu__v1__push__free_unpacked(p, NULL);
  CHECK_EQ_U64(tp_pushed(&bob_phone, NULL, NULL, 0), 0);
  CHECK_EQ_U64(tp_pushed(&bob_laptop, NULL, NULL, 0), 0);
  test_peer *hinted[2] = {&bob_phone, &bob_laptop};
  for (int i = 0; i < 2; i++) {
    hubu_delivery_write_hints(&hinted[i]->peer);
    Hubu__V1__PullHint *h = tp_pull_hint(hinted[i], 0);
    if (CHECK(h != NULL)) {
      CHECK_EQ_STR(h->session_id, GROUP);
      CHECK_EQ_U64(h->max_seq, 1000);
      hubu__v1__pull_hint__free_unpacked(h, NULL);
    }
    CHECK_EQ_U64(tp_count(hinted[i], HUBU_FRAME_PULL_HINT), 1);
  }

  /* Many users: every live node but this one gets the delivery, one each. */
  hubu_cluster_stats before = stats_of(0);
  const char *many[70];
  uint8_t many_modes[70];
  char names[70][16];
  for (int i = 0; i < 70; i++) {
    snprintf(names[i], sizeof names[i], "u%d", i);
    many[i] = names[i];
    many_modes[i] = HUBU_ROUTE_PUSH;
  }
  many[69] = "carol";
  m = fx_msg(GROUP, 1001, 8);
  nodes[0].fx.core.bus->ops->deliver(nodes[0].fx.core.bus, m, many, many_modes, 70);
  hubu_msg_unref(m);
  count_arg want_c2 = {&carol, 2};
  CHECK(run_until(has_pushed, &want_c2, 5000));
  run_for(300);
  CHECK_EQ_U64(tp_pushed(&carol, NULL, NULL, 0), 2);
  CHECK_EQ_U64(stats_of(0).deliveries_broadcast, before.deliveries_broadcast + 1);
  CHECK_EQ_U64(stats_of(0).deliveries_sent, before.deliveries_sent + 2);
  CHECK_EQ_U64(stats_of(0).bus_failed, 0);

  tp_close(&alice);
  tp_close(&bob_phone);
  tp_close(&bob_laptop);
  tp_close(&carol);
  tp_close(&erin);
out:
  nodes_close();
}

static int goaways(void *arg) { return ((test_peer *)arg)->goaways > 0; }

static void on_op(hubu_store_op *op) { *(int *)op->ud = 1; }

typedef struct {
  test_peer *tp;
  size_t n;
} pushed_arg;

static int has_pushed_n(void *arg) {
  pushed_arg *a = arg;
  return tp_pushed(a->tp, NULL, NULL, 0) >= a->n;
}

/* 210 messages to three users, handed to the bus in one loop turn: more
 * keys and arguments than one script call takes (1,024), so they go in
 * several; every one is delivered to each user, in order, none fails. */
static void a_loop_turns_many_deliveries_go_in_several_script_calls_all_delivered(void) {
  if (nodes_open(2, 0) != 0) goto out;
  enum { N = 210 }; /* 5 keys and arguments each: 1,050 in all; under the window of 256 unacknowledged */
  test_peer peers[3];
  const char *users[3] = {"bob", "carol", "dave"};
  for (int i = 0; i < 3; i++) tp_connect(&nodes[1].fx, &peers[i], users[i], "phone");
  run_for(300); /* their presence is in Redis */
  hubu_bus *bus = nodes[0].fx.core.bus;
  const uint8_t modes[3] = {HUBU_ROUTE_PUSH, HUBU_ROUTE_PUSH, HUBU_ROUTE_PUSH};
  for (uint64_t seq = 1; seq <= N; seq++) {
    char body[32];
    int len = snprintf(body, sizeof body, "m%llu", (unsigned long long)seq);
    hubu_msg *m = hubu_msg_new("g:many", seq, 1000 + seq, "alice", "phone", seq, (const uint8_t *)body, (size_t)len, "",
                               NULL, 0, 1);
    if (!CHECK(m != NULL)) break;
    bus->ops->deliver(bus, m, users, modes, 3);
    hubu_msg_unref(m);
  }
  for (int i = 0; i < 3; i++) {
    pushed_arg want = {&peers[i], N};
    CHECK(run_until(has_pushed_n, &want, 8000));
    static uint64_t seqs[N];
    size_t got = tp_pushed(&peers[i], seqs, NULL, N);
    CHECK_EQ_U64(got, N);
    for (size_t k = 0; k < got; k++)
      if (!CHECK_EQ_U64(seqs[k], k + 1)) break;
  }
  CHECK_EQ_U64(stats_of(0).deliveries_sent, N); /* one delivery per message to node 2 */
  CHECK_EQ_U64(stats_of(0).bus_failed, 0);
  for (int i = 0; i < 3; i++) tp_close(&peers[i]);
out:
  nodes_close();
}

static void kick_and_invalidate_reach_the_other_nodes(void) {
  if (nodes_open(3, 0) != 0) goto out;
  test_peer alice, bob2, bob3, carol2, carol1;
  tp_connect(&nodes[0].fx, &alice, "alice", "phone");
  tp_connect(&nodes[1].fx, &bob2, "bob", "phone");
  tp_connect(&nodes[2].fx, &bob3, "bob", "tablet");
  tp_connect(&nodes[1].fx, &carol2, "carol", "phone");
  tp_connect(&nodes[0].fx, &carol1, "carol", "laptop");

  /* A kick on node 1 reaches bob's peers on nodes 2 and 3 (GOAWAY KICKED),
   * and nobody else. */
  hubu_core_kick(&nodes[0].fx.core, "bob", "banned for the test");
  CHECK(run_until(goaways, &bob2, 5000));
  CHECK(run_until(goaways, &bob3, 5000));
  run_for(200);
  CHECK_EQ_U64(bob2.goaways, 1);
  CHECK_EQ_U64(bob3.goaways, 1);
  CHECK_EQ_U64(bob2.goaway_code, HUBU__V1__CODE__KICKED);
  CHECK_EQ_STR(bob3.goaway_reason, "banned for the test");
  CHECK_EQ_U64(carol2.goaways + carol1.goaways + alice.goaways, 0);
  CHECK_EQ_U64(stats_of(0).kicks_sent, 1);
  CHECK_EQ_U64(stats_of(1).kicks_received, 1);
  CHECK_EQ_U64(stats_of(2).kicks_received, 1);
  CHECK_EQ_U64(stats_of(0).kicks_received, 0); /* not back to the sender */

  /* Node 2 has the group loaded with alice and bob as members (from its own
   * store); carol is added in node 2's store behind its back: a message
   * there does not reach her, since the members are cached. */
  const char *members[2] = {"alice", "bob"};
  fx_create_group(&nodes[1].fx, GROUP, members, 2);
  fx_create_group(&nodes[0].fx, GROUP, members, 2);
  test_peer dave;
  tp_connect(&nodes[1].fx, &dave, "bob", "laptop");
  uint64_t s1 = send_ok(&dave, 1, GROUP, "before");
  CHECK(s1 > 0);
  fx_settle(&nodes[1].fx);
  run_for(200);
  CHECK_EQ_U64(tp_pushed(&carol2, NULL, NULL, 0), 0);
  CHECK_EQ_U64(
      fx_db_exec(&nodes[1].fx, "INSERT INTO members(session_id, user_id, joined_ms) VALUES(%Q, 'carol', 2)", GROUP), 0);
  uint64_t s2 = send_ok(&dave, 2, GROUP, "still cached");
  run_for(300);
  CHECK_EQ_U64(tp_pushed(&carol2, NULL, NULL, 0), 0);
  CHECK(s2 > s1);

  /* Node 1 adds carol (its admin path: the store op, then core's
   * membership_applied): node 2 hears of it and reloads the members. */
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_MEMBER_ADD);
  snprintf(op->member.session_id, sizeof op->member.session_id, "%s", GROUP);
  snprintf(op->member.user, sizeof op->member.user, "carol");
  int done = 0;
  op->ud = &done;
  op->done = on_op;
  hubu_store_submit(nodes[0].fx.store, op);
  while (!done) uv_run(&nodes[0].fx.loop, UV_RUN_ONCE);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_session_membership_applied(&nodes[0].fx.core, op);
  hubu_store_op_free(op);
  hubu_cluster_stats st;
  for (int i = 0; i < 500; i++) {
    run_for(10);
    if ((st = stats_of(1)).invalidations_received) break;
  }
  CHECK_EQ_U64(st.invalidations_received, 1);
  CHECK_EQ_U64(stats_of(2).invalidations_received, 1);
  CHECK_EQ_U64(stats_of(0).invalidations_received, 0);
  CHECK_EQ_U64(stats_of(0).invalidations_sent, 1);
  fx_settle(&nodes[1].fx);
  uint64_t s3 = send_ok(&dave, 3, GROUP, "after the change");
  count_arg want = {&carol2, 1};
  CHECK(run_until(has_pushed, &want, 5000));
  pushed_once(&carol2, GROUP, s3);

  tp_close(&alice);
  tp_close(&bob2);
  tp_close(&bob3);
  tp_close(&carol2);
  tp_close(&carol1);
  tp_close(&dave);
out:
  nodes_close();
}

static void presence_in_redis_follows_attach_and_detach(void) {
  if (nodes_open(2, 0) != 0) goto out;
  test_peer a1, a2, b2;
  tp_connect(&nodes[0].fx, &a1, "alice", "phone");
  tp_connect(&nodes[1].fx, &a2, "alice", "laptop");
  tp_connect(&nodes[1].fx, &b2, "bob", "phone");
  run_for(200);
  char dev[64] = "";
  CHECK(presence_has("alice", 1, a1.peer.id, dev, sizeof dev));
  CHECK_EQ_STR(dev, "phone");
  CHECK(presence_has("alice", 2, a2.peer.id, dev, sizeof dev));
  CHECK_EQ_STR(dev, "laptop");
  CHECK(presence_has("bob", 2, b2.peer.id, NULL, 0));
  CHECK_EQ_U64(hlen("alice"), 2);
  CHECK(set_has("hubu:node:{2}:users", "alice"));
  CHECK(set_has("hubu:node:{2}:users", "bob"));
  CHECK(set_has("hubu:node:{1}:users", "alice"));
  CHECK(!set_has("hubu:node:{1}:users", "bob"));
  CHECK(set_has("hubu:nodes", "1"));
  CHECK(set_has("hubu:nodes", "2"));

  /* alice's laptop leaves node 2: her entry there goes, and node 2 no longer
   * lists her; bob stays. */
  tp_close(&a2);
  run_for(200);
  CHECK(!presence_has("alice", 2, a2.peer.id, NULL, 0));
  CHECK(presence_has("alice", 1, a1.peer.id, NULL, 0));
  CHECK_EQ_U64(hlen("alice"), 1);
  CHECK(!set_has("hubu:node:{2}:users", "alice"));
  CHECK(set_has("hubu:node:{2}:users", "bob"));

  /* A message from bob now reaches node 1 only. */
  uint64_t seq = send_ok(&b2, 1, "d:alice:bob", "hi");
  count_arg want = {&a1, 1};
  CHECK(run_until(has_pushed, &want, 5000));
  pushed_once(&a1, "d:alice:bob", seq);
  CHECK_EQ_U64(stats_of(1).deliveries_sent, 1);

  /* Node 2 closes: its presence and lease leave Redis at once. */
  tp_close(&b2);
  CHECK(presence_has("alice", 1, a1.peer.id, NULL, 0));
  tp_close(&a1);
  run_for(200);
  CHECK_EQ_U64(hlen("alice"), 0);
  CHECK_EQ_U64(hlen("bob"), 0);
out:
  nodes_close();
}

static int presence_back(void *arg) {
  test_peer **peers = arg;
  return presence_has("alice", 1, peers[0]->peer.id, NULL, 0) && presence_has("bob", 2, peers[1]->peer.id, NULL, 0);
}

static void redis_kill9_and_empty_restart_then_presence_and_deliveries_come_back(void) {
  if (nodes_open(2, 0) != 0) goto out;
  test_peer alice, bob;
  tp_connect(&nodes[0].fx, &alice, "alice", "phone");
  tp_connect(&nodes[1].fx, &bob, "bob", "phone");
  uint64_t s1 = send_ok(&alice, 1, "d:alice:bob", "before");
  count_arg want = {&bob, 1};
  CHECK(run_until(has_pushed, &want, 5000));
  pushed_once(&bob, "d:alice:bob", s1);
  tp_flush(&bob);
  /* More connections than one batch of the rewrite holds (256). */
  static test_peer crowd[300];
  for (int i = 0; i < 300; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%03d", i);
    tp_connect(&nodes[1].fx, &crowd[i], user, "phone");
  }
  run_for(200);
  CHECK_EQ_U64(scard("hubu:node:{2}:users"), 301);

  rfx_script("kill9");
  CHECK(run_until(none_healthy, NULL, 5000));
  char why[256];
  CHECK(!hubu_cluster_healthy(nodes[0].c, why, sizeof why));
  CHECK(strncmp(why, "redis: ", 7) == 0 || strncmp(why, "bus: ", 5) == 0);
  /* While Redis is down: presence changes and bus calls fail fast, counted;
   * the local directory works. */
  test_peer carol;
  tp_connect(&nodes[1].fx, &carol, "carol", "phone");
  hubu_cluster_stats st = stats_of(1);
  CHECK(st.presence_failed >= 2);
  hubu_core_kick(&nodes[1].fx.core, "nobody", "x");
  CHECK(stats_of(1).bus_failed >= 1);

  rfx_script("restart"); /* empty */
  CHECK(run_until(all_healthy, NULL, 10000));
  CHECK(run_until(rfx_is_up, tr, 5000));
  test_peer *peers[2] = {&alice, &bob};
  CHECK(run_until(presence_back, peers, 5000));
  CHECK(presence_has("carol", 2, carol.peer.id, NULL, 0)); /* attached while down */
  CHECK(presence_has("u000", 2, crowd[0].peer.id, NULL, 0));
  CHECK(presence_has("u299", 2, crowd[299].peer.id, NULL, 0));
  CHECK_EQ_U64(scard("hubu:node:{2}:users"), 302);
  CHECK(set_has("hubu:node:{1}:users", "alice"));
  CHECK(stats_of(0).presence_rewrites >= 2);
  CHECK(stats_of(0).lease_lost >= 1);
  CHECK(run_until(all_see_all, NULL, 5000));

  /* Deliveries flow again (the seq jumps: Redis lost its blocks). */
  uint64_t s2 = send_ok(&alice, 2, "d:alice:bob", "after");
  CHECK(s2 > s1);
  CHECK(run_until(has_pushed, &want, 5000));
  pushed_once(&bob, "d:alice:bob", s2);

  tp_close(&alice);
  tp_close(&bob);
  tp_close(&carol);
  for (int i = 0; i < 300; i++) tp_close(&crowd[i]);
out:
  nodes_close();
}

static void redis_sigstop_makes_the_nodes_unhealthy_within_the_timeout(void) {
  if (nodes_open(2, 0) != 0) goto out;
  rfx_script("pause");
  uint64_t t0 = mono_ms();
  /* A command or heartbeat times out after 1 s; the next PING or heartbeat
   * goes within 1 s of the stop. */
  CHECK(run_until(none_healthy, NULL, 3500));
  uint64_t took = mono_ms() - t0;
  CHECK(took <= 3500);
  char why[256];
  hubu_cluster_healthy(nodes[1].c, why, sizeof why);
  CHECK(strstr(why, "tim") != NULL || strstr(why, "heartbeat") != NULL);
  rfx_script("resume");
  CHECK(run_until(all_healthy, NULL, 10000));
out:
  nodes_close();
}

/* Redis stops just before the nodes close: each close's commands get their
 * timeout (1 s) and no more, and the loops end. */
static void close_while_redis_is_stopped_is_bounded(void) {
  if (nodes_open(2, 0) != 0) goto out;
  test_peer a;
  tp_connect(&nodes[0].fx, &a, "alice", "phone");
  run_for(100);
  tp_close(&a);
  rfx_script("pause");
  CHECK(hubu_cluster_healthy(nodes[0].c, NULL, 0)); /* not noticed yet */
  uint64_t t0 = mono_ms();
  nodes_close();
  uint64_t took = mono_ms() - t0;
  CHECK(took >= 500 &&
        took < 2500); /* the close did send its commands, and waited for them no longer than their timeout */
  rfx_script("resume");
  return;
out:
  nodes_close();
}

static int received_more(void *arg) { return stats_of(1).deliveries_received > *(uint64_t *)arg; }

static void a_node_without_lease_refresh_is_no_target_until_it_refreshes(void) {
  if (nodes_open(2, 1000) != 0) goto out;
  test_peer alice, bob;
  tp_connect(&nodes[0].fx, &alice, "alice", "phone");
  tp_connect(&nodes[1].fx, &bob, "bob", "phone");
  uint64_t s1 = send_ok(&alice, 1, "d:alice:bob", "one");
  count_arg want = {&bob, 1};
  CHECK(run_until(has_pushed, &want, 5000));
  pushed_once(&bob, "d:alice:bob", s1);
  tp_flush(&bob);

  /* Node 2's loop goes on but its lease is not refreshed: after the lease
   * (1 s) node 1 no longer sends it anything, and node 2 says why. */
  hubu_cluster_pause_lease(nodes[1].c, 1);
  run_for(1600);
  char why[256];
  CHECK(!hubu_cluster_healthy(nodes[1].c, why, sizeof why));
  CHECK(strncmp(why, "lease lost", 10) == 0);
  CHECK(hubu_cluster_healthy(nodes[0].c, NULL, 0));
  CHECK_EQ_U64(hubu_cluster_live_nodes(nodes[0].c), 1);
  uint64_t sent = stats_of(0).deliveries_sent, received = stats_of(1).deliveries_received;
  uint64_t s2 = send_ok(&alice, 2, "d:alice:bob", "two");
  CHECK(s2 > s1);
  run_for(500);
  CHECK_EQ_U64(stats_of(0).deliveries_sent, sent);
  CHECK_EQ_U64(stats_of(1).deliveries_received, received);
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 0);
  CHECK_EQ_U64(hlen("bob"), 0); /* the reader deleted the entry of a node without a lease */
  CHECK(!set_has("hubu:node:{2}:users", "bob"));

  /* It refreshes: the lease was gone, so it writes its presence again and
   * is a target again. */
  hubu_cluster_pause_lease(nodes[1].c, 0);
  CHECK(run_until(all_healthy, NULL, 3000));
  CHECK(run_until(all_see_all, NULL, 3000));
  CHECK_EQ_U64(stats_of(1).lease_lost, 1);
  CHECK(presence_has("bob", 2, bob.peer.id, NULL, 0));
  CHECK(set_has("hubu:node:{2}:users", "bob"));
  uint64_t s3 = send_ok(&alice, 3, "d:alice:bob", "three");
  CHECK(run_until(received_more, &received, 5000));
  CHECK(run_until(has_pushed, &want, 5000));
  pushed_once(&bob, "d:alice:bob", s3); /* two was never pushed: the client pulls it (its gap) */

  tp_close(&alice);
  tp_close(&bob);
out:
  nodes_close();
}

static void describe_lists_the_nodes_and_malformed_bus_messages_are_dropped(void) {
  if (nodes_open(3, 0) != 0) goto out;
  test_peer a, b;
  tp_connect(&nodes[1].fx, &a, "alice", "phone");
  tp_connect(&nodes[1].fx, &b, "bob", "phone");
  run_for(2500); /* node 2's refresh carries its counts, node 1's next one reads them */
  CHECK(run_until(all_see_all, NULL, 3000));
  hubu_buf out = {0};
  CHECK_EQ_U64(hubu_cluster_describe(nodes[0].c, &out), 0);
  json_error_t jerr;
  json_t *root = json_loadb((const char *)hubu_buf_head(&out), hubu_buf_size(&out), 0, &jerr);
  if (CHECK(root != NULL)) {
    CHECK_EQ_U64(json_integer_value(json_object_get(root, "node_id")), 1);
    CHECK(json_is_true(json_object_get(root, "healthy")));
    CHECK(json_is_true(json_object_get(json_object_get(root, "redis"), "up")));
    CHECK(json_integer_value(json_object_get(json_object_get(root, "seq"), "generation")) >= 0);
    json_t *ns = json_object_get(root, "nodes");
    if (CHECK(json_is_array(ns)) && CHECK_EQ_U64(json_array_size(ns), 3)) {
      int seen = 0;
      for (size_t i = 0; i < 3; i++) {
        json_t *n = json_array_get(ns, i);
        json_int_t id = json_integer_value(json_object_get(n, "id"));
        CHECK(id >= 1 && id <= 3);
        seen |= 1 << id;
        json_int_t left = json_integer_value(json_object_get(n, "lease_ms_left"));
        CHECK(left > 0 && left <= 5000);
        CHECK(json_integer_value(json_object_get(n, "started_ms")) > 0);
        char adv[64];
        snprintf(adv, sizeof adv, "tcp://127.0.0.1:%u (test node %u)", 7000 + (unsigned)id, (unsigned)id);
        CHECK_EQ_STR(json_string_value(json_object_get(n, "advertise")), adv);
        if (id == 2) {
          CHECK_EQ_U64(json_integer_value(json_object_get(n, "connections")), 2);
          CHECK_EQ_U64(json_integer_value(json_object_get(n, "users")), 2);
        }
        CHECK(json_is_true(json_object_get(n, "self")) == (id == 1));
      }
      CHECK_EQ_U64(seen, 0xE);
    }
    json_decref(root);
  } else {
    fprintf(stderr, "    %s\n%.*s\n", jerr.text, (int)hubu_buf_size(&out), (const char *)hubu_buf_head(&out));
  }
  hubu_buf_free(&out);
  hubu_cluster_metrics(nodes[0].c, &out);
  CHECK(memmem(hubu_buf_head(&out), hubu_buf_size(&out), "hubu_cluster_redis_up 1\n", 24) != NULL);
  CHECK(memmem(hubu_buf_head(&out), hubu_buf_size(&out), "hubu_cluster_nodes_live 3\n", 26) != NULL);
  hubu_buf_free(&out);

  /* A URL hubud cannot use: refused with a reason, the core untouched. */
  hubu_directory *dir = nodes[0].fx.core.directory;
  hubu_bus *bus = nodes[0].fx.core.bus;
  static const char *const bad[] = {"http://127.0.0.1:6379", "redis://redis.example:6379", "redis://127.0.0.1:99999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[200] = "";
    hubu_cluster_config cc = {.redis_url = bad[i], .node_id = 9};
    CHECK(hubu_cluster_start(&nodes[0].fx.core, nodes[0].fx.store, &cc, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
  }
  CHECK(nodes[0].fx.core.directory == dir && nodes[0].fx.core.bus == bus);

  /* Garbage on node 2's channel and on the common one: counted, dropped. */
  static const char *const junk[] = {"",
                                     "x",
                                     "\x01"
                                     "D\0\0\0\x09",
                                     "\x01"
                                     "D\0\0\0\x09\0\0\0\x01\0\0\x05",
                                     "\x02zzzzzz",
                                     "\x01"
                                     "Q\0\0\0\x09",
                                     "\x01"
                                     "K\0\0\0\x09\0\x09"
                                     "ab"};
  static const size_t junk_len[] = {0, 1, 6, 13, 7, 6, 10};
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    const char *argv[3] = {"PUBLISH", i % 2 ? "hubu:bus:2" : "hubu:bus:all", junk[i]};
    size_t argvlen[3] = {7, strlen(argv[1]), junk_len[i]};
    rq_reply r;
    CHECK(rq(&r, 3, argv, argvlen));
  }
  run_for(300);
  CHECK_EQ_U64(stats_of(1).malformed, 7);
  CHECK_EQ_U64(stats_of(1).deliveries_received + stats_of(1).kicks_received, 0);
  CHECK(hubu_cluster_healthy(nodes[1].c, NULL, 0));
  tp_close(&a);
  tp_close(&b);
out:
  nodes_close();
}

static int node_healthy(void *arg) { return hubu_cluster_healthy(((node *)arg)->c, NULL, 0); }
static int node_unhealthy(void *arg) { return !hubu_cluster_healthy(((node *)arg)->c, NULL, 0); }

static void a_restart_under_the_same_id_cleans_its_predecessor_and_a_twin_is_unhealthy(void) {
  if (nodes_open(1, 1000) != 0) goto out;
  /* What a crashed process with node id 2 left: its lease (still live), a
   * presence entry, its user list. */
  const char *set[6] = {"SET", "hubu:node:{2}", "v1 00000000deadbeef 1 1 1 crashed", "PX", "900", ""};
  const char *hset[4] = {"HSET", "hubu:pr:{ghost}", "2:999", "phone"};
  const char *hset2[4] = {"HSET", "hubu:pr:{ghost}", "1:999", "laptop"}; /* node 1's (not written by it: kept) */
  const char *sadd[3] = {"SADD", "hubu:node:{2}:users", "ghost"};
  rq_reply r;
  CHECK(rq(&r, 5, set, NULL));
  CHECK(rq(&r, 4, hset, NULL));
  CHECK(rq(&r, 4, hset2, NULL));
  CHECK(rq(&r, 3, sadd, NULL));
  if (node_start(2, 1000) != 0) goto out;
  test_peer bob;
  tp_connect(&nodes[1].fx, &bob, "bob", "phone");
  CHECK(run_until(node_healthy, &nodes[1], 5000));
  run_for(300);
  CHECK(!presence_has("ghost", 2, 999, NULL, 0));
  CHECK(presence_has("ghost", 1, 999, NULL, 0));
  CHECK(presence_has("bob", 2, bob.peer.id, NULL, 0));
  CHECK(!set_has("hubu:node:{2}:users", "ghost"));
  CHECK(set_has("hubu:node:{2}:users", "bob"));
  CHECK_EQ_U64(stats_of(1).lease_lost + stats_of(1).lease_conflicts, 0); /* a predecessor, not a twin */

  /* A second live process under id 2: both see another incarnation in
   * their lease, say so, and keep writing their own presence. */
  if (node_start(2, 1000) != 0) goto closing;
  CHECK(run_until(node_unhealthy, &nodes[1], 4000));
  CHECK(run_until(node_unhealthy, &nodes[2], 4000));
  char why[256];
  hubu_cluster_healthy(nodes[1].c, why, sizeof why);
  CHECK_EQ_STR(why, "lease: node id 2 is used by another process");
  CHECK(stats_of(1).lease_conflicts >= 1);
  CHECK(stats_of(2).lease_conflicts >= 1);
  CHECK(hubu_cluster_healthy(nodes[0].c, NULL, 0));
  /* The twin goes: the first one is healthy again (3 leases later) and its
   * presence is written again. */
  hubu_cluster_close(nodes[2].c);
  CHECK(run_until(node_healthy, &nodes[1], 6000));
  CHECK(run_until(node_healthy, &nodes[0], 3000));
  run_for(1500);
  CHECK(presence_has("bob", 2, bob.peer.id, NULL, 0));
closing:
  tp_close(&bob);
out:
  nodes_close();
}

int main(int argc, char **argv) {
  static const core_case cases[] = {
      CORE_CASE(delivery_reaches_the_other_nodes_peers_once_in_their_modes),
      CORE_CASE(a_loop_turns_many_deliveries_go_in_several_script_calls_all_delivered),
      CORE_CASE(kick_and_invalidate_reach_the_other_nodes),
      CORE_CASE(presence_in_redis_follows_attach_and_detach),
      CORE_CASE(redis_kill9_and_empty_restart_then_presence_and_deliveries_come_back),
      CORE_CASE(redis_sigstop_makes_the_nodes_unhealthy_within_the_timeout),
      CORE_CASE(close_while_redis_is_stopped_is_bounded),
      CORE_CASE(a_node_without_lease_refresh_is_no_target_until_it_refreshes),
      CORE_CASE(describe_lists_the_nodes_and_malformed_bus_messages_are_dropped),
      CORE_CASE(a_restart_under_the_same_id_cleans_its_predecessor_and_a_twin_is_unhealthy),
  };
  signal(SIGPIPE, SIG_IGN);
  return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

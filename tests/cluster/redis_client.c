/* redis_client.c — the Redis client on the loop (runtime/cluster/redis.h)
 * against a real private redis-server: command timeouts while the server is
 * stopped (SIGSTOP) and recovery after SIGCONT, kill -9 and restart with the
 * health going down and up and the backoff bounding the reconnects, pub/sub
 * across two clients and again after a restart, scripts loaded after
 * NOSCRIPT, and a close that answers everything at once. Every command's
 * callback is counted: exactly one call each. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "redis_fixture.h"

#define MAX_CMDS 256

typedef struct {
  int calls;
  hubu_redis_status st;
  uint64_t sent_ms, answered_ms;
  long long integer;
  char str[64];
} cmd_result;

typedef struct {
  uv_loop_t *loop;
  cmd_result res[MAX_CMDS];
  int sent;
  int answered;
  int ups, downs;
} cmd_state;

static void cmd_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  cmd_result *res = ud;
  res->calls++;
  res->st = st;
  if (reply && reply->type == REDIS_REPLY_INTEGER) res->integer = reply->integer;
  if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements && reply->element[0]->type == REDIS_REPLY_INTEGER)
    res->integer = reply->element[0]->integer;
  if (reply && reply->str) snprintf(res->str, sizeof res->str, "%s", reply->str);
}

static cmd_state *g_state; /* the case's state, for the answer time */

static void timed_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  cmd_cb(r, st, reply, ud);
  uv_update_time(g_state->loop);
  ((cmd_result *)ud)->answered_ms = uv_now(g_state->loop);
  g_state->answered++;
}

static void health_cb(hubu_redis *r, const hubu_redis_health *h, void *ud) {
  (void)r;
  cmd_state *s = ud;
  if (h->up)
    s->ups++;
  else
    s->downs++;
}

/* Sends argv[0..argc) as command i of s. */
static int send_cmd(hubu_redis *r, cmd_state *s, uint32_t timeout_ms, int argc, const char **argv) {
  if (s->sent >= MAX_CMDS) return -1;
  cmd_result *res = &s->res[s->sent];
  memset(res, 0, sizeof *res);
  uv_update_time(s->loop);
  res->sent_ms = uv_now(s->loop);
  if (hubu_redis_command(r, timeout_ms, timed_cb, res, argc, argv, NULL) != 0) return -1;
  s->sent++;
  return 0;
}

static int all_answered(void *arg) {
  cmd_state *s = arg;
  return s->answered == s->sent;
}

static void check_exactly_once(cmd_state *s) {
  for (int i = 0; i < s->sent; i++) CHECK_EQ_U64(s->res[i].calls, 1);
}

/* SIGSTOP: every pending command fails with a timeout within its bound;
 * the connection is recycled and health goes down; after SIGCONT the client
 * is up again and commands work. */
static void command_timeouts_while_server_stopped_then_recovers(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(300, 300);
  cfg.backoff_max_ms = 400;
  cfg.ping_interval_ms = 60000; /* the commands' own timeouts are under test, not the health PING's */
  hubu_redis *r = hubu_redis_new(&loop, &cfg, health_cb, &s);
  CHECK(r != NULL);
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  const char *set[3] = {"SET", "k", "v"};
  CHECK(send_cmd(r, &s, 0, 3, set) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[0].st == HUBU_REDIS_OK);

  rfx_script("pause");
  int first = s.sent;
  const char *get[2] = {"GET", "k"};
  for (int i = 0; i < 40; i++) CHECK(send_cmd(r, &s, i % 2 ? 300 : 600, 2, get) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 3000));
  for (int i = first; i < s.sent; i++) {
    cmd_result *res = &s.res[i];
    CHECK(res->st == HUBU_REDIS_TIMEOUT);
    /* The first timeout (300 ms) recycles the connection: none waits past
     * its own bound (plus the loop's slack). */
    uint64_t bound = (i - first) % 2 ? 300 : 600;
    CHECK(res->answered_ms - res->sent_ms <= bound + 250);
    CHECK(res->answered_ms - res->sent_ms >= 250);
  }
  CHECK(!hubu_redis_is_up(r));
  hubu_redis_health h;
  hubu_redis_get_health(r, &h);
  CHECK(h.timeouts >= 1);
  CHECK(strstr(h.last_error, "timed out") != NULL);
  CHECK(s.downs >= 1);
  /* Still stopped: connects come through the kernel's backlog, but their
   * commands time out; the client keeps trying, never up. */
  rfx_run_for(&loop, 1200);
  CHECK(!hubu_redis_is_up(r));
  CHECK(send_cmd(r, &s, 0, 2, get) == -1); /* refused while down, no callback */
  hubu_redis_get_health(r, &h);
  CHECK(h.failures >= 2);

  rfx_script("resume");
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 8000));
  first = s.sent;
  CHECK(send_cmd(r, &s, 0, 2, get) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[first].st == HUBU_REDIS_OK);
  CHECK_EQ_STR(s.res[first].str, "v");
  CHECK(s.ups >= 2);
  check_exactly_once(&s);
  hubu_redis_close(r);
  rfx_loop_close(&loop);
}

/* kill -9: pending commands fail DOWN, health goes down with the reason,
 * reconnects back off (100 ms doubling to the maximum, not a busy loop);
 * after a restart the client is up again on its own and sees the new
 * server's replication id. */
static void kill9_and_restart_reconnect_with_health_down_then_up(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(2000, 3000);
  cfg.backoff_min_ms = 100;
  cfg.backoff_max_ms = 800;
  hubu_redis *r = hubu_redis_new(&loop, &cfg, health_cb, &s);
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  hubu_redis_health before;
  hubu_redis_get_health(r, &before);
  CHECK(before.replid[0] != '\0');
  CHECK(before.run_id[0] != '\0');
  CHECK_EQ_U64(before.connects, 1);

  /* A command the server blocks on (BLPOP 5 s) is pending when it dies. */
  const char *blpop[3] = {"BLPOP", "nothing", "5"};
  CHECK(send_cmd(r, &s, 6000, 3, blpop) == 0);
  rfx_run_for(&loop, 100);
  rfx_script("kill9");
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[0].st == HUBU_REDIS_DOWN);
  CHECK(rfx_run_until(&loop, rfx_is_down, r, 100));
  CHECK_EQ_U64(s.downs, 1);
  hubu_redis_health h;
  hubu_redis_get_health(r, &h);
  CHECK(h.last_error[0] != '\0');

  /* 2 s without a server: attempts at about 0.1, 0.3, 0.7, 1.5 s (then every
   * 0.8 s): a handful, not hundreds. */
  uint64_t failures0 = h.failures;
  rfx_run_for(&loop, 2000);
  hubu_redis_get_health(r, &h);
  CHECK(h.failures - failures0 >= 3);
  CHECK(h.failures - failures0 <= 7);
  CHECK(!hubu_redis_is_up(r));

  rfx_script("restart");
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  hubu_redis_get_health(r, &h);
  CHECK_EQ_U64(h.connects, 2);
  CHECK_EQ_U64(s.ups, 2);
  CHECK(strcmp(h.run_id, before.run_id) != 0);
  CHECK(strcmp(h.replid, before.replid) != 0);
  CHECK_EQ_U64(h.replid_changes, 1);
  int i = s.sent;
  const char *ping[1] = {"PING"};
  CHECK(send_cmd(r, &s, 0, 1, ping) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[i].st == HUBU_REDIS_OK);
  CHECK_EQ_STR(s.res[i].str, "PONG");
  check_exactly_once(&s);
  hubu_redis_close(r);
  rfx_loop_close(&loop);
}

/* ---- pub/sub ---- */

typedef struct {
  char got[64][32];
  int n;
} sub_state;

static void on_message(hubu_redis *r, const char *channel, size_t channel_len, const char *payload, size_t payload_len,
                       void *ud) {
  (void)r;
  sub_state *s = ud;
  if (s->n < 64)
    snprintf(s->got[s->n++], sizeof s->got[0], "%.*s=%.*s", (int)channel_len, channel, (int)payload_len, payload);
}

static int has_message(sub_state *s, const char *m) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->got[i], m) == 0) return 1;
  return 0;
}

typedef struct {
  hubu_redis *a, *b;
} two;

static int both_up(void *arg) {
  two *t = arg;
  return hubu_redis_is_up(t->a) && hubu_redis_is_up(t->b);
}

static int both_down(void *arg) {
  two *t = arg;
  return !hubu_redis_is_up(t->a) && !hubu_redis_is_up(t->b);
}

static int publish(uv_loop_t *loop, cmd_state *s, hubu_redis *pub, const char *ch, const char *msg) {
  const char *argv[3] = {"PUBLISH", ch, msg};
  int i = s->sent;
  if (send_cmd(pub, s, 0, 3, argv) != 0) return -1;
  if (!rfx_run_until(loop, all_answered, s, 5000) || s->res[i].st != HUBU_REDIS_OK) return -1;
  return (int)s->res[i].integer; /* receivers */
}

typedef struct {
  sub_state *s;
  int n;
} count_arg;

static int got_at_least(void *arg) {
  count_arg *c = arg;
  return c->s->n >= c->n;
}

static void pubsub_across_two_clients_and_resubscribe_after_restart(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  sub_state got = {0};
  hubu_redis_config cfg = rfx_config(2000, 3000);
  cfg.backoff_max_ms = 400;
  hubu_redis *sub = hubu_redis_subscriber_new(&loop, &cfg, on_message, NULL, &got);
  hubu_redis *pub = hubu_redis_new(&loop, &cfg, NULL, NULL);
  CHECK(hubu_redis_subscribe(sub, "hubu:node:1") == 0);
  CHECK(hubu_redis_subscribe(sub, "hubu:node:all") == 0);
  CHECK(hubu_redis_subscribe(sub, "hubu:node:1") == 0); /* once is enough */
  two t = {sub, pub};
  CHECK(rfx_run_until(&loop, both_up, &t, 5000));
  /* A subscriber takes no commands. */
  const char *ping[1] = {"PING"};
  CHECK(hubu_redis_command(sub, 0, cmd_cb, &s.res[0], 1, ping, NULL) == -1);

  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:node:1", "a"), 1);
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:node:all", "b"), 1);
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:node:2", "not-for-us"), 0);
  count_arg two_msgs = {&got, 2};
  CHECK(rfx_run_until(&loop, got_at_least, &two_msgs, 5000));
  CHECK(has_message(&got, "hubu:node:1=a"));
  CHECK(has_message(&got, "hubu:node:all=b"));

  /* A channel added while up. */
  CHECK(hubu_redis_subscribe(sub, "hubu:late") == 0);
  rfx_run_for(&loop, 200);
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:late", "c"), 1);

  /* Both connections die with the server; after the restart the
   * subscriber is up only once every channel is subscribed again. */
  rfx_script("kill9");
  CHECK(rfx_run_until(&loop, both_down, &t, 2000));
  rfx_script("restart");
  CHECK(rfx_run_until(&loop, both_up, &t, 8000));
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:node:1", "after"), 1);
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:late", "after"), 1);

  /* Dropped: no longer delivered. */
  CHECK(hubu_redis_unsubscribe(sub, "hubu:node:all") == 0);
  rfx_run_for(&loop, 200);
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:node:all", "dropped"), 0);
  count_arg five = {&got, 5};
  CHECK(rfx_run_until(&loop, got_at_least, &five, 5000));
  CHECK(has_message(&got, "hubu:late=c"));
  CHECK(has_message(&got, "hubu:node:1=after"));
  CHECK(has_message(&got, "hubu:late=after"));
  CHECK(!has_message(&got, "hubu:node:all=dropped"));
  CHECK(!has_message(&got, "hubu:node:2=not-for-us"));
  CHECK_EQ_U64(got.n, 5);
  check_exactly_once(&s);
  hubu_redis_close(sub);
  hubu_redis_close(pub);
  rfx_loop_close(&loop);
}

/* The subscriber's heartbeat through the publisher: while the server
 * answers, heartbeats come back and are not handed to on_message; a stopped
 * server shows on the subscriber too (it cannot PING); after SIGCONT it is
 * up and subscribed again. */
static void subscriber_heartbeat_notices_a_stopped_server(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  sub_state got = {0};
  hubu_redis_config cfg = rfx_config(300, 300);
  cfg.ping_interval_ms = 200;
  cfg.backoff_max_ms = 400;
  hubu_redis *sub = hubu_redis_subscriber_new(&loop, &cfg, on_message, NULL, &got);
  hubu_redis *pub = hubu_redis_new(&loop, &cfg, NULL, NULL);
  CHECK(hubu_redis_subscribe(sub, "hubu:node:7") == 0);
  CHECK(hubu_redis_subscriber_heartbeat(sub, pub, "hubu:hb:7") == 0);
  CHECK(hubu_redis_subscriber_heartbeat(pub, sub, "x") == -1); /* not a subscriber */
  two t = {sub, pub};
  CHECK(rfx_run_until(&loop, both_up, &t, 5000));
  rfx_run_for(&loop, 1000); /* about five heartbeats */
  CHECK(hubu_redis_is_up(sub));
  CHECK_EQ_U64(got.n, 0); /* not handed over */
  hubu_redis_health h;
  hubu_redis_get_health(sub, &h);
  CHECK_EQ_U64(h.connects, 1);

  rfx_script("pause");
  uv_update_time(&loop);
  uint64_t paused = uv_now(&loop);
  CHECK(rfx_run_until(&loop, rfx_is_down, sub, 4000));
  uv_update_time(&loop);
  CHECK(uv_now(&loop) - paused <= 200 + 300 + 200 + 1000); /* a tick, the deadline, the tick that judges it */
  hubu_redis_get_health(sub, &h);
  CHECK(strstr(h.last_error, "heartbeat") != NULL);
  rfx_script("resume");
  CHECK(rfx_run_until(&loop, both_up, &t, 8000));
  rfx_run_for(&loop, 600);
  CHECK(hubu_redis_is_up(sub)); /* heartbeats come back again */
  CHECK_EQ_U64(publish(&loop, &s, pub, "hubu:node:7", "after"), 1);
  count_arg one = {&got, 1};
  CHECK(rfx_run_until(&loop, got_at_least, &one, 5000));
  CHECK(has_message(&got, "hubu:node:7=after"));
  CHECK_EQ_U64(got.n, 1);
  hubu_redis_close(sub); /* before its publisher */
  hubu_redis_close(pub);
  rfx_loop_close(&loop);
}

/* ---- scripts ---- */

static void eval_loads_the_script_after_noscript(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(2000, 3000);
  hubu_redis *r = hubu_redis_new(&loop, &cfg, NULL, NULL);
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  static const char src[] = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
  hubu_redis_script script;
  hubu_redis_script_init(&script, src, sizeof src - 1);
  CHECK_EQ_U64(strlen(script.sha1), 40);
  const char *flush[2] = {"SCRIPT", "FLUSH"};
  CHECK(send_cmd(r, &s, 0, 2, flush) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  const char *exists[3] = {"SCRIPT", "EXISTS", script.sha1};
  CHECK(send_cmd(r, &s, 0, 3, exists) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK_EQ_U64(s.res[s.sent - 1].integer, 0); /* not loaded */

  /* The key and argument live on this stack frame only during the call. */
  for (int i = 0; i < 3; i++) {
    char key[32], arg[8];
    snprintf(key, sizeof key, "hubu:test:eval");
    snprintf(arg, sizeof arg, "%d", 10);
    const char *keys[1] = {key};
    const char *args[1] = {arg};
    cmd_result *res = &s.res[s.sent];
    memset(res, 0, sizeof *res);
    CHECK(hubu_redis_eval(r, &script, 0, timed_cb, res, 1, keys, NULL, 1, args, NULL) == 0);
    s.sent++;
    memset(key, 'x', sizeof key); /* gone as far as the client knows */
    memset(arg, 'x', sizeof arg);
  }
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  int last = s.sent - 1;
  CHECK(s.res[last].st == HUBU_REDIS_OK);
  CHECK_EQ_U64(s.res[last].integer, 30);
  const char *exists2[3] = {"SCRIPT", "EXISTS", script.sha1};
  CHECK(send_cmd(r, &s, 0, 3, exists2) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK_EQ_U64(s.res[s.sent - 1].integer, 1); /* loaded by the EVAL after NOSCRIPT */

  /* A script error is an error reply, once. */
  static const char bad[] = "return redis.call('NOSUCHCOMMAND')";
  hubu_redis_script bad_script;
  hubu_redis_script_init(&bad_script, bad, sizeof bad - 1);
  cmd_result *res = &s.res[s.sent];
  memset(res, 0, sizeof *res);
  CHECK(hubu_redis_eval(r, &bad_script, 0, timed_cb, res, 0, NULL, NULL, 0, NULL, NULL) == 0);
  s.sent++;
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(res->st == HUBU_REDIS_REPLY_ERROR);
  check_exactly_once(&s);
  const char *del[2] = {"DEL", "hubu:test:eval"};
  CHECK(send_cmd(r, &s, 0, 2, del) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  hubu_redis_close(r);
  rfx_loop_close(&loop);
}

/* ---- close ---- */

typedef struct {
  cmd_state *s;
  hubu_redis *r;
  int closed_in_cb;
} close_from_cb;

static void closing_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  close_from_cb *c = ud;
  (void)st;
  (void)reply;
  c->s->answered++;
  if (!c->closed_in_cb) {
    c->closed_in_cb = 1;
    hubu_redis_close(r);
  }
}

static void close_answers_pending_commands_and_then_nothing_more(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(1000, 2000);
  hubu_redis *r = hubu_redis_new(&loop, &cfg, health_cb, &s);
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  const char *ping[1] = {"PING"};
  for (int i = 0; i < 100; i++) CHECK(send_cmd(r, &s, 0, 1, ping) == 0);
  CHECK(hubu_redis_pending(r) >= 100 && hubu_redis_pending(r) <= 101); /* and maybe the health PING */
  hubu_redis_close(r);
  CHECK_EQ_U64(s.answered, 100);
  for (int i = 0; i < s.sent; i++) CHECK(s.res[i].st == HUBU_REDIS_CLOSED);
  int ups = s.ups, downs = s.downs;
  rfx_run_for(&loop, 300); /* the replies arrive at a closed client: nothing is called */
  check_exactly_once(&s);
  CHECK_EQ_U64(s.ups, ups);
  CHECK_EQ_U64(s.downs, downs);

  /* Closing from inside a reply callback: the other pending commands are
   * answered CLOSED at once, hiredis frees its context after the callback. */
  cmd_state s2 = {.loop = &loop};
  g_state = &s2;
  hubu_redis *r2 = hubu_redis_new(&loop, &cfg, NULL, NULL);
  CHECK(rfx_run_until(&loop, rfx_is_up, r2, 5000));
  close_from_cb c = {&s2, r2, 0};
  for (int i = 0; i < 10; i++) {
    CHECK(hubu_redis_command(r2, 0, closing_cb, &c, 1, ping, NULL) == 0);
    s2.sent++;
  }
  CHECK(rfx_run_until(&loop, all_answered, &s2, 5000));
  rfx_run_for(&loop, 100);
  CHECK_EQ_U64(s2.answered, 10);
  CHECK(c.closed_in_cb);
  rfx_loop_close(&loop);
}

/* ---- AUTH, SELECT, and closing from the health callback ---- */

static int error_has(void *arg) {
  hubu_redis_health h;
  hubu_redis_get_health(((void **)arg)[0], &h);
  return strstr(h.last_error, ((void **)arg)[1]) != NULL;
}

/* The connect's own commands: without the password the connect fails with
 * the server's NOAUTH and is retried; with a wrong one, WRONGPASS; with the
 * right one and a database number, keys land in that database. */
static void connect_authenticates_and_selects_the_database(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(2000, 3000);
  cfg.backoff_max_ms = 200;
  hubu_redis *admin = hubu_redis_new(&loop, &cfg, NULL, NULL);
  CHECK(rfx_run_until(&loop, rfx_is_up, admin, 5000));
  const char *auth_on[4] = {"CONFIG", "SET", "requirepass", "pw-for-tests"};
  CHECK(send_cmd(admin, &s, 0, 4, auth_on) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[0].st == HUBU_REDIS_OK);

  hubu_redis *none = hubu_redis_new(&loop, &cfg, NULL, NULL);
  void *noauth[2] = {none, "NOAUTH"};
  CHECK(rfx_run_until(&loop, error_has, noauth, 3000));
  hubu_redis_config wrong = cfg;
  snprintf(wrong.password, sizeof wrong.password, "not-it");
  hubu_redis *bad = hubu_redis_new(&loop, &wrong, NULL, NULL);
  void *wrongpass[2] = {bad, "WRONGPASS"};
  CHECK(rfx_run_until(&loop, error_has, wrongpass, 3000));
  hubu_redis_config right = cfg;
  snprintf(right.password, sizeof right.password, "pw-for-tests");
  right.db = 3;
  hubu_redis *good = hubu_redis_new(&loop, &right, NULL, NULL);
  CHECK(rfx_run_until(&loop, rfx_is_up, good, 3000));
  rfx_run_for(&loop, 500); /* the others keep failing, with backoff */
  CHECK(!hubu_redis_is_up(none));
  CHECK(!hubu_redis_is_up(bad));
  hubu_redis_health h;
  hubu_redis_get_health(none, &h);
  CHECK(h.failures >= 2);
  CHECK_EQ_U64(h.connects, 0);

  int i = s.sent;
  const char *set[3] = {"SET", "hubu:test:db", "three"};
  const char *dbsize[1] = {"DBSIZE"};
  CHECK(send_cmd(good, &s, 0, 3, set) == 0);
  CHECK(send_cmd(good, &s, 0, 1, dbsize) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[i].st == HUBU_REDIS_OK);
  CHECK_EQ_U64(s.res[i + 1].integer, 1);
  /* Database 0 (admin's connection, authenticated before requirepass) does
   * not have it. */
  const char *get[2] = {"GET", "hubu:test:db"};
  CHECK(send_cmd(admin, &s, 0, 2, get) == 0);
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  CHECK(s.res[i + 2].st == HUBU_REDIS_OK);
  CHECK_EQ_STR(s.res[i + 2].str, "");
  check_exactly_once(&s);
  hubu_redis_close(none);
  hubu_redis_close(bad);
  hubu_redis_close(good);
  hubu_redis_close(admin);
  rfx_loop_close(&loop);
}

typedef struct {
  hubu_redis *r;
  int downs;
  int answered;
  hubu_redis_status st[4];
} closer;

static void closer_health(hubu_redis *r, const hubu_redis_health *h, void *ud) {
  closer *c = ud;
  if (h->up) return;
  c->downs++;
  hubu_redis_close(r);
}

static void closer_cmd(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)reply;
  closer *c = ud;
  if (c->answered < 4) c->st[c->answered] = st;
  c->answered++;
}

/* The server dies with commands pending; the health callback closes the
 * client while hiredis is still tearing its context down. Each command is
 * answered once, nothing runs after the close, and the memory is freed
 * (ASan and valgrind check the last part). */
static void close_from_the_health_callback_when_the_server_dies(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  closer c = {0};
  hubu_redis_config cfg = rfx_config(500, 3000);
  c.r = hubu_redis_new(&loop, &cfg, closer_health, &c);
  CHECK(rfx_run_until(&loop, rfx_is_up, c.r, 5000));
  const char *blpop[3] = {"BLPOP", "nothing", "2"};
  for (int i = 0; i < 3; i++) CHECK(hubu_redis_command(c.r, 0, closer_cmd, &c, 3, blpop, NULL) == 0);
  rfx_run_for(&loop, 100);
  rfx_script("kill9");
  rfx_run_for(&loop, 500);
  CHECK_EQ_U64(c.downs, 1);
  CHECK_EQ_U64(c.answered, 3);
  for (int i = 0; i < 3; i++) CHECK(c.st[i] == HUBU_REDIS_DOWN);
  rfx_script("restart");
  rfx_run_for(&loop, 500); /* closed: no reconnect, no callback */
  CHECK_EQ_U64(c.downs, 1);
  CHECK_EQ_U64(c.answered, 3);
  rfx_loop_close(&loop);
}

/* The loop is late (a turn that takes longer than the timeout): the answer
 * that came in meanwhile wins over the timer that is due, and the
 * connection is not recycled. */
static void an_answer_waiting_in_the_socket_wins_over_a_late_timer(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(2000, 3000);
  hubu_redis *r = hubu_redis_new(&loop, &cfg, health_cb, &s);
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  const char *ping[1] = {"PING"};
  for (int i = 0; i < 5; i++) CHECK(send_cmd(r, &s, 200, 1, ping) == 0);
  uv_run(&loop, UV_RUN_NOWAIT); /* written */
  usleep(600 * 1000);           /* the loop is busy elsewhere for 600 ms */
  CHECK(rfx_run_until(&loop, all_answered, &s, 5000));
  for (int i = 0; i < s.sent; i++) CHECK(s.res[i].st == HUBU_REDIS_OK);
  hubu_redis_health h;
  hubu_redis_get_health(r, &h);
  CHECK_EQ_U64(h.timeouts, 0);
  CHECK_EQ_U64(h.connects, 1);
  CHECK(hubu_redis_is_up(r));
  check_exactly_once(&s);
  hubu_redis_close(r);
  rfx_loop_close(&loop);
}

/* No command under way: the health PING notices a stopped server (the
 * health goes down with a timeout) and the client is up again after
 * SIGCONT. */
static void idle_client_notices_a_stopped_server_by_its_ping(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  cmd_state s = {.loop = &loop};
  g_state = &s;
  hubu_redis_config cfg = rfx_config(300, 300);
  cfg.ping_interval_ms = 200;
  cfg.backoff_max_ms = 400;
  hubu_redis *r = hubu_redis_new(&loop, &cfg, health_cb, &s);
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 5000));
  rfx_run_for(&loop, 500); /* PINGs answered: still up */
  CHECK(hubu_redis_is_up(r));
  CHECK_EQ_U64(s.downs, 0);
  rfx_script("pause");
  uv_update_time(&loop);
  uint64_t paused = uv_now(&loop);
  CHECK(rfx_run_until(&loop, rfx_is_down, r, 3000));
  uv_update_time(&loop);
  CHECK(uv_now(&loop) - paused <= 200 + 300 + 1000); /* the next PING and its timeout, with slack */
  hubu_redis_health h;
  hubu_redis_get_health(r, &h);
  CHECK(strstr(h.last_error, "timed out") != NULL);
  CHECK_EQ_U64(s.downs, 1);
  rfx_script("resume");
  CHECK(rfx_run_until(&loop, rfx_is_up, r, 8000));
  CHECK_EQ_U64(s.ups, 2);
  hubu_redis_close(r);
  rfx_loop_close(&loop);
}

/* ---- config ---- */

static void config_url_is_parsed_and_host_names_refused(void) {
  hubu_redis_config cfg;
  char err[160];
  CHECK(hubu_redis_config_parse("redis://127.0.0.1:6380/2", &cfg, err, sizeof err) == 0);
  CHECK_EQ_STR(cfg.host, "127.0.0.1");
  CHECK_EQ_U64(cfg.port, 6380);
  CHECK_EQ_U64(cfg.db, 2);
  CHECK_EQ_U64(cfg.connect_timeout_ms, 2000);
  CHECK_EQ_U64(cfg.backoff_min_ms, 100);
  CHECK_EQ_U64(cfg.backoff_max_ms, 5000);
  CHECK(hubu_redis_config_parse("redis://:s3cret@[::1]", &cfg, err, sizeof err) == 0);
  CHECK_EQ_STR(cfg.host, "::1");
  CHECK_EQ_STR(cfg.password, "s3cret");
  CHECK_EQ_U64(cfg.port, 6379);
  CHECK(hubu_redis_config_parse("redis://localhost", &cfg, err, sizeof err) == 0);
  CHECK_EQ_STR(cfg.host, "127.0.0.1");
  CHECK(hubu_redis_config_parse("redis://redis.example:6379", &cfg, err, sizeof err) == -1);
  CHECK(strstr(err, "IP address") != NULL);
  CHECK(hubu_redis_config_parse("http://127.0.0.1", &cfg, err, sizeof err) == -1);
  CHECK(hubu_redis_config_parse("redis://127.0.0.1:0", &cfg, err, sizeof err) == -1);
  CHECK(hubu_redis_config_parse("redis://127.0.0.1:6379/x", &cfg, err, sizeof err) == -1);
  CHECK(hubu_redis_config_parse("redis://user:pw@127.0.0.1", &cfg, err, sizeof err) == 0);
  CHECK_EQ_STR(cfg.password, "pw");
  static const char info[] = "# Replication\r\nrole:master\r\nmaster_replid:abc123\r\nmaster_replid2:000\r\n";
  char v[48];
  CHECK(hubu_redis_info_field(info, sizeof info - 1, "master_replid", v, sizeof v) == 0);
  CHECK_EQ_STR(v, "abc123");
  CHECK(hubu_redis_info_field(info, sizeof info - 1, "run_id", v, sizeof v) == -1);
}

int main(int argc, char **argv) {
  static const redis_case cases[] = {
      REDIS_CASE(command_timeouts_while_server_stopped_then_recovers),
      REDIS_CASE(kill9_and_restart_reconnect_with_health_down_then_up),
      REDIS_CASE(pubsub_across_two_clients_and_resubscribe_after_restart),
      REDIS_CASE(eval_loads_the_script_after_noscript),
      REDIS_CASE(close_answers_pending_commands_and_then_nothing_more),
      REDIS_CASE(config_url_is_parsed_and_host_names_refused),
      REDIS_CASE(connect_authenticates_and_selects_the_database),
      REDIS_CASE(close_from_the_health_callback_when_the_server_dies),
      REDIS_CASE(an_answer_waiting_in_the_socket_wins_over_a_late_timer),
      REDIS_CASE(idle_client_notices_a_stopped_server_by_its_ping),
      REDIS_CASE(subscriber_heartbeat_notices_a_stopped_server),
  };
  return rfx_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

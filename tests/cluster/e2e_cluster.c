/* e2e_cluster.c — cluster mode over the wire: three hubud nodes started with
 * --cluster on one private MariaDB and a private redis-server of the test's
 * own (tests/cluster.cmake), spoken to with raw frames.
 *
 * - chat: users with devices on different nodes chat in direct sessions and
 *   in a group spread over all three; first one message at a time (every
 *   device must get every message pushed), then everyone at once (pushes
 *   may give way to PULLs when writers race, PUSH order never breaks); in
 *   the end every device holds exactly the store's messages, once each.
 * - bots, reloads, kicks and groups: the echo bot answers once per message
 *   cluster-wide, for a user on another node; a reload on one node leaves
 *   the others' traffic alone; a kick and group changes made through one
 *   node take effect on the others.
 * - Redis lost: SENDs answer UNAVAILABLE with retry_after_ms, PULLs are
 *   served from MariaDB, /healthz says degraded; back, seqs jump past
 *   everything before and the PULL of the hole finds it empty.
 * - a node stopped past its lease drops out of the others' view, and after
 *   SIGCONT it is back, with its connections served and nothing doubled. */
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin_http.h"
#include "msgtest.h"

#define N_NODES 3
#define LEASE_MS 1500

static char redis_url[256], redis_dir[512], redis_script[512];

typedef struct {
  mt_dir d;
  e2e_server node[N_NODES];
  int admin[N_NODES];
  char plugins[160];
} cluster;

static void redis_run(const char *what) {
  const char *argv[] = {redis_script, what, redis_dir, NULL};
  REQUIRE(mt_run(argv, 30000) == 0);
}

static int node_start(cluster *c, int n) {
  char id[16], lease[16];
  snprintf(id, sizeof id, "%d", n + 1);
  snprintf(lease, sizeof lease, "%d", LEASE_MS);
  int r =
      e2e_server_start(&c->node[n], "--store", c->d.store, "--log-level", "warn", "--cluster", redis_url, "--node-id",
                       id, "--cluster-lease-ms", lease, "--pull-settle-ms", "300", "--plugins", c->plugins, NULL);
  if (r == 0) c->admin[n] = admin_port_of(&c->node[n]);
  return r;
}

/* The store, Redis' address, an empty plugins folder (echo: the shipped echo
 * bot in it), then the nodes. Groups are made before with cluster_group. */
static void cluster_prepare(cluster *c, int echo) {
  const char *renv = getenv("HUBU_REDIS_ENV"), *rdir = getenv("HUBU_REDIS_DIR"), *rscript = getenv("HUBU_REDIS_SCRIPT");
  REQUIRE(renv && rdir && rscript && mt_store_is_mariadb());
  REQUIRE(mt_env_value(renv, "REDIS_URL", redis_url, sizeof redis_url) == 0);
  snprintf(redis_dir, sizeof redis_dir, "%s", rdir);
  snprintf(redis_script, sizeof redis_script, "%s", rscript);
  mt_dir_make(&c->d);
  snprintf(c->plugins, sizeof c->plugins, "%s/plugins", c->d.dir);
  REQUIRE(mkdir(c->plugins, 0700) == 0);
  if (echo) {
    char dst[256];
    snprintf(dst, sizeof dst, "%s/echo.lua", c->plugins);
    const char *argv[] = {"/bin/cp", HUBU_SOURCE_DIR "/plugins/echo.lua", dst, NULL};
    REQUIRE(mt_run(argv, 5000) == 0);
  }
}

static void cluster_start(cluster *c) {
  for (int n = 0; n < N_NODES; n++) REQUIRE(node_start(c, n) == 0);
  fprintf(stderr, "  nodes on tcp %d %d %d (admin %d %d %d), store %s, redis %s\n", c->node[0].port, c->node[1].port,
          c->node[2].port, c->admin[0], c->admin[1], c->admin[2], c->d.store, redis_url);
}

static void cluster_stop(cluster *c) {
  for (int n = 0; n < N_NODES; n++) CHECK_SERVER_STOPS_CLEANLY(&c->node[n]);
}

/* GET /v1/admin/cluster of a node, parsed; NULL (reported) when it fails. */
static json_t *cluster_view(const cluster *c, int n) {
  admin_reply r;
  if (ADMIN_GET(c->admin[n], "/v1/admin/cluster", &r) != 0) return NULL;
  json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
  CHECKF(j != NULL, "node %d: /v1/admin/cluster %d %s", n + 1, r.status, r.body ? r.body : "");
  admin_reply_free(&r);
  return j;
}

/* Whether node n's view lists node id (1-based) with a live lease. */
static int sees_node_live(const cluster *c, int n, int id) {
  json_t *j = cluster_view(c, n);
  if (!j) return 0;
  int live = 0;
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(j, "nodes"), i, e) {
    if (json_integer_value(json_object_get(e, "id")) == id &&
        json_integer_value(json_object_get(e, "lease_ms_left")) > 0)
      live = 1;
  }
  json_decref(j);
  return live;
}

static int wait_sees_node(const cluster *c, int n, int id, int want, int ms) {
  uint64_t end = e2e_now_ms() + (uint64_t)ms;
  do {
    if (sees_node_live(c, n, id) == want) return 1;
    e2e_sleep_ms(100);
  } while (e2e_now_ms() < end);
  return 0;
}

/* /healthz of node n: the status, and the body in text. */
static int healthz(const cluster *c, int n, char *text, size_t size) {
  admin_reply r;
  if (ADMIN_GET(c->admin[n], "/healthz", &r) != 0) return 0;
  snprintf(text, size, "%s", r.body ? r.body : "");
  int status = r.status;
  admin_reply_free(&r);
  return status;
}

/* ---- devices: non-blocking clients that hold what they get -------------------------------- */

#define MAX_SESS 4

typedef struct {
  char id[80];
  uint64_t *seqs, *msg_ids; /* held, by arrival */
  size_t n, cap;
  uint64_t last_pushed; /* on this connection */
} dsess;

typedef struct {
  const char *user;
  char name[32];
  int node;
  mt_nb c;
  int ready;
  dsess s[MAX_SESS];
  int n_s;
  uint64_t next_cid, acked, refused, push_disorder, push_dups, pushed, pulled, pull_out;
  int goaway; /* the GOAWAY code received (the server closes next), 0: none */
  Hubu__V1__Code last_code;
} device;

static dsess *dev_sess(device *d, const char *id) {
  for (int i = 0; i < d->n_s; i++)
    if (!strcmp(d->s[i].id, id)) return &d->s[i];
  return NULL;
}

static void dev_add_sess(device *d, const char *id) {
  if (dev_sess(d, id) || d->n_s == MAX_SESS) return;
  snprintf(d->s[d->n_s++].id, sizeof d->s[0].id, "%s", id);
}

static int held(const dsess *s, uint64_t seq) {
  for (size_t i = 0; i < s->n; i++)
    if (s->seqs[i] == seq) return 1;
  return 0;
}

enum { OWN, PUSHED, PULLED };

static void hold(device *d, dsess *s, uint64_t seq, uint64_t msg_id, int how) {
  if (held(s, seq)) {
    d->push_dups += how == PUSHED;
    return;
  }
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->seqs = realloc(s->seqs, s->cap * sizeof *s->seqs);
    s->msg_ids = realloc(s->msg_ids, s->cap * sizeof *s->msg_ids);
    REQUIRE(s->seqs && s->msg_ids);
  }
  s->seqs[s->n] = seq;
  s->msg_ids[s->n++] = msg_id;
  d->pushed += how == PUSHED;
  d->pulled += how == PULLED;
}

static void dev_connect(device *d, const cluster *c) {
  REQUIRE(mt_nb_connect(&d->c, c->node[d->node].port) == 0);
  REQUIRE(mt_nb_queue_hello(&d->c, d->user, d->name) == 0);
}

static void dev_frame(device *d, uint8_t type, const uint8_t *body, uint32_t len) {
  switch (type) {
    case HUBU_FRAME_HELLO_OK: d->ready = 1; break;
    case HUBU_FRAME_SEND_ACK: {
      Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, len, body);
      REQUIRE(a != NULL);
      d->last_code = a->code;
      if (a->code == HUBU__V1__CODE__OK) {
        d->acked++;
        dsess *s = dev_sess(d, a->session_id);
        if (s) hold(d, s, a->seq, a->msg_id, OWN);
      } else {
        d->refused++;
      }
      hubu__v1__send_ack__free_unpacked(a, NULL);
      break;
    }
    case HUBU_FRAME_PUSH: {
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, len, body);
      REQUIRE(p != NULL);
      for (size_t i = 0; i < p->n_messages; i++) {
        const Hubu__V1__Message *m = p->messages[i];
        dsess *s = dev_sess(d, m->session_id);
        if (!s) {
          e2e_fail(__FILE__, __LINE__, "%s/%s: PUSH of %s", d->user, d->name, m->session_id);
          continue;
        }
        if (m->seq <= s->last_pushed && d->push_disorder++ < 5)
          e2e_fail(__FILE__, __LINE__, "%s/%s: PUSH of %s seq %llu after seq %llu on one connection", d->user, d->name,
                   m->session_id, (unsigned long long)m->seq, (unsigned long long)s->last_pushed);
        if (m->seq > s->last_pushed) s->last_pushed = m->seq;
        hold(d, s, m->seq, m->msg_id, PUSHED);
        Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT, *curs[1] = {&cur};
        cur.session_id = m->session_id;
        cur.seq = m->seq;
        Hubu__V1__DeliverAck ack = HUBU__V1__DELIVER_ACK__INIT;
        ack.cursors = curs;
        ack.n_cursors = 1;
        mt_nb_queue(&d->c, HUBU_FRAME_DELIVER_ACK, &ack.base);
      }
      hubu__v1__push__free_unpacked(p, NULL);
      break;
    }
    case HUBU_FRAME_PULL_RESULT: {
      Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, len, body);
      REQUIRE(r != NULL);
      dsess *s = dev_sess(d, r->session_id);
      CHECKF(r->code == HUBU__V1__CODE__OK && s, "%s/%s: PULL_RESULT %s of %s", d->user, d->name,
             hubu_code_name(r->code), r->session_id);
      for (size_t i = 0; s && i < r->n_messages; i++) hold(d, s, r->messages[i]->seq, r->messages[i]->msg_id, PULLED);
      d->pull_out = 0;
      hubu__v1__pull_result__free_unpacked(r, NULL);
      break;
    }
    case HUBU_FRAME_PING: {
      Hubu__V1__Ping pong = HUBU__V1__PING__INIT;
      Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, len, body);
      pong.time_ms = p ? p->time_ms : 0;
      if (p) hubu__v1__ping__free_unpacked(p, NULL);
      mt_nb_queue(&d->c, HUBU_FRAME_PONG, &pong.base);
      break;
    }
    case HUBU_FRAME_PULL_HINT: break; /* the final PULLs fetch it */
    case HUBU_FRAME_GOAWAY: {
      Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, len, body);
      d->goaway = g ? (int)g->code : -1;
      if (g) hubu__v1__go_away__free_unpacked(g, NULL);
      break;
    }
    case HUBU_FRAME_ERROR: {
      Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, len, body);
      e2e_fail(__FILE__, __LINE__, "%s/%s: ERROR %s \"%s\"", d->user, d->name, e ? hubu_code_name(e->code) : "?",
               e && e->message ? e->message : "");
      if (e) hubu__v1__error__free_unpacked(e, NULL);
      break;
    }
    default: e2e_fail(__FILE__, __LINE__, "%s/%s: unexpected %s", d->user, d->name, hubu_frame_type_name(type));
  }
}

static void pump(device *devs, int n, int ms) {
  mt_nb *conns[32];
  REQUIRE(n <= 32);
  uint64_t end = e2e_now_ms() + (uint64_t)ms;
  do {
    for (int i = 0; i < n; i++) conns[i] = &devs[i].c;
    mt_nb_poll(conns, (size_t)n, 5);
    for (int i = 0; i < n; i++) {
      device *d = &devs[i];
      uint8_t type;
      const uint8_t *body;
      uint32_t len;
      size_t size;
      while (d->c.fd >= 0 && mt_nb_frame(&d->c, &type, &body, &len, &size)) {
        dev_frame(d, type, body, len);
        mt_nb_consume(&d->c, size);
      }
      CHECKF(!d->c.dead || d->goaway, "%s/%s: connection lost", d->user, d->name);
      if (d->c.dead) mt_nb_close(&d->c);
    }
  } while (e2e_now_ms() < end);
}

static void dev_send(device *d, const char *session, const char *body) {
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = ++d->next_cid;
  m.session_id = (char *)session;
  m.body.data = (uint8_t *)body;
  m.body.len = strlen(body);
  REQUIRE(mt_nb_queue(&d->c, HUBU_FRAME_SEND, &m.base) == 0);
}

/* Sends and pumps until its SEND_ACK; the ACK's code. */
static Hubu__V1__Code dev_send_wait(device *devs, int n, device *d, const char *session, const char *body) {
  uint64_t answered = d->acked + d->refused;
  dev_send(d, session, body);
  uint64_t end = e2e_now_ms() + 5000;
  while (d->acked + d->refused == answered && e2e_now_ms() < end) pump(devs, n, 1);
  CHECKF(d->acked + d->refused > answered, "%s/%s: no SEND_ACK within 5 s", d->user, d->name);
  return d->last_code;
}

/* PULLs what each device lacks of each of its sessions, page by page. */
static void pull_all(device *devs, int n) {
  for (int i = 0; i < n; i++) {
    device *d = &devs[i];
    for (int k = 0; k < d->n_s; k++) {
      for (int page = 0; page < 100; page++) {
        uint64_t before = d->s[k].n;
        Hubu__V1__PullRequest q = HUBU__V1__PULL_REQUEST__INIT;
        q.request_id = 1000 + (uint64_t)page;
        q.session_id = d->s[k].id;
        q.after_seq = 0;
        q.limit = 500;
        d->pull_out = 1;
        REQUIRE(mt_nb_queue(&d->c, HUBU_FRAME_PULL, &q.base) == 0);
        uint64_t end = e2e_now_ms() + 5000;
        while (d->pull_out && e2e_now_ms() < end) pump(devs, n, 1);
        CHECKF(!d->pull_out, "%s/%s: no PULL_RESULT for %s", d->user, d->name, d->s[k].id);
        if (d->s[k].n == before) break;
      }
    }
  }
}

typedef struct {
  uint64_t seq, msg_id;
} srow;

typedef struct {
  srow *v;
  size_t n, cap;
} srows;

static void take_srow(void *ctx, int n, const char *const *cols, const size_t *lens) {
  (void)lens;
  srows *r = ctx;
  if (n < 2) return;
  if (r->n == r->cap) {
    r->cap = r->cap ? 2 * r->cap : 256;
    r->v = realloc(r->v, r->cap * sizeof *r->v);
    REQUIRE(r->v != NULL);
  }
  r->v[r->n++] = (srow){strtoull(cols[0], NULL, 10), strtoull(cols[1], NULL, 10)};
}

/* Every device holds exactly the store's messages of each of its sessions. */
static uint64_t check_devices_hold_the_store(const cluster *c, device *devs, int n) {
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    device *d = &devs[i];
    for (int k = 0; k < d->n_s; k++) {
      dsess *s = &d->s[k];
      char sql[256];
      snprintf(sql, sizeof sql, "SELECT seq, msg_id FROM messages WHERE session_id = '%s' ORDER BY seq", s->id);
      srows rows = {0};
      CHECK(mt_store_select(&c->d, sql, take_srow, &rows) >= 0);
      uint64_t missing = 0, wrong = 0;
      for (size_t r = 0; r < rows.n; r++) {
        size_t j = 0;
        while (j < s->n && s->seqs[j] != rows.v[r].seq) j++;
        if (j == s->n)
          missing++;
        else if (s->msg_ids[j] != rows.v[r].msg_id)
          wrong++;
      }
      CHECKF(missing == 0 && wrong == 0 && s->n == rows.n,
             "%s/%s %s: holds %zu, the store %zu; missing %llu, other msg_id %llu", d->user, d->name, s->id, s->n,
             rows.n, (unsigned long long)missing, (unsigned long long)wrong);
      total += s->n;
      free(rows.v);
    }
  }
  return total;
}

static void devices_free(device *devs, int n) {
  for (int i = 0; i < n; i++) {
    mt_nb_close(&devs[i].c);
    for (int k = 0; k < devs[i].n_s; k++) free(devs[i].s[k].seqs), free(devs[i].s[k].msg_ids);
  }
}

/* ---- the cases ------------------------------------------------------------------------------ */

#define N_USERS 6

static void cluster_chat_direct_and_group_across_three_nodes(void) {
  static const char *const users[N_USERS] = {"u0", "u1", "u2", "u3", "u4", "u5"};
  cluster c;
  cluster_prepare(&c, 0);
  REQUIRE(mt_group_create(&c.d, "g:all", "u0", "u1", "u2", "u3", "u4", "u5", NULL) == 0);
  cluster_start(&c);
  device devs[2 * N_USERS];
  memset(devs, 0, sizeof devs);
  char direct[N_USERS][32];
  for (int u = 0; u < N_USERS; u++) { /* d:ui:u(i+1), the lower name first */
    const char *a = users[u], *b = users[(u + 1) % N_USERS];
    snprintf(direct[u], sizeof direct[u], "d:%s:%s", strcmp(a, b) < 0 ? a : b, strcmp(a, b) < 0 ? b : a);
  }
  for (int u = 0; u < N_USERS; u++)
    for (int k = 0; k < 2; k++) {
      device *d = &devs[2 * u + k];
      d->user = users[u];
      snprintf(d->name, sizeof d->name, "%s-%c", users[u], 'a' + k);
      d->node = (u + k) % N_NODES; /* a user's two devices on two nodes */
      d->c.fd = -1;
      dev_add_sess(d, "g:all");
      dev_add_sess(d, direct[u]);
      dev_add_sess(d, direct[(u + N_USERS - 1) % N_USERS]);
      dev_connect(d, &c);
    }
  int n = 2 * N_USERS;
  pump(devs, n, 300);
  for (int i = 0; i < n; i++) CHECKF(devs[i].ready, "%s: no HELLO_OK", devs[i].name);

  /* one at a time: every other device of the session gets it pushed, whichever node it is on */
  char body[64];
  for (int round = 0; round < 5; round++)
    for (int u = 0; u < N_USERS; u++) {
      device *d = &devs[2 * u + (round & 1)];
      snprintf(body, sizeof body, "g %s %d", d->name, round);
      CHECK_EQ(dev_send_wait(devs, n, d, "g:all", body), HUBU__V1__CODE__OK);
      snprintf(body, sizeof body, "d %s %d", d->name, round);
      CHECK_EQ(dev_send_wait(devs, n, d, direct[u], body), HUBU__V1__CODE__OK);
    }
  pump(devs, n, 500);
  uint64_t held_by_push = 0, pulled = 0;
  for (int i = 0; i < n; i++) held_by_push += devs[i].pushed, pulled += devs[i].pulled;
  uint64_t total = check_devices_hold_the_store(&c, devs, n);
  fprintf(stderr, "  one at a time: 60 messages, the 12 devices hold %llu (%llu pushed, the rest their own)\n",
          (unsigned long long)total, (unsigned long long)held_by_push);
  CHECK_EQ(pulled, 0);

  /* everyone at once: 6 writers per session on three nodes */
  for (int burst = 0; burst < 40; burst++)
    for (int u = 0; u < N_USERS; u++) {
      device *d = &devs[2 * u + (burst & 1)];
      snprintf(body, sizeof body, "G %s %d", d->name, burst);
      dev_send(d, "g:all", body);
      if (burst % 4 == 0) {
        snprintf(body, sizeof body, "D %s %d", d->name, burst);
        dev_send(d, direct[u], body);
      }
    }
  uint64_t want_acks = 60 + 6 * 40 + 6 * 10, got = 0;
  uint64_t end = e2e_now_ms() + 15000;
  do {
    pump(devs, n, 20);
    got = 0;
    for (int i = 0; i < n; i++) got += devs[i].acked + devs[i].refused;
  } while (got < want_acks && e2e_now_ms() < end);
  uint64_t refused = 0;
  for (int i = 0; i < n; i++) refused += devs[i].refused;
  CHECK_EQ(got, want_acks);
  CHECK_EQ(refused, 0);
  pump(devs, n, 800); /* the last pushes; holes settle (--pull-settle-ms 300) */
  uint64_t pushed_before = 0;
  for (int i = 0; i < n; i++) pushed_before += devs[i].pushed;
  pull_all(devs, n);
  uint64_t disorder = 0, dups = 0, pulled_after = 0;
  for (int i = 0; i < n; i++)
    disorder += devs[i].push_disorder, dups += devs[i].push_dups, pulled_after += devs[i].pulled;
  total = check_devices_hold_the_store(&c, devs, n);
  fprintf(stderr,
          "  all at once: %llu ACKs; the devices hold %llu messages, %llu pushed, %llu fetched by PULL; %llu repeated "
          "pushes dropped\n",
          (unsigned long long)got, (unsigned long long)total, (unsigned long long)pushed_before,
          (unsigned long long)pulled_after, (unsigned long long)dups);
  CHECK_EQ(disorder, 0);
  devices_free(devs, n);
  cluster_stop(&c);
}

/* A device of its own, connected with HELLO_OK. */
static void solo(device *d, const cluster *c, const char *user, const char *name, int node) {
  memset(d, 0, sizeof *d);
  d->user = user;
  snprintf(d->name, sizeof d->name, "%s", name);
  d->node = node;
  d->c.fd = -1;
  dev_connect(d, c);
  pump(d, 1, 1);
  uint64_t end = e2e_now_ms() + 3000;
  while (!d->ready && e2e_now_ms() < end) pump(d, 1, 5);
  REQUIRE(d->ready);
}

static long long count_rows(const cluster *c, const char *where) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM messages WHERE %s", where);
  return mt_store_count(&c->d, sql);
}

static void cluster_bot_reload_kick_and_groups_across_nodes(void) {
  cluster c;
  cluster_prepare(&c, 1);
  REQUIRE(mt_group_create(&c.d, "g:team", "alice", NULL) == 0);
  cluster_start(&c);
  device devs[5];
  device *a1 = &devs[0], *a3 = &devs[1], *b2 = &devs[2], *c3 = &devs[3], *b1 = &devs[4];
  solo(a1, &c, "alice", "a1", 0);
  solo(a3, &c, "alice", "a3", 2);
  solo(b2, &c, "bob", "b2", 1);
  solo(c3, &c, "carol", "c3", 2);
  solo(b1, &c, "bob", "b1", 0);
  for (int i = 0; i < 5; i++) {
    dev_add_sess(&devs[i], "d:alice:echo-bot");
    dev_add_sess(&devs[i], "d:bob:carol");
    dev_add_sess(&devs[i], "g:team");
  }
  int n = 5;
  pump(devs, n, 200);

  /* the bot, loaded on every node, answers once: on the node that stored the message */
  CHECK_EQ(dev_send_wait(devs, n, a1, "d:alice:echo-bot", "hello bot"), HUBU__V1__CODE__OK);
  uint64_t end = e2e_now_ms() + 3000;
  while (dev_sess(a3, "d:alice:echo-bot")->n < 2 && e2e_now_ms() < end) pump(devs, n, 10);
  pump(devs, n, 500);
  CHECKF(dev_sess(a3, "d:alice:echo-bot")->n == 2, "alice on node 3 holds %zu of alice's message and the reply",
         dev_sess(a3, "d:alice:echo-bot")->n);
  CHECKF(dev_sess(a1, "d:alice:echo-bot")->n == 2, "alice on node 1 holds %zu", dev_sess(a1, "d:alice:echo-bot")->n);
  CHECK_EQ(count_rows(&c, "session_id = 'd:alice:echo-bot' AND sender = 'echo-bot'"), 1);

  /* a reload on node 2 while bob (node 2) and carol (node 3) talk: nothing refused, everything pushed */
  admin_reply r;
  for (int i = 0; i < 40; i++) {
    if (i == 10) {
      REQUIRE(ADMIN_POST(c.admin[1], "/v1/admin/reload", &r) == 0);
      CHECKF(r.status == 200, "reload on node 2: %d %s", r.status, r.body ? r.body : "");
      admin_reply_free(&r);
    }
    char body[32];
    snprintf(body, sizeof body, "bc %d", i);
    CHECK_EQ(dev_send_wait(devs, n, (i & 1) ? c3 : b2, "d:bob:carol", body), HUBU__V1__CODE__OK);
  }
  pump(devs, n, 500);
  CHECK_EQ(dev_sess(b1, "d:bob:carol")->n, 40); /* bob's other device, on node 1 */
  CHECK_EQ(dev_sess(c3, "d:bob:carol")->n, 40);
  CHECK_EQ(dev_sess(b2, "d:bob:carol")->n, 40);

  /* a group change through node 1 holds on node 2 at once, both ways */
  CHECK_EQ(dev_send_wait(devs, n, b2, "g:team", "may I?"), HUBU__V1__CODE__FORBIDDEN);
  REQUIRE(ADMIN_POST(c.admin[0], "/v1/admin/group?op=add&group=g:team&users=bob", &r) == 0);
  CHECKF(r.status == 200, "group add: %d %s", r.status, r.body ? r.body : "");
  admin_reply_free(&r);
  Hubu__V1__Code code = HUBU__V1__CODE__FORBIDDEN;
  end = e2e_now_ms() + 2000;
  while (code != HUBU__V1__CODE__OK && e2e_now_ms() < end) {
    code = dev_send_wait(devs, n, b2, "g:team", "joined");
    if (code != HUBU__V1__CODE__OK) pump(devs, n, 50);
  }
  CHECKF(code == HUBU__V1__CODE__OK, "bob on node 2 still may not send to g:team 2 s after he was added on node 1");
  REQUIRE(ADMIN_POST(c.admin[2], "/v1/admin/group?op=remove&group=g:team&users=bob", &r) == 0);
  CHECKF(r.status == 200, "group remove: %d %s", r.status, r.body ? r.body : "");
  admin_reply_free(&r);
  end = e2e_now_ms() + 2000;
  while (code == HUBU__V1__CODE__OK && e2e_now_ms() < end) {
    pump(devs, n, 50);
    code = dev_send_wait(devs, n, b2, "g:team", "still here?");
  }
  CHECKF(code == HUBU__V1__CODE__FORBIDDEN, "bob on node 2 may still send to g:team 2 s after his removal on node 3");

  /* a kick through node 1 reaches carol on node 3 */
  REQUIRE(ADMIN_POST(c.admin[0], "/v1/admin/kick?user=carol", &r) == 0);
  CHECKF(r.status == 200, "kick: %d %s", r.status, r.body ? r.body : "");
  admin_reply_free(&r);
  int kicked = 0;
  end = e2e_now_ms() + 3000;
  mt_nb *cc = &c3->c;
  while (!kicked && e2e_now_ms() < end) {
    mt_nb_poll(&cc, 1, 20);
    uint8_t type;
    const uint8_t *body;
    uint32_t len;
    size_t size;
    while (!kicked && mt_nb_frame(cc, &type, &body, &len, &size)) {
      if (type == HUBU_FRAME_GOAWAY) {
        Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, len, body);
        kicked = g && g->code == HUBU__V1__CODE__KICKED;
        if (g) hubu__v1__go_away__free_unpacked(g, NULL);
      }
      mt_nb_consume(cc, size);
    }
    if (cc->dead) break;
  }
  CHECKF(kicked, "carol on node 3 got no GOAWAY KICKED after a kick through node 1");
  mt_nb_close(cc);
  devices_free(devs, n);
  cluster_stop(&c);
}

static void cluster_redis_lost_unavailable_pull_served_then_seqs_jump(void) {
  cluster c;
  cluster_prepare(&c, 0);
  cluster_start(&c);
  device devs[2];
  device *a = &devs[0], *b = &devs[1];
  solo(a, &c, "alice", "a1", 0);
  solo(b, &c, "bob", "b2", 1);
  dev_add_sess(a, "d:alice:bob");
  dev_add_sess(b, "d:alice:bob");
  for (int i = 0; i < 5; i++) CHECK_EQ(dev_send_wait(devs, 2, a, "d:alice:bob", "before"), HUBU__V1__CODE__OK);
  pump(devs, 2, 300);
  CHECK_EQ(dev_sess(b, "d:alice:bob")->n, 5);

  redis_run("kill9");
  char text[256];
  int degraded = 0;
  uint64_t end = e2e_now_ms() + 5000;
  while (!degraded && e2e_now_ms() < end) {
    degraded = 1;
    for (int n = 0; n < N_NODES; n++) degraded &= healthz(&c, n, text, sizeof text) == 503;
    if (!degraded) e2e_sleep_ms(100);
  }
  CHECKF(degraded, "not every node said 503 within 5 s of losing Redis (last: %s)", text);
  CHECKF(strstr(text, "degraded: cluster:") != NULL, "healthz: %s", text);
  /* a SEND needs a seq: UNAVAILABLE with a retry time; the connection stays */
  Hubu__V1__SendAck *ack = NULL;
  {
    int fd = MT_HELLO(c.node[0].port, "alice", "a-raw", NULL);
    REQUIRE(fd >= 0);
    mt_skip_pushes = 1;
    ack = MT_SEND_ACK(fd, 1, "d:alice:bob", "while Redis is away");
    REQUIRE(ack != NULL);
    CHECK_EQ(ack->code, HUBU__V1__CODE__UNAVAILABLE);
    CHECK(ack->retry_after_ms > 0);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
    /* PULL is served from MariaDB */
    Hubu__V1__PullResult *pr = MT_PULL(fd, 7, "d:alice:bob", 0, 100);
    REQUIRE(pr != NULL);
    CHECK_EQ(pr->code, HUBU__V1__CODE__OK);
    CHECK_EQ(pr->n_messages, 5);
    CHECK_EQ(pr->max_seq, 5);
    hubu__v1__pull_result__free_unpacked(pr, NULL);
    mt_skip_pushes = 0;
    close(fd);
  }

  redis_run("restart");
  int healthy = 0;
  end = e2e_now_ms() + 8000;
  while (!healthy && e2e_now_ms() < end) {
    healthy = 1;
    for (int n = 0; n < N_NODES; n++) healthy &= healthz(&c, n, text, sizeof text) == 200;
    if (!healthy) e2e_sleep_ms(100);
  }
  CHECKF(healthy, "not every node said ok within 8 s of Redis' return (last: %s)", text);
  pump(devs, 2, 300); /* the nodes write their presence again */
  CHECK_EQ(dev_send_wait(devs, 2, a, "d:alice:bob", "after"), HUBU__V1__CODE__OK);
  dsess *s = dev_sess(a, "d:alice:bob");
  uint64_t jumped = s->n ? s->seqs[s->n - 1] : 0;
  fprintf(stderr, "  the first seq after Redis came back empty: %llu\n", (unsigned long long)jumped);
  CHECKF(jumped > 6, "seq %llu after the loss: no jump past the lease", (unsigned long long)jumped);
  end = e2e_now_ms() + 3000;
  while (dev_sess(b, "d:alice:bob")->n < 6 && e2e_now_ms() < end) pump(devs, 2, 10);
  CHECKF(dev_sess(b, "d:alice:bob")->n == 6, "bob on node 2 got %zu of 6 (presence written again after Redis' return?)",
         dev_sess(b, "d:alice:bob")->n);
  /* the hole: proven empty once settled */
  e2e_sleep_ms(400);
  int fd = MT_HELLO(c.node[2].port, "bob", "b-raw", NULL);
  REQUIRE(fd >= 0);
  mt_skip_pushes = 1;
  Hubu__V1__PullResult *pr = MT_PULL(fd, 8, "d:alice:bob", 5, 100);
  REQUIRE(pr != NULL);
  CHECK_EQ(pr->code, HUBU__V1__CODE__OK);
  CHECK_EQ(pr->n_messages, 1);
  if (pr->n_messages) CHECK_EQ(pr->messages[0]->seq, jumped);
  CHECK_EQ(pr->max_seq, jumped);
  hubu__v1__pull_result__free_unpacked(pr, NULL);
  mt_skip_pushes = 0;
  close(fd);
  devices_free(devs, 2);
  cluster_stop(&c);
}

static void cluster_node_stopped_past_its_lease_leaves_and_comes_back(void) {
  cluster c;
  cluster_prepare(&c, 0);
  cluster_start(&c);
  for (int id = 1; id <= N_NODES; id++) CHECKF(wait_sees_node(&c, 0, id, 1, 3000), "node 1 does not see node %d", id);
  device devs[2];
  device *a = &devs[0], *b = &devs[1];
  solo(a, &c, "alice", "a1", 0);
  solo(b, &c, "bob", "b3", 2);
  dev_add_sess(a, "d:alice:bob");
  dev_add_sess(b, "d:alice:bob");
  CHECK_EQ(dev_send_wait(devs, 2, a, "d:alice:bob", "one"), HUBU__V1__CODE__OK);
  pump(devs, 2, 300);
  CHECK_EQ(dev_sess(b, "d:alice:bob")->n, 1);

  e2e_server_signal(&c.node[2], SIGSTOP);
  CHECKF(wait_sees_node(&c, 0, 3, 0, LEASE_MS + 2000), "node 1 still sees node 3 live %d ms after SIGSTOP",
         LEASE_MS + 2000);
  CHECK_EQ(dev_send_wait(devs, 2, a, "d:alice:bob", "two, while node 3 is stopped"), HUBU__V1__CODE__OK);
  char out[4096], err[1024], addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", c.admin[0]);
  int st = admin_hubuctl(out, sizeof out, err, sizeof err, "cluster", "--admin", addr, NULL);
  CHECKF(st == 0 && strstr(out, "\"nodes\""), "hubuctl cluster: %d %s %s", st, out, err);
  fprintf(stderr, "  hubuctl cluster while node 3 is stopped:\n%s\n", out);
  e2e_server_signal(&c.node[2], SIGCONT);
  CHECKF(wait_sees_node(&c, 0, 3, 1, 5000), "node 1 does not see node 3 again 5 s after SIGCONT");
  pump(devs, 2, 300);
  CHECK_EQ(dev_send_wait(devs, 2, a, "d:alice:bob", "three"), HUBU__V1__CODE__OK);
  uint64_t end = e2e_now_ms() + 3000;
  while (dev_sess(b, "d:alice:bob")->last_pushed < 3 && e2e_now_ms() < end) pump(devs, 2, 10);
  CHECKF(b->c.fd >= 0 && dev_sess(b, "d:alice:bob")->last_pushed >= 3,
         "bob on node 3 got no push of seq 3 after SIGCONT (last pushed %llu)",
         (unsigned long long)dev_sess(b, "d:alice:bob")->last_pushed);
  pull_all(devs, 2);
  check_devices_hold_the_store(&c, devs, 2);
  CHECK_EQ(b->push_dups + b->push_disorder, 0);
  devices_free(devs, 2);
  cluster_stop(&c);
}

#ifdef HUBU_VALGRIND_PATH
/* Node 1 under valgrind through a cluster node's paths: deliveries out and in
 * on the bus, the bot on message.stored, a kick and a group change sent to
 * the other nodes, Redis lost and back (reconnects, the presence rewrite, a
 * seq lease), /v1/admin/cluster, and the drain that leaves the cluster: no
 * memory error, no definite leak, exit 0. */
static void cluster_node_under_valgrind_has_no_memory_errors_or_leaks(void) {
  static const char *const wrapper[] = {HUBU_VALGRIND_PATH, "--leak-check=full", "--errors-for-leak-kinds=definite",
                                        "--error-exitcode=99", NULL};
  cluster c;
  cluster_prepare(&c, 1);
  e2e_server_wrapper = wrapper;
  e2e_server_start_ms = 30000;
  e2e_server_stop_ms = 30000;
  REQUIRE(node_start(&c, 0) == 0);
  e2e_server_wrapper = NULL;
  REQUIRE(node_start(&c, 1) == 0);
  REQUIRE(node_start(&c, 2) == 0);
  device devs[3];
  device *a = &devs[0], *b = &devs[1], *a2 = &devs[2];
  solo(a, &c, "alice", "a1", 0);
  solo(b, &c, "bob", "b2", 1);
  solo(a2, &c, "alice", "a3", 2);
  for (int i = 0; i < 3; i++) {
    dev_add_sess(&devs[i], "d:alice:bob");
    dev_add_sess(&devs[i], "d:alice:echo-bot");
    dev_add_sess(&devs[i], "g:vg");
  }
  pump(devs, 3, 500);
  CHECK_EQ(dev_send_wait(devs, 3, a, "d:alice:bob", "out through the bus"), HUBU__V1__CODE__OK);
  CHECK_EQ(dev_send_wait(devs, 3, b, "d:alice:bob", "in through the bus"), HUBU__V1__CODE__OK);
  CHECK_EQ(dev_send_wait(devs, 3, a, "d:alice:echo-bot", "echo me"), HUBU__V1__CODE__OK);
  uint64_t end = e2e_now_ms() + 10000;
  while ((dev_sess(a, "d:alice:bob")->n < 2 || dev_sess(a2, "d:alice:echo-bot")->n < 2) && e2e_now_ms() < end)
    pump(devs, 3, 20);
  CHECK_EQ(dev_sess(a, "d:alice:bob")->n, 2);
  CHECK_EQ(dev_sess(a2, "d:alice:echo-bot")->n, 2);
  admin_reply r;
  REQUIRE(ADMIN_POST(c.admin[0], "/v1/admin/group?op=create&group=g:vg&users=alice,bob", &r) == 0);
  CHECKF(r.status == 200, "group create: %d %s", r.status, r.body ? r.body : "");
  admin_reply_free(&r);
  CHECK_EQ(dev_send_wait(devs, 3, b, "g:vg", "into the group"), HUBU__V1__CODE__OK);
  redis_run("kill9");
  pump(devs, 3, 500);
  redis_run("restart");
  char text[256];
  end = e2e_now_ms() + 15000;
  while (healthz(&c, 0, text, sizeof text) != 200 && e2e_now_ms() < end) e2e_sleep_ms(200);
  CHECKF(healthz(&c, 0, text, sizeof text) == 200, "node 1 under valgrind: %s", text);
  pump(devs, 3, 500);
  CHECK_EQ(dev_send_wait(devs, 3, a, "d:alice:bob", "after Redis came back"), HUBU__V1__CODE__OK);
  json_t *view = cluster_view(&c, 0);
  CHECK(view != NULL);
  json_decref(view);
  REQUIRE(ADMIN_POST(c.admin[0], "/v1/admin/kick?user=bob", &r) == 0);
  admin_reply_free(&r);
  end = e2e_now_ms() + 5000;
  while (!b->goaway && e2e_now_ms() < end) pump(devs, 3, 20);
  CHECK_EQ(b->goaway, HUBU__V1__CODE__KICKED); /* bob is on node 2: the kick went over the bus */
  devices_free(devs, 3);
  int st = e2e_server_stop(&c.node[0]);
  CHECKF(st == 0, "node 1 under valgrind exited with %d (99: memory errors or definite leaks; see the log above)", st);
  CHECK_SERVER_STOPS_CLEANLY(&c.node[1]);
  CHECK_SERVER_STOPS_CLEANLY(&c.node[2]);
}
#endif

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(cluster_chat_direct_and_group_across_three_nodes),
      E2E_CASE(cluster_bot_reload_kick_and_groups_across_nodes),
      E2E_CASE(cluster_redis_lost_unavailable_pull_served_then_seqs_jump),
      E2E_CASE(cluster_node_stopped_past_its_lease_leaves_and_comes_back),
#ifdef HUBU_VALGRIND_PATH
      E2E_CASE(cluster_node_under_valgrind_has_no_memory_errors_or_leaks),
#endif
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof *cases);
}

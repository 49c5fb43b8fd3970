/* cluster.c — cluster mode's node (cluster.h): its lease in Redis and the
 * cached view of every node, the presence directory that wraps core's local
 * one and mirrors it into Redis, and the node bus over pub/sub.
 *
 * Invariants: every Redis command is fire and forget or answered by a
 * callback that checks c->closed before it touches core; presence commands
 * go on one connection, so Redis applies them in the order this node made
 * them; the whole local presence is written again (after deleting what this
 * node id left, and only once that is answered) whenever Redis may have lost
 * any of it: the first registration, a lease found missing or another
 * process's, a reconnect, or a presence command that failed. */
#include "cluster.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uthash.h>

#include "bus.h"
#include "clock.h"
#include "core.h"
#include "directory.h"
#include "json.h"
#include "log.h"
#include "msg.h"
#include "peer.h"
#include "prom.h"
#include "redis.h"
#include "redis_seq.h"
#include "session_id.h"
#include "store_lease.h"
#include "wire.h"

#define BUS_VERSION 1
#define BUS_DELIVERY 'D'
#define BUS_KICK 'K'
#define BUS_INVALIDATE 'I'
#define BUS_HEADER 6            /* version, kind, sender node (u32, big-endian) */
#define BROADCAST_OVER_USERS 64 /* deliver() to more users goes to every live node */
#define BUS_MAX_USERS 1000000   /* a delivery naming more is malformed */
#define MAX_PENDING 100000      /* presence commands are dropped (and rewritten later) past this */
#define REWRITE_BATCH 256       /* connections per command of a rewrite */
#define BATCH_MAX_ARGS 1000     /* keys and arguments of one delivery script call (the client takes 1,024) */
#define CONFLICT_UNHEALTHY_MS(c) (3 * (uint64_t)(c)->lease_ms)

/* ---- scripts ---- */

/* One loop turn's deliveries, in one call. ARGV[1] is this node, ARGV[2]
 * the number of messages, then per message the number of its users and its
 * bus payload; KEYS are the users' presence hashes, message after message.
 * For each message, the nodes other than ARGV[1] (with a live lease) that
 * hold any of its users get its payload once. Entries of nodes without a
 * lease are deleted, and the user leaves such a node's user set. Returns
 * how many deliveries it published. */
static const char target_lua[] =
    "local self, live, out, k = ARGV[1], {}, 0, 1\n"
    "for m = 1, tonumber(ARGV[2]) do\n"
    "  local nkeys, payload, sent = tonumber(ARGV[1 + 2 * m]), ARGV[2 + 2 * m], {}\n"
    "  for j = k, k + nkeys - 1 do\n"
    "    local key, gone = KEYS[j], {}\n"
    "    for _, f in ipairs(redis.call('HKEYS', key)) do\n"
    "      local node = string.match(f, '^(%d+):')\n"
    "      if node and node ~= self and not sent[node] then\n"
    "        local alive = live[node]\n"
    "        if alive == nil then\n"
    "          alive = redis.call('EXISTS', 'hubu:node:{' .. node .. '}') == 1\n"
    "          live[node] = alive\n"
    "        end\n"
    "        if alive then\n"
    "          sent[node] = true\n"
    "          redis.call('PUBLISH', 'hubu:bus:' .. node, payload)\n"
    "          out = out + 1\n"
    "        else\n"
    "          redis.call('HDEL', key, f)\n"
    "          gone[node] = true\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    local user = string.match(key, '^hubu:pr:{(.*)}$')\n"
    "    for node in pairs(gone) do\n"
    "      if user then redis.call('SREM', 'hubu:node:{' .. node .. '}:users', user) end\n"
    "    end\n"
    "  end\n"
    "  k = k + nkeys\n"
    "end\n"
    "return out\n";

/* Deletes every presence entry of node ARGV[1] (fields "ARGV[1]:...") of
 * the users listed in KEYS[1], and the list. Returns how many. */
static const char cleanup_lua[] =
    "local prefix = ARGV[1] .. ':'\n"
    "local n = 0\n"
    "for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local key = 'hubu:pr:{' .. u .. '}'\n"
    "  for _, f in ipairs(redis.call('HKEYS', key)) do\n"
    "    if string.sub(f, 1, #prefix) == prefix then\n"
    "      redis.call('HDEL', key, f)\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";

/* The rewrite's writes, in batches: ARGV[1] is the node's user set, then
 * (user, field, device) triplets. */
static const char write_lua[] =
    "for i = 2, #ARGV, 3 do\n"
    "  redis.call('HSET', 'hubu:pr:{' .. ARGV[i] .. '}', ARGV[i + 1], ARGV[i + 2])\n"
    "  redis.call('SADD', ARGV[1], ARGV[i])\n"
    "end\n"
    "return (#ARGV - 1) / 3\n";

/* Every registered node (KEYS[1], the set) with a lease: id, PTTL, value;
 * those without one leave the set. */
static const char view_lua[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local key = 'hubu:node:{' .. id .. '}'\n"
    "  local v = redis.call('GET', key)\n"
    "  if v then\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = redis.call('PTTL', key)\n"
    "    out[#out + 1] = v\n"
    "  else\n"
    "    redis.call('SREM', KEYS[1], id)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ---- state ---- */

/* A peer listed in the directory, by conn_id. */
typedef struct conn_entry {
  UT_hash_handle hh;
  uint64_t id;
  hubu_peer *peer; /* not owned; listed until detach */
} conn_entry;

/* The directory core sees: the local one, mirrored into Redis. Owned by
 * core once started (freed through ops->free); outlives the cluster when
 * core is freed last. */
typedef struct cluster_dir {
  hubu_directory base;
  hubu_directory *local; /* owned */
  hubu_cluster *c;       /* NULL once the cluster closed */
  conn_entry *conns;     /* uthash, owned entries */
} cluster_dir;

/* A node of the last refresh. */
typedef struct {
  uint32_t id;
  int64_t pttl;     /* the lease's PTTL when read (-1: no expiry) */
  uint64_t seen_ms; /* loop time of the read */
  uint64_t started_ms, connections, users;
  char *advertise; /* owned */
} cluster_node;

struct hubu_cluster {
  hubu_bus bus; /* core->bus while running */
  hubu_core *core;
  uv_loop_t *loop;
  uint32_t node_id, lease_ms, timeout_ms;
  char *advertise; /* owned; "" when none */
  char inc[17];    /* this process's incarnation: 16 hex digits */
  uint64_t started_ms;
  hubu_redis *cmd; /* commands; NULL once closed */
  hubu_redis *sub; /* the bus's subscriber; NULL once closed */
  hubu_store_lease lease;
  hubu_redis_seq *seq;
  cluster_dir *dir; /* core's directory; NULL once it was freed */
  uv_timer_t timer; /* the lease refresh */
  /* The deliveries of this loop turn, sent in one script call after the
   * poll phase (bus_flush): their presence keys and their arguments (per
   * message its number of users and its payload), each back to back in a
   * buffer with the lengths beside. */
  uv_check_t bus_flush;
  hubu_buf batch_keys, batch_args;
  size_t *batch_keylen, *batch_arglen;
  size_t batch_nkeys, batch_nargs, batch_keycap, batch_argcap, batch_msgs;
  hubu_redis_script s_target, s_cleanup, s_view, s_write;
  char id_str[12];
  char key_node[40];  /* hubu:node:{ID} */
  char key_users[48]; /* hubu:node:{ID}:users */
  char ch_self[32];   /* hubu:bus:ID */
  char ch_ping[40];   /* hubu:bus:ID:ping */
  int closed, paused, registered, rewrite_needed;
  int lease_in_flight, view_in_flight, rewrite_in_flight;
  unsigned closing_left;       /* the close's commands not answered yet */
  uint64_t lease_sent_ms;      /* loop time the SET under way was sent */
  uint64_t lease_ok_ms;        /* loop time the last answered SET was sent */
  uint64_t conflict_ms;        /* loop time another process's lease was last found under this id */
  uint64_t conflict_logged_ms; /* ... and logged (at most every 10 s) */
  unsigned malformed_logged;   /* one bit per kind */
  cluster_node *nodes;
  size_t n_nodes;
  hubu_cluster_stats stats;
};

static uint64_t loop_now(hubu_cluster *c) {
  uv_update_time(c->loop);
  return uv_now(c->loop);
}

static int cmd_up(hubu_cluster *c) { return !c->closed && c->cmd && hubu_redis_is_up(c->cmd); }

/* ---- presence ---- */

static void ignore_reply(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)st;
  (void)reply;
  (void)ud;
}

static void presence_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)reply;
  hubu_cluster *c = ud;
  if (st == HUBU_REDIS_OK) return;
  c->stats.presence_failed++;
  c->rewrite_needed = 1; /* Redis may now disagree with this node: the next refresh writes it all again */
}

/* One presence command, fire and forget. */
static void presence_cmd(hubu_cluster *c, int argc, const char **argv) {
  if (!cmd_up(c) || hubu_redis_pending(c->cmd) >= MAX_PENDING ||
      hubu_redis_command(c->cmd, 0, presence_done, c, argc, argv, NULL) != 0) {
    c->stats.presence_failed++;
    c->rewrite_needed = 1;
    return;
  }
  c->stats.presence_writes++;
}

/* One batch of the rewrite (the script was loaded with the cleanup). */
static void presence_script(hubu_cluster *c, int argc, const char **args) {
  if (!cmd_up(c) || hubu_redis_eval(c->cmd, &c->s_write, 0, presence_done, c, 0, NULL, NULL, argc, args, NULL) != 0) {
    c->stats.presence_failed++;
    c->rewrite_needed = 1;
    return;
  }
  c->stats.presence_writes++;
}

static void pr_key(char *out, size_t size, const char *user) { snprintf(out, size, "hubu:pr:{%s}", user); }

static void presence_write(hubu_cluster *c, hubu_peer *p) {
  char key[160], field[40];
  pr_key(key, sizeof key, p->user);
  snprintf(field, sizeof field, "%s:%" PRIu64, c->id_str, p->id);
  const char *hset[4] = {"HSET", key, field, p->device};
  const char *sadd[3] = {"SADD", c->key_users, p->user};
  presence_cmd(c, 4, hset);
  presence_cmd(c, 3, sadd);
}

/* The rewrite's second half, once the cleanup is answered: the entries as
 * they are now. (EVALSHA answered NOSCRIPT is sent again as EVAL, behind
 * what was pipelined after it: writing only after the answer keeps the
 * cleanup first. An attach or detach meanwhile went to Redis on its own,
 * and the table already shows it.) */
static void cleanup_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  hubu_cluster *c = ud;
  c->rewrite_in_flight = 0;
  if (c->closed) return;
  if (st != HUBU_REDIS_OK) {
    c->stats.presence_failed++;
    c->rewrite_needed = 1;
    hubu_log(HUBU_LOG_WARN, 0, NULL, "cluster_presence_cleanup_failed", "node=%u status=%s answer=\"%.100s\"",
             c->node_id, hubu_redis_status_name(st), reply && reply->str ? reply->str : "");
    return;
  }
  c->stats.presence_rewrites++;
  size_t n = 0, k = 1;
  const char *args[1 + 3 * REWRITE_BATCH];
  char fields[REWRITE_BATCH][40];
  args[0] = c->key_users;
  conn_entry *e, *tmp;
  conn_entry *head = c->dir ? c->dir->conns : NULL;
  HASH_ITER(hh, head, e, tmp) {
    snprintf(fields[n % REWRITE_BATCH], sizeof fields[0], "%s:%" PRIu64, c->id_str, e->id);
    args[k++] = e->peer->user;
    args[k++] = fields[n % REWRITE_BATCH];
    args[k++] = e->peer->device;
    n++;
    if (k == 1 + 3 * REWRITE_BATCH || !e->hh.next) {
      presence_script(c, (int)k, args);
      k = 1;
    }
  }
  hubu_log(HUBU_LOG_INFO, 0, NULL, "cluster_presence_written", "node=%u connections=%zu removed=%lld", c->node_id, n,
           reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1);
}

/* Deletes every entry of this node id from Redis, then writes the local
 * presence again. */
static void presence_rewrite(hubu_cluster *c) {
  if (!cmd_up(c) || c->rewrite_in_flight) {
    c->rewrite_needed = 1;
    return;
  }
  c->rewrite_needed = 0;
  const char *keys[1] = {c->key_users};
  const char *args[1] = {c->id_str};
  if (hubu_redis_eval(c->cmd, &c->s_cleanup, 0, cleanup_done, c, 1, keys, NULL, 1, args, NULL) != 0) {
    c->rewrite_needed = 1;
    c->stats.presence_failed++;
    return;
  }
  c->rewrite_in_flight = 1;
  /* Loaded before the cleanup's answer comes back (even when the cleanup is
   * sent again after NOSCRIPT): the batches' EVALSHA then runs in order. */
  const char *load[3] = {"SCRIPT", "LOAD", c->s_write.source};
  hubu_redis_command(c->cmd, 0, ignore_reply, NULL, 3, load, NULL);
}

static int dir_attach(hubu_directory *d, hubu_peer *p) {
  cluster_dir *cd = (cluster_dir *)d;
  conn_entry *e = calloc(1, sizeof *e);
  if (!e) return -1;
  if (cd->local->ops->attach(cd->local, p) != 0) {
    free(e);
    return -1;
  }
  e->id = p->id;
  e->peer = p;
  conn_entry *old = NULL;
  HASH_FIND(hh, cd->conns, &e->id, sizeof e->id, old);
  if (old) { /* a conn_id listed twice would be a bug of the caller; keep the newest */
    HASH_DEL(cd->conns, old);
    free(old);
  }
  HASH_ADD(hh, cd->conns, id, sizeof e->id, e);
  if (cd->c) presence_write(cd->c, p);
  return 0;
}

static void dir_detach(hubu_directory *d, hubu_peer *p) {
  cluster_dir *cd = (cluster_dir *)d;
  conn_entry *e = NULL;
  HASH_FIND(hh, cd->conns, &p->id, sizeof p->id, e);
  if (!e || e->peer != p) return; /* not listed */
  HASH_DEL(cd->conns, e);
  free(e);
  cd->local->ops->detach(cd->local, p);
  hubu_cluster *c = cd->c;
  if (!c) return;
  char key[160], field[40];
  pr_key(key, sizeof key, p->user);
  snprintf(field, sizeof field, "%s:%" PRIu64, c->id_str, p->id);
  const char *hdel[3] = {"HDEL", key, field};
  presence_cmd(c, 3, hdel);
  if (!cd->local->ops->peers_of(cd->local, p->user)) {
    const char *srem[3] = {"SREM", c->key_users, p->user};
    presence_cmd(c, 3, srem);
  }
}

static hubu_peer *dir_peers_of(hubu_directory *d, const char *user) {
  cluster_dir *cd = (cluster_dir *)d;
  return cd->local->ops->peers_of(cd->local, user);
}

static size_t dir_users(hubu_directory *d) {
  cluster_dir *cd = (cluster_dir *)d;
  return cd->local->ops->users(cd->local);
}

static void dir_free(hubu_directory *d) {
  cluster_dir *cd = (cluster_dir *)d;
  conn_entry *e, *tmp;
  HASH_ITER(hh, cd->conns, e, tmp) {
    HASH_DEL(cd->conns, e);
    free(e);
  }
  cd->local->ops->free(cd->local);
  if (cd->c) cd->c->dir = NULL;
  free(cd);
}

static const hubu_directory_ops dir_ops = {
    .attach = dir_attach,
    .detach = dir_detach,
    .peers_of = dir_peers_of,
    .users = dir_users,
    .free = dir_free,
};

static size_t local_connections(hubu_cluster *c) { return c->dir ? HASH_COUNT(c->dir->conns) : 0; }
static size_t local_users(hubu_cluster *c) { return c->dir ? dir_users(&c->dir->base) : 0; }

/* ---- the node's lease and the view of all nodes ---- */

static void nodes_clear(hubu_cluster *c) {
  for (size_t i = 0; i < c->n_nodes; i++) free(c->nodes[i].advertise);
  free(c->nodes);
  c->nodes = NULL;
  c->n_nodes = 0;
}

static int node_live(const cluster_node *n, uint64_t now) {
  return n->pttl == -1 || (n->pttl > 0 && n->seen_ms + (uint64_t)n->pttl > now);
}

static int64_t node_ms_left(const cluster_node *n, uint64_t now) {
  if (n->pttl == -1) return -1;
  if (!node_live(n, now)) return 0;
  return (int64_t)(n->seen_ms + (uint64_t)n->pttl - now);
}

/* "v1 INC STARTED_MS CONNECTIONS USERS ADVERTISE" into n; 0, or -1. */
static int lease_value_parse(const char *s, size_t len, cluster_node *n, char *inc, size_t inc_size) {
  char buf[512];
  if (len >= sizeof buf) len = sizeof buf - 1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  char incv[32];
  unsigned long long started, conns, users;
  int off = 0;
  if (sscanf(buf, "v1 %31s %llu %llu %llu%n", incv, &started, &conns, &users, &off) != 4) return -1;
  n->started_ms = started;
  n->connections = conns;
  n->users = users;
  const char *adv = buf + off;
  if (*adv == ' ') adv++;
  n->advertise = strdup(adv);
  if (inc) snprintf(inc, inc_size, "%s", incv);
  return n->advertise ? 0 : -1;
}

static void view_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  hubu_cluster *c = ud;
  c->view_in_flight = 0;
  if (c->closed || st != HUBU_REDIS_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements % 3) return;
  size_t n = reply->elements / 3;
  cluster_node *nodes = calloc(n ? n : 1, sizeof *nodes);
  if (!nodes) return; /* the old view stays */
  uint64_t now = loop_now(c);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const redisReply *id = reply->element[3 * i], *pttl = reply->element[3 * i + 1], *v = reply->element[3 * i + 2];
    if (id->type != REDIS_REPLY_STRING || pttl->type != REDIS_REPLY_INTEGER || v->type != REDIS_REPLY_STRING) continue;
    char *end;
    unsigned long nid = strtoul(id->str, &end, 10);
    if (*end || nid > UINT32_MAX) continue;
    cluster_node *node = &nodes[k];
    if (lease_value_parse(v->str, v->len, node, NULL, 0) != 0) continue;
    node->id = (uint32_t)nid;
    node->pttl = pttl->integer;
    node->seen_ms = now;
    k++;
  }
  nodes_clear(c);
  c->nodes = nodes;
  c->n_nodes = k;
}

static void lease_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  hubu_cluster *c = ud;
  c->lease_in_flight = 0;
  if (c->closed) return;
  if (st != HUBU_REDIS_OK) {
    c->stats.lease_failures++;
    return; /* the client logged and counted why; the health shows it */
  }
  c->stats.lease_refreshes++;
  c->lease_ok_ms = c->lease_sent_ms;
  char prefix[32];
  int n = snprintf(prefix, sizeof prefix, "v1 %s ", c->inc);
  if (reply->type == REDIS_REPLY_NIL) {
    if (c->registered) {
      c->stats.lease_lost++;
      hubu_log(HUBU_LOG_WARN, 0, NULL, "cluster_lease_lost",
               "node=%u reason=\"the lease was gone (expired, or Redis lost its data)\"", c->node_id);
    } else {
      hubu_log(HUBU_LOG_INFO, 0, NULL, "cluster_node_registered", "node=%u incarnation=%s lease_ms=%u", c->node_id,
               c->inc, c->lease_ms);
    }
    c->rewrite_needed = 1;
  } else if (reply->type == REDIS_REPLY_STRING) {
    if (reply->len < (size_t)n || memcmp(reply->str, prefix, (size_t)n) != 0) {
      if (c->registered) {
        c->stats.lease_conflicts++;
        c->conflict_ms = c->lease_sent_ms;
        if (!c->conflict_logged_ms || c->lease_sent_ms - c->conflict_logged_ms >= 10000) {
          c->conflict_logged_ms = c->lease_sent_ms;
          hubu_log(HUBU_LOG_ERROR, 0, NULL, "cluster_node_id_conflict",
                   "node=%u incarnation=%s other=\"%.80s\" reason=\"another process holds this node id\"", c->node_id,
                   c->inc, reply->str);
        }
      } else {
        hubu_log(HUBU_LOG_INFO, 0, NULL, "cluster_node_registered",
                 "node=%u incarnation=%s lease_ms=%u previous=\"%.80s\"", c->node_id, c->inc, c->lease_ms, reply->str);
      }
      c->rewrite_needed = 1;
    }
  }
  c->registered = 1;
  if (c->rewrite_needed) presence_rewrite(c);
}

static void lease_tick(uv_timer_t *t) {
  hubu_cluster *c = t->data;
  if (!cmd_up(c) || c->paused) return;
  if (!c->lease_in_flight) {
    char value[400], px[16];
    snprintf(value, sizeof value, "v1 %s %" PRIu64 " %zu %zu %s", c->inc, c->started_ms, local_connections(c),
             local_users(c), c->advertise);
    snprintf(px, sizeof px, "%u", c->lease_ms);
    const char *set[6] = {"SET", c->key_node, value, "PX", px, "GET"};
    c->lease_sent_ms = loop_now(c);
    if (hubu_redis_command(c->cmd, 0, lease_done, c, 6, set, NULL) == 0) {
      c->lease_in_flight = 1;
      const char *sadd[3] = {"SADD", "hubu:nodes", c->id_str};
      hubu_redis_command(c->cmd, 0, ignore_reply, NULL, 3, sadd, NULL);
    } else {
      c->stats.lease_failures++;
    }
  }
  if (!c->view_in_flight) {
    const char *keys[1] = {"hubu:nodes"};
    if (hubu_redis_eval(c->cmd, &c->s_view, 0, view_done, c, 1, keys, NULL, 0, NULL, NULL) == 0) c->view_in_flight = 1;
  }
}

static void on_cmd_health(hubu_redis *r, const hubu_redis_health *h, void *ud) {
  (void)r;
  hubu_cluster *c = ud;
  if (c->closed) return;
  if (h->up) {
    /* Commands may have been lost while it was down: register, and write
     * the presence again, now. */
    c->rewrite_needed = 1;
    uint64_t every = c->lease_ms / 5 ? c->lease_ms / 5 : 1;
    uv_timer_start(&c->timer, lease_tick, 0, every);
  }
}

/* ---- the bus: sending ---- */

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int bus_header(hubu_cluster *c, hubu_buf *b, uint8_t kind) {
  uint8_t h[BUS_HEADER] = {BUS_VERSION, kind};
  put_u32(h + 2, c->node_id);
  return hubu_buf_append(b, h, sizeof h);
}

/* The packed Message inside m's Push entry (0x0A, varint length, Message). */
static const uint8_t *msg_packed(const hubu_msg *m, size_t *len) {
  size_t i = 1;
  while (i < m->push_entry_len && (m->push_entry[i] & 0x80)) i++;
  i++;
  *len = i < m->push_entry_len ? m->push_entry_len - i : 0;
  return m->push_entry + i;
}

static void delivery_sent(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  hubu_cluster *c = ud;
  if (st != HUBU_REDIS_OK || reply->type != REDIS_REPLY_INTEGER) {
    c->stats.bus_failed++;
    return;
  }
  c->stats.deliveries_sent += (uint64_t)reply->integer;
}

static void batch_clear(hubu_cluster *c) {
  c->batch_keys.off = c->batch_keys.len = 0; /* the storage stays for the next turn */
  c->batch_args.off = c->batch_args.len = 0;
  c->batch_nkeys = c->batch_nargs = c->batch_msgs = 0;
}

/* Appends one string to a batch buffer and its length to lens. -1 when out of memory. */
static int batch_put(hubu_buf *b, size_t **lens, size_t *n, size_t *cap, const void *p, size_t len) {
  if (*n == *cap) {
    size_t ncap = *cap ? 2 * *cap : 64;
    size_t *grown = realloc(*lens, ncap * sizeof *grown);
    if (!grown) return -1;
    *lens = grown;
    *cap = ncap;
  }
  if (hubu_buf_append(b, p, len) != 0) return -1;
  (*lens)[(*n)++] = len;
  return 0;
}

/* The loop turn's deliveries go out: one script call for all of them. */
static void bus_flush_cb(uv_check_t *h) {
  hubu_cluster *c = h->data;
  uv_check_stop(&c->bus_flush);
  if (!c->batch_msgs) return;
  size_t nk = c->batch_nkeys, na = 2 + c->batch_nargs;
  const char **keys = malloc((nk ? nk : 1) * sizeof *keys), **args = malloc(na * sizeof *args);
  size_t *arglen = malloc(na * sizeof *arglen);
  char nmsgs[24];
  snprintf(nmsgs, sizeof nmsgs, "%zu", c->batch_msgs);
  int sent = keys && args && arglen && cmd_up(c);
  if (sent) {
    const char *kp = (const char *)hubu_buf_head(&c->batch_keys), *ap = (const char *)hubu_buf_head(&c->batch_args);
    for (size_t i = 0; i < nk; kp += c->batch_keylen[i++]) keys[i] = kp;
    args[0] = c->id_str, arglen[0] = strlen(c->id_str);
    args[1] = nmsgs, arglen[1] = strlen(nmsgs);
    for (size_t i = 0; i < c->batch_nargs; ap += c->batch_arglen[i++]) {
      args[2 + i] = ap;
      arglen[2 + i] = c->batch_arglen[i];
    }
    sent = hubu_redis_eval(c->cmd, &c->s_target, 0, delivery_sent, c, (int)nk, keys, c->batch_keylen, (int)na, args,
                           arglen) == 0;
  }
  if (!sent) c->stats.bus_failed += c->batch_msgs;
  free(keys);
  free(args);
  free(arglen);
  batch_clear(c);
}

static void broadcast_sent(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  hubu_cluster *c = ud;
  if (st == HUBU_REDIS_OK && reply->type == REDIS_REPLY_INTEGER)
    c->stats.deliveries_sent++;
  else
    c->stats.bus_failed++;
}

static void bus_deliver(hubu_bus *b, const hubu_msg *m, const char *const *users, const uint8_t *modes, size_t n) {
  hubu_cluster *c = (hubu_cluster *)b;
  if (!n) return;
  if (!cmd_up(c) || hubu_redis_pending(c->cmd) >= MAX_PENDING) {
    c->stats.bus_failed++;
    return;
  }
  hubu_buf payload = {0};
  uint8_t cnt[4];
  put_u32(cnt, (uint32_t)n);
  int fail = bus_header(c, &payload, BUS_DELIVERY) || hubu_buf_append(&payload, cnt, 4);
  for (size_t i = 0; i < n && !fail; i++) {
    size_t len = strlen(users[i]);
    uint8_t h[3] = {modes[i], (uint8_t)(len >> 8), (uint8_t)len};
    fail = len > 0xFFFF || hubu_buf_append(&payload, h, 3) || hubu_buf_append(&payload, users[i], len);
  }
  size_t mlen;
  const uint8_t *mp = msg_packed(m, &mlen);
  fail = fail || hubu_buf_append(&payload, mp, mlen);
  const char *arg[2] = {c->id_str, (const char *)hubu_buf_head(&payload)};
  size_t arglen[2] = {strlen(c->id_str), hubu_buf_size(&payload)};
  if (!fail && n > BROADCAST_OVER_USERS) {
    /* Many users: every live node gets it (a node without any of them
     * finds no local peer), without reading each user's presence. */
    c->stats.deliveries_broadcast++;
    uint64_t now = loop_now(c);
    for (size_t i = 0; i < c->n_nodes; i++) {
      if (c->nodes[i].id == c->node_id || !node_live(&c->nodes[i], now)) continue;
      char ch[32];
      snprintf(ch, sizeof ch, "hubu:bus:%u", c->nodes[i].id);
      const char *argv[3] = {"PUBLISH", ch, arg[1]};
      size_t argvlen[3] = {7, strlen(ch), arglen[1]};
      if (hubu_redis_command(c->cmd, 0, broadcast_sent, c, 3, argv, argvlen) != 0) c->stats.bus_failed++;
    }
  } else if (!fail) { /* into this loop turn's batch: the users' presence keys, then the count and the payload */
    if (c->batch_msgs && c->batch_nkeys + c->batch_nargs + n + 4 > BATCH_MAX_ARGS)
      bus_flush_cb(&c->bus_flush); /* a script call takes so many; the rest go in the next */
    char count[24];
    int cl = snprintf(count, sizeof count, "%zu", n);
    for (size_t i = 0; i < n && !fail; i++) {
      char key[160];
      int kl = snprintf(key, sizeof key, "hubu:pr:{%s}", users[i]);
      fail = batch_put(&c->batch_keys, &c->batch_keylen, &c->batch_nkeys, &c->batch_keycap, key,
                       kl < (int)sizeof key ? (size_t)kl : sizeof key - 1);
    }
    fail = fail || batch_put(&c->batch_args, &c->batch_arglen, &c->batch_nargs, &c->batch_argcap, count, (size_t)cl) ||
           batch_put(&c->batch_args, &c->batch_arglen, &c->batch_nargs, &c->batch_argcap, arg[1], arglen[1]);
    if (fail) { /* the batch lost its shape: it goes, counted */
      c->stats.bus_failed += c->batch_msgs;
      batch_clear(c);
    } else if (!c->batch_msgs++) {
      uv_check_start(&c->bus_flush, bus_flush_cb);
    }
  }
  if (fail) c->stats.bus_failed++;
  hubu_buf_free(&payload);
}

static void all_sent(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)reply;
  hubu_cluster *c = ud;
  if (st != HUBU_REDIS_OK) c->stats.bus_failed++;
}

/* PUBLISH hubu:bus:all: 0, or -1 (not sent). */
static int publish_all(hubu_cluster *c, const hubu_buf *payload) {
  if (!cmd_up(c) || hubu_redis_pending(c->cmd) >= MAX_PENDING) return -1;
  const char *argv[3] = {"PUBLISH", "hubu:bus:all", (const char *)hubu_buf_head(payload)};
  size_t argvlen[3] = {7, 12, hubu_buf_size(payload)};
  return hubu_redis_command(c->cmd, 0, all_sent, c, 3, argv, argvlen);
}

static void bus_kick(hubu_bus *b, const char *user, const char *reason) {
  hubu_cluster *c = (hubu_cluster *)b;
  hubu_buf p = {0};
  size_t ul = strlen(user);
  uint8_t h[2] = {(uint8_t)(ul >> 8), (uint8_t)ul};
  if (ul > 0xFFFF || bus_header(c, &p, BUS_KICK) || hubu_buf_append(&p, h, 2) || hubu_buf_append(&p, user, ul) ||
      hubu_buf_append(&p, reason ? reason : "", reason ? strlen(reason) : 0) || publish_all(c, &p) != 0)
    c->stats.bus_failed++;
  else
    c->stats.kicks_sent++;
  hubu_buf_free(&p);
}

static void bus_invalidate(hubu_bus *b, const char *session_id) {
  hubu_cluster *c = (hubu_cluster *)b;
  hubu_buf p = {0};
  if (bus_header(c, &p, BUS_INVALIDATE) || hubu_buf_append(&p, session_id, strlen(session_id)) ||
      publish_all(c, &p) != 0)
    c->stats.bus_failed++;
  else
    c->stats.invalidations_sent++;
  hubu_buf_free(&p);
}

static const hubu_bus_ops bus_ops = {.deliver = bus_deliver, .kick = bus_kick, .invalidate = bus_invalidate};

/* ---- the bus: receiving ---- */

static void malformed(hubu_cluster *c, uint8_t kind, const char *why) {
  c->stats.malformed++;
  unsigned bit = kind == BUS_DELIVERY ? 1u : kind == BUS_KICK ? 2u : kind == BUS_INVALIDATE ? 4u : 8u;
  if (c->malformed_logged & bit) return;
  c->malformed_logged |= bit;
  hubu_log(HUBU_LOG_WARN, 0, NULL, "cluster_bus_malformed",
           "node=%u kind=%u reason=\"%s\" note=\"logged once per kind; counted in malformed\"", c->node_id, kind, why);
}

/* An empty string of protobuf-c for absent fields; the strings must hold no NUL. */
static int has_nul(const char *s, size_t n) { return memchr(s, '\0', n) != NULL; }

static void receive_delivery(hubu_cluster *c, const uint8_t *p, size_t len) {
  if (len < 4) {
    malformed(c, BUS_DELIVERY, "truncated user count");
    return;
  }
  uint32_t n = get_u32(p);
  p += 4;
  len -= 4;
  if (!n || n > BUS_MAX_USERS) {
    malformed(c, BUS_DELIVERY, "user count out of range");
    return;
  }
  /* First pass: check the users and measure them. */
  size_t off = 0, strings = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (len - off < 3) {
      malformed(c, BUS_DELIVERY, "truncated user");
      return;
    }
    size_t ul = (size_t)p[off + 1] << 8 | p[off + 2];
    if (p[off] > HUBU_ROUTE_NONE || !ul || len - off - 3 < ul || has_nul((const char *)p + off + 3, ul)) {
      malformed(c, BUS_DELIVERY, "bad user or mode");
      return;
    }
    strings += ul + 1;
    off += 3 + ul;
  }
  const uint8_t *mp = p + off;
  size_t mlen = len - off;
  if (!hubu_wire_strings_ok(&hubu__v1__message__descriptor, mp, mlen)) {
    malformed(c, BUS_DELIVERY, "message strings not UTF-8");
    return;
  }
  Hubu__V1__Message *dm = hubu__v1__message__unpack(NULL, mlen, mp);
  if (!dm || !dm->session_id[0] || !dm->seq) {
    if (dm) hubu__v1__message__free_unpacked(dm, NULL);
    {
      malformed(c, BUS_DELIVERY, "message does not decode");
      return;
    }
  }
  uint8_t *meta = NULL;
  size_t meta_len = 0;
  if (dm->n_meta) {
    Hubu__V1__Message mm = HUBU__V1__MESSAGE__INIT;
    mm.n_meta = dm->n_meta;
    mm.meta = dm->meta;
    meta_len = protobuf_c_message_get_packed_size(&mm.base);
    if ((meta = malloc(meta_len))) meta_len = protobuf_c_message_pack(&mm.base, meta);
  }
  char **users = malloc(n * sizeof *users);
  uint8_t *modes = malloc(n);
  char *names = malloc(strings);
  hubu_msg *m = NULL;
  if (users && modes && names && (meta || !dm->n_meta))
    m = hubu_msg_new(dm->session_id, dm->seq, dm->msg_id, dm->sender, dm->sender_device, dm->client_id, dm->body.data,
                     dm->body.len, dm->content_type, meta, meta_len, dm->server_time_ms);
  if (m) {
    off = 0;
    char *w = names;
    for (uint32_t i = 0; i < n; i++) {
      size_t ul = (size_t)p[off + 1] << 8 | p[off + 2];
      modes[i] = p[off];
      memcpy(w, p + off + 3, ul);
      w[ul] = '\0';
      users[i] = w;
      w += ul + 1;
      off += 3 + ul;
    }
    c->stats.deliveries_received++;
    hubu_bus_delivered(c->core, m, (const char *const *)users, modes, n);
    hubu_msg_unref(m);
  } else {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=cluster_bus_delivery");
  }
  free(users);
  free(modes);
  free(names);
  free(meta);
  hubu__v1__message__free_unpacked(dm, NULL);
}

static void receive_kick(hubu_cluster *c, const uint8_t *p, size_t len) {
  if (len < 2) {
    malformed(c, BUS_KICK, "truncated user");
    return;
  }
  size_t ul = (size_t)p[0] << 8 | p[1];
  if (!ul || len - 2 < ul || has_nul((const char *)p + 2, len - 2)) {
    malformed(c, BUS_KICK, "bad user");
    return;
  }
  char *user = malloc(ul + 1), *reason = malloc(len - 2 - ul + 1);
  if (user && reason) {
    memcpy(user, p + 2, ul);
    user[ul] = '\0';
    memcpy(reason, p + 2 + ul, len - 2 - ul);
    reason[len - 2 - ul] = '\0';
    c->stats.kicks_received++;
    hubu_bus_kicked(c->core, user, reason);
  } else {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=cluster_bus_kick");
  }
  free(user);
  free(reason);
}

static void receive_invalidate(hubu_cluster *c, const uint8_t *p, size_t len) {
  if (!len || len > HUBU_SESSION_ID_MAX || has_nul((const char *)p, len)) {
    malformed(c, BUS_INVALIDATE, "bad session id");
    return;
  }
  char sid[HUBU_SESSION_ID_MAX + 1];
  memcpy(sid, p, len);
  sid[len] = '\0';
  c->stats.invalidations_received++;
  hubu_bus_invalidated(c->core, sid);
}

static void on_bus_message(hubu_redis *r, const char *channel, size_t channel_len, const char *payload,
                           size_t payload_len, void *ud) {
  (void)r;
  (void)channel;
  (void)channel_len;
  hubu_cluster *c = ud;
  if (c->closed) return;
  const uint8_t *p = (const uint8_t *)payload;
  if (payload_len < BUS_HEADER || p[0] != BUS_VERSION) {
    malformed(c, 0, "bad header or version");
    return;
  }
  uint8_t kind = p[1];
  if (get_u32(p + 2) == c->node_id) return; /* this node's own kick or invalidation, back from hubu:bus:all */
  p += BUS_HEADER;
  payload_len -= BUS_HEADER;
  switch (kind) {
    case BUS_DELIVERY: receive_delivery(c, p, payload_len); return;
    case BUS_KICK: receive_kick(c, p, payload_len); return;
    case BUS_INVALIDATE: receive_invalidate(c, p, payload_len); return;
    default: {
      malformed(c, kind, "unknown kind");
      return;
    }
  }
}

/* ---- life ---- */

static void fail(char *err, size_t err_size, const char *why) {
  if (err && err_size) snprintf(err, err_size, "%s", why);
}

static void make_incarnation(char out[17]) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
    v = hubu_now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 20 ^ (uint64_t)(uintptr_t)out;
  snprintf(out, 17, "%016" PRIx64, v);
}

hubu_cluster *hubu_cluster_start(hubu_core *core, hubu_store *store, const hubu_cluster_config *cfg, char *err,
                                 size_t err_size) {
  hubu_redis_config rcfg;
  if (!cfg || !cfg->redis_url) {
    fail(err, err_size, "no Redis URL");
    return NULL;
  }
  if (hubu_redis_config_parse(cfg->redis_url, &rcfg, err, err_size) != 0) return NULL;
  if (cfg->timeout_ms) rcfg.command_timeout_ms = cfg->timeout_ms;
  hubu_cluster *c = calloc(1, sizeof *c);
  cluster_dir *cd = calloc(1, sizeof *cd);
  if (!c || !cd || !(c->advertise = strdup(cfg->advertise ? cfg->advertise : ""))) goto oom;
  for (char *s = c->advertise; *s; s++) /* one line in the lease value */
    if (*s == '\n' || *s == '\r') *s = ' ';
  c->bus.ops = &bus_ops;
  c->core = core;
  c->loop = core->loop;
  c->node_id = cfg->node_id;
  c->lease_ms = cfg->lease_ms ? cfg->lease_ms : 5000;
  c->timeout_ms = rcfg.command_timeout_ms;
  c->started_ms = hubu_now_ms();
  make_incarnation(c->inc);
  snprintf(c->id_str, sizeof c->id_str, "%u", c->node_id);
  snprintf(c->key_node, sizeof c->key_node, "hubu:node:{%u}", c->node_id);
  snprintf(c->key_users, sizeof c->key_users, "hubu:node:{%u}:users", c->node_id);
  snprintf(c->ch_self, sizeof c->ch_self, "hubu:bus:%u", c->node_id);
  snprintf(c->ch_ping, sizeof c->ch_ping, "hubu:bus:%u:ping", c->node_id);
  hubu_redis_script_init(&c->s_target, target_lua, sizeof target_lua - 1);
  hubu_redis_script_init(&c->s_cleanup, cleanup_lua, sizeof cleanup_lua - 1);
  hubu_redis_script_init(&c->s_view, view_lua, sizeof view_lua - 1);
  hubu_redis_script_init(&c->s_write, write_lua, sizeof write_lua - 1);
  hubu_store_lease_init(&c->lease, store);
  hubu_redis_seq_config sc = {.block = cfg->seq_block};
  if (!(c->cmd = hubu_redis_new(c->loop, &rcfg, on_cmd_health, c))) goto oom;
  if (!(c->sub = hubu_redis_subscriber_new(c->loop, &rcfg, on_bus_message, NULL, c))) goto oom;
  if (hubu_redis_subscribe(c->sub, c->ch_self) != 0 || hubu_redis_subscribe(c->sub, "hubu:bus:all") != 0 ||
      hubu_redis_subscriber_heartbeat(c->sub, c->cmd, c->ch_ping) != 0)
    goto oom;
  if (!(c->seq = hubu_redis_seq_new(c->cmd, &c->lease.base, &sc))) goto oom;
  cd->base.ops = &dir_ops;
  cd->local = core->directory;
  cd->c = c;
  c->dir = cd;
  uv_timer_init(c->loop, &c->timer);
  c->timer.data = c;
  uv_check_init(c->loop, &c->bus_flush);
  c->bus_flush.data = c;
  c->rewrite_needed = 1;
  core->directory = &cd->base;
  core->seq = hubu_redis_seq_allocator(c->seq);
  core->bus = &c->bus;
  hubu_log(HUBU_LOG_INFO, 0, NULL, "cluster_connecting", "node=%u redis=%s:%d lease_ms=%u incarnation=%s", c->node_id,
           rcfg.host, rcfg.port, c->lease_ms, c->inc);
  return c;
oom:
  fail(err, err_size, "out of memory");
  hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=cluster_start");
  if (c) {
    hubu_redis_close(c->sub); /* their memory goes once the loop closes their handles */
    hubu_redis_close(c->cmd);
    hubu_redis_seq_free(c->seq);
    free(c->advertise);
  }
  free(cd);
  free(c);
  return NULL;
}

int hubu_cluster_healthy(hubu_cluster *c, char *why, size_t why_size) {
  char tmp[8];
  if (!why || !why_size) {
    why = tmp;
    why_size = sizeof tmp;
  }
  why[0] = '\0';
  if (c->closed) {
    snprintf(why, why_size, "cluster: closed");
    return 0;
  }
  hubu_redis_health h;
  hubu_redis_get_health(c->cmd, &h);
  if (!h.up) {
    snprintf(why, why_size, "redis: %s", h.last_error);
    return 0;
  }
  hubu_redis_get_health(c->sub, &h);
  if (!h.up) {
    snprintf(why, why_size, "bus: %s", h.last_error);
    return 0;
  }
  if (!c->registered) {
    snprintf(why, why_size, "lease: not registered yet");
    return 0;
  }
  uint64_t now = loop_now(c);
  if (now - c->lease_ok_ms > c->lease_ms) {
    snprintf(why, why_size, "lease lost: not refreshed for %" PRIu64 " ms (lease %u ms)", now - c->lease_ok_ms,
             c->lease_ms);
    return 0;
  }
  if (c->conflict_ms && now - c->conflict_ms < CONFLICT_UNHEALTHY_MS(c)) {
    snprintf(why, why_size, "lease: node id %u is used by another process", c->node_id);
    return 0;
  }
  return 1;
}

size_t hubu_cluster_live_nodes(hubu_cluster *c) {
  uint64_t now = loop_now(c);
  size_t n = 0;
  for (size_t i = 0; i < c->n_nodes; i++) n += node_live(&c->nodes[i], now);
  return n;
}

void hubu_cluster_get_stats(const hubu_cluster *c, hubu_cluster_stats *out) { *out = c->stats; }

void hubu_cluster_pause_lease(hubu_cluster *c, int paused) {
  c->paused = paused != 0;
  if (!c->paused && cmd_up(c)) lease_tick(&c->timer);
}

static void json_health(hubu_json_writer *w, const char *key, hubu_redis *r) {
  hubu_redis_health h;
  memset(&h, 0, sizeof h);
  if (r) hubu_redis_get_health(r, &h);
  hubu_json_open(w, key, '{', 0);
  hubu_json_bool(w, "up", r && h.up);
  hubu_json_str(w, "last_error", r ? h.last_error : "closed");
  hubu_json_u64(w, "connects", h.connects);
  hubu_json_u64(w, "failures", h.failures);
  hubu_json_u64(w, "timeouts", h.timeouts);
  hubu_json_u64(w, "replid_changes", h.replid_changes);
  hubu_json_u64(w, "commands", h.commands);
  hubu_json_u64(w, "writes", h.writes);
  if (key[0] == 'r') {
    hubu_json_str(w, "replid", h.replid);
    hubu_json_str(w, "run_id", h.run_id);
  }
  hubu_json_close(w);
}

int hubu_cluster_describe(hubu_cluster *c, hubu_buf *out) {
  hubu_json_writer w;
  hubu_json_init(&w, out, NULL);
  char why[256];
  int healthy = hubu_cluster_healthy(c, why, sizeof why);
  uint64_t now = loop_now(c);
  hubu_json_open(&w, NULL, '{', 0);
  hubu_json_u64(&w, "node_id", c->node_id);
  hubu_json_str(&w, "incarnation", c->inc);
  hubu_json_u64(&w, "started_ms", c->started_ms);
  hubu_json_str(&w, "advertise", c->advertise);
  hubu_json_bool(&w, "healthy", healthy);
  hubu_json_str(&w, "why", why);
  hubu_json_u64(&w, "lease_ms", c->lease_ms);
  if (c->registered && c->lease_ok_ms + c->lease_ms > now)
    hubu_json_u64(&w, "lease_ms_left", c->lease_ok_ms + c->lease_ms - now);
  else
    hubu_json_u64(&w, "lease_ms_left", 0);
  hubu_json_u64(&w, "connections", local_connections(c));
  hubu_json_u64(&w, "users", local_users(c));
  json_health(&w, "redis", c->cmd);
  json_health(&w, "bus", c->sub);
  hubu_redis_seq_stats ss;
  hubu_redis_seq_get_stats(c->seq, &ss);
  hubu_json_open(&w, "seq", '{', 0);
  hubu_json_u64(&w, "generation", ss.generation);
  hubu_json_str(&w, "gen", ss.gen);
  hubu_json_u64(&w, "allocated", ss.allocated);
  hubu_json_u64(&w, "leases", ss.leases);
  hubu_json_u64(&w, "refusals", ss.refusals);
  hubu_json_u64(&w, "unavailable", ss.unavailable);
  hubu_json_u64(&w, "blocks_dropped", ss.blocks_dropped);
  hubu_json_u64(&w, "pending", hubu_redis_seq_pending(c->seq));
  hubu_json_close(&w);
  const hubu_cluster_stats *s = &c->stats;
  hubu_json_open(&w, "counters", '{', 0);
  hubu_json_u64(&w, "deliveries_sent", s->deliveries_sent);
  hubu_json_u64(&w, "deliveries_received", s->deliveries_received);
  hubu_json_u64(&w, "bus_failed", s->bus_failed);
  hubu_json_u64(&w, "deliveries_broadcast", s->deliveries_broadcast);
  hubu_json_u64(&w, "kicks_sent", s->kicks_sent);
  hubu_json_u64(&w, "kicks_received", s->kicks_received);
  hubu_json_u64(&w, "invalidations_sent", s->invalidations_sent);
  hubu_json_u64(&w, "invalidations_received", s->invalidations_received);
  hubu_json_u64(&w, "malformed", s->malformed);
  hubu_json_u64(&w, "presence_writes", s->presence_writes);
  hubu_json_u64(&w, "presence_failed", s->presence_failed);
  hubu_json_u64(&w, "presence_rewrites", s->presence_rewrites);
  hubu_json_u64(&w, "lease_refreshes", s->lease_refreshes);
  hubu_json_u64(&w, "lease_failures", s->lease_failures);
  hubu_json_u64(&w, "lease_lost", s->lease_lost);
  hubu_json_u64(&w, "lease_conflicts", s->lease_conflicts);
  hubu_json_close(&w);
  hubu_json_open(&w, "nodes", '[', 0);
  for (size_t i = 0; i < c->n_nodes; i++) {
    const cluster_node *n = &c->nodes[i];
    hubu_json_open(&w, NULL, '{', 1);
    hubu_json_u64(&w, "id", n->id);
    hubu_json_bool(&w, "self", n->id == c->node_id);
    int64_t left = node_ms_left(n, now);
    if (left < 0)
      hubu_json_null(&w, "lease_ms_left");
    else
      hubu_json_u64(&w, "lease_ms_left", (uint64_t)left);
    hubu_json_u64(&w, "connections", n->connections);
    hubu_json_u64(&w, "users", n->users);
    hubu_json_u64(&w, "started_ms", n->started_ms);
    hubu_json_str(&w, "advertise", n->advertise);
    hubu_json_close(&w);
  }
  hubu_json_close(&w);
  hubu_json_close(&w);
  return hubu_json_failed(&w) || hubu_buf_append(out, "\n", 1) ? -1 : 0;
}

static void prom_one(hubu_buf *out, const char *name, const char *type, const char *help, uint64_t v) {
  hubu_prom_head(out, name, type, help, strlen(help));
  hubu_prom_sample_u64(out, name, NULL, v);
}

void hubu_cluster_metrics(hubu_cluster *c, hubu_buf *out) {
  const hubu_cluster_stats *s = &c->stats;
  uint64_t now = loop_now(c);
  hubu_redis_health h;
  memset(&h, 0, sizeof h);
  if (c->cmd) hubu_redis_get_health(c->cmd, &h);
  prom_one(out, "hubu_cluster_redis_up", "gauge", "1 while the Redis command connection is up.", cmd_up(c));
  prom_one(out, "hubu_cluster_redis_failures_total", "counter", "Redis connects that failed and connections lost.",
           h.failures);
  prom_one(out, "hubu_cluster_redis_timeouts_total", "counter", "Redis commands that timed out.", h.timeouts);
  prom_one(out, "hubu_cluster_redis_commands_total", "counter", "Commands sent to Redis (a script call is one).",
           h.commands);
  prom_one(out, "hubu_cluster_redis_writes_total", "counter",
           "Socket writes to Redis: each carries every command queued since the last (round trips).", h.writes);
  prom_one(out, "hubu_cluster_bus_up", "gauge",
           "1 while the bus subscriber is up and its heartbeat (a self-ping through Redis) comes back.",
           !c->closed && c->sub && hubu_redis_is_up(c->sub));
  prom_one(out, "hubu_cluster_lease_ms_left", "gauge", "What is left of this node's lease in Redis, in ms.",
           c->registered && c->lease_ok_ms + c->lease_ms > now ? c->lease_ok_ms + c->lease_ms - now : 0);
  prom_one(out, "hubu_cluster_nodes_live", "gauge", "Nodes with a live lease at the last refresh, this one included.",
           hubu_cluster_live_nodes(c));
  static const char help[] = "Bus messages by kind and direction (deliveries count one per target node).";
  hubu_prom_head(out, "hubu_cluster_bus_messages_total", "counter", help, sizeof help - 1);
  static const char *const labels[6] = {
      "{kind=\"delivery\",dir=\"sent\"}",   "{kind=\"delivery\",dir=\"received\"}",
      "{kind=\"kick\",dir=\"sent\"}",       "{kind=\"kick\",dir=\"received\"}",
      "{kind=\"invalidate\",dir=\"sent\"}", "{kind=\"invalidate\",dir=\"received\"}",
  };
  const uint64_t vals[6] = {s->deliveries_sent, s->deliveries_received, s->kicks_sent,
                            s->kicks_received,  s->invalidations_sent,  s->invalidations_received};
  for (int i = 0; i < 6; i++) hubu_prom_sample_u64(out, "hubu_cluster_bus_messages_total", labels[i], vals[i]);
  prom_one(out, "hubu_cluster_bus_failures_total", "counter",
           "Bus messages not sent (Redis down) or whose call failed.", s->bus_failed);
  prom_one(out, "hubu_cluster_bus_malformed_total", "counter", "Bus messages dropped as malformed.", s->malformed);
  prom_one(out, "hubu_cluster_presence_writes_total", "counter", "Presence commands sent to Redis.",
           s->presence_writes);
  prom_one(out, "hubu_cluster_presence_failures_total", "counter", "Presence commands not sent or failed.",
           s->presence_failed);
  prom_one(out, "hubu_cluster_presence_rewrites_total", "counter", "Times the whole local presence was written again.",
           s->presence_rewrites);
  prom_one(out, "hubu_cluster_lease_lost_total", "counter", "Refreshes that found this node's lease gone.",
           s->lease_lost);
  hubu_redis_seq_stats ss;
  hubu_redis_seq_get_stats(c->seq, &ss);
  prom_one(out, "hubu_cluster_seq_generation", "gauge",
           "Seq generations used (Redis data losses and failovers seen + 1).", ss.generation);
  prom_one(out, "hubu_cluster_seq_leases_total", "counter", "Seq blocks leased in the store.", ss.leases);
  prom_one(out, "hubu_cluster_seq_unavailable_total", "counter", "Seq requests answered without a seq.",
           ss.unavailable);
}

static void closing_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)st;
  (void)reply;
  hubu_cluster *c = ud;
  if (--c->closing_left == 0 && c->cmd == r) {
    c->cmd = NULL;
    hubu_redis_close(r);
  }
}

static void timer_closed(uv_handle_t *h) { (void)h; }

void hubu_cluster_close(hubu_cluster *c) {
  if (!c || c->closed) return;
  c->closed = 1;
  if (c->core->bus == &c->bus) c->core->bus = NULL;
  if (c->dir) { /* the directory goes on for core, local only */
    c->dir->c = NULL;
    c->dir = NULL;
  }
  hubu_redis_seq_detach(c->seq);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, timer_closed);
  if (c->batch_msgs) bus_flush_cb(&c->bus_flush); /* the last turn's deliveries, before the client closes */
  uv_close((uv_handle_t *)&c->bus_flush, timer_closed);
  hubu_redis_close(c->sub); /* before the heartbeat's publisher */
  c->sub = NULL;
  hubu_redis *cmd = c->cmd;
  if (!hubu_redis_is_up(cmd)) {
    c->cmd = NULL;
    hubu_redis_close(cmd);
    return;
  }
  /* Best effort: this node's presence and lease go now rather than when
   * the lease expires; the client closes once they are answered (each
   * within the command timeout). */
  const char *keys[1] = {c->key_users};
  const char *args[1] = {c->id_str};
  const char *del[2] = {"DEL", c->key_node};
  const char *srem[3] = {"SREM", "hubu:nodes", c->id_str};
  c->closing_left = 1; /* held until all are sent */
  if (hubu_redis_eval(cmd, &c->s_cleanup, 0, closing_done, c, 1, keys, NULL, 1, args, NULL) == 0) c->closing_left++;
  if (hubu_redis_command(cmd, 0, closing_done, c, 2, del, NULL) == 0) c->closing_left++;
  if (hubu_redis_command(cmd, 0, closing_done, c, 3, srem, NULL) == 0) c->closing_left++;
  closing_done(cmd, HUBU_REDIS_OK, NULL, c);
  hubu_log(HUBU_LOG_INFO, 0, NULL, "cluster_closed", "node=%u", c->node_id);
}

void hubu_cluster_free(hubu_cluster *c) {
  if (!c) return;
  if (!c->closed) hubu_cluster_close(c);
  if (c->cmd) { /* the loop did not run after close: its answers never came */
    hubu_redis *cmd = c->cmd;
    c->cmd = NULL;
    hubu_redis_close(cmd);
  }
  if (c->dir) c->dir->c = NULL;
  hubu_redis_seq_free(c->seq);
  nodes_clear(c);
  hubu_buf_free(&c->batch_keys);
  hubu_buf_free(&c->batch_args);
  free(c->batch_keylen);
  free(c->batch_arglen);
  free(c->advertise);
  free(c);
}

/* redis_seq.c — the seq allocator over Redis and a durable lease
 * (redis_seq.h). One request per asked seq: the script call, then, when the
 * script asks for it, a lease and the script call with the leased block,
 * at most max_leases times; then the answer. Core asks for one seq of a
 * session at a time, so a session has at most one request here. */
#include "redis_seq.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "session.h"

typedef struct seq_req seq_req;

struct hubu_redis_seq {
  hubu_seq_allocator base; /* first: the core/seq.h face */
  hubu_redis *redis;
  hubu_seq_lease *lease;
  hubu_redis_seq_config cfg;
  hubu_redis_script script;
  hubu_redis_seq_stats stats;
  seq_req *reqs; /* under way */
  size_t n_reqs;
  uint64_t error_logged_ms; /* when seq_script_failed was last logged */
  uint64_t errors_not_logged;
};

struct seq_req {
  hubu_redis_seq *s; /* NULL: orphaned (the allocator was freed) */
  seq_req *prev, *next;
  hubu_core *core;
  uint64_t floor;  /* the highest seq the session is known to have handed out */
  uint64_t lo, hi; /* a leased block to install, or 0 */
  uint32_t leases;
  uint32_t gen_checks;
  char lease_gen[2 * HUBU_REDIS_REPLID_MAX + 2]; /* the generation its block was asked for under */
  char session_id[];                             /* owned with the request */
};

static void req_unlink(seq_req *q) {
  hubu_redis_seq *s = q->s;
  if (!s) return;
  if (q->prev)
    q->prev->next = q->next;
  else
    s->reqs = q->next;
  if (q->next) q->next->prev = q->prev;
  s->n_reqs--;
}

/* Answers q (ok with seq, or not) and frees it. */
static void req_finish(seq_req *q, int ok, uint64_t seq) {
  hubu_redis_seq *s = q->s;
  if (s) {
    req_unlink(q);
    if (ok)
      s->stats.allocated++;
    else
      s->stats.unavailable++;
    s->cfg.answer(q->core, q->session_id, ok, seq);
  }
  free(q);
}

static int script_call(seq_req *q);

static void lease_done(void *req, int ok, uint64_t lo, uint64_t hi) {
  seq_req *q = req;
  hubu_redis_seq *s = q->s;
  if (!s) {
    free(q);
    return;
  }
  if (!ok || lo <= q->floor || hi < lo) {
    if (ok)
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "seq_lease_invalid", "session=%s floor=%" PRIu64 " lo=%" PRIu64 " hi=%" PRIu64,
               q->session_id, q->floor, lo, hi);
    req_finish(q, 0, 0);
    return;
  }
  s->stats.leases++;
  q->lo = lo;
  q->hi = hi;
  if (script_call(q) != 0) req_finish(q, 0, 0);
}

/* Asks the store for a new block for q, under the generation the allocator
 * is at now. 0 when asked (lease_done follows), -1 when it could not be. */
static int lease_again(seq_req *q) {
  hubu_redis_seq *s = q->s;
  q->leases++;
  q->lo = q->hi = 0;
  memcpy(q->lease_gen, s->stats.gen, sizeof q->lease_gen);
  return s->lease->ops->lease(s->lease, q->session_id, q->floor, s->cfg.block, lease_done, q);
}

static void replid_checked(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)reply;
  seq_req *q = ud;
  if (!q->s) {
    free(q);
    return;
  }
  if (st != HUBU_REDIS_OK) {
    req_finish(q, 0, 0);
    return;
  }
  if (script_call(q) != 0) req_finish(q, 0, 0); /* with the generation just read */
}

static void script_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  seq_req *q = ud;
  hubu_redis_seq *s = q->s;
  if (!s) {
    free(q);
    return;
  }
  if (st != HUBU_REDIS_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
      reply->element[0]->type != REDIS_REPLY_INTEGER) {
    /* An error answer (a read-only replica, a script error) repeats for
     * every SEND: logged at most once a second, with how many were not. */
    if (st == HUBU_REDIS_OK || st == HUBU_REDIS_REPLY_ERROR) {
      uint64_t now = hubu_now_ms();
      if (now - s->error_logged_ms >= 1000) {
        hubu_log(HUBU_LOG_ERROR, 0, NULL, "seq_script_failed", "session=%s answer=\"%.120s\" not_logged=%" PRIu64,
                 q->session_id, reply && reply->str ? reply->str : "unexpected reply", s->errors_not_logged);
        s->error_logged_ms = now;
        s->errors_not_logged = 0;
      } else {
        s->errors_not_logged++;
      }
    }
    req_finish(q, 0, 0);
    return;
  }
  const redisReply *v = reply->element[1];
  if (reply->element[0]->integer == 1) {
    if (v->type != REDIS_REPLY_INTEGER || v->integer <= 0 || (uint64_t)v->integer <= q->floor) {
      /* Never hand out a seq that is not above what is known handed out. */
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "seq_script_below_floor", "session=%s floor=%" PRIu64 " seq=%lld",
               q->session_id, q->floor, v->type == REDIS_REPLY_INTEGER ? v->integer : -1);
      req_finish(q, 0, 0);
      return;
    }
    req_finish(q, 1, (uint64_t)v->integer);
    return;
  }
  const char *reason = v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS ? v->str : "";
  if (strcmp(reason, "GEN") == 0) {
    /* Installing: the server's replication id is not the one this node
     * read (a promotion under an open connection): read it again (a new
     * generation) and call again, at most twice; the block, asked for
     * under the old generation, is leased again (script_call). */
    if (s->redis && q->gen_checks++ < 2 && hubu_redis_check_replid(r, s->cfg.timeout_ms, replid_checked, q) == 0)
      return;
    req_finish(q, 0, 0);
    return;
  }
  s->stats.refusals++;
  if (q->leases >= s->cfg.max_leases) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "seq_lease_gave_up", "session=%s leases=%u reason=%s", q->session_id, q->leases,
             reason);
    req_finish(q, 0, 0);
    return;
  }
  if (lease_again(q) != 0) req_finish(q, 0, 0);
}

/* The script call for q: the session's next seq, installing q's leased
 * block when it has one. 0 when sent (script_done follows), -1 when it could
 * not be (the caller answers q). */
static int script_call(seq_req *q) {
  hubu_redis_seq *s = q->s;
  if (!s->redis) return -1; /* detached: the client is closing */
  hubu_redis_health h;
  hubu_redis_get_health(s->redis, &h);
  if (!h.run_id[0] || !h.replid[0]) return -1;
  char gen[sizeof s->stats.gen];
  snprintf(gen, sizeof gen, "%s:%s", h.run_id, h.replid);
  if (strcmp(gen, s->stats.gen) != 0) {
    s->stats.generation++;
    if (s->stats.gen[0])
      hubu_log(HUBU_LOG_WARN, 0, NULL, "seq_generation_changed", "old=%s new=%s generation=%" PRIu64, s->stats.gen, gen,
               s->stats.generation);
    memcpy(s->stats.gen, gen, sizeof gen);
  }
  if (q->lo && strcmp(gen, q->lease_gen) != 0) {
    /* The block was asked for under another generation (Redis lost its data,
     * or a replica was promoted, meanwhile): blocks installed since may be
     * above it and their seqs handed out, and the new server's hash does not
     * know them. A block asked for now is above them all. */
    if (q->leases >= s->cfg.max_leases) return -1;
    return lease_again(q);
  }
  char key[HUBU_SESSION_ID_MAX + 16];
  snprintf(key, sizeof key, "hubu:seq:{%s}", q->session_id);
  char floor[24], lo[24], hi[24], ttl[16];
  snprintf(floor, sizeof floor, "%" PRIu64, q->floor);
  snprintf(lo, sizeof lo, "%" PRIu64, q->lo);
  snprintf(hi, sizeof hi, "%" PRIu64, q->hi);
  snprintf(ttl, sizeof ttl, "%" PRIu32, s->cfg.ttl_s);
  const char *keys[1] = {key};
  const char *args[5] = {gen, floor, lo, hi, ttl};
  return hubu_redis_eval(s->redis, &s->script, s->cfg.timeout_ms, script_done, q, 1, keys, NULL, 5, args, NULL);
}

static hubu_seq_result redis_next(hubu_seq_allocator *a, hubu_session *sess, uint64_t *seq) {
  (void)seq;
  hubu_redis_seq *s = (hubu_redis_seq *)a;
  if (!hubu_redis_is_up(s->redis)) {
    s->stats.unavailable++;
    return HUBU_SEQ_UNAVAILABLE;
  }
  size_t n = strlen(sess->id);
  seq_req *q = calloc(1, sizeof *q + n + 1);
  if (!q) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=redis_seq");
    s->stats.unavailable++;
    return HUBU_SEQ_UNAVAILABLE;
  }
  memcpy(q->session_id, sess->id, n + 1);
  q->s = s;
  q->core = sess->core_ref;
  q->floor = sess->next_seq > sess->committed_seq ? sess->next_seq : sess->committed_seq;
  q->next = s->reqs;
  if (s->reqs) s->reqs->prev = q;
  s->reqs = q;
  s->n_reqs++;
  /* Answers come later, never from inside next() (core waits for them
   * only once next() has returned LATER): a call that cannot be sent is
   * UNAVAILABLE now. */
  if (script_call(q) != 0) {
    req_unlink(q);
    free(q);
    s->stats.unavailable++;
    return HUBU_SEQ_UNAVAILABLE;
  }
  return HUBU_SEQ_LATER;
}

static uint64_t redis_settled(hubu_seq_allocator *a, hubu_session *sess, uint64_t seq) {
  (void)a;
  /* This node's appends of a session complete in the order their seqs were
   * assigned; other nodes' are not known here yet (the cluster-wide
   * committed watermark is still to come). */
  return seq > sess->committed_seq ? seq : sess->committed_seq;
}

static void drop_done(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)r;
  (void)reply;
  if (st != HUBU_REDIS_OK)
    hubu_log(HUBU_LOG_WARN, 0, NULL, "seq_block_drop_failed", "session=%s status=%s", (const char *)ud,
             hubu_redis_status_name(st));
  free(ud);
}

/* Retires a session's cached block: its end becomes its cur, so it hands
 * out nothing more, while the hash still says how far blocks went. A DEL
 * would forget that, and seq.lua could then install a block leased before
 * this one (a node's lease still on its way), handing out seqs again below
 * seqs already handed out: some of them taken, others stored below a later
 * client_id of the same device. */
static const char retire_lua[] =
    "local c = redis.call('HGET', KEYS[1], 'cur')\n"
    "if c then redis.call('HSET', KEYS[1], 'last', c) end\n"
    "return 0\n";

/* A seq of the session was taken: its cached block is retired, so the next
 * seq (on any node) comes from a new lease, above every seq stored. A
 * retire that fails leaves the block; the floor (the taken seq) still keeps
 * this node's next seq above it. */
static void redis_taken(hubu_seq_allocator *a, hubu_session *sess, uint64_t seq) {
  hubu_redis_seq *s = (hubu_redis_seq *)a;
  if (seq > sess->next_seq) sess->next_seq = seq;
  s->stats.blocks_dropped++;
  char key[HUBU_SESSION_ID_MAX + 16];
  snprintf(key, sizeof key, "hubu:seq:{%s}", sess->id);
  char *id = strdup(sess->id);
  const char *argv[4] = {"EVAL", retire_lua, "1", key};
  if (!id || hubu_redis_command(s->redis, s->cfg.timeout_ms, drop_done, id, 4, argv, NULL) != 0) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "seq_block_drop_failed", "session=%s status=not_sent", sess->id);
    free(id);
  }
}

static const hubu_seq_allocator_ops redis_seq_ops = {
    .next = redis_next, .settled = redis_settled, .taken = redis_taken};

hubu_redis_seq *hubu_redis_seq_new(hubu_redis *redis, hubu_seq_lease *lease, const hubu_redis_seq_config *cfg) {
  hubu_redis_seq *s = calloc(1, sizeof *s);
  if (!s) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=redis_seq_new");
    return NULL;
  }
  s->base.ops = &redis_seq_ops;
  s->redis = redis;
  s->lease = lease;
  if (cfg) s->cfg = *cfg;
  if (!s->cfg.block) s->cfg.block = 1000;
  if (!s->cfg.ttl_s) s->cfg.ttl_s = 7 * 24 * 3600;
  if (!s->cfg.max_leases) s->cfg.max_leases = 3;
  if (!s->cfg.answer) s->cfg.answer = hubu_seq_answer;
  hubu_redis_script_init(&s->script, (const char *)hubu_seq_lua, hubu_seq_lua_len);
  return s;
}

hubu_seq_allocator *hubu_redis_seq_allocator(hubu_redis_seq *s) { return &s->base; }

void hubu_redis_seq_detach(hubu_redis_seq *s) {
  if (s) s->redis = NULL;
}

void hubu_redis_seq_get_stats(const hubu_redis_seq *s, hubu_redis_seq_stats *out) { *out = s->stats; }

size_t hubu_redis_seq_pending(const hubu_redis_seq *s) { return s->n_reqs; }

void hubu_redis_seq_free(hubu_redis_seq *s) {
  if (!s) return;
  for (seq_req *q = s->reqs; q; q = q->next) q->s = NULL;
  free(s);
}

/* redis_seq.h — the seq allocator of cluster mode (core/seq.h) over Redis:
 * runtime/cluster/seq.lua hands out a session's seqs from a block cached in
 * Redis; when the block is missing, used up, of another generation, or
 * behind what the node knows was handed out, the node leases a new block
 * durably (hubu_seq_lease, implemented by the store) and calls the script
 * again with it, so the seq jumps past everything any node could have handed
 * out and no seq is ever reused (PROTOCOL.md section 5, "Jumps").
 *
 * The generation is "RUN_ID:MASTER_REPLID" of the Redis server, read by the
 * client on every connect (redis.h). A cached block is used only when it
 * carries this generation and was installed by this very server process
 * (seq.lua says why that rules out data gone back in time: restarts,
 * promoted replicas, a resynchronised master); installing one checks the
 * replication id live. The allocator counts the generations it has used.
 *
 * Not yet: the committed watermark across nodes (settled() answers as the
 * single node does: this node's own appends settle in order), and the
 * store's lease (the interface is here; no store implements it yet). */
#ifndef HUBU_CLUSTER_REDIS_SEQ_H
#define HUBU_CLUSTER_REDIS_SEQ_H

#include <stdint.h>

#include "redis.h"
#include "seq.h"

typedef struct hubu_seq_lease hubu_seq_lease;

/* The answer to a lease: ok with the block [lo, hi], or not. */
typedef void (*hubu_seq_lease_done)(void *req, int ok, uint64_t lo, uint64_t hi);

typedef struct hubu_seq_lease_ops {
  /* Reserve durably (it survives the loss of every node and of Redis) at
   * least count seqs of session_id: a block [lo, hi] with lo above every
   * seq ever leased for the session, above every seq stored in it, and
   * above floor. done(req, ...) is called exactly once, on the loop thread,
   * never from inside this call. Returns 0, or -1 when the lease cannot
   * start (done is then never called). */
  int (*lease)(hubu_seq_lease *l, const char *session_id, uint64_t floor, uint32_t count, hubu_seq_lease_done done,
               void *req);
} hubu_seq_lease_ops;

struct hubu_seq_lease {
  const hubu_seq_lease_ops *ops;
};

typedef struct {
  uint32_t block;      /* seqs per lease; 0: 1000 (a jump after a failover is at most this per session) */
  uint32_t timeout_ms; /* each script call's timeout; 0: the client's command timeout */
  uint32_t ttl_s;      /* a cached block's life in Redis; 0: 7 days */
  uint32_t max_leases; /* leases per seq before the SEND is answered UNAVAILABLE; 0: 3 */
  /* Where answers go; NULL: hubu_seq_answer (tests of the allocator alone give their own). */
  void (*answer)(hubu_core *core, const char *session_id, int ok, uint64_t seq);
} hubu_redis_seq_config;

typedef struct {
  uint64_t allocated;                      /* seqs handed out */
  uint64_t leases;                         /* blocks leased */
  uint64_t refusals;                       /* script answers that asked for a lease */
  uint64_t unavailable;                    /* requests answered without a seq */
  uint64_t generation;                     /* generations used (1 after the first call, +1 at every change) */
  uint64_t blocks_dropped;                 /* cached blocks dropped after a seq was found taken */
  char gen[2 * HUBU_REDIS_REPLID_MAX + 2]; /* the current one */
} hubu_redis_seq_stats;

typedef struct hubu_redis_seq hubu_redis_seq;

/* redis (a command client) and lease are not owned and must outlive the
 * allocator's requests. NULL when out of memory. */
hubu_redis_seq *hubu_redis_seq_new(hubu_redis *redis, hubu_seq_lease *lease, const hubu_redis_seq_config *cfg);

/* The core/seq.h face: next() returns HUBU_SEQ_LATER and answers through
 * cfg->answer, or HUBU_SEQ_UNAVAILABLE at once when Redis is down. */
hubu_seq_allocator *hubu_redis_seq_allocator(hubu_redis_seq *s);

/* The client is about to close: from now on next() answers
 * HUBU_SEQ_UNAVAILABLE and requests still under way (a lease in the store)
 * are answered without a seq, without touching the client again. */
void hubu_redis_seq_detach(hubu_redis_seq *s);

void hubu_redis_seq_get_stats(const hubu_redis_seq *s, hubu_redis_seq_stats *out);

/* Requests still waiting for Redis or a lease. */
size_t hubu_redis_seq_pending(const hubu_redis_seq *s);

/* Frees the allocator; requests still under way are answered by nobody
 * (their Redis and lease callbacks find them orphaned and free them). */
void hubu_redis_seq_free(hubu_redis_seq *s);

/* seq.lua, embedded at build time. */
extern const unsigned char hubu_seq_lua[];
extern const size_t hubu_seq_lua_len;

#endif

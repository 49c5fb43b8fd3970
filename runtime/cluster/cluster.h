/* cluster.h — the parts of hubud that change when several nodes share one
 * store: the seq allocator (core/seq.h), the presence directory (core/
 * directory.h) and the node bus (core/bus.h).
 *
 * One node: hubu_cluster_single_seq, one writer per session, so a session's
 * seqs are counted in memory and settle in the order they were assigned.
 *
 * Cluster mode (hubu_cluster_start, runtime/cluster/cluster.c): every node
 * is a full hubud on the shared store and one Redis, which holds
 *   hubu:node:{ID}        the node's lease: "v1 INCARNATION STARTED_MS
 *                         CONNECTIONS USERS ADVERTISE", PX lease_ms,
 *                         refreshed every lease_ms/5 (SET ... GET)
 *   hubu:nodes            the set of node ids that registered
 *   hubu:pr:{USER}        the user's presence: field "NODE:CONN_ID", value
 *                         the device
 *   hubu:node:{ID}:users  the users with presence entries of node ID
 * and carries the bus on pub/sub channels hubu:bus:ID (deliveries to node
 * ID) and hubu:bus:all (kicks and invalidations), with the subscriber's
 * heartbeat on hubu:bus:ID:ping. Entries of a node whose lease is gone are
 * ignored by readers and deleted by them. Nothing here blocks the loop, and
 * a node whose Redis is down keeps serving its own connections. */
#ifndef HUBU_CLUSTER_H
#define HUBU_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "seq.h"

/* The single node's allocator: the session's own counter, answered at once;
 * appends complete in submission order, so the watermark is the last settled
 * seq. Stateless: one shared instance serves every core. */
hubu_seq_allocator *hubu_cluster_single_seq(void);

/* ---- cluster mode ---- */

typedef struct hubu_core hubu_core;
typedef struct hubu_store hubu_store;

typedef struct {
  const char *redis_url; /* redis://[:PASSWORD@]HOST[:PORT][/DB] */
  uint32_t node_id;      /* unique in the cluster (core's node_id) */
  uint32_t lease_ms;     /* the node's lease in Redis; 0: 5000; refreshed every lease_ms/5 */
  uint32_t seq_block;    /* seqs per durable lease; 0: 1000 */
  const char *advertise; /* free text shown by `hubuctl cluster` (the node's listeners); may be NULL */
  uint32_t timeout_ms;   /* each Redis command's timeout (and the heartbeat's); 0: 1000 */
} hubu_cluster_config;

typedef struct hubu_cluster hubu_cluster;

/* What the node did (describe() and metrics show them). */
typedef struct {
  uint64_t deliveries_sent;      /* deliveries published, one per target node */
  uint64_t deliveries_received;  /* deliveries from other nodes handed to core */
  uint64_t bus_failed;           /* deliveries, kicks and invalidations not sent (Redis down, too much
                                    pending) or whose call failed */
  uint64_t deliveries_broadcast; /* deliver() calls sent to every live node (many users) */
  uint64_t kicks_sent, kicks_received;
  uint64_t invalidations_sent, invalidations_received;
  uint64_t malformed;         /* bus messages dropped as malformed */
  uint64_t presence_writes;   /* presence commands sent (HSET, HDEL, SADD, SREM) */
  uint64_t presence_failed;   /* presence commands not sent or failed (a rewrite follows) */
  uint64_t presence_rewrites; /* times the whole local presence was written again */
  uint64_t lease_refreshes;   /* lease SETs answered */
  uint64_t lease_failures;    /* lease SETs not sent or failed */
  uint64_t lease_lost;        /* refreshes that found the lease gone (expired, or Redis lost it) */
  uint64_t lease_conflicts;   /* refreshes that found another live process under this node id */
} hubu_cluster_stats;

/* Starts cluster mode on core, before the listeners take connections: the
 * Redis clients (commands + subscriber), the seq allocator (redis_seq.c over
 * store_lease.c on store), the presence directory wrapping core's local one,
 * and the bus; sets core->seq, core->directory (the wrapper owns and frees
 * the local one through ops->free), core->bus. core's directory must have
 * no peer yet. Does not wait for Redis: a node whose Redis is down starts
 * and is degraded. NULL + err on a bad URL or when memory runs out. */
hubu_cluster *hubu_cluster_start(hubu_core *core, hubu_store *store, const hubu_cluster_config *cfg, char *err,
                                 size_t err_size);

/* 1 when healthy; 0 with why ("redis: connect timed out ...", "bus:
 * heartbeat not received ...", "lease lost ..."). why may be NULL. */
int hubu_cluster_healthy(hubu_cluster *c, char *why, size_t why_size);

/* A JSON object for GET /v1/admin/cluster: this node's id, the seq
 * generation, Redis' health, the counters, and every node of the last
 * refresh (id, lease_ms_left, connections, users, started_ms, advertise).
 * Appended to out. 0, or -1 when memory runs out. */
int hubu_cluster_describe(hubu_cluster *c, hubu_buf *out);

/* Prometheus lines for /metrics (hubu_cluster_* families). */
void hubu_cluster_metrics(hubu_cluster *c, hubu_buf *out);

void hubu_cluster_get_stats(const hubu_cluster *c, hubu_cluster_stats *out);

/* Live nodes of the last refresh, this one included. */
size_t hubu_cluster_live_nodes(hubu_cluster *c);

/* Stops (paused 1) or restarts (0) the lease refresh, as a node whose loop
 * is stuck would: for drills and tests. */
void hubu_cluster_pause_lease(hubu_cluster *c, int paused);

/* The drain is over: removes this node's presence and lease from Redis
 * (best effort: the commands get at most the command timeout, while the
 * loop runs on) and closes the Redis clients; no cluster callback runs after
 * the loop ends. core->bus is set to NULL; core->seq and the directory stay
 * valid and answer as a node without Redis (the seq allocator UNAVAILABLE). */
void hubu_cluster_close(hubu_cluster *c);

/* After close() and once the loop ended (the store closed: its leases in
 * flight completed). core->seq points into c: free the core first, or set
 * core->seq to NULL. NULL is ignored. */
void hubu_cluster_free(hubu_cluster *c);

#endif

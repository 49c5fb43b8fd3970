/* core.h — the messaging core of one loop: its sessions, who is online, the
 * devices and their send state, the msg_id generator and the counters. It
 * reaches connections only through peers (peer.h), the plugins only through
 * one hook dispatch (hooks.h), and the disk only through the store. */
#ifndef HUBU_CORE_H
#define HUBU_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "directory.h"
#include "hooks.h"
#include "peer.h"
#include "seq.h"

#define HUBU_SERVER_NAME "hubud/0.1.0" /* HelloOk.server */

typedef struct hubu_store hubu_store;
typedef struct hubu_session hubu_session;
typedef struct hubu_device hubu_device;

/* The settings core reads; main fills them from flags and hubu.lua. */
typedef struct {
  uint32_t node_id;           /* 0-1023, part of every msg_id */
  uint32_t max_frame;         /* largest frame body (HELLO_OK announces it; a PUSH frame stays under it) */
  uint32_t heartbeat_ms;      /* announced in HELLO_OK */
  uint32_t max_inflight;      /* unacknowledged pushes per peer before PULL_HINT */
  size_t max_inflight_bytes;  /* ... and bytes */
  uint32_t ack_timeout_ms;    /* resend an unacknowledged push after this */
  uint32_t pull_limit_max;    /* cap on PullRequest.limit */
  size_t tail_cache_bytes;    /* bytes the tails of all sessions may hold; 0: no bound */
  uint32_t session_cache_max; /* sessions kept in memory; past it the least recently used idle one goes; 0: no bound */
  int cluster;                /* cluster mode: other nodes write the same store (runtime/cluster/) */
  uint32_t pull_settle_ms;    /* cluster mode (several writers per session): PULL reads the store and proves a hole
                                 once the message above it is this old (store.h); 0: one node, the tail serves */
} hubu_core_config;

typedef struct {
  uint64_t sends_received;
  uint64_t messages_stored;
  uint64_t pulls_from_tail;
  uint64_t pulls_from_store;
  uint64_t pushes_out_of_order; /* cluster mode: not pushed, a higher seq of the session was (delivery.c) */
} hubu_core_stats;

struct hubu_core {
  uv_loop_t *loop;
  hubu_core_config cfg;
  hubu_store *store;                 /* not owned; NULL once closed */
  hubu_hooks hooks;                  /* the plugin host's dispatch; dispatch NULL: no plugins */
  hubu_seq_allocator *seq;           /* not owned; NULL: each session counts its own seqs (one node) */
  struct hubu_bus *bus;              /* not owned; NULL: one node (bus.h) */
  hubu_session *sessions;            /* uthash, owned; in order of last use, least recent first */
  hubu_session *tail_lru, *tail_mru; /* sessions with a non-empty tail, least recently used first */
  size_t tail_bytes;                 /* what the tails hold (session.c) */
  hubu_directory *directory; /* who is online (directory.h); owned: the local one unless replaced before start */
  hubu_device *devices;      /* uthash, owned */
  hubu_peer *transients;     /* authenticated transient peers (HTTP API requests), linked through user_next */
  struct hubu_seq_waiter *verdict_waits; /* uthash by send_ref: SENDs whose plugins answer later (not owned:
                                            each is in its session's seq queue) */
  uint64_t next_send_ref;
  uint64_t msg_id_ms; /* msg_id generator: last millisecond used */
  uint32_t msg_id_counter;
  hubu_core_stats stats;
};

/* Also makes the single node's directory (core->directory). 0, or -1 when
 * memory runs out. */
int hubu_core_init(hubu_core *core, uv_loop_t *loop, const hubu_core_config *cfg, hubu_store *store);

/* Frees sessions, devices and the directory (after the loop ended). */
void hubu_core_free(hubu_core *core);

/* A msg_id unique across the deployment: milliseconds since 2025-01-01 (41
 * bits) | node id (10 bits) | counter (12 bits), never decreasing. */
uint64_t hubu_core_next_msg_id(hubu_core *core);

/* The peers of user on this node (linked through user_next), or NULL. */
static inline hubu_peer *hubu_core_peers_of(hubu_core *core, const char *user) {
  return core->directory->ops->peers_of(core->directory, user);
}

/* The peer of user with this id, or NULL (it closed meanwhile). */
hubu_peer *hubu_core_peer_find(hubu_core *core, const char *user, uint64_t peer_id);

/* Sends GOAWAY KICKED to every authenticated peer of user, and in cluster
 * mode asks the other nodes to kick theirs. Returns how many on this node. */
int hubu_core_kick(hubu_core *core, const char *user, const char *reason);

/* About once a second: saves delivered cursors, forgets idle sessions. */
void hubu_core_housekeeping(hubu_core *core, uint64_t now_ms);

#endif

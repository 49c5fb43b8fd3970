/* delivery.h — what each connection is owed: the PUSH frame being built this
 * loop turn, the inflight window of unacknowledged messages, and the
 * PULL_HINTs that replace pushes once the window is full. */
#ifndef HUBU_DELIVERY_H
#define HUBU_DELIVERY_H

#include <stdint.h>

#include "msg.h"

typedef struct hubu_core hubu_core;
typedef struct hubu_peer hubu_peer;
typedef struct hubu_session hubu_session;

/* One pushed, unacknowledged message. */
typedef struct {
  hubu_msg *msg;    /* owned reference */
  uint64_t sent_ms; /* when it was last (re)sent */
  uint32_t resends;
} hubu_inflight_entry;

/* Owned by its connection; exists only while something is unacknowledged. */
typedef struct hubu_inflight {
  hubu_inflight_entry *entries; /* push order */
  uint32_t len, cap;
  size_t bytes;
} hubu_inflight;

/* A coalesced PULL_HINT waiting for the next flush. Owned by its connection. */
typedef struct hubu_hint {
  struct hubu_hint *next;
  uint64_t max_seq;
  char session_id[]; /* NUL-terminated */
} hubu_hint;

/* Pushes m to every online connection of every member of sess but the one
 * with id except_conn. */
void hubu_delivery_route(hubu_core *core, hubu_session *sess, hubu_msg *m, uint64_t except_conn);

/* Pushes m to c, or hints its session when c's window is full. */
void hubu_delivery_push(hubu_core *core, hubu_peer *c, hubu_msg *m);

/* Cluster mode: whether a message of session_id was pushed to c (the node
 * that stored it named c's user a recipient, though this node may not have
 * the session loaded). */
int hubu_delivery_pushed(const hubu_peer *c, const char *session_id);

/* A cumulative DELIVER_ACK cursor: retires inflight messages of session_id up to seq. */
void hubu_delivery_ack(hubu_peer *c, const char *session_id, uint64_t seq);

/* Writes pending hints into c's output (called by the flush). */
void hubu_delivery_write_hints(hubu_peer *c);

/* Retransmits after ack_timeout; returns -1 when c should be closed. */
int hubu_delivery_sweep(hubu_peer *c, uint64_t now_ms);

void hubu_delivery_free(hubu_peer *c);

#endif

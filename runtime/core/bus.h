/* bus.h — what core tells the other nodes of a cluster, and what it does
 * when they tell it something. On one node core->bus is NULL and nothing
 * here is called. In cluster mode the cluster layer (runtime/cluster/)
 * implements the ops over the node bus and calls the entry points below when
 * a message from another node arrives. Nothing on the bus is needed for
 * correctness: a delivery that is lost only delays a message (it is stored;
 * the client's gap check or next SYNC fetches it). */
#ifndef HUBU_CORE_BUS_H
#define HUBU_CORE_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"

typedef struct hubu_core hubu_core;
typedef struct hubu_bus hubu_bus;

typedef struct hubu_bus_ops {
  /* m was stored by this node and delivered to this node's peers: every
   * other node serving any of users[0..n) delivers it to its own peers of
   * users[i] in modes[i] (hubu_route_mode: push or hint). One delivery per
   * target node. The bus copies what it keeps. */
  void (*deliver)(hubu_bus *b, const hubu_msg *m, const char *const *users, const uint8_t *modes, size_t n);
  /* user was kicked here: the other nodes kick their peers of user too. */
  void (*kick)(hubu_bus *b, const char *user, const char *reason);
  /* The members of session_id changed here: the other nodes drop their copy. */
  void (*invalidate)(hubu_bus *b, const char *session_id);
} hubu_bus_ops;

/* Owned by the cluster layer; core holds a reference while it runs. */
struct hubu_bus {
  const hubu_bus_ops *ops;
};

/* ---- entry points for what other nodes send (implemented by core) ---- */

/* Another node stored m: push it (or hint it) to this node's peers of
 * users[i] in modes[i]. Takes its own references to m. */
void hubu_bus_delivered(hubu_core *core, hubu_msg *m, const char *const *users, const uint8_t *modes, size_t n);

/* Another node kicked user: GOAWAY KICKED to this node's peers of user.
 * Returns how many. */
int hubu_bus_kicked(hubu_core *core, const char *user, const char *reason);

/* Another node changed the members of session_id: the next use reloads them. */
void hubu_bus_invalidated(hubu_core *core, const char *session_id);

#endif

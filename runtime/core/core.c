/* core.c — the core's own state: the msg_id generator, finding and kicking
 * peers, housekeeping, and the hook results' memory.
 * Invariant: everything here runs on the loop thread that owns the core. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "clock.h"
#include "presence.h"
#include "session.h"
#include "wire.h"

#define MSG_ID_EPOCH_MS 1735689600000ull /* 2025-01-01T00:00:00Z */
#define SESSION_IDLE_MS 120000

int hubu_core_init(hubu_core *core, uv_loop_t *loop, const hubu_core_config *cfg, hubu_store *store) {
  core->loop = loop;
  core->cfg = *cfg;
  core->store = store;
  core->directory = hubu_directory_local_new();
  return core->directory ? 0 : -1;
}

void hubu_core_free(hubu_core *core) {
  hubu_session_free_all(core);
  hubu_presence_free_all(core);
  if (core->directory) core->directory->ops->free(core->directory);
  core->directory = NULL;
}

uint64_t hubu_core_next_msg_id(hubu_core *core) {
  uint64_t now = hubu_now_ms() - MSG_ID_EPOCH_MS;
  if (now > core->msg_id_ms) {
    core->msg_id_ms = now;
    core->msg_id_counter = 0;
  } else if (++core->msg_id_counter >= 4096) { /* borrow the next millisecond */
    core->msg_id_ms++;
    core->msg_id_counter = 0;
  }
  return (core->msg_id_ms << 22) | ((uint64_t)(core->cfg.node_id & 1023) << 12) | core->msg_id_counter;
}

hubu_peer *hubu_core_peer_find(hubu_core *core, const char *user, uint64_t peer_id) {
  for (hubu_peer *p = hubu_core_peers_of(core, user); p; p = p->user_next)
    if (p->id == peer_id) return p;
  for (hubu_peer *p = core->transients; p; p = p->user_next) /* as many as HTTP requests in flight */
    if (p->id == peer_id) return p;
  return NULL;
}

int hubu_core_kick(hubu_core *core, const char *user, const char *reason) {
  if (core->bus) core->bus->ops->kick(core->bus, user, reason);
  return hubu_bus_kicked(core, user, reason);
}

int hubu_bus_kicked(hubu_core *core, const char *user, const char *reason) {
  int n = 0;
  for (hubu_peer *p = hubu_core_peers_of(core, user), *next; p; p = next) {
    next = p->user_next; /* a GOAWAY may unlink p */
    if (p->state != HUBU_PEER_READY) continue;
    p->ops->goaway(p, HUBU__V1__CODE__KICKED, reason, 0);
    n++;
  }
  return n;
}

void hubu_core_housekeeping(hubu_core *core, uint64_t now_ms) {
  hubu_presence_save_cursors(core);
  if (now_ms > SESSION_IDLE_MS) hubu_session_evict_idle(core, now_ms - SESSION_IDLE_MS);
}

int hubu_peer_send(hubu_peer *p, uint8_t type, const ProtobufCMessage *msg) {
  if (p->state >= HUBU_PEER_CLOSING) return -1;
  if (hubu_wire_append(p->ops->output(p), type, msg) != 0) return -1;
  p->ops->wrote(p);
  return 0;
}

void hubu_send_verdict_free(hubu_send_verdict *v) {
  free(v->body);
  free(v->content_type);
  free(v->meta);
  memset(v, 0, sizeof *v);
}

void hubu_route_plan_free(hubu_route_plan *plan) {
  for (size_t i = 0; i < plan->n; i++) free(plan->users[i]);
  free(plan->users);
  free(plan->modes);
  free(plan->extra);
  memset(plan, 0, sizeof *plan);
}

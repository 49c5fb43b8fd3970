/* delivery.c — PUSH, inflight windows, retransmission and PULL_HINT.
 * Invariants: on one connection the messages of one session are pushed in
 * seq order (the window is FIFO and retransmits resend it in order); a
 * message is encoded once, and each PUSH frame only copies its bytes. */
#include "delivery.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "bus.h"
#include "core.h"
#include "frame.h"
#include "log.h"
#include "presence.h"
#include "session.h"
#include "wire.h"

#define MAX_RETRANSMITS 3

/* Appends m's entry to the PUSH frame opened this turn, or opens one. A
 * frame's body never exceeds max_frame: an entry that alone would (a body a
 * plugin enlarged past what SEND allows) is not pushed (-1); the client finds
 * the seq missing and pulls. */
static int push_write(hubu_peer *c, hubu_msg *m) {
  hubu_buf *w = c->ops->output(c);
  size_t size = hubu_buf_size(w);
  uint32_t max_body = c->core->cfg.max_frame;
  if (m->push_entry_len > max_body) {
    hubu_log(HUBU_LOG_WARN, c->id, c->user, "push_too_large", "session=%s seq=%llu entry=%zu max_frame=%u",
             m->session_id, (unsigned long long)m->seq, m->push_entry_len, max_body);
    return -1;
  }
  int extend = c->push_open && size == c->push_end &&
               size - c->push_start - HUBU_FRAME_HEADER_SIZE + m->push_entry_len <= max_body;
  uint8_t *p = hubu_buf_reserve(w, HUBU_FRAME_HEADER_SIZE + m->push_entry_len);
  if (!p) return -1;
  if (!extend) {
    hubu_frame_header_encode(p, HUBU_FRAME_PUSH, 0, 0);
    w->len += HUBU_FRAME_HEADER_SIZE;
    c->push_start = size;
    c->push_open = 1;
    p += HUBU_FRAME_HEADER_SIZE;
  }
  memcpy(p, m->push_entry, m->push_entry_len);
  w->len += m->push_entry_len;
  c->push_end = hubu_buf_size(w);
  uint8_t *header = w->data + w->off + c->push_start;
  hubu_frame_header_encode(header, HUBU_FRAME_PUSH, 0,
                           (uint32_t)(c->push_end - c->push_start - HUBU_FRAME_HEADER_SIZE));
  c->ops->wrote(c);
  return 0;
}

static void hint(hubu_peer *c, hubu_msg *m) {
  for (hubu_hint *h = c->hints; h; h = h->next) {
    if (strcmp(h->session_id, m->session_id) == 0) {
      if (m->seq > h->max_seq) h->max_seq = m->seq;
      return;
    }
  }
  size_t len = strlen(m->session_id) + 1;
  hubu_hint *h = malloc(sizeof *h + len);
  if (!h) return; /* the client's gap check or next SYNC still finds the message */
  memcpy(h->session_id, m->session_id, len);
  h->max_seq = m->seq;
  h->next = c->hints;
  c->hints = h;
  c->ops->wrote(c);
}

/* Cluster mode: the highest seq pushed to a connection, per session. On one
 * node a session's messages reach delivery in seq order; with several
 * writers a message from another node can arrive after a higher seq was
 * pushed, and is then not pushed (PUSHes of a session stay in increasing
 * seq on a connection): the client finds the gap and pulls it. */
typedef struct hubu_pushed {
  UT_hash_handle hh;
  uint64_t seq;
  char session_id[]; /* the key */
} hubu_pushed;

/* 1 when m may be pushed to c now (and it is recorded), 0 when a higher seq
 * of its session went first. */
static int push_in_order(hubu_peer *c, const hubu_msg *m) {
  hubu_pushed *e = NULL;
  HASH_FIND_STR(c->pushed, m->session_id, e);
  if (e) {
    if (m->seq <= e->seq) return 0;
    e->seq = m->seq;
    return 1;
  }
  size_t len = strlen(m->session_id) + 1;
  if ((e = malloc(sizeof *e + len))) { /* without it, order is not checked for this session */
    memcpy(e->session_id, m->session_id, len);
    e->seq = m->seq;
    HASH_ADD_STR(c->pushed, session_id, e);
  }
  return 1;
}

int hubu_delivery_pushed(const hubu_peer *c, const char *session_id) {
  hubu_pushed *e = NULL;
  HASH_FIND_STR(c->pushed, session_id, e);
  return e != NULL;
}

void hubu_delivery_push(hubu_core *core, hubu_peer *c, hubu_msg *m) {
  if (c->state != HUBU_PEER_READY) return;
  if (core->cfg.cluster && !push_in_order(c, m)) {
    core->stats.pushes_out_of_order++;
    return;
  }
  hubu_inflight *in = c->inflight;
  if (in && (in->len >= core->cfg.max_inflight || in->bytes + m->push_entry_len > core->cfg.max_inflight_bytes)) {
    hint(c, m);
    return;
  }
  if (!in && !(in = c->inflight = calloc(1, sizeof *in))) return;
  if (in->len == in->cap) {
    uint32_t cap = in->cap ? in->cap * 2 : 8;
    hubu_inflight_entry *e = realloc(in->entries, cap * sizeof *e);
    if (!e) return;
    in->entries = e;
    in->cap = cap;
  }
  if (push_write(c, m) != 0) return;
  in->entries[in->len++] = (hubu_inflight_entry){hubu_msg_ref(m), uv_now(core->loop), 0};
  in->bytes += m->push_entry_len;
}

/* Delivers m to every connection of user in mode (push, hint or nothing). */
static void deliver_to(hubu_core *core, const char *user, hubu_msg *m, uint64_t except_conn, uint8_t mode) {
  if (mode == HUBU_ROUTE_NONE) return;
  for (hubu_peer *c = hubu_core_peers_of(core, user); c; c = c->user_next) {
    if (c->id == except_conn || c->state != HUBU_PEER_READY) continue;
    if (mode == HUBU_ROUTE_HINT)
      hint(c, m);
    else
      hubu_delivery_push(core, c, m);
  }
}

static uint8_t plan_mode(const hubu_route_plan *plan, const char *user) {
  for (size_t i = 0; i < plan->n; i++)
    if (!plan->extra[i] && strcmp(plan->users[i], user) == 0) return plan->modes[i];
  return plan->default_mode;
}

/* The recipients this node told the bus about for one message: every user
 * with a mode other than none. */
typedef struct {
  const char **users;
  uint8_t *modes;
  size_t n, cap;
} bus_targets;

static void bus_add(bus_targets *t, const char *user, uint8_t mode) {
  if (mode == HUBU_ROUTE_NONE || t->cap == (size_t)-1) return;
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 16;
    const char **u = realloc(t->users, cap * sizeof *u);
    if (u) t->users = u;
    uint8_t *m = u ? realloc(t->modes, cap) : NULL;
    if (m) t->modes = m;
    if (!u || !m) { /* the other nodes' clients find the message by their gap check or SYNC */
      t->cap = (size_t)-1;
      return;
    }
    t->cap = cap;
  }
  t->users[t->n] = user;
  t->modes[t->n++] = mode;
}

void hubu_delivery_route(hubu_core *core, hubu_session *sess, hubu_msg *m, uint64_t except_conn) {
  hubu_member_names direct;
  const char *const *members;
  size_t n = hubu_session_member_list(sess, &direct, &members);
  bus_targets t = {0};
  hubu_hook_call call = {.event = HUBU_HOOK_ROUTE, .session = sess, .msg = m};
  int planned = hubu_hooks_run(&core->hooks, &call);
  const hubu_route_plan *plan = &call.plan;
  for (size_t i = 0; i < n; i++) { /* no plan: push to everyone */
    uint8_t mode = planned ? plan_mode(plan, members[i]) : HUBU_ROUTE_PUSH;
    deliver_to(core, members[i], m, except_conn, mode);
    if (core->bus) bus_add(&t, members[i], mode);
  }
  for (size_t i = 0; planned && i < plan->n; i++) /* recipients a plugin added */
    if (plan->extra[i]) {
      deliver_to(core, plan->users[i], m, except_conn, plan->modes[i]);
      if (core->bus) bus_add(&t, plan->users[i], plan->modes[i]);
    }
  if (core->bus && t.n && t.cap != (size_t)-1) core->bus->ops->deliver(core->bus, m, t.users, t.modes, t.n);
  free(t.users);
  free(t.modes);
  if (planned) hubu_route_plan_free(&call.plan);
}

void hubu_bus_delivered(hubu_core *core, hubu_msg *m, const char *const *users, const uint8_t *modes, size_t n) {
  for (size_t i = 0; i < n; i++) deliver_to(core, users[i], m, 0, modes[i]);
}

void hubu_delivery_ack(hubu_peer *c, const char *session_id, uint64_t seq) {
  hubu_inflight *in = c->inflight;
  if (!in) return;
  uint32_t kept = 0;
  for (uint32_t i = 0; i < in->len; i++) {
    hubu_msg *m = in->entries[i].msg;
    if (m->seq <= seq && strcmp(m->session_id, session_id) == 0) {
      in->bytes -= m->push_entry_len;
      hubu_msg_unref(m);
    } else {
      in->entries[kept++] = in->entries[i];
    }
  }
  in->len = kept;
  if (!in->len) { /* an idle connection holds no window */
    free(in->entries);
    free(in);
    c->inflight = NULL;
  }
}

void hubu_delivery_write_hints(hubu_peer *c) {
  while (c->hints) {
    hubu_hint *h = c->hints;
    c->hints = h->next;
    Hubu__V1__PullHint ph = HUBU__V1__PULL_HINT__INIT;
    ph.session_id = h->session_id;
    ph.max_seq = h->max_seq;
    hubu_wire_append(c->ops->output(c), HUBU_FRAME_PULL_HINT, &ph.base);
    free(h);
  }
}

int hubu_delivery_sweep(hubu_peer *c, uint64_t now) {
  hubu_inflight *in = c->inflight;
  if (!in) return 0;
  uint64_t timeout = c->core->cfg.ack_timeout_ms;
  uint32_t resent = 0;
  for (uint32_t i = 0; i < in->len; i++) { /* each message on its own clock, in push order */
    hubu_inflight_entry *e = &in->entries[i];
    if (now - e->sent_ms < timeout) continue;
    if (e->resends >= MAX_RETRANSMITS) return -1;
    if (!resent++) c->push_open = 0; /* a fresh frame, after whatever is queued */
    if (push_write(c, e->msg) != 0) return -1;
    e->sent_ms = now;
    e->resends++;
  }
  if (resent) hubu_log(HUBU_LOG_DEBUG, c->id, c->user, "retransmit", "messages=%u", resent);
  return 0;
}

void hubu_delivery_free(hubu_peer *c) {
  hubu_inflight *in = c->inflight;
  if (in) {
    for (uint32_t i = 0; i < in->len; i++) hubu_msg_unref(in->entries[i].msg);
    free(in->entries);
    free(in);
    c->inflight = NULL;
  }
  while (c->hints) {
    hubu_hint *h = c->hints;
    c->hints = h->next;
    free(h);
  }
  hubu_pushed *e, *tmp;
  HASH_ITER(hh, c->pushed, e, tmp) {
    HASH_DEL(c->pushed, e);
    free(e);
  }
}

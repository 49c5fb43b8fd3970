/* messages.c — the message layer of libhubu-client, PROTOCOL.md section 5 on
 * the client side: the send queue (with its outbox) kept until SEND_ACK and
 * resent in client_id order; per-session cursors with a reorder buffer; gap,
 * hint and SYNC driven PULLs (one in flight per session); cumulative
 * DELIVER_ACKs once per loop turn; history pulls and session lists.
 * Invariants: a cursor moves only past messages handed to on_received or past
 * seqs a PULL proved absent, so on_received sees each (session, seq) once and
 * in order; every user callback may close the client, so each is followed by
 * a c->closing check (the memory stays valid until the handles have closed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "client_internal.h"
#include "clock.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "wire.h"

#define HUBU_HELD_MAX 50000     /* reorder buffer per session; past it a message is left to the PULL */
#define HUBU_RETRY_MAX_MS 1000  /* resend after UNAVAILABLE/INTERNAL/TIMEOUT answers, at most this late */
#define HUBU_SYNC_RETRY_MS 1000 /* a failed SYNC is repeated after this */
#define HUBU_META_ON_STACK 32

/* A message held in a reorder buffer: its packed Message bytes. One allocation. */
typedef struct {
  uint64_t seq;
  size_t len;
  uint8_t bytes[];
} hubu_held;

/* What the client knows of one session. Owned by the messages' hash, freed
 * with the client; owns its id and its held messages. */
typedef struct hubu_rx_session {
  UT_hash_handle hh;
  char *id;           /* the hash key */
  uint64_t cursor;    /* highest seq delivered (or proved absent) */
  uint64_t acked;     /* cursor of the last DELIVER_ACK */
  uint64_t known_max; /* highest max_seq the server announced (SYNC, PULL_HINT, PULL_RESULT) */
  hubu_held **held;   /* reorder buffer, ascending seq, every seq > cursor + 1 once drained */
  uint32_t n_held, cap_held;
  uint64_t wake_ms;                 /* uv_now when the gap timer looks again (0: not waiting) */
  int wake_drain;                   /* the wake is a drain after set_cursor, not a gap timeout */
  uint64_t pull_request_id;         /* the delivery PULL in flight, 0: none */
  uint64_t pull_after;              /* its after_seq */
  struct hubu_rx_session *ack_next; /* in the DELIVER_ACK list while ack_queued */
  int ack_queued;
} hubu_rx_session;

/* A history PULL or a session list waiting for its answer. Owned by the
 * messages' request list until answered or failed. */
typedef struct hubu_request {
  struct hubu_request *next;
  uint64_t request_id;
  hubu_client_pull_cb pull_cb; /* one of the two */
  hubu_client_sessions_cb sessions_cb;
  void *ud;
} hubu_request;

/* Owned by its client (c->msgs). Owns the pending sends, the outbox, the
 * sessions and the requests; its two timers count in c->refs. */
struct hubu_messages {
  uint32_t send_timeout_ms, gap_wait_ms, pull_limit;
  int auto_sync;
  int frames_only;                    /* options.frames_only: deliveries are left to on_frame */
  hubu_outgoing *out_head, *out_tail; /* pending sends, ascending client_id */
  size_t n_out;
  uint64_t last_client_id; /* highest client_id used here or reported by a HELLO_OK */
  int hello_seen;          /* a HELLO_OK arrived: new client_ids are above the server's mark */
  hubu_outbox *outbox;     /* NULL without outbox_path */
  hubu_rx_session *sessions;
  hubu_rx_session *ack_head;
  hubu_request *requests;
  uint64_t next_request_id;
  uint64_t sync_request_id;     /* the library's own SYNC in flight, 0: none */
  uint64_t resync_ms;           /* repeat a failed SYNC at this uv_now (0: no) */
  uv_timer_t resend_timer;      /* the earliest due_ms of the pending sends */
  uv_timer_t gap_timer;         /* the earliest wake_ms of the sessions, and resync_ms */
  uint64_t resend_due, gap_due; /* when each timer fires, 0: stopped */
  uint32_t retry_after_ms;      /* the SendAck being reported through on_failed, else 0 */
  hubu_client_stats stats;
};

static uint64_t now_ms(hubu_client *c) { return uv_now(c->loop); }

uint32_t hubu_client_retry_after_ms(const hubu_client *c) { return c->msgs ? c->msgs->retry_after_ms : 0; }

/* ---- timers ---- */

static void on_resend_timer(uv_timer_t *t);
static void on_gap_timer(uv_timer_t *t);

static void resend_arm(hubu_client *c, uint64_t due) {
  hubu_messages *m = c->msgs;
  if (c->closing || (m->resend_due && m->resend_due <= due)) return;
  uint64_t now = now_ms(c);
  m->resend_due = due > now ? due : now;
  uv_timer_start(&m->resend_timer, on_resend_timer, m->resend_due - now, 0);
}

static void gap_arm(hubu_client *c, uint64_t due) {
  hubu_messages *m = c->msgs;
  if (c->closing || (m->gap_due && m->gap_due <= due)) return;
  uint64_t now = now_ms(c);
  m->gap_due = due > now ? due : now;
  uv_timer_start(&m->gap_timer, on_gap_timer, m->gap_due - now, 0);
}

/* ---- the pending list ---- */

static void out_append(hubu_messages *m, hubu_outgoing *o) {
  o->next = NULL;
  o->prev = m->out_tail;
  if (m->out_tail)
    m->out_tail->next = o;
  else
    m->out_head = o;
  m->out_tail = o;
  m->n_out++;
}

static void out_remove(hubu_messages *m, hubu_outgoing *o) {
  if (o->prev)
    o->prev->next = o->next;
  else
    m->out_head = o->next;
  if (o->next)
    o->next->prev = o->prev;
  else
    m->out_tail = o->prev;
  o->prev = o->next = NULL;
  m->n_out--;
}

/* ACKs mostly arrive in client_id order: the head first, then a walk. */
static hubu_outgoing *out_find(hubu_messages *m, uint64_t client_id) {
  for (hubu_outgoing *o = m->out_head; o; o = o->next)
    if (o->client_id == client_id) return o;
  return NULL;
}

/* Fills s (and entries/ptrs, n_meta long) to describe o on the wire. */
static void send_describe(const hubu_outgoing *o, Hubu__V1__Send *s, Hubu__V1__Send__MetaEntry *entries,
                          Hubu__V1__Send__MetaEntry **ptrs) {
  hubu__v1__send__init(s);
  s->client_id = o->client_id;
  s->session_id = (char *)o->session_id;
  s->body.data = (uint8_t *)o->body;
  s->body.len = o->body_len;
  s->content_type = (char *)o->content_type;
  s->client_time_ms = o->client_time_ms;
  for (size_t i = 0; i < o->n_meta; i++) {
    hubu__v1__send__meta_entry__init(&entries[i]);
    entries[i].key = (char *)o->meta_keys[i];
    entries[i].value = (char *)o->meta_values[i];
    ptrs[i] = &entries[i];
  }
  s->n_meta = o->n_meta;
  s->meta = o->n_meta ? ptrs : NULL;
}

/* Writes a SEND for o (or, when it is packed larger than the server's
 * max_frame, reports 1: the caller fails it). 0, 1, or a negative libuv error. */
static int send_packed(hubu_client *c, hubu_outgoing *o, int write) {
  Hubu__V1__Send__MetaEntry stack_entries[HUBU_META_ON_STACK], *stack_ptrs[HUBU_META_ON_STACK];
  Hubu__V1__Send__MetaEntry *entries = stack_entries, **ptrs = stack_ptrs;
  if (o->n_meta > HUBU_META_ON_STACK) {
    entries = malloc(o->n_meta * sizeof *entries);
    ptrs = malloc(o->n_meta * sizeof *ptrs);
  }
  int r = UV_ENOMEM;
  if (entries && ptrs) {
    Hubu__V1__Send s;
    send_describe(o, &s, entries, ptrs);
    if (protobuf_c_message_get_packed_size(&s.base) > c->max_frame)
      r = 1;
    else
      r = write ? hubu_client_queue(c, HUBU_FRAME_SEND, &s.base) : 0;
  }
  if (entries != stack_entries) free(entries);
  if (ptrs != stack_ptrs) free(ptrs);
  return r;
}

/* Sends o now. 0; -1 when the connection was dropped (out of memory). */
static int send_entry(hubu_client *c, hubu_outgoing *o) {
  hubu_messages *m = c->msgs;
  int r = send_packed(c, o, 1);
  if (r == 1) { /* the server shrank max_frame: refuse it through the resend timer */
    o->refused = 1;
    resend_arm(c, now_ms(c));
    return 0;
  }
  if (r == UV_ENOTCONN) return 0; /* sent after the next HELLO_OK */
  if (r < 0) {
    hubu_client_fail(c, HUBU__V1__CODE__INTERNAL, "out of memory");
    return -1;
  }
  m->stats.sends++;
  if (o->sent) m->stats.resends++;
  o->sent = 1;
  o->due_ms = now_ms(c) + m->send_timeout_ms;
  resend_arm(c, o->due_ms);
  return 0;
}

/* Moves o to a fresh client_id at the end of the queue (after STALE, or when
 * it was queued before the server's high-water mark was known). */
static void renumber(hubu_client *c, hubu_outgoing *o) {
  hubu_messages *m = c->msgs;
  uint64_t old = o->client_id;
  out_remove(m, o);
  o->client_id = ++m->last_client_id;
  o->verified = 1;
  out_append(m, o);
  m->stats.renumbered++;
  /* A failed write leaves the old record: a restart resends under the old
   * id, gets STALE, and renumbers again; nothing is lost. */
  if (m->outbox) hubu_outbox_renumbered(m->outbox, o, old);
}

/* Drops o from the queue for good and reports it. */
typedef struct hubu_rx_session hubu_rx_session;
static hubu_rx_session *session_find(hubu_messages *m, const char *id);
static hubu_rx_session *session_get(hubu_messages *m, const char *id);
static int held_drain(hubu_client *c, hubu_rx_session *s);
static void ack_mark(hubu_client *c, hubu_rx_session *s);

static void finish_send(hubu_client *c, hubu_outgoing *o, const Hubu__V1__SendAck *a, int code, const char *reason) {
  hubu_messages *m = c->msgs;
  out_remove(m, o);
  if (m->outbox) {
    hubu_outbox_done(m->outbox, o->client_id);
    hubu_client_flush_arm(c);
  }
  if (code == HUBU__V1__CODE__OK) {
    m->stats.stored++;
    const char *session = a->session_id && a->session_id[0] ? a->session_id : o->session_id;
    /* The sender's own message is never pushed back to its connection: when
     * it is the next seq, it moves the cursor, so a reply right after it
     * (a bot's) is not taken for a gap. */
    hubu_rx_session *rx = !m->frames_only ? (a->seq == 1 ? session_get(m, session) : session_find(m, session)) : NULL;
    if (rx && rx->cursor + 1 == a->seq) {
      rx->cursor = a->seq;
      if (held_drain(c, rx) == 0) ack_mark(c, rx);
    }
    if (c->cb.on_stored) c->cb.on_stored(c, o->app_id, session, a->seq, a->msg_id, a->duplicate, c->ud);
  } else {
    m->stats.failed++;
    m->retry_after_ms = a ? a->retry_after_ms : 0;
    if (c->cb.on_failed) c->cb.on_failed(c, o->app_id, code, reason ? reason : "", c->ud);
    m->retry_after_ms = 0;
  }
  free(o);
}

static void on_resend_timer(uv_timer_t *t) {
  hubu_client *c = t->data;
  hubu_messages *m = c->msgs;
  m->resend_due = 0;
  uint64_t now = now_ms(c);
  /* Messages the server could never take (larger than its max_frame). */
  for (hubu_outgoing *o = m->out_head, *next; o; o = next) {
    next = o->next;
    if (!o->refused) continue;
    finish_send(c, o, NULL, HUBU__V1__CODE__INVALID, "message larger than the server's max_frame");
    if (c->closing) return;
    next = m->out_head; /* the callback may have queued or finished others: start over */
  }
  if (!hubu_client_can_send(c)) return; /* the next HELLO_OK resends everything */
  uint64_t next_due = 0;
  size_t budget = m->n_out; /* bounded: each pending message at most once per run */
  for (hubu_outgoing *o = m->out_head; o && budget > 0; o = o->next, budget--) {
    if (o->due_ms <= now && send_entry(c, o) != 0) return;
    if (o->refused) continue;
    if (!next_due || o->due_ms < next_due) next_due = o->due_ms;
  }
  if (next_due) resend_arm(c, next_due);
}

static void on_send_ack(hubu_client *c, const uint8_t *body, size_t len) {
  hubu_messages *m = c->msgs;
  Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, len, body);
  if (!a) return;
  hubu_outgoing *o = out_find(m, a->client_id);
  if (!o) { /* a second answer to a retry, or to a message renumbered since */
    hubu__v1__send_ack__free_unpacked(a, NULL);
    return;
  }
  switch (a->code) {
    case HUBU__V1__CODE__OK: finish_send(c, o, a, HUBU__V1__CODE__OK, NULL); break;
    case HUBU__V1__CODE__STALE: /* never stored, never acknowledged to the app: same content, new id */
      renumber(c, o);
      send_entry(c, o);
      break;
    case HUBU__V1__CODE__UNAVAILABLE:
    case HUBU__V1__CODE__INTERNAL:
    case HUBU__V1__CODE__TIMEOUT:
    case HUBU__V1__CODE__SHUTTING_DOWN: { /* nothing was assigned: the same SEND again, a little later */
      uint32_t delay = m->send_timeout_ms < HUBU_RETRY_MAX_MS ? m->send_timeout_ms : HUBU_RETRY_MAX_MS;
      if (a->retry_after_ms > delay) delay = a->retry_after_ms; /* the server knows better */
      o->due_ms = now_ms(c) + delay;
      resend_arm(c, o->due_ms);
      break;
    }
    default: finish_send(c, o, a, a->code, a->reason); break;
  }
  hubu__v1__send_ack__free_unpacked(a, NULL);
}

/* ---- sessions ---- */

static hubu_rx_session *session_find(hubu_messages *m, const char *id) {
  hubu_rx_session *s = NULL;
  HASH_FIND_STR(m->sessions, id, s);
  return s;
}

static hubu_rx_session *session_get(hubu_messages *m, const char *id) {
  hubu_rx_session *s = session_find(m, id);
  if (s) return s;
  s = calloc(1, sizeof *s);
  if (!s || !(s->id = strdup(id))) {
    free(s);
    return NULL;
  }
  HASH_ADD_KEYPTR(hh, m->sessions, s->id, strlen(s->id), s);
  return s;
}

static void ack_mark(hubu_client *c, hubu_rx_session *s) {
  hubu_messages *m = c->msgs;
  if (!s->ack_queued) {
    s->ack_queued = 1;
    s->ack_next = m->ack_head;
    m->ack_head = s;
  }
  hubu_client_flush_arm(c);
}

/* A view of msg for the application; keys/values hold n_meta entries. */
static void message_view(const Hubu__V1__Message *msg, hubu_client_message *out, const char **keys,
                         const char **values) {
  for (size_t i = 0; i < msg->n_meta; i++) {
    keys[i] = msg->meta[i]->key;
    values[i] = msg->meta[i]->value;
  }
  *out = (hubu_client_message){
      .session_id = msg->session_id,
      .seq = msg->seq,
      .msg_id = msg->msg_id,
      .sender = msg->sender,
      .sender_device = msg->sender_device,
      .client_id = msg->client_id,
      .body = msg->body.data,
      .body_len = msg->body.len,
      .content_type = msg->content_type,
      .server_time_ms = msg->server_time_ms,
      .n_meta = msg->n_meta,
      .meta_keys = keys,
      .meta_values = values,
  };
}

/* Moves the cursor to msg and hands it to on_received. -1 when the client
 * was closed by the callback. */
static int deliver(hubu_client *c, hubu_rx_session *s, const Hubu__V1__Message *msg) {
  hubu_messages *m = c->msgs;
  s->cursor = msg->seq;
  m->stats.delivered++;
  ack_mark(c, s);
  if (!c->cb.on_received) return 0;
  const char *stack_keys[HUBU_META_ON_STACK], *stack_values[HUBU_META_ON_STACK];
  const char **keys = stack_keys, **values = stack_values;
  if (msg->n_meta > HUBU_META_ON_STACK) {
    keys = malloc(msg->n_meta * sizeof *keys);
    values = malloc(msg->n_meta * sizeof *values);
  }
  if (keys && values) {
    hubu_client_message view;
    message_view(msg, &view, keys, values);
    c->cb.on_received(c, &view, c->ud);
  } else {
    hubu_client_fail(c, HUBU__V1__CODE__INTERNAL, "out of memory"); /* undelivered: the cursor is behind on reconnect */
    s->cursor = msg->seq - 1;
  }
  if (keys != stack_keys) free(keys);
  if (values != stack_values) free(values);
  return c->closing ? -1 : 0;
}

static int deliver_held(hubu_client *c, hubu_rx_session *s, hubu_held *h) {
  Hubu__V1__Message *msg = hubu__v1__message__unpack(NULL, h->len, h->bytes);
  int r = 0;
  if (msg) {
    r = deliver(c, s, msg);
    hubu__v1__message__free_unpacked(msg, NULL);
  }
  free(h);
  return r;
}

static hubu_held *held_pop(hubu_rx_session *s) {
  hubu_held *h = s->held[0];
  memmove(s->held, s->held + 1, (s->n_held - 1) * sizeof *s->held);
  s->n_held--;
  return h;
}

/* Delivers the first held message, or drops it when it is at or below the
 * cursor (a duplicate). -1 when closed. */
static int held_take_first(hubu_client *c, hubu_rx_session *s) {
  hubu_held *h = held_pop(s);
  if (h->seq <= s->cursor) {
    c->msgs->stats.duplicates++;
    free(h);
    return 0;
  }
  return deliver_held(c, s, h);
}

/* Delivers held messages with seq < limit in order (they exist: the server
 * pushed them), dropping ones at or below the cursor. -1 when closed. */
static int held_deliver_below(hubu_client *c, hubu_rx_session *s, uint64_t limit) {
  while (s->n_held && s->held[0]->seq < limit)
    if (held_take_first(c, s) < 0) return -1;
  return 0;
}

/* Delivers what the cursor now reaches (it moves as they are delivered). -1
 * when closed. */
static int held_drain(hubu_client *c, hubu_rx_session *s) {
  while (s->n_held && s->held[0]->seq <= s->cursor + 1)
    if (held_take_first(c, s) < 0) return -1;
  return 0;
}

/* Keeps msg until the seqs before it arrive or a PULL proves them absent. */
static void held_insert(hubu_client *c, hubu_rx_session *s, const Hubu__V1__Message *msg) {
  hubu_messages *m = c->msgs;
  uint32_t lo = 0, hi = s->n_held;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (s->held[mid]->seq < msg->seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < s->n_held && s->held[lo]->seq == msg->seq) {
    m->stats.duplicates++;
    return;
  }
  m->stats.gaps++;
  if (s->n_held >= HUBU_HELD_MAX) return; /* the PULL brings it */
  if (s->n_held == s->cap_held) {
    uint32_t cap = s->cap_held ? 2 * s->cap_held : 16;
    hubu_held **grown = realloc(s->held, cap * sizeof *grown);
    if (!grown) return;
    s->held = grown;
    s->cap_held = cap;
  }
  size_t len = protobuf_c_message_get_packed_size(&msg->base);
  hubu_held *h = malloc(sizeof *h + len);
  if (!h) return;
  h->seq = msg->seq;
  h->len = protobuf_c_message_pack(&msg->base, h->bytes);
  memmove(s->held + lo + 1, s->held + lo, (s->n_held - lo) * sizeof *s->held);
  s->held[lo] = h;
  s->n_held++;
}

/* ---- pulls ---- */

static int send_pull(hubu_client *c, hubu_rx_session *s) {
  hubu_messages *m = c->msgs;
  Hubu__V1__PullRequest r = HUBU__V1__PULL_REQUEST__INIT;
  r.request_id = ++m->next_request_id;
  r.session_id = s->id;
  r.after_seq = s->cursor;
  r.limit = m->pull_limit;
  int rc = hubu_client_queue(c, HUBU_FRAME_PULL, &r.base);
  if (rc == UV_ENOTCONN) return 0;
  if (rc < 0) {
    hubu_client_fail(c, HUBU__V1__CODE__INTERNAL, "out of memory");
    return -1;
  }
  s->pull_request_id = r.request_id;
  s->pull_after = s->cursor;
  s->wake_ms = 0;
  m->stats.pulls++;
  return 0;
}

/* Decides what s needs now: a PULL (the server announced more than the
 * cursor), a gap wait (held messages past a hole), or nothing. */
static void want_pull(hubu_client *c, hubu_rx_session *s) {
  hubu_messages *m = c->msgs;
  if (s->pull_request_id || !hubu_client_can_send(c)) return;
  if (s->known_max > s->cursor) {
    send_pull(c, s);
    return;
  }
  if (s->n_held > 0 && !s->wake_ms) {
    s->wake_ms = now_ms(c) + m->gap_wait_ms;
    gap_arm(c, s->wake_ms);
  }
}

static void on_gap_timer(uv_timer_t *t) {
  hubu_client *c = t->data;
  hubu_messages *m = c->msgs;
  m->gap_due = 0;
  uint64_t now = now_ms(c), next = 0;
  if (m->resync_ms && m->resync_ms <= now) {
    m->resync_ms = 0;
    if (hubu_client_can_send(c)) hubu_client_sync(c);
  }
  if (m->resync_ms) next = m->resync_ms;
  hubu_rx_session *s, *tmp;
  HASH_ITER(hh, m->sessions, s, tmp) { /* callbacks may add sessions (at the end); none is ever removed */
    if (s->wake_ms && s->wake_ms <= now) {
      int drain_only = s->wake_drain;
      s->wake_ms = 0;
      s->wake_drain = 0;
      if (held_drain(c, s) < 0) return;
      if (drain_only)
        want_pull(c, s);
      else if (!s->pull_request_id && (s->n_held || s->known_max > s->cursor) && hubu_client_can_send(c) &&
               send_pull(c, s) < 0)
        return;
    }
    if (s->wake_ms && (!next || s->wake_ms < next)) next = s->wake_ms;
  }
  if (next) gap_arm(c, next);
}

static void on_push(hubu_client *c, const uint8_t *body, size_t len) {
  hubu_messages *m = c->msgs;
  Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, len, body);
  if (!p) return;
  for (size_t i = 0; i < p->n_messages; i++) {
    const Hubu__V1__Message *msg = p->messages[i];
    m->stats.pushed++;
    if (!msg->session_id[0] || msg->seq == 0) continue;
    hubu_rx_session *s = session_get(m, msg->session_id);
    if (!s) continue; /* out of memory: SYNC finds it after the next reconnect */
    if (msg->seq <= s->cursor) {
      m->stats.duplicates++; /* a retransmission, or already pulled */
      continue;
    }
    if (msg->seq == s->cursor + 1) {
      if (deliver(c, s, msg) < 0 || held_drain(c, s) < 0) break;
    } else {
      held_insert(c, s, msg);
    }
    want_pull(c, s);
  }
  hubu__v1__push__free_unpacked(p, NULL);
}

static void on_pull_hint(hubu_client *c, const uint8_t *body, size_t len) {
  hubu_messages *m = c->msgs;
  Hubu__V1__PullHint *h = hubu__v1__pull_hint__unpack(NULL, len, body);
  if (!h) return;
  m->stats.pull_hints++;
  hubu_rx_session *s = h->session_id[0] ? session_get(m, h->session_id) : NULL;
  if (s) {
    if (h->max_seq > s->known_max) s->known_max = h->max_seq;
    want_pull(c, s);
  }
  hubu__v1__pull_hint__free_unpacked(h, NULL);
}

static hubu_request *request_take(hubu_messages *m, uint64_t request_id) {
  for (hubu_request **p = &m->requests; *p; p = &(*p)->next) {
    if ((*p)->request_id == request_id) {
      hubu_request *r = *p;
      *p = r->next;
      return r;
    }
  }
  return NULL;
}

/* Reports a history PULL: a view of every message, in one allocation. */
static void answer_pull(hubu_client *c, hubu_request *req, const Hubu__V1__PullResult *r) {
  size_t n = r->n_messages, metas = 0;
  for (size_t i = 0; i < n; i++) metas += r->messages[i]->n_meta;
  hubu_client_message *views = malloc((n ? n : 1) * sizeof *views + (metas ? metas : 1) * 2 * sizeof(char *));
  if (!views) {
    req->pull_cb(c, HUBU__V1__CODE__INTERNAL, NULL, 0, 0, 0, req->ud);
    return;
  }
  const char **kv = (const char **)(views + (n ? n : 1));
  for (size_t i = 0; i < n; i++) {
    message_view(r->messages[i], &views[i], kv, kv + r->messages[i]->n_meta);
    kv += 2 * r->messages[i]->n_meta;
  }
  req->pull_cb(c, (int)r->code, views, n, r->max_seq, r->has_more, req->ud);
  free(views);
}

static void on_pull_result(hubu_client *c, const uint8_t *body, size_t len) {
  hubu_messages *m = c->msgs;
  Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, len, body);
  if (!r) return;
  hubu_request *req = request_take(m, r->request_id);
  if (req) {
    if (req->pull_cb) answer_pull(c, req, r);
    free(req);
    goto out;
  }
  hubu_rx_session *s = session_find(m, r->session_id);
  if (!s || !s->pull_request_id || s->pull_request_id != r->request_id) goto out; /* from a lost connection */
  s->pull_request_id = 0;
  int empty_more = r->has_more && r->n_messages == 0; /* would pull the same window forever */
  if (r->code != HUBU__V1__CODE__OK || empty_more) {
    if (r->code == HUBU__V1__CODE__FORBIDDEN || r->code == HUBU__V1__CODE__INVALID ||
        r->code == HUBU__V1__CODE__NOT_FOUND) {
      s->known_max = s->cursor; /* nothing to fetch there: do not ask again until told */
    } else {
      s->wake_ms = now_ms(c) + m->gap_wait_ms;
      gap_arm(c, s->wake_ms);
    }
    goto out;
  }
  if (s->cursor < s->pull_after) { /* set_cursor moved it back meanwhile: this window is not the one */
    want_pull(c, s);
    goto out;
  }
  m->stats.pulled += r->n_messages;
  /* Seqs between after_seq and a returned message, or between two returned
   * ones, do not exist: each returned message is the cursor's successor. */
  for (size_t i = 0; i < r->n_messages; i++) {
    const Hubu__V1__Message *msg = r->messages[i];
    if (strcmp(msg->session_id, s->id) != 0) continue;
    if (held_deliver_below(c, s, msg->seq) < 0) goto out;
    if (msg->seq <= s->cursor) {
      m->stats.duplicates++;
      continue;
    }
    if (deliver(c, s, msg) < 0) goto out;
  }
  if (r->max_seq > s->known_max) s->known_max = r->max_seq;
  if (!r->has_more && r->max_seq > s->cursor) { /* the tail of the window is a hole */
    if (held_deliver_below(c, s, r->max_seq + 1) < 0) goto out;
    if (r->max_seq > s->cursor) {
      s->cursor = r->max_seq;
      ack_mark(c, s);
    }
  }
  if (held_drain(c, s) < 0) goto out;
  want_pull(c, s);
out:
  hubu__v1__pull_result__free_unpacked(r, NULL);
}

/* ---- sync ---- */

/* SYNC with the given cursors (known may be 0 for a plain session list). */
static int send_sync(hubu_client *c, int with_cursors, uint64_t *request_id) {
  hubu_messages *m = c->msgs;
  size_t n = 0;
  hubu_rx_session *s, *tmp;
  if (with_cursors) HASH_ITER(hh, m->sessions, s, tmp) n += s->cursor > 0;
  Hubu__V1__Cursor *cursors = n ? malloc(n * sizeof *cursors) : NULL;
  Hubu__V1__Cursor **ptrs = n ? malloc(n * sizeof *ptrs) : NULL;
  if (n && (!cursors || !ptrs)) {
    free(cursors);
    free(ptrs);
    return UV_ENOMEM;
  }
  size_t i = 0;
  if (with_cursors) {
    HASH_ITER(hh, m->sessions, s, tmp) {
      if (!s->cursor) continue;
      hubu__v1__cursor__init(&cursors[i]);
      cursors[i].session_id = s->id;
      cursors[i].seq = s->cursor;
      ptrs[i] = &cursors[i];
      i++;
    }
  }
  Hubu__V1__SyncRequest r = HUBU__V1__SYNC_REQUEST__INIT;
  r.request_id = ++m->next_request_id;
  r.n_known = n;
  r.known = ptrs;
  int rc = hubu_client_queue(c, HUBU_FRAME_SYNC, &r.base);
  free(cursors);
  free(ptrs);
  if (rc == 0) *request_id = r.request_id;
  return rc;
}

static void on_sync_result(hubu_client *c, const uint8_t *body, size_t len) {
  hubu_messages *m = c->msgs;
  Hubu__V1__SyncResult *r = hubu__v1__sync_result__unpack(NULL, len, body);
  if (!r) return;
  if (m->sync_request_id && r->request_id == m->sync_request_id) {
    m->sync_request_id = 0;
    if (r->code != HUBU__V1__CODE__OK) {
      m->resync_ms = now_ms(c) + HUBU_SYNC_RETRY_MS;
      gap_arm(c, m->resync_ms);
    } else {
      for (size_t i = 0; i < r->n_sessions; i++) {
        const Hubu__V1__SessionState *st = r->sessions[i];
        hubu_rx_session *s = st->session_id[0] ? session_get(m, st->session_id) : NULL;
        if (!s) continue;
        if (st->max_seq > s->known_max) s->known_max = st->max_seq;
        want_pull(c, s);
      }
    }
  } else {
    hubu_request *req = request_take(m, r->request_id);
    if (req && req->sessions_cb) {
      size_t n = r->n_sessions;
      hubu_client_session_state *states = malloc((n ? n : 1) * sizeof *states);
      if (states) {
        for (size_t i = 0; i < n; i++)
          states[i] = (hubu_client_session_state){r->sessions[i]->session_id, r->sessions[i]->max_seq,
                                                  r->sessions[i]->min_seq, r->sessions[i]->kind};
        req->sessions_cb(c, (int)r->code, states, n, req->ud);
        free(states);
      } else {
        req->sessions_cb(c, HUBU__V1__CODE__INTERNAL, NULL, 0, req->ud);
      }
    }
    free(req);
  }
  hubu__v1__sync_result__free_unpacked(r, NULL);
}

/* ---- hooks from the frame layer ---- */

hubu_messages *hubu_messages_new(hubu_client *c, const hubu_client_options *opt, char *err, size_t err_size) {
  hubu_messages *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  m->send_timeout_ms = opt->send_timeout_ms ? opt->send_timeout_ms : 10000;
  m->gap_wait_ms = opt->gap_wait_ms ? opt->gap_wait_ms : 500;
  m->pull_limit = opt->pull_limit ? opt->pull_limit : 200;
  m->auto_sync = !opt->no_auto_sync && !opt->frames_only;
  m->frames_only = opt->frames_only != 0;
  if (opt->outbox_path) {
    hubu_outbox_loaded loaded;
    m->outbox = hubu_outbox_open(opt->outbox_path, &loaded, err, err_size);
    if (!m->outbox) {
      free(m);
      return NULL;
    }
    for (hubu_outgoing *o = loaded.head, *next; o; o = next) {
      next = o->next;
      out_append(m, o);
    }
    m->last_client_id = loaded.last_client_id;
  }
  uv_timer_init(c->loop, &m->resend_timer);
  uv_timer_init(c->loop, &m->gap_timer);
  m->resend_timer.data = m->gap_timer.data = c;
  c->refs += 2;
  return m;
}

void hubu_messages_on_hello(hubu_client *c, uint64_t last_client_id) {
  hubu_messages *m = c->msgs;
  if (last_client_id > m->last_client_id) m->last_client_id = last_client_id;
  /* Ids given out before the server's mark was known may collide with ones an
   * earlier run of this device used: those move above the mark before any of
   * them is sent (sending them could be answered with another message). */
  int unverified = 0;
  hubu_outgoing *end = m->out_tail;
  for (hubu_outgoing *o = m->out_head, *next; o; o = next) {
    next = o->next;
    int last = o == end;
    if (!o->verified) {
      unverified = 1;
      if (o->client_id <= last_client_id)
        renumber(c, o);
      else
        o->verified = 1;
    }
    if (last) break;
  }
  if (unverified && m->outbox) hubu_outbox_verified(m->outbox, m->last_client_id);
  m->hello_seen = 1;

  for (hubu_outgoing *o = m->out_head; o; o = o->next)
    if (!o->refused && send_entry(c, o) != 0) return;
  if (m->auto_sync) {
    int rc = send_sync(c, 1, &m->sync_request_id);
    if (rc < 0 && rc != UV_ENOTCONN) {
      hubu_client_fail(c, HUBU__V1__CODE__INTERNAL, "out of memory");
      return;
    }
    if (rc == 0) m->stats.syncs++;
  }
  hubu_rx_session *s, *tmp;
  HASH_ITER(hh, m->sessions, s, tmp) want_pull(c, s);
  if (m->ack_head) hubu_client_flush_arm(c);
}

void hubu_messages_on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len) {
  if (c->msgs->frames_only) return; /* the application handles deliveries itself */
  switch (type) {
    case HUBU_FRAME_SEND_ACK: on_send_ack(c, body, len); break;
    case HUBU_FRAME_PUSH: on_push(c, body, len); break;
    case HUBU_FRAME_PULL_RESULT: on_pull_result(c, body, len); break;
    case HUBU_FRAME_SYNC_RESULT: on_sync_result(c, body, len); break;
    case HUBU_FRAME_PULL_HINT: on_pull_hint(c, body, len); break;
    default: break;
  }
}

void hubu_messages_on_lost(hubu_client *c) {
  hubu_messages *m = c->msgs;
  hubu_rx_session *s, *tmp;
  HASH_ITER(hh, m->sessions, s, tmp) {
    s->pull_request_id = 0;
    s->wake_ms = 0;
    s->wake_drain = 0;
  }
  m->sync_request_id = 0;
  m->resync_ms = 0;
  uv_timer_stop(&m->resend_timer);
  uv_timer_stop(&m->gap_timer);
  m->resend_due = m->gap_due = 0;
}

void hubu_messages_fail_requests(hubu_client *c, int code) {
  hubu_messages *m = c->msgs;
  while (m->requests && !c->closing) {
    hubu_request *req = m->requests;
    m->requests = req->next;
    if (req->pull_cb) req->pull_cb(c, code, NULL, 0, 0, 0, req->ud);
    if (req->sessions_cb) req->sessions_cb(c, code, NULL, 0, req->ud);
    free(req);
  }
}

void hubu_messages_before_flush(hubu_client *c) {
  hubu_messages *m = c->msgs;
  if (m->outbox) {
    if (m->n_out == 0 && hubu_outbox_wants_compaction(m->outbox, 1))
      hubu_outbox_compact(m->outbox, NULL, m->last_client_id);
    else if (hubu_outbox_wants_compaction(m->outbox, 0))
      hubu_outbox_compact(m->outbox, m->out_head, m->last_client_id);
    else
      hubu_outbox_flush(m->outbox);
  }
  if (!m->ack_head || !hubu_client_can_send(c)) return;
  size_t n = 0;
  for (hubu_rx_session *s = m->ack_head; s; s = s->ack_next) n += s->cursor != s->acked;
  Hubu__V1__Cursor *cursors = n ? malloc(n * sizeof *cursors) : NULL;
  Hubu__V1__Cursor **ptrs = n ? malloc(n * sizeof *ptrs) : NULL;
  if (n && (!cursors || !ptrs)) {
    free(cursors);
    free(ptrs);
    return; /* tried again at the next turn that has something to flush */
  }
  size_t i = 0;
  while (m->ack_head) {
    hubu_rx_session *s = m->ack_head;
    m->ack_head = s->ack_next;
    s->ack_next = NULL;
    s->ack_queued = 0;
    if (s->cursor == s->acked) continue;
    hubu__v1__cursor__init(&cursors[i]);
    cursors[i].session_id = s->id;
    cursors[i].seq = s->cursor;
    ptrs[i] = &cursors[i];
    s->acked = s->cursor;
    i++;
  }
  if (n) {
    Hubu__V1__DeliverAck a = HUBU__V1__DELIVER_ACK__INIT;
    a.n_cursors = n;
    a.cursors = ptrs;
    if (hubu_client_queue(c, HUBU_FRAME_DELIVER_ACK, &a.base) == 0)
      m->stats.deliver_acks++;
    else
      hubu_client_fail(c, HUBU__V1__CODE__INTERNAL, "out of memory");
  }
  free(cursors);
  free(ptrs);
}

void hubu_messages_close(hubu_client *c) {
  hubu_messages *m = c->msgs;
  uv_close((uv_handle_t *)&m->resend_timer, hubu_client_on_handle_closed);
  uv_close((uv_handle_t *)&m->gap_timer, hubu_client_on_handle_closed);
  if (m->outbox) {
    if (m->n_out == 0 && hubu_outbox_wants_compaction(m->outbox, 1))
      hubu_outbox_compact(m->outbox, NULL, m->last_client_id);
    hubu_outbox_close(m->outbox);
    m->outbox = NULL;
  }
}

void hubu_messages_free(hubu_messages *m) {
  if (!m) return;
  hubu_outbox_close(m->outbox);
  while (m->out_head) {
    hubu_outgoing *o = m->out_head;
    m->out_head = o->next;
    free(o);
  }
  hubu_rx_session *s, *tmp;
  HASH_ITER(hh, m->sessions, s, tmp) {
    HASH_DEL(m->sessions, s);
    for (uint32_t i = 0; i < s->n_held; i++) free(s->held[i]);
    free(s->held);
    free(s->id);
    free(s);
  }
  while (m->requests) {
    hubu_request *r = m->requests;
    m->requests = r->next;
    free(r);
  }
  free(m);
}

/* ---- public API ---- */

uint64_t hubu_client_send_message(hubu_client *c, const char *session_id, const uint8_t *body, size_t len,
                                  const char *content_type, size_t n_meta, const char *const *meta_keys,
                                  const char *const *meta_values) {
  if (!c || c->closing || !session_id || !session_id[0] || (len && !body) || (n_meta && (!meta_keys || !meta_values)))
    return 0;
  for (size_t i = 0; i < n_meta; i++)
    if (!meta_keys[i] || !meta_values[i]) return 0;
  hubu_messages *m = c->msgs;
  uint64_t id = m->last_client_id + 1;
  hubu_outgoing *o = hubu_outgoing_new(id, id, session_id, content_type ? content_type : "", body, len, n_meta,
                                       meta_keys, meta_values);
  if (!o) return 0;
  o->client_time_ms = hubu_now_ms();
  o->verified = m->hello_seen;
  if (send_packed(c, o, 0) != 0 || (m->outbox && hubu_outbox_queued(m->outbox, o) != 0)) {
    free(o);
    return 0;
  }
  m->last_client_id = id;
  out_append(m, o);
  m->stats.queued++;
  if (hubu_client_can_send(c)) send_entry(c, o); /* on failure o stays queued for the next HELLO_OK */
  return id;
}

size_t hubu_client_pending(const hubu_client *c) { return c->msgs->n_out; }

uint64_t hubu_client_cursor(const hubu_client *c, const char *session_id) {
  if (!session_id) return 0;
  hubu_rx_session *s = session_find(c->msgs, session_id);
  return s ? s->cursor : 0;
}

int hubu_client_set_cursor(hubu_client *c, const char *session_id, uint64_t seq) {
  if (!c || c->closing || !session_id || !session_id[0]) return UV_EINVAL;
  hubu_rx_session *s = session_get(c->msgs, session_id);
  if (!s) return UV_ENOMEM;
  s->cursor = seq;
  while (s->n_held && s->held[0]->seq <= seq) free(held_pop(s));
  if (s->cursor != s->acked) ack_mark(c, s);
  if (s->n_held && s->held[0]->seq == seq + 1) { /* deliverable now: from the loop, not from inside this call */
    s->wake_ms = now_ms(c);
    s->wake_drain = 1;
    gap_arm(c, s->wake_ms);
  }
  return 0;
}

int hubu_client_pull(hubu_client *c, const char *session_id, uint64_t after_seq, uint32_t limit, hubu_client_pull_cb cb,
                     void *ud) {
  if (!c || !session_id || !session_id[0] || !cb) return UV_EINVAL;
  if (!hubu_client_can_send(c)) return UV_ENOTCONN;
  hubu_messages *m = c->msgs;
  hubu_request *req = calloc(1, sizeof *req);
  if (!req) return UV_ENOMEM;
  Hubu__V1__PullRequest r = HUBU__V1__PULL_REQUEST__INIT;
  r.request_id = ++m->next_request_id;
  r.session_id = (char *)session_id;
  r.after_seq = after_seq;
  r.limit = limit ? limit : m->pull_limit;
  int rc = hubu_client_queue(c, HUBU_FRAME_PULL, &r.base);
  if (rc < 0) {
    free(req);
    return rc;
  }
  req->request_id = r.request_id;
  req->pull_cb = cb;
  req->ud = ud;
  req->next = m->requests;
  m->requests = req;
  return 0;
}

int hubu_client_list_sessions(hubu_client *c, hubu_client_sessions_cb cb, void *ud) {
  if (!c || !cb) return UV_EINVAL;
  if (!hubu_client_can_send(c)) return UV_ENOTCONN;
  hubu_messages *m = c->msgs;
  hubu_request *req = calloc(1, sizeof *req);
  if (!req) return UV_ENOMEM;
  int rc = send_sync(c, 0, &req->request_id);
  if (rc < 0) {
    free(req);
    return rc;
  }
  req->sessions_cb = cb;
  req->ud = ud;
  req->next = m->requests;
  m->requests = req;
  return 0;
}

int hubu_client_sync(hubu_client *c) {
  if (!c) return UV_EINVAL;
  if (!hubu_client_can_send(c)) return UV_ENOTCONN;
  hubu_messages *m = c->msgs;
  int rc = send_sync(c, 1, &m->sync_request_id);
  if (rc == 0) m->stats.syncs++;
  return rc;
}

void hubu_client_get_stats(const hubu_client *c, hubu_client_stats *out) { *out = c->msgs->stats; }

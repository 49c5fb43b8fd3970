/* messaging.c — SEND, DELIVER_ACK, SYNC and PULL, and the device load that
 * HELLO_OK waits for; seqs come from the allocator (seq.h), in arrival order
 * per session. Requests that need the store are answered from its
 * completions; a completion finds its connection again by conn_id, so a
 * connection that closed meanwhile is simply skipped.
 * Invariants: SEND_ACK OK goes out only after the store made the message
 * durable; a (user, device, client_id) is queued at most once. */
#include "messaging.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "core.h"
#include "delivery.h"
#include "log.h"
#include "presence.h"
#include "session.h"
#include "store.h"
#include "token.h"
#include "wire.h"

#define MAX_CONTENT_TYPE 128
#define MAX_META_ENTRIES 32
#define MAX_META_BYTES 4096
/* SEND_ACK UNAVAILABLE (the store failed): the retry_after_ms it suggests. */
#define HUBU_STORE_RETRY_AFTER_MS 1000

/* ---- hooks ---- */

/* connect / disconnect of peer c. */
static void hook_peer(hubu_core *core, hubu_hook_event event, hubu_peer *c) {
  hubu_hook_call call = {.event = event, .peer = c};
  hubu_hooks_run(&core->hooks, &call);
}

/* session.read: 1 when user may read session_id (op "pull" or "sync"). */
static int hook_read(hubu_core *core, const char *user, const char *session_id, const char *op) {
  hubu_hook_call call = {.event = HUBU_HOOK_READ, .user = user, .session_id = session_id, .op = op};
  return !hubu_hooks_run(&core->hooks, &call) || call.allowed;
}

/* ---- answers ---- */

static void send_ack(hubu_core *core, const char *user, uint64_t conn_id, uint64_t client_id, Hubu__V1__Code code,
                     const char *session_id, uint64_t seq, uint64_t msg_id, const char *reason, int duplicate,
                     uint32_t retry_after_ms) {
  hubu_peer *c = hubu_core_peer_find(core, user, conn_id);
  if (!c) return;
  if (c->sends_unanswered) c->sends_unanswered--; /* every SEND is answered once, on its connection */
  if (c->state != HUBU_PEER_READY) return;
  Hubu__V1__SendAck a = HUBU__V1__SEND_ACK__INIT;
  a.client_id = client_id;
  a.code = code;
  a.session_id = (char *)(session_id ? session_id : "");
  a.seq = seq;
  a.msg_id = msg_id;
  a.server_time_ms = hubu_now_ms();
  a.reason = (char *)(reason ? reason : "");
  a.duplicate = duplicate;
  a.retry_after_ms = retry_after_ms;
  hubu_peer_send(c, HUBU_FRAME_SEND_ACK, &a.base);
}

/* Appends a PULL_RESULT whose messages are the pre-encoded entries of msgs
 * (field 4 instead of Push's field 1: only the tag byte differs). */
static void send_pull_result(hubu_peer *c, uint64_t request_id, Hubu__V1__Code code, const char *session_id,
                             hubu_msg **msgs, size_t n, uint64_t max_seq, int has_more) {
  if (c->reads_unanswered) c->reads_unanswered--; /* every PULL is answered once, here */
  size_t budget = c->core->cfg.max_frame, used = 0, take = 0;
  for (; take < n; take++) {
    if (used + msgs[take]->push_entry_len > budget && take > 0) {
      has_more = 1;
      break;
    }
    used += msgs[take]->push_entry_len;
  }
  Hubu__V1__PullResult r = HUBU__V1__PULL_RESULT__INIT;
  r.request_id = request_id;
  r.code = code;
  r.session_id = (char *)session_id;
  r.max_seq = max_seq;
  r.has_more = has_more;
  size_t head = protobuf_c_message_get_packed_size(&r.base);
  hubu_buf *w = c->ops->output(c);
  uint8_t *p = hubu_buf_reserve(w, HUBU_FRAME_HEADER_SIZE + head + used);
  if (!p) return;
  hubu_frame_header_encode(p, HUBU_FRAME_PULL_RESULT, 0, (uint32_t)(head + used));
  p += HUBU_FRAME_HEADER_SIZE;
  p += protobuf_c_message_pack(&r.base, p);
  for (size_t i = 0; i < take; i++) {
    *p = 0x22; /* PullResult.messages: field 4, length-delimited */
    memcpy(p + 1, msgs[i]->push_entry + 1, msgs[i]->push_entry_len - 1);
    p += msgs[i]->push_entry_len;
  }
  w->len += HUBU_FRAME_HEADER_SIZE + head + used;
  c->ops->wrote(c);
}

static void pull_error(hubu_peer *c, uint64_t request_id, Hubu__V1__Code code, const char *session_id) {
  send_pull_result(c, request_id, code, session_id, NULL, 0, 0, 0);
}

/* ---- HELLO: the device's high-water mark before HELLO_OK ---- */

/* resume: input was held back while the device loaded (asynchronous path). */
static void hello_ok(hubu_peer *c, int resume) {
  hubu_core *core = c->core;
  if (c->transient) {
    c->user_next = core->transients;
    core->transients = c;
  } else if (core->directory->ops->attach(core->directory, c) != 0) {
    hubu_log(HUBU_LOG_ERROR, c->id, c->user, "out_of_memory", "where=presence");
    c->ops->goaway(c, HUBU__V1__CODE__INTERNAL, "out of memory", 1000);
    return;
  }
  c->attached = 1;
  c->state = HUBU_PEER_READY;
  Hubu__V1__HelloOk ok = HUBU__V1__HELLO_OK__INIT;
  ok.conn_id = c->id;
  ok.server_time_ms = hubu_now_ms();
  ok.heartbeat_ms = core->cfg.heartbeat_ms;
  ok.last_client_id = c->dev->durable;
  ok.max_frame = core->cfg.max_frame;
  ok.server = HUBU_SERVER_NAME;
  hubu_peer_send(c, HUBU_FRAME_HELLO_OK, &ok.base);
  hubu_log(HUBU_LOG_DEBUG, c->id, c->user, "hello_ok", "device=%s last_client_id=%llu", c->device,
           (unsigned long long)c->dev->durable);
  if (!c->transient) hook_peer(core, HUBU_HOOK_CONNECT, c);
  if (resume) c->ops->resume_input(c); /* else the caller's frame loop goes on by itself */
}

static void on_device_loaded(hubu_store_op *op) {
  hubu_device *d = op->ud;
  hubu_core *core = op->ud2;
  d->loading = 0;
  if (op->status == HUBU_STORE_OK) {
    d->loaded = 1;
    if (op->device_load.last_client_id > d->durable) d->durable = op->device_load.last_client_id;
    d->epoch = op->device_load.epoch;
    if (d->durable > d->assigned) d->assigned = d->durable;
  } /* else the store logged why; the waiting HELLOs get GOAWAY UNAVAILABLE */
  hubu_store_op_free(op);
  hubu_peer **waiters = d->hello_waiters;
  uint32_t n = d->n_hello_waiters;
  d->hello_waiters = NULL;
  d->n_hello_waiters = 0;
  for (uint32_t i = 0; i < n; i++) {
    hubu_peer *c = waiters[i];
    if (c->state != HUBU_PEER_AUTHING || c->dev != d) continue;
    if (d->loaded)
      hello_ok(c, 1);
    else
      c->ops->goaway(c, HUBU__V1__CODE__UNAVAILABLE, "store unavailable", 1000);
  }
  free(waiters);
  hubu_device_release(core, d); /* the load's reference */
}

void hubu_messaging_hello(hubu_peer *c) {
  hubu_core *core = c->core;
  c->state = HUBU_PEER_AUTHING;
  hubu_device *d = c->dev = hubu_device_acquire(core, c->user, c->device);
  if (!d) {
    c->ops->goaway(c, HUBU__V1__CODE__INTERNAL, "out of memory", 1000);
    return;
  }
  if (d->loaded && !core->cfg.cluster) { /* cluster mode: the device may have sent through another node */
    hello_ok(c, 0);
    return;
  }
  hubu_peer **w = realloc(d->hello_waiters, (d->n_hello_waiters + 1) * sizeof *w);
  if (!w) {
    c->ops->goaway(c, HUBU__V1__CODE__INTERNAL, "out of memory", 1000);
    return;
  }
  d->hello_waiters = w;
  w[d->n_hello_waiters++] = c;
  if (d->loading) return;
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_DEVICE_LOAD);
  if (!op) {
    c->ops->goaway(c, HUBU__V1__CODE__INTERNAL, "out of memory", 1000);
    return;
  }
  snprintf(op->device_load.user, sizeof op->device_load.user, "%s", d->user);
  snprintf(op->device_load.device, sizeof op->device_load.device, "%s", d->device);
  op->device_load.claim = core->cfg.cluster; /* this node serves the device now: another's appends of it stop */
  op->done = on_device_loaded;
  op->ud = d;
  op->ud2 = core;
  d->refs++;
  d->loading = 1;
  hubu_store_submit(core->store, op);
}

/* ---- SEND ---- */

typedef struct {
  hubu_parked parked;
  hubu_pending_send *pending;
  Hubu__V1__Send *send; /* owned */
} parked_send;

static void pending_answer(hubu_core *core, hubu_pending_send *p, Hubu__V1__Code code, const char *session_id,
                           uint64_t seq, uint64_t msg_id, const char *reason, int first_duplicate,
                           uint32_t retry_after_ms) {
  if (p->internal && code != HUBU__V1__CODE__OK) /* no client to tell: the plugin's send is refused here */
    hubu_log(HUBU_LOG_WARN, 0, p->device->user, "plugin_send_refused", "session=%s code=%s reason=\"%s\"", session_id,
             hubu_code_name(code), reason ? reason : "");
  if (p->bytes) { /* the sender's input may go on (its connection, if still there, resumes on its next flush) */
    hubu_peer *c = hubu_core_peer_find(core, p->device->user, p->sender_conn);
    if (c) c->send_bytes_held -= c->send_bytes_held < p->bytes ? c->send_bytes_held : p->bytes;
    p->bytes = 0;
  }
  send_ack(core, p->device->user, p->sender_conn, p->client_id, code, session_id, seq, msg_id, reason, first_duplicate,
           retry_after_ms);
  for (uint32_t i = 0; i < p->n_retry_conns; i++)
    send_ack(core, p->device->user, p->retry_conns[i], p->client_id, code, session_id, seq, msg_id, reason,
             code == HUBU__V1__CODE__OK, retry_after_ms);
}

/* Drops p from its device (and its session's busy count) and frees it. */
static void pending_finish(hubu_core *core, hubu_pending_send *p, int refused) {
  hubu_device *d = p->device;
  HASH_DEL(d->pending, p);
  if (refused && d->assigned == p->client_id) { /* a refused SEND uses up nothing */
    uint64_t top = d->durable;
    hubu_pending_send *q, *tmp;
    HASH_ITER(hh, d->pending, q, tmp) if (q->client_id > top) top = q->client_id;
    d->assigned = top;
  }
  p->session->busy--;
  hubu_msg_unref(p->msg);
  free(p->retry_conns);
  free(p);
  hubu_device_release(core, d); /* the pending send's reference */
}

/* ---- seqs (seq.h) ---- */

static hubu_seq_result seq_next(hubu_core *core, hubu_session *sess, uint64_t *seq) {
  if (core->seq) return core->seq->ops->next(core->seq, sess, seq);
  *seq = sess->next_seq + 1; /* one node: the session's own counter */
  return HUBU_SEQ_NOW;
}

/* seq is stored or abandoned: the committed watermark may move. */
static void seq_settled(hubu_core *core, hubu_session *sess, uint64_t seq) {
  uint64_t w = core->seq ? core->seq->ops->settled(core->seq, sess, seq) : seq;
  if (w > sess->committed_seq) sess->committed_seq = w;
}

static void on_appended(hubu_store_op *op) {
  hubu_pending_send *p = op->ud;
  hubu_core *core = op->ud2;
  hubu_msg *m = p->msg;
  seq_settled(core, p->session, m->seq); /* first: the tail and PULL answer up to the watermark */
  if (op->status == HUBU_STORE_OK) {
    p->session->stored = 1;
    m->log_pos = op->append.log_pos; /* the store is done with m: the loop may write it */
    if (!p->internal && p->client_id > p->device->durable) p->device->durable = p->client_id;
    if (!core->cfg.cluster) hubu_session_tail_push(p->session, m); /* cluster mode: PULL reads the store */
    if (!p->internal) hubu_device_remember(p->device, m);
    pending_answer(core, p, HUBU__V1__CODE__OK, m->session_id, m->seq, m->msg_id, NULL, 0, 0);
    hubu_delivery_route(core, p->session, m, p->sender_conn);
    core->stats.messages_stored++;
    hubu_hook_call stored = {.event = HUBU_HOOK_STORED, .msg = m};
    hubu_hooks_run(&core->hooks, &stored);
  } else if (op->status == HUBU_STORE_DUPLICATE) { /* the seq it was given stays a hole */
    pending_answer(core, p, HUBU__V1__CODE__OK, op->append.stored_session_id, op->append.stored_seq,
                   op->append.stored_msg_id, NULL, 1, 0);
  } else if (op->status == HUBU_STORE_SEQ_TAKEN) { /* a stale allocator, or a reader proved the seq a hole */
    if (core->seq && core->seq->ops->taken) core->seq->ops->taken(core->seq, p->session, m->seq);
    hubu_log(HUBU_LOG_WARN, p->sender_conn, m->sender, "seq_taken",
             "session=%s seq=%llu client_id=%llu msg=\"not stored; answered UNAVAILABLE, its resend gets a new seq\"",
             m->session_id, (unsigned long long)m->seq, (unsigned long long)p->client_id);
    pending_answer(core, p, HUBU__V1__CODE__UNAVAILABLE, m->session_id, 0, 0, "seq taken; send again", 0,
                   HUBU_STORE_RETRY_AFTER_MS);
  } else if (op->status == HUBU_STORE_DEVICE_MOVED) { /* the device said HELLO on another node since */
    pending_answer(core, p, HUBU__V1__CODE__UNAVAILABLE, m->session_id, 0, 0,
                   "the device is served by another node now; send again there", 0, HUBU_STORE_RETRY_AFTER_MS);
  } else if (op->status == HUBU_STORE_RETRY) { /* not written, or in doubt: the same SEND may come again */
    if (op->append.in_doubt) {                 /* it may be stored after all: PULLs around its seq must ask the store */
      hubu_session_tail_forget(p->session, m->seq);
      hubu_log(HUBU_LOG_WARN, p->sender_conn, m->sender, "send_in_doubt",
               "session=%s seq=%llu client_id=%llu msg=\"answered UNAVAILABLE; a resend is stored once\"",
               m->session_id, (unsigned long long)m->seq, (unsigned long long)p->client_id);
    }
    pending_answer(core, p, HUBU__V1__CODE__UNAVAILABLE, m->session_id, 0, 0, "store busy", 0,
                   HUBU_STORE_RETRY_AFTER_MS);
  } else {
    pending_answer(core, p, HUBU__V1__CODE__INTERNAL, m->session_id, 0, 0,
                   "the store failed; resend with a new client_id", 0, 0);
  }
  int unwritten = op->status == HUBU_STORE_RETRY || op->status == HUBU_STORE_SEQ_TAKEN ||
                  op->status == HUBU_STORE_DEVICE_MOVED; /* uses up nothing: its client_id may come again */
  hubu_store_op_free(op);
  pending_finish(core, p, unwritten);
}

/* Stores p's message (m as the plugins left it in v) under seq. */
static void append_with_seq(hubu_core *core, hubu_session *sess, hubu_pending_send *p, const Hubu__V1__Send *m,
                            hubu_send_verdict *v, uint64_t seq) {
  hubu_device *d = p->device;
  uint8_t *meta = NULL;
  size_t meta_len = 0;
  hubu_store_op *op = NULL;
  const uint8_t *body = v->rewritten ? v->body : m->body.data;
  size_t body_len = v->rewritten ? v->body_len : m->body.len;
  const char *ctype = v->rewritten ? v->content_type : m->content_type;
  int meta_ok = v->rewritten ? 0 : hubu_msg_pack_meta(m->n_meta, m->meta, &meta, &meta_len);
  if (v->rewritten) { /* the verdict's packed meta moves here */
    meta = v->meta, meta_len = v->meta_len;
    v->meta = NULL;
  }
  if (seq > sess->next_seq) sess->next_seq = seq; /* used up even if the append cannot start */
  if (meta_ok == 0 && (op = hubu_store_op_new(HUBU_STORE_APPEND)) &&
      (sess->stored || hubu_session_describe_new(sess, d->user, op) == 0) &&
      (p->msg = hubu_msg_new(sess->id, seq, hubu_core_next_msg_id(core), d->user, d->device, p->client_id, body,
                             body_len, ctype, meta, meta_len, hubu_now_ms()))) {
    op->append.msg = hubu_msg_ref(p->msg);
    op->append.device_epoch = core->cfg.cluster ? p->epoch : 0;
    op->done = on_appended;
    op->ud = p;
    op->ud2 = core;
    hubu_store_submit(core->store, op);
  } else {
    hubu_store_op_free(op);
    seq_settled(core, sess, seq); /* abandoned */
    hubu_log(HUBU_LOG_ERROR, p->sender_conn, d->user, "out_of_memory", "where=send");
    pending_answer(core, p, HUBU__V1__CODE__INTERNAL, m->session_id, 0, 0, "out of memory", 0, 0);
    pending_finish(core, p, 1);
  }
  free(meta);
}

/* The head of sess's seq queue got its answer (ok with seq, or none). */
static void seq_waited(hubu_core *core, hubu_session *sess, int ok, uint64_t seq) {
  hubu_seq_waiter *w = sess->seq_wait;
  sess->seq_wait = w->next;
  if (!sess->seq_wait) sess->seq_wait_last = NULL;
  hubu_pending_send *p = w->pending;
  Hubu__V1__Send *m = w->send;
  hubu_send_verdict v = w->verdict;
  free(w);
  if (ok) {
    append_with_seq(core, sess, p, m, &v, seq);
  } else {
    pending_answer(core, p, HUBU__V1__CODE__UNAVAILABLE, m->session_id, 0, 0, "no seq could be assigned", 0,
                   HUBU_STORE_RETRY_AFTER_MS);
    pending_finish(core, p, 1);
  }
  hubu_send_verdict_free(&v);
  hubu__v1__send__free_unpacked(m, NULL);
}

/* Asks for the seqs of the waiting SENDs, in order, until one must wait:
 * for the allocator, or for its plugins' verdict. Husks of refused SENDs at
 * the head are dropped. */
static void seq_pump(hubu_core *core, hubu_session *sess) {
  while (sess->seq_wait && !sess->seq_asking) {
    hubu_seq_waiter *w = sess->seq_wait;
    if (w->verdict_pending) return;
    if (!w->pending) {
      sess->seq_wait = w->next;
      if (!sess->seq_wait) sess->seq_wait_last = NULL;
      free(w);
      continue;
    }
    uint64_t seq = 0;
    hubu_seq_result r = seq_next(core, sess, &seq);
    if (r == HUBU_SEQ_LATER) {
      sess->seq_asking = 1;
      return;
    }
    seq_waited(core, sess, r == HUBU_SEQ_NOW, seq);
  }
}

void hubu_seq_answer(hubu_core *core, const char *session_id, int ok, uint64_t seq) {
  hubu_session *sess = NULL;
  HASH_FIND_STR(core->sessions, session_id, sess);
  if (!sess || !sess->seq_asking) return; /* nothing asked: a late or doubled answer */
  sess->seq_asking = 0;
  if (!sess->seq_wait) { /* the SEND it was for is gone (out of memory): the seq is abandoned */
    if (ok) seq_settled(core, sess, seq);
    return;
  }
  seq_waited(core, sess, ok, seq);
  seq_pump(core, sess);
}

/* Appends w to sess's seq queue. */
static void seq_queue(hubu_session *sess, hubu_seq_waiter *w) {
  if (sess->seq_wait_last)
    sess->seq_wait_last->next = w;
  else
    sess->seq_wait = w;
  sess->seq_wait_last = w;
}

void hubu_messaging_send_decided(hubu_core *core, uint64_t send_ref, hubu_send_verdict *v) {
  hubu_seq_waiter *w = NULL;
  HASH_FIND(hh, core->verdict_waits, &send_ref, sizeof send_ref, w);
  if (!w) { /* answered already */
    hubu_send_verdict_free(v);
    return;
  }
  HASH_DEL(core->verdict_waits, w);
  w->verdict_pending = 0;
  hubu_pending_send *p = w->pending;
  hubu_session *sess = p->session;
  if (v->code != HUBU__V1__CODE__OK) { /* refused: answered now; its husk keeps its place */
    pending_answer(core, p, v->code, w->send->session_id, 0, 0, v->reason, 0, v->retry_after_ms);
    pending_finish(core, p, 1);
    w->pending = NULL;
    hubu__v1__send__free_unpacked(w->send, NULL);
    w->send = NULL;
    hubu_send_verdict_free(v);
  } else {
    w->verdict = *v; /* its owned fields move into the waiter */
    memset(v, 0, sizeof *v);
  }
  seq_pump(core, sess);
}

static void resume_send(hubu_core *core, hubu_session *sess, hubu_parked *parked) {
  parked_send *ps = (parked_send *)parked;
  hubu_pending_send *p = ps->pending;
  Hubu__V1__Send *m = ps->send;
  hubu_device *d = p->device;
  hubu_hook_call send = {.event = HUBU_HOOK_SEND,
                         .user = d->user,
                         .device = d->device,
                         .session_id = sess->id,
                         .client_id = p->client_id,
                         .send = m};
  hubu_send_verdict *v = &send.verdict;
  v->code = HUBU__V1__CODE__OK;
  free(ps);
  uint64_t seq = 0;
  hubu_seq_result r = HUBU_SEQ_LATER;
  int hooked = 0;
  if (!sess->loaded) {
    pending_answer(core, p, HUBU__V1__CODE__UNAVAILABLE, m->session_id, 0, 0, "store unavailable", 0,
                   HUBU_STORE_RETRY_AFTER_MS);
    pending_finish(core, p, 1);
  } else if (!sess->exists || (sess->kind != HUBU_SESSION_DIRECT && !hubu_session_is_member(sess, d->user))) {
    pending_answer(core, p, HUBU__V1__CODE__FORBIDDEN, m->session_id, 0, 0, "not a member of this session", 0, 0);
    pending_finish(core, p, 1);
  } else if (!p->internal && (send.send_ref = ++core->next_send_ref) &&
             (hooked = hubu_hooks_run(&core->hooks, &send)) == HUBU_HOOK_LATER) {
    /* The plugins answer later: the SEND takes its place in the seq queue
     * now, so the SENDs after it keep their order, and waits there. */
    hubu_seq_waiter *w = calloc(1, sizeof *w);
    if (!w) { /* the late verdict finds no waiter and is dropped */
      pending_answer(core, p, HUBU__V1__CODE__INTERNAL, m->session_id, 0, 0, "out of memory", 0, 0);
      pending_finish(core, p, 1);
    } else {
      w->pending = p;
      w->send = m;
      w->send_ref = send.send_ref;
      w->verdict_pending = 1;
      m = NULL;
      HASH_ADD(hh, core->verdict_waits, send_ref, sizeof w->send_ref, w);
      seq_queue(sess, w);
    }
  } else if (hooked && v->code != HUBU__V1__CODE__OK) {
    pending_answer(core, p, v->code, m->session_id, 0, 0, v->reason, 0, v->retry_after_ms);
    pending_finish(core, p, 1);
  } else if (!sess->seq_wait && !sess->seq_asking && (r = seq_next(core, sess, &seq)) == HUBU_SEQ_NOW) {
    append_with_seq(core, sess, p, m, v, seq); /* the common path: nothing waits, the seq is known */
  } else if (r == HUBU_SEQ_UNAVAILABLE) {
    pending_answer(core, p, HUBU__V1__CODE__UNAVAILABLE, m->session_id, 0, 0, "no seq could be assigned", 0,
                   HUBU_STORE_RETRY_AFTER_MS);
    pending_finish(core, p, 1);
  } else { /* behind others, or the allocator answers later: wait in arrival order */
    hubu_seq_waiter *w = malloc(sizeof *w);
    if (!w) {
      if (r == HUBU_SEQ_LATER && !sess->seq_wait) sess->seq_asking = 1; /* the answer comes, to an empty queue */
      pending_answer(core, p, HUBU__V1__CODE__INTERNAL, m->session_id, 0, 0, "out of memory", 0, 0);
      pending_finish(core, p, 1);
    } else {
      if (!sess->seq_wait) sess->seq_asking = 1; /* r is LATER: this SEND's answer is owed */
      *w = (hubu_seq_waiter){.pending = p, .send = m, .verdict = *v};
      memset(v, 0, sizeof *v);
      m = NULL;
      seq_queue(sess, w);
    }
  }
  hubu_send_verdict_free(v);
  if (m) hubu__v1__send__free_unpacked(m, NULL);
}

static void on_found_send(hubu_store_op *op) {
  hubu_core *core = op->ud2;
  uint64_t conn_id = op->conn_id;
  const hubu_store_find_send_op *find = &op->find_send;
  if (op->status == HUBU_STORE_OK)
    send_ack(core, find->user, conn_id, find->client_id, HUBU__V1__CODE__OK, find->session_id, find->seq, find->msg_id,
             NULL, 1, 0);
  else if (op->status == HUBU_STORE_NOT_FOUND)
    send_ack(core, find->user, conn_id, find->client_id, HUBU__V1__CODE__STALE, "", 0, 0,
             "client_id is at or below this device's high-water mark and was never stored; resend with a new client_id",
             0, 0);
  else
    send_ack(core, find->user, conn_id, find->client_id, HUBU__V1__CODE__UNAVAILABLE, "", 0, 0, "store unavailable", 0,
             HUBU_STORE_RETRY_AFTER_MS);
  hubu_store_op_free(op);
}

/* Accepts a new message of device d: a pending entry (so retries find it)
 * and a request parked on its session until the session is loaded. Takes m
 * on success. internal: from a plugin (no SEND of a client behind it). */
static int queue_new(hubu_core *core, hubu_device *d, uint64_t conn_id, Hubu__V1__Send *m, int internal,
                     uint32_t bytes) {
  hubu_session *sess = hubu_session_get(core, m->session_id);
  hubu_pending_send *p = calloc(1, sizeof *p);
  parked_send *ps = malloc(sizeof *ps);
  if (!sess || !p || !ps) {
    free(p);
    free(ps);
    return -1;
  }
  p->client_id = m->client_id;
  p->device = d;
  d->refs++;
  p->session = sess;
  sess->busy++;
  p->sender_conn = conn_id;
  p->internal = (uint8_t)internal;
  p->bytes = bytes;
  p->epoch = internal ? 0 : d->epoch; /* the claim it was accepted under, however long it waits */
  HASH_ADD(hh, d->pending, client_id, sizeof p->client_id, p);
  if (!internal) d->assigned = m->client_id;
  ps->parked.resume = resume_send;
  ps->pending = p;
  ps->send = m;
  hubu_session_park(core, sess, &ps->parked);
  return 0;
}

/* The largest client_id: 2^53, the last integer every JSON client holds exactly. */
#define MAX_CLIENT_ID (1ull << 53)

/* One length-delimited field: tag, length, bytes. */
static size_t delimited_size(size_t len) { return 1 + hubu_varint_size(len) + len; }

/* The largest frame body that may carry this message alone: a PULL_RESULT
 * (request_id, code, session_id, max_seq, has_more at their widest) around
 * its Message entry, whose numbers (seq, msg_id, client_id, server_time_ms)
 * are counted at their widest too; a PUSH of it is smaller. For the SEND
 * limits (128-byte session_id and content_type, 64-byte ids, 4 KiB of meta
 * in 32 entries) it is at most the body + 4991 bytes (docs/protocol-notes.md). */
static size_t message_frame_max(const char *session_id, const char *sender, const char *device,
                                const char *content_type, size_t n_meta, Hubu__V1__Send__MetaEntry *const *meta,
                                size_t body_len) {
  size_t sid = delimited_size(strlen(session_id));
  size_t packed = sid + 3 * 11 + delimited_size(strlen(sender)) + delimited_size(strlen(device)) +
                  delimited_size(body_len) + delimited_size(strlen(content_type)) + 11;
  for (size_t i = 0; i < n_meta; i++)
    packed += delimited_size(delimited_size(strlen(meta[i]->key)) + delimited_size(strlen(meta[i]->value)));
  return 11 + 2 + sid + 11 + 2 + delimited_size(packed);
}

const char *hubu_messaging_send_internal(hubu_core *core, const char *user, const char *device, const char *session_id,
                                         const uint8_t *body, size_t len, const char *content_type) {
  if (!hubu_id_valid(user, strlen(user)) || !hubu_id_valid(device, strlen(device))) return "invalid user or device";
  int kind = hubu_session_id_check(session_id, strlen(session_id));
  if (kind < 0) return "malformed session_id";
  if (kind == HUBU_SESSION_DIRECT && !hubu_session_direct_has(session_id, user)) return "not a member of this session";
  if (message_frame_max(session_id, user, device, content_type ? content_type : "", 0, NULL, len) > core->cfg.max_frame)
    return "body too large";
  Hubu__V1__Send *m = malloc(sizeof *m);
  if (!m) return "out of memory";
  hubu__v1__send__init(m);
  m->client_id = hubu_core_next_msg_id(core); /* unique, so it never meets a client's client_id rules */
  m->session_id = strdup(session_id);
  m->content_type = strdup(content_type ? content_type : "");
  m->body.data = malloc(len ? len : 1);
  m->body.len = len;
  if (m->body.data && len) memcpy(m->body.data, body, len);
  hubu_device *d = hubu_device_acquire(core, user, device);
  if (!m->session_id || !m->content_type || !m->body.data || !d || queue_new(core, d, 0, m, 1, 0) != 0) {
    if (d) hubu_device_release(core, d);
    hubu__v1__send__free_unpacked(m, NULL);
    return "out of memory";
  }
  hubu_device_release(core, d); /* the pending send holds its own reference */
  return NULL;
}

static const char *send_invalid(const Hubu__V1__Send *m, int *kind, const hubu_peer *c) {
  if (m->client_id == 0) return "client_id must be 1 or more";
  if (m->client_id > MAX_CLIENT_ID) return "client_id must be at most 2^53 (9007199254740992)";
  *kind = hubu_session_id_check(m->session_id, strlen(m->session_id));
  if (*kind < 0) return "malformed session_id";
  if (strlen(m->content_type) > MAX_CONTENT_TYPE) return "content_type too long";
  if (m->n_meta > MAX_META_ENTRIES) return "too many meta entries";
  size_t meta = 0;
  for (size_t i = 0; i < m->n_meta; i++) meta += strlen(m->meta[i]->key) + strlen(m->meta[i]->value);
  if (meta > MAX_META_BYTES) return "meta too large";
  if (message_frame_max(m->session_id, c->user, c->device, m->content_type, m->n_meta, m->meta, m->body.len) >
      c->core->cfg.max_frame)
    return "body too large: the message must fit in one PUSH of max_frame";
  return NULL;
}

void hubu_messaging_send(hubu_peer *c, const hubu_frame *f) {
  hubu_core *core = c->core;
  Hubu__V1__Send *m = hubu__v1__send__unpack(NULL, f->header.length, f->body);
  if (!m) {
    c->ops->bad_body(c, f->header.type);
    return;
  }
  core->stats.sends_received++;
  c->sends_unanswered++;
  hubu_device *d = c->dev;
  int kind = -1;
  int strings_ok = hubu_wire_strings_ok(&hubu__v1__send__descriptor, f->body, f->header.length);
  const char *invalid = strings_ok ? send_invalid(m, &kind, c) : "string fields must be UTF-8 without NUL";
  if (invalid) { /* the session id is echoed only when it is one */
    int sid_ok = strings_ok && hubu_session_id_check(m->session_id, strlen(m->session_id)) >= 0;
    const char *sid = sid_ok ? m->session_id : "";
    send_ack(core, c->user, c->id, m->client_id, HUBU__V1__CODE__INVALID, sid, 0, 0, invalid, 0, 0);
    goto done;
  }
  if (kind == HUBU_SESSION_DIRECT && !hubu_session_direct_has(m->session_id, c->user)) {
    send_ack(core, c->user, c->id, m->client_id, HUBU__V1__CODE__FORBIDDEN, m->session_id, 0, 0,
             "not a member of this session", 0, 0);
    goto done;
  }
  if (m->client_id <= d->assigned) { /* a retry, or a stale client_id */
    hubu_pending_send *p = NULL;
    HASH_FIND(hh, d->pending, &m->client_id, sizeof m->client_id, p);
    if (p) { /* still in the store queue: answered with the original */
      uint64_t *r = realloc(p->retry_conns, (p->n_retry_conns + 1) * sizeof *r);
      if (r) {
        p->retry_conns = r;
        r[p->n_retry_conns++] = c->id;
      }
      goto done;
    }
    hubu_msg *recent = hubu_device_recent(d, m->client_id);
    if (recent) {
      send_ack(core, c->user, c->id, m->client_id, HUBU__V1__CODE__OK, recent->session_id, recent->seq, recent->msg_id,
               NULL, 1, 0);
      goto done;
    }
    hubu_store_op *op = hubu_store_op_new(HUBU_STORE_FIND_SEND);
    if (!op) {
      send_ack(core, c->user, c->id, m->client_id, HUBU__V1__CODE__INTERNAL, m->session_id, 0, 0, "out of memory", 0,
               0);
      goto done;
    }
    snprintf(op->find_send.user, sizeof op->find_send.user, "%s", d->user);
    snprintf(op->find_send.device, sizeof op->find_send.device, "%s", d->device);
    op->find_send.client_id = m->client_id;
    op->done = on_found_send;
    op->conn_id = c->id;
    op->ud2 = core;
    hubu_store_submit(core->store, op);
    goto done;
  }
  c->send_bytes_held += f->header.length; /* until its answer (pending_answer) */
  if (queue_new(core, d, c->id, m, 0, f->header.length) != 0) {
    c->send_bytes_held -= f->header.length;
    send_ack(core, c->user, c->id, m->client_id, HUBU__V1__CODE__INTERNAL, m->session_id, 0, 0, "out of memory", 0, 0);
  } else {
    return; /* m is the parked request's now */
  }
done:
  hubu__v1__send__free_unpacked(m, NULL);
}

/* ---- DELIVER_ACK ---- */

void hubu_messaging_deliver_ack(hubu_peer *c, const hubu_frame *f) {
  Hubu__V1__DeliverAck *a = hubu__v1__deliver_ack__unpack(NULL, f->header.length, f->body);
  if (!a) {
    c->ops->bad_body(c, f->header.type);
    return;
  }
  if (!hubu_wire_strings_ok(&hubu__v1__deliver_ack__descriptor, f->body, f->header.length)) {
    /* a cursor's session id with a NUL would be read cut short: none is taken */
    hubu_wire_append_error(c->ops->output(c), HUBU__V1__CODE__INVALID, "session ids must be UTF-8 without NUL",
                           f->header.type);
    c->ops->wrote(c);
    hubu__v1__deliver_ack__free_unpacked(a, NULL);
    return;
  }
  const char *refused = NULL; /* the first session the user may not read: no cursor is kept for it */
  for (size_t i = 0; i < a->n_cursors; i++) {
    const Hubu__V1__Cursor *cur = a->cursors[i];
    if (hubu_session_id_check(cur->session_id, strlen(cur->session_id)) < 0) continue;
    hubu_delivery_ack(c, cur->session_id, cur->seq);
    if (!hubu_device_has_cursor(c->dev, cur->session_id) && !hubu_delivery_pushed(c, cur->session_id) &&
        !hubu_session_may_read(c->core, cur->session_id, c->user)) {
      if (!refused) refused = cur->session_id;
      continue;
    }
    hubu_device_set_cursor(c->core, c->dev, cur->session_id, cur->seq);
  }
  if (refused) { /* one ERROR for the frame (docs/protocol-notes.md) */
    char why[200];
    snprintf(why, sizeof why, "no cursor kept for %s: not a session of this user (or not in use)", refused);
    hubu_wire_append_error(c->ops->output(c), HUBU__V1__CODE__FORBIDDEN, why, f->header.type);
    c->ops->wrote(c);
  }
  hubu__v1__deliver_ack__free_unpacked(a, NULL);
}

/* ---- SYNC ---- */

static void on_synced(hubu_store_op *op) {
  hubu_core *core = op->ud2;
  Hubu__V1__SyncRequest *req = op->ud;
  hubu_peer *c = hubu_core_peer_find(core, op->sync.user, op->conn_id);
  if (c && c->reads_unanswered) c->reads_unanswered--;
  if (c && c->state == HUBU_PEER_READY) {
    Hubu__V1__SyncResult r = HUBU__V1__SYNC_RESULT__INIT;
    r.request_id = req->request_id;
    r.code = op->status == HUBU_STORE_OK ? HUBU__V1__CODE__OK : HUBU__V1__CODE__UNAVAILABLE;
    size_t n_states = op->sync.n_states;
    Hubu__V1__SessionState *states = calloc(n_states ? n_states : 1, sizeof *states);
    Hubu__V1__SessionState **ptrs = calloc(n_states ? n_states : 1, sizeof *ptrs);
    if (states && ptrs) {
      for (size_t i = 0; i < n_states; i++) {
        hubu_store_session_state *st = &op->sync.states[i];
        uint64_t known = 0;
        for (size_t k = 0; k < req->n_known; k++)
          if (strcmp(req->known[k]->session_id, st->session_id) == 0) known = req->known[k]->seq;
        if (st->max_seq <= known || !hook_read(core, c->user, st->session_id, "sync")) continue;
        Hubu__V1__SessionState *out = &states[r.n_sessions];
        hubu__v1__session_state__init(out);
        out->session_id = st->session_id;
        out->max_seq = st->max_seq;
        out->min_seq = st->min_seq;
        out->kind = st->kind;
        ptrs[r.n_sessions++] = out;
      }
      r.sessions = ptrs;
    } else {
      r.code = HUBU__V1__CODE__INTERNAL;
    }
    hubu_peer_send(c, HUBU_FRAME_SYNC_RESULT, &r.base);
    free(states);
    free(ptrs);
  }
  hubu__v1__sync_request__free_unpacked(req, NULL);
  hubu_store_op_free(op);
}

void hubu_messaging_sync(hubu_peer *c, const hubu_frame *f) {
  Hubu__V1__SyncRequest *req = hubu__v1__sync_request__unpack(NULL, f->header.length, f->body);
  if (!req) {
    c->ops->bad_body(c, f->header.type);
    return;
  }
  c->reads_unanswered++; /* until its SYNC_RESULT: the transport pauses input at HUBU_MAX_PENDING_READS */
  int strings_ok = hubu_wire_strings_ok(&hubu__v1__sync_request__descriptor, f->body, f->header.length);
  hubu_store_op *op = strings_ok ? hubu_store_op_new(HUBU_STORE_SYNC) : NULL;
  if (!op) { /* a known cursor's session id with a NUL would be read cut short */
    Hubu__V1__SyncResult r = HUBU__V1__SYNC_RESULT__INIT;
    r.request_id = req->request_id;
    r.code = strings_ok ? HUBU__V1__CODE__INTERNAL : HUBU__V1__CODE__INVALID;
    if (c->reads_unanswered) c->reads_unanswered--;
    hubu_peer_send(c, HUBU_FRAME_SYNC_RESULT, &r.base);
    hubu__v1__sync_request__free_unpacked(req, NULL);
    return;
  }
  snprintf(op->sync.user, sizeof op->sync.user, "%s", c->user);
  op->conn_id = c->id;
  op->done = on_synced;
  op->ud = req;
  op->ud2 = c->core;
  hubu_store_submit(c->core->store, op);
}

/* ---- PULL ---- */

typedef struct {
  hubu_parked parked;
  uint64_t conn_id;
  uint64_t request_id;
  uint64_t after_seq;
  uint32_t limit;
  char user[HUBU_ID_MAX + 1];
} parked_pull;

static void on_pulled(hubu_store_op *op) {
  hubu_core *core = op->ud2;
  hubu_session *sess = op->ud;
  hubu_peer *c = hubu_core_peer_find(core, op->pull.user, op->conn_id);
  sess->busy--;
  if (c && c->state == HUBU_PEER_READY) {
    if (op->status == HUBU_STORE_OK) {
      /* Only up to the committed watermark: a stored seq above it may still
       * have a lower one settling (seq.h), so no hole is proven early. */
      size_t n = op->pull.n_msgs;
      int has_more = op->pull.has_more;
      uint64_t watermark = sess->committed_seq;
      if (op->pull.settle_ms) /* cluster mode: the store proved the holes up to its watermark */
        watermark = op->pull.max_seq;
      else
        while (n && op->pull.msgs[n - 1]->seq > sess->committed_seq) n--, has_more = 0;
      send_pull_result(c, op->request_id, HUBU__V1__CODE__OK, sess->id, op->pull.msgs, n, watermark, has_more);
    } else {
      pull_error(c, op->request_id, HUBU__V1__CODE__UNAVAILABLE, sess->id);
    }
  }
  hubu_store_op_free(op);
}

static void resume_pull(hubu_core *core, hubu_session *sess, hubu_parked *parked) {
  parked_pull *pp = (parked_pull *)parked;
  hubu_peer *c = hubu_core_peer_find(core, pp->user, pp->conn_id);
  if (!c || c->state != HUBU_PEER_READY) goto done;
  if (!sess->loaded) {
    pull_error(c, pp->request_id, HUBU__V1__CODE__UNAVAILABLE, sess->id);
  } else if (!sess->exists || !hubu_session_is_member(sess, pp->user)) {
    pull_error(c, pp->request_id, HUBU__V1__CODE__FORBIDDEN, sess->id);
  } else if (!hook_read(core, pp->user, sess->id, "pull")) {
    pull_error(c, pp->request_id, HUBU__V1__CODE__FORBIDDEN, sess->id);
  } else {
    hubu_msg *tail[HUBU_TAIL_CAP];
    int has_more = 0;
    int n = core->cfg.cluster ? -1 : hubu_session_tail_read(sess, pp->after_seq, pp->limit, tail, &has_more);
    if (n >= 0) {
      core->stats.pulls_from_tail++;
      send_pull_result(c, pp->request_id, HUBU__V1__CODE__OK, sess->id, tail, (size_t)n, sess->committed_seq, has_more);
      goto done;
    }
    hubu_store_op *op = hubu_store_op_new(HUBU_STORE_PULL);
    if (!op) {
      pull_error(c, pp->request_id, HUBU__V1__CODE__INTERNAL, sess->id);
      goto done;
    }
    core->stats.pulls_from_store++;
    snprintf(op->pull.session_id, sizeof op->pull.session_id, "%s", sess->id);
    op->pull.after_seq = pp->after_seq;
    op->pull.limit = pp->limit;
    op->pull.settle_ms = core->cfg.pull_settle_ms;
    op->request_id = pp->request_id;
    op->conn_id = pp->conn_id;
    snprintf(op->pull.user, sizeof op->pull.user, "%s", pp->user);
    op->done = on_pulled;
    op->ud = sess;
    op->ud2 = core;
    sess->busy++;
    hubu_store_submit(core->store, op);
  }
done:
  free(pp);
}

void hubu_messaging_pull(hubu_peer *c, const hubu_frame *f) {
  hubu_core *core = c->core;
  Hubu__V1__PullRequest *req = hubu__v1__pull_request__unpack(NULL, f->header.length, f->body);
  if (!req) {
    c->ops->bad_body(c, f->header.type);
    return;
  }
  c->reads_unanswered++; /* until its PULL_RESULT (send_pull_result) */
  int kind = hubu_wire_strings_ok(&hubu__v1__pull_request__descriptor, f->body, f->header.length)
                 ? hubu_session_id_check(req->session_id, strlen(req->session_id))
                 : -1;
  hubu_session *sess = NULL;
  parked_pull *pp = NULL;
  if (kind < 0) { /* not echoed: it may hold any bytes */
    pull_error(c, req->request_id, HUBU__V1__CODE__INVALID, "");
  } else if (kind == HUBU_SESSION_DIRECT && !hubu_session_direct_has(req->session_id, c->user)) {
    pull_error(c, req->request_id, HUBU__V1__CODE__FORBIDDEN, req->session_id);
  } else if (!(sess = hubu_session_get(core, req->session_id)) || !(pp = calloc(1, sizeof *pp))) {
    pull_error(c, req->request_id, HUBU__V1__CODE__INTERNAL, req->session_id);
  } else {
    uint32_t limit = req->limit ? req->limit : 100;
    if (limit > core->cfg.pull_limit_max) limit = core->cfg.pull_limit_max;
    if (limit > HUBU_TAIL_CAP) limit = HUBU_TAIL_CAP;
    pp->parked.resume = resume_pull;
    pp->conn_id = c->id;
    pp->request_id = req->request_id;
    pp->after_seq = req->after_seq;
    pp->limit = limit;
    snprintf(pp->user, sizeof pp->user, "%s", c->user);
    hubu_session_park(core, sess, &pp->parked);
  }
  hubu__v1__pull_request__free_unpacked(req, NULL);
}

void hubu_messaging_peer_closed(hubu_peer *c) {
  hubu_core *core = c->core;
  if (c->attached && c->transient) {
    for (hubu_peer **pp = &core->transients; *pp; pp = &(*pp)->user_next)
      if (*pp == c) {
        *pp = c->user_next;
        break;
      }
    c->user_next = NULL;
  } else if (c->attached) {
    hook_peer(core, HUBU_HOOK_DISCONNECT, c);
    core->directory->ops->detach(core->directory, c);
  }
  c->attached = 0;
  hubu_delivery_free(c);
  if (c->dev) {
    hubu_device *d = c->dev;
    for (uint32_t i = 0; i < d->n_hello_waiters; i++) { /* a connection that never got its HELLO_OK */
      if (d->hello_waiters[i] == c) {
        d->hello_waiters[i] = d->hello_waiters[--d->n_hello_waiters];
        break;
      }
    }
    hubu_device_release(core, d);
  }
  c->dev = NULL;
}

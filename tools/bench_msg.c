/* bench_msg.c — the messaging scenarios of hubu-bench, on the frame layer of
 * libhubu-client (hubu_client_send_frame + on_frame, no automatic SYNC):
 *
 *   pairs   N sender->receiver pairs in d: sessions; every sender keeps W SENDs
 *           outstanding until M messages in total are delivered.
 *   rate    the same pairs under a fixed offered rate R (open loop, on a
 *           timerfd schedule); latency counts from the SCHEDULED send time, so
 *           a lagging bench counts against the server.
 *   fanout  one sender and N online members of a fresh group (created in the
 *           store before connecting), one message at a time: the time until the
 *           last member has it.
 *
 * Every SEND body starts with the send (or scheduled) time, uv_hrtime ns, as 8
 * little-endian bytes; fanout adds the message index in the next 8. Receivers
 * take a session's messages in seq order only: a message past a gap (the
 * server hinted instead of pushing) is left for a PULL, which is sent at once.
 * Each PUSH or PULL_RESULT frame is answered with one cumulative DELIVER_ACK.
 *
 * The few protobuf fields used are encoded and decoded by hand, so the bench's
 * CPU goes to its sockets rather than to allocation.
 *
 * Invariants: the load starts only once every connection is READY; a lost
 * connection or a refused SEND ends the run as failed; everything is bounded
 * by the message count and --timeout-ms, and every handle is closed before
 * the scenario returns. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "bench.h"
#include "frame.h"
#include "hubu_client.h"
#include "store.h"
#include "token.h"
#include "wire.h"

#define MSG_TS_BYTES 16       /* body prefix: timestamp, then (fanout) message index */
#define MSG_PULL_LIMIT 500    /* messages per PULL */
#define MSG_RATE_MAX_BATCH 64 /* sends per schedule wake-up, at most, before re-arming */

typedef enum { MSG_PAIRS, MSG_RATE, MSG_FANOUT } bench_msg_kind;
typedef enum { PEER_SENDER, PEER_RECEIVER } bench_peer_role;

typedef struct bench_msg bench_msg;

typedef struct {
  bench_msg *run;
  hubu_client *client; /* owned until handed to hubu_client_close; NULL then */
  bench_peer_role role;
  int ready;
  long index; /* pair or member number */
  char user[32];
  char session[96];
  size_t session_len;
  /* sender */
  uint64_t base_client_id; /* HelloOk.last_client_id: this run's client_ids follow it */
  uint64_t last_client_id; /* the latest one sent */
  long outstanding;        /* SENDs without SEND_ACK */
  uint64_t *sent_ns;       /* pairs: send time by client_id % window */
  /* receiver */
  uint64_t cursor; /* every seq up to it is held */
  uint64_t wanted; /* highest seq known to exist (PULL_HINT, a gap, PULL_RESULT.max_seq) */
  int pulling;     /* a PULL is outstanding */
  int syncing;     /* the SYNC that finds the session's max_seq is outstanding */
  int ack_due;     /* fanout: a DELIVER_ACK waits for the end of the round */
} bench_peer;

struct bench_msg {
  const bench_options *o;
  uv_loop_t *loop;
  bench_msg_kind kind;
  bench_peer *peers; /* owned */
  long n_peers;
  long connect_next, connecting, ready;
  int filling, loading, stopping;
  int failed;
  char first_error[160];
  uv_timer_t timeout;
  uv_signal_t sigint;
  uint8_t *body; /* owned: the body template, o->body_bytes */
  size_t body_len;
  uint8_t *scratch; /* owned: one encoded SEND */
  size_t scratch_cap;

  long total; /* messages to send (pairs, rate) */
  long sent, acked, send_failed, delivered, duplicates, gaps, hints, pulls;
  uint64_t t_connect, t_start, t_end, t_last_send, t_last_delivery;
  double cpu_start, cpu_end, server_cpu_start, server_cpu_end;
  double db_cpu_start, db_cpu_end;     /* -1 without --db-pid */
  double recv_cpu_start, recv_cpu_end; /* -1 without --recv-pid */
  long rss_start_kb, rss_end_kb;

  uint64_t *ack_ns; /* owned: SEND -> SEND_ACK, one per ACK */
  long n_ack, cap_ack;
  uint64_t *e2e_ns; /* owned: SEND (or scheduled) time -> receipt, one per delivery */
  long n_e2e, cap_e2e;

  /* rate: message j (0-based) is due at t_start + j * 1e9 / rate, from pair j % pairs */
  int tfd;
  uv_poll_t tick;
  int tick_open;
  long next_due;
  uint64_t *lag_ns; /* owned: actual send time - scheduled time */
  long n_lag;
  uint64_t *sent_e2e_ns; /* owned: actual send time -> receipt (the bench's lag left out) */
  long n_sent_e2e;

  /* fanout */
  long members;
  long fan_index;  /* the message in flight */
  long fan_have;   /* members holding it */
  int fan_acked;   /* its SEND_ACK came */
  int fan_waiting; /* the round is over: acknowledging, then the gap timer */
  uv_timer_t gap;  /* the pause between rounds */
  int gap_open;
  uint64_t fan_sent_ns;                 /* when it was sent */
  uint64_t *fan_last_ns, *fan_first_ns; /* owned: per message */
  long n_fan;
  char group[HUBU_SESSION_ID_MAX + 1];
  double group_create_s;

  bench_probe *probe; /* owned: --probe-ms, pairs and rate */
};

static void msg_fill(bench_msg *run);
static void msg_start(bench_msg *run);
static void msg_on_sync_result(bench_peer *p, const uint8_t *body, size_t len);
static void msg_stop(bench_msg *run);
static void msg_finish(bench_msg *run);
static void msg_fanout_next(bench_msg *run);
static void msg_fanout_round_done(bench_msg *run);
static void msg_rate_schedule(bench_msg *run);

/* ---- protobuf by hand ---------------------------------------------------------- */

static int pb_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

typedef struct {
  uint32_t field;
  uint32_t wire;
  uint64_t v;          /* wire type 0 */
  const uint8_t *data; /* wire type 2 */
  size_t len;
} pb_field;

/* Reads the field at *p and moves past it. 0, or -1 on malformed input. */
static int pb_next(const uint8_t **p, const uint8_t *end, pb_field *f) {
  uint64_t key, n;
  if (pb_get_varint(p, end, &key) != 0) return -1;
  f->field = (uint32_t)(key >> 3);
  f->wire = (uint32_t)(key & 7);
  switch (f->wire) {
    case 0: return pb_get_varint(p, end, &f->v);
    case 1:
      if (end - *p < 8) return -1;
      *p += 8;
      return 0;
    case 2:
      if (pb_get_varint(p, end, &n) != 0 || n > (uint64_t)(end - *p)) return -1;
      f->data = *p;
      f->len = (size_t)n;
      *p += n;
      return 0;
    case 5:
      if (end - *p < 4) return -1;
      *p += 4;
      return 0;
    default: return -1;
  }
}

static size_t pb_put_bytes(uint8_t *p, uint8_t tag, const void *data, size_t len) {
  size_t n = 0;
  p[n++] = tag;
  n += hubu_varint_put(p + n, len);
  memcpy(p + n, data, len);
  return n + len;
}

static void le64_put(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le64_get(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* ---- errors and ending --------------------------------------------------------- */

static void msg_fail(bench_msg *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg_fail(bench_msg *run, const char *fmt, ...) {
  if (!run->first_error[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(run->first_error, sizeof run->first_error, fmt, ap);
    va_end(ap);
  }
  run->failed = 1;
  if (run->loading)
    msg_finish(run);
  else
    msg_stop(run);
}

/* The load is over (done, failed or timed out): take the closing figures, stop. */
static void msg_finish(bench_msg *run) {
  if (run->stopping) return;
  if (run->loading) {
    run->t_end = uv_hrtime();
    run->cpu_end = bench_self_cpu_s();
    run->server_cpu_end = bench_proc_cpu_s(&bench_server);
    run->db_cpu_end = bench_proc_cpu_s(&bench_db);
    run->recv_cpu_end = bench_proc_cpu_s(&bench_recv);
    run->rss_end_kb = bench_proc_rss_kb(&bench_server);
    run->loading = 0;
  }
  msg_stop(run);
}

static void msg_on_tick_closed(uv_handle_t *h) {
  bench_msg *run = h->data;
  if (run->tfd >= 0) close(run->tfd);
  run->tfd = -1;
}

static void msg_stop(bench_msg *run) {
  if (run->stopping) return;
  run->stopping = 1;
  for (long i = 0; i < run->n_peers; i++) {
    hubu_client *c = run->peers[i].client;
    run->peers[i].client = NULL;
    if (c) hubu_client_close(c, NULL);
  }
  uv_close((uv_handle_t *)&run->timeout, NULL);
  uv_close((uv_handle_t *)&run->sigint, NULL);
  if (run->tick_open) {
    run->tick_open = 0;
    uv_close((uv_handle_t *)&run->tick, msg_on_tick_closed);
  }
  if (run->gap_open) {
    run->gap_open = 0;
    uv_close((uv_handle_t *)&run->gap, NULL);
  }
  bench_probe_stop(run->probe);
}

static void msg_check_done(bench_msg *run) {
  if (!run->loading || run->kind == MSG_FANOUT) return;
  if (run->acked + run->send_failed >= run->total && run->delivered >= run->acked) msg_finish(run);
}

static void msg_on_timeout(uv_timer_t *t) {
  bench_msg *run = t->data;
  if (run->loading)
    fprintf(stderr, "hubu-bench: timeout: %ld sent, %ld acked, %ld delivered\n", run->sent, run->acked, run->delivered);
  else
    fprintf(stderr, "hubu-bench: timeout while connecting: %ld of %ld ready\n", run->ready, run->n_peers);
  if (!run->first_error[0]) snprintf(run->first_error, sizeof run->first_error, "timeout (--timeout-ms)");
  run->failed = 1;
  msg_finish(run);
}

static void msg_on_sigint(uv_signal_t *s, int signum) {
  (void)signum;
  bench_msg *run = s->data;
  fprintf(stderr, "hubu-bench: interrupted\n");
  if (!run->first_error[0]) snprintf(run->first_error, sizeof run->first_error, "interrupted");
  run->failed = 1;
  msg_finish(run);
}

/* ---- frames out ------------------------------------------------------------------ */

/* SEND{client_id, session_id, body} with body's first 8 bytes = ts_ns and the
 * next 8 = index (fanout: the message number; rate: the actual send time). */
static int msg_send(bench_peer *p, uint64_t ts_ns, uint64_t index) {
  bench_msg *run = p->run;
  if (!p->client || run->stopping) return -1;
  uint64_t client_id = ++p->last_client_id;
  le64_put(run->body, ts_ns);
  le64_put(run->body + 8, index);
  uint8_t *w = run->scratch;
  size_t n = 0;
  w[n++] = 0x08; /* client_id */
  n += hubu_varint_put(w + n, client_id);
  n += pb_put_bytes(w + n, 0x12, p->session, p->session_len); /* session_id */
  n += pb_put_bytes(w + n, 0x1A, run->body, run->body_len);   /* body */
  int r = hubu_client_send_frame(p->client, HUBU_FRAME_SEND, w, n);
  if (r < 0) {
    msg_fail(run, "%s: send: %s", p->user, uv_strerror(r));
    return -1;
  }
  p->outstanding++;
  run->sent++;
  return 0;
}

static void msg_deliver_ack(bench_peer *p) {
  if (!p->client || p->run->stopping) return;
  uint8_t w[8 + sizeof p->session + 16], inner[sizeof p->session + 16];
  size_t m = pb_put_bytes(inner, 0x0A, p->session, p->session_len); /* Cursor.session_id */
  inner[m++] = 0x10;                                                /* Cursor.seq */
  m += hubu_varint_put(inner + m, p->cursor);
  size_t n = pb_put_bytes(w, 0x0A, inner, m); /* DeliverAck.cursors */
  int r = hubu_client_send_frame(p->client, HUBU_FRAME_DELIVER_ACK, w, n);
  if (r < 0) msg_fail(p->run, "%s: deliver_ack: %s", p->user, uv_strerror(r));
}

static void msg_pull(bench_peer *p) {
  bench_msg *run = p->run;
  if (!p->client || run->stopping) return;
  uint8_t w[sizeof p->session + 40];
  size_t n = 0;
  w[n++] = 0x08; /* request_id */
  n += hubu_varint_put(w + n, (uint64_t)++run->pulls);
  n += pb_put_bytes(w + n, 0x12, p->session, p->session_len); /* session_id */
  w[n++] = 0x18;                                              /* after_seq */
  n += hubu_varint_put(w + n, p->cursor);
  w[n++] = 0x20; /* limit */
  n += hubu_varint_put(w + n, MSG_PULL_LIMIT);
  int r = hubu_client_send_frame(p->client, HUBU_FRAME_PULL, w, n);
  if (r < 0) {
    msg_fail(run, "%s: pull: %s", p->user, uv_strerror(r));
    return;
  }
  p->pulling = 1;
}

/* ---- frames in ------------------------------------------------------------------- */

static void msg_record(uint64_t *v, long *n, long cap, uint64_t value) {
  if (*n < cap) v[(*n)++] = value;
}

/* One received Message (the bytes of a Push or PullResult entry). */
static int msg_take(bench_peer *p, const uint8_t *data, size_t len, uint64_t now) {
  bench_msg *run = p->run;
  const uint8_t *q = data, *end = data + len;
  const uint8_t *sid = NULL, *body = NULL;
  size_t sid_len = 0, body_len = 0;
  uint64_t seq = 0;
  pb_field f = {0};
  while (q < end) {
    if (pb_next(&q, end, &f) != 0) return -1;
    if (f.field == 1 && f.wire == 2)
      sid = f.data, sid_len = f.len;
    else if (f.field == 2 && f.wire == 0)
      seq = f.v;
    else if (f.field == 7 && f.wire == 2)
      body = f.data, body_len = f.len;
  }
  if (!sid || sid_len != p->session_len || memcmp(sid, p->session, sid_len) != 0) return 0; /* not ours */
  if (seq <= p->cursor) {
    run->duplicates++;
    return 0;
  }
  if (seq != p->cursor + 1) { /* the server hinted instead of pushing the ones between */
    run->gaps++;
    if (seq > p->wanted) p->wanted = seq;
    return 0;
  }
  p->cursor = seq;
  if (!body || body_len < MSG_TS_BYTES) return -1;
  uint64_t ts = le64_get(body);
  run->delivered++;
  run->t_last_delivery = now;
  msg_record(run->e2e_ns, &run->n_e2e, run->cap_e2e, now > ts ? now - ts : 0);
  if (run->kind == MSG_RATE) {
    uint64_t sent = le64_get(body + 8);
    msg_record(run->sent_e2e_ns, &run->n_sent_e2e, run->total, now > sent ? now - sent : 0);
  }
  if (run->kind == MSG_FANOUT && (long)le64_get(body + 8) == run->fan_index) {
    if (++run->fan_have == 1) msg_record(run->fan_first_ns, &run->n_fan, run->o->messages, now - run->fan_sent_ns);
    if (run->fan_have == run->members) run->fan_last_ns[run->fan_index] = now - run->fan_sent_ns;
  }
  return 0;
}

static void msg_after_receipt(bench_peer *p) {
  if (p->wanted > p->cursor && !p->pulling) msg_pull(p);
  if (p->run->kind == MSG_FANOUT)
    p->ack_due = 1; /* at the end of the round, off the measured path */
  else
    msg_deliver_ack(p);
}

static void msg_on_push(bench_peer *p, const uint8_t *body, size_t len, uint64_t now) {
  const uint8_t *q = body, *end = body + len;
  pb_field f = {0};
  while (q < end) {
    if (pb_next(&q, end, &f) != 0 || (f.field == 1 && f.wire == 2 && msg_take(p, f.data, f.len, now) != 0)) {
      msg_fail(p->run, "%s: undecodable PUSH", p->user);
      return;
    }
  }
  msg_after_receipt(p);
}

static void msg_on_pull_hint(bench_peer *p, const uint8_t *body, size_t len) {
  const uint8_t *q = body, *end = body + len;
  const uint8_t *sid = NULL;
  size_t sid_len = 0;
  uint64_t max_seq = 0;
  pb_field f = {0};
  while (q < end) {
    if (pb_next(&q, end, &f) != 0) {
      msg_fail(p->run, "%s: undecodable PULL_HINT", p->user);
      return;
    }
    if (f.field == 1 && f.wire == 2)
      sid = f.data, sid_len = f.len;
    else if (f.field == 2 && f.wire == 0)
      max_seq = f.v;
  }
  if (!sid || sid_len != p->session_len || memcmp(sid, p->session, sid_len) != 0) return;
  p->run->hints++;
  if (max_seq > p->wanted) p->wanted = max_seq;
  if (p->wanted > p->cursor && !p->pulling) msg_pull(p);
}

static void msg_on_pull_result(bench_peer *p, const uint8_t *body, size_t len, uint64_t now) {
  bench_msg *run = p->run;
  const uint8_t *q = body, *end = body + len;
  uint64_t code = 0, max_seq = 0, has_more = 0;
  pb_field f = {0};
  p->pulling = 0;
  while (q < end) {
    if (pb_next(&q, end, &f) != 0 || (f.field == 4 && f.wire == 2 && msg_take(p, f.data, f.len, now) != 0)) {
      msg_fail(run, "%s: undecodable PULL_RESULT", p->user);
      return;
    }
    if (f.wire != 0) continue;
    if (f.field == 2)
      code = f.v;
    else if (f.field == 5)
      max_seq = f.v;
    else if (f.field == 6)
      has_more = f.v;
  }
  if (code != 0) {
    msg_fail(run, "%s: PULL refused, code %llu", p->user, (unsigned long long)code);
    return;
  }
  if (max_seq > p->wanted) p->wanted = max_seq;
  if (has_more && p->wanted <= p->cursor) p->wanted = p->cursor + 1;
  msg_after_receipt(p);
}

static void msg_on_send_ack(bench_peer *p, const uint8_t *body, size_t len, uint64_t now) {
  bench_msg *run = p->run;
  const uint8_t *q = body, *end = body + len;
  uint64_t client_id = 0, code = 0;
  const uint8_t *reason = NULL;
  size_t reason_len = 0;
  pb_field f = {0};
  while (q < end) {
    if (pb_next(&q, end, &f) != 0) {
      msg_fail(run, "%s: undecodable SEND_ACK", p->user);
      return;
    }
    if (f.field == 1 && f.wire == 0)
      client_id = f.v;
    else if (f.field == 2 && f.wire == 0)
      code = f.v;
    else if (f.field == 7 && f.wire == 2)
      reason = f.data, reason_len = f.len;
  }
  if (client_id <= p->base_client_id || client_id > p->last_client_id) return; /* not one of ours */
  p->outstanding--;
  if (code != 0) {
    run->send_failed++;
    if (!run->first_error[0])
      snprintf(run->first_error, sizeof run->first_error, "%s: SEND_ACK code %llu: %.*s", p->user,
               (unsigned long long)code, (int)(reason_len > 100 ? 100 : reason_len),
               reason ? (const char *)reason : "");
    if (run->kind == MSG_FANOUT) {
      msg_fail(run, "%s", run->first_error);
      return;
    }
  } else {
    run->acked++;
  }
  uint64_t k = client_id - p->base_client_id - 1; /* this sender's message number, from 0 */
  uint64_t sent = 0;
  switch (run->kind) {
    case MSG_PAIRS: sent = p->sent_ns[client_id % (uint64_t)run->o->window]; break;
    case MSG_RATE:
      sent = run->t_start +
             (uint64_t)((double)(k * (uint64_t)run->o->pairs + (uint64_t)p->index) * 1e9 / (double)run->o->rate);
      break;
    case MSG_FANOUT: sent = run->fan_sent_ns; break;
  }
  if (code == 0) msg_record(run->ack_ns, &run->n_ack, run->cap_ack, now > sent ? now - sent : 0);
  switch (run->kind) {
    case MSG_PAIRS:
      if (run->loading && run->sent < run->total) {
        uint64_t t = uv_hrtime();
        p->sent_ns[(p->last_client_id + 1) % (uint64_t)run->o->window] = t;
        run->t_last_send = t;
        if (msg_send(p, t, 0) != 0) return;
      }
      break;
    case MSG_RATE: break;
    case MSG_FANOUT:
      run->fan_acked = 1;
      if (run->fan_have >= run->members) msg_fanout_round_done(run);
      return;
  }
  msg_check_done(run);
}

static void msg_on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud) {
  bench_peer *p = ud;
  bench_msg *run = p->run;
  if (p->client != c) return;
  if (type == HUBU_FRAME_SYNC_RESULT && p->syncing) {
    msg_on_sync_result(p, body, len);
    return;
  }
  if (!run->loading) return;
  uint64_t now = uv_hrtime();
  switch (type) {
    case HUBU_FRAME_SEND_ACK:
      if (p->role == PEER_SENDER) msg_on_send_ack(p, body, len, now);
      return;
    case HUBU_FRAME_PUSH:
      if (p->role != PEER_RECEIVER) return;
      msg_on_push(p, body, len, now);
      break;
    case HUBU_FRAME_PULL_HINT:
      if (p->role != PEER_RECEIVER) return;
      msg_on_pull_hint(p, body, len);
      return;
    case HUBU_FRAME_PULL_RESULT:
      if (p->role != PEER_RECEIVER) return;
      msg_on_pull_result(p, body, len, now);
      break;
    default: return; /* PING, PONG: the library's; ERROR, GOAWAY end in on_state */
  }
  if (run->kind == MSG_FANOUT) {
    if (run->fan_have >= run->members && run->fan_acked) msg_fanout_round_done(run);
  } else {
    msg_check_done(run);
  }
}

/* ---- load ------------------------------------------------------------------------ */

static void msg_start(bench_msg *run) {
  const bench_options *o = run->o;
  run->loading = 1;
  run->rss_start_kb = bench_proc_rss_kb(&bench_server);
  run->server_cpu_start = bench_proc_cpu_s(&bench_server);
  run->db_cpu_start = bench_proc_cpu_s(&bench_db);
  run->recv_cpu_start = bench_proc_cpu_s(&bench_recv);
  run->cpu_start = bench_self_cpu_s();
  run->t_start = uv_hrtime();
  switch (run->kind) {
    case MSG_PAIRS:
      /* one turn fills every window; the flush sends each sender's in one write */
      for (long w = 0; w < o->window && run->sent < run->total && !run->stopping; w++) {
        for (long i = 0; i < o->pairs && run->sent < run->total && !run->stopping; i++) {
          bench_peer *p = &run->peers[2 * i + 1];
          uint64_t t = uv_hrtime();
          p->sent_ns[(p->last_client_id + 1) % (uint64_t)o->window] = t;
          run->t_last_send = t;
          if (msg_send(p, t, 0) != 0) return;
        }
      }
      break;
    case MSG_RATE: msg_rate_schedule(run); break;
    case MSG_FANOUT:
      run->fan_index = -1;
      msg_fanout_next(run);
      break;
  }
}

/* rate: sends what is due, then arms the timerfd for the next one. */
static uint64_t msg_due_ns(const bench_msg *run, long j) {
  return run->t_start + (uint64_t)((double)j * 1e9 / (double)run->o->rate);
}

static void msg_rate_schedule(bench_msg *run) {
  const bench_options *o = run->o;
  int sent_now = 0;
  while (run->next_due < run->total && !run->stopping) {
    uint64_t due = msg_due_ns(run, run->next_due), now = uv_hrtime();
    if (due > now || sent_now >= MSG_RATE_MAX_BATCH) {
      struct itimerspec its;
      memset(&its, 0, sizeof its);
      if (due <= now) due = now + 1000; /* let the loop read and flush, then go on */
      its.it_value.tv_sec = (time_t)(due / 1000000000u);
      its.it_value.tv_nsec = (long)(due % 1000000000u);
      if (timerfd_settime(run->tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        msg_fail(run, "timerfd_settime: %s", strerror(errno));
      return;
    }
    bench_peer *p = &run->peers[2 * (run->next_due % o->pairs) + 1];
    run->next_due++;
    sent_now++;
    run->t_last_send = now;
    msg_record(run->lag_ns, &run->n_lag, run->total, now - due);
    if (msg_send(p, due, now) != 0) return; /* the actual send time rides in the second 8 bytes */
  }
}

static void msg_on_tick(uv_poll_t *h, int status, int events) {
  (void)events;
  bench_msg *run = h->data;
  uint64_t expirations;
  if (status < 0) {
    msg_fail(run, "timerfd poll: %s", uv_strerror(status));
    return;
  }
  while (read(run->tfd, &expirations, sizeof expirations) > 0) {
  }
  if (run->loading) msg_rate_schedule(run);
}

/* fanout: every member has the current message and the sender has its ACK.
 * The members acknowledge now, all in this turn, and the next message waits
 * --gap-ms so the server has taken those DELIVER_ACKs before it is sent. */
static void msg_on_gap(uv_timer_t *t) {
  bench_msg *run = t->data;
  if (run->loading) msg_fanout_next(run);
}

static void msg_fanout_round_done(bench_msg *run) {
  if (run->fan_waiting) return;
  run->fan_waiting = 1;
  for (long i = 0; i < run->members && !run->stopping; i++) {
    bench_peer *p = &run->peers[i];
    if (!p->ack_due || !p->client) continue;
    p->ack_due = 0;
    msg_deliver_ack(p);
  }
  if (run->stopping) return;
  if (run->fan_index + 1 >= run->o->messages) {
    msg_fanout_next(run); /* the last one: finish without waiting */
    return;
  }
  uv_timer_start(&run->gap, msg_on_gap, run->o->gap_ms, 0);
}

/* fanout: sends the next message, or finishes after the last. */
static void msg_fanout_next(bench_msg *run) {
  run->fan_waiting = 0;
  run->fan_index++;
  if (run->fan_index >= run->o->messages) {
    msg_finish(run);
    return;
  }
  run->fan_have = 0;
  run->fan_acked = 0;
  bench_peer *sender = &run->peers[run->members];
  run->fan_sent_ns = run->t_last_send = uv_hrtime();
  msg_send(sender, run->fan_sent_ns, (uint64_t)run->fan_index);
}

/* ---- connecting ---------------------------------------------------------------- */

static void msg_on_state(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud) {
  bench_peer *p = ud;
  bench_msg *run = p->run;
  if (p->client != c || state != HUBU_CLIENT_CLOSED) return; /* our own closes are not failures */
  p->client = NULL;
  hubu_client_close(c, NULL);
  if (!p->ready) run->connecting--;
  msg_fail(run, "%s: connection %s (code %d: %s)", p->user, p->ready ? "lost" : "failed", code, reason ? reason : "");
}

/* The peer is connected and knows where its session stands: count it. */
static void msg_peer_ready(bench_peer *p) {
  bench_msg *run = p->run;
  p->ready = 1;
  run->ready++;
  run->connecting--;
  if (run->ready == run->n_peers) {
    msg_start(run);
    return;
  }
  msg_fill(run);
}

static void msg_on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  bench_peer *p = ud;
  p->base_client_id = p->last_client_id = info->last_client_id;
  if (p->role != PEER_RECEIVER || p->run->kind == MSG_FANOUT) { /* a fresh group starts at seq 0 */
    msg_peer_ready(p);
    return;
  }
  /* a d: session may hold messages of earlier runs: SYNC for its max_seq, and
   * count only what comes after it */
  static const uint8_t sync[] = {0x08, 0x01}; /* SyncRequest{request_id = 1} */
  int r = hubu_client_send_frame(c, HUBU_FRAME_SYNC, sync, sizeof sync);
  if (r < 0) {
    msg_fail(p->run, "%s: sync: %s", p->user, uv_strerror(r));
    return;
  }
  p->syncing = 1;
}

static void msg_on_sync_result(bench_peer *p, const uint8_t *body, size_t len) {
  const uint8_t *q = body, *end = body + len;
  uint64_t code = 0;
  pb_field f, g;
  p->syncing = 0;
  while (q < end) {
    if (pb_next(&q, end, &f) != 0) goto bad;
    if (f.field == 2 && f.wire == 0) code = f.v;
    if (f.field != 3 || f.wire != 2) continue;
    const uint8_t *sid = NULL, *r = f.data, *rend = f.data + f.len;
    size_t sid_len = 0;
    uint64_t max_seq = 0;
    while (r < rend) {
      if (pb_next(&r, rend, &g) != 0) goto bad;
      if (g.field == 1 && g.wire == 2)
        sid = g.data, sid_len = g.len;
      else if (g.field == 2 && g.wire == 0)
        max_seq = g.v;
    }
    if (sid && sid_len == p->session_len && memcmp(sid, p->session, sid_len) == 0) p->cursor = p->wanted = max_seq;
  }
  if (code != 0) {
    msg_fail(p->run, "%s: SYNC refused, code %llu", p->user, (unsigned long long)code);
    return;
  }
  msg_peer_ready(p);
  return;
bad:
  msg_fail(p->run, "%s: undecodable SYNC_RESULT", p->user);
}

static void msg_fill(bench_msg *run) {
  if (run->filling || run->stopping) return;
  run->filling = 1;
  const bench_options *o = run->o;
  hubu_client_callbacks cb = {.on_state = msg_on_state, .on_ready = msg_on_ready, .on_frame = msg_on_frame};
  while (run->connect_next < run->n_peers && run->connecting < o->inflight && !run->stopping) {
    bench_peer *p = &run->peers[run->connect_next++];
    char token[HUBU_TOKEN_MAX];
    hubu_client_options co;
    if (bench_client_options(o, &co, p->user, token, sizeof token) != 0) {
      run->filling = 0;
      msg_fail(run, "%s: cannot mint a token", p->user);
      return;
    }
    if (p->role != PEER_SENDER && o->recv_port) co.port = (int)o->recv_port;
    co.no_auto_sync = 1;
    co.frames_only = 1; /* the bench decodes PUSH and acknowledges by itself */
    co.ping_interval_ms = 0;
    if (!(p->client = hubu_client_new(run->loop, &co, &cb, p))) {
      run->filling = 0;
      msg_fail(run, "%s: hubu_client_new failed", p->user);
      return;
    }
    run->connecting++;
    int r = hubu_client_start(p->client);
    if (r < 0 && p->client) {
      run->filling = 0;
      msg_fail(run, "%s: start: %s", p->user, uv_strerror(r));
      return;
    }
  }
  run->filling = 0;
}

/* ---- the run --------------------------------------------------------------------- */

static void msg_session_direct(bench_peer *p, const char *a, const char *b) {
  if (strcmp(a, b) > 0) {
    const char *t = a;
    a = b;
    b = t;
  }
  p->session_len = (size_t)snprintf(p->session, sizeof p->session, "d:%s:%s", a, b);
}

/* fanout: the group and its members go straight into the store before anyone
 * connects; the server loads the group on its first SEND. */
static int msg_create_group(bench_msg *run) {
  const bench_options *o = run->o;
  char err[256];
  uint64_t t0 = uv_hrtime();
  char url[4200];
  hubu_store_default_url(o->data_dir, url, sizeof url);
  hubu_store_config cfg = {.url = url, .fsync = HUBU_FSYNC_BATCH};
  void *db = hubu_store_sqlite.open(&cfg, err, sizeof err);
  if (!db) {
    fprintf(stderr, "hubu-bench fanout: store %s: %s\n", o->data_dir, err);
    return -1;
  }
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SESSION_CREATE);
  int rc = -1;
  if (!op || !(op->session_create.members = calloc((size_t)run->n_peers, sizeof *op->session_create.members))) {
    fprintf(stderr, "hubu-bench fanout: out of memory\n");
    goto out;
  }
  snprintf(op->session_create.session_id, sizeof op->session_create.session_id, "%s", run->group);
  snprintf(op->session_create.kind, sizeof op->session_create.kind, "group");
  for (long i = 0; i < run->n_peers; i++) {
    if (!(op->session_create.members[i] = strdup(run->peers[i].user))) {
      fprintf(stderr, "hubu-bench fanout: out of memory\n");
      goto out;
    }
    op->session_create.n_members++;
  }
  hubu_store_sqlite.execute(db, op);
  if (op->status == HUBU_STORE_OK)
    rc = 0;
  else
    fprintf(stderr, "hubu-bench fanout: create %s: %s\n", run->group,
            op->status == HUBU_STORE_EXISTS ? "exists already" : op->error);
out:
  hubu_store_op_free(op);
  hubu_store_sqlite.close(db);
  run->group_create_s = (double)(uv_hrtime() - t0) / 1e9;
  return rc;
}

static void msg_free(bench_msg *run) {
  if (run->peers)
    for (long i = 0; i < run->n_peers; i++) free(run->peers[i].sent_ns);
  free(run->peers);
  free(run->body);
  free(run->scratch);
  free(run->ack_ns);
  free(run->e2e_ns);
  free(run->lag_ns);
  free(run->sent_e2e_ns);
  free(run->fan_last_ns);
  free(run->fan_first_ns);
  bench_probe_free(run->probe);
}

static void msg_report_latency(bench_report *r, const char *key_prefix, const char *label_prefix, uint64_t *v, long n,
                               int with_p999) {
  static const double ps[] = {50, 99, 99.9, 100};
  static const char *const names[] = {"p50", "p99", "p999", "max"};
  qsort(v, (size_t)n, sizeof *v, bench_u64_compare);
  for (int i = 0; i < 4; i++) {
    if (i == 2 && !with_p999) continue;
    /* keys and labels must outlive the report: keep them in a static ring */
    static char keys[32][48], labels[32][48];
    static int slot;
    int s = slot++ % 32;
    snprintf(keys[s], sizeof keys[s], "%s_%s_us", key_prefix, names[i]);
    snprintf(labels[s], sizeof labels[s], "%s %s", label_prefix, names[i]);
    bench_report_number(r, keys[s], labels[s], bench_percentile_us(v, n, ps[i]), "%.0f", "us");
  }
}

/* The run's wall time from its first send to its end, in s (NaN: never started). */
static double msg_elapsed_s(const bench_msg *run) {
  return run->t_end > run->t_start && run->t_start ? (double)(run->t_end - run->t_start) / 1e9 : NAN;
}

/* The server's CPU seconds over the run, or -1 when they were not read. */
static double msg_server_cpu_s(const bench_msg *run) {
  return run->server_cpu_start >= 0 && run->server_cpu_end >= 0 ? run->server_cpu_end - run->server_cpu_start : -1;
}

/* What pairs and rate both count: sends, their answers and the pushes. */
static void msg_report_sends(bench_report *r, const bench_msg *run) {
  bench_report_number(r, "sent", "sent", (double)run->sent, "%.0f", "");
  bench_report_number(r, "acked", "acked OK", (double)run->acked, "%.0f", "");
  bench_report_number(r, "send_failed", "refused", (double)run->send_failed, "%.0f", "");
  bench_report_number(r, "delivered", "delivered", (double)run->delivered, "%.0f", "");
  bench_report_number(r, "duplicates", "duplicate pushes", (double)run->duplicates, "%.0f", "");
  bench_report_number(r, "hints", "pull hints", (double)run->hints, "%.0f", "");
}

static void msg_report_server(bench_report *r, const bench_msg *run, double per_what, const char *what) {
  const bench_options *o = run->o;
  double server_cpu = msg_server_cpu_s(run);
  if (o->server_pid > 0 && server_cpu >= 0 && per_what > 0) {
    double us = server_cpu * 1e6 / per_what;
    static char key[48], label[64];
    snprintf(key, sizeof key, "server_cpu_us_per_%s", what);
    snprintf(label, sizeof label, "server cpu per %s", what);
    bench_report_number(r, key, label, us, "%.2f", "us");
    if (strcmp(what, "msg") == 0)
      bench_report_number(r, "server_cpu_s_per_100k", "server cpu per 100k msgs", us / 10.0, "%.3f", "s");
  } else {
    bench_report_null(r, "server_cpu_us_per_msg", "server cpu per msg",
                      o->server_pid > 0 ? "n/a (cannot read /proc)" : "n/a (no --server-pid)");
  }
  if (o->db_pid > 0 && run->db_cpu_start >= 0 && run->db_cpu_end >= 0 && per_what > 0) {
    static char key[48], label[64];
    snprintf(key, sizeof key, "db_cpu_us_per_%s", what);
    snprintf(label, sizeof label, "database cpu per %s", what);
    bench_report_number(r, key, label, (run->db_cpu_end - run->db_cpu_start) * 1e6 / per_what, "%.2f", "us");
  }
  if (o->recv_pid > 0 && run->recv_cpu_start >= 0 && run->recv_cpu_end >= 0 && per_what > 0) {
    static char key[48], label[64];
    snprintf(key, sizeof key, "recv_node_cpu_us_per_%s", what);
    snprintf(label, sizeof label, "receiving node cpu per %s", what);
    bench_report_number(r, key, label, (run->recv_cpu_end - run->recv_cpu_start) * 1e6 / per_what, "%.2f", "us");
  }
  if (run->rss_end_kb >= 0) {
    bench_report_number(r, "server_rss_start_kb", "server rss at start", (double)run->rss_start_kb, "%.0f", "KiB");
    bench_report_number(r, "server_rss_end_kb", "server rss at end", (double)run->rss_end_kb, "%.0f", "KiB");
  }
}

static int msg_run(bench_msg *run) {
  const bench_options *o = run->o;
  run->tfd = -1;
  run->body_len = (size_t)o->body_bytes;
  run->scratch_cap = run->body_len + sizeof run->peers[0].session + 32;
  run->body = malloc(run->body_len);
  run->scratch = malloc(run->scratch_cap);
  if (!run->body || !run->scratch) return -1;
  for (size_t i = 0; i < run->body_len; i++) run->body[i] = (uint8_t)('a' + i % 26);

  bench_nofile_raise(run->n_peers, o->server_pid);
  uv_timer_init(run->loop, &run->timeout);
  uv_signal_init(run->loop, &run->sigint);
  run->timeout.data = run->sigint.data = run;
  uv_signal_start_oneshot(&run->sigint, msg_on_sigint, SIGINT);
  uv_unref((uv_handle_t *)&run->sigint);
  if (run->kind == MSG_RATE) {
    run->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (run->tfd < 0 || uv_poll_init(run->loop, &run->tick, run->tfd) != 0) {
      fprintf(stderr, "hubu-bench: timerfd: %s\n", strerror(errno));
      if (run->tfd >= 0) close(run->tfd);
      run->tfd = -1;
      uv_close((uv_handle_t *)&run->timeout, NULL);
      uv_close((uv_handle_t *)&run->sigint, NULL);
      return -1;
    }
    run->tick.data = run;
    run->tick_open = 1;
    uv_poll_start(&run->tick, UV_READABLE, msg_on_tick);
  }
  if (run->kind == MSG_FANOUT) {
    uv_timer_init(run->loop, &run->gap);
    run->gap.data = run;
    run->gap_open = 1;
  }
  run->t_connect = uv_hrtime();
  uv_timer_start(&run->timeout, msg_on_timeout, o->timeout_ms, 0);
  if (run->kind != MSG_FANOUT) run->probe = bench_probe_start(run->loop, o, &run->loading);
  msg_fill(run);
  uv_run(run->loop, UV_RUN_DEFAULT);
  return 0;
}

/* Offered load and connect figures common to pairs and rate. */
static void msg_report_head(bench_report *r, const bench_msg *run) {
  bench_report_common(r, run->o);
  if (run->failed && run->first_error[0]) bench_report_text(r, "error", "error", "%s", run->first_error);
  bench_report_number(r, "connections", "connections", (double)run->n_peers, "%.0f", "");
  bench_report_number(r, "ready", "connections ready", (double)run->ready, "%.0f", "");
  bench_report_number(r, "connect_s", "connect phase",
                      run->t_start ? (double)(run->t_start - run->t_connect) / 1e9 : NAN, "%.2f", "s");
}

static int msg_alloc_common(bench_msg *run, long n_peers, long deliveries, long acks) {
  run->n_peers = n_peers;
  run->peers = calloc((size_t)n_peers, sizeof *run->peers);
  run->cap_e2e = deliveries;
  run->cap_ack = acks;
  run->e2e_ns = malloc((size_t)(deliveries > 0 ? deliveries : 1) * sizeof *run->e2e_ns);
  run->ack_ns = malloc((size_t)(acks > 0 ? acks : 1) * sizeof *run->ack_ns);
  if (!run->peers || !run->e2e_ns || !run->ack_ns) return -1;
  for (long i = 0; i < n_peers; i++) run->peers[i].run = run;
  return 0;
}

static int msg_check_body(const bench_options *o) {
  if (o->body_bytes < MSG_TS_BYTES || o->body_bytes > 512 * 1024) {
    fprintf(stderr, "hubu-bench %s: --body-bytes must be %d..%d\n", o->scenario, MSG_TS_BYTES, 512 * 1024);
    return -1;
  }
  return 0;
}

/* pairs and rate: peers[2i] receives from peers[2i+1] in d:<min>:<max>. */
static void msg_setup_pairs(bench_msg *run, long pairs) {
  for (long i = 0; i < pairs; i++) {
    bench_peer *r = &run->peers[2 * i], *s = &run->peers[2 * i + 1];
    r->role = PEER_RECEIVER;
    s->role = PEER_SENDER;
    r->index = s->index = i;
    snprintf(r->user, sizeof r->user, "bp-r%ld", i);
    snprintf(s->user, sizeof s->user, "bp-s%ld", i);
    msg_session_direct(r, r->user, s->user);
    memcpy(s->session, r->session, sizeof s->session);
    s->session_len = r->session_len;
  }
}

int bench_pairs_run(const bench_options *o, uv_loop_t *loop) {
  if (o->pairs <= 0 || o->window <= 0 || o->messages <= 0 || msg_check_body(o) != 0) {
    fprintf(stderr, "hubu-bench pairs: --pairs N --window W --messages M must be positive\n");
    return 2;
  }
  bench_msg *run = calloc(1, sizeof *run);
  if (!run) return 1;
  run->o = o;
  run->loop = loop;
  run->kind = MSG_PAIRS;
  run->total = o->messages;
  int rc = 1;
  if (msg_alloc_common(run, 2 * o->pairs, o->messages, o->messages) != 0) goto oom;
  msg_setup_pairs(run, o->pairs);
  for (long i = 0; i < o->pairs; i++)
    if (!(run->peers[2 * i + 1].sent_ns = calloc((size_t)o->window, sizeof(uint64_t)))) goto oom;
  if (msg_run(run) != 0) goto oom;

  double elapsed = msg_elapsed_s(run);
  double cpu = run->cpu_end - run->cpu_start;
  double server_cpu = msg_server_cpu_s(run);
  bench_report r = {.count = 0};
  msg_report_head(&r, run);
  bench_report_number(&r, "pairs", "pairs", (double)o->pairs, "%.0f", "");
  bench_report_number(&r, "window", "window per sender", (double)o->window, "%.0f", "");
  bench_report_number(&r, "messages", "messages wanted", (double)o->messages, "%.0f", "");
  bench_report_number(&r, "body_bytes", "body", (double)o->body_bytes, "%.0f", "B");
  msg_report_sends(&r, run);
  bench_report_number(&r, "gaps", "pushes past a gap", (double)run->gaps, "%.0f", "");
  bench_report_number(&r, "pulls", "pulls", (double)run->pulls, "%.0f", "");
  bench_report_number(&r, "elapsed_s", "elapsed", elapsed, "%.3f", "s");
  bench_report_number(&r, "delivered_per_s", "delivered msgs/s", (double)run->delivered / elapsed, "%.0f", "/s");
  msg_report_latency(&r, "ack", "ack latency", run->ack_ns, run->n_ack, 0);
  msg_report_latency(&r, "e2e", "end-to-end", run->e2e_ns, run->n_e2e, 1);
  msg_report_server(&r, run, (double)run->delivered, "msg");
  bench_report_cpu(&r, o, cpu, server_cpu, elapsed);
  bench_report_number(&r, "bench_cpu_us_per_msg", "bench cpu per msg",
                      run->delivered ? cpu * 1e6 / (double)run->delivered : NAN, "%.2f", "us");
  bench_probe_report(run->probe, &r);
  bench_report_print(&r, o->json);
  rc = !run->failed && run->delivered == o->messages ? 0 : 1;
  msg_free(run);
  free(run);
  return rc;
oom:
  fprintf(stderr, "hubu-bench: out of memory\n");
  msg_free(run);
  free(run);
  return 1;
}

int bench_rate_run(const bench_options *o, uv_loop_t *loop) {
  if (o->pairs <= 0 || o->rate <= 0 || o->seconds <= 0 || msg_check_body(o) != 0) {
    fprintf(stderr, "hubu-bench rate: --pairs N --rate R --seconds S must be positive\n");
    return 2;
  }
  if ((double)o->rate * (double)o->seconds > 1e8) {
    fprintf(stderr, "hubu-bench rate: at most 100,000,000 messages\n");
    return 2;
  }
  bench_msg *run = calloc(1, sizeof *run);
  if (!run) return 1;
  run->o = o;
  run->loop = loop;
  run->kind = MSG_RATE;
  run->total = o->rate * o->seconds;
  int rc = 1;
  if (msg_alloc_common(run, 2 * o->pairs, run->total, run->total) != 0 ||
      !(run->lag_ns = malloc((size_t)run->total * sizeof *run->lag_ns)) ||
      !(run->sent_e2e_ns = malloc((size_t)run->total * sizeof *run->sent_e2e_ns)))
    goto oom;
  msg_setup_pairs(run, o->pairs);
  if (msg_run(run) != 0) goto oom;

  double elapsed = msg_elapsed_s(run);
  double send_s = run->t_last_send > run->t_start ? (double)(run->t_last_send - run->t_start) / 1e9 : NAN;
  double deliver_s = run->t_last_delivery > run->t_start ? (double)(run->t_last_delivery - run->t_start) / 1e9 : NAN;
  double cpu = run->cpu_end - run->cpu_start;
  double server_cpu = msg_server_cpu_s(run);
  bench_report r = {.count = 0};
  msg_report_head(&r, run);
  bench_report_number(&r, "pairs", "pairs", (double)o->pairs, "%.0f", "");
  bench_report_number(&r, "offered_per_s", "offered rate", (double)o->rate, "%.0f", "/s");
  bench_report_number(&r, "seconds", "schedule", (double)o->seconds, "%.0f", "s");
  bench_report_number(&r, "messages", "messages scheduled", (double)run->total, "%.0f", "");
  bench_report_number(&r, "body_bytes", "body", (double)o->body_bytes, "%.0f", "B");
  msg_report_sends(&r, run);
  /* achieved: over the schedule's length, so a rate kept up with reads as the offered one */
  bench_report_number(&r, "sent_per_s", "achieved send rate", run->sent > 1 ? (double)(run->sent - 1) / send_s : NAN,
                      "%.0f", "/s");
  bench_report_number(&r, "delivered_per_s", "achieved delivery rate",
                      run->delivered > 1 ? (double)(run->delivered - 1) / deliver_s : NAN, "%.0f", "/s");
  bench_report_number(&r, "elapsed_s", "elapsed", elapsed, "%.3f", "s");
  msg_report_latency(&r, "lag", "send lag (bench)", run->lag_ns, run->n_lag, 1);
  msg_report_latency(&r, "ack", "ack latency", run->ack_ns, run->n_ack, 0);
  msg_report_latency(&r, "e2e", "end-to-end", run->e2e_ns, run->n_e2e, 1);
  msg_report_latency(&r, "e2e_sent", "end-to-end from sent", run->sent_e2e_ns, run->n_sent_e2e, 1);
  msg_report_server(&r, run, (double)run->delivered, "msg");
  bench_report_cpu(&r, o, cpu, server_cpu, elapsed);
  bench_probe_report(run->probe, &r);
  bench_report_print(&r, o->json);
  rc = !run->failed && run->delivered == run->total ? 0 : 1;
  msg_free(run);
  free(run);
  return rc;
oom:
  fprintf(stderr, "hubu-bench: out of memory or no timerfd\n");
  msg_free(run);
  free(run);
  return 1;
}

int bench_fanout_run(const bench_options *o, uv_loop_t *loop) {
  if (o->members <= 0 || o->messages <= 0 || msg_check_body(o) != 0) {
    fprintf(stderr, "hubu-bench fanout: --members N --messages K must be positive\n");
    return 2;
  }
  if (!o->data_dir) {
    fprintf(stderr, "hubu-bench fanout: --data DIR (the server's data directory) is required to create the group\n");
    return 2;
  }
  if ((double)o->members * (double)o->messages > 2e8) {
    fprintf(stderr, "hubu-bench fanout: members x messages must stay under 200,000,000\n");
    return 2;
  }
  bench_msg *run = calloc(1, sizeof *run);
  if (!run) return 1;
  run->o = o;
  run->loop = loop;
  run->kind = MSG_FANOUT;
  run->members = o->members;
  run->total = o->messages;
  int rc = 1;
  if (msg_alloc_common(run, o->members + 1, o->members * o->messages, o->messages) != 0 ||
      !(run->fan_last_ns = calloc((size_t)o->messages, sizeof *run->fan_last_ns)) ||
      !(run->fan_first_ns = calloc((size_t)o->messages, sizeof *run->fan_first_ns)))
    goto oom;
  uint64_t rnd = uv_hrtime() ^ ((uint64_t)getpid() << 32);
  snprintf(run->group, sizeof run->group, "g:bench-fan%ld-%08llx", o->members,
           (unsigned long long)(rnd * 0x9E3779B97F4A7C15ull >> 32));
  for (long i = 0; i <= o->members; i++) {
    bench_peer *p = &run->peers[i];
    p->role = i < o->members ? PEER_RECEIVER : PEER_SENDER;
    p->index = i;
    if (i < o->members)
      snprintf(p->user, sizeof p->user, "bf-m%ld", i);
    else
      snprintf(p->user, sizeof p->user, "bf-s");
    p->session_len = (size_t)snprintf(p->session, sizeof p->session, "%s", run->group);
  }
  if (msg_create_group(run) != 0) {
    msg_free(run);
    free(run);
    return 1;
  }
  if (msg_run(run) != 0) goto oom;

  long done = run->fan_index < 0 ? 0 : run->fan_index; /* messages every member got */
  if (done > o->messages) done = o->messages;
  double elapsed = msg_elapsed_s(run);
  double cpu = run->cpu_end - run->cpu_start;
  double server_cpu = msg_server_cpu_s(run);
  bench_report r = {.count = 0};
  msg_report_head(&r, run);
  bench_report_text(&r, "group", "group", "%s", run->group);
  bench_report_number(&r, "group_create_s", "group created in store", run->group_create_s, "%.3f", "s");
  bench_report_number(&r, "members", "members online", (double)o->members, "%.0f", "");
  bench_report_number(&r, "messages", "messages wanted", (double)o->messages, "%.0f", "");
  bench_report_number(&r, "body_bytes", "body", (double)o->body_bytes, "%.0f", "B");
  bench_report_number(&r, "gap_ms", "pause between messages", (double)o->gap_ms, "%.0f", "ms");
  bench_report_number(&r, "completed", "messages all delivered", (double)done, "%.0f", "");
  bench_report_number(&r, "delivered", "deliveries", (double)run->delivered, "%.0f", "");
  bench_report_number(&r, "duplicates", "duplicate pushes", (double)run->duplicates, "%.0f", "");
  bench_report_number(&r, "hints", "pull hints", (double)run->hints, "%.0f", "");
  bench_report_number(&r, "elapsed_s", "elapsed", elapsed, "%.3f", "s");
  bench_report_number(&r, "deliveries_per_s", "deliveries/s", (double)run->delivered / elapsed, "%.0f", "/s");
  msg_report_latency(&r, "last", "to last member", run->fan_last_ns, done, 0);
  msg_report_latency(&r, "first", "to first member", run->fan_first_ns, run->n_fan < done ? run->n_fan : done, 0);
  msg_report_latency(&r, "ack", "ack latency", run->ack_ns, run->n_ack, 0);
  msg_report_server(&r, run, (double)done, "message");
  if (o->server_pid > 0 && server_cpu >= 0 && run->delivered > 0)
    bench_report_number(&r, "server_cpu_us_per_delivery", "server cpu per delivery",
                        server_cpu * 1e6 / (double)run->delivered, "%.2f", "us");
  bench_report_cpu(&r, o, cpu, server_cpu, elapsed);
  bench_report_print(&r, o->json);
  rc = !run->failed && done == o->messages ? 0 : 1;
  msg_free(run);
  free(run);
  return rc;
oom:
  fprintf(stderr, "hubu-bench: out of memory\n");
  msg_free(run);
  free(run);
  return 1;
}

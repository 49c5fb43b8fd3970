/* hubu_sync.c — the blocking face of libhubu-client (hubu_sync.h): one loop
 * and one client per handle, run only inside the calls. The library's
 * callbacks only copy what arrives into the handle's queues; the calls wait on
 * those queues. Invariants: every wait is bounded by the handle's timer, and
 * everything the handle allocates hangs off the handle, so hubu_sync_close
 * frees all of it once the loop has closed every handle. */
#include "hubu_sync.h"

#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "frame.h"
#include "hubu.pb-c.h"
#include "hubu_client.h"
#include "secret.h"
#include "token.h"
#include "wire.h"

#define SYNC_DEFAULT_TIMEOUT_MS 5000

/* A received message and its bytes (body, then meta pairs): one allocation,
 * owned by whichever queue or slot holds it. */
typedef struct sync_message {
  struct sync_message *next;
  hubu_sync_message m;
  uint8_t data[];
} sync_message;

typedef struct sync_ack {
  struct sync_ack *next;
  hubu_sync_ack a;
} sync_ack;

/* An EVENT and its payload: one allocation. */
typedef struct sync_event {
  struct sync_event *next;
  hubu_sync_event e;
  uint8_t data[];
} sync_event;

/* A history PULL or session list in flight: the ud of the library's callback.
 * Owned by s->requests until that callback runs, or until close (after
 * hubu_client_close the library runs no request callback). */
typedef struct sync_request {
  struct sync_request *next;
  hubu_sync *s;
} sync_request;

/* The handle. Owns the loop, the client (until close), every queue below,
 * the current results (the last message recv returned, the last pull, list,
 * event and call) and the requests in flight. */
struct hubu_sync {
  uv_loop_t loop;
  uv_timer_t timer; /* bounds every wait */
  int timer_fired;
  hubu_client *client;
  int nomem; /* a callback could not copy what arrived: waits report NOMEM */

  int state, state_code;
  char state_reason[256];
  int refused; /* the server refused the HELLO: connect stops waiting */
  int goaway_seen, error_seen;
  hubu_sync_goaway goaway;
  hubu_sync_error error;

  sync_ack *acks, *acks_tail;
  size_t n_acks;
  sync_message *rx, *rx_tail, *rx_current;
  size_t n_rx;
  sync_event *events, *events_tail, *event_current;
  size_t n_events;

  sync_request *requests;
  sync_request *awaited; /* the request the current wait is for, NULL when none */
  int awaited_done;
  int result_code;
  uint64_t pull_max_seq;
  int pull_has_more;
  sync_message *pulled; /* the last pull's messages, in order */
  hubu_sync_message *pulled_view;
  size_t n_pulled;
  hubu_sync_session *sessions;
  size_t n_sessions;

  uint64_t next_call_id, call_id; /* call_id: the CALL waited for, 0 when none */
  uint64_t *calls_open;           /* CALLs sent on this connection and not yet answered, oldest first */
  size_t n_calls_open, cap_calls_open;
  int call_done, call_code;
  uint8_t *call_payload;
  size_t call_len;
  char call_reason[256];
};

/* ---- small helpers ---- */

static void copy_text(char *dst, size_t size, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= size) n = size - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

static void copy_bytes_text(char *dst, size_t size, const uint8_t *src, size_t len) {
  if (len >= size) len = size - 1;
  if (len) memcpy(dst, src, len);
  dst[len] = '\0';
}

static void set_err(char *err, size_t size, const char *text) {
  if (err && size) copy_text(err, size, text);
}

static int gone(const hubu_sync *s) { return s->state == HUBU_CLIENT_CLOSED; }

/* A negative libuv error of a request made while not READY, as a result. */
static int not_sent(const hubu_sync *s, int uv_error) {
  if (uv_error == UV_EINVAL) return HUBU_SYNC_INVALID;
  if (uv_error == UV_ENOTCONN) return gone(s) ? HUBU_SYNC_CLOSED : HUBU_SYNC_NOT_READY;
  return HUBU_SYNC_NOMEM;
}

/* Copies a library message view into one allocation. */
static sync_message *message_copy(const hubu_client_message *v) {
  size_t meta_len = 0;
  for (size_t i = 0; i < v->n_meta; i++) meta_len += strlen(v->meta_keys[i]) + strlen(v->meta_values[i]) + 2;
  sync_message *n = malloc(sizeof *n + v->body_len + meta_len + 1);
  if (!n) return NULL;
  memset(n, 0, sizeof *n);
  hubu_sync_message *m = &n->m;
  copy_text(m->session_id, sizeof m->session_id, v->session_id);
  m->seq = v->seq;
  m->msg_id = v->msg_id;
  copy_text(m->sender, sizeof m->sender, v->sender);
  copy_text(m->sender_device, sizeof m->sender_device, v->sender_device);
  m->client_id = v->client_id;
  copy_text(m->content_type, sizeof m->content_type, v->content_type);
  m->server_time_ms = v->server_time_ms;
  if (v->body_len) memcpy(n->data, v->body, v->body_len);
  m->body = n->data;
  m->body_len = v->body_len;
  char *meta = (char *)n->data + v->body_len, *p = meta;
  for (size_t i = 0; i < v->n_meta; i++) {
    size_t kl = strlen(v->meta_keys[i]) + 1, vl = strlen(v->meta_values[i]) + 1;
    memcpy(p, v->meta_keys[i], kl);
    memcpy(p + kl, v->meta_values[i], vl);
    p += kl + vl;
  }
  *p = '\0';
  m->n_meta = v->n_meta;
  m->meta = meta;
  m->meta_len = meta_len;
  return n;
}

static void message_list_free(sync_message *n) {
  while (n) {
    sync_message *next = n->next;
    free(n);
    n = next;
  }
}

static void pulled_free(hubu_sync *s) {
  message_list_free(s->pulled);
  free(s->pulled_view);
  s->pulled = NULL;
  s->pulled_view = NULL;
  s->n_pulled = 0;
}

static void calls_open_remove(hubu_sync *s, size_t i) {
  memmove(s->calls_open + i, s->calls_open + i + 1, (s->n_calls_open - i - 1) * sizeof *s->calls_open);
  s->n_calls_open--;
}

/* Removes request_id from the open calls (answered by its CALL_RESULT). */
static void calls_open_take(hubu_sync *s, uint64_t request_id) {
  for (size_t i = 0; i < s->n_calls_open; i++) {
    if (s->calls_open[i] == request_id) {
      calls_open_remove(s, i);
      return;
    }
  }
}

/* Removes the oldest open call (answered by an ERROR): 1 and *id, or 0. */
static int calls_open_take_oldest(hubu_sync *s, uint64_t *id) {
  if (!s->n_calls_open) return 0;
  *id = s->calls_open[0];
  calls_open_remove(s, 0);
  return 1;
}

static int calls_open_add(hubu_sync *s, uint64_t request_id) {
  if (s->n_calls_open == s->cap_calls_open) {
    size_t cap = s->cap_calls_open ? 2 * s->cap_calls_open : 8;
    uint64_t *grown = realloc(s->calls_open, cap * sizeof *grown);
    if (!grown) return -1;
    s->calls_open = grown;
    s->cap_calls_open = cap;
  }
  s->calls_open[s->n_calls_open++] = request_id;
  return 0;
}

static void push_ack(hubu_sync *s, const hubu_sync_ack *a) {
  sync_ack *n = malloc(sizeof *n);
  if (!n) {
    s->nomem = 1;
    return;
  }
  n->next = NULL;
  n->a = *a;
  if (s->acks_tail)
    s->acks_tail->next = n;
  else
    s->acks = n;
  s->acks_tail = n;
  s->n_acks++;
}

/* Takes the first queued answer with client_id (any when client_id is 0). */
static int take_ack(hubu_sync *s, uint64_t client_id, hubu_sync_ack *out) {
  sync_ack *prev = NULL;
  for (sync_ack *n = s->acks; n; prev = n, n = n->next) {
    if (client_id && n->a.client_id != client_id) continue;
    if (prev)
      prev->next = n->next;
    else
      s->acks = n->next;
    if (s->acks_tail == n) s->acks_tail = prev;
    s->n_acks--;
    if (out) *out = n->a;
    free(n);
    return 1;
  }
  return 0;
}

/* ---- the library's callbacks: copy and queue, nothing else ---- */

static void on_state(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud) {
  (void)c;
  hubu_sync *s = ud;
  s->state = (int)state;
  s->state_code = code;
  copy_text(s->state_reason, sizeof s->state_reason, reason);
  if (code == HUBU__V1__CODE__UNAUTHENTICATED && state != HUBU_CLIENT_READY) s->refused = 1;
  if (state != HUBU_CLIENT_READY) s->n_calls_open = 0; /* no answer comes over a lost connection */
}

static void on_stored(hubu_client *c, uint64_t client_id, const char *session_id, uint64_t seq, uint64_t msg_id,
                      int duplicate, void *ud) {
  (void)c;
  hubu_sync_ack a;
  memset(&a, 0, sizeof a);
  a.code = HUBU__V1__CODE__OK;
  a.client_id = client_id;
  a.seq = seq;
  a.msg_id = msg_id;
  a.duplicate = duplicate;
  copy_text(a.session_id, sizeof a.session_id, session_id);
  push_ack(ud, &a);
}

static void on_failed(hubu_client *c, uint64_t client_id, int code, const char *reason, void *ud) {
  hubu_sync_ack a;
  memset(&a, 0, sizeof a);
  a.code = code;
  a.retry_after_ms = hubu_client_retry_after_ms(c);
  a.client_id = client_id;
  copy_text(a.reason, sizeof a.reason, reason);
  push_ack(ud, &a);
}

static void on_received(hubu_client *c, const hubu_client_message *m, void *ud) {
  (void)c;
  hubu_sync *s = ud;
  sync_message *n = message_copy(m);
  if (!n) {
    s->nomem = 1;
    return;
  }
  if (s->rx_tail)
    s->rx_tail->next = n;
  else
    s->rx = n;
  s->rx_tail = n;
  s->n_rx++;
}

static void on_call_result(hubu_sync *s, const uint8_t *body, size_t len) {
  Hubu__V1__CallResult *r = hubu__v1__call_result__unpack(NULL, len, body);
  if (!r) return;
  calls_open_take(s, r->request_id);
  if (s->call_id && !s->call_done && r->request_id == s->call_id) { /* others: answers to calls that timed out */
    s->call_payload = malloc(r->payload.len + 1);
    if (!s->call_payload) {
      s->nomem = 1;
    } else {
      if (r->payload.len) memcpy(s->call_payload, r->payload.data, r->payload.len);
      s->call_payload[r->payload.len] = '\0';
      s->call_len = r->payload.len;
    }
    s->call_code = (int)r->code;
    copy_text(s->call_reason, sizeof s->call_reason, r->reason);
    s->call_done = 1;
  }
  hubu__v1__call_result__free_unpacked(r, NULL);
}

static void on_event(hubu_sync *s, const uint8_t *body, size_t len) {
  Hubu__V1__Event *e = hubu__v1__event__unpack(NULL, len, body);
  if (!e) return;
  sync_event *n = malloc(sizeof *n + e->payload.len + 1);
  if (!n) {
    s->nomem = 1;
  } else {
    memset(n, 0, sizeof *n);
    copy_text(n->e.name, sizeof n->e.name, e->name);
    copy_text(n->e.sender, sizeof n->e.sender, e->sender);
    if (e->payload.len) memcpy(n->data, e->payload.data, e->payload.len);
    n->data[e->payload.len] = '\0';
    n->e.payload = n->data;
    n->e.payload_len = e->payload.len;
    if (s->events_tail)
      s->events_tail->next = n;
    else
      s->events = n;
    s->events_tail = n;
    s->n_events++;
  }
  hubu__v1__event__free_unpacked(e, NULL);
}

static void on_error_frame(hubu_sync *s, const uint8_t *body, size_t len) {
  Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, len, body);
  if (!e) return;
  s->error_seen = 1;
  s->error.code = (int)e->code;
  s->error.frame_type = e->frame_type;
  copy_text(s->error.message, sizeof s->error.message, e->message);
  /* An ERROR about a CALL refuses the oldest CALL still open: the server
   * answers frame-level problems in the order the frames came. */
  uint64_t refused = 0;
  if (e->frame_type == HUBU_FRAME_CALL && calls_open_take_oldest(s, &refused) && refused == s->call_id && s->call_id &&
      !s->call_done) {
    s->call_code = (int)e->code;
    copy_text(s->call_reason, sizeof s->call_reason, e->message);
    s->call_done = 1;
  }
  hubu__v1__error__free_unpacked(e, NULL);
}

static void on_goaway(hubu_sync *s, const uint8_t *body, size_t len) {
  Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, len, body);
  if (!g) return;
  s->goaway_seen = 1;
  s->goaway.code = (int)g->code;
  s->goaway.reconnect_after_ms = g->reconnect_after_ms;
  copy_text(s->goaway.reason, sizeof s->goaway.reason, g->reason);
  hubu__v1__go_away__free_unpacked(g, NULL);
}

static void on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud) {
  (void)c;
  hubu_sync *s = ud;
  switch (type) {
    case HUBU_FRAME_CALL_RESULT: on_call_result(s, body, len); break;
    case HUBU_FRAME_EVENT: on_event(s, body, len); break;
    case HUBU_FRAME_ERROR: on_error_frame(s, body, len); break;
    case HUBU_FRAME_GOAWAY: on_goaway(s, body, len); break;
    default: break; /* the library handles the rest */
  }
}

/* Unlinks rq from s->requests; the caller frees it. */
static void request_unlink(hubu_sync *s, sync_request *rq) {
  for (sync_request **p = &s->requests; *p; p = &(*p)->next) {
    if (*p == rq) {
      *p = rq->next;
      return;
    }
  }
}

static sync_request *request_new(hubu_sync *s) {
  sync_request *rq = calloc(1, sizeof *rq);
  if (!rq) return NULL;
  rq->s = s;
  rq->next = s->requests;
  s->requests = rq;
  return rq;
}

/* Ends rq; true when it is the one the current wait is for. */
static int request_finish(sync_request *rq) {
  hubu_sync *s = rq->s;
  int awaited = s->awaited == rq;
  request_unlink(s, rq);
  free(rq);
  if (awaited) {
    s->awaited = NULL;
    s->awaited_done = 1;
  }
  return awaited;
}

static void on_pull(hubu_client *c, int code, const hubu_client_message *msgs, size_t n, uint64_t max_seq, int has_more,
                    void *ud) {
  (void)c;
  sync_request *rq = ud;
  hubu_sync *s = rq->s;
  if (!request_finish(rq)) return; /* a pull whose wait timed out */
  s->result_code = code;
  s->pull_max_seq = max_seq;
  s->pull_has_more = has_more;
  if (n == 0) return;
  s->pulled_view = calloc(n, sizeof *s->pulled_view);
  if (!s->pulled_view) {
    s->nomem = 1;
    return;
  }
  sync_message **tail = &s->pulled;
  for (size_t i = 0; i < n; i++) {
    sync_message *m = message_copy(&msgs[i]);
    if (!m) {
      s->nomem = 1;
      return;
    }
    *tail = m;
    tail = &m->next;
    s->pulled_view[s->n_pulled++] = m->m;
  }
}

static void on_sessions(hubu_client *c, int code, const hubu_client_session_state *st, size_t n, void *ud) {
  (void)c;
  sync_request *rq = ud;
  hubu_sync *s = rq->s;
  if (!request_finish(rq)) return;
  s->result_code = code;
  if (n == 0) return;
  s->sessions = calloc(n, sizeof *s->sessions);
  if (!s->sessions) {
    s->nomem = 1;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    hubu_sync_session *o = &s->sessions[i];
    copy_text(o->session_id, sizeof o->session_id, st[i].session_id);
    o->max_seq = st[i].max_seq;
    o->min_seq = st[i].min_seq;
    copy_text(o->kind, sizeof o->kind, st[i].kind);
  }
  s->n_sessions = n;
}

/* ---- waiting ---- */

typedef int (*sync_done_fn)(hubu_sync *s, const void *arg);

static void on_timer(uv_timer_t *t) {
  hubu_sync *s = t->data;
  s->timer_fired = 1;
}

/* Runs the loop until done(s, arg), the connection is gone for good (when
 * stop_when_gone), a callback ran out of memory, or timeout_ms passed.
 * timeout_ms <= 0: one pass over what is ready now, without sleeping. */
static int sync_run(hubu_sync *s, int timeout_ms, sync_done_fn done, const void *arg, int stop_when_gone) {
  if (done && done(s, arg)) return HUBU_SYNC_OK;
  if (s->nomem) return HUBU_SYNC_NOMEM;
  if (timeout_ms <= 0) {
    uv_run(&s->loop, UV_RUN_NOWAIT);
    if (done && done(s, arg)) return HUBU_SYNC_OK;
    return s->nomem ? HUBU_SYNC_NOMEM : stop_when_gone && gone(s) ? HUBU_SYNC_CLOSED : HUBU_SYNC_TIMEOUT;
  }
  uv_update_time(&s->loop); /* the loop slept since the last call: time the timeout from now */
  s->timer_fired = 0;
  uv_timer_start(&s->timer, on_timer, (uint64_t)timeout_ms, 0);
  int rc = HUBU_SYNC_TIMEOUT;
  for (;;) {
    if (done && done(s, arg)) {
      rc = HUBU_SYNC_OK;
      break;
    }
    if (s->nomem) {
      rc = HUBU_SYNC_NOMEM;
      break;
    }
    if (stop_when_gone && gone(s)) {
      rc = HUBU_SYNC_CLOSED;
      break;
    }
    if (s->timer_fired) break;
    uv_run(&s->loop, UV_RUN_ONCE); /* the timer is active, so this sleeps at most until it fires */
  }
  uv_timer_stop(&s->timer);
  return rc;
}

static int sync_wait(hubu_sync *s, int timeout_ms, sync_done_fn done, const void *arg) {
  return sync_run(s, timeout_ms, done, arg, 1);
}

static int done_connected(hubu_sync *s, const void *arg) {
  (void)arg;
  return s->state == HUBU_CLIENT_READY || s->refused;
}

static int done_state(hubu_sync *s, const void *arg) { return s->state == *(const int *)arg; }

static int done_ack(hubu_sync *s, const void *arg) {
  uint64_t id = *(const uint64_t *)arg;
  for (sync_ack *n = s->acks; n; n = n->next)
    if (n->a.client_id == id) return 1;
  return 0;
}

static int done_acks(hubu_sync *s, const void *arg) { return s->n_acks >= *(const size_t *)arg; }
static int done_message(hubu_sync *s, const void *arg) { return (void)arg, s->n_rx > 0; }
static int done_event(hubu_sync *s, const void *arg) { return (void)arg, s->n_events > 0; }
static int done_request(hubu_sync *s, const void *arg) { return (void)arg, s->awaited_done; }
static int done_call(hubu_sync *s, const void *arg) { return (void)arg, s->call_done; }

/* ---- connection ---- */

/* Drops queued messages of session_id at or below seq. */
static void rx_drop_through(hubu_sync *s, const char *session_id, uint64_t seq) {
  sync_message **p = &s->rx;
  s->rx_tail = NULL;
  while (*p) {
    sync_message *n = *p;
    if (n->m.seq <= seq && strcmp(n->m.session_id, session_id) == 0) {
      *p = n->next;
      s->n_rx--;
      free(n);
    } else {
      s->rx_tail = n;
      p = &n->next;
    }
  }
}

/* Sets every session's cursor to the max_seq one SYNC reports, dropping what
 * the automatic SYNC already delivered; the library drops the rest. */
static int start_at_present(hubu_sync *s, int timeout_ms) {
  hubu_sync_sessions_result list;
  int rc = hubu_sync_list_sessions(s, timeout_ms, &list);
  if (rc != HUBU_SYNC_OK) return rc;
  if (list.code != HUBU__V1__CODE__OK) {
    s->state_code = list.code;
    copy_text(s->state_reason, sizeof s->state_reason, "SYNC refused");
    return HUBU_SYNC_CLOSED;
  }
  for (size_t i = 0; i < list.n_sessions; i++) {
    rc = hubu_sync_set_cursor(s, list.sessions[i].session_id, list.sessions[i].max_seq);
    if (rc != HUBU_SYNC_OK) return rc;
  }
  return HUBU_SYNC_OK;
}

/* A test host (LuaJIT) must survive writing to a socket the server closed. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO))
    signal(SIGPIPE, SIG_IGN);
}

hubu_sync *hubu_sync_open(const hubu_sync_options *opt, char *err, size_t err_size) {
  set_err(err, err_size, "");
  if (!opt || !opt->user || !opt->device || !opt->token) {
    set_err(err, err_size, "user, device and token are required");
    return NULL;
  }
  ignore_sigpipe();
  hubu_sync *s = calloc(1, sizeof *s);
  if (!s) {
    set_err(err, err_size, "out of memory");
    return NULL;
  }
  if (uv_loop_init(&s->loop) != 0) {
    free(s);
    set_err(err, err_size, "uv_loop_init failed");
    return NULL;
  }
  uv_timer_init(&s->loop, &s->timer);
  s->timer.data = s;
  int timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : SYNC_DEFAULT_TIMEOUT_MS;

  hubu_client_options co;
  memset(&co, 0, sizeof co);
  co.host = opt->host;
  co.port = opt->port;
  co.tls = opt->tls;
  co.tls_ca_file = opt->tls_ca_file;
  co.tls_verify = opt->tls_verify;
  co.user_id = opt->user;
  co.device_id = opt->device;
  co.token = opt->token;
  co.client_info = opt->client_info ? opt->client_info : "hubu-sync/0.1";
  co.reconnect = opt->reconnect;
  co.backoff_min_ms = 50;
  co.backoff_max_ms = 1000;
  co.connect_timeout_ms = (uint32_t)timeout_ms;
  co.outbox_path = opt->outbox_path;
  co.no_auto_sync = opt->no_auto_sync;
  co.send_timeout_ms = opt->send_timeout_ms > 0 ? (uint32_t)opt->send_timeout_ms : 0;
  hubu_client_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.on_state = on_state;
  cb.on_frame = on_frame;
  cb.on_stored = on_stored;
  cb.on_failed = on_failed;
  cb.on_received = on_received;

  s->client = hubu_client_new(&s->loop, &co, &cb, s);
  if (!s->client) {
    set_err(err, err_size, hubu_client_last_error());
    hubu_sync_close(s);
    return NULL;
  }
  int r = hubu_client_start(s->client);
  int rc = r < 0 ? HUBU_SYNC_CLOSED : sync_wait(s, timeout_ms, done_connected, NULL);
  if (rc == HUBU_SYNC_OK && s->state == HUBU_CLIENT_READY && opt->start_at_present)
    rc = start_at_present(s, timeout_ms);
  if (rc == HUBU_SYNC_OK && s->state == HUBU_CLIENT_READY) return s;

  char why[512];
  if (r < 0)
    snprintf(why, sizeof why, "start: %s", uv_strerror(r));
  else if (s->state_code)
    snprintf(why, sizeof why, "%s%s: %s", rc == HUBU_SYNC_TIMEOUT ? "timeout, last " : "",
             hubu_code_name((Hubu__V1__Code)s->state_code), s->state_reason);
  else
    snprintf(why, sizeof why, "%s (%s)", hubu_sync_result_name(rc), hubu_client_state_name(s->state));
  set_err(err, err_size, why);
  hubu_sync_close(s);
  return NULL;
}

hubu_sync *hubu_sync_connect(const char *host, int port, const char *user, const char *device, const char *token,
                             int timeout_ms, char *err, size_t err_size) {
  hubu_sync_options opt;
  memset(&opt, 0, sizeof opt);
  opt.host = host;
  opt.port = port;
  opt.user = user;
  opt.device = device;
  opt.token = token;
  opt.timeout_ms = timeout_ms;
  return hubu_sync_open(&opt, err, err_size);
}

int hubu_sync_close(hubu_sync *s) {
  if (!s) return 0;
  if (s->client) {
    hubu_client *c = s->client;
    s->client = NULL;
    hubu_client_close(c, NULL); /* frees itself once its handles have closed, in the run below */
  }
  uv_close((uv_handle_t *)&s->timer, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  int closed = uv_loop_close(&s->loop);
  if (closed != 0) fprintf(stderr, "hubu_sync_close: loop still busy: %s\n", uv_strerror(closed));

  while (take_ack(s, 0, NULL)) {
  }
  message_list_free(s->rx);
  free(s->rx_current);
  for (sync_event *e = s->events, *next; e; e = next) {
    next = e->next;
    free(e);
  }
  free(s->event_current);
  while (s->requests) {
    sync_request *rq = s->requests;
    s->requests = rq->next;
    free(rq);
  }
  pulled_free(s);
  free(s->sessions);
  free(s->call_payload);
  free(s->calls_open);
  free(s);
  return closed;
}

int hubu_sync_state(hubu_sync *s) { return s ? s->state : HUBU_CLIENT_CLOSED; }

const char *hubu_sync_state_name(int state) { return hubu_client_state_name((hubu_client_state)state); }

const char *hubu_sync_state_reason(hubu_sync *s, int *code) {
  if (code) *code = s ? s->state_code : 0;
  return s ? s->state_reason : "";
}

int hubu_sync_wait_state(hubu_sync *s, int state, int timeout_ms) {
  if (!s) return HUBU_SYNC_INVALID;
  return sync_run(s, timeout_ms, done_state, &state, state != HUBU_CLIENT_CLOSED);
}

unsigned hubu_sync_hello_count(hubu_sync *s) { return s ? hubu_client_sessions(s->client) : 0; }

int hubu_sync_last_goaway(hubu_sync *s, hubu_sync_goaway *out) {
  if (!s || !s->goaway_seen) return 0;
  if (out) *out = s->goaway;
  return 1;
}

int hubu_sync_last_error(hubu_sync *s, hubu_sync_error *out) {
  if (!s || !s->error_seen) return 0;
  if (out) *out = s->error;
  return 1;
}

/* ---- sending ---- */

uint64_t hubu_sync_send_async(hubu_sync *s, const char *session_id, const char *body, size_t len,
                              const char *content_type, const char *meta, size_t meta_len) {
  if (!s || !session_id || (len && !body) || (meta_len && !meta)) return 0;
  /* meta: "k\0v\0" pairs; an even number of NUL-terminated strings. */
  size_t n_strings = 0;
  for (size_t i = 0; i < meta_len; i++) n_strings += meta[i] == '\0';
  if (n_strings % 2 || (meta_len && meta[meta_len - 1] != '\0')) return 0;
  size_t n_meta = n_strings / 2;
  const char **keys = NULL, **values = NULL;
  if (n_meta) {
    keys = malloc(n_strings * sizeof *keys); /* keys[0..n_meta), then the values */
    if (!keys) return 0;
    values = keys + n_meta;
    const char *p = meta;
    for (size_t i = 0; i < n_meta; i++) {
      keys[i] = p;
      p += strlen(p) + 1;
      values[i] = p;
      p += strlen(p) + 1;
    }
  }
  uv_update_time(&s->loop);
  uint64_t id =
      hubu_client_send_message(s->client, session_id, (const uint8_t *)body, len, content_type, n_meta, keys, values);
  free(keys);
  return id;
}

int hubu_sync_wait_ack(hubu_sync *s, uint64_t client_id, int timeout_ms, hubu_sync_ack *out) {
  if (!s || !client_id) return HUBU_SYNC_INVALID;
  int rc = sync_wait(s, timeout_ms, done_ack, &client_id);
  if (rc == HUBU_SYNC_OK) take_ack(s, client_id, out);
  return rc;
}

int hubu_sync_send(hubu_sync *s, const char *session_id, const char *body, size_t len, const char *content_type,
                   int timeout_ms, hubu_sync_ack *out) {
  if (!s || !session_id || (len && !body)) return HUBU_SYNC_INVALID;
  uint64_t id = hubu_sync_send_async(s, session_id, body, len, content_type, NULL, 0);
  if (!id) return HUBU_SYNC_NOMEM;
  return hubu_sync_wait_ack(s, id, timeout_ms, out);
}

int hubu_sync_wait_acks(hubu_sync *s, size_t n, int timeout_ms) {
  if (!s) return HUBU_SYNC_INVALID;
  int rc = sync_wait(s, timeout_ms, done_acks, &n);
  if (rc == HUBU_SYNC_CLOSED || rc == HUBU_SYNC_NOMEM) return rc;
  return (int)s->n_acks;
}

int hubu_sync_next_ack(hubu_sync *s, hubu_sync_ack *out) { return s ? take_ack(s, 0, out) : 0; }

size_t hubu_sync_unacked(hubu_sync *s) { return s ? hubu_client_pending(s->client) : 0; }

/* ---- receiving ---- */

int hubu_sync_recv(hubu_sync *s, int timeout_ms, hubu_sync_message *out) {
  if (!s || !out) return HUBU_SYNC_INVALID;
  free(s->rx_current);
  s->rx_current = NULL;
  int rc = sync_wait(s, timeout_ms, done_message, NULL);
  if (rc != HUBU_SYNC_OK) return rc;
  sync_message *n = s->rx;
  s->rx = n->next;
  if (!s->rx) s->rx_tail = NULL;
  s->n_rx--;
  n->next = NULL;
  s->rx_current = n;
  *out = n->m;
  return HUBU_SYNC_OK;
}

size_t hubu_sync_pending_messages(hubu_sync *s) { return s ? s->n_rx : 0; }

int hubu_sync_drain(hubu_sync *s, int ms) {
  if (!s) return HUBU_SYNC_INVALID;
  sync_run(s, ms, NULL, NULL, 0);
  return (int)s->n_rx;
}

uint64_t hubu_sync_cursor(hubu_sync *s, const char *session_id) {
  return s && session_id ? hubu_client_cursor(s->client, session_id) : 0;
}

int hubu_sync_set_cursor(hubu_sync *s, const char *session_id, uint64_t seq) {
  if (!s || !session_id || !session_id[0]) return HUBU_SYNC_INVALID;
  if (seq > hubu_client_cursor(s->client, session_id)) {
    int r = hubu_client_set_cursor(s->client, session_id, seq);
    if (r < 0) return r == UV_ENOMEM ? HUBU_SYNC_NOMEM : HUBU_SYNC_INVALID;
  }
  rx_drop_through(s, session_id, seq);
  return HUBU_SYNC_OK;
}

/* Starts a request with start(), then waits for its callback. */
static int request_run(hubu_sync *s, int timeout_ms, sync_request *rq, int started) {
  if (started < 0) {
    request_unlink(s, rq);
    free(rq);
    return not_sent(s, started);
  }
  s->awaited = rq;
  s->awaited_done = 0;
  s->result_code = 0;
  int rc = sync_wait(s, timeout_ms, done_request, NULL);
  if (rc != HUBU_SYNC_OK) s->awaited = NULL; /* rq stays listed: its callback (or close) frees it */
  return rc;
}

int hubu_sync_pull(hubu_sync *s, const char *session_id, uint64_t after_seq, uint32_t limit, int timeout_ms,
                   hubu_sync_pull_result *out) {
  if (!s || !session_id || !out) return HUBU_SYNC_INVALID;
  memset(out, 0, sizeof *out);
  pulled_free(s);
  sync_request *rq = request_new(s);
  if (!rq) return HUBU_SYNC_NOMEM;
  int rc = request_run(s, timeout_ms, rq, hubu_client_pull(s->client, session_id, after_seq, limit, on_pull, rq));
  if (rc != HUBU_SYNC_OK) return rc;
  out->code = s->result_code;
  out->max_seq = s->pull_max_seq;
  out->has_more = s->pull_has_more;
  out->n_messages = s->n_pulled;
  out->messages = s->pulled_view;
  return HUBU_SYNC_OK;
}

int hubu_sync_list_sessions(hubu_sync *s, int timeout_ms, hubu_sync_sessions_result *out) {
  if (!s || !out) return HUBU_SYNC_INVALID;
  memset(out, 0, sizeof *out);
  free(s->sessions);
  s->sessions = NULL;
  s->n_sessions = 0;
  sync_request *rq = request_new(s);
  if (!rq) return HUBU_SYNC_NOMEM;
  int rc = request_run(s, timeout_ms, rq, hubu_client_list_sessions(s->client, on_sessions, rq));
  if (rc != HUBU_SYNC_OK) return rc;
  out->code = s->result_code;
  out->n_sessions = s->n_sessions;
  out->sessions = s->sessions;
  return HUBU_SYNC_OK;
}

/* ---- calls, events, raw frames ---- */

int hubu_sync_call(hubu_sync *s, const char *method, const char *payload, size_t len, int timeout_ms, int *code,
                   char *result, size_t result_size) {
  if (code) *code = -1;
  if (result && result_size) result[0] = '\0';
  if (!s || !method || (len && !payload) || (result_size && !result)) return HUBU_SYNC_INVALID;
  free(s->call_payload);
  s->call_payload = NULL;
  s->call_len = 0;
  s->call_reason[0] = '\0';

  Hubu__V1__Call call = HUBU__V1__CALL__INIT;
  call.request_id = ++s->next_call_id;
  call.method = (char *)method;
  call.payload.data = (uint8_t *)payload;
  call.payload.len = len;
  size_t packed_len = hubu__v1__call__get_packed_size(&call);
  uint8_t *packed = malloc(packed_len ? packed_len : 1);
  if (!packed) return HUBU_SYNC_NOMEM;
  hubu__v1__call__pack(&call, packed);
  uv_update_time(&s->loop);
  int r = hubu_client_send_frame(s->client, HUBU_FRAME_CALL, packed, packed_len);
  free(packed);
  if (r < 0) return not_sent(s, r);
  if (calls_open_add(s, call.request_id) != 0) s->nomem = 1;

  s->call_id = call.request_id;
  s->call_done = 0;
  int rc = sync_wait(s, timeout_ms, done_call, NULL);
  s->call_id = 0;
  if (rc != HUBU_SYNC_OK) return rc;
  if (code) *code = s->call_code;
  if (result_size) copy_bytes_text(result, result_size, s->call_payload, s->call_len);
  return (int)s->call_len;
}

const char *hubu_sync_call_reason(hubu_sync *s) { return s ? s->call_reason : ""; }

size_t hubu_sync_pending_events(hubu_sync *s) { return s ? s->n_events : 0; }

int hubu_sync_next_event(hubu_sync *s, int timeout_ms, hubu_sync_event *out) {
  if (!s || !out) return HUBU_SYNC_INVALID;
  free(s->event_current);
  s->event_current = NULL;
  int rc = sync_wait(s, timeout_ms, done_event, NULL);
  if (rc != HUBU_SYNC_OK) return rc;
  sync_event *n = s->events;
  s->events = n->next;
  if (!s->events) s->events_tail = NULL;
  s->n_events--;
  n->next = NULL;
  s->event_current = n;
  *out = n->e;
  return HUBU_SYNC_OK;
}

int hubu_sync_send_frame(hubu_sync *s, int type, const char *body, size_t len) {
  if (!s || type < 0 || type > 255 || (len && !body)) return HUBU_SYNC_INVALID;
  uv_update_time(&s->loop);
  int r = hubu_client_send_frame(s->client, (uint8_t)type, (const uint8_t *)body, len);
  if (r < 0) return not_sent(s, r);
  if (type == HUBU_FRAME_CALL) { /* it takes its place among the open calls, so ERRORs stay attributed */
    Hubu__V1__Call *call = hubu__v1__call__unpack(NULL, len, (const uint8_t *)body);
    if (calls_open_add(s, call ? call->request_id : UINT64_MAX) != 0) s->nomem = 1;
    if (call) hubu__v1__call__free_unpacked(call, NULL);
  }
  return HUBU_SYNC_OK;
}

/* ---- helpers ---- */

int hubu_sync_mint_token(const char *secret, const char *user, int ttl_s, char *out, size_t out_size) {
  if (!secret || !user || !out || !out_size) return -1;
  uint8_t *from_file = NULL;
  const uint8_t *bytes = (const uint8_t *)secret;
  size_t len = strlen(secret);
  if (secret[0] == '@') {
    if (hubu_secret_read_file(secret + 1, &from_file, &len) != 0) return -1;
    bytes = from_file;
  }
  int64_t expiry = (int64_t)time(NULL) + ttl_s;
  int r = expiry < 0 ? -1 : hubu_token_mint(bytes, len, user, (uint64_t)expiry, out, out_size);
  if (from_file) {
    OPENSSL_cleanse(from_file, len);
    free(from_file);
  }
  return r;
}

const char *hubu_sync_code_name(int code) { return hubu_code_name((Hubu__V1__Code)code); }

const char *hubu_sync_result_name(int result) {
  switch (result) {
    case HUBU_SYNC_OK: return "ok";
    case HUBU_SYNC_TIMEOUT: return "timeout";
    case HUBU_SYNC_CLOSED: return "closed";
    case HUBU_SYNC_INVALID: return "invalid";
    case HUBU_SYNC_NOMEM: return "nomem";
    case HUBU_SYNC_NOT_READY: return "not_ready";
  }
  return result >= 0 ? "ok" : "unknown";
}

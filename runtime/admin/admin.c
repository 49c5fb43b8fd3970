/* admin.c — the admin listener: one HTTP/1.1 request per connection (answered
 * with Connection: close), parsed by http-parser, answered from the server's
 * own counters and connection list. Runs on the loop thread and never blocks
 * (the /proc/self reads are served from memory by the kernel).
 * Every request passes the guard (Host, Origin, token, then a non-simple
 * POST) before its route runs: a web page in a browser on this host can
 * neither reach it by DNS rebinding nor change state with a form post.
 * Invariant: an admin connection is in admin->conns from accept until its
 * uv_close; the hubu_admin struct is freed by the last close callback of its
 * handles (listener, sweep timer, connections), never before. */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uthash.h>
#include <uv.h>

#include "buf.h"
#include "clock.h"
#include "cluster.h"
#include "conn.h"
#include "delivery.h"
#include "host.h"
#include "log.h"
#include "presence.h"
#include "prom.h"
#include "server.h"
#include "session.h"
#include "store.h"
#include "token.h"
#include "utf8.h"
#include "wire.h"

#define ADMIN_MAX_CONNS 64   /* more at once are closed on accept */
#define ADMIN_IDLE_MS 10000  /* a request must be complete this long after accept (else 408) */
#define ADMIN_LINGER_MS 2000 /* after the response was written, how long to wait for the client's FIN */
#define ADMIN_WRITE_MS 30000 /* how long a client may take to read a response */
#define ADMIN_SWEEP_MS 1000
#define ADMIN_MAX_URL 8192 /* request target; longer gets 414 */
#define ADMIN_MAX_PARAMS 8
#define ADMIN_READ_BUF 16384
#define ADMIN_REASON_MAX 256 /* kick reason, bytes */
#define ADMIN_DEFAULT_REASON "kicked by an administrator"
#define ADMIN_PLUGIN_NAME_MAX 64

typedef struct admin_conn admin_conn;

/* Why the guard refused a request; counted for /metrics and stats. */
typedef enum { REFUSED_HOST, REFUSED_ORIGIN, REFUSED_TOKEN, REFUSED_CONTENT_TYPE, REFUSED_COUNT } admin_refusal;
static const char *const refusal_names[REFUSED_COUNT] = {"host", "origin", "token", "content_type"};

/* The request headers the guard reads, and how much of each it keeps. */
enum { HDR_HOST, HDR_ORIGIN, HDR_AUTHORIZATION, HDR_CONTENT_TYPE, HDR_COUNT };
static const struct {
  const char *name;
  size_t max; /* a longer value is refused as a wrong one */
} header_specs[HDR_COUNT] = {
    {"Host", 300},
    {"Origin", 300},
    {"Authorization", 32 + HUBU_ADMIN_TOKEN_MAX},
    {"Content-Type", 256},
};

typedef struct {
  hubu_buf value;   /* owned: the first occurrence's value */
  uint8_t count;    /* occurrences, 2 meaning "more than one" (refused) */
  uint8_t too_long; /* the value outgrew header_specs[].max */
} admin_header;

struct hubu_admin {
  hubu_server *server;   /* not owned */
  hubu_admin_config cfg; /* a copy; its strings are main's and outlive the listener */
  uv_tcp_t listener;
  uv_timer_t sweep;  /* idle and linger limits of the connections */
  int port;          /* bound */
  admin_conn *conns; /* open connections (owned; freed in their close callbacks) */
  unsigned n_conns;
  unsigned open_handles;       /* handles whose close callback has not run yet; freed at 0 */
  uint64_t started_ms;         /* uv_now at start, for uptime */
  uint64_t started_wall_ms;    /* wall clock at start, for process_start_time_seconds */
  hubu_admin_reload_fn reload; /* the plugin host's, or NULL (reload answers 501) */
  void *reload_ud;
  int has_token;            /* --admin-token given: every route but /healthz needs it */
  uint8_t token_digest[32]; /* SHA-256 of the token: compared, never the token itself */
  uint64_t refused[REFUSED_COUNT];
  char read_buf[ADMIN_READ_BUF]; /* every read lands here and is parsed before the next */
};

struct admin_conn {
  uv_tcp_t tcp; /* first: the handle pointer is the connection pointer */
  hubu_admin *admin;
  admin_conn *prev, *next;
  http_parser parser;
  uv_shutdown_t shutdown_req;
  hubu_buf url;      /* owned: the request target, gathered across reads */
  size_t body_len;   /* request body bytes seen (and dropped) */
  uint64_t since_ms; /* accept, then the response, then the end of its write */
  int error_status;  /* 413 or 414, set by a parser callback that stopped the parser */
  admin_header headers[HDR_COUNT];
  char field[16];                    /* the name of the header being read, when short enough to be one of ours */
  size_t field_len;                  /* may exceed sizeof field: then it is none of ours */
  int value_of;                      /* the HDR_ whose value is being read, or -1 */
  struct admin_group_req *group_req; /* a /v1/admin/group request waiting for the store, or NULL */
  const char *cors_origin;           /* the --admin-allow-origin item the request's Origin matched (in cfg), or NULL */
  size_t cors_origin_len;
  uint8_t in_value : 1;     /* the parser is inside a header value */
  uint8_t headers_done : 1; /* on_headers_complete ran: a chunked body's trailers are not headers */
  uint8_t complete : 1;     /* on_message_complete ran; the parser is paused */
  uint8_t responded : 1;    /* a response is queued; further input is dropped until EOF */
  uint8_t writing : 1;      /* the response's write has not completed */
  uint8_t peer_done : 1;    /* the client's FIN came while writing: close once written */
  uint8_t closing : 1;      /* uv_close called */
};

/* One response in flight. Owns both buffers until the write callback. */
typedef struct {
  uv_write_t req;
  admin_conn *conn;
  hubu_buf head;
  hubu_buf body;
} admin_write;

/* ---- output: text and JSON ------------------------------------------------ */

/* A response body being built; any failed append makes it unusable (500). */
typedef struct {
  hubu_buf buf;
  int failed;
} admin_out;

static void out_raw(admin_out *o, const char *s, size_t n) {
  if (!o->failed && hubu_buf_append(&o->buf, s, n) != 0) o->failed = 1;
}

static void out_printf(admin_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(admin_out *o, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) {
    o->failed = 1;
  } else if ((size_t)n < sizeof tmp) {
    out_raw(o, tmp, (size_t)n);
  } else if (!o->failed) {
    uint8_t *w = hubu_buf_reserve(&o->buf, (size_t)n + 1);
    if (!w) {
      o->failed = 1;
      return;
    }
    va_start(ap, fmt);
    vsnprintf((char *)w, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->buf.len += (size_t)n;
  }
}

/* ---- the figures ----------------------------------------------------------- */

/* One snapshot of everything /metrics and /v1/admin/stats report, so both
 * say the same thing. */
typedef struct {
  uint64_t conns_ready, conns_other;
  uint64_t conns_accepted;
  uint64_t proxy_refused;
  hubu_core_stats server;
  int have_store; /* the store is closed once drained */
  hubu_store_stats store;
  int store_up; /* the store's database answers */
  uint64_t sessions_loaded, users_online;
  int have_rss;
  uint64_t rss_bytes;
  double cpu_seconds;
  double uptime_seconds;
  double start_time_seconds;
  int draining;
  uint64_t refused[REFUSED_COUNT]; /* admin requests the guard refused, by reason */
} admin_figures;

static int read_rss(uint64_t *out) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return -1;
  unsigned long long size = 0, resident = 0;
  int n = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  long page = sysconf(_SC_PAGESIZE);
  if (n != 2 || page <= 0) return -1;
  *out = (uint64_t)resident * (uint64_t)page;
  return 0;
}

static void collect_figures(hubu_admin *a, admin_figures *f) {
  hubu_server *s = a->server;
  memset(f, 0, sizeof *f);
  for (hubu_conn *c = s->conns; c; c = c->next) {
    if (c->peer.state == HUBU_PEER_READY)
      f->conns_ready++;
    else
      f->conns_other++;
  }
  f->conns_accepted = s->next_conn_id; /* one id per accepted connection */
  f->proxy_refused = s->proxy_refused;
  f->server = s->core.stats;
  if (s->core.store) {
    hubu_store_get_stats(s->core.store, &f->store);
    f->store_up = hubu_store_healthy(s->core.store, NULL, 0);
    f->have_store = 1;
  }
  f->sessions_loaded = HASH_COUNT(s->core.sessions);
  f->users_online = s->core.directory->ops->users(s->core.directory);
  f->have_rss = read_rss(&f->rss_bytes) == 0;
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    f->cpu_seconds =
        (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  f->uptime_seconds = (double)(uv_now(s->loop) - a->started_ms) / 1000.0;
  f->start_time_seconds = (double)a->started_wall_ms / 1000.0;
  f->draining = s->draining != 0;
  memcpy(f->refused, a->refused, sizeof f->refused);
}

/* ---- Prometheus text format 0.0.4 ------------------------------------------ */

/* Through lib/prom.c, the one writer of the format (the plugins' families too). */
static void prom_head(admin_out *o, const char *name, const char *type, const char *help) {
  if (!o->failed && hubu_prom_head(&o->buf, name, type, help, strlen(help)) != 0) o->failed = 1;
}

static void prom_u64(admin_out *o, const char *name, const char *type, const char *help, uint64_t v) {
  prom_head(o, name, type, help);
  if (!o->failed && hubu_prom_sample_u64(&o->buf, name, NULL, v) != 0) o->failed = 1;
}

static void prom_f64(admin_out *o, const char *name, const char *type, const char *help, double v) {
  prom_head(o, name, type, help);
  if (!o->failed && hubu_prom_sample(&o->buf, name, NULL, v) != 0) o->failed = 1;
}

static void render_metrics(const admin_figures *f, admin_out *o) {
  prom_head(o, "hubu_connections", "gauge", "Open client connections, by state (ready: authenticated).");
  out_printf(o, "hubu_connections{state=\"ready\"} %" PRIu64 "\n", f->conns_ready);
  out_printf(o, "hubu_connections{state=\"other\"} %" PRIu64 "\n", f->conns_other);
  prom_u64(o, "hubu_connections_accepted_total", "counter", "Client connections accepted since start.",
           f->conns_accepted);
  prom_u64(o, "hubu_proxy_refused_total", "counter",
           "Connections refused by a --proxy-protocol listener: no PROXY header, an invalid one, or none in time.",
           f->proxy_refused);
  prom_u64(o, "hubu_messages_received_total", "counter", "SEND frames received.", f->server.sends_received);
  prom_u64(o, "hubu_messages_stored_total", "counter", "Messages the store made durable for this server.",
           f->server.messages_stored);
  prom_head(o, "hubu_pulls_total", "counter", "PULL requests, by where they were answered from.");
  out_printf(o, "hubu_pulls_total{source=\"tail\"} %" PRIu64 "\n", f->server.pulls_from_tail);
  out_printf(o, "hubu_pulls_total{source=\"store\"} %" PRIu64 "\n", f->server.pulls_from_store);
  if (f->have_store) {
    prom_u64(o, "hubu_store_batches_total", "counter", "Append transactions committed (group commit).",
             f->store.batches);
    prom_u64(o, "hubu_store_appended_total", "counter", "Messages appended by the store.", f->store.appended);
    prom_u64(o, "hubu_store_batch_size_last", "gauge", "Messages in the latest append transaction.",
             f->store.last_batch);
    prom_u64(o, "hubu_store_batch_size_max", "gauge", "Most messages seen in one append transaction.",
             f->store.max_batch_seen);
    prom_f64(o, "hubu_store_commit_seconds_total", "counter", "Time spent in append transactions.",
             (double)f->store.commit_us_total / 1e6);
    prom_u64(o, "hubu_store_queue_depth", "gauge", "Store operations waiting now.", f->store.queued);
    prom_u64(o, "hubu_store_up", "gauge", "1 while the store's database answers, 0 while it is unreachable.",
             (uint64_t)f->store_up);
  }
  prom_u64(o, "hubu_sessions_loaded", "gauge", "Sessions held in memory.", f->sessions_loaded);
  prom_u64(o, "hubu_users_online", "gauge", "Users with at least one authenticated connection.", f->users_online);
  prom_u64(o, "hubu_draining", "gauge", "1 while the server drains for shutdown.", (uint64_t)f->draining);
  prom_head(o, "hubu_admin_refused_total", "counter",
            "Admin requests refused: a foreign Host, an Origin not allowed, no or a wrong token, a simple POST.");
  for (int i = 0; i < REFUSED_COUNT; i++)
    out_printf(o, "hubu_admin_refused_total{reason=\"%s\"} %" PRIu64 "\n", refusal_names[i], f->refused[i]);
  /* the plugin host appends its hubu_plugin_* families after these (handle_metrics) */
  if (f->have_rss)
    prom_u64(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", f->rss_bytes);
  prom_f64(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
           f->cpu_seconds);
  prom_f64(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
           f->start_time_seconds);
}

static void render_stats(const admin_figures *f, admin_out *o) {
  hubu_json_writer w;
  hubu_json_init(&w, &o->buf, &o->failed);
  hubu_json_open(&w, NULL, '{', 0);
  hubu_json_key(&w, "connections");
  hubu_json_open(&w, NULL, '{', 1);
  hubu_json_u64(&w, "ready", f->conns_ready);
  hubu_json_u64(&w, "other", f->conns_other);
  hubu_json_close(&w);
  hubu_json_u64(&w, "connections_accepted", f->conns_accepted);
  hubu_json_u64(&w, "proxy_refused", f->proxy_refused);
  hubu_json_u64(&w, "messages_received", f->server.sends_received);
  hubu_json_u64(&w, "messages_stored", f->server.messages_stored);
  hubu_json_key(&w, "pulls");
  hubu_json_open(&w, NULL, '{', 1);
  hubu_json_u64(&w, "tail", f->server.pulls_from_tail);
  hubu_json_u64(&w, "store", f->server.pulls_from_store);
  hubu_json_close(&w);
  if (f->have_store) {
    hubu_json_key(&w, "store");
    hubu_json_open(&w, NULL, '{', 0);
    hubu_json_u64(&w, "batches", f->store.batches);
    hubu_json_u64(&w, "appended", f->store.appended);
    hubu_json_u64(&w, "batch_size_last", f->store.last_batch);
    hubu_json_u64(&w, "batch_size_max", f->store.max_batch_seen);
    hubu_json_double(&w, "commit_seconds", (double)f->store.commit_us_total / 1e6, "%.3f");
    hubu_json_u64(&w, "queue_depth", f->store.queued);
    hubu_json_bool(&w, "up", f->store_up);
    hubu_json_close(&w);
  } else {
    hubu_json_null(&w, "store");
  }
  hubu_json_u64(&w, "sessions_loaded", f->sessions_loaded);
  hubu_json_u64(&w, "users_online", f->users_online);
  hubu_json_key(&w, "process");
  hubu_json_open(&w, NULL, '{', 0);
  if (f->have_rss)
    hubu_json_u64(&w, "resident_memory_bytes", f->rss_bytes);
  else
    hubu_json_null(&w, "resident_memory_bytes");
  hubu_json_double(&w, "cpu_seconds", f->cpu_seconds, "%.3f");
  hubu_json_double(&w, "uptime_seconds", f->uptime_seconds, "%.3f");
  hubu_json_close(&w);
  hubu_json_bool(&w, "draining", f->draining);
  hubu_json_key(&w, "admin_refused");
  hubu_json_open(&w, NULL, '{', 1);
  for (int i = 0; i < REFUSED_COUNT; i++) hubu_json_u64(&w, refusal_names[i], f->refused[i]);
  hubu_json_close(&w);
  hubu_json_close(&w);
}

static const char *conn_state_name(uint8_t state) {
  switch (state) {
    case HUBU_PEER_HELLO_WAIT: return "hello_wait";
    case HUBU_PEER_AUTHING: return "authing";
    case HUBU_PEER_READY: return "ready";
    case HUBU_PEER_CLOSING: return "closing";
    default: return "closed";
  }
}

/* "1.2.3.4:5678" or "[::1]:5678" (the client's, from a PROXY header behind
 * a proxy); "" when the peer is gone. */
static void peer_name(hubu_conn *c, char *out, size_t size) { hubu_conn_remote_name(c, 1, out, size); }

/* Every open connection, or only user's (NULL: all), one per line. */
static void render_conns(hubu_server *s, const char *user, admin_out *o) {
  uint64_t now = uv_now(s->loop), count = 0;
  for (hubu_conn *c = s->conns; c; c = c->next)
    if (!user || (c->peer.user && !strcmp(c->peer.user, user))) count++;
  hubu_json_writer w;
  hubu_json_init(&w, &o->buf, &o->failed);
  hubu_json_open(&w, NULL, '{', 0);
  hubu_json_u64(&w, "count", count);
  hubu_json_key(&w, "conns");
  hubu_json_open(&w, NULL, '[', 0);
  for (hubu_conn *c = s->conns; c && !o->failed; c = c->next) {
    if (user && !(c->peer.user && !strcmp(c->peer.user, user))) continue;
    char remote[96];
    peer_name(c, remote, sizeof remote);
    hubu_json_open(&w, NULL, '{', 1);
    hubu_json_u64(&w, "conn_id", c->peer.id);
    hubu_json_str(&w, "user", c->peer.user);
    hubu_json_str(&w, "device", c->peer.user ? c->peer.device : NULL);
    hubu_json_bool(&w, "tls", c->tls != NULL);
    hubu_json_str(&w, "state", conn_state_name(c->peer.state));
    hubu_json_str(&w, "remote", remote[0] ? remote : NULL);
    hubu_json_u64(&w, "inflight", c->peer.inflight ? c->peer.inflight->len : 0);
    if (c->peer.state < HUBU_PEER_CLOSING) /* state_since_ms is the accept time until closing starts */
      hubu_json_double(&w, "connected_seconds", (double)(now - c->state_since_ms) / 1000.0, "%.3f");
    else
      hubu_json_null(&w, "connected_seconds");
    hubu_json_close(&w);
  }
  hubu_json_close(&w);
  hubu_json_close(&w);
}

/* ---- connections: reading, responding, closing ------------------------------ */

static void group_req_detach(admin_conn *c);

static void handle_closed(hubu_admin *a) {
  if (--a->open_handles == 0) free(a);
}

static void on_admin_handle_close(uv_handle_t *h) { handle_closed(h->data); }

static void on_conn_close(uv_handle_t *h) {
  admin_conn *c = (admin_conn *)h;
  hubu_admin *a = c->admin;
  hubu_buf_free(&c->url);
  for (int i = 0; i < HDR_COUNT; i++) hubu_buf_free(&c->headers[i].value);
  free(c);
  handle_closed(a);
}

static void conn_close(admin_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  group_req_detach(c);
  hubu_admin *a = c->admin;
  if (c->prev)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  a->n_conns--;
  uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_write(uv_write_t *req, int status) {
  admin_write *w = (admin_write *)req;
  admin_conn *c = w->conn;
  hubu_buf_free(&w->head);
  hubu_buf_free(&w->body);
  free(w);
  c->writing = 0;
  c->since_ms = uv_now(c->tcp.loop);
  if (status < 0 || c->peer_done) conn_close(c); /* UV_ECANCELED: c is closing already */
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  admin_conn *c = req->data;
  if (status < 0) conn_close(c); /* otherwise wait for the client's FIN (or the linger) */
}

/* Queues the response (taking body) and the FIN after it. Does nothing but
 * free body when c already answered or is closing (a handler may have ended
 * the admin listener, e.g. a kick that finished a drain). */
static void respond(admin_conn *c, int status, const char *content_type, admin_out *body, const char *extra_headers) {
  admin_write *w = NULL;
  if (c->closing || c->responded) goto drop;
  c->responded = 1;
  c->since_ms = uv_now(c->tcp.loop);
  if (!(w = calloc(1, sizeof *w))) goto fail;
  w->conn = c;
  w->body = body->buf;
  memset(&body->buf, 0, sizeof body->buf);
  admin_out head = {0};
  out_printf(&head,
             "HTTP/1.1 %d %s\r\n"
             "Server: " HUBU_SERVER_NAME
             "\r\n"
             "Content-Type: %s\r\n"
             "Content-Length: %zu\r\n"
             "Cache-Control: no-store\r\n"
             "Connection: close\r\n"
             "%s",
             status, http_status_str((enum http_status)status), content_type, hubu_buf_size(&w->body),
             extra_headers ? extra_headers : "");
  if (c->cors_origin) /* the configured spelling, never the request's bytes */
    out_printf(&head, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n", (int)c->cors_origin_len, c->cors_origin);
  out_raw(&head, "\r\n", 2);
  w->head = head.buf;
  if (head.failed) goto fail;
  uv_buf_t bufs[2] = {
      uv_buf_init((char *)hubu_buf_head(&w->head), (unsigned)hubu_buf_size(&w->head)),
      uv_buf_init((char *)hubu_buf_head(&w->body), (unsigned)hubu_buf_size(&w->body)),
  };
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, hubu_buf_size(&w->body) ? 2 : 1, on_write) != 0) goto fail;
  c->writing = 1;
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
  return;
fail:
  if (w) {
    hubu_buf_free(&w->head);
    hubu_buf_free(&w->body);
    free(w);
  }
  hubu_log(HUBU_LOG_WARN, 0, NULL, "admin_respond_failed", "status=%d", status);
  conn_close(c);
drop:
  hubu_buf_free(&body->buf);
}

static void respond_json(admin_conn *c, int status, admin_out *body) {
  if (body->failed) {
    hubu_buf_free(&body->buf);
    admin_out err = {0};
    out_printf(&err, "{\"error\": \"out of memory\"}\n");
    respond(c, 500, "application/json", &err, NULL);
    return;
  }
  respond(c, status, "application/json", body, NULL);
}

/* {"error": message} with status; extra_headers (e.g. "Allow: GET\r\n") may be NULL. */
static void respond_error(admin_conn *c, int status, const char *message, const char *extra_headers) {
  admin_out o = {0};
  hubu_json_writer w;
  hubu_json_init(&w, &o.buf, &o.failed);
  hubu_json_open(&w, NULL, '{', 1);
  hubu_json_str(&w, "error", message);
  hubu_json_close(&w);
  respond(c, status, "application/json", &o, extra_headers);
}

/* ---- requests ------------------------------------------------------------- */

typedef struct {
  const char *name;
  const char *value;
} admin_param;

/* The decoded query string: names and values point into storage. */
typedef struct {
  admin_param params[ADMIN_MAX_PARAMS];
  size_t n;
  char storage[ADMIN_MAX_URL + 1];
} admin_query;

static int hex_digit(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Decodes %XX and '+' in place; -1 on a malformed escape or an encoded NUL. */
static int percent_decode(char *s) {
  char *out = s;
  for (const char *p = s; *p; p++) {
    if (*p == '+') {
      *out++ = ' ';
    } else if (*p == '%') {
      int hi = hex_digit(p[1]), lo = hi < 0 ? -1 : hex_digit(p[2]);
      if (lo < 0 || (hi == 0 && lo == 0)) return -1;
      *out++ = (char)(hi * 16 + lo);
      p += 2;
    } else {
      *out++ = *p;
    }
  }
  *out = '\0';
  return 0;
}

static const char *query_get(const admin_query *q, const char *name) {
  for (size_t i = 0; i < q->n; i++)
    if (!strcmp(q->params[i].name, name)) return q->params[i].value;
  return NULL;
}

/* Splits "a=1&b=x%20y" into q. NULL, or why the query is refused. */
static const char *query_parse(admin_query *q, const char *s, size_t len) {
  q->n = 0;
  if (len > ADMIN_MAX_URL) return "query string too long";
  memcpy(q->storage, s, len);
  q->storage[len] = '\0';
  char *p = q->storage;
  for (;;) {
    char *amp = strchr(p, '&');
    if (amp) *amp = '\0';
    if (*p) {
      char *eq = strchr(p, '=');
      char *value = eq ? eq + 1 : p + strlen(p);
      if (eq) *eq = '\0';
      if (percent_decode(p) != 0 || percent_decode(value) != 0) return "malformed percent-encoding in the query";
      if (!*p) return "a query parameter has no name";
      if (query_get(q, p)) return "a query parameter is given twice";
      if (q->n == ADMIN_MAX_PARAMS) return "too many query parameters";
      q->params[q->n++] = (admin_param){p, value};
    }
    if (!amp) break;
    p = amp + 1;
  }
  return NULL;
}

/* The first parameter of q not in allowed (a NULL-terminated list), or NULL. */
static const char *query_unknown(const admin_query *q, const char *const *allowed) {
  for (size_t i = 0; i < q->n; i++) {
    const char *const *a = allowed;
    while (*a && strcmp(*a, q->params[i].name)) a++;
    if (!*a) return q->params[i].name;
  }
  return NULL;
}

/* Printable UTF-8 (no control characters, no overlongs or surrogates). */
static int text_printable(const char *s) { return hubu_utf8_valid(s, strlen(s), 1); }

/* Refuses a query with a parameter outside allowed; 1 when it was refused. */
static int refuse_unknown_params(admin_conn *c, const admin_query *q, const char *const *allowed) {
  const char *bad = query_unknown(q, allowed);
  if (!bad) return 0;
  char msg[128];
  snprintf(msg, sizeof msg, "unknown query parameter '%.60s'", bad);
  respond_error(c, 400, msg, NULL);
  return 1;
}

/* 200 "ok"; 503 "draining" while shutting down; 503 "degraded: WHY" while
 * the store's database is unreachable (connections stay up, SENDs answer
 * UNAVAILABLE): a load balancer's readiness check moves new clients away. */
static void handle_healthz(admin_conn *c, const admin_query *q) {
  (void)q;
  admin_out o = {0};
  char text[256];
  int status = hubu_server_health(c->admin->server, text, sizeof text);
  out_printf(&o, "%s", text);
  respond(c, status, "text/plain; charset=utf-8", &o, NULL);
}

/* GET /v1/admin/cluster: this node and every node of its cluster, as the
 * cluster layer last saw them (404 on a node that is not in one). */
static void handle_cluster(admin_conn *c, const admin_query *q) {
  (void)q;
  hubu_server *s = c->admin->server;
  if (!s->cluster) {
    respond_error(c, 404, "not in a cluster (hubud runs without --cluster)", NULL);
    return;
  }
  admin_out o = {0};
  if (hubu_cluster_describe(s->cluster, &o.buf) != 0) o.failed = 1;
  respond_json(c, 200, &o);
}

static void handle_metrics(admin_conn *c, const admin_query *q) {
  (void)q;
  admin_figures f;
  collect_figures(c->admin, &f);
  admin_out o = {0};
  render_metrics(&f, &o);
  if (!o.failed && hubu_plugins_metrics(c->admin->server->plugins, &o.buf) != 0) o.failed = 1;
  if (!o.failed && c->admin->server->cluster) hubu_cluster_metrics(c->admin->server->cluster, &o.buf);
  if (o.failed) {
    hubu_buf_free(&o.buf);
    respond_error(c, 500, "out of memory", NULL);
    return;
  }
  respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &o, NULL);
}

static void handle_stats(admin_conn *c, const admin_query *q) {
  (void)q;
  admin_figures f;
  collect_figures(c->admin, &f);
  admin_out o = {0};
  render_stats(&f, &o);
  respond_json(c, 200, &o);
}

static void handle_conns(admin_conn *c, const admin_query *q) {
  static const char *const allowed[] = {"user", NULL};
  if (refuse_unknown_params(c, q, allowed)) return;
  const char *user = query_get(q, "user");
  if (user && !hubu_id_valid(user, strlen(user))) {
    respond_error(c, 400, "user must be 1-64 bytes of [A-Za-z0-9_.@-]", NULL);
    return;
  }
  admin_out o = {0};
  render_conns(c->admin->server, user, &o);
  respond_json(c, 200, &o);
}

/* GOAWAY KICKED to every open connection of the user; they close once it is
 * flushed. Counts the connections that were not closing already. */
static void handle_kick(admin_conn *c, const admin_query *q) {
  static const char *const allowed[] = {"user", "reason", NULL};
  if (refuse_unknown_params(c, q, allowed)) return;
  const char *user = query_get(q, "user");
  const char *reason = query_get(q, "reason");
  if (!user) {
    respond_error(c, 400, "user is required: POST /v1/admin/kick?user=U[&reason=R]", NULL);
    return;
  }
  if (!hubu_id_valid(user, strlen(user))) {
    respond_error(c, 400, "user must be 1-64 bytes of [A-Za-z0-9_.@-]", NULL);
    return;
  }
  if (reason && (strlen(reason) > ADMIN_REASON_MAX || !text_printable(reason))) {
    respond_error(c, 400, "reason must be at most 256 bytes of printable UTF-8", NULL);
    return;
  }
  if (!reason || !*reason) reason = ADMIN_DEFAULT_REASON;
  uint64_t kicked = (uint64_t)hubu_core_kick(&c->admin->server->core, user, reason);
  hubu_log(HUBU_LOG_INFO, 0, user, "admin_kick", "connections=%" PRIu64 " reason=\"%s\"", kicked, reason);
  admin_out o = {0};
  hubu_json_writer w;
  hubu_json_init(&w, &o.buf, &o.failed);
  hubu_json_open(&w, NULL, '{', 1);
  hubu_json_u64(&w, "kicked", kicked);
  hubu_json_close(&w);
  respond_json(c, 200, &o);
}

/* A plugin name from a request: a file name in the plugin folder (NAME.lua
 * or NAME/), so no '.', '/', '\\' or NUL can make it a path out of there. */
static int plugin_name_valid(const char *name) {
  size_t n = strlen(name);
  if (n < 1 || n > ADMIN_PLUGIN_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

static void handle_reload(admin_conn *c, const admin_query *q) {
  static const char *const allowed[] = {"plugin", "config", NULL};
  if (refuse_unknown_params(c, q, allowed)) return;
  const char *plugin = query_get(q, "plugin");
  if (query_get(q, "config")) { /* hubu.lua again: the plugins whose section changed */
    hubu_plugins *hp = c->admin->server->plugins;
    if (plugin) {
      respond_error(c, 400, "config and plugin do not go together: config reloads the plugins whose section changed",
                    NULL);
      return;
    }
    if (!hp) {
      respond_error(c, 503, "the plugin host did not start", NULL);
      return;
    }
    char report[2048];
    int failed = hubu_plugins_reload_config(hp, report, sizeof report);
    hubu_log(failed ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, "admin_reload", "config=1 failed=%d", failed);
    if (failed) {
      respond_error(c, 422, report[0] ? report : "the config reload failed", NULL);
      return;
    }
    admin_out o = {0};
    hubu_json_writer w;
    hubu_json_init(&w, &o.buf, &o.failed);
    hubu_json_open(&w, NULL, '{', 1);
    hubu_json_str(&w, "reloaded", "config");
    hubu_json_str(&w, "detail", report);
    hubu_json_close(&w);
    respond_json(c, 200, &o);
    return;
  }
  if (plugin && !plugin_name_valid(plugin)) {
    respond_error(c, 400, "plugin must be 1-64 bytes of [A-Za-z0-9_-]: the name of a plugin in the plugin folder",
                  NULL);
    return;
  }
  hubu_admin *a = c->admin;
  if (!a->reload) {
    respond_error(c, 501, "the plugin host is not running", NULL);
    return;
  }
  char msg[512] = "";
  int status = a->reload(a->reload_ud, plugin, msg, sizeof msg);
  msg[sizeof msg - 1] = '\0';
  if (status < 200 || status > 599) status = 500;
  char line[sizeof msg]; /* the report has a line per plugin; the log gets one line */
  size_t n = 0;
  for (const char *p = msg; *p && n + 1 < sizeof line; p++) line[n++] = *p == '\n' ? (p[1] ? ';' : '\0') : *p;
  line[n] = '\0';
  hubu_log(status < 300 ? HUBU_LOG_INFO : HUBU_LOG_WARN, 0, NULL, "admin_reload", "plugin=%s status=%d detail=\"%s\"",
           plugin ? plugin : "*", status, line);
  if (status >= 300) {
    respond_error(c, status, msg[0] ? msg : "reload failed", NULL);
    return;
  }
  admin_out o = {0};
  hubu_json_writer w;
  hubu_json_init(&w, &o.buf, &o.failed);
  hubu_json_open(&w, NULL, '{', 1);
  hubu_json_str(&w, "reloaded", plugin ? plugin : "all");
  hubu_json_str(&w, "detail", msg);
  hubu_json_close(&w);
  respond_json(c, status, &o);
}

/* GET /v1/admin/plugins: the plugin host's listing (hubu_plugins_list_json). */
static void handle_plugins(admin_conn *c, const admin_query *q) {
  static const char *const allowed[] = {NULL};
  if (refuse_unknown_params(c, q, allowed)) return;
  hubu_plugins *p = c->admin->server->plugins;
  if (!p) {
    respond_error(c, 503, "the plugin host did not start", NULL);
    return;
  }
  admin_out o = {0};
  if (hubu_plugins_list_json(p, &o.buf) != 0) o.failed = 1;
  respond_json(c, 200, &o);
}

/* ---- groups: hubuctl group while hubud runs ------------------------------- */

#define ADMIN_GROUP_USERS_MAX 256

/* A /v1/admin/group request: its store ops, answered once the last is done.
 * Owned by itself: freed when the last op completes, whether or not its
 * connection is still open (conn is NULL once it closed). */
typedef struct admin_group_req {
  admin_conn *conn;
  hubu_server *server;
  char op[8];
  char group[HUBU_SESSION_ID_MAX + 1];
  unsigned left;   /* ops not answered yet */
  int status;      /* the HTTP status: 200 until an op fails */
  char error[256]; /* the first failure */
  char **done;     /* the users whose op was applied (for group.changed), owned */
  size_t n_done;
  admin_out members; /* GET: the JSON answer */
} admin_group_req;

static void group_req_detach(admin_conn *c) {
  if (c->group_req) c->group_req->conn = NULL;
  c->group_req = NULL;
}

static void group_req_finish(admin_group_req *r) {
  if (r->status == 200 && strcmp(r->op, "members") != 0) {
    hubu_log(HUBU_LOG_INFO, 0, NULL, "admin_group", "op=%s group=%s users=%zu", r->op, r->group, r->n_done);
    hubu_plugins_group_changed(r->server->plugins, r->op, r->group, (const char *const *)r->done, r->n_done, "admin");
  } else if (r->status != 200) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "admin_group_failed", "op=%s group=%s status=%d error=\"%s\"", r->op, r->group,
             r->status, r->error);
  }
  admin_conn *c = r->conn;
  if (c) {
    c->group_req = NULL;
    if (r->status != 200) {
      respond_error(c, r->status, r->error, NULL);
    } else if (!strcmp(r->op, "members")) {
      respond_json(c, 200, &r->members);
    } else {
      admin_out o = {0};
      hubu_json_writer w;
      hubu_json_init(&w, &o.buf, &o.failed);
      hubu_json_open(&w, NULL, '{', 1);
      hubu_json_str(&w, "group", r->group);
      hubu_json_str(&w, "op", r->op);
      hubu_json_u64(&w, "users", r->n_done);
      hubu_json_close(&w);
      respond_json(c, 200, &o);
    }
  }
  hubu_buf_free(&r->members.buf);
  for (size_t i = 0; i < r->n_done; i++) free(r->done[i]);
  free(r->done);
  free(r);
}

/* A store op of a group request finished: the server's copy of the group
 * follows it (hubu_session_membership_applied), then the request is
 * answered when it was the last. */
static void on_group_op_done(hubu_store_op *op) {
  admin_group_req *r = op->ud;
  hubu_session_membership_applied(&r->server->core, op);
  if (op->status == HUBU_STORE_OK) {
    if (op->kind == HUBU_STORE_SESSION_LOAD) {
      hubu_json_writer w;
      hubu_json_init(&w, &r->members.buf, &r->members.failed);
      hubu_json_open(&w, NULL, '{', 1);
      hubu_json_str(&w, "group", r->group);
      hubu_json_open(&w, "members", '[', 0);
      for (size_t i = 0; i < op->session_load.n_members; i++) hubu_json_str(&w, NULL, op->session_load.members[i]);
      hubu_json_close(&w);
      hubu_json_close(&w);
    } else if (op->kind == HUBU_STORE_SESSION_CREATE) {
      for (size_t i = 0; i < op->session_create.n_members && r->done; i++)
        if ((r->done[r->n_done] = strdup(op->session_create.members[i]))) r->n_done++;
    } else if (r->done && (r->done[r->n_done] = strdup(op->member.user))) {
      r->n_done++;
    }
  } else if (r->status == 200) {
    int nf = op->status == HUBU_STORE_NOT_FOUND, ex = op->status == HUBU_STORE_EXISTS;
    r->status = nf ? 404 : ex ? 409 : 503;
    if (ex)
      snprintf(r->error, sizeof r->error, "%s already exists", r->group);
    else if (nf && op->kind == HUBU_STORE_MEMBER_REMOVE)
      snprintf(r->error, sizeof r->error, "remove %s: not a member of %s", op->member.user, r->group);
    else if (nf && op->kind == HUBU_STORE_MEMBER_ADD)
      snprintf(r->error, sizeof r->error, "add %s: no group %s", op->member.user, r->group);
    else if (nf)
      snprintf(r->error, sizeof r->error, "no group %s", r->group);
    else
      snprintf(r->error, sizeof r->error, "the store failed: %s", op->error);
  }
  hubu_store_op_free(op);
  if (--r->left == 0) group_req_finish(r);
}

/* Splits "a,b,c" into users (validated). The count, or -1 (why in err). */
static int split_users(const char *list, char users[][65], size_t max, char *err, size_t err_size) {
  size_t n = 0;
  for (const char *p = list; p && *p;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (n == max) {
      snprintf(err, err_size, "at most %zu users", max);
      return -1;
    }
    if (!hubu_id_valid(p, len)) {
      snprintf(err, err_size, "users: '%.*s' is not a user id (1-64 bytes of [A-Za-z0-9_.@-])",
               (int)(len > 64 ? 64 : len), p);
      return -1;
    }
    memcpy(users[n], p, len);
    users[n++][len] = '\0';
    p = comma ? comma + 1 : NULL;
  }
  return (int)n;
}

/* POST /v1/admin/group?op=create|add|remove&group=g:NAME&users=a,b and GET
 * /v1/admin/group?group=g:NAME: what `hubuctl group` does to the store,
 * done by the running server, so that every copy of the group it holds in
 * memory follows (no stale FORBIDDEN until a restart) and group.changed
 * fires (by "admin"). Answered once the store has applied it. */
static void handle_group(admin_conn *c, const admin_query *q) {
  static const char *const allowed[] = {"op", "group", "users", NULL};
  if (refuse_unknown_params(c, q, allowed)) return;
  const char *group = query_get(q, "group"), *op = query_get(q, "op"), *list = query_get(q, "users");
  int get = c->parser.method == HTTP_GET;
  if (get) op = "members";
  if (!group || hubu_session_id_check(group, strlen(group)) != HUBU_SESSION_GROUP) {
    respond_error(c, 400, "group must be a group id, g:NAME", NULL);
    return;
  }
  int create = !strcmp(op ? op : "", "create"), add = !strcmp(op ? op : "", "add"),
      remove = !strcmp(op ? op : "", "remove");
  if (!get && !create && !add && !remove) {
    respond_error(c, 400, "op must be create, add or remove (GET lists the members)", NULL);
    return;
  }
  static char users[ADMIN_GROUP_USERS_MAX][65]; /* filled and used before this returns */
  char err[160];
  int n = split_users(list, users, ADMIN_GROUP_USERS_MAX, err, sizeof err);
  if (n < 0) {
    respond_error(c, 400, err, NULL);
    return;
  }
  if ((add || remove) && n == 0) {
    respond_error(c, 400, "users is required: users=a,b", NULL);
    return;
  }
  hubu_server *s = c->admin->server;
  admin_group_req *r = calloc(1, sizeof *r);
  if (r && n) r->done = calloc((size_t)n, sizeof *r->done);
  if (!r || (n && !r->done)) {
    if (r) free(r);
    respond_error(c, 500, "out of memory", NULL);
    return;
  }
  r->conn = c;
  r->server = s;
  r->status = 200;
  snprintf(r->op, sizeof r->op, "%s", op);
  snprintf(r->group, sizeof r->group, "%s", group);
  c->group_req = r;
  hubu_store_op *ops[ADMIN_GROUP_USERS_MAX];
  size_t n_ops = get || create ? 1 : (size_t)n;
  for (size_t i = 0; i < n_ops; i++) {
    hubu_store_op_kind kind = get      ? HUBU_STORE_SESSION_LOAD
                              : create ? HUBU_STORE_SESSION_CREATE
                              : add    ? HUBU_STORE_MEMBER_ADD
                                       : HUBU_STORE_MEMBER_REMOVE;
    hubu_store_op *o = ops[i] = hubu_store_op_new(kind);
    int failed = !o;
    if (o && get) {
      snprintf(o->session_load.session_id, sizeof o->session_load.session_id, "%s", group);
    } else if (o && create) {
      snprintf(o->session_create.session_id, sizeof o->session_create.session_id, "%s", group);
      snprintf(o->session_create.kind, sizeof o->session_create.kind, "group");
      if (n && !(o->session_create.members = calloc((size_t)n, sizeof *o->session_create.members))) failed = 1;
      for (int u = 0; !failed && u < n; u++)
        if (!(o->session_create.members[o->session_create.n_members++] = strdup(users[u]))) failed = 1;
    } else if (o) {
      snprintf(o->member.session_id, sizeof o->member.session_id, "%s", group);
      snprintf(o->member.user, sizeof o->member.user, "%s", users[i]);
      snprintf(o->member.role, sizeof o->member.role, "member");
    }
    if (failed) {
      for (size_t k = 0; k <= i; k++) hubu_store_op_free(ops[k]);
      c->group_req = NULL;
      free(r->done);
      free(r);
      respond_error(c, 500, "out of memory", NULL);
      return;
    }
    o->done = on_group_op_done;
    o->ud = r;
  }
  r->left = (unsigned)n_ops;
  for (size_t i = 0; i < n_ops; i++) hubu_store_submit(s->core.store, ops[i]); /* in order: the store keeps it */
}

/* ---- the guard: who may be answered ---------------------------------------- */

int hubu_admin_authority_parse(const char *s, size_t len, hubu_admin_authority *out) {
  memset(out, 0, sizeof *out);
  out->port = -1;
  size_t end; /* where the name ends */
  if (len > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    char ip[INET6_ADDRSTRLEN];
    unsigned char bin[16];
    size_t n = close ? (size_t)(close - s) - 1 : 0;
    if (n == 0 || n >= sizeof ip) return -1;
    memcpy(ip, s + 1, n);
    ip[n] = '\0';
    if (inet_pton(AF_INET6, ip, bin) != 1) return -1;
    out->name = s + 1;
    out->name_len = n;
    out->ip6 = 1;
    end = n + 2;
  } else {
    for (end = 0; end < len && s[end] != ':'; end++) {
      char ch = s[end];
      if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
        return -1;
    }
    if (end == 0 || end > 253) return -1;
    out->name = s;
    out->name_len = end;
  }
  if (end == len) return 0;
  size_t digits = len - end - 1;
  if (s[end] != ':' || digits == 0 || digits > 5) return -1;
  int port = 0;
  for (size_t i = end + 1; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    port = port * 10 + (s[i] - '0');
  }
  if (port < 1 || port > 65535) return -1;
  out->port = port;
  return 0;
}

int hubu_admin_origin_valid(const char *s, size_t len) {
  size_t scheme = len > 7 && !strncasecmp(s, "http://", 7) ? 7 : len > 8 && !strncasecmp(s, "https://", 8) ? 8 : 0;
  hubu_admin_authority a;
  return scheme && hubu_admin_authority_parse(s + scheme, len - scheme, &a) == 0;
}

/* The next item of a comma-separated list from config.c (no spaces, no empty
 * items); 0 at the end. */
static int list_next(const char **list, const char **item, size_t *len) {
  if (!*list || !**list) return 0;
  *item = *list;
  *len = strcspn(*list, ",");
  *list += *len + ((*list)[*len] == ',');
  return 1;
}

static int text_equal_nocase(const char *a, size_t alen, const char *b, size_t blen) {
  return alen == blen && !strncasecmp(a, b, alen);
}

/* The header's value with surrounding spaces cut (len bytes, not
 * NUL-terminated), or NULL when the request has none. */
static const char *header_value(const admin_conn *c, int which, size_t *len) {
  const admin_header *h = &c->headers[which];
  if (!h->count) return NULL;
  const char *v = (const char *)hubu_buf_head(&h->value);
  size_t n = hubu_buf_size(&h->value);
  while (n && (*v == ' ' || *v == '\t')) v++, n--;
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  *len = n;
  return v;
}

/* 1 when name (an IP literal from a Host header) is the address the
 * connection arrived at: the bound one, or, bound to 0.0.0.0 or ::, the one
 * the client dialled. */
static int is_local_address(admin_conn *c, const char *name, size_t len, int ip6) {
  char text[INET6_ADDRSTRLEN];
  unsigned char want[16];
  if (len >= sizeof text) return 0;
  memcpy(text, name, len);
  text[len] = '\0';
  int family = ip6 ? AF_INET6 : AF_INET;
  if (inet_pton(family, text, want) != 1) return 0;
  struct sockaddr_storage ss;
  int ss_len = sizeof ss;
  if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &ss_len) != 0) return 0;
  const unsigned char *got;
  int got_family = ss.ss_family;
  if (ss.ss_family == AF_INET) {
    got = (const unsigned char *)&((struct sockaddr_in *)&ss)->sin_addr;
  } else if (ss.ss_family == AF_INET6) {
    const struct in6_addr *a6 = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    got = a6->s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) { /* a dual-stack socket's IPv4 client */
      got += 12;
      got_family = AF_INET;
    }
  } else {
    return 0;
  }
  return got_family == family && !memcmp(got, want, family == AF_INET ? 4 : 16);
}

/* 1 when the Host names this listener: the address the connection arrived
 * at, localhost, or an --admin-host item (names compared ignoring ASCII
 * case). A port, when the Host gives one, must be the listener's (or the
 * item's own); a Host without one is judged by its name alone, as a browser
 * leaves the port out only for the scheme's default, where a page on another
 * port cannot send it. */
static int host_names_listener(admin_conn *c, const hubu_admin_authority *h) {
  hubu_admin *a = c->admin;
  int port_ok = h->port < 0 || h->port == a->port;
  if (port_ok && is_local_address(c, h->name, h->name_len, h->ip6)) return 1;
  if (port_ok && !h->ip6 && text_equal_nocase(h->name, h->name_len, "localhost", 9)) return 1;
  const char *list = a->cfg.admin_hosts, *item;
  size_t len;
  while (list_next(&list, &item, &len)) {
    hubu_admin_authority want;
    if (hubu_admin_authority_parse(item, len, &want) != 0 || want.ip6 != h->ip6 ||
        !text_equal_nocase(want.name, want.name_len, h->name, h->name_len))
      continue;
    if (want.port >= 0 ? h->port < 0 || h->port == want.port : port_ok) return 1;
  }
  return 0;
}

/* Answers status with message and counts the refusal; always 1. */
static int refuse(admin_conn *c, admin_refusal why, int status, const char *message, const char *extra_headers) {
  c->admin->refused[why]++;
  hubu_log(HUBU_LOG_DEBUG, 0, NULL, "admin_request_refused", "reason=%s status=%d", refusal_names[why], status);
  respond_error(c, status, message, extra_headers);
  return 1;
}

/* Rules that hold for every request, /healthz too: the Host names this
 * listener (no DNS rebinding), and an Origin, which browsers send on
 * cross-site requests, is one --admin-allow-origin lists. 1 when refused. */
static int refuse_foreign(admin_conn *c) {
  size_t len = 0;
  const char *host = header_value(c, HDR_HOST, &len);
  hubu_admin_authority h;
  if (!host || c->headers[HDR_HOST].count > 1 || c->headers[HDR_HOST].too_long ||
      hubu_admin_authority_parse(host, len, &h) != 0 || !host_names_listener(c, &h))
    return refuse(c, REFUSED_HOST, 403,
                  "the Host header must name this listener: its address, localhost, or an --admin-host name", NULL);
  const char *origin = header_value(c, HDR_ORIGIN, &len);
  if (!origin) return 0;
  const char *list = c->admin->cfg.admin_origins, *item;
  size_t item_len;
  while (c->headers[HDR_ORIGIN].count == 1 && !c->headers[HDR_ORIGIN].too_long && list_next(&list, &item, &item_len)) {
    if (text_equal_nocase(item, item_len, origin, len)) {
      c->cors_origin = item;
      c->cors_origin_len = item_len;
      return 0;
    }
  }
  return refuse(c, REFUSED_ORIGIN, 403,
                "requests from web pages are refused: the Origin is not in --admin-allow-origin", NULL);
}

/* The credentials of an "Authorization: Bearer TOKEN" header (the scheme's
 * case ignored), or NULL. */
static const char *bearer_of(const admin_conn *c, size_t *len) {
  size_t n = 0;
  const char *v = header_value(c, HDR_AUTHORIZATION, &n);
  if (!v || c->headers[HDR_AUTHORIZATION].count > 1 || c->headers[HDR_AUTHORIZATION].too_long || n < 8 ||
      strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
    return NULL;
  size_t i = 6;
  while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
  *len = n - i;
  return i < n ? v + i : NULL;
}

/* With --admin-token, the request must carry it. The SHA-256 of what came is
 * compared with the token's with CRYPTO_memcmp: the time taken says nothing
 * about the token, its length included. 1 when refused (401). */
static int refuse_without_token(admin_conn *c) {
  hubu_admin *a = c->admin;
  if (!a->has_token) return 0;
  size_t len = 0;
  const char *token = bearer_of(c, &len);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (token && EVP_Digest(token, len, digest, &digest_len, EVP_sha256(), NULL) == 1 &&
      digest_len == sizeof a->token_digest && CRYPTO_memcmp(digest, a->token_digest, sizeof a->token_digest) == 0)
    return 0;
  return refuse(c, REFUSED_TOKEN, 401, "this listener needs its token: Authorization: Bearer TOKEN (--admin-token)",
                "WWW-Authenticate: Bearer realm=\"hubud admin\"\r\n");
}

/* A request that changes state must be one a web page cannot send without a
 * CORS preflight: Content-Type application/json, or a bearer token. A simple
 * form post (no type, form-urlencoded, multipart/form-data, text/plain) is
 * refused with 415. 1 when refused. */
static int refuse_simple_post(admin_conn *c) {
  size_t len = 0;
  const char *type = header_value(c, HDR_CONTENT_TYPE, &len);
  if (type && c->headers[HDR_CONTENT_TYPE].count == 1 && !c->headers[HDR_CONTENT_TYPE].too_long) {
    const char *semicolon = memchr(type, ';', len); /* the value is not NUL-terminated */
    size_t n = semicolon ? (size_t)(semicolon - type) : len;
    while (n && (type[n - 1] == ' ' || type[n - 1] == '\t')) n--;
    if (text_equal_nocase(type, n, "application/json", 16)) return 0;
  }
  if (bearer_of(c, &len)) return 0; /* checked by refuse_without_token when a token is set */
  return refuse(c, REFUSED_CONTENT_TYPE, 415,
                "a POST needs Content-Type: application/json (or an Authorization: Bearer header)", NULL);
}

typedef struct {
  const char *path;
  enum http_method method;
  const char *allow; /* the Allow header for 405 */
  void (*run)(admin_conn *c, const admin_query *q);
} admin_route;

static const admin_route routes[] = {
    {"/healthz", HTTP_GET, "Allow: GET\r\n", handle_healthz},
    {"/metrics", HTTP_GET, "Allow: GET\r\n", handle_metrics},
    {"/v1/admin/stats", HTTP_GET, "Allow: GET\r\n", handle_stats},
    {"/v1/admin/cluster", HTTP_GET, "Allow: GET\r\n", handle_cluster},
    {"/v1/admin/conns", HTTP_GET, "Allow: GET\r\n", handle_conns},
    {"/v1/admin/kick", HTTP_POST, "Allow: POST\r\n", handle_kick},
    {"/v1/admin/reload", HTTP_POST, "Allow: POST\r\n", handle_reload},
    {"/v1/admin/plugins", HTTP_GET, "Allow: GET\r\n", handle_plugins},
    {"/v1/admin/group", HTTP_POST, "Allow: GET, POST\r\n", handle_group},
};

/* A complete request: route it and answer. */
static void dispatch(admin_conn *c) {
  const char *url = (const char *)hubu_buf_head(&c->url);
  size_t url_len = hubu_buf_size(&c->url);
  enum http_method method = (enum http_method)c->parser.method;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (url_len == 0 || http_parser_parse_url(url, url_len, method == HTTP_CONNECT, &u) != 0 ||
      !(u.field_set & (1 << UF_PATH))) {
    respond_error(c, 400, "malformed request target", NULL);
    return;
  }
  if (u.field_set & (1 << UF_HOST)) { /* absolute-form: its authority would stand in for Host */
    respond_error(c, 400, "the request target must be a path", NULL);
    return;
  }
  const char *path = url + u.field_data[UF_PATH].off;
  size_t path_len = u.field_data[UF_PATH].len;
  const admin_route *route = NULL;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !route; i++)
    if (strlen(routes[i].path) == path_len && !memcmp(routes[i].path, path, path_len)) route = &routes[i];
  hubu_log(HUBU_LOG_DEBUG, 0, NULL, "admin_request", "method=%s path=%.*s", http_method_str(method),
           (int)(path_len > 200 ? 200 : path_len), path);
  if (refuse_foreign(c)) return;
  if (method == HTTP_OPTIONS && c->cors_origin && route) { /* a preflight from an allowed page: no credentials */
    admin_out none = {0};
    char headers[160];
    snprintf(headers, sizeof headers,
             "Access-Control-Allow-Methods: %s\r\nAccess-Control-Allow-Headers: Authorization, Content-Type\r\n"
             "Access-Control-Max-Age: 600\r\n",
             http_method_str(route->method));
    respond(c, 200, "text/plain; charset=utf-8", &none, headers);
    return;
  }
  if (!(route && route->run == handle_healthz) && refuse_without_token(c)) return;
  if (!route) {
    respond_error(c, 404, "no such endpoint", NULL);
    return;
  }
  if (method != route->method && !(route->run == handle_group && method == HTTP_GET)) {
    respond_error(c, 405, "method not allowed", route->allow);
    return;
  }
  if (method != HTTP_GET && refuse_simple_post(c)) return;
  admin_query *q = malloc(sizeof *q); /* 8 KiB: kept off the loop's stack */
  if (!q) {
    respond_error(c, 500, "out of memory", NULL);
    return;
  }
  const char *why = NULL;
  if (u.field_set & (1 << UF_QUERY))
    why = query_parse(q, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  else
    q->n = 0;
  if (why)
    respond_error(c, 400, why, NULL);
  else
    route->run(c, q);
  free(q);
}

static int on_url(http_parser *p, const char *at, size_t len) {
  admin_conn *c = p->data;
  if (hubu_buf_size(&c->url) + len > ADMIN_MAX_URL) {
    c->error_status = 414;
    return -1;
  }
  return hubu_buf_append(&c->url, at, len) == 0 ? 0 : -1;
}

/* Header names arrive in pieces; only the guard's headers are kept. */
static int on_header_field(http_parser *p, const char *at, size_t len) {
  admin_conn *c = p->data;
  if (c->headers_done) return 0;
  if (c->in_value) {
    c->in_value = 0;
    c->field_len = 0;
  }
  if (c->field_len + len <= sizeof c->field) memcpy(c->field + c->field_len, at, len);
  c->field_len += len;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  admin_conn *c = p->data;
  if (c->headers_done) return 0;
  if (!c->in_value) { /* the first piece: whose value is it? */
    c->in_value = 1;
    c->value_of = -1;
    for (int i = 0; i < HDR_COUNT && c->field_len <= sizeof c->field; i++)
      if (text_equal_nocase(c->field, c->field_len, header_specs[i].name, strlen(header_specs[i].name)))
        c->value_of = i;
    if (c->value_of >= 0 && c->headers[c->value_of].count++) { /* a second one: refused; keep the first */
      c->headers[c->value_of].count = 2;
      c->value_of = -1;
    }
  }
  if (c->value_of < 0) return 0;
  admin_header *h = &c->headers[c->value_of];
  if (h->too_long || hubu_buf_size(&h->value) + len > header_specs[c->value_of].max) {
    h->too_long = 1;
    return 0;
  }
  return hubu_buf_append(&h->value, at, len) == 0 ? 0 : -1;
}

static int on_headers_complete(http_parser *p) {
  admin_conn *c = p->data;
  c->headers_done = 1;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > HUBU_ADMIN_MAX_BODY) {
    c->error_status = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  (void)at;
  admin_conn *c = p->data;
  c->body_len += len; /* no endpoint reads a body: count it, drop it */
  if (c->body_len > HUBU_ADMIN_MAX_BODY) {
    c->error_status = 413;
    return -1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  admin_conn *c = p->data;
  c->complete = 1;
  http_parser_pause(p, 1); /* one request per connection: stop here and answer */
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  admin_conn *c = (admin_conn *)h;
  *buf = uv_buf_init(c->admin->read_buf, sizeof c->admin->read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  admin_conn *c = (admin_conn *)stream;
  if (nread < 0) { /* EOF (after our FIN, the normal end; or a half-close after the request) or an error */
    if (nread == UV_EOF && c->writing)
      c->peer_done = 1; /* the answer is still going out: close when it is written */
    else
      conn_close(c);
    return;
  }
  if (nread == 0 || c->responded || c->closing) return; /* after the response, input is dropped */
  http_parser_execute(&c->parser, &parser_settings, buf->base, (size_t)nread);
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (c->error_status == 413) {
    respond_error(c, 413, "request body larger than 64 KiB", NULL);
  } else if (c->error_status == 414) {
    respond_error(c, 414, "request target longer than 8 KiB", NULL);
  } else if (c->complete) {
    dispatch(c);
  } else if (err == HPE_HEADER_OVERFLOW) {
    respond_error(c, 431, "request headers too large", NULL);
  } else if (err != HPE_OK) {
    char msg[160];
    snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(err));
    hubu_log(HUBU_LOG_DEBUG, 0, NULL, "admin_bad_request", "error=%s", http_errno_name(err));
    respond_error(c, 400, msg, NULL);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  hubu_admin *a = listener->data;
  if (status < 0) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "admin_accept_failed", "error=\"%s\"", uv_strerror(status));
    return;
  }
  admin_conn *c = calloc(1, sizeof *c);
  if (!c) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=admin_accept");
    return;
  }
  c->admin = a;
  uv_tcp_init(listener->loop, &c->tcp);
  a->open_handles++;
  c->next = a->conns;
  if (a->conns) a->conns->prev = c;
  a->conns = c;
  a->n_conns++;
  c->since_ms = uv_now(listener->loop);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  if (a->n_conns > ADMIN_MAX_CONNS) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "admin_refused", "open=%u limit=%d", a->n_conns - 1, ADMIN_MAX_CONNS);
    conn_close(c);
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_close(c);
}

static void on_sweep(uv_timer_t *t) {
  hubu_admin *a = t->data;
  uint64_t now = uv_now(t->loop);
  for (admin_conn *c = a->conns, *next; c; c = next) {
    next = c->next;
    if (!c->responded && now - c->since_ms >= ADMIN_IDLE_MS)
      respond_error(c, 408, "no complete request in time", NULL);
    else if (c->responded && now - c->since_ms >= (c->writing ? ADMIN_WRITE_MS : ADMIN_LINGER_MS))
      conn_close(c);
  }
}

/* ---- the listener ------------------------------------------------------------ */

int hubu_admin_start(hubu_server *s, const hubu_admin_config *cfg) {
  s->admin = NULL;
  if (!cfg->admin_enabled) return 0;
  struct sockaddr_storage addr;
  int r = strchr(cfg->admin_host, ':') ? uv_ip6_addr(cfg->admin_host, cfg->admin_port, (struct sockaddr_in6 *)&addr)
                                       : uv_ip4_addr(cfg->admin_host, cfg->admin_port, (struct sockaddr_in *)&addr);
  if (r != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "listen_failed", "admin=%s:%d error=\"%s\"", cfg->admin_host, cfg->admin_port,
             uv_strerror(r));
    return -1;
  }
  hubu_admin *a = calloc(1, sizeof *a);
  if (!a) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=admin_start");
    return -1;
  }
  a->server = s;
  a->cfg = *cfg;
  a->port = -1;
  if (cfg->admin_token) {
    unsigned int n = 0;
    if (EVP_Digest(cfg->admin_token, cfg->admin_token_len, a->token_digest, &n, EVP_sha256(), NULL) != 1 ||
        n != sizeof a->token_digest) {
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "listen_failed", "admin=%s:%d error=\"cannot hash the admin token\"",
               cfg->admin_host, cfg->admin_port);
      free(a);
      return -1;
    }
    a->has_token = 1;
  }
  uv_tcp_init(s->loop, &a->listener);
  a->listener.data = a;
  a->open_handles = 1;
  r = uv_tcp_bind(&a->listener, (struct sockaddr *)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&a->listener, 64, on_connection);
  if (r != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "listen_failed", "admin=%s:%d error=\"%s\"", cfg->admin_host, cfg->admin_port,
             uv_strerror(r));
    uv_close((uv_handle_t *)&a->listener, on_admin_handle_close); /* frees a */
    return -1;
  }
  struct sockaddr_storage got;
  int len = sizeof got;
  uv_tcp_getsockname(&a->listener, (struct sockaddr *)&got, &len);
  a->port = ntohs(((struct sockaddr_in *)&got)->sin_port); /* same offset for IPv6 */
  uv_timer_init(s->loop, &a->sweep);
  a->sweep.data = a;
  a->open_handles++;
  uv_timer_start(&a->sweep, on_sweep, ADMIN_SWEEP_MS, ADMIN_SWEEP_MS);
  a->started_ms = uv_now(s->loop);
  a->started_wall_ms = hubu_now_ms();
  s->admin = a;
  hubu_log(HUBU_LOG_INFO, 0, NULL, "listening", "admin=%s:%d", cfg->admin_host, a->port);
  if (!cfg->on_loopback) /* hubu_config_parse let it through with a token only */
    hubu_log(HUBU_LOG_WARN, 0, NULL, "admin_exposed",
             "admin=%s:%d note=\"off loopback: the token guards it, but it is plain HTTP: put TLS in front\"",
             cfg->admin_host, a->port);
  return 0;
}

int hubu_admin_port(const hubu_server *s) { return s->admin ? s->admin->port : -1; }

void hubu_admin_set_reload(hubu_server *s, hubu_admin_reload_fn fn, void *ud) {
  if (!s->admin) return;
  s->admin->reload = fn;
  s->admin->reload_ud = ud;
}

void hubu_admin_close(hubu_server *s) {
  hubu_admin *a = s->admin;
  if (!a) return;
  s->admin = NULL;
  while (a->conns) conn_close(a->conns);
  uv_close((uv_handle_t *)&a->listener, on_admin_handle_close);
  uv_close((uv_handle_t *)&a->sweep, on_admin_handle_close);
}

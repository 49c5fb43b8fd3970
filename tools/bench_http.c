/* bench_http.c — `hubu-bench serve-http`: the HTTP service a plugin calls in
 * the HTTP benchmark (tools/bench-http.sh). HTTP/1.1 with keep-alive on
 * 127.0.0.1, parsed by http-parser; every request is answered 200 with a
 * small JSON verdict ({"action":"allow"}) exactly --latency-ms after it was
 * read, in order per connection. It runs until SIGTERM or SIGINT and then
 * prints what it served (one JSON object).
 * Invariant: a connection's memory is freed only once both of its handles
 * (the socket and its timer) are closed. */
#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

int hubu_bench_serve_http(int argc, char **argv);

#define SERVE_QUEUE 256 /* requests of one connection waiting for their answer */

static const char serve_answer[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"action\":\"allow\"}";

typedef struct serve_conn {
  uv_tcp_t tcp; /* first: the handle pointer is the connection's */
  uv_timer_t timer;
  http_parser parser;
  struct serve *server;
  uint64_t due_ms[SERVE_QUEUE]; /* when each waiting request is answered */
  unsigned head, count;
  int open_handles;
  int closing;
} serve_conn;

typedef struct serve {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint;
  uint64_t latency_ms;
  uint64_t requests, answered, connections, refused;
} serve;

static http_parser_settings serve_settings;

static void serve_conn_closed(uv_handle_t *h) {
  serve_conn *c = h->data;
  if (--c->open_handles == 0) free(c);
}

static void serve_conn_close(serve_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, serve_conn_closed);
  uv_close((uv_handle_t *)&c->tcp, serve_conn_closed);
}

static void serve_on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

/* Writes n answers at once (one write for all of them). */
static void serve_answer_n(serve_conn *c, unsigned n) {
  if (n == 0 || c->closing) return;
  size_t one = sizeof serve_answer - 1;
  uv_write_t *w = malloc(sizeof *w + one * n);
  if (!w) {
    serve_conn_close(c);
    return;
  }
  char *buf = (char *)(w + 1);
  for (unsigned i = 0; i < n; i++) memcpy(buf + i * one, serve_answer, one);
  uv_buf_t b = uv_buf_init(buf, (unsigned)(one * n));
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, serve_on_written) != 0) {
    free(w);
    serve_conn_close(c);
    return;
  }
  c->server->answered += n;
}

/* Answers every request that is due, and waits for the next one. */
static void serve_on_timer(uv_timer_t *t) {
  serve_conn *c = t->data;
  uint64_t now = uv_now(&c->server->loop);
  unsigned n = 0;
  while (c->count && c->due_ms[c->head] <= now) {
    c->head = (c->head + 1) % SERVE_QUEUE;
    c->count--;
    n++;
  }
  serve_answer_n(c, n);
  if (c->count && !c->closing) uv_timer_start(&c->timer, serve_on_timer, c->due_ms[c->head] - now, 0);
}

static int serve_on_message(http_parser *p) {
  serve_conn *c = p->data;
  serve *s = c->server;
  s->requests++;
  if (s->latency_ms == 0) {
    serve_answer_n(c, 1);
    return 0;
  }
  if (c->count == SERVE_QUEUE) { /* more pipelined than it keeps: refuse the connection */
    s->refused++;
    return 1;
  }
  c->due_ms[(c->head + c->count) % SERVE_QUEUE] = uv_now(&s->loop) + s->latency_ms;
  if (c->count++ == 0) uv_timer_start(&c->timer, serve_on_timer, s->latency_ms, 0);
  return 0;
}

static void serve_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  static char space[65536]; /* one loop, one read at a time */
  (void)suggested;
  *buf = uv_buf_init(space, sizeof space);
}

static void serve_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  serve_conn *c = (serve_conn *)st;
  if (n < 0) {
    serve_conn_close(c);
    return;
  }
  if (n == 0) return;
  size_t used = http_parser_execute(&c->parser, &serve_settings, buf->base, (size_t)n);
  if (used != (size_t)n || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) serve_conn_close(c);
}

static void serve_on_connection(uv_stream_t *listener, int status) {
  serve *s = listener->data;
  if (status != 0) return;
  serve_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->server = s;
  uv_tcp_init(&s->loop, &c->tcp);
  uv_timer_init(&s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, serve_alloc, serve_on_read) != 0) {
    serve_conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  s->connections++;
}

static void serve_walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  if (h->type == UV_TCP && h->data && h->data != h->loop->data) {
    serve_conn_close(h->data);
  } else if (h->type != UV_TIMER) {
    uv_close(h, NULL);
  }
}

static void serve_on_signal(uv_signal_t *sig, int signum) {
  (void)signum;
  serve *s = sig->data;
  uv_walk(&s->loop, serve_walk_close, NULL);
}

static void serve_usage(FILE *out) {
  fprintf(out,
          "usage: hubu-bench serve-http --port-file FILE [--port P] [--latency-ms MS]\n"
          "  An HTTP/1.1 service on 127.0.0.1 (port 0: any free one, written to FILE) that answers\n"
          "  every request 200 {\"action\":\"allow\"} exactly MS after reading it (default 0),\n"
          "  keep-alive, in order per connection. SIGTERM or SIGINT ends it; it then prints\n"
          "  {\"requests\":N,\"answered\":N,\"connections\":N,\"latency_ms\":MS}.\n");
}

int hubu_bench_serve_http(int argc, char **argv) {
  const char *port_file = NULL;
  long port = 0, latency = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    if (!strcmp(a, "--help")) {
      serve_usage(stdout);
      return 0;
    } else if (!strcmp(a, "--port-file") && v) {
      port_file = v;
    } else if (!strcmp(a, "--port") && v) {
      port = strtol(v, &end, 10);
      if (*end || port < 0 || port > 65535) goto bad;
    } else if (!strcmp(a, "--latency-ms") && v) {
      latency = strtol(v, &end, 10);
      if (*end || latency < 0 || latency > 600000) goto bad;
    } else {
      goto bad;
    }
    i++;
  }
  if (!port_file) goto bad;
  serve *s = calloc(1, sizeof *s);
  if (!s || uv_loop_init(&s->loop) != 0) {
    free(s);
    return 1;
  }
  s->latency_ms = (uint64_t)latency;
  serve_settings.on_message_complete = serve_on_message;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  uv_tcp_init(&s->loop, &s->listener);
  s->listener.data = s;
  s->loop.data = s;
  int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 1024, serve_on_connection);
  struct sockaddr_storage bound;
  int len = sizeof bound;
  if (rc == 0) rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
  if (rc == 0) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port)) < 0 || fclose(f) != 0 ||
        rename(tmp, port_file) != 0) {
      fprintf(stderr, "hubu-bench serve-http: %s: %s\n", port_file, strerror(errno));
      rc = UV_EIO;
    }
  } else {
    fprintf(stderr, "hubu-bench serve-http: listen: %s\n", uv_strerror(rc));
  }
  uv_signal_init(&s->loop, &s->sigterm);
  uv_signal_init(&s->loop, &s->sigint);
  s->sigterm.data = s->sigint.data = s;
  if (rc == 0) {
    uv_signal_start(&s->sigterm, serve_on_signal, SIGTERM);
    uv_signal_start(&s->sigint, serve_on_signal, SIGINT);
  } else {
    uv_walk(&s->loop, serve_walk_close, NULL);
  }
  uv_run(&s->loop, UV_RUN_DEFAULT);
  int closed = uv_loop_close(&s->loop);
  if (rc == 0)
    printf("{\"requests\":%llu,\"answered\":%llu,\"connections\":%llu,\"refused\":%llu,\"latency_ms\":%ld}\n",
           (unsigned long long)s->requests, (unsigned long long)s->answered, (unsigned long long)s->connections,
           (unsigned long long)s->refused, latency);
  free(s);
  return rc == 0 && closed == 0 ? 0 : 1;
bad:
  serve_usage(stderr);
  return 2;
}

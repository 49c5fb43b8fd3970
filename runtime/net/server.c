/* server.c — listeners, admission limits, the sweep timer and the per-turn
 * flush, and the SIGTERM drain. Everything here runs on the loop thread.
 * Invariant: a connection is in server->conns from accept until hubu_conn_destroy,
 * in server->dirty only while it has output to flush this turn, and in
 * server->waiting until a HELLO of it is accepted. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uthash.h>

#include "cluster.h"
#include "conn.h"
#include "host.h"
#include "log.h"
#include "presence.h"
#include "store.h"

struct hubu_ip_count {
  char addr[INET6_ADDRSTRLEN];
  uint32_t count;
  UT_hash_handle hh;
};

static void finish_drain(hubu_server *s);

/* Drops the connection that has waited longest for its HELLO, to give its
 * descriptor to a newer one. 0, or -1 when none waits. */
static int drop_oldest_waiting(hubu_server *s, const char *why) {
  hubu_conn *c = s->waiting;
  if (!c) return -1;
  hubu_log(HUBU_LOG_INFO, c->peer.id, NULL, "conn_dropped", "why=%s waited_ms=%llu waiting=%u open=%u", why,
           (unsigned long long)(uv_now(s->loop) - c->state_since_ms), s->waiting_count, s->conn_count);
  hubu_conn_drop(c, HUBU__V1__CODE__UNAVAILABLE, "server full: connections without HELLO are dropped oldest first", 1);
  return 0;
}

static void on_connection(uv_stream_t *listener, int status) {
  hubu_server *s = listener->data;
  if (status < 0) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "accept_failed", "error=\"%s\" open=%u", uv_strerror(status), s->conn_count);
    /* out of descriptors (the store, plugins or admin took more than their
     * reserve): free one for the next attempt */
    if (status == UV_EMFILE || status == UV_ENFILE) drop_oldest_waiting(s, "out_of_descriptors");
    return;
  }
  hubu_conn_accept(s, listener,
                   listener == (uv_stream_t *)&s->tls_listener     ? HUBU_CONN_TLS
                   : listener == (uv_stream_t *)&s->http_listener  ? HUBU_CONN_WS
                   : listener == (uv_stream_t *)&s->https_listener ? HUBU_CONN_WSS
                                                                   : HUBU_CONN_TCP);
}

uint32_t hubu_server_conn_cap(uint64_t nofile, uint32_t max_conns) {
  uint64_t reserve = 128 + nofile / 16;
  uint64_t cap = nofile > 2 * reserve ? nofile - reserve : nofile / 2;
  if (cap > UINT32_MAX) cap = UINT32_MAX;
  if (max_conns && max_conns < cap) cap = max_conns;
  return (uint32_t)cap;
}

void hubu_server_hello_done(hubu_server *s, hubu_conn *c) {
  if (!c->is_waiting) return;
  if (c->waiting_prev)
    c->waiting_prev->waiting_next = c->waiting_next;
  else
    s->waiting = c->waiting_next;
  if (c->waiting_next)
    c->waiting_next->waiting_prev = c->waiting_prev;
  else
    s->waiting_last = c->waiting_prev;
  c->waiting_prev = c->waiting_next = NULL;
  c->is_waiting = 0;
  s->waiting_count--;
}

Hubu__V1__Code hubu_server_count_ip(hubu_server *s, hubu_conn *c, const char *addr) {
  if (!s->cfg->max_conns_per_ip || c->ip) return HUBU__V1__CODE__OK;
  hubu_ip_count *ip = NULL;
  HASH_FIND_STR(s->per_ip, addr, ip);
  if (ip && ip->count >= s->cfg->max_conns_per_ip) return HUBU__V1__CODE__UNAVAILABLE;
  if (!ip) {
    ip = calloc(1, sizeof *ip);
    if (!ip) return HUBU__V1__CODE__UNAVAILABLE;
    snprintf(ip->addr, sizeof ip->addr, "%s", addr);
    HASH_ADD_STR(s->per_ip, addr, ip);
  }
  ip->count++;
  c->ip = ip;
  return HUBU__V1__CODE__OK;
}

/* Decides whether c may stay; links it either way so it is closed properly.
 * Returns OK or the code to refuse it with. */
Hubu__V1__Code hubu_server_admit(hubu_server *s, hubu_conn *c) {
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  if (s->draining) return HUBU__V1__CODE__SHUTTING_DOWN;
  const hubu_net_config *cfg = s->cfg;
  if (cfg->max_conns_per_ip && !c->proxy_wait) { /* first: an address over its share never pushes others out */
    char addr[INET6_ADDRSTRLEN + 8];
    hubu_conn_remote_name(c, 0, addr, sizeof addr);
    Hubu__V1__Code counted = hubu_server_count_ip(s, c, addr[0] ? addr : "?");
    if (counted != HUBU__V1__CODE__OK) return counted;
  }
  if (s->conn_count >= s->conn_cap && drop_oldest_waiting(s, "conn_cap") != 0) return HUBU__V1__CODE__UNAVAILABLE;
  c->is_counted = 1;
  s->conn_count++;
  /* Pressure: more than a quarter of the cap waits for HELLO. A connection
   * accepted now gets the short HELLO timeout. */
  c->hurried = s->waiting_count > s->conn_cap / 4;
  c->is_waiting = 1;
  c->waiting_prev = s->waiting_last;
  if (s->waiting_last)
    s->waiting_last->waiting_next = c;
  else
    s->waiting = c;
  s->waiting_last = c;
  s->waiting_count++;
  return HUBU__V1__CODE__OK;
}

void hubu_server_forget(hubu_server *s, hubu_conn *c) {
  hubu_server_hello_done(s, c);
  if (c->prev)
    c->prev->next = c->next;
  else if (s->conns == c)
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  if (c->is_dirty) {
    hubu_conn *prev = NULL;
    for (hubu_conn **p = &s->dirty; *p; prev = *p, p = &(*p)->dirty_next) {
      if (*p == c) {
        *p = c->dirty_next;
        if (s->dirty_last == c) s->dirty_last = prev;
        break;
      }
    }
    c->is_dirty = 0;
  }
  if (c->is_counted) {
    s->conn_count--;
    c->is_counted = 0;
  }
  if (c->ip) {
    if (--c->ip->count == 0) {
      HASH_DEL(s->per_ip, c->ip);
      free(c->ip);
    }
    c->ip = NULL;
  }
  if (s->draining && !s->conns) finish_drain(s);
}

static void on_flush(uv_prepare_t *h) {
  hubu_server *s = h->data;
  hubu_conn *c = s->dirty;
  s->dirty = s->dirty_last = NULL;
  while (c) {
    hubu_conn *next = c->dirty_next;
    c->dirty_next = NULL;
    c->is_dirty = 0;
    hubu_conn_flush(c);
    c = next;
  }
  if (!s->dirty) uv_prepare_stop(h);
}

void hubu_server_mark_dirty(hubu_server *s, hubu_conn *c) {
  if (c->is_dirty || c->peer.state == HUBU_PEER_CLOSED) return;
  c->is_dirty = 1; /* first marked, first written: a sender's ACK before its fan-out */
  c->dirty_next = NULL;
  if (s->dirty_last)
    s->dirty_last->dirty_next = c;
  else
    s->dirty = c;
  s->dirty_last = c;
  if (!uv_is_active((uv_handle_t *)&s->flush)) uv_prepare_start(&s->flush, on_flush);
}

hubu_conn *hubu_server_conn_of(hubu_peer *p) { return (hubu_conn *)((char *)p - offsetof(hubu_conn, peer)); }

#define HOUSEKEEPING_MS 1000

static void on_sweep(uv_timer_t *t) {
  hubu_server *s = t->data;
  uint64_t now = uv_now(s->loop);
  if (now - s->last_housekeeping_ms >= HOUSEKEEPING_MS) {
    s->last_housekeeping_ms = now;
    hubu_core_housekeeping(&s->core, now);
    hubu_plugins_save_cursors(s->plugins);
  }
  for (hubu_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    hubu_conn_sweep(c, now);
  }
}

static void on_drain_timeout(uv_timer_t *t) {
  hubu_server *s = t->data;
  hubu_log(HUBU_LOG_WARN, 0, NULL, "drain_timeout", "open=%u", s->conn_count);
  while (s->conns) hubu_conn_destroy(s->conns);
}

static void close_if_open(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

static void finish_drain(hubu_server *s) {
  if (s->draining == 2) return;
  s->draining = 2;
  hubu_log(HUBU_LOG_INFO, 0, NULL, "shutdown", "state=drained");
  hubu_presence_save_cursors(&s->core);
  if (s->on_drained) s->on_drained(s, s->on_drained_ud); /* /healthz said 503 "draining" until now */
  hubu_plugins_save_cursors(s->plugins);
  s->core.hooks = (hubu_hooks){0}; /* core hands no more events to the host */
  hubu_plugins_close(s->plugins);
  s->plugins = NULL;
  hubu_store_close(s->core.store); /* finishes every queued op, then closes its handle */
  s->core.store = NULL;
  close_if_open((uv_handle_t *)&s->sweep);
  close_if_open((uv_handle_t *)&s->flush);
  close_if_open((uv_handle_t *)&s->sigterm);
  close_if_open((uv_handle_t *)&s->sigint);
  close_if_open((uv_handle_t *)&s->drain_timer);
}

void hubu_server_drain(hubu_server *s, const char *why) {
  if (s->draining) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "shutdown", "state=forced why=%s", why);
    while (s->conns) hubu_conn_destroy(s->conns);
    return;
  }
  s->draining = 1;
  hubu_log(HUBU_LOG_INFO, 0, NULL, "shutdown", "state=draining why=%s open=%u", why, s->conn_count);
  close_if_open((uv_handle_t *)&s->tcp_listener);
  if (s->tls_listening) close_if_open((uv_handle_t *)&s->tls_listener);
  if (s->http_listening) close_if_open((uv_handle_t *)&s->http_listener);
  if (s->https_listening) close_if_open((uv_handle_t *)&s->https_listener);
  for (hubu_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (c->peer.state < HUBU_PEER_CLOSING)
      hubu_conn_goaway(c, HUBU__V1__CODE__SHUTTING_DOWN, "server shutting down", 1000);
  }
  if (!s->conns) {
    finish_drain(s);
    return;
  }
  uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg->drain_ms, 0);
}

static void on_signal(uv_signal_t *h, int signum) {
  hubu_server_drain(h->data, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static int listen_on(hubu_server *s, uv_tcp_t *tcp, const char *host, int port, int *bound_port) {
  struct sockaddr_storage addr;
  int r = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                            : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (r == 0) r = uv_tcp_init(s->loop, tcp);
  if (r != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "listen_failed", "addr=%s:%d error=\"%s\"", host, port, uv_strerror(r));
    return -1;
  }
  tcp->data = s;
  r = uv_tcp_bind(tcp, (struct sockaddr *)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)tcp, 1024, on_connection);
  if (r != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "listen_failed", "addr=%s:%d error=\"%s\"", host, port, uv_strerror(r));
    uv_close((uv_handle_t *)tcp, NULL);
    return -1;
  }
  struct sockaddr_storage got;
  int len = sizeof got;
  uv_tcp_getsockname(tcp, (struct sockaddr *)&got, &len);
  *bound_port = ntohs(((struct sockaddr_in *)&got)->sin_port); /* same offset for IPv6 */
  return 0;
}

int hubu_server_start(hubu_server *s, uv_loop_t *loop, const hubu_net_config *cfg) {
  s->loop = loop;
  s->cfg = cfg;
  int tcp_port = 0, tls_port = -1;
  if (cfg->tls_enabled || cfg->https_enabled) { /* one certificate for both listeners */
    char err[256];
    s->tls_ctx = hubu_tls_server_ctx_new(cfg->cert_file, cfg->key_file, err, sizeof err);
    if (!s->tls_ctx) {
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "tls_setup_failed", "cert=%s key=%s error=\"%s\"", cfg->cert_file,
               cfg->key_file, err);
      return -1;
    }
    if (hubu_tls_server_ctx_set_ciphers(s->tls_ctx, cfg->tls_ciphers, cfg->tls_ciphersuites, err, sizeof err) != 0) {
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "tls_setup_failed", "tls_ciphers=\"%s\" tls_ciphersuites=\"%s\" error=\"%s\"",
               cfg->tls_ciphers ? cfg->tls_ciphers : "", cfg->tls_ciphersuites ? cfg->tls_ciphersuites : "", err);
      SSL_CTX_free(s->tls_ctx);
      s->tls_ctx = NULL;
      return -1;
    }
  }
  struct rlimit rl;
  uint64_t nofile =
      getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (uint64_t)rl.rlim_cur : UINT32_MAX;
  s->conn_cap = hubu_server_conn_cap(nofile, cfg->max_conns);
  if (cfg->max_conns && s->conn_cap < cfg->max_conns)
    hubu_log(HUBU_LOG_WARN, 0, NULL, "max_conns_lowered", "max_conns=%u conns=%u nofile=%llu", cfg->max_conns,
             s->conn_cap, (unsigned long long)nofile);
  else
    hubu_log(HUBU_LOG_INFO, 0, NULL, "conn_cap", "conns=%u nofile=%llu", s->conn_cap, (unsigned long long)nofile);
  if (listen_on(s, &s->tcp_listener, cfg->listen_host, cfg->listen_port, &tcp_port) != 0) return -1;
  if (cfg->tls_enabled) {
    if (listen_on(s, &s->tls_listener, cfg->tls_host, cfg->tls_port, &tls_port) != 0) {
      uv_close((uv_handle_t *)&s->tcp_listener, NULL);
      return -1;
    }
    s->tls_listening = 1;
  }
  int http_port = -1;
  if (cfg->http_enabled) {
    if (listen_on(s, &s->http_listener, cfg->http_host, cfg->http_port, &http_port) != 0) {
      uv_close((uv_handle_t *)&s->tcp_listener, NULL);
      if (s->tls_listening) uv_close((uv_handle_t *)&s->tls_listener, NULL);
      s->tls_listening = 0;
      return -1;
    }
    s->http_listening = 1;
  }
  int https_port = -1;
  if (cfg->https_enabled) {
    if (listen_on(s, &s->https_listener, cfg->https_host, cfg->https_port, &https_port) != 0) {
      uv_close((uv_handle_t *)&s->tcp_listener, NULL);
      if (s->tls_listening) uv_close((uv_handle_t *)&s->tls_listener, NULL);
      if (s->http_listening) uv_close((uv_handle_t *)&s->http_listener, NULL);
      s->tls_listening = s->http_listening = 0;
      return -1;
    }
    s->https_listening = 1;
  }
  s->https_port = https_port;
  s->tcp_port = tcp_port;
  s->tls_port = tls_port;
  s->http_port = http_port;
  uv_timer_init(loop, &s->sweep);
  uv_prepare_init(loop, &s->flush);
  uv_signal_init(loop, &s->sigterm);
  uv_signal_init(loop, &s->sigint);
  uv_timer_init(loop, &s->drain_timer);
  s->sweep.data = s->flush.data = s->sigterm.data = s->sigint.data = s->drain_timer.data = s;
  uint32_t shortest = cfg->heartbeat_ms < cfg->hello_timeout_ms ? cfg->heartbeat_ms : cfg->hello_timeout_ms;
  if (cfg->write_stall_ms && cfg->write_stall_ms < shortest) shortest = cfg->write_stall_ms;
  uint32_t every = shortest / 4;
  if (every < 10) every = 10;
  if (every > 1000) every = 1000;
  uv_timer_start(&s->sweep, on_sweep, every, every);
  uv_signal_start(&s->sigterm, on_signal, SIGTERM);
  uv_signal_start(&s->sigint, on_signal, SIGINT);

  hubu_log(HUBU_LOG_INFO, 0, NULL, "listening", "tcp=%s:%d", cfg->listen_host, tcp_port);
  if (cfg->tls_enabled) hubu_log(HUBU_LOG_INFO, 0, NULL, "listening", "tls=%s:%d", cfg->tls_host, tls_port);
  if (cfg->http_enabled) hubu_log(HUBU_LOG_INFO, 0, NULL, "listening", "http=%s:%d", cfg->http_host, http_port);
  if (cfg->https_enabled) hubu_log(HUBU_LOG_INFO, 0, NULL, "listening", "https=%s:%d", cfg->https_host, https_port);
  return 0;
}

void hubu_server_abort(hubu_server *s) {
  close_if_open((uv_handle_t *)&s->tcp_listener);
  if (s->tls_listening) close_if_open((uv_handle_t *)&s->tls_listener);
  if (s->http_listening) close_if_open((uv_handle_t *)&s->http_listener);
  if (s->https_listening) close_if_open((uv_handle_t *)&s->https_listener);
  close_if_open((uv_handle_t *)&s->sweep);
  close_if_open((uv_handle_t *)&s->flush);
  close_if_open((uv_handle_t *)&s->sigterm);
  close_if_open((uv_handle_t *)&s->sigint);
  close_if_open((uv_handle_t *)&s->drain_timer);
}

void hubu_server_free(hubu_server *s) {
  hubu_core_free(&s->core);
  hubu_ip_count *ip, *tmp;
  HASH_ITER(hh, s->per_ip, ip, tmp) {
    HASH_DEL(s->per_ip, ip);
    free(ip);
  }
  SSL_CTX_free(s->tls_ctx);
  s->tls_ctx = NULL;
}

int hubu_server_health(hubu_server *s, char *text, size_t size) {
  char why[200];
  if (s->draining) {
    snprintf(text, size, "draining\n");
    return 503;
  }
  if (s->core.store && !hubu_store_healthy(s->core.store, why, sizeof why)) {
    snprintf(text, size, "degraded: store: %s\n", why);
    return 503;
  }
  if (s->cluster && !hubu_cluster_healthy(s->cluster, why, sizeof why)) {
    snprintf(text, size, "degraded: cluster: %s\n", why);
    return 503;
  }
  snprintf(text, size, "ok\n");
  return 200;
}

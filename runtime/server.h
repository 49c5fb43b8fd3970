/* server.h — hubud's listeners and the set of live connections on one loop. */
#ifndef HUBU_SERVER_H
#define HUBU_SERVER_H

#include <openssl/ssl.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "hubu.pb-c.h"

typedef struct hubu_conn hubu_conn;
typedef struct hubu_ip_count hubu_ip_count;

#define HUBU_READ_BUF_SIZE 65536

typedef struct hubu_server {
  uv_loop_t *loop;
  const hubu_config *cfg;
  uv_tcp_t tcp_listener;
  uv_tcp_t tls_listener;
  int tls_listening;
  SSL_CTX *tls_ctx; /* owned; NULL without --tls-listen */
  uv_timer_t sweep; /* heartbeats, HELLO timeouts, lingering closes */
  uv_prepare_t flush; /* one write per dirty connection per loop turn */
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_timer_t drain_timer;
  hubu_conn *conns;       /* every open connection (intrusive list) */
  hubu_conn *dirty;       /* connections with output to flush this turn */
  uint32_t conn_count;    /* connections counted against --max-conns */
  uint64_t next_conn_id;
  hubu_ip_count *per_ip;  /* uthash table; only with --max-conns-per-ip */
  int draining;
  int read_buf_busy;      /* the loop-wide read buffer is handed out */
  uint8_t read_buf[HUBU_READ_BUF_SIZE]; /* every read lands here first */
} hubu_server;

/* Binds the listeners and starts the timers and signal handlers. 0 or -1
 * (logged). */
int hubu_server_start(hubu_server *s, uv_loop_t *loop, const hubu_config *cfg);

/* Stops accepting, sends GOAWAY SHUTTING_DOWN to every connection and closes
 * them once flushed (or when --drain-ms runs out); the loop then ends. */
void hubu_server_drain(hubu_server *s, const char *why);

/* Frees what hubu_server_start made that is not a handle (after uv_run). */
void hubu_server_free(hubu_server *s);

/* Connection bookkeeping used by conn.c. */
void hubu_server_mark_dirty(hubu_server *s, hubu_conn *c);
/* Links c into the server and applies the limits: OK, or the code to refuse with. */
Hubu__V1__Code hubu_server_admit(hubu_server *s, hubu_conn *c);
void hubu_server_forget(hubu_server *s, hubu_conn *c);

#endif

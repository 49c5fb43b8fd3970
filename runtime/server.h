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
typedef struct hubu_store hubu_store;
typedef struct hubu_session hubu_session;
typedef struct hubu_user hubu_user;
typedef struct hubu_device hubu_device;
typedef struct hubu_admin hubu_admin;

typedef struct {
  uint64_t sends_received;
  uint64_t messages_stored;
  uint64_t pulls_from_tail;
  uint64_t pulls_from_store;
} hubu_server_stats;

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
  hubu_conn *dirty;       /* connections with output to flush this turn, in marking order */
  hubu_conn *dirty_last;
  uint32_t conn_count;    /* connections counted against --max-conns */
  uint64_t next_conn_id;
  hubu_ip_count *per_ip;  /* uthash table; only with --max-conns-per-ip */
  int draining;
  hubu_store *store;      /* not owned: main opens and closes it */
  struct hubu_plugins *plugins; /* owned: the plugin host (closed in the drain) */
  hubu_session *sessions; /* uthash, owned */
  hubu_user *users;       /* uthash, owned: users with connections */
  hubu_device *devices;   /* uthash, owned */
  uint64_t msg_id_ms;     /* msg_id generator: last millisecond used */
  uint32_t msg_id_counter;
  uint64_t last_housekeeping_ms;
  hubu_server_stats stats;
  hubu_admin *admin;      /* the admin listener (admin.c owns it); NULL when off or closed */
  uint8_t read_buf[HUBU_READ_BUF_SIZE]; /* every read lands here first */
} hubu_server;

/* Binds the listeners and starts the timers and signal handlers. 0 or -1
 * (logged). */
int hubu_server_start(hubu_server *s, uv_loop_t *loop, const hubu_config *cfg, hubu_store *store);

/* The open, authenticated connection of user with this id, or NULL. */
hubu_conn *hubu_server_conn_find(hubu_server *s, const char *user, uint64_t conn_id);

/* A msg_id unique across the deployment: milliseconds since 2025-01-01 (41
 * bits) | node id (10 bits) | counter (12 bits), never decreasing. */
uint64_t hubu_server_next_msg_id(hubu_server *s);

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

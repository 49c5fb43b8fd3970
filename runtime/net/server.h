/* server.h — hubud's client listeners (TCP, TLS, HTTP/WebSocket) and the set of live
 * connections on one loop, each a core peer; admission limits, the sweep, the
 * per-turn flush and the SIGTERM drain. */
#ifndef HUBU_SERVER_H
#define HUBU_SERVER_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core.h"
#include "hubu.pb-c.h"

typedef struct hubu_conn hubu_conn;
typedef struct hubu_ip_count hubu_ip_count;
typedef struct hubu_store hubu_store;
typedef struct hubu_server hubu_server;
struct hubu_plugins;

/* The settings net reads; main fills them from flags and hubu.lua. */
typedef struct {
  char listen_host[64];
  int listen_port; /* 0: ephemeral */
  int tls_enabled;
  char tls_host[64];
  int tls_port;
  const char *cert_file;
  const char *key_file;
  const uint8_t *secret; /* the token secret (not owned) */
  size_t secret_len;
  uint32_t max_frame;
  uint32_t heartbeat_ms;
  uint32_t hello_timeout_ms;
  uint32_t hello_timeout_pressure_ms; /* ... for connections accepted while many wait for HELLO */
  uint32_t hello_max_frame;           /* largest frame body before HELLO_OK */
  uint32_t max_conns;                 /* 0: derived from RLIMIT_NOFILE */
  uint32_t max_conns_per_ip;          /* 0: unlimited */
  size_t write_queue_max;             /* per connection: stop reading above it */
  uint32_t write_stall_ms;            /* a connection paused by backpressure this long is closed */
  uint32_t drain_ms;
  uint32_t max_pending_sends;    /* SENDs of one connection awaiting their ACK before its input pauses */
  size_t max_pending_send_bytes; /* ... and their frame bytes */
  const char *tls_ciphers;       /* TLS 1.2 cipher list; NULL: tls.c's ECDHE+AEAD default */
  const char *tls_ciphersuites;  /* TLS 1.3 suites; NULL: tls.c's default */
  int http_enabled;              /* the HTTP listener (WebSocket at /ws) */
  char http_host[64];
  int http_port;
  int https_enabled; /* the same inside TLS (--https-listen, with --cert and --key) */
  char https_host[64];
  int https_port;
  const char *ws_origins; /* --ws-origins: browser Origins allowed at /ws, "scheme://host[:port],..."; NULL: any */
  int dev_login;          /* --dev-login on: POST /v1/dev/token mints a token for any user (development only) */
  const char *web_root;   /* --web-root DIR: the chat page's files from DIR; NULL: those built in */
  /* listeners whose connections start with a PROXY header: bits 1 << hubu_conn_kind */
  unsigned proxy_protocol;
} hubu_net_config;

#define HUBU_READ_BUF_SIZE 65536

typedef struct hubu_server {
  uv_loop_t *loop;
  const hubu_net_config *cfg;
  hubu_core core; /* sessions, presence, devices: what the connections share */
  uv_tcp_t tcp_listener;
  uv_tcp_t tls_listener;
  int tls_listening;
  uv_tcp_t http_listener;
  int http_listening;
  uv_tcp_t https_listener;
  int https_listening;
  int tcp_port, tls_port; /* bound ports (tls_port -1 without TLS) */
  int http_port;          /* -1 without the HTTP listener */
  int https_port;         /* -1 without the HTTPS listener */
  SSL_CTX *tls_ctx;       /* owned; NULL without --tls-listen and --https-listen */
  uv_timer_t sweep;       /* heartbeats, HELLO timeouts, lingering closes */
  uv_prepare_t flush;     /* one write per dirty connection per loop turn */
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_timer_t drain_timer;
  hubu_conn *conns; /* every open connection (intrusive list) */
  hubu_conn *dirty; /* connections with output to flush this turn, in marking order */
  hubu_conn *dirty_last;
  hubu_conn *waiting; /* not logged in (closing ones too), oldest first: dropped first at the cap */
  hubu_conn *waiting_last;
  uint32_t waiting_count;
  uint32_t conn_count; /* connections counted against conn_cap */
  uint32_t conn_cap;   /* --max-conns, held below RLIMIT_NOFILE (with room for the store, plugins, admin) */
  uint64_t next_conn_id;
  hubu_ip_count *per_ip; /* uthash table; only with --max-conns-per-ip */
  /* connections refused for a missing, late or invalid PROXY header */
  uint64_t proxy_refused;
  int draining;
  struct hubu_plugins *plugins; /* owned: the plugin host (closed in the drain) */
  struct hubu_cluster *cluster; /* main's: cluster mode (runtime/cluster/); NULL: one node */
  struct hubu_admin *admin;     /* the admin listener (admin/ sets and closes it); NULL when off */
  uint64_t last_housekeeping_ms;
  /* Called once every connection has drained, before the plugins and the
   * store close (main closes the admin listener here). */
  void (*on_drained)(hubu_server *s, void *ud);
  void *on_drained_ud;
  uint8_t read_buf[HUBU_READ_BUF_SIZE]; /* every read lands here first */
} hubu_server;

/* Binds the listeners and starts the timers and signal handlers; core must
 * be initialised. 0 or -1 (logged). */
int hubu_server_start(hubu_server *s, uv_loop_t *loop, const hubu_net_config *cfg);

/* Closes what hubu_server_start opened when the start cannot go on (a later
 * step failed): the loop can then end. */
void hubu_server_abort(hubu_server *s);

/* The connection behind a peer of this server. */
hubu_conn *hubu_server_conn_of(hubu_peer *p);

/* Stops accepting, sends GOAWAY SHUTTING_DOWN to every connection and closes
 * them once flushed (or when --drain-ms runs out); the loop then ends. */
void hubu_server_drain(hubu_server *s, const char *why);

/* Frees what hubu_server_start made that is not a handle (after uv_run). */
void hubu_server_free(hubu_server *s);

/* What /healthz answers, on the HTTP and the admin listener: 200 "ok", or
 * 503 "draining", "degraded: store: WHY" (the database is unreachable) or
 * "degraded: cluster: WHY" (Redis or the node bus). text gets the body, with
 * its newline. Returns the status. */
int hubu_server_health(hubu_server *s, char *text, size_t size);

/* Connection bookkeeping used by conn.c. */
void hubu_server_mark_dirty(hubu_server *s, hubu_conn *c);
/* Links c into the server and applies the limits: OK, or the code to refuse
 * with. At the connection cap the oldest connection still waiting for HELLO
 * is dropped to make room; only when there is none is c refused. */
Hubu__V1__Code hubu_server_admit(hubu_server *s, hubu_conn *c);
/* Counts c under its client's address addr for --max-conns-per-ip: at
 * accept, or once a PROXY header said who the client is (a connection that
 * waits for one is not counted under its proxy's address). OK, or
 * UNAVAILABLE when the address is at its limit. */
Hubu__V1__Code hubu_server_count_ip(hubu_server *s, hubu_conn *c, const char *addr);
/* c no longer waits for HELLO: its HELLO was accepted (or c is gone). */
void hubu_server_hello_done(hubu_server *s, hubu_conn *c);
void hubu_server_forget(hubu_server *s, hubu_conn *c);

/* The connection cap for a descriptor limit of nofile (RLIMIT_NOFILE's soft
 * limit) and --max-conns (0: none given): below nofile by a reserve of
 * 128 + nofile / 16 descriptors for the store, plugins, admin listener and
 * the loop itself. */
uint32_t hubu_server_conn_cap(uint64_t nofile, uint32_t max_conns);

#endif

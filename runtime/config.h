/* config.h — hubud's settings: defaults, then the Lua config file
 * (config_file.h), then flags; both go through hubu_config_apply. */
#ifndef HUBU_CONFIG_H
#define HUBU_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char listen_host[64];
  int listen_port; /* 0: ephemeral (see port_file) */
  int tls_enabled;
  char tls_host[64];
  int tls_port;
  int http_enabled;   /* 0 with --http-listen off */
  char http_host[64]; /* the HTTP listener (WebSocket at /ws) */
  int http_port;      /* 0: ephemeral (the port file gets "http PORT") */
  int https_enabled;  /* --https-listen: HTTP and WebSocket inside TLS (--cert, --key) */
  char https_host[64];
  int https_port;         /* 0: ephemeral (the port file gets "https PORT") */
  const char *ws_origins; /* --ws-origins: browser Origins allowed at /ws, "scheme://host[:port],..."; NULL: any */
  int dev_login;          /* --dev-login on: POST /v1/dev/token mints tokens for anyone (development only) */
  const char *web_root;   /* --web-root DIR: the chat page from DIR; NULL: the files built in */
  /* --proxy-protocol: listeners that require a PROXY header, 1 << hubu_conn_kind
   * (bit 0 tcp, 1 tls, 2 http); 0: none */
  unsigned proxy_protocol;
  const char *cert_file;
  const char *key_file;
  const char *data_dir;
  const char *store_url;     /* --store URL; NULL: sqlite:DATA/hubu.db */
  const char *cluster_url;   /* --cluster redis://...: cluster mode (runtime/cluster/); NULL: one node */
  uint32_t cluster_lease_ms; /* the node's lease in Redis */
  uint32_t pull_settle_ms;   /* cluster mode: a hole is proven once the message above it is this old */
  const char *plugins_dir;
  const char *secret_arg; /* --secret as given: literal or @FILE; NULL: DIR/secret */
  uint8_t *secret;        /* owned; loaded by hubu_config_load_secret */
  size_t secret_len;
  int secret_generated; /* 1 when this start wrote a fresh development secret */
  int log_level;
  uint32_t max_frame;
  uint32_t heartbeat_ms;
  uint32_t hello_timeout_ms;
  uint32_t hello_timeout_pressure_ms; /* ... for connections accepted while many wait for HELLO */
  uint32_t hello_max_frame;           /* largest frame body before HELLO_OK */
  uint32_t write_stall_ms;            /* a connection paused by backpressure this long is closed */
  const char *tls_ciphers;            /* --tls-ciphers: TLS 1.2 cipher list; NULL: the ECDHE+AEAD default */
  const char *tls_ciphersuites;       /* --tls-ciphersuites: TLS 1.3 suites; NULL: the default */
  uint32_t max_conns;                 /* 0: derived from RLIMIT_NOFILE */
  uint32_t max_conns_per_ip;          /* 0: unlimited */
  size_t write_queue_max;             /* per connection: stop reading above it */
  uint32_t drain_ms;
  const char *port_file;
  int fsync;                     /* hubu_fsync_mode: always | batch (default) | off */
  uint32_t node_id;              /* 0-1023, part of every msg_id */
  uint32_t max_inflight;         /* unacknowledged messages per connection before PULL_HINT */
  size_t max_inflight_bytes;     /* ... and bytes */
  uint32_t ack_timeout_ms;       /* retransmit unacknowledged pushes after this */
  uint32_t pull_limit_max;       /* cap on PullRequest.limit */
  uint32_t plugin_budget_ms;     /* longest a hook call may run before it is aborted */
  uint32_t plugin_memory_max;    /* MiB the plugin state may hold; an allocation past it fails */
  uint32_t max_pending_sends;    /* SENDs of one connection awaiting their ACK before its input pauses */
  size_t max_pending_send_bytes; /* ... and their frame bytes */
  size_t tail_cache_bytes;       /* bytes the tails of recent messages hold, all sessions together */
  uint32_t session_cache_max;    /* sessions kept in memory */
  int admin_enabled;             /* 0 with --admin-listen off */
  char admin_host[64];           /* admin HTTP listener (runtime/admin.c), loopback by default */
  int admin_port;                /* 0: ephemeral (the port file gets "admin PORT") */
  const char *admin_hosts;       /* --admin-host: more names a Host header may give, "name[:port],..."; NULL: none */
  const char *admin_origins;     /* --admin-allow-origin: Origins let through, "scheme://host[:port],..."; NULL: none */
  const char *admin_token_arg;   /* --admin-token as given: literal or @FILE; NULL: no token */
  uint8_t *admin_token;          /* owned; read by hubu_config_parse, wiped by hubu_config_free */
  size_t admin_token_len;
  const char *config_file; /* --config FILE, or ./hubu.lua when it exists; NULL: none */
  char **owned;            /* strings from the config file that fields above point to */
  size_t n_owned;
} hubu_config;

/* Fills cfg with defaults, then the config file's settings (--config FILE, or
 * ./hubu.lua when it exists; --config off: none), then argv, then reads the
 * admin token. Refuses an admin listener off loopback without a token.
 * Returns 0, 1 for --help (usage printed), or -1 with a message in err (cfg
 * freed). */
int hubu_config_parse(hubu_config *cfg, int argc, char **argv, char *err, size_t err_size);

/* The defaults alone (cfg zeroed first). */
void hubu_config_defaults(hubu_config *cfg);

/* One setting, as the flag ("--heartbeat-ms") and its value. The value is
 * kept by pointer: it must outlive cfg (argv, or hubu_config_own). A list
 * setting (--admin-host, --admin-allow-origin) takes comma-separated items
 * and adds them to what it holds. Returns 0, -1 for an unknown flag, -2 for
 * an invalid value; err says which. */
int hubu_config_apply(hubu_config *cfg, const char *flag, const char *value, char *err, size_t err_size);

/* A copy of s that lives until hubu_config_free; NULL when out of memory. */
const char *hubu_config_own(hubu_config *cfg, const char *s);

/* Loads the token secret: --secret literal, --secret @FILE, or DATA/secret,
 * generating the latter (random, mode 0600) when missing. 0 or -1 (err). */
int hubu_config_load_secret(hubu_config *cfg, char *err, size_t err_size);

/* 1 when the admin listener is bound to a loopback address (127.0.0.0/8,
 * ::1, or ::ffff:127.x.y.z), else 0. */
int hubu_config_admin_on_loopback(const hubu_config *cfg);

void hubu_config_free(hubu_config *cfg);

void hubu_config_usage(const char *argv0);

#endif

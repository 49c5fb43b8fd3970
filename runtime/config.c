/* config.c — flags to hubu_config, the token secret and the admin token.
 * Runs before the loop starts, so the file I/O here never blocks a
 * connection; an admin listener off loopback without a token never starts. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "config_file.h"
#include "frame.h"
#include "host.h"
#include "log.h"
#include "secret.h"

void hubu_config_usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [options]\n"
          "  --config FILE|off         Lua config file: every flag as a setting, plugin sections\n"
          "                            (default ./hubu.lua when it exists; flags override it)\n"
          "  --listen HOST:PORT        TCP listener (default 127.0.0.1:7700; port 0: ephemeral)\n"
          "  --tls-listen HOST:PORT    TLS listener (needs --cert and --key)\n"
          "  --http-listen HOST:PORT|off  HTTP listener: WebSocket at /ws, subprotocol hubu.v1\n"
          "                            (default 127.0.0.1:7780)\n"
          "  --https-listen HOST:PORT  the same inside TLS (needs --cert and --key): https:// and wss://\n"
          "  --ws-origins ORIGIN[,...] browser Origins allowed at /ws (default any; no Origin is always allowed)\n"
          "  --web-root DIR            serve the chat page at / from DIR (default: the files built in)\n"
          "  --dev-login on|off        POST /v1/dev/token mints a token for any user name: a development\n"
          "                            server only, never one others reach (default off)\n"
          "  --proxy-protocol LISTENER[,...]|off  listeners (tcp, tls, http, https) behind a proxy that sends a\n"
          "                            PROXY protocol v1 or v2 header first; one without it is refused\n"
          "                            (default off; docs/deploy.md)\n"
          "  --cert FILE --key FILE    PEM certificate chain and private key\n"
          "  --tls-ciphers LIST        TLS 1.2 cipher list (default ECDHE with AES-GCM or ChaCha20-Poly1305)\n"
          "  --tls-ciphersuites LIST   TLS 1.3 suites (default TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:\n"
          "                            TLS_CHACHA20_POLY1305_SHA256)\n"
          "  --data DIR                data directory (default ./data)\n"
          "  --store URL               the store: sqlite:PATH (default sqlite:DATA/hubu.db), or\n"
          "                            mariadb://USER@HOST[:PORT]/DB with the password from ?password_file=PATH,\n"
          "                            $HUBU_STORE_PASSWORD or USER:PASS@ (docs/store.md)\n"
          "  --plugins DIR             plugin directory (default ./plugins)\n"
          "  --secret SECRET|@FILE     token secret (default DIR/secret, generated once)\n"
          "  --log-level LEVEL         debug|info|warn|error (default info)\n"
          "  --max-frame BYTES         largest frame body accepted (default 1048576)\n"
          "  --heartbeat-ms N          idle time before a server PING (default 30000)\n"
          "  --hello-timeout-ms N      time allowed before HELLO (default 10000)\n"
          "  --hello-timeout-pressure-ms N  ... for connections accepted while over a quarter of the\n"
          "                            connection cap waits for HELLO (default 2000)\n"
          "  --hello-max-frame BYTES   largest frame body before HELLO_OK (default 4096)\n"
          "  --max-conns N             connections in total (default 0: RLIMIT_NOFILE less a reserve)\n"
          "  --max-conns-per-ip N      connections per client address (default 0: unlimited)\n"
          "  --write-queue-max BYTES   per-connection output cap before reads pause (default 4194304)\n"
          "  --write-stall-ms N        close a connection whose output has not drained for N ms (default 30000)\n"
          "  --drain-ms N              SIGTERM drain budget (default 5000)\n"
          "  --port-file FILE          write 'tcp PORT' / 'tls PORT' / 'http PORT' once listening\n"
          "  --fsync always|batch|off  durability of the store (default batch: one durable commit per batch)\n"
          "  --node-id N               0-1023, part of every msg_id; unique per node in a cluster (default 0)\n"
          "  --cluster redis://[:PASS@]HOST[:PORT][/DB]  cluster mode: seqs, presence and the node bus in\n"
          "                            this Redis; needs a shared --store mariadb://... (default: one node)\n"
          "  --cluster-lease-ms N      the node's lease in Redis: other nodes stop routing to it N ms\n"
          "                            after it stops refreshing (default 5000)\n"
          "  --pull-settle-ms N        cluster mode: a missing seq is proven a hole once the message\n"
          "                            above it is N ms old (default 2000)\n"
          "  --max-inflight N          unacknowledged pushes per connection before PULL_HINT (default 256)\n"
          "  --max-inflight-bytes N    ... and bytes (default 1048576)\n"
          "  --ack-timeout-ms N        retransmit unacknowledged pushes after N ms (default 10000)\n"
          "  --pull-limit-max N        cap on a PULL's limit (default 500)\n"
          "  --admin-listen HOST:PORT|off  admin HTTP listener: /healthz, /metrics, /v1/admin/*\n"
          "                            (default 127.0.0.1:7781; off loopback only with --admin-token)\n"
          "  --admin-token TOKEN|@FILE bearer token every admin endpoint but /healthz requires\n"
          "                            (16-4096 printable ASCII bytes; default none)\n"
          "  --admin-host NAME[:PORT][,...]  more names a request's Host may give besides the\n"
          "                            listener's address and localhost (repeatable)\n"
          "  --admin-allow-origin ORIGIN[,...]  browser Origins the admin listener serves\n"
          "                            (scheme://host[:port]; repeatable; default none)\n"
          "  --max-pending-sends N     SENDs of one connection awaiting ACK before its input pauses (default 1024)\n"
          "  --max-pending-send-bytes BYTES  ... and their bytes (default 4194304)\n"
          "  --tail-cache-bytes BYTES  recent messages kept in memory for PULL, all sessions (default 67108864)\n"
          "  --session-cache-max N     sessions kept in memory (default 100000)\n"
          "  --plugin-budget-ms N      longest a plugin hook call may run before it is aborted (default 100)\n"
          "  --plugin-memory-max MIB   memory the plugin state may hold; past it an allocation fails (default 256)\n",
          argv0);
}

static int parse_hostport(const char *s, char *host, size_t host_size, int *port) {
  const char *colon = strrchr(s, ':');
  if (!colon) return -1;
  size_t hl = (size_t)(colon - s);
  if (hl > 1 && s[0] == '[' && s[hl - 1] == ']') { /* [::1]:7700 */
    s++;
    hl -= 2;
  }
  if (hl == 0 || hl >= host_size) return -1;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || p < 0 || p > 65535) return -1;
  memcpy(host, s, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

/* --proxy-protocol: "off", or listener names (tcp, tls, http, https) separated by
 * commas, as bits 1 << hubu_conn_kind. 0 or -1. */
static int parse_proxy_listeners(const char *v, unsigned *out) {
  static const char *const names[] = {"tcp", "tls", "http", "https"}; /* hubu_conn_kind's order */
  unsigned bits = 0;
  if (!strcmp(v, "off")) {
    *out = 0;
    return 0;
  }
  for (const char *p = v;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    while (len && (*p == ' ' || *p == '\t')) p++, len--;
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
    int found = -1;
    for (int i = 0; i < 4; i++)
      if (strlen(names[i]) == len && !memcmp(p, names[i], len)) found = i;
    if (found < 0) return -1;
    bits |= 1u << found;
    if (!comma) break;
    p = comma + 1;
  }
  *out = bits;
  return 0;
}

/* An IP address literal (what --admin-listen binds), v6 without brackets. */
static int parse_ip(const char *host, struct in6_addr *v6, struct in_addr *v4, int *family) {
  if (inet_pton(AF_INET, host, v4) == 1) {
    *family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, host, v6) == 1) {
    *family = AF_INET6;
    return 0;
  }
  return -1;
}

/* Adds the comma-separated items of v (spaces around an item ignored) to
 * *list, each checked by valid; the list is rebuilt as one owned string.
 * 0, -1 for an invalid item, -2 when memory runs out. */
static int list_append(hubu_config *cfg, const char **list, const char *v, int (*valid)(const char *, size_t)) {
  size_t old = *list ? strlen(*list) : 0, n = strlen(v);
  char *joined = malloc(old + n + 2);
  if (!joined) return -2;
  size_t used = old;
  if (old) memcpy(joined, *list, old);
  for (const char *p = v;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    const char *last = end;
    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) last--;
    if (last == p || !valid(p, (size_t)(last - p))) {
      free(joined);
      return -1;
    }
    if (used) joined[used++] = ',';
    memcpy(joined + used, p, (size_t)(last - p));
    used += (size_t)(last - p);
    if (!comma) break;
    p = comma + 1;
  }
  joined[used] = '\0';
  const char *owned = hubu_config_own(cfg, joined);
  free(joined);
  if (!owned) return -2;
  *list = owned;
  return 0;
}

static int admin_host_item_valid(const char *s, size_t len) {
  hubu_admin_authority a;
  return hubu_admin_authority_parse(s, len, &a) == 0;
}

static int admin_origin_item_valid(const char *s, size_t len) { return hubu_admin_origin_valid(s, len); }

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || end == s || s[0] == '-' || v > max) return -1;
  *out = v;
  return 0;
}

void hubu_config_defaults(hubu_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
  cfg->listen_port = 7700;
  cfg->data_dir = "./data";
  cfg->plugins_dir = "./plugins";
  cfg->log_level = HUBU_LOG_INFO;
  cfg->max_frame = HUBU_FRAME_DEFAULT_MAX;
  cfg->heartbeat_ms = 30000;
  cfg->hello_timeout_ms = 10000;
  cfg->hello_timeout_pressure_ms = 2000;
  cfg->hello_max_frame = 4096;
  cfg->write_stall_ms = 30000;
  cfg->write_queue_max = 4u << 20;
  cfg->drain_ms = 5000;
  cfg->fsync = 1; /* HUBU_FSYNC_BATCH */
  cfg->max_inflight = 256;
  cfg->max_inflight_bytes = 1u << 20;
  cfg->ack_timeout_ms = 10000;
  cfg->pull_limit_max = 500;
  cfg->http_enabled = 1;
  snprintf(cfg->http_host, sizeof cfg->http_host, "127.0.0.1");
  cfg->http_port = 7780;
  cfg->admin_enabled = 1;
  snprintf(cfg->admin_host, sizeof cfg->admin_host, "127.0.0.1");
  cfg->admin_port = 7781;
  cfg->max_pending_sends = 1024;
  cfg->max_pending_send_bytes = 4u << 20;
  cfg->tail_cache_bytes = 64u << 20;
  cfg->cluster_lease_ms = 5000;
  cfg->pull_settle_ms = 2000;
  cfg->session_cache_max = 100000;
  cfg->plugin_budget_ms = 100;
  cfg->plugin_memory_max = 256;
}

const char *hubu_config_own(hubu_config *cfg, const char *s) {
  char **grown = realloc(cfg->owned, (cfg->n_owned + 1) * sizeof *grown);
  if (!grown) return NULL;
  cfg->owned = grown;
  char *copy = strdup(s);
  if (copy) cfg->owned[cfg->n_owned++] = copy;
  return copy;
}

int hubu_config_apply(hubu_config *cfg, const char *flag, const char *v, char *err, size_t err_size) {
  uint64_t n = 0;
  int bad = 0;
  if (!strcmp(flag, "--listen")) {
    bad = parse_hostport(v, cfg->listen_host, sizeof cfg->listen_host, &cfg->listen_port);
  } else if (!strcmp(flag, "--tls-listen")) {
    bad = parse_hostport(v, cfg->tls_host, sizeof cfg->tls_host, &cfg->tls_port);
    cfg->tls_enabled = 1;
  } else if (!strcmp(flag, "--http-listen")) {
    cfg->http_enabled = strcmp(v, "off") != 0;
    if (cfg->http_enabled) bad = parse_hostport(v, cfg->http_host, sizeof cfg->http_host, &cfg->http_port);
  } else if (!strcmp(flag, "--ws-origins")) {
    int r = list_append(cfg, &cfg->ws_origins, v, admin_origin_item_valid);
    if (r == -2) {
      snprintf(err, err_size, "%s: out of memory", flag);
      return -2;
    }
    bad = r != 0;
  } else if (!strcmp(flag, "--https-listen")) {
    cfg->https_enabled = strcmp(v, "off") != 0;
    if (cfg->https_enabled) bad = parse_hostport(v, cfg->https_host, sizeof cfg->https_host, &cfg->https_port);
  } else if (!strcmp(flag, "--web-root")) {
    cfg->web_root = v;
  } else if (!strcmp(flag, "--dev-login")) {
    bad = strcmp(v, "on") != 0 && strcmp(v, "off") != 0;
    cfg->dev_login = !strcmp(v, "on");
  } else if (!strcmp(flag, "--proxy-protocol")) {
    bad = parse_proxy_listeners(v, &cfg->proxy_protocol);
  } else if (!strcmp(flag, "--cert")) {
    cfg->cert_file = v;
  } else if (!strcmp(flag, "--key")) {
    cfg->key_file = v;
  } else if (!strcmp(flag, "--store")) {
    cfg->store_url = v;
  } else if (!strcmp(flag, "--cluster")) {
    cfg->cluster_url = strcmp(v, "off") ? v : NULL;
  } else if (!strcmp(flag, "--cluster-lease-ms")) {
    bad = parse_u64(v, 3600000, &n) || n < 500;
    cfg->cluster_lease_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--pull-settle-ms")) {
    bad = parse_u64(v, 3600000, &n) || n < 1;
    cfg->pull_settle_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--data")) {
    cfg->data_dir = v;
  } else if (!strcmp(flag, "--plugins")) {
    cfg->plugins_dir = v;
  } else if (!strcmp(flag, "--secret")) {
    cfg->secret_arg = v;
    bad = v[0] == '\0';
  } else if (!strcmp(flag, "--log-level")) {
    cfg->log_level = hubu_log_level_parse(v);
    bad = cfg->log_level < 0;
  } else if (!strcmp(flag, "--max-frame")) {
    bad = parse_u64(v, UINT32_MAX, &n) || n < 64;
    cfg->max_frame = (uint32_t)n;
  } else if (!strcmp(flag, "--heartbeat-ms")) {
    bad = parse_u64(v, 86400000, &n) || n < 10;
    cfg->heartbeat_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--hello-timeout-ms")) {
    bad = parse_u64(v, 86400000, &n) || n < 10;
    cfg->hello_timeout_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--hello-timeout-pressure-ms")) {
    bad = parse_u64(v, 86400000, &n) || n < 10;
    cfg->hello_timeout_pressure_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--hello-max-frame")) {
    bad = parse_u64(v, UINT32_MAX, &n) || n < 256;
    cfg->hello_max_frame = (uint32_t)n;
  } else if (!strcmp(flag, "--write-stall-ms")) {
    bad = parse_u64(v, 86400000, &n) || n < 100;
    cfg->write_stall_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--tls-ciphers")) {
    cfg->tls_ciphers = v;
    bad = v[0] == '\0';
  } else if (!strcmp(flag, "--tls-ciphersuites")) {
    cfg->tls_ciphersuites = v;
    bad = v[0] == '\0';
  } else if (!strcmp(flag, "--max-conns")) {
    bad = parse_u64(v, UINT32_MAX, &n);
    cfg->max_conns = (uint32_t)n;
  } else if (!strcmp(flag, "--max-conns-per-ip")) {
    bad = parse_u64(v, UINT32_MAX, &n);
    cfg->max_conns_per_ip = (uint32_t)n;
  } else if (!strcmp(flag, "--write-queue-max")) {
    bad = parse_u64(v, (uint64_t)1 << 40, &n) || n < 4096;
    cfg->write_queue_max = (size_t)n;
  } else if (!strcmp(flag, "--drain-ms")) {
    bad = parse_u64(v, 3600000, &n);
    cfg->drain_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--fsync")) {
    cfg->fsync = !strcmp(v, "always") ? 0 : !strcmp(v, "batch") ? 1 : !strcmp(v, "off") ? 2 : -1;
    bad = cfg->fsync < 0;
  } else if (!strcmp(flag, "--node-id")) {
    bad = parse_u64(v, 1023, &n);
    cfg->node_id = (uint32_t)n;
  } else if (!strcmp(flag, "--max-inflight")) {
    bad = parse_u64(v, 1u << 20, &n) || n < 1;
    cfg->max_inflight = (uint32_t)n;
  } else if (!strcmp(flag, "--max-inflight-bytes")) {
    bad = parse_u64(v, (uint64_t)1 << 32, &n) || n < 1024;
    cfg->max_inflight_bytes = (size_t)n;
  } else if (!strcmp(flag, "--ack-timeout-ms")) {
    bad = parse_u64(v, 3600000, &n) || n < 10;
    cfg->ack_timeout_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--pull-limit-max")) {
    bad = parse_u64(v, 100000, &n) || n < 1;
    cfg->pull_limit_max = (uint32_t)n;
  } else if (!strcmp(flag, "--plugin-budget-ms")) {
    bad = parse_u64(v, HUBU_PLUGIN_BUDGET_MAX_MS, &n) || n < 1;
    cfg->plugin_budget_ms = (uint32_t)n;
  } else if (!strcmp(flag, "--plugin-memory-max")) {
    bad = parse_u64(v, 1u << 20, &n) || n < 4;
    cfg->plugin_memory_max = (uint32_t)n;
  } else if (!strcmp(flag, "--max-pending-sends")) {
    bad = parse_u64(v, 1u << 20, &n) || n < 2;
    cfg->max_pending_sends = (uint32_t)n;
  } else if (!strcmp(flag, "--max-pending-send-bytes")) {
    bad = parse_u64(v, UINT32_MAX, &n) || n < 65536;
    cfg->max_pending_send_bytes = (size_t)n;
  } else if (!strcmp(flag, "--tail-cache-bytes")) {
    bad = parse_u64(v, UINT32_MAX, &n);
    cfg->tail_cache_bytes = (size_t)n;
  } else if (!strcmp(flag, "--session-cache-max")) {
    bad = parse_u64(v, 100000000, &n) || n < 16;
    cfg->session_cache_max = (uint32_t)n;
  } else if (!strcmp(flag, "--admin-listen")) {
    cfg->admin_enabled = strcmp(v, "off") != 0;
    if (cfg->admin_enabled) {
      struct in6_addr v6;
      struct in_addr v4;
      int family;
      bad = parse_hostport(v, cfg->admin_host, sizeof cfg->admin_host, &cfg->admin_port) ||
            parse_ip(cfg->admin_host, &v6, &v4, &family) != 0; /* an address: the loopback check needs one */
    }
  } else if (!strcmp(flag, "--admin-token")) {
    cfg->admin_token_arg = v;
    bad = v[0] == '\0' || !strcmp(v, "@");
  } else if (!strcmp(flag, "--admin-host") || !strcmp(flag, "--admin-allow-origin")) {
    int hosts = !strcmp(flag, "--admin-host");
    int r = list_append(cfg, hosts ? &cfg->admin_hosts : &cfg->admin_origins, v,
                        hosts ? admin_host_item_valid : admin_origin_item_valid);
    if (r == -2) {
      snprintf(err, err_size, "%s: out of memory", flag);
      return -2;
    }
    bad = r != 0;
  } else if (!strcmp(flag, "--port-file")) {
    cfg->port_file = v;
  } else {
    snprintf(err, err_size, "unknown flag %s (see --help)", flag);
    return -1;
  }
  if (bad) {
    snprintf(err, err_size, "%s: invalid value '%s'", flag, v);
    return -2;
  }
  return 0;
}

/* Reads --admin-token (literal or @FILE) into cfg->admin_token: 16 to 4096
 * bytes of printable ASCII without spaces, as it travels in a header. */
static int load_admin_token(hubu_config *cfg, char *err, size_t err_size) {
  const char *arg = cfg->admin_token_arg;
  if (arg[0] == '@') {
    int r = hubu_secret_read_file(arg + 1, &cfg->admin_token, &cfg->admin_token_len);
    if (r != 0) {
      snprintf(err, err_size, "--admin-token: cannot read %s: %s", arg + 1,
               r == -2 ? "empty or larger than 4096 bytes" : strerror(errno));
      return -1;
    }
  } else {
    cfg->admin_token_len = strlen(arg);
    if (!(cfg->admin_token = malloc(cfg->admin_token_len))) {
      snprintf(err, err_size, "--admin-token: out of memory");
      return -1;
    }
    memcpy(cfg->admin_token, arg, cfg->admin_token_len);
  }
  int printable = 1;
  for (size_t i = 0; i < cfg->admin_token_len; i++)
    printable &= cfg->admin_token[i] > 0x20 && cfg->admin_token[i] < 0x7f;
  if (!printable || cfg->admin_token_len < HUBU_ADMIN_TOKEN_MIN || cfg->admin_token_len > HUBU_ADMIN_TOKEN_MAX) {
    snprintf(err, err_size,
             "--admin-token: the token must be %d-%d bytes of printable ASCII without spaces (%zu given)",
             HUBU_ADMIN_TOKEN_MIN, HUBU_ADMIN_TOKEN_MAX, cfg->admin_token_len);
    return -1; /* hubu_config_free wipes it */
  }
  return 0;
}

int hubu_config_admin_on_loopback(const hubu_config *cfg) {
  struct in6_addr v6;
  struct in_addr v4;
  int family;
  if (parse_ip(cfg->admin_host, &v6, &v4, &family) != 0) return 0;
  if (family == AF_INET) return (ntohl(v4.s_addr) >> 24) == 127;
  return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
}

int hubu_config_parse(hubu_config *cfg, int argc, char **argv, char *err, size_t err_size) {
  hubu_config_defaults(cfg);
  /* First pass: --help, the flags' shape, and --config. */
  const char *config_file = NULL;
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      hubu_config_usage(argv[0]);
      return 1;
    }
    if (i + 1 >= argc) {
      snprintf(err, err_size, "%s: missing value (see --help)", argv[i]);
      return -1;
    }
    if (!strcmp(argv[i], "--config")) config_file = argv[i + 1];
  }
  if (!config_file && access("hubu.lua", F_OK) == 0) config_file = "hubu.lua";
  if (config_file && strcmp(config_file, "off") != 0) {
    cfg->config_file = config_file;
    if (hubu_config_file_load(cfg, config_file, err, err_size) != 0) goto fail;
  }
  /* Second pass: flags override the file. A list flag's first use replaces
   * the file's list; its repeats add to it. */
  int hosts_given = 0, origins_given = 0, ws_origins_given = 0;
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--config")) continue;
    if (!strcmp(argv[i], "--admin-host") && !hosts_given++) cfg->admin_hosts = NULL;
    if (!strcmp(argv[i], "--admin-allow-origin") && !origins_given++) cfg->admin_origins = NULL;
    if (!strcmp(argv[i], "--ws-origins") && !ws_origins_given++) cfg->ws_origins = NULL;
    if (hubu_config_apply(cfg, argv[i], argv[i + 1], err, err_size) != 0) goto fail;
  }
  if ((cfg->tls_enabled || cfg->https_enabled) && (!cfg->cert_file || !cfg->key_file)) {
    snprintf(err, err_size, "%s needs --cert and --key", cfg->tls_enabled ? "--tls-listen" : "--https-listen");
    goto fail;
  }
  if (cfg->admin_token_arg && load_admin_token(cfg, err, err_size) != 0) goto fail;
  if (cfg->admin_enabled && !cfg->admin_token && !hubu_config_admin_on_loopback(cfg)) {
    snprintf(err, err_size,
             "--admin-listen %s%s%s:%d is not a loopback address: give --admin-token too (the admin endpoints "
             "would be open to the network without one)",
             strchr(cfg->admin_host, ':') ? "[" : "", cfg->admin_host, strchr(cfg->admin_host, ':') ? "]" : "",
             cfg->admin_port);
    goto fail;
  }
  return 0;
fail:
  hubu_config_free(cfg);
  return -1;
}

static int generate_secret(const char *path, uint8_t **out, size_t *out_len) {
  uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return -1;
  char hex[65];
  for (size_t i = 0; i < sizeof raw; i++) snprintf(hex + 2 * i, 3, "%02x", raw[i]);
  FILE *f = fopen(path, "wx"); /* never overwrite a secret another start made */
  if (!f) return -1;
  chmod(path, 0600);
  int ok = fprintf(f, "%s\n", hex) == 65;
  if (fclose(f) != 0) ok = 0;
  if (!ok) return -1;
  return hubu_secret_read_file(path, out, out_len);
}

int hubu_config_load_secret(hubu_config *cfg, char *err, size_t err_size) {
  if (cfg->secret_arg && cfg->secret_arg[0] == '@') {
    if (hubu_secret_read_file(cfg->secret_arg + 1, &cfg->secret, &cfg->secret_len) != 0) {
      snprintf(err, err_size, "cannot read secret file %s", cfg->secret_arg + 1);
      return -1;
    }
    return 0;
  }
  if (cfg->secret_arg) {
    cfg->secret_len = strlen(cfg->secret_arg);
    cfg->secret = malloc(cfg->secret_len);
    if (!cfg->secret) return -1;
    memcpy(cfg->secret, cfg->secret_arg, cfg->secret_len);
    return 0;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/secret", cfg->data_dir);
  if (hubu_secret_read_file(path, &cfg->secret, &cfg->secret_len) == 0) return 0;
  if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, err_size, "cannot create data directory %s: %s", cfg->data_dir, strerror(errno));
    return -1;
  }
  if (generate_secret(path, &cfg->secret, &cfg->secret_len) != 0) {
    snprintf(err, err_size, "cannot write a secret to %s: %s", path, strerror(errno));
    return -1;
  }
  cfg->secret_generated = 1;
  return 0;
}

void hubu_config_free(hubu_config *cfg) {
  free(cfg->secret);
  cfg->secret = NULL;
  if (cfg->admin_token) OPENSSL_cleanse(cfg->admin_token, cfg->admin_token_len);
  free(cfg->admin_token);
  cfg->admin_token = NULL;
  cfg->admin_token_len = 0;
  for (size_t i = 0; i < cfg->n_owned; i++) free(cfg->owned[i]);
  free(cfg->owned);
  cfg->owned = NULL;
  cfg->n_owned = 0;
}

/* main.c — hubud: flags and hubu.lua, the token secret, one loop, and an
 * orderly exit. It is the one place that knows every layer: it hands each its
 * settings, opens the store, starts core, net, the plugin host and the admin
 * listener, and wires core's hook dispatch to the host.
 * The process exits 0 only after every connection was drained and every
 * handle closed (uv_loop_close succeeds). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "cluster.h"
#include "config.h"
#include "config_file.h"
#include "host.h"
#include "log.h"
#include "server.h"
#include "store.h"

/* POST /v1/admin/reload (admin.h's hook): the plugin host's reload, build
 * first and swap second; the report has one line per plugin. */
static int reload_plugins(void *ud, const char *plugin, char *msg, size_t msg_size) {
  hubu_server *s = ud;
  if (!s->plugins) {
    snprintf(msg, msg_size, "the plugin host did not start (see the log)");
    return 503;
  }
  return hubu_plugins_reload(s->plugins, plugin, msg, msg_size) ? 422 : 200;
}

/* The drain is over: the node leaves the cluster (its presence and lease go
 * from Redis), and the admin listener goes (it answered 503 "draining" until now). */
static void on_drained(hubu_server *s, void *ud) {
  (void)ud;
  if (s->cluster) hubu_cluster_close(s->cluster);
  hubu_admin_close(s);
}

/* --cluster: the nodes share one store, so it must be one every node reaches. */
static int start_cluster(hubu_server *s, hubu_store *store, const hubu_config *cfg, const char *store_url) {
  if (strncmp(store_url, "mariadb://", 10) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed",
             "error=\"--cluster needs a store every node shares: --store mariadb://...\"");
    return -1;
  }
  char err[512], advertise[512];
  snprintf(advertise, sizeof advertise, "tcp %s:%d", cfg->listen_host, s->tcp_port);
  hubu_cluster_config cc = {
      .redis_url = cfg->cluster_url,
      .node_id = cfg->node_id,
      .lease_ms = cfg->cluster_lease_ms,
      .advertise = advertise,
  };
  if (!(s->cluster = hubu_cluster_start(&s->core, store, &cc, err, sizeof err))) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"cluster: %s\"", err);
    return -1;
  }
  hubu_log(HUBU_LOG_INFO, 0, NULL, "cluster_started", "node=%u lease_ms=%u pull_settle_ms=%u", cfg->node_id,
           cfg->cluster_lease_ms, cfg->pull_settle_ms);
  return 0;
}

static int write_port_file(const char *path, int tcp_port, int tls_port, int http_port, int https_port,
                           int admin_port) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "tcp %d\n", tcp_port);
  if (tls_port >= 0) fprintf(f, "tls %d\n", tls_port);
  if (http_port >= 0) fprintf(f, "http %d\n", http_port);
  if (https_port >= 0) fprintf(f, "https %d\n", https_port);
  if (admin_port >= 0) fprintf(f, "admin %d\n", admin_port);
  if (fclose(f) != 0) return -1;
  return rename(tmp, path);
}

/* DATA/hubud.admin: "HOST:PORT" of the admin listener, so that `hubuctl group
 * --data DATA` finds the running server and changes groups through it (the
 * server's copies of the group follow). Removed at exit; one left by a
 * crash names a port nobody answers, and hubuctl then writes to the store. */
static void write_admin_file(const char *data_dir, const char *host, int port, char *path, size_t path_size) {
  char tmp[4200];
  if (snprintf(path, path_size, "%s/hubud.admin", data_dir) >= (int)path_size ||
      snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
    path[0] = '\0';
    return;
  }
  FILE *f = fopen(tmp, "w");
  int ok = f && fprintf(f, strchr(host, ':') ? "[%s]:%d\n" : "%s:%d\n", host, port) > 0;
  if (f && fclose(f) != 0) ok = 0;
  if (!ok || rename(tmp, path) != 0) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "admin_file_failed", "path=%s error=\"%s\"", path, strerror(errno));
    unlink(tmp);
    path[0] = '\0';
  }
}

/* Each layer's settings, from the one config. */
static void split_config(const hubu_config *cfg, hubu_core_config *core, hubu_net_config *net,
                         hubu_plugin_config *plugin, hubu_admin_config *admin, hubu_store_config *store,
                         const char *store_url) {
  *core = (hubu_core_config){
      .node_id = cfg->node_id,
      .max_frame = cfg->max_frame,
      .heartbeat_ms = cfg->heartbeat_ms,
      .max_inflight = cfg->max_inflight,
      .max_inflight_bytes = cfg->max_inflight_bytes,
      .ack_timeout_ms = cfg->ack_timeout_ms,
      .pull_limit_max = cfg->pull_limit_max,
      .tail_cache_bytes = cfg->tail_cache_bytes,
      .session_cache_max = cfg->session_cache_max,
      .cluster = cfg->cluster_url != NULL,
      .pull_settle_ms = cfg->cluster_url ? cfg->pull_settle_ms : 0,
  };
  *net = (hubu_net_config){
      .listen_port = cfg->listen_port,
      .tls_enabled = cfg->tls_enabled,
      .tls_port = cfg->tls_port,
      .https_enabled = cfg->https_enabled,
      .https_port = cfg->https_port,
      .cert_file = cfg->cert_file,
      .key_file = cfg->key_file,
      .secret = cfg->secret,
      .secret_len = cfg->secret_len,
      .max_frame = cfg->max_frame,
      .heartbeat_ms = cfg->heartbeat_ms,
      .hello_timeout_ms = cfg->hello_timeout_ms,
      .hello_timeout_pressure_ms = cfg->hello_timeout_pressure_ms,
      .hello_max_frame = cfg->hello_max_frame,
      .max_conns = cfg->max_conns,
      .max_conns_per_ip = cfg->max_conns_per_ip,
      .write_queue_max = cfg->write_queue_max,
      .write_stall_ms = cfg->write_stall_ms,
      .tls_ciphers = cfg->tls_ciphers,
      .tls_ciphersuites = cfg->tls_ciphersuites,
      .http_enabled = cfg->http_enabled,
      .http_port = cfg->http_port,
      .ws_origins = cfg->ws_origins,
      .dev_login = cfg->dev_login,
      .web_root = cfg->web_root,
      .proxy_protocol = cfg->proxy_protocol,
      .drain_ms = cfg->drain_ms,
      .max_pending_sends = cfg->max_pending_sends,
      .max_pending_send_bytes = cfg->max_pending_send_bytes,
  };
  snprintf(net->listen_host, sizeof net->listen_host, "%s", cfg->listen_host);
  snprintf(net->tls_host, sizeof net->tls_host, "%s", cfg->tls_host);
  snprintf(net->http_host, sizeof net->http_host, "%s", cfg->http_host);
  snprintf(net->https_host, sizeof net->https_host, "%s", cfg->https_host);
  *plugin = (hubu_plugin_config){
      .dir = cfg->plugins_dir,
      .budget_ms = cfg->plugin_budget_ms,
      .memory_max = (size_t)cfg->plugin_memory_max << 20,
      .config_file = cfg->config_file,
      .data_dir = cfg->data_dir,
      .secret = cfg->secret,
      .secret_len = cfg->secret_len,
      .push_section = hubu_config_file_push_plugin_section,
  };
  *admin = (hubu_admin_config){
      .admin_enabled = cfg->admin_enabled,
      .admin_port = cfg->admin_port,
      .on_loopback = hubu_config_admin_on_loopback(cfg),
      .admin_hosts = cfg->admin_hosts,
      .admin_origins = cfg->admin_origins,
      .admin_token = cfg->admin_token,
      .admin_token_len = cfg->admin_token_len,
  };
  snprintf(admin->admin_host, sizeof admin->admin_host, "%s", cfg->admin_host);
  *store = (hubu_store_config){.url = store_url, .fsync = (hubu_fsync_mode)cfg->fsync};
}

static hubu_server server; /* large (holds the read buffer); lives for the process */

int main(int argc, char **argv) {
  hubu_config cfg;
  char err[512];
  int r = hubu_config_parse(&cfg, argc, argv, err, sizeof err);
  if (r == 1) return 0;
  if (r != 0) {
    fprintf(stderr, "hubud: %s\n", err);
    return 2;
  }
  hubu_log_min_level = (hubu_log_level)cfg.log_level;
  if (cfg.config_file) hubu_log(HUBU_LOG_INFO, 0, NULL, "config_loaded", "file=%s", cfg.config_file);
  if (hubu_config_load_secret(&cfg, err, sizeof err) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"%s\"", err);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  hubu_core_config core_cfg;
  hubu_net_config net_cfg;
  hubu_plugin_config plugin_cfg;
  hubu_admin_config admin_cfg;
  hubu_store_config store_cfg;
  char default_url[4200];
  if (!cfg.store_url && hubu_store_default_url(cfg.data_dir, default_url, sizeof default_url) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"data directory path too long\"");
    hubu_config_free(&cfg);
    return 1;
  }
  split_config(&cfg, &core_cfg, &net_cfg, &plugin_cfg, &admin_cfg, &store_cfg,
               cfg.store_url ? cfg.store_url : default_url);
  if (mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"cannot create %s: %s\"", cfg.data_dir,
             strerror(errno));
    hubu_config_free(&cfg);
    return 1;
  }
  hubu_store *store = hubu_store_open(&loop, &store_cfg, err, sizeof err);
  if (!store) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"store: %s\"", err);
    uv_loop_close(&loop);
    hubu_config_free(&cfg);
    return 1;
  }
  if (hubu_core_init(&server.core, &loop, &core_cfg, store) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"out of memory\"");
    hubu_store_close(store);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    hubu_store_op_cache_drop();
    hubu_config_free(&cfg);
    return 1;
  }
  server.core.seq = hubu_cluster_single_seq();
  int started = hubu_server_start(&server, &loop, &net_cfg) == 0;
  if (started && cfg.cluster_url && start_cluster(&server, store, &cfg, store_cfg.url) != 0) {
    hubu_server_abort(&server);
    started = 0;
  }
  if (started && hubu_admin_start(&server, &admin_cfg) != 0) {
    hubu_server_abort(&server);
    started = 0;
  }
  if (started && cfg.port_file &&
      write_port_file(cfg.port_file, server.tcp_port, server.tls_port, server.http_port, server.https_port,
                      hubu_admin_port(&server)) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "port_file_failed", "path=%s error=\"%s\"", cfg.port_file, strerror(errno));
    hubu_admin_close(&server);
    hubu_server_abort(&server);
    started = 0;
  }
  if (!started) {
    if (server.cluster) hubu_cluster_close(server.cluster);
    hubu_store_close(store);
    uv_run(&loop, UV_RUN_DEFAULT); /* let the listeners' and the store's close callbacks run */
    uv_loop_close(&loop);
    hubu_server_free(&server);
    if (server.cluster) hubu_cluster_free(server.cluster);
    hubu_store_op_cache_drop();
    hubu_config_free(&cfg);
    return 1;
  }
  char admin_file[4200] = "";
  if (hubu_admin_port(&server) >= 0)
    write_admin_file(cfg.data_dir, admin_cfg.admin_host, hubu_admin_port(&server), admin_file, sizeof admin_file);
  server.on_drained = on_drained;
  server.plugins = hubu_plugins_open(&server.core, &plugin_cfg, err, sizeof err);
  if (!server.plugins)
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugins_failed", "error=\"%s\"", err); /* serve without */
  else
    server.core.hooks = (hubu_hooks){.dispatch = hubu_plugins_dispatch, .host = server.plugins};
  hubu_plugins_start_replay(server.plugins);
  hubu_admin_set_reload(&server, reload_plugins, &server);
  if (cfg.secret_generated) {
    printf("hubud: development secret generated in %s/secret: %.*s\n", cfg.data_dir, (int)cfg.secret_len,
           (const char *)cfg.secret);
    printf("hubud: mint a token:  ./build/hubuctl token alice --data %s\n", cfg.data_dir);
    fflush(stdout);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* returns once the server drained and closed the store */
  int closed = uv_loop_close(&loop);
  if (closed != 0) hubu_log(HUBU_LOG_ERROR, 0, NULL, "loop_not_closed", "error=\"%s\"", uv_strerror(closed));
  hubu_server_free(&server);
  if (server.cluster) hubu_cluster_free(server.cluster);
  hubu_store_op_cache_drop();
  hubu_config_free(&cfg);
  if (admin_file[0]) unlink(admin_file);
  hubu_log(HUBU_LOG_INFO, 0, NULL, "exit", "status=%d", closed == 0 ? 0 : 1);
  return closed == 0 ? 0 : 1;
}

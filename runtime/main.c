/* main.c — hubud: flags and hubu.lua, the token secret, one loop, and an orderly exit.
 * The process exits 0 only after every connection was drained and every
 * handle closed (uv_loop_close succeeds). */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "lua/host.h"
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
  hubu_store_config store_cfg = {.backend = "sqlite", .path = cfg.data_dir, .fsync = (hubu_fsync_mode)cfg.fsync};
  if (mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "startup_failed", "error=\"cannot create %s: %s\"", cfg.data_dir, strerror(errno));
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
  if (hubu_server_start(&server, &loop, &cfg, store) != 0) {
    hubu_store_close(store);
    uv_run(&loop, UV_RUN_DEFAULT); /* let the listeners' and the store's close callbacks run */
    uv_loop_close(&loop);
    hubu_server_free(&server);
  hubu_store_op_cache_drop();
    hubu_config_free(&cfg);
    return 1;
  }
  server.plugins = hubu_plugins_open(&server, cfg.plugins_dir, cfg.plugin_budget_ms, err, sizeof err);
  if (!server.plugins) hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugins_failed", "error=\"%s\"", err); /* serve without */
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
  hubu_store_op_cache_drop();
  hubu_config_free(&cfg);
  hubu_log(HUBU_LOG_INFO, 0, NULL, "exit", "status=%d", closed == 0 ? 0 : 1);
  return closed == 0 ? 0 : 1;
}

/* host.h — the plugin host: one LuaJIT state on the loop thread, the plugins
 * of --plugins loaded into it, and the C entry points of the hooks. */
#ifndef HUBU_LUA_HOST_H
#define HUBU_LUA_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "core.h"
#include "hubu.pb-c.h"
#include "msg.h"

/* The longest budget a plugin may have (--plugin-budget-ms, `--% budget:`). */
#define HUBU_PLUGIN_BUDGET_MAX_MS 60000

typedef struct hubu_plugins hubu_plugins;
typedef struct lua_State lua_State;

/* The settings the host reads; main fills them from flags and hubu.lua. */
typedef struct {
  const char *dir;         /* --plugins */
  uint32_t budget_ms;      /* --plugin-budget-ms: the default budget of a hook call */
  size_t memory_max;       /* --plugin-memory-max in bytes: the state's ceiling; 0: none */
  const char *config_file; /* hubu.lua, re-read for a plugin's section on reload; NULL: none */
  const char *data_dir;    /* im.config("data_dir") */
  const uint8_t *secret;   /* the token secret, for im.token (not owned) */
  size_t secret_len;
  /* Pushes onto L plugin's section of config_file as it reads now (a table),
   * or returns -1 with nothing pushed and the error in err. NULL: every
   * section is empty. main sets hubu_config_file_push_plugin_section. */
  int (*push_section)(lua_State *L, const char *config_file, const char *plugin, char *err, size_t err_size);
} hubu_plugin_config;

/* Creates the state, loads every plugin of dir, and watches dir for changes
 * (hot reload). NULL with err when the host itself cannot start; a plugin
 * that fails to load is logged and skipped. */
hubu_plugins *hubu_plugins_open(hubu_core *core, const hubu_plugin_config *cfg, char *err, size_t err_size);

/* core's hook dispatch (hooks.h): host is the hubu_plugins. */
int hubu_plugins_dispatch(void *host, hubu_hook_call *call);

/* Reloads one plugin (name) or all (NULL): build first, swap second. Returns
 * the number that failed; report gets one line per plugin. */
int hubu_plugins_reload(hubu_plugins *p, const char *name, char *report, size_t report_size);

/* Reads the config file (hubu.lua) again and reloads each plugin whose
 * section changed (or whose last load failed), build first and swap
 * second; the file is watched and this runs on each save. A file that no
 * longer runs changes nothing (the running config stays) and returns -1;
 * else the number of plugins that failed. report gets one line per plugin
 * reloaded. Settings other than plugin sections take effect at a restart. */
int hubu_plugins_reload_config(hubu_plugins *p, char *report, size_t report_size);

/* Stops the watcher and timers and closes the state; the handles close on the loop. */
void hubu_plugins_close(hubu_plugins *p);

/* Saves each plugin's message.stored position (about once a second, and at shutdown). */
void hubu_plugins_save_cursors(hubu_plugins *p);

/* At start: gives every message.stored plugin the messages stored after its
 * saved position (a crash between the store and the hook), marked replayed. */
void hubu_plugins_start_replay(hubu_plugins *p);

/* CALL: answers with CALL_RESULT on c. */
void hubu_plugins_on_call(hubu_plugins *p, hubu_peer *c, const Hubu__V1__Call *call);

/* auth, at HELLO, replacing the token check when any plugin hooks it.
 * Returns -1 when no hook is loaded; else 1 accepted (user possibly mapped
 * into user_out) or 0 refused (reason). */
int hubu_plugins_on_auth(hubu_plugins *p, const char *user, const char *device, const char *token,
                         const char *client_info, char *user_out, size_t user_out_size, char *reason,
                         size_t reason_size);

/* group.changed for a change made outside the plugins (hubuctl group through
 * the admin listener): op "create", "add" or "remove", the users it named,
 * by who made it ("admin"). */
void hubu_plugins_group_changed(hubu_plugins *p, const char *op, const char *group, const char *const *users,
                                size_t n_users, const char *by);

/* Appends the hubu_plugin_* Prometheus families (calls, errors, seconds per
 * plugin; plugins loaded) and the metrics plugins publish (im.counter,
 * im.gauge: a family hubu_plugin_NAME each, label plugin="...") to out. 0,
 * or -1 when memory runs out. */
int hubu_plugins_metrics(hubu_plugins *p, hubu_buf *out);

/* Appends the listing of GET /v1/admin/plugins to out as JSON: the plugin
 * directory, each loaded plugin (header fields, path, folder or file, load
 * time, reloads, hooks per event, timers, calls, errors, seconds, and the
 * error of its newest version when that failed to load) and the plugins that
 * failed to load with no version running. 0, or -1 when memory runs out. */
int hubu_plugins_list_json(hubu_plugins *p, hubu_buf *out);

#endif

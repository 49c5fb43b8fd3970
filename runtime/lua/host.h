/* host.h — the plugin host: one LuaJIT state on the loop thread, the plugins
 * of --plugins loaded into it, and the C entry points of the hooks. */
#ifndef HUBU_LUA_HOST_H
#define HUBU_LUA_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "hubu.pb-c.h"
#include "buf.h"
#include "msg.h"

/* The longest budget a plugin may have (--plugin-budget-ms, `--% budget:`). */
#define HUBU_PLUGIN_BUDGET_MAX_MS 60000

typedef struct hubu_server hubu_server;
typedef struct hubu_conn hubu_conn;
typedef struct hubu_plugins hubu_plugins;
typedef struct hubu_session hubu_session;

/* What message.send hooks decided. Owned by the caller; free with
 * hubu_send_verdict_free. code OK with rewritten set: use the new fields. */
typedef struct {
  Hubu__V1__Code code;
  char reason[256];
  uint32_t retry_after_ms; /* RATE_LIMITED / UNAVAILABLE: ev:reject's third argument */
  int rewritten;
  uint8_t *body; /* owned */
  size_t body_len;
  char *content_type; /* owned */
  uint8_t *meta;      /* owned: packed field-9 entries */
  size_t meta_len;
} hubu_send_verdict;

/* Creates the state, loads every plugin of dir, and watches dir for changes
 * (hot reload). NULL with err when the host itself cannot start; a plugin
 * that fails to load is logged and skipped. */
hubu_plugins *hubu_plugins_open(hubu_server *s, const char *dir, uint32_t budget_ms, char *err, size_t err_size);

/* Reloads one plugin (name) or all (NULL): build first, swap second. Returns
 * the number that failed; report gets one line per plugin. */
int hubu_plugins_reload(hubu_plugins *p, const char *name, char *report, size_t report_size);

/* Stops the watcher and timers and closes the state; the handles close on the loop. */
void hubu_plugins_close(hubu_plugins *p);

/* message.send, before a seq is assigned. Returns 0 when no hook ran. */
int hubu_plugins_on_send(hubu_plugins *p, const char *user, const char *device, const char *session_id,
                         uint64_t client_id, const Hubu__V1__Send *m, hubu_send_verdict *v);
void hubu_send_verdict_free(hubu_send_verdict *v);

/* message.stored, after the store confirmed m. */
void hubu_plugins_on_stored(hubu_plugins *p, const hubu_msg *m, int replayed);

/* Saves each plugin's message.stored position (about once a second, and at shutdown). */
void hubu_plugins_save_cursors(hubu_plugins *p);

/* At start: gives every message.stored plugin the messages stored after its
 * saved position (a crash between the store and the hook), marked replayed. */
void hubu_plugins_start_replay(hubu_plugins *p);

/* CALL: answers with CALL_RESULT on c. */
void hubu_plugins_on_call(hubu_plugins *p, hubu_conn *c, const Hubu__V1__Call *call);

/* message.route: how each member gets m. Modes per user. */
typedef enum { HUBU_ROUTE_PUSH = 0, HUBU_ROUTE_HINT, HUBU_ROUTE_NONE } hubu_route_mode;
typedef struct {
  uint8_t default_mode;  /* hubu_route_mode for members without an override */
  size_t n;              /* overrides (and extra recipients when extra[i]) */
  char **users;          /* owned */
  uint8_t *modes;        /* owned */
  uint8_t *extra;        /* owned: 1 when the user is not a member (ev:add) */
} hubu_route_plan;
/* Returns 0 when no hook ran (push to every member). Free with hubu_route_plan_free. */
int hubu_plugins_on_route(hubu_plugins *p, const hubu_session *sess, const hubu_msg *m, hubu_route_plan *plan);
void hubu_route_plan_free(hubu_route_plan *plan);

/* auth, at HELLO, replacing the token check when any plugin hooks it.
 * Returns -1 when no hook is loaded; else 1 accepted (user possibly mapped
 * into user_out) or 0 refused (reason). */
int hubu_plugins_on_auth(hubu_plugins *p, const char *user, const char *device, const char *token,
                         const char *client_info, char *user_out, size_t user_out_size, char *reason,
                         size_t reason_size);

/* session.read, for PULL and SYNC: 1 allowed, 0 forbidden (reason). */
int hubu_plugins_on_read(hubu_plugins *p, const char *user, const char *session_id, const char *op, char *reason,
                         size_t reason_size);

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

/* connect (after HELLO_OK) and disconnect. */
void hubu_plugins_on_connect(hubu_plugins *p, hubu_conn *c, int connected);

#endif

/* host_internal.h — what the files of the plugin host share, and only they:
 * struct hubu_plugins and the calls they make into each other. host.c owns
 * the state and wires the parts: budget.c (budget windows, the watchdog),
 * reload.c (loading, hot reload), hooks.c (events to handlers), im.c (the C
 * side of the im API), replay.c (message.stored positions and replay),
 * listing.c (the JSON listing, /metrics). Everything here runs on the loop
 * thread, except the fields the watchdog thread and the signal handler read,
 * which say so. */
#ifndef HUBU_PLUGIN_HOST_INTERNAL_H
#define HUBU_PLUGIN_HOST_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <uv.h>

#include "host.h"

#define MAX_PENDING_RELOADS 32

struct plugin_timer;     /* im.c: a timer of im.after, im.every, plugin:after, plugin:every */
struct hubu_http_client; /* http_client.c: im.http's requests */
struct folder_watch;     /* reload.c: the watch on one folder plugin */

struct hubu_plugins {
  hubu_core *core;        /* not owned */
  hubu_plugin_config cfg; /* a copy; its strings are main's */
  lua_State *L;           /* owned */
  int host_ref;           /* the host table from host.lua */
  int send_ref;           /* host.send, called once per SEND while a plugin hooks message.send */
  char *dir;              /* owned */
  int open_handles;       /* handles still to close before the struct is freed */
  size_t mem_used;        /* bytes the state holds now (host.c's allocator) */
  size_t mem_max;         /* cfg.memory_max; 0: no ceiling (or no custom allocator) */
  uint64_t mem_refused;   /* allocations refused at the ceiling */
  int closing;

  /* reload.c */
  uv_fs_event_t watch;          /* DIR itself */
  struct folder_watch *folders; /* owned; freed in their close callbacks */
  int watching;
  uv_timer_t debounce; /* coalesces a burst of file events into one reload */
  uv_signal_t sighup;
  char pending[MAX_PENDING_RELOADS][128]; /* plugins waiting for the debounce */
  int n_pending;
  uv_fs_event_t config_watch; /* the config file's directory (an editor's rename replaces the file) */
  uv_timer_t config_debounce; /* coalesces a save's events into one re-read */
  char config_base[256];      /* the config file's name in that directory; "" when none is watched */

  /* im.c */
  struct plugin_timer *timers; /* owned, uthash by id; freed in their close callbacks */
  int next_timer_id;
  struct hubu_http_client *http; /* owned, made at the first im.http; freed once its handles closed */

  /* hooks.c: which events have handlers now (refreshed after each load) */
  uint8_t has_send, has_stored, has_connect, has_disconnect, has_route, has_auth, has_read;
  uint8_t route_kinds, stored_kinds,
      send_kinds; /* bit per session kind some handler wants: 1 direct, 2 group, 4 custom */

  /* replay.c */
  int replay_started; /* message.stored positions were read at start: later arrivals read their own */

  /* budget.c */
  uint32_t budget_ms;               /* --plugin-budget-ms: a plugin's budget unless its header gives one */
  uint32_t window_ms;               /* the open window's budget */
  uint64_t budget_deadline_ns;      /* 0: no call under way; read by the watchdog thread (atomic) */
  uint64_t budget_slack_ns;         /* the budget clock's resolution, added to every deadline */
  uv_thread_t watchdog;             /* arms the count hook in a late call; ends hubud when that cannot stop it */
  pthread_t loop_thread;            /* the thread that runs the LuaJIT state: the watchdog signals it */
  volatile sig_atomic_t hook_armed; /* set by the signal handler on the loop thread */
  int watchdog_running;
  int watchdog_stop; /* atomic */
  int budget_depth;  /* nested budget windows; the outermost arms and disarms */
};

/* ---- host.c ---- */

/* The host of a C function host.c registered: its one upvalue. */
static inline hubu_plugins *hubu_plugins_of_lua(lua_State *L) {
  return (hubu_plugins *)lua_touserdata(L, lua_upvalueindex(1));
}

/* The host a store completion was submitted for, found again through core
 * (it may have closed meanwhile: NULL then). */
hubu_plugins *hubu_plugins_of_core(hubu_core *core);

/* Stack: the nargs arguments on top. Calls host[fn](args) protected; leaves
 * nresults values (nil on failure, which is logged). */
void hubu_plugins_call_host(hubu_plugins *p, const char *fn, int nargs, int nresults);

/* After a call in which the state's allocator refused an allocation (at
 * --plugin-memory-max): a full collection and a log line. fn: the host
 * function that was called. */
void hubu_plugins_memory_full(hubu_plugins *p, const char *fn);

/* The close callback's half of a handle of the host: frees the host once
 * it is closing and its last handle is closed. */
void hubu_plugins_handle_closed(hubu_plugins *p);

/* ---- budget.c ---- */

/* budget_start, budget_stop, budget_renew, budget_reset, budget_ms, clock. */
extern const luaL_Reg hubu_plugins_budget_lib[];

/* On the loop thread, before any plugin code runs: makes p this thread's
 * host for the count hook and the signal, and starts the watchdog. */
void hubu_plugins_budget_start(hubu_plugins *p);

/* Stops the watchdog (joined) and forgets p as this thread's host. */
void hubu_plugins_budget_stop(hubu_plugins *p);

/* A budget window around a call into plugin code: ms its budget (0: the
 * server's). Nested windows (a hook inside a hook) keep the outer one. */
void hubu_plugins_budget_open(hubu_plugins *p, uint32_t ms);
void hubu_plugins_budget_close(hubu_plugins *p);

/* ---- im.c ---- */

/* log, now, send, event, kick, token, token_verify, members, members_wait,
 * config, group_op, kv, call_reply, timer_start, timer_stop, label_ok, hmac,
 * http_start, http_cancel, wordset. */
extern const luaL_Reg hubu_plugins_im_lib[];

/* Closes every plugin timer (at close). */
void hubu_plugins_timers_stop(hubu_plugins *p);

/* Cancels every im.http request and closes the HTTP client (at close). */
void hubu_plugins_http_stop(hubu_plugins *p);

/* ---- reload.c ---- */

/* Loads every plugin of dir and starts the watches and SIGHUP. */
void hubu_plugins_reload_start(hubu_plugins *p);

/* Closes the watches, the debounce timer and the SIGHUP handler. */
void hubu_plugins_reload_stop(hubu_plugins *p);

/* ---- hooks.c ---- */

/* Asks host.lua which events have handlers now (after any load or unload). */
void hubu_plugins_refresh_flags(hubu_plugins *p);

/* Stack: pushes message.stored's event for m. */
void hubu_plugins_push_stored_event(hubu_plugins *p, const hubu_msg *m, int replayed);

/* send_verdict: the answer of a SEND whose handlers waited. */
extern const luaL_Reg hubu_plugins_hooks_lib[];

/* ---- replay.c ---- */

/* A plugin that came (back) while running: reads its saved message.stored
 * position and hands over what was stored after it. */
void hubu_plugins_replay_plugin(hubu_plugins *p, const char *name);

/* replay_from: a plugin that fell behind reads the log from a position. */
extern const luaL_Reg hubu_plugins_replay_lib[];

#endif

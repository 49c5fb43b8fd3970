/* host.c — the plugin host's C half: the LuaJIT state, the `C` functions the
 * Lua half (host.lua, embedded at build time) and the `im` API stand on, the
 * hook entry points called by the server, timers, the budget watchdog, hot
 * reload (uv_fs_event on --plugins and one on each folder plugin, SIGHUP),
 * and what /metrics and GET /v1/admin/plugins show of the plugins.
 * Invariants: every entry into Lua is one protected call that restores the
 * stack; the state is touched only on the loop thread. */
#include "host.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <float.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "json.h"
#include "log.h"
#include "messaging.h"
#include "presence.h"
#include "session.h"
#include "store.h"
#include "token.h"
#include "utf8.h"
#include "wire.h"
#include "wordset.h"

extern const unsigned char hubu_host_lua[];
extern const size_t hubu_host_lua_len;

typedef struct plugin_timer {
  uv_timer_t timer; /* first: the handle pointer is the timer pointer */
  hubu_plugins *host;
  struct plugin_timer *next;
  int id;
  int every;
} plugin_timer;

/* A folder plugin's own watch (DIR/NAME/, not recursive): a change to any
 * .lua file in it reloads NAME. One per folder under DIR that is (or may
 * become) a plugin; closed when the folder goes, and at close. */
typedef struct folder_watch {
  uv_fs_event_t ev; /* first: the handle pointer is the watch pointer */
  hubu_plugins *host;
  struct folder_watch *next;
  dev_t dev;        /* the folder watched: inotify follows it, not its name, so */
  ino_t ino;        /* a folder replaced under the same name needs a new watch */
  char name[128];
} folder_watch;

#define MAX_PENDING_RELOADS 32

struct hubu_plugins {
  hubu_core *core;       /* not owned */
  hubu_plugin_config cfg; /* a copy; its strings are main's */
  lua_State *L;          /* owned */
  int host_ref;          /* the host table from host.lua */
  int send_ref;          /* host.send, called once per SEND while a plugin hooks message.send */
  char *dir;             /* owned */
  uv_fs_event_t watch;
  folder_watch *folders; /* owned; freed in their close callbacks */
  int watching;
  uv_timer_t debounce;   /* coalesces a burst of file events into one reload */
  uv_signal_t sighup;
  plugin_timer *timers;  /* owned; freed in their close callbacks */
  int next_timer_id;
  int open_handles;      /* handles still to close before the struct is freed */
  int closing;
  uint8_t has_send, has_stored, has_connect, has_disconnect, has_route, has_auth, has_read;
  uint8_t route_kinds, stored_kinds; /* bit per session kind some handler wants: 1 direct, 2 group, 4 custom */
  uint32_t budget_ms;     /* --plugin-budget-ms: a plugin's budget unless its header gives one */
  uint32_t window_ms;     /* the open window's budget */
  uint64_t budget_deadline_ns; /* 0: no call under way; read by the watchdog thread (atomic) */
  uint64_t budget_slack_ns;    /* the budget clock's resolution, added to every deadline */
  uv_thread_t watchdog;        /* arms the count hook in a late call; ends hubud when that cannot stop it */
  pthread_t loop_thread;       /* the thread that runs the LuaJIT state: the watchdog signals it */
  volatile sig_atomic_t hook_armed; /* set by the signal handler on the loop thread */
  int watchdog_running;
  int watchdog_stop;           /* atomic */
  int budget_depth;            /* nested budget windows; the outermost arms and disarms */
  int replay_started;          /* message.stored positions were read at start: later arrivals read their own */
  char pending[MAX_PENDING_RELOADS][128];
  int n_pending;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The budget's clock: a few ms coarse and about ten times cheaper to read,
 * plenty for a budget of tens of ms armed once per dispatch. It lags the
 * true time by up to its resolution, so a deadline read from it is pushed
 * out by that much (budget_slack_ns): a call is never ended before its whole
 * budget has passed, only up to one tick after. */
static uint64_t budget_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t budget_slack_ns(void) {
  struct timespec res;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0) return 10000000u; /* 10 ms: above any kernel's tick */
  return (uint64_t)res.tv_sec * 1000000000u + (uint64_t)res.tv_nsec;
}

int hubu_plugins_dispatch(void *host, hubu_hook_call *call);

/* The host a store completion was submitted for, found again through core
 * (it may have closed meanwhile: NULL then). */
static hubu_plugins *host_of_core(hubu_core *core) {
  return core->hooks.dispatch == hubu_plugins_dispatch ? core->hooks.host : NULL;
}

static hubu_plugins *host_of(lua_State *L) {
  return (hubu_plugins *)lua_touserdata(L, lua_upvalueindex(1));
}

/* ---- the budget watchdog ----
 *
 * A budget window (a dispatch, a timer, a resumed call) only records its
 * deadline: no hook is set while plugins run in time, so the interpreter
 * runs at full speed (a count hook makes it check on every instruction,
 * which cost 40 % more per handler). When a window is past its deadline the
 * watchdog thread signals the loop thread, whose handler sets a count hook
 * with lua_sethook, as LuaJIT's own interpreter does on SIGINT (the Lua 5.1
 * manual allows lua_sethook from a signal handler). The hook then raises an
 * error at the next instruction of interpreted code. */

static hubu_plugins *budget_host; /* one host per process: the count hook has no upvalues */

#define BUDGET_SIGNAL (SIGRTMIN + 2)

/* Runs at every instruction once armed; raises an error in the plugin code
 * that overran its budget. Raised again at every instruction of plugin code
 * until the call returns: a hook that catches the error with pcall and loops
 * on is stopped all the same. The host's own code (host.lua, which handles
 * the failed call) is left to run. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  hubu_plugins *p = budget_host;
  uint64_t deadline = p ? __atomic_load_n(&p->budget_deadline_ns, __ATOMIC_RELAXED) : 0;
  if (!deadline || budget_now_ns() <= deadline) return;
  if (lua_getinfo(L, "S", ar) && !strcmp(ar->source, "@host.lua")) return;
  luaL_error(L, "budget of %d ms exceeded", (int)p->window_ms);
}

/* On the loop thread, between any two of its instructions. Arms the hook only
 * if a window is still open and late: a signal that arrives after the call
 * ended (deadline 0) or during the next call (a new deadline) does nothing. */
static void on_budget_signal(int sig) {
  (void)sig;
  int saved = errno;
  hubu_plugins *p = budget_host;
  uint64_t deadline = p ? __atomic_load_n(&p->budget_deadline_ns, __ATOMIC_RELAXED) : 0;
  if (deadline && budget_now_ns() > deadline && p->L) {
    p->hook_armed = 1;
    lua_sethook(p->L, budget_hook, LUA_MASKCOUNT, 1);
  }
  errno = saved;
}

/* Closes the window: the deadline first, so a signal from now on does
 * nothing, then the hook if the signal had set it. */
static void budget_disarm(hubu_plugins *p) {
  __atomic_store_n(&p->budget_deadline_ns, 0, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (p->hook_armed) {
    p->hook_armed = 0;
    lua_sethook(p->L, NULL, 0, 0);
  }
}

/* Starts the open window's clock again with ms (0: the server's budget). */
static void budget_set(hubu_plugins *p, uint32_t ms) {
  p->window_ms = ms ? ms : p->budget_ms;
  __atomic_store_n(&p->budget_deadline_ns, budget_now_ns() + p->budget_slack_ns + (uint64_t)p->window_ms * 1000000u,
                   __ATOMIC_RELAXED);
}

static void budget_open(hubu_plugins *p, uint32_t ms) {
  if (p->budget_depth++ > 0) return; /* a hook inside a hook (a kick's disconnect): the outer window holds */
  budget_set(p, ms);
}

/* A plugin's budget from Lua: nil or a whole number of ms (the header's,
 * checked when the plugin was built). */
static uint32_t budget_arg(lua_State *L, int idx) {
  lua_Number ms = lua_isnumber(L, idx) ? lua_tonumber(L, idx) : 0;
  return ms >= 1 && ms <= (lua_Number)HUBU_PLUGIN_BUDGET_MAX_MS ? (uint32_t)ms : 0;
}

static void budget_close(hubu_plugins *p) {
  if (p->budget_depth == 0 || --p->budget_depth > 0) return;
  budget_disarm(p);
}

static int c_budget_start(lua_State *L) {
  budget_open(host_of(L), budget_arg(L, 1));
  return 0;
}

/* After a coroutine stops (done or waiting for the store), whatever windows it
 * opened are closed: a waiting handler is not on the clock. */
static int c_budget_reset(lua_State *L) {
  hubu_plugins *p = host_of(L);
  p->budget_depth = 0;
  budget_disarm(p);
  return 0;
}

static int c_clock(lua_State *L) {
  lua_pushnumber(L, (double)now_ns() / 1e9);
  return 1;
}

/* Before each handler of a chain: the handler gets its plugin's whole budget
 * (and a hook armed for the one before it is taken off). Nested inside
 * another dispatch (a kick's disconnect), the outer window holds. */
static int c_budget_renew(lua_State *L) {
  hubu_plugins *p = host_of(L);
  if (p->budget_depth != 1) return 0;
  budget_disarm(p);
  budget_set(p, budget_arg(L, 1));
  return 0;
}

/* Can s be a label value on /metrics? UTF-8 without NUL: Prometheus drops a
 * whole scrape for one value that is not UTF-8. */
static int c_label_ok(lua_State *L) {
  size_t len = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, hubu_utf8_valid(s, len, 0));
  return 1;
}

static int c_budget_ms(lua_State *L) {
  lua_pushnumber(L, host_of(L)->budget_ms);
  return 1;
}

static int c_budget_stop(lua_State *L) {
  budget_close(host_of(L));
  return 0;
}

/* ---- the watchdog thread ---- */

#define WATCHDOG_TICK_MAX_MS 25     /* a late call is interrupted within this of its deadline */
#define WATCHDOG_GRACE_FACTOR 10    /* a call this many budgets late cannot be stopped from inside */
#define WATCHDOG_GRACE_MIN_MS 1000

/* Wakes every quarter budget (at most 25 ms). A window past its deadline:
 * signal the loop thread (its handler arms the count hook). Code LuaJIT
 * compiled (a plugin with `--% jit: on`) never runs the hook, so a loop there
 * holds the loop thread for good: the watchdog sees the deadline long past
 * and ends the process loudly; a supervisor restarts hubud, and every
 * acknowledged message is already in the store. */
static void watchdog_main(void *arg) {
  hubu_plugins *p = arg;
  uint64_t grace = (uint64_t)p->budget_ms * WATCHDOG_GRACE_FACTOR;
  if (grace < WATCHDOG_GRACE_MIN_MS) grace = WATCHDOG_GRACE_MIN_MS;
  unsigned tick = p->budget_ms / 4;
  if (tick < 1) tick = 1;
  if (tick > WATCHDOG_TICK_MAX_MS) tick = WATCHDOG_TICK_MAX_MS;
  while (!__atomic_load_n(&p->watchdog_stop, __ATOMIC_RELAXED)) {
    uv_sleep(tick);
    uint64_t deadline = __atomic_load_n(&p->budget_deadline_ns, __ATOMIC_RELAXED), now = budget_now_ns();
    if (deadline && now > deadline) /* again at every tick while it is late: arming twice does no harm */
      pthread_kill(p->loop_thread, BUDGET_SIGNAL);
    if (deadline && now > deadline + grace * 1000000u) {
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_stuck",
               "msg=\"a plugin hook overran its budget by more than %llu ms in code the budget cannot interrupt"
               " (--%% jit: on?); exiting so that a supervisor restarts hubud; acknowledged messages are stored\"",
               (unsigned long long)grace);
      _exit(70);
    }
  }
}

/* ---- C functions for host.lua ---- */

static int c_log(lua_State *L) {
  const char *level = luaL_checkstring(L, 1), *plugin = luaL_checkstring(L, 2), *event = luaL_checkstring(L, 3),
             *msg = luaL_optstring(L, 4, "");
  int lv = hubu_log_level_parse(level);
  char line[1536]; /* one log line: newlines and quotes escaped */
  size_t n = 0;
  for (const char *c = msg; *c && n + 2 < sizeof line; c++) {
    if (*c == '\n' || *c == '"' || *c == '\\') {
      line[n++] = '\\';
      line[n++] = *c == '\n' ? 'n' : *c;
    } else {
      line[n++] = *c == '\t' ? ' ' : *c;
    }
  }
  line[n] = '\0';
  hubu_log(lv < 0 ? HUBU_LOG_INFO : (hubu_log_level)lv, 0, NULL, event, "plugin=%s msg=\"%s\"", plugin, line);
  return 0;
}

static int c_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)hubu_now_ms());
  return 1;
}

static int c_send(lua_State *L) {
  hubu_plugins *p = host_of(L);
  size_t len = 0;
  const char *as = luaL_checkstring(L, 1), *device = luaL_checkstring(L, 2), *session = luaL_checkstring(L, 3),
             *body = luaL_checklstring(L, 4, &len), *ctype = luaL_optstring(L, 5, "");
  const char *err = hubu_messaging_send_internal(p->core, as, device, session, (const uint8_t *)body, len, ctype);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int c_event(lua_State *L) {
  hubu_plugins *p = host_of(L);
  size_t plen = 0;
  const char *user = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2),
             *payload = luaL_optlstring(L, 3, "", &plen), *sender = luaL_optstring(L, 4, "");
  hubu_user *u = hubu_user_find(p->core, user);
  int n = 0;
  Hubu__V1__Event e = HUBU__V1__EVENT__INIT;
  e.name = (char *)name;
  e.payload.data = (uint8_t *)payload;
  e.payload.len = plen;
  e.sender = (char *)sender;
  for (hubu_peer *c = u ? u->peers : NULL; c; c = c->user_next)
    if (hubu_peer_send(c, HUBU_FRAME_EVENT, &e.base) == 0) n++;
  lua_pushinteger(L, n);
  return 1;
}

static int c_kick(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const char *user = luaL_checkstring(L, 1), *reason = luaL_optstring(L, 2, "kicked");
  lua_pushinteger(L, hubu_core_kick(p->core, user, reason));
  return 1;
}

static int c_token(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const char *user = luaL_checkstring(L, 1);
  lua_Number ttl = luaL_optnumber(L, 2, 86400);
  char tok[HUBU_TOKEN_MAX];
  const hubu_plugin_config *cfg = &p->cfg;
  if (hubu_token_mint(cfg->secret, cfg->secret_len, user, hubu_now_ms() / 1000 + (uint64_t)ttl, tok, sizeof tok) < 0)
    return luaL_error(L, "im.token: invalid user id");
  lua_pushstring(L, tok);
  return 1;
}

static int c_token_verify(lua_State *L) {
  hubu_plugins *p = host_of(L);
  size_t len = 0;
  const char *tok = luaL_checklstring(L, 1, &len), *user = luaL_checkstring(L, 2);
  const hubu_plugin_config *cfg = &p->cfg;
  hubu_token_status st = hubu_token_verify(cfg->secret, cfg->secret_len, tok, len, user, hubu_now_ms() / 1000);
  lua_pushboolean(L, st == HUBU_TOKEN_OK);
  lua_pushstring(L, hubu_token_status_name(st));
  return 2;
}

/* Stack: pushes a list of sess's members (a direct session's two users included). */
static void push_members(lua_State *L, const hubu_session *sess) {
  hubu_member_names direct;
  const char *const *members;
  size_t n = hubu_session_member_list(sess, &direct, &members);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, members[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

static int c_members(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const char *id = luaL_checkstring(L, 1);
  hubu_session *sess = hubu_session_get(p->core, id);
  if (!sess || !sess->loaded) { /* the load is under way now; a later call finds it */
    lua_pushnil(L);
    lua_pushstring(L, sess ? "loading" : "invalid session id");
    return 2;
  }
  push_members(L, sess);
  return 1;
}

static int c_config(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const hubu_core_config *cfg = &p->core->cfg;
  const char *key = luaL_checkstring(L, 1);
  if (!strcmp(key, "heartbeat_ms")) lua_pushnumber(L, cfg->heartbeat_ms);
  else if (!strcmp(key, "max_frame")) lua_pushnumber(L, cfg->max_frame);
  else if (!strcmp(key, "node_id")) lua_pushnumber(L, cfg->node_id);
  else if (!strcmp(key, "data_dir")) lua_pushstring(L, p->cfg.data_dir);
  else if (!strcmp(key, "plugins_dir")) lua_pushstring(L, p->dir);
  else lua_pushnil(L);
  return 1;
}

static void call_host(hubu_plugins *p, const char *fn, int nargs, int nresults);

/* ---- store-backed im calls: each answers host.complete(ticket, ...) ---- */

/* Stack: the ticket on top. Completes it with nil, why. */
static void complete_failed(hubu_plugins *p, const char *why) {
  lua_pushnil(p->L);
  lua_pushstring(p->L, why);
  call_host(p, "complete", 3, 0);
}

/* The store finished a membership op a plugin asked for. The host is looked
 * up again through core: it may have closed meanwhile. */
static void on_group_op(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = host_of_core(s);
  int ticket = (int)op->request_id;
  hubu_session *sess = NULL;
  HASH_FIND_STR(s->sessions, op->session_id, sess);
  int ok = op->status == HUBU_STORE_OK;
  if (ok && sess && sess->loaded) { /* keep the loaded copy in step with the store */
    if (op->kind == HUBU_STORE_SESSION_CREATE) {
      sess->exists = 1;
      for (size_t i = 0; i < op->n_members; i++) hubu_session_add_member(sess, op->members[i]);
    } else if (op->kind == HUBU_STORE_MEMBER_ADD) {
      hubu_session_add_member(sess, op->user);
    } else if (op->kind == HUBU_STORE_MEMBER_REMOVE) {
      hubu_session_remove_member(sess, op->user);
    }
  }
  if (p && p->L) {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_pushinteger(L, ticket);
    if (ok && op->kind == HUBU_STORE_SYNC) {
      lua_createtable(L, (int)op->n_states, 0);
      for (size_t i = 0; i < op->n_states; i++) {
        lua_pushstring(L, op->states[i].session_id);
        lua_rawseti(L, -2, (int)i + 1);
      }
      call_host(p, "complete", 2, 0);
    } else if (ok) {
      lua_pushboolean(L, 1);
      call_host(p, "complete", 2, 0);
    } else {
      complete_failed(p, op->status == HUBU_STORE_EXISTS      ? "exists"
                         : op->status == HUBU_STORE_NOT_FOUND ? "not found"
                                                              : "store unavailable");
    }
    lua_settop(L, top);
  }
  hubu_store_op_free(op);
}

/* C.group_op(what, ticket, session, user_or_members): what is "create",
 * "add", "remove" or "sessions_of" (then session is the user). */
static int c_group_op(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const char *what = luaL_checkstring(L, 1);
  int ticket = (int)luaL_checkinteger(L, 2);
  const char *id = luaL_checkstring(L, 3);
  hubu_store_op_kind kind = !strcmp(what, "create") ? HUBU_STORE_SESSION_CREATE
                            : !strcmp(what, "add") ? HUBU_STORE_MEMBER_ADD
                            : !strcmp(what, "remove") ? HUBU_STORE_MEMBER_REMOVE
                                                      : HUBU_STORE_SYNC;
  if (kind == HUBU_STORE_SYNC ? !hubu_id_valid(id, strlen(id))
                              : hubu_session_id_check(id, strlen(id)) != HUBU_SESSION_GROUP)
    return luaL_error(L, "%s: invalid %s '%s'", what, kind == HUBU_STORE_SYNC ? "user" : "group id", id);
  hubu_store_op *op = hubu_store_op_new(kind);
  if (!op) return luaL_error(L, "out of memory");
  if (kind == HUBU_STORE_SYNC) {
    snprintf(op->user, sizeof op->user, "%s", id);
  } else {
    snprintf(op->session_id, sizeof op->session_id, "%s", id);
    snprintf(op->kind_name, sizeof op->kind_name, "group");
  }
  if (kind == HUBU_STORE_MEMBER_ADD || kind == HUBU_STORE_MEMBER_REMOVE) {
    const char *user = luaL_checkstring(L, 4);
    if (!hubu_id_valid(user, strlen(user))) {
      hubu_store_op_free(op);
      return luaL_error(L, "%s: invalid user id '%s'", what, user);
    }
    snprintf(op->user, sizeof op->user, "%s", user);
  } else if (kind == HUBU_STORE_SESSION_CREATE && lua_istable(L, 4)) {
    size_t n = lua_objlen(L, 4);
    op->members = calloc(n ? n : 1, sizeof *op->members);
    for (size_t i = 1; op->members && i <= n; i++) {
      lua_rawgeti(L, 4, (int)i);
      const char *u = lua_tostring(L, -1);
      if (u && hubu_id_valid(u, strlen(u))) op->members[op->n_members++] = strdup(u);
      lua_pop(L, 1);
    }
  }
  op->done = on_group_op;
  op->ud2 = p->core;
  op->request_id = (uint64_t)ticket;
  hubu_store_submit(p->core->store, op);
  return 0;
}

static void on_kv_op(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = host_of_core(s);
  if (p && p->L) {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_pushinteger(L, (lua_Integer)op->request_id);
    if (op->status == HUBU_STORE_OK && op->kind == HUBU_STORE_KV_GET) {
      lua_pushlstring(L, (const char *)op->value, op->value_len);
      call_host(p, "complete", 2, 0);
    } else if (op->status == HUBU_STORE_OK || op->status == HUBU_STORE_NOT_FOUND) {
      if (op->kind == HUBU_STORE_KV_GET) lua_pushnil(L); /* no such key: nil, not an error */
      else lua_pushboolean(L, op->status == HUBU_STORE_OK);
      call_host(p, "complete", 2, 0);
    } else {
      complete_failed(p, "store unavailable");
    }
    lua_settop(L, top);
  }
  hubu_store_op_free(op);
}

/* C.kv(what, ticket, plugin, key [, value]): what is "get", "set" or "delete". */
static int c_kv(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const char *what = luaL_checkstring(L, 1);
  int ticket = (int)luaL_checkinteger(L, 2);
  const char *plugin = luaL_checkstring(L, 3);
  size_t klen = 0, vlen = 0;
  const char *key = luaL_checklstring(L, 4, &klen);
  hubu_store_op_kind kind = !strcmp(what, "get") ? HUBU_STORE_KV_GET
                            : !strcmp(what, "set") ? HUBU_STORE_KV_SET : HUBU_STORE_KV_DELETE;
  const char *value = kind == HUBU_STORE_KV_SET ? luaL_checklstring(L, 5, &vlen) : NULL;
  if (klen == 0 || klen > 1024 || strlen(key) != klen) return luaL_error(L, "im.kv: a key is 1-1024 bytes, no NUL");
  if (vlen > (1u << 20)) return luaL_error(L, "im.kv: a value is at most 1 MiB");
  hubu_store_op *op = hubu_store_op_new(kind);
  if (!op || !(op->key = strdup(key)) || (value && !(op->value = malloc(vlen ? vlen : 1)))) {
    hubu_store_op_free(op);
    return luaL_error(L, "out of memory");
  }
  if (value && vlen) memcpy(op->value, value, vlen);
  op->value_len = vlen;
  snprintf(op->user, sizeof op->user, "%s", plugin);
  op->done = on_kv_op;
  op->ud2 = p->core;
  op->request_id = (uint64_t)ticket;
  hubu_store_submit(p->core->store, op);
  return 0;
}

/* A session a plugin waits on finished loading. */
typedef struct {
  hubu_parked parked;
  int ticket;
} parked_members;

static void resume_members(hubu_core *s, hubu_session *sess, hubu_parked *parked) {
  parked_members *pm = (parked_members *)parked;
  hubu_plugins *p = host_of_core(s);
  if (p && p->L) {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_pushinteger(L, pm->ticket);
    if (!sess->loaded || !sess->exists) {
      complete_failed(p, sess->loaded ? "not found" : "store unavailable");
    } else {
      push_members(L, sess);
      call_host(p, "complete", 2, 0);
    }
    lua_settop(L, top);
  }
  free(pm);
}

/* C.members_wait(ticket, session): members once the session is loaded. */
static int c_members_wait(lua_State *L) {
  hubu_plugins *p = host_of(L);
  int ticket = (int)luaL_checkinteger(L, 1);
  const char *id = luaL_checkstring(L, 2);
  hubu_session *sess = hubu_session_get(p->core, id);
  parked_members *pm = sess ? calloc(1, sizeof *pm) : NULL;
  if (!pm) return luaL_error(L, "im.members: invalid session id '%s'", id);
  pm->parked.resume = resume_members;
  pm->ticket = ticket;
  hubu_session_park(p->core, sess, &pm->parked);
  return 0;
}

/* C.call_reply(user, conn_id, request_id, code, payload, reason): a CALL's answer. */
static int c_call_reply(lua_State *L) {
  hubu_plugins *p = host_of(L);
  const char *user = luaL_checkstring(L, 1);
  uint64_t conn_id = strtoull(luaL_checkstring(L, 2), NULL, 10);
  size_t plen = 0;
  Hubu__V1__CallResult r = HUBU__V1__CALL_RESULT__INIT;
  r.request_id = (uint64_t)luaL_checknumber(L, 3);
  const char *code = luaL_checkstring(L, 4);
  const char *payload = luaL_optlstring(L, 5, "", &plen);
  r.reason = (char *)luaL_optstring(L, 6, "");
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(&hubu__v1__code__descriptor, code);
  r.code = v ? (Hubu__V1__Code)v->value : HUBU__V1__CODE__INTERNAL;
  r.payload.data = (uint8_t *)payload;
  r.payload.len = plen;
  hubu_peer *c = hubu_core_peer_find(p->core, user, conn_id);
  if (c && c->state == HUBU_PEER_READY) hubu_peer_send(c, HUBU_FRAME_CALL_RESULT, &r.base);
  return 0;
}

static void on_timer_closed(uv_handle_t *h) {
  plugin_timer *t = (plugin_timer *)h;
  hubu_plugins *p = t->host;
  free(t);
  if (--p->open_handles == 0 && p->closing) free(p);
}

static void timer_destroy(hubu_plugins *p, plugin_timer *t) {
  for (plugin_timer **q = &p->timers; *q; q = &(*q)->next) {
    if (*q == t) {
      *q = t->next;
      break;
    }
  }
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
}

static void on_plugin_timer(uv_timer_t *h) {
  plugin_timer *t = (plugin_timer *)h;
  hubu_plugins *p = t->host;
  int id = t->id;
  if (!t->every) timer_destroy(p, t);
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushinteger(L, id);
  call_host(p, "timer_fired", 1, 0);
  lua_settop(L, top);
}

static int c_timer_start(lua_State *L) {
  hubu_plugins *p = host_of(L);
  lua_Number ms = luaL_checknumber(L, 1);
  int every = lua_toboolean(L, 2);
  if (ms < 1) ms = 1;
  plugin_timer *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "out of memory");
  uv_timer_init(p->core->loop, &t->timer);
  t->host = p;
  t->id = ++p->next_timer_id;
  t->every = every;
  t->next = p->timers;
  p->timers = t;
  p->open_handles++;
  uv_timer_start(&t->timer, on_plugin_timer, (uint64_t)ms, every ? (uint64_t)ms : 0);
  lua_pushinteger(L, t->id);
  return 1;
}

static int c_timer_stop(lua_State *L) {
  hubu_plugins *p = host_of(L);
  int id = (int)luaL_checkinteger(L, 1);
  for (plugin_timer *t = p->timers; t; t = t->next) {
    if (t->id == id) {
      timer_destroy(p, t);
      break;
    }
  }
  return 0;
}

/* ---- calling into host.lua ---- */

/* Stack: the nargs arguments on top. Calls host[fn](args) protected; leaves
 * nresults values (nil on failure, which is logged). */
static void call_host(hubu_plugins *p, const char *fn, int nargs, int nresults) {
  lua_State *L = p->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->host_ref);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -(nargs + 1));
  if (lua_pcall(L, nargs, nresults, 0) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_host_failed", "fn=%s error=\"%s\"", fn, lua_tostring(L, -1));
    lua_pop(L, 1);
    for (int i = 0; i < nresults; i++) lua_pushnil(L);
  }
}

static int host_has(hubu_plugins *p, const char *event) {
  lua_pushstring(p->L, event);
  call_host(p, "has", 1, 1);
  int has = lua_toboolean(p->L, -1);
  lua_pop(p->L, 1);
  return has;
}

static int kind_mask(hubu_plugins *p, const char *event) {
  lua_pushstring(p->L, event);
  call_host(p, "kind_mask", 1, 1);
  int mask = (int)lua_tointeger(p->L, -1);
  lua_pop(p->L, 1);
  return mask;
}

/* The kind bit of a session id, as host.kind_mask counts them. */
static int kind_bit(const char *session_id) {
  if (session_id[0] == 'd' && session_id[1] == ':') return 1;
  if (session_id[0] == 'g' && session_id[1] == ':') return 2;
  return 4;
}

static void refresh_flags(hubu_plugins *p) {
  p->has_send = (uint8_t)host_has(p, "message.send");
  p->has_stored = (uint8_t)host_has(p, "message.stored");
  p->has_connect = (uint8_t)host_has(p, "connect");
  p->has_disconnect = (uint8_t)host_has(p, "disconnect");
  p->has_route = (uint8_t)host_has(p, "message.route");
  p->has_auth = (uint8_t)host_has(p, "auth");
  p->has_read = (uint8_t)host_has(p, "session.read");
  p->route_kinds = (uint8_t)kind_mask(p, "message.route");
  p->stored_kinds = (uint8_t)kind_mask(p, "message.stored");
}

/* ---- hot reload: the watchers ---- */

static void on_debounce(uv_timer_t *t);

/* Reloads name about 20 ms after the last change to it (editors write in several steps). */
static void queue_reload(hubu_plugins *p, const char *name) {
  for (int i = 0; i < p->n_pending; i++)
    if (!strcmp(p->pending[i], name)) goto arm;
  if (p->n_pending < MAX_PENDING_RELOADS) snprintf(p->pending[p->n_pending++], sizeof p->pending[0], "%s", name);
arm:
  uv_timer_start(&p->debounce, on_debounce, 20, 0);
}

static folder_watch *folder_find(hubu_plugins *p, const char *name) {
  for (folder_watch *w = p->folders; w; w = w->next)
    if (!strcmp(w->name, name)) return w;
  return NULL;
}

static void on_folder_closed(uv_handle_t *h) {
  folder_watch *w = (folder_watch *)h;
  hubu_plugins *p = w->host;
  free(w);
  if (--p->open_handles == 0 && p->closing) free(p);
}

static void folder_close(hubu_plugins *p, folder_watch *w) {
  for (folder_watch **q = &p->folders; *q; q = &(*q)->next) {
    if (*q == w) {
      *q = w->next;
      break;
    }
  }
  uv_close((uv_handle_t *)&w->ev, on_folder_closed);
}

static void folder_unwatch(hubu_plugins *p, const char *name) {
  folder_watch *w = folder_find(p, name);
  if (w) folder_close(p, w);
}

/* A change in DIR/NAME/: a .lua file of it (not a dot file: editors' temp
 * files), or the folder itself moved or removed (then filename is NAME). */
static void on_folder_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  folder_watch *w = (folder_watch *)h;
  if (status == 0 && filename) {
    size_t n = strlen(filename);
    int lua = n > 4 && !strcmp(filename + n - 4, ".lua") && filename[0] != '.';
    if (!lua && strcmp(filename, w->name) != 0) return;
  }
  queue_reload(w->host, w->name);
}

/* Watches DIR/NAME/ unless it is watched already. */
/* Watches DIR/name, a folder (st: its stat). A watch on another folder that
 * had this name (moved away or removed, then replaced) is closed first. */
static void folder_watch_start(hubu_plugins *p, const char *name, const struct stat *st) {
  if (p->closing || name[0] == '.' || strlen(name) >= sizeof ((folder_watch *)0)->name) return;
  folder_watch *old = folder_find(p, name);
  if (old && old->dev == st->st_dev && old->ino == st->st_ino) return;
  if (old) folder_close(p, old);
  folder_watch *w = calloc(1, sizeof *w);
  if (!w) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=plugin_folder_watch plugin=%s", name);
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", p->dir, name);
  snprintf(w->name, sizeof w->name, "%s", name);
  w->dev = st->st_dev;
  w->ino = st->st_ino;
  w->host = p;
  uv_fs_event_init(p->core->loop, &w->ev);
  p->open_handles++;
  int r = uv_fs_event_start(&w->ev, on_folder_event, path, 0);
  if (r != 0) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "plugin_watch_failed", "dir=%s error=\"%s\"", path, uv_strerror(r));
    uv_close((uv_handle_t *)&w->ev, on_folder_closed);
    return;
  }
  w->next = p->folders;
  p->folders = w;
}

static void load_cursor(hubu_plugins *p, const char *name);

/* Loads plugin name from dir (NAME.lua or NAME/init.lua); 0 or -1. On
 * failure the reason is appended to report. A folder NAME/ is watched from
 * before its files are read (an edit from then on reloads it) until it is
 * gone or a NAME.lua takes its place. */
static int load_one(hubu_plugins *p, const char *name, char *report, size_t report_size) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s.lua", p->dir, name);
  if (stat(path, &st) == 0) {
    folder_unwatch(p, name);
  } else {
    snprintf(path, sizeof path, "%s/%s", p->dir, name);
    if (name[0] != '.' && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
      folder_watch_start(p, name, &st); /* also a folder with no init.lua yet: its init.lua is seen when it comes */
    else
      folder_unwatch(p, name);
    snprintf(path, sizeof path, "%s/%s/init.lua", p->dir, name);
    if (stat(path, &st) != 0) { /* gone: unload it */
      lua_pushstring(p->L, name);
      call_host(p, "unload", 1, 1);
      lua_pop(p->L, 1);
      if (report) snprintf(report + strlen(report), report_size - strlen(report), "%s: unloaded\n", name);
      return 0;
    }
  }
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  /* Its config section, from hubu.lua as the file reads now; a broken file
   * keeps what runs, like a broken plugin. */
  char cerr[512];
  int sect = 0;
  if (p->cfg.push_section)
    sect = p->cfg.push_section(L, p->cfg.config_file, name, cerr, sizeof cerr);
  else
    lua_newtable(L); /* no config file reader: every plugin's section is empty */
  if (sect != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_load_failed", "plugin=%s error=\"%s\"", name, cerr);
    if (report) snprintf(report + strlen(report), report_size - strlen(report), "%s: failed: %s\n", name, cerr);
    lua_settop(L, top);
    lua_pushstring(L, name); /* listed as a failed reload, like any other */
    lua_pushstring(L, path);
    lua_pushstring(L, cerr);
    call_host(p, "note_failure", 3, 0);
    lua_settop(L, top);
    return -1;
  }
  call_host(p, "load", 3, 3);
  int ok = lua_toboolean(L, -3), resume = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (report) {
    size_t used = strlen(report);
    snprintf(report + used, report_size - used, "%s: %s%s\n", name, ok ? "loaded" : "failed: ",
             ok ? "" : (lua_tostring(L, -1) ? lua_tostring(L, -1) : "?"));
  }
  lua_settop(L, top);
  if (ok && resume && p->replay_started) load_cursor(p, name); /* a plugin that came (back) while running */
  return ok ? 0 : -1;
}

/* A plugin name from a directory entry: "x.lua" -> "x", "x/" (with init.lua) -> "x". */
static int plugin_name(const char *dir, const char *entry, char *name, size_t size) {
  size_t n = strlen(entry);
  if (entry[0] == '.' || n >= size) return 0;
  if (n > 4 && !strcmp(entry + n - 4, ".lua")) {
    memcpy(name, entry, n - 4);
    name[n - 4] = '\0';
    return 1;
  }
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s/init.lua", dir, entry);
  if (stat(path, &st) == 0) {
    snprintf(name, size, "%s", entry);
    return 1;
  }
  return 0;
}

int hubu_plugins_reload(hubu_plugins *p, const char *name, char *report, size_t report_size) {
  if (report && report_size) report[0] = '\0';
  int failed = 0;
  if (name) {
    failed = load_one(p, name, report, report_size) != 0;
  } else {
    DIR *d = opendir(p->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      char n[128], path[4096];
      struct stat st;
      if (plugin_name(p->dir, e->d_name, n, sizeof n)) {
        failed += load_one(p, n, report, report_size) != 0;
      } else if (e->d_name[0] != '.' && snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name) < (int)sizeof path &&
                 stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        folder_watch_start(p, e->d_name, &st); /* a folder without init.lua yet: loaded when one is saved */
      }
    }
    if (d) closedir(d);
  }
  refresh_flags(p);
  return failed;
}

static void on_debounce(uv_timer_t *t) {
  hubu_plugins *p = t->data;
  int n = p->n_pending;
  p->n_pending = 0;
  for (int i = 0; i < n; i++) load_one(p, p->pending[i], NULL, 0);
  refresh_flags(p);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  hubu_plugins *p = h->data;
  char name[128];
  if (status < 0 || !filename) return;
  size_t n = strlen(filename);
  if (n <= 4 || strcmp(filename + n - 4, ".lua") != 0 || filename[0] == '.' || n - 4 >= sizeof name) {
    /* Not NAME.lua: a folder NAME/ made, moved in, moved out or removed. */
    char path[4096];
    struct stat st;
    if (filename[0] == '.' || n >= sizeof name) return;
    snprintf(path, sizeof path, "%s/%s", p->dir, filename);
    if (!(stat(path, &st) == 0 && S_ISDIR(st.st_mode)) && !folder_find(p, filename)) return;
    snprintf(name, sizeof name, "%s", filename);
  } else {
    memcpy(name, filename, n - 4);
    name[n - 4] = '\0';
  }
  queue_reload(p, name);
}

static void on_sighup(uv_signal_t *h, int signum) {
  (void)signum;
  hubu_plugins *p = h->data;
  char report[4096];
  int failed = hubu_plugins_reload(p, NULL, report, sizeof report);
  hubu_log(failed ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, "plugins_reloaded", "why=SIGHUP failed=%d", failed);
}

static void on_handle_closed(uv_handle_t *h) {
  hubu_plugins *p = h->data;
  if (--p->open_handles == 0 && p->closing) free(p);
}

hubu_plugins *hubu_plugins_open(hubu_core *core, const hubu_plugin_config *cfg, char *err, size_t err_size) {
  hubu_plugins *p = calloc(1, sizeof *p);
  if (!p || !(p->dir = strdup(cfg->dir)) || !(p->L = luaL_newstate())) {
    snprintf(err, err_size, "out of memory");
    if (p) free(p->dir);
    free(p);
    return NULL;
  }
  p->core = core;
  p->cfg = *cfg;
  p->budget_ms = cfg->budget_ms ? cfg->budget_ms : 100;
  p->budget_slack_ns = budget_slack_ns();
  lua_State *L = p->L;
  luaL_openlibs(L);
  budget_host = p;
  static const luaL_Reg fns[] = {
      {"log", c_log},         {"now", c_now},
      {"send", c_send},       {"event", c_event},
      {"token", c_token},     {"token_verify", c_token_verify},
      {"members", c_members}, {"config", c_config},
      {"timer_start", c_timer_start}, {"timer_stop", c_timer_stop},
      {"budget_start", c_budget_start}, {"budget_stop", c_budget_stop},
      {"clock", c_clock},             {"budget_reset", c_budget_reset},
      {"budget_renew", c_budget_renew}, {"budget_ms", c_budget_ms},
      {"label_ok", c_label_ok},
      {"group_op", c_group_op},       {"members_wait", c_members_wait},
      {"call_reply", c_call_reply},   {"kick", c_kick},
      {"kv", c_kv},
      {"wordset", hubu_wordset_new},
      {NULL, NULL},
  };
  if (luaL_loadbuffer(L, (const char *)hubu_host_lua, hubu_host_lua_len, "@host.lua") != 0) {
    snprintf(err, err_size, "host.lua: %s", lua_tostring(L, -1));
    goto fail;
  }
  lua_newtable(L);
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  if (lua_pcall(L, 1, 1, 0) != 0) {
    snprintf(err, err_size, "host.lua: %s", lua_tostring(L, -1));
    goto fail;
  }
  lua_getfield(L, -1, "send");
  p->send_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  p->host_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  p->loop_thread = pthread_self();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_budget_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  int wr = sigaction(BUDGET_SIGNAL, &sa, NULL) != 0 ? uv_translate_sys_error(errno)
                                                      : uv_thread_create(&p->watchdog, watchdog_main, p);
  if (wr != 0)
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_watchdog_failed",
             "msg=\"no watchdog: a plugin hook that loops is not stopped\" error=\"%s\"", uv_strerror(wr));
  else
    p->watchdog_running = 1;
  uv_timer_init(core->loop, &p->debounce);
  uv_signal_init(core->loop, &p->sighup);
  p->debounce.data = p->sighup.data = p->watch.data = p;
  p->open_handles = 2;
  uv_signal_start(&p->sighup, on_sighup, SIGHUP);
  uv_fs_event_init(core->loop, &p->watch);
  p->open_handles++;
  struct stat st;
  const char *dir = p->dir;
  if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
    int r = uv_fs_event_start(&p->watch, on_fs_event, dir, 0);
    if (r == 0) p->watching = 1;
    else hubu_log(HUBU_LOG_WARN, 0, NULL, "plugin_watch_failed", "dir=%s error=\"%s\"", dir, uv_strerror(r));
    char report[8192];
    int failed = hubu_plugins_reload(p, NULL, report, sizeof report);
    hubu_log(failed ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, "plugins_started", "dir=%s failed=%d", dir, failed);
  } else {
    hubu_log(HUBU_LOG_INFO, 0, NULL, "plugins_started", "dir=%s state=missing", dir);
  }
  return p;
fail:
  lua_close(L);
  budget_host = NULL;
  free(p->dir);
  free(p);
  return NULL;
}

void hubu_plugins_close(hubu_plugins *p) {
  if (!p || p->closing) return;
  p->closing = 1;
  if (p->watchdog_running) {
    __atomic_store_n(&p->watchdog_stop, 1, __ATOMIC_RELAXED);
    uv_thread_join(&p->watchdog);
    p->watchdog_running = 0;
  }
  while (p->timers) timer_destroy(p, p->timers);
  while (p->folders) folder_close(p, p->folders);
  uv_close((uv_handle_t *)&p->debounce, on_handle_closed);
  uv_close((uv_handle_t *)&p->sighup, on_handle_closed);
  uv_close((uv_handle_t *)&p->watch, on_handle_closed);
  budget_host = NULL; /* the watchdog is stopped: no signal comes any more */
  lua_close(p->L);
  p->L = NULL;
  free(p->dir);
  p->dir = NULL;
}

/* ---- hook entry points ---- */

static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}
static void set_lstr(lua_State *L, const char *k, const void *v, size_t len) {
  lua_pushlstring(L, (const char *)v, len);
  lua_setfield(L, -2, k);
}
static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}
static void set_metatable(hubu_plugins *p, const char *name) {
  lua_State *L = p->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->host_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  lua_setmetatable(L, -2);
}
static const char *get_str(lua_State *L, int idx, const char *k, size_t *len) {
  lua_getfield(L, idx, k);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
  lua_pop(L, 1); /* the string stays alive: it is referenced by the event table */
  return s;
}

static Hubu__V1__Code code_by_name(const char *name, Hubu__V1__Code fallback) {
  const ProtobufCEnumValue *v = name ? protobuf_c_enum_descriptor_get_value_by_name(&hubu__v1__code__descriptor, name)
                                     : NULL;
  return v && v->value != 0 ? (Hubu__V1__Code)v->value : fallback;
}

/* Stack: the event table on top. Runs host.dispatch(event, ev) in one budget
 * window; leaves ev. Returns the failing fail-closed plugin's name (into
 * failed), or 0. */
static int dispatch(hubu_plugins *p, const char *event, char *failed, size_t failed_size) {
  lua_State *L = p->L;
  int evi = lua_gettop(L);
  lua_pushstring(L, event);
  lua_pushvalue(L, evi);
  budget_open(p, 0);
  call_host(p, "dispatch", 2, 2);
  budget_close(p);
  int closed = lua_isstring(L, -2) && !strcmp(lua_tostring(L, -2), "error");
  if (closed) snprintf(failed, failed_size, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
  lua_settop(L, evi);
  return closed;
}

/* The hot path: the SEND's fields go to host.send as arguments (the event
 * table is built there by a table constructor, its keys constants), and the
 * verdict comes back as return values. */
static int hubu_plugins_on_send(hubu_plugins *p, const char *user, const char *device, const char *session_id,
                         uint64_t client_id, const Hubu__V1__Send *m, hubu_send_verdict *v) {
  memset(v, 0, sizeof *v);
  v->code = HUBU__V1__CODE__OK;
  if (!p || !p->has_send) return 0;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->send_ref);
  lua_pushstring(L, user);
  lua_pushstring(L, device);
  lua_pushstring(L, session_id);
  lua_pushnumber(L, (double)client_id);
  lua_pushlstring(L, (const char *)m->body.data, m->body.len);
  lua_pushstring(L, m->content_type);
  if (m->n_meta) {
    lua_createtable(L, 0, (int)m->n_meta);
    for (size_t i = 0; i < m->n_meta; i++) set_str(L, m->meta[i]->key, m->meta[i]->value);
  } else {
    lua_pushnil(L);
  }
  budget_open(p, 0);
  int rc = lua_pcall(L, 7, 4, 0);
  budget_close(p);
  if (rc != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_host_failed", "fn=send error=\"%s\"", lua_tostring(L, -1));
    lua_settop(L, top);
    return 0; /* the host itself failed: as if no plugin had spoken */
  }
  const char *what = lua_tostring(L, top + 1);
  if (!what) { /* every handler let it through unchanged */
    lua_settop(L, top);
    return 1;
  }
  if (!strcmp(what, "error")) { /* final: a retry would fail the same way */
    v->code = HUBU__V1__CODE__REJECTED;
    snprintf(v->reason, sizeof v->reason, "plugin %s failed", lua_tostring(L, top + 2) ? lua_tostring(L, top + 2) : "?");
  } else if (!strcmp(what, "verdict")) {
    const char *reason = lua_tostring(L, top + 3);
    v->code = code_by_name(lua_tostring(L, top + 2), HUBU__V1__CODE__REJECTED);
    snprintf(v->reason, sizeof v->reason, "%s", reason ? reason : "");
    v->retry_after_ms = (uint32_t)lua_tonumber(L, top + 4); /* host.lua checked its range */
  } else if (!strcmp(what, "rewrite")) {
    size_t blen = 0;
    const char *body = lua_tolstring(L, top + 2, &blen), *ctype = lua_tostring(L, top + 3);
    v->rewritten = 1;
    v->body = malloc(blen ? blen : 1);
    v->content_type = strdup(ctype ? ctype : "");
    if (v->body && body) memcpy(v->body, body, blen);
    v->body_len = blen;
    /* meta: the table's string pairs */
    size_t n = 0, cap = 32; /* the SEND limit on meta entries */
    Hubu__V1__Send__MetaEntry *entries = calloc(cap, sizeof *entries), **ptrs = calloc(cap, sizeof *ptrs);
    if (lua_istable(L, top + 4) && entries && ptrs) {
      lua_pushnil(L);
      while (lua_next(L, top + 4) != 0) { /* the strings stay referenced by the table */
        if (n < cap && lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
          hubu__v1__send__meta_entry__init(&entries[n]);
          entries[n].key = (char *)lua_tostring(L, -2);
          entries[n].value = (char *)lua_tostring(L, -1);
          ptrs[n] = &entries[n];
          n++;
        }
        lua_pop(L, 1);
      }
    }
    if (!v->body || !v->content_type || !entries || !ptrs || hubu_msg_pack_meta(n, ptrs, &v->meta, &v->meta_len) != 0) {
      v->code = HUBU__V1__CODE__INTERNAL;
      snprintf(v->reason, sizeof v->reason, "out of memory");
    }
    free(entries);
    free(ptrs);
  }
  lua_settop(L, top);
  return 1;
}

/* Stack: pushes message.stored's event for m. */
static void push_stored_event(hubu_plugins *p, const hubu_msg *m, int replayed) {
  lua_State *L = p->L;
  char msg_id[24];
  snprintf(msg_id, sizeof msg_id, "%llu", (unsigned long long)m->msg_id);
  lua_createtable(L, 0, 13);
  set_str(L, "session_id", m->session_id);
  set_num(L, "seq", (double)m->seq);
  set_str(L, "msg_id", msg_id);
  set_str(L, "sender", m->sender);
  set_str(L, "sender_device", m->sender_device);
  set_num(L, "client_id", (double)m->client_id);
  set_lstr(L, "body", m->body, m->body_len);
  set_str(L, "content_type", m->content_type);
  set_num(L, "log_pos", (double)m->log_pos);
  lua_pushboolean(L, replayed);
  lua_setfield(L, -2, "replayed");
  char a[65], b[65];
  if (hubu_session_direct_split(m->session_id, a, b) == 0) { /* the other user of a direct session */
    set_str(L, "kind", "direct");
    set_str(L, "to_user", strcmp(m->sender, a) == 0 ? b : a);
  } else {
    set_str(L, "kind", m->session_id[0] == 'g' && m->session_id[1] == ':' ? "group" : "custom");
  }
  set_metatable(p, "Plain");
}

static void hubu_plugins_on_stored(hubu_plugins *p, const hubu_msg *m, int replayed) {
  if (!p || !p->has_stored || !(p->stored_kinds & kind_bit(m->session_id))) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  push_stored_event(p, m, replayed);
  lua_pushnil(L);
  call_host(p, "dispatch_stored", 2, 0); /* after the store: nothing to refuse */
  lua_settop(L, top);
}

/* ---- message.stored from the log: cursors and replay ---- */

#define STORED_CURSORS "hubud:stored" /* the kv namespace of the positions (not a plugin name) */
#define REPLAY_BATCH 200

static void on_cursor_saved(hubu_store_op *op) {
  if (op->status != HUBU_STORE_OK)
    hubu_log(HUBU_LOG_WARN, 0, NULL, "stored_cursor_save_failed", "plugin=%s error=\"%s\"", op->key, op->error);
  hubu_store_op_free(op);
}

void hubu_plugins_save_cursors(hubu_plugins *p) {
  if (!p || !p->L || !p->core->store) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  call_host(p, "take_dirty_cursors", 0, 1);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      char value[24];
      snprintf(value, sizeof value, "%.0f", lua_tonumber(L, -1));
      hubu_store_op *op = hubu_store_op_new(HUBU_STORE_KV_SET);
      if (op && (op->key = strdup(lua_tostring(L, -2))) && (op->value = (uint8_t *)strdup(value))) {
        op->value_len = strlen(value);
        snprintf(op->user, sizeof op->user, "%s", STORED_CURSORS);
        op->done = on_cursor_saved;
        hubu_store_submit(p->core->store, op);
      } else {
        hubu_store_op_free(op);
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
}

static void replay_read(hubu_core *s, const char *plugin, uint64_t gen, uint64_t after, uint64_t target);

/* Is replay gen of plugin still the one under way (and the plugin loaded)? */
static int replay_current(hubu_plugins *p, const char *plugin, uint64_t gen) {
  lua_pushstring(p->L, plugin);
  lua_pushnumber(p->L, (double)gen);
  call_host(p, "replay_current", 2, 1);
  int current = lua_toboolean(p->L, -1);
  lua_pop(p->L, 1);
  return current;
}

/* One batch of a replay. A failure leaves the replay unfinished on purpose:
 * the plugin's saved position stays where the replay got to (live messages
 * do not move it on), so a restart hands over the rest. */
static void on_replay_read(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = host_of_core(s);
  uint64_t gen = op->conn_id;
  uint64_t target = op->request_id ? op->request_id : op->max_seq; /* the end: the log as the replay began */
  uint64_t last = op->after_seq;
  if (!p || !p->L) {
    /* hubud is closing */
  } else if (!replay_current(p, op->key, gen)) {
    hubu_log(HUBU_LOG_INFO, 0, NULL, "stored_replay_stopped", "plugin=%s at=%llu why=\"unloaded or replayed anew\"",
             op->key, (unsigned long long)last);
  } else if (op->status != HUBU_STORE_OK) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "stored_replay_failed",
             "plugin=%s at=%llu error=\"%s\" msg=\"the rest is handed over after a restart\"", op->key,
             (unsigned long long)last, op->error);
  } else {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    for (size_t i = 0; i < op->n_msgs && op->msgs[i]->log_pos <= target; i++) {
      push_stored_event(p, op->msgs[i], 1);
      lua_pushstring(L, op->key);
      call_host(p, "dispatch_stored", 2, 0);
      lua_settop(L, top);
      last = op->msgs[i]->log_pos;
    }
    if (op->has_more && last < target) {
      replay_read(s, op->key, gen, last, target);
    } else {
      hubu_log(HUBU_LOG_INFO, 0, NULL, "stored_replayed", "plugin=%s up_to=%llu", op->key, (unsigned long long)last);
      lua_pushstring(L, op->key);
      lua_pushnumber(L, (double)gen);
      call_host(p, "replay_end", 2, 0);
    }
  }
  hubu_store_op_free(op);
}

static void replay_read(hubu_core *s, const char *plugin, uint64_t gen, uint64_t after, uint64_t target) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_LOG_READ);
  if (!op || !(op->key = strdup(plugin))) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory",
             "where=stored_replay plugin=%s msg=\"the rest is handed over after a restart\"", plugin);
    hubu_store_op_free(op);
    return;
  }
  op->after_seq = after;
  op->limit = REPLAY_BATCH;
  op->request_id = target;
  op->conn_id = gen;
  op->done = on_replay_read;
  op->ud2 = s;
  hubu_store_submit(s->store, op);
}

/* A plugin's saved position: what came after it is handed over again
 * (replay_begin, then batches of the log until its end as the replay began);
 * with none saved, the plugin starts from the present (replay_end lets the
 * live positions kept aside meanwhile count). */
static void on_cursor_loaded(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = host_of_core(s);
  if (p && p->L && op->status == HUBU_STORE_OK) {
    char value[24];
    size_t n = op->value_len < sizeof value - 1 ? op->value_len : sizeof value - 1;
    memcpy(value, op->value, n);
    value[n] = '\0';
    uint64_t pos = strtoull(value, NULL, 10);
    lua_pushstring(p->L, op->key);
    lua_pushnumber(p->L, (double)pos);
    call_host(p, "replay_begin", 2, 1);
    uint64_t gen = (uint64_t)lua_tonumber(p->L, -1);
    lua_pop(p->L, 1);
    if (gen) replay_read(s, op->key, gen, pos, 0); /* 0: the plugin went meanwhile */
  } else if (p && p->L && op->status == HUBU_STORE_NOT_FOUND) { /* none saved: from the present */
    lua_pushstring(p->L, op->key);
    call_host(p, "replay_end", 1, 0);
  } else if (p && p->L) { /* its position stays frozen (live messages do not move it): a restart tries again */
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "stored_replay_failed",
             "plugin=%s error=\"%s\" msg=\"the position could not be read; replayed after a restart\"", op->key,
             op->error);
  }
  hubu_store_op_free(op);
}

static void load_cursor(hubu_plugins *p, const char *name) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_KV_GET);
  if (!op || !(op->key = strdup(name))) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=stored_cursor plugin=%s", name);
    hubu_store_op_free(op);
    lua_pushstring(p->L, name); /* no replay: from the present */
    call_host(p, "replay_end", 1, 0);
    return;
  }
  snprintf(op->user, sizeof op->user, "%s", STORED_CURSORS);
  op->done = on_cursor_loaded;
  op->ud2 = p->core;
  hubu_store_submit(p->core->store, op);
}

/* At start: every plugin that hooks message.stored reads its position. From
 * then on a plugin that arrives at run time (a new file, one that comes back,
 * or one whose first version failed to load) reads its own when it loads. */
void hubu_plugins_start_replay(hubu_plugins *p) {
  if (!p || !p->L) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  p->replay_started = 1;
  call_host(p, "stored_plugins", 0, 1);
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    load_cursor(p, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

void hubu_plugins_on_call(hubu_plugins *p, hubu_peer *c, const Hubu__V1__Call *call) {
  char event[160];
  snprintf(event, sizeof event, "call.%s", call->method);
  if (!p || !call->method[0] || strlen(call->method) > 128 || !host_has(p, event)) {
    Hubu__V1__CallResult r = HUBU__V1__CALL_RESULT__INIT;
    char reason[256];
    r.request_id = call->request_id;
    r.code = HUBU__V1__CODE__NOT_FOUND;
    snprintf(reason, sizeof reason, "no plugin answers %s", call->method);
    r.reason = reason;
    hubu_peer_send(c, HUBU_FRAME_CALL_RESULT, &r.base);
    return;
  }
  lua_State *L = p->L;
  int top = lua_gettop(L);
  char conn_id[24];
  snprintf(conn_id, sizeof conn_id, "%llu", (unsigned long long)c->id);
  lua_pushstring(L, event);
  lua_createtable(L, 0, 8);
  set_str(L, "user", c->user);
  set_str(L, "device", c->device);
  set_str(L, "method", call->method);
  set_lstr(L, "payload", call->payload.data, call->payload.len);
  set_num(L, "request_id", (double)call->request_id);
  set_str(L, "conn_id", conn_id);
  set_metatable(p, "CallEvent");
  call_host(p, "run_call", 2, 0); /* answers through C.call_reply, now or after the store */
  lua_settop(L, top);
}

static int hubu_plugins_on_route(hubu_plugins *p, const hubu_session *sess, const hubu_msg *m, hubu_route_plan *plan) {
  memset(plan, 0, sizeof *plan);
  if (!p || !p->has_route || !(p->route_kinds & kind_bit(m->session_id))) return 0;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_createtable(L, 0, 10);
  set_str(L, "session_id", m->session_id);
  set_num(L, "seq", (double)m->seq);
  set_str(L, "sender", m->sender);
  set_str(L, "sender_device", m->sender_device);
  set_lstr(L, "body", m->body, m->body_len);
  set_str(L, "content_type", m->content_type);
  set_str(L, "kind", sess->kind == HUBU_SESSION_DIRECT ? "direct" : sess->kind == HUBU_SESSION_GROUP ? "group" : "custom");
  set_num(L, "member_count", sess->kind == HUBU_SESSION_DIRECT ? 2.0 : (double)sess->n_members);
  set_metatable(p, "RouteEvent");
  char failed[128];
  dispatch(p, "message.route", failed, sizeof failed); /* a failure routes as if no plugin had spoken */
  int evi = lua_gettop(L);
  static const char *const names[] = {"push", "hint", "none"};
  const char *def = get_str(L, evi, "_default", NULL);
  for (uint8_t i = 0; def && i < 3; i++)
    if (!strcmp(def, names[i])) plan->default_mode = i;
  lua_getfield(L, evi, "_modes"); /* user -> mode */
  lua_getfield(L, evi, "_extra"); /* user -> true */
  if (lua_istable(L, -2)) {
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) {
      const char *user = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      const char *mode = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
      int mi = -1;
      for (int i = 0; mode && i < 3; i++)
        if (!strcmp(mode, names[i])) mi = i;
      if (user && mi >= 0) {
        if (plan->n == cap) {
          cap = cap ? cap * 2 : 16;
          char **u = realloc(plan->users, cap * sizeof *u);
          uint8_t *md = u ? realloc(plan->modes, cap) : NULL;
          uint8_t *ex = md ? realloc(plan->extra, cap) : NULL;
          if (u) plan->users = u;
          if (md) plan->modes = md;
          if (ex) plan->extra = ex;
          if (!u || !md || !ex) {
            lua_pop(L, 2);
            break;
          }
        }
        plan->extra[plan->n] = 0; /* stack: _modes, _extra, key, value */
        if (lua_istable(L, -3)) {
          lua_pushvalue(L, -2);
          lua_rawget(L, -4);
          plan->extra[plan->n] = (uint8_t)lua_toboolean(L, -1);
          lua_pop(L, 1);
        }
        plan->users[plan->n] = strdup(user);
        plan->modes[plan->n] = (uint8_t)mi;
        if (plan->users[plan->n]) plan->n++;
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  return 1;
}

int hubu_plugins_on_auth(hubu_plugins *p, const char *user, const char *device, const char *token,
                         const char *client_info, char *user_out, size_t user_out_size, char *reason,
                         size_t reason_size) {
  if (!p || !p->has_auth) return -1;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_createtable(L, 0, 6);
  set_str(L, "user", user);
  set_str(L, "device", device);
  set_str(L, "token", token);
  set_str(L, "client_info", client_info);
  set_metatable(p, "AuthEvent");
  char failed[128];
  int accepted = 0;
  snprintf(reason, reason_size, "invalid token");
  snprintf(user_out, user_out_size, "%s", user);
  if (dispatch(p, "auth", failed, sizeof failed)) {
    snprintf(reason, reason_size, "authentication unavailable");
  } else {
    int evi = lua_gettop(L);
    const char *verdict = get_str(L, evi, "_verdict", NULL);
    if (verdict && !strcmp(verdict, "accept")) {
      const char *as = get_str(L, evi, "_as", NULL);
      if (as && hubu_id_valid(as, strlen(as))) snprintf(user_out, user_out_size, "%s", as);
      accepted = 1;
    } else if (verdict) {
      const char *why = get_str(L, evi, "_reason", NULL);
      if (why && *why) snprintf(reason, reason_size, "%s", why);
    }
  }
  lua_settop(L, top);
  return accepted;
}

static int hubu_plugins_on_read(hubu_plugins *p, const char *user, const char *session_id, const char *op, char *reason,
                         size_t reason_size) {
  if (!p || !p->has_read) return 1;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_createtable(L, 0, 4);
  set_str(L, "user", user);
  set_str(L, "session_id", session_id);
  set_str(L, "op", op);
  set_metatable(p, "ReadEvent");
  char failed[128];
  int allowed = 1;
  if (dispatch(p, "session.read", failed, sizeof failed)) {
    allowed = 0;
    snprintf(reason, reason_size, "plugin %s failed", failed);
  } else if (get_str(L, lua_gettop(L), "_forbid", NULL)) {
    allowed = 0;
    const char *why = get_str(L, lua_gettop(L), "_forbid", NULL);
    snprintf(reason, reason_size, "%s", why);
  }
  lua_settop(L, top);
  return allowed;
}

/* ---- /metrics and the plugin listing ---- */

/* A number as Prometheus reads it: the shortest of %.15g and %.17g that
 * reads back the same, NaN, +Inf, -Inf. */
static int prom_value(hubu_buf *out, double v) {
  char num[40];
  if (v != v)
    snprintf(num, sizeof num, "NaN");
  else if (v > DBL_MAX || v < -DBL_MAX)
    snprintf(num, sizeof num, "%cInf", v > 0 ? '+' : '-');
  else if (snprintf(num, sizeof num, "%.15g", v), strtod(num, NULL) != v)
    snprintf(num, sizeof num, "%.17g", v);
  return hubu_buf_append(out, num, strlen(num));
}

/* Text escaped for the exposition format: backslash and newline (HELP
 * text), and the double quote too in a label value. */
static int prom_escaped(hubu_buf *out, const char *s, size_t len, int label_value) {
  int rc = 0;
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '\n' ? "\\n" : s[i] == '"' && label_value ? "\\\"" : NULL;
    if (!esc) continue;
    rc |= hubu_buf_append(out, s + run, i - run);
    rc |= hubu_buf_append(out, esc, 2);
    run = i + 1;
  }
  rc |= hubu_buf_append(out, s + run, len - run);
  return rc;
}

static int buf_str(hubu_buf *out, const char *s) { return hubu_buf_append(out, s, strlen(s)); }

/* Stack: a list of label names and values {n1, v1, n2, v2, ...} at idx.
 * Appends {n1="v1",...}. */
static int prom_labels(hubu_buf *out, lua_State *L, int idx) {
  int rc = buf_str(out, "{");
  size_t n = lua_objlen(L, idx);
  for (size_t i = 1; i + 1 <= n; i += 2) {
    size_t vlen = 0;
    lua_rawgeti(L, idx, (int)i);
    lua_rawgeti(L, idx, (int)i + 1);
    const char *name = lua_tostring(L, -2), *value = lua_tolstring(L, -1, &vlen);
    rc |= buf_str(out, i > 1 ? "," : "");
    rc |= buf_str(out, name ? name : "_");
    rc |= buf_str(out, "=\"");
    if (value) rc |= prom_escaped(out, value, vlen, 1);
    rc |= buf_str(out, "\"");
    lua_pop(L, 2);
  }
  rc |= buf_str(out, "}");
  return rc;
}

/* # HELP and # TYPE of a family. */
static int prom_head(hubu_buf *out, const char *name, const char *type, const char *help, size_t help_len) {
  int rc = buf_str(out, "# HELP ");
  rc |= buf_str(out, name);
  rc |= buf_str(out, " ");
  rc |= prom_escaped(out, help, help_len, 0);
  rc |= buf_str(out, "\n# TYPE ");
  rc |= buf_str(out, name);
  rc |= buf_str(out, " ");
  rc |= buf_str(out, type);
  rc |= buf_str(out, "\n");
  return rc;
}

int hubu_plugins_metrics(hubu_plugins *p, hubu_buf *out) {
  if (!p || !p->L) return 0;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  int rc = 0;
  static const char *const families[][3] = {
      {"hubu_plugin_calls_total", "counter", "Hook and timer calls per plugin."},
      {"hubu_plugin_errors_total", "counter", "Hook and timer errors per plugin."},
      {"hubu_plugin_seconds_total", "counter", "Time spent in a plugin's hooks and timers."},
  };
  static const char *const fields[] = {"calls", "errors", "seconds"};
  call_host(p, "list", 0, 1);
  int list = lua_gettop(L);
  size_t n = lua_istable(L, list) ? lua_objlen(L, list) : 0;
  for (int f = 0; f < 3 && rc == 0; f++) {
    rc |= prom_head(out, families[f][0], families[f][1], families[f][2], strlen(families[f][2]));
    for (size_t i = 1; i <= n && rc == 0; i++) {
      size_t nlen = 0;
      lua_rawgeti(L, list, (int)i);
      lua_getfield(L, -1, "name");
      lua_getfield(L, -2, fields[f]);
      const char *name = lua_tolstring(L, -2, &nlen);
      rc |= buf_str(out, families[f][0]);
      rc |= buf_str(out, "{plugin=\"");
      if (name) rc |= prom_escaped(out, name, nlen, 1);
      rc |= buf_str(out, "\"} ");
      rc |= prom_value(out, lua_tonumber(L, -1));
      rc |= buf_str(out, "\n");
      lua_pop(L, 3);
    }
  }
  char line[160];
  int len = snprintf(line, sizeof line, "# HELP hubu_plugins_loaded Plugins running.\n# TYPE hubu_plugins_loaded gauge\n"
                                        "hubu_plugins_loaded %zu\n", n);
  rc |= hubu_buf_append(out, line, (size_t)len);
  /* What plugins publish (im.counter, im.gauge): a family per metric name. */
  call_host(p, "metric_families", 0, 1);
  int fams = lua_gettop(L);
  size_t nf = lua_istable(L, fams) ? lua_objlen(L, fams) : 0;
  for (size_t i = 1; i <= nf && rc == 0; i++) {
    lua_rawgeti(L, fams, (int)i);
    int fam = lua_gettop(L);
    size_t help_len = 0;
    lua_getfield(L, fam, "name");
    lua_getfield(L, fam, "kind");
    lua_getfield(L, fam, "help");
    lua_getfield(L, fam, "samples");
    const char *name = lua_tostring(L, fam + 1), *kind = lua_tostring(L, fam + 2),
               *help = lua_tolstring(L, fam + 3, &help_len);
    size_t ns = lua_istable(L, fam + 4) ? lua_objlen(L, fam + 4) : 0;
    if (name && kind && ns > 0) {
      rc |= prom_head(out, name, kind, help ? help : "", help ? help_len : 0);
      for (size_t j = 1; j <= ns && rc == 0; j++) {
        lua_rawgeti(L, fam + 4, (int)j);
        lua_getfield(L, -1, "labels");
        lua_getfield(L, -2, "value");
        rc |= buf_str(out, name);
        if (lua_istable(L, -2)) rc |= prom_labels(out, L, lua_gettop(L) - 1);
        rc |= buf_str(out, " ");
        rc |= prom_value(out, lua_tonumber(L, -1));
        rc |= buf_str(out, "\n");
        lua_pop(L, 3);
      }
    }
    lua_settop(L, fams);
  }
  lua_settop(L, top);
  return rc ? -1 : 0;
}

/* JSON output for the listing: strings through admin.c's escaper. */
typedef struct {
  hubu_buf *out;
  int rc;
} json_out;

static void j_raw(json_out *j, const char *s) { j->rc |= buf_str(j->out, s); }

static void j_num(json_out *j, double v, const char *fmt) {
  char num[48];
  if (v != v || v > DBL_MAX || v < -DBL_MAX)
    snprintf(num, sizeof num, "null");
  else
    snprintf(num, sizeof num, fmt, v);
  j_raw(j, num);
}

/* "key": the field k of the table at t: a string (escaped), or null. */
static void j_field_str(json_out *j, lua_State *L, int t, const char *k, const char *sep) {
  size_t len = 0;
  j_raw(j, sep);
  j_raw(j, "\"");
  j_raw(j, k);
  j_raw(j, "\": ");
  lua_getfield(L, t, k);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
  if (s)
    j->rc |= hubu_json_append_string(j->out, s, len);
  else
    j_raw(j, "null");
  lua_pop(L, 1);
}

/* "key": the number field k of the table at t, printed with fmt ("%.0f" for counts). */
static void j_field_num(json_out *j, lua_State *L, int t, const char *k, const char *fmt) {
  j_raw(j, ", \"");
  j_raw(j, k);
  j_raw(j, "\": ");
  lua_getfield(L, t, k);
  if (lua_type(L, -1) == LUA_TNUMBER)
    j_num(j, lua_tonumber(L, -1), fmt);
  else
    j_raw(j, "null");
  lua_pop(L, 1);
}

int hubu_plugins_list_json(hubu_plugins *p, hubu_buf *out) {
  json_out j = {out, 0};
  lua_State *L = p ? p->L : NULL;
  int top = L ? lua_gettop(L) : 0;
  if (L) call_host(p, "list", 0, 2);
  int list = top + 1, failed = top + 2;
  size_t n = L && lua_istable(L, list) ? lua_objlen(L, list) : 0;
  size_t nf = L && lua_istable(L, failed) ? lua_objlen(L, failed) : 0;
  j_raw(&j, "{\n  \"dir\": ");
  if (p && p->dir)
    j.rc |= hubu_json_append_string(out, p->dir, strlen(p->dir));
  else
    j_raw(&j, "null");
  j_raw(&j, ",\n  \"count\": ");
  j_num(&j, (double)n, "%.0f");
  j_raw(&j, ",\n  \"plugins\": [");
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, list, (int)i);
    int e = lua_gettop(L);
    j_raw(&j, i > 1 ? ",\n    {" : "\n    {");
    j_field_str(&j, L, e, "name", "");
    j_field_str(&j, L, e, "version", ", ");
    j_field_str(&j, L, e, "summary", ", ");
    j_field_str(&j, L, e, "policy", ", ");
    j_field_num(&j, L, e, "priority", "%.17g");
    j_field_num(&j, L, e, "budget_ms", "%.0f");
    j_field_str(&j, L, e, "path", ", ");
    lua_getfield(L, e, "folder");
    j_raw(&j, lua_toboolean(L, -1) ? ", \"folder\": true" : ", \"folder\": false");
    lua_pop(L, 1);
    j_field_num(&j, L, e, "loaded_at", "%.3f");
    j_field_num(&j, L, e, "reloads", "%.0f");
    j_raw(&j, ", \"hooks\": {");
    lua_getfield(L, e, "hooks"); /* {{event, count}...} in event order */
    size_t nh = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    for (size_t h = 1; h <= nh; h++) {
      lua_rawgeti(L, -1, (int)h);
      size_t elen = 0;
      lua_getfield(L, -1, "event");
      const char *event = lua_tolstring(L, -1, &elen);
      j_raw(&j, h > 1 ? ", " : "");
      j.rc |= hubu_json_append_string(out, event ? event : "", event ? elen : 0);
      lua_pop(L, 1);
      lua_getfield(L, -1, "count");
      j_raw(&j, ": ");
      j_num(&j, lua_tonumber(L, -1), "%.0f");
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
    j_raw(&j, "}");
    j_field_num(&j, L, e, "timers", "%.0f");
    j_field_num(&j, L, e, "calls", "%.0f");
    j_field_num(&j, L, e, "errors", "%.0f");
    j_field_num(&j, L, e, "seconds", "%.6f");
    j_raw(&j, ", \"reload_error\": ");
    lua_getfield(L, e, "reload_error");
    if (lua_istable(L, -1)) {
      int r = lua_gettop(L);
      j_raw(&j, "{");
      j_field_str(&j, L, r, "error", "");
      j_field_num(&j, L, r, "at", "%.3f");
      j_raw(&j, "}");
    } else {
      j_raw(&j, "null");
    }
    j_raw(&j, "}");
    lua_settop(L, e - 1);
  }
  j_raw(&j, n ? "\n  ],\n  \"not_loaded\": [" : "],\n  \"not_loaded\": [");
  for (size_t i = 1; i <= nf; i++) {
    lua_rawgeti(L, failed, (int)i);
    int e = lua_gettop(L);
    j_raw(&j, i > 1 ? ",\n    {" : "\n    {");
    j_field_str(&j, L, e, "name", "");
    j_field_str(&j, L, e, "path", ", ");
    j_field_str(&j, L, e, "error", ", ");
    j_field_num(&j, L, e, "at", "%.3f");
    j_field_str(&j, L, e, "version", ", "); /* the header, when the file could be read; null otherwise */
    j_field_str(&j, L, e, "summary", ", ");
    j_field_str(&j, L, e, "policy", ", ");
    j_raw(&j, "}");
    lua_settop(L, e - 1);
  }
  j_raw(&j, nf ? "\n  ]\n}\n" : "]\n}\n");
  if (L) lua_settop(L, top);
  return j.rc ? -1 : 0;
}

static void on_connect(hubu_plugins *p, hubu_peer *c, int connected) {
  if (!p || !(connected ? p->has_connect : p->has_disconnect)) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  char conn_id[24];
  snprintf(conn_id, sizeof conn_id, "%llu", (unsigned long long)c->id);
  lua_createtable(L, 0, 4);
  set_str(L, "user", c->user);
  set_str(L, "device", c->device);
  set_str(L, "conn_id", conn_id);
  set_metatable(p, "Plain");
  char failed[128];
  dispatch(p, connected ? "connect" : "disconnect", failed, sizeof failed);
  lua_settop(L, top);
}

/* ---- core's hook dispatch ---- */

int hubu_plugins_dispatch(void *host, hubu_hook_call *call) {
  hubu_plugins *p = host;
  switch (call->event) {
    case HUBU_HOOK_CONNECT: on_connect(p, call->peer, 1); return 1;
    case HUBU_HOOK_DISCONNECT: on_connect(p, call->peer, 0); return 1;
    case HUBU_HOOK_SEND:
      return hubu_plugins_on_send(p, call->user, call->device, call->session_id, call->client_id, call->send,
                                  &call->verdict);
    case HUBU_HOOK_ROUTE: return hubu_plugins_on_route(p, call->session, call->msg, &call->plan);
    case HUBU_HOOK_STORED: hubu_plugins_on_stored(p, call->msg, call->replayed); return 1;
    case HUBU_HOOK_READ:
      call->allowed = hubu_plugins_on_read(p, call->user, call->session_id, call->op, call->reason, sizeof call->reason);
      return 1;
  }
  return 0;
}

/* budget.c — the time budget of every call into plugin code: budget windows
 * (a deadline per hook call, timer, load, resumed call), the watchdog thread
 * that signals the loop thread when a window is late, and the count hook the
 * signal handler arms there, which raises an error in the late plugin.
 * Invariant: while plugins run in time no hook is set (the interpreter runs
 * at full speed); the hook is armed only in a window past its deadline, and
 * only on the loop thread that owns the state. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host_internal.h"
#include "log.h"

/* A budget window (a dispatch, a timer, a resumed call) only records its
 * deadline: no hook is set while plugins run in time, so the interpreter
 * runs at full speed (a count hook makes it check on every instruction,
 * which cost 40 % more per handler). When a window is past its deadline the
 * watchdog thread signals the loop thread, whose handler sets a count hook
 * with lua_sethook, as LuaJIT's own interpreter does on SIGINT (the Lua 5.1
 * manual allows lua_sethook from a signal handler). The hook then raises an
 * error at the next instruction of interpreted code. */

/* The host of this loop thread. The count hook has no upvalues and the
 * signal handler no argument, and both run on the thread that runs the
 * state (the watchdog signals that thread): so one host per loop thread,
 * and two hosts on two loop threads do not see each other. initial-exec:
 * reading it in the signal handler is one load, never a call that could
 * allocate. */
static _Thread_local hubu_plugins *budget_host __attribute__((tls_model("initial-exec")));

#define BUDGET_SIGNAL (SIGRTMIN + 2)

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

/* Runs at every instruction once armed; raises an error in the plugin code
 * that overran its budget. Raised again at every instruction of plugin code
 * until the call returns: a hook that catches the error with pcall and loops
 * on is stopped all the same. The host's own code (host.lua, which handles
 * the failed call) is left to run. Stack: unchanged, or the error raised. */
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

void hubu_plugins_budget_open(hubu_plugins *p, uint32_t ms) {
  if (p->budget_depth++ > 0) return; /* a hook inside a hook (a kick's disconnect): the outer window holds */
  budget_set(p, ms);
}

void hubu_plugins_budget_close(hubu_plugins *p) {
  if (p->budget_depth == 0 || --p->budget_depth > 0) return;
  budget_disarm(p);
}

/* A plugin's budget from Lua: nil or a whole number of ms (the header's,
 * checked when the plugin was built). Stack: unchanged. */
static uint32_t budget_arg(lua_State *L, int idx) {
  lua_Number ms = lua_isnumber(L, idx) ? lua_tonumber(L, idx) : 0;
  return ms >= 1 && ms <= (lua_Number)HUBU_PLUGIN_BUDGET_MAX_MS ? (uint32_t)ms : 0;
}

/* ---- C functions for host.lua ---- */

/* C.budget_start([ms]): opens a window of ms (nil: the server's budget). */
static int c_budget_start(lua_State *L) {
  hubu_plugins_budget_open(hubu_plugins_of_lua(L), budget_arg(L, 1));
  return 0;
}

/* C.budget_stop(): closes the window budget_start opened. */
static int c_budget_stop(lua_State *L) {
  hubu_plugins_budget_close(hubu_plugins_of_lua(L));
  return 0;
}

/* C.budget_reset(): after a coroutine stops (done or waiting for the store),
 * whatever windows it opened are closed: a waiting handler is not on the
 * clock. */
static int c_budget_reset(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  p->budget_depth = 0;
  budget_disarm(p);
  return 0;
}

/* C.budget_renew([ms]): before each handler of a chain, the handler gets its
 * plugin's whole budget (and a hook armed for the one before it is taken
 * off). Nested inside another dispatch (a kick's disconnect), the outer
 * window holds. */
static int c_budget_renew(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  if (p->budget_depth != 1) return 0;
  budget_disarm(p);
  budget_set(p, budget_arg(L, 1));
  return 0;
}

/* C.budget_ms() -> the server's budget in ms (--plugin-budget-ms). */
static int c_budget_ms(lua_State *L) {
  lua_pushnumber(L, hubu_plugins_of_lua(L)->budget_ms);
  return 1;
}

/* C.clock() -> seconds of the monotonic clock (a plugin's time in /metrics). */
static int c_clock(lua_State *L) {
  lua_pushnumber(L, (double)now_ns() / 1e9);
  return 1;
}

const luaL_Reg hubu_plugins_budget_lib[] = {
    {"budget_start", c_budget_start},
    {"budget_stop", c_budget_stop},
    {"budget_reset", c_budget_reset},
    {"budget_renew", c_budget_renew},
    {"budget_ms", c_budget_ms},
    {"clock", c_clock},
    {NULL, NULL},
};

/* ---- the watchdog thread ---- */

#define WATCHDOG_TICK_MAX_MS 25  /* a late call is interrupted within this of its deadline */
#define WATCHDOG_GRACE_FACTOR 10 /* a call this many budgets late cannot be stopped from inside */
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

void hubu_plugins_budget_start(hubu_plugins *p) {
  p->budget_slack_ns = budget_slack_ns();
  p->loop_thread = pthread_self();
  budget_host = p;
  struct sigaction sa; /* the same handler for every host: it finds its own through budget_host */
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
}

void hubu_plugins_budget_stop(hubu_plugins *p) {
  if (p->watchdog_running) {
    __atomic_store_n(&p->watchdog_stop, 1, __ATOMIC_RELAXED);
    uv_thread_join(&p->watchdog);
    p->watchdog_running = 0;
  }
  if (budget_host == p) budget_host = NULL; /* the watchdog is stopped: no signal comes any more */
}

/* host.c — the plugin host's state and its wiring: one LuaJIT state per
 * loop thread with host.lua (the Lua half, embedded at build time) run in
 * it, the C functions of budget.c and im.c handed to host.lua, the one way
 * into host.lua (hubu_plugins_call_host), and open and close, which start
 * and stop the budget, the plugin timers and reload's watches in order.
 * Invariant: every entry into Lua is one protected call that restores the
 * stack; the state is touched only on the loop thread that opened it. */
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"
#include "log.h"

extern const unsigned char hubu_host_lua[];
extern const size_t hubu_host_lua_len;

hubu_plugins *hubu_plugins_of_core(hubu_core *core) {
  return core->hooks.dispatch == hubu_plugins_dispatch ? core->hooks.host : NULL;
}

void hubu_plugins_call_host(hubu_plugins *p, const char *fn, int nargs, int nresults) {
  lua_State *L = p->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->host_ref);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -(nargs + 1));
  uint64_t refused = p->mem_refused;
  if (lua_pcall(L, nargs, nresults, 0) != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_host_failed", "fn=%s error=\"%s\"", fn, lua_tostring(L, -1));
    lua_pop(L, 1);
    for (int i = 0; i < nresults; i++) lua_pushnil(L);
  }
  if (p->mem_refused != refused) hubu_plugins_memory_full(p, fn);
}

void hubu_plugins_memory_full(hubu_plugins *p, const char *fn) {
  /* LuaJIT does not collect before it reports an allocation failed: what the
   * failed call left behind goes now, and the log says what is still held. */
  lua_gc(p->L, LUA_GCCOLLECT, 0);
  hubu_log(HUBU_LOG_WARN, 0, NULL, "plugin_memory_full", "fn=%s used=%zu max=%zu refused=%llu", fn, p->mem_used,
           p->mem_max, (unsigned long long)p->mem_refused);
}

void hubu_plugins_handle_closed(hubu_plugins *p) {
  if (--p->open_handles == 0 && p->closing) free(p);
}

/* Stack: pushes the table of C functions host.lua gets as `...` (C), each a
 * closure with p as its one upvalue. */
/* The state's allocator: counts what the state holds and, while plugin code
 * runs (a budget window is open: always inside a protected call), refuses an
 * allocation or growth that would take it past p->mem_max. LuaJIT turns the
 * refusal into a "not enough memory" error in the code that asked, so the
 * hook that grew fails and its plugin's failure policy applies. Outside a
 * window (the host's own unprotected pushes) nothing is refused: a refusal
 * there would be LuaJIT's panic. */
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  hubu_plugins *p = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    p->mem_used -= old;
    return NULL;
  }
  if (p->mem_max && p->budget_depth > 0 && nsize > old && p->mem_used - old + nsize > p->mem_max) {
    p->mem_refused++;
    return NULL;
  }
  void *q = realloc(ptr, nsize);
  if (q) p->mem_used = p->mem_used - old + nsize;
  return q;
}

/* A state with the ceiling where LuaJIT takes a custom allocator (x86-64
 * with GC64, as Debian builds it); elsewhere lua_newstate returns NULL and
 * the state gets LuaJIT's own allocator, without a ceiling (logged). */
static lua_State *new_state(hubu_plugins *p) {
  lua_State *L = lua_newstate(limited_alloc, p);
  if (L) {
    p->mem_max = p->cfg.memory_max;
    return L;
  }
  p->mem_used = 0;
  hubu_log(HUBU_LOG_WARN, 0, NULL, "plugin_memory_unlimited", "reason=\"this LuaJIT takes no custom allocator\"");
  return luaL_newstate();
}

static void push_c_functions(hubu_plugins *p) {
  static const luaL_Reg *const libs[] = {hubu_plugins_budget_lib, hubu_plugins_im_lib, hubu_plugins_hooks_lib,
                                         hubu_plugins_replay_lib};
  lua_State *L = p->L;
  lua_newtable(L);
  for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
    for (const luaL_Reg *f = libs[i]; f->name; f++) {
      lua_pushlightuserdata(L, p);
      lua_pushcclosure(L, f->func, 1);
      lua_setfield(L, -2, f->name);
    }
  }
}

hubu_plugins *hubu_plugins_open(hubu_core *core, const hubu_plugin_config *cfg, char *err, size_t err_size) {
  hubu_plugins *p = calloc(1, sizeof *p);
  if (p) p->cfg = *cfg;
  if (!p || !(p->dir = strdup(cfg->dir)) || !(p->L = new_state(p))) {
    snprintf(err, err_size, "out of memory");
    if (p) free(p->dir);
    free(p);
    return NULL;
  }
  for (size_t n = strlen(p->dir); n > 1 && p->dir[n - 1] == '/'; n--)
    p->dir[n - 1] = '\0'; /* --plugins plugins/: its files are plugins/NAME.lua in logs and errors */
  p->core = core;
  p->budget_ms = cfg->budget_ms ? cfg->budget_ms : 100;
  lua_State *L = p->L;
  luaL_openlibs(L);
  /* host.lua runs once, protected, with the C functions as its argument;
   * it returns the host table (stack: host, then nothing). */
  if (luaL_loadbuffer(L, (const char *)hubu_host_lua, hubu_host_lua_len, "@host.lua") != 0) {
    snprintf(err, err_size, "host.lua: %s", lua_tostring(L, -1));
    goto fail;
  }
  push_c_functions(p);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    snprintf(err, err_size, "host.lua: %s", lua_tostring(L, -1));
    goto fail;
  }
  lua_getfield(L, -1, "send");
  p->send_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  p->host_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  hubu_plugins_budget_start(p); /* before the first plugin code runs */
  hubu_plugins_reload_start(p);
  return p;
fail:
  lua_close(L);
  free(p->dir);
  free(p);
  return NULL;
}

void hubu_plugins_close(hubu_plugins *p) {
  if (!p || p->closing) return;
  p->closing = 1;
  hubu_plugins_budget_stop(p);
  hubu_plugins_call_host(p, "shutdown", 0, 0); /* SENDs still waiting for their handlers are answered */
  hubu_plugins_http_stop(p);
  hubu_plugins_timers_stop(p);
  hubu_plugins_reload_stop(p);
  lua_close(p->L);
  p->L = NULL;
  free(p->dir);
  p->dir = NULL;
}

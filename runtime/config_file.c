/* config_file.c — hubu.lua: a Lua file in a sandbox of its own, read once at
 * start (before the loop: its I/O blocks nothing) and again by the plugin host
 * for each plugin (re)load, to hand the plugin its section.
 *
 * The sandbox's environment is an empty table with a metatable: __index
 * serves the settings assigned so far and a few safe library functions,
 * __newindex takes every global assignment, so a misspelt setting never goes
 * unnoticed, and records the value and its line. Values are type-checked at
 * the assignment and applied once the file has run, through
 * hubu_config_apply: the flags' own parsers, with the line of the assignment
 * in any error. */
#include "config_file.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_STRING, KIND_NUMBER };

/* Every flag but --config, named without "--" and with "-" -> "_". */
static const struct {
  const char *name;
  int kind;
} settings[] = {
    {"listen", KIND_STRING},
    {"tls_listen", KIND_STRING},
    {"http_listen", KIND_STRING},
    {"ws_origins", KIND_STRING},
    {"web_root", KIND_STRING},
    {"https_listen", KIND_STRING},
    {"dev_login", KIND_STRING},
    {"proxy_protocol", KIND_STRING},
    {"cert", KIND_STRING},
    {"key", KIND_STRING},
    {"data", KIND_STRING},
    {"store", KIND_STRING},
    {"cluster", KIND_STRING},
    {"cluster_lease_ms", KIND_NUMBER},
    {"pull_settle_ms", KIND_NUMBER},
    {"plugins", KIND_STRING},
    {"secret", KIND_STRING},
    {"log_level", KIND_STRING},
    {"max_frame", KIND_NUMBER},
    {"heartbeat_ms", KIND_NUMBER},
    {"hello_timeout_ms", KIND_NUMBER},
    {"hello_timeout_pressure_ms", KIND_NUMBER},
    {"hello_max_frame", KIND_NUMBER},
    {"write_stall_ms", KIND_NUMBER},
    {"tls_ciphers", KIND_STRING},
    {"tls_ciphersuites", KIND_STRING},
    {"max_conns", KIND_NUMBER},
    {"max_conns_per_ip", KIND_NUMBER},
    {"write_queue_max", KIND_NUMBER},
    {"drain_ms", KIND_NUMBER},
    {"port_file", KIND_STRING},
    {"fsync", KIND_STRING},
    {"node_id", KIND_NUMBER},
    {"max_inflight", KIND_NUMBER},
    {"max_inflight_bytes", KIND_NUMBER},
    {"ack_timeout_ms", KIND_NUMBER},
    {"pull_limit_max", KIND_NUMBER},
    {"max_pending_sends", KIND_NUMBER},
    {"max_pending_send_bytes", KIND_NUMBER},
    {"tail_cache_bytes", KIND_NUMBER},
    {"session_cache_max", KIND_NUMBER},
    {"plugin_budget_ms", KIND_NUMBER},
    {"plugin_memory_max", KIND_NUMBER},
    {"admin_listen", KIND_STRING},
    {"admin_token", KIND_STRING},
    {"admin_host", KIND_STRING},
    {"admin_allow_origin", KIND_STRING},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

#define MAX_HOOK_STEPS 100000 /* x 1000 instructions: a config file that runs longer loops */
#define MAX_DEPTH 32          /* nesting of a plugin section's tables */
#define REG_CTX "hubu.config_file.ctx"
#define REG_SECTIONS "hubu.config_file.sections"

typedef struct {
  hubu_config *cfg;
  const char *path;
  int line[N_SETTINGS]; /* of the last assignment of each setting */
  long steps;
} run_ctx;

static int find_setting(const char *name) {
  for (size_t i = 0; i < N_SETTINGS; i++)
    if (!strcmp(settings[i].name, name)) return (int)i;
  return -1;
}

/* The line of the file's code that called the running C function. */
static int caller_line(lua_State *L) {
  lua_Debug ar;
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar)) return ar.currentline;
  return 0;
}

/* Raises "path:line: message" (the whole path: Lua's own chunk names are cut at 60 bytes). */
static int raise_at(lua_State *L, const run_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int raise_at(lua_State *L, const run_ctx *c, int line, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_pushfstring(L, "%s:%d: %s", c->path, line, msg);
  return lua_error(L);
}

static void step_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_getfield(L, LUA_REGISTRYINDEX, REG_CTX);
  run_ctx *c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c && ++c->steps > MAX_HOOK_STEPS) {
    lua_pushfstring(L, "%s: runs for too long (an endless loop?)", c->path);
    lua_error(L);
  }
}

/* env.__newindex(env, name, value): upvalues ctx, values. */
static int env_newindex(lua_State *L) {
  run_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  int line = caller_line(L);
  if (lua_type(L, 2) != LUA_TSTRING) return raise_at(L, c, line, "unknown setting (a %s key)", luaL_typename(L, 2));
  const char *name = lua_tostring(L, 2);
  int i = find_setting(name);
  if (i < 0) return raise_at(L, c, line, "unknown setting '%s'", name);
  int t = lua_type(L, 3);
  if (t != LUA_TNIL) { /* nil: back to the default (os.getenv of an unset variable) */
    if (settings[i].kind == KIND_STRING) {
      if (t != LUA_TSTRING)
        return raise_at(L, c, line, "setting '%s' must be a string, not a %s", name, luaL_typename(L, 3));
      size_t len;
      const char *s = lua_tolstring(L, 3, &len);
      if (strlen(s) != len) return raise_at(L, c, line, "setting '%s' must not contain a NUL byte", name);
    } else {
      if (t != LUA_TNUMBER)
        return raise_at(L, c, line, "setting '%s' must be a number, not a %s", name, luaL_typename(L, 3));
      double d = lua_tonumber(L, 3);
      if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(long long)d) /* NaN fails the first */
        return raise_at(L, c, line, "setting '%s' must be a whole number >= 0, not %s", name, lua_tostring(L, 3));
    }
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, lua_upvalueindex(2));
  c->line[i] = line;
  return 0;
}

/* env.__index(env, name): upvalues values, lib. Settings read back as set. */
static int env_index(lua_State *L) {
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));
  return 1;
}

static int cfg_getenv(lua_State *L) {
  const char *v = getenv(luaL_checkstring(L, 1));
  if (v)
    lua_pushstring(L, v);
  else
    lua_pushnil(L);
  return 1;
}

/* A section must be plain data: a plugin sees a copy in another Lua state. */
static int check_plain(lua_State *L, int idx, int depth, const char **bad_key, const char **bad_type) {
  if (depth > MAX_DEPTH) {
    *bad_type = "table nested too deep (a cycle?)";
    return -1;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2), vt = lua_type(L, -1);
    if (depth == 0 && kt == LUA_TSTRING) *bad_key = lua_tostring(L, -2);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
      *bad_type = lua_typename(L, kt);
      lua_pop(L, 2);
      return -1;
    }
    if (vt == LUA_TTABLE) {
      if (check_plain(L, lua_gettop(L), depth + 1, bad_key, bad_type) != 0) {
        lua_pop(L, 2);
        return -1;
      }
    } else if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN) {
      *bad_type = lua_typename(L, vt);
      lua_pop(L, 2);
      return -1;
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* plugin "name" { ... }: the second call; upvalues ctx, sections, lines, name. */
static int cfg_plugin_section(lua_State *L) {
  run_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  const char *name = lua_tostring(L, lua_upvalueindex(4));
  int line = caller_line(L);
  if (lua_type(L, 1) != LUA_TTABLE)
    return raise_at(L, c, line, "plugin '%s': the section must be a table, as in plugin \"%s\" { ... }", name, name);
  lua_getfield(L, lua_upvalueindex(3), name);
  if (!lua_isnil(L, -1))
    return raise_at(L, c, line, "plugin '%s' is configured twice (first at line %d)", name, (int)lua_tointeger(L, -1));
  lua_pop(L, 1);
  const char *bad_key = NULL, *bad_type = NULL;
  if (check_plain(L, 1, 0, &bad_key, &bad_type) != 0) {
    if (bad_key)
      return raise_at(L, c, line, "plugin '%s': option '%s' holds a %s (only strings, numbers, booleans and tables)",
                      name, bad_key, bad_type);
    return raise_at(L, c, line, "plugin '%s': the section holds a %s (only strings, numbers, booleans and tables)",
                    name, bad_type);
  }
  lua_pushvalue(L, 1);
  lua_setfield(L, lua_upvalueindex(2), name);
  lua_pushinteger(L, line);
  lua_setfield(L, lua_upvalueindex(3), name);
  return 0;
}

/* plugin "name": upvalues ctx, sections, lines. */
static int cfg_plugin(lua_State *L) {
  run_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  if (lua_type(L, 1) != LUA_TSTRING || lua_tolstring(L, 1, &len) == NULL || len == 0 || len >= 128)
    return raise_at(L, c, caller_line(L), "plugin NAME { ... }: NAME must be a plugin's name (a string)");
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, cfg_plugin_section, 4);
  return 1;
}

/* Applies the recorded settings through the flags' parsers. values at idx. */
static void apply_settings(lua_State *L, run_ctx *c, int values) {
  for (size_t i = 0; i < N_SETTINGS; i++) {
    lua_getfield(L, values, settings[i].name);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    char flag[64], num[32], aerr[256];
    snprintf(flag, sizeof flag, "--%s", settings[i].name);
    for (char *f = flag + 2; *f; f++)
      if (*f == '_') *f = '-';
    const char *v;
    if (settings[i].kind == KIND_NUMBER) {
      snprintf(num, sizeof num, "%.0f", lua_tonumber(L, -1));
      v = num;
    } else {
      v = hubu_config_own(c->cfg, lua_tostring(L, -1));
      if (!v) luaL_error(L, "out of memory");
    }
    if (hubu_config_apply(c->cfg, flag, v, aerr, sizeof aerr) != 0)
      raise_at(L, c, c->line[i], "setting '%s': invalid value '%s' (see %s in hubud --help)", settings[i].name, v,
               flag);
    lua_pop(L, 1);
  }
}

/* lua_cpcall body: builds the sandbox, runs the file, applies the settings. */
static int protected_run(lua_State *L) {
  run_ctx *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  static const luaL_Reg libs[] = {
      {"", luaopen_base},
      {LUA_TABLIBNAME, luaopen_table},
      {LUA_STRLIBNAME, luaopen_string},
      {LUA_MATHLIBNAME, luaopen_math},
  };
  for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
    lua_pushcfunction(L, libs[i].func);
    lua_pushstring(L, libs[i].name);
    lua_call(L, 1, 0);
  }
  lua_pushlightuserdata(L, c);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_CTX);
  lua_newtable(L); /* 1: values */
  lua_newtable(L); /* 2: sections */
  lua_pushvalue(L, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_SECTIONS);
  lua_newtable(L); /* 3: section lines */

  lua_newtable(L); /* 4: lib */
  static const char *const base[] = {"assert",   "error", "ipairs", "next",   "pairs",  "pcall", "select", "tonumber",
                                     "tostring", "type",  "unpack", "xpcall", "string", "table", "math"};
  for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
    lua_getglobal(L, base[i]);
    lua_setfield(L, 4, base[i]);
  }
  lua_newtable(L);
  lua_pushcfunction(L, cfg_getenv);
  lua_setfield(L, -2, "getenv");
  lua_setfield(L, 4, "os");
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, cfg_plugin, 3);
  lua_setfield(L, 4, "plugin");

  lua_newtable(L); /* 5: env, empty: every global assignment reaches __newindex */
  lua_newtable(L); /* its metatable */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, env_index, 2);
  lua_setfield(L, -2, "__index");
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, env_newindex, 2);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, 5);

  if (luaL_loadfile(L, c->path) != 0) lua_error(L); /* "cannot open PATH" or "PATH:LINE: syntax" */
  lua_pushvalue(L, 5);
  lua_setfenv(L, -2);
  lua_sethook(L, step_hook, LUA_MASKCOUNT, 1000);
  lua_call(L, 0, 0);
  lua_sethook(L, NULL, 0, 0);
  apply_settings(L, c, 1);
  return 0;
}

/* Runs path against cfg. On success *out (when not NULL) receives the state,
 * its sections table in the registry; else the state is closed. */
static int run_file(hubu_config *cfg, const char *path, lua_State **out, char *err, size_t err_size) {
  lua_State *L = luaL_newstate();
  if (!L) {
    snprintf(err, err_size, "%s: out of memory", path);
    return -1;
  }
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF); /* interpreted: the step hook always fires */
  run_ctx c = {.cfg = cfg, .path = path};
  if (lua_cpcall(L, protected_run, &c) != 0) {
    const char *msg = lua_tostring(L, -1);
    if (msg)
      snprintf(err, err_size, "%s", msg);
    else
      snprintf(err, err_size, "%s: the file raised a %s", path, luaL_typename(L, -1));
    lua_close(L);
    return -1;
  }
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_CTX); /* c dies with this frame */
  if (out)
    *out = L;
  else
    lua_close(L);
  return 0;
}

int hubu_config_file_load(hubu_config *cfg, const char *path, char *err, size_t err_size) {
  return run_file(cfg, path, NULL, err, err_size);
}

/* Pushes onto to a copy of the table at from's idx (checked plain by cfg_plugin_section). */
static int copy_table(lua_State *from, int idx, lua_State *to, int depth) {
  if (depth > MAX_DEPTH || !lua_checkstack(from, 4) || !lua_checkstack(to, 4)) return -1;
  lua_newtable(to);
  lua_pushnil(from);
  while (lua_next(from, idx)) {
    int ok = 1;
    for (int slot = -2; slot <= -1 && ok; slot++) {
      size_t len;
      const char *s;
      switch (lua_type(from, slot)) {
        case LUA_TSTRING:
          s = lua_tolstring(from, slot, &len);
          lua_pushlstring(to, s, len);
          break;
        case LUA_TNUMBER: lua_pushnumber(to, lua_tonumber(from, slot)); break;
        case LUA_TBOOLEAN: lua_pushboolean(to, lua_toboolean(from, slot)); break;
        case LUA_TTABLE: ok = copy_table(from, lua_gettop(from) + 1 + slot, to, depth + 1) == 0; break;
        default: ok = 0;
      }
      if (!ok && slot == -1) lua_pop(to, 1); /* the key pushed already */
    }
    if (!ok) {
      lua_pop(from, 2);
      lua_pop(to, 1);
      return -1;
    }
    lua_rawset(to, -3);
    lua_pop(from, 1);
  }
  return 0;
}

int hubu_config_file_push_plugin_section(lua_State *L, const char *path, const char *plugin, char *err,
                                         size_t err_size) {
  if (!path) {
    lua_newtable(L);
    return 0;
  }
  hubu_config scratch;
  hubu_config_defaults(&scratch);
  lua_State *F = NULL;
  int r = run_file(&scratch, path, &F, err, err_size);
  hubu_config_free(&scratch);
  if (r != 0) return -1;
  lua_getfield(F, LUA_REGISTRYINDEX, REG_SECTIONS);
  lua_getfield(F, -1, plugin);
  if (lua_istable(F, -1)) {
    r = copy_table(F, lua_gettop(F), L, 0);
    if (r != 0) snprintf(err, err_size, "%s: plugin '%s': the section cannot be copied", path, plugin);
  } else {
    lua_newtable(L);
  }
  lua_close(F);
  return r;
}

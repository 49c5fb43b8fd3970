/* bench_hooks.c — `hubu-bench hooks`: the cost of a message.send dispatch,
 * measured in-process without a server. It runs hubud's own host.lua (the
 * same embedded bytes) in a LuaJIT state and calls host.send exactly as
 * hubu_plugins_on_send does (the SEND's fields as arguments, the verdict as
 * return values), with plugins loaded from --plugins DIR. The C functions
 * host.lua calls are the real ones where a send needs them (im.wordset, the
 * clocks) and inert stand-ins elsewhere (log: printed from warn up; timers:
 * never fire). Budget windows cost nothing here, as in hubud while every
 * call is in time (the count hook is armed only in a late call).
 *
 * Cases, each the best of --rounds rounds of --sends calls:
 *   none        host.send with no message.send handler
 *   empty       one handler that does nothing: the cost of a hook call
 *   NAME        each --plugin alone
 *   all         every --plugin together, in their priority order
 * Invariant: every send must come back unchanged (no verdict, no rewrite);
 * a plugin that refuses the bench's messages fails the run. */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "utf8.h"
#include "wordset.h"

extern const unsigned char hubu_host_lua[];
extern const size_t hubu_host_lua_len;

#define HOOKS_MAX_PLUGINS 16
#define HOOKS_USERS 100
#define HOOKS_BODY 100

typedef struct {
  const char *dir;
  const char *plugins[HOOKS_MAX_PLUGINS];
  int n_plugins;
  long sends, rounds, words;
  int json;
} hooks_options;

static double hooks_now_s(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the C side host.lua calls ---- */

static int hk_log(lua_State *L) {
  const char *level = luaL_checkstring(L, 1);
  if (strcmp(level, "debug") != 0 && strcmp(level, "info") != 0)
    fprintf(stderr, "hubu-bench hooks: %s plugin=%s event=%s %s\n", level, luaL_checkstring(L, 2),
            luaL_checkstring(L, 3), luaL_optstring(L, 4, ""));
  return 0;
}
static int hk_now(lua_State *L) {
  lua_pushnumber(L, hooks_now_s(CLOCK_REALTIME) * 1000.0);
  return 1;
}
static int hk_clock(lua_State *L) {
  lua_pushnumber(L, hooks_now_s(CLOCK_MONOTONIC));
  return 1;
}
static int hk_nothing(lua_State *L) {
  (void)L;
  return 0;
}
static int hk_timer_start(lua_State *L) {
  static int next_id;
  lua_pushinteger(L, ++next_id);
  return 1;
}
/* im.counter/im.gauge with labels check them as hubud does: UTF-8 without NUL. */
static int hk_label_ok(lua_State *L) {
  size_t len = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, hubu_utf8_valid(s, len, 0));
  return 1;
}
static int hk_unavailable(lua_State *L) {
  return luaL_error(L, "%s is not available in hubu-bench hooks", lua_tostring(L, lua_upvalueindex(1)));
}

/* Opens a state running host.lua; leaves the host table at index 1. */
static lua_State *hooks_state(void) {
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  luaL_openlibs(L);
  static const luaL_Reg real[] = {
      {"log", hk_log},
      {"now", hk_now},
      {"clock", hk_clock},
      {"wordset", hubu_wordset_new},
      {"budget_start", hk_nothing},
      {"budget_stop", hk_nothing},
      {"budget_reset", hk_nothing},
      {"budget_renew", hk_nothing},
      {"budget_ms", hk_nothing},
      {"timer_start", hk_timer_start},
      {"timer_stop", hk_nothing},
      {"config", hk_nothing},
      {"label_ok", hk_label_ok},
      {NULL, NULL},
  };
  static const char *const inert[] = {
      "send", "event", "token", "token_verify", "members",     "members_wait", "group_op",    "call_reply",
      "kick", "kv",    "hmac",  "http_start",   "http_cancel", "send_verdict", "replay_from", NULL};
  if (luaL_loadbuffer(L, (const char *)hubu_host_lua, hubu_host_lua_len, "@host.lua") != 0) goto fail;
  lua_newtable(L);
  for (const luaL_Reg *f = real; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  for (const char *const *n = inert; *n; n++) {
    lua_pushfstring(L, "C.%s", *n);
    lua_pushcclosure(L, hk_unavailable, 1);
    lua_setfield(L, -2, *n);
  }
  if (lua_pcall(L, 1, 1, 0) != 0) goto fail;
  return L;
fail:
  fprintf(stderr, "hubu-bench hooks: host.lua: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return NULL;
}

/* Settings for the shipped plugins the bench knows: nothing may be refused
 * (rates far above the bench's), and moderation gets --words words, none of
 * which the body holds. Other plugins get no section (their defaults). */
static void hooks_push_config(lua_State *L, const char *name, long words) {
  lua_newtable(L);
  if (!strcmp(name, "ratelimit")) {
    static const char *const keys[] = {"user_rate", "user_burst", "session_rate", "session_burst"};
    for (int i = 0; i < 4; i++) {
      lua_pushnumber(L, 1e12);
      lua_setfield(L, -2, keys[i]);
    }
  } else if (!strcmp(name, "moderation")) {
    lua_createtable(L, (int)words, 0);
    for (long i = 0; i < words; i++) {
      lua_pushfstring(L, "w%dword", (int)i);
      lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "words");
  }
}

/* host.load(name, path, config); 0 or -1 (reported). */
static int hooks_load(lua_State *L, const char *name, const char *path, long words) {
  lua_getfield(L, 1, "load");
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  hooks_push_config(L, name, words);
  if (lua_pcall(L, 3, 2, 0) != 0 || !lua_toboolean(L, -2)) {
    fprintf(stderr, "hubu-bench hooks: loading %s (%s): %s\n", name, path, lua_tostring(L, -1));
    lua_settop(L, 1);
    return -1;
  }
  lua_settop(L, 1);
  return 0;
}

/* Nanoseconds per host.send, best of o->rounds; < 0 on failure. */
static double hooks_measure(lua_State *L, const hooks_options *o) {
  lua_getfield(L, 1, "send");
  int send_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  char users[HOOKS_USERS][16], sessions[HOOKS_USERS][40];
  for (int i = 0; i < HOOKS_USERS; i++) {
    snprintf(users[i], sizeof users[i], "bp-s%d", i);
    snprintf(sessions[i], sizeof sessions[i], "d:bp-r%d:bp-s%d", i, i);
  }
  unsigned char body[HOOKS_BODY]; /* as pairs sends: 16 bytes of time and index, then letters */
  for (int j = 0; j < HOOKS_BODY; j++) body[j] = (unsigned char)('a' + j % 26);
  double best = -1;
  int top = lua_gettop(L);
  for (long r = 0; r < o->rounds; r++) {
    double t0 = hooks_now_s(CLOCK_MONOTONIC);
    for (long i = 0; i < o->sends; i++) {
      int k = (int)(i % HOOKS_USERS);
      uint64_t stamp = (uint64_t)i * 0x9E3779B97F4A7C15u;
      memcpy(body, &stamp, sizeof stamp);
      memcpy(body + 8, &i, sizeof i < 8 ? sizeof i : 8);
      lua_rawgeti(L, LUA_REGISTRYINDEX, send_ref);
      lua_pushstring(L, users[k]);
      lua_pushstring(L, "d1");
      lua_pushstring(L, sessions[k]);
      lua_pushnumber(L, (double)(i + 1));
      lua_pushlstring(L, (const char *)body, sizeof body);
      lua_pushstring(L, "");
      lua_pushnil(L);
      if (lua_pcall(L, 7, 4, 0) != 0) {
        fprintf(stderr, "hubu-bench hooks: host.send: %s\n", lua_tostring(L, -1));
        best = -1;
        goto done;
      }
      if (lua_tostring(L, top + 1)) {
        fprintf(stderr, "hubu-bench hooks: a plugin did not let the bench's message through: %s %s\n",
                lua_tostring(L, top + 1), lua_tostring(L, top + 2) ? lua_tostring(L, top + 2) : "");
        best = -1;
        goto done;
      }
      lua_settop(L, top);
    }
    double ns = (hooks_now_s(CLOCK_MONOTONIC) - t0) * 1e9 / (double)o->sends;
    if (best < 0 || ns < best) best = ns;
  }
done:
  luaL_unref(L, LUA_REGISTRYINDEX, send_ref);
  lua_settop(L, top);
  return best;
}

/* One case: a fresh state with the given plugins (name, path pairs). */
static double hooks_case(const hooks_options *o, const char *const *names, const char *const *paths, int n) {
  lua_State *L = hooks_state();
  if (!L) return -1;
  double ns = 0;
  for (int i = 0; i < n && ns == 0; i++)
    if (hooks_load(L, names[i], paths[i], o->words) != 0) ns = -1;
  if (ns == 0) ns = hooks_measure(L, o);
  lua_close(L);
  return ns;
}

static void hooks_usage(FILE *out) {
  fprintf(out,
          "usage: hubu-bench hooks [--plugins DIR] [--plugin NAME]... [--words N] [--sends N] [--rounds R] [--json]\n"
          "\n"
          "The cost of one message.send dispatch through hubud's host.lua, in-process (no\n"
          "server): ns per send with no handler, with one empty handler (the cost of a hook\n"
          "call), with each --plugin alone and with all of them.\n"
          "\n"
          "  --plugins DIR   where NAME.lua is (default: plugins)\n"
          "  --plugin NAME   a plugin to measure (repeatable; default: ratelimit and moderation);\n"
          "                  NAME is DIR/NAME.lua's NAME, of [A-Za-z0-9_.-] only\n"
          "  --words N       moderation's word list: N words, none in the body (default 1000)\n"
          "  --sends N       sends per round (default 500000)\n"
          "  --rounds R      rounds per case; the best one counts (default 5)\n"
          "  --json          one JSON object instead of a table\n"
          "\n"
          "ratelimit gets rates no bench reaches; every send must come back unchanged.\n");
}

/* A --plugin NAME is 1-255 bytes of [A-Za-z0-9_.-]: a file name in --plugins
 * DIR, which --json also writes into its keys ("NAME_ns") as it is. */
static int hooks_plugin_name_ok(const char *name) {
  size_t n = 0;
  for (const char *p = name; *p; p++, n++)
    if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' ||
          *p == '-'))
      return 0;
  return n > 0 && n <= 255;
}

int hubu_bench_hooks(int argc, char **argv) {
  hooks_options o = {.dir = "plugins", .sends = 500000, .rounds = 5, .words = 1000};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      hooks_usage(stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      o.json = 1;
      continue;
    } else if (!v) {
      bad = 1;
    } else if (!strcmp(a, "--plugins")) {
      o.dir = v;
    } else if (!strcmp(a, "--plugin")) {
      if (!hooks_plugin_name_ok(v)) {
        fprintf(stderr,
                "hubu-bench hooks: bad plugin name '%s': a plugin's file name without .lua, "
                "of [A-Za-z0-9_.-] only\n\n",
                v);
        hooks_usage(stderr);
        return 2;
      }
      if (o.n_plugins == HOOKS_MAX_PLUGINS)
        bad = 1;
      else
        o.plugins[o.n_plugins++] = v;
    } else if (!strcmp(a, "--words")) {
      bad = bench_parse_long(v, 0, 1000000, &o.words);
    } else if (!strcmp(a, "--sends")) {
      bad = bench_parse_long(v, 1, 100000000, &o.sends);
    } else if (!strcmp(a, "--rounds")) {
      bad = bench_parse_long(v, 1, 1000, &o.rounds);
    } else {
      bad = 1;
    }
    if (bad) {
      fprintf(stderr, "hubu-bench hooks: bad option %s%s%s\n\n", a, v ? " " : "", v ? v : "");
      hooks_usage(stderr);
      return 2;
    }
    i++;
  }
  if (o.n_plugins == 0) {
    o.plugins[o.n_plugins++] = "ratelimit";
    o.plugins[o.n_plugins++] = "moderation";
  }

  /* The empty handler: a plugin file of one line, written next to nothing else. */
  char empty_dir[] = "/tmp/hubu-bench-hooks.XXXXXX", empty_path[64];
  if (!mkdtemp(empty_dir)) {
    fprintf(stderr, "hubu-bench hooks: mkdtemp: %s\n", strerror(errno));
    return 1;
  }
  snprintf(empty_path, sizeof empty_path, "%s/empty.lua", empty_dir);
  FILE *f = fopen(empty_path, "w");
  int wrote = f && fputs("plugin:hook(\"message.send\", function(ev) end)\n", f) >= 0;
  if (f && fclose(f) != 0) wrote = 0;
  if (!wrote) {
    fprintf(stderr, "hubu-bench hooks: %s: %s\n", empty_path, strerror(errno));
    remove(empty_path);
    remove(empty_dir);
    return 1;
  }

  char paths[HOOKS_MAX_PLUGINS][4096];
  const char *path_of[HOOKS_MAX_PLUGINS];
  for (int i = 0; i < o.n_plugins; i++) {
    snprintf(paths[i], sizeof paths[i], "%s/%s.lua", o.dir, o.plugins[i]);
    path_of[i] = paths[i];
  }
  const char *empty_name = "empty", *empty_file = empty_path;
  double none = hooks_case(&o, NULL, NULL, 0);
  double empty = none < 0 ? -1 : hooks_case(&o, &empty_name, &empty_file, 1);
  double alone[HOOKS_MAX_PLUGINS];
  int failed = none < 0 || empty < 0;
  for (int i = 0; i < o.n_plugins && !failed; i++)
    failed = (alone[i] = hooks_case(&o, &o.plugins[i], &path_of[i], 1)) < 0;
  double all = failed ? -1 : hooks_case(&o, o.plugins, path_of, o.n_plugins);
  failed = failed || all < 0;
  remove(empty_path);
  remove(empty_dir);
  if (failed) return 1;

  if (o.json) {
    printf(
        "{\"scenario\":\"hooks\",\"sends\":%ld,\"rounds\":%ld,\"words\":%ld,\"none_ns\":%.1f,\"empty_ns\":%.1f,"
        "\"hook_call_ns\":%.1f",
        o.sends, o.rounds, o.words, none, empty, empty - none);
    for (int i = 0; i < o.n_plugins; i++) printf(",\"%s_ns\":%.1f", o.plugins[i], alone[i]);
    printf(",\"all_ns\":%.1f}\n", all);
  } else {
    printf("message.send through host.lua, ns per send (best of %ld rounds of %ld):\n", o.rounds, o.sends);
    printf("  %-24s %8.1f\n", "no handler", none);
    printf("  %-24s %8.1f   (one hook call: %.1f ns)\n", "one empty handler", empty, empty - none);
    for (int i = 0; i < o.n_plugins; i++)
      printf("  %-24s %8.1f   (%.1f ns over no handler)\n", o.plugins[i], alone[i], alone[i] - none);
    printf("  %-24s %8.1f   (%.1f ns over no handler)\n", "all of them", all, all - none);
  }
  return 0;
}

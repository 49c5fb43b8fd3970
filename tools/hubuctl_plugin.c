/* hubuctl_plugin.c — `hubuctl plugin check FILE|DIR [--config hubu.lua]
 * [--strict]`: loads each plugin into a scratch host (hubud's own host.lua,
 * no server: runtime/plugin/scratch.lua) with its section of the config
 * file, as hubud loads it, and prints every error and warning, one a line.
 * Exit status: 0 when every plugin loaded (warnings allowed, unless
 * --strict), 1 when one did not (or, with --strict, warned), 2 on a usage
 * error: for CI, as `prosodyctl check` does. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

int hubuctl_plugin(int argc, char **argv);
int luaopen_hubu_scratch(lua_State *L); /* scratch_native.c */

static int usage(void) {
  fprintf(stderr, "usage: hubuctl plugin check FILE|DIR [--config hubu.lua] [--strict]\n");
  return 2;
}

/* out(line): a line of the report on stdout. */
static int print_line(lua_State *L) {
  printf("%s\n", luaL_checkstring(L, 1));
  return 0;
}

int hubuctl_plugin(int argc, char **argv) {
  const char *target = NULL, *config = NULL;
  int strict = 0;
  if (argc < 1 || strcmp(argv[0], "check") != 0) return usage();
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--config") && i + 1 < argc) {
      config = argv[++i];
    } else if (!strncmp(argv[i], "--config=", 9)) {
      config = argv[i] + 9;
    } else if (!strcmp(argv[i], "--strict")) {
      strict = 1;
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: hubuctl plugin check FILE|DIR [--config hubu.lua] [--strict]\n");
      return 0;
    } else if (argv[i][0] == '-' || target) {
      return usage();
    } else {
      target = argv[i];
    }
  }
  if (!target) return usage();
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "hubuctl: plugin check: out of memory\n");
    return 1;
  }
  luaL_openlibs(L);
  int status = 1;
  lua_pushcfunction(L, luaopen_hubu_scratch);
  if (lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "hubuctl: plugin check: the scratch host did not start: %s\n", lua_tostring(L, -1));
    goto done;
  }
  lua_getfield(L, -1, "check");
  lua_pushstring(L, target);
  if (config)
    lua_pushstring(L, config);
  else
    lua_pushnil(L);
  lua_pushcfunction(L, print_line);
  lua_getfield(L, -5, "isdir");
  if (lua_pcall(L, 4, 2, 0) != 0) {
    fprintf(stderr, "hubuctl: plugin check: %s\n", lua_tostring(L, -1));
    goto done;
  }
  int errors = (int)lua_tointeger(L, -2), warnings = (int)lua_tointeger(L, -1);
  printf("%d error%s, %d warning%s\n", errors, errors == 1 ? "" : "s", warnings, warnings == 1 ? "" : "s");
  status = errors > 0 || (strict && warnings > 0) ? 1 : 0;
done:
  fflush(stdout);
  lua_close(L);
  return status;
}

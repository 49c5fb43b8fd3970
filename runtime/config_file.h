/* config_file.h — hubu.lua, hubud's Lua config file (docs/config.md).
 *
 * The file is Lua run in a sandbox, in a LuaJIT state of its own that lives
 * only while the file runs: no io, no os apart from os.getenv, no require, no
 * load*, no debug, the JIT off and an instruction cap. Settings are globals
 * named like the flags without "--" and with "-" -> "_" (heartbeat_ms = 5000);
 * a plugin's options are a section, plugin "moderation" { mode = "mask" }.
 * An unknown setting, a value of the wrong type and a value the flag's parser
 * refuses are errors that name the file and the line. */
#ifndef HUBU_CONFIG_FILE_H
#define HUBU_CONFIG_FILE_H

#include <stddef.h>

#include "config.h"

typedef struct lua_State lua_State;

/* Runs path and applies its settings to cfg through hubu_config_apply (after
 * the defaults, before the flags); string values are copied with
 * hubu_config_own. Every plugin section is checked (plain data only) but not
 * kept. 0, or -1 with "path:line: message" in err. */
int hubu_config_file_load(hubu_config *cfg, const char *path, char *err, size_t err_size);

/* Reads path again (settings checked against a scratch config, so an edit
 * that broke the file is refused here too) and pushes onto L a deep copy of
 * plugin's section: a table of strings, numbers, booleans and tables, empty
 * when the file has no section for it or path is NULL. 0, or -1 with nothing
 * pushed and the error in err. For the plugin host's load_one: a reload of a
 * plugin sees the section as the file says now. */
int hubu_config_file_push_plugin_section(lua_State *L, const char *path, const char *plugin, char *err,
                                         size_t err_size);

#endif

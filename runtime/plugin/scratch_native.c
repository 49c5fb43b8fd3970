/* scratch_native.c — the scratch plugin host (scratch.lua: hubud's host.lua
 * without a server) and the C functions it needs from hubud's own code:
 * im.wordset (wordset.c), im.hmac_sha256, tokens (token.c), the label check
 * and a clock. Two users: `hubuctl plugin check` calls hubu_scratch_push,
 * and busted specs `require "hubu_scratch"` (this file built as a Lua
 * module, luaopen_hubu_scratch; spec/helpers/plugin.lua).
 * Invariant: nothing here touches a server; the tokens it mints use its own
 * secret (hubu_scratch.secret(s) sets it), never a server's. */
#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "clock.h"
#include "token.h"
#include "utf8.h"
#include "wordset.h"

extern const unsigned char hubu_host_lua[];
extern const size_t hubu_host_lua_len;
extern const unsigned char hubu_scratch_lua[];
extern const size_t hubu_scratch_lua_len;

int luaopen_hubu_scratch(lua_State *L);

static char scratch_secret[256] = "scratch-secret";

static int n_hmac(lua_State *L) {
  size_t klen = 0, dlen = 0;
  const char *key = luaL_checklstring(L, 1, &klen), *data = luaL_checklstring(L, 2, &dlen);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  static const char digits[] = "0123456789abcdef";
  if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, dlen, mac, &mac_len))
    return luaL_error(L, "im.hmac_sha256: HMAC failed");
  char hex[2 * EVP_MAX_MD_SIZE];
  for (unsigned i = 0; i < mac_len; i++) {
    hex[2 * i] = digits[mac[i] >> 4];
    hex[2 * i + 1] = digits[mac[i] & 15];
  }
  lua_pushlstring(L, hex, 2 * mac_len);
  return 1;
}

static int n_label_ok(lua_State *L) {
  size_t len = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, hubu_utf8_valid(s, len, 0));
  return 1;
}

/* token(user, ttl_s [, reserved]) -> a token under the scratch secret. */
static int n_token(lua_State *L) {
  const char *user = luaL_checkstring(L, 1);
  lua_Number ttl = luaL_optnumber(L, 2, 86400);
  char tok[HUBU_TOKEN_MAX];
  const uint8_t *secret = (const uint8_t *)scratch_secret;
  uint64_t expiry = hubu_now_ms() / 1000 + (uint64_t)ttl;
  int n = lua_toboolean(L, 3) ? hubu_token_mint_reserved(secret, strlen(scratch_secret), user, expiry, tok, sizeof tok)
                              : hubu_token_mint(secret, strlen(scratch_secret), user, expiry, tok, sizeof tok);
  if (n < 0) return luaL_error(L, "im.token: invalid user id");
  lua_pushstring(L, tok);
  return 1;
}

/* token_verify(token, user) -> ok, status name, reserved token (as im.c's). */
static int n_token_verify(lua_State *L) {
  size_t len = 0;
  const char *tok = luaL_checklstring(L, 1, &len), *user = luaL_checkstring(L, 2);
  const uint8_t *secret = (const uint8_t *)scratch_secret;
  int reserved = len > 4 && !memcmp(tok, HUBU_TOKEN_RESERVED_PREFIX, 4);
  uint64_t now = hubu_now_ms() / 1000;
  hubu_token_status st = reserved ? hubu_token_verify_reserved(secret, strlen(scratch_secret), tok, len, user, now)
                                  : hubu_token_verify(secret, strlen(scratch_secret), tok, len, user, now);
  lua_pushboolean(L, st == HUBU_TOKEN_OK);
  lua_pushstring(L, hubu_token_status_name(st));
  lua_pushboolean(L, reserved && st == HUBU_TOKEN_OK);
  return 3;
}

static int n_secret(lua_State *L) {
  size_t len = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  if (len == 0 || len >= sizeof scratch_secret) return luaL_error(L, "secret: 1-255 bytes");
  memcpy(scratch_secret, s, len + 1);
  return 0;
}

static int n_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

static int n_isdir(lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
  return 1;
}

/* Stack: pushes scratch.lua's module table (M.new, M.check, ...), with
 * native.isdir and native.secret as M.isdir and M.secret. */
int luaopen_hubu_scratch(lua_State *L) {
  if (luaL_loadbuffer(L, (const char *)hubu_scratch_lua, hubu_scratch_lua_len, "@scratch.lua") != 0)
    return lua_error(L);
  static const luaL_Reg fns[] = {
      {"hmac", n_hmac},   {"label_ok", n_label_ok},      {"token", n_token}, {"token_verify", n_token_verify},
      {"clock", n_clock}, {"wordset", hubu_wordset_new}, {NULL, NULL},
  };
  lua_newtable(L);
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  lua_pushlstring(L, (const char *)hubu_host_lua, hubu_host_lua_len);
  lua_call(L, 2, 1);
  lua_pushcfunction(L, n_isdir);
  lua_setfield(L, -2, "isdir");
  lua_pushcfunction(L, n_secret);
  lua_setfield(L, -2, "secret");
  lua_pushcfunction(L, n_token);
  lua_setfield(L, -2, "token");
  return 1;
}

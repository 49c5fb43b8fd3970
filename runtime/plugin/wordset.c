/* wordset.c — im.wordset: a set of whole words for plugins, matched in C.
 *
 * The set is a full userdata ("hubu.wordset") owning an open-addressing hash
 * table (linear probing, power-of-two capacity, load <= 0.5) of the distinct
 * words, lowercased, stored back to back in one arena; __gc frees both.
 * find and mask scan the text once: they find each run of word bytes, skip
 * it without hashing unless its length is within the listed words' [min,
 * max], and otherwise hash it lowercased on the fly (FNV-1a) and look it up.
 * Nothing is allocated unless a word matches: find pushes the word only on a
 * hit, mask starts its buffer only at the first hit. */
#include "wordset.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WORDSET_MT "hubu.wordset"

/* A word is a run of these bytes: [0-9A-Za-z] and 0x80-0xff (Lua's
 * [%w\128-\255]+ in the C locale). */
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char word_byte[256] = {
    R16(0), R16(0), R16(0),                                                                 /* 0x00-0x2f */
    1,      1,      1,      1,      1,      1,      1,      1,      1, 1, 0, 0, 0, 0, 0, 0, /* 0x30-0x3f: 0-9 */
    0,      1,      1,      1,      1,      1,      1,      1,      1, 1, 1, 1, 1, 1, 1, 1, /* 0x40-0x4f: @, A-O */
    1,      1,      1,      1,      1,      1,      1,      1,      1, 1, 1, 0, 0, 0, 0, 0, /* 0x50-0x5f: P-Z */
    0,      1,      1,      1,      1,      1,      1,      1,      1, 1, 1, 1, 1, 1, 1, 1, /* 0x60-0x6f: `, a-o */
    1,      1,      1,      1,      1,      1,      1,      1,      1, 1, 1, 0, 0, 0, 0, 0, /* 0x70-0x7f: p-z */
    R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1),                         /* 0x80-0xff */
};
#undef R16

/* ASCII lowercase; every other byte as it is. */
static inline unsigned char lower(unsigned char c) {
  return (unsigned char)(c | ((unsigned)(c - 'A') < 26u ? 0x20 : 0));
}

typedef struct {
  uint32_t hash; /* of the lowercased word */
  uint32_t len;  /* 0: an empty slot (a word has at least one byte) */
  uint32_t off;  /* in the arena */
} ws_slot;

typedef struct {
  ws_slot *slots; /* owned: mask + 1 slots, or NULL for an empty set */
  char *arena;    /* owned: the distinct words, lowercased, back to back */
  uint32_t mask;  /* capacity - 1 */
  uint32_t n;     /* distinct words */
  size_t min_len; /* of the listed words; SIZE_MAX for an empty set */
  size_t max_len; /* 0 for an empty set */
} wordset;

static inline uint32_t hash_lower(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= lower(p[i]);
    h *= 16777619u;
  }
  return h ^ (h >> 15); /* the low bits pick the slot: fold the high ones in */
}

/* Is the word in slot s p[0..n) in any case? */
static inline int slot_is(const wordset *ws, const ws_slot *s, uint32_t h, const unsigned char *p, size_t n) {
  if (s->hash != h || s->len != n) return 0;
  const unsigned char *w = (const unsigned char *)ws->arena + s->off;
  for (size_t k = 0; k < n; k++)
    if (w[k] != lower(p[k])) return 0;
  return 1;
}

/* Is text word p[0..n) (any case) in the set? The set is not empty. */
static inline int ws_has(const wordset *ws, const unsigned char *p, size_t n) {
  uint32_t h = hash_lower(p, n);
  for (uint32_t i = h & ws->mask;; i = (i + 1) & ws->mask) { /* load <= 0.5: an empty slot ends it */
    const ws_slot *s = &ws->slots[i];
    if (s->len == 0) return 0;
    if (slot_is(ws, s, h, p, n)) return 1;
  }
}

/* The next listed word in s[*pos..len): its bounds [*from, *to), and *pos
 * moves past it. 0 when there is none. */
static int ws_next(const wordset *ws, const unsigned char *s, size_t len, size_t *pos, size_t *from, size_t *to) {
  size_t i = *pos;
  const size_t lo = ws->min_len, hi = ws->max_len;
  while (i < len) {
    while (i < len && !word_byte[s[i]]) i++;
    size_t b = i;
    while (i < len && word_byte[s[i]]) i++;
    size_t n = i - b;
    if (n >= lo && n <= hi && ws_has(ws, s + b, n)) {
      *from = b;
      *to = i;
      *pos = i;
      return 1;
    }
  }
  *pos = len;
  return 0;
}

/* Raises "<file:line of the caller>: im.wordset: <message>": level 1 is the
 * Lua code that called wordset (host.lua's wrapper tail-calls it, so that is
 * the plugin). */
static int ws_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  luaL_where(L, 1);
  lua_pushliteral(L, "im.wordset: ");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 3);
  return lua_error(L);
}

/* The stack value at idx as a word, or NULL. */
static const char *entry_word(lua_State *L, int idx, size_t *len) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER) return NULL; /* a number counts as its digits, like tostring */
  const char *w = lua_tolstring(L, idx, len);
  if (!w || *len == 0) return NULL;
  for (size_t i = 0; i < *len; i++)
    if (!word_byte[(unsigned char)w[i]]) return NULL;
  return w;
}

static int ws_gc(lua_State *L) {
  wordset *ws = luaL_checkudata(L, 1, WORDSET_MT);
  free(ws->slots);
  free(ws->arena);
  ws->slots = NULL;
  ws->arena = NULL;
  ws->n = 0;
  ws->mask = 0;
  ws->min_len = SIZE_MAX; /* matches nothing from now on */
  ws->max_len = 0;
  return 0;
}

/* set:find(text) -> start, stop, word (1-based, inclusive; the word as written) | nil */
static int ws_find(lua_State *L) {
  const wordset *ws = luaL_checkudata(L, 1, WORDSET_MT);
  size_t len = 0, pos = 0, from = 0, to = 0;
  const char *s = luaL_checklstring(L, 2, &len);
  if (ws->n == 0 || !ws_next(ws, (const unsigned char *)s, len, &pos, &from, &to)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)from + 1);
  lua_pushinteger(L, (lua_Integer)to);
  lua_pushlstring(L, s + from, to - from);
  return 3;
}

/* set:mask(text) -> masked, count | nil: each listed word becomes one '*' per
 * UTF-8 character (its bytes minus its continuation bytes 0x80-0xbf). */
static int ws_mask(lua_State *L) {
  const wordset *ws = luaL_checkudata(L, 1, WORDSET_MT);
  size_t len = 0, pos = 0, from = 0, to = 0;
  const char *s = luaL_checklstring(L, 2, &len);
  const unsigned char *u = (const unsigned char *)s;
  if (ws->n == 0 || !ws_next(ws, u, len, &pos, &from, &to)) {
    lua_pushnil(L);
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b); /* the text stays on the stack (arg 2) while b grows */
  size_t last = 0;
  lua_Integer count = 0;
  do {
    luaL_addlstring(&b, s + last, from - last);
    for (size_t i = from; i < to; i++)
      if ((u[i] & 0xc0) != 0x80) luaL_addchar(&b, '*');
    last = to;
    count++;
  } while (ws_next(ws, u, len, &pos, &from, &to));
  luaL_addlstring(&b, s + last, len - last);
  luaL_pushresult(&b);
  lua_pushinteger(L, count);
  return 2;
}

static int ws_len(lua_State *L) {
  const wordset *ws = luaL_checkudata(L, 1, WORDSET_MT);
  lua_pushinteger(L, (lua_Integer)ws->n);
  return 1;
}

static int ws_tostring(lua_State *L) {
  const wordset *ws = luaL_checkudata(L, 1, WORDSET_MT);
  lua_pushfstring(L, "wordset(%d word%s)", (int)ws->n, ws->n == 1 ? "" : "s");
  return 1;
}

/* Pushes the metatable, creating it on first use. */
static void push_metatable(lua_State *L) {
  if (luaL_newmetatable(L, WORDSET_MT)) {
    static const luaL_Reg meta[] = {{"__gc", ws_gc}, {"__len", ws_len}, {"__tostring", ws_tostring}, {NULL, NULL}};
    static const luaL_Reg methods[] = {{"find", ws_find}, {"mask", ws_mask}, {NULL, NULL}};
    luaL_register(L, NULL, meta);
    lua_createtable(L, 0, 2);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "hubu.wordset"); /* getmetatable(set) is this string, not the table */
    lua_setfield(L, -2, "__metatable");
  }
}

#define MAX_ENTRIES (1u << 28) /* slots stay addressable by uint32_t, with room for the 2x */

int hubu_wordset_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t count = lua_objlen(L, 1), total = 0, min_len = SIZE_MAX, max_len = 0;
  if (count > MAX_ENTRIES) return ws_error(L, "more than %d entries", (int)MAX_ENTRIES);

  /* Check every entry before anything is allocated: an error leaks nothing. */
  for (size_t i = 1; i <= count; i++) {
    size_t n = 0;
    lua_rawgeti(L, 1, (int)i);
    if (!entry_word(L, -1, &n)) return ws_error(L, "entry %d is not a single word", (int)i);
    total += n;
    if (n < min_len) min_len = n;
    if (n > max_len) max_len = n;
    lua_pop(L, 1);
    if (total > UINT32_MAX) return ws_error(L, "the words add up to more than 4 GiB");
  }

  /* From here the userdata owns every allocation: an error frees them in __gc. */
  wordset *ws = lua_newuserdata(L, sizeof *ws);
  memset(ws, 0, sizeof *ws);
  ws->min_len = SIZE_MAX;
  push_metatable(L);
  lua_setmetatable(L, -2);
  if (count == 0) return 1;
  uint32_t cap = 2;
  while (cap < 2 * count) cap *= 2;
  ws->slots = calloc(cap, sizeof *ws->slots);
  ws->arena = malloc(total);
  if (!ws->slots || !ws->arena) return ws_error(L, "out of memory");
  ws->mask = cap - 1;

  size_t used = 0;
  for (size_t i = 1; i <= count; i++) {
    size_t n = 0;
    lua_rawgeti(L, 1, (int)i);
    const unsigned char *w = (const unsigned char *)entry_word(L, -1, &n);
    if (!w || n > total - used) return ws_error(L, "the list changed while it was read");
    uint32_t h = hash_lower(w, n);
    uint32_t j = h & ws->mask;
    for (;; j = (j + 1) & ws->mask) {
      ws_slot *s = &ws->slots[j];
      if (s->len == 0) {
        for (size_t k = 0; k < n; k++) ws->arena[used + k] = (char)lower(w[k]);
        s->hash = h;
        s->len = (uint32_t)n;
        s->off = (uint32_t)used;
        used += n;
        ws->n++;
        break;
      }
      if (slot_is(ws, s, h, w, n)) break; /* a duplicate, in any case */
    }
    lua_pop(L, 1);
  }
  ws->min_len = min_len;
  ws->max_len = max_len;
  return 1;
}

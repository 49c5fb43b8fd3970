/* test_wordset.c — im.wordset (runtime/lua/wordset.c) in a bare LuaJIT state,
 * registered as hubu_plugins_open does (a C closure with one lightuserdata
 * upvalue): whole words only, ASCII case-insensitive, bytes >= 0x80 exact;
 * find gives the first listed word with 1-based inclusive bounds and the word
 * as written; mask gives one '*' per UTF-8 character and the count; neither
 * allocates when nothing matches; a bad entry is an error naming its index
 * and the caller's file:line; edge cases (empty text, empty list, separators
 * only, 1-byte and 300-byte words, 1 MB of text, binary bytes); and 3,000
 * random texts against the Lua gmatch reference moderation.lua used to be.
 *
 *   test_wordset            the checks
 *   test_wordset --bench    ns per find on the benchmark's 100-byte body */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "wordset.h"

static lua_State *L;

/* Runs a chunk (named "=t"); returns its results, each through tostring,
 * joined by single spaces, or "ERROR: <message>". */
static const char *eval(const char *code) {
  static char out[8192];
  int top = lua_gettop(L);
  lua_getglobal(L, "join");
  if (luaL_loadbuffer(L, code, strlen(code), "=t") != 0 || lua_pcall(L, 0, LUA_MULTRET, 0) != 0) {
    snprintf(out, sizeof out, "ERROR: %s", lua_tostring(L, -1));
  } else if (lua_pcall(L, lua_gettop(L) - top - 1, 1, 0) != 0) {
    snprintf(out, sizeof out, "ERROR: join: %s", lua_tostring(L, -1));
  } else {
    snprintf(out, sizeof out, "%s", lua_tostring(L, -1));
  }
  lua_settop(L, top);
  return out;
}

static void open_state(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushlightuserdata(L, L); /* host.c gives every C function one upvalue */
  lua_pushcclosure(L, hubu_wordset_new, 1);
  lua_setglobal(L, "wordset");
  CHECK(luaL_dostring(L,
                      "function join(...)\n"
                      "  local t = {}\n"
                      "  for i = 1, select('#', ...) do t[i] = tostring((select(i, ...))) end\n"
                      "  return table.concat(t, ' ')\n"
                      "end") == 0);
}

static void test_find(void) {
  CHECK_EQ_STR(eval("S = wordset{ 'darn', 'heck', 'frak', 'smeg', 'gorram', 'café', '日本' } return #S, tostring(S)"),
               "7 wordset(7 words)");
  CHECK_EQ_STR(eval("return S:find('well darn it')"), "6 9 darn");
  CHECK_EQ_STR(eval("return S:find('DARN!')"), "1 4 DARN");     /* at the very start */
  CHECK_EQ_STR(eval("return S:find('oh, Heck.')"), "5 8 Heck"); /* mixed case, as written */
  CHECK_EQ_STR(eval("return S:find('x sMeG')"), "3 6 sMeG");    /* at the very end */
  CHECK_EQ_STR(eval("return S:find('gorram')"), "1 6 gorram");  /* the whole text */
  CHECK_EQ_STR(eval("return S:find('(frak)')"), "2 5 frak");
  CHECK_EQ_STR(eval("return S:find('heck darn')"), "1 4 heck"); /* the first in the text */
  CHECK_EQ_STR(eval("return S:find('darned undarn heckle frakking smegma_free d4rn')"), "nil");
  CHECK_EQ_STR(eval("return S:find('smegma-free darn')"), "13 16 darn");
  CHECK_EQ_STR(eval("return S:find('un café noir')"), "4 8 café"); /* 5 bytes */
  CHECK_EQ_STR(eval("return S:find('CAFÉ Café')"), "7 11 Café");   /* É is not é: bytes >= 0x80 exact */
  CHECK_EQ_STR(eval("return S:find('日本語 cafés')"), "nil");      /* inside longer UTF-8 words */
  CHECK_EQ_STR(eval("return S:find('「日本」')"), "nil");          /* 「 is UTF-8 too: one long word */
  CHECK_EQ_STR(eval("return S:find('\\t\\n[日本]\\r')"), "4 9 日本");
  CHECK_EQ_STR(eval("return S:find('')"), "nil");
  CHECK_EQ_STR(eval("return S:find(' ,.!?-_\\t\\n\\0~')"), "nil");    /* separators only */
  CHECK_EQ_STR(eval("return S:find('\\0darn\\1\\127')"), "2 5 darn"); /* control bytes separate words */
  CHECK_EQ_STR(eval("return S:find('\\128darn darn\\255')"), "nil");  /* bytes >= 0x80 are word bytes */
  CHECK_EQ_STR(eval("return select('#', S:find('no'))"), "1");        /* one nil, not three */
}

static void test_mask(void) {
  CHECK_EQ_STR(eval("return S:mask('Well DARN it, heck! darned un café noir')"),
               "Well **** it, ****! darned un **** noir 3");
  CHECK_EQ_STR(eval("return S:mask('frak')"), "**** 1");
  CHECK_EQ_STR(eval("return S:mask('darn,darn;DARN')"), "****,****;**** 3");
  CHECK_EQ_STR(eval("return S:mask('日本 日本語 (日本)')"), "** 日本語 (**) 2"); /* one star per character */
  CHECK_EQ_STR(eval("return S:mask('clean text')"), "nil");
  CHECK_EQ_STR(eval("return select('#', S:mask('clean text'))"), "1");
  CHECK_EQ_STR(eval("return S:mask('')"), "nil");
  CHECK_EQ_STR(eval("local m, n = S:mask('\\0heck\\0\\255') return m == '\\0****\\0\\255', n"), "true 1");
  /* A 4-byte character and a stray continuation byte inside a listed word. */
  CHECK_EQ_STR(eval("local T = wordset{ 'a\\240\\159\\152\\128b', 'x\\128y' }\n"
                    "return T:mask('a\\240\\159\\152\\128b X\\128Y')"),
               "*** ** 2");
}

static void test_lists(void) {
  /* An empty list is a set that matches nothing. */
  CHECK_EQ_STR(eval("local E = wordset{} return #E, tostring(E), E:find('anything at all'), E:mask('x'), E:find('')"),
               "0 wordset(0 words) nil nil nil");
  /* Duplicates, in any case, count once; numbers are their digits. */
  CHECK_EQ_STR(eval("local D = wordset{ 'darn', 'DARN', 'Darn', 'heck', 'darn' } return #D, tostring(D)"),
               "2 wordset(2 words)");
  CHECK_EQ_STR(eval("return tostring(wordset{ 'x' })"), "wordset(1 word)");
  CHECK_EQ_STR(eval("local N = wordset{ 123, 'x' } return N:find('1234'), N:find('a 123 b')"), "nil 3 5 123");
  /* 1-byte words, and a word next to them. */
  CHECK_EQ_STR(eval("local O = wordset{ 'a', 'Z', '7' } return O:mask('a b z 7 ab A7 Z')"), "* b * * ab A7 * 4");
  CHECK_EQ_STR(eval("local O = wordset{ 'a', 'hello' } return O:find('hallo aa'), O:find('hi hello a')"),
               "nil 4 8 hello");
  /* Words of 64 bytes and more: the length filter lets them through. */
  CHECK_EQ_STR(eval("local w64, w65, w300 = ('x'):rep(64), ('Y'):rep(65), ('z'):rep(299) .. 'é'\n"
                    "local B = wordset{ w64, w65, w300, 'ok' }\n"
                    "local t = 'ok ' .. w64:upper() .. ' ' .. w65:lower() .. '-' .. w300 .. ' ' .. ('x'):rep(63)\n"
                    "local m, n = B:mask(t)\n"
                    "return select(2, B:find(' ' .. w300)), #m, n, m == '** ' .. ('*'):rep(64) .. ' ' ..\n"
                    "  ('*'):rep(65) .. '-' .. ('*'):rep(300) .. ' ' .. ('x'):rep(63), B:find(('x'):rep(65))"),
               "302 498 4 true nil");
  /* 1,000 words: each is found, in any case; near misses are not. */
  CHECK_EQ_STR(eval("local words = {}\n"
                    "for i = 0, 999 do words[#words + 1] = ('w%04dword'):format(i) end\n"
                    "local K, found = wordset(words), 0\n"
                    "for i = 0, 999 do if K:find(('. W%04dWORD .'):format(i)) == 3 then found = found + 1 end end\n"
                    "return #K, found, K:find('w1000word w0999wor w0999words ww0999word')"),
               "1000 1000 nil");
  /* 100,000 words with a shared prefix: the table still answers. */
  CHECK_EQ_STR(eval("local words = {}\n"
                    "for i = 1, 100000 do words[i] = 'word' .. i end\n"
                    "local H, found = wordset(words), 0\n"
                    "for i = 1, 100000, 7 do if H:find('x WORD' .. i) == 3 then found = found + 1 end end\n"
                    "return #H, found, H:find('word0 word100001 word')"),
               "100000 14286 nil");
}

static void test_big_text(void) {
  /* 1 MB with no listed word, then the same with one at the very end. */
  CHECK_EQ_STR(eval("BIG = ('lorem ipsum darnit heckle; '):rep(40330):sub(1, 1048576) return #BIG, S:find(BIG), "
                    "S:mask(BIG)"),
               "1048576 nil nil");
  CHECK_EQ_STR(eval("local t = BIG .. ' Darn' local m, n = S:mask(t)\n"
                    "return #m, n, m:sub(-5), S:find(t)"),
               "1048581 1  **** 1048578 1048581 Darn");
  /* 1 MB of one word: longer than any listed word, so never hashed. */
  CHECK_EQ_STR(eval("return S:find(('a'):rep(1048576)), S:mask(('\\200'):rep(1048576))"), "nil nil");
  /* 1 MB of random bytes: the same answer as the reference. */
  CHECK_EQ_STR(
      eval("math.randomseed(7) local t = {} for i = 1, 1048576 do t[i] = string.char(math.random(0, 255)) end\n"
           "local R = wordset{ 'a', 'b', 'c', 'x1' } local m, n = R:mask(table.concat(t))\n"
           "return #m <= 1048576, n > 0"),
      "true true");
  eval("BIG = nil collectgarbage()");
}

static void test_errors(void) {
  CHECK_EQ_STR(eval("return pcall(wordset)"), "false bad argument #1 to '?' (table expected, got no value)");
  CHECK_EQ_STR(eval("return pcall(wordset, 'darn')"), "false bad argument #1 to '?' (table expected, got string)");
  /* The error names the entry and the line of the caller. */
  CHECK_EQ_STR(eval("local ok, e = pcall(function()\n"
                    "  local s = wordset{ 'fine', 'two words' }\n"
                    "end)\n"
                    "return ok, e"),
               "false t:2: im.wordset: entry 2 is not a single word");
  /* host.lua's wrapper tail-calls wordset: the line is still the plugin's. */
  CHECK_EQ_STR(eval("local im = { wordset = function(list) return wordset(list) end }\n"
                    "local ok, e = pcall(function()\n"
                    "\n"
                    "  local s = im.wordset{ 'fine', 'ok', '' }\n"
                    "end)\n"
                    "return ok, e"),
               "false t:4: im.wordset: entry 3 is not a single word");
  static const char *const bad[] = {
      "{ 'a-b' }", "{ 'a b' }",       "{ ' a' }", "{ 'a\\0' }", "{ 'x.' }",  "{ true }",
      "{ {} }",    "{ 'ok', false }", "{ 1.5 }",  "{ -1 }",     "{ '\\t' }", "{ '_' }",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char code[256], want[128];
    snprintf(code, sizeof code, "local ok, e = pcall(wordset, %s) return ok, (e:gsub('^.-im%%.wordset: ', ''))",
             bad[i]);
    snprintf(want, sizeof want, "false entry %d is not a single word", strstr(bad[i], "'ok',") ? 2 : 1);
    if (!CHECK_EQ_STR(eval(code), want)) fprintf(stderr, "    list: %s\n", bad[i]);
  }
  /* Methods check what they are called on and with. */
  CHECK_EQ_STR(eval("return pcall(S.find, 'x', 'y')"),
               "false bad argument #1 to '?' (hubu.wordset expected, got string)");
  CHECK_EQ_STR(eval("return (pcall(S.find, S)), (pcall(S.mask, S, {})), (pcall(S.find, io.stdout, 'x'))"),
               "false false false");
  CHECK_EQ_STR(eval("return getmetatable(S), type(S)"), "hubu.wordset userdata");
  CHECK_EQ_STR(eval("return pcall(setmetatable, S, {})"),
               "false bad argument #1 to '?' (table expected, got userdata)");
}

/* find and mask allocate nothing when nothing matches (the JIT off: traces
 * are GC objects too). */
static void test_no_allocation(void) {
  CHECK_EQ_STR(eval("jit.off()\n"
                    "local text = ('lorem ipsum darnit, heckle 日本語 '):rep(3)\n"
                    "local find, mask = S.find, S.mask\n"
                    "collectgarbage() collectgarbage('stop')\n"
                    "local before = collectgarbage('count')\n"
                    "for _ = 1, 1000 do find(S, text) mask(S, text) end\n"
                    "local idle = collectgarbage('count') - before\n"
                    "for _ = 1, 1000 do find(S, text .. '') end\n"
                    "local hit = text .. ' darn'\n"
                    "before = collectgarbage('count')\n"
                    "for _ = 1, 1000 do find(S, hit) end\n"
                    "local grew = collectgarbage('count') - before\n"
                    "collectgarbage('restart') jit.on()\n"
                    "return idle, grew > 0"),
               "0 true");
}

/* Sets are freed by __gc (ASan's leak check sees the rest at lua_close). */
static void test_gc(void) {
  CHECK_EQ_STR(eval("for i = 1, 2000 do local s = wordset{ 'a' .. i, 'b', 'c' } assert(s:find('x a' .. i)) end\n"
                    "collectgarbage() collectgarbage()\n"
                    "for i = 1, 200 do pcall(wordset, { 'a', 'b', 'not one' }) end\n"
                    "collectgarbage()\n"
                    "return 'ok'"),
               "ok");
}

/* Random texts against the gmatch reference (moderation.lua before wordset). */
static const char reference_chunk[] =
    "local WORD = '[%w\\128-\\255]+'\n"
    "local function stars(w) local _, c = w:gsub('[\\128-\\191]', '') return ('*'):rep(#w - c) end\n"
    "local function ref(list, text)\n"
    "  local set = {}\n"
    "  for _, w in ipairs(list) do set[w:lower()] = true end\n"
    "  local out, last, first, n = {}, 1, nil, 0\n"
    "  for from, w, to in text:lower():gmatch('()(' .. WORD .. ')()') do\n"
    "    if set[w] then\n"
    "      first = first or { from, to - 1, text:sub(from, to - 1) }\n"
    "      out[#out + 1] = text:sub(last, from - 1) out[#out + 1] = stars(text:sub(from, to - 1))\n"
    "      last, n = to, n + 1\n"
    "    end\n"
    "  end\n"
    "  out[#out + 1] = text:sub(last)\n"
    "  return first, n > 0 and table.concat(out) or nil, n\n"
    "end\n"
    "local pieces = { 'a', 'B', 'ab', 'Ab', 'aB', 'abc', 'é', 'É', 'ée', '日本', '日', 'x9', '9',\n"
    "  ' ', ' ', '-', '.', '\\0', '\\n', '\\128', '\\191', '\\255', '_', 'Z', 'zz' }\n"
    "local vocab = { 'a', 'ab', 'abc', 'é', 'ée', '日本', 'x9', '9', 'zz', 'b\\191', 'Aé' }\n"
    "math.randomseed(42)\n"
    "local bad, first_bad = 0, nil\n"
    "for round = 1, 3000 do\n"
    "  local list = {}\n"
    "  for i = 1, math.random(0, 5) do list[i] = vocab[math.random(#vocab)] end\n"
    "  local t = {}\n"
    "  for i = 1, math.random(0, 30) do t[i] = pieces[math.random(#pieces)] end\n"
    "  local text = table.concat(t)\n"
    "  local set = wordset(list)\n"
    "  local rf, rm, rn = ref(list, text)\n"
    "  local s, e, w = set:find(text)\n"
    "  local m, n = set:mask(text)\n"
    "  local same = (rf == nil and s == nil or rf and rf[1] == s and rf[2] == e and rf[3] == w)\n"
    "    and rm == m and (n or 0) == rn\n"
    "  if not same then\n"
    "    bad = bad + 1\n"
    "    first_bad = first_bad or ('list {%s} text %q: find %s %s, mask %q'):format(\n"
    "      table.concat(list, ','), text, tostring(s), tostring(rf and rf[1]), tostring(m))\n"
    "  end\n"
    "end\n"
    "return bad, first_bad";

static void test_reference(void) { CHECK_EQ_STR(eval(reference_chunk), "0 nil"); }

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int l_now_ns(lua_State *Ls) {
  lua_pushnumber(Ls, now_ns());
  return 1;
}

/* ns per call on the body hubu-bench sends (16 random bytes, then 'a' + i % 26)
 * with the 1,000-word list, against the gmatch loop moderation.lua had. */
static int bench(void) {
  lua_register(L, "now_ns", l_now_ns);
  const char *r = eval(
      "local words = {}\n"
      "for i = 0, 999 do words[#words + 1] = ('w%04dword'):format(i) end\n"
      "math.randomseed(1)\n"
      "local b = {}\n"
      "for i = 0, 99 do b[#b + 1] = i < 16 and string.char(math.random(0, 255)) or string.char(97 + i % 26) end\n"
      "local body = table.concat(b)\n"
      "local set = wordset(words)\n"
      "local banned = {} for _, w in ipairs(words) do banned[w] = true end\n"
      "local function old(body)\n"
      "  local lower = body:lower()\n"
      "  for from, w, to in lower:gmatch('()([%w\\128-\\255]+)()') do if banned[w] then return from end end\n"
      "end\n"
      "local function new(body) return set:find(body) end\n"
      "local function newmask(body) return set:mask(body) end\n"
      "local function time(fn, arg, n)\n"
      "  for _ = 1, n / 10 do fn(arg) end\n"
      "  local best = math.huge\n"
      "  for _ = 1, 5 do\n"
      "    local t0 = now_ns()\n"
      "    for _ = 1, n do fn(arg) end\n"
      "    best = math.min(best, (now_ns() - t0) / n)\n"
      "  end\n"
      "  return best\n"
      "end\n"
      "local out = {}\n"
      "for _, mode in ipairs{ 'off', 'on' } do\n"
      "  jit[mode]() jit.flush()\n"
      "  out[#out + 1] = ('jit %s: find %.0f ns, mask %.0f ns, old gmatch loop %.0f ns'):format(mode,\n"
      "    time(new, body, 1000000), time(newmask, body, 1000000), time(old, body, 200000))\n"
      "end\n"
      "local hit = body:sub(1, 50) .. ' w0500word ' .. body:sub(62)\n"
      "jit.off()\n"
      "out[#out + 1] = ('a body with a listed word (jit off): find %.0f ns, mask %.0f ns, old %.0f ns'):format(\n"
      "  time(new, hit, 1000000), time(newmask, hit, 1000000), time(old, hit, 200000))\n"
      "return #body .. ' bytes, ' .. #set .. ' words\\n' .. table.concat(out, '\\n')");
  printf("%s\n", r);
  return strncmp(r, "ERROR", 5) == 0;
}

int main(int argc, char **argv) {
  open_state();
  if (argc > 1 && !strcmp(argv[1], "--bench")) {
    int rc = bench();
    lua_close(L);
    return rc;
  }
  test_find();
  test_mask();
  test_lists();
  test_big_text();
  test_errors();
  test_no_allocation();
  test_gc();
  test_reference();
  lua_close(L);
  return check_summary(argv[0]);
}

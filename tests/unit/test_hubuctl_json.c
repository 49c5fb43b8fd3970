/* test_hubuctl_json.c — hubuctl's JSON reader (tools/hubuctl_json.c): valid
 * documents parse to the right tree; numbers follow RFC 8259's grammar
 * exactly (+1, 01, .5, 1., 1e refused); a NUL byte is never taken for a
 * digit, whitespace or string content; every proper prefix of a document
 * fails cleanly (each parsed from a buffer of exactly its size, so ASan in
 * the sanitizer tree sees any read past the end); nesting stops at
 * HJ_MAX_DEPTH; escapes decode (\uXXXX, surrogate pairs, U+FFFD for what a C
 * string cannot hold) and bad ones are refused; error messages name the
 * right byte. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hubuctl_json.h"

static char last_err[256];

/* Parses len bytes of text from a heap copy of exactly len bytes. */
static int parse(const char *text, size_t len, hj_value *v) {
  char *copy = malloc(len ? len : 1);
  if (!copy) abort();
  if (len) memcpy(copy, text, len);
  last_err[0] = '\0';
  int r = hj_parse(copy, len, v, last_err, sizeof last_err);
  free(copy);
  return r;
}

static int is_empty(const hj_value *v) { return v->type == HJ_NULL && !v->n && !v->items && !v->keys && !v->string; }

/* A string literal with its length (NUL bytes inside it included). */
#define LIT(s) (s), (sizeof(s) - 1)

/* Checks that text is refused with an error naming why at byte at (at < 0: any byte). */
#define REFUSED(...) refused_at(__VA_ARGS__, __FILE__, __LINE__) /* (text, len, why, at) */
static void refused_at(const char *text, size_t len, const char *why, long at, const char *file, int line) {
  hj_value v;
  int r = parse(text, len, &v);
  check_count++;
  char want_at[48] = "";
  if (at >= 0) snprintf(want_at, sizeof want_at, " at byte %ld", at);
  int ok = r == -1 && is_empty(&v) && strstr(last_err, " at byte ") && (!why || strstr(last_err, why)) &&
           (at < 0 ||
            (strlen(last_err) >= strlen(want_at) && !strcmp(last_err + strlen(last_err) - strlen(want_at), want_at)));
  if (!ok) {
    check_fail_(file, line, "refused");
    fprintf(stderr, "    input (%zu bytes) \"%.*s\": r=%d, err \"%s\"; wanted \"%s%s\"\n", len, (int)len, text, r,
            last_err, why ? why : "...", want_at);
  }
  if (r == 0) hj_free(&v);
}

/* ---- valid documents ---- */

static void test_valid_documents(void) {
  static const char doc[] =
      "{\n  \"dir\": \"/srv/plugins\",\n  \"count\": 2,\n  \"plugins\": [\n"
      "    {\"name\": \"good\", \"version\": \"2\", \"priority\": 50, \"folder\": false,\n"
      "     \"hooks\": {\"connect\": 1, \"message.stored\": 1}, \"seconds\": 0.000125, \"reload_error\": null},\n"
      "    {\"name\": \"kit\", \"version\": null, \"priority\": -1.5e1, \"folder\": true, \"hooks\": {},"
      " \"reload_error\": {\"error\": \"kit.lua:1: oops\", \"at\": 1700000000.125}}\n  ],\n"
      "  \"not_loaded\": []\n}\n";
  hj_value v;
  if (!CHECK(parse(LIT(doc), &v) == 0)) {
    fprintf(stderr, "    %s\n", last_err);
    return;
  }
  CHECK(v.type == HJ_OBJECT);
  CHECK_EQ_U64(v.n, 4);
  CHECK_EQ_STR(v.keys[0], "dir"); /* key order kept */
  CHECK_EQ_STR(v.keys[3], "not_loaded");
  CHECK_EQ_STR(hj_str(&v, "dir", NULL), "/srv/plugins");
  CHECK(hj_num(&v, "count", -1) == 2);
  CHECK(hj_num(&v, "dir", -1) == -1); /* not a number */
  CHECK_EQ_STR(hj_str(&v, "count", "dflt"), "dflt");
  CHECK(hj_get(&v, "missing") == NULL);
  const hj_value *list = hj_get(&v, "plugins");
  if (CHECK(list && list->type == HJ_ARRAY && list->n == 2)) {
    const hj_value *good = &list->items[0], *kit = &list->items[1];
    CHECK_EQ_STR(hj_str(good, "name", NULL), "good");
    CHECK(hj_num(good, "priority", 0) == 50);
    CHECK(hj_num(good, "seconds", 0) == 0.000125);
    CHECK(hj_get(good, "folder") && hj_get(good, "folder")->type == HJ_BOOL && !hj_get(good, "folder")->boolean);
    CHECK(hj_get(good, "reload_error") && hj_get(good, "reload_error")->type == HJ_NULL);
    const hj_value *hooks = hj_get(good, "hooks");
    CHECK(hooks && hooks->type == HJ_OBJECT && hooks->n == 2 && !strcmp(hooks->keys[1], "message.stored"));
    CHECK(hj_num(kit, "priority", 0) == -15);
    CHECK(hj_get(kit, "folder") && hj_get(kit, "folder")->boolean == 1);
    CHECK(hj_get(kit, "hooks") && hj_get(kit, "hooks")->type == HJ_OBJECT && hj_get(kit, "hooks")->n == 0);
    CHECK_EQ_STR(hj_str(hj_get(kit, "reload_error"), "error", NULL), "kit.lua:1: oops");
    CHECK(hj_num(hj_get(kit, "reload_error"), "at", 0) == 1700000000.125);
  }
  CHECK(hj_get(&v, "not_loaded") && hj_get(&v, "not_loaded")->type == HJ_ARRAY && hj_get(&v, "not_loaded")->n == 0);
  if (list && list->n) {
    CHECK(hj_get(&list->items[0], "dir") == NULL); /* hj_get looks at one level only */
    CHECK(hj_get(list, "name") == NULL);           /* not an object */
  }
  CHECK(hj_get(NULL, "name") == NULL);
  hj_free(&v);
  CHECK(is_empty(&v));
  hj_free(&v); /* and again */

  /* Scalars at the top, whitespace around them. */
  CHECK(parse(LIT(" \t\r\n true \n"), &v) == 0 && v.type == HJ_BOOL && v.boolean == 1);
  CHECK(parse(LIT("false"), &v) == 0 && v.type == HJ_BOOL && v.boolean == 0);
  CHECK(parse(LIT("null"), &v) == 0 && v.type == HJ_NULL);
  CHECK(parse(LIT("\"\""), &v) == 0 && v.type == HJ_STRING && !strcmp(v.string, ""));
  hj_free(&v);
  CHECK(parse(LIT("[[], {}, [[]], {\"\": {}}]"), &v) == 0 && v.type == HJ_ARRAY && v.n == 4);
  if (v.n == 4) CHECK(v.items[3].type == HJ_OBJECT && !strcmp(v.items[3].keys[0], ""));
  hj_free(&v);
  CHECK(parse(LIT("{\"a\": 1, \"a\": 2}"), &v) == 0 && hj_num(&v, "a", 0) == 1); /* the first of duplicates */
  hj_free(&v);

  /* A NULL text of no bytes, and no room for an error message. */
  CHECK(hj_parse(NULL, 0, &v, last_err, sizeof last_err) == -1 && is_empty(&v));
  CHECK(hj_parse("[1]", 3, &v, NULL, 0) == 0 && v.n == 1);
  hj_free(&v);
  CHECK(hj_parse("[1", 2, &v, NULL, 0) == -1 && is_empty(&v));
}

/* ---- numbers ---- */

static void number_is(const char *text, double want, const char *file, int line) {
  hj_value v;
  int r = parse(text, strlen(text), &v);
  check_count++;
  if (r != 0 || v.type != HJ_NUMBER || !(v.number == want) || !signbit(v.number) != !signbit(want)) {
    check_fail_(file, line, "number_is");
    fprintf(stderr, "    \"%s\": r=%d err \"%s\" value %.17g, wanted %.17g\n", text, r, last_err,
            r == 0 ? v.number : 0.0, want);
  }
  if (r == 0) hj_free(&v);
}
#define NUMBER_IS(text, want) number_is((text), (want), __FILE__, __LINE__)

static void test_numbers(void) {
  NUMBER_IS("0", 0);
  NUMBER_IS("-0", -0.0);
  NUMBER_IS("7", 7);
  NUMBER_IS("-7", -7);
  NUMBER_IS("10", 10);
  NUMBER_IS("1234567890", 1234567890);
  NUMBER_IS("0.5", 0.5);
  NUMBER_IS("-0.5", -0.5);
  NUMBER_IS("10.25", 10.25);
  NUMBER_IS("1e2", 100);
  NUMBER_IS("1E2", 100);
  NUMBER_IS("1e+2", 100);
  NUMBER_IS("1E-2", 0.01);
  NUMBER_IS("0e0", 0);
  NUMBER_IS("-0.0e-0", -0.0);
  NUMBER_IS("2.5e003", 2500);
  NUMBER_IS(" 42 ", 42);
  NUMBER_IS("1e400", HUGE_VAL); /* grammatical; out of range for a double */
  /* Longer than any fixed buffer: still one number. */
  char big[400];
  memset(big, '9', sizeof big - 1);
  big[0] = '1';
  big[sizeof big - 1] = '\0';
  NUMBER_IS(big, strtod(big, NULL));

  /* Every form the grammar refuses, alone and inside an array. */
  static const char *const bad[] = {
      "+1",   "+0",    "01",       "00",        "-01", "-00", ".5",   "-.5",   "1.",  "-1.",  "1.e5", "1e",
      "1E",   "1e+",   "1e-",      "1E+",       "-",   "--1", "- 1",  "0x10",  "0X1", "1.5.", "1e5.", "1e1.5",
      "1ee1", "1e+-1", "Infinity", "-Infinity", "NaN", "inf", "-inf", "1_000", "0.",  "0.e1", "e1",   "E1",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    REFUSED(bad[i], strlen(bad[i]), NULL, -1);
    char in_array[64];
    snprintf(in_array, sizeof in_array, "[%s]", bad[i]);
    REFUSED(in_array, strlen(in_array), NULL, -1);
    snprintf(in_array, sizeof in_array, "{\"n\": %s}", bad[i]);
    REFUSED(in_array, strlen(in_array), NULL, -1);
  }
  /* The byte the message names: where the bad number starts. */
  REFUSED(LIT("[1, +1]"), "bad number", 4);
  REFUSED(LIT("[1, 01]"), "leading zero", 4);
  REFUSED(LIT("[1, -.5]"), "bad number", 4);
  REFUSED(LIT("[1, 1.]"), "after '.'", 4);
  REFUSED(LIT("[1, 2.0e]"), "exponent", 4);
  REFUSED(LIT("[1, 2]x"), "trailing text", 6);
  REFUSED(LIT("1 2"), "trailing text", 2);
}

/* ---- NUL bytes ---- */

static void test_nul_bytes(void) {
  /* Never a digit, a number's end, whitespace or a string byte. */
  REFUSED(LIT("\0"), "unexpected token", 0);
  REFUSED(LIT("\0\0\0"), "unexpected token", 0);
  REFUSED(LIT("-\0"), "bad number", 0);
  REFUSED(LIT("1\0"), "trailing text", 1);
  REFUSED(LIT("1.\0"), "bad number", 0);
  REFUSED(LIT("1e\0"), "bad number", 0);
  REFUSED(LIT("0\0001"), "trailing text", 1);
  REFUSED(LIT("[1,\0]"), "unexpected token", 3);
  REFUSED(LIT("[\0]"), "unexpected token", 1);
  REFUSED(LIT(" \0 1"), "unexpected token", 1);
  REFUSED(LIT("true\0"), "trailing text", 4);
  REFUSED(LIT("tr\0e"), "unexpected token", 0);
  REFUSED(LIT("{\0\"a\": 1}"), "expected a key", 1);
  REFUSED(LIT("{\"a\"\0: 1}"), "expected ':'", 4);
  REFUSED(LIT("{\"a\": 1\0}"), "expected ',' or '}'", 7);
  /* Inside strings: a raw NUL is a control character; escaped it is a bad escape. */
  REFUSED(LIT("\"\0\""), "control character", 1);
  REFUSED(LIT("\"ab\0cd\""), "control character", 3);
  REFUSED(LIT("{\"k\0\": 1}"), "control character", 3);
  REFUSED(LIT("[\"ok\", \"a\0\"]"), "control character", 9);
  REFUSED(LIT("\"\\\0\""), "bad escape", 1);
  REFUSED(LIT("\"\\u\0\0\0\0\""), "control character", 3);
  REFUSED(LIT("\"\\u00\0\0\""), "control character", 5);
  REFUSED(LIT("\"abc\0"), "control character", 4);
  /* \u0000 is well-formed JSON: it decodes to U+FFFD (the result is a C string). */
  hj_value v;
  if (CHECK(parse(LIT("\"a\\u0000b\""), &v) == 0)) {
    CHECK_EQ_STR(v.string, "a\xef\xbf\xbd\x62");
    hj_free(&v);
  }
}

/* ---- truncation ---- */

/* Every proper prefix of doc (which must be an object or array) fails, with an
 * offset inside the prefix; the whole of it parses. */
static void truncated_everywhere(const char *doc, size_t len, const char *file, int line) {
  hj_value v;
  check_count++;
  if (parse(doc, len, &v) != 0) {
    check_fail_(file, line, "the whole document parses");
    fprintf(stderr, "    %s\n", last_err);
    return;
  }
  hj_free(&v);
  for (size_t cut = 0; cut < len; cut++) {
    int r = parse(doc, cut, &v);
    const char *at = strstr(last_err, " at byte ");
    unsigned long off = at ? strtoul(at + 9, NULL, 10) : (unsigned long)-1;
    check_count++;
    if (r != -1 || !is_empty(&v) || !at || off > cut) {
      check_fail_(file, line, "a prefix is refused");
      fprintf(stderr, "    prefix of %zu bytes: r=%d err \"%s\"\n", cut, r, last_err);
    }
    if (r == 0) hj_free(&v);
  }
}
#define TRUNCATED_EVERYWHERE(doc) truncated_everywhere(LIT(doc), __FILE__, __LINE__)

static void test_truncation(void) {
  TRUNCATED_EVERYWHERE(
      "{\"dir\": \"/srv/pl\\u00fcgins\", \"count\": 2, \"plugins\": [{\"name\": \"good\\\"\\\\\\/\\n\","
      " \"priority\": -12.5e-1, \"big\": 10E+3, \"folder\": false, \"up\": true, \"gone\": null,"
      " \"smile\": \"\\ud83d\\ude00\", \"hooks\": {\"connect\": 1}}, [0, 1.25, []]]}");
  TRUNCATED_EVERYWHERE("[\"\\u20ac\", -0, 0.5e+7, \"\\\\\", {}]");
  TRUNCATED_EVERYWHERE("[[[[[[[[[[\"deep\"]]]]]]]]]]");
  /* Cut inside an escape: the string scanner stops at the end. */
  REFUSED(LIT("\"ab\\"), "unterminated string", 0);
  REFUSED(LIT("[\"ab\\"), "unterminated string", 1);
  REFUSED(LIT("\"\\u12"), "unterminated string", 0);
  REFUSED(LIT("\"\\u12\""), "bad \\u escape", 1);
  REFUSED(LIT("\"\\ud83d\\u"), "unterminated string", 0);
  REFUSED(LIT("\"\\\""), "unterminated string", 0); /* the quote is escaped */
  REFUSED(LIT("["), "unexpected end", 1);
  REFUSED(LIT("[1,2"), "expected ',' or ']'", 4);
  REFUSED(LIT("{\"a\":"), "unexpected end", 5);
  REFUSED(LIT("{\"a\""), "expected ':'", 4);
  REFUSED(LIT(""), "unexpected end", 0);
  REFUSED(LIT("   "), "unexpected end", 3);
}

/* ---- nesting ---- */

/* depth containers inside one another, arrays and objects in turn, inner
 * innermost; returns the offset of inner. */
static size_t nested(char *buf, int depth, const char *inner) {
  size_t n = 0, il = strlen(inner);
  for (int i = 0; i < depth; i++) {
    if (i % 2) {
      memcpy(buf + n, "{\"k\":", 5);
      n += 5;
    } else {
      buf[n++] = '[';
    }
  }
  size_t at = n;
  memcpy(buf + n, inner, il);
  n += il;
  for (int i = depth - 1; i >= 0; i--) buf[n++] = i % 2 ? '}' : ']';
  buf[n] = '\0';
  return at;
}

static void test_nesting(void) {
  static char buf[(HJ_MAX_DEPTH + 2) * 6 + 16];
  hj_value v;
  /* At the limit: HJ_MAX_DEPTH containers inside one another, a scalar or an empty one innermost. */
  nested(buf, HJ_MAX_DEPTH, "1");
  if (CHECK(parse(buf, strlen(buf), &v) == 0)) {
    const hj_value *p = &v;
    int depth = 0;
    while ((p->type == HJ_ARRAY || p->type == HJ_OBJECT) && p->n == 1) {
      p = &p->items[0];
      depth++;
    }
    CHECK_EQ_U64(depth, HJ_MAX_DEPTH);
    CHECK(p->type == HJ_NUMBER && p->number == 1);
    hj_free(&v);
  }
  nested(buf, HJ_MAX_DEPTH - 1, "[]");
  if (CHECK(parse(buf, strlen(buf), &v) == 0)) hj_free(&v);
  /* One over: refused at the bracket that goes too deep. */
  size_t at = nested(buf, HJ_MAX_DEPTH, "[]");
  REFUSED(buf, strlen(buf), "nested too deeply", (long)at);
  nested(buf, HJ_MAX_DEPTH, "{}");
  REFUSED(buf, strlen(buf), "nested too deeply", (long)at);
  nested(buf, HJ_MAX_DEPTH + 1, "1");
  REFUSED(buf, strlen(buf), "nested too deeply", -1);
  /* Far over, and unterminated: refused without recursing that far. */
  size_t deep = 1000000;
  char *d = malloc(deep);
  if (!d) abort();
  memset(d, '[', deep);
  REFUSED(d, deep, "nested too deeply", HJ_MAX_DEPTH);
  memset(d, '{', deep);
  REFUSED(d, deep, "expected a key", 1);
  for (size_t i = 0; i + 5 <= deep; i += 5) memcpy(d + i, "{\"\":[", 5);
  REFUSED(d, deep - deep % 5, "nested too deeply", -1);
  free(d);
}

/* ---- strings and escapes ---- */

static void string_is(const char *text, size_t len, const char *want, const char *file, int line) {
  hj_value v;
  int r = parse(text, len, &v);
  check_count++;
  if (r != 0 || v.type != HJ_STRING || strcmp(v.string, want) != 0) {
    check_fail_(file, line, "string_is");
    fprintf(stderr, "    %.*s: r=%d err \"%s\" got \"%s\", wanted \"%s\"\n", (int)len, text, r, last_err,
            r == 0 && v.string ? v.string : "", want);
  }
  if (r == 0) hj_free(&v);
}
#define STRING_IS(text, want) string_is(LIT(text), (want), __FILE__, __LINE__)

static void test_escapes(void) {
  STRING_IS("\"plain text\"", "plain text");
  STRING_IS("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", "\" \\ / \b \f \n \r \t");
  STRING_IS("\"\\u0041\\u004a\\u004A\"", "AJJ");
  STRING_IS("\"\\u00e9\\u00C9\"", "\xc3\xa9\xc3\x89"); /* 2-byte UTF-8 */
  STRING_IS("\"\\u20ac\"", "\xe2\x82\xac");            /* 3-byte */
  STRING_IS("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80"); /* a surrogate pair: 4-byte */
  STRING_IS("\"\\uD83D\\uDE00!\"", "\xf0\x9f\x98\x80!");
  STRING_IS("\"\\udbff\\udfff\"", "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
  STRING_IS("\"\\ud83d\"", "\xef\xbf\xbd");            /* a lone high half: U+FFFD */
  STRING_IS("\"\\ude00\"", "\xef\xbf\xbd");            /* a lone low half */
  STRING_IS("\"\\ud83d\\u0041\"", "\xef\xbf\xbd\x41"); /* a high half, then no low one */
  STRING_IS("\"\\ud83d\\ud83d\\ude00\"", "\xef\xbf\xbd\xf0\x9f\x98\x80");
  STRING_IS("\"\\ud83dx\"", "\xef\xbf\xbdx");
  STRING_IS("\"\\u001b[31m\"", "\x1b[31m"); /* decoded as sent: hubuctl's printing deals with it */
  STRING_IS("\"caf\xc3\xa9 \xe2\x82\xac\"", "caf\xc3\xa9 \xe2\x82\xac"); /* raw UTF-8 kept */
  STRING_IS("\"\x7f\"", "\x7f");                                         /* DEL is not a JSON control */

  static const struct {
    const char *text;
    const char *why;
    long at;
  } bad[] = {
      {"\"\\x41\"", "bad escape", 1},       {"\"\\a\"", "bad escape", 1},
      {"\"\\'\"", "bad escape", 1},         {"\"\\U0041\"", "bad escape", 1},
      {"\"\\0\"", "bad escape", 1},         {"\"ab\\ \"", "bad escape", 3},
      {"\"\\u\"", "bad \\u escape", 1},     {"\"\\u12\"", "bad \\u escape", 1},
      {"\"\\u123\"", "bad \\u escape", 1},  {"\"\\u12G4\"", "bad \\u escape", 1},
      {"\"\\u-123\"", "bad \\u escape", 1}, {"\"x\\ud83d\\u12\"", "bad \\u escape", 8},
      {"\"\x01\"", "control character", 1}, {"\"a\tb\"", "control character", 2},
      {"\"a\nb\"", "control character", 2}, {"\"\x1b[31m\"", "control character", 1},
      {"\"\x1f\"", "control character", 1}, {"'single'", "unexpected token", 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    REFUSED(bad[i].text, strlen(bad[i].text), bad[i].why, bad[i].at);
}

/* ---- mutants ---- */

/* Every byte of a document replaced by each of a few troublesome bytes, and
 * 20,000 random splices: whatever the verdict, no read outside the input and
 * no leak (ASan in the sanitizer tree), and a failure leaves *out empty. */
static void test_mutants(void) {
  static const char doc[] =
      "{\"a\": [1, -2.5e+3, \"x\\u00e9\\ud83d\\ude00\\n\"], \"b\": {\"c\": true, \"d\": null}, \"e\": false}";
  static const char troublesome[] = {'\0', '"', '\\', '[', ']', '{', '}', ',', ':', '-', '+', '.', '0', 'e', 'u', 'd'};
  size_t len = sizeof doc - 1, accepted = 0, runs = 0;
  char m[sizeof doc];
  hj_value v;
  int all_clean = 1;
  for (size_t i = 0; i < len; i++)
    for (size_t t = 0; t < sizeof troublesome; t++) {
      memcpy(m, doc, len);
      m[i] = troublesome[t];
      int r = parse(m, len, &v);
      runs++;
      if (r == 0) {
        accepted++;
        hj_free(&v);
      } else if (!is_empty(&v) || !strstr(last_err, " at byte ")) {
        all_clean = 0;
      }
    }
  uint64_t seed = 0x9e3779b97f4a7c15u;
  for (int k = 0; k < 20000; k++) {
    memcpy(m, doc, len);
    for (int edits = 0; edits < 4; edits++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      size_t at = (size_t)(seed >> 33) % len;
      m[at] = (seed >> 20) & 1 ? troublesome[(seed >> 8) % sizeof troublesome] : (char)(seed >> 24);
    }
    size_t n = (size_t)(seed >> 40) % (len + 1); /* and cut somewhere */
    int r = parse(m, n, &v);
    runs++;
    if (r == 0) {
      accepted++;
      hj_free(&v);
    } else if (!is_empty(&v) || !strstr(last_err, " at byte ")) {
      all_clean = 0;
    }
  }
  CHECK(all_clean);
  CHECK(accepted > 0 && accepted < runs);
}

int main(int argc, char **argv) {
  (void)argc;
  test_valid_documents();
  test_numbers();
  test_nul_bytes();
  test_truncation();
  test_nesting();
  test_escapes();
  test_mutants();
  return check_summary(argv[0]);
}

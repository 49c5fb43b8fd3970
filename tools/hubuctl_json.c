/* hubuctl_json.c — the JSON reader of hubuctl_json.h: recursive descent over
 * the text, strings decoded (escapes, \uXXXX with surrogate pairs) into
 * owned copies, numbers held to RFC 8259's grammar, nesting limited
 * (HJ_MAX_DEPTH) so hostile input cannot exhaust the stack. */
#include "hubuctl_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every scanner below reads only bytes in [p, end): a bound is checked before
 * each read, the cursor never moves past end, and a byte is classified by
 * comparisons (never strchr, whose set also holds the terminating NUL). */
typedef struct {
  const char *p, *start, *end;
  char *err;
  size_t err_size;
  int failed;
} hj_parser;

/* Records why at byte offset at (the first failure wins); returns -1. */
static int fail_at(hj_parser *ps, const char *at, const char *why) {
  if (!ps->failed && ps->err && ps->err_size)
    snprintf(ps->err, ps->err_size, "%s at byte %zu", why, (size_t)(at - ps->start));
  ps->failed = 1;
  return -1;
}

static int fail(hj_parser *ps, const char *why) { return fail_at(ps, ps->p, why); }

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static void skip_ws(hj_parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int literal(hj_parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "unexpected token");
  ps->p += n;
  return 0;
}

/* The four hex digits at p (all before lim) into *out; 0, or -1 (nothing read past lim). */
static int hex4(const char *p, const char *lim, unsigned *out) {
  if (lim - p < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

static size_t utf8_put(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* At the opening quote. First finds the closing quote (a raw control byte,
 * NUL included, is an error; an escape takes two bytes only when both are
 * there), then decodes the bytes before it: every read of the second pass
 * stays below the closing quote. The decoded string never outgrows its
 * source text. \u0000 and unpaired surrogates become U+FFFD (the result is
 * a C string). */
static int string(hj_parser *ps, char **out) {
  const char *open = ps->p, *s = open + 1, *q = s;
  while (q < ps->end && *q != '"') {
    if ((unsigned char)*q < 0x20) return fail_at(ps, q, "control character in a string");
    if (*q == '\\' && ps->end - q < 2) {
      q = ps->end;
      break;
    }
    q += *q == '\\' ? 2 : 1;
  }
  if (q >= ps->end) return fail_at(ps, open, "unterminated string");
  char *o = malloc((size_t)(q - s) + 1), *w = o;
  if (!o) return fail_at(ps, open, "out of memory");
  const char *p = s;
  while (p < q) {
    if (*p != '\\') {
      *w++ = *p++;
      continue;
    }
    const char *esc = p; /* the backslash; its escape letter is before q */
    p += 2;
    unsigned cp = 0, lo = 0;
    switch (esc[1]) {
      case '"': *w++ = '"'; break;
      case '\\': *w++ = '\\'; break;
      case '/': *w++ = '/'; break;
      case 'b': *w++ = '\b'; break;
      case 'f': *w++ = '\f'; break;
      case 'n': *w++ = '\n'; break;
      case 'r': *w++ = '\r'; break;
      case 't': *w++ = '\t'; break;
      case 'u':
        if (hex4(p, q, &cp) != 0) {
          free(o);
          return fail_at(ps, esc, "bad \\u escape");
        }
        p += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && q - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, q, &lo) == 0 &&
            lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          p += 6;
        }
        if (cp == 0 || (cp >= 0xd800 && cp < 0xe000)) cp = 0xfffd; /* no NUL inside a C string */
        w += utf8_put(w, cp); /* at most 3 bytes for the 6 of \uXXXX, 4 for the 12 of a pair */
        break;
      default: free(o); return fail_at(ps, esc, "bad escape");
    }
  }
  ps->p = q + 1;
  *w = '\0';
  *out = o;
  return 0;
}

/* RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? — checked here,
 * then converted by strtod (which alone would take more: +1, .5, 0x10, inf). */
static int number(hj_parser *ps, double *out) {
  const char *s = ps->p, *p = s, *e = ps->end;
  if (p < e && *p == '-') p++;
  if (p >= e || !is_digit(*p)) return fail_at(ps, s, "bad number");
  if (*p == '0') {
    p++;
    if (p < e && is_digit(*p)) return fail_at(ps, s, "bad number (leading zero)");
  } else {
    while (p < e && is_digit(*p)) p++;
  }
  if (p < e && *p == '.') {
    p++;
    if (p >= e || !is_digit(*p)) return fail_at(ps, s, "bad number (no digit after '.')");
    while (p < e && is_digit(*p)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || !is_digit(*p)) return fail_at(ps, s, "bad number (no digit in the exponent)");
    while (p < e && is_digit(*p)) p++;
  }
  size_t n = (size_t)(p - s);
  char small[64], *tmp = n < sizeof small ? small : malloc(n + 1);
  if (!tmp) return fail_at(ps, s, "out of memory");
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  char *stop = NULL;
  *out = strtod(tmp, &stop);
  int whole = stop == tmp + n;
  if (tmp != small) free(tmp);
  if (!whole) return fail_at(ps, s, "bad number");
  ps->p = p;
  return 0;
}

static int value(hj_parser *ps, hj_value *v, int depth);

/* Appends a zeroed item to v (an array or object); NULL when memory runs out. */
static hj_value *push(hj_value *v, char *key) {
  hj_value *items = realloc(v->items, (v->n + 1) * sizeof *items);
  if (!items) return NULL;
  v->items = items;
  if (v->type == HJ_OBJECT) {
    char **keys = realloc(v->keys, (v->n + 1) * sizeof *keys);
    if (!keys) return NULL;
    v->keys = keys;
    keys[v->n] = key;
  }
  memset(&items[v->n], 0, sizeof items[v->n]);
  return &items[v->n++];
}

/* At the opening bracket of a container nested depth deep (the outermost: 0). */
static int container(hj_parser *ps, hj_value *v, int depth, char close) {
  v->type = close == '}' ? HJ_OBJECT : HJ_ARRAY;
  if (depth >= HJ_MAX_DEPTH) return fail(ps, "nested too deeply");
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    return 0;
  }
  for (;;) {
    char *key = NULL;
    skip_ws(ps);
    if (v->type == HJ_OBJECT) {
      if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected a key");
      if (string(ps, &key) != 0) return -1;
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':') {
        free(key);
        return fail(ps, "expected ':'");
      }
      ps->p++;
    }
    hj_value *item = push(v, key);
    if (!item) {
      free(key);
      return fail(ps, "out of memory");
    }
    if (value(ps, item, depth + 1) != 0) return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      return 0;
    }
    return fail(ps, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

/* A value inside depth containers. */
static int value(hj_parser *ps, hj_value *v, int depth) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, "unexpected end");
  switch (*ps->p) {
    case '{': return container(ps, v, depth, '}');
    case '[': return container(ps, v, depth, ']');
    case '"': v->type = HJ_STRING; return string(ps, &v->string);
    case 't':
      v->type = HJ_BOOL;
      v->boolean = 1;
      return literal(ps, "true");
    case 'f': v->type = HJ_BOOL; return literal(ps, "false");
    case 'n': v->type = HJ_NULL; return literal(ps, "null");
    case '-':
    case '+':
    case '.': /* the last two only to be refused as a bad number */
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9': v->type = HJ_NUMBER; return number(ps, &v->number);
    default: return fail(ps, "unexpected token");
  }
}

int hj_parse(const char *text, size_t len, hj_value *out, char *err, size_t err_size) {
  if (!text) { /* no arithmetic on a null pointer: an empty text */
    text = "";
    len = 0;
  }
  hj_parser ps = {text, text, text + len, err, err_size, 0};
  memset(out, 0, sizeof *out);
  if (value(&ps, out, 0) == 0) {
    skip_ws(&ps);
    if (ps.p == ps.end) return 0;
    fail(&ps, "trailing text");
  }
  hj_free(out);
  return -1;
}

void hj_free(hj_value *v) {
  for (size_t i = 0; i < v->n; i++) {
    hj_free(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->string);
  memset(v, 0, sizeof *v);
}

const hj_value *hj_get(const hj_value *v, const char *key) {
  if (!v || v->type != HJ_OBJECT) return NULL;
  for (size_t i = 0; i < v->n; i++)
    if (v->keys[i] && !strcmp(v->keys[i], key)) return &v->items[i];
  return NULL;
}

const char *hj_str(const hj_value *v, const char *key, const char *dflt) {
  const hj_value *m = hj_get(v, key);
  return m && m->type == HJ_STRING ? m->string : dflt;
}

double hj_num(const hj_value *v, const char *key, double dflt) {
  const hj_value *m = hj_get(v, key);
  return m && m->type == HJ_NUMBER ? m->number : dflt;
}

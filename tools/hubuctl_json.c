/* hubuctl_json.c — the JSON reader of hubuctl_json.h: recursive descent over
 * the text, strings decoded (escapes, \uXXXX with surrogate pairs) into
 * owned copies, nesting limited so hostile input cannot exhaust the stack. */
#include "hubuctl_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HJ_MAX_DEPTH 64

typedef struct {
  const char *p, *start, *end;
  char *err;
  size_t err_size;
  int failed;
} hj_parser;

static int fail(hj_parser *ps, const char *why) {
  if (!ps->failed) snprintf(ps->err, ps->err_size, "%s at byte %zu", why, (size_t)(ps->p - ps->start));
  ps->failed = 1;
  return -1;
}

static void skip_ws(hj_parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int literal(hj_parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "unexpected token");
  ps->p += n;
  return 0;
}

static int hex4(hj_parser *ps, unsigned *out) {
  if (ps->end - ps->p < 4) return fail(ps, "short \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = *ps->p++;
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return fail(ps, "bad \\u escape");
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

/* At the opening quote. The decoded string never outgrows its source text. */
static int string(hj_parser *ps, char **out) {
  ps->p++;
  const char *s = ps->p;
  while (ps->p < ps->end && *ps->p != '"') ps->p += *ps->p == '\\' ? 2 : 1;
  if (ps->p >= ps->end) return fail(ps, "unterminated string");
  size_t cap = (size_t)(ps->p - s) + 1;
  char *o = malloc(cap), *w = o;
  if (!o) return fail(ps, "out of memory");
  ps->p = s;
  while (*ps->p != '"') {
    unsigned char c = (unsigned char)*ps->p++;
    if (c < 0x20) {
      free(o);
      return fail(ps, "control character in a string");
    }
    if (c != '\\') {
      *w++ = (char)c;
      continue;
    }
    char e = *ps->p++;
    unsigned cp = 0;
    switch (e) {
      case '"': *w++ = '"'; break;
      case '\\': *w++ = '\\'; break;
      case '/': *w++ = '/'; break;
      case 'b': *w++ = '\b'; break;
      case 'f': *w++ = '\f'; break;
      case 'n': *w++ = '\n'; break;
      case 'r': *w++ = '\r'; break;
      case 't': *w++ = '\t'; break;
      case 'u':
        if (hex4(ps, &cp) != 0) {
          free(o);
          return -1;
        }
        if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
          const char *back = ps->p;
          unsigned lo = 0;
          ps->p += 2;
          if (hex4(ps, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else {
            ps->failed = 0; /* not a pair: the high half alone becomes U+FFFD */
            ps->p = back;
          }
        }
        if (cp == 0 || (cp >= 0xd800 && cp < 0xe000)) cp = 0xfffd; /* no NUL inside a C string */
        w += utf8_put(w, cp); /* at most 3 bytes for the 6 of \uXXXX, 4 for the 12 of a pair */
        break;
      default:
        free(o);
        return fail(ps, "bad escape");
    }
  }
  ps->p++;
  *w = '\0';
  *out = o;
  return 0;
}

static int number(hj_parser *ps, double *out) {
  const char *s = ps->p;
  if (ps->p < ps->end && *ps->p == '-') ps->p++;
  while (ps->p < ps->end && strchr("0123456789.eE+-", *ps->p)) ps->p++;
  char tmp[64];
  size_t n = (size_t)(ps->p - s);
  if (n == 0 || n >= sizeof tmp) return fail(ps, "bad number");
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  char *end = NULL;
  *out = strtod(tmp, &end);
  if (*end != '\0') return fail(ps, "bad number");
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

static int container(hj_parser *ps, hj_value *v, int depth, char close) {
  v->type = close == '}' ? HJ_OBJECT : HJ_ARRAY;
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

static int value(hj_parser *ps, hj_value *v, int depth) {
  if (depth > HJ_MAX_DEPTH) return fail(ps, "nested too deeply");
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, "unexpected end");
  switch (*ps->p) {
    case '{': return container(ps, v, depth, '}');
    case '[': return container(ps, v, depth, ']');
    case '"': v->type = HJ_STRING; return string(ps, &v->string);
    case 't': v->type = HJ_BOOL; v->boolean = 1; return literal(ps, "true");
    case 'f': v->type = HJ_BOOL; return literal(ps, "false");
    case 'n': v->type = HJ_NULL; return literal(ps, "null");
    default: v->type = HJ_NUMBER; return number(ps, &v->number);
  }
}

int hj_parse(const char *text, size_t len, hj_value *out, char *err, size_t err_size) {
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

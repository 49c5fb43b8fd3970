/* json.c — JSON output (json.h): the string escaper and the writer built on it. */
#include "json.h"

#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

int hubu_json_append_string(hubu_buf *out, const char *s, size_t len) {
  int rc = hubu_buf_append(out, "\"", 1);
  const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
  while (p < end && rc == 0) {
    unsigned char ch = *p;
    size_t seq = ch >= 0x80 ? hubu_utf8_seq_len(p, (size_t)(end - p)) : 0;
    if ((ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') || seq) {
      p += seq ? seq : 1;
      continue;
    }
    rc |= hubu_buf_append(out, run, (size_t)(p - run));
    char esc[8];
    switch (ch) {
      case '"': memcpy(esc, "\\\"", 3); break;
      case '\\': memcpy(esc, "\\\\", 3); break;
      case '\n': memcpy(esc, "\\n", 3); break;
      case '\r': memcpy(esc, "\\r", 3); break;
      case '\t': memcpy(esc, "\\t", 3); break;
      case '\b': memcpy(esc, "\\b", 3); break;
      case '\f': memcpy(esc, "\\f", 3); break;
      default:
        if (ch < 0x80)
          snprintf(esc, sizeof esc, "\\u%04x", ch);
        else
          memcpy(esc, "\\ufffd", 7); /* a byte that is not UTF-8 */
        break;
    }
    rc |= hubu_buf_append(out, esc, strlen(esc));
    run = ++p;
  }
  rc |= hubu_buf_append(out, run, (size_t)(p - run));
  rc |= hubu_buf_append(out, "\"", 1);
  return rc ? -1 : 0;
}

/* ---- the writer ---- */

void hubu_json_init(hubu_json_writer *w, hubu_buf *buf, int *failed) {
  memset(w, 0, sizeof *w);
  w->buf = buf;
  w->failed = failed ? failed : &w->own_failed;
}

int hubu_json_failed(const hubu_json_writer *w) { return *w->failed; }

static void raw(hubu_json_writer *w, const char *s, size_t n) {
  if (!*w->failed && hubu_buf_append(w->buf, s, n) != 0) *w->failed = 1;
}

static void indent(hubu_json_writer *w) {
  static const char spaces[] = "                ";
  size_t n = (size_t)(2 * w->depth);
  raw(w, "\n", 1);
  raw(w, spaces, n < sizeof spaces - 1 ? n : sizeof spaces - 1);
}

/* The separator and line break before a value (or a key) in the open container. */
static void item(hubu_json_writer *w) {
  if (w->after_key) {
    w->after_key = 0;
    return;
  }
  if (w->depth == 0) return;
  int d = w->depth;
  if (w->has_items[d]) raw(w, w->is_inline[d] ? ", " : ",", w->is_inline[d] ? 2 : 1);
  w->has_items[d] = 1;
  if (!w->is_inline[d]) indent(w);
}

static void string(hubu_json_writer *w, const char *s, size_t len) {
  if (!*w->failed && hubu_json_append_string(w->buf, s, len) != 0) *w->failed = 1;
}

void hubu_json_key(hubu_json_writer *w, const char *k) {
  if (!k) return;
  item(w);
  string(w, k, strlen(k));
  raw(w, ": ", 2);
  w->after_key = 1;
}

void hubu_json_open(hubu_json_writer *w, const char *k, char opener, int is_inline) {
  hubu_json_key(w, k);
  item(w);
  raw(w, &opener, 1);
  if (w->depth + 1 >= HUBU_JSON_MAX_DEPTH) { /* a programming error: keep the output well-formed */
    *w->failed = 1;
    return;
  }
  w->depth++;
  w->has_items[w->depth] = 0;
  w->is_inline[w->depth] = (uint8_t)(is_inline || (w->depth > 1 && w->is_inline[w->depth - 1]));
  w->closer[w->depth] = opener == '{' ? '}' : ']';
}

void hubu_json_close(hubu_json_writer *w) {
  if (w->depth == 0) return;
  int d = w->depth--;
  if (w->has_items[d] && !w->is_inline[d]) indent(w);
  raw(w, &w->closer[d], 1);
  if (w->depth == 0) raw(w, "\n", 1);
}

void hubu_json_strn(hubu_json_writer *w, const char *k, const char *s, size_t len) {
  hubu_json_key(w, k);
  item(w);
  if (s)
    string(w, s, len);
  else
    raw(w, "null", 4);
}

void hubu_json_str(hubu_json_writer *w, const char *k, const char *s) { hubu_json_strn(w, k, s, s ? strlen(s) : 0); }

void hubu_json_u64(hubu_json_writer *w, const char *k, uint64_t v) {
  char num[24];
  hubu_json_key(w, k);
  item(w);
  raw(w, num, (size_t)snprintf(num, sizeof num, "%" PRIu64, v));
}

void hubu_json_double(hubu_json_writer *w, const char *k, double v, const char *fmt) {
  char num[48];
  hubu_json_key(w, k);
  item(w);
  if (v != v || v > DBL_MAX || v < -DBL_MAX) {
    raw(w, "null", 4);
    return;
  }
  int n = snprintf(num, sizeof num, fmt, v);
  raw(w, num, n > 0 && (size_t)n < sizeof num ? (size_t)n : 0);
}

void hubu_json_bool(hubu_json_writer *w, const char *k, int v) {
  hubu_json_key(w, k);
  item(w);
  raw(w, v ? "true" : "false", v ? 4 : 5);
}

void hubu_json_null(hubu_json_writer *w, const char *k) {
  hubu_json_key(w, k);
  item(w);
  raw(w, "null", 4);
}

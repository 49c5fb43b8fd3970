/* json.h — JSON text written by hubud (the admin answers, the plugin
 * listing): one escaper, so every answer is valid JSON whatever bytes a user
 * id, reason or plugin field holds. */
#ifndef HUBU_JSON_H
#define HUBU_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Appends s (len bytes) to out as a JSON string literal, quotes included:
 * the quote, the backslash and control characters (DEL and NUL too) escaped,
 * well-formed UTF-8 kept, any other byte written as U+FFFD (an escape), so
 * the answer is always valid JSON. 0, or -1 when memory runs out (out is
 * then incomplete). */
int hubu_json_append_string(hubu_buf *out, const char *s, size_t len);

/* A JSON writer, output only. Containers opened inline print on one line;
 * the others put each item on a line of its own, indented. Every value
 * function takes the key it belongs to, or NULL inside an array. Strings go
 * through hubu_json_append_string; a number JSON cannot hold is null. The
 * first failure (out of memory, nesting too deep) sets *failed and the
 * output is then unusable. */
#define HUBU_JSON_MAX_DEPTH 8

typedef struct {
  hubu_buf *buf;
  int *failed; /* the caller's flag, or own_failed */
  int own_failed;
  int depth;
  int after_key; /* the next value follows "key": */
  uint8_t has_items[HUBU_JSON_MAX_DEPTH];
  uint8_t is_inline[HUBU_JSON_MAX_DEPTH];
  char closer[HUBU_JSON_MAX_DEPTH];
} hubu_json_writer;

/* failed: the flag to set on failure, or NULL (hubu_json_failed tells). */
void hubu_json_init(hubu_json_writer *w, hubu_buf *buf, int *failed);
int hubu_json_failed(const hubu_json_writer *w);

/* "key": (NULL: nothing), for a value written next. */
void hubu_json_key(hubu_json_writer *w, const char *key);
void hubu_json_open(hubu_json_writer *w, const char *key, char opener, int is_inline); /* '{' or '[' */
void hubu_json_close(hubu_json_writer *w);
void hubu_json_str(hubu_json_writer *w, const char *key, const char *s); /* NULL: null */
void hubu_json_strn(hubu_json_writer *w, const char *key, const char *s, size_t len);
void hubu_json_u64(hubu_json_writer *w, const char *key, uint64_t v);
void hubu_json_double(hubu_json_writer *w, const char *key, double v, const char *fmt); /* printf format */
void hubu_json_bool(hubu_json_writer *w, const char *key, int v);
void hubu_json_null(hubu_json_writer *w, const char *key);

#endif

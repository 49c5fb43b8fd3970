/* json.h — JSON text written by hubud (the admin answers, the plugin
 * listing): one escaper, so every answer is valid JSON whatever bytes a user
 * id, reason or plugin field holds. */
#ifndef HUBU_JSON_H
#define HUBU_JSON_H

#include <stddef.h>

#include "buf.h"

/* Appends s (len bytes) to out as a JSON string literal, quotes included:
 * the quote, the backslash and control characters (DEL and NUL too) escaped,
 * well-formed UTF-8 kept, any other byte written as U+FFFD (an escape), so
 * the answer is always valid JSON. 0, or -1 when memory runs out (out is
 * then incomplete). */
int hubu_json_append_string(hubu_buf *out, const char *s, size_t len);

#endif

/* json.c — the JSON string escaper (json.h). */
#include "json.h"

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

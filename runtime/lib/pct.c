/* pct.c — percent-decoding (pct.h). */
#include "pct.h"

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int hubu_pct_decode(const char *s, size_t len, char *out, size_t size) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      if (i + 2 >= len) return -1;
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return -1;
      c = hi * 16 + lo;
      i += 2;
    }
    if (c == 0 || n + 1 >= size) return -1;
    out[n++] = (char)c;
  }
  if (!size) return -1;
  out[n] = '\0';
  return 0;
}

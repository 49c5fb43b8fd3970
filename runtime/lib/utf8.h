/* utf8.h — well-formed UTF-8, checked the one way every part of hubud does:
 * no overlongs, no surrogates, nothing past U+10FFFF. */
#ifndef HUBU_UTF8_H
#define HUBU_UTF8_H

#include <stddef.h>

/* The length of the well-formed UTF-8 sequence at p (n > 0 bytes there), or
 * 0 when it is not one. An ASCII byte is a sequence of 1. */
static inline size_t hubu_utf8_seq_len(const unsigned char *p, size_t n) {
  unsigned char b = p[0];
  if (b < 0x80) return 1;
  size_t extra = (b & 0xe0) == 0xc0 ? 1 : (b & 0xf0) == 0xe0 ? 2 : (b & 0xf8) == 0xf0 ? 3 : 0;
  if (extra == 0 || b < 0xc2 || b > 0xf4 || extra >= n) return 0;
  for (size_t i = 1; i <= extra; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  if ((b == 0xe0 && p[1] < 0xa0) || (b == 0xed && p[1] >= 0xa0) || (b == 0xf0 && p[1] < 0x90) ||
      (b == 0xf4 && p[1] >= 0x90))
    return 0;
  return extra + 1;
}

/* Is s[0..len) well-formed UTF-8 with no byte below 0x20 (nor 0x7f) when
 * printable is set, and no NUL either way? */
static inline int hubu_utf8_valid(const char *s, size_t len, int printable) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    if (*p == 0 || (printable && (*p < 0x20 || *p == 0x7f))) return 0;
    size_t n = hubu_utf8_seq_len(p, (size_t)(end - p));
    if (n == 0) return 0;
    p += n;
  }
  return 1;
}

#endif

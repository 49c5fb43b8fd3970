/* pct.h — percent-decoding (RFC 3986 section 2.1), for URLs hubud reads: the
 * store's mariadb:// URLs and the HTTP API's paths and query strings. */
#ifndef HUBU_PCT_H
#define HUBU_PCT_H

#include <stddef.h>

/* Percent-decodes s[0..len) into out (size bytes, NUL-terminated); '+' is
 * kept as it is. 0, or -1 when it does not fit, a %XX is malformed, or it
 * decodes to a NUL. */
int hubu_pct_decode(const char *s, size_t len, char *out, size_t size);

#endif

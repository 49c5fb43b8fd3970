/* secret.c — reading the token secret from a file. A file larger than the
 * limit is refused rather than truncated, so no two readers disagree. */
#include "secret.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>

int hubu_secret_read_file(const char *path, uint8_t **out, size_t *out_len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  uint8_t buf[HUBU_SECRET_FILE_MAX + 1];
  size_t n = fread(buf, 1, sizeof buf, f);
  int failed = ferror(f);
  fclose(f);
  int r = failed ? -1 : 0;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t')) n--;
  if (!r && (n == 0 || n > HUBU_SECRET_FILE_MAX)) r = -2;
  if (!r && !(*out = malloc(n))) r = -1;
  if (!r) {
    for (size_t i = 0; i < n; i++) (*out)[i] = buf[i];
    *out_len = n;
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return r;
}

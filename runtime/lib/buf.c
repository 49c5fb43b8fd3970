/* buf.c — growable byte buffer. Invariant: off <= len <= cap; an empty buffer
 * holds no memory, so an idle connection costs nothing here. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

uint8_t *hubu_buf_reserve(hubu_buf *b, size_t n) {
  if (b->cap - b->len >= n) return b->data + b->len;
  size_t live = b->len - b->off;
  if (n > SIZE_MAX - live) return NULL;
  if (b->off > 0 && b->cap - live >= n) { /* compact instead of growing */
    memmove(b->data, b->data + b->off, live);
    b->off = 0;
    b->len = live;
    return b->data + b->len;
  }
  size_t want = live + n;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < want) {
    if (cap > SIZE_MAX / 2) return NULL;
    cap *= 2;
  }
  uint8_t *p = malloc(cap);
  if (!p) return NULL;
  if (live) memcpy(p, b->data + b->off, live);
  free(b->data);
  b->data = p;
  b->cap = cap;
  b->off = 0;
  b->len = live;
  return b->data + b->len;
}

int hubu_buf_append(hubu_buf *b, const void *p, size_t n) {
  if (n == 0) return 0;
  uint8_t *w = hubu_buf_reserve(b, n);
  if (!w) return -1;
  memcpy(w, p, n);
  b->len += n;
  return 0;
}

void hubu_buf_consume(hubu_buf *b, size_t n) {
  b->off += n;
  if (b->off >= b->len) hubu_buf_free(b);
}

void hubu_buf_free(hubu_buf *b) {
  free(b->data);
  b->data = NULL;
  b->off = b->len = b->cap = 0;
}

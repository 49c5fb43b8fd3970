/* buf.h — a growable byte buffer with a consumed prefix: append at the end,
 * consume from the front. Owns its memory; hubu_buf_free releases it. */
#ifndef HUBU_BUF_H
#define HUBU_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint8_t *data; /* owned; NULL while empty and never grown */
  size_t off;    /* bytes already consumed at the front */
  size_t len;    /* end of valid bytes (data[off..len) is unread) */
  size_t cap;
} hubu_buf;

static inline size_t hubu_buf_size(const hubu_buf *b) { return b->len - b->off; }
/* Never NULL + offset: an empty buffer's head is a valid (empty) pointer. */
static inline const uint8_t *hubu_buf_head(const hubu_buf *b) {
  static const uint8_t empty[1];
  return b->data ? b->data + b->off : empty;
}

/* Appends n bytes; returns 0, or -1 when memory runs out (b is unchanged). */
int hubu_buf_append(hubu_buf *b, const void *p, size_t n);
/* Makes room for n more bytes at the end; returns the write pointer or NULL. */
uint8_t *hubu_buf_reserve(hubu_buf *b, size_t n);
/* Drops n bytes from the front; frees the storage when nothing is left. */
void hubu_buf_consume(hubu_buf *b, size_t n);
void hubu_buf_free(hubu_buf *b);

#endif

/* test_buf.c — hubu_buf: append and consume keep the unread bytes intact and
 * in order; a fully consumed buffer holds no memory; space freed at the front
 * is reused (compaction) before the buffer grows; growth and large appends keep
 * off <= len <= cap; an impossible reservation fails and changes nothing. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"

static int invariant(const hubu_buf *b) {
  return b->off <= b->len && b->len <= b->cap && (b->cap == 0) == (b->data == NULL);
}

static void test_empty(void) {
  hubu_buf b = {0};
  CHECK_EQ_U64(hubu_buf_size(&b), 0);
  hubu_buf_free(&b); /* free on a never-used buffer */
  hubu_buf_free(&b); /* and again */
  CHECK(b.data == NULL && b.cap == 0 && b.len == 0 && b.off == 0);
  /* Appending nothing allocates nothing. */
  CHECK_EQ_U64(hubu_buf_append(&b, "x", 0), 0);
  CHECK(b.data == NULL);
  CHECK_EQ_U64(hubu_buf_size(&b), 0);
  /* Consuming nothing from an empty buffer leaves it empty. */
  hubu_buf_consume(&b, 0);
  CHECK(b.data == NULL && invariant(&b));
}

static void test_append_consume(void) {
  hubu_buf b = {0};
  CHECK_EQ_U64(hubu_buf_append(&b, "hello", 5), 0);
  CHECK_EQ_U64(hubu_buf_size(&b), 5);
  CHECK_EQ_MEM(hubu_buf_head(&b), "hello", 5);
  CHECK(b.cap >= 5 && invariant(&b));
  CHECK_EQ_U64(hubu_buf_append(&b, ", world", 7), 0);
  CHECK_EQ_U64(hubu_buf_size(&b), 12);
  CHECK_EQ_MEM(hubu_buf_head(&b), "hello, world", 12);

  hubu_buf_consume(&b, 2);
  CHECK_EQ_U64(hubu_buf_size(&b), 10);
  CHECK_EQ_MEM(hubu_buf_head(&b), "llo, world", 10);
  CHECK(invariant(&b));
  hubu_buf_consume(&b, 0);
  CHECK_EQ_MEM(hubu_buf_head(&b), "llo, world", 10);
  CHECK_EQ_U64(hubu_buf_append(&b, "!", 1), 0);
  CHECK_EQ_MEM(hubu_buf_head(&b), "llo, world!", 11);

  /* Consuming the last byte frees the storage. */
  hubu_buf_consume(&b, 10);
  CHECK_EQ_U64(hubu_buf_size(&b), 1);
  CHECK(b.data != NULL);
  hubu_buf_consume(&b, 1);
  CHECK_EQ_U64(hubu_buf_size(&b), 0);
  CHECK(b.data == NULL && b.cap == 0 && b.off == 0 && b.len == 0);

  /* And the buffer is usable again afterwards. */
  CHECK_EQ_U64(hubu_buf_append(&b, "again", 5), 0);
  CHECK_EQ_MEM(hubu_buf_head(&b), "again", 5);
  hubu_buf_free(&b);
  CHECK(b.data == NULL && b.cap == 0 && b.len == 0 && b.off == 0);
}

static void test_reserve(void) {
  hubu_buf b = {0};
  uint8_t *w = hubu_buf_reserve(&b, 10);
  if (!CHECK(w != NULL)) return;
  CHECK(b.cap >= 10);
  CHECK_EQ_U64(hubu_buf_size(&b), 0); /* reserving is not appending */
  memcpy(w, "0123456789", 10);
  b.len += 10; /* the wire encoder's pattern: reserve, write, then commit */
  CHECK_EQ_MEM(hubu_buf_head(&b), "0123456789", 10);
  /* A reservation that fits returns the current end without moving anything. */
  uint8_t *before = b.data;
  w = hubu_buf_reserve(&b, b.cap - b.len);
  CHECK(w == b.data + b.len);
  CHECK(b.data == before);
  hubu_buf_free(&b);
}

static void test_compaction(void) {
  hubu_buf b = {0};
  uint8_t block[256];
  for (size_t i = 0; i < sizeof block; i++) block[i] = (uint8_t)i;
  CHECK_EQ_U64(hubu_buf_append(&b, block, sizeof block), 0);
  size_t cap = b.cap;
  CHECK_EQ_U64(b.len, sizeof block);
  CHECK(cap >= sizeof block);
  /* Fill to capacity exactly, then free space at the front. */
  size_t fill = cap - b.len;
  uint8_t *pad = malloc(fill + 1);
  memset(pad, 0xEE, fill);
  CHECK_EQ_U64(hubu_buf_append(&b, pad, fill), 0);
  CHECK_EQ_U64(b.cap, cap);
  CHECK_EQ_U64(b.len, cap);
  hubu_buf_consume(&b, 200);
  CHECK_EQ_U64(b.off, 200);
  const uint8_t *storage = b.data;
  /* 100 more bytes do not fit at the end but fit after moving the unread part down. */
  uint8_t more[100];
  memset(more, 0x5A, sizeof more);
  CHECK_EQ_U64(hubu_buf_append(&b, more, sizeof more), 0);
  CHECK_EQ_U64(b.cap, cap); /* compacted, not grown ... */
  CHECK(b.data == storage); /* ... in place, not copied to a new block */
  CHECK_EQ_U64(b.off, 0);
  CHECK_EQ_U64(hubu_buf_size(&b), cap - 200 + sizeof more);
  CHECK_EQ_MEM(hubu_buf_head(&b), block + 200, 56);
  CHECK_EQ_MEM(hubu_buf_head(&b) + 56, pad, fill);
  CHECK_EQ_MEM(hubu_buf_head(&b) + 56 + fill, more, sizeof more);
  CHECK(invariant(&b));

  /* When compaction is not enough, it grows and still keeps the bytes in order. */
  hubu_buf_consume(&b, 10);
  size_t live = hubu_buf_size(&b);
  uint8_t *expect = malloc(live + cap);
  memcpy(expect, hubu_buf_head(&b), live);
  uint8_t *big = malloc(cap);
  for (size_t i = 0; i < cap; i++) big[i] = (uint8_t)(i * 31 + 7);
  memcpy(expect + live, big, cap);
  CHECK_EQ_U64(hubu_buf_append(&b, big, cap), 0);
  CHECK(b.cap > cap);
  CHECK_EQ_U64(b.off, 0);
  CHECK_EQ_U64(hubu_buf_size(&b), live + cap);
  CHECK_EQ_MEM(hubu_buf_head(&b), expect, live + cap);
  CHECK(invariant(&b));
  free(expect);
  free(big);
  free(pad);
  hubu_buf_free(&b);
}

static void test_growth(void) {
  hubu_buf b = {0};
  size_t last_cap = 0, grows = 0;
  /* Byte by byte to 100,000: capacity only grows, by doubling, never more than 2x what is needed. */
  for (size_t i = 0; i < 100000; i++) {
    uint8_t c = (uint8_t)(i % 251);
    if (hubu_buf_append(&b, &c, 1) != 0) {
      CHECK(!"append failed");
      break;
    }
    if (b.cap != last_cap) {
      if (last_cap) CHECK_EQ_U64(b.cap, last_cap * 2);
      last_cap = b.cap;
      grows++;
    }
  }
  CHECK_EQ_U64(hubu_buf_size(&b), 100000);
  CHECK(b.cap >= 100000 && b.cap < 200000 + 256);
  CHECK(grows > 5 && grows < 20);
  size_t bad = 0;
  for (size_t i = 0; i < 100000; i++) bad += hubu_buf_head(&b)[i] != (uint8_t)(i % 251);
  CHECK_EQ_U64(bad, 0);
  hubu_buf_free(&b);
}

static void test_large(void) {
  /* One 8 MiB append into an empty buffer. */
  const size_t big = 8u << 20;
  uint8_t *src = malloc(big);
  for (size_t i = 0; i < big; i++) src[i] = (uint8_t)((i >> 8) ^ i);
  hubu_buf b = {0};
  CHECK_EQ_U64(hubu_buf_append(&b, src, big), 0);
  CHECK_EQ_U64(hubu_buf_size(&b), big);
  CHECK(b.cap >= big && b.cap <= 2 * big);
  CHECK_EQ_MEM(hubu_buf_head(&b), src, big);
  hubu_buf_free(&b);

  /* A stream: 64 KiB writes interleaved with reads of other sizes; what comes
   * out is exactly what went in, and memory stays bounded by what is unread. */
  size_t in = 0, out = 0, mismatches = 0, max_cap = 0, turn = 0;
  while (out < big) {
    if (in < big) {
      size_t k = big - in < 65536 ? big - in : 65536;
      if (hubu_buf_append(&b, src + in, k) != 0) break;
      in += k;
    }
    static const size_t reads[] = {20000, 100000, 77000, 70000}; /* on average a bit more than is written */
    size_t avail = hubu_buf_size(&b), want = reads[turn++ % 4];
    size_t take = avail < want ? avail : want;
    if (take && memcmp(hubu_buf_head(&b), src + out, take) != 0) mismatches++;
    hubu_buf_consume(&b, take);
    out += take;
    if (b.cap > max_cap) max_cap = b.cap;
    if (!invariant(&b)) mismatches++;
  }
  CHECK_EQ_U64(in, big);
  CHECK_EQ_U64(out, big);
  CHECK_EQ_U64(mismatches, 0);
  CHECK(max_cap < 8 * 65536); /* reads keep up, so the buffer never needed the whole stream */
  CHECK(b.data == NULL);      /* everything read: nothing held */
  free(src);
  hubu_buf_free(&b);
}

static void test_impossible_sizes(void) {
  /* Empty buffer: a reservation no allocator can satisfy fails cleanly. */
  hubu_buf b = {0};
  CHECK(hubu_buf_reserve(&b, SIZE_MAX) == NULL);
  CHECK(b.data == NULL && b.cap == 0);

  /* Non-empty buffer: live + n must not wrap around to a small request and
   * hand back a pointer to a few hundred bytes for an "n = SIZE_MAX - 2" write. */
  CHECK_EQ_U64(hubu_buf_append(&b, "abcde", 5), 0);
  size_t cap = b.cap;
  CHECK(hubu_buf_reserve(&b, SIZE_MAX - 2) == NULL);
  CHECK(hubu_buf_reserve(&b, SIZE_MAX / 2 + 1) == NULL);
  CHECK_EQ_U64(b.cap, cap);
  CHECK_EQ_U64(hubu_buf_size(&b), 5);
  CHECK_EQ_MEM(hubu_buf_head(&b), "abcde", 5);
  hubu_buf_free(&b);
}

int main(int argc, char **argv) {
  (void)argc;
  test_empty();
  test_append_consume();
  test_reserve();
  test_compaction();
  test_growth();
  test_large();
  test_impossible_sizes();
  return check_summary(argv[0]);
}

/* test_frame.c — the frame header codec of PROTOCOL.md section 2: encode/decode
 * roundtrip, each verdict at the first byte that decides it, max_frame bounds,
 * and reassembly through a hubu_buf of one real HELLO split at every byte
 * boundary and of 1,000 mixed frames fed whole or in random chunks. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "frame.h"
#include "wire.h"

static const uint8_t known_types[] = {
    HUBU_FRAME_HELLO,  HUBU_FRAME_HELLO_OK,    HUBU_FRAME_PING,     HUBU_FRAME_PONG,        HUBU_FRAME_ERROR,
    HUBU_FRAME_GOAWAY, HUBU_FRAME_SEND,        HUBU_FRAME_SEND_ACK, HUBU_FRAME_PUSH,        HUBU_FRAME_DELIVER_ACK,
    HUBU_FRAME_SYNC,   HUBU_FRAME_SYNC_RESULT, HUBU_FRAME_PULL,     HUBU_FRAME_PULL_RESULT, HUBU_FRAME_PULL_HINT,
    HUBU_FRAME_CALL,   HUBU_FRAME_CALL_RESULT, HUBU_FRAME_EVENT,
};
#define N_KNOWN (sizeof known_types / sizeof known_types[0])

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(void) { /* xorshift64*, fixed seed: every run sees the same inputs */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717u;
}

/* ---- a reassembly loop, as the connection code runs it ---- */

typedef struct {
  uint8_t type, flags;
  uint32_t length;
  uint8_t *body; /* owned copy */
} got_frame;

typedef struct {
  got_frame *v;
  size_t n, cap;
  hubu_frame_status last; /* verdict that stopped the last drain */
} got_list;

static void got_free(got_list *g) {
  for (size_t i = 0; i < g->n; i++) free(g->v[i].body);
  free(g->v);
  memset(g, 0, sizeof *g);
}

/* Takes every whole frame off the front of in; returns how many. */
static size_t drain(hubu_buf *in, uint32_t max_frame, got_list *g) {
  size_t taken = 0;
  for (;;) {
    hubu_frame f;
    if (hubu_buf_size(in) == 0) { /* head of an empty buffer is NULL; don't do arithmetic on it */
      g->last = HUBU_FRAME_NEED_MORE;
      return taken;
    }
    hubu_frame_status st = hubu_frame_next(hubu_buf_head(in), hubu_buf_size(in), max_frame, &f);
    g->last = st;
    if (st != HUBU_FRAME_OK) return taken;
    if (g->n == g->cap) {
      g->cap = g->cap ? g->cap * 2 : 64;
      g->v = realloc(g->v, g->cap * sizeof *g->v);
      if (!g->v) abort();
    }
    got_frame *o = &g->v[g->n++];
    o->type = f.header.type;
    o->flags = f.header.flags;
    o->length = f.header.length;
    o->body = malloc(f.header.length + 1);
    if (!o->body) abort();
    memcpy(o->body, f.body, f.header.length);
    hubu_buf_consume(in, f.size);
    taken++;
  }
}

/* ---- header ---- */

static void test_header_roundtrip(void) {
  static const uint32_t lengths[] = {0, 1, 255, 256, 0x01020304u, HUBU_FRAME_DEFAULT_MAX, 0xFFFFFFFFu};
  static const uint8_t types[] = {HUBU_FRAME_HELLO, HUBU_FRAME_EVENT, 0x00, 0xFF};
  static const uint8_t flags[] = {0, 1, 0x80, 0xFF};
  for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++)
    for (size_t ti = 0; ti < sizeof types; ti++)
      for (size_t fi = 0; fi < sizeof flags; fi++) {
        uint8_t h[HUBU_FRAME_HEADER_SIZE];
        hubu_frame_header out;
        memset(&out, 0xEE, sizeof out);
        hubu_frame_header_encode(h, types[ti], flags[fi], lengths[li]);
        CHECK_EQ_U64(hubu_frame_header_decode(h, sizeof h, 0xFFFFFFFFu, &out), HUBU_FRAME_OK);
        CHECK_EQ_U64(out.version, HUBU_FRAME_VERSION);
        CHECK_EQ_U64(out.type, types[ti]);
        CHECK_EQ_U64(out.flags, flags[fi]);
        CHECK_EQ_U64(out.length, lengths[li]);
      }

  /* The byte layout itself: magic, version, type, flags, big-endian length. */
  uint8_t h[HUBU_FRAME_HEADER_SIZE];
  hubu_frame_header_encode(h, 0x10, 0x01, 0x0A0B0C0Du);
  static const uint8_t want[HUBU_FRAME_HEADER_SIZE] = {0xA5, 0x01, 0x10, 0x01, 0x0A, 0x0B, 0x0C, 0x0D};
  CHECK_EQ_MEM(h, want, sizeof want);

  /* A hand-written header decodes to the documented fields. */
  static const uint8_t hand[HUBU_FRAME_HEADER_SIZE] = {0xA5, 0x01, 0x22, 0x00, 0x00, 0x00, 0x01, 0x02};
  hubu_frame_header out;
  CHECK_EQ_U64(hubu_frame_header_decode(hand, sizeof hand, 1000, &out), HUBU_FRAME_OK);
  CHECK_EQ_U64(out.type, HUBU_FRAME_EVENT);
  CHECK_EQ_U64(out.length, 0x0102);
}

static void test_verdicts(void) {
  hubu_frame_header h;
  hubu_frame f;
  uint8_t buf[HUBU_FRAME_HEADER_SIZE] = {0};

  /* Nothing yet: need more. */
  CHECK_EQ_U64(hubu_frame_header_decode(buf, 0, 100, &h), HUBU_FRAME_NEED_MORE);
  CHECK_EQ_U64(hubu_frame_next(buf, 0, 100, &f), HUBU_FRAME_NEED_MORE);

  /* Bad magic is known from byte 0 alone, for every wrong value. */
  for (int m = 0; m < 256; m++) {
    uint8_t b0 = (uint8_t)m;
    hubu_frame_status want = m == HUBU_FRAME_MAGIC ? HUBU_FRAME_NEED_MORE : HUBU_FRAME_ERR_MAGIC;
    CHECK_EQ_U64(hubu_frame_header_decode(&b0, 1, 100, &h), want);
    CHECK_EQ_U64(hubu_frame_next(&b0, 1, 100, &f), want);
  }
  /* ... and it wins over a bad version behind it. */
  static const uint8_t both_bad[] = {0x5A, 0x02};
  CHECK_EQ_U64(hubu_frame_header_decode(both_bad, 2, 100, &h), HUBU_FRAME_ERR_MAGIC);

  /* Bad version is known at byte 1, for every wrong value. */
  for (int v = 0; v < 256; v++) {
    uint8_t b[2] = {HUBU_FRAME_MAGIC, (uint8_t)v};
    hubu_frame_status want = v == HUBU_FRAME_VERSION ? HUBU_FRAME_NEED_MORE : HUBU_FRAME_ERR_VERSION;
    CHECK_EQ_U64(hubu_frame_header_decode(b, 2, 100, &h), want);
    CHECK_EQ_U64(hubu_frame_next(b, 2, 100, &f), want);
  }

  /* Length against max_frame: max is fine, max + 1 is too large, as soon as
   * the header is whole (no body byte needed to say so). */
  const uint32_t max = 100;
  hubu_frame_header_encode(buf, HUBU_FRAME_SEND, 0, max + 1);
  CHECK_EQ_U64(hubu_frame_header_decode(buf, sizeof buf, max, &h), HUBU_FRAME_ERR_TOO_LARGE);
  CHECK_EQ_U64(hubu_frame_next(buf, sizeof buf, max, &f), HUBU_FRAME_ERR_TOO_LARGE);
  for (size_t k = 2; k < HUBU_FRAME_HEADER_SIZE; k++) /* the length isn't there yet */
    CHECK_EQ_U64(hubu_frame_header_decode(buf, k, max, &h), HUBU_FRAME_NEED_MORE);
  hubu_frame_header_encode(buf, HUBU_FRAME_SEND, 0, 0xFFFFFFFFu);
  CHECK_EQ_U64(hubu_frame_next(buf, sizeof buf, max, &f), HUBU_FRAME_ERR_TOO_LARGE);
  CHECK_EQ_U64(hubu_frame_next(buf, sizeof buf, HUBU_FRAME_DEFAULT_MAX, &f), HUBU_FRAME_ERR_TOO_LARGE);
  hubu_frame_header_encode(buf, HUBU_FRAME_SEND, 0, max);
  CHECK_EQ_U64(hubu_frame_header_decode(buf, sizeof buf, max, &h), HUBU_FRAME_OK);
  CHECK_EQ_U64(h.length, max);
  hubu_frame_header_encode(buf, HUBU_FRAME_SEND, 0, 0);
  CHECK_EQ_U64(hubu_frame_header_decode(buf, sizeof buf, 0, &h), HUBU_FRAME_OK); /* max_frame 0: empty bodies only */
  hubu_frame_header_encode(buf, HUBU_FRAME_SEND, 0, 1);
  CHECK_EQ_U64(hubu_frame_header_decode(buf, sizeof buf, 0, &h), HUBU_FRAME_ERR_TOO_LARGE);

  /* A whole frame of exactly the default max_frame (1 MiB body) decodes. */
  size_t big = HUBU_FRAME_HEADER_SIZE + HUBU_FRAME_DEFAULT_MAX;
  uint8_t *whole = malloc(big + 1);
  if (!whole) abort();
  hubu_frame_header_encode(whole, HUBU_FRAME_SEND, 0, HUBU_FRAME_DEFAULT_MAX);
  for (size_t i = HUBU_FRAME_HEADER_SIZE; i < big; i++) whole[i] = (uint8_t)(i * 7);
  CHECK_EQ_U64(hubu_frame_next(whole, big, HUBU_FRAME_DEFAULT_MAX, &f), HUBU_FRAME_OK);
  CHECK_EQ_U64(f.size, big);
  CHECK(f.body == whole + HUBU_FRAME_HEADER_SIZE);
  CHECK_EQ_U64(hubu_frame_next(whole, big - 1, HUBU_FRAME_DEFAULT_MAX, &f), HUBU_FRAME_NEED_MORE);
  CHECK_EQ_U64(hubu_frame_next(whole, big, HUBU_FRAME_DEFAULT_MAX - 1, &f), HUBU_FRAME_ERR_TOO_LARGE);
  /* Extra bytes after it belong to the next frame and are not consumed. */
  whole[big] = 0xA5;
  CHECK_EQ_U64(hubu_frame_next(whole, big + 1, HUBU_FRAME_DEFAULT_MAX, &f), HUBU_FRAME_OK);
  CHECK_EQ_U64(f.size, big);
  free(whole);

  /* NEED_MORE for every proper prefix of a valid frame, OK at its full length. */
  uint8_t fr[HUBU_FRAME_HEADER_SIZE + 5];
  hubu_frame_header_encode(fr, HUBU_FRAME_PING, 0, 5);
  memcpy(fr + HUBU_FRAME_HEADER_SIZE, "\x08\x01\x02\x03\x04", 5);
  for (size_t k = 0; k < sizeof fr; k++) {
    CHECK_EQ_U64(hubu_frame_next(fr, k, 100, &f), HUBU_FRAME_NEED_MORE);
    CHECK_EQ_U64(hubu_frame_header_decode(fr, k, 100, &h),
                 k < HUBU_FRAME_HEADER_SIZE ? HUBU_FRAME_NEED_MORE : HUBU_FRAME_OK);
  }
  CHECK_EQ_U64(hubu_frame_next(fr, sizeof fr, 100, &f), HUBU_FRAME_OK);
  CHECK_EQ_U64(f.size, sizeof fr);
  CHECK_EQ_U64(f.header.type, HUBU_FRAME_PING);
  CHECK_EQ_MEM(f.body, "\x08\x01\x02\x03\x04", 5);

  /* An empty body is a whole frame as soon as the header is. */
  hubu_frame_header_encode(buf, HUBU_FRAME_SYNC, 0, 0);
  CHECK_EQ_U64(hubu_frame_next(buf, sizeof buf, 100, &f), HUBU_FRAME_OK);
  CHECK_EQ_U64(f.size, HUBU_FRAME_HEADER_SIZE);
  CHECK_EQ_U64(f.header.length, 0);
}

/* ---- one real HELLO ---- */

static void fill_hello(Hubu__V1__Hello *m) {
  m->protocol_version = 1;
  m->user_id = "alice.w@example.com";
  m->device_id = "phone-1";
  m->token = "v1.alice.w@example.com.1700000000.94ef18601ffcc83c41f2340d94a0bec7bffd03f15ab6a6fac2da4370bd4aefd4";
  m->client_info = "test_frame/1.0";
}

static void check_hello_body(const uint8_t *body, size_t len) {
  Hubu__V1__Hello *m = hubu__v1__hello__unpack(NULL, len, body);
  if (!CHECK(m != NULL)) return;
  Hubu__V1__Hello want = HUBU__V1__HELLO__INIT;
  fill_hello(&want);
  CHECK_EQ_U64(m->protocol_version, want.protocol_version);
  CHECK_EQ_STR(m->user_id, want.user_id);
  CHECK_EQ_STR(m->device_id, want.device_id);
  CHECK_EQ_STR(m->token, want.token);
  CHECK_EQ_STR(m->client_info, want.client_info);
  hubu__v1__hello__free_unpacked(m, NULL);
}

static void test_hello_split_everywhere(void) {
  Hubu__V1__Hello hello = HUBU__V1__HELLO__INIT;
  fill_hello(&hello);
  hubu_buf wire = {0};
  if (!CHECK(hubu_wire_append(&wire, HUBU_FRAME_HELLO, &hello.base) == 0)) return;
  const uint8_t *w = hubu_buf_head(&wire);
  size_t n = hubu_buf_size(&wire);
  size_t body_len = hubu__v1__hello__get_packed_size(&hello);
  CHECK_EQ_U64(n, HUBU_FRAME_HEADER_SIZE + body_len);
  CHECK(body_len > 100); /* long enough that a split lands inside every field */

  /* The body, decoded with the frame's length as the bound. */
  hubu_frame f;
  if (CHECK_EQ_U64(hubu_frame_next(w, n, HUBU_FRAME_DEFAULT_MAX, &f), HUBU_FRAME_OK)) {
    CHECK_EQ_U64(f.header.type, HUBU_FRAME_HELLO);
    CHECK_EQ_U64(f.header.flags, 0);
    CHECK_EQ_U64(f.header.length, body_len);
    check_hello_body(f.body, f.header.length);
  }

  /* Bounded by length: with another frame right behind it, the unpack sees
   * only this body (decoding past it would fail or change fields). */
  hubu_buf two = {0};
  CHECK(hubu_buf_append(&two, w, n) == 0);
  CHECK(hubu_wire_append_ping(&two, HUBU_FRAME_PING, 12345) == 0);
  if (CHECK_EQ_U64(hubu_frame_next(hubu_buf_head(&two), hubu_buf_size(&two), HUBU_FRAME_DEFAULT_MAX, &f),
                   HUBU_FRAME_OK)) {
    CHECK_EQ_U64(f.size, n);
    check_hello_body(f.body, f.header.length);
    /* Taking the trailing PING into the body breaks the decode: the bound matters. */
    Hubu__V1__Hello *m = hubu__v1__hello__unpack(NULL, hubu_buf_size(&two) - HUBU_FRAME_HEADER_SIZE, f.body);
    CHECK(m == NULL || m->protocol_version != 1);
    if (m) hubu__v1__hello__free_unpacked(m, NULL);
  }
  hubu_buf_free(&two);

  /* Two reads, split at every byte boundary 0..n. */
  for (size_t s = 0; s <= n; s++) {
    hubu_buf in = {0};
    got_list g = {0};
    CHECK(hubu_buf_append(&in, w, s) == 0);
    CHECK_EQ_U64(drain(&in, HUBU_FRAME_DEFAULT_MAX, &g), s == n ? 1 : 0);
    CHECK_EQ_U64(g.last, HUBU_FRAME_NEED_MORE);
    CHECK(hubu_buf_append(&in, w + s, n - s) == 0);
    drain(&in, HUBU_FRAME_DEFAULT_MAX, &g);
    if (CHECK_EQ_U64(g.n, 1)) {
      CHECK_EQ_U64(g.v[0].type, HUBU_FRAME_HELLO);
      CHECK_EQ_U64(g.v[0].length, body_len);
      CHECK_EQ_MEM(g.v[0].body, w + HUBU_FRAME_HEADER_SIZE, body_len);
    }
    CHECK_EQ_U64(hubu_buf_size(&in), 0);
    hubu_buf_free(&in);
    got_free(&g);
  }

  /* One byte per read: nothing until the last byte, then exactly that frame. */
  hubu_buf in = {0};
  got_list g = {0};
  for (size_t i = 0; i < n; i++) {
    CHECK(hubu_buf_append(&in, w + i, 1) == 0);
    CHECK_EQ_U64(drain(&in, HUBU_FRAME_DEFAULT_MAX, &g), i == n - 1 ? 1 : 0);
  }
  if (CHECK_EQ_U64(g.n, 1)) {
    CHECK_EQ_MEM(g.v[0].body, w + HUBU_FRAME_HEADER_SIZE, body_len);
    check_hello_body(g.v[0].body, g.v[0].length);
  }
  hubu_buf_free(&in);
  got_free(&g);
  hubu_buf_free(&wire);
}

/* ---- 1,000 frames back to back ---- */

#define N_FRAMES 1000

typedef struct {
  uint8_t type, flags;
  uint32_t length;
  size_t offset; /* of the body in the stream */
} want_frame;

/* Builds the stream: raw bodies of random sizes (a fifth empty, some up to
 * 60 KiB), real messages every seventh frame, unknown types too (the frame
 * layer passes any type through). */
static size_t build_stream(hubu_buf *stream, want_frame *want) {
  for (size_t i = 0; i < N_FRAMES; i++) {
    want_frame *x = &want[i];
    if (i % 7 == 3) {
      Hubu__V1__Send s = HUBU__V1__SEND__INIT;
      char sid[32];
      snprintf(sid, sizeof sid, "p2p:alice:bob%zu", i);
      uint8_t payload[64];
      for (size_t k = 0; k < sizeof payload; k++) payload[k] = (uint8_t)rng();
      s.client_id = i;
      s.session_id = sid;
      s.body.data = payload;
      s.body.len = (size_t)(rng() % sizeof payload);
      x->type = HUBU_FRAME_SEND;
      x->flags = 0;
      x->length = (uint32_t)hubu__v1__send__get_packed_size(&s);
      x->offset = hubu_buf_size(stream) + HUBU_FRAME_HEADER_SIZE;
      if (hubu_wire_append(stream, HUBU_FRAME_SEND, &s.base) != 0) abort();
      continue;
    }
    if (i % 7 == 5) {
      x->type = HUBU_FRAME_PONG;
      x->flags = 0;
      Hubu__V1__Ping p = HUBU__V1__PING__INIT;
      p.time_ms = rng();
      x->length = (uint32_t)hubu__v1__ping__get_packed_size(&p);
      x->offset = hubu_buf_size(stream) + HUBU_FRAME_HEADER_SIZE;
      if (hubu_wire_append_ping(stream, HUBU_FRAME_PONG, p.time_ms) != 0) abort();
      continue;
    }
    uint64_t r = rng();
    switch (r % 10) {
      case 0:
      case 1: x->length = 0; break;
      case 2:
      case 3:
      case 4: x->length = (uint32_t)(rng() % 16); break;
      case 5:
      case 6:
      case 7:
      case 8: x->length = (uint32_t)(rng() % 2000); break;
      default: x->length = (uint32_t)(rng() % 60000); break;
    }
    x->type = (r >> 8) % 9 == 0 ? (uint8_t)(0x40 + (r >> 16) % 64) : known_types[(r >> 16) % N_KNOWN];
    x->flags = (r >> 24) % 13 == 0 ? 1 : 0;
    uint8_t h[HUBU_FRAME_HEADER_SIZE];
    hubu_frame_header_encode(h, x->type, x->flags, x->length);
    if (hubu_buf_append(stream, h, sizeof h) != 0) abort();
    x->offset = hubu_buf_size(stream);
    uint8_t *body = hubu_buf_reserve(stream, x->length);
    if (!body && x->length) abort();
    for (uint32_t k = 0; k < x->length; k++) body[k] = (uint8_t)rng();
    stream->len += x->length;
  }
  return hubu_buf_size(stream);
}

static void check_all(const got_list *g, const want_frame *want, const uint8_t *stream, const char *how) {
  if (!CHECK_EQ_U64(g->n, N_FRAMES)) fprintf(stderr, "    (%s)\n", how);
  size_t n = g->n < N_FRAMES ? g->n : N_FRAMES;
  size_t bad = 0, empty = 0;
  for (size_t i = 0; i < n; i++) {
    const got_frame *x = &g->v[i];
    if (x->type != want[i].type || x->flags != want[i].flags || x->length != want[i].length ||
        memcmp(x->body, stream + want[i].offset, want[i].length) != 0) {
      if (bad++ < 5)
        fprintf(stderr, "    %s: frame %zu: got type 0x%02x len %u, want type 0x%02x len %u\n", how, i, x->type,
                x->length, want[i].type, want[i].length);
    }
    if (x->length == 0) empty++;
  }
  CHECK_EQ_U64(bad, 0);
  CHECK(empty > 50); /* the empty-body case really was exercised */
}

static void test_thousand_frames(void) {
  static want_frame want[N_FRAMES];
  hubu_buf stream = {0};
  size_t total = build_stream(&stream, want);
  const uint8_t *s = hubu_buf_head(&stream);

  /* All in one buffer: walk it with hubu_frame_next alone. */
  size_t off = 0, count = 0, mismatched = 0;
  hubu_frame f;
  while (off < total && hubu_frame_next(s + off, total - off, HUBU_FRAME_DEFAULT_MAX, &f) == HUBU_FRAME_OK) {
    if (count >= N_FRAMES || f.header.type != want[count].type || f.header.length != want[count].length ||
        f.body != s + want[count].offset)
      mismatched++;
    off += f.size;
    count++;
  }
  CHECK_EQ_U64(count, N_FRAMES);
  CHECK_EQ_U64(off, total);
  CHECK_EQ_U64(mismatched, 0);

  /* All in one read through the reassembly loop. */
  got_list g = {0};
  hubu_buf in = {0};
  CHECK(hubu_buf_append(&in, s, total) == 0);
  drain(&in, HUBU_FRAME_DEFAULT_MAX, &g);
  CHECK_EQ_U64(g.last, HUBU_FRAME_NEED_MORE);
  CHECK_EQ_U64(hubu_buf_size(&in), 0);
  check_all(&g, want, s, "one read");
  got_free(&g);
  hubu_buf_free(&in);

  /* Random chunking, three different ways: tiny, TCP-ish and mixed. */
  static const size_t max_chunk[] = {7, 1500, 70000};
  for (size_t c = 0; c < sizeof max_chunk / sizeof max_chunk[0]; c++) {
    size_t pos = 0, reads = 0;
    while (pos < total) {
      size_t k = 1 + (size_t)(rng() % max_chunk[c]);
      if (rng() % 5 == 0) k = 1;
      if (k > total - pos) k = total - pos;
      CHECK(hubu_buf_append(&in, s + pos, k) == 0);
      pos += k;
      reads++;
      drain(&in, HUBU_FRAME_DEFAULT_MAX, &g);
      if (g.last != HUBU_FRAME_NEED_MORE) break;
    }
    CHECK_EQ_U64(g.last, HUBU_FRAME_NEED_MORE);
    CHECK_EQ_U64(hubu_buf_size(&in), 0);
    CHECK(reads > total / max_chunk[c]); /* really many reads, not one */
    char how[64];
    snprintf(how, sizeof how, "random chunks up to %zu bytes", max_chunk[c]);
    check_all(&g, want, s, how);
    got_free(&g);
    hubu_buf_free(&in);
  }
  hubu_buf_free(&stream);
}

/* ---- names and known types ---- */

static void test_type_names(void) {
  static const struct {
    uint8_t type;
    const char *name;
  } names[] = {
      {0x01, "HELLO"},  {0x02, "HELLO_OK"},    {0x03, "PING"},     {0x04, "PONG"},        {0x05, "ERROR"},
      {0x06, "GOAWAY"}, {0x10, "SEND"},        {0x11, "SEND_ACK"}, {0x12, "PUSH"},        {0x13, "DELIVER_ACK"},
      {0x14, "SYNC"},   {0x15, "SYNC_RESULT"}, {0x16, "PULL"},     {0x17, "PULL_RESULT"}, {0x18, "PULL_HINT"},
      {0x20, "CALL"},   {0x21, "CALL_RESULT"}, {0x22, "EVENT"},
  };
  CHECK_EQ_U64(sizeof names / sizeof names[0], N_KNOWN);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    CHECK_EQ_STR(hubu_frame_type_name(names[i].type), names[i].name);
    CHECK(hubu_frame_type_known(names[i].type));
  }
  /* Exactly those 18 of the 256 possible types are known; the rest are UNKNOWN. */
  size_t known = 0;
  for (int t = 0; t < 256; t++) {
    int is_listed = 0;
    for (size_t i = 0; i < N_KNOWN; i++) is_listed |= known_types[i] == t;
    int k = hubu_frame_type_known((uint8_t)t);
    CHECK_EQ_U64(!!k, is_listed);
    if (!is_listed) CHECK_EQ_STR(hubu_frame_type_name((uint8_t)t), "UNKNOWN");
    known += !!k;
  }
  CHECK_EQ_U64(known, N_KNOWN);
  CHECK(!hubu_frame_type_known(0x00));
  CHECK(!hubu_frame_type_known(0x07));
  CHECK(!hubu_frame_type_known(0x19));
  CHECK(!hubu_frame_type_known(0x23));
  CHECK(!hubu_frame_type_known(0xFF));
}

int main(int argc, char **argv) {
  (void)argc;
  test_header_roundtrip();
  test_verdicts();
  test_hello_split_everywhere();
  test_thousand_frames();
  test_type_names();
  return check_summary(argv[0]);
}

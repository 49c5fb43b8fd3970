/* fuzz_frame.c — the decoding path a connection runs on untrusted bytes: walk
 * frames with hubu_frame_next (small max_frame), unpack each body as its type's
 * message, repack and re-unpack what decodes; the same bytes fed in chunks
 * through a hubu_buf must give the same frames. libFuzzer entry point; built
 * with -DHUBU_FUZZ_REPLAY it is a plain program replaying a corpus and 20,000
 * random and mutated inputs from a fixed seed (a ctest test). */
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "pbjson.h"

#define FUZZ_MAX_FRAME 2048u

/* Any broken invariant is a crash, so libFuzzer (and the replay) notice. */
#define FUZZ_ASSERT(cond)                                                               \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

/* The body message of each frame type (PROTOCOL.md section 2), both directions. */
static const ProtobufCMessageDescriptor *body_descriptor(uint8_t type) { return hubu_pbjson_frame_descriptor(type); }

typedef struct {
  unsigned long frames;                               /* whole frames found */
  unsigned long bodies_ok;                            /* bodies that unpacked as their type */
  unsigned long bodies_bad;                           /* bodies that did not (-> ERROR BAD_BODY) */
  unsigned long unknown;                              /* frames of an unknown type (-> ERROR UNSUPPORTED_TYPE) */
  unsigned long repack_rejected;                      /* decoded, but protobuf-c rejects its own repacking */
  unsigned long errors[HUBU_FRAME_ERR_TOO_LARGE + 1]; /* inputs ending in each fatal verdict (-> ERROR, close) */
} fuzz_stats;

/* FNV-1a, to compare two walks' frames without keeping them. */
static uint64_t mix(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211u;
  return h;
}

static uint64_t frame_digest(uint64_t h, const hubu_frame *f) {
  uint8_t hdr[HUBU_FRAME_HEADER_SIZE];
  hubu_frame_header_encode(hdr, f->header.type, f->header.flags, f->header.length);
  h = mix(h, hdr, sizeof hdr);
  return mix(h, f->body, f->header.length);
}

/* Unpacks the body as its type's message; what decodes is packed again, and
 * if that decodes too, packing it once more gives the same bytes.
 * Not asserted: that the first repack decodes. protobuf-c 1.4.1 accepts field
 * number 0 when its tag is an overlong varint (81 00), keeps it as an unknown
 * field, repacks it canonically (01) and then rejects its own output. So a
 * decoded message must never be repacked and forwarded as is. */
static void decode_body(const hubu_frame *f, fuzz_stats *st) {
  const ProtobufCMessageDescriptor *d = body_descriptor(f->header.type);
  FUZZ_ASSERT(!!d == !!hubu_frame_type_known(f->header.type));
  FUZZ_ASSERT(hubu_frame_type_name(f->header.type) != NULL);
  if (!d) {
    st->unknown++;
    return;
  }
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, f->header.length, f->body);
  if (!m) {
    st->bodies_bad++;
    return;
  }
  st->bodies_ok++;
  FUZZ_ASSERT(m->descriptor == d);
  size_t n1 = protobuf_c_message_get_packed_size(m);
  uint8_t *p1 = malloc(n1 + 1);
  FUZZ_ASSERT(p1 != NULL);
  FUZZ_ASSERT(protobuf_c_message_pack(m, p1) == n1);
  ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, n1, p1);
  if (!m2) {
    st->repack_rejected++;
    free(p1);
    protobuf_c_message_free_unpacked(m, NULL);
    return;
  }
  size_t n2 = protobuf_c_message_get_packed_size(m2);
  FUZZ_ASSERT(n2 == n1);
  uint8_t *p2 = malloc(n2 + 1);
  FUZZ_ASSERT(p2 != NULL);
  FUZZ_ASSERT(protobuf_c_message_pack(m2, p2) == n2);
  FUZZ_ASSERT(memcmp(p1, p2, n1) == 0);
  free(p2);
  free(p1);
  protobuf_c_message_free_unpacked(m2, NULL);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* PROTOCOL.md section 2 read straight off the bytes, independently of
 * frame.c: the verdict hubu_frame_next must give for p[0..n). */
static hubu_frame_status expected_verdict(const uint8_t *p, size_t n) {
  if (n >= 1 && p[0] != 0xA5) return HUBU_FRAME_ERR_MAGIC;
  if (n >= 2 && p[1] != 1) return HUBU_FRAME_ERR_VERSION;
  if (n < 8) return HUBU_FRAME_NEED_MORE;
  uint32_t len = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
  if (len > FUZZ_MAX_FRAME) return HUBU_FRAME_ERR_TOO_LARGE;
  return n - 8 < len ? HUBU_FRAME_NEED_MORE : HUBU_FRAME_OK;
}

/* The whole input in one buffer: frames until the first non-OK verdict. */
static hubu_frame_status walk_direct(const uint8_t *data, size_t size, fuzz_stats *st, uint64_t *digest,
                                     unsigned long *count) {
  size_t off = 0;
  for (;;) {
    hubu_frame f;
    hubu_frame_status v = hubu_frame_next(data + off, size - off, FUZZ_MAX_FRAME, &f);
    FUZZ_ASSERT(v == expected_verdict(data + off, size - off));
    if (v != HUBU_FRAME_OK) return v;
    FUZZ_ASSERT(f.header.version == HUBU_FRAME_VERSION);
    FUZZ_ASSERT(f.header.length <= FUZZ_MAX_FRAME);
    FUZZ_ASSERT(f.size == HUBU_FRAME_HEADER_SIZE + (size_t)f.header.length);
    FUZZ_ASSERT(f.size <= size - off);
    FUZZ_ASSERT(f.body == data + off + HUBU_FRAME_HEADER_SIZE);
    /* Any proper prefix of a whole frame is "need more", never an error. */
    hubu_frame g;
    FUZZ_ASSERT(hubu_frame_next(data + off, f.size - 1, FUZZ_MAX_FRAME, &g) == HUBU_FRAME_NEED_MORE);
    FUZZ_ASSERT(hubu_frame_next(data + off, HUBU_FRAME_HEADER_SIZE - 1, FUZZ_MAX_FRAME, &g) == HUBU_FRAME_NEED_MORE);
    *digest = frame_digest(*digest, &f);
    ++*count;
    st->frames++;
    decode_body(&f, st);
    off += f.size;
  }
}

/* The same bytes arriving in reads of varying size, reassembled in a hubu_buf
 * as the connection code does; stops feeding after a fatal verdict. */
static hubu_frame_status walk_chunked(const uint8_t *data, size_t size, uint64_t *digest, unsigned long *count) {
  hubu_buf in = {0};
  hubu_frame_status v = HUBU_FRAME_NEED_MORE;
  uint32_t seed = (uint32_t)mix(14695981039346656037u, data, size < 16 ? size : 16);
  size_t pos = 0;
  while (pos < size && v == HUBU_FRAME_NEED_MORE) {
    seed = seed * 1664525u + 1013904223u;
    size_t k = 1 + (seed >> 8) % 97;
    if (k > size - pos) k = size - pos;
    FUZZ_ASSERT(hubu_buf_append(&in, data + pos, k) == 0);
    pos += k;
    while (hubu_buf_size(&in) > 0) {
      hubu_frame f;
      v = hubu_frame_next(hubu_buf_head(&in), hubu_buf_size(&in), FUZZ_MAX_FRAME, &f);
      if (v != HUBU_FRAME_OK) break;
      *digest = frame_digest(*digest, &f);
      ++*count;
      hubu_buf_consume(&in, f.size);
      v = HUBU_FRAME_NEED_MORE;
    }
  }
  hubu_buf_free(&in);
  return v;
}

static void run_one(const uint8_t *data, size_t size, fuzz_stats *st) {
  uint64_t d1 = 14695981039346656037u, d2 = d1;
  unsigned long c1 = 0, c2 = 0;
  hubu_frame_status v1 = walk_direct(data, size, st, &d1, &c1);
  hubu_frame_status v2 = walk_chunked(data, size, &d2, &c2);
  FUZZ_ASSERT(v1 == v2);
  FUZZ_ASSERT(c1 == c2);
  FUZZ_ASSERT(d1 == d2);
  if (v1 != HUBU_FRAME_NEED_MORE) st->errors[v1]++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_stats st = {0};
  /* libFuzzer may pass a NULL pointer with size 0; give the walkers a real one. */
  static const uint8_t empty[1];
  run_one(size ? data : empty, size, &st);
  return 0;
}

#ifdef HUBU_FUZZ_REPLAY
/* ---- replay: a plain program for ctest ----
 *   fuzz_frame_replay CORPUS_DIR...        runs every file, then 20,000 generated inputs
 *   fuzz_frame_replay --write-seeds DIR    writes the seed frames of tests/fuzz_corpus/frame */
#include <dirent.h>

#include "wire.h"

static uint64_t rng_state = 0x5EEDF00DCAFEBABEu;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717u;
}

/* Well-formed inputs to mutate: one frame of each type with fields set, and
 * a few multi-frame streams. */
typedef struct {
  const char *name;
  hubu_buf bytes;
} seed;

#define N_SEEDS 24
static seed seeds[N_SEEDS];
static size_t n_seeds;

static hubu_buf *new_seed(const char *name) {
  if (n_seeds == N_SEEDS) abort();
  seeds[n_seeds].name = name;
  return &seeds[n_seeds++].bytes;
}

static void add(hubu_buf *b, uint8_t type, const ProtobufCMessage *m) {
  if (hubu_wire_append(b, type, m) != 0) abort();
}

static void build_seeds(void) {
  static uint8_t payload[] = {0x00, 0x01, 0xA5, 0x01, 0x10, 0xFF, '{', '}'};
  ProtobufCBinaryData bin = {sizeof payload, payload};

  Hubu__V1__Hello hello = HUBU__V1__HELLO__INIT;
  hello.protocol_version = 1;
  hello.user_id = "alice";
  hello.device_id = "phone";
  hello.token = "v1.alice.1700000000.94ef18601ffcc83c41f2340d94a0bec7bffd03f15ab6a6fac2da4370bd4aefd4";
  hello.client_info = "fuzz/1";
  add(new_seed("hello"), HUBU_FRAME_HELLO, &hello.base);

  Hubu__V1__HelloOk ok = HUBU__V1__HELLO_OK__INIT;
  ok.conn_id = 7;
  ok.server_time_ms = 1700000000000u;
  ok.heartbeat_ms = 30000;
  ok.last_client_id = 41;
  ok.max_frame = 1u << 20;
  ok.server = "hubud";
  add(new_seed("hello_ok"), HUBU_FRAME_HELLO_OK, &ok.base);

  Hubu__V1__Send__MetaEntry e1 = HUBU__V1__SEND__META_ENTRY__INIT, e2 = HUBU__V1__SEND__META_ENTRY__INIT;
  e1.key = "mention";
  e1.value = "bob";
  e2.key = "reply_to";
  e2.value = "42";
  Hubu__V1__Send__MetaEntry *meta[] = {&e1, &e2};
  Hubu__V1__Send send = HUBU__V1__SEND__INIT;
  send.client_id = 42;
  send.session_id = "p2p:alice:bob";
  send.body = bin;
  send.content_type = "text/plain";
  send.n_meta = 2;
  send.meta = meta;
  send.client_time_ms = 1700000000123u;
  add(new_seed("send"), HUBU_FRAME_SEND, &send.base);

  Hubu__V1__SendAck ack = HUBU__V1__SEND_ACK__INIT;
  ack.client_id = 42;
  ack.code = HUBU__V1__CODE__OK;
  ack.session_id = "p2p:alice:bob";
  ack.seq = 9;
  ack.msg_id = 123456789;
  ack.duplicate = 1;
  add(new_seed("send_ack"), HUBU_FRAME_SEND_ACK, &ack.base);

  Hubu__V1__Message__MetaEntry me = HUBU__V1__MESSAGE__META_ENTRY__INIT;
  me.key = "k";
  me.value = "v";
  Hubu__V1__Message__MetaEntry *mmeta[] = {&me};
  Hubu__V1__Message msg = HUBU__V1__MESSAGE__INIT;
  msg.session_id = "g:team";
  msg.seq = 10;
  msg.msg_id = 99;
  msg.sender = "bob";
  msg.sender_device = "laptop";
  msg.client_id = 3;
  msg.body = bin;
  msg.content_type = "application/json";
  msg.n_meta = 1;
  msg.meta = mmeta;
  msg.server_time_ms = 1700000000456u;
  Hubu__V1__Message *msgs[] = {&msg, &msg};
  Hubu__V1__Push push = HUBU__V1__PUSH__INIT;
  push.n_messages = 2;
  push.messages = msgs;
  add(new_seed("push"), HUBU_FRAME_PUSH, &push.base);

  Hubu__V1__Cursor c1 = HUBU__V1__CURSOR__INIT, c2 = HUBU__V1__CURSOR__INIT;
  c1.session_id = "g:team";
  c1.seq = 10;
  c2.session_id = "p2p:alice:bob";
  c2.seq = 9;
  Hubu__V1__Cursor *cursors[] = {&c1, &c2};
  Hubu__V1__DeliverAck dack = HUBU__V1__DELIVER_ACK__INIT;
  dack.n_cursors = 2;
  dack.cursors = cursors;
  add(new_seed("deliver_ack"), HUBU_FRAME_DELIVER_ACK, &dack.base);

  Hubu__V1__SyncRequest sync = HUBU__V1__SYNC_REQUEST__INIT;
  sync.request_id = 5;
  sync.n_known = 2;
  sync.known = cursors;
  add(new_seed("sync"), HUBU_FRAME_SYNC, &sync.base);

  Hubu__V1__SessionState ss = HUBU__V1__SESSION_STATE__INIT;
  ss.session_id = "g:team";
  ss.max_seq = 10;
  ss.min_seq = 1;
  ss.kind = "group";
  Hubu__V1__SessionState *sss[] = {&ss};
  Hubu__V1__SyncResult sr = HUBU__V1__SYNC_RESULT__INIT;
  sr.request_id = 5;
  sr.n_sessions = 1;
  sr.sessions = sss;
  add(new_seed("sync_result"), HUBU_FRAME_SYNC_RESULT, &sr.base);

  Hubu__V1__PullRequest pull = HUBU__V1__PULL_REQUEST__INIT;
  pull.request_id = 6;
  pull.session_id = "g:team";
  pull.after_seq = 3;
  pull.limit = 50;
  add(new_seed("pull"), HUBU_FRAME_PULL, &pull.base);

  Hubu__V1__PullResult pr = HUBU__V1__PULL_RESULT__INIT;
  pr.request_id = 6;
  pr.session_id = "g:team";
  pr.n_messages = 1;
  pr.messages = msgs;
  pr.max_seq = 10;
  pr.has_more = 1;
  add(new_seed("pull_result"), HUBU_FRAME_PULL_RESULT, &pr.base);

  Hubu__V1__PullHint hint = HUBU__V1__PULL_HINT__INIT;
  hint.session_id = "g:team";
  hint.max_seq = 11;
  add(new_seed("pull_hint"), HUBU_FRAME_PULL_HINT, &hint.base);

  Hubu__V1__Call call = HUBU__V1__CALL__INIT;
  call.request_id = 8;
  call.method = "rooms.join";
  call.payload = bin;
  add(new_seed("call"), HUBU_FRAME_CALL, &call.base);

  Hubu__V1__CallResult cr = HUBU__V1__CALL_RESULT__INIT;
  cr.request_id = 8;
  cr.code = HUBU__V1__CODE__REJECTED;
  cr.payload = bin;
  cr.reason = "full";
  add(new_seed("call_result"), HUBU_FRAME_CALL_RESULT, &cr.base);

  Hubu__V1__Event ev = HUBU__V1__EVENT__INIT;
  ev.name = "typing";
  ev.payload = bin;
  ev.sender = "bob";
  add(new_seed("event"), HUBU_FRAME_EVENT, &ev.base);

  if (hubu_wire_append_error(new_seed("error"), HUBU__V1__CODE__BAD_BODY, "bad body", HUBU_FRAME_SEND) != 0 ||
      hubu_wire_append_goaway(new_seed("goaway"), HUBU__V1__CODE__SHUTTING_DOWN, "draining", 1500) != 0 ||
      hubu_wire_append_ping(new_seed("ping"), HUBU_FRAME_PING, 1700000000789u) != 0 ||
      hubu_wire_append_ping(new_seed("pong"), HUBU_FRAME_PONG, 1700000000789u) != 0)
    abort();

  /* A session's worth of client frames in one read, and every frame in one read. */
  hubu_buf *session = new_seed("client_session");
  add(session, HUBU_FRAME_HELLO, &hello.base);
  add(session, HUBU_FRAME_PING, NULL); /* empty body: time_ms 0 */
  add(session, HUBU_FRAME_SEND, &send.base);
  add(session, HUBU_FRAME_DELIVER_ACK, &dack.base);
  add(session, HUBU_FRAME_SYNC, &sync.base);
  add(session, HUBU_FRAME_PULL, &pull.base);
  add(session, HUBU_FRAME_CALL, &call.base);
  hubu_buf *all = new_seed("all_types");
  for (size_t i = 0; i + 2 < n_seeds; i++)
    if (hubu_buf_append(all, hubu_buf_head(&seeds[i].bytes), hubu_buf_size(&seeds[i].bytes)) != 0) abort();
}

/* One to four mutations of a copy of a seed. */
static size_t mutate(const hubu_buf *src, uint8_t *out, size_t cap) {
  size_t n = hubu_buf_size(src);
  if (n > cap) n = cap;
  memcpy(out, hubu_buf_head(src), n);
  int rounds = 1 + (int)(rng() % 4);
  for (int r = 0; r < rounds; r++) {
    uint64_t x = rng();
    size_t at = n ? (size_t)(rng() % n) : 0;
    switch (x % 9) {
      case 0:
        if (n) out[at] ^= (uint8_t)(1u << (x >> 8) % 8);
        break; /* flip a bit */
      case 1:
        if (n) out[at] = (uint8_t)(x >> 16);
        break;  /* set a byte */
      case 2: { /* interesting byte */
        static const uint8_t v[] = {0x00, 0x01, 0x7F, 0x80, 0xFF, 0xA5, 0x08, 0x12, 0x0A};
        if (n) out[at] = v[(x >> 8) % sizeof v];
        break;
      }
      case 3: n = at; break; /* truncate */
      case 4: {              /* insert random bytes */
        size_t k = 1 + (x >> 8) % 16;
        if (n + k > cap) break;
        memmove(out + at + k, out + at, n - at);
        for (size_t i = 0; i < k; i++) out[at + i] = (uint8_t)rng();
        n += k;
        break;
      }
      case 5: { /* delete a range */
        size_t k = 1 + (x >> 8) % 16;
        if (at + k > n) k = n - at;
        memmove(out + at, out + at + k, n - at - k);
        n -= k;
        break;
      }
      case 6: { /* duplicate a range */
        size_t k = 1 + (x >> 8) % 64;
        if (at + k > n) k = n - at;
        if (n + k > cap) break;
        memmove(out + at + k, out + at, n - at);
        n += k;
        break;
      }
      case 7: /* rewrite the first length */
        if (n >= HUBU_FRAME_HEADER_SIZE) {
          uint32_t len = (x >> 8) % 3 == 0 ? (uint32_t)(x >> 32) : (uint32_t)((x >> 8) % (n + 8));
          out[4] = (uint8_t)(len >> 24), out[5] = (uint8_t)(len >> 16);
          out[6] = (uint8_t)(len >> 8), out[7] = (uint8_t)len;
        }
        break;
      default: /* retype the first frame */
        if (n >= 3) out[2] = (uint8_t)(x >> 8);
        break;
    }
  }
  return n;
}

static int replay_file(const char *path, fuzz_stats *st) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  uint8_t *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 4096;
      buf = realloc(buf, cap);
      if (!buf) abort();
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    if (r == 0) break;
    n += r;
  }
  fclose(f);
  run_one(buf, n, st);
  free(buf);
  return 0;
}

static int replay_dir(const char *dir, fuzz_stats *st) {
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return -1;
  }
  int files = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (replay_file(path, st) == 0) files++;
  }
  closedir(d);
  return files;
}

static int write_seeds(const char *dir) {
  static const char *wanted[] = {"hello", "send", "push", "client_session", "error"};
  for (size_t w = 0; w < sizeof wanted / sizeof wanted[0]; w++)
    for (size_t i = 0; i < n_seeds; i++) {
      if (strcmp(seeds[i].name, wanted[w]) != 0) continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s.bin", dir, seeds[i].name);
      FILE *f = fopen(path, "wb");
      if (!f || fwrite(hubu_buf_head(&seeds[i].bytes), 1, hubu_buf_size(&seeds[i].bytes), f) !=
                    hubu_buf_size(&seeds[i].bytes)) {
        perror(path);
        return 1;
      }
      fclose(f);
      printf("wrote %s (%zu bytes)\n", path, hubu_buf_size(&seeds[i].bytes));
    }
  return 0;
}

#define N_GENERATED 20000

int main(int argc, char **argv) {
  build_seeds();
  if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) return write_seeds(argv[2]);
  int failed = 0;

  /* 1. Every type has a body descriptor exactly when the frame layer knows it. */
  for (int t = 0; t < 256; t++)
    if (!!body_descriptor((uint8_t)t) != !!hubu_frame_type_known((uint8_t)t)) {
      fprintf(stderr, "type 0x%02x: descriptor and hubu_frame_type_known disagree\n", t);
      failed = 1;
    }

  /* 2. Each seed decodes whole: all frames, every body as its type. */
  for (size_t i = 0; i < n_seeds; i++) {
    fuzz_stats st = {0};
    run_one(hubu_buf_head(&seeds[i].bytes), hubu_buf_size(&seeds[i].bytes), &st);
    unsigned long fatal =
        st.errors[HUBU_FRAME_ERR_MAGIC] + st.errors[HUBU_FRAME_ERR_VERSION] + st.errors[HUBU_FRAME_ERR_TOO_LARGE];
    if (st.frames == 0 || st.bodies_ok != st.frames || fatal) {
      fprintf(stderr, "seed %s: %lu frames, %lu bodies decoded, %lu errors\n", seeds[i].name, st.frames, st.bodies_ok,
              fatal);
      failed = 1;
    }
  }

  /* 2b. The protobuf-c quirk above (found by `make fuzz`): a GOAWAY whose body
   * is field 0 as fixed64 with an overlong tag must not stop the walk. */
  static const uint8_t quirk[] = {0xA5, 0x01, 0x06, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x00, 0x00,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0xA5, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00};
  fuzz_stats q = {0};
  run_one(quirk, sizeof quirk, &q);
  if (q.frames != 2) { /* how protobuf-c judges the body may change with its version; the walk may not */
    fprintf(stderr, "quirk input: %lu frames, %lu decoded, %lu repacks rejected\n", q.frames, q.bodies_ok,
            q.repack_rejected);
    failed = 1;
  }

  /* 3. The checked-in corpus. */
  fuzz_stats corpus = {0};
  int files = 0;
  for (int i = 1; i < argc; i++) {
    int n = replay_dir(argv[i], &corpus);
    if (n < 0)
      failed = 1;
    else
      files += n;
  }
  if (argc > 1 && files == 0) {
    fprintf(stderr, "no corpus files found\n");
    failed = 1;
  }

  /* 4. Generated inputs from a fixed seed: random bytes, random bodies behind
   * valid headers, and mutated seeds. */
  fuzz_stats gen = {0};
  static uint8_t in[16384];
  for (int i = 0; i < N_GENERATED; i++) {
    size_t n = 0;
    switch (i % 4) {
      case 0: { /* pure noise, sometimes starting like a frame */
        n = (size_t)(rng() % 300);
        for (size_t k = 0; k < n; k++) in[k] = (uint8_t)rng();
        if (n >= 2 && rng() % 2) in[0] = HUBU_FRAME_MAGIC, in[1] = HUBU_FRAME_VERSION;
        break;
      }
      case 1: { /* valid headers of known types over random bodies */
        while (n < 1000) {
          static const uint8_t types[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12,
                                          0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x20, 0x21, 0x22};
          uint32_t len = (uint32_t)(rng() % 64);
          hubu_frame_header_encode(in + n, types[rng() % sizeof types], 0, len);
          n += HUBU_FRAME_HEADER_SIZE;
          for (uint32_t k = 0; k < len; k++) in[n + k] = (uint8_t)rng();
          n += len;
          if (rng() % 3 == 0) break;
        }
        break;
      }
      default: /* mutated seeds */ n = mutate(&seeds[rng() % n_seeds].bytes, in, sizeof in); break;
    }
    run_one(in, n, &gen);
  }

  printf("corpus: %d files, %lu frames, %lu bodies decoded, %lu bad bodies\n", files, corpus.frames, corpus.bodies_ok,
         corpus.bodies_bad);
  printf(
      "generated: %d inputs, %lu frames, %lu bodies decoded, %lu bad bodies, %lu unknown types; "
      "ended by bad magic %lu, bad version %lu, too large %lu\n",
      N_GENERATED, gen.frames, gen.bodies_ok, gen.bodies_bad, gen.unknown, gen.errors[HUBU_FRAME_ERR_MAGIC],
      gen.errors[HUBU_FRAME_ERR_VERSION], gen.errors[HUBU_FRAME_ERR_TOO_LARGE]);
  /* The generator must reach every outcome, or it is not testing what it claims. */
  if (gen.bodies_ok < 1000 || gen.bodies_bad < 100 || gen.unknown < 10 || gen.errors[HUBU_FRAME_ERR_MAGIC] < 100 ||
      gen.errors[HUBU_FRAME_ERR_VERSION] < 100 || gen.errors[HUBU_FRAME_ERR_TOO_LARGE] < 100) {
    fprintf(stderr, "generated inputs did not reach every decoder outcome\n");
    failed = 1;
  }
  for (size_t i = 0; i < n_seeds; i++) hubu_buf_free(&seeds[i].bytes);
  return failed;
}
#endif

/* fuzz_ws.c — the HTTP listener's input path (runtime/net/ws.c) on untrusted
 * bytes, in process: the request parse, the upgrade, then WebSocket frames
 * through wslay, with the connection's answers fed back as hubud's would be.
 *
 * One input is one connection. Its first byte chooses how the rest is cut
 * into reads (bits 0-2: 1, 2, 3, 5, 8, 13, 64 bytes or all at once), whether
 * a valid upgrade request goes first (bit 3: then the rest are frames), the
 * message cap (bit 4: 4104 or 65544 bytes), the Origin list (bit 5), whether
 * the connection's HTTP side is there (bit 6: requests other than /ws are
 * handed over, answered at once or, with bit 7, from the frames the
 * connection produces next) and, with bits 3 and 7, hubu.v1.json (text
 * messages made into frames by lib/pbjson.c). Checked:
 *  - hubu_ws_input answers 0, 1 or -1, and once it said 1 (closing) or -1 it
 *    is not fed again;
 *  - every message delivered holds exactly one frame header's worth of bytes
 *    (the header's length + 8) and is at most the cap (a JSON one: its
 *    frame made of it);
 *  - a request handed over has its path and a body within the limit, and a
 *    refused JSON message names BAD_FRAME or BAD_BODY;
 *  - before the upgrade the output is empty or one HTTP answer
 *    ("HTTP/1.1 NNN "), and an upgraded connection's first bytes are the 101;
 *  - hubu_ws_output with frames and a close never fails, and the output
 *    after it parses as server frames (unmasked, lengths within the buffer).
 * ASan and UBSan (the sanitizer build, and libFuzzer's) check the memory.
 *
 * libFuzzer entry point; built with -DHUBU_FUZZ_REPLAY it is a plain program
 * (a ctest test) that replays the corpus directories given to it, the seeds
 * below and 20,000 mutants of them from a fixed seed:
 *   fuzz_ws_replay [CORPUS_DIR...]       replays
 *   fuzz_ws_replay --write-seeds DIR     writes the seeds (tests/fuzz_corpus/ws) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "log.h"
#include "ws.h"

#define UPGRADE                                                                                     \
  "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " \
  "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: hubu.v1\r\n\r\n"
#define UPGRADE_JSON                                                                                \
  "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " \
  "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: hubu.v1.json\r\n\r\n"
#define MAX_BODY 3000

static void fail(const char *what) {
  fprintf(stderr, "fuzz_ws: %s\n", what);
  abort();
}

typedef struct {
  size_t cap;
  size_t delivered;
  hubu_ws *ws;
  int later; /* answer a request from the next frames, not at once */
} fuzz_state;

static int on_request(void *ud, const hubu_http_request *req) {
  fuzz_state *st = ud;
  if (!req->path || !req->path_len || req->body_len > MAX_BODY) fail("request without a path or above the body limit");
  if (req->query && !req->query_len) fail("a query pointer without a length");
  if (!st->later && hubu_ws_respond(st->ws, 200, "text/plain", NULL, req->body, req->body_len) != 0)
    fail("hubu_ws_respond failed");
  return 0;
}

static void on_frame(void *ud, const uint8_t *frame, size_t len) {
  fuzz_state *st = ud;
  if (len < HUBU_FRAME_HEADER_SIZE || frame[0] != HUBU_FRAME_MAGIC) fail("not a whole frame handed over");
  if (hubu_ws_respond(st->ws, 503, "application/json", "Retry-After: 1\r\n", "{}", 2) != 0)
    fail("hubu_ws_respond failed");
}

static void on_refused(void *ud, int code, uint8_t type, const char *why) {
  (void)ud, (void)type;
  if (code != HUBU__V1__CODE__BAD_FRAME && code != HUBU__V1__CODE__BAD_BODY) fail("a JSON refusal of another code");
  if (!why || !why[0]) fail("a JSON refusal without a reason");
}

static const hubu_ws_http fuzz_http = {.request = on_request, .frame = on_frame, .refused = on_refused};

static int deliver(void *ud, const uint8_t *msg, size_t len) {
  fuzz_state *st = ud;
  if (len > st->cap) fail("message above the cap delivered");
  if (len < HUBU_FRAME_HEADER_SIZE) fail("message shorter than a frame header delivered");
  size_t body = (size_t)msg[4] << 24 | (size_t)msg[5] << 16 | (size_t)msg[6] << 8 | msg[7];
  if (msg[0] == HUBU_FRAME_MAGIC && msg[1] == HUBU_FRAME_VERSION && body + HUBU_FRAME_HEADER_SIZE != len)
    fail("message is not exactly one frame");
  st->delivered++;
  return 0;
}

/* Server frames: FIN set, unmasked, lengths within the buffer. */
static void check_frames(const uint8_t *p, size_t n) {
  size_t off = 0;
  while (off < n) {
    if (n - off < 2) fail("truncated frame header in the output");
    uint8_t b0 = p[off], b1 = p[off + 1];
    if (b1 & 0x80) fail("masked server frame");
    if (!(b0 & 0x80)) fail("fragmented server frame");
    uint64_t len = b1 & 0x7f;
    size_t h = 2;
    if (len == 126) {
      if (n - off < 4) fail("truncated length");
      len = (uint64_t)p[off + 2] << 8 | p[off + 3];
      h = 4;
    } else if (len == 127) {
      if (n - off < 10) fail("truncated length");
      len = 0;
      for (int i = 0; i < 8; i++) len = len << 8 | p[off + 2 + i];
      h = 10;
    }
    if (len > n - off - h) fail("frame longer than the output");
    off += h + (size_t)len;
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  hubu_log_min_level = HUBU_LOG_ERROR; /* every refusal is logged at info: not here */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const size_t cuts[8] = {1, 2, 3, 5, 8, 13, 64, (size_t)-1};
  size_t cut = cuts[data[0] & 7];
  int upgrade_first = (data[0] >> 3) & 1;
  fuzz_state st = {.cap = (data[0] >> 4) & 1 ? 65544 : 4104, .later = (data[0] >> 7) & 1};
  hubu_ws *ws = hubu_ws_new((data[0] >> 5) & 1 ? "https://a.example,http://b.example:8080" : NULL, 1);
  if (!ws) return 0;
  st.ws = ws;
  if ((data[0] >> 6) & 1) {
    hubu_ws_set_http(ws, &fuzz_http, &st);
    hubu_ws_set_max_body(ws, MAX_BODY);
  }
  hubu_ws_set_max_message(ws, st.cap);
  int json = upgrade_first && (data[0] >> 7) & 1;
  data++, size--;
  int r = 0, answered = 0;
  if (upgrade_first) {
    r = json ? hubu_ws_input(ws, (const uint8_t *)UPGRADE_JSON, sizeof UPGRADE_JSON - 1, deliver, &st)
             : hubu_ws_input(ws, (const uint8_t *)UPGRADE, sizeof UPGRADE - 1, deliver, &st);
    if (r != 0 || !hubu_ws_open(ws) || hubu_ws_json(ws) != json) fail("the valid upgrade was not taken");
    hubu_buf out = {0};
    hubu_ws_take_output(ws, &out);
    if (hubu_buf_size(&out) < 13 || memcmp(hubu_buf_head(&out), "HTTP/1.1 101 ", 13) != 0)
      fail("the valid upgrade was not answered with 101");
    hubu_buf_free(&out);
    answered = 1;
  }
  for (size_t off = 0; off < size && r == 0;) {
    size_t n = size - off < cut ? size - off : cut;
    int was_open = hubu_ws_open(ws);
    r = hubu_ws_input(ws, data + off, n, deliver, &st);
    if (r < -1 || r > 1) fail("hubu_ws_input answered outside -1..1");
    off += n;
    if (!was_open && hubu_ws_output_pending(ws) && !answered) {
      hubu_buf out = {0};
      hubu_ws_take_output(ws, &out);
      if (hubu_buf_size(&out) < 13 || memcmp(hubu_buf_head(&out), "HTTP/1.1 ", 9) != 0)
        fail("first bytes out are not an HTTP answer");
      if (hubu_ws_open(ws) != !memcmp(hubu_buf_head(&out), "HTTP/1.1 101 ", 13))
        fail("open without a 101, or a 101 without open");
      if (hubu_ws_open(ws)) {
        const uint8_t *h = hubu_buf_head(&out);
        size_t hn = hubu_buf_size(&out), end = 0;
        for (size_t i = 3; i < hn && !end; i++)
          if (!memcmp(h + i - 3, "\r\n\r\n", 4)) end = i + 1;
        if (!end) fail("101 without the end of its head");
        check_frames(h + end, hn - end);
      }
      answered = 1;
      hubu_buf_free(&out);
    } else if (was_open) {
      hubu_buf out = {0};
      hubu_ws_take_output(ws, &out);
      check_frames(hubu_buf_head(&out), hubu_buf_size(&out));
      hubu_buf_free(&out);
    }
  }
  if (r >= 0) { /* the connection closes: a frame (when open), then the close */
    hubu_buf frames = {0};
    uint8_t hdr[HUBU_FRAME_HEADER_SIZE];
    hubu_frame_header_encode(hdr, HUBU_FRAME_GOAWAY, 0, 0);
    if (hubu_buf_append(&frames, hdr, sizeof hdr) == 0) {
      int was_open = hubu_ws_open(ws);
      if (hubu_ws_output(ws, &frames, 1, HUBU_WS_CLOSE_NORMAL) != 0) fail("hubu_ws_output failed");
      hubu_buf out = {0};
      hubu_ws_take_output(ws, &out);
      if (was_open && answered) check_frames(hubu_buf_head(&out), hubu_buf_size(&out));
      hubu_buf_free(&out);
    }
    hubu_buf_free(&frames);
  }
  hubu_ws_free(ws);
  return 0;
}

#ifdef HUBU_FUZZ_REPLAY
#include "fuzz_replay.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

/* A masked client frame into out; returns its size. */
static size_t client_frame(uint8_t *out, int fin, int op, int mask, const uint8_t *p, size_t len) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | op);
  uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    out[n++] = (uint8_t)(m | len);
  } else {
    out[n++] = m | 126;
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  }
  static const uint8_t key[4] = {1, 2, 3, 4};
  if (mask) memcpy(out + n, key, 4), n += 4;
  for (size_t i = 0; i < len; i++) out[n + i] = p[i] ^ (mask ? key[i % 4] : 0);
  return n + len;
}

#define MAX_SEED 2048
typedef struct {
  uint8_t b[MAX_SEED];
  size_t n;
} seed;

static size_t make_seeds(seed *s) {
  size_t k = 0;
  const char *reqs[] = {
      UPGRADE,
      "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /ws HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
      "GET / HTTP/1.1\r\n\r\n",
      "GARBAGE\r\n\r\n",
      "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
      "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    s[k].b[0] = (uint8_t)(i & 7);
    s[k].n = 1 + strlen(reqs[i]);
    memcpy(s[k].b + 1, reqs[i], s[k].n - 1);
    k++;
  }
  static const uint8_t ping[8] = {0xa5, 1, 3, 0, 0, 0, 0, 0};
  const struct {
    int fin, op, mask;
    size_t len;
  } frames[] = {{1, 2, 1, 8}, {0, 2, 1, 3}, {1, 0, 1, 5}, {1, 9, 1, 2}, {1, 1, 1, 4}, {1, 2, 0, 8}, {1, 8, 1, 2}};
  for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
    s[k].b[0] = (uint8_t)(8 | (i & 7) | (i & 1) << 4);
    s[k].n = 1 + client_frame(s[k].b + 1, frames[i].fin, frames[i].op, frames[i].mask, ping, frames[i].len);
    k++;
  }
  /* HTTP requests handed to the connection (bit 6), answered at once or later (bit 7) */
  const char *api[] = {
      "POST /v1/messages?device_id=d HTTP/1.1\r\nAuthorization: Bearer v1.a.1.00\r\nContent-Type: "
      "application/json\r\nContent-Length: 24\r\n\r\n{\"clientId\":\"1\",\"x\":[]}",
      "POST /v1/sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
      "GET /v1/sessions/d%3Aa%3Ab/messages?after=1&limit=5 HTTP/1.1\r\nAccept: application/x-protobuf\r\n\r\n",
      "POST /v1/calls/x HTTP/1.1\r\nContent-Length: 99999\r\n\r\nabc",
  };
  for (size_t i = 0; i < sizeof api / sizeof api[0]; i++) {
    s[k].b[0] = (uint8_t)(64 | (i & 1) << 7 | (i & 7));
    s[k].n = 1 + strlen(api[i]);
    memcpy(s[k].b + 1, api[i], s[k].n - 1);
    k++;
  }
  /* hubu.v1.json (bits 3 and 7): text messages, good and bad */
  const char *texts[] = {
      "{\"type\":\"HELLO\",\"body\":{\"userId\":\"a\",\"deviceId\":\"d\",\"token\":\"t\"}}",
      "{\"type\":\"SEND\",\"body\":{\"clientId\":\"x\"}}",
      "{\"type\":\"NOPE\"}",
      "[1,2]",
      "{\"type\":\"DELIVER_ACK\",\"body\":{\"cursors\":[{\"seq\":\"1\"}]}}",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    s[k].b[0] = (uint8_t)(128 | 64 | 8 | (i & 7));
    s[k].n = 1 + client_frame(s[k].b + 1, 1, 1, 1, (const uint8_t *)texts[i], strlen(texts[i]));
    k++;
  }
  /* a fragmented message with a ping between */
  s[k].b[0] = 8 | 7;
  size_t n = 1;
  n += client_frame(s[k].b + n, 0, 2, 1, ping, 3);
  n += client_frame(s[k].b + n, 1, 9, 1, (const uint8_t *)"hi", 2);
  n += client_frame(s[k].b + n, 1, 0, 1, ping + 3, 5);
  s[k++].n = n;
  return k;
}

static void run(const uint8_t *p, size_t n) { LLVMFuzzerTestOneInput(p, n); }

static seed seeds[48];
static const uint8_t *seed_at(size_t i, size_t *len) {
  *len = seeds[i].n;
  return seeds[i].b;
}

int main(int argc, char **argv) {
  hubu_log_min_level = HUBU_LOG_ERROR; /* every refusal is logged at info: not here */
  size_t ns = make_seeds(seeds);
  if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return fuzz_write_seeds(argv[2], ns, seed_at);
  long files = fuzz_replay_dirs(argv + 1, argc - 1, run);
  if (files < 0) return 1;
  for (size_t i = 0; i < ns; i++) run(seeds[i].b, seeds[i].n);
  static uint8_t m[MAX_SEED + 64];
  for (int i = 0; i < 20000; i++) {
    const seed *s = &seeds[next_rand() % ns];
    size_t n = s->n;
    memcpy(m, s->b, n);
    int edits = 1 + (int)(next_rand() % 8);
    for (int e = 0; e < edits; e++) {
      size_t at = n ? next_rand() % n : 0;
      switch (next_rand() % 4) {
        case 0: m[at] ^= (uint8_t)(1u << (next_rand() % 8)); break;
        case 1: m[at] = (uint8_t)next_rand(); break;
        case 2:
          if (n > 1) n = at + 1;
          break;
        case 3:
          if (n + 8 <= sizeof m)
            for (int j = 0; j < 8; j++) m[n++] = (uint8_t)next_rand();
          break;
      }
    }
    run(m, n);
  }
  printf("fuzz_ws_replay: %ld corpus files, %zu seeds, 20000 mutants: ok\n", files, ns);
  return 0;
}
#endif

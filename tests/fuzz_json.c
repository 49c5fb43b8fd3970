/* fuzz_json.c — the JSON form (runtime/lib/pbjson.c) on untrusted bytes, as
 * a hubu.v1.json WebSocket message and as an HTTP API body reach it.
 *
 * One input is one text message. Checked:
 *  - hubu_pbjson_frame_in answers one of its statuses; on OK or
 *    UNKNOWN_TYPE the frame it made has a valid header whose length is what
 *    follows it, on the others nothing is left in the output;
 *  - a frame it made is written back (hubu_pbjson_frame_out) as JSON that
 *    reads again (OK) into a frame that is written as the very same JSON:
 *    the canonical form is a fixed point;
 *  - the body alone, parsed as every message of the protocol
 *    (hubu_pbjson_parse), gives 0, -1 with a reason, or -2, and its wire
 *    bytes unpack with protobuf-c when it gave 0.
 * ASan and UBSan (the sanitizer build, and libFuzzer's) check the memory.
 *
 * libFuzzer entry point; built with -DHUBU_FUZZ_REPLAY it is a plain program
 * (a ctest test) that replays the corpus directories given to it, the seeds
 * below and 20,000 mutants of them from a fixed seed:
 *   fuzz_json_replay [CORPUS_DIR...]       replays
 *   fuzz_json_replay --write-seeds DIR     writes the seeds (tests/fuzz_corpus/json) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "pbjson.h"

static void fail(const char *what) {
  fprintf(stderr, "fuzz_json: %s\n", what);
  abort();
}

static void check_frame(const hubu_buf *b) {
  if (hubu_buf_size(b) < HUBU_FRAME_HEADER_SIZE) fail("a frame shorter than its header");
  const uint8_t *p = hubu_buf_head(b);
  hubu_frame f;
  if (hubu_frame_next(p, hubu_buf_size(b), UINT32_MAX, &f) != HUBU_FRAME_OK || f.size != hubu_buf_size(b))
    fail("a frame whose header does not describe it");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hubu_buf frame = {0}, text = {0}, again = {0}, text2 = {0};
  uint8_t type = 0;
  char why[200];
  hubu_pbjson_frame_status st = hubu_pbjson_frame_in((const char *)data, size, &frame, &type, why, sizeof why);
  switch (st) {
    case HUBU_PBJSON_FRAME_OK:
    case HUBU_PBJSON_FRAME_UNKNOWN_TYPE: check_frame(&frame); break;
    case HUBU_PBJSON_FRAME_BAD:
    case HUBU_PBJSON_FRAME_BAD_BODY:
    case HUBU_PBJSON_FRAME_NOMEM:
      if (hubu_buf_size(&frame)) fail("a refused message left bytes behind");
      break;
    default: fail("a status outside the enum");
  }
  if (st == HUBU_PBJSON_FRAME_OK) {
    if (hubu_pbjson_frame_out(hubu_buf_head(&frame), hubu_buf_size(&frame), &text) != 0) fail("frame_out failed");
    uint8_t t2;
    if (hubu_pbjson_frame_in((const char *)hubu_buf_head(&text), hubu_buf_size(&text), &again, &t2, why, sizeof why) !=
            HUBU_PBJSON_FRAME_OK ||
        t2 != type) {
      fprintf(stderr, "fuzz_json: %.*s: %s\n", (int)hubu_buf_size(&text), (const char *)hubu_buf_head(&text), why);
      fail("the JSON written does not read again");
    }
    if (hubu_pbjson_frame_out(hubu_buf_head(&again), hubu_buf_size(&again), &text2) != 0) fail("frame_out failed");
    if (hubu_buf_size(&text) != hubu_buf_size(&text2) ||
        memcmp(hubu_buf_head(&text), hubu_buf_head(&text2), hubu_buf_size(&text)) != 0)
      fail("the canonical JSON is not a fixed point");
  }
  static const uint8_t types[] = {HUBU_FRAME_HELLO, HUBU_FRAME_SEND, HUBU_FRAME_PUSH, HUBU_FRAME_DELIVER_ACK,
                                  HUBU_FRAME_SYNC,  HUBU_FRAME_PULL, HUBU_FRAME_CALL, HUBU_FRAME_ERROR};
  for (size_t i = 0; i < sizeof types; i++) {
    const ProtobufCMessageDescriptor *d = hubu_pbjson_frame_descriptor(types[i]);
    hubu_buf wire = {0};
    int rc = hubu_pbjson_parse(d, (const char *)data, size, &wire, why, sizeof why);
    if (rc < -2 || rc > 0) fail("parse answered outside -2..0");
    if (rc == -1 && !why[0]) fail("a refusal without a reason");
    if (rc == 0) {
      ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, hubu_buf_size(&wire), hubu_buf_head(&wire));
      if (!m) fail("wire bytes made from JSON do not unpack");
      protobuf_c_message_free_unpacked(m, NULL);
    } else if (hubu_buf_size(&wire)) {
      fail("a refused body left bytes behind");
    }
    hubu_buf_free(&wire);
  }
  hubu_buf_free(&frame);
  hubu_buf_free(&text);
  hubu_buf_free(&again);
  hubu_buf_free(&text2);
  return 0;
}

#ifdef HUBU_FUZZ_REPLAY
#include "fuzz_replay.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next_rand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

static const char *const seeds[] = {
    "{\"type\":\"HELLO\",\"body\":{\"protocolVersion\":1,\"userId\":\"alice\",\"deviceId\":\"web\",\"token\":\"t\"}}",
    "{\"type\":\"SEND\",\"body\":{\"client_id\":\"1\",\"sessionId\":\"d:a:b\",\"body\":\"aGkA/w==\",\"meta\":{\"k\":"
    "\"v\"}}}",
    "{\"type\":\"SEND\",\"body\":{\"clientId\":18446744073709551615,\"body\":\"_-8\"}}",
    "{\"type\":\"PUSH\",\"body\":{\"messages\":[{\"seq\":\"1\",\"meta\":{}},{\"seq\":\"2\",\"body\":\"\"}]}}",
    "{\"type\":\"DELIVER_ACK\",\"body\":{\"cursors\":[{\"sessionId\":\"g:x\",\"seq\":\"9\"}]}}",
    "{\"type\":\"SYNC\",\"body\":{\"requestId\":\"1\",\"known\":[]}}",
    "{\"type\":\"ERROR\",\"body\":{\"code\":\"RATE_LIMITED\",\"frameType\":16}}",
    "{\"type\":\"ERROR\",\"body\":{\"code\":99}}",
    "{\"type\":\"PING\",\"body\":{\"timeMs\":1.5e3}}",
    "{\"type\":\"NOPE\",\"body\":{}}",
    "{\"type\":\"CALL\",\"body\":{\"method\":\"x\",\"payload\":null,\"unknown\":[1,{\"a\":2}]}}",
    "[\"SEND\"]",
    "{\"type\":\"SEND\",\"body\":{\"sessionId\":\"a\\u00e9\\ud83d\\ude00\"}}",
};

static void run(const uint8_t *p, size_t n) { LLVMFuzzerTestOneInput(p, n); }

static const uint8_t *seed_at(size_t i, size_t *len) {
  *len = strlen(seeds[i]);
  return (const uint8_t *)seeds[i];
}

int main(int argc, char **argv) {
  size_t ns = sizeof seeds / sizeof seeds[0];
  if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return fuzz_write_seeds(argv[2], ns, seed_at);
  long files = fuzz_replay_dirs(argv + 1, argc - 1, run);
  if (files < 0) return 1;
  for (size_t i = 0; i < ns; i++) run((const uint8_t *)seeds[i], strlen(seeds[i]));
  static uint8_t m[1024];
  static const char tokens[][8] = {"\"", "{", "}", "[", "]", ",", ":", "null", "1", "\"1\"", "-", "\\u", "e9", "=="};
  for (int i = 0; i < 20000; i++) {
    const char *s = seeds[next_rand() % ns];
    size_t n = strlen(s);
    memcpy(m, s, n);
    int edits = 1 + (int)(next_rand() % 4);
    for (int e = 0; e < edits && n; e++) {
      size_t at = next_rand() % n;
      switch (next_rand() % 4) {
        case 0: m[at] = (uint8_t)next_rand(); break;                 /* flip a byte */
        case 1: memmove(m + at, m + at + 1, n - at - 1), n--; break; /* drop one */
        case 2: n = at; break;                                       /* truncate */
        default: {                                                   /* insert a JSON token */
          const char *t = tokens[next_rand() % (sizeof tokens / sizeof tokens[0])];
          size_t tl = strlen(t);
          if (n + tl < sizeof m) {
            memmove(m + at + tl, m + at, n - at);
            memcpy(m + at, t, tl);
            n += tl;
          }
        }
      }
    }
    run(m, n);
  }
  printf("fuzz_json_replay: %ld corpus files, %zu seeds, 20000 mutants: ok\n", files, ns);
  return 0;
}
#endif

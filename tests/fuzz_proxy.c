/* fuzz_proxy.c — the PROXY protocol header parser (runtime/net/proxy_proto.c)
 * on untrusted bytes, fed as runtime/net/conn.c feeds it: the connection's
 * reads appended to what is held until a verdict.
 *
 * One input is one connection. Its first byte chooses how the rest is cut
 * into reads (bits 0-2: 1, 2, 3, 5, 8, 13, 64 bytes or all at once).
 * Checked:
 *  - a verdict never changes with the cut: the incremental parse ends as the
 *    parse of the whole input does (same status, same header length), and a
 *    prefix already refused or accepted stays so as bytes are added;
 *  - HUBU_PROXY_NEED_MORE only while fewer than HUBU_PROXY_MAX_HEADER bytes
 *    are held (v1: fewer than 107), so what a connection holds is bounded;
 *  - an accepted header is no longer than the input, is v1 or v2, names an
 *    AF_INET/AF_INET6 client or none (AF_UNSPEC), and its address prints; an
 *    address printed into a v1 line parses back to the same address.
 * ASan and UBSan (the sanitizer build, and libFuzzer's) check the memory.
 *
 * libFuzzer entry point; built with -DHUBU_FUZZ_REPLAY it is a plain program
 * (a ctest test) that replays the corpus directories given to it, the seeds
 * below and 20,000 mutants of them from a fixed seed:
 *   fuzz_proxy_replay [CORPUS_DIR...]       replays
 *   fuzz_proxy_replay --write-seeds DIR     writes the seeds (tests/fuzz_corpus/proxy) */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

static void fail(const char *what) {
  fprintf(stderr, "fuzz_proxy: %s\n", what);
  abort();
}

static void check_header(const hubu_proxy_header *h, size_t n) {
  if (h->len == 0 || h->len > n) fail("header length outside the input");
  if (h->version != 1 && h->version != 2) fail("version neither 1 nor 2");
  if (h->version == 1 && h->len > HUBU_PROXY_V1_MAX) fail("v1 header above 107 bytes");
  if (h->len > HUBU_PROXY_MAX_HEADER) fail("header above the cap");
  if (h->family == AF_UNSPEC) return;
  if (h->family != AF_INET && h->family != AF_INET6) fail("unknown family");
  if (h->src.ss_family != h->family || h->dst.ss_family != h->family) fail("addresses of another family");
  char src[96], dst[96], ip_s[64], ip_d[64];
  hubu_proxy_addr_name(&h->src, 1, src, sizeof src);
  hubu_proxy_addr_name(&h->dst, 1, dst, sizeof dst);
  hubu_proxy_addr_name(&h->src, 0, ip_s, sizeof ip_s);
  hubu_proxy_addr_name(&h->dst, 0, ip_d, sizeof ip_d);
  if (!src[0] || !dst[0] || !ip_s[0] || !ip_d[0]) fail("an address that does not print");
  /* the same addresses as a v1 line parse back to themselves */
  unsigned sport = h->family == AF_INET ? ntohs(((const struct sockaddr_in *)&h->src)->sin_port)
                                        : ntohs(((const struct sockaddr_in6 *)&h->src)->sin6_port);
  unsigned dport = h->family == AF_INET ? ntohs(((const struct sockaddr_in *)&h->dst)->sin_port)
                                        : ntohs(((const struct sockaddr_in6 *)&h->dst)->sin6_port);
  char line[160];
  int len = snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n", h->family == AF_INET ? "TCP4" : "TCP6", ip_s, ip_d,
                     sport, dport);
  hubu_proxy_header back;
  if (len <= 0 || (size_t)len > HUBU_PROXY_V1_MAX) fail("a v1 line of the addresses above 107 bytes");
  if (hubu_proxy_parse((const uint8_t *)line, (size_t)len, &back, NULL) != HUBU_PROXY_OK) fail("v1 of it refused");
  char again[96];
  hubu_proxy_addr_name(&back.src, 1, again, sizeof again);
  if (strcmp(again, src) != 0 || back.len != (size_t)len) fail("v1 of it parses to another address");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const size_t cuts[8] = {1, 2, 3, 5, 8, 13, 64, (size_t)-1};
  size_t cut = cuts[data[0] & 7];
  data++, size--;
  hubu_proxy_header whole;
  const char *why = NULL;
  hubu_proxy_status want = hubu_proxy_parse(data, size, &whole, &why);
  if (want == HUBU_PROXY_ERROR && (!why || !why[0])) fail("an error without a reason");
  if (want == HUBU_PROXY_NEED_MORE && size >= HUBU_PROXY_MAX_HEADER) fail("needs more past the cap");
  if (want == HUBU_PROXY_NEED_MORE && size >= HUBU_PROXY_V1_MAX && size && data[0] == 'P')
    fail("v1 needs more past 107 bytes");
  if (want == HUBU_PROXY_OK) check_header(&whole, size);
  /* reads as a connection gets them: held until a verdict */
  hubu_proxy_status got = HUBU_PROXY_NEED_MORE;
  hubu_proxy_header h;
  size_t held = 0;
  while (held < size && got == HUBU_PROXY_NEED_MORE) {
    held += size - held < cut ? size - held : cut;
    got = hubu_proxy_parse(data, held, &h, NULL);
    if (got == HUBU_PROXY_NEED_MORE && held >= HUBU_PROXY_MAX_HEADER) fail("held past the cap");
  }
  if (size == 0) return 0;
  if (got != want) fail("the verdict depends on how the bytes were cut");
  if (got == HUBU_PROXY_OK && (h.len != whole.len || h.family != whole.family)) fail("another header when cut");
  return 0;
}

#ifdef HUBU_FUZZ_REPLAY
#include "fuzz_replay.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

#define MAX_SEED 256
typedef struct {
  uint8_t b[MAX_SEED];
  size_t n;
} seed;

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: command, family byte, payload bytes (addresses, TLVs). */
static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const uint8_t *payload, size_t len) {
  memcpy(out, v2_sig, 12);
  out[12] = (uint8_t)(0x20 | cmd);
  out[13] = fam;
  out[14] = (uint8_t)(len >> 8);
  out[15] = (uint8_t)len;
  memcpy(out + 16, payload, len);
  return 16 + len;
}

static size_t make_seeds(seed *s) {
  size_t k = 0;
  const char *v1[] = {
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324 7700\r\n",
      "PROXY TCP6 2001:db8::1 ::1 65535 443\r\n\xa5\x01\x01\x00\x00\x00\x00\x00",
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
      "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nGET /ws HTTP/1.1\r\n\r\n",
      "PROXY TCP6 ::ffff:192.0.2.1 ::1 8 9\r\n",
      "GET / HTTP/1.1\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof v1 / sizeof v1[0]; i++) {
    s[k].b[0] = (uint8_t)(i & 7);
    s[k].n = 1 + strlen(v1[i]);
    memcpy(s[k].b + 1, v1[i], s[k].n - 1);
    k++;
  }
  const uint8_t a4[12 + 7] = {192, 0, 2, 9, 127, 0, 0, 1, 0xdc, 0x05, 0x1e, 0x14, 0x02, 0x00, 0x04, 'h', 'o', 's', 't'};
  uint8_t a6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2, [31] = 1, [32] = 0x01, [33] = 0xbb, [34] = 0x1e, [35] = 0x64};
  uint8_t unix_addrs[216] = {'/', 't', 'm', 'p'};
  struct {
    uint8_t cmd, fam;
    const uint8_t *p;
    size_t len;
  } v2s[] = {
      {1, 0x11, a4, 12}, {1, 0x11, a4, sizeof a4}, {1, 0x21, a6, sizeof a6}, {0, 0x00, NULL, 0},
      {0, 0x11, a4, 12}, {1, 0x00, a4, 5},         {1, 0x12, a4, 12},        {1, 0x31, unix_addrs, sizeof unix_addrs},
  };
  for (size_t i = 0; i < sizeof v2s / sizeof v2s[0]; i++) {
    s[k].b[0] = (uint8_t)(i & 7);
    s[k].n = 1 + v2(s[k].b + 1, v2s[i].cmd, v2s[i].fam, v2s[i].p ? v2s[i].p : a4, v2s[i].len);
    k++;
  }
  return k;
}

static void run(const uint8_t *p, size_t n) { LLVMFuzzerTestOneInput(p, n); }

static seed seeds[32];
static const uint8_t *seed_at(size_t i, size_t *len) {
  *len = seeds[i].n;
  return seeds[i].b;
}

int main(int argc, char **argv) {
  size_t ns = make_seeds(seeds);
  if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return fuzz_write_seeds(argv[2], ns, seed_at);
  long files = fuzz_replay_dirs(argv + 1, argc - 1, run);
  if (files < 0) return 1;
  for (size_t i = 0; i < ns; i++) run(seeds[i].b, seeds[i].n);
  static uint8_t m[MAX_SEED + 64 * 8];
  for (int i = 0; i < 20000; i++) {
    const seed *s = &seeds[next_rand() % ns];
    size_t n = s->n;
    memcpy(m, s->b, n);
    int edits = 1 + (int)(next_rand() % 8);
    for (int e = 0; e < edits; e++) {
      size_t at = n ? next_rand() % n : 0;
      switch (next_rand() % 5) {
        case 0: m[at] ^= (uint8_t)(1u << (next_rand() % 8)); break;
        case 1: m[at] = (uint8_t)next_rand(); break;
        case 2:
          if (n > 1) n = at + 1;
          break;
        case 3:
          if (n + 8 <= sizeof m)
            for (int j = 0; j < 8; j++) m[n++] = (uint8_t)next_rand();
          break;
        case 4: /* a digit, a space, a colon or a CR: v1's alphabet */
          m[at] = (uint8_t) "0123456789 :.\r\nf"[next_rand() % 16];
          break;
      }
    }
    run(m, n);
  }
  printf("fuzz_proxy_replay: %ld corpus files, %zu seeds, 20000 mutants: ok\n", files, ns);
  return 0;
}
#endif

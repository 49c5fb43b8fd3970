/* test_tls.c — two hubu_tls endpoints, server and client, wired back to back
 * in memory (take_output of one is the input of the other), with a fresh
 * certificate from testcert: the handshake completes on TLS 1.3 by default and
 * on 1.2 when the client caps it, plaintext (up to 1 MiB) arrives intact both
 * ways, and garbage or an untrusted certificate make hubu_tls_input fail. */
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "testcert.h"
#include "tls.h"

/* Plaintext sink: everything an endpoint delivers is appended here. */
typedef struct {
  hubu_buf got;
  size_t calls;
  size_t stop_after; /* 0: never ask to stop */
} sink;

static int on_plain(void *ud, const uint8_t *data, size_t len) {
  sink *s = ud;
  if (hubu_buf_append(&s->got, data, len) != 0) abort();
  s->calls++;
  return s->stop_after && s->calls >= s->stop_after;
}

/* The protocol version of the last completed handshake on each side, seen
 * from OpenSSL's info callback (hubu_tls keeps its SSL to itself). */
static int server_version, client_version;
static void info_cb(const SSL *ssl, int where, int ret) {
  (void)ret;
  if (where & SSL_CB_HANDSHAKE_DONE)
    *(SSL_is_server((SSL *)ssl) ? &server_version : &client_version) = SSL_version(ssl);
}

/* Moves all pending ciphertext of `from` into `to`. Returns bytes moved, or
 * -1 when `to` rejected them. */
static long pump(hubu_tls *from, hubu_tls *to, sink *to_sink) {
  static uint8_t chunk[50000];
  long moved = 0;
  size_t n;
  while ((n = hubu_tls_take_output(from, chunk, sizeof chunk)) > 0) {
    moved += (long)n;
    int r = hubu_tls_input(to, chunk, n, on_plain, to_sink);
    if (r < 0) return -1;
  }
  return moved;
}

/* Pumps both ways until neither side has anything to say. 0, or -1 on a TLS error. */
static int settle(hubu_tls *c, sink *cs, hubu_tls *s, sink *ss) {
  for (int round = 0; round < 1000; round++) {
    long a = pump(c, s, ss);
    if (a < 0) return -1;
    long b = pump(s, c, cs);
    if (b < 0) return -1;
    if (a == 0 && b == 0) return 0;
  }
  return -1;
}

static char dir[64], cert[128], key[128], other_cert[128], other_key[128];

static void make_certs(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/hubu-tls-XXXXXX", tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    exit(1);
  }
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  snprintf(other_cert, sizeof other_cert, "%s/other-cert.pem", dir);
  snprintf(other_key, sizeof other_key, "%s/other-key.pem", dir);
  char err[256];
  if (hubu_testcert_write(cert, key, 1, err, sizeof err) != 0 ||
      hubu_testcert_write(other_cert, other_key, 1, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
}

static void remove_certs(void) {
  unlink(cert);
  unlink(key);
  unlink(other_cert);
  unlink(other_key);
  rmdir(dir);
}

typedef struct {
  SSL_CTX *sctx, *cctx;
  hubu_tls *s, *c;
  sink ss, cs;
} pair;

/* Server with cert/key; client trusting ca (NULL: no verification), capped at max_version (0: none). */
static int pair_open(pair *p, const char *ca, int max_version) {
  char err[256];
  memset(p, 0, sizeof *p);
  p->sctx = hubu_tls_server_ctx_new(cert, key, err, sizeof err);
  if (!CHECK(p->sctx != NULL)) {
    fprintf(stderr, "    server ctx: %s\n", err);
    return -1;
  }
  p->cctx = hubu_tls_client_ctx_new(ca, ca != NULL, err, sizeof err);
  if (!CHECK(p->cctx != NULL)) {
    fprintf(stderr, "    client ctx: %s\n", err);
    return -1;
  }
  SSL_CTX_set_info_callback(p->sctx, info_cb);
  SSL_CTX_set_info_callback(p->cctx, info_cb);
  if (max_version) CHECK(SSL_CTX_set_max_proto_version(p->cctx, max_version) == 1);
  p->s = hubu_tls_new(p->sctx, 1, NULL);
  p->c = hubu_tls_new(p->cctx, 0, "localhost");
  if (!CHECK(p->s && p->c)) return -1;
  server_version = client_version = 0;
  return 0;
}

static void pair_close(pair *p) {
  hubu_tls_free(p->s);
  hubu_tls_free(p->c);
  SSL_CTX_free(p->sctx);
  SSL_CTX_free(p->cctx);
  hubu_buf_free(&p->ss.got);
  hubu_buf_free(&p->cs.got);
}

static int handshake(pair *p) {
  CHECK(!hubu_tls_handshake_done(p->c) && !hubu_tls_handshake_done(p->s));
  if (!CHECK(hubu_tls_start(p->c) == 0)) return -1;
  CHECK(hubu_tls_output_pending(p->c) > 0); /* the ClientHello */
  if (!CHECK(settle(p->c, &p->cs, p->s, &p->ss) == 0)) return -1;
  CHECK(hubu_tls_handshake_done(p->c));
  CHECK(hubu_tls_handshake_done(p->s));
  CHECK_EQ_U64(hubu_buf_size(&p->ss.got), 0); /* no plaintext yet */
  CHECK_EQ_U64(hubu_buf_size(&p->cs.got), 0);
  return hubu_tls_handshake_done(p->c) && hubu_tls_handshake_done(p->s) ? 0 : -1;
}

static void fill(uint8_t *p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (uint8_t)(seed >> 16);
  }
}

/* Small messages both ways, then 1 MiB each way. */
static void exchange(pair *p) {
  CHECK(hubu_tls_write(p->c, (const uint8_t *)"ping from client", 16) == 0);
  CHECK(settle(p->c, &p->cs, p->s, &p->ss) == 0);
  if (CHECK_EQ_U64(hubu_buf_size(&p->ss.got), 16)) CHECK_EQ_MEM(hubu_buf_head(&p->ss.got), "ping from client", 16);
  hubu_buf_free(&p->ss.got);

  CHECK(hubu_tls_write(p->s, (const uint8_t *)"pong from server", 16) == 0);
  CHECK(settle(p->c, &p->cs, p->s, &p->ss) == 0);
  if (CHECK_EQ_U64(hubu_buf_size(&p->cs.got), 16)) CHECK_EQ_MEM(hubu_buf_head(&p->cs.got), "pong from server", 16);
  hubu_buf_free(&p->cs.got);

  const size_t mib = 1u << 20;
  uint8_t *up = malloc(mib), *down = malloc(mib);
  fill(up, mib, 1);
  fill(down, mib, 2);
  CHECK(hubu_tls_write(p->c, up, mib) == 0);
  CHECK(hubu_tls_output_pending(p->c) > mib); /* ciphertext is plaintext plus record overhead */
  CHECK(hubu_tls_write(p->s, down, mib) == 0);
  CHECK(settle(p->c, &p->cs, p->s, &p->ss) == 0);
  if (CHECK_EQ_U64(hubu_buf_size(&p->ss.got), mib)) CHECK_EQ_MEM(hubu_buf_head(&p->ss.got), up, mib);
  if (CHECK_EQ_U64(hubu_buf_size(&p->cs.got), mib)) CHECK_EQ_MEM(hubu_buf_head(&p->cs.got), down, mib);
  CHECK(p->ss.calls > 1); /* delivered in several runs, reassembled in order */
  hubu_buf_free(&p->ss.got);
  hubu_buf_free(&p->cs.got);
  free(up);
  free(down);
}

static void test_tls13_default(void) {
  pair p;
  if (pair_open(&p, cert, 0) == 0 && handshake(&p) == 0) {
    CHECK_EQ_U64(client_version, TLS1_3_VERSION);
    CHECK_EQ_U64(server_version, TLS1_3_VERSION);
    exchange(&p);
  }
  pair_close(&p);
}

static void test_tls12_forced(void) {
  pair p;
  if (pair_open(&p, cert, TLS1_2_VERSION) == 0 && handshake(&p) == 0) {
    CHECK_EQ_U64(client_version, TLS1_2_VERSION);
    CHECK_EQ_U64(server_version, TLS1_2_VERSION);
    exchange(&p);
  }
  pair_close(&p);
}

static void test_no_verify(void) {
  pair p;
  if (pair_open(&p, NULL, 0) == 0 && handshake(&p) == 0) exchange(&p);
  pair_close(&p);
}

/* The receiver may ask to stop; the rest of the plaintext comes with the next call. */
static void test_stop_delivery(void) {
  pair p;
  if (pair_open(&p, cert, 0) == 0 && handshake(&p) == 0) {
    const size_t n = 100000; /* several 16 KiB records */
    uint8_t *data = malloc(n);
    fill(data, n, 3);
    CHECK(hubu_tls_write(p.c, data, n) == 0);
    uint8_t *wire = malloc(2 * n);
    size_t w = hubu_tls_take_output(p.c, wire, 2 * n);
    CHECK(w > n);
    CHECK_EQ_U64(hubu_tls_output_pending(p.c), 0);
    p.ss.stop_after = 1;
    CHECK_EQ_U64(hubu_tls_input(p.s, wire, w, on_plain, &p.ss), 1);
    CHECK_EQ_U64(p.ss.calls, 1);
    CHECK(hubu_buf_size(&p.ss.got) < n);
    p.ss.stop_after = 0;
    CHECK_EQ_U64(hubu_tls_input(p.s, NULL, 0, on_plain, &p.ss), 0);
    if (CHECK_EQ_U64(hubu_buf_size(&p.ss.got), n)) CHECK_EQ_MEM(hubu_buf_head(&p.ss.got), data, n);
    free(wire);
    free(data);
  }
  pair_close(&p);
}

static void test_garbage(void) {
  /* A fresh server fed something that is not TLS at all. */
  pair p;
  if (pair_open(&p, cert, 0) == 0) {
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    CHECK_EQ_U64(hubu_tls_input(p.s, (const uint8_t *)http, sizeof http - 1, on_plain, &p.ss), (uint64_t)-1);
    CHECK(!hubu_tls_handshake_done(p.s));
  }
  pair_close(&p);

  /* After a handshake: an application-data record whose ciphertext is random
   * fails authentication, on either side, and yields no plaintext. */
  for (int side = 0; side < 2; side++) {
    if (pair_open(&p, cert, 0) == 0 && handshake(&p) == 0) {
      uint8_t rec[5 + 64] = {0x17, 0x03, 0x03, 0x00, 64};
      fill(rec + 5, 64, 4);
      hubu_tls *victim = side ? p.c : p.s;
      sink *vs = side ? &p.cs : &p.ss;
      CHECK_EQ_U64(hubu_tls_input(victim, rec, sizeof rec, on_plain, vs), (uint64_t)-1);
      CHECK_EQ_U64(hubu_buf_size(&vs->got), 0);
    }
    pair_close(&p);
  }

  /* A real record with one bit flipped in transit. */
  if (pair_open(&p, cert, 0) == 0 && handshake(&p) == 0) {
    CHECK(hubu_tls_write(p.c, (const uint8_t *)"integrity", 9) == 0);
    uint8_t wire[512];
    size_t w = hubu_tls_take_output(p.c, wire, sizeof wire);
    CHECK(w > 9 && w < sizeof wire);
    wire[w - 3] ^= 0x01;
    CHECK_EQ_U64(hubu_tls_input(p.s, wire, w, on_plain, &p.ss), (uint64_t)-1);
    CHECK_EQ_U64(hubu_buf_size(&p.ss.got), 0);
  }
  pair_close(&p);

  /* A record header with an impossible content type. */
  if (pair_open(&p, cert, 0) == 0 && handshake(&p) == 0) {
    static const uint8_t bogus[] = {0xFF, 0x03, 0x03, 0x00, 0x02, 0x00, 0x00};
    CHECK_EQ_U64(hubu_tls_input(p.s, bogus, sizeof bogus, on_plain, &p.ss), (uint64_t)-1);
  }
  pair_close(&p);
}

/* A client that trusts another certificate refuses the server's. */
static void test_untrusted_certificate(void) {
  pair p;
  if (pair_open(&p, other_cert, 0) == 0) {
    CHECK(hubu_tls_start(p.c) == 0);
    int failed = settle(p.c, &p.cs, p.s, &p.ss);
    CHECK_EQ_U64(failed, (uint64_t)-1);
    CHECK(!hubu_tls_handshake_done(p.c));
  }
  pair_close(&p);
  char err[256];
  SSL_CTX *ctx = hubu_tls_server_ctx_new(cert, other_key, err, sizeof err); /* key of another cert */
  CHECK(ctx == NULL);
  SSL_CTX_free(ctx);
  ctx = hubu_tls_server_ctx_new("/nonexistent/cert.pem", key, err, sizeof err);
  CHECK(ctx == NULL);
  CHECK(err[0] != '\0');
  SSL_CTX_free(ctx);
}

int main(int argc, char **argv) {
  (void)argc;
  make_certs();
  test_tls13_default();
  test_tls12_forced();
  test_no_verify();
  test_stop_delivery();
  test_garbage();
  test_untrusted_certificate();
  remove_certs();
  return check_summary(argv[0]);
}

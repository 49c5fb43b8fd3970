/* abuse_tls.c — the TLS listener's suites: with an RSA certificate (the one
 * that makes RSA key exchange possible at all), a TLS 1.2 client offering
 * only RSA key exchange or CBC-SHA1 suites is refused; ECDHE with an AEAD
 * suite and TLS 1.3 log in, and a client offering both versions gets TLS 1.3.
 * --tls-ciphers and --tls-ciphersuites replace the two lists; a list OpenSSL
 * cannot use stops the start.
 *
 * Before: TLS 1.2 handshakes accepted non-forward-secret RSA key exchange and
 * CBC-SHA1 suites (OpenSSL's DEFAULT list). */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "abuse.h"

static char rsa_dir[64];
static char rsa_cert[96], rsa_key[96];

static void remove_rsa_dir(void) { e2e_remove_tree(rsa_dir); }

/* A self-signed RSA-2048 certificate for localhost, in a temp dir removed at exit. */
static int make_rsa_cert(void) {
  if (rsa_dir[0]) return 0;
  snprintf(rsa_dir, sizeof rsa_dir, "/tmp/hubu-abuse-XXXXXX");
  if (!mkdtemp(rsa_dir)) return -1;
  atexit(remove_rsa_dir);
  snprintf(rsa_cert, sizeof rsa_cert, "%s/rsa-cert.pem", rsa_dir);
  snprintf(rsa_key, sizeof rsa_key, "%s/rsa-key.pem", rsa_dir);
  EVP_PKEY *key = EVP_RSA_gen(2048);
  X509 *x = X509_new();
  int ok = key && x && X509_set_version(x, X509_VERSION_3) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
           X509_gmtime_adj(X509_getm_notBefore(x), -60) && X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
           X509_set_pubkey(x, key) == 1;
  if (ok) {
    X509_NAME *name = X509_get_subject_name(x);
    ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0) == 1 &&
         X509_set_issuer_name(x, name) == 1 && X509_sign(x, key, EVP_sha256()) > 0;
  }
  FILE *kf = ok ? fopen(rsa_key, "w") : NULL, *cf = ok ? fopen(rsa_cert, "w") : NULL;
  ok = kf && cf && PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL) == 1 && PEM_write_X509(cf, x) == 1;
  if (kf) fclose(kf);
  if (cf) fclose(cf);
  X509_free(x);
  EVP_PKEY_free(key);
  return ok ? 0 : -1;
}

typedef struct {
  int version;         /* TLS1_2_VERSION or TLS1_3_VERSION; 0: 1.2 to 1.3 */
  const char *ciphers; /* TLS 1.2 list (NULL: OpenSSL's); @SECLEVEL=0 lets the client offer old suites */
  const char *suites;  /* TLS 1.3 list (NULL: OpenSSL's) */
} client_offer;

typedef struct {
  int handshook;
  int logged_in; /* HELLO_OK over it */
  int version;
  char cipher[64];
} client_result;

/* One client handshake with offer, then HELLO for pat; fills r. */
static void try_client(int port, const client_offer *offer, client_result *r) {
  memset(r, 0, sizeof *r);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  REQUIRE(ctx != NULL);
  SSL_CTX_set_min_proto_version(ctx, offer->version ? offer->version : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, offer->version ? offer->version : TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  if (offer->ciphers) REQUIRE(SSL_CTX_set_cipher_list(ctx, offer->ciphers) == 1);
  if (offer->suites) REQUIRE(SSL_CTX_set_ciphersuites(ctx, offer->suites) == 1);
  SSL *ssl = SSL_new(ctx);
  SSL_CTX_free(ctx);
  int fd = abuse_connect(port, 0);
  REQUIRE(ssl != NULL && fd >= 0);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (SSL_connect(ssl) == 1) {
    r->handshook = 1;
    r->version = SSL_version(ssl);
    snprintf(r->cipher, sizeof r->cipher, "%s", SSL_get_cipher_name(ssl));
    /* HELLO through the TLS stream, HELLO_OK back */
    char token[HUBU_TOKEN_MAX];
    e2e_token("pat", token);
    Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.user_id = "pat";
    h.device_id = "d1";
    h.token = token;
    hubu_buf b = {0};
    REQUIRE(hubu_wire_append(&b, HUBU_FRAME_HELLO, &h.base) == 0);
    if (SSL_write(ssl, hubu_buf_head(&b), (int)hubu_buf_size(&b)) == (int)hubu_buf_size(&b)) {
      uint8_t hdr[HUBU_FRAME_HEADER_SIZE];
      int got = 0;
      while (got < (int)sizeof hdr) {
        int n = SSL_read(ssl, hdr + got, (int)sizeof hdr - got);
        if (n <= 0) break;
        got += n;
      }
      r->logged_in = got == (int)sizeof hdr && hdr[2] == HUBU_FRAME_HELLO_OK;
    }
    hubu_buf_free(&b);
  }
  ERR_clear_error();
  SSL_free(ssl);
  close(fd);
}

/* SSL_version's number as text (SSL_get_version needs the SSL). */
static const char *version_name(int v) {
  return v == TLS1_3_VERSION ? "TLSv1.3" : v == TLS1_2_VERSION ? "TLSv1.2" : "older";
}

static void report(const char *what, const client_result *r) {
  fprintf(stderr, "  %-52s %s%s%s%s\n", what, r->handshook ? "handshake " : "refused",
          r->handshook ? version_name(r->version) : "", r->handshook ? " " : "", r->handshook ? r->cipher : "");
}

static void tls12_rsa_key_exchange_and_cbc_sha1_are_refused_ecdhe_aead_and_tls13_log_in(void) {
  REQUIRE(make_rsa_cert() == 0);
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--cert", rsa_cert, "--key", rsa_key, "--log-level", "warn", NULL) == 0);
  static const struct {
    const char *what;
    client_offer offer;
    int want; /* 1: logs in; 0: handshake refused */
  } cases[] = {
      {"TLS 1.2 AES128-SHA (RSA kx, CBC-SHA1)", {TLS1_2_VERSION, "AES128-SHA:@SECLEVEL=0", NULL}, 0},
      {"TLS 1.2 AES256-GCM-SHA384 (RSA kx, AEAD)", {TLS1_2_VERSION, "AES256-GCM-SHA384:@SECLEVEL=0", NULL}, 0},
      {"TLS 1.2 ECDHE-RSA-AES128-SHA (ECDHE, CBC-SHA1)", {TLS1_2_VERSION, "ECDHE-RSA-AES128-SHA:@SECLEVEL=0", NULL}, 0},
      {"TLS 1.2 ECDHE-RSA-AES256-SHA384 (ECDHE, CBC)",
       {TLS1_2_VERSION, "ECDHE-RSA-AES256-SHA384:@SECLEVEL=0", NULL},
       0},
      {"TLS 1.2 every RSA-kx and CBC suite at once",
       {TLS1_2_VERSION, "kRSA:ECDHE+SHA1:ECDHE+SHA256:ECDHE+SHA384:!AESGCM:!CHACHA20:@SECLEVEL=0", NULL},
       0},
      {"TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256", {TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256", NULL}, 1},
      {"TLS 1.2 ECDHE-RSA-CHACHA20-POLY1305", {TLS1_2_VERSION, "ECDHE-RSA-CHACHA20-POLY1305", NULL}, 1},
      {"TLS 1.3", {TLS1_3_VERSION, NULL, NULL}, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    client_result r;
    try_client(s.tls_port, &cases[i].offer, &r);
    report(cases[i].what, &r);
    if (cases[i].want)
      CHECKF(r.handshook && r.logged_in, "%s: %s", cases[i].what, r.handshook ? "no HELLO_OK" : "handshake refused");
    else
      CHECKF(!r.handshook, "%s: accepted with %s", cases[i].what, r.cipher);
  }
  /* a client offering both versions and every suite gets TLS 1.3 */
  client_offer both = {0, "ALL:@SECLEVEL=0", NULL};
  client_result r;
  try_client(s.tls_port, &both, &r);
  report("TLS 1.2-1.3, every suite offered", &r);
  CHECKF(r.logged_in && r.version == TLS1_3_VERSION, "a client offering TLS 1.2 and 1.3 got %s %s",
         r.handshook ? version_name(r.version) : "no handshake", r.cipher);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void tls_ciphers_and_ciphersuites_replace_the_lists(void) {
  REQUIRE(make_rsa_cert() == 0);
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--cert", rsa_cert, "--key", rsa_key, "--tls-ciphers", "ECDHE-RSA-AES256-GCM-SHA384",
                               "--tls-ciphersuites", "TLS_AES_256_GCM_SHA384", "--log-level", "warn", NULL) == 0);
  static const struct {
    const char *what;
    client_offer offer;
    int want;
  } cases[] = {
      {"TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256 (not listed)", {TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256", NULL}, 0},
      {"TLS 1.2 ECDHE-RSA-AES256-GCM-SHA384 (listed)", {TLS1_2_VERSION, "ECDHE-RSA-AES256-GCM-SHA384", NULL}, 1},
      {"TLS 1.3 TLS_AES_128_GCM_SHA256 (not listed)", {TLS1_3_VERSION, NULL, "TLS_AES_128_GCM_SHA256"}, 0},
      {"TLS 1.3 TLS_AES_256_GCM_SHA384 (listed)", {TLS1_3_VERSION, NULL, "TLS_AES_256_GCM_SHA384"}, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    client_result r;
    try_client(s.tls_port, &cases[i].offer, &r);
    report(cases[i].what, &r);
    if (cases[i].want)
      CHECKF(r.handshook && r.logged_in, "%s: %s", cases[i].what, r.handshook ? "no HELLO_OK" : "handshake refused");
    else
      CHECKF(!r.handshook, "%s: accepted with %s", cases[i].what, r.cipher);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);

  /* a list OpenSSL cannot use: hubud does not start */
  e2e_server bad;
  int started = e2e_server_start_tls(&bad, "--cert", rsa_cert, "--key", rsa_key, "--tls-ciphers", "NO-SUCH-SUITE",
                                     "--log-level", "warn", NULL);
  CHECKF(started != 0, "hubud started with --tls-ciphers NO-SUCH-SUITE");
  e2e_server_cleanup(&bad);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(tls12_rsa_key_exchange_and_cbc_sha1_are_refused_ecdhe_aead_and_tls13_log_in),
      E2E_CASE(tls_ciphers_and_ciphersuites_replace_the_lists),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

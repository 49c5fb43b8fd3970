/* tls.c — an OpenSSL endpoint driven through a pair of memory BIOs.
 * Invariant: after every call that may produce records (start, input, write)
 * the caller drains hubu_tls_take_output, or the peer never sees them. */
#include "tls.h"

#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>

struct hubu_tls {
  SSL *ssl;  /* owns rbio and wbio */
  BIO *rbio; /* ciphertext from the peer */
  BIO *wbio; /* ciphertext for the peer */
  int done;  /* handshake finished */
};

const char *hubu_tls_last_error(char *buf, size_t size) {
  unsigned long e = ERR_get_error();
  if (!e) {
    snprintf(buf, size, "unknown TLS error");
  } else {
    ERR_error_string_n(e, buf, size);
  }
  ERR_clear_error();
  return buf;
}

SSL_CTX *hubu_tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t err_size) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) goto fail;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  if (SSL_CTX_set_cipher_list(ctx, HUBU_TLS12_CIPHERS_DEFAULT) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, HUBU_TLS13_CIPHERSUITES_DEFAULT) != 1)
    goto fail;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) goto fail;
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) goto fail;
  if (SSL_CTX_check_private_key(ctx) != 1) goto fail;
  return ctx;
fail:
  hubu_tls_last_error(err, err_size);
  SSL_CTX_free(ctx);
  return NULL;
}

int hubu_tls_server_ctx_set_ciphers(SSL_CTX *ctx, const char *tls12_ciphers, const char *tls13_ciphersuites, char *err,
                                    size_t err_size) {
  if (tls12_ciphers && SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1) {
    hubu_tls_last_error(err, err_size);
    return -1;
  }
  if (tls13_ciphersuites && SSL_CTX_set_ciphersuites(ctx, tls13_ciphersuites) != 1) {
    hubu_tls_last_error(err, err_size);
    return -1;
  }
  return 0;
}

SSL_CTX *hubu_tls_client_ctx_new(const char *ca_file, int verify, char *err, size_t err_size) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) goto fail;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) goto fail;
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  }
  return ctx;
fail:
  hubu_tls_last_error(err, err_size);
  SSL_CTX_free(ctx);
  return NULL;
}

hubu_tls *hubu_tls_new(SSL_CTX *ctx, int is_server, const char *server_name) {
  hubu_tls *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->ssl = SSL_new(ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    SSL_free(t->ssl);
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    free(t);
    return NULL;
  }
  BIO_set_mem_eof_return(t->rbio, -1); /* empty means "want more", not EOF */
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (is_server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (server_name) SSL_set_tlsext_host_name(t->ssl, server_name);
  }
  return t;
}

void hubu_tls_free(hubu_tls *t) {
  if (!t) return;
  SSL_free(t->ssl);
  free(t);
}

int hubu_tls_handshake_done(const hubu_tls *t) { return t->done; }

static int handshake(hubu_tls *t) {
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->done = 1;
    return 0;
  }
  int e = SSL_get_error(t->ssl, r);
  return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
}

int hubu_tls_start(hubu_tls *t) { return handshake(t); }

int hubu_tls_input(hubu_tls *t, const uint8_t *data, size_t len, hubu_tls_plain_cb on_plain, void *ud) {
  while (len > 0) {
    int w = BIO_write(t->rbio, data, (int)(len > 65536 ? 65536 : len));
    if (w <= 0) return -1;
    data += w;
    len -= (size_t)w;
  }
  if (!t->done) {
    if (handshake(t) != 0) return -1;
    if (!t->done) return 0;
  }
  uint8_t plain[16384];
  for (;;) {
    int r = SSL_read(t->ssl, plain, sizeof plain);
    if (r > 0) {
      if (on_plain(ud, plain, (size_t)r)) return 1;
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    return -1; /* SSL_ERROR_ZERO_RETURN (close_notify) included: the peer is done */
  }
}

int hubu_tls_write(hubu_tls *t, const uint8_t *data, size_t len) {
  while (len > 0) {
    int w = SSL_write(t->ssl, data, (int)(len > 1u << 30 ? 1u << 30 : len));
    if (w <= 0) return -1;
    data += w;
    len -= (size_t)w;
  }
  return 0;
}

size_t hubu_tls_output_pending(hubu_tls *t) { return BIO_ctrl_pending(t->wbio); }

size_t hubu_tls_take_output(hubu_tls *t, uint8_t *out, size_t cap) {
  int r = BIO_read(t->wbio, out, (int)(cap > 1u << 30 ? 1u << 30 : cap));
  return r > 0 ? (size_t)r : 0;
}

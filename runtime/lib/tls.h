/* tls.h — TLS over memory BIOs, for the server and the client alike.
 *
 * The socket stays in libuv's hands: ciphertext read from it is fed in with
 * hubu_tls_input, plaintext comes out through a callback, and ciphertext that
 * must go to the peer (handshake records, encrypted frames) is taken out with
 * hubu_tls_take_output and written by the caller. Nothing here blocks. */
#ifndef HUBU_TLS_H
#define HUBU_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hubu_tls hubu_tls;

/* The server's suites unless configured: TLS 1.2 only with ECDHE key exchange
 * and AEAD ciphers (forward secrecy, no CBC, no SHA-1 MACs); TLS 1.3 with its
 * standard three. TLS 1.3 is chosen whenever the client offers it. */
#define HUBU_TLS12_CIPHERS_DEFAULT                                                           \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define HUBU_TLS13_CIPHERSUITES_DEFAULT "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* Server context: TLS 1.2 minimum, the default suites above, no
 * renegotiation, the server's order of preference; certificate chain and key
 * from PEM files. On failure returns NULL with a reason in err. */
SSL_CTX *hubu_tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t err_size);

/* Replaces the server context's TLS 1.2 cipher list (OpenSSL cipher string)
 * and TLS 1.3 suites (colon-separated names); NULL keeps the default. 0, or -1
 * with a reason in err when OpenSSL takes no suite from a list. */
int hubu_tls_server_ctx_set_ciphers(SSL_CTX *ctx, const char *tls12_ciphers, const char *tls13_ciphersuites, char *err,
                                    size_t err_size);

/* Client context: TLS 1.2 minimum. ca_file NULL with verify 0 accepts any
 * certificate (development); otherwise the peer is verified against ca_file
 * (or the system store when ca_file is NULL). */
SSL_CTX *hubu_tls_client_ctx_new(const char *ca_file, int verify, char *err, size_t err_size);

/* One TLS endpoint. server_name (client side only) is sent as SNI. */
hubu_tls *hubu_tls_new(SSL_CTX *ctx, int is_server, const char *server_name);
void hubu_tls_free(hubu_tls *t);

/* Called with each run of plaintext; return non-zero to stop delivering. */
typedef int (*hubu_tls_plain_cb)(void *ud, const uint8_t *data, size_t len);

/* Feeds ciphertext, advances the handshake, delivers any plaintext.
 * Returns 0, 1 when on_plain asked to stop, or -1 on a TLS error (close). */
int hubu_tls_input(hubu_tls *t, const uint8_t *data, size_t len, hubu_tls_plain_cb on_plain, void *ud);

/* Starts the handshake (client side: produces the ClientHello). 0 or -1. */
int hubu_tls_start(hubu_tls *t);

/* Encrypts plaintext; call only once the handshake is done. 0 or -1. */
int hubu_tls_write(hubu_tls *t, const uint8_t *data, size_t len);

int hubu_tls_handshake_done(const hubu_tls *t);

/* Bytes of ciphertext waiting to be sent. */
size_t hubu_tls_output_pending(hubu_tls *t);
/* Moves up to cap bytes of pending ciphertext into out; returns the count. */
size_t hubu_tls_take_output(hubu_tls *t, uint8_t *out, size_t cap);

/* Last OpenSSL error as text, for logs. */
const char *hubu_tls_last_error(char *buf, size_t size);

#endif

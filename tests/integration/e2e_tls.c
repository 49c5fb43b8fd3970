/* e2e_tls.c — the TLS listener: a plain OpenSSL client on a blocking socket
 * (TLS 1.3 and TLS 1.2 forced, the server's certificate verified) gets
 * HELLO_OK and PONG, libhubu-client over TLS reaches READY, and a connection
 * that does not speak TLS is closed without disturbing the others. */
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "harness_uv.h"
#include "hubu_client.h"

static void raw_tls_client_gets_hello_ok(int version) {
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, NULL) == 0);
  REQUIRE(s.tls_port > 0);
  int fd = e2e_connect_tls(s.tls_port, version, s.cert); /* verifies the certificate for "localhost" */
  REQUIRE(fd >= 0);
  SSL *ssl = e2e_tls_of(fd);
  CHECKF(SSL_version(ssl) == version, "negotiated %s", SSL_get_version(ssl));
  fprintf(stderr, "  %s, %s\n", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
  CHECK(e2e_send_hello(fd, "alice", "tls", NULL) == 0);
  Hubu__V1__HelloOk *ok = NULL;
  if (EXPECT_HELLO_OK(fd, &ok)) {
    CHECK(ok->conn_id > 0);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  CHECK(EXPECT_ALIVE(fd, 77));
  CHECK(e2e_send_frame(fd, 0x7F, 0, NULL, 0) == 0);
  CHECK(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__UNSUPPORTED_TYPE, 0x7F));
  CHECK(EXPECT_ALIVE(fd, 78));
  e2e_close(fd);
  /* the plain TCP listener still works beside it */
  fd = CONNECT_HELLO(s.port, "bob");
  CHECK(fd >= 0);
  if (fd >= 0) close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void tls13_openssl_client_gets_hello_ok_and_pong(void) { raw_tls_client_gets_hello_ok(TLS1_3_VERSION); }
static void tls12_openssl_client_gets_hello_ok_and_pong(void) { raw_tls_client_gets_hello_ok(TLS1_2_VERSION); }

/* Reads and drops whatever comes (a TLS alert, say) until the peer closes; 1 if it does within ms. */
static int closed_within(int fd, int ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)ms;
  uint8_t junk[512];
  for (int i = 0; i < 100; i++) {
    uint64_t now = e2e_now_ms();
    if (now >= deadline) return 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)(deadline - now)) <= 0) return 0;
    ssize_t r = recv(fd, junk, sizeof junk, 0);
    if (r <= 0) return 1; /* EOF or reset */
  }
  return 0;
}

static void non_tls_bytes_on_the_tls_port_close_only_that_connection(void) {
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--hello-timeout-ms", "300", NULL) == 0);
  int good = e2e_connect_tls(s.tls_port, 0, s.cert);
  REQUIRE(good >= 0);
  CHECK(e2e_send_hello(good, "alice", "tls", NULL) == 0);
  CHECK(EXPECT_HELLO_OK(good, NULL));
  /* Not a TLS record at all: the handshake fails at once. */
  int fd = e2e_connect(s.tls_port);
  REQUIRE(fd >= 0);
  uint64_t t0 = e2e_now_ms();
  CHECK(e2e_send_raw(fd, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
  CHECKF(closed_within(fd, 3000), "an HTTP request on the TLS port did not get the connection closed");
  fprintf(stderr, "  HTTP request: closed after %llu ms\n", (unsigned long long)(e2e_now_ms() - t0));
  close(fd);
  /* A HELLO frame in clear: 0xA5 reads as an SSLv2 header announcing 9473
   * bytes, so OpenSSL waits; the hello timeout closes it. */
  fd = e2e_connect(s.tls_port);
  REQUIRE(fd >= 0);
  t0 = e2e_now_ms();
  CHECK(e2e_send_hello(fd, "bob", "plain", NULL) == 0);
  CHECKF(closed_within(fd, 4000), "a HELLO in clear on the TLS port did not get the connection closed");
  fprintf(stderr, "  HELLO in clear: closed after %llu ms\n", (unsigned long long)(e2e_now_ms() - t0));
  close(fd);
  CHECK(EXPECT_ALIVE(good, 1));
  e2e_close(good);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void tls_connection_without_handshake_is_closed_after_the_hello_timeout(void) {
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--hello-timeout-ms", "300", NULL) == 0);
  uint64_t t0 = e2e_now_ms();
  int fd = e2e_connect(s.tls_port);
  REQUIRE(fd >= 0);
  /* No GOAWAY can be encrypted before the handshake; only the close is observable. */
  CHECKF(closed_within(fd, 4000), "a silent connection to the TLS port is still open after 4 s");
  fprintf(stderr, "  closed after %llu ms (hello timeout 300 ms)\n", (unsigned long long)(e2e_now_ms() - t0));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

typedef struct {
  int ready;
  int pongs;
  int closed;
} lib_state;

static void lib_on_state(hubu_client *c, hubu_client_state st, int code, const char *reason, void *ud) {
  (void)c;
  (void)ud;
  fprintf(stderr, "  client state %s code %d %s\n", hubu_client_state_name(st), code, reason ? reason : "");
}

static void lib_on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  lib_state *ls = ud;
  CHECK(info->conn_id > 0);
  ls->ready++;
  CHECK(hubu_client_ping(c) == 0);
}

static void lib_on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud) {
  (void)c;
  (void)body;
  (void)len;
  if (type == HUBU_FRAME_PONG) ((lib_state *)ud)->pongs++;
}

static int lib_ponged(void *ud) { return ((lib_state *)ud)->pongs > 0; }
static void lib_on_closed(void *ud) { ((lib_state *)ud)->closed = 1; }

static void client_library_over_tls_reaches_ready_and_gets_pong(void) {
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  hubu_client_options opt = {0};
  opt.host = "127.0.0.1";
  opt.port = s.tls_port;
  opt.tls = 1;
  opt.tls_verify = 0;
  opt.user_id = "alice";
  opt.device_id = "tls-lib";
  opt.token = tok;
  opt.connect_timeout_ms = 5000;
  hubu_client_callbacks cb = {0};
  cb.on_state = lib_on_state;
  cb.on_ready = lib_on_ready;
  cb.on_frame = lib_on_frame;
  lib_state ls = {0};
  hubu_client *c = hubu_client_new(&loop, &opt, &cb, &ls);
  REQUIRE(c != NULL);
  CHECK(hubu_client_start(c) == 0);
  CHECK(e2e_uv_run_until(&loop, lib_ponged, &ls, 10000));
  CHECK_EQ(ls.ready, 1);
  CHECK_EQ(hubu_client_get_state(c), HUBU_CLIENT_READY);
  CHECK_EQ(hubu_client_sessions(c), 1);
  hubu_client_close(c, lib_on_closed);
  CHECK(e2e_uv_finish(&loop, 5000) == 0);
  CHECK(ls.closed);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(tls13_openssl_client_gets_hello_ok_and_pong),
      E2E_CASE(tls12_openssl_client_gets_hello_ok_and_pong),
      E2E_CASE(client_library_over_tls_reaches_ready_and_gets_pong),
      E2E_CASE(non_tls_bytes_on_the_tls_port_close_only_that_connection),
      E2E_CASE(tls_connection_without_handshake_is_closed_after_the_hello_timeout),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

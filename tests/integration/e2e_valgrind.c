/* e2e_valgrind.c — hubud under valgrind through a connection's whole life and
 * its error paths (HELLO, PING, every frame error, refused HELLOs, cut
 * connections), over TCP and TLS, and a SIGTERM drain; and the HTTP
 * listener's paths (the HTTP API's answers and refusals, a hubu.v1.json
 * WebSocket, the page, a request cut short, HTTPS): no memory error, no
 * definite leak, exit 0. */
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "token.h"

#ifndef HUBU_VALGRIND_PATH
#error "HUBU_VALGRIND_PATH must name valgrind"
#endif

static void hubud_under_valgrind_has_no_memory_errors_or_leaks(void) {
  static const char *const wrapper[] = {HUBU_VALGRIND_PATH, "--leak-check=full", "--errors-for-leak-kinds=definite",
                                        "--error-exitcode=99", NULL};
  e2e_server_wrapper = wrapper;
  e2e_server_start_ms = 30000;
  e2e_server_stop_ms = 30000;
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--max-frame", "1024", "--hello-timeout-ms", "2000", NULL) == 0);

  /* a whole session with errors that keep it open */
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  CHECK(EXPECT_ALIVE(fd, 1));
  CHECK(e2e_send_frame(fd, 0x7F, 0, "abc", 3) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__UNSUPPORTED_TYPE));
  CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 1, NULL, 0) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_FRAME));
  CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, "\x08\x80", 2) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__BAD_BODY));
  CHECK(e2e_send_hello(fd, "alice", "d1", NULL) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__INVALID));
  CHECK(e2e_send_frame(fd, HUBU_FRAME_HELLO_OK, 0, NULL, 0) == 0);
  CHECK(EXPECT_ERROR(fd, HUBU__V1__CODE__UNSUPPORTED_TYPE));
  CHECK(EXPECT_ALIVE(fd, 2));

  /* the same over TLS; it stays until the drain */
  int tls = e2e_connect_tls(s.tls_port, 0, s.cert);
  REQUIRE(tls >= 0);
  CHECK(e2e_send_hello(tls, "dave", "tls", NULL) == 0);
  CHECK(EXPECT_HELLO_OK(tls, NULL));
  CHECK(EXPECT_ALIVE(tls, 1));
  CHECK(e2e_send_frame(tls, 0x7F, 0, NULL, 0) == 0);
  CHECK(EXPECT_ERROR(tls, HUBU__V1__CODE__UNSUPPORTED_TYPE));
  int t2 = e2e_connect_tls(s.tls_port, 0, s.cert); /* handshake, then gone */
  CHECK(t2 >= 0);
  if (t2 >= 0) e2e_close(t2);

  /* errors that close */
  int c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  CHECK(e2e_send_hello(c, "alice", "d2", "garbage") == 0);
  CHECK(EXPECT_ERROR(c, HUBU__V1__CODE__UNAUTHENTICATED));
  CHECK(EXPECT_EOF(c));
  close(c);
  c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  CHECK(e2e_send_raw(c, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
  CHECK(EXPECT_ERROR(c, HUBU__V1__CODE__BAD_FRAME));
  CHECK(EXPECT_EOF(c));
  close(c);
  c = CONNECT_HELLO(s.port, "bob");
  REQUIRE(c >= 0);
  uint8_t h[HUBU_FRAME_HEADER_SIZE];
  hubu_frame_header_encode(h, HUBU_FRAME_PING, 0, 1025);
  CHECK(e2e_send_raw(c, h, sizeof h) == 0);
  CHECK(EXPECT_ERROR(c, HUBU__V1__CODE__FRAME_TOO_LARGE));
  CHECK(EXPECT_EOF(c));
  close(c);
  c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  CHECK(e2e_send_ping(c, HUBU_FRAME_PING, 3) == 0);
  CHECK(EXPECT_ERROR(c, HUBU__V1__CODE__UNAUTHENTICATED));
  CHECK(EXPECT_EOF(c));
  close(c);

  /* connections cut by the client: mid-frame, right after connect, after HELLO */
  c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  hubu_frame_header_encode(h, HUBU_FRAME_HELLO, 0, 100);
  CHECK(e2e_send_raw(c, h, sizeof h) == 0);
  CHECK(e2e_send_raw(c, "0123456789", 10) == 0);
  close(c);
  c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  close(c);
  c = e2e_connect(s.tls_port);
  REQUIRE(c >= 0);
  CHECK(e2e_send_raw(c, "GET / HTTP/1.1\r\n\r\n", 18) == 0); /* not TLS */
  close(c);
  c = CONNECT_HELLO(s.port, "carol");
  REQUIRE(c >= 0);
  close(c);
  /* one left alone until the hello timeout */
  c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  CHECK(EXPECT_GOAWAY(c, HUBU__V1__CODE__TIMEOUT, 10000));
  CHECK(EXPECT_EOF(c));
  close(c);
  CHECK(EXPECT_ALIVE(fd, 3));

  /* SIGTERM with a client connected: the drain path */
  e2e_server_signal(&s, SIGTERM);
  CHECK(EXPECT_GOAWAY(fd, HUBU__V1__CODE__SHUTTING_DOWN, 10000));
  CHECK(EXPECT_EOF_AFTER_GOAWAY(fd, 10000));
  close(fd);
  CHECK(EXPECT_GOAWAY(tls, HUBU__V1__CODE__SHUTTING_DOWN, 10000));
  CHECK(EXPECT_EOF_AFTER_GOAWAY(tls, 10000));
  e2e_close(tls);
  int st = e2e_server_wait(&s, 30000);
  CHECKF(st == 0, "hubud under valgrind exited with status %d (99: valgrind found errors or definite leaks)", st);
  e2e_server_cleanup(&s);
}

/* Sends req on a new connection to port (TLS when ca), reads to EOF; returns the status. */
static int http_status(int port, const char *ca, const char *req) {
  int fd = ca ? e2e_connect_tls(port, 0, ca) : e2e_connect(port);
  if (fd < 0) return -1;
  e2e_send_raw(fd, req, strlen(req));
  char buf[4096];
  size_t n = 0;
  SSL *ssl = e2e_tls_of(fd);
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (!(ssl && SSL_pending(ssl)) && poll(&p, 1, 20000) <= 0) break;
    int r = ssl ? SSL_read(ssl, buf + n, (int)(sizeof buf - 1 - n)) : (int)recv(fd, buf + n, sizeof buf - 1 - n, 0);
    if (r <= 0) break;
    n += (size_t)r;
    if (n >= sizeof buf - 1) n = 0; /* only the status line matters */
  }
  buf[n] = 0;
  e2e_close(fd);
  int status = -1;
  sscanf(buf, "HTTP/1.1 %d", &status);
  return status;
}

static void http_listener_paths_under_valgrind(void) {
  static const char *const wrapper[] = {HUBU_VALGRIND_PATH, "--leak-check=full", "--errors-for-leak-kinds=definite",
                                        "--error-exitcode=99", NULL};
  e2e_server_wrapper = wrapper;
  e2e_server_start_ms = 30000;
  e2e_server_stop_ms = 30000;
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--https-listen", "127.0.0.1:0", "--dev-login", "on", "--hello-timeout-ms", "3000",
                               NULL) == 0);
  char token[HUBU_TOKEN_MAX], req[2048];
  e2e_token("alice", token);
  const char *send = "{\"clientId\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"aGk=\"}";
  snprintf(req, sizeof req,
           "POST /v1/messages?device_id=v HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
           "Content-Length: %zu\r\n\r\n%s",
           token, strlen(send), send);
  CHECK_EQ(http_status(s.http_port, NULL, req), 200);
  CHECK_EQ(http_status(s.http_port, NULL, req), 200); /* the duplicate */
  CHECK_EQ(http_status(s.https_port, s.cert, req), 200);
  snprintf(req, sizeof req,
           "GET /v1/sessions/d:alice:bob/messages?limit=5 HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", token);
  CHECK_EQ(http_status(s.http_port, NULL, req), 200);
  snprintf(req, sizeof req, "GET /v1/sessions/d:bob:carol/messages HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n",
           token);
  CHECK_EQ(http_status(s.http_port, NULL, req), 403);
  snprintf(req, sizeof req, "POST /v1/sync HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\n\r\n", token);
  CHECK_EQ(http_status(s.http_port, NULL, req), 200);
  snprintf(req, sizeof req, "POST /v1/calls/none HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Length: 2\r\n\r\n{}",
           token);
  CHECK_EQ(http_status(s.http_port, NULL, req), 404);
  snprintf(req, sizeof req,
           "POST /v1/messages HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
           "Content-Length: 14\r\n\r\n{\"clientId\":[]}",
           token);
  CHECK_EQ(http_status(s.http_port, NULL, req), 400);
  CHECK_EQ(http_status(s.http_port, NULL, "POST /v1/sync HTTP/1.1\r\nAuthorization: Bearer v1.a.1.00\r\n\r\n"), 401);
  CHECK_EQ(http_status(s.http_port, NULL, "POST /v1/sync HTTP/1.1\r\n\r\n"), 401);
  CHECK_EQ(
      http_status(s.http_port, NULL, "POST /v1/dev/token HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"userId\":\"bob\"}"),
      200);
  CHECK_EQ(http_status(s.http_port, NULL, "GET / HTTP/1.1\r\n\r\n"), 200);
  CHECK_EQ(http_status(s.https_port, s.cert, "GET /healthz HTTP/1.1\r\n\r\n"), 200);
  CHECK_EQ(http_status(s.http_port, NULL, "GET /nope HTTP/1.1\r\n\r\n"), 404);
  CHECK_EQ(http_status(s.http_port, NULL, "POST /v1/sync HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n"), 413);
  /* a request cut short, and one left unfinished until the timeout */
  int c = e2e_connect(s.http_port);
  REQUIRE(c >= 0);
  e2e_send_raw(c, "POST /v1/sync HTTP/1.1\r\nContent-Length: 50\r\n\r\n{", 48);
  close(c);
  CHECK_EQ(http_status(s.http_port, NULL, "POST /v1/sync HTTP/1.1\r\nContent-Length: 50\r\n\r\n{"), 408);
  /* a hubu.v1.json WebSocket: HELLO, a bad body, an unknown type, then a cut */
  c = e2e_connect(s.http_port);
  REQUIRE(c >= 0);
  const char *up =
      "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: hubu.v1.json\r\n\r\n";
  e2e_send_raw(c, up, strlen(up));
  char hello[512];
  int hl = snprintf(hello, sizeof hello,
                    "{\"type\":\"HELLO\",\"body\":{\"userId\":\"alice\",\"deviceId\":\"w\",\"token\":\"%s\"}}", token);
  const char *more[] = {hello, "{\"type\":\"SEND\",\"body\":{\"clientId\":true}}", "{\"type\":\"NOPE\"}",
                        "{\"type\":\"PING\",\"body\":{\"timeMs\":\"1\"}}"};
  for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
    size_t len = i ? strlen(more[i]) : (size_t)hl;
    uint8_t f[600];
    size_t n = 0;
    f[n++] = 0x81;
    if (len < 126) {
      f[n++] = (uint8_t)(0x80 | len);
    } else {
      f[n++] = 0x80 | 126;
      f[n++] = (uint8_t)(len >> 8);
      f[n++] = (uint8_t)len;
    }
    memcpy(f + n, "\0\0\0\0", 4); /* a zero mask: the payload as it is */
    n += 4;
    memcpy(f + n, more[i], len);
    e2e_send_raw(c, f, n + len);
  }
  char buf[4096];
  size_t got = 0;
  for (int i = 0; i < 40 && !memmem(buf, got, "PONG", 4); i++) {
    struct pollfd p = {c, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) continue;
    ssize_t r = recv(c, buf + got, sizeof buf - got, 0);
    if (r <= 0) break;
    got += (size_t)r;
  }
  CHECK(memmem(buf, got, "HELLO_OK", 8) && memmem(buf, got, "BAD_BODY", 8) && memmem(buf, got, "UNSUPPORTED_TYPE", 16));
  close(c);
  int st = e2e_server_stop(&s);
  CHECKF(st == 0, "hubud under valgrind exited with status %d (99: valgrind found errors or definite leaks)", st);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(hubud_under_valgrind_has_no_memory_errors_or_leaks),
      E2E_CASE(http_listener_paths_under_valgrind),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

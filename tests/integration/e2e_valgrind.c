/* e2e_valgrind.c — hubud under valgrind through a connection's whole life and
 * its error paths (HELLO, PING, every frame error, refused HELLOs, cut
 * connections), over TCP and TLS, and a SIGTERM drain: no memory error, no
 * definite leak, exit 0. */
#include <signal.h>
#include <unistd.h>

#include "harness.h"

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

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(hubud_under_valgrind_has_no_memory_errors_or_leaks),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

/* e2e_limits.c — connection limits: past --max-conns, or --max-conns-per-ip
 * from one address, a new connection gets ERROR UNAVAILABLE and is closed;
 * the connections already there are unaffected, and a slot freed by a close
 * is usable again. */
#include <unistd.h>

#include "harness.h"

/* The connection over the limit: ERROR UNAVAILABLE and a close, either at
 * once or in answer to its HELLO. */
static void expect_refused(int port, const char *user) {
  int fd = e2e_connect(port);
  if (!CHECKF(fd >= 0, "the connection over the limit could not even connect")) return;
  e2e_frame f;
  int r = e2e_read_frame(fd, 1000, &f);
  if (r == E2E_READ_TIMEOUT) {
    fprintf(stderr, "  nothing at accept; sending HELLO\n");
    CHECK(e2e_send_hello(fd, user, "d1", NULL) == 0);
    r = e2e_read_frame(fd, E2E_WAIT_MS, &f);
  }
  if (CHECKF(r == E2E_READ_OK, "over the limit: expected ERROR UNAVAILABLE, got %s", e2e_read_result_name(r))) {
    CHECK_ERROR_FRAME(&f, HUBU__V1__CODE__UNAVAILABLE);
    e2e_frame_free(&f);
    CHECK(EXPECT_EOF(fd));
  }
  close(fd);
}

/* After one of the admitted connections closes, a new one is admitted (the
 * server notices the close within a moment). */
static void expect_admitted_again(int port) {
  for (int attempt = 0; attempt < 30; attempt++) {
    int fd = e2e_connect(port);
    if (fd < 0) break;
    if (e2e_send_hello(fd, "again", "d1", NULL) == 0) {
      e2e_frame f;
      int r = e2e_read_frame(fd, E2E_WAIT_MS, &f);
      int ok = r == E2E_READ_OK && f.type == HUBU_FRAME_HELLO_OK;
      if (r == E2E_READ_OK) e2e_frame_free(&f);
      if (ok) {
        CHECK(EXPECT_ALIVE(fd, 5));
        close(fd);
        fprintf(stderr, "  admitted again after %d refused attempt(s)\n", attempt);
        return;
      }
    }
    close(fd);
    e2e_sleep_ms(100);
  }
  CHECKF(0, "no connection admitted within 3 s after one of the admitted ones closed");
}

static void limit_case(const char *flag, int limit) {
  char value[16];
  snprintf(value, sizeof value, "%d", limit);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, flag, value, NULL) == 0);
  int fds[16];
  for (int i = 0; i < limit; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", i);
    fds[i] = CONNECT_HELLO(s.port, user);
    REQUIRE(fds[i] >= 0);
  }
  expect_refused(s.port, "over");
  for (int i = 0; i < limit; i++) CHECKF(EXPECT_ALIVE(fds[i], (uint64_t)i), "admitted connection %d", i);
  close(fds[0]);
  expect_admitted_again(s.port);
  for (int i = 1; i < limit; i++) close(fds[i]);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void connection_over_max_conns_gets_unavailable_and_is_closed(void) { limit_case("--max-conns", 5); }

static void connection_over_max_conns_per_ip_gets_unavailable_and_is_closed(void) {
  limit_case("--max-conns-per-ip", 3);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(connection_over_max_conns_gets_unavailable_and_is_closed),
      E2E_CASE(connection_over_max_conns_per_ip_gets_unavailable_and_is_closed),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

/* abuse_descriptors.c — descriptors a client address can make hubud hold: a
 * connection refused at accept (--max-conns-per-ip) is closed at once, not
 * after the client's FIN; without --max-conns, hubud caps its connections
 * below its RLIMIT_NOFILE with room left for the store, the plugins and the
 * admin listener, and at the cap drops the oldest connection still waiting for
 * HELLO so that a login gets in.
 *
 * Before the bound: silent connections up to the descriptor limit locked
 * every login out until the hello timeout, and each connection refused by
 * --max-conns-per-ip kept its descriptor until the client closed it. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "abuse.h"

static void connection_over_the_per_ip_limit_is_closed_at_once(void) {
  enum { ADMITTED = 4, REFUSED = 200 };
  REQUIRE(e2e_raise_nofile() > REFUSED + 64);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-conns-per-ip", "4", "--log-level", "error", NULL) == 0);
  int ok[ADMITTED];
  for (int i = 0; i < ADMITTED; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", i);
    ok[i] = ABUSE_LOGIN(s.port, user, "d1");
    REQUIRE(ok[i] >= 0);
  }
  int fds0 = abuse_fd_count(s.pid);
  int refused[REFUSED];
  uint64_t t0 = e2e_now_ms();
  for (int i = 0; i < REFUSED; i++) {
    refused[i] = abuse_connect(s.port, 0); /* and then nothing: no HELLO, no read, no close */
    REQUIRE(refused[i] >= 0);
  }
  e2e_sleep_ms(300);
  int fds1 = abuse_fd_count(s.pid);
  fprintf(stderr,
          "  %d connections over --max-conns-per-ip 4, held open by the client: hubud holds %d descriptors "
          "%llu ms later (%d before)\n",
          REFUSED, fds1, (unsigned long long)(e2e_now_ms() - t0), fds0);
  CHECKF(fds1 <= fds0 + 8, "hubud holds %d descriptors for refused connections the client keeps open (%d before)", fds1,
         fds0);
  /* each saw ERROR UNAVAILABLE (written best-effort before the close) and the close */
  int errors = 0, closed = 0;
  for (int i = 0; i < REFUSED; i++) {
    e2e_frame f;
    int r = e2e_read_frame(refused[i], 1000, &f);
    if (r == E2E_READ_OK) {
      if (i == 0) CHECK_ERROR_FRAME(&f, HUBU__V1__CODE__UNAVAILABLE);
      errors += f.type == HUBU_FRAME_ERROR;
      e2e_frame_free(&f);
      r = e2e_read_frame(refused[i], 1000, &f);
      if (r == E2E_READ_OK) e2e_frame_free(&f);
    }
    closed += r == E2E_READ_EOF;
    close(refused[i]);
  }
  fprintf(stderr, "  %d of %d got ERROR UNAVAILABLE, %d saw the close\n", errors, REFUSED, closed);
  CHECK_EQ(closed, REFUSED);
  for (int i = 0; i < ADMITTED; i++) {
    CHECKF(EXPECT_ALIVE(ok[i], (uint64_t)i), "admitted connection %d", i);
    close(ok[i]);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* GET /healthz on the admin listener: 1 when it answers 200. */
static int admin_healthy(const e2e_server *s) {
  char path[128], line[64];
  snprintf(path, sizeof path, "%s/ports", s->dir);
  FILE *f = fopen(path, "r");
  int port = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "admin %d", &port) == 1) break;
  if (f) fclose(f);
  if (port <= 0) return 0;
  int fd = abuse_connect(port, 0);
  if (fd < 0) return 0;
  char req[128];
  int n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
  char resp[64] = {0};
  ssize_t got = 0;
  if (e2e_send_raw(fd, req, (size_t)n) == 0) got = recv(fd, resp, sizeof resp - 1, 0);
  close(fd);
  return got > 12 && strncmp(resp, "HTTP/1.1 200", 12) == 0;
}

static void silent_connections_at_the_descriptor_limit_leave_room_for_a_login(void) {
  enum { NOFILE = 512, SILENT = 600 };
  long have = e2e_raise_nofile();
  if (have < SILENT + 256) {
    fprintf(stderr, "  skipped: RLIMIT_NOFILE %ld, the test needs %d\n", have, SILENT + 256);
    exit(ABUSE_SKIP);
  }
  /* hubud starts with a soft limit of 512 descriptors (inherited), --max-conns 0 */
  struct rlimit rl;
  REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  struct rlimit low = {NOFILE, rl.rlim_max};
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  e2e_server s;
  int started = e2e_server_start(&s, "--log-level", "error", NULL);
  setrlimit(RLIMIT_NOFILE, &rl);
  REQUIRE(started == 0);
  int fds0 = abuse_fd_count(s.pid);

  int *silent = malloc(SILENT * sizeof *silent);
  REQUIRE(silent != NULL);
  for (int i = 0; i < SILENT; i++) {
    silent[i] = abuse_connect(s.port, 0);
    REQUIRE(silent[i] >= 0);
  }
  e2e_sleep_ms(300);
  int fds1 = abuse_fd_count(s.pid);
  long login = abuse_login_ms(s.port, "pat", "d1");
  int admin = admin_healthy(&s);
  int fds2 = abuse_fd_count(s.pid);
  fprintf(stderr,
          "  RLIMIT_NOFILE %d, %d silent connections: hubud holds %d descriptors (%d at start, %d after the "
          "login); pat's login %ld ms; admin /healthz %s\n",
          NOFILE, SILENT, fds1, fds0, fds2, login, admin ? "200" : "failed");
  CHECKF(fds1 <= NOFILE - 64, "hubud holds %d of its %d descriptors: no room left for the store, plugins and admin",
         fds1, NOFILE);
  CHECKF(login >= 0 && login < ABUSE_LOGIN_BOUND_MS,
         "pat's login with the server full of silent connections: %ld ms "
         "(bound %d; -1: failed)",
         login, ABUSE_LOGIN_BOUND_MS);
  CHECKF(admin, "the admin listener did not answer /healthz with the server full of silent connections");
  /* the oldest silent connection was dropped (GOAWAY allowed), the newest is still there */
  CHECK(e2e_expect_eof_at(__FILE__, __LINE__, silent[0], 1, 1000));
  e2e_frame f;
  int r = e2e_read_frame(silent[SILENT - 1], 0, &f);
  if (r == E2E_READ_OK) e2e_frame_free(&f);
  CHECKF(r == E2E_READ_TIMEOUT, "the newest silent connection: %s", e2e_read_result_name(r));
  for (int i = 0; i < SILENT; i++) close(silent[i]);
  free(silent);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(connection_over_the_per_ip_limit_is_closed_at_once),
      E2E_CASE(silent_connections_at_the_descriptor_limit_leave_room_for_a_login),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

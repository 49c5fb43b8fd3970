/* e2e_drain.c — SIGTERM drains: every connected client gets GOAWAY
 * SHUTTING_DOWN and then the close, and hubud exits 0 within --drain-ms plus
 * a second. */
#include <signal.h>
#include <unistd.h>

#include "harness.h"

#define N_CLIENTS 5

static void sigterm_sends_goaway_shutting_down_to_every_client_and_exits_zero(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--drain-ms", "1000", NULL) == 0);
  int fds[N_CLIENTS];
  for (int i = 0; i < N_CLIENTS; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", i);
    fds[i] = CONNECT_HELLO(s.port, user);
    REQUIRE(fds[i] >= 0);
  }
  uint64_t t0 = e2e_now_ms();
  e2e_server_signal(&s, SIGTERM);
  for (int i = 0; i < N_CLIENTS; i++)
    CHECKF(EXPECT_GOAWAY(fds[i], HUBU__V1__CODE__SHUTTING_DOWN, 2000), "client %d", i);
  for (int i = 0; i < N_CLIENTS; i++) {
    uint64_t now = e2e_now_ms();
    int left = now < t0 + 2500 ? (int)(t0 + 2500 - now) : 1;
    CHECKF(e2e_expect_eof_at(__FILE__, __LINE__, fds[i], 0, left), "client %d not closed by the drain", i);
  }
  uint64_t closed = e2e_now_ms() - t0;
  uint64_t now = e2e_now_ms();
  int st = e2e_server_wait(&s, now < t0 + 2000 ? (int)(t0 + 2000 - now) : 1);
  uint64_t exited = e2e_now_ms() - t0;
  fprintf(stderr, "  after SIGTERM: clients closed by %llu ms, hubud exited at %llu ms with status %d\n",
          (unsigned long long)closed, (unsigned long long)exited, st);
  CHECKF(st == 0, "hubud exit status %d within drain-ms + 1 s (want 0)", st);
  for (int i = 0; i < N_CLIENTS; i++) close(fds[i]);
  e2e_server_cleanup(&s);
}

static void sigterm_with_clients_that_leave_at_goaway_exits_zero(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--drain-ms", "3000", NULL) == 0);
  int fds[N_CLIENTS];
  for (int i = 0; i < N_CLIENTS; i++) {
    char user[16];
    snprintf(user, sizeof user, "v%d", i);
    fds[i] = CONNECT_HELLO(s.port, user);
    REQUIRE(fds[i] >= 0);
  }
  uint64_t t0 = e2e_now_ms();
  e2e_server_signal(&s, SIGTERM);
  for (int i = 0; i < N_CLIENTS; i++) {
    CHECKF(EXPECT_GOAWAY(fds[i], HUBU__V1__CODE__SHUTTING_DOWN, 2000), "client %d", i);
    close(fds[i]);
  }
  int st = e2e_server_wait(&s, 4000);
  uint64_t exited = e2e_now_ms() - t0;
  fprintf(stderr, "  after SIGTERM: hubud exited at %llu ms with status %d (drain-ms 3000)\n",
          (unsigned long long)exited, st);
  CHECKF(st == 0, "hubud exit status %d within drain-ms + 1 s (want 0)", st);
  e2e_server_cleanup(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(sigterm_sends_goaway_shutting_down_to_every_client_and_exits_zero),
      E2E_CASE(sigterm_with_clients_that_leave_at_goaway_exits_zero),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

/* abuse_reads.c — a connection's share of the store queue: one client
 * pipelining SYNCs for a user with 1,000 sessions (each SYNC a scan of all
 * of them in the store) keeps at most HUBU_MAX_PENDING_READS (2) of its SYNCs
 * and PULLs in the store; its input waits meanwhile, so another user's HELLO
 * (a device load, queued behind them) is answered at once and hubud holds
 * no more for the flood than a paused connection's output.
 *
 * Before the bound: 10,000 SYNCs were all read and queued (280 MB), and
 * another user's HELLO waited 9.5 s behind them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "abuse.h"

#define SESSIONS 1000
#define SYNCS 10000
#define RSS_BOUND_KB (64L * 1024) /* above the idle server's: 10,000 SYNC_RESULTs of 1,000 sessions are ~300 MB */

static void sync_flood_does_not_delay_another_users_login(void) {
  abuse_limit_asan_quarantine();
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  int a = ABUSE_LOGIN(s.port, "flood", "d1");
  REQUIRE(a >= 0);
  /* 1,000 sessions with a message each */
  hubu_buf b = {0};
  for (int i = 1; i <= SESSIONS; i++) {
    char session[64];
    snprintf(session, sizeof session, "d:flood:u%04d", i);
    REQUIRE(abuse_append_send(&b, (uint64_t)i, session, (const uint8_t *)"x", 1) == 0);
  }
  REQUIRE(e2e_send_raw(a, hubu_buf_head(&b), hubu_buf_size(&b)) == 0);
  hubu_buf_free(&b);
  for (int i = 1; i <= SESSIONS; i++) {
    Hubu__V1__SendAck *ack = ABUSE_ACK(a, (uint64_t)i);
    REQUIRE(ack != NULL);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  long rss0 = abuse_status_kb(s.pid, "VmRSS");
  long idle = abuse_login_ms(s.port, "pat", "d1");
  CHECKF(idle >= 0, "pat cannot log in on an idle server");
  /* 10,000 SYNCs, pipelined, never read */
  for (int i = 1; i <= SYNCS; i++) {
    Hubu__V1__SyncRequest r = HUBU__V1__SYNC_REQUEST__INIT;
    r.request_id = (uint64_t)i;
    REQUIRE(hubu_wire_append(&b, HUBU_FRAME_SYNC, &r.base) == 0);
  }
  size_t off = 0, total = hubu_buf_size(&b);
  uint64_t t0 = e2e_now_ms();
  long worst = 0;
  int logins = 0;
  while (e2e_now_ms() - t0 < 2000) { /* write what the socket takes, log in meanwhile */
    while (off < total) {
      ssize_t w = send(a, hubu_buf_head(&b) + off, total - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w <= 0) break;
      off += (size_t)w;
    }
    long ms = abuse_login_ms(s.port, "pat", "d1");
    CHECKF(ms >= 0, "pat's login %d during the flood failed (no HELLO_OK within %d ms)", logins, E2E_WAIT_MS);
    if (ms < 0) break;
    if (ms > worst) worst = ms;
    logins++;
  }
  hubu_buf_free(&b);
  long rss = abuse_status_kb(s.pid, "VmRSS");
  fprintf(stderr, "  %zu of %zu SYNC bytes written; %d logins, worst %ld ms (idle %ld ms); VmRSS %ld -> %ld KiB\n", off,
          total, logins, worst, idle, rss0, rss);
  CHECKF(worst < ABUSE_LOGIN_BOUND_MS, "another user's login took %ld ms during the flood (bound %d ms)", worst,
         ABUSE_LOGIN_BOUND_MS);
  CHECKF(rss - rss0 < RSS_BOUND_KB + (ABUSE_SANITIZED ? RSS_BOUND_KB : 0), "VmRSS grew by %ld KiB", rss - rss0);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(sync_flood_does_not_delay_another_users_login),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

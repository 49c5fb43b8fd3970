/* abuse_backpressure.c — a connection that makes hubud answer and never reads
 * the answers (pipelined PULLs of a full session) costs a bounded amount of
 * memory, however much it asked for, and is closed once its output has not
 * drained for --write-stall-ms; its memory and descriptor are given back, and
 * other users log in meanwhile as fast as ever.
 *
 * Before the bound: five such connections held 132 MB for as long as they
 * stayed open (the heartbeat sweep skipped connections paused for
 * backpressure, and one read of pipelined PULLs was answered in full). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "abuse.h"

#define SESSION "d:eve:zed"
#define MESSAGES 100
#define BODY 16384
#define ATTACKERS 5
#define PULLS 400 /* each answered with a max_frame page: 25 MiB asked per connection */
#define STALL_MS 1000
#define SWEEP_SLACK_MS 1000       /* the sweep runs every quarter of the shortest timer, at most 1 s */
#define RSS_BOUND_KB (16L * 1024) /* five connections at --write-queue-max 256 KiB, with room to spare */

static void paused_connection_that_never_reads_is_closed_and_its_memory_freed(void) {
  abuse_limit_asan_quarantine();
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-frame", "65536", "--write-queue-max", "262144", "--write-stall-ms", "1000",
                           "--log-level", "warn", NULL) == 0);

  /* eve fills the session: 100 messages of 16 KiB, all answered */
  int eve = ABUSE_LOGIN(s.port, "eve", "d1");
  REQUIRE(eve >= 0);
  uint8_t *body = malloc(BODY);
  REQUIRE(body != NULL);
  memset(body, 'e', BODY);
  hubu_buf w = {0};
  for (uint64_t i = 1; i <= MESSAGES; i++) REQUIRE(abuse_append_send(&w, i, SESSION, body, BODY) == 0);
  free(body);
  REQUIRE(e2e_send_raw(eve, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
  hubu_buf_free(&w);
  Hubu__V1__SendAck *last = ABUSE_ACK(eve, MESSAGES);
  REQUIRE(last != NULL && last->code == HUBU__V1__CODE__OK);
  hubu__v1__send_ack__free_unpacked(last, NULL);
  close(eve);

  long rss0 = abuse_status_kb(s.pid, "VmRSS");
  int fds0 = abuse_fd_count(s.pid);
  fprintf(stderr, "  session filled: hubud VmRSS %ld KiB, %d descriptors\n", rss0, fds0);

  /* five connections of zed pipeline 400 PULLs each and never read */
  int att[ATTACKERS];
  hubu_buf pulls = {0};
  for (uint64_t r = 1; r <= PULLS; r++) REQUIRE(abuse_append_pull(&pulls, r, SESSION, 0, 500) == 0);
  for (int i = 0; i < ATTACKERS; i++) {
    char device[16];
    snprintf(device, sizeof device, "z%d", i);
    att[i] = abuse_connect(s.port, 4096);
    REQUIRE(att[i] >= 0);
    REQUIRE(e2e_send_hello(att[i], "zed", device, NULL) == 0);
    REQUIRE(EXPECT_HELLO_OK(att[i], NULL));
  }
  uint64_t t0 = e2e_now_ms();
  for (int i = 0; i < ATTACKERS; i++) REQUIRE(e2e_send_raw(att[i], hubu_buf_head(&pulls), hubu_buf_size(&pulls)) == 0);
  hubu_buf_free(&pulls);

  /* watch hubud: memory, descriptors, and another user's login */
  long peak = rss0, login_max = 0;
  int logins = 0, login_failed = 0;
  uint64_t closed_at = 0, next_login = t0 + 100;
  while (e2e_now_ms() - t0 < STALL_MS + SWEEP_SLACK_MS + 2000) {
    long rss = abuse_status_kb(s.pid, "VmRSS");
    if (rss > peak) peak = rss;
    int fds = abuse_fd_count(s.pid);
    if (!closed_at && fds >= 0 && fds <= fds0) closed_at = e2e_now_ms();
    if (closed_at && e2e_now_ms() - closed_at > 300) break; /* and stayed closed */
    if (e2e_now_ms() >= next_login && logins < 8) {
      next_login = e2e_now_ms() + 200;
      long ms = abuse_login_ms(s.port, "pat", "d1");
      if (ms < 0) login_failed++;
      if (ms > login_max) login_max = ms;
      logins++;
    }
    e2e_sleep_ms(20);
  }
  long hwm = abuse_status_kb(s.pid, "VmHWM");
  long rss1 = abuse_status_kb(s.pid, "VmRSS");
  fprintf(stderr,
          "  %d connections asked for %d PULL pages each and read nothing: hubud VmRSS peak +%ld KiB (bound +%ld, "
          "VmHWM %ld KiB), descriptors back to %d after %lld ms (bound %d), VmRSS then +%ld KiB; %d logins of pat, "
          "slowest %ld ms, %d failed\n",
          ATTACKERS, PULLS, peak - rss0, RSS_BOUND_KB, hwm, fds0, closed_at ? (long long)(closed_at - t0) : -1LL,
          STALL_MS + SWEEP_SLACK_MS, rss1 - rss0, logins, login_max, login_failed);
  CHECKF(closed_at && closed_at - t0 <= STALL_MS + SWEEP_SLACK_MS,
         "the paused connections were still open %lld ms after they stopped reading (--write-stall-ms %d)",
         (long long)(e2e_now_ms() - t0), STALL_MS);
  CHECKF(peak - rss0 < RSS_BOUND_KB, "hubud grew by %ld KiB for %d connections that do not read (bound %ld)",
         peak - rss0, ATTACKERS, RSS_BOUND_KB);
  CHECKF(rss1 - rss0 < RSS_BOUND_KB, "hubud still holds +%ld KiB after the paused connections went", rss1 - rss0);
  CHECKF(login_failed == 0 && login_max < ABUSE_LOGIN_BOUND_MS,
         "pat's logins meanwhile: slowest %ld ms, %d failed (bound %d ms)", login_max, login_failed,
         ABUSE_LOGIN_BOUND_MS);

  /* what the attackers see: whatever was already in flight, then the close */
  for (int i = 0; i < ATTACKERS; i++) {
    size_t bytes = 0;
    CHECKF(abuse_drain_to_eof(att[i], 2000, &bytes), "paused connection %d: no close after %zu bytes", i, bytes);
    close(att[i]);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* A reader that drains its queue in time keeps its connection: the bound is
 * on a queue that does not move, not on a large one. */
static void paused_connection_that_drains_in_time_stays_open(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-frame", "65536", "--write-queue-max", "262144", "--write-stall-ms", "1000",
                           "--log-level", "warn", NULL) == 0);
  int eve = ABUSE_LOGIN(s.port, "eve", "d1");
  REQUIRE(eve >= 0);
  uint8_t *body = malloc(BODY);
  REQUIRE(body != NULL);
  memset(body, 'e', BODY);
  hubu_buf w = {0};
  for (uint64_t i = 1; i <= MESSAGES; i++) REQUIRE(abuse_append_send(&w, i, SESSION, body, BODY) == 0);
  free(body);
  REQUIRE(e2e_send_raw(eve, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
  hubu_buf_free(&w);
  Hubu__V1__SendAck *last = ABUSE_ACK(eve, MESSAGES);
  REQUIRE(last != NULL && last->code == HUBU__V1__CODE__OK);
  hubu__v1__send_ack__free_unpacked(last, NULL);
  close(eve);

  /* 40 PULLs (2.5 MiB of answers), read in bursts with pauses of 600 ms: each
   * pause is shorter than --write-stall-ms, the whole more than twice it */
  int z = abuse_connect(s.port, 4096);
  REQUIRE(z >= 0);
  REQUIRE(e2e_send_hello(z, "zed", "z1", NULL) == 0);
  REQUIRE(EXPECT_HELLO_OK(z, NULL));
  hubu_buf pulls = {0};
  enum { N = 40 };
  for (uint64_t r = 1; r <= N; r++) REQUIRE(abuse_append_pull(&pulls, r, SESSION, 0, 500) == 0);
  REQUIRE(e2e_send_raw(z, hubu_buf_head(&pulls), hubu_buf_size(&pulls)) == 0);
  hubu_buf_free(&pulls);
  int results = 0;
  uint64_t t0 = e2e_now_ms();
  while (results < N && e2e_now_ms() - t0 < 15000) {
    e2e_sleep_ms(600);
    for (int k = 0; k < 8 && results < N; k++) {
      e2e_frame f;
      if (!abuse_expect_frame_at(__FILE__, __LINE__, z, HUBU_FRAME_PULL_RESULT, 0, E2E_WAIT_MS, &f)) goto out;
      e2e_frame_free(&f);
      results++;
    }
  }
  fprintf(stderr, "  %d PULL_RESULTs read in bursts over %llu ms\n", results, (unsigned long long)(e2e_now_ms() - t0));
  CHECK_EQ(results, N);
  CHECK(EXPECT_ALIVE(z, 7));
out:
  close(z);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(paused_connection_that_never_reads_is_closed_and_its_memory_freed),
      E2E_CASE(paused_connection_that_drains_in_time_stays_open),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

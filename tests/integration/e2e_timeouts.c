/* e2e_timeouts.c — the server's clocks: a connection that never completes its
 * HELLO is closed after --hello-timeout-ms, and an authenticated one that goes
 * silent is pinged after --heartbeat-ms and closed after three of them, while
 * a client that talks (PONGs or PINGs) stays. */
#include <unistd.h>

#include "harness.h"

static void truncated_first_frame_is_closed_by_the_hello_timeout(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--hello-timeout-ms", "300", NULL) == 0);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  uint8_t part[HUBU_FRAME_HEADER_SIZE + 10] = {0};
  hubu_frame_header_encode(part, HUBU_FRAME_HELLO, 0, 100); /* 100 announced, 10 sent */
  uint64_t t0 = e2e_now_ms();
  CHECK(e2e_send_raw(fd, part, sizeof part) == 0);
  CHECK(EXPECT_EOF_AFTER_GOAWAY(fd, 2000));
  uint64_t took = e2e_now_ms() - t0;
  fprintf(stderr, "  closed after %llu ms\n", (unsigned long long)took);
  CHECKF(took >= 200, "closed after %llu ms: before the 300 ms hello timeout", (unsigned long long)took);
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void silent_connection_without_hello_gets_goaway_timeout_and_is_closed(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--hello-timeout-ms", "300", NULL) == 0);
  uint64_t t0 = e2e_now_ms();
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(EXPECT_GOAWAY(fd, HUBU__V1__CODE__TIMEOUT, 2000));
  CHECK(EXPECT_EOF(fd));
  uint64_t took = e2e_now_ms() - t0;
  fprintf(stderr, "  closed after %llu ms\n", (unsigned long long)took);
  CHECKF(took >= 200 && took <= 2000, "closed after %llu ms (hello timeout 300 ms)", (unsigned long long)took);
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void silent_client_gets_ping_then_goaway_timeout_after_three_heartbeats(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--heartbeat-ms", "200", NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  uint64_t t0 = e2e_now_ms();
  uint64_t first_ping = 0, goaway = 0, eof = 0;
  for (int i = 0; i < 20 && !eof; i++) {
    uint64_t now = e2e_now_ms();
    if (now > t0 + 3000) break;
    e2e_frame f;
    int r = e2e_read_frame(fd, (int)(t0 + 3000 - now), &f);
    if (r == E2E_READ_EOF) {
      eof = e2e_now_ms() - t0;
      break;
    }
    if (r != E2E_READ_OK) {
      CHECKF(0, "silent client: expected PING, GOAWAY or EOF, got %s", e2e_read_result_name(r));
      break;
    }
    if (f.type == HUBU_FRAME_PING) {
      if (!first_ping) first_ping = e2e_now_ms() - t0;
      CHECKF(!goaway, "PING after GOAWAY");
    } else if (f.type == HUBU_FRAME_GOAWAY) {
      Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, f.len, f.body);
      CHECKF(g && g->code == HUBU__V1__CODE__TIMEOUT, "GOAWAY code %s, want TIMEOUT",
             g ? hubu_code_name(g->code) : "(undecodable)");
      if (g) hubu__v1__go_away__free_unpacked(g, NULL);
      goaway = e2e_now_ms() - t0;
    } else {
      CHECKF(0, "silent client: unexpected %s frame", hubu_frame_type_name(f.type));
    }
    e2e_frame_free(&f);
  }
  fprintf(stderr, "  after HELLO_OK: first PING %llu ms, GOAWAY %llu ms, EOF %llu ms\n", (unsigned long long)first_ping,
          (unsigned long long)goaway, (unsigned long long)eof);
  CHECKF(first_ping > 0 && first_ping <= 1000, "first server PING at %llu ms (heartbeat 200 ms)",
         (unsigned long long)first_ping);
  CHECKF(goaway > 0, "no GOAWAY TIMEOUT before the close");
  CHECKF(eof >= 400 && eof <= 2000, "closed at %llu ms, want about 600 ms (3 x heartbeat 200 ms)",
         (unsigned long long)eof);
  CHECKF(!first_ping || !goaway || first_ping < goaway, "GOAWAY before any PING");
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void client_answering_pings_with_pong_stays_connected(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--heartbeat-ms", "200", NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  uint64_t end = e2e_now_ms() + 2000;
  int pings = 0;
  for (int i = 0; i < 200; i++) {
    uint64_t now = e2e_now_ms();
    if (now >= end) break;
    e2e_frame f;
    int r = e2e_read_frame(fd, (int)(end - now), &f);
    if (r == E2E_READ_TIMEOUT) break;
    if (r != E2E_READ_OK) {
      CHECKF(0, "answering client: got %s within 2 s", e2e_read_result_name(r));
      break;
    }
    if (f.type == HUBU_FRAME_PING) {
      Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, f.len, f.body);
      CHECK(p != NULL);
      CHECK(e2e_send_ping(fd, HUBU_FRAME_PONG, p ? p->time_ms : 0) == 0);
      if (p) hubu__v1__ping__free_unpacked(p, NULL);
      pings++;
    } else {
      CHECKF(0, "answering client: unexpected %s frame", hubu_frame_type_name(f.type));
    }
    e2e_frame_free(&f);
  }
  fprintf(stderr, "  %d server PINGs answered in 2 s\n", pings);
  CHECKF(pings >= 2, "%d server PINGs in 2 s with heartbeat 200 ms", pings);
  CHECK(EXPECT_ALIVE(fd, 61));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void client_sending_pings_stays_connected(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--heartbeat-ms", "200", NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  uint64_t end = e2e_now_ms() + 2000;
  uint64_t sent = 0, ponged = 0;
  for (int i = 0; i < 400 && e2e_now_ms() < end; i++) {
    sent++;
    if (e2e_send_ping(fd, HUBU_FRAME_PING, sent) != 0) {
      CHECKF(0, "PING %llu: write failed", (unsigned long long)sent);
      break;
    }
    /* read until its PONG; server PINGs are left unanswered */
    uint64_t pong_by = e2e_now_ms() + 1000;
    while (ponged < sent && e2e_now_ms() < pong_by) {
      e2e_frame f;
      int r = e2e_read_frame(fd, (int)(pong_by - e2e_now_ms() + 1), &f);
      if (r != E2E_READ_OK) {
        CHECKF(0, "pinging client: got %s after PING %llu", e2e_read_result_name(r), (unsigned long long)sent);
        goto out;
      }
      if (f.type == HUBU_FRAME_PONG) {
        ponged++;
      } else if (f.type != HUBU_FRAME_PING) {
        CHECKF(0, "pinging client: unexpected %s frame", hubu_frame_type_name(f.type));
      }
      e2e_frame_free(&f);
    }
    CHECKF(ponged == sent, "no PONG for PING %llu", (unsigned long long)sent);
    e2e_sleep_ms(150);
  }
out:
  fprintf(stderr, "  %llu PINGs, %llu PONGs in 2 s\n", (unsigned long long)sent, (unsigned long long)ponged);
  CHECK(EXPECT_ALIVE(fd, 1000));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(truncated_first_frame_is_closed_by_the_hello_timeout),
      E2E_CASE(silent_connection_without_hello_gets_goaway_timeout_and_is_closed),
      E2E_CASE(silent_client_gets_ping_then_goaway_timeout_after_three_heartbeats),
      E2E_CASE(client_answering_pings_with_pong_stays_connected),
      E2E_CASE(client_sending_pings_stays_connected),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

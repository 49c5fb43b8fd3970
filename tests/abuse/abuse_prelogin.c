/* abuse_prelogin.c — what a connection can make hubud hold before HELLO_OK:
 * a frame above --hello-max-frame (4 KiB by default) is refused with
 * FRAME_TOO_LARGE as soon as its header arrives, so hundreds of connections
 * that each declare a 1 MiB HELLO and send it cost next to nothing and do not
 * slow another user's login; and while many connections wait for their HELLO,
 * the ones accepted then get --hello-timeout-pressure-ms instead of
 * --hello-timeout-ms.
 *
 * Before the bound: 400 such connections held 364 MB until the hello timeout,
 * and a legitimate login took 434 ms. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "abuse.h"

#define CONNS 150
#define DECLARED (1u << 20)       /* the default --max-frame: a frame the server would take after login */
#define RSS_BOUND_KB (32L * 1024) /* 150 x 1 MiB would be 150 MiB */

typedef struct {
  int fd;
  size_t sent; /* of the header and body */
  int refused; /* its write failed: the server closed it */
} bulk;

/* Writes what the socket takes of c's frame (header + DECLARED - 1 body bytes). */
static void push_bytes(bulk *c, const uint8_t *chunk, size_t chunk_len) {
  size_t total = HUBU_FRAME_HEADER_SIZE + DECLARED - 1;
  while (!c->refused && c->sent < total) {
    size_t n = total - c->sent < chunk_len ? total - c->sent : chunk_len;
    const uint8_t *p = chunk;
    uint8_t header[HUBU_FRAME_HEADER_SIZE];
    if (c->sent == 0) { /* the header first, on its own */
      hubu_frame_header_encode(header, HUBU_FRAME_HELLO, 0, DECLARED);
      p = header;
      n = sizeof header;
    }
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (w <= 0) {
      c->refused = 1;
      return;
    }
    c->sent += (size_t)w;
  }
}

static void oversized_hello_is_refused_at_its_header_and_costs_no_memory(void) {
  REQUIRE(e2e_raise_nofile() > CONNS + 64);
  abuse_limit_asan_quarantine();
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--log-level", "warn", NULL) == 0);
  long rss0 = abuse_status_kb(s.pid, "VmRSS");
  long login0 = abuse_login_ms(s.port, "pat", "d1");
  CHECKF(login0 >= 0, "pat cannot log in on an idle server");

  static uint8_t chunk[65536];
  memset(chunk, 'x', sizeof chunk);
  bulk *c = calloc(CONNS, sizeof *c);
  REQUIRE(c != NULL);
  for (int i = 0; i < CONNS; i++) {
    c[i].fd = abuse_connect(s.port, 0);
    REQUIRE(c[i].fd >= 0);
  }
  /* every connection sends its 1 MiB HELLO as fast as the server takes it */
  uint64_t t0 = e2e_now_ms();
  long peak = rss0, login_max = 0;
  int logins = 0, login_failed = 0;
  uint64_t next_login = t0 + 50;
  while (e2e_now_ms() - t0 < 2500) {
    size_t pending = 0;
    for (int i = 0; i < CONNS; i++) {
      push_bytes(&c[i], chunk, sizeof chunk);
      if (!c[i].refused && c[i].sent < HUBU_FRAME_HEADER_SIZE + DECLARED - 1) pending++;
    }
    long rss = abuse_status_kb(s.pid, "VmRSS");
    if (rss > peak) peak = rss;
    if (e2e_now_ms() >= next_login && logins < 10) {
      next_login = e2e_now_ms() + 100;
      long ms = abuse_login_ms(s.port, "pat", "d1");
      if (ms < 0) login_failed++;
      if (ms > login_max) login_max = ms;
      logins++;
    }
    if (!pending && logins >= 10) break;
    e2e_sleep_ms(2);
  }
  long rss = abuse_status_kb(s.pid, "VmRSS");
  if (rss > peak) peak = rss;
  size_t sent = 0;
  int refused = 0;
  for (int i = 0; i < CONNS; i++) {
    sent += c[i].sent;
    refused += c[i].refused;
  }
  fprintf(stderr,
          "  %d connections, each a HELLO header declaring %u bytes: %zu bytes sent in all, %d writes refused; hubud "
          "VmRSS peak +%ld KiB (bound +%ld, VmHWM %ld KiB); pat's login %ld ms idle, slowest %ld ms of %d meanwhile, "
          "%d failed\n",
          CONNS, DECLARED, sent, refused, peak - rss0, RSS_BOUND_KB, abuse_status_kb(s.pid, "VmHWM"), login0, login_max,
          logins, login_failed);
  CHECKF(peak - rss0 < RSS_BOUND_KB, "hubud grew by %ld KiB for %d connections that never logged in (bound %ld)",
         peak - rss0, CONNS, RSS_BOUND_KB);
  CHECKF(login_failed == 0 && login_max < ABUSE_LOGIN_BOUND_MS,
         "pat's logins during the flood: slowest %ld ms, %d failed (bound %d ms)", login_max, login_failed,
         ABUSE_LOGIN_BOUND_MS);
  /* each got ERROR FRAME_TOO_LARGE for its HELLO, then the close */
  int too_large = 0, closed = 0;
  for (int i = 0; i < CONNS; i++) {
    e2e_frame f;
    int r = e2e_read_frame(c[i].fd, 1000, &f);
    if (r == E2E_READ_OK) {
      if (i == 0) CHECK_ERROR_FRAME(&f, HUBU__V1__CODE__FRAME_TOO_LARGE);
      Hubu__V1__Error *e = f.type == HUBU_FRAME_ERROR ? hubu__v1__error__unpack(NULL, f.len, f.body) : NULL;
      too_large += e && e->code == HUBU__V1__CODE__FRAME_TOO_LARGE && e->frame_type == HUBU_FRAME_HELLO;
      if (e) hubu__v1__error__free_unpacked(e, NULL);
      e2e_frame_free(&f);
      closed += abuse_drain_to_eof(c[i].fd, 1000, NULL);
    } else {
      if (i == 0) CHECKF(0, "connection 0: expected ERROR FRAME_TOO_LARGE, got %s", e2e_read_result_name(r));
      closed += r == E2E_READ_EOF;
    }
    close(c[i].fd);
  }
  free(c);
  fprintf(stderr, "  %d of %d got ERROR FRAME_TOO_LARGE for their HELLO, %d were closed\n", too_large, CONNS, closed);
  CHECK_EQ(too_large, CONNS);
  CHECK_EQ(closed, CONNS);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* The limit is on frames before HELLO_OK, not on HELLO alone: a HELLO of
 * 4 KiB logs in, one of 4 KiB + 1 byte (with a padded client_info) is refused,
 * and after HELLO_OK a frame up to --max-frame is fine. */
static void hello_max_frame_applies_until_hello_ok(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--hello-max-frame", "4096", "--log-level", "warn", NULL) == 0);
  char token[HUBU_TOKEN_MAX];
  static char info[8192];
  for (int size = 4096; size <= 4097; size++) {
    e2e_token("pat", token);
    Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.user_id = "pat";
    h.device_id = "d1";
    h.token = token;
    h.client_info = "";
    size_t base = protobuf_c_message_get_packed_size(&h.base);
    size_t pad = (size_t)size - base - 3; /* client_info: tag, 2-byte length, bytes */
    memset(info, 'i', pad);
    info[pad] = '\0';
    h.client_info = info;
    REQUIRE(protobuf_c_message_get_packed_size(&h.base) == (size_t)size);
    int fd = abuse_connect(s.port, 0);
    REQUIRE(fd >= 0);
    REQUIRE(e2e_send_msg(fd, HUBU_FRAME_HELLO, &h.base) == 0);
    if (size == 4096) {
      CHECKF(EXPECT_HELLO_OK(fd, NULL), "a HELLO of exactly --hello-max-frame bytes");
      /* logged in: a 60 KiB PING body (unknown fields) is within --max-frame */
      static uint8_t big[60000];
      memset(big, 0, sizeof big);
      big[0] = 0x08; /* time_ms = 5, then padding in an unknown bytes field 15 */
      big[1] = 5;
      big[2] = 0x7a;
      REQUIRE(hubu_varint_put(big + 3, sizeof big - 6) == 3);
      CHECK(e2e_send_frame(fd, HUBU_FRAME_PING, 0, big, sizeof big) == 0);
      CHECK(EXPECT_PONG(fd, 5));
    } else {
      CHECK(EXPECT_ERROR_FT(fd, HUBU__V1__CODE__FRAME_TOO_LARGE, HUBU_FRAME_HELLO));
      CHECK(EXPECT_EOF(fd));
    }
    close(fd);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* With --max-conns 40, more than 10 connections waiting for HELLO is
 * pressure: one accepted then is closed after --hello-timeout-pressure-ms
 * (2 s by default), not --hello-timeout-ms (10 s); the ones accepted before
 * keep their 10 s; a login still gets in. */
static void hello_timeout_drops_for_connections_accepted_under_pressure(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-conns", "40", "--log-level", "warn", NULL) == 0);
  enum { SILENT = 12 };
  int silent[SILENT];
  for (int i = 0; i < SILENT; i++) {
    silent[i] = abuse_connect(s.port, 0);
    REQUIRE(silent[i] >= 0);
  }
  e2e_sleep_ms(100); /* all accepted */
  int late = abuse_connect(s.port, 0);
  REQUIRE(late >= 0);
  uint64_t t0 = e2e_now_ms();
  long login = abuse_login_ms(s.port, "pat", "d1");
  CHECKF(login >= 0 && login < ABUSE_LOGIN_BOUND_MS, "pat's login under pressure took %ld ms (bound %d)", login,
         ABUSE_LOGIN_BOUND_MS);
  int r = e2e_expect_goaway_at(__FILE__, __LINE__, late, HUBU__V1__CODE__TIMEOUT, 3500);
  uint64_t closed_ms = e2e_now_ms() - t0;
  fprintf(stderr, "  the connection accepted under pressure: GOAWAY TIMEOUT %s after %llu ms\n",
          r ? "seen" : "not seen", (unsigned long long)closed_ms);
  CHECKF(r && closed_ms >= 1500 && closed_ms <= 3500,
         "connection accepted with %d others waiting for HELLO: closed after %llu ms (want about 2000)", SILENT,
         (unsigned long long)closed_ms);
  /* the first one, accepted before the pressure, still has its 10 s */
  e2e_frame f;
  int first = e2e_read_frame(silent[0], 0, &f);
  if (first == E2E_READ_OK) e2e_frame_free(&f);
  CHECKF(first == E2E_READ_TIMEOUT, "the first silent connection (accepted without pressure) got %s after %llu ms",
         e2e_read_result_name(first), (unsigned long long)(e2e_now_ms() - t0));
  close(late);
  for (int i = 0; i < SILENT; i++) close(silent[i]);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(oversized_hello_is_refused_at_its_header_and_costs_no_memory),
      E2E_CASE(hello_max_frame_applies_until_hello_ok),
      E2E_CASE(hello_timeout_drops_for_connections_accepted_under_pressure),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

/* e2e_load.c — many connections: a thousand libhubu-clients on one loop all
 * get READY and a PONG, and ten thousand raw connections opened and dropped in
 * waves leave hubud's resident memory where a warm-up wave left it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_uv.h"
#include "hubu_client.h"
#include "token.h"
#include "wire.h"

#define N_CLIENTS 1000

typedef struct {
  hubu_client *clients[N_CLIENTS];
  char tokens[N_CLIENTS][HUBU_TOKEN_MAX];
  int ready;
  int pongs;
  int lost;   /* BACKOFF or CLOSED before the end */
  int closed; /* on_closed calls */
  int closing;
} load_state;

static void on_state(hubu_client *c, hubu_client_state st, int code, const char *reason, void *ud) {
  (void)c;
  load_state *ls = ud;
  if (!ls->closing && (st == HUBU_CLIENT_BACKOFF || st == HUBU_CLIENT_CLOSED)) {
    if (ls->lost++ < 5)
      fprintf(stderr, "  a client went %s: code %d %s\n", hubu_client_state_name(st), code, reason ? reason : "");
  }
}

static void on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)c;
  (void)info;
  ((load_state *)ud)->ready++;
}

static void on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud) {
  (void)c;
  (void)body;
  (void)len;
  if (type == HUBU_FRAME_PONG) ((load_state *)ud)->pongs++;
}

static void on_closed(void *ud) { ((load_state *)ud)->closed++; }

static int all_settled(void *ud) {
  load_state *ls = ud;
  return ls->ready + ls->lost >= N_CLIENTS;
}
static int all_ponged(void *ud) { return ((load_state *)ud)->pongs >= N_CLIENTS; }
static int all_closed(void *ud) { return ((load_state *)ud)->closed >= N_CLIENTS; }

static void thousand_client_library_connections_get_ready_and_pong(void) {
  long nofile = e2e_raise_nofile();
  REQUIRE(nofile >= 2 * N_CLIENTS + 100);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-conns", "5000", "--log-level", "warn", NULL) == 0);
  load_state *ls = calloc(1, sizeof *ls);
  REQUIRE(ls != NULL);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  hubu_client_callbacks cb = {0};
  cb.on_state = on_state;
  cb.on_ready = on_ready;
  cb.on_frame = on_frame;
  uint64_t t0 = e2e_now_ms();
  for (int i = 0; i < N_CLIENTS; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", i);
    e2e_token(user, ls->tokens[i]);
    hubu_client_options opt = {0};
    opt.host = "127.0.0.1";
    opt.port = s.port;
    opt.user_id = user;
    opt.device_id = "d";
    opt.token = ls->tokens[i];
    opt.connect_timeout_ms = 30000;
    ls->clients[i] = hubu_client_new(&loop, &opt, &cb, ls);
    REQUIRE(ls->clients[i] != NULL);
    REQUIRE(hubu_client_start(ls->clients[i]) == 0);
  }
  CHECK(e2e_uv_run_until(&loop, all_settled, ls, 60000));
  uint64_t t_ready = e2e_now_ms() - t0;
  CHECKF(ls->ready == N_CLIENTS, "%d of %d clients READY (%d lost)", ls->ready, N_CLIENTS, ls->lost);
  for (int i = 0; i < N_CLIENTS; i++)
    if (hubu_client_get_state(ls->clients[i]) == HUBU_CLIENT_READY) CHECK(hubu_client_ping(ls->clients[i]) == 0);
  CHECK(e2e_uv_run_until(&loop, all_ponged, ls, 30000));
  uint64_t t_pong = e2e_now_ms() - t0;
  CHECKF(ls->pongs == N_CLIENTS, "%d of %d PONGs", ls->pongs, N_CLIENTS);
  fprintf(stderr, "  %d READY by %llu ms, %d PONGs by %llu ms, server VmRSS %ld kB\n", ls->ready,
          (unsigned long long)t_ready, ls->pongs, (unsigned long long)t_pong, e2e_server_rss_kb(&s));
  ls->closing = 1;
  for (int i = 0; i < N_CLIENTS; i++) hubu_client_close(ls->clients[i], on_closed);
  CHECK(e2e_uv_run_until(&loop, all_closed, ls, 20000));
  CHECK(e2e_uv_finish(&loop, 5000) == 0);
  free(ls);
  /* the server still serves */
  int fd = CONNECT_HELLO(s.port, "after");
  if (CHECK(fd >= 0)) {
    CHECK(EXPECT_ALIVE(fd, 1));
    close(fd);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

#define WAVE 500
#define WAVES 20

/* Opens WAVE connections, HELLOs them all, waits for every HELLO_OK, closes
 * them all. Users w0..w499 come back in every wave. Returns the HELLO_OKs. */
static int churn_wave(int port) {
  static int fds[WAVE];
  static char tokens[WAVE][HUBU_TOKEN_MAX];
  static int minted;
  if (!minted) {
    for (int i = 0; i < WAVE; i++) {
      char user[16];
      snprintf(user, sizeof user, "w%d", i);
      e2e_token(user, tokens[i]);
    }
    minted = 1;
  }
  int n = 0, ok = 0;
  for (; n < WAVE; n++) {
    fds[n] = e2e_connect(port);
    if (fds[n] < 0) break;
  }
  for (int i = 0; i < n; i++) {
    char user[16];
    snprintf(user, sizeof user, "w%d", i);
    Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.user_id = user;
    h.device_id = "d";
    h.token = tokens[i];
    e2e_send_msg(fds[i], HUBU_FRAME_HELLO, &h.base); /* a failure shows as a missing HELLO_OK */
  }
  for (int i = 0; i < n; i++) {
    e2e_frame f;
    int r = e2e_read_frame(fds[i], 10000, &f);
    if (r == E2E_READ_OK && f.type == HUBU_FRAME_HELLO_OK) ok++;
    if (r == E2E_READ_OK) e2e_frame_free(&f);
  }
  for (int i = 0; i < n; i++) close(fds[i]);
  return ok;
}

/* The server has seen every close once a fresh connection is served after them. */
static void settle(int port) {
  e2e_sleep_ms(300);
  int fd = e2e_connect(port);
  if (fd >= 0) {
    if (e2e_send_hello(fd, "settle", "d", NULL) == 0) {
      e2e_frame f;
      if (e2e_read_frame(fd, 5000, &f) == E2E_READ_OK) e2e_frame_free(&f);
    }
    close(fd);
  }
  e2e_sleep_ms(200);
}

static void ten_thousand_dropped_connections_leave_server_memory_flat(void) {
  long nofile = e2e_raise_nofile();
  REQUIRE(nofile >= WAVE + 100);
#ifdef HUBU_E2E_SANITIZED
  /* ASan's quarantine holds freed memory back on purpose (up to 256 MB): off
   * for this hubud, so its RSS shows what it really keeps. */
  const char *old = getenv("ASAN_OPTIONS");
  char *saved = old ? strdup(old) : NULL;
  char opts[512];
  snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", saved ? saved : "", saved ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
#endif
  e2e_server s;
  int started = e2e_server_start(&s, "--max-conns", "5000", "--log-level", "warn", NULL);
#ifdef HUBU_E2E_SANITIZED
  if (saved)
    setenv("ASAN_OPTIONS", saved, 1);
  else
    unsetenv("ASAN_OPTIONS");
  free(saved);
#endif
  REQUIRE(started == 0);
  long rss_start = e2e_server_rss_kb(&s);
  int ok = churn_wave(s.port);
  CHECKF(ok == WAVE, "warm-up wave: %d of %d HELLO_OK", ok, WAVE);
  settle(s.port);
  long rss_warm = e2e_server_rss_kb(&s);
  uint64_t t0 = e2e_now_ms();
  int total = 0;
  for (int w = 0; w < WAVES; w++) {
    ok = churn_wave(s.port);
    total += ok;
    if (!CHECKF(ok == WAVE, "wave %d: %d of %d HELLO_OK", w, ok, WAVE)) break;
  }
  uint64_t took = e2e_now_ms() - t0;
  settle(s.port);
  long rss_end = e2e_server_rss_kb(&s);
  fprintf(stderr,
          "  hubud VmRSS: %ld kB at start, %ld kB after a %d-connection warm-up, %ld kB after %d more "
          "connections (%+ld kB); %llu ms, %.0f connections/s\n",
          rss_start, rss_warm, WAVE, rss_end, total, rss_end - rss_warm, (unsigned long long)took,
          took ? total * 1000.0 / (double)took : 0.0);
  CHECK_EQ(total, WAVE * WAVES);
  REQUIRE(rss_warm > 0 && rss_end > 0);
  CHECKF(rss_end - rss_warm <= 4096, "hubud grew by %ld kB over %d dropped connections (budget 4096 kB)",
         rss_end - rss_warm, total);
  int fd = CONNECT_HELLO(s.port, "after");
  if (CHECK(fd >= 0)) {
    CHECK(EXPECT_ALIVE(fd, 1));
    close(fd);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(thousand_client_library_connections_get_ready_and_pong),
      E2E_CASE(ten_thousand_dropped_connections_leave_server_memory_flat),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

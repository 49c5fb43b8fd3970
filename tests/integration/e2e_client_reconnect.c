/* e2e_client_reconnect.c — libhubu-client with reconnect on: when hubud goes
 * away (SIGTERM) and a new one comes up on the same port, the client gets
 * READY a second time by itself and is served. */
#include <signal.h>
#include <stdio.h>

#include "harness.h"
#include "harness_uv.h"
#include "hubu_client.h"
#include "token.h"

typedef struct {
  hubu_client *c;
  e2e_server *server; /* the one being stopped */
  int exit_status;
  int exited;
  int readies;
  int pongs;
  int goaways;
  int closed;
} rc_state;

static void on_state(hubu_client *c, hubu_client_state st, int code, const char *reason, void *ud) {
  (void)c;
  (void)ud;
  fprintf(stderr, "  client state %s code %d %s\n", hubu_client_state_name(st), code, reason ? reason : "");
}

static void on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)c;
  rc_state *rs = ud;
  rs->readies++;
  fprintf(stderr, "  READY #%d conn_id %llu\n", rs->readies, (unsigned long long)info->conn_id);
}

static void on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud) {
  (void)c;
  (void)body;
  (void)len;
  rc_state *rs = ud;
  if (type == HUBU_FRAME_PONG) rs->pongs++;
  if (type == HUBU_FRAME_GOAWAY) rs->goaways++;
}

static void on_closed(void *ud) { ((rc_state *)ud)->closed = 1; }

static int first_session(void *ud) { return hubu_client_sessions(((rc_state *)ud)->c) >= 1; }
static int second_session(void *ud) { return hubu_client_sessions(((rc_state *)ud)->c) >= 2; }
static int got_pong(void *ud) { return ((rc_state *)ud)->pongs > 0; }
static int server_exited(void *ud) {
  rc_state *rs = ud;
  if (!rs->exited) rs->exited = e2e_server_poll(rs->server, &rs->exit_status);
  return rs->exited;
}

static void client_reconnects_to_a_restarted_server_on_the_same_port(void) {
  int port = e2e_free_port();
  REQUIRE(port > 0);
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  e2e_server first, second;
  REQUIRE(e2e_server_start(&first, "--listen", listen, "--drain-ms", "500", NULL) == 0);
  CHECK_EQ(first.port, port);

  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  char tok[HUBU_TOKEN_MAX];
  e2e_token("alice", tok);
  hubu_client_options opt = {0};
  opt.host = "127.0.0.1";
  opt.port = port;
  opt.user_id = "alice";
  opt.device_id = "phone";
  opt.token = tok;
  opt.reconnect = 1;
  opt.backoff_min_ms = 50;
  opt.backoff_max_ms = 200;
  opt.connect_timeout_ms = 2000;
  hubu_client_callbacks cb = {0};
  cb.on_state = on_state;
  cb.on_ready = on_ready;
  cb.on_frame = on_frame;
  rc_state rs = {0};
  rs.server = &first;
  rs.c = hubu_client_new(&loop, &opt, &cb, &rs);
  REQUIRE(rs.c != NULL);
  CHECK(hubu_client_start(rs.c) == 0);
  CHECK(e2e_uv_run_until(&loop, first_session, &rs, 5000));
  CHECK_EQ(hubu_client_sessions(rs.c), 1);

  /* Stop the first server while the loop runs, so the client sees the drain. */
  e2e_server_signal(&first, SIGTERM);
  CHECK(e2e_uv_run_until(&loop, server_exited, &rs, 4000));
  CHECKF(rs.exited && rs.exit_status == 0, "first hubud exit status %d", rs.exit_status);
  e2e_server_cleanup(&first);
  CHECKF(hubu_client_get_state(rs.c) != HUBU_CLIENT_READY && hubu_client_get_state(rs.c) != HUBU_CLIENT_CLOSED,
         "client state %s with the server gone (want a reconnect under way)",
         hubu_client_state_name(hubu_client_get_state(rs.c)));
  fprintf(stderr, "  GOAWAY frames seen by on_frame: %d\n", rs.goaways);

  /* Let the client fail a few attempts against the closed port first. */
  CHECK(!e2e_uv_run_until(&loop, second_session, &rs, 300));
  REQUIRE(e2e_server_start(&second, "--listen", listen, NULL) == 0);
  CHECK(e2e_uv_run_until(&loop, second_session, &rs, 10000));
  CHECK_EQ(hubu_client_sessions(rs.c), 2);
  CHECK_EQ(rs.readies, 2);
  CHECK_EQ(hubu_client_get_state(rs.c), HUBU_CLIENT_READY);
  CHECK(hubu_client_ping(rs.c) == 0);
  CHECK(e2e_uv_run_until(&loop, got_pong, &rs, 3000));

  hubu_client_close(rs.c, on_closed);
  CHECK(e2e_uv_finish(&loop, 5000) == 0);
  CHECK(rs.closed);
  CHECK_SERVER_STOPS_CLEANLY(&second);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(client_reconnects_to_a_restarted_server_on_the_same_port),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

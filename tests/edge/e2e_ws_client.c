/* e2e_ws_client.c — libhubu-client over WebSocket (hubu_client_options.ws_path)
 * against a running hubud: a WebSocket client and a TCP client exchange
 * messages both ways, each gets every message once and in order, and a
 * client refused at the upgrade (a path that is not /ws) reports it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"
#include "harness_uv.h"
#include "hubu_client.h"

#define N_MSGS 200
#define SESSION "d:alice:bob"

typedef struct {
  const char *user, *peer;
  hubu_client *c;
  int ready, stored, received, out_of_order, lost, closing;
  uint64_t last_seq;
  char token[HUBU_TOKEN_MAX];
} side;

static void on_state(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud) {
  (void)c;
  side *s = ud;
  if (!s->closing && (state == HUBU_CLIENT_BACKOFF || state == HUBU_CLIENT_CLOSED)) {
    if (!s->lost) fprintf(stderr, "%s: state %d code %d: %s\n", s->user, (int)state, code, reason ? reason : "");
    s->lost++;
  }
}

static void on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)c, (void)info;
  ((side *)ud)->ready = 1;
}

static void on_stored(hubu_client *c, uint64_t client_id, const char *session_id, uint64_t seq, uint64_t msg_id,
                      int duplicate, void *ud) {
  (void)c, (void)client_id, (void)session_id, (void)seq, (void)msg_id, (void)duplicate;
  ((side *)ud)->stored++;
}

static void on_received(hubu_client *c, const hubu_client_message *m, void *ud) {
  (void)c;
  side *s = ud;
  if (m->seq <= s->last_seq) s->out_of_order++;
  s->last_seq = m->seq;
  if (!strcmp(m->sender, s->peer)) s->received++;
}

static const hubu_client_callbacks callbacks = {
    .on_state = on_state, .on_ready = on_ready, .on_stored = on_stored, .on_received = on_received};

static void side_start(side *s, uv_loop_t *loop, int port, const char *ws_path) {
  e2e_token(s->user, s->token);
  hubu_client_options o;
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  o.port = port;
  o.ws_path = ws_path;
  o.user_id = s->user;
  o.device_id = ws_path ? "web" : "d1";
  o.token = s->token;
  s->c = hubu_client_new(loop, &o, &callbacks, s);
  REQUIRE(s->c);
  REQUIRE(hubu_client_start(s->c) == 0);
}

static int both_ready(void *ud) {
  side *s = ud;
  return (s[0].ready && s[1].ready) || s[0].lost || s[1].lost;
}

static int all_in(void *ud) {
  side *s = ud;
  return (s[0].received == N_MSGS && s[1].received == N_MSGS && s[0].stored == N_MSGS && s[1].stored == N_MSGS) ||
         s[0].lost || s[1].lost;
}

static int lost_one(void *ud) { return ((side *)ud)->lost > 0; }

static void ws_client_and_tcp_client_exchange_messages_in_order(void) {
  e2e_server srv;
  REQUIRE(e2e_server_start(&srv, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  side s[2] = {{.user = "alice", .peer = "bob"}, {.user = "bob", .peer = "alice"}};
  side_start(&s[0], &loop, srv.http_port, "/ws");
  side_start(&s[1], &loop, srv.port, NULL);
  CHECK(e2e_uv_run_until(&loop, both_ready, s, 5000) && s[0].ready && s[1].ready);
  for (int i = 0; i < N_MSGS; i++) {
    char body[32];
    int n = snprintf(body, sizeof body, "m%d", i);
    CHECK(hubu_client_send_message(s[0].c, SESSION, (const uint8_t *)body, (size_t)n, NULL, 0, NULL, NULL) != 0);
    CHECK(hubu_client_send_message(s[1].c, SESSION, (const uint8_t *)body, (size_t)n, NULL, 0, NULL, NULL) != 0);
  }
  e2e_uv_run_until(&loop, all_in, s, 15000);
  for (int i = 0; i < 2; i++) {
    CHECKF(s[i].received == N_MSGS, "%s received %d of %d", s[i].user, s[i].received, N_MSGS);
    CHECKF(s[i].stored == N_MSGS, "%s stored %d of %d", s[i].user, s[i].stored, N_MSGS);
    CHECK_EQ(s[i].out_of_order, 0);
    CHECK_EQ(s[i].lost, 0);
    s[i].closing = 1;
    hubu_client_close(s[i].c, NULL);
  }
  CHECK_EQ(e2e_uv_finish(&loop, 5000), 0);
  CHECK_SERVER_STOPS_CLEANLY(&srv);
}

static void upgrade_refused_is_reported_as_a_loss(void) {
  e2e_server srv;
  REQUIRE(e2e_server_start(&srv, NULL) == 0);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  side s = {.user = "alice", .peer = "bob"};
  side_start(&s, &loop, srv.http_port, "/nothing"); /* answered 404 */
  CHECK(e2e_uv_run_until(&loop, lost_one, &s, 5000));
  CHECK(!s.ready);
  s.closing = 1;
  hubu_client_close(s.c, NULL);
  CHECK_EQ(e2e_uv_finish(&loop, 5000), 0);
  CHECK_SERVER_STOPS_CLEANLY(&srv);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(ws_client_and_tcp_client_exchange_messages_in_order),
      E2E_CASE(upgrade_refused_is_reported_as_a_loss),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

/* core_hooks.c — the seam between core and the plugins (runtime/core/
 * hooks.h): a dispatch function stands in for the plugin host. A SEND
 * rejected by message.send reaches the client's SEND_ACK with its code and
 * retry_after_ms and stores nothing; a message.route plan decides per member
 * between PUSH, PULL_HINT and nothing, and can add recipients; message.stored
 * runs once per stored message; connect/disconnect bracket a READY peer. */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "delivery.h"
#include "messaging.h"
#include "presence.h"

#define DIRECT "d:alice:bob"

/* What the stand-in host does and saw. */
typedef struct {
  /* message.send: reject every SEND with this code (OK: let it through) */
  Hubu__V1__Code reject_code;
  uint32_t reject_retry_after_ms;
  /* message.route: when route_users is set, a plan with these overrides */
  int route;
  uint8_t route_default;
  const char *route_users[4];
  uint8_t route_modes[4];
  uint8_t route_extra[4];
  size_t route_n;
  /* what was dispatched */
  unsigned sends, routes, stored, connects, disconnects;
  char send_user[65], send_device[65], send_session[129];
  uint64_t send_client_id;
  uint64_t stored_seqs[16];
} test_host;

static int test_dispatch(void *host, hubu_hook_call *call) {
  test_host *h = host;
  switch (call->event) {
    case HUBU_HOOK_SEND:
      h->sends++;
      snprintf(h->send_user, sizeof h->send_user, "%s", call->user);
      snprintf(h->send_device, sizeof h->send_device, "%s", call->device);
      snprintf(h->send_session, sizeof h->send_session, "%s", call->session_id);
      h->send_client_id = call->client_id;
      if (h->reject_code == HUBU__V1__CODE__OK) return 0; /* no verdict: the default applies */
      call->verdict.code = h->reject_code;
      snprintf(call->verdict.reason, sizeof call->verdict.reason, "slow down");
      call->verdict.retry_after_ms = h->reject_retry_after_ms;
      return 1;
    case HUBU_HOOK_ROUTE:
      h->routes++;
      if (!h->route) return 0;
      call->plan.default_mode = h->route_default;
      call->plan.n = h->route_n;
      call->plan.users = calloc(h->route_n ? h->route_n : 1, sizeof *call->plan.users);
      call->plan.modes = calloc(h->route_n ? h->route_n : 1, 1);
      call->plan.extra = calloc(h->route_n ? h->route_n : 1, 1);
      for (size_t i = 0; i < h->route_n; i++) {
        call->plan.users[i] = strdup(h->route_users[i]);
        call->plan.modes[i] = h->route_modes[i];
        call->plan.extra[i] = h->route_extra[i];
      }
      return 1;
    case HUBU_HOOK_STORED:
      if (h->stored < 16) h->stored_seqs[h->stored] = call->msg->seq;
      h->stored++;
      return 1;
    case HUBU_HOOK_CONNECT: h->connects++; return 1;
    case HUBU_HOOK_DISCONNECT: h->disconnects++; return 1;
    case HUBU_HOOK_READ: call->allowed = 1; return 1;
  }
  return 0;
}

static void plug(core_fixture *fx, test_host *h) {
  memset(h, 0, sizeof *h);
  fx->core.hooks.dispatch = test_dispatch;
  fx->core.hooks.host = h;
}

static void send_hook_rejection_reaches_send_ack_and_stores_nothing(void) {
  core_fixture fx;
  test_host host;
  test_peer a, b;
  if (fx_open(&fx, NULL) != 0) goto out;
  plug(&fx, &host);
  tp_connect(&fx, &a, "alice", "phone");
  tp_connect(&fx, &b, "bob", "phone");
  host.reject_code = HUBU__V1__CODE__REJECTED;
  host.reject_retry_after_ms = 2500;
  tp_send(&a, 1, DIRECT, "spam");
  fx_settle(&fx);

  CHECK_EQ_U64(host.sends, 1);
  CHECK_EQ_STR(host.send_user, "alice");
  CHECK_EQ_STR(host.send_device, "phone");
  CHECK_EQ_STR(host.send_session, DIRECT);
  CHECK_EQ_U64(host.send_client_id, 1);
  Hubu__V1__SendAck *ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__REJECTED);
    CHECK_EQ_U64(ack->retry_after_ms, 2500);
    CHECK_EQ_STR(ack->reason, "slow down");
    CHECK_EQ_U64(ack->client_id, 1);
    CHECK_EQ_U64(ack->seq, 0);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 0);
  CHECK_EQ_U64(host.routes + host.stored, 0); /* nothing was stored, nothing routed */
  CHECK_EQ_U64(tp_pushed(&b, NULL, NULL, 0), 0);
  CHECK_EQ_U64(a.peer.dev->assigned, 0); /* the client_id is given back */

  /* Let it through: the same client_id is stored. */
  tp_discard(&a);
  host.reject_code = HUBU__V1__CODE__OK;
  tp_send(&a, 1, DIRECT, "fine");
  fx_settle(&fx);
  ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK);
    CHECK_EQ_U64(ack->retry_after_ms, 0);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 1);
  CHECK_EQ_U64(tp_pushed(&b, NULL, NULL, 0), 1);

  /* RATE_LIMITED carries its wait the same way. */
  tp_discard(&a);
  host.reject_code = HUBU__V1__CODE__RATE_LIMITED;
  host.reject_retry_after_ms = 750;
  tp_send(&a, 2, DIRECT, "too fast");
  fx_settle(&fx);
  ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__RATE_LIMITED);
    CHECK_EQ_U64(ack->retry_after_ms, 750);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 1);
  tp_close(&a);
  tp_close(&b);
out:
  fx_close(&fx);
}

static void route_plan_hint_gives_that_member_a_pull_hint_instead_of_a_push(void) {
  core_fixture fx;
  test_host host;
  test_peer a, laptop, b;
  char sessions[4][32];
  uint64_t seqs[4];
  if (fx_open(&fx, NULL) != 0) goto out;
  plug(&fx, &host);
  tp_connect(&fx, &a, "alice", "phone");
  tp_connect(&fx, &laptop, "alice", "laptop");
  tp_connect(&fx, &b, "bob", "phone");
  host.route = 1;
  host.route_default = HUBU_ROUTE_PUSH;
  host.route_users[0] = "bob";
  host.route_modes[0] = HUBU_ROUTE_HINT;
  host.route_n = 1;

  tp_send(&a, 1, DIRECT, "hinted");
  tp_send(&a, 2, DIRECT, "hinted too");
  fx_settle(&fx);
  CHECK_EQ_U64(host.routes, 2);
  CHECK_EQ_U64(tp_pushed(&b, NULL, NULL, 0), 0);
  CHECK(b.peer.inflight == NULL);
  CHECK(b.peer.hints != NULL);
  hubu_delivery_write_hints(&b.peer);                  /* the flush */
  CHECK_EQ_U64(tp_count(&b, HUBU_FRAME_PULL_HINT), 1); /* coalesced */
  Hubu__V1__PullHint *h = tp_pull_hint(&b, 0);
  if (CHECK(h != NULL)) {
    CHECK_EQ_STR(h->session_id, DIRECT);
    CHECK_EQ_U64(h->max_seq, 2);
    hubu__v1__pull_hint__free_unpacked(h, NULL);
  }
  /* The default mode still pushes to alice's other device. */
  if (CHECK_EQ_U64(tp_pushed(&laptop, seqs, sessions, 4), 2)) CHECK(seqs[0] == 1 && seqs[1] == 2);

  /* With no plan (no handler ran) bob is pushed to again. */
  tp_flush(&b);
  host.route = 0;
  tp_send(&a, 3, DIRECT, "pushed");
  fx_settle(&fx);
  if (CHECK_EQ_U64(tp_pushed(&b, seqs, sessions, 4), 1)) CHECK_EQ_U64(seqs[0], 3);
  CHECK(b.peer.hints == NULL);
  tp_close(&a);
  tp_close(&laptop);
  tp_close(&b);
out:
  fx_close(&fx);
}

static void route_plan_none_skips_a_member_and_extra_adds_a_recipient(void) {
  core_fixture fx;
  test_host host;
  test_peer a, b, carol, dave;
  uint64_t seqs[4];
  char sessions[4][32];
  if (fx_open(&fx, NULL) != 0) goto out;
  plug(&fx, &host);
  tp_connect(&fx, &a, "alice", "phone");
  tp_connect(&fx, &b, "bob", "phone");
  tp_connect(&fx, &carol, "carol", "phone");
  tp_connect(&fx, &dave, "dave", "phone");
  host.route = 1;
  host.route_default = HUBU_ROUTE_PUSH;
  host.route_users[0] = "bob"; /* a member: nothing for him */
  host.route_modes[0] = HUBU_ROUTE_NONE;
  host.route_users[1] = "carol"; /* not a member: added */
  host.route_modes[1] = HUBU_ROUTE_PUSH;
  host.route_extra[1] = 1;
  host.route_users[2] = "dave"; /* not a member, override without ev:add: nothing */
  host.route_modes[2] = HUBU_ROUTE_PUSH;
  host.route_n = 3;
  tp_send(&a, 1, DIRECT, "for carol");
  fx_settle(&fx);
  CHECK_EQ_U64(tp_pushed(&b, NULL, NULL, 0), 0);
  CHECK(b.peer.hints == NULL);
  if (CHECK_EQ_U64(tp_pushed(&carol, seqs, sessions, 4), 1)) CHECK_EQ_STR(sessions[0], DIRECT);
  CHECK_EQ_U64(tp_pushed(&dave, NULL, NULL, 0), 0);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 1); /* stored all the same */
  tp_close(&a);
  tp_close(&b);
  tp_close(&carol);
  tp_close(&dave);
out:
  fx_close(&fx);
}

static void stored_hook_runs_once_per_stored_message(void) {
  core_fixture fx;
  test_host host;
  test_peer a;
  if (fx_open(&fx, NULL) != 0) goto out;
  plug(&fx, &host);
  tp_connect(&fx, &a, "alice", "phone");
  tp_send(&a, 1, DIRECT, "one");
  tp_send(&a, 1, DIRECT, "one"); /* a retry while queued */
  tp_send(&a, 2, DIRECT, "two");
  fx_settle(&fx);
  tp_send(&a, 2, DIRECT, "two"); /* a retry after the store */
  tp_send(&a, 3, "g:nosuch", "refused");
  fx_settle(&fx);
  uint64_t seq = 0, msg_id = 0; /* another writer stored client_id 9 in a session this core has not loaded */
  CHECK_EQ_U64(fx_other_writer_send(&fx, "alice", "phone", 9, "d:alice:carol", &seq, &msg_id), HUBU__V1__CODE__OK);
  tp_send(&a, 9, "d:alice:carol", "nine"); /* the store answers DUPLICATE */
  fx_settle(&fx);
  Hubu__V1__SendAck *dup = tp_send_ack(&a, tp_count(&a, HUBU_FRAME_SEND_ACK) - 1);
  if (CHECK(dup != NULL)) {
    CHECK(dup->duplicate && dup->seq == seq);
    hubu__v1__send_ack__free_unpacked(dup, NULL);
  }
  CHECK_EQ_U64(host.stored, 2);
  CHECK(host.stored_seqs[0] == 1 && host.stored_seqs[1] == 2);
  CHECK_EQ_U64(host.routes, 2);
  tp_close(&a);
out:
  fx_close(&fx);
}

static void connect_and_disconnect_hooks_bracket_a_ready_peer(void) {
  core_fixture fx;
  test_host host;
  test_peer a, early;
  if (fx_open(&fx, NULL) != 0) goto out;
  plug(&fx, &host);
  tp_init(&fx, &early, "alice", "tablet");
  hubu_messaging_hello(&early.peer);
  tp_close(&early); /* gone before its HELLO_OK */
  fx_settle(&fx);
  CHECK_EQ_U64(host.connects, 0);
  CHECK_EQ_U64(host.disconnects, 0);
  tp_connect(&fx, &a, "alice", "phone");
  CHECK_EQ_U64(host.connects, 1);
  CHECK_EQ_U64(host.disconnects, 0);
  tp_close(&a);
  CHECK_EQ_U64(host.disconnects, 1);
out:
  fx_close(&fx);
}

static const core_case cases[] = {
    CORE_CASE(send_hook_rejection_reaches_send_ack_and_stores_nothing),
    CORE_CASE(route_plan_hint_gives_that_member_a_pull_hint_instead_of_a_push),
    CORE_CASE(route_plan_none_skips_a_member_and_extra_adds_a_recipient),
    CORE_CASE(stored_hook_runs_once_per_stored_message),
    CORE_CASE(connect_and_disconnect_hooks_bracket_a_ready_peer),
};

int main(int argc, char **argv) { return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

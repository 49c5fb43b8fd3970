/* core_devices.c — per-device state in core (runtime/core/presence.c and the
 * device parts of messaging.c): delivered cursors only move forward and are
 * saved once; a device lives while it has cursors to save; HELLO_OK waits for
 * the device's stored high-water mark; `assigned` moves when a SEND is
 * queued and `durable` when it is stored; a refused SEND uses up nothing. */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "delivery.h"
#include "messaging.h"
#include "presence.h"

#define DIRECT "d:alice:bob"

static int64_t cursor_row(core_fixture *fx, const char *user, const char *device, const char *session_id) {
  return fx_db_int(fx,
                   "SELECT coalesce(max(delivered_seq), -2) FROM cursors WHERE user_id = %Q AND device_id = %Q"
                   " AND session_id = %Q",
                   user, device, session_id);
}

static void cursor_moves_only_forward_and_marks_dirty(void) {
  core_fixture fx;
  int dirty = 0;
  if (fx_open(&fx, NULL) != 0) goto out;
  hubu_device *d = hubu_device_acquire(&fx.core, "alice", "phone");
  if (!CHECK(d != NULL)) goto out;
  CHECK(!d->cursors_dirty);
  hubu_device_set_cursor(&fx.core, d, DIRECT, 5);
  CHECK_EQ_U64(fx_cursor(d, DIRECT, &dirty), 5);
  CHECK(dirty && d->cursors_dirty);
  hubu_device_set_cursor(&fx.core, d, DIRECT, 3); /* backwards: ignored */
  CHECK_EQ_U64(fx_cursor(d, DIRECT, NULL), 5);
  hubu_device_set_cursor(&fx.core, d, DIRECT, 7);
  CHECK_EQ_U64(fx_cursor(d, DIRECT, NULL), 7);
  hubu_device_set_cursor(&fx.core, d, "g:team", 2); /* per session */
  CHECK_EQ_U64(fx_cursor(d, "g:team", NULL), 2);
  CHECK_EQ_U64(fx_cursor(d, DIRECT, NULL), 7);

  hubu_presence_save_cursors(&fx.core);
  CHECK(!d->cursors_dirty);
  CHECK_EQ_U64(fx_cursor(d, DIRECT, &dirty), 7);
  CHECK(!dirty);
  hubu_device_set_cursor(&fx.core, d, DIRECT, 7); /* the same seq: nothing to save */
  hubu_device_set_cursor(&fx.core, d, DIRECT, 6);
  CHECK_EQ_U64(fx_cursor(d, DIRECT, &dirty), 7);
  CHECK(!dirty && !d->cursors_dirty);
  hubu_device_set_cursor(&fx.core, d, DIRECT, 8);
  CHECK_EQ_U64(fx_cursor(d, DIRECT, &dirty), 8);
  CHECK(dirty && d->cursors_dirty);
  hubu_presence_save_cursors(&fx.core);
  fx_settle(&fx);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", DIRECT), 8);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", "g:team"), 2);
  hubu_device_release(&fx.core, d);
out:
  fx_close(&fx);
}

static void save_cursors_submits_each_dirty_cursor_once(void) {
  core_fixture fx;
  if (fx_open(&fx, NULL) != 0) goto out;
  hubu_device *phone = hubu_device_acquire(&fx.core, "alice", "phone");
  hubu_device *laptop = hubu_device_acquire(&fx.core, "alice", "laptop");
  hubu_device_set_cursor(&fx.core, phone, DIRECT, 5);
  hubu_device_set_cursor(&fx.core, laptop, DIRECT, 4);
  hubu_device_set_cursor(&fx.core, laptop, "g:team", 9);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", DIRECT), (uint64_t)-2); /* saved lazily */
  hubu_presence_save_cursors(&fx.core);
  fx_settle(&fx);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", DIRECT), 5);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "laptop", DIRECT), 4);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "laptop", "g:team"), 9);

  /* Mark the rows behind core's back: a second save with nothing new must
   * not write them again (the store keeps the larger value, so a resubmitted
   * cursor would show). */
  CHECK_EQ_U64(fx_db_exec(&fx, "UPDATE cursors SET delivered_seq = 1"), 0);
  hubu_presence_save_cursors(&fx.core);
  fx_settle(&fx);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", DIRECT), 1);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "laptop", DIRECT), 1);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "laptop", "g:team"), 1);

  /* Only the cursor that moved goes out. */
  hubu_device_set_cursor(&fx.core, laptop, "g:team", 10);
  hubu_presence_save_cursors(&fx.core);
  fx_settle(&fx);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "laptop", "g:team"), 10);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "laptop", DIRECT), 1);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", DIRECT), 1);
  hubu_device_release(&fx.core, phone);
  hubu_device_release(&fx.core, laptop);
out:
  fx_close(&fx);
}

static void device_with_unsaved_cursors_outlives_its_last_reference(void) {
  core_fixture fx;
  if (fx_open(&fx, NULL) != 0) goto out;
  hubu_device *d = hubu_device_acquire(&fx.core, "alice", "phone");
  CHECK(hubu_device_acquire(&fx.core, "alice", "phone") == d); /* one device per (user, device) */
  CHECK_EQ_U64(d->refs, 2);
  hubu_device_release(&fx.core, d);
  hubu_device_set_cursor(&fx.core, d, DIRECT, 3);
  hubu_device_release(&fx.core, d); /* the last reference, with a cursor unsaved */
  d = fx_device(&fx, "alice", "phone");
  if (CHECK(d != NULL)) CHECK_EQ_U64(fx_cursor(d, DIRECT, NULL), 3);
  hubu_presence_save_cursors(&fx.core); /* saved: now it may go */
  CHECK(fx_device(&fx, "alice", "phone") == NULL);
  fx_settle(&fx);
  CHECK_EQ_U64(cursor_row(&fx, "alice", "phone", DIRECT), 3);

  /* Without cursors the last release frees it at once. */
  d = hubu_device_acquire(&fx.core, "alice", "laptop");
  hubu_device_release(&fx.core, d);
  CHECK(fx_device(&fx, "alice", "laptop") == NULL);
out:
  fx_close(&fx);
}

static void deliver_ack_frame_retires_the_window_and_moves_the_cursor(void) {
  core_fixture fx;
  test_peer alice, bob;
  if (fx_open(&fx, NULL) != 0) goto out;
  tp_connect(&fx, &alice, "alice", "phone");
  tp_connect(&fx, &bob, "bob", "phone");
  tp_send(&alice, 1, DIRECT, "one");
  tp_send(&alice, 2, DIRECT, "two");
  tp_send(&alice, 3, DIRECT, "three");
  fx_settle(&fx);
  CHECK_EQ_U64(bob.peer.inflight ? bob.peer.inflight->len : 0, 3);
  tp_deliver_ack(&bob, DIRECT, 2);
  CHECK_EQ_U64(bob.peer.inflight ? bob.peer.inflight->len : 0, 1);
  CHECK_EQ_U64(fx_cursor(bob.peer.dev, DIRECT, NULL), 2);
  tp_deliver_ack(&bob, DIRECT, 1); /* an older cursor moves nothing back */
  CHECK_EQ_U64(fx_cursor(bob.peer.dev, DIRECT, NULL), 2);
  tp_deliver_ack(&bob, "not a session", 9); /* malformed: skipped */
  CHECK(fx_cursor(bob.peer.dev, "not a session", NULL) == 0);
  tp_deliver_ack(&bob, DIRECT, 3);
  CHECK(bob.peer.inflight == NULL);
  hubu_presence_save_cursors(&fx.core);
  fx_settle(&fx);
  CHECK_EQ_U64(cursor_row(&fx, "bob", "phone", DIRECT), 3);

  /* A body that does not decode goes to the transport's bad_body. */
  hubu_frame f = {.header = {HUBU_FRAME_VERSION, HUBU_FRAME_DELIVER_ACK, 0, 3},
                  .body = (const uint8_t *)"\xff\xff\xff",
                  .size = HUBU_FRAME_HEADER_SIZE + 3};
  hubu_messaging_deliver_ack(&bob.peer, &f);
  CHECK_EQ_U64(bob.bad_bodies, 1);
  tp_close(&alice);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void hello_waits_for_the_devices_stored_high_water_mark(void) {
  core_fixture fx;
  test_peer a, b;
  if (fx_open(&fx, NULL) != 0) goto out;
  uint64_t seq = 0, msg_id = 0; /* an earlier hubud stored these: seqs 1, 2, 3 */
  CHECK_EQ_U64(fx_other_writer_send(&fx, "alice", "phone", 3, DIRECT, &seq, &msg_id), HUBU__V1__CODE__OK);
  CHECK_EQ_U64(fx_other_writer_send(&fx, "alice", "phone", 7, DIRECT, &seq, &msg_id), HUBU__V1__CODE__OK);
  CHECK_EQ_U64(seq, 2);
  CHECK_EQ_U64(fx_other_writer_send(&fx, "alice", "laptop", 40, DIRECT, &seq, &msg_id), HUBU__V1__CODE__OK);

  tp_init(&fx, &a, "alice", "phone");
  hubu_messaging_hello(&a.peer);
  CHECK_EQ_U64(a.peer.state, HUBU_PEER_AUTHING); /* waiting for the device load */
  CHECK_EQ_U64(tp_count(&a, HUBU_FRAME_HELLO_OK), 0);
  CHECK(hubu_core_peer_find(&fx.core, "alice", a.peer.id) == NULL); /* not online before HELLO_OK */
  fx_settle(&fx);
  CHECK_EQ_U64(a.peer.state, HUBU_PEER_READY);
  CHECK_EQ_U64(a.resumes, 1); /* held input is processed now */
  Hubu__V1__HelloOk *ok = tp_hello_ok(&a, 0);
  if (CHECK(ok != NULL)) {
    CHECK_EQ_U64(ok->last_client_id, 7); /* this device's, not the laptop's */
    CHECK_EQ_U64(ok->conn_id, a.peer.id);
    CHECK_EQ_U64(ok->max_frame, fx.core.cfg.max_frame);
    CHECK_EQ_U64(ok->heartbeat_ms, fx.core.cfg.heartbeat_ms);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  hubu_device *d = a.peer.dev;
  if (CHECK(d != NULL)) {
    CHECK_EQ_U64(d->durable, 7);
    CHECK_EQ_U64(d->assigned, 7);
  }
  CHECK(hubu_core_peer_find(&fx.core, "alice", a.peer.id) == &a.peer);

  /* A second connection of a loaded device gets HELLO_OK at once. */
  tp_init(&fx, &b, "alice", "phone");
  hubu_messaging_hello(&b.peer);
  CHECK_EQ_U64(b.peer.state, HUBU_PEER_READY);
  CHECK_EQ_U64(b.resumes, 0); /* nothing was held back */
  ok = tp_hello_ok(&b, 0);
  if (CHECK(ok != NULL)) {
    CHECK_EQ_U64(ok->last_client_id, 7);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  CHECK(b.peer.dev == d);

  /* The mark decides what a SEND is: 7 is a retry, 5 is stale, 8 is new. */
  tp_flush(&a);
  tp_send(&a, 7, DIRECT, "retry");
  tp_send(&a, 5, DIRECT, "stale");
  tp_send(&a, 8, DIRECT, "new");
  fx_settle(&fx);
  Hubu__V1__SendAck *acks[3] = {tp_send_ack(&a, 0), tp_send_ack(&a, 1), tp_send_ack(&a, 2)};
  if (CHECK(acks[0] && acks[1] && acks[2])) {
    /* The new one is answered by its own completion; sort by client_id. */
    Hubu__V1__SendAck *by[9] = {0};
    for (int i = 0; i < 3; i++)
      if (acks[i]->client_id < 9) by[acks[i]->client_id] = acks[i];
    CHECK(by[7] && by[7]->code == HUBU__V1__CODE__OK && by[7]->duplicate && by[7]->seq == 2);
    CHECK(by[5] && by[5]->code == HUBU__V1__CODE__STALE);
    CHECK(by[8] && by[8]->code == HUBU__V1__CODE__OK && !by[8]->duplicate && by[8]->seq == 4);
  }
  for (int i = 0; i < 3; i++)
    if (acks[i]) hubu__v1__send_ack__free_unpacked(acks[i], NULL);
  tp_close(&a);
  tp_close(&b);
out:
  fx_close(&fx);
}

static void sends_raise_assigned_at_once_and_durable_once_stored(void) {
  core_fixture fx;
  test_peer a, later;
  if (fx_open(&fx, NULL) != 0 || tp_connect(&fx, &a, "alice", "phone") != 0) goto out;
  hubu_device *d = a.peer.dev;
  CHECK_EQ_U64(d->durable, 0);
  CHECK_EQ_U64(d->assigned, 0);
  tp_send(&a, 1, DIRECT, "one");
  tp_send(&a, 2, DIRECT, "two");
  CHECK_EQ_U64(d->assigned, 2); /* accepted: a retry of 1 or 2 is recognised from now on */
  CHECK_EQ_U64(d->durable, 0);  /* not stored yet */
  fx_settle(&fx);
  CHECK_EQ_U64(d->assigned, 2);
  CHECK_EQ_U64(d->durable, 2);
  CHECK(d->pending == NULL);

  tp_init(&fx, &later, "alice", "phone"); /* a reconnect: HELLO_OK tells the client its mark */
  hubu_messaging_hello(&later.peer);
  Hubu__V1__HelloOk *ok = tp_hello_ok(&later, 0);
  if (CHECK(ok != NULL)) {
    CHECK_EQ_U64(ok->last_client_id, 2);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  tp_close(&later);
  tp_close(&a);

  /* After a restart the store says the same. */
  fx_restart_core(&fx);
  tp_init(&fx, &later, "alice", "phone");
  hubu_messaging_hello(&later.peer);
  fx_settle(&fx);
  ok = tp_hello_ok(&later, 0);
  if (CHECK(ok != NULL)) {
    CHECK_EQ_U64(ok->last_client_id, 2);
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
  }
  tp_close(&later);
out:
  fx_close(&fx);
}

/* The SEND_ACK code of the nth SEND_ACK in tp's output, or -1. */
static int64_t ack_code(test_peer *tp, size_t nth) {
  Hubu__V1__SendAck *a = tp_send_ack(tp, nth);
  int64_t code = a ? (int64_t)a->code : -1;
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  return code;
}

static void refused_send_gives_its_client_id_back(void) {
  core_fixture fx;
  test_peer a;
  static const char *const club[] = {"bob", "carol"};
  if (fx_open(&fx, NULL) != 0) goto out;
  fx_create_group(&fx, "g:club", club, 2);
  if (tp_connect(&fx, &a, "alice", "phone") != 0) goto out;
  hubu_device *d = a.peer.dev;

  tp_send(&a, 1, "g:club", "let me in"); /* alice is not a member */
  CHECK_EQ_U64(d->assigned, 1);
  fx_settle(&fx);
  CHECK_EQ_U64(ack_code(&a, 0), HUBU__V1__CODE__FORBIDDEN);
  CHECK_EQ_U64(d->assigned, 0); /* given back */
  tp_discard(&a);
  tp_send(&a, 1, "g:nosuch", "anyone?"); /* no such group */
  fx_settle(&fx);
  CHECK_EQ_U64(ack_code(&a, 0), HUBU__V1__CODE__FORBIDDEN);
  CHECK_EQ_U64(d->assigned, 0);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 0);

  tp_discard(&a);
  tp_send(&a, 1, DIRECT, "hi bob"); /* the same client_id is new again */
  fx_settle(&fx);
  CHECK_EQ_U64(ack_code(&a, 0), HUBU__V1__CODE__OK);
  CHECK_EQ_U64(d->assigned, 1);
  CHECK_EQ_U64(d->durable, 1);

  /* A refusal below a higher accepted client_id leaves the mark where it is. */
  tp_discard(&a);
  tp_send(&a, 2, "g:club", "again");
  tp_send(&a, 3, DIRECT, "three");
  CHECK_EQ_U64(d->assigned, 3);
  fx_settle(&fx);
  CHECK_EQ_U64(d->assigned, 3);
  CHECK_EQ_U64(d->durable, 3);
  tp_close(&a);
out:
  fx_close(&fx);
}

static void invalid_send_is_refused_at_once_and_uses_up_nothing(void) {
  core_fixture fx;
  test_peer a;
  if (fx_open(&fx, NULL) != 0 || tp_connect(&fx, &a, "alice", "phone") != 0) goto out;
  hubu_device *d = a.peer.dev;
  tp_send(&a, 0, DIRECT, "zero");            /* client_id starts at 1 */
  tp_send(&a, 1, "d:bob:alice", "unsorted"); /* malformed */
  tp_send(&a, 2, "d:bob:carol", "theirs");   /* someone else's direct chat */
  /* Answered without the store: before the loop runs. */
  CHECK_EQ_U64(tp_count(&a, HUBU_FRAME_SEND_ACK), 3);
  CHECK_EQ_U64(ack_code(&a, 0), HUBU__V1__CODE__INVALID);
  CHECK_EQ_U64(ack_code(&a, 1), HUBU__V1__CODE__INVALID);
  CHECK_EQ_U64(ack_code(&a, 2), HUBU__V1__CODE__FORBIDDEN);
  CHECK_EQ_U64(d->assigned, 0);
  CHECK_EQ_U64(a.peer.sends_unanswered, 0);

  hubu_frame garbage = {.header = {HUBU_FRAME_VERSION, HUBU_FRAME_SEND, 0, 2},
                        .body = (const uint8_t *)"\x0a\x05",
                        .size = HUBU_FRAME_HEADER_SIZE + 2};
  hubu_messaging_send(&a.peer, &garbage);
  CHECK_EQ_U64(a.bad_bodies, 1);
  CHECK_EQ_U64(d->assigned, 0);
  fx_settle(&fx);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 0);
  tp_discard(&a);
  tp_send(&a, 1, DIRECT, "first"); /* nothing was used up */
  fx_settle(&fx);
  CHECK_EQ_U64(ack_code(&a, 0), HUBU__V1__CODE__OK);
  tp_close(&a);
out:
  fx_close(&fx);
}

static const core_case cases[] = {
    CORE_CASE(cursor_moves_only_forward_and_marks_dirty),
    CORE_CASE(save_cursors_submits_each_dirty_cursor_once),
    CORE_CASE(device_with_unsaved_cursors_outlives_its_last_reference),
    CORE_CASE(deliver_ack_frame_retires_the_window_and_moves_the_cursor),
    CORE_CASE(hello_waits_for_the_devices_stored_high_water_mark),
    CORE_CASE(sends_raise_assigned_at_once_and_durable_once_stored),
    CORE_CASE(refused_send_gives_its_client_id_back),
    CORE_CASE(invalid_send_is_refused_at_once_and_uses_up_nothing),
};

int main(int argc, char **argv) { return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

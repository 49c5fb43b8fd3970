/* core_send.c — SEND through core with a real store: seqs are assigned in
 * client_id order per device, SEND_ACK OK is written only once the message is
 * in the database, a retry is answered with the original seq and stores
 * nothing twice, and a stale client_id is refused. Frames are built by hand
 * and handed to hubu_messaging_send as the transport would. */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "delivery.h"
#include "presence.h"
#include "seq.h"
#include "session.h"

#define DIRECT "d:alice:bob"

static int64_t rows_of(core_fixture *fx, const char *user, const char *device, uint64_t client_id) {
  return fx_db_int(fx, "SELECT count(*) FROM messages WHERE sender = %Q AND sender_device = %Q AND client_id = %lld",
                   user, device, (long long)client_id);
}

static void send_ack_ok_comes_only_after_the_store_has_the_message(void) {
  core_fixture fx;
  test_peer a;
  if (fx_open(&fx, NULL) != 0 || tp_connect(&fx, &a, "alice", "phone") != 0) goto out;

  tp_send(&a, 1, DIRECT, "hello");
  CHECK_EQ_U64(tp_count(&a, HUBU_FRAME_SEND_ACK), 0); /* nothing before the store answered */
  CHECK_EQ_U64(rows_of(&fx, "alice", "phone", 1), 0);
  fx_settle(&fx);
  Hubu__V1__SendAck *ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK);
    CHECK_EQ_U64(ack->client_id, 1);
    CHECK_EQ_STR(ack->session_id, DIRECT);
    CHECK(ack->seq >= 1);
    CHECK(ack->msg_id != 0);
    CHECK(!ack->duplicate);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(rows_of(&fx, "alice", "phone", 1), 1);

  /* The session is loaded now: the append goes to the store at once, the
   * SEND_ACK still waits for its completion on the loop. */
  tp_discard(&a);
  tp_send(&a, 2, DIRECT, "again");
  CHECK_EQ_U64(tp_count(&a, HUBU_FRAME_SEND_ACK), 0);
  CHECK_EQ_U64(a.peer.sends_unanswered, 1);
  fx_settle(&fx);
  CHECK_EQ_U64(tp_count(&a, HUBU_FRAME_SEND_ACK), 1);
  CHECK_EQ_U64(a.peer.sends_unanswered, 0);
  /* Each SEND_ACK OK was checked against the database the moment core wrote it. */
  CHECK_EQ_U64(a.acks_checked, 2);
  CHECK_EQ_U64(a.acks_not_durable, 0);
  tp_close(&a);
out:
  fx_close(&fx);
}

/* Appends the (client_id, seq) of every SEND_ACK OK in tp's output. */
static size_t acked(test_peer *tp, uint64_t *client_ids, uint64_t *seqs, size_t max) {
  size_t n = 0;
  Hubu__V1__SendAck *a;
  for (size_t i = 0; (a = tp_send_ack(tp, i)); i++) {
    CHECK_EQ_U64(a->code, HUBU__V1__CODE__OK);
    if (n < max) client_ids[n] = a->client_id, seqs[n] = a->seq;
    n++;
    hubu__v1__send_ack__free_unpacked(a, NULL);
  }
  return n;
}

static void one_device_gets_increasing_seqs_in_client_id_order(void) {
  core_fixture fx;
  test_peer phone, laptop, bob;
  if (fx_open(&fx, NULL) != 0) goto out;
  tp_connect(&fx, &phone, "alice", "phone");
  tp_connect(&fx, &laptop, "alice", "laptop");
  tp_connect(&fx, &bob, "bob", "phone");

  /* Three devices interleave their sends; the session loads meanwhile. */
  tp_send(&phone, 1, DIRECT, "p1");
  tp_send(&laptop, 1, DIRECT, "l1");
  tp_send(&phone, 2, DIRECT, "p2");
  tp_send(&bob, 5, DIRECT, "b5");
  tp_send(&phone, 3, DIRECT, "p3");
  tp_send(&laptop, 4, DIRECT, "l4");
  tp_send(&phone, 10, DIRECT, "p10");
  fx_settle(&fx);
  tp_send(&phone, 11, DIRECT, "p11"); /* on the loaded session */
  tp_send(&bob, 6, DIRECT, "b6");
  fx_settle(&fx);

  uint64_t ids[16], seqs[16];
  const uint64_t want_phone[] = {1, 2, 3, 10, 11};
  if (CHECK_EQ_U64(acked(&phone, ids, seqs, 16), 5)) {
    for (size_t i = 0; i < 5; i++) {
      CHECK_EQ_U64(ids[i], want_phone[i]);
      if (i) CHECK(seqs[i] > seqs[i - 1]);
    }
  }
  if (CHECK_EQ_U64(acked(&laptop, ids, seqs, 16), 2)) CHECK(ids[0] == 1 && ids[1] == 4 && seqs[1] > seqs[0]);
  if (CHECK_EQ_U64(acked(&bob, ids, seqs, 16), 2)) CHECK(ids[0] == 5 && ids[1] == 6 && seqs[1] > seqs[0]);

  /* In the database: 9 messages, 9 distinct seqs, and no pair of one device
   * whose seq order disagrees with its client_id order. */
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages WHERE session_id = %Q", DIRECT), 9);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(DISTINCT seq) FROM messages WHERE session_id = %Q", DIRECT), 9);
  CHECK_EQ_U64(fx_db_int(&fx,
                         "SELECT count(*) FROM messages m1 JOIN messages m2 ON m1.session_id = m2.session_id"
                         " AND m1.sender = m2.sender AND m1.sender_device = m2.sender_device"
                         " AND m1.seq < m2.seq AND m1.client_id >= m2.client_id"),
               0);
  CHECK_EQ_U64(phone.acks_not_durable + laptop.acks_not_durable + bob.acks_not_durable, 0);
  tp_close(&phone);
  tp_close(&laptop);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void retry_of_a_queued_send_is_answered_once_with_the_same_seq(void) {
  core_fixture fx;
  test_peer first, again;
  if (fx_open(&fx, NULL) != 0) goto out;
  tp_connect(&fx, &first, "alice", "phone");
  tp_connect(&fx, &again, "alice", "phone"); /* the same device, reconnected */

  tp_send(&first, 1, DIRECT, "hello");
  tp_send(&first, 1, DIRECT, "hello"); /* retried while the first is queued */
  tp_send(&again, 1, DIRECT, "hello"); /* ... and from the new connection */
  CHECK_EQ_U64(tp_count(&first, HUBU_FRAME_SEND_ACK) + tp_count(&again, HUBU_FRAME_SEND_ACK), 0);
  fx_settle(&fx);

  /* One answer per SEND: the original, then the retry as a duplicate. */
  CHECK_EQ_U64(tp_count(&first, HUBU_FRAME_SEND_ACK), 2);
  CHECK_EQ_U64(tp_count(&again, HUBU_FRAME_SEND_ACK), 1);
  Hubu__V1__SendAck *a0 = tp_send_ack(&first, 0), *a1 = tp_send_ack(&first, 1), *b0 = tp_send_ack(&again, 0);
  if (CHECK(a0 && a1 && b0)) {
    CHECK_EQ_U64(a0->code, HUBU__V1__CODE__OK);
    CHECK(!a0->duplicate);
    CHECK_EQ_U64(a1->code, HUBU__V1__CODE__OK);
    CHECK(a1->duplicate);
    CHECK_EQ_U64(b0->code, HUBU__V1__CODE__OK);
    CHECK(b0->duplicate);
    CHECK_EQ_U64(a1->seq, a0->seq);
    CHECK_EQ_U64(b0->seq, a0->seq);
    CHECK_EQ_U64(a1->msg_id, a0->msg_id);
    CHECK_EQ_U64(b0->msg_id, a0->msg_id);
  }
  if (a0) hubu__v1__send_ack__free_unpacked(a0, NULL);
  if (a1) hubu__v1__send_ack__free_unpacked(a1, NULL);
  if (b0) hubu__v1__send_ack__free_unpacked(b0, NULL);
  CHECK_EQ_U64(rows_of(&fx, "alice", "phone", 1), 1);
  CHECK_EQ_U64(first.peer.sends_unanswered, 0);
  CHECK_EQ_U64(again.peer.sends_unanswered, 0);
  tp_close(&first);
  tp_close(&again);
out:
  fx_close(&fx);
}

/* The one SEND_ACK in tp's output: OK, a duplicate, with seq and msg_id. */
static void check_duplicate_ack(test_peer *tp, uint64_t seq, uint64_t msg_id) {
  CHECK_EQ_U64(tp_count(tp, HUBU_FRAME_SEND_ACK), 1);
  Hubu__V1__SendAck *a = tp_send_ack(tp, 0);
  if (!CHECK(a != NULL)) return;
  CHECK_EQ_U64(a->code, HUBU__V1__CODE__OK);
  CHECK(a->duplicate);
  CHECK_EQ_U64(a->seq, seq);
  CHECK_EQ_U64(a->msg_id, msg_id);
  CHECK_EQ_STR(a->session_id, DIRECT);
  hubu__v1__send_ack__free_unpacked(a, NULL);
}

static void retry_of_a_stored_send_is_a_duplicate_even_after_restart(void) {
  core_fixture fx;
  test_peer a, b;
  uint64_t seq = 0, msg_id = 0;
  if (fx_open(&fx, NULL) != 0 || tp_connect(&fx, &a, "alice", "phone") != 0) goto out;
  tp_send(&a, 1, DIRECT, "one");
  tp_send(&a, 2, DIRECT, "two");
  fx_settle(&fx);
  Hubu__V1__SendAck *first = tp_send_ack(&a, 0);
  if (CHECK(first != NULL)) {
    seq = first->seq;
    msg_id = first->msg_id;
    hubu__v1__send_ack__free_unpacked(first, NULL);
  }
  tp_discard(&a);

  tp_send(&a, 1, DIRECT, "one"); /* answered from the device's recent ACKs, without the store */
  check_duplicate_ack(&a, seq, msg_id);
  tp_close(&a);

  fx_restart_core(&fx); /* nothing in memory: the store must answer */
  if (tp_connect(&fx, &b, "alice", "phone") != 0) goto out;
  tp_send(&b, 1, DIRECT, "one");
  CHECK_EQ_U64(tp_count(&b, HUBU_FRAME_SEND_ACK), 0);
  fx_settle(&fx);
  check_duplicate_ack(&b, seq, msg_id);
  CHECK_EQ_U64(rows_of(&fx, "alice", "phone", 1), 1);
  tp_close(&b);
out:
  fx_close(&fx);
}

static void stale_client_id_gets_stale_and_stores_nothing(void) {
  core_fixture fx;
  test_peer a;
  if (fx_open(&fx, NULL) != 0 || tp_connect(&fx, &a, "alice", "phone") != 0) goto out;
  tp_send(&a, 5, DIRECT, "five");
  fx_settle(&fx);
  tp_discard(&a);

  tp_send(&a, 3, DIRECT, "three"); /* below the high-water mark, never stored */
  fx_settle(&fx);
  Hubu__V1__SendAck *ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__STALE);
    CHECK_EQ_U64(ack->client_id, 3);
    CHECK_EQ_U64(ack->seq, 0);
    CHECK(!ack->duplicate);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(rows_of(&fx, "alice", "phone", 3), 0);
  CHECK_EQ_U64(fx_device(&fx, "alice", "phone")->assigned, 5); /* a stale SEND moves nothing */

  tp_discard(&a);
  tp_send(&a, 6, DIRECT, "six"); /* the next client_id still works */
  fx_settle(&fx);
  ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK);
    CHECK(!ack->duplicate);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 2);
  tp_close(&a);
out:
  fx_close(&fx);
}

static void send_is_pushed_to_every_other_connection_of_the_members(void) {
  core_fixture fx;
  test_peer sender, laptop, bob1, bob2, carol;
  if (fx_open(&fx, NULL) != 0) goto out;
  tp_connect(&fx, &sender, "alice", "phone");
  tp_connect(&fx, &laptop, "alice", "laptop");
  tp_connect(&fx, &bob1, "bob", "phone");
  tp_connect(&fx, &bob2, "bob", "tablet");
  tp_connect(&fx, &carol, "carol", "phone");

  tp_send(&sender, 1, DIRECT, "hi bob");
  fx_settle(&fx);
  uint64_t seqs[4];
  char sessions[4][32];
  CHECK_EQ_U64(tp_pushed(&sender, seqs, sessions, 4), 0); /* not back to the sending connection */
  CHECK_EQ_U64(tp_pushed(&carol, seqs, sessions, 4), 0);  /* not a member */
  test_peer *recipients[] = {&laptop, &bob1, &bob2};
  for (size_t i = 0; i < 3; i++) {
    if (CHECK_EQ_U64(tp_pushed(recipients[i], seqs, sessions, 4), 1)) {
      CHECK_EQ_U64(seqs[0], 1);
      CHECK_EQ_STR(sessions[0], DIRECT);
    }
    CHECK(recipients[i]->peer.inflight && recipients[i]->peer.inflight->len == 1);
  }
  Hubu__V1__Push *p = tp_push(&bob1, 0);
  if (CHECK(p && p->n_messages == 1)) {
    Hubu__V1__Message *m = p->messages[0];
    CHECK_EQ_STR(m->sender, "alice");
    CHECK_EQ_STR(m->sender_device, "phone");
    CHECK_EQ_U64(m->client_id, 1);
    CHECK(m->body.len == 6 && memcmp(m->body.data, "hi bob", 6) == 0);
  }
  if (p) hubu__v1__push__free_unpacked(p, NULL);
  test_peer *all[] = {&sender, &laptop, &bob1, &bob2, &carol};
  for (size_t i = 0; i < 5; i++) tp_close(all[i]);
out:
  fx_close(&fx);
}

static void send_the_store_already_holds_is_a_duplicate_with_the_stored_seq(void) {
  core_fixture fx;
  test_peer a;
  if (fx_open(&fx, NULL) != 0 || tp_connect(&fx, &a, "alice", "phone") != 0) goto out;
  /* Another writer stored client_id 4 of this device after its HELLO: core's
   * marks do not know it, the store's uniqueness does. */
  uint64_t seq = 0, msg_id = 0;
  CHECK_EQ_U64(fx_other_writer_send(&fx, "alice", "phone", 4, DIRECT, &seq, &msg_id), HUBU__V1__CODE__OK);
  tp_send(&a, 4, DIRECT, "four");
  fx_settle(&fx);
  Hubu__V1__SendAck *ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK);
    CHECK(ack->duplicate);
    CHECK_EQ_U64(ack->seq, seq); /* the stored one, not the seq core had assigned */
    CHECK_EQ_U64(ack->msg_id, msg_id);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(rows_of(&fx, "alice", "phone", 4), 1);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 1);
  tp_close(&a);
out:
  fx_close(&fx);
}

/* A seq allocator (seq.h) standing in for a cluster's: it answers now or
 * later, and may hold the committed watermark below what is stored. */
typedef struct {
  hubu_seq_allocator base;
  int later; /* answer HUBU_SEQ_LATER; the case answers with hubu_seq_answer */
  unsigned asks;
  uint64_t cap; /* settled never reports a watermark above this (0: no cap) */
} test_allocator;

static hubu_seq_result test_next(hubu_seq_allocator *a, hubu_session *sess, uint64_t *seq) {
  test_allocator *t = (test_allocator *)a;
  t->asks++;
  if (t->later) return HUBU_SEQ_LATER;
  *seq = sess->next_seq + 1;
  return HUBU_SEQ_NOW;
}

static uint64_t test_settled(hubu_seq_allocator *a, hubu_session *sess, uint64_t seq) {
  test_allocator *t = (test_allocator *)a;
  uint64_t w = seq > sess->committed_seq ? seq : sess->committed_seq;
  return t->cap && w > t->cap ? t->cap : w;
}

static const hubu_seq_allocator_ops test_allocator_ops = {.next = test_next, .settled = test_settled};

static void seq_allocator_answering_later_keeps_client_id_order(void) {
  core_fixture fx;
  test_peer a, bob;
  test_allocator alloc = {.base = {.ops = &test_allocator_ops}, .later = 1};
  uint64_t seqs[8];
  if (fx_open(&fx, NULL) != 0) goto out;
  fx.core.seq = &alloc.base;
  tp_connect(&fx, &a, "alice", "phone");
  tp_connect(&fx, &bob, "bob", "phone");
  tp_send(&a, 1, DIRECT, "one");
  tp_send(&a, 2, DIRECT, "two");
  tp_send(&a, 3, DIRECT, "three");
  fx_settle(&fx);
  CHECK_EQ_U64(alloc.asks, 1); /* one question at a time per session */
  CHECK_EQ_U64(tp_count(&a, HUBU_FRAME_SEND_ACK), 0);

  hubu_seq_answer(&fx.core, DIRECT, 1, 10); /* a jump: 10 for client_id 1 */
  CHECK_EQ_U64(alloc.asks, 2);
  hubu_seq_answer(&fx.core, DIRECT, 1, 12);
  CHECK_EQ_U64(alloc.asks, 3);
  hubu_seq_answer(&fx.core, DIRECT, 0, 0);  /* none for client_id 3 */
  hubu_seq_answer(&fx.core, DIRECT, 1, 99); /* nobody asked: ignored */
  CHECK_EQ_U64(alloc.asks, 3);
  fx_settle(&fx);

  uint64_t want_seq[] = {10, 12};
  for (size_t i = 0; i < 3; i++) {
    Hubu__V1__SendAck *ack = tp_send_ack(&a, i);
    if (!CHECK(ack != NULL)) continue;
    if (ack->client_id == 3) {
      CHECK_EQ_U64(ack->code, HUBU__V1__CODE__UNAVAILABLE);
      CHECK_EQ_U64(ack->retry_after_ms, 1000);
    } else if (CHECK(ack->client_id == 1 || ack->client_id == 2)) {
      CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK);
      CHECK_EQ_U64(ack->seq, want_seq[ack->client_id - 1]);
    }
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, NULL, 8), 2)) CHECK(seqs[0] == 10 && seqs[1] == 12);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages WHERE seq IN (10, 12)"), 2);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 2);
  CHECK_EQ_U64(a.peer.dev->assigned, 2); /* client_id 3 was given back */

  tp_discard(&a);
  tp_send(&a, 3, DIRECT, "three again");
  fx_settle(&fx);
  hubu_seq_answer(&fx.core, DIRECT, 1, 13);
  fx_settle(&fx);
  Hubu__V1__SendAck *ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK);
    CHECK_EQ_U64(ack->seq, 13);
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  tp_close(&a);
  tp_close(&bob);
out:
  fx_close(&fx);
}

/* The seqs of the nth PULL_RESULT; its max_seq and code through the pointers. */
static size_t pulled(test_peer *tp, size_t nth, uint64_t *seqs, size_t max, uint64_t *max_seq, int64_t *code) {
  Hubu__V1__PullResult *r = tp_pull_result(tp, nth);
  *code = -1;
  if (!r) return 0;
  size_t n = r->n_messages;
  for (size_t i = 0; i < n && i < max; i++) seqs[i] = r->messages[i]->seq;
  *max_seq = r->max_seq;
  *code = r->code;
  hubu__v1__pull_result__free_unpacked(r, NULL);
  return n;
}

static void pull_answers_only_up_to_the_committed_watermark(void) {
  core_fixture fx;
  test_peer a, bob, carol;
  test_allocator alloc = {.base = {.ops = &test_allocator_ops}, .cap = 2};
  uint64_t seqs[8], max_seq = 0;
  int64_t code;
  if (fx_open(&fx, NULL) != 0) goto out;
  fx.core.seq = &alloc.base;
  tp_connect(&fx, &a, "alice", "phone");
  tp_connect(&fx, &bob, "bob", "phone");
  tp_connect(&fx, &carol, "carol", "phone");
  tp_send(&a, 1, DIRECT, "one");
  tp_send(&a, 2, DIRECT, "two");
  tp_send(&a, 3, DIRECT, "three"); /* stored, but above the watermark */
  fx_settle(&fx);
  CHECK_EQ_U64(fx_db_int(&fx, "SELECT count(*) FROM messages"), 3);

  tp_pull(&bob, 7, DIRECT, 0, 0);
  fx_settle(&fx);
  if (CHECK_EQ_U64(pulled(&bob, 0, seqs, 8, &max_seq, &code), 2)) CHECK(seqs[0] == 1 && seqs[1] == 2);
  CHECK_EQ_U64(code, HUBU__V1__CODE__OK);
  CHECK_EQ_U64(max_seq, 2);

  alloc.cap = 0; /* the lower seqs settled: the watermark may move */
  tp_send(&a, 4, DIRECT, "four");
  fx_settle(&fx);
  tp_discard(&bob);
  tp_pull(&bob, 8, DIRECT, 2, 0);
  fx_settle(&fx);
  if (CHECK_EQ_U64(pulled(&bob, 0, seqs, 8, &max_seq, &code), 2)) CHECK(seqs[0] == 3 && seqs[1] == 4);
  CHECK_EQ_U64(max_seq, 4);

  tp_pull(&carol, 9, DIRECT, 0, 0); /* not hers */
  fx_settle(&fx);
  pulled(&carol, 0, seqs, 8, &max_seq, &code);
  CHECK_EQ_U64(code, HUBU__V1__CODE__FORBIDDEN);
  tp_close(&a);
  tp_close(&bob);
  tp_close(&carol);
out:
  fx_close(&fx);
}

static const core_case cases[] = {
    CORE_CASE(send_ack_ok_comes_only_after_the_store_has_the_message),
    CORE_CASE(one_device_gets_increasing_seqs_in_client_id_order),
    CORE_CASE(retry_of_a_queued_send_is_answered_once_with_the_same_seq),
    CORE_CASE(retry_of_a_stored_send_is_a_duplicate_even_after_restart),
    CORE_CASE(stale_client_id_gets_stale_and_stores_nothing),
    CORE_CASE(send_is_pushed_to_every_other_connection_of_the_members),
    CORE_CASE(send_the_store_already_holds_is_a_duplicate_with_the_stored_seq),
    CORE_CASE(seq_allocator_answering_later_keeps_client_id_order),
    CORE_CASE(pull_answers_only_up_to_the_committed_watermark),
};

int main(int argc, char **argv) { return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

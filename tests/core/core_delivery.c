/* core_delivery.c — what one connection is owed (runtime/core/delivery.c):
 * PUSH frames built per loop turn, the inflight window and its limits, the
 * coalesced PULL_HINTs that replace pushes past the window, cumulative
 * DELIVER_ACKs, and retransmission after the ack timeout with an explicit
 * clock. Messages are built as a store completion would hold them. */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "delivery.h"

/* A READY peer of bob that core knows only through its ops. */
static void ready_peer(core_fixture *fx, test_peer *tp) {
  tp_init(fx, tp, "bob", "phone");
  tp->peer.state = HUBU_PEER_READY;
}

/* Pushes seq of session (a new message; the peer takes its own reference). */
static void push(core_fixture *fx, test_peer *tp, const char *session_id, uint64_t seq, size_t body_len) {
  hubu_msg *m = fx_msg(session_id, seq, body_len);
  hubu_delivery_push(&fx->core, &tp->peer, m);
  hubu_msg_unref(m);
}

static uint32_t inflight_len(const test_peer *tp) { return tp->peer.inflight ? tp->peer.inflight->len : 0; }

static void push_to_a_ready_peer_appends_a_push_frame(void) {
  core_fixture fx;
  test_peer bob, waiting, authing, closing;
  if (fx_open(&fx, NULL) != 0) goto out;
  ready_peer(&fx, &bob);
  hubu_msg *m = fx_msg("d:alice:bob", 4, 11);
  hubu_delivery_push(&fx.core, &bob.peer, m);
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PUSH), 1);
  CHECK(bob.wrote_calls >= 1); /* the transport was told to flush */
  Hubu__V1__Push *p = tp_push(&bob, 0);
  if (CHECK(p && p->n_messages == 1)) {
    Hubu__V1__Message *got = p->messages[0];
    CHECK_EQ_STR(got->session_id, "d:alice:bob");
    CHECK_EQ_U64(got->seq, 4);
    CHECK_EQ_U64(got->msg_id, m->msg_id);
    CHECK_EQ_STR(got->sender, "alice");
    CHECK_EQ_STR(got->content_type, "text/plain");
    CHECK_EQ_U64(got->body.len, 11);
    CHECK_EQ_MEM(got->body.data, m->body, 11);
  }
  if (p) hubu__v1__push__free_unpacked(p, NULL);
  CHECK_EQ_U64(inflight_len(&bob), 1);
  CHECK_EQ_U64(bob.peer.inflight ? bob.peer.inflight->bytes : 0, m->push_entry_len);
  CHECK_EQ_U64(m->refs, 2); /* the window holds its own reference */

  /* Only READY peers are pushed to. */
  tp_init(&fx, &waiting, "bob", "tablet");
  tp_init(&fx, &authing, "bob", "watch");
  authing.peer.state = HUBU_PEER_AUTHING;
  tp_init(&fx, &closing, "bob", "car");
  closing.peer.state = HUBU_PEER_CLOSING;
  test_peer *others[] = {&waiting, &authing, &closing};
  for (size_t i = 0; i < 3; i++) {
    hubu_delivery_push(&fx.core, &others[i]->peer, m);
    CHECK_EQ_U64(hubu_buf_size(&others[i]->out), 0);
    CHECK(others[i]->peer.inflight == NULL);
    CHECK(others[i]->peer.hints == NULL);
    tp_close(others[i]);
  }
  hubu_msg_unref(m);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void pushes_in_one_turn_share_one_push_frame_until_output_taken(void) {
  core_fixture fx;
  test_peer bob;
  uint64_t seqs[16];
  char sessions[16][32];
  if (fx_open(&fx, NULL) != 0) goto out;
  ready_peer(&fx, &bob);
  push(&fx, &bob, "d:alice:bob", 1, 5);
  push(&fx, &bob, "g:team", 1, 5);
  push(&fx, &bob, "d:alice:bob", 2, 5);
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PUSH), 1); /* one frame, three messages */
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 16), 3)) {
    CHECK(seqs[0] == 1 && seqs[1] == 1 && seqs[2] == 2);
    CHECK_EQ_STR(sessions[0], "d:alice:bob");
    CHECK_EQ_STR(sessions[1], "g:team");
    CHECK_EQ_STR(sessions[2], "d:alice:bob");
  }

  /* The transport took the output (it is still in the buffer): a new frame. */
  hubu_peer_output_taken(&bob.peer);
  push(&fx, &bob, "d:alice:bob", 3, 5);
  push(&fx, &bob, "d:alice:bob", 4, 5);
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PUSH), 2);
  Hubu__V1__Push *second = tp_push(&bob, 1);
  if (CHECK(second != NULL)) {
    CHECK_EQ_U64(second->n_messages, 2);
    hubu__v1__push__free_unpacked(second, NULL);
  }
  CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 16), 5);

  /* Another frame appended after the PUSH closes it too. */
  tp_flush(&bob);
  push(&fx, &bob, "d:alice:bob", 5, 5);
  Hubu__V1__Ping ping = HUBU__V1__PING__INIT;
  CHECK_EQ_U64(hubu_peer_send(&bob.peer, HUBU_FRAME_PING, &ping.base), 0);
  push(&fx, &bob, "d:alice:bob", 6, 5);
  out_frame frames[8];
  if (CHECK_EQ_U64(tp_frames(&bob, frames, 8), 3)) {
    CHECK_EQ_U64(frames[0].type, HUBU_FRAME_PUSH);
    CHECK_EQ_U64(frames[1].type, HUBU_FRAME_PING);
    CHECK_EQ_U64(frames[2].type, HUBU_FRAME_PUSH);
  }
  CHECK_EQ_U64(inflight_len(&bob), 7);
  tp_close(&bob);
out:
  fx_close(&fx);
}

/* The PULL_HINTs in tp's output as (session, max_seq); returns how many. */
static size_t hints_written(test_peer *tp, char (*sessions)[32], uint64_t *max_seqs, size_t max) {
  size_t n = 0;
  Hubu__V1__PullHint *h;
  for (size_t i = 0; (h = tp_pull_hint(tp, i)); i++, n++) {
    if (n < max) {
      snprintf(sessions[n], sizeof sessions[n], "%s", h->session_id);
      max_seqs[n] = h->max_seq;
    }
    hubu__v1__pull_hint__free_unpacked(h, NULL);
  }
  return n;
}

static uint64_t hinted(char (*sessions)[32], const uint64_t *max_seqs, size_t n, const char *session_id) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(sessions[i], session_id) == 0) return max_seqs[i];
  return 0;
}

static void full_window_turns_pushes_into_one_hint_per_session(void) {
  core_fixture fx;
  test_peer bob;
  hubu_core_config cfg = fx_config();
  cfg.max_inflight = 4;
  if (fx_open(&fx, &cfg) != 0) goto out;
  ready_peer(&fx, &bob);
  push(&fx, &bob, "g:one", 1, 5);
  push(&fx, &bob, "g:one", 2, 5);
  push(&fx, &bob, "g:two", 1, 5);
  push(&fx, &bob, "g:one", 3, 5); /* the window is full now */
  CHECK(bob.peer.hints == NULL);
  push(&fx, &bob, "g:one", 4, 5);
  push(&fx, &bob, "g:two", 2, 5);
  push(&fx, &bob, "g:one", 5, 5);
  push(&fx, &bob, "g:two", 3, 5);
  push(&fx, &bob, "g:three", 9, 5);
  CHECK_EQ_U64(inflight_len(&bob), 4);
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 4);       /* nothing past the window was pushed */
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PULL_HINT), 0); /* hints wait for the flush */

  hubu_delivery_write_hints(&bob.peer);
  CHECK(bob.peer.hints == NULL);
  char sessions[8][32];
  uint64_t max_seqs[8];
  if (CHECK_EQ_U64(hints_written(&bob, sessions, max_seqs, 8), 3)) {
    CHECK_EQ_U64(hinted(sessions, max_seqs, 3, "g:one"), 5);
    CHECK_EQ_U64(hinted(sessions, max_seqs, 3, "g:two"), 3);
    CHECK_EQ_U64(hinted(sessions, max_seqs, 3, "g:three"), 9);
  }
  hubu_delivery_write_hints(&bob.peer); /* written once */
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PULL_HINT), 3);

  /* An ACK frees room: pushing resumes. */
  tp_flush(&bob);
  hubu_delivery_ack(&bob.peer, "g:one", 2);
  CHECK_EQ_U64(inflight_len(&bob), 2);
  push(&fx, &bob, "g:one", 6, 5);
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 1);
  CHECK(bob.peer.hints == NULL);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void full_window_in_bytes_turns_pushes_into_hints(void) {
  core_fixture fx;
  test_peer bob;
  hubu_msg *probe = fx_msg("g:big", 1, 200);
  size_t entry = probe->push_entry_len;
  hubu_msg_unref(probe);
  hubu_core_config cfg = fx_config();
  cfg.max_inflight_bytes = 2 * entry + entry / 2; /* room for two */
  if (fx_open(&fx, &cfg) != 0) goto out;
  ready_peer(&fx, &bob);
  for (uint64_t seq = 1; seq <= 4; seq++) push(&fx, &bob, "g:big", seq, 200);
  CHECK_EQ_U64(inflight_len(&bob), 2);
  CHECK_EQ_U64(bob.peer.inflight ? bob.peer.inflight->bytes : 0, 2 * entry);
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 2);
  hubu_delivery_write_hints(&bob.peer);
  char sessions[4][32];
  uint64_t max_seqs[4];
  if (CHECK_EQ_U64(hints_written(&bob, sessions, max_seqs, 4), 1)) {
    CHECK_EQ_STR(sessions[0], "g:big");
    CHECK_EQ_U64(max_seqs[0], 4);
  }
  tp_flush(&bob);
  hubu_delivery_ack(&bob.peer, "g:big", 1); /* room for one more */
  CHECK_EQ_U64(bob.peer.inflight ? bob.peer.inflight->bytes : 0, entry);
  push(&fx, &bob, "g:big", 5, 200);
  push(&fx, &bob, "g:big", 6, 200);
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 1);
  CHECK_EQ_U64(inflight_len(&bob), 2);
  CHECK(bob.peer.hints != NULL);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void deliver_ack_is_cumulative_per_session_and_frees_an_empty_window(void) {
  core_fixture fx;
  test_peer bob;
  if (fx_open(&fx, NULL) != 0) goto out;
  ready_peer(&fx, &bob);
  push(&fx, &bob, "g:one", 1, 10);
  push(&fx, &bob, "g:two", 1, 20);
  push(&fx, &bob, "g:one", 2, 30);
  push(&fx, &bob, "g:one", 3, 40);
  push(&fx, &bob, "g:two", 2, 50);
  size_t total = bob.peer.inflight ? bob.peer.inflight->bytes : 0;
  hubu_msg *sizes = fx_msg("g:one", 1, 10);
  size_t one_1 = sizes->push_entry_len;
  hubu_msg_unref(sizes);
  sizes = fx_msg("g:one", 2, 30);
  size_t one_2 = sizes->push_entry_len;
  hubu_msg_unref(sizes);

  hubu_delivery_ack(&bob.peer, "g:one", 2); /* retires g:one 1 and 2, nothing of g:two */
  hubu_inflight *in = bob.peer.inflight;
  if (CHECK(in != NULL) && CHECK_EQ_U64(in->len, 3)) {
    CHECK(strcmp(in->entries[0].msg->session_id, "g:two") == 0 && in->entries[0].msg->seq == 1);
    CHECK(strcmp(in->entries[1].msg->session_id, "g:one") == 0 && in->entries[1].msg->seq == 3);
    CHECK(strcmp(in->entries[2].msg->session_id, "g:two") == 0 && in->entries[2].msg->seq == 2);
    CHECK_EQ_U64(in->bytes, total - one_1 - one_2);
  }
  hubu_delivery_ack(&bob.peer, "g:three", 99); /* another session: nothing */
  hubu_delivery_ack(&bob.peer, "g:one", 1);    /* behind the cursor: nothing */
  CHECK_EQ_U64(inflight_len(&bob), 3);
  hubu_delivery_ack(&bob.peer, "g:two", 1);
  CHECK_EQ_U64(inflight_len(&bob), 2);
  hubu_delivery_ack(&bob.peer, "g:two", 100); /* beyond what was pushed: everything of g:two */
  CHECK_EQ_U64(inflight_len(&bob), 1);
  hubu_delivery_ack(&bob.peer, "g:one", 3);
  CHECK(bob.peer.inflight == NULL);         /* an idle connection holds no window */
  hubu_delivery_ack(&bob.peer, "g:one", 3); /* and an ACK without a window is harmless */
  CHECK(bob.peer.inflight == NULL);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void sweep_resends_unacknowledged_pushes_in_push_order_after_ack_timeout(void) {
  core_fixture fx;
  test_peer bob;
  uint64_t seqs[8];
  char sessions[8][32];
  if (fx_open(&fx, NULL) != 0) goto out;
  ready_peer(&fx, &bob);
  uint64_t t0 = uv_now(&fx.loop); /* pushes are stamped with the loop's clock */
  push(&fx, &bob, "g:one", 1, 5);
  push(&fx, &bob, "g:two", 1, 5);
  push(&fx, &bob, "g:one", 2, 5);
  tp_flush(&bob);

  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 9999), 0);
  CHECK_EQ_U64(hubu_buf_size(&bob.out), 0); /* not yet due */
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 10000), 0);
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PUSH), 1);
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 8), 3)) { /* in push order */
    CHECK(strcmp(sessions[0], "g:one") == 0 && seqs[0] == 1);
    CHECK(strcmp(sessions[1], "g:two") == 0 && seqs[1] == 1);
    CHECK(strcmp(sessions[2], "g:one") == 0 && seqs[2] == 2);
  }
  CHECK_EQ_U64(inflight_len(&bob), 3); /* still owed */
  if (bob.peer.inflight)
    for (uint32_t i = 0; i < 3; i++) CHECK_EQ_U64(bob.peer.inflight->entries[i].resends, 1);

  /* Each message on its own clock: one pushed later is resent on its own. */
  tp_flush(&bob);
  hubu_delivery_ack(&bob.peer, "g:two", 1);
  push(&fx, &bob, "g:three", 1, 5); /* stamped t0 as well (the loop did not run) */
  tp_flush(&bob);
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 10001), 0);
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 8), 1)) CHECK_EQ_STR(sessions[0], "g:three");
  tp_flush(&bob);
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 19999), 0);
  CHECK_EQ_U64(hubu_buf_size(&bob.out), 0);
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 20000), 0);
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 8), 2)) {
    CHECK(strcmp(sessions[0], "g:one") == 0 && seqs[0] == 1);
    CHECK(strcmp(sessions[1], "g:one") == 0 && seqs[1] == 2);
  }

  /* A resend opens a fresh frame: it is not appended to one written before it. */
  tp_flush(&bob);
  push(&fx, &bob, "g:four", 1, 5);
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 30000), 0);
  CHECK_EQ_U64(tp_count(&bob, HUBU_FRAME_PUSH), 2);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void sweep_gives_up_after_three_resends(void) {
  core_fixture fx;
  test_peer bob;
  if (fx_open(&fx, NULL) != 0) goto out;
  ready_peer(&fx, &bob);
  uint64_t t0 = uv_now(&fx.loop);
  push(&fx, &bob, "g:one", 1, 5);
  tp_flush(&bob);
  for (uint64_t k = 1; k <= 3; k++) {
    CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + k * 10000 - 1), 0);
    CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + k * 10000), 0);
    CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 1);
    tp_flush(&bob);
  }
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 40000 - 1), 0); /* not due: no verdict yet */
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 40000), (uint64_t)-1);
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 0); /* the fourth resend is not written */

  /* An ACK in time keeps the connection: a window that empties has nothing to give up on. */
  tp_flush(&bob);
  hubu_delivery_ack(&bob.peer, "g:one", 1);
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + 1000000), 0);
  tp_close(&bob);
out:
  fx_close(&fx);
}

/* Every PUSH frame of tp's output has a body of at most max bytes. */
static int push_frames_within(test_peer *tp, uint32_t max, size_t *n_frames) {
  out_frame frames[64];
  size_t n = tp_frames(tp, frames, 64), pushes = 0;
  int ok = 1;
  for (size_t i = 0; i < n; i++) {
    if (frames[i].type != HUBU_FRAME_PUSH) continue;
    pushes++;
    if (frames[i].length > max) {
      fprintf(stderr, "    PUSH frame %zu has a body of %u bytes, max_frame %u\n", i, frames[i].length, max);
      ok = 0;
    }
  }
  *n_frames = pushes;
  return ok;
}

static void push_frames_stay_within_max_frame(void) {
  core_fixture fx;
  test_peer bob;
  hubu_core_config cfg = fx_config();
  cfg.max_frame = 512;
  uint64_t seqs[16];
  char sessions[16][32];
  size_t frames = 0;
  if (fx_open(&fx, &cfg) != 0) goto out;
  ready_peer(&fx, &bob);
  hubu_msg *probe = fx_msg("g:team", 1, 150);
  CHECK(probe->push_entry_len * 2 <= 512 && probe->push_entry_len * 3 > 512); /* two fit in a frame */
  hubu_msg_unref(probe);
  uint64_t t0 = uv_now(&fx.loop);
  for (uint64_t seq = 1; seq <= 10; seq++) push(&fx, &bob, "g:team", seq, 150);
  CHECK(push_frames_within(&bob, 512, &frames));
  CHECK_EQ_U64(frames, 5); /* filled, not one frame per message */
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 16), 10))
    for (uint64_t i = 0; i < 10; i++) CHECK_EQ_U64(seqs[i], i + 1);
  tp_flush(&bob);

  /* Resends are cut the same way. */
  CHECK_EQ_U64(hubu_delivery_sweep(&bob.peer, t0 + cfg.ack_timeout_ms), 0);
  CHECK(push_frames_within(&bob, 512, &frames));
  CHECK_EQ_U64(frames, 5);
  if (CHECK_EQ_U64(tp_pushed(&bob, seqs, sessions, 16), 10))
    for (uint64_t i = 0; i < 10; i++) CHECK_EQ_U64(seqs[i], i + 1);
  tp_close(&bob);
out:
  fx_close(&fx);
}

/* KNOWN BUG, kept out of the registered cases: a SEND the transport accepts
 * (its frame within max_frame) becomes a Message with more fields (seq,
 * msg_id, sender, sender_device, server_time_ms), so its push entry alone is
 * larger than max_frame, and push_write opens a frame for it anyway: the PUSH
 * frame's body exceeds the max_frame that HELLO_OK announced, contrary to
 * core.h ("a PUSH frame stays under it"). send_pull_result does the same for
 * a PULL (it always takes the first message). A client that holds the server
 * to its announced max_frame refuses the frame; libhubu-client accepts up to
 * max(max_frame, 16 MiB), so it shows only with --max-frame above 16 MiB.
 * To run it: change `#if 0` to `#if 1` and add
 * CORE_CASE(push_of_a_send_that_fits_max_frame_stays_within_max_frame) to the table. */
#if 0
static void push_of_a_send_that_fits_max_frame_stays_within_max_frame(void) {
  core_fixture fx;
  test_peer a, bob;
  hubu_core_config cfg = fx_config();
  cfg.max_frame = 512;
  size_t frames = 0;
  if (fx_open(&fx, &cfg) != 0) goto out;
  tp_connect(&fx, &a, "alice", "phone");
  tp_connect(&fx, &bob, "bob", "phone");
  /* The largest body whose SEND still fits in one 512-byte frame body. */
  char body[600];
  size_t len = 0;
  for (;; len++) {
    Hubu__V1__Send s = HUBU__V1__SEND__INIT;
    s.client_id = 1;
    s.session_id = "d:alice:bob";
    s.body.len = len + 1;
    s.content_type = "text/plain";
    if (protobuf_c_message_get_packed_size(&s.base) > cfg.max_frame) break;
  }
  memset(body, 'x', len);
  body[len] = '\0';
  tp_send(&a, 1, "d:alice:bob", body);
  fx_settle(&fx);
  Hubu__V1__SendAck *ack = tp_send_ack(&a, 0);
  if (CHECK(ack != NULL)) {
    CHECK_EQ_U64(ack->code, HUBU__V1__CODE__OK); /* accepted and stored */
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  CHECK_EQ_U64(tp_pushed(&bob, NULL, NULL, 0), 1);
  CHECK(push_frames_within(&bob, cfg.max_frame, &frames)); /* fails: a body of 548 bytes */
  tp_flush(&bob);
  tp_pull(&bob, 1, "d:alice:bob", 0, 0); /* the same message by PULL */
  fx_settle(&fx);
  out_frame f[4];
  if (CHECK_EQ_U64(tp_frames(&bob, f, 4), 1) && CHECK_EQ_U64(f[0].type, HUBU_FRAME_PULL_RESULT))
    CHECK(f[0].length <= cfg.max_frame); /* fails too */
  tp_close(&a);
  tp_close(&bob);
out:
  fx_close(&fx);
}
#endif

static const core_case cases[] = {
    CORE_CASE(push_to_a_ready_peer_appends_a_push_frame),
    CORE_CASE(pushes_in_one_turn_share_one_push_frame_until_output_taken),
    CORE_CASE(full_window_turns_pushes_into_one_hint_per_session),
    CORE_CASE(full_window_in_bytes_turns_pushes_into_hints),
    CORE_CASE(deliver_ack_is_cumulative_per_session_and_frees_an_empty_window),
    CORE_CASE(sweep_resends_unacknowledged_pushes_in_push_order_after_ack_timeout),
    CORE_CASE(sweep_gives_up_after_three_resends),
    CORE_CASE(push_frames_stay_within_max_frame),
};

int main(int argc, char **argv) { return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

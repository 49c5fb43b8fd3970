/* msg_valgrind.c — hubud under valgrind through the messaging paths: direct
 * and group SENDs, retries (queued and stored), STALE, refusals, PUSH with a
 * small window (PULL_HINT), retransmission, DELIVER_ACK, PULL from the tail
 * and from the store, SYNC, a restart on the same store, and a SIGTERM drain
 * with cursors saved: no memory error, no definite leak, exit 0. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "msgtest.h"

#ifndef HUBU_VALGRIND_PATH
#error "HUBU_VALGRIND_PATH must name valgrind"
#endif

static int stop_under_valgrind(e2e_server *s) {
  e2e_server_signal(s, SIGTERM);
  int st = e2e_server_wait(s, 60000);
  CHECKF(st == 0, "hubud under valgrind exited with status %d (99: valgrind found errors or definite leaks)", st);
  return st;
}

static void messaging_under_valgrind_has_no_memory_errors_or_leaks(void) {
  static const char *const wrapper[] = {HUBU_VALGRIND_PATH, "--leak-check=full", "--errors-for-leak-kinds=definite",
                                        "--error-exitcode=99", NULL};
  e2e_server_wrapper = wrapper;
  e2e_server_start_ms = 30000;
  e2e_server_stop_ms = 60000;
  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, "g:team", "alice", "bob", "carol", NULL) == 0);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, "--max-inflight", "4", "--ack-timeout-ms", "300", NULL) == 0);

  int alice = MT_HELLO(s.port, "alice", "d1", NULL);
  int bob = MT_HELLO(s.port, "bob", "d1", NULL);
  REQUIRE(alice >= 0 && bob >= 0);
  mt_skip_pushes = 1;
  /* direct and group sends, a retry of a stored one, a refusal, STALE */
  for (uint64_t i = 1; i <= 6; i++) {
    Hubu__V1__SendAck *a = MT_SEND_ACK(alice, i, i % 2 ? "d:alice:bob" : "g:team", "hello");
    CHECK(a && a->code == HUBU__V1__CODE__OK);
    if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  }
  Hubu__V1__SendAck *a = MT_SEND_ACK(alice, 6, "g:team", "hello");
  CHECK(a && a->duplicate);
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  a = MT_SEND_ACK(alice, 7, "d:bob:carol", "not mine");
  CHECK(a && a->code == HUBU__V1__CODE__FORBIDDEN);
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  a = MT_SEND_ACK(alice, 8, "d:alice:bob", "eight");
  CHECK(a && a->code == HUBU__V1__CODE__OK);
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  a = MT_SEND_ACK(alice, 7, "d:alice:bob", "stale");
  CHECK(a && a->code == HUBU__V1__CODE__STALE);
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  /* a pipelined burst: retries while queued, and more than bob's window of 4 */
  hubu_buf burst = {0};
  for (uint64_t i = 9; i <= 608; i++) mt_append_send(&burst, i, "d:alice:bob", "burst", 5);
  mt_append_send(&burst, 608, "d:alice:bob", "burst", 5);
  CHECK(e2e_send_raw(alice, hubu_buf_head(&burst), hubu_buf_size(&burst)) == 0);
  hubu_buf_free(&burst);
  for (int i = 0; i < 601; i++) {
    a = MT_ACK(alice);
    if (!a) break;
    hubu__v1__send_ack__free_unpacked(a, NULL);
  }
  /* bob never acks for a while: retransmits happen; then he acks, pulls and syncs */
  usleep(700 * 1000);
  CHECK(mt_deliver_ack(bob, "d:alice:bob", 3) == 0);
  Hubu__V1__PullResult *p = MT_PULL(bob, 1, "d:alice:bob", 0, 500); /* below the tail: the store answers */
  CHECK(p && p->code == HUBU__V1__CODE__OK && p->n_messages > 0);
  if (p) hubu__v1__pull_result__free_unpacked(p, NULL);
  p = MT_PULL(bob, 2, "d:alice:bob", 600, 10); /* the tail answers */
  CHECK(p && p->code == HUBU__V1__CODE__OK);
  if (p) hubu__v1__pull_result__free_unpacked(p, NULL);
  p = MT_PULL(bob, 3, "d:alice:carol", 0, 10);
  CHECK(p && p->code == HUBU__V1__CODE__FORBIDDEN);
  if (p) hubu__v1__pull_result__free_unpacked(p, NULL);
  CHECK(mt_sync_request(bob, 4, 0, NULL, NULL) == 0);
  Hubu__V1__SyncResult *sr = MT_SYNC_RESULT(bob);
  CHECK(sr && sr->n_sessions == 2);
  if (sr) hubu__v1__sync_result__free_unpacked(sr, NULL);
  CHECK(mt_deliver_ack(bob, "d:alice:bob", 608) == 0);
  CHECK(mt_deliver_ack(bob, "g:team", 3) == 0);
  close(alice); /* cut with work possibly still owed */
  CHECK(stop_under_valgrind(&s) == 0);
  close(bob);
  e2e_server_cleanup(&s);

  /* the same store again: devices, sessions and cursors come back */
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  uint64_t last = 0;
  alice = MT_HELLO(s.port, "alice", "d1", &last);
  CHECK(alice >= 0 && last == 608);
  a = MT_SEND_ACK(alice, 609, "g:team", "after restart");
  CHECK(a && a->code == HUBU__V1__CODE__OK && a->seq == 4);
  if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
  CHECK(stop_under_valgrind(&s) == 0);
  if (alice >= 0) close(alice);
  e2e_server_cleanup(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(messaging_under_valgrind_has_no_memory_errors_or_leaks),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

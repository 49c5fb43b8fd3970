/* msg_offline.c — a recipient who is offline loses nothing: alice sends
 * 10,000 messages (pipelined) while bob is away; bob connects, SYNC shows the
 * session at max_seq 10000 and PULL pages of 500 (has_more) bring all of them,
 * in order, no holes, no duplicates — before and after a kill -9 of the server. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msgtest.h"

#define AB "d:alice:bob"
#define WINDOW 256

/* Sends n messages client_id 1..n with body "o<i>", at most WINDOW unacknowledged;
 * checks every ACK (in any order) and that seqs follow client_ids. */
static void send_pipelined(int fd, uint64_t n, uint64_t *last_seq) {
  uint64_t sent = 0, acked = 0, bad = 0;
  uint64_t *seq = calloc(n + 1, sizeof *seq);
  REQUIRE(seq != NULL);
  hubu_buf w = {0};
  while (acked < n) {
    while (sent < n && sent - acked < WINDOW) {
      char body[24];
      sent++;
      int len = snprintf(body, sizeof body, "o%llu", (unsigned long long)sent);
      REQUIRE(mt_append_send(&w, sent, AB, body, (size_t)len) == 0);
    }
    if (hubu_buf_size(&w)) {
      REQUIRE(e2e_send_raw(fd, hubu_buf_head(&w), hubu_buf_size(&w)) == 0);
      hubu_buf_free(&w);
    }
    Hubu__V1__SendAck *a = MT_ACK(fd);
    REQUIRE(a != NULL);
    acked++;
    if (a->code != HUBU__V1__CODE__OK || a->client_id < 1 || a->client_id > sent || seq[a->client_id] || a->duplicate) {
      if (bad++ < 5)
        e2e_fail(__FILE__, __LINE__, "ACK #%llu: client_id %llu code %s seq %llu duplicate %d",
                 (unsigned long long)acked, (unsigned long long)a->client_id, hubu_code_name(a->code),
                 (unsigned long long)a->seq, a->duplicate);
    } else {
      seq[a->client_id] = a->seq;
    }
    hubu__v1__send_ack__free_unpacked(a, NULL);
  }
  uint64_t disorder = 0;
  for (uint64_t i = 2; i <= n; i++) disorder += seq[i] <= seq[i - 1];
  CHECKF(disorder == 0, "%llu client_ids got a seq not above the previous one's", (unsigned long long)disorder);
  CHECK_EQ(bad, 0);
  *last_seq = seq[n];
  free(seq);
}

/* bob's view: SYNC, then every page; checks each of 1..n exactly once, in order. */
static void bob_gets_everything(int port, const char *device, uint64_t n) {
  int b = MT_HELLO(port, "bob", device, NULL);
  REQUIRE(b >= 0);
  CHECK(mt_sync_request(b, 1, 0, NULL, NULL) == 0);
  Hubu__V1__SyncResult *sr = MT_SYNC_RESULT(b);
  REQUIRE(sr != NULL);
  CHECK(sr->code == HUBU__V1__CODE__OK);
  CHECKF(sr->n_sessions == 1 && strcmp(sr->sessions[0]->session_id, AB) == 0 && sr->sessions[0]->max_seq == n,
         "SYNC: %zu sessions, first %s max_seq %llu; want only %s at %llu", sr->n_sessions,
         sr->n_sessions ? sr->sessions[0]->session_id : "-",
         sr->n_sessions ? (unsigned long long)sr->sessions[0]->max_seq : 0ull, AB, (unsigned long long)n);
  hubu__v1__sync_result__free_unpacked(sr, NULL);

  uint8_t *seen = calloc(n + 1, 1);
  REQUIRE(seen != NULL);
  uint64_t after = 0, got = 0, dups = 0, holes = 0, disorder = 0, badbody = 0;
  int pages = 0, more = 1;
  uint64_t t0 = e2e_now_ms();
  while (more && pages < 1000) {
    Hubu__V1__PullResult *r = MT_PULL(b, 100 + (uint64_t)pages, AB, after, 500);
    REQUIRE(r != NULL);
    pages++;
    REQUIRE(r->code == HUBU__V1__CODE__OK);
    CHECKF(r->max_seq == n, "page %d: max_seq %llu", pages, (unsigned long long)r->max_seq);
    more = r->has_more;
    if (more) CHECKF(r->n_messages == 500, "page %d has %zu messages and has_more", pages, r->n_messages);
    for (size_t i = 0; i < r->n_messages; i++) {
      Hubu__V1__Message *m = r->messages[i];
      if (m->seq <= after) disorder++;
      if (m->seq != after + 1) holes++;
      if (m->seq >= 1 && m->seq <= n) {
        if (seen[m->seq]++) dups++;
      }
      char body[24];
      int len = snprintf(body, sizeof body, "o%llu", (unsigned long long)m->seq);
      if (m->body.len != (size_t)len || memcmp(m->body.data, body, (size_t)len) != 0 || m->client_id != m->seq ||
          strcmp(m->sender, "alice") != 0)
        badbody++;
      after = m->seq;
      got++;
    }
    if (!more) CHECKF(after == n, "the last page (has_more false) ends at seq %llu", (unsigned long long)after);
    hubu__v1__pull_result__free_unpacked(r, NULL);
  }
  uint64_t missing = 0;
  for (uint64_t i = 1; i <= n; i++) missing += !seen[i];
  fprintf(stderr,
          "  bob/%s: %llu messages in %d pages (%llu ms): missing %llu, duplicates %llu, holes %llu, "
          "out of order %llu, wrong content %llu\n",
          device, (unsigned long long)got, pages, (unsigned long long)(e2e_now_ms() - t0), (unsigned long long)missing,
          (unsigned long long)dups, (unsigned long long)holes, (unsigned long long)disorder,
          (unsigned long long)badbody);
  CHECK_EQ(got, n);
  CHECK_EQ(pages, (n + 499) / 500);
  CHECK_EQ(missing, 0);
  CHECK_EQ(dups, 0);
  CHECK_EQ(holes, 0);
  CHECK_EQ(disorder, 0);
  CHECK_EQ(badbody, 0);
  CHECK(MT_QUIET(b, 200)); /* nothing new was pushed */
  free(seen);
  close(b);
}

static void offline_recipient_pulls_all_10000_in_order_without_holes_or_duplicates(void) {
  uint64_t n = mt_quick() ? 2000 : 10000;
  mt_dir d;
  mt_dir_make(&d);
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  int a = MT_HELLO(s.port, "alice", "d1", NULL);
  REQUIRE(a >= 0);
  uint64_t t0 = e2e_now_ms(), last = 0;
  send_pipelined(a, n, &last);
  uint64_t ms = e2e_now_ms() - t0;
  fprintf(stderr, "  alice: %llu messages acknowledged in %llu ms (%.0f/s), last seq %llu\n", (unsigned long long)n,
          (unsigned long long)ms, ms ? 1000.0 * (double)n / (double)ms : 0.0, (unsigned long long)last);
  CHECK_EQ(last, n);
  close(a);

  bob_gets_everything(s.port, "phone", n);

  /* every acknowledged message survives kill -9 */
  e2e_server_signal(&s, SIGKILL);
  CHECK(e2e_server_wait(&s, 5000) == 128 + SIGKILL);
  e2e_server_cleanup(&s);
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  bob_gets_everything(s.port, "laptop", n);
  uint64_t last_client_id = 0;
  a = MT_HELLO(s.port, "alice", "d1", &last_client_id);
  CHECK_EQ(last_client_id, n);
  close(a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(offline_recipient_pulls_all_10000_in_order_without_holes_or_duplicates),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof *cases);
}

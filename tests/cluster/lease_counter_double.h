/* lease_counter_double.h — a TEST DOUBLE of the durable seq lease
 * (redis_seq.h, hubu_seq_lease), for the tests of the allocator's logic
 * only: one in-memory counter for every session, advanced by each lease,
 * answered on the next loop turn (or delay_next_ms later). It stands in for the store's lease
 * (MariaDB), which outlives every Redis failure as this counter outlives
 * the test's Redis restarts; nothing outside tests may use it. */
#ifndef HUBU_TEST_LEASE_COUNTER_DOUBLE_H
#define HUBU_TEST_LEASE_COUNTER_DOUBLE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "redis_seq.h"

typedef struct {
  hubu_seq_lease base; /* first */
  uv_loop_t *loop;
  uint64_t hwm;           /* the highest seq leased, any session */
  uint64_t leases;        /* how many were given */
  int refuse;             /* answer every lease with not ok */
  uint64_t delay_next_ms; /* the next lease (leased at once) is answered this much later; then 0 again */
} test_lease_counter_double;

typedef struct {
  uv_timer_t timer;
  hubu_seq_lease_done done;
  void *req;
  int ok;
  uint64_t lo, hi;
} test_lease_answer;

static void test_lease_closed(uv_handle_t *h) { free(h->data); }

static void test_lease_fire(uv_timer_t *t) {
  test_lease_answer *a = t->data;
  a->done(a->req, a->ok, a->lo, a->hi);
  uv_close((uv_handle_t *)&a->timer, test_lease_closed);
}

static int test_lease_counter_lease(hubu_seq_lease *l, const char *session_id, uint64_t floor, uint32_t count,
                                    hubu_seq_lease_done done, void *req) {
  (void)session_id;
  test_lease_counter_double *d = (test_lease_counter_double *)l;
  test_lease_answer *a = calloc(1, sizeof *a);
  if (!a) return -1;
  if (d->hwm < floor) d->hwm = floor;
  a->done = done;
  a->req = req;
  a->ok = !d->refuse;
  if (a->ok) {
    a->lo = d->hwm + 1;
    a->hi = d->hwm + count;
    d->hwm = a->hi;
    d->leases++;
  }
  uv_timer_init(d->loop, &a->timer);
  a->timer.data = a;
  uv_timer_start(&a->timer, test_lease_fire, d->delay_next_ms, 0);
  d->delay_next_ms = 0;
  return 0;
}

static const hubu_seq_lease_ops test_lease_counter_ops = {.lease = test_lease_counter_lease};

static inline void test_lease_counter_init(test_lease_counter_double *d, uv_loop_t *loop) {
  memset(d, 0, sizeof *d);
  d->base.ops = &test_lease_counter_ops;
  d->loop = loop;
}

#endif

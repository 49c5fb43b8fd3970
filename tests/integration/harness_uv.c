/* harness_uv.c — bounded runs of a libuv loop. A 5 ms timer keeps each
 * uv_run(UV_RUN_ONCE) short, so the deadline is checked even when the loop
 * has nothing else to do. */
#include "harness_uv.h"

#include <stdio.h>

#include "harness.h"

static void on_tick(uv_timer_t *t) { (void)t; }

int e2e_uv_run_until(uv_loop_t *loop, int (*done)(void *ud), void *ud, int timeout_ms) {
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, on_tick, 5, 5);
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  while (!done(ud) && e2e_now_ms() < deadline) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* the close callback of tick */
  return done(ud);
}

static void print_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "  handle left open: %s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
          uv_is_closing(h) ? " (closing)" : "");
}

int e2e_uv_finish(uv_loop_t *loop, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  while (uv_loop_alive(loop) && e2e_now_ms() < deadline) {
    uv_run(loop, UV_RUN_NOWAIT);
    if (uv_loop_alive(loop)) e2e_sleep_ms(1);
  }
  int r = uv_loop_close(loop);
  if (r != 0) {
    fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(r));
    uv_walk(loop, print_handle, NULL);
  }
  return r;
}

/* harness_uv.h — running a libuv loop from a test: until a condition holds or
 * a deadline passes, and to its end with every handle closed. For the tests
 * that drive libhubu-client. */
#ifndef HUBU_E2E_HARNESS_UV_H
#define HUBU_E2E_HARNESS_UV_H

#include <uv.h>

/* Runs loop until done(ud) is true or timeout_ms pass; returns done(ud). */
int e2e_uv_run_until(uv_loop_t *loop, int (*done)(void *ud), void *ud, int timeout_ms);

/* Runs loop until no handle is left (at most timeout_ms), then uv_loop_close.
 * Returns uv_loop_close's result; on failure prints the handles left open. */
int e2e_uv_finish(uv_loop_t *loop, int timeout_ms);

#endif

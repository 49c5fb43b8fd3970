/* redis_fixture.h — what the Redis tests share: the private server's env
 * file (scripts/redis-private.sh, found through HUBU_REDIS_ENV), the script's
 * other commands on that server (kill9, restart, pause, resume, cli), a loop
 * run until a condition holds or a deadline passes, and the case table.
 * Each test program lists its cases as REDIS_CASE(name); tests/redis.cmake
 * registers each as ctest `redis.<name>`, run as `<program> <name>`. A case
 * ends with every client closed and uv_loop_close == 0. */
#ifndef HUBU_TEST_REDIS_FIXTURE_H
#define HUBU_TEST_REDIS_FIXTURE_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "log.h"
#include "redis.h"

typedef struct {
  const char *name;
  void (*run)(void);
} redis_case;

#define REDIS_CASE(fn) \
  { #fn, fn }

/* KEY's value from the env file into out: 0, or -1. */
static inline int rfx_env(const char *key, char *out, size_t size) {
  const char *file = getenv("HUBU_REDIS_ENV");
  FILE *f = file ? fopen(file, "r") : NULL;
  if (!f) return -1;
  char line[512];
  size_t klen = strlen(key);
  int found = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) != 0 || line[klen] != '=') continue;
    char *v = line + klen + 1;
    v[strcspn(v, "\r\n")] = '\0';
    size_t n = strlen(v);
    if (n >= size) break; /* does not fit: missing */
    memcpy(out, v, n + 1);
    found = 0;
    break;
  }
  fclose(f);
  return found;
}

/* The private server's address, as a client config with short timeouts. */
static inline hubu_redis_config rfx_config(uint32_t connect_timeout_ms, uint32_t command_timeout_ms) {
  hubu_redis_config cfg;
  char url[128], err[160];
  if (rfx_env("REDIS_URL", url, sizeof url) != 0 || hubu_redis_config_parse(url, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "no usable REDIS_URL in $HUBU_REDIS_ENV (%s)\n", getenv("HUBU_REDIS_ENV"));
    exit(2);
  }
  cfg.connect_timeout_ms = connect_timeout_ms;
  cfg.command_timeout_ms = command_timeout_ms;
  return cfg;
}

/* scripts/redis-private.sh CMD on the test's server; exits on failure. The
 * loop is not run meanwhile (a restart takes a fraction of a second). */
static inline void rfx_script(const char *cmd) {
  const char *script = getenv("HUBU_REDIS_SCRIPT"), *dir = getenv("HUBU_REDIS_DIR");
  if (!script || !dir) {
    fprintf(stderr, "HUBU_REDIS_SCRIPT and HUBU_REDIS_DIR must be set\n");
    exit(2);
  }
  char line[1024];
  snprintf(line, sizeof line, "'%s' %s '%s' >/dev/null", script, cmd, dir);
  int rc = system(line);
  if (rc != 0) {
    fprintf(stderr, "%s failed (%d)\n", line, rc);
    exit(2);
  }
}

static void rfx_tick(uv_timer_t *t) { (void)t; }

/* Runs loop until pred(arg) holds or ms pass; 1 if it held. */
static inline int rfx_run_until(uv_loop_t *loop, int (*pred)(void *), void *arg, uint64_t ms) {
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, rfx_tick, 5, 5);
  uv_update_time(loop);
  uint64_t end = uv_now(loop) + ms;
  int ok = 0;
  for (;;) {
    if (pred && pred(arg)) {
      ok = 1;
      break;
    }
    uv_update_time(loop);
    if (uv_now(loop) >= end) break;
    uv_run(loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

static inline void rfx_run_for(uv_loop_t *loop, uint64_t ms) { rfx_run_until(loop, NULL, NULL, ms); }

static inline int rfx_is_up(void *r) { return hubu_redis_is_up(r); }
static inline int rfx_is_down(void *r) { return !hubu_redis_is_up(r); }

/* Ends a case: runs the loop until every handle has closed. */
static inline void rfx_loop_close(uv_loop_t *loop) {
  for (int i = 0; i < 100 && uv_loop_alive(loop); i++) uv_run(loop, UV_RUN_NOWAIT);
  CHECK(uv_loop_close(loop) == 0);
}

static inline int rfx_main(int argc, char **argv, const redis_case *cases, size_t n) {
  signal(SIGPIPE, SIG_IGN);
  hubu_log_min_level = getenv("HUBU_TEST_VERBOSE") ? HUBU_LOG_DEBUG : HUBU_LOG_ERROR;
  alarm(120);
  int ran = 0;
  for (size_t i = 0; i < n; i++) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    fprintf(stderr, "-- %s\n", cases[i].name);
    cases[i].run();
    ran++;
  }
  if (!ran) {
    fprintf(stderr, "no case named %s\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  return check_summary(argv[0]);
}

#endif

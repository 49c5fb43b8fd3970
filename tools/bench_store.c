/* bench_store.c — the store alone, through its threaded API: N appends kept
 * W in flight, as the server would submit them, timed from submit to
 * completion. Prints appends/s, transactions, mean batch size, mean commit
 * time and completion latency percentiles (or one JSON object with --json).
 * A standalone program (hubu-store-bench) with -DHUBU_BENCH_STORE_MAIN, and a
 * hubu-bench scenario through hubu_bench_store(). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "store.h"

int hubu_bench_store(int argc, char **argv);

typedef struct {
  uint64_t count;     /* appends in total */
  uint64_t window;    /* appends in flight */
  size_t body;        /* body bytes */
  uint32_t sessions;  /* direct sessions written round robin */
  uint32_t devices;   /* devices per user */
  uint32_t max_batch; /* appends per transaction at most */
  hubu_fsync_mode fsync;
  const char *data; /* NULL: a temporary directory, removed afterwards */
  int json;
} bench_options;

typedef struct {
  bench_options o;
  uv_loop_t loop;
  hubu_store *store;
  uint64_t submitted, completed, failed;
  uint64_t *next_seq;  /* per session */
  uint64_t *submit_ns; /* per append, by index */
  uint32_t *latency_us;
  uint8_t *body;
  char (*session_ids)[40];
  char (*users)[24];
  char (*device_ids)[16];
} bench;

static void usage(FILE *out) {
  fprintf(out,
          "usage: hubu-store-bench [--count N] [--window W] [--body BYTES] [--sessions S] [--devices D]\n"
          "                        [--max-batch B] [--fsync always|batch|off] [--data DIR] [--json]\n"
          "  Appends N messages (default 200000, body 100 B, 100 direct sessions, 4 devices per user)\n"
          "  through the threaded store with W in flight (default 4096), fsync batch by default,\n"
          "  in a temporary directory unless --data is given.\n");
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') return -1;
  *out = v;
  return 0;
}

static int parse_options(int argc, char **argv, bench_options *o) {
  *o = (bench_options){.count = 200000,
                       .window = 4096,
                       .body = 100,
                       .sessions = 100,
                       .devices = 4,
                       .max_batch = 4096,
                       .fsync = HUBU_FSYNC_BATCH};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t n = 0;
    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (!v) goto bad;
    i++;
    if (strcmp(a, "--fsync") == 0) {
      if (strcmp(v, "always") == 0)
        o->fsync = HUBU_FSYNC_ALWAYS;
      else if (strcmp(v, "batch") == 0)
        o->fsync = HUBU_FSYNC_BATCH;
      else if (strcmp(v, "off") == 0)
        o->fsync = HUBU_FSYNC_OFF;
      else
        goto bad;
    } else if (strcmp(a, "--data") == 0) {
      o->data = v;
    } else if (parse_u64(v, &n) != 0) {
      goto bad;
    } else if (strcmp(a, "--count") == 0 && n > 0) {
      o->count = n;
    } else if (strcmp(a, "--window") == 0 && n > 0) {
      o->window = n;
    } else if (strcmp(a, "--body") == 0 && n <= 1 << 20) {
      o->body = (size_t)n;
    } else if (strcmp(a, "--sessions") == 0 && n > 0 && n <= 100000) {
      o->sessions = (uint32_t)n;
    } else if (strcmp(a, "--devices") == 0 && n > 0 && n <= 1000) {
      o->devices = (uint32_t)n;
    } else if (strcmp(a, "--max-batch") == 0 && n > 0 && n <= 1000000) {
      o->max_batch = (uint32_t)n;
    } else {
      goto bad;
    }
    continue;
  bad:
    fprintf(stderr, "hubu-store-bench: bad argument %s%s%s\n", a, v ? " " : "", v ? v : "");
    usage(stderr);
    return -1;
  }
  return 0;
}

static void on_append_done(hubu_store_op *op);

/* Message i: session i % S, written alternately by its two users, device (i / S) % D. */
static int submit_next(bench *b) {
  uint64_t i = b->submitted;
  uint32_t session = (uint32_t)(i % b->o.sessions);
  uint32_t user = session * 2 + (uint32_t)((i / b->o.sessions) % 2);
  uint32_t device = (uint32_t)((i / b->o.sessions / 2) % b->o.devices);
  uint64_t seq = ++b->next_seq[session];
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_APPEND);
  hubu_msg *m = op ? hubu_msg_new(b->session_ids[session], seq, i + 1, b->users[user], b->device_ids[device], i + 1,
                                  b->body, b->o.body, "text/plain", NULL, 0, 1700000000000ull + i / 1000)
                   : NULL;
  if (!m) {
    hubu_store_op_free(op);
    fprintf(stderr, "hubu-store-bench: out of memory\n");
    return -1;
  }
  op->append.msg = m;
  op->ud = (void *)(uintptr_t)i;
  op->done = on_append_done;
  b->submit_ns[i] = uv_hrtime();
  b->submitted++;
  hubu_store_submit(b->store, op);
  return 0;
}

static bench *current; /* the run in progress: done callbacks find it here */

static void on_append_done(hubu_store_op *op) {
  bench *b = current;
  uint64_t i = (uint64_t)(uintptr_t)op->ud;
  uint64_t us = (uv_hrtime() - b->submit_ns[i]) / 1000;
  b->latency_us[i] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
  if (op->status != HUBU_STORE_OK) b->failed++;
  b->completed++;
  hubu_store_op_free(op);
  if (b->submitted < b->o.count) submit_next(b);
}

static int cmp_u32(const void *x, const void *y) {
  uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
  return (a > b) - (a < b);
}

static uint32_t percentile(const uint32_t *sorted, uint64_t n, double p) {
  uint64_t k = (uint64_t)(p * (double)(n - 1) + 0.5);
  return sorted[k < n ? k : n - 1];
}

static void remove_data_dir(const char *dir) {
  static const char *const files[] = {"hubu.db", "hubu.db-wal", "hubu.db-shm", "hubu.db-journal"};
  char path[4200];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

int hubu_bench_store(int argc, char **argv) {
  static const char *const fsync_names[] = {"always", "batch", "off"};
  bench *b = calloc(1, sizeof *b);
  if (!b) return 1;
  int result = 1;
  char tmp[] = "/tmp/hubu-store-bench-XXXXXX";
  const char *dir = NULL;
  if (parse_options(argc, argv, &b->o) != 0) goto out_free;
  if (b->o.data) {
    dir = b->o.data;
  } else if (!(dir = mkdtemp(tmp))) {
    fprintf(stderr, "hubu-store-bench: mkdtemp: %s\n", strerror(errno));
    goto out_free;
  }
  b->next_seq = calloc(b->o.sessions, sizeof *b->next_seq);
  b->submit_ns = malloc(b->o.count * sizeof *b->submit_ns);
  b->latency_us = malloc(b->o.count * sizeof *b->latency_us);
  b->body = malloc(b->o.body ? b->o.body : 1);
  b->session_ids = calloc(b->o.sessions, sizeof *b->session_ids);
  b->users = calloc((size_t)b->o.sessions * 2, sizeof *b->users);
  b->device_ids = calloc(b->o.devices, sizeof *b->device_ids);
  if (!b->next_seq || !b->submit_ns || !b->latency_us || !b->body || !b->session_ids || !b->users || !b->device_ids) {
    fprintf(stderr, "hubu-store-bench: out of memory\n");
    goto out_dir;
  }
  for (size_t i = 0; i < b->o.body; i++) b->body[i] = (uint8_t)('a' + i % 26);
  for (uint32_t s = 0; s < b->o.sessions; s++) {
    snprintf(b->users[2 * s], sizeof b->users[0], "u%06u", 2 * s);
    snprintf(b->users[2 * s + 1], sizeof b->users[0], "u%06u", 2 * s + 1);
    snprintf(b->session_ids[s], sizeof b->session_ids[0], "d:%s:%s", b->users[2 * s], b->users[2 * s + 1]);
  }
  for (uint32_t d = 0; d < b->o.devices; d++) snprintf(b->device_ids[d], sizeof b->device_ids[0], "dev%u", d);

  if (uv_loop_init(&b->loop) != 0) goto out_dir;
  char err[256];
  char url[4200];
  hubu_store_default_url(dir, url, sizeof url);
  hubu_store_config cfg = {.url = url, .fsync = b->o.fsync, .max_batch = b->o.max_batch};
  b->store = hubu_store_open(&b->loop, &cfg, err, sizeof err);
  if (!b->store) {
    fprintf(stderr, "hubu-store-bench: store open: %s\n", err);
    uv_loop_close(&b->loop);
    goto out_dir;
  }

  current = b;
  double cpu0 = cpu_seconds();
  uint64_t t0 = uv_hrtime();
  int ok = 0;
  while (b->submitted < b->o.count && b->submitted < b->o.window)
    if ((ok = submit_next(b)) != 0) break;
  while (ok == 0 && b->completed < b->submitted) uv_run(&b->loop, UV_RUN_ONCE);
  uint64_t elapsed_ns = uv_hrtime() - t0;
  double cpu = cpu_seconds() - cpu0;
  hubu_store_stats stats;
  hubu_store_get_stats(b->store, &stats);
  hubu_store_close(b->store);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&b->loop) != 0) fprintf(stderr, "hubu-store-bench: loop still has handles\n");
  current = NULL;
  if (ok != 0 || b->completed == 0) goto out_dir;

  uint64_t n = b->completed;
  qsort(b->latency_us, n, sizeof *b->latency_us, cmp_u32);
  double seconds = (double)elapsed_ns / 1e9;
  double rate = (double)n / seconds;
  double mean_batch = stats.batches ? (double)stats.appended / (double)stats.batches : 0;
  double mean_commit_us = stats.batches ? (double)stats.commit_us_total / (double)stats.batches : 0;
  uint32_t p50 = percentile(b->latency_us, n, 0.50), p99 = percentile(b->latency_us, n, 0.99),
           pmax = b->latency_us[n - 1];
  if (b->o.json) {
    printf(
        "{\"scenario\":\"store\",\"appends\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"appends_per_s\":%.0f,"
        "\"batches\":%llu,\"mean_batch\":%.1f,\"max_batch\":%llu,\"mean_commit_us\":%.1f,\"p50_us\":%u,"
        "\"p99_us\":%u,\"max_us\":%u,\"cpu_s\":%.3f,\"fsync\":\"%s\",\"window\":%llu,\"body\":%zu,"
        "\"sessions\":%u,\"devices\":%u}\n",
        (unsigned long long)n, (unsigned long long)b->failed, seconds, rate, (unsigned long long)stats.batches,
        mean_batch, (unsigned long long)stats.max_batch_seen, mean_commit_us, p50, p99, pmax, cpu,
        fsync_names[b->o.fsync], (unsigned long long)b->o.window, b->o.body, b->o.sessions, b->o.devices);
  } else {
    printf("store bench: %llu appends, body %zu B, %u sessions, %u devices/user, window %llu, fsync %s\n",
           (unsigned long long)n, b->o.body, b->o.sessions, b->o.devices, (unsigned long long)b->o.window,
           fsync_names[b->o.fsync]);
    printf("  %-22s %.0f (%.3f s, %llu failed)\n", "appends/s", rate, seconds, (unsigned long long)b->failed);
    printf("  %-22s %llu (largest %llu)\n", "transactions", (unsigned long long)stats.batches,
           (unsigned long long)stats.max_batch_seen);
    printf("  %-22s %.1f\n", "mean batch", mean_batch);
    printf("  %-22s %.1f us\n", "mean commit", mean_commit_us);
    printf("  %-22s %u / %u / %u us\n", "completion p50/p99/max", p50, p99, pmax);
    printf("  %-22s %.2f s (%.2f us per append, both threads)\n", "process cpu", cpu, cpu * 1e6 / (double)n);
  }
  result = b->failed ? 1 : 0;

out_dir:
  if (!b->o.data && dir) remove_data_dir(dir);
out_free:
  free(b->next_seq);
  free(b->submit_ns);
  free(b->latency_us);
  free(b->body);
  free(b->session_ids);
  free(b->users);
  free(b->device_ids);
  free(b);
  return result;
}

#ifdef HUBU_BENCH_STORE_MAIN
int main(int argc, char **argv) {
  hubu_log_min_level = HUBU_LOG_WARN;
  return hubu_bench_store(argc, argv);
}
#endif

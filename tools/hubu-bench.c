/* hubu-bench.c — HubuIM load generator on libhubu-client: one uv loop, many
 * clients. Owns the scenario table, option parsing, the report (a table, or
 * one JSON object with --json) and the idle and handshake scenarios; the
 * messaging ones are in bench_msg.c, the store one in bench_store.c. Invariant: every scenario is bounded by its own
 * timeout and closes every client and handle before it returns, so the loop
 * always closes cleanly (uv_loop_close == 0). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "bench.h"
#include "hubu_client.h"
#ifdef HUBU_BENCH_HAVE_STORE
#include "log.h"
#endif
#include "token.h"

/* ---- report --------------------------------------------------------------------- */

static bench_figure *bench_report_slot(bench_report *r, const char *key, const char *label) {
  if (r->count >= BENCH_REPORT_MAX) return NULL;
  bench_figure *f = &r->figures[r->count++];
  f->key = key;
  f->label = label;
  return f;
}

/* value goes to JSON as a number; the table shows it with fmt and unit. */
void bench_report_number(bench_report *r, const char *key, const char *label, double value, const char *fmt,
                         const char *unit) {
  bench_figure *f = bench_report_slot(r, key, label);
  if (!f) return;
  char num[64];
  if (isfinite(value))
    snprintf(num, sizeof num, fmt, value);
  else
    snprintf(num, sizeof num, "n/a");
  snprintf(f->text, sizeof f->text, "%s%s%s", num, unit && *unit ? " " : "", unit ? unit : "");
  if (isfinite(value) && value == floor(value) && fabs(value) < 9e15)
    snprintf(f->json, sizeof f->json, "%.0f", value);
  else if (isfinite(value))
    snprintf(f->json, sizeof f->json, "%.6g", value);
  else
    snprintf(f->json, sizeof f->json, "null");
}

void bench_report_text(bench_report *r, const char *key, const char *label, const char *fmt, ...) {
  bench_figure *f = bench_report_slot(r, key, label);
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->text, sizeof f->text, fmt, ap);
  va_end(ap);
  char *j = f->json;
  size_t cap = sizeof f->json, n = 0;
  j[n++] = '"';
  for (const char *p = f->text; *p && n + 3 < cap; p++) {
    if (*p == '"' || *p == '\\') j[n++] = '\\';
    j[n++] = (*p >= 0 && *p < 0x20) ? ' ' : *p;
  }
  j[n++] = '"';
  j[n] = '\0';
}

void bench_report_null(bench_report *r, const char *key, const char *label, const char *why) {
  bench_figure *f = bench_report_slot(r, key, label);
  if (!f) return;
  snprintf(f->text, sizeof f->text, "%s", why);
  snprintf(f->json, sizeof f->json, "null");
}

void bench_report_print(const bench_report *r, int json) {
  if (json) {
    printf("{");
    for (int i = 0; i < r->count; i++) printf("%s\"%s\":%s", i ? "," : "", r->figures[i].key, r->figures[i].json);
    printf("}\n");
  } else {
    for (int i = 0; i < r->count; i++) printf("%-26s %s\n", r->figures[i].label, r->figures[i].text);
  }
  fflush(stdout);
}

/* ---- process figures ----------------------------------------------------------- */

bench_proc bench_server = {-1, -1};
bench_proc bench_db = {-1, -1};
bench_proc bench_recv = {-1, -1};
bench_proc bench_self = {-1, -1};

static void bench_proc_open(bench_proc *p, long pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/status", pid);
  p->status_fd = open(path, O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  p->stat_fd = open(path, O_RDONLY | O_CLOEXEC);
}

static void bench_proc_close(bench_proc *p) {
  if (p->status_fd >= 0) close(p->status_fd);
  if (p->stat_fd >= 0) close(p->stat_fd);
  p->status_fd = p->stat_fd = -1;
}

static int bench_proc_read(int fd, char *buf, size_t size) {
  if (fd < 0) return -1;
  ssize_t n = pread(fd, buf, size - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  return 0;
}

long bench_proc_rss_kb(const bench_proc *p) {
  char buf[8192];
  if (bench_proc_read(p->status_fd, buf, sizeof buf) != 0) return -1;
  const char *line = strstr(buf, "\nVmRSS:");
  return line ? strtol(line + 7, NULL, 10) : -1;
}

/* fields 14 and 15 of /proc/PID/stat */
double bench_proc_cpu_s(const bench_proc *p) {
  char buf[1024];
  if (bench_proc_read(p->stat_fd, buf, sizeof buf) != 0) return -1;
  char *q = strrchr(buf, ')'); /* the command name may hold spaces */
  if (!q) return -1;
  unsigned long long utime = 0, stime = 0;
  if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The soft limit on open files of pid, or -1. */
static long bench_process_nofile(long pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%ld/limits", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long soft = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "Max open files", 14) == 0) {
      soft = strtol(line + 14, NULL, 10);
      break;
    }
  fclose(f);
  return soft;
}

double bench_self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

void bench_nofile_raise(long wanted, long server_pid) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)(wanted + BENCH_FD_SPARE) > rl.rlim_cur)
      fprintf(stderr, "hubu-bench: warning: RLIMIT_NOFILE is %llu, %ld connections need about %ld; some will fail\n",
              (unsigned long long)rl.rlim_cur, wanted, wanted + BENCH_FD_SPARE);
  }
  if (server_pid > 0) {
    long soft = bench_process_nofile(server_pid);
    if (soft > 0 && wanted + BENCH_FD_SPARE > soft)
      fprintf(stderr, "hubu-bench: warning: the server may open %ld files, %ld connections need more\n", soft, wanted);
  }
}

int bench_client_options(const bench_options *o, hubu_client_options *co, const char *user, char *token,
                         size_t token_size) {
  if (hubu_token_mint(o->secret, o->secret_len, user, (uint64_t)time(NULL) + BENCH_TOKEN_TTL_S, token, token_size) < 0)
    return -1;
  memset(co, 0, sizeof *co);
  co->host = o->host;
  co->port = o->port ? o->port : (o->ws ? 7780 : 0);
  co->tls = o->tls;
  co->ws_path = o->ws ? "/ws" : NULL;
  co->ws_json = o->ws_json;
  co->tls_ca_file = o->ca_file;
  co->tls_verify = o->ca_file != NULL;
  co->user_id = user;
  co->device_id = "d1";
  co->token = token;
  co->client_info = "hubu-bench/0.1";
  co->reconnect = 0;
  return 0;
}

void bench_report_common(bench_report *r, const bench_options *o) {
  bench_report_text(r, "scenario", "scenario", "%s", o->scenario);
  const char *transport = o->ws_json ? "ws-json" : o->ws ? "ws" : o->tls ? "tls" : "tcp";
  int port = o->port ? o->port : o->ws ? 7780 : o->tls ? 7701 : 7700;
  bench_report_text(r, "transport", "transport", "%s %s:%d", transport, o->host, port);
}

void bench_report_cpu(bench_report *r, const bench_options *o, double self_cpu, double server_cpu, double elapsed_s) {
  bench_report_number(r, "bench_cpu_s", "bench cpu", self_cpu, "%.2f", "s");
  bench_report_number(r, "bench_cpu_pct", "bench cpu / elapsed", elapsed_s > 0 ? 100 * self_cpu / elapsed_s : 0, "%.0f",
                      "%");
  if (o->server_pid > 0 && server_cpu >= 0) {
    bench_report_number(r, "server_cpu_s", "server cpu", server_cpu, "%.2f", "s");
    bench_report_number(r, "server_cpu_pct", "server cpu / elapsed", elapsed_s > 0 ? 100 * server_cpu / elapsed_s : 0,
                        "%.0f", "%");
  }
}

/* ---- scenario: idle ---------------------------------------------------------------
 * N authenticated connections held open; the server's RSS before and after gives
 * its memory per connection. Connects are bounded to `inflight` at a time. */

typedef struct bench_idle bench_idle;

typedef struct {
  bench_idle *run;
  hubu_client *client; /* owned until closed; NULL once handed to hubu_client_close */
  int ready;
} bench_idle_slot;

struct bench_idle {
  const bench_options *opt;
  uv_loop_t *loop;
  bench_idle_slot *slots; /* owned, opt->conns of them */
  long started, in_flight, ready, failed, lost;
  int filling, settled, stopping;
  char first_error[96];
  uv_timer_t timeout; /* the whole connect phase */
  uv_timer_t hold;    /* time held once every connection settled */
  uv_signal_t sigint;
  uint64_t t_start, t_settled;
  long rss_before_kb, rss_after_kb;
  double cpu_before, cpu_settled;               /* the bench's own, getrusage */
  double server_cpu_before, server_cpu_settled; /* -1 without --server-pid */
};

static void bench_idle_fill(bench_idle *run);
static void bench_idle_settle(bench_idle *run);

static void bench_idle_on_state(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud) {
  bench_idle_slot *slot = ud;
  bench_idle *run = slot->run;
  if (slot->client != c || state != HUBU_CLIENT_CLOSED) return; /* our own closes are not failures */
  if (!run->first_error[0])
    snprintf(run->first_error, sizeof run->first_error, "code %d: %s", code, reason ? reason : "");
  slot->client = NULL;
  hubu_client_close(c, NULL);
  if (slot->ready) {
    slot->ready = 0;
    run->ready--;
    run->lost++;
    return;
  }
  run->failed++;
  run->in_flight--;
  bench_idle_fill(run);
}

static void bench_idle_on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)c;
  (void)info;
  bench_idle_slot *slot = ud;
  bench_idle *run = slot->run;
  slot->ready = 1;
  run->ready++;
  run->in_flight--;
  bench_idle_fill(run);
}

static void bench_idle_fill(bench_idle *run) {
  if (run->filling || run->stopping) return; /* re-entered from a synchronous failure */
  run->filling = 1;
  const bench_options *o = run->opt;
  hubu_client_callbacks cb = {.on_state = bench_idle_on_state, .on_ready = bench_idle_on_ready};
  while (run->started < o->conns && run->in_flight < o->inflight) {
    bench_idle_slot *slot = &run->slots[run->started++];
    char user[32], token[HUBU_TOKEN_MAX];
    hubu_client_options co;
    snprintf(user, sizeof user, "bench-u%ld", (long)(slot - run->slots));
    slot->run = run;
    if (bench_client_options(o, &co, user, token, sizeof token) != 0 ||
        !(slot->client = hubu_client_new(run->loop, &co, &cb, slot))) {
      run->failed++;
      continue;
    }
    run->in_flight++;
    int r = hubu_client_start(slot->client);
    if (r < 0 && slot->client) {
      hubu_client *c = slot->client;
      slot->client = NULL;
      hubu_client_close(c, NULL);
      run->failed++;
      run->in_flight--;
    }
  }
  run->filling = 0;
  if (!run->settled && run->ready + run->failed + run->lost >= o->conns) bench_idle_settle(run);
}

static void bench_idle_stop(bench_idle *run) {
  if (run->stopping) return;
  run->stopping = 1;
  run->rss_after_kb = bench_proc_rss_kb(&bench_server);
  for (long i = 0; i < run->started; i++) {
    hubu_client *c = run->slots[i].client;
    run->slots[i].client = NULL;
    if (c) hubu_client_close(c, NULL);
  }
  uv_close((uv_handle_t *)&run->timeout, NULL);
  uv_close((uv_handle_t *)&run->hold, NULL);
  uv_close((uv_handle_t *)&run->sigint, NULL);
}

static void bench_idle_on_hold_done(uv_timer_t *t) { bench_idle_stop(t->data); }

static void bench_idle_settle(bench_idle *run) {
  run->settled = 1;
  run->t_settled = uv_hrtime();
  run->cpu_settled = bench_self_cpu_s();
  run->server_cpu_settled = bench_proc_cpu_s(&bench_server);
  uv_timer_stop(&run->timeout);
  uv_timer_start(&run->hold, bench_idle_on_hold_done, run->opt->hold_ms, 0);
}

static void bench_idle_on_timeout(uv_timer_t *t) {
  bench_idle *run = t->data;
  fprintf(stderr, "hubu-bench: timeout: %ld of %ld ready\n", run->ready, run->opt->conns);
  bench_idle_settle(run);
}

static void bench_idle_on_sigint(uv_signal_t *s, int signum) {
  (void)signum;
  bench_idle *run = s->data;
  fprintf(stderr, "hubu-bench: interrupted\n");
  if (!run->settled) {
    run->t_settled = uv_hrtime();
    run->cpu_settled = bench_self_cpu_s();
    run->server_cpu_settled = bench_proc_cpu_s(&bench_server);
  }
  run->settled = 1;
  bench_idle_stop(run);
}

static int bench_idle_run(const bench_options *o, uv_loop_t *loop) {
  if (o->conns <= 0) {
    fprintf(stderr, "hubu-bench idle: --conns N is required\n");
    return 2;
  }
  bench_nofile_raise(o->conns, o->server_pid);
  bench_idle run;
  memset(&run, 0, sizeof run);
  run.opt = o;
  run.loop = loop;
  run.slots = calloc((size_t)o->conns, sizeof *run.slots);
  if (!run.slots) {
    fprintf(stderr, "hubu-bench: out of memory\n");
    return 1;
  }
  run.rss_before_kb = bench_proc_rss_kb(&bench_server);
  run.server_cpu_before = bench_proc_cpu_s(&bench_server);
  run.cpu_before = bench_self_cpu_s();
  uv_timer_init(loop, &run.timeout);
  uv_timer_init(loop, &run.hold);
  uv_signal_init(loop, &run.sigint);
  run.timeout.data = run.hold.data = run.sigint.data = &run;
  uv_signal_start_oneshot(&run.sigint, bench_idle_on_sigint, SIGINT);
  uv_unref((uv_handle_t *)&run.sigint);
  run.t_start = uv_hrtime();
  uv_timer_start(&run.timeout, bench_idle_on_timeout, o->timeout_ms, 0);
  bench_idle_fill(&run);
  uv_run(loop, UV_RUN_DEFAULT);
  double cpu = run.cpu_settled - run.cpu_before; /* the connect phase, like elapsed */

  double elapsed = (double)(run.t_settled - run.t_start) / 1e9;
  bench_report r = {.count = 0};
  bench_report_common(&r, o);
  bench_report_number(&r, "conns", "conns wanted", (double)o->conns, "%.0f", "");
  bench_report_number(&r, "ready", "conns ready", (double)run.ready, "%.0f", "");
  bench_report_number(&r, "failed", "conns failed", (double)run.failed, "%.0f", "");
  bench_report_number(&r, "lost", "conns lost after ready", (double)run.lost, "%.0f", "");
  if (run.first_error[0]) bench_report_text(&r, "first_error", "first error", "%s", run.first_error);
  bench_report_number(&r, "elapsed_s", "elapsed to all ready", elapsed, "%.3f", "s");
  bench_report_number(&r, "connects_per_s", "connects per second", elapsed > 0 ? (double)run.ready / elapsed : 0,
                      "%.0f", "/s");
  bench_report_number(&r, "hold_ms", "held", (double)o->hold_ms, "%.0f", "ms");
  if (run.rss_before_kb >= 0 && run.rss_after_kb >= 0) {
    bench_report_number(&r, "server_rss_before_kb", "server rss before", (double)run.rss_before_kb, "%.0f", "KiB");
    bench_report_number(&r, "server_rss_after_kb", "server rss after", (double)run.rss_after_kb, "%.0f", "KiB");
    double per = run.ready > 0 ? (double)(run.rss_after_kb - run.rss_before_kb) * 1024.0 / (double)run.ready : 0;
    bench_report_number(&r, "bytes_per_conn", "server bytes per conn", per, "%.0f", "B");
  } else {
    bench_report_null(&r, "server_rss_before_kb", "server rss before",
                      o->server_pid > 0 ? "n/a (cannot read /proc)" : "n/a (no --server-pid)");
    bench_report_null(&r, "server_rss_after_kb", "server rss after", "n/a");
    bench_report_null(&r, "bytes_per_conn", "server bytes per conn", "n/a");
  }
  bench_report_number(&r, "bench_rss_kb", "bench rss", (double)bench_proc_rss_kb(&bench_self), "%.0f", "KiB");
  double server_cpu =
      run.server_cpu_before >= 0 && run.server_cpu_settled >= 0 ? run.server_cpu_settled - run.server_cpu_before : -1;
  bench_report_cpu(&r, o, cpu, server_cpu, elapsed);
  bench_report_print(&r, o->json);
  free(run.slots);
  return run.ready == o->conns ? 0 : 1;
}

/* ---- scenario: handshake -------------------------------------------------------------
 * connect + (TLS) + HELLO/HELLO_OK, close, repeat: `concurrency` at a time until
 * `total` attempts are done. Latency is connect start to READY. */

typedef struct bench_handshake bench_handshake;

typedef struct {
  bench_handshake *run;
  hubu_client *client; /* owned while an attempt runs; NULL when the slot is free */
  uint64_t t0;         /* uv_hrtime at start */
  long index;          /* which slot: its user is bench-u<index> */
} bench_handshake_slot;

struct bench_handshake {
  const bench_options *opt;
  uv_loop_t *loop;
  bench_handshake_slot *slots; /* owned, opt->concurrency of them */
  uint64_t *latency_ns;        /* owned, one per success */
  long started, done, failed;
  int filling, refill, stopping;
  char first_error[96];
  uv_timer_t timeout;
  uv_signal_t sigint;
  uint64_t t_start, t_end;
};

static void bench_handshake_fill(bench_handshake *run);
static void bench_handshake_stop(bench_handshake *run);

static void bench_handshake_finish(bench_handshake_slot *slot, hubu_client *c) {
  bench_handshake *run = slot->run;
  slot->client = NULL;
  hubu_client_close(c, NULL);
  if (run->done + run->failed >= run->opt->total) {
    bench_handshake_stop(run);
    return;
  }
  bench_handshake_fill(run);
}

static void bench_handshake_on_state(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud) {
  bench_handshake_slot *slot = ud;
  bench_handshake *run = slot->run;
  if (slot->client != c || state != HUBU_CLIENT_CLOSED) return;
  if (!run->first_error[0])
    snprintf(run->first_error, sizeof run->first_error, "code %d: %s", code, reason ? reason : "");
  run->failed++;
  bench_handshake_finish(slot, c);
}

static void bench_handshake_on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)info;
  bench_handshake_slot *slot = ud;
  bench_handshake *run = slot->run;
  run->latency_ns[run->done++] = uv_hrtime() - slot->t0;
  bench_handshake_finish(slot, c);
}

static void bench_handshake_fill(bench_handshake *run) {
  if (run->filling) {
    run->refill = 1; /* a slot freed by a synchronous failure: the outer pass goes again */
    return;
  }
  if (run->stopping) return;
  const bench_options *o = run->opt;
  hubu_client_callbacks cb = {.on_state = bench_handshake_on_state, .on_ready = bench_handshake_on_ready};
  run->filling = 1;
  do {
    run->refill = 0;
    for (long i = 0; i < o->concurrency && run->started < o->total && !run->stopping; i++) {
      bench_handshake_slot *slot = &run->slots[i];
      if (slot->client) continue;
      char user[32], token[HUBU_TOKEN_MAX];
      hubu_client_options co;
      snprintf(user, sizeof user, "bench-u%ld", slot->index);
      run->started++;
      if (bench_client_options(o, &co, user, token, sizeof token) != 0 ||
          !(slot->client = hubu_client_new(run->loop, &co, &cb, slot))) {
        run->failed++;
        if (!run->first_error[0]) snprintf(run->first_error, sizeof run->first_error, "hubu_client_new failed");
        continue;
      }
      slot->t0 = uv_hrtime();
      if (hubu_client_start(slot->client) < 0 && slot->client) {
        run->failed++;
        bench_handshake_finish(slot, slot->client);
      }
    }
  } while (run->refill && !run->stopping);
  run->filling = 0;
  if (!run->stopping && run->done + run->failed >= o->total) bench_handshake_stop(run);
}

static void bench_handshake_stop(bench_handshake *run) {
  if (run->stopping) return;
  run->stopping = 1;
  run->t_end = uv_hrtime();
  for (long i = 0; i < run->opt->concurrency; i++) {
    hubu_client *c = run->slots[i].client;
    run->slots[i].client = NULL;
    if (c) hubu_client_close(c, NULL);
  }
  uv_close((uv_handle_t *)&run->timeout, NULL);
  uv_close((uv_handle_t *)&run->sigint, NULL);
}

static void bench_handshake_on_timeout(uv_timer_t *t) {
  bench_handshake *run = t->data;
  fprintf(stderr, "hubu-bench: timeout: %ld of %ld handshakes done\n", run->done, run->opt->total);
  bench_handshake_stop(run);
}

static void bench_handshake_on_sigint(uv_signal_t *s, int signum) {
  (void)signum;
  fprintf(stderr, "hubu-bench: interrupted\n");
  bench_handshake_stop(s->data);
}

int bench_u64_compare(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n) (nanoseconds). */
static double bench_percentile_ns(const uint64_t *v, long n, double p) {
  if (n <= 0) return NAN;
  long rank = (long)ceil(p / 100.0 * (double)n);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return (double)v[rank - 1];
}

double bench_percentile_ms(const uint64_t *v, long n, double p) { return bench_percentile_ns(v, n, p) / 1e6; }

double bench_percentile_us(const uint64_t *v, long n, double p) { return bench_percentile_ns(v, n, p) / 1e3; }

static int bench_handshake_run(const bench_options *o, uv_loop_t *loop) {
  if (o->total <= 0 || o->concurrency <= 0) {
    fprintf(stderr, "hubu-bench handshake: --total N and --concurrency C must be positive\n");
    return 2;
  }
  bench_nofile_raise(o->concurrency * 2, o->server_pid); /* closing ones linger a turn */
  bench_handshake run;
  memset(&run, 0, sizeof run);
  run.opt = o;
  run.loop = loop;
  run.slots = calloc((size_t)o->concurrency, sizeof *run.slots);
  run.latency_ns = calloc((size_t)o->total, sizeof *run.latency_ns);
  if (!run.slots || !run.latency_ns) {
    free(run.slots);
    free(run.latency_ns);
    fprintf(stderr, "hubu-bench: out of memory\n");
    return 1;
  }
  for (long i = 0; i < o->concurrency; i++) {
    run.slots[i].run = &run;
    run.slots[i].index = i;
  }
  double server_cpu0 = bench_proc_cpu_s(&bench_server);
  double cpu0 = bench_self_cpu_s();
  uv_timer_init(loop, &run.timeout);
  uv_signal_init(loop, &run.sigint);
  run.timeout.data = run.sigint.data = &run;
  uv_signal_start_oneshot(&run.sigint, bench_handshake_on_sigint, SIGINT);
  uv_unref((uv_handle_t *)&run.sigint);
  run.t_start = uv_hrtime();
  uv_timer_start(&run.timeout, bench_handshake_on_timeout, o->timeout_ms, 0);
  bench_handshake_fill(&run);
  uv_run(loop, UV_RUN_DEFAULT);
  double cpu = bench_self_cpu_s() - cpu0;
  double server_cpu1 = bench_proc_cpu_s(&bench_server);
  double server_cpu = server_cpu0 >= 0 && server_cpu1 >= 0 ? server_cpu1 - server_cpu0 : -1;

  double elapsed = (double)(run.t_end - run.t_start) / 1e9;
  qsort(run.latency_ns, (size_t)run.done, sizeof *run.latency_ns, bench_u64_compare);
  bench_report r = {.count = 0};
  bench_report_common(&r, o);
  bench_report_number(&r, "total", "handshakes wanted", (double)o->total, "%.0f", "");
  bench_report_number(&r, "concurrency", "concurrency", (double)o->concurrency, "%.0f", "");
  bench_report_number(&r, "done", "handshakes done", (double)run.done, "%.0f", "");
  bench_report_number(&r, "failed", "handshakes failed", (double)run.failed, "%.0f", "");
  if (run.first_error[0]) bench_report_text(&r, "first_error", "first error", "%s", run.first_error);
  bench_report_number(&r, "elapsed_s", "elapsed", elapsed, "%.3f", "s");
  bench_report_number(&r, "handshakes_per_s", "handshakes+HELLO per sec", elapsed > 0 ? (double)run.done / elapsed : 0,
                      "%.0f", "/s");
  bench_report_number(&r, "p50_ms", "connect-to-READY p50", bench_percentile_ms(run.latency_ns, run.done, 50), "%.3f",
                      "ms");
  bench_report_number(&r, "p99_ms", "connect-to-READY p99", bench_percentile_ms(run.latency_ns, run.done, 99), "%.3f",
                      "ms");
  bench_report_number(&r, "max_ms", "connect-to-READY max", bench_percentile_ms(run.latency_ns, run.done, 100), "%.3f",
                      "ms");
  bench_report_cpu(&r, o, cpu, server_cpu, elapsed);
  bench_report_print(&r, o->json);
  free(run.slots);
  free(run.latency_ns);
  return run.done == o->total ? 0 : 1;
}

/* ---- scenarios and main --------------------------------------------------------------- */

typedef struct {
  const char *name;
  const char *summary;
  int (*run)(const bench_options *o, uv_loop_t *loop);
} bench_scenario;

static const bench_scenario bench_scenarios[] = {
    {"idle", "open --conns N authenticated connections, hold them, report server memory per connection",
     bench_idle_run},
    {"handshake", "connect, HELLO, close, repeat until --total N at --concurrency C: rate and latency",
     bench_handshake_run},
    {"pairs", "N sender->receiver pairs, W SENDs outstanding each, until M delivered: throughput, latency, CPU",
     bench_pairs_run},
    {"rate", "fixed offered rate over N pairs for S seconds: latency from the scheduled send time", bench_rate_run},
    {"fanout", "one sender, N online members of a fresh group, K messages one at a time: time to the last member",
     bench_fanout_run},
#ifdef HUBU_BENCH_HAVE_STORE
    {"store", "the durable store alone, through its threaded API (own options: hubu-bench store --help)", NULL},
#endif
#ifdef HUBU_BENCH_HAVE_HOOKS
    {"hooks", "message.send dispatch through hubud's host.lua, in-process: ns per hook call (own options: --help)",
     NULL},
#endif
    {"disk", "the disk alone: BYTES written and fdatasynced RATE times a second, the sync's latency (--help)", NULL},
    {"writes", "one write to each of N loopback sockets, read by another process: a fan-out's floor (--help)", NULL},
    {"serve-http",
     "an HTTP service that answers every request after --latency-ms, for a plugin to call (own options: --help)", NULL},
};
#define BENCH_SCENARIO_COUNT (sizeof bench_scenarios / sizeof bench_scenarios[0])

static void bench_usage(FILE *out) {
  fprintf(out,
          "usage: hubu-bench SCENARIO [options]\n"
          "\n"
          "scenarios:\n");
  for (size_t i = 0; i < BENCH_SCENARIO_COUNT; i++)
    fprintf(out, "  %-10s %s\n", bench_scenarios[i].name, bench_scenarios[i].summary);
  fprintf(
      out,
      "\n"
      "  hubu-bench idle --conns N [--inflight 200] [--hold-ms MS] [common options]\n"
      "  hubu-bench handshake --total N --concurrency C [common options]\n"
      "  hubu-bench pairs [--pairs 100] [--window 32] [--messages 100000] [--body-bytes 100] [common options]\n"
      "  hubu-bench rate [--pairs 100] [--rate 10000] [--seconds 10] [--body-bytes 100] [common options]\n"
      "  hubu-bench serve-http --port-file FILE [--port P] [--latency-ms MS]\n"
      "  hubu-bench disk --data DIR [--bytes 20600] [--rate 1000] [--seconds 10] [--json]\n"
      "  hubu-bench writes [--members 10000] [--bytes 150] [--rounds 20] [--writer-cpu 0] [--reader-cpu 1] [--json]\n"
      "  hubu-bench fanout --data DIR [--members 1000] [--messages 100] [--gap-ms 100] [--body-bytes 100] [common "
      "options]\n"
#ifdef HUBU_BENCH_HAVE_STORE
      "  hubu-bench store [--count N] [--window W] [--body BYTES] [--fsync always|batch|off] [--data DIR] [--json]\n"
#endif
#ifdef HUBU_BENCH_HAVE_HOOKS
      "  hubu-bench hooks [--plugins DIR] [--plugin NAME]... [--words N] [--sends N] [--rounds R] [--json]\n"
#endif
      "\n"
      "common options:\n"
      "  --host H           server address (default 127.0.0.1)\n"
      "  --port P           default 7700, or 7701 with --tls\n"
      "  --tls              connect with TLS (certificate not verified unless --ca)\n"
      "  --ws               connect over WebSocket (/ws on the HTTP listener, subprotocol hubu.v1;\n"
      "                     --port then defaults to 7780)\n"
      "  --ws-json          WebSocket with subprotocol hubu.v1.json: every frame a JSON text message\n"
      "                     (PROTOCOL.md section 9; implies --ws)\n"
      "  --ca FILE          verify the server certificate against this CA (PEM)\n"
      "  --secret S         token secret (the server's --secret)\n"
      "  --data DIR         the server's data directory: the secret is read from DIR/secret\n"
      "                     unless --secret is given; fanout creates its group in DIR/hubu.db\n"
      "  --inflight N       connects in flight at most (default %d)\n"
      "  --server-pid PID   read the server's RSS and CPU from /proc/PID\n"
      "  --db-pid PID       pairs, rate: also report the CPU of the store's database server (mariadbd)\n"
      "  --recv-port P      pairs, rate: receivers connect to this port (another cluster node), senders to --port\n"
      "  --recv-pid PID     pairs, rate: also report the CPU of the receivers' node\n"
      "  --probe-ms MS      pairs, rate: one more connection (bench-probe) PINGs every MS while the load\n"
      "                     runs and reports the round trips: how long the server kept a bystander waiting\n"
      "  --timeout-ms MS    bound on the whole run, connecting included (default %d)\n"
      "  --json             print one JSON object instead of a table\n"
      "  --help             this text\n"
      "\n"
      "idle: point --server-pid at a freshly started server; its RSS does not shrink\n"
      "when memory is freed, so a warm server under-reports bytes per connection.\n"
      "\n"
      "pairs, rate: users bp-s<i> send to bp-r<i> in d:bp-r<i>:bp-s<i>; the SEND body\n"
      "starts with the send time (rate: the scheduled time), and end-to-end latency runs\n"
      "from it to the PUSH's arrival. Receivers acknowledge every PUSH frame.\n"
      "\n"
      "fanout: the group g:bench-fan<N>-<random> with members bf-m0.. and the sender\n"
      "bf-s is written straight into DIR/hubu.db before connecting, so the server must run\n"
      "with the same --data and must not have loaded that group yet (the random suffix\n"
      "makes a fresh one per run). Members acknowledge each message once all of them\n"
      "have it, and the next one follows --gap-ms later, so the DELIVER_ACKs are off the\n"
      "measured path; the time to the last member includes the bench's reading of N sockets.\n"
      "\n"
      "Users idle and handshake use are bench-u0, bench-u1, ...; every user is on device d1.\n"
      "Exit status: 0 when everything wanted was done, 1 otherwise, 2 on bad usage.\n",
      BENCH_DEFAULT_INFLIGHT, BENCH_DEFAULT_TIMEOUT_MS);
}

static int bench_secret_read(bench_options *o, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/secret", dir);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "hubu-bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t n = fread(o->secret, 1, sizeof o->secret, f);
  int too_long = n == sizeof o->secret && fgetc(f) != EOF;
  fclose(f);
  if (too_long) {
    fprintf(stderr, "hubu-bench: %s: secret longer than %zu bytes\n", path, sizeof o->secret);
    return -1;
  }
  while (n > 0 && (o->secret[n - 1] == '\n' || o->secret[n - 1] == '\r')) n--;
  o->secret_len = n;
  o->have_secret = 1;
  return 0;
}

int bench_parse_long(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) return -1;
  *out = v;
  return 0;
}

#ifdef HUBU_BENCH_HAVE_STORE
int hubu_bench_store(int argc, char **argv); /* tools/bench_store.c */
#endif
#ifdef HUBU_BENCH_HAVE_HOOKS
int hubu_bench_hooks(int argc, char **argv); /* tools/bench_hooks.c */
#endif
int hubu_bench_serve_http(int argc, char **argv); /* tools/bench_http.c */
int hubu_bench_disk(int argc, char **argv);       /* tools/bench_floor.c */
int hubu_bench_writes(int argc, char **argv);     /* tools/bench_floor.c */

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    bench_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const bench_scenario *sc = NULL;
  for (size_t i = 0; i < BENCH_SCENARIO_COUNT; i++)
    if (strcmp(argv[1], bench_scenarios[i].name) == 0) sc = &bench_scenarios[i];
  if (!sc) {
    fprintf(stderr, "hubu-bench: unknown scenario '%s'\n\n", argv[1]);
    bench_usage(stderr);
    return 2;
  }
#ifdef HUBU_BENCH_HAVE_HOOKS
  if (!sc->run && !strcmp(sc->name, "hooks")) return hubu_bench_hooks(argc - 1, argv + 1); /* no server */
#endif
  if (!sc->run && !strcmp(sc->name, "serve-http")) return hubu_bench_serve_http(argc - 1, argv + 1);
  if (!sc->run && !strcmp(sc->name, "disk")) return hubu_bench_disk(argc, argv);     /* no server */
  if (!sc->run && !strcmp(sc->name, "writes")) return hubu_bench_writes(argc, argv); /* no server */
#ifdef HUBU_BENCH_HAVE_STORE
  if (!sc->run) { /* store: no server, its own options */
    hubu_log_min_level = HUBU_LOG_WARN;
    return hubu_bench_store(argc - 1, argv + 1);
  }
#endif

  static bench_options o; /* static: the secret buffer stays off the stack */
  o.scenario = sc->name;
  o.host = "127.0.0.1";
  o.inflight = BENCH_DEFAULT_INFLIGHT;
  o.hold_ms = 500;
  o.timeout_ms = BENCH_DEFAULT_TIMEOUT_MS;
  o.pairs = 100;
  o.window = 32;
  o.messages = strcmp(sc->name, "fanout") == 0 ? 100 : 100000;
  o.body_bytes = 100;
  o.rate = 10000;
  o.seconds = 10;
  o.members = 1000;
  o.gap_ms = 100;
  enum {
    O_CONNS = 256,
    O_TOTAL,
    O_CONC,
    O_HOST,
    O_PORT,
    O_TLS,
    O_WS,
    O_WS_JSON,
    O_CA,
    O_SECRET,
    O_DATA,
    O_PID,
    O_DB_PID,
    O_RECV_PORT,
    O_RECV_PID,
    O_HOLD,
    O_TIMEOUT,
    O_JSON,
    O_INFLIGHT,
    O_PAIRS,
    O_WINDOW,
    O_MESSAGES,
    O_BODY,
    O_RATE,
    O_SECONDS,
    O_MEMBERS,
    O_GAP,
    O_PROBE,
    O_HELP
  };
  static const struct option longopts[] = {
      {"conns", required_argument, NULL, O_CONNS},
      {"total", required_argument, NULL, O_TOTAL},
      {"concurrency", required_argument, NULL, O_CONC},
      {"host", required_argument, NULL, O_HOST},
      {"port", required_argument, NULL, O_PORT},
      {"tls", no_argument, NULL, O_TLS},
      {"ws", no_argument, NULL, O_WS},
      {"ws-json", no_argument, NULL, O_WS_JSON},
      {"ca", required_argument, NULL, O_CA},
      {"secret", required_argument, NULL, O_SECRET},
      {"data", required_argument, NULL, O_DATA},
      {"server-pid", required_argument, NULL, O_PID},
      {"db-pid", required_argument, NULL, O_DB_PID},
      {"recv-port", required_argument, NULL, O_RECV_PORT},
      {"recv-pid", required_argument, NULL, O_RECV_PID},
      {"hold-ms", required_argument, NULL, O_HOLD},
      {"timeout-ms", required_argument, NULL, O_TIMEOUT},
      {"json", no_argument, NULL, O_JSON},
      {"inflight", required_argument, NULL, O_INFLIGHT},
      {"pairs", required_argument, NULL, O_PAIRS},
      {"window", required_argument, NULL, O_WINDOW},
      {"messages", required_argument, NULL, O_MESSAGES},
      {"body-bytes", required_argument, NULL, O_BODY},
      {"rate", required_argument, NULL, O_RATE},
      {"seconds", required_argument, NULL, O_SECONDS},
      {"members", required_argument, NULL, O_MEMBERS},
      {"gap-ms", required_argument, NULL, O_GAP},
      {"probe-ms", required_argument, NULL, O_PROBE},
      {"help", no_argument, NULL, O_HELP},
      {NULL, 0, NULL, 0},
  };
  optind = 2;
  int ch;
  long v;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int bad = 0;
    switch (ch) {
      case O_CONNS: bad = bench_parse_long(optarg, 1, 10000000, &o.conns); break;
      case O_TOTAL: bad = bench_parse_long(optarg, 1, 100000000, &o.total); break;
      case O_CONC: bad = bench_parse_long(optarg, 1, 1000000, &o.concurrency); break;
      case O_INFLIGHT: bad = bench_parse_long(optarg, 1, 1000000, &o.inflight); break;
      case O_PAIRS: bad = bench_parse_long(optarg, 1, 1000000, &o.pairs); break;
      case O_WINDOW: bad = bench_parse_long(optarg, 1, 1000000, &o.window); break;
      case O_MESSAGES: bad = bench_parse_long(optarg, 1, 100000000, &o.messages); break;
      case O_BODY: bad = bench_parse_long(optarg, 16, 512 * 1024, &o.body_bytes); break;
      case O_RATE: bad = bench_parse_long(optarg, 1, 10000000, &o.rate); break;
      case O_SECONDS: bad = bench_parse_long(optarg, 1, 86400, &o.seconds); break;
      case O_MEMBERS: bad = bench_parse_long(optarg, 1, 1000000, &o.members); break;
      case O_GAP:
        bad = bench_parse_long(optarg, 0, 600000, &v);
        o.gap_ms = (uint32_t)v;
        break;
      case O_PROBE: bad = bench_parse_long(optarg, 1, 60000, &o.probe_ms); break;
      case O_HOST: o.host = optarg; break;
      case O_PORT:
        bad = bench_parse_long(optarg, 1, 65535, &v);
        o.port = (int)v;
        break;
      case O_TLS: o.tls = 1; break;
      case O_WS: o.ws = 1; break;
      case O_WS_JSON: o.ws = o.ws_json = 1; break;
      case O_CA: o.ca_file = optarg; break;
      case O_SECRET: {
        size_t n = strlen(optarg);
        if (n > sizeof o.secret)
          bad = 1;
        else {
          memcpy(o.secret, optarg, n);
          o.secret_len = n;
          o.have_secret = 1;
        }
        break;
      }
      case O_DATA: o.data_dir = optarg; break;
      case O_PID: bad = bench_parse_long(optarg, 1, 1L << 30, &o.server_pid); break;
      case O_DB_PID: bad = bench_parse_long(optarg, 1, 1L << 30, &o.db_pid); break;
      case O_RECV_PORT: bad = bench_parse_long(optarg, 1, 65535, &o.recv_port); break;
      case O_RECV_PID: bad = bench_parse_long(optarg, 1, 1L << 30, &o.recv_pid); break;
      case O_HOLD:
        bad = bench_parse_long(optarg, 0, 86400000, &v);
        o.hold_ms = (uint32_t)v;
        break;
      case O_TIMEOUT:
        bad = bench_parse_long(optarg, 1, 86400000, &v);
        o.timeout_ms = (uint32_t)v;
        break;
      case O_JSON: o.json = 1; break;
      case O_HELP: bench_usage(stdout); return 0;
      default: bench_usage(stderr); return 2;
    }
    if (bad) {
      fprintf(stderr, "hubu-bench: bad value for %s: '%s'\n", argv[optind - 1], optarg ? optarg : "");
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "hubu-bench: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!o.have_secret && o.data_dir && bench_secret_read(&o, o.data_dir) != 0) return 2;
  if (!o.have_secret) {
    fprintf(stderr, "hubu-bench: --secret S or --data DIR is required to mint tokens\n");
    return 2;
  }

  if (o.server_pid > 0) {
    bench_proc_open(&bench_server, o.server_pid);
    if (bench_server.status_fd < 0 || bench_server.stat_fd < 0)
      fprintf(stderr, "hubu-bench: warning: cannot read /proc/%ld: no server figures\n", o.server_pid);
  }
  if (o.db_pid > 0) {
    bench_proc_open(&bench_db, o.db_pid);
    if (bench_db.stat_fd < 0)
      fprintf(stderr, "hubu-bench: warning: cannot read /proc/%ld: no database figures\n", o.db_pid);
  }
  if (o.recv_pid > 0) {
    bench_proc_open(&bench_recv, o.recv_pid);
    if (bench_recv.stat_fd < 0)
      fprintf(stderr, "hubu-bench: warning: cannot read /proc/%ld: no receiving node figures\n", o.recv_pid);
  }
  bench_proc_open(&bench_self, (long)getpid());
  signal(SIGPIPE, SIG_IGN); /* a peer that goes away is an error value, not a signal */
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 1;
  int rc = sc->run(&o, &loop);
  uv_run(&loop, UV_RUN_DEFAULT); /* whatever is still closing */
  bench_proc_close(&bench_server);
  bench_proc_close(&bench_self);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "hubu-bench: internal error: handles left open\n");
    return 1;
  }
  return rc;
}

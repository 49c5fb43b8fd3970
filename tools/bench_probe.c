/* bench_probe.c — `--probe-ms MS` of pairs and rate: one more connection,
 * user bench-probe, that takes no part in the load and sends a PING every MS
 * (one at a time) while the load runs, and the PONG round trips it measured:
 * how long the server's loop kept an unrelated client waiting. A PING still
 * unanswered when the load ends counts with the time it waited so far.
 * Invariant: the probe's memory outlives its handles (the client and the
 * timer close first; bench_probe_free comes after the loop ran). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench.h"
#include "frame.h"
#include "token.h"

#define PROBE_SAMPLES_MAX (1 << 17) /* 22 minutes of one PING every 10 ms */

struct bench_probe {
  uv_loop_t *loop;
  hubu_client *client; /* NULL once handed to hubu_client_close */
  uv_timer_t timer;
  int timer_open;
  const int *measuring; /* the run's "load under way" flag */
  int ready;
  uint64_t sent_ns; /* the outstanding PING's send time; 0: none */
  uint64_t *rtt_ns; /* owned */
  long n_rtt, lost;
  char error[128];
};

static void probe_record(bench_probe *p, uint64_t ns) {
  if (p->n_rtt < PROBE_SAMPLES_MAX) p->rtt_ns[p->n_rtt++] = ns;
}

static void probe_on_timer(uv_timer_t *t) {
  bench_probe *p = t->data;
  if (!p->ready || !p->client || !*p->measuring || p->sent_ns) return; /* one PING at a time */
  if (hubu_client_ping(p->client) == 0) p->sent_ns = uv_hrtime();
}

static void probe_on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud) {
  (void)c, (void)body, (void)len;
  bench_probe *p = ud;
  if (type != HUBU_FRAME_PONG || !p->sent_ns) return;
  if (*p->measuring) probe_record(p, uv_hrtime() - p->sent_ns);
  p->sent_ns = 0;
}

static void probe_on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)c, (void)info;
  ((bench_probe *)ud)->ready = 1;
}

static void probe_on_state(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud) {
  bench_probe *p = ud;
  if (p->client != c || state != HUBU_CLIENT_CLOSED) return;
  snprintf(p->error, sizeof p->error, "probe connection closed (code %d: %s)", code, reason ? reason : "");
  p->client = NULL;
  hubu_client_close(c, NULL);
}

bench_probe *bench_probe_start(uv_loop_t *loop, const bench_options *o, const int *measuring) {
  if (o->probe_ms <= 0) return NULL;
  bench_probe *p = calloc(1, sizeof *p);
  if (!p || !(p->rtt_ns = malloc(PROBE_SAMPLES_MAX * sizeof *p->rtt_ns))) {
    free(p);
    return NULL;
  }
  p->loop = loop;
  p->measuring = measuring;
  char token[HUBU_TOKEN_MAX];
  hubu_client_options co;
  hubu_client_callbacks cb = {.on_state = probe_on_state, .on_ready = probe_on_ready, .on_frame = probe_on_frame};
  if (bench_client_options(o, &co, "bench-probe", token, sizeof token) != 0) {
    snprintf(p->error, sizeof p->error, "cannot mint the probe's token");
    return p;
  }
  co.no_auto_sync = 1;
  co.frames_only = 1;
  if (!(p->client = hubu_client_new(loop, &co, &cb, p)) || hubu_client_start(p->client) < 0) {
    snprintf(p->error, sizeof p->error, "the probe could not connect");
    if (p->client) hubu_client_close(p->client, NULL);
    p->client = NULL;
    return p;
  }
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  p->timer_open = 1;
  uv_timer_start(&p->timer, probe_on_timer, (uint64_t)o->probe_ms, (uint64_t)o->probe_ms);
  return p;
}

void bench_probe_stop(bench_probe *p) {
  if (!p) return;
  if (p->sent_ns) { /* still unanswered: it waited at least this long */
    probe_record(p, uv_hrtime() - p->sent_ns);
    p->lost++;
    p->sent_ns = 0;
  }
  if (p->timer_open) {
    p->timer_open = 0;
    uv_close((uv_handle_t *)&p->timer, NULL);
  }
  if (p->client) {
    hubu_client *c = p->client;
    p->client = NULL;
    hubu_client_close(c, NULL);
  }
}

void bench_probe_report(bench_probe *p, bench_report *r) {
  if (!p) return;
  if (p->error[0]) bench_report_text(r, "probe_error", "probe", "%s", p->error);
  qsort(p->rtt_ns, (size_t)p->n_rtt, sizeof *p->rtt_ns, bench_u64_compare);
  bench_report_number(r, "probe_pings", "probe pings", (double)p->n_rtt, "%.0f", "");
  bench_report_number(r, "probe_ping_p50_us", "probe ping rtt p50", bench_percentile_us(p->rtt_ns, p->n_rtt, 50),
                      "%.0f", "us");
  bench_report_number(r, "probe_ping_p99_us", "probe ping rtt p99", bench_percentile_us(p->rtt_ns, p->n_rtt, 99),
                      "%.0f", "us");
  bench_report_number(r, "probe_ping_max_us", "probe ping rtt max", bench_percentile_us(p->rtt_ns, p->n_rtt, 100),
                      "%.0f", "us");
  if (p->lost) bench_report_number(r, "probe_unanswered", "probe pings unanswered at end", (double)p->lost, "%.0f", "");
}

void bench_probe_free(bench_probe *p) {
  if (!p) return;
  free(p->rtt_ns);
  free(p);
}

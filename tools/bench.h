/* bench.h — what the hubu-bench scenarios share: the options, the report (a
 * table or one JSON object), process figures from /proc and getrusage, and
 * client options with a freshly minted token. hubu-bench.c defines these and
 * owns the scenario table; bench_msg.c holds the messaging scenarios. */
#ifndef HUBU_BENCH_H
#define HUBU_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "hubu_client.h"

#define BENCH_DEFAULT_INFLIGHT 200
#define BENCH_DEFAULT_TIMEOUT_MS 120000
#define BENCH_TOKEN_TTL_S 86400
#define BENCH_FD_SPARE 64 /* descriptors the bench needs besides its connections */

typedef struct {
  const char *scenario;
  const char *host; /* loopback unless told otherwise */
  int port;         /* 0: 7700, or 7701 with tls */
  int tls;
  int ws;              /* --ws: WebSocket at /ws on the HTTP listener (subprotocol hubu.v1) instead of raw TCP */
  int ws_json;         /* --ws-json: WebSocket with subprotocol hubu.v1.json (frames as JSON text messages) */
  const char *ca_file; /* with it the server certificate is verified */
  uint8_t secret[1024];
  size_t secret_len;
  int have_secret;
  const char *data_dir; /* --data: the server's data directory (secret, fanout's group) */
  long conns;           /* idle */
  long total;           /* handshake */
  long concurrency;     /* handshake */
  long inflight;        /* connects in flight at most (idle, pairs, rate, fanout) */
  long server_pid;      /* 0: no server figures */
  long db_pid;          /* 0: no database figures (--db-pid: the store's database server, e.g. mariadbd) */
  long recv_port;       /* pairs, rate: receivers connect here (another cluster node); 0: --port */
  long recv_pid;        /* 0: no figures of the receivers' node (--recv-pid) */
  long pairs;           /* pairs, rate */
  long window;          /* pairs: SENDs outstanding per sender */
  long messages;        /* pairs: messages in total; fanout: messages one at a time */
  long body_bytes;      /* pairs, rate, fanout: body size (at least 16) */
  long rate;            /* rate: offered messages per second, in total */
  long seconds;         /* rate: length of the schedule */
  long members;         /* fanout: online members */
  uint32_t gap_ms;      /* fanout: pause between messages (the members' DELIVER_ACKs go first) */
  long probe_ms;        /* pairs, rate: an unrelated connection PINGs every probe_ms (0: none) */
  uint32_t hold_ms;
  uint32_t timeout_ms;
  int json;
} bench_options;

/* ---- report: label/value pairs printed as a table or one JSON object ---- */

#define BENCH_REPORT_MAX 64

typedef struct {
  const char *key;   /* JSON key */
  const char *label; /* table label */
  char text[96];     /* table text */
  char json[96];     /* JSON value, already encoded */
} bench_figure;

typedef struct {
  bench_figure figures[BENCH_REPORT_MAX];
  int count;
} bench_report;

/* value goes to JSON as a number (null when not finite); the table shows it with fmt and unit. */
void bench_report_number(bench_report *r, const char *key, const char *label, double value, const char *fmt,
                         const char *unit);
void bench_report_text(bench_report *r, const char *key, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void bench_report_null(bench_report *r, const char *key, const char *label, const char *why);
void bench_report_print(const bench_report *r, int json);
/* scenario and transport */
void bench_report_common(bench_report *r, const bench_options *o);
/* the bench's own CPU and, with --server-pid, the server's, over elapsed_s */
void bench_report_cpu(bench_report *r, const bench_options *o, double self_cpu, double server_cpu, double elapsed_s);

/* ---- process figures ---- */

/* A process's /proc files, opened once at start and re-read with pread, so the
 * figures can still be read when the connections have taken every descriptor. */
typedef struct {
  int status_fd; /* /proc/PID/status, or -1 */
  int stat_fd;   /* /proc/PID/stat, or -1 */
} bench_proc;

extern bench_proc bench_server; /* --server-pid, when given */
extern bench_proc bench_db;     /* --db-pid, when given */
extern bench_proc bench_recv;   /* --recv-pid, when given */
extern bench_proc bench_self;

long bench_proc_rss_kb(const bench_proc *p);  /* VmRSS in KiB, or -1 */
double bench_proc_cpu_s(const bench_proc *p); /* utime + stime in seconds, or -1 */
double bench_self_cpu_s(void);                /* getrusage(RUSAGE_SELF) */
/* Raises RLIMIT_NOFILE to its hard maximum; warns when `wanted` connections
 * will not fit, here or in the server. */
void bench_nofile_raise(long wanted, long server_pid);

/* Client options for user on device d1, with a token minted from the secret;
 * token must have room for HUBU_TOKEN_MAX bytes. 0 or -1. */
int bench_client_options(const bench_options *o, hubu_client_options *co, const char *user, char *token,
                         size_t token_size);

/* ---- latency arrays ---- */

int bench_u64_compare(const void *a, const void *b);

/* A decimal in [min, max] (the whole string); 0, or -1 with *out untouched. */
int bench_parse_long(const char *s, long min, long max, long *out);
/* Nearest-rank percentile of sorted v[0..n): in milliseconds, or microseconds; NAN when n is 0. */
double bench_percentile_ms(const uint64_t *v, long n, double p);
double bench_percentile_us(const uint64_t *v, long n, double p);

/* ---- the probe (bench_probe.c): an unrelated connection's PING round trips ---- */

typedef struct bench_probe bench_probe;

/* Connects user bench-probe and PINGs every o->probe_ms, one at a time,
 * recording round trips while *measuring is set. NULL when o->probe_ms is 0
 * (every call below takes NULL). */
bench_probe *bench_probe_start(uv_loop_t *loop, const bench_options *o, const int *measuring);
/* Closes its connection and timer (a PING still unanswered counts with its wait so far). */
void bench_probe_stop(bench_probe *p);
/* probe_pings, probe_ping_p50_us, _p99_us, _max_us. */
void bench_probe_report(bench_probe *p, bench_report *r);
/* After the loop ran: frees it. */
void bench_probe_free(bench_probe *p);

/* ---- scenarios in bench_msg.c ---- */

int bench_pairs_run(const bench_options *o, uv_loop_t *loop);
int bench_rate_run(const bench_options *o, uv_loop_t *loop);
int bench_fanout_run(const bench_options *o, uv_loop_t *loop);

#endif

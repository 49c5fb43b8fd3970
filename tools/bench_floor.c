/* bench_floor.c — what this machine allows, without hubud: the floors under
 * two of the performance targets.
 *
 *   hubu-bench disk   the disk's fdatasync: BYTES written at the end of a
 *                     reused 64 MiB file (as SQLite reuses its WAL) and synced,
 *                     RATE times a second (0: back to back) for SECONDS.
 *                     A durable commit cannot be acknowledged before its sync
 *                     returns, so the sync's p99 bounds a durable p99.
 *   hubu-bench writes one write of BYTES to each of N loopback TCP sockets,
 *                     ROUNDS times, read by a child process on another CPU:
 *                     the time from the first write to the last byte read is
 *                     what a fan-out to N online members costs with one
 *                     write() each, before any server work.
 *
 * Both print a table, or one JSON object with --json. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "bench.h"

int hubu_bench_disk(int argc, char **argv);
int hubu_bench_writes(int argc, char **argv);

#define DISK_FILE_BYTES (64L * 1024 * 1024)

static uint64_t now_ns(void) {
  return uv_hrtime(); /* CLOCK_MONOTONIC: comparable between the writer and its reader child */
}

static double cpu_us(void) { return bench_self_cpu_s() * 1e6; }

/* A scenario's options: --json, --data DIR (when data is given) and the
 * named numbers. 0, or -1 on anything else (the caller prints its usage). */
typedef struct {
  const char *name;
  long *value;
} num_option;

static int parse_options(int argc, char **argv, const num_option *nums, int *json, const char **data) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--json")) {
      *json = 1;
      continue;
    }
    if (data && !strcmp(a, "--data") && v) {
      *data = argv[++i];
      continue;
    }
    const num_option *o = nums;
    while (o->name && strcmp(a, o->name) != 0) o++;
    if (!o->name || !v || bench_parse_long(v, -1, 1L << 30, o->value) != 0) return -1;
    i++;
  }
  return 0;
}

/* ---- disk ---- */

int hubu_bench_disk(int argc, char **argv) {
  long bytes = 20600, rate = 1000, seconds = 10;
  const char *dir = NULL;
  int json = 0;
  const num_option nums[] = {{"--bytes", &bytes}, {"--rate", &rate}, {"--seconds", &seconds}, {NULL, NULL}};
  if (parse_options(argc, argv, nums, &json, &dir) != 0) {
    fprintf(stderr,
            "usage: hubu-bench disk --data DIR [--bytes 20600] [--rate 1000] [--seconds 10] [--json]\n"
            "  writes BYTES at the end of DIR/hubu-bench-disk (64 MiB, reused from its start) and\n"
            "  fdatasyncs, RATE times a second (0: back to back); reports the sync's latency.\n");
    return 2;
  }
  if (!dir || bytes < 1 || bytes > DISK_FILE_BYTES / 4 || seconds < 1 || rate < 0 || rate > 1000000) {
    fprintf(stderr, "hubu-bench disk: --data DIR is needed; --bytes 1..16 MiB, --rate 0..1000000, --seconds >= 1\n");
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/hubu-bench-disk", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "hubu-bench disk: %s: %s\n", path, strerror(errno));
    return 1;
  }
  char *buf = malloc((size_t)bytes);
  size_t cap = (size_t)(rate ? rate : 20000) * (size_t)seconds + 16;
  uint64_t *sync_ns = malloc(cap * sizeof *sync_ns);
  int rc = 1;
  if (!buf || !sync_ns) goto out;
  memset(buf, 0x5a, (size_t)bytes);
  /* The file first written whole and synced: the runs then overwrite, as a reused WAL does. */
  for (long off = 0; off < DISK_FILE_BYTES; off += bytes)
    if (pwrite(fd, buf, (size_t)bytes, off) != bytes) goto io_error;
  if (fdatasync(fd) != 0) goto io_error;
  size_t n = 0;
  long off = 0;
  double cpu0 = cpu_us();
  uint64_t start = now_ns(), end = start + (uint64_t)seconds * 1000000000u;
  for (uint64_t due = start; n < cap; due += rate ? 1000000000u / (uint64_t)rate : 0) {
    uint64_t t = now_ns();
    if (t >= end) break;
    if (rate && t < due) {
      struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
      }
    }
    if (off + bytes > DISK_FILE_BYTES) off = 0;
    buf[0] = (char)n;
    if (pwrite(fd, buf, (size_t)bytes, off) != bytes) goto io_error;
    off += bytes;
    uint64_t t0 = now_ns();
    if (fdatasync(fd) != 0) goto io_error;
    sync_ns[n++] = now_ns() - t0;
  }
  double secs = (double)(now_ns() - start) / 1e9, cpu = cpu_us() - cpu0;
  qsort(sync_ns, n, sizeof *sync_ns, bench_u64_compare);
  if (json)
    printf(
        "{\"scenario\":\"disk\",\"bytes\":%ld,\"rate\":%ld,\"syncs\":%zu,\"syncs_per_s\":%.0f,"
        "\"sync_p50_us\":%.0f,\"sync_p90_us\":%.0f,\"sync_p99_us\":%.0f,\"sync_p999_us\":%.0f,"
        "\"sync_max_us\":%.0f,\"cpu_us_per_sync\":%.1f}\n",
        bytes, rate, n, n / secs, bench_percentile_us(sync_ns, (long)n, 50), bench_percentile_us(sync_ns, (long)n, 90),
        bench_percentile_us(sync_ns, (long)n, 99), bench_percentile_us(sync_ns, (long)n, 99.9),
        bench_percentile_us(sync_ns, (long)n, 100), n ? cpu / (double)n : 0);
  else
    printf(
        "disk: %zu syncs of %ld B (%.0f/s): fdatasync p50 %.0f us, p90 %.0f, p99 %.0f, p999 %.0f, max %.0f; "
        "%.1f us CPU per write+sync\n",
        n, bytes, n / secs, bench_percentile_us(sync_ns, (long)n, 50), bench_percentile_us(sync_ns, (long)n, 90),
        bench_percentile_us(sync_ns, (long)n, 99), bench_percentile_us(sync_ns, (long)n, 99.9),
        bench_percentile_us(sync_ns, (long)n, 100), n ? cpu / (double)n : 0);
  rc = 0;
  goto out;
io_error:
  fprintf(stderr, "hubu-bench disk: %s: %s\n", path, strerror(errno));
out:
  free(buf);
  free(sync_ns);
  close(fd);
  unlink(path);
  return rc;
}

/* ---- writes ---- */

static int pin(long cpu) {
  if (cpu < 0) return 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET((int)cpu, &set);
  return sched_setaffinity(0, sizeof set, &set);
}

/* The child: reads every socket until each has `bytes` per round, and
 * writes the monotonic time of each round's last byte to the pipe. */
static int reader(int *fds, long n, long bytes, long rounds, int out) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return 1;
  long *got = calloc((size_t)n, sizeof *got);
  struct epoll_event *evs = malloc(1024 * sizeof *evs);
  if (!got || !evs) return 1;
  for (long i = 0; i < n; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) return 1;
  }
  char buf[65536];
  for (long r = 1; r <= rounds; r++) {
    long complete = 0;
    while (complete < n) {
      int k = epoll_wait(ep, evs, 1024, 10000);
      if (k <= 0) return 1;
      for (int j = 0; j < k; j++) {
        long i = (long)evs[j].data.u64;
        ssize_t m = read(fds[i], buf, sizeof buf);
        if (m <= 0) return 1;
        long before = got[i];
        got[i] += m;
        if (before < r * bytes && got[i] >= r * bytes) complete++;
      }
    }
    uint64_t t = now_ns();
    if (write(out, &t, sizeof t) != (ssize_t)sizeof t) return 1;
  }
  return 0;
}

int hubu_bench_writes(int argc, char **argv) {
  long members = 10000, bytes = 150, rounds = 20, writer_cpu = 0, reader_cpu = 1;
  int json = 0;
  const num_option nums[] = {{"--members", &members},       {"--bytes", &bytes},           {"--rounds", &rounds},
                             {"--writer-cpu", &writer_cpu}, {"--reader-cpu", &reader_cpu}, {NULL, NULL}};
  if (parse_options(argc, argv, nums, &json, NULL) != 0) {
    fprintf(stderr,
            "usage: hubu-bench writes [--members 10000] [--bytes 150] [--rounds 20]\n"
            "                         [--writer-cpu 0] [--reader-cpu 1] [--json]     (a CPU of -1: not pinned)\n"
            "  one write() of BYTES to each of N loopback TCP connections per round, read by a\n"
            "  child process on the reader CPU: time from the first write to the last byte.\n");
    return 2;
  }
  if (members < 1 || bytes < 1 || bytes > 4096 || rounds < 1 || writer_cpu >= CPU_SETSIZE ||
      reader_cpu >= CPU_SETSIZE) {
    fprintf(stderr, "hubu-bench writes: --members >= 1, --bytes 1..4096, --rounds >= 1, CPUs -1..%d\n",
            CPU_SETSIZE - 1);
    return 2;
  }
  bench_nofile_raise(members, 0); /* each process holds one end of every connection */
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
    fprintf(stderr, "hubu-bench writes: listen: %s\n", strerror(errno));
    return 1;
  }
  int p[2];
  if (pipe(p) != 0) return 1;
  fflush(NULL);
  pid_t child = fork();
  if (child == 0) { /* the members: connect, say so, read */
    close(p[0]);
    close(lfd);
    pin(reader_cpu);
    int *cfd = malloc((size_t)members * sizeof *cfd);
    if (!cfd) _exit(1);
    for (long i = 0; i < members; i++) {
      cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (cfd[i] < 0 || connect(cfd[i], (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "hubu-bench writes: connection %ld: %s\n", i, strerror(errno));
        _exit(1);
      }
    }
    uint64_t ready = 0;
    if (write(p[1], &ready, sizeof ready) != (ssize_t)sizeof ready) _exit(1);
    _exit(reader(cfd, members, bytes, rounds, p[1]));
  }
  close(p[1]);
  int *sfd = malloc((size_t)members * sizeof *sfd);
  char *payload = malloc((size_t)bytes);
  uint64_t *write_ns = calloc((size_t)rounds, sizeof *write_ns), *lat = calloc((size_t)rounds, sizeof *lat);
  int failed = child < 0 || !sfd || !payload || !write_ns || !lat;
  if (!failed) memset(payload, 'p', (size_t)bytes);
  int one = 1;
  long accepted = 0;
  for (; accepted < members && !failed; accepted++) {
    if ((sfd[accepted] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
      fprintf(stderr, "hubu-bench writes: accept: %s\n", strerror(errno));
      failed = 1;
      break;
    }
    setsockopt(sfd[accepted], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  uint64_t t;
  if (!failed && read(p[0], &t, sizeof t) != (ssize_t)sizeof t) failed = 1; /* every member connected */
  pin(writer_cpu);
  double cpu0 = cpu_us();
  for (long r = 0; r < rounds && !failed; r++) {
    usleep(50000); /* the reader drained the last round and waits */
    uint64_t t0 = now_ns();
    for (long i = 0; i < members; i++)
      if (write(sfd[i], payload, (size_t)bytes) != bytes) failed = 1;
    write_ns[r] = now_ns() - t0;
    if (read(p[0], &t, sizeof t) != (ssize_t)sizeof t) failed = 1;
    lat[r] = t - t0;
  }
  double cpu = cpu_us() - cpu0; /* the pauses between rounds cost none */
  int status = 0;
  if (child > 0) {
    if (failed) kill(child, SIGKILL);
    waitpid(child, &status, 0);
  }
  int rc = 0;
  if (failed || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "hubu-bench writes: a round did not complete\n");
    rc = 1;
    goto out;
  }
  qsort(lat, (size_t)rounds, sizeof *lat, bench_u64_compare);
  qsort(write_ns, (size_t)rounds, sizeof *write_ns, bench_u64_compare);
  double per_write = cpu / (double)(members * rounds);
  if (json)
    printf(
        "{\"scenario\":\"writes\",\"members\":%ld,\"bytes\":%ld,\"rounds\":%ld,\"last_p50_ms\":%.2f,"
        "\"last_max_ms\":%.2f,\"write_loop_p50_ms\":%.2f,\"cpu_us_per_write\":%.2f}\n",
        members, bytes, rounds, bench_percentile_ms(lat, rounds, 50), bench_percentile_ms(lat, rounds, 100),
        bench_percentile_ms(write_ns, rounds, 50), per_write);
  else
    printf(
        "writes: %ld sockets x %ld B, %ld rounds: to the last byte read p50 %.2f ms, max %.2f ms; "
        "the write loop p50 %.2f ms; %.2f us CPU per write\n",
        members, bytes, rounds, bench_percentile_ms(lat, rounds, 50), bench_percentile_ms(lat, rounds, 100),
        bench_percentile_ms(write_ns, rounds, 50), per_write);
out:
  for (long i = 0; i < accepted; i++) close(sfd[i]);
  close(lfd);
  close(p[0]);
  free(sfd);
  free(payload);
  free(write_ns);
  free(lat);
  return rc;
}

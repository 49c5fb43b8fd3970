/* harness.c — processes, sockets and frames for the end-to-end tests.
 * Invariant: a started hubud is in `reg` until its status is collected, and
 * its temp dir until removed; the exit paths (atexit, watchdog) sweep both.
 * Every wait here has a deadline. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef HUBUD_PATH
#error "HUBUD_PATH must name the hubud binary"
#endif

int e2e_failures = 0;
const char *const *e2e_server_wrapper = NULL;
int e2e_server_start_ms = 10000;
int e2e_server_stop_ms = 5000;

/* Every started hubud and temp dir, by value: the exit paths sweep these even
 * when the e2e_server that started them is gone. */
#define MAX_SERVERS 8
static struct {
  pid_t pid;    /* 0: not running (or reaped) */
  char dir[64]; /* "": slot free */
} reg[MAX_SERVERS];

static void vfail(const char *file, int line, const char *fmt, va_list ap) {
  fprintf(stderr, "%s:%d: FAIL ", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  fflush(stderr);
  e2e_failures++;
}

void e2e_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(file, line, fmt, ap);
  va_end(ap);
}

int e2e_check(int ok, const char *file, int line, const char *text) {
  if (!ok) e2e_fail(file, line, "%s", text);
  return ok;
}

int e2e_checkf(int ok, const char *file, int line, const char *fmt, ...) {
  if (ok) return 1;
  va_list ap;
  va_start(ap, fmt);
  vfail(file, line, fmt, ap);
  va_end(ap);
  return 0;
}

/* ---- time ---------------------------------------------------------------- */

uint64_t e2e_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void e2e_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

/* ---- temp dirs and children ------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

void e2e_remove_tree(const char *dir) {
  if (dir[0]) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int register_server(const char *dir) {
  for (int i = 0; i < MAX_SERVERS; i++) {
    if (!reg[i].dir[0]) {
      reg[i].pid = 0;
      snprintf(reg[i].dir, sizeof reg[i].dir, "%s", dir);
      return i;
    }
  }
  fprintf(stderr, "harness: more than %d servers at once\n", MAX_SERVERS);
  return -1;
}

static void cleanup_slot(int i) {
  if (reg[i].pid > 0) {
    kill(reg[i].pid, SIGKILL);
    waitpid(reg[i].pid, NULL, 0);
    reg[i].pid = 0;
  }
  e2e_remove_tree(reg[i].dir);
  reg[i].dir[0] = '\0';
}

void e2e_server_cleanup(e2e_server *s) {
  if (s->slot >= 0 && s->slot < MAX_SERVERS && reg[s->slot].dir[0] && strcmp(reg[s->slot].dir, s->dir) == 0)
    cleanup_slot(s->slot);
  s->slot = -1;
  s->pid = 0;
}

static void cleanup_all(void) {
  for (int i = 0; i < MAX_SERVERS; i++)
    if (reg[i].dir[0]) cleanup_slot(i);
}

_Noreturn void e2e_abort(void) {
  fprintf(stderr, "harness: case aborted after %d failure(s)\n", e2e_failures);
  exit(1); /* atexit: cleanup_all */
}

/* SIGALRM: the case overran its budget. Kills first (async-signal-safe), then
 * removes the dirs, which is not, but the case is stuck in a wait anyway. */
static void on_watchdog(int sig) {
  (void)sig;
  static const char msg[] = "harness: watchdog expired, killing hubud\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  for (int i = 0; i < MAX_SERVERS; i++)
    if (reg[i].pid > 0) kill(reg[i].pid, SIGKILL);
  cleanup_all();
  _exit(3);
}

long e2e_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return (long)rl.rlim_cur;
}

int e2e_main(int argc, char **argv, const e2e_case *cases, size_t n_cases) {
  signal(SIGPIPE, SIG_IGN);
  atexit(cleanup_all);
  const char *wd = getenv("E2E_WATCHDOG_S");
  signal(SIGALRM, on_watchdog);
  alarm(wd ? (unsigned)atoi(wd) : 110u);

  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < n_cases; i++) printf("%s\n", cases[i].name);
    return 0;
  }
  int ran = 0;
  for (size_t i = 0; i < n_cases; i++) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    int before = e2e_failures;
    uint64_t t0 = e2e_now_ms();
    fprintf(stderr, "== %s\n", cases[i].name);
    cases[i].run();
    cleanup_all(); /* a case that forgot to stop its server */
    fprintf(stderr, "== %s: %s (%llu ms)\n", cases[i].name, e2e_failures == before ? "ok" : "FAILED",
            (unsigned long long)(e2e_now_ms() - t0));
    ran++;
  }
  if (!ran) {
    fprintf(stderr, "no case named '%s'\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  return e2e_failures ? 1 : 0;
}

/* ---- hubud ------------------------------------------------------------------ */

/* Runs argv (NULL-terminated) with stdout and stderr silenced; its exit status or -1. */
static int run_quiet(char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 1);
      dup2(null, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int has_arg(char **args, int n, const char *flag) {
  for (int i = 0; i < n; i++)
    if (strcmp(args[i], flag) == 0) return 1;
  return 0;
}

/* Parses "tcp PORT" / "tls PORT" lines; 1 when every wanted line is there. */
static int read_port_file(e2e_server *s, const char *path, int want_tls) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[128];
  int tcp = 0, tls = 0, http = 0, https = 0;
  while (fgets(line, sizeof line, f)) {
    int p;
    if (sscanf(line, "tcp %d", &p) == 1 && p > 0) tcp = p;
    if (sscanf(line, "tls %d", &p) == 1 && p > 0) tls = p;
    if (sscanf(line, "http %d", &p) == 1 && p > 0) http = p;
    if (sscanf(line, "https %d", &p) == 1 && p > 0) https = p;
  }
  fclose(f);
  if (!tcp || (want_tls && !tls)) return 0;
  s->port = tcp;
  s->tls_port = tls;
  s->http_port = http;
  s->https_port = https;
  return 1;
}

#define MAX_ARGS 64

static int server_startv(e2e_server *s, int tls, va_list ap) {
  memset(s, 0, sizeof *s);
  s->slot = -1;
  snprintf(s->dir, sizeof s->dir, "/tmp/hubu-e2e-XXXXXX");
  if (!mkdtemp(s->dir)) {
    fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
    return -1;
  }
  s->slot = register_server(s->dir);
  if (s->slot < 0) {
    e2e_remove_tree(s->dir);
    return -1;
  }

  char extra_buf[MAX_ARGS][160];
  char *extra[MAX_ARGS];
  int n_extra = 0;
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
    if (n_extra == MAX_ARGS) return -1;
    snprintf(extra_buf[n_extra], sizeof extra_buf[0], "%s", a);
    extra[n_extra] = extra_buf[n_extra];
    n_extra++;
  }

  char data[96], ports[96], plugins[96];
  snprintf(data, sizeof data, "%s/data", s->dir);
  snprintf(plugins, sizeof plugins, "%s/plugins", s->dir); /* none: these tests are of the core */
  snprintf(ports, sizeof ports, "%s/ports", s->dir);
  mkdir(data, 0700);
  if (tls) {
    snprintf(s->cert, sizeof s->cert, "%s/cert.pem", s->dir);
    snprintf(s->key, sizeof s->key, "%s/key.pem", s->dir);
    char *req[] = {"openssl",
                   "req",
                   "-x509",
                   "-newkey",
                   "ec",
                   "-pkeyopt",
                   "ec_paramgen_curve:prime256v1",
                   "-nodes",
                   "-days",
                   "2",
                   "-subj",
                   "/CN=localhost",
                   "-keyout",
                   s->key,
                   "-out",
                   s->cert,
                   NULL};
    if (run_quiet(req) != 0) {
      fprintf(stderr, "harness: openssl req failed to make a certificate\n");
      return -1;
    }
  }

  char *argv[2 * MAX_ARGS + 32];
  int n = 0;
  for (const char *const *w = e2e_server_wrapper; w && *w; w++) argv[n++] = (char *)*w;
  argv[n++] = HUBUD_PATH;
#define DEFAULT_ARG(flag, value)        \
  if (!has_arg(extra, n_extra, flag)) { \
    argv[n++] = flag;                   \
    argv[n++] = (char *)(value);        \
  }
  DEFAULT_ARG("--listen", "127.0.0.1:0");
  DEFAULT_ARG("--secret", E2E_SECRET);
  DEFAULT_ARG("--port-file", ports);
  DEFAULT_ARG("--data", data);
  DEFAULT_ARG("--drain-ms", "1000");
  DEFAULT_ARG("--admin-listen", "127.0.0.1:0"); /* never the fixed default port: tests run in parallel */
  DEFAULT_ARG("--http-listen", "127.0.0.1:0");
  DEFAULT_ARG("--plugins", plugins);
  if (tls) {
    DEFAULT_ARG("--tls-listen", "127.0.0.1:0");
    DEFAULT_ARG("--cert", s->cert);
    DEFAULT_ARG("--key", s->key);
  }
#undef DEFAULT_ARG
  for (int i = 0; i < n_extra; i++) argv[n++] = extra[i];
  argv[n] = NULL;

  fprintf(stderr, "harness: starting");
  for (int i = 0; i < n; i++) fprintf(stderr, " %s", argv[i]);
  fputc('\n', stderr);
  fflush(stderr);

  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    if (getppid() != parent) _exit(126);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv);
    fprintf(stderr, "harness: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  s->pid = pid;
  reg[s->slot].pid = pid;

  uint64_t deadline = e2e_now_ms() + (uint64_t)e2e_server_start_ms;
  while (e2e_now_ms() < deadline) {
    if (read_port_file(s, ports, tls)) return 0;
    int st;
    if (e2e_server_poll(s, &st)) {
      fprintf(stderr, "harness: hubud exited with status %d before writing %s\n", st, ports);
      return -1;
    }
    e2e_sleep_ms(10);
  }
  fprintf(stderr, "harness: no port line in %s after %d ms\n", ports, e2e_server_start_ms);
  return -1;
}

int e2e_server_start(e2e_server *s, ...) {
  va_list ap;
  va_start(ap, s);
  int r = server_startv(s, 0, ap);
  va_end(ap);
  return r;
}

int e2e_server_start_tls(e2e_server *s, ...) {
  va_list ap;
  va_start(ap, s);
  int r = server_startv(s, 1, ap);
  va_end(ap);
  return r;
}

static int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

int e2e_server_poll(e2e_server *s, int *status) {
  if (s->pid <= 0) {
    *status = -1;
    return 1;
  }
  int st;
  pid_t r = waitpid(s->pid, &st, WNOHANG);
  if (r == s->pid) {
    if (s->slot >= 0) reg[s->slot].pid = 0;
    s->pid = 0;
    *status = decode_status(st);
    return 1;
  }
  return 0;
}

void e2e_server_signal(e2e_server *s, int sig) {
  if (s->pid > 0) kill(s->pid, sig);
}

int e2e_server_wait(e2e_server *s, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  int st;
  for (;;) {
    if (e2e_server_poll(s, &st)) return st;
    if (e2e_now_ms() >= deadline) return -1;
    e2e_sleep_ms(5);
  }
}

int e2e_server_stop(e2e_server *s) {
  int st = -1;
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    st = e2e_server_wait(s, e2e_server_stop_ms);
    if (st == -1) fprintf(stderr, "harness: hubud still running %d ms after SIGTERM, killing it\n", e2e_server_stop_ms);
  }
  e2e_server_cleanup(s);
  return st;
}

long e2e_server_rss_kb(const e2e_server *s) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

int e2e_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* ---- sockets ------------------------------------------------------------------ */

int e2e_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* TLS connections by fd: the frame helpers read and write through the SSL of an fd found here. */
#define MAX_TLS 16
static struct {
  int fd;
  SSL *ssl;
} tls_conns[MAX_TLS];

SSL *e2e_tls_of(int fd) {
  for (int i = 0; i < MAX_TLS; i++)
    if (tls_conns[i].ssl && tls_conns[i].fd == fd) return tls_conns[i].ssl;
  return NULL;
}

static void print_ssl_errors(void) {
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    fprintf(stderr, "  openssl: %s\n", buf);
  }
}

int e2e_connect_tls(int port, int version, const char *ca_file) {
  int slot = -1;
  for (int i = 0; i < MAX_TLS && slot < 0; i++)
    if (!tls_conns[i].ssl) slot = i;
  if (slot < 0) return -1;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return -1;
  SSL_CTX_set_min_proto_version(ctx, version ? version : TLS1_2_VERSION);
  if (version) SSL_CTX_set_max_proto_version(ctx, version);
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF); /* a close without close_notify reads as EOF */
  if (ca_file) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) fprintf(stderr, "harness: cannot load %s\n", ca_file);
  }
  SSL *ssl = SSL_new(ctx);
  SSL_CTX_free(ctx); /* ssl holds its own reference */
  int fd = ssl ? e2e_connect(port) : -1;
  if (fd < 0) {
    SSL_free(ssl);
    return -1;
  }
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (ca_file) SSL_set1_host(ssl, "localhost");
  int r = SSL_connect(ssl); /* blocking; SO_RCVTIMEO bounds it */
  if (r != 1) {
    fprintf(stderr, "harness: SSL_connect: %d (SSL_get_error %d, verify %ld)\n", r, SSL_get_error(ssl, r),
            SSL_get_verify_result(ssl));
    print_ssl_errors();
    SSL_free(ssl);
    close(fd);
    return -1;
  }
  tls_conns[slot].fd = fd;
  tls_conns[slot].ssl = ssl;
  return fd;
}

void e2e_close(int fd) {
  for (int i = 0; i < MAX_TLS; i++) {
    if (tls_conns[i].ssl && tls_conns[i].fd == fd) {
      SSL_free(tls_conns[i].ssl);
      tls_conns[i].ssl = NULL;
    }
  }
  close(fd);
}

int e2e_send_raw(int fd, const void *data, size_t len) {
  const uint8_t *p = data;
  SSL *ssl = e2e_tls_of(fd);
  if (ssl) return len == 0 || SSL_write(ssl, data, (int)len) == (int)len ? 0 : -1;
  while (len > 0) {
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int e2e_send_frame(int fd, uint8_t type, uint8_t flags, const void *body, size_t len) {
  uint8_t h[HUBU_FRAME_HEADER_SIZE];
  hubu_frame_header_encode(h, type, flags, (uint32_t)len);
  hubu_buf b = {0};
  int r = hubu_buf_append(&b, h, sizeof h) == 0 && (len == 0 || hubu_buf_append(&b, body, len) == 0)
              ? e2e_send_raw(fd, hubu_buf_head(&b), hubu_buf_size(&b))
              : -1;
  hubu_buf_free(&b);
  return r;
}

int e2e_send_msg(int fd, uint8_t type, const ProtobufCMessage *msg) {
  hubu_buf b = {0};
  int r = hubu_wire_append(&b, type, msg) == 0 ? e2e_send_raw(fd, hubu_buf_head(&b), hubu_buf_size(&b)) : -1;
  hubu_buf_free(&b);
  return r;
}

int e2e_send_ping(int fd, uint8_t type, uint64_t time_ms) {
  Hubu__V1__Ping p = HUBU__V1__PING__INIT;
  p.time_ms = time_ms;
  return e2e_send_msg(fd, type, &p.base);
}

void e2e_token(const char *user, char *out) {
  uint64_t expiry = (uint64_t)time(NULL) + 3600;
  if (hubu_token_mint((const uint8_t *)E2E_SECRET, strlen(E2E_SECRET), user, expiry, out, HUBU_TOKEN_MAX) < 0)
    snprintf(out, HUBU_TOKEN_MAX, "unmintable");
}

void e2e_token_raw(const char *secret, const char *user, uint64_t expiry_s, char *out, size_t out_size) {
  int n = snprintf(out, out_size, "v1.%s.%llu", user, (unsigned long long)expiry_s);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)out, (size_t)n, mac, &mac_len);
  size_t at = (size_t)n;
  if (at + 1 + 2 * mac_len + 1 > out_size) return;
  out[at++] = '.';
  for (unsigned i = 0; i < mac_len; i++) at += (size_t)snprintf(out + at, 3, "%02x", mac[i]);
}

int e2e_send_hello(int fd, const char *user, const char *device, const char *token) {
  char tok[HUBU_TOKEN_MAX];
  if (!token) {
    e2e_token(user, tok);
    token = tok;
  }
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = (char *)user;
  h.device_id = (char *)device;
  h.token = (char *)token;
  h.client_info = "hubu-e2e";
  return e2e_send_msg(fd, HUBU_FRAME_HELLO, &h.base);
}

/* ---- reading frames ------------------------------------------------------------ */

/* Reads exactly len bytes before deadline. 1, 0 on EOF, -1 timeout, -2 error. */
static int read_exact(int fd, uint8_t *p, size_t len, uint64_t deadline) {
  size_t got = 0;
  SSL *ssl = e2e_tls_of(fd);
  while (got < len) {
    if (ssl && SSL_pending(ssl) > 0) {
      int r = SSL_read(ssl, p + got, (int)(len - got));
      if (r <= 0) return E2E_READ_ERROR;
      got += (size_t)r;
      continue;
    }
    uint64_t now = e2e_now_ms();
    if (now >= deadline) return E2E_READ_TIMEOUT;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)(deadline - now));
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return E2E_READ_ERROR;
    if (pr == 0) return E2E_READ_TIMEOUT;
    if (ssl) {
      /* a whole record is usually there; SSL_read blocks for the rest (SO_RCVTIMEO) */
      int r = SSL_read(ssl, p + got, (int)(len - got));
      if (r > 0) {
        got += (size_t)r;
        continue;
      }
      int err = SSL_get_error(ssl, r);
      if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && (errno == 0 || errno == ECONNRESET)))
        return E2E_READ_EOF;
      if (err == SSL_ERROR_WANT_READ) continue; /* e.g. a TLS 1.3 ticket: no application data yet */
      print_ssl_errors();
      return E2E_READ_ERROR;
    }
    ssize_t r = recv(fd, p + got, len - got, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0 && errno == ECONNRESET) return E2E_READ_EOF;
    if (r < 0) return E2E_READ_ERROR;
    if (r == 0) return E2E_READ_EOF;
    got += (size_t)r;
  }
  return E2E_READ_OK;
}

int e2e_read_frame(int fd, int timeout_ms, e2e_frame *out) {
  memset(out, 0, sizeof *out);
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  uint8_t h[HUBU_FRAME_HEADER_SIZE];
  int r = read_exact(fd, h, sizeof h, deadline);
  if (r != E2E_READ_OK) return r;
  if (h[0] != HUBU_FRAME_MAGIC || h[1] != HUBU_FRAME_VERSION) {
    fprintf(stderr, "harness: server sent a bad header %02x %02x\n", h[0], h[1]);
    return E2E_READ_ERROR;
  }
  out->type = h[2];
  out->flags = h[3];
  out->len = ((uint32_t)h[4] << 24) | ((uint32_t)h[5] << 16) | ((uint32_t)h[6] << 8) | h[7];
  if (out->len > (16u << 20)) return E2E_READ_ERROR;
  out->body = malloc(out->len ? out->len : 1);
  if (!out->body) return E2E_READ_ERROR;
  r = read_exact(fd, out->body, out->len, deadline);
  if (r != E2E_READ_OK) e2e_frame_free(out);
  return r;
}

void e2e_frame_free(e2e_frame *f) {
  free(f->body);
  f->body = NULL;
}

const char *e2e_read_result_name(int r) {
  switch (r) {
    case E2E_READ_OK: return "a frame";
    case E2E_READ_EOF: return "EOF";
    case E2E_READ_TIMEOUT: return "nothing (timeout)";
    default: return "a read error";
  }
}

/* "ERROR{code=BAD_FRAME frame_type=3 message=...}" and the like, for failure messages. */
static const char *describe(const e2e_frame *f, char *buf, size_t size) {
  if (f->type == HUBU_FRAME_ERROR) {
    Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, f->len, f->body);
    if (e) {
      snprintf(buf, size, "ERROR{code=%s frame_type=%u message=\"%s\"}", hubu_code_name(e->code), e->frame_type,
               e->message);
      hubu__v1__error__free_unpacked(e, NULL);
      return buf;
    }
  } else if (f->type == HUBU_FRAME_GOAWAY) {
    Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, f->len, f->body);
    if (g) {
      snprintf(buf, size, "GOAWAY{code=%s reason=\"%s\"}", hubu_code_name(g->code), g->reason);
      hubu__v1__go_away__free_unpacked(g, NULL);
      return buf;
    }
  }
  snprintf(buf, size, "%s (0x%02x, %u body bytes)", hubu_frame_type_name(f->type), f->type, f->len);
  return buf;
}

int e2e_check_error_frame_at(const char *file, int line, const e2e_frame *f, Hubu__V1__Code code, int frame_type) {
  char d[256];
  if (f->type != HUBU_FRAME_ERROR) {
    e2e_fail(file, line, "expected ERROR %s, got %s", hubu_code_name(code), describe(f, d, sizeof d));
    return 0;
  }
  Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, f->len, f->body);
  int ok = 0;
  if (!e)
    e2e_fail(file, line, "expected ERROR %s, got an ERROR body that does not decode", hubu_code_name(code));
  else if (e->code != code || (frame_type >= 0 && e->frame_type != (uint32_t)frame_type))
    e2e_fail(file, line, "expected ERROR{code=%s frame_type=%d}, got %s", hubu_code_name(code), frame_type,
             describe(f, d, sizeof d));
  else
    ok = 1;
  if (e) hubu__v1__error__free_unpacked(e, NULL);
  return ok;
}

int e2e_expect_error_at(const char *file, int line, int fd, Hubu__V1__Code code, int frame_type, int timeout_ms) {
  e2e_frame f;
  int r = e2e_read_frame(fd, timeout_ms, &f);
  if (r != E2E_READ_OK) {
    e2e_fail(file, line, "expected ERROR %s, got %s", hubu_code_name(code), e2e_read_result_name(r));
    return 0;
  }
  int ok = e2e_check_error_frame_at(file, line, &f, code, frame_type);
  e2e_frame_free(&f);
  return ok;
}

int e2e_expect_eof_at(const char *file, int line, int fd, int allow_goaway, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (int i = 0; i < 8; i++) {
    uint64_t now = e2e_now_ms();
    e2e_frame f;
    int r = e2e_read_frame(fd, now < deadline ? (int)(deadline - now) : 0, &f);
    if (r == E2E_READ_EOF) return 1;
    if (r != E2E_READ_OK) {
      e2e_fail(file, line, "expected the server to close the connection, got %s", e2e_read_result_name(r));
      return 0;
    }
    char d[256];
    describe(&f, d, sizeof d);
    int goaway = f.type == HUBU_FRAME_GOAWAY;
    e2e_frame_free(&f);
    if (!(allow_goaway && goaway)) {
      e2e_fail(file, line, "expected the server to close the connection, got %s", d);
      return 0;
    }
  }
  e2e_fail(file, line, "expected the server to close the connection, got a stream of GOAWAYs");
  return 0;
}

int e2e_expect_pong_at(const char *file, int line, int fd, uint64_t time_ms, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  e2e_frame f;
  int r;
  /* Server heartbeat PINGs may come first; they are skipped. */
  for (int skipped = 0;; skipped++) {
    uint64_t now = e2e_now_ms();
    r = e2e_read_frame(fd, now < deadline ? (int)(deadline - now) : 0, &f);
    if (r != E2E_READ_OK || f.type != HUBU_FRAME_PING || skipped == 8) break;
    e2e_frame_free(&f);
  }
  if (r != E2E_READ_OK) {
    e2e_fail(file, line, "expected PONG{time_ms=%llu}, got %s", (unsigned long long)time_ms, e2e_read_result_name(r));
    return 0;
  }
  int ok = 0;
  char d[256];
  if (f.type != HUBU_FRAME_PONG) {
    e2e_fail(file, line, "expected PONG{time_ms=%llu}, got %s", (unsigned long long)time_ms, describe(&f, d, sizeof d));
  } else {
    Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, f.len, f.body);
    if (!p || p->time_ms != time_ms)
      e2e_fail(file, line, "expected PONG{time_ms=%llu}, got PONG{time_ms=%llu}%s", (unsigned long long)time_ms,
               p ? (unsigned long long)p->time_ms : 0ull, p ? "" : " (undecodable)");
    else
      ok = 1;
    if (p) hubu__v1__ping__free_unpacked(p, NULL);
  }
  e2e_frame_free(&f);
  return ok;
}

int e2e_expect_goaway_at(const char *file, int line, int fd, Hubu__V1__Code code, int timeout_ms) {
  e2e_frame f;
  int r = e2e_read_frame(fd, timeout_ms, &f);
  if (r != E2E_READ_OK) {
    e2e_fail(file, line, "expected GOAWAY %s, got %s", hubu_code_name(code), e2e_read_result_name(r));
    return 0;
  }
  int ok = 0;
  char d[256];
  Hubu__V1__GoAway *g = f.type == HUBU_FRAME_GOAWAY ? hubu__v1__go_away__unpack(NULL, f.len, f.body) : NULL;
  if (!g || g->code != code)
    e2e_fail(file, line, "expected GOAWAY %s, got %s", hubu_code_name(code), describe(&f, d, sizeof d));
  else
    ok = 1;
  if (g) hubu__v1__go_away__free_unpacked(g, NULL);
  e2e_frame_free(&f);
  return ok;
}

int e2e_expect_hello_ok_at(const char *file, int line, int fd, Hubu__V1__HelloOk **out, int timeout_ms) {
  if (out) *out = NULL;
  e2e_frame f;
  int r = e2e_read_frame(fd, timeout_ms, &f);
  if (r != E2E_READ_OK) {
    e2e_fail(file, line, "expected HELLO_OK, got %s", e2e_read_result_name(r));
    return 0;
  }
  char d[256];
  Hubu__V1__HelloOk *h = f.type == HUBU_FRAME_HELLO_OK ? hubu__v1__hello_ok__unpack(NULL, f.len, f.body) : NULL;
  if (!h) e2e_fail(file, line, "expected HELLO_OK, got %s", describe(&f, d, sizeof d));
  e2e_frame_free(&f);
  if (h && out)
    *out = h;
  else if (h)
    hubu__v1__hello_ok__free_unpacked(h, NULL);
  return h != NULL;
}

int e2e_connect_hello_at(const char *file, int line, int port, const char *user) {
  int fd = e2e_connect(port);
  if (fd < 0) {
    e2e_fail(file, line, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    return -1;
  }
  if (e2e_send_hello(fd, user, "d1", NULL) != 0 || !e2e_expect_hello_ok_at(file, line, fd, NULL, E2E_WAIT_MS)) {
    close(fd);
    return -1;
  }
  return fd;
}

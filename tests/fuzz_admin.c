/* fuzz_admin.c — the admin HTTP listener (runtime/admin/admin.c) on untrusted
 * bytes, in process and over real sockets. Two servers run on one loop, each
 * with its SQLite store and its admin listener on 127.0.0.1 (ephemeral
 * ports): A with --admin-token, two --admin-host names and two
 * --admin-allow-origin origins, B with none of them. A raw client connection
 * that never sends HELLO stays open on each, so /v1/admin/conns lists one.
 *
 * One input is one connection: its first byte chooses the listener (bit 3)
 * and how the rest is cut into writes (bits 0-2: 1, 2, 3, 5, 8, 13 or 64
 * bytes, or all at once; after 64 pieces the rest goes in one write), and the
 * loop runs between writes so the parser sees the request piecewise. Then
 * the client half-closes and reads until the listener closes. Checked:
 *  - the exchange ends without the listener's timers: at most 2000 loop
 *    turns, and at most 50 waits of 10 ms in which nothing happened (the
 *    listener's sweep runs once a second): the listener answers and closes
 *    on the client's FIN, and its handle is gone afterwards;
 *  - the reply is empty (the request never completed) or exactly one
 *    response: "HTTP/1.1 NNN ", one Content-Length that covers the rest,
 *    Connection: close, and an Access-Control-Allow-Origin only with an
 *    origin the listener was given;
 *  - on A, no 2xx without the token in the request, apart from /healthz and
 *    a CORS preflight;
 *  - every 64 inputs, a clean GET /healthz on each listener gets 200 "ok".
 * At exit both servers drain and the loop closes with nothing left open, so
 * LeakSanitizer has nothing to report.
 *
 * libFuzzer entry point; built with -DHUBU_FUZZ_REPLAY it is a plain program
 * (a ctest test) that replays the corpus directories given to it, the seeds
 * below and 3,000 mutants of them from a fixed seed:
 *   fuzz_admin_replay CORPUS_DIR...        replays
 *   fuzz_admin_replay --write-seeds DIR    writes the seeds (tests/fuzz_corpus/admin) */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "cluster.h"
#include "log.h"
#include "server.h"
#include "store.h"

#define FUZZ_TOKEN "fuzz-admin-token-0123456789abcdef"
#define FUZZ_HOSTS "admin.example,ops.example:8443"
#define FUZZ_ORIGINS "http://ui.example,https://ops.example:8443"
#define FUZZ_MAX_TURNS 2000   /* loop turns for one exchange; more is a hang */
#define FUZZ_MAX_IDLE 50      /* waits of 10 ms that found nothing: less than the listener's 1 s sweep */
#define FUZZ_MAX_PIECES 64    /* writes of the chosen size; the rest goes at once */
#define FUZZ_HEALTH_EVERY 64  /* inputs between two clean /healthz checks */
#define FUZZ_REPLY_MAX 262144 /* no answer of these listeners is near this */

#define FUZZ_ASSERT(cond)                                                               \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

/* One server and its admin listener. */
typedef struct {
  hubu_server server; /* large (holds the read buffer) */
  hubu_core_config core_cfg;
  hubu_net_config net_cfg;
  hubu_admin_config admin_cfg;
  hubu_store_config store_cfg;
  char store_url[128];
  const char *token;   /* NULL: none */
  const char *origins; /* NULL: none */
  int admin_port;
  int idle_fd; /* the client connection that never sends HELLO */
} fuzz_node;

static struct {
  int ready;
  uv_loop_t loop;
  char dir[64];
  unsigned tcp_handles; /* listeners and the idle connections: what is open between inputs */
  unsigned long inputs;
  unsigned long status[600]; /* replies by status; [0]: no reply */
  unsigned long resets, reloads;
  unsigned long turns, idle_turns; /* loop turns of all exchanges, and waits that found nothing */
} fz;

static fuzz_node nodes[2];

static const char secret[] = "fuzz-admin-secret-0123456789abcd"; /* 32 bytes */

/* The plugin host's reload as admin.h describes it: "echo" exists. */
static int fuzz_reload(void *ud, const char *plugin, char *msg, size_t msg_size) {
  (void)ud;
  fz.reloads++;
  if (!plugin) {
    snprintf(msg, msg_size, "echo: reloaded\ncommands: reloaded\n");
    return 200;
  }
  if (!strcmp(plugin, "echo")) {
    snprintf(msg, msg_size, "echo: reloaded\n");
    return 200;
  }
  snprintf(msg, msg_size, "no plugin named %s in the plugin folder", plugin);
  return 404;
}

static void on_drained(hubu_server *s, void *ud) {
  (void)ud;
  hubu_admin_close(s);
}

static void count_tcp(uv_handle_t *h, void *arg) {
  if (h->type == UV_TCP) ++*(unsigned *)arg;
}

static unsigned tcp_handles(void) {
  unsigned n = 0;
  uv_walk(&fz.loop, count_tcp, &n);
  return n;
}

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FUZZ_ASSERT(fd >= 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* each piece is its own segment */
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (errno != EINPROGRESS) {
      fprintf(stderr, "fuzz_admin: connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
      abort();
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof err;
    FUZZ_ASSERT(poll(&p, 1, 5000) == 1);
    FUZZ_ASSERT(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0);
  }
  return fd;
}

/* ---- one exchange ------------------------------------------------------------ */

typedef struct {
  uint8_t *p;
  size_t n, cap;
  int eof;   /* the listener closed (FIN or reset) */
  int reset; /* ... with a reset */
} reply;

static void read_reply(int fd, reply *r) {
  while (!r->eof) {
    if (r->n == r->cap) {
      FUZZ_ASSERT(r->cap < FUZZ_REPLY_MAX);
      r->cap = r->cap ? r->cap * 2 : 4096;
      r->p = realloc(r->p, r->cap);
      FUZZ_ASSERT(r->p != NULL);
    }
    ssize_t k = recv(fd, r->p + r->n, r->cap - r->n, 0);
    if (k > 0) {
      r->n += (size_t)k;
    } else if (k == 0) {
      r->eof = 1;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else if (errno != EINTR) {
      r->eof = r->reset = 1;
    }
  }
}

typedef struct {
  unsigned turns, idle;
} budget;

typedef enum { WRITING, READING, CLOSING } phase;
static const char *const phase_names[] = {"writing the request", "reading the reply", "closing the connection"};

static int phase_done(phase ph, const reply *r) {
  return ph == READING ? r->eof : ph == CLOSING ? tcp_handles() <= fz.tcp_handles : 1;
}

/* One loop turn of an exchange, and what came is read. With wait (nothing
 * is left for the client to do), when the phase is not over and the loop
 * has nothing pending: a wait of at most 10 ms for the loop's descriptors
 * or fd. Too many turns, or too many waits that found nothing (the listener
 * left the connection to its timers), abort. */
static void step(int fd, phase ph, int wait, reply *r, budget *b) {
  fz.turns++;
  if (++b->turns > FUZZ_MAX_TURNS) {
    fprintf(stderr, "fuzz_admin: %s took %u loop turns: the listener hangs\n", phase_names[ph], b->turns);
    abort();
  }
  uv_run(&fz.loop, UV_RUN_NOWAIT);
  if (fd >= 0) read_reply(fd, r);
  if (!wait || phase_done(ph, r)) return;
  int t = uv_backend_timeout(&fz.loop);
  if (t == 0) return;
  if (t < 0 || t > 10) t = 10;
  struct pollfd p[2] = {{.fd = uv_backend_fd(&fz.loop), .events = POLLIN}, {.fd = fd, .events = POLLIN}};
  if (poll(p, fd >= 0 ? 2 : 1, t) == 0) {
    fz.idle_turns++;
    if (++b->idle > FUZZ_MAX_IDLE) {
      fprintf(stderr, "fuzz_admin: %s: the listener did nothing for %u waits of 10 ms\n", phase_names[ph], b->idle);
      abort();
    }
  }
}

/* Sends req to port in pieces of chunk bytes, half-closes, and reads the
 * reply until the listener closes; returns once the listener's side of the
 * connection is closed too. */
static void exchange(int port, const uint8_t *req, size_t len, size_t chunk, reply *r) {
  budget b = {0};
  int fd = connect_to(port);
  size_t pos = 0, pieces = 0;
  while (pos < len && !r->eof) {
    size_t k = pieces < FUZZ_MAX_PIECES && chunk < len - pos ? chunk : len - pos;
    ssize_t n = send(fd, req + pos, k, MSG_NOSIGNAL);
    int blocked = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (n > 0) {
      pos += (size_t)n;
      pieces++;
    } else if (!blocked && errno != EINTR) {
      break; /* the listener is gone; what it said is read below */
    }
    step(fd, WRITING, blocked, r, &b); /* the listener reads what came */
  }
  shutdown(fd, SHUT_WR);
  while (!r->eof) step(fd, READING, 1, r, &b);
  if (r->reset) fz.resets++;
  close(fd);
  while (tcp_handles() > fz.tcp_handles) step(-1, CLOSING, 1, r, &b);
}

static const char *find(const uint8_t *p, size_t n, const char *s) { return memmem(p, n, s, strlen(s)); }

/* The reply's status (0: empty), after checking it is one whole response. */
static int check_reply(const fuzz_node *node, const uint8_t *req, size_t req_len, const reply *r) {
  if (r->n == 0) return 0;
  const uint8_t *p = r->p;
  FUZZ_ASSERT(r->n >= 13 && !memcmp(p, "HTTP/1.1 ", 9));
  FUZZ_ASSERT(p[9] >= '1' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' && p[11] <= '9');
  FUZZ_ASSERT(p[12] == ' ');
  int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  FUZZ_ASSERT(status >= 200);
  const char *end = find(p, r->n, "\r\n\r\n");
  FUZZ_ASSERT(end != NULL);
  size_t head_len = (size_t)(end - (const char *)p) + 4;
  size_t content_length = 0;
  int lengths = 0, close_seen = 0, preflight = 0;
  const char *line = memchr(p, '\n', head_len) + 1;
  while (line < end + 2) { /* each header line, up to the blank one */
    const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
    FUZZ_ASSERT(eol != NULL && eol[1] == '\n');
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    FUZZ_ASSERT(colon != NULL && colon[1] == ' ');
    size_t name_len = (size_t)(colon - line), value_len = (size_t)(eol - colon - 2);
    const char *value = colon + 2;
    if (name_len == 14 && !strncasecmp(line, "Content-Length", 14)) {
      lengths++;
      FUZZ_ASSERT(value_len >= 1 && value_len <= 7);
      content_length = 0;
      for (size_t i = 0; i < value_len; i++) {
        FUZZ_ASSERT(value[i] >= '0' && value[i] <= '9');
        content_length = content_length * 10 + (size_t)(value[i] - '0');
      }
    } else if (name_len == 10 && !strncasecmp(line, "Connection", 10)) {
      FUZZ_ASSERT(value_len == 5 && !memcmp(value, "close", 5));
      close_seen = 1;
    } else if (name_len == 27 && !strncasecmp(line, "Access-Control-Allow-Origin", 27)) {
      /* an origin the listener was given, never the request's bytes */
      int listed = 0;
      for (const char *o = node->origins; o && *o; o += strcspn(o, ",") + (o[strcspn(o, ",")] == ',')) {
        if (strcspn(o, ",") == value_len && !memcmp(o, value, value_len)) listed = 1;
      }
      FUZZ_ASSERT(listed);
    } else if (name_len == 28 && !strncasecmp(line, "Access-Control-Allow-Methods", 28)) {
      preflight = 1;
    }
    line = eol + 2;
  }
  FUZZ_ASSERT(lengths == 1 && close_seen);
  FUZZ_ASSERT(r->n == head_len + content_length); /* one response, nothing after it */
  if (node->token && status < 300 && !memmem(req, req_len, node->token, strlen(node->token))) {
    int healthz = content_length == 3 && !memcmp(p + head_len, "ok\n", 3);
    if (!healthz && !(preflight && content_length == 0)) {
      fprintf(stderr, "fuzz_admin: %d without the token:\n%.*s\n", status, (int)r->n, (const char *)p);
      abort();
    }
  }
  return status;
}

static const size_t chunk_sizes[8] = {1, 2, 3, 5, 8, 13, 64, SIZE_MAX};

static int run_one(const uint8_t *data, size_t size) {
  uint8_t sel = size ? data[0] : 7;
  const fuzz_node *node = &nodes[(sel >> 3) & 1];
  const uint8_t *req = size ? data + 1 : data;
  size_t len = size ? size - 1 : 0;
  reply r = {0};
  exchange(node->admin_port, req, len, chunk_sizes[sel & 7], &r);
  int status = check_reply(node, req, len, &r);
  fz.status[status]++;
  free(r.p);
  return status;
}

/* The listener still serves a plain request. */
static void health_check(void) {
  static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int i = 0; i < 2; i++) {
    reply r = {0};
    exchange(nodes[i].admin_port, (const uint8_t *)req, sizeof req - 1, SIZE_MAX, &r);
    if (check_reply(&nodes[i], (const uint8_t *)req, sizeof req - 1, &r) != 200 || r.n < 3 ||
        memcmp(r.p + r.n - 3, "ok\n", 3) != 0) {
      fprintf(stderr, "fuzz_admin: listener %c no longer answers GET /healthz: %.*s\n", 'A' + i, (int)r.n,
              r.p ? (const char *)r.p : "");
      abort();
    }
    free(r.p);
  }
}

/* ---- the servers: set up once, closed at exit --------------------------------- */

static void node_start(fuzz_node *n, int index) {
  char err[512];
  n->core_cfg = (hubu_core_config){
      .max_frame = 1u << 20,
      .heartbeat_ms = 30000,
      .max_inflight = 256,
      .max_inflight_bytes = 1u << 20,
      .ack_timeout_ms = 10000,
      .pull_limit_max = 500,
      .tail_cache_bytes = 1u << 20,
      .session_cache_max = 1000,
  };
  n->net_cfg = (hubu_net_config){
      .listen_port = 0,
      .secret = (const uint8_t *)secret,
      .secret_len = sizeof secret - 1,
      .max_frame = 1u << 20,
      .heartbeat_ms = 30000,
      .hello_timeout_ms = 24u * 3600 * 1000, /* the idle connection stays for the whole run */
      .hello_timeout_pressure_ms = 24u * 3600 * 1000,
      .hello_max_frame = 4096,
      .write_queue_max = 4u << 20,
      .write_stall_ms = 30000,
      .drain_ms = 1000,
      .max_pending_sends = 1024,
      .max_pending_send_bytes = 4u << 20,
  };
  snprintf(n->net_cfg.listen_host, sizeof n->net_cfg.listen_host, "127.0.0.1");
  n->token = index == 0 ? FUZZ_TOKEN : NULL;
  n->origins = index == 0 ? FUZZ_ORIGINS : NULL;
  n->admin_cfg = (hubu_admin_config){
      .admin_enabled = 1,
      .admin_port = 0,
      .on_loopback = 1,
      .admin_hosts = index == 0 ? FUZZ_HOSTS : NULL,
      .admin_origins = n->origins,
      .admin_token = (const uint8_t *)n->token,
      .admin_token_len = n->token ? strlen(n->token) : 0,
  };
  snprintf(n->admin_cfg.admin_host, sizeof n->admin_cfg.admin_host, "127.0.0.1");
  snprintf(n->store_url, sizeof n->store_url, "sqlite:%s/hubu%d.db", fz.dir, index);
  n->store_cfg = (hubu_store_config){.url = n->store_url, .fsync = HUBU_FSYNC_OFF};
  hubu_store *store = hubu_store_open(&fz.loop, &n->store_cfg, err, sizeof err);
  if (!store) {
    fprintf(stderr, "fuzz_admin: store: %s\n", err);
    exit(1);
  }
  hubu_server *s = &n->server;
  if (hubu_core_init(&s->core, &fz.loop, &n->core_cfg, store) != 0) abort();
  s->core.seq = hubu_cluster_single_seq();
  if (hubu_server_start(s, &fz.loop, &n->net_cfg) != 0 || hubu_admin_start(s, &n->admin_cfg) != 0) {
    fprintf(stderr, "fuzz_admin: the server did not start\n");
    exit(1);
  }
  /* Signals stay with the fuzzer (or the default): no drain on SIGINT. */
  uv_signal_stop(&s->sigterm);
  uv_signal_stop(&s->sigint);
  s->on_drained = on_drained;
  hubu_admin_set_reload(s, fuzz_reload, NULL);
  n->admin_port = hubu_admin_port(s);
  n->idle_fd = connect_to(s->tcp_port);
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

static void fuzz_teardown(void) {
  if (!fz.ready) return;
  fz.ready = 0;
  for (int i = 0; i < 2; i++) {
    close(nodes[i].idle_fd);
    hubu_server_drain(&nodes[i].server, "fuzz_exit");
  }
  uv_run(&fz.loop, UV_RUN_DEFAULT);
  int r = uv_loop_close(&fz.loop);
  if (r != 0) {
    fprintf(stderr, "fuzz_admin: a handle is still open at exit: %s\n", uv_strerror(r));
    uv_print_all_handles(&fz.loop, stderr);
    abort();
  }
  for (int i = 0; i < 2; i++) hubu_server_free(&nodes[i].server);
  hubu_store_op_cache_drop();
  remove_dir(fz.dir);
}

static void fuzz_setup(void) {
  if (fz.ready) return;
  signal(SIGPIPE, SIG_IGN);
  hubu_log_min_level = HUBU_LOG_ERROR;
  const char *tmp = getenv("TMPDIR");
  snprintf(fz.dir, sizeof fz.dir, "%s/hubu-fuzz-admin-XXXXXX", tmp && strlen(tmp) < 32 ? tmp : "/tmp");
  if (!mkdtemp(fz.dir)) {
    perror("fuzz_admin: mkdtemp");
    exit(1);
  }
  FUZZ_ASSERT(uv_loop_init(&fz.loop) == 0);
  for (int i = 0; i < 2; i++) node_start(&nodes[i], i);
  fz.ready = 1;
  atexit(fuzz_teardown);
  /* Until each server has accepted its idle connection. */
  for (int i = 0; i < 1000 && tcp_handles() < 6; i++) {
    uv_run(&fz.loop, UV_RUN_NOWAIT);
    struct pollfd p = {.fd = uv_backend_fd(&fz.loop), .events = POLLIN};
    if (tcp_handles() < 6) poll(&p, 1, 10);
  }
  FUZZ_ASSERT(tcp_handles() == 6); /* two client listeners, two admin listeners, two idle connections */
  fz.tcp_handles = 6;
  health_check();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fuzz_setup();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t empty[1];
  fuzz_setup();
  run_one(size ? data : empty, size);
  if (++fz.inputs % FUZZ_HEALTH_EVERY == 0) health_check();
  return 0;
}

#ifdef HUBU_FUZZ_REPLAY
/* ---- replay: a plain program for ctest ---------------------------------------- */

/* The seeds: one request (or a few) per route and guard case. The first byte
 * is the selector: 0x07 listener A at once, 0x00 A a byte at a time, 0x0f B
 * at once (see run_one). */
#define TOKEN_HDR "Authorization: Bearer " FUZZ_TOKEN "\r\n"
#define JSON_HDR "Content-Type: application/json\r\n"
#define LONG_PATH_64 "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

typedef struct {
  const char *name;
  uint8_t sel;
  const char *text;
  int status; /* what listener gives it; 0: no reply */
} fuzz_seed;

static const fuzz_seed seeds[] = {
    {"healthz", 0x07, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 200},
    {"healthz_bytewise", 0x00, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: fuzz\r\n\r\n", 200},
    {"healthz_http10", 0x07, "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n", 200},
    {"healthz_no_host", 0x07, "GET /healthz HTTP/1.0\r\n\r\n", 403},
    {"metrics", 0x07, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 200},
    {"metrics_no_token", 0x07, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", 401},
    {"metrics_wrong_token", 0x03, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer nope\r\n\r\n",
     401},
    {"metrics_basic_auth", 0x07,
     "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n", 401},
    {"metrics_two_tokens", 0x07, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR TOKEN_HDR "\r\n", 401},
    {"metrics_lowercase", 0x07,
     "GET /metrics HTTP/1.1\r\nhost: LOCALHOST\r\nauthorization: bearer \t" FUZZ_TOKEN " \r\n\r\n", 200},
    {"stats", 0x07, "GET /v1/admin/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n" TOKEN_HDR "\r\n", 200},
    {"stats_bytewise", 0x00, "GET /v1/admin/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n" TOKEN_HDR "\r\n", 200},
    {"conns", 0x07, "GET /v1/admin/conns HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 200},
    {"conns_user", 0x05, "GET /v1/admin/conns?user=alice HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 200},
    {"conns_bad_user", 0x07, "GET /v1/admin/conns?user=al%20ice HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"conns_unknown_param", 0x07, "GET /v1/admin/conns?who=x HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"conns_bad_escape", 0x07, "GET /v1/admin/conns?user=%zz HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"conns_nul_escape", 0x07, "GET /v1/admin/conns?user=a%00 HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"conns_twice", 0x07, "GET /v1/admin/conns?user=a&user=b HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"conns_no_name", 0x07, "GET /v1/admin/conns?=x&&user HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"conns_many_params", 0x07,
     "GET /v1/admin/conns?a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9 HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"kick", 0x07,
     "POST /v1/admin/kick?user=alice&reason=spam+again%21 HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Content-Length: 2\r\n\r\n{}",
     200},
    {"kick_bytewise", 0x00,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "Content-Length: 0\r\n\r\n",
     200},
    {"kick_no_user", 0x07, "POST /v1/admin/kick HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "\r\n", 400},
    {"kick_bad_reason", 0x07,
     "POST /v1/admin/kick?user=bob&reason=%01 HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "\r\n", 400},
    {"kick_utf8_reason", 0x07,
     "POST /v1/admin/kick?user=bob&reason=%E2%9C%93+ok HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "\r\n", 200},
    {"kick_get", 0x07, "GET /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 405},
    {"kick_no_token", 0x07, "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" JSON_HDR "\r\n", 401},
    {"kick_chunked", 0x07,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\n{}\n\r\n0\r\n\r\n",
     200},
    {"kick_chunked_trailer", 0x02,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nHost: evil.example\r\nAuthorization: x\r\n\r\n",
     200},
    {"kick_bad_chunk", 0x07,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     400},
    {"kick_body_too_large", 0x07,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Content-Length: 70000\r\n\r\n{}",
     413},
    {"kick_two_lengths", 0x07,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     400},
    {"reload_echo", 0x07, "POST /v1/admin/reload?plugin=echo HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "\r\n",
     200},
    {"reload_all", 0x07,
     "POST /v1/admin/reload HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR
     "Content-Type: Application/JSON ; charset=utf-8\r\n\r\n",
     200},
    {"reload_missing", 0x07,
     "POST /v1/admin/reload?plugin=nosuch HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "\r\n", 404},
    {"reload_path", 0x07,
     "POST /v1/admin/reload?plugin=..%2Fetc HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR "\r\n", 400},
    {"reload_form_with_token", 0x07,
     "POST /v1/admin/reload HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR
     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nplugin=x",
     200},
    {"plugins", 0x07, "GET /v1/admin/plugins HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 503},
    {"plugins_param", 0x07, "GET /v1/admin/plugins?x HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 400},
    {"not_found", 0x07, "GET /v1/admin/nope HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n", 404},
    {"not_found_no_token", 0x07, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n", 401},
    {"host_foreign", 0x07, "GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403},
    {"host_wrong_port", 0x07, "GET /healthz HTTP/1.1\r\nHost: localhost:1\r\n\r\n", 403},
    {"host_twice", 0x07, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n", 403},
    {"host_admin_name", 0x07, "GET /v1/admin/stats HTTP/1.1\r\nHost: Admin.Example\r\n" TOKEN_HDR "\r\n", 200},
    {"host_admin_port", 0x07, "GET /v1/admin/stats HTTP/1.1\r\nHost: ops.example:8443\r\n" TOKEN_HDR "\r\n", 200},
    {"host_admin_port_wrong", 0x07, "GET /healthz HTTP/1.1\r\nHost: ops.example:8444\r\n\r\n", 403},
    {"host_ipv6", 0x07, "GET /healthz HTTP/1.1\r\nHost: [::1]\r\n\r\n", 403},
    {"host_bad_ipv6", 0x07, "GET /healthz HTTP/1.1\r\nHost: [::zz]:80\r\n\r\n", 403},
    {"host_other_loopback", 0x07, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n", 403},
    {"origin_allowed", 0x07,
     "GET /v1/admin/stats HTTP/1.1\r\nHost: localhost\r\nOrigin: http://ui.example\r\n" TOKEN_HDR "\r\n", 200},
    {"origin_allowed_port", 0x07,
     "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: HTTPS://ops.example:8443\r\n\r\n", 200},
    {"origin_forbidden", 0x07, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\r\n", 403},
    {"origin_null", 0x07, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: null\r\n\r\n", 403},
    {"origin_twice", 0x07,
     "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: http://ui.example\r\nOrigin: http://ui.example\r\n\r\n", 403},
    {"preflight", 0x07,
     "OPTIONS /v1/admin/kick HTTP/1.1\r\nHost: localhost\r\nOrigin: http://ui.example\r\n"
     "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n",
     200},
    {"preflight_forbidden", 0x07,
     "OPTIONS /v1/admin/kick HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n"
     "Access-Control-Request-Method: POST\r\n\r\n",
     403},
    {"preflight_no_origin", 0x07, "OPTIONS /v1/admin/kick HTTP/1.1\r\nHost: localhost\r\n\r\n", 401},
    {"preflight_unknown_route", 0x07,
     "OPTIONS /v1/admin/nope HTTP/1.1\r\nHost: localhost\r\nOrigin: http://ui.example\r\n\r\n", 401},
    {"absolute_form", 0x07, "GET http://localhost/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 400},
    {"connect", 0x07, "CONNECT localhost:80 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400},
    {"asterisk", 0x07, "OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", 401},
    {"upgrade", 0x07,
     "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz", 200},
    {"garbage", 0x07, "HELLO WORLD\r\n\r\n", 400},
    {"http_9_9", 0x07, "GET /healthz HTTP/9.9\r\nHost: localhost\r\n\r\n", 200},
    {"bad_version", 0x07, "GET /healthz HTTP/1.x\r\nHost: localhost\r\n\r\n", 400},
    {"lf_only", 0x07, "GET /healthz HTTP/1.1\nHost: localhost\n\n", 200},
    {"header_folding", 0x07, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Long: a\r\n b\r\n\r\n", 200},
    {"incomplete", 0x07, "GET /healthz HTTP/1.1\r\nHost: local", 0},
    {"empty", 0x07, "", 0},
    {"pipelined", 0x07,
     "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /metrics HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR "\r\n",
     200},
    {"pipelined_bytewise", 0x00,
     "POST /v1/admin/kick?user=a HTTP/1.1\r\nHost: localhost\r\n" TOKEN_HDR JSON_HDR
     "Content-Length: 1\r\n\r\nxGET /healthz HTTP/1.1\r\n\r\n",
     200},
    {"long_header_value", 0x06,
     "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: http://" LONG_PATH_64 LONG_PATH_64 LONG_PATH_64 LONG_PATH_64
         LONG_PATH_64 "\r\n\r\n",
     403},
    /* listener B: no token, no extra names, no origins */
    {"b_healthz", 0x0f, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200},
    {"b_metrics", 0x0f, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", 200},
    {"b_conns", 0x0b, "GET /v1/admin/conns HTTP/1.1\r\nHost: localhost\r\n\r\n", 200},
    {"b_kick_form", 0x0f,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n"
     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b",
     415},
    {"b_kick_text", 0x0f,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\r\n", 415},
    {"b_kick_no_type", 0x0f, "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n\r\n", 415},
    {"b_kick_json", 0x0f, "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\n" JSON_HDR "\r\n", 200},
    {"b_kick_bearer", 0x0f,
     "POST /v1/admin/kick?user=bob HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer anything\r\n\r\n", 200},
    {"b_reload_two_types", 0x0f, "POST /v1/admin/reload HTTP/1.1\r\nHost: localhost\r\n" JSON_HDR JSON_HDR "\r\n", 415},
    {"b_admin_name", 0x0f, "GET /healthz HTTP/1.1\r\nHost: admin.example\r\n\r\n", 403},
    {"b_origin", 0x0f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: http://ui.example\r\n\r\n", 403},
    {"b_stats_bytewise", 0x08, "GET /v1/admin/stats HTTP/1.1\r\nHost: localhost\r\n\r\n", 200},
};
#define N_SEEDS (sizeof seeds / sizeof seeds[0])

/* Requests over the size limits, made at run time (too large to be written
 * out above): a target past 8 KiB (414). */
static size_t long_target(uint8_t *out, size_t cap) {
  size_t n = (size_t)snprintf((char *)out, cap, "%cGET /v1/admin/conns?user=", 0x06);
  while (n < 8300 && n < cap) out[n++] = 'a';
  n += (size_t)snprintf((char *)out + n, cap - n, " HTTP/1.1\r\nHost: localhost\r\n\r\n");
  return n;
}

static size_t seed_bytes(const fuzz_seed *s, uint8_t *out, size_t cap) {
  size_t len = strlen(s->text);
  FUZZ_ASSERT(len + 1 <= cap);
  out[0] = s->sel;
  memcpy(out + 1, s->text, len);
  return len + 1;
}

static uint64_t rng_state = 0xAD3171FEEDC0FFEEu;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717u;
}

/* Inserts k bytes of src (or k copies of fill when src is NULL) at at. */
static size_t insert(uint8_t *out, size_t n, size_t cap, size_t at, const uint8_t *src, size_t k, uint8_t fill) {
  if (at > n || n + k > cap) return n;
  memmove(out + at + k, out + at, n - at);
  if (src)
    memcpy(out + at, src, k);
  else
    memset(out + at, fill, k);
  return n + k;
}

/* Where line i of a request starts (its CRLF-separated lines), or n. */
static size_t line_start(const uint8_t *p, size_t n, size_t i) {
  size_t at = 1;
  while (i-- > 0) {
    const uint8_t *nl = memchr(p + at, '\n', n - at);
    if (!nl) return n;
    at = (size_t)(nl - p) + 1;
  }
  return at;
}

/* One to four mutations: bytes flipped or set, ranges cut or copied, a
 * header line duplicated, a huge value, a bad chunk size, another seed
 * spliced in, the selector changed. */
static size_t mutate(uint8_t *out, size_t n, size_t cap) {
  int rounds = 1 + (int)(rng() % 4);
  for (int r = 0; r < rounds; r++) {
    uint64_t x = rng();
    size_t at = n > 1 ? 1 + (size_t)(rng() % (n - 1)) : n;
    switch (x % 12) {
      case 0:
        if (at < n) out[at] ^= (uint8_t)(1u << (x >> 8) % 8);
        break;
      case 1: { /* an interesting byte */
        static const uint8_t v[] = {0, '\r', '\n', ' ', ':', '%', '?', '&', '=', '/', 0x7f, 0x80, 0xff, '\t', ';'};
        if (at < n) out[at] = v[(x >> 8) % sizeof v];
        break;
      }
      case 2: n = at; break; /* truncate */
      case 3: {              /* delete a range */
        size_t k = 1 + (x >> 8) % 24;
        if (at + k > n) k = n - at;
        memmove(out + at, out + at + k, n - at - k);
        n -= k;
        break;
      }
      case 4: { /* duplicate a header line */
        size_t a = line_start(out, n, 1 + (x >> 8) % 6), b = line_start(out, n, 2 + (x >> 8) % 6);
        if (a < b && b <= n) n = insert(out, n, cap, b, out + a, b - a, 0);
        break;
      }
      case 5: { /* a huge value: a run of one byte */
        static const uint8_t fill[] = {'a', '0', 'f', ' ', '%', '/'};
        n = insert(out, n, cap, at, NULL, 64 + (x >> 8) % 12000, fill[(x >> 24) % sizeof fill]);
        break;
      }
      case 6: { /* a chunked body, well or badly sized */
        static const char *const bodies[] = {
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nx\r\n",
            "Transfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
            "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding: chunked\r\n\r\n1;" LONG_PATH_64 "\r\nx\r\n0\r\n\r\n",
        };
        const char *b = bodies[(x >> 8) % (sizeof bodies / sizeof bodies[0])];
        const char *blank = find(out, n, "\r\n\r\n");
        size_t pos = blank ? (size_t)(blank - (const char *)out) + 2 : n;
        n = insert(out, pos, cap, pos, (const uint8_t *)b, strlen(b), 0);
        break;
      }
      case 7: { /* splice: the head of this one, the tail of another seed */
        const fuzz_seed *s = &seeds[rng() % N_SEEDS];
        size_t len = strlen(s->text), from = len ? (size_t)(rng() % len) : 0;
        n = at;
        n = insert(out, n, cap, n, (const uint8_t *)s->text + from, len - from, 0);
        break;
      }
      case 8: /* another selector: listener and piece size */ out[0] = (uint8_t)(x >> 8); break;
      case 9: { /* a header that matters */
        static const char *const headers[] = {"Host: admin.example\r\n",
                                              "Host: [::1]:1\r\n",
                                              "Origin: http://ui.example\r\n",
                                              "Origin: file://\r\n",
                                              TOKEN_HDR,
                                              "Authorization: Bearer\r\n",
                                              JSON_HDR,
                                              "Content-Type: ;\r\n",
                                              "Content-Length: 65537\r\n",
                                              "Content-Length: -1\r\n",
                                              "Connection: close\r\n",
                                              "Expect: 100-continue\r\n",
                                              "Transfer-Encoding: x\r\n",
                                              "Host: localhost:65536\r\n"};
        const char *h = headers[(x >> 8) % (sizeof headers / sizeof headers[0])];
        n = insert(out, n, cap, line_start(out, n, 1 + (x >> 16) % 4), (const uint8_t *)h, strlen(h), 0);
        break;
      }
      case 10: { /* copy a range forward */
        size_t k = 1 + (x >> 8) % 64;
        if (at + k > n) k = n - at;
        n = insert(out, n, cap, at, out + at, k, 0);
        break;
      }
      default: /* random bytes */
        for (size_t k = 1 + (x >> 8) % 8; k > 0 && at < n; k--) out[at++] = (uint8_t)rng();
        break;
    }
  }
  return n;
}

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  static uint8_t buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  run_one(buf, n);
  return 0;
}

static int replay_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return -1;
  }
  int files = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (replay_file(path) == 0) files++;
  }
  closedir(d);
  return files;
}

static int write_file(const char *dir, const char *name, const uint8_t *p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    return 1;
  }
  return 0;
}

static int write_seeds(const char *dir) {
  static uint8_t buf[16384];
  for (size_t i = 0; i < N_SEEDS; i++)
    if (write_file(dir, seeds[i].name, buf, seed_bytes(&seeds[i], buf, sizeof buf))) return 1;
  if (write_file(dir, "conns_target_too_long", buf, long_target(buf, sizeof buf))) return 1;
  printf("wrote %zu seeds to %s\n", N_SEEDS + 1, dir);
  return 0;
}

#define N_GENERATED 3000

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) return write_seeds(argv[2]);
  fuzz_setup();
  int failed = 0;
  static uint8_t in[32768];

  /* 1. Each seed gets the answer it was written for. */
  for (size_t i = 0; i < N_SEEDS; i++) {
    int status = run_one(in, seed_bytes(&seeds[i], in, sizeof in));
    if (status != seeds[i].status) {
      fprintf(stderr, "seed %s: %d (want %d)\n", seeds[i].name, status, seeds[i].status);
      failed = 1;
    }
  }
  int status = run_one(in, long_target(in, sizeof in));
  if (status != 414) {
    fprintf(stderr, "seed conns_target_too_long: %d (want 414)\n", status);
    failed = 1;
  }
  unsigned long reloads = fz.reloads;
  if (reloads != 4) { /* reload_echo, _all, _missing, _form_with_token */
    fprintf(stderr, "the seeds called reload %lu times (want 4)\n", reloads);
    failed = 1;
  }

  /* 2. The corpus directories. */
  int files = 0;
  for (int i = 1; i < argc; i++) {
    int n = replay_dir(argv[i]);
    if (n < 0)
      failed = 1;
    else
      files += n;
  }
  if (argc > 1 && files == 0) {
    fprintf(stderr, "no corpus files found\n");
    failed = 1;
  }

  /* 3. Mutants of the seeds, from a fixed seed. */
  for (int i = 0; i < N_GENERATED; i++) {
    size_t n = i % 50 == 0 ? long_target(in, sizeof in) : seed_bytes(&seeds[rng() % N_SEEDS], in, sizeof in);
    run_one(in, mutate(in, n, sizeof in));
    if (++fz.inputs % FUZZ_HEALTH_EVERY == 0) health_check();
  }
  health_check();

  printf("%zu seeds, %d corpus files, %d mutants; %lu connections reset\nreplies:", N_SEEDS + 1, files, N_GENERATED,
         fz.resets);
  for (int s = 0; s < 600; s++)
    if (fz.status[s]) printf(" %d: %lu", s, fz.status[s]);
  printf(" (0: none, the request never completed)\n");
  printf("loop turns: %lu, idle waits: %lu\n", fz.turns, fz.idle_turns);
  /* The mutants must still reach every answer, or they test less than they claim. */
  static const int wanted[] = {0, 200, 400, 401, 403, 404, 405, 413, 414, 415, 503};
  for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
    if (fz.status[wanted[i]] < 3) {
      fprintf(stderr, "status %d reached only %lu times\n", wanted[i], fz.status[wanted[i]]);
      failed = 1;
    }
  return failed;
}
#endif

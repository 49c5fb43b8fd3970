/* msgtest.c — see msgtest.h. */
#include "msgtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <mysql.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#ifndef HUBUCTL_PATH
#error "HUBUCTL_PATH must name the hubuctl binary"
#endif

int mt_quick(void) {
  const char *q = getenv("HUBU_TEST_QUICK");
  return q && *q && strcmp(q, "0") != 0;
}

/* ---- the store -------------------------------------------------------------- */

static struct {
  int known, mariadb;
  unsigned port;
  char user[81], password[257];
  int used; /* Connector/C was initialized: mysql_library_end at exit */
} store_env;

/* KEY's value in an env file of scripts/mariadb-private.sh: KEY=VALUE a
 * line, VALUE bare or in single quotes (a quote inside written as '\''). */
static int env_file_value(const char *path, const char *key, char *out, size_t size) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[1024];
  size_t klen = strlen(key);
  int found = -1;
  while (found < 0 && fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) != 0 || line[klen] != '=') continue;
    const char *v = line + klen + 1;
    size_t n = 0;
    if (*v == '\'') {
      for (v++; *v && n + 1 < size;) {
        if (v[0] == '\'' && v[1] == '\\' && v[2] == '\'' && v[3] == '\'') { /* '\'' */
          out[n++] = '\'';
          v += 4;
        } else if (*v == '\'') {
          break;
        } else {
          out[n++] = *v++;
        }
      }
    } else {
      while (*v && *v != '\n' && *v != '\r' && n + 1 < size) out[n++] = *v++;
    }
    out[n] = '\0';
    found = 0;
  }
  fclose(f);
  return found;
}

static void store_init(void) {
  if (store_env.known) return;
  store_env.known = 1;
  const char *kind = getenv("HUBU_TEST_STORE");
  if (!kind || !*kind || strcmp(kind, "sqlite") == 0) return;
  if (strcmp(kind, "mariadb") != 0) {
    e2e_fail(__FILE__, __LINE__, "HUBU_TEST_STORE=%s: want sqlite or mariadb", kind);
    e2e_abort();
  }
  const char *env = getenv("HUBU_MARIADB_ENV");
  char port[16] = "";
  if (!env || !*env || env_file_value(env, "MARIADB_PORT", port, sizeof port) != 0 ||
      env_file_value(env, "MARIADB_USER", store_env.user, sizeof store_env.user) != 0 ||
      env_file_value(env, "MARIADB_PASSWORD", store_env.password, sizeof store_env.password) != 0 ||
      (store_env.port = (unsigned)strtoul(port, NULL, 10)) == 0) {
    e2e_fail(__FILE__, __LINE__,
             "HUBU_TEST_STORE=mariadb needs HUBU_MARIADB_ENV, the env file of scripts/mariadb-private.sh "
             "(MARIADB_PORT, MARIADB_USER, MARIADB_PASSWORD); got \"%s\"",
             env ? env : "(unset)");
    e2e_abort();
  }
  setenv("HUBU_STORE_PASSWORD", store_env.password, 1); /* for hubud and hubuctl */
  store_env.mariadb = 1;
}

int mt_store_is_mariadb(void) {
  store_init();
  return store_env.mariadb;
}

const char *mt_store_name(void) { return mt_store_is_mariadb() ? "mariadb" : "sqlite"; }

/* A connection to 127.0.0.1 as the test account, to database (NULL: none); NULL with err. */
static MYSQL *maria_connect(const char *database, char *err, size_t err_size) {
  store_env.used = 1;
  MYSQL *c = mysql_init(NULL);
  if (!c) {
    snprintf(err, err_size, "mysql_init: out of memory");
    return NULL;
  }
  unsigned connect_s = 5, io_s = 60;
  mysql_optionsv(c, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
  mysql_optionsv(c, MYSQL_OPT_READ_TIMEOUT, &io_s);
  mysql_optionsv(c, MYSQL_OPT_WRITE_TIMEOUT, &io_s);
  if (!mysql_real_connect(c, "127.0.0.1", store_env.user, store_env.password, database, store_env.port, NULL, 0)) {
    snprintf(err, err_size, "connect to 127.0.0.1:%u as %s: %u %s", store_env.port, store_env.user, mysql_errno(c),
             mysql_error(c));
    mysql_close(c);
    return NULL;
  }
  return c;
}

/* ---- data dirs ------------------------------------------------------------ */

#define MAX_DIRS 8
static char dirs[MAX_DIRS][64];
static char databases[MAX_DIRS][64]; /* MariaDB databases made here, dropped with the dirs */
static void (*prev_alarm)(int) = NULL;
static int hooks_installed = 0;

static void drop_databases(void) {
  int any = 0;
  for (int i = 0; i < MAX_DIRS; i++) any |= databases[i][0] != '\0';
  if (any) {
    char err[256];
    MYSQL *c = maria_connect(NULL, err, sizeof err);
    for (int i = 0; i < MAX_DIRS; i++) {
      if (!databases[i][0]) continue;
      char sql[128];
      snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%.63s`", databases[i]);
      if (!c || mysql_query(c, sql) != 0)
        fprintf(stderr, "msgtest: could not drop database %s: %s\n", databases[i], c ? mysql_error(c) : err);
      databases[i][0] = '\0';
    }
    if (c) mysql_close(c);
  }
  if (store_env.used) {
    store_env.used = 0;
    mysql_library_end();
  }
}

static void remove_dirs(void) {
  for (int i = 0; i < MAX_DIRS; i++) {
    e2e_remove_tree(dirs[i]);
    dirs[i][0] = '\0';
  }
  drop_databases();
}

/* The harness's watchdog ends with _exit, which skips atexit: remove ours, then chain. */
static void on_alarm(int sig) {
  remove_dirs();
  if (prev_alarm && prev_alarm != SIG_IGN && prev_alarm != SIG_DFL) prev_alarm(sig);
  _exit(3);
}

/* A fresh database for d (any old one of the same name, left by a dead
 * process with this pid, is dropped first). */
static void make_database(mt_dir *d, int slot) {
  static unsigned counter;
  snprintf(d->database, sizeof d->database, "hubu_m%ld_%u", (long)getpid(), ++counter);
  snprintf(databases[slot], sizeof databases[slot], "%s", d->database);
  char err[256], sql[160];
  MYSQL *c = maria_connect(NULL, err, sizeof err);
  if (!c) {
    e2e_fail(__FILE__, __LINE__, "MariaDB: %s", err);
    e2e_abort();
  }
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%.63s`", d->database);
  int bad = mysql_query(c, sql) != 0;
  snprintf(sql, sizeof sql, "CREATE DATABASE `%.63s` CHARACTER SET utf8mb4", d->database);
  if (!bad) bad = mysql_query(c, sql) != 0;
  if (bad) {
    e2e_fail(__FILE__, __LINE__, "MariaDB: %s: %s", sql, mysql_error(c));
    mysql_close(c);
    e2e_abort();
  }
  mysql_close(c);
  snprintf(d->store, sizeof d->store, "mariadb://%s@127.0.0.1:%u/%s", store_env.user, store_env.port, d->database);
  fprintf(stderr, "msgtest: store %s (password in HUBU_STORE_PASSWORD)\n", d->store);
}

void mt_dir_make(mt_dir *d) {
  if (!hooks_installed) {
    hooks_installed = 1;
    atexit(remove_dirs);
    prev_alarm = signal(SIGALRM, on_alarm);
  }
  store_init();
  memset(d, 0, sizeof *d);
  snprintf(d->dir, sizeof d->dir, "/tmp/hubu-msg-XXXXXX");
  REQUIRE(mkdtemp(d->dir) != NULL);
  int slot = -1;
  for (int i = 0; i < MAX_DIRS && slot < 0; i++)
    if (!dirs[i][0] && !databases[i][0]) slot = i;
  if (slot < 0) {
    e2e_remove_tree(d->dir);
    REQUIRE(slot >= 0);
  }
  snprintf(dirs[slot], sizeof dirs[slot], "%s", d->dir);
  snprintf(d->data, sizeof d->data, "%s/data", d->dir);
  snprintf(d->db, sizeof d->db, "%s/hubu.db", d->data);
  REQUIRE(mkdir(d->data, 0700) == 0);
  if (store_env.mariadb)
    make_database(d, slot);
  else
    snprintf(d->store, sizeof d->store, "sqlite:%s", d->db); /* what hubud uses by default */
}

static long sqlite_select(const mt_dir *d, const char *sql, mt_row_fn fn, void *ctx) {
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(d->db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
    e2e_fail(__FILE__, __LINE__, "open %s: %s", d->db, db ? sqlite3_errmsg(db) : "?");
    sqlite3_close(db);
    return -1;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    e2e_fail(__FILE__, __LINE__, "prepare %s: %s", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
    return -1;
  }
  long rows = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    enum { MAX_COLS = 32 };
    int n = sqlite3_column_count(st);
    if (n > MAX_COLS) n = MAX_COLS;
    const char *cols[MAX_COLS];
    size_t lens[MAX_COLS];
    for (int i = 0; i < n; i++) {
      int type = sqlite3_column_type(st, i);
      /* text (integers as decimal text) and blobs both come NUL-terminated from column_text */
      cols[i] = type == SQLITE_NULL ? NULL : (const char *)sqlite3_column_text(st, i);
      lens[i] = cols[i] ? (size_t)sqlite3_column_bytes(st, i) : 0;
    }
    fn(ctx, n, cols, lens);
    rows++;
  }
  if (rc != SQLITE_DONE) {
    e2e_fail(__FILE__, __LINE__, "%s: %s", sql, sqlite3_errmsg(db));
    rows = -1;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

static long mariadb_select(const mt_dir *d, const char *sql, mt_row_fn fn, void *ctx) {
  char err[256];
  MYSQL *c = maria_connect(d->database, err, sizeof err);
  if (!c) {
    e2e_fail(__FILE__, __LINE__, "MariaDB: %s", err);
    return -1;
  }
  MYSQL_RES *res = NULL;
  if (mysql_real_query(c, sql, strlen(sql)) != 0 || !(res = mysql_use_result(c))) {
    e2e_fail(__FILE__, __LINE__, "MariaDB: %s: %s", sql, mysql_error(c));
    mysql_close(c);
    return -1;
  }
  long rows = 0;
  int n = (int)mysql_num_fields(res);
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res))) {
    unsigned long *len = mysql_fetch_lengths(res);
    enum { MAX_COLS = 32 };
    const char *cols[MAX_COLS];
    size_t lens[MAX_COLS];
    int m = n > MAX_COLS ? MAX_COLS : n;
    for (int i = 0; i < m; i++) {
      cols[i] = row[i];
      lens[i] = row[i] ? (size_t)len[i] : 0;
    }
    fn(ctx, m, cols, lens);
    rows++;
  }
  if (mysql_errno(c)) {
    e2e_fail(__FILE__, __LINE__, "MariaDB: %s: %s", sql, mysql_error(c));
    rows = -1;
  }
  mysql_free_result(res);
  mysql_close(c);
  return rows;
}

long mt_store_select(const mt_dir *d, const char *sql, mt_row_fn fn, void *ctx) {
  return d->database[0] ? mariadb_select(d, sql, fn, ctx) : sqlite_select(d, sql, fn, ctx);
}

static void first_number(void *ctx, int n, const char *const *cols, const size_t *lens) {
  (void)lens;
  long long *out = ctx;
  if (*out == -2) *out = n > 0 && cols[0] ? (long long)strtoull(cols[0], NULL, 10) : -1;
}

long long mt_store_count(const mt_dir *d, const char *sql) {
  long long v = -2;
  if (mt_store_select(d, sql, first_number, &v) < 0) return -1;
  if (v < 0) e2e_fail(__FILE__, __LINE__, "%s: no number", sql);
  return v < 0 ? -1 : v;
}

int mt_group_create(const mt_dir *d, const char *group, ...) {
  char *argv[64];
  int n = 0;
  argv[n++] = HUBUCTL_PATH;
  argv[n++] = "group";
  argv[n++] = "create";
  argv[n++] = (char *)group;
  va_list ap;
  va_start(ap, group);
  for (const char *u; (u = va_arg(ap, const char *)) != NULL && n < 58;) argv[n++] = (char *)u;
  va_end(ap);
  if (d->database[0]) {
    argv[n++] = "--store";
    argv[n++] = (char *)d->store;
  } else {
    argv[n++] = "--data";
    argv[n++] = (char *)d->data;
  }
  argv[n] = NULL;
  return mt_run((const char *const *)argv, 20000);
}

int mt_env_value(const char *file, const char *key, char *out, size_t size) {
  return env_file_value(file, key, out, size);
}

int mt_run(const char *const *argv, int timeout_ms) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  int st = 0;
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (e2e_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      fprintf(stderr, "msgtest: %s %s took more than %d ms\n", argv[0], argv[1] ? argv[1] : "", timeout_ms);
      return -1;
    }
    e2e_sleep_ms(5);
  }
  int status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (status != 0) fprintf(stderr, "msgtest: %s %s exited with %d\n", argv[0], argv[1] ? argv[1] : "", status);
  return status;
}

/* ---- blocking helpers ----------------------------------------------------- */

int mt_hello_at(const char *file, int line, int port, const char *user, const char *device, uint64_t *last_client_id) {
  int fd = e2e_connect(port);
  if (fd < 0) {
    e2e_fail(file, line, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    return -1;
  }
  Hubu__V1__HelloOk *ok = NULL;
  if (e2e_send_hello(fd, user, device, NULL) != 0 || !e2e_expect_hello_ok_at(file, line, fd, &ok, E2E_WAIT_MS)) {
    close(fd);
    return -1;
  }
  if (last_client_id) *last_client_id = ok->last_client_id;
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  return fd;
}

static void fill_send(Hubu__V1__Send *s, uint64_t client_id, const char *session, const void *body, size_t body_len) {
  hubu__v1__send__init(s);
  s->client_id = client_id;
  s->session_id = (char *)session;
  s->body.data = (uint8_t *)body;
  s->body.len = body_len;
}

int mt_send_full(int fd, uint64_t client_id, const char *session, const void *body, size_t body_len,
                 const char *content_type, const char *meta_key, const char *meta_value) {
  Hubu__V1__Send s;
  fill_send(&s, client_id, session, body, body_len);
  if (content_type) s.content_type = (char *)content_type;
  Hubu__V1__Send__MetaEntry entry = HUBU__V1__SEND__META_ENTRY__INIT;
  Hubu__V1__Send__MetaEntry *entries[1] = {&entry};
  if (meta_key) {
    entry.key = (char *)meta_key;
    entry.value = (char *)(meta_value ? meta_value : "");
    s.meta = entries;
    s.n_meta = 1;
  }
  s.client_time_ms = hubu_now_ms();
  return e2e_send_msg(fd, HUBU_FRAME_SEND, &s.base);
}

int mt_send(int fd, uint64_t client_id, const char *session, const char *body) {
  return mt_send_full(fd, client_id, session, body, strlen(body), NULL, NULL, NULL);
}

int mt_append_send(hubu_buf *b, uint64_t client_id, const char *session, const void *body, size_t body_len) {
  Hubu__V1__Send s;
  fill_send(&s, client_id, session, body, body_len);
  return hubu_wire_append(b, HUBU_FRAME_SEND, &s.base);
}

int mt_deliver_ack(int fd, const char *session, uint64_t seq) {
  Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
  cur.session_id = (char *)session;
  cur.seq = seq;
  Hubu__V1__Cursor *curs[1] = {&cur};
  Hubu__V1__DeliverAck a = HUBU__V1__DELIVER_ACK__INIT;
  a.cursors = curs;
  a.n_cursors = 1;
  return e2e_send_msg(fd, HUBU_FRAME_DELIVER_ACK, &a.base);
}

int mt_pull_request(int fd, uint64_t request_id, const char *session, uint64_t after_seq, uint32_t limit) {
  Hubu__V1__PullRequest p = HUBU__V1__PULL_REQUEST__INIT;
  p.request_id = request_id;
  p.session_id = (char *)session;
  p.after_seq = after_seq;
  p.limit = limit;
  return e2e_send_msg(fd, HUBU_FRAME_PULL, &p.base);
}

int mt_sync_request(int fd, uint64_t request_id, size_t n, const char *const *sessions, const uint64_t *seqs) {
  Hubu__V1__Cursor cur[16];
  Hubu__V1__Cursor *curs[16];
  if (n > 16) return -1;
  for (size_t i = 0; i < n; i++) {
    hubu__v1__cursor__init(&cur[i]);
    cur[i].session_id = (char *)sessions[i];
    cur[i].seq = seqs[i];
    curs[i] = &cur[i];
  }
  Hubu__V1__SyncRequest r = HUBU__V1__SYNC_REQUEST__INIT;
  r.request_id = request_id;
  r.known = curs;
  r.n_known = n;
  return e2e_send_msg(fd, HUBU_FRAME_SYNC, &r.base);
}

int mt_next_frame(int fd, int timeout_ms, e2e_frame *f) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (int i = 0; i < 64; i++) {
    uint64_t now = e2e_now_ms();
    int r = e2e_read_frame(fd, now < deadline ? (int)(deadline - now) : 0, f);
    if (r != E2E_READ_OK) return r;
    if (f->type != HUBU_FRAME_PING) return r;
    Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, f->len, f->body);
    e2e_send_ping(fd, HUBU_FRAME_PONG, p ? p->time_ms : 0);
    if (p) hubu__v1__ping__free_unpacked(p, NULL);
    e2e_frame_free(f);
  }
  return E2E_READ_ERROR;
}

static const char *frame_name(uint8_t type) { return hubu_frame_type_name(type); }

int mt_skip_pushes = 0;

int mt_expect_frame_at(const char *file, int line, int fd, uint8_t type, int timeout_ms, e2e_frame *f) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  int r;
  for (;;) {
    uint64_t now = e2e_now_ms();
    r = mt_next_frame(fd, now < deadline ? (int)(deadline - now) : 0, f);
    if (r != E2E_READ_OK || !mt_skip_pushes || type == HUBU_FRAME_PUSH || type == HUBU_FRAME_PULL_HINT ||
        (f->type != HUBU_FRAME_PUSH && f->type != HUBU_FRAME_PULL_HINT))
      break;
    e2e_frame_free(f);
  }
  if (r != E2E_READ_OK) {
    e2e_fail(file, line, "expected %s, got %s", frame_name(type), e2e_read_result_name(r));
    return 0;
  }
  if (f->type != type) {
    char extra[200] = "";
    if (f->type == HUBU_FRAME_ERROR) {
      Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, f->len, f->body);
      if (e) {
        snprintf(extra, sizeof extra, " {code=%s message=\"%s\"}", hubu_code_name(e->code), e->message);
        hubu__v1__error__free_unpacked(e, NULL);
      }
    } else if (f->type == HUBU_FRAME_GOAWAY) {
      Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, f->len, f->body);
      if (g) {
        snprintf(extra, sizeof extra, " {code=%s reason=\"%s\"}", hubu_code_name(g->code), g->reason);
        hubu__v1__go_away__free_unpacked(g, NULL);
      }
    } else if (f->type == HUBU_FRAME_SEND_ACK) {
      Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, f->len, f->body);
      if (a) {
        snprintf(extra, sizeof extra, " {client_id=%llu code=%s seq=%llu}", (unsigned long long)a->client_id,
                 hubu_code_name(a->code), (unsigned long long)a->seq);
        hubu__v1__send_ack__free_unpacked(a, NULL);
      }
    } else if (f->type == HUBU_FRAME_PUSH) {
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, f->len, f->body);
      if (p) {
        snprintf(extra, sizeof extra, " {%zu messages, first %s seq %llu}", p->n_messages,
                 p->n_messages ? p->messages[0]->session_id : "-",
                 p->n_messages ? (unsigned long long)p->messages[0]->seq : 0ull);
        hubu__v1__push__free_unpacked(p, NULL);
      }
    }
    e2e_fail(file, line, "expected %s, got %s%s", frame_name(type), frame_name(f->type), extra);
    e2e_frame_free(f);
    return 0;
  }
  return 1;
}

#define EXPECT_DECODED(type_const, fn_unpack, what)                                 \
  e2e_frame f;                                                                      \
  if (!mt_expect_frame_at(file, line, fd, type_const, timeout_ms, &f)) return NULL; \
  void *m = fn_unpack(NULL, f.len, f.body);                                         \
  if (!m) e2e_fail(file, line, "%s body does not decode", what);                    \
  e2e_frame_free(&f);                                                               \
  return m;

Hubu__V1__SendAck *mt_expect_ack_at(const char *file, int line, int fd, int timeout_ms){
    EXPECT_DECODED(HUBU_FRAME_SEND_ACK, hubu__v1__send_ack__unpack,
                   "SEND_ACK")} Hubu__V1__Push *mt_expect_push_at(const char *file, int line, int fd, int timeout_ms){
    EXPECT_DECODED(HUBU_FRAME_PUSH, hubu__v1__push__unpack,
                   "PUSH")} Hubu__V1__PullResult *mt_expect_pull_at(const char *file, int line, int fd, int timeout_ms){
    EXPECT_DECODED(HUBU_FRAME_PULL_RESULT, hubu__v1__pull_result__unpack,
                   "PULL_RESULT")} Hubu__V1__SyncResult *mt_expect_sync_at(const char *file, int line, int fd,
                                                                           int timeout_ms){
    EXPECT_DECODED(HUBU_FRAME_SYNC_RESULT, hubu__v1__sync_result__unpack,
                   "SYNC_RESULT")} Hubu__V1__PullHint *mt_expect_hint_at(const char *file, int line, int fd,
                                                                         int timeout_ms) {
  EXPECT_DECODED(HUBU_FRAME_PULL_HINT, hubu__v1__pull_hint__unpack, "PULL_HINT")
}

int mt_expect_quiet_at(const char *file, int line, int fd, int ms) {
  e2e_frame f;
  int r = mt_next_frame(fd, ms, &f);
  if (r == E2E_READ_TIMEOUT) return 1;
  if (r == E2E_READ_OK) {
    char extra[160] = "";
    if (f.type == HUBU_FRAME_PUSH) {
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, f.len, f.body);
      if (p) {
        snprintf(extra, sizeof extra, " {%zu messages, first %s seq %llu}", p->n_messages,
                 p->n_messages ? p->messages[0]->session_id : "-",
                 p->n_messages ? (unsigned long long)p->messages[0]->seq : 0ull);
        hubu__v1__push__free_unpacked(p, NULL);
      }
    }
    e2e_fail(file, line, "expected no frame for %d ms, got %s%s", ms, frame_name(f.type), extra);
    e2e_frame_free(&f);
  } else {
    e2e_fail(file, line, "expected no frame for %d ms, got %s", ms, e2e_read_result_name(r));
  }
  return 0;
}

Hubu__V1__SendAck *mt_send_ack_at(const char *file, int line, int fd, uint64_t client_id, const char *session,
                                  const char *body) {
  if (mt_send(fd, client_id, session, body) != 0) {
    e2e_fail(file, line, "SEND client_id %llu: write failed", (unsigned long long)client_id);
    return NULL;
  }
  return mt_expect_ack_at(file, line, fd, E2E_WAIT_MS);
}

Hubu__V1__PullResult *mt_pull_at(const char *file, int line, int fd, uint64_t request_id, const char *session,
                                 uint64_t after_seq, uint32_t limit) {
  if (mt_pull_request(fd, request_id, session, after_seq, limit) != 0) {
    e2e_fail(file, line, "PULL %s: write failed", session);
    return NULL;
  }
  return mt_expect_pull_at(file, line, fd, E2E_WAIT_MS);
}

/* ---- non-blocking connections ----------------------------------------------- */

int mt_nb_connect(mt_nb *c, int port) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  c->fd = fd;
  return 0;
}

void mt_nb_close(mt_nb *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->dead = 0;
  c->paused = 0;
  hubu_buf_free(&c->in);
  hubu_buf_free(&c->out);
}

int mt_nb_queue(mt_nb *c, uint8_t type, const ProtobufCMessage *msg) {
  if (c->fd < 0) return -1;
  return hubu_wire_append(&c->out, type, msg);
}

int mt_nb_queue_hello(mt_nb *c, const char *user, const char *device) {
  char tok[HUBU_TOKEN_MAX];
  e2e_token(user, tok);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = (char *)user;
  h.device_id = (char *)device;
  h.token = tok;
  h.client_info = "hubu-msgtest";
  return mt_nb_queue(c, HUBU_FRAME_HELLO, &h.base);
}

static void nb_write(mt_nb *c) {
  while (hubu_buf_size(&c->out)) {
    ssize_t w = send(c->fd, hubu_buf_head(&c->out), hubu_buf_size(&c->out), MSG_NOSIGNAL);
    if (w > 0) {
      hubu_buf_consume(&c->out, (size_t)w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c->dead = 1;
    return;
  }
}

static void nb_read(mt_nb *c) {
  for (int i = 0; i < 64; i++) {
    uint8_t *p = hubu_buf_reserve(&c->in, 65536);
    if (!p) {
      c->dead = 1;
      return;
    }
    ssize_t r = recv(c->fd, p, 65536, 0);
    if (r > 0) {
      c->in.len += (size_t)r;
      if (r < 65536) return;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c->dead = 1; /* EOF, reset */
    return;
  }
}

void mt_nb_poll(mt_nb *const *conns, size_t n, int timeout_ms) {
  static struct pollfd *pfd;
  static size_t *idx, cap;
  if (n > cap) {
    struct pollfd *p = realloc(pfd, n * sizeof *p);
    if (p) pfd = p;
    size_t *x = p ? realloc(idx, n * sizeof *x) : NULL;
    if (x) idx = x;
    REQUIRE(p && x);
    cap = n;
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    mt_nb *c = conns[i];
    if (!c || c->fd < 0 || c->dead) continue;
    if (hubu_buf_size(&c->out)) nb_write(c); /* most writes go through at once */
    short ev = (short)((c->paused ? 0 : POLLIN) | (hubu_buf_size(&c->out) ? POLLOUT : 0));
    if (!ev || c->dead) continue;
    pfd[m].fd = c->fd;
    pfd[m].events = ev;
    pfd[m].revents = 0;
    idx[m++] = i;
  }
  if (!m) {
    if (timeout_ms > 0) e2e_sleep_ms(timeout_ms);
    return;
  }
  int r = poll(pfd, (nfds_t)m, timeout_ms);
  if (r <= 0) return;
  for (size_t k = 0; k < m; k++) {
    mt_nb *c = conns[idx[k]];
    if (pfd[k].revents & POLLOUT) nb_write(c);
    if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (c->paused) {
        if (pfd[k].revents & POLLERR) c->dead = 1;
      } else {
        nb_read(c);
      }
    }
  }
}

int mt_nb_frame(mt_nb *c, uint8_t *type, const uint8_t **body, uint32_t *len, size_t *size) {
  hubu_frame f;
  size_t avail = hubu_buf_size(&c->in);
  if (!avail) return 0;
  hubu_frame_status st = hubu_frame_next(hubu_buf_head(&c->in), avail, 64u << 20, &f);
  if (st == HUBU_FRAME_NEED_MORE) return 0;
  if (st != HUBU_FRAME_OK) {
    fprintf(stderr, "msgtest: the server sent a malformed frame header\n");
    c->dead = 1;
    return 0;
  }
  *type = f.header.type;
  *body = f.body;
  *len = f.header.length;
  *size = f.size;
  return 1;
}

void mt_nb_consume(mt_nb *c, size_t size) { hubu_buf_consume(&c->in, size); }

long mt_nb_inq(const mt_nb *c) {
  int n = 0;
  if (c->fd < 0 || ioctl(c->fd, SIOCINQ, &n) != 0) return -1;
  return n;
}

/* ---- misc ---------------------------------------------------------------------- */

uint64_t mt_rand(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

uint64_t mt_rand_range(uint64_t *s, uint64_t lo, uint64_t hi) {
  if (hi <= lo) return lo;
  return lo + mt_rand(s) % (hi - lo + 1);
}

uint64_t mt_seed(void) {
  const char *e = getenv("HUBU_MSG_SEED");
  uint64_t seed;
  if (e && *e) {
    seed = strtoull(e, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
  }
  if (!seed) seed = 1;
  fprintf(stderr, "  seed %llu (rerun with HUBU_MSG_SEED=%llu)\n", (unsigned long long)seed, (unsigned long long)seed);
  return seed;
}

/* store_copy.c — `hubuctl store copy` (tools/hubuctl_store.c) between real
 * SQLite files and databases of the private MariaDB server that
 * HUBU_MARIADB_ENV names (tests/store_copy.cmake, the ctest fixture
 * "mariadb"). No mocks: the source store is written through the SQLite
 * backend (store.h), hubuctl runs as a child process, and the two sides are
 * compared here, table by table and byte for byte, with queries of this
 * file's own, not the tool's.
 *
 * The source holds what the tool must keep exactly: bodies with NUL and
 * non-UTF-8 bytes, a meta blob, a kv value with NULs, u64 values above 2^53
 * and above 2^63 (seq, msg_id, client_id, cursors), NULL and empty blobs.
 *
 *   store_copy_test CASE                   runs one case (all without CASE)
 *   store_copy_test --make-source URL N    writes N messages into a new SQLite store (for timing copies) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mysql.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"
#include "mariadb_env.h"
#include "msg.h"
#include "store.h"

#ifndef HUBUCTL_PATH
#error "HUBUCTL_PATH must name the hubuctl binary"
#endif

#define BIG (UINT64_C(1) << 63) /* above 2^63: stored by SQLite as a negative int64 */
#define MSG_ID_BASE (UINT64_C(1) << 62)

/* ---- the private server ---- */

static char env_port[16], env_user[80], env_password[128];
static MYSQL *admin;
static char made_dbs[16][64];
static int n_made_dbs;
static char made_dirs[8][64];
static int n_made_dirs;

static void cleanup(void) {
  for (int i = 0; admin && i < n_made_dbs; i++) {
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %.64s", made_dbs[i]);
    mysql_query(admin, sql);
  }
  n_made_dbs = 0;
  if (admin) mysql_close(admin);
  admin = NULL;
  for (int i = 0; i < n_made_dirs; i++) e2e_remove_tree(made_dirs[i]);
  n_made_dirs = 0;
}

static void connect_admin(void) {
  if (admin) return;
  const char *env = getenv("HUBU_MARIADB_ENV");
  if (!env || !*env || env_value(env, "MARIADB_PORT", env_port, sizeof env_port) != 0 ||
      env_value(env, "MARIADB_USER", env_user, sizeof env_user) != 0 ||
      env_value(env, "MARIADB_PASSWORD", env_password, sizeof env_password) != 0) {
    fprintf(stderr, "store_copy: HUBU_MARIADB_ENV names no private server's env file (run it through ctest)\n");
    REQUIRE(0);
  }
  atexit(cleanup);
  admin = mysql_init(NULL);
  REQUIRE(admin != NULL);
  if (!mysql_real_connect(admin, "127.0.0.1", env_user, env_password, NULL, (unsigned)atoi(env_port), NULL, 0)) {
    fprintf(stderr, "store_copy: connect: %s\n", mysql_error(admin));
    REQUIRE(0);
  }
}

/* A fresh database; its URL (with the password) into url. */
static void fresh_db(char *url, size_t size, char *name, size_t name_size) {
  static int n;
  connect_admin();
  REQUIRE(n_made_dbs < (int)(sizeof made_dbs / sizeof made_dbs[0]));
  snprintf(name, name_size, "hubu_copy_%ld_%d", (long)getpid(), n++);
  char sql[160];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", name);
  REQUIRE(mysql_query(admin, sql) == 0);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
  REQUIRE(mysql_query(admin, sql) == 0);
  snprintf(made_dbs[n_made_dbs++], sizeof made_dbs[0], "%s", name);
  snprintf(url, size, "mariadb://%s:%s@127.0.0.1:%s/%s", env_user, env_password, env_port, name);
}

static void temp_dir(char *out, size_t size) {
  REQUIRE(n_made_dirs < (int)(sizeof made_dirs / sizeof made_dirs[0]));
  snprintf(out, size, "/tmp/hubu-copy-XXXXXX");
  REQUIRE(mkdtemp(out) != NULL);
  snprintf(made_dirs[n_made_dirs++], sizeof made_dirs[0], "%s", out);
}

/* One statement on a database as the test account; the first column of the
 * first row as u64 (0 without one), or UINT64_MAX on failure. */
static uint64_t db_u64(const char *db, const char *sql) {
  connect_admin();
  char use[96];
  snprintf(use, sizeof use, "USE %s", db);
  if (mysql_query(admin, use) != 0 || mysql_query(admin, sql) != 0) {
    fprintf(stderr, "store_copy: %s: %s\n", sql, mysql_error(admin));
    return UINT64_MAX;
  }
  MYSQL_RES *res = mysql_store_result(admin);
  if (!res) return mysql_field_count(admin) ? UINT64_MAX : 0;
  MYSQL_ROW row = mysql_fetch_row(res);
  uint64_t v = row && row[0] ? strtoull(row[0], NULL, 10) : 0;
  mysql_free_result(res);
  return v;
}

/* ---- a source store with real content, written through the backend ---- */

typedef struct {
  const hubu_store_backend *backend;
  void *db;
} store;

static void store_open(store *s, const char *url) {
  char err[256];
  hubu_store_config cfg = {.url = url, .fsync = HUBU_FSYNC_OFF};
  s->backend = hubu_store_backend_for_url(url, err, sizeof err);
  s->db = s->backend ? s->backend->open(&cfg, err, sizeof err) : NULL;
  if (!s->db) fprintf(stderr, "store_copy: open %s: %s\n", url, err);
  REQUIRE(s->db != NULL);
}

static void store_close(store *s) {
  if (s->db) s->backend->close(s->db);
  s->db = NULL;
}

static void run_op(store *s, hubu_store_op *op, hubu_store_status want) {
  s->backend->execute(s->db, op);
  CHECKF(op->status == want, "store op %d: status %d (want %d): %s", op->kind, op->status, want, op->error);
  hubu_store_op_free(op);
}

static char **strings(int n, ...) {
  char **out = calloc((size_t)n, sizeof *out);
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) out[i] = strdup(va_arg(ap, const char *));
  va_end(ap);
  return out;
}

/* The seeded content of message i: which session it goes to, from whom. */
typedef struct {
  uint64_t next_chat_seq, next_team_seq, next_blob_seq;
  uint64_t next_alice_client, next_bob_client, next_carol_client;
} source_state;

static hubu_store_op *message_op(source_state *st, uint64_t i, int seed) {
  uint8_t body[96];
  size_t body_len;
  uint8_t *meta = NULL;
  size_t meta_len = 0;
  const char *session, *sender, *device, *ctype = "text/plain", *new_kind = "";
  uint64_t seq, client_id, when = UINT64_C(1700000000000) + i;
  char **members = NULL;
  int n_members = 0;
  switch (i % 3) {
    case 0:
      session = "d:alice:bob";
      sender = "alice";
      device = "d1";
      seq = ++st->next_chat_seq;
      client_id = ++st->next_alice_client;
      body_len = (size_t)snprintf((char *)body, sizeof body, "hello %" PRIu64 " from alice, seed %d", i, seed);
      if (i % 2 == 0) { /* a valid meta map: {"k": "v<i>"} */
        Hubu__V1__Send__MetaEntry e = HUBU__V1__SEND__META_ENTRY__INIT, *entries[1] = {&e};
        char value[32];
        snprintf(value, sizeof value, "v%" PRIu64, i);
        e.key = "k";
        e.value = value;
        REQUIRE(hubu_msg_pack_meta(1, entries, &meta, &meta_len) == 0);
      }
      if (seq == 1) {
        new_kind = "direct";
        members = strings(2, "alice", "bob");
        n_members = 2;
      }
      break;
    case 1:
      session = "g:team";
      sender = "bob";
      device = "d1";
      seq = ++st->next_team_seq;
      client_id = ++st->next_bob_client;
      body_len = (size_t)snprintf((char *)body, sizeof body, "team message %" PRIu64 " (seed %d) \xc3\xa9t\xc3\xa9", i,
                                  seed); /* UTF-8 */
      break;
    default:
      session = "x:blobs";
      sender = "carol";
      device = "big";
      seq = BIG + ++st->next_blob_seq;
      client_id = BIG + ++st->next_carol_client;
      when = BIG + i;
      ctype = "application/octet-stream";
      /* NULs and bytes that are not UTF-8; every tenth body empty */
      body_len = i % 10 == 2 ? 0 : 24 + (size_t)(i % 40);
      for (size_t k = 0; k < body_len; k++) body[k] = (uint8_t)((k * 37 + i + (uint64_t)seed) & 0xff);
      if (body_len > 3) {
        body[0] = 0;
        body[1] = 0xff;
        body[2] = 0xfe;
        body[3] = '\'';
      }
      if (i % 4 == 2) { /* a meta blob of arbitrary bytes */
        meta_len = 7;
        meta = malloc(meta_len);
        memcpy(meta, "\x00\x01'\\\"\xff\x00", meta_len);
      }
      if (seq == BIG + 1) {
        new_kind = "custom";
        members = strings(1, "carol");
        n_members = 1;
      }
      break;
  }
  hubu_msg *m = hubu_msg_new(session, seq, MSG_ID_BASE + i, sender, device, client_id, body, body_len, ctype, meta,
                             meta_len, when);
  free(meta);
  REQUIRE(m != NULL);
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_APPEND);
  REQUIRE(op != NULL);
  op->append.msg = m;
  snprintf(op->append.new_kind, sizeof op->append.new_kind, "%s", new_kind);
  op->append.new_members = members;
  op->append.n_new_members = (size_t)n_members;
  return op;
}

/* Appends messages [from, to) in batches of 500, as hubud's group commit would. */
static void append_messages(store *s, source_state *st, uint64_t from, uint64_t to, int seed) {
  hubu_store_op *ops[500];
  for (uint64_t i = from; i < to;) {
    size_t n = 0;
    for (; n < 500 && i < to; n++, i++) ops[n] = message_op(st, i, seed);
    s->backend->append_batch(s->db, ops, n);
    for (size_t k = 0; k < n; k++) {
      CHECKF(ops[k]->status == HUBU_STORE_OK, "append: status %d: %s", ops[k]->status, ops[k]->error);
      hubu_store_op_free(ops[k]);
    }
  }
}

static void kv_set(store *s, const char *plugin, const char *key, const void *value, size_t len) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_KV_SET);
  snprintf(op->kv.plugin, sizeof op->kv.plugin, "%s", plugin);
  op->kv.key = strdup(key);
  op->kv.value = malloc(len ? len : 1);
  memcpy(op->kv.value, value, len);
  op->kv.value_len = len;
  run_op(s, op, HUBU_STORE_OK);
}

static void cursor_save(store *s, const char *user, const char *device, const char *session, uint64_t seq) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_CURSORS_SAVE);
  op->cursors_save.cursors = calloc(1, sizeof *op->cursors_save.cursors);
  op->cursors_save.n_cursors = 1;
  hubu_store_cursor *c = op->cursors_save.cursors;
  snprintf(c->user, sizeof c->user, "%s", user);
  snprintf(c->device, sizeof c->device, "%s", device);
  snprintf(c->session_id, sizeof c->session_id, "%s", session);
  c->delivered_seq = seq;
  run_op(s, op, HUBU_STORE_OK);
}

static void member_op(store *s, hubu_store_op_kind kind, const char *session, const char *user, const char *role) {
  hubu_store_op *op = hubu_store_op_new(kind);
  snprintf(op->member.session_id, sizeof op->member.session_id, "%s", session);
  snprintf(op->member.user, sizeof op->member.user, "%s", user);
  snprintf(op->member.role, sizeof op->member.role, "%s", role);
  run_op(s, op, HUBU_STORE_OK);
}

static void group_create(store *s, const char *group, int n, ...) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SESSION_CREATE);
  snprintf(op->session_create.session_id, sizeof op->session_create.session_id, "%s", group);
  snprintf(op->session_create.kind, sizeof op->session_create.kind, "group");
  op->session_create.members = calloc((size_t)n, sizeof(char *));
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) op->session_create.members[i] = strdup(va_arg(ap, const char *));
  va_end(ap);
  op->session_create.n_members = (size_t)n;
  run_op(s, op, HUBU_STORE_OK);
}

/* A new store at url with n messages and every other table filled. */
static void make_source(const char *url, uint64_t n, int seed, source_state *st) {
  store s;
  memset(st, 0, sizeof *st);
  store_open(&s, url);
  group_create(&s, "g:team", 3, "alice", "bob", "carol");
  member_op(&s, HUBU_STORE_MEMBER_ADD, "g:team", "dave", "owner");
  group_create(&s, "g:quiet", 1, "erin");
  append_messages(&s, st, 0, n, seed);
  cursor_save(&s, "alice", "d1", "d:alice:bob", 5);
  cursor_save(&s, "bob", "d1", "g:team", 3);
  cursor_save(&s, "carol", "big", "x:blobs", BIG + 3);
  static const uint8_t words[] = {'b', 'a', 'd', 0, 'w', 'o', 'r', 'd', 0, 0xff, 0xfe, '\'', '\\'};
  kv_set(&s, "moderation", "words", words, sizeof words);
  kv_set(&s, "moderation", "empty", "", 0);
  for (int k = 0; k < 30; k++) {
    char key[32], value[32];
    snprintf(key, sizeof key, "limit:%02d", k);
    snprintf(value, sizeof value, "%d-%d", k * 7, seed);
    kv_set(&s, "ratelimit", key, value, strlen(value));
  }
  store_close(&s);
}

/* ---- both sides dumped, row by row, in key order ---- */

typedef struct {
  const char *name;
  const char *columns; /* in the SELECT */
  const char *order;
  const char *ints; /* one char per column: 'i' integer, 's' string */
} table_spec;

static const table_spec specs[] = {
    {"messages",
     "log_pos, session_id, seq, msg_id, sender, sender_device, client_id, content_type, body, meta, server_time_ms",
     "log_pos", "isiississsi"},
    {"sessions", "session_id, kind, max_seq, min_seq, created_ms, meta", "session_id", "ssiiis"},
    {"members", "session_id, user_id, role, joined_ms", "session_id, user_id", "sssi"},
    {"devices", "user_id, device_id, last_client_id, last_seen_ms", "user_id, device_id", "ssii"},
    {"cursors", "user_id, device_id, session_id, delivered_seq", "user_id, device_id, session_id", "sssi"},
    {"kv", "plugin, `key`, value", "plugin, `key`", "sss"},
};
#define N_SPECS (sizeof specs / sizeof specs[0])

typedef struct {
  char *p;
  size_t len, cap;
  uint64_t rows;
} dump;

static void dump_add(dump *d, const void *p, size_t n) {
  if (d->len + n + 1 > d->cap) {
    d->cap = (d->len + n + 1) * 2;
    d->p = realloc(d->p, d->cap);
    REQUIRE(d->p != NULL);
  }
  if (n) memcpy(d->p + d->len, p, n);
  d->len += n;
}

static void dump_int(dump *d, uint64_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "i%" PRIu64 ";", v);
  dump_add(d, tmp, (size_t)n);
}

static void dump_bytes(dump *d, const void *p, size_t n) {
  char tmp[32];
  int k = snprintf(tmp, sizeof tmp, "b%zu:", n);
  dump_add(d, tmp, (size_t)k);
  dump_add(d, p, n);
}

static void dump_table(const char *url, const table_spec *t, dump *d) {
  memset(d, 0, sizeof *d);
  char sql[512];
  snprintf(sql, sizeof sql, "SELECT %s FROM %s ORDER BY %s", t->columns, t->name, t->order);
  int ncols = (int)strlen(t->ints);
  if (!strncmp(url, "sqlite:", 7)) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    REQUIRE(sqlite3_open_v2(url + 7, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
      d->rows++;
      for (int i = 0; i < ncols; i++) {
        if (sqlite3_column_type(st, i) == SQLITE_NULL)
          dump_add(d, "N;", 2);
        else if (t->ints[i] == 'i')
          dump_int(d, (uint64_t)sqlite3_column_int64(st, i));
        else {
          const void *p = sqlite3_column_blob(st, i);
          dump_bytes(d, p, (size_t)sqlite3_column_bytes(st, i));
        }
      }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return;
  }
  const char *db = strrchr(url, '/') + 1;
  char use[96];
  snprintf(use, sizeof use, "USE %s", db);
  connect_admin();
  REQUIRE(mysql_query(admin, use) == 0);
  if (mysql_query(admin, sql) != 0) fprintf(stderr, "store_copy: %s: %s\n", sql, mysql_error(admin));
  MYSQL_RES *res = mysql_store_result(admin);
  REQUIRE(res != NULL);
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res))) {
    unsigned long *len = mysql_fetch_lengths(res);
    d->rows++;
    for (int i = 0; i < ncols; i++) {
      if (!row[i])
        dump_add(d, "N;", 2);
      else if (t->ints[i] == 'i')
        dump_int(d, strtoull(row[i], NULL, 10));
      else
        dump_bytes(d, row[i], len[i]);
    }
  }
  mysql_free_result(res);
}

/* Every table of a equals b's, row by row and byte for byte. */
static int check_same_stores(const char *a, const char *b, const char *where) {
  int same = 1;
  for (size_t t = 0; t < N_SPECS; t++) {
    dump x, y;
    dump_table(a, &specs[t], &x);
    dump_table(b, &specs[t], &y);
    if (x.len != y.len || (x.len && memcmp(x.p, y.p, x.len) != 0)) {
      size_t at = 0;
      while (at < x.len && at < y.len && x.p[at] == y.p[at]) at++;
      e2e_fail(__FILE__, __LINE__,
               "%s: table %s differs (%" PRIu64 " rows vs %" PRIu64 "; first difference at byte %zu)", where,
               specs[t].name, x.rows, y.rows, at);
      same = 0;
    }
    free(x.p);
    free(y.p);
  }
  return same;
}

static uint64_t table_rows(const char *url, const char *name) {
  for (size_t t = 0; t < N_SPECS; t++)
    if (!strcmp(specs[t].name, name)) {
      dump d;
      dump_table(url, &specs[t], &d);
      free(d.p);
      return d.rows;
    }
  return UINT64_MAX;
}

/* ---- running hubuctl ---- */

typedef struct {
  int status;      /* exit status, 128 + signal, -1 */
  char out[16384]; /* stdout and stderr, in order */
} run_result;

static pid_t spawn_hubuctl(const char *out_path, const char *password_env, const char *const *args) {
  const char *argv[32];
  int n = 0;
  argv[n++] = HUBUCTL_PATH;
  for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
  argv[n] = NULL;
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    unsetenv("HUBU_STORE");
    if (password_env)
      setenv("HUBU_STORE_PASSWORD", password_env, 1);
    else
      unsetenv("HUBU_STORE_PASSWORD");
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

static int wait_hubuctl(pid_t pid, int timeout_ms) {
  int st = 0;
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (e2e_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      fprintf(stderr, "store_copy: hubuctl took more than %d ms\n", timeout_ms);
      return -1;
    }
    e2e_sleep_ms(5);
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

static void read_output(const char *path, run_result *r) {
  r->out[0] = '\0';
  FILE *f = fopen(path, "r");
  if (!f) return;
  size_t n = fread(r->out, 1, sizeof r->out - 1, f);
  r->out[n] = '\0';
  fclose(f);
}

/* hubuctl with args (NULL-terminated), its output kept. */
static void hubuctl_env(run_result *r, const char *password_env, ...) {
  const char *args[30];
  int n = 0;
  va_list ap;
  va_start(ap, password_env);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 29;) args[n++] = a;
  va_end(ap);
  args[n] = NULL;
  char path[64];
  snprintf(path, sizeof path, "/tmp/hubu-copy-out-%ld", (long)getpid());
  r->status = wait_hubuctl(spawn_hubuctl(path, password_env, args), 100000);
  read_output(path, r);
  unlink(path);
  /* in the sanitizer tree: a report fails the case even where a failing exit status is expected */
  CHECKF(!strstr(r->out, "Sanitizer") && !strstr(r->out, "runtime error:"), "hubuctl %s: %s", args[0], r->out);
}
#define HUBUCTL(r, ...) hubuctl_env((r), NULL, __VA_ARGS__, NULL)

/* The output never shows the test account's password. */
#define CHECK_NO_PASSWORD(r) CHECKF(strstr((r)->out, env_password) == NULL, "the password shows in: %s", (r)->out)

#define CHECK_STATUS(r, want) \
  CHECKF((r)->status == (want), "hubuctl exit status %d (want %d); output:\n%s", (r)->status, (want), (r)->out)

static void sqlite_url(char *out, size_t size, const char *dir, const char *name) {
  snprintf(out, size, "sqlite:%s/%s", dir, name);
}

/* ---- cases ---- */

/* A whole store, to a fresh database: every row byte for byte, log_counter
 * at MAX(log_pos), and no password in the output, from the URL or from
 * $HUBU_STORE_PASSWORD. */
static void copy_keeps_every_byte_and_never_prints_the_password(void) {
  char dir[64], src[128], dst[512], name[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(src, sizeof src, dir, "data/hubu.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  source_state st;
  make_source(src, 2500, 1, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst);
  CHECK_STATUS(&r, 0);
  CHECK_NO_PASSWORD(&r);
  CHECKF(strstr(r.out, ":***@127.0.0.1") != NULL, "the redacted URL is shown: %s", r.out);
  CHECKF(strstr(r.out, "done: the destination matches the source") != NULL, "output: %s", r.out);
  check_same_stores(src, dst, "after the copy");
  CHECK_EQ(table_rows(dst, "messages"), 2500);
  CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), 2500);
  CHECK_EQ(db_u64(name, "SELECT MAX(log_pos) FROM messages"), 2500);
  /* the spot checks the brief names, on the destination itself */
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM messages WHERE LOCATE(_binary'\\0', body) > 0"),
           db_u64(name, "SELECT COUNT(*) FROM messages WHERE session_id = 'x:blobs' AND LENGTH(body) > 3"));
  CHECK_EQ(db_u64(name, "SELECT LENGTH(value) FROM kv WHERE plugin = 'moderation' AND `key` = 'words'"), 13);
  CHECK_EQ(db_u64(name, "SELECT delivered_seq FROM cursors WHERE user_id = 'carol'"), BIG + 3);
  CHECK_EQ(db_u64(name, "SELECT MAX(client_id) FROM messages"), BIG + st.next_carol_client);
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM messages WHERE meta IS NULL"),
           db_u64(name,
                  "SELECT COUNT(*) FROM messages WHERE NOT (session_id = 'd:alice:bob' AND (log_pos - 1) % 2 = 0)"
                  " AND NOT (session_id = 'x:blobs' AND (log_pos - 1) % 4 = 2)"));

  /* the password from the environment: the URL carries none */
  char no_password[512];
  snprintf(no_password, sizeof no_password, "mariadb://%s@127.0.0.1:%s/%s", env_user, env_port, name);
  hubuctl_env(&r, env_password, "store", "copy", "--from", src, "--to", no_password, NULL);
  CHECK_STATUS(&r, 0);
  CHECK_NO_PASSWORD(&r);
  CHECKF(strstr(r.out, "copied 0 messages") != NULL, "output: %s", r.out);

  /* a wrong password, and a URL that does not parse, are refused without showing it */
  char wrong[512];
  snprintf(wrong, sizeof wrong, "mariadb://%s:%sX@127.0.0.1:%s/%s", env_user, env_password, env_port, name);
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", wrong);
  CHECK_STATUS(&r, 1);
  CHECK_NO_PASSWORD(&r);
  snprintf(wrong, sizeof wrong, "mariadb://%s:%s/x@127.0.0.1:%s/%s", env_user, env_password, env_port, name);
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", wrong);
  CHECKF(r.status != 0, "exit %d", r.status);
  CHECK_NO_PASSWORD(&r);
  hubuctl_env(&r, NULL, "group", "members", "g:team", "--store", wrong, NULL);
  CHECKF(r.status != 0, "exit %d", r.status);
  CHECK_NO_PASSWORD(&r);
  snprintf(wrong, sizeof wrong, "mysql://%s:%s@127.0.0.1:%s/%s", env_user, env_password, env_port, name);
  hubuctl_env(&r, NULL, "group", "members", "g:team", "--store", wrong, NULL);
  CHECK_STATUS(&r, 2);
  CHECK_NO_PASSWORD(&r);
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", wrong);
  CHECK_STATUS(&r, 2);
  CHECK_NO_PASSWORD(&r);
  snprintf(wrong, sizeof wrong, "mariadb://%s:%s@127.0.0.1:1/%s", env_user, env_password, name);
  hubuctl_env(&r, NULL, "group", "members", "g:team", "--store", wrong, NULL);
  CHECKF(r.status != 0, "exit %d", r.status);
  CHECK_NO_PASSWORD(&r);
  CHECKF(strstr(r.out, ":***@127.0.0.1:1/") != NULL, "hubuctl group shows the redacted URL: %s", r.out);
}

/* Stopped after N messages (--max-rows), by SIGINT, and by SIGKILL: each
 * time the destination holds whole chunks and a log_counter at its
 * MAX(log_pos), and the next run goes on from there to an equal copy
 * without a duplicate. */
static void interrupted_copy_resumes_without_duplicates(void) {
  char dir[64], src[128], dst[512], name[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(src, sizeof src, dir, "hubu.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  source_state st;
  const uint64_t total = 40000;
  make_source(src, total, 2, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--chunk", "300", "--max-rows", "700");
  CHECK_STATUS(&r, 4);
  CHECKF(strstr(r.out, "run the same command again") != NULL, "output: %s", r.out);
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM messages"), 700);
  CHECK_EQ(db_u64(name, "SELECT MAX(log_pos) FROM messages"), 700);
  CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), 700);
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM sessions"), 0); /* the small tables come after the messages */

  /* SIGINT: the chunk in flight is finished, then it stops with 4 */
  char path[64];
  snprintf(path, sizeof path, "/tmp/hubu-copy-int-%ld", (long)getpid());
  const char *args[] = {"store", "copy", "--from", src, "--to", dst, "--chunk", "100", NULL};
  pid_t pid = spawn_hubuctl(path, NULL, args);
  uint64_t deadline = e2e_now_ms() + 30000;
  while (db_u64(name, "SELECT COUNT(*) FROM messages") < 1500 && e2e_now_ms() < deadline) e2e_sleep_ms(10);
  kill(pid, SIGINT);
  r.status = wait_hubuctl(pid, 60000);
  read_output(path, &r);
  uint64_t after_int = db_u64(name, "SELECT COUNT(*) FROM messages");
  if (r.status == 0) {
    fprintf(stderr, "store_copy: the copy finished before SIGINT arrived; the SIGINT check is moot\n");
  } else {
    CHECK_STATUS(&r, 4);
    CHECKF(strstr(r.out, "stopped by signal") != NULL, "output: %s", r.out);
    CHECK_EQ(after_int % 100, 0);
    CHECK_EQ(db_u64(name, "SELECT MAX(log_pos) FROM messages"), after_int);
    CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), after_int);
  }

  /* SIGKILL: nothing gets to clean up; the transaction in flight is rolled back by the server */
  pid = spawn_hubuctl(path, NULL, args);
  deadline = e2e_now_ms() + 30000;
  while (db_u64(name, "SELECT COUNT(*) FROM messages") < after_int + 3000 && e2e_now_ms() < deadline) e2e_sleep_ms(10);
  kill(pid, SIGKILL);
  CHECK_EQ(wait_hubuctl(pid, 30000), 128 + SIGKILL);
  unlink(path);
  e2e_sleep_ms(200); /* the server notices the connection is gone and rolls back */
  uint64_t after_kill = db_u64(name, "SELECT COUNT(*) FROM messages");
  CHECKF(after_kill < total, "the kill came after the copy ended (%" PRIu64 " rows)", after_kill);
  CHECK_EQ(after_kill % 100, after_int % 100);
  CHECK_EQ(db_u64(name, "SELECT MAX(log_pos) FROM messages"), after_kill);
  CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), after_kill);

  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst);
  CHECK_STATUS(&r, 0);
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM messages"), total);
  CHECK_EQ(db_u64(name, "SELECT COUNT(DISTINCT log_pos) FROM messages"), total);
  CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), total);
  check_same_stores(src, dst, "after resuming");
}

/* A second run on an up-to-date destination copies no message and still
 * verifies; after more writes to the source (messages, a member removed, a
 * kv key deleted, cursors raised, a new group) the next run catches up and
 * the copy equals the source again. */
static void second_run_copies_nothing_then_catches_up(void) {
  char dir[64], src[128], dst[512], name[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(src, sizeof src, dir, "hubu.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  source_state st;
  make_source(src, 1200, 3, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--quiet");
  CHECK_STATUS(&r, 0);
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst);
  CHECK_STATUS(&r, 0);
  CHECKF(strstr(r.out, "copied 0 messages") != NULL, "output: %s", r.out);
  CHECKF(strstr(r.out, "done: the destination matches the source") != NULL, "output: %s", r.out);
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--verify-only");
  CHECK_STATUS(&r, 0);
  check_same_stores(src, dst, "after a second run");

  store s;
  store_open(&s, src);
  append_messages(&s, &st, 1200, 1750, 3);
  member_op(&s, HUBU_STORE_MEMBER_REMOVE, "g:team", "bob", "");
  member_op(&s, HUBU_STORE_MEMBER_ADD, "g:team", "zed", "member");
  group_create(&s, "g:later", 2, "alice", "zed");
  cursor_save(&s, "alice", "d1", "d:alice:bob", 40);
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_KV_DELETE);
  snprintf(op->kv.plugin, sizeof op->kv.plugin, "ratelimit");
  op->kv.key = strdup("limit:07");
  run_op(&s, op, HUBU_STORE_OK);
  op = hubu_store_op_new(HUBU_STORE_KV_DELETE); /* the last kv row in key order: after every key the source has */
  snprintf(op->kv.plugin, sizeof op->kv.plugin, "ratelimit");
  op->kv.key = strdup("limit:29");
  run_op(&s, op, HUBU_STORE_OK);
  kv_set(&s, "moderation", "words", "changed", 7);
  store_close(&s);

  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--verify-only");
  CHECK_STATUS(&r, 3); /* behind the source: told, not changed */
  CHECKF(strstr(r.out, "messages differ") != NULL, "output: %s", r.out);
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst);
  CHECK_STATUS(&r, 0);
  CHECKF(strstr(r.out, "copied 550 messages") != NULL, "output: %s", r.out);
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM members WHERE session_id = 'g:team' AND user_id = 'bob'"), 0);
  CHECK_EQ(db_u64(name, "SELECT COUNT(*) FROM kv WHERE `key` IN ('limit:07', 'limit:29')"), 0);
  CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), 1750);
  check_same_stores(src, dst, "after catching up");
}

/* Another store's data is refused, and left as it was: messages that
 * differ at the destination's last position, more messages than the
 * source, and (without messages) a session the source lacks. */
static void destination_with_other_data_is_refused(void) {
  char dir[64], a[128], b[128], small[128], dst[512], name[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(a, sizeof a, dir, "a.db");
  sqlite_url(b, sizeof b, dir, "b.db");
  sqlite_url(small, sizeof small, dir, "small.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  source_state st;
  make_source(a, 900, 4, &st);
  make_source(b, 900, 5, &st); /* same shape, other bodies */
  make_source(small, 100, 4, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", a, "--to", dst, "--quiet");
  CHECK_STATUS(&r, 0);
  HUBUCTL(&r, "store", "copy", "--from", b, "--to", dst);
  CHECK_STATUS(&r, 1);
  CHECKF(strstr(r.out, "refusing the destination") != NULL && strstr(r.out, "log position 900 differs") != NULL,
         "output: %s", r.out);
  HUBUCTL(&r, "store", "copy", "--from", small, "--to", dst);
  CHECK_STATUS(&r, 1);
  CHECKF(strstr(r.out, "refusing the destination") != NULL, "output: %s", r.out);
  check_same_stores(a, dst, "after the refusals");

  /* no messages, but a group made there (hubuctl group create --store) that the source lacks */
  char dst2[512], name2[64];
  fresh_db(dst2, sizeof dst2, name2, sizeof name2);
  hubuctl_env(&r, NULL, "group", "create", "g:elsewhere", "alice", "--store", dst2, NULL);
  CHECK_STATUS(&r, 0);
  HUBUCTL(&r, "store", "copy", "--from", a, "--to", dst2);
  CHECK_STATUS(&r, 1);
  CHECKF(strstr(r.out, "a session the source lacks (g:elsewhere)") != NULL, "output: %s", r.out);
  CHECK_EQ(db_u64(name2, "SELECT COUNT(*) FROM sessions"), 1);

  /* usage: --to missing, an unknown scheme, the same store twice */
  HUBUCTL(&r, "store", "copy", "--from", a);
  CHECK_STATUS(&r, 2);
  HUBUCTL(&r, "store", "copy", "--from", a, "--to", "postgres://x@y/z");
  CHECK_STATUS(&r, 2);
  HUBUCTL(&r, "store", "copy", "--from", a, "--to", a);
  CHECK_STATUS(&r, 2);
}

/* A destination changed after the copy (one byte of one body, the length
 * kept) fails the verification with 3, and says where. */
static void changed_destination_fails_the_verification(void) {
  char dir[64], src[128], dst[512], name[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(src, sizeof src, dir, "hubu.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  source_state st;
  make_source(src, 600, 6, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--quiet");
  CHECK_STATUS(&r, 0);
  db_u64(name, "UPDATE messages SET body = CONCAT(_binary'Z', SUBSTRING(body, 2)) WHERE log_pos = 300");
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst);
  CHECK_STATUS(&r, 3);
  CHECKF(strstr(r.out, "body: sum of CRC-32s") != NULL && strstr(r.out, "DIFFERENT") != NULL, "output: %s", r.out);
  CHECKF(strstr(r.out, "body: sum of byte lengths") == NULL, "the lengths are the same: %s", r.out);
  db_u64(name, "UPDATE log_counter SET last_pos = last_pos + 5 WHERE id = 1");
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--verify-only");
  CHECK_STATUS(&r, 3);
  CHECKF(strstr(r.out, "log_counter.last_pos is 605") != NULL, "output: %s", r.out);
}

/* hubud serves the copy: HELLO, PULL the direct chat (every message as the
 * source has it), SEND one more, which takes the log position after the
 * source's last. */
static void hubud_serves_the_copy(void) {
  char dir[64], src[128], dst[512], name[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(src, sizeof src, dir, "hubu.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  source_state st;
  make_source(src, 300, 7, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", src, "--to", dst, "--quiet");
  CHECK_STATUS(&r, 0);

  e2e_server srv;
  REQUIRE(e2e_server_start(&srv, "--store", dst, "--log-level", "warn", NULL) == 0);
  int fd = e2e_connect(srv.port);
  REQUIRE(fd >= 0);
  Hubu__V1__HelloOk *ok = NULL;
  REQUIRE(e2e_send_hello(fd, "alice", "d1", NULL) == 0 && EXPECT_HELLO_OK(fd, &ok));
  CHECK_EQ(ok->last_client_id, st.next_alice_client); /* DEVICE_LOAD on the copy */
  hubu__v1__hello_ok__free_unpacked(ok, NULL);

  Hubu__V1__PullRequest pull = HUBU__V1__PULL_REQUEST__INIT;
  pull.request_id = 7;
  pull.session_id = "d:alice:bob";
  pull.after_seq = 0;
  pull.limit = 1000;
  REQUIRE(e2e_send_msg(fd, HUBU_FRAME_PULL, &pull.base) == 0);
  e2e_frame f;
  Hubu__V1__PullResult *res = NULL;
  for (;;) { /* skip anything pushed meanwhile */
    REQUIRE(e2e_read_frame(fd, E2E_WAIT_MS, &f) == E2E_READ_OK);
    if (f.type == HUBU_FRAME_PULL_RESULT) {
      res = hubu__v1__pull_result__unpack(NULL, f.len, f.body);
      e2e_frame_free(&f);
      break;
    }
    e2e_frame_free(&f);
  }
  REQUIRE(res != NULL);
  CHECK_EQ(res->code, HUBU__V1__CODE__OK);
  CHECK_EQ(res->n_messages, st.next_chat_seq);
  CHECK_EQ(res->max_seq, st.next_chat_seq);
  for (size_t i = 0; i < res->n_messages; i++) {
    const Hubu__V1__Message *m = res->messages[i];
    uint64_t n = 3 * i; /* the i-th message of the chat is the source's message 3i */
    char body[96];
    snprintf(body, sizeof body, "hello %" PRIu64 " from alice, seed %d", n, 7);
    CHECK_EQ(m->seq, i + 1);
    CHECK_EQ(m->msg_id, MSG_ID_BASE + n);
    CHECK_EQ(m->client_id, i + 1);
    CHECKF(m->body.len == strlen(body) && !memcmp(m->body.data, body, m->body.len), "message %zu: body", i);
    CHECK_EQ(m->n_meta, n % 2 == 0 ? 1 : 0);
  }
  hubu__v1__pull_result__free_unpacked(res, NULL);

  Hubu__V1__Send send = HUBU__V1__SEND__INIT;
  send.client_id = st.next_alice_client + 1;
  send.session_id = "d:alice:bob";
  send.body.data = (uint8_t *)"after the move";
  send.body.len = strlen("after the move");
  REQUIRE(e2e_send_msg(fd, HUBU_FRAME_SEND, &send.base) == 0);
  Hubu__V1__SendAck *ack = NULL;
  for (;;) {
    REQUIRE(e2e_read_frame(fd, E2E_WAIT_MS, &f) == E2E_READ_OK);
    if (f.type == HUBU_FRAME_SEND_ACK) {
      ack = hubu__v1__send_ack__unpack(NULL, f.len, f.body);
      e2e_frame_free(&f);
      break;
    }
    e2e_frame_free(&f);
  }
  REQUIRE(ack != NULL);
  CHECK_EQ(ack->code, HUBU__V1__CODE__OK);
  CHECK_EQ(ack->seq, st.next_chat_seq + 1);
  hubu__v1__send_ack__free_unpacked(ack, NULL);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&srv);
  CHECK_EQ(db_u64(name, "SELECT log_pos FROM messages WHERE body = _binary'after the move'"), 301);
  CHECK_EQ(db_u64(name, "SELECT last_pos FROM log_counter WHERE id = 1"), 301);
}

/* The other direction falls out of the same code: SQLite to MariaDB to a
 * second SQLite file, equal to the first; and MariaDB to MariaDB. */
static void mariadb_copies_back_to_sqlite(void) {
  char dir[64], a[128], b[128], dst[512], name[64], dst2[512], name2[64];
  temp_dir(dir, sizeof dir);
  sqlite_url(a, sizeof a, dir, "a.db");
  sqlite_url(b, sizeof b, dir, "copy/b.db");
  fresh_db(dst, sizeof dst, name, sizeof name);
  fresh_db(dst2, sizeof dst2, name2, sizeof name2);
  source_state st;
  make_source(a, 1500, 8, &st);
  run_result r;
  HUBUCTL(&r, "store", "copy", "--from", a, "--to", dst, "--quiet");
  CHECK_STATUS(&r, 0);
  HUBUCTL(&r, "store", "copy", "--from", dst, "--to", b, "--chunk", "128");
  CHECK_STATUS(&r, 0);
  CHECK_NO_PASSWORD(&r);
  check_same_stores(a, b, "sqlite -> mariadb -> sqlite");
  HUBUCTL(&r, "store", "copy", "--from", dst, "--to", dst2, "--max-rows", "1000");
  CHECK_STATUS(&r, 4);
  HUBUCTL(&r, "store", "copy", "--from", dst, "--to", dst2);
  CHECK_STATUS(&r, 0);
  CHECK_NO_PASSWORD(&r);
  check_same_stores(a, dst2, "mariadb -> mariadb");
  CHECK_EQ(db_u64(name2, "SELECT last_pos FROM log_counter WHERE id = 1"), 1500);
  /* and a second run into the SQLite copy copies nothing */
  HUBUCTL(&r, "store", "copy", "--from", dst, "--to", b);
  CHECK_STATUS(&r, 0);
  CHECKF(strstr(r.out, "copied 0 messages") != NULL, "output: %s", r.out);
}

static const e2e_case cases[] = {
    E2E_CASE(copy_keeps_every_byte_and_never_prints_the_password),
    E2E_CASE(interrupted_copy_resumes_without_duplicates),
    E2E_CASE(second_run_copies_nothing_then_catches_up),
    E2E_CASE(destination_with_other_data_is_refused),
    E2E_CASE(changed_destination_fails_the_verification),
    E2E_CASE(hubud_serves_the_copy),
    E2E_CASE(mariadb_copies_back_to_sqlite),
};

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "--make-source")) { /* for timing: a store of N messages */
    source_state st;
    make_source(argv[2], strtoull(argv[3], NULL, 10), 1, &st);
    return e2e_failures ? 1 : 0;
  }
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

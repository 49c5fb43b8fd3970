/* test_sqlite_vfs.c — the SQLite backend's VFS (runtime/store/sqlite_vfs.c) on
 * real files: a commit's WAL frames become one write per 124 KiB; every
 * commit is readable at once by another connection on the default VFS, on
 * both names (so frames reach the file before SQLite publishes them, also
 * when syncs are flushes only); a transaction bigger than the page cache,
 * which spills and rewrites frames, commits or rolls back intact; and a
 * commit whose frames cannot be written (file size limit) fails, leaving the
 * database as it was before it. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sqlite_vfs.h"

static char dir[64];
static int db_counter;

static void db_path(char *out, size_t size) { snprintf(out, size, "%s/t%d.db", dir, ++db_counter); }

static sqlite3 *open_db(const char *path, const char *vfs) {
  sqlite3 *db = NULL;
  if (!CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK)) {
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

static int exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fprintf(stderr, "    %s: %s\n", sql, err ? err : sqlite3_errstr(rc));
  sqlite3_free(err);
  return rc;
}

static long long number(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  long long v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else
    fprintf(stderr, "    %s: %s\n", sql, sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return v;
}

static int integrity_ok(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int ok = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
           sqlite3_step(st) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
  sqlite3_finalize(st);
  return ok;
}

/* A writer on the VFS, as the store opens it: WAL, synchronous=FULL. */
static sqlite3 *open_writer(const char *path, const char *vfs) {
  sqlite3 *db = open_db(path, vfs);
  if (!db) return NULL;
  if (!CHECK(exec(db,
                  "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                  " CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)") == SQLITE_OK)) {
    sqlite3_close(db);
    return NULL;
  }
  return db;
}

static int insert_rows(sqlite3 *db, int from, int n, int bytes) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "INSERT INTO t(id, k, v) VALUES (?1, ?2, randomblob(?3))", -1, &st, NULL) != SQLITE_OK)
    return -1;
  int rc = SQLITE_DONE;
  for (int i = from; i < from + n && rc == SQLITE_DONE; i++) {
    char k[32];
    snprintf(k, sizeof k, "key-%09d", i);
    sqlite3_bind_int(st, 1, i);
    sqlite3_bind_text(st, 2, k, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, bytes);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : -1;
}

static void test_a_commit_is_one_write_per_124_kib(void) {
  char path[128];
  db_path(path, sizeof path);
  sqlite3 *db = open_writer(path, HUBU_SQLITE_VFS);
  if (!db) return;
  hubu_sqlite_vfs_stats a, b;
  hubu_sqlite_vfs_get_stats(&a);
  CHECK(exec(db, "BEGIN IMMEDIATE") == SQLITE_OK);
  CHECK(insert_rows(db, 1, 300, 1000) == 0); /* ~80 pages of table and index */
  CHECK(exec(db, "COMMIT") == SQLITE_OK);
  hubu_sqlite_vfs_get_stats(&b);
  uint64_t writes = b.writes - a.writes, flushes = b.flushes - a.flushes;
  printf("one commit of 300 rows: %llu WAL writes from SQLite, %llu written out\n", (unsigned long long)writes,
         (unsigned long long)flushes);
  CHECK(writes >= 2 * 70);                       /* a header and a page per frame */
  CHECK(flushes >= 1 && flushes <= writes / 20); /* 31 pages per write-out */
  CHECK(b.syncs > a.syncs);
  /* A small commit: a handful of frames, one write. */
  hubu_sqlite_vfs_get_stats(&a);
  CHECK(insert_rows(db, 1000, 1, 100) == 0);
  hubu_sqlite_vfs_get_stats(&b);
  CHECK(b.writes - a.writes >= 2);
  CHECK_EQ_U64(b.flushes - a.flushes, 1);
  sqlite3_close(db);
  db = open_db(path, NULL);
  if (db) {
    CHECK_EQ_U64(number(db, "SELECT count(*) FROM t"), 301);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
  }
}

/* Every commit, seen at once by a reader on the default VFS while the writer stays open. */
static void every_commit_is_visible(const char *vfs) {
  char path[128];
  db_path(path, sizeof path);
  sqlite3 *w = open_writer(path, vfs);
  sqlite3 *r = w ? open_db(path, NULL) : NULL;
  if (!r) {
    sqlite3_close(w);
    return;
  }
  int rows = 0, seen_all = 1;
  for (int i = 0; i < 60; i++) {
    int n = 1 + (i % 7) * 9; /* from one frame to a dozen */
    if (!CHECK(exec(w, "BEGIN IMMEDIATE") == SQLITE_OK && insert_rows(w, rows + 1, n, 300 + 97 * i) == 0 &&
               exec(w, "COMMIT") == SQLITE_OK))
      break;
    rows += n;
    if (number(r, "SELECT count(*) FROM t") != rows || number(r, "SELECT max(id) FROM t") != rows) seen_all = 0;
  }
  CHECK(seen_all);
  CHECK(integrity_ok(r));
  sqlite3_close(w);
  CHECK_EQ_U64(number(r, "SELECT count(*) FROM t"), rows);
  sqlite3_close(r);
}

static void test_every_commit_is_visible_to_another_connection(void) { every_commit_is_visible(HUBU_SQLITE_VFS); }

static void test_every_commit_is_visible_without_syncs_too(void) { every_commit_is_visible(HUBU_SQLITE_VFS_NOSYNC); }

/* A transaction far bigger than the page cache spills frames into the WAL
 * before its commit and rewrites some of them; it commits intact, and one
 * like it rolls back leaving nothing. */
static void test_spilled_transactions_commit_and_roll_back_intact(void) {
  char path[128];
  db_path(path, sizeof path);
  sqlite3 *w = open_writer(path, HUBU_SQLITE_VFS);
  if (!w) return;
  CHECK(exec(w, "PRAGMA cache_size = 8") == SQLITE_OK);
  CHECK(exec(w, "BEGIN IMMEDIATE") == SQLITE_OK);
  CHECK(insert_rows(w, 1, 3000, 200) == 0);
  CHECK(exec(w, "UPDATE t SET v = zeroblob(150) WHERE id % 3 = 0") == SQLITE_OK);
  CHECK(exec(w, "COMMIT") == SQLITE_OK);
  CHECK(exec(w, "BEGIN IMMEDIATE") == SQLITE_OK);
  CHECK(insert_rows(w, 5001, 3000, 200) == 0);
  CHECK(exec(w, "DELETE FROM t WHERE id % 2 = 0") == SQLITE_OK);
  CHECK(exec(w, "ROLLBACK") == SQLITE_OK);
  CHECK(insert_rows(w, 9001, 10, 100) == 0);
  sqlite3 *r = open_db(path, NULL);
  if (r) {
    CHECK_EQ_U64(number(r, "SELECT count(*) FROM t"), 3010);
    CHECK_EQ_U64(number(r, "SELECT count(*) FROM t WHERE length(v) = 150"), 1000);
    CHECK_EQ_U64(number(r, "SELECT count(*) FROM t WHERE id > 5000 AND id <= 8000"), 0);
    CHECK(integrity_ok(r));
    sqlite3_close(r);
  }
  sqlite3_close(w);
}

/* In a child limited to a file size the commit's frames cannot fit in: the
 * commit fails, and the database keeps exactly what was committed before. */
static void test_a_commit_whose_frames_cannot_be_written_fails(void) {
  char path[128];
  db_path(path, sizeof path);
  sqlite3 *w = open_writer(path, HUBU_SQLITE_VFS);
  if (!w) return;
  CHECK(insert_rows(w, 1, 50, 100) == 0);
  sqlite3_close(w); /* checkpointed: the WAL is gone, the database holds the 50 rows */
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
    sqlite3 *c = open_writer(path, HUBU_SQLITE_VFS);
    if (!c || exec(c, "PRAGMA wal_autocheckpoint = 0") != SQLITE_OK) _exit(2);
    struct rlimit lim = {256 * 1024, 256 * 1024};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(3);
    int code = 0;
    if (exec(c, "BEGIN IMMEDIATE") != SQLITE_OK || insert_rows(c, 100, 1000, 1000) != 0) code = 4;
    int rc = code ? SQLITE_ERROR : sqlite3_exec(c, "COMMIT", NULL, NULL, NULL);
    if (!code && rc == SQLITE_OK) code = 5; /* 1 MB of frames cannot have fitted */
    sqlite3_exec(c, "ROLLBACK", NULL, NULL, NULL);
    /* The connection goes on after the failure: a small commit fits. */
    if (!code && insert_rows(c, 2000, 1, 10) != 0) code = 6;
    _exit(code); /* without closing: the WAL stays as it is */
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK_EQ_U64(WEXITSTATUS(status), 0);
  sqlite3 *r = open_db(path, NULL);
  if (r) {
    CHECK_EQ_U64(number(r, "SELECT count(*) FROM t"), 51);
    CHECK_EQ_U64(number(r, "SELECT count(*) FROM t WHERE id >= 100 AND id < 1100"), 0);
    CHECK(integrity_ok(r));
    sqlite3_close(r);
  }
}

int main(int argc, char **argv) {
  (void)argc;
  snprintf(dir, sizeof dir, "/tmp/hubu-vfs-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  if (!CHECK(hubu_sqlite_vfs_register() == SQLITE_OK)) return check_summary(argv[0]);
  CHECK(hubu_sqlite_vfs_register() == SQLITE_OK); /* idempotent */
  CHECK(sqlite3_vfs_find(HUBU_SQLITE_VFS) != NULL && sqlite3_vfs_find(HUBU_SQLITE_VFS_NOSYNC) != NULL);
  CHECK(sqlite3_vfs_find(NULL) != sqlite3_vfs_find(HUBU_SQLITE_VFS)); /* not the default */
  test_a_commit_is_one_write_per_124_kib();
  test_every_commit_is_visible_to_another_connection();
  test_every_commit_is_visible_without_syncs_too();
  test_spilled_transactions_commit_and_roll_back_intact();
  test_a_commit_whose_frames_cannot_be_written_fails();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return check_summary(argv[0]);
}

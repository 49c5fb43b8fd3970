/* store_sqlite.c — the embedded SQLite backend: one connection in WAL mode,
 * every statement prepared once at open, the schema migrated by numbered steps
 * recorded in schema_version, and APPENDs written as one BEGIN IMMEDIATE ..
 * COMMIT per batch (group commit). Invariant: every statement is reset right
 * after use, so COMMIT never meets a statement still running, and every
 * failure leaves the connection outside any transaction. */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "log.h"
#include "sqlite_vfs.h"
#include "store.h"
#include "store_backend.h"

/* Tuning, measured with tools/bench_store.c (200k appends, fsync batch, 2 cores, ext4):
 * - page_size 4096: 2048, 8192 and 16384 were no faster; larger pages write
 *   more WAL bytes for every scattered index update.
 * - wal_autocheckpoint 16384 pages: the default 1000 wrote 1.55x the bytes
 *   (435 vs 281 MB) and ran ~35% slower; 65536 saves a little more but makes
 *   the WAL, and the recovery after a crash, four times larger.
 * - journal_size_limit: after a checkpoint the WAL is cut back to 64 MiB and
 *   reused from its start, so commit fsyncs overwrite rather than grow a file.
 * - A checkpointer thread with its own connection was tried: no gain over 1M
 *   appends on 2 cores, so checkpoints stay automatic, on the store thread. */
#define PAGE_SIZE_BYTES 4096
#define CACHE_KIB 65536                /* page cache: 64 MiB */
#define WAL_AUTOCHECKPOINT_PAGES 16384 /* checkpoint when the WAL passes 64 MiB */
#define JOURNAL_SIZE_LIMIT_BYTES (64 * 1024 * 1024)
#define BUSY_TIMEOUT_MS 5000 /* default wait for another process's (hubuctl's) write lock */

/* ---- schema ---- */

/* Migrations, applied in order; migrations[i] brings the schema to version i + 1.
 * Never edit a released step: append a new one.
 * messages is a rowid table on purpose: rows are appended at the end of the
 * table b-tree, and only the two small indexes take scattered inserts. As a
 * WITHOUT ROWID table clustered on (session_id, seq) it wrote 1.5x the WAL
 * bytes per message (half-full pages from splits at every session's tail, and
 * the unique index carrying the whole primary key instead of a rowid). */
static const char *const migrations[] = {
    /* 1: the initial schema (store.h lists it) */
    "CREATE TABLE messages("
    "  session_id TEXT NOT NULL, seq INTEGER NOT NULL, msg_id INTEGER NOT NULL,"
    "  sender TEXT NOT NULL, sender_device TEXT NOT NULL, client_id INTEGER NOT NULL,"
    "  content_type TEXT NOT NULL DEFAULT '', body BLOB NOT NULL, meta BLOB,"
    "  server_time_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (session_id, seq),"
    "  UNIQUE (sender, sender_device, client_id));"
    "CREATE TABLE sessions("
    "  session_id TEXT NOT NULL PRIMARY KEY, kind TEXT NOT NULL,"
    "  max_seq INTEGER NOT NULL DEFAULT 0, min_seq INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL, meta BLOB) WITHOUT ROWID;"
    "CREATE TABLE members("
    "  session_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL DEFAULT 'member',"
    "  joined_ms INTEGER NOT NULL, PRIMARY KEY (session_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX members_by_user ON members(user_id, session_id);"
    "CREATE TABLE devices("
    "  user_id TEXT NOT NULL, device_id TEXT NOT NULL, last_client_id INTEGER NOT NULL DEFAULT 0,"
    "  last_seen_ms INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;"
    "CREATE TABLE cursors("
    "  user_id TEXT NOT NULL, device_id TEXT NOT NULL, session_id TEXT NOT NULL,"
    "  delivered_seq INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (user_id, device_id, session_id)) WITHOUT ROWID;"
    "CREATE TABLE kv("
    "  plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB,"
    "  PRIMARY KEY (plugin, key)) WITHOUT ROWID;",
    /* 2: the log position is a column of its own (an alias of the rowid, so the
     * table keeps its shape), and no longer the implicit rowid VACUUM may renumber. */
    "CREATE TABLE messages_v2("
    "  log_pos INTEGER PRIMARY KEY,"
    "  session_id TEXT NOT NULL, seq INTEGER NOT NULL, msg_id INTEGER NOT NULL,"
    "  sender TEXT NOT NULL, sender_device TEXT NOT NULL, client_id INTEGER NOT NULL,"
    "  content_type TEXT NOT NULL DEFAULT '', body BLOB NOT NULL, meta BLOB,"
    "  server_time_ms INTEGER NOT NULL,"
    "  UNIQUE (session_id, seq),"
    "  UNIQUE (sender, sender_device, client_id));"
    "INSERT INTO messages_v2(log_pos, session_id, seq, msg_id, sender, sender_device, client_id, content_type, body,"
    "  meta, server_time_ms)"
    "  SELECT rowid, session_id, seq, msg_id, sender, sender_device, client_id, content_type, body, meta,"
    "  server_time_ms FROM messages ORDER BY rowid;"
    "DROP TABLE messages;"
    "ALTER TABLE messages_v2 RENAME TO messages;",
    /* 3: cluster mode's seq leases: per session, the highest seq ever leased (SEQ_LEASE) */
    "CREATE TABLE seq_leases("
    "  session_id TEXT NOT NULL PRIMARY KEY, leased_until INTEGER NOT NULL) WITHOUT ROWID;",
    /* 4: cluster mode's fence per session (store.h): every seq at or below it that is not stored is abandoned.
     * A column of sessions, not a table: an append reads its session's row anyway (MariaDB's first round
     * trip), so the fence costs no read of its own, and a fence is only raised over stored rows, whose
     * session always has its row. */
    "ALTER TABLE sessions ADD COLUMN fence_seq INTEGER NOT NULL DEFAULT 0;",
    /* 5: cluster mode's device epoch (store.h): raised by DEVICE_LOAD with claim, checked by every APPEND that
     * carries one, so that one node serves a device at a time. */
    "ALTER TABLE devices ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- prepared statements ---- */

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_MESSAGE_INSERT,
  ST_MESSAGE_BY_SEND,
  ST_MESSAGE_MAX_CLIENT_ID,
  ST_MESSAGE_MAX_SEQ,
  ST_PULL,
  ST_SESSION_GET,
  ST_SESSION_INSERT,
  ST_SESSION_BUMP,
  ST_MEMBER_INSERT,
  ST_MEMBER_UPSERT,
  ST_MEMBER_DELETE,
  ST_MEMBER_LIST,
  ST_DEVICE_UPSERT,
  ST_SYNC,
  ST_CURSOR_UPSERT,
  ST_KV_GET,
  ST_LOG_READ,
  ST_LOG_MAX,
  ST_KV_SET,
  ST_KV_DELETE,
  ST_LEASE_GET,
  ST_LEASE_SET,
  ST_FENCE_GET,
  ST_FENCE_RAISE,
  ST_PULL_STATE,
  ST_DEVICE_EPOCH,
  ST_DEVICE_CLAIM,
  ST_COUNT
};

static const char *const statement_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_KV_GET] = "SELECT value FROM kv WHERE plugin = ?1 AND key = ?2",
    [ST_LOG_READ] =
        "SELECT log_pos, session_id, seq, msg_id, sender, sender_device, client_id, content_type, body, meta,"
        " server_time_ms FROM messages WHERE log_pos > ?1 ORDER BY log_pos LIMIT ?2",
    [ST_LOG_MAX] = "SELECT MAX(log_pos) FROM messages",
    [ST_KV_SET] =
        "INSERT INTO kv(plugin, key, value) VALUES(?1, ?2, ?3)"
        " ON CONFLICT(plugin, key) DO UPDATE SET value = excluded.value",
    [ST_KV_DELETE] = "DELETE FROM kv WHERE plugin = ?1 AND key = ?2",
    [ST_LEASE_GET] = "SELECT leased_until FROM seq_leases WHERE session_id = ?1",
    [ST_LEASE_SET] =
        "INSERT INTO seq_leases(session_id, leased_until) VALUES(?1, ?2)"
        " ON CONFLICT(session_id) DO UPDATE SET leased_until = max(leased_until, excluded.leased_until)",
    [ST_FENCE_GET] = "SELECT fence_seq FROM sessions WHERE session_id = ?1",
    [ST_FENCE_RAISE] = "UPDATE sessions SET fence_seq = max(fence_seq, ?2) WHERE session_id = ?1",
    /* read before the page: a fence read first proves what the page read after it lacks */
    [ST_PULL_STATE] =
        "SELECT (SELECT fence_seq FROM sessions WHERE session_id = ?1),"
        " (SELECT MAX(seq) FROM messages WHERE session_id = ?1)",
    [ST_DEVICE_EPOCH] = "SELECT epoch FROM devices WHERE user_id = ?1 AND device_id = ?2",
    [ST_DEVICE_CLAIM] =
        "INSERT INTO devices(user_id, device_id, last_client_id, last_seen_ms, epoch) VALUES(?1, ?2, 0, 0, 1)"
        " ON CONFLICT(user_id, device_id) DO UPDATE SET epoch = epoch + 1",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_MESSAGE_INSERT] =
        "INSERT INTO messages(session_id, seq, msg_id, sender, sender_device, client_id, content_type, body,"
        " meta, server_time_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
    [ST_MESSAGE_BY_SEND] =
        "SELECT session_id, seq, msg_id FROM messages WHERE sender = ?1 AND sender_device = ?2 AND client_id = ?3",
    [ST_MESSAGE_MAX_CLIENT_ID] = "SELECT MAX(client_id) FROM messages WHERE sender = ?1 AND sender_device = ?2",
    [ST_MESSAGE_MAX_SEQ] = "SELECT MAX(seq) FROM messages WHERE session_id = ?1",
    [ST_PULL] =
        "SELECT seq, msg_id, sender, sender_device, client_id, content_type, body, meta, server_time_ms"
        " FROM messages WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_SESSION_GET] = "SELECT kind, max_seq, min_seq FROM sessions WHERE session_id = ?1",
    [ST_SESSION_INSERT] =
        "INSERT INTO sessions(session_id, kind, max_seq, min_seq, created_ms) VALUES(?1, ?2, ?3, 0, ?4)"
        " ON CONFLICT DO NOTHING",
    [ST_SESSION_BUMP] = "UPDATE sessions SET max_seq = max(max_seq, ?2) WHERE session_id = ?1",
    [ST_MEMBER_INSERT] =
        "INSERT INTO members(session_id, user_id, role, joined_ms) VALUES(?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    [ST_MEMBER_UPSERT] =
        "INSERT INTO members(session_id, user_id, role, joined_ms) VALUES(?1, ?2, ?3, ?4)"
        " ON CONFLICT(session_id, user_id) DO UPDATE SET role = excluded.role",
    [ST_MEMBER_DELETE] = "DELETE FROM members WHERE session_id = ?1 AND user_id = ?2",
    [ST_MEMBER_LIST] = "SELECT user_id FROM members WHERE session_id = ?1 ORDER BY user_id",
    [ST_DEVICE_UPSERT] =
        "INSERT INTO devices(user_id, device_id, last_client_id, last_seen_ms) VALUES(?1, ?2, ?3, ?4)"
        " ON CONFLICT(user_id, device_id) DO UPDATE SET"
        " last_client_id = max(last_client_id, excluded.last_client_id),"
        " last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    /* sessions.max_seq is raised in the same transaction as every append */
    [ST_SYNC] =
        "SELECT s.session_id, s.max_seq, s.min_seq, s.kind FROM members m JOIN sessions s"
        " ON s.session_id = m.session_id WHERE m.user_id = ?1 ORDER BY s.session_id",
    [ST_CURSOR_UPSERT] =
        "INSERT INTO cursors(user_id, device_id, session_id, delivered_seq) VALUES(?1, ?2, ?3, ?4)"
        " ON CONFLICT(user_id, device_id, session_id) DO UPDATE SET"
        " delivered_seq = max(delivered_seq, excluded.delivered_seq)",
};

typedef struct {
  sqlite3 *db;
  hubu_fsync_mode fsync;
  sqlite3_stmt *st[ST_COUNT];
  hubu_store_batch_entry *entries; /* scratch for sorting a batch by session and by device */
  size_t entries_cap;
} sqlite_store;

static uint64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static void copy_str(char *dst, size_t size, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= size) n = size - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

static uint64_t column_u64(sqlite3_stmt *stmt, int col) { return (uint64_t)sqlite3_column_int64(stmt, col); }

static void bind_text(sqlite3_stmt *stmt, int i, const char *s) { sqlite3_bind_text(stmt, i, s, -1, SQLITE_STATIC); }
static void bind_u64(sqlite3_stmt *stmt, int i, uint64_t v) { sqlite3_bind_int64(stmt, i, (sqlite3_int64)v); }

/* Steps a statement that returns no row, and resets it. SQLITE_DONE or the error code. */
static int run(sqlite_store *st, int which) {
  int rc = sqlite3_step(st->st[which]);
  sqlite3_reset(st->st[which]);
  return rc;
}

/* SQLite's answer to rc may pass by itself: another connection held a lock
 * past the busy timeout. */
static int transient(int rc) {
  rc &= 0xff;
  return rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
}

/* op failed on SQLite's latest error (logged by hubu_store_op_fail): RETRY when it may pass. */
static void fail_op(sqlite_store *st, hubu_store_op *op, const char *step) {
  int rc = sqlite3_extended_errcode(st->db);
  hubu_store_op_fail(op, transient(rc) ? HUBU_STORE_RETRY : HUBU_STORE_ERROR, step, sqlite3_errmsg(st->db));
}

static void fail_op_plain(hubu_store_op *op, const char *step, const char *what) {
  hubu_store_op_fail(op, HUBU_STORE_ERROR, step, what);
}

/* Ends a failed transaction; harmless outside one. */
static void rollback(sqlite_store *st) {
  if (!sqlite3_get_autocommit(st->db)) run(st, ST_ROLLBACK);
}

static int insert_member(sqlite_store *st, int which, const char *session_id, const char *user, const char *role,
                         uint64_t joined_ms) {
  sqlite3_stmt *stmt = st->st[which];
  bind_text(stmt, 1, session_id);
  bind_text(stmt, 2, user);
  bind_text(stmt, 3, role && *role ? role : "member");
  bind_u64(stmt, 4, joined_ms);
  return run(st, which);
}

/* The members a session starts with, as the op that makes it names them. */
static int insert_members(sqlite_store *st, const char *session_id, char *const *members, size_t n_members,
                          const char *role, uint64_t when_ms) {
  for (size_t i = 0; i < n_members; i++) {
    int rc =
        insert_member(st, role && *role ? ST_MEMBER_UPSERT : ST_MEMBER_INSERT, session_id, members[i], role, when_ms);
    if (rc != SQLITE_DONE) return rc;
  }
  return SQLITE_DONE;
}

/* ---- open, migrate, close ---- */

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t err_size, const char *what) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
  snprintf(err, err_size, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
  sqlite3_free(msg);
  return -1;
}

static int read_int(sqlite3 *db, const char *sql, int64_t *out, char *err, size_t err_size, const char *what) {
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int64(stmt, 0);
      rc = SQLITE_OK;
    }
  }
  if (rc != SQLITE_OK) snprintf(err, err_size, "%s: %s", what, sqlite3_errmsg(db));
  sqlite3_finalize(stmt);
  return rc == SQLITE_OK ? 0 : -1;
}

/* Brings the schema to SCHEMA_VERSION, one transaction per step. */
static int migrate(sqlite3 *db, char *err, size_t err_size) {
  if (exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)", err, err_size,
               "create schema_version") != 0)
    return -1;
  int64_t version = 0;
  if (read_int(db, "SELECT coalesce(MAX(version), 0) FROM schema_version", &version, err, err_size,
               "read schema_version") != 0)
    return -1;
  if (version > SCHEMA_VERSION) {
    snprintf(err, err_size, "database schema version %lld is newer than this server's %d", (long long)version,
             SCHEMA_VERSION);
    return -1;
  }
  for (int v = (int)version; v < SCHEMA_VERSION; v++) {
    char what[64], record[96];
    snprintf(what, sizeof what, "migration %d", v + 1);
    snprintf(record, sizeof record, "INSERT INTO schema_version(version) VALUES(%d)", v + 1);
    if (exec_sql(db, "BEGIN IMMEDIATE", err, err_size, what) != 0) return -1;
    if (exec_sql(db, migrations[v], err, err_size, what) != 0 || exec_sql(db, record, err, err_size, what) != 0 ||
        exec_sql(db, "COMMIT", err, err_size, what) != 0) {
      sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
      return -1;
    }
    hubu_log(HUBU_LOG_INFO, 0, NULL, "store_migrated", "backend=sqlite version=%d", v + 1);
  }
  return 0;
}

static void sqlite_close(void *handle) {
  sqlite_store *st = handle;
  if (!st) return;
  for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(st->st[i]);
  if (st->db) {
    sqlite3_exec(st->db, "PRAGMA optimize", NULL, NULL, NULL);
    /* The last connection checkpoints and removes the WAL. */
    int rc = sqlite3_close(st->db);
    if (rc != SQLITE_OK) hubu_log(HUBU_LOG_ERROR, 0, NULL, "store_error", "op=close error=\"%s\"", sqlite3_errstr(rc));
  }
  free(st->entries);
  free(st);
}

#define SCHEME "sqlite:"

static void *sqlite_open(const hubu_store_config *cfg, char *err, size_t err_size) {
  const char *path = cfg->url && !strncmp(cfg->url, SCHEME, strlen(SCHEME)) ? cfg->url + strlen(SCHEME) : "";
  char file[PATH_MAX], dir[PATH_MAX];
  if (!*path || (size_t)snprintf(file, sizeof file, "%s", path) >= sizeof file) {
    snprintf(err, err_size, "store URL \"%s\": want sqlite:PATH, the database file", cfg->url ? cfg->url : "");
    return NULL;
  }
  snprintf(dir, sizeof dir, "%s", file); /* its directory is made, as DIR of --data is */
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      snprintf(err, err_size, "create directory %s: %s", dir, strerror(errno));
      return NULL;
    }
  }
  sqlite_store *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  st->fsync = cfg->fsync;
  /* NOMUTEX: the connection is used by one thread at a time (the store thread).
   * The VFS writes each commit's WAL frames with one system call (sqlite_vfs.h);
   * --fsync off keeps synchronous=FULL, so every commit reaches that write, on
   * the VFS whose syncs never wait for the disk. */
  int rc = hubu_sqlite_vfs_register();
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "register the SQLite VFS: %s", sqlite3_errstr(rc));
    goto fail;
  }
  rc = sqlite3_open_v2(file, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                       cfg->fsync == HUBU_FSYNC_OFF ? HUBU_SQLITE_VFS_NOSYNC : HUBU_SQLITE_VFS);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "open %s: %s", file, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_extended_result_codes(st->db, 1);
  sqlite3_busy_timeout(st->db, cfg->busy_timeout_ms ? (int)cfg->busy_timeout_ms : BUSY_TIMEOUT_MS);

  char pragmas[512];
  /* FULL in WAL: sync the WAL at each commit (a flush only on the nosync VFS) */
  snprintf(pragmas, sizeof pragmas,
           "PRAGMA page_size = %d; PRAGMA synchronous = FULL; PRAGMA cache_size = -%d; PRAGMA temp_store = MEMORY;"
           " PRAGMA wal_autocheckpoint = %d; PRAGMA journal_size_limit = %d; PRAGMA foreign_keys = OFF;",
           PAGE_SIZE_BYTES, CACHE_KIB, WAL_AUTOCHECKPOINT_PAGES, JOURNAL_SIZE_LIMIT_BYTES);
  if (exec_sql(st->db, pragmas, err, err_size, "pragmas") != 0) goto fail;
  sqlite3_stmt *stmt = NULL;
  if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL) != SQLITE_OK ||
      sqlite3_step(stmt) != SQLITE_ROW) {
    snprintf(err, err_size, "journal_mode: %s", sqlite3_errmsg(st->db));
    sqlite3_finalize(stmt);
    goto fail;
  }
  const char *mode = (const char *)sqlite3_column_text(stmt, 0);
  int wal = mode && strcmp(mode, "wal") == 0;
  sqlite3_finalize(stmt);
  if (!wal) {
    snprintf(err, err_size, "journal_mode: %s refused WAL mode", file);
    goto fail;
  }
  if (migrate(st->db, err, err_size) != 0) goto fail;
  for (int i = 0; i < ST_COUNT; i++) {
    if (sqlite3_prepare_v3(st->db, statement_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->st[i], NULL) != SQLITE_OK) {
      snprintf(err, err_size, "prepare statement %d: %s", i, sqlite3_errmsg(st->db));
      goto fail;
    }
  }
  return st;

fail:
  sqlite_close(st);
  return NULL;
}

/* ---- APPEND batches ---- */

/* The fence of a session (0 when it has no row yet) into *fence: SQLITE_DONE or the error. */
static int session_fence(sqlite_store *st, const char *session_id, uint64_t *fence) {
  sqlite3_stmt *stmt = st->st[ST_FENCE_GET];
  bind_text(stmt, 1, session_id);
  int rc = sqlite3_step(stmt);
  *fence = rc == SQLITE_ROW ? column_u64(stmt, 0) : 0;
  sqlite3_reset(stmt);
  return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

/* The epoch of a device (0 when it has no row) into *epoch: SQLITE_DONE or the error. */
static int device_epoch(sqlite_store *st, const char *user, const char *device, uint64_t *epoch) {
  sqlite3_stmt *stmt = st->st[ST_DEVICE_EPOCH];
  bind_text(stmt, 1, user);
  bind_text(stmt, 2, device);
  int rc = sqlite3_step(stmt);
  *epoch = rc == SQLITE_ROW ? column_u64(stmt, 0) : 0;
  sqlite3_reset(stmt);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_DONE : rc;
}

/* The INSERT of insert_message: *inserted, and op is OK, when the row went in. SQLITE_DONE or the error. */
static int insert_row(sqlite_store *st, hubu_store_op *op, int *inserted) {
  hubu_store_append_op *append = &op->append;
  const hubu_msg *m = append->msg;
  sqlite3_stmt *ins = st->st[ST_MESSAGE_INSERT];
  bind_text(ins, 1, m->session_id);
  bind_u64(ins, 2, m->seq);
  bind_u64(ins, 3, m->msg_id);
  bind_text(ins, 4, m->sender);
  bind_text(ins, 5, m->sender_device);
  bind_u64(ins, 6, m->client_id);
  bind_text(ins, 7, m->content_type);
  sqlite3_bind_blob(ins, 8, m->body_len ? (const void *)m->body : "", (int)m->body_len, SQLITE_STATIC);
  if (m->meta_len)
    sqlite3_bind_blob(ins, 9, m->meta, (int)m->meta_len, SQLITE_STATIC);
  else
    sqlite3_bind_null(ins, 9);
  bind_u64(ins, 10, m->server_time_ms);
  int rc = run(st, ST_MESSAGE_INSERT);
  if (rc != SQLITE_DONE) return rc;
  *inserted = sqlite3_changes(st->db) == 1;
  if (*inserted) {
    op->status = HUBU_STORE_OK;
    append->log_pos = (uint64_t)sqlite3_last_insert_rowid(st->db); /* log_pos is the rowid's alias */
    append->stored_seq = m->seq;
    append->stored_msg_id = m->msg_id;
    copy_str(append->stored_session_id, sizeof append->stored_session_id, m->session_id);
  }
  return SQLITE_DONE;
}

/* Inserts one message unless its device moved (moved: its device's epoch is
 * not the op's, which is epoch) or its seq is at or below fence (its
 * session's). SQLITE_DONE with op's status set (OK, DUPLICATE, DEVICE_MOVED,
 * or SEQ_TAKEN for a (session_id, seq) taken by another message or fenced),
 * or the SQLite error that fails the whole batch. */
static int insert_message(sqlite_store *st, hubu_store_op *op, uint64_t fence, int moved, uint64_t epoch) {
  hubu_store_append_op *append = &op->append;
  const hubu_msg *m = append->msg;
  int fenced = fence && m->seq <= fence;
  int inserted = 0;
  int rc = fenced || moved ? SQLITE_DONE : insert_row(st, op, &inserted);
  if (rc != SQLITE_DONE || inserted) return rc;
  /* Nothing inserted: a retry of a stored send (which wins), or a seq already taken or fenced. */
  sqlite3_stmt *find = st->st[ST_MESSAGE_BY_SEND];
  bind_text(find, 1, m->sender);
  bind_text(find, 2, m->sender_device);
  bind_u64(find, 3, m->client_id);
  rc = sqlite3_step(find);
  if (rc == SQLITE_ROW) {
    op->status = HUBU_STORE_DUPLICATE;
    copy_str(append->stored_session_id, sizeof append->stored_session_id, (const char *)sqlite3_column_text(find, 0));
    append->stored_seq = column_u64(find, 1);
    append->stored_msg_id = column_u64(find, 2);
    rc = SQLITE_DONE;
  } else if (rc == SQLITE_DONE && moved) {
    hubu_store_device_moved(op, epoch);
  } else if (rc == SQLITE_DONE) {
    hubu_store_seq_taken(op, fence, fenced);
  }
  sqlite3_reset(find);
  return rc;
}

/* sessions: one row per new session (with its implicit members), max_seq
 * raised once per session. entries[0..n) hold the stored ops. */
static int update_sessions(sqlite_store *st, hubu_store_batch_entry *entries, size_t n, const char **step) {
  qsort(entries, n, sizeof *entries, hubu_store_entry_by_session);
  for (size_t i = 0; i < n;) {
    const hubu_msg *first = entries[i].op->append.msg;
    uint64_t max_seq = first->seq;
    size_t j = i + 1;
    for (; j < n && strcmp(entries[j].op->append.msg->session_id, first->session_id) == 0; j++)
      if (entries[j].op->append.msg->seq > max_seq) max_seq = entries[j].op->append.msg->seq;
    sqlite3_stmt *bump = st->st[ST_SESSION_BUMP];
    bind_text(bump, 1, first->session_id);
    bind_u64(bump, 2, max_seq);
    *step = "session_bump";
    int rc = run(st, ST_SESSION_BUMP);
    if (rc != SQLITE_DONE) return rc;
    if (sqlite3_changes(st->db) == 0) { /* a new session: as the first append (in submission order) names it */
      const hubu_store_append_op *maker = &entries[i].op->append;
      const char *kind = maker->new_kind[0] ? maker->new_kind : hubu_session_kind_name(HUBU_SESSION_CUSTOM);
      sqlite3_stmt *ins = st->st[ST_SESSION_INSERT];
      bind_text(ins, 1, first->session_id);
      bind_text(ins, 2, kind);
      bind_u64(ins, 3, max_seq);
      bind_u64(ins, 4, first->server_time_ms);
      *step = "session_insert";
      if ((rc = run(st, ST_SESSION_INSERT)) != SQLITE_DONE) return rc;
      *step = "member_insert";
      if ((rc = insert_members(st, first->session_id, maker->new_members, maker->n_new_members, NULL,
                               first->server_time_ms)) != SQLITE_DONE)
        return rc;
    }
    i = j;
  }
  return SQLITE_DONE;
}

/* devices: last_client_id and last_seen_ms raised once per device. */
static int update_devices(sqlite_store *st, hubu_store_batch_entry *entries, size_t n, const char **step) {
  qsort(entries, n, sizeof *entries, hubu_store_entry_by_device);
  *step = "device_upsert";
  for (size_t i = 0; i < n;) {
    const hubu_msg *first = entries[i].op->append.msg;
    uint64_t client_id = first->client_id, seen = first->server_time_ms;
    size_t j = i + 1;
    for (; j < n && strcmp(entries[j].op->append.msg->sender, first->sender) == 0 &&
           strcmp(entries[j].op->append.msg->sender_device, first->sender_device) == 0;
         j++) {
      if (entries[j].op->append.msg->client_id > client_id) client_id = entries[j].op->append.msg->client_id;
      if (entries[j].op->append.msg->server_time_ms > seen) seen = entries[j].op->append.msg->server_time_ms;
    }
    sqlite3_stmt *up = st->st[ST_DEVICE_UPSERT];
    bind_text(up, 1, first->sender);
    bind_text(up, 2, first->sender_device);
    bind_u64(up, 3, client_id);
    bind_u64(up, 4, seen);
    int rc = run(st, ST_DEVICE_UPSERT);
    if (rc != SQLITE_DONE) return rc;
    i = j;
  }
  return SQLITE_DONE;
}

/* One transaction for ops[0..n). 0, or -1 when it was rolled back and every op is ERROR. */
static int append_transaction(sqlite_store *st, hubu_store_op **ops, size_t n) {
  const char *step = "begin";
  const char *failure = NULL;
  char why[128];
  hubu_store_status status = HUBU_STORE_ERROR;
  if (n > st->entries_cap) {
    hubu_store_batch_entry *grown = realloc(st->entries, n * sizeof *grown);
    if (!grown) {
      failure = "out of memory";
      goto fail;
    }
    st->entries = grown;
    st->entries_cap = n;
  }
  int rc = run(st, ST_BEGIN);
  if (rc != SQLITE_DONE) goto fail_sql;
  step = "insert";
  size_t stored = 0;
  const char *fence_of = NULL; /* the session whose fence is in fence (a batch's ops mostly share one) */
  uint64_t fence = 0;
  const hubu_msg *epoch_of = NULL; /* the sender device whose epoch is in epoch */
  uint64_t epoch = 0;
  for (size_t i = 0; i < n; i++) {
    hubu_store_op *op = ops[i];
    op->error[0] = '\0';
    if (!op->append.msg) {
      fail_op_plain(op, "insert", "APPEND without a message");
      continue;
    }
    if (!fence_of || strcmp(fence_of, op->append.msg->session_id) != 0) {
      step = "select fence";
      if ((rc = session_fence(st, op->append.msg->session_id, &fence)) != SQLITE_DONE) goto fail_sql;
      fence_of = op->append.msg->session_id;
      step = "insert";
    }
    const hubu_msg *m = op->append.msg;
    if (op->append.device_epoch && (!epoch_of || strcmp(epoch_of->sender, m->sender) != 0 ||
                                    strcmp(epoch_of->sender_device, m->sender_device) != 0)) {
      step = "select epoch";
      if ((rc = device_epoch(st, m->sender, m->sender_device, &epoch)) != SQLITE_DONE) goto fail_sql;
      epoch_of = m;
      step = "insert";
    }
    int moved = op->append.device_epoch && epoch != op->append.device_epoch;
    if ((rc = insert_message(st, op, fence, moved, epoch)) != SQLITE_DONE) goto fail_sql;
    if (op->status == HUBU_STORE_OK) st->entries[stored++] = (hubu_store_batch_entry){op, i};
  }
  if ((rc = update_sessions(st, st->entries, stored, &step)) != SQLITE_DONE) goto fail_sql;
  if ((rc = update_devices(st, st->entries, stored, &step)) != SQLITE_DONE) goto fail_sql;
  step = "commit";
  if ((rc = run(st, ST_COMMIT)) != SQLITE_DONE) goto fail_sql;
  return 0;

fail_sql:
  snprintf(why, sizeof why, "%s", sqlite3_errmsg(st->db));
  failure = why;
  status = transient(sqlite3_extended_errcode(st->db)) ? HUBU_STORE_RETRY : HUBU_STORE_ERROR;
  rollback(st);
fail:
  hubu_log(status == HUBU_STORE_RETRY ? HUBU_LOG_WARN : HUBU_LOG_ERROR, 0, NULL, "store_error",
           "op=append step=%s batch=%zu retry=%d error=\"%s\"", step, n, status == HUBU_STORE_RETRY, failure);
  for (size_t i = 0; i < n; i++) { /* rolled back: nothing of the batch was written */
    ops[i]->status = status;
    snprintf(ops[i]->error, sizeof ops[i]->error, "append %s: %s", step, failure);
  }
  return -1;
}

static int sqlite_append_batch(void *handle, hubu_store_op **ops, size_t n) {
  sqlite_store *st = handle;
  if (st->fsync != HUBU_FSYNC_ALWAYS) return append_transaction(st, ops, n);
  int result = 0; /* always: each message is its own durable transaction */
  for (size_t i = 0; i < n; i++)
    if (append_transaction(st, ops + i, 1) != 0) result = -1;
  return result;
}

/* ---- the other ops ---- */

/* Without claim, two reads; with claim, one write transaction (BEGIN
 * IMMEDIATE: appends wait for it, and it for them): the epoch raised, then
 * the highest client_id and the epoch read. */
static void device_load(sqlite_store *st, hubu_store_op *op) {
  hubu_store_device_load_op *load = &op->device_load;
  const char *step = "begin";
  if (load->claim) {
    if (run(st, ST_BEGIN) != SQLITE_DONE) goto fail;
    sqlite3_stmt *claim = st->st[ST_DEVICE_CLAIM];
    bind_text(claim, 1, load->user);
    bind_text(claim, 2, load->device);
    step = "raise epoch";
    if (run(st, ST_DEVICE_CLAIM) != SQLITE_DONE) goto fail;
  }
  sqlite3_stmt *stmt = st->st[ST_MESSAGE_MAX_CLIENT_ID];
  bind_text(stmt, 1, load->user);
  bind_text(stmt, 2, load->device);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) load->last_client_id = column_u64(stmt, 0); /* NULL (no message) reads as 0 */
  sqlite3_reset(stmt);
  step = "select max(client_id)";
  if (rc != SQLITE_ROW) goto fail;
  step = "select epoch";
  if (device_epoch(st, load->user, load->device, &load->epoch) != SQLITE_DONE) goto fail;
  step = "commit";
  if (load->claim && run(st, ST_COMMIT) != SQLITE_DONE) goto fail;
  op->status = HUBU_STORE_OK;
  return;
fail:
  fail_op(st, op, step);
  rollback(st);
}

static void find_send(sqlite_store *st, hubu_store_op *op) {
  sqlite3_stmt *stmt = st->st[ST_MESSAGE_BY_SEND];
  hubu_store_find_send_op *find = &op->find_send;
  bind_text(stmt, 1, find->user);
  bind_text(stmt, 2, find->device);
  bind_u64(stmt, 3, find->client_id);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    copy_str(find->session_id, sizeof find->session_id, (const char *)sqlite3_column_text(stmt, 0));
    find->seq = column_u64(stmt, 1);
    find->msg_id = column_u64(stmt, 2);
    op->status = HUBU_STORE_OK;
  } else if (rc == SQLITE_DONE) {
    op->status = HUBU_STORE_NOT_FOUND;
  } else {
    fail_op(st, op, "select message");
  }
  sqlite3_reset(stmt);
}

/* MAX(seq) of the session's messages into *out (0 when none); SQLITE_ROW or the error. */
static int stored_max_seq(sqlite_store *st, const char *session_id, uint64_t *out, int *any) {
  sqlite3_stmt *stmt = st->st[ST_MESSAGE_MAX_SEQ];
  bind_text(stmt, 1, session_id);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    *any = sqlite3_column_type(stmt, 0) != SQLITE_NULL;
    *out = column_u64(stmt, 0);
  }
  sqlite3_reset(stmt);
  return rc;
}

static void session_load(sqlite_store *st, hubu_store_op *op) {
  hubu_store_session_load_op *load = &op->session_load;
  sqlite3_stmt *get = st->st[ST_SESSION_GET];
  bind_text(get, 1, load->session_id);
  int rc = sqlite3_step(get);
  int found = rc == SQLITE_ROW;
  if (found) {
    copy_str(load->kind, sizeof load->kind, (const char *)sqlite3_column_text(get, 0));
    load->max_seq = column_u64(get, 1);
    load->min_seq = column_u64(get, 2);
  }
  sqlite3_reset(get);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    fail_op(st, op, "select session");
    return;
  }
  if (!found) {
    op->status = HUBU_STORE_NOT_FOUND;
    return;
  }

  hubu_store_members_free(load);
  sqlite3_stmt *list = st->st[ST_MEMBER_LIST];
  bind_text(list, 1, load->session_id);
  size_t cap = 0;
  while ((rc = sqlite3_step(list)) == SQLITE_ROW) {
    if (load->n_members == cap) {
      size_t grown_cap = cap ? cap * 2 : 8;
      char **grown = realloc(load->members, grown_cap * sizeof *grown);
      if (!grown) break;
      load->members = grown;
      cap = grown_cap;
    }
    char *user = strdup((const char *)sqlite3_column_text(list, 0));
    if (!user) break;
    load->members[load->n_members++] = user;
  }
  sqlite3_reset(list);
  if (rc == SQLITE_ROW) { /* stopped early: out of memory */
    hubu_store_members_free(load);
    fail_op_plain(op, "list members", "out of memory");
  } else if (rc != SQLITE_DONE) {
    hubu_store_members_free(load);
    fail_op(st, op, "list members");
  } else {
    op->status = HUBU_STORE_OK;
  }
}

static void session_create(sqlite_store *st, hubu_store_op *op) {
  const char *step = "begin";
  hubu_store_session_create_op *create = &op->session_create;
  uint64_t now = now_ms();
  if (!create->kind[0]) copy_str(create->kind, sizeof create->kind, hubu_session_kind_of(create->session_id));
  if (run(st, ST_BEGIN) != SQLITE_DONE) goto fail;
  sqlite3_stmt *ins = st->st[ST_SESSION_INSERT];
  bind_text(ins, 1, create->session_id);
  bind_text(ins, 2, create->kind);
  bind_u64(ins, 3, 0);
  bind_u64(ins, 4, now);
  step = "insert session";
  if (run(st, ST_SESSION_INSERT) != SQLITE_DONE) goto fail;
  if (sqlite3_changes(st->db) == 0) {
    rollback(st);
    op->status = HUBU_STORE_EXISTS;
    return;
  }
  step = "insert members";
  if (insert_members(st, create->session_id, create->members, create->n_members,
                     create->role[0] ? create->role : "member", now) != SQLITE_DONE)
    goto fail;
  step = "commit";
  if (run(st, ST_COMMIT) != SQLITE_DONE) goto fail;
  op->status = HUBU_STORE_OK;
  return;
fail:
  fail_op(st, op, step);
  rollback(st);
}

static void member_add(sqlite_store *st, hubu_store_op *op) {
  const hubu_store_member_op *member = &op->member;
  const char *step = "begin";
  if (run(st, ST_BEGIN) != SQLITE_DONE) goto fail;
  sqlite3_stmt *get = st->st[ST_SESSION_GET];
  bind_text(get, 1, member->session_id);
  int rc = sqlite3_step(get);
  sqlite3_reset(get);
  step = "select session";
  if (rc == SQLITE_DONE) {
    rollback(st);
    op->status = HUBU_STORE_NOT_FOUND;
    return;
  }
  if (rc != SQLITE_ROW) goto fail;
  /* An existing member keeps its role unless a role is given. */
  step = "insert member";
  if (insert_member(st, member->role[0] ? ST_MEMBER_UPSERT : ST_MEMBER_INSERT, member->session_id, member->user,
                    member->role, now_ms()) != SQLITE_DONE)
    goto fail;
  step = "commit";
  if (run(st, ST_COMMIT) != SQLITE_DONE) goto fail;
  op->status = HUBU_STORE_OK;
  return;
fail:
  fail_op(st, op, step);
  rollback(st);
}

static void member_remove(sqlite_store *st, hubu_store_op *op) {
  sqlite3_stmt *del = st->st[ST_MEMBER_DELETE];
  bind_text(del, 1, op->member.session_id);
  bind_text(del, 2, op->member.user);
  if (run(st, ST_MEMBER_DELETE) != SQLITE_DONE) {
    fail_op(st, op, "delete member");
    return;
  }
  op->status = sqlite3_changes(st->db) ? HUBU_STORE_OK : HUBU_STORE_NOT_FOUND;
}

/* Messages in the order they were stored, after a log position: what
 * message.stored hooks missed (a crash between the store and the hook). */
static void log_read(sqlite_store *st, hubu_store_op *op) {
  hubu_store_log_read_op *log_op = &op->log_read;
  uint32_t limit = log_op->limit ? log_op->limit : HUBU_STORE_PAGE_DEFAULT;
  if (limit > HUBU_STORE_PAGE_MAX) limit = HUBU_STORE_PAGE_MAX;
  log_op->msgs = calloc(limit, sizeof *log_op->msgs);
  log_op->n_msgs = 0;
  if (!log_op->msgs) {
    fail_op_plain(op, "log_read", "out of memory");
    return;
  }
  sqlite3_stmt *max = st->st[ST_LOG_MAX];
  if (sqlite3_step(max) != SQLITE_ROW) {
    sqlite3_reset(max);
    fail_op(st, op, "select max(log_pos)");
    return;
  }
  log_op->max_pos = column_u64(max, 0);
  sqlite3_reset(max);
  sqlite3_stmt *stmt = st->st[ST_LOG_READ];
  bind_u64(stmt, 1, log_op->after_pos);
  sqlite3_bind_int64(stmt, 2, (sqlite3_int64)limit + 1);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (log_op->n_msgs == limit) {
      log_op->has_more = 1;
      break;
    }
    hubu_msg *m = hubu_msg_new((const char *)sqlite3_column_text(stmt, 1), column_u64(stmt, 2), column_u64(stmt, 3),
                               (const char *)sqlite3_column_text(stmt, 4), (const char *)sqlite3_column_text(stmt, 5),
                               column_u64(stmt, 6), sqlite3_column_blob(stmt, 8), (size_t)sqlite3_column_bytes(stmt, 8),
                               (const char *)sqlite3_column_text(stmt, 7), sqlite3_column_blob(stmt, 9),
                               (size_t)sqlite3_column_bytes(stmt, 9), column_u64(stmt, 10));
    if (!m) break;
    m->log_pos = column_u64(stmt, 0);
    log_op->msgs[log_op->n_msgs++] = m;
  }
  sqlite3_reset(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    for (size_t i = 0; i < log_op->n_msgs; i++) hubu_msg_unref(log_op->msgs[i]);
    log_op->n_msgs = 0;
    fail_op(st, op, "select log");
    return;
  }
  op->status = HUBU_STORE_OK;
}

/* A plugin's durable key/value (im.kv). */
static void kv(sqlite_store *st, hubu_store_op *op) {
  int which = op->kind == HUBU_STORE_KV_GET ? ST_KV_GET : op->kind == HUBU_STORE_KV_SET ? ST_KV_SET : ST_KV_DELETE;
  hubu_store_kv_op *kv_op = &op->kv;
  sqlite3_stmt *stmt = st->st[which];
  bind_text(stmt, 1, kv_op->plugin);
  bind_text(stmt, 2, kv_op->key ? kv_op->key : "");
  if (which == ST_KV_SET)
    sqlite3_bind_blob(stmt, 3, kv_op->value ? (const void *)kv_op->value : "", (int)kv_op->value_len, SQLITE_STATIC);
  if (which != ST_KV_GET) {
    if (run(st, which) != SQLITE_DONE) {
      fail_op(st, op, hubu_store_op_name(op->kind));
      return;
    }
    op->status = which == ST_KV_DELETE && !sqlite3_changes(st->db) ? HUBU_STORE_NOT_FOUND : HUBU_STORE_OK;
    return;
  }
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    int len = sqlite3_column_bytes(stmt, 0);
    kv_op->value = malloc(len ? (size_t)len : 1);
    if (kv_op->value) {
      if (len) memcpy(kv_op->value, sqlite3_column_blob(stmt, 0), (size_t)len);
      kv_op->value_len = (size_t)len;
      op->status = HUBU_STORE_OK;
    } else {
      snprintf(op->error, sizeof op->error, "out of memory");
      op->status = HUBU_STORE_ERROR;
    }
  } else if (rc == SQLITE_DONE) {
    op->status = HUBU_STORE_NOT_FOUND;
  } else {
    fail_op(st, op, "kv_get");
  }
  sqlite3_reset(stmt);
}

/* The page seq > after_seq, at most limit, into pull_op->msgs (limit slots,
 * emptied first), has_more when a row follows. SQLITE_DONE, SQLITE_NOMEM, or
 * the error (then the page is empty). */
static int read_page(sqlite_store *st, hubu_store_pull_op *pull_op, uint32_t limit) {
  for (size_t i = 0; i < pull_op->n_msgs; i++) hubu_msg_unref(pull_op->msgs[i]);
  pull_op->n_msgs = 0;
  pull_op->has_more = 0;
  sqlite3_stmt *stmt = st->st[ST_PULL];
  bind_text(stmt, 1, pull_op->session_id);
  bind_u64(stmt, 2, pull_op->after_seq);
  sqlite3_bind_int64(stmt, 3, (sqlite3_int64)limit + 1); /* one more row tells has_more */
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (pull_op->n_msgs == limit) {
      pull_op->has_more = 1;
      rc = SQLITE_DONE;
      break;
    }
    const void *body = sqlite3_column_blob(stmt, 6);
    size_t body_len = (size_t)sqlite3_column_bytes(stmt, 6);
    const void *meta = sqlite3_column_blob(stmt, 7);
    size_t meta_len = (size_t)sqlite3_column_bytes(stmt, 7);
    hubu_msg *m = hubu_msg_new(pull_op->session_id, column_u64(stmt, 0), column_u64(stmt, 1),
                               (const char *)sqlite3_column_text(stmt, 2), (const char *)sqlite3_column_text(stmt, 3),
                               column_u64(stmt, 4), body, body_len, (const char *)sqlite3_column_text(stmt, 5), meta,
                               meta_len, column_u64(stmt, 8));
    if (!m) {
      rc = SQLITE_NOMEM;
      break;
    }
    pull_op->msgs[pull_op->n_msgs++] = m; /* refs = 1, handed to the loop thread with the op */
  }
  sqlite3_reset(stmt);
  if (rc != SQLITE_DONE) {
    hubu_store_pull_keep(pull_op, 0);
    pull_op->has_more = 0;
  }
  return rc;
}

/* A session's fence and highest stored seq (0 for none): SQLITE_DONE or the error. */
static int pull_state(sqlite_store *st, const char *session_id, uint64_t *fence, uint64_t *top) {
  sqlite3_stmt *stmt = st->st[ST_PULL_STATE];
  bind_text(stmt, 1, session_id);
  int rc = sqlite3_step(stmt);
  *fence = rc == SQLITE_ROW ? column_u64(stmt, 0) : 0; /* NULL reads as 0 */
  *top = rc == SQLITE_ROW ? column_u64(stmt, 1) : 0;
  sqlite3_reset(stmt);
  return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

/* Raises a session's fence to at least to, in one durable transaction (the
 * write lock orders it with every append). SQLITE_DONE or the error (the
 * caller rolls back). */
static int fence_raise(sqlite_store *st, const char *session_id, uint64_t to) {
  int rc = run(st, ST_BEGIN);
  if (rc != SQLITE_DONE) return rc;
  bind_text(st->st[ST_FENCE_RAISE], 1, session_id);
  bind_u64(st->st[ST_FENCE_RAISE], 2, to);
  if ((rc = run(st, ST_FENCE_RAISE)) != SQLITE_DONE) return rc;
  return run(st, ST_COMMIT);
}

/* PULL with settle_ms: the page up to the committed watermark (store.h). The
 * fence is read before the page: a seq at or below it that the page lacks
 * was never stored, and never will be. */
static void pull_settled(sqlite_store *st, hubu_store_op *op, uint32_t limit) {
  hubu_store_pull_op *pull_op = &op->pull;
  uint64_t fence = 0, top = 0;
  const char *step = "select fence";
  int rc = pull_state(st, pull_op->session_id, &fence, &top);
  if (rc == SQLITE_DONE) {
    step = "select messages";
    rc = read_page(st, pull_op, limit);
  }
  if (rc != SQLITE_DONE) goto fail;
  hubu_store_pull_walk walk;
  hubu_store_pull_walk_page(pull_op, fence, fence, now_ms(), 1, &walk);
  if (walk.raise_to > fence) {
    uint64_t before = fence;
    step = "raise fence";
    if ((rc = fence_raise(st, pull_op->session_id, walk.raise_to)) != SQLITE_DONE) goto fail;
    /* a row may have landed in a hole before the fence: read again, and prove by the fence alone */
    step = "select fence";
    if ((rc = pull_state(st, pull_op->session_id, &fence, &top)) != SQLITE_DONE) goto fail;
    step = "select messages";
    if ((rc = read_page(st, pull_op, limit)) != SQLITE_DONE) goto fail;
    hubu_store_pull_walk_page(pull_op, fence, before, now_ms(), 0, &walk);
  }
  hubu_store_pull_settled(op, &walk, top);
  return;
fail:
  if (rc == SQLITE_NOMEM)
    fail_op_plain(op, "pull", "out of memory");
  else
    fail_op(st, op, step);
  rollback(st);
  hubu_store_pull_keep(pull_op, 0);
  pull_op->has_more = 0;
}

/* Also fills max_seq, for PullResult.max_seq. */
static void pull(sqlite_store *st, hubu_store_op *op) {
  hubu_store_pull_op *pull_op = &op->pull;
  uint32_t limit;
  if (hubu_store_pull_begin(op, &limit) != 0) return;
  if (pull_op->settle_ms) {
    pull_settled(st, op, limit);
    return;
  }
  int rc = read_page(st, pull_op, limit);
  uint64_t stored = 0;
  int any = 0;
  if (rc == SQLITE_NOMEM) {
    fail_op_plain(op, "pull", "out of memory");
  } else if (rc != SQLITE_DONE) {
    fail_op(st, op, "select messages");
  } else if (stored_max_seq(st, pull_op->session_id, &stored, &any) != SQLITE_ROW) {
    fail_op(st, op, "select max(seq)");
  } else {
    pull_op->max_seq = stored;
    op->status = HUBU_STORE_OK;
    return;
  }
  hubu_store_pull_keep(pull_op, 0);
  pull_op->has_more = 0;
}

static void sync_sessions(sqlite_store *st, hubu_store_op *op) {
  hubu_store_sync_op *sync_op = &op->sync;
  free(sync_op->states);
  sync_op->states = NULL;
  sync_op->n_states = 0;
  sqlite3_stmt *stmt = st->st[ST_SYNC];
  bind_text(stmt, 1, sync_op->user);
  size_t cap = 0;
  int rc;
  int oom = 0;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (sync_op->n_states == cap) {
      size_t grown_cap = cap ? cap * 2 : 16;
      hubu_store_session_state *grown = realloc(sync_op->states, grown_cap * sizeof *grown);
      if (!grown) {
        oom = 1;
        break;
      }
      sync_op->states = grown;
      cap = grown_cap;
    }
    hubu_store_session_state *s = &sync_op->states[sync_op->n_states++];
    copy_str(s->session_id, sizeof s->session_id, (const char *)sqlite3_column_text(stmt, 0));
    s->max_seq = column_u64(stmt, 1);
    s->min_seq = column_u64(stmt, 2);
    copy_str(s->kind, sizeof s->kind, (const char *)sqlite3_column_text(stmt, 3));
  }
  sqlite3_reset(stmt);
  if (oom || (rc != SQLITE_DONE)) {
    if (oom)
      fail_op_plain(op, "sync", "out of memory");
    else
      fail_op(st, op, "select sessions");
    free(sync_op->states);
    sync_op->states = NULL;
    sync_op->n_states = 0;
    return;
  }
  op->status = HUBU_STORE_OK;
}

static void cursors_save(sqlite_store *st, hubu_store_op *op) {
  const char *step = "begin";
  if (run(st, ST_BEGIN) != SQLITE_DONE) goto fail;
  step = "upsert cursor";
  sqlite3_stmt *up = st->st[ST_CURSOR_UPSERT];
  for (size_t i = 0; i < op->cursors_save.n_cursors; i++) {
    const hubu_store_cursor *c = &op->cursors_save.cursors[i];
    bind_text(up, 1, c->user);
    bind_text(up, 2, c->device);
    bind_text(up, 3, c->session_id);
    bind_u64(up, 4, c->delivered_seq);
    if (run(st, ST_CURSOR_UPSERT) != SQLITE_DONE) goto fail;
  }
  step = "commit";
  if (run(st, ST_COMMIT) != SQLITE_DONE) goto fail;
  op->status = HUBU_STORE_OK;
  return;
fail:
  fail_op(st, op, step);
  rollback(st);
}

/* One u64 column of a one-row query on stmt (bound by the caller): *v, or
 * 0 when there is no row or it is NULL. SQLITE_ROW/DONE, or the error. */
static int select_u64(sqlite3_stmt *stmt, uint64_t *v) {
  int rc = sqlite3_step(stmt);
  *v = rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL ? column_u64(stmt, 0) : 0;
  sqlite3_reset(stmt);
  return rc;
}

/* A block of seqs above every one leased or stored for the session and its fence, in one
 * durable transaction (store.h). */
static void seq_lease(sqlite_store *st, hubu_store_op *op) {
  hubu_store_seq_lease_op *lease = &op->seq_lease;
  uint32_t count = lease->count ? lease->count : 1;
  uint64_t leased = 0, stored = 0, fence = 0, top = lease->floor;
  const char *step = "begin";
  if (run(st, ST_BEGIN) != SQLITE_DONE) goto fail;
  step = "select lease";
  bind_text(st->st[ST_LEASE_GET], 1, lease->session_id);
  int rc = select_u64(st->st[ST_LEASE_GET], &leased);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) goto fail;
  step = "select max seq";
  bind_text(st->st[ST_MESSAGE_MAX_SEQ], 1, lease->session_id);
  rc = select_u64(st->st[ST_MESSAGE_MAX_SEQ], &stored);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) goto fail;
  step = "select fence";
  bind_text(st->st[ST_FENCE_GET], 1, lease->session_id);
  rc = select_u64(st->st[ST_FENCE_GET], &fence);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) goto fail;
  if (leased > top) top = leased;
  if (stored > top) top = stored;
  if (fence > top) top = fence;
  if (top > UINT64_MAX - count) {
    rollback(st);
    fail_op_plain(op, "seq_lease", "no seqs left for the session");
    return;
  }
  step = "save lease";
  bind_text(st->st[ST_LEASE_SET], 1, lease->session_id);
  bind_u64(st->st[ST_LEASE_SET], 2, top + count);
  if (run(st, ST_LEASE_SET) != SQLITE_DONE) goto fail;
  step = "commit";
  if (run(st, ST_COMMIT) != SQLITE_DONE) goto fail;
  lease->lo = top + 1;
  lease->hi = top + count;
  op->status = HUBU_STORE_OK;
  return;
fail:
  fail_op(st, op, step);
  rollback(st);
}

static void sqlite_execute(void *handle, hubu_store_op *op) {
  sqlite_store *st = handle;
  op->error[0] = '\0';
  switch (op->kind) {
    case HUBU_STORE_APPEND: sqlite_append_batch(st, &op, 1); return;
    case HUBU_STORE_DEVICE_LOAD: device_load(st, op); return;
    case HUBU_STORE_FIND_SEND: find_send(st, op); return;
    case HUBU_STORE_SESSION_LOAD: session_load(st, op); return;
    case HUBU_STORE_SESSION_CREATE: session_create(st, op); return;
    case HUBU_STORE_MEMBER_ADD: member_add(st, op); return;
    case HUBU_STORE_MEMBER_REMOVE: member_remove(st, op); return;
    case HUBU_STORE_PULL: pull(st, op); return;
    case HUBU_STORE_SYNC: sync_sessions(st, op); return;
    case HUBU_STORE_CURSORS_SAVE: cursors_save(st, op); return;
    case HUBU_STORE_KV_GET:
    case HUBU_STORE_KV_SET:
    case HUBU_STORE_KV_DELETE: kv(st, op); return;
    case HUBU_STORE_LOG_READ: log_read(st, op); return;
    case HUBU_STORE_SEQ_LEASE: seq_lease(st, op); return;
  }
  fail_op_plain(op, "execute", "unknown op kind");
}

const hubu_store_backend hubu_store_sqlite = {
    .name = "sqlite",
    .scheme = SCHEME,
    .open = sqlite_open,
    .close = sqlite_close,
    .append_batch = sqlite_append_batch,
    .execute = sqlite_execute,
};

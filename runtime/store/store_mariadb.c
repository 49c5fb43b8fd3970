/* store_mariadb.c — the MariaDB backend (MariaDB Connector/C), for production
 * and for several nodes sharing one store. One blocking connection, used by
 * the store thread only: the event loop never waits on the database.
 *
 * Appends: one transaction per drained batch (group commit), in two round
 * trips: (1) START TRANSACTION, lock the log counter row, read which of the
 * batch's sessions exist; (2) one multi-row INSERT of the messages, the
 * sessions' max_seq, the new sessions' members, the devices, the counter,
 * COMMIT. Durable when COMMIT returns, with innodb_flush_log_at_trx_commit=1
 * (checked at open). A batch holding a resent SEND (the unique send key
 * refuses the multi-row INSERT) is written row by row in the same
 * transaction instead.
 *
 * Log positions: the counter row (log_counter) is locked FOR UPDATE by every
 * append transaction until it commits, and positions are handed out from it,
 * so they are dense and in commit order even with several writers
 * (AUTO_INCREMENT values are taken at INSERT, not at COMMIT, and would let a
 * reader see position n+1 before n).
 *
 * When the database goes away, the connection is dropped and every op
 * answers RETRY at once while reconnect attempts back off (100 ms doubling to
 * 5 s); the store thread retries on its own while idle, so health recovers
 * without traffic. A batch whose COMMIT outcome is unknown (the connection
 * broke during the round trip that held it) is resolved on a fresh connection
 * through the send key: a row with the op's msg_id was committed (OK), none
 * was not (RETRY). A deadlock or lock-wait timeout rolls back and retries the
 * transaction, up to three times.
 *
 * Invariant: after every function here returns, the connection is outside
 * any transaction (committed, rolled back, or closed). */
#include <errmsg.h>
#include <inttypes.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "mariadb_url.h"
#include "store.h"
#include "store_backend.h"

#define CONNECT_TIMEOUT_S 3
#define IO_TIMEOUT_S 30            /* a read or write that takes longer: the connection is taken as lost */
#define BACKOFF_FIRST_MS 100       /* first reconnect delay after a loss */
#define BACKOFF_MAX_MS 5000        /* longest */
#define LOCK_WAIT_TIMEOUT_S 10     /* InnoDB's lock wait for this connection (another node holding the log counter) */
#define TXN_ATTEMPTS 3             /* deadlock and lock-wait timeout retries of one transaction */
#define STATEMENT_TARGET (1 << 20) /* multi-row INSERTs are cut near this many bytes of SQL */
/* The server closes this connection when it sits this long inside a transaction without sending the next
 * statement (MariaDB >= 10.3): a node stopped between an append's two round trips (SIGSTOP, a VM paused) lets
 * the log counter's lock go within that time, and the other nodes' appends go on; its own COMMIT then fails and
 * is resolved as in doubt. Both idle_write_transaction_timeout and idle_transaction_timeout are set: the
 * append's first round trip only locks (SELECT ... FOR UPDATE), which does not make the transaction a write
 * transaction to the server, so the write timeout alone would not cover it (the fault case
 * append_stalled_between_round_trips_... fails with it alone). The store never waits on anything but the server
 * inside a transaction, so a live node never comes near it. */
#define IDLE_TXN_TIMEOUT_S 5

/* ---- schema ---- */

/* Migrations, applied in order; migrations[i] brings the schema to version i + 1.
 * Never edit a released step: append a new one. DDL commits implicitly in
 * MariaDB, so each step's statements are written to be re-runnable. Ids are
 * VARBINARY: compared and ordered by bytes, as on SQLite. */
static const char *const migrations[] = {
    /* 1: the initial schema (store.h lists it) */
    "CREATE TABLE IF NOT EXISTS messages("
    "  log_pos BIGINT UNSIGNED NOT NULL,"
    "  session_id VARBINARY(128) NOT NULL, seq BIGINT UNSIGNED NOT NULL, msg_id BIGINT UNSIGNED NOT NULL,"
    "  sender VARBINARY(64) NOT NULL, sender_device VARBINARY(64) NOT NULL, client_id BIGINT UNSIGNED NOT NULL,"
    "  content_type VARBINARY(1024) NOT NULL DEFAULT '', body LONGBLOB NOT NULL, meta MEDIUMBLOB NULL,"
    "  server_time_ms BIGINT UNSIGNED NOT NULL,"
    "  PRIMARY KEY (session_id, seq),"
    "  UNIQUE KEY messages_by_log (log_pos),"
    "  UNIQUE KEY messages_by_send (sender, sender_device, client_id)"
    ") ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS sessions("
    "  session_id VARBINARY(128) NOT NULL PRIMARY KEY, kind VARBINARY(16) NOT NULL,"
    "  max_seq BIGINT UNSIGNED NOT NULL DEFAULT 0, min_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,"
    "  created_ms BIGINT UNSIGNED NOT NULL, meta BLOB NULL) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS members("
    "  session_id VARBINARY(128) NOT NULL, user_id VARBINARY(64) NOT NULL,"
    "  role VARBINARY(16) NOT NULL DEFAULT 'member', joined_ms BIGINT UNSIGNED NOT NULL,"
    "  PRIMARY KEY (session_id, user_id), KEY members_by_user (user_id, session_id)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS devices("
    "  user_id VARBINARY(64) NOT NULL, device_id VARBINARY(64) NOT NULL,"
    "  last_client_id BIGINT UNSIGNED NOT NULL DEFAULT 0, last_seen_ms BIGINT UNSIGNED NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (user_id, device_id)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS cursors("
    "  user_id VARBINARY(64) NOT NULL, device_id VARBINARY(64) NOT NULL, session_id VARBINARY(128) NOT NULL,"
    "  delivered_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (user_id, device_id, session_id)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS kv("
    "  plugin VARBINARY(127) NOT NULL, `key` VARBINARY(1024) NOT NULL, value LONGBLOB NULL,"
    "  PRIMARY KEY (plugin, `key`)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS log_counter("
    "  id TINYINT UNSIGNED NOT NULL PRIMARY KEY, last_pos BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB;"
    "INSERT IGNORE INTO log_counter(id, last_pos) VALUES(1, 0)",
    /* 2: cluster mode's seq leases: per session, the highest seq ever leased (SEQ_LEASE) */
    "CREATE TABLE IF NOT EXISTS seq_leases("
    "  session_id VARBINARY(128) NOT NULL PRIMARY KEY, leased_until BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    /* 3: cluster mode's fence per session (store.h): every seq at or below it that is not stored is abandoned.
     * A column of sessions, not a table: the append's first round trip reads its sessions' rows already (which
     * exist), under the log counter's lock, so the fence comes with that read at no cost; and a fence is only
     * raised over stored rows, whose session always has its row. log_counter.fences counts the raises: a
     * raise writes the counter row as every append does (fence_raise). */
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS fence_seq BIGINT UNSIGNED NOT NULL DEFAULT 0;"
    "ALTER TABLE log_counter ADD COLUMN IF NOT EXISTS fences BIGINT UNSIGNED NOT NULL DEFAULT 0",
    /* 4: cluster mode's device epoch (store.h): raised by DEVICE_LOAD with claim, read by the append's first
     * round trip under the log counter's lock. log_counter.claims counts the claims: a claim writes the counter
     * row as a fence's raise does (device_load). */
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS epoch BIGINT UNSIGNED NOT NULL DEFAULT 0;"
    "ALTER TABLE log_counter ADD COLUMN IF NOT EXISTS claims BIGINT UNSIGNED NOT NULL DEFAULT 0",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* An APPEND of the batch being written whose outcome is not known yet. */
#define UNDECIDED ((hubu_store_status)100)

typedef struct {
  MYSQL *conn; /* NULL while the database is unreachable */
  hubu_mariadb_url url;
  char redacted[320]; /* the URL for logs */
  hubu_fsync_mode fsync;
  unsigned long max_packet;        /* the server's max_allowed_packet */
  hubu_buf sql;                    /* the statement being built */
  my_ulonglong affected;           /* rows the latest statement run by run_sql changed */
  hubu_store_batch_entry *entries; /* scratch for sorting a batch by session and by device */
  size_t entries_cap;
  uint8_t *exists;         /* scratch: per op of the batch, its session was in sessions already */
  uint64_t *fences;        /* scratch: per op of the batch, its session's fence */
  hubu_store_op **fenced;  /* scratch: the ops of the batch at or below their fence or moved */
  uint64_t *epochs;        /* scratch: per op of the batch with a device_epoch, its device's epoch in the store */
  int idle_timeout_warned; /* the server lacks the idle transaction timeouts: said once */
  /* reachability */
  uint64_t next_attempt_ms; /* while down: no connect before this */
  unsigned backoff_ms;
  int down;              /* the connection was lost and is not back yet */
  char down_reason[160]; /* why, for /healthz and the log */
  uint64_t down_since_ms;
  uint64_t refused_while_down; /* ops answered RETRY without an attempt since the loss */
} maria_store;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static void copy_str(char *dst, size_t size, const char *src, size_t n) {
  if (!src) n = 0;
  if (n >= size) n = size - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

/* ---- errors ---- */

/* The error leaves the connection unusable: the server is gone or unreachable. */
static int connection_lost(unsigned e) {
  switch (e) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_SERVER_LOST_EXTENDED:
    case CR_COMMANDS_OUT_OF_SYNC:
    case ER_SERVER_SHUTDOWN:
    case ER_CONNECTION_KILLED:
    case ER_CON_COUNT_ERROR:
    case ER_NET_READ_ERROR:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_ERROR_ON_WRITE:
    case ER_NET_WRITE_INTERRUPTED:
    case 4031: /* ER_CLIENT_INTERACTION_TIMEOUT */
    case 1047: /* ER_UNKNOWN_COM_ERROR: a Galera node that is not ready */ return 1;
    default: return 0;
  }
}

/* The transaction was refused for a reason that passes when it runs again. */
static int retry_transaction(unsigned e) { return e == ER_LOCK_DEADLOCK || e == ER_LOCK_WAIT_TIMEOUT; }

static void drop_connection(maria_store *st, const char *why) {
  if (st->conn) {
    mysql_close(st->conn);
    st->conn = NULL;
  }
  if (!st->down) {
    st->down = 1;
    st->down_since_ms = now_ms();
    st->backoff_ms = BACKOFF_FIRST_MS;
    st->refused_while_down = 0;
    snprintf(st->down_reason, sizeof st->down_reason, "%s", why);
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "store_down", "backend=mariadb url=\"%s\" error=\"%s\"", st->redacted, why);
  } else if (st->backoff_ms < BACKOFF_MAX_MS) {
    st->backoff_ms = st->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : st->backoff_ms * 2;
  }
  st->next_attempt_ms = now_ms() + st->backoff_ms;
}

/* op failed on the connection's latest error: a lost connection is dropped
 * (and the op is RETRY), a passing one is RETRY, anything else ERROR. */
static void fail_op(maria_store *st, hubu_store_op *op, const char *step) {
  unsigned e = st->conn ? mysql_errno(st->conn) : CR_SERVER_GONE_ERROR;
  char what[200];
  snprintf(what, sizeof what, "%u %s", e, st->conn ? mysql_error(st->conn) : "no connection");
  int lost = connection_lost(e);
  hubu_store_op_fail(op, lost || retry_transaction(e) ? HUBU_STORE_RETRY : HUBU_STORE_ERROR, step, what);
  if (lost) drop_connection(st, what);
}

static void fail_op_plain(hubu_store_op *op, const char *step, const char *what) {
  hubu_store_op_fail(op, HUBU_STORE_ERROR, step, what);
}

static void rollback(maria_store *st) {
  if (!st->conn) return;
  if (mysql_real_query(st->conn, "ROLLBACK", 8) != 0 && connection_lost(mysql_errno(st->conn)))
    drop_connection(st, mysql_error(st->conn));
}

/* An op's transaction failed: 1 when it is worth another attempt (rolled
 * back; a deadlock or lock-wait timeout within TXN_ATTEMPTS), else 0 with
 * op failed (logged once) and the transaction rolled back. */
static int txn_again(maria_store *st, hubu_store_op *op, int attempt, const char *step) {
  if (st->conn && retry_transaction(mysql_errno(st->conn)) && attempt < TXN_ATTEMPTS) {
    rollback(st);
    return 1;
  }
  fail_op(st, op, step);
  rollback(st);
  return 0;
}

/* ---- SQL text ---- */

static int sql_raw(maria_store *st, const char *s) { return hubu_buf_append(&st->sql, s, strlen(s)); }

static int sql_printf(maria_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sql_printf(maria_store *st, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) return -1;
  return hubu_buf_append(&st->sql, tmp, (size_t)n);
}

static int sql_u64(maria_store *st, uint64_t v) { return sql_printf(st, "%" PRIu64, v); }

/* A byte string as a binary literal: _binary'...', escaped by the connector. */
static int sql_bytes(maria_store *st, const void *p, size_t n) {
  if (sql_raw(st, "_binary'") != 0) return -1;
  if (n > (SIZE_MAX - 2) / 2) return -1;
  char *w = (char *)hubu_buf_reserve(&st->sql, 2 * n + 2);
  if (!w) return -1;
  unsigned long written = mysql_real_escape_string(st->conn, w, p ? (const char *)p : "", (unsigned long)n);
  st->sql.len += written;
  return sql_raw(st, "'");
}

static int sql_text(maria_store *st, const char *s) { return sql_bytes(st, s, s ? strlen(s) : 0); }

static void sql_reset(maria_store *st) { st->sql.off = st->sql.len = 0; }

static size_t sql_len(const maria_store *st) { return hubu_buf_size(&st->sql); }

/* Starts another statement of a multi-statement text: s, after a ';' unless it is the first. */
static int sql_next(maria_store *st, const char *s) { return (sql_len(st) ? sql_raw(st, ";") : 0) | sql_raw(st, s); }

/* ---- running statements ---- */

/* Runs the statements in st->sql (one or several, ';'-separated), discarding
 * their results. 0; or -1 with failed_at set to the index of the statement
 * that failed (those after it did not run). */
static int run_sql(maria_store *st, int *failed_at) {
  *failed_at = 0;
  if (!st->conn) return -1;
  if (mysql_real_query(st->conn, (const char *)hubu_buf_head(&st->sql), (unsigned long)sql_len(st)) != 0) return -1;
  for (int i = 0;; i++) {
    MYSQL_RES *res = mysql_store_result(st->conn);
    if (res)
      mysql_free_result(res);
    else
      st->affected = mysql_affected_rows(st->conn);
    int next = mysql_next_result(st->conn);
    if (next < 0) return 0; /* no more results */
    if (next > 0) {
      *failed_at = i + 1;
      return -1;
    }
  }
}

static int run_text(maria_store *st, const char *sql) {
  sql_reset(st);
  int at;
  return sql_raw(st, sql) == 0 ? run_sql(st, &at) : -1;
}

/* Runs st->sql, one statement that returns rows: the result set, or NULL on
 * failure (mysql_errno says why). */
static MYSQL_RES *query_rows(maria_store *st) {
  if (!st->conn) return NULL;
  if (mysql_real_query(st->conn, (const char *)hubu_buf_head(&st->sql), (unsigned long)sql_len(st)) != 0) return NULL;
  return mysql_store_result(st->conn);
}

static uint64_t col_u64(const char *s) { return s ? strtoull(s, NULL, 10) : 0; }

/* ---- connecting ---- */

static int migrate(maria_store *st, char *err, size_t err_size);

/* Opens a connection and sets the session up. 0, or -1 with err. */
static int connect_db(maria_store *st, int do_migrate, char *err, size_t err_size) {
  MYSQL *conn = mysql_init(NULL);
  if (!conn) {
    snprintf(err, err_size, "mysql_init: out of memory");
    return -1;
  }
  unsigned connect_s = st->url.connect_timeout_s ? st->url.connect_timeout_s : CONNECT_TIMEOUT_S;
  unsigned read_s = st->url.read_timeout_s ? st->url.read_timeout_s : IO_TIMEOUT_S;
  unsigned write_s = st->url.write_timeout_s ? st->url.write_timeout_s : IO_TIMEOUT_S;
  my_bool no = 0;
  mysql_optionsv(conn, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
  mysql_optionsv(conn, MYSQL_OPT_READ_TIMEOUT, &read_s);
  mysql_optionsv(conn, MYSQL_OPT_WRITE_TIMEOUT, &write_s);
  mysql_optionsv(conn, MYSQL_OPT_RECONNECT, &no); /* a silent reconnect would lose the transaction */
  mysql_optionsv(conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  char init[320];
  snprintf(init, sizeof init,
           "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO',"
           " SESSION tx_isolation = 'READ-COMMITTED', SESSION time_zone = '+00:00', SESSION autocommit = 1,"
           " SESSION innodb_lock_wait_timeout = %u",
           st->url.lock_wait_timeout_s ? st->url.lock_wait_timeout_s : LOCK_WAIT_TIMEOUT_S);
  mysql_optionsv(conn, MYSQL_INIT_COMMAND, init);
  const char *host = st->url.socket[0] ? NULL : st->url.host;
  const char *socket = st->url.socket[0] ? st->url.socket : NULL;
  if (!mysql_real_connect(conn, host, st->url.user, st->url.has_password ? st->url.password : NULL, st->url.database,
                          st->url.port, socket, CLIENT_MULTI_STATEMENTS | CLIENT_FOUND_ROWS)) {
    snprintf(err, err_size, "connect to %s: %u %s", st->redacted, mysql_errno(conn), mysql_error(conn));
    mysql_close(conn);
    return -1;
  }
  st->conn = conn;
  MYSQL_RES *res = NULL;
  sql_reset(st);
  if (sql_raw(st, "SELECT @@max_allowed_packet, @@innodb_flush_log_at_trx_commit, VERSION()") != 0 ||
      !(res = query_rows(st))) {
    snprintf(err, err_size, "read server settings: %s", mysql_error(conn));
    goto fail;
  }
  MYSQL_ROW row = mysql_fetch_row(res);
  if (row) {
    st->max_packet = (unsigned long)col_u64(row[0]);
    if (row[1] && strcmp(row[1], "1") != 0 && st->fsync != HUBU_FSYNC_OFF)
      hubu_log(HUBU_LOG_WARN, 0, NULL, "store_not_durable",
               "backend=mariadb innodb_flush_log_at_trx_commit=%s msg=\"commits are not flushed to disk one by one: "
               "an acknowledged message may be lost if the database host crashes; set it to 1\"",
               row[1]);
  }
  mysql_free_result(res);
  if (st->max_packet < 65536) st->max_packet = 65536;
  unsigned idle_s = st->url.idle_txn_timeout_s ? st->url.idle_txn_timeout_s : IDLE_TXN_TIMEOUT_S;
  char idle[160];
  snprintf(idle, sizeof idle, "SET SESSION idle_write_transaction_timeout = %u, SESSION idle_transaction_timeout = %u",
           idle_s, idle_s);
  if (run_text(st, idle) != 0) {
    if (mysql_errno(conn) != ER_UNKNOWN_SYSTEM_VARIABLE) {
      snprintf(err, err_size, "set idle transaction timeouts: %u %s", mysql_errno(conn), mysql_error(conn));
      goto fail;
    }
    if (!st->idle_timeout_warned)
      hubu_log(HUBU_LOG_WARN, 0, NULL, "store_no_idle_timeout",
               "backend=mariadb msg=\"the server has no idle_write_transaction_timeout nor idle_transaction_timeout "
               "(MariaDB before 10.3): a node stopped inside an append holds the log counter's lock until its "
               "connection is closed\"");
    st->idle_timeout_warned = 1;
  }
  if (do_migrate && migrate(st, err, err_size) != 0) goto fail;
  return 0;
fail:
  mysql_close(st->conn);
  st->conn = NULL;
  return -1;
}

/* When down: tries to reconnect if the backoff allows. 0 when connected. */
static int ensure_connected(maria_store *st) {
  if (st->conn) return 0;
  if (now_ms() < st->next_attempt_ms) return -1;
  char err[256];
  if (connect_db(st, 0, err, sizeof err) != 0) {
    drop_connection(st, err); /* moves the next attempt further out */
    return -1;
  }
  if (st->down) {
    hubu_log(HUBU_LOG_INFO, 0, NULL, "store_up",
             "backend=mariadb url=\"%s\" down_ms=%" PRIu64 " refused_while_down=%" PRIu64, st->redacted,
             now_ms() - st->down_since_ms, st->refused_while_down);
    st->down = 0;
    st->down_reason[0] = '\0';
  }
  return 0;
}

/* An op that finds the database unreachable: RETRY without a log line each
 * (store_down was logged once). 0 when connected. */
static int connected_or_refuse(maria_store *st, hubu_store_op *op) {
  if (ensure_connected(st) == 0) return 0;
  snprintf(op->error, sizeof op->error, "database unreachable: %.130s", st->down_reason);
  op->status = HUBU_STORE_RETRY;
  st->refused_while_down++;
  return -1;
}

static int migrate(maria_store *st, char *err, size_t err_size) {
  MYSQL_RES *res = NULL;
  /* Several nodes may start at once: one migrates, the others wait. */
  sql_reset(st);
  if (sql_raw(st, "SELECT GET_LOCK('hubu_schema', 60)") != 0 || !(res = query_rows(st))) goto sql_fail;
  MYSQL_ROW row = mysql_fetch_row(res);
  int locked = row && row[0] && !strcmp(row[0], "1");
  mysql_free_result(res);
  res = NULL;
  if (!locked) {
    snprintf(err, err_size, "migrate: another node held the schema lock for 60 s");
    return -1;
  }
  if (run_text(st, "CREATE TABLE IF NOT EXISTS schema_version(version INT NOT NULL) ENGINE=InnoDB") != 0)
    goto sql_fail_unlock;
  sql_reset(st);
  if (sql_raw(st, "SELECT COALESCE(MAX(version), 0) FROM schema_version") != 0 || !(res = query_rows(st)))
    goto sql_fail_unlock;
  row = mysql_fetch_row(res);
  int version = row && row[0] ? atoi(row[0]) : 0;
  mysql_free_result(res);
  if (version > SCHEMA_VERSION) {
    snprintf(err, err_size, "database schema version %d is newer than this server's %d", version, SCHEMA_VERSION);
    run_text(st, "DO RELEASE_LOCK('hubu_schema')");
    return -1;
  }
  for (int v = version; v < SCHEMA_VERSION; v++) {
    char record[96];
    snprintf(record, sizeof record, "INSERT INTO schema_version(version) VALUES(%d)", v + 1);
    if (run_text(st, migrations[v]) != 0 || run_text(st, record) != 0) goto sql_fail_unlock;
    hubu_log(HUBU_LOG_INFO, 0, NULL, "store_migrated", "backend=mariadb version=%d", v + 1);
  }
  run_text(st, "DO RELEASE_LOCK('hubu_schema')");
  return 0;
sql_fail_unlock:
  snprintf(err, err_size, "migrate: %u %s", mysql_errno(st->conn), mysql_error(st->conn));
  run_text(st, "DO RELEASE_LOCK('hubu_schema')");
  return -1;
sql_fail:
  snprintf(err, err_size, "migrate: %u %s", mysql_errno(st->conn), mysql_error(st->conn));
  return -1;
}

static void maria_close(void *handle) {
  maria_store *st = handle;
  if (!st) return;
  if (st->conn) mysql_close(st->conn);
  hubu_buf_free(&st->sql);
  free(st->entries);
  free(st->exists);
  free(st->fences);
  free(st->fenced);
  free(st->epochs);
  explicit_bzero(st->url.password, sizeof st->url.password);
  free(st);
}

static void library_init(void) { mysql_library_init(0, NULL, NULL); }

static void *maria_open(const hubu_store_config *cfg, char *err, size_t err_size) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, library_init);
  maria_store *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  st->fsync = cfg->fsync;
  hubu_mariadb_url_redact(cfg->url, st->redacted, sizeof st->redacted);
  if (hubu_mariadb_url_parse(cfg->url, &st->url, err, err_size) != 0 ||
      hubu_mariadb_url_password(&st->url, err, err_size) != 0 || connect_db(st, 1, err, err_size) != 0) {
    maria_close(st);
    return NULL;
  }
  return st;
}

/* ---- APPEND batches ---- */

/* One row of messages: (log_pos, session_id, seq, ...). */
static int sql_message_row(maria_store *st, const hubu_msg *m, uint64_t log_pos) {
  int rc = sql_raw(st, "(") | sql_u64(st, log_pos) | sql_raw(st, ",") | sql_text(st, m->session_id) | sql_raw(st, ",") |
           sql_u64(st, m->seq) | sql_raw(st, ",") | sql_u64(st, m->msg_id) | sql_raw(st, ",") |
           sql_text(st, m->sender) | sql_raw(st, ",") | sql_text(st, m->sender_device) | sql_raw(st, ",") |
           sql_u64(st, m->client_id) | sql_raw(st, ",") | sql_text(st, m->content_type) | sql_raw(st, ",") |
           sql_bytes(st, m->body, m->body_len) | sql_raw(st, ",");
  rc |= m->meta_len ? sql_bytes(st, m->meta, m->meta_len) : sql_raw(st, "NULL");
  rc |= sql_raw(st, ",") | sql_u64(st, m->server_time_ms) | sql_raw(st, ")");
  return rc ? -1 : 0;
}

#define MESSAGE_INSERT                                                                                           \
  "INSERT INTO messages(log_pos, session_id, seq, msg_id, sender, sender_device, client_id, content_type, body," \
  " meta, server_time_ms) VALUES"

/* The sessions' max_seq (and the new ones' rows and members), the devices'
 * last client_id, the log counter, COMMIT: appended to st->sql as statements.
 * entries[0..n) are the stored ops, sorted here. exists[i]: the session of
 * ops[i] was in sessions when the transaction began. */
static int sql_append_tail(maria_store *st, hubu_store_batch_entry *entries, size_t n, uint64_t last_pos) {
  int rc = 0;
  if (n) {
    qsort(entries, n, sizeof *entries, hubu_store_entry_by_session);
    rc |= sql_next(st, "INSERT INTO sessions(session_id, kind, max_seq, min_seq, created_ms) VALUES");
    size_t groups = 0;
    for (size_t i = 0; i < n;) {
      const hubu_msg *first = entries[i].op->append.msg;
      uint64_t max_seq = first->seq;
      size_t j = i + 1;
      for (; j < n && strcmp(entries[j].op->append.msg->session_id, first->session_id) == 0; j++)
        if (entries[j].op->append.msg->seq > max_seq) max_seq = entries[j].op->append.msg->seq;
      const hubu_store_append_op *maker = &entries[i].op->append;
      const char *kind = maker->new_kind[0] ? maker->new_kind : hubu_session_kind_name(HUBU_SESSION_CUSTOM);
      rc |= sql_raw(st, groups ? ",(" : "(") | sql_text(st, first->session_id) | sql_raw(st, ",") | sql_text(st, kind) |
            sql_raw(st, ",") | sql_u64(st, max_seq) | sql_raw(st, ",0,") | sql_u64(st, first->server_time_ms) |
            sql_raw(st, ")");
      groups++;
      i = j;
    }
    rc |= sql_raw(st, " ON DUPLICATE KEY UPDATE max_seq = GREATEST(max_seq, VALUES(max_seq))");
    /* members of the sessions this batch makes, as the first append of each names them */
    int any = 0;
    for (size_t i = 0; i < n;) {
      const hubu_msg *first = entries[i].op->append.msg;
      size_t j = i + 1;
      while (j < n && strcmp(entries[j].op->append.msg->session_id, first->session_id) == 0) j++;
      const hubu_store_append_op *maker = &entries[i].op->append;
      if (!st->exists[entries[i].index])
        for (size_t k = 0; k < maker->n_new_members; k++) {
          rc |= (any ? sql_raw(st, ",(")
                     : sql_next(st, "INSERT INTO members(session_id, user_id, role, joined_ms) VALUES(")) |
                sql_text(st, first->session_id) | sql_raw(st, ",") | sql_text(st, maker->new_members[k]) |
                sql_raw(st, ",'member',") | sql_u64(st, first->server_time_ms) | sql_raw(st, ")");
          any = 1;
        }
      i = j;
    }
    if (any) rc |= sql_raw(st, " ON DUPLICATE KEY UPDATE user_id = user_id");
    qsort(entries, n, sizeof *entries, hubu_store_entry_by_device);
    rc |= sql_next(st, "INSERT INTO devices(user_id, device_id, last_client_id, last_seen_ms) VALUES");
    for (size_t i = 0, d = 0; i < n; d++) {
      const hubu_msg *first = entries[i].op->append.msg;
      uint64_t client_id = first->client_id, seen = first->server_time_ms;
      size_t j = i + 1;
      for (; j < n && strcmp(entries[j].op->append.msg->sender, first->sender) == 0 &&
             strcmp(entries[j].op->append.msg->sender_device, first->sender_device) == 0;
           j++) {
        if (entries[j].op->append.msg->client_id > client_id) client_id = entries[j].op->append.msg->client_id;
        if (entries[j].op->append.msg->server_time_ms > seen) seen = entries[j].op->append.msg->server_time_ms;
      }
      rc |= sql_raw(st, d ? ",(" : "(") | sql_text(st, first->sender) | sql_raw(st, ",") |
            sql_text(st, first->sender_device) | sql_raw(st, ",") | sql_u64(st, client_id) | sql_raw(st, ",") |
            sql_u64(st, seen) | sql_raw(st, ")");
      i = j;
    }
    rc |= sql_raw(st,
                  " ON DUPLICATE KEY UPDATE last_client_id = GREATEST(last_client_id, VALUES(last_client_id)),"
                  " last_seen_ms = GREATEST(last_seen_ms, VALUES(last_seen_ms))");
    rc |= sql_next(st, "UPDATE log_counter SET last_pos = ") | sql_u64(st, last_pos) | sql_raw(st, " WHERE id = 1");
  }
  rc |= sql_next(st, "COMMIT");
  return rc ? -1 : 0;
}

typedef enum {
  TXN_OK = 0,
  TXN_FAILED,    /* rolled back (or never started): nothing written */
  TXN_RETRY,     /* deadlock or lock-wait timeout, rolled back: run it again */
  TXN_IN_DOUBT,  /* the connection broke while COMMIT may have run */
  TXN_DUPLICATE, /* the multi-row INSERT met a taken key, rolled back: write row by row */
} txn_result;

/* What the latest error means for a transaction that has not sent COMMIT. */
static txn_result txn_failed(maria_store *st, const char **why, char *buf, size_t size) {
  unsigned e = st->conn ? mysql_errno(st->conn) : CR_SERVER_GONE_ERROR;
  snprintf(buf, size, "%u %s", e, st->conn ? mysql_error(st->conn) : "no connection");
  *why = buf;
  if (connection_lost(e)) {
    drop_connection(st, buf);
    return TXN_FAILED;
  }
  rollback(st);
  return retry_transaction(e) ? TXN_RETRY : TXN_FAILED;
}

/* Reads the rows already stored under the send keys of ops (those without a
 * status yet), one statement: each op found gets DUPLICATE (another message)
 * or OK (its own, when resolving a COMMIT in doubt). 0, or -1 on a failed query. */
static int match_sends(maria_store *st, hubu_store_op **ops, size_t n, int in_doubt) {
  sql_reset(st);
  int rc = sql_raw(st,
                   "SELECT sender, sender_device, client_id, session_id, seq, msg_id, log_pos FROM messages"
                   " WHERE ");
  size_t asked = 0;
  for (size_t i = 0; i < n; i++) {
    const hubu_msg *m = ops[i]->append.msg;
    if (!m || ops[i]->status != UNDECIDED) continue;
    rc |= sql_raw(st, asked++ ? " OR (sender = " : "(sender = ") | sql_text(st, m->sender) |
          sql_raw(st, " AND sender_device = ") | sql_text(st, m->sender_device) | sql_raw(st, " AND client_id = ") |
          sql_u64(st, m->client_id) | sql_raw(st, ")");
  }
  if (rc) return -1;
  if (!asked) return 0;
  MYSQL_RES *res = query_rows(st);
  if (!res) return -1;
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res))) {
    unsigned long *len = mysql_fetch_lengths(res);
    uint64_t client_id = col_u64(row[2]), msg_id = col_u64(row[5]);
    for (size_t i = 0; i < n; i++) {
      hubu_store_op *op = ops[i];
      const hubu_msg *m = op->append.msg;
      if (!m || op->status != UNDECIDED || m->client_id != client_id || strlen(m->sender) != len[0] ||
          memcmp(m->sender, row[0], len[0]) || strlen(m->sender_device) != len[1] ||
          memcmp(m->sender_device, row[1], len[1]))
        continue;
      hubu_store_append_op *a = &op->append;
      copy_str(a->stored_session_id, sizeof a->stored_session_id, row[3], len[3]);
      a->stored_seq = col_u64(row[4]);
      a->stored_msg_id = msg_id;
      if (in_doubt && msg_id == m->msg_id) {
        op->status = HUBU_STORE_OK;
        a->log_pos = col_u64(row[6]);
      } else {
        op->status = HUBU_STORE_DUPLICATE;
      }
      /* no break: a batch may hold the same send twice (a resend while the first was queued); each is told */
    }
  }
  mysql_free_result(res);
  return 0;
}

/* s against the n bytes at p, in byte order (a prefix first). */
static int bytes_cmp(const char *s, const char *p, size_t n) {
  size_t len = strlen(s);
  int c = memcmp(s, p, len < n ? len : n);
  return c ? c : (len > n) - (len < n);
}

/* (user, device) against the n and m bytes at u and d, in byte order. */
static int device_cmp(const hubu_msg *msg, const char *u, size_t n, const char *d, size_t m) {
  int c = bytes_cmp(msg->sender, u, n);
  return c ? c : bytes_cmp(msg->sender_device, d, m);
}

/* Round trip 1: begin, lock the counter, learn which sessions exist and
 * their fences, and the epochs of the devices whose ops carry one. Fences
 * and epochs are read after the lock is granted (READ COMMITTED: each
 * statement reads what is committed when it starts), and both are raised
 * only under the same lock (fence_raise, device_load with claim), so neither moves
 * until this transaction ends. */
static int begin_append(maria_store *st, hubu_store_batch_entry *entries, size_t n, uint64_t *last_pos) {
  sql_reset(st);
  int rc = sql_raw(st, "START TRANSACTION;SELECT last_pos FROM log_counter WHERE id = 1 FOR UPDATE");
  size_t checked = 0; /* devices whose epoch is read */
  if (n) {
    qsort(entries, n, sizeof *entries, hubu_store_entry_by_session);
    rc |= sql_raw(st, ";SELECT session_id, fence_seq FROM sessions WHERE session_id IN (");
    for (size_t i = 0, g = 0; i < n; g++) {
      const char *sid = entries[i].op->append.msg->session_id;
      rc |= sql_raw(st, g ? "," : "") | sql_text(st, sid);
      while (i < n && strcmp(entries[i].op->append.msg->session_id, sid) == 0) i++;
    }
    rc |= sql_raw(st, ") ORDER BY session_id");
    qsort(entries, n, sizeof *entries, hubu_store_entry_by_device);
    const hubu_msg *last = NULL;
    for (size_t i = 0; i < n; i++) {
      const hubu_msg *m = entries[i].op->append.msg;
      st->epochs[entries[i].index] = 0;
      if (!entries[i].op->append.device_epoch ||
          (last && !strcmp(last->sender, m->sender) && !strcmp(last->sender_device, m->sender_device)))
        continue;
      rc |= sql_raw(st, checked++ ? " OR (user_id = "
                                  : ";SELECT user_id, device_id, epoch FROM devices WHERE (user_id = ") |
            sql_text(st, m->sender) | sql_raw(st, " AND device_id = ") | sql_text(st, m->sender_device) |
            sql_raw(st, ")");
      last = m;
    }
    if (checked) rc |= sql_raw(st, " ORDER BY user_id, device_id");
  }
  if (rc || !st->conn) return -1;
  if (mysql_real_query(st->conn, (const char *)hubu_buf_head(&st->sql), (unsigned long)sql_len(st)) != 0) return -1;
  /* START TRANSACTION: no result */
  if (mysql_next_result(st->conn) != 0) return -1;
  MYSQL_RES *res = mysql_store_result(st->conn);
  if (!res) return -1;
  MYSQL_ROW row = mysql_fetch_row(res);
  *last_pos = row ? col_u64(row[0]) : 0;
  mysql_free_result(res);
  if (!row) {
    mysql_next_result(st->conn);
    return -1;
  }
  if (mysql_next_result(st->conn) != 0) return n ? -1 : 0;
  res = mysql_store_result(st->conn);
  if (!res) return -1;
  /* mark the ops whose session was found: entries and rows are both in byte order, so merge */
  qsort(entries, n, sizeof *entries, hubu_store_entry_by_session);
  for (size_t i = 0; i < n; i++) {
    st->exists[entries[i].index] = 0;
    st->fences[entries[i].index] = 0;
  }
  size_t i = 0;
  while ((row = mysql_fetch_row(res))) {
    unsigned long *len = mysql_fetch_lengths(res);
    uint64_t fence = col_u64(row[1]);
    while (i < n && bytes_cmp(entries[i].op->append.msg->session_id, row[0], len[0]) < 0) i++;
    while (i < n && bytes_cmp(entries[i].op->append.msg->session_id, row[0], len[0]) == 0) {
      st->exists[entries[i].index] = 1;
      st->fences[entries[i++].index] = fence;
    }
  }
  mysql_free_result(res);
  if (checked) { /* the devices' epochs, merged the same way (a device without a row is at epoch 0) */
    if (mysql_next_result(st->conn) != 0 || !(res = mysql_store_result(st->conn))) return -1;
    qsort(entries, n, sizeof *entries, hubu_store_entry_by_device);
    i = 0;
    while ((row = mysql_fetch_row(res))) {
      unsigned long *len = mysql_fetch_lengths(res);
      uint64_t epoch = col_u64(row[2]);
      while (i < n && device_cmp(entries[i].op->append.msg, row[0], len[0], row[1], len[1]) < 0) i++;
      while (i < n && device_cmp(entries[i].op->append.msg, row[0], len[0], row[1], len[1]) == 0)
        st->epochs[entries[i++].index] = epoch;
    }
    mysql_free_result(res);
  }
  while (mysql_next_result(st->conn) == 0) {
    res = mysql_store_result(st->conn);
    if (res) mysql_free_result(res);
  }
  return mysql_errno(st->conn) ? -1 : 0;
}

/* op is stored at log position pos: OK, with its own session, seq and msg_id. */
static void stored_ok(hubu_store_op *op, uint64_t pos) {
  hubu_store_append_op *a = &op->append;
  op->status = HUBU_STORE_OK;
  a->log_pos = pos;
  copy_str(a->stored_session_id, sizeof a->stored_session_id, a->msg->session_id, strlen(a->msg->session_id));
  a->stored_seq = a->msg->seq;
  a->stored_msg_id = a->msg->msg_id;
}

/* Writes the undecided ops of ops[0..n) row by row (a batch holding a resent
 * SEND or a taken seq). Each gets DUPLICATE, SEQ_TAKEN (its seq is taken), or
 * is stored and put in st->entries. Returns 0, or -1 when a statement failed. */
static int insert_rows(maria_store *st, hubu_store_op **ops, size_t n, uint64_t *pos, size_t *stored) {
  for (size_t i = 0; i < n; i++) {
    hubu_store_op *op = ops[i];
    if (op->status != UNDECIDED) continue;
    if (match_sends(st, ops + i, 1, 0) != 0) return -1;
    if (op->status == HUBU_STORE_DUPLICATE) continue;
    const hubu_msg *m = op->append.msg;
    sql_reset(st);
    int at;
    if (sql_raw(st, MESSAGE_INSERT) != 0 || sql_message_row(st, m, *pos + 1) != 0) return -1;
    if (run_sql(st, &at) != 0) {
      /* the send key was looked up just before: the key the row met is (session_id, seq) */
      if (!st->conn || mysql_errno(st->conn) != ER_DUP_ENTRY) return -1;
      hubu_store_seq_taken(op, st->fences[i], 0);
      continue;
    }
    stored_ok(op, ++*pos);
    st->entries[(*stored)++] = (hubu_store_batch_entry){op, i};
  }
  return 0;
}

/* Bytes of SQL after which a multi-row INSERT is cut: well inside one packet. */
static size_t statement_target(const maria_store *st) {
  return st->max_packet / 4 < STATEMENT_TARGET ? st->max_packet / 4 : STATEMENT_TARGET;
}

/* All live ops in multi-row INSERTs, cut near STATEMENT_TARGET; every part
 * but the last is sent here, the last is left in st->sql. 0, or -1 when a
 * part failed (the error is the connection's) or memory ran out (*oom). */
static int insert_fast(maria_store *st, size_t live, uint64_t last_pos, int *oom) {
  sql_reset(st);
  int first_row = 1;
  for (size_t k = 0; k < live; k++) {
    if ((first_row && sql_raw(st, MESSAGE_INSERT) != 0) || (!first_row && sql_raw(st, ",") != 0) ||
        sql_message_row(st, st->entries[k].op->append.msg, last_pos + k + 1) != 0) {
      *oom = 1;
      return -1;
    }
    first_row = 0;
    if (sql_len(st) > statement_target(st) && k + 1 < live) { /* cut: this part goes on its own */
      int at;
      if (run_sql(st, &at) != 0) return -1;
      sql_reset(st);
      first_row = 1;
    }
  }
  return 0;
}

/* The entry's op is not written: its device moved (its epoch in the store,
 * read by begin_append, is not the op's), or its seq is at or below its
 * session's fence. */
static int moved(const maria_store *st, hubu_store_batch_entry e) {
  return e.op->append.device_epoch && st->epochs[e.index] != e.op->append.device_epoch;
}

static int refused(const maria_store *st, hubu_store_batch_entry e) {
  uint64_t fence = st->fences[e.index];
  return moved(st, e) || (fence && e.op->append.msg->seq <= fence);
}

/* Takes the refused entries (above) out of st->entries[0..*live), keeping the
 * others in order: each is DUPLICATE when its send is stored already (that
 * wins), else DEVICE_MOVED or SEQ_TAKEN. 0, or -1 when the send lookup failed. */
static int refuse_out(maria_store *st, size_t *live) {
  size_t out = 0;
  for (size_t k = 0; k < *live; k++)
    if (refused(st, st->entries[k])) st->fenced[out++] = st->entries[k].op;
  if (!out) return 0;
  if (match_sends(st, st->fenced, out, 0) != 0) return -1;
  size_t kept = 0;
  for (size_t k = 0; k < *live; k++) {
    hubu_store_batch_entry e = st->entries[k];
    if (!refused(st, e))
      st->entries[kept++] = e;
    else if (e.op->status == UNDECIDED && moved(st, e))
      hubu_store_device_moved(e.op, st->epochs[e.index]);
    else if (e.op->status == UNDECIDED)
      hubu_store_seq_taken(e.op, st->fences[e.index], 1);
  }
  *live = kept;
  return 0;
}

/* One attempt at the transaction for ops[0..n): every message in multi-row
 * INSERTs, or (row_by_row) one by one after looking its send key up. */
static txn_result append_attempt(maria_store *st, hubu_store_op **ops, size_t n, int row_by_row, const char **why,
                                 char *buf, size_t size) {
  size_t live = 0;
  for (size_t i = 0; i < n; i++) {
    ops[i]->status = UNDECIDED;
    ops[i]->error[0] = '\0';
    const hubu_msg *m = ops[i]->append.msg;
    if (!m) {
      fail_op_plain(ops[i], "insert", "APPEND without a message");
      continue;
    }
    /* escaped, a byte may take two; the row must fit one packet with room for the statement around it */
    if (2 * ((uint64_t)m->body_len + m->meta_len) + 4096 > st->max_packet) {
      char what[128];
      snprintf(what, sizeof what, "the message (%zu bytes) does not fit the database's max_allowed_packet (%lu)",
               m->body_len + m->meta_len, st->max_packet);
      fail_op_plain(ops[i], "insert", what);
      continue;
    }
    st->entries[live++] = (hubu_store_batch_entry){ops[i], i};
  }
  if (!live) return TXN_OK;
  uint64_t last_pos = 0;
  if (begin_append(st, st->entries, live, &last_pos) != 0) return txn_failed(st, why, buf, size);
  qsort(st->entries, live, sizeof *st->entries,
        hubu_store_entry_by_index); /* back to submission order, for the positions */
  uint64_t pos = last_pos;
  size_t stored = 0;
  int oom = 0;
  if (refuse_out(st, &live) != 0) goto failed; /* those moved or at or below their fence are not written */
  if (!row_by_row) {
    if (insert_fast(st, live, last_pos, &oom) != 0) goto failed;
    for (size_t k = 0; k < live; k++) /* as it will be if COMMIT succeeds; a failure overwrites it */
      stored_ok(st->entries[k].op, last_pos + k + 1);
    stored = live;
    pos = last_pos + live;
  } else {
    sql_reset(st);
    if (insert_rows(st, ops, n, &pos, &stored) != 0) goto failed;
    sql_reset(st);
  }
  /* the last round trip: (the last INSERT,) the tail, COMMIT */
  if (sql_append_tail(st, st->entries, stored, pos) != 0) {
    oom = 1;
    goto failed;
  }
  int at;
  if (run_sql(st, &at) == 0) return TXN_OK;
  if (st->conn && connection_lost(mysql_errno(st->conn))) { /* COMMIT was in this round trip: it may have run */
    unsigned e = mysql_errno(st->conn);
    snprintf(buf, size, "%u %s", e, mysql_error(st->conn));
    *why = buf;
    drop_connection(st, buf);
    return TXN_IN_DOUBT;
  }
failed:
  if (oom) {
    rollback(st);
    *why = "out of memory building the statement";
    return TXN_FAILED;
  }
  if (!row_by_row && st->conn && mysql_errno(st->conn) == ER_DUP_ENTRY) {
    rollback(st);
    return TXN_DUPLICATE;
  }
  return txn_failed(st, why, buf, size);
}

/* After TXN_IN_DOUBT: a fresh connection tells, by send key and msg_id,
 * which messages were committed. Those not found are RETRY (the client sends
 * again; the send key keeps it from being stored twice). */
static void resolve_in_doubt(maria_store *st, hubu_store_op **ops, size_t n, const char *why) {
  for (size_t i = 0; i < n; i++)
    if (ops[i]->append.msg && ops[i]->status != HUBU_STORE_ERROR && ops[i]->status != HUBU_STORE_SEQ_TAKEN &&
        ops[i]->status != HUBU_STORE_DEVICE_MOVED)
      ops[i]->status = UNDECIDED;
  st->next_attempt_ms = 0; /* try once now, whatever the backoff says */
  int resolved = ensure_connected(st) == 0 && match_sends(st, ops, n, 1) == 0;
  size_t committed = 0;
  for (size_t i = 0; i < n; i++) {
    hubu_store_op *op = ops[i];
    if (op->status == HUBU_STORE_OK) committed++;
    if (op->status != UNDECIDED) continue;
    op->status = HUBU_STORE_RETRY;
    op->append.in_doubt = !resolved; /* resolved: not found, so not stored */
    snprintf(op->error, sizeof op->error, "append commit: %.140s", why);
  }
  hubu_log(HUBU_LOG_WARN, 0, NULL, "store_commit_in_doubt",
           "backend=mariadb batch=%zu resolved=%d committed=%zu error=\"%s\"", n, resolved, committed, why);
  if (!resolved && st->conn) drop_connection(st, mysql_error(st->conn));
}

static int maria_append_transaction(maria_store *st, hubu_store_op **ops, size_t n) {
  if (n > st->entries_cap) {
    hubu_store_batch_entry *grown = realloc(st->entries, n * sizeof *grown);
    uint8_t *ex = grown ? realloc(st->exists, n) : NULL;
    if (grown) st->entries = grown;
    if (ex) st->exists = ex;
    uint64_t *fences = ex ? realloc(st->fences, n * sizeof *fences) : NULL;
    if (fences) st->fences = fences;
    hubu_store_op **fenced = fences ? realloc(st->fenced, n * sizeof *fenced) : NULL;
    if (fenced) st->fenced = fenced;
    uint64_t *epochs = fenced ? realloc(st->epochs, n * sizeof *epochs) : NULL;
    if (epochs) st->epochs = epochs;
    if (!grown || !ex || !fences || !fenced || !epochs) {
      for (size_t i = 0; i < n; i++) fail_op_plain(ops[i], "begin", "out of memory");
      return -1;
    }
    st->entries_cap = n;
  }
  if (ensure_connected(st) != 0) {
    for (size_t i = 0; i < n; i++) {
      ops[i]->status = HUBU_STORE_RETRY;
      snprintf(ops[i]->error, sizeof ops[i]->error, "database unreachable: %.130s", st->down_reason);
    }
    st->refused_while_down += n;
    return -1;
  }
  const char *why = "";
  char buf[200];
  txn_result r = TXN_FAILED;
  int row_by_row = 0;
  for (int attempt = 1; attempt <= TXN_ATTEMPTS + 1; attempt++) {
    r = append_attempt(st, ops, n, row_by_row, &why, buf, sizeof buf);
    if (r == TXN_DUPLICATE && !row_by_row) { /* a resent SEND in the batch: once more, row by row */
      row_by_row = 1;
      continue;
    }
    if (r != TXN_RETRY || attempt >= TXN_ATTEMPTS + row_by_row) break;
    hubu_log(HUBU_LOG_WARN, 0, NULL, "store_txn_retry", "backend=mariadb op=append attempt=%d error=\"%s\"", attempt,
             why);
  }
  if (r == TXN_OK) return 0;
  if (r == TXN_IN_DOUBT) {
    resolve_in_doubt(st, ops, n, why);
    return -1;
  }
  int lost = st->conn == NULL;
  hubu_store_status status = lost || r == TXN_RETRY ? HUBU_STORE_RETRY : HUBU_STORE_ERROR;
  hubu_log(status == HUBU_STORE_RETRY ? HUBU_LOG_WARN : HUBU_LOG_ERROR, 0, NULL, "store_error",
           "op=append batch=%zu retry=%d error=\"%s\"", n, status == HUBU_STORE_RETRY, why);
  for (size_t i = 0; i < n; i++) { /* rolled back: nothing of the batch was written */
    if (!ops[i]->append.msg) continue;
    ops[i]->status = status;
    snprintf(ops[i]->error, sizeof ops[i]->error, "append: %.148s", why);
  }
  return -1;
}

static int maria_append_batch(void *handle, hubu_store_op **ops, size_t n) {
  maria_store *st = handle;
  if (st->fsync != HUBU_FSYNC_ALWAYS) return maria_append_transaction(st, ops, n);
  int result = 0; /* always: each message is its own durable transaction */
  for (size_t i = 0; i < n; i++)
    if (maria_append_transaction(st, ops + i, 1) != 0) result = -1;
  return result;
}

/* ---- the other ops ---- */

/* Runs st->sql as a query and hands back its rows, or fails op. */
static MYSQL_RES *rows_or_fail(maria_store *st, hubu_store_op *op, const char *step) {
  MYSQL_RES *res = query_rows(st);
  if (!res) fail_op(st, op, step);
  return res;
}

/* Without claim, one read. With claim, one round trip ending in COMMIT, as
 * fence_raise: the log counter row changed (so claims and appends are
 * serialised, on Galera too), the device's epoch raised (its row made if
 * missing), then the highest client_id and the epoch read, COMMIT. */
static void device_load(maria_store *st, hubu_store_op *op) {
  hubu_store_device_load_op *load = &op->device_load;
  for (int attempt = 1;; attempt++) {
    sql_reset(st);
    int rc = 0;
    if (load->claim)
      rc |= sql_raw(st,
                    "START TRANSACTION;UPDATE log_counter SET claims = claims + 1 WHERE id = 1;"
                    "INSERT INTO devices(user_id, device_id, last_client_id, last_seen_ms, epoch) VALUES(") |
            sql_text(st, load->user) | sql_raw(st, ",") | sql_text(st, load->device) |
            sql_raw(st, ",0,0,1) ON DUPLICATE KEY UPDATE epoch = epoch + 1;");
    rc |= sql_raw(st, "SELECT (SELECT MAX(client_id) FROM messages WHERE sender = ") | sql_text(st, load->user) |
          sql_raw(st, " AND sender_device = ") | sql_text(st, load->device) |
          sql_raw(st, "), (SELECT epoch FROM devices WHERE user_id = ") | sql_text(st, load->user) |
          sql_raw(st, " AND device_id = ") | sql_text(st, load->device) | sql_raw(st, ")");
    if (load->claim) rc |= sql_raw(st, ";COMMIT");
    if (rc) {
      fail_op_plain(op, "device_load", "out of memory");
      return;
    }
    /* claim: START TRANSACTION, UPDATE, INSERT, the row, COMMIT; else the row alone */
    int rows = 0, ok = st->conn && mysql_real_query(st->conn, (const char *)hubu_buf_head(&st->sql),
                                                    (unsigned long)sql_len(st)) == 0;
    while (ok) {
      MYSQL_RES *res = mysql_store_result(st->conn);
      if (res) {
        MYSQL_ROW row = mysql_fetch_row(res);
        if (row && !rows++) {
          load->last_client_id = col_u64(row[0]); /* NULL (no message, no row) reads as 0 */
          load->epoch = col_u64(row[1]);
        }
        mysql_free_result(res);
      }
      int next = mysql_next_result(st->conn);
      if (next < 0) break;
      if (next > 0) ok = 0;
    }
    if (ok && rows == 1) {
      op->status = HUBU_STORE_OK;
      return;
    }
    if (ok) {
      fail_op_plain(op, "device_load", "no row read");
      return;
    }
    if (!load->claim) {
      fail_op(st, op, "select max(client_id)");
      return;
    }
    if (txn_again(st, op, attempt, "claim device")) continue;
    return;
  }
}

static void find_send(maria_store *st, hubu_store_op *op) {
  hubu_store_find_send_op *find = &op->find_send;
  sql_reset(st);
  if (sql_raw(st, "SELECT session_id, seq, msg_id FROM messages WHERE sender = ") | sql_text(st, find->user) |
      sql_raw(st, " AND sender_device = ") | sql_text(st, find->device) | sql_raw(st, " AND client_id = ") |
      sql_u64(st, find->client_id)) {
    fail_op_plain(op, "find_send", "out of memory");
    return;
  }
  MYSQL_RES *res = rows_or_fail(st, op, "select message");
  if (!res) return;
  MYSQL_ROW row = mysql_fetch_row(res);
  if (row) {
    unsigned long *len = mysql_fetch_lengths(res);
    copy_str(find->session_id, sizeof find->session_id, row[0], len[0]);
    find->seq = col_u64(row[1]);
    find->msg_id = col_u64(row[2]);
    op->status = HUBU_STORE_OK;
  } else {
    op->status = HUBU_STORE_NOT_FOUND;
  }
  mysql_free_result(res);
}

static void session_load(maria_store *st, hubu_store_op *op) {
  hubu_store_session_load_op *load = &op->session_load;
  sql_reset(st);
  if (sql_raw(st, "SELECT kind, max_seq, min_seq FROM sessions WHERE session_id = ") | sql_text(st, load->session_id)) {
    fail_op_plain(op, "session_load", "out of memory");
    return;
  }
  MYSQL_RES *res = rows_or_fail(st, op, "select session");
  if (!res) return;
  MYSQL_ROW row = mysql_fetch_row(res);
  if (!row) {
    mysql_free_result(res);
    op->status = HUBU_STORE_NOT_FOUND;
    return;
  }
  unsigned long *len = mysql_fetch_lengths(res);
  copy_str(load->kind, sizeof load->kind, row[0], len[0]);
  load->max_seq = col_u64(row[1]);
  load->min_seq = col_u64(row[2]);
  mysql_free_result(res);

  hubu_store_members_free(load);
  sql_reset(st);
  if (sql_raw(st, "SELECT user_id FROM members WHERE session_id = ") | sql_text(st, load->session_id) |
      sql_raw(st, " ORDER BY user_id")) {
    fail_op_plain(op, "list members", "out of memory");
    return;
  }
  if (!(res = rows_or_fail(st, op, "list members"))) return;
  my_ulonglong rows = mysql_num_rows(res);
  load->members = rows ? calloc((size_t)rows, sizeof *load->members) : NULL;
  if (rows && !load->members) {
    mysql_free_result(res);
    fail_op_plain(op, "list members", "out of memory");
    return;
  }
  while ((row = mysql_fetch_row(res))) {
    len = mysql_fetch_lengths(res);
    char *user = malloc(len[0] + 1);
    if (!user) break;
    memcpy(user, row[0], len[0]);
    user[len[0]] = '\0';
    load->members[load->n_members++] = user;
  }
  mysql_free_result(res);
  if (load->n_members != rows) {
    hubu_store_members_free(load);
    fail_op_plain(op, "list members", "out of memory");
    return;
  }
  op->status = HUBU_STORE_OK;
}

/* Adds "(session, user, role, now)" rows for members to st->sql. */
static int sql_member_rows(maria_store *st, const char *session_id, char *const *members, size_t n, const char *role,
                           uint64_t when_ms) {
  int rc = 0;
  for (size_t i = 0; i < n; i++)
    rc |= sql_raw(st, i ? ",(" : "(") | sql_text(st, session_id) | sql_raw(st, ",") | sql_text(st, members[i]) |
          sql_raw(st, ",") | sql_text(st, role) | sql_raw(st, ",") | sql_u64(st, when_ms) | sql_raw(st, ")");
  return rc;
}

static void session_create(maria_store *st, hubu_store_op *op) {
  hubu_store_session_create_op *create = &op->session_create;
  uint64_t now = wall_ms();
  if (!create->kind[0])
    copy_str(create->kind, sizeof create->kind, hubu_session_kind_of(create->session_id),
             strlen(hubu_session_kind_of(create->session_id)));
  const char *role = create->role[0] ? create->role : "member";
  for (int attempt = 1;; attempt++) {
    sql_reset(st);
    int rc =
        sql_raw(st, "START TRANSACTION;INSERT INTO sessions(session_id, kind, max_seq, min_seq, created_ms) VALUES(") |
        sql_text(st, create->session_id) | sql_raw(st, ",") | sql_text(st, create->kind) | sql_raw(st, ",0,0,") |
        sql_u64(st, now) | sql_raw(st, ")");
    if (create->n_members) {
      rc |= sql_raw(st, ";INSERT INTO members(session_id, user_id, role, joined_ms) VALUES") |
            sql_member_rows(st, create->session_id, create->members, create->n_members, role, now) |
            sql_raw(st, " ON DUPLICATE KEY UPDATE role = VALUES(role)");
    }
    rc |= sql_raw(st, ";COMMIT");
    if (rc) {
      fail_op_plain(op, "session_create", "out of memory");
      return;
    }
    int at;
    if (run_sql(st, &at) == 0) {
      op->status = HUBU_STORE_OK;
      return;
    }
    unsigned e = st->conn ? mysql_errno(st->conn) : CR_SERVER_GONE_ERROR;
    if (at == 1 && e == ER_DUP_ENTRY) {
      rollback(st);
      op->status = HUBU_STORE_EXISTS;
      return;
    }
    if (retry_transaction(e) && attempt < TXN_ATTEMPTS) {
      rollback(st);
      continue;
    }
    /* a lost connection during COMMIT leaves the outcome unknown; the caller may try again and meet EXISTS */
    fail_op(st, op,
            at == 0                        ? "begin"
            : at == 1                      ? "insert session"
            : at == 2 && create->n_members ? "insert members"
                                           : "commit");
    rollback(st);
    return;
  }
}

static void member_add(maria_store *st, hubu_store_op *op) {
  const hubu_store_member_op *member = &op->member;
  for (int attempt = 1;; attempt++) {
    sql_reset(st);
    if (sql_raw(st, "START TRANSACTION;SELECT 1 FROM sessions WHERE session_id = ") | sql_text(st, member->session_id) |
        sql_raw(st, " LOCK IN SHARE MODE")) {
      fail_op_plain(op, "member_add", "out of memory");
      return;
    }
    MYSQL_RES *res = NULL;
    int found = -1;
    if (st->conn &&
        mysql_real_query(st->conn, (const char *)hubu_buf_head(&st->sql), (unsigned long)sql_len(st)) == 0 &&
        mysql_next_result(st->conn) == 0 && (res = mysql_store_result(st->conn))) {
      found = mysql_fetch_row(res) != NULL;
      mysql_free_result(res);
    }
    if (found < 0) goto failed;
    if (!found) {
      rollback(st);
      op->status = HUBU_STORE_NOT_FOUND;
      return;
    }
    /* An existing member keeps its role unless a role is given. */
    sql_reset(st);
    char *users[1] = {(char *)member->user};
    if (sql_raw(st, "INSERT INTO members(session_id, user_id, role, joined_ms) VALUES") |
        sql_member_rows(st, member->session_id, users, 1, member->role[0] ? member->role : "member", wall_ms()) |
        sql_raw(st, member->role[0] ? " ON DUPLICATE KEY UPDATE role = VALUES(role);COMMIT"
                                    : " ON DUPLICATE KEY UPDATE user_id = user_id;COMMIT")) {
      rollback(st);
      fail_op_plain(op, "member_add", "out of memory");
      return;
    }
    int at;
    if (run_sql(st, &at) == 0) {
      op->status = HUBU_STORE_OK;
      return;
    }
  failed:
    if (txn_again(st, op, attempt, "insert member")) continue;
    return;
  }
}

static void member_remove(maria_store *st, hubu_store_op *op) {
  sql_reset(st);
  int at;
  if (sql_raw(st, "DELETE FROM members WHERE session_id = ") | sql_text(st, op->member.session_id) |
      sql_raw(st, " AND user_id = ") | sql_text(st, op->member.user)) {
    fail_op_plain(op, "member_remove", "out of memory");
    return;
  }
  if (run_sql(st, &at) != 0) {
    fail_op(st, op, "delete member");
    return;
  }
  op->status = st->affected ? HUBU_STORE_OK : HUBU_STORE_NOT_FOUND;
}

/* Makes a message of a row: seq, msg_id, sender, sender_device, client_id,
 * content_type, body, meta, server_time_ms from column first on. */
static hubu_msg *row_msg(MYSQL_ROW row, const unsigned long *len, int first, const char *session_id) {
  char sender[HUBU_ID_MAX + 1], device[HUBU_ID_MAX + 1], ctype[256];
  copy_str(sender, sizeof sender, row[first + 2], len[first + 2]);
  copy_str(device, sizeof device, row[first + 3], len[first + 3]);
  copy_str(ctype, sizeof ctype, row[first + 5], len[first + 5]);
  return hubu_msg_new(session_id, col_u64(row[first]), col_u64(row[first + 1]), sender, device, col_u64(row[first + 4]),
                      (const uint8_t *)row[first + 6], len[first + 6], ctype, (const uint8_t *)row[first + 7],
                      row[first + 7] ? len[first + 7] : 0, col_u64(row[first + 8]));
}

static void log_read(maria_store *st, hubu_store_op *op) {
  hubu_store_log_read_op *log_op = &op->log_read;
  uint32_t limit = log_op->limit ? log_op->limit : HUBU_STORE_PAGE_DEFAULT;
  if (limit > HUBU_STORE_PAGE_MAX) limit = HUBU_STORE_PAGE_MAX;
  log_op->msgs = calloc(limit, sizeof *log_op->msgs);
  log_op->n_msgs = 0;
  if (!log_op->msgs) {
    fail_op_plain(op, "log_read", "out of memory");
    return;
  }
  sql_reset(st);
  if (sql_raw(st, "SELECT last_pos FROM log_counter WHERE id = 1")) goto oom;
  MYSQL_RES *res = rows_or_fail(st, op, "select max(log_pos)");
  if (!res) return;
  MYSQL_ROW row = mysql_fetch_row(res);
  log_op->max_pos = row ? col_u64(row[0]) : 0;
  mysql_free_result(res);
  sql_reset(st);
  if (sql_raw(st,
              "SELECT log_pos, session_id, seq, msg_id, sender, sender_device, client_id, content_type, body, meta,"
              " server_time_ms FROM messages WHERE log_pos > ") |
      sql_u64(st, log_op->after_pos) | sql_printf(st, " ORDER BY log_pos LIMIT %u", limit + 1))
    goto oom;
  if (!(res = rows_or_fail(st, op, "select log"))) return;
  while ((row = mysql_fetch_row(res))) {
    if (log_op->n_msgs == limit) {
      log_op->has_more = 1;
      break;
    }
    unsigned long *len = mysql_fetch_lengths(res);
    char sid[HUBU_SESSION_ID_MAX + 1];
    copy_str(sid, sizeof sid, row[1], len[1]);
    hubu_msg *m = row_msg(row, len, 2, sid);
    if (!m) break;
    m->log_pos = col_u64(row[0]);
    log_op->msgs[log_op->n_msgs++] = m;
  }
  int short_read = row && !log_op->has_more;
  mysql_free_result(res);
  if (short_read) {
    for (size_t i = 0; i < log_op->n_msgs; i++) hubu_msg_unref(log_op->msgs[i]);
    log_op->n_msgs = 0;
    log_op->has_more = 0;
    goto oom;
  }
  op->status = HUBU_STORE_OK;
  return;
oom:
  fail_op_plain(op, "log_read", "out of memory");
}

/* A block of seqs above every one leased or stored for the session and its
 * fence (store.h). The lease row is made first (INSERT IGNORE) and then locked, so
 * two nodes leasing a new session queue on its row instead of deadlocking
 * on a gap lock; every writer of the session's block serialises there. */
static void seq_lease(maria_store *st, hubu_store_op *op) {
  hubu_store_seq_lease_op *lease = &op->seq_lease;
  uint32_t count = lease->count ? lease->count : 1;
  for (int attempt = 1;; attempt++) {
    sql_reset(st);
    if (sql_raw(st, "START TRANSACTION;INSERT IGNORE INTO seq_leases(session_id, leased_until) VALUES(") |
        sql_text(st, lease->session_id) | sql_raw(st, ",0);SELECT leased_until FROM seq_leases WHERE session_id = ") |
        sql_text(st, lease->session_id) | sql_raw(st, " FOR UPDATE;SELECT MAX(seq) FROM messages WHERE session_id = ") |
        sql_text(st, lease->session_id) | sql_raw(st, ";SELECT fence_seq FROM sessions WHERE session_id = ") |
        sql_text(st, lease->session_id)) {
      fail_op_plain(op, "seq_lease", "out of memory");
      return;
    }
    /* five results: START TRANSACTION, INSERT, then the three rows (lease, max seq, fence) */
    uint64_t got[3] = {0, 0, 0};
    int rows = 0, ok = st->conn && mysql_real_query(st->conn, (const char *)hubu_buf_head(&st->sql),
                                                    (unsigned long)sql_len(st)) == 0;
    while (ok) {
      MYSQL_RES *res = mysql_store_result(st->conn);
      if (res) {
        MYSQL_ROW row = mysql_fetch_row(res);
        if (rows < 3) got[rows++] = row ? col_u64(row[0]) : 0;
        mysql_free_result(res);
      }
      int next = mysql_next_result(st->conn);
      if (next < 0) break;
      if (next > 0) ok = 0;
    }
    if (ok && rows == 3) {
      uint64_t top = lease->floor;
      if (got[0] > top) top = got[0];
      if (got[1] > top) top = got[1];
      if (got[2] > top) top = got[2];
      if (top > UINT64_MAX - count) {
        rollback(st);
        fail_op_plain(op, "seq_lease", "no seqs left for the session");
        return;
      }
      sql_reset(st);
      int at;
      if (sql_raw(st, "UPDATE seq_leases SET leased_until = ") | sql_u64(st, top + count) |
          sql_raw(st, " WHERE session_id = ") | sql_text(st, lease->session_id) | sql_raw(st, ";COMMIT")) {
        rollback(st);
        fail_op_plain(op, "seq_lease", "out of memory");
        return;
      }
      if (run_sql(st, &at) == 0) {
        lease->lo = top + 1;
        lease->hi = top + count;
        op->status = HUBU_STORE_OK;
        return;
      }
    }
    if (txn_again(st, op, attempt, "seq_lease")) continue;
    return;
  }
}

/* A plugin's durable key/value (im.kv). */
static void kv(maria_store *st, hubu_store_op *op) {
  hubu_store_kv_op *kv_op = &op->kv;
  const char *key = kv_op->key ? kv_op->key : "";
  sql_reset(st);
  int rc;
  if (op->kind == HUBU_STORE_KV_GET)
    rc = sql_raw(st, "SELECT value FROM kv WHERE plugin = ") | sql_text(st, kv_op->plugin) |
         sql_raw(st, " AND `key` = ") | sql_text(st, key);
  else if (op->kind == HUBU_STORE_KV_SET)
    rc = sql_raw(st, "INSERT INTO kv(plugin, `key`, value) VALUES(") | sql_text(st, kv_op->plugin) | sql_raw(st, ",") |
         sql_text(st, key) | sql_raw(st, ",") | sql_bytes(st, kv_op->value, kv_op->value_len) |
         sql_raw(st, ") ON DUPLICATE KEY UPDATE value = VALUES(value)");
  else
    rc = sql_raw(st, "DELETE FROM kv WHERE plugin = ") | sql_text(st, kv_op->plugin) | sql_raw(st, " AND `key` = ") |
         sql_text(st, key);
  if (rc) {
    fail_op_plain(op, hubu_store_op_name(op->kind), "out of memory");
    return;
  }
  if (op->kind != HUBU_STORE_KV_GET) {
    int at;
    if (run_sql(st, &at) != 0) {
      fail_op(st, op, hubu_store_op_name(op->kind));
      return;
    }
    op->status = op->kind == HUBU_STORE_KV_DELETE && !st->affected ? HUBU_STORE_NOT_FOUND : HUBU_STORE_OK;
    return;
  }
  MYSQL_RES *res = rows_or_fail(st, op, "kv_get");
  if (!res) return;
  MYSQL_ROW row = mysql_fetch_row(res);
  if (!row) {
    op->status = HUBU_STORE_NOT_FOUND;
  } else {
    unsigned long *len = mysql_fetch_lengths(res);
    kv_op->value = malloc(len[0] ? len[0] : 1);
    if (kv_op->value) {
      if (len[0]) memcpy(kv_op->value, row[0], len[0]);
      kv_op->value_len = len[0];
      op->status = HUBU_STORE_OK;
    } else {
      fail_op_plain(op, "kv_get", "out of memory");
    }
  }
  mysql_free_result(res);
}

/* The page seq > after_seq, at most limit, into pull_op->msgs (limit slots,
 * emptied first), has_more when a row follows. 0, or -1 (the page is empty)
 * with *oom set when memory ran out, else the connection's error. */
static int read_page(maria_store *st, hubu_store_pull_op *pull_op, uint32_t limit, int *oom) {
  hubu_store_pull_keep(pull_op, 0);
  pull_op->has_more = 0;
  *oom = 0;
  sql_reset(st);
  if (sql_raw(st,
              "SELECT seq, msg_id, sender, sender_device, client_id, content_type, body, meta, server_time_ms"
              " FROM messages WHERE session_id = ") |
      sql_text(st, pull_op->session_id) | sql_raw(st, " AND seq > ") | sql_u64(st, pull_op->after_seq) |
      sql_printf(st, " ORDER BY seq LIMIT %u", limit + 1)) {
    *oom = 1;
    return -1;
  }
  MYSQL_RES *res = query_rows(st);
  if (!res) return -1;
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res))) {
    if (pull_op->n_msgs == limit) {
      pull_op->has_more = 1;
      break;
    }
    hubu_msg *m = row_msg(row, mysql_fetch_lengths(res), 0, pull_op->session_id);
    if (!m) {
      *oom = 1;
      break;
    }
    pull_op->msgs[pull_op->n_msgs++] = m; /* refs = 1, handed to the loop thread with the op */
  }
  mysql_free_result(res);
  if (!*oom) return 0;
  hubu_store_pull_keep(pull_op, 0);
  pull_op->has_more = 0;
  return -1;
}

/* A session's fence and highest stored seq (0 for none), in one statement. 0,
 * or -1 with *oom, else the connection's error. */
static int pull_state(maria_store *st, const char *session_id, uint64_t *fence, uint64_t *top, int *oom) {
  *oom = 0;
  sql_reset(st);
  if (sql_raw(st, "SELECT (SELECT fence_seq FROM sessions WHERE session_id = ") | sql_text(st, session_id) |
      sql_raw(st, "), (SELECT MAX(seq) FROM messages WHERE session_id = ") | sql_text(st, session_id) |
      sql_raw(st, ")")) {
    *oom = 1;
    return -1;
  }
  MYSQL_RES *res = query_rows(st);
  if (!res) return -1;
  MYSQL_ROW row = mysql_fetch_row(res);
  *fence = row ? col_u64(row[0]) : 0; /* NULL reads as 0 */
  *top = row ? col_u64(row[1]) : 0;
  mysql_free_result(res);
  return 0;
}

/* Raises a session's fence to at least to. One round trip: begin, lock the
 * log counter row by changing it (every append holds that lock from its
 * first round trip to its COMMIT, so the two are serialised; and the row
 * changes, as an append's does, so that Galera's certification, which sees
 * writes and not locks, orders a raise and an append on two nodes as it
 * orders two appends), raise, COMMIT. The server runs it to the end without
 * waiting on this client, so a node stopped mid-way never holds the lock
 * appends need. 0, or -1 with *oom, else the connection's error (the caller
 * rolls back: a statement that failed left the rest unrun). */
static int fence_raise(maria_store *st, const char *session_id, uint64_t to, int *oom) {
  *oom = 0;
  for (int attempt = 1;; attempt++) {
    sql_reset(st);
    if (sql_raw(st,
                "START TRANSACTION;UPDATE log_counter SET fences = fences + 1 WHERE id = 1;"
                "UPDATE sessions SET fence_seq = GREATEST(fence_seq, ") |
        sql_u64(st, to) | sql_raw(st, ") WHERE session_id = ") | sql_text(st, session_id) | sql_raw(st, ";COMMIT")) {
      *oom = 1;
      return -1;
    }
    int at;
    if (run_sql(st, &at) == 0) return 0;
    if (!st->conn || !retry_transaction(mysql_errno(st->conn)) || attempt >= TXN_ATTEMPTS) return -1;
    hubu_log(HUBU_LOG_WARN, 0, NULL, "store_txn_retry",
             "backend=mariadb op=fence session=%s attempt=%d error=\"%u %s\"", session_id, attempt,
             st->conn ? mysql_errno(st->conn) : 0, st->conn ? mysql_error(st->conn) : "no connection");
    rollback(st);
  }
}

/* PULL with settle_ms: the page up to the committed watermark (store.h). The
 * fence is read before the page: a seq at or below it that the page lacks
 * was never stored, and never will be (an append that committed before the
 * fence was raised is seen by any read that starts after the fence is). */
static void pull_settled(maria_store *st, hubu_store_op *op, uint32_t limit) {
  hubu_store_pull_op *pull_op = &op->pull;
  uint64_t fence = 0, top = 0;
  int oom = 0;
  const char *step = "select fence";
  if (pull_state(st, pull_op->session_id, &fence, &top, &oom) != 0) goto fail;
  step = "select messages";
  if (read_page(st, pull_op, limit, &oom) != 0) goto fail;
  hubu_store_pull_walk walk;
  hubu_store_pull_walk_page(pull_op, fence, fence, wall_ms(), 1, &walk);
  if (walk.raise_to > fence) {
    uint64_t before = fence;
    step = "raise fence";
    if (fence_raise(st, pull_op->session_id, walk.raise_to, &oom) != 0) goto fail;
    /* a row may have landed in a hole before the fence: read again, and prove by the fence alone */
    step = "select fence";
    if (pull_state(st, pull_op->session_id, &fence, &top, &oom) != 0) goto fail;
    step = "select messages";
    if (read_page(st, pull_op, limit, &oom) != 0) goto fail;
    hubu_store_pull_walk_page(pull_op, fence, before, wall_ms(), 0, &walk);
  }
  hubu_store_pull_settled(op, &walk, top);
  return;
fail:
  if (oom)
    fail_op_plain(op, "pull", "out of memory");
  else
    fail_op(st, op, step);
  rollback(st);
  hubu_store_pull_keep(pull_op, 0);
  pull_op->has_more = 0;
}

/* Also fills max_seq, for PullResult.max_seq. */
static void pull(maria_store *st, hubu_store_op *op) {
  hubu_store_pull_op *pull_op = &op->pull;
  uint32_t limit;
  if (hubu_store_pull_begin(op, &limit) != 0) return;
  if (pull_op->settle_ms) {
    pull_settled(st, op, limit);
    return;
  }
  int oom = 0;
  MYSQL_RES *res = NULL;
  if (read_page(st, pull_op, limit, &oom) != 0) {
    if (oom)
      fail_op_plain(op, "pull", "out of memory");
    else
      fail_op(st, op, "select messages");
    return;
  }
  sql_reset(st);
  if (sql_raw(st, "SELECT MAX(seq) FROM messages WHERE session_id = ") | sql_text(st, pull_op->session_id)) {
    fail_op_plain(op, "pull", "out of memory");
  } else if ((res = rows_or_fail(st, op, "select max(seq)"))) {
    MYSQL_ROW row = mysql_fetch_row(res);
    pull_op->max_seq = row ? col_u64(row[0]) : 0;
    mysql_free_result(res);
    op->status = HUBU_STORE_OK;
    return;
  }
  hubu_store_pull_keep(pull_op, 0);
  pull_op->has_more = 0;
}

static void sync_sessions(maria_store *st, hubu_store_op *op) {
  hubu_store_sync_op *sync_op = &op->sync;
  free(sync_op->states);
  sync_op->states = NULL;
  sync_op->n_states = 0;
  sql_reset(st);
  if (sql_raw(st,
              "SELECT s.session_id, s.max_seq, s.min_seq, s.kind FROM members m JOIN sessions s"
              " ON s.session_id = m.session_id WHERE m.user_id = ") |
      sql_text(st, sync_op->user) | sql_raw(st, " ORDER BY s.session_id")) {
    fail_op_plain(op, "sync", "out of memory");
    return;
  }
  MYSQL_RES *res = rows_or_fail(st, op, "select sessions");
  if (!res) return;
  my_ulonglong rows = mysql_num_rows(res);
  if (rows && !(sync_op->states = calloc((size_t)rows, sizeof *sync_op->states))) {
    mysql_free_result(res);
    fail_op_plain(op, "sync", "out of memory");
    return;
  }
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res))) {
    unsigned long *len = mysql_fetch_lengths(res);
    hubu_store_session_state *s = &sync_op->states[sync_op->n_states++];
    copy_str(s->session_id, sizeof s->session_id, row[0], len[0]);
    s->max_seq = col_u64(row[1]);
    s->min_seq = col_u64(row[2]);
    copy_str(s->kind, sizeof s->kind, row[3], len[3]);
  }
  mysql_free_result(res);
  op->status = HUBU_STORE_OK;
}

static void cursors_save(maria_store *st, hubu_store_op *op) {
  if (!op->cursors_save.n_cursors) {
    op->status = HUBU_STORE_OK;
    return;
  }
  sql_reset(st);
  int rc = sql_raw(st, "INSERT INTO cursors(user_id, device_id, session_id, delivered_seq) VALUES");
  for (size_t i = 0; i < op->cursors_save.n_cursors; i++) {
    const hubu_store_cursor *c = &op->cursors_save.cursors[i];
    rc |= sql_raw(st, i ? ",(" : "(") | sql_text(st, c->user) | sql_raw(st, ",") | sql_text(st, c->device) |
          sql_raw(st, ",") | sql_text(st, c->session_id) | sql_raw(st, ",") | sql_u64(st, c->delivered_seq) |
          sql_raw(st, ")");
  }
  rc |= sql_raw(st, " ON DUPLICATE KEY UPDATE delivered_seq = GREATEST(delivered_seq, VALUES(delivered_seq))");
  if (rc) {
    fail_op_plain(op, "cursors_save", "out of memory");
    return;
  }
  for (int attempt = 1;; attempt++) {
    int at;
    if (run_sql(st, &at) == 0) {
      op->status = HUBU_STORE_OK;
      return;
    }
    if (!st->conn || !retry_transaction(mysql_errno(st->conn)) || attempt >= TXN_ATTEMPTS) break;
  }
  fail_op(st, op, "upsert cursors");
}

static void maria_execute(void *handle, hubu_store_op *op) {
  maria_store *st = handle;
  op->error[0] = '\0';
  if (op->kind == HUBU_STORE_APPEND) {
    maria_append_batch(st, &op, 1);
    return;
  }
  if (connected_or_refuse(st, op) != 0) return;
  switch (op->kind) {
    case HUBU_STORE_APPEND: return;
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

/* ---- health ---- */

static const char *maria_health(void *handle, char *buf, size_t size) {
  maria_store *st = handle;
  if (!st->down) return NULL;
  snprintf(buf, size, "database unreachable for %" PRIu64 " ms: %s", now_ms() - st->down_since_ms, st->down_reason);
  return buf;
}

/* Idle: while down, try again when the backoff allows; the ms until the
 * next try, or -1 when connected. */
static long maria_idle(void *handle) {
  maria_store *st = handle;
  if (!st->down) return -1;
  ensure_connected(st);
  if (!st->down) return -1;
  uint64_t now = now_ms();
  return st->next_attempt_ms > now ? (long)(st->next_attempt_ms - now) : 1;
}

const hubu_store_backend hubu_store_mariadb = {
    .name = "mariadb",
    .scheme = HUBU_MARIADB_SCHEME,
    .open = maria_open,
    .close = maria_close,
    .append_batch = maria_append_batch,
    .execute = maria_execute,
    .health = maria_health,
    .idle = maria_idle,
};

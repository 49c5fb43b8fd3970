/* hubuctl_store.c — `hubuctl store copy`: copies a whole store into another
 * one, typically the embedded SQLite file into MariaDB when a deployment
 * outgrows it (docs/store.md). Either side may be sqlite:PATH or
 * mariadb://...: the same code reads and writes both.
 *
 * The source is read in one read transaction, a snapshot (SQLite in WAL mode
 * lets hubud write meanwhile; MariaDB gives a consistent snapshot), so a run
 * copies the store as it was when the run began, and the next run catches
 * up. The destination is first opened through its store backend, which makes
 * or migrates its schema exactly as hubud does; the rows are then written
 * over a connection of this tool's own.
 *
 * messages: in log_pos order, in chunks, each chunk one transaction on the
 * destination (which on MariaDB also raises log_counter), every column kept
 * as it is. A run goes on after the destination's MAX(log_pos), once the row
 * there is found identical on both sides and the counts up to it agree;
 * anything else is another store's data, and is refused.
 * sessions, members, devices, cursors, kv: read in primary-key order; each
 * chunk replaces the destination's rows in its key range, so every run
 * leaves them equal to the source (rows the source no longer has go too).
 * Then MariaDB's log_counter is set to MAX(log_pos), and each table's row
 * count and per-column sums (the low and high 32 bits of integers; byte
 * lengths, CRC-32s and NULLs of strings) are compared on both sides.
 *
 * Never prints a password: a mariadb:// URL is shown only once it parses,
 * through hubu_mariadb_url_redact. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <mysql.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "mariadb_url.h"
#include "store.h"

int hubuctl_store(int argc, char **argv);

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_MISMATCH 3
#define EXIT_STOPPED 4

#define CHUNK_ROWS_DEFAULT 1000
#define CHUNK_ROWS_MAX 100000
#define CHUNK_BYTES_MAX ((size_t)32 << 20) /* a chunk ends early past this many bytes of strings */
#define STATEMENT_TARGET ((size_t)4 << 20) /* MariaDB multi-row INSERTs are cut near this size */
#define PROGRESS_EVERY_MS 2000
#define BUSY_TIMEOUT_MS 10000 /* SQLite: wait this long for another process's lock */
#define MARIADB_CONNECT_TIMEOUT_S 10
#define MARIADB_IO_TIMEOUT_S 3600 /* the sums of a large table take a while */
#define SQLITE_SCHEME "sqlite:"
#define SQLITE_LOG_POS_VERSION 2 /* store_sqlite.c's migration that made messages.log_pos */

/* ---- the tables (store.h) ---- */

typedef enum { COL_INT, COL_TEXT, COL_BLOB } col_kind;

typedef struct {
  const char *name;
  col_kind kind;
} column;

#define MAX_COLS 11

typedef struct {
  const char *name;
  int n_cols;
  int n_key; /* the first n_key columns are the primary key */
  column cols[MAX_COLS];
} table;

static const table tables[] = {
    {"messages",
     11,
     1,
     {{"log_pos", COL_INT},
      {"session_id", COL_TEXT},
      {"seq", COL_INT},
      {"msg_id", COL_INT},
      {"sender", COL_TEXT},
      {"sender_device", COL_TEXT},
      {"client_id", COL_INT},
      {"content_type", COL_TEXT},
      {"body", COL_BLOB},
      {"meta", COL_BLOB},
      {"server_time_ms", COL_INT}}},
    {"sessions",
     6,
     1,
     {{"session_id", COL_TEXT},
      {"kind", COL_TEXT},
      {"max_seq", COL_INT},
      {"min_seq", COL_INT},
      {"created_ms", COL_INT},
      {"meta", COL_BLOB}}},
    {"members", 4, 2, {{"session_id", COL_TEXT}, {"user_id", COL_TEXT}, {"role", COL_TEXT}, {"joined_ms", COL_INT}}},
    {"devices",
     4,
     2,
     {{"user_id", COL_TEXT}, {"device_id", COL_TEXT}, {"last_client_id", COL_INT}, {"last_seen_ms", COL_INT}}},
    {"cursors",
     4,
     3,
     {{"user_id", COL_TEXT}, {"device_id", COL_TEXT}, {"session_id", COL_TEXT}, {"delivered_seq", COL_INT}}},
    {"kv", 3, 2, {{"plugin", COL_TEXT}, {"key", COL_TEXT}, {"value", COL_BLOB}}},
};
#define N_TABLES ((int)(sizeof tables / sizeof tables[0]))
#define MESSAGES (&tables[0])

/* ---- growable text ---- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom; /* an append failed: the text is incomplete */
} sbuf;

static void sb_reset(sbuf *b) {
  b->len = 0;
  b->oom = 0;
  if (b->p) b->p[0] = '\0';
}

/* Room for n more bytes and a NUL; NULL (and oom set) when memory runs out. */
static char *sb_reserve(sbuf *b, size_t n) {
  if (b->oom) return NULL;
  if (n > SIZE_MAX / 4 - b->len) {
    b->oom = 1;
    return NULL;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return NULL;
    }
    b->p = p;
    b->cap = cap;
  }
  return b->p + b->len;
}

static void sb_add(sbuf *b, const void *s, size_t n) {
  char *w = sb_reserve(b, n);
  if (!w) return;
  if (n) memcpy(w, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->oom = 1;
    return;
  }
  sb_add(b, tmp, (size_t)n);
}

static void sb_free(sbuf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* ---- rows read, held until written ---- */

typedef struct {
  int null;
  uint64_t u;      /* COL_INT */
  size_t off, len; /* COL_TEXT, COL_BLOB: the bytes, in the chunk's bytes */
} cell;

typedef struct {
  const table *t;
  cell *cells; /* rows * t->n_cols */
  size_t rows, cap_rows;
  sbuf bytes;
} chunk;

static void chunk_reset(chunk *c, const table *t) {
  c->t = t;
  c->rows = 0;
  sb_reset(&c->bytes);
}

static void chunk_free(chunk *c) {
  free(c->cells);
  sb_free(&c->bytes);
  memset(c, 0, sizeof *c);
}

/* A new row, its cells zeroed: its index, or -1 when memory runs out. */
static long chunk_add_row(chunk *c) {
  if (c->rows == c->cap_rows) {
    size_t cap = c->cap_rows ? c->cap_rows * 2 : 64;
    cell *cells = realloc(c->cells, cap * (size_t)c->t->n_cols * sizeof *cells);
    if (!cells) return -1;
    c->cells = cells;
    c->cap_rows = cap;
  }
  memset(c->cells + c->rows * (size_t)c->t->n_cols, 0, (size_t)c->t->n_cols * sizeof *c->cells);
  return (long)c->rows++;
}

static cell *chunk_row(const chunk *c, size_t r) { return c->cells + r * (size_t)c->t->n_cols; }

static const char *cell_bytes(const chunk *c, const cell *x) { return c->bytes.p ? c->bytes.p + x->off : ""; }

static void cell_set_bytes(chunk *c, size_t r, int col, const void *p, size_t n) {
  cell *x = chunk_row(c, r) + col;
  x->off = c->bytes.len;
  x->len = n;
  sb_add(&c->bytes, p, n);
}

/* Replaces dst's rows with a copy of src's row r. 0, or -1 out of memory. */
static int chunk_keep_row(chunk *dst, const chunk *src, size_t r) {
  chunk_reset(dst, src->t);
  long k = chunk_add_row(dst);
  if (k < 0) return -1;
  for (int i = 0; i < src->t->n_cols; i++) {
    const cell *x = chunk_row(src, r) + i;
    *(chunk_row(dst, 0) + i) = *x;
    if (src->t->cols[i].kind != COL_INT && !x->null) cell_set_bytes(dst, 0, i, cell_bytes(src, x), x->len);
  }
  return dst->bytes.oom ? -1 : 0;
}

static int cells_equal(const chunk *a, const cell *x, const chunk *b, const cell *y, col_kind k) {
  if (x->null || y->null) return x->null == y->null;
  if (k == COL_INT) return x->u == y->u;
  return x->len == y->len && memcmp(cell_bytes(a, x), cell_bytes(b, y), x->len) == 0;
}

/* ---- CRC-32 (IEEE, as zlib and MariaDB's CRC32()), for SQLite ---- */

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc32_bytes(const unsigned char *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

static void sqlite_crc32(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
    sqlite3_result_null(ctx);
    return;
  }
  const unsigned char *p = sqlite3_value_blob(argv[0]);
  size_t n = (size_t)sqlite3_value_bytes(argv[0]);
  sqlite3_result_int64(ctx, (sqlite3_int64)crc32_bytes(p ? p : (const unsigned char *)"", n));
}

/* ---- one side of the copy: a connection to a store ---- */

typedef struct {
  const char *role; /* "source", "destination" */
  const char *url;
  char shown[512]; /* the URL as printed: the password redacted */
  int maria;
  sqlite3 *lite;
  MYSQL *my;
  unsigned long max_packet; /* MariaDB's max_allowed_packet */
  sqlite3_stmt *rd;         /* the read in progress */
  MYSQL_RES *res;
  sqlite3_stmt *insert[N_TABLES]; /* SQLite destination */
  sbuf sql;
  char err[600];
} side;

/* The URL as it may be printed: a sqlite: one as it is, a mariadb:// URL
 * with its password replaced, or only its scheme when it does not parse
 * (the password would not be found, so it would not be hidden); any other
 * not at all. */
static void show_url(const char *url, char *out, size_t size) {
  if (!strncmp(url, SQLITE_SCHEME, strlen(SQLITE_SCHEME))) {
    snprintf(out, size, "%s", url);
    return;
  }
  if (strncmp(url, HUBU_MARIADB_SCHEME, strlen(HUBU_MARIADB_SCHEME)) != 0) {
    snprintf(out, size, "(a URL of another scheme, not shown)");
    return;
  }
  hubu_mariadb_url parsed;
  char err[256];
  int ok = hubu_mariadb_url_parse(url, &parsed, err, sizeof err) == 0;
  explicit_bzero(&parsed, sizeof parsed);
  if (!ok)
    snprintf(out, size, "%s(malformed URL, not shown)", HUBU_MARIADB_SCHEME);
  else
    hubu_mariadb_url_redact(url, out, size);
}

/* Fills s->err with what failed and the connection's error; returns -1. */
static int side_fail(side *s, const char *what) {
  if (s->maria)
    snprintf(s->err, sizeof s->err, "%s: %u %s", what, s->my ? mysql_errno(s->my) : 0,
             s->my ? mysql_error(s->my) : "no connection");
  else
    snprintf(s->err, sizeof s->err, "%s: %s", what, s->lite ? sqlite3_errmsg(s->lite) : "not open");
  return -1;
}

static int side_fail_text(side *s, const char *what, const char *why) {
  snprintf(s->err, sizeof s->err, "%s: %s", what, why);
  return -1;
}

static int maria_connect(side *s) {
  hubu_mariadb_url u;
  if (hubu_mariadb_url_parse(s->url, &u, s->err, sizeof s->err) != 0 ||
      hubu_mariadb_url_password(&u, s->err, sizeof s->err) != 0) {
    explicit_bzero(&u, sizeof u);
    return -1;
  }
  s->my = mysql_init(NULL);
  if (!s->my) {
    explicit_bzero(&u, sizeof u);
    return side_fail_text(s, "connect", "out of memory");
  }
  unsigned connect_s = u.connect_timeout_s ? u.connect_timeout_s : MARIADB_CONNECT_TIMEOUT_S;
  unsigned io_s = MARIADB_IO_TIMEOUT_S;
  my_bool no = 0;
  mysql_optionsv(s->my, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
  mysql_optionsv(s->my, MYSQL_OPT_READ_TIMEOUT, &io_s);
  mysql_optionsv(s->my, MYSQL_OPT_WRITE_TIMEOUT, &io_s);
  mysql_optionsv(s->my, MYSQL_OPT_RECONNECT, &no); /* a silent reconnect would lose the transaction */
  mysql_optionsv(s->my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  const char *host = u.socket[0] ? NULL : u.host;
  const char *socket = u.socket[0] ? u.socket : NULL;
  MYSQL *ok =
      mysql_real_connect(s->my, host, u.user, u.has_password ? u.password : NULL, u.database, u.port, socket, 0);
  explicit_bzero(&u, sizeof u);
  if (!ok) return side_fail(s, "connect");
  const char *setup =
      "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO',"
      " SESSION time_zone = '+00:00'";
  if (mysql_real_query(s->my, setup, strlen(setup)) != 0) return side_fail(s, "session setup");
  const char *packet = "SELECT @@max_allowed_packet";
  MYSQL_RES *res = NULL;
  if (mysql_real_query(s->my, packet, strlen(packet)) != 0 || !(res = mysql_store_result(s->my)))
    return side_fail(s, "read max_allowed_packet");
  MYSQL_ROW row = mysql_fetch_row(res);
  s->max_packet = row && row[0] ? strtoul(row[0], NULL, 10) : 0;
  mysql_free_result(res);
  if (s->max_packet < 65536) s->max_packet = 65536;
  return 0;
}

static int lite_open(side *s, int readonly) {
  const char *path = s->url + strlen(SQLITE_SCHEME);
  struct stat st;
  if (readonly && stat(path, &st) != 0) {
    snprintf(s->err, sizeof s->err, "%s: %s", path, strerror(errno));
    return -1;
  }
  int rc = sqlite3_open_v2(path, &s->lite, readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE, NULL);
  if (rc != SQLITE_OK) {
    snprintf(s->err, sizeof s->err, "open %s: %s", path, s->lite ? sqlite3_errmsg(s->lite) : sqlite3_errstr(rc));
    return -1;
  }
  sqlite3_extended_result_codes(s->lite, 1);
  sqlite3_busy_timeout(s->lite, BUSY_TIMEOUT_MS);
  if (sqlite3_create_function(s->lite, "crc32", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sqlite_crc32, NULL,
                              NULL) != SQLITE_OK)
    return side_fail(s, "register crc32");
  return 0;
}

/* Runs a statement whose rows, if any, are not wanted. */
static int run_sql(side *s, const char *sql, size_t len, const char *what) {
  if (s->maria) {
    if (mysql_real_query(s->my, sql, (unsigned long)len) != 0) return side_fail(s, what);
    MYSQL_RES *res = mysql_store_result(s->my);
    if (res) mysql_free_result(res);
    return 0;
  }
  char *msg = NULL;
  if (sqlite3_exec(s->lite, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
  snprintf(s->err, sizeof s->err, "%s: %s", what, msg ? msg : sqlite3_errmsg(s->lite));
  sqlite3_free(msg);
  return -1;
}

static int run_text(side *s, const char *sql, const char *what) { return run_sql(s, sql, strlen(sql), what); }

/* The values SQLite binds in place of the '?'s of a statement, in order. */
typedef struct {
  const chunk *c;
  const cell *x;
  col_kind kind;
} bindref;

typedef struct {
  bindref refs[32];
  int n;
} bindlist;

static int bind_cell(sqlite3_stmt *st, int i, const chunk *c, const cell *x, col_kind kind) {
  if (x->null) return sqlite3_bind_null(st, i);
  if (kind == COL_INT) return sqlite3_bind_int64(st, i, (sqlite3_int64)x->u); /* as the backend stores u64 */
  if (kind == COL_TEXT) return sqlite3_bind_text64(st, i, cell_bytes(c, x), x->len, SQLITE_STATIC, SQLITE_UTF8);
  return sqlite3_bind_blob64(st, i, cell_bytes(c, x), x->len, SQLITE_STATIC);
}

/* A value in a statement: a literal for MariaDB (strings as _binary'...',
 * escaped by the connector), a '?' bound later for SQLite. */
static void sb_value(sbuf *b, side *s, bindlist *bl, const chunk *c, const cell *x, col_kind kind) {
  if (!s->maria) {
    if (bl->n == (int)(sizeof bl->refs / sizeof bl->refs[0])) {
      b->oom = 1;
      return;
    }
    bl->refs[bl->n++] = (bindref){c, x, kind};
    sb_str(b, "?");
    return;
  }
  if (x->null) {
    sb_str(b, "NULL");
  } else if (kind == COL_INT) {
    sb_printf(b, "%" PRIu64, x->u);
  } else {
    sb_str(b, "_binary'");
    if (x->len > (SIZE_MAX - 8) / 2) {
      b->oom = 1;
      return;
    }
    char *w = sb_reserve(b, 2 * x->len + 1);
    if (!w) return;
    b->len += mysql_real_escape_string(s->my, w, cell_bytes(c, x), (unsigned long)x->len);
    sb_str(b, "'");
  }
}

/* ---- reading ---- */

static int rd_open(side *s, const char *sql) {
  if (s->maria) {
    if (mysql_real_query(s->my, sql, strlen(sql)) != 0) return side_fail(s, "read");
    if (!(s->res = mysql_use_result(s->my))) return side_fail(s, "read");
    return 0;
  }
  if (sqlite3_prepare_v2(s->lite, sql, -1, &s->rd, NULL) != SQLITE_OK) return side_fail(s, "read");
  return 0;
}

static void rd_close(side *s) {
  if (s->res) mysql_free_result(s->res); /* reads what is left of a result in use */
  s->res = NULL;
  sqlite3_finalize(s->rd);
  s->rd = NULL;
}

/* Reads the next row into c: 1, 0 at the end, -1 on failure. */
static int rd_row(side *s, chunk *c) {
  const table *t = c->t;
  if (s->maria) {
    MYSQL_ROW row = mysql_fetch_row(s->res);
    if (!row) return mysql_errno(s->my) ? side_fail(s, "read") : 0;
    unsigned long *len = mysql_fetch_lengths(s->res);
    if (!len || mysql_num_fields(s->res) != (unsigned)t->n_cols) return side_fail_text(s, "read", "unexpected columns");
    long r = chunk_add_row(c);
    if (r < 0) return side_fail_text(s, "read", "out of memory");
    for (int i = 0; i < t->n_cols; i++) {
      cell *x = chunk_row(c, (size_t)r) + i;
      if (!row[i])
        x->null = 1;
      else if (t->cols[i].kind == COL_INT)
        x->u = strtoull(row[i], NULL, 10);
      else
        cell_set_bytes(c, (size_t)r, i, row[i], len[i]);
    }
  } else {
    int rc = sqlite3_step(s->rd);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return side_fail(s, "read");
    long r = chunk_add_row(c);
    if (r < 0) return side_fail_text(s, "read", "out of memory");
    for (int i = 0; i < t->n_cols; i++) {
      cell *x = chunk_row(c, (size_t)r) + i;
      if (sqlite3_column_type(s->rd, i) == SQLITE_NULL) {
        x->null = 1;
      } else if (t->cols[i].kind == COL_INT) {
        x->u = (uint64_t)sqlite3_column_int64(s->rd, i);
      } else {
        const void *p =
            t->cols[i].kind == COL_TEXT ? (const void *)sqlite3_column_text(s->rd, i) : sqlite3_column_blob(s->rd, i);
        size_t n = (size_t)sqlite3_column_bytes(s->rd, i);
        cell_set_bytes(c, (size_t)r, i, p ? p : "", n);
      }
    }
  }
  return c->bytes.oom ? side_fail_text(s, "read", "out of memory") : 1;
}

static void sb_columns(sbuf *b, const table *t) {
  for (int i = 0; i < t->n_cols; i++) sb_printf(b, "%s`%s`", i ? ", " : "", t->cols[i].name);
}

/* Up to limit messages after a log position into c (fewer when the bytes
 * pass CHUNK_BYTES_MAX). 0, or -1. */
static int read_messages(side *s, uint64_t after, size_t limit, chunk *c) {
  chunk_reset(c, MESSAGES);
  sbuf q = {0};
  sb_str(&q, "SELECT ");
  sb_columns(&q, MESSAGES);
  sb_printf(&q, " FROM messages WHERE log_pos > %" PRIu64 " ORDER BY log_pos LIMIT %zu", after, limit);
  int rc = q.oom ? side_fail_text(s, "read", "out of memory") : rd_open(s, q.p);
  sb_free(&q);
  while (rc == 0 && c->rows < limit && c->bytes.len < CHUNK_BYTES_MAX) {
    int r = rd_row(s, c);
    if (r < 0) rc = -1;
    if (r <= 0) break;
  }
  rd_close(s);
  return rc;
}

/* The message at a log position into c (no row when there is none). */
static int read_message_at(side *s, uint64_t pos, chunk *c) {
  chunk_reset(c, MESSAGES);
  sbuf q = {0};
  sb_str(&q, "SELECT ");
  sb_columns(&q, MESSAGES);
  sb_printf(&q, " FROM messages WHERE log_pos = %" PRIu64, pos);
  int rc = q.oom ? side_fail_text(s, "read", "out of memory") : rd_open(s, q.p);
  sb_free(&q);
  if (rc == 0 && rd_row(s, c) < 0) rc = -1;
  rd_close(s);
  return rc;
}

/* Runs a query of one row of unsigned integers (NULL reads as 0), binding
 * bl's values on SQLite. *found (may be NULL) says whether a row came. */
static int query_u64s(side *s, const char *sql, const bindlist *bl, uint64_t *out, int n, int *found) {
  if (found) *found = 0;
  for (int i = 0; i < n; i++) out[i] = 0;
  if (s->maria) {
    MYSQL_RES *res = NULL;
    if (mysql_real_query(s->my, sql, strlen(sql)) != 0 || !(res = mysql_store_result(s->my)))
      return side_fail(s, "query");
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row) {
      if (found) *found = 1;
      for (int i = 0; i < n && i < (int)mysql_num_fields(res); i++) out[i] = row[i] ? strtoull(row[i], NULL, 10) : 0;
    }
    mysql_free_result(res);
    return 0;
  }
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->lite, sql, -1, &st, NULL) != SQLITE_OK) return side_fail(s, "query");
  for (int i = 0; bl && i < bl->n; i++) bind_cell(st, i + 1, bl->refs[i].c, bl->refs[i].x, bl->refs[i].kind);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (found) *found = 1;
    for (int i = 0; i < n && i < sqlite3_column_count(st); i++) out[i] = (uint64_t)sqlite3_column_int64(st, i);
  }
  int failed = rc != SQLITE_ROW && rc != SQLITE_DONE;
  if (failed) side_fail(s, "query");
  sqlite3_finalize(st);
  return failed ? -1 : 0;
}

/* ---- writing ---- */

static int wr_begin(side *d) { return run_text(d, d->maria ? "START TRANSACTION" : "BEGIN IMMEDIATE", "begin"); }
static int wr_commit(side *d) { return run_text(d, "COMMIT", "commit"); }

/* Ends a failed transaction; keeps d->err. */
static void wr_rollback(side *d) {
  if (d->maria) {
    if (d->my) mysql_real_query(d->my, "ROLLBACK", 8);
  } else if (d->lite && !sqlite3_get_autocommit(d->lite)) {
    sqlite3_exec(d->lite, "ROLLBACK", NULL, NULL, NULL);
  }
}

/* Runs d->sql, whose '?'s take bl's values on SQLite. */
static int wr_run_bound(side *d, const bindlist *bl, const char *what) {
  if (d->sql.oom) return side_fail_text(d, what, "out of memory");
  if (d->maria) return run_sql(d, d->sql.p, d->sql.len, what);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(d->lite, d->sql.p, (int)d->sql.len, &st, NULL) != SQLITE_OK) return side_fail(d, what);
  for (int i = 0; i < bl->n; i++) bind_cell(st, i + 1, bl->refs[i].c, bl->refs[i].x, bl->refs[i].kind);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE) side_fail(d, what);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : -1;
}

/* key > row's key (upper 0) or key <= row's key (upper 1), from key column
 * i on, as comparisons an index range serves on both backends. */
static void sb_key_cond(sbuf *b, side *d, bindlist *bl, const chunk *c, size_t r, int upper, int i) {
  const table *t = c->t;
  const cell *x = chunk_row(c, r) + i;
  const char *name = t->cols[i].name;
  col_kind kind = t->cols[i].kind;
  if (i == t->n_key - 1) {
    sb_printf(b, "`%s` %s ", name, upper ? "<=" : ">");
    sb_value(b, d, bl, c, x, kind);
    return;
  }
  sb_printf(b, "`%s` %s ", name, upper ? "<" : ">");
  sb_value(b, d, bl, c, x, kind);
  sb_printf(b, " OR (`%s` = ", name);
  sb_value(b, d, bl, c, x, kind);
  sb_str(b, " AND (");
  sb_key_cond(b, d, bl, c, r, upper, i + 1);
  sb_str(b, "))");
}

/* Deletes the destination's rows of t with a key after lo's row 0 and up to
 * hi's row hi_row (either bound NULL: open). */
static int wr_delete_range(side *d, const table *t, const chunk *lo, const chunk *hi, size_t hi_row) {
  bindlist bl = {.n = 0};
  sb_reset(&d->sql);
  sb_printf(&d->sql, "DELETE FROM `%s`", t->name);
  if (lo || hi) sb_str(&d->sql, " WHERE ");
  if (lo) {
    sb_str(&d->sql, "(");
    sb_key_cond(&d->sql, d, &bl, lo, 0, 0, 0);
    sb_str(&d->sql, ")");
  }
  if (lo && hi) sb_str(&d->sql, " AND ");
  if (hi) {
    sb_str(&d->sql, "(");
    sb_key_cond(&d->sql, d, &bl, hi, hi_row, 1, 0);
    sb_str(&d->sql, ")");
  }
  char what[64];
  snprintf(what, sizeof what, "delete from %s", t->name);
  return wr_run_bound(d, &bl, what);
}

static void describe_row(char *out, size_t size, const chunk *c, size_t r) {
  const table *t = c->t;
  const cell *x = chunk_row(c, r);
  if (t == MESSAGES) {
    snprintf(out, size, "the message at log position %" PRIu64, x[0].u);
  } else if (t->cols[0].kind == COL_TEXT) {
    snprintf(out, size, "the %s row of %.*s", t->name, (int)(x[0].len > 128 ? 128 : x[0].len), cell_bytes(c, x));
  } else {
    snprintf(out, size, "a %s row", t->name);
  }
}

/* Inserts every row of c. */
static int wr_insert(side *d, const chunk *c) {
  const table *t = c->t;
  int ti = (int)(t - tables);
  char what[256];
  if (!d->maria) {
    if (!d->insert[ti]) {
      sbuf q = {0};
      sb_printf(&q, "INSERT INTO `%s`(", t->name);
      sb_columns(&q, t);
      sb_str(&q, ") VALUES(");
      for (int i = 0; i < t->n_cols; i++) sb_str(&q, i ? ", ?" : "?");
      sb_str(&q, ")");
      int rc = q.oom ? SQLITE_NOMEM : sqlite3_prepare_v2(d->lite, q.p, -1, &d->insert[ti], NULL);
      sb_free(&q);
      if (rc != SQLITE_OK) return side_fail(d, "prepare insert");
    }
    sqlite3_stmt *st = d->insert[ti];
    for (size_t r = 0; r < c->rows; r++) {
      for (int i = 0; i < t->n_cols; i++) bind_cell(st, i + 1, c, chunk_row(c, r) + i, t->cols[i].kind);
      int rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) {
        char row[200];
        describe_row(row, sizeof row, c, r);
        snprintf(what, sizeof what, "insert %s", row);
        return side_fail(d, what);
      }
    }
    return 0;
  }
  /* MariaDB: multi-row INSERTs, cut near STATEMENT_TARGET (and within max_allowed_packet) */
  size_t room = d->max_packet > 2048 ? d->max_packet - 1024 : d->max_packet;
  size_t target = STATEMENT_TARGET < room / 2 ? STATEMENT_TARGET : room / 2;
  bindlist none = {.n = 0};
  size_t in_statement = 0;
  sb_reset(&d->sql);
  for (size_t r = 0; r < c->rows; r++) {
    size_t estimate = 64;
    for (int i = 0; i < t->n_cols; i++) estimate += 2 * chunk_row(c, r)[i].len + 32;
    if (estimate > room) {
      char row[200];
      describe_row(row, sizeof row, c, r);
      snprintf(d->err, sizeof d->err,
               "insert %s: it takes about %zu bytes of SQL, more than the server's max_allowed_packet (%lu)", row,
               estimate, d->max_packet);
      return -1;
    }
    if (in_statement && d->sql.len + estimate > target) {
      snprintf(what, sizeof what, "insert into %s", t->name);
      if (wr_run_bound(d, &none, what) != 0) return -1;
      sb_reset(&d->sql);
      in_statement = 0;
    }
    if (!in_statement) {
      sb_printf(&d->sql, "INSERT INTO `%s`(", t->name);
      sb_columns(&d->sql, t);
      sb_str(&d->sql, ") VALUES");
    }
    sb_str(&d->sql, in_statement ? ",(" : "(");
    for (int i = 0; i < t->n_cols; i++) {
      if (i) sb_str(&d->sql, ",");
      sb_value(&d->sql, d, NULL, c, chunk_row(c, r) + i, t->cols[i].kind);
    }
    sb_str(&d->sql, ")");
    in_statement++;
  }
  if (!in_statement) return 0;
  snprintf(what, sizeof what, "insert into %s", t->name);
  return wr_run_bound(d, &none, what);
}

/* ---- verification: row counts and per-column sums ---- */

#define MAX_SUMS 40

typedef struct {
  int n;
  uint64_t v[MAX_SUMS];
  char label[MAX_SUMS][48];
} sums;

static int table_sums(side *s, const table *t, sums *out) {
  sbuf q = {0};
  out->n = 0;
#define LABEL(...) snprintf(out->label[out->n++], sizeof out->label[0], __VA_ARGS__)
  sb_str(&q, "SELECT COUNT(*)");
  LABEL("rows");
  if (t == MESSAGES) {
    sb_str(&q, ", COALESCE(MAX(log_pos), 0)");
    LABEL("MAX(log_pos)");
  }
  for (int i = 0; i < t->n_cols; i++) {
    const char *c = t->cols[i].name;
    if (t->cols[i].kind == COL_INT) {
      sb_printf(&q, ", COALESCE(SUM(`%s` & 4294967295), 0), COALESCE(SUM((`%s` >> 32) & 4294967295), 0)", c, c);
      LABEL("%s: sum of low 32 bits", c);
      LABEL("%s: sum of high 32 bits", c);
    } else {
      if (s->maria)
        sb_printf(&q, ", COALESCE(SUM(LENGTH(`%s`)), 0), COALESCE(SUM(CRC32(`%s`)), 0)", c, c);
      else
        sb_printf(&q, ", COALESCE(SUM(length(CAST(`%s` AS BLOB))), 0), COALESCE(SUM(crc32(`%s`)), 0)", c, c);
      sb_printf(&q, ", COALESCE(SUM(`%s` IS NULL), 0)", c);
      LABEL("%s: sum of byte lengths", c);
      LABEL("%s: sum of CRC-32s", c);
      LABEL("%s: NULLs", c);
    }
  }
#undef LABEL
  sb_printf(&q, " FROM `%s`", t->name);
  int rc = q.oom ? side_fail_text(s, "sums", "out of memory") : query_u64s(s, q.p, NULL, out->v, out->n, NULL);
  sb_free(&q);
  return rc;
}

/* ---- the copy ---- */

typedef struct {
  const char *from, *to;
  size_t chunk_rows;
  uint64_t max_rows; /* 0: no limit */
  int verify_only;
  int quiet;
} copy_options;

typedef struct {
  uint64_t source_rows[N_TABLES];
  uint64_t written[N_TABLES];
  uint64_t copy_ms, messages_ms, verify_ms;
  uint64_t last_pos; /* the destination's last message, as committed by this run (or found there) */
} copy_report;

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double rate(uint64_t rows, uint64_t ms) { return ms ? (double)rows * 1000.0 / (double)ms : (double)rows; }

static void side_close(side *s) {
  rd_close(s);
  for (int i = 0; i < N_TABLES; i++) sqlite3_finalize(s->insert[i]);
  if (s->lite) sqlite3_close(s->lite);
  if (s->my) mysql_close(s->my);
  sb_free(&s->sql);
  s->lite = NULL;
  s->my = NULL;
}

static int side_init(side *s, const char *role, const char *url) {
  memset(s, 0, sizeof *s);
  s->role = role;
  s->url = url;
  show_url(url, s->shown, sizeof s->shown);
  s->maria = !strncmp(url, HUBU_MARIADB_SCHEME, strlen(HUBU_MARIADB_SCHEME));
  if (!s->maria && (strncmp(url, SQLITE_SCHEME, strlen(SQLITE_SCHEME)) != 0 || !url[strlen(SQLITE_SCHEME)])) {
    fprintf(stderr,
            "hubuctl: store copy: the %s %s is neither sqlite:PATH nor mariadb://...; the copy goes between"
            " those two, in either direction (sqlite to mariadb, mariadb to sqlite, or the same kind)\n",
            role, s->shown);
    return -1;
  }
  return 0;
}

/* Opens the source and starts the read snapshot every read of the run sees. */
static int open_source(side *s) {
  if (s->maria) {
    if (maria_connect(s) != 0) return -1;
    if (run_text(s, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "snapshot") != 0 ||
        run_text(s, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", "snapshot") != 0)
      return -1;
  } else {
    if (lite_open(s, 1) != 0) return -1;
    if (run_text(s, "BEGIN", "snapshot") != 0) return -1;
  }
  uint64_t version = 0;
  if (query_u64s(s, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL, &version, 1, NULL) != 0) {
    char why[sizeof s->err];
    snprintf(why, sizeof why, "%s", s->err);
    snprintf(s->err, sizeof s->err, "not a hubu store (%.500s)", why);
    return -1;
  }
  if (!s->maria && version < SQLITE_LOG_POS_VERSION) {
    snprintf(s->err, sizeof s->err,
             "its schema is version %" PRIu64
             ", before messages had log positions; start hubud on it once (it migrates the schema), then copy",
             version);
    return -1;
  }
  return 0;
}

/* Makes or migrates the destination's schema through its store backend, as
 * hubud would, then opens a connection of our own. */
static int open_destination(side *d) {
  char err[512];
  hubu_store_config cfg = {.url = d->url, .fsync = HUBU_FSYNC_BATCH};
  const hubu_store_backend *backend = hubu_store_backend_for_url(d->url, err, sizeof err);
  void *db = backend ? backend->open(&cfg, err, sizeof err) : NULL;
  if (!db) {
    snprintf(d->err, sizeof d->err, "open through the store backend: %s", err);
    return -1;
  }
  backend->close(db);
  if (d->maria) return maria_connect(d);
  return lite_open(d, 0);
}

static void progress_line(const copy_options *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress_line(const copy_options *o, const char *fmt, ...) {
  if (o->quiet) return;
  fflush(stdout); /* in order with the summary when both go to one file */
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "hubuctl: store copy: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

/* The destination holds no message of another store: its last message is
 * the source's at that position, and the counts up to there agree. Without
 * messages, every session it has is one the source has (sessions are never
 * deleted, so a copy interrupted in the small tables passes). 0 when it is
 * a copy (or a partial one) of the source, 1 when refused (d->err says
 * why), -1 on failure. */
static int check_destination(side *s, side *d, uint64_t dest_rows, uint64_t dest_max, uint64_t source_max) {
  if (dest_rows) {
    if (dest_max > source_max) {
      snprintf(d->err, sizeof d->err,
               "it holds messages up to log position %" PRIu64 ", the source only up to %" PRIu64
               ": it is not a copy of this source (or hubud has written to it since)",
               dest_max, source_max);
      return 1;
    }
    chunk a = {0}, b = {0};
    int rc = read_message_at(s, dest_max, &a) != 0 ? -1 : read_message_at(d, dest_max, &b) != 0 ? -2 : 0;
    int same = rc == 0 && a.rows == 1 && b.rows == 1;
    for (int i = 0; same && i < MESSAGES->n_cols; i++)
      same = cells_equal(&a, chunk_row(&a, 0) + i, &b, chunk_row(&b, 0) + i, MESSAGES->cols[i].kind);
    chunk_free(&a);
    chunk_free(&b);
    if (rc == -1) {
      snprintf(d->err, sizeof d->err, "the source: %.500s", s->err);
      return -1;
    }
    if (rc == -2) return -1;
    if (!same) {
      snprintf(d->err, sizeof d->err,
               "its message at log position %" PRIu64
               " differs from the source's: it holds another store's messages; copy into an empty database",
               dest_max);
      return 1;
    }
    char sql[128];
    uint64_t source_rows = 0;
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM messages WHERE log_pos <= %" PRIu64, dest_max);
    if (query_u64s(s, sql, NULL, &source_rows, 1, NULL) != 0) {
      snprintf(d->err, sizeof d->err, "the source: %.500s", s->err);
      return -1;
    }
    if (source_rows != dest_rows) {
      snprintf(d->err, sizeof d->err,
               "it holds %" PRIu64 " messages up to log position %" PRIu64 ", the source %" PRIu64
               ": it is not a copy of this source",
               dest_rows, dest_max, source_rows);
      return 1;
    }
    return 0;
  }
  const table *sessions = &tables[1];
  chunk ids = {0};
  chunk_reset(&ids, sessions);
  int rc = rd_open(d, "SELECT `session_id`, `kind`, `max_seq`, `min_seq`, `created_ms`, `meta` FROM sessions");
  while (rc == 0) {
    int r = rd_row(d, &ids);
    if (r < 0) rc = -1;
    if (r <= 0) break;
  }
  rd_close(d);
  for (size_t r = 0; rc == 0 && r < ids.rows; r++) {
    sbuf q = {0};
    bindlist bl = {.n = 0};
    sb_str(&q, "SELECT COUNT(*) FROM sessions WHERE `session_id` = ");
    sb_value(&q, s, &bl, &ids, chunk_row(&ids, r), COL_TEXT);
    uint64_t n = 0;
    if (q.oom || query_u64s(s, q.p, &bl, &n, 1, NULL) != 0) {
      snprintf(d->err, sizeof d->err, "the source: %.500s", q.oom ? "out of memory" : s->err);
      rc = -1;
    } else if (!n) {
      const cell *x = chunk_row(&ids, r);
      snprintf(d->err, sizeof d->err,
               "it has a session the source lacks (%.*s): it holds another store's data; copy into an empty database",
               (int)(x->len > 128 ? 128 : x->len), cell_bytes(&ids, x));
      rc = 1;
    }
    sb_free(&q);
  }
  chunk_free(&ids);
  return rc;
}

/* Copies the messages after the destination's last. 0 done, 1 stopped
 * (--max-rows or a signal), -1 failed (d->err or s->err says why, *who which). */
static int copy_messages(const copy_options *o, side *s, side *d, uint64_t after, uint64_t source_max, uint64_t to_copy,
                         copy_report *rep, side **who) {
  chunk c = {0};
  uint64_t copied = 0, started = now_ms(), last_progress = started;
  int result = 0;
  while (after < source_max) {
    if (stop_signal) {
      result = 1;
      break;
    }
    size_t limit = o->chunk_rows;
    if (o->max_rows) {
      if (copied >= o->max_rows) {
        result = 1;
        break;
      }
      if (o->max_rows - copied < limit) limit = (size_t)(o->max_rows - copied);
    }
    if (read_messages(s, after, limit, &c) != 0) {
      *who = s;
      result = -1;
      break;
    }
    if (!c.rows) break;
    uint64_t last = chunk_row(&c, c.rows - 1)[0].u;
    int rc = wr_begin(d);
    if (rc == 0) rc = wr_insert(d, &c);
    if (rc == 0 && d->maria) {
      char sql[128];
      snprintf(sql, sizeof sql, "UPDATE log_counter SET last_pos = GREATEST(last_pos, %" PRIu64 ") WHERE id = 1", last);
      rc = run_text(d, sql, "raise log_counter");
    }
    if (rc == 0) rc = wr_commit(d);
    if (rc != 0) {
      wr_rollback(d);
      *who = d;
      result = -1;
      break;
    }
    after = last;
    rep->last_pos = last;
    copied += c.rows;
    rep->written[0] += c.rows;
    uint64_t now = now_ms();
    if (now - last_progress >= PROGRESS_EVERY_MS) {
      last_progress = now;
      progress_line(o, "messages: %" PRIu64 "/%" PRIu64 " (%.0f%%), log position %" PRIu64 ", %.0f msgs/s", copied,
                    to_copy, to_copy ? 100.0 * (double)copied / (double)to_copy : 100.0, after,
                    rate(copied, now - started));
    }
  }
  rep->messages_ms = now_ms() - started;
  chunk_free(&c);
  return result;
}

/* Makes the destination's table t equal to the source's, chunk by chunk in
 * key order. 0 done, 1 stopped by a signal, -1 failed. */
static int copy_table(const copy_options *o, side *s, side *d, const table *t, copy_report *rep, side **who) {
  chunk c = {0}, prev = {0};
  int have_prev = 0, result = 0, reading = 1;
  uint64_t started = now_ms(), last_progress = started;
  sbuf q = {0};
  sb_str(&q, "SELECT ");
  sb_columns(&q, t);
  sb_printf(&q, " FROM `%s` ORDER BY ", t->name);
  for (int i = 0; i < t->n_key; i++) sb_printf(&q, "%s`%s`", i ? ", " : "", t->cols[i].name);
  if (q.oom || rd_open(s, q.p) != 0) {
    if (q.oom) side_fail_text(s, "read", "out of memory");
    sb_free(&q);
    *who = s;
    return -1;
  }
  sb_free(&q);
  while (reading) {
    if (stop_signal) {
      result = 1;
      break;
    }
    chunk_reset(&c, t);
    int r = 1;
    while (c.rows < o->chunk_rows && c.bytes.len < CHUNK_BYTES_MAX && (r = rd_row(s, &c)) > 0) {
    }
    if (r < 0) {
      *who = s;
      result = -1;
      break;
    }
    if (r == 0) reading = 0;
    int rc = wr_begin(d);
    /* The destination's rows after the previous chunk's last key and up to this one's are replaced by this
     * chunk's; the last chunk's range is open, so rows the source no longer has go. */
    if (rc == 0) rc = wr_delete_range(d, t, have_prev ? &prev : NULL, reading ? &c : NULL, c.rows ? c.rows - 1 : 0);
    if (rc == 0) rc = wr_insert(d, &c);
    if (rc == 0) rc = wr_commit(d);
    if (rc != 0) {
      wr_rollback(d);
      *who = d;
      result = -1;
      break;
    }
    rep->written[t - tables] += c.rows;
    if (c.rows) {
      if (chunk_keep_row(&prev, &c, c.rows - 1) != 0) {
        side_fail_text(d, "copy", "out of memory");
        *who = d;
        result = -1;
        break;
      }
      have_prev = 1;
    }
    uint64_t now = now_ms();
    if (now - last_progress >= PROGRESS_EVERY_MS) {
      last_progress = now;
      progress_line(o, "%s: %" PRIu64 " rows", t->name, rep->written[t - tables]);
    }
  }
  rd_close(s);
  chunk_free(&c);
  chunk_free(&prev);
  return result;
}

/* Prints each table's counts and whether its sums agree; the number of
 * tables that differ, or -1 when a side could not be read. */
static int print_verification(side *s, side *d, copy_report *rep) {
  uint64_t started = now_ms();
  int mismatches = 0;
  for (int t = 0; t < N_TABLES; t++) {
    sums a, b;
    if (table_sums(s, &tables[t], &a) != 0) {
      fprintf(stderr, "hubuctl: store copy: verify %s on the source %s: %s\n", tables[t].name, s->shown, s->err);
      return -1;
    }
    if (table_sums(d, &tables[t], &b) != 0) {
      fprintf(stderr, "hubuctl: store copy: verify %s on the destination %s: %s\n", tables[t].name, d->shown, d->err);
      return -1;
    }
    rep->source_rows[t] = a.v[0];
    int same = 1;
    for (int i = 0; i < a.n; i++) {
      if (a.v[i] == b.v[i]) continue;
      if (same) fprintf(stderr, "hubuctl: store copy: %s differ:\n", tables[t].name);
      fprintf(stderr, "  %s: source %" PRIu64 ", destination %" PRIu64 "\n", a.label[i], a.v[i], b.v[i]);
      same = 0;
    }
    if (!same) mismatches++;
    printf("  %-11s %12" PRIu64 " %12" PRIu64 " %12" PRIu64 "  %s\n", tables[t].name, a.v[0], b.v[0], rep->written[t],
           same ? "ok" : "DIFFERENT");
  }
  if (d->maria) {
    uint64_t v[2];
    if (query_u64s(
            d,
            "SELECT (SELECT last_pos FROM log_counter WHERE id = 1), (SELECT COALESCE(MAX(log_pos), 0) FROM messages)",
            NULL, v, 2, NULL) != 0) {
      fprintf(stderr, "hubuctl: store copy: verify log_counter on the destination %s: %s\n", d->shown, d->err);
      return -1;
    }
    printf("  %-11s %12s %12" PRIu64 " %12s  %s\n", "log_counter", "", v[0], "", v[0] == v[1] ? "ok" : "DIFFERENT");
    if (v[0] != v[1]) {
      fprintf(stderr, "hubuctl: store copy: log_counter.last_pos is %" PRIu64 ", MAX(log_pos) %" PRIu64 "\n", v[0],
              v[1]);
      mismatches++;
    }
  }
  rep->verify_ms = now_ms() - started;
  return mismatches;
}

static int store_copy(const copy_options *o) {
  side s, d;
  if (side_init(&s, "source", o->from) != 0 || side_init(&d, "destination", o->to) != 0) return EXIT_USAGE;
  if (!strcmp(o->from, o->to)) {
    fprintf(stderr, "hubuctl: store copy: --from and --to name the same store (%s)\n", s.shown);
    return EXIT_USAGE;
  }
  if (!s.maria && !d.maria) {
    char a[PATH_MAX], b[PATH_MAX];
    if (realpath(o->from + strlen(SQLITE_SCHEME), a) && realpath(o->to + strlen(SQLITE_SCHEME), b) && !strcmp(a, b)) {
      fprintf(stderr, "hubuctl: store copy: --from and --to name the same file (%s)\n", a);
      return EXIT_USAGE;
    }
  }
  crc_init();
  hubu_log_min_level = HUBU_LOG_WARN; /* the backend's open says store_migrated at info */
  int status = EXIT_FAILED;
  copy_report rep;
  memset(&rep, 0, sizeof rep);
  side *who = NULL;
  uint64_t started = now_ms();

  if (open_source(&s) != 0) {
    fprintf(stderr, "hubuctl: store copy: cannot read the source %s: %s\n", s.shown, s.err);
    goto out;
  }
  if (open_destination(&d) != 0) {
    fprintf(stderr, "hubuctl: store copy: cannot open the destination %s: %s\n", d.shown, d.err);
    goto out;
  }
  uint64_t src[2], dst[2]; /* COUNT(*), MAX(log_pos) */
  const char *count_max = "SELECT COUNT(*), COALESCE(MAX(log_pos), 0) FROM messages";
  if (query_u64s(&s, count_max, NULL, src, 2, NULL) != 0) {
    fprintf(stderr, "hubuctl: store copy: cannot read the source %s: %s\n", s.shown, s.err);
    goto out;
  }
  if (query_u64s(&d, count_max, NULL, dst, 2, NULL) != 0) {
    fprintf(stderr, "hubuctl: store copy: cannot read the destination %s: %s\n", d.shown, d.err);
    goto out;
  }
  printf("hubuctl store copy: %s -> %s\n", s.shown, d.shown);
  if (!o->verify_only) {
    int refused = check_destination(&s, &d, dst[0], dst[1], src[1]);
    if (refused) {
      fprintf(stderr, "hubuctl: store copy: %s the destination %s: %s\n", refused > 0 ? "refusing" : "cannot check",
              d.shown, d.err);
      goto out;
    }
    if (dst[0])
      progress_line(o,
                    "source: %" PRIu64 " messages up to log position %" PRIu64 "; destination: %" PRIu64
                    ", up to %" PRIu64 ": going on from there",
                    src[0], src[1], dst[0], dst[1]);
    else
      progress_line(o, "source: %" PRIu64 " messages up to log position %" PRIu64 "; destination: empty", src[0],
                    src[1]);
    rep.last_pos = dst[1];
    int rc = copy_messages(o, &s, &d, dst[1], src[1], src[0] > dst[0] ? src[0] - dst[0] : 0, &rep, &who);
    for (int t = 1; rc == 0 && t < N_TABLES; t++) rc = copy_table(o, &s, &d, &tables[t], &rep, &who);
    /* positions hubud hands out next follow the last message copied */
    if (rc == 0 && d.maria &&
        run_text(&d, "UPDATE log_counter SET last_pos = (SELECT COALESCE(MAX(log_pos), 0) FROM messages) WHERE id = 1",
                 "set log_counter") != 0) {
      who = &d;
      rc = -1;
    }
    /* what the destination holds: every chunk this run committed, after what it held */
    uint64_t at[2] = {dst[0] + rep.written[0], rep.last_pos};
    if (rc < 0) {
      fprintf(stderr, "hubuctl: store copy: %s %s: %s\n", who == &s ? "reading the source" : "writing the destination",
              who->shown, who->err);
      fprintf(stderr,
              "hubuctl: store copy: the destination holds the messages up to log position %" PRIu64
              " at least (a chunk whose commit was cut off may be there too); run the same command again to go on"
              " after its last message\n",
              at[1]);
      goto out;
    }
    if (rc > 0) {
      if (stop_signal)
        fprintf(stderr, "hubuctl: store copy: stopped by signal %d", (int)stop_signal);
      else
        fprintf(stderr, "hubuctl: store copy: stopped after %" PRIu64 " messages (--max-rows)", rep.written[0]);
      fprintf(stderr,
              "; the destination holds %" PRIu64 " messages, up to log position %" PRIu64
              "; run the same command again to go on from there\n",
              at[0], at[1]);
      status = EXIT_STOPPED;
      goto out;
    }
  }
  rep.copy_ms = now_ms() - started;
  printf("  %-11s %12s %12s %12s  %s\n", "table", "source", "destination", "written", "verified");
  int mismatches = print_verification(&s, &d, &rep);
  if (mismatches < 0) goto out;
  if (!o->verify_only)
    printf("copied %" PRIu64 " messages in %.1f s (%.0f msgs/s), everything in %.1f s; verified in %.1f s\n",
           rep.written[0], (double)rep.messages_ms / 1000.0, rate(rep.written[0], rep.messages_ms),
           (double)rep.copy_ms / 1000.0, (double)rep.verify_ms / 1000.0);
  else
    printf("verified in %.1f s\n", (double)rep.verify_ms / 1000.0);
  if (mismatches) {
    fprintf(stderr, "hubuctl: store copy: the destination differs from the source in %d table(s) (above); %s\n",
            mismatches,
            o->verify_only ? "copy to bring it up to date"
                           : "was the source or the destination written during the copy? stop hubud and copy again");
    status = EXIT_MISMATCH;
    goto out;
  }
  printf("%s\n", o->verify_only ? "the destination matches the source" : "done: the destination matches the source");
  status = EXIT_OK;
out:
  fflush(stdout);
  side_close(&s);
  side_close(&d);
  return status;
}

/* ---- the command line ---- */

static int usage(FILE *f) {
  fprintf(f,
          "usage: hubuctl store copy --to URL [--from URL | --data DIR] [--chunk N] [--max-rows N]\n"
          "                          [--verify-only] [--quiet]\n"
          "\n"
          "Copies every table of the store at --from into the store at --to: the messages in log\n"
          "order (log positions, seqs and ids kept, every byte as it is), then sessions, members,\n"
          "devices, cursors and kv; then compares row counts and per-column sums on both sides.\n"
          "URLs are sqlite:PATH and mariadb://USER:PASS@HOST:PORT/DB (or ?socket=PATH, the password\n"
          "from ?password_file=PATH or $HUBU_STORE_PASSWORD), either way round.\n"
          "\n"
          "  --from URL      the store to read (default $HUBU_STORE, else sqlite:DIR/hubu.db)\n"
          "  --data DIR      hubud's --data: --from sqlite:DIR/hubu.db (default ./data)\n"
          "  --to URL        the store to write; its schema is made or migrated as hubud would\n"
          "  --chunk N       messages per transaction on the destination (default %d)\n"
          "  --max-rows N    copy at most N messages in this run, then stop (exit 4)\n"
          "  --verify-only   copy nothing; only compare the two stores\n"
          "  --quiet         no progress lines on stderr\n"
          "\n"
          "Stop hubud before the copy. A run copies the source as it was when the run began (one\n"
          "read snapshot), so a copy made while hubud runs is caught up by copying again after\n"
          "stopping it. Interrupted (Ctrl-C, kill, a lost connection), the same command goes on\n"
          "after the destination's last message; the other tables are rewritten by every run.\n"
          "A destination holding another store's messages is refused.\n"
          "\n"
          "Exit status: 0 copied and verified, 1 failed or refused, 2 usage, 3 the stores differ,\n"
          "4 stopped before the end (--max-rows, a signal): run the same command again.\n",
          CHUNK_ROWS_DEFAULT);
  return EXIT_USAGE;
}

static int parse_count(const char *s, uint64_t max, uint64_t *out) {
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v == 0 || v > max) return -1;
  *out = v;
  return 0;
}

int hubuctl_store(int argc, char **argv) {
  if (argc < 1) return usage(stderr);
  if (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help")) {
    usage(stdout);
    return EXIT_OK;
  }
  if (strcmp(argv[0], "copy") != 0) {
    fprintf(stderr, "hubuctl: store: unknown subcommand '%s' (known: copy)\n", argv[0]);
    return usage(stderr);
  }
  copy_options o = {.chunk_rows = CHUNK_ROWS_DEFAULT};
  const char *data = "./data";
  const char *from = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has_value = i + 1 < argc;
    uint64_t n = 0;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return EXIT_OK;
    } else if (!strcmp(a, "--verify-only")) {
      o.verify_only = 1;
    } else if (!strcmp(a, "--quiet")) {
      o.quiet = 1;
    } else if (!strcmp(a, "--from") && has_value) {
      from = argv[++i];
    } else if (!strcmp(a, "--to") && has_value) {
      o.to = argv[++i];
    } else if (!strcmp(a, "--data") && has_value) {
      data = argv[++i];
    } else if (!strcmp(a, "--chunk") && has_value) {
      if (parse_count(argv[++i], CHUNK_ROWS_MAX, &n) != 0) {
        fprintf(stderr, "hubuctl: store copy: --chunk wants 1-%d\n", CHUNK_ROWS_MAX);
        return EXIT_USAGE;
      }
      o.chunk_rows = (size_t)n;
    } else if (!strcmp(a, "--max-rows") && has_value) {
      if (parse_count(argv[++i], UINT64_MAX, &n) != 0) {
        fprintf(stderr, "hubuctl: store copy: --max-rows wants a positive number\n");
        return EXIT_USAGE;
      }
      o.max_rows = n;
    } else {
      /* an option's name only: a stray value may be a URL with a password */
      if (a[0] == '-')
        fprintf(stderr, "hubuctl: store copy: unknown option or missing value: %.*s\n", (int)strcspn(a, "="), a);
      else
        fprintf(stderr, "hubuctl: store copy: unexpected argument %d (not shown: it may be a URL)\n", i + 2);
      return usage(stderr);
    }
  }
  if (!o.to) {
    fprintf(stderr, "hubuctl: store copy: --to URL is required\n");
    return usage(stderr);
  }
  char default_url[PATH_MAX + 16];
  if (!from) from = getenv("HUBU_STORE");
  if (!from || !*from) {
    if (hubu_store_default_url(data, default_url, sizeof default_url) != 0) {
      fprintf(stderr, "hubuctl: store copy: --data path too long\n");
      return EXIT_USAGE;
    }
    from = default_url;
  }
  o.from = from;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESETHAND | SA_RESTART; /* the chunk in flight ends; a second signal ends the process */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  return store_copy(&o);
}

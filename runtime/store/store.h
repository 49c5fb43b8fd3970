/* store.h — the durable store, one interface for every backend.
 *
 * The store thread owns the database connection. The loop thread fills a
 * hubu_store_op, submits it, and gets it back on the loop (through
 * uv_async) with its status and outputs; completions arrive in submission
 * order. Consecutive APPENDs are written in one transaction per drained
 * batch (group commit), and an APPEND completes only after its transaction
 * is durable under the configured fsync policy — the server ACKs after that.
 *
 * The store knows tables, not rules: which users a new session starts with,
 * and its kind, come with the APPEND that makes it (core decides them).
 * Appends complete in submission order; other ops complete after every op
 * submitted before them today, but a backend may serve reads from a pool of
 * connections, so a caller relies only on this: an op sees every write whose
 * completion ran before the op was submitted.
 *
 * Tables (same shape on every backend):
 *   messages(log_pos, session_id, seq, msg_id, sender, sender_device, client_id, content_type,
 *            body, meta, server_time_ms)  UNIQUE (session_id, seq), UNIQUE (sender, sender_device, client_id)
 *   sessions(session_id PK, kind, max_seq, min_seq, created_ms, meta)
 *   members(session_id, user_id, role, joined_ms)  PK (session_id, user_id), index (user_id, session_id)
 *   devices(user_id, device_id, last_client_id, last_seen_ms)  PK (user_id, device_id)
 *   cursors(user_id, device_id, session_id, delivered_seq)  PK (user_id, device_id, session_id)
 *   kv(plugin, key, value)  PK (plugin, key)
 *   schema_version(version)
 * `meta` holds the message's meta map as packed Message field-9 entries
 * (itself a valid serialized Message), so it round-trips without a JSON codec.
 * `log_pos` is the message's position in the store's log: assigned by the
 * backend at append, strictly increasing in commit order, never reused or
 * renumbered (SQLite: the INTEGER PRIMARY KEY; a server database: an
 * auto-increment column). message.stored resumes from it. */
#ifndef HUBU_STORE_H
#define HUBU_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "msg.h"
#include "session_id.h"

#define HUBU_ID_MAX 64           /* user_id, device_id */
#define HUBU_KIND_MAX 16
#define HUBU_PLUGIN_NAME_MAX 127

typedef enum { HUBU_FSYNC_ALWAYS = 0, HUBU_FSYNC_BATCH, HUBU_FSYNC_OFF } hubu_fsync_mode;

typedef struct {
  const char *url;       /* which backend and where: "sqlite:PATH" (the database file; its directory is
                            made), or another registered scheme (hubu_store_backend_for_url) */
  hubu_fsync_mode fsync; /* always: a durable commit per message; batch: per batch; off: no sync */
  uint32_t max_batch;    /* most APPENDs in one transaction (default 4096) */
  uint32_t busy_timeout_ms; /* how long to wait for another process's write lock (0: 5000) */
} hubu_store_config;

typedef enum {
  HUBU_STORE_APPEND = 1,     /* in: msg; and, when the session may be new, kind_name and members: the session
                                row and members to create with it. out: status OK + log_pos, or DUPLICATE
                                with the stored seq/msg_id/session */
  HUBU_STORE_DEVICE_LOAD,    /* in: user, device. out: last_client_id (highest client_id stored) */
  HUBU_STORE_FIND_SEND,      /* in: user, device, client_id. out: OK + session_id/seq/msg_id, or NOT_FOUND */
  HUBU_STORE_SESSION_LOAD,   /* in: session_id. out: OK + kind/max_seq/min_seq/members, or NOT_FOUND */
  HUBU_STORE_SESSION_CREATE, /* in: session_id, kind, members. out: OK, or EXISTS */
  HUBU_STORE_MEMBER_ADD,     /* in: session_id, user, role. out: OK, or NOT_FOUND (no such session) */
  HUBU_STORE_MEMBER_REMOVE,  /* in: session_id, user. out: OK, or NOT_FOUND (was not a member) */
  HUBU_STORE_PULL,           /* in: session_id, after_seq, limit. out: msgs (seq > after_seq, ascending), has_more */
  HUBU_STORE_SYNC,           /* in: user. out: states of every session the user is a member of */
  HUBU_STORE_CURSORS_SAVE,   /* in: cursors. out: OK */
  HUBU_STORE_KV_GET,         /* in: plugin, key. out: OK + value, or NOT_FOUND */
  HUBU_STORE_KV_SET,         /* in: plugin, key, value. out: OK */
  HUBU_STORE_KV_DELETE,      /* in: plugin, key. out: OK, or NOT_FOUND */
  HUBU_STORE_LOG_READ,       /* in: after_seq = log position, limit. out: msgs in log order (each with log_pos),
                                has_more, max_seq = the highest log position stored */
} hubu_store_op_kind;

typedef enum {
  HUBU_STORE_OK = 0,
  HUBU_STORE_DUPLICATE,
  HUBU_STORE_NOT_FOUND,
  HUBU_STORE_EXISTS,
  HUBU_STORE_ERROR, /* failed; error says why (the store logged it) */
  HUBU_STORE_RETRY, /* failed for a reason that may pass (the database was busy or unreachable): nothing was
                       written, and the same op may be submitted again later */
} hubu_store_status;

typedef struct {
  char session_id[HUBU_SESSION_ID_MAX + 1];
  uint64_t max_seq;
  uint64_t min_seq;
  char kind[HUBU_KIND_MAX + 1];
} hubu_store_session_state;

typedef struct {
  char user[HUBU_ID_MAX + 1];
  char device[HUBU_ID_MAX + 1];
  char session_id[HUBU_SESSION_ID_MAX + 1];
  uint64_t delivered_seq;
} hubu_store_cursor;

typedef struct hubu_store_op hubu_store_op;
typedef void (*hubu_store_done_cb)(hubu_store_op *op);

/* One operation. Made with hubu_store_op_new and freed with
 * hubu_store_op_free, both on the loop thread. Between submit and done the
 * store owns it; in done, the callback owns it again (and usually frees it). */
struct hubu_store_op {
  hubu_store_op_kind kind;
  hubu_store_status status;
  hubu_store_done_cb done;
  void *ud;            /* the caller's: never read or written by the store */
  void *ud2;           /* the caller's */
  uint64_t conn_id;    /* the caller's */
  uint64_t request_id; /* the caller's */
  hubu_store_op *next; /* queue link; the store's while queued */

  /* inputs */
  hubu_msg *msg;       /* APPEND: a reference owned by the op */
  char user[HUBU_ID_MAX + 1];
  char device[HUBU_ID_MAX + 1];
  char plugin[HUBU_PLUGIN_NAME_MAX + 1]; /* KV_*: whose key/value */
  char session_id[HUBU_SESSION_ID_MAX + 1];
  char kind_name[HUBU_KIND_MAX + 1]; /* SESSION_CREATE, APPEND (a new session's): "group", ...; SESSION_LOAD out */
  char role[HUBU_KIND_MAX + 1];      /* MEMBER_ADD: "member" (default), "owner" */
  uint64_t client_id;
  uint64_t after_seq;
  uint32_t limit;
  char **members;      /* SESSION_CREATE, APPEND in / SESSION_LOAD out: owned array of owned strings */
  size_t n_members;
  hubu_store_cursor *cursors; /* CURSORS_SAVE: owned */
  size_t n_cursors;
  char *key;           /* KV_*: owned */
  uint8_t *value;      /* KV_SET in, KV_GET out: owned */
  size_t value_len;

  /* outputs */
  uint64_t seq;
  uint64_t msg_id;
  uint64_t last_client_id;
  uint64_t log_pos;    /* APPEND: the message's position in the store's log */
  uint64_t max_seq;
  uint64_t min_seq;
  hubu_msg **msgs;     /* PULL: owned array of references */
  size_t n_msgs;
  int has_more;
  hubu_store_session_state *states; /* SYNC: owned */
  size_t n_states;
  char error[160];     /* ERROR: what failed, for the log */
};

typedef struct hubu_store hubu_store;

typedef struct {
  uint64_t batches;         /* transactions of APPENDs committed */
  uint64_t appended;        /* messages stored */
  uint64_t last_batch;      /* size of the latest batch */
  uint64_t max_batch_seen;
  uint64_t commit_us_total; /* time spent in append transactions */
  uint64_t queued;          /* ops waiting now */
} hubu_store_stats;

hubu_store_op *hubu_store_op_new(hubu_store_op_kind kind);
void hubu_store_op_free(hubu_store_op *op);
/* Frees the ops this thread kept for reuse (at exit, so leak checkers see
 * nothing). Each thread that makes ops keeps its own few. */
void hubu_store_op_cache_drop(void);

/* Opens the backend, migrates the schema, starts the store thread, and
 * registers its completion handle on loop. NULL with err on failure. */
hubu_store *hubu_store_open(uv_loop_t *loop, const hubu_store_config *cfg, char *err, size_t err_size);

/* Queues op; op->done runs later on the loop thread. */
void hubu_store_submit(hubu_store *s, hubu_store_op *op);

/* Finishes every queued op (their done callbacks run), stops the thread,
 * closes the database and the completion handle. The loop must run for the
 * handle's close to complete; s is freed then. */
void hubu_store_close(hubu_store *s);

void hubu_store_get_stats(hubu_store *s, hubu_store_stats *out);

/* ---- Backends (store_sqlite.c, later store_mariadb.c) ----
 * Called on the store thread only, or directly by tools and tests that need
 * no thread (hubuctl group create, the store benchmark). */
typedef struct hubu_store_backend {
  const char *name;
  const char *scheme; /* the URL prefix it serves: "sqlite:" */
  void *(*open)(const hubu_store_config *cfg, char *err, size_t err_size); /* opens + migrates */
  void (*close)(void *db);
  /* APPENDs ops[0..n) in one transaction and makes it durable per cfg->fsync;
   * sets each op's status (OK, DUPLICATE with the stored ids, or ERROR for all
   * when the transaction failed and was rolled back). Returns 0 or -1. */
  int (*append_batch)(void *db, hubu_store_op **ops, size_t n);
  /* Runs one op of any other kind; sets status and outputs. */
  void (*execute)(void *db, hubu_store_op *op);
} hubu_store_backend;

extern const hubu_store_backend hubu_store_sqlite;

/* The backend whose scheme starts url, or NULL (err says which are known). */
const hubu_store_backend *hubu_store_backend_for_url(const char *url, char *err, size_t err_size);

/* The default store of a data directory: "sqlite:DIR/hubu.db" into out. 0, or -1 when it does not fit. */
int hubu_store_default_url(const char *data_dir, char *out, size_t size);

/* "direct" for d:a:b, "group" for g:name, else (a custom or malformed id) "custom". */
const char *hubu_session_kind_of(const char *session_id);

#endif

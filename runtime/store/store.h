/* store.h — the durable store, one interface for every backend.
 *
 * The store thread owns the database connection. The loop thread fills a
 * hubu_store_op, submits it, and gets it back on the loop (woken by an
 * eventfd) with its status and outputs; completions arrive in submission
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
 *   sessions(session_id PK, kind, max_seq, min_seq, created_ms, meta, fence_seq)
 *   members(session_id, user_id, role, joined_ms)  PK (session_id, user_id), index (user_id, session_id)
 *   devices(user_id, device_id, last_client_id, last_seen_ms, epoch)  PK (user_id, device_id)
 *   cursors(user_id, device_id, session_id, delivered_seq)  PK (user_id, device_id, session_id)
 *   kv(plugin, key, value)  PK (plugin, key)
 *   schema_version(version)
 * `meta` holds the message's meta map as packed Message field-9 entries
 * (itself a valid serialized Message), so it round-trips without a JSON codec.
 * `log_pos` is the message's position in the store's log: assigned by the
 * backend at append, strictly increasing in commit order, never reused or
 * renumbered (SQLite: the INTEGER PRIMARY KEY; MariaDB: handed out from a
 * counter row each append transaction locks until it commits, so positions
 * are dense and in commit order with several writers). message.stored
 * resumes from it.
 *
 * Cluster mode (several nodes on one database, seqs from Redis): seq n+1 of a
 * session may commit before n, and a node may die or stall holding n. Each
 * session has a durable **fence** (sessions.fence_seq, 0 at first): every
 * seq at or below it that is not stored is abandoned forever. An APPEND of a
 * seq at or below the fence is refused (SEQ_TAKEN); a PULL with settle_ms
 * raises the fence over holes whose writer had time to store them, so a hole
 * it answers as empty stays empty. Raising the fence and appends are
 * serialised (SQLite: its write lock; MariaDB: the log counter row, which
 * both lock and change), so an append either committed before the fence
 * (and is seen by the PULL's read after it) or sees the fence (and is
 * refused).
 *
 * One node serves a device at a time: each device has a durable **epoch**
 * (devices.epoch, 0 at first), raised by a DEVICE_LOAD with claim (the node
 * where the device says HELLO). An APPEND carries the epoch its node claimed
 * (device_epoch) and is refused (DEVICE_MOVED) when the device's epoch is
 * another by then, so a node that still holds a device's sends after the
 * device went to another node cannot store them behind that node's back.
 * Claims and appends are serialised as fences and appends are, so an append
 * either committed before the claim (and the claim's last_client_id covers
 * it) or sees the new epoch (and is refused). */
#ifndef HUBU_STORE_H
#define HUBU_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "msg.h"
#include "session_id.h"

#define HUBU_ID_MAX 64 /* user_id, device_id */
#define HUBU_KIND_MAX 16
#define HUBU_PLUGIN_NAME_MAX 127

typedef enum { HUBU_FSYNC_ALWAYS = 0, HUBU_FSYNC_BATCH, HUBU_FSYNC_OFF } hubu_fsync_mode;

typedef struct {
  const char *url;          /* which backend and where: "sqlite:PATH" (the database file; its directory is
                               made), or "mariadb://USER:PASS@HOST:PORT/DB" (mariadb_url.h) */
  hubu_fsync_mode fsync;    /* always: a durable commit per message; batch: per batch; off: no sync */
  uint32_t max_batch;       /* most APPENDs in one transaction (default 4096) */
  uint32_t busy_timeout_ms; /* how long to wait for another process's write lock (0: 5000) */
} hubu_store_config;

/* Each kind's inputs and outputs are in its own struct below (op->append,
 * op->device_load, ...), with each field marked in or out. */
typedef enum {
  HUBU_STORE_APPEND = 1,     /* op->append: store a message (and the session row and members, when it is new) */
  HUBU_STORE_DEVICE_LOAD,    /* op->device_load: a device's highest client_id stored */
  HUBU_STORE_FIND_SEND,      /* op->find_send: where one send of a device was stored, or NOT_FOUND */
  HUBU_STORE_SESSION_LOAD,   /* op->session_load: a session's row and members, or NOT_FOUND */
  HUBU_STORE_SESSION_CREATE, /* op->session_create: a new session with its members, or EXISTS */
  HUBU_STORE_MEMBER_ADD,     /* op->member: OK, or NOT_FOUND (no such session) */
  HUBU_STORE_MEMBER_REMOVE,  /* op->member: OK, or NOT_FOUND (was not a member) */
  HUBU_STORE_PULL,           /* op->pull: a page of a session's messages by seq */
  HUBU_STORE_SYNC,           /* op->sync: the state of every session a user is a member of */
  HUBU_STORE_CURSORS_SAVE,   /* op->cursors_save: raise delivered cursors */
  HUBU_STORE_KV_GET,         /* op->kv: OK + value, or NOT_FOUND */
  HUBU_STORE_KV_SET,         /* op->kv: OK */
  HUBU_STORE_KV_DELETE,      /* op->kv: OK, or NOT_FOUND */
  HUBU_STORE_LOG_READ,       /* op->log_read: a page of the store's log by log position */
  HUBU_STORE_SEQ_LEASE,      /* op->seq_lease: a block of seqs no writer was given before (cluster mode) */
} hubu_store_op_kind;

typedef enum {
  HUBU_STORE_OK = 0,
  HUBU_STORE_DUPLICATE,
  HUBU_STORE_NOT_FOUND,
  HUBU_STORE_EXISTS,
  HUBU_STORE_ERROR,        /* failed; error says why (the store logged it) */
  HUBU_STORE_RETRY,        /* failed for a reason that may pass (the database was busy or unreachable): nothing was
                              written, and the same op may be submitted again later */
  HUBU_STORE_SEQ_TAKEN,    /* APPEND: the message's (session_id, seq) is taken by another stored message, or is at or
                              below the session's fence (abandoned by a PULL that proved it absent). Nothing was
                              stored for this op (the batch's other ops are not affected): a stale seq allocator;
                              the message needs a new seq. A send-key duplicate is DUPLICATE even when its seq is
                              taken too. */
  HUBU_STORE_DEVICE_MOVED, /* APPEND with device_epoch: the sending device's epoch is not device_epoch any more
                              (another node claimed the device, DEVICE_LOAD with claim). Nothing was stored for
                              this op (the batch's other ops are not affected); the device's sends are the new
                              node's now. A send-key duplicate is DUPLICATE (that wins); a moved device's op is
                              DEVICE_MOVED even when its seq is taken or fenced too. */
} hubu_store_status;

/* "OK", "DUPLICATE", ..., "DEVICE_MOVED"; "?" for a value that is none of them. */
const char *hubu_store_status_name(hubu_store_status status);

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

/* ---- each kind's inputs and outputs ----
 * "in" fields are filled by the caller before submit; "out" fields by the
 * store, valid in done with the status named. Owned pointers, in or out, are
 * freed by hubu_store_op_free; a caller takes one by setting it to NULL. */

/* APPEND: OK, DUPLICATE, SEQ_TAKEN, DEVICE_MOVED, ERROR or RETRY. When the session may be
 * new (core decides: hubu_session_describe_new), the op names the session row
 * and members to create with it; the first append of a batch to a session the
 * store lacks makes it. */
typedef struct {
  hubu_msg *msg;                    /* in: the message (a reference owned by the op) */
  char new_kind[HUBU_KIND_MAX + 1]; /* in: the new session's kind, "direct", "group", ... ("": "custom") */
  char **new_members;               /* in: the new session's users: owned array of owned strings */
  size_t n_new_members;             /* in */
  uint64_t device_epoch;            /* in: the sender device's epoch as this node's claim answered (DEVICE_LOAD);
                                       0: not checked. Another epoch in the store: DEVICE_MOVED. The store reads
                                       it in the append's transaction, serialised with claims */
  uint64_t log_pos;                 /* out, OK: the message's position in the store's log */
  int in_doubt;                     /* out, RETRY: it may have been stored all the same (its COMMIT's answer
                                       was lost and the store could not tell); a resend is stored once */
  /* out: with OK, the message's own session, seq and msg_id; with DUPLICATE, those of the message stored
   * before for the same sender, device and client_id (the first copy of a resent SEND); with SEQ_TAKEN and
   * DEVICE_MOVED, the message's own session (seq and msg_id 0) */
  char stored_session_id[HUBU_SESSION_ID_MAX + 1];
  uint64_t stored_seq;
  uint64_t stored_msg_id;
} hubu_store_append_op;

/* DEVICE_LOAD: OK, ERROR or RETRY.
 *
 * Without claim, a read: last_client_id and the device's epoch as stored.
 * With claim (cluster mode: the node where the device says HELLO), in one
 * durable transaction serialised with appends (SQLite: its write lock;
 * MariaDB: one round trip that changes the log counter row, as the fence's
 * raise does, and ends in COMMIT, so a stalled node holds no lock): the
 * device's row is made if missing, its epoch raised by one, and
 * last_client_id read after the raise. Every append that committed before
 * the claim is counted in last_client_id; every append after it with the old
 * epoch is DEVICE_MOVED. A claim whose answer was lost (RETRY) may have
 * raised the epoch all the same: the next claim raises it again. */
typedef struct {
  char user[HUBU_ID_MAX + 1];   /* in */
  char device[HUBU_ID_MAX + 1]; /* in */
  int claim;                    /* in: 1: raise the device's epoch (above) */
  uint64_t last_client_id;      /* out, OK: the highest client_id stored from the device (0: none) */
  uint64_t epoch;               /* out, OK: the device's epoch (with claim: the new one; 0: never claimed) */
} hubu_store_device_load_op;

/* FIND_SEND: where a device's send was stored (OK), or NOT_FOUND. */
typedef struct {
  char user[HUBU_ID_MAX + 1];               /* in: the sender */
  char device[HUBU_ID_MAX + 1];             /* in: the sender's device */
  uint64_t client_id;                       /* in: the send's client_id */
  char session_id[HUBU_SESSION_ID_MAX + 1]; /* out, OK */
  uint64_t seq;                             /* out, OK */
  uint64_t msg_id;                          /* out, OK */
} hubu_store_find_send_op;

/* SESSION_LOAD: a session's row and members (OK), or NOT_FOUND. */
typedef struct {
  char session_id[HUBU_SESSION_ID_MAX + 1]; /* in */
  char kind[HUBU_KIND_MAX + 1];             /* out, OK: "direct", "group", "custom" */
  uint64_t max_seq;                         /* out, OK: the highest seq stored */
  uint64_t min_seq;                         /* out, OK */
  char **members;                           /* out, OK: by user id; owned array of owned strings */
  size_t n_members;                         /* out, OK */
} hubu_store_session_load_op;

/* SESSION_CREATE: OK, or EXISTS (nothing written). */
typedef struct {
  char session_id[HUBU_SESSION_ID_MAX + 1]; /* in */
  char kind[HUBU_KIND_MAX + 1];             /* in: "group", ... ("": as the id says, hubu_session_kind_of) */
  char **members;                           /* in: owned array of owned strings */
  size_t n_members;                         /* in */
  char role[HUBU_KIND_MAX + 1];             /* in: the members' role ("": "member") */
} hubu_store_session_create_op;

/* MEMBER_ADD and MEMBER_REMOVE. */
typedef struct {
  char session_id[HUBU_SESSION_ID_MAX + 1]; /* in */
  char user[HUBU_ID_MAX + 1];               /* in: the member */
  char role[HUBU_KIND_MAX + 1];             /* in, MEMBER_ADD: "member", "owner"; "": "member" for a new
                                               member, an existing one keeps its role */
} hubu_store_member_op;

/* PULL: a session's messages after a seq.
 *
 * settle_ms 0 (a single node: its own appends settle in order): the page as
 * stored, seq > after_seq, at most limit; max_seq the highest seq stored.
 *
 * settle_ms > 0 (cluster mode): the page up to the **committed watermark**,
 * the highest seq below which every seq is stored or abandoned. The page is
 * walked from after_seq; a hole (seqs missing between after_seq and the first
 * row, or between two rows) is proven empty when it lies at or below the
 * session's fence, or when the row just above it has a server_time_ms more
 * than settle_ms before now (the node that held a seq of the hole would have
 * stored it by then, unless it died or stalled). Proving a hole above the
 * fence raises the fence to (the row above it).seq - 1, in one durable
 * transaction (on MariaDB one round trip ending in COMMIT, so a stalled node
 * never holds the lock appends need), and the page is read again, since a
 * row may have landed in the hole just before the fence; that second walk
 * proves holes by the fence only. The first hole not proven ends the page:
 * msgs holds the rows below it and has_more is 0. A writer stalled past
 * settle_ms that comes back is refused (APPEND answers SEQ_TAKEN).
 * max_seq is then the watermark: the last row of msgs when the page ended at
 * a hole not proven or at the limit; otherwise the highest seq stored (the
 * last row of msgs); with no row in msgs, min(after_seq, the highest seq
 * stored). fenced counts the seqs this PULL proved empty by raising the
 * fence (0 when the fence was already above its holes). */
typedef struct {
  char session_id[HUBU_SESSION_ID_MAX + 1]; /* in */
  uint64_t after_seq;                       /* in */
  uint32_t limit;                           /* in: most messages (0: 100; at most 1000) */
  uint32_t settle_ms;                       /* in: 0, or the committed watermark's settle time (above) */
  char user[HUBU_ID_MAX + 1];               /* in: who pulls (the caller's; named in the store's log) */
  hubu_msg **msgs;                          /* out, OK: seq > after_seq, ascending; owned array of references */
  size_t n_msgs;                            /* out, OK */
  int has_more;                             /* out, OK: more follow the last of msgs */
  uint64_t max_seq;                         /* out, OK: the highest seq stored in the session; with settle_ms, the
                                               committed watermark (above) */
  uint64_t fenced;                          /* out, OK, settle_ms only: seqs proven empty by raising the fence */
} hubu_store_pull_op;

/* SYNC. */
typedef struct {
  char user[HUBU_ID_MAX + 1];       /* in */
  hubu_store_session_state *states; /* out, OK: every session the user is a member of; owned */
  size_t n_states;                  /* out, OK */
} hubu_store_sync_op;

/* CURSORS_SAVE: each cursor moves forward only. */
typedef struct {
  hubu_store_cursor *cursors; /* in: owned */
  size_t n_cursors;           /* in */
} hubu_store_cursors_save_op;

/* KV_GET, KV_SET, KV_DELETE: a plugin's durable key/value (im.kv). */
typedef struct {
  char plugin[HUBU_PLUGIN_NAME_MAX + 1]; /* in: whose key */
  char *key;                             /* in: owned */
  uint8_t *value;                        /* KV_SET in, KV_GET out (OK): owned */
  size_t value_len;                      /* as value */
} hubu_store_kv_op;

/* LOG_READ: messages in the order they were stored, after a log position. */
typedef struct {
  uint64_t after_pos; /* in: a log position (0: from the start) */
  uint32_t limit;     /* in: most messages (0: 100; at most 1000) */
  char *plugin;       /* in: owned; the plugin that reads (the caller's: the store does not use it) */
  hubu_msg **msgs;    /* out, OK: log_pos > after_pos, in log order, each with its log_pos; owned array of
                         references */
  size_t n_msgs;      /* out, OK */
  int has_more;       /* out, OK: more follow the last of msgs */
  uint64_t max_pos;   /* out, OK: the highest log position stored */
} hubu_store_log_read_op;

/* SEQ_LEASE: cluster mode's allocator (cluster/redis_seq.h) reserves, durably,
 * a block of a session's seqs that no node can have handed out: lo is above
 * every seq leased for the session before, above every seq stored in it,
 * above its fence (PULL), and above floor. The lease survives the loss of
 * every node and of Redis; the block is the lease's even if it is never used
 * (holes are legal). */
typedef struct {
  char session_id[HUBU_SESSION_ID_MAX + 1]; /* in */
  uint64_t floor;                           /* in: lo is above it */
  uint32_t count;                           /* in: seqs wanted (0: 1) */
  uint64_t lo, hi;                          /* out, OK: the block [lo, hi], hi - lo + 1 == count */
} hubu_store_seq_lease_op;

/* One operation. Made with hubu_store_op_new and freed with
 * hubu_store_op_free, both on the loop thread. Between submit and done the
 * store owns it; in done, the callback owns it again (and usually frees it).
 * Only the member of the union that kind names is used. */
struct hubu_store_op {
  hubu_store_op_kind kind;
  hubu_store_status status;
  hubu_store_done_cb done;
  void *ud;            /* the caller's: never read or written by the store */
  void *ud2;           /* the caller's */
  uint64_t conn_id;    /* the caller's */
  uint64_t request_id; /* the caller's */
  hubu_store_op *next; /* queue link; the store's while queued */
  char error[160];     /* ERROR, RETRY: what failed, for the log */
  union {
    hubu_store_append_op append;
    hubu_store_device_load_op device_load;
    hubu_store_find_send_op find_send;
    hubu_store_session_load_op session_load;
    hubu_store_session_create_op session_create;
    hubu_store_member_op member; /* MEMBER_ADD, MEMBER_REMOVE */
    hubu_store_pull_op pull;
    hubu_store_sync_op sync;
    hubu_store_cursors_save_op cursors_save;
    hubu_store_kv_op kv; /* KV_GET, KV_SET, KV_DELETE */
    hubu_store_log_read_op log_read;
    hubu_store_seq_lease_op seq_lease;
  };
};

typedef struct hubu_store hubu_store;

typedef struct {
  uint64_t batches;    /* transactions of APPENDs committed */
  uint64_t appended;   /* messages stored */
  uint64_t last_batch; /* size of the latest batch */
  uint64_t max_batch_seen;
  uint64_t commit_us_total; /* time spent in append transactions */
  uint64_t queued;          /* ops waiting now */
} hubu_store_stats;

hubu_store_op *hubu_store_op_new(hubu_store_op_kind kind);
/* Frees what op owns, as its kind says, and op. */
void hubu_store_op_free(hubu_store_op *op);
/* The session and the user an op concerns, for log lines: "" when it names
 * none (an APPEND's are its message's; FIND_SEND's session is known once found). */
const char *hubu_store_op_session_id(const hubu_store_op *op);
const char *hubu_store_op_user(const hubu_store_op *op);
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

/* 1 when the database answers, 0 when the backend reports it unreachable
 * (why is then written into why, if given). Any thread. */
int hubu_store_healthy(hubu_store *s, char *why, size_t why_size);

/* ---- Backends (store_sqlite.c, store_mariadb.c) ----
 * Called on the store thread only, or directly by tools and tests that need
 * no thread (hubuctl group create, the store benchmark). */
typedef struct hubu_store_backend {
  const char *name;
  const char *scheme;                                                      /* the URL prefix it serves: "sqlite:" */
  void *(*open)(const hubu_store_config *cfg, char *err, size_t err_size); /* opens + migrates */
  void (*close)(void *db);
  /* APPENDs ops[0..n) in one transaction and makes it durable per cfg->fsync;
   * sets each op's status (OK, DUPLICATE with the stored ids, or ERROR for all
   * when the transaction failed and was rolled back). Returns 0 or -1. */
  int (*append_batch)(void *db, hubu_store_op **ops, size_t n);
  /* Runs one op of any other kind; sets status and outputs. */
  void (*execute)(void *db, hubu_store_op *op);
  /* Optional. NULL while the database answers; else why not, written into
   * buf (a server backend whose database went away). */
  const char *(*health)(void *db, char *buf, size_t size);
  /* Optional. Called by the store thread when it has nothing to do: a
   * backend that lost its database reconnects here. Returns the ms until it
   * wants to be called again, or -1 for "only when idle next time". */
  long (*idle)(void *db);
} hubu_store_backend;

extern const hubu_store_backend hubu_store_sqlite;
extern const hubu_store_backend hubu_store_mariadb;

/* The backend whose scheme starts url, or NULL (err says which are known). */
const hubu_store_backend *hubu_store_backend_for_url(const char *url, char *err, size_t err_size);

/* The default store of a data directory: "sqlite:DIR/hubu.db" into out. 0, or -1 when it does not fit. */
int hubu_store_default_url(const char *data_dir, char *out, size_t size);

/* "direct" for d:a:b, "group" for g:name, else (a custom or malformed id) "custom". */
const char *hubu_session_kind_of(const char *session_id);

#endif

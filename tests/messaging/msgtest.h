/* msgtest.h — helpers for the messaging tests (tests/messaging/msg_*.c), on top
 * of the end-to-end harness (tests/integration/harness.h): data dirs and
 * stores that outlive a server (for groups made with hubuctl before the
 * start, and for restarts on the same store) on SQLite or MariaDB, a direct
 * read-only look at what is stored, request/answer helpers over blocking
 * sockets, and non-blocking connections for the tests that drive many
 * clients from one poll loop.
 * Invariant: every temp dir and MariaDB database made here is removed at
 * exit, on REQUIRE and on the harness's watchdog, like the harness's own. */
#ifndef HUBU_MSGTEST_H
#define HUBU_MSGTEST_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "harness.h"
#include "wire.h"

/* Sanitized builds (and HUBU_TEST_QUICK=1) scale the heavy tests down. */
#ifdef HUBU_MSG_SANITIZED
#define MT_SANITIZED 1
#else
#define MT_SANITIZED 0
#endif
/* 1 when HUBU_TEST_QUICK is set to something other than "" or "0". */
int mt_quick(void);

/* ---- data dirs and the store ---------------------------------------------- */

/* The store the servers run on: SQLite in data/hubu.db (the default), or
 * MariaDB when HUBU_TEST_STORE=mariadb, with HUBU_MARIADB_ENV naming the env
 * file of scripts/mariadb-private.sh (tests/mariadb.cmake sets it). On
 * MariaDB every mt_dir gets a fresh database, hubu_m<pid>_<n>, made as the
 * test account and dropped at exit like the dirs; the account's password
 * reaches hubud and hubuctl as HUBU_STORE_PASSWORD in this process's
 * environment, never in a URL. */
int mt_store_is_mariadb(void);
const char *mt_store_name(void); /* "sqlite" or "mariadb" */

typedef struct {
  char dir[64];      /* /tmp/hubu-msg-XXXXXX */
  char data[96];     /* dir/data: hubud's --data */
  char db[112];      /* data/hubu.db (SQLite only) */
  char store[192];   /* hubud's --store: sqlite:<db>, or mariadb://USER@127.0.0.1:PORT/<database> */
  char database[64]; /* the MariaDB database, "" on SQLite */
} mt_dir;

/* Makes a fresh temp dir with an empty data/ in it (and, on MariaDB, a fresh
 * database); REQUIREs success. */
void mt_dir_make(mt_dir *d);
/* Runs `hubuctl group create GROUP USER...` on d's store (users: NULL-terminated).
 * Returns hubuctl's exit status. Run it before hubud first uses the group. */
int mt_group_create(const mt_dir *d, const char *group, ...) __attribute__((sentinel));

/* Runs argv (argv[0] a path; stdout to /dev/null) and waits up to
 * timeout_ms (then kills it). Returns its exit status, or -1. */
int mt_run(const char *const *argv, int timeout_ms);
/* KEY's value in an env file of scripts/mariadb-private.sh or
 * scripts/redis-private.sh. 0, or -1 when the file or the key is missing. */
int mt_env_value(const char *file, const char *key, char *out, size_t size);

/* hubud on d's data dir and store, warnings only in its log; further flags, then NULL. */
#define MT_START(s, d, ...) \
  e2e_server_start((s), "--data", (d)->data, "--store", (d)->store, "--log-level", "warn", __VA_ARGS__)

/* One row of mt_store_select: n columns as bytes (NUL-terminated; NULL for an
 * SQL NULL) and their lengths. Integers come as decimal text. */
typedef void (*mt_row_fn)(void *ctx, int n, const char *const *cols, const size_t *lens);
/* Runs a SELECT on d's store, whichever it is (a read-only look at what is
 * stored, while hubud runs or not), calling fn per row. Returns the number
 * of rows, or -1 after reporting why. */
long mt_store_select(const mt_dir *d, const char *sql, mt_row_fn fn, void *ctx);
/* The first column of the first row as an unsigned number; -1 (reported) on failure. */
long long mt_store_count(const mt_dir *d, const char *sql);

/* ---- blocking request/answer helpers -------------------------------------- */

/* Connects, HELLO (user, device), reads HELLO_OK. Returns the fd or -1 (reported).
 * *last_client_id (may be NULL) receives HelloOk.last_client_id. */
int mt_hello_at(const char *file, int line, int port, const char *user, const char *device, uint64_t *last_client_id);
#define MT_HELLO(port, user, device, last) mt_hello_at(__FILE__, __LINE__, (port), (user), (device), (last))

/* One SEND with optional content_type and one meta entry (key NULL: none). */
int mt_send_full(int fd, uint64_t client_id, const char *session, const void *body, size_t body_len,
                 const char *content_type, const char *meta_key, const char *meta_value);
int mt_send(int fd, uint64_t client_id, const char *session, const char *body);
/* Appends a SEND frame to b (for pipelining many in one write). */
int mt_append_send(hubu_buf *b, uint64_t client_id, const char *session, const void *body, size_t body_len);
int mt_deliver_ack(int fd, const char *session, uint64_t seq);
int mt_pull_request(int fd, uint64_t request_id, const char *session, uint64_t after_seq, uint32_t limit);
/* SYNC with n known cursors: sessions[i] held up to seqs[i]. */
int mt_sync_request(int fd, uint64_t request_id, size_t n, const char *const *sessions, const uint64_t *seqs);

/* When set, the mt_expect_* helpers (other than mt_expect_push_at and
 * mt_expect_quiet_at) skip PUSH and PULL_HINT frames: for cases whose
 * receivers are online but not under test. */
extern int mt_skip_pushes;

/* The next frame that is not a server PING (PINGs are answered with PONG).
 * Returns E2E_READ_OK and fills *f, or the read result. */
int mt_next_frame(int fd, int timeout_ms, e2e_frame *f);
/* The next frame, which must be of type; returns 1 with *f filled, else reports and returns 0. */
int mt_expect_frame_at(const char *file, int line, int fd, uint8_t type, int timeout_ms, e2e_frame *f);
/* Decoded answers: NULL (reported) when the next frame is something else.
 * Free with the matching hubu__v1__*__free_unpacked(x, NULL). */
Hubu__V1__SendAck *mt_expect_ack_at(const char *file, int line, int fd, int timeout_ms);
Hubu__V1__Push *mt_expect_push_at(const char *file, int line, int fd, int timeout_ms);
Hubu__V1__PullResult *mt_expect_pull_at(const char *file, int line, int fd, int timeout_ms);
Hubu__V1__SyncResult *mt_expect_sync_at(const char *file, int line, int fd, int timeout_ms);
Hubu__V1__PullHint *mt_expect_hint_at(const char *file, int line, int fd, int timeout_ms);
#define MT_ACK(fd) mt_expect_ack_at(__FILE__, __LINE__, (fd), E2E_WAIT_MS)
#define MT_PUSH(fd) mt_expect_push_at(__FILE__, __LINE__, (fd), E2E_WAIT_MS)
#define MT_PULL_RESULT(fd) mt_expect_pull_at(__FILE__, __LINE__, (fd), E2E_WAIT_MS)
#define MT_SYNC_RESULT(fd) mt_expect_sync_at(__FILE__, __LINE__, (fd), E2E_WAIT_MS)
#define MT_HINT(fd) mt_expect_hint_at(__FILE__, __LINE__, (fd), E2E_WAIT_MS)
/* Nothing but server PINGs arrives for ms milliseconds (and no EOF). */
int mt_expect_quiet_at(const char *file, int line, int fd, int ms);
#define MT_QUIET(fd, ms) mt_expect_quiet_at(__FILE__, __LINE__, (fd), (ms))
/* Sends one SEND and reads its SEND_ACK (the next frame). */
Hubu__V1__SendAck *mt_send_ack_at(const char *file, int line, int fd, uint64_t client_id, const char *session,
                                  const char *body);
#define MT_SEND_ACK(fd, cid, session, body) mt_send_ack_at(__FILE__, __LINE__, (fd), (cid), (session), (body))
/* PULL and its PULL_RESULT. */
Hubu__V1__PullResult *mt_pull_at(const char *file, int line, int fd, uint64_t request_id, const char *session,
                                 uint64_t after_seq, uint32_t limit);
#define MT_PULL(fd, rid, session, after, limit) mt_pull_at(__FILE__, __LINE__, (fd), (rid), (session), (after), (limit))

/* ---- non-blocking connections ------------------------------------------- */

/* A connection driven from a poll loop: frames queued to out, bytes read to in. */
typedef struct {
  int fd;     /* -1 when closed */
  int dead;   /* EOF or an error was seen: close and reconnect */
  int paused; /* not read (a stalled reader) */
  hubu_buf in, out;
} mt_nb;

/* Blocking connect to 127.0.0.1:port, then O_NONBLOCK. 0, or -1 (nothing reported). */
int mt_nb_connect(mt_nb *c, int port);
void mt_nb_close(mt_nb *c);
/* Queues a frame with msg's packed body (NULL: empty). 0 or -1. */
int mt_nb_queue(mt_nb *c, uint8_t type, const ProtobufCMessage *msg);
int mt_nb_queue_hello(mt_nb *c, const char *user, const char *device);
/* Polls the open connections (reads the unpaused ones, writes what is queued)
 * for at most timeout_ms; sets dead on EOF or errors. */
void mt_nb_poll(mt_nb *const *conns, size_t n, int timeout_ms);
/* The frame at the front of c->in: 1 and type/body/len set, 0 when incomplete.
 * A malformed header marks c dead. Consume it with mt_nb_consume(c, size). */
int mt_nb_frame(mt_nb *c, uint8_t *type, const uint8_t **body, uint32_t *len, size_t *size);
void mt_nb_consume(mt_nb *c, size_t size);
/* Bytes waiting in the kernel for c (SIOCINQ), -1 when unknown. */
long mt_nb_inq(const mt_nb *c);

/* ---- misc ------------------------------------------------------------------ */

/* xorshift64* random numbers; seed 0 picks one from the clock. */
uint64_t mt_rand(uint64_t *state);
/* Uniform in [lo, hi]. */
uint64_t mt_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);
/* The seed for this run: $HUBU_MSG_SEED or the clock. Printed. */
uint64_t mt_seed(void);

#endif

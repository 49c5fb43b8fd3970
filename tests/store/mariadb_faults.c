/* mariadb_faults.c — the MariaDB store when the connection fails at the
 * worst moments, made to happen on purpose: hubu_store talks to the private
 * server through a TCP relay in this process that can cut the connection
 *   - after relaying a COMMIT and swallowing its answer (it committed; the
 *     store cannot know): every message must be acknowledged OK, once;
 *   - before relaying a COMMIT (nothing committed): RETRY, and a resend with
 *     the same send key is stored once;
 *   - or refuse every connection (the database is away): ops answer RETRY at
 *     once, health says so, and both recover when the database is back;
 * a lock wait that times out (another writer holds the log counter) is
 * rolled back and run again; two writers' log positions reach a reader
 * dense and in order; a node that stalls (SIGSTOP) right after sending the
 * transaction that raises a session's fence holds no lock meanwhile; a
 * row stored in a hole just before the fence covers it is still returned;
 * and a node stalled between an append's two round trips loses its
 * connection, and the log counter's lock, to the server's idle transaction
 * timeout, so the other nodes' appends go on and its own end as RETRY.
 * `mariadb_faults CASE`; needs HUBU_MARIADB_ENV (tests/mariadb.cmake). */
#include <arpa/inet.h>
#include <errno.h>
#include <mysql.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "log.h"
#include "mariadb_env.h"
#include "store.h"

#define SKIP 77

/* ---- the private server ---- */

static char db_port[16], db_user[80], db_password[128], db_name[64];

static int admin_sql(const char *sql) {
  MYSQL *c = mysql_init(NULL);
  int rc = -1;
  if (c && mysql_real_connect(c, "127.0.0.1", db_user, db_password, NULL, (unsigned)atoi(db_port), NULL, 0) &&
      mysql_query(c, sql) == 0)
    rc = 0;
  else
    fprintf(stderr, "mariadb: %s: %s\n", sql, c ? mysql_error(c) : "out of memory");
  mysql_close(c);
  return rc;
}

/* ---- the relay ---- */

typedef enum {
  RELAY_PASS = 0,
  RELAY_CUT_AFTER_COMMIT,  /* relay the packet holding COMMIT, swallow the answer, cut */
  RELAY_CUT_BEFORE_COMMIT, /* cut instead of relaying the packet holding COMMIT */
  RELAY_REFUSE,            /* close every new connection at once, and open ones at their next request */
  RELAY_STALL_AT_LOCK,     /* relay the first packet naming log_counter (it takes its lock), then relay nothing
                              for STALL_MS */
  RELAY_STALL_BEFORE_LOCK, /* hold the first packet naming log_counter for STALL_MS, then relay it */
} relay_mode;

#define STALL_MS 3000

static _Atomic int relay_mode_now = RELAY_PASS;
static _Atomic int relay_cuts;
static _Atomic int relay_stalls;
static int relay_listen_fd = -1;
static int relay_port;

static int connect_upstream(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(db_port))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
  if (fd >= 0) close(fd);
  return -1;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* A length-encoded integer of the MySQL protocol at p (n bytes left); its size into *len, 0 if cut short. */
static uint64_t lenenc(const uint8_t *p, size_t n, size_t *len) {
  size_t size = !n ? 0 : p[0] < 0xfb ? 1 : p[0] == 0xfc ? 3 : p[0] == 0xfd ? 4 : p[0] == 0xfe ? 9 : 1;
  *len = size <= n ? size : 0;
  if (!*len) return 0;
  if (size == 1) return p[0];
  uint64_t v = 0;
  for (size_t i = size - 1; i >= 1; i--) v = v << 8 | p[i];
  return v;
}

/* Reads the server's answer to a multi-statement COM_QUERY of statements
 * returning no rows: OK packets until one without SERVER_MORE_RESULTS_EXIST
 * (0x0008), or an ERR packet. Bounded: 10 s without data ends it. */
static void answer_wait(int server) {
  static uint8_t got[1 << 16];
  size_t have = 0;
  for (;;) {
    struct pollfd s = {.fd = server, .events = POLLIN};
    if (poll(&s, 1, 10000) <= 0) return;
    ssize_t n = read(server, got + have, sizeof got - have);
    if (n <= 0) return;
    have += (size_t)n;
    size_t off = 0;
    while (have - off >= 4) {
      size_t len = got[off] | (size_t)got[off + 1] << 8 | (size_t)got[off + 2] << 16;
      if (have - off < 4 + len) break;
      const uint8_t *pay = got + off + 4;
      if (len && pay[0] == 0xff) return; /* ERR: the rest did not run */
      if (len && pay[0] == 0x00) {
        size_t a, b;
        lenenc(pay + 1, len - 1, &a);
        if (a) lenenc(pay + 1 + a, len - 1 - a, &b);
        if (a && b && 1 + a + b + 2 <= len) {
          unsigned status = pay[1 + a + b] | (unsigned)pay[2 + a + b] << 8;
          if (!(status & 0x0008)) return; /* the last statement's OK */
        }
      }
      off += 4 + len;
    }
    memmove(got, got + off, have - off);
    have -= off;
    if (have == sizeof got) return;
  }
}

static void *relay_conn(void *arg) {
  int client = (int)(intptr_t)arg;
  int server = connect_upstream();
  char buf[65536];
  if (server < 0) goto done;
  for (;;) {
    struct pollfd p[2] = {{.fd = client, .events = POLLIN}, {.fd = server, .events = POLLIN}};
    if (poll(p, 2, 30000) <= 0) break;
    if (p[0].revents) {
      ssize_t n = read(client, buf, sizeof buf);
      if (n <= 0 || atomic_load(&relay_mode_now) == RELAY_REFUSE) break; /* away: open connections break too */
      int commit = memmem(buf, (size_t)n, "COMMIT", 6) != NULL;
      int expected = commit ? RELAY_CUT_BEFORE_COMMIT : -1;
      if (commit && atomic_compare_exchange_strong(&relay_mode_now, &expected, RELAY_PASS)) {
        atomic_fetch_add(&relay_cuts, 1);
        break; /* the COMMIT never reaches the server */
      }
      int lock = memmem(buf, (size_t)n, "log_counter", 11) != NULL;
      expected = lock ? RELAY_STALL_BEFORE_LOCK : -1;
      if (lock && atomic_compare_exchange_strong(&relay_mode_now, &expected, RELAY_PASS)) {
        atomic_fetch_add(&relay_stalls, 1);
        usleep(STALL_MS * 1000);
      }
      if (write_all(server, buf, (size_t)n) != 0) break;
      expected = lock ? RELAY_STALL_AT_LOCK : -1;
      if (expected >= 0 && atomic_compare_exchange_strong(&relay_mode_now, &expected, RELAY_PASS)) {
        /* as a client stopped with SIGSTOP just after sending: its socket buffers the answer, it reads nothing */
        atomic_fetch_add(&relay_stalls, 1);
        usleep(STALL_MS * 1000);
      }
      expected = commit ? RELAY_CUT_AFTER_COMMIT : -1;
      if (commit && atomic_compare_exchange_strong(&relay_mode_now, &expected, RELAY_PASS)) {
        /* wait for the server's whole answer (so the COMMIT ran), and drop it */
        answer_wait(server);
        atomic_fetch_add(&relay_cuts, 1);
        break;
      }
    }
    if (p[1].revents) {
      ssize_t n = read(server, buf, sizeof buf);
      if (n <= 0 || write_all(client, buf, (size_t)n) != 0) break;
    }
  }
done:
  shutdown(client, SHUT_RDWR);
  close(client);
  if (server >= 0) close(server);
  return NULL;
}

static void *relay_accept(void *arg) {
  (void)arg;
  for (;;) {
    int c = accept(relay_listen_fd, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      return NULL; /* the listener was shut down */
    }
    if (atomic_load(&relay_mode_now) == RELAY_REFUSE) {
      close(c);
      continue;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, relay_conn, (void *)(intptr_t)c) != 0) {
      close(c);
      continue;
    }
    pthread_detach(t);
  }
}

static int relay_start(void) {
  relay_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (relay_listen_fd < 0 || bind(relay_listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(relay_listen_fd, 16) != 0 || getsockname(relay_listen_fd, (struct sockaddr *)&a, &len) != 0)
    return -1;
  relay_port = ntohs(a.sin_port);
  pthread_t t;
  if (pthread_create(&t, NULL, relay_accept, NULL) != 0) return -1;
  pthread_detach(t);
  return 0;
}

/* ---- the store ---- */

static uv_loop_t loop;
static hubu_store *store;
static char url[400];

static int open_store(void) {
  char err[256] = "";
  hubu_store_config cfg = {.url = url, .fsync = HUBU_FSYNC_BATCH};
  store = hubu_store_open(&loop, &cfg, err, sizeof err);
  if (!CHECK(store != NULL)) fprintf(stderr, "    hubu_store_open: %s\n", err);
  return store ? 0 : -1;
}

static void close_store(void) {
  if (!store) return;
  hubu_store_close(store);
  store = NULL;
  uv_run(&loop, UV_RUN_DEFAULT);
}

typedef struct {
  hubu_store_op *ops[16];
  size_t n, done;
} batch;

static void on_done(hubu_store_op *op) { ((batch *)op->ud)->done++; }

/* Appends n messages (client_ids first.., seqs first..) as close to one batch as
 * submitting them together gets, and waits for all. */
static void append_batch(batch *b, size_t n, uint64_t first) {
  memset(b, 0, sizeof *b);
  for (size_t i = 0; i < n; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "message %llu", (unsigned long long)(first + i));
    hubu_msg *m = hubu_msg_new("d:alice:bob", first + i, 1000 + first + i, "alice", "phone", first + i,
                               (const uint8_t *)body, (size_t)len, "text/plain", NULL, 0, 1700000000000ull);
    hubu_store_op *op = hubu_store_op_new(HUBU_STORE_APPEND);
    if (!m || !op) abort();
    op->append.msg = m;
    snprintf(op->append.new_kind, sizeof op->append.new_kind, "direct");
    op->ud = b;
    op->done = on_done;
    b->ops[b->n++] = op;
  }
  for (size_t i = 0; i < n; i++) hubu_store_submit(store, b->ops[i]);
  while (b->done < n) uv_run(&loop, UV_RUN_ONCE);
}

static void batch_free(batch *b) {
  for (size_t i = 0; i < b->n; i++) hubu_store_op_free(b->ops[i]);
  b->n = 0;
}

static hubu_store_op *run_op(hubu_store_op *op) {
  batch b = {.n = 1};
  op->ud = &b;
  op->done = on_done;
  hubu_store_submit(store, op);
  while (!b.done) uv_run(&loop, UV_RUN_ONCE);
  return op;
}

/* The seqs stored in d:alice:bob, each checked to appear once. */
static size_t stored_count(void) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_PULL);
  snprintf(op->pull.session_id, sizeof op->pull.session_id, "d:alice:bob");
  op->pull.limit = 1000;
  run_op(op);
  size_t n = op->status == HUBU_STORE_OK ? op->pull.n_msgs : (size_t)-1;
  for (size_t i = 1; op->status == HUBU_STORE_OK && i < op->pull.n_msgs; i++)
    CHECK(op->pull.msgs[i]->seq > op->pull.msgs[i - 1]->seq);
  hubu_store_op_free(op);
  return n;
}

/* ---- cases ---- */

static void commit_answer_lost(void) {
  atomic_store(&relay_mode_now, RELAY_CUT_AFTER_COMMIT);
  batch b;
  append_batch(&b, 3, 1);
  CHECK_EQ_U64(atomic_load(&relay_cuts), 1);
  for (size_t i = 0; i < b.n; i++) { /* committed: the store finds them by send key */
    CHECK_EQ_U64(b.ops[i]->status, HUBU_STORE_OK);
    CHECK(b.ops[i]->append.log_pos > 0);
    CHECK_EQ_U64(b.ops[i]->append.stored_seq, b.ops[i]->append.msg->seq);
  }
  batch_free(&b);
  CHECK_EQ_U64(stored_count(), 3);
  /* the same sends again: answered with the first copies, nothing stored twice */
  append_batch(&b, 3, 1);
  for (size_t i = 0; i < b.n; i++) {
    CHECK_EQ_U64(b.ops[i]->status, HUBU_STORE_DUPLICATE);
    CHECK_EQ_U64(b.ops[i]->append.stored_seq, i + 1);
  }
  batch_free(&b);
  CHECK_EQ_U64(stored_count(), 3);
}

static void commit_never_sent(void) {
  atomic_store(&relay_mode_now, RELAY_CUT_BEFORE_COMMIT);
  batch b;
  append_batch(&b, 3, 1);
  CHECK_EQ_U64(atomic_load(&relay_cuts), 1);
  /* the batch that met the cut answers RETRY; the store thread may have taken
   * the three as more than one batch, and the later ones were stored */
  CHECK_EQ_U64(b.ops[0]->status, HUBU_STORE_RETRY);
  int retried[3];
  size_t stored = 0;
  for (size_t i = 0; i < b.n; i++) {
    CHECK(b.ops[i]->status == HUBU_STORE_RETRY || b.ops[i]->status == HUBU_STORE_OK);
    retried[i] = b.ops[i]->status == HUBU_STORE_RETRY;
    stored += !retried[i];
  }
  batch_free(&b);
  CHECK_EQ_U64(stored_count(), stored);
  append_batch(&b, 3, 1); /* the resends: the retried ones stored, once; the others answered with their first copy */
  for (size_t i = 0; i < b.n; i++) CHECK_EQ_U64(b.ops[i]->status, retried[i] ? HUBU_STORE_OK : HUBU_STORE_DUPLICATE);
  batch_free(&b);
  append_batch(&b, 3, 1); /* and once more: the first copies */
  for (size_t i = 0; i < b.n; i++) CHECK_EQ_U64(b.ops[i]->status, HUBU_STORE_DUPLICATE);
  batch_free(&b);
  CHECK_EQ_U64(stored_count(), 3);
}

static void database_away_and_back(void) {
  batch b;
  append_batch(&b, 1, 1);
  CHECK_EQ_U64(b.ops[0]->status, HUBU_STORE_OK);
  batch_free(&b);
  CHECK(hubu_store_healthy(store, NULL, 0));
  /* the database goes away: open connections break at their next request, new ones are refused */
  atomic_store(&relay_mode_now, RELAY_REFUSE);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < 20; i++) { /* answered at once while down, not after a connect timeout each */
    append_batch(&b, 1, 2);
    CHECK_EQ_U64(b.ops[0]->status, HUBU_STORE_RETRY);
    batch_free(&b);
  }
  CHECK((uv_hrtime() - t0) / 1000000 < 5000);
  char why[192] = "";
  CHECK(!hubu_store_healthy(store, why, sizeof why));
  CHECK(strstr(why, "unreachable") != NULL);
  /* back: health recovers without traffic (the store thread retries while idle, backoff at most 5 s) */
  atomic_store(&relay_mode_now, RELAY_PASS);
  int healthy = 0;
  for (int i = 0; i < 160 && !healthy; i++) {
    usleep(50000);
    uv_run(&loop, UV_RUN_NOWAIT);
    healthy = hubu_store_healthy(store, NULL, 0);
  }
  CHECK(healthy);
  append_batch(&b, 1, 2);
  CHECK_EQ_U64(b.ops[0]->status, HUBU_STORE_OK);
  batch_free(&b);
  CHECK_EQ_U64(stored_count(), 2);
}

/* Another writer (a second node) holds the log counter past InnoDB's lock
 * wait (1 s here): the append's transaction times out, rolls back and runs
 * again, and succeeds once the other lets go (held 1.6 s: the second attempt
 * gets it; without the retry the first timeout would answer RETRY). Held
 * longer than every attempt together, the append answers RETRY after three
 * timeouts, not after the hold. */
typedef struct {
  MYSQL *conn;
  unsigned hold_ms;
} holder;

static void *release_later(void *arg) {
  holder *h = arg;
  usleep(h->hold_ms * 1000);
  mysql_query(h->conn, "COMMIT");
  return NULL;
}

static uint64_t append_while_counter_held(unsigned hold_ms, hubu_store_status want) {
  MYSQL *other = mysql_init(NULL);
  holder h = {other, hold_ms};
  uint64_t ms = 0;
  if (CHECK(other &&
            mysql_real_connect(other, "127.0.0.1", db_user, db_password, db_name, (unsigned)atoi(db_port), NULL, 0)) &&
      CHECK(mysql_query(other, "START TRANSACTION") == 0) &&
      CHECK(mysql_query(other, "SELECT last_pos FROM log_counter WHERE id = 1 FOR UPDATE") == 0)) {
    MYSQL_RES *res = mysql_store_result(other);
    if (res) mysql_free_result(res);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, release_later, &h) == 0);
    static uint64_t next_client_id = 1;
    batch b;
    uint64_t t0 = uv_hrtime();
    append_batch(&b, 1, next_client_id++); /* one: two could become two batches, one after the other */
    ms = (uv_hrtime() - t0) / 1000000;
    for (size_t i = 0; i < b.n; i++) CHECK_EQ_U64(b.ops[i]->status, want);
    batch_free(&b);
    pthread_join(t, NULL);
  }
  mysql_close(other);
  return ms;
}

static void lock_wait_timeout_retried(void) {
  uint64_t ms = append_while_counter_held(1600, HUBU_STORE_OK);
  CHECK(ms >= 1000); /* it waited through one timeout */
  CHECK_EQ_U64(stored_count(), 1);
  ms = append_while_counter_held(6000, HUBU_STORE_RETRY);
  if (!CHECK(ms >= 2500 && ms < 5500)) fprintf(stderr, "    answered after %llu ms\n", (unsigned long long)ms);
  CHECK_EQ_U64(stored_count(), 1);
}

/* Two writers (two nodes) append to one database while a third store reads
 * the log after the last position it saw: every page it gets starts right
 * after that position and has no hole, so a position is never seen before a
 * lower one (with AUTO_INCREMENT order a reader could see n+1 commit before n
 * and skip n for good). */
typedef struct {
  size_t pending;
} counter;

static void on_counted(hubu_store_op *op) {
  ((counter *)op->ud)->pending--;
  hubu_store_op_free(op);
}

static void submit_appends(hubu_store *to, counter *c, const char *sender, const char *session, uint64_t first,
                           size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t k = first + i;
    hubu_msg *m = hubu_msg_new(session, k, ((uint64_t)sender[0] << 32) | k, sender, "d1", k, (const uint8_t *)"x", 1,
                               "", NULL, 0, 1700000000000ull);
    hubu_store_op *op = hubu_store_op_new(HUBU_STORE_APPEND);
    if (!m || !op) abort();
    op->append.msg = m;
    op->ud = c;
    op->done = on_counted;
    c->pending++;
    hubu_store_submit(to, op);
  }
}

static void two_writers_log_dense(void) {
  char err[256] = "";
  char direct[400];
  snprintf(direct, sizeof direct, "mariadb://%s:%s@127.0.0.1:%s/%s", db_user, db_password, db_port, db_name);
  hubu_store_config cfg = {.url = direct, .fsync = HUBU_FSYNC_BATCH};
  hubu_store *a = hubu_store_open(&loop, &cfg, err, sizeof err);
  hubu_store *b = a ? hubu_store_open(&loop, &cfg, err, sizeof err) : NULL;
  if (!CHECK(a && b)) {
    fprintf(stderr, "    %s\n", err);
    if (a) hubu_store_close(a);
    close_store();
    return;
  }
  enum { ROUNDS = 60, PER = 25 };
  uint64_t last = 0, seen = 0, pages = 0, holes = 0;
  counter c = {0};
  for (int r = 0; r <= ROUNDS; r++) {
    if (r < ROUNDS) {
      submit_appends(a, &c, "ann", "d:ann:x", (uint64_t)r * PER + 1, PER);
      submit_appends(b, &c, "bob", "d:bob:y", (uint64_t)r * PER + 1, PER);
    }
    while (c.pending > (r < ROUNDS ? (size_t)PER : 0)) uv_run(&loop, UV_RUN_ONCE); /* reads race the commits */
    for (int more = 1; more;) {
      hubu_store_op *op = hubu_store_op_new(HUBU_STORE_LOG_READ);
      op->log_read.after_pos = last;
      op->log_read.limit = 1000;
      run_op(op);
      CHECK_EQ_U64(op->status, HUBU_STORE_OK);
      for (size_t i = 0; i < op->log_read.n_msgs; i++)
        if (op->log_read.msgs[i]->log_pos != last + 1 + i) holes++;
      if (op->log_read.n_msgs) last = op->log_read.msgs[op->log_read.n_msgs - 1]->log_pos;
      seen += op->log_read.n_msgs;
      pages++;
      more = op->log_read.has_more || (r == ROUNDS && c.pending);
      hubu_store_op_free(op);
    }
  }
  CHECK_EQ_U64(holes, 0);
  CHECK_EQ_U64(seen, 2 * ROUNDS * PER);
  CHECK_EQ_U64(last, 2 * ROUNDS * PER);
  CHECK(pages > ROUNDS);
  hubu_store_close(a);
  hubu_store_close(b);
  close_store(); /* the reader too: then the loop has nothing left and runs the close callbacks */
}

/* Cluster mode's fence: a PULL with settle_ms on this store (through the
 * relay) proves an old hole and raises the session's fence; the relay then
 * stalls this store for STALL_MS right after it sent the packet that takes
 * the log counter's lock, as a node stopped with SIGSTOP would. That packet
 * is the whole transaction, COMMIT included, so the server has finished it:
 * another node's appends (a store on a direct connection) go through at
 * once, a seq under the new fence refused, while the stalled PULL is still
 * waiting; then the PULL completes. */
static int other_done;
static void on_other_done(hubu_store_op *op) {
  (void)op;
  other_done++;
}

static hubu_store_op *append_op(const char *session, uint64_t seq, const char *sender, uint64_t client_id,
                                uint64_t time_ms) {
  char body[48];
  int len = snprintf(body, sizeof body, "%s seq %llu", session, (unsigned long long)seq);
  hubu_msg *m = hubu_msg_new(session, seq, (seq << 16) | client_id, sender, "phone", client_id, (const uint8_t *)body,
                             (size_t)len, "text/plain", NULL, 0, time_ms);
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_APPEND);
  if (!m || !op) abort();
  op->append.msg = m;
  snprintf(op->append.new_kind, sizeof op->append.new_kind, "group");
  return op;
}

static void fence_raise_leaves_no_lock_to_a_stalled_node(void) {
  char err[256] = "", direct[400];
  snprintf(direct, sizeof direct, "mariadb://%s:%s@127.0.0.1:%s/%s", db_user, db_password, db_port, db_name);
  hubu_store_config cfg = {.url = direct, .fsync = HUBU_FSYNC_BATCH};
  hubu_store *other = hubu_store_open(&loop, &cfg, err, sizeof err);
  if (!CHECK(other != NULL)) {
    fprintf(stderr, "    %s\n", err);
    return;
  }
  uint64_t old = 1700000000000ull; /* 2023: long settled */
  hubu_store_op *rows[2] = {append_op("g:fence", 1, "alice", 1, old), append_op("g:fence", 5, "alice", 2, old)};
  for (int i = 0; i < 2; i++) {
    run_op(rows[i]);
    CHECK_EQ_U64(rows[i]->status, HUBU_STORE_OK);
    hubu_store_op_free(rows[i]);
  }
  atomic_store(&relay_mode_now, RELAY_STALL_AT_LOCK);
  batch pulled = {.n = 1};
  hubu_store_op *pull = hubu_store_op_new(HUBU_STORE_PULL);
  snprintf(pull->pull.session_id, sizeof pull->pull.session_id, "g:fence");
  pull->pull.limit = 100;
  pull->pull.settle_ms = 60000;
  pull->ud = &pulled;
  pull->done = on_done;
  hubu_store_submit(store, pull);
  for (int i = 0; i < 200 && !atomic_load(&relay_stalls); i++) usleep(10000); /* the fence's packet is sent */
  CHECK_EQ_U64(atomic_load(&relay_stalls), 1);
  uint64_t t0 = uv_hrtime();
  hubu_store_op *late = append_op("g:fence", 3, "bob", 1, 1700000000000ull + 3);
  hubu_store_op *next = append_op("g:fence", 6, "bob", 2, 1700000000000ull + 6);
  late->done = next->done = on_other_done;
  other_done = 0;
  hubu_store_submit(other, late);
  hubu_store_submit(other, next);
  while (other_done < 2) uv_run(&loop, UV_RUN_ONCE);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  if (!CHECK(ms < STALL_MS / 2)) fprintf(stderr, "    the other node's appends took %llu ms\n", (unsigned long long)ms);
  CHECK_EQ_U64(pulled.done, 0); /* still stalled */
  CHECK_EQ_U64(late->status, HUBU_STORE_SEQ_TAKEN);
  CHECK_EQ_U64(next->status, HUBU_STORE_OK);
  hubu_store_op_free(late);
  hubu_store_op_free(next);
  while (!pulled.done) uv_run(&loop, UV_RUN_ONCE);
  CHECK_EQ_U64(pull->status, HUBU_STORE_OK);
  CHECK_EQ_U64(pull->pull.n_msgs, 3); /* 1, 5 and 6: read again after the fence */
  CHECK_EQ_U64(pull->pull.fenced, 3);
  CHECK_EQ_U64(pull->pull.max_seq, 6);
  hubu_store_op_free(pull);
  hubu_store_close(other);
}

/* The PULL read the page and found the hole 2-4 old; before its fence
 * reaches the server (held by the relay), another node stores 3 in the hole.
 * The fence then covers 3, but 3 is stored: the PULL reads the page again
 * after raising the fence and returns it (proving only 2 and 4 empty). */
static void row_landing_before_the_fence_is_returned(void) {
  char err[256] = "", direct[400];
  snprintf(direct, sizeof direct, "mariadb://%s:%s@127.0.0.1:%s/%s", db_user, db_password, db_port, db_name);
  hubu_store_config cfg = {.url = direct, .fsync = HUBU_FSYNC_BATCH};
  hubu_store *other = hubu_store_open(&loop, &cfg, err, sizeof err);
  if (!CHECK(other != NULL)) {
    fprintf(stderr, "    %s\n", err);
    return;
  }
  uint64_t old = 1700000000000ull; /* 2023: long settled */
  hubu_store_op *rows[2] = {append_op("g:landing", 1, "alice", 1, old), append_op("g:landing", 5, "alice", 2, old)};
  for (int i = 0; i < 2; i++) {
    run_op(rows[i]);
    CHECK_EQ_U64(rows[i]->status, HUBU_STORE_OK);
    hubu_store_op_free(rows[i]);
  }
  atomic_store(&relay_stalls, 0);
  atomic_store(&relay_mode_now, RELAY_STALL_BEFORE_LOCK);
  batch pulled = {.n = 1};
  hubu_store_op *pull = hubu_store_op_new(HUBU_STORE_PULL);
  snprintf(pull->pull.session_id, sizeof pull->pull.session_id, "g:landing");
  pull->pull.limit = 100;
  pull->pull.settle_ms = 60000;
  pull->ud = &pulled;
  pull->done = on_done;
  hubu_store_submit(store, pull);
  for (int i = 0; i < 200 && !atomic_load(&relay_stalls); i++) usleep(10000); /* the page is read, the fence held */
  CHECK_EQ_U64(atomic_load(&relay_stalls), 1);
  hubu_store_op *landing = append_op("g:landing", 3, "bob", 1, old + 3);
  landing->done = on_other_done;
  other_done = 0;
  hubu_store_submit(other, landing);
  while (other_done < 1) uv_run(&loop, UV_RUN_ONCE);
  CHECK_EQ_U64(landing->status, HUBU_STORE_OK); /* no fence yet */
  CHECK_EQ_U64(pulled.done, 0);
  hubu_store_op_free(landing);
  while (!pulled.done) uv_run(&loop, UV_RUN_ONCE);
  CHECK_EQ_U64(pull->status, HUBU_STORE_OK);
  if (CHECK_EQ_U64(pull->pull.n_msgs, 3)) {
    CHECK_EQ_U64(pull->pull.msgs[0]->seq, 1);
    CHECK_EQ_U64(pull->pull.msgs[1]->seq, 3);
    CHECK_EQ_U64(pull->pull.msgs[2]->seq, 5);
  }
  CHECK_EQ_U64(pull->pull.fenced, 2); /* 2 and 4 */
  CHECK_EQ_U64(pull->pull.max_seq, 5);
  hubu_store_op_free(pull);
  hubu_store_op *again = append_op("g:landing", 4, "bob", 2, old + 4);
  run_op(again);
  CHECK_EQ_U64(again->status, HUBU_STORE_SEQ_TAKEN);
  hubu_store_op_free(again);
  hubu_store_close(other);
}

/* A node stalls (the relay holds its traffic for STALL_MS, as SIGSTOP would)
 * right after sending an append's first round trip, which takes the log
 * counter's lock and leaves the transaction open. The server closes that
 * connection after idle_transaction_timeout (1 s here), which rolls the
 * transaction back and lets the lock go: another node's appends (a store on
 * a direct connection, lock wait 10 s) go through within the timeout and some
 * slack, while the stalled node is still stopped. When it resumes, its second
 * round trip (the INSERT and COMMIT) meets the closed connection: in doubt,
 * resolved on a fresh connection by send key: nothing of it was stored, so
 * every op is RETRY (not in doubt), and the resends are stored once. */
static void append_stalled_between_round_trips_lets_the_lock_go(void) {
  char err[256] = "", direct[400], idle[460];
  snprintf(direct, sizeof direct, "mariadb://%s:%s@127.0.0.1:%s/%s", db_user, db_password, db_port, db_name);
  snprintf(idle, sizeof idle, "%s&idle_transaction_timeout=1", url);
  hubu_store_config cfg = {.url = direct, .fsync = HUBU_FSYNC_BATCH};
  hubu_store *other = hubu_store_open(&loop, &cfg, err, sizeof err);
  cfg.url = idle;
  hubu_store *stalled = other ? hubu_store_open(&loop, &cfg, err, sizeof err) : NULL;
  if (!CHECK(other && stalled)) {
    fprintf(stderr, "    %s\n", err);
    if (other) hubu_store_close(other);
    return;
  }
  hubu_store_op *first = append_op("g:idle", 1, "alice", 1, 1700000000000ull);
  run_op(first); /* the session exists; the stalled store's connection is up */
  CHECK_EQ_U64(first->status, HUBU_STORE_OK);
  hubu_store_op_free(first);

  atomic_store(&relay_stalls, 0);
  atomic_store(&relay_mode_now, RELAY_STALL_AT_LOCK);
  batch b;
  memset(&b, 0, sizeof b);
  for (uint64_t k = 0; k < 3; k++) {
    b.ops[b.n] = append_op("g:idle", 2 + k, "bob", 1 + k, 1700000000000ull + 2 + k);
    b.ops[b.n]->ud = &b;
    b.ops[b.n]->done = on_done;
    b.n++;
  }
  for (size_t i = 0; i < b.n; i++) hubu_store_submit(stalled, b.ops[i]);
  for (int i = 0; i < 200 && !atomic_load(&relay_stalls); i++) usleep(10000); /* round trip 1 is sent */
  CHECK_EQ_U64(atomic_load(&relay_stalls), 1);
  uint64_t t0 = uv_hrtime();
  hubu_store_op *go_on[2] = {append_op("g:idle", 10, "carol", 1, 1700000000010ull),
                             append_op("g:idle", 11, "carol", 2, 1700000000011ull)};
  other_done = 0;
  for (int i = 0; i < 2; i++) {
    go_on[i]->done = on_other_done;
    hubu_store_submit(other, go_on[i]);
  }
  while (other_done < 2) uv_run(&loop, UV_RUN_ONCE);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  if (!CHECK(ms < 2500)) fprintf(stderr, "    the other node's appends took %llu ms\n", (unsigned long long)ms);
  CHECK_EQ_U64(b.done, 0); /* still stalled */
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_U64(go_on[i]->status, HUBU_STORE_OK);
    hubu_store_op_free(go_on[i]);
  }
  while (b.done < b.n) uv_run(&loop, UV_RUN_ONCE);
  /* the batch that met the stall is RETRY; the store thread may have taken the three as more than one batch,
   * and the later ones were stored once it was back */
  CHECK_EQ_U64(b.ops[0]->status, HUBU_STORE_RETRY);
  int retried[3];
  size_t stored = 0;
  for (size_t i = 0; i < b.n; i++) {
    if (!CHECK(b.ops[i]->status == HUBU_STORE_RETRY || b.ops[i]->status == HUBU_STORE_OK))
      fprintf(stderr, "    %s\n", b.ops[i]->error);
    retried[i] = b.ops[i]->status == HUBU_STORE_RETRY;
    stored += !retried[i];
    if (retried[i]) CHECK_EQ_U64(b.ops[i]->append.in_doubt, 0); /* resolved: not stored */
  }
  batch_free(&b);
  hubu_store_op *pull = hubu_store_op_new(HUBU_STORE_PULL);
  snprintf(pull->pull.session_id, sizeof pull->pull.session_id, "g:idle");
  pull->pull.limit = 100;
  run_op(pull);
  CHECK_EQ_U64(pull->status, HUBU_STORE_OK);
  CHECK_EQ_U64(pull->pull.n_msgs, 3 + stored); /* 1, 10, 11: nothing of the stalled batch */
  hubu_store_op_free(pull);
  /* the resends, through the stalled node once it is back: the retried ones stored, once */
  memset(&b, 0, sizeof b);
  for (uint64_t k = 0; k < 3; k++) {
    b.ops[b.n] = append_op("g:idle", 2 + k, "bob", 1 + k, 1700000000000ull + 2 + k);
    b.ops[b.n]->ud = &b;
    b.ops[b.n]->done = on_done;
    b.n++;
  }
  for (size_t i = 0; i < b.n; i++) hubu_store_submit(stalled, b.ops[i]);
  while (b.done < b.n) uv_run(&loop, UV_RUN_ONCE);
  for (size_t i = 0; i < b.n; i++) CHECK_EQ_U64(b.ops[i]->status, retried[i] ? HUBU_STORE_OK : HUBU_STORE_DUPLICATE);
  batch_free(&b);
  pull = hubu_store_op_new(HUBU_STORE_PULL);
  snprintf(pull->pull.session_id, sizeof pull->pull.session_id, "g:idle");
  pull->pull.limit = 100;
  run_op(pull);
  CHECK_EQ_U64(pull->pull.n_msgs, 6);
  hubu_store_op_free(pull);
  hubu_store_close(stalled);
  hubu_store_close(other);
}

static const struct {
  const char *name;
  void (*run)(void);
} cases[] = {
    {"two_writers_log_positions_are_dense_in_commit_order", two_writers_log_dense},
    {"lock_wait_timeout_is_rolled_back_and_retried", lock_wait_timeout_retried},
    {"commit_answer_lost_is_acknowledged_once", commit_answer_lost},
    {"commit_never_sent_is_retry_and_the_resend_is_stored_once", commit_never_sent},
    {"database_away_answers_retry_at_once_and_recovers_by_itself", database_away_and_back},
    {"fence_raise_leaves_no_lock_to_a_stalled_node", fence_raise_leaves_no_lock_to_a_stalled_node},
    {"row_landing_in_a_hole_before_the_fence_is_returned", row_landing_before_the_fence_is_returned},
    {"append_stalled_between_round_trips_lets_the_lock_go_within_the_idle_timeout",
     append_stalled_between_round_trips_lets_the_lock_go},
};

int main(int argc, char **argv) {
  const char *env = getenv("HUBU_MARIADB_ENV");
  if (argc != 2) {
    fprintf(stderr, "usage: %s CASE\n", argv[0]);
    return 2;
  }
  if (!env || env_value(env, "MARIADB_PORT", db_port, sizeof db_port) ||
      env_value(env, "MARIADB_USER", db_user, sizeof db_user) ||
      env_value(env, "MARIADB_PASSWORD", db_password, sizeof db_password)) {
    fprintf(stderr, "%s: HUBU_MARIADB_ENV names no private server's env file: skipped\n", argv[0]);
    return SKIP;
  }
  hubu_log_min_level = HUBU_LOG_ERROR;
  size_t which = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!strcmp(argv[1], cases[i].name)) which = i;
  if (which == sizeof cases / sizeof cases[0]) {
    fprintf(stderr, "%s: no case %s\n", argv[0], argv[1]);
    return 2;
  }
  snprintf(db_name, sizeof db_name, "hubu_f%ld", (long)getpid());
  char sql[128];
  snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
  if (!CHECK(relay_start() == 0) || !CHECK(admin_sql(sql) == 0)) return check_summary(argv[0]);
  snprintf(url, sizeof url, "mariadb://%s:%s@127.0.0.1:%d/%s?connect_timeout=2&lock_wait_timeout=1", db_user,
           db_password, relay_port, db_name);
  if (CHECK(uv_loop_init(&loop) == 0) && open_store() == 0) {
    cases[which].run();
    close_store();
    CHECK(uv_loop_close(&loop) == 0);
  }
  snprintf(sql, sizeof sql, "DROP DATABASE %s", db_name);
  admin_sql(sql);
  shutdown(relay_listen_fd, SHUT_RDWR);
  close(relay_listen_fd);
  hubu_store_op_cache_drop();
  return check_summary(argv[0]);
}

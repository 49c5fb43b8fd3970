/* store.c — the store thread: a FIFO of ops filled by the loop thread, drained
 * by one thread that owns the backend connection, and a done list handed back
 * to the loop through an eventfd the loop polls. Invariant: ops complete in
 * submission order — the thread walks what it takes in order and appends to
 * the done list in that order, and the loop runs the done list in order.
 *
 * Why not uv_async: its handshake makes the loop thread spin, then
 * sched_yield, while the sending thread is between its two compare-and-swaps
 * around the eventfd write; a store thread that loses its CPU there stalls
 * the loop for a scheduler tick (0.5-2.4 ms seen at 10k msgs/s). Here the
 * store thread writes the eventfd only when the loop has taken everything
 * before (a flag under the mutex it holds anyway), and the loop never waits
 * for it. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "store_backend.h"

struct hubu_store {
  uv_loop_t *loop;
  uv_poll_t done_poll; /* the loop's watch on done_fd; its close callback frees the store */
  int done_fd;         /* eventfd: readable while finished ops wait for the loop */
  int done_signaled;   /* done_fd was written since the loop last took the done list (guarded by mutex) */
  uv_thread_t thread;
  uv_mutex_t mutex; /* guards queue, done list, closing/thread_exited and stats */
  uv_cond_t cond;   /* signalled when the queue becomes non-empty or closing is set */

  hubu_store_op *queue_head, *queue_tail; /* submitted, not yet taken by the thread */
  hubu_store_op *done_head, *done_tail;   /* finished, waiting for the loop */
  hubu_store_op *draining;                /* taken from done by the loop, running now (loop thread only) */
  int closing;                            /* hubu_store_close was called */
  int thread_exited;                      /* the thread is gone: submit completes ops with ERROR */

  const hubu_store_backend *backend;
  void *db; /* owned by the thread while it runs, then by close */
  hubu_store_config cfg;
  char *url;             /* owned copy behind cfg.url */
  hubu_store_op **batch; /* the thread's APPEND batch, cfg.max_batch slots */
  hubu_store_stats stats;
  int unhealthy;        /* the backend's health said the database is away (guarded by mutex) */
  char health_why[192]; /* why (guarded by mutex) */
};

/* ---- ops ---- */

/* Freed ops are kept for reuse: one per message would otherwise be a malloc
 * and a free on the hot path, and leave holes between long-lived blocks.
 * Each thread that makes and frees ops (a loop thread, a tool) has its own. */
#define OP_CACHE_MAX 4096
static _Thread_local hubu_store_op *op_cache;
static _Thread_local unsigned op_cached;

hubu_store_op *hubu_store_op_new(hubu_store_op_kind kind) {
  hubu_store_op *op = op_cache;
  if (op) {
    op_cache = op->next;
    op_cached--;
    memset(op, 0, sizeof *op);
  } else if (!(op = calloc(1, sizeof *op))) {
    return NULL;
  }
  op->kind = kind;
  return op;
}

static void free_strings(char **strings, size_t n) {
  for (size_t i = 0; i < n; i++) free(strings[i]);
  free(strings);
}

static void free_msgs(hubu_msg **msgs, size_t n) {
  for (size_t i = 0; i < n; i++) hubu_msg_unref(msgs[i]);
  free(msgs);
}

void hubu_store_op_free(hubu_store_op *op) {
  if (!op) return;
  switch (op->kind) {
    case HUBU_STORE_APPEND:
      hubu_msg_unref(op->append.msg);
      free_strings(op->append.new_members, op->append.n_new_members);
      break;
    case HUBU_STORE_SESSION_LOAD: free_strings(op->session_load.members, op->session_load.n_members); break;
    case HUBU_STORE_SESSION_CREATE: free_strings(op->session_create.members, op->session_create.n_members); break;
    case HUBU_STORE_PULL: free_msgs(op->pull.msgs, op->pull.n_msgs); break;
    case HUBU_STORE_LOG_READ:
      free(op->log_read.plugin);
      free_msgs(op->log_read.msgs, op->log_read.n_msgs);
      break;
    case HUBU_STORE_SYNC: free(op->sync.states); break;
    case HUBU_STORE_CURSORS_SAVE: free(op->cursors_save.cursors); break;
    case HUBU_STORE_KV_GET:
    case HUBU_STORE_KV_SET:
    case HUBU_STORE_KV_DELETE:
      free(op->kv.key);
      free(op->kv.value);
      break;
    case HUBU_STORE_DEVICE_LOAD:
    case HUBU_STORE_FIND_SEND:
    case HUBU_STORE_MEMBER_ADD:
    case HUBU_STORE_MEMBER_REMOVE:
    case HUBU_STORE_SEQ_LEASE: break; /* nothing owned */
  }
  if (op_cached < OP_CACHE_MAX) {
    op->next = op_cache;
    op_cache = op;
    op_cached++;
    return;
  }
  free(op);
}

const char *hubu_store_op_session_id(const hubu_store_op *op) {
  switch (op->kind) {
    case HUBU_STORE_APPEND: return op->append.msg ? op->append.msg->session_id : "";
    case HUBU_STORE_FIND_SEND: return op->find_send.session_id;
    case HUBU_STORE_SESSION_LOAD: return op->session_load.session_id;
    case HUBU_STORE_SESSION_CREATE: return op->session_create.session_id;
    case HUBU_STORE_MEMBER_ADD:
    case HUBU_STORE_MEMBER_REMOVE: return op->member.session_id;
    case HUBU_STORE_PULL: return op->pull.session_id;
    case HUBU_STORE_SEQ_LEASE: return op->seq_lease.session_id;
    default: return ""; /* none, or many (CURSORS_SAVE) */
  }
}

const char *hubu_store_op_user(const hubu_store_op *op) {
  switch (op->kind) {
    case HUBU_STORE_APPEND: return op->append.msg ? op->append.msg->sender : "";
    case HUBU_STORE_DEVICE_LOAD: return op->device_load.user;
    case HUBU_STORE_FIND_SEND: return op->find_send.user;
    case HUBU_STORE_MEMBER_ADD:
    case HUBU_STORE_MEMBER_REMOVE: return op->member.user;
    case HUBU_STORE_PULL: return op->pull.user;
    case HUBU_STORE_SYNC: return op->sync.user;
    default: return ""; /* none, or many (CURSORS_SAVE) */
  }
}

void hubu_store_op_cache_drop(void) {
  while (op_cache) {
    hubu_store_op *op = op_cache;
    op_cache = op->next;
    free(op);
  }
  op_cached = 0;
}

/* ---- what the backends share (store_backend.h) ---- */

int hubu_store_entry_by_session(const void *x, const void *y) {
  const hubu_store_batch_entry *a = x, *b = y;
  int c = strcmp(a->op->append.msg->session_id, b->op->append.msg->session_id);
  return c ? c : (a->index > b->index) - (a->index < b->index);
}

int hubu_store_entry_by_device(const void *x, const void *y) {
  const hubu_store_batch_entry *a = x, *b = y;
  int c = strcmp(a->op->append.msg->sender, b->op->append.msg->sender);
  if (!c) c = strcmp(a->op->append.msg->sender_device, b->op->append.msg->sender_device);
  return c ? c : (a->index > b->index) - (a->index < b->index);
}

int hubu_store_entry_by_index(const void *x, const void *y) {
  const hubu_store_batch_entry *a = x, *b = y;
  return (a->index > b->index) - (a->index < b->index);
}

const char *hubu_store_op_name(hubu_store_op_kind kind) {
  switch (kind) {
    case HUBU_STORE_APPEND: return "append";
    case HUBU_STORE_DEVICE_LOAD: return "device_load";
    case HUBU_STORE_FIND_SEND: return "find_send";
    case HUBU_STORE_SESSION_LOAD: return "session_load";
    case HUBU_STORE_SESSION_CREATE: return "session_create";
    case HUBU_STORE_MEMBER_ADD: return "member_add";
    case HUBU_STORE_MEMBER_REMOVE: return "member_remove";
    case HUBU_STORE_PULL: return "pull";
    case HUBU_STORE_SYNC: return "sync";
    case HUBU_STORE_CURSORS_SAVE: return "cursors_save";
    case HUBU_STORE_KV_GET: return "kv_get";
    case HUBU_STORE_KV_SET: return "kv_set";
    case HUBU_STORE_KV_DELETE: return "kv_delete";
    case HUBU_STORE_LOG_READ: return "log_read";
    case HUBU_STORE_SEQ_LEASE: return "seq_lease";
  }
  return "unknown";
}

const char *hubu_store_status_name(hubu_store_status status) {
  switch (status) {
    case HUBU_STORE_OK: return "OK";
    case HUBU_STORE_DUPLICATE: return "DUPLICATE";
    case HUBU_STORE_NOT_FOUND: return "NOT_FOUND";
    case HUBU_STORE_EXISTS: return "EXISTS";
    case HUBU_STORE_ERROR: return "ERROR";
    case HUBU_STORE_RETRY: return "RETRY";
    case HUBU_STORE_SEQ_TAKEN: return "SEQ_TAKEN";
    case HUBU_STORE_DEVICE_MOVED: return "DEVICE_MOVED";
  }
  return "?";
}

void hubu_store_op_fail(hubu_store_op *op, hubu_store_status status, const char *step, const char *what) {
  snprintf(op->error, sizeof op->error, "%.40s: %.110s", step, what);
  op->status = status;
  const char *user = hubu_store_op_user(op);
  hubu_log(status == HUBU_STORE_RETRY ? HUBU_LOG_WARN : HUBU_LOG_ERROR, op->conn_id, user[0] ? user : NULL,
           "store_error", "op=%s step=%s session=%s retry=%d error=\"%s\"", hubu_store_op_name(op->kind), step,
           hubu_store_op_session_id(op), status == HUBU_STORE_RETRY, what);
}

void hubu_store_seq_taken(hubu_store_op *op, uint64_t fence, int fenced) {
  const hubu_msg *m = op->append.msg;
  hubu_store_append_op *a = &op->append;
  snprintf(a->stored_session_id, sizeof a->stored_session_id, "%s", m->session_id);
  a->stored_seq = 0;
  a->stored_msg_id = 0;
  snprintf(op->error, sizeof op->error, "seq %llu of session %.60s is %s", (unsigned long long)m->seq, m->session_id,
           fenced ? "at or below its fence" : "taken by another message");
  op->status = HUBU_STORE_SEQ_TAKEN;
  hubu_log(HUBU_LOG_WARN, op->conn_id, m->sender, "store_seq_taken",
           "op=append session=%s seq=%llu device=%s client_id=%llu fence=%llu why=%s", m->session_id,
           (unsigned long long)m->seq, m->sender_device, (unsigned long long)m->client_id, (unsigned long long)fence,
           fenced ? "fenced" : "taken");
}

void hubu_store_device_moved(hubu_store_op *op, uint64_t epoch) {
  const hubu_msg *m = op->append.msg;
  hubu_store_append_op *a = &op->append;
  snprintf(a->stored_session_id, sizeof a->stored_session_id, "%s", m->session_id);
  a->stored_seq = 0;
  a->stored_msg_id = 0;
  snprintf(op->error, sizeof op->error, "device %.60s of %.60s is at epoch %llu, not %llu", m->sender_device, m->sender,
           (unsigned long long)epoch, (unsigned long long)a->device_epoch);
  op->status = HUBU_STORE_DEVICE_MOVED;
  hubu_log(HUBU_LOG_WARN, op->conn_id, m->sender, "store_device_moved",
           "op=append session=%s seq=%llu device=%s client_id=%llu epoch=%llu stored_epoch=%llu", m->session_id,
           (unsigned long long)m->seq, m->sender_device, (unsigned long long)m->client_id,
           (unsigned long long)a->device_epoch, (unsigned long long)epoch);
}

void hubu_store_pull_walk_page(const hubu_store_pull_op *pull, uint64_t fence, uint64_t fenced_above, uint64_t now_ms,
                               int may_raise, hubu_store_pull_walk *walk) {
  memset(walk, 0, sizeof *walk);
  uint64_t prev = pull->after_seq; /* the rows are ascending and above after_seq */
  size_t i = 0;
  for (; i < pull->n_msgs; i++) {
    const hubu_msg *m = pull->msgs[i];
    if (m->seq > prev + 1) { /* the hole prev+1 .. m->seq-1 */
      uint64_t below = prev, top = m->seq - 1;
      if (top <= fence) {
        if (top > fenced_above) walk->fenced += top - (below > fenced_above ? below : fenced_above);
      } else if (may_raise && now_ms >= pull->settle_ms && m->server_time_ms < now_ms - pull->settle_ms) {
        walk->raise_to = top; /* its writer had settle_ms to store it: abandoned */
      } else {
        walk->cut = 1;
        break;
      }
    }
    prev = m->seq;
  }
  walk->keep = i;
}

int hubu_store_pull_begin(hubu_store_op *op, uint32_t *limit) {
  hubu_store_pull_op *pull = &op->pull;
  *limit = pull->limit ? pull->limit : HUBU_STORE_PAGE_DEFAULT;
  if (*limit > HUBU_STORE_PAGE_MAX) *limit = HUBU_STORE_PAGE_MAX;
  for (size_t i = 0; i < pull->n_msgs; i++) hubu_msg_unref(pull->msgs[i]); /* not expected: a fresh op */
  free(pull->msgs);
  pull->msgs = calloc(*limit, sizeof *pull->msgs);
  pull->n_msgs = 0;
  pull->has_more = 0;
  pull->fenced = 0;
  if (pull->msgs) return 0;
  hubu_store_op_fail(op, HUBU_STORE_ERROR, "pull", "out of memory");
  return -1;
}

void hubu_store_pull_settled(hubu_store_op *op, const hubu_store_pull_walk *walk, uint64_t top) {
  hubu_store_pull_op *pull = &op->pull;
  hubu_store_pull_keep(pull, walk->keep);
  if (walk->cut) pull->has_more = 0;
  pull->fenced = walk->fenced;
  pull->max_seq = pull->n_msgs ? pull->msgs[pull->n_msgs - 1]->seq : (top < pull->after_seq ? top : pull->after_seq);
  op->status = HUBU_STORE_OK;
}

void hubu_store_pull_keep(hubu_store_pull_op *pull, size_t keep) {
  for (size_t i = keep; i < pull->n_msgs; i++) hubu_msg_unref(pull->msgs[i]);
  if (keep < pull->n_msgs) pull->n_msgs = keep;
}

void hubu_store_members_free(hubu_store_session_load_op *load) {
  for (size_t i = 0; i < load->n_members; i++) free(load->members[i]);
  free(load->members);
  load->members = NULL;
  load->n_members = 0;
}

/* ---- session kinds and backends ---- */

const char *hubu_session_kind_of(const char *session_id) {
  int kind = session_id ? hubu_session_id_check(session_id, strlen(session_id)) : -1;
  return hubu_session_kind_name(kind < 0 ? HUBU_SESSION_CUSTOM : (hubu_session_kind)kind);
}

/* The backends this build has, by URL scheme. */
static const hubu_store_backend *const backends[] = {&hubu_store_sqlite, &hubu_store_mariadb};

const hubu_store_backend *hubu_store_backend_for_url(const char *url, char *err, size_t err_size) {
  for (size_t i = 0; url && i < sizeof backends / sizeof backends[0]; i++)
    if (strncmp(url, backends[i]->scheme, strlen(backends[i]->scheme)) == 0) return backends[i];
  char known[128] = "";
  for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
    snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s...", i ? ", " : "", backends[i]->scheme);
  /* only the scheme is named: the rest of an unknown URL may hold a password */
  size_t scheme = url ? strcspn(url, ":") : 0;
  snprintf(err, err_size, "no store backend for the scheme \"%.*s:\" (this build has %s)",
           (int)(scheme > 32 ? 32 : scheme), url ? url : "", known);
  return NULL;
}

int hubu_store_default_url(const char *data_dir, char *out, size_t size) {
  int n = snprintf(out, size, "sqlite:%s/hubu.db", data_dir && *data_dir ? data_dir : ".");
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* ---- the store thread ---- */

/* Hands finished ops [first..last] to the loop, in order. */
static void post_done(hubu_store *s, hubu_store_op *first, hubu_store_op *last) {
  last->next = NULL;
  uv_mutex_lock(&s->mutex);
  if (s->done_tail)
    s->done_tail->next = first;
  else
    s->done_head = first;
  s->done_tail = last;
  int wake = !s->done_signaled;
  s->done_signaled = 1;
  uv_mutex_unlock(&s->mutex);
  if (wake) {
    uint64_t one = 1;
    ssize_t n;
    do n = write(s->done_fd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter is near its 2^64 - 1 limit, so it is readable anyway */
  }
}

static void run_append_batch(hubu_store *s, hubu_store_op **ops, size_t n) {
  uint64_t t0 = uv_hrtime();
  s->backend->append_batch(s->db, ops, n); /* sets every op's status; logs its own failures */
  uint64_t us = (uv_hrtime() - t0) / 1000;
  uint64_t stored = 0;
  for (size_t i = 0; i < n; i++) stored += ops[i]->status == HUBU_STORE_OK;
  uv_mutex_lock(&s->mutex);
  s->stats.batches++;
  s->stats.appended += stored;
  s->stats.last_batch = n;
  if (n > s->stats.max_batch_seen) s->stats.max_batch_seen = n;
  s->stats.commit_us_total += us;
  uv_mutex_unlock(&s->mutex);
}

/* Runs one taken list in order: consecutive APPENDs become one batch (up to
 * max_batch), every other op runs alone. */
static void run_ops(hubu_store *s, hubu_store_op *op) {
  while (op) {
    if (op->kind == HUBU_STORE_APPEND) {
      hubu_store_op *first = op, *last = op;
      size_t n = 0;
      /* fsync=always: one transaction per message, each completed as soon as it is durable. */
      size_t limit = s->cfg.fsync == HUBU_FSYNC_ALWAYS ? 1 : s->cfg.max_batch;
      while (op && op->kind == HUBU_STORE_APPEND && n < limit) {
        s->batch[n++] = op;
        last = op;
        op = op->next;
      }
      run_append_batch(s, s->batch, n);
      post_done(s, first, last);
    } else {
      hubu_store_op *next = op->next;
      s->backend->execute(s->db, op);
      post_done(s, op, op);
      op = next;
    }
  }
}

/* Reads the backend's health into s (store thread). */
static void publish_health(hubu_store *s) {
  if (!s->backend->health) return;
  char why[sizeof s->health_why];
  const char *bad = s->backend->health(s->db, why, sizeof why);
  uv_mutex_lock(&s->mutex);
  s->unhealthy = bad != NULL;
  if (bad) snprintf(s->health_why, sizeof s->health_why, "%s", bad);
  uv_mutex_unlock(&s->mutex);
}

static void store_thread(void *arg) {
  hubu_store *s = arg;
  uv_mutex_lock(&s->mutex);
  for (;;) {
    if (!s->queue_head && !s->closing) {
      /* Idle: a backend that lost its database reconnects here, so health recovers without traffic. */
      long wait_ms = -1;
      if (s->backend->idle) {
        uv_mutex_unlock(&s->mutex);
        wait_ms = s->backend->idle(s->db);
        publish_health(s);
        uv_mutex_lock(&s->mutex);
      }
      if (!s->queue_head && !s->closing) {
        if (wait_ms < 0)
          uv_cond_wait(&s->cond, &s->mutex);
        else
          uv_cond_timedwait(&s->cond, &s->mutex, (uint64_t)wait_ms * 1000000u);
      }
      continue;
    }
    if (!s->queue_head) break; /* closing, and everything queued is done */
    hubu_store_op *taken = s->queue_head;
    s->queue_head = s->queue_tail = NULL;
    s->stats.queued = 0;
    uv_mutex_unlock(&s->mutex);
    run_ops(s, taken);
    publish_health(s);
    uv_mutex_lock(&s->mutex);
  }
  s->thread_exited = 1;
  uv_mutex_unlock(&s->mutex);
}

/* ---- the loop side ---- */

/* Runs the callbacks of the ops finished so far, in order; with all, also
 * of those that finish meanwhile, until none is left. Without it, ops that
 * finish while these callbacks run wait for the next turn of the loop (their
 * eventfd write wakes it again): a callback that submits again (a replay
 * reading the log batch after batch) cannot keep the loop from its sockets
 * and timers. Safe against a callback that submits (its op lands behind) or
 * closes the store (close drains the rest). */
static void run_done(hubu_store *s, int all) {
  for (int taken = 0;;) {
    if (!s->draining) {
      if (taken++ && !all) return;
      uv_mutex_lock(&s->mutex);
      s->draining = s->done_head;
      s->done_head = s->done_tail = NULL;
      s->done_signaled = 0; /* what finishes from now on writes the eventfd again */
      uv_mutex_unlock(&s->mutex);
      if (!s->draining) return;
    }
    hubu_store_op *op = s->draining;
    s->draining = op->next;
    op->next = NULL;
    if (op->done)
      op->done(op);
    else
      hubu_store_op_free(op);
  }
}

static void on_done_readable(uv_poll_t *handle, int status, int events) {
  (void)status, (void)events;
  hubu_store *s = handle->data;
  uint64_t count;
  while (read(s->done_fd, &count, sizeof count) < 0 && errno == EINTR) {
  } /* cleared before the list is taken: a later write wakes the loop again */
  run_done(s, 0);
}

static void free_store(hubu_store *s) {
  uv_cond_destroy(&s->cond);
  uv_mutex_destroy(&s->mutex);
  free(s->batch);
  free(s->url);
  free(s);
}

static void on_done_poll_close(uv_handle_t *handle) {
  hubu_store *s = handle->data;
  close(s->done_fd);
  free_store(s);
}

hubu_store *hubu_store_open(uv_loop_t *loop, const hubu_store_config *cfg, char *err, size_t err_size) {
  const hubu_store_backend *backend = hubu_store_backend_for_url(cfg->url, err, err_size);
  if (!backend) return NULL;
  hubu_store *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  s->loop = loop;
  s->backend = backend;
  s->cfg = *cfg;
  if (!s->cfg.max_batch) s->cfg.max_batch = 4096;
  s->url = strdup(cfg->url);
  s->batch = malloc(s->cfg.max_batch * sizeof *s->batch);
  if (!s->url || !s->batch) {
    snprintf(err, err_size, "out of memory");
    goto fail_alloc;
  }
  s->cfg.url = s->url;
  if (uv_mutex_init(&s->mutex) != 0) {
    snprintf(err, err_size, "uv_mutex_init failed");
    goto fail_alloc;
  }
  if (uv_cond_init(&s->cond) != 0) {
    snprintf(err, err_size, "uv_cond_init failed");
    goto fail_mutex;
  }
  s->db = backend->open(&s->cfg, err, err_size);
  if (!s->db) goto fail_cond;
  s->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->done_fd < 0) {
    snprintf(err, err_size, "eventfd: %s", strerror(errno));
    goto fail_db;
  }
  int r = uv_poll_init(loop, &s->done_poll, s->done_fd);
  if (r != 0) {
    snprintf(err, err_size, "uv_poll_init: %s", uv_strerror(r));
    close(s->done_fd);
    goto fail_db;
  }
  s->done_poll.data = s;
  r = uv_poll_start(&s->done_poll, UV_READABLE, on_done_readable);
  if (r == 0) r = uv_thread_create(&s->thread, store_thread, s);
  if (r != 0) {
    snprintf(err, err_size, "starting the store thread: %s", uv_strerror(r));
    backend->close(s->db);
    uv_close((uv_handle_t *)&s->done_poll, on_done_poll_close); /* frees s */
    return NULL;
  }
  return s;

fail_db:
  backend->close(s->db);
fail_cond:
  uv_cond_destroy(&s->cond);
fail_mutex:
  uv_mutex_destroy(&s->mutex);
fail_alloc:
  free(s->batch);
  free(s->url);
  free(s);
  return NULL;
}

void hubu_store_submit(hubu_store *s, hubu_store_op *op) {
  op->next = NULL;
  uv_mutex_lock(&s->mutex);
  if (s->thread_exited) {
    /* Submitted from a done callback while closing: nothing will run it. */
    uv_mutex_unlock(&s->mutex);
    op->status = HUBU_STORE_ERROR;
    snprintf(op->error, sizeof op->error, "store is closed");
    post_done(s, op, op);
    return;
  }
  int was_empty = s->queue_head == NULL;
  if (s->queue_tail)
    s->queue_tail->next = op;
  else
    s->queue_head = op;
  s->queue_tail = op;
  s->stats.queued++;
  uv_mutex_unlock(&s->mutex);
  /* The thread only waits on an empty queue, so only the first op must wake
   * it. Signalled after the unlock: a thread woken under the mutex would at
   * once block on it, and the handover would cost three more futex calls. */
  if (was_empty) uv_cond_signal(&s->cond);
}

void hubu_store_close(hubu_store *s) {
  if (!s) return;
  uv_mutex_lock(&s->mutex);
  int again = s->closing;
  s->closing = 1;
  uv_cond_signal(&s->cond);
  uv_mutex_unlock(&s->mutex);
  if (again) return;
  uv_thread_join(&s->thread); /* it finishes every queued op first */
  run_done(s, 1);
  s->backend->close(s->db);
  s->db = NULL;
  uv_close((uv_handle_t *)&s->done_poll, on_done_poll_close);
}

void hubu_store_get_stats(hubu_store *s, hubu_store_stats *out) {
  uv_mutex_lock(&s->mutex);
  *out = s->stats;
  uv_mutex_unlock(&s->mutex);
}

int hubu_store_healthy(hubu_store *s, char *why, size_t why_size) {
  uv_mutex_lock(&s->mutex);
  int ok = !s->unhealthy;
  if (!ok && why && why_size) snprintf(why, why_size, "%s", s->health_why);
  uv_mutex_unlock(&s->mutex);
  return ok;
}

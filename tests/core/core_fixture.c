/* core_fixture.c — the loop, store, core and test peers the core cases run
 * on (core_fixture.h). A test peer is what a transport would be, minus the
 * socket: its output is a buffer the cases decode. Invariant: fx_settle only
 * returns once core has nothing under way, so a case asserts on a quiet core. */
#include "core_fixture.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delivery.h"
#include "log.h"
#include "messaging.h"
#include "presence.h"
#include "session.h"
#include "wire.h"

#define SETTLE_MAX_ROUNDS 64

/* ---- cases ---- */

void fx_check_totals(unsigned long *count, unsigned long *failures) {
  *count = check_count;
  *failures = check_failures;
}

void fx_main_begin(void) {
  hubu_log_min_level = HUBU_LOG_ERROR; /* refusals the cases provoke log warnings */
  alarm(120);                          /* a case that hangs is killed, not left waiting */
}

void fx_main_end(void) { hubu_store_op_cache_drop(); }

/* ---- the fixture ---- */

hubu_core_config fx_config(void) {
  hubu_core_config cfg = {
      .node_id = 7,
      .max_frame = HUBU_FRAME_DEFAULT_MAX,
      .heartbeat_ms = 30000,
      .max_inflight = 256,
      .max_inflight_bytes = 1u << 20,
      .ack_timeout_ms = 10000,
      .pull_limit_max = 500,
  };
  return cfg;
}

int fx_open(core_fixture *fx, const hubu_core_config *cfg) {
  memset(fx, 0, sizeof *fx);
  snprintf(fx->dir, sizeof fx->dir, "/tmp/hubu-test-core-XXXXXX");
  if (!CHECK(mkdtemp(fx->dir) != NULL)) {
    fx->dir[0] = '\0';
    return -1;
  }
  if (!CHECK_EQ_U64(uv_loop_init(&fx->loop), 0)) return -1;
  fx->loop_ready = 1;
  char url[128];
  snprintf(url, sizeof url, "sqlite:%s/hubu.db", fx->dir);
  hubu_store_config scfg = {.url = url, .fsync = HUBU_FSYNC_BATCH};
  char err[256] = "";
  fx->store = hubu_store_open(&fx->loop, &scfg, err, sizeof err);
  if (!CHECK(fx->store != NULL)) {
    fprintf(stderr, "    hubu_store_open: %s\n", err);
    return -1;
  }
  char path[96];
  snprintf(path, sizeof path, "%s/hubu.db", fx->dir);
  if (!CHECK_EQ_U64(sqlite3_open_v2(path, &fx->db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK)) return -1;
  sqlite3_busy_timeout(fx->db, 5000);
  hubu_core_config c = cfg ? *cfg : fx_config();
  hubu_core_init(&fx->core, &fx->loop, &c, fx->store);
  return 0;
}

void fx_restart_core(core_fixture *fx) {
  fx_settle(fx);
  CHECK(fx->core.directory->ops->users(fx->core.directory) == 0); /* every peer was closed */
  hubu_presence_save_cursors(&fx->core);
  fx_settle(fx);
  hubu_core_config cfg = fx->core.cfg;
  hubu_core_free(&fx->core);
  memset(&fx->core, 0, sizeof fx->core);
  hubu_core_init(&fx->core, &fx->loop, &cfg, fx->store);
}

static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  CHECK_EQ_U64(rmdir(dir), 0);
}

void fx_close(core_fixture *fx) {
  if (!fx->loop_ready) {
    if (fx->dir[0] != '/') return; /* mkdtemp failed */
    remove_tree(fx->dir);
    return;
  }
  if (fx->store) {
    hubu_store_close(fx->store); /* queued ops finish; their callbacks still find the core */
    fx->store = NULL;
    fx->core.store = NULL;
  }
  uv_run(&fx->loop, UV_RUN_DEFAULT); /* the store's completion handle closes */
  hubu_core_free(&fx->core);
  CHECK_EQ_U64(uv_loop_close(&fx->loop), 0);
  if (fx->db) sqlite3_close(fx->db);
  fx->db = NULL;
  if (fx->dir[0]) remove_tree(fx->dir);
}

static void on_op_done(hubu_store_op *op) { *(int *)op->ud = 1; }

hubu_store_op *fx_run_op(core_fixture *fx, hubu_store_op *op) {
  int done = 0;
  op->ud = &done;
  op->done = on_op_done;
  hubu_store_submit(fx->store, op);
  while (!done) uv_run(&fx->loop, UV_RUN_ONCE);
  return op;
}

/* Completions arrive in submission order: once this op is back, everything
 * submitted before it has run its callback. */
static void barrier(core_fixture *fx) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_DEVICE_LOAD); /* of nobody: a read that finds nothing */
  hubu_store_op_free(fx_run_op(fx, op));
}

static int core_busy(hubu_core *core) {
  size_t waiting_all = 0, pending_all = 0;
  hubu_session *s, *stmp;
  HASH_ITER(hh, core->sessions, s, stmp) {
    uint32_t waiting = 0; /* each SEND waiting for its seq holds one of busy */
    for (hubu_seq_waiter *w = s->seq_wait; w; w = w->next) waiting++;
    if (s->parked || s->busy > waiting) return 1;
    waiting_all += waiting;
  }
  hubu_device *d, *dtmp;
  HASH_ITER(hh, core->devices, d, dtmp) {
    if (d->loading) return 1;
    pending_all += HASH_COUNT(d->pending);
  }
  return pending_all > waiting_all; /* a pending send not waiting for a seq is parked or in the store's hands */
}

static void settle_core(core_fixture *fx, hubu_core *core) {
  if (!fx->store) return;
  for (int round = 0; round < SETTLE_MAX_ROUNDS; round++) {
    barrier(fx);
    if (!core_busy(core)) return;
  }
  CHECK(!"core settles within 64 store round trips");
}

void fx_settle(core_fixture *fx) { settle_core(fx, &fx->core); }

int64_t fx_other_writer_send(core_fixture *fx, const char *user, const char *device, uint64_t client_id,
                             const char *session_id, uint64_t *seq, uint64_t *msg_id) {
  hubu_core other;
  memset(&other, 0, sizeof other);
  hubu_core_init(&other, &fx->loop, &fx->core.cfg, fx->store);
  test_peer tp;
  tp_init_on(fx, &other, &tp, user, device);
  hubu_messaging_hello(&tp.peer);
  settle_core(fx, &other);
  tp_discard(&tp);
  tp_send(&tp, client_id, session_id, "from another writer");
  settle_core(fx, &other);
  int64_t code = -1;
  Hubu__V1__SendAck *ack = tp_send_ack(&tp, 0);
  if (CHECK(ack != NULL)) {
    code = ack->code;
    *seq = ack->seq;
    *msg_id = ack->msg_id;
    hubu__v1__send_ack__free_unpacked(ack, NULL);
  }
  tp_close(&tp);
  hubu_core_free(&other);
  return code;
}

void fx_create_group(core_fixture *fx, const char *session_id, const char *const *members, size_t n) {
  CHECK_EQ_U64(fx_db_exec(fx, "INSERT INTO sessions(session_id, kind, created_ms) VALUES(%Q, 'group', 1)", session_id),
               0);
  for (size_t i = 0; i < n; i++)
    CHECK_EQ_U64(
        fx_db_exec(fx, "INSERT INTO members(session_id, user_id, joined_ms) VALUES(%Q, %Q, 1)", session_id, members[i]),
        0);
}

int64_t fx_db_int(core_fixture *fx, const char *sql, ...) {
  va_list ap;
  va_start(ap, sql);
  char *q = sqlite3_vmprintf(sql, ap);
  va_end(ap);
  sqlite3_stmt *st = NULL;
  int64_t v = -1;
  if (q && sqlite3_prepare_v2(fx->db, q, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else
    fprintf(stderr, "    sql failed: %s: %s\n", q ? q : "(null)", sqlite3_errmsg(fx->db));
  sqlite3_finalize(st);
  sqlite3_free(q);
  return v;
}

int fx_db_exec(core_fixture *fx, const char *sql, ...) {
  va_list ap;
  va_start(ap, sql);
  char *q = sqlite3_vmprintf(sql, ap);
  va_end(ap);
  int rc = q ? sqlite3_exec(fx->db, q, NULL, NULL, NULL) : SQLITE_NOMEM;
  if (rc != SQLITE_OK) fprintf(stderr, "    sql failed: %s: %s\n", q ? q : "(null)", sqlite3_errmsg(fx->db));
  sqlite3_free(q);
  return rc == SQLITE_OK ? 0 : -1;
}

/* ---- test peers ---- */

static test_peer *tp_of(hubu_peer *p) { return (test_peer *)p; }

static hubu_buf *tp_output(hubu_peer *p) { return &tp_of(p)->out; }

/* Checks SEND_ACK OKs not yet seen against the database, as they appear. */
static void probe_acks(test_peer *tp) {
  unsigned seen = 0;
  size_t off = 0, len = hubu_buf_size(&tp->out);
  const uint8_t *data = hubu_buf_head(&tp->out);
  hubu_frame f;
  while (hubu_frame_next(data + off, len - off, UINT32_MAX, &f) == HUBU_FRAME_OK) {
    off += f.size;
    if (f.header.type != HUBU_FRAME_SEND_ACK || seen++ < tp->acks_seen) continue;
    tp->acks_seen++;
    Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, f.header.length, f.body);
    if (!a) continue;
    if (a->code == HUBU__V1__CODE__OK && !a->duplicate && tp->fx->db) {
      int64_t rows =
          fx_db_int(tp->fx,
                    "SELECT count(*) FROM messages WHERE session_id = %Q AND seq = %lld AND sender = %Q"
                    " AND sender_device = %Q AND client_id = %lld",
                    a->session_id, (long long)a->seq, tp->peer.user, tp->peer.device, (long long)a->client_id);
      tp->acks_checked++;
      if (rows != 1) tp->acks_not_durable++;
    }
    hubu__v1__send_ack__free_unpacked(a, NULL);
  }
}

static void tp_wrote(hubu_peer *p) {
  test_peer *tp = tp_of(p);
  tp->wrote_calls++;
  probe_acks(tp);
}

static void tp_goaway(hubu_peer *p, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms) {
  test_peer *tp = tp_of(p);
  if (p->state >= HUBU_PEER_CLOSING) return;
  tp->goaways++;
  tp->goaway_code = code;
  snprintf(tp->goaway_reason, sizeof tp->goaway_reason, "%s", reason ? reason : "");
  hubu_wire_append_goaway(&tp->out, code, reason, reconnect_after_ms);
  p->state = HUBU_PEER_CLOSING;
  if (tp->detach_on_goaway && p->attached) { /* a transport that lets go at once */
    p->core->directory->ops->detach(p->core->directory, p);
    p->attached = 0;
  }
}

static void tp_bad_body(hubu_peer *p, uint8_t frame_type) {
  (void)frame_type;
  tp_of(p)->bad_bodies++;
}

static void tp_resume_input(hubu_peer *p) { tp_of(p)->resumes++; }

static const hubu_peer_ops test_peer_ops = {
    .output = tp_output,
    .wrote = tp_wrote,
    .goaway = tp_goaway,
    .bad_body = tp_bad_body,
    .resume_input = tp_resume_input,
};

void tp_init(core_fixture *fx, test_peer *tp, const char *user, const char *device) {
  tp_init_on(fx, &fx->core, tp, user, device);
}

void tp_init_on(core_fixture *fx, hubu_core *core, test_peer *tp, const char *user, const char *device) {
  memset(tp, 0, sizeof *tp);
  tp->fx = fx;
  tp->peer.ops = &test_peer_ops;
  tp->peer.core = core;
  tp->peer.id = ++fx->next_peer_id;
  size_t ulen = strlen(user), dlen = strlen(device);
  tp->peer.user = malloc(ulen + dlen + 2);
  memcpy(tp->peer.user, user, ulen + 1);
  memcpy(tp->peer.user + ulen + 1, device, dlen + 1);
  tp->peer.device = tp->peer.user + ulen + 1;
  tp->peer.state = HUBU_PEER_HELLO_WAIT;
}

int tp_connect(core_fixture *fx, test_peer *tp, const char *user, const char *device) {
  tp_init(fx, tp, user, device);
  hubu_messaging_hello(&tp->peer);
  fx_settle(fx);
  int ok = CHECK_EQ_U64(tp->peer.state, HUBU_PEER_READY) & CHECK_EQ_U64(tp_count(tp, HUBU_FRAME_HELLO_OK), 1);
  tp_flush(tp);
  return ok ? 0 : -1;
}

void tp_close(test_peer *tp) {
  if (tp->peer.state != HUBU_PEER_CLOSED) {
    tp->peer.state = HUBU_PEER_CLOSED;
    hubu_messaging_peer_closed(&tp->peer);
  }
  free(tp->peer.user);
  tp->peer.user = NULL;
  hubu_buf_free(&tp->out);
}

void tp_flush(test_peer *tp) {
  if (tp->peer.hints) hubu_delivery_write_hints(&tp->peer);
  hubu_peer_output_taken(&tp->peer);
  tp_discard(tp);
}

void tp_discard(test_peer *tp) {
  hubu_buf_consume(&tp->out, hubu_buf_size(&tp->out));
  tp->acks_seen = 0;
}

/* ---- requests ---- */

static void run_frame(test_peer *tp, uint8_t type, const ProtobufCMessage *m,
                      void (*handler)(hubu_peer *, const hubu_frame *)) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *body = malloc(len ? len : 1);
  protobuf_c_message_pack(m, body);
  hubu_frame f = {
      .header = {HUBU_FRAME_VERSION, type, 0, (uint32_t)len}, .body = body, .size = HUBU_FRAME_HEADER_SIZE + len};
  handler(&tp->peer, &f);
  free(body);
}

void tp_send(test_peer *tp, uint64_t client_id, const char *session_id, const char *body) {
  Hubu__V1__Send s = HUBU__V1__SEND__INIT;
  s.client_id = client_id;
  s.session_id = (char *)session_id;
  s.body.data = (uint8_t *)body;
  s.body.len = strlen(body);
  s.content_type = "text/plain";
  run_frame(tp, HUBU_FRAME_SEND, &s.base, hubu_messaging_send);
}

void tp_deliver_ack(test_peer *tp, const char *session_id, uint64_t seq) {
  Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
  cur.session_id = (char *)session_id;
  cur.seq = seq;
  Hubu__V1__Cursor *curs[1] = {&cur};
  Hubu__V1__DeliverAck a = HUBU__V1__DELIVER_ACK__INIT;
  a.n_cursors = 1;
  a.cursors = curs;
  run_frame(tp, HUBU_FRAME_DELIVER_ACK, &a.base, hubu_messaging_deliver_ack);
}

void tp_pull(test_peer *tp, uint64_t request_id, const char *session_id, uint64_t after_seq, uint32_t limit) {
  Hubu__V1__PullRequest r = HUBU__V1__PULL_REQUEST__INIT;
  r.request_id = request_id;
  r.session_id = (char *)session_id;
  r.after_seq = after_seq;
  r.limit = limit;
  run_frame(tp, HUBU_FRAME_PULL, &r.base, hubu_messaging_pull);
}

/* ---- reading the output ---- */

size_t tp_frames(test_peer *tp, out_frame *frames, size_t max) {
  size_t n = 0, off = 0, len = hubu_buf_size(&tp->out);
  const uint8_t *data = hubu_buf_head(&tp->out);
  hubu_frame f;
  while (off < len) {
    hubu_frame_status st = hubu_frame_next(data + off, len - off, UINT32_MAX, &f);
    if (!CHECK_EQ_U64(st, HUBU_FRAME_OK)) break; /* core appends whole frames only */
    if (n < max) frames[n] = (out_frame){f.header.type, f.body, f.header.length};
    n++;
    off += f.size;
  }
  return n < max ? n : max;
}

#define MAX_FRAMES 4096

static const out_frame *nth_of_type(test_peer *tp, uint8_t type, size_t nth) {
  static out_frame frames[MAX_FRAMES];
  size_t n = tp_frames(tp, frames, MAX_FRAMES);
  for (size_t i = 0; i < n; i++)
    if (frames[i].type == type && nth-- == 0) return &frames[i];
  return NULL;
}

size_t tp_count(test_peer *tp, uint8_t type) {
  static out_frame frames[MAX_FRAMES];
  size_t n = tp_frames(tp, frames, MAX_FRAMES), k = 0;
  for (size_t i = 0; i < n; i++) k += frames[i].type == type;
  return k;
}

Hubu__V1__SendAck *tp_send_ack(test_peer *tp, size_t nth) {
  const out_frame *f = nth_of_type(tp, HUBU_FRAME_SEND_ACK, nth);
  return f ? hubu__v1__send_ack__unpack(NULL, f->length, f->body) : NULL;
}

Hubu__V1__Push *tp_push(test_peer *tp, size_t nth) {
  const out_frame *f = nth_of_type(tp, HUBU_FRAME_PUSH, nth);
  return f ? hubu__v1__push__unpack(NULL, f->length, f->body) : NULL;
}

Hubu__V1__PullHint *tp_pull_hint(test_peer *tp, size_t nth) {
  const out_frame *f = nth_of_type(tp, HUBU_FRAME_PULL_HINT, nth);
  return f ? hubu__v1__pull_hint__unpack(NULL, f->length, f->body) : NULL;
}

Hubu__V1__HelloOk *tp_hello_ok(test_peer *tp, size_t nth) {
  const out_frame *f = nth_of_type(tp, HUBU_FRAME_HELLO_OK, nth);
  return f ? hubu__v1__hello_ok__unpack(NULL, f->length, f->body) : NULL;
}

Hubu__V1__PullResult *tp_pull_result(test_peer *tp, size_t nth) {
  const out_frame *f = nth_of_type(tp, HUBU_FRAME_PULL_RESULT, nth);
  return f ? hubu__v1__pull_result__unpack(NULL, f->length, f->body) : NULL;
}

size_t tp_pushed(test_peer *tp, uint64_t *seqs, char (*sessions)[32], size_t max) {
  size_t n = 0;
  Hubu__V1__Push *p;
  for (size_t i = 0; (p = tp_push(tp, i)); i++) {
    for (size_t k = 0; k < p->n_messages; k++, n++) {
      if (n >= max) continue;
      if (seqs) seqs[n] = p->messages[k]->seq;
      if (sessions) snprintf(sessions[n], sizeof sessions[n], "%s", p->messages[k]->session_id);
    }
    hubu__v1__push__free_unpacked(p, NULL);
  }
  return n;
}

/* ---- messages and internals ---- */

hubu_msg *fx_msg(const char *session_id, uint64_t seq, size_t body_len) {
  uint8_t *body = malloc(body_len ? body_len : 1);
  memset(body, 'a' + (int)(seq % 26), body_len);
  hubu_msg *m = hubu_msg_new(session_id, seq, 5000 + seq, "alice", "phone", seq, body, body_len, "text/plain", NULL, 0,
                             1700000000000ull);
  free(body);
  return m;
}

hubu_device *fx_device(core_fixture *fx, const char *user, const char *device) {
  char key[2 * HUBU_ID_MAX + 2];
  snprintf(key, sizeof key, "%s/%s", user, device);
  hubu_device *d = NULL;
  HASH_FIND_STR(fx->core.devices, key, d);
  return d;
}

uint64_t fx_cursor(hubu_device *d, const char *session_id, int *dirty) {
  hubu_cursor *c = NULL;
  HASH_FIND_STR(d->cursors, session_id, c);
  if (dirty) *dirty = c ? c->dirty : 0;
  return c ? c->seq : 0;
}

/* test_store.c — the store through its threaded API, on real SQLite in a
 * temporary directory: appends complete in submission order with OK and in far
 * fewer transactions than messages; a retried (sender, device, client_id) is
 * answered DUPLICATE with the original ids and stores nothing; a seq taken by
 * another message fails only that append (SEQ_TAKEN); a failed transaction fails its whole
 * batch and the store recovers; device, send, session, member, pull, sync and
 * cursor ops return what was stored; everything survives close and reopen;
 * close finishes every queued op. Every test ends with uv_loop_close == 0. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "log.h"
#include "session.h" /* hubu_session_describe_new: what core names for a new session */
#include "store.h"

/* ---- fixture: a loop, a store, a temporary data directory ---- */

typedef struct {
  uv_loop_t loop;
  hubu_store *store;
  char dir[64];
  char url[200];
  hubu_store_config cfg;
} fixture;

static int fixture_open_store(fixture *f) {
  char err[256] = "";
  f->store = hubu_store_open(&f->loop, &f->cfg, err, sizeof err);
  if (!CHECK(f->store != NULL)) fprintf(stderr, "    hubu_store_open: %s\n", err);
  return f->store ? 0 : -1;
}

static int fixture_init(fixture *f, hubu_fsync_mode fsync) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/hubu-test-store-XXXXXX");
  if (!CHECK(mkdtemp(f->dir) != NULL)) return -1;
  CHECK_EQ_U64(uv_loop_init(&f->loop), 0);
  snprintf(f->url, sizeof f->url, "sqlite:%s/hubu.db", f->dir);
  f->cfg.url = f->url;
  f->cfg.fsync = fsync;
  return fixture_open_store(f);
}

/* Closes the store and runs the loop until its handle is closed. */
static void fixture_close_store(fixture *f) {
  if (!f->store) return;
  hubu_store_close(f->store);
  f->store = NULL;
  uv_run(&f->loop, UV_RUN_DEFAULT);
}

static void remove_dir(const char *dir) {
  static const char *const files[] = {"hubu.db", "hubu.db-wal", "hubu.db-shm", "hubu.db-journal"};
  char path[128];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

static void fixture_finish(fixture *f) {
  fixture_close_store(f);
  CHECK_EQ_U64(uv_loop_close(&f->loop), 0);
  remove_dir(f->dir);
}

/* ---- running ops ---- */

static void on_done_flag(hubu_store_op *op) { *(int *)op->ud = 1; }

/* Submits op and runs the loop until it completes; the caller frees it. */
static hubu_store_op *run_op(fixture *f, hubu_store_op *op) {
  int done = 0;
  op->ud = &done;
  op->done = on_done_flag;
  hubu_store_submit(f->store, op);
  while (!done) uv_run(&f->loop, UV_RUN_ONCE);
  return op;
}

static hubu_msg *make_msg(const char *session, uint64_t seq, const char *sender, const char *device, uint64_t client_id,
                          const char *body, int with_meta) {
  uint8_t *meta = NULL;
  size_t meta_len = 0;
  if (with_meta) {
    Hubu__V1__Send__MetaEntry e1 = HUBU__V1__SEND__META_ENTRY__INIT, e2 = HUBU__V1__SEND__META_ENTRY__INIT;
    e1.key = "mention";
    e1.value = "bob";
    e2.key = "reply_to";
    e2.value = "42";
    Hubu__V1__Send__MetaEntry *entries[] = {&e1, &e2};
    CHECK_EQ_U64(hubu_msg_pack_meta(2, entries, &meta, &meta_len), 0);
  }
  hubu_msg *m = hubu_msg_new(session, seq, 1000000 + seq * 7 + client_id, sender, device, client_id,
                             (const uint8_t *)body, strlen(body), "text/plain", meta, meta_len, 1700000000000 + seq);
  free(meta);
  CHECK(m != NULL);
  return m;
}

static hubu_store_op *append_op(hubu_msg *m) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_APPEND);
  op->append.msg = m; /* the op owns this reference */
  /* As hubud does for a session the store may not have yet: the append names
   * the kind and members to create it with (the rule is core's). */
  hubu_session sess = {.id = (char *)m->session_id};
  int kind = hubu_session_id_check(m->session_id, strlen(m->session_id));
  sess.kind = (uint8_t)(kind < 0 ? HUBU_SESSION_CUSTOM : kind);
  if (hubu_session_describe_new(&sess, m->sender, op) != 0) abort();
  return op;
}

/* Appends one message and checks the status it got. */
static void append_one(fixture *f, hubu_msg *m, hubu_store_status want) {
  hubu_store_op *op = run_op(f, append_op(m));
  CHECK_EQ_U64(op->status, want);
  hubu_store_op_free(op);
}

/* Ordered completions of a burst: ud carries each op's submission index. */
static struct {
  size_t next;
  size_t out_of_order;
  size_t counts[HUBU_STORE_SEQ_TAKEN + 1];
} burst;

static void on_burst_done(hubu_store_op *op) {
  if ((size_t)(uintptr_t)op->ud != burst.next) burst.out_of_order++;
  burst.next++;
  burst.counts[op->status]++;
  hubu_store_op_free(op);
}

static void burst_reset(void) { memset(&burst, 0, sizeof burst); }

static void burst_submit(fixture *f, hubu_store_op *op, size_t index) {
  op->ud = (void *)(uintptr_t)index;
  op->done = on_burst_done;
  hubu_store_submit(f->store, op);
}

static void burst_wait(fixture *f, size_t n) {
  while (burst.next < n) uv_run(&f->loop, UV_RUN_ONCE);
}

static hubu_store_op *device_load(fixture *f, const char *user, const char *device) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_DEVICE_LOAD);
  snprintf(op->device_load.user, sizeof op->device_load.user, "%s", user);
  snprintf(op->device_load.device, sizeof op->device_load.device, "%s", device);
  return run_op(f, op);
}

static hubu_store_op *session_load(fixture *f, const char *session) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SESSION_LOAD);
  snprintf(op->session_load.session_id, sizeof op->session_load.session_id, "%s", session);
  return run_op(f, op);
}

static hubu_store_op *pull(fixture *f, const char *session, uint64_t after_seq, uint32_t limit) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_PULL);
  snprintf(op->pull.session_id, sizeof op->pull.session_id, "%s", session);
  op->pull.after_seq = after_seq;
  op->pull.limit = limit;
  return run_op(f, op);
}

static hubu_store_op *sync_user(fixture *f, const char *user) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SYNC);
  snprintf(op->sync.user, sizeof op->sync.user, "%s", user);
  return run_op(f, op);
}

static hubu_store_op *member_op(fixture *f, hubu_store_op_kind kind, const char *session, const char *user,
                                const char *role) {
  hubu_store_op *op = hubu_store_op_new(kind);
  snprintf(op->member.session_id, sizeof op->member.session_id, "%s", session);
  snprintf(op->member.user, sizeof op->member.user, "%s", user);
  if (role) snprintf(op->member.role, sizeof op->member.role, "%s", role);
  return run_op(f, op);
}

static hubu_store_op *group_create(fixture *f, const char *session, const char *const *members, size_t n) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SESSION_CREATE);
  snprintf(op->session_create.session_id, sizeof op->session_create.session_id, "%s", session);
  snprintf(op->session_create.kind, sizeof op->session_create.kind, "group");
  op->session_create.members = calloc(n, sizeof *op->session_create.members);
  for (size_t i = 0; i < n; i++) op->session_create.members[i] = strdup(members[i]);
  op->session_create.n_members = n;
  return run_op(f, op);
}

static const hubu_store_session_state *find_state(const hubu_store_op *op, const char *session) {
  for (size_t i = 0; i < op->sync.n_states; i++)
    if (strcmp(op->sync.states[i].session_id, session) == 0) return &op->sync.states[i];
  return NULL;
}

/* ---- tests ---- */

static void test_session_kind_of(void) {
  CHECK_EQ_STR(hubu_session_kind_of("d:alice:bob"), "direct");
  CHECK_EQ_STR(hubu_session_kind_of("g:team"), "group");
  CHECK_EQ_STR(hubu_session_kind_of("room:7"), "custom");
  CHECK_EQ_STR(hubu_session_kind_of("d:alice"), "custom");
  CHECK_EQ_STR(hubu_session_kind_of("d::bob"), "custom");
  CHECK_EQ_STR(hubu_session_kind_of("d:a:b:c"), "custom");
  CHECK_EQ_STR(hubu_session_kind_of("g:"), "custom");
}

static void test_open_failures_return_an_error(void) {
  uv_loop_t loop;
  CHECK_EQ_U64(uv_loop_init(&loop), 0);
  char err[256] = "";
  hubu_store_config cfg = {.url = "nosuchdb://admin:s3cret@x/y"};
  CHECK(hubu_store_open(&loop, &cfg, err, sizeof err) == NULL);
  /* names the scheme and the known ones, never the rest (it may hold a password) */
  CHECK(strstr(err, "\"nosuchdb:\"") != NULL && strstr(err, "sqlite:") != NULL && strstr(err, "mariadb://") != NULL);
  CHECK(strstr(err, "s3cret") == NULL);

  char dir[] = "/tmp/hubu-test-store-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char file[128], below[160];
  snprintf(file, sizeof file, "%s/hubu.db", dir); /* a file where the data directory should be */
  FILE *fp = fopen(file, "w");
  CHECK(fp != NULL);
  if (fp) fclose(fp);
  snprintf(below, sizeof below, "sqlite:%s/data/hubu.db", file);
  cfg = (hubu_store_config){.url = below};
  err[0] = '\0';
  CHECK(hubu_store_open(&loop, &cfg, err, sizeof err) == NULL);
  CHECK(err[0] != '\0');
  CHECK_EQ_U64(uv_loop_close(&loop), 0);
  remove_dir(dir);
}

static void test_appends_complete_in_submission_order(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  burst_reset();
  /* APPENDs interleaved with other ops: completions follow submission order. */
  size_t n = 0;
  uint64_t seq[3] = {0, 0, 0};
  const char *sessions[3] = {"d:alice:bob", "g:team", "room:1"};
  for (int i = 0; i < 600; i++) {
    int s = i % 3;
    burst_submit(&f, append_op(make_msg(sessions[s], ++seq[s], "alice", "phone", (uint64_t)i + 1, "hi", 0)), n++);
    if (i % 97 == 0) {
      hubu_store_op *op = hubu_store_op_new(HUBU_STORE_DEVICE_LOAD);
      snprintf(op->device_load.user, sizeof op->device_load.user, "alice");
      snprintf(op->device_load.device, sizeof op->device_load.device, "phone");
      burst_submit(&f, op, n++);
    }
  }
  burst_wait(&f, n);
  CHECK_EQ_U64(burst.out_of_order, 0);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], n);
  hubu_store_stats stats;
  hubu_store_get_stats(f.store, &stats);
  CHECK_EQ_U64(stats.appended, 600);
  CHECK_EQ_U64(stats.queued, 0);
  CHECK(stats.batches >= 1 && stats.batches <= 600);
  fixture_finish(&f);
}

static void test_duplicate_send_returns_original_ids(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  hubu_msg *orig = make_msg("d:alice:bob", 1, "alice", "phone", 5, "first", 0);
  hubu_store_op *op = run_op(&f, append_op(hubu_msg_ref(orig)));
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->append.stored_seq, 1);
  hubu_store_op_free(op);

  /* The retry got a new seq and msg_id before reaching the store. */
  op = run_op(&f, append_op(make_msg("d:alice:bob", 2, "alice", "phone", 5, "retry", 0)));
  CHECK_EQ_U64(op->status, HUBU_STORE_DUPLICATE);
  CHECK_EQ_U64(op->append.stored_seq, 1);
  CHECK_EQ_U64(op->append.stored_msg_id, orig->msg_id);
  CHECK_EQ_STR(op->append.stored_session_id, "d:alice:bob");
  hubu_store_op_free(op);

  /* Two copies in one burst: the second is the duplicate of the first. */
  burst_reset();
  burst_submit(&f, append_op(make_msg("d:alice:bob", 2, "alice", "phone", 6, "a", 0)), 0);
  burst_submit(&f, append_op(make_msg("d:alice:bob", 3, "alice", "phone", 6, "a", 0)), 1);
  burst_wait(&f, 2);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], 1);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_DUPLICATE], 1);

  op = pull(&f, "d:alice:bob", 0, 0);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->pull.n_msgs, 2); /* seq 1 and 2; nothing stored twice */
  if (op->pull.n_msgs == 2) {
    CHECK_EQ_MEM(op->pull.msgs[0]->push_entry, orig->push_entry, orig->push_entry_len);
    CHECK_EQ_U64(op->pull.msgs[1]->seq, 2);
  }
  CHECK_EQ_U64(op->pull.max_seq, 2);
  hubu_store_op_free(op);
  hubu_store_stats stats;
  hubu_store_get_stats(f.store, &stats);
  CHECK_EQ_U64(stats.appended, 2);
  hubu_msg_unref(orig);
  fixture_finish(&f);
}

static void test_taken_seq_fails_only_that_append(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  append_one(&f, make_msg("g:team", 1, "alice", "phone", 1, "one", 0), HUBU_STORE_OK);
  burst_reset();
  hubu_store_op *taken = append_op(make_msg("g:team", 1, "bob", "laptop", 1, "clash", 0));
  taken->done = on_done_flag;
  int taken_done = 0;
  taken->ud = &taken_done;
  hubu_store_submit(f.store, taken);
  burst_submit(&f, append_op(make_msg("g:team", 2, "bob", "laptop", 2, "two", 0)), 0);
  burst_wait(&f, 1);
  CHECK(taken_done);
  CHECK_EQ_U64(taken->status, HUBU_STORE_SEQ_TAKEN);
  CHECK(strstr(taken->error, "taken") != NULL);
  hubu_store_op_free(taken);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], 1);
  hubu_store_op *op = pull(&f, "g:team", 0, 10);
  CHECK_EQ_U64(op->pull.n_msgs, 2);
  if (op->pull.n_msgs == 2) CHECK_EQ_STR(op->pull.msgs[0]->sender, "alice");
  hubu_store_op_free(op);
  /* bob's device high-water mark counts only what was stored */
  op = device_load(&f, "bob", "laptop");
  CHECK_EQ_U64(op->device_load.last_client_id, 2);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

static void test_device_load_and_find_send(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  hubu_store_op *op = device_load(&f, "alice", "phone");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->device_load.last_client_id, 0);
  hubu_store_op_free(op);

  append_one(&f, make_msg("d:alice:bob", 1, "alice", "phone", 3, "a", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("g:team", 1, "alice", "phone", 9, "b", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("d:alice:bob", 2, "alice", "laptop", 100, "c", 0), HUBU_STORE_OK);
  op = device_load(&f, "alice", "phone");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->device_load.last_client_id, 9);
  hubu_store_op_free(op);
  op = device_load(&f, "alice", "laptop");
  CHECK_EQ_U64(op->device_load.last_client_id, 100);
  hubu_store_op_free(op);
  op = device_load(&f, "bob", "phone");
  CHECK_EQ_U64(op->device_load.last_client_id, 0);
  hubu_store_op_free(op);

  op = hubu_store_op_new(HUBU_STORE_FIND_SEND);
  snprintf(op->find_send.user, sizeof op->find_send.user, "alice");
  snprintf(op->find_send.device, sizeof op->find_send.device, "phone");
  op->find_send.client_id = 9;
  run_op(&f, op);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_STR(op->find_send.session_id, "g:team");
  CHECK_EQ_U64(op->find_send.seq, 1);
  CHECK_EQ_U64(op->find_send.msg_id, 1000000 + 7 + 9);
  op->status = HUBU_STORE_ERROR;
  op->find_send.client_id = 4; /* the same op object, reused */
  op->next = NULL;
  run_op(&f, op);
  CHECK_EQ_U64(op->status, HUBU_STORE_NOT_FOUND);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

static void test_direct_session_lists_both_users(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  hubu_store_op *op = session_load(&f, "d:alice:bob");
  CHECK_EQ_U64(op->status, HUBU_STORE_NOT_FOUND);
  hubu_store_op_free(op);

  append_one(&f, make_msg("d:alice:bob", 1, "bob", "phone", 1, "hey", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("d:alice:bob", 2, "alice", "phone", 1, "hi", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("room:9", 4, "carol", "web", 1, "custom", 0), HUBU_STORE_OK);
  op = session_load(&f, "d:alice:bob");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_STR(op->session_load.kind, "direct");
  CHECK_EQ_U64(op->session_load.max_seq, 2);
  CHECK_EQ_U64(op->session_load.min_seq, 0);
  CHECK_EQ_U64(op->session_load.n_members, 2);
  if (op->session_load.n_members == 2) {
    CHECK_EQ_STR(op->session_load.members[0], "alice");
    CHECK_EQ_STR(op->session_load.members[1], "bob");
  }
  hubu_store_op_free(op);
  /* Any other non-group kind: the sender of its first message is a member. */
  op = session_load(&f, "room:9");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_STR(op->session_load.kind, "custom");
  CHECK_EQ_U64(op->session_load.max_seq, 4);
  CHECK_EQ_U64(op->session_load.n_members, 1);
  if (op->session_load.n_members == 1) CHECK_EQ_STR(op->session_load.members[0], "carol");
  hubu_store_op_free(op);
  fixture_finish(&f);
}

static void test_group_create_add_remove_load(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  const char *const members[] = {"carol", "alice"};
  hubu_store_op *op = group_create(&f, "g:team", members, 2);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);
  op = group_create(&f, "g:team", members, 1);
  CHECK_EQ_U64(op->status, HUBU_STORE_EXISTS);
  hubu_store_op_free(op);

  op = member_op(&f, HUBU_STORE_MEMBER_ADD, "g:team", "bob", NULL);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);
  op = member_op(&f, HUBU_STORE_MEMBER_ADD, "g:team", "bob", "owner"); /* already a member: fine */
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);
  op = member_op(&f, HUBU_STORE_MEMBER_ADD, "g:nope", "bob", NULL);
  CHECK_EQ_U64(op->status, HUBU_STORE_NOT_FOUND);
  hubu_store_op_free(op);
  op = member_op(&f, HUBU_STORE_MEMBER_ADD, "g:team", "dave", NULL);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);

  op = member_op(&f, HUBU_STORE_MEMBER_REMOVE, "g:team", "carol", NULL);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);
  op = member_op(&f, HUBU_STORE_MEMBER_REMOVE, "g:team", "carol", NULL);
  CHECK_EQ_U64(op->status, HUBU_STORE_NOT_FOUND);
  hubu_store_op_free(op);

  op = session_load(&f, "g:team");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_STR(op->session_load.kind, "group");
  CHECK_EQ_U64(op->session_load.max_seq, 0);
  CHECK_EQ_U64(op->session_load.n_members, 3);
  if (op->session_load.n_members == 3) {
    CHECK_EQ_STR(op->session_load.members[0], "alice");
    CHECK_EQ_STR(op->session_load.members[1], "bob");
    CHECK_EQ_STR(op->session_load.members[2], "dave");
  }
  hubu_store_op_free(op);

  /* A message to the group raises max_seq and leaves its members alone. */
  append_one(&f, make_msg("g:team", 1, "bob", "phone", 1, "hello team", 0), HUBU_STORE_OK);
  op = session_load(&f, "g:team");
  CHECK_EQ_U64(op->session_load.max_seq, 1);
  CHECK_EQ_U64(op->session_load.n_members, 3);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

static void test_pull_pages_and_round_trips_bytes(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  enum { N = 250 };
  hubu_msg *orig[N + 1] = {NULL};
  burst_reset();
  for (uint64_t seq = 1; seq <= N; seq++) {
    char body[64];
    snprintf(body, sizeof body, "message %llu \x01\x02", (unsigned long long)seq);
    orig[seq] = make_msg("g:pull", seq, seq % 2 ? "alice" : "bob", "phone", seq, body, seq % 3 == 0);
    burst_submit(&f, append_op(hubu_msg_ref(orig[seq])), seq - 1);
  }
  /* an empty body and no content type round-trip too */
  hubu_msg *empty = hubu_msg_new("g:pull2", 1, 77, "alice", "phone", 10000, NULL, 0, NULL, NULL, 0, 5);
  burst_submit(&f, append_op(hubu_msg_ref(empty)), N);
  burst_wait(&f, N + 1);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], N + 1);

  uint64_t after = 0, seen = 0;
  int pages = 0, mismatches = 0;
  for (;;) {
    hubu_store_op *op = pull(&f, "g:pull", after, 100);
    CHECK_EQ_U64(op->status, HUBU_STORE_OK);
    CHECK_EQ_U64(op->pull.max_seq, N);
    pages++;
    for (size_t i = 0; i < op->pull.n_msgs; i++) {
      const hubu_msg *m = op->pull.msgs[i], *o = orig[after + 1 + i];
      if (m->seq != after + 1 + i || m->push_entry_len != o->push_entry_len ||
          memcmp(m->push_entry, o->push_entry, o->push_entry_len) != 0 || m->meta_len != o->meta_len)
        mismatches++;
    }
    seen += op->pull.n_msgs;
    int more = op->pull.has_more;
    if (op->pull.n_msgs) after = op->pull.msgs[op->pull.n_msgs - 1]->seq;
    CHECK_EQ_U64(more, seen < N);
    hubu_store_op_free(op);
    if (!more || pages > 10) break;
  }
  CHECK_EQ_U64(pages, 3);
  CHECK_EQ_U64(seen, N);
  CHECK_EQ_U64(mismatches, 0);
  CHECK(orig[3]->meta_len > 0);

  hubu_store_op *op = pull(&f, "g:pull", 240, 0); /* 0 means the default (100) */
  CHECK_EQ_U64(op->pull.n_msgs, 10);
  CHECK_EQ_U64(op->pull.has_more, 0);
  hubu_store_op_free(op);
  op = pull(&f, "g:pull", 0, 0);
  CHECK_EQ_U64(op->pull.n_msgs, 100);
  CHECK_EQ_U64(op->pull.has_more, 1);
  hubu_store_op_free(op);
  op = pull(&f, "g:pull", 250, 5);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->pull.n_msgs, 0);
  CHECK_EQ_U64(op->pull.has_more, 0);
  hubu_store_op_free(op);
  op = pull(&f, "g:none", 0, 5);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->pull.n_msgs, 0);
  hubu_store_op_free(op);
  op = pull(&f, "g:pull2", 0, 5);
  CHECK_EQ_U64(op->pull.n_msgs, 1);
  if (op->pull.n_msgs == 1) {
    CHECK_EQ_U64(op->pull.msgs[0]->body_len, 0);
    CHECK_EQ_MEM(op->pull.msgs[0]->push_entry, empty->push_entry, empty->push_entry_len);
    CHECK_EQ_U64(op->pull.msgs[0]->push_entry_len, empty->push_entry_len);
  }
  hubu_store_op_free(op);

  for (int i = 1; i <= N; i++) hubu_msg_unref(orig[i]);
  hubu_msg_unref(empty);
  fixture_finish(&f);
}

static void test_sync_lists_sessions_with_max_seq(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  const char *const members[] = {"alice", "bob"};
  hubu_store_op *op = group_create(&f, "g:team", members, 2);
  hubu_store_op_free(op);
  append_one(&f, make_msg("d:alice:bob", 1, "bob", "phone", 1, "a", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("d:alice:bob", 2, "bob", "phone", 2, "b", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("d:alice:carol", 1, "carol", "phone", 1, "c", 0), HUBU_STORE_OK);
  append_one(&f, make_msg("d:bob:carol", 5, "carol", "phone", 2, "d", 0), HUBU_STORE_OK);
  for (uint64_t seq = 1; seq <= 3; seq++)
    append_one(&f, make_msg("g:team", seq, "bob", "phone", 10 + seq, "e", 0), HUBU_STORE_OK);

  op = sync_user(&f, "alice");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->sync.n_states, 3);
  const hubu_store_session_state *s = find_state(op, "d:alice:bob");
  CHECK(s && s->max_seq == 2 && strcmp(s->kind, "direct") == 0);
  s = find_state(op, "d:alice:carol");
  CHECK(s && s->max_seq == 1);
  s = find_state(op, "g:team");
  CHECK(s && s->max_seq == 3 && strcmp(s->kind, "group") == 0 && s->min_seq == 0);
  CHECK(find_state(op, "d:bob:carol") == NULL);
  hubu_store_op_free(op);

  op = sync_user(&f, "nobody");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->sync.n_states, 0);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

/* delivered_seq of one cursor, read with a connection of the test's own. */
static int64_t read_cursor(const char *dir, const char *user, const char *device, const char *session) {
  char file[128];
  snprintf(file, sizeof file, "%s/hubu.db", dir);
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;
  int64_t v = -1;
  if (sqlite3_open_v2(file, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db,
                         "SELECT delivered_seq FROM cursors WHERE user_id = ?1 AND device_id = ?2 AND session_id = ?3",
                         -1, &stmt, NULL) == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, session, -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW) v = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return v;
}

static hubu_store_op *cursors_op(const char *user, const char *device, const char *const *sessions,
                                 const uint64_t *seqs, size_t n) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_CURSORS_SAVE);
  op->cursors_save.cursors = calloc(n, sizeof *op->cursors_save.cursors);
  op->cursors_save.n_cursors = n;
  for (size_t i = 0; i < n; i++) {
    hubu_store_cursor *c = &op->cursors_save.cursors[i];
    snprintf(c->user, sizeof c->user, "%s", user);
    snprintf(c->device, sizeof c->device, "%s", device);
    snprintf(c->session_id, sizeof c->session_id, "%s", sessions[i]);
    c->delivered_seq = seqs[i];
  }
  return op;
}

static void test_cursors_save_keeps_the_max(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  const char *const sessions[] = {"d:alice:bob", "g:team"};
  const uint64_t first[] = {10, 3}, second[] = {5, 7};
  hubu_store_op *op = run_op(&f, cursors_op("alice", "phone", sessions, first, 2));
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);
  op = run_op(&f, cursors_op("alice", "phone", sessions, second, 2));
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  hubu_store_op_free(op);
  CHECK_EQ_U64(read_cursor(f.dir, "alice", "phone", "d:alice:bob"), 10);
  CHECK_EQ_U64(read_cursor(f.dir, "alice", "phone", "g:team"), 7);
  CHECK_EQ_U64(read_cursor(f.dir, "alice", "laptop", "g:team"), (uint64_t)-1);
  fixture_finish(&f);
}

static void test_everything_survives_reopen(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  const char *const members[] = {"alice", "bob"};
  hubu_store_op *op = group_create(&f, "g:keep", members, 2);
  hubu_store_op_free(op);
  hubu_msg *kept[21] = {NULL};
  burst_reset();
  for (uint64_t seq = 1; seq <= 20; seq++) {
    kept[seq] =
        make_msg(seq % 2 ? "g:keep" : "d:alice:bob", (seq + 1) / 2, "alice", "phone", seq, "durable", seq % 4 == 1);
    burst_submit(&f, append_op(hubu_msg_ref(kept[seq])), seq - 1);
  }
  burst_wait(&f, 20);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], 20);
  const char *const sessions[] = {"g:keep"};
  const uint64_t seqs[] = {4};
  op = run_op(&f, cursors_op("alice", "phone", sessions, seqs, 1));
  hubu_store_op_free(op);

  fixture_close_store(&f);
  if (fixture_open_store(&f) != 0) {
    fixture_finish(&f);
    return;
  }

  op = session_load(&f, "g:keep");
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->session_load.max_seq, 10);
  CHECK_EQ_U64(op->session_load.n_members, 2);
  hubu_store_op_free(op);
  op = pull(&f, "g:keep", 0, 100);
  CHECK_EQ_U64(op->pull.n_msgs, 10);
  for (size_t i = 0; i < op->pull.n_msgs; i++)
    CHECK_EQ_MEM(op->pull.msgs[i]->push_entry, kept[2 * i + 1]->push_entry, kept[2 * i + 1]->push_entry_len);
  hubu_store_op_free(op);
  op = device_load(&f, "alice", "phone");
  CHECK_EQ_U64(op->device_load.last_client_id, 20);
  hubu_store_op_free(op);
  op = sync_user(&f, "bob");
  CHECK_EQ_U64(op->sync.n_states, 2);
  const hubu_store_session_state *s = find_state(op, "d:alice:bob");
  CHECK(s && s->max_seq == 10);
  hubu_store_op_free(op);
  CHECK_EQ_U64(read_cursor(f.dir, "alice", "phone", "g:keep"), 4);
  /* A retry after the restart is still a duplicate. */
  op = run_op(&f, append_op(make_msg("g:keep", 11, "alice", "phone", 19, "again", 0)));
  CHECK_EQ_U64(op->status, HUBU_STORE_DUPLICATE);
  CHECK_EQ_U64(op->append.stored_seq, 10);
  hubu_store_op_free(op);
  for (int i = 1; i <= 20; i++) hubu_msg_unref(kept[i]);
  fixture_finish(&f);
}

static void test_ten_thousand_appends_group_commit(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  enum { N = 10000 };
  burst_reset();
  uint64_t seq[10] = {0};
  for (size_t i = 0; i < N; i++) {
    char session[16], sender[16];
    snprintf(session, sizeof session, "g:s%zu", i % 10);
    snprintf(sender, sizeof sender, "u%zu", i % 7);
    burst_submit(&f, append_op(make_msg(session, ++seq[i % 10], sender, "phone", i + 1, "bulk body", 0)), i);
  }
  burst_wait(&f, N);
  CHECK_EQ_U64(burst.out_of_order, 0);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], N);
  hubu_store_stats stats;
  hubu_store_get_stats(f.store, &stats);
  CHECK_EQ_U64(stats.appended, N);
  CHECK(stats.batches < stats.appended / 10);
  CHECK(stats.max_batch_seen > 1 && stats.max_batch_seen <= 4096);
  printf("10000 appends: %llu transactions, largest %llu, %llu us committing\n", (unsigned long long)stats.batches,
         (unsigned long long)stats.max_batch_seen, (unsigned long long)stats.commit_us_total);

  hubu_store_op *op = pull(&f, "g:s3", 0, 5000); /* capped at 1000 */
  CHECK_EQ_U64(op->pull.n_msgs, 1000);
  CHECK_EQ_U64(op->pull.has_more, 0); /* exactly 1000 in g:s3 */
  CHECK_EQ_U64(op->pull.max_seq, 1000);
  hubu_store_op_free(op);
  op = pull(&f, "g:s3", 0, 999);
  CHECK_EQ_U64(op->pull.n_msgs, 999);
  CHECK_EQ_U64(op->pull.has_more, 1);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

static void test_fsync_always_commits_each_message(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_ALWAYS) != 0) return;
  burst_reset();
  for (size_t i = 0; i < 20; i++)
    burst_submit(&f, append_op(make_msg("d:alice:bob", i + 1, "alice", "phone", i + 1, "x", 0)), i);
  burst_wait(&f, 20);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], 20);
  hubu_store_stats stats;
  hubu_store_get_stats(f.store, &stats);
  CHECK_EQ_U64(stats.batches, 20);
  CHECK_EQ_U64(stats.appended, 20);
  CHECK_EQ_U64(stats.max_batch_seen, 1);
  fixture_finish(&f);

  if (fixture_init(&f, HUBU_FSYNC_OFF) != 0) return;
  append_one(&f, make_msg("d:alice:bob", 1, "alice", "phone", 1, "x", 0), HUBU_STORE_OK);
  fixture_finish(&f);
}

/* A second connection holds the write lock past the busy timeout: the batch
 * fails as a whole with RETRY (a lock passes), nothing of it is stored, and
 * the next batch works. */
static void test_failed_transaction_fails_the_whole_batch(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  fixture_close_store(&f);
  f.cfg.busy_timeout_ms = 50;
  if (fixture_open_store(&f) != 0) {
    fixture_finish(&f);
    return;
  }
  append_one(&f, make_msg("g:lock", 1, "alice", "phone", 1, "before", 0), HUBU_STORE_OK);
  char file[128];
  snprintf(file, sizeof file, "%s/hubu.db", f.dir);
  sqlite3 *other = NULL;
  CHECK_EQ_U64(sqlite3_open(file, &other), SQLITE_OK);
  CHECK_EQ_U64(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  burst_reset();
  for (size_t i = 0; i < 3; i++)
    burst_submit(&f, append_op(make_msg("g:lock", i + 2, "alice", "phone", i + 2, "blocked", 0)), i);
  burst_wait(&f, 3);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_RETRY], 3);
  sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(other);

  hubu_store_op *op = pull(&f, "g:lock", 0, 10);
  CHECK_EQ_U64(op->pull.n_msgs, 1);
  hubu_store_op_free(op);
  append_one(&f, make_msg("g:lock", 2, "alice", "phone", 2, "after", 0), HUBU_STORE_OK);
  op = device_load(&f, "alice", "phone");
  CHECK_EQ_U64(op->device_load.last_client_id, 2);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

/* Close with ops still queued: every one completes before close returns; one
 * submitted from a done callback during close completes with ERROR. */
static hubu_store *closing_store;
static int late_status = -1;

static void on_late_done(hubu_store_op *op) {
  late_status = (int)op->status;
  hubu_store_op_free(op);
}

static void on_done_then_submit(hubu_store_op *op) {
  on_burst_done(op);
  if (burst.next == 300) {
    hubu_store_op *late = hubu_store_op_new(HUBU_STORE_DEVICE_LOAD);
    late->done = on_late_done;
    hubu_store_submit(closing_store, late);
  }
}

static void test_close_finishes_queued_ops(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  burst_reset();
  closing_store = f.store;
  for (size_t i = 0; i < 300; i++) {
    hubu_store_op *op = append_op(make_msg("g:close", i + 1, "alice", "phone", i + 1, "queued", 0));
    op->ud = (void *)(uintptr_t)i;
    op->done = on_done_then_submit;
    hubu_store_submit(f.store, op);
  }
  hubu_store_close(f.store); /* the loop has not run: every completion happens in here */
  f.store = NULL;
  CHECK_EQ_U64(burst.next, 300);
  CHECK_EQ_U64(burst.counts[HUBU_STORE_OK], 300);
  CHECK_EQ_U64(burst.out_of_order, 0);
  CHECK_EQ_U64(late_status, HUBU_STORE_ERROR);
  uv_run(&f.loop, UV_RUN_DEFAULT);

  CHECK_EQ_U64(fixture_open_store(&f), 0);
  if (f.store) {
    hubu_store_op *op = pull(&f, "g:close", 0, 1000);
    CHECK_EQ_U64(op->pull.n_msgs, 300);
    hubu_store_op_free(op);
  }
  fixture_finish(&f);
}

/* The child appends and reports every OK completion on a pipe until it is
 * killed with SIGKILL; every append it reported must be there on reopen. */
enum { KILL_WINDOW = 256, KILL_AFTER_ACKS = 3000, KILL_MAX = 1000000 };
static struct {
  hubu_store *store;
  int fd;
  uint64_t next;
} killed_child;

static void child_submit(void);

static void on_child_done(hubu_store_op *op) {
  uint64_t client_id = op->append.msg->client_id;
  int ok = op->status == HUBU_STORE_OK;
  hubu_store_op_free(op);
  if (ok && write(killed_child.fd, &client_id, sizeof client_id) != (ssize_t)sizeof client_id) _exit(3);
  child_submit();
}

static void child_submit(void) {
  uint64_t i = ++killed_child.next;
  if (i > KILL_MAX) return;
  char session[16];
  snprintf(session, sizeof session, "g:k%llu", (unsigned long long)(i % 8));
  hubu_store_op *op = append_op(make_msg(session, i, "alice", "phone", i, "must survive kill -9", 0));
  op->done = on_child_done;
  hubu_store_submit(killed_child.store, op);
}

static void run_killed_child(const char *dir, int fd) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char url[200];
  snprintf(url, sizeof url, "sqlite:%s/hubu.db", dir);
  hubu_store_config cfg = {.url = url, .fsync = HUBU_FSYNC_BATCH};
  char err[256];
  killed_child.store = hubu_store_open(&loop, &cfg, err, sizeof err);
  if (!killed_child.store) _exit(2);
  killed_child.fd = fd;
  for (int i = 0; i < KILL_WINDOW; i++) child_submit();
  uv_run(&loop, UV_RUN_DEFAULT); /* until the parent kills us */
  _exit(4);
}

static void test_acked_appends_survive_kill9(void) {
  fixture f;
  if (fixture_init(&f, HUBU_FSYNC_BATCH) != 0) return;
  fixture_close_store(&f); /* the child owns the database until it dies */
  int fds[2];
  if (!CHECK(pipe(fds) == 0)) return;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    run_killed_child(f.dir, fds[1]);
  }
  close(fds[1]);
  CHECK(pid > 0);
  uint8_t *acked = calloc(KILL_MAX + 1, 1);
  uint64_t n_acked = 0, id = 0, highest = 0;
  int killed = 0;
  for (;;) {
    ssize_t r = read(fds[0], &id, sizeof id); /* 8-byte writes to a pipe are atomic */
    if (r != (ssize_t)sizeof id) break;       /* EOF: the child is gone */
    if (id <= KILL_MAX && !acked[id]) {
      acked[id] = 1;
      n_acked++;
      if (id > highest) highest = id;
    }
    if (n_acked >= KILL_AFTER_ACKS && !killed) {
      kill(pid, SIGKILL); /* mid-stream: more appends are queued and committing */
      killed = 1;
    }
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK(n_acked >= KILL_AFTER_ACKS);

  if (fixture_open_store(&f) == 0) {
    uint64_t found = 0;
    for (int s = 0; s < 8; s++) {
      char session[16];
      snprintf(session, sizeof session, "g:k%d", s);
      uint64_t after = 0;
      for (;;) {
        hubu_store_op *op = pull(&f, session, after, 1000);
        for (size_t i = 0; i < op->pull.n_msgs; i++)
          if (op->pull.msgs[i]->client_id <= KILL_MAX && acked[op->pull.msgs[i]->client_id]) found++;
        int more = op->pull.has_more && op->pull.n_msgs;
        if (op->pull.n_msgs) after = op->pull.msgs[op->pull.n_msgs - 1]->seq;
        hubu_store_op_free(op);
        if (!more) break;
      }
    }
    CHECK_EQ_U64(found, n_acked);
    hubu_store_op *op = device_load(&f, "alice", "phone");
    CHECK(op->device_load.last_client_id >= highest);
    hubu_store_op_free(op);
  }
  free(acked);
  fixture_finish(&f);
}

/* A store written by the first schema (log positions were the implicit
 * rowid, which VACUUM may renumber) is migrated at open: every message keeps
 * its position in the log_pos column, and new appends continue after them. */
static void test_schema_1_store_keeps_its_log_positions(void) {
  fixture f;
  memset(&f, 0, sizeof f);
  snprintf(f.dir, sizeof f.dir, "/tmp/hubu-test-store-XXXXXX");
  if (!CHECK(mkdtemp(f.dir) != NULL)) return;
  char file[128];
  snprintf(file, sizeof file, "%s/hubu.db", f.dir);
  sqlite3 *db = NULL;
  CHECK_EQ_U64(sqlite3_open(file, &db), SQLITE_OK);
  /* Schema version 1 as released: messages a rowid table keyed (session_id, seq). */
  CHECK_EQ_U64(sqlite3_exec(db,
                            "CREATE TABLE schema_version(version INTEGER NOT NULL);"
                            "INSERT INTO schema_version VALUES(1);"
                            "CREATE TABLE messages(session_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                            " msg_id INTEGER NOT NULL, sender TEXT NOT NULL, sender_device TEXT NOT NULL,"
                            " client_id INTEGER NOT NULL, content_type TEXT NOT NULL DEFAULT '', body BLOB NOT NULL,"
                            " meta BLOB, server_time_ms INTEGER NOT NULL, PRIMARY KEY (session_id, seq),"
                            " UNIQUE (sender, sender_device, client_id));"
                            "CREATE TABLE sessions(session_id TEXT NOT NULL PRIMARY KEY, kind TEXT NOT NULL,"
                            " max_seq INTEGER NOT NULL DEFAULT 0, min_seq INTEGER NOT NULL DEFAULT 0,"
                            " created_ms INTEGER NOT NULL, meta BLOB) WITHOUT ROWID;"
                            "CREATE TABLE members(session_id TEXT NOT NULL, user_id TEXT NOT NULL,"
                            " role TEXT NOT NULL DEFAULT 'member', joined_ms INTEGER NOT NULL,"
                            " PRIMARY KEY (session_id, user_id)) WITHOUT ROWID;"
                            "CREATE INDEX members_by_user ON members(user_id, session_id);"
                            "CREATE TABLE devices(user_id TEXT NOT NULL, device_id TEXT NOT NULL,"
                            " last_client_id INTEGER NOT NULL DEFAULT 0, last_seen_ms INTEGER NOT NULL DEFAULT 0,"
                            " PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;"
                            "CREATE TABLE cursors(user_id TEXT NOT NULL, device_id TEXT NOT NULL,"
                            " session_id TEXT NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0,"
                            " PRIMARY KEY (user_id, device_id, session_id)) WITHOUT ROWID;"
                            "CREATE TABLE kv(plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB,"
                            " PRIMARY KEY (plugin, key)) WITHOUT ROWID;"
                            "INSERT INTO sessions VALUES('g:old', 'group', 3, 0, 1, NULL);"
                            "INSERT INTO messages(rowid, session_id, seq, msg_id, sender, sender_device, client_id,"
                            " body, server_time_ms) VALUES(5, 'g:old', 1, 11, 'alice', 'phone', 1, x'61', 1),"
                            " (9, 'g:old', 2, 12, 'alice', 'phone', 2, x'62', 2),"
                            " (12, 'g:old', 3, 13, 'alice', 'phone', 3, x'63', 3);",
                            NULL, NULL, NULL),
               SQLITE_OK);
  sqlite3_close(db);
  CHECK_EQ_U64(uv_loop_init(&f.loop), 0);
  snprintf(f.url, sizeof f.url, "sqlite:%s", file);
  f.cfg.url = f.url;
  f.cfg.fsync = HUBU_FSYNC_BATCH;
  if (fixture_open_store(&f) != 0) {
    remove_dir(f.dir);
    return;
  }
  hubu_store_op *op = run_op(&f, append_op(make_msg("g:old", 4, "alice", "phone", 4, "d", 0)));
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  CHECK_EQ_U64(op->append.log_pos, 13);
  hubu_store_op_free(op);
  op = hubu_store_op_new(HUBU_STORE_LOG_READ);
  op->log_read.limit = 10;
  run_op(&f, op);
  CHECK_EQ_U64(op->status, HUBU_STORE_OK);
  static const uint64_t want_pos[] = {5, 9, 12, 13};
  if (CHECK_EQ_U64(op->log_read.n_msgs, 4))
    for (size_t i = 0; i < 4; i++) {
      CHECK_EQ_U64(op->log_read.msgs[i]->log_pos, want_pos[i]);
      CHECK_EQ_U64(op->log_read.msgs[i]->seq, i + 1);
    }
  CHECK_EQ_U64(op->log_read.max_pos, 13);
  hubu_store_op_free(op);
  fixture_finish(&f);
}

/* The store's log line names the session and user of an op, each kind
 * from its own fields; an op reused from the cache starts empty. */
static void test_ops_name_their_session_and_user(void) {
  hubu_store_op *op = append_op(make_msg("d:alice:bob", 1, "alice", "phone", 1, "hi", 0));
  CHECK_EQ_STR(hubu_store_op_session_id(op), "d:alice:bob");
  CHECK_EQ_STR(hubu_store_op_user(op), "alice");
  CHECK_EQ_U64(op->append.n_new_members, 2);
  hubu_store_op_free(op);
  op = hubu_store_op_new(HUBU_STORE_MEMBER_REMOVE);
  snprintf(op->member.session_id, sizeof op->member.session_id, "g:team");
  snprintf(op->member.user, sizeof op->member.user, "carol");
  CHECK_EQ_STR(hubu_store_op_session_id(op), "g:team");
  CHECK_EQ_STR(hubu_store_op_user(op), "carol");
  hubu_store_op_free(op);
  op = hubu_store_op_new(HUBU_STORE_KV_GET);
  CHECK_EQ_STR(hubu_store_op_session_id(op), "");
  CHECK_EQ_STR(hubu_store_op_user(op), "");
  hubu_store_op_free(op);
  op = hubu_store_op_new(HUBU_STORE_SESSION_LOAD);
  CHECK_EQ_STR(op->session_load.session_id, "");
  CHECK(op->session_load.members == NULL && op->session_load.n_members == 0);
  hubu_store_op_free(op);
}

int main(int argc, char **argv) {
  (void)argc;
  hubu_log_min_level = HUBU_LOG_WARN;
  test_session_kind_of();
  test_open_failures_return_an_error();
  test_appends_complete_in_submission_order();
  test_duplicate_send_returns_original_ids();
  test_taken_seq_fails_only_that_append();
  test_device_load_and_find_send();
  test_direct_session_lists_both_users();
  test_group_create_add_remove_load();
  test_pull_pages_and_round_trips_bytes();
  test_sync_lists_sessions_with_max_seq();
  test_cursors_save_keeps_the_max();
  test_everything_survives_reopen();
  test_ten_thousand_appends_group_commit();
  test_fsync_always_commits_each_message();
  test_failed_transaction_fails_the_whole_batch();
  test_close_finishes_queued_ops();
  test_acked_appends_survive_kill9();
  test_schema_1_store_keeps_its_log_positions();
  test_ops_name_their_session_and_user();
  return check_summary(argv[0]);
}

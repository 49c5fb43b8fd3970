/* session.c — per-conversation state on the loop thread: loaded from the
 * store on first use (max_seq, members), the tail of recent messages, and the
 * rule for what a session made by its first message starts with. Seqs are
 * assigned in messaging.c from the allocator (seq.h).
 * Invariant: requests for a session that is still loading wait in its FIFO,
 * so they are served in the order they arrived. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "core.h"
#include "log.h"
#include "store.h"
#include "token.h"

int hubu_session_direct_split(const char *id, char a[65], char b[65]) {
  hubu_session_id sid;
  if (hubu_session_id_parse(id, strlen(id), &sid) != HUBU_SESSION_DIRECT) return -1;
  memcpy(a, sid.a, sid.a_len);
  a[sid.a_len] = '\0';
  memcpy(b, sid.b, sid.b_len);
  b[sid.b_len] = '\0';
  return 0;
}

size_t hubu_session_member_list(const hubu_session *sess, hubu_member_names *direct, const char *const **out) {
  if (sess->kind == HUBU_SESSION_DIRECT && hubu_session_direct_split(sess->id, direct->a, direct->b) == 0) {
    direct->list[0] = direct->a;
    direct->list[1] = direct->b;
    *out = direct->list;
    return 2;
  }
  *out = (const char *const *)sess->members;
  return sess->n_members;
}

int hubu_session_direct_has(const char *id, const char *user) {
  hubu_session_id sid;
  return hubu_session_id_parse(id, strlen(id), &sid) == HUBU_SESSION_DIRECT && hubu_session_id_has_user(&sid, user);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int hubu_session_is_member(const hubu_session *sess, const char *user) {
  if (sess->kind == HUBU_SESSION_DIRECT) return hubu_session_direct_has(sess->id, user);
  return sess->n_members && bsearch(&user, sess->members, sess->n_members, sizeof *sess->members, cmp_str) != NULL;
}

int hubu_session_may_read(hubu_core *core, const char *id, const char *user) {
  int kind = hubu_session_id_check(id, strlen(id));
  if (kind == HUBU_SESSION_DIRECT) return hubu_session_direct_has(id, user);
  hubu_session *sess = NULL;
  HASH_FIND_STR(core->sessions, id, sess);
  return sess && sess->loaded && sess->exists && hubu_session_is_member(sess, user);
}

int hubu_session_add_member(hubu_session *sess, const char *user) {
  if (hubu_session_is_member(sess, user)) return 0;
  char **m = realloc(sess->members, (sess->n_members + 1) * sizeof *m);
  if (!m) return -1;
  sess->members = m;
  size_t i = sess->n_members;
  while (i > 0 && strcmp(m[i - 1], user) > 0) { /* keep sorted */
    m[i] = m[i - 1];
    i--;
  }
  if (!(m[i] = strdup(user))) {
    memmove(&m[i], &m[i + 1], (sess->n_members - i) * sizeof *m);
    return -1;
  }
  sess->n_members++;
  return 0;
}

void hubu_session_remove_member(hubu_session *sess, const char *user) {
  for (size_t i = 0; i < sess->n_members; i++) {
    if (strcmp(sess->members[i], user) == 0) {
      free(sess->members[i]);
      memmove(&sess->members[i], &sess->members[i + 1], (sess->n_members - i - 1) * sizeof *sess->members);
      sess->n_members--;
      return;
    }
  }
}

void hubu_session_membership_applied(hubu_core *core, const hubu_store_op *op) {
  if (op->status != HUBU_STORE_OK) return;
  if (core->bus) core->bus->ops->invalidate(core->bus, hubu_store_op_session_id(op));
  hubu_session *sess = NULL;
  HASH_FIND_STR(core->sessions, hubu_store_op_session_id(op), sess);
  if (!sess || !sess->loaded) return; /* not in memory: its load reads the store */
  if (op->kind == HUBU_STORE_SESSION_CREATE) {
    sess->exists = 1;
    for (size_t i = 0; i < op->session_create.n_members; i++)
      hubu_session_add_member(sess, op->session_create.members[i]);
  } else if (op->kind == HUBU_STORE_MEMBER_ADD) {
    hubu_session_add_member(sess, op->member.user);
  } else if (op->kind == HUBU_STORE_MEMBER_REMOVE) {
    hubu_session_remove_member(sess, op->member.user);
  }
}

int hubu_session_describe_new(const hubu_session *sess, const char *sender, hubu_store_op *op) {
  hubu_member_names direct;
  const char *const *names = &sender;
  size_t n = sess->kind == HUBU_SESSION_GROUP ? 0 : 1;
  if (sess->kind == HUBU_SESSION_DIRECT) n = hubu_session_member_list(sess, &direct, &names);
  hubu_store_append_op *append = &op->append;
  snprintf(append->new_kind, sizeof append->new_kind, "%s", hubu_session_kind_name((hubu_session_kind)sess->kind));
  if (!n) return 0;
  if (!(append->new_members = calloc(n, sizeof *append->new_members))) return -1;
  for (; append->n_new_members < n; append->n_new_members++)
    if (!(append->new_members[append->n_new_members] = strdup(names[append->n_new_members])))
      return -1; /* the op frees what it has */
  return 0;
}

/* ---- the tails' byte bound: sessions with a tail in a list, least recently used first ---- */

/* What a message in a tail holds: its allocation (lib/msg.c), mostly the encoded entry. */
static size_t tail_msg_bytes(const hubu_msg *m) { return sizeof *m + 64 + m->meta_len + m->push_entry_len; }

static void tail_unlink(hubu_core *core, hubu_session *sess) {
  if (sess->tail_prev)
    sess->tail_prev->tail_next = sess->tail_next;
  else if (core->tail_lru == sess)
    core->tail_lru = sess->tail_next;
  if (sess->tail_next)
    sess->tail_next->tail_prev = sess->tail_prev;
  else if (core->tail_mru == sess)
    core->tail_mru = sess->tail_prev;
  sess->tail_prev = sess->tail_next = NULL;
}

/* sess's tail was used: it goes last in the eviction order. */
static void tail_touch(hubu_core *core, hubu_session *sess) {
  if (core->tail_mru == sess) return;
  tail_unlink(core, sess);
  sess->tail_prev = core->tail_mru;
  if (core->tail_mru)
    core->tail_mru->tail_next = sess;
  else
    core->tail_lru = sess;
  core->tail_mru = sess;
}

/* Drops the oldest message of sess's tail: PULLs at or below it go to the store. */
static void tail_drop_oldest(hubu_core *core, hubu_session *sess) {
  hubu_msg *old = sess->tail[sess->tail_head];
  size_t b = tail_msg_bytes(old);
  sess->tail_bytes -= b;
  core->tail_bytes -= b;
  sess->tail_base = old->seq;
  hubu_msg_unref(old);
  sess->tail_head = (sess->tail_head + 1) % HUBU_TAIL_CAP;
  if (!--sess->tail_len) tail_unlink(core, sess);
}

static void session_free(hubu_session *sess) {
  for (size_t i = 0; i < sess->n_members; i++) free(sess->members[i]);
  free(sess->members);
  while (sess->tail_len) tail_drop_oldest(sess->core_ref, sess);
  free(sess->tail);
  free(sess->id);
  free(sess);
}

static void run_parked(hubu_core *core, hubu_session *sess) {
  while (sess->parked) {
    hubu_parked *p = sess->parked;
    sess->parked = p->next;
    if (!sess->parked) sess->parked_last = NULL;
    p->resume(core, sess, p);
  }
}

static void on_loaded(hubu_store_op *op) {
  hubu_session *sess = op->ud;
  hubu_core *core = sess->core_ref;
  sess->busy--;
  if (op->status == HUBU_STORE_OK) {
    sess->exists = sess->stored = 1;
    hubu_store_session_load_op *load = &op->session_load;
    sess->next_seq = sess->committed_seq = sess->tail_base = load->max_seq;
    sess->min_seq = load->min_seq;
    if (sess->kind != HUBU_SESSION_DIRECT) {
      sess->members = load->members; /* take ownership; the store returns them sorted */
      sess->n_members = load->n_members;
      load->members = NULL;
      load->n_members = 0;
      qsort(sess->members, sess->n_members, sizeof *sess->members, cmp_str);
    }
    sess->loaded = 1;
  } else if (op->status == HUBU_STORE_NOT_FOUND) {
    sess->exists = sess->kind != HUBU_SESSION_GROUP; /* a direct session exists implicitly */
    sess->loaded = 1;
  } /* else the store logged why; the waiting requests answer UNAVAILABLE */
  hubu_store_op_free(op);
  run_parked(core, sess); /* with loaded == 0 each request answers UNAVAILABLE */
  if ((!sess->loaded || !sess->exists) && !sess->busy &&
      !sess->parked) { /* nothing to keep: a group the store does not know */
    HASH_DEL(core->sessions, sess);
    session_free(sess);
  }
}

/* A reload after another node changed the members: the copy in memory
 * takes the store's members (a group the store no longer has stops
 * existing here). */
static void on_reloaded(hubu_store_op *op) {
  hubu_session *sess = op->ud;
  sess->busy--;
  if (op->status == HUBU_STORE_OK && sess->kind != HUBU_SESSION_DIRECT) {
    hubu_store_session_load_op *load = &op->session_load;
    for (size_t i = 0; i < sess->n_members; i++) free(sess->members[i]);
    free(sess->members);
    sess->members = load->members;
    sess->n_members = load->n_members;
    load->members = NULL;
    load->n_members = 0;
    qsort(sess->members, sess->n_members, sizeof *sess->members, cmp_str);
    sess->exists = sess->stored = 1;
  } else if (op->status == HUBU_STORE_NOT_FOUND && sess->kind == HUBU_SESSION_GROUP) {
    sess->exists = 0;
  }
  hubu_store_op_free(op);
}

void hubu_bus_invalidated(hubu_core *core, const char *session_id) {
  hubu_session *sess = NULL;
  HASH_FIND_STR(core->sessions, session_id, sess);
  if (!sess || !sess->loaded || sess->kind == HUBU_SESSION_DIRECT) return; /* a load under way reads the store */
  if (!sess->busy && !sess->parked && !sess->seq_wait) {                   /* idle: forget it, the next use loads it */
    HASH_DEL(core->sessions, sess);
    session_free(sess);
    return;
  }
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SESSION_LOAD);
  if (!op) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=session_reload session=%s", session_id);
    return;
  }
  snprintf(op->session_load.session_id, sizeof op->session_load.session_id, "%s", session_id);
  op->done = on_reloaded;
  op->ud = sess;
  sess->busy++;
  hubu_store_submit(core->store, op);
}

/* Makes room for one more session under --session-cache-max: the least
 * recently used idle sessions go (one with requests or appends under way
 * stays; a few of those are looked past). */
static void evict_over_bound(hubu_core *core) {
  uint32_t max = core->cfg.session_cache_max;
  if (!max) return;
  hubu_session *sess, *tmp;
  int looked = 0;
  HASH_ITER(hh, core->sessions, sess, tmp) {
    if (HASH_COUNT(core->sessions) < max || ++looked > 64) return;
    if (sess->busy || sess->parked || !sess->loaded) continue;
    HASH_DEL(core->sessions, sess);
    session_free(sess);
  }
}

hubu_session *hubu_session_get(hubu_core *core, const char *id) {
  hubu_session *sess = NULL;
  HASH_FIND_STR(core->sessions, id, sess);
  if (sess) {
    sess->last_used_ms = uv_now(core->loop);
    HASH_DEL(core->sessions, sess); /* last in the hash's order: the least recently used come first */
    HASH_ADD_KEYPTR(hh, core->sessions, sess->id, strlen(sess->id), sess);
    return sess;
  }
  evict_over_bound(core);
  int kind = hubu_session_id_check(id, strlen(id));
  if (kind < 0) return NULL;
  sess = calloc(1, sizeof *sess);
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_SESSION_LOAD);
  if (!sess || !(sess->id = strdup(id)) || !op) {
    if (sess) free(sess->id), free(sess);
    hubu_store_op_free(op);
    return NULL;
  }
  sess->kind = (uint8_t)kind;
  sess->core_ref = core;
  sess->last_used_ms = uv_now(core->loop);
  HASH_ADD_KEYPTR(hh, core->sessions, sess->id, strlen(sess->id), sess);
  snprintf(op->session_load.session_id, sizeof op->session_load.session_id, "%s", id);
  op->done = on_loaded;
  op->ud = sess;
  sess->busy++;
  hubu_store_submit(core->store, op);
  return sess;
}

void hubu_session_park(hubu_core *core, hubu_session *sess, hubu_parked *p) {
  p->next = NULL;
  if (sess->loaded && !sess->parked) {
    p->resume(core, sess, p);
    return;
  }
  if (sess->parked_last)
    sess->parked_last->next = p;
  else
    sess->parked = p;
  sess->parked_last = p;
}

void hubu_session_tail_push(hubu_session *sess, hubu_msg *m) {
  hubu_core *core = sess->core_ref;
  if (!sess->tail && !(sess->tail = calloc(HUBU_TAIL_CAP, sizeof *sess->tail))) {
    sess->tail_base = m->seq; /* no tail: the store answers */
    return;
  }
  if (sess->tail_len == HUBU_TAIL_CAP) tail_drop_oldest(core, sess);
  sess->tail[(sess->tail_head + sess->tail_len) % HUBU_TAIL_CAP] = hubu_msg_ref(m);
  sess->tail_len++;
  size_t b = tail_msg_bytes(m);
  sess->tail_bytes += b;
  core->tail_bytes += b;
  tail_touch(core, sess);
  size_t cap = core->cfg.tail_cache_bytes;
  while (cap && core->tail_bytes > cap && core->tail_lru) /* the least recently used tails lose their oldest first */
    tail_drop_oldest(core, core->tail_lru);
}

void hubu_session_tail_forget(hubu_session *sess, uint64_t seq) {
  while (sess->tail_len) tail_drop_oldest(sess->core_ref, sess);
  if (seq > sess->tail_base) sess->tail_base = seq;
}

int hubu_session_tail_read(hubu_session *sess, uint64_t after_seq, uint32_t limit, hubu_msg **out, int *has_more) {
  *has_more = 0;
  if (!sess->loaded || after_seq < sess->tail_base) return -1;
  if (sess->tail_len) tail_touch(sess->core_ref, sess);
  int n = 0;
  for (uint32_t i = 0; i < sess->tail_len; i++) {
    hubu_msg *m = sess->tail[(sess->tail_head + i) % HUBU_TAIL_CAP];
    if (m->seq <= after_seq) continue;
    if (m->seq > sess->committed_seq) break; /* ascending: the rest is above it too */
    if ((uint32_t)n == limit) {
      *has_more = 1;
      break;
    }
    out[n++] = m;
  }
  return n;
}

void hubu_session_evict_idle(hubu_core *core, uint64_t idle_before_ms) {
  hubu_session *sess, *tmp;
  HASH_ITER(hh, core->sessions, sess, tmp) {
    if (sess->busy || sess->parked || !sess->loaded || sess->last_used_ms >= idle_before_ms) continue;
    HASH_DEL(core->sessions, sess);
    session_free(sess);
  }
}

void hubu_session_free_all(hubu_core *core) {
  hubu_session *sess, *tmp;
  HASH_ITER(hh, core->sessions, sess, tmp) {
    HASH_DEL(core->sessions, sess);
    session_free(sess);
  }
}

/* presence.c — per-device send state on the loop thread, and the single
 * node's directory of users online (directory.h).
 * Invariant: a device lives while anything refers to it, so a store
 * completion always finds the device it was submitted for. */
#include "presence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "directory.h"
#include "log.h"
#include "store.h"

/* ---- the single node's directory (directory.h) ---- */

/* A user with peers on this node. */
typedef struct local_user {
  UT_hash_handle hh;
  hubu_peer *peers; /* linked through peer->user_next */
  char id[];        /* NUL-terminated, part of this allocation */
} local_user;

typedef struct {
  hubu_directory base;
  local_user *users; /* uthash, owned */
} local_directory;

static local_user *local_find(local_directory *ld, const char *id) {
  local_user *u = NULL;
  HASH_FIND_STR(ld->users, id, u);
  return u;
}

static int local_attach(hubu_directory *d, hubu_peer *c) {
  local_directory *ld = (local_directory *)d;
  local_user *u = local_find(ld, c->user);
  if (!u) {
    size_t len = strlen(c->user);
    if (!(u = calloc(1, sizeof *u + len + 1))) return -1;
    memcpy(u->id, c->user, len + 1);
    HASH_ADD_KEYPTR(hh, ld->users, u->id, len, u);
  }
  c->user_next = u->peers;
  u->peers = c;
  return 0;
}

static void local_detach(hubu_directory *d, hubu_peer *c) {
  local_directory *ld = (local_directory *)d;
  local_user *u = local_find(ld, c->user);
  if (!u) return;
  for (hubu_peer **p = &u->peers; *p; p = &(*p)->user_next) {
    if (*p == c) {
      *p = c->user_next;
      break;
    }
  }
  c->user_next = NULL;
  if (!u->peers) {
    HASH_DEL(ld->users, u);
    free(u);
  }
}

static hubu_peer *local_peers_of(hubu_directory *d, const char *user) {
  local_user *u = local_find((local_directory *)d, user);
  return u ? u->peers : NULL;
}

static size_t local_users(hubu_directory *d) { return HASH_COUNT(((local_directory *)d)->users); }

static void local_free(hubu_directory *d) {
  local_directory *ld = (local_directory *)d;
  local_user *u, *tmp;
  HASH_ITER(hh, ld->users, u, tmp) {
    HASH_DEL(ld->users, u);
    free(u);
  }
  free(ld);
}

static const hubu_directory_ops local_ops = {
    .attach = local_attach,
    .detach = local_detach,
    .peers_of = local_peers_of,
    .users = local_users,
    .free = local_free,
};

hubu_directory *hubu_directory_local_new(void) {
  local_directory *ld = calloc(1, sizeof *ld);
  if (!ld) return NULL;
  ld->base.ops = &local_ops;
  return &ld->base;
}

hubu_device *hubu_device_acquire(hubu_core *core, const char *user, const char *device) {
  char key[2 * 64 + 2];
  snprintf(key, sizeof key, "%s/%s", user, device);
  hubu_device *d = NULL;
  HASH_FIND_STR(core->devices, key, d);
  if (!d) {
    size_t klen = strlen(key), ulen = strlen(user);
    if (!(d = calloc(1, sizeof *d + 2 * (klen + 1)))) return NULL;
    memcpy(d->key, key, klen + 1);
    d->user = d->key + klen + 1;
    memcpy(d->user, key, klen + 1);
    d->user[ulen] = '\0';
    d->device = d->user + ulen + 1;
    HASH_ADD_KEYPTR(hh, core->devices, d->key, klen, d);
  }
  d->refs++;
  return d;
}

static void device_free(hubu_core *core, hubu_device *d) {
  HASH_DEL(core->devices, d);
  if (d->recent)
    for (uint32_t i = 0; i < HUBU_RECENT_ACKS; i++) hubu_msg_unref(d->recent[i]);
  free(d->recent);
  hubu_cursor *c, *tmp;
  HASH_ITER(hh, d->cursors, c, tmp) {
    HASH_DEL(d->cursors, c);
    free(c->session_id);
    free(c);
  }
  free(d->hello_waiters);
  free(d);
}

void hubu_device_release(hubu_core *core, hubu_device *d) {
  if (--d->refs == 0 && !d->cursors_dirty && !d->pending) device_free(core, d);
}

void hubu_device_remember(hubu_device *d, hubu_msg *m) {
  if (!d->recent && !(d->recent = calloc(HUBU_RECENT_ACKS, sizeof *d->recent))) return;
  hubu_msg_unref(d->recent[d->recent_next]);
  d->recent[d->recent_next] = hubu_msg_ref(m);
  d->recent_next = (d->recent_next + 1) % HUBU_RECENT_ACKS;
}

hubu_msg *hubu_device_recent(hubu_device *d, uint64_t client_id) {
  if (!d->recent) return NULL;
  for (uint32_t i = 0; i < HUBU_RECENT_ACKS; i++)
    if (d->recent[i] && d->recent[i]->client_id == client_id) return d->recent[i];
  return NULL;
}

int hubu_device_has_cursor(hubu_device *d, const char *session_id) {
  hubu_cursor *c = NULL;
  HASH_FIND_STR(d->cursors, session_id, c);
  return c != NULL;
}

void hubu_device_set_cursor(hubu_core *core, hubu_device *d, const char *session_id, uint64_t seq) {
  (void)core;
  hubu_cursor *c = NULL;
  HASH_FIND_STR(d->cursors, session_id, c);
  if (!c) {
    if (!(c = calloc(1, sizeof *c)) || !(c->session_id = strdup(session_id))) {
      free(c);
      return;
    }
    HASH_ADD_KEYPTR(hh, d->cursors, c->session_id, strlen(c->session_id), c);
  }
  if (seq <= c->seq) return;
  c->seq = seq;
  c->dirty = 1;
  d->cursors_dirty = 1;
}

static void on_cursors_saved(hubu_store_op *op) {
  hubu_store_op_free(op); /* a failure was logged by the store; cursors only ever move forward */
}

void hubu_presence_save_cursors(hubu_core *core) {
  size_t n = 0;
  hubu_device *d, *dtmp;
  HASH_ITER(hh, core->devices, d, dtmp) {
    if (!d->cursors_dirty) continue;
    hubu_cursor *c, *ctmp;
    HASH_ITER(hh, d->cursors, c, ctmp) n += c->dirty;
  }
  if (!n) return;
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_CURSORS_SAVE);
  if (!op || !(op->cursors_save.cursors = calloc(n, sizeof *op->cursors_save.cursors))) {
    hubu_store_op_free(op);
    return; /* stays dirty: the next round tries again */
  }
  HASH_ITER(hh, core->devices, d, dtmp) {
    if (!d->cursors_dirty) continue;
    hubu_cursor *c, *ctmp;
    HASH_ITER(hh, d->cursors, c, ctmp) {
      if (!c->dirty) continue;
      hubu_store_cursor *out = &op->cursors_save.cursors[op->cursors_save.n_cursors++];
      snprintf(out->user, sizeof out->user, "%s", d->user);
      snprintf(out->device, sizeof out->device, "%s", d->device);
      snprintf(out->session_id, sizeof out->session_id, "%s", c->session_id);
      out->delivered_seq = c->seq;
      c->dirty = 0;
    }
    d->cursors_dirty = 0;
    if (!d->refs && !d->pending) device_free(core, d);
  }
  op->done = on_cursors_saved;
  hubu_store_submit(core->store, op);
}

void hubu_presence_free_all(hubu_core *core) {
  hubu_device *d, *dtmp;
  HASH_ITER(hh, core->devices, d, dtmp) device_free(core, d);
}

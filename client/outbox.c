/* outbox.c — the file-backed outbox: an append-only log of the sends a client
 * queued and has not seen answered for good, so a restarted process resends
 * them, and of the client_ids it used, so it never reuses one.
 *
 * Format (integers big-endian):
 *   file   := "HUBUOBX1" record*
 *   record := len:u32 check:u32 body[len]     check: FNV-1a 32 of body
 *   body   := 'Q' client_id:u64 app_id:u64 client_time_ms:u64 flags:u8
 *                 session_id:str content_type:str n_meta:u32 (key:str value:str){n_meta} body:str
 *                                             queued (flags bit 0: client_id verified)
 *           | 'D' client_id:u64               done: ACKed, or refused for good
 *           | 'V' upto:u64                    every client_id <= upto is verified
 *           | 'L' last_client_id:u64          client_ids up to this one are used
 *   str    := len:u32 bytes[len]
 * A message renumbered to a new client_id (after STALE) is a 'Q' under the
 * new id followed by a 'D' of the old one; app_id stays. "Verified" means the
 * id was above the server's high-water mark at a HELLO_OK, so resending it can
 * only be answered with this very message (see messages.c).
 * Invariant: the file is a valid prefix. 'Q', 'V' and renumberings are
 * fdatasync'd before the call returns; 'D's are batched per loop turn and not
 * synced (a lost 'D' costs a resend the server answers as a duplicate). A
 * failed append is cut off again; a torn tail left by a crash ends the log
 * when it is read, and opening rewrites the file compacted (temp file,
 * fdatasync, rename). One process at a time: path.lock is flock'ed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "client_internal.h"

#define OUTBOX_MAGIC "HUBUOBX1"
#define OUTBOX_MAGIC_LEN 8
#define OUTBOX_RECORD_MAX (64u << 20) /* a longer record is corruption */
#define OUTBOX_FILE_MAX (1ull << 31)  /* refuse to load a larger file */
#define OUTBOX_META_MAX 4096
#define OUTBOX_COMPACT_IDLE (256u << 10) /* everything done and the log this large: rewrite */
#define OUTBOX_COMPACT_BUSY (16u << 20)  /* with sends pending: rewrite when the log doubled past this */
#define OUTBOX_DONE_BATCH (64u << 10)    /* write buffered 'D's at once past this */

/* Owns: both paths, both descriptors (and so the lock), the unwritten 'D's. */
struct hubu_outbox {
  char *path;
  char *lock_path;
  int fd;           /* the log, O_APPEND */
  int lock_fd;      /* flock'ed for our lifetime */
  uint64_t size;    /* bytes in the log */
  uint64_t busy_at; /* size at which a rewrite with sends pending is worth it */
  hubu_buf done;    /* 'D' records not yet written */
};

/* ---- encoding ---- */

static uint32_t fnv1a(const uint8_t *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

static void be32(uint8_t *w, uint32_t v) {
  w[0] = (uint8_t)(v >> 24);
  w[1] = (uint8_t)(v >> 16);
  w[2] = (uint8_t)(v >> 8);
  w[3] = (uint8_t)v;
}

static void be64(uint8_t *w, uint64_t v) {
  be32(w, (uint32_t)(v >> 32));
  be32(w + 4, (uint32_t)v);
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

static int put_u64(hubu_buf *b, uint64_t v) {
  uint8_t w[8];
  be64(w, v);
  return hubu_buf_append(b, w, 8);
}

static int put_bytes(hubu_buf *b, const void *p, size_t n) {
  uint8_t w[4];
  if (n > UINT32_MAX) return -1;
  be32(w, (uint32_t)n);
  return hubu_buf_append(b, w, 4) || hubu_buf_append(b, p, n) ? -1 : 0;
}

static int put_str(hubu_buf *b, const char *s) { return put_bytes(b, s, strlen(s)); }

/* Appends one record: header, then the body that fill writes. */
static int record_open(hubu_buf *b, size_t *start) {
  *start = hubu_buf_size(b);
  static const uint8_t header[8];
  return hubu_buf_append(b, header, sizeof header);
}

static void record_close(hubu_buf *b, size_t start) {
  uint8_t *h = b->data + b->off + start;
  size_t len = hubu_buf_size(b) - start - 8;
  be32(h, (uint32_t)len);
  be32(h + 4, fnv1a(h + 8, len));
}

static int record_id(hubu_buf *b, uint8_t type, uint64_t v) {
  size_t start;
  if (record_open(b, &start) || hubu_buf_append(b, &type, 1) || put_u64(b, v)) return -1;
  record_close(b, start);
  return 0;
}

static int record_queued(hubu_buf *b, const hubu_outgoing *o) {
  size_t start;
  uint8_t type = 'Q', flags = o->verified ? 1 : 0;
  if (record_open(b, &start) || hubu_buf_append(b, &type, 1) || put_u64(b, o->client_id) || put_u64(b, o->app_id) ||
      put_u64(b, o->client_time_ms) || hubu_buf_append(b, &flags, 1) || put_str(b, o->session_id) ||
      put_str(b, o->content_type))
    return -1;
  uint8_t n[4];
  be32(n, (uint32_t)o->n_meta);
  if (hubu_buf_append(b, n, 4)) return -1;
  for (size_t i = 0; i < o->n_meta; i++)
    if (put_str(b, o->meta_keys[i]) || put_str(b, o->meta_values[i])) return -1;
  if (put_bytes(b, o->body, o->body_len)) return -1;
  record_close(b, start);
  return 0;
}

/* ---- queued sends ---- */

typedef struct {
  const char *p;
  size_t n;
} slice;

static hubu_outgoing *outgoing_build(uint64_t client_id, uint64_t app_id, slice session, slice content_type,
                                     const uint8_t *body, size_t len, size_t n_meta, const slice *keys,
                                     const slice *values) {
  size_t size = sizeof(hubu_outgoing) + 2 * n_meta * sizeof(char *) + session.n + 1 + content_type.n + 1 + len;
  for (size_t i = 0; i < n_meta; i++) size += keys[i].n + values[i].n + 2;
  hubu_outgoing *o = calloc(1, size);
  if (!o) return NULL;
  char **k = (char **)(o + 1), **v = k + n_meta;
  char *w = (char *)(v + n_meta);
#define PLACE(dst, s)        \
  do {                       \
    memcpy(w, (s).p, (s).n); \
    w[(s).n] = '\0';         \
    (dst) = w;               \
    w += (s).n + 1;          \
  } while (0)
  PLACE(o->session_id, session);
  PLACE(o->content_type, content_type);
  for (size_t i = 0; i < n_meta; i++) {
    PLACE(k[i], keys[i]);
    PLACE(v[i], values[i]);
  }
#undef PLACE
  if (len) memcpy(w, body, len);
  o->body = (const uint8_t *)w;
  o->body_len = len;
  o->meta_keys = (const char *const *)k;
  o->meta_values = (const char *const *)v;
  o->n_meta = n_meta;
  o->client_id = client_id;
  o->app_id = app_id;
  return o;
}

hubu_outgoing *hubu_outgoing_new(uint64_t client_id, uint64_t app_id, const char *session_id, const char *content_type,
                                 const uint8_t *body, size_t len, size_t n_meta, const char *const *meta_keys,
                                 const char *const *meta_values) {
  slice stack_keys[16] = {{0}}, stack_values[16] = {{0}};
  slice *keys = stack_keys, *values = stack_values;
  if (n_meta > 16) {
    keys = malloc(n_meta * sizeof *keys);
    values = malloc(n_meta * sizeof *values);
  }
  hubu_outgoing *o = NULL;
  if (keys && values) {
    for (size_t i = 0; i < n_meta; i++) {
      keys[i] = (slice){meta_keys[i], strlen(meta_keys[i])};
      values[i] = (slice){meta_values[i], strlen(meta_values[i])};
    }
    o = outgoing_build(client_id, app_id, (slice){session_id, strlen(session_id)},
                       (slice){content_type, strlen(content_type)}, body, len, n_meta, keys, values);
  }
  if (keys != stack_keys) free(keys);
  if (values != stack_values) free(values);
  return o;
}

/* ---- reading ---- */

typedef struct {
  const uint8_t *p;
  size_t n, off;
  int bad;
} reader;

static const uint8_t *take(reader *r, size_t n) {
  if (r->bad || r->n - r->off < n) {
    r->bad = 1;
    return NULL;
  }
  const uint8_t *p = r->p + r->off;
  r->off += n;
  return p;
}

static uint64_t take_u64(reader *r) {
  const uint8_t *p = take(r, 8);
  return p ? rd64(p) : 0;
}

static uint32_t take_u32(reader *r) {
  const uint8_t *p = take(r, 4);
  return p ? rd32(p) : 0;
}

static slice take_str(reader *r) {
  uint32_t n = take_u32(r);
  const uint8_t *p = take(r, n);
  return p ? (slice){(const char *)p, n} : (slice){"", 0};
}

/* The list being loaded: ascending client_id, appended at the end in the
 * common case (the log is written in id order). */
typedef struct {
  hubu_outgoing *head, *tail;
  size_t count;
  uint64_t last, verified_upto;
} load_state;

static void load_insert(load_state *ls, hubu_outgoing *o) {
  hubu_outgoing *after = ls->tail;
  while (after && after->client_id > o->client_id) after = after->prev;
  if (after && after->client_id == o->client_id) { /* written twice: keep the first */
    free(o);
    return;
  }
  o->prev = after;
  o->next = after ? after->next : ls->head;
  if (o->next)
    o->next->prev = o;
  else
    ls->tail = o;
  if (after)
    after->next = o;
  else
    ls->head = o;
  ls->count++;
}

static void load_remove(load_state *ls, uint64_t client_id) {
  hubu_outgoing *o = ls->head;
  while (o && o->client_id != client_id) o = o->next;
  if (!o) return;
  if (o->prev)
    o->prev->next = o->next;
  else
    ls->head = o->next;
  if (o->next)
    o->next->prev = o->prev;
  else
    ls->tail = o->prev;
  ls->count--;
  free(o);
}

/* Applies one record body. -1 when it is malformed (ends the log), -2 out of memory. */
static int load_record(load_state *ls, const uint8_t *body, size_t len) {
  reader r = {body, len, 0, 0};
  const uint8_t *type = take(&r, 1);
  if (!type) return -1;
  switch (*type) {
    case 'Q': {
      uint64_t client_id = take_u64(&r), app_id = take_u64(&r), time_ms = take_u64(&r);
      const uint8_t *flags = take(&r, 1);
      slice session = take_str(&r), content_type = take_str(&r);
      uint32_t n_meta = take_u32(&r);
      if (r.bad || n_meta > OUTBOX_META_MAX || client_id == 0) return -1;
      slice *kv = malloc((n_meta ? n_meta : 1) * 2 * sizeof *kv);
      if (!kv) return -2;
      for (uint32_t i = 0; i < n_meta; i++) {
        kv[i] = take_str(&r);
        kv[n_meta + i] = take_str(&r);
      }
      slice b = take_str(&r);
      hubu_outgoing *o = NULL;
      if (!r.bad)
        o = outgoing_build(client_id, app_id ? app_id : client_id, session, content_type, (const uint8_t *)b.p, b.n,
                           n_meta, kv, kv + n_meta);
      free(kv);
      if (r.bad) return -1;
      if (!o) return -2;
      o->client_time_ms = time_ms;
      o->verified = (*flags & 1) != 0;
      o->sent = 1; /* an earlier process may have sent it */
      if (client_id > ls->last) ls->last = client_id;
      load_insert(ls, o);
      return 0;
    }
    case 'D': {
      uint64_t id = take_u64(&r);
      if (r.bad) return -1;
      load_remove(ls, id);
      return 0;
    }
    case 'V': {
      uint64_t v = take_u64(&r);
      if (r.bad) return -1;
      if (v > ls->verified_upto) ls->verified_upto = v;
      return 0;
    }
    case 'L': {
      uint64_t v = take_u64(&r);
      if (r.bad) return -1;
      if (v > ls->last) ls->last = v;
      return 0;
    }
    default: return 0; /* a later version's record: skipped */
  }
}

static void load_free(load_state *ls) {
  while (ls->head) {
    hubu_outgoing *o = ls->head;
    ls->head = o->next;
    free(o);
  }
  ls->tail = NULL;
  ls->count = 0;
}

/* Reads the whole file into *out (malloc'd; NULL and 0 when missing or empty). */
static int read_file(const char *path, uint8_t **out, size_t *out_len, char *err, size_t err_size) {
  *out = NULL;
  *out_len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    snprintf(err, err_size, "outbox %s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > OUTBOX_FILE_MAX) {
    snprintf(err, err_size, "outbox %s: %s", path, errno ? strerror(errno) : "too large");
    close(fd);
    return -1;
  }
  size_t size = (size_t)st.st_size, got = 0;
  uint8_t *data = size ? malloc(size) : NULL;
  if (size && !data) {
    snprintf(err, err_size, "outbox %s: out of memory", path);
    close(fd);
    return -1;
  }
  while (got < size) {
    ssize_t n = read(fd, data + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* shrank meanwhile: use what was read */
    got += (size_t)n;
  }
  close(fd);
  *out = data;
  *out_len = got;
  return 0;
}

/* ---- writing ---- */

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Appends b's bytes, optionally durably. A failed append is cut off again so
 * the log stays a valid prefix. */
static int append(hubu_outbox *ob, const hubu_buf *b, int sync) {
  if (hubu_buf_size(b) == 0) return 0;
  if (write_all(ob->fd, hubu_buf_head(b), hubu_buf_size(b)) != 0 || (sync && fdatasync(ob->fd) != 0)) {
    if (ftruncate(ob->fd, (off_t)ob->size) != 0) { /* nothing more to do: the next load stops at the tear */
    }
    return -1;
  }
  ob->size += hubu_buf_size(b);
  return 0;
}

static void fsync_parent_dir(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash == path)
    snprintf(dir, sizeof dir, "/");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  if (fsync(fd) != 0) { /* best effort: the rename itself is done */
  }
  close(fd);
}

/* Writes a fresh log at path (through path.tmp and rename) and opens it for appending. */
static int rewrite(hubu_outbox *ob, const hubu_outgoing *head, uint64_t last_client_id) {
  hubu_buf b = {0};
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", ob->path);
  int ok = hubu_buf_append(&b, OUTBOX_MAGIC, OUTBOX_MAGIC_LEN) == 0 && record_id(&b, 'L', last_client_id) == 0;
  for (const hubu_outgoing *o = head; ok && o; o = o->next) ok = record_queued(&b, o) == 0;
  int fd = -1;
  if (ok) ok = (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0;
  if (ok) ok = write_all(fd, hubu_buf_head(&b), hubu_buf_size(&b)) == 0 && fdatasync(fd) == 0;
  if (fd >= 0 && close(fd) != 0) ok = 0;
  if (ok) ok = rename(tmp, ob->path) == 0;
  if (!ok) {
    unlink(tmp);
    hubu_buf_free(&b);
    return -1;
  }
  fsync_parent_dir(ob->path);
  int nfd = open(ob->path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (nfd < 0) {
    hubu_buf_free(&b);
    return -1;
  }
  if (ob->fd >= 0) close(ob->fd);
  ob->fd = nfd;
  ob->size = hubu_buf_size(&b);
  ob->busy_at = 2 * ob->size > OUTBOX_COMPACT_BUSY ? 2 * ob->size : OUTBOX_COMPACT_BUSY;
  hubu_buf_free(&ob->done); /* superseded: the rewrite holds only what is pending */
  hubu_buf_free(&b);
  return 0;
}

/* ---- API ---- */

hubu_outbox *hubu_outbox_open(const char *path, hubu_outbox_loaded *loaded, char *err, size_t err_size) {
  memset(loaded, 0, sizeof *loaded);
  hubu_outbox *ob = calloc(1, sizeof *ob);
  load_state ls = {0};
  uint8_t *data = NULL;
  size_t len = 0;
  if (!ob) goto oom;
  ob->fd = ob->lock_fd = -1;
  size_t pl = strlen(path);
  if (pl == 0 || pl > 4000) {
    snprintf(err, err_size, "outbox path is empty or too long");
    goto fail;
  }
  ob->path = strdup(path);
  ob->lock_path = malloc(pl + 6);
  if (!ob->path || !ob->lock_path) goto oom;
  snprintf(ob->lock_path, pl + 6, "%s.lock", path);

  ob->lock_fd = open(ob->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (ob->lock_fd < 0) {
    snprintf(err, err_size, "outbox %s: %s", ob->lock_path, strerror(errno));
    goto fail;
  }
  if (flock(ob->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(err, err_size, "outbox %s is in use by another process", path);
    goto fail;
  }
  if (read_file(path, &data, &len, err, err_size) != 0) goto fail;
  if (len > 0 && (len < OUTBOX_MAGIC_LEN || memcmp(data, OUTBOX_MAGIC, OUTBOX_MAGIC_LEN) != 0)) {
    snprintf(err, err_size, "%s is not a hubu outbox file", path);
    goto fail;
  }
  size_t off = len ? OUTBOX_MAGIC_LEN : 0;
  while (len - off >= 8) { /* stops at the end, or at a torn or corrupt record */
    uint32_t rl = rd32(data + off), check = rd32(data + off + 4);
    if (rl == 0 || rl > OUTBOX_RECORD_MAX || rl > len - off - 8 || fnv1a(data + off + 8, rl) != check) break;
    int r = load_record(&ls, data + off + 8, rl);
    if (r == -2) goto oom;
    if (r < 0) break;
    off += 8 + (size_t)rl;
  }
  free(data);
  data = NULL;
  for (hubu_outgoing *o = ls.head; o; o = o->next)
    if (o->client_id <= ls.verified_upto) o->verified = 1;
  if (rewrite(ob, ls.head, ls.last) != 0) {
    snprintf(err, err_size, "outbox %s: cannot rewrite: %s", path, strerror(errno));
    goto fail;
  }
  loaded->head = ls.head;
  loaded->count = ls.count;
  loaded->last_client_id = ls.last;
  return ob;
oom:
  snprintf(err, err_size, "outbox %s: out of memory", path);
fail:
  free(data);
  load_free(&ls);
  if (ob) {
    if (ob->fd >= 0) close(ob->fd);
    if (ob->lock_fd >= 0) close(ob->lock_fd);
    free(ob->path);
    free(ob->lock_path);
    free(ob);
  }
  return NULL;
}

int hubu_outbox_queued(hubu_outbox *ob, const hubu_outgoing *o) {
  hubu_buf b = {0};
  int r = hubu_outbox_flush(ob) == 0 && record_queued(&b, o) == 0 ? append(ob, &b, 1) : -1;
  hubu_buf_free(&b);
  return r;
}

int hubu_outbox_renumbered(hubu_outbox *ob, const hubu_outgoing *o, uint64_t old_id) {
  hubu_buf b = {0};
  int r = hubu_outbox_flush(ob) == 0 && record_queued(&b, o) == 0 && record_id(&b, 'D', old_id) == 0 ? append(ob, &b, 1)
                                                                                                     : -1;
  hubu_buf_free(&b);
  return r;
}

int hubu_outbox_verified(hubu_outbox *ob, uint64_t upto) {
  hubu_buf b = {0};
  int r = hubu_outbox_flush(ob) == 0 && record_id(&b, 'V', upto) == 0 ? append(ob, &b, 1) : -1;
  hubu_buf_free(&b);
  return r;
}

void hubu_outbox_done(hubu_outbox *ob, uint64_t client_id) {
  if (record_id(&ob->done, 'D', client_id) != 0) return; /* out of memory: only a resend later */
  if (hubu_buf_size(&ob->done) >= OUTBOX_DONE_BATCH) hubu_outbox_flush(ob);
}

int hubu_outbox_flush(hubu_outbox *ob) {
  int r = append(ob, &ob->done, 0);
  hubu_buf_free(&ob->done); /* written, or dropped with the failed append: a resend covers it */
  return r;
}

int hubu_outbox_wants_compaction(const hubu_outbox *ob, int all_done) {
  uint64_t size = ob->size + hubu_buf_size(&ob->done);
  return all_done ? size > OUTBOX_COMPACT_IDLE : size > ob->busy_at;
}

int hubu_outbox_compact(hubu_outbox *ob, const hubu_outgoing *head, uint64_t last_client_id) {
  return rewrite(ob, head, last_client_id);
}

void hubu_outbox_close(hubu_outbox *ob) {
  if (!ob) return;
  hubu_outbox_flush(ob);
  if (ob->fd >= 0) close(ob->fd);
  if (ob->lock_fd >= 0) close(ob->lock_fd); /* releases the flock */
  free(ob->path);
  free(ob->lock_path);
  free(ob);
}

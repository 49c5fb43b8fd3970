/* sqlite_vfs.c — the default VFS with the WAL's writes gathered per commit
 * (sqlite_vfs.h says why and what it guarantees).
 *
 * Every file opened through it is a shim around the default VFS's file, which
 * lives in the same allocation right after it. Only a WAL buffers: a write
 * that continues the buffered bytes, or falls inside them (SQLite rewrites a
 * frame of the transaction it is writing when a page changes again), goes to
 * memory; any other write, and every read, size, truncate, sync, lock, file
 * control or close of the WAL, first writes the buffer out. The main database
 * file knows its WAL and writes it out before every shared-memory barrier and
 * lock as well, so no frame is published in the WAL index before it is in the
 * file, whatever the synchronous setting. A buffer's write error is returned
 * by the call that caused it; SQLite then fails and rolls back the
 * transaction whose frames they were.
 *
 * A connection's files are used by one thread at a time, as SQLite uses them;
 * only the statistics are shared, and they are atomic. */
#include "sqlite_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct shim_file shim_file;
struct shim_file {
  sqlite3_file base;  /* pMethods = &shim_methods */
  sqlite3_file *real; /* the default VFS's file, right after this struct */
  int nosync;         /* xSync only flushes */
  int is_wal;
  shim_file *wal;     /* a main database: its open WAL, if any */
  shim_file *main;    /* a WAL: its main database, if opened through this VFS */
  unsigned char *buf; /* a WAL: the bytes not yet written, for [off, off + len) */
  size_t len;
  sqlite3_int64 off;
  int deferred_rc; /* a WAL: a failed write-out that had no caller to return it to */
};

static sqlite3_vfs shim_vfs, shim_vfs_nosync;
static sqlite3_vfs *real_vfs;
static _Atomic uint64_t stat_writes, stat_flushes, stat_syncs;

#define REAL(f) (((shim_file *)(f))->real)
#define RM(f) (REAL(f)->pMethods)

static int flush(shim_file *f) {
  if (!f->len) return SQLITE_OK;
  int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->off);
  f->len = 0; /* written or failed: a failed commit is rolled back, its frames are not retried */
  atomic_fetch_add_explicit(&stat_flushes, 1, memory_order_relaxed);
  return rc;
}

/* The WAL of a main database file, written out; SQLITE_OK when there is none. */
static int flush_wal_of(shim_file *f) { return f->wal ? flush(f->wal) : SQLITE_OK; }

static int shim_close(sqlite3_file *file) {
  shim_file *f = (shim_file *)file;
  int rc = flush(f);
  int rc2 = RM(f)->xClose(f->real);
  if (f->is_wal && f->main) f->main->wal = NULL;
  if (!f->is_wal && f->wal) f->wal->main = NULL;
  free(f->buf);
  f->buf = NULL;
  return rc != SQLITE_OK ? rc : rc2;
}

static int shim_read(sqlite3_file *file, void *out, int n, sqlite3_int64 off) {
  shim_file *f = (shim_file *)file;
  int rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  return RM(f)->xRead(f->real, out, n, off);
}

/* The error a shared-memory barrier could not return, once. */
static int take_deferred(shim_file *f) {
  int rc = f->deferred_rc;
  f->deferred_rc = SQLITE_OK;
  return rc;
}

static int shim_write(sqlite3_file *file, const void *data, int n, sqlite3_int64 off) {
  shim_file *f = (shim_file *)file;
  if (!f->is_wal) return RM(f)->xWrite(f->real, data, n, off);
  if (f->deferred_rc) return take_deferred(f);
  atomic_fetch_add_explicit(&stat_writes, 1, memory_order_relaxed);
  size_t un = (size_t)n;
  if (f->len && off >= f->off && (size_t)(off - f->off) + un <= f->len) { /* a rewrite inside the buffer */
    memcpy(f->buf + (off - f->off), data, un);
    return SQLITE_OK;
  }
  if (f->len && off == f->off + (sqlite3_int64)f->len && f->len + un <= HUBU_SQLITE_VFS_BUFFER) { /* an append */
    memcpy(f->buf + f->len, data, un);
    f->len += un;
    return SQLITE_OK;
  }
  int rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  if (!f->buf && un <= HUBU_SQLITE_VFS_BUFFER / 2) f->buf = malloc(HUBU_SQLITE_VFS_BUFFER);
  if (!f->buf || un > HUBU_SQLITE_VFS_BUFFER / 2) { /* no memory, or too big to be worth a copy */
    atomic_fetch_add_explicit(&stat_flushes, 1, memory_order_relaxed);
    return RM(f)->xWrite(f->real, data, n, off);
  }
  memcpy(f->buf, data, un);
  f->off = off;
  f->len = un;
  return SQLITE_OK;
}

static int shim_truncate(sqlite3_file *file, sqlite3_int64 size) {
  shim_file *f = (shim_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : RM(f)->xTruncate(f->real, size);
}

static int shim_sync(sqlite3_file *file, int flags) {
  shim_file *f = (shim_file *)file;
  if (f->is_wal) atomic_fetch_add_explicit(&stat_syncs, 1, memory_order_relaxed);
  if (f->deferred_rc) return take_deferred(f);
  int rc = flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->nosync ? SQLITE_OK : RM(f)->xSync(f->real, flags);
}

static int shim_file_size(sqlite3_file *file, sqlite3_int64 *size) {
  shim_file *f = (shim_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : RM(f)->xFileSize(f->real, size);
}

static int shim_lock(sqlite3_file *file, int level) {
  shim_file *f = (shim_file *)file;
  int rc = flush_wal_of(f);
  return rc != SQLITE_OK ? rc : RM(f)->xLock(f->real, level);
}

static int shim_unlock(sqlite3_file *file, int level) {
  shim_file *f = (shim_file *)file;
  int rc = flush_wal_of(f);
  return rc != SQLITE_OK ? rc : RM(f)->xUnlock(f->real, level);
}

static int shim_check_reserved(sqlite3_file *file, int *out) { return RM(file)->xCheckReservedLock(REAL(file), out); }

static int shim_file_control(sqlite3_file *file, int op, void *arg) {
  shim_file *f = (shim_file *)file;
  int rc = f->is_wal ? flush(f) : SQLITE_OK;
  if (rc != SQLITE_OK) return rc;
  return RM(f)->xFileControl(f->real, op, arg);
}

static int shim_sector_size(sqlite3_file *file) { return RM(file)->xSectorSize(REAL(file)); }

static int shim_device_characteristics(sqlite3_file *file) { return RM(file)->xDeviceCharacteristics(REAL(file)); }

static int shim_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out) {
  shim_file *f = (shim_file *)file;
  int rc = flush_wal_of(f);
  return rc != SQLITE_OK ? rc : RM(f)->xShmMap(f->real, page, size, extend, out);
}

static int shim_shm_lock(sqlite3_file *file, int offset, int n, int flags) {
  shim_file *f = (shim_file *)file;
  int rc = flush_wal_of(f);
  return rc != SQLITE_OK ? rc : RM(f)->xShmLock(f->real, offset, n, flags);
}

/* SQLite calls this between writing the WAL index header's two copies: the
 * frames are written out before a reader can see the new header. SQLite syncs
 * the WAL before that at every commit in synchronous=FULL, so the buffer is
 * empty here; this covers a caller that does not. It cannot return an error,
 * so the WAL's next write or sync returns it. */
static void shim_shm_barrier(sqlite3_file *file) {
  shim_file *f = (shim_file *)file;
  int rc = flush_wal_of(f);
  if (rc != SQLITE_OK) f->wal->deferred_rc = rc;
  RM(f)->xShmBarrier(f->real);
}

static int shim_shm_unmap(sqlite3_file *file, int delete_flag) { return RM(file)->xShmUnmap(REAL(file), delete_flag); }

static int shim_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **out) {
  shim_file *f = (shim_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : RM(f)->xFetch(f->real, off, n, out);
}

static int shim_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p) {
  return RM(file)->xUnfetch(REAL(file), off, p);
}

static const sqlite3_io_methods shim_methods = {
    3,
    shim_close,
    shim_read,
    shim_write,
    shim_truncate,
    shim_sync,
    shim_file_size,
    shim_lock,
    shim_unlock,
    shim_check_reserved,
    shim_file_control,
    shim_sector_size,
    shim_device_characteristics,
    shim_shm_map,
    shim_shm_lock,
    shim_shm_barrier,
    shim_shm_unmap,
    shim_fetch,
    shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags) {
  shim_file *f = (shim_file *)file;
  memset(f, 0, sizeof *f);
  f->real = (sqlite3_file *)(f + 1);
  f->nosync = vfs == &shim_vfs_nosync;
  f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
  int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
  if (!f->real->pMethods) { /* nothing to close: SQLite must not call xClose */
    f->base.pMethods = NULL;
    return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
  }
  if (f->real->pMethods->iVersion < 3) { /* the shim forwards version 3's methods */
    f->real->pMethods->xClose(f->real);
    f->base.pMethods = NULL;
    return SQLITE_CANTOPEN;
  }
  f->base.pMethods = &shim_methods;
  if (f->is_wal && name) {
    sqlite3_file *db = sqlite3_database_file_object(name);
    if (db && db->pMethods == &shim_methods) {
      f->main = (shim_file *)db;
      f->main->wal = f;
    }
  }
  return rc;
}

static int shim_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
  (void)vfs;
  return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int shim_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int shim_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
  (void)vfs;
  return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *shim_dl_open(sqlite3_vfs *vfs, const char *name) {
  (void)vfs;
  return real_vfs->xDlOpen(real_vfs, name);
}

static void shim_dl_error(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  real_vfs->xDlError(real_vfs, n, out);
}

static void (*shim_dl_sym(sqlite3_vfs *vfs, void *handle, const char *sym))(void) {
  (void)vfs;
  return real_vfs->xDlSym(real_vfs, handle, sym);
}

static void shim_dl_close(sqlite3_vfs *vfs, void *handle) {
  (void)vfs;
  real_vfs->xDlClose(real_vfs, handle);
}

static int shim_randomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return real_vfs->xRandomness(real_vfs, n, out);
}

static int shim_sleep(sqlite3_vfs *vfs, int us) {
  (void)vfs;
  return real_vfs->xSleep(real_vfs, us);
}

static int shim_current_time(sqlite3_vfs *vfs, double *out) {
  (void)vfs;
  return real_vfs->xCurrentTime(real_vfs, out);
}

static int shim_last_error(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, out) : 0;
}

static int shim_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  (void)vfs;
  if (real_vfs->iVersion >= 2 && real_vfs->xCurrentTimeInt64) return real_vfs->xCurrentTimeInt64(real_vfs, out);
  double days;
  int rc = real_vfs->xCurrentTime(real_vfs, &days);
  *out = (sqlite3_int64)(days * 86400000.0);
  return rc;
}

static int register_rc = SQLITE_ERROR;

static void register_once(void) {
  /* Before SQLite starts: no allocation statistics, whose global mutex every
   * sqlite3_malloc and free would otherwise take (MISUSE if SQLite was already
   * started by its host, which then keeps its own choice). */
  (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  if (sqlite3_initialize() != SQLITE_OK || !(real_vfs = sqlite3_vfs_find(NULL))) return;
  sqlite3_vfs v = {
      .iVersion = 2,
      .szOsFile = (int)sizeof(shim_file) + real_vfs->szOsFile,
      .mxPathname = real_vfs->mxPathname,
      .zName = HUBU_SQLITE_VFS,
      .xOpen = shim_open,
      .xDelete = shim_delete,
      .xAccess = shim_access,
      .xFullPathname = shim_full_pathname,
      .xDlOpen = shim_dl_open,
      .xDlError = shim_dl_error,
      .xDlSym = shim_dl_sym,
      .xDlClose = shim_dl_close,
      .xRandomness = shim_randomness,
      .xSleep = shim_sleep,
      .xCurrentTime = shim_current_time,
      .xGetLastError = shim_last_error,
      .xCurrentTimeInt64 = shim_current_time_int64,
  };
  shim_vfs = v;
  v.zName = HUBU_SQLITE_VFS_NOSYNC;
  shim_vfs_nosync = v;
  register_rc = sqlite3_vfs_register(&shim_vfs, 0);
  if (register_rc == SQLITE_OK) register_rc = sqlite3_vfs_register(&shim_vfs_nosync, 0);
}

int hubu_sqlite_vfs_register(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, register_once);
  return register_rc;
}

void hubu_sqlite_vfs_get_stats(hubu_sqlite_vfs_stats *out) {
  out->writes = atomic_load_explicit(&stat_writes, memory_order_relaxed);
  out->flushes = atomic_load_explicit(&stat_flushes, memory_order_relaxed);
  out->syncs = atomic_load_explicit(&stat_syncs, memory_order_relaxed);
}

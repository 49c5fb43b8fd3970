/* sqlite_vfs.h — the SQLite backend's VFS: the system's default VFS with the
 * WAL's writes gathered in memory and written with one system call when
 * SQLite syncs the WAL (at every commit with synchronous=FULL).
 *
 * SQLite writes each WAL frame as two pwrite()s, its 24-byte header and its
 * page, so a commit of n pages costs 2n system calls; through this VFS it
 * costs one (or one per HUBU_SQLITE_VFS_BUFFER bytes). Nothing changes for
 * readers or for a crash: the frames reach the file before SQLite syncs it
 * and before it publishes them in the WAL index, which is when SQLite itself
 * relies on them being there; frames still in memory at a crash are those of
 * a commit that had not finished, which recovery ignores as it always does.
 * Other processes (hubuctl, sqlite3) keep using the default VFS.
 *
 * Two names: HUBU_SQLITE_VFS syncs as the default VFS does;
 * HUBU_SQLITE_VFS_NOSYNC makes every xSync a flush only (used with
 * synchronous=FULL for --fsync off, so that commits still reach the flush
 * point but never wait for the disk). */
#ifndef HUBU_SQLITE_VFS_H
#define HUBU_SQLITE_VFS_H

#include <stdint.h>

#define HUBU_SQLITE_VFS "hubu"
#define HUBU_SQLITE_VFS_NOSYNC "hubu-nosync"
/* Per open WAL, allocated at its first write: 31 pages, under the 128 KiB
 * that the unix VFS's xWrite writes with one pwrite() (it masks larger sizes). */
#define HUBU_SQLITE_VFS_BUFFER (124 * 1024)

/* Registers both names (not as the default VFS). Thread-safe and
 * idempotent. SQLITE_OK or SQLite's error code. */
int hubu_sqlite_vfs_register(void);

/* What the WAL files opened through these VFSes did, process-wide. */
typedef struct {
  uint64_t writes;  /* xWrite calls SQLite made on a WAL */
  uint64_t flushes; /* system-call writes they became */
  uint64_t syncs;   /* xSync calls on a WAL (flushes, and fsyncs unless NOSYNC) */
} hubu_sqlite_vfs_stats;
void hubu_sqlite_vfs_get_stats(hubu_sqlite_vfs_stats *out);

#endif

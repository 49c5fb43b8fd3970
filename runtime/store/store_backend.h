/* store_backend.h — what every store backend shares, for the backends only
 * (store_sqlite.c, store_mariadb.c): op names for logs, the one place a
 * failed op is logged, the order a batch is sorted in to write sessions and
 * devices once each, and freeing a session's loaded members. */
#ifndef HUBU_STORE_BACKEND_H
#define HUBU_STORE_BACKEND_H

#include <stddef.h>

#include "store.h"

/* One APPEND of a batch, with its place in submission order (qsort is not stable). */
typedef struct {
  hubu_store_op *op;
  size_t index;
} hubu_store_batch_entry;

/* qsort comparators of hubu_store_batch_entry: by session id, by (sender,
 * device), by submission order; ties keep submission order. */
int hubu_store_entry_by_session(const void *x, const void *y);
int hubu_store_entry_by_device(const void *x, const void *y);
int hubu_store_entry_by_index(const void *x, const void *y);

/* "append", "pull", ... for log lines. */
const char *hubu_store_op_name(hubu_store_op_kind kind);

/* Marks op failed with status (RETRY or ERROR) and logs it: the one place a
 * store error is logged (the caller only decides what to answer), with the
 * op, the step, the session and connection it was for, and what failed. */
void hubu_store_op_fail(hubu_store_op *op, hubu_store_status status, const char *step, const char *what);

/* APPEND op is not stored: its seq is taken by another message, or (fenced)
 * at or below its session's fence. Sets SEQ_TAKEN and logs it once. */
void hubu_store_seq_taken(hubu_store_op *op, uint64_t fence, int fenced);

/* APPEND op is not stored: its device's epoch in the store (epoch) is not
 * op->append.device_epoch. Sets DEVICE_MOVED and logs it once. */
void hubu_store_device_moved(hubu_store_op *op, uint64_t epoch);

/* A walk of a PULL page read with settle_ms (store.h, PULL): the one place
 * the committed watermark's rules are written, for every backend. */
typedef struct {
  size_t keep;       /* rows of the page below the first hole not proven */
  int cut;           /* the page ends at a hole not proven (rows from keep on are not answered) */
  uint64_t raise_to; /* may_raise: the fence that proves the holes proven by their age (0: none) */
  uint64_t fenced;   /* missing seqs above fenced_above and at or below fence, in the holes walked */
} hubu_store_pull_walk;

/* Walks pull->msgs from pull->after_seq. A hole is proven when it lies at or
 * below fence, or (may_raise) when the row above it is older than
 * pull->settle_ms before now_ms; the first hole not proven ends the walk. */
void hubu_store_pull_walk_page(const hubu_store_pull_op *pull, uint64_t fence, uint64_t fenced_above, uint64_t now_ms,
                               int may_raise, hubu_store_pull_walk *walk);

#define HUBU_STORE_PAGE_DEFAULT 100 /* rows of a PULL or LOG_READ page when its limit is 0 */
#define HUBU_STORE_PAGE_MAX 1000    /* ... and at most */

/* A PULL's outputs emptied and its page array made for its limit (0:
 * HUBU_STORE_PAGE_DEFAULT; at most HUBU_STORE_PAGE_MAX), which *limit gets. 0, or -1 when out of memory (the op is
 * then failed, its reason set). */
int hubu_store_pull_begin(hubu_store_op *op, uint32_t *limit);

/* A watermark PULL answered from its walk: the page cut where the walk
 * ended, fenced counted, max_seq the watermark (the last row kept; with
 * none, the lower of after_seq and top, the session's highest stored seq),
 * status OK. */
void hubu_store_pull_settled(hubu_store_op *op, const hubu_store_pull_walk *walk, uint64_t top);

/* Drops the page's rows from keep on (answered by a later PULL). */
void hubu_store_pull_keep(hubu_store_pull_op *pull, size_t keep);

/* Frees a SESSION_LOAD's members and empties the list. */
void hubu_store_members_free(hubu_store_session_load_op *load);

#endif

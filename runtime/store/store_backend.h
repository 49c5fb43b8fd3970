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

/* Frees a SESSION_LOAD's members and empties the list. */
void hubu_store_members_free(hubu_store_session_load_op *load);

#endif

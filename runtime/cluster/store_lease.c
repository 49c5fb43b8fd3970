/* store_lease.c — hubu_seq_lease on the store's SEQ_LEASE (store_lease.h). */
#include "store_lease.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"

typedef struct {
  hubu_store_lease *owner;
  hubu_seq_lease_done done;
  void *req;
} lease_call;

static void on_leased(hubu_store_op *op) {
  lease_call *call = op->ud;
  hubu_store_lease *l = call->owner;
  int ok = op->status == HUBU_STORE_OK;
  l->in_flight--;
  if (ok)
    l->leased++;
  else
    l->failed++; /* the store logged why */
  call->done(call->req, ok, ok ? op->seq_lease.lo : 0, ok ? op->seq_lease.hi : 0);
  free(call);
  hubu_store_op_free(op);
}

static int store_lease(hubu_seq_lease *base, const char *session_id, uint64_t floor, uint32_t count,
                       hubu_seq_lease_done done, void *req) {
  hubu_store_lease *l = (hubu_store_lease *)base;
  size_t n = strlen(session_id);
  if (!l->store || n >= sizeof(((hubu_store_seq_lease_op *)0)->session_id)) return -1;
  lease_call *call = malloc(sizeof *call);
  hubu_store_op *op = call ? hubu_store_op_new(HUBU_STORE_SEQ_LEASE) : NULL;
  if (!op) {
    free(call);
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=seq_lease");
    return -1;
  }
  *call = (lease_call){l, done, req};
  memcpy(op->seq_lease.session_id, session_id, n + 1);
  op->seq_lease.floor = floor;
  op->seq_lease.count = count;
  op->done = on_leased;
  op->ud = call;
  l->in_flight++;
  hubu_store_submit(l->store, op); /* completes on the loop, never inside this call */
  return 0;
}

static const hubu_seq_lease_ops store_lease_ops = {.lease = store_lease};

void hubu_store_lease_init(hubu_store_lease *l, hubu_store *store) {
  memset(l, 0, sizeof *l);
  l->base.ops = &store_lease_ops;
  l->store = store;
}

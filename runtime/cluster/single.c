/* single.c — one node, one writer per session (cluster.h).
 * Invariant: appends of a session complete in the order their seqs were
 * assigned (the store thread runs them in submission order), so once seq is
 * settled every lower seq is too. */
#include "cluster.h"
#include "session.h"

static hubu_seq_result single_next(hubu_seq_allocator *a, hubu_session *sess, uint64_t *seq) {
  (void)a;
  *seq = sess->next_seq + 1;
  return HUBU_SEQ_NOW;
}

static uint64_t single_settled(hubu_seq_allocator *a, hubu_session *sess, uint64_t seq) {
  (void)a;
  return seq > sess->committed_seq ? seq : sess->committed_seq;
}

static const hubu_seq_allocator_ops single_ops = {.next = single_next, .settled = single_settled};
static hubu_seq_allocator single = {.ops = &single_ops}; /* immutable after init: no state to share */

hubu_seq_allocator *hubu_cluster_single_seq(void) { return &single; }

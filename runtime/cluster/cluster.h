/* cluster.h — the parts of hubud that change when several nodes share one
 * store: the seq allocator (core/seq.h) today; the presence directory and the
 * node bus over Redis come with cluster mode. This is the single-node
 * implementation: one writer per session, so a session's seqs are counted
 * in memory and settle in the order they were assigned. */
#ifndef HUBU_CLUSTER_H
#define HUBU_CLUSTER_H

#include "seq.h"

/* The single node's allocator: the session's own counter, answered at once;
 * appends complete in submission order, so the watermark is the last settled
 * seq. Stateless: one shared instance serves every core. */
hubu_seq_allocator *hubu_cluster_single_seq(void);

#endif

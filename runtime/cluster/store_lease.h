/* store_lease.h — cluster mode's seq leases (redis_seq.h's hubu_seq_lease)
 * kept by the store: each lease is one SEQ_LEASE op (store.h), a durable
 * transaction on the shared database, so a block is above every seq any node
 * leased or stored for the session, whatever happened to Redis. */
#ifndef HUBU_CLUSTER_STORE_LEASE_H
#define HUBU_CLUSTER_STORE_LEASE_H

#include <stdint.h>

#include "redis_seq.h"

typedef struct hubu_store hubu_store;

/* Embeds the lease interface; store is not owned and must outlive every
 * lease in flight (its close completes them, as failed). */
typedef struct {
  hubu_seq_lease base; /* first: a hubu_seq_lease * is a hubu_store_lease * */
  hubu_store *store;
  uint64_t leased; /* leases granted */
  uint64_t failed; /* leases the store refused or could not write */
  uint32_t in_flight;
} hubu_store_lease;

void hubu_store_lease_init(hubu_store_lease *l, hubu_store *store);

#endif

/* seq.h — where a session's next seq comes from. One node counts on its own
 * (cluster/single.c); several nodes ask a shared allocator that may answer
 * later (a Redis round trip) and may jump ahead (PROTOCOL.md section 5,
 * "Jumps"). Core asks for one seq at a time per session and keeps the SENDs
 * waiting behind it in arrival order, so a device's messages still get seqs
 * in client_id order.
 *
 * The committed watermark of a session is the highest seq below which every
 * assigned seq is settled: stored, or abandoned after a failed append. PULL
 * answers up to it, so a hole is never proven while a lower seq could still
 * be stored by another writer. */
#ifndef HUBU_CORE_SEQ_H
#define HUBU_CORE_SEQ_H

#include <stdint.h>

typedef struct hubu_core hubu_core;
typedef struct hubu_session hubu_session;
typedef struct hubu_seq_allocator hubu_seq_allocator;

typedef enum {
  HUBU_SEQ_NOW = 0,     /* *seq holds the answer */
  HUBU_SEQ_LATER,       /* the answer comes through hubu_seq_answer */
  HUBU_SEQ_UNAVAILABLE, /* none can be had now (the SEND is answered UNAVAILABLE) */
} hubu_seq_result;

typedef struct hubu_seq_allocator_ops {
  /* The next seq of sess, above every seq handed out for it (sess->next_seq
   * is the highest this node assigned, loaded from the store). */
  hubu_seq_result (*next)(hubu_seq_allocator *a, hubu_session *sess, uint64_t *seq);
  /* seq of sess is settled (stored, or its append failed). Returns the new
   * committed watermark of sess. */
  uint64_t (*settled)(hubu_seq_allocator *a, hubu_session *sess, uint64_t seq);
  /* The store refused seq of sess as taken (another message holds it, or a
   * PULL proved it a hole: SEQ_TAKEN): whatever the allocator hands out for
   * the session next must come from a fresh block above every stored seq.
   * NULL: nothing to do (one node). */
  void (*taken)(hubu_seq_allocator *a, hubu_session *sess, uint64_t seq);
} hubu_seq_allocator_ops;

/* Owned by main (or the cluster layer); core holds a reference. */
struct hubu_seq_allocator {
  const hubu_seq_allocator_ops *ops;
};

/* The allocator's answer to a HUBU_SEQ_LATER for session_id: ok with seq, or
 * not (the waiting SEND is answered UNAVAILABLE). Core then asks for the next
 * waiting SEND's seq. */
void hubu_seq_answer(hubu_core *core, const char *session_id, int ok, uint64_t seq);

#endif

/* session.h — the conversations this loop has in memory: the highest seq
 * assigned and the committed watermark, members, the SENDs waiting for a
 * seq, and the tail of recent stored messages that serves most PULLs. */
#ifndef HUBU_SESSION_H
#define HUBU_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <uthash.h>

#include "hooks.h"
#include "msg.h"
#include "session_id.h"

typedef struct hubu_core hubu_core;
typedef struct hubu_parked hubu_parked;

#define HUBU_TAIL_CAP 512

/* Owned by core->sessions. Its members, tail and parked requests are its own. */
typedef struct hubu_session {
  UT_hash_handle hh;
  char *id;               /* owned */
  uint8_t kind;           /* hubu_session_kind */
  uint8_t loaded;         /* the store answered SESSION_LOAD */
  uint8_t exists;         /* it may be used: the store has it, or it exists implicitly (direct, custom) */
  uint8_t stored;         /* the store has its row: appends need not say how to create it */
  uint64_t next_seq;      /* highest seq assigned */
  uint64_t committed_seq; /* the committed watermark (seq.h): PULL answers up to it */
  uint64_t min_seq;
  char **members; /* owned, sorted bytewise */
  size_t n_members;
  hubu_msg **tail; /* owned ring of references, ascending seq; NULL until the first push */
  uint32_t tail_head, tail_len;
  uint64_t tail_base;  /* every stored message with seq > tail_base is in the tail */
  hubu_parked *parked; /* requests waiting for the load, FIFO */
  hubu_parked *parked_last;
  struct hubu_seq_waiter *seq_wait; /* SENDs waiting for a seq, in arrival order (seq.h) */
  struct hubu_seq_waiter *seq_wait_last;
  uint8_t seq_asking; /* the allocator owes the head of seq_wait an answer */
  uint32_t busy;      /* appends in the store queue, loads under way */
  uint64_t last_used_ms;
  hubu_core *core_ref;                        /* for store completions */
  struct hubu_session *tail_prev, *tail_next; /* core's tail LRU list, while the tail is not empty */
  size_t tail_bytes;                          /* what its tail holds, counted in core->tail_bytes */
} hubu_session;

/* A SEND waiting for its seq, made only when the allocator answers later
 * (seq.h) or the plugins' verdict comes later (hooks.h, HUBU_HOOK_LATER):
 * the pending send, and the SEND and the plugins' verdict it will be stored
 * from. Owned by its session's queue. A SEND refused by a later verdict is
 * answered at once and stays in the queue as a husk (pending NULL) until it
 * reaches the head, so the queue keeps the arrival order of the others. */
typedef struct hubu_seq_waiter {
  struct hubu_seq_waiter *next;
  struct hubu_pending_send *pending; /* NULL: refused and answered */
  Hubu__V1__Send *send;              /* owned */
  hubu_send_verdict verdict;         /* owned */
  UT_hash_handle hh;                 /* in core->verdict_waits while verdict_pending */
  uint64_t send_ref;                 /* the hook call's send_ref */
  uint8_t verdict_pending;           /* the plugins have not answered yet */
} hubu_seq_waiter;

/* A request waiting for its session to load. */
struct hubu_parked {
  hubu_parked *next;
  void (*resume)(hubu_core *core, hubu_session *sess, hubu_parked *p); /* frees p */
};

/* Splits d:<a>:<b> into its two users (64 bytes + NUL each). 0, or -1 when
 * id is not a direct session id. */
int hubu_session_direct_split(const char *id, char a[65], char b[65]);

/* Room for a direct session's two members (the caller's, so no state is shared). */
typedef struct {
  char a[65], b[65];
  const char *list[2];
} hubu_member_names;

/* The members of sess: for a direct session its two users (written into
 * direct), else the stored members. Returns the count; *out points at them
 * (valid while direct and sess are). */
size_t hubu_session_member_list(const hubu_session *sess, hubu_member_names *direct, const char *const **out);

/* For d:<a>:<b>, whether user is a or b. */
int hubu_session_direct_has(const char *id, const char *user);

/* Finds the session, creating it (and starting its load) when unknown. */
hubu_session *hubu_session_get(hubu_core *core, const char *id);

/* Runs p->resume now if sess is loaded, else when it is. */
void hubu_session_park(hubu_core *core, hubu_session *sess, hubu_parked *p);

int hubu_session_is_member(const hubu_session *sess, const char *user);

/* Whether user may keep a cursor for session id: one of the two users of a
 * direct session, or a member of a group or custom session that is loaded
 * now. Never loads a session (so it caches nothing). */
int hubu_session_may_read(hubu_core *core, const char *id, const char *user);

/* The rule for a session made by its first message: a direct session starts
 * with its two users, a custom one with its first sender, a group never (it
 * is created first). Sets the APPEND op's new_kind and new_members (owned by
 * the op) for a message by sender. 0, or -1 when memory runs out. */
struct hubu_store_op;
int hubu_session_describe_new(const hubu_session *sess, const char *sender, struct hubu_store_op *op);
int hubu_session_add_member(hubu_session *sess, const char *user);
void hubu_session_remove_member(hubu_session *sess, const char *user);

/* A membership op (SESSION_CREATE, MEMBER_ADD, MEMBER_REMOVE) the store
 * applied (status OK): the session's copy in memory, when loaded, follows
 * it, so its members may send and read at once and a removed one no longer
 * may. Every path that changes members in the store while the server runs
 * (im.create_group and friends, hubuctl group through the admin listener)
 * calls it from the op's completion. */
void hubu_session_membership_applied(hubu_core *core, const struct hubu_store_op *op);

/* Adds a stored message to the tail (takes a new reference); the message is
 * at or below the committed watermark. */
void hubu_session_tail_push(hubu_session *sess, hubu_msg *m);

/* seq's append may or may not have been stored (the store lost its COMMIT's
 * answer and could not tell): the tail no longer knows every stored message
 * above its base, so it is emptied and its base raised to seq. PULLs at or
 * below seq go to the store, which has the message if it was stored. */
void hubu_session_tail_forget(hubu_session *sess, uint64_t seq);

/* Collects up to limit tail messages with after_seq < seq <= the committed
 * watermark. Returns -1 when
 * the tail cannot answer (after_seq below tail_base), else the count;
 * *has_more tells whether more stored messages follow. */
int hubu_session_tail_read(hubu_session *sess, uint64_t after_seq, uint32_t limit, hubu_msg **out, int *has_more);

/* Frees sessions unused since before idle_before_ms that have nothing under way. */
void hubu_session_evict_idle(hubu_core *core, uint64_t idle_before_ms);

void hubu_session_free_all(hubu_core *core);

#endif

/* core_fixture.h — drives the messaging core (runtime/core) without sockets:
 * a uv loop, a real SQLite store in a temporary directory, a hubu_core, and
 * test peers whose ops append to a buffer the test decodes frame by frame.
 * Each test program lists its cases as CORE_CASE(name) in a table; tests/
 * core.cmake reads those names and registers each as ctest `core.<name>`,
 * run as `<program> <name>`. Invariant: a case ends with every peer closed,
 * the store closed, the loop's handles closed and uv_loop_close == 0. */
#ifndef HUBU_TEST_CORE_FIXTURE_H
#define HUBU_TEST_CORE_FIXTURE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "core.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "msg.h"
#include "peer.h"
#include "store.h"

/* ---- cases ---- */

typedef struct {
  const char *name;
  void (*run)(void);
} core_case;

#define CORE_CASE(fn) \
  { #fn, fn }

/* check.h counts in statics of each file that includes it: the fixture's own
 * CHECKs are counted in core_fixture.c, the case's in the test's file. */
void fx_check_totals(unsigned long *count, unsigned long *failures);
void fx_main_begin(void); /* quiet logs, a watchdog alarm */
void fx_main_end(void);   /* frees the store's op cache, for leak checkers */

static inline void core_checks_(unsigned long *count, unsigned long *failures) {
  fx_check_totals(count, failures);
  *count += check_count;
  *failures += check_failures;
}

/* argv[1] names the case (every case without it; --list prints the names).
 * Exit status 0 when every check passed and each case ran at least one.
 * Inline so that it reads the counters of the test's own file. */
static inline int core_main(int argc, char **argv, const core_case *cases, size_t n_cases) {
  fx_main_begin();
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < n_cases; i++) printf("%s\n", cases[i].name);
    return 0;
  }
  int ran = 0;
  unsigned long count, failures;
  for (size_t i = 0; i < n_cases; i++) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    unsigned long count0, failures0;
    core_checks_(&count0, &failures0);
    cases[i].run();
    core_checks_(&count, &failures);
    if (count == count0) check_fail_(__FILE__, __LINE__, "the case ran no check");
    core_checks_(&count, &failures);
    fprintf(failures == failures0 ? stdout : stderr, "== %s: %s (%lu checks)\n", cases[i].name,
            failures == failures0 ? "ok" : "FAILED", count - count0);
    ran++;
  }
  fx_main_end();
  if (!ran) {
    fprintf(stderr, "no case named '%s'\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  core_checks_(&count, &failures);
  fprintf(failures ? stderr : stdout, "%s: %lu checks, %lu failed\n", argv[0], count, failures);
  return failures || !count ? 1 : 0;
}

/* ---- the fixture: loop, store, core ---- */

typedef struct {
  uv_loop_t loop;
  hubu_store *store; /* NULL once closed */
  hubu_core core;
  char dir[64]; /* the temporary data directory */
  sqlite3 *db;  /* the test's own connection to the store's file, for checks */
  uint64_t next_peer_id;
  int loop_ready; /* uv_loop_init succeeded: fx_close closes it */
} core_fixture;

/* The settings the cases start from (max_frame 1 MiB, window 256, 1 MiB,
 * ack timeout 10 s, pull limit 500). */
hubu_core_config fx_config(void);

/* Makes the directory, the loop, the store and the core (cfg NULL: fx_config()).
 * 0, or -1 after a failed CHECK. */
int fx_open(core_fixture *fx, const hubu_core_config *cfg);

/* Frees the core and makes a new one on the same store: a restart of hubud
 * with its database kept. Peers must be closed first. */
void fx_restart_core(core_fixture *fx);

/* Closes the store (its queued ops finish), runs the loop until its handles
 * are closed, frees the core, CHECKs uv_loop_close == 0, removes the directory. */
void fx_close(core_fixture *fx);

/* Runs the loop until every store operation core started has completed and
 * nothing is under way in core (no session busy or parked, no device loading,
 * no send in the store's hands). SENDs waiting for a seq allocator's later
 * answer (seq.h) do not count: only the case can answer them. Fails a CHECK
 * instead of hanging. */
void fx_settle(core_fixture *fx);

/* Runs one store op to completion on the loop; the caller frees it. */
hubu_store_op *fx_run_op(core_fixture *fx, hubu_store_op *op);

/* Another writer on the same store: a second core (another hubud, or another
 * node) whose connection user/device SENDs client_id to session_id. Returns
 * the SEND_ACK's code; *seq and *msg_id get what was stored. */
int64_t fx_other_writer_send(core_fixture *fx, const char *user, const char *device, uint64_t client_id,
                             const char *session_id, uint64_t *seq, uint64_t *msg_id);

/* Creates group session_id with these members in the database, as
 * `hubuctl group create` does before anyone uses it. */
void fx_create_group(core_fixture *fx, const char *session_id, const char *const *members, size_t n);

/* One integer from the test's own connection: the first column of the first
 * row of sql (printf-style with sqlite3_mprintf's %Q/%q), or -1 on error. */
int64_t fx_db_int(core_fixture *fx, const char *sql, ...);
/* Runs a statement on the test's own connection; 0 or -1. */
int fx_db_exec(core_fixture *fx, const char *sql, ...);

/* ---- test peers ---- */

typedef struct test_peer {
  hubu_peer peer; /* what core sees */
  core_fixture *fx;
  hubu_buf out; /* what core appended: whole frames */
  unsigned wrote_calls;
  unsigned goaways;
  Hubu__V1__Code goaway_code;
  char goaway_reason[128];
  unsigned bad_bodies;
  unsigned resumes;
  int detach_on_goaway; /* goaway unlinks the peer from presence at once */
  /* Every SEND_ACK OK (not a duplicate) is checked against the database the
   * moment core writes it: the message must already be stored. */
  unsigned acks_seen;        /* SEND_ACKs of the current output already looked at */
  unsigned acks_checked;     /* SEND_ACK OKs checked against the database */
  unsigned acks_not_durable; /* ... whose message was not stored yet: must stay 0 */
} test_peer;

/* A connection of user/device in HELLO_WAIT (no HELLO yet). */
void tp_init(core_fixture *fx, test_peer *tp, const char *user, const char *device);
/* ... of another core than the fixture's. */
void tp_init_on(core_fixture *fx, hubu_core *core, test_peer *tp, const char *user, const char *device);

/* tp_init, then HELLO through core, the device load, and HELLO_OK; the
 * HELLO_OK is taken from the output. 0 when the peer is READY. */
int tp_connect(core_fixture *fx, test_peer *tp, const char *user, const char *device);

/* The transport going away: core forgets the peer; its memory is freed. */
void tp_close(test_peer *tp);

/* What a transport's flush does: writes pending hints, marks the output
 * taken, and (here) discards the bytes. */
void tp_flush(test_peer *tp);

/* Empties the output without writing hints or taking the PUSH frame. */
void tp_discard(test_peer *tp);

/* ---- requests, as frames ---- */

/* SEND{client_id, session_id, body} through hubu_messaging_send. */
void tp_send(test_peer *tp, uint64_t client_id, const char *session_id, const char *body);

/* DELIVER_ACK{session_id: seq} through hubu_messaging_deliver_ack. */
void tp_deliver_ack(test_peer *tp, const char *session_id, uint64_t seq);

/* PULL{request_id, session_id, after_seq, limit} through hubu_messaging_pull. */
void tp_pull(test_peer *tp, uint64_t request_id, const char *session_id, uint64_t after_seq, uint32_t limit);

/* ---- reading the output ---- */

typedef struct {
  uint8_t type;
  const uint8_t *body;
  uint32_t length;
} out_frame;

/* Splits the output into frames (at most max); returns how many. A byte
 * stream that does not split into whole frames fails a CHECK. */
size_t tp_frames(test_peer *tp, out_frame *frames, size_t max);

/* Frames of this type in the output. */
size_t tp_count(test_peer *tp, uint8_t type);

/* The nth frame of type, decoded (free with the type's free_unpacked), or NULL. */
Hubu__V1__SendAck *tp_send_ack(test_peer *tp, size_t nth);
Hubu__V1__Push *tp_push(test_peer *tp, size_t nth);
Hubu__V1__PullHint *tp_pull_hint(test_peer *tp, size_t nth);
Hubu__V1__HelloOk *tp_hello_ok(test_peer *tp, size_t nth);
Hubu__V1__PullResult *tp_pull_result(test_peer *tp, size_t nth);

/* Messages over every PUSH frame of the output, in order; their seqs and
 * sessions written to seqs/sessions (up to max). Returns the count. */
size_t tp_pushed(test_peer *tp, uint64_t *seqs, char (*sessions)[32], size_t max);

/* ---- messages ---- */

/* A stored message of alice/phone in session_id with seq and a body of
 * body_len bytes, as a store completion would hold it (refs 1, the caller's). */
hubu_msg *fx_msg(const char *session_id, uint64_t seq, size_t body_len);

/* ---- core internals read by checks ---- */

hubu_device *fx_device(core_fixture *fx, const char *user, const char *device);
uint64_t fx_cursor(hubu_device *d, const char *session_id, int *dirty);

#endif

/* hubu_sync.h — a blocking face of libhubu-client, for tests and scripts.
 *
 * Each hubu_sync handle owns one uv_loop_t and one hubu_client on it. Nothing
 * runs between calls: every call that waits runs that loop (UV_RUN_ONCE under
 * a timer) until what it waits for has happened or timeout_ms has passed, and
 * everything else that arrives meanwhile (messages, acks, events) is queued in
 * the handle for later calls. There are no callbacks into the caller, so the
 * API suits LuaJIT FFI: plain C types, strings copied in, results copied into
 * caller structs whose pointers (bodies, arrays) stay valid until the next
 * call of the same kind on the same handle, or hubu_sync_close.
 *
 * Not for servers or UIs: a handle that is not being called does not answer
 * the server's PINGs (a connection idle for 3 x heartbeat_ms is dropped).
 * One handle, one thread. hubu_sync_open ignores SIGPIPE in the process when
 * it still has the default action (a dead socket must not kill the host). */
#ifndef HUBU_SYNC_H
#define HUBU_SYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ffi-begin: plain C declarations up to ffi-end, no preprocessor lines;
 * spec/helpers/hubu.lua hands this region to ffi.cdef as it is. */

typedef struct hubu_sync hubu_sync;

/* Results of the calls that wait (negative) besides HUBU_SYNC_OK. */
enum {
  HUBU_SYNC_OK = 0,
  HUBU_SYNC_TIMEOUT = -1,   /* timeout_ms passed first */
  HUBU_SYNC_CLOSED = -2,    /* the connection is gone and will not come back */
  HUBU_SYNC_INVALID = -3,   /* bad arguments */
  HUBU_SYNC_NOMEM = -4,     /* out of memory, or a frame could not be queued */
  HUBU_SYNC_NOT_READY = -5, /* the request needs a READY connection (reconnecting) */
};

typedef struct {
  const char *host;        /* default "127.0.0.1" */
  int port;                /* default 7700 */
  int tls;                 /* 1: TLS */
  const char *tls_ca_file; /* PEM CA to verify the server against */
  int tls_verify;          /* 0: accept any certificate */
  const char *user;        /* required */
  const char *device;      /* required */
  const char *token;       /* required */
  const char *client_info; /* default "hubu-sync/0.1" */
  int timeout_ms;          /* connect + HELLO_OK, default 5000 */
  int reconnect;           /* 1: reconnect after a loss (0: the handle is then CLOSED) */
  const char *outbox_path; /* file-backed outbox (NULL: memory only) */
  int no_auto_sync;        /* 1: no SYNC after HELLO_OK */
  int send_timeout_ms;     /* resend unacknowledged SENDs after this (0: the library's 10000) */
  int start_at_present;    /* 1: before open returns, every session's cursor is set to its
                              max_seq (one SYNC), so recv sees only later messages */
} hubu_sync_options;

/* The answer to one SEND: OK with its seq, or the refusal. */
typedef struct {
  int code;           /* hubu.v1 Code: 0 OK, 7 FORBIDDEN, ... */
  uint64_t client_id; /* what hubu_sync_send_async returned */
  uint64_t seq;       /* 0 unless OK */
  uint64_t msg_id;    /* 0 unless OK */
  int duplicate;      /* OK: the server had it already */
  char session_id[129];
  char reason[256];        /* the refusal's reason ("" when OK) */
  uint32_t retry_after_ms; /* RATE_LIMITED: how long the server asks to wait (0: not given) */
} hubu_sync_ack;

/* One received message. body and meta point into the handle: valid until the
 * next call of the same kind (recv, or pull for pulled messages) or close.
 * Longer strings than the arrays hold are cut (the protocol's limits fit). */
typedef struct {
  char session_id[129];
  uint64_t seq;
  uint64_t msg_id;
  char sender[65];
  char sender_device[65];
  uint64_t client_id;
  char content_type[129];
  const uint8_t *body;
  size_t body_len;
  uint64_t server_time_ms;
  size_t n_meta;
  const char *meta; /* n_meta pairs "key\0value\0", meta_len bytes in all */
  size_t meta_len;
} hubu_sync_message;

/* A history PULL; messages[0..n_messages) valid until the next pull or close. */
typedef struct {
  int code;
  uint64_t max_seq;
  int has_more;
  size_t n_messages;
  const hubu_sync_message *messages;
} hubu_sync_pull_result;

typedef struct {
  char session_id[129];
  uint64_t max_seq;
  uint64_t min_seq;
  char kind[33];
} hubu_sync_session;

/* SYNC without cursors; sessions valid until the next list or close. */
typedef struct {
  int code;
  size_t n_sessions;
  const hubu_sync_session *sessions;
} hubu_sync_sessions_result;

/* One EVENT frame; payload valid until the next event call or close. */
typedef struct {
  char name[129];
  char sender[65];
  const uint8_t *payload;
  size_t payload_len;
} hubu_sync_event;

/* The last GOAWAY and the last ERROR frame received after HELLO_OK. */
typedef struct {
  int code;
  uint32_t reconnect_after_ms;
  char reason[256];
} hubu_sync_goaway;

typedef struct {
  int code;
  uint32_t frame_type; /* the frame the server complains about (0 if none) */
  char message[256];
} hubu_sync_error;

/* ---- connection ---- */

/* Connects and waits for HELLO_OK (the client is READY; the library then
 * SYNCs on its own unless no_auto_sync). NULL on failure, with why in err
 * ("UNAUTHENTICATED: ...", "timeout", ...). */
hubu_sync *hubu_sync_open(const hubu_sync_options *opt, char *err, size_t err_size);

/* hubu_sync_open with the defaults: no reconnect, memory-only outbox, auto SYNC. */
hubu_sync *hubu_sync_connect(const char *host, int port, const char *user, const char *device, const char *token,
                             int timeout_ms, char *err, size_t err_size);

/* Closes the client and every handle, runs the loop until they are gone, and
 * frees s. 0, or the libuv error of uv_loop_close (s is freed either way). */
int hubu_sync_close(hubu_sync *s);

/* hubu_client_state: 0 idle, 1 connecting, 2 hello_sent, 3 ready, 4 backoff, 5 closed. */
int hubu_sync_state(hubu_sync *s);
const char *hubu_sync_state_name(int state);
/* Code and reason of the last state change (reason valid until the next call). */
const char *hubu_sync_state_reason(hubu_sync *s, int *code);
/* Runs the loop until the state is `state`. OK, TIMEOUT (or CLOSED when
 * waiting for another state and the connection is gone for good). */
int hubu_sync_wait_state(hubu_sync *s, int state, int timeout_ms);
/* Successful HELLO_OKs so far (2 after one reconnect). */
unsigned hubu_sync_hello_count(hubu_sync *s);
/* 1 and *out when one was received, else 0. */
int hubu_sync_last_goaway(hubu_sync *s, hubu_sync_goaway *out);
int hubu_sync_last_error(hubu_sync *s, hubu_sync_error *out);

/* ---- sending ---- */

/* Queues a message (sent once the loop runs) and returns its client_id, 0 on
 * error. meta: n pairs "key\0value\0" in meta_len bytes, or NULL. */
uint64_t hubu_sync_send_async(hubu_sync *s, const char *session_id, const char *body, size_t len,
                              const char *content_type, const char *meta, size_t meta_len);
/* Waits for the SEND_ACK of client_id (stored or refused). OK and *out, or
 * TIMEOUT / CLOSED (the message stays queued in the library). */
int hubu_sync_wait_ack(hubu_sync *s, uint64_t client_id, int timeout_ms, hubu_sync_ack *out);
/* send_async + wait_ack. */
int hubu_sync_send(hubu_sync *s, const char *session_id, const char *body, size_t len, const char *content_type,
                   int timeout_ms, hubu_sync_ack *out);
/* Waits until at least n answers are queued and not yet taken; returns how
 * many are queued (fewer than n after a timeout), or CLOSED. */
int hubu_sync_wait_acks(hubu_sync *s, size_t n, int timeout_ms);
/* Takes the oldest queued answer: 1 and *out, or 0 when there is none. */
int hubu_sync_next_ack(hubu_sync *s, hubu_sync_ack *out);
/* Messages queued in the library and not yet answered. */
size_t hubu_sync_unacked(hubu_sync *s);

/* ---- receiving ---- */

/* The next message handed over by the message layer (once per (session, seq),
 * in seq order per session). OK, TIMEOUT or CLOSED. */
int hubu_sync_recv(hubu_sync *s, int timeout_ms, hubu_sync_message *out);
/* Messages queued for recv. */
size_t hubu_sync_pending_messages(hubu_sync *s);
/* Runs the loop for ms, queueing what arrives; returns pending_messages. */
int hubu_sync_drain(hubu_sync *s, int ms);
/* Highest seq delivered in session_id (what the library acknowledged). */
uint64_t hubu_sync_cursor(hubu_sync *s, const char *session_id);
/* Moves session_id's cursor forward to seq (never back): later deliveries
 * start after it, and queued messages at or below it are dropped. OK,
 * INVALID or NOMEM. */
int hubu_sync_set_cursor(hubu_sync *s, const char *session_id, uint64_t seq);

/* History PULL (not the delivery path: recv does not see these). OK with
 * *out (out->code is the server's answer), or TIMEOUT / CLOSED / NOT_READY. */
int hubu_sync_pull(hubu_sync *s, const char *session_id, uint64_t after_seq, uint32_t limit, int timeout_ms,
                   hubu_sync_pull_result *out);
/* SYNC with no cursors: every session of the user. Like pull. */
int hubu_sync_list_sessions(hubu_sync *s, int timeout_ms, hubu_sync_sessions_result *out);

/* ---- calls, events, raw frames ---- */

/* CALL{request_id, method, payload} and wait for its CALL_RESULT (or for an
 * ERROR frame about a CALL: ERRORs carry no request_id, so each is charged to
 * the oldest CALL still unanswered, and its code stands for that CALL's
 * result; a later call never gets an earlier one's answer). Returns
 * the result payload's length and copies it NUL-terminated into result
 * (cut to result_size - 1: a return >= result_size means it was cut), with
 * *code the result's Code; or TIMEOUT / CLOSED / NOT_READY / INVALID. */
int hubu_sync_call(hubu_sync *s, const char *method, const char *payload, size_t len, int timeout_ms, int *code,
                   char *result, size_t result_size);
/* The reason of the last call's result ("" when none); valid until the next call. */
const char *hubu_sync_call_reason(hubu_sync *s);

/* EVENT frames queued for next_event. */
size_t hubu_sync_pending_events(hubu_sync *s);
/* The next EVENT; OK, TIMEOUT or CLOSED. timeout_ms 0: only what is queued. */
int hubu_sync_next_event(hubu_sync *s, int timeout_ms, hubu_sync_event *out);

/* Queues one frame with an already packed body (raw protocol tests). OK,
 * NOT_READY / CLOSED, INVALID. A raw CALL counts among the open calls (an
 * ERROR about a CALL is charged to the oldest one open); keep its request_id
 * apart from hubu_sync_call's, which count up from 1. */
int hubu_sync_send_frame(hubu_sync *s, int type, const char *body, size_t len);

/* ---- helpers ---- */

/* Mints a PROTOCOL.md section 6 token valid for ttl_s seconds from now
 * (negative: already expired). secret is its bytes, or "@FILE" to read it
 * like hubud does. Returns the token's length, or -1. */
int hubu_sync_mint_token(const char *secret, const char *user, int ttl_s, char *out, size_t out_size);
/* "OK", "FORBIDDEN", ... for a hubu.v1 Code. */
const char *hubu_sync_code_name(int code);
/* "ok", "timeout", "closed", ... for a HUBU_SYNC_* result. */
const char *hubu_sync_result_name(int result);

/* ffi-end */

#ifdef __cplusplus
}
#endif
#endif

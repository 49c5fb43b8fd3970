/* hubu_client.h — libhubu-client: a HubuIM connection on a libuv loop.
 *
 * One hubu_client is one logical connection of one (user, device) to one
 * server: it connects over TCP or TLS, sends HELLO, answers and sends PING,
 * and reconnects with exponential backoff and jitter when the connection is
 * lost. Everything runs on the loop passed to hubu_client_new; no call here
 * blocks, and no function may be called from another thread.
 *
 * Two layers on one object. The frame layer delivers whole frames (on_frame)
 * and state changes (on_state). The message layer makes PROTOCOL.md section
 * 5 reliable for the application: sends are queued with increasing client_ids,
 * kept until the server ACKs them and resent in client_id order after a
 * timeout or a reconnect (optionally from a file-backed outbox that survives a
 * restart); received messages are delivered exactly once per (session, seq),
 * in seq order per session, through a reorder buffer; a gap is waited for
 * 500 ms and then PULLed; every HELLO_OK is followed by a SYNC of the
 * session cursors, and DELIVER_ACKs are sent for what was delivered. */
#ifndef HUBU_CLIENT_H
#define HUBU_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hubu_client hubu_client;

typedef enum {
  HUBU_CLIENT_IDLE = 0,   /* created, not started */
  HUBU_CLIENT_CONNECTING, /* TCP connect (and TLS handshake) under way */
  HUBU_CLIENT_HELLO_SENT, /* waiting for HELLO_OK */
  HUBU_CLIENT_READY,      /* authenticated: frames may be sent */
  HUBU_CLIENT_BACKOFF,    /* lost; waiting to reconnect */
  HUBU_CLIENT_CLOSED,     /* hubu_client_close called, or a final refusal */
} hubu_client_state;

typedef struct {
  const char *host;            /* IPv4/IPv6 literal or name; default "127.0.0.1" */
  int port;                    /* default 7700 (7701 with tls) */
  int tls;                     /* 1: TLS */
  const char *tls_ca_file;     /* verify the server against this CA (PEM) */
  int tls_verify;              /* 0: accept any certificate (development) */
  const char *user_id;         /* required */
  const char *device_id;       /* required */
  const char *token;           /* required */
  const char *client_info;     /* optional, e.g. "hubu-cli/0.1" */
  int reconnect;               /* 1: reconnect after a loss (default when 0 is given: off) */
  uint32_t backoff_min_ms;     /* first delay, default 200 */
  uint32_t backoff_max_ms;     /* ceiling, default 30000 */
  uint32_t connect_timeout_ms; /* TCP + TLS + HELLO_OK, default 10000 */
  uint32_t ping_interval_ms;   /* 0: use the server's heartbeat_ms */
  /* message layer */
  const char *outbox_path;  /* file-backed outbox: unacknowledged sends and the
                               next client_id survive a restart (NULL: memory only) */
  uint32_t send_timeout_ms; /* resend unacknowledged SENDs after this, default 10000 */
  uint32_t gap_wait_ms;     /* wait for a missing seq before PULL, default 500 */
  uint32_t pull_limit;      /* messages per PULL, default 200 */
  int no_auto_sync;         /* 1: do not SYNC after HELLO_OK (bench, raw tools) */
  int frames_only;          /* 1: the message layer leaves PUSH, PULL_HINT and results to on_frame
                               (no reorder buffer, no DELIVER_ACK, no SYNC): for raw tools */
  const char *ws_path;      /* non-NULL: WebSocket at this path (e.g. "/ws") on hubud's HTTP listener,
                               subprotocol hubu.v1, instead of raw TCP; not with tls */
  int ws_json;              /* 1 with ws_path: subprotocol hubu.v1.json, each frame a text message in the JSON
                               form (PROTOCOL.md section 9) */
} hubu_client_options;

/* A received message, valid during the callback only. */
typedef struct {
  const char *session_id;
  uint64_t seq;
  uint64_t msg_id;
  const char *sender;
  const char *sender_device;
  uint64_t client_id;
  const uint8_t *body;
  size_t body_len;
  const char *content_type;
  uint64_t server_time_ms;
  size_t n_meta;
  const char *const *meta_keys;
  const char *const *meta_values;
} hubu_client_message;

/* One session as SYNC reports it. */
typedef struct {
  const char *session_id;
  uint64_t max_seq;
  uint64_t min_seq;
  const char *kind;
} hubu_client_session_state;

/* What the server told us in HELLO_OK. */
typedef struct {
  uint64_t conn_id;
  uint64_t server_time_ms;
  uint32_t heartbeat_ms;
  uint64_t last_client_id;
  uint32_t max_frame;
  const char *server; /* valid during the callback only */
} hubu_client_hello_info;

typedef struct {
  /* State changes. code is a hubu.v1 Code (0 when none applies) and reason a
   * short text; e.g. BACKOFF with UNAUTHENTICATED after a refused HELLO. */
  void (*on_state)(hubu_client *c, hubu_client_state state, int code, const char *reason, void *ud);
  /* HELLO_OK received; the client is READY. */
  void (*on_ready)(hubu_client *c, const hubu_client_hello_info *info, void *ud);
  /* Every frame after HELLO_OK, including ones the library also handles
   * itself (PONG, ERROR, GOAWAY). body is valid during the callback only. */
  void (*on_frame)(hubu_client *c, uint8_t type, const uint8_t *body, size_t len, void *ud);

  /* Message layer. on_stored: the server ACKed client_id (duplicate: it had
   * it already). on_failed: refused for good (code REJECTED, FORBIDDEN,
   * INVALID, RATE_LIMITED...); the message is dropped from the outbox. STALE
   * never reaches on_failed: the library resends such a message under a new
   * client_id, since the application never saw it acknowledged.
   * on_received: the next message of a session, in seq order, once. */
  void (*on_stored)(hubu_client *c, uint64_t client_id, const char *session_id, uint64_t seq, uint64_t msg_id,
                    int duplicate, void *ud);
  void (*on_received)(hubu_client *c, const hubu_client_message *m, void *ud);
  void (*on_failed)(hubu_client *c, uint64_t client_id, int code, const char *reason, void *ud);
} hubu_client_callbacks;

/* Inside on_failed: the refusal's SendAck.retry_after_ms (how long the
 * server asks the sender to wait, e.g. after RATE_LIMITED), 0 when it gave
 * none. 0 outside on_failed. */
uint32_t hubu_client_retry_after_ms(const hubu_client *c);

/* Copies options (strings included); callbacks may be NULL. NULL on bad
 * options or out of memory, or when the outbox cannot be opened (another
 * process holds its lock, or it cannot be read or written):
 * hubu_client_last_error() then says why. */
hubu_client *hubu_client_new(uv_loop_t *loop, const hubu_client_options *opt, const hubu_client_callbacks *cb,
                             void *ud);

/* Why the last hubu_client_new on this thread returned NULL ("" after a success). */
const char *hubu_client_last_error(void);

/* Starts connecting. 0, or a negative libuv error. */
int hubu_client_start(hubu_client *c);

/* Sends one frame with an already packed protobuf body. Only while READY
 * (UV_ENOTCONN otherwise). Frames queued in one loop turn go out in one write. */
int hubu_client_send_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len);

/* Sends PING{time_ms = now}. */
int hubu_client_ping(hubu_client *c);

/* ---- message layer ---- */

/* Queues a message for session_id and returns its client_id (0 on error:
 * bad arguments, out of memory, outbox write failed). It is sent at once when
 * READY, otherwise after the next HELLO_OK; on_stored or on_failed follows.
 * meta_keys/meta_values may be NULL when n_meta is 0. */
uint64_t hubu_client_send_message(hubu_client *c, const char *session_id, const uint8_t *body, size_t len,
                                  const char *content_type, size_t n_meta, const char *const *meta_keys,
                                  const char *const *meta_values);

/* Messages queued and not yet ACKed or refused. */
size_t hubu_client_pending(const hubu_client *c);

/* Notes on the send path:
 * - client_id in on_stored and on_failed is always the value
 *   hubu_client_send_message returned (for a message loaded from the outbox:
 *   the value an earlier process got), even when the library had to send the
 *   message under a newer client_id: after STALE, or when it was queued
 *   before the first HELLO_OK and the server's last_client_id was already
 *   past it.
 * - With outbox_path, the outbox file is written and fdatasync'd inside
 *   hubu_client_send_message: a short blocking disk write on the loop thread,
 *   the price of "queued" meaning "survives a crash". The file is locked
 *   (outbox_path + ".lock") for the life of the client. */

/* Highest seq delivered (on_received) in session_id, 0 if none. */
uint64_t hubu_client_cursor(const hubu_client *c, const char *session_id);

/* Starts session_id's cursor at seq (e.g. restored by the application):
 * messages up to seq are not delivered again. */
int hubu_client_set_cursor(hubu_client *c, const char *session_id, uint64_t seq);

typedef void (*hubu_client_pull_cb)(hubu_client *c, int code, const hubu_client_message *msgs, size_t n,
                                    uint64_t max_seq, int has_more, void *ud);
/* One PULL outside the delivery path (history): msgs are reported to cb and
 * not to on_received. Only while READY. 0 or a negative libuv error. */
int hubu_client_pull(hubu_client *c, const char *session_id, uint64_t after_seq, uint32_t limit, hubu_client_pull_cb cb,
                     void *ud);

typedef void (*hubu_client_sessions_cb)(hubu_client *c, int code, const hubu_client_session_state *states, size_t n,
                                        void *ud);
/* SYNC with no cursors: every session of the user with max_seq above 0. */
int hubu_client_list_sessions(hubu_client *c, hubu_client_sessions_cb cb, void *ud);

/* A pull or list request whose connection is lost gets its cb with code
 * UNAVAILABLE; after hubu_client_close no callback of a request runs. */

/* SYNC with every known cursor now and PULL what is behind: what the library
 * does after each HELLO_OK unless no_auto_sync. Only while READY. */
int hubu_client_sync(hubu_client *c);

/* Counters of the message layer, for tests, tools and metrics. */
typedef struct {
  uint64_t queued;       /* hubu_client_send_message calls that succeeded */
  uint64_t sends;        /* SEND frames written, retries included */
  uint64_t resends;      /* ... of which retries (timeout, reconnect, UNAVAILABLE) */
  uint64_t renumbered;   /* messages moved to a new client_id (STALE, or queued before the first HELLO_OK) */
  uint64_t stored;       /* on_stored reports */
  uint64_t failed;       /* on_failed reports */
  uint64_t pushed;       /* messages that arrived in PUSH frames */
  uint64_t pulled;       /* messages that arrived in PULL_RESULTs of the delivery path */
  uint64_t duplicates;   /* received messages dropped: (session, seq) already delivered or held */
  uint64_t delivered;    /* on_received reports */
  uint64_t gaps;         /* messages held because an earlier seq was missing */
  uint64_t pulls;        /* PULLs sent by the delivery path (gap, PULL_HINT, SYNC) */
  uint64_t pull_hints;   /* PULL_HINT frames received */
  uint64_t syncs;        /* SYNCs sent by the library */
  uint64_t deliver_acks; /* DELIVER_ACK frames sent */
} hubu_client_stats;

void hubu_client_get_stats(const hubu_client *c, hubu_client_stats *out);

hubu_client_state hubu_client_get_state(const hubu_client *c);
const char *hubu_client_state_name(hubu_client_state s);
void *hubu_client_userdata(const hubu_client *c);
/* Successful HELLO_OKs so far (1 after the first connect, 2 after one reconnect...). */
unsigned hubu_client_sessions(const hubu_client *c);

/* Closes the connection, stops reconnecting, and frees c once every handle is
 * closed; on_closed (may be NULL) is then called. c must not be used after. */
void hubu_client_close(hubu_client *c, void (*on_closed)(void *ud));

#ifdef __cplusplus
}
#endif
#endif

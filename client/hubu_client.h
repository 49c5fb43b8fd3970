/* hubu_client.h — libhubu-client: a HubuIM connection on a libuv loop.
 *
 * One hubu_client is one logical connection of one (user, device) to one
 * server: it connects over TCP or TLS, sends HELLO, answers and sends PING,
 * and reconnects with exponential backoff and jitter when the connection is
 * lost. Everything runs on the loop passed to hubu_client_new; no call here
 * blocks, and no function may be called from another thread.
 *
 * Layers: today the library delivers whole frames (on_frame) and state
 * changes (on_state). Reliable messaging (pending sends retried in client_id
 * order, per-session cursors, a reorder buffer, SYNC after HELLO_OK) sits on
 * top of the same object and reports through the message callbacks below,
 * which are reserved now so that adding them breaks nothing. */
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
  HUBU_CLIENT_IDLE = 0,      /* created, not started */
  HUBU_CLIENT_CONNECTING,    /* TCP connect (and TLS handshake) under way */
  HUBU_CLIENT_HELLO_SENT,    /* waiting for HELLO_OK */
  HUBU_CLIENT_READY,         /* authenticated: frames may be sent */
  HUBU_CLIENT_BACKOFF,       /* lost; waiting to reconnect */
  HUBU_CLIENT_CLOSED,        /* hubu_client_close called, or a final refusal */
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
} hubu_client_options;

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

  /* Reserved for reliable messaging (not called yet). */
  void (*on_stored)(hubu_client *c, uint64_t client_id, const char *session_id, uint64_t seq, uint64_t msg_id,
                    void *ud);
  void (*on_received)(hubu_client *c, const void *message /* Hubu__V1__Message* */, void *ud);
  void (*on_failed)(hubu_client *c, uint64_t client_id, int code, const char *reason, void *ud);
} hubu_client_callbacks;

/* Copies options (strings included); callbacks may be NULL. NULL on bad
 * options or out of memory. */
hubu_client *hubu_client_new(uv_loop_t *loop, const hubu_client_options *opt, const hubu_client_callbacks *cb,
                             void *ud);

/* Starts connecting. 0, or a negative libuv error. */
int hubu_client_start(hubu_client *c);

/* Sends one frame with an already packed protobuf body. Only while READY
 * (UV_ENOTCONN otherwise). Frames queued in one loop turn go out in one write. */
int hubu_client_send_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len);

/* Sends PING{time_ms = now}. */
int hubu_client_ping(hubu_client *c);

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

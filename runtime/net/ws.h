/* ws.h — the HTTP listener's side of a connection: the HTTP/1.1 request
 * (http-parser), the WebSocket upgrade at /ws (RFC 6455, subprotocol hubu.v1),
 * then WebSocket framing by wslay. Layered under conn.c as TLS is: the
 * connection feeds it socket bytes and gets whole binary messages back (each
 * one frame of the binary protocol); it hands it whole frames and writes the
 * bytes it produces. No socket, no loop: pure bytes in, bytes out. */
#ifndef HUBU_NET_WS_H
#define HUBU_NET_WS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct hubu_ws hubu_ws;

#define HUBU_WS_MAX_HEADER 8192 /* request line + headers; above it: 431 and close */
#define HUBU_WS_SUBPROTOCOL "hubu.v1"

/* Close codes of RFC 6455 section 7.4.1 this server sends. */
enum {
  HUBU_WS_CLOSE_NORMAL = 1000,
  HUBU_WS_CLOSE_GOING_AWAY = 1001,
  HUBU_WS_CLOSE_PROTOCOL = 1002,
  HUBU_WS_CLOSE_UNSUPPORTED = 1003,
  HUBU_WS_CLOSE_BAD_DATA = 1007,
  HUBU_WS_CLOSE_POLICY = 1008,
  HUBU_WS_CLOSE_TOO_BIG = 1009,
};

/* One binary message (one frame, header included). Returns non-zero once the
 * connection is closing: no further message is delivered. */
typedef int (*hubu_ws_deliver)(void *ud, const uint8_t *msg, size_t len);

/* A connection that has sent nothing yet. origins: the --ws-origins list
 * ("scheme://host[:port],..."; NULL: every Origin allowed); not copied.
 * conn_id is for the log. NULL when out of memory. */
hubu_ws *hubu_ws_new(const char *origins, uint64_t conn_id);
void hubu_ws_free(hubu_ws *ws);

/* The largest message accepted from now on (header included); a bigger one
 * closes with 1009. */
void hubu_ws_set_max_message(hubu_ws *ws, size_t max);

/* 1 once the upgrade was answered with 101 and messages flow. */
int hubu_ws_open(const hubu_ws *ws);

/* Socket bytes in. 0: go on; 1: the connection is to close once its output
 * is written (an HTTP answer, a close frame); -1: drop it now (logged). */
int hubu_ws_input(hubu_ws *ws, const uint8_t *data, size_t len, hubu_ws_deliver deliver, void *ud);

/* Moves the whole frames of frames (emptied) into binary messages, and when
 * closing, a close frame (code) after them (or, before the upgrade, an HTTP
 * 408 when nothing was answered yet). The bytes to write wait for
 * hubu_ws_take_output. 0, or -1 (logged) when memory ran out. */
int hubu_ws_output(hubu_ws *ws, hubu_buf *frames, int closing, uint16_t code);

/* Bytes waiting to be written. */
size_t hubu_ws_output_pending(const hubu_ws *ws);

/* Moves the bytes to write into out (which must be empty). */
void hubu_ws_take_output(hubu_ws *ws, hubu_buf *out);

/* Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2): out holds 29 bytes. */
void hubu_ws_accept_key(const char *key, size_t key_len, char out[29]);

#endif

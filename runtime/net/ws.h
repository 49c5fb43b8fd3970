/* ws.h — the HTTP listener's side of a connection: the HTTP/1.1 request
 * (http-parser), then either the WebSocket upgrade at /ws (RFC 6455,
 * subprotocols hubu.v1 and hubu.v1.json) with WebSocket framing by wslay, or
 * one request of another path handed to the connection (the HTTP API, the
 * chat page) and its answer. Layered under conn.c as TLS is: the connection
 * feeds it socket bytes and gets whole frames back (a binary message is one;
 * a text message in the JSON form is made into one); it hands it whole frames
 * and writes the bytes it produces. No socket, no loop: pure bytes in, bytes
 * out. */
#ifndef HUBU_NET_WS_H
#define HUBU_NET_WS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct hubu_ws hubu_ws;

#define HUBU_WS_MAX_HEADER 8192 /* request line + headers; above it: 431 and close */
#define HUBU_WS_SUBPROTOCOL "hubu.v1"
#define HUBU_WS_SUBPROTOCOL_JSON "hubu.v1.json"

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

/* One request of the HTTP listener for a path other than /ws, whole (its
 * body read). Every pointer is valid only during the request callback. */
typedef struct {
  int method; /* http-parser's enum http_method */
  const char *path;
  size_t path_len; /* percent-escapes left in */
  const char *query;
  size_t query_len; /* after '?', or 0 */
  const char *authorization, *content_type, *accept, *origin;
  size_t authorization_len, content_type_len, accept_len, origin_len; /* NULL and 0 when absent */
  const uint8_t *body;
  size_t body_len;
} hubu_http_request;

/* What the connection does for the HTTP side. */
typedef struct {
  /* A request (not /ws) arrived whole: answer it with hubu_ws_respond, now
   * or later. 0, or -1 to drop the connection. */
  int (*request)(void *ud, const hubu_http_request *req);
  /* While a request waits for its answer, the frames the connection produces
   * are handed here one by one (header included) instead of being sent. */
  void (*frame)(void *ud, const uint8_t *frame, size_t len);
  /* A hubu.v1.json text message that is not a frame: code is
   * HUBU__V1__CODE__BAD_FRAME (not a JSON object with a "type") or
   * BAD_BODY (type is the frame's), why tells. */
  void (*refused)(void *ud, int code, uint8_t type, const char *why);
} hubu_ws_http;

/* Sets what requests and JSON refusals go to; without it a request other
 * than /ws is answered 404 and a bad JSON message closes with 1007. */
void hubu_ws_set_http(hubu_ws *ws, const hubu_ws_http *http, void *ud);

/* The largest request body (after the headers); above it: 413. */
void hubu_ws_set_max_body(hubu_ws *ws, size_t max);

/* The answer to the request: status line, headers (extra: more header
 * lines, each ending in CRLF, or NULL), body; Connection: close. 0 or -1. */
int hubu_ws_respond(hubu_ws *ws, int status, const char *content_type, const char *extra, const void *body, size_t len);

/* 1 once an HTTP answer (not a 101) is queued: the connection closes after it. */
int hubu_ws_http_done(const hubu_ws *ws);

/* 1 when the WebSocket speaks hubu.v1.json. */
int hubu_ws_json(const hubu_ws *ws);

/* The largest message accepted from now on (header included); a bigger one
 * closes with 1009. A hubu.v1.json text message may be twice that and 1 KiB
 * (base64 and names make JSON longer); the frame made of it is then held to
 * the same limit as a binary one. */
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

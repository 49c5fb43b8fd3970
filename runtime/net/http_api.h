/* http_api.h — the HTTP listener's requests other than /ws: the HTTP API of
 * PROTOCOL.md section 7 (send, sync, pull, calls), /healthz, the development
 * sign-in (--dev-login) and the chat page's files (web.h).
 *
 * An API request is served by the connection's own peer, as a short
 * connection: HELLO with the bearer token (the token check or the auth
 * plugin), then the one request frame, through the same code as on a long
 * connection (dedupe, STALE, plugins, limits). The peer is transient (core
 * never lists it in presence), and the frames it is answered with are turned
 * into the HTTP answer: the result message, in JSON or protobuf, its code
 * deciding the status. */
#ifndef HUBU_NET_HTTP_API_H
#define HUBU_NET_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "ws.h"

typedef struct hubu_conn hubu_conn;

/* A whole request of c (ws.h's request callback). 0, or -1 to drop c. */
int hubu_http_api_request(hubu_conn *c, const hubu_http_request *req);

/* A frame c produced while its request waits (ws.h's frame callback). */
void hubu_http_api_frame(hubu_conn *c, const uint8_t *frame, size_t len);

/* The HTTP status for a result code (PROTOCOL.md section 7). */
int hubu_http_status_of(int code);

#endif

/* http_client.h — outgoing HTTP for plugins (im.http): libcurl's multi
 * interface driven by the event loop (a uv_poll per socket curl opens, one
 * uv_timer for curl's timeouts). Requests are named by the caller's id and
 * answered through one callback; nothing here knows Lua. */
#ifndef HUBU_HTTP_CLIENT_H
#define HUBU_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

typedef struct hubu_http_client hubu_http_client;

/* One request. Strings are copied by hubu_http_client_start. */
typedef struct {
  const char *method;         /* GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS */
  const char *url;            /* http:// or https:// only */
  const char *const *headers; /* n_headers lines "Name: value" */
  size_t n_headers;
  const void *body; /* sent as is; NULL: none */
  size_t body_len;
  uint32_t timeout_ms;    /* the whole request, connect included (required, >= 1) */
  size_t max_response;    /* body bytes accepted; more fails the request */
  uint32_t max_redirects; /* 0: a 3xx is the answer */
  int verify;             /* verify the server's certificate and name (HTTPS) */
  const char *ca_file;    /* trust these certificates (PEM) instead of the system's; NULL: the system's */
} hubu_http_request;

/* Why a request failed (hubu_http_result.error). */
typedef enum {
  HUBU_HTTP_OK = 0,
  HUBU_HTTP_TIMEOUT,   /* timeout_ms passed */
  HUBU_HTTP_CONNECT,   /* refused, unreachable, or the name did not resolve */
  HUBU_HTTP_TLS,       /* handshake or certificate */
  HUBU_HTTP_TOO_LARGE, /* the response body passed max_response */
  HUBU_HTTP_PROTOCOL,  /* not HTTP, or broken off */
  HUBU_HTTP_OTHER,
} hubu_http_error;

/* What came back: status and body on success, else error and message. The
 * callback may keep nothing of it past its return. */
typedef struct {
  hubu_http_error error;
  const char *message; /* libcurl's words for the failure ("" on success) */
  long status;
  const uint8_t *body;
  size_t body_len;
  const char *headers; /* the final response's header lines, "Name: value\r\n" each */
  size_t headers_len;
  double seconds; /* from start to completion */
} hubu_http_result;

/* Called once per request that was started and not cancelled, from the loop.
 * It may start and cancel requests. */
typedef void (*hubu_http_done_fn)(void *ud, uint64_t id, const hubu_http_result *r);

/* closed(ud) runs once the client's last handle closed after
 * hubu_http_client_close. NULL when memory runs out or libcurl cannot start. */
hubu_http_client *hubu_http_client_new(uv_loop_t *loop, hubu_http_done_fn done, void *ud, void (*closed)(void *ud));

/* Starts request id (the caller's; unique among those in flight). 0, or -1
 * with why in err (nothing started; no callback comes). */
int hubu_http_client_start(hubu_http_client *c, uint64_t id, const hubu_http_request *req, char *err, size_t err_size);

/* Stops request id if it is in flight; its callback never comes. 1 when it
 * was, 0 when not. */
int hubu_http_client_cancel(hubu_http_client *c, uint64_t id);

/* Requests in flight now. */
size_t hubu_http_client_active(const hubu_http_client *c);

/* Short name of an error: "timeout", "connect", "tls", "too large", "protocol", "error". */
const char *hubu_http_error_name(hubu_http_error e);

/* Cancels every request (no callback comes), closes the handles; closed(ud)
 * follows from the loop. */
void hubu_http_client_close(hubu_http_client *c);

#endif

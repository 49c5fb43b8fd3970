/* ws.c — one HTTP listener connection: the request, then either the upgrade
 * to WebSocket at /ws and messages through wslay's event API (masking,
 * fragmentation, ping/pong and the close handshake are wslay's; hubu.v1.json
 * text messages go through lib/pbjson.c), or one request of another path,
 * body included, handed to the connection, whose answer closes it
 * (Connection: close).
 * Invariants: before the upgrade at most HUBU_WS_MAX_HEADER bytes of request
 * line and headers and the body limit are held; after it, one message of at
 * most the size set by hubu_ws_set_max_message; every refusal is logged here
 * once. */
#include "ws.h"

#include <http_parser.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "frame.h"
#include "hubu.pb-c.h"
#include "log.h"
#include "pbjson.h"
#include "utf8.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum {
  HDR_NONE,
  HDR_UPGRADE,
  HDR_CONNECTION,
  HDR_KEY,
  HDR_VERSION,
  HDR_PROTOCOL,
  HDR_ORIGIN,
  HDR_AUTHORIZATION,
  HDR_CONTENT_TYPE,
  HDR_ACCEPT,
  HDR_OTHER
};

struct hubu_ws {
  http_parser parser;
  wslay_event_context_ptr ev; /* owned; from the upgrade on */
  const char *origins;
  uint64_t conn_id;
  hubu_buf out;  /* owned; bytes to write */
  hubu_buf hdr;  /* owned; the header values collected, "name\0value\0" per header we read */
  hubu_buf url;  /* owned; the request target, until the request is answered */
  hubu_buf body; /* owned; the request body (not /ws), until the request is answered */
  size_t max_body;
  size_t consumed; /* request line and header bytes so far */
  int cur;         /* the header whose value is being read */
  int value_mark;  /* a value is being appended */
  size_t vals[HDR_OTHER];
  size_t val_len[HDR_OTHER];
  int have[HDR_OTHER];
  char path_ok; /* the URL's path is /ws */
  char headers_done;
  char message_done; /* the whole request (body included) is in */
  char body_too_big; /* answered 413 */
  char waiting;      /* a request was handed over and waits for its answer */
  char json;         /* hubu.v1.json selected */
  char answered;     /* an HTTP answer (101 or other) is in out */
  char open;         /* 101 sent */
  char closing;      /* a close frame is queued, or no message is to be delivered */
  char deliver_stopped;
  const uint8_t *in; /* the input being fed to wslay */
  size_t in_len;
  hubu_ws_deliver deliver;
  void *ud;
  const hubu_ws_http *http; /* the connection's HTTP side, or NULL */
  void *http_ud;
  size_t max_message;   /* binary message limit (header included) */
  uint16_t refuse_code; /* close right after the 101 with this code (origin, subprotocol) */
  const char *refuse_why;
};

/* ---- HTTP before the upgrade ---- */

static int header_id(const char *name, size_t len) {
  static const struct {
    const char *name;
    int id;
  } known[] = {
      {"upgrade", HDR_UPGRADE},
      {"connection", HDR_CONNECTION},
      {"sec-websocket-key", HDR_KEY},
      {"sec-websocket-version", HDR_VERSION},
      {"sec-websocket-protocol", HDR_PROTOCOL},
      {"origin", HDR_ORIGIN},
      {"authorization", HDR_AUTHORIZATION},
      {"content-type", HDR_CONTENT_TYPE},
      {"accept", HDR_ACCEPT},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strlen(known[i].name) == len && strncasecmp(known[i].name, name, len) == 0) return known[i].id;
  return HDR_OTHER;
}

/* The request target may come in pieces (one per read); the header limit bounds it. */
static int on_url(http_parser *p, const char *at, size_t len) {
  hubu_ws *ws = p->data;
  return hubu_buf_append(&ws->url, at, len) != 0;
}

/* The target's path and query: 0, or -1 when it is not a URL. */
static int split_url(const hubu_ws *ws, const char **path, size_t *path_len, const char **query, size_t *query_len) {
  const char *at = (const char *)hubu_buf_head(&ws->url);
  size_t len = hubu_buf_size(&ws->url);
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (!len || http_parser_parse_url(at, len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) return -1;
  *path = at + u.field_data[UF_PATH].off;
  *path_len = u.field_data[UF_PATH].len;
  *query = (u.field_set & (1 << UF_QUERY)) ? at + u.field_data[UF_QUERY].off : NULL;
  *query_len = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  hubu_ws *ws = p->data;
  ws->cur = header_id(at, len); /* a name split over two reads is not one we read: treated as another */
  ws->value_mark = 0;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  hubu_ws *ws = p->data;
  if (ws->cur == HDR_OTHER || ws->cur == HDR_NONE) return 0;
  if (!ws->value_mark) {
    if (ws->have[ws->cur]) { /* repeated: joined with ", " as RFC 9110 section 5.3 allows */
      if (ws->vals[ws->cur] + ws->val_len[ws->cur] != ws->hdr.len) return 1; /* not contiguous: refuse */
      if (hubu_buf_append(&ws->hdr, ", ", 2) != 0) return 1;
      ws->val_len[ws->cur] += 2;
    } else {
      ws->have[ws->cur] = 1;
      ws->vals[ws->cur] = ws->hdr.len;
      ws->val_len[ws->cur] = 0;
    }
    ws->value_mark = 1;
  } else if (ws->vals[ws->cur] + ws->val_len[ws->cur] != ws->hdr.len) {
    return 1;
  }
  if (hubu_buf_append(&ws->hdr, at, len) != 0) return 1;
  ws->val_len[ws->cur] += len;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  hubu_ws *ws = p->data;
  ws->headers_done = 1;
  ws->cur = HDR_NONE;
  const char *path, *query;
  size_t path_len, query_len;
  ws->path_ok = split_url(ws, &path, &path_len, &query, &query_len) == 0 && path_len == 3 && !memcmp(path, "/ws", 3);
  if (ws->path_ok || !ws->http) return 1; /* no body is read: the request is answered now */
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > ws->max_body) {
    ws->body_too_big = 1;
    return 1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  hubu_ws *ws = p->data;
  if (hubu_buf_size(&ws->body) + len > ws->max_body) { /* chunked, above the limit */
    ws->body_too_big = 1;
    return 1;
  }
  return hubu_buf_append(&ws->body, at, len) != 0;
}

static int on_message_complete(http_parser *p) {
  hubu_ws *ws = p->data;
  ws->message_done = 1;
  http_parser_pause(p, 1); /* one request per connection: nothing behind it is read */
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const char *hval(const hubu_ws *ws, int id, size_t *len) {
  if (!ws->have[id]) {
    *len = 0;
    return NULL;
  }
  *len = ws->val_len[id];
  return ws->hdr.data ? (const char *)ws->hdr.data + ws->vals[id] : ""; /* every value seen so far was empty */
}

/* The next item of the comma-separated list at *s (before end), spaces
 * trimmed: its start in *item and length in *n; *s moves past it. 0 at the
 * end of the list. */
static int list_next(const char **s, const char *end, const char **item, size_t *n) {
  if (*s >= end) return 0;
  const char *comma = memchr(*s, ',', (size_t)(end - *s));
  const char *e = comma ? comma : end;
  const char *a = *s, *b = e;
  while (a < b && (*a == ' ' || *a == '\t')) a++;
  while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
  *item = a;
  *n = (size_t)(b - a);
  *s = e + (comma ? 1 : 0);
  return 1;
}

/* 1 when the comma-separated list [s, s+len) holds token (case-insensitive). */
static int list_has(const char *s, size_t len, const char *token) {
  size_t tl = strlen(token), n;
  const char *item;
  for (const char *p = s; list_next(&p, s + len, &item, &n);)
    if (n == tl && strncasecmp(item, token, tl) == 0) return 1;
  return 0;
}

static int origin_allowed(const hubu_ws *ws, const char *origin, size_t len) {
  if (!ws->origins || !origin) return 1; /* no list, or no Origin: a non-browser client */
  for (const char *s = ws->origins; *s;) {
    const char *e = strchr(s, ',');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if ((n == 1 && *s == '*') || (n == len && strncasecmp(s, origin, n) == 0)) return 1;
    s += n + (e ? 1 : 0);
  }
  return 0;
}

void hubu_ws_accept_key(const char *key, size_t key_len, char out[29]) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  char joined[128];
  if (key_len > sizeof joined - (sizeof WS_GUID - 1)) key_len = sizeof joined - (sizeof WS_GUID - 1);
  memcpy(joined, key, key_len);
  memcpy(joined + key_len, WS_GUID, sizeof WS_GUID - 1);
  if (EVP_Digest(joined, key_len + sizeof WS_GUID - 1, digest, &dlen, EVP_sha1(), NULL) != 1 || dlen != 20) {
    memset(digest, 0, 20);
  }
  EVP_EncodeBlock((unsigned char *)out, digest, 20); /* 28 characters and a NUL */
}

static const char *status_text(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
  }
  return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
}

int hubu_ws_respond(hubu_ws *ws, int status, const char *content_type, const char *extra, const void *body,
                    size_t len) {
  if (ws->answered) return 0;
  char head[768];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n%s\r\n",
                   status, status_text(status), content_type, len, extra ? extra : "");
  ws->answered = 1;
  ws->waiting = 0;
  int rc = n < 0 || (size_t)n >= sizeof head || hubu_buf_append(&ws->out, head, (size_t)n) != 0 ||
           hubu_buf_append(&ws->out, body, len) != 0;
  hubu_buf_free(&ws->body); /* after the copy: body may be the request's own */
  if (rc) {
    hubu_log(HUBU_LOG_ERROR, ws->conn_id, NULL, "out_of_memory", "where=http_answer");
    return -1;
  }
  return 0;
}

/* A refusal in plain text, logged. 1 (close once written) or -1. */
static int answer(hubu_ws *ws, int status, const char *reason, const char *extra, const char *body) {
  (void)reason;
  size_t blen = strlen(body);
  hubu_log(HUBU_LOG_INFO, ws->conn_id, NULL, "http_refused", "status=%d why=\"%.*s\"", status,
           (int)(blen && body[blen - 1] == '\n' ? blen - 1 : blen), body);
  return hubu_ws_respond(ws, status, "text/plain; charset=utf-8", extra, body, blen) == 0 ? 1 : -1;
}

/* ---- wslay callbacks ---- */

static ssize_t ev_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user_data) {
  (void)flags;
  hubu_ws *ws = user_data;
  if (!ws->in_len) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < ws->in_len ? len : ws->in_len;
  memcpy(buf, ws->in, n);
  ws->in += n;
  ws->in_len -= n;
  return (ssize_t)n;
}

static ssize_t ev_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user_data) {
  (void)flags;
  hubu_ws *ws = user_data;
  if (hubu_buf_append(&ws->out, data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static void close_with(hubu_ws *ws, uint16_t code, const char *why) {
  if (ws->closing) return;
  ws->closing = 1;
  hubu_log(HUBU_LOG_INFO, ws->conn_id, NULL, "ws_close_sent", "code=%u why=\"%s\"", code, why);
  /* a reason is at most 123 bytes (RFC 6455 section 5.5) */
  size_t n = strlen(why);
  (void)wslay_event_queue_close(ws->ev, code, (const uint8_t *)why, n > 123 ? 123 : n);
}

/* A hubu.v1.json text message: the frame made of it, or the refusal. */
static void json_message(hubu_ws *ws, const uint8_t *msg, size_t len) {
  hubu_buf frame = {0};
  uint8_t type = 0;
  char why[200];
  hubu_pbjson_frame_status st = hubu_pbjson_frame_in((const char *)msg, len, &frame, &type, why, sizeof why);
  switch (st) {
    case HUBU_PBJSON_FRAME_OK:
    case HUBU_PBJSON_FRAME_UNKNOWN_TYPE: /* an empty frame of type 0: ERROR UNSUPPORTED_TYPE, as on TCP */
      if (ws->deliver(ws->ud, hubu_buf_head(&frame), hubu_buf_size(&frame))) ws->deliver_stopped = 1;
      break;
    case HUBU_PBJSON_FRAME_BAD:
    case HUBU_PBJSON_FRAME_BAD_BODY:
      if (ws->http && ws->http->refused)
        ws->http->refused(
            ws->http_ud, st == HUBU_PBJSON_FRAME_BAD ? HUBU__V1__CODE__BAD_FRAME : HUBU__V1__CODE__BAD_BODY, type, why);
      else
        close_with(ws, HUBU_WS_CLOSE_BAD_DATA, "not a frame in the JSON form");
      break;
    case HUBU_PBJSON_FRAME_NOMEM:
      hubu_log(HUBU_LOG_ERROR, ws->conn_id, NULL, "out_of_memory", "where=ws_json");
      close_with(ws, HUBU_WS_CLOSE_GOING_AWAY, "out of memory");
      break;
  }
  hubu_buf_free(&frame);
}

static void ev_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user_data) {
  (void)ctx;
  hubu_ws *ws = user_data;
  if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
    hubu_log(HUBU_LOG_DEBUG, ws->conn_id, NULL, "ws_close_received", "code=%u", arg->status_code);
    ws->closing = 1; /* wslay answers with a close frame of its own */
    return;
  }
  if (ws->closing || ws->deliver_stopped) return;
  if (arg->opcode == WSLAY_TEXT_FRAME) {
    if (arg->msg_length && !hubu_utf8_valid((const char *)arg->msg, arg->msg_length, 0)) /* empty: msg may be NULL */
      close_with(ws, HUBU_WS_CLOSE_BAD_DATA, "text message is not UTF-8");
    else if (!ws->json)
      close_with(ws, HUBU_WS_CLOSE_UNSUPPORTED, "hubu.v1 carries binary messages only");
    else
      json_message(ws, arg->msg, arg->msg_length);
    return;
  }
  if (arg->opcode != WSLAY_BINARY_FRAME) return; /* ping and pong: wslay's */
  if (ws->json) {
    close_with(ws, HUBU_WS_CLOSE_UNSUPPORTED, "hubu.v1.json carries text messages only");
    return;
  }
  if (arg->msg_length > ws->max_message) { /* the text limit let it through */
    close_with(ws, HUBU_WS_CLOSE_TOO_BIG, "message too big");
    return;
  }
  hubu_frame_header h;
  if (arg->msg_length < HUBU_FRAME_HEADER_SIZE ||
      (hubu_frame_header_decode(arg->msg, arg->msg_length, UINT32_MAX, &h) == HUBU_FRAME_OK &&
       (size_t)h.length + HUBU_FRAME_HEADER_SIZE != arg->msg_length)) {
    close_with(ws, HUBU_WS_CLOSE_PROTOCOL, "a binary message must hold exactly one frame");
    return;
  }
  if (ws->deliver(ws->ud, arg->msg, arg->msg_length)) ws->deliver_stopped = 1;
}

static const struct wslay_event_callbacks ev_callbacks = {
    .recv_callback = ev_recv,
    .send_callback = ev_send,
    .on_msg_recv_callback = ev_msg,
};

/* ---- the upgrade ---- */

/* The subprotocol to select from the client's list (in its order of
 * preference): HUBU_WS_SUBPROTOCOL, HUBU_WS_SUBPROTOCOL_JSON, or NULL. */
static const char *pick_subprotocol(const char *s, size_t len) {
  size_t n;
  const char *a;
  for (const char *p = s; list_next(&p, s + len, &a, &n);) { /* subprotocol names are case-sensitive */
    if (n == strlen(HUBU_WS_SUBPROTOCOL) && !memcmp(a, HUBU_WS_SUBPROTOCOL, n)) return HUBU_WS_SUBPROTOCOL;
    if (n == strlen(HUBU_WS_SUBPROTOCOL_JSON) && !memcmp(a, HUBU_WS_SUBPROTOCOL_JSON, n))
      return HUBU_WS_SUBPROTOCOL_JSON;
  }
  return NULL;
}

/* A whole request for another path than /ws: handed to the connection. 0
 * (its answer comes later), 1 (answered: close once written), -1. */
static int handle_other(hubu_ws *ws) {
  if (!ws->http) return answer(ws, 404, NULL, NULL, "not found\n");
  if (ws->body_too_big) return answer(ws, 413, NULL, NULL, "request body too large\n");
  hubu_http_request req;
  memset(&req, 0, sizeof req);
  if (split_url(ws, &req.path, &req.path_len, &req.query, &req.query_len) != 0)
    return answer(ws, 400, NULL, NULL, "bad request target\n");
  req.method = ws->parser.method;
  req.authorization = hval(ws, HDR_AUTHORIZATION, &req.authorization_len);
  req.content_type = hval(ws, HDR_CONTENT_TYPE, &req.content_type_len);
  req.accept = hval(ws, HDR_ACCEPT, &req.accept_len);
  req.origin = hval(ws, HDR_ORIGIN, &req.origin_len);
  req.body = hubu_buf_head(&ws->body);
  req.body_len = hubu_buf_size(&ws->body);
  ws->waiting = 1;
  if (ws->http->request(ws->http_ud, &req) != 0) return -1;
  return ws->answered ? 1 : 0;
}

/* The upgrade request's headers are in: 101 (then messages), or an HTTP answer. 0, 1 (close), -1. */
static int handle_request(hubu_ws *ws) {
  http_parser *p = &ws->parser;
  size_t len, klen, plen, olen;
  if (!ws->path_ok) return handle_other(ws);
  if (p->method != HTTP_GET) return answer(ws, 405, "Method Not Allowed", "Allow: GET\r\n", "only GET /ws\n");
  const char *up = hval(ws, HDR_UPGRADE, &len);
  const char *conn = NULL;
  size_t clen = 0;
  conn = hval(ws, HDR_CONNECTION, &clen);
  if (!up || !list_has(up, len, "websocket") || !conn || !list_has(conn, clen, "upgrade"))
    return answer(ws, 426, "Upgrade Required", "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                  "a WebSocket upgrade is required\n");
  const char *ver = hval(ws, HDR_VERSION, &len);
  if (!ver || len != 2 || memcmp(ver, "13", 2) != 0)
    return answer(ws, 426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version must be 13\n");
  if ((p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0))
    return answer(ws, 400, "Bad Request", NULL, "an upgrade request has no body\n");
  const char *key = hval(ws, HDR_KEY, &klen);
  unsigned char raw[24];
  if (!key || klen != 24 || EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18 || key[22] != '=' ||
      key[23] != '=')
    return answer(ws, 400, "Bad Request", NULL, "Sec-WebSocket-Key must be 16 bytes in base64\n");
  const char *protos = hval(ws, HDR_PROTOCOL, &plen);
  const char *origin = hval(ws, HDR_ORIGIN, &olen);
  const char *selected = protos ? pick_subprotocol(protos, plen) : HUBU_WS_SUBPROTOCOL;
  if (!origin_allowed(ws, origin, olen)) {
    ws->refuse_code = HUBU_WS_CLOSE_POLICY;
    ws->refuse_why = "Origin not allowed";
  } else if (!selected) {
    ws->refuse_code = HUBU_WS_CLOSE_POLICY;
    ws->refuse_why = "no supported subprotocol (hubu.v1, hubu.v1.json)";
  }
  ws->json = selected && strcmp(selected, HUBU_WS_SUBPROTOCOL_JSON) == 0;
  char accept[29];
  hubu_ws_accept_key(key, klen, accept);
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                   accept, protos && selected ? "Sec-WebSocket-Protocol: " : "", protos && selected ? selected : "",
                   protos && selected ? "\r\n" : "");
  ws->answered = 1;
  if (hubu_buf_append(&ws->out, head, (size_t)n) != 0 ||
      wslay_event_context_server_init(&ws->ev, &ev_callbacks, ws) != 0) {
    hubu_log(HUBU_LOG_ERROR, ws->conn_id, NULL, "out_of_memory", "where=ws_upgrade");
    return -1;
  }
  ws->max_message = HUBU_FRAME_HEADER_SIZE + 4096;
  wslay_event_config_set_max_recv_msg_length(ws->ev, ws->json ? 2 * ws->max_message + 1024 : ws->max_message);
  ws->open = 1;
  if (ws->refuse_code) {
    hubu_log(HUBU_LOG_INFO, ws->conn_id, NULL, "ws_refused", "why=\"%s\" origin=\"%.*s\"", ws->refuse_why,
             origin ? (int)(olen > 200 ? 200 : olen) : 0, origin ? origin : "");
    hubu_buf_free(&ws->hdr);
    ws->deliver_stopped = 1;
    close_with(ws, ws->refuse_code, ws->refuse_why);
    return 1;
  }
  hubu_buf_free(&ws->hdr);
  hubu_buf_free(&ws->url);
  hubu_log(HUBU_LOG_DEBUG, ws->conn_id, NULL, "ws_open", "subprotocol=%s", selected);
  return 0;
}

/* ---- the interface ---- */

hubu_ws *hubu_ws_new(const char *origins, uint64_t conn_id) {
  hubu_ws *ws = calloc(1, sizeof *ws);
  if (!ws) return NULL;
  http_parser_init(&ws->parser, HTTP_REQUEST);
  ws->parser.data = ws;
  ws->origins = origins;
  ws->conn_id = conn_id;
  ws->max_body = 2 * HUBU_FRAME_DEFAULT_MAX + 1024;
  ws->max_message = HUBU_FRAME_HEADER_SIZE + 4096;
  return ws;
}

void hubu_ws_free(hubu_ws *ws) {
  if (!ws) return;
  if (ws->ev) wslay_event_context_free(ws->ev);
  hubu_buf_free(&ws->out);
  hubu_buf_free(&ws->hdr);
  hubu_buf_free(&ws->url);
  hubu_buf_free(&ws->body);
  free(ws);
}

void hubu_ws_set_http(hubu_ws *ws, const hubu_ws_http *http, void *ud) {
  ws->http = http;
  ws->http_ud = ud;
}

void hubu_ws_set_max_body(hubu_ws *ws, size_t max) { ws->max_body = max; }

void hubu_ws_set_max_message(hubu_ws *ws, size_t max) {
  ws->max_message = max;
  if (ws->ev) wslay_event_config_set_max_recv_msg_length(ws->ev, ws->json ? 2 * max + 1024 : max);
}

int hubu_ws_open(const hubu_ws *ws) { return ws->open; }

int hubu_ws_http_done(const hubu_ws *ws) { return !ws->open && ws->answered; }

int hubu_ws_json(const hubu_ws *ws) { return ws->json; }

static int feed_messages(hubu_ws *ws, const uint8_t *data, size_t len, hubu_ws_deliver deliver, void *ud) {
  ws->in = data;
  ws->in_len = len;
  ws->deliver = deliver;
  ws->ud = ud;
  int r = wslay_event_recv(ws->ev);
  ws->in = NULL;
  ws->in_len = 0;
  if (r != 0) {
    hubu_log(HUBU_LOG_INFO, ws->conn_id, NULL, "ws_failed", "error=%d", r);
    return -1;
  }
  if (!wslay_event_get_read_enabled(ws->ev) || ws->closing) {
    if (!ws->closing) /* wslay refused a frame and queued its close (1002, 1009, 1007) */
      hubu_log(HUBU_LOG_INFO, ws->conn_id, NULL, "ws_close_sent", "code=%u by=wslay",
               wslay_event_get_status_code_sent(ws->ev));
    ws->closing = 1;
    if (wslay_event_want_write(ws->ev) && wslay_event_send(ws->ev) != 0) return -1;
    return 1;
  }
  if (wslay_event_want_write(ws->ev) && wslay_event_send(ws->ev) != 0) return -1; /* pongs */
  return 0;
}

int hubu_ws_input(hubu_ws *ws, const uint8_t *data, size_t len, hubu_ws_deliver deliver, void *ud) {
  if (ws->open) return ws->closing ? 1 : feed_messages(ws, data, len, deliver, ud);
  if (ws->answered) return 1;
  if (ws->waiting) return 0; /* one request per connection: what follows it is not read */
  size_t off = 0, used = 0;
  while (off < len) {
    size_t n = len - off;
    if (!ws->headers_done) { /* the request line and headers are bounded; the body by max_body */
      size_t room = HUBU_WS_MAX_HEADER - ws->consumed;
      if (n > room) n = room;
    }
    int had_headers = ws->headers_done;
    used = http_parser_execute(&ws->parser, &parser_settings, (const char *)data + off, n);
    if (!had_headers) ws->consumed += used;
    off += used;
    if (HTTP_PARSER_ERRNO(&ws->parser) != HPE_OK || ws->message_done || ws->body_too_big || used < n) break;
    if (ws->headers_done && (ws->path_ok || !ws->http)) break; /* the upgrade: no body */
    if (!ws->headers_done && ws->consumed >= HUBU_WS_MAX_HEADER) break;
  }
  enum http_errno err = HTTP_PARSER_ERRNO(&ws->parser);
  if (ws->body_too_big) return answer(ws, 413, NULL, NULL, "request body too large\n");
  if (ws->headers_done && (ws->path_ok || !ws->http)) {
    int r = handle_request(ws);
    if (r != 0 || off >= len) return r;
    return feed_messages(ws, data + off, len - off, deliver, ud); /* frames right behind the request */
  }
  if (ws->message_done) return handle_other(ws);
  if (err != HPE_OK && err != HPE_PAUSED) return answer(ws, 400, "Bad Request", NULL, http_errno_description(err));
  if (!ws->headers_done && ws->consumed >= HUBU_WS_MAX_HEADER)
    return answer(ws, 431, "Request Header Fields Too Large", NULL, "request headers above 8192 bytes\n");
  return 0;
}

int hubu_ws_output(hubu_ws *ws, hubu_buf *frames, int closing, uint16_t code) {
  if (!ws->open) {
    if (ws->waiting && ws->http && ws->http->frame) { /* the request's answer is made of them */
      const uint8_t *p = hubu_buf_head(frames);
      size_t left = hubu_buf_size(frames);
      while (left >= HUBU_FRAME_HEADER_SIZE && ws->waiting) {
        size_t size = HUBU_FRAME_HEADER_SIZE + ((size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7]);
        if (size > left) break;
        ws->http->frame(ws->http_ud, p, size);
        p += size;
        left -= size;
      }
    }
    hubu_buf_free(frames); /* other frames have no place in HTTP */
    if (closing && !ws->answered) {
      if (answer(ws, ws->waiting ? 503 : 408, NULL, NULL,
                 ws->waiting ? "closed before an answer\n" : "no request in time\n") < 0)
        return -1;
    }
    return 0;
  }
  const uint8_t *p = hubu_buf_head(frames);
  size_t left = hubu_buf_size(frames);
  while (left >= HUBU_FRAME_HEADER_SIZE && !ws->closing) {
    size_t size = HUBU_FRAME_HEADER_SIZE + ((size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7]);
    if (size > left) break; /* not a whole frame: cannot happen, frames are appended whole */
    int rc;
    if (ws->json) { /* wslay copies the message: the text is freed here */
      hubu_buf text = {0};
      rc = hubu_pbjson_frame_out(p, size, &text);
      struct wslay_event_msg m = {
          .opcode = WSLAY_TEXT_FRAME, .msg = hubu_buf_head(&text), .msg_length = hubu_buf_size(&text)};
      if (rc == 0) rc = wslay_event_queue_msg(ws->ev, &m);
      hubu_buf_free(&text);
    } else {
      struct wslay_event_msg m = {.opcode = WSLAY_BINARY_FRAME, .msg = p, .msg_length = size};
      rc = wslay_event_queue_msg(ws->ev, &m);
    }
    if (rc != 0) {
      hubu_log(HUBU_LOG_ERROR, ws->conn_id, NULL, "out_of_memory", "where=ws_queue");
      hubu_buf_free(frames);
      return -1;
    }
    p += size;
    left -= size;
  }
  hubu_buf_free(frames);
  /* wslay sends control frames ahead of queued messages: the messages go
   * out first, then the close */
  int r = wslay_event_want_write(ws->ev) ? wslay_event_send(ws->ev) : 0;
  if (r == 0 && closing && !ws->closing) {
    close_with(ws, code, code == HUBU_WS_CLOSE_GOING_AWAY ? "going away" : "closing");
    r = wslay_event_want_write(ws->ev) ? wslay_event_send(ws->ev) : 0;
  }
  if (r != 0) {
    hubu_log(HUBU_LOG_ERROR, ws->conn_id, NULL, "out_of_memory", "where=ws_send");
    return -1;
  }
  return 0;
}

size_t hubu_ws_output_pending(const hubu_ws *ws) { return hubu_buf_size(&ws->out); }

void hubu_ws_take_output(hubu_ws *ws, hubu_buf *out) {
  *out = ws->out;
  memset(&ws->out, 0, sizeof ws->out);
}

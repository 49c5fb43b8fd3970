/* http_api.c — requests of the HTTP listener other than /ws (see
 * http_api.h). What a request may hold is bounded before it gets here (ws.c:
 * headers, body); every answer closes the connection. */
#include "http_api.h"

#include <http_parser.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "conn.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "log.h"
#include "pbjson.h"
#include "pct.h"
#include "server.h"
#include "store.h"
#include "token.h"
#include "web.h"
#include "wire.h"

#define JSON_TYPE "application/json"
#define PROTOBUF_TYPE "application/x-protobuf"
#define DEV_TOKEN_TTL_S (24 * 3600)
#define DEFAULT_DEVICE "http"

int hubu_http_status_of(int code) {
  switch (code) {
    case HUBU__V1__CODE__OK: return 200;
    case HUBU__V1__CODE__INVALID:
    case HUBU__V1__CODE__BAD_BODY: return 400;
    case HUBU__V1__CODE__UNAUTHENTICATED: return 401;
    case HUBU__V1__CODE__FORBIDDEN: return 403;
    case HUBU__V1__CODE__NOT_FOUND: return 404;
    case HUBU__V1__CODE__REJECTED:
    case HUBU__V1__CODE__STALE: return 409;
    case HUBU__V1__CODE__FRAME_TOO_LARGE: return 413;
    case HUBU__V1__CODE__RATE_LIMITED: return 429;
    case HUBU__V1__CODE__UNAVAILABLE:
    case HUBU__V1__CODE__SHUTTING_DOWN: return 503;
  }
  return 500;
}

/* ---- small helpers ---- */

static int has_token(const char *s, size_t len, const char *tok) {
  size_t n = strlen(tok);
  for (size_t i = 0; s && i + n <= len; i++)
    if (strncasecmp(s + i, tok, n) == 0) return 1;
  return 0;
}

static int path_is(const hubu_http_request *r, const char *p) {
  return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static int path_starts(const hubu_http_request *r, const char *p) {
  size_t n = strlen(p);
  return r->path_len > n && memcmp(r->path, p, n) == 0;
}

/* The value of name in the query string, decoded into out. 1 when present,
 * 0 when not, -1 when it does not decode. */
static int query_get(const hubu_http_request *r, const char *name, char *out, size_t out_size) {
  const char *s = r->query, *end = r->query + r->query_len;
  size_t n = strlen(name);
  while (s && s < end) {
    const char *amp = memchr(s, '&', (size_t)(end - s));
    const char *e = amp ? amp : end;
    if ((size_t)(e - s) > n && s[n] == '=' && !memcmp(s, name, n))
      return hubu_pct_decode(s + n + 1, (size_t)(e - s - n - 1), out, out_size) == 0 ? 1 : -1;
    s = e + 1;
  }
  return 0;
}

static int query_u64(const hubu_http_request *r, const char *name, uint64_t *v) {
  char buf[32];
  int got = query_get(r, name, buf, sizeof buf);
  if (got <= 0) return got;
  char *end;
  if (!buf[0] || buf[0] == '-') return -1;
  unsigned long long x = strtoull(buf, &end, 10);
  if (*end) return -1;
  *v = x;
  return 1;
}

/* ---- answers ---- */

/* Is the answer protobuf? Accept decides; without one (or with any type), the request's Content-Type. */
static int wants_protobuf(const hubu_http_request *r) {
  if (r->accept && has_token(r->accept, r->accept_len, PROTOBUF_TYPE)) return 1;
  if (r->accept && has_token(r->accept, r->accept_len, JSON_TYPE)) return 0;
  return r->content_type && has_token(r->content_type, r->content_type_len, PROTOBUF_TYPE);
}

/* Answers with msg (the result message) in the request's format, the status
 * from code, and Retry-After for retry_after_ms. */
static void answer_message(hubu_conn *c, const ProtobufCMessage *msg, int code, uint32_t retry_after_ms) {
  hubu_buf body = {0};
  int rc;
  if (c->api_protobuf) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = hubu_buf_reserve(&body, n ? n : 1);
    rc = p ? 0 : -1;
    if (p) body.len += protobuf_c_message_pack(msg, p);
  } else {
    rc = hubu_pbjson_write(&body, msg);
  }
  char extra[64] = "";
  int status = hubu_http_status_of(code);
  if (retry_after_ms || status == 429)
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry_after_ms ? (retry_after_ms + 999) / 1000 : 1);
  if (rc == 0)
    rc = hubu_ws_respond(c->ws, status, c->api_protobuf ? PROTOBUF_TYPE : JSON_TYPE, extra, hubu_buf_head(&body),
                         hubu_buf_size(&body));
  else
    hubu_log(HUBU_LOG_ERROR, c->peer.id, c->peer.user, "out_of_memory", "where=http_answer");
  hubu_buf_free(&body);
  if (code != HUBU__V1__CODE__OK)
    hubu_log(HUBU_LOG_DEBUG, c->peer.id, c->peer.user, "http_answer", "status=%d code=%s", status,
             hubu_code_name((Hubu__V1__Code)code));
}

/* The result message the request waits for (c->api_type), made with code and
 * reason (where the message has one) and, for a pull, the session. */
static void answer_code(hubu_conn *c, int code, const char *reason, const char *session_id) {
  const ProtobufCMessageDescriptor *d = hubu_pbjson_frame_descriptor(c->api_type);
  if (!d) d = &hubu__v1__error__descriptor;
  union {
    Hubu__V1__SendAck send;
    Hubu__V1__PullResult pull;
    Hubu__V1__SyncResult sync;
    Hubu__V1__CallResult call;
    Hubu__V1__Error error;
  } m;
  protobuf_c_message_init(d, &m);
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "code");
  if (f) *(int *)((char *)&m + f->offset) = code;
  f = protobuf_c_message_descriptor_get_field_by_name(d, "reason");
  if (!f) f = protobuf_c_message_descriptor_get_field_by_name(d, "message");
  if (f && reason) *(const char **)((char *)&m + f->offset) = reason;
  f = protobuf_c_message_descriptor_get_field_by_name(d, "session_id");
  if (f && session_id) *(const char **)((char *)&m + f->offset) = session_id;
  answer_message(c, (const ProtobufCMessage *)&m, code, 0);
}

static void answer_text(hubu_conn *c, int status, const char *text) {
  hubu_ws_respond(c->ws, status, "text/plain; charset=utf-8", NULL, text, strlen(text));
}

/* ---- frames while the request waits ---- */

void hubu_http_api_frame(hubu_conn *c, const uint8_t *frame, size_t len) {
  uint8_t type = frame[2];
  const uint8_t *body = frame + HUBU_FRAME_HEADER_SIZE;
  size_t blen = len - HUBU_FRAME_HEADER_SIZE;
  if (type == HUBU_FRAME_ERROR || type == HUBU_FRAME_GOAWAY) { /* the HELLO refused, a bad request, the drain */
    int code = HUBU__V1__CODE__INTERNAL;
    char reason[256] = "";
    if (type == HUBU_FRAME_ERROR) {
      Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, blen, body);
      if (e) {
        code = e->code;
        snprintf(reason, sizeof reason, "%s", e->message);
        hubu__v1__error__free_unpacked(e, NULL);
      }
    } else {
      Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, blen, body);
      if (g) {
        code = g->code;
        snprintf(reason, sizeof reason, "%s", g->reason);
        hubu__v1__go_away__free_unpacked(g, NULL);
      }
    }
    answer_code(c, code, reason, NULL);
    return;
  }
  if (type != c->api_type) return; /* HELLO_OK, a PING: not the answer */
  const ProtobufCMessageDescriptor *d = hubu_pbjson_frame_descriptor(type);
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, blen, body);
  if (!m) {
    answer_code(c, HUBU__V1__CODE__INTERNAL, "answer does not decode", NULL);
    return;
  }
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "code");
  int code = f ? *(int *)((char *)m + f->offset) : HUBU__V1__CODE__OK;
  uint32_t retry = type == HUBU_FRAME_SEND_ACK ? ((Hubu__V1__SendAck *)m)->retry_after_ms : 0;
  answer_message(c, m, code, retry);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- the API ---- */

/* The user a bearer token speaks for: "v1.<user>.<expiry>.<mac>" (or a
 * reserved user's "v1r."), split from the right. */
static int token_user(const char *tok, size_t len, char *user, size_t user_size) {
  size_t pre = len > 4 && !memcmp(tok, HUBU_TOKEN_RESERVED_PREFIX, 4) ? 4 : 3;
  if (len < pre + 5 || (pre == 3 && memcmp(tok, "v1.", 3) != 0)) return -1;
  const char *mac = memrchr(tok, '.', len);
  if (!mac || mac <= tok + pre) return -1;
  const char *exp = memrchr(tok, '.', (size_t)(mac - tok));
  if (!exp || exp <= tok + pre) return -1;
  size_t n = (size_t)(exp - tok - pre);
  if (!n || n >= user_size) return -1;
  memcpy(user, tok + pre, n);
  user[n] = 0;
  return 0;
}

/* The request's body as wire bytes of d: protobuf as it is, JSON converted. 0,
 * or -1 (answered). */
static int body_wire(hubu_conn *c, const hubu_http_request *r, const ProtobufCMessageDescriptor *d, hubu_buf *out) {
  if (r->content_type && has_token(r->content_type, r->content_type_len, PROTOBUF_TYPE)) {
    if (r->body_len && hubu_buf_append(out, r->body, r->body_len) != 0) return -1;
    return 0;
  }
  if (r->content_type && !has_token(r->content_type, r->content_type_len, JSON_TYPE)) {
    answer_code(c, HUBU__V1__CODE__BAD_BODY, "Content-Type must be application/json or application/x-protobuf", NULL);
    return -1;
  }
  if (!r->body_len) return 0; /* no body: every field at its default */
  char why[200];
  int rc = hubu_pbjson_parse(d, (const char *)r->body, r->body_len, out, why, sizeof why);
  if (rc == -1) answer_code(c, HUBU__V1__CODE__BAD_BODY, why, NULL);
  if (rc == -2) answer_code(c, HUBU__V1__CODE__INTERNAL, "out of memory", NULL);
  return rc ? -1 : 0;
}

static int append_frame(hubu_buf *out, uint8_t type, const uint8_t *body, size_t len) {
  uint8_t *p = hubu_buf_reserve(out, HUBU_FRAME_HEADER_SIZE + len);
  if (!p) return -1;
  hubu_frame_header_encode(p, type, 0, (uint32_t)len);
  if (len) memcpy(p + HUBU_FRAME_HEADER_SIZE, body, len);
  out->len += HUBU_FRAME_HEADER_SIZE + len;
  return 0;
}

static void api_request(hubu_conn *c, const hubu_http_request *r) {
  const hubu_net_config *cfg = c->server->cfg;
  uint8_t type; /* the request frame */
  int method = HTTP_POST;
  char target[256] = ""; /* the session (pull) or method (call) from the path */
  if (path_is(r, "/v1/messages")) {
    type = HUBU_FRAME_SEND;
  } else if (path_is(r, "/v1/sync")) {
    type = HUBU_FRAME_SYNC;
  } else if (path_starts(r, "/v1/calls/")) {
    type = HUBU_FRAME_CALL;
    if (hubu_pct_decode(r->path + 10, r->path_len - 10, target, sizeof target) != 0 || !target[0]) {
      c->api_type = HUBU_FRAME_CALL_RESULT;
      answer_code(c, HUBU__V1__CODE__INVALID, "bad method name in the path", NULL);
      return;
    }
  } else if (path_starts(r, "/v1/sessions/") && r->path_len > 22 &&
             !memcmp(r->path + r->path_len - 9, "/messages", 9)) {
    type = HUBU_FRAME_PULL;
    method = HTTP_GET;
    if (hubu_pct_decode(r->path + 13, r->path_len - 13 - 9, target, sizeof target) != 0 || !target[0]) {
      c->api_type = HUBU_FRAME_PULL_RESULT;
      answer_code(c, HUBU__V1__CODE__INVALID, "bad session id in the path", NULL);
      return;
    }
  } else {
    answer_text(c, 404, "not found\n");
    return;
  }
  c->api_type =
      (uint8_t)(type + 1); /* SEND -> SEND_ACK, SYNC -> SYNC_RESULT, PULL -> PULL_RESULT, CALL -> CALL_RESULT */
  if (r->method != method) {
    const char *allow = method == HTTP_GET ? "Allow: GET\r\n" : "Allow: POST\r\n";
    hubu_ws_respond(c->ws, 405, "text/plain; charset=utf-8", allow, "method not allowed\n", 19);
    return;
  }
  /* who: the bearer token, and the user it names (or ?user_id= for an auth plugin's tokens) */
  const char *tok = NULL;
  size_t tok_len = 0;
  if (r->authorization && r->authorization_len > 7 && !strncasecmp(r->authorization, "Bearer ", 7)) {
    tok = r->authorization + 7;
    tok_len = r->authorization_len - 7;
    while (tok_len && *tok == ' ') tok++, tok_len--;
  }
  char user[80], device[80], token[4096];
  int got_user = query_get(r, "user_id", user, sizeof user);
  if (!tok || !tok_len || tok_len >= sizeof token) {
    answer_code(c, HUBU__V1__CODE__UNAUTHENTICATED, "an Authorization: Bearer token is required", NULL);
    return;
  }
  memcpy(token, tok, tok_len);
  token[tok_len] = 0;
  if (got_user < 0 || (got_user == 0 && token_user(token, tok_len, user, sizeof user) != 0)) {
    answer_code(c, HUBU__V1__CODE__UNAUTHENTICATED, "the token names no user (give ?user_id=)", NULL);
    return;
  }
  int got_device = query_get(r, "device_id", device, sizeof device);
  if (got_device < 0) {
    answer_code(c, HUBU__V1__CODE__INVALID, "bad device_id", NULL);
    return;
  }
  if (!got_device) snprintf(device, sizeof device, "%s", DEFAULT_DEVICE);

  hubu_buf frames = {0}, body = {0};
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = user;
  h.device_id = device;
  h.token = token;
  h.client_info = "http";
  int rc = hubu_wire_append(&frames, HUBU_FRAME_HELLO, &h.base);
  switch (type) {
    case HUBU_FRAME_SEND:
    case HUBU_FRAME_SYNC:
      if (body_wire(c, r, hubu_pbjson_frame_descriptor(type), &body) != 0) goto done;
      rc |= append_frame(&frames, type, hubu_buf_head(&body), hubu_buf_size(&body));
      break;
    case HUBU_FRAME_PULL: {
      Hubu__V1__PullRequest p = HUBU__V1__PULL_REQUEST__INIT;
      uint64_t after = 0, limit = 0;
      if (query_u64(r, "after", &after) < 0 || query_u64(r, "limit", &limit) < 0 || limit > UINT32_MAX) {
        answer_code(c, HUBU__V1__CODE__INVALID, "after and limit must be decimal integers", target);
        goto done;
      }
      p.request_id = 1;
      p.session_id = target;
      p.after_seq = after;
      p.limit = (uint32_t)limit;
      rc |= hubu_wire_append(&frames, HUBU_FRAME_PULL, &p.base);
      break;
    }
    case HUBU_FRAME_CALL: {
      Hubu__V1__Call call = HUBU__V1__CALL__INIT;
      call.request_id = 1;
      call.method = target;
      call.payload.data = (uint8_t *)r->body;
      call.payload.len = r->body_len;
      rc |= hubu_wire_append(&frames, HUBU_FRAME_CALL, &call.base);
      break;
    }
  }
  if (rc) {
    hubu_log(HUBU_LOG_ERROR, c->peer.id, NULL, "out_of_memory", "where=http_api");
    answer_code(c, HUBU__V1__CODE__INTERNAL, "out of memory", NULL);
    goto done;
  }
  (void)cfg;
  c->peer.transient = 1;
  hubu_conn_feed(c, hubu_buf_head(&frames), hubu_buf_size(&frames)); /* HELLO, then the request once HELLO_OK is out */
done:
  hubu_buf_free(&frames);
  hubu_buf_free(&body);
}

/* POST /v1/dev/token {"userId": "alice"}: a token for anyone, on a development server only. */
static void dev_token(hubu_conn *c, const hubu_http_request *r) {
  const hubu_net_config *cfg = c->server->cfg;
  if (!cfg->dev_login) {
    answer_text(c, 404, "not found (hubud --dev-login on serves it)\n");
    return;
  }
  if (r->method != HTTP_POST) {
    hubu_ws_respond(c->ws, 405, "text/plain; charset=utf-8", "Allow: POST\r\n", "method not allowed\n", 19);
    return;
  }
  json_error_t err;
  json_t *root = json_loadb((const char *)r->body, r->body_len, 0, &err);
  json_t *u = root ? json_object_get(root, "userId") : NULL;
  if (!u && root) u = json_object_get(root, "user_id");
  char token[HUBU_TOKEN_MAX];
  const char *user = u && json_is_string(u) ? json_string_value(u) : NULL;
  uint64_t expiry = hubu_now_ms() / 1000 + DEV_TOKEN_TTL_S;
  if (!user || !hubu_id_valid(user, strlen(user)) ||
      hubu_token_mint(cfg->secret, cfg->secret_len, user, expiry, token, sizeof token) < 0) {
    const char *bad = "{\"error\":\"want {\\\"userId\\\": ID}, ID 1-64 bytes of [A-Za-z0-9_.@-]\"}";
    hubu_ws_respond(c->ws, 400, JSON_TYPE, NULL, bad, strlen(bad));
  } else {
    char out[HUBU_TOKEN_MAX + 160];
    int n = snprintf(out, sizeof out, "{\"userId\":\"%s\",\"token\":\"%s\",\"expiresAt\":\"%llu\"}", user, token,
                     (unsigned long long)expiry);
    hubu_log(HUBU_LOG_INFO, c->peer.id, user, "dev_token", "ttl_s=%d", DEV_TOKEN_TTL_S);
    hubu_ws_respond(c->ws, 200, JSON_TYPE, NULL, out, (size_t)n);
  }
  json_decref(root);
}

static void healthz(hubu_conn *c) {
  char text[256];
  int status = hubu_server_health(c->server, text, sizeof text);
  answer_text(c, status, text);
}

static void static_file(hubu_conn *c, const hubu_http_request *r) {
  if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
    hubu_ws_respond(c->ws, 405, "text/plain; charset=utf-8", "Allow: GET\r\n", "method not allowed\n", 19);
    return;
  }
  const unsigned char *data;
  size_t len;
  unsigned char *owned = NULL;
  const char *type;
  if (hubu_web_find(c->server->cfg->web_root, r->path, r->path_len, &data, &len, &owned, &type) != 0) {
    answer_text(c, 404, "not found\n");
    return;
  }
  hubu_ws_respond(c->ws, 200, type, "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n", data,
                  r->method == HTTP_HEAD ? 0 : len);
  free(owned);
}

int hubu_http_api_request(hubu_conn *c, const hubu_http_request *r) {
  c->api_protobuf = wants_protobuf(r);
  if (path_is(r, "/healthz"))
    healthz(c);
  else if (path_is(r, "/v1/dev/token"))
    dev_token(c, r);
  else if (path_starts(r, "/v1/"))
    api_request(c, r);
  else
    static_file(c, r);
  return 0;
}

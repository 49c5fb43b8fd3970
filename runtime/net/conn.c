/* conn.c — one connection's life: bytes in (through TLS when enabled, or
 * WebSocket messages on the HTTP listener, ws.c), frames
 * out of them, replies queued and written once per loop turn, and a close that
 * lets the last ERROR or GOAWAY reach the peer before the FIN.
 * Invariants: nothing is freed before the handle's close callback, so a
 * connection destroyed inside a callback stays valid until that callback
 * returns; no frame is dispatched while the output is above
 * --write-queue-max, so what one connection holds is bounded by that plus one
 * answer and one read. */
#include "conn.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "delivery.h"
#include "frame.h"
#include "host.h"
#include "http_api.h"
#include "log.h"
#include "messaging.h"
#include "proxy_proto.h"
#include "server.h"
#include "token.h"
#include "wire.h"

#define LINGER_MS 2000   /* how long a closing connection waits for the peer's FIN */
#define MAX_BAD_BODIES 5 /* undecodable bodies tolerated on one connection */

/* One write in flight; owns the bytes it writes. */
typedef struct {
  uv_write_t req;
  hubu_conn *conn;
  hubu_buf bytes;
} write_req;

static void begin_close(hubu_conn *c);
static const hubu_peer_ops conn_peer_ops;

static void on_close(uv_handle_t *h) {
  hubu_conn *c = (hubu_conn *)h;
  hubu_buf_free(&c->rbuf);
  hubu_buf_free(&c->wbuf);
  hubu_tls_free(c->tls);
  hubu_ws_free(c->ws);
  free(c->remote);
  free(c->peer.user);
  free(c);
}

void hubu_conn_destroy(hubu_conn *c) {
  if (c->peer.state == HUBU_PEER_CLOSED) return;
  c->peer.state = HUBU_PEER_CLOSED;
  hubu_messaging_peer_closed(&c->peer);
  hubu_server_forget(c->server, c);
  uv_close((uv_handle_t *)&c->tcp, on_close);
  hubu_log(HUBU_LOG_DEBUG, c->peer.id, c->peer.user, "conn_closed", NULL);
}

void hubu_conn_drop(hubu_conn *c, Hubu__V1__Code code, const char *reason, int goaway) {
  if (c->peer.state == HUBU_PEER_CLOSED) return;
  if (c->peer.state < HUBU_PEER_CLOSING && !c->tls && !c->ws && !c->writing && !hubu_buf_size(&c->wbuf)) {
    /* best effort: only what the socket takes now */
    hubu_buf last = {0};
    if (goaway)
      hubu_wire_append_goaway(&last, code, reason, 1000);
    else
      hubu_wire_append_error(&last, code, reason, 0);
    if (hubu_buf_size(&last)) {
      uv_buf_t b = uv_buf_init((char *)hubu_buf_head(&last), (unsigned)hubu_buf_size(&last));
      (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    hubu_buf_free(&last);
  }
  hubu_conn_destroy(c);
}

int hubu_conn_send(hubu_conn *c, uint8_t type, const ProtobufCMessage *msg) {
  if (c->peer.state >= HUBU_PEER_CLOSING) return -1;
  if (hubu_wire_append(&c->wbuf, type, msg) != 0) return -1;
  hubu_server_mark_dirty(c->server, c);
  return 0;
}

/* ERROR that leaves the connection open. */
static void send_error(hubu_conn *c, Hubu__V1__Code code, const char *message, uint8_t frame_type) {
  if (c->peer.state >= HUBU_PEER_CLOSING) return;
  hubu_log(HUBU_LOG_INFO, c->peer.id, c->peer.user, "frame_error", "code=%s type=0x%02x detail=\"%s\"",
           hubu_code_name(code), frame_type, message);
  hubu_wire_append_error(&c->wbuf, code, message, frame_type);
  hubu_server_mark_dirty(c->server, c);
}

/* ERROR, then close. */
static void error_close(hubu_conn *c, Hubu__V1__Code code, const char *message, uint8_t frame_type) {
  send_error(c, code, message, frame_type);
  begin_close(c);
}

void hubu_conn_goaway(hubu_conn *c, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms) {
  if (c->peer.state >= HUBU_PEER_CLOSING) return;
  hubu_log(HUBU_LOG_DEBUG, c->peer.id, c->peer.user, "goaway", "code=%s reason=\"%s\"", hubu_code_name(code), reason);
  hubu_wire_append_goaway(&c->wbuf, code, reason, reconnect_after_ms);
  begin_close(c);
}

static void start_reading(hubu_conn *c);

/* Output queued for the peer: handed to writes, or waiting for this turn's flush. */
static size_t output_queued(const hubu_conn *c) { return c->writing + hubu_buf_size(&c->wbuf); }

/* Backpressure: the output went above --write-queue-max. No frame is read or
 * dispatched until it drains below half; the stall clock starts. */
static void pause_output(hubu_conn *c) {
  if (!c->output_paused) {
    c->output_paused = 1;
    c->paused_since_ms = uv_now(c->server->loop);
  }
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* The output drained below half of --write-queue-max: the input held back is
 * processed and reading resumes. 1 when it resumed. */
static int resume_output(hubu_conn *c) {
  if (!c->output_paused || c->peer.state != HUBU_PEER_READY || output_queued(c) > c->server->cfg->write_queue_max / 2)
    return 0;
  c->output_paused = 0;
  c->paused_since_ms = 0;
  hubu_conn_resume_input(c);
  return 1;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status; /* a failed FIN only shortens the linger: the sweep closes it */
  free(req);
}

static void maybe_shutdown(hubu_conn *c) {
  if (c->peer.state != HUBU_PEER_CLOSING || c->shut_down || c->writing || hubu_buf_size(&c->wbuf)) return;
  if (c->tls && hubu_tls_output_pending(c->tls)) return;
  uv_shutdown_t *req = malloc(sizeof *req);
  if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    hubu_conn_destroy(c);
    return;
  }
  c->shut_down = 1;
}

static void on_write(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  hubu_conn *c = w->conn;
  c->writing -= hubu_buf_size(&w->bytes);
  hubu_buf_free(&w->bytes);
  free(w);
  if (c->peer.state == HUBU_PEER_CLOSED) return;
  if (status < 0) {
    hubu_log(HUBU_LOG_DEBUG, c->peer.id, c->peer.user, "write_failed", "error=\"%s\"", uv_strerror(status));
    hubu_conn_destroy(c);
    return;
  }
  if (hubu_buf_size(&c->wbuf) || c->peer.hints) hubu_server_mark_dirty(c->server, c);
  resume_output(c);
  if (c->peer.state == HUBU_PEER_CLOSED) return;
  maybe_shutdown(c);
}

static void flush_once(hubu_conn *c);

void hubu_conn_flush(hubu_conn *c) {
  flush_once(c);
  /* The socket took everything while input was held for backpressure: go on
   * with that input now (its answers are written here, not a turn later). */
  while (c->peer.state == HUBU_PEER_READY && c->output_paused && !c->writing && resume_output(c) &&
         c->peer.state == HUBU_PEER_READY && hubu_buf_size(&c->wbuf))
    flush_once(c);
}

static void flush_once(hubu_conn *c) {
  if (c->peer.state == HUBU_PEER_CLOSED) return;
  const hubu_net_config *cfg = c->server->cfg;
  int reads_wait = c->peer.reads_unanswered >= HUBU_MAX_PENDING_READS; /* its SYNCs and PULLs still in the store */
  if (c->input_paused && !reads_wait && c->peer.state == HUBU_PEER_READY &&
      c->peer.sends_unanswered <= cfg->max_pending_sends / 2 &&
      c->peer.send_bytes_held <= cfg->max_pending_send_bytes / 2) {
    c->input_paused = 0;
    hubu_conn_resume_input(c);
    if (c->peer.state == HUBU_PEER_CLOSED) return;
  }
  if (c->peer.hints && c->writing <= cfg->write_queue_max)
    hubu_delivery_write_hints(&c->peer); /* else they wait, coalesced */
  hubu_peer_output_taken(&c->peer);      /* the next push opens a new frame */
  hubu_buf out = {0};
  if (c->tls) {
    if (c->ws && hubu_tls_handshake_done(c->tls)) { /* frames -> WebSocket messages or an HTTP answer -> TLS */
      if (hubu_ws_output(c->ws, &c->wbuf, c->peer.state >= HUBU_PEER_CLOSING,
                         c->server->draining ? HUBU_WS_CLOSE_GOING_AWAY : HUBU_WS_CLOSE_NORMAL) != 0) {
        hubu_conn_destroy(c);
        return;
      }
      if (hubu_ws_http_done(c->ws)) begin_close(c);
      hubu_ws_take_output(c->ws, &c->wbuf);
    }
    if (hubu_buf_size(&c->wbuf) && hubu_tls_handshake_done(c->tls)) {
      if (hubu_tls_write(c->tls, hubu_buf_head(&c->wbuf), hubu_buf_size(&c->wbuf)) != 0) {
        hubu_log(HUBU_LOG_WARN, c->peer.id, c->peer.user, "tls_write_failed", NULL);
        hubu_conn_destroy(c);
        return;
      }
      hubu_buf_free(&c->wbuf);
    }
    size_t pending;
    while ((pending = hubu_tls_output_pending(c->tls)) > 0) {
      uint8_t *w = hubu_buf_reserve(&out, pending);
      if (!w) break;
      out.len += hubu_tls_take_output(c->tls, w, pending);
    }
  } else if (c->ws) {
    if (hubu_ws_output(c->ws, &c->wbuf, c->peer.state >= HUBU_PEER_CLOSING,
                       c->server->draining ? HUBU_WS_CLOSE_GOING_AWAY : HUBU_WS_CLOSE_NORMAL) != 0) {
      hubu_conn_destroy(c);
      return;
    }
    if (hubu_ws_http_done(c->ws)) begin_close(c); /* an HTTP answer: the connection ends with it */
    hubu_ws_take_output(c->ws, &out);
  } else {
    out = c->wbuf; /* move */
    memset(&c->wbuf, 0, sizeof c->wbuf);
  }
  if (hubu_buf_size(&out)) {
    uv_buf_t b = uv_buf_init((char *)hubu_buf_head(&out), (unsigned)hubu_buf_size(&out));
    if (!c->writing) {
      int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
      if (n < 0 && n != UV_EAGAIN) {
        hubu_buf_free(&out);
        hubu_log(HUBU_LOG_DEBUG, c->peer.id, c->peer.user, "write_failed", "error=\"%s\"", uv_strerror(n));
        hubu_conn_destroy(c);
        return;
      }
      if (n > 0) hubu_buf_consume(&out, (size_t)n);
    }
    if (hubu_buf_size(&out)) {
      write_req *w = malloc(sizeof *w);
      if (!w) {
        hubu_buf_free(&out);
        hubu_log(HUBU_LOG_ERROR, c->peer.id, c->peer.user, "out_of_memory", "where=write");
        hubu_conn_destroy(c);
        return;
      }
      w->conn = c;
      w->bytes = out;
      b = uv_buf_init((char *)hubu_buf_head(&w->bytes), (unsigned)hubu_buf_size(&w->bytes));
      int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
      if (r != 0) {
        hubu_buf_free(&w->bytes);
        free(w);
        hubu_conn_destroy(c);
        return;
      }
      c->writing += hubu_buf_size(&w->bytes);
      if (c->peer.state == HUBU_PEER_READY && c->writing > c->server->cfg->write_queue_max)
        pause_output(c); /* the peer is not reading */
    }
  }
  maybe_shutdown(c);
}

static void begin_close(hubu_conn *c) {
  if (c->peer.state >= HUBU_PEER_CLOSING) return;
  if (c->tls && !hubu_tls_handshake_done(c->tls)) { /* nothing can reach the peer before the handshake */
    hubu_conn_destroy(c);
    return;
  }
  c->peer.state = HUBU_PEER_CLOSING;
  c->state_since_ms = uv_now(c->server->loop); /* one that never logged in stays droppable (server->waiting) */
  c->output_paused = 0;
  hubu_buf_free(&c->rbuf);
  if (!c->reading) start_reading(c); /* to see the peer's FIN */
  hubu_server_mark_dirty(c->server, c);
}

void hubu_conn_bad_body(hubu_conn *c, uint8_t type) {
  char why[96];
  snprintf(why, sizeof why, "%s body does not decode", hubu_frame_type_name(type));
  if (++c->bad_bodies >= MAX_BAD_BODIES) {
    error_close(c, HUBU__V1__CODE__BAD_BODY, "too many undecodable bodies", type);
    return;
  }
  send_error(c, HUBU__V1__CODE__BAD_BODY, why, type);
}

static void handle_hello(hubu_conn *c, const uint8_t *body, size_t len) {
  hubu_server *s = c->server;
  Hubu__V1__Hello *h = hubu__v1__hello__unpack(NULL, len, body);
  if (!h) {
    error_close(c, HUBU__V1__CODE__BAD_BODY, "HELLO body does not decode", HUBU_FRAME_HELLO);
    return;
  }
  if (!hubu_wire_strings_ok(&hubu__v1__hello__descriptor, body, len)) {
    /* protobuf-c would hand on "alice\0junk" as "alice" */
    error_close(c, HUBU__V1__CODE__INVALID, "HELLO strings must be UTF-8 without NUL", HUBU_FRAME_HELLO);
    hubu__v1__hello__free_unpacked(h, NULL);
    return;
  }
  size_t ulen = strlen(h->user_id), dlen = strlen(h->device_id);
  if (h->protocol_version > HUBU_FRAME_VERSION) {
    error_close(c, HUBU__V1__CODE__UNSUPPORTED_VERSION, "this server speaks protocol version 1", HUBU_FRAME_HELLO);
  } else if (!hubu_id_valid(h->user_id, ulen)) {
    error_close(c, HUBU__V1__CODE__INVALID, "user_id must be 1-64 bytes of [A-Za-z0-9_.@-]", HUBU_FRAME_HELLO);
  } else if (!hubu_id_valid(h->device_id, dlen)) {
    error_close(c, HUBU__V1__CODE__INVALID, "device_id must be 1-64 bytes of [A-Za-z0-9_.@-]", HUBU_FRAME_HELLO);
  } else {
    char as[65], why[256];
    const char *refused = NULL;
    int verdict = hubu_plugins_on_auth(s->plugins, h->user_id, h->device_id, h->token, h->client_info, as, sizeof as,
                                       why, sizeof why);
    if (verdict < 0) { /* no auth plugin: the token scheme of PROTOCOL.md section 6 */
      hubu_token_status st = hubu_token_verify(s->cfg->secret, s->cfg->secret_len, h->token, strlen(h->token),
                                               h->user_id, hubu_now_ms() / 1000);
      if (st != HUBU_TOKEN_OK) refused = st == HUBU_TOKEN_EXPIRED ? "token expired" : "invalid token";
      snprintf(why, sizeof why, "%s", hubu_token_status_name(st));
    } else if (verdict == 0) {
      refused = why;
    } else if (strcmp(as, h->user_id) != 0) { /* the plugin mapped the login to another user */
      ulen = strlen(as);
      free(h->user_id);
      h->user_id = strdup(as);
      if (!h->user_id) refused = "out of memory";
    }
    if (refused) {
      hubu_log(HUBU_LOG_INFO, c->peer.id, h->user_id, "hello_refused", "device=%s reason=\"%s\"", h->device_id, why);
      send_error(c, HUBU__V1__CODE__UNAUTHENTICATED, refused, HUBU_FRAME_HELLO);
      begin_close(c);
    } else if (!(c->peer.user = malloc(ulen + dlen + 2))) {
      hubu_log(HUBU_LOG_ERROR, c->peer.id, NULL, "out_of_memory", "where=hello");
      error_close(c, HUBU__V1__CODE__INTERNAL, "out of memory", HUBU_FRAME_HELLO);
    } else {
      memcpy(c->peer.user, h->user_id, ulen + 1);
      memcpy(c->peer.user + ulen + 1, h->device_id, dlen + 1);
      c->peer.device = c->peer.user + ulen + 1;
      hubu_messaging_hello(&c->peer);
    }
  }
  hubu__v1__hello__free_unpacked(h, NULL);
}

static void handle_ping(hubu_conn *c, const hubu_frame *f) {
  Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, f->header.length, f->body);
  if (!p) {
    hubu_conn_bad_body(c, f->header.type);
    return;
  }
  if (f->header.type == HUBU_FRAME_PING) {
    Hubu__V1__Ping pong = HUBU__V1__PING__INIT;
    pong.time_ms = p->time_ms;
    hubu_conn_send(c, HUBU_FRAME_PONG, &pong.base);
  }
  hubu__v1__ping__free_unpacked(p, NULL);
}

static void dispatch(hubu_conn *c, const hubu_frame *f) {
  uint8_t type = f->header.type;
  if (c->peer.state == HUBU_PEER_HELLO_WAIT) {
    if (type != HUBU_FRAME_HELLO)
      error_close(c, HUBU__V1__CODE__UNAUTHENTICATED, "the first frame must be HELLO", type);
    else if (f->header.flags)
      error_close(c, HUBU__V1__CODE__BAD_FRAME, "flags must be 0 in protocol version 1", type);
    else
      handle_hello(c, f->body, f->header.length);
    if (c->peer.state == HUBU_PEER_AUTHING || c->peer.state == HUBU_PEER_READY) hubu_server_hello_done(c->server, c);
    return;
  }
  if (f->header.flags) {
    send_error(c, HUBU__V1__CODE__BAD_FRAME, "flags must be 0 in protocol version 1", type);
    return;
  }
  switch (type) {
    case HUBU_FRAME_PING:
    case HUBU_FRAME_PONG: handle_ping(c, f); break;
    case HUBU_FRAME_HELLO: send_error(c, HUBU__V1__CODE__INVALID, "already authenticated", type); break;
    case HUBU_FRAME_SEND: hubu_messaging_send(&c->peer, f); break;
    case HUBU_FRAME_DELIVER_ACK: hubu_messaging_deliver_ack(&c->peer, f); break;
    case HUBU_FRAME_SYNC: hubu_messaging_sync(&c->peer, f); break;
    case HUBU_FRAME_PULL: hubu_messaging_pull(&c->peer, f); break;
    case HUBU_FRAME_CALL: {
      Hubu__V1__Call *call = hubu__v1__call__unpack(NULL, f->header.length, f->body);
      if (!call) {
        hubu_conn_bad_body(c, type);
        break;
      }
      hubu_plugins_on_call(c->server->plugins, &c->peer, call);
      hubu__v1__call__free_unpacked(call, NULL);
      break;
    }
    default:
      send_error(c, HUBU__V1__CODE__UNSUPPORTED_TYPE,
                 hubu_frame_type_known(type) ? "a server-to-client frame type" : "unknown frame type", type);
      break;
  }
}

/* Decodes and dispatches the whole frames at p[0..n); returns bytes used.
 * Before HELLO_OK a frame may be at most --hello-max-frame: a connection that
 * has not logged in makes the server hold no more than that. */
static size_t process(hubu_conn *c, const uint8_t *p, size_t n) {
  size_t off = 0;
  const hubu_net_config *cfg = c->server->cfg;
  while (off < n && c->peer.state < HUBU_PEER_CLOSING && c->peer.state != HUBU_PEER_AUTHING) {
    if (c->peer.reads_unanswered >= HUBU_MAX_PENDING_READS) { /* its SYNCs and PULLs wait for the store */
      c->input_paused = 1;
      break;
    }
    if (c->peer.sends_unanswered >= cfg->max_pending_sends ||
        c->peer.send_bytes_held >= cfg->max_pending_send_bytes) { /* the store is behind this client */
      c->input_paused = 1;
      break;
    }
    if (c->peer.state == HUBU_PEER_READY && output_queued(c) > cfg->write_queue_max) { /* its answers are not read */
      pause_output(c);
      break;
    }
    int ready = c->peer.state == HUBU_PEER_READY;
    uint32_t max_frame = ready || cfg->hello_max_frame > cfg->max_frame ? cfg->max_frame : cfg->hello_max_frame;
    hubu_frame f;
    char why[128];
    switch (hubu_frame_next(p + off, n - off, max_frame, &f)) {
      case HUBU_FRAME_NEED_MORE: return off;
      case HUBU_FRAME_ERR_MAGIC: error_close(c, HUBU__V1__CODE__BAD_FRAME, "bad magic byte (want 0xA5)", 0); return n;
      case HUBU_FRAME_ERR_VERSION:
        error_close(c, HUBU__V1__CODE__UNSUPPORTED_VERSION, "unsupported frame version (want 1)", 0);
        return n;
      case HUBU_FRAME_ERR_TOO_LARGE:
        snprintf(why, sizeof why, "frame body of %u bytes exceeds %s %u", f.header.length,
                 ready ? "max_frame" : "the limit before HELLO_OK", max_frame);
        error_close(c, HUBU__V1__CODE__FRAME_TOO_LARGE, why, f.header.type);
        return n;
      case HUBU_FRAME_OK:
        dispatch(c, &f);
        off += f.size;
        break;
    }
  }
  return off;
}

/* Plaintext bytes from the socket (or from TLS). Keeps only an incomplete
 * frame between reads. Returns non-zero once the connection is closing. */
static int conn_input(void *ud, const uint8_t *data, size_t len) {
  hubu_conn *c = ud;
  if (c->peer.state >= HUBU_PEER_CLOSING) return 1;
  if (!hubu_buf_size(&c->rbuf)) {
    size_t used = process(c, data, len);
    if (c->peer.state < HUBU_PEER_CLOSING && used < len && hubu_buf_append(&c->rbuf, data + used, len - used) != 0) {
      hubu_log(HUBU_LOG_ERROR, c->peer.id, c->peer.user, "out_of_memory", "where=read");
      hubu_conn_destroy(c);
    }
  } else if (hubu_buf_append(&c->rbuf, data, len) != 0) {
    hubu_log(HUBU_LOG_ERROR, c->peer.id, c->peer.user, "out_of_memory", "where=read");
    hubu_conn_destroy(c);
  } else {
    size_t used = process(c, hubu_buf_head(&c->rbuf), hubu_buf_size(&c->rbuf));
    if (c->peer.state < HUBU_PEER_CLOSING) hubu_buf_consume(&c->rbuf, used);
  }
  if ((c->peer.state == HUBU_PEER_AUTHING || c->input_paused || c->output_paused) &&
      c->reading) { /* hold further input */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  return c->peer.state >= HUBU_PEER_CLOSING;
}

void hubu_conn_resume_input(hubu_conn *c) {
  if (hubu_buf_size(&c->rbuf)) {
    size_t used = process(c, hubu_buf_head(&c->rbuf), hubu_buf_size(&c->rbuf));
    if (c->peer.state < HUBU_PEER_CLOSING) hubu_buf_consume(&c->rbuf, used);
  }
  if (!c->reading && c->peer.state == HUBU_PEER_READY && !c->input_paused && !c->output_paused) start_reading(c);
}

void hubu_conn_feed(hubu_conn *c, const uint8_t *frames, size_t len) { (void)conn_input(c, frames, len); }

/* One WebSocket message: one frame. */
static int ws_message(void *ud, const uint8_t *msg, size_t len) { return conn_input(ud, msg, len); }

/* A hubu.v1.json text message that is not a frame: as a bad header or body is on TCP. */
static void ws_json_refused(void *ud, int code, uint8_t type, const char *why) {
  hubu_conn *c = ud;
  if (c->peer.state >= HUBU_PEER_CLOSING) return;
  if (code == HUBU__V1__CODE__BAD_FRAME) {
    error_close(c, HUBU__V1__CODE__BAD_FRAME, why, 0);
  } else if (c->peer.state == HUBU_PEER_HELLO_WAIT) {
    if (type == HUBU_FRAME_HELLO)
      error_close(c, HUBU__V1__CODE__BAD_BODY, why, type);
    else
      error_close(c, HUBU__V1__CODE__UNAUTHENTICATED, "the first frame must be HELLO", type);
  } else if (++c->bad_bodies >= MAX_BAD_BODIES) {
    error_close(c, HUBU__V1__CODE__BAD_BODY, "too many undecodable bodies", type);
  } else {
    send_error(c, HUBU__V1__CODE__BAD_BODY, why, type);
  }
}

static int ws_http_request(void *ud, const hubu_http_request *req) { return hubu_http_api_request(ud, req); }

static void ws_http_frame(void *ud, const uint8_t *frame, size_t len) { hubu_http_api_frame(ud, frame, len); }

static const hubu_ws_http conn_ws_http = {
    .request = ws_http_request,
    .frame = ws_http_frame,
    .refused = ws_json_refused,
};

/* Socket bytes of a connection of the HTTP listener: the request, then
 * messages, each capped as a frame is (--hello-max-frame before HELLO_OK,
 * then max_frame). */
static void ws_read(hubu_conn *c, const uint8_t *data, size_t len) {
  const hubu_net_config *cfg = c->server->cfg;
  uint32_t max_frame =
      c->peer.state == HUBU_PEER_READY || cfg->hello_max_frame > cfg->max_frame ? cfg->max_frame : cfg->hello_max_frame;
  hubu_ws_set_max_message(c->ws, (size_t)max_frame + HUBU_FRAME_HEADER_SIZE);
  int r = hubu_ws_input(c->ws, data, len, ws_message, c);
  if (r < 0) {
    hubu_conn_destroy(c);
    return;
  }
  if (c->peer.state == HUBU_PEER_CLOSED) return;
  if (r > 0) begin_close(c);
  if (hubu_ws_output_pending(c->ws)) hubu_server_mark_dirty(c->server, c);
}

/* Plaintext of the HTTPS listener: HTTP and WebSocket inside TLS. */
static int tls_ws_input(void *ud, const uint8_t *data, size_t len) {
  hubu_conn *c = ud;
  if (c->peer.state >= HUBU_PEER_CLOSING) return 1;
  ws_read(c, data, len);
  return c->peer.state >= HUBU_PEER_CLOSING;
}

static int discard_plain(void *ud, const uint8_t *data, size_t len) {
  (void)ud, (void)data, (void)len;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  hubu_server *s = ((hubu_conn *)h)->server;
  *buf = uv_buf_init((char *)s->read_buf, sizeof s->read_buf);
}

/* The socket's own peer, whatever a PROXY header said. */
static void socket_peer_name(hubu_conn *c, int want_port, char *out, size_t size) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  out[0] = '\0';
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) hubu_proxy_addr_name(&ss, want_port, out, size);
}

void hubu_conn_remote_name(hubu_conn *c, int want_port, char *out, size_t size) {
  if (c->remote)
    hubu_proxy_addr_name(c->remote, want_port, out, size);
  else
    socket_peer_name(c, want_port, out, size);
}

/* A connection of a listener with --proxy-protocol without a valid header:
 * closed at once, nothing written (its bytes were not ours to answer). */
static void proxy_refuse(hubu_conn *c, const char *why) {
  char via[96];
  socket_peer_name(c, 1, via, sizeof via);
  c->server->proxy_refused++;
  hubu_log(HUBU_LOG_WARN, c->peer.id, NULL, "proxy_refused", "via=%s reason=\"%s\"", via, why);
  hubu_conn_destroy(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Bytes before the PROXY header is complete (held in rbuf between reads, at
 * most HUBU_PROXY_MAX_HEADER). Once it is: the client's address, its count
 * for --max-conns-per-ip, and what followed the header in the same read on
 * to the next layer (TLS, HTTP, frames). */
static void proxy_input(hubu_conn *c, const uint8_t *data, size_t len) {
  hubu_buf held = c->rbuf; /* the header's start, from earlier reads */
  memset(&c->rbuf, 0, sizeof c->rbuf);
  if (hubu_buf_size(&held) && hubu_buf_append(&held, data, len) != 0) {
    hubu_buf_free(&held);
    hubu_log(HUBU_LOG_ERROR, c->peer.id, NULL, "out_of_memory", "where=proxy");
    hubu_conn_destroy(c);
    return;
  }
  const uint8_t *p = hubu_buf_size(&held) ? hubu_buf_head(&held) : data;
  size_t n = hubu_buf_size(&held) ? hubu_buf_size(&held) : len;
  hubu_proxy_header h;
  const char *why = "no PROXY header";
  hubu_proxy_status st = hubu_proxy_parse(p, n, &h, &why);
  if (st == HUBU_PROXY_NEED_MORE) {
    if (!hubu_buf_size(&held) && hubu_buf_append(&held, data, len) != 0) {
      hubu_buf_free(&held);
      hubu_log(HUBU_LOG_ERROR, c->peer.id, NULL, "out_of_memory", "where=proxy");
      hubu_conn_destroy(c);
      return;
    }
    c->rbuf = held;
    return;
  }
  if (st == HUBU_PROXY_ERROR || (h.family != AF_UNSPEC && !(c->remote = malloc(sizeof *c->remote)))) {
    hubu_buf_free(&held);
    proxy_refuse(c, st == HUBU_PROXY_ERROR ? why : "out of memory");
    return;
  }
  if (c->remote) *c->remote = h.src;
  c->proxy_wait = 0;
  char ip[96] = "";
  if (c->server->cfg->max_conns_per_ip) hubu_conn_remote_name(c, 0, ip, sizeof ip);
  Hubu__V1__Code verdict = hubu_server_count_ip(c->server, c, ip[0] ? ip : "?");
  char remote[96] = "", via[96] = ""; /* getpeername only when logged */
  if (verdict != HUBU__V1__CODE__OK || hubu_log_enabled(HUBU_LOG_DEBUG)) {
    hubu_conn_remote_name(c, 1, remote, sizeof remote);
    socket_peer_name(c, 1, via, sizeof via);
  }
  if (verdict != HUBU__V1__CODE__OK) {
    hubu_buf_free(&held);
    hubu_log(HUBU_LOG_WARN, c->peer.id, NULL, "conn_refused", "code=%s remote=%s via=%s", hubu_code_name(verdict),
             remote, via);
    hubu_conn_drop(c, verdict, "too many connections", 0);
    return;
  }
  hubu_log(HUBU_LOG_DEBUG, c->peer.id, NULL, "conn_open", "remote=%s via=%s proxy=v%d%s tls=%d ws=%d hurried=%d",
           remote, via, h.version, h.local ? " local=1" : "", c->tls != NULL, c->ws != NULL, c->hurried);
  if (n > h.len) {
    uv_buf_t rest = uv_buf_init((char *)p + h.len, (unsigned)(n - h.len));
    on_read((uv_stream_t *)&c->tcp, (ssize_t)(n - h.len), &rest);
  }
  hubu_buf_free(&held);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  hubu_conn *c = (hubu_conn *)stream;
  if (nread == 0) return;
  if (nread < 0) {
    if (nread != UV_EOF && c->peer.state < HUBU_PEER_CLOSING)
      hubu_log(HUBU_LOG_DEBUG, c->peer.id, c->peer.user, "read_failed", "error=\"%s\"", uv_strerror((int)nread));
    hubu_conn_destroy(c);
    return;
  }
  c->last_rx_ms = uv_now(c->server->loop);
  c->pinged = 0;
  const uint8_t *data = (const uint8_t *)buf->base;
  if (c->proxy_wait) {
    if (c->peer.state < HUBU_PEER_CLOSING) proxy_input(c, data, (size_t)nread);
    return;
  }
  if (c->tls) {
    int closing = c->peer.state >= HUBU_PEER_CLOSING;
    if (closing && hubu_tls_handshake_done(c->tls)) return; /* input no longer matters */
    if (hubu_tls_input(c->tls, data, (size_t)nread,
                       closing ? discard_plain
                       : c->ws ? tls_ws_input
                               : conn_input,
                       c) < 0) {
      char err[160];
      hubu_log(HUBU_LOG_INFO, c->peer.id, c->peer.user, "tls_failed", "error=\"%s\"",
               hubu_tls_last_error(err, sizeof err));
      hubu_conn_destroy(c);
      return;
    }
    if (hubu_tls_output_pending(c->tls)) hubu_server_mark_dirty(c->server, c);
    return;
  }
  if (c->peer.state >= HUBU_PEER_CLOSING) return;
  if (c->ws) {
    ws_read(c, data, (size_t)nread);
    return;
  }
  conn_input(c, data, (size_t)nread);
}

static void start_reading(hubu_conn *c) {
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
    c->reading = 1;
    c->last_rx_ms = uv_now(c->server->loop); /* silence counts from here */
  }
}

void hubu_conn_sweep(hubu_conn *c, uint64_t now) {
  const hubu_net_config *cfg = c->server->cfg;
  switch (c->peer.state) {
    case HUBU_PEER_HELLO_WAIT:
    case HUBU_PEER_AUTHING: {
      uint32_t timeout = cfg->hello_timeout_ms;
      if (c->hurried && cfg->hello_timeout_pressure_ms < timeout) timeout = cfg->hello_timeout_pressure_ms;
      if (now - c->state_since_ms >= timeout && c->proxy_wait)
        proxy_refuse(c, "no whole PROXY header within the HELLO timeout");
      else if (now - c->state_since_ms >= timeout)
        hubu_conn_goaway(c, HUBU__V1__CODE__TIMEOUT, "no HELLO in time", 0);
      break;
    }
    case HUBU_PEER_READY: {
      if (c->output_paused && now - c->paused_since_ms >= cfg->write_stall_ms) {
        /* its output has not drained for --write-stall-ms: the queue is dropped
         * with the connection (the GOAWAY goes only if the socket takes it) */
        hubu_log(HUBU_LOG_INFO, c->peer.id, c->peer.user, "write_stalled", "queued=%zu paused_ms=%llu",
                 output_queued(c), (unsigned long long)(now - c->paused_since_ms));
        hubu_conn_drop(c, HUBU__V1__CODE__TIMEOUT, "output not read within --write-stall-ms", 1);
        break;
      }
      if (hubu_delivery_sweep(&c->peer, now) != 0) {
        hubu_conn_goaway(c, HUBU__V1__CODE__TIMEOUT, "deliveries not acknowledged", 0);
        break;
      }
      if (!c->reading) break; /* paused (backpressure, or the store behind): its input waits in the kernel */
      uint64_t silent = now - c->last_rx_ms;
      if (silent >= 3ull * cfg->heartbeat_ms) {
        hubu_conn_goaway(c, HUBU__V1__CODE__TIMEOUT, "no traffic for 3 heartbeats", 0);
      } else if (silent >= cfg->heartbeat_ms && !c->pinged) {
        c->pinged = 1;
        Hubu__V1__Ping ping = HUBU__V1__PING__INIT;
        ping.time_ms = hubu_now_ms();
        hubu_conn_send(c, HUBU_FRAME_PING, &ping.base);
      }
      break;
    }
    case HUBU_PEER_CLOSING:
      if (now - c->state_since_ms >= LINGER_MS) hubu_conn_destroy(c);
      break;
    default: break;
  }
}

/* ---- the peer interface (core/peer.h) ---- */

static hubu_buf *peer_output(hubu_peer *p) { return &hubu_server_conn_of(p)->wbuf; }

static void peer_wrote(hubu_peer *p) {
  hubu_conn *c = hubu_server_conn_of(p);
  hubu_server_mark_dirty(c->server, c);
}

static void peer_goaway(hubu_peer *p, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms) {
  hubu_conn_goaway(hubu_server_conn_of(p), code, reason, reconnect_after_ms);
}

static void peer_bad_body(hubu_peer *p, uint8_t frame_type) { hubu_conn_bad_body(hubu_server_conn_of(p), frame_type); }

static void peer_resume_input(hubu_peer *p) { hubu_conn_resume_input(hubu_server_conn_of(p)); }

static const hubu_peer_ops conn_peer_ops = {
    .output = peer_output,
    .wrote = peer_wrote,
    .goaway = peer_goaway,
    .bad_body = peer_bad_body,
    .resume_input = peer_resume_input,
};

void hubu_conn_accept(hubu_server *s, uv_stream_t *listener, hubu_conn_kind kind) {
  int tls = kind == HUBU_CONN_TLS || kind == HUBU_CONN_WSS;
  hubu_conn *c = calloc(1, sizeof *c);
  if (!c) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=accept");
    return;
  }
  c->server = s;
  uv_tcp_init(s->loop, &c->tcp);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->peer.ops = &conn_peer_ops;
  c->peer.core = &s->core;
  c->peer.id = ++s->next_conn_id;
  c->state_since_ms = c->last_rx_ms = uv_now(s->loop);
  c->proxy_wait = (s->cfg->proxy_protocol >> kind) & 1; /* counted per address once the header names the client */
  Hubu__V1__Code verdict = hubu_server_admit(s, c);
  char remote[96] = ""; /* a getpeername only when it is logged */
  if (verdict != HUBU__V1__CODE__OK || (!c->proxy_wait && hubu_log_enabled(HUBU_LOG_DEBUG)))
    hubu_conn_remote_name(c, 1, remote, sizeof remote);
  if (verdict != HUBU__V1__CODE__OK) { /* closed now: a refused connection holds no descriptor until the peer's FIN */
    hubu_log(HUBU_LOG_WARN, c->peer.id, NULL, "conn_refused", "code=%s open=%u tls=%d remote=%s",
             hubu_code_name(verdict), s->conn_count, tls, remote);
    hubu_conn_drop(c, verdict,
                   verdict == HUBU__V1__CODE__SHUTTING_DOWN ? "server shutting down" : "too many connections", 0);
    return;
  }
  if (tls && !(c->tls = hubu_tls_new(s->tls_ctx, 1, NULL))) {
    hubu_log(HUBU_LOG_ERROR, c->peer.id, NULL, "out_of_memory", "where=tls");
    hubu_conn_destroy(c);
    return;
  }
  if ((kind == HUBU_CONN_WS || kind == HUBU_CONN_WSS) && !(c->ws = hubu_ws_new(s->cfg->ws_origins, c->peer.id))) {
    hubu_log(HUBU_LOG_ERROR, c->peer.id, NULL, "out_of_memory", "where=ws");
    hubu_conn_destroy(c);
    return;
  }
  if (c->ws) {
    hubu_ws_set_http(c->ws, &conn_ws_http, c);
    hubu_ws_set_max_body(c->ws, 2 * (size_t)s->cfg->max_frame + 1024); /* a JSON body of max_frame's bytes */
  }
  start_reading(c);
  if (!c->reading) {
    hubu_conn_destroy(c);
    return;
  }
  if (!c->proxy_wait) /* else logged once the PROXY header names the client */
    hubu_log(HUBU_LOG_DEBUG, c->peer.id, NULL, "conn_open", "remote=%s tls=%d ws=%d hurried=%d", remote, tls,
             c->ws != NULL, c->hurried);
}

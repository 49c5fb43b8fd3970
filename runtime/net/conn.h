/* conn.h — one client connection (TCP, TLS or WebSocket) from accept to close. */
#ifndef HUBU_CONN_H
#define HUBU_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "hubu.pb-c.h"
#include "peer.h"
#include "tls.h"
#include "ws.h"

typedef struct hubu_server hubu_server;
typedef struct hubu_conn hubu_conn;
typedef struct hubu_ip_count hubu_ip_count;

/* Owned by the server's list from accept until its close callback frees it.
 * Kept small: an idle authenticated connection is this struct, its user and
 * device string, and nothing else (buffers exist only while used). What core
 * knows of it is peer (its state, identity, window and hints). */
struct hubu_conn {
  uv_tcp_t tcp;   /* first: a handle pointer is a connection pointer */
  hubu_peer peer; /* core's side; peer.ops are this file's */
  hubu_server *server;
  hubu_conn *prev, *next;                 /* server->conns */
  hubu_conn *dirty_next;                  /* server->dirty, while is_dirty */
  hubu_conn *waiting_prev, *waiting_next; /* server->waiting, while is_waiting */
  uint64_t last_rx_ms;                    /* last byte received */
  uint64_t state_since_ms;                /* accept time, or the start of closing */
  uint64_t paused_since_ms;               /* while output_paused: when its output went above --write-queue-max */
  hubu_tls *tls;                          /* owned; NULL on plain TCP */
  hubu_ws *ws;                            /* owned; the HTTP listener's connections (WebSocket), else NULL */
  hubu_buf rbuf;                          /* owned; an incomplete frame, else empty */
  hubu_buf wbuf;                          /* owned; output not yet handed to a write */
  size_t writing;                         /* bytes in writes not yet completed */
  hubu_ip_count *ip;                      /* the per-address counter this connection holds */
  struct sockaddr_storage *remote;        /* owned: the client's address from a PROXY header; NULL: the socket's */
  uint8_t is_dirty : 1;
  uint8_t is_counted : 1; /* counts against --max-conns */
  uint8_t reading : 1;
  uint8_t pinged : 1;        /* a server PING is outstanding */
  uint8_t shut_down : 1;     /* FIN sent */
  uint8_t input_paused : 1;  /* too many SENDs unanswered: input waits in rbuf and the kernel */
  uint8_t output_paused : 1; /* backpressure: output above --write-queue-max, input waits until half drained */
  uint8_t is_waiting : 1;    /* in server->waiting: not logged in (no HELLO accepted) */
  uint8_t hurried : 1;       /* accepted under pressure: --hello-timeout-pressure-ms applies */
  uint8_t proxy_wait : 1;    /* its listener requires a PROXY header (--proxy-protocol), not read yet */
  uint8_t bad_bodies;
  uint8_t api_type;         /* an HTTP API request: the result frame type its answer is made of (http_api.c) */
  uint8_t api_protobuf : 1; /* ... answered in protobuf, else JSON */
};

/* What a listener's connections speak. */
typedef enum {
  HUBU_CONN_TCP = 0,
  HUBU_CONN_TLS = 1,
  HUBU_CONN_WS = 2,  /* the HTTP listener: HTTP, WebSocket */
  HUBU_CONN_WSS = 3, /* the HTTPS listener: the same inside TLS */
} hubu_conn_kind;

/* Accepts a pending connection on listener, speaking kind. */
void hubu_conn_accept(hubu_server *s, uv_stream_t *listener, hubu_conn_kind kind);

/* Queues a frame (type + packed msg) for the next flush. 0 or -1. */
int hubu_conn_send(hubu_conn *c, uint8_t type, const ProtobufCMessage *msg);

/* Sends what is queued, in one write. Called once per loop turn. */
void hubu_conn_flush(hubu_conn *c);

/* Queues GOAWAY{code, reason} and closes once it is flushed. */
void hubu_conn_goaway(hubu_conn *c, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms);

/* A body that does not decode: ERROR BAD_BODY, and the connection closes
 * after too many. */
void hubu_conn_bad_body(hubu_conn *c, uint8_t type);

/* Whole frames as if read from c (an HTTP API request's HELLO and request,
 * http_api.c): dispatched now, or held while HELLO_OK is pending. */
void hubu_conn_feed(hubu_conn *c, const uint8_t *frames, size_t len);

/* Processes input held back while HELLO_OK was pending. */
void hubu_conn_resume_input(hubu_conn *c);

/* Runs the timers of one connection at time now (server sweep). */
void hubu_conn_sweep(hubu_conn *c, uint64_t now_ms);

/* The client's address ("1.2.3.4", "2001:db8::1"; with want_port
 * "1.2.3.4:5678", "[::1]:5678"): the one its PROXY header gave, else the
 * socket's peer; "" when it is gone. size: at least 64. */
void hubu_conn_remote_name(hubu_conn *c, int want_port, char *out, size_t size);

/* Closes the handle now; the memory goes in the close callback. */
void hubu_conn_destroy(hubu_conn *c);

/* Closes c at once, without waiting for its output or the peer's FIN: a last
 * frame (GOAWAY{code, reason} when goaway, else ERROR{code, reason}) is
 * written only if the socket takes it now, on a plain TCP connection with
 * nothing else queued. For what must not hold a descriptor or memory any
 * longer: a refused accept, a dropped waiting connection, a stalled writer. */
void hubu_conn_drop(hubu_conn *c, Hubu__V1__Code code, const char *reason, int goaway);

#endif

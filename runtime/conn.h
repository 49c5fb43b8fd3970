/* conn.h — one client connection (TCP or TLS) from accept to close. */
#ifndef HUBU_CONN_H
#define HUBU_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "hubu.pb-c.h"
#include "tls.h"
#include <uthash.h>

#define HUBU_SERVER_NAME "hubud/0.1.0"

typedef struct hubu_device hubu_device;
typedef struct hubu_inflight hubu_inflight;
typedef struct hubu_hint hubu_hint;

typedef struct hubu_server hubu_server;
typedef struct hubu_conn hubu_conn;
typedef struct hubu_ip_count hubu_ip_count;

typedef enum {
  HUBU_CONN_HELLO_WAIT = 0, /* accepted; the first frame must be HELLO */
  HUBU_CONN_AUTHING,        /* token accepted; HELLO_OK waits for the device's state */
  HUBU_CONN_READY,          /* authenticated */
  HUBU_CONN_CLOSING,        /* output flushing, then FIN; input discarded */
  HUBU_CONN_CLOSED,         /* uv_close called; freed in its callback */
} hubu_conn_state;

/* Owned by the server's list from accept until its close callback frees it.
 * Kept small: an idle authenticated connection is this struct, its user and
 * device string, and nothing else (buffers exist only while used). */
struct hubu_conn {
  uv_tcp_t tcp; /* first: a handle pointer is a connection pointer */
  hubu_server *server;
  hubu_conn *prev, *next; /* server->conns */
  hubu_conn *dirty_next;  /* server->dirty, while is_dirty */
  uint64_t id;
  uint64_t last_rx_ms;   /* last byte received */
  uint64_t state_since_ms; /* accept time, or the start of closing */
  hubu_tls *tls;         /* owned; NULL on plain TCP */
  hubu_buf rbuf;         /* owned; an incomplete frame, else empty */
  hubu_buf wbuf;         /* owned; output not yet handed to a write */
  size_t writing;        /* bytes in writes not yet completed */
  char *user;            /* owned; "user\0device\0" after HELLO, else NULL */
  const char *device;    /* points into user */
  hubu_ip_count *ip;     /* the per-address counter this connection holds */
  hubu_conn *user_next;  /* the user's other connections (presence) */
  hubu_device *dev;      /* a reference, from HELLO on */
  hubu_inflight *inflight; /* owned; pushed, not yet acknowledged */
  hubu_hint *hints;      /* owned; PULL_HINTs for the next flush */
  size_t push_start;     /* the PUSH frame open in wbuf this turn: header offset from wbuf.off */
  size_t push_end;       /* ... and wbuf's size right after it */
  uint8_t state;
  uint8_t is_dirty : 1;
  uint8_t is_counted : 1;  /* counts against --max-conns */
  uint8_t reading : 1;
  uint8_t pinged : 1;      /* a server PING is outstanding */
  uint8_t shut_down : 1;   /* FIN sent */
  uint8_t attached : 1;    /* listed in its user's presence */
  uint8_t push_open : 1;   /* push_start/push_end describe the last frame in wbuf */
  uint8_t input_paused : 1; /* too many SENDs unanswered: input waits in rbuf and the kernel */
  uint8_t bad_bodies;
  uint32_t sends_unanswered; /* SENDs read whose SEND_ACK is not produced yet */
};

/* Accepts a pending connection on listener; tls selects the TLS side. */
void hubu_conn_accept(hubu_server *s, uv_stream_t *listener, int tls);

/* Queues a frame (type + packed msg) for the next flush. 0 or -1. */
int hubu_conn_send(hubu_conn *c, uint8_t type, const ProtobufCMessage *msg);

/* Sends what is queued, in one write. Called once per loop turn. */
void hubu_conn_flush(hubu_conn *c);

/* Queues GOAWAY{code, reason} and closes once it is flushed. */
void hubu_conn_goaway(hubu_conn *c, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms);

/* A body that does not decode: ERROR BAD_BODY, and the connection closes
 * after too many. */
void hubu_conn_bad_body(hubu_conn *c, uint8_t type);

/* Processes input held back while HELLO_OK was pending. */
void hubu_conn_resume_input(hubu_conn *c);

/* Runs the timers of one connection at time now (server sweep). */
void hubu_conn_sweep(hubu_conn *c, uint64_t now_ms);

/* Closes the handle now; the memory goes in the close callback. */
void hubu_conn_destroy(hubu_conn *c);

#endif

/* peer.h — what core knows of a client connection, and the only way it
 * reaches one. A transport (net/: TCP, TLS, later WebSocket and HTTP) embeds a
 * hubu_peer in its connection and fills ops; core appends whole frames to the
 * peer's output and never sees sockets, TLS or the flush. */
#ifndef HUBU_CORE_PEER_H
#define HUBU_CORE_PEER_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "hubu.pb-c.h"

typedef struct hubu_core hubu_core;
typedef struct hubu_peer hubu_peer;
typedef struct hubu_device hubu_device;
typedef struct hubu_inflight hubu_inflight;
typedef struct hubu_hint hubu_hint;

typedef enum {
  HUBU_PEER_HELLO_WAIT = 0, /* accepted; the first frame must be HELLO */
  HUBU_PEER_AUTHING,        /* token accepted; HELLO_OK waits for the device's state */
  HUBU_PEER_READY,          /* authenticated */
  HUBU_PEER_CLOSING,        /* output flushing, then gone; input discarded */
  HUBU_PEER_CLOSED,         /* the transport is releasing it */
} hubu_peer_state;

/* Implemented by the transport. Every function gets the peer back. */
typedef struct hubu_peer_ops {
  /* The buffer frames for this peer are appended to: whole frames, header
   * included, written by the transport once per loop turn (after wrote). */
  hubu_buf *(*output)(hubu_peer *p);
  /* Output or hints were added: flush this turn (first marked, first written). */
  void (*wrote)(hubu_peer *p);
  /* GOAWAY{code, reason, reconnect_after_ms}, then close once flushed. */
  void (*goaway)(hubu_peer *p, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms);
  /* A request body that does not decode (ERROR BAD_BODY; closes after too many). */
  void (*bad_body)(hubu_peer *p, uint8_t frame_type);
  /* HELLO_OK went out after an asynchronous device load: process held input. */
  void (*resume_input)(hubu_peer *p);
} hubu_peer_ops;

/* Owned by its transport's connection, which embeds it. Core owns what the
 * fields below user point to (the window, the hints) and frees them in
 * hubu_messaging_peer_closed. */
struct hubu_peer {
  const hubu_peer_ops *ops;
  hubu_core *core;
  uint64_t id;                /* conn_id: unique for the process's lifetime */
  char *user;                 /* owned; "user\0device\0" after HELLO, else NULL */
  const char *device;         /* points into user */
  hubu_peer *user_next;       /* the user's other peers (presence) */
  hubu_device *dev;           /* a reference, from HELLO on */
  hubu_inflight *inflight;    /* owned; pushed, not yet acknowledged */
  hubu_hint *hints;           /* owned; PULL_HINTs for the next flush */
  struct hubu_pushed *pushed; /* owned; cluster mode: the highest seq pushed per session (delivery.c) */
  size_t push_start;          /* the PUSH frame open in output this turn: header offset from its head */
  size_t push_end;            /* ... and output's size right after it */
  uint32_t sends_unanswered;  /* SENDs read whose SEND_ACK is not produced yet */
  size_t send_bytes_held;     /* frame bytes of its SENDs waiting for the store (pending sends) */
  uint32_t reads_unanswered;  /* SYNCs and PULLs read whose result is not produced yet (HUBU_MAX_PENDING_READS) */
  uint8_t state;              /* hubu_peer_state */
  uint8_t attached : 1;       /* listed in its user's presence, or in core->transients */
  uint8_t transient : 1;      /* one HTTP API request: found by id (core->transients), never in presence, so it
                                 gets no pushes and raises no connect/disconnect events; set before HELLO */
  uint8_t push_open : 1;      /* push_start/push_end describe the last frame in output */
};

/* SYNCs and PULLs of one connection in the store at once: its input pauses
 * at this many, so one client flooding them keeps at most this many of its
 * requests ahead of another user's HELLO in the store queue. */
#define HUBU_MAX_PENDING_READS 2

/* Appends the frame (type + packed msg) to p's output. 0, or -1 when p is
 * closing or memory ran out. */
int hubu_peer_send(hubu_peer *p, uint8_t type, const ProtobufCMessage *msg);

/* The transport is about to write p's output: the next push opens a new frame. */
static inline void hubu_peer_output_taken(hubu_peer *p) { p->push_open = 0; }

#endif

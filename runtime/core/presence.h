/* presence.h — what each (user, device) has sent: its client_id high-water marks, the sends
 * still in the store queue, recent ACKs for retries, delivered cursors. */
#ifndef HUBU_PRESENCE_H
#define HUBU_PRESENCE_H

#include <stdint.h>
#include <uthash.h>

#include "hooks.h"
#include "msg.h"

typedef struct hubu_core hubu_core;
typedef struct hubu_peer hubu_peer;
typedef struct hubu_session hubu_session;
typedef struct hubu_device hubu_device;

/* A SEND accepted and waiting for the store. Owned by its device's table. */
typedef struct hubu_pending_send {
  UT_hash_handle hh; /* device->pending, by client_id */
  uint64_t client_id;
  hubu_device *device;
  hubu_session *session;
  hubu_msg *msg;         /* NULL while the session loads */
  uint64_t sender_conn;  /* the connection that sent it first */
  uint64_t *retry_conns; /* owned: connections that sent it again meanwhile */
  uint32_t n_retry_conns;
  uint8_t internal; /* from a plugin: client_id is a msg_id, outside the device's marks */
  uint32_t bytes;   /* its SEND's frame bytes, counted in the sender's send_bytes_held */
  uint64_t epoch;   /* cluster mode: the device's epoch when the SEND was accepted (0: unchecked) */
} hubu_pending_send;

typedef struct hubu_cursor {
  UT_hash_handle hh;
  char *session_id; /* owned */
  uint64_t seq;
  uint8_t dirty; /* not yet saved */
} hubu_cursor;

#define HUBU_RECENT_ACKS 32

/* Owned by core->devices while referenced (connections, pending sends, loads)
 * or while it has cursors to save. */
struct hubu_device {
  UT_hash_handle hh;
  char *user; /* point into storage after key */
  char *device;
  uint32_t refs;
  uint8_t loaded;
  uint8_t loading;
  uint8_t cursors_dirty;
  uint64_t assigned; /* highest client_id accepted (queued or stored) */
  uint64_t durable;  /* highest client_id the store holds */
  uint64_t epoch;    /* cluster mode: the device's epoch as this node's last claim answered (store.h); every
                        append carries it, so a node the device left stores nothing more of it */
  hubu_pending_send *pending;
  hubu_msg *
      *recent; /* owned ring of HUBU_RECENT_ACKS refs, made on the first send: the latest stored sends, for retries */
  uint32_t recent_next;
  hubu_cursor *cursors;
  hubu_peer **hello_waiters; /* owned array: connections waiting for the load (they remove themselves on close) */
  uint32_t n_hello_waiters;
  char key[]; /* "user/device" ('/' is not in the id alphabet), then "user\0device\0"; part of this allocation */
};

/* The device of (user, device), created when missing; a reference is taken. */
hubu_device *hubu_device_acquire(hubu_core *core, const char *user, const char *device);
void hubu_device_release(hubu_core *core, hubu_device *d);

void hubu_device_remember(hubu_device *d, hubu_msg *m);

/* Whether d has a cursor for session_id already (kept, or loaded from the store). */
int hubu_device_has_cursor(hubu_device *d, const char *session_id);
hubu_msg *hubu_device_recent(hubu_device *d, uint64_t client_id);

/* Records "delivered up to seq" for the device in session; saved lazily. */
void hubu_device_set_cursor(hubu_core *core, hubu_device *d, const char *session_id, uint64_t seq);

/* Submits every unsaved cursor in one CURSORS_SAVE. */
void hubu_presence_save_cursors(hubu_core *core);

void hubu_presence_free_all(hubu_core *core);

#endif

/* client_internal.h — what the parts of libhubu-client share and nobody else
 * sees: the client object itself (client.c owns it), the hooks by which the
 * frame layer drives the message layer (messages.c), and the outbox log
 * (outbox.c). Not installed; applications use hubu_client.h only. */
#ifndef HUBU_CLIENT_INTERNAL_H
#define HUBU_CLIENT_INTERNAL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "hubu_client.h"

typedef struct hubu_client_link hubu_client_link;
typedef struct hubu_client_tls_ctx hubu_client_tls_ctx;
typedef struct hubu_messages hubu_messages;

/* Owns: the option strings, its share of tls_ctx, the timer and flush handles
 * (closed by hubu_client_close), the current link, and the message layer
 * (msgs, freed once every handle is closed). The getaddrinfo request in
 * flight owns itself (hubu_client_resolve) and only points back here. */
struct hubu_client {
  uv_loop_t *loop;                                                      /* not owned */
  char *host, *tls_ca_file, *user_id, *device_id, *token, *client_info; /* owned copies */
  char *ws_path;                                                        /* owned copy; NULL: raw TCP */
  int port, tls, tls_verify, reconnect;
  int ws_json; /* with ws_path: hubu.v1.json */
  uint32_t backoff_min_ms, backoff_max_ms, connect_timeout_ms, ping_interval_ms;
  hubu_client_callbacks cb;
  void *ud;
  hubu_client_tls_ctx *tls_ctx; /* one reference, NULL without TLS */

  hubu_client_state state;
  uv_timer_t timer;                    /* by state: connect deadline, backoff delay, or heartbeat */
  uv_prepare_t flush;                  /* started only while something waits for the end of the turn */
  struct hubu_client_resolve *resolve; /* the resolution this attempt waits for, or NULL */
  struct addrinfo *addrs;              /* owned: this attempt's resolved addresses, until connected */
  const struct addrinfo *addr_next;    /* in addrs: the one to try if the current connect fails */
  hubu_client_link *link;              /* the current connection, or NULL */
  unsigned refs;                       /* open handles + live links + resolutions in flight; free at 0 once closing */
  int closing;                         /* hubu_client_close was called */
  void (*on_closed)(void *ud);

  unsigned attempt;                /* failed attempts since the last READY: the backoff exponent */
  unsigned sessions;               /* HELLO_OKs so far */
  uint32_t heartbeat_ms;           /* ping interval in force while READY; 0: none */
  uint32_t max_frame;              /* the server's limit, for hubu_client_send_frame */
  uint64_t last_tx_ms, last_rx_ms; /* uv_now of the last frame queued / bytes read */
  uint64_t rng;

  hubu_messages *msgs; /* owned: the message layer (messages.c) */
};

/* ---- client.c: services for the message layer ---- */

/* Packs msg into a frame on the current link (sent at the end of this loop
 * turn). UV_ENOTCONN without a link, UV_ENOMEM. */
int hubu_client_queue(hubu_client *c, uint8_t type, const ProtobufCMessage *msg);
/* Makes the end-of-turn hook (hubu_messages_before_flush, then the write) run. */
void hubu_client_flush_arm(hubu_client *c);
/* Close callback for any handle counted in c->refs (its data is c). */
void hubu_client_on_handle_closed(uv_handle_t *h);
/* Drops the connection as lost (reconnects when configured). */
void hubu_client_fail(hubu_client *c, int code, const char *reason);
/* 1 while frames may be sent: READY with a link, and not closing. */
int hubu_client_can_send(const hubu_client *c);

/* ---- messages.c: the message layer, driven by client.c ---- */

/* Loads the outbox (if any) and initialises the message layer's handles,
 * which count in c->refs. NULL with err filled on failure; then nothing was
 * left open. */
hubu_messages *hubu_messages_new(hubu_client *c, const hubu_client_options *opt, char *err, size_t err_size);
/* HELLO_OK arrived (the state is READY, no callback has run yet): renumber,
 * resend the pending SENDs in client_id order, SYNC. No user callback runs here. */
void hubu_messages_on_hello(hubu_client *c, uint64_t last_client_id);
/* A frame the message layer handles (SEND_ACK, PUSH, PULL_RESULT,
 * SYNC_RESULT, PULL_HINT), while READY. May call user callbacks. */
void hubu_messages_on_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len);
/* The connection is gone: forget what was in flight on it. No callbacks. */
void hubu_messages_on_lost(hubu_client *c);
/* After on_lost and the state callback: requests in flight fail with code. */
void hubu_messages_fail_requests(hubu_client *c, int code);
/* End of a loop turn, before the write: DELIVER_ACKs, outbox bookkeeping. */
void hubu_messages_before_flush(hubu_client *c);
/* hubu_client_close: closes the handles (each completes through
 * hubu_client_on_handle_closed) and the outbox file. */
void hubu_messages_close(hubu_client *c);
/* Frees what is left; every handle is closed by now. */
void hubu_messages_free(hubu_messages *m);

/* ---- outbox.c: queued sends and their file-backed log ---- */

/* One message the application queued and the server has not answered for
 * good. One allocation holds the struct and every string and byte it points
 * to; owned by the message layer's list (messages.c) or, while loading, by
 * the list hubu_outbox_open returns. */
typedef struct hubu_outgoing {
  struct hubu_outgoing *prev, *next; /* the pending list, ascending client_id */
  uint64_t client_id;                /* on the wire now */
  uint64_t app_id;                   /* what hubu_client_send_message returned; reported in callbacks */
  uint64_t client_time_ms;
  uint64_t due_ms; /* uv_now when to (re)send while connected; 0: at the next chance */
  int verified;    /* client_id known to be above the server's high-water mark at a HELLO_OK */
  int sent;        /* written at least once (resends count as resends) */
  int refused;     /* larger than the server's max_frame: reported by the resend timer */
  const char *session_id;
  const char *content_type;
  size_t n_meta;
  const char *const *meta_keys;
  const char *const *meta_values;
  const uint8_t *body;
  size_t body_len;
} hubu_outgoing;

/* Copies everything into one allocation. NULL when out of memory. */
hubu_outgoing *hubu_outgoing_new(uint64_t client_id, uint64_t app_id, const char *session_id, const char *content_type,
                                 const uint8_t *body, size_t len, size_t n_meta, const char *const *meta_keys,
                                 const char *const *meta_values);

typedef struct hubu_outbox hubu_outbox;

/* What a log held when opened: the pending sends in client_id order (a list
 * the caller now owns) and the highest client_id it ever used. */
typedef struct {
  hubu_outgoing *head;
  uint64_t last_client_id;
  size_t count;
} hubu_outbox_loaded;

/* Locks path (through path.lock), reads it (creating it when missing),
 * rewrites it compacted and keeps it open for appending. */
hubu_outbox *hubu_outbox_open(const char *path, hubu_outbox_loaded *loaded, char *err, size_t err_size);
/* Appends 'Q' for o and makes it durable (fdatasync). 0 or -1. */
int hubu_outbox_queued(hubu_outbox *ob, const hubu_outgoing *o);
/* Appends 'Q' for o (already under its new client_id) and 'D' for old_id, durably. */
int hubu_outbox_renumbered(hubu_outbox *ob, const hubu_outgoing *o, uint64_t old_id);
/* Appends 'V': every client_id <= upto is verified, durably. */
int hubu_outbox_verified(hubu_outbox *ob, uint64_t upto);
/* Buffers 'D' for client_id; written by hubu_outbox_flush, not synced. */
void hubu_outbox_done(hubu_outbox *ob, uint64_t client_id);
/* Writes buffered 'D' records. 0 or -1. */
int hubu_outbox_flush(hubu_outbox *ob);
/* Whether the log is worth rewriting: all_done (nothing pending) and past a
 * small size, or else past twice its size after the last rewrite. */
int hubu_outbox_wants_compaction(const hubu_outbox *ob, int all_done);
/* Rewrites the log as 'L' last_client_id plus a 'Q' per pending send (head..),
 * atomically (temp file, fdatasync, rename). 0 or -1 (the old log stays). */
int hubu_outbox_compact(hubu_outbox *ob, const hubu_outgoing *head, uint64_t last_client_id);
/* Flushes, closes the file and releases the lock. */
void hubu_outbox_close(hubu_outbox *ob);

#endif

/* messaging.h — the request flows of PROTOCOL.md section 5 on one loop:
 * HELLO's device load, SEND -> store -> SEND_ACK + PUSH, DELIVER_ACK, SYNC, PULL. */
#ifndef HUBU_MESSAGING_H
#define HUBU_MESSAGING_H

#include "frame.h"
#include "hooks.h"

typedef struct hubu_peer hubu_peer;
typedef struct hubu_core hubu_core;
#include <stddef.h>
#include <stdint.h>

/* After a valid token: loads the device, then sends HELLO_OK. */
void hubu_messaging_hello(hubu_peer *c);

void hubu_messaging_send(hubu_peer *c, const hubu_frame *f);
void hubu_messaging_deliver_ack(hubu_peer *c, const hubu_frame *f);
void hubu_messaging_sync(hubu_peer *c, const hubu_frame *f);
void hubu_messaging_pull(hubu_peer *c, const hubu_frame *f);

/* A message from the server side (a plugin's im.send): as user, from device,
 * through the same checks, store and routing as a SEND, with client_id =
 * msg_id so it never collides. Returns NULL when queued, else why not. */
const char *hubu_messaging_send_internal(hubu_core *core, const char *user, const char *device, const char *session_id,
                                         const uint8_t *body, size_t len, const char *content_type);

/* The plugins' verdict on a SEND whose message.send hooks answered
 * HUBU_HOOK_LATER (hooks.h): takes v's owned fields. An unknown send_ref
 * (answered already) is ignored. The SEND is refused at once, or takes its
 * seq in arrival order among its session's other SENDs. */
void hubu_messaging_send_decided(hubu_core *core, uint64_t send_ref, hubu_send_verdict *v);

/* The connection is going away: drops its device, presence and window. */
void hubu_messaging_peer_closed(hubu_peer *c);

#endif

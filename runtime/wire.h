/* wire.h — protobuf bodies in frames: encode a message with its header into a
 * buffer, and build the connection-level replies (ERROR, GOAWAY, PING/PONG).
 * Shared by the server, the client library and the tools. */
#ifndef HUBU_WIRE_H
#define HUBU_WIRE_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "buf.h"
#include "frame.h"
#include "hubu.pb-c.h"

/* Appends header + packed body of msg (NULL: empty body) to out. 0 or -1. */
int hubu_wire_append(hubu_buf *out, uint8_t type, const ProtobufCMessage *msg);

/* Appends ERROR{code, message, frame_type}. */
int hubu_wire_append_error(hubu_buf *out, Hubu__V1__Code code, const char *message, uint8_t frame_type);

/* Appends GOAWAY{code, reason, reconnect_after_ms}. */
int hubu_wire_append_goaway(hubu_buf *out, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms);

/* Appends PING or PONG (type) carrying time_ms. */
int hubu_wire_append_ping(hubu_buf *out, uint8_t type, uint64_t time_ms);

/* "OK", "BAD_FRAME", ... for logs and tools. */
const char *hubu_code_name(Hubu__V1__Code code);

/* Wall clock in milliseconds since the epoch. */
uint64_t hubu_now_ms(void);

#endif

/* wire.h — protobuf bodies in frames: encode a message with its header into a
 * buffer, and build the connection-level replies (ERROR, GOAWAY, PING/PONG).
 * Shared by the server, the client library and the tools. */
#ifndef HUBU_WIRE_H
#define HUBU_WIRE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "frame.h"
#include "hubu.pb-c.h"

/* A protobuf varint: its size, and writing it at p (room for 10 bytes);
 * the size written is returned. For bodies built by hand. */
static inline size_t hubu_varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static inline size_t hubu_varint_put(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Is every string field of body (a packed message of descriptor d, its
 * sub-messages included) well-formed UTF-8 without a NUL? protobuf-c keeps
 * neither promise: it takes any bytes and hands a string on cut at its first
 * NUL. 1 when they are (or the body is malformed: unpack reports that), 0
 * when one is not. */
int hubu_wire_strings_ok(const ProtobufCMessageDescriptor *d, const uint8_t *body, size_t len);

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

#endif

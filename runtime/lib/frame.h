/* frame.h — the 8-byte frame header of PROTOCOL.md section 2, as pure functions.
 *
 * A frame is: magic 0xA5, version 1, type, flags, big-endian body length, body.
 * Nothing here allocates or touches a socket; the connection code feeds bytes
 * in and acts on the verdicts. */
#ifndef HUBU_FRAME_H
#define HUBU_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define HUBU_FRAME_HEADER_SIZE 8
#define HUBU_FRAME_MAGIC 0xA5
#define HUBU_FRAME_VERSION 1
#define HUBU_FRAME_DEFAULT_MAX (1u << 20) /* 1 MiB, announced in HELLO_OK */

enum hubu_frame_type {
  HUBU_FRAME_HELLO = 0x01,
  HUBU_FRAME_HELLO_OK = 0x02,
  HUBU_FRAME_PING = 0x03,
  HUBU_FRAME_PONG = 0x04,
  HUBU_FRAME_ERROR = 0x05,
  HUBU_FRAME_GOAWAY = 0x06,
  HUBU_FRAME_SEND = 0x10,
  HUBU_FRAME_SEND_ACK = 0x11,
  HUBU_FRAME_PUSH = 0x12,
  HUBU_FRAME_DELIVER_ACK = 0x13,
  HUBU_FRAME_SYNC = 0x14,
  HUBU_FRAME_SYNC_RESULT = 0x15,
  HUBU_FRAME_PULL = 0x16,
  HUBU_FRAME_PULL_RESULT = 0x17,
  HUBU_FRAME_PULL_HINT = 0x18,
  HUBU_FRAME_CALL = 0x20,
  HUBU_FRAME_CALL_RESULT = 0x21,
  HUBU_FRAME_EVENT = 0x22,
};

/* Verdict on the bytes at the front of a stream. */
typedef enum {
  HUBU_FRAME_OK = 0,        /* a whole header (and, for _next, body) is there */
  HUBU_FRAME_NEED_MORE,     /* not enough bytes yet; nothing is wrong */
  HUBU_FRAME_ERR_MAGIC,     /* -> ERROR BAD_FRAME, close */
  HUBU_FRAME_ERR_VERSION,   /* -> ERROR UNSUPPORTED_VERSION, close */
  HUBU_FRAME_ERR_TOO_LARGE, /* -> ERROR FRAME_TOO_LARGE, close */
} hubu_frame_status;

typedef struct {
  uint8_t version;
  uint8_t type;
  uint8_t flags;
  uint32_t length; /* body length */
} hubu_frame_header;

/* A decoded frame; body points into the caller's buffer (no copy). */
typedef struct {
  hubu_frame_header header;
  const uint8_t *body;
  size_t size; /* header + body: how many bytes to consume */
} hubu_frame;

/* Decodes the header at buf[0..len). Checks magic, then version, then length
 * against max_frame, in the order a reader meets the bytes: a bad magic is
 * reported as soon as the first byte is there. */
hubu_frame_status hubu_frame_header_decode(const uint8_t *buf, size_t len, uint32_t max_frame, hubu_frame_header *out);

/* Decodes one whole frame at the front of buf. On HUBU_FRAME_OK, out->size
 * bytes may be consumed. */
hubu_frame_status hubu_frame_next(const uint8_t *buf, size_t len, uint32_t max_frame, hubu_frame *out);

/* Writes a header for a body of `length` bytes into out. */
void hubu_frame_header_encode(uint8_t out[HUBU_FRAME_HEADER_SIZE], uint8_t type, uint8_t flags, uint32_t length);

/* True for the types PROTOCOL.md section 2 defines (any direction). */
int hubu_frame_type_known(uint8_t type);

/* "HELLO", "SEND", ... or "UNKNOWN" — for logs. */
const char *hubu_frame_type_name(uint8_t type);

#endif

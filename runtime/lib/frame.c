/* frame.c — bytes <-> frame headers. Pure functions; fuzzed by tests/fuzz_frame.c.
 * Invariant: nothing reads past `len`, and a body is only reported whole when
 * every byte of it is inside the buffer. */
#include "frame.h"

static uint32_t read_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

hubu_frame_status hubu_frame_header_decode(const uint8_t *buf, size_t len, uint32_t max_frame, hubu_frame_header *out) {
  if (len >= 1 && buf[0] != HUBU_FRAME_MAGIC) return HUBU_FRAME_ERR_MAGIC;
  if (len >= 2 && buf[1] != HUBU_FRAME_VERSION) return HUBU_FRAME_ERR_VERSION;
  if (len < HUBU_FRAME_HEADER_SIZE) return HUBU_FRAME_NEED_MORE;
  out->version = buf[1];
  out->type = buf[2];
  out->flags = buf[3];
  out->length = read_be32(buf + 4);
  if (out->length > max_frame) return HUBU_FRAME_ERR_TOO_LARGE;
  return HUBU_FRAME_OK;
}

hubu_frame_status hubu_frame_next(const uint8_t *buf, size_t len, uint32_t max_frame, hubu_frame *out) {
  hubu_frame_status st = hubu_frame_header_decode(buf, len, max_frame, &out->header);
  if (st != HUBU_FRAME_OK) return st;
  size_t need = HUBU_FRAME_HEADER_SIZE + (size_t)out->header.length;
  if (len < need) return HUBU_FRAME_NEED_MORE;
  out->body = buf + HUBU_FRAME_HEADER_SIZE;
  out->size = need;
  return HUBU_FRAME_OK;
}

void hubu_frame_header_encode(uint8_t out[HUBU_FRAME_HEADER_SIZE], uint8_t type, uint8_t flags, uint32_t length) {
  out[0] = HUBU_FRAME_MAGIC;
  out[1] = HUBU_FRAME_VERSION;
  out[2] = type;
  out[3] = flags;
  out[4] = (uint8_t)(length >> 24);
  out[5] = (uint8_t)(length >> 16);
  out[6] = (uint8_t)(length >> 8);
  out[7] = (uint8_t)length;
}

const char *hubu_frame_type_name(uint8_t type) {
  switch (type) {
    case HUBU_FRAME_HELLO: return "HELLO";
    case HUBU_FRAME_HELLO_OK: return "HELLO_OK";
    case HUBU_FRAME_PING: return "PING";
    case HUBU_FRAME_PONG: return "PONG";
    case HUBU_FRAME_ERROR: return "ERROR";
    case HUBU_FRAME_GOAWAY: return "GOAWAY";
    case HUBU_FRAME_SEND: return "SEND";
    case HUBU_FRAME_SEND_ACK: return "SEND_ACK";
    case HUBU_FRAME_PUSH: return "PUSH";
    case HUBU_FRAME_DELIVER_ACK: return "DELIVER_ACK";
    case HUBU_FRAME_SYNC: return "SYNC";
    case HUBU_FRAME_SYNC_RESULT: return "SYNC_RESULT";
    case HUBU_FRAME_PULL: return "PULL";
    case HUBU_FRAME_PULL_RESULT: return "PULL_RESULT";
    case HUBU_FRAME_PULL_HINT: return "PULL_HINT";
    case HUBU_FRAME_CALL: return "CALL";
    case HUBU_FRAME_CALL_RESULT: return "CALL_RESULT";
    case HUBU_FRAME_EVENT: return "EVENT";
    default: return "UNKNOWN";
  }
}

int hubu_frame_type_known(uint8_t type) { return hubu_frame_type_name(type)[0] != 'U'; }

/* wire.c — protobuf-c messages packed straight into frame buffers: the header
 * is written first with the exact packed size, so no intermediate copy. */
#include "wire.h"

#include <string.h>
#include <sys/time.h>

#include "utf8.h"

int hubu_wire_append(hubu_buf *out, uint8_t type, const ProtobufCMessage *msg) {
  size_t body = msg ? protobuf_c_message_get_packed_size(msg) : 0;
  if (body > UINT32_MAX) return -1;
  uint8_t *w = hubu_buf_reserve(out, HUBU_FRAME_HEADER_SIZE + body);
  if (!w) return -1;
  hubu_frame_header_encode(w, type, 0, (uint32_t)body);
  if (msg) protobuf_c_message_pack(msg, w + HUBU_FRAME_HEADER_SIZE);
  out->len += HUBU_FRAME_HEADER_SIZE + body;
  return 0;
}

/* The varint at *p (before end) into *v; 0, or -1 when it runs past end. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return 0;
  }
  return -1;
}

static int strings_ok(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end, int depth) {
  while (p < end) {
    uint64_t key, n;
    if (read_varint(&p, end, &key) != 0) return 1;
    switch (key & 7) {
      case 0:
        if (read_varint(&p, end, &n) != 0) return 1;
        break;
      case 1: p += (size_t)(end - p) < 8 ? (size_t)(end - p) : 8; break;
      case 5: p += (size_t)(end - p) < 4 ? (size_t)(end - p) : 4; break;
      case 2: {
        if (read_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p)) return 1;
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3)) : NULL;
        if (f && f->type == PROTOBUF_C_TYPE_STRING && !hubu_utf8_valid((const char *)p, (size_t)n, 0)) return 0;
        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < 8 && !strings_ok(f->descriptor, p, p + n, depth + 1))
          return 0;
        p += n;
        break;
      }
      default: return 1;
    }
  }
  return 1;
}

int hubu_wire_strings_ok(const ProtobufCMessageDescriptor *d, const uint8_t *body, size_t len) {
  return !body || strings_ok(d, body, body + len, 0);
}

int hubu_wire_append_error(hubu_buf *out, Hubu__V1__Code code, const char *message, uint8_t frame_type) {
  Hubu__V1__Error e = HUBU__V1__ERROR__INIT;
  e.code = code;
  e.message = (char *)(message && hubu_utf8_valid(message, strlen(message), 0) ? message : "");
  e.frame_type = frame_type;
  return hubu_wire_append(out, HUBU_FRAME_ERROR, &e.base);
}

int hubu_wire_append_goaway(hubu_buf *out, Hubu__V1__Code code, const char *reason, uint32_t reconnect_after_ms) {
  Hubu__V1__GoAway g = HUBU__V1__GO_AWAY__INIT;
  g.code = code;
  g.reason = (char *)(reason ? reason : "");
  g.reconnect_after_ms = reconnect_after_ms;
  return hubu_wire_append(out, HUBU_FRAME_GOAWAY, &g.base);
}

int hubu_wire_append_ping(hubu_buf *out, uint8_t type, uint64_t time_ms) {
  Hubu__V1__Ping p = HUBU__V1__PING__INIT;
  p.time_ms = time_ms;
  return hubu_wire_append(out, type, &p.base);
}

const char *hubu_code_name(Hubu__V1__Code code) {
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&hubu__v1__code__descriptor, (int)code);
  return v ? v->name : "UNKNOWN_CODE";
}

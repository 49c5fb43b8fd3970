/* wire.c — protobuf-c messages packed straight into frame buffers: the header
 * is written first with the exact packed size, so no intermediate copy. */
#include "wire.h"

#include <sys/time.h>

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

int hubu_wire_append_error(hubu_buf *out, Hubu__V1__Code code, const char *message, uint8_t frame_type) {
  Hubu__V1__Error e = HUBU__V1__ERROR__INIT;
  e.code = code;
  e.message = (char *)(message ? message : "");
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

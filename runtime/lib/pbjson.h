/* pbjson.h — the JSON form of PROTOCOL.md section 9, for every message of
 * hubu.proto without code per message: protobuf's canonical proto3 JSON
 * mapping driven by protobuf-c's descriptors. Written by hand into a buffer
 * (lib/json.c's string escaper); read by jansson (Debian libjansson-dev) and
 * turned straight into protobuf wire bytes, so a JSON request takes the same
 * decoder, checks and limits as a binary one.
 *
 * The mapping: field names in lowerCamelCase (the names of hubu.proto are
 * accepted too); uint64/int64 as decimal strings (numbers accepted);
 * bytes as standard base64 (URL-safe and unpadded accepted); enums by name
 * (numbers accepted); maps as objects; repeated fields as arrays; fields at
 * their default value are left out; null is the default; unknown names are
 * ignored (PROTOCOL.md section 4's forward compatibility). */
#ifndef HUBU_PBJSON_H
#define HUBU_PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Appends the JSON object of msg to out (compact, one line). 0, or -1 when
 * memory runs out (out is then incomplete). */
int hubu_pbjson_write(hubu_buf *out, const ProtobufCMessage *msg);

/* Parses text[0..len) (a JSON object) as a message of descriptor d and
 * appends its protobuf encoding to out. 0; -1 with why set when it is not
 * the JSON form of such a message (not JSON, a value of the wrong type, bad
 * base64, an unknown enum name, a number out of range); -2 when memory runs
 * out. */
int hubu_pbjson_parse(const ProtobufCMessageDescriptor *d, const char *text, size_t len, hubu_buf *out, char *why,
                      size_t why_size);

/* The message a frame type carries (PROTOCOL.md section 2), or NULL for a
 * type the protocol does not define. */
const ProtobufCMessageDescriptor *hubu_pbjson_frame_descriptor(uint8_t type);

/* A text message of a hubu.v1.json WebSocket, {"type": NAME, "body": {...}},
 * made into a binary frame appended to out. */
typedef enum {
  HUBU_PBJSON_FRAME_OK = 0,
  HUBU_PBJSON_FRAME_BAD,          /* not a JSON object with a string "type": ERROR BAD_FRAME */
  HUBU_PBJSON_FRAME_UNKNOWN_TYPE, /* *type is 0; out holds an empty frame of type 0 */
  HUBU_PBJSON_FRAME_BAD_BODY,     /* *type is set; why tells */
  HUBU_PBJSON_FRAME_NOMEM,
} hubu_pbjson_frame_status;

hubu_pbjson_frame_status hubu_pbjson_frame_in(const char *text, size_t len, hubu_buf *out, uint8_t *type, char *why,
                                              size_t why_size);

/* A binary frame (header and body, len bytes) appended to out as the text of
 * a hubu.v1.json message. A body that does not decode is written as {}.
 * 0, or -1 when memory runs out. */
int hubu_pbjson_frame_out(const uint8_t *frame, size_t len, hubu_buf *out);

/* Standard base64 with padding. 0 or -1. */
int hubu_base64_append(hubu_buf *out, const uint8_t *data, size_t len);

/* Decodes standard or URL-safe base64, padded or not, into out (room for
 * len * 3 / 4 + 3 bytes). Returns the decoded length, or -1 when s is not
 * base64. */
long hubu_base64_decode(const char *s, size_t len, uint8_t *out);

#endif

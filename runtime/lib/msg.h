/* msg.h — one stored (or about to be stored) message, shared by reference:
 * the session tail, the store queue and every recipient's inflight window
 * hold the same object. It is encoded once, at creation, as the bytes of a
 * `Push.messages` entry (tag 0x0A, length, Message), so a PUSH body is the
 * plain concatenation of such entries. */
#ifndef HUBU_MSG_H
#define HUBU_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "hubu.pb-c.h"

typedef struct hubu_msg {
  uint32_t refs;
  uint64_t seq;
  uint64_t msg_id;
  uint64_t client_id;
  uint64_t server_time_ms;
  uint64_t log_pos;       /* the store's position of this message (insertion order), 0 until stored */
  const char *session_id; /* these point into the same allocation */
  const char *sender;
  const char *sender_device;
  const char *content_type;
  const uint8_t *body;
  size_t body_len;
  const uint8_t *meta; /* the meta map as packed Message field-9 entries; a valid Message on its own */
  size_t meta_len;
  const uint8_t *push_entry; /* 0x0A <varint len> <packed Message> */
  size_t push_entry_len;
} hubu_msg;

/* Builds a message and encodes it. meta_entries may be NULL. NULL when out
 * of memory. refs starts at 1, owned by the caller. */
hubu_msg *hubu_msg_new(const char *session_id, uint64_t seq, uint64_t msg_id, const char *sender,
                       const char *sender_device, uint64_t client_id, const uint8_t *body, size_t body_len,
                       const char *content_type, const uint8_t *meta, size_t meta_len, uint64_t server_time_ms);

/* Packs Send.meta entries as field-9 bytes into a malloc'd buffer (NULL and 0
 * when there are none). Returns 0 or -1. */
int hubu_msg_pack_meta(size_t n_meta, Hubu__V1__Send__MetaEntry **meta, uint8_t **out, size_t *out_len);

static inline hubu_msg *hubu_msg_ref(hubu_msg *m) {
  m->refs++;
  return m;
}
void hubu_msg_unref(hubu_msg *m);

#endif

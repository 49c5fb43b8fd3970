/* msg.c — building and encoding a message once. Invariant: every pointer of
 * a hubu_msg points into its own single allocation, freed with the last ref. */
#include "msg.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"

hubu_msg *hubu_msg_new(const char *session_id, uint64_t seq, uint64_t msg_id, const char *sender,
                       const char *sender_device, uint64_t client_id, const uint8_t *body, size_t body_len,
                       const char *content_type, const uint8_t *meta, size_t meta_len, uint64_t server_time_ms) {
  Hubu__V1__Message m = HUBU__V1__MESSAGE__INIT;
  m.session_id = (char *)session_id;
  m.seq = seq;
  m.msg_id = msg_id;
  m.sender = (char *)sender;
  m.sender_device = (char *)sender_device;
  m.client_id = client_id;
  m.body.data = (uint8_t *)body;
  m.body.len = body_len;
  m.content_type = (char *)(content_type ? content_type : "");
  m.server_time_ms = server_time_ms;
  size_t packed = protobuf_c_message_get_packed_size(&m.base) + meta_len; /* meta appended: fields merge */
  size_t entry = 1 + hubu_varint_size(packed) + packed;
  size_t l_sess = strlen(session_id) + 1, l_send = strlen(sender) + 1, l_dev = strlen(sender_device) + 1,
         l_ct = strlen(m.content_type) + 1;
  /* The body is held once: in the encoded entry (field 7, after fields 1-6). */
  Hubu__V1__Message head = m;
  head.body.len = 0;
  head.body.data = NULL;
  head.content_type = (char *)"";
  head.server_time_ms = 0;
  size_t body_off =
      1 + hubu_varint_size(packed) + protobuf_c_message_get_packed_size(&head.base) + 1 + hubu_varint_size(body_len);
  hubu_msg *msg = malloc(sizeof *msg + l_sess + l_send + l_dev + l_ct + meta_len + entry);
  if (!msg) return NULL;
  char *p = (char *)(msg + 1);
  msg->refs = 1;
  msg->seq = seq;
  msg->msg_id = msg_id;
  msg->client_id = client_id;
  msg->server_time_ms = server_time_ms;
  msg->log_pos = 0;
  msg->session_id = memcpy(p, session_id, l_sess), p += l_sess;
  msg->sender = memcpy(p, sender, l_send), p += l_send;
  msg->sender_device = memcpy(p, sender_device, l_dev), p += l_dev;
  msg->content_type = memcpy(p, m.content_type, l_ct), p += l_ct;
  msg->body_len = body_len;
  msg->meta = meta_len ? memcpy(p, meta, meta_len) : (uint8_t *)p, p += meta_len;
  msg->meta_len = meta_len;
  uint8_t *e = (uint8_t *)p;
  size_t off = 0;
  e[off++] = 0x0A; /* Push.messages, field 1, length-delimited */
  off += hubu_varint_put(e + off, packed);
  off += protobuf_c_message_pack(&m.base, e + off);
  if (meta_len) memcpy(e + off, meta, meta_len);
  msg->body = body_len ? e + body_off : e;
  msg->push_entry = e;
  msg->push_entry_len = entry;
  return msg;
}

int hubu_msg_pack_meta(size_t n_meta, Hubu__V1__Send__MetaEntry **meta, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  if (!n_meta) return 0;
  Hubu__V1__Message__MetaEntry *entries = calloc(n_meta, sizeof *entries);
  Hubu__V1__Message__MetaEntry **ptrs = calloc(n_meta, sizeof *ptrs);
  int r = -1;
  if (!entries || !ptrs) goto done;
  for (size_t i = 0; i < n_meta; i++) {
    hubu__v1__message__meta_entry__init(&entries[i]);
    entries[i].key = meta[i]->key;
    entries[i].value = meta[i]->value;
    ptrs[i] = &entries[i];
  }
  Hubu__V1__Message m = HUBU__V1__MESSAGE__INIT;
  m.n_meta = n_meta;
  m.meta = ptrs;
  size_t len = protobuf_c_message_get_packed_size(&m.base);
  if (!(*out = malloc(len ? len : 1))) goto done;
  *out_len = protobuf_c_message_pack(&m.base, *out);
  r = 0;
done:
  free(ptrs);
  free(entries);
  return r;
}

void hubu_msg_unref(hubu_msg *m) {
  if (m && --m->refs == 0) free(m);
}

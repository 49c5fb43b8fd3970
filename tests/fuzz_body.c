/* fuzz_body.c — what the server's own code makes of a frame body, fed
 * directly: the first input byte chooses the frame type, the rest is the
 * body. fuzz_frame reaches the same bodies behind frame headers; this target
 * checks the project code that judges and re-encodes them:
 *  - hubu_wire_strings_ok (lib/wire.c, its own walk of the wire format) never
 *    passes a body whose string fields, as protobuf-c reads them, hold a NUL
 *    or malformed UTF-8. protobuf-c's reading is seen through a twin of each
 *    descriptor whose string fields are bytes fields (so nothing is cut at a
 *    NUL), unpacked from the same bytes;
 *  - every session id that hubu_session_id_parse accepts has the grammar
 *    session_id.h states, and its spans are the ids in it;
 *  - a SEND that decodes becomes a stored message (hubu_msg_pack_meta,
 *    hubu_msg_new) whose hand-placed body pointer and Push entry decode back
 *    to the same fields.
 * libFuzzer entry point; built with -DHUBU_FUZZ_REPLAY it is a plain program
 * replaying a corpus and 20,000 random and mutated bodies from a fixed seed
 * (a ctest test):
 *   fuzz_body_replay CORPUS_DIR...        replays
 *   fuzz_body_replay --write-seeds DIR    writes the seeds (tests/fuzz_corpus/body) */
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "hubu.pb-c.h"
#include "msg.h"
#include "session_id.h"
#include "token.h"
#include "utf8.h"
#include "wire.h"

#define FUZZ_ASSERT(cond)                                                               \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

/* The frame types with a body, in the order the first input byte picks them. */
static const struct {
  uint8_t type;
  const ProtobufCMessageDescriptor *d;
} types[] = {
    {HUBU_FRAME_HELLO, &hubu__v1__hello__descriptor},
    {HUBU_FRAME_HELLO_OK, &hubu__v1__hello_ok__descriptor},
    {HUBU_FRAME_PING, &hubu__v1__ping__descriptor},
    {HUBU_FRAME_ERROR, &hubu__v1__error__descriptor},
    {HUBU_FRAME_GOAWAY, &hubu__v1__go_away__descriptor},
    {HUBU_FRAME_SEND, &hubu__v1__send__descriptor},
    {HUBU_FRAME_SEND_ACK, &hubu__v1__send_ack__descriptor},
    {HUBU_FRAME_PUSH, &hubu__v1__push__descriptor},
    {HUBU_FRAME_DELIVER_ACK, &hubu__v1__deliver_ack__descriptor},
    {HUBU_FRAME_SYNC, &hubu__v1__sync_request__descriptor},
    {HUBU_FRAME_SYNC_RESULT, &hubu__v1__sync_result__descriptor},
    {HUBU_FRAME_PULL, &hubu__v1__pull_request__descriptor},
    {HUBU_FRAME_PULL_RESULT, &hubu__v1__pull_result__descriptor},
    {HUBU_FRAME_PULL_HINT, &hubu__v1__pull_hint__descriptor},
    {HUBU_FRAME_CALL, &hubu__v1__call__descriptor},
    {HUBU_FRAME_CALL_RESULT, &hubu__v1__call_result__descriptor},
    {HUBU_FRAME_EVENT, &hubu__v1__event__descriptor},
};
#define N_TYPES (sizeof types / sizeof types[0])

typedef struct {
  unsigned long decoded, rejected;       /* bodies protobuf-c took / refused */
  unsigned long strings_ok, strings_bad; /* ... of the decoded, by hubu_wire_strings_ok */
  unsigned long
      stricter; /* strings_ok refused, yet the twin's strings are fine (a bad one was overwritten by a later one) */
  unsigned long session_ids, session_ids_ok;
  unsigned long sends_stored; /* SENDs round-tripped through hubu_msg_new */
} fuzz_stats;

static fuzz_stats stats;

/* ---- the twin descriptors: string fields read as bytes ---------------------- */

typedef struct {
  const ProtobufCMessageDescriptor *orig;
  ProtobufCMessageDescriptor twin;
  ProtobufCFieldDescriptor fields[16];
} twin_entry;

static twin_entry twins[32];
static size_t n_twins;

static size_t value_size(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_STRING: return sizeof(void *);
    default: return 4; /* 32-bit integers, enums, float */
  }
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

/* The twin of d: same fields and numbers, strings as bytes, its own layout
 * (offsets recomputed; defaults by protobuf-c's generic init). */
static const ProtobufCMessageDescriptor *twin_of(const ProtobufCMessageDescriptor *d) {
  for (size_t i = 0; i < n_twins; i++)
    if (twins[i].orig == d) return &twins[i].twin;
  FUZZ_ASSERT(n_twins < sizeof twins / sizeof twins[0] && d->n_fields <= 16);
  twin_entry *t = &twins[n_twins++];
  t->orig = d;
  t->twin = *d;
  size_t off = sizeof(ProtobufCMessage);
  for (unsigned i = 0; i < d->n_fields; i++) {
    ProtobufCFieldDescriptor f = d->fields[i];
    FUZZ_ASSERT(f.label == PROTOBUF_C_LABEL_NONE || f.label == PROTOBUF_C_LABEL_REPEATED); /* proto3, no oneof */
    FUZZ_ASSERT(!(f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF));
    if (f.type == PROTOBUF_C_TYPE_STRING) {
      f.type = PROTOBUF_C_TYPE_BYTES;
      f.default_value = NULL;
    } else if (f.type == PROTOBUF_C_TYPE_MESSAGE) {
      f.descriptor = twin_of(f.descriptor);
    }
    off = align8(off);
    if (f.label == PROTOBUF_C_LABEL_REPEATED) {
      f.quantifier_offset = (unsigned)off;
      off += sizeof(size_t);
      f.offset = (unsigned)off;
      off += sizeof(void *);
    } else {
      f.offset = (unsigned)off;
      off += value_size(f.type);
    }
    t->fields[i] = f;
  }
  t->twin.fields = t->fields;
  t->twin.sizeof_message = align8(off);
  t->twin.message_init = NULL;
  return &t->twin;
}

static int bytes_valid(const ProtobufCBinaryData *b) {
  return !b->len || hubu_utf8_valid((const char *)b->data, b->len, 0);
}

/* Every string field of m (a twin of orig), submessages included, is
 * well-formed UTF-8 without a NUL. */
static int twin_strings_valid(const ProtobufCMessageDescriptor *orig, const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *t = m->descriptor;
  for (unsigned i = 0; i < orig->n_fields; i++) {
    const ProtobufCFieldDescriptor *of = &orig->fields[i], *tf = &t->fields[i];
    const char *at = (const char *)m + tf->offset;
    size_t n = tf->label == PROTOBUF_C_LABEL_REPEATED ? *(const size_t *)((const char *)m + tf->quantifier_offset) : 1;
    if (of->type == PROTOBUF_C_TYPE_STRING) {
      const ProtobufCBinaryData *v =
          tf->label == PROTOBUF_C_LABEL_REPEATED ? *(ProtobufCBinaryData *const *)at : (const ProtobufCBinaryData *)at;
      for (size_t k = 0; k < n; k++)
        if (!bytes_valid(&v[k])) return 0;
    } else if (of->type == PROTOBUF_C_TYPE_MESSAGE) {
      ProtobufCMessage *const *v = tf->label == PROTOBUF_C_LABEL_REPEATED ? *(ProtobufCMessage *const *const *)at
                                                                          : (ProtobufCMessage *const *)at;
      for (size_t k = 0; k < n; k++)
        if (v[k] && !twin_strings_valid(of->descriptor, v[k])) return 0;
    }
  }
  return 1;
}

/* ---- session ids -------------------------------------------------------------- */

static void check_session_id(const char *id) {
  size_t len = strlen(id);
  hubu_session_id sid;
  int kind = hubu_session_id_parse(id, len, &sid);
  FUZZ_ASSERT(kind == hubu_session_id_check(id, len));
  stats.session_ids++;
  if (kind < 0) return;
  stats.session_ids_ok++;
  FUZZ_ASSERT(len >= 3 && len <= HUBU_SESSION_ID_MAX);
  for (size_t i = 0; i < len; i++) FUZZ_ASSERT((unsigned char)id[i] >= 0x21 && (unsigned char)id[i] <= 0x7e);
  FUZZ_ASSERT(memchr(id, ':', len) != NULL);
  if (kind == HUBU_SESSION_DIRECT) {
    FUZZ_ASSERT(sid.a == id + 2 && sid.a_len + sid.b_len + 3 == len && sid.b == sid.a + sid.a_len + 1);
    FUZZ_ASSERT(!memcmp(id, "d:", 2) && id[2 + sid.a_len] == ':');
    FUZZ_ASSERT(hubu_id_valid(sid.a, sid.a_len) && hubu_id_valid(sid.b, sid.b_len));
    size_t n = sid.a_len < sid.b_len ? sid.a_len : sid.b_len;
    int cmp = memcmp(sid.a, sid.b, n);
    FUZZ_ASSERT(cmp < 0 || (cmp == 0 && sid.a_len < sid.b_len));
    char user[HUBU_SESSION_ID_MAX + 1];
    memcpy(user, sid.a, sid.a_len);
    user[sid.a_len] = '\0';
    FUZZ_ASSERT(hubu_session_id_has_user(&sid, user));
    memcpy(user, sid.b, sid.b_len);
    user[sid.b_len] = '\0';
    FUZZ_ASSERT(hubu_session_id_has_user(&sid, user));
    FUZZ_ASSERT(!hubu_session_id_has_user(&sid, id));
  } else if (kind == HUBU_SESSION_GROUP) {
    FUZZ_ASSERT(!memcmp(id, "g:", 2) && sid.a == id + 2 && sid.a_len == len - 2 && hubu_id_valid(sid.a, sid.a_len));
    FUZZ_ASSERT(!hubu_session_id_has_user(&sid, sid.a));
  } else {
    const char *colon = memchr(id, ':', len); /* a prefix, then something after its colon */
    FUZZ_ASSERT(kind == HUBU_SESSION_CUSTOM && colon > id && colon < id + len - 1);
    FUZZ_ASSERT(memcmp(id, "d:", 2) != 0 && memcmp(id, "g:", 2) != 0);
  }
}

/* Every field named session_id of m, submessages included. */
static void check_session_ids(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *at = (const char *)m + f->offset;
    if (f->type == PROTOBUF_C_TYPE_STRING && f->label == PROTOBUF_C_LABEL_NONE && !strcmp(f->name, "session_id")) {
      check_session_id(*(char *const *)at);
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
      ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)at;
      for (size_t k = 0; k < n; k++) check_session_ids(v[k]);
    }
  }
}

/* ---- a SEND stored: hubu_msg_new's encoding against protobuf-c's decoding ----- */

static void check_stored_send(const Hubu__V1__Send *s) {
  uint8_t *meta = NULL;
  size_t meta_len = 0;
  FUZZ_ASSERT(hubu_msg_pack_meta(s->n_meta, s->meta, &meta, &meta_len) == 0);
  hubu_msg *msg = hubu_msg_new(s->session_id, 7, 99, "alice", "phone", s->client_id, s->body.data, s->body.len,
                               s->content_type, meta, meta_len, 1700000000000u);
  FUZZ_ASSERT(msg != NULL);
  FUZZ_ASSERT(msg->body_len == s->body.len);
  if (s->body.len) {
    FUZZ_ASSERT(msg->body > msg->push_entry && msg->body + s->body.len <= msg->push_entry + msg->push_entry_len);
    FUZZ_ASSERT(!memcmp(msg->body, s->body.data, s->body.len));
  }
  Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, msg->push_entry_len, msg->push_entry);
  FUZZ_ASSERT(p != NULL && p->n_messages == 1);
  const Hubu__V1__Message *m = p->messages[0];
  FUZZ_ASSERT(!strcmp(m->session_id, s->session_id) && !strcmp(m->sender, "alice") &&
              !strcmp(m->sender_device, "phone"));
  FUZZ_ASSERT(m->seq == 7 && m->msg_id == 99 && m->client_id == s->client_id && m->server_time_ms == 1700000000000u);
  FUZZ_ASSERT(!strcmp(m->content_type, s->content_type ? s->content_type : ""));
  FUZZ_ASSERT(m->body.len == s->body.len && (!m->body.len || !memcmp(m->body.data, s->body.data, m->body.len)));
  FUZZ_ASSERT(m->n_meta == s->n_meta);
  for (size_t i = 0; i < m->n_meta; i++)
    FUZZ_ASSERT(!strcmp(m->meta[i]->key, s->meta[i]->key) && !strcmp(m->meta[i]->value, s->meta[i]->value));
  /* The meta bytes alone are a valid Message with the same entries. */
  Hubu__V1__Message *alone = hubu__v1__message__unpack(NULL, msg->meta_len, msg->meta);
  FUZZ_ASSERT(alone != NULL && alone->n_meta == s->n_meta);
  hubu__v1__message__free_unpacked(alone, NULL);
  hubu__v1__push__free_unpacked(p, NULL);
  hubu_msg_unref(msg);
  free(meta);
  stats.sends_stored++;
}

static void run_one(const uint8_t *data, size_t size) {
  static const uint8_t empty[1];
  uint8_t pick = size ? data[0] : 0;
  const uint8_t *body = size > 1 ? data + 1 : empty;
  size_t len = size > 1 ? size - 1 : 0;
  const ProtobufCMessageDescriptor *d = types[pick % N_TYPES].d;
  int strings_ok = hubu_wire_strings_ok(d, body, len);
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, body);
  ProtobufCMessage *t = protobuf_c_message_unpack(twin_of(d), NULL, len, body);
  FUZZ_ASSERT(!m == !t); /* strings and bytes are read alike */
  if (!m) {
    stats.rejected++;
    return;
  }
  stats.decoded++;
  int valid = twin_strings_valid(d, t);
  if (strings_ok) {
    FUZZ_ASSERT(valid); /* the check never passes a string protobuf-c cuts or that is not UTF-8 */
    stats.strings_ok++;
    check_session_ids(m);
  } else {
    stats.strings_bad++;
    if (valid) stats.stricter++;
  }
  if (d == &hubu__v1__send__descriptor) check_stored_send((const Hubu__V1__Send *)m);
  protobuf_c_message_free_unpacked(t, NULL);
  protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run_one(data, size);
  return 0;
}

#ifdef HUBU_FUZZ_REPLAY
/* ---- replay: a plain program for ctest ---------------------------------------- */
#include <dirent.h>

#include "buf.h"

static uint64_t rng_state = 0xB0D1E5F00DBEEF01u;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717u;
}

static size_t type_index(const ProtobufCMessageDescriptor *d) {
  for (size_t i = 0; i < N_TYPES; i++)
    if (types[i].d == d) return i;
  abort();
}

/* Seeds: a selector byte and a packed body. */
typedef struct {
  const char *name;
  uint8_t bytes[512];
  size_t len;
} seed;

static seed seeds[8];
static size_t n_seeds;

static void add_seed(const char *name, const ProtobufCMessage *m) {
  seed *s = &seeds[n_seeds++];
  s->name = name;
  s->bytes[0] = (uint8_t)type_index(m->descriptor);
  size_t n = protobuf_c_message_get_packed_size(m);
  FUZZ_ASSERT(n + 1 <= sizeof s->bytes);
  s->len = 1 + protobuf_c_message_pack(m, s->bytes + 1);
}

static void build_seeds(void) {
  static uint8_t payload[] = {0x00, 0x01, 0xA5, 0x01, 0x10, 0xFF, '{', '}'};
  ProtobufCBinaryData bin = {sizeof payload, payload};
  Hubu__V1__Hello hello = HUBU__V1__HELLO__INIT;
  hello.protocol_version = 1;
  hello.user_id = "alice";
  hello.device_id = "phone";
  hello.token = "v1.alice.1700000000.94ef18601ffcc83c41f2340d94a0bec7bffd03f15ab6a6fac2da4370bd4aefd4";
  hello.client_info = "fuzz/1 \xc3\xa9";
  add_seed("hello", &hello.base);

  Hubu__V1__Send__MetaEntry e1 = HUBU__V1__SEND__META_ENTRY__INIT, e2 = HUBU__V1__SEND__META_ENTRY__INIT;
  e1.key = "mention";
  e1.value = "bob";
  e2.key = "reply_to";
  e2.value = "42";
  Hubu__V1__Send__MetaEntry *meta[] = {&e1, &e2};
  Hubu__V1__Send send = HUBU__V1__SEND__INIT;
  send.client_id = 42;
  send.session_id = "d:alice:bob";
  send.body = bin;
  send.content_type = "text/plain";
  send.n_meta = 2;
  send.meta = meta;
  send.client_time_ms = 1700000000123u;
  add_seed("send", &send.base);
  send.session_id = "g:team";
  send.n_meta = 0;
  add_seed("send_group", &send.base);

  Hubu__V1__Message__MetaEntry me = HUBU__V1__MESSAGE__META_ENTRY__INIT;
  me.key = "k";
  me.value = "v";
  Hubu__V1__Message__MetaEntry *mmeta[] = {&me};
  Hubu__V1__Message msg = HUBU__V1__MESSAGE__INIT;
  msg.session_id = "room:lobby";
  msg.seq = 10;
  msg.msg_id = 99;
  msg.sender = "bob";
  msg.sender_device = "laptop";
  msg.body = bin;
  msg.content_type = "application/json";
  msg.n_meta = 1;
  msg.meta = mmeta;
  Hubu__V1__Message *msgs[] = {&msg, &msg};
  Hubu__V1__Push push = HUBU__V1__PUSH__INIT;
  push.n_messages = 2;
  push.messages = msgs;
  add_seed("push", &push.base);

  Hubu__V1__Cursor c1 = HUBU__V1__CURSOR__INIT, c2 = HUBU__V1__CURSOR__INIT;
  c1.session_id = "g:team";
  c1.seq = 10;
  c2.session_id = "d:alice:bob";
  c2.seq = 9;
  Hubu__V1__Cursor *cursors[] = {&c1, &c2};
  Hubu__V1__SyncRequest sync = HUBU__V1__SYNC_REQUEST__INIT;
  sync.request_id = 5;
  sync.n_known = 2;
  sync.known = cursors;
  add_seed("sync", &sync.base);

  Hubu__V1__PullRequest pull = HUBU__V1__PULL_REQUEST__INIT;
  pull.request_id = 6;
  pull.session_id = "d:bob:carol";
  pull.after_seq = 3;
  pull.limit = 50;
  add_seed("pull", &pull.base);

  Hubu__V1__Call call = HUBU__V1__CALL__INIT;
  call.request_id = 8;
  call.method = "rooms.join";
  call.payload = bin;
  add_seed("call", &call.base);
}

/* One to four mutations of a copy of a seed. */
static size_t mutate(const seed *s, uint8_t *out, size_t cap) {
  size_t n = s->len;
  memcpy(out, s->bytes, n);
  int rounds = 1 + (int)(rng() % 4);
  for (int r = 0; r < rounds; r++) {
    uint64_t x = rng();
    size_t at = n > 1 ? 1 + (size_t)(rng() % (n - 1)) : n;
    switch (x % 8) {
      case 0:
        if (at < n) out[at] ^= (uint8_t)(1u << (x >> 8) % 8);
        break;
      case 1: { /* a byte that matters to UTF-8 or the wire format */
        static const uint8_t v[] = {0x00, 0x80, 0xC0, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xF5, 0xFF, 0x0A, 0x12, 0x7F};
        if (at < n) out[at] = v[(x >> 8) % sizeof v];
        break;
      }
      case 2: n = at; break;
      case 3: { /* delete */
        size_t k = 1 + (x >> 8) % 8;
        if (at + k > n) k = n - at;
        memmove(out + at, out + at + k, n - at - k);
        n -= k;
        break;
      }
      case 4: { /* duplicate a range */
        size_t k = 1 + (x >> 8) % 32;
        if (at + k > n) k = n - at;
        if (n + k > cap) break;
        memmove(out + at + k, out + at, n - at);
        n += k;
        break;
      }
      case 5: /* another type for the same bytes */ out[0] = (uint8_t)(x >> 8); break;
      case 6: { /* a string field with bytes that are not UTF-8 appended */
        static const uint8_t field[] = {0x12, 0x04, 'a', 0x00, 0xC3, 0x28};
        if (n + sizeof field > cap) break;
        memcpy(out + n, field, sizeof field);
        if ((x >> 8) % 2) out[n + 3] = 'b';
        n += sizeof field;
        break;
      }
      default:
        for (size_t k = 1 + (x >> 8) % 4; k > 0 && at < n; k--) out[at++] = (uint8_t)rng();
        break;
    }
  }
  return n;
}

static int replay_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return -1;
  }
  int files = 0;
  struct dirent *e;
  static uint8_t buf[1 << 20];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    run_one(buf, n);
    files++;
  }
  closedir(d);
  return files;
}

static int write_seeds(const char *dir) {
  for (size_t i = 0; i < n_seeds; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, seeds[i].name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(seeds[i].bytes, 1, seeds[i].len, f) != seeds[i].len || fclose(f) != 0) {
      perror(path);
      return 1;
    }
  }
  printf("wrote %zu seeds to %s\n", n_seeds, dir);
  return 0;
}

#define N_GENERATED 20000

int main(int argc, char **argv) {
  build_seeds();
  if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) return write_seeds(argv[2]);
  int failed = 0;

  /* 1. The seeds decode whole, with their strings accepted. */
  for (size_t i = 0; i < n_seeds; i++) {
    fuzz_stats before = stats;
    run_one(seeds[i].bytes, seeds[i].len);
    if (stats.strings_ok != before.strings_ok + 1) {
      fprintf(stderr, "seed %s: not decoded with its strings accepted\n", seeds[i].name);
      failed = 1;
    }
  }

  /* 2. The corpus. */
  int files = 0;
  for (int i = 1; i < argc; i++) {
    int n = replay_dir(argv[i]);
    if (n < 0)
      failed = 1;
    else
      files += n;
  }
  if (argc > 1 && files == 0) {
    fprintf(stderr, "no corpus files found\n");
    failed = 1;
  }

  /* 3. Random and mutated bodies from a fixed seed. */
  static uint8_t in[4096];
  for (int i = 0; i < N_GENERATED; i++) {
    size_t n;
    if (i % 4 == 0) {
      n = 1 + (size_t)(rng() % 64);
      for (size_t k = 0; k < n; k++) in[k] = (uint8_t)rng();
    } else {
      n = mutate(&seeds[rng() % n_seeds], in, sizeof in);
    }
    run_one(in, n);
  }

  printf(
      "%zu seeds, %d corpus files, %d generated: %lu decoded (%lu with strings accepted, %lu refused, %lu of those "
      "only for a string a later one replaced), %lu refused by protobuf-c; %lu session ids (%lu valid); %lu SENDs "
      "stored\n",
      n_seeds, files, N_GENERATED, stats.decoded, stats.strings_ok, stats.strings_bad, stats.stricter, stats.rejected,
      stats.session_ids, stats.session_ids_ok, stats.sends_stored);
  if (stats.strings_ok < 1000 || stats.strings_bad < 300 || stats.rejected < 1000 || stats.session_ids_ok < 500 ||
      stats.sends_stored < 500) {
    fprintf(stderr, "generated bodies did not reach every outcome\n");
    failed = 1;
  }
  return failed;
}
#endif

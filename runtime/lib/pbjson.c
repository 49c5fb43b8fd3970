/* pbjson.c — protobuf messages in their canonical JSON form, driven by
 * protobuf-c's descriptors (see pbjson.h). Writing walks an unpacked message;
 * reading walks jansson's tree and emits wire bytes field by field. */
#include "pbjson.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "hubu.pb-c.h"
#include "json.h"
#include "wire.h"

#define MAX_DEPTH 16 /* hubu.proto nests 3 deep; deeper JSON is not one of its messages */

/* ---- names ---- */

/* session_id -> sessionId (protobuf's json_name rule). n: out's size. */
static void camel_name(const char *name, char *out, size_t n) {
  size_t j = 0;
  int up = 0;
  for (const char *p = name; *p && j + 1 < n; p++) {
    if (*p == '_') {
      up = 1;
      continue;
    }
    out[j++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
    up = 0;
  }
  out[j] = 0;
}

/* A map<K, V> field is protobuf-c's repeated FooEntry {key = 1; value = 2}. */
static int is_map_entry(const ProtobufCMessageDescriptor *d) {
  size_t n = strlen(d->name);
  return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 && d->fields[0].id == 1 &&
         d->fields[1].id == 2 && strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int hubu_base64_append(hubu_buf *out, const uint8_t *data, size_t len) {
  if (!len) return 0;
  uint8_t *w = hubu_buf_reserve(out, (len + 2) / 3 * 4);
  if (!w) return -1;
  uint8_t *p = w;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
    *p++ = (uint8_t)b64[v >> 18];
    *p++ = (uint8_t)b64[(v >> 12) & 63];
    *p++ = (uint8_t)b64[(v >> 6) & 63];
    *p++ = (uint8_t)b64[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
    *p++ = (uint8_t)b64[v >> 18];
    *p++ = (uint8_t)b64[(v >> 12) & 63];
    *p++ = i + 1 < len ? (uint8_t)b64[(v >> 6) & 63] : '=';
    *p++ = '=';
  }
  out->len += (size_t)(p - w);
  return 0;
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

long hubu_base64_decode(const char *s, size_t len, uint8_t *out) {
  while (len && s[len - 1] == '=') len--; /* padding is optional */
  if (len % 4 == 1) return -1;
  uint32_t acc = 0;
  int bits = 0;
  long n = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value(s[i]);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (uint8_t)(acc >> bits);
    }
  }
  if (bits && (acc & ((1u << bits) - 1))) return -1; /* non-zero trailing bits: not canonical base64 */
  return n;
}

/* ---- writing ---- */

static int put(hubu_buf *out, const char *s) { return hubu_buf_append(out, s, strlen(s)); }

static int write_message(hubu_buf *out, const ProtobufCMessage *m, int depth);

/* One value of field f at p (a pointer into the message or a repeated array). */
static int write_value(hubu_buf *out, const ProtobufCFieldDescriptor *f, const void *p, int depth) {
  char num[40];
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: snprintf(num, sizeof num, "%" PRId32, *(const int32_t *)p); return put(out, num);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: snprintf(num, sizeof num, "%" PRIu32, *(const uint32_t *)p); return put(out, num);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
      snprintf(num, sizeof num, "\"%" PRId64 "\"", *(const int64_t *)p);
      return put(out, num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
      snprintf(num, sizeof num, "\"%" PRIu64 "\"", *(const uint64_t *)p);
      return put(out, num);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
      double v = f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)p : *(const double *)p;
      if (isnan(v)) return put(out, "\"NaN\"");
      if (isinf(v)) return put(out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
      snprintf(num, sizeof num, "%.17g", v);
      return put(out, num);
    }
    case PROTOBUF_C_TYPE_BOOL: return put(out, *(const protobuf_c_boolean *)p ? "true" : "false");
    case PROTOBUF_C_TYPE_ENUM: {
      int v = *(const int *)p;
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
      if (ev) return hubu_json_append_string(out, ev->name, strlen(ev->name));
      snprintf(num, sizeof num, "%d", v); /* a value this build does not know: by number */
      return put(out, num);
    }
    case PROTOBUF_C_TYPE_STRING: {
      const char *s = *(char *const *)p;
      return hubu_json_append_string(out, s ? s : "", s ? strlen(s) : 0);
    }
    case PROTOBUF_C_TYPE_BYTES: {
      const ProtobufCBinaryData *b = p;
      return put(out, "\"") | hubu_base64_append(out, b->data, b->len) | put(out, "\"");
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
      const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
      if (!sub) return put(out, "{}");
      return write_message(out, sub, depth + 1);
    }
  }
  return -1;
}

/* Is the singular field f of m at its default (left out)? */
static int is_default(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const uint8_t *base = (const uint8_t *)m;
  const void *p = base + f->offset;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) return *(const uint32_t *)(base + f->quantifier_offset) != f->id;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
    return !*(const protobuf_c_boolean *)(base + f->quantifier_offset); /* proto3 optional: presence */
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_BOOL: return !*(const protobuf_c_boolean *)p;
    case PROTOBUF_C_TYPE_STRING: {
      const char *s = *(char *const *)p;
      return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(ProtobufCMessage *const *)p == NULL;
  }
  return 1;
}

static int write_message(hubu_buf *out, const ProtobufCMessage *m, int depth) {
  if (depth > MAX_DEPTH) return put(out, "{}");
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const uint8_t *base = (const uint8_t *)m;
  int rc = put(out, "{");
  int first = 1;
  char name[128];
  for (unsigned i = 0; i < d->n_fields && rc == 0; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    size_t count = 0;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      count = *(const size_t *)(base + f->quantifier_offset);
      if (!count) continue;
    } else if (is_default(m, f)) {
      continue;
    }
    camel_name(f->name, name, sizeof name);
    rc |= put(out, first ? "\"" : ",\"") | put(out, name) | put(out, "\":");
    first = 0;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
      rc |= write_value(out, f, base + f->offset, depth);
      continue;
    }
    const uint8_t *arr = *(uint8_t *const *)(base + f->offset);
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) { /* an object, key by key */
      const ProtobufCMessageDescriptor *ed = f->descriptor;
      rc |= put(out, "{");
      for (size_t k = 0; k < count && rc == 0; k++) {
        const uint8_t *entry = ((const uint8_t *const *)arr)[k];
        if (k) rc |= put(out, ",");
        if (ed->fields[0].type == PROTOBUF_C_TYPE_STRING) {
          rc |= write_value(out, &ed->fields[0], entry + ed->fields[0].offset, depth);
        } else { /* integer and bool keys are quoted */
          hubu_buf key = {0};
          rc |= write_value(&key, &ed->fields[0], entry + ed->fields[0].offset, depth);
          const char *kp = (const char *)hubu_buf_head(&key);
          size_t kl = hubu_buf_size(&key);
          if (kl && kp[0] == '"')
            rc |= hubu_buf_append(out, kp, kl);
          else
            rc |= put(out, "\"") | hubu_buf_append(out, kp, kl) | put(out, "\"");
          hubu_buf_free(&key);
        }
        rc |= put(out, ":") | write_value(out, &ed->fields[1], entry + ed->fields[1].offset, depth);
      }
      rc |= put(out, "}");
      continue;
    }
    size_t size;
    switch (f->type) {
      case PROTOBUF_C_TYPE_INT64:
      case PROTOBUF_C_TYPE_SINT64:
      case PROTOBUF_C_TYPE_SFIXED64:
      case PROTOBUF_C_TYPE_UINT64:
      case PROTOBUF_C_TYPE_FIXED64:
      case PROTOBUF_C_TYPE_DOUBLE: size = 8; break;
      case PROTOBUF_C_TYPE_BOOL: size = sizeof(protobuf_c_boolean); break;
      case PROTOBUF_C_TYPE_STRING:
      case PROTOBUF_C_TYPE_MESSAGE: size = sizeof(void *); break;
      case PROTOBUF_C_TYPE_BYTES: size = sizeof(ProtobufCBinaryData); break;
      default: size = 4; break;
    }
    rc |= put(out, "[");
    for (size_t k = 0; k < count && rc == 0; k++) {
      if (k) rc |= put(out, ",");
      rc |= write_value(out, f, arr + k * size, depth);
    }
    rc |= put(out, "]");
  }
  rc |= put(out, "}");
  return rc ? -1 : 0;
}

int hubu_pbjson_write(hubu_buf *out, const ProtobufCMessage *msg) { return write_message(out, msg, 0); }

/* ---- reading: JSON to wire bytes ---- */

typedef struct {
  char *why;
  size_t why_size;
  int nomem;
} reader;

static int fail(reader *r, const char *fmt, ...) {
  if (r->why && r->why_size && !r->why[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, r->why_size, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static int put_varint(reader *r, hubu_buf *out, uint64_t v) {
  uint8_t *p = hubu_buf_reserve(out, 10);
  if (!p) {
    r->nomem = 1;
    return -1;
  }
  out->len += hubu_varint_put(p, v);
  return 0;
}

static int put_raw(reader *r, hubu_buf *out, const void *p, size_t n) {
  if (hubu_buf_append(out, p, n) != 0) {
    r->nomem = 1;
    return -1;
  }
  return 0;
}

static int put_le(reader *r, hubu_buf *out, uint64_t v, int bytes) {
  uint8_t b[8];
  for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
  return put_raw(r, out, b, (size_t)bytes);
}

/* An integer from a JSON number or a decimal string, within [lo, hi] (signed) or [0, uhi] (unsigned). */
static int get_int(reader *r, const json_t *v, const char *name, int is_signed, int64_t lo, int64_t hi, uint64_t uhi,
                   uint64_t *out) {
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    if (is_signed ? (x < lo || x > hi) : (x < 0 || (uint64_t)x > uhi))
      return fail(r, "%s: %lld is out of range", name, (long long)x);
    *out = (uint64_t)x;
    return 0;
  }
  if (json_is_real(v)) {
    double x = json_real_value(v);
    if (x != floor(x) || (is_signed ? (x < (double)lo || x > (double)hi) : (x < 0 || x > (double)uhi)))
      return fail(r, "%s: %g is not an integer in range", name, x);
    *out = is_signed ? (uint64_t)(int64_t)x : (uint64_t)x;
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!n || n > 20 || (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
      return fail(r, "%s: \"%.24s\" is not a decimal integer", name, s);
    for (size_t i = 1; i < n; i++)
      if (s[i] < '0' || s[i] > '9') return fail(r, "%s: \"%.24s\" is not a decimal integer", name, s);
    errno = 0;
    if (is_signed) {
      long long x = strtoll(s, NULL, 10);
      if (errno || x < lo || x > hi) return fail(r, "%s: %s is out of range", name, s);
      *out = (uint64_t)x;
    } else {
      if (s[0] == '-') return fail(r, "%s: %s is out of range", name, s);
      unsigned long long x = strtoull(s, NULL, 10);
      if (errno || x > uhi) return fail(r, "%s: %s is out of range", name, s);
      *out = x;
    }
    return 0;
  }
  return fail(r, "%s: want an integer", name);
}

static int encode_message(reader *r, const ProtobufCMessageDescriptor *d, const json_t *obj, hubu_buf *out, int depth);

/* One value of field f (not null): its tag and encoding appended to out. */
static int encode_value(reader *r, const ProtobufCFieldDescriptor *f, const json_t *v, hubu_buf *out, int depth) {
  uint64_t x = 0;
  const char *name = f->name;
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
      if (get_int(r, v, name, 1, INT32_MIN, INT32_MAX, 0, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, (uint64_t)(int64_t)(int32_t)x);
    case PROTOBUF_C_TYPE_SINT32:
      if (get_int(r, v, name, 1, INT32_MIN, INT32_MAX, 0, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3) ||
             put_varint(r, out, (uint32_t)(((uint32_t)(int32_t)x << 1) ^ (uint32_t)((int32_t)x >> 31)));
    case PROTOBUF_C_TYPE_SFIXED32:
      if (get_int(r, v, name, 1, INT32_MIN, INT32_MAX, 0, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3 | 5) || put_le(r, out, (uint32_t)(int32_t)x, 4);
    case PROTOBUF_C_TYPE_UINT32:
      if (get_int(r, v, name, 0, 0, 0, UINT32_MAX, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, x);
    case PROTOBUF_C_TYPE_FIXED32:
      if (get_int(r, v, name, 0, 0, 0, UINT32_MAX, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3 | 5) || put_le(r, out, x, 4);
    case PROTOBUF_C_TYPE_INT64:
      if (get_int(r, v, name, 1, INT64_MIN, INT64_MAX, 0, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, x);
    case PROTOBUF_C_TYPE_SINT64:
      if (get_int(r, v, name, 1, INT64_MIN, INT64_MAX, 0, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, (x << 1) ^ (uint64_t)((int64_t)x >> 63));
    case PROTOBUF_C_TYPE_SFIXED64:
      if (get_int(r, v, name, 1, INT64_MIN, INT64_MAX, 0, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3 | 1) || put_le(r, out, x, 8);
    case PROTOBUF_C_TYPE_UINT64:
      if (get_int(r, v, name, 0, 0, 0, UINT64_MAX, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, x);
    case PROTOBUF_C_TYPE_FIXED64:
      if (get_int(r, v, name, 0, 0, 0, UINT64_MAX, &x)) return -1;
      return put_varint(r, out, (uint64_t)f->id << 3 | 1) || put_le(r, out, x, 8);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
      double dv;
      if (json_is_number(v)) {
        dv = json_number_value(v);
      } else if (json_is_string(v) && strcmp(json_string_value(v), "NaN") == 0) {
        dv = NAN;
      } else if (json_is_string(v) && strcmp(json_string_value(v), "Infinity") == 0) {
        dv = INFINITY;
      } else if (json_is_string(v) && strcmp(json_string_value(v), "-Infinity") == 0) {
        dv = -INFINITY;
      } else {
        return fail(r, "%s: want a number", name);
      }
      if (f->type == PROTOBUF_C_TYPE_FLOAT) {
        float fv = (float)dv;
        uint32_t bits;
        memcpy(&bits, &fv, 4);
        return put_varint(r, out, (uint64_t)f->id << 3 | 5) || put_le(r, out, bits, 4);
      }
      uint64_t bits;
      memcpy(&bits, &dv, 8);
      return put_varint(r, out, (uint64_t)f->id << 3 | 1) || put_le(r, out, bits, 8);
    }
    case PROTOBUF_C_TYPE_BOOL:
      if (!json_is_boolean(v)) return fail(r, "%s: want true or false", name);
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, json_is_true(v) ? 1 : 0);
    case PROTOBUF_C_TYPE_ENUM: {
      int64_t ev;
      if (json_is_string(v)) {
        const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, json_string_value(v));
        if (!e) return fail(r, "%s: unknown value \"%.40s\"", name, json_string_value(v));
        ev = e->value;
      } else if (json_is_integer(v)) {
        ev = json_integer_value(v);
        if (ev < INT32_MIN || ev > INT32_MAX) return fail(r, "%s: %lld is out of range", name, (long long)ev);
      } else {
        return fail(r, "%s: want an enum name", name);
      }
      return put_varint(r, out, (uint64_t)f->id << 3) || put_varint(r, out, (uint64_t)ev);
    }
    case PROTOBUF_C_TYPE_STRING:
      if (!json_is_string(v)) return fail(r, "%s: want a string", name);
      return put_varint(r, out, (uint64_t)f->id << 3 | 2) || put_varint(r, out, json_string_length(v)) ||
             put_raw(r, out, json_string_value(v), json_string_length(v));
    case PROTOBUF_C_TYPE_BYTES: {
      if (!json_is_string(v)) return fail(r, "%s: want base64 in a string", name);
      size_t n = json_string_length(v);
      uint8_t *tmp = malloc(n / 4 * 3 + 4);
      if (!tmp) {
        r->nomem = 1;
        return -1;
      }
      long got = hubu_base64_decode(json_string_value(v), n, tmp);
      int rc = got < 0 ? fail(r, "%s: not base64", name)
                       : (put_varint(r, out, (uint64_t)f->id << 3 | 2) || put_varint(r, out, (uint64_t)got) ||
                          put_raw(r, out, tmp, (size_t)got));
      free(tmp);
      return rc;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
      if (!json_is_object(v)) return fail(r, "%s: want an object", name);
      hubu_buf sub = {0};
      int rc = encode_message(r, f->descriptor, v, &sub, depth + 1);
      if (rc == 0)
        rc = put_varint(r, out, (uint64_t)f->id << 3 | 2) || put_varint(r, out, hubu_buf_size(&sub)) ||
             put_raw(r, out, hubu_buf_head(&sub), hubu_buf_size(&sub));
      hubu_buf_free(&sub);
      return rc;
    }
  }
  return fail(r, "%s: unsupported type", name);
}

/* A map field's object: one FooEntry {key, value} per member. */
static int encode_map(reader *r, const ProtobufCFieldDescriptor *f, const json_t *obj, hubu_buf *out, int depth) {
  if (!json_is_object(obj)) return fail(r, "%s: want an object", f->name);
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    hubu_buf entry = {0};
    json_t *key = ed->fields[0].type == PROTOBUF_C_TYPE_STRING ? json_string(k) : NULL;
    if (!key && ed->fields[0].type != PROTOBUF_C_TYPE_STRING) key = json_string(k); /* integer keys as strings */
    int rc = key ? 0 : -1;
    if (!key) r->nomem = 1;
    if (rc == 0) rc = encode_value(r, &ed->fields[0], key, &entry, depth + 1);
    json_decref(key);
    if (rc == 0 && !json_is_null(v)) rc = encode_value(r, &ed->fields[1], v, &entry, depth + 1);
    if (rc == 0)
      rc = put_varint(r, out, (uint64_t)f->id << 3 | 2) || put_varint(r, out, hubu_buf_size(&entry)) ||
           put_raw(r, out, hubu_buf_head(&entry), hubu_buf_size(&entry));
    hubu_buf_free(&entry);
    if (rc) return -1;
  }
  return 0;
}

static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d, const char *key) {
  char camel[128];
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (strcmp(f->name, key) == 0) return f;
    camel_name(f->name, camel, sizeof camel);
    if (strcmp(camel, key) == 0) return f;
  }
  return NULL;
}

static int encode_message(reader *r, const ProtobufCMessageDescriptor *d, const json_t *obj, hubu_buf *out, int depth) {
  if (depth > MAX_DEPTH) return fail(r, "nested too deep");
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    const ProtobufCFieldDescriptor *f = field_named(d, key);
    if (!f || json_is_null(v)) continue; /* unknown: ignored; null: the default */
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) {
        if (encode_map(r, f, v, out, depth)) return -1;
        continue;
      }
      if (!json_is_array(v)) return fail(r, "%s: want an array", f->name);
      size_t i;
      json_t *item;
      json_array_foreach(v, i, item) {
        if (json_is_null(item)) return fail(r, "%s[%zu]: null in an array", f->name, i);
        if (encode_value(r, f, item, out, depth)) return -1;
      }
      continue;
    }
    if (encode_value(r, f, v, out, depth)) return -1;
  }
  return 0;
}

static int encode_text(const ProtobufCMessageDescriptor *d, const json_t *obj, hubu_buf *out, char *why,
                       size_t why_size) {
  reader r = {why, why_size, 0};
  if (why && why_size) why[0] = 0;
  size_t mark = out->len;
  if (!json_is_object(obj)) return fail(&r, "want a JSON object for %s", d->short_name);
  if (encode_message(&r, d, obj, out, 0) == 0) return 0;
  out->len = mark < out->len ? mark : out->len; /* nothing half-written stays */
  return r.nomem ? -2 : -1;
}

static json_t *load(const char *text, size_t len, char *why, size_t why_size) {
  json_error_t err;
  json_t *root = json_loadb(text, len, 0, &err);
  if (!root && why && why_size) snprintf(why, why_size, "not JSON: %s at %d", err.text, err.position);
  return root;
}

int hubu_pbjson_parse(const ProtobufCMessageDescriptor *d, const char *text, size_t len, hubu_buf *out, char *why,
                      size_t why_size) {
  json_t *root = load(text, len, why, why_size);
  if (!root) return -1;
  int rc = encode_text(d, root, out, why, why_size);
  json_decref(root);
  return rc;
}

/* ---- frames ---- */

const ProtobufCMessageDescriptor *hubu_pbjson_frame_descriptor(uint8_t type) {
  switch (type) {
    case HUBU_FRAME_HELLO: return &hubu__v1__hello__descriptor;
    case HUBU_FRAME_HELLO_OK: return &hubu__v1__hello_ok__descriptor;
    case HUBU_FRAME_PING:
    case HUBU_FRAME_PONG: return &hubu__v1__ping__descriptor;
    case HUBU_FRAME_ERROR: return &hubu__v1__error__descriptor;
    case HUBU_FRAME_GOAWAY: return &hubu__v1__go_away__descriptor;
    case HUBU_FRAME_SEND: return &hubu__v1__send__descriptor;
    case HUBU_FRAME_SEND_ACK: return &hubu__v1__send_ack__descriptor;
    case HUBU_FRAME_PUSH: return &hubu__v1__push__descriptor;
    case HUBU_FRAME_DELIVER_ACK: return &hubu__v1__deliver_ack__descriptor;
    case HUBU_FRAME_SYNC: return &hubu__v1__sync_request__descriptor;
    case HUBU_FRAME_SYNC_RESULT: return &hubu__v1__sync_result__descriptor;
    case HUBU_FRAME_PULL: return &hubu__v1__pull_request__descriptor;
    case HUBU_FRAME_PULL_RESULT: return &hubu__v1__pull_result__descriptor;
    case HUBU_FRAME_PULL_HINT: return &hubu__v1__pull_hint__descriptor;
    case HUBU_FRAME_CALL: return &hubu__v1__call__descriptor;
    case HUBU_FRAME_CALL_RESULT: return &hubu__v1__call_result__descriptor;
    case HUBU_FRAME_EVENT: return &hubu__v1__event__descriptor;
  }
  return NULL;
}

static uint8_t type_by_name(const char *name) {
  for (unsigned t = 1; t < 256; t++)
    if (hubu_frame_type_known((uint8_t)t) && strcmp(hubu_frame_type_name((uint8_t)t), name) == 0) return (uint8_t)t;
  return 0;
}

/* Appends a frame header for the body that follows at out[mark + 8..]. */
static int close_frame(hubu_buf *out, size_t mark, uint8_t type) {
  size_t body = out->len - mark - HUBU_FRAME_HEADER_SIZE;
  if (body > UINT32_MAX) return -1;
  hubu_frame_header_encode(out->data + mark, type, 0, (uint32_t)body);
  return 0;
}

hubu_pbjson_frame_status hubu_pbjson_frame_in(const char *text, size_t len, hubu_buf *out, uint8_t *type, char *why,
                                              size_t why_size) {
  *type = 0;
  if (why && why_size) why[0] = 0;
  json_t *root = load(text, len, why, why_size);
  if (!root) return HUBU_PBJSON_FRAME_BAD;
  hubu_pbjson_frame_status st = HUBU_PBJSON_FRAME_OK;
  json_t *t = json_is_object(root) ? json_object_get(root, "type") : NULL;
  if (!t || !json_is_string(t)) {
    if (why && why_size) snprintf(why, why_size, "want {\"type\": NAME, \"body\": {...}}");
    st = HUBU_PBJSON_FRAME_BAD;
    goto done;
  }
  *type = type_by_name(json_string_value(t));
  const ProtobufCMessageDescriptor *d = *type ? hubu_pbjson_frame_descriptor(*type) : NULL;
  size_t mark = out->len;
  if (!hubu_buf_reserve(out, HUBU_FRAME_HEADER_SIZE)) {
    st = HUBU_PBJSON_FRAME_NOMEM;
    goto done;
  }
  out->len += HUBU_FRAME_HEADER_SIZE;
  if (!d) {
    *type = 0;
    if (why && why_size) snprintf(why, why_size, "unknown frame type \"%.40s\"", json_string_value(t));
    st = HUBU_PBJSON_FRAME_UNKNOWN_TYPE;
  } else {
    json_t *body = json_object_get(root, "body");
    if (body && !json_is_null(body)) {
      int rc = encode_text(d, body, out, why, why_size);
      if (rc == -2)
        st = HUBU_PBJSON_FRAME_NOMEM;
      else if (rc)
        st = HUBU_PBJSON_FRAME_BAD_BODY;
    }
  }
  if (st == HUBU_PBJSON_FRAME_OK || st == HUBU_PBJSON_FRAME_UNKNOWN_TYPE) {
    if (close_frame(out, mark, *type) != 0) st = HUBU_PBJSON_FRAME_BAD_BODY;
  }
  if (st != HUBU_PBJSON_FRAME_OK && st != HUBU_PBJSON_FRAME_UNKNOWN_TYPE) out->len = mark;
done:
  json_decref(root);
  return st;
}

int hubu_pbjson_frame_out(const uint8_t *frame, size_t len, hubu_buf *out) {
  if (len < HUBU_FRAME_HEADER_SIZE) return 0;
  uint8_t type = frame[2];
  const ProtobufCMessageDescriptor *d = hubu_pbjson_frame_descriptor(type);
  int rc = put(out, "{\"type\":\"") | put(out, hubu_frame_type_name(type)) | put(out, "\",\"body\":");
  ProtobufCMessage *m =
      d ? protobuf_c_message_unpack(d, NULL, len - HUBU_FRAME_HEADER_SIZE, frame + HUBU_FRAME_HEADER_SIZE) : NULL;
  rc |= m ? write_message(out, m, 0) : put(out, "{}");
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  rc |= put(out, "}");
  return rc ? -1 : 0;
}

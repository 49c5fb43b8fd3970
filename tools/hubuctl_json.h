/* hubuctl_json.h — a small JSON reader for hubuctl: parses an answer of the
 * admin listener into a tree (objects keep their key order) so a command can
 * print it as a table. Reads JSON text (RFC 8259) only; never writes it. */
#ifndef HUBUCTL_JSON_H
#define HUBUCTL_JSON_H

#include <stddef.h>

/* How deep arrays and objects may nest: a document with more containers
 * inside one another is refused ("nested too deeply"). */
#define HJ_MAX_DEPTH 64

typedef enum { HJ_NULL, HJ_BOOL, HJ_NUMBER, HJ_STRING, HJ_ARRAY, HJ_OBJECT } hj_type;

typedef struct hj_value {
  hj_type type;
  int boolean;
  double number;
  char *string;           /* HJ_STRING: decoded UTF-8, NUL-terminated (owned) */
  size_t n;               /* HJ_ARRAY, HJ_OBJECT: how many items */
  struct hj_value *items; /* owned */
  char **keys;            /* HJ_OBJECT: the key of each item (owned) */
} hj_value;

/* Parses len bytes of text into *out (free with hj_free). 0, or -1 with why
 * (and the byte offset) in err; *out is then empty. Never reads a byte
 * outside text[0..len), so text need not be NUL-terminated; a NUL byte
 * outside a string is an error, inside a string too (raw control bytes are
 * not JSON); \u0000 and unpaired surrogates decode to U+FFFD. */
int hj_parse(const char *text, size_t len, hj_value *out, char *err, size_t err_size);
void hj_free(hj_value *v);

/* The member key of an object, or NULL (also when v is not an object). */
const hj_value *hj_get(const hj_value *v, const char *key);
/* A member's string, or dflt when it is missing or not a string. */
const char *hj_str(const hj_value *v, const char *key, const char *dflt);
/* A member's number, or dflt when it is missing or not a number. */
double hj_num(const hj_value *v, const char *key, double dflt);

#endif

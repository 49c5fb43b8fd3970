/* session_id.h — the grammar of session ids (PROTOCOL.md section 3), parsed
 * in one place for every layer: d:<a>:<b> is the direct chat of users a < b
 * (bytewise), g:<name> a group, and <prefix>:<rest> a plugin's own kind. */
#ifndef HUBU_SESSION_ID_H
#define HUBU_SESSION_ID_H

#include <stddef.h>

#define HUBU_SESSION_ID_MAX 128 /* bytes */

typedef enum { HUBU_SESSION_DIRECT = 0, HUBU_SESSION_GROUP, HUBU_SESSION_CUSTOM } hubu_session_kind;

/* A parsed id. For a direct session a and b are its two users (spans of the
 * id, not NUL-terminated), a < b; for a group, a is the name after "g:". */
typedef struct {
  hubu_session_kind kind;
  const char *a;
  size_t a_len;
  const char *b;
  size_t b_len;
} hubu_session_id;

/* Parses id[0..len). Returns its kind (and fills out when not NULL), or -1
 * when it is malformed: too long or short, a direct id whose users are not
 * valid user ids in order, a group whose name is not a valid id, or a custom
 * id with no prefix, nothing after the colon, or bytes outside 0x21-0x7e. */
int hubu_session_id_parse(const char *id, size_t len, hubu_session_id *out);

/* The kind of id, or -1 when malformed (hubu_session_id_parse without spans). */
static inline int hubu_session_id_check(const char *id, size_t len) { return hubu_session_id_parse(id, len, NULL); }

/* "direct", "group" or "custom": the sessions.kind column and SessionState.kind. */
const char *hubu_session_kind_name(hubu_session_kind kind);

/* For a direct id: whether user (NUL-terminated) is one of its two users. */
int hubu_session_id_has_user(const hubu_session_id *sid, const char *user);

#endif

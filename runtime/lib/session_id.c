/* session_id.c — the one parser of session ids (session_id.h). */
#include "session_id.h"

#include <string.h>

#include "token.h"

int hubu_session_id_parse(const char *id, size_t len, hubu_session_id *out) {
  hubu_session_id sid = {0};
  if (!id || len < 3 || len > HUBU_SESSION_ID_MAX || memchr(id, '\0', len)) return -1;
  if (id[0] == 'd' && id[1] == ':') {
    const char *a = id + 2, *colon = memchr(a, ':', len - 2);
    if (!colon) return -1;
    size_t alen = (size_t)(colon - a), blen = len - 2 - alen - 1;
    const char *b = colon + 1;
    if (!hubu_id_valid(a, alen) || !hubu_id_valid(b, blen)) return -1;
    size_t n = alen < blen ? alen : blen;
    int cmp = memcmp(a, b, n);
    if (cmp > 0 || (cmp == 0 && alen >= blen)) return -1; /* a < b bytewise */
    sid = (hubu_session_id){HUBU_SESSION_DIRECT, a, alen, b, blen};
  } else if (id[0] == 'g' && id[1] == ':') {
    if (!hubu_id_valid(id + 2, len - 2)) return -1;
    sid = (hubu_session_id){HUBU_SESSION_GROUP, id + 2, len - 2, NULL, 0};
  } else {
    const char *colon = memchr(id, ':', len);
    if (!colon || colon == id || colon == id + len - 1) return -1;
    for (size_t i = 0; i < len; i++)
      if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e) return -1;
    sid.kind = HUBU_SESSION_CUSTOM;
  }
  if (out) *out = sid;
  return (int)sid.kind;
}

const char *hubu_session_kind_name(hubu_session_kind kind) {
  return kind == HUBU_SESSION_DIRECT ? "direct" : kind == HUBU_SESSION_GROUP ? "group" : "custom";
}

int hubu_session_id_has_user(const hubu_session_id *sid, const char *user) {
  if (sid->kind != HUBU_SESSION_DIRECT) return 0;
  size_t ulen = strlen(user);
  return (ulen == sid->a_len && memcmp(sid->a, user, ulen) == 0) ||
         (ulen == sid->b_len && memcmp(sid->b, user, ulen) == 0);
}

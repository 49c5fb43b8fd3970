/* token.h — the default token scheme of PROTOCOL.md section 6:
 *   v1.<user_id>.<expiry_unix_seconds>.<lowercase hex HMAC-SHA256(secret, "v1.<user_id>.<expiry>")>
 * Pure functions over byte strings; the MAC is compared in constant time. */
#ifndef HUBU_TOKEN_H
#define HUBU_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define HUBU_TOKEN_MAX 192 /* "v1." + 64-byte user + "." + 20 digits + "." + 64 hex + NUL */

typedef enum {
  HUBU_TOKEN_OK = 0,
  HUBU_TOKEN_MALFORMED,
  HUBU_TOKEN_BAD_MAC,    /* tampered, or minted with another secret */
  HUBU_TOKEN_WRONG_USER, /* valid token of another user */
  HUBU_TOKEN_EXPIRED,
} hubu_token_status;

/* Writes a NUL-terminated token into out. Returns its length, or -1 when the
 * user id is not valid or out is too small. */
int hubu_token_mint(const uint8_t *secret, size_t secret_len, const char *user_id, uint64_t expiry_s, char *out,
                    size_t out_size);

/* Checks token[0..token_len) for user_id at time now_s. */
hubu_token_status hubu_token_verify(const uint8_t *secret, size_t secret_len, const char *token, size_t token_len,
                                    const char *user_id, uint64_t now_s);

/* A reserved-user token (docs/protocol-notes.md): the same form with the
 * prefix "v1r." in place of "v1.", its MAC over "v1r.<user_id>.<expiry>".
 * It logs in as a user a plugin reserved (a bot) as well as any other; an
 * ordinary token logs in as no reserved user. Minted by `hubuctl token
 * USER --reserved`. */
#define HUBU_TOKEN_RESERVED_PREFIX "v1r."
int hubu_token_mint_reserved(const uint8_t *secret, size_t secret_len, const char *user_id, uint64_t expiry_s,
                             char *out, size_t out_size);
hubu_token_status hubu_token_verify_reserved(const uint8_t *secret, size_t secret_len, const char *token,
                                             size_t token_len, const char *user_id, uint64_t now_s);

const char *hubu_token_status_name(hubu_token_status st);

/* user_id and device_id rule: 1-64 bytes of [A-Za-z0-9_.@-]. */
int hubu_id_valid(const char *id, size_t len);

/* Bounds of the admin listener's bearer token (--admin-token), bytes of
 * printable ASCII without spaces: hubud and hubuctl check the same. */
#define HUBU_ADMIN_TOKEN_MIN 16
#define HUBU_ADMIN_TOKEN_MAX 4096

#endif

/* token.c — mint and verify HMAC-SHA256 tokens (PROTOCOL.md section 6).
 * Invariant: the MAC check never short-circuits on the first differing byte;
 * user ids may contain '.', so a token is split from the right. */
#include "token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#define MAC_HEX_LEN 64

int hubu_id_valid(const char *id, size_t len) {
  if (len < 1 || len > 64) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = id[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
             c == '@' || c == '-';
    if (!ok) return 0;
  }
  return 1;
}

/* Lowercase hex HMAC-SHA256 of msg[0..len) into hex (MAC_HEX_LEN + 1 bytes). */
static int mac_hex(const uint8_t *secret, size_t secret_len, const char *msg, size_t len, char *hex) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  static const uint8_t empty = 0;
  if (!HMAC(EVP_sha256(), secret_len ? secret : &empty, (int)secret_len, (const unsigned char *)msg, len, mac,
            &mac_len) ||
      mac_len != 32)
    return -1;
  static const char digits[] = "0123456789abcdef";
  for (unsigned i = 0; i < mac_len; i++) {
    hex[2 * i] = digits[mac[i] >> 4];
    hex[2 * i + 1] = digits[mac[i] & 15];
  }
  hex[MAC_HEX_LEN] = '\0';
  return 0;
}

/* prefix: "v1." (PROTOCOL.md section 6) or HUBU_TOKEN_RESERVED_PREFIX. */
static int mint(const char *prefix, const uint8_t *secret, size_t secret_len, const char *user_id, uint64_t expiry_s,
                char *out, size_t out_size) {
  size_t ulen = strlen(user_id);
  if (!hubu_id_valid(user_id, ulen)) return -1;
  int n = snprintf(out, out_size, "%s%s.%llu.", prefix, user_id, (unsigned long long)expiry_s);
  if (n < 0 || (size_t)n + MAC_HEX_LEN + 1 > out_size) return -1;
  if (mac_hex(secret, secret_len, out, (size_t)n - 1, out + n) != 0) return -1;
  return n + MAC_HEX_LEN;
}

int hubu_token_mint(const uint8_t *secret, size_t secret_len, const char *user_id, uint64_t expiry_s, char *out,
                    size_t out_size) {
  return mint("v1.", secret, secret_len, user_id, expiry_s, out, out_size);
}

int hubu_token_mint_reserved(const uint8_t *secret, size_t secret_len, const char *user_id, uint64_t expiry_s,
                             char *out, size_t out_size) {
  return mint(HUBU_TOKEN_RESERVED_PREFIX, secret, secret_len, user_id, expiry_s, out, out_size);
}

static hubu_token_status verify(const char *prefix, const uint8_t *secret, size_t secret_len, const char *token,
                                size_t token_len, const char *user_id, uint64_t now_s) {
  size_t plen = strlen(prefix);
  if (token_len < plen + 1 + 1 + 1 + 1 + MAC_HEX_LEN || token_len >= HUBU_TOKEN_MAX) return HUBU_TOKEN_MALFORMED;
  if (memcmp(token, prefix, plen) != 0) return HUBU_TOKEN_MALFORMED;
  size_t signed_len = token_len - MAC_HEX_LEN - 1; /* "v1.<user>.<expiry>" */
  if (token[signed_len] != '.') return HUBU_TOKEN_MALFORMED;
  /* expiry: the digits after the last '.' of the signed part */
  size_t dot = signed_len;
  while (dot > plen && token[dot - 1] != '.') dot--;
  if (dot <= plen + 1 || dot == signed_len) return HUBU_TOKEN_MALFORMED; /* empty user or empty expiry */
  uint64_t expiry = 0;
  for (size_t i = dot; i < signed_len; i++) {
    if (token[i] < '0' || token[i] > '9' || signed_len - dot > 20) return HUBU_TOKEN_MALFORMED;
    uint64_t digit = (uint64_t)(token[i] - '0');
    if (expiry > (UINT64_MAX - digit) / 10) return HUBU_TOKEN_MALFORMED; /* would wrap */
    expiry = expiry * 10 + digit;
  }
  const char *user = token + plen;
  size_t ulen = dot - 1 - plen;
  if (!hubu_id_valid(user, ulen)) return HUBU_TOKEN_MALFORMED;

  char want[MAC_HEX_LEN + 1];
  if (mac_hex(secret, secret_len, token, signed_len, want) != 0) return HUBU_TOKEN_MALFORMED;
  if (CRYPTO_memcmp(want, token + signed_len + 1, MAC_HEX_LEN) != 0) return HUBU_TOKEN_BAD_MAC;
  if (strlen(user_id) != ulen || memcmp(user, user_id, ulen) != 0) return HUBU_TOKEN_WRONG_USER;
  if (now_s >= expiry) return HUBU_TOKEN_EXPIRED;
  return HUBU_TOKEN_OK;
}

hubu_token_status hubu_token_verify(const uint8_t *secret, size_t secret_len, const char *token, size_t token_len,
                                    const char *user_id, uint64_t now_s) {
  return verify("v1.", secret, secret_len, token, token_len, user_id, now_s);
}

hubu_token_status hubu_token_verify_reserved(const uint8_t *secret, size_t secret_len, const char *token,
                                             size_t token_len, const char *user_id, uint64_t now_s) {
  return verify(HUBU_TOKEN_RESERVED_PREFIX, secret, secret_len, token, token_len, user_id, now_s);
}

const char *hubu_token_status_name(hubu_token_status st) {
  switch (st) {
    case HUBU_TOKEN_OK: return "ok";
    case HUBU_TOKEN_MALFORMED: return "malformed token";
    case HUBU_TOKEN_BAD_MAC: return "bad token signature";
    case HUBU_TOKEN_WRONG_USER: return "token belongs to another user";
    case HUBU_TOKEN_EXPIRED: return "token expired";
  }
  return "?";
}

/* test_token.c — the default token scheme of PROTOCOL.md section 6: a minted
 * token verifies for its user until (not including) its expiry; any changed
 * character, another user, another secret or a malformed string is refused;
 * user ids with '.' and '@' split from the right; a known-answer vector made
 * with the openssl command line; hubu_id_valid at its edges. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "token.h"

#define SECRET ((const uint8_t *)"unit-test-secret")
#define SECRET_LEN (sizeof "unit-test-secret" - 1)

static hubu_token_status verify(const char *token, const char *user, uint64_t now) {
  return hubu_token_verify(SECRET, SECRET_LEN, token, strlen(token), user, now);
}

/* Builds "<signed>.<hex mac>" with an independent HMAC call, so the tests can
 * sign strings that hubu_token_mint would refuse to produce. */
static void sign(const char *signed_part, char *out, size_t out_size) {
  unsigned char mac[32];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), SECRET, (int)SECRET_LEN, (const unsigned char *)signed_part, strlen(signed_part), mac, &mac_len);
  int n = snprintf(out, out_size, "%s.", signed_part);
  for (unsigned i = 0; i < mac_len && (size_t)n + 2 < out_size; i++)
    n += snprintf(out + n, out_size - (size_t)n, "%02x", mac[i]);
}

static void test_mint_and_verify(void) {
  char tok[HUBU_TOKEN_MAX];
  int n = hubu_token_mint(SECRET, SECRET_LEN, "alice", 1700000000u, tok, sizeof tok);
  CHECK_EQ_U64(n, strlen(tok));
  CHECK_EQ_U64(n, strlen("v1.alice.1700000000.") + 64);
  CHECK(strncmp(tok, "v1.alice.1700000000.", 20) == 0);
  for (size_t i = 20; i < (size_t)n; i++) CHECK((tok[i] >= '0' && tok[i] <= '9') || (tok[i] >= 'a' && tok[i] <= 'f'));

  CHECK_EQ_U64(verify(tok, "alice", 0), HUBU_TOKEN_OK);
  CHECK_EQ_U64(verify(tok, "alice", 1699999999u), HUBU_TOKEN_OK);
  /* Valid while now < expiry: now == expiry is already expired. */
  CHECK_EQ_U64(verify(tok, "alice", 1700000000u), HUBU_TOKEN_EXPIRED);
  CHECK_EQ_U64(verify(tok, "alice", 1700000001u), HUBU_TOKEN_EXPIRED);
  CHECK_EQ_U64(verify(tok, "alice", UINT64_MAX), HUBU_TOKEN_EXPIRED);

  /* Only the token's bytes count: a longer buffer is verified over token_len. */
  char padded[HUBU_TOKEN_MAX + 8];
  snprintf(padded, sizeof padded, "%sXYZ", tok);
  CHECK_EQ_U64(hubu_token_verify(SECRET, SECRET_LEN, padded, (size_t)n, "alice", 5), HUBU_TOKEN_OK);
  CHECK(hubu_token_verify(SECRET, SECRET_LEN, padded, (size_t)n + 3, "alice", 5) != HUBU_TOKEN_OK);

  /* Expiry 0 is always expired; the largest expiry mints and verifies. */
  CHECK(hubu_token_mint(SECRET, SECRET_LEN, "alice", 0, tok, sizeof tok) > 0);
  CHECK_EQ_U64(verify(tok, "alice", 0), HUBU_TOKEN_EXPIRED);
  CHECK(hubu_token_mint(SECRET, SECRET_LEN, "alice", UINT64_MAX, tok, sizeof tok) > 0);
  CHECK(strstr(tok, ".18446744073709551615.") != NULL);
  CHECK_EQ_U64(verify(tok, "alice", UINT64_MAX - 1), HUBU_TOKEN_OK);

  /* An empty secret is still a secret (HMAC with a zero-length key). */
  CHECK(hubu_token_mint((const uint8_t *)"", 0, "alice", 100, tok, sizeof tok) > 0);
  CHECK_EQ_U64(hubu_token_verify((const uint8_t *)"", 0, tok, strlen(tok), "alice", 5), HUBU_TOKEN_OK);
  CHECK_EQ_U64(verify(tok, "alice", 5), HUBU_TOKEN_BAD_MAC);
}

/* Known answer, computed outside this code base with:
 *   printf '%s' 'v1.alice.w@example.com.1700000000' | openssl dgst -sha256 -hmac 'hubu-kat-secret'
 *   SHA2-256(stdin)= 94ef18601ffcc83c41f2340d94a0bec7bffd03f15ab6a6fac2da4370bd4aefd4
 * (OpenSSL 3.0.19), i.e. HMAC-SHA256 keyed with the secret's bytes over "v1.<user>.<expiry>". */
static void test_known_answer(void) {
  static const char secret[] = "hubu-kat-secret";
  static const char want[] =
      "v1.alice.w@example.com.1700000000.94ef18601ffcc83c41f2340d94a0bec7bffd03f15ab6a6fac2da4370bd4aefd4";
  char tok[HUBU_TOKEN_MAX];
  int n =
      hubu_token_mint((const uint8_t *)secret, sizeof secret - 1, "alice.w@example.com", 1700000000u, tok, sizeof tok);
  CHECK_EQ_U64(n, sizeof want - 1);
  CHECK_EQ_STR(tok, want);
  CHECK_EQ_U64(hubu_token_verify((const uint8_t *)secret, sizeof secret - 1, want, sizeof want - 1,
                                 "alice.w@example.com", 1600000000u),
               HUBU_TOKEN_OK);
}

/* Changes one character to another of the same kind, so the token stays well
 * formed and only the signature can catch it. */
static char same_kind_other(char c) {
  if (c >= '0' && c <= '8') return (char)(c + 1);
  if (c == '9') return '0';
  if (c >= 'a' && c <= 'e') return (char)(c + 1);
  if (c == 'f') return 'a';
  if (c >= 'g' && c <= 'y') return (char)(c + 1);
  if (c == 'z') return 'a';
  if (c == '@') return '_';
  if (c == '.') return '-';
  return 'x';
}

static void test_tampered(void) {
  const char *user = "bob.smith@corp.example";
  char tok[HUBU_TOKEN_MAX];
  int n = hubu_token_mint(SECRET, SECRET_LEN, user, 1800000000u, tok, sizeof tok);
  if (!CHECK(n > 0)) return;
  size_t ulen = strlen(user);
  size_t exp_at = 3 + ulen + 1, mac_at = exp_at + 10 + 1;
  CHECK_EQ_U64(tok[exp_at - 1], '.');
  CHECK_EQ_U64(tok[mac_at - 1], '.');

  /* Every character of the user, the expiry and the MAC, changed one at a time. */
  size_t refused = 0, positions = 0;
  for (size_t i = 3; i < (size_t)n; i++) {
    if (i == exp_at - 1 || i == mac_at - 1) continue; /* the separators: below */
    char t[HUBU_TOKEN_MAX];
    memcpy(t, tok, (size_t)n + 1);
    t[i] = same_kind_other(t[i]);
    hubu_token_status st = verify(t, user, 1000);
    positions++;
    if (CHECK_EQ_U64(st, HUBU_TOKEN_BAD_MAC))
      refused++;
    else
      fprintf(stderr, "    tampered position %zu ('%c' -> '%c'): %s\n", i, tok[i], t[i], hubu_token_status_name(st));
  }
  CHECK_EQ_U64(refused, positions);
  CHECK_EQ_U64(positions, ulen + 10 + 64);

  /* A later expiry spliced onto the old MAC. */
  char t[HUBU_TOKEN_MAX + 8];
  snprintf(t, sizeof t, "v1.%s.1900000000.%s", user, tok + mac_at);
  CHECK_EQ_U64(verify(t, user, 1000), HUBU_TOKEN_BAD_MAC);
  /* Someone else's name on this user's MAC. */
  snprintf(t, sizeof t, "v1.mallory.1800000000.%s", tok + mac_at);
  CHECK_EQ_U64(verify(t, "mallory", 1000), HUBU_TOKEN_BAD_MAC);
  /* Separators and prefix. */
  memcpy(t, tok, (size_t)n + 1);
  t[mac_at - 1] = 'x';
  CHECK(verify(t, user, 1000) != HUBU_TOKEN_OK);
  memcpy(t, tok, (size_t)n + 1);
  t[exp_at - 1] = 'x'; /* "bob.smith@corp.examplex1800000000": the expiry is no longer digits */
  CHECK_EQ_U64(verify(t, user, 1000), HUBU_TOKEN_MALFORMED);
  for (size_t i = 0; i < 3; i++) {
    memcpy(t, tok, (size_t)n + 1);
    t[i] = i == 1 ? '2' : 'X';
    CHECK_EQ_U64(verify(t, user, 1000), HUBU_TOKEN_MALFORMED);
  }
  /* Truncated or extended by one character. */
  memcpy(t, tok, (size_t)n + 1);
  t[n - 1] = '\0';
  CHECK(verify(t, user, 1000) != HUBU_TOKEN_OK);
  snprintf(t, sizeof t, "%s0", tok);
  CHECK(verify(t, user, 1000) != HUBU_TOKEN_OK);
}

static void test_wrong_user_and_secret(void) {
  char tok[HUBU_TOKEN_MAX];
  CHECK(hubu_token_mint(SECRET, SECRET_LEN, "alice", 2000000000u, tok, sizeof tok) > 0);
  CHECK_EQ_U64(verify(tok, "bob", 5), HUBU_TOKEN_WRONG_USER);
  CHECK_EQ_U64(verify(tok, "alic", 5), HUBU_TOKEN_WRONG_USER);
  CHECK_EQ_U64(verify(tok, "alice2", 5), HUBU_TOKEN_WRONG_USER);
  CHECK_EQ_U64(verify(tok, "Alice", 5), HUBU_TOKEN_WRONG_USER);
  CHECK_EQ_U64(verify(tok, "", 5), HUBU_TOKEN_WRONG_USER);
  CHECK_EQ_U64(verify(tok, "alice", 5), HUBU_TOKEN_OK);

  static const char *other_secrets[] = {"unit-test-secreT", "unit-test-secre", "unit-test-secret!", ""};
  for (size_t i = 0; i < sizeof other_secrets / sizeof other_secrets[0]; i++)
    CHECK_EQ_U64(
        hubu_token_verify((const uint8_t *)other_secrets[i], strlen(other_secrets[i]), tok, strlen(tok), "alice", 5),
        HUBU_TOKEN_BAD_MAC);
  /* The secret is bytes, not a C string: an embedded NUL matters. */
  static const uint8_t nul_secret[] = {'k', 0, 'x'}, nul_secret2[] = {'k', 0, 'y'};
  CHECK(hubu_token_mint(nul_secret, sizeof nul_secret, "alice", 2000000000u, tok, sizeof tok) > 0);
  CHECK_EQ_U64(hubu_token_verify(nul_secret, sizeof nul_secret, tok, strlen(tok), "alice", 5), HUBU_TOKEN_OK);
  CHECK_EQ_U64(hubu_token_verify(nul_secret2, sizeof nul_secret2, tok, strlen(tok), "alice", 5), HUBU_TOKEN_BAD_MAC);
  CHECK_EQ_U64(hubu_token_verify(nul_secret, 1, tok, strlen(tok), "alice", 5), HUBU_TOKEN_BAD_MAC);
}

static void test_dotted_users(void) {
  static const char *users[] = {
      "a.b", "alice@example.com", "first.last@mail.example.org", ".", "..", "@", "x.1", "bob.123", "1.2.3", "-_.@"};
  for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
    char tok[HUBU_TOKEN_MAX], prefix[128];
    int n = hubu_token_mint(SECRET, SECRET_LEN, users[i], 1234567890u, tok, sizeof tok);
    if (!CHECK(n > 0)) continue;
    snprintf(prefix, sizeof prefix, "v1.%s.1234567890.", users[i]);
    CHECK(strncmp(tok, prefix, strlen(prefix)) == 0);
    if (!CHECK_EQ_U64(verify(tok, users[i], 1000), HUBU_TOKEN_OK)) fprintf(stderr, "    user \"%s\"\n", users[i]);
    CHECK_EQ_U64(verify(tok, users[i], 1234567890u), HUBU_TOKEN_EXPIRED);
  }
  /* Split from the right: in "v1.bob.123.1700.<mac>" the user is "bob.123"
   * and the expiry 1700, never user "bob" with expiry "123.1700". */
  char tok[HUBU_TOKEN_MAX];
  CHECK(hubu_token_mint(SECRET, SECRET_LEN, "bob.123", 1700, tok, sizeof tok) > 0);
  CHECK_EQ_U64(verify(tok, "bob.123", 1699), HUBU_TOKEN_OK);
  CHECK_EQ_U64(verify(tok, "bob.123", 1700), HUBU_TOKEN_EXPIRED);
  CHECK_EQ_U64(verify(tok, "bob", 5), HUBU_TOKEN_WRONG_USER);
  CHECK(hubu_token_mint(SECRET, SECRET_LEN, "bob", 1231700, tok, sizeof tok) > 0);
  CHECK_EQ_U64(verify(tok, "bob.123", 5), HUBU_TOKEN_WRONG_USER);
}

static void test_malformed(void) {
  char good[HUBU_TOKEN_MAX];
  int n = hubu_token_mint(SECRET, SECRET_LEN, "alice", 1700000000u, good, sizeof good);
  if (!CHECK(n > 0)) return;
  const char *mac = good + n - 64;
  char t[512];

  CHECK_EQ_U64(hubu_token_verify(SECRET, SECRET_LEN, "", 0, "alice", 5), HUBU_TOKEN_MALFORMED);
  CHECK_EQ_U64(verify("v1", "alice", 5), HUBU_TOKEN_MALFORMED);
  CHECK_EQ_U64(verify("v1.alice.1700000000", "alice", 5), HUBU_TOKEN_MALFORMED);
  /* No dots at all, of a plausible length. */
  memset(t, 'a', 90);
  t[90] = '\0';
  CHECK_EQ_U64(verify(t, "alice", 5), HUBU_TOKEN_MALFORMED);
  /* No dot before the MAC (only the prefix's). */
  snprintf(t, sizeof t, "v1.alice1700000000%s", mac);
  CHECK_EQ_U64(verify(t, "alice", 5), HUBU_TOKEN_MALFORMED);

  /* Non-digit expiries, each properly signed so only the format can refuse it. */
  static const char *bad_expiry[] = {"v1.alice.17x0", "v1.alice.-1",   "v1.alice.+5", "v1.alice. 5",
                                     "v1.alice.1e9",  "v1.alice.0x10", "v1.alice.",   "v1.alice.123456789012345678901"};
  for (size_t i = 0; i < sizeof bad_expiry / sizeof bad_expiry[0]; i++) {
    sign(bad_expiry[i], t, sizeof t);
    if (!CHECK_EQ_U64(verify(t, "alice", 5), HUBU_TOKEN_MALFORMED)) fprintf(stderr, "    token \"%s\"\n", t);
  }
  /* Empty user, user with a character outside [A-Za-z0-9_.@-], user too long: signed, still refused. */
  sign("v1..1700000000", t, sizeof t);
  CHECK_EQ_U64(verify(t, "", 5), HUBU_TOKEN_MALFORMED);
  sign("v1.al ice.1700000000", t, sizeof t);
  CHECK_EQ_U64(verify(t, "al ice", 5), HUBU_TOKEN_MALFORMED);
  sign("v1.al/ice.1700000000", t, sizeof t);
  CHECK_EQ_U64(verify(t, "al/ice", 5), HUBU_TOKEN_MALFORMED);
  char signed_part[128], user65[66];
  memset(user65, 'u', 65);
  user65[65] = '\0';
  snprintf(signed_part, sizeof signed_part, "v1.%s.1700000000", user65);
  sign(signed_part, t, sizeof t);
  CHECK_EQ_U64(verify(t, user65, 5), HUBU_TOKEN_MALFORMED);
  /* The control for these: the same construction with a valid user is accepted. */
  sign("v1.alice.1700000000", t, sizeof t);
  CHECK_EQ_STR(t, good);
  CHECK_EQ_U64(verify(t, "alice", 5), HUBU_TOKEN_OK);

  /* Uppercase MAC: the MAC is lowercase hex, so the same digest in capitals is refused. */
  snprintf(t, sizeof t, "%s", good);
  int changed = 0;
  for (char *p = t + n - 64; *p; p++)
    if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A'), changed = 1;
  CHECK(changed);
  hubu_token_status st = verify(t, "alice", 5);
  CHECK(st == HUBU_TOKEN_MALFORMED || st == HUBU_TOKEN_BAD_MAC);
  /* MAC one hex digit short or long. */
  snprintf(t, sizeof t, "v1.alice.1700000000.%.63s", mac);
  CHECK(verify(t, "alice", 5) != HUBU_TOKEN_OK);
  snprintf(t, sizeof t, "v1.alice.1700000000.%s0", mac);
  CHECK(verify(t, "alice", 5) != HUBU_TOKEN_OK);

  /* Too long: at and above HUBU_TOKEN_MAX bytes. */
  memset(t, 'a', sizeof t);
  memcpy(t, "v1.alice.", 9);
  t[HUBU_TOKEN_MAX] = '\0';
  CHECK_EQ_U64(verify(t, "alice", 5), HUBU_TOKEN_MALFORMED);
  t[400] = '\0';
  CHECK_EQ_U64(hubu_token_verify(SECRET, SECRET_LEN, t, 400, "alice", 5), HUBU_TOKEN_MALFORMED);
  /* The longest legal token (64-byte user, 20-digit expiry) still verifies. */
  char user64[65], tok[HUBU_TOKEN_MAX];
  memset(user64, 'u', 64);
  user64[64] = '\0';
  int len = hubu_token_mint(SECRET, SECRET_LEN, user64, 10000000000000000000u, tok, sizeof tok);
  CHECK_EQ_U64(len, 3 + 64 + 1 + 20 + 1 + 64);
  CHECK(len < HUBU_TOKEN_MAX);
  CHECK_EQ_U64(verify(tok, user64, 5), HUBU_TOKEN_OK);

  /* Minting refuses invalid users and short buffers, and fits an exact one. */
  CHECK_EQ_U64(hubu_token_mint(SECRET, SECRET_LEN, user65, 1, tok, sizeof tok), (uint64_t)-1);
  CHECK_EQ_U64(hubu_token_mint(SECRET, SECRET_LEN, "", 1, tok, sizeof tok), (uint64_t)-1);
  CHECK_EQ_U64(hubu_token_mint(SECRET, SECRET_LEN, "a b", 1, tok, sizeof tok), (uint64_t)-1);
  CHECK_EQ_U64(hubu_token_mint(SECRET, SECRET_LEN, "alice", 1700000000u, tok, (size_t)n), (uint64_t)-1);
  CHECK_EQ_U64(hubu_token_mint(SECRET, SECRET_LEN, "alice", 1700000000u, tok, 10), (uint64_t)-1);
  CHECK_EQ_U64(hubu_token_mint(SECRET, SECRET_LEN, "alice", 1700000000u, tok, (size_t)n + 1), n);
  CHECK_EQ_STR(tok, good);

  /* Every status has a name. */
  for (int s = HUBU_TOKEN_OK; s <= HUBU_TOKEN_EXPIRED; s++)
    CHECK(strcmp(hubu_token_status_name((hubu_token_status)s), "?") != 0);
}

static void test_id_valid(void) {
  char id[80];
  memset(id, 'a', sizeof id);
  CHECK(!hubu_id_valid(id, 0));
  CHECK(hubu_id_valid(id, 1));
  CHECK(hubu_id_valid(id, 63));
  CHECK(hubu_id_valid(id, 64));
  CHECK(!hubu_id_valid(id, 65));
  CHECK(!hubu_id_valid(id, 80));
  CHECK(hubu_id_valid("A-z_0.9@x", 9));

  /* Every byte value alone: exactly [A-Za-z0-9_.@-] is allowed. */
  size_t allowed = 0;
  for (int c = 0; c < 256; c++) {
    char b = (char)c;
    int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
               c == '@' || c == '-';
    if (!CHECK_EQ_U64(!!hubu_id_valid(&b, 1), want)) fprintf(stderr, "    byte 0x%02x\n", c);
    allowed += !!hubu_id_valid(&b, 1);
  }
  CHECK_EQ_U64(allowed, 26 + 26 + 10 + 4);

  /* A bad character anywhere spoils a long id: first, middle, last (64th) byte. */
  static const char bad[] = {' ', '/', ':', '+', '#', '\0', '\n', (char)0x80, (char)0xC3, '~'};
  static const size_t where[] = {0, 31, 63};
  for (size_t b = 0; b < sizeof bad; b++)
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
      memset(id, 'a', 64);
      id[where[w]] = bad[b];
      CHECK(!hubu_id_valid(id, 64));
    }
  /* The length is what counts, not a NUL: bytes after len are not looked at. */
  memcpy(id, "bob  ", 5);
  CHECK(hubu_id_valid(id, 3));
  CHECK(!hubu_id_valid(id, 4));
}

/* Reserved-user tokens (docs/protocol-notes.md): "v1r." with its MAC over
 * "v1r.<user>.<expiry>"; never taken for a section 6 token, nor the other way. */
static void test_reserved(void) {
  char tok[HUBU_TOKEN_MAX], plain[HUBU_TOKEN_MAX], want[HUBU_TOKEN_MAX];
  int n = hubu_token_mint_reserved(SECRET, SECRET_LEN, "echo-bot", 1700000000u, tok, sizeof tok);
  CHECK_EQ_U64(n, strlen("v1r.echo-bot.1700000000.") + 64);
  sign("v1r.echo-bot.1700000000", want, sizeof want);
  CHECK(strcmp(tok, want) == 0);
  CHECK_EQ_U64(hubu_token_verify_reserved(SECRET, SECRET_LEN, tok, strlen(tok), "echo-bot", 5), HUBU_TOKEN_OK);
  CHECK_EQ_U64(hubu_token_verify_reserved(SECRET, SECRET_LEN, tok, strlen(tok), "alice", 5), HUBU_TOKEN_WRONG_USER);
  CHECK_EQ_U64(hubu_token_verify_reserved(SECRET, SECRET_LEN, tok, strlen(tok), "echo-bot", 1700000000u),
               HUBU_TOKEN_EXPIRED);
  CHECK_EQ_U64(verify(tok, "echo-bot", 5), HUBU_TOKEN_MALFORMED); /* not a section 6 token */
  CHECK(hubu_token_mint(SECRET, SECRET_LEN, "echo-bot", 1700000000u, plain, sizeof plain) > 0);
  CHECK_EQ_U64(hubu_token_verify_reserved(SECRET, SECRET_LEN, plain, strlen(plain), "echo-bot", 5),
               HUBU_TOKEN_MALFORMED);
  /* The same MAC under the other prefix does not pass: it covers the prefix. */
  char swapped[HUBU_TOKEN_MAX + 8];
  snprintf(swapped, sizeof swapped, "v1r.%s", plain + 3);
  CHECK_EQ_U64(hubu_token_verify_reserved(SECRET, SECRET_LEN, swapped, strlen(swapped), "echo-bot", 5),
               HUBU_TOKEN_BAD_MAC);
  CHECK_EQ_U64(hubu_token_verify_reserved(SECRET, SECRET_LEN, "v1r..1.x", 8, "a", 5), HUBU_TOKEN_MALFORMED);
}

int main(int argc, char **argv) {
  (void)argc;
  test_reserved();
  test_mint_and_verify();
  test_known_answer();
  test_tampered();
  test_wrong_user_and_secret();
  test_dotted_users();
  test_malformed();
  test_id_valid();
  return check_summary(argv[0]);
}

/* test_proxy_proto.c — the PROXY protocol parser (runtime/net/proxy_proto.c):
 * v1 TCP4, TCP6 and UNKNOWN; v2 PROXY over IPv4 and IPv6 with TLVs, LOCAL,
 * UNSPEC; every proper prefix of a valid header asks for more, never more
 * than the bound; garbage, bad fields and oversize headers are refused; the
 * bytes after a header are left to the next layer whatever the reads'
 * split. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proxy_proto.h"

static hubu_proxy_status parse_str(const char *s, hubu_proxy_header *h) {
  return hubu_proxy_parse((const uint8_t *)s, strlen(s), h, NULL);
}

static const char *name_of(const struct sockaddr_storage *a) {
  static char buf[96];
  hubu_proxy_addr_name(a, 1, buf, sizeof buf);
  return buf;
}

/* Every proper prefix of a valid header asks for more. */
static void check_prefixes(const uint8_t *p, size_t n) {
  hubu_proxy_header h;
  for (size_t i = 0; i < n; i++) {
    const char *why = NULL;
    if (!CHECK_EQ_U64(hubu_proxy_parse(p, i, &h, &why), HUBU_PROXY_NEED_MORE))
      fprintf(stderr, "    prefix of %zu of %zu bytes: %s\n", i, n, why ? why : "");
  }
}

static void test_v1(void) {
  hubu_proxy_header h;
  const char *tcp4 = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 7700\r\n";
  CHECK_EQ_U64(parse_str(tcp4, &h), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.len, strlen(tcp4));
  CHECK_EQ_U64(h.version, 1);
  CHECK_EQ_U64(h.family, AF_INET);
  CHECK_EQ_STR(name_of(&h.src), "192.0.2.7:56324");
  CHECK_EQ_STR(name_of(&h.dst), "127.0.0.1:7700");
  check_prefixes((const uint8_t *)tcp4, strlen(tcp4));

  const char *tcp6 = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
  CHECK_EQ_U64(parse_str(tcp6, &h), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_INET6);
  CHECK_EQ_STR(name_of(&h.src), "[2001:db8::1]:65535");
  CHECK_EQ_STR(name_of(&h.dst), "[::1]:0");
  char ip[64];
  hubu_proxy_addr_name(&h.src, 0, ip, sizeof ip);
  CHECK_EQ_STR(ip, "2001:db8::1");
  check_prefixes((const uint8_t *)tcp6, strlen(tcp6));

  CHECK_EQ_U64(parse_str("PROXY UNKNOWN\r\n", &h), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_UNSPEC);
  CHECK_EQ_U64(h.len, 15);
  CHECK_EQ_U64(parse_str("PROXY UNKNOWN ffff::1 ::1 1 2\r\n", &h), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_UNSPEC);

  /* the longest TCP6 line (104 bytes), and the longest v1 header: UNKNOWN with them, 107 */
  const char *tcp6_longest =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "65535 65535\r\n";
  CHECK_EQ_U64(parse_str(tcp6_longest, &h), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_INET6);
  const char *longest =
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "65535 65535\r\n";
  CHECK_EQ_U64(strlen(longest), HUBU_PROXY_V1_MAX);
  CHECK_EQ_U64(parse_str(longest, &h), HUBU_PROXY_OK);

  static const char *bad[] = {
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324 7700\n",     /* LF alone */
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324 7700\rX",    /* CR without LF */
      "PROXY TCP5 192.0.2.7 127.0.0.1 56324 7700\r\n",   /* unknown protocol */
      "PROXY TCP4 ::1 127.0.0.1 56324 7700\r\n",         /* IPv6 under TCP4 */
      "PROXY TCP6 192.0.2.7 ::1 56324 7700\r\n",         /* IPv4 under TCP6 */
      "PROXY TCP4 192.0.2.7 127.0.0.1 65536 7700\r\n",   /* port out of range */
      "PROXY TCP4 192.0.2.7 127.0.0.1 056324 7700\r\n",  /* leading zero */
      "PROXY TCP4 192.0.2.7 127.0.0.1 -1 7700\r\n",      /* sign */
      "PROXY TCP4 192.0.2.7  127.0.0.1 56324 7700\r\n",  /* two spaces */
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324\r\n",        /* a field missing */
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324 7700 1\r\n", /* a field too many */
      "PROXY TCP4 192.0.2.256 127.0.0.1 56324 7700\r\n", /* octet out of range */
      "PROXY \r\n",
      "PROXY UNKNOWNX\r\n",
      "proxy TCP4 192.0.2.7 127.0.0.1 56324 7700\r\n",
      "PROXYTCP4 192.0.2.7 127.0.0.1 56324 7700\r\n",
      "GET / HTTP/1.1\r\n\r\n",
      "\xa5\x01\x01\x00\x00\x00\x00\x10",
      "PROXY TCP4 192.0.2.7\x01 127.0.0.1 56324 7700\r\n", /* a control byte */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *why = NULL;
    if (!CHECK_EQ_U64(hubu_proxy_parse((const uint8_t *)bad[i], strlen(bad[i]), &h, &why), HUBU_PROXY_ERROR))
      fprintf(stderr, "    accepted: %s\n", bad[i]);
    else
      CHECK(why && why[0]);
  }
  /* refused at the first wrong byte, not after waiting for more */
  CHECK_EQ_U64(parse_str("G", &h), HUBU_PROXY_ERROR);
  CHECK_EQ_U64(parse_str("PROXX", &h), HUBU_PROXY_ERROR);
  CHECK_EQ_U64(parse_str("PROXY TCP4 1.2.3.4\x7f", &h), HUBU_PROXY_ERROR);

  /* oversize: 107 bytes without a CRLF, or a CRLF past byte 107 */
  char big[200];
  memset(big, 'A', sizeof big);
  memcpy(big, "PROXY UNKNOWN ", 14);
  CHECK_EQ_U64(hubu_proxy_parse((const uint8_t *)big, 106, &h, NULL), HUBU_PROXY_NEED_MORE);
  CHECK_EQ_U64(hubu_proxy_parse((const uint8_t *)big, 107, &h, NULL), HUBU_PROXY_ERROR);
  CHECK_EQ_U64(hubu_proxy_parse((const uint8_t *)big, sizeof big, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(big + 106, "\r\n", 2); /* 108 bytes */
  CHECK_EQ_U64(hubu_proxy_parse((const uint8_t *)big, 108, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(big + 105, "\r\n", 2); /* 107 bytes */
  CHECK_EQ_U64(hubu_proxy_parse((const uint8_t *)big, 107, &h, NULL), HUBU_PROXY_OK);
}

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header into out: command, family/protocol byte, addresses, then
 * tlv_len bytes of TLVs. Returns its length. */
static size_t v2(uint8_t *out, int cmd, uint8_t fam, const uint8_t *addrs, size_t addr_len, size_t tlv_len) {
  memcpy(out, sig, 12);
  out[12] = (uint8_t)(0x20 | cmd);
  out[13] = fam;
  size_t payload = addr_len + tlv_len;
  out[14] = (uint8_t)(payload >> 8);
  out[15] = (uint8_t)payload;
  if (addr_len) memcpy(out + 16, addrs, addr_len);
  for (size_t i = 0; i < tlv_len; i++) out[16 + addr_len + i] = (uint8_t)(i * 7);
  if (tlv_len >= 3) { /* one well-formed TLV: PP2_TYPE_AUTHORITY */
    out[16 + addr_len] = 0x02;
    out[16 + addr_len + 1] = (uint8_t)((tlv_len - 3) >> 8);
    out[16 + addr_len + 2] = (uint8_t)(tlv_len - 3);
  }
  return 16 + payload;
}

static void test_v2(void) {
  uint8_t buf[HUBU_PROXY_MAX_HEADER + 64];
  hubu_proxy_header h;
  const uint8_t a4[12] = {192, 0, 2, 9, 127, 0, 0, 1, 0xdc, 0x05, 0x1e, 0x14}; /* :56325 -> :7700 */
  size_t n = v2(buf, 1, 0x11, a4, sizeof a4, 20);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.len, n);
  CHECK_EQ_U64(h.version, 2);
  CHECK_EQ_U64(h.local, 0);
  CHECK_EQ_U64(h.family, AF_INET);
  CHECK_EQ_STR(name_of(&h.src), "192.0.2.9:56325");
  CHECK_EQ_STR(name_of(&h.dst), "127.0.0.1:7700");
  check_prefixes(buf, n);

  uint8_t a6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2, [31] = 1, [32] = 0x01, [33] = 0xbb, [34] = 0x1e, [35] = 0x64};
  n = v2(buf, 1, 0x21, a6, sizeof a6, 0);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_INET6);
  CHECK_EQ_STR(name_of(&h.src), "[2001:db8::2]:443");
  CHECK_EQ_STR(name_of(&h.dst), "[::1]:7780");
  check_prefixes(buf, n);

  /* LOCAL (a health check): the connection's own addresses, whatever follows */
  n = v2(buf, 0, 0x00, NULL, 0, 0);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.len, 16);
  CHECK_EQ_U64(h.local, 1);
  CHECK_EQ_U64(h.family, AF_UNSPEC);
  n = v2(buf, 0, 0x11, a4, sizeof a4, 0);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_UNSPEC);
  /* PROXY of family UNSPEC, of a UNIX socket: the connection's own addresses too */
  n = v2(buf, 1, 0x00, NULL, 0, 5);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_UNSPEC);
  uint8_t unix_addrs[216] = {0};
  n = v2(buf, 1, 0x31, unix_addrs, sizeof unix_addrs, 0);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(h.family, AF_UNSPEC);

  /* the cap: 4096 bytes of payload taken, 4097 refused as soon as the head says so */
  n = v2(buf, 1, 0x11, a4, sizeof a4, HUBU_PROXY_V2_MAX_PAYLOAD - sizeof a4);
  CHECK_EQ_U64(n, HUBU_PROXY_MAX_HEADER);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n, &h, NULL), HUBU_PROXY_OK);
  CHECK_EQ_U64(hubu_proxy_parse(buf, n - 1, &h, NULL), HUBU_PROXY_NEED_MORE);
  n = v2(buf, 1, 0x11, a4, sizeof a4, HUBU_PROXY_V2_MAX_PAYLOAD - sizeof a4 + 1);
  CHECK_EQ_U64(hubu_proxy_parse(buf, 16, &h, NULL), HUBU_PROXY_ERROR);
  buf[14] = buf[15] = 0xff;
  CHECK_EQ_U64(hubu_proxy_parse(buf, 16, &h, NULL), HUBU_PROXY_ERROR);

  /* faults, each refused once its bytes are in */
  n = v2(buf, 1, 0x11, a4, sizeof a4, 0);
  uint8_t bad[64];
  memcpy(bad, buf, n);
  bad[12] = 0x11; /* version 1 */
  CHECK_EQ_U64(hubu_proxy_parse(bad, 13, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[12] = 0x22; /* command 2 */
  CHECK_EQ_U64(hubu_proxy_parse(bad, 13, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[13] = 0x41; /* family 4 */
  CHECK_EQ_U64(hubu_proxy_parse(bad, 14, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[13] = 0x13; /* protocol 3 */
  CHECK_EQ_U64(hubu_proxy_parse(bad, 14, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[13] = 0x12; /* UDP */
  CHECK_EQ_U64(hubu_proxy_parse(bad, n, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[15] = 11; /* IPv4 addresses need 12 bytes */
  CHECK_EQ_U64(hubu_proxy_parse(bad, n, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[13] = 0x21; /* IPv6 with IPv4's 12 bytes */
  CHECK_EQ_U64(hubu_proxy_parse(bad, n, &h, NULL), HUBU_PROXY_ERROR);
  memcpy(bad, buf, n);
  bad[7] = 'q'; /* signature */
  CHECK_EQ_U64(hubu_proxy_parse(bad, 8, &h, NULL), HUBU_PROXY_ERROR);
  CHECK_EQ_U64(hubu_proxy_parse(bad, 7, &h, NULL), HUBU_PROXY_NEED_MORE);
  /* a TLS ClientHello or a hubu frame where the header should be */
  const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
  CHECK_EQ_U64(hubu_proxy_parse(hello, sizeof hello, &h, NULL), HUBU_PROXY_ERROR);
  const uint8_t frame[] = {0xa5, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00};
  CHECK_EQ_U64(hubu_proxy_parse(frame, 1, &h, NULL), HUBU_PROXY_ERROR);
  CHECK_EQ_U64(hubu_proxy_parse(frame, 0, &h, NULL), HUBU_PROXY_NEED_MORE);
}

/* A header and the next layer's bytes in one stream, cut into reads of every
 * size from 1 to the whole: buffered as conn.c buffers it (only while more
 * is needed), the header is found once and what follows is passed on whole. */
static void test_split(void) {
  uint8_t stream[256];
  const char *hdr = "PROXY TCP4 198.51.100.4 127.0.0.1 40000 7780\r\n";
  const char *next = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
  size_t hl = strlen(hdr), nl = strlen(next);
  memcpy(stream, hdr, hl);
  memcpy(stream + hl, next, nl);
  size_t total = hl + nl;
  uint8_t a4[12] = {198, 51, 100, 4, 127, 0, 0, 1, 0x9c, 0x40, 0x1e, 0x64};
  uint8_t v2stream[256];
  size_t v2l = v2(v2stream, 1, 0x11, a4, sizeof a4, 9);
  memcpy(v2stream + v2l, next, nl);
  for (int which = 0; which < 2; which++) {
    const uint8_t *s = which ? v2stream : stream;
    size_t len = which ? v2l + nl : total, header_len = which ? v2l : hl;
    for (size_t cut = 1; cut <= len; cut++) {
      uint8_t held[HUBU_PROXY_MAX_HEADER];
      size_t held_n = 0, off = 0;
      int found = 0;
      hubu_proxy_header h;
      uint8_t after[256];
      size_t after_n = 0;
      while (off < len) {
        size_t n = len - off < cut ? len - off : cut;
        if (found) {
          memcpy(after + after_n, s + off, n);
          after_n += n;
        } else {
          memcpy(held + held_n, s + off, n);
          held_n += n;
          hubu_proxy_status st = hubu_proxy_parse(held, held_n, &h, NULL);
          if (st == HUBU_PROXY_ERROR) break;
          if (st == HUBU_PROXY_OK) {
            found = 1;
            memcpy(after, held + h.len, held_n - h.len);
            after_n = held_n - h.len;
          }
        }
        off += n;
      }
      if (!CHECK(found)) continue;
      CHECK_EQ_U64(h.len, header_len);
      CHECK_EQ_STR(name_of(&h.src), "198.51.100.4:40000");
      CHECK(after_n == nl && !memcmp(after, next, nl));
    }
  }
}

/* Random bytes after a valid prefix never crash it, never claim a header
 * longer than the input, and ask for more only below the bound. */
static void test_random(void) {
  srand(7);
  uint8_t buf[HUBU_PROXY_MAX_HEADER + 16];
  hubu_proxy_header h;
  for (int round = 0; round < 20000; round++) {
    size_t n = (size_t)rand() % sizeof buf;
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rand();
    if (round % 3 == 0 && n >= 12) memcpy(buf, sig, 12);
    if (round % 3 == 1 && n >= 6) memcpy(buf, "PROXY ", 6);
    if (round % 5 == 0 && n >= 16) buf[12] = 0x21, buf[13] = 0x11, buf[14] = 0, buf[15] = (uint8_t)(n % 40);
    hubu_proxy_status st = hubu_proxy_parse(buf, n, &h, NULL);
    if (st == HUBU_PROXY_OK) CHECK(h.len <= n);
    if (st == HUBU_PROXY_NEED_MORE) CHECK(n < HUBU_PROXY_MAX_HEADER);
  }
}

int main(int argc, char **argv) {
  (void)argc;
  test_v1();
  test_v2();
  test_split();
  test_random();
  return check_summary(argv[0]);
}

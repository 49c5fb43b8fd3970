/* proxy_proto.c — the PROXY protocol v1 and v2 header parser. Every byte is
 * checked against the prefix it must continue as soon as it arrives, so a
 * connection that sends anything else is refused on its first wrong byte,
 * and no header is waited for past its bound. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

static hubu_proxy_status fail(const char **why, const char *what) {
  if (why) *why = what;
  return HUBU_PROXY_ERROR;
}

/* A decimal port of 1-5 digits, no leading zero, at most 65535. */
static int parse_port(const char *s, size_t len, uint16_t *out) {
  if (len == 0 || len > 5 || (len > 1 && s[0] == '0')) return -1;
  unsigned v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535) return -1;
  *out = (uint16_t)v;
  return 0;
}

/* An address of family fam from s[0..len) into a. */
static int parse_addr(int fam, const char *s, size_t len, struct sockaddr_storage *a) {
  char text[INET6_ADDRSTRLEN];
  if (len == 0 || len >= sizeof text) return -1;
  memcpy(text, s, len);
  text[len] = '\0';
  memset(a, 0, sizeof *a);
  if (fam == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)a;
    in->sin_family = AF_INET;
    return inet_pton(AF_INET, text, &in->sin_addr) == 1 ? 0 : -1;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)a;
  in6->sin6_family = AF_INET6;
  return inet_pton(AF_INET6, text, &in6->sin6_addr) == 1 ? 0 : -1;
}

static void set_port(struct sockaddr_storage *a, uint16_t port) {
  if (a->ss_family == AF_INET)
    ((struct sockaddr_in *)a)->sin_port = htons(port);
  else
    ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

/* "PROXY TCP4 SRC DST SPORT DPORT\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN ...\r\n". */
static hubu_proxy_status parse_v1(const uint8_t *p, size_t n, hubu_proxy_header *out, const char **why) {
  size_t sig = sizeof v1_sig - 1;
  if (memcmp(p, v1_sig, n < sig ? n : sig) != 0) return fail(why, "not a PROXY header");
  size_t end = 0; /* index of the '\r' of the CRLF */
  for (size_t i = 0; i < n && i < HUBU_PROXY_V1_MAX; i++) {
    if (p[i] == '\r') {
      if (i + 2 > HUBU_PROXY_V1_MAX) return fail(why, "v1: longer than 107 bytes");
      if (i + 1 == n) return HUBU_PROXY_NEED_MORE;
      if (p[i + 1] != '\n') return fail(why, "v1: CR without LF");
      end = i;
      break;
    }
    if (p[i] < 0x20 || p[i] > 0x7e) return fail(why, "v1: a byte that is not printable ASCII");
  }
  if (!end) return n < HUBU_PROXY_V1_MAX ? HUBU_PROXY_NEED_MORE : fail(why, "v1: no CRLF within 107 bytes");
  const char *s = (const char *)p + sig;
  size_t len = end - sig;
  memset(out, 0, sizeof *out);
  out->version = 1;
  out->len = end + 2;
  if (len >= 7 && !memcmp(s, "UNKNOWN", 7) && (len == 7 || s[7] == ' ')) {
    out->family = AF_UNSPEC; /* the rest of the line is ignored */
    return HUBU_PROXY_OK;
  }
  int fam;
  if (len > 5 && !memcmp(s, "TCP4 ", 5))
    fam = AF_INET;
  else if (len > 5 && !memcmp(s, "TCP6 ", 5))
    fam = AF_INET6;
  else
    return fail(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
  /* four fields separated by single spaces */
  const char *f[4];
  size_t fl[4];
  const char *q = s + 5, *stop = s + len;
  for (int i = 0; i < 4; i++) {
    const char *sp = memchr(q, ' ', (size_t)(stop - q));
    const char *e = i < 3 ? sp : stop;
    if (!e || (i == 3 && sp)) return fail(why, "v1: want source, destination and two ports");
    f[i] = q;
    fl[i] = (size_t)(e - q);
    if (fl[i] == 0) return fail(why, "v1: an empty field");
    q = e + 1;
  }
  uint16_t sport, dport;
  if (parse_addr(fam, f[0], fl[0], &out->src) != 0 || parse_addr(fam, f[1], fl[1], &out->dst) != 0)
    return fail(why, fam == AF_INET ? "v1: not an IPv4 address" : "v1: not an IPv6 address");
  if (parse_port(f[2], fl[2], &sport) != 0 || parse_port(f[3], fl[3], &dport) != 0)
    return fail(why, "v1: not a port (0-65535)");
  set_port(&out->src, sport);
  set_port(&out->dst, dport);
  out->family = fam;
  return HUBU_PROXY_OK;
}

static hubu_proxy_status parse_v2(const uint8_t *p, size_t n, hubu_proxy_header *out, const char **why) {
  if (memcmp(p, v2_sig, n < sizeof v2_sig ? n : sizeof v2_sig) != 0) return fail(why, "not a PROXY header");
  if (n < 13) return HUBU_PROXY_NEED_MORE;
  if ((p[12] >> 4) != 2) return fail(why, "v2: version is not 2");
  int cmd = p[12] & 0x0f;
  if (cmd > 1) return fail(why, "v2: command is neither LOCAL nor PROXY");
  if (n < 14) return HUBU_PROXY_NEED_MORE;
  int fam = p[13] >> 4, proto = p[13] & 0x0f;
  if (fam > 3 || proto > 2) return fail(why, "v2: unknown address family or protocol");
  if (n < HUBU_PROXY_V2_HEAD) return HUBU_PROXY_NEED_MORE;
  size_t payload = (size_t)p[14] << 8 | p[15];
  if (payload > HUBU_PROXY_V2_MAX_PAYLOAD) return fail(why, "v2: longer than the 4096-byte cap");
  if (cmd == 1 && proto == 2) return fail(why, "v2: a datagram connection");
  size_t need = cmd == 1 && proto == 1 ? (fam == 1 ? 12u : fam == 2 ? 36u : fam == 3 ? 216u : 0u) : 0u;
  if (payload < need) return fail(why, "v2: addresses shorter than their family's");
  if (n < HUBU_PROXY_V2_HEAD + payload) return HUBU_PROXY_NEED_MORE;
  memset(out, 0, sizeof *out);
  out->version = 2;
  out->len = HUBU_PROXY_V2_HEAD + payload;
  out->local = cmd == 0;
  out->family = AF_UNSPEC;
  if (out->local || proto != 1 || (fam != 1 && fam != 2)) return HUBU_PROXY_OK; /* the connection's own addresses */
  const uint8_t *a = p + HUBU_PROXY_V2_HEAD;
  if (fam == 1) {
    struct sockaddr_in *src = (struct sockaddr_in *)&out->src, *dst = (struct sockaddr_in *)&out->dst;
    src->sin_family = dst->sin_family = AF_INET;
    memcpy(&src->sin_addr, a, 4);
    memcpy(&dst->sin_addr, a + 4, 4);
    memcpy(&src->sin_port, a + 8, 2); /* both in network order already */
    memcpy(&dst->sin_port, a + 10, 2);
    out->family = AF_INET;
  } else {
    struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src, *dst = (struct sockaddr_in6 *)&out->dst;
    src->sin6_family = dst->sin6_family = AF_INET6;
    memcpy(&src->sin6_addr, a, 16);
    memcpy(&dst->sin6_addr, a + 16, 16);
    memcpy(&src->sin6_port, a + 32, 2);
    memcpy(&dst->sin6_port, a + 34, 2);
    out->family = AF_INET6;
  }
  return HUBU_PROXY_OK; /* TLVs (after the addresses) are skipped */
}

hubu_proxy_status hubu_proxy_parse(const uint8_t *p, size_t n, hubu_proxy_header *out, const char **why) {
  if (n == 0) return HUBU_PROXY_NEED_MORE;
  if (p[0] == 'P') return parse_v1(p, n, out, why);
  if (p[0] == 0x0D) return parse_v2(p, n, out, why);
  return fail(why, "no PROXY header");
}

void hubu_proxy_addr_name(const struct sockaddr_storage *a, int want_port, char *out, size_t size) {
  char host[INET6_ADDRSTRLEN];
  if (size) out[0] = '\0';
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)a;
    if (!inet_ntop(AF_INET, &in->sin_addr, host, sizeof host)) return;
    if (want_port)
      snprintf(out, size, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    else
      snprintf(out, size, "%s", host);
  } else if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
    if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host)) return;
    if (want_port)
      snprintf(out, size, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    else
      snprintf(out, size, "%s", host);
  }
}

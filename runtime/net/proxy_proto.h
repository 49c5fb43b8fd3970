/* proxy_proto.h — the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a proxy in front of hubud sends first on each
 * connection to say whose connection it is. A pure parser: bytes in, a
 * verdict out; no I/O, no allocation. */
#ifndef HUBU_PROXY_PROTO_H
#define HUBU_PROXY_PROTO_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Version 1 (text): "PROXY ... \r\n", at most 107 bytes with the CRLF. */
#define HUBU_PROXY_V1_MAX 107
/* Version 2 (binary): a 16-byte head, then at most this many bytes of
 * addresses and TLVs (the protocol allows 65535; no proxy sends more than a
 * few hundred). */
#define HUBU_PROXY_V2_HEAD 16
#define HUBU_PROXY_V2_MAX_PAYLOAD 4096
/* The most bytes a connection is held for before its header is complete. */
#define HUBU_PROXY_MAX_HEADER (HUBU_PROXY_V2_HEAD + HUBU_PROXY_V2_MAX_PAYLOAD)

typedef enum {
  HUBU_PROXY_NEED_MORE = 0, /* a valid prefix: read more */
  HUBU_PROXY_OK = 1,        /* a whole header: see hubu_proxy_header */
  HUBU_PROXY_ERROR = -1,    /* not a valid header (why says what) */
} hubu_proxy_status;

/* What a header said. family is AF_INET or AF_INET6 when it names the
 * client (src) and the address it connected to (dst); AF_UNSPEC when the
 * connection's own addresses stand: a v1 "UNKNOWN", a v2 LOCAL (the proxy's
 * own health check), or a v2 PROXY of an unspecified or UNIX family. */
typedef struct {
  size_t len;  /* header bytes; what follows belongs to the next layer */
  int version; /* 1 or 2 */
  int local;   /* v2 LOCAL command */
  int family;  /* AF_INET, AF_INET6 or AF_UNSPEC */
  struct sockaddr_storage src, dst;
} hubu_proxy_header;

/* Parses the header at the start of p[0..n). On HUBU_PROXY_OK *out is
 * filled; on HUBU_PROXY_ERROR *why (when why is not NULL) is a static string
 * naming the fault. NEED_MORE is answered only while n is below the
 * header's bound (HUBU_PROXY_V1_MAX, or HUBU_PROXY_MAX_HEADER), so a
 * caller that buffers until a verdict holds at most that many bytes. */
hubu_proxy_status hubu_proxy_parse(const uint8_t *p, size_t n, hubu_proxy_header *out, const char **why);

/* "1.2.3.4:5678" or "[::1]:5678" for an AF_INET / AF_INET6 address, else
 * "" (size: at least 64). With port 0 (want_port 0) only the address. */
void hubu_proxy_addr_name(const struct sockaddr_storage *a, int want_port, char *out, size_t size);

#endif

/* hubuctl_admin.c — `hubuctl stats | conns | kick | reload`: one HTTP/1.1
 * request to hubud's admin listener (runtime/admin.c) over a blocking socket,
 * the response read with http-parser and its JSON body printed as the server
 * wrote it. Exit status: 0 on a 2xx answer, 1 on any other answer or a
 * connection failure (the reason printed), 2 on a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "buf.h"
#include "token.h"

int hubuctl_stats(int argc, char **argv);
int hubuctl_conns(int argc, char **argv);
int hubuctl_kick(int argc, char **argv);
int hubuctl_reload(int argc, char **argv);

#define EXIT_USAGE 2
#define DEFAULT_ADMIN "127.0.0.1:7781"
#define CONNECT_TIMEOUT_MS 5000
#define IO_TIMEOUT_S 30
#define MAX_RESPONSE (256u << 20) /* a connection list of a very busy server still fits */

/* ---- the HTTP exchange ----------------------------------------------------- */

typedef struct {
  hubu_buf body; /* owned */
  int complete;
  int too_large;
} response;

static int on_body(http_parser *p, const char *at, size_t len) {
  response *r = p->data;
  if (hubu_buf_size(&r->body) + len > MAX_RESPONSE) {
    r->too_large = 1;
    return -1;
  }
  return hubu_buf_append(&r->body, at, len) == 0 ? 0 : -1;
}

static int on_message_complete(http_parser *p) {
  response *r = p->data;
  r->complete = 1;
  http_parser_pause(p, 1);
  return 0;
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host and port; -1 when malformed. */
static int split_hostport(const char *s, char *host, size_t host_size, char *port, size_t port_size) {
  const char *colon = strrchr(s, ':');
  if (!colon || !colon[1] || strlen(colon + 1) >= port_size) return -1;
  size_t hl = (size_t)(colon - s);
  if (hl > 1 && s[0] == '[' && s[hl - 1] == ']') {
    s++;
    hl -= 2;
  }
  if (hl == 0 || hl >= host_size) return -1;
  for (const char *p = colon + 1; *p; p++)
    if (*p < '0' || *p > '9') return -1;
  memcpy(host, s, hl);
  host[hl] = '\0';
  snprintf(port, port_size, "%s", colon + 1);
  return 0;
}

/* A connected blocking socket, or -1 with the reason printed. */
static int connect_admin(const char *cmd, const char *admin) {
  char host[256], port[16];
  if (split_hostport(admin, host, sizeof host, port, sizeof port) != 0) {
    fprintf(stderr, "hubuctl: %s: --admin wants HOST:PORT, got '%s'\n", cmd, admin);
    return -1;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0) {
    fprintf(stderr, "hubuctl: %s: cannot resolve %s: %s\n", cmd, host, gai_strerror(gai));
    return -1;
  }
  int fd = -1, err = 0;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    /* Connect with a deadline, then go back to blocking I/O with timeouts. */
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      socklen_t len = sizeof err;
      if (poll(&pfd, 1, CONNECT_TIMEOUT_MS) != 1)
        err = ETIMEDOUT;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
      r = err ? -1 : 0;
    } else if (r != 0) {
      err = errno;
    }
    if (r != 0) {
      close(fd);
      fd = -1;
      continue;
    }
    fcntl(fd, F_SETFL, flags);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  freeaddrinfo(res);
  if (fd < 0)
    fprintf(stderr,
            "hubuctl: %s: cannot connect to the admin listener at %s: %s (is hubud running, and with this "
            "--admin-listen?)\n",
            cmd, admin, strerror(err));
  return fd;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Sends METHOD target, prints the body: to stdout on 2xx, else to stderr with
 * the status. Returns the exit status. */
static int admin_request(const char *cmd, const char *admin, const char *method, const char *target) {
  int fd = connect_admin(cmd, admin);
  if (fd < 0) return 1;
  int status = 1;
  response r = {{0}, 0, 0};
  char req[4096];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hubuctl\r\nAccept: application/json\r\n"
                   "Content-Length: 0\r\nConnection: close\r\n\r\n",
                   method, target, admin);
  if (n < 0 || (size_t)n >= sizeof req) {
    fprintf(stderr, "hubuctl: %s: request too long\n", cmd);
    goto done;
  }
  if (send_all(fd, req, (size_t)n) != 0) {
    fprintf(stderr, "hubuctl: %s: cannot send the request to %s: %s\n", cmd, admin, strerror(errno));
    goto done;
  }
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &r;
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  char buf[16384];
  while (!r.complete) {
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      fprintf(stderr, "hubuctl: %s: no answer from %s: %s\n", cmd, admin,
              errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
      goto done;
    }
    http_parser_execute(&parser, &settings, buf, (size_t)got); /* got == 0 tells the parser about EOF */
    enum http_errno err = HTTP_PARSER_ERRNO(&parser);
    if (r.complete) break;
    if (r.too_large) {
      fprintf(stderr, "hubuctl: %s: the answer is larger than %u MiB\n", cmd, MAX_RESPONSE >> 20);
      goto done;
    }
    if (err != HPE_OK) {
      fprintf(stderr, "hubuctl: %s: malformed answer from %s: %s\n", cmd, admin, http_errno_description(err));
      goto done;
    }
    if (got == 0) {
      fprintf(stderr, "hubuctl: %s: %s closed the connection before answering\n", cmd, admin);
      goto done;
    }
  }
  const char *body = (const char *)hubu_buf_head(&r.body);
  size_t len = hubu_buf_size(&r.body);
  const char *nl = len && body[len - 1] != '\n' ? "\n" : "";
  if (parser.status_code >= 200 && parser.status_code < 300) {
    fwrite(body, 1, len, stdout);
    fputs(nl, stdout);
    status = fflush(stdout) == 0 ? 0 : 1;
  } else {
    fprintf(stderr, "hubuctl: %s: %u %s: %.*s%s", cmd, parser.status_code,
            http_status_str((enum http_status)parser.status_code), (int)len, body, len ? nl : "\n");
  }
done:
  hubu_buf_free(&r.body);
  close(fd);
  return status;
}

/* Appends s percent-encoded (all but RFC 3986 unreserved characters) to out. */
static int append_encoded(char *out, size_t size, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                *p == '.' || *p == '_' || *p == '~';
    if (n + (plain ? 1 : 3) >= size) return -1;
    if (plain) {
      out[n++] = (char)*p;
    } else {
      out[n++] = '%';
      out[n++] = hex[*p >> 4];
      out[n++] = hex[*p & 15];
    }
  }
  out[n] = '\0';
  return 0;
}

/* ---- arguments -------------------------------------------------------------- */

typedef struct {
  const char *admin;  /* --admin, else $HUBU_ADMIN, else DEFAULT_ADMIN */
  const char *reason; /* --reason (kick only) */
  const char *positional[2];
  int n_positional;
} admin_args;

/* Reads --admin (every command), --reason (when allow_reason) and up to
 * max_positional plain arguments. 0, or EXIT_USAGE after printing why. */
static int parse_args(const char *cmd, const char *usage, int argc, char **argv, int allow_reason, int max_positional,
                      admin_args *out) {
  memset(out, 0, sizeof *out);
  out->admin = getenv("HUBU_ADMIN");
  if (!out->admin || !*out->admin) out->admin = DEFAULT_ADMIN;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    const char *name = NULL;
    if (!strncmp(a, "--admin", 7) && (a[7] == '\0' || a[7] == '=')) {
      slot = &out->admin;
      name = "--admin";
    } else if (allow_reason && !strncmp(a, "--reason", 8) && (a[8] == '\0' || a[8] == '=')) {
      slot = &out->reason;
      name = "--reason";
    }
    if (slot) {
      const char *eq = strchr(a, '=');
      if (eq) {
        *slot = eq + 1;
      } else if (i + 1 < argc) {
        *slot = argv[++i];
      } else {
        fprintf(stderr, "hubuctl: %s: %s needs a value\n", cmd, name);
        return EXIT_USAGE;
      }
    } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: hubuctl %s %s\n", cmd, usage);
      exit(0);
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "hubuctl: %s: unknown option %s\nusage: hubuctl %s %s\n", cmd, a, cmd, usage);
      return EXIT_USAGE;
    } else if (out->n_positional < max_positional) {
      out->positional[out->n_positional++] = a;
    } else {
      fprintf(stderr, "hubuctl: %s: unexpected argument '%s'\nusage: hubuctl %s %s\n", cmd, a, cmd, usage);
      return EXIT_USAGE;
    }
  }
  char host[256], port[16];
  if (split_hostport(out->admin, host, sizeof host, port, sizeof port) != 0) {
    fprintf(stderr, "hubuctl: %s: --admin wants HOST:PORT (e.g. %s), got '%s'\n", cmd, DEFAULT_ADMIN, out->admin);
    return EXIT_USAGE;
  }
  return 0;
}

static int check_id(const char *cmd, const char *what, const char *id) {
  if (hubu_id_valid(id, strlen(id))) return 0;
  fprintf(stderr, "hubuctl: %s: invalid %s '%s': 1-64 bytes of [A-Za-z0-9_.@-]\n", cmd, what, id);
  return EXIT_USAGE;
}

/* ---- the commands ------------------------------------------------------------ */

int hubuctl_stats(int argc, char **argv) {
  admin_args args;
  int r = parse_args("stats", "[--admin HOST:PORT]", argc, argv, 0, 0, &args);
  if (r) return r;
  return admin_request("stats", args.admin, "GET", "/v1/admin/stats");
}

int hubuctl_conns(int argc, char **argv) {
  admin_args args;
  int r = parse_args("conns", "[USER] [--admin HOST:PORT]", argc, argv, 0, 1, &args);
  if (r) return r;
  char target[256] = "/v1/admin/conns";
  if (args.n_positional) {
    if ((r = check_id("conns", "user id", args.positional[0]))) return r;
    strcat(target, "?user=");
    append_encoded(target, sizeof target, args.positional[0]); /* 64 bytes at most: fits */
  }
  return admin_request("conns", args.admin, "GET", target);
}

int hubuctl_kick(int argc, char **argv) {
  static const char usage[] = "USER [--reason R] [--admin HOST:PORT]";
  admin_args args;
  int r = parse_args("kick", usage, argc, argv, 1, 1, &args);
  if (r) return r;
  if (!args.n_positional) {
    fprintf(stderr, "usage: hubuctl kick %s\n", usage);
    return EXIT_USAGE;
  }
  if ((r = check_id("kick", "user id", args.positional[0]))) return r;
  char target[2048] = "/v1/admin/kick?user=";
  append_encoded(target, sizeof target, args.positional[0]);
  if (args.reason) {
    strcat(target, "&reason=");
    if (append_encoded(target, sizeof target, args.reason) != 0) {
      fprintf(stderr, "hubuctl: kick: --reason is too long\n");
      return EXIT_USAGE;
    }
  }
  return admin_request("kick", args.admin, "POST", target);
}

int hubuctl_reload(int argc, char **argv) {
  admin_args args;
  int r = parse_args("reload", "[PLUGIN] [--admin HOST:PORT]", argc, argv, 0, 1, &args);
  if (r) return r;
  char target[256] = "/v1/admin/reload";
  if (args.n_positional) {
    if ((r = check_id("reload", "plugin name", args.positional[0]))) return r;
    strcat(target, "?plugin=");
    append_encoded(target, sizeof target, args.positional[0]);
  }
  return admin_request("reload", args.admin, "POST", target);
}

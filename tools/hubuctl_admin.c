/* hubuctl_admin.c — `hubuctl stats | conns | kick | reload | plugins`: one
 * HTTP/1.1 request to hubud's admin listener (runtime/admin.c) over a
 * blocking socket, the response read with http-parser and its JSON body
 * printed as the server wrote it (`plugins` prints it as a table unless
 * --json; text from the server shows its control characters as '?' there).
 * Every request passes the listener's guard: POSTs say Content-Type
 * application/json, and --admin-token (or $HUBU_ADMIN_TOKEN) goes out as
 * Authorization: Bearer.
 * Exit status: 0 on a 2xx answer, 1 on any other answer or a
 * connection failure (the reason printed), 2 on a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "buf.h"
#include "hubuctl_json.h"
#include "secret.h"
#include "token.h" /* HUBU_ADMIN_TOKEN_MIN, _MAX: the token's bounds, as hubud checks them */
#include "utf8.h"

int hubuctl_stats(int argc, char **argv);
int hubuctl_cluster(int argc, char **argv);
int hubuctl_conns(int argc, char **argv);
int hubuctl_kick(int argc, char **argv);
int hubuctl_reload(int argc, char **argv);
int hubuctl_plugins(int argc, char **argv);

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

static int connect_quiet;  /* set: a refused connection is not printed (hubuctl group tries the server first) */
static int connect_failed; /* the last connect_admin found nobody listening */

/* A connected blocking socket, or -1 with the reason printed. */
static int connect_admin(const char *cmd, const char *admin) {
  connect_failed = 0;
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
  if (fd < 0) connect_failed = 1;
  if (fd < 0 && !connect_quiet)
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

/* Where to send and with what: --admin and --admin-token as parse_args read them. */
typedef struct {
  const char *admin;                    /* HOST:PORT */
  char token[HUBU_ADMIN_TOKEN_MAX + 1]; /* the bearer token, "" for none */
} admin_target;

/* Sends METHOD target (a POST as application/json, with the token when
 * there is one) and reads the answer: its status into *status_code and its
 * body into body (owned by the caller). 0, or -1 with the reason printed. */
static int admin_exchange(const char *cmd, const admin_target *to, const char *method, const char *target,
                          unsigned *status_code, hubu_buf *body) {
  const char *admin = to->admin;
  int fd = connect_admin(cmd, admin);
  if (fd < 0) return -1;
  int status = -1;
  response r = {{0}, 0, 0};
  char req[4096 + sizeof to->token];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hubuctl\r\nAccept: application/json\r\n"
                   "%s%s%s%sContent-Length: 0\r\nConnection: close\r\n\r\n",
                   method, target, admin, strcmp(method, "GET") ? "Content-Type: application/json\r\n" : "",
                   to->token[0] ? "Authorization: Bearer " : "", to->token, to->token[0] ? "\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof req) {
    fprintf(stderr, "hubuctl: %s: request too long\n", cmd);
    goto done;
  }
  int sent = send_all(fd, req, (size_t)n);
  OPENSSL_cleanse(req, sizeof req); /* it held the token */
  if (sent != 0) {
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
  *status_code = parser.status_code;
  *body = r.body;
  memset(&r.body, 0, sizeof r.body);
  status = 0;
done:
  hubu_buf_free(&r.body);
  close(fd);
  return status;
}

/* ---- text from the server, on a terminal -------------------------------------- */

/* The next unit of p (n > 0 bytes there): how many bytes it takes, and in
 * *shown whether they may go to a terminal as they are. Not shown: control
 * characters (bytes below 0x20 other than those in keep, 0x7f, and the C1
 * controls U+0080-U+009F, as a terminal may read them as the start of an
 * escape sequence too) and each byte that is not part of well-formed UTF-8. */
static size_t unit(const unsigned char *p, size_t n, const char *keep, int *shown) {
  if (p[0] < 0x80) {
    *shown = (p[0] >= 0x20 && p[0] != 0x7f) || (p[0] != '\0' && keep && strchr(keep, p[0]));
    return 1;
  }
  size_t len = hubu_utf8_seq_len(p, n);
  *shown = len > 0 && !(p[0] == 0xc2 && p[1] < 0xa0);
  return len ? len : 1;
}

/* Writes len bytes of s to f with every unit that may not be shown as '?'
 * (one '?' per byte of a malformed sequence, one per C1 control). */
static void put_printable(FILE *f, const char *s, size_t len, const char *keep) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    int shown;
    size_t n = unit(p, (size_t)(end - p), keep, &shown);
    if (shown)
      fwrite(p, 1, n, f);
    else
      fputc('?', f);
    p += n;
  }
}

/* Copies s into dst (size > 0 bytes, NUL-terminated) as put_printable would
 * print it, as much as fits without splitting a UTF-8 sequence. */
static void copy_printable(char *dst, size_t size, const char *s) {
  const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
  size_t w = 0;
  while (p < end) {
    int shown;
    size_t n = unit(p, (size_t)(end - p), NULL, &shown);
    size_t out = shown ? n : 1;
    if (w + out >= size) break;
    if (shown)
      memcpy(dst + w, p, n);
    else
      dst[w] = '?';
    w += out;
    p += n;
  }
  dst[w] = '\0';
}

/* A non-2xx answer to stderr: the status and the server's {"error": ...}. */
static void print_error_answer(const char *cmd, unsigned code, const hubu_buf *b) {
  const char *body = (const char *)hubu_buf_head(b);
  size_t len = hubu_buf_size(b);
  const char *nl = len && body[len - 1] != '\n' ? "\n" : "";
  fprintf(stderr, "hubuctl: %s: %u %s: ", cmd, code, http_status_str((enum http_status)code));
  put_printable(stderr, body, len, "\n\t");
  fputs(len ? nl : "\n", stderr);
}

/* Sends METHOD target, prints the body: to stdout on 2xx, else to stderr with
 * the status. Returns the exit status. */
static int admin_request(const char *cmd, const admin_target *to, const char *method, const char *target) {
  unsigned code = 0;
  hubu_buf b = {0};
  if (admin_exchange(cmd, to, method, target, &code, &b) != 0) return 1;
  int status = 1;
  const char *body = (const char *)hubu_buf_head(&b);
  size_t len = hubu_buf_size(&b);
  if (code >= 200 && code < 300) {
    fwrite(body, 1, len, stdout);
    fputs(len && body[len - 1] != '\n' ? "\n" : "", stdout);
    status = fflush(stdout) == 0 ? 0 : 1;
  } else {
    print_error_answer(cmd, code, &b);
  }
  hubu_buf_free(&b);
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

#define OPT_REASON 1 /* --reason R (kick) */
#define OPT_JSON 2   /* --json (plugins) */
#define OPT_CONFIG 4 /* --config (reload) */

typedef struct {
  admin_target to;    /* --admin, else $HUBU_ADMIN, else DEFAULT_ADMIN; --admin-token, else $HUBU_ADMIN_TOKEN */
  const char *reason; /* --reason (kick only) */
  int json;           /* --json (plugins only) */
  int config;         /* --config (reload only) */
  const char *positional[2];
  size_t n_positional;
} admin_args;

/* Fills to->token from arg (TOKEN or @FILE, read as hubud reads it):
 * printable ASCII without spaces within hubud's bounds, as the server wants
 * it (and nothing that could end the header). 0, or EXIT_USAGE after
 * printing why. */
static int read_token(const char *cmd, const char *from, const char *arg, admin_target *to) {
  uint8_t *bytes = NULL;
  size_t len = strlen(arg);
  if (arg[0] == '@') {
    int r = hubu_secret_read_file(arg + 1, &bytes, &len);
    if (r != 0) {
      fprintf(stderr, "hubuctl: %s: cannot read the admin token from %s: %s\n", cmd, arg + 1,
              r == -2 ? "empty or larger than 4096 bytes" : strerror(errno));
      return EXIT_USAGE;
    }
  }
  const uint8_t *t = bytes ? bytes : (const uint8_t *)arg;
  int ok = len >= HUBU_ADMIN_TOKEN_MIN && len <= HUBU_ADMIN_TOKEN_MAX;
  for (size_t i = 0; ok && i < len; i++) ok = t[i] > 0x20 && t[i] < 0x7f;
  if (ok) {
    memcpy(to->token, t, len);
    to->token[len] = '\0';
  }
  if (bytes) OPENSSL_cleanse(bytes, len);
  free(bytes);
  if (!ok) {
    fprintf(stderr, "hubuctl: %s: the admin token (%s) must be %d-%d bytes of printable ASCII without spaces\n", cmd,
            from, HUBU_ADMIN_TOKEN_MIN, HUBU_ADMIN_TOKEN_MAX);
    return EXIT_USAGE;
  }
  return 0;
}

/* Reads --admin and --admin-token (every command), the options of opts
 * (OPT_REASON, OPT_JSON) and up to max_positional plain arguments. 0, or
 * EXIT_USAGE after printing why. */
static int parse_args(const char *cmd, const char *usage, int argc, char **argv, int opts, int max_positional,
                      admin_args *out) {
  memset(out, 0, sizeof *out);
  out->to.admin = getenv("HUBU_ADMIN");
  if (!out->to.admin || !*out->to.admin) out->to.admin = DEFAULT_ADMIN;
  const char *token = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    const char *name = NULL;
    if (!strncmp(a, "--admin-token", 13) && (a[13] == '\0' || a[13] == '=')) {
      slot = &token;
      name = "--admin-token";
    } else if (!strncmp(a, "--admin", 7) && (a[7] == '\0' || a[7] == '=')) {
      slot = &out->to.admin;
      name = "--admin";
    } else if ((opts & OPT_REASON) && !strncmp(a, "--reason", 8) && (a[8] == '\0' || a[8] == '=')) {
      slot = &out->reason;
      name = "--reason";
    }
    if ((opts & OPT_JSON) && !strcmp(a, "--json")) {
      out->json = 1;
    } else if ((opts & OPT_CONFIG) && !strcmp(a, "--config")) {
      out->config = 1;
    } else if (slot) {
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
    } else if ((int)out->n_positional < max_positional &&
               out->n_positional < sizeof out->positional / sizeof out->positional[0]) {
      out->positional[out->n_positional++] = a;
    } else {
      fprintf(stderr, "hubuctl: %s: unexpected argument '%s'\nusage: hubuctl %s %s\n", cmd, a, cmd, usage);
      return EXIT_USAGE;
    }
  }
  char host[256], port[16];
  if (split_hostport(out->to.admin, host, sizeof host, port, sizeof port) != 0) {
    fprintf(stderr, "hubuctl: %s: --admin wants HOST:PORT (e.g. %s), got '%s'\n", cmd, DEFAULT_ADMIN, out->to.admin);
    return EXIT_USAGE;
  }
  const char *from = "--admin-token";
  if (!token) {
    token = getenv("HUBU_ADMIN_TOKEN");
    from = "$HUBU_ADMIN_TOKEN";
    if (token && !*token) token = NULL;
  }
  return token ? read_token(cmd, from, token, &out->to) : 0;
}

static int check_id(const char *cmd, const char *what, const char *id) {
  if (hubu_id_valid(id, strlen(id))) return 0;
  fprintf(stderr, "hubuctl: %s: invalid %s '%s': 1-64 bytes of [A-Za-z0-9_.@-]\n", cmd, what, id);
  return EXIT_USAGE;
}

/* A plugin's name as the server takes it: a file name in its plugin folder. */
static int check_plugin_name(const char *cmd, const char *name) {
  size_t n = strlen(name);
  int ok = n >= 1 && n <= 64;
  for (size_t i = 0; ok && i < n; i++)
    ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
         (name[i] >= '0' && name[i] <= '9') || name[i] == '_' || name[i] == '-';
  if (ok) return 0;
  fprintf(stderr, "hubuctl: %s: invalid plugin name '%s': 1-64 bytes of [A-Za-z0-9_-]\n", cmd, name);
  return EXIT_USAGE;
}

/* ---- the commands ------------------------------------------------------------ */

int hubuctl_stats(int argc, char **argv) {
  admin_args args;
  int r = parse_args("stats", "[--admin HOST:PORT] [--admin-token TOKEN|@FILE]", argc, argv, 0, 0, &args);
  if (r) return r;
  return admin_request("stats", &args.to, "GET", "/v1/admin/stats");
}

int hubuctl_cluster(int argc, char **argv) {
  admin_args args;
  int r = parse_args("cluster", "[--admin HOST:PORT] [--admin-token TOKEN|@FILE]", argc, argv, 0, 0, &args);
  if (r) return r;
  return admin_request("cluster", &args.to, "GET", "/v1/admin/cluster");
}

int hubuctl_conns(int argc, char **argv) {
  admin_args args;
  int r = parse_args("conns", "[USER] [--admin HOST:PORT] [--admin-token TOKEN|@FILE]", argc, argv, 0, 1, &args);
  if (r) return r;
  char target[256] = "/v1/admin/conns";
  if (args.n_positional) {
    if ((r = check_id("conns", "user id", args.positional[0]))) return r;
    strcat(target, "?user=");
    append_encoded(target, sizeof target, args.positional[0]); /* 64 bytes at most: fits */
  }
  return admin_request("conns", &args.to, "GET", target);
}

int hubuctl_kick(int argc, char **argv) {
  static const char usage[] = "USER [--reason R] [--admin HOST:PORT] [--admin-token TOKEN|@FILE]";
  admin_args args;
  int r = parse_args("kick", usage, argc, argv, OPT_REASON, 1, &args);
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
  return admin_request("kick", &args.to, "POST", target);
}

int hubuctl_reload(int argc, char **argv) {
  admin_args args;
  int r = parse_args("reload", "[PLUGIN | --config] [--admin HOST:PORT] [--admin-token TOKEN|@FILE]", argc, argv,
                     OPT_CONFIG, 1, &args);
  if (r) return r;
  char target[256] = "/v1/admin/reload";
  if (args.config) {
    if (args.n_positional) {
      fprintf(stderr,
              "hubuctl: reload: --config reloads the plugins whose hubu.lua section changed; no PLUGIN with it\n");
      return EXIT_USAGE;
    }
    return admin_request("reload", &args.to, "POST", "/v1/admin/reload?config=1");
  }
  if (args.n_positional) {
    if ((r = check_plugin_name("reload", args.positional[0]))) return r;
    strcat(target, "?plugin=");
    append_encoded(target, sizeof target, args.positional[0]);
  }
  return admin_request("reload", &args.to, "POST", target);
}

/* The first line of s, at most max bytes of it (an error may carry a
 * traceback), cut before a UTF-8 sequence rather than inside it; control
 * characters show as '?'. */
static void print_first_line(const char *s, size_t max) {
  size_t n = strcspn(s, "\n"), cut = n < max ? n : max;
  while (cut > 0 && cut < n && ((unsigned char)s[cut] & 0xc0) == 0x80) cut--;
  put_printable(stdout, s, cut, NULL);
  fputs(n > max || s[n] ? " ..." : "", stdout);
}

/* s as put_printable shows it. */
static void print_text(const char *s) { put_printable(stdout, s, strlen(s), NULL); }

/* The listing of GET /v1/admin/plugins as a table, a line per failed reload after it. */
static int print_plugins_table(const hj_value *doc) {
  const hj_value *list = hj_get(doc, "plugins"), *failed = hj_get(doc, "not_loaded");
  if (!list || list->type != HJ_ARRAY) {
    fprintf(stderr, "hubuctl: plugins: the answer has no \"plugins\" list\n");
    return 1;
  }
  static const char *const heads[] = {"NAME", "VERSION", "POLICY", "PRIO", "HOOKS", "CALLS", "ERRORS", "SECONDS"};
  enum { COLS = 8 };
  size_t n = list->n;
  char(*cells)[COLS][80] = calloc(n ? n : 1, sizeof *cells);
  if (!cells) {
    fprintf(stderr, "hubuctl: plugins: out of memory\n");
    return 1;
  }
  int width[COLS];
  for (int c = 0; c < COLS; c++) width[c] = (int)strlen(heads[c]);
  for (size_t i = 0; i < n; i++) {
    const hj_value *pl = &list->items[i];
    const hj_value *hooks = hj_get(pl, "hooks"), *folder = hj_get(pl, "folder");
    double nhooks = 0;
    for (size_t h = 0; hooks && hooks->type == HJ_OBJECT && h < hooks->n; h++)
      if (hooks->items[h].type == HJ_NUMBER) nhooks += hooks->items[h].number;
    char name[sizeof cells[i][0] - 1]; /* room for the folder mark */
    copy_printable(name, sizeof name, hj_str(pl, "name", "?"));
    snprintf(cells[i][0], sizeof cells[i][0], "%s%s", name,
             folder && folder->type == HJ_BOOL && folder->boolean ? "/" : "");
    copy_printable(cells[i][1], sizeof cells[i][1], *hj_str(pl, "version", "") ? hj_str(pl, "version", "") : "-");
    copy_printable(cells[i][2], sizeof cells[i][2], hj_str(pl, "policy", "?"));
    snprintf(cells[i][3], sizeof cells[i][3], "%g", hj_num(pl, "priority", 0));
    snprintf(cells[i][4], sizeof cells[i][4], "%.0f", nhooks);
    snprintf(cells[i][5], sizeof cells[i][5], "%.0f", hj_num(pl, "calls", 0));
    snprintf(cells[i][6], sizeof cells[i][6], "%.0f", hj_num(pl, "errors", 0));
    snprintf(cells[i][7], sizeof cells[i][7], "%.3f", hj_num(pl, "seconds", 0));
    for (int c = 0; c < COLS; c++)
      if ((int)strlen(cells[i][c]) > width[c]) width[c] = (int)strlen(cells[i][c]);
  }
  for (int c = 0; c < COLS; c++) /* text left, numbers right */
    printf(c < 3 ? "%-*s%s" : "%*s%s", width[c], heads[c], c + 1 < COLS ? "  " : "\n");
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < COLS; c++)
      printf(c < 3 ? "%-*s%s" : "%*s%s", width[c], cells[i][c], c + 1 < COLS ? "  " : "\n");
  free(cells);
  for (size_t i = 0; i < n; i++) {
    const hj_value *pl = &list->items[i], *re = hj_get(pl, "reload_error");
    if (!re || re->type != HJ_OBJECT) continue;
    print_text(hj_str(pl, "name", "?"));
    printf(": reload failed, the previous version still runs: ");
    print_first_line(hj_str(re, "error", "?"), 400);
    printf("\n");
  }
  for (size_t i = 0; failed && failed->type == HJ_ARRAY && i < failed->n; i++) {
    print_text(hj_str(&failed->items[i], "name", "?"));
    printf(": failed to load, not running: ");
    print_first_line(hj_str(&failed->items[i], "error", "?"), 400);
    printf("\n");
  }
  printf("%zu plugin%s loaded from ", n, n == 1 ? "" : "s");
  print_text(hj_str(doc, "dir", "?"));
  printf("\n");
  return fflush(stdout) == 0 ? 0 : 1;
}

int hubuctl_plugins(int argc, char **argv) {
  admin_args args;
  int r =
      parse_args("plugins", "[--json] [--admin HOST:PORT] [--admin-token TOKEN|@FILE]", argc, argv, OPT_JSON, 0, &args);
  if (r) return r;
  if (args.json) return admin_request("plugins", &args.to, "GET", "/v1/admin/plugins");
  unsigned code = 0;
  hubu_buf b = {0};
  if (admin_exchange("plugins", &args.to, "GET", "/v1/admin/plugins", &code, &b) != 0) return 1;
  int status = 1;
  if (code < 200 || code >= 300) {
    print_error_answer("plugins", code, &b);
  } else {
    hj_value doc;
    char err[128];
    if (hj_parse((const char *)hubu_buf_head(&b), hubu_buf_size(&b), &doc, err, sizeof err) != 0) {
      fprintf(stderr, "hubuctl: plugins: the answer is not JSON (%s)\n", err);
    } else {
      status = print_plugins_table(&doc);
      hj_free(&doc);
    }
  }
  hubu_buf_free(&b);
  return status;
}

/* ---- hubuctl group through the running server --------------------------------- */

/* `hubuctl group VERB GROUP [USERS]` done by the server at admin (POST or
 * GET /v1/admin/group), so that the groups it holds in memory follow.
 * token_arg: --admin-token (or NULL: $HUBU_ADMIN_TOKEN). quiet: nobody
 * listening is not an error here. Returns the exit status, or -1 when
 * nothing listens at admin (nothing printed when quiet). */
int hubuctl_group_admin(const char *admin, const char *token_arg, int quiet, const char *verb, const char *group,
                        const char *const *users, size_t n_users) {
  admin_target to;
  memset(&to, 0, sizeof to);
  to.admin = admin;
  const char *from = "--admin-token";
  if (!token_arg) {
    token_arg = getenv("HUBU_ADMIN_TOKEN");
    from = "$HUBU_ADMIN_TOKEN";
    if (token_arg && !*token_arg) token_arg = NULL;
  }
  if (token_arg && read_token("group", from, token_arg, &to) != 0) return EXIT_USAGE;
  int members = !strcmp(verb, "members");
  char target[16384] = "/v1/admin/group?group=";
  int too_long = append_encoded(target, sizeof target, group) != 0;
  if (!members) {
    strcat(target, "&op=");
    too_long |= append_encoded(target, sizeof target, verb) != 0;
    if (n_users) strcat(target, "&users=");
    for (size_t i = 0; i < n_users && !too_long; i++) {
      if (i) too_long |= append_encoded(target, sizeof target, ",") != 0;
      too_long |= append_encoded(target, sizeof target, users[i]) != 0;
    }
  }
  if (too_long) {
    fprintf(stderr, "hubuctl: group: too many users for one request\n");
    return EXIT_USAGE;
  }
  unsigned code = 0;
  hubu_buf b = {0};
  connect_quiet = quiet;
  int r = admin_exchange("group", &to, members ? "GET" : "POST", target, &code, &b);
  connect_quiet = 0;
  OPENSSL_cleanse(&to, sizeof to);
  if (r != 0) return connect_failed ? -1 : 1;
  int status = 1;
  if (code < 200 || code >= 300) {
    print_error_answer("group", code, &b);
  } else if (members) {
    hj_value doc;
    char err[128];
    if (hj_parse((const char *)hubu_buf_head(&b), hubu_buf_size(&b), &doc, err, sizeof err) != 0) {
      fprintf(stderr, "hubuctl: group: the answer is not JSON (%s)\n", err);
    } else {
      const hj_value *list = hj_get(&doc, "members");
      for (size_t i = 0; list && list->type == HJ_ARRAY && i < list->n; i++) {
        if (list->items[i].type != HJ_STRING) continue;
        print_text(list->items[i].string);
        printf("\n");
      }
      status = list && list->type == HJ_ARRAY ? 0 : 1;
      hj_free(&doc);
    }
  } else {
    printf("%s: %s done (by the running server)\n", group, verb);
    status = 0;
  }
  hubu_buf_free(&b);
  return fflush(stdout) == 0 ? status : 1;
}

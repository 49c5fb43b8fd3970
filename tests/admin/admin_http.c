/* admin_http.c — blocking HTTP for the admin tests, answers read with
 * http-parser, and hubuctl and a refused hubud as child processes. Every wait
 * has a deadline. */
#include "admin_http.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HUBUCTL_PATH
#error "HUBUCTL_PATH must name the hubuctl binary"
#endif

int admin_port_of(const e2e_server *s) {
  char path[96], line[128];
  snprintf(path, sizeof path, "%s/ports", s->dir);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int port = 0, p;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "admin %d", &p) == 1 && p > 0) port = p;
  fclose(f);
  return port;
}

int admin_start_at(const char *file, int line, e2e_server *s, ...) {
  enum { MAX = 20 };
  const char *args[MAX + 1];
  int n = 0;
  args[n++] = "--admin-listen";
  args[n++] = "127.0.0.1:0";
  va_list ap;
  va_start(ap, s);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
    if (n == MAX) {
      e2e_fail(file, line, "ADMIN_START takes at most %d arguments", MAX - 2);
      e2e_abort();
    }
    args[n++] = a;
  }
  va_end(ap);
  while (n <= MAX) args[n++] = NULL;
  int r = e2e_server_start(s, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9],
                           args[10], args[11], args[12], args[13], args[14], args[15], args[16], args[17], args[18],
                           args[19], (const char *)NULL);
  if (r != 0) {
    e2e_fail(file, line, "hubud did not start");
    e2e_abort();
  }
  int port = admin_port_of(s);
  if (port <= 0) {
    e2e_fail(file, line, "no 'admin PORT' line in %s/ports", s->dir);
    e2e_abort();
  }
  return port;
}

/* ---- one exchange ------------------------------------------------------------ */

typedef struct {
  admin_reply *r;
  char field[64];
  size_t field_len;
  char value[128];
  size_t value_len;
  int in_value;
  int complete;
  size_t body_cap;
} reader;

static void commit_header(reader *rd) {
  if (!rd->in_value) return;
  rd->field[rd->field_len < sizeof rd->field ? rd->field_len : sizeof rd->field - 1] = '\0';
  rd->value[rd->value_len < sizeof rd->value ? rd->value_len : sizeof rd->value - 1] = '\0';
  if (!strcasecmp(rd->field, "Content-Type"))
    snprintf(rd->r->content_type, sizeof rd->r->content_type, "%s", rd->value);
  if (!strcasecmp(rd->field, "Allow")) snprintf(rd->r->allow, sizeof rd->r->allow, "%s", rd->value);
  if (!strcasecmp(rd->field, "WWW-Authenticate"))
    snprintf(rd->r->www_authenticate, sizeof rd->r->www_authenticate, "%s", rd->value);
  if (!strcasecmp(rd->field, "Access-Control-Allow-Origin"))
    snprintf(rd->r->allow_origin, sizeof rd->r->allow_origin, "%s", rd->value);
  if (!strcasecmp(rd->field, "Access-Control-Allow-Methods"))
    snprintf(rd->r->allow_methods, sizeof rd->r->allow_methods, "%s", rd->value);
  rd->field_len = rd->value_len = 0;
  rd->in_value = 0;
}

static void append_part(char *dst, size_t cap, size_t *len, const char *at, size_t n) {
  for (size_t i = 0; i < n && *len + 1 < cap; i++) dst[(*len)++] = at[i];
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  reader *rd = p->data;
  commit_header(rd);
  append_part(rd->field, sizeof rd->field, &rd->field_len, at, n);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  reader *rd = p->data;
  rd->in_value = 1;
  append_part(rd->value, sizeof rd->value, &rd->value_len, at, n);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  commit_header(p->data);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  reader *rd = p->data;
  admin_reply *r = rd->r;
  if (r->body_len + n + 1 > rd->body_cap) {
    size_t cap = rd->body_cap ? rd->body_cap : 4096;
    while (cap < r->body_len + n + 1) cap *= 2;
    char *b = realloc(r->body, cap);
    if (!b) return -1;
    r->body = b;
    rd->body_cap = cap;
  }
  memcpy(r->body + r->body_len, at, n);
  r->body_len += n;
  r->body[r->body_len] = '\0';
  return 0;
}

static int on_message_complete(http_parser *p) {
  reader *rd = p->data;
  rd->complete = 1;
  rd->r->status = (int)p->status_code;
  http_parser_pause(p, 1);
  return 0;
}

void admin_reply_free(admin_reply *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

int admin_exchange_at(const char *file, int line, int port, const void *request, size_t len, admin_reply *out) {
  memset(out, 0, sizeof *out);
  int fd = e2e_connect(port);
  if (fd < 0) {
    e2e_fail(file, line, "connect to the admin port %d: %s", port, strerror(errno));
    return -1;
  }
  if (e2e_send_raw(fd, request, len) != 0) {
    /* the server may answer and close before reading everything (413): read what came */
  }
  int r = admin_read_reply_at(file, line, fd, out);
  close(fd);
  return r;
}

int admin_read_reply_at(const char *file, int line, int fd, admin_reply *out) {
  memset(out, 0, sizeof *out);
  reader rd = {.r = out};
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &rd;
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  uint64_t deadline = e2e_now_ms() + 5000;
  char buf[8192];
  int result = -1;
  while (!rd.complete && e2e_now_ms() < deadline) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)(deadline - e2e_now_ms()));
    if (pr <= 0) continue;
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) break;
    http_parser_execute(&parser, &settings, buf, (size_t)got);
    if (rd.complete) break;
    if (HTTP_PARSER_ERRNO(&parser) != HPE_OK) {
      e2e_fail(file, line, "malformed answer: %s", http_errno_description(HTTP_PARSER_ERRNO(&parser)));
      goto done;
    }
    if (got == 0) break;
  }
  if (!rd.complete) {
    e2e_fail(file, line, "no complete answer (%zu body bytes so far)", out->body_len);
    goto done;
  }
  if (!out->body) {
    out->body = calloc(1, 1);
    if (!out->body) goto done;
  }
  /* Connection: close: the server's FIN follows the answer. */
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  while (poll(&pfd, 1, 3000) == 1) {
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got <= 0) {
      out->closed_after = 1;
      break;
    }
  }
  result = 0;
done:
  return result;
}

int admin_request_headers_at(const char *file, int line, int port, const char *method, const char *target,
                             const char *headers, admin_reply *out) {
  char req[16384];
  int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\n%sConnection: close\r\n\r\n", method, target, headers);
  if (n < 0 || (size_t)n >= sizeof req) {
    e2e_fail(file, line, "request too long");
    return -1;
  }
  return admin_exchange_at(file, line, port, req, (size_t)n, out);
}

int admin_request_at(const char *file, int line, int port, const char *method, const char *target, admin_reply *out) {
  char headers[128];
  snprintf(headers, sizeof headers, "Host: 127.0.0.1:%d\r\n%s", port,
           strcmp(method, "POST") ? "" : "Content-Type: application/json\r\n");
  return admin_request_headers_at(file, line, port, method, target, headers, out);
}

int admin_client_at(const char *file, int line, int port, const char *user, const char *device) {
  int fd = e2e_connect(port);
  if (fd < 0) {
    e2e_fail(file, line, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    e2e_abort();
  }
  if (e2e_send_hello(fd, user, device, NULL) != 0 || !e2e_expect_hello_ok_at(file, line, fd, NULL, E2E_WAIT_MS)) {
    e2e_fail(file, line, "HELLO as %s/%s failed", user, device);
    e2e_abort();
  }
  return fd;
}

/* ---- hubuctl ------------------------------------------------------------------ */

int admin_hubuctl(char *out, size_t out_size, char *err, size_t err_size, ...) {
  char *argv[32];
  int n = 0;
  argv[n++] = HUBUCTL_PATH;
  va_list ap;
  va_start(ap, err_size);
  for (char *a; (a = va_arg(ap, char *)) != NULL && n < 31;) argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  fprintf(stderr, "  $");
  for (int i = 0; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
  fputc('\n', stderr);
  int po[2], pe[2];
  if (pipe(po) != 0) return -1;
  if (pipe(pe) != 0) {
    close(po[0]);
    close(po[1]);
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]);
    close(po[1]);
    close(pe[0]);
    close(pe[1]);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    unsetenv("HUBU_ADMIN");
    signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv);
    _exit(127);
  }
  close(po[1]);
  close(pe[1]);
  struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
  char *bufs[2] = {out, err};
  size_t sizes[2] = {out_size, err_size}, lens[2] = {0, 0};
  uint64_t deadline = e2e_now_ms() + 10000;
  int open_pipes = 2;
  while (open_pipes > 0 && e2e_now_ms() < deadline) {
    if (poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char tmp[4096];
      ssize_t got = read(fds[i].fd, tmp, sizeof tmp);
      if (got <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_pipes--;
        continue;
      }
      size_t room = sizes[i] - 1 - lens[i];
      size_t take = (size_t)got < room ? (size_t)got : room;
      memcpy(bufs[i] + lens[i], tmp, take);
      lens[i] += take;
    }
  }
  for (int i = 0; i < 2; i++) {
    bufs[i][lens[i]] = '\0';
    if (fds[i].fd >= 0) close(fds[i].fd);
  }
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (e2e_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      fprintf(stderr, "  hubuctl did not finish within 10 s\n");
      return -1;
    }
    e2e_sleep_ms(5);
  }
  fprintf(stderr, "  -> exit %d\n  stdout: %s\n  stderr: %s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1, out, err);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- a hubud that must not start ----------------------------------------------- */

int admin_run_refused(char *err, size_t err_size, ...) {
  char dir[64], data[96], plugins[96], ports[96];
  snprintf(dir, sizeof dir, "/tmp/hubu-admin-run-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(plugins, sizeof plugins, "%s/plugins", dir);
  snprintf(ports, sizeof ports, "%s/ports", dir);
  mkdir(data, 0700);
  mkdir(plugins, 0700);
  char *argv[48];
  int n = 0;
  const char *fixed[] = {HUBUD_PATH, "--listen",  "127.0.0.1:0", "--secret",    E2E_SECRET, "--data",
                         data,       "--plugins", plugins,       "--port-file", ports};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) argv[n++] = (char *)fixed[i];
  va_list ap;
  va_start(ap, err_size);
  for (char *a; (a = va_arg(ap, char *)) != NULL && n < 47;) argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  fprintf(stderr, "  $");
  for (int i = 0; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
  fputc('\n', stderr);
  int pe[2];
  if (pipe(pe) != 0) {
    e2e_remove_tree(dir);
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(pe[0]);
    close(pe[1]);
    e2e_remove_tree(dir);
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(pe[1], 2);
    close(pe[0]);
    close(pe[1]);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
    }
    execv(argv[0], argv);
    _exit(127);
  }
  close(pe[1]);
  fcntl(pe[0], F_SETFL, O_NONBLOCK);
  size_t len = 0;
  int st = 0, exited = 0, listening = 0;
  for (uint64_t deadline = e2e_now_ms() + 10000; !exited && !listening && e2e_now_ms() < deadline;) {
    ssize_t got;
    while (len + 1 < err_size && (got = read(pe[0], err + len, err_size - 1 - len)) > 0) len += (size_t)got;
    struct stat sb;
    listening = stat(ports, &sb) == 0; /* it bound its listeners: kill it now */
    exited = waitpid(pid, &st, WNOHANG) == pid;
    if (!exited && !listening) e2e_sleep_ms(5);
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  ssize_t got;
  while (len + 1 < err_size && (got = read(pe[0], err + len, err_size - 1 - len)) > 0) len += (size_t)got;
  err[len] = '\0';
  close(pe[0]);
  e2e_remove_tree(dir);
  if (exited)
    fprintf(stderr, "  -> exit %d\n  stderr: %s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1, err);
  else
    fprintf(stderr, "  -> killed: %s\n  stderr: %s\n", listening ? "it started listening" : "no exit within 10 s", err);
  if (!exited || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

/* ---- plugin dirs ------------------------------------------------------------- */

static char plugin_dir_made[64]; /* the one dir a case makes; removed at exit if still there */

void admin_remove_dir(const char *dir) {
  e2e_remove_tree(dir);
  if (!strcmp(dir, plugin_dir_made)) plugin_dir_made[0] = '\0';
}

static void remove_made_dir(void) { admin_remove_dir(plugin_dir_made); }

int admin_plugins_dir(char *dir, size_t size) {
  static int registered;
  if (snprintf(dir, size, "/tmp/hubu-admin-plugins-XXXXXX") >= (int)size || !mkdtemp(dir)) return -1;
  snprintf(plugin_dir_made, sizeof plugin_dir_made, "%s", dir);
  if (!registered) {
    registered = 1;
    atexit(remove_made_dir);
  }
  return 0;
}

int admin_write_file(const char *dir, const char *name, const char *text) {
  char path[256], tmp[272];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  int ok = fputs(text, f) >= 0;
  if (fclose(f) != 0) ok = 0;
  return ok && rename(tmp, path) == 0 ? 0 : -1;
}

void admin_skip_if_clean(const char *why) {
  if (e2e_failures) return;
  fprintf(stderr, "SKIPPED: %s\n", why);
  exit(77); /* atexit: the harness's cleanup and this file's */
}

/* abuse.c — /proc readers, logins and frame helpers for the abuse suite.
 * Every wait here has a deadline; nothing here starts or stops hubud (the
 * harness does). */
#include "abuse.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

long abuse_status_kb(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = strlen(field);
  long kb = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = strtol(line + n + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb;
}

int abuse_fd_count(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

void abuse_limit_asan_quarantine(void) {
  if (!ABUSE_SANITIZED) return;
  const char *old = getenv("ASAN_OPTIONS");
  if (old && strstr(old, "quarantine_size_mb")) return;
  char opts[512];
  snprintf(opts, sizeof opts, "%s%squarantine_size_mb=4", old && *old ? old : "", old && *old ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
}

int abuse_connect(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int abuse_login_at(const char *file, int line, int port, const char *user, const char *device) {
  int fd = abuse_connect(port, 0);
  if (fd < 0) {
    e2e_fail(file, line, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
    return -1;
  }
  if (e2e_send_hello(fd, user, device, NULL) != 0 || !e2e_expect_hello_ok_at(file, line, fd, NULL, E2E_WAIT_MS)) {
    close(fd);
    return -1;
  }
  return fd;
}

long abuse_login_ms(int port, const char *user, const char *device) {
  uint64_t t0 = e2e_now_ms();
  int fd = abuse_connect(port, 0);
  if (fd < 0) return -1;
  long ms = -1;
  e2e_frame f;
  if (e2e_send_hello(fd, user, device, NULL) == 0 && e2e_read_frame(fd, E2E_WAIT_MS, &f) == E2E_READ_OK) {
    if (f.type == HUBU_FRAME_HELLO_OK) ms = (long)(e2e_now_ms() - t0);
    e2e_frame_free(&f);
  }
  close(fd);
  return ms;
}

int abuse_append_send(hubu_buf *b, uint64_t client_id, const char *session, const uint8_t *body, size_t len) {
  Hubu__V1__Send s = HUBU__V1__SEND__INIT;
  s.client_id = client_id;
  s.session_id = (char *)session;
  s.body.data = (uint8_t *)body;
  s.body.len = len;
  return hubu_wire_append(b, HUBU_FRAME_SEND, &s.base);
}

int abuse_append_pull(hubu_buf *b, uint64_t request_id, const char *session, uint64_t after_seq, uint32_t limit) {
  Hubu__V1__PullRequest p = HUBU__V1__PULL_REQUEST__INIT;
  p.request_id = request_id;
  p.session_id = (char *)session;
  p.after_seq = after_seq;
  p.limit = limit;
  return hubu_wire_append(b, HUBU_FRAME_PULL, &p.base);
}

int abuse_expect_frame_at(const char *file, int line, int fd, uint8_t type, int skip_others, int timeout_ms,
                          e2e_frame *f) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = e2e_now_ms();
    int r = e2e_read_frame(fd, now < deadline ? (int)(deadline - now) : 0, f);
    if (r != E2E_READ_OK) {
      e2e_fail(file, line, "expected %s, got %s", hubu_frame_type_name(type), e2e_read_result_name(r));
      return 0;
    }
    if (f->type == type) return 1;
    if (f->type == HUBU_FRAME_PING) {
      Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, f->len, f->body);
      if (p) {
        e2e_send_ping(fd, HUBU_FRAME_PONG, p->time_ms);
        hubu__v1__ping__free_unpacked(p, NULL);
      }
    } else if (!skip_others) {
      e2e_fail(file, line, "expected %s, got %s (%u body bytes)", hubu_frame_type_name(type),
               hubu_frame_type_name(f->type), f->len);
      e2e_frame_free(f);
      return 0;
    }
    e2e_frame_free(f);
  }
}

Hubu__V1__SendAck *abuse_expect_ack_at(const char *file, int line, int fd, uint64_t client_id, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = e2e_now_ms();
    e2e_frame f;
    if (!abuse_expect_frame_at(file, line, fd, HUBU_FRAME_SEND_ACK, 1, now < deadline ? (int)(deadline - now) : 0, &f))
      return NULL;
    Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, f.len, f.body);
    e2e_frame_free(&f);
    if (!a) {
      e2e_fail(file, line, "a SEND_ACK body that does not decode");
      return NULL;
    }
    if (a->client_id == client_id) return a;
    hubu__v1__send_ack__free_unpacked(a, NULL);
  }
}

int abuse_drain_to_eof(int fd, int timeout_ms, size_t *bytes) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  size_t got = 0;
  int eof = 0;
  for (;;) {
    uint64_t now = e2e_now_ms();
    if (now >= deadline) break;
    e2e_frame f;
    int r = e2e_read_frame(fd, (int)(deadline - now), &f);
    if (r == E2E_READ_OK) {
      got += f.len;
      e2e_frame_free(&f);
      continue;
    }
    eof = r == E2E_READ_EOF;
    break;
  }
  if (bytes) *bytes = got;
  return eof;
}

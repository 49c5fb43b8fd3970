/* proxy_nginx.c — hubud behind a TLS-terminating proxy (docs/deploy.md).
 *
 * With a real nginx (scripts/nginx-private.sh run: nginx's stream module
 * ends TLS and passes each connection on with a PROXY v1 header) in front of
 * hubud started with --proxy-protocol tcp,http:
 *  - two clients speak the binary protocol over TLS through nginx: HELLO,
 *    SEND, SEND_ACK and the PUSH to the other; hubud's /v1/admin/conns shows
 *    each client's own loopback address and port (what its socket's
 *    getsockname says), not nginx's;
 *  - a WebSocket client over wss through nginx does the same with a TLS one,
 *    and the HTTP API answers a PULL over https through the same nginx server;
 *  - a direct connection to either listener, without a PROXY header, is
 *    closed at once and counted (hubu_proxy_refused_total), while the
 *    proxied ones go on.
 * Without nginx, raw PROXY headers from the test: v2 and the HELLO in one
 * write, a v1 header a byte at a time, --max-conns-per-ip counting the client
 * named by the header rather than the proxy, a header that never completes
 * closed at the HELLO timeout, a header and then the TLS handshake on the
 * TLS and HTTPS listeners, and the setting in hubu.lua and its refused
 * values. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin_http.h"
#include "buf.h"
#include "frame.h"
#include "harness.h"
#include "testcert.h"

#ifndef HUBU_NGINX_SCRIPT
#error "HUBU_NGINX_SCRIPT must name scripts/nginx-private.sh"
#endif

#define SESSION "d:alice:bob"

/* ---- the private nginx ----------------------------------------------------- */

typedef struct {
  pid_t pid; /* nginx's master (the script execs it); 0 once stopped */
  char dir[64];
  char cert[96], key[96];
  int tls_port, wss_port;
} nginx_proc;

static nginx_proc *running_nginx; /* stopped at exit, whatever ends the case */

static void nginx_stop(nginx_proc *n) {
  if (n->pid > 0) {
    kill(n->pid, SIGTERM);
    int st;
    uint64_t deadline = e2e_now_ms() + 10000;
    while (waitpid(n->pid, &st, WNOHANG) == 0) {
      if (e2e_now_ms() > deadline) {
        kill(n->pid, SIGKILL);
        waitpid(n->pid, &st, 0);
        break;
      }
      e2e_sleep_ms(10);
    }
    n->pid = 0;
  }
  if (n->dir[0]) e2e_remove_tree(n->dir);
  n->dir[0] = '\0';
  if (running_nginx == n) running_nginx = NULL;
}

static void stop_nginx_at_exit(void) {
  if (running_nginx) nginx_stop(running_nginx);
}

static int env_int(const char *path, const char *key) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[256];
  int v = 0;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, kl) && line[kl] == '=') v = atoi(line + kl + 1);
  fclose(f);
  return v;
}

static int answers(int port) {
  int fd = e2e_connect(port);
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

/* nginx in front of hubud's TCP and HTTP listeners, with a fresh
 * certificate for localhost; REQUIREd to answer within 10 s. */
static void nginx_start(nginx_proc *n, const e2e_server *s) {
  memset(n, 0, sizeof *n);
  snprintf(n->dir, sizeof n->dir, "/tmp/hubu-nginx-XXXXXX");
  REQUIRE(mkdtemp(n->dir));
  snprintf(n->cert, sizeof n->cert, "%s/cert.pem", n->dir);
  snprintf(n->key, sizeof n->key, "%s/key.pem", n->dir);
  char err[256];
  if (hubu_testcert_write(n->cert, n->key, 2, err, sizeof err) != 0) {
    e2e_fail(__FILE__, __LINE__, "test certificate: %s", err);
    e2e_abort();
  }
  char tcp[16], http[16];
  snprintf(tcp, sizeof tcp, "%d", s->port);
  snprintf(http, sizeof http, "%d", s->http_port);
  running_nginx = n;
  atexit(stop_nginx_at_exit);
  char env[96];
  snprintf(env, sizeof env, "%s/env", n->dir);
  pid_t parent = getpid();
  /* The script picks two free ports; another process may take one before
   * nginx binds it, and nginx then exits at start: a few tries. */
  for (int attempt = 1;; attempt++) {
    n->tls_port = n->wss_port = 0;
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL); /* nginx's master never outlives the test */
      if (getppid() != parent) _exit(126);
      int null = open("/dev/null", O_RDONLY);
      if (null >= 0) dup2(null, 0);
      execl("/bin/bash", "bash", HUBU_NGINX_SCRIPT, "run", n->dir, tcp, http, n->cert, n->key, (char *)NULL);
      _exit(127);
    }
    n->pid = pid;
    uint64_t deadline = e2e_now_ms() + 10000;
    int up = 0, st = 0;
    for (int polls = 0; !up; polls++) {
      if (waitpid(pid, &st, WNOHANG) == pid) break;
      if (!n->tls_port) {
        n->tls_port = env_int(env, "NGINX_TLS_PORT");
        n->wss_port = env_int(env, "NGINX_WSS_PORT");
      }
      /* answering, and still running a moment later: the ports are nginx's */
      if (n->tls_port && answers(n->tls_port) && answers(n->wss_port)) {
        e2e_sleep_ms(50);
        up = waitpid(pid, &st, WNOHANG) == 0;
        if (!up) break;
      }
      if (!up && e2e_now_ms() > deadline) {
        e2e_fail(__FILE__, __LINE__, "nginx did not answer within 10 s");
        e2e_abort();
      }
      if (!up) e2e_sleep_ms(20);
    }
    if (up) break;
    n->pid = 0;
    fprintf(stderr, "  nginx-private.sh run exited with status %d (try %d)\n", st, attempt);
    if (attempt == 3) {
      e2e_fail(__FILE__, __LINE__, "nginx did not start in 3 tries (see above)");
      e2e_abort();
    }
  }
  fprintf(stderr, "  nginx %d: TLS :%d -> hubud :%d, TLS :%d -> hubud HTTP :%d\n", (int)n->pid, n->tls_port, s->port,
          n->wss_port, s->http_port);
}

/* ---- what hubud says about its connections --------------------------------- */

/* "127.0.0.1:PORT" of fd's own end. */
static void local_name(int fd, char *out, size_t size) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  out[0] = '\0';
  if (getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    snprintf(out, size, "%s:%u", inet_ntoa(a.sin_addr), (unsigned)ntohs(a.sin_port));
}

/* The "remote" of user's connection in /v1/admin/conns (one per line), "" when none. */
static void remote_of(int admin, const char *user, char *out, size_t size) {
  admin_reply r;
  out[0] = '\0';
  if (ADMIN_GET(admin, "/v1/admin/conns", &r) != 0) return;
  char want[96];
  snprintf(want, sizeof want, "\"user\": \"%s\"", user);
  for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
    if (!strstr(line, want)) continue;
    char *p = strstr(line, "\"remote\": \"");
    if (!p) break;
    p += 11;
    char *e = strchr(p, '"');
    if (e) snprintf(out, size, "%.*s", (int)(e - p), p);
    break;
  }
  admin_reply_free(&r);
}

/* A sample of /metrics without labels; -1 when missing. */
static long long metric(int admin, const char *name) {
  admin_reply r;
  if (ADMIN_GET(admin, "/metrics", &r) != 0) return -1;
  long long v = -1;
  size_t nl = strlen(name);
  for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n"))
    if (!strncmp(line, name, nl) && line[nl] == ' ') v = atoll(line + nl + 1);
  admin_reply_free(&r);
  return v;
}

/* Checks that hubud sees user at fd's own address, i.e. the client's, as the
 * PROXY header gave it (nginx's own connection to hubud has another port). */
static void check_remote_is_client(int admin, const char *user, int fd) {
  char want[64], got[96];
  local_name(fd, want, sizeof want);
  remote_of(admin, user, got, sizeof got);
  CHECKF(want[0] && !strcmp(got, want), "hubud sees %s at \"%s\", the client is at %s", user, got, want);
  fprintf(stderr, "  %s: the client at %s, hubud says remote=%s\n", user, want, got);
}

/* ---- frames --------------------------------------------------------------- */

static Hubu__V1__Send send_msg(uint64_t client_id, const char *body) {
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = client_id;
  m.session_id = SESSION;
  m.body.data = (uint8_t *)body;
  m.body.len = strlen(body);
  return m;
}

/* The next frame of type on fd (server PINGs skipped); 0 when none came. */
static int next_frame(int fd, uint8_t type, e2e_frame *f) {
  int r;
  while ((r = e2e_read_frame(fd, E2E_WAIT_MS, f)) == E2E_READ_OK && f->type == HUBU_FRAME_PING) e2e_frame_free(f);
  if (r != E2E_READ_OK) {
    e2e_fail(__FILE__, __LINE__, "no frame 0x%02x: %s", type, e2e_read_result_name(r));
    return 0;
  }
  if (f->type != type) {
    e2e_fail(__FILE__, __LINE__, "frame 0x%02x, want 0x%02x", f->type, type);
    e2e_frame_free(f);
    return 0;
  }
  return 1;
}

static void check_ack(const uint8_t *body, size_t len) {
  Hubu__V1__SendAck *ack = hubu__v1__send_ack__unpack(NULL, len, body);
  CHECK(ack && ack->code == HUBU__V1__CODE__OK && ack->seq > 0);
  if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
}

static void check_push(const uint8_t *body, size_t len, const char *sender, const char *text) {
  Hubu__V1__Push *push = hubu__v1__push__unpack(NULL, len, body);
  CHECK(push && push->n_messages == 1);
  if (push && push->n_messages == 1) {
    CHECK(!strcmp(push->messages[0]->sender, sender));
    CHECK(push->messages[0]->body.len == strlen(text) && !memcmp(push->messages[0]->body.data, text, strlen(text)));
  }
  if (push) hubu__v1__push__free_unpacked(push, NULL);
}

/* TLS to port (nginx), certificate verified, HELLO as user: the fd, REQUIREd. */
static int tls_hello(const nginx_proc *n, int port, const char *user) {
  int fd = e2e_connect_tls(port, 0, n->cert);
  REQUIRE(fd >= 0);
  REQUIRE(e2e_send_hello(fd, user, "d1", NULL) == 0);
  REQUIRE(EXPECT_HELLO_OK(fd, NULL));
  return fd;
}

/* ---- WebSocket over the fd's TLS ------------------------------------------ */

static int read_full(int fd, void *p, size_t n) {
  SSL *ssl = e2e_tls_of(fd);
  for (size_t got = 0; got < n;) {
    int r = ssl ? SSL_read(ssl, (uint8_t *)p + got, (int)(n - got)) : (int)recv(fd, (uint8_t *)p + got, n - got, 0);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* The upgrade with subprotocol hubu.v1 on fd; the answer's status. */
static int ws_upgrade(int fd) {
  const char *req =
      "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Protocol: hubu.v1\r\n\r\n";
  if (e2e_send_raw(fd, req, strlen(req)) != 0) return -1;
  char head[2048];
  size_t n = 0;
  while (n + 1 < sizeof head) {
    if (read_full(fd, head + n, 1) != 0) return -1;
    head[++n] = '\0';
    if (n >= 4 && !memcmp(head + n - 4, "\r\n\r\n", 4)) break;
  }
  int status = -1;
  if (sscanf(head, "HTTP/1.1 %d", &status) != 1) return -1;
  CHECK(status != 101 || strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  return status;
}

/* One hubu frame as one masked binary message. */
static void ws_send_msg(int fd, uint8_t type, const ProtobufCMessage *msg) {
  hubu_buf b = {0};
  REQUIRE(hubu_wire_append(&b, type, msg) == 0);
  size_t len = hubu_buf_size(&b);
  REQUIRE(len < 65536);
  uint8_t *out = malloc(len + 8);
  REQUIRE(out);
  size_t h = 0;
  out[h++] = 0x82;
  if (len < 126) {
    out[h++] = (uint8_t)(0x80 | len);
  } else {
    out[h++] = 0x80 | 126;
    out[h++] = (uint8_t)(len >> 8);
    out[h++] = (uint8_t)len;
  }
  const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
  memcpy(out + h, key, 4);
  h += 4;
  for (size_t i = 0; i < len; i++) out[h + i] = hubu_buf_head(&b)[i] ^ key[i % 4];
  REQUIRE(e2e_send_raw(fd, out, h + len) == 0);
  free(out);
  hubu_buf_free(&b);
}

/* The next binary message holding a frame of type (PINGs skipped): its
 * frame body (owned) and length; NULL when something else came. */
static uint8_t *ws_expect(int fd, uint8_t type, size_t *body_len) {
  for (int i = 0; i < 100; i++) {
    uint8_t h[2];
    if (read_full(fd, h, 2) != 0) break;
    uint64_t n = h[1] & 0x7f;
    if (n == 126) {
      uint8_t e[2];
      if (read_full(fd, e, 2) != 0) break;
      n = (uint64_t)e[0] << 8 | e[1];
    } else if (n == 127) {
      uint8_t e[8];
      if (read_full(fd, e, 8) != 0) break;
      n = 0;
      for (int k = 0; k < 8; k++) n = n << 8 | e[k];
    }
    if (n > (1u << 20)) break;
    uint8_t *p = malloc(n + 1);
    REQUIRE(p);
    if (read_full(fd, p, n) != 0) {
      free(p);
      break;
    }
    if ((h[0] & 0x0f) == 2 && n >= HUBU_FRAME_HEADER_SIZE && p[2] == HUBU_FRAME_PING) {
      free(p);
      continue;
    }
    if ((h[0] & 0x0f) == 2 && n >= HUBU_FRAME_HEADER_SIZE && p[2] == type) {
      *body_len = n - HUBU_FRAME_HEADER_SIZE;
      memmove(p, p + HUBU_FRAME_HEADER_SIZE, *body_len);
      return p;
    }
    e2e_fail(__FILE__, __LINE__, "opcode %d, frame 0x%02x; want frame 0x%02x", h[0] & 0x0f, n > 2 ? p[2] : 0, type);
    free(p);
    return NULL;
  }
  e2e_fail(__FILE__, __LINE__, "no message with frame 0x%02x", type);
  return NULL;
}

/* 1 when the peer closes fd (EOF or reset) within ms, nothing sent first. */
static int closed_without(int fd, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t b[256];
  ssize_t r = recv(fd, b, sizeof b, 0);
  if (r > 0) fprintf(stderr, "  %zd bytes came before the close\n", r);
  return r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE));
}

/* ---- the cases ----------------------------------------------------------- */

static void start_behind_proxy(e2e_server *s, const char *listeners) {
  REQUIRE(e2e_server_start(s, "--proxy-protocol", listeners, "--log-level", "debug", NULL) == 0);
  REQUIRE(s->http_port > 0);
  REQUIRE(admin_port_of(s) > 0);
}

static void nginx_tls_stream_carries_frames_with_the_client_address(void) {
  e2e_server s;
  start_behind_proxy(&s, "tcp,http");
  int admin = admin_port_of(&s);
  nginx_proc n;
  nginx_start(&n, &s);
  int alice = tls_hello(&n, n.tls_port, "alice");
  int bob = tls_hello(&n, n.tls_port, "bob");
  SSL *ssl = e2e_tls_of(alice);
  fprintf(stderr, "  alice to nginx: %s, %s\n", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
  for (int i = 1; i <= 5; i++) {
    char text[32];
    snprintf(text, sizeof text, "over tls %d", i);
    Hubu__V1__Send m = send_msg((uint64_t)i, text);
    REQUIRE(e2e_send_msg(alice, HUBU_FRAME_SEND, &m.base) == 0);
    e2e_frame f;
    if (next_frame(alice, HUBU_FRAME_SEND_ACK, &f)) {
      check_ack(f.body, f.len);
      e2e_frame_free(&f);
    }
    if (next_frame(bob, HUBU_FRAME_PUSH, &f)) {
      check_push(f.body, f.len, "alice", text);
      e2e_frame_free(&f);
    }
  }
  check_remote_is_client(admin, "alice", alice);
  check_remote_is_client(admin, "bob", bob);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 0);
  e2e_close(alice);
  e2e_close(bob);
  nginx_stop(&n);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void nginx_wss_carries_websocket_with_the_client_address(void) {
  e2e_server s;
  start_behind_proxy(&s, "tcp,http");
  int admin = admin_port_of(&s);
  nginx_proc n;
  nginx_start(&n, &s);
  int ws = e2e_connect_tls(n.wss_port, 0, n.cert);
  REQUIRE(ws >= 0);
  REQUIRE(ws_upgrade(ws) == 101);
  char token[HUBU_TOKEN_MAX];
  e2e_token("alice", token);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = "alice";
  h.device_id = "web";
  h.token = token;
  ws_send_msg(ws, HUBU_FRAME_HELLO, &h.base);
  size_t len;
  uint8_t *p = ws_expect(ws, HUBU_FRAME_HELLO_OK, &len);
  REQUIRE(p);
  free(p);
  int bob = tls_hello(&n, n.tls_port, "bob");
  Hubu__V1__Send m = send_msg(1, "over wss");
  ws_send_msg(ws, HUBU_FRAME_SEND, &m.base);
  if ((p = ws_expect(ws, HUBU_FRAME_SEND_ACK, &len))) {
    check_ack(p, len);
    free(p);
  }
  e2e_frame f;
  if (next_frame(bob, HUBU_FRAME_PUSH, &f)) {
    check_push(f.body, f.len, "alice", "over wss");
    e2e_frame_free(&f);
  }
  m = send_msg(1, "back over tls");
  REQUIRE(e2e_send_msg(bob, HUBU_FRAME_SEND, &m.base) == 0);
  if ((p = ws_expect(ws, HUBU_FRAME_PUSH, &len))) {
    check_push(p, len, "bob", "back over tls");
    free(p);
  }
  check_remote_is_client(admin, "alice", ws);
  check_remote_is_client(admin, "bob", bob);
  /* the HTTP API over https through the same nginx server: the history */
  int api = e2e_connect_tls(n.wss_port, 0, n.cert);
  REQUIRE(api >= 0);
  char req[1024], head[2048];
  snprintf(req, sizeof req,
           "GET /v1/sessions/" SESSION
           "/messages?after=0&limit=10 HTTP/1.1\r\nHost: localhost\r\n"
           "Authorization: Bearer %s\r\nConnection: close\r\n\r\n",
           token);
  REQUIRE(e2e_send_raw(api, req, strlen(req)) == 0);
  size_t hn = 0;
  while (hn + 1 < sizeof head && read_full(api, head + hn, 1) == 0) {
    head[++hn] = '\0';
    if (hn >= 4 && !memcmp(head + hn - 4, "\r\n\r\n", 4)) break;
  }
  head[hn] = '\0';
  CHECKF(!strncmp(head, "HTTP/1.1 200 ", 13), "GET /v1/sessions/%s/messages through nginx: %.40s", SESSION, head);
  e2e_close(api);
  e2e_close(ws);
  e2e_close(bob);
  nginx_stop(&n);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void direct_connections_without_proxy_header_are_refused(void) {
  e2e_server s;
  start_behind_proxy(&s, "tcp,http");
  int admin = admin_port_of(&s);
  nginx_proc n;
  nginx_start(&n, &s);
  int alice = tls_hello(&n, n.tls_port, "alice");
  /* straight to hubud's TCP listener: a HELLO where the header should be */
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "mallory", "d1", NULL) == 0);
  CHECKF(closed_without(fd, 3000), "a direct TCP connection without a PROXY header is closed, nothing answered");
  close(fd);
  /* straight to the HTTP listener: an upgrade */
  fd = e2e_connect(s.http_port);
  REQUIRE(fd >= 0);
  const char *req =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  CHECK(e2e_send_raw(fd, req, strlen(req)) == 0);
  CHECKF(closed_without(fd, 3000), "a direct HTTP connection without a PROXY header is closed, nothing answered");
  close(fd);
  /* a PROXY header forged after other bytes is no header */
  fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  const char *late = "\r\nPROXY TCP4 10.0.0.1 127.0.0.1 1 2\r\n";
  CHECK(e2e_send_raw(fd, late, strlen(late)) == 0);
  CHECK(closed_without(fd, 3000));
  close(fd);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 3);
  /* the proxied connection is untouched, and a new one works */
  CHECK(EXPECT_ALIVE(alice, 41));
  int bob = tls_hello(&n, n.tls_port, "bob");
  CHECK(EXPECT_ALIVE(bob, 42));
  check_remote_is_client(admin, "bob", bob);
  e2e_close(alice);
  e2e_close(bob);
  nginx_stop(&n);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* A v2 header for src -> 127.0.0.1:dport over IPv4 with one TLV; its length. */
static size_t v2_header(uint8_t *out, const char *src, uint16_t sport, uint16_t dport) {
  static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  memcpy(out, sig, 12);
  out[12] = 0x21; /* v2 PROXY */
  out[13] = 0x11; /* TCP over IPv4 */
  out[14] = 0;
  out[15] = 12 + 7;
  struct in_addr a, d;
  inet_pton(AF_INET, src, &a);
  inet_pton(AF_INET, "127.0.0.1", &d);
  memcpy(out + 16, &a, 4);
  memcpy(out + 20, &d, 4);
  out[24] = (uint8_t)(sport >> 8), out[25] = (uint8_t)sport;
  out[26] = (uint8_t)(dport >> 8), out[27] = (uint8_t)dport;
  memcpy(out + 28, "\x02\x00\x04host", 7); /* PP2_TYPE_AUTHORITY, skipped */
  return 35;
}

static void proxy_v2_and_hello_in_one_write_and_v1_a_byte_at_a_time(void) {
  e2e_server s;
  start_behind_proxy(&s, "tcp");
  int admin = admin_port_of(&s);
  uint8_t buf[512];
  size_t n = v2_header(buf, "192.0.2.10", 40001, (uint16_t)s.port);
  hubu_buf hello = {0};
  char token[HUBU_TOKEN_MAX];
  e2e_token("alice", token);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = "alice";
  h.device_id = "d1";
  h.token = token;
  REQUIRE(hubu_wire_append(&hello, HUBU_FRAME_HELLO, &h.base) == 0);
  REQUIRE(n + hubu_buf_size(&hello) <= sizeof buf);
  memcpy(buf + n, hubu_buf_head(&hello), hubu_buf_size(&hello));
  int a = e2e_connect(s.port);
  REQUIRE(a >= 0);
  CHECK(e2e_send_raw(a, buf, n + hubu_buf_size(&hello)) == 0);
  CHECK(EXPECT_HELLO_OK(a, NULL));
  char got[96];
  remote_of(admin, "alice", got, sizeof got);
  CHECKF(!strcmp(got, "192.0.2.10:40001"), "remote \"%s\", want the v2 header's 192.0.2.10:40001", got);

  const char *v1 = "PROXY TCP6 2001:db8::7 ::1 40002 7700\r\n";
  int b = e2e_connect(s.port);
  REQUIRE(b >= 0);
  for (size_t i = 0; v1[i]; i++) {
    CHECK(e2e_send_raw(b, v1 + i, 1) == 0);
    e2e_sleep_ms(2);
  }
  CHECK(e2e_send_hello(b, "bob", "d1", NULL) == 0);
  CHECK(EXPECT_HELLO_OK(b, NULL));
  remote_of(admin, "bob", got, sizeof got);
  CHECKF(!strcmp(got, "[2001:db8::7]:40002"), "remote \"%s\", want the v1 header's [2001:db8::7]:40002", got);
  /* LOCAL (a proxy's health check): the socket's own address stands */
  memcpy(buf + 12, "\x20\x00\x00\x00", 4);
  int c = e2e_connect(s.port);
  REQUIRE(c >= 0);
  CHECK(e2e_send_raw(c, buf, 16) == 0);
  CHECK(e2e_send_hello(c, "carol", "d1", NULL) == 0);
  CHECK(EXPECT_HELLO_OK(c, NULL));
  check_remote_is_client(admin, "carol", c);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 0);
  hubu_buf_free(&hello);
  close(a);
  close(b);
  close(c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static int proxied_hello(int port, const char *src, uint16_t sport, const char *user) {
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  char hdr[128];
  snprintf(hdr, sizeof hdr, "PROXY TCP4 %s 127.0.0.1 %u %d\r\n", src, (unsigned)sport, port);
  REQUIRE(e2e_send_raw(fd, hdr, strlen(hdr)) == 0);
  REQUIRE(e2e_send_hello(fd, user, "d1", NULL) == 0);
  return fd;
}

static void per_ip_limit_counts_the_client_behind_the_proxy(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--proxy-protocol", "tcp", "--max-conns-per-ip", "2", NULL) == 0);
  /* six connections from the one proxy address (127.0.0.1), three clients */
  int fds[6];
  const char *clients[3] = {"198.51.100.1", "198.51.100.2", "198.51.100.3"};
  for (int i = 0; i < 6; i++) {
    char user[16];
    snprintf(user, sizeof user, "u%d", i);
    fds[i] = proxied_hello(s.port, clients[i % 3], (uint16_t)(1000 + i), user);
    CHECKF(EXPECT_HELLO_OK(fds[i], NULL), "client %s's connection %d", clients[i % 3], i / 3 + 1);
  }
  /* a third from 198.51.100.1 is over its limit of 2 */
  int over = proxied_hello(s.port, clients[0], 2000, "u9");
  CHECK(EXPECT_ERROR(over, HUBU__V1__CODE__UNAVAILABLE));
  close(over);
  /* one of its connections closes: it may connect again */
  close(fds[0]);
  e2e_sleep_ms(200);
  int again = proxied_hello(s.port, clients[0], 2001, "u10");
  CHECK(EXPECT_HELLO_OK(again, NULL));
  close(again);
  for (int i = 1; i < 6; i++) close(fds[i]);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void unfinished_proxy_header_is_refused_at_the_hello_timeout(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--proxy-protocol", "tcp,http", "--hello-timeout-ms", "300", NULL) == 0);
  int admin = admin_port_of(&s);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_raw(fd, "PROXY TCP4 192.0.2.1 ", 21) == 0);
  uint64_t t0 = e2e_now_ms();
  CHECK(closed_without(fd, 3000));
  uint64_t took = e2e_now_ms() - t0;
  CHECKF(took >= 250 && took < 2500, "closed after %llu ms, want about the 300 ms HELLO timeout",
         (unsigned long long)took);
  close(fd);
  /* a silent connection to the HTTP listener too */
  fd = e2e_connect(s.http_port);
  REQUIRE(fd >= 0);
  CHECK(closed_without(fd, 3000));
  close(fd);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 2);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* A connection to port that sends hdr, then the TLS handshake (verified
 * against ca for localhost) with the header's last byte in the same write
 * as the ClientHello. The SSL (its socket closed by ssl_close), or NULL after
 * reporting why. */
static SSL *tls_after_header(int port, const char *hdr, const char *ca) {
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  REQUIRE(e2e_send_raw(fd, hdr, strlen(hdr) - 1) == 0);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  REQUIRE(ctx);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  REQUIRE(SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1);
  SSL *ssl = SSL_new(ctx);
  SSL_CTX_free(ctx); /* ssl holds its own reference */
  REQUIRE(ssl);
  SSL_set1_host(ssl, "localhost");
  SSL_set_tlsext_host_name(ssl, "localhost");
  /* the ClientHello into memory first, to go out after the last byte in one write */
  BIO *rmem = BIO_new(BIO_s_mem()), *wmem = BIO_new(BIO_s_mem());
  REQUIRE(rmem && wmem);
  BIO_set_mem_eof_return(rmem, -1); /* empty: "want read", not EOF */
  SSL_set_bio(ssl, rmem, wmem);
  int r = SSL_connect(ssl);
  CHECK(r < 0 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ);
  char *hello;
  long hl = BIO_get_mem_data(wmem, &hello);
  REQUIRE(hl > 0 && hl < 4000);
  uint8_t first[4096];
  first[0] = (uint8_t)hdr[strlen(hdr) - 1];
  memcpy(first + 1, hello, (size_t)hl);
  REQUIRE(e2e_send_raw(fd, first, (size_t)hl + 1) == 0);
  /* the rest of the handshake and the session on the socket */
  BIO *sock = BIO_new_socket(fd, BIO_CLOSE);
  REQUIRE(sock);
  SSL_set_bio(ssl, sock, sock); /* frees the memory BIOs */
  r = SSL_connect(ssl);
  if (r != 1) {
    e2e_fail(__FILE__, __LINE__, "the TLS handshake after the PROXY header: %d (SSL_get_error %d)", r,
             SSL_get_error(ssl, r));
    SSL_free(ssl);
    return NULL;
  }
  return ssl;
}

/* --proxy-protocol tls,https: a proxy that passes TLS through (HAProxy in
 * mode tcp) sends its header, then the client's handshake follows on the
 * same connection. */
static void proxy_header_then_the_tls_handshake_on_the_tls_listeners(void) {
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--proxy-protocol", "tls,https", "--https-listen", "127.0.0.1:0", NULL) == 0);
  REQUIRE(s.https_port > 0);
  int admin = admin_port_of(&s);
  SSL *ssl = tls_after_header(s.tls_port, "PROXY TCP4 203.0.113.5 127.0.0.1 50505 7701\r\n", s.cert);
  if (ssl) {
    hubu_buf hello_frame = {0};
    char token[HUBU_TOKEN_MAX];
    e2e_token("alice", token);
    Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.user_id = "alice";
    h.device_id = "d1";
    h.token = token;
    REQUIRE(hubu_wire_append(&hello_frame, HUBU_FRAME_HELLO, &h.base) == 0);
    CHECK(SSL_write(ssl, hubu_buf_head(&hello_frame), (int)hubu_buf_size(&hello_frame)) > 0);
    hubu_buf_free(&hello_frame);
    uint8_t head[HUBU_FRAME_HEADER_SIZE];
    CHECK(SSL_read(ssl, head, sizeof head) == (int)sizeof head && head[2] == HUBU_FRAME_HELLO_OK);
    char got[96];
    remote_of(admin, "alice", got, sizeof got);
    CHECKF(!strcmp(got, "203.0.113.5:50505"), "remote \"%s\", want the header's 203.0.113.5:50505", got);
    SSL_free(ssl);
  }
  /* the HTTPS listener: a connection closed before any byte (a load
   * balancer's TCP check) is not a refusal; a header, the handshake, then an
   * HTTP request is served */
  int fd = e2e_connect(s.https_port);
  REQUIRE(fd >= 0);
  close(fd);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 0); /* a connection closed before any byte is not refused */
  ssl = tls_after_header(s.https_port, "PROXY TCP4 203.0.113.6 127.0.0.1 50506 443\r\n", s.cert);
  if (ssl) {
    const char *req = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    CHECK(SSL_write(ssl, req, (int)strlen(req)) > 0);
    char answer[64] = "";
    int got = SSL_read(ssl, answer, sizeof answer - 1);
    if (got > 0) answer[got] = '\0';
    CHECKF(!strncmp(answer, "HTTP/1.1 200 ", 13), "GET /healthz over https after a PROXY header: %.30s", answer);
    SSL_free(ssl);
  }
  /* plain TLS clients without the header are refused on both */
  CHECK(e2e_connect_tls(s.tls_port, 0, s.cert) < 0);
  CHECK(e2e_connect_tls(s.https_port, 0, s.cert) < 0);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 2);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* proxy_protocol in hubu.lua, and a value that is no listener refused at start. */
static void proxy_protocol_setting_in_hubu_lua_and_bad_values(void) {
  char dir[64] = "/tmp/hubu-proxy-conf-XXXXXX", conf[96];
  REQUIRE(mkdtemp(dir));
  snprintf(conf, sizeof conf, "%s/hubu.lua", dir);
  FILE *f = fopen(conf, "w");
  REQUIRE(f);
  fputs("proxy_protocol = \"tcp\"\n", f);
  REQUIRE(fclose(f) == 0);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--config", conf, NULL) == 0);
  int admin = admin_port_of(&s);
  int fd = e2e_connect(s.port);
  REQUIRE(fd >= 0);
  CHECK(e2e_send_hello(fd, "alice", "d1", NULL) == 0);
  CHECK(closed_without(fd, 3000));
  close(fd);
  fd = proxied_hello(s.port, "192.0.2.44", 4444, "alice");
  CHECK(EXPECT_HELLO_OK(fd, NULL));
  close(fd);
  CHECK_EQ(metric(admin, "hubu_proxy_refused_total"), 1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  e2e_remove_tree(dir);
  static const char *bad[] = {"", "udp", "tcp,", "tcp,,http", "TCP", "on", "1", "tcp http"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[1024];
    int st = admin_run_refused(err, sizeof err, "--config", "off", "--proxy-protocol", bad[i], NULL);
    CHECKF(st == 2, "--proxy-protocol '%s': exit %d", bad[i], st);
    CHECKF(strstr(err, "--proxy-protocol: invalid value") != NULL, "'%s': stderr %s", bad[i], err);
  }
  static const char *good[] = {"off", "tcp", "http", "tls", "https", "tcp,http", "tcp, tls ,http,https"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char err[1024];
    /* refused for another reason (no --cert for a TLS listener is not asked
     * for here), so the value itself must pass: an unknown flag after it stops the start */
    int st =
        admin_run_refused(err, sizeof err, "--config", "off", "--proxy-protocol", good[i], "--no-such-flag", "x", NULL);
    CHECKF(st == 2 && strstr(err, "unknown flag --no-such-flag"), "--proxy-protocol '%s': exit %d, stderr %s", good[i],
           st, err);
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  static const e2e_case cases[] = {
      E2E_CASE(nginx_tls_stream_carries_frames_with_the_client_address),
      E2E_CASE(nginx_wss_carries_websocket_with_the_client_address),
      E2E_CASE(direct_connections_without_proxy_header_are_refused),
      E2E_CASE(proxy_v2_and_hello_in_one_write_and_v1_a_byte_at_a_time),
      E2E_CASE(per_ip_limit_counts_the_client_behind_the_proxy),
      E2E_CASE(unfinished_proxy_header_is_refused_at_the_hello_timeout),
      E2E_CASE(proxy_header_then_the_tls_handshake_on_the_tls_listeners),
      E2E_CASE(proxy_protocol_setting_in_hubu_lua_and_bad_values),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

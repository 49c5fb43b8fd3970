/* e2e_ws.c — the HTTP listener's WebSocket at /ws against a running hubud:
 * the upgrade and subprotocol choice, messages between a WebSocket and a TCP
 * client, fragmented and masked frames, ping/pong, the close handshake and
 * its codes, the Origin allow-list, and HTTP answers to what is not an
 * upgrade. The client side is written frame by frame here (RFC 6455 section
 * 5) so each case can send exactly the bytes it means. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"
#include "ws.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define KEY_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* ---- the client side ------------------------------------------------------ */

/* Reads the HTTP answer head (up to the blank line) into head; returns the status, -1 on EOF/timeout. */
static int read_head(int fd, char *head, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t r = recv(fd, head + n, 1, 0);
    if (r <= 0) return -1;
    n++;
    head[n] = '\0';
    if (n >= 4 && !memcmp(head + n - 4, "\r\n\r\n", 4)) break;
  }
  int status = -1;
  if (sscanf(head, "HTTP/1.1 %d", &status) != 1) return -1;
  return status;
}

/* Connects to the HTTP port, sends request (NULL: the standard upgrade with
 * extra headers), reads the answer's head. Returns the fd; *status the status. */
static int ws_request(int port, const char *request, const char *extra, int *status, char *head, size_t head_size) {
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  char req[2048];
  if (!request) {
    snprintf(req, sizeof req,
             "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             extra ? extra : "");
    request = req;
  }
  REQUIRE(e2e_send_raw(fd, request, strlen(request)) == 0);
  *status = read_head(fd, head, head_size);
  return fd;
}

/* The upgrade with subprotocol hubu.v1, checked. */
static int ws_open(int port) {
  char head[1024];
  int status;
  int fd = ws_request(port, NULL, "Sec-WebSocket-Protocol: hubu.v1\r\n", &status, head, sizeof head);
  CHECK_EQ(status, 101);
  CHECK(strstr(head, "Sec-WebSocket-Accept: " KEY_ACCEPT "\r\n") != NULL);
  CHECK(strstr(head, "Sec-WebSocket-Protocol: hubu.v1\r\n") != NULL);
  REQUIRE(status == 101);
  return fd;
}

/* Appends one WebSocket frame to out (masked when mask). Returns its size. */
static size_t ws_frame(uint8_t *out, int fin, int opcode, int mask, const void *payload, size_t len) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    out[n++] = (uint8_t)(m | len);
  } else if (len < 65536) {
    out[n++] = m | 126;
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = m | 127;
    for (int i = 7; i >= 0; i--) out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  if (mask) {
    memcpy(out + n, key, 4);
    n += 4;
  }
  for (size_t i = 0; i < len; i++) out[n + i] = ((const uint8_t *)payload)[i] ^ (mask ? key[i % 4] : 0);
  return n + len;
}

static void ws_send(int fd, int fin, int opcode, int mask, const void *payload, size_t len) {
  uint8_t *buf = malloc(len + 14);
  REQUIRE(buf);
  size_t n = ws_frame(buf, fin, opcode, mask, payload, len);
  REQUIRE(e2e_send_raw(fd, buf, n) == 0);
  free(buf);
}

static int read_full(int fd, void *p, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = recv(fd, (uint8_t *)p + got, n - got, 0);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* One server frame: opcode, payload (owned by the caller). -1 on EOF/timeout. */
static int ws_read(int fd, uint8_t **payload, size_t *len) {
  uint8_t h[2];
  if (read_full(fd, h, 2) != 0) return -1;
  CHECKF(!(h[1] & 0x80), "a server frame is never masked");
  uint64_t n = h[1] & 0x7f;
  if (n == 126) {
    uint8_t e[2];
    if (read_full(fd, e, 2) != 0) return -1;
    n = (uint64_t)e[0] << 8 | e[1];
  } else if (n == 127) {
    uint8_t e[8];
    if (read_full(fd, e, 8) != 0) return -1;
    n = 0;
    for (int i = 0; i < 8; i++) n = n << 8 | e[i];
  }
  *payload = malloc(n + 1);
  REQUIRE(*payload);
  if (read_full(fd, *payload, n) != 0) {
    free(*payload);
    return -1;
  }
  *len = (size_t)n;
  return h[0] & 0x0f;
}

/* Sends a hubu frame (type, packed msg) as one masked binary message. */
static void ws_send_msg(int fd, uint8_t type, const ProtobufCMessage *msg) {
  hubu_buf b = {0};
  REQUIRE(hubu_wire_append(&b, type, msg) == 0);
  ws_send(fd, 1, 2, 1, hubu_buf_head(&b), hubu_buf_size(&b));
  hubu_buf_free(&b);
}

/* Reads binary messages until one holds a frame of type (server PINGs are
 * answered on the way). Returns the payload (owned), NULL when something else came. */
static uint8_t *ws_expect(int fd, uint8_t type, size_t *len) {
  for (;;) {
    uint8_t *p;
    int op = ws_read(fd, &p, len);
    if (op < 0) {
      e2e_fail(__FILE__, __LINE__, "no message (want frame type 0x%02x)", type);
      return NULL;
    }
    if (op == 2 && *len >= HUBU_FRAME_HEADER_SIZE && p[2] == type) return p;
    if (op == 2 && *len >= HUBU_FRAME_HEADER_SIZE && p[2] == HUBU_FRAME_PING) {
      free(p);
      continue;
    }
    e2e_fail(__FILE__, __LINE__, "opcode %d type 0x%02x (want frame type 0x%02x)", op, op == 2 && *len > 2 ? p[2] : 0,
             type);
    free(p);
    return NULL;
  }
}

static void ws_hello(int fd, const char *user) {
  char token[HUBU_TOKEN_MAX];
  e2e_token(user, token);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = (char *)user;
  h.device_id = "web";
  h.token = token;
  ws_send_msg(fd, HUBU_FRAME_HELLO, &h.base);
  size_t len;
  uint8_t *p = ws_expect(fd, HUBU_FRAME_HELLO_OK, &len);
  REQUIRE(p);
  free(p);
}

/* Expects a close frame with code, then EOF. */
static void expect_close(int fd, int code) {
  uint8_t *p = NULL;
  size_t len = 0;
  int op;
  while ((op = ws_read(fd, &p, &len)) == 2) free(p); /* a last ERROR or GOAWAY may come first */
  CHECKF(op == 8, "close frame expected, got opcode %d", op);
  if (op != 8) return;
  CHECKF(len >= 2 && (p[0] << 8 | p[1]) == code, "close code %d, want %d", len >= 2 ? p[0] << 8 | p[1] : -1, code);
  free(p);
  char b;
  CHECKF(recv(fd, &b, 1, 0) <= 0, "EOF after the close frame");
}

static e2e_server start(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  REQUIRE(s.http_port > 0);
  return s;
}

/* ---- cases ----------------------------------------------------------------- */

static void upgrade_selects_hubu_v1_and_answers_the_key(void) {
  e2e_server s = start();
  char accept[29];
  hubu_ws_accept_key(KEY, strlen(KEY), accept);
  CHECK(!strcmp(accept, KEY_ACCEPT)); /* RFC 6455 section 1.3's example */
  int fd = ws_open(s.http_port);
  ws_hello(fd, "alice");
  e2e_close(fd);
  /* the client's first supported choice, in its order of preference */
  char head[1024];
  int status;
  fd = ws_request(s.http_port, NULL, "Sec-WebSocket-Protocol: chat.other, hubu.v1, hubu.v1.json\r\n", &status, head,
                  sizeof head);
  CHECK_EQ(status, 101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol: hubu.v1\r\n") != NULL);
  e2e_close(fd);
  fd = ws_request(s.http_port, NULL, "Sec-WebSocket-Protocol: hubu.v1.json, hubu.v1\r\n", &status, head, sizeof head);
  CHECK_EQ(status, 101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol: hubu.v1.json\r\n") != NULL);
  e2e_close(fd);
  /* no subprotocol offered: hubu.v1 without the header */
  fd = ws_request(s.http_port, NULL, NULL, &status, head, sizeof head);
  CHECK_EQ(status, 101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol") == NULL);
  ws_hello(fd, "bob");
  e2e_close(fd);
  /* none it speaks: none selected, closed with 1008 */
  fd = ws_request(s.http_port, NULL, "Sec-WebSocket-Protocol: hubu.v2, mqtt\r\n", &status, head, sizeof head);
  CHECK_EQ(status, 101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol") == NULL);
  expect_close(fd, 1008);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void ws_and_tcp_clients_exchange_messages(void) {
  e2e_server s = start();
  int ws = ws_open(s.http_port);
  ws_hello(ws, "alice");
  int tcp = CONNECT_HELLO(s.port, "bob");
  REQUIRE(tcp >= 0);
  for (int i = 1; i <= 20; i++) {
    char body[32];
    snprintf(body, sizeof body, "ws %d", i);
    Hubu__V1__Send m = HUBU__V1__SEND__INIT;
    m.client_id = (uint64_t)i;
    m.session_id = "d:alice:bob";
    m.body.data = (uint8_t *)body;
    m.body.len = strlen(body);
    ws_send_msg(ws, HUBU_FRAME_SEND, &m.base);
    size_t len;
    uint8_t *p = ws_expect(ws, HUBU_FRAME_SEND_ACK, &len);
    REQUIRE(p);
    Hubu__V1__SendAck *ack = hubu__v1__send_ack__unpack(NULL, len - 8, p + 8);
    REQUIRE(ack);
    CHECK_EQ(ack->code, HUBU__V1__CODE__OK);
    CHECK_EQ(ack->seq, (uint64_t)(2 * i - 1));
    hubu__v1__send_ack__free_unpacked(ack, NULL);
    free(p);
    e2e_frame f;
    int r;
    while ((r = e2e_read_frame(tcp, E2E_WAIT_MS, &f)) == E2E_READ_OK && f.type == HUBU_FRAME_PING) e2e_frame_free(&f);
    REQUIRE(r == E2E_READ_OK);
    CHECK_EQ(f.type, HUBU_FRAME_PUSH);
    Hubu__V1__Push *push = hubu__v1__push__unpack(NULL, f.len, f.body);
    REQUIRE(push && push->n_messages == 1);
    CHECK(push->messages[0]->body.len == strlen(body) && !memcmp(push->messages[0]->body.data, body, strlen(body)));
    CHECK(!strcmp(push->messages[0]->sender, "alice"));
    hubu__v1__push__free_unpacked(push, NULL);
    e2e_frame_free(&f);
    /* and back: TCP to WebSocket */
    m.client_id = (uint64_t)i;
    m.body.data = (uint8_t *)"tcp";
    m.body.len = 3;
    REQUIRE(e2e_send_msg(tcp, HUBU_FRAME_SEND, &m.base) == 0);
    p = ws_expect(ws, HUBU_FRAME_PUSH, &len);
    REQUIRE(p);
    push = hubu__v1__push__unpack(NULL, len - 8, p + 8);
    REQUIRE(push && push->n_messages == 1);
    CHECK(!strcmp(push->messages[0]->sender, "bob"));
    CHECK_EQ(push->messages[0]->seq, (uint64_t)(2 * i));
    Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
    cur.session_id = "d:alice:bob";
    cur.seq = push->messages[0]->seq;
    Hubu__V1__Cursor *curs[1] = {&cur};
    Hubu__V1__DeliverAck da = HUBU__V1__DELIVER_ACK__INIT;
    da.n_cursors = 1;
    da.cursors = curs;
    ws_send_msg(ws, HUBU_FRAME_DELIVER_ACK, &da.base);
    hubu__v1__push__free_unpacked(push, NULL);
    free(p);
    while ((r = e2e_read_frame(tcp, E2E_WAIT_MS, &f)) == E2E_READ_OK && f.type != HUBU_FRAME_SEND_ACK)
      e2e_frame_free(&f);
    REQUIRE(r == E2E_READ_OK);
    e2e_frame_free(&f);
  }
  e2e_close(tcp);
  e2e_close(ws);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void fragmented_masked_message_with_ping_between(void) {
  e2e_server s = start();
  int fd = ws_open(s.http_port);
  char token[HUBU_TOKEN_MAX];
  e2e_token("alice", token);
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = "alice";
  h.device_id = "web";
  h.token = token;
  hubu_buf b = {0};
  REQUIRE(hubu_wire_append(&b, HUBU_FRAME_HELLO, &h.base) == 0);
  const uint8_t *m = hubu_buf_head(&b);
  size_t n = hubu_buf_size(&b), a = 3, c = n / 2;
  ws_send(fd, 0, 2, 1, m, a);         /* binary, not final */
  ws_send(fd, 1, 9, 1, "hi", 2);      /* a ping between fragments */
  ws_send(fd, 0, 0, 1, m + a, c - a); /* continuation */
  ws_send(fd, 1, 0, 1, m + c, n - c); /* final continuation */
  hubu_buf_free(&b);
  uint8_t *p;
  size_t len;
  int op = ws_read(fd, &p, &len);
  CHECKF(op == 10, "pong first, got opcode %d", op);
  if (op >= 0) {
    CHECK(len == 2 && !memcmp(p, "hi", 2));
    free(p);
  }
  p = ws_expect(fd, HUBU_FRAME_HELLO_OK, &len);
  CHECK(p != NULL);
  free(p);
  /* the protocol's own PING works over it too */
  Hubu__V1__Ping ping = HUBU__V1__PING__INIT;
  ping.time_ms = 42;
  ws_send_msg(fd, HUBU_FRAME_PING, &ping.base);
  p = ws_expect(fd, HUBU_FRAME_PONG, &len);
  CHECK(p != NULL);
  free(p);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void unmasked_client_frame_closes_with_1002(void) {
  e2e_server s = start();
  int fd = ws_open(s.http_port);
  ws_send(fd, 1, 2, 0, "\xa5\x01\x03\x00\x00\x00\x00\x00", 8);
  expect_close(fd, 1002);
  e2e_close(fd);
  /* two frames in one message */
  fd = ws_open(s.http_port);
  ws_send(fd, 1, 2, 1, "\xa5\x01\x03\x00\x00\x00\x00\x00\xa5\x01\x03\x00\x00\x00\x00\x00", 16);
  expect_close(fd, 1002);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void oversize_message_closes_with_1009(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-frame", "65536", NULL) == 0);
  /* before HELLO_OK the cap is --hello-max-frame (4096) */
  int fd = ws_open(s.http_port);
  static uint8_t big[70000];
  big[0] = 0xa5, big[1] = 1, big[2] = HUBU_FRAME_HELLO;
  ws_send(fd, 1, 2, 1, big, 5000);
  expect_close(fd, 1009);
  e2e_close(fd);
  /* after it, max_frame: 65536 + 8 passes the WebSocket cap, more does not */
  fd = ws_open(s.http_port);
  ws_hello(fd, "alice");
  ws_send(fd, 1, 2, 1, big, 65536 + 8 + 1);
  expect_close(fd, 1009);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void text_messages_close_with_1003_or_1007(void) {
  e2e_server s = start();
  int fd = ws_open(s.http_port);
  ws_send(fd, 1, 1, 1, "{\"type\":\"PING\"}", 15);
  expect_close(fd, 1003);
  e2e_close(fd);
  fd = ws_open(s.http_port);
  ws_send(fd, 1, 1, 1, "\xc3\x28 bad", 6);
  expect_close(fd, 1007);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void origin_outside_the_allow_list_closes_with_1008(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--ws-origins", "https://chat.example", NULL) == 0);
  char head[1024];
  int status;
  int fd = ws_request(s.http_port, NULL, "Origin: https://evil.example\r\n", &status, head, sizeof head);
  CHECK_EQ(status, 101);
  expect_close(fd, 1008);
  e2e_close(fd);
  fd = ws_request(s.http_port, NULL, "Origin: https://chat.example\r\nSec-WebSocket-Protocol: hubu.v1\r\n", &status,
                  head, sizeof head);
  CHECK_EQ(status, 101);
  ws_hello(fd, "alice");
  e2e_close(fd);
  fd = ws_open(s.http_port); /* no Origin: not a browser */
  ws_hello(fd, "bob");
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void close_handshake_is_answered_then_fin(void) {
  e2e_server s = start();
  int fd = ws_open(s.http_port);
  ws_hello(fd, "alice");
  ws_send(fd, 1, 8, 1,
          "\x03\xe8"
          "bye",
          5);
  expect_close(fd, 1000);
  e2e_close(fd);
  /* the server's own close: a drain sends GOAWAY, then 1001 */
  fd = ws_open(s.http_port);
  ws_hello(fd, "bob");
  e2e_server_signal(&s, 15);
  size_t len;
  uint8_t *p = ws_expect(fd, HUBU_FRAME_GOAWAY, &len);
  CHECK(p != NULL);
  free(p);
  expect_close(fd, 1001);
  e2e_close(fd);
  CHECK_EQ(e2e_server_wait(&s, 5000), 0);
  e2e_server_cleanup(&s);
}

static void http_requests_that_are_not_upgrades_get_answers(void) {
  e2e_server s = start();
  struct {
    const char *req;
    int status;
  } cases[] = {
      {"GARBAGE\r\n\r\n", 400},
      {"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405},
      {"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426},
      {"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n",
       426},
      {"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: "
       "13\r\nSec-WebSocket-Key: short\r\n\r\n",
       400},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char head[1024];
    int status;
    int fd = ws_request(s.http_port, cases[i].req, NULL, &status, head, sizeof head);
    CHECKF(status == cases[i].status, "case %zu: status %d, want %d", i, status, cases[i].status);
    e2e_close(fd);
  }
  /* headers above 8 KiB: 431 */
  int fd = e2e_connect(s.http_port);
  REQUIRE(fd >= 0);
  char big[HUBU_WS_MAX_HEADER + 100];
  memset(big, 'a', sizeof big);
  memcpy(big, "GET /ws HTTP/1.1\r\nX-Long: ", 26);
  e2e_send_raw(fd, big, sizeof big);
  char head[1024];
  CHECK_EQ(read_head(fd, head, sizeof head), 431);
  e2e_close(fd);
  /* garbage right behind the upgrade, in the same write: an unmasked "frame", 1002 */
  char req[512];
  snprintf(req, sizeof req,
           "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " KEY
           "\r\nSec-WebSocket-Version: 13\r\n\r\nGARBAGE");
  int status;
  fd = ws_request(s.http_port, req, NULL, &status, head, sizeof head);
  CHECK_EQ(status, 101);
  expect_close(fd, 1002);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void slow_request_times_out_with_408(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--hello-timeout-ms", "400", NULL) == 0);
  int fd = e2e_connect(s.http_port);
  REQUIRE(fd >= 0);
  uint64_t t0 = e2e_now_ms();
  REQUIRE(e2e_send_raw(fd, "GET /ws HTTP/1.1\r\nHost:", 23) == 0);
  char head[1024];
  CHECK_EQ(read_head(fd, head, sizeof head), 408);
  uint64_t took = e2e_now_ms() - t0;
  CHECKF(took >= 300 && took < 3000, "408 after %llu ms", (unsigned long long)took);
  e2e_close(fd);
  /* upgraded but no HELLO: the protocol's own timeout, GOAWAY then close 1000 */
  fd = ws_open(s.http_port);
  size_t len;
  uint8_t *p = ws_expect(fd, HUBU_FRAME_GOAWAY, &len);
  CHECK(p != NULL);
  free(p);
  expect_close(fd, 1000);
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* ---- hubu.v1.json ---------------------------------------------------------- */

static int ws_open_json(int port) {
  char head[1024];
  int status;
  int fd = ws_request(port, NULL, "Sec-WebSocket-Protocol: hubu.v1.json\r\n", &status, head, sizeof head);
  CHECK_EQ(status, 101);
  CHECK(strstr(head, "Sec-WebSocket-Protocol: hubu.v1.json\r\n") != NULL);
  REQUIRE(status == 101);
  return fd;
}

static void ws_send_text(int fd, const char *text) { ws_send(fd, 1, 1, 1, text, strlen(text)); }

/* Reads text messages until one is a frame of type ("SEND_ACK"); server PINGs
 * are skipped. Returns the text (owned, NUL-terminated), NULL when something else came. */
static char *ws_expect_json(int fd, const char *type) {
  char want[64];
  snprintf(want, sizeof want, "{\"type\":\"%s\"", type);
  for (;;) {
    uint8_t *p;
    size_t len;
    int op = ws_read(fd, &p, &len);
    if (op < 0) {
      e2e_fail(__FILE__, __LINE__, "no message (want %s)", type);
      return NULL;
    }
    if (op == 1) {
      p[len] = 0;
      if (!strncmp((char *)p, want, strlen(want))) return (char *)p;
      if (!strncmp((char *)p, "{\"type\":\"PING\"", 14)) {
        free(p);
        continue;
      }
    }
    e2e_fail(__FILE__, __LINE__, "opcode %d \"%.*s\" (want %s)", op, op == 1 ? (int)len : 0, op == 1 ? (char *)p : "",
             type);
    free(p);
    return NULL;
  }
}

static void ws_hello_json(int fd, const char *user, const char *device) {
  char token[HUBU_TOKEN_MAX], hello[512];
  e2e_token(user, token);
  snprintf(hello, sizeof hello,
           "{\"type\": \"HELLO\", \"body\": {\"protocolVersion\": 1, \"userId\": \"%s\", \"deviceId\": \"%s\", "
           "\"token\": \"%s\"}}",
           user, device, token);
  ws_send_text(fd, hello);
  char *ok = ws_expect_json(fd, "HELLO_OK");
  REQUIRE(ok);
  CHECK(strstr(ok, "\"heartbeatMs\":") && strstr(ok, "\"maxFrame\":1048576") && strstr(ok, "\"connId\":\""));
  free(ok);
}

static void json_subprotocol_carries_every_flow_as_text(void) {
  e2e_server s = start();
  int ws = ws_open_json(s.http_port);
  ws_hello_json(ws, "alice", "web");
  int tcp = CONNECT_HELLO(s.port, "bob");
  REQUIRE(tcp >= 0);
  /* SEND in JSON (snake_case names accepted, bytes in base64) -> SEND_ACK in JSON, PUSH in binary to TCP */
  ws_send_text(ws,
               "{\"type\":\"SEND\",\"body\":{\"client_id\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"aGkA/w==\","
               "\"meta\":{\"lang\":\"en\"}}}");
  char *ack = ws_expect_json(ws, "SEND_ACK");
  REQUIRE(ack);
  CHECK(strstr(ack, "\"clientId\":\"1\"") && strstr(ack, "\"seq\":\"1\"") && !strstr(ack, "\"code\""));
  free(ack);
  e2e_frame f;
  int r;
  while ((r = e2e_read_frame(tcp, E2E_WAIT_MS, &f)) == E2E_READ_OK && f.type == HUBU_FRAME_PING) e2e_frame_free(&f);
  REQUIRE(r == E2E_READ_OK && f.type == HUBU_FRAME_PUSH);
  Hubu__V1__Push *push = hubu__v1__push__unpack(NULL, f.len, f.body);
  REQUIRE(push && push->n_messages == 1);
  CHECK(push->messages[0]->body.len == 4 && !memcmp(push->messages[0]->body.data, "hi\0\xff", 4));
  CHECK(push->messages[0]->n_meta == 1 && !strcmp(push->messages[0]->meta[0]->value, "en"));
  hubu__v1__push__free_unpacked(push, NULL);
  e2e_frame_free(&f);
  /* binary from TCP -> PUSH in JSON; DELIVER_ACK, SYNC, PULL, PING and CALL in JSON */
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = 1;
  m.session_id = "d:alice:bob";
  m.body.data = (uint8_t *)"yo";
  m.body.len = 2;
  REQUIRE(e2e_send_msg(tcp, HUBU_FRAME_SEND, &m.base) == 0);
  char *pj = ws_expect_json(ws, "PUSH");
  REQUIRE(pj);
  CHECK(strstr(pj, "\"seq\":\"2\"") && strstr(pj, "\"sender\":\"bob\"") && strstr(pj, "\"body\":\"eW8=\""));
  free(pj);
  ws_send_text(ws, "{\"type\":\"DELIVER_ACK\",\"body\":{\"cursors\":[{\"sessionId\":\"d:alice:bob\",\"seq\":\"2\"}]}}");
  ws_send_text(ws, "{\"type\":\"SYNC\",\"body\":{\"requestId\":\"7\",\"known\":[]}}");
  char *sync = ws_expect_json(ws, "SYNC_RESULT");
  REQUIRE(sync);
  CHECK(strstr(sync, "\"requestId\":\"7\"") && strstr(sync, "\"sessionId\":\"d:alice:bob\",\"maxSeq\":\"2\""));
  free(sync);
  ws_send_text(ws,
               "{\"type\":\"PULL\",\"body\":{\"requestId\":\"8\",\"sessionId\":\"d:alice:bob\",\"afterSeq\":\"1\"}}");
  char *pull = ws_expect_json(ws, "PULL_RESULT");
  REQUIRE(pull);
  CHECK(strstr(pull, "\"requestId\":\"8\"") && strstr(pull, "\"seq\":\"2\"") && !strstr(pull, "\"seq\":\"1\""));
  free(pull);
  ws_send_text(ws, "{\"type\":\"PING\",\"body\":{\"timeMs\":\"123\"}}");
  char *pong = ws_expect_json(ws, "PONG");
  REQUIRE(pong);
  CHECK(!strcmp(pong, "{\"type\":\"PONG\",\"body\":{\"timeMs\":\"123\"}}"));
  free(pong);
  ws_send_text(ws, "{\"type\":\"CALL\",\"body\":{\"requestId\":\"9\",\"method\":\"no.such.method\"}}");
  char *cr = ws_expect_json(ws, "CALL_RESULT");
  REQUIRE(cr);
  CHECK(strstr(cr, "\"requestId\":\"9\"") && strstr(cr, "\"code\":\"NOT_FOUND\""));
  free(cr);
  e2e_close(tcp);
  e2e_close(ws);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void json_that_is_not_a_frame_gets_the_tcp_error_codes(void) {
  e2e_server s = start();
  /* before HELLO: another frame is UNAUTHENTICATED, as on TCP */
  int ws = ws_open_json(s.http_port);
  ws_send_text(ws, "{\"type\":\"SYNC\",\"body\":{}}");
  char *e = ws_expect_json(ws, "ERROR");
  REQUIRE(e);
  CHECK(strstr(e, "\"code\":\"UNAUTHENTICATED\""));
  free(e);
  expect_close(ws, 1000);
  e2e_close(ws);
  /* a HELLO whose body is not a Hello: BAD_BODY, then close */
  ws = ws_open_json(s.http_port);
  ws_send_text(ws, "{\"type\":\"HELLO\",\"body\":{\"userId\": 5}}");
  e = ws_expect_json(ws, "ERROR");
  REQUIRE(e);
  CHECK(strstr(e, "\"code\":\"BAD_BODY\"") && strstr(e, "userId") == NULL && strstr(e, "user_id"));
  free(e);
  expect_close(ws, 1000);
  e2e_close(ws);
  ws = ws_open_json(s.http_port);
  ws_hello_json(ws, "alice", "web");
  /* an unknown type: UNSUPPORTED_TYPE, the connection stays */
  ws_send_text(ws, "{\"type\":\"TELEPORT\",\"body\":{}}");
  e = ws_expect_json(ws, "ERROR");
  REQUIRE(e);
  CHECK(strstr(e, "\"code\":\"UNSUPPORTED_TYPE\""));
  free(e);
  /* a body of the wrong shape: BAD_BODY naming the field, the connection stays */
  ws_send_text(ws, "{\"type\":\"SEND\",\"body\":{\"clientId\":\"x1\",\"sessionId\":\"d:alice:bob\"}}");
  e = ws_expect_json(ws, "ERROR");
  REQUIRE(e);
  CHECK(strstr(e, "\"code\":\"BAD_BODY\"") && strstr(e, "client_id") && strstr(e, "\"frameType\":16"));
  free(e);
  ws_send_text(ws, "{\"type\":\"PING\",\"body\":{\"timeMs\":\"5\"}}");
  e = ws_expect_json(ws, "PONG");
  REQUIRE(e);
  free(e);
  /* not JSON at all: BAD_FRAME, then close */
  ws_send_text(ws, "SEND clientId=1");
  e = ws_expect_json(ws, "ERROR");
  REQUIRE(e);
  CHECK(strstr(e, "\"code\":\"BAD_FRAME\""));
  free(e);
  expect_close(ws, 1000);
  e2e_close(ws);
  /* a binary message on hubu.v1.json: 1003 */
  ws = ws_open_json(s.http_port);
  ws_hello_json(ws, "alice", "web2");
  ws_send(ws, 1, 2, 1, "\xa5\x01\x03\x00\x00\x00\x00\x00", 8);
  expect_close(ws, 1003);
  e2e_close(ws);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void http_listen_off_writes_no_http_port(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--http-listen", "off", NULL) == 0);
  CHECK_EQ(s.http_port, 0);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(upgrade_selects_hubu_v1_and_answers_the_key),
      E2E_CASE(ws_and_tcp_clients_exchange_messages),
      E2E_CASE(fragmented_masked_message_with_ping_between),
      E2E_CASE(unmasked_client_frame_closes_with_1002),
      E2E_CASE(oversize_message_closes_with_1009),
      E2E_CASE(text_messages_close_with_1003_or_1007),
      E2E_CASE(origin_outside_the_allow_list_closes_with_1008),
      E2E_CASE(close_handshake_is_answered_then_fin),
      E2E_CASE(http_requests_that_are_not_upgrades_get_answers),
      E2E_CASE(slow_request_times_out_with_408),
      E2E_CASE(http_listen_off_writes_no_http_port),
      E2E_CASE(json_subprotocol_carries_every_flow_as_text),
      E2E_CASE(json_that_is_not_a_frame_gets_the_tcp_error_codes),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

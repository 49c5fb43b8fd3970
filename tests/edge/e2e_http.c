/* e2e_http.c — the HTTP API of PROTOCOL.md section 7 against a running
 * hubud: every endpoint, each result code's status, tokens missing, forged,
 * expired or of another user, JSON and protobuf both ways, plugin verdicts
 * (409, 429 with Retry-After), the limits (413, 431, 408), the development
 * sign-in and the static files. The client is a plain socket writing the
 * request bytes, so each case sends exactly what it means. */
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"
#include "hubu.pb-c.h"
#include "token.h"
#include "ws.h"

typedef struct {
  int status;
  char head[2048];
  char *body; /* owned, NUL-terminated */
  size_t body_len;
} http_answer;

static void answer_free(http_answer *a) {
  free(a->body);
  a->body = NULL;
}

/* Reads a whole answer (Connection: close: to EOF) from fd. */
static int read_answer(int fd, http_answer *a) {
  memset(a, 0, sizeof *a);
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  REQUIRE(buf);
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, E2E_WAIT_MS) <= 0) break;
    if (n + 1024 > cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      REQUIRE(buf);
    }
    SSL *ssl = e2e_tls_of(fd);
    ssize_t r = ssl ? SSL_read(ssl, buf + n, (int)(cap - n - 1)) : recv(fd, buf + n, cap - n - 1, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = 0;
  char *end = strstr(buf, "\r\n\r\n");
  if (!end || sscanf(buf, "HTTP/1.1 %d", &a->status) != 1) {
    free(buf);
    a->status = -1;
    return -1;
  }
  size_t hl = (size_t)(end - buf) + 4;
  snprintf(a->head, sizeof a->head, "%.*s", (int)hl, buf);
  a->body_len = n - hl;
  a->body = malloc(a->body_len + 1);
  REQUIRE(a->body);
  memcpy(a->body, buf + hl, a->body_len);
  a->body[a->body_len] = 0;
  free(buf);
  return 0;
}

/* One request on fd: method and target, extra header lines (each ending in CRLF) and a body. */
static http_answer request_on(int fd, const char *method, const char *target, const char *headers, const void *body,
                              size_t body_len) {
  char head[8192];
  int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n", method,
                   target, headers ? headers : "", body_len);
  REQUIRE(e2e_send_raw(fd, head, (size_t)n) == 0);
  if (body_len) REQUIRE(e2e_send_raw(fd, body, body_len) == 0);
  http_answer a;
  read_answer(fd, &a);
  e2e_close(fd);
  return a;
}

/* One request on a new connection. */
static http_answer request(int port, const char *method, const char *target, const char *headers, const void *body,
                           size_t body_len) {
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  char head[8192];
  int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n", method,
                   target, headers ? headers : "", body_len);
  REQUIRE(e2e_send_raw(fd, head, (size_t)n) == 0);
  if (body_len) REQUIRE(e2e_send_raw(fd, body, body_len) == 0);
  http_answer a;
  read_answer(fd, &a);
  e2e_close(fd);
  return a;
}

static char auth_header[512];

/* "Authorization: Bearer <token of user>\r\nContent-Type: application/json\r\n" */
static const char *auth_json(const char *user) {
  char token[HUBU_TOKEN_MAX];
  e2e_token(user, token);
  snprintf(auth_header, sizeof auth_header, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", token);
  return auth_header;
}

static http_answer post_json(int port, const char *target, const char *user, const char *json) {
  return request(port, "POST", target, user ? auth_json(user) : "Content-Type: application/json\r\n", json,
                 strlen(json));
}

static http_answer get_as(int port, const char *target, const char *user) {
  return request(port, "GET", target, user ? auth_json(user) : NULL, NULL, 0);
}

#define EXPECT(a, st, needle)                                                                                \
  do {                                                                                                       \
    CHECKF((a).status == (st), "status %d, want %d (body %s)", (a).status, (st), (a).body ? (a).body : "");  \
    if ((needle)[0])                                                                                         \
      CHECKF((a).body &&strstr((a).body, (needle)), "body %s lacks %s", (a).body ? (a).body : "", (needle)); \
  } while (0)

/* A new temp dir holding one plugin, NAME.lua with source text. */
static void plugin_dir_with(char *dir, size_t size, const char *name, const char *text) {
  snprintf(dir, size, "/tmp/hubu-http-XXXXXX");
  REQUIRE(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/%s.lua", dir, name);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fputs(text, f);
  fclose(f);
}

/* One plugin whose verdicts the cases ask for by the body. */
static void plugin_dir(char *dir, size_t size) {
  plugin_dir_with(dir, size, "verdicts",
                  "plugin:hook(\"message.send\", function(ev)\n"
                  "  if ev.body == \"reject me\" then return ev:reject(\"REJECTED\", \"not in this room\") end\n"
                  "  if ev.body == \"slow down\" then return ev:reject(\"RATE_LIMITED\", \"too fast\", 2500) end\n"
                  "end)\n"
                  "plugin:hook(\"call.echo\", function(ev) ev:reply(ev.payload) end)\n"
                  "plugin:reserve_user(\"weather\")\n");
}

/* An auth plugin: "letmein-<user>" logs in as <user>, a v1 token as usual. */
static void auth_plugin_dir(char *dir, size_t size) {
  plugin_dir_with(dir, size, "letmein",
                  "plugin:hook(\"auth\", function(ev)\n"
                  "  if ev.token == \"letmein-\" .. ev.user then return ev:accept() end\n"
                  "  local ok, why = im.token_verify(ev.token, ev.user)\n"
                  "  if ok then return ev:accept() end\n"
                  "  ev:reject(why)\n"
                  "end)\n");
}

/* ---- cases ----------------------------------------------------------------- */

static void send_sync_pull_and_calls_answer_in_json(void) {
  char dir[64];
  plugin_dir(dir, sizeof dir);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--plugins", dir, NULL) == 0);
  int bob = CONNECT_HELLO(s.port, "bob");
  REQUIRE(bob >= 0);
  const char *m1 = "{\"clientId\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"aGVsbG8=\"}";
  http_answer a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice", m1);
  EXPECT(a, 200, "\"seq\":\"1\"");
  CHECK(strstr(a.head, "Content-Type: application/json\r\n") && strstr(a.head, "Connection: close\r\n"));
  CHECK(!strstr(a.body, "duplicate"));
  answer_free(&a);
  /* pushed to bob's long connection like any message */
  e2e_frame f;
  int r;
  while ((r = e2e_read_frame(bob, E2E_WAIT_MS, &f)) == E2E_READ_OK && f.type == HUBU_FRAME_PING) e2e_frame_free(&f);
  REQUIRE(r == E2E_READ_OK);
  CHECK_EQ(f.type, HUBU_FRAME_PUSH);
  e2e_frame_free(&f);
  /* the same send again: the same seq, duplicate */
  a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice", m1);
  EXPECT(a, 200, "\"duplicate\":true");
  CHECK(strstr(a.body, "\"seq\":\"1\""));
  answer_free(&a);
  a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice",
                "{\"clientId\":\"5\",\"sessionId\":\"d:alice:bob\",\"body\":\"Mg==\"}");
  EXPECT(a, 200, "\"seq\":\"2\"");
  answer_free(&a);
  /* below the device's high-water mark and never stored: STALE, 409 */
  a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice",
                "{\"clientId\":\"3\",\"sessionId\":\"d:alice:bob\",\"body\":\"Mw==\"}");
  EXPECT(a, 409, "\"code\":\"STALE\"");
  answer_free(&a);
  /* another device of the same user counts its own client_ids */
  a = post_json(s.http_port, "/v1/messages?device_id=phone", "alice",
                "{\"clientId\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"cGhvbmU=\"}");
  EXPECT(a, 200, "\"seq\":\"3\"");
  answer_free(&a);
  /* plugin verdicts: REJECTED 409, RATE_LIMITED 429 with Retry-After */
  a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice",
                "{\"clientId\":\"6\",\"sessionId\":\"d:alice:bob\",\"body\":\"cmVqZWN0IG1l\"}");
  EXPECT(a, 409, "\"code\":\"REJECTED\"");
  CHECK(strstr(a.body, "not in this room"));
  answer_free(&a);
  a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice",
                "{\"clientId\":\"7\",\"sessionId\":\"d:alice:bob\",\"body\":\"c2xvdyBkb3du\"}");
  EXPECT(a, 429, "\"code\":\"RATE_LIMITED\"");
  CHECK(strstr(a.body, "\"retryAfterMs\":2500") && strstr(a.head, "Retry-After: 3\r\n"));
  answer_free(&a);
  /* FORBIDDEN: a direct session of others; INVALID: not a session id */
  a = post_json(s.http_port, "/v1/messages?device_id=cli", "alice",
                "{\"clientId\":\"8\",\"sessionId\":\"d:bob:carol\",\"body\":\"eA==\"}");
  EXPECT(a, 403, "\"code\":\"FORBIDDEN\"");
  answer_free(&a);
  /* pull: after and limit; has_more; max_seq */
  a = get_as(s.http_port, "/v1/sessions/d:alice:bob/messages?after=1&limit=1", "bob");
  EXPECT(a, 200, "\"seq\":\"2\"");
  CHECK(!strstr(a.body, "\"seq\":\"1\"") && strstr(a.body, "\"hasMore\":true") && strstr(a.body, "\"maxSeq\":\"3\""));
  answer_free(&a);
  a = get_as(s.http_port, "/v1/sessions/d%3Aalice%3Abob/messages", "alice"); /* escaped, no query */
  EXPECT(a, 200, "\"body\":\"aGVsbG8=\"");
  answer_free(&a);
  a = get_as(s.http_port, "/v1/sessions/d:bob:carol/messages", "alice"); /* another user's session */
  EXPECT(a, 403, "\"code\":\"FORBIDDEN\"");
  answer_free(&a);
  a = get_as(s.http_port, "/v1/sessions/d:alice:bob/messages?after=x", "alice");
  EXPECT(a, 400, "\"code\":\"INVALID\"");
  answer_free(&a);
  /* sync */
  a = post_json(s.http_port, "/v1/sync", "bob", "{\"known\":[{\"sessionId\":\"d:alice:bob\",\"seq\":\"1\"}]}");
  EXPECT(a, 200, "\"sessionId\":\"d:alice:bob\",\"maxSeq\":\"3\"");
  answer_free(&a);
  a = post_json(s.http_port, "/v1/sync", "bob", "");
  EXPECT(a, 200, "\"maxSeq\":\"3\"");
  answer_free(&a);
  /* calls: the payload is the body; the result's payload comes back in base64 */
  a = post_json(s.http_port, "/v1/calls/echo", "alice", "{\"x\":1}");
  EXPECT(a, 200, "\"payload\":\"eyJ4IjoxfQ==\"");
  answer_free(&a);
  a = post_json(s.http_port, "/v1/calls/no.such.method", "alice", "{}");
  EXPECT(a, 404, "\"code\":\"NOT_FOUND\"");
  answer_free(&a);
  /* a reserved user (a plugin's bot): its v1r. token speaks for it, an ordinary one does not */
  char rtok[HUBU_TOKEN_MAX], rhdr[600];
  REQUIRE(hubu_token_mint_reserved((const uint8_t *)"test-secret", 11, "weather", 4000000000u, rtok, sizeof rtok) > 0);
  snprintf(rhdr, sizeof rhdr, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", rtok);
  const char *wm = "{\"clientId\":\"1\",\"sessionId\":\"d:alice:weather\",\"body\":\"c3Vubnk=\"}";
  a = request(s.http_port, "POST", "/v1/messages", rhdr, wm, strlen(wm));
  EXPECT(a, 200, "\"seq\":\"1\"");
  answer_free(&a);
  a = post_json(s.http_port, "/v1/messages", "weather", wm);
  EXPECT(a, 401, "\"code\":\"UNAUTHENTICATED\"");
  answer_free(&a);
  /* wrong method, unknown path */
  a = get_as(s.http_port, "/v1/messages", "alice");
  CHECK_EQ(a.status, 405);
  CHECK(strstr(a.head, "Allow: POST\r\n"));
  answer_free(&a);
  a = get_as(s.http_port, "/v1/nothing", "alice");
  CHECK_EQ(a.status, 404);
  answer_free(&a);
  e2e_close(bob);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  e2e_remove_tree(dir);
}

static void tokens_missing_forged_expired_or_of_another_user_get_401(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  const char *m = "{\"clientId\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"eA==\"}";
  http_answer a = post_json(s.http_port, "/v1/messages", NULL, m);
  EXPECT(a, 401, "\"code\":\"UNAUTHENTICATED\"");
  CHECK(strstr(a.body, "Bearer"));
  answer_free(&a);
  char token[HUBU_TOKEN_MAX], hdr[600];
  e2e_token("alice", token);
  token[strlen(token) - 1] = token[strlen(token) - 1] == '0' ? '1' : '0'; /* forged */
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", token);
  a = request(s.http_port, "POST", "/v1/messages", hdr, m, strlen(m));
  EXPECT(a, 401, "\"code\":\"UNAUTHENTICATED\"");
  answer_free(&a);
  e2e_token_raw("test-secret", "alice", 1000, token, sizeof token); /* expired in 1970 */
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", token);
  a = request(s.http_port, "POST", "/v1/messages", hdr, m, strlen(m));
  EXPECT(a, 401, "expired");
  answer_free(&a);
  e2e_token("alice", token); /* alice's token, speaking as bob */
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", token);
  a = request(s.http_port, "POST", "/v1/messages?user_id=bob", hdr, m, strlen(m));
  EXPECT(a, 401, "\"code\":\"UNAUTHENTICATED\"");
  answer_free(&a);
  a = request(s.http_port, "GET", "/v1/sessions/d:alice:bob/messages", "Authorization: Basic YTpi\r\n", NULL, 0);
  EXPECT(a, 401, "\"code\":\"UNAUTHENTICATED\"");
  answer_free(&a);
  /* nothing was stored by any of them */
  a = get_as(s.http_port, "/v1/sessions/d:alice:bob/messages", "bob");
  EXPECT(a, 200, "");
  CHECK(!strstr(a.body, "\"messages\""));
  answer_free(&a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void protobuf_both_ways_and_bad_bodies_get_400(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char token[HUBU_TOKEN_MAX], hdr[700];
  e2e_token("alice", token);
  snprintf(hdr, sizeof hdr,
           "Authorization: Bearer %s\r\nContent-Type: application/x-protobuf\r\nAccept: application/x-protobuf\r\n",
           token);
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = 1;
  m.session_id = "d:alice:bob";
  m.body.data = (uint8_t *)"bin\0ary";
  m.body.len = 7;
  uint8_t packed[256];
  size_t n = hubu__v1__send__pack(&m, packed);
  http_answer a = request(s.http_port, "POST", "/v1/messages?device_id=pb", hdr, packed, n);
  CHECK_EQ(a.status, 200);
  CHECK(strstr(a.head, "Content-Type: application/x-protobuf\r\n"));
  Hubu__V1__SendAck *ack = hubu__v1__send_ack__unpack(NULL, a.body_len, (uint8_t *)a.body);
  REQUIRE(ack);
  CHECK_EQ(ack->code, HUBU__V1__CODE__OK);
  CHECK_EQ(ack->seq, 1);
  hubu__v1__send_ack__free_unpacked(ack, NULL);
  answer_free(&a);
  /* a protobuf body that does not decode: BAD_BODY, 400, in protobuf */
  a = request(s.http_port, "POST", "/v1/messages?device_id=pb", hdr, "\xff\xff\xff", 3);
  CHECK_EQ(a.status, 400);
  ack = hubu__v1__send_ack__unpack(NULL, a.body_len, (uint8_t *)a.body);
  CHECK(ack && ack->code == HUBU__V1__CODE__BAD_BODY);
  if (ack) hubu__v1__send_ack__free_unpacked(ack, NULL);
  answer_free(&a);
  /* JSON that is not a Send: 400 naming the field */
  a = post_json(s.http_port, "/v1/messages", "alice", "{\"clientId\": true}");
  EXPECT(a, 400, "\"code\":\"BAD_BODY\"");
  CHECK(strstr(a.body, "client_id"));
  answer_free(&a);
  a = post_json(s.http_port, "/v1/messages", "alice", "{not json");
  EXPECT(a, 400, "not JSON");
  answer_free(&a);
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nContent-Type: text/plain\r\n", token);
  a = request(s.http_port, "POST", "/v1/messages", hdr, "hi", 2);
  EXPECT(a, 400, "Content-Type");
  answer_free(&a);
  /* the pull answers JSON by default, protobuf when asked */
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nAccept: application/x-protobuf\r\n", token);
  a = request(s.http_port, "GET", "/v1/sessions/d:alice:bob/messages", hdr, NULL, 0);
  CHECK_EQ(a.status, 200);
  Hubu__V1__PullResult *pr = hubu__v1__pull_result__unpack(NULL, a.body_len, (uint8_t *)a.body);
  REQUIRE(pr);
  CHECK(pr->n_messages == 1 && pr->messages[0]->body.len == 7 && !memcmp(pr->messages[0]->body.data, "bin\0ary", 7));
  hubu__v1__pull_result__free_unpacked(pr, NULL);
  answer_free(&a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void limits_answer_413_431_and_408(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--max-frame", "1024", "--hello-timeout-ms", "400", NULL) == 0);
  /* a body above twice max_frame: 413 before it is read */
  char *big = malloc(4000);
  REQUIRE(big);
  memset(big, 'x', 4000);
  http_answer a = request(s.http_port, "POST", "/v1/messages", auth_json("alice"), big, 4000);
  CHECK_EQ(a.status, 413);
  answer_free(&a);
  free(big);
  /* a JSON body within the limit whose frame is above max_frame: FRAME_TOO_LARGE, 413 */
  char body[2100];
  int n = snprintf(body, sizeof body, "{\"clientId\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"");
  memset(body + n, 'A', 1600);
  n += 1600;
  n += snprintf(body + n, sizeof body - (size_t)n, "\"}");
  a = request(s.http_port, "POST", "/v1/messages", auth_json("alice"), body, (size_t)n);
  CHECK_EQ(a.status, 413);
  answer_free(&a);
  /* headers above 8 KiB: 431 */
  char *hdr = malloc(HUBU_WS_MAX_HEADER + 64);
  REQUIRE(hdr);
  memset(hdr, 'a', HUBU_WS_MAX_HEADER + 60);
  memcpy(hdr, "X-Long: ", 8);
  memcpy(hdr + HUBU_WS_MAX_HEADER + 58, "\r\n", 2);
  hdr[HUBU_WS_MAX_HEADER + 60] = 0;
  int fd = e2e_connect(s.http_port);
  REQUIRE(fd >= 0);
  char line[64];
  snprintf(line, sizeof line, "GET /healthz HTTP/1.1\r\n");
  e2e_send_raw(fd, line, strlen(line));
  e2e_send_raw(fd, hdr, strlen(hdr));
  read_answer(fd, &a);
  CHECK_EQ(a.status, 431);
  answer_free(&a);
  e2e_close(fd);
  free(hdr);
  /* a body that never finishes: 408 at the timeout */
  fd = e2e_connect(s.http_port);
  REQUIRE(fd >= 0);
  const char *part = "POST /v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"kn";
  e2e_send_raw(fd, part, strlen(part));
  read_answer(fd, &a);
  CHECK_EQ(a.status, 408);
  answer_free(&a);
  e2e_close(fd);
  /* the server kept serving */
  a = get_as(s.http_port, "/healthz", NULL);
  EXPECT(a, 200, "ok");
  answer_free(&a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void dev_login_and_static_files(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  http_answer a = post_json(s.http_port, "/v1/dev/token", NULL, "{\"userId\":\"alice\"}");
  CHECK_EQ(a.status, 404); /* off by default */
  answer_free(&a);
  a = get_as(s.http_port, "/", NULL);
  CHECK_EQ(a.status, 200);
  CHECK(strstr(a.head, "Content-Type: text/html") && strstr(a.body, "<html"));
  answer_free(&a);
  const char *outside[] = {"/../secret", "/%2e%2e/secret", "/.hidden", "/sub/dir.js", "/nothing.js"};
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
    a = get_as(s.http_port, outside[i], NULL);
    CHECKF(a.status == 404 || a.status == 400, "%s: status %d", outside[i], a.status);
    answer_free(&a);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);
  REQUIRE(e2e_server_start(&s, "--dev-login", "on", NULL) == 0);
  a = post_json(s.http_port, "/v1/dev/token", NULL, "{\"userId\":\"carol\"}");
  EXPECT(a, 200, "\"token\":\"v1.carol.");
  char token[HUBU_TOKEN_MAX] = "";
  char *t = strstr(a.body, "\"token\":\"");
  if (t) sscanf(t + 9, "%191[^\"]", token);
  answer_free(&a);
  a = post_json(s.http_port, "/v1/dev/token", NULL, "{\"userId\":\"no spaces\"}");
  CHECK_EQ(a.status, 400);
  answer_free(&a);
  char hdr[600];
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\nContent-Type: application/json\r\n", token);
  const char *m = "{\"clientId\":\"1\",\"sessionId\":\"d:carol:dave\",\"body\":\"eA==\"}";
  a = request(s.http_port, "POST", "/v1/messages", hdr, m, strlen(m));
  EXPECT(a, 200, "\"seq\":\"1\"");
  answer_free(&a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static int has(const char *s, size_t n, const char *needle) { return memmem(s, n, needle, strlen(needle)) != NULL; }

/* An auth plugin decides for the API as for HELLO; its tokens name no user, ?user_id= does. */
static void auth_plugin_tokens_with_user_id(void) {
  char dir[64];
  auth_plugin_dir(dir, sizeof dir);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--plugins", dir, NULL) == 0);
  const char *m = "{\"clientId\":\"1\",\"sessionId\":\"d:carol:dave\",\"body\":\"eA==\"}";
  const char *hdr = "Authorization: Bearer letmein-carol\r\nContent-Type: application/json\r\n";
  http_answer a = request(s.http_port, "POST", "/v1/messages?user_id=carol", hdr, m, strlen(m));
  EXPECT(a, 200, "\"seq\":\"1\"");
  answer_free(&a);
  a = request(s.http_port, "POST", "/v1/messages", hdr, m, strlen(m)); /* no user: 401 */
  EXPECT(a, 401, "user_id");
  answer_free(&a);
  a = request(s.http_port, "POST", "/v1/messages?user_id=dave", hdr, m, strlen(m)); /* the plugin refuses */
  EXPECT(a, 401, "\"code\":\"UNAUTHENTICATED\"");
  answer_free(&a);
  a = get_as(s.http_port, "/v1/sessions/d:carol:dave/messages", "dave"); /* a v1 token still works */
  EXPECT(a, 200, "\"sender\":\"carol\"");
  answer_free(&a);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  e2e_remove_tree(dir);
}

/* --https-listen: the same API, the page and WebSocket inside TLS. */
static void https_listener_serves_api_and_wss(void) {
  e2e_server s;
  REQUIRE(e2e_server_start_tls(&s, "--https-listen", "127.0.0.1:0", NULL) == 0);
  REQUIRE(s.https_port > 0);
  int fd = e2e_connect_tls(s.https_port, 0, s.cert);
  REQUIRE(fd >= 0);
  http_answer a = request_on(fd, "GET", "/healthz", NULL, NULL, 0);
  EXPECT(a, 200, "ok");
  answer_free(&a);
  fd = e2e_connect_tls(s.https_port, 0, s.cert);
  REQUIRE(fd >= 0);
  const char *m = "{\"clientId\":\"1\",\"sessionId\":\"d:alice:bob\",\"body\":\"dGxz\"}";
  a = request_on(fd, "POST", "/v1/messages", auth_json("alice"), m, strlen(m));
  EXPECT(a, 200, "\"seq\":\"1\"");
  answer_free(&a);
  /* wss: the upgrade, then HELLO and a PULL in JSON text messages */
  fd = e2e_connect_tls(s.https_port, 0, s.cert);
  REQUIRE(fd >= 0);
  const char *up =
      "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Protocol: hubu.v1.json\r\n\r\n";
  REQUIRE(e2e_send_raw(fd, up, strlen(up)) == 0);
  char token[HUBU_TOKEN_MAX], text[600];
  e2e_token("bob", token);
  int tl = snprintf(text, sizeof text,
                    "{\"type\":\"HELLO\",\"body\":{\"protocolVersion\":1,\"userId\":\"bob\",\"deviceId\":\"w\","
                    "\"token\":\"%s\"}}",
                    token);
  const char *pull = "{\"type\":\"PULL\",\"body\":{\"requestId\":\"4\",\"sessionId\":\"d:alice:bob\"}}";
  uint8_t frames[1400];
  size_t fl = 0;
  const char *texts[2] = {text, pull};
  size_t lens[2] = {(size_t)tl, strlen(pull)};
  for (int i = 0; i < 2; i++) { /* masked text frames */
    frames[fl++] = 0x81;
    if (lens[i] < 126) { /* the shortest length form, as RFC 6455 requires */
      frames[fl++] = (uint8_t)(0x80 | lens[i]);
    } else {
      frames[fl++] = 0x80 | 126;
      frames[fl++] = (uint8_t)(lens[i] >> 8);
      frames[fl++] = (uint8_t)lens[i];
    }
    const uint8_t key[4] = {1, 2, 3, 4};
    memcpy(frames + fl, key, 4);
    fl += 4;
    for (size_t k = 0; k < lens[i]; k++) frames[fl++] = (uint8_t)texts[i][k] ^ key[k % 4];
  }
  REQUIRE(e2e_send_raw(fd, frames, fl) == 0);
  /* read until the PULL_RESULT with the message sent over https shows up */
  char got[8192];
  size_t n = 0;
  SSL *ssl = e2e_tls_of(fd);
  REQUIRE(ssl);
  uint64_t deadline = e2e_now_ms() + E2E_WAIT_MS;
  while (n + 1 < sizeof got && e2e_now_ms() < deadline) {
    int r = SSL_read(ssl, got + n, (int)(sizeof got - n - 1));
    if (r <= 0) break;
    n += (size_t)r;
    got[n] = 0;
    if (has(got, n, "PULL_RESULT") && has(got, n, "dGxz")) break;
  }
  CHECK(has(got, n, "101 Switching Protocols") && has(got, n, "Sec-WebSocket-Protocol: hubu.v1.json\r\n"));
  CHECK(has(got, n, "{\"type\":\"HELLO_OK\""));
  CHECKF(has(got, n, "{\"type\":\"PULL_RESULT\",\"body\":{\"requestId\":\"4\"") && has(got, n, "dGxz"),
         "no PULL_RESULT over wss");
  e2e_close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(send_sync_pull_and_calls_answer_in_json),
      E2E_CASE(tokens_missing_forged_expired_or_of_another_user_get_401),
      E2E_CASE(protobuf_both_ways_and_bad_bodies_get_400),
      E2E_CASE(limits_answer_413_431_and_408),
      E2E_CASE(dev_login_and_static_files),
      E2E_CASE(https_listener_serves_api_and_wss),
      E2E_CASE(auth_plugin_tokens_with_user_id),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

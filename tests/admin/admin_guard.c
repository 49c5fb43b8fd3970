/* admin_guard.c — what the admin listener refuses, against a real hubud on
 * loopback: a Host that does not name it (DNS rebinding), an Origin it was
 * not told about, a state change a web page could forge (a simple form
 * POST), a request without its --admin-token, a plugin name that leaves the
 * plugin folder, and a start off loopback without a token. Each refusal is
 * checked by what a user would see: the status, the JSON error, and the
 * connection that was not kicked or the file that was not loaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin_http.h"

#define TOKEN "s3cret-admin-token-0123456789abcdef"

static const char host_error[] =
    "{\"error\": \"the Host header must name this listener: its address, localhost, or an --admin-host name\"}\n";
static const char origin_error[] =
    "{\"error\": \"requests from web pages are refused: the Origin is not in --admin-allow-origin\"}\n";
static const char token_error[] =
    "{\"error\": \"this listener needs its token: Authorization: Bearer TOKEN (--admin-token)\"}\n";
static const char post_error[] =
    "{\"error\": \"a POST needs Content-Type: application/json (or an Authorization: Bearer header)\"}\n";

/* Header lines in a static buffer: "Host: <host>\r\n" then extra (may be ""). */
static const char *headers_for(const char *host, const char *extra) {
  static char buf[1024];
  snprintf(buf, sizeof buf, "Host: %s\r\n%s", host, extra);
  return buf;
}

/* "127.0.0.1:PORT" in a static buffer. */
static const char *own_host(int port) {
  static char buf[32];
  snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
  return buf;
}

/* The value of the sample "name value" in the metrics text, -1 when absent. */
static double metric(int port, const char *name) {
  admin_reply r;
  if (ADMIN_REQUEST(port, "GET", "/metrics", headers_for(own_host(port), "Authorization: Bearer " TOKEN "\r\n"), &r) !=
      0)
    return -1;
  double v = -1;
  size_t n = strlen(name);
  for (const char *line = r.body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (!strncmp(line, name, n) && line[n] == ' ') v = strtod(line + n + 1, NULL);
  admin_reply_free(&r);
  return v;
}

/* Sends one request and checks its status and, unless body is NULL, its body. */
static void expect_answer_at(const char *file, int line, int port, const char *method, const char *target,
                             const char *headers, int status, const char *body) {
  admin_reply r;
  if (admin_request_headers_at(file, line, port, method, target, headers, &r) != 0) e2e_abort();
  e2e_checkf(r.status == status, file, line, "%s %s with\n%s-> %d %s (want %d)", method, target, headers, r.status,
             r.body, status);
  if (body) e2e_checkf(!strcmp(r.body, body), file, line, "%s %s -> body %s (want %s)", method, target, r.body, body);
  admin_reply_free(&r);
}
#define EXPECT_ANSWER(port, method, target, headers, status, body) \
  expect_answer_at(__FILE__, __LINE__, (port), (method), (target), (headers), (status), (body))

/* ---- rule 1: the Host names this listener ----------------------------------------- */

static void foreign_or_missing_host_is_refused_with_403(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int other = port < 65535 ? port + 1 : port - 1;
  char host[128], two[256];
  static const char *const foreign[] = {
      "example.com:%d",            /* another name */
      "evil.example:%d",           /* a rebinding page's own name */
      "localhost.evil.example:%d", /* localhost as a prefix */
      "127.0.0.2:%d",              /* loopback, but not the address it arrived at */
      "10.0.0.1:%d",               /* another address */
      "[::1]:%d",                  /* the connection came over IPv4 */
      "2130706433:%d",             /* 127.0.0.1 as one number: a name, not an address */
      "user@127.0.0.1:%d",         /* userinfo */
      "127.0.0.1:%d:1",            /* two ports */
      "127.0.0.1:%d/x",            /* a path */
      "127.0.0.1 %d",              /* a space */
      "",                          /* empty */
  };
  int refused = 0;
  for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
    snprintf(host, sizeof host, foreign[i], port);
    EXPECT_ANSWER(port, "GET", "/healthz", headers_for(host, ""), 403, host_error);
    EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(host, ""), 403, host_error);
    refused += 2;
  }
  snprintf(host, sizeof host, "127.0.0.1:%d", other); /* the right address, another port */
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(host, ""), 403, host_error);
  snprintf(host, sizeof host, "localhost:%d", other);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(host, ""), 403, host_error);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", "", 403, host_error); /* no Host at all */
  snprintf(two, sizeof two, "Host: 127.0.0.1:%d\r\nHost: evil.example:%d\r\n", port, port);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", two, 403, host_error); /* two of them */
  refused += 4;

  /* Its own names: the address it arrived at, localhost; with or without the port. */
  static const char *const own[] = {"127.0.0.1:%d", "127.0.0.1", "localhost:%d", "LocalHost:%d", "localhost"};
  for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
    snprintf(host, sizeof host, own[i], port);
    EXPECT_ANSWER(port, "GET", "/healthz", headers_for(host, ""), 200, "ok\n");
  }
  snprintf(host, sizeof host, "hubu_admin_refused_total{reason=\"host\"}");
  double counted = metric(port, host);
  CHECKF(counted == refused, "refused for the Host: %g counted, %d sent", counted, refused);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* A page on evil.example whose name now resolves to 127.0.0.1 sends
 * Host: evil.example:PORT; it can neither read the connections nor kick. */
static void rebinding_host_can_neither_read_nor_kick(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  char host[64];
  snprintf(host, sizeof host, "evil.example:%d", port);
  admin_reply r;
  REQUIRE(ADMIN_REQUEST(port, "GET", "/v1/admin/conns", headers_for(host, ""), &r) == 0);
  CHECKF(r.status == 403 && !strstr(r.body, "alice"), "conns -> %d %s", r.status, r.body);
  admin_reply_free(&r);
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice", headers_for(host, "Content-Type: application/json\r\n"), 403,
                host_error);
  EXPECT_ANSWER(port, "POST", "/v1/admin/reload", headers_for(host, "Content-Type: application/json\r\n"), 403,
                host_error);
  CHECK(EXPECT_ALIVE(a1, 1));
  /* The same kick addressed to the listener itself goes through. */
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice",
                headers_for(own_host(port), "Content-Type: application/json\r\n"), 200, "{\"kicked\": 1}\n");
  EXPECT_GOAWAY(a1, HUBU__V1__CODE__KICKED, E2E_WAIT_MS);
  close(a1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void admin_host_adds_the_names_a_host_may_give(void) {
  e2e_server s;
  int port = ADMIN_START(&s, "--admin-host", "admin.internal, ops.example:8443", "--admin-host", "[fd00::1]", NULL);
  char host[64];
  static const char *const ok[] = {"admin.internal:%d", "ADMIN.Internal:%d", "admin.internal", "ops.example:8443",
                                   "ops.example",       "[fd00::1]:%d",      "[FD00::1]",      "localhost:%d"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    snprintf(host, sizeof host, ok[i], port);
    EXPECT_ANSWER(port, "GET", "/healthz", headers_for(host, ""), 200, "ok\n");
  }
  static const char *const refused[] = {"ops.example:%d",  "admin.internal:1", "admin.internal.evil:%d",
                                        "evil.example:%d", "fd00::1:%d",       "[fd00::2]:%d"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    snprintf(host, sizeof host, refused[i], port);
    EXPECT_ANSWER(port, "GET", "/healthz", headers_for(host, ""), 403, host_error);
  }
  CHECK_SERVER_STOPS_CLEANLY(&s);

  /* A value that is not a host name stops the start. */
  static const char *const bad[] = {"bad name", "a,,b", "a:0", "a:99999", "a/b", "[not-v6]", "evil.example:80:1"};
  char err[4096];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", "127.0.0.1:0", "--admin-host",
                               bad[i], NULL);
    CHECKF(st == 2, "--admin-host '%s': exit %d", bad[i], st);
    CHECKF(strstr(err, "--admin-host: invalid value") != NULL, "--admin-host '%s': stderr %s", bad[i], err);
  }
}

/* ---- rule 2: an Origin only when allowed --------------------------------------------- */

static void origin_from_a_web_page_is_refused_with_403(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  char self[64], extra[256];
  snprintf(self, sizeof self, "http://127.0.0.1:%d", port);
  const char *origins[] = {"http://evil.example", "null", self, "http://localhost:3000"};
  for (size_t i = 0; i < sizeof origins / sizeof origins[0]; i++) {
    snprintf(extra, sizeof extra, "Origin: %s\r\n", origins[i]);
    EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(own_host(port), extra), 403, origin_error);
    EXPECT_ANSWER(port, "GET", "/healthz", headers_for(own_host(port), extra), 403, origin_error);
    snprintf(extra, sizeof extra, "Origin: %s\r\nContent-Type: application/json\r\n", origins[i]);
    EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice", headers_for(own_host(port), extra), 403, origin_error);
    EXPECT_ANSWER(port, "OPTIONS", "/v1/admin/kick", headers_for(own_host(port), extra), 403, origin_error);
  }
  CHECK(EXPECT_ALIVE(a1, 2));
  CHECKF(metric(port, "hubu_admin_refused_total{reason=\"origin\"}") == 16, "origin refusals counted: %g",
         metric(port, "hubu_admin_refused_total{reason=\"origin\"}"));
  close(a1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* A page on an allowed origin is served, with the CORS answers a browser needs. */
static void allowed_origin_is_served_with_cors_headers(void) {
  e2e_server s;
  int port = ADMIN_START(&s, "--admin-allow-origin", "http://dash.local:3000", NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  admin_reply r;
  REQUIRE(ADMIN_REQUEST(port, "GET", "/v1/admin/stats",
                        headers_for(own_host(port), "Origin: http://dash.local:3000\r\n"), &r) == 0);
  CHECKF(r.status == 200 && strstr(r.body, "\"users_online\": 1"), "%d %s", r.status, r.body);
  CHECKF(!strcmp(r.allow_origin, "http://dash.local:3000"), "Access-Control-Allow-Origin '%s'", r.allow_origin);
  admin_reply_free(&r);
  REQUIRE(ADMIN_REQUEST(port, "GET", "/healthz", headers_for(own_host(port), "Origin: HTTP://DASH.local:3000\r\n"),
                        &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.allow_origin, "http://dash.local:3000"), "%d, allow origin '%s'", r.status,
         r.allow_origin);
  admin_reply_free(&r);
  /* Its preflight, then the POST itself. */
  REQUIRE(ADMIN_REQUEST(port, "OPTIONS", "/v1/admin/kick",
                        headers_for(own_host(port),
                                    "Origin: http://dash.local:3000\r\n"
                                    "Access-Control-Request-Method: POST\r\n"
                                    "Access-Control-Request-Headers: content-type\r\n"),
                        &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.allow_methods, "POST") && !strcmp(r.allow_origin, "http://dash.local:3000"),
         "preflight -> %d, methods '%s', origin '%s'", r.status, r.allow_methods, r.allow_origin);
  admin_reply_free(&r);
  CHECK(EXPECT_ALIVE(a1, 3)); /* a preflight changes nothing */
  /* Another origin, scheme or port is still refused. */
  static const char *const others[] = {"http://dash.local:3001", "https://dash.local:3000", "http://dash.local",
                                       "http://evil.example"};
  char extra[128];
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    snprintf(extra, sizeof extra, "Origin: %s\r\nContent-Type: application/json\r\n", others[i]);
    EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice", headers_for(own_host(port), extra), 403, origin_error);
  }
  CHECK(EXPECT_ALIVE(a1, 4));
  /* Two Origin headers, one of them allowed: refused. */
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats",
                headers_for(own_host(port), "Origin: http://dash.local:3000\r\nOrigin: http://evil.example\r\n"), 403,
                origin_error);
  /* The allowed page's kick still needs JSON. */
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice",
                headers_for(own_host(port), "Origin: http://dash.local:3000\r\nContent-Type: text/plain\r\n"), 415,
                post_error);
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice",
                headers_for(own_host(port), "Origin: http://dash.local:3000\r\nContent-Type: application/json\r\n"),
                200, "{\"kicked\": 1}\n");
  EXPECT_GOAWAY(a1, HUBU__V1__CODE__KICKED, E2E_WAIT_MS);
  close(a1);
  CHECK_SERVER_STOPS_CLEANLY(&s);

  static const char *const bad[] = {"*",      "null", "dash.local:3000", "http://dash.local:3000/", "ftp://dash.local",
                                    "http://"};
  char err[4096];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", "127.0.0.1:0",
                               "--admin-allow-origin", bad[i], NULL);
    CHECKF(st == 2, "--admin-allow-origin '%s': exit %d", bad[i], st);
    CHECKF(strstr(err, "--admin-allow-origin: invalid value") != NULL, "'%s': stderr %s", bad[i], err);
  }
}

/* ---- rule 3: a state change needs JSON (or a bearer token) ---------------------------- */

static void form_post_cannot_kick_but_json_can(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  int b1 = ADMIN_CLIENT(s.port, "bob", "d1");
  /* What an HTML form (or a fetch without preflight) can send. */
  static const char *const simple[] = {
      "",
      "Content-Type: application/x-www-form-urlencoded\r\n",
      "Content-Type: multipart/form-data; boundary=----x\r\n",
      "Content-Type: text/plain\r\n",
      "Content-Type: text/plain; charset=utf-8\r\n",
      "Content-Type: application/json-seq\r\n",
      "Content-Type: application/jsonx\r\n",
      "Content-Type: application/json\r\nContent-Type: text/plain\r\n",
      "Authorization: Basic YWRtaW46YWRtaW4=\r\n",
  };
  for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
    EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice", headers_for(own_host(port), simple[i]), 415, post_error);
    EXPECT_ANSWER(port, "POST", "/v1/admin/reload", headers_for(own_host(port), simple[i]), 415, post_error);
  }
  /* A browser's form post, body and all. */
  char form[512];
  int n = snprintf(form, sizeof form,
                   "POST /v1/admin/kick?user=alice HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\nuser=alice",
                   port);
  admin_reply r;
  REQUIRE(ADMIN_EXCHANGE(port, form, (size_t)n, &r) == 0);
  CHECKF(r.status == 415 && !strcmp(r.body, post_error), "form post -> %d %s", r.status, r.body);
  admin_reply_free(&r);
  CHECK(EXPECT_ALIVE(a1, 5)); /* still connected */
  CHECKF(metric(port, "hubu_admin_refused_total{reason=\"content_type\"}") == 19, "refusals counted: %g",
         metric(port, "hubu_admin_refused_total{reason=\"content_type\"}"));

  /* The same kick as JSON (any case, with parameters) goes through. */
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice",
                headers_for(own_host(port), "Content-Type: Application/JSON; charset=utf-8\r\n"), 200,
                "{\"kicked\": 1}\n");
  EXPECT_GOAWAY(a1, HUBU__V1__CODE__KICKED, E2E_WAIT_MS);
  /* So does one with a bearer header (a page cannot add one without a preflight). */
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=bob",
                headers_for(own_host(port), "Authorization: Bearer anything\r\n"), 200, "{\"kicked\": 1}\n");
  EXPECT_GOAWAY(b1, HUBU__V1__CODE__KICKED, E2E_WAIT_MS);
  /* GETs need neither. */
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(own_host(port), "Content-Type: text/plain\r\n"), 200, NULL);
  close(a1);
  close(b1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* ---- rule 4: --admin-token ---------------------------------------------------------- */

static void token_is_required_except_for_healthz(void) {
  e2e_server s;
  int port = ADMIN_START(&s, "--admin-token", TOKEN, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  const char *json = "Content-Type: application/json\r\n";
  EXPECT_ANSWER(port, "GET", "/healthz", headers_for(own_host(port), ""), 200, "ok\n");

  /* No token, a wrong one, another scheme: 401 everywhere else, unknown paths too. */
  static const char *const wrong[] = {
      "",
      "Authorization: Bearer wrong-token-0123456789abcdef\r\n",
      "Authorization: Bearer " TOKEN "x\r\n",
      "Authorization: Bearer s3cret-admin-token-0123456789abcde\r\n", /* one byte short */
      "Authorization: Bearer\r\n",
      "Authorization: Basic " TOKEN "\r\n",
      "Authorization: " TOKEN "\r\n",
      "Authorization: Bearer " TOKEN "\r\nAuthorization: Bearer " TOKEN "\r\n", /* twice */
  };
  static const char *const targets[][2] = {
      {"GET", "/v1/admin/stats"},   {"GET", "/metrics"}, {"GET", "/v1/admin/conns"},
      {"GET", "/v1/admin/plugins"}, {"GET", "/nope"},    {"POST", "/v1/admin/kick?user=alice"},
      {"POST", "/v1/admin/reload"}};
  char extra[512];
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
      snprintf(extra, sizeof extra, "%s%s", wrong[i], json);
      admin_reply r;
      REQUIRE(ADMIN_REQUEST(port, targets[t][0], targets[t][1], headers_for(own_host(port), extra), &r) == 0);
      CHECKF(r.status == 401 && !strcmp(r.body, token_error), "%s %s with %s-> %d %s", targets[t][0], targets[t][1],
             extra, r.status, r.body);
      CHECKF(!strcmp(r.www_authenticate, "Bearer realm=\"hubud admin\""), "WWW-Authenticate '%s'", r.www_authenticate);
      admin_reply_free(&r);
    }
  }
  CHECK(EXPECT_ALIVE(a1, 6));
  EXPECT_ANSWER(port, "GET", "/healthz", headers_for(own_host(port), "Authorization: Bearer wrong\r\n"), 200, "ok\n");

  /* The token opens everything; the scheme's case does not matter. */
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(own_host(port), "Authorization: Bearer " TOKEN "\r\n"), 200,
                NULL);
  EXPECT_ANSWER(port, "GET", "/v1/admin/conns", headers_for(own_host(port), "Authorization: bearer   " TOKEN "\r\n"),
                200, NULL);
  double refused = metric(port, "hubu_admin_refused_total{reason=\"token\"}");
  CHECKF(refused == 56, "token refusals counted: %g", refused);
  /* With the token, a foreign Host is still refused. */
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for("evil.example:80", "Authorization: Bearer " TOKEN "\r\n"),
                403, host_error);
  /* The token stands for JSON too: a POST with it alone is not a form. */
  EXPECT_ANSWER(port, "POST", "/v1/admin/kick?user=alice",
                headers_for(own_host(port), "Authorization: Bearer " TOKEN "\r\n"), 200, "{\"kicked\": 1}\n");
  EXPECT_GOAWAY(a1, HUBU__V1__CODE__KICKED, E2E_WAIT_MS);
  close(a1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* --admin-token @FILE, and the three settings in hubu.lua; a flag's list
 * replaces the file's. */
static void token_file_and_settings_from_hubu_lua(void) {
  char dir[64], token_file[128], config[128], text[512];
  REQUIRE(admin_plugins_dir(dir, sizeof dir) == 0);
  snprintf(token_file, sizeof token_file, "%s/admin-token", dir);
  REQUIRE(admin_write_file(dir, "admin-token", TOKEN "\n") == 0);
  snprintf(text, sizeof text,
           "admin_token = \"@%s\"\nadmin_host = \"admin.internal,ops.internal\"\n"
           "admin_allow_origin = \"http://dash.local:3000\"\n",
           token_file);
  REQUIRE(admin_write_file(dir, "hubu.lua", text) == 0);
  snprintf(config, sizeof config, "%s/hubu.lua", dir);
  e2e_server s;
  int port = ADMIN_START(&s, "--config", config, NULL);
  char host[64];
  const char *auth = "Authorization: Bearer " TOKEN "\r\n";
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(own_host(port), ""), 401, token_error);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(own_host(port), auth), 200, NULL);
  snprintf(host, sizeof host, "ops.internal:%d", port);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(host, auth), 200, NULL);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats",
                headers_for(own_host(port), "Authorization: Bearer " TOKEN "\r\nOrigin: http://dash.local:3000\r\n"),
                200, NULL);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats",
                headers_for(own_host(port), "Authorization: Bearer " TOKEN "\r\nOrigin: http://evil.example\r\n"), 403,
                origin_error);
  CHECK_SERVER_STOPS_CLEANLY(&s);

  port = ADMIN_START(&s, "--config", config, "--admin-host", "other.internal", NULL);
  snprintf(host, sizeof host, "other.internal:%d", port);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(host, auth), 200, NULL);
  snprintf(host, sizeof host, "ops.internal:%d", port);
  EXPECT_ANSWER(port, "GET", "/v1/admin/stats", headers_for(host, auth), 403, host_error);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  admin_remove_dir(dir);
}

/* Off loopback, hubud will not start without a token: it says so and exits
 * 2 before it binds anything (no "listening" line, no port file). */
static void non_loopback_admin_listen_without_token_refuses_to_start(void) {
  char err[4096];
  static const char *const exposed[] = {"0.0.0.0:0", "[::]:0", "192.0.2.1:0"};
  for (size_t i = 0; i < sizeof exposed / sizeof exposed[0]; i++) {
    int st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", exposed[i], NULL);
    CHECKF(st == 2, "--admin-listen %s without a token: exit %d (want 2, before listening)", exposed[i], st);
    CHECKF(strstr(err, "is not a loopback address: give --admin-token too") != NULL, "stderr: %s", err);
    CHECKF(!strstr(err, "event=listening"), "it listened: %s", err);
  }
  /* The same from hubu.lua. */
  char dir[64], config[128];
  REQUIRE(admin_plugins_dir(dir, sizeof dir) == 0);
  REQUIRE(admin_write_file(dir, "hubu.lua", "admin_listen = \"0.0.0.0:0\"\n") == 0);
  snprintf(config, sizeof config, "%s/hubu.lua", dir);
  int st = admin_run_refused(err, sizeof err, "--config", config, NULL);
  CHECKF(st == 2 && strstr(err, "--admin-listen 0.0.0.0:0 is not a loopback address"), "hubu.lua: exit %d, %s", st,
         err);
  admin_remove_dir(dir);
  /* A token that cannot be one stops the start too, wherever it listens. */
  st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", "0.0.0.0:0", "--admin-token", "short",
                         NULL);
  CHECKF(st == 2 && strstr(err, "--admin-token: the token must be 16-4096 bytes"), "short token: exit %d, %s", st, err);
  st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", "127.0.0.1:0", "--admin-token",
                         "with spaces in the admin token", NULL);
  CHECKF(st == 2 && strstr(err, "printable ASCII without spaces"), "token with spaces: exit %d, %s", st, err);
  st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", "127.0.0.1:0", "--admin-token",
                         "@/nonexistent/hubu-admin-token", NULL);
  CHECKF(st == 2 && strstr(err, "--admin-token: cannot read /nonexistent/hubu-admin-token"), "token file: exit %d, %s",
         st, err);
  /* A name is not an address to bind: which one it is could not be checked. */
  st = admin_run_refused(err, sizeof err, "--config", "off", "--admin-listen", "localhost:0", NULL);
  CHECKF(st == 2 && strstr(err, "--admin-listen: invalid value"), "--admin-listen localhost:0: exit %d, %s", st, err);
}

/* ---- rule 5: plugin names stay in the plugin folder ---------------------------------- */

#define PLANTED(where)          \
  "--% summary: planted " where \
  "\n"                          \
  "plugin:hook(\"message.stored\", function(ev) end)\n"

static void reload_refuses_names_that_leave_the_plugin_folder(void) {
  char root[64], plugins[96];
  REQUIRE(admin_plugins_dir(root, sizeof root) == 0);
  snprintf(plugins, sizeof plugins, "%s/plugins", root);
  REQUIRE(mkdir(plugins, 0755) == 0);
  REQUIRE(admin_write_file(root, "init.lua", PLANTED("outside the plugin folder")) == 0); /* PLUGINS/../init.lua */
  REQUIRE(admin_write_file(root, "x.lua", PLANTED("outside as x.lua")) == 0);             /* PLUGINS/../x.lua */
  REQUIRE(admin_write_file(plugins, "init.lua", PLANTED("in the folder as init")) == 0);  /* PLUGINS/./init.lua */
  REQUIRE(admin_write_file(plugins, "good.lua", ADMIN_GOOD_PLUGIN) == 0);
  e2e_server s;
  int port = ADMIN_START(&s, "--plugins", plugins, NULL);
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/v1/admin/plugins", &r) == 0);
  CHECKF(r.status == 200 && strstr(r.body, "\"count\": 2,"), "%d %s", r.status, r.body);
  admin_reply_free(&r);

  static const char *const bad[] = {
      "..",
      ".",
      "%2e%2e",
      "..%2Finit",
      "../x",
      "%2E%2E%2Fx",
      "a/b",
      "a%5Cb",
      "..%5Cx",
      "good.lua",
      ".hidden",
      "",
      "g%C3%B6od",
      "good%20",
      "x@y",
      "a.b",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 bytes */
  };
  static const char want[] =
      "{\"error\": \"plugin must be 1-64 bytes of [A-Za-z0-9_-]: the name of a plugin in the plugin folder\"}\n";
  char target[256];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(target, sizeof target, "/v1/admin/reload?plugin=%s", bad[i]);
    REQUIRE(ADMIN_POST(port, target, &r) == 0);
    CHECKF(r.status == 400 && !strcmp(r.body, want), "%s -> %d %s", target, r.status, r.body);
    admin_reply_free(&r);
  }
  /* Nothing was loaded from outside, and nothing under another name. */
  REQUIRE(ADMIN_GET(port, "/v1/admin/plugins", &r) == 0);
  CHECKF(strstr(r.body, "\"count\": 2,") && !strstr(r.body, "planted outside") && !strstr(r.body, "\"name\": \".") &&
             !strstr(r.body, "\"not_loaded\": [\n    {"),
         "listing after the refused reloads:\n%s", r.body);
  admin_reply_free(&r);
  /* Names in the folder still reload, one or all. */
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload?plugin=good", &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.body, "{\"reloaded\": \"good\", \"detail\": \"good: loaded\\n\"}\n"), "%d %s",
         r.status, r.body);
  admin_reply_free(&r);
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload?plugin=init", &r) == 0);
  CHECK_EQ(r.status, 200);
  admin_reply_free(&r);
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload", &r) == 0);
  CHECK_EQ(r.status, 200);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/v1/admin/plugins", &r) == 0);
  CHECKF(strstr(r.body, "\"count\": 2,") && !strstr(r.body, "planted outside"), "listing:\n%s", r.body);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  admin_remove_dir(root);
}

static const e2e_case cases[] = {
    E2E_CASE(foreign_or_missing_host_is_refused_with_403),
    E2E_CASE(rebinding_host_can_neither_read_nor_kick),
    E2E_CASE(admin_host_adds_the_names_a_host_may_give),
    E2E_CASE(origin_from_a_web_page_is_refused_with_403),
    E2E_CASE(allowed_origin_is_served_with_cors_headers),
    E2E_CASE(form_post_cannot_kick_but_json_can),
    E2E_CASE(token_is_required_except_for_healthz),
    E2E_CASE(token_file_and_settings_from_hubu_lua),
    E2E_CASE(non_loopback_admin_listen_without_token_refuses_to_start),
    E2E_CASE(reload_refuses_names_that_leave_the_plugin_folder),
};

int main(int argc, char **argv) { return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

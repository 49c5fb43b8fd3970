/* admin_endpoints.c — the admin listener over real HTTP against a real hubud:
 * health, Prometheus metrics that count what clients did, kick, and the
 * errors (404, 405, 400, 413, 414) that leave the server serving. Every case
 * ends with hubud exiting 0, which it does only after uv_loop_close succeeded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "admin_http.h"

/* The value of the sample line that starts with "name " (labels included in
 * name), or -1 when absent. */
static double metric_value(const char *text, const char *name) {
  size_t n = strlen(name);
  for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    if (!strncmp(line, name, n) && line[n] == ' ') return strtod(line + n + 1, NULL);
  }
  return -1;
}

/* Every sample belongs to a family announced by HELP and TYPE lines before it
 * (a histogram's samples are its _bucket, _sum and _count), and every line is
 * a comment or "name[{labels}] value". */
static int metrics_well_formed(const char *text) {
  char typed[160][80];
  int n_typed = 0;
  for (const char *line = text; *line;) {
    const char *end = strchr(line, '\n');
    if (!end) return CHECKF(0, "metrics text does not end with a newline");
    size_t len = (size_t)(end - line);
    char l[512];
    if (len >= sizeof l) return CHECKF(0, "metrics line too long");
    memcpy(l, line, len);
    l[len] = '\0';
    char name[64], type[32];
    if (!strncmp(l, "# TYPE ", 7)) {
      if (sscanf(l + 7, "%63s %31s", name, type) != 2) return CHECKF(0, "bad TYPE line: %s", l);
      int histogram = !strcmp(type, "histogram");
      if (strcmp(type, "gauge") && strcmp(type, "counter") && !histogram) return CHECKF(0, "unexpected type in: %s", l);
      if (n_typed < 160) snprintf(typed[n_typed++], sizeof typed[0], "%s", name);
      static const char *const parts[] = {"_bucket", "_sum", "_count"};
      for (int i = 0; histogram && i < 3 && n_typed < 160; i++)
        snprintf(typed[n_typed++], sizeof typed[0], "%s%s", name, parts[i]);
    } else if (!strncmp(l, "# HELP ", 7)) {
      /* fine */
    } else {
      size_t nl = strcspn(l, "{ ");
      if (nl == 0 || nl >= sizeof name) return CHECKF(0, "bad sample line: %s", l);
      memcpy(name, l, nl);
      name[nl] = '\0';
      int found = 0;
      for (int i = 0; i < n_typed && !found; i++) found = !strcmp(typed[i], name);
      if (!found) return CHECKF(0, "sample without a TYPE line before it: %s", l);
      const char *value = strrchr(l, ' ');
      char *vend = NULL;
      if (!value || (strtod(value + 1, &vend), *vend != '\0')) return CHECKF(0, "bad value in: %s", l);
    }
    line = end + 1;
  }
  return 1;
}

static void healthz_answers_200_ok(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/healthz", &r) == 0);
  CHECK_EQ(r.status, 200);
  CHECKF(!strcmp(r.body, "ok\n"), "body '%s'", r.body);
  CHECKF(!strncmp(r.content_type, "text/plain", 10), "content type '%s'", r.content_type);
  CHECK(r.closed_after);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void metrics_count_three_authenticated_connections(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  int a2 = ADMIN_CLIENT(s.port, "alice", "d2");
  int b1 = ADMIN_CLIENT(s.port, "bob", "d1");
  int idle = e2e_connect(s.port); /* accepted, no HELLO: not ready */
  REQUIRE(idle >= 0);
  admin_reply r = {0};
  /* Wait until the server has accepted the idle one too. */
  for (uint64_t deadline = e2e_now_ms() + 3000;;) {
    REQUIRE(ADMIN_GET(port, "/metrics", &r) == 0);
    if (metric_value(r.body, "hubu_connections_accepted_total") == 4 || e2e_now_ms() > deadline) break;
    admin_reply_free(&r);
    e2e_sleep_ms(10);
  }
  CHECK_EQ(r.status, 200);
  CHECKF(strstr(r.content_type, "text/plain") && strstr(r.content_type, "version=0.0.4"), "content type '%s'",
         r.content_type);
  static const char *const families[] = {
      "# TYPE hubu_connections gauge",
      "# TYPE hubu_connections_accepted_total counter",
      "# TYPE hubu_messages_received_total counter",
      "# TYPE hubu_messages_stored_total counter",
      "# TYPE hubu_pulls_total counter",
      "# TYPE hubu_store_batches_total counter",
      "# TYPE hubu_store_appended_total counter",
      "# TYPE hubu_store_batch_size_last gauge",
      "# TYPE hubu_store_commit_seconds_total counter",
      "# TYPE hubu_store_queue_depth gauge",
      "# TYPE hubu_sessions_loaded gauge",
      "# TYPE hubu_users_online gauge",
      "# TYPE process_resident_memory_bytes gauge",
      "# TYPE process_cpu_seconds_total counter",
  };
  for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
    CHECKF(strstr(r.body, families[i]) != NULL, "missing '%s'", families[i]);
  CHECK(metrics_well_formed(r.body));
  CHECKF(metric_value(r.body, "hubu_connections{state=\"ready\"}") == 3, "ready = %g",
         metric_value(r.body, "hubu_connections{state=\"ready\"}"));
  CHECKF(metric_value(r.body, "hubu_connections{state=\"other\"}") == 1, "other = %g",
         metric_value(r.body, "hubu_connections{state=\"other\"}"));
  CHECKF(metric_value(r.body, "hubu_connections_accepted_total") == 4, "accepted = %g",
         metric_value(r.body, "hubu_connections_accepted_total"));
  CHECKF(metric_value(r.body, "hubu_users_online") == 2, "users = %g", metric_value(r.body, "hubu_users_online"));
  CHECK(metric_value(r.body, "process_resident_memory_bytes") > 1e6);
  admin_reply_free(&r);

  /* The same figures as JSON. */
  REQUIRE(ADMIN_GET(port, "/v1/admin/stats", &r) == 0);
  CHECK_EQ(r.status, 200);
  CHECKF(!strcmp(r.content_type, "application/json"), "content type '%s'", r.content_type);
  CHECKF(strstr(r.body, "\"connections\": {\"ready\": 3, \"other\": 1}") != NULL, "stats: %s", r.body);
  CHECKF(strstr(r.body, "\"users_online\": 2") != NULL, "stats: %s", r.body);
  admin_reply_free(&r);

  /* One closes: the gauge follows. */
  close(b1);
  uint64_t deadline = e2e_now_ms() + 3000;
  double ready = -1;
  while (e2e_now_ms() < deadline) {
    REQUIRE(ADMIN_GET(port, "/metrics", &r) == 0);
    ready = metric_value(r.body, "hubu_connections{state=\"ready\"}");
    admin_reply_free(&r);
    if (ready == 2) break;
    e2e_sleep_ms(20);
  }
  CHECKF(ready == 2, "ready after one close = %g", ready);
  close(a1);
  close(a2);
  close(idle);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* Reads a GOAWAY and checks code, reason and reconnect_after_ms 0. */
static void expect_kicked(int fd, const char *reason) {
  e2e_frame f;
  int r = e2e_read_frame(fd, E2E_WAIT_MS, &f);
  if (!CHECKF(r == E2E_READ_OK, "expected GOAWAY KICKED, got %s", e2e_read_result_name(r))) return;
  Hubu__V1__GoAway *g = f.type == HUBU_FRAME_GOAWAY ? hubu__v1__go_away__unpack(NULL, f.len, f.body) : NULL;
  if (CHECKF(g != NULL, "expected GOAWAY, got frame type %u", f.type)) {
    CHECKF(g->code == HUBU__V1__CODE__KICKED, "GOAWAY code %s", hubu_code_name(g->code));
    CHECKF(!strcmp(g->reason, reason), "GOAWAY reason '%s' (want '%s')", g->reason, reason);
    CHECK_EQ(g->reconnect_after_ms, 0);
    hubu__v1__go_away__free_unpacked(g, NULL);
  }
  e2e_frame_free(&f);
  EXPECT_EOF(fd);
}

static void kick_sends_goaway_kicked_to_that_user_only(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
  int a2 = ADMIN_CLIENT(s.port, "alice", "d2");
  int b1 = ADMIN_CLIENT(s.port, "bob", "d1");
  int c1 = ADMIN_CLIENT(s.port, "alice2", "d1"); /* a longer name that starts the same */
  admin_reply r;
  REQUIRE(ADMIN_POST(port, "/v1/admin/kick?user=alice&reason=policy+%22strike%22%20two", &r) == 0);
  CHECK_EQ(r.status, 200);
  CHECKF(!strcmp(r.body, "{\"kicked\": 2}\n"), "body '%s'", r.body);
  admin_reply_free(&r);
  expect_kicked(a1, "policy \"strike\" two");
  expect_kicked(a2, "policy \"strike\" two");
  CHECK(EXPECT_ALIVE(b1, 7));
  CHECK(EXPECT_ALIVE(c1, 8));

  /* The default reason; a user with no connection kicks nobody. */
  REQUIRE(ADMIN_POST(port, "/v1/admin/kick?user=bob", &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.body, "{\"kicked\": 1}\n"), "%d %s", r.status, r.body);
  admin_reply_free(&r);
  expect_kicked(b1, "kicked by an administrator");
  REQUIRE(ADMIN_POST(port, "/v1/admin/kick?user=nobody", &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.body, "{\"kicked\": 0}\n"), "%d %s", r.status, r.body);
  admin_reply_free(&r);

  /* Bad kicks change nothing. */
  static const char *const bad[] = {
      "/v1/admin/kick",                         /* no user */
      "/v1/admin/kick?user=",                   /* empty */
      "/v1/admin/kick?user=al%20ice",           /* not an id */
      "/v1/admin/kick?user=alice2&user=alice2", /* twice */
      "/v1/admin/kick?user=alice2&reason=%0A",  /* control character */
      "/v1/admin/kick?user=alice2&reason=%C3",  /* truncated UTF-8 */
      "/v1/admin/kick?user=alice2&why=x",       /* unknown parameter */
      "/v1/admin/kick?user=alice2%zz",          /* bad escape */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    REQUIRE(ADMIN_POST(port, bad[i], &r) == 0);
    CHECKF(r.status == 400, "%s -> %d %s", bad[i], r.status, r.body);
    CHECKF(!strncmp(r.body, "{\"error\": \"", 11), "%s -> body %s", bad[i], r.body);
    admin_reply_free(&r);
  }
  CHECK(EXPECT_ALIVE(c1, 9));
  close(a1);
  close(a2);
  close(b1);
  close(c1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void conns_lists_each_connection(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "phone");
  int b1 = ADMIN_CLIENT(s.port, "bob", "laptop");
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/v1/admin/conns", &r) == 0);
  CHECK_EQ(r.status, 200);
  CHECKF(strstr(r.body, "\"count\": 2") != NULL, "%s", r.body);
  CHECKF(strstr(r.body,
                "\"user\": \"alice\", \"device\": \"phone\", \"tls\": false, \"state\": \"ready\", "
                "\"remote\": \"127.0.0.1:") != NULL,
         "%s", r.body);
  CHECKF(strstr(r.body, "\"user\": \"bob\", \"device\": \"laptop\"") != NULL, "%s", r.body);
  CHECKF(strstr(r.body, "\"inflight\": 0, \"connected_seconds\": ") != NULL, "%s", r.body);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/v1/admin/conns?user=bob", &r) == 0);
  CHECKF(r.status == 200 && strstr(r.body, "\"count\": 1") && !strstr(r.body, "alice"), "%s", r.body);
  admin_reply_free(&r);
  close(a1);
  close(b1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void unknown_path_is_404_and_wrong_method_405(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  admin_reply r;
  static const char *const missing[] = {"/", "/nope", "/healthz/", "/v1/admin", "/v1/admin/statsx", "/METRICS"};
  for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
    REQUIRE(ADMIN_GET(port, missing[i], &r) == 0);
    CHECKF(r.status == 404, "%s -> %d", missing[i], r.status);
    CHECKF(!strcmp(r.body, "{\"error\": \"no such endpoint\"}\n"), "%s -> %s", missing[i], r.body);
    admin_reply_free(&r);
  }
  REQUIRE(ADMIN_POST(port, "/metrics", &r) == 0);
  CHECK_EQ(r.status, 405);
  CHECKF(!strcmp(r.allow, "GET"), "Allow '%s'", r.allow);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/v1/admin/kick?user=alice", &r) == 0);
  CHECK_EQ(r.status, 405);
  CHECKF(!strcmp(r.allow, "POST"), "Allow '%s'", r.allow);
  admin_reply_free(&r);
  REQUIRE(admin_request_at(__FILE__, __LINE__, port, "DELETE", "/healthz", &r) == 0);
  CHECK_EQ(r.status, 405);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void garbage_gets_400_and_the_server_keeps_serving(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1");
#define GARBAGE(literal) \
  { literal, sizeof(literal) - 1 }
  static const struct {
    const char *bytes;
    size_t len;
  } garbage[] = {
      GARBAGE("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"), /* a TLS hello */
      GARBAGE("hello there\r\n\r\n"),
      GARBAGE("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
      GARBAGE("GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n"),
      GARBAGE("GET /he\x01lthz HTTP/1.1\r\n\r\n"),
      GARBAGE("\0\0\0\0\0\0\0\0\0\0\0\0"),
  };
#undef GARBAGE
  admin_reply r;
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
    REQUIRE(ADMIN_EXCHANGE(port, garbage[i].bytes, garbage[i].len, &r) == 0);
    CHECKF(r.status == 400, "garbage %zu -> %d %s", i, r.status, r.body);
    CHECKF(strstr(r.body, "malformed") != NULL, "garbage %zu -> %s", i, r.body);
    CHECK(r.closed_after);
    admin_reply_free(&r);
  }
  /* A request cut off mid-way and abandoned. */
  int half = e2e_connect(port);
  REQUIRE(half >= 0);
  CHECK(e2e_send_raw(half, "GET /heal", 9) == 0);
  close(half);
  REQUIRE(ADMIN_GET(port, "/healthz", &r) == 0);
  CHECK_EQ(r.status, 200);
  admin_reply_free(&r);
  CHECK(EXPECT_ALIVE(a1, 42)); /* the client listener never noticed */
  close(a1);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void oversized_requests_get_413_414_and_431(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  admin_reply r;
  /* Declared too large: refused before the body is sent. */
  const char *big = "POST /v1/admin/kick?user=alice HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n";
  REQUIRE(ADMIN_EXCHANGE(port, big, strlen(big), &r) == 0);
  CHECK_EQ(r.status, 413);
  admin_reply_free(&r);
  /* Chunked, growing past 64 KiB. */
  size_t chunk = 16384, cap = 200000, n = 0;
  char *req = malloc(cap);
  REQUIRE(req != NULL);
  n += (size_t)snprintf(req, cap,
                        "POST /v1/admin/kick?user=alice HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 5; i++) {
    n += (size_t)snprintf(req + n, cap - n, "%zx\r\n", chunk);
    memset(req + n, 'x', chunk);
    n += chunk;
    memcpy(req + n, "\r\n", 2);
    n += 2;
  }
  memcpy(req + n, "0\r\n\r\n", 5);
  n += 5;
  REQUIRE(ADMIN_EXCHANGE(port, req, n, &r) == 0);
  CHECK_EQ(r.status, 413);
  admin_reply_free(&r);
  /* A body within the limit is accepted (and ignored). */
  n = (size_t)snprintf(req, cap,
                       "POST /v1/admin/kick?user=alice HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                       "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
                       port);
  memset(req + n, 'y', 1000);
  REQUIRE(ADMIN_EXCHANGE(port, req, n + 1000, &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.body, "{\"kicked\": 0}\n"), "%d %s", r.status, r.body);
  admin_reply_free(&r);
  /* A request target over 8 KiB. */
  n = (size_t)snprintf(req, cap, "GET /v1/admin/conns?user=");
  memset(req + n, 'a', 9000);
  n += 9000;
  n += (size_t)snprintf(req + n, cap - n, " HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(ADMIN_EXCHANGE(port, req, n, &r) == 0);
  CHECK_EQ(r.status, 414);
  admin_reply_free(&r);
  /* Headers over http-parser's 80 KiB. */
  n = (size_t)snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ");
  memset(req + n, 'p', 90000);
  n += 90000;
  n += (size_t)snprintf(req + n, cap - n, "\r\n\r\n");
  REQUIRE(ADMIN_EXCHANGE(port, req, n, &r) == 0);
  CHECK_EQ(r.status, 431);
  admin_reply_free(&r);
  free(req);
  REQUIRE(ADMIN_GET(port, "/healthz", &r) == 0);
  CHECK_EQ(r.status, 200);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* POST /v1/admin/reload goes to the plugin host's hook: build first, swap
 * second, a line per plugin. Skipped (exit 77) while hubud installs no hook,
 * after checking the 501 that answers then. */
static void reload_reloads_plugins_through_the_plugin_host(void) {
  char dir[64];
  REQUIRE(admin_plugins_dir(dir, sizeof dir) == 0);
  REQUIRE(admin_write_file(dir, "good.lua", ADMIN_GOOD_PLUGIN) == 0);
  e2e_server s;
  int port = ADMIN_START(&s, "--plugins", dir, NULL);
  admin_reply r;
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload", &r) == 0);
  if (r.status == 501) {
    CHECKF(!strcmp(r.body, "{\"error\": \"the plugin host is not running\"}\n"), "%s", r.body);
    admin_reply_free(&r);
    CHECK_SERVER_STOPS_CLEANLY(&s);
    admin_remove_dir(dir);
    admin_skip_if_clean("hubud installs no reload hook (hubu_admin_set_reload)");
    return;
  }
  CHECK_EQ(r.status, 200);
  CHECKF(!strcmp(r.body, "{\"reloaded\": \"all\", \"detail\": \"good: loaded\\n\"}\n"), "%s", r.body);
  admin_reply_free(&r);

  /* A broken new version: 422 with the reason, the old version keeps running. */
  REQUIRE(admin_write_file(dir, "good.lua", "this is not lua (\n") == 0);
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload?plugin=good", &r) == 0);
  CHECK_EQ(r.status, 422);
  static const char failed[] = "{\"error\": \"good: failed: ";
  CHECKF(!strncmp(r.body, failed, sizeof failed - 1), "%s", r.body);
  admin_reply_free(&r);

  REQUIRE(admin_write_file(dir, "good.lua", ADMIN_GOOD_PLUGIN) == 0);
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload?plugin=good", &r) == 0);
  CHECKF(r.status == 200 && !strcmp(r.body, "{\"reloaded\": \"good\", \"detail\": \"good: loaded\\n\"}\n"), "%d %s",
         r.status, r.body);
  admin_reply_free(&r);

  REQUIRE(ADMIN_POST(port, "/v1/admin/reload?plugin=../etc", &r) == 0);
  CHECK_EQ(r.status, 400);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/v1/admin/reload", &r) == 0);
  CHECK_EQ(r.status, 405);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  admin_remove_dir(dir);
}

/* A plugin with every listed field set: a header, three hooks on two events,
 * a timer; its summary needs JSON escaping. */
#define LISTED_PLUGIN                                                   \
  "--% summary: says \"hi\" \\ waves\n"                                 \
  "--% version: 3.1\n"                                                  \
  "--% priority: 7\n"                                                   \
  "--% failure: closed\n"                                               \
  "--% budget: 250\n"                                                   \
  "plugin:hook(\"message.stored\", function(ev) end)\n"                 \
  "plugin:hook(\"message.stored\", function(ev) end, -5)\n"             \
  "plugin:hook(\"call.listed.get\", function(ev) ev:reply(\"\") end)\n" \
  "plugin:every(60, function() end)\n"

/* GET /v1/admin/plugins: each running plugin with its header, path, kind,
 * load time, reloads, hooks, timers and figures; a broken new version shows
 * as the plugin's reload_error while the old one runs; a plugin that never
 * loaded is listed under not_loaded. */
static void plugins_lists_each_plugin_and_failed_reloads(void) {
  char dir[64], folder[96];
  REQUIRE(admin_plugins_dir(dir, sizeof dir) == 0);
  REQUIRE(admin_write_file(dir, "listed.lua", LISTED_PLUGIN) == 0);
  snprintf(folder, sizeof folder, "%s/fold", dir);
  REQUIRE(mkdir(folder, 0755) == 0);
  REQUIRE(admin_write_file(folder, "helper.lua", "return { word = 'w' }\n") == 0);
  REQUIRE(admin_write_file(folder, "init.lua",
                           "--% summary: a folder plugin\nlocal h = require \"helper\"\n"
                           "plugin:hook(\"connect\", function(ev) end)\n") == 0);
  REQUIRE(admin_write_file(dir, "broken.lua", "--% summary: not yet\n--% failure: closed\nthis is not lua (\n") == 0);
  e2e_server s;
  int port = ADMIN_START(&s, "--plugins", dir, NULL);
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/v1/admin/plugins", &r) == 0);
  CHECK_EQ(r.status, 200);
  CHECKF(!strcmp(r.content_type, "application/json"), "content type '%s'", r.content_type);
  char want[512];
  snprintf(want, sizeof want, "{\n  \"dir\": \"%s\",\n  \"count\": 2,\n  \"plugins\": [\n    {\"name\": \"fold\"", dir);
  CHECKF(!strncmp(r.body, want, strlen(want)), "listing:\n%s", r.body);
  snprintf(
      want, sizeof want,
      "{\"name\": \"listed\", \"version\": \"3.1\", \"summary\": \"says \\\"hi\\\" \\\\ waves\", "
      "\"policy\": \"closed\", \"priority\": 7, \"budget_ms\": 250, \"path\": \"%s/listed.lua\", \"folder\": false, "
      "\"loaded_at\": ",
      dir);
  CHECKF(strstr(r.body, want) != NULL, "want %s in:\n%s", want, r.body);
  CHECKF(strstr(r.body,
                "\"reloads\": 0, \"hooks\": {\"call.listed.get\": 1, \"message.stored\": 2}, \"timers\": 1, "
                "\"calls\": 0, \"errors\": 0, \"seconds\": 0.000000, \"reload_error\": null}") != NULL,
         "listing:\n%s", r.body);
  snprintf(want, sizeof want, "\"budget_ms\": 100, \"path\": \"%s/fold/init.lua\", \"folder\": true,", dir);
  CHECKF(strstr(r.body, want) != NULL, "want %s in:\n%s", want, r.body);
  snprintf(want, sizeof want,
           "\"not_loaded\": [\n    {\"name\": \"broken\", \"path\": \"%s/broken.lua\", \"error\": \"%s/broken.lua:3: ",
           dir, dir);
  CHECKF(strstr(r.body, want) != NULL, "want %s in:\n%s", want, r.body);
  CHECKF(strstr(r.body, "\"version\": \"\", \"summary\": \"not yet\", \"policy\": \"closed\"}") != NULL,
         "not_loaded shows the broken plugin's header:\n%s", r.body);
  const char *loaded_at = strstr(r.body, "\"loaded_at\": ");
  double t = loaded_at ? strtod(loaded_at + 13, NULL) : 0;
  struct timeval now;
  gettimeofday(&now, NULL);
  CHECKF(t > (double)now.tv_sec - 60 && t <= (double)now.tv_sec + 1, "loaded_at %f, now %ld", t, (long)now.tv_sec);
  admin_reply_free(&r);

  /* A broken new version: listed with the error; the old one runs on. */
  REQUIRE(admin_write_file(dir, "listed.lua", "--% version: 4\nlocal function f() error('not today') end\nf()\n") == 0);
  REQUIRE(ADMIN_POST(port, "/v1/admin/reload?plugin=listed", &r) == 0);
  CHECK_EQ(r.status, 422);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/v1/admin/plugins", &r) == 0);
  CHECKF(strstr(r.body, "\"name\": \"listed\", \"version\": \"3.1\"") != NULL, "listing:\n%s", r.body);
  snprintf(want, sizeof want, "\"reload_error\": {\"error\": \"%s/listed.lua:2: not today", dir);
  CHECKF(strstr(r.body, want) != NULL, "want %s in:\n%s", want, r.body);
  CHECKF(strstr(r.body, "\\nstack traceback:\\n") != NULL, "the traceback's newlines are escaped:\n%s", r.body);
  CHECKF(strstr(r.body, "\"count\": 2") != NULL, "listing:\n%s", r.body);
  admin_reply_free(&r);

  /* Fixed: the watcher swaps the new version in (no POST: it would count a
   * second reload), one reload counted, no error. */
  REQUIRE(admin_write_file(dir, "listed.lua", "--% version: 5\n") == 0);
  for (uint64_t deadline = e2e_now_ms() + 3000;;) {
    REQUIRE(ADMIN_GET(port, "/v1/admin/plugins", &r) == 0);
    if (strstr(r.body, "\"name\": \"listed\", \"version\": \"5\"") || e2e_now_ms() > deadline) break;
    admin_reply_free(&r);
    e2e_sleep_ms(10);
  }
  CHECKF(strstr(r.body, "\"name\": \"listed\", \"version\": \"5\"") != NULL, "listing:\n%s", r.body);
  CHECKF(strstr(r.body, "\"reloads\": 1, \"hooks\": {}, \"timers\": 0") != NULL, "listing:\n%s", r.body);
  CHECKF(!strstr(r.body, "\"reload_error\": {"), "listing:\n%s", r.body);
  admin_reply_free(&r);

  REQUIRE(ADMIN_POST(port, "/v1/admin/plugins", &r) == 0);
  CHECK_EQ(r.status, 405);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/v1/admin/plugins?verbose=1", &r) == 0);
  CHECK_EQ(r.status, 400);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  admin_remove_dir(dir);
}

/* What plugins publish (im.counter, im.gauge) joins /metrics as families of
 * their own, well formed, label values escaped. */
static void metrics_include_what_plugins_publish(void) {
  char dir[64];
  REQUIRE(admin_plugins_dir(dir, sizeof dir) == 0);
  REQUIRE(admin_write_file(dir, "pub.lua",
                           "local c = im.counter(\"jobs_total\", \"Jobs done.\", { \"queue\" })\n"
                           "local g = im.gauge(\"depth\", \"Jobs waiting.\")\n"
                           "c:inc(3, { queue = 'a \"quoted\" \\\\ one' })\n"
                           "c:inc({ queue = \"b\" })\n"
                           "g:set(12) g:dec(2)\n") == 0);
  e2e_server s;
  int port = ADMIN_START(&s, "--plugins", dir, NULL);
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/metrics", &r) == 0);
  CHECK_EQ(r.status, 200);
  CHECK(metrics_well_formed(r.body));
  CHECKF(strstr(r.body, "# HELP hubu_plugin_jobs_total Jobs done.\n# TYPE hubu_plugin_jobs_total counter\n") != NULL,
         "metrics:\n%s", r.body);
  double v = metric_value(r.body, "hubu_plugin_jobs_total{plugin=\"pub\",queue=\"a \\\"quoted\\\" \\\\ one\"}");
  CHECKF(v == 3, "escaped label: %g in\n%s", v, r.body);
  CHECKF(metric_value(r.body, "hubu_plugin_jobs_total{plugin=\"pub\",queue=\"b\"}") == 1, "metrics:\n%s", r.body);
  CHECKF(metric_value(r.body, "hubu_plugin_depth{plugin=\"pub\"}") == 10, "metrics:\n%s", r.body);
  CHECKF(strstr(r.body, "# TYPE hubu_plugin_depth gauge\n") != NULL, "metrics:\n%s", r.body);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  admin_remove_dir(dir);
}

static void error_text_is_escaped_as_json(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  admin_reply r;
  /* The parameter name decodes to: a " b \ c <0x01> d <0x7f> */
  REQUIRE(ADMIN_GET(port, "/v1/admin/conns?a%22b%5Cc%01d%7F=1", &r) == 0);
  CHECK_EQ(r.status, 400);
  const char *want = "{\"error\": \"unknown query parameter 'a\\\"b\\\\c\\u0001d\\u007f'\"}\n";
  CHECKF(!strcmp(r.body, want), "body %s (want %s)", r.body, want);
  admin_reply_free(&r);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void healthz_is_503_while_draining(void) {
  e2e_server s;
  int port = ADMIN_START(&s, "--drain-ms", "5000", NULL);
  int a1 = ADMIN_CLIENT(s.port, "alice", "d1"); /* holds the drain open until it closes */
  e2e_server_signal(&s, SIGTERM);
  EXPECT_GOAWAY(a1, HUBU__V1__CODE__SHUTTING_DOWN, E2E_WAIT_MS);
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/healthz", &r) == 0);
  CHECK_EQ(r.status, 503);
  CHECKF(!strcmp(r.body, "draining\n"), "body '%s'", r.body);
  admin_reply_free(&r);
  REQUIRE(ADMIN_GET(port, "/metrics", &r) == 0);
  CHECKF(metric_value(r.body, "hubu_draining") == 1, "hubu_draining = %g", metric_value(r.body, "hubu_draining"));
  admin_reply_free(&r);
  close(a1); /* the drain ends: the admin listener closes with the rest */
  int st = e2e_server_wait(&s, 5000);
  CHECKF(st == 0, "hubud exit status %d", st);
  CHECK(e2e_connect(port) < 0);
  e2e_server_cleanup(&s);
}

static void open_admin_connections_do_not_hold_up_shutdown(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int idle = e2e_connect(port);
  int half = e2e_connect(port);
  REQUIRE(idle >= 0 && half >= 0);
  CHECK(e2e_send_raw(half, "GET /metr", 9) == 0);
  admin_reply r;
  REQUIRE(ADMIN_GET(port, "/healthz", &r) == 0); /* both were accepted before this one */
  admin_reply_free(&r);
  uint64_t t0 = e2e_now_ms();
  CHECK_SERVER_STOPS_CLEANLY(&s);
  CHECKF(e2e_now_ms() - t0 < 2000, "stop took %llu ms", (unsigned long long)(e2e_now_ms() - t0));
  close(idle);
  close(half);
}

static void admin_listen_off_binds_nothing(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--admin-listen", "off", NULL) == 0);
  CHECK_EQ(admin_port_of(&s), 0);
  int fd = ADMIN_CLIENT(s.port, "alice", "d1");
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void idle_admin_connection_gets_408(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  struct timeval tv = {15, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  ssize_t got = recv(fd, buf, sizeof buf - 1, 0); /* after ~10 s */
  CHECKF(got > 12, "recv %zd (%s)", got, got < 0 ? strerror(errno) : "");
  if (got > 12) {
    buf[got] = '\0';
    CHECKF(!strncmp(buf, "HTTP/1.1 408 ", 13), "got %s", buf);
  }
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* A client that sends its request, half-closes at once and reads late
 * through a small window still gets the whole answer. (When an answer
 * outgrows the kernel's send buffer, admin.c waits for its write to complete
 * before closing; on loopback this one fits, so that path is not forced.) */
static void half_closed_client_gets_the_whole_answer(void) {
  e2e_server s;
  int port = ADMIN_START(&s, NULL);
  enum { N = 400 };
  static int fds[N];
  for (int i = 0; i < N; i++) REQUIRE((fds[i] = e2e_connect(s.port)) >= 0); /* no HELLO: listed all the same */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  int small = 2048;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
  char req[128];
  snprintf(req, sizeof req, "GET /v1/admin/conns HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
  REQUIRE(e2e_send_raw(fd, req, strlen(req)) == 0);
  shutdown(fd, SHUT_WR);
  e2e_sleep_ms(300); /* the server sees the FIN while its write is still pending */
  admin_reply r;
  REQUIRE(admin_read_reply_at(__FILE__, __LINE__, fd, &r) == 0);
  CHECK_EQ(r.status, 200);
  char want[32];
  snprintf(want, sizeof want, "\"count\": %d", N);
  CHECKF(strstr(r.body, want) != NULL, "no %s in %zu bytes", want, r.body_len);
  CHECKF(r.body_len > 40000 && r.body[r.body_len - 1] == '\n', "body of %zu bytes", r.body_len);
  admin_reply_free(&r);
  close(fd);
  for (int i = 0; i < N; i++) close(fds[i]);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static const e2e_case cases[] = {
    E2E_CASE(healthz_answers_200_ok),
    E2E_CASE(metrics_count_three_authenticated_connections),
    E2E_CASE(kick_sends_goaway_kicked_to_that_user_only),
    E2E_CASE(conns_lists_each_connection),
    E2E_CASE(unknown_path_is_404_and_wrong_method_405),
    E2E_CASE(garbage_gets_400_and_the_server_keeps_serving),
    E2E_CASE(oversized_requests_get_413_414_and_431),
    E2E_CASE(reload_reloads_plugins_through_the_plugin_host),
    E2E_CASE(plugins_lists_each_plugin_and_failed_reloads),
    E2E_CASE(metrics_include_what_plugins_publish),
    E2E_CASE(error_text_is_escaped_as_json),
    E2E_CASE(healthz_is_503_while_draining),
    E2E_CASE(open_admin_connections_do_not_hold_up_shutdown),
    E2E_CASE(admin_listen_off_binds_nothing),
    E2E_CASE(idle_admin_connection_gets_408),
    E2E_CASE(half_closed_client_gets_the_whole_answer),
};

int main(int argc, char **argv) { return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

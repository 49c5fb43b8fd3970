/* config_file.c — hubu.lua end to end: a real hubud started with --config
 * (or finding ./hubu.lua), its settings seen on the wire (HELLO_OK), flags
 * overriding the file, errors that name the file and line (exit 2, stderr),
 * and plugin sections reaching plugins (a CALL answered with the option). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

/* ---- temp dirs holding hubu.lua and plugins ------------------------------ */

#define MAX_DIRS 8
static char dirs[MAX_DIRS][64];
static int n_dirs;

static void remove_dirs(void) {
  for (int i = 0; i < n_dirs; i++) e2e_remove_tree(dirs[i]);
  n_dirs = 0;
}

/* A fresh dir with an empty plugins/ in it; removed at exit. */
static const char *make_dir(void) {
  REQUIRE(n_dirs < MAX_DIRS);
  if (n_dirs == 0) atexit(remove_dirs);
  char *d = dirs[n_dirs];
  snprintf(d, sizeof dirs[0], "/tmp/hubu-cfg-XXXXXX");
  REQUIRE(mkdtemp(d) != NULL);
  n_dirs++;
  char p[128];
  snprintf(p, sizeof p, "%s/plugins", d);
  REQUIRE(mkdir(p, 0700) == 0);
  return d;
}

/* Writes DIR/NAME; the path goes to out. */
static void write_file(const char *dir, const char *name, const char *text, char *out, size_t out_size) {
  snprintf(out, out_size, "%s/%s", dir, name);
  FILE *f = fopen(out, "w");
  REQUIRE(f != NULL);
  fputs(text, f);
  REQUIRE(fclose(f) == 0);
}

/* ---- hubud that is expected to refuse its config ------------------------- */

/* Runs hubud with args (NULL-terminated) plus harmless defaults, stderr in
 * out; waits up to 10 s. Returns the exit status, or -1 (killed) when it kept
 * running. */
static int run_hubud(char *out, size_t out_size, const char *dir, ...) {
  char data[128], plugins[128];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(plugins, sizeof plugins, "%s/plugins", dir);
  const char *argv[40];
  int n = 0;
  argv[n++] = HUBUD_PATH;
  va_list ap;
  va_start(ap, dir);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 28;) argv[n++] = a;
  va_end(ap);
  const char *defaults[] = {"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--secret", E2E_SECRET,
                            "--data",   data,          "--plugins",      plugins};
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) argv[n++] = defaults[i];
  argv[n] = NULL;

  int pfd[2];
  REQUIRE(pipe(pfd) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(pfd[1], 2);
    close(pfd[0]);
    execv(argv[0], (char **)argv);
    _exit(127);
  }
  close(pfd[1]);
  size_t used = 0;
  uint64_t deadline = e2e_now_ms() + 10000;
  for (;;) {
    int left = (int)(deadline - e2e_now_ms());
    if (left <= 0) break;
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    if (poll(&p, 1, left) <= 0) break;
    ssize_t r = read(pfd[0], out + used, out_size - 1 - used);
    if (r <= 0) break;
    used += (size_t)r;
    if (used == out_size - 1) break;
  }
  out[used] = '\0';
  close(pfd[0]);
  int st;
  if (waitpid(pid, &st, WNOHANG) == 0) {
    usleep(200 * 1000);
    if (waitpid(pid, &st, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define CHECK_STDERR_HAS(out, text) CHECKF(strstr((out), (text)) != NULL, "stderr lacks \"%s\":\n%s", (text), (out))

/* ---- frames --------------------------------------------------------------- */

static Hubu__V1__HelloOk *hello_ok(int port) {
  int fd = e2e_connect(port);
  REQUIRE(fd >= 0);
  REQUIRE(e2e_send_hello(fd, "alice", "d1", NULL) == 0);
  Hubu__V1__HelloOk *ok = NULL;
  REQUIRE(EXPECT_HELLO_OK(fd, &ok));
  close(fd);
  return ok;
}

/* CALL method on fd; the CALL_RESULT's payload (OK) into out, or "<code N>". */
static void call(int fd, const char *method, char *out, size_t out_size) {
  static uint64_t next_id = 1;
  Hubu__V1__Call c = HUBU__V1__CALL__INIT;
  c.request_id = next_id++;
  c.method = (char *)method;
  REQUIRE(e2e_send_msg(fd, HUBU_FRAME_CALL, &c.base) == 0);
  for (;;) {
    e2e_frame f;
    int r = e2e_read_frame(fd, E2E_WAIT_MS, &f);
    if (r != E2E_READ_OK) {
      e2e_fail(__FILE__, __LINE__, "no CALL_RESULT for %s: %s", method, e2e_read_result_name(r));
      e2e_abort();
    }
    if (f.type != HUBU_FRAME_CALL_RESULT) {
      e2e_frame_free(&f);
      continue;
    }
    Hubu__V1__CallResult *res = hubu__v1__call_result__unpack(NULL, f.len, f.body);
    e2e_frame_free(&f);
    REQUIRE(res != NULL);
    CHECK_EQ(res->request_id, c.request_id);
    if (res->code == HUBU__V1__CODE__OK)
      snprintf(out, out_size, "%.*s", (int)res->payload.len, (const char *)res->payload.data);
    else
      snprintf(out, out_size, "<code %d: %s>", (int)res->code, res->reason ? res->reason : "");
    hubu__v1__call_result__free_unpacked(res, NULL);
    return;
  }
}

/* A plugin answering call.NAME.hello with "greeting:word,word" from its options. */
static const char *greeter =
    "--% summary: answers NAME.hello with its configured greeting\n"
    "local greeting = plugin:option_string(\"greeting\", \"default\")\n"
    "local words = plugin:option_list(\"words\", {})\n"
    "local n = plugin:option_number(\"n\", 0)\n"
    "plugin:hook(\"call.\" .. _PLUGIN .. \".hello\", function(ev)\n"
    "  ev:reply(greeting .. \":\" .. table.concat(words, \",\") .. \":\" .. n)\n"
    "end)\n";

/* ---- cases ---------------------------------------------------------------- */

static void file_settings_reach_hello_ok(void) {
  const char *d = make_dir();
  char cfg[128];
  write_file(d, "hubu.lua",
             "-- a config file\n"
             "heartbeat_ms = 1234\n"
             "max_frame = 65536\n"
             "log_level = \"warn\"\n",
             cfg, sizeof cfg);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--config", cfg, NULL) == 0);
  Hubu__V1__HelloOk *ok = hello_ok(s.port);
  CHECK_EQ(ok->heartbeat_ms, 1234);
  CHECK_EQ(ok->max_frame, 65536);
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void flag_overrides_file(void) {
  const char *d = make_dir();
  char cfg[128];
  write_file(d, "hubu.lua", "heartbeat_ms = 1234\nmax_frame = 65536\nlisten = \"127.0.0.1:1\"\n", cfg, sizeof cfg);
  e2e_server s; /* the harness's --listen 127.0.0.1:0 overrides the file's port 1 too */
  REQUIRE(e2e_server_start(&s, "--config", cfg, "--heartbeat-ms", "4321", NULL) == 0);
  Hubu__V1__HelloOk *ok = hello_ok(s.port);
  CHECK_EQ(ok->heartbeat_ms, 4321);
  CHECK_EQ(ok->max_frame, 65536); /* not on the command line: the file's */
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void working_dir_hubu_lua_is_read_by_default(void) {
  const char *d = make_dir();
  char cfg[128], cwd[4096];
  write_file(d, "hubu.lua", "heartbeat_ms = 2345\n", cfg, sizeof cfg);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  REQUIRE(chdir(d) == 0);
  e2e_server s;
  int r = e2e_server_start(&s, NULL);
  REQUIRE(chdir(cwd) == 0);
  REQUIRE(r == 0);
  Hubu__V1__HelloOk *ok = hello_ok(s.port);
  CHECK_EQ(ok->heartbeat_ms, 2345);
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  /* --config off: the file is not read */
  REQUIRE(chdir(d) == 0);
  r = e2e_server_start(&s, "--config", "off", NULL);
  REQUIRE(chdir(cwd) == 0);
  REQUIRE(r == 0);
  ok = hello_ok(s.port);
  CHECK_EQ(ok->heartbeat_ms, 30000);
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void unknown_setting_exits_2_naming_file_and_line(void) {
  const char *d = make_dir();
  char cfg[128], out[8192];
  write_file(d, "hubu.lua", "heartbeat_ms = 1000\n\ncolour = \"blue\"\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:3: unknown setting 'colour'");
  CHECK_STDERR_HAS(out, cfg); /* the whole path */
  /* a flag's spelling is not a setting either */
  write_file(d, "hubu.lua", "max_conns = 5\nHeartbeat_ms = 10\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:2: unknown setting 'Heartbeat_ms'");
  /* so is an assignment made inside a function the file calls */
  write_file(d, "hubu.lua", "local function f()\n  bogus = 1\nend\nf()\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:2: unknown setting 'bogus'");
}

static void type_error_names_the_line(void) {
  const char *d = make_dir();
  char cfg[128], out[8192];
  write_file(d, "hubu.lua", "max_conns = 5\nheartbeat_ms = \"fast\"\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:2: setting 'heartbeat_ms' must be a number, not a string");
  write_file(d, "hubu.lua", "\n\n\nlisten = 7700\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:4: setting 'listen' must be a string, not a number");
  write_file(d, "hubu.lua", "drain_ms = 1.5\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:1: setting 'drain_ms' must be a whole number");
  write_file(d, "hubu.lua", "plugin \"x\" \"not a table\"\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:1: plugin 'x': the section must be a table");
  write_file(d, "hubu.lua", "plugin \"x\" {}\n\nplugin \"x\" {}\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:3: plugin 'x' is configured twice (first at line 1)");
  write_file(d, "hubu.lua", "plugin \"x\" { f = tostring }\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:1: plugin 'x': option 'f' holds a function");
}

static void invalid_value_names_the_line(void) {
  const char *d = make_dir();
  char cfg[128], out[8192];
  write_file(d, "hubu.lua", "max_conns = 5\n\nheartbeat_ms = 5 -- below the minimum of 10\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:3: setting 'heartbeat_ms': invalid value '5'");
  write_file(d, "hubu.lua", "fsync = \"sometimes\"\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:1: setting 'fsync': invalid value 'sometimes'");
  /* a syntax error and a runtime error of the file name their line too */
  write_file(d, "hubu.lua", "max_conns = 5\nheartbeat_ms = = 3\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:2:");
  write_file(d, "hubu.lua", "\nerror(\"no config for you\")\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "hubu.lua:2: no config for you");
  /* an endless loop is stopped */
  write_file(d, "hubu.lua", "while true do end\n", cfg, sizeof cfg);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "runs for too long");
  /* an explicit --config that is not there */
  snprintf(cfg, sizeof cfg, "%s/missing.lua", d);
  CHECK_EQ(run_hubud(out, sizeof out, d, "--config", cfg, NULL), 2);
  CHECK_STDERR_HAS(out, "missing.lua");
}

static void sandbox_has_getenv_but_no_io_os_or_require(void) {
  const char *d = make_dir();
  char cfg[128];
  setenv("HUBU_CFG_TEST_HEARTBEAT", "3456", 1);
  write_file(d, "hubu.lua",
             "assert(io == nil and require == nil and dofile == nil and loadstring == nil and debug == nil)\n"
             "assert(os.execute == nil and os.exit == nil and getfenv == nil and rawset == nil)\n"
             "assert(os.getenv(\"HUBU_CFG_TEST_UNSET_VARIABLE\") == nil)\n"
             "heartbeat_ms = tonumber(os.getenv(\"HUBU_CFG_TEST_HEARTBEAT\"))\n"
             "max_frame = 1024 * 64\n"
             "assert(max_frame == 65536) -- settings read back\n"
             "secret = os.getenv(\"HUBU_CFG_TEST_UNSET_VARIABLE\") -- nil: the default stays\n",
             cfg, sizeof cfg);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--config", cfg, NULL) == 0);
  Hubu__V1__HelloOk *ok = hello_ok(s.port);
  CHECK_EQ(ok->heartbeat_ms, 3456);
  CHECK_EQ(ok->max_frame, 65536);
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

/* --store (and the store setting) chooses the database; the default is
 * sqlite:DATA/hubu.db; a URL no backend serves stops the start, naming it. */
static void store_url_chooses_the_database_file(void) {
  const char *d = make_dir();
  char url[256], file[192], default_db[160], cfg[128], out[4096];
  snprintf(file, sizeof file, "%s/elsewhere/chat.db", d);
  snprintf(url, sizeof url, "sqlite:%s", file);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--store", url, NULL) == 0);
  Hubu__V1__HelloOk *ok = hello_ok(s.port); /* the device load reads the store */
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
  snprintf(default_db, sizeof default_db, "%s/data/hubu.db", s.dir);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  CHECKF(access(file, F_OK) == 0, "no database at %s", file);
  CHECKF(access(default_db, F_OK) != 0, "the default database %s was made too", default_db);

  snprintf(file, sizeof file, "%s/from-file.db", d);
  char text[256];
  snprintf(text, sizeof text, "store = \"sqlite:%s\"\n", file);
  write_file(d, "store.lua", text, cfg, sizeof cfg);
  REQUIRE(e2e_server_start(&s, "--config", cfg, NULL) == 0);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  CHECKF(access(file, F_OK) == 0, "no database at %s (hubu.lua's store)", file);

  int st = run_hubud(out, sizeof out, d, "--config", "off", "--store", "nosuch://db.example/chat", NULL);
  CHECK_EQ(st, 1);
  CHECK_STDERR_HAS(out, "no store backend for the scheme \"nosuch:\"");
}

static void plugin_section_reaches_plugin(void) {
  const char *d = make_dir();
  char cfg[128], path[128], plugins[128], got[256];
  snprintf(plugins, sizeof plugins, "%s/plugins", d);
  write_file(d, "plugins/greet.lua", greeter, path, sizeof path);
  write_file(d, "plugins/plain.lua", greeter, path, sizeof path);
  write_file(d, "hubu.lua",
             "plugin \"greet\" {\n"
             "  greeting = \"hej\",\n"
             "  words = { \"a\", \"b\" },\n"
             "  n = 7,\n"
             "}\n"
             "plugin \"absent\" { greeting = \"nobody reads this\" }\n",
             cfg, sizeof cfg);
  e2e_server s;
  REQUIRE(e2e_server_start(&s, "--config", cfg, "--plugins", plugins, NULL) == 0);
  int fd = CONNECT_HELLO(s.port, "alice");
  REQUIRE(fd >= 0);
  call(fd, "greet.hello", got, sizeof got);
  CHECKF(!strcmp(got, "hej:a,b:7"), "greet.hello answered '%s'", got);
  call(fd, "plain.hello", got, sizeof got);
  CHECKF(!strcmp(got, "default::0"), "plain.hello answered '%s'", got);

  /* A reload (SIGHUP) reads the section again. */
  write_file(d, "hubu.lua", "plugin \"greet\" { greeting = \"moi\" }\n", cfg, sizeof cfg);
  e2e_server_signal(&s, SIGHUP);
  uint64_t deadline = e2e_now_ms() + 3000;
  do {
    e2e_sleep_ms(20);
    call(fd, "greet.hello", got, sizeof got);
  } while (strcmp(got, "moi::0") != 0 && e2e_now_ms() < deadline);
  CHECKF(!strcmp(got, "moi::0"), "after the reload greet.hello answered '%s'", got);

  /* A file broken meanwhile fails the reload and keeps what runs. */
  write_file(d, "hubu.lua", "plugin \"greet\" { greeting = \"oops\" }\ntypo = 1\n", cfg, sizeof cfg);
  e2e_server_signal(&s, SIGHUP);
  e2e_sleep_ms(300);
  call(fd, "greet.hello", got, sizeof got);
  CHECKF(!strcmp(got, "moi::0"), "after a broken config greet.hello answered '%s'", got);
  CHECK(EXPECT_ALIVE(fd, 9));
  close(fd);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static const e2e_case cases[] = {
    E2E_CASE(file_settings_reach_hello_ok),
    E2E_CASE(flag_overrides_file),
    E2E_CASE(working_dir_hubu_lua_is_read_by_default),
    E2E_CASE(unknown_setting_exits_2_naming_file_and_line),
    E2E_CASE(type_error_names_the_line),
    E2E_CASE(invalid_value_names_the_line),
    E2E_CASE(sandbox_has_getenv_but_no_io_os_or_require),
    E2E_CASE(plugin_section_reaches_plugin),
    E2E_CASE(store_url_chooses_the_database_file),
};

int main(int argc, char **argv) { return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

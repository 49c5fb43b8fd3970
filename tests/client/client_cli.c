/* client_cli.c — the `hubu` terminal client as a user runs it: child
 * processes against a real hubud, judged by their output and exit status. */
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

#include "harness.h"

#ifndef HUBU_CLI_PATH
#error "HUBU_CLI_PATH must name the hubu binary"
#endif

/* One hubu child: its pipes and what it printed so far. */
typedef struct {
  pid_t pid;
  int out_fd, err_fd; /* -1 once at EOF */
  char out[32768], err[32768];
  size_t n_out, n_err;
  int status; /* exit status once collected, as e2e_server_stop reports it */
} proc;

static void proc_start(proc *p, const char *stdin_text, char *const argv[]) {
  memset(p, 0, sizeof *p);
  int in[2], out[2], err[2];
  REQUIRE(pipe(in) == 0 && pipe(out) == 0 && pipe(err) == 0);
  fprintf(stderr, "  $");
  for (int i = 0; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
  fprintf(stderr, "%s\n", stdin_text ? " < (pipe)" : "");
  p->pid = fork();
  REQUIRE(p->pid >= 0);
  if (p->pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    if (!stdin_text) {
      int null = open("/dev/null", O_RDONLY);
      if (null >= 0) dup2(null, 0);
    }
    signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (stdin_text) {
    size_t n = strlen(stdin_text);
    CHECK(write(in[1], stdin_text, n) == (ssize_t)n);
  }
  close(in[1]);
  p->out_fd = out[0];
  p->err_fd = err[0];
}

/* Reads whatever the child printed, for up to ms. */
static void proc_pump(proc *p, int ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)ms;
  while (p->out_fd >= 0 || p->err_fd >= 0) {
    struct pollfd fds[2] = {{p->out_fd, POLLIN, 0}, {p->err_fd, POLLIN, 0}};
    uint64_t now = e2e_now_ms();
    if (now >= deadline) return;
    int r = poll(fds, 2, (int)(deadline - now));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    for (int i = 0; i < 2; i++) {
      if (!fds[i].revents || fds[i].fd < 0) continue;
      char *buf = i == 0 ? p->out : p->err;
      size_t *n = i == 0 ? &p->n_out : &p->n_err;
      char scratch[4096];
      ssize_t got = read(fds[i].fd, scratch, sizeof scratch);
      if (got <= 0) {
        close(fds[i].fd);
        if (i == 0)
          p->out_fd = -1;
        else
          p->err_fd = -1;
        continue;
      }
      size_t room = sizeof p->out - 1 - *n;
      size_t take = (size_t)got < room ? (size_t)got : room;
      memcpy(buf + *n, scratch, take);
      *n += take;
      buf[*n] = '\0';
    }
  }
}

/* Waits for the exit (killing the child after timeout_ms); the exit status, or -1. */
static int proc_wait(proc *p, int timeout_ms) {
  uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
  int st = 0;
  for (;;) {
    proc_pump(p, 20);
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) break;
    if (e2e_now_ms() >= deadline) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, &st, 0);
      fprintf(stderr, "  hubu killed after %d ms\n", timeout_ms);
      st = -1;
      break;
    }
  }
  proc_pump(p, 200);
  if (p->out_fd >= 0) close(p->out_fd);
  if (p->err_fd >= 0) close(p->err_fd);
  p->out_fd = p->err_fd = -1;
  p->status = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  fprintf(stderr, "  exit %d\n  stdout: %s  stderr: %s\n", p->status, p->out, p->err);
  return p->status;
}

/* hubu --port PORT --user USER --secret test-secret ARGS... (NULL-terminated). */
static int run_hubu(proc *p, const char *stdin_text, int port, const char *user, ...) {
  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", port);
  char *argv[48];
  int n = 0;
  argv[n++] = HUBU_CLI_PATH;
  argv[n++] = "--port";
  argv[n++] = port_s;
  argv[n++] = "--user";
  argv[n++] = (char *)user;
  argv[n++] = "--secret";
  argv[n++] = E2E_SECRET;
  va_list ap;
  va_start(ap, user);
  for (const char *a; n < 47 && (a = va_arg(ap, const char *)) != NULL;) argv[n++] = (char *)a;
  va_end(ap);
  argv[n] = NULL;
  proc_start(p, stdin_text, argv);
  return 0;
}

static void temp_dir_make(char *dir, size_t size) {
  snprintf(dir, size, "/tmp/hubu-cli-XXXXXX");
  REQUIRE(mkdtemp(dir) != NULL);
}

static void temp_dir_remove(const char *dir) { e2e_remove_tree(dir); }

#define CLI_WAIT_MS 20000

/* ---- cases ---- */

static void cli_send_then_history_shows_the_message(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  proc p;
  run_hubu(&p, NULL, s.port, "alice", "--outbox", "none", "send", "bob", "hello", "from the cli", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  CHECKF(strstr(p.out, "d:alice:bob seq 1") != NULL, "send printed: %s", p.out);

  run_hubu(&p, NULL, s.port, "bob", "history", "alice", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  CHECKF(strstr(p.out, "d:alice:bob 1 alice: hello from the cli\n") != NULL, "history printed: %s", p.out);

  run_hubu(&p, NULL, s.port, "bob", "history", "d:alice:bob", "--after", "1", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  CHECKF(p.n_out == 0, "history --after 1 printed: %s", p.out);

  run_hubu(&p, NULL, s.port, "bob", "sessions", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  CHECKF(strstr(p.out, "d:alice:bob max_seq 1 direct") != NULL, "sessions printed: %s", p.out);
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void cli_interactive_sends_lines_read_from_a_pipe(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  char dir[64], outbox[128];
  temp_dir_make(dir, sizeof dir);
  snprintf(outbox, sizeof outbox, "%s/alice.outbox", dir);
  proc p;
  run_hubu(&p, "no peer yet\n/to bob\nfirst line\nsecond line\n/quit\nnot sent\n", s.port, "alice", "--outbox", outbox,
           NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  CHECKF(strstr(p.err, "choose a peer") != NULL, "stderr: %s", p.err);

  run_hubu(&p, NULL, s.port, "bob", "history", "alice", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  CHECK(strstr(p.out, "d:alice:bob 1 alice: first line\nd:alice:bob 2 alice: second line\n") != NULL);
  CHECK(strstr(p.out, "not sent") == NULL);
  CHECK(strstr(p.out, "no peer yet") == NULL);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  temp_dir_remove(dir);
}

static void cli_tail_prints_messages_sent_after_it_started(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  proc p;
  run_hubu(&p, NULL, s.port, "alice", "--outbox", "none", "send", "bob", "old news", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);

  proc tail;
  run_hubu(&tail, NULL, s.port, "bob", "-v", "tail", "--count", "2", "--timeout-ms", "15000", NULL);
  uint64_t deadline = e2e_now_ms() + 10000;
  while (!strstr(tail.err, "hubu: live") && e2e_now_ms() < deadline) proc_pump(&tail, 50);
  CHECKF(strstr(tail.err, "hubu: live") != NULL, "tail stderr: %s", tail.err);

  run_hubu(&p, NULL, s.port, "alice", "--outbox", "none", "send", "bob", "fresh", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);
  run_hubu(&p, NULL, s.port, "carol", "--outbox", "none", "send", "bob", "from carol", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 0);

  CHECK_EQ(proc_wait(&tail, CLI_WAIT_MS), 0);
  CHECKF(strstr(tail.out, "d:alice:bob 2 alice: fresh\n") != NULL, "tail printed: %s", tail.out);
  CHECKF(strstr(tail.out, "d:bob:carol 1 carol: from carol\n") != NULL, "tail printed: %s", tail.out);
  CHECK(strstr(tail.out, "old news") == NULL); /* tail starts at the present */
  CHECK_SERVER_STOPS_CLEANLY(&s);
}

static void cli_exit_codes_tell_refusal_bad_token_and_no_server_apart(void) {
  e2e_server s;
  REQUIRE(e2e_server_start(&s, NULL) == 0);
  proc p;
  run_hubu(&p, NULL, s.port, "alice", "--outbox", "none", "send", "d:bob:carol", "not mine", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 1);
  CHECKF(strstr(p.err, "FORBIDDEN") != NULL, "stderr: %s", p.err);

  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", s.port);
  char *bad_token[] = {HUBU_CLI_PATH,   "--port",   port_s, "--user",   "alice", "--token",
                       "v1.alice.1.00", "--outbox", "none", "sessions", NULL};
  proc_start(&p, NULL, bad_token);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 4);

  run_hubu(&p, NULL, s.port, "alice", "frobnicate", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 2);
  CHECK_SERVER_STOPS_CLEANLY(&s);

  int port = e2e_free_port();
  REQUIRE(port > 0);
  run_hubu(&p, NULL, port, "alice", "--timeout-ms", "500", "sessions", NULL);
  CHECK_EQ(proc_wait(&p, CLI_WAIT_MS), 3);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(cli_send_then_history_shows_the_message),
      E2E_CASE(cli_interactive_sends_lines_read_from_a_pipe),
      E2E_CASE(cli_tail_prints_messages_sent_after_it_started),
      E2E_CASE(cli_exit_codes_tell_refusal_bad_token_and_no_server_apart),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}

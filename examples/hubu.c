/* hubu.c — the terminal chat client, and the smallest complete program on
 * libhubu-client: one loop, one client, stdin read through libuv so the loop
 * never blocks. Commands: send, tail, history, sessions; without one it is
 * interactive. Invariant: every way out goes through app_finish, which closes
 * every handle (and the client) so uv_run returns and the loop closes cleanly. */
#include <errno.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "hubu.pb-c.h"
#include "hubu_client.h"
#include "secret.h"
#include "token.h"
#include "wire.h"

enum {
  EXIT_OK = 0,
  EXIT_REFUSED = 1, /* the server answered with an error code */
  EXIT_USAGE = 2,
  EXIT_UNREACHABLE = 3, /* no answer in time */
  EXIT_AUTH = 4,        /* the token was refused */
  EXIT_LOCAL = 5,       /* secret or outbox file problems */
  EXIT_INTERRUPTED = 130,
};

typedef enum { CMD_INTERACTIVE, CMD_SEND, CMD_TAIL, CMD_HISTORY, CMD_SESSIONS } command;

#define MAX_FILTER 64
#define LINE_MAX_BYTES 65536
#define SESSION_MAX 160

/* Everything the program holds. The handles are closed by app_finish; the
 * client frees itself after hubu_client_close. */
typedef struct {
  uv_loop_t *loop;
  hubu_client *client; /* NULL once closed */
  command cmd;
  const char *user;
  int verbose;
  int finished;
  int exit_code;

  uv_signal_t sigint;
  uv_timer_t deadline; /* --timeout-ms */
  int deadline_on;

  /* send */
  char send_session[SESSION_MAX];
  char *send_text; /* owned */
  uint64_t send_id;
  int send_answered;
  int send_code;

  /* tail and interactive */
  char filter[MAX_FILTER][SESSION_MAX];
  int n_filter;
  long count; /* --count: stop after this many messages (0: no limit) */
  long printed;
  int live; /* cursors have been set to the server's max_seq */

  /* history */
  char history_session[SESSION_MAX];
  uint64_t after;
  uint32_t limit;

  /* interactive */
  char peer[SESSION_MAX];
  union {
    uv_tty_t tty;
    uv_pipe_t pipe;
  } in;
  int in_kind; /* 0: none, 1: tty, 2: pipe, 3: regular file (uv_fs_read) */
  int in_open;
  uv_fs_t file_req;
  int file_reading;
  int64_t file_offset;
  char file_buf[4096];
  char line[LINE_MAX_BYTES];
  size_t line_len;
  int input_done; /* EOF or /quit: finish once nothing is pending */
  int any_failed;
} app;

static void app_finish(app *a, int code);

static void on_client_closed(void *ud) { (void)ud; }

static void on_handle_closed(uv_handle_t *h) { (void)h; }

/* ---- output ---- */

/* Writes body as text: control bytes other than tab become '?'. */
static void print_text(FILE *f, const uint8_t *body, size_t len) {
  for (size_t i = 0; i < len; i++) {
    uint8_t ch = body[i];
    fputc(ch < 0x20 && ch != '\t' ? '?' : ch == 0x7f ? '?' : (int)ch, f);
  }
}

static void print_message(const hubu_client_message *m) {
  printf("%s %llu %s: ", m->session_id, (unsigned long long)m->seq, m->sender);
  print_text(stdout, m->body, m->body_len);
  putchar('\n');
  fflush(stdout);
}

static const char *code_name(int code) { return hubu_code_name((Hubu__V1__Code)code); }

/* ---- peers and sessions ---- */

/* TO is a session id (it has a ':') or a user: the direct session of the two. */
static int resolve_peer(const char *me, const char *to, char *out, size_t out_size) {
  if (strchr(to, ':')) {
    if (strlen(to) >= out_size) return -1;
    snprintf(out, out_size, "%s", to);
    return 0;
  }
  if (!hubu_id_valid(to, strlen(to)) || strcmp(me, to) == 0) return -1;
  const char *a = strcmp(me, to) < 0 ? me : to, *b = a == me ? to : me;
  snprintf(out, out_size, "d:%s:%s", a, b);
  return 0;
}

static int filter_match(const app *a, const char *session) {
  if (a->n_filter == 0) return 1;
  for (int i = 0; i < a->n_filter; i++)
    if (strcmp(a->filter[i], session) == 0) return 1;
  return 0;
}

/* ---- callbacks ---- */

static void maybe_finish_sends(app *a) {
  if (a->cmd == CMD_SEND && a->send_answered && hubu_client_pending(a->client) == 0)
    app_finish(a, a->send_code == 0 ? EXIT_OK : EXIT_REFUSED);
  if (a->cmd == CMD_INTERACTIVE && a->input_done && hubu_client_pending(a->client) == 0)
    app_finish(a, a->any_failed ? EXIT_REFUSED : EXIT_OK);
}

static void on_stored(hubu_client *c, uint64_t client_id, const char *session_id, uint64_t seq, uint64_t msg_id,
                      int duplicate, void *ud) {
  (void)c;
  (void)msg_id;
  app *a = ud;
  if (a->cmd == CMD_SEND && client_id == a->send_id) {
    printf("%s seq %llu%s\n", session_id, (unsigned long long)seq, duplicate ? " (duplicate)" : "");
    fflush(stdout);
    a->send_answered = 1;
  } else {
    fprintf(stderr, "[stored %s seq %llu]\n", session_id, (unsigned long long)seq);
  }
  maybe_finish_sends(a);
}

static void on_failed(hubu_client *c, uint64_t client_id, int code, const char *reason, void *ud) {
  (void)c;
  app *a = ud;
  fprintf(stderr, "hubu: message %llu refused: %s%s%s\n", (unsigned long long)client_id, code_name(code),
          reason && reason[0] ? ": " : "", reason ? reason : "");
  a->any_failed = 1;
  if (a->cmd == CMD_SEND && client_id == a->send_id) {
    a->send_answered = 1;
    a->send_code = code;
  }
  maybe_finish_sends(a);
}

static void on_received(hubu_client *c, const hubu_client_message *m, void *ud) {
  (void)c;
  app *a = ud;
  if (a->cmd != CMD_TAIL && a->cmd != CMD_INTERACTIVE) return;
  if (!filter_match(a, m->session_id)) return;
  print_message(m);
  a->printed++;
  if (a->count > 0 && a->printed >= a->count) app_finish(a, EXIT_OK);
}

static void on_state(hubu_client *c, hubu_client_state st, int code, const char *reason, void *ud) {
  (void)c;
  app *a = ud;
  if (a->verbose) fprintf(stderr, "hubu: %s %s %s\n", hubu_client_state_name(st), code ? code_name(code) : "", reason);
  if (code == HUBU__V1__CODE__UNAUTHENTICATED) {
    fprintf(stderr, "hubu: authentication refused: %s\n", reason);
    app_finish(a, EXIT_AUTH);
  }
}

static void on_history(hubu_client *c, int code, const hubu_client_message *msgs, size_t n, uint64_t max_seq,
                       int has_more, void *ud) {
  (void)c;
  app *a = ud;
  if (code != 0) {
    fprintf(stderr, "hubu: history: %s\n", code_name(code));
    if (a->cmd == CMD_HISTORY) app_finish(a, code == HUBU__V1__CODE__UNAVAILABLE ? EXIT_UNREACHABLE : EXIT_REFUSED);
    return;
  }
  for (size_t i = 0; i < n; i++) print_message(&msgs[i]);
  if (has_more && n > 0)
    fprintf(stderr, "(more: --after %llu; newest seq %llu)\n", (unsigned long long)msgs[n - 1].seq,
            (unsigned long long)max_seq);
  if (a->cmd == CMD_HISTORY) app_finish(a, EXIT_OK);
}

static void on_sessions(hubu_client *c, int code, const hubu_client_session_state *st, size_t n, void *ud) {
  (void)c;
  app *a = ud;
  if (code != 0) {
    fprintf(stderr, "hubu: sessions: %s\n", code_name(code));
    if (a->cmd == CMD_SESSIONS) app_finish(a, code == HUBU__V1__CODE__UNAVAILABLE ? EXIT_UNREACHABLE : EXIT_REFUSED);
    return;
  }
  for (size_t i = 0; i < n; i++)
    printf("%s max_seq %llu %s\n", st[i].session_id, (unsigned long long)st[i].max_seq, st[i].kind);
  fflush(stdout);
  if (a->cmd == CMD_SESSIONS) app_finish(a, EXIT_OK);
}

/* Tail and interactive start at the present: every session's cursor at its
 * max_seq, so only what arrives from now on is printed. */
static void on_start_cursors(hubu_client *c, int code, const hubu_client_session_state *st, size_t n, void *ud) {
  app *a = ud;
  if (code != 0) {
    fprintf(stderr, "hubu: sessions: %s\n", code_name(code));
    return; /* the next HELLO_OK asks again */
  }
  for (size_t i = 0; i < n; i++)
    if (st[i].max_seq > hubu_client_cursor(c, st[i].session_id))
      hubu_client_set_cursor(c, st[i].session_id, st[i].max_seq);
  a->live = 1;
  if (a->verbose) fprintf(stderr, "hubu: live (%zu sessions)\n", n);
}

static void on_ready(hubu_client *c, const hubu_client_hello_info *info, void *ud) {
  (void)info;
  app *a = ud;
  int r = 0;
  switch (a->cmd) {
    case CMD_HISTORY: r = hubu_client_pull(c, a->history_session, a->after, a->limit, on_history, a); break;
    case CMD_SESSIONS: r = hubu_client_list_sessions(c, on_sessions, a); break;
    case CMD_TAIL:
    case CMD_INTERACTIVE:
      /* First connection: start at the present. Later ones: catch up on
       * what was missed while disconnected. */
      r = a->live ? hubu_client_sync(c) : hubu_client_list_sessions(c, on_start_cursors, a);
      break;
    case CMD_SEND: break;
  }
  if (r < 0) fprintf(stderr, "hubu: request failed: %s\n", uv_strerror(r));
}

/* ---- interactive input ---- */

static void input_stop(app *a) {
  if (a->in_open && a->in_kind != 3) {
    uv_read_stop((uv_stream_t *)&a->in);
    if (a->in_kind == 1) uv_tty_reset_mode();
    uv_close((uv_handle_t *)&a->in, on_handle_closed);
  }
  a->in_open = 0;
}

static void input_done(app *a) {
  a->input_done = 1;
  input_stop(a);
  maybe_finish_sends(a);
}

static void print_help(void) {
  fprintf(stderr,
          "/to USER | /to g:NAME   choose who your lines go to\n"
          "/history [N]            the last N messages (default 20) with them\n"
          "/sessions               your sessions\n"
          "/quit                   leave (after pending messages are stored)\n");
}

static void handle_line(app *a, char *line) {
  size_t n = strlen(line);
  while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = '\0';
  if (n == 0) return;
  if (line[0] == '/') {
    char *arg = strchr(line, ' ');
    if (arg) {
      *arg++ = '\0';
      while (*arg == ' ') arg++;
    }
    if (!strcmp(line, "/quit")) {
      input_done(a);
    } else if (!strcmp(line, "/to") && arg && *arg) {
      if (resolve_peer(a->user, arg, a->peer, sizeof a->peer) != 0) {
        fprintf(stderr, "hubu: '%s' is neither a user nor a session id\n", arg);
        a->peer[0] = '\0';
      } else {
        fprintf(stderr, "[talking in %s]\n", a->peer);
      }
    } else if (!strcmp(line, "/history")) {
      if (!a->peer[0]) {
        fprintf(stderr, "hubu: choose a peer first: /to USER\n");
        return;
      }
      long want = arg && *arg ? strtol(arg, NULL, 10) : 20;
      if (want <= 0) want = 20;
      uint64_t cur = hubu_client_cursor(a->client, a->peer);
      uint64_t after = cur > (uint64_t)want ? cur - (uint64_t)want : 0;
      int r = hubu_client_pull(a->client, a->peer, after, (uint32_t)want, on_history, a);
      if (r < 0) fprintf(stderr, "hubu: history: %s\n", uv_strerror(r));
    } else if (!strcmp(line, "/sessions")) {
      int r = hubu_client_list_sessions(a->client, on_sessions, a);
      if (r < 0) fprintf(stderr, "hubu: sessions: %s\n", uv_strerror(r));
    } else {
      print_help();
    }
    return;
  }
  if (!a->peer[0]) {
    fprintf(stderr, "hubu: choose a peer first: /to USER or /to g:NAME\n");
    return;
  }
  if (!hubu_client_send_message(a->client, a->peer, (const uint8_t *)line, n, "text/plain", 0, NULL, NULL))
    fprintf(stderr, "hubu: cannot queue the message\n");
}

/* Splits what was read into lines; a line longer than the buffer is cut. */
static void input_feed(app *a, const char *data, size_t len) {
  for (size_t i = 0; i < len && !a->finished && !a->input_done; i++) {
    if (data[i] == '\n' || a->line_len == sizeof a->line - 1) {
      a->line[a->line_len] = '\0';
      a->line_len = 0;
      handle_line(a, a->line);
      if (data[i] == '\n') continue;
    }
    a->line[a->line_len++] = data[i];
  }
}

static void input_eof(app *a) {
  if (a->line_len > 0 && !a->input_done) {
    a->line[a->line_len] = '\0';
    a->line_len = 0;
    handle_line(a, a->line);
  }
  if (!a->finished) input_done(a);
}

static void on_input_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  app *a = h->data;
  *buf = uv_buf_init(a->file_buf, sizeof a->file_buf);
}

static void on_input_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  app *a = s->data;
  if (nread > 0) input_feed(a, buf->base, (size_t)nread);
  if (nread < 0) input_eof(a);
}

static void file_read_next(app *a);

static void on_file_read(uv_fs_t *req) {
  app *a = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  a->file_reading = 0;
  if (a->finished) return;
  if (n > 0) {
    a->file_offset += n;
    input_feed(a, a->file_buf, (size_t)n);
    if (!a->finished && !a->input_done) file_read_next(a);
    return;
  }
  input_eof(a);
}

static void file_read_next(app *a) {
  uv_buf_t b = uv_buf_init(a->file_buf, sizeof a->file_buf);
  a->file_req.data = a;
  if (uv_fs_read(a->loop, &a->file_req, 0, &b, 1, a->file_offset, on_file_read) == 0)
    a->file_reading = 1;
  else
    input_eof(a);
}

static int input_start(app *a) {
  uv_handle_type t = uv_guess_handle(0);
  int r;
  if (t == UV_TTY) {
    r = uv_tty_init(a->loop, &a->in.tty, 0, 1);
    a->in_kind = 1;
  } else if (t == UV_NAMED_PIPE || t == UV_TCP || t == UV_UDP) {
    r = uv_pipe_init(a->loop, &a->in.pipe, 0);
    if (r == 0) {
      a->in_open = 1; /* from here on input_stop closes it */
      r = uv_pipe_open(&a->in.pipe, 0);
    }
    a->in_kind = 2;
  } else if (t == UV_FILE) {
    a->in_kind = 3;
    file_read_next(a);
    return 0;
  } else {
    input_done(a); /* no usable stdin (closed): nothing to send */
    return 0;
  }
  if (r == 0) {
    a->in_open = 1;
    ((uv_handle_t *)&a->in)->data = a;
    r = uv_read_start((uv_stream_t *)&a->in, on_input_alloc, on_input_read);
  }
  if (r != 0) {
    fprintf(stderr, "hubu: stdin: %s\n", uv_strerror(r));
    return -1;
  }
  return 0;
}

/* ---- the end ---- */

static void app_finish(app *a, int code) {
  if (a->finished) return;
  a->finished = 1;
  a->exit_code = code;
  input_stop(a);
  if (a->file_reading) uv_cancel((uv_req_t *)&a->file_req);
  if (a->deadline_on) uv_close((uv_handle_t *)&a->deadline, on_handle_closed);
  a->deadline_on = 0;
  uv_close((uv_handle_t *)&a->sigint, on_handle_closed);
  if (a->client) hubu_client_close(a->client, on_client_closed);
  a->client = NULL;
}

static void on_deadline(uv_timer_t *t) {
  app *a = t->data;
  if (a->cmd == CMD_TAIL && a->count == 0) {
    app_finish(a, EXIT_OK); /* tail --timeout-ms without --count: a bounded watch */
    return;
  }
  if (a->cmd == CMD_SEND && a->send_answered) {
    app_finish(a, a->send_code == 0 ? EXIT_OK : EXIT_REFUSED); /* others stay in the outbox */
    return;
  }
  fprintf(stderr, "hubu: timed out\n");
  app_finish(a, EXIT_UNREACHABLE);
}

static void on_sigint(uv_signal_t *s, int signum) {
  (void)signum;
  app *a = s->data;
  int quiet_exit = a->cmd == CMD_TAIL || a->cmd == CMD_INTERACTIVE;
  app_finish(a, quiet_exit ? EXIT_OK : EXIT_INTERRUPTED);
}

/* ---- main ---- */

static int usage(void) {
  fprintf(stderr,
          "usage: hubu [options] [command]\n"
          "  send TO TEXT...                 send TEXT to user TO (or session id TO, e.g. g:team)\n"
          "  tail [SESSION|USER...]          print new messages (--count N, --timeout-ms N)\n"
          "  history SESSION|USER            print stored messages (--after N, --limit N)\n"
          "  sessions                        list your sessions\n"
          "  (no command)                    interactive: /to USER, /history, /sessions, /quit\n"
          "options:\n"
          "  --host HOST --port PORT --tls [--ca FILE | --insecure]\n"
          "  --user USER [--device DEVICE (default cli)]\n"
          "  --token TOKEN | --secret SECRET|@FILE | --data DIR (reads DIR/secret)\n"
          "  --outbox FILE|none              unacknowledged sends survive a restart\n"
          "                                  (default ~/.hubu/USER-DEVICE.outbox)\n"
          "  --timeout-ms N                  give up after N ms (send, history, sessions: 15000)\n"
          "  -v                              print connection state changes\n"
          "exit: 0 ok, 1 refused by the server, 2 usage, 3 unreachable or timed out,\n"
          "      4 authentication refused, 5 local file problem, 130 interrupted\n");
  return EXIT_USAGE;
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || !*s || *end || s[0] == '-') return -1;
  *out = v;
  return 0;
}

/* Mints a token for user from secret bytes (valid for an hour). */
static int mint(const uint8_t *secret, size_t secret_len, const char *user, char *out, size_t out_size) {
  uint64_t expiry = hubu_now_ms() / 1000 + 3600;
  return hubu_token_mint(secret, secret_len, user, expiry, out, out_size) < 0 ? -1 : 0;
}

static int mint_from_file(const char *path, const char *user, char *out, size_t out_size) {
  uint8_t *secret = NULL;
  size_t len = 0;
  if (hubu_secret_read_file(path, &secret, &len) != 0) {
    fprintf(stderr, "hubu: cannot read the secret from %s\n", path);
    return -1;
  }
  int r = mint(secret, len, user, out, out_size);
  OPENSSL_cleanse(secret, len);
  free(secret);
  return r;
}

/* ~/.hubu/USER-DEVICE.outbox, creating ~/.hubu; "" when there is no home. */
static void default_outbox(const char *user, const char *device, char *out, size_t out_size) {
  const char *home = getenv("HOME");
  out[0] = '\0';
  if (!home || !home[0]) return;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/.hubu", home);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return;
  snprintf(out, out_size, "%s/%s-%s.outbox", dir, user, device);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *user = NULL, *device = "cli", *token = NULL, *secret = NULL, *data = NULL;
  const char *outbox = NULL, *ca = NULL;
  uint64_t port = 0, timeout_ms = 0, count = 0, after = 0, limit = 50;
  int tls = 0, insecure = 0, verbose = 0, timeout_given = 0, only_positional = 0;
  const char *pos[256];
  int n_pos = 0;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (only_positional || arg[0] != '-' || arg[1] == '\0') {
      if (n_pos == (int)(sizeof pos / sizeof pos[0])) return usage();
      pos[n_pos++] = arg;
      continue;
    }
    if (!strcmp(arg, "--")) {
      only_positional = 1;
      continue;
    }
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
      usage();
      return EXIT_OK;
    }
    if (!strcmp(arg, "--tls")) {
      tls = 1;
      continue;
    }
    if (!strcmp(arg, "--insecure")) {
      insecure = 1;
      continue;
    }
    if (!strcmp(arg, "-v")) {
      verbose = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "hubu: %s needs a value\n", arg);
      return usage();
    }
    const char *v = argv[++i];
    int bad = 0;
    if (!strcmp(arg, "--host"))
      host = v;
    else if (!strcmp(arg, "--port"))
      bad = parse_u64(v, &port) || port == 0 || port > 65535;
    else if (!strcmp(arg, "--ca"))
      ca = v;
    else if (!strcmp(arg, "--user"))
      user = v;
    else if (!strcmp(arg, "--device"))
      device = v;
    else if (!strcmp(arg, "--token"))
      token = v;
    else if (!strcmp(arg, "--secret"))
      secret = v;
    else if (!strcmp(arg, "--data"))
      data = v;
    else if (!strcmp(arg, "--outbox"))
      outbox = v;
    else if (!strcmp(arg, "--timeout-ms")) {
      bad = parse_u64(v, &timeout_ms);
      timeout_given = 1;
    } else if (!strcmp(arg, "--count"))
      bad = parse_u64(v, &count);
    else if (!strcmp(arg, "--after"))
      bad = parse_u64(v, &after);
    else if (!strcmp(arg, "--limit"))
      bad = parse_u64(v, &limit) || limit == 0 || limit > UINT32_MAX;
    else {
      fprintf(stderr, "hubu: unknown option %s\n", arg);
      return usage();
    }
    if (bad) {
      fprintf(stderr, "hubu: %s: invalid value '%s'\n", arg, v);
      return usage();
    }
  }

  static app a; /* large (line buffers); one per process */
  a.cmd = CMD_INTERACTIVE;
  int first = 0;
  if (n_pos > 0) {
    first = 1;
    if (!strcmp(pos[0], "send"))
      a.cmd = CMD_SEND;
    else if (!strcmp(pos[0], "tail"))
      a.cmd = CMD_TAIL;
    else if (!strcmp(pos[0], "history"))
      a.cmd = CMD_HISTORY;
    else if (!strcmp(pos[0], "sessions"))
      a.cmd = CMD_SESSIONS;
    else {
      fprintf(stderr, "hubu: unknown command '%s'\n", pos[0]);
      return usage();
    }
  }
  if (!user || !hubu_id_valid(user, strlen(user))) {
    fprintf(stderr, "hubu: --user USER is required (1-64 of [A-Za-z0-9_.@-])\n");
    return usage();
  }
  if (!hubu_id_valid(device, strlen(device))) {
    fprintf(stderr, "hubu: invalid --device\n");
    return usage();
  }
  a.user = user;
  a.verbose = verbose;

  switch (a.cmd) {
    case CMD_SEND: {
      if (n_pos < 3) {
        fprintf(stderr, "hubu: send TO TEXT\n");
        return usage();
      }
      if (resolve_peer(user, pos[1], a.send_session, sizeof a.send_session) != 0) {
        fprintf(stderr, "hubu: '%s' is neither another user nor a session id\n", pos[1]);
        return usage();
      }
      size_t len = 0;
      for (int i = 2; i < n_pos; i++) len += strlen(pos[i]) + 1;
      a.send_text = calloc(1, len + 1);
      if (!a.send_text) return EXIT_LOCAL;
      for (int i = 2; i < n_pos; i++) {
        if (i > 2) strcat(a.send_text, " ");
        strcat(a.send_text, pos[i]);
      }
      break;
    }
    case CMD_TAIL:
      for (int i = first; i < n_pos; i++) {
        if (a.n_filter == MAX_FILTER || resolve_peer(user, pos[i], a.filter[a.n_filter], SESSION_MAX) != 0) {
          fprintf(stderr, "hubu: bad session '%s'\n", pos[i]);
          return usage();
        }
        a.n_filter++;
      }
      a.count = (long)count;
      break;
    case CMD_HISTORY:
      if (n_pos != 2 || resolve_peer(user, pos[1], a.history_session, sizeof a.history_session) != 0) {
        fprintf(stderr, "hubu: history SESSION|USER\n");
        return usage();
      }
      a.after = after;
      a.limit = (uint32_t)limit;
      break;
    case CMD_SESSIONS:
      if (n_pos != 1) return usage();
      break;
    case CMD_INTERACTIVE: break;
  }

  char tok[HUBU_TOKEN_MAX];
  if (!token) {
    char path[4096];
    int r;
    if (secret && secret[0] == '@') {
      r = mint_from_file(secret + 1, user, tok, sizeof tok);
    } else if (secret) {
      r = mint((const uint8_t *)secret, strlen(secret), user, tok, sizeof tok);
    } else if (data) {
      snprintf(path, sizeof path, "%s/secret", data);
      r = mint_from_file(path, user, tok, sizeof tok);
    } else {
      fprintf(stderr, "hubu: one of --token, --secret or --data is required\n");
      free(a.send_text);
      return usage();
    }
    if (r != 0) {
      free(a.send_text);
      return EXIT_LOCAL;
    }
    token = tok;
  }

  /* Only the commands that send keep an outbox: the others would only hold its lock. */
  char outbox_path[4200] = "";
  if (a.cmd == CMD_SEND || a.cmd == CMD_INTERACTIVE) {
    if (outbox && strcmp(outbox, "none") != 0)
      snprintf(outbox_path, sizeof outbox_path, "%s", outbox);
    else if (!outbox)
      default_outbox(user, device, outbox_path, sizeof outbox_path);
  }

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return EXIT_LOCAL;
  a.loop = &loop;
  signal(SIGPIPE, SIG_IGN);

  hubu_client_options opt = {0};
  opt.host = host;
  opt.port = (int)port;
  opt.tls = tls;
  opt.tls_ca_file = ca;
  opt.tls_verify = !insecure;
  opt.user_id = user;
  opt.device_id = device;
  opt.token = token;
  opt.client_info = "hubu-cli/0.1";
  opt.reconnect = 1;
  opt.backoff_min_ms = 200;
  opt.backoff_max_ms = 5000;
  opt.outbox_path = outbox_path[0] ? outbox_path : NULL;
  opt.no_auto_sync = 1; /* tail and interactive start at the present (on_ready); the rest need no catch-up */
  hubu_client_callbacks cb = {0};
  cb.on_state = on_state;
  cb.on_ready = on_ready;
  cb.on_stored = on_stored;
  cb.on_failed = on_failed;
  cb.on_received = on_received;
  a.client = hubu_client_new(&loop, &opt, &cb, &a);
  if (!a.client) {
    fprintf(stderr, "hubu: %s\n", hubu_client_last_error());
    free(a.send_text);
    uv_loop_close(&loop);
    return EXIT_LOCAL;
  }

  if (a.cmd == CMD_SEND) {
    a.send_id = hubu_client_send_message(a.client, a.send_session, (const uint8_t *)a.send_text, strlen(a.send_text),
                                         "text/plain", 0, NULL, NULL);
    if (!a.send_id) fprintf(stderr, "hubu: cannot queue the message\n");
  }

  uv_signal_init(&loop, &a.sigint);
  a.sigint.data = &a;
  uv_signal_start(&a.sigint, on_sigint, SIGINT);
  if (!timeout_given && (a.cmd == CMD_SEND || a.cmd == CMD_HISTORY || a.cmd == CMD_SESSIONS)) {
    timeout_ms = 15000;
    timeout_given = 1;
  }
  if (timeout_given) {
    uv_timer_init(&loop, &a.deadline);
    a.deadline.data = &a;
    a.deadline_on = 1;
    uv_timer_start(&a.deadline, on_deadline, timeout_ms, 0);
  }

  if (a.cmd == CMD_SEND && !a.send_id) {
    app_finish(&a, EXIT_LOCAL);
  } else {
    int r = hubu_client_start(a.client);
    if (r < 0) {
      fprintf(stderr, "hubu: %s\n", uv_strerror(r));
      app_finish(&a, EXIT_UNREACHABLE);
    } else if (a.cmd == CMD_INTERACTIVE && input_start(&a) != 0) {
      app_finish(&a, EXIT_LOCAL);
    }
  }

  uv_run(&loop, UV_RUN_DEFAULT);
  int closed = uv_loop_close(&loop);
  if (closed != 0) fprintf(stderr, "hubu: loop still busy at exit: %s\n", uv_strerror(closed));
  free(a.send_text);
  return a.exit_code;
}

/* msg_dbdown.c — the MariaDB store's database dies and comes back under load
 * (the MariaDB run only: tests/messaging.cmake). 100 sender connections, one
 * device each, pipeline SENDs (at most WINDOW outstanding each) into 20 groups
 * and 25 direct sessions from one poll loop, and acknowledge what is pushed
 * to them. The test kills mariadbd with SIGKILL (scripts/mariadb-private.sh
 * kill9 on the test's own server), keeps the senders going for DOWN_MS, then
 * restarts it; CYCLES times. While the database is away, SENDs are answered
 * UNAVAILABLE with retry_after_ms > 0, no connection gets GOAWAY or is
 * closed, and the admin port's /healthz answers 503 "degraded"; once it is
 * back, 200 again. A sender answered UNAVAILABLE holds its new messages and,
 * after retry_after_ms, sends every unacknowledged one again with the same
 * client_id, in client_id order (STALE: the same content under a new
 * client_id, PROTOCOL.md section 5), until all its messages are acknowledged
 * OK. Then the database's rows must agree with the ACKs: every acknowledged
 * message stored exactly once, with the session, seq and msg_id of its ACK;
 * per sender as many stored as acknowledged; no (sender, device, client_id)
 * twice; per sender and session client_id order = seq order. And a PULL of
 * every session over the wire must return exactly those rows. Every loop has
 * a deadline.
 *
 * Needs HUBU_TEST_STORE=mariadb and a server that is the test's alone
 * (HUBU_MARIADB_ENV, HUBU_MARIADB_DIR, HUBU_MARIADB_SCRIPT: tests/mariadb.cmake
 * with OWN_SERVER). HUBU_MSG_SEED reruns a seed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msgtest.h"

#ifndef HUBU_MARIADB_SCRIPT_PATH
#error "HUBU_MARIADB_SCRIPT_PATH must name scripts/mariadb-private.sh"
#endif

#define N_SENDERS 100
#define N_GROUPS 20 /* g:dd00..g:dd19; sender i is in group i % 20: five members each */
#define N_DIRECT 25 /* d:u<4k>:u<4k+1>: senders 4k and 4k+1 share one */
#define N_SESSIONS (N_GROUPS + N_DIRECT)
#define WINDOW 12                        /* outstanding SENDs per sender */
#define PACE_MS (MT_SANITIZED ? 80 : 25) /* at most one new message per sender this often */
#define MAX_PER_SENDER 2000              /* a bound, not a target */
#define CYCLES 2                         /* kill -9 and restart of mariadbd */
#define UP_MS 800                        /* traffic before each kill */
#define DOWN_MS 1500                     /* traffic while the database is away */
#define RESEND_AFTER_MS 10000            /* an unanswered SEND is sent again (same client_id) */
#define SCRIPT_DEADLINE_MS 30000         /* kill9 / restart of the script */
#define HEALTH_DEADLINE_MS 15000         /* /healthz back to 200 after the restart */
#define DRAIN_DEADLINE_MS 30000          /* every message acknowledged after the last cycle */

static char session_names[N_SESSIONS][16];
static uint64_t rng;
static int fatal_reports;

/* A failure, printed for the first 20 only (a broken invariant repeats). */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
  if (fatal_reports++ < 20) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e2e_fail(__FILE__, __LINE__, "%s", msg);
  } else {
    e2e_failures++;
  }
}

static int session_index(const char *id) {
  for (int i = 0; i < N_SESSIONS; i++)
    if (strcmp(id, session_names[i]) == 0) return i;
  return -1;
}

static void body_of(char *out, size_t size, int idx, uint64_t logical, size_t *len) {
  int n = snprintf(out, size, "%d:%llu:", idx, (unsigned long long)logical);
  size_t pad = (size_t)(logical * 7 % 41); /* varied sizes */
  for (size_t i = 0; i < pad && (size_t)n + 1 < size; i++) out[n++] = 'x';
  out[n] = '\0';
  *len = (size_t)n;
}

static int body_parse(const uint8_t *p, size_t len, int *idx, uint64_t *logical) {
  char b[96];
  if (len >= sizeof b) return -1;
  memcpy(b, p, len);
  b[len] = '\0';
  unsigned long long l;
  if (sscanf(b, "%d:%llu:", idx, &l) != 2) return -1;
  *logical = l;
  char want[96];
  size_t wl;
  body_of(want, sizeof want, *idx, l, &wl);
  return wl == len && memcmp(want, b, len) == 0 ? 0 : -1;
}

/* ---- senders ------------------------------------------------------------------- */

enum { P_INFLIGHT, P_WAIT }; /* sent and not answered; answered UNAVAILABLE, sent again at due_ms */

typedef struct {
  uint64_t cid, logical;
  int session, state;
  uint64_t sent_ms, due_ms;
} pend;

typedef struct {
  uint64_t logical, cid, seq, msg_id;
  int session, duplicate;
} acked_rec;

typedef struct {
  int idx;
  char user[8];
  int group, direct; /* session indexes; direct -1 when none */
  mt_nb c;
  int state; /* 0 down, 1 HELLO sent, 2 ready */
  int ever_ready;
  uint64_t next_connect_ms, next_gen_ms;
  uint64_t next_cid, next_logical;
  pend *p; /* ascending client_id */
  size_t np, capp;
  acked_rec *a;
  size_t na, capa;
  uint64_t unavailable, unavailable_down, no_retry_after, stale, other_codes, dup_acks, late_acks, resent, timeouts,
      goaways, closes, pushes;
} sender;

typedef struct {
  sender s[N_SENDERS];
  int port;
  int generating;
  int down; /* the database is away (between kill9 and the restart) */
} world;

static void queue_send(sender *s, pend *p, uint64_t now) {
  char body[96];
  size_t len;
  body_of(body, sizeof body, s->idx, p->logical, &len);
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = p->cid;
  m.session_id = session_names[p->session];
  m.body.data = (uint8_t *)body;
  m.body.len = len;
  mt_nb_queue(&s->c, HUBU_FRAME_SEND, &m.base);
  p->state = P_INFLIGHT;
  p->sent_ms = now;
}

static void queue_cursor_ack(mt_nb *c, const char *session, uint64_t seq) {
  Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
  cur.session_id = (char *)session;
  cur.seq = seq;
  Hubu__V1__Cursor *curs[1] = {&cur};
  Hubu__V1__DeliverAck a = HUBU__V1__DELIVER_ACK__INIT;
  a.cursors = curs;
  a.n_cursors = 1;
  mt_nb_queue(c, HUBU_FRAME_DELIVER_ACK, &a.base);
}

static void sender_down(sender *s, uint64_t now) {
  mt_nb_close(&s->c);
  s->state = 0;
  s->next_connect_ms = now + 100;
}

static pend *find_pend(sender *s, uint64_t cid, size_t *at) {
  size_t lo = 0, hi = s->np;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->p[mid].cid < cid)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < s->np && s->p[lo].cid == cid) {
    *at = lo;
    return &s->p[lo];
  }
  return NULL;
}

static pend *push_pend(sender *s, uint64_t logical, int session) {
  if (s->np == s->capp) {
    s->capp = s->capp ? 2 * s->capp : 64;
    s->p = realloc(s->p, s->capp * sizeof *s->p);
    REQUIRE(s->p != NULL);
  }
  pend *p = &s->p[s->np++];
  *p = (pend){.cid = s->next_cid++, .logical = logical, .session = session};
  return p;
}

static void drop_pend(sender *s, size_t at) {
  memmove(&s->p[at], &s->p[at + 1], (s->np - at - 1) * sizeof *s->p);
  s->np--;
}

static const acked_rec *find_acked(const sender *s, uint64_t cid) {
  for (size_t i = s->na; i-- > 0;)
    if (s->a[i].cid == cid) return &s->a[i];
  return NULL;
}

static void sender_ack(world *w, sender *s, const Hubu__V1__SendAck *a, uint64_t now) {
  size_t at = 0;
  pend *p = find_pend(s, a->client_id, &at);
  if (!p) {
    /* the answer to a resend of a message already acknowledged: the same message again */
    const acked_rec *r = find_acked(s, a->client_id);
    if (r && a->code == HUBU__V1__CODE__OK && a->seq == r->seq && a->msg_id == r->msg_id) {
      s->late_acks++;
    } else if (!r || a->code != HUBU__V1__CODE__UNAVAILABLE) {
      report("u%02d: SEND_ACK client_id %llu code %s seq %llu: not outstanding%s", s->idx,
             (unsigned long long)a->client_id, hubu_code_name(a->code), (unsigned long long)a->seq,
             r ? " (acknowledged before with another seq)" : "");
    }
    return;
  }
  if (a->code == HUBU__V1__CODE__OK) {
    if (strcmp(a->session_id, session_names[p->session]) != 0 || a->seq == 0 || a->msg_id == 0)
      report("u%02d: SEND_ACK OK for client_id %llu names session \"%s\" seq %llu msg_id %llu", s->idx,
             (unsigned long long)a->client_id, a->session_id, (unsigned long long)a->seq,
             (unsigned long long)a->msg_id);
    if (s->na == s->capa) {
      s->capa = s->capa ? 2 * s->capa : 256;
      s->a = realloc(s->a, s->capa * sizeof *s->a);
      REQUIRE(s->a != NULL);
    }
    s->a[s->na++] = (acked_rec){p->logical, p->cid, a->seq, a->msg_id, p->session, a->duplicate};
    s->dup_acks += a->duplicate;
    drop_pend(s, at);
  } else if (a->code == HUBU__V1__CODE__UNAVAILABLE) {
    /* nothing stored: the same client_id again after retry_after_ms */
    s->unavailable++;
    s->unavailable_down += w->down;
    if (a->retry_after_ms == 0 && s->no_retry_after++ == 0)
      report("u%02d: SEND_ACK UNAVAILABLE for client_id %llu without retry_after_ms (reason \"%s\")", s->idx,
             (unsigned long long)a->client_id, a->reason);
    p->state = P_WAIT;
    p->due_ms = now + (a->retry_after_ms ? a->retry_after_ms : 1000);
  } else if (a->code == HUBU__V1__CODE__STALE) {
    /* never stored, and the client_id is used up: the same content under a new one */
    s->stale++;
    uint64_t logical = p->logical;
    int session = p->session;
    drop_pend(s, at);
    pend *q = push_pend(s, logical, session);
    if (s->state == 2) queue_send(s, q, now);
  } else {
    s->other_codes++;
    report("u%02d: SEND_ACK client_id %llu: code %s (reason \"%s\")", s->idx, (unsigned long long)a->client_id,
           hubu_code_name(a->code), a->reason);
    uint64_t logical = p->logical;
    int session = p->session;
    drop_pend(s, at);
    pend *q = push_pend(s, logical, session); /* kept, so the run can finish */
    if (s->state == 2) queue_send(s, q, now);
  }
}

static void sender_frame(world *w, sender *s, uint8_t type, const uint8_t *body, uint32_t len, uint64_t now) {
  switch (type) {
    case HUBU_FRAME_HELLO_OK:
      s->state = 2;
      s->ever_ready = 1;
      for (size_t i = 0; i < s->np; i++) queue_send(s, &s->p[i], now); /* in client_id order */
      s->resent += s->np;
      break;
    case HUBU_FRAME_SEND_ACK: {
      Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, len, body);
      if (a) sender_ack(w, s, a, now);
      if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
      if (!a) report("u%02d: a SEND_ACK that does not decode", s->idx);
      break;
    }
    case HUBU_FRAME_PUSH: { /* the other members' messages: acknowledged at once */
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, len, body);
      uint64_t top[2] = {0, 0}; /* group, direct */
      for (size_t i = 0; p && i < p->n_messages; i++) {
        int si = session_index(p->messages[i]->session_id);
        int k = si == s->group ? 0 : si == s->direct && si >= 0 ? 1 : -1;
        if (k < 0)
          report("u%02d: PUSH of %s, not one of its sessions", s->idx, p->messages[i]->session_id);
        else if (p->messages[i]->seq > top[k])
          top[k] = p->messages[i]->seq;
        s->pushes++;
      }
      if (top[0]) queue_cursor_ack(&s->c, session_names[s->group], top[0]);
      if (top[1]) queue_cursor_ack(&s->c, session_names[s->direct], top[1]);
      if (p) hubu__v1__push__free_unpacked(p, NULL);
      break;
    }
    case HUBU_FRAME_PING: {
      Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, len, body);
      Hubu__V1__Ping pong = HUBU__V1__PING__INIT;
      pong.time_ms = p ? p->time_ms : 0;
      mt_nb_queue(&s->c, HUBU_FRAME_PONG, &pong.base);
      if (p) hubu__v1__ping__free_unpacked(p, NULL);
      break;
    }
    case HUBU_FRAME_PULL_HINT: break; /* the pushes it stands for are not under test */
    case HUBU_FRAME_GOAWAY:
    case HUBU_FRAME_ERROR: {
      char what[200] = "";
      if (type == HUBU_FRAME_GOAWAY) {
        Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, len, body);
        if (g) snprintf(what, sizeof what, "GOAWAY %s \"%s\"", hubu_code_name(g->code), g->reason);
        if (g) hubu__v1__go_away__free_unpacked(g, NULL);
      } else {
        Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, len, body);
        if (e) snprintf(what, sizeof what, "ERROR %s \"%s\"", hubu_code_name(e->code), e->message);
        if (e) hubu__v1__error__free_unpacked(e, NULL);
      }
      s->goaways++;
      report("u%02d: %s (database %s): a store outage must not end connections", s->idx, what[0] ? what : "?",
             w->down ? "away" : "up");
      sender_down(s, now);
      break;
    }
    default: report("u%02d: unexpected frame %s", s->idx, hubu_frame_type_name(type)); break;
  }
}

static void sender_tick(world *w, sender *s, uint64_t now) {
  if (s->state == 0) {
    if (now < s->next_connect_ms) return;
    if (mt_nb_connect(&s->c, w->port) == 0 && mt_nb_queue_hello(&s->c, s->user, "d") == 0)
      s->state = 1;
    else
      sender_down(s, now);
    return;
  }
  if (s->state != 2) return;
  /* the UNAVAILABLE ones go again, all together and in client_id order, once the first is due */
  uint64_t first_due = UINT64_MAX;
  int waiting = 0;
  for (size_t i = 0; i < s->np; i++) {
    if (s->p[i].state == P_WAIT) {
      waiting = 1;
      if (s->p[i].due_ms < first_due) first_due = s->p[i].due_ms;
    } else if (now - s->p[i].sent_ms >= RESEND_AFTER_MS) {
      s->timeouts++;
      s->resent++;
      queue_send(s, &s->p[i], now); /* a retry while it may still be queued: answered as a duplicate */
    }
  }
  if (waiting && now >= first_due) {
    for (size_t i = 0; i < s->np; i++)
      if (s->p[i].state == P_WAIT) {
        queue_send(s, &s->p[i], now);
        s->resent++;
      }
    waiting = 0;
  }
  /* new messages: not while backing off, at most WINDOW outstanding, paced */
  if (w->generating && !waiting && s->np < WINDOW && now >= s->next_gen_ms && s->next_logical <= MAX_PER_SENDER) {
    int session = s->direct >= 0 && (mt_rand(&rng) & 1) ? s->direct : s->group;
    pend *p = push_pend(s, s->next_logical++, session);
    queue_send(s, p, now);
    s->next_gen_ms = now + PACE_MS / 2 + mt_rand_range(&rng, 0, PACE_MS);
  }
}

static void world_pump(world *w, int timeout_ms) {
  mt_nb *conns[N_SENDERS];
  for (int i = 0; i < N_SENDERS; i++) conns[i] = &w->s[i].c;
  mt_nb_poll(conns, N_SENDERS, timeout_ms);
  uint64_t now = e2e_now_ms();
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    uint8_t type;
    const uint8_t *body;
    uint32_t len;
    size_t size;
    while (s->c.fd >= 0 && mt_nb_frame(&s->c, &type, &body, &len, &size)) {
      sender_frame(w, s, type, body, len, now);
      if (s->c.fd < 0) break; /* went down inside */
      mt_nb_consume(&s->c, size);
    }
    if (s->c.fd >= 0 && s->c.dead) {
      s->closes++;
      report("u%02d: the server closed the connection (database %s)", s->idx, w->down ? "away" : "up");
      sender_down(s, now);
    }
    sender_tick(w, s, now);
  }
}

static void run_for(world *w, uint64_t ms) {
  uint64_t end = e2e_now_ms() + ms;
  while (e2e_now_ms() < end) world_pump(w, 2);
}

static uint64_t total(const world *w, size_t field_offset) {
  uint64_t t = 0;
  for (int i = 0; i < N_SENDERS; i++) t += *(const uint64_t *)((const char *)&w->s[i] + field_offset);
  return t;
}
#define TOTAL(w, field) total((w), offsetof(sender, field))

static size_t total_acked(const world *w) {
  size_t t = 0;
  for (int i = 0; i < N_SENDERS; i++) t += w->s[i].na;
  return t;
}

static size_t total_outstanding(const world *w) {
  size_t t = 0;
  for (int i = 0; i < N_SENDERS; i++) t += w->s[i].np;
  return t;
}

static int all_ready(const world *w) {
  for (int i = 0; i < N_SENDERS; i++)
    if (w->s[i].state != 2) return 0;
  return 1;
}

/* ---- the database server and /healthz ------------------------------------------------- */

/* Starts `mariadb-private.sh CMD DIR` (its output goes to stderr); the pid. */
static pid_t script_start(const char *cmd) {
  const char *script = getenv("HUBU_MARIADB_SCRIPT");
  const char *dir = getenv("HUBU_MARIADB_DIR");
  if (!script || !*script) script = HUBU_MARIADB_SCRIPT_PATH;
  fprintf(stderr, "  %s %s %s\n", script, cmd, dir);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(2, 1);
    execl("/bin/bash", "bash", script, cmd, dir, (char *)NULL);
    _exit(127);
  }
  return pid;
}

/* Keeps the senders going until the script ends; its exit status, or -1 after the deadline. */
static int script_run(world *w, const char *cmd) {
  uint64_t t0 = e2e_now_ms();
  pid_t pid = script_start(cmd);
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (e2e_now_ms() - t0 > SCRIPT_DEADLINE_MS) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      e2e_fail(__FILE__, __LINE__, "mariadb-private.sh %s took more than %d ms", cmd, SCRIPT_DEADLINE_MS);
      return -1;
    }
    world_pump(w, 5);
  }
  int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  fprintf(stderr, "  mariadb-private.sh %s: status %d after %llu ms\n", cmd, status,
          (unsigned long long)(e2e_now_ms() - t0));
  return status;
}

static int admin_port_of(const e2e_server *s) {
  char path[128], line[128];
  snprintf(path, sizeof path, "%s/ports", s->dir);
  FILE *f = fopen(path, "r");
  int port = -1, p;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "admin %d", &p) == 1 && p > 0) port = p;
  fclose(f);
  return port;
}

/* GET /healthz on the admin port: the HTTP status (body's start in body), or -1. */
static int healthz(int port, char *body, size_t body_size) {
  body[0] = '\0';
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct timeval tv = {.tv_sec = 2};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char req[160], resp[2048];
  int n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    close(fd);
    return -1;
  }
  size_t got = 0;
  int status = -1;
  for (;;) { /* until EOF, or the whole body by Content-Length */
    ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
    if (r <= 0) break;
    got += (size_t)r;
    resp[got] = '\0';
    const char *end = strstr(resp, "\r\n\r\n");
    const char *cl = strcasestr(resp, "\r\nContent-Length:");
    if (end && cl && cl < end && got >= (size_t)(end + 4 - resp) + strtoul(cl + 17, NULL, 10)) break;
    if (got == sizeof resp - 1) break;
  }
  close(fd);
  resp[got] = '\0';
  if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) return -1;
  const char *end = strstr(resp, "\r\n\r\n");
  snprintf(body, body_size, "%s", end ? end + 4 : "");
  body[strcspn(body, "\n")] = '\0';
  return status;
}

/* ---- what is stored ----------------------------------------------------------------------- */

typedef struct {
  int session, idx; /* idx: the sender by name; -1 when no sender of the test */
  uint64_t seq, msg_id, cid, logical;
  int body_idx; /* the sender by body; -1 when the body is not one the test sent */
} stored;

typedef struct {
  stored *v;
  size_t n, cap;
} stored_list;

static int sender_of(const char *user, const char *device) {
  int i;
  char extra;
  if (strcmp(device, "d") != 0 || sscanf(user, "u%2d%c", &i, &extra) != 1 || i < 0 || i >= N_SENDERS) return -1;
  char want[8];
  snprintf(want, sizeof want, "u%02d", i);
  return strcmp(want, user) == 0 ? i : -1;
}

/* Every message of every session, by PULL over the wire (a member's new device "verify"). */
static void pull_everything(int port, stored_list *out, uint64_t *pages_out) {
  mt_skip_pushes = 1;
  uint64_t pages = 0;
  for (int si = 0; si < N_SESSIONS; si++) {
    char user[8];
    snprintf(user, sizeof user, "u%02d", si < N_GROUPS ? si : 4 * (si - N_GROUPS));
    int fd = MT_HELLO(port, user, "verify", NULL);
    if (fd < 0) continue;
    uint64_t after = 0;
    for (int page = 0; page < 10000; page++) {
      Hubu__V1__PullResult *r = MT_PULL(fd, 1 + (uint64_t)page, session_names[si], after, 500);
      if (!r) break;
      pages++;
      if (!CHECKF(r->code == HUBU__V1__CODE__OK, "PULL %s after %llu: %s", session_names[si], (unsigned long long)after,
                  hubu_code_name(r->code))) {
        hubu__v1__pull_result__free_unpacked(r, NULL);
        break;
      }
      for (size_t i = 0; i < r->n_messages; i++) {
        const Hubu__V1__Message *m = r->messages[i];
        if (m->seq <= after)
          report("PULL %s after %llu returned seq %llu", session_names[si], (unsigned long long)after,
                 (unsigned long long)m->seq);
        after = m->seq;
        if (out->n == out->cap) {
          out->cap = out->cap ? 2 * out->cap : 4096;
          out->v = realloc(out->v, out->cap * sizeof *out->v);
          REQUIRE(out->v != NULL);
        }
        stored *x = &out->v[out->n++];
        *x = (stored){.session = si,
                      .idx = sender_of(m->sender, m->sender_device),
                      .seq = m->seq,
                      .msg_id = m->msg_id,
                      .cid = m->client_id};
        if (body_parse(m->body.data, m->body.len, &x->body_idx, &x->logical) != 0) x->body_idx = -1;
      }
      int more = r->has_more;
      hubu__v1__pull_result__free_unpacked(r, NULL);
      if (!more) break;
    }
    close(fd);
  }
  mt_skip_pushes = 0;
  *pages_out = pages;
}

static int by_sender_logical(const void *x, const void *y) {
  const stored *a = x, *b = y;
  if (a->idx != b->idx) return a->idx < b->idx ? -1 : 1;
  if (a->logical != b->logical) return a->logical < b->logical ? -1 : 1;
  return (a->cid > b->cid) - (a->cid < b->cid);
}

static int by_sender_session_seq(const void *x, const void *y) {
  const stored *a = x, *b = y;
  if (a->idx != b->idx) return a->idx < b->idx ? -1 : 1;
  if (a->session != b->session) return a->session < b->session ? -1 : 1;
  return (a->seq > b->seq) - (a->seq < b->seq);
}

static int by_sender_cid(const void *x, const void *y) {
  const stored *a = x, *b = y;
  if (a->idx != b->idx) return a->idx < b->idx ? -1 : 1;
  return (a->cid > b->cid) - (a->cid < b->cid);
}

static int acked_by_logical(const void *x, const void *y) {
  const acked_rec *a = x, *b = y;
  return (a->logical > b->logical) - (a->logical < b->logical);
}

/* The checks on what is stored (view: where it was read) against what the senders were told. */
static void verify(world *w, stored_list *st, const char *view) {
  size_t n = st->n;
  uint64_t foreign = 0, dup_content = 0, dup_key = 0, cid_disorder = 0, missing = 0, mismatched = 0, unacked = 0,
           count_mismatch = 0;
  for (size_t k = 0; k < n; k++) {
    stored *x = &st->v[k];
    int ok_session = x->idx >= 0 && (x->session == w->s[x->idx].group || x->session == w->s[x->idx].direct);
    if (x->idx < 0 || x->body_idx != x->idx || !ok_session) {
      if (foreign++ < 5)
        report("%s seq %llu: sender u%02d, body of sender %d: not a message its sender sent there",
               session_names[x->session], (unsigned long long)x->seq, x->idx, x->body_idx);
      x->idx = -1;
    }
  }
  /* no content twice */
  qsort(st->v, n, sizeof *st->v, by_sender_logical);
  for (size_t k = 1; k < n; k++) {
    stored *a = &st->v[k - 1], *b = &st->v[k];
    if (a->idx >= 0 && a->idx == b->idx && a->logical == b->logical && dup_content++ < 5)
      report("u%02d: message %llu stored twice: %s seq %llu (client_id %llu) and %s seq %llu (client_id %llu)", a->idx,
             (unsigned long long)a->logical, session_names[a->session], (unsigned long long)a->seq,
             (unsigned long long)a->cid, session_names[b->session], (unsigned long long)b->seq,
             (unsigned long long)b->cid);
  }
  /* every acknowledged message stored, as acknowledged; as many stored as acknowledged */
  size_t k = 0;
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    qsort(s->a, s->na, sizeof *s->a, acked_by_logical);
    while (k < n && st->v[k].idx < i) k++;
    size_t first = k;
    while (k < n && st->v[k].idx == i) k++;
    size_t stored_n = k - first;
    if (stored_n != s->na && count_mismatch++ < 5)
      report("u%02d: %zu messages stored, %zu acknowledged (%llu generated)", i, stored_n, s->na,
             (unsigned long long)(s->next_logical - 1));
    size_t j = first;
    for (size_t q = 0; q < s->na; q++) {
      const acked_rec *r = &s->a[q];
      if (q && r->logical == s->a[q - 1].logical) {
        if (mismatched++ < 5) report("u%02d: message %llu acknowledged twice", i, (unsigned long long)r->logical);
        continue;
      }
      while (j < k && st->v[j].logical < r->logical) j++;
      if (j == k || st->v[j].logical != r->logical) {
        if (missing++ < 5)
          report("u%02d: message %llu acknowledged (%s seq %llu client_id %llu%s) but not stored", i,
                 (unsigned long long)r->logical, session_names[r->session], (unsigned long long)r->seq,
                 (unsigned long long)r->cid, r->duplicate ? ", as a duplicate" : "");
        continue;
      }
      const stored *x = &st->v[j];
      if ((x->session != r->session || x->seq != r->seq || x->msg_id != r->msg_id || x->cid != r->cid) &&
          mismatched++ < 5)
        report(
            "u%02d: message %llu acknowledged as %s seq %llu msg_id %llu client_id %llu, stored as %s seq %llu "
            "msg_id %llu client_id %llu",
            i, (unsigned long long)r->logical, session_names[r->session], (unsigned long long)r->seq,
            (unsigned long long)r->msg_id, (unsigned long long)r->cid, session_names[x->session],
            (unsigned long long)x->seq, (unsigned long long)x->msg_id, (unsigned long long)x->cid);
    }
    unacked += s->np;
  }
  /* no (sender, device, client_id) twice */
  qsort(st->v, n, sizeof *st->v, by_sender_cid);
  for (size_t q = 1; q < n; q++)
    if (st->v[q].idx >= 0 && st->v[q].idx == st->v[q - 1].idx && st->v[q].cid == st->v[q - 1].cid && dup_key++ < 5)
      report("u%02d/d: client_id %llu stored twice", st->v[q].idx, (unsigned long long)st->v[q].cid);
  /* per sender and session: client_id order = seq order */
  qsort(st->v, n, sizeof *st->v, by_sender_session_seq);
  for (size_t q = 1; q < n; q++) {
    const stored *a = &st->v[q - 1], *b = &st->v[q];
    if (a->idx >= 0 && a->idx == b->idx && a->session == b->session && b->cid <= a->cid && cid_disorder++ < 5)
      report("u%02d in %s: client_id %llu at seq %llu after client_id %llu at seq %llu", a->idx,
             session_names[a->session], (unsigned long long)b->cid, (unsigned long long)b->seq,
             (unsigned long long)a->cid, (unsigned long long)a->seq);
  }
  fprintf(stderr,
          "  %s: %zu messages; foreign %llu, content twice %llu, send key twice %llu, acknowledged but missing %llu, "
          "ACK/store mismatches %llu, stored != acked for %llu senders, client_id/seq disorder %llu, still "
          "unacknowledged %llu\n",
          view, n, (unsigned long long)foreign, (unsigned long long)dup_content, (unsigned long long)dup_key,
          (unsigned long long)missing, (unsigned long long)mismatched, (unsigned long long)count_mismatch,
          (unsigned long long)cid_disorder, (unsigned long long)unacked);
  CHECK_EQ(foreign, 0);
  CHECK_EQ(dup_content, 0);
  CHECK_EQ(dup_key, 0);
  CHECK_EQ(missing, 0);
  CHECK_EQ(mismatched, 0);
  CHECK_EQ(count_mismatch, 0);
  CHECK_EQ(cid_disorder, 0);
  CHECK_EQ(unacked, 0);
}

static void take_row(void *ctx, int n, const char *const *cols, const size_t *lens) {
  stored_list *out = ctx;
  if (n < 7) return;
  if (out->n == out->cap) {
    out->cap = out->cap ? 2 * out->cap : 4096;
    out->v = realloc(out->v, out->cap * sizeof *out->v);
    REQUIRE(out->v != NULL);
  }
  stored *x = &out->v[out->n++];
  *x = (stored){.session = cols[0] ? session_index(cols[0]) : -1,
                .idx = cols[3] && cols[4] ? sender_of(cols[3], cols[4]) : -1,
                .seq = cols[1] ? strtoull(cols[1], NULL, 10) : 0,
                .msg_id = cols[2] ? strtoull(cols[2], NULL, 10) : 0,
                .cid = cols[5] ? strtoull(cols[5], NULL, 10) : 0};
  if (x->session < 0) x->session = 0, x->idx = -1; /* reported as foreign */
  if (!cols[6] || body_parse((const uint8_t *)cols[6], lens[6], &x->body_idx, &x->logical) != 0) x->body_idx = -1;
}

static int by_session_seq(const void *x, const void *y) {
  const stored *a = x, *b = y;
  if (a->session != b->session) return a->session < b->session ? -1 : 1;
  return (a->seq > b->seq) - (a->seq < b->seq);
}

/* PULL must return exactly the database's rows. */
static void compare_pull_with_database(const world *w, stored_list *pulled, stored_list *db) {
  qsort(pulled->v, pulled->n, sizeof *pulled->v, by_session_seq);
  qsort(db->v, db->n, sizeof *db->v, by_session_seq);
  size_t i = 0, j = 0;
  uint64_t not_pulled = 0, not_in_db = 0, differ = 0;
  while (i < pulled->n || j < db->n) {
    int c = i == pulled->n ? 1 : j == db->n ? -1 : by_session_seq(&pulled->v[i], &db->v[j]);
    if (c > 0) {
      const stored *x = &db->v[j++];
      int dup = 0;
      if (x->idx >= 0)
        for (size_t q = 0; q < w->s[x->idx].na; q++)
          if (w->s[x->idx].a[q].cid == x->cid) dup = w->s[x->idx].a[q].duplicate;
      if (not_pulled++ < 5)
        report("%s seq %llu (u%02d client_id %llu%s) is in the database, but PULL did not return it",
               session_names[x->session], (unsigned long long)x->seq, x->idx, (unsigned long long)x->cid,
               dup ? ", its SEND_ACK OK came as a duplicate" : "");
    } else if (c < 0) {
      const stored *x = &pulled->v[i++];
      if (not_in_db++ < 5)
        report("PULL returned %s seq %llu (u%02d client_id %llu), which is not in the database",
               session_names[x->session], (unsigned long long)x->seq, x->idx, (unsigned long long)x->cid);
    } else {
      const stored *x = &pulled->v[i++], *y = &db->v[j++];
      if ((x->msg_id != y->msg_id || x->cid != y->cid || x->idx != y->idx || x->logical != y->logical) && differ++ < 5)
        report("%s seq %llu: PULL and the database disagree (msg_id %llu/%llu, client_id %llu/%llu)",
               session_names[x->session], (unsigned long long)x->seq, (unsigned long long)x->msg_id,
               (unsigned long long)y->msg_id, (unsigned long long)x->cid, (unsigned long long)y->cid);
    }
  }
  fprintf(stderr,
          "  PULL vs database: %zu pulled, %zu rows; %llu rows PULL did not return, %llu pulled not in the database, "
          "%llu differ\n",
          pulled->n, db->n, (unsigned long long)not_pulled, (unsigned long long)not_in_db, (unsigned long long)differ);
  CHECK_EQ(not_pulled, 0);
  CHECK_EQ(not_in_db, 0);
  CHECK_EQ(differ, 0);
}

/* ---- the case ------------------------------------------------------------------------------ */

static void database_kill9_and_restart_under_100_pipelining_senders_loses_and_doubles_nothing(void) {
  if (!mt_store_is_mariadb() || !getenv("HUBU_MARIADB_DIR") || !*getenv("HUBU_MARIADB_DIR")) {
    e2e_fail(__FILE__, __LINE__,
             "this case kills the database server: it needs HUBU_TEST_STORE=mariadb and a server of its own in "
             "HUBU_MARIADB_DIR (tests/mariadb.cmake, OWN_SERVER)");
    return;
  }
  rng = mt_seed();
  for (int g = 0; g < N_GROUPS; g++) snprintf(session_names[g], sizeof session_names[g], "g:dd%02d", g);
  for (int k = 0; k < N_DIRECT; k++)
    snprintf(session_names[N_GROUPS + k], sizeof session_names[0], "d:u%02d:u%02d", 4 * k, 4 * k + 1);

  mt_dir d;
  mt_dir_make(&d);
  for (int g = 0; g < N_GROUPS; g++) {
    char m[5][8];
    for (int j = 0; j < 5; j++) snprintf(m[j], sizeof m[j], "u%02d", g + N_GROUPS * j);
    REQUIRE(mt_group_create(&d, session_names[g], m[0], m[1], m[2], m[3], m[4], NULL) == 0);
  }
  e2e_server srv;
  REQUIRE(MT_START(&srv, &d, NULL) == 0);
  int admin = admin_port_of(&srv);
  REQUIRE(admin > 0);

  world *w = calloc(1, sizeof *w);
  REQUIRE(w != NULL);
  w->port = srv.port;
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    s->idx = i;
    snprintf(s->user, sizeof s->user, "u%02d", i);
    s->group = i % N_GROUPS;
    s->direct = i % 4 < 2 ? N_GROUPS + i / 4 : -1;
    s->c.fd = -1;
    s->next_cid = 1;
    s->next_logical = 1;
  }
  fprintf(stderr,
          "  %d senders, window %d, a new message per sender every ~%d ms, %d sessions; %d cycles of %d ms "
          "up, kill -9 of mariadbd, %d ms down, restart\n",
          N_SENDERS, WINDOW, PACE_MS, N_SESSIONS, CYCLES, UP_MS, DOWN_MS);
  uint64_t t0 = e2e_now_ms(), deadline = t0 + 10000;
  while (!all_ready(w) && e2e_now_ms() < deadline) world_pump(w, 5);
  REQUIRE(all_ready(w));
  char body[256];
  int h = healthz(admin, body, sizeof body);
  CHECKF(h == 200, "/healthz before the outage: %d \"%s\", want 200", h, body);

  w->generating = 1;
  uint64_t unavailable_before = 0;
  for (int cycle = 1; cycle <= CYCLES; cycle++) {
    run_for(w, UP_MS);
    REQUIRE(script_run(w, "kill9") == 0);
    uint64_t t_down = e2e_now_ms();
    size_t acked_at_kill = total_acked(w);
    w->down = 1;
    /* the database is away: senders go on, /healthz says degraded */
    int degraded = 0, last_status = 0;
    uint64_t degraded_after = 0, next_probe = 0;
    char last_body[256] = "";
    while (e2e_now_ms() - t_down < DOWN_MS) {
      world_pump(w, 2);
      if (!degraded && e2e_now_ms() >= next_probe) {
        last_status = healthz(admin, last_body, sizeof last_body);
        if (last_status == 503 && strncmp(last_body, "degraded", 8) == 0) {
          degraded = 1;
          degraded_after = e2e_now_ms() - t_down;
        }
        next_probe = e2e_now_ms() + 100;
      }
    }
    uint64_t unavailable_at_kill = unavailable_before;
    uint64_t unavailable_down = TOTAL(w, unavailable_down) - unavailable_before;
    size_t acked_while_down = total_acked(w) - acked_at_kill;
    fprintf(stderr,
            "  cycle %d at %.1f s: mariadbd killed; in the next %d ms %llu SENDs answered UNAVAILABLE, %zu OK; "
            "/healthz %s\n",
            cycle, (double)(t_down - t0) / 1000.0, DOWN_MS, (unsigned long long)unavailable_down, acked_while_down,
            degraded ? "503" : "never 503 degraded");
    if (degraded)
      fprintf(stderr, "    /healthz %llu ms after the kill: \"%s\"\n", (unsigned long long)degraded_after, last_body);
    CHECKF(unavailable_down > 0, "cycle %d: no SEND was answered UNAVAILABLE while the database was away", cycle);
    CHECKF(degraded,
           "cycle %d: /healthz never answered 503 \"degraded...\" while the database was away (last: %d \"%s\")", cycle,
           last_status, last_body);
    /* back: the restart runs while the senders keep retrying */
    REQUIRE(script_run(w, "restart") == 0);
    w->down = 0;
    unavailable_before = TOTAL(w, unavailable_down);
    uint64_t t_up = e2e_now_ms();
    size_t acked_at_restart = total_acked(w);
    int healthy = 0;
    next_probe = 0;
    while (!healthy && e2e_now_ms() - t_up < HEALTH_DEADLINE_MS) {
      world_pump(w, 2);
      if (e2e_now_ms() >= next_probe) {
        last_status = healthz(admin, last_body, sizeof last_body);
        healthy = last_status == 200;
        next_probe = e2e_now_ms() + 50;
      }
    }
    fprintf(stderr,
            "    restarted after %llu ms down (%llu UNAVAILABLE while down in all); /healthz 200 %llu ms after the "
            "restart\n",
            (unsigned long long)(t_up - t_down), (unsigned long long)(unavailable_before - unavailable_at_kill),
            (unsigned long long)(e2e_now_ms() - t_up));
    CHECKF(healthy, "cycle %d: /healthz still %d \"%s\" %d ms after the database came back", cycle, last_status,
           last_body, HEALTH_DEADLINE_MS);
    /* and SENDs are acknowledged again */
    uint64_t t_ack = e2e_now_ms();
    while (total_acked(w) == acked_at_restart && e2e_now_ms() - t_ack < HEALTH_DEADLINE_MS) world_pump(w, 2);
    CHECKF(total_acked(w) > acked_at_restart, "cycle %d: nothing acknowledged after the database came back", cycle);
  }
  run_for(w, UP_MS);
  /* no new messages; every outstanding one is retried until acknowledged */
  w->generating = 0;
  uint64_t t_drain = e2e_now_ms();
  while (total_outstanding(w) && e2e_now_ms() - t_drain < DRAIN_DEADLINE_MS) world_pump(w, 2);
  size_t left = total_outstanding(w);
  if (left) {
    for (int i = 0, shown = 0; i < N_SENDERS && shown < 5; i++) {
      sender *s = &w->s[i];
      if (!s->np) continue;
      shown++;
      fprintf(stderr, "    u%02d: %zu unacknowledged, first client_id %llu (%s), state %d\n", i, s->np,
              (unsigned long long)s->p[0].cid, s->p[0].state == P_WAIT ? "answered UNAVAILABLE" : "no answer",
              s->state);
    }
  }
  CHECKF(left == 0, "%zu SENDs still unacknowledged %d ms after the last restart's traffic stopped", left,
         DRAIN_DEADLINE_MS);
  uint64_t run_ms = e2e_now_ms() - t0;
  h = healthz(admin, body, sizeof body);
  CHECKF(h == 200, "/healthz at the end: %d \"%s\"", h, body);

  uint64_t generated = 0;
  for (int i = 0; i < N_SENDERS; i++) generated += w->s[i].next_logical - 1;
  fprintf(stderr,
          "  %.1f s: %llu messages generated, %zu acknowledged (%llu as duplicates, %llu late answers to resends); "
          "%llu UNAVAILABLE (%llu while the database was away, %llu without retry_after_ms), %llu resent with the same "
          "client_id, %llu STALE resent under a new one, %llu other codes, %llu resends after %d ms without an "
          "answer; %llu GOAWAY/ERROR, %llu connections closed; %llu messages pushed to the senders\n",
          (double)run_ms / 1000.0, (unsigned long long)generated, total_acked(w),
          (unsigned long long)TOTAL(w, dup_acks), (unsigned long long)TOTAL(w, late_acks),
          (unsigned long long)TOTAL(w, unavailable), (unsigned long long)TOTAL(w, unavailable_down),
          (unsigned long long)TOTAL(w, no_retry_after), (unsigned long long)TOTAL(w, resent),
          (unsigned long long)TOTAL(w, stale), (unsigned long long)TOTAL(w, other_codes),
          (unsigned long long)TOTAL(w, timeouts), RESEND_AFTER_MS, (unsigned long long)TOTAL(w, goaways),
          (unsigned long long)TOTAL(w, closes), (unsigned long long)TOTAL(w, pushes));
  CHECK_EQ(total_acked(w), generated);
  CHECK_EQ(TOTAL(w, no_retry_after), 0);
  CHECK_EQ(TOTAL(w, goaways), 0);
  CHECK_EQ(TOTAL(w, closes), 0);
  CHECK_EQ(TOTAL(w, other_codes), 0);

  stored_list st = {0};
  uint64_t pages = 0;
  pull_everything(srv.port, &st, &pages);
  fprintf(stderr, "  pulled %zu messages in %llu pages\n", st.n, (unsigned long long)pages);
  stored_list db = {0};
  CHECK(mt_store_select(&d, "SELECT session_id, seq, msg_id, sender, sender_device, client_id, body FROM messages",
                        take_row, &db) >= 0);
  long long keys = mt_store_count(&d, "SELECT COUNT(DISTINCT sender, sender_device, client_id) FROM messages");
  CHECKF(keys == (long long)db.n, "%zu rows in the database, %lld distinct send keys", db.n, keys);
  /* what is stored, then what PULL shows of it */
  verify(w, &db, "database");
  compare_pull_with_database(w, &st, &db);

  for (int i = 0; i < N_SENDERS; i++) mt_nb_close(&w->s[i].c);
  CHECK_SERVER_STOPS_CLEANLY(&srv);
  for (int i = 0; i < N_SENDERS; i++) {
    free(w->s[i].p);
    free(w->s[i].a);
  }
  free(st.v);
  free(db.v);
  free(w);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(database_kill9_and_restart_under_100_pipelining_senders_loses_and_doubles_nothing),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof *cases);
}

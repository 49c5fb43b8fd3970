/* msg_crash.c — kill -9 loses and doubles nothing (DESIGN.md reliability
 * invariants 1-3). Four sender devices pipeline SENDs to their direct session
 * with zed and to the group g:crew, each with a minimal reliable client: every
 * unacknowledged SEND is kept and resent in client_id order after HELLO_OK,
 * STALE is resent under a new client_id, and the clients also drop their own
 * connections at random. zed reads everything live (PUSH, PULL_HINT, SYNC,
 * PULL). hubud is killed with SIGKILL at random moments and restarted on the
 * same port and store, five times. Then the store (read directly: SQLite's
 * file, or the MariaDB database with HUBU_TEST_STORE=mariadb, msgtest.h), the
 * senders' ACKs, zed's live view and a fresh device's SYNC + PULL must agree:
 * every ACKed message stored exactly once with its seq and msg_id, no
 * (sender, device, client_id) twice, client_id order = seq order per device
 * and session, every content once, and the readers hold exactly the store.
 * All in one process with non-blocking sockets. HUBU_MSG_SEED reruns a seed.
 *
 * Built with HUBU_CLUSTER_CRASH (tests/cluster.cmake), the same clients and
 * checks run against three hubud nodes in cluster mode on one MariaDB and a
 * private redis-server: 50 sender devices of alice, bob and carol and zed's
 * reader spread over the nodes, each moving to the next node when its
 * connection drops; the faults are kill -9 of a node (restarted on its
 * port), Redis restarted empty, and a node stopped with SIGSTOP for longer
 * than its lease, twice each. On top of the single node's checks: every
 * message first sent after Redis came back empty has a seq above every seq
 * stored before. */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "msgtest.h"

#ifdef HUBU_CLUSTER_CRASH
#define N_NODES 3
#define N_SENDERS 50
#define RESTARTS 6 /* faults: kill -9 of a node, Redis restarted empty, SIGSTOP past the lease; twice each */
#define LEASE_MS 1500
#else
#define N_NODES 1
#define N_SENDERS 4
#define RESTARTS 5
#endif
#define N_SESSIONS 4 /* d:alice:zed d:bob:zed d:carol:zed g:crew */
#define GROUP "g:crew"
#define WINDOW 64
#define MAX_LOGICAL 40000 /* per sender: a bound, not a target */

static const char *const session_names[N_SESSIONS] = {"d:alice:zed", "d:bob:zed", "d:carol:zed", GROUP};

static int session_index(const char *id) {
  for (int i = 0; i < N_SESSIONS; i++)
    if (strcmp(id, session_names[i]) == 0) return i;
  return -1;
}

/* ---- senders ------------------------------------------------------------------- */

typedef struct {
  uint64_t cid, logical;
  int session;
  uint64_t first_ms; /* when it was first sent */
} pend;

typedef struct {
  uint64_t logical, cid, seq, msg_id;
  int session;
  uint64_t first_ms;
} acked_rec;

typedef struct {
  int idx;
  const char *user, *device;
  int direct; /* session index of d:<user>:zed */
  int node;   /* which node it connects to next (the next one after a drop) */
  mt_nb c;
  int state; /* 0 down, 1 HELLO sent, 2 ready */
  uint64_t next_connect_ms;
  uint64_t next_cid, next_logical, max_logical;
  uint64_t max_acked_cid;
  pend *unacked; /* ascending client_id */
  size_t n_unacked, cap_unacked;
  acked_rec *acked;
  size_t n_acked, cap_acked;
  uint64_t stale, internal, dup_acks, drops, reconnects, unavailable, resent;
} sender;

typedef struct {
  uint8_t have;
  int8_t idx;
  uint64_t msg_id, logical;
} rmsg;

typedef struct {
  rmsg *v; /* by seq */
  uint64_t cap, cursor, target, last_pushed;
  uint64_t pull_after;                                 /* the outstanding PULL's after_seq */
  uint64_t last_page_n, last_page_max, last_page_more; /* the last PULL_RESULT, for a failure's report */
  int pull_out;
} rsession;

typedef struct {
  const char *device;
  int node;
  mt_nb c;
  int state;
  uint64_t next_connect_ms;
  rsession s[N_SESSIONS];
  uint64_t rid, held, push_dups, push_disorder, pull_bad, conflicts, reconnects, hints, pages;
  int synced;
} receiver;

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

static void queue_send(sender *s, const pend *p) {
  char body[96];
  size_t len;
  body_of(body, sizeof body, s->idx, p->logical, &len);
  Hubu__V1__Send m = HUBU__V1__SEND__INIT;
  m.client_id = p->cid;
  m.session_id = (char *)session_names[p->session];
  m.body.data = (uint8_t *)body;
  m.body.len = len;
  mt_nb_queue(&s->c, HUBU_FRAME_SEND, &m.base);
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

static void answer_ping(mt_nb *c, const uint8_t *body, uint32_t len) {
  Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, len, body);
  Hubu__V1__Ping pong = HUBU__V1__PING__INIT;
  pong.time_ms = p ? p->time_ms : 0;
  mt_nb_queue(c, HUBU_FRAME_PONG, &pong.base);
  if (p) hubu__v1__ping__free_unpacked(p, NULL);
}

static void sender_down(sender *s, uint64_t now, uint64_t delay) {
  mt_nb_close(&s->c);
  s->state = 0;
  s->node = (s->node + 1) % N_NODES;
  s->next_connect_ms = now + delay;
}

static pend *find_pend(sender *s, uint64_t cid, size_t *at) {
  size_t lo = 0, hi = s->n_unacked;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->unacked[mid].cid < cid)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < s->n_unacked && s->unacked[lo].cid == cid) {
    *at = lo;
    return &s->unacked[lo];
  }
  return NULL;
}

static void push_pend(sender *s, pend p) {
  if (s->n_unacked == s->cap_unacked) {
    s->cap_unacked = s->cap_unacked ? 2 * s->cap_unacked : 256;
    s->unacked = realloc(s->unacked, s->cap_unacked * sizeof *s->unacked);
    REQUIRE(s->unacked != NULL);
  }
  s->unacked[s->n_unacked++] = p;
}

static void sender_ack(sender *s, const Hubu__V1__SendAck *a, uint64_t now) {
  size_t at = 0;
  pend *p = find_pend(s, a->client_id, &at);
  if (!p) {
    report("%s: SEND_ACK for client_id %llu, which is not outstanding (code %s)", s->device,
           (unsigned long long)a->client_id, hubu_code_name(a->code));
    return;
  }
  pend copy = *p;
  if (a->code == HUBU__V1__CODE__OK) {
    if (strcmp(a->session_id, session_names[copy.session]) != 0 || a->seq == 0 || a->msg_id == 0)
      report("%s: SEND_ACK OK for client_id %llu names another session or seq %llu", s->device,
             (unsigned long long)a->client_id, (unsigned long long)a->seq);
    if (s->n_acked == s->cap_acked) {
      s->cap_acked = s->cap_acked ? 2 * s->cap_acked : 1024;
      s->acked = realloc(s->acked, s->cap_acked * sizeof *s->acked);
      REQUIRE(s->acked != NULL);
    }
    s->acked[s->n_acked++] = (acked_rec){copy.logical, copy.cid, a->seq, a->msg_id, copy.session, copy.first_ms};
    if (a->duplicate) s->dup_acks++;
    if (copy.cid > s->max_acked_cid) s->max_acked_cid = copy.cid;
    memmove(&s->unacked[at], &s->unacked[at + 1], (s->n_unacked - at - 1) * sizeof *s->unacked);
    s->n_unacked--;
  } else if (a->code == HUBU__V1__CODE__STALE || a->code == HUBU__V1__CODE__INTERNAL) {
    /* never stored: the same content under a new client_id */
    s->stale += a->code == HUBU__V1__CODE__STALE;
    if (a->code == HUBU__V1__CODE__INTERNAL && s->internal++ < 5)
      fprintf(stderr, "  %s: client_id %llu answered INTERNAL \"%s\"\n", s->device, (unsigned long long)a->client_id,
              a->reason);
    memmove(&s->unacked[at], &s->unacked[at + 1], (s->n_unacked - at - 1) * sizeof *s->unacked);
    s->n_unacked--;
    copy.cid = s->next_cid++;
    push_pend(s, copy);
    if (s->state == 2) queue_send(s, &copy);
  } else if (a->code == HUBU__V1__CODE__UNAVAILABLE) {
    s->unavailable++; /* unknown outcome: reconnect and retry the same client_id */
    sender_down(s, now, 20);
  } else {
    report("%s: SEND_ACK client_id %llu: code %s", s->device, (unsigned long long)a->client_id,
           hubu_code_name(a->code));
    memmove(&s->unacked[at], &s->unacked[at + 1], (s->n_unacked - at - 1) * sizeof *s->unacked);
    s->n_unacked--;
  }
}

static void sender_frame(sender *s, uint8_t type, const uint8_t *body, uint32_t len, uint64_t now) {
  switch (type) {
    case HUBU_FRAME_HELLO_OK: {
      Hubu__V1__HelloOk *ok = hubu__v1__hello_ok__unpack(NULL, len, body);
      if (ok && ok->last_client_id < s->max_acked_cid)
        report("%s: HELLO_OK.last_client_id %llu is below client_id %llu, which was ACKed", s->device,
               (unsigned long long)ok->last_client_id, (unsigned long long)s->max_acked_cid);
      if (ok) hubu__v1__hello_ok__free_unpacked(ok, NULL);
      s->state = 2;
      for (size_t i = 0; i < s->n_unacked; i++) queue_send(s, &s->unacked[i]); /* in client_id order */
      s->resent += s->n_unacked;
      break;
    }
    case HUBU_FRAME_SEND_ACK: {
      Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, len, body);
      if (a) sender_ack(s, a, now);
      if (a) hubu__v1__send_ack__free_unpacked(a, NULL);
      break;
    }
    case HUBU_FRAME_PUSH: { /* the group's and the own user's other device's messages */
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, len, body);
      uint64_t top[N_SESSIONS] = {0};
      for (size_t i = 0; p && i < p->n_messages; i++) {
        int si = session_index(p->messages[i]->session_id);
        if (si < 0)
          report("%s: PUSH of %s", s->device, p->messages[i]->session_id);
        else if (p->messages[i]->seq > top[si])
          top[si] = p->messages[i]->seq;
      }
      for (int si = 0; si < N_SESSIONS; si++)
        if (top[si]) queue_cursor_ack(&s->c, session_names[si], top[si]);
      if (p) hubu__v1__push__free_unpacked(p, NULL);
      break;
    }
    case HUBU_FRAME_PING: answer_ping(&s->c, body, len); break;
    case HUBU_FRAME_PULL_HINT: break;
    case HUBU_FRAME_GOAWAY:
    case HUBU_FRAME_ERROR: sender_down(s, now, 20); break;
    default: report("%s: unexpected frame %s", s->device, hubu_frame_type_name(type)); break;
  }
}

/* ---- the live receiver --------------------------------------------------------------- */

static void receiver_down(receiver *r, uint64_t now) {
  mt_nb_close(&r->c);
  r->state = 0;
  r->node = (r->node + 1) % N_NODES;
  r->synced = 0;
  r->next_connect_ms = now + 20;
  for (int i = 0; i < N_SESSIONS; i++) {
    r->s[i].pull_out = 0;
    r->s[i].last_pushed = 0;
  }
}

static void queue_sync(receiver *r) {
  Hubu__V1__Cursor cur[N_SESSIONS];
  Hubu__V1__Cursor *curs[N_SESSIONS];
  for (int i = 0; i < N_SESSIONS; i++) {
    hubu__v1__cursor__init(&cur[i]);
    cur[i].session_id = (char *)session_names[i];
    cur[i].seq = r->s[i].cursor;
    curs[i] = &cur[i];
  }
  Hubu__V1__SyncRequest q = HUBU__V1__SYNC_REQUEST__INIT;
  q.request_id = ++r->rid;
  q.known = curs;
  q.n_known = N_SESSIONS;
  mt_nb_queue(&r->c, HUBU_FRAME_SYNC, &q.base);
}

/* Takes one message; 1 when it was new. */
static int receiver_take(receiver *r, int si, const Hubu__V1__Message *m) {
  rsession *rs = &r->s[si];
  int idx;
  uint64_t logical;
  if (body_parse(m->body.data, m->body.len, &idx, &logical) != 0 || idx < 0 || idx >= N_SENDERS) {
    report("%s: a message of %s seq %llu has a body not sent by any sender", r->device, session_names[si],
           (unsigned long long)m->seq);
    return 0;
  }
  if (m->seq >= rs->cap) {
    uint64_t cap = rs->cap ? rs->cap : 1024;
    while (cap <= m->seq) cap *= 2;
    rs->v = realloc(rs->v, cap * sizeof *rs->v);
    REQUIRE(rs->v != NULL);
    memset(rs->v + rs->cap, 0, (cap - rs->cap) * sizeof *rs->v);
    rs->cap = cap;
  }
  rmsg *h = &rs->v[m->seq];
  if (h->have) {
    if (h->msg_id != m->msg_id || h->idx != idx || h->logical != logical) {
      r->conflicts++;
      report("%s: seq %llu of session %s came twice with different messages", r->device, (unsigned long long)m->seq,
             session_names[si]);
    }
    return 0;
  }
  h->have = 1;
  h->idx = (int8_t)idx;
  h->msg_id = m->msg_id;
  h->logical = logical;
  r->held++;
  return 1;
}

static void receiver_advance(rsession *rs) {
  while (rs->cursor + 1 < rs->cap && rs->v[rs->cursor + 1].have) rs->cursor++;
}

static void receiver_pull(receiver *r, int si) {
  Hubu__V1__PullRequest p = HUBU__V1__PULL_REQUEST__INIT;
  p.request_id = ++r->rid;
  p.session_id = (char *)session_names[si];
  p.after_seq = r->s[si].cursor;
  p.limit = 500;
  mt_nb_queue(&r->c, HUBU_FRAME_PULL, &p.base);
  r->s[si].pull_out = 1;
  r->s[si].pull_after = p.after_seq;
}

static void receiver_frame(receiver *r, uint8_t type, const uint8_t *body, uint32_t len, uint64_t now) {
  switch (type) {
    case HUBU_FRAME_HELLO_OK:
      r->state = 2;
      queue_sync(r);
      break;
    case HUBU_FRAME_SYNC_RESULT: {
      Hubu__V1__SyncResult *q = hubu__v1__sync_result__unpack(NULL, len, body);
      if (!q || q->code != HUBU__V1__CODE__OK) {
        if (q && q->code == HUBU__V1__CODE__UNAVAILABLE) {
          receiver_down(r, now);
        } else {
          report("%s: SYNC_RESULT %s", r->device, q ? hubu_code_name(q->code) : "does not decode");
        }
      } else {
        for (size_t i = 0; i < q->n_sessions; i++) {
          int si = session_index(q->sessions[i]->session_id);
          if (si < 0) {
            report("%s: SYNC lists %s, not one of zed's sessions", r->device, q->sessions[i]->session_id);
            continue;
          }
          if (q->sessions[i]->max_seq > r->s[si].target) r->s[si].target = q->sessions[i]->max_seq;
        }
        r->synced = 1;
      }
      if (q) hubu__v1__sync_result__free_unpacked(q, NULL);
      break;
    }
    case HUBU_FRAME_PUSH: {
      Hubu__V1__Push *p = hubu__v1__push__unpack(NULL, len, body);
      if (!p) break;
      int touched[N_SESSIONS] = {0};
      for (size_t i = 0; i < p->n_messages; i++) {
        const Hubu__V1__Message *m = p->messages[i];
        int si = session_index(m->session_id);
        if (si < 0) {
          report("%s: PUSH of %s", r->device, m->session_id);
          continue;
        }
        rsession *rs = &r->s[si];
        if (receiver_take(r, si, m)) {
          /* on one connection, new messages of a session come in increasing seq */
          if (m->seq <= rs->last_pushed) {
            r->push_disorder++;
            report("%s: PUSH of seq %llu after seq %llu on the same connection", session_names[si],
                   (unsigned long long)m->seq, (unsigned long long)rs->last_pushed);
          }
        } else {
          r->push_dups++; /* a retransmit, dropped */
        }
        if (m->seq > rs->last_pushed) rs->last_pushed = m->seq;
        if (m->seq > rs->target) rs->target = m->seq; /* a gap, if any, is pulled */
        touched[si] = 1;
      }
      for (int si = 0; si < N_SESSIONS; si++) {
        if (!touched[si]) continue;
        receiver_advance(&r->s[si]);
        queue_cursor_ack(&r->c, session_names[si], r->s[si].cursor);
      }
      hubu__v1__push__free_unpacked(p, NULL);
      break;
    }
    case HUBU_FRAME_PULL_HINT: {
      Hubu__V1__PullHint *h = hubu__v1__pull_hint__unpack(NULL, len, body);
      int si = h ? session_index(h->session_id) : -1;
      if (si >= 0 && h->max_seq > r->s[si].target) r->s[si].target = h->max_seq;
      r->hints++;
      if (h) hubu__v1__pull_hint__free_unpacked(h, NULL);
      break;
    }
    case HUBU_FRAME_PULL_RESULT: {
      Hubu__V1__PullResult *q = hubu__v1__pull_result__unpack(NULL, len, body);
      int si = q ? session_index(q->session_id) : -1;
      if (si < 0) {
        report("%s: PULL_RESULT that does not decode or names no session of zed", r->device);
      } else if (q->code == HUBU__V1__CODE__UNAVAILABLE) {
        r->s[si].pull_out = 0;
      } else if (q->code != HUBU__V1__CODE__OK) {
        report("%s: PULL_RESULT %s", r->device, hubu_code_name(q->code));
        r->s[si].pull_out = 0;
      } else {
        rsession *rs = &r->s[si];
        rs->pull_out = 0;
        r->pages++;
        uint64_t prev = rs->pull_after; /* pushes may have moved the cursor on since the PULL left */
        for (size_t i = 0; i < q->n_messages; i++) {
          const Hubu__V1__Message *m = q->messages[i];
          if (m->seq <= prev) {
            r->pull_bad++;
            report("%s: PULL after %llu returned seq %llu out of order", session_names[si], (unsigned long long)prev,
                   (unsigned long long)m->seq);
          }
          prev = m->seq;
          receiver_take(r, si, m);
        }
        rs->last_page_n = q->n_messages;
        rs->last_page_max = q->max_seq;
        rs->last_page_more = q->has_more;
        if (prev > rs->cursor) rs->cursor = prev; /* the seqs in between do not exist */
        receiver_advance(rs);
        if (q->max_seq > rs->target) rs->target = q->max_seq;
        /* more rows follow this page's last one (prev); pushes may have
         * brought the cursor past them already, and then nothing is owed */
        if (q->has_more && rs->target <= prev) rs->target = prev + 1;
        queue_cursor_ack(&r->c, session_names[si], rs->cursor);
      }
      if (q) hubu__v1__pull_result__free_unpacked(q, NULL);
      break;
    }
    case HUBU_FRAME_PING: answer_ping(&r->c, body, len); break;
    case HUBU_FRAME_GOAWAY:
    case HUBU_FRAME_ERROR: receiver_down(r, now); break;
    default: report("%s: unexpected frame %s", r->device, hubu_frame_type_name(type)); break;
  }
}

/* ---- the loop --------------------------------------------------------------------------- */

typedef struct {
  sender s[N_SENDERS];
  receiver r;
  int ports[N_NODES];
  int generating;
} world;

static void receiver_tick(receiver *r, int port, uint64_t now) {
  if (r->state == 0 && now >= r->next_connect_ms) {
    if (mt_nb_connect(&r->c, port) == 0 && mt_nb_queue_hello(&r->c, "zed", r->device) == 0) {
      r->state = 1;
      r->reconnects++;
    } else {
      receiver_down(r, now);
    }
  }
  if (r->state == 2 && r->synced)
    for (int si = 0; si < N_SESSIONS; si++)
      if (!r->s[si].pull_out && r->s[si].cursor < r->s[si].target) receiver_pull(r, si);
}

static void sender_tick(world *w, sender *s, uint64_t now) {
  if (s->state == 0 && now >= s->next_connect_ms) {
    if (mt_nb_connect(&s->c, w->ports[s->node]) == 0 && mt_nb_queue_hello(&s->c, s->user, s->device) == 0) {
      s->state = 1;
      s->reconnects++;
    } else {
      sender_down(s, now, 30);
    }
    return;
  }
  if (s->state != 2) return;
  if (w->generating && s->n_unacked < WINDOW && s->next_logical <= s->max_logical && mt_rand(&rng) % 3 == 0) {
    uint64_t burst = mt_rand_range(&rng, 1, 16);
    for (uint64_t k = 0; k < burst && s->next_logical <= s->max_logical; k++) {
      pend p = {s->next_cid++, s->next_logical++, (mt_rand(&rng) & 1) ? s->direct : N_SESSIONS - 1, now};
      push_pend(s, p);
      queue_send(s, &p);
    }
  }
  if (w->generating && mt_rand(&rng) % 600 == 0) { /* the client drops its own connection */
    s->drops++;
    sender_down(s, now, mt_rand_range(&rng, 0, 50));
  }
}

static void world_pump(world *w, int timeout_ms) {
  mt_nb *conns[N_SENDERS + 1];
  for (int i = 0; i < N_SENDERS; i++) conns[i] = &w->s[i].c;
  conns[N_SENDERS] = &w->r.c;
  mt_nb_poll(conns, N_SENDERS + 1, timeout_ms);
  uint64_t now = e2e_now_ms();
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    uint8_t type;
    const uint8_t *body;
    uint32_t len;
    size_t size;
    while (s->c.fd >= 0 && mt_nb_frame(&s->c, &type, &body, &len, &size)) {
      sender_frame(s, type, body, len, now);
      if (s->c.fd < 0) break; /* went down inside */
      mt_nb_consume(&s->c, size);
    }
    if (s->c.fd >= 0 && s->c.dead) sender_down(s, now, 20);
    sender_tick(w, s, now);
  }
  receiver *r = &w->r;
  uint8_t type;
  const uint8_t *body;
  uint32_t len;
  size_t size;
  while (r->c.fd >= 0 && mt_nb_frame(&r->c, &type, &body, &len, &size)) {
    receiver_frame(r, type, body, len, now);
    if (r->c.fd < 0) break;
    mt_nb_consume(&r->c, size);
  }
  if (r->c.fd >= 0 && r->c.dead) receiver_down(r, now);
  receiver_tick(r, w->ports[r->node], now);
}

static void run_for(world *w, uint64_t ms) {
  uint64_t end = e2e_now_ms() + ms;
  while (e2e_now_ms() < end) world_pump(w, 2);
}

static int senders_drained(world *w) {
  for (int i = 0; i < N_SENDERS; i++)
    if (w->s[i].n_unacked || w->s[i].state != 2) return 0;
  return 1;
}

static int receiver_caught_up(receiver *r) {
  if (r->state != 2 || !r->synced) return 0;
  for (int i = 0; i < N_SESSIONS; i++)
    if (r->s[i].pull_out || r->s[i].cursor < r->s[i].target) return 0;
  return 1;
}

/* ---- the store's view ------------------------------------------------------------------ */

typedef struct {
  int session;
  uint64_t seq, msg_id, cid, logical;
  int idx; /* sender by body; -1 unparsable */
  char sender[65], device[65];
} row;

typedef struct {
  row *v;
  size_t n, cap;
} row_list;

static void take_row(void *ctx, int n, const char *const *cols, const size_t *lens) {
  row_list *l = ctx;
  if (n < 7) return;
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 4096;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
    REQUIRE(l->v != NULL);
  }
  row *x = &l->v[l->n++];
  memset(x, 0, sizeof *x);
  x->session = cols[0] ? session_index(cols[0]) : -1;
  x->seq = cols[1] ? strtoull(cols[1], NULL, 10) : 0;
  x->msg_id = cols[2] ? strtoull(cols[2], NULL, 10) : 0;
  snprintf(x->sender, sizeof x->sender, "%s", cols[3] ? cols[3] : "");
  snprintf(x->device, sizeof x->device, "%s", cols[4] ? cols[4] : "");
  x->cid = cols[5] ? strtoull(cols[5], NULL, 10) : 0;
  if (!cols[6] || body_parse((const uint8_t *)cols[6], lens[6], &x->idx, &x->logical) != 0) x->idx = -1;
}

/* One row of a failure's report, with the wall clock to hold its times against. */
static void print_row(void *ctx, int n, const char *const *cols, const size_t *lens) {
  (void)ctx;
  (void)lens;
  fprintf(stderr, "   ");
  for (int i = 0; i < n; i++) fprintf(stderr, " %s", cols[i] ? cols[i] : "NULL");
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  fprintf(stderr, "  (wall clock now %lld ms)\n", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Every stored message, read from the store directly (SQLite's file, or the
 * MariaDB database), by session and seq. */
static row *load_rows(const mt_dir *d, size_t *n_out) {
  row_list l = {0};
  *n_out = 0;
  long n = mt_store_select(
      d,
      "SELECT session_id, seq, msg_id, sender, sender_device, client_id, body FROM messages ORDER BY session_id, seq",
      take_row, &l);
  if (n < 0) {
    free(l.v);
    return NULL;
  }
  if (!l.v) l.v = malloc(sizeof *l.v); /* an empty store is a valid answer */
  REQUIRE(l.v != NULL);
  *n_out = l.n;
  return l.v;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* A fresh device of zed: SYNC from nothing, PULL every listed session; must equal rows. */
static void fresh_reader_matches_store(int port, const row *rows, size_t n_rows) {
  int fd = MT_HELLO(port, "zed", "fresh", NULL);
  if (fd < 0) return;
  mt_skip_pushes = 1;
  CHECK(mt_sync_request(fd, 1, 0, NULL, NULL) == 0);
  Hubu__V1__SyncResult *q = MT_SYNC_RESULT(fd);
  if (!q) {
    close(fd);
    return;
  }
  uint64_t listed[N_SESSIONS] = {0};
  for (size_t i = 0; i < q->n_sessions; i++) {
    int si = session_index(q->sessions[i]->session_id);
    CHECKF(si >= 0, "fresh SYNC lists %s", q->sessions[i]->session_id);
    if (si >= 0) listed[si] = q->sessions[i]->max_seq;
  }
  hubu__v1__sync_result__free_unpacked(q, NULL);
  size_t at = 0, matched = 0, mismatched = 0, pulled = 0;
  for (int si = 0; si < N_SESSIONS; si++) {
    uint64_t store_max = 0;
    for (size_t k = 0; k < n_rows; k++)
      if (rows[k].session == si && rows[k].seq > store_max) store_max = rows[k].seq;
    CHECKF(listed[si] == store_max, "fresh SYNC: %s max_seq %llu, store %llu", session_names[si],
           (unsigned long long)listed[si], (unsigned long long)store_max);
    while (at < n_rows && rows[at].session < si) at++;
    uint64_t after = 0;
    for (int page = 0; page < 10000; page++) {
      Hubu__V1__PullResult *pr = MT_PULL(fd, 100 + (uint64_t)page, session_names[si], after, 500);
      if (!pr) break;
      for (size_t i = 0; i < pr->n_messages; i++) {
        const Hubu__V1__Message *m = pr->messages[i];
        pulled++;
        int idx;
        uint64_t logical;
        int parsed = body_parse(m->body.data, m->body.len, &idx, &logical) == 0;
        if (at < n_rows && rows[at].session == si && rows[at].seq == m->seq && rows[at].msg_id == m->msg_id && parsed &&
            rows[at].idx == idx && rows[at].logical == logical && m->seq > after) {
          matched++;
        } else if (mismatched++ < 5) {
          e2e_fail(__FILE__, __LINE__, "fresh PULL %s: seq %llu msg_id %llu does not match the store's next row",
                   session_names[si], (unsigned long long)m->seq, (unsigned long long)m->msg_id);
        }
        after = m->seq;
        at++;
      }
      int more = pr->has_more;
      hubu__v1__pull_result__free_unpacked(pr, NULL);
      if (!more) break;
    }
  }
  mt_skip_pushes = 0;
  fprintf(stderr, "  fresh device: SYNC + PULL got %zu messages, %zu match the store row for row, %zu do not\n", pulled,
          matched, mismatched);
  CHECK_EQ(pulled, n_rows);
  CHECK_EQ(matched, n_rows);
  CHECK_EQ(mismatched, 0);
  close(fd);
}

/* ---- the servers and the faults ---------------------------------------------------------- */

static uint64_t acked_so_far(const world *w) {
  uint64_t acked = 0;
  for (int i = 0; i < N_SENDERS; i++) acked += w->s[i].n_acked;
  return acked;
}

#ifdef HUBU_CLUSTER_CRASH
/* What the store held when Redis came back empty: every message first sent
 * after `at` must get a seq above max_seq of its session. */
typedef struct {
  uint64_t at;
  uint64_t max_seq[N_SESSIONS];
} redis_loss;

static redis_loss losses[RESTARTS];
static int n_losses;
static char redis_url[256], redis_dir[512], redis_script[512];

static void take_max_seq(void *ctx, int n, const char *const *cols, const size_t *lens) {
  (void)lens;
  redis_loss *l = ctx;
  int si = n >= 2 && cols[0] ? session_index(cols[0]) : -1;
  if (si >= 0 && cols[1]) l->max_seq[si] = strtoull(cols[1], NULL, 10);
}

static int start_node(e2e_server *srv, const mt_dir *d, int node, const char *listen) {
  char id[16], lease[16];
  snprintf(id, sizeof id, "%d", node + 1);
  snprintf(lease, sizeof lease, "%d", LEASE_MS);
  return e2e_server_start(srv, "--store", d->store, "--log-level", "warn", "--cluster", redis_url, "--node-id", id,
                          "--cluster-lease-ms", lease, "--pull-settle-ms", "300", "--listen", listen, NULL);
}

static void redis_script_run(const char *what) {
  const char *argv[] = {redis_script, what, redis_dir, NULL};
  CHECKF(mt_run(argv, 30000) == 0, "redis-private.sh %s failed", what);
}
#endif

static void crash_world_init(world *w) {
#ifdef HUBU_CLUSTER_CRASH
  static const char *const users[3] = {"alice", "bob", "carol"};
  static char devices[N_SENDERS][16];
  for (int i = 0; i < N_SENDERS; i++) {
    snprintf(devices[i], sizeof devices[i], "%c-dev%02d", users[i % 3][0], i);
    w->s[i].user = users[i % 3];
    w->s[i].device = devices[i];
    w->s[i].direct = i % 3;
    w->s[i].node = i % N_NODES;
  }
  w->r.node = 1;
#else
  static const char *const users[N_SENDERS] = {"alice", "alice", "bob", "carol"};
  static const char *const devices[N_SENDERS] = {"a-phone", "a-laptop", "b-phone", "c-phone"};
  static const int directs[N_SENDERS] = {0, 0, 1, 2};
  for (int i = 0; i < N_SENDERS; i++) {
    w->s[i].user = users[i];
    w->s[i].device = devices[i];
    w->s[i].direct = directs[i];
  }
#endif
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    s->idx = i;
    s->c.fd = -1;
    s->next_cid = 1;
    s->next_logical = 1;
    s->max_logical = MAX_LOGICAL;
  }
  w->r.device = "z-live";
  w->r.c.fd = -1;
  w->generating = 1;
}

static void crash_kill9_loses_and_doubles_nothing(void) {
  rng = mt_seed();
  world *w = calloc(1, sizeof *w);
  REQUIRE(w != NULL);
  crash_world_init(w);

  mt_dir d;
  mt_dir_make(&d);
  REQUIRE(mt_group_create(&d, GROUP, "alice", "bob", "carol", "zed", NULL) == 0);
  e2e_server nodes[N_NODES];
  char listen[N_NODES][64];
  uint64_t t0 = e2e_now_ms();
  int restarts = 0;
#ifdef HUBU_CLUSTER_CRASH
  const char *renv = getenv("HUBU_REDIS_ENV"), *rdir = getenv("HUBU_REDIS_DIR"), *rscript = getenv("HUBU_REDIS_SCRIPT");
  REQUIRE(renv && rdir && rscript && mt_store_is_mariadb());
  REQUIRE(mt_env_value(renv, "REDIS_URL", redis_url, sizeof redis_url) == 0);
  snprintf(redis_dir, sizeof redis_dir, "%s", rdir);
  snprintf(redis_script, sizeof redis_script, "%s", rscript);
  for (int n = 0; n < N_NODES; n++) {
    snprintf(listen[n], sizeof listen[n], "127.0.0.1:%d", e2e_free_port());
    REQUIRE(start_node(&nodes[n], &d, n, listen[n]) == 0);
    w->ports[n] = nodes[n].port;
  }
  fprintf(stderr, "  3 nodes on %s %s %s, store %s, redis %s; %d senders, window %d, %d faults\n", listen[0], listen[1],
          listen[2], d.store, redis_url, N_SENDERS, WINDOW, RESTARTS);
  for (int k = 0; k < RESTARTS; k++) {
    uint64_t life = mt_rand_range(&rng, 800, 2500);
    run_for(w, life);
    int n = (int)mt_rand_range(&rng, 0, N_NODES - 1);
    double at_s = (double)(e2e_now_ms() - t0) / 1000.0;
    if (k % 3 == 0) {
      e2e_server_signal(&nodes[n], SIGKILL);
      int st = e2e_server_wait(&nodes[n], 5000);
      CHECKF(st == 128 + SIGKILL, "node %d: status %d after SIGKILL", n + 1, st);
      e2e_server_cleanup(&nodes[n]);
      fprintf(stderr, "  %5.1f s: kill -9 of node %d; %llu ACKed so far\n", at_s, n + 1,
              (unsigned long long)acked_so_far(w));
      run_for(w, mt_rand_range(&rng, 100, 600)); /* its clients meet a dead port and move on */
      REQUIRE(start_node(&nodes[n], &d, n, listen[n]) == 0);
    } else if (k % 3 == 1) {
      redis_script_run("kill9");
      run_for(w, mt_rand_range(&rng, 50, 400)); /* sends meet UNAVAILABLE */
      redis_script_run("restart");
      redis_loss *l = &losses[n_losses++];
      l->at = e2e_now_ms();
      CHECK(mt_store_select(&d, "SELECT session_id, MAX(seq) FROM messages GROUP BY session_id", take_max_seq, l) >= 0);
      fprintf(stderr, "  %5.1f s: Redis killed and restarted empty; %llu ACKed so far\n", at_s,
              (unsigned long long)acked_so_far(w));
    } else {
      e2e_server_signal(&nodes[n], SIGSTOP);
      fprintf(stderr, "  %5.1f s: node %d stopped (SIGSTOP) for %d ms; %llu ACKed so far\n", at_s, n + 1,
              LEASE_MS + 1500, (unsigned long long)acked_so_far(w));
      run_for(w, LEASE_MS + 1500);
      e2e_server_signal(&nodes[n], SIGCONT);
    }
    restarts++;
  }
  e2e_server *srv = &nodes[0];
#else
  e2e_server *srv = &nodes[0];
  REQUIRE(MT_START(srv, &d, NULL) == 0);
  w->ports[0] = srv->port;
  snprintf(listen[0], sizeof listen[0], "127.0.0.1:%d", srv->port);
  fprintf(stderr, "  hubud on %s, store %s; %d senders, window %d, %d kills\n", listen[0], d.store, N_SENDERS, WINDOW,
          RESTARTS);
  for (int k = 0; k < RESTARTS; k++) {
    uint64_t life = mt_rand_range(&rng, 500, 2000);
    run_for(w, life);
    e2e_server_signal(srv, SIGKILL);
    int st = e2e_server_wait(srv, 5000);
    CHECKF(st == 128 + SIGKILL, "hubud status %d after SIGKILL", st);
    e2e_server_cleanup(srv);
    fprintf(stderr, "  %5.1f s: kill -9 after %llu ms; %llu ACKed so far\n", (double)(e2e_now_ms() - t0) / 1000.0,
            (unsigned long long)life, (unsigned long long)acked_so_far(w));
    run_for(w, mt_rand_range(&rng, 0, 300)); /* the clients meet a dead port */
    REQUIRE(MT_START(srv, &d, "--listen", listen[0], NULL) == 0);
    restarts++;
  }
#endif
  run_for(w, 1000);
  /* no new messages; every unacknowledged one is resent until ACKed */
  w->generating = 0;
  uint64_t deadline = e2e_now_ms() + 20000;
  while (!senders_drained(w) && e2e_now_ms() < deadline) world_pump(w, 2);
  CHECKF(senders_drained(w), "the senders still hold unacknowledged messages after 20 s");
  /* zed's live view catches up: a last SYNC, then the pulls it asks for */
  if (w->r.state == 2) {
    w->r.synced = 0;
    queue_sync(&w->r);
  }
  deadline = e2e_now_ms() + 15000;
  while (!receiver_caught_up(&w->r) && e2e_now_ms() < deadline) world_pump(w, 2);
  int caught_up = CHECKF(receiver_caught_up(&w->r), "zed did not catch up in 15 s");
  if (!caught_up)
    for (int si = 0; si < N_SESSIONS; si++) {
      const rsession *rs = &w->r.s[si];
      fprintf(stderr,
              "  zed %s: state %d synced %d; cursor %llu target %llu last pushed %llu; PULL out %d; last page: %llu "
              "messages, max_seq %llu, has_more %llu\n",
              session_names[si], w->r.state, w->r.synced, (unsigned long long)rs->cursor,
              (unsigned long long)rs->target, (unsigned long long)rs->last_pushed, rs->pull_out,
              (unsigned long long)rs->last_page_n, (unsigned long long)rs->last_page_max,
              (unsigned long long)rs->last_page_more);
    }
  run_for(w, 200); /* late retransmits, if any, must be duplicates */
  uint64_t run_ms = e2e_now_ms() - t0;

  /* the store, read directly (hubud keeps running: neither SQLite's WAL
   * readers nor a MariaDB reader disturb it) */
  size_t n_rows = 0;
  row *rows = load_rows(&d, &n_rows);
  REQUIRE(rows != NULL);
  if (!caught_up) {
    uint64_t top[N_SESSIONS] = {0};
    for (size_t i = 0; i < n_rows; i++)
      if (rows[i].session >= 0 && rows[i].seq > top[rows[i].session]) top[rows[i].session] = rows[i].seq;
    for (int si = 0; si < N_SESSIONS; si++) {
      fprintf(stderr, "  store %s: highest seq %llu\n", session_names[si], (unsigned long long)top[si]);
      if (w->r.s[si].cursor >= w->r.s[si].target) continue;
      char sql[300]; /* what a PULL after zed's cursor reads: the fence and the rows just above it */
      snprintf(sql, sizeof sql, "SELECT 'fence', fence_seq, 'max_seq', max_seq FROM sessions WHERE session_id = '%s'",
               session_names[si]);
      mt_store_select(&d, sql, print_row, NULL);
      snprintf(
          sql, sizeof sql,
          "SELECT 'seq', seq, 'server_time_ms', server_time_ms FROM messages WHERE session_id = '%s' AND seq > %llu"
          " ORDER BY seq LIMIT 3",
          session_names[si], (unsigned long long)w->r.s[si].cursor);
      mt_store_select(&d, sql, print_row, NULL);
    }
  }
  fresh_reader_matches_store(srv->port, rows, n_rows);
  for (int i = 0; i < N_SENDERS; i++) mt_nb_close(&w->s[i].c);
  mt_nb_close(&w->r.c);
  for (int n = 0; n < N_NODES; n++) CHECK_SERVER_STOPS_CLEANLY(&nodes[n]);

  uint64_t total_acked = 0, generated = 0, stale = 0, internal = 0, dup_acks = 0, drops = 0, unavailable = 0,
           resent = 0;
  uint64_t missing_acked = 0, wrong_acked = 0, dup_content = 0, unparsable = 0, never_stored = 0;
  /* content -> row: logical numbers per sender */
  uint64_t *where[N_SENDERS];
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    total_acked += s->n_acked;
    generated += s->next_logical - 1;
    stale += s->stale;
    internal += s->internal;
    dup_acks += s->dup_acks;
    drops += s->drops;
    unavailable += s->unavailable;
    resent += s->resent;
    where[i] = calloc(s->next_logical + 1, sizeof *where[i]); /* row index + 1 */
    REQUIRE(where[i] != NULL);
  }
  for (size_t k = 0; k < n_rows; k++) {
    row *x = &rows[k];
    if (x->session < 0 || x->idx < 0 || x->idx >= N_SENDERS || x->logical < 1 ||
        x->logical >= w->s[x->idx].next_logical || strcmp(x->sender, w->s[x->idx].user) != 0 ||
        strcmp(x->device, w->s[x->idx].device) != 0) {
      if (unparsable++ < 5)
        e2e_fail(__FILE__, __LINE__, "stored row seq %llu of session %d: content not from its sender",
                 (unsigned long long)x->seq, x->session);
      continue;
    }
    if (where[x->idx][x->logical]) {
      if (dup_content++ < 5)
        e2e_fail(__FILE__, __LINE__, "content %d:%llu stored twice (seqs %llu and %llu)", x->idx,
                 (unsigned long long)x->logical, (unsigned long long)rows[where[x->idx][x->logical] - 1].seq,
                 (unsigned long long)x->seq);
    } else {
      where[x->idx][x->logical] = k + 1;
    }
  }
  /* every ACK names its stored row */
  for (int i = 0; i < N_SENDERS; i++) {
    sender *s = &w->s[i];
    uint8_t *acked_logical = calloc(s->next_logical + 1, 1);
    REQUIRE(acked_logical != NULL);
    for (size_t a = 0; a < s->n_acked; a++) {
      acked_rec *ar = &s->acked[a];
      if (acked_logical[ar->logical]++) {
        if (wrong_acked++ < 5)
          e2e_fail(__FILE__, __LINE__, "%s: content %llu ACKed twice", s->device, (unsigned long long)ar->logical);
        continue;
      }
      size_t at = where[i][ar->logical];
      if (!at) {
        if (missing_acked++ < 5)
          e2e_fail(__FILE__, __LINE__, "%s: ACKed content %llu (client_id %llu, %s seq %llu) is not in the store",
                   s->device, (unsigned long long)ar->logical, (unsigned long long)ar->cid, session_names[ar->session],
                   (unsigned long long)ar->seq);
        continue;
      }
      row *x = &rows[at - 1];
      if (x->session != ar->session || x->seq != ar->seq || x->msg_id != ar->msg_id || x->cid != ar->cid) {
        if (wrong_acked++ < 5)
          e2e_fail(__FILE__, __LINE__,
                   "%s: content %llu ACKed as %s seq %llu msg_id %llu client_id %llu, stored as %s seq %llu msg_id "
                   "%llu client_id %llu",
                   s->device, (unsigned long long)ar->logical, session_names[ar->session], (unsigned long long)ar->seq,
                   (unsigned long long)ar->msg_id, (unsigned long long)ar->cid,
                   x->session >= 0 ? session_names[x->session] : "?", (unsigned long long)x->seq,
                   (unsigned long long)x->msg_id, (unsigned long long)x->cid);
      }
    }
    for (uint64_t l = 1; l < s->next_logical; l++) never_stored += !where[i][l];
    free(acked_logical);
  }
  /* per session: seqs strictly increasing (unique); per device and session: client_id order = seq order */
  uint64_t seq_disorder = 0, cid_disorder = 0, dup_cid = 0, holes = 0;
  uint64_t last_cid[N_SENDERS][N_SESSIONS] = {{0}};
  for (size_t k = 0; k < n_rows; k++) {
    row *x = &rows[k];
    if (k && rows[k - 1].session == x->session) {
      if (x->seq <= rows[k - 1].seq) seq_disorder++;
      holes += x->seq - rows[k - 1].seq - 1;
    } else if (x->seq != 1) {
      holes += x->seq - 1;
    }
    if (x->idx < 0 || x->session < 0) continue;
    if (x->cid <= last_cid[x->idx][x->session]) {
      if (cid_disorder++ < 5)
        e2e_fail(__FILE__, __LINE__, "%s: client_id %llu stored at %s seq %llu after a higher client_id",
                 w->s[x->idx].device, (unsigned long long)x->cid, session_names[x->session],
                 (unsigned long long)x->seq);
    }
    last_cid[x->idx][x->session] = x->cid;
  }
  { /* no (sender, device, client_id) twice, no msg_id twice */
    uint64_t *keys = malloc((n_rows + 1) * sizeof *keys), *ids = malloc((n_rows + 1) * sizeof *ids);
    REQUIRE(keys && ids);
    for (size_t k = 0; k < n_rows; k++) {
      keys[k] = ((uint64_t)(rows[k].idx & 0xff) << 56) | rows[k].cid;
      ids[k] = rows[k].msg_id;
    }
    qsort(keys, n_rows, sizeof *keys, cmp_u64);
    qsort(ids, n_rows, sizeof *ids, cmp_u64);
    uint64_t dup_ids = 0;
    for (size_t k = 1; k < n_rows; k++) {
      dup_cid += keys[k] == keys[k - 1];
      dup_ids += ids[k] == ids[k - 1];
    }
    CHECKF(dup_ids == 0, "%llu msg_ids stored twice", (unsigned long long)dup_ids);
    free(keys);
    free(ids);
  }
  /* zed's live view equals the store */
  receiver *r = &w->r;
  uint64_t r_match = 0, r_missing = 0, r_extra = 0;
  {
    size_t k = 0;
    for (int si = 0; si < N_SESSIONS; si++) {
      uint64_t store_n = 0;
      for (; k < n_rows && rows[k].session == si; k++) {
        store_n++;
        row *x = &rows[k];
        rmsg *h = x->seq < r->s[si].cap ? &r->s[si].v[x->seq] : NULL;
        if (h && h->have && h->msg_id == x->msg_id && h->idx == x->idx && h->logical == x->logical)
          r_match++;
        else if (r_missing++ < 5)
          e2e_fail(__FILE__, __LINE__, "zed lacks (or holds another) %s seq %llu", session_names[si],
                   (unsigned long long)x->seq);
      }
      uint64_t held = 0;
      for (uint64_t q = 0; q < r->s[si].cap; q++) held += r->s[si].v[q].have;
      if (held > store_n) r_extra += held - store_n;
    }
  }
  fprintf(stderr,
          "  summary after %.1f s: %d restarts (kill -9); %llu messages generated, %llu ACKed (%llu as duplicate "
          "retries), %llu resent after reconnects, %llu STALE resent under new client_ids, %llu INTERNAL, %llu "
          "UNAVAILABLE, %llu client-side drops; store rows %zu (holes %llu)\n",
          (double)run_ms / 1000.0, restarts, (unsigned long long)generated, (unsigned long long)total_acked,
          (unsigned long long)dup_acks, (unsigned long long)resent, (unsigned long long)stale,
          (unsigned long long)internal, (unsigned long long)unavailable, (unsigned long long)drops, n_rows,
          (unsigned long long)holes);
  fprintf(stderr,
          "  zed live: holds %llu, %llu match the store, missing %llu, extra %llu; %llu retransmits dropped, %llu "
          "PULL_HINTs, %llu PULL pages, %llu connections\n",
          (unsigned long long)r->held, (unsigned long long)r_match, (unsigned long long)r_missing,
          (unsigned long long)r_extra, (unsigned long long)r->push_dups, (unsigned long long)r->hints,
          (unsigned long long)r->pages, (unsigned long long)r->reconnects);
  uint64_t duplicates = dup_content + dup_cid + r->conflicts + r_extra;
  fprintf(stderr,
          "  duplicates found = %llu; ACKed but not stored %llu; ACK/store mismatches %llu; generated but never "
          "stored %llu; seq disorder %llu; client_id/seq disorder %llu; foreign rows %llu\n",
          (unsigned long long)duplicates, (unsigned long long)missing_acked, (unsigned long long)wrong_acked,
          (unsigned long long)never_stored, (unsigned long long)seq_disorder, (unsigned long long)cid_disorder,
          (unsigned long long)unparsable);
#ifdef HUBU_CLUSTER_CRASH
  { /* after Redis came back empty, seqs jumped above everything stored before */
    uint64_t after_loss = 0, below = 0;
    for (int i = 0; i < N_SENDERS; i++)
      for (size_t a = 0; a < w->s[i].n_acked; a++) {
        const acked_rec *ar = &w->s[i].acked[a];
        for (int l = 0; l < n_losses; l++) {
          if (ar->first_ms <= losses[l].at) continue;
          after_loss++;
          if (ar->seq <= losses[l].max_seq[ar->session] && below++ < 5)
            e2e_fail(__FILE__, __LINE__, "%s seq %llu, first sent after Redis loss %d, is not above %llu",
                     session_names[ar->session], (unsigned long long)ar->seq, l + 1,
                     (unsigned long long)losses[l].max_seq[ar->session]);
        }
      }
    fprintf(stderr,
            "  after %d Redis losses: %llu ACKs of messages first sent after one, %llu not above the store's "
            "seqs before it\n",
            n_losses, (unsigned long long)after_loss, (unsigned long long)below);
    CHECK(after_loss > 0);
    CHECK_EQ(below, 0);
  }
#endif
  CHECK_EQ(restarts, RESTARTS);
  CHECKF(internal == 0, "%llu SENDs answered INTERNAL (a store failure) during the run", (unsigned long long)internal);
  CHECK(total_acked > 0);
  CHECK_EQ(duplicates, 0);
  CHECK_EQ(missing_acked, 0);
  CHECK_EQ(wrong_acked, 0);
  CHECK_EQ(never_stored, 0); /* every message was ACKed in the end, so every one is stored */
  CHECK_EQ(total_acked, generated);
  CHECK_EQ(n_rows, generated);
  CHECK_EQ(seq_disorder, 0);
  CHECK_EQ(cid_disorder, 0);
  CHECK_EQ(unparsable, 0);
  CHECK_EQ(r_missing, 0);
  CHECK_EQ(r_extra, 0);
  CHECK_EQ(r->push_disorder, 0);
  CHECK_EQ(r->pull_bad, 0);

  for (int i = 0; i < N_SENDERS; i++) {
    free(w->s[i].unacked);
    free(w->s[i].acked);
    free(where[i]);
  }
  for (int si = 0; si < N_SESSIONS; si++) free(w->r.s[si].v);
  free(rows);
  free(w);
}

#ifdef HUBU_CLUSTER_CRASH
static void cluster_node_kill9_redis_loss_and_sigstop_lose_and_double_nothing(void) {
  crash_kill9_loses_and_doubles_nothing();
}
#endif

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
#ifdef HUBU_CLUSTER_CRASH
      /* registered by name in tests/cluster.cmake (messaging.cmake's scan is for this file's own build) */
      {"cluster_node_kill9_redis_loss_and_sigstop_lose_and_double_nothing",
       cluster_node_kill9_redis_loss_and_sigstop_lose_and_double_nothing},
#else
      E2E_CASE(crash_kill9_loses_and_doubles_nothing),
#endif
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof *cases);
}

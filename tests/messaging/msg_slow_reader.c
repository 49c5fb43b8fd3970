/* msg_slow_reader.c — a stalled reader costs bounded memory and stalls no one
 * (DESIGN.md reliability invariant 4): ray connects and stops reading while
 * sam sends him 100,000 small messages (pipelined, window 256). Meanwhile
 * pat and quinn keep talking and PINGing, and hubud's VmRSS is sampled. Then
 * ray reads again, SYNCs and PULLs, and holds all 100,000 in order, once each.
 *
 * Bounds (checked): RSS growth < 200 MiB over the start; PING round trip and
 * SEND -> SEND_ACK wait of the other pair < 1 s (2 s under sanitizers); the
 * other pair's messages all arrive, in order, while the flood runs.
 * Two more cases load the other direction: a sender that never reads its
 * SEND_ACKs, and a sender that pipelines 500,000 SENDs at once. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "msgtest.h"

#define FLOOD "d:ray:sam"
#define CHAT "d:pat:quinn"
#define WINDOW 256
#define RSS_BOUND_KB (200L * 1024)
#define PING_BOUND_MS (MT_SANITIZED ? 2000 : 1000)

typedef struct {
  mt_nb c;
  const char *user;
  int ready; /* HELLO_OK seen */
} peer;

static int connect_peer(peer *p, int port, const char *user) {
  p->user = user;
  p->ready = 0;
  if (mt_nb_connect(&p->c, port) != 0) return -1;
  return mt_nb_queue_hello(&p->c, user, "d1");
}

static void queue_send(mt_nb *c, uint64_t cid, const char *session, const char *prefix) {
  char body[32];
  int len = snprintf(body, sizeof body, "%s%llu", prefix, (unsigned long long)cid);
  Hubu__V1__Send s = HUBU__V1__SEND__INIT;
  s.client_id = cid;
  s.session_id = (char *)session;
  s.body.data = (uint8_t *)body;
  s.body.len = (size_t)len;
  mt_nb_queue(c, HUBU_FRAME_SEND, &s.base);
}

static void queue_ack(mt_nb *c, const char *session, uint64_t seq) {
  Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
  cur.session_id = (char *)session;
  cur.seq = seq;
  Hubu__V1__Cursor *curs[1] = {&cur};
  Hubu__V1__DeliverAck a = HUBU__V1__DELIVER_ACK__INIT;
  a.cursors = curs;
  a.n_cursors = 1;
  mt_nb_queue(c, HUBU_FRAME_DELIVER_ACK, &a.base);
}

static void queue_pull(mt_nb *c, uint64_t rid, const char *session, uint64_t after) {
  Hubu__V1__PullRequest p = HUBU__V1__PULL_REQUEST__INIT;
  p.request_id = rid;
  p.session_id = (char *)session;
  p.after_seq = after;
  p.limit = 500;
  mt_nb_queue(c, HUBU_FRAME_PULL, &p.base);
}

static void queue_sync(mt_nb *c, uint64_t rid, const char *session, uint64_t seq) {
  Hubu__V1__Cursor cur = HUBU__V1__CURSOR__INIT;
  cur.session_id = (char *)session;
  cur.seq = seq;
  Hubu__V1__Cursor *curs[1] = {&cur};
  Hubu__V1__SyncRequest r = HUBU__V1__SYNC_REQUEST__INIT;
  r.request_id = rid;
  r.known = curs;
  r.n_known = 1;
  mt_nb_queue(c, HUBU_FRAME_SYNC, &r.base);
}

/* The state of the whole run, read by the frame handlers. */
typedef struct {
  uint64_t n;
  /* sam */
  uint64_t s_sent, s_acked, *s_seq; /* s_seq[cid] */
  uint64_t s_bad;
  /* pat -> quinn */
  uint64_t p_sent, p_acked, q_got, q_disorder, q_last_seq;
  uint64_t ping_sent_ms, ping_max_ms, ping_sum_ms, pongs, next_ping_ms;
  uint64_t p_sent_ms[8], p_ack_max_ms, p_ack_sum_ms; /* pat's SEND -> SEND_ACK */
  int ping_out;
  /* ray */
  uint8_t *held; /* held[seq] */
  uint64_t r_held, r_cursor, r_pushed, r_push_frames, r_push_dups, r_pull_dups, r_hints, r_hint_max;
  uint64_t r_pages, r_bad, r_sync_max, r_reconnects;
  int r_pull_out, r_synced;
  uint64_t r_rid;
} run;

/* Everything up to cursor is held or confirmed missing; advances over held seqs. */
static void ray_advance(run *st) {
  while (st->r_cursor < st->n && st->held[st->r_cursor + 1]) st->r_cursor++;
}

static int ray_take(run *st, const Hubu__V1__Message *m, int pulled) {
  char body[32];
  int len = snprintf(body, sizeof body, "s%llu", (unsigned long long)m->client_id);
  if (strcmp(m->session_id, FLOOD) != 0 || m->seq < 1 || m->seq > st->n || m->body.len != (size_t)len ||
      memcmp(m->body.data, body, (size_t)len) != 0 || st->s_seq[m->client_id <= st->n ? m->client_id : 0] != m->seq) {
    if (st->r_bad++ < 5)
      fprintf(stderr, "  ray: unexpected message %s seq %llu client_id %llu\n", m->session_id,
              (unsigned long long)m->seq, (unsigned long long)m->client_id);
    return 0;
  }
  if (st->held[m->seq]) {
    if (pulled)
      st->r_pull_dups++;
    else
      st->r_push_dups++; /* a retransmit: allowed, dropped */
    return 0;
  }
  st->held[m->seq] = 1;
  st->r_held++;
  return 1;
}

enum { SAM, RAY, PAT, QUINN };

static void handle_frame(run *st, peer *p, int who, uint8_t type, const uint8_t *body, uint32_t len) {
  if (type == HUBU_FRAME_HELLO_OK) {
    p->ready = 1;
    return;
  }
  if (type == HUBU_FRAME_PING) {
    Hubu__V1__Ping *ping = hubu__v1__ping__unpack(NULL, len, body);
    Hubu__V1__Ping pong = HUBU__V1__PING__INIT;
    pong.time_ms = ping ? ping->time_ms : 0;
    mt_nb_queue(&p->c, HUBU_FRAME_PONG, &pong.base);
    if (ping) hubu__v1__ping__free_unpacked(ping, NULL);
    return;
  }
  if (type == HUBU_FRAME_SEND_ACK) {
    Hubu__V1__SendAck *a = hubu__v1__send_ack__unpack(NULL, len, body);
    if (!a) {
      e2e_fail(__FILE__, __LINE__, "%s: SEND_ACK does not decode", p->user);
      return;
    }
    if (who == SAM) {
      if (a->code != HUBU__V1__CODE__OK || a->client_id < 1 || a->client_id > st->s_sent || st->s_seq[a->client_id]) {
        if (st->s_bad++ < 5)
          e2e_fail(__FILE__, __LINE__, "sam: ACK client_id %llu code %s seq %llu", (unsigned long long)a->client_id,
                   hubu_code_name(a->code), (unsigned long long)a->seq);
      } else {
        st->s_seq[a->client_id] = a->seq;
      }
      st->s_acked++;
    } else if (who == PAT) {
      CHECKF(a->code == HUBU__V1__CODE__OK, "pat: ACK %s", hubu_code_name(a->code));
      uint64_t lat = e2e_now_ms() - st->p_sent_ms[a->client_id % 8];
      if (lat > st->p_ack_max_ms) st->p_ack_max_ms = lat;
      st->p_ack_sum_ms += lat;
      st->p_acked++;
    }
    hubu__v1__send_ack__free_unpacked(a, NULL);
    return;
  }
  if (type == HUBU_FRAME_PONG && who == QUINN) {
    Hubu__V1__Ping *pong = hubu__v1__ping__unpack(NULL, len, body);
    if (pong && st->ping_out && pong->time_ms == st->ping_sent_ms) {
      uint64_t rtt = e2e_now_ms() - st->ping_sent_ms;
      if (rtt > st->ping_max_ms) st->ping_max_ms = rtt;
      st->ping_sum_ms += rtt;
      st->pongs++;
      st->ping_out = 0;
    }
    if (pong) hubu__v1__ping__free_unpacked(pong, NULL);
    return;
  }
  if (type == HUBU_FRAME_PUSH) {
    Hubu__V1__Push *push = hubu__v1__push__unpack(NULL, len, body);
    if (!push) {
      e2e_fail(__FILE__, __LINE__, "%s: PUSH does not decode", p->user);
      return;
    }
    uint64_t top = 0;
    for (size_t i = 0; i < push->n_messages; i++) {
      const Hubu__V1__Message *m = push->messages[i];
      if (m->seq > top) top = m->seq;
      if (who == QUINN) {
        if (strcmp(m->session_id, CHAT) != 0 || m->seq <= st->q_last_seq)
          st->q_disorder++;
        else
          st->q_got++;
        if (m->seq > st->q_last_seq) st->q_last_seq = m->seq;
      } else if (who == RAY) {
        st->r_pushed++;
        ray_take(st, m, 0);
      } else {
        e2e_fail(__FILE__, __LINE__, "%s got a PUSH of %s", p->user, m->session_id);
      }
    }
    if (who == RAY) {
      st->r_push_frames++;
      ray_advance(st);
    }
    if (top) queue_ack(&p->c, who == QUINN ? CHAT : FLOOD, top);
    hubu__v1__push__free_unpacked(push, NULL);
    return;
  }
  if (type == HUBU_FRAME_PULL_HINT && who == RAY) {
    Hubu__V1__PullHint *h = hubu__v1__pull_hint__unpack(NULL, len, body);
    if (h) {
      CHECKF(strcmp(h->session_id, FLOOD) == 0, "ray: PULL_HINT for %s", h->session_id);
      st->r_hints++;
      if (h->max_seq > st->r_hint_max) st->r_hint_max = h->max_seq;
      hubu__v1__pull_hint__free_unpacked(h, NULL);
    }
    return;
  }
  if (type == HUBU_FRAME_SYNC_RESULT && who == RAY) {
    Hubu__V1__SyncResult *r = hubu__v1__sync_result__unpack(NULL, len, body);
    if (r) {
      CHECK(r->code == HUBU__V1__CODE__OK);
      for (size_t i = 0; i < r->n_sessions; i++)
        if (strcmp(r->sessions[i]->session_id, FLOOD) == 0) st->r_sync_max = r->sessions[i]->max_seq;
      st->r_synced = 1;
      hubu__v1__sync_result__free_unpacked(r, NULL);
    }
    return;
  }
  if (type == HUBU_FRAME_PULL_RESULT && who == RAY) {
    Hubu__V1__PullResult *r = hubu__v1__pull_result__unpack(NULL, len, body);
    st->r_pull_out = 0;
    if (!r || r->code != HUBU__V1__CODE__OK) {
      e2e_fail(__FILE__, __LINE__, "ray: PULL_RESULT %s", r ? hubu_code_name(r->code) : "does not decode");
    } else {
      st->r_pages++;
      uint64_t prev = st->r_cursor;
      for (size_t i = 0; i < r->n_messages; i++) {
        const Hubu__V1__Message *m = r->messages[i];
        if (m->seq <= prev) st->r_bad++; /* a PULL answers in order, above after_seq */
        prev = m->seq;
        ray_take(st, m, 1);
      }
      /* seqs up to the last returned one are held or do not exist */
      if (prev > st->r_cursor) st->r_cursor = prev;
      ray_advance(st);
    }
    if (r) hubu__v1__pull_result__free_unpacked(r, NULL);
    return;
  }
  if (type == HUBU_FRAME_GOAWAY || type == HUBU_FRAME_ERROR) {
    fprintf(stderr, "  %s: got %s\n", p->user, hubu_frame_type_name(type));
    return;
  }
  e2e_fail(__FILE__, __LINE__, "%s: unexpected %s", p->user, hubu_frame_type_name(type));
}

static void pump(run *st, peer *peers, size_t np, int timeout_ms) {
  mt_nb *conns[4];
  for (size_t i = 0; i < np; i++) conns[i] = &peers[i].c;
  mt_nb_poll(conns, np, timeout_ms);
  for (size_t i = 0; i < np; i++) {
    peer *p = &peers[i];
    if (p->c.fd < 0 || p->c.paused) continue;
    uint8_t type;
    const uint8_t *body;
    uint32_t len;
    size_t size;
    for (int k = 0; k < 100000 && mt_nb_frame(&p->c, &type, &body, &len, &size); k++) {
      handle_frame(st, p, (int)i, type, body, len);
      mt_nb_consume(&p->c, size);
    }
  }
}

/* The other pair: pat sends quinn a message every 20 ms (at most 8 unanswered),
 * quinn PINGs every 100 ms (one at a time). */
static void chat_tick(run *st, peer *peers, uint64_t now, uint64_t *next_chat) {
  if (now >= *next_chat) {
    *next_chat = now + 20;
    if (st->p_sent - st->p_acked < 8) {
      queue_send(&peers[PAT].c, ++st->p_sent, CHAT, "p");
      st->p_sent_ms[st->p_sent % 8] = now;
    }
  }
  if (!st->ping_out && now >= st->next_ping_ms) {
    st->next_ping_ms = now + 100;
    st->ping_sent_ms = now;
    st->ping_out = 1;
    Hubu__V1__Ping ping = HUBU__V1__PING__INIT;
    ping.time_ms = now;
    mt_nb_queue(&peers[QUINN].c, HUBU_FRAME_PING, &ping.base);
  }
  if (st->ping_out && now - st->ping_sent_ms > st->ping_max_ms) st->ping_max_ms = now - st->ping_sent_ms;
  if (st->p_acked < st->p_sent) { /* the oldest unanswered SEND's wait so far */
    uint64_t wait = now - st->p_sent_ms[(st->p_acked + 1) % 8];
    if (wait > st->p_ack_max_ms) st->p_ack_max_ms = wait;
  }
}

/* Lets the pair's last messages arrive, then checks: everything pat got ACKed
 * reached quinn, in order, and PINGs were answered within the bound. */
static void check_chat(run *st, peer *peers, int ping_bound_ms) {
  uint64_t deadline = e2e_now_ms() + 3000;
  while ((st->q_got < st->p_acked || st->p_acked < st->p_sent) && e2e_now_ms() < deadline) pump(st, peers, 4, 5);
  fprintf(stderr,
          "  pat/quinn meanwhile: %llu sent, %llu acked (SEND_ACK after avg %.1f ms, max %llu ms), %llu pushed "
          "to quinn (out of order %llu); %llu PINGs, round trip avg %.1f ms, max %llu ms (bound %d ms)\n",
          (unsigned long long)st->p_sent, (unsigned long long)st->p_acked,
          st->p_acked ? (double)st->p_ack_sum_ms / (double)st->p_acked : 0.0, (unsigned long long)st->p_ack_max_ms,
          (unsigned long long)st->q_got, (unsigned long long)st->q_disorder, (unsigned long long)st->pongs,
          st->pongs ? (double)st->ping_sum_ms / (double)st->pongs : 0.0, (unsigned long long)st->ping_max_ms,
          ping_bound_ms);
  CHECK(st->p_acked >= 10);
  CHECKF(st->q_got == st->p_acked, "quinn got %llu of pat's %llu acknowledged messages", (unsigned long long)st->q_got,
         (unsigned long long)st->p_acked);
  CHECK_EQ(st->q_disorder, 0);
  CHECK(st->pongs >= 5);
  CHECKF(st->ping_max_ms < (uint64_t)ping_bound_ms, "PING round trip up to %llu ms during the flood (bound %d)",
         (unsigned long long)st->ping_max_ms, ping_bound_ms);
  CHECKF(st->p_ack_max_ms < (uint64_t)ping_bound_ms,
         "pat waited up to %llu ms for a SEND_ACK during the flood (bound %d)", (unsigned long long)st->p_ack_max_ms,
         ping_bound_ms);
}

static void limit_asan_quarantine(void) {
  if (!MT_SANITIZED) return;
  /* ASan keeps up to 256 MiB of freed memory in quarantine, which VmRSS would count: keep it small */
  const char *old = getenv("ASAN_OPTIONS");
  if (old && strstr(old, "quarantine_size_mb")) return;
  char opts[512];
  snprintf(opts, sizeof opts, "%s%squarantine_size_mb=4", old && *old ? old : "", old && *old ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
  fprintf(stderr, "  sanitized hubud: ASAN_OPTIONS=%s\n", opts);
}

static run *run_new(uint64_t n) {
  run *st = calloc(1, sizeof *st);
  REQUIRE(st != NULL);
  st->n = n;
  st->s_seq = calloc(n + 1, sizeof *st->s_seq);
  st->held = calloc(n + 1, 1);
  REQUIRE(st->s_seq && st->held);
  return st;
}

static void run_free(run *st) {
  free(st->s_seq);
  free(st->held);
  free(st);
}

/* Connects the named peers (NULL: left closed) and waits for their HELLO_OKs. */
static void connect_all(run *st, peer *peers, int port, const char *const *users) {
  for (int i = 0; i < 4; i++) {
    memset(&peers[i], 0, sizeof peers[i]);
    peers[i].c.fd = -1;
    if (users[i]) REQUIRE(connect_peer(&peers[i], port, users[i]) == 0);
  }
  uint64_t deadline = e2e_now_ms() + 5000;
  int ready = 0;
  while (!ready && e2e_now_ms() < deadline) {
    pump(st, peers, 4, 10);
    ready = 1;
    for (int i = 0; i < 4; i++) ready &= !users[i] || peers[i].ready;
  }
  REQUIRE(ready);
}

static void slow_reader_bounds_memory_stalls_no_one_and_gets_all_100000_after(void) {
  run *st = run_new(mt_quick() ? 20000 : 100000);
  mt_dir d;
  mt_dir_make(&d);
  limit_asan_quarantine();
  e2e_server s;
  /* a small output cap; an ack timeout long enough that ray is not kicked (a kick is handled too) */
  REQUIRE(MT_START(&s, &d, "--write-queue-max", "65536", "--ack-timeout-ms", "60000", NULL) == 0);
  fprintf(stderr, "  hubud --write-queue-max 65536 --ack-timeout-ms 60000 (max-inflight 256); %llu messages\n",
          (unsigned long long)st->n);
  peer peers[4];
  static const char *const users[4] = {"sam", "ray", "pat", "quinn"};
  connect_all(st, peers, s.port, users);
  peers[RAY].c.paused = 1; /* ray stops reading */

  long rss0 = e2e_server_rss_kb(&s), rss_peak = rss0;
  fprintf(stderr, "  start: hubud VmRSS %ld KiB\n", rss0);
  uint64_t t0 = e2e_now_ms(), next_report = t0 + 250, next_sample = t0, next_chat = t0;
  uint64_t end = t0 + (MT_SANITIZED ? 70000 : 60000);
  while (st->s_acked < st->n && e2e_now_ms() < end && !peers[SAM].c.dead) {
    while (st->s_sent < st->n && st->s_sent - st->s_acked < WINDOW) queue_send(&peers[SAM].c, ++st->s_sent, FLOOD, "s");
    uint64_t now = e2e_now_ms();
    chat_tick(st, peers, now, &next_chat);
    if (now >= next_sample) {
      next_sample = now + 50;
      long rss = e2e_server_rss_kb(&s);
      if (rss > rss_peak) rss_peak = rss;
    }
    if (now >= next_report) {
      next_report = now + (now - t0 < 2000 ? 250 : 1000);
      long rss = e2e_server_rss_kb(&s);
      fprintf(stderr,
              "  %5.1f s: sam %llu/%llu acked, hubud VmRSS %ld KiB (+%ld), ray unread in kernel %ld B, "
              "quinn got %llu, PING max %llu ms\n",
              (double)(now - t0) / 1000.0, (unsigned long long)st->s_acked, (unsigned long long)st->n, rss, rss - rss0,
              mt_nb_inq(&peers[RAY].c), (unsigned long long)st->q_got, (unsigned long long)st->ping_max_ms);
    }
    pump(st, peers, 4, 2);
    if (peers[PAT].c.dead || peers[QUINN].c.dead) break;
  }
  uint64_t flood_ms = e2e_now_ms() - t0;
  REQUIRE(!peers[SAM].c.dead && !peers[PAT].c.dead && !peers[QUINN].c.dead);
  CHECKF(st->s_acked == st->n, "sam: %llu of %llu acknowledged in %llu ms", (unsigned long long)st->s_acked,
         (unsigned long long)st->n, (unsigned long long)flood_ms);
  CHECK_EQ(st->s_bad, 0);
  long rss1 = e2e_server_rss_kb(&s);
  if (rss1 > rss_peak) rss_peak = rss1;
  fprintf(stderr,
          "  flood done in %llu ms (%.0f msgs/s): hubud VmRSS %ld KiB (+%ld, peak +%ld, bound +%ld); "
          "ray unread in kernel %ld B\n",
          (unsigned long long)flood_ms, flood_ms ? 1000.0 * (double)st->n / (double)flood_ms : 0.0, rss1, rss1 - rss0,
          rss_peak - rss0, RSS_BOUND_KB, mt_nb_inq(&peers[RAY].c));
  check_chat(st, peers, PING_BOUND_MS);
  CHECKF(rss_peak - rss0 < RSS_BOUND_KB, "hubud grew by %ld KiB under a stalled reader (bound %ld)", rss_peak - rss0,
         RSS_BOUND_KB);
  uint64_t disorder = 0;
  for (uint64_t i = 2; i <= st->n; i++) disorder += st->s_seq[i] <= st->s_seq[i - 1];
  CHECK_EQ(disorder, 0);

  /* ray reads again: the backlog (a window of PUSHes and PULL_HINTs), then SYNC and PULL */
  peer *ray = &peers[RAY];
  ray->c.paused = 0;
  queue_sync(&ray->c, ++st->r_rid, FLOOD, st->r_cursor);
  uint64_t t1 = e2e_now_ms();
  uint64_t deadline = t1 + (MT_SANITIZED ? 40000 : 25000);
  uint64_t quiet_since = 0;
  while (e2e_now_ms() < deadline) {
    pump(st, peers, 4, 5);
    if (ray->c.dead) { /* kicked meanwhile: reconnect and sync */
      st->r_reconnects++;
      mt_nb_close(&ray->c);
      st->r_pull_out = 0;
      st->r_synced = 0;
      if (connect_peer(ray, s.port, "ray") != 0) continue;
      queue_sync(&ray->c, ++st->r_rid, FLOOD, st->r_cursor);
      continue;
    }
    if (!ray->ready) continue;
    uint64_t target = st->r_sync_max > st->r_hint_max ? st->r_sync_max : st->r_hint_max;
    if (!st->r_pull_out && st->r_synced && st->r_cursor < target) {
      queue_pull(&ray->c, ++st->r_rid, FLOOD, st->r_cursor);
      st->r_pull_out = 1;
    }
    if (st->r_synced && !st->r_pull_out && st->r_cursor >= target && hubu_buf_size(&ray->c.in) == 0) {
      if (!quiet_since) quiet_since = e2e_now_ms();
      if (e2e_now_ms() - quiet_since > 300) break; /* late frames (retransmits) would have come */
    } else {
      quiet_since = 0;
    }
  }
  uint64_t missing = 0;
  for (uint64_t i = 1; i <= st->n; i++) missing += !st->held[i];
  fprintf(stderr,
          "  ray caught up in %llu ms: %llu pushed in %llu frames (%llu retransmits dropped), %llu "
          "PULL_HINTs (max_seq %llu), SYNC max_seq %llu, %llu PULL pages, %llu reconnects; holds %llu, "
          "missing %llu, duplicates from PULL %llu, bad %llu\n",
          (unsigned long long)(e2e_now_ms() - t1), (unsigned long long)st->r_pushed,
          (unsigned long long)st->r_push_frames, (unsigned long long)st->r_push_dups, (unsigned long long)st->r_hints,
          (unsigned long long)st->r_hint_max, (unsigned long long)st->r_sync_max, (unsigned long long)st->r_pages,
          (unsigned long long)st->r_reconnects, (unsigned long long)st->r_held, (unsigned long long)missing,
          (unsigned long long)st->r_pull_dups, (unsigned long long)st->r_bad);
  CHECK_EQ(st->r_held, st->n);
  CHECK_EQ(missing, 0);
  CHECK_EQ(st->r_pull_dups, 0);
  CHECK_EQ(st->r_bad, 0);
  CHECK_EQ(st->r_sync_max, st->s_seq[st->n]);
  CHECK(st->r_hints >= 1);
  long rss2 = e2e_server_rss_kb(&s);
  fprintf(stderr, "  after: hubud VmRSS %ld KiB (+%ld over the start)\n", rss2, rss2 - rss0);
  CHECKF(rss2 - rss0 < RSS_BOUND_KB, "hubud +%ld KiB after the catch-up", rss2 - rss0);

  for (int i = 0; i < 4; i++) mt_nb_close(&peers[i].c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  run_free(st);
}

/* zed's view of d:sam:zed: max_seq from SYNC (blocking, on its own connection). */
static uint64_t stored_max(int port) {
  int z = MT_HELLO(port, "zed", "observer", NULL);
  if (z < 0) return 0;
  uint64_t max = 0;
  int skipped = mt_skip_pushes;
  mt_skip_pushes = 1; /* zed is a member: PUSHes of what is being stored may come before the answer */
  if (mt_sync_request(z, 1, 0, NULL, NULL) == 0) {
    Hubu__V1__SyncResult *r = MT_SYNC_RESULT(z);
    for (size_t i = 0; r && i < r->n_sessions; i++)
      if (strcmp(r->sessions[i]->session_id, "d:sam:zed") == 0) max = r->sessions[i]->max_seq;
    if (r) hubu__v1__sync_result__free_unpacked(r, NULL);
  }
  mt_skip_pushes = skipped;
  close(z);
  return max;
}

/* The other direction: sam pipelines 200,000 SENDs and never reads his
 * SEND_ACKs. The server must stop reading him once his unread output passes
 * --write-queue-max (instead of queueing answers without bound): the session
 * stops growing, well short of 200,000, and memory stays bounded, while the
 * others are served. Once sam reads again, every SEND is answered OK once,
 * with seqs in client_id order, and zed can pull all of them. */
static void sender_that_never_reads_its_acks_is_paused_and_stalls_no_one(void) {
  run *st = run_new(200000); /* ~9 MB of SEND_ACKs: more than the kernel buffers between hubud and sam */
  mt_dir d;
  mt_dir_make(&d);
  limit_asan_quarantine();
  e2e_server s;
  REQUIRE(MT_START(&s, &d, "--write-queue-max", "65536", NULL) == 0);
  peer peers[4];
  static const char *const users[4] = {"sam", NULL, "pat", "quinn"};
  connect_all(st, peers, s.port, users);
  peer *sam = &peers[SAM];
  sam->c.paused = 1; /* sam stops reading, with a small receive buffer (no autotuning to tcp_rmem's max) */
  int rcvbuf = 65536;
  CHECK(setsockopt(sam->c.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
  for (st->s_sent = 0; st->s_sent < st->n;) queue_send(&sam->c, ++st->s_sent, "d:sam:zed", "s");
  long rss0 = e2e_server_rss_kb(&s), rss_peak = rss0;
  fprintf(stderr,
          "  hubud --write-queue-max 65536; sam queued %llu SENDs (%zu bytes) and reads nothing; VmRSS %ld KiB\n",
          (unsigned long long)st->n, hubu_buf_size(&sam->c.out), rss0);
  uint64_t t0 = e2e_now_ms(), next_chat = t0, next_report = t0 + 500;
  while (e2e_now_ms() - t0 < (MT_SANITIZED ? 5000 : 3000)) {
    uint64_t now = e2e_now_ms();
    chat_tick(st, peers, now, &next_chat);
    pump(st, peers, 4, 2);
    REQUIRE(!sam->c.dead && !peers[PAT].c.dead && !peers[QUINN].c.dead);
    if (now >= next_report) {
      next_report = now + 500;
      long rss = e2e_server_rss_kb(&s);
      if (rss > rss_peak) rss_peak = rss;
    }
  }
  /* The session stops growing once sam is paused; a slower store (MariaDB on a busy machine) may still be
   * committing what was read before the pause, so it is sampled a second apart until two samples agree
   * (or sam's SENDs are all taken, or 20 s pass). */
  uint64_t m1 = stored_max(s.port), m2 = m1, t1 = e2e_now_ms();
  for (int first = 1; first || (m2 != m1 && m2 < st->n && e2e_now_ms() - t1 < 20000); first = 0) {
    m1 = m2;
    uint64_t t = e2e_now_ms();
    while (e2e_now_ms() - t < 1000) {
      chat_tick(st, peers, e2e_now_ms(), &next_chat);
      pump(st, peers, 4, 2);
    }
    m2 = stored_max(s.port);
  }
  long rss1 = e2e_server_rss_kb(&s);
  if (rss1 > rss_peak) rss_peak = rss1;
  fprintf(stderr,
          "  after %llu ms: the session holds %llu, a second later %llu (of %llu sent); %zu bytes still in "
          "sam's buffer, %ld bytes of SEND_ACKs wait in his socket; hubud VmRSS %ld KiB (+%ld, peak +%ld, "
          "bound +%ld)\n",
          (unsigned long long)(t1 - t0), (unsigned long long)m1, (unsigned long long)m2, (unsigned long long)st->n,
          hubu_buf_size(&sam->c.out), mt_nb_inq(&sam->c), rss1, rss1 - rss0, rss_peak - rss0, RSS_BOUND_KB);
  if (m2 >= st->n)
    e2e_fail(__FILE__, __LINE__,
             "hubud took all %llu SENDs of a connection that reads none of their SEND_ACKs: it read "
             "faster than it answered, so --write-queue-max stopped nothing and the answers wait in its memory",
             (unsigned long long)st->n);
  else
    CHECKF(m2 == m1,
           "hubud kept taking SENDs from a connection that reads none of their SEND_ACKs (stored %llu, a "
           "second later %llu)",
           (unsigned long long)m1, (unsigned long long)m2);
  /* sam's burst itself stalls hubud's loop for a while (what pipelined_send_flood_* checks): a looser bound here */
  check_chat(st, peers, 3 * PING_BOUND_MS);
  CHECKF(rss_peak - rss0 < RSS_BOUND_KB, "hubud grew by %ld KiB under a sender that does not read (bound %ld)",
         rss_peak - rss0, RSS_BOUND_KB);

  /* sam reads again: every SEND is answered */
  sam->c.paused = 0;
  rcvbuf = 4 << 20;
  setsockopt(sam->c.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  uint64_t t2 = e2e_now_ms(), deadline = t2 + (MT_SANITIZED ? 40000 : 25000);
  while (st->s_acked < st->n && e2e_now_ms() < deadline && !sam->c.dead) pump(st, peers, 4, 5);
  uint64_t disorder = 0;
  for (uint64_t i = 2; i <= st->n; i++)
    disorder += st->s_seq[i] && st->s_seq[i - 1] && st->s_seq[i] <= st->s_seq[i - 1];
  fprintf(stderr, "  sam reading again: %llu of %llu SENDs answered OK in %llu ms, %llu bad, seq disorder %llu\n",
          (unsigned long long)st->s_acked, (unsigned long long)st->n, (unsigned long long)(e2e_now_ms() - t2),
          (unsigned long long)st->s_bad, (unsigned long long)disorder);
  CHECK_EQ(st->s_acked, st->n);
  CHECK_EQ(st->s_bad, 0);
  CHECK_EQ(disorder, 0);
  for (int i = 0; i < 4; i++) mt_nb_close(&peers[i].c);

  /* zed pulls the session: n messages in order */
  int z = MT_HELLO(s.port, "zed", "d1", NULL);
  REQUIRE(z >= 0);
  uint64_t after = 0, got = 0, bad = 0;
  for (int page = 0; page < 1000; page++) {
    Hubu__V1__PullResult *r = MT_PULL(z, (uint64_t)page + 1, "d:sam:zed", after, 500);
    REQUIRE(r != NULL && r->code == HUBU__V1__CODE__OK);
    for (size_t i = 0; i < r->n_messages; i++) {
      const Hubu__V1__Message *m = r->messages[i];
      if (m->seq <= after || m->client_id != got + 1 || m->seq != st->s_seq[m->client_id]) bad++;
      after = m->seq;
      got++;
    }
    int more = r->has_more;
    hubu__v1__pull_result__free_unpacked(r, NULL);
    if (!more) break;
  }
  fprintf(stderr, "  zed pulled %llu messages, %llu out of place\n", (unsigned long long)got, (unsigned long long)bad);
  CHECK_EQ(got, st->n);
  CHECK_EQ(bad, 0);
  close(z);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  run_free(st);
}

/* A sender that pipelines 500,000 SENDs at once (and reads its ACKs): the
 * server must throttle its reading of that connection so that what it holds
 * for it (queued SENDs, store operations) stays bounded — RSS growth under
 * 200 MiB — and the others keep being served (PING < 1 s, 2 s sanitized). */
static void pipelined_send_flood_is_throttled_so_memory_stays_bounded(void) {
  run *st = run_new(mt_quick() ? 200000 : 500000);
  mt_dir d;
  mt_dir_make(&d);
  limit_asan_quarantine();
  e2e_server s;
  REQUIRE(MT_START(&s, &d, NULL) == 0);
  peer peers[4];
  static const char *const users[4] = {"sam", NULL, "pat", "quinn"};
  connect_all(st, peers, s.port, users);
  peer *sam = &peers[SAM];
  for (st->s_sent = 0; st->s_sent < st->n;) queue_send(&sam->c, ++st->s_sent, "d:sam:zed", "s");
  long rss0 = e2e_server_rss_kb(&s), rss_peak = rss0;
  fprintf(stderr, "  sam writes %llu SENDs (%zu bytes) as fast as hubud takes them and reads the ACKs; VmRSS %ld KiB\n",
          (unsigned long long)st->n, hubu_buf_size(&sam->c.out), rss0);
  uint64_t t0 = e2e_now_ms(), next_chat = t0, next_sample = t0, end = t0 + (MT_SANITIZED ? 70000 : 40000);
  while (st->s_acked < st->n && e2e_now_ms() < end) {
    uint64_t now = e2e_now_ms();
    chat_tick(st, peers, now, &next_chat);
    if (now >= next_sample) {
      next_sample = now + 50;
      long rss = e2e_server_rss_kb(&s);
      if (rss > rss_peak) rss_peak = rss;
    }
    pump(st, peers, 4, 2);
    REQUIRE(!sam->c.dead && !peers[PAT].c.dead && !peers[QUINN].c.dead);
  }
  uint64_t ms = e2e_now_ms() - t0;
  uint64_t disorder = 0;
  for (uint64_t i = 2; i <= st->n; i++)
    disorder += st->s_seq[i] && st->s_seq[i - 1] && st->s_seq[i] <= st->s_seq[i - 1];
  fprintf(stderr, "  %llu of %llu answered OK in %llu ms (%.0f/s); hubud VmRSS peak %ld KiB (+%ld, bound +%ld)\n",
          (unsigned long long)st->s_acked, (unsigned long long)st->n, (unsigned long long)ms,
          ms ? 1000.0 * (double)st->s_acked / (double)ms : 0.0, rss_peak, rss_peak - rss0, RSS_BOUND_KB);
  CHECK_EQ(st->s_acked, st->n);
  CHECK_EQ(st->s_bad, 0);
  CHECK_EQ(disorder, 0);
  check_chat(st, peers, PING_BOUND_MS);
  CHECKF(rss_peak - rss0 < RSS_BOUND_KB, "hubud grew by %ld KiB while one connection pipelined %llu SENDs (bound %ld)",
         rss_peak - rss0, (unsigned long long)st->n, RSS_BOUND_KB);
  for (int i = 0; i < 4; i++) mt_nb_close(&peers[i].c);
  CHECK_SERVER_STOPS_CLEANLY(&s);
  run_free(st);
}

int main(int argc, char **argv) {
  static const e2e_case cases[] = {
      E2E_CASE(slow_reader_bounds_memory_stalls_no_one_and_gets_all_100000_after),
      E2E_CASE(sender_that_never_reads_its_acks_is_paused_and_stalls_no_one),
      E2E_CASE(pipelined_send_flood_is_throttled_so_memory_stays_bounded),
  };
  return e2e_main(argc, argv, cases, sizeof cases / sizeof *cases);
}

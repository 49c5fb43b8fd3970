/* redis.c — the Redis client on the loop (redis.h).
 *
 * Ownership. The client owns its hiredis context (r->ac, one at a time),
 * its two timers, and its channel list. Each command is a redis_cmd with two
 * references: hiredis's (dropped when hiredis calls the command's callback,
 * with the reply or with NULL when the context goes away) and its timer's
 * (dropped in the timer's close callback). The user's callback is cmd->cb;
 * it is set to NULL the moment it is called, so it runs once whatever calls
 * it first: the reply, the timer, the loss of the connection, or close.
 *
 * hiredis re-entrancy. hiredis frees a context itself when its connection
 * fails or ends (it then calls every pending callback with NULL, and the
 * disconnect callback). redisAsyncFree() is therefore only called by this
 * file from a timer, from close, or from inside a reply callback (where
 * hiredis defers the free until the callback returns), never from the
 * connect or disconnect callbacks. Before any user callback runs after a
 * connection is lost, r->ac is detached (set to NULL, and ac->data cleared),
 * so a close or a command from that callback cannot reach the dying context.
 *
 * Connection states: DOWN (the reconnect timer runs), CONNECTING (the
 * connect timer runs; AUTH, SELECT, INFO replication, INFO server and, for a
 * subscriber, SUBSCRIBE are queued behind the TCP connect), UP, CLOSED. */
#include "redis.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <hiredis/async.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

enum { ST_DOWN = 0, ST_CONNECTING, ST_UP, ST_CLOSED };

typedef struct redis_ev redis_ev;
typedef struct redis_cmd redis_cmd;

struct hubu_redis {
  uv_loop_t *loop;
  hubu_redis_config cfg;
  redisAsyncContext *ac; /* the current connection's context, or NULL */
  int state;
  int subscriber;
  uint64_t conn_id;      /* counts connections; a command remembers the one it was sent on */
  uv_timer_t conn_timer; /* CONNECTING: the connect timeout; DOWN: the reconnect delay */
  uv_timer_t sub_timer;  /* a subscriber's unconfirmed SUBSCRIBEs */
  uv_timer_t ping_timer; /* a command client's health PING, while up */
  int ping_pending;      /* a health PING is under way */
  /* A subscriber's heartbeat (hubu_redis_subscriber_heartbeat): on every
   * ping_timer tick a message on hb_channel through hb_pub, which must
   * come back here within the command timeout. */
  hubu_redis *hb_pub;      /* not owned */
  char *hb_channel;        /* owned */
  uint64_t hb_sent_ms;     /* uv_now when the heartbeat under way was published; 0: none */
  struct redis_hb *hb_req; /* its PUBLISH, until answered */
  int handles_open;        /* of the three timers; r is freed when the last one has closed */
  uint32_t backoff_ms;     /* the next reconnect delay */
  int hello_left;          /* connect commands not answered yet */
  size_t sub_unconfirmed;  /* channels subscribed and not confirmed yet */
  redis_cmd *pending_head; /* commands whose callback has not run, oldest first */
  redis_cmd *pending_tail;
  size_t n_pending;
  char **channels; /* a subscriber's channels: owned array of owned strings */
  size_t n_channels;
  hubu_redis_health health;
  hubu_redis_health_cb on_health;
  hubu_redis_message_cb on_message;
  void *ud;
};

/* The adapter between hiredis and the loop: a uv_poll on the context's socket. */
struct redis_ev {
  uv_poll_t poll;
  uv_prepare_t flush;    /* writes the commands queued since the last loop turn, before the loop polls */
  redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
  int events;
  int closed;
  int flush_wanted; /* hiredis has output and the flush is due */
  int in_flush;     /* inside the flush's write: a partial write waits for writability */
  int open_handles; /* freed when both have closed */
};

/* A heartbeat's PUBLISH on the publisher; sub is cleared when the
 * subscriber closes first. */
typedef struct redis_hb {
  hubu_redis *sub;
} redis_hb;

struct redis_cmd {
  uv_timer_t timer;
  hubu_redis *r;
  hubu_redis_reply_cb cb; /* NULL once called */
  void *ud;
  uint64_t conn_id;
  uint32_t timeout_ms;
  redis_cmd *prev, *next; /* r's pending list, while cb is set */
  int refs;
};

static void conn_start(hubu_redis *r);
static void conn_drop(hubu_redis *r, hubu_redis_status st, const char *why, int hiredis_frees);

const char *hubu_redis_status_name(hubu_redis_status st) {
  switch (st) {
    case HUBU_REDIS_OK: return "ok";
    case HUBU_REDIS_REPLY_ERROR: return "error_reply";
    case HUBU_REDIS_TIMEOUT: return "timeout";
    case HUBU_REDIS_DOWN: return "down";
    case HUBU_REDIS_CLOSED: return "closed";
  }
  return "unknown";
}

/* ---- config ---- */

static void config_defaults(hubu_redis_config *cfg) {
  if (!cfg->port) cfg->port = 6379;
  if (!cfg->connect_timeout_ms) cfg->connect_timeout_ms = 2000;
  if (!cfg->command_timeout_ms) cfg->command_timeout_ms = 1000;
  if (!cfg->backoff_min_ms) cfg->backoff_min_ms = 100;
  if (!cfg->backoff_max_ms) cfg->backoff_max_ms = 5000;
  if (!cfg->ping_interval_ms) cfg->ping_interval_ms = 1000;
  if (cfg->backoff_max_ms < cfg->backoff_min_ms) cfg->backoff_max_ms = cfg->backoff_min_ms;
}

static int host_is_address(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int hubu_redis_config_parse(const char *url, hubu_redis_config *cfg, char *err, size_t err_size) {
  memset(cfg, 0, sizeof *cfg);
  const char *p = url;
  if (strncmp(p, "redis://", 8) != 0) {
    snprintf(err, err_size, "a Redis URL starts with redis://");
    return -1;
  }
  p += 8;
  const char *at = strchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon) {
      snprintf(err, err_size, "redis://:PASSWORD@HOST: the password follows a ':' (no user names)");
      return -1;
    }
    size_t n = (size_t)(at - colon - 1);
    if (n > HUBU_REDIS_PASSWORD_MAX) {
      snprintf(err, err_size, "the password is longer than %d bytes", HUBU_REDIS_PASSWORD_MAX);
      return -1;
    }
    memcpy(cfg->password, colon + 1, n);
    cfg->password[n] = '\0';
    p = at + 1;
  }
  const char *host_end;
  const char *rest;
  if (*p == '[') {
    host_end = strchr(p, ']');
    if (!host_end) {
      snprintf(err, err_size, "an IPv6 address in brackets lacks its ']'");
      return -1;
    }
    p++;
    rest = host_end + 1;
  } else {
    host_end = p + strcspn(p, ":/");
    rest = host_end;
  }
  size_t hn = (size_t)(host_end - p);
  if (hn == 0 || hn > HUBU_REDIS_HOST_MAX) {
    snprintf(err, err_size, "the host is empty or too long");
    return -1;
  }
  memcpy(cfg->host, p, hn);
  cfg->host[hn] = '\0';
  if (strcmp(cfg->host, "localhost") == 0) snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
  if (!host_is_address(cfg->host)) {
    snprintf(err, err_size, "the host must be an IP address (no name lookup on the loop): %.64s", cfg->host);
    return -1;
  }
  if (*rest == ':') {
    char *end;
    errno = 0;
    long port = strtol(rest + 1, &end, 10);
    if (end == rest + 1 || errno || port < 1 || port > 65535) {
      snprintf(err, err_size, "the port must be 1-65535");
      return -1;
    }
    cfg->port = (int)port;
    rest = end;
  }
  if (*rest == '/') {
    rest++;
    if (*rest) {
      char *end;
      errno = 0;
      long db = strtol(rest, &end, 10);
      if (end == rest || *end || errno || db < 0 || db > 1000000) {
        snprintf(err, err_size, "the database must be a number");
        return -1;
      }
      cfg->db = (int)db;
      rest = end;
    }
  }
  if (*rest) {
    snprintf(err, err_size, "unexpected text after the address: %.32s", rest);
    return -1;
  }
  config_defaults(cfg);
  return 0;
}

/* ---- the loop adapter ---- */

static void ev_poll_cb(uv_poll_t *h, int status, int events) {
  redis_ev *ev = h->data;
  if (!ev->ac) return;
  if (status < 0) {
    /* The socket failed: let hiredis read it, which finds the error and
     * ends the connection. */
    events = UV_READABLE;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(ev->ac);
  if (ev->ac && (events & UV_WRITABLE)) {
    hubu_redis *r = ev->ac->data;
    if (r) r->health.writes++; /* everything queued goes in this write: one round trip for all of it */
    redisAsyncHandleWrite(ev->ac);
  }
}

static void ev_update(redis_ev *ev) {
  if (ev->closed) return;
  if (ev->events)
    uv_poll_start(&ev->poll, ev->events, ev_poll_cb);
  else
    uv_poll_stop(&ev->poll);
}

static void ev_add_read(void *p) {
  redis_ev *ev = p;
  ev->events |= UV_READABLE;
  ev_update(ev);
}

static void ev_del_read(void *p) {
  redis_ev *ev = p;
  ev->events &= ~UV_READABLE;
  ev_update(ev);
}

/* Once per loop turn, before the loop polls: every command queued since
 * goes out in one write (one round trip), and the socket's write interest
 * is not switched on and off per command (an epoll_ctl each time). */
static void ev_flush_cb(uv_prepare_t *h) {
  redis_ev *ev = h->data;
  uv_prepare_stop(&ev->flush);
  if (!ev->ac || !ev->flush_wanted) return;
  ev->flush_wanted = 0;
  hubu_redis *r = ev->ac->data;
  if (r) r->health.writes++;
  ev->in_flush = 1;
  redisAsyncHandleWrite(ev->ac); /* done, or a partial write (then ev_add_write polls for writability) */
  ev->in_flush = 0;
}

/* hiredis has output. While it connects (the socket's writability says the
 * connect ended) or after a partial write, the poll waits for the socket;
 * otherwise the flush writes it this loop turn. */
static void ev_add_write(void *p) {
  redis_ev *ev = p;
  if (ev->closed) return;
  if (ev->in_flush || !ev->ac || !(ev->ac->c.flags & REDIS_CONNECTED)) {
    ev->events |= UV_WRITABLE;
    ev_update(ev);
    return;
  }
  if (!ev->flush_wanted && !(ev->events & UV_WRITABLE)) {
    ev->flush_wanted = 1;
    uv_prepare_start(&ev->flush, ev_flush_cb);
  }
}

static void ev_del_write(void *p) {
  redis_ev *ev = p;
  ev->flush_wanted = 0;
  if (ev->events & UV_WRITABLE) {
    ev->events &= ~UV_WRITABLE;
    ev_update(ev);
  }
}

static void ev_closed(uv_handle_t *h) {
  redis_ev *ev = h->data;
  if (--ev->open_handles == 0) free(ev);
}

/* hiredis is done with the context: stop polling (before hiredis closes the
 * socket) and free the adapter once the handle has closed. Idempotent. */
static void ev_cleanup(void *p) {
  redis_ev *ev = p;
  if (ev->closed) return;
  ev->closed = 1;
  ev->ac = NULL;
  ev->flush_wanted = 0;
  uv_close((uv_handle_t *)&ev->poll, ev_closed);
  uv_close((uv_handle_t *)&ev->flush, ev_closed);
}

static int ev_attach(hubu_redis *r, redisAsyncContext *ac) {
  redis_ev *ev = calloc(1, sizeof *ev);
  if (!ev) return -1;
  if (uv_poll_init(r->loop, &ev->poll, ac->c.fd) != 0) {
    free(ev);
    return -1;
  }
  uv_prepare_init(r->loop, &ev->flush);
  ev->open_handles = 2;
  ev->flush.data = ev;
  ev->poll.data = ev;
  ev->ac = ac;
  ac->ev.data = ev;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  return 0;
}

/* ---- commands ---- */

static void cmd_unref(redis_cmd *c) {
  if (--c->refs == 0) free(c);
}

static void cmd_timer_closed(uv_handle_t *h) { cmd_unref(h->data); }

static void pending_unlink(hubu_redis *r, redis_cmd *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    r->pending_head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    r->pending_tail = c->prev;
  c->prev = c->next = NULL;
  r->n_pending--;
}

/* Calls c's callback (once) and lets its timer go. */
static void cmd_answer(redis_cmd *c, hubu_redis_status st, const redisReply *reply) {
  hubu_redis_reply_cb cb = c->cb;
  if (!cb) return;
  c->cb = NULL;
  pending_unlink(c->r, c);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, cmd_timer_closed);
  cb(c->r, st, reply, c->ud);
}

/* Answers every pending command of r with st. Callers have detached the
 * connection first, so a callback cannot send a new command (it may close
 * r, which answers the rest); the loop stops at the last command pending
 * when it started all the same. */
static void fail_pending(hubu_redis *r, hubu_redis_status st) {
  redis_cmd *stop = r->pending_tail;
  if (!stop) return;
  for (;;) {
    redis_cmd *c = r->pending_head;
    if (!c) return;
    int last = c == stop;
    cmd_answer(c, st, NULL);
    if (last) return;
  }
}

/* hiredis's callback for every command: the reply, or NULL when the
 * context goes away. */
static void cmd_reply_cb(redisAsyncContext *ac, void *reply_v, void *priv) {
  redis_cmd *c = priv;
  redisReply *reply = reply_v;
  if (c->cb) {
    hubu_redis *r = c->r;
    if (!reply) {
      /* The connection ended under hiredis (EOF, an error): detach it from
       * r before anyone is told. */
      if (r->ac == ac) conn_drop(r, HUBU_REDIS_DOWN, ac->err ? ac->errstr : "connection lost", 1);
      cmd_answer(c, HUBU_REDIS_DOWN, NULL);
    } else {
      uv_timer_stop(&c->timer);
      cmd_answer(c, reply->type == REDIS_REPLY_ERROR ? HUBU_REDIS_REPLY_ERROR : HUBU_REDIS_OK, reply);
    }
  }
  cmd_unref(c); /* hiredis's reference */
}

static void cmd_timeout_cb(uv_timer_t *t) {
  redis_cmd *c = t->data;
  hubu_redis *r = c->r;
  if (!c->cb) return;
  /* libuv runs due timers before it polls: after the loop itself was late
   * (a long turn elsewhere), the answer may be waiting in the socket. Read
   * what is there first; c stays valid (its timer is not closed yet). */
  if (r->ac && c->conn_id == r->conn_id && r->state != ST_CLOSED) {
    redisAsyncHandleRead(r->ac);
    if (!c->cb) return;
  }
  r->health.timeouts++;
  if (r->ac && c->conn_id == r->conn_id) {
    /* The connection is wedged: every command on it fails with a timeout,
     * this one first, and it is replaced. */
    char why[96];
    uint64_t conn_id = c->conn_id;
    snprintf(why, sizeof why, "command timed out after %" PRIu32 " ms", c->timeout_ms);
    cmd_answer(c, HUBU_REDIS_TIMEOUT, NULL); /* c may be freed from here on */
    if (r->state != ST_CLOSED && r->ac && conn_id == r->conn_id) conn_drop(r, HUBU_REDIS_TIMEOUT, why, 0);
  } else {
    cmd_answer(c, HUBU_REDIS_TIMEOUT, NULL);
  }
}

/* Sends on the current context whatever the state (the connect's own
 * commands go out while CONNECTING). */
static int cmd_send(hubu_redis *r, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud, int argc, const char **argv,
                    const size_t *argvlen) {
  if (!r->ac || r->state == ST_CLOSED) return -1;
  redis_cmd *c = calloc(1, sizeof *c);
  if (!c) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=redis_command");
    return -1;
  }
  c->r = r;
  c->cb = cb;
  c->ud = ud;
  c->conn_id = r->conn_id;
  uv_timer_init(r->loop, &c->timer);
  c->timer.data = c;
  c->refs = 1; /* the timer's */
  r->health.commands++;
  if (redisAsyncCommandArgv(r->ac, cmd_reply_cb, c, argc, argv, argvlen) != REDIS_OK) {
    r->health.commands--;
    c->cb = NULL;
    uv_close((uv_handle_t *)&c->timer, cmd_timer_closed);
    return -1;
  }
  c->refs++; /* hiredis's */
  c->prev = r->pending_tail;
  if (r->pending_tail)
    r->pending_tail->next = c;
  else
    r->pending_head = c;
  r->pending_tail = c;
  r->n_pending++;
  c->timeout_ms = timeout_ms ? timeout_ms : r->cfg.command_timeout_ms;
  uv_timer_start(&c->timer, cmd_timeout_cb, c->timeout_ms, 0);
  return 0;
}

int hubu_redis_command(hubu_redis *r, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud, int argc,
                       const char **argv, const size_t *argvlen) {
  if (!r || r->state != ST_UP || r->subscriber || !cb) return -1;
  return cmd_send(r, timeout_ms, cb, ud, argc, argv, argvlen);
}

size_t hubu_redis_pending(const hubu_redis *r) { return r->n_pending; }

/* ---- health ---- */

static void health_set_error(hubu_redis *r, const char *why) {
  snprintf(r->health.last_error, sizeof r->health.last_error, "%s", why ? why : "");
}

static void health_notify(hubu_redis *r) {
  if (r->on_health && r->state != ST_CLOSED) r->on_health(r, &r->health, r->ud);
}

void hubu_redis_get_health(const hubu_redis *r, hubu_redis_health *out) { *out = r->health; }

int hubu_redis_is_up(const hubu_redis *r) { return r && r->state == ST_UP; }

int hubu_redis_info_field(const char *info, size_t len, const char *field, char *out, size_t out_size) {
  size_t fl = strlen(field);
  const char *p = info, *end = info + len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    if ((size_t)(line_end - p) > fl && memcmp(p, field, fl) == 0 && p[fl] == ':') {
      const char *v = p + fl + 1;
      size_t n = (size_t)(line_end - v);
      while (n && (v[n - 1] == '\r' || v[n - 1] == ' ')) n--;
      if (n >= out_size) return -1;
      memcpy(out, v, n);
      out[n] = '\0';
      return 0;
    }
    p = eol ? eol + 1 : end;
  }
  return -1;
}

/* Takes master_replid (INFO replication) or run_id (INFO server) from an
 * INFO reply into the health; a replid that differs from the one seen
 * before is counted. Returns 1 when the replid changed. */
static int health_take_info(hubu_redis *r, const redisReply *reply) {
  if (!reply || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS) || !reply->str) return 0;
  char v[HUBU_REDIS_REPLID_MAX + 1];
  int changed = 0;
  if (hubu_redis_info_field(reply->str, reply->len, "master_replid", v, sizeof v) == 0) {
    if (r->health.replid[0] && strcmp(v, r->health.replid) != 0) {
      r->health.replid_changes++;
      changed = 1;
      hubu_log(HUBU_LOG_WARN, 0, NULL, "redis_replid_changed", "host=%s port=%d old=%s new=%s", r->cfg.host,
               r->cfg.port, r->health.replid, v);
    }
    snprintf(r->health.replid, sizeof r->health.replid, "%s", v);
  }
  if (hubu_redis_info_field(reply->str, reply->len, "run_id", v, sizeof v) == 0)
    snprintf(r->health.run_id, sizeof r->health.run_id, "%s", v);
  return changed;
}

/* ---- connection ---- */

static void reconnect_cb(uv_timer_t *t) {
  hubu_redis *r = t->data;
  if (r->state == ST_DOWN) conn_start(r);
}

static void schedule_reconnect(hubu_redis *r) {
  if (r->state == ST_CLOSED) return;
  uint32_t delay = r->backoff_ms ? r->backoff_ms : r->cfg.backoff_min_ms;
  uint64_t next = (uint64_t)delay * 2;
  r->backoff_ms = next > r->cfg.backoff_max_ms ? r->cfg.backoff_max_ms : (uint32_t)next;
  uv_timer_start(&r->conn_timer, reconnect_cb, delay, 0);
}

/* The current connection is over (st says how its commands fail): detach
 * the context, answer its commands, free the context unless hiredis frees
 * it (hiredis_frees: called from hiredis's connect or disconnect callback,
 * or while it fails the commands of a lost connection), and schedule the
 * next connect. */
static void conn_drop(hubu_redis *r, hubu_redis_status st, const char *why, int hiredis_frees) {
  redisAsyncContext *ac = r->ac;
  int was_up = r->state == ST_UP;
  if (!ac && r->state != ST_CONNECTING) return;
  r->ac = NULL;
  if (ac) ac->data = NULL;
  r->state = ST_DOWN;
  r->hello_left = 0;
  r->sub_unconfirmed = 0;
  uv_timer_stop(&r->conn_timer);
  uv_timer_stop(&r->sub_timer);
  uv_timer_stop(&r->ping_timer);
  r->hb_sent_ms = 0;
  r->health.up = 0;
  r->health.failures++;
  health_set_error(r, why);
  if (was_up) r->health.changed_ms = hubu_now_ms();
  hubu_log(was_up ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, was_up ? "redis_down" : "redis_connect_failed",
           "host=%s port=%d reason=\"%s\" retry_ms=%u", r->cfg.host, r->cfg.port, r->health.last_error,
           r->backoff_ms ? r->backoff_ms : r->cfg.backoff_min_ms);
  schedule_reconnect(r);
  /* From here on user callbacks run; any of them may close r. */
  fail_pending(r, st);
  if (ac && !hiredis_frees) redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
  if (was_up) health_notify(r);
}

static void subscribe_send(hubu_redis *r, char **channels, size_t n);

/* The health PING's answer: whatever it is, the next one may go. A PING
 * that times out has recycled the connection like any command. */
static void ping_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)st;
  (void)reply;
  (void)ud;
  r->ping_pending = 0;
}

static void ping_tick(uv_timer_t *t) {
  hubu_redis *r = t->data;
  if (r->state != ST_UP || r->ping_pending) return;
  const char *argv[1] = {"PING"};
  if (cmd_send(r, 0, ping_cb, NULL, 1, argv, NULL) == 0) r->ping_pending = 1;
}

static void hb_published(hubu_redis *pub, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)pub;
  redis_hb *h = ud;
  hubu_redis *r = h->sub;
  free(h);
  if (!r) return;
  r->hb_req = NULL;
  if (r->state != ST_UP || !r->hb_sent_ms) return;
  if (st == HUBU_REDIS_OK && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
    /* The server knows no subscriber of the channel: this connection's
     * subscriptions are gone. */
    conn_drop(r, HUBU_REDIS_DOWN, "heartbeat published to no subscriber", 0);
  } else if (st != HUBU_REDIS_OK && st != HUBU_REDIS_TIMEOUT) {
    /* The publisher's own trouble (down, closed, an error): says nothing of
     * this connection. A timeout does: the server is likely wedged, and the
     * heartbeat's own deadline decides. */
    r->hb_sent_ms = 0;
  }
}

/* A subscriber's tick: judge the heartbeat under way, or publish the next. */
static void hb_tick(uv_timer_t *t) {
  hubu_redis *r = t->data;
  if (r->state != ST_UP || !r->hb_pub) return;
  uv_update_time(r->loop);
  uint64_t now = uv_now(r->loop);
  if (r->hb_sent_ms) {
    if (now - r->hb_sent_ms > r->cfg.command_timeout_ms) {
      char why[80];
      snprintf(why, sizeof why, "heartbeat not received within %u ms", r->cfg.command_timeout_ms);
      r->health.timeouts++;
      conn_drop(r, HUBU_REDIS_TIMEOUT, why, 0);
    }
    return;
  }
  if (r->hb_req || !hubu_redis_is_up(r->hb_pub)) return;
  redis_hb *h = malloc(sizeof *h);
  if (!h) return;
  h->sub = r;
  char payload[24];
  snprintf(payload, sizeof payload, "%" PRIu64, now);
  const char *argv[3] = {"PUBLISH", r->hb_channel, payload};
  if (hubu_redis_command(r->hb_pub, 0, hb_published, h, 3, argv, NULL) != 0) {
    free(h);
    return;
  }
  r->hb_req = h;
  r->hb_sent_ms = now ? now : 1;
}

static void conn_up(hubu_redis *r) {
  uv_timer_stop(&r->conn_timer);
  if (!r->subscriber) /* a subscribed connection takes no PING (hiredis 0.14): it has heartbeats */
    uv_timer_start(&r->ping_timer, ping_tick, r->cfg.ping_interval_ms, r->cfg.ping_interval_ms);
  else if (r->hb_pub)
    uv_timer_start(&r->ping_timer, hb_tick, r->cfg.ping_interval_ms, r->cfg.ping_interval_ms);
  r->state = ST_UP;
  r->backoff_ms = 0;
  r->health.up = 1;
  r->health.connects++;
  r->health.changed_ms = hubu_now_ms();
  hubu_log(HUBU_LOG_INFO, 0, NULL, "redis_up", "host=%s port=%d replid=%s run_id=%s", r->cfg.host, r->cfg.port,
           r->health.replid, r->health.run_id);
  health_notify(r);
}

static void connect_timeout_cb(uv_timer_t *t) {
  hubu_redis *r = t->data;
  if (r->state != ST_CONNECTING) return;
  char why[64];
  snprintf(why, sizeof why, "connect timed out after %u ms", r->cfg.connect_timeout_ms);
  conn_drop(r, HUBU_REDIS_TIMEOUT, why, 0);
}

/* Each of the connect's commands: AUTH, SELECT, INFO replication, INFO server. */
static void hello_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  (void)ud;
  if (r->state != ST_CONNECTING) return; /* the connection failed meanwhile (and was answered for) */
  if (st != HUBU_REDIS_OK) {
    char why[HUBU_REDIS_ERROR_MAX];
    snprintf(why, sizeof why, "connect: %s%s%.100s", hubu_redis_status_name(st), reply && reply->str ? ": " : "",
             reply && reply->str ? reply->str : "");
    conn_drop(r, st == HUBU_REDIS_REPLY_ERROR ? HUBU_REDIS_DOWN : st, why, 0);
    return;
  }
  health_take_info(r, reply);
  if (--r->hello_left > 0) return;
  if (r->subscriber && r->n_channels) {
    subscribe_send(r, r->channels, r->n_channels); /* up once they are confirmed */
    if (r->state == ST_CONNECTING && !r->sub_unconfirmed) conn_up(r);
  } else {
    conn_up(r);
  }
}

static void on_connect(const redisAsyncContext *ac, int status) {
  hubu_redis *r = ac->data;
  if (!r || status == REDIS_OK) return;
  /* hiredis frees the context after this returns. */
  conn_drop(r, HUBU_REDIS_DOWN, ac->err ? ac->errstr : "connect failed", 1);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  (void)status;
  hubu_redis *r = ac->data;
  if (!r) return; /* detached already */
  conn_drop(r, HUBU_REDIS_DOWN, ac->err ? ac->errstr : "connection closed", 1);
}

static void sub_reply_cb(redisAsyncContext *ac, void *reply_v, void *priv);

static void conn_start(hubu_redis *r) {
  r->conn_id++;
  r->state = ST_CONNECTING;
  uv_timer_start(&r->conn_timer, connect_timeout_cb, r->cfg.connect_timeout_ms, 0);
  redisAsyncContext *ac = redisAsyncConnect(r->cfg.host, r->cfg.port);
  if (!ac) {
    conn_drop(r, HUBU_REDIS_DOWN, "out of memory", 0);
    return;
  }
  if (ac->err) {
    char why[HUBU_REDIS_ERROR_MAX];
    snprintf(why, sizeof why, "%s", ac->errstr);
    redisAsyncFree(ac);
    conn_drop(r, HUBU_REDIS_DOWN, why, 0);
    return;
  }
  if (ev_attach(r, ac) != 0) {
    redisAsyncFree(ac);
    conn_drop(r, HUBU_REDIS_DOWN, "cannot watch the socket", 0);
    return;
  }
  ac->data = r;
  /* TCP keepalive: an idle connection to a peer that vanished (a subscriber's
   * has no command to time out) is noticed within about 30 s. */
  redisEnableKeepAlive(&ac->c);
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  r->ac = ac;
  /* The connect's commands wait in hiredis's buffer until the socket is
   * writable. */
  r->hello_left = 0;
  uint32_t t = r->cfg.connect_timeout_ms;
  char db[16];
  const char *auth[2] = {"AUTH", r->cfg.password};
  const char *sel[2] = {"SELECT", db};
  const char *info_repl[2] = {"INFO", "replication"};
  const char *info_srv[2] = {"INFO", "server"};
  int rc = 0;
  if (r->cfg.password[0]) {
    rc |= cmd_send(r, t, hello_cb, NULL, 2, auth, NULL);
    r->hello_left++;
  }
  if (r->cfg.db > 0) {
    snprintf(db, sizeof db, "%d", r->cfg.db);
    rc |= cmd_send(r, t, hello_cb, NULL, 2, sel, NULL);
    r->hello_left++;
  }
  rc |= cmd_send(r, t, hello_cb, NULL, 2, info_repl, NULL);
  r->hello_left++;
  rc |= cmd_send(r, t, hello_cb, NULL, 2, info_srv, NULL);
  r->hello_left++;
  if (rc != 0) conn_drop(r, HUBU_REDIS_DOWN, "could not queue the connect's commands", 0);
}

/* ---- life ---- */

static void timer_closed(uv_handle_t *h) {
  hubu_redis *r = h->data;
  if (--r->handles_open == 0) {
    for (size_t i = 0; i < r->n_channels; i++) free(r->channels[i]);
    free(r->channels);
    free(r->hb_channel);
    free(r);
  }
}

static hubu_redis *redis_new(uv_loop_t *loop, const hubu_redis_config *cfg, void *ud) {
  if (!cfg || !host_is_address(cfg->host)) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "redis_config_invalid", "host=\"%.64s\"", cfg ? cfg->host : "");
    return NULL;
  }
  hubu_redis *r = calloc(1, sizeof *r);
  if (!r) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=redis_new");
    return NULL;
  }
  r->loop = loop;
  r->cfg = *cfg;
  config_defaults(&r->cfg);
  r->ud = ud;
  uv_timer_init(loop, &r->conn_timer);
  uv_timer_init(loop, &r->sub_timer);
  uv_timer_init(loop, &r->ping_timer);
  r->ping_timer.data = r;
  r->conn_timer.data = r;
  r->sub_timer.data = r;
  r->handles_open = 3;
  r->state = ST_DOWN;
  health_set_error(r, "not connected yet");
  return r;
}

hubu_redis *hubu_redis_new(uv_loop_t *loop, const hubu_redis_config *cfg, hubu_redis_health_cb on_health, void *ud) {
  hubu_redis *r = redis_new(loop, cfg, ud);
  if (!r) return NULL;
  r->on_health = on_health;
  conn_start(r);
  return r;
}

hubu_redis *hubu_redis_subscriber_new(uv_loop_t *loop, const hubu_redis_config *cfg, hubu_redis_message_cb on_message,
                                      hubu_redis_health_cb on_health, void *ud) {
  hubu_redis *r = redis_new(loop, cfg, ud);
  if (!r) return NULL;
  r->subscriber = 1;
  r->on_message = on_message;
  r->on_health = on_health;
  conn_start(r);
  return r;
}

void hubu_redis_close(hubu_redis *r) {
  if (!r || r->state == ST_CLOSED) return;
  redisAsyncContext *ac = r->ac;
  r->state = ST_CLOSED;
  r->ac = NULL;
  if (ac) ac->data = NULL;
  uv_timer_stop(&r->conn_timer);
  uv_timer_stop(&r->sub_timer);
  uv_timer_stop(&r->ping_timer);
  if (r->hb_req) r->hb_req->sub = NULL;
  r->hb_req = NULL;
  r->hb_pub = NULL;
  fail_pending(r, HUBU_REDIS_CLOSED);
  /* Inside one of its callbacks hiredis defers this free until the callback
   * returns; a context hiredis is freeing already is left to it. */
  if (ac && !(ac->c.flags & (REDIS_FREEING | REDIS_DISCONNECTING))) redisAsyncFree(ac);
  uv_close((uv_handle_t *)&r->conn_timer, timer_closed);
  uv_close((uv_handle_t *)&r->sub_timer, timer_closed);
  uv_close((uv_handle_t *)&r->ping_timer, timer_closed);
}

/* ---- scripts ---- */

void hubu_redis_script_init(hubu_redis_script *s, const char *source, size_t len) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  s->source = source;
  s->len = len;
  s->sha1[0] = '\0';
  if (EVP_Digest(source, len, md, &n, EVP_sha1(), NULL) != 1 || n != 20) return; /* EVALSHA then fails: EVAL */
  for (unsigned i = 0; i < n; i++) snprintf(s->sha1 + 2 * i, 3, "%02x", md[i]);
}

/* One script call: its arguments are kept (copied) until the answer, for
 * the EVAL that follows a NOSCRIPT. One allocation: the struct, argv and
 * argvlen (argc + 1 entries: argv[argc] is the source), then the bytes of
 * the keys and args. */
typedef struct {
  hubu_redis_reply_cb cb;
  void *ud;
  uint32_t timeout_ms;
  int argc;
  const char **argv; /* [0] "EVALSHA" or "EVAL", [1] sha1 or source, [2] numkeys, keys..., args... */
  size_t *argvlen;
  char numkeys[16];
} redis_eval;

static void eval_free(redis_eval *e) { free(e); }

static void eval_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud);

static void eval_sent_source_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  redis_eval *e = ud;
  hubu_redis_reply_cb cb = e->cb;
  void *cud = e->ud;
  eval_free(e);
  cb(r, st, reply, cud);
}

static void eval_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  redis_eval *e = ud;
  if (st == HUBU_REDIS_REPLY_ERROR && reply && reply->str && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
    e->argv[0] = "EVAL";
    e->argvlen[0] = 4;
    /* argv[1] was the sha1; the source follows it in the same arrays. */
    e->argv[1] = e->argv[e->argc];
    e->argvlen[1] = e->argvlen[e->argc];
    if (hubu_redis_command(r, e->timeout_ms, eval_sent_source_cb, e, e->argc, e->argv, e->argvlen) == 0) return;
    st = r->state == ST_CLOSED ? HUBU_REDIS_CLOSED : HUBU_REDIS_DOWN;
    reply = NULL;
  }
  eval_sent_source_cb(r, st, reply, e);
}

int hubu_redis_eval(hubu_redis *r, const hubu_redis_script *s, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud,
                    int numkeys, const char **keys, const size_t *keylen, int numargs, const char **args,
                    const size_t *arglen) {
  if (!r || !s || !cb || numkeys < 0 || numargs < 0 || numkeys + numargs > 1024) return -1;
  int argc = 3 + numkeys + numargs;
  size_t bytes = 0;
  for (int i = 0; i < numkeys; i++) bytes += keylen ? keylen[i] : strlen(keys[i]);
  for (int i = 0; i < numargs; i++) bytes += arglen ? arglen[i] : strlen(args[i]);
  size_t head = sizeof(redis_eval) + (size_t)(argc + 1) * (sizeof(char *) + sizeof(size_t));
  redis_eval *e = calloc(1, head + bytes);
  if (!e) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=redis_eval");
    return -1;
  }
  e->argv = (const char **)(e + 1);
  e->argvlen = (size_t *)(e->argv + argc + 1);
  char *data = (char *)(e->argvlen + argc + 1);
  e->cb = cb;
  e->ud = ud;
  e->timeout_ms = timeout_ms;
  e->argc = argc;
  snprintf(e->numkeys, sizeof e->numkeys, "%d", numkeys);
  e->argv[0] = "EVALSHA";
  e->argvlen[0] = 7;
  e->argv[1] = s->sha1;
  e->argvlen[1] = strlen(s->sha1);
  e->argv[2] = e->numkeys;
  e->argvlen[2] = strlen(e->numkeys);
  for (int i = 0; i < numkeys + numargs; i++) {
    const char *a = i < numkeys ? keys[i] : args[i - numkeys];
    size_t n = i < numkeys ? (keylen ? keylen[i] : strlen(a)) : (arglen ? arglen[i - numkeys] : strlen(a));
    memcpy(data, a, n);
    e->argv[3 + i] = data;
    e->argvlen[3 + i] = n;
    data += n;
  }
  e->argv[argc] = s->source;
  e->argvlen[argc] = s->len;
  if (!s->sha1[0]) { /* no digest: EVAL straight away */
    e->argv[0] = "EVAL";
    e->argvlen[0] = 4;
    e->argv[1] = s->source;
    e->argvlen[1] = s->len;
  }
  if (hubu_redis_command(r, timeout_ms, eval_cb, e, argc, e->argv, e->argvlen) != 0) {
    eval_free(e);
    return -1;
  }
  return 0;
}

typedef struct {
  hubu_redis_reply_cb cb;
  void *ud;
} redis_replid_check;

static void replid_cb(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud) {
  redis_replid_check *k = ud;
  hubu_redis_reply_cb cb = k->cb;
  void *cud = k->ud;
  free(k);
  if (st == HUBU_REDIS_OK && health_take_info(r, reply)) health_notify(r);
  if (r->state == ST_CLOSED && st != HUBU_REDIS_CLOSED) st = HUBU_REDIS_CLOSED, reply = NULL;
  cb(r, st, reply, cud);
}

int hubu_redis_check_replid(hubu_redis *r, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud) {
  if (!r || !cb) return -1;
  redis_replid_check *k = malloc(sizeof *k);
  if (!k) return -1;
  k->cb = cb;
  k->ud = ud;
  const char *argv[2] = {"INFO", "replication"};
  if (hubu_redis_command(r, timeout_ms, replid_cb, k, 2, argv, NULL) != 0) {
    free(k);
    return -1;
  }
  return 0;
}

/* ---- pub/sub ---- */

static void sub_timeout_cb(uv_timer_t *t) {
  hubu_redis *r = t->data;
  if (!r->sub_unconfirmed || !r->ac) return;
  r->health.timeouts++;
  char why[80];
  snprintf(why, sizeof why, "SUBSCRIBE not confirmed within %u ms", r->cfg.command_timeout_ms);
  conn_drop(r, HUBU_REDIS_TIMEOUT, why, 0);
}

/* hiredis's callback for every subscription reply of a channel: confirmations
 * and messages; NULL when the context goes away (the disconnect callback
 * deals with that). */
static void sub_reply_cb(redisAsyncContext *ac, void *reply_v, void *priv) {
  (void)priv;
  redisReply *reply = reply_v;
  hubu_redis *r = ac->data;
  if (!r || !reply || r->ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
  redisReply *kind = reply->element[0], *ch = reply->element[1], *payload = reply->element[2];
  if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING) return;
  if (strcmp(kind->str, "message") == 0 && payload->type == REDIS_REPLY_STRING) {
    /* Only channels still listed: one dropped while its UNSUBSCRIBE is on
     * the way may still bring a message. */
    int listed = 0;
    for (size_t i = 0; i < r->n_channels && !listed; i++)
      listed = strlen(r->channels[i]) == ch->len && memcmp(r->channels[i], ch->str, ch->len) == 0;
    if (r->hb_channel && strlen(r->hb_channel) == ch->len && memcmp(r->hb_channel, ch->str, ch->len) == 0)
      r->hb_sent_ms = 0; /* our heartbeat is back */
    else if (listed && r->on_message)
      r->on_message(r, ch->str, ch->len, payload->str, payload->len, r->ud);
  } else if (strcmp(kind->str, "subscribe") == 0) {
    if (r->sub_unconfirmed && --r->sub_unconfirmed == 0) {
      uv_timer_stop(&r->sub_timer);
      if (r->state == ST_CONNECTING) conn_up(r);
    }
  }
}

static void subscribe_send(hubu_redis *r, char **channels, size_t n) {
  if (!r->ac || !n) return;
  const char **argv = malloc((n + 1) * sizeof *argv);
  if (!argv) {
    conn_drop(r, HUBU_REDIS_DOWN, "out of memory", 0);
    return;
  }
  argv[0] = "SUBSCRIBE";
  for (size_t i = 0; i < n; i++) argv[i + 1] = channels[i];
  int rc = redisAsyncCommandArgv(r->ac, sub_reply_cb, NULL, (int)(n + 1), argv, NULL);
  free(argv);
  if (rc != REDIS_OK) {
    conn_drop(r, HUBU_REDIS_DOWN, "SUBSCRIBE could not be sent", 0);
    return;
  }
  if (r->sub_unconfirmed == 0) uv_timer_start(&r->sub_timer, sub_timeout_cb, r->cfg.command_timeout_ms, 0);
  r->sub_unconfirmed += n;
}

int hubu_redis_subscribe(hubu_redis *r, const char *channel) {
  if (!r || !r->subscriber || r->state == ST_CLOSED || !channel) return -1;
  for (size_t i = 0; i < r->n_channels; i++)
    if (strcmp(r->channels[i], channel) == 0) return 0;
  char **grown = realloc(r->channels, (r->n_channels + 1) * sizeof *grown);
  if (!grown) return -1;
  r->channels = grown;
  char *copy = strdup(channel);
  if (!copy) return -1;
  r->channels[r->n_channels++] = copy;
  if (r->state == ST_UP) subscribe_send(r, &copy, 1);
  /* CONNECTING: the connect subscribes every channel once its INFO is in,
   * unless that already happened: then this one goes now. */
  else if (r->state == ST_CONNECTING && r->hello_left == 0)
    subscribe_send(r, &copy, 1);
  return 0;
}

int hubu_redis_unsubscribe(hubu_redis *r, const char *channel) {
  if (!r || !r->subscriber || r->state == ST_CLOSED || !channel) return -1;
  for (size_t i = 0; i < r->n_channels; i++) {
    if (strcmp(r->channels[i], channel) != 0) continue;
    char *name = r->channels[i];
    r->channels[i] = r->channels[--r->n_channels];
    int rc = REDIS_OK;
    /* Sent whenever the connection has subscribed (up, or its SUBSCRIBE in
     * flight); a connection still in its connect subscribes only what is
     * listed. */
    if (r->ac && (r->ac->c.flags & REDIS_SUBSCRIBED)) {
      const char *argv[2] = {"UNSUBSCRIBE", name};
      rc = redisAsyncCommandArgv(r->ac, NULL, NULL, 2, argv, NULL);
    }
    free(name);
    /* Not sent: the connection is replaced, and the next one does not
     * subscribe it. */
    if (rc != REDIS_OK) conn_drop(r, HUBU_REDIS_DOWN, "UNSUBSCRIBE could not be sent", 0);
    return 0;
  }
  return 0;
}

int hubu_redis_subscriber_heartbeat(hubu_redis *sub, hubu_redis *pub, const char *channel) {
  if (!sub || !sub->subscriber || sub->state == ST_CLOSED || (pub && (pub->subscriber || !channel))) return -1;
  if (sub->hb_channel) {
    hubu_redis_unsubscribe(sub, sub->hb_channel);
    free(sub->hb_channel);
    sub->hb_channel = NULL;
  }
  if (sub->hb_req) sub->hb_req->sub = NULL;
  sub->hb_req = NULL;
  sub->hb_sent_ms = 0;
  sub->hb_pub = NULL;
  uv_timer_stop(&sub->ping_timer);
  if (!pub) return 0;
  if (!(sub->hb_channel = strdup(channel)) || hubu_redis_subscribe(sub, channel) != 0) {
    free(sub->hb_channel);
    sub->hb_channel = NULL;
    return -1;
  }
  sub->hb_pub = pub;
  if (sub->state == ST_UP)
    uv_timer_start(&sub->ping_timer, hb_tick, sub->cfg.ping_interval_ms, sub->cfg.ping_interval_ms);
  return 0;
}

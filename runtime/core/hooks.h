/* hooks.h — how core hands an event to the plugins: one dispatch function
 * with an event enum, implemented by the plugin host (plugin/host.c) and
 * wired by main.c. Core never includes the host; with no dispatch set every
 * event takes its default (deliver, push to every member, allow). */
#ifndef HUBU_CORE_HOOKS_H
#define HUBU_CORE_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include "hubu.pb-c.h"
#include "msg.h"

typedef struct hubu_peer hubu_peer;
typedef struct hubu_session hubu_session;

typedef enum {
  HUBU_HOOK_CONNECT = 0, /* after HELLO_OK: peer */
  HUBU_HOOK_DISCONNECT,  /* a READY peer goes away: peer */
  HUBU_HOOK_SEND,        /* message.send, before a seq: user, device, session_id, client_id, send -> verdict */
  HUBU_HOOK_ROUTE,       /* message.route, after the store: session, msg -> plan */
  HUBU_HOOK_STORED,      /* message.stored, after the store: msg, replayed */
  HUBU_HOOK_READ,        /* session.read, PULL and SYNC: user, session_id, op -> allowed, reason */
} hubu_hook_event;

/* What message.send hooks decided. code OK with rewritten set: use the new
 * fields. The owned fields are freed with hubu_send_verdict_free. */
typedef struct {
  Hubu__V1__Code code;
  char reason[256];
  uint32_t retry_after_ms; /* RATE_LIMITED / UNAVAILABLE: ev:reject's third argument */
  int rewritten;
  uint8_t *body; /* owned */
  size_t body_len;
  char *content_type; /* owned */
  uint8_t *meta;      /* owned: packed field-9 entries */
  size_t meta_len;
} hubu_send_verdict;

/* message.route: how each member gets m. Modes per user. */
typedef enum { HUBU_ROUTE_PUSH = 0, HUBU_ROUTE_HINT, HUBU_ROUTE_NONE } hubu_route_mode;
typedef struct {
  uint8_t default_mode; /* hubu_route_mode for members without an override */
  size_t n;             /* overrides (and extra recipients when extra[i]) */
  char **users;         /* owned */
  uint8_t *modes;       /* owned */
  uint8_t *extra;       /* owned: 1 when the user is not a member (ev:add) */
} hubu_route_plan;

/* One event. The inputs of its kind are set by core; the outputs by the
 * dispatch when it returns 1. */
typedef struct {
  hubu_hook_event event;
  hubu_peer *peer;             /* CONNECT, DISCONNECT */
  const char *user;            /* SEND, READ */
  const char *device;          /* SEND */
  const char *session_id;      /* SEND, READ */
  uint64_t client_id;          /* SEND */
  const Hubu__V1__Send *send;  /* SEND */
  const hubu_session *session; /* ROUTE */
  const hubu_msg *msg;         /* ROUTE, STORED */
  int replayed;                /* STORED */
  const char *op;              /* READ: "pull" or "sync" */
  uint64_t send_ref;           /* SEND in: names this SEND to a verdict that comes later */
  hubu_send_verdict verdict;   /* SEND out (free with hubu_send_verdict_free) */
  hubu_route_plan plan;        /* ROUTE out (free with hubu_route_plan_free) */
  int allowed;                 /* READ out */
  char reason[256];            /* READ out: why not */
} hubu_hook_call;

/* Returns 0 when no handler ran (the event's default applies and no output
 * is set), 1 when handlers ran and the outputs hold their decision, or, for
 * SEND only, HUBU_HOOK_LATER: a handler waits (for an HTTP service, the
 * store), and the verdict comes later, exactly once, through
 * hubu_messaging_send_decided(core, send_ref, verdict) (messaging.h). */
#define HUBU_HOOK_LATER 2
typedef int (*hubu_hook_dispatch_fn)(void *host, hubu_hook_call *call);

typedef struct {
  hubu_hook_dispatch_fn dispatch; /* NULL: no plugins */
  void *host;
} hubu_hooks;

/* Runs the event through h; 0 when nothing is hooked. */
static inline int hubu_hooks_run(const hubu_hooks *h, hubu_hook_call *call) {
  return h->dispatch ? h->dispatch(h->host, call) : 0;
}

void hubu_send_verdict_free(hubu_send_verdict *v);
void hubu_route_plan_free(hubu_route_plan *plan);

#endif

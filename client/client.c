/* client.c — libhubu-client's frame layer: the client object (options, timer,
 * flush handle) and at most one live link (one TCP/TLS connection); a dropped
 * link closes on its own. The message layer (messages.c) is driven from here
 * through the hooks of client_internal.h: HELLO_OK, its frames, loss, and the
 * end of each loop turn. Invariant: a user callback may close the client at any point, so
 * every call out is followed by a link_current() check; memory is freed only
 * once every handle and request pointing at it has completed (refs == 0). */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "client_internal.h"
#include "clock.h"
#include "frame.h"
#include "hubu_client.h"
#include "pbjson.h"
#include "tls.h"
#include "token.h"
#include "wire.h"

#define HUBU_CLIENT_READ_SIZE 65536
#define HUBU_CLIENT_MAX_IN_FRAME (16u << 20) /* server frames we accept, at least */
#define HUBU_CLIENT_REASON_SIZE 160

/* ---- shared TLS contexts --------------------------------------------------
 * SSL_CTX_new is expensive in OpenSSL 3, and a bench opens thousands of
 * clients, so clients with the same (ca_file, verify, host) share one context.
 * Each entry is owned by the list and freed when its last client is freed. */

struct hubu_client_tls_ctx {
  struct hubu_client_tls_ctx *next;
  char *ca_file; /* owned; NULL for the system store */
  char *host;    /* owned; the name verified, only when verify */
  int verify;
  SSL_CTX *ctx; /* owned */
  unsigned refs;
};

static pthread_mutex_t hubu_client_tls_lock = PTHREAD_MUTEX_INITIALIZER;
static hubu_client_tls_ctx *hubu_client_tls_list;

static int hubu_str_same(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static char *hubu_str_copy(const char *s) { return s ? strdup(s) : NULL; }

static int hubu_host_is_ip(const char *host) {
  struct sockaddr_in a4;
  struct sockaddr_in6 a6;
  return uv_ip4_addr(host, 0, &a4) == 0 || uv_ip6_addr(host, 0, &a6) == 0;
}

static hubu_client_tls_ctx *hubu_client_tls_ctx_acquire(const char *ca_file, int verify, const char *host) {
  const char *name = verify ? host : NULL;
  pthread_mutex_lock(&hubu_client_tls_lock);
  hubu_client_tls_ctx *e = hubu_client_tls_list;
  while (e && !(e->verify == verify && hubu_str_same(e->ca_file, ca_file) && hubu_str_same(e->host, name))) e = e->next;
  if (e) {
    e->refs++;
    pthread_mutex_unlock(&hubu_client_tls_lock);
    return e;
  }
  char err[256];
  e = calloc(1, sizeof *e);
  if (!e) goto fail;
  e->verify = verify;
  if ((ca_file && !(e->ca_file = strdup(ca_file))) || (name && !(e->host = strdup(name)))) goto fail;
  e->ctx = hubu_tls_client_ctx_new(ca_file, verify, err, sizeof err);
  if (!e->ctx) goto fail;
  if (name) { /* the chain alone is not enough: the certificate must name this host */
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(e->ctx);
    int ok = hubu_host_is_ip(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                                   : X509_VERIFY_PARAM_set1_host(param, name, 0);
    if (ok != 1) goto fail;
  }
  e->refs = 1;
  e->next = hubu_client_tls_list;
  hubu_client_tls_list = e;
  pthread_mutex_unlock(&hubu_client_tls_lock);
  return e;
fail:
  pthread_mutex_unlock(&hubu_client_tls_lock);
  if (e) {
    SSL_CTX_free(e->ctx);
    free(e->host);
    free(e->ca_file);
    free(e);
  }
  return NULL;
}

static void hubu_client_tls_ctx_release(hubu_client_tls_ctx *e) {
  if (!e) return;
  pthread_mutex_lock(&hubu_client_tls_lock);
  if (--e->refs > 0) {
    pthread_mutex_unlock(&hubu_client_tls_lock);
    return;
  }
  hubu_client_tls_ctx **p = &hubu_client_tls_list;
  while (*p != e) p = &(*p)->next;
  *p = e->next;
  pthread_mutex_unlock(&hubu_client_tls_lock);
  SSL_CTX_free(e->ctx);
  free(e->host);
  free(e->ca_file);
  free(e);
}

/* ---- objects --------------------------------------------------------------- */

/* One TCP (and TLS) connection. Owned by its client while current
 * (client->link); once dropped it owns itself and is freed in its tcp close
 * callback, which libuv runs after the connect and write requests have
 * completed (with UV_ECANCELED). */
struct hubu_client_link {
  hubu_client *client; /* not owned; stays allocated while the link lives (client->refs) */
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  hubu_tls *tls;              /* owned; NULL for plain TCP */
  hubu_buf in;                /* owned: the start of a frame still waiting for its tail */
  hubu_buf out;               /* owned: plaintext frames queued since the last flush */
  hubu_buf wire;              /* owned: the bytes of the write in flight (write_req) */
  int writing;                /* write_req is in flight */
  int ws_state;               /* WebSocket (ws_path): 1 the upgrade is sent, 2 open; 0 raw TCP */
  wslay_event_context_ptr ws; /* owned, once open: framing and masking by wslay */
  char ws_accept[29];         /* the Sec-WebSocket-Accept expected */
  const uint8_t *ws_in;       /* the input being fed to wslay */
  size_t ws_in_len;
};

typedef struct hubu_client_resolve {
  uv_getaddrinfo_t req;
  hubu_client *client; /* not owned */
} hubu_client_resolve;

static void hubu_client_lose(hubu_client *c, int code, const char *reason, uint32_t retry_after_ms);
static void hubu_client_attempt_begin(hubu_client *c);
static void hubu_link_flush(hubu_client_link *link);

static int hubu_link_current(const hubu_client_link *link) { return link->client->link == link; }

static void hubu_client_notify(hubu_client *c, hubu_client_state state, int code, const char *reason) {
  c->state = state;
  if (c->cb.on_state) c->cb.on_state(c, state, code, reason ? reason : "", c->ud);
}

static uint64_t hubu_client_random(hubu_client *c) { /* xorshift64*: jitter only */
  c->rng ^= c->rng >> 12;
  c->rng ^= c->rng << 25;
  c->rng ^= c->rng >> 27;
  return c->rng * 2685821657736338717ull;
}

/* Exponential backoff with full jitter: uniform in [min, min(max, min * 2^(attempt+1))]. */
static uint32_t hubu_client_backoff_delay(hubu_client *c) {
  uint64_t ceiling = c->backoff_min_ms;
  for (unsigned i = 0; i <= c->attempt && ceiling < c->backoff_max_ms; i++) ceiling *= 2;
  if (ceiling > c->backoff_max_ms) ceiling = c->backoff_max_ms;
  uint64_t span = ceiling - c->backoff_min_ms;
  return (uint32_t)(c->backoff_min_ms + (span ? hubu_client_random(c) % (span + 1) : 0));
}

/* Frees c and everything it owns (its handles are closed, or were never opened). */
static void hubu_client_free(hubu_client *c) {
  hubu_client_tls_ctx_release(c->tls_ctx);
  hubu_messages_free(c->msgs);
  free(c->host);
  free(c->tls_ca_file);
  free(c->user_id);
  free(c->device_id);
  free(c->token);
  free(c->client_info);
  free(c->ws_path);
  free(c);
}

static void hubu_client_maybe_free(hubu_client *c) {
  if (!c->closing || c->refs > 0) return;
  void (*on_closed)(void *) = c->on_closed;
  void *ud = c->ud;
  hubu_client_free(c);
  if (on_closed) on_closed(ud);
}

void hubu_client_on_handle_closed(uv_handle_t *h) {
  hubu_client *c = h->data;
  c->refs--;
  hubu_client_maybe_free(c);
}

/* ---- link: one connection ---------------------------------------------------- */

static void hubu_link_on_closed(uv_handle_t *h) {
  hubu_client_link *link = h->data;
  hubu_client *c = link->client;
  hubu_tls_free(link->tls);
  if (link->ws) wslay_event_context_free(link->ws);
  hubu_buf_free(&link->in);
  hubu_buf_free(&link->out);
  hubu_buf_free(&link->wire);
  free(link);
  c->refs--;
  hubu_client_maybe_free(c);
}

/* Detaches the current link (if any) and starts closing it. */
static void hubu_client_link_drop(hubu_client *c) {
  hubu_client_link *link = c->link;
  if (!link) return;
  c->link = NULL;
  uv_close((uv_handle_t *)&link->tcp, hubu_link_on_closed);
}

static void hubu_client_addrs_free(hubu_client *c) {
  if (c->addrs) uv_freeaddrinfo(c->addrs);
  c->addrs = NULL;
  c->addr_next = NULL;
}

/* Ends the attempt under way: the link, the addresses, and a resolution in
 * flight, whose callback will then find itself stale and just free itself. */
static void hubu_client_drop_attempt(hubu_client *c) {
  if (c->resolve) {
    uv_cancel((uv_req_t *)&c->resolve->req); /* may fail when already running: then it is stale */
    c->resolve = NULL;
  }
  hubu_client_addrs_free(c);
  hubu_client_link_drop(c);
}

/* The flush handle runs before the loop polls, so frames queued in any
 * callback of this turn leave in one write before the loop sleeps again. */
static void hubu_client_on_flush(uv_prepare_t *h) {
  hubu_client *c = h->data;
  hubu_messages_before_flush(c); /* may queue a DELIVER_ACK: before the stop, so no second run */
  uv_prepare_stop(h);
  if (c->link) hubu_link_flush(c->link);
}

void hubu_client_flush_arm(hubu_client *c) {
  if (!uv_is_active((uv_handle_t *)&c->flush)) uv_prepare_start(&c->flush, hubu_client_on_flush);
}

static void hubu_link_on_write(uv_write_t *req, int status) {
  hubu_client_link *link = req->data;
  hubu_client *c = link->client;
  link->writing = 0;
  hubu_buf_free(&link->wire);
  if (!hubu_link_current(link)) return; /* dropped: the close callback frees it */
  if (status < 0) {
    char reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "write: %s", uv_strerror(status));
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  if (hubu_buf_size(&link->out) > 0 || (link->tls && hubu_tls_output_pending(link->tls) > 0)) hubu_client_flush_arm(c);
}

/* ---- WebSocket (ws_path): the upgrade, then one binary message per frame --- */

static ssize_t hubu_ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud) {
  (void)flags;
  hubu_client_link *link = ud;
  if (!link->ws_in_len) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < link->ws_in_len ? len : link->ws_in_len;
  memcpy(buf, link->ws_in, n);
  link->ws_in += n;
  link->ws_in_len -= n;
  return (ssize_t)n;
}

static ssize_t hubu_ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud) {
  (void)flags;
  hubu_client_link *link = ud;
  if (hubu_buf_append(&link->wire, data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int hubu_ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
  (void)ud;
  if (RAND_bytes(buf, (int)len) != 1) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return 0;
}

static int hubu_link_feed(hubu_client_link *link, const uint8_t *data, size_t len);
static void hubu_link_send_hello(hubu_client_link *link);

static void hubu_ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  (void)ctx;
  hubu_client_link *link = ud;
  if (!hubu_link_current(link)) return;
  if (arg->opcode == WSLAY_BINARY_FRAME && !link->client->ws_json) {
    hubu_link_feed(link, arg->msg, arg->msg_length);
  } else if (arg->opcode == WSLAY_TEXT_FRAME && link->client->ws_json) { /* the JSON form, made a frame again */
    hubu_buf frame = {0};
    uint8_t type;
    char why[160];
    if (hubu_pbjson_frame_in((const char *)arg->msg, arg->msg_length, &frame, &type, why, sizeof why) ==
        HUBU_PBJSON_FRAME_OK)
      hubu_link_feed(link, hubu_buf_head(&frame), hubu_buf_size(&frame));
    else
      hubu_client_lose(link->client, HUBU__V1__CODE__BAD_FRAME, "websocket: a text message not in the JSON form", 0);
    hubu_buf_free(&frame);
  }
}

static const struct wslay_event_callbacks hubu_ws_callbacks = {
    .recv_callback = hubu_ws_recv,
    .send_callback = hubu_ws_send,
    .genmask_callback = hubu_ws_genmask,
    .on_msg_recv_callback = hubu_ws_on_msg,
};

/* The upgrade request, queued raw; the answer's key is remembered. 0 or -1. */
static int hubu_link_ws_request(hubu_client_link *link) {
  hubu_client *c = link->client;
  uint8_t nonce[16];
  char key[25], req[512];
  if (RAND_bytes(nonce, sizeof nonce) != 1) return -1;
  EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce);
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char joined[24 + sizeof guid];
  memcpy(joined, key, 24);
  memcpy(joined + 24, guid, sizeof guid - 1);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  if (EVP_Digest(joined, 24 + sizeof guid - 1, digest, &dlen, EVP_sha1(), NULL) != 1 || dlen != 20) return -1;
  EVP_EncodeBlock((unsigned char *)link->ws_accept, digest, 20);
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                   c->ws_path, c->host, c->port, key, c->ws_json ? "hubu.v1.json" : "hubu.v1");
  if (n < 0 || (size_t)n >= sizeof req || hubu_buf_append(&link->out, req, (size_t)n) != 0) return -1;
  link->ws_state = 1;
  return 0;
}

/* Bytes while the upgrade is answered (in link->in), then messages. 0, or -1 once lost. */
static int hubu_link_ws_input(hubu_client_link *link, const uint8_t *data, size_t len) {
  hubu_client *c = link->client;
  if (link->ws_state == 1) {
    if (hubu_buf_append(&link->in, data, len) != 0) {
      hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
      return -1;
    }
    const char *head = (const char *)hubu_buf_head(&link->in);
    size_t n = hubu_buf_size(&link->in), end = 0;
    for (size_t i = 3; i < n && !end; i++)
      if (!memcmp(head + i - 3, "\r\n\r\n", 4)) end = i + 1;
    if (!end) {
      if (n > 8192) hubu_client_lose(c, HUBU__V1__CODE__BAD_FRAME, "websocket: answer head too long", 0);
      return n > 8192 ? -1 : 0;
    }
    char want[64];
    snprintf(want, sizeof want, "Sec-WebSocket-Accept: %s\r\n", link->ws_accept);
    size_t wl = strlen(want);
    int found = 0;
    for (size_t i = 0; i + wl <= end && !found; i++) found = !memcmp(head + i, want, wl);
    if (n < 12 || memcmp(head, "HTTP/1.1 101", 12) != 0 || !found) {
      hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, "websocket: upgrade refused", 0);
      return -1;
    }
    if (wslay_event_context_client_init(&link->ws, &hubu_ws_callbacks, link) != 0) {
      hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
      return -1;
    }
    link->ws_state = 2;
    hubu_buf rest = link->in;
    memset(&link->in, 0, sizeof link->in);
    hubu_link_send_hello(link);
    int r = hubu_link_current(link) && n > end ? hubu_link_ws_input(link, (const uint8_t *)head + end, n - end) : 0;
    hubu_buf_free(&rest);
    if (hubu_link_current(link)) hubu_client_flush_arm(c);
    return r;
  }
  link->ws_in = data;
  link->ws_in_len = len;
  int r = wslay_event_recv(link->ws);
  link->ws_in = NULL;
  link->ws_in_len = 0;
  if (!hubu_link_current(link)) return -1;
  if (r != 0 || !wslay_event_get_read_enabled(link->ws)) {
    char reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "websocket closed (code %u)", wslay_event_get_status_code_received(link->ws));
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return -1;
  }
  if (wslay_event_want_write(link->ws)) hubu_client_flush_arm(c); /* pongs */
  return 0;
}

/* Moves the frames of link->out into masked binary messages in link->wire. 0 or -1. */
static int hubu_link_ws_wrap(hubu_client_link *link) {
  const uint8_t *p = hubu_buf_head(&link->out);
  size_t left = hubu_buf_size(&link->out);
  while (left >= HUBU_FRAME_HEADER_SIZE) {
    size_t size = HUBU_FRAME_HEADER_SIZE + ((size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7]);
    if (size > left) break;
    if (link->client->ws_json) { /* wslay copies the message */
      hubu_buf text = {0};
      int rc = hubu_pbjson_frame_out(p, size, &text);
      struct wslay_event_msg m = {
          .opcode = WSLAY_TEXT_FRAME, .msg = hubu_buf_head(&text), .msg_length = hubu_buf_size(&text)};
      if (rc == 0) rc = wslay_event_queue_msg(link->ws, &m);
      hubu_buf_free(&text);
      if (rc != 0) return -1;
    } else {
      struct wslay_event_msg m = {.opcode = WSLAY_BINARY_FRAME, .msg = p, .msg_length = size};
      if (wslay_event_queue_msg(link->ws, &m) != 0) return -1;
    }
    p += size;
    left -= size;
  }
  hubu_buf_free(&link->out);
  return wslay_event_want_write(link->ws) && wslay_event_send(link->ws) != 0 ? -1 : 0;
}

/* Moves what is queued into one uv_write; with TLS, encrypts first. At most one
 * write is in flight; what is queued meanwhile goes out when it completes. */
static void hubu_link_flush(hubu_client_link *link) {
  hubu_client *c = link->client;
  if (link->tls) {
    if (hubu_buf_size(&link->out) > 0 && hubu_tls_handshake_done(link->tls)) {
      if (hubu_tls_write(link->tls, hubu_buf_head(&link->out), hubu_buf_size(&link->out)) != 0) {
        char err[128], reason[HUBU_CLIENT_REASON_SIZE];
        snprintf(reason, sizeof reason, "tls write: %s", hubu_tls_last_error(err, sizeof err));
        hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, reason, 0);
        return;
      }
      hubu_buf_free(&link->out);
    }
    if (link->writing) return;
    size_t pending = hubu_tls_output_pending(link->tls);
    if (pending == 0) return;
    uint8_t *w = hubu_buf_reserve(&link->wire, pending);
    if (!w) {
      hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
      return;
    }
    link->wire.len += hubu_tls_take_output(link->tls, w, pending);
  } else if (link->ws_state == 2) {
    if (link->writing || hubu_buf_size(&link->out) == 0) return;
    if (hubu_link_ws_wrap(link) != 0) {
      hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
      return;
    }
  } else {
    if (link->writing || hubu_buf_size(&link->out) == 0) return;
    hubu_buf t = link->wire; /* wire is empty here: swap instead of copying */
    link->wire = link->out;
    link->out = t;
  }
  if (hubu_buf_size(&link->wire) == 0) return;
  uv_buf_t b = uv_buf_init((char *)hubu_buf_head(&link->wire), (unsigned)hubu_buf_size(&link->wire));
  int r = uv_write(&link->write_req, (uv_stream_t *)&link->tcp, &b, 1, hubu_link_on_write);
  if (r < 0) {
    hubu_buf_free(&link->wire);
    char reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "write: %s", uv_strerror(r));
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  link->writing = 1;
}

/* Appends a frame to the link's queue; the flush handle sends it this turn. */
static int hubu_link_queue(hubu_client_link *link, uint8_t type, const uint8_t *body, size_t len) {
  uint8_t *w = hubu_buf_reserve(&link->out, HUBU_FRAME_HEADER_SIZE + len);
  if (!w) return UV_ENOMEM;
  hubu_frame_header_encode(w, type, 0, (uint32_t)len);
  if (len) memcpy(w + HUBU_FRAME_HEADER_SIZE, body, len);
  link->out.len += HUBU_FRAME_HEADER_SIZE + len;
  link->client->last_tx_ms = uv_now(link->client->loop);
  hubu_client_flush_arm(link->client);
  return 0;
}

static int hubu_link_queue_message(hubu_client_link *link, uint8_t type, const ProtobufCMessage *msg) {
  if (hubu_wire_append(&link->out, type, msg) != 0) return UV_ENOMEM;
  link->client->last_tx_ms = uv_now(link->client->loop);
  hubu_client_flush_arm(link->client);
  return 0;
}

static int hubu_link_queue_ping(hubu_client_link *link, uint8_t type, uint64_t time_ms) {
  Hubu__V1__Ping p = HUBU__V1__PING__INIT;
  p.time_ms = time_ms;
  return hubu_link_queue_message(link, type, &p.base);
}

static void hubu_link_send_hello(hubu_client_link *link) {
  hubu_client *c = link->client;
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = c->user_id;
  h.device_id = c->device_id;
  h.token = c->token;
  h.client_info = c->client_info ? c->client_info : "libhubu-client";
  if (hubu_link_queue_message(link, HUBU_FRAME_HELLO, &h.base) != 0) {
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
    return;
  }
  hubu_client_notify(c, HUBU_CLIENT_HELLO_SENT, 0, NULL);
}

/* ---- heartbeat ------------------------------------------------------------------ */

static void hubu_client_on_heartbeat(uv_timer_t *t) {
  hubu_client *c = t->data;
  if (c->state != HUBU_CLIENT_READY || !c->link || c->heartbeat_ms == 0) return;
  uint64_t now = uv_now(c->loop), iv = c->heartbeat_ms;
  if (now - c->last_rx_ms >= 3 * iv) {
    hubu_client_lose(c, HUBU__V1__CODE__TIMEOUT, "server silent for 3 heartbeats", 0);
    return;
  }
  if (now - c->last_tx_ms >= iv && hubu_link_queue_ping(c->link, HUBU_FRAME_PING, hubu_now_ms()) != 0) {
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
    return;
  }
  uint64_t next_tx = c->last_tx_ms + iv, next_dead = c->last_rx_ms + 3 * iv;
  uint64_t next = next_tx < next_dead ? next_tx : next_dead;
  uv_timer_start(&c->timer, hubu_client_on_heartbeat, next > now ? next - now : 1, 0);
}

/* ---- frames from the server ------------------------------------------------------- */

static void hubu_link_on_hello_ok(hubu_client_link *link, const uint8_t *body, size_t len) {
  hubu_client *c = link->client;
  Hubu__V1__HelloOk *ok = hubu__v1__hello_ok__unpack(NULL, len, body);
  if (!ok) {
    hubu_client_lose(c, HUBU__V1__CODE__BAD_BODY, "undecodable HELLO_OK", 0);
    return;
  }
  c->sessions++;
  c->attempt = 0;
  c->max_frame = ok->max_frame ? ok->max_frame : HUBU_FRAME_DEFAULT_MAX;
  c->heartbeat_ms = c->ping_interval_ms ? c->ping_interval_ms : ok->heartbeat_ms;
  uv_timer_stop(&c->timer);
  if (c->heartbeat_ms) uv_timer_start(&c->timer, hubu_client_on_heartbeat, c->heartbeat_ms, 0);
  /* READY for the message layer first: its resends and SYNC go out before
   * anything the application sends from on_state or on_ready. */
  c->state = HUBU_CLIENT_READY;
  hubu_messages_on_hello(c, ok->last_client_id);
  if (!hubu_link_current(link)) {
    hubu__v1__hello_ok__free_unpacked(ok, NULL);
    return;
  }
  hubu_client_notify(c, HUBU_CLIENT_READY, 0, NULL);
  if (hubu_link_current(link) && c->cb.on_ready) {
    hubu_client_hello_info info = {
        .conn_id = ok->conn_id,
        .server_time_ms = ok->server_time_ms,
        .heartbeat_ms = ok->heartbeat_ms,
        .last_client_id = ok->last_client_id,
        .max_frame = c->max_frame,
        .server = ok->server ? ok->server : "",
    };
    c->cb.on_ready(c, &info, c->ud);
  }
  hubu__v1__hello_ok__free_unpacked(ok, NULL);
}

static void hubu_link_on_error(hubu_client_link *link, const uint8_t *body, size_t len) {
  Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, len, body);
  int code = e ? (int)e->code : HUBU__V1__CODE__BAD_BODY;
  const char *reason = e && e->message && e->message[0] ? e->message : hubu_code_name((Hubu__V1__Code)code);
  hubu_client_lose(link->client, code, reason, 0);
  if (e) hubu__v1__error__free_unpacked(e, NULL);
}

static void hubu_link_on_goaway(hubu_client_link *link, const uint8_t *body, size_t len) {
  Hubu__V1__GoAway *g = hubu__v1__go_away__unpack(NULL, len, body);
  int code = g ? (int)g->code : HUBU__V1__CODE__SHUTTING_DOWN;
  const char *reason = g && g->reason && g->reason[0] ? g->reason : "goaway";
  hubu_client_lose(link->client, code, reason, g ? g->reconnect_after_ms : 0);
  if (g) hubu__v1__go_away__free_unpacked(g, NULL);
}

static void hubu_link_on_ping(hubu_client_link *link, const uint8_t *body, size_t len) {
  Hubu__V1__Ping *p = hubu__v1__ping__unpack(NULL, len, body);
  uint64_t time_ms = p ? p->time_ms : 0;
  if (p) hubu__v1__ping__free_unpacked(p, NULL);
  if (hubu_link_queue_ping(link, HUBU_FRAME_PONG, time_ms) != 0)
    hubu_client_lose(link->client, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
}

static void hubu_link_on_frame(hubu_client_link *link, uint8_t type, const uint8_t *body, size_t len) {
  hubu_client *c = link->client;
  if (c->state != HUBU_CLIENT_READY) { /* hello phase: the library's own business */
    switch (type) {
      case HUBU_FRAME_HELLO_OK: hubu_link_on_hello_ok(link, body, len); break;
      case HUBU_FRAME_ERROR: hubu_link_on_error(link, body, len); break;
      case HUBU_FRAME_GOAWAY: hubu_link_on_goaway(link, body, len); break;
      case HUBU_FRAME_PING: hubu_link_on_ping(link, body, len); break;
      default: break; /* nothing else is meaningful before HELLO_OK */
    }
    return;
  }
  if (c->cb.on_frame) {
    c->cb.on_frame(c, type, body, len, c->ud);
    if (!hubu_link_current(link)) return;
  }
  switch (type) {
    case HUBU_FRAME_PING: hubu_link_on_ping(link, body, len); break;
    case HUBU_FRAME_GOAWAY: hubu_link_on_goaway(link, body, len); break;
    case HUBU_FRAME_SEND_ACK:
    case HUBU_FRAME_PUSH:
    case HUBU_FRAME_PULL_RESULT:
    case HUBU_FRAME_SYNC_RESULT:
    case HUBU_FRAME_PULL_HINT: hubu_messages_on_frame(c, type, body, len); break;
    default: break;
  }
}

/* Splits plaintext into frames. A frame's head waits in link->in for its tail;
 * when in is empty the frames are read straight from data (no copy).
 * Returns 0, or -1 when the link was dropped (stop feeding). */
static int hubu_link_feed(hubu_client_link *link, const uint8_t *data, size_t len) {
  hubu_client *c = link->client;
  int from_in = hubu_buf_size(&link->in) > 0;
  if (from_in) {
    if (hubu_buf_append(&link->in, data, len) != 0) {
      hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
      return -1;
    }
    data = hubu_buf_head(&link->in);
    len = hubu_buf_size(&link->in);
  }
  uint32_t max_in = c->max_frame > HUBU_CLIENT_MAX_IN_FRAME ? c->max_frame : HUBU_CLIENT_MAX_IN_FRAME;
  size_t used = 0;
  for (;;) {
    hubu_frame f;
    hubu_frame_status st = hubu_frame_next(data + used, len - used, max_in, &f);
    if (st == HUBU_FRAME_NEED_MORE) break;
    if (st != HUBU_FRAME_OK) {
      int code = st == HUBU_FRAME_ERR_MAGIC     ? HUBU__V1__CODE__BAD_FRAME
                 : st == HUBU_FRAME_ERR_VERSION ? HUBU__V1__CODE__UNSUPPORTED_VERSION
                                                : HUBU__V1__CODE__FRAME_TOO_LARGE;
      hubu_client_lose(c, code, "bad frame from server", 0);
      return -1;
    }
    used += f.size;
    hubu_link_on_frame(link, f.header.type, f.body, f.header.length);
    if (!hubu_link_current(link)) return -1;
  }
  if (from_in) {
    hubu_buf_consume(&link->in, used);
  } else if (used < len && hubu_buf_append(&link->in, data + used, len - used) != 0) {
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
    return -1;
  }
  return 0;
}

static int hubu_link_on_plain(void *ud, const uint8_t *data, size_t len) {
  return hubu_link_feed(ud, data, len) == 0 ? 0 : 1;
}

/* libuv calls alloc then read for one stream at a time, so one read buffer per
 * thread serves every connection and an idle connection holds none. */
static _Thread_local char hubu_client_read_space[HUBU_CLIENT_READ_SIZE];

static void hubu_link_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(hubu_client_read_space, sizeof hubu_client_read_space);
}

static void hubu_link_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hubu_client_link *link = s->data;
  hubu_client *c = link->client;
  if (!hubu_link_current(link) || nread == 0) return;
  if (nread < 0) {
    char reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "read: %s",
             nread == UV_EOF ? "connection closed by server" : uv_strerror((int)nread));
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  c->last_rx_ms = uv_now(c->loop);
  const uint8_t *data = (const uint8_t *)buf->base;
  if (link->ws_state) {
    hubu_link_ws_input(link, data, (size_t)nread);
    return;
  }
  if (!link->tls) {
    hubu_link_feed(link, data, (size_t)nread);
    return;
  }
  int was_done = hubu_tls_handshake_done(link->tls);
  int r = hubu_tls_input(link->tls, data, (size_t)nread, hubu_link_on_plain, link);
  if (!hubu_link_current(link)) return;
  if (r < 0) { /* an empty error queue means the server's close_notify */
    char err[128], reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "tls: %s",
             ERR_peek_error() ? hubu_tls_last_error(err, sizeof err) : "connection closed by server");
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  if (!was_done && hubu_tls_handshake_done(link->tls)) {
    hubu_link_send_hello(link);
    if (!hubu_link_current(link)) return;
  }
  if (hubu_tls_output_pending(link->tls) > 0) hubu_client_flush_arm(c);
}

static void hubu_client_link_open(hubu_client *c, const struct sockaddr *addr);

/* A connect failed: the next resolved address, if any, gets its turn (within
 * the same connect timeout); otherwise the attempt is lost. */
static void hubu_client_connect_failed(hubu_client *c, int status) {
  if (c->addr_next) {
    const struct addrinfo *next = c->addr_next;
    c->addr_next = next->ai_next;
    hubu_client_link_drop(c);
    hubu_client_link_open(c, next->ai_addr);
    return;
  }
  char reason[HUBU_CLIENT_REASON_SIZE];
  snprintf(reason, sizeof reason, "connect: %s", uv_strerror(status));
  hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
}

static void hubu_link_on_connect(uv_connect_t *req, int status) {
  hubu_client_link *link = req->data;
  hubu_client *c = link->client;
  if (!hubu_link_current(link)) return;
  if (status < 0) {
    hubu_client_connect_failed(c, status);
    return;
  }
  hubu_client_addrs_free(c);
  char reason[HUBU_CLIENT_REASON_SIZE];
  int r = uv_read_start((uv_stream_t *)&link->tcp, hubu_link_on_alloc, hubu_link_on_read);
  if (r < 0) {
    snprintf(reason, sizeof reason, "read: %s", uv_strerror(r));
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  c->last_rx_ms = c->last_tx_ms = uv_now(c->loop);
  if (c->ws_path) {
    if (hubu_link_ws_request(link) != 0) {
      hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "websocket: cannot make the upgrade request", 0);
      return;
    }
    hubu_client_flush_arm(c);
    return;
  }
  if (!c->tls) {
    hubu_link_send_hello(link);
    return;
  }
  link->tls = hubu_tls_new(c->tls_ctx->ctx, 0, hubu_host_is_ip(c->host) ? NULL : c->host); /* no SNI for IPs */
  if (!link->tls || hubu_tls_start(link->tls) != 0) {
    char err[128];
    snprintf(reason, sizeof reason, "tls: %s", hubu_tls_last_error(err, sizeof err));
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, reason, 0);
    return;
  }
  hubu_client_flush_arm(c);
}

static void hubu_client_link_open(hubu_client *c, const struct sockaddr *addr) {
  hubu_client_link *link = calloc(1, sizeof *link);
  if (!link) {
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
    return;
  }
  int r = uv_tcp_init(c->loop, &link->tcp);
  if (r < 0) {
    free(link);
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, uv_strerror(r), 0);
    return;
  }
  link->client = c;
  link->tcp.data = link;
  link->connect_req.data = link;
  link->write_req.data = link;
  c->link = link;
  c->refs++;
  uv_tcp_nodelay(&link->tcp, 1);
  r = uv_tcp_connect(&link->connect_req, &link->tcp, addr, hubu_link_on_connect);
  if (r < 0) hubu_client_connect_failed(c, r);
}

/* ---- attempts, backoff, loss --------------------------------------------------------- */

static void hubu_client_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  hubu_client_resolve *rs = (hubu_client_resolve *)req;
  hubu_client *c = rs->client;
  int current = c->resolve == rs;
  free(rs);
  c->refs--;
  if (!current) { /* cancelled, timed out or closed meanwhile */
    if (res) uv_freeaddrinfo(res);
    hubu_client_maybe_free(c);
    return;
  }
  c->resolve = NULL;
  if (status < 0 || !res) {
    char reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "resolve %s: %s", c->host, uv_strerror(status < 0 ? status : UV_EAI_NONAME));
    if (res) uv_freeaddrinfo(res);
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  c->addrs = res;
  c->addr_next = res->ai_next;
  hubu_client_link_open(c, res->ai_addr);
}

static void hubu_client_on_connect_timeout(uv_timer_t *t) {
  hubu_client_lose(t->data, HUBU__V1__CODE__TIMEOUT, "connect timeout", 0);
}

static void hubu_client_on_backoff_done(uv_timer_t *t) { hubu_client_attempt_begin(t->data); }

/* One attempt: resolve (IP literals skip the thread pool), connect, TLS, HELLO;
 * the whole of it under connect_timeout_ms. */
static void hubu_client_attempt_begin(hubu_client *c) {
  uv_timer_start(&c->timer, hubu_client_on_connect_timeout, c->connect_timeout_ms, 0);
  hubu_client_notify(c, HUBU_CLIENT_CONNECTING, 0, NULL);
  if (c->closing || c->state != HUBU_CLIENT_CONNECTING) return;

  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
  } addr;
  if (uv_ip4_addr(c->host, c->port, &addr.in4) == 0 || uv_ip6_addr(c->host, c->port, &addr.in6) == 0) {
    hubu_client_link_open(c, &addr.sa);
    return;
  }
  hubu_client_resolve *rs = calloc(1, sizeof *rs);
  if (!rs) {
    hubu_client_lose(c, HUBU__V1__CODE__INTERNAL, "out of memory", 0);
    return;
  }
  rs->client = c;
  char service[8];
  snprintf(service, sizeof service, "%d", c->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  int r = uv_getaddrinfo(c->loop, &rs->req, hubu_client_on_resolved, c->host, service, &hints);
  if (r < 0) {
    free(rs);
    char reason[HUBU_CLIENT_REASON_SIZE];
    snprintf(reason, sizeof reason, "resolve %s: %s", c->host, uv_strerror(r));
    hubu_client_lose(c, HUBU__V1__CODE__UNAVAILABLE, reason, 0);
    return;
  }
  c->resolve = rs;
  c->refs++;
}

/* The connection (or attempt) is over: drop it, then wait and retry, or stop.
 * retry_after_ms > 0 is the server's GOAWAY wish; it is honoured, plus jitter
 * of up to backoff_min_ms so a drained server is not hit by all at once. */
static void hubu_client_lose(hubu_client *c, int code, const char *reason, uint32_t retry_after_ms) {
  hubu_client_drop_attempt(c);
  uv_timer_stop(&c->timer);
  if (c->closing) return;
  hubu_messages_on_lost(c);
  if (!c->reconnect) {
    hubu_client_notify(c, HUBU_CLIENT_CLOSED, code, reason);
  } else {
    uint32_t delay = retry_after_ms
                         ? retry_after_ms + (uint32_t)(hubu_client_random(c) % ((uint64_t)c->backoff_min_ms + 1))
                         : hubu_client_backoff_delay(c);
    c->attempt++;
    uv_timer_start(&c->timer, hubu_client_on_backoff_done, delay, 0);
    hubu_client_notify(c, HUBU_CLIENT_BACKOFF, code, reason);
  }
  if (!c->closing) hubu_messages_fail_requests(c, HUBU__V1__CODE__UNAVAILABLE);
}

void hubu_client_fail(hubu_client *c, int code, const char *reason) { hubu_client_lose(c, code, reason, 0); }

int hubu_client_can_send(const hubu_client *c) { return c->link && !c->closing && c->state == HUBU_CLIENT_READY; }

int hubu_client_queue(hubu_client *c, uint8_t type, const ProtobufCMessage *msg) {
  if (!c->link || c->closing) return UV_ENOTCONN;
  return hubu_link_queue_message(c->link, type, msg);
}

/* ---- public API --------------------------------------------------------------------- */

/* Why the last hubu_client_new on this thread returned NULL. */
static _Thread_local char hubu_client_new_error[256];

const char *hubu_client_last_error(void) { return hubu_client_new_error; }

hubu_client *hubu_client_new(uv_loop_t *loop, const hubu_client_options *opt, const hubu_client_callbacks *cb,
                             void *ud) {
  snprintf(hubu_client_new_error, sizeof hubu_client_new_error, "invalid options");
  if (!loop || !opt || !opt->user_id || !opt->device_id || !opt->token) return NULL;
  if (!hubu_id_valid(opt->user_id, strlen(opt->user_id)) || !hubu_id_valid(opt->device_id, strlen(opt->device_id)))
    return NULL;
  if (!opt->token[0] || opt->port < 0 || opt->port > 65535 || (opt->host && !opt->host[0])) return NULL;

  if (opt->ws_path && (opt->tls || opt->ws_path[0] != '/')) {
    snprintf(hubu_client_new_error, sizeof hubu_client_new_error, "ws_path must start with / and excludes tls");
    return NULL;
  }
  snprintf(hubu_client_new_error, sizeof hubu_client_new_error, "out of memory");
  hubu_client *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->loop = loop;
  c->host = strdup(opt->host ? opt->host : "127.0.0.1");
  c->tls_ca_file = hubu_str_copy(opt->tls_ca_file);
  c->user_id = strdup(opt->user_id);
  c->device_id = strdup(opt->device_id);
  c->token = strdup(opt->token);
  c->client_info = hubu_str_copy(opt->client_info);
  c->ws_path = hubu_str_copy(opt->ws_path);
  if (!c->host || (opt->tls_ca_file && !c->tls_ca_file) || !c->user_id || !c->device_id || !c->token ||
      (opt->client_info && !c->client_info) || (opt->ws_path && !c->ws_path))
    goto fail;
  c->tls = opt->tls ? 1 : 0;
  c->ws_json = opt->ws_path && opt->ws_json;
  c->port = opt->port ? opt->port : (c->tls ? 7701 : 7700);
  c->tls_verify = opt->tls_verify ? 1 : 0;
  c->reconnect = opt->reconnect ? 1 : 0;
  c->backoff_min_ms = opt->backoff_min_ms ? opt->backoff_min_ms : 200;
  c->backoff_max_ms = opt->backoff_max_ms ? opt->backoff_max_ms : 30000;
  if (c->backoff_max_ms < c->backoff_min_ms) c->backoff_max_ms = c->backoff_min_ms;
  c->connect_timeout_ms = opt->connect_timeout_ms ? opt->connect_timeout_ms : 10000;
  c->ping_interval_ms = opt->ping_interval_ms;
  if (cb) c->cb = *cb;
  c->ud = ud;
  c->max_frame = HUBU_FRAME_DEFAULT_MAX;
  c->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)c) | 1;
  if (c->tls) {
    c->tls_ctx = hubu_client_tls_ctx_acquire(c->tls_ca_file, c->tls_verify, c->host);
    if (!c->tls_ctx) {
      snprintf(hubu_client_new_error, sizeof hubu_client_new_error, "cannot set up TLS");
      goto fail;
    }
  }
  c->msgs = hubu_messages_new(c, opt, hubu_client_new_error, sizeof hubu_client_new_error);
  if (!c->msgs) goto fail;
  uv_timer_init(loop, &c->timer);
  uv_prepare_init(loop, &c->flush);
  c->timer.data = c;
  c->flush.data = c;
  c->refs += 2;
  c->state = HUBU_CLIENT_IDLE;
  hubu_client_new_error[0] = '\0';
  return c;
fail:
  hubu_client_free(c);
  return NULL;
}

int hubu_client_start(hubu_client *c) {
  if (!c || c->closing) return UV_EINVAL;
  if (c->state != HUBU_CLIENT_IDLE && c->state != HUBU_CLIENT_CLOSED) return UV_EALREADY;
  c->attempt = 0;
  hubu_client_attempt_begin(c);
  return 0;
}

int hubu_client_send_frame(hubu_client *c, uint8_t type, const uint8_t *body, size_t len) {
  if (!c || c->closing || c->state != HUBU_CLIENT_READY || !c->link) return UV_ENOTCONN;
  if (len > c->max_frame) return UV_EMSGSIZE;
  if (len && !body) return UV_EINVAL;
  return hubu_link_queue(c->link, type, body, len);
}

int hubu_client_ping(hubu_client *c) {
  if (!c || c->closing || c->state != HUBU_CLIENT_READY || !c->link) return UV_ENOTCONN;
  return hubu_link_queue_ping(c->link, HUBU_FRAME_PING, hubu_now_ms());
}

hubu_client_state hubu_client_get_state(const hubu_client *c) { return c->state; }

const char *hubu_client_state_name(hubu_client_state s) {
  switch (s) {
    case HUBU_CLIENT_IDLE: return "idle";
    case HUBU_CLIENT_CONNECTING: return "connecting";
    case HUBU_CLIENT_HELLO_SENT: return "hello_sent";
    case HUBU_CLIENT_READY: return "ready";
    case HUBU_CLIENT_BACKOFF: return "backoff";
    case HUBU_CLIENT_CLOSED: return "closed";
  }
  return "unknown";
}

void *hubu_client_userdata(const hubu_client *c) { return c->ud; }

unsigned hubu_client_sessions(const hubu_client *c) { return c->sessions; }

void hubu_client_close(hubu_client *c, void (*on_closed)(void *ud)) {
  if (!c || c->closing) return;
  c->closing = 1;
  c->on_closed = on_closed;
  hubu_client_state was = c->state;
  hubu_client_drop_attempt(c);
  uv_close((uv_handle_t *)&c->timer, hubu_client_on_handle_closed);
  uv_close((uv_handle_t *)&c->flush, hubu_client_on_handle_closed);
  hubu_messages_close(c);
  if (was != HUBU_CLIENT_CLOSED) hubu_client_notify(c, HUBU_CLIENT_CLOSED, 0, "closed by the application");
  c->state = HUBU_CLIENT_CLOSED;
}

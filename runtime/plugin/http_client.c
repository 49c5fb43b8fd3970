/* http_client.c — im.http's transport: one libcurl multi handle per plugin
 * host, driven by the loop. curl says which sockets to watch (a uv_poll each,
 * made and closed as it asks: a handle never outlives curl's interest in its
 * socket, since curl may close a socket without a word) and when to call it
 * back (one uv_timer); each finished transfer is read from the multi handle
 * and handed to the owner's callback. The multi handle keeps idle connections
 * for reuse, and finished easy handles are kept for the next requests.
 * Invariant: nothing here blocks the loop (DNS runs on libcurl's resolver
 * thread), and a request's memory is freed exactly once: when it completes
 * (after its callback), when it is cancelled, or at close. */
#include "http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "core.h"
#include "log.h"

#define HTTP_HOST_CONNECTIONS 256    /* connections to one server at once: more requests wait in libcurl's queue */
#define HTTP_MAX_CONNECTS 256        /* idle connections kept for reuse */
#define HTTP_HEADERS_MAX (64 * 1024) /* response header bytes kept */
#define HTTP_EASY_KEPT 256           /* finished easy handles kept for the next requests */

/* A socket curl asked to watch; the poll handle first (its pointer is the socket's). */
typedef struct http_socket {
  uv_poll_t poll;
  hubu_http_client *client;
  struct http_socket *prev, *next;
} http_socket;

/* One request in flight. Owned by client->requests. */
typedef struct http_request {
  UT_hash_handle hh;
  uint64_t id;
  CURL *easy;
  hubu_http_client *client;
  struct curl_slist *headers;
  hubu_buf body;         /* the response body */
  hubu_buf resp_headers; /* the final response's header lines */
  size_t max_response;
  int too_large;
  int not_kept; /* its easy handle has an option request_setup does not set back */
  uint64_t start_ns;
  char error[CURL_ERROR_SIZE];
} http_request;

struct hubu_http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  http_request *requests;          /* uthash by id */
  http_socket *sockets;            /* polls open now */
  int open_handles;                /* the timer and the polls, until their close callbacks ran */
  CURL *easy_kept[HTTP_EASY_KEPT]; /* finished easy handles, for the next requests */
  int n_easy_kept;
  int closing;
  hubu_http_done_fn done;
  void *ud;
  void (*closed)(void *ud);
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_status;

static void curl_init(void) { curl_init_status = curl_global_init(CURL_GLOBAL_DEFAULT); }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *hubu_http_error_name(hubu_http_error e) {
  switch (e) {
    case HUBU_HTTP_OK: return "ok";
    case HUBU_HTTP_TIMEOUT: return "timeout";
    case HUBU_HTTP_CONNECT: return "connect";
    case HUBU_HTTP_TLS: return "tls";
    case HUBU_HTTP_TOO_LARGE: return "too large";
    case HUBU_HTTP_PROTOCOL: return "protocol";
    case HUBU_HTTP_OTHER: break;
  }
  return "error";
}

static hubu_http_error error_of(CURLcode rc, int too_large) {
  if (too_large || rc == CURLE_FILESIZE_EXCEEDED) return HUBU_HTTP_TOO_LARGE;
  switch (rc) {
    case CURLE_OK: return HUBU_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT: return HUBU_HTTP_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return HUBU_HTTP_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: return HUBU_HTTP_TLS;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return HUBU_HTTP_PROTOCOL;
    default: return HUBU_HTTP_OTHER;
  }
}

/* ---- requests ---- */

/* r's easy handle goes back to the client's pool (or is cleaned up), r is
 * freed. A kept handle keeps its options: request_setup sets every one a
 * request may change (one that named a ca_file is not kept). */
static void request_free(http_request *r) {
  hubu_http_client *c = r->client;
  if (r->easy && c && !c->closing && !r->not_kept && c->n_easy_kept < HTTP_EASY_KEPT)
    c->easy_kept[c->n_easy_kept++] = r->easy;
  else if (r->easy)
    curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  hubu_buf_free(&r->body);
  hubu_buf_free(&r->resp_headers);
  free(r);
}

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  http_request *r = ud;
  size_t len = size * n;
  if (hubu_buf_size(&r->body) + len > r->max_response) {
    r->too_large = 1;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  return hubu_buf_append(&r->body, data, len) == 0 ? len : 0;
}

/* Keeps the header lines of the last response (a redirect's or a 100
 * Continue's are dropped when the next status line comes). */
static size_t on_header(char *data, size_t size, size_t n, void *ud) {
  http_request *r = ud;
  size_t len = size * n;
  if (len >= 5 && !memcmp(data, "HTTP/", 5)) {
    hubu_buf_free(&r->resp_headers);
    return len;
  }
  if (len <= 2 || hubu_buf_size(&r->resp_headers) + len > HTTP_HEADERS_MAX) return len;
  return hubu_buf_append(&r->resp_headers, data, len) == 0 ? len : 0;
}

/* Every finished transfer: out of the multi handle, to the callback, freed. */
static void read_done(hubu_http_client *c) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(c->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    http_request *r = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    CURLcode rc = msg->data.result;
    curl_multi_remove_handle(c->multi, msg->easy_handle);
    if (!r) continue;
    HASH_DEL(c->requests, r);
    hubu_http_result res = {.error = error_of(rc, r->too_large)};
    res.seconds = (double)(now_ns() - r->start_ns) / 1e9;
    if (res.error == HUBU_HTTP_OK) {
      curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
      res.message = "";
      res.body = hubu_buf_head(&r->body);
      res.body_len = hubu_buf_size(&r->body);
      res.headers = (const char *)hubu_buf_head(&r->resp_headers);
      res.headers_len = hubu_buf_size(&r->resp_headers);
    } else if (res.error == HUBU_HTTP_TOO_LARGE) {
      snprintf(r->error, sizeof r->error, "the response is larger than %zu bytes", r->max_response);
      res.message = r->error;
    } else {
      res.message = r->error[0] ? r->error : curl_easy_strerror(rc);
    }
    c->done(c->ud, r->id, &res);
    request_free(r);
  }
}

/* ---- curl's sockets and timer on the loop ---- */

static void on_poll(uv_poll_t *h, int status, int events) {
  http_socket *s = (http_socket *)h;
  hubu_http_client *c = s->client;
  int flags = status < 0 ? CURL_CSELECT_ERR : 0;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_socket_t fd;
  if (uv_fileno((uv_handle_t *)h, (uv_os_fd_t *)&fd) != 0) return;
  int running;
  curl_multi_socket_action(c->multi, fd, flags, &running);
  read_done(c);
}

static void on_socket_closed(uv_handle_t *h) {
  http_socket *s = (http_socket *)h;
  hubu_http_client *c = s->client;
  free(s);
  if (--c->open_handles == 0 && c->closing) {
    void (*closed)(void *) = c->closed;
    void *ud = c->ud;
    free(c);
    if (closed) closed(ud);
  }
}

static void socket_close(hubu_http_client *c, http_socket *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    c->sockets = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_socket_closed);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants, or stop. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  hubu_http_client *c = userp;
  http_socket *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(c->multi, fd, NULL);
      socket_close(c, s);
    }
    return 0;
  }
  if (!s) {
    if (c->closing || !(s = calloc(1, sizeof *s))) return -1;
    int rc = uv_poll_init_socket(c->loop, &s->poll, fd);
    if (rc != 0) {
      hubu_log(HUBU_LOG_ERROR, 0, NULL, "http_poll_failed", "error=\"%s\"", uv_strerror(rc));
      free(s);
      return -1;
    }
    s->client = c;
    s->next = c->sockets;
    if (s->next) s->next->prev = s;
    c->sockets = s;
    c->open_handles++;
    curl_multi_assign(c->multi, fd, s);
  }
  int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

static void on_timer(uv_timer_t *t) {
  hubu_http_client *c = t->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  read_done(c);
}

/* CURLMOPT_TIMERFUNCTION: call curl back after ms (-1: never). Never calls
 * curl from here: a 0 ms timer runs on the next loop turn. */
static int on_curl_timer(CURLM *multi, long ms, void *userp) {
  (void)multi;
  hubu_http_client *c = userp;
  if (c->closing) return 0;
  if (ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
  return 0;
}

/* ---- the client ---- */

hubu_http_client *hubu_http_client_new(uv_loop_t *loop, hubu_http_done_fn done, void *ud, void (*closed)(void *ud)) {
  pthread_once(&curl_once, curl_init);
  if (curl_init_status != CURLE_OK) return NULL;
  hubu_http_client *c = calloc(1, sizeof *c);
  if (!c || !(c->multi = curl_multi_init())) {
    free(c);
    return NULL;
  }
  c->loop = loop;
  c->done = done;
  c->ud = ud;
  c->closed = closed;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_MAX_CONNECTS);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)HTTP_HOST_CONNECTIONS);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 1;
  return c;
}

/* The easy handle of r for req; 0, or -1 with err. */
static int request_setup(http_request *r, const hubu_http_request *req, char *err, size_t err_size) {
  CURL *e = r->easy;
  int ok = 1;
#define SET(opt, v) ok &= curl_easy_setopt(e, opt, v) == CURLE_OK
  SET(CURLOPT_URL, req->url);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
  SET(CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeout_ms);
  SET(CURLOPT_FOLLOWLOCATION, req->max_redirects > 0 ? 1L : 0L);
  SET(CURLOPT_MAXREDIRS, (long)req->max_redirects);
  SET(CURLOPT_SSL_VERIFYPEER, req->verify ? 1L : 0L);
  SET(CURLOPT_SSL_VERIFYHOST, req->verify ? 2L : 0L);
  if (req->ca_file) {
    SET(CURLOPT_CAINFO, req->ca_file);
    r->not_kept = 1;
  }
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_response);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, r);
  SET(CURLOPT_PRIVATE, r);
  SET(CURLOPT_ERRORBUFFER, r->error);
  SET(CURLOPT_USERAGENT, HUBU_SERVER_NAME);
  const char *m = req->method;
  SET(CURLOPT_HTTPGET, 1L); /* a kept handle forgets its last method and body */
  SET(CURLOPT_NOBODY, 0L);
  SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
  if (!strcmp(m, "GET")) {
    /* as set */
  } else if (!strcmp(m, "HEAD")) {
    SET(CURLOPT_NOBODY, 1L);
  } else {
    if (strcmp(m, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, m);
    if (req->body || !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH")) {
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
      SET(CURLOPT_COPYPOSTFIELDS, req->body_len ? (const char *)req->body : "");
    }
  }
  for (size_t i = 0; ok && i < req->n_headers; i++) {
    struct curl_slist *l = curl_slist_append(r->headers, req->headers[i]);
    if (!l) ok = 0;
    if (l) r->headers = l;
  }
  /* no 100-continue round trip before a body: one request, one answer */
  struct curl_slist *l = ok ? curl_slist_append(r->headers, "Expect:") : NULL;
  if (l) r->headers = l;
  ok &= l != NULL;
  SET(CURLOPT_HTTPHEADER, r->headers);
#undef SET
  if (!ok) {
    snprintf(err, err_size, "the request could not be set up (out of memory?)");
    return -1;
  }
  return 0;
}

int hubu_http_client_start(hubu_http_client *c, uint64_t id, const hubu_http_request *req, char *err, size_t err_size) {
  if (c->closing) {
    snprintf(err, err_size, "closing");
    return -1;
  }
  http_request *r = NULL;
  HASH_FIND(hh, c->requests, &id, sizeof id, r);
  if (r) {
    snprintf(err, err_size, "request %llu is already in flight", (unsigned long long)id);
    return -1;
  }
  r = calloc(1, sizeof *r);
  if (r) r->easy = c->n_easy_kept ? c->easy_kept[--c->n_easy_kept] : curl_easy_init();
  if (!r || !r->easy) {
    free(r);
    snprintf(err, err_size, "out of memory");
    return -1;
  }
  r->id = id;
  r->client = c;
  r->max_response = req->max_response;
  if (request_setup(r, req, err, err_size) != 0) {
    request_free(r);
    return -1;
  }
  r->start_ns = now_ns();
  CURLMcode mc = curl_multi_add_handle(c->multi, r->easy);
  if (mc != CURLM_OK) {
    snprintf(err, err_size, "%s", curl_multi_strerror(mc));
    request_free(r);
    return -1;
  }
  HASH_ADD(hh, c->requests, id, sizeof r->id, r);
  return 0;
}

int hubu_http_client_cancel(hubu_http_client *c, uint64_t id) {
  http_request *r = NULL;
  HASH_FIND(hh, c->requests, &id, sizeof id, r);
  if (!r) return 0;
  HASH_DEL(c->requests, r);
  curl_multi_remove_handle(c->multi, r->easy); /* also drops its finished message, if one waits */
  request_free(r);
  return 1;
}

size_t hubu_http_client_active(const hubu_http_client *c) { return HASH_COUNT(c->requests); }

static void on_timer_closed(uv_handle_t *h) {
  hubu_http_client *c = h->data;
  if (--c->open_handles == 0) {
    void (*closed)(void *) = c->closed;
    void *ud = c->ud;
    free(c);
    if (closed) closed(ud);
  }
}

void hubu_http_client_close(hubu_http_client *c) {
  if (!c || c->closing) return;
  http_request *r, *tmp;
  HASH_ITER(hh, c->requests, r, tmp) {
    HASH_DEL(c->requests, r);
    curl_multi_remove_handle(c->multi, r->easy);
    request_free(r);
  }
  c->closing = 1;
  while (c->n_easy_kept) curl_easy_cleanup(c->easy_kept[--c->n_easy_kept]);
  /* Sockets of idle connections: stop watching them before curl closes them. */
  while (c->sockets) {
    http_socket *s = c->sockets;
    curl_socket_t fd;
    if (uv_fileno((uv_handle_t *)&s->poll, (uv_os_fd_t *)&fd) == 0) curl_multi_assign(c->multi, fd, NULL);
    socket_close(c, s);
  }
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* admin_http.h — what the admin tests share: the admin port from hubud's
 * port file, one blocking HTTP exchange whose answer is read with http-parser
 * (never by hand), hubuctl run as a child with its output captured, and a
 * hubud that is expected to refuse to start. */
#ifndef HUBU_ADMIN_HTTP_H
#define HUBU_ADMIN_HTTP_H

#include <stddef.h>

#include "harness.h"

/* Starts hubud with --admin-listen 127.0.0.1:0 (plus the extra arguments, a
 * NULL-terminated list) and returns its admin port from the port file's
 * "admin PORT" line; REQUIREs both. */
#define ADMIN_START(s, ...) admin_start_at(__FILE__, __LINE__, (s), __VA_ARGS__)
int admin_start_at(const char *file, int line, e2e_server *s, ...) __attribute__((sentinel));

/* The "admin PORT" line of s's port file: the port, 0 when there is none. */
int admin_port_of(const e2e_server *s);

typedef struct {
  int status; /* HTTP status code; 0 when no complete answer came */
  char *body; /* owned, NUL-terminated; admin_reply_free */
  size_t body_len;
  char content_type[128];
  char allow[128];            /* the Allow header, when any */
  char www_authenticate[128]; /* the WWW-Authenticate header, when any */
  char allow_origin[128];     /* Access-Control-Allow-Origin, when any */
  char allow_methods[128];    /* Access-Control-Allow-Methods, when any */
  int closed_after;           /* the server closed the connection after the answer */
} admin_reply;

/* Sends raw bytes to the admin port and reads one answer (up to 5 s).
 * Returns 0 with *out filled, or -1 (reported at file:line). */
int admin_exchange_at(const char *file, int line, int port, const void *request, size_t len, admin_reply *out);
/* Reads one answer from fd (up to 5 s), then waits up to 3 s for the FIN. */
int admin_read_reply_at(const char *file, int line, int fd, admin_reply *out);
/* METHOD target with Connection: close, no body, the Host hubuctl would send
 * (127.0.0.1:PORT) and, on a POST, Content-Type: application/json. */
int admin_request_at(const char *file, int line, int port, const char *method, const char *target, admin_reply *out);
/* METHOD target with exactly the given header lines (each ending in \r\n,
 * Host included or not), then Connection: close and no body. */
int admin_request_headers_at(const char *file, int line, int port, const char *method, const char *target,
                             const char *headers, admin_reply *out);
void admin_reply_free(admin_reply *r);

#define ADMIN_EXCHANGE(port, req, len, out) admin_exchange_at(__FILE__, __LINE__, (port), (req), (len), (out))
#define ADMIN_GET(port, target, out) admin_request_at(__FILE__, __LINE__, (port), "GET", (target), (out))
#define ADMIN_POST(port, target, out) admin_request_at(__FILE__, __LINE__, (port), "POST", (target), (out))
#define ADMIN_REQUEST(port, method, target, headers, out) \
  admin_request_headers_at(__FILE__, __LINE__, (port), (method), (target), (headers), (out))

/* Connects a raw client as user/device and reads HELLO_OK; REQUIREd. */
int admin_client_at(const char *file, int line, int port, const char *user, const char *device);
#define ADMIN_CLIENT(port, user, device) admin_client_at(__FILE__, __LINE__, (port), (user), (device))

/* Runs hubuctl with args (NULL-terminated) and $HUBU_ADMIN unset; stdout and
 * stderr land in out/err (NUL-terminated, truncated to their sizes). Returns
 * the exit status, or -1 when it did not exit within 10 s. */
int admin_hubuctl(char *out, size_t out_size, char *err, size_t err_size, ...) __attribute__((sentinel));

/* Runs hubud with args (NULL-terminated) after --listen 127.0.0.1:0,
 * --secret, --data, --plugins and --port-file in a temp dir of its own,
 * expecting it to refuse to start. Its stderr lands in err. Should it start
 * listening after all (its port file appears), it is killed at once and -1
 * returned; -1 too when it neither exits nor listens within 10 s. Otherwise
 * the exit status. */
int admin_run_refused(char *err, size_t err_size, ...) __attribute__((sentinel));

/* A plugin that loads: a header and one hook. */
#define ADMIN_GOOD_PLUGIN                 \
  "--% summary: a plugin for the tests\n" \
  "plugin:hook(\"message.stored\", function(ev) end)\n"

/* A fresh temp dir for plugins (dir holds 64 bytes); removed by
 * admin_remove_dir, or at exit. 0 or -1. */
int admin_plugins_dir(char *dir, size_t size);
/* Writes dir/name with text, atomically (rename). 0 or -1. */
int admin_write_file(const char *dir, const char *name, const char *text);
void admin_remove_dir(const char *dir);

/* Ends the process with ctest's skip status (77, SKIP_RETURN_CODE) after
 * printing why, unless a check already failed (then the failure stands). */
void admin_skip_if_clean(const char *why);

#endif

/* harness.h — the end-to-end test harness: CHECK macros that count failures,
 * hubud started as a child in a fresh temp dir, and blocking loopback sockets
 * that speak raw frames. No test framework; each executable lists its cases
 * and runs the one named in argv[1].
 * Invariant: every child and temp dir is registered at creation, so any exit
 * (return, REQUIRE, watchdog) kills the children and removes the dirs. */
#ifndef HUBU_E2E_HARNESS_H
#define HUBU_E2E_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "token.h"
#include "wire.h"

#define E2E_SECRET "test-secret"

/* ---- checks ------------------------------------------------------------ */

/* Prints "file:line: FAIL <message>" and counts the failure. */
void e2e_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends the case now (after a failed REQUIRE): children and temp dirs are cleaned up. */
_Noreturn void e2e_abort(void);
extern int e2e_failures;

/* Report when ok is 0; return ok (as 0 or 1). */
int e2e_check(int ok, const char *file, int line, const char *text);
int e2e_checkf(int ok, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* CHECK evaluates to 1 when cond holds, else reports and evaluates to 0. */
#define CHECK(cond) e2e_check(!!(cond), __FILE__, __LINE__, #cond)
#define CHECKF(cond, ...) e2e_checkf(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_EQ(a, b)                                                                     \
  do {                                                                                     \
    unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);         \
    if (a_ != b_) e2e_fail(__FILE__, __LINE__, "%s == %s (%llu != %llu)", #a, #b, a_, b_); \
  } while (0)
/* REQUIRE: the rest of the case makes no sense without cond. */
#define REQUIRE(cond)                                      \
  do {                                                     \
    if (!(cond)) {                                         \
      e2e_fail(__FILE__, __LINE__, "required: %s", #cond); \
      e2e_abort();                                         \
    }                                                      \
  } while (0)

/* ---- cases --------------------------------------------------------------- */

typedef struct {
  const char *name;
  void (*run)(void);
} e2e_case;

/* An entry of a case table; integration.cmake turns each into a ctest test. */
#define E2E_CASE(fn) \
  { #fn, fn }

/* argv[1] names the case to run (all of them without it; --list prints the
 * names). Returns the process exit status: 0 when no check failed. */
int e2e_main(int argc, char **argv, const e2e_case *cases, size_t n_cases);

/* ---- hubud --------------------------------------------------------------- */

typedef struct {
  pid_t pid;      /* 0 once stopped */
  char dir[64];   /* the temp dir: data/, ports, cert.pem, key.pem */
  int port;       /* "tcp PORT" of the port file */
  int tls_port;   /* "tls PORT", when started with TLS */
  int http_port;  /* "http PORT": the HTTP listener (WebSocket), 0 when off */
  int https_port; /* "https PORT": the HTTPS listener, 0 when off */
  char cert[96];  /* PEM files, when started with TLS */
  char key[96];
  int slot; /* in the harness's registry of children and dirs */
} e2e_server;

/* Command prefix for hubud (e.g. valgrind and its flags); NULL-terminated, or NULL. */
extern const char *const *e2e_server_wrapper;
/* How long to wait for the port file and for the exit after SIGTERM. */
extern int e2e_server_start_ms;
extern int e2e_server_stop_ms;

/* Starts hubud with --listen 127.0.0.1:0 --secret test-secret --port-file
 * DIR/ports --data DIR/data --drain-ms 1000, each left out when the extra
 * arguments (a NULL-terminated list) give it, and waits for the port file.
 * Returns 0, or -1 after reporting why. */
int e2e_server_start(e2e_server *s, ...) __attribute__((sentinel));
/* The same with a TLS listener on 127.0.0.1:0 and a certificate made now. */
int e2e_server_start_tls(e2e_server *s, ...) __attribute__((sentinel));
/* Sends SIGTERM and waits; SIGKILL after e2e_server_stop_ms. Returns the exit
 * status (0..255), 128 + signal when killed by one, or -1 on timeout. Removes
 * the temp dir. */
int e2e_server_stop(e2e_server *s);
/* Sends SIGTERM only; e2e_server_wait collects the status later. */
void e2e_server_signal(e2e_server *s, int sig);
/* Waits up to timeout_ms for the exit; status as e2e_server_stop, -1 when still running. */
int e2e_server_wait(e2e_server *s, int timeout_ms);
/* Non-blocking: 1 when the child has exited (status in *status), else 0. */
int e2e_server_poll(e2e_server *s, int *status);
/* Kills hubud (if running) and removes the temp dir; safe to call twice. */
void e2e_server_cleanup(e2e_server *s);
/* VmRSS of the server in KiB, -1 when unreadable. */
long e2e_server_rss_kb(const e2e_server *s);
/* Stops s and checks that hubud exited with status 0 (no leak reports, no crash). */
#define CHECK_SERVER_STOPS_CLEANLY(s)                                      \
  do {                                                                     \
    int st_ = e2e_server_stop(s);                                          \
    CHECKF(st_ == 0, "hubud exit status after SIGTERM: %d (want 0)", st_); \
  } while (0)

/* A port that was free a moment ago (bind 127.0.0.1:0, read, close). */
int e2e_free_port(void);
/* Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit. */
long e2e_raise_nofile(void);
/* Monotonic milliseconds. */
/* Removes dir and everything below it (nothing when dir is ""). */
void e2e_remove_tree(const char *dir);

uint64_t e2e_now_ms(void);
void e2e_sleep_ms(int ms);

/* ---- sockets and frames ------------------------------------------------- */

/* Blocking TCP connection to 127.0.0.1:port, TCP_NODELAY, SO_RCVTIMEO 5 s. -1 on failure. */
int e2e_connect(int port);
/* TLS connection to 127.0.0.1:port, handshake done: version TLS1_2_VERSION or
 * TLS1_3_VERSION forced (0: either), the server's certificate verified against
 * ca_file for "localhost" (NULL: not verified). Every frame helper below
 * speaks TLS on the returned fd; end it with e2e_close. -1 on failure. */
int e2e_connect_tls(int port, int version, const char *ca_file);
/* The SSL of a TLS fd, NULL for plain TCP. */
struct ssl_st *e2e_tls_of(int fd);
/* Closes fd, and its TLS state if any. */
void e2e_close(int fd);
/* Writes every byte (MSG_NOSIGNAL; through TLS on a TLS fd). 0, or -1 on error. */
int e2e_send_raw(int fd, const void *data, size_t len);
/* Writes a frame with an arbitrary header and body. */
int e2e_send_frame(int fd, uint8_t type, uint8_t flags, const void *body, size_t len);
/* Packs msg (NULL: empty body) into a frame and writes it. */
int e2e_send_msg(int fd, uint8_t type, const ProtobufCMessage *msg);
int e2e_send_ping(int fd, uint8_t type, uint64_t time_ms);

/* A token for user from E2E_SECRET, valid for an hour; out holds HUBU_TOKEN_MAX bytes. */
void e2e_token(const char *user, char *out);
/* The token scheme computed directly, for any user string, secret and expiry. */
void e2e_token_raw(const char *secret, const char *user, uint64_t expiry_s, char *out, size_t out_size);
/* HELLO with protocol_version 1, the given ids and a token (NULL: a valid one for user). */
int e2e_send_hello(int fd, const char *user, const char *device, const char *token);

typedef struct {
  uint8_t type;
  uint8_t flags;
  uint32_t len;
  uint8_t *body; /* owned; e2e_frame_free */
} e2e_frame;

enum { E2E_READ_OK = 1, E2E_READ_EOF = 0, E2E_READ_TIMEOUT = -1, E2E_READ_ERROR = -2 };
/* Reads one frame within timeout_ms. E2E_READ_EOF also covers ECONNRESET. */
int e2e_read_frame(int fd, int timeout_ms, e2e_frame *out);
void e2e_frame_free(e2e_frame *f);
const char *e2e_read_result_name(int r);

/* The expect_* and check_* helpers report a failure at the caller's file:line and return 1 on success. */
/* f is ERROR{code} (frame_type -1: any). */
int e2e_check_error_frame_at(const char *file, int line, const e2e_frame *f, Hubu__V1__Code code, int frame_type);
int e2e_expect_error_at(const char *file, int line, int fd, Hubu__V1__Code code, int frame_type, int timeout_ms);
int e2e_expect_eof_at(const char *file, int line, int fd, int allow_goaway, int timeout_ms);
/* PONG with time_ms; server heartbeat PINGs before it are skipped. */
int e2e_expect_pong_at(const char *file, int line, int fd, uint64_t time_ms, int timeout_ms);
int e2e_expect_goaway_at(const char *file, int line, int fd, Hubu__V1__Code code, int timeout_ms);
/* Reads HELLO_OK; *out (may be NULL) receives the decoded message, to free with
 * hubu__v1__hello_ok__free_unpacked(*out, NULL). */
int e2e_expect_hello_ok_at(const char *file, int line, int fd, Hubu__V1__HelloOk **out, int timeout_ms);
/* Connects, sends HELLO for user (device "d1"), reads HELLO_OK; -1 (reported) on failure. */
int e2e_connect_hello_at(const char *file, int line, int port, const char *user);

#define E2E_WAIT_MS 3000 /* default wait for an expected frame */
/* ERROR with code; frame_type -1 means "any". */
#define EXPECT_ERROR(fd, code) e2e_expect_error_at(__FILE__, __LINE__, (fd), (code), -1, E2E_WAIT_MS)
#define EXPECT_ERROR_FT(fd, code, ft) e2e_expect_error_at(__FILE__, __LINE__, (fd), (code), (ft), E2E_WAIT_MS)
#define CHECK_ERROR_FRAME(f, code) e2e_check_error_frame_at(__FILE__, __LINE__, (f), (code), -1)
/* The peer closes with no frame in between. */
#define EXPECT_EOF(fd) e2e_expect_eof_at(__FILE__, __LINE__, (fd), 0, E2E_WAIT_MS)
/* The peer closes, maybe after GOAWAY frames. */
#define EXPECT_EOF_AFTER_GOAWAY(fd, ms) e2e_expect_eof_at(__FILE__, __LINE__, (fd), 1, (ms))
#define EXPECT_PONG(fd, t) e2e_expect_pong_at(__FILE__, __LINE__, (fd), (t), E2E_WAIT_MS)
#define EXPECT_GOAWAY(fd, code, ms) e2e_expect_goaway_at(__FILE__, __LINE__, (fd), (code), (ms))
#define EXPECT_HELLO_OK(fd, out) e2e_expect_hello_ok_at(__FILE__, __LINE__, (fd), (out), E2E_WAIT_MS)
#define CONNECT_HELLO(port, user) e2e_connect_hello_at(__FILE__, __LINE__, (port), (user))

/* Checks that the connection is open and served: a PING gets its PONG. */
#define EXPECT_ALIVE(fd, t) (e2e_send_ping((fd), HUBU_FRAME_PING, (t)) == 0 && EXPECT_PONG((fd), (t)))

#endif

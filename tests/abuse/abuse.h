/* abuse.h — helpers for the abuse suite (tests/abuse/abuse_*.c), on top of the
 * end-to-end harness (tests/integration/harness.h): what hubud holds, read
 * from /proc (VmRSS, VmHWM, open descriptors), logins with a chosen device,
 * the latency of another user's HELLO, and sockets with a small receive
 * buffer for clients that never read. */
#ifndef HUBU_ABUSE_H
#define HUBU_ABUSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

/* Sanitized builds: memory bounds get ASan's own overhead added. */
#ifdef HUBU_ABUSE_SANITIZED
#define ABUSE_SANITIZED 1
#else
#define ABUSE_SANITIZED 0
#endif

/* How long another user's login may take while the abuse runs: generous, a
 * bound on stalls of the loop rather than a timing (sanitizers slow hubud). */
#define ABUSE_LOGIN_BOUND_MS (ABUSE_SANITIZED ? 600 : 200)

/* Exit status that ctest reports as "skipped" (abuse.cmake's SKIP_RETURN_CODE). */
#define ABUSE_SKIP 77

/* A field of /proc/PID/status in KiB ("VmRSS", "VmHWM"); -1 when unreadable. */
long abuse_status_kb(pid_t pid, const char *field);
/* Entries of /proc/PID/fd: the descriptors hubud holds; -1 when unreadable. */
int abuse_fd_count(pid_t pid);
/* Under ASan, keeps its quarantine of freed memory small (4 MiB), so that VmRSS
 * says what hubud holds: call before starting hubud. */
void abuse_limit_asan_quarantine(void);

/* Blocking TCP connection to 127.0.0.1:port with SO_RCVBUF rcvbuf (0: the
 * default) set before the connect, TCP_NODELAY, 5 s send/receive timeouts. */
int abuse_connect(int port, int rcvbuf);
/* Connects, HELLO (user, device), reads HELLO_OK. The fd, or -1 (reported). */
int abuse_login_at(const char *file, int line, int port, const char *user, const char *device);
#define ABUSE_LOGIN(port, user, device) abuse_login_at(__FILE__, __LINE__, (port), (user), (device))
/* Milliseconds from connect to HELLO_OK for user on a new connection (closed
 * after); -1 when the login failed (reported by the caller). */
long abuse_login_ms(int port, const char *user, const char *device);

/* One SEND, packed into b (for pipelining). */
int abuse_append_send(hubu_buf *b, uint64_t client_id, const char *session, const uint8_t *body, size_t len);
/* One PULL, packed into b. */
int abuse_append_pull(hubu_buf *b, uint64_t request_id, const char *session, uint64_t after_seq, uint32_t limit);
/* The next frame of type (skipping server PINGs, answered; and other types
 * when skip_others); 1 with *f filled, else 0 (reported). */
int abuse_expect_frame_at(const char *file, int line, int fd, uint8_t type, int skip_others, int timeout_ms,
                          e2e_frame *f);
/* Reads SEND_ACKs (skipping PUSHes and PINGs) until one for client_id comes;
 * NULL (reported) otherwise. Free with hubu__v1__send_ack__free_unpacked. */
Hubu__V1__SendAck *abuse_expect_ack_at(const char *file, int line, int fd, uint64_t client_id, int timeout_ms);
#define ABUSE_ACK(fd, cid) abuse_expect_ack_at(__FILE__, __LINE__, (fd), (cid), E2E_WAIT_MS)

/* Reads and drops frames until EOF; 1 when EOF came within timeout_ms, else
 * 0. *bytes (may be NULL) gets the body bytes read. */
int abuse_drain_to_eof(int fd, int timeout_ms, size_t *bytes);

#endif

/* redis.h — a Redis client on the hubud loop: hiredis 0.14's async API and
 * parser, driven by the loop through this file's own adapter (a uv_poll on
 * the socket), with what hiredis lacks:
 *
 *   - a timer on every command: a command not answered within its timeout
 *     fails with HUBU_REDIS_TIMEOUT, and the connection is taken as wedged
 *     and recycled (every other command pending on it fails with
 *     HUBU_REDIS_TIMEOUT too);
 *   - a connect timeout (connect, AUTH, SELECT and the INFO that reads the
 *     replication id must all answer within it);
 *   - reconnection with backoff, 100 ms doubling to 5 s (configurable),
 *     reset once a connection is up;
 *   - a PING every second (configurable) on a command client, under the
 *     same timeout, so the health is right while the client is idle;
 *   - a health state: up or down, the last error, counters;
 *   - the replication id (INFO replication: master_replid) and the server's
 *     run_id, read on every connect; a change is counted and reported;
 *   - scripts: EVALSHA, and on NOSCRIPT the script's source with EVAL (which
 *     loads it), so a restarted or flushed server needs no separate step;
 *   - pub/sub on a connection of its own (hubu_redis_subscriber_new): the
 *     channels are subscribed again after every reconnect, and a heartbeat
 *     through a command client notices a wedged subscription.
 *
 * Every command's callback is called exactly once: with the reply, an error
 * reply, a timeout, the connection's loss, or the client's close. Nothing
 * here blocks the loop: the host must be an IP address (no name lookup on
 * the loop), and connects are non-blocking.
 *
 * One client belongs to one loop and is used from that loop's thread only.
 * hubu_redis_close() answers every pending command with HUBU_REDIS_CLOSED
 * before it returns; after it returns no callback of that client runs. Its
 * memory is freed once its handles are closed, so the loop must run on after
 * it (as for any libuv handle). */
#ifndef HUBU_CLUSTER_REDIS_H
#define HUBU_CLUSTER_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct hubu_redis hubu_redis;

#define HUBU_REDIS_HOST_MAX 64
#define HUBU_REDIS_PASSWORD_MAX 128
#define HUBU_REDIS_ERROR_MAX 160
#define HUBU_REDIS_REPLID_MAX 48

typedef struct {
  char host[HUBU_REDIS_HOST_MAX + 1];         /* an IPv4 or IPv6 address */
  int port;                                   /* default 6379 */
  char password[HUBU_REDIS_PASSWORD_MAX + 1]; /* "": no AUTH */
  int db;                                     /* SELECT db when > 0 */
  uint32_t connect_timeout_ms;                /* 0: 2000 */
  uint32_t command_timeout_ms;                /* a command's default timeout; 0: 1000 */
  uint32_t backoff_min_ms;                    /* first reconnect delay; 0: 100 */
  uint32_t backoff_max_ms;                    /* the delay doubles up to this; 0: 5000 */
  uint32_t ping_interval_ms;                  /* a command client PINGs this often, so a wedged or vanished
                                                 server shows in the health while no command is under way;
                                                 0: 1000 */
} hubu_redis_config;

/* Fills cfg from "redis://[:PASSWORD@]HOST[:PORT][/DB]" (HOST an IP address,
 * IPv6 in brackets; "localhost" is taken as 127.0.0.1) and sets the timeouts
 * and backoff to their defaults. 0, or -1 with a reason in err. */
int hubu_redis_config_parse(const char *url, hubu_redis_config *cfg, char *err, size_t err_size);

typedef enum {
  HUBU_REDIS_OK = 0,      /* reply holds the answer (any type but an error) */
  HUBU_REDIS_REPLY_ERROR, /* the server answered with an error: reply->str */
  HUBU_REDIS_TIMEOUT,     /* no answer within the timeout; the connection is recycled */
  HUBU_REDIS_DOWN,        /* the connection was lost before the answer (the command may have run) */
  HUBU_REDIS_CLOSED,      /* the client was closed */
} hubu_redis_status;

const char *hubu_redis_status_name(hubu_redis_status st);

/* A command's answer. reply is valid only during the call (NULL unless OK or
 * REPLY_ERROR). The callback may send commands and may close the client. */
typedef void (*hubu_redis_reply_cb)(hubu_redis *r, hubu_redis_status st, const redisReply *reply, void *ud);

typedef struct {
  int up;                                    /* connected, and the connect's commands answered */
  char last_error[HUBU_REDIS_ERROR_MAX + 1]; /* why the last connection failed or ended ("" if never) */
  uint64_t changed_ms;                       /* when up last changed (hubu_now_ms) */
  uint64_t connects;                         /* connections that came up */
  uint64_t failures;                         /* connects that failed, and connections lost */
  uint64_t timeouts;                         /* commands that timed out */
  uint64_t replid_changes;                   /* times a connect found another replication id */
  uint64_t commands;                         /* commands sent (a script call is one) */
  uint64_t writes;                           /* socket writes: each carries every command queued since the
                                                last, so commands / writes is the pipelining achieved */
  char replid[HUBU_REDIS_REPLID_MAX + 1];    /* master_replid of the server, read at the last connect */
  char run_id[HUBU_REDIS_REPLID_MAX + 1];    /* its run_id (a new one every time the server starts) */
} hubu_redis_health;

/* Called when the health changes (up, down); may close the client. */
typedef void (*hubu_redis_health_cb)(hubu_redis *r, const hubu_redis_health *h, void *ud);

/* A message on a subscribed channel (subscriber clients only). */
typedef void (*hubu_redis_message_cb)(hubu_redis *r, const char *channel, size_t channel_len, const char *payload,
                                      size_t payload_len, void *ud);

/* A client for commands; it starts connecting at once. NULL when out of
 * memory or cfg is invalid (logged). */
hubu_redis *hubu_redis_new(uv_loop_t *loop, const hubu_redis_config *cfg, hubu_redis_health_cb on_health, void *ud);

/* A client for pub/sub: its connection only subscribes. on_message gets
 * every message of its channels. */
hubu_redis *hubu_redis_subscriber_new(uv_loop_t *loop, const hubu_redis_config *cfg, hubu_redis_message_cb on_message,
                                      hubu_redis_health_cb on_health, void *ud);

/* Stops everything: pending commands get HUBU_REDIS_CLOSED now; no callback
 * after this returns. NULL is ignored. */
void hubu_redis_close(hubu_redis *r);

/* Sends a command (argv of argc byte strings). timeout_ms 0: the client's
 * default. Returns 0 when sent (cb will be called exactly once), or -1 when
 * it could not be sent: the client is down, closed, a subscriber, or out of
 * memory (cb is never called). */
int hubu_redis_command(hubu_redis *r, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud, int argc,
                       const char **argv, const size_t *argvlen);

/* A script: its source and SHA1, computed once. */
typedef struct {
  const char *source; /* not owned; lives as long as the script */
  size_t len;
  char sha1[41];
} hubu_redis_script;

void hubu_redis_script_init(hubu_redis_script *s, const char *source, size_t len);

/* EVALSHA sha numkeys keys... args...; on NOSCRIPT, EVAL with the source
 * (which loads it). The callback is called once, as for hubu_redis_command,
 * with the script's answer; timeout_ms covers each of the (at most two)
 * round trips. */
int hubu_redis_eval(hubu_redis *r, const hubu_redis_script *s, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud,
                    int numkeys, const char **keys, const size_t *keylen, int numargs, const char **args,
                    const size_t *arglen);

/* Reads INFO replication now: cb gets OK with the reply (a status or string
 * reply holding the INFO text). The health's replid is updated from it, and
 * a change is counted and reported to on_health. */
int hubu_redis_check_replid(hubu_redis *r, uint32_t timeout_ms, hubu_redis_reply_cb cb, void *ud);

/* Subscriber clients: add or drop a channel. Subscribed at once when up,
 * and again after every reconnect. 0, or -1 (not a subscriber, closed, out
 * of memory). */
int hubu_redis_subscribe(hubu_redis *r, const char *channel);
int hubu_redis_unsubscribe(hubu_redis *r, const char *channel);

/* A subscriber's liveness, which it cannot PING for (hiredis 0.14): every
 * ping_interval_ms, pub (a command client to the same server) publishes a
 * message on channel (unique to this subscriber, subscribed here and never
 * handed to on_message), which must come back within the command timeout,
 * else the subscriber's connection is taken as wedged and replaced; a
 * PUBLISH that reaches no subscriber replaces it at once. pub NULL stops the
 * heartbeat. pub is not owned: close the subscriber (or stop its heartbeat)
 * before pub. 0, or -1. */
int hubu_redis_subscriber_heartbeat(hubu_redis *sub, hubu_redis *pub, const char *channel);

/* The health as of now (a copy). */
void hubu_redis_get_health(const hubu_redis *r, hubu_redis_health *out);
int hubu_redis_is_up(const hubu_redis *r);

/* Commands sent and not answered yet. */
size_t hubu_redis_pending(const hubu_redis *r);

/* field's value in an INFO text ("field:value\r\n") into out: 0, or -1. */
int hubu_redis_info_field(const char *info, size_t len, const char *field, char *out, size_t out_size);

#endif

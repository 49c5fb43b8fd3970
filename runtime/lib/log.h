/* log.h — structured logs to stderr, one line per event:
 *   ts=2026-11-23T05:01:02.345Z level=info event=hello_ok conn=12 user=alice k=v...
 * The place that decides what to do about an error logs it, once. */
#ifndef HUBU_LOG_H
#define HUBU_LOG_H

#include <stdint.h>

typedef enum { HUBU_LOG_DEBUG = 0, HUBU_LOG_INFO, HUBU_LOG_WARN, HUBU_LOG_ERROR } hubu_log_level;

extern hubu_log_level hubu_log_min_level;

/* "debug" | "info" | "warn" | "error" -> level; -1 when unknown. */
int hubu_log_level_parse(const char *name);

/* conn_id 0 and user NULL are left out. fmt adds free-form "k=v" pairs. */
void hubu_log(hubu_log_level level, uint64_t conn_id, const char *user, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define hubu_log_enabled(level) ((level) >= hubu_log_min_level)

#endif

/* log.c — one formatted line per call, written with a single fprintf so lines
 * from different threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

hubu_log_level hubu_log_min_level = HUBU_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

int hubu_log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

void hubu_log(hubu_log_level level, uint64_t conn_id, const char *user, const char *event, const char *fmt, ...) {
  if (level < hubu_log_min_level) return;
  char line[2048];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s event=%s", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                   level_names[level], event);
  if (conn_id && n < (int)sizeof line)
    n += snprintf(line + n, sizeof line - (size_t)n, " conn=%llu", (unsigned long long)conn_id);
  if (user && *user && n < (int)sizeof line) n += snprintf(line + n, sizeof line - (size_t)n, " user=%s", user);
  if (fmt && *fmt && n < (int)sizeof line - 1) {
    line[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
  }
  if (n >= (int)sizeof line) n = (int)sizeof line - 1;
  fprintf(stderr, "%.*s\n", n, line);
}

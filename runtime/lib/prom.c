/* prom.c — the Prometheus text exposition format (prom.h). Every function
 * returns 0, or -1 when memory ran out (out is then incomplete). */
#include "prom.h"

#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int put(hubu_buf *out, const char *s) { return hubu_buf_append(out, s, strlen(s)); }

int hubu_prom_escaped(hubu_buf *out, const char *s, size_t len, int label_value) {
  int rc = 0;
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '\n' ? "\\n" : s[i] == '"' && label_value ? "\\\"" : NULL;
    if (!esc) continue;
    rc |= hubu_buf_append(out, s + run, i - run);
    rc |= hubu_buf_append(out, esc, 2);
    run = i + 1;
  }
  rc |= hubu_buf_append(out, s + run, len - run);
  return rc ? -1 : 0;
}

int hubu_prom_head(hubu_buf *out, const char *name, const char *type, const char *help, size_t help_len) {
  int rc = put(out, "# HELP ");
  rc |= put(out, name);
  rc |= put(out, " ");
  rc |= hubu_prom_escaped(out, help, help_len, 0);
  rc |= put(out, "\n# TYPE ");
  rc |= put(out, name);
  rc |= put(out, " ");
  rc |= put(out, type);
  rc |= put(out, "\n");
  return rc ? -1 : 0;
}

int hubu_prom_value(hubu_buf *out, double v) {
  char num[40];
  if (v != v)
    snprintf(num, sizeof num, "NaN");
  else if (v > DBL_MAX || v < -DBL_MAX)
    snprintf(num, sizeof num, "%cInf", v > 0 ? '+' : '-');
  else if (snprintf(num, sizeof num, "%.15g", v), strtod(num, NULL) != v)
    snprintf(num, sizeof num, "%.17g", v);
  return put(out, num);
}

int hubu_prom_sample(hubu_buf *out, const char *name, const char *labels, double v) {
  int rc = put(out, name);
  if (labels) rc |= put(out, labels);
  rc |= put(out, " ");
  rc |= hubu_prom_value(out, v);
  rc |= put(out, "\n");
  return rc ? -1 : 0;
}

int hubu_prom_sample_u64(hubu_buf *out, const char *name, const char *labels, uint64_t v) {
  char num[24];
  snprintf(num, sizeof num, "%" PRIu64, v);
  int rc = put(out, name);
  if (labels) rc |= put(out, labels);
  rc |= put(out, " ");
  rc |= put(out, num);
  rc |= put(out, "\n");
  return rc ? -1 : 0;
}

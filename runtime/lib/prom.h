/* prom.h — the Prometheus text exposition format (0.0.4), written in one
 * place for /metrics: the server's own families (admin/) and those of the
 * plugins (plugin/listing.c). */
#ifndef HUBU_PROM_H
#define HUBU_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Appends s[0..len) escaped: backslash and newline always (HELP text), the
 * double quote too when label_value. */
int hubu_prom_escaped(hubu_buf *out, const char *s, size_t len, int label_value);

/* "# HELP name help\n# TYPE name type\n", help escaped. */
int hubu_prom_head(hubu_buf *out, const char *name, const char *type, const char *help, size_t help_len);

/* A value as Prometheus reads it back exactly: the shortest of %.15g and
 * %.17g that round-trips, NaN, +Inf, -Inf. */
int hubu_prom_value(hubu_buf *out, double v);

/* One sample line: name, the label text as given ("{k=\"v\"}" or NULL), a space, the value, a newline. */
int hubu_prom_sample(hubu_buf *out, const char *name, const char *labels, double v);
int hubu_prom_sample_u64(hubu_buf *out, const char *name, const char *labels, uint64_t v);

#endif

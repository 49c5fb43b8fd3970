/* listing.c — what the admin listener shows of the plugins: the
 * hubu_plugin_* families and the metrics plugins publish on /metrics (from
 * host.list and host.metric_families), and the JSON of GET
 * /v1/admin/plugins (from host.list).
 * Invariant: every string that comes from a plugin goes out escaped, through
 * hubu_json_append_string in the listing and the exposition format's escapes
 * on /metrics; the Lua stack is left as it was found. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"
#include "json.h"
#include "prom.h"

/* ---- /metrics ---- */

static int buf_str(hubu_buf *out, const char *s) { return hubu_buf_append(out, s, strlen(s)); }

/* Stack: a list of label names and values {n1, v1, n2, v2, ...} at idx,
 * unchanged. Appends {n1="v1",...}. */
static int prom_labels(hubu_buf *out, lua_State *L, int idx) {
  int rc = buf_str(out, "{");
  size_t n = lua_objlen(L, idx);
  for (size_t i = 1; i + 1 <= n; i += 2) {
    size_t vlen = 0;
    lua_rawgeti(L, idx, (int)i);
    lua_rawgeti(L, idx, (int)i + 1);
    const char *name = lua_tostring(L, -2), *value = lua_tolstring(L, -1, &vlen);
    rc |= buf_str(out, i > 1 ? "," : "");
    rc |= buf_str(out, name ? name : "_");
    rc |= buf_str(out, "=\"");
    if (value) rc |= hubu_prom_escaped(out, value, vlen, 1);
    rc |= buf_str(out, "\"");
    lua_pop(L, 2);
  }
  rc |= buf_str(out, "}");
  return rc;
}

/* The im.http figures per plugin (host.http_metrics): requests, errors, in
 * flight, and a latency histogram. Stack: unchanged. */
static int http_families(hubu_plugins *p, hubu_buf *out) {
  lua_State *L = p->L;
  int top = lua_gettop(L), rc = 0;
  hubu_plugins_call_host(p, "http_metrics", 0, 2);
  int list = top + 1, les = top + 2;
  size_t n = lua_istable(L, list) ? lua_objlen(L, list) : 0, nle = lua_istable(L, les) ? lua_objlen(L, les) : 0;
  static const char *const families[][4] = {
      {"hubu_plugin_http_requests_total", "counter", "im.http requests a plugin made (refused as busy included).",
       "requests"},
      {"hubu_plugin_http_errors_total", "counter",
       "im.http requests that failed: busy, timeout, connect, tls, too large, protocol.", "errors"},
      {"hubu_plugin_http_in_flight", "gauge", "im.http requests of a plugin in flight now.", "in_flight"},
  };
  for (int f = 0; f < 3; f++) {
    rc |= hubu_prom_head(out, families[f][0], families[f][1], families[f][2], strlen(families[f][2]));
    for (size_t i = 1; i <= n; i++) {
      size_t nlen = 0;
      lua_rawgeti(L, list, (int)i);
      lua_getfield(L, -1, "name");
      lua_getfield(L, -2, families[f][3]);
      const char *name = lua_tolstring(L, -2, &nlen);
      rc |= buf_str(out, families[f][0]);
      rc |= buf_str(out, "{plugin=\"");
      if (name) rc |= hubu_prom_escaped(out, name, nlen, 1);
      rc |= buf_str(out, "\"} ");
      rc |= hubu_prom_value(out, lua_tonumber(L, -1));
      rc |= buf_str(out, "\n");
      lua_pop(L, 3);
    }
  }
  static const char hist[] = "hubu_plugin_http_request_seconds";
  static const char hist_help[] = "Time from an im.http request's start to its answer or failure.";
  rc |= hubu_prom_head(out, hist, "histogram", hist_help, sizeof hist_help - 1);
  for (size_t i = 1; i <= n; i++) {
    size_t nlen = 0;
    lua_rawgeti(L, list, (int)i);
    int e = lua_gettop(L);
    lua_getfield(L, e, "name");
    lua_getfield(L, e, "buckets");
    lua_getfield(L, e, "count");
    lua_getfield(L, e, "sum");
    const char *name = lua_tolstring(L, e + 1, &nlen);
    for (size_t b = 1; b <= nle + 1; b++) { /* cumulative counts per le, then +Inf */
      rc |= buf_str(out, hist);
      rc |= buf_str(out, "_bucket{plugin=\"");
      if (name) rc |= hubu_prom_escaped(out, name, nlen, 1);
      rc |= buf_str(out, "\",le=\"");
      if (b <= nle) {
        lua_rawgeti(L, les, (int)b);
        rc |= hubu_prom_value(out, lua_tonumber(L, -1));
        lua_pop(L, 1);
        lua_rawgeti(L, e + 2, (int)b);
      } else {
        rc |= buf_str(out, "+Inf");
        lua_pushvalue(L, e + 3);
      }
      rc |= buf_str(out, "\"} ");
      rc |= hubu_prom_value(out, lua_tonumber(L, -1));
      rc |= buf_str(out, "\n");
      lua_pop(L, 1);
    }
    static const char *const tails[] = {"_sum", "_count"};
    for (int t = 0; t < 2; t++) {
      rc |= buf_str(out, hist);
      rc |= buf_str(out, tails[t]);
      rc |= buf_str(out, "{plugin=\"");
      if (name) rc |= hubu_prom_escaped(out, name, nlen, 1);
      rc |= buf_str(out, "\"} ");
      rc |= hubu_prom_value(out, lua_tonumber(L, t == 0 ? e + 4 : e + 3));
      rc |= buf_str(out, "\n");
    }
    lua_settop(L, e - 1);
  }
  lua_settop(L, top);
  return rc;
}

/* Stack: unchanged. */
int hubu_plugins_metrics(hubu_plugins *p, hubu_buf *out) {
  if (!p || !p->L) return 0;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  int rc = 0;
  static const char *const families[][3] = {
      {"hubu_plugin_calls_total", "counter", "Hook and timer calls per plugin."},
      {"hubu_plugin_errors_total", "counter", "Hook and timer errors per plugin."},
      {"hubu_plugin_seconds_total", "counter", "Time spent in a plugin's hooks and timers."},
  };
  static const char *const fields[] = {"calls", "errors", "seconds"};
  hubu_plugins_call_host(p, "list", 0, 1);
  int list = lua_gettop(L);
  size_t n = lua_istable(L, list) ? lua_objlen(L, list) : 0;
  for (int f = 0; f < 3 && rc == 0; f++) {
    rc |= hubu_prom_head(out, families[f][0], families[f][1], families[f][2], strlen(families[f][2]));
    for (size_t i = 1; i <= n && rc == 0; i++) {
      size_t nlen = 0;
      lua_rawgeti(L, list, (int)i);
      lua_getfield(L, -1, "name");
      lua_getfield(L, -2, fields[f]);
      const char *name = lua_tolstring(L, -2, &nlen);
      rc |= buf_str(out, families[f][0]);
      rc |= buf_str(out, "{plugin=\"");
      if (name) rc |= hubu_prom_escaped(out, name, nlen, 1);
      rc |= buf_str(out, "\"} ");
      rc |= hubu_prom_value(out, lua_tonumber(L, -1));
      rc |= buf_str(out, "\n");
      lua_pop(L, 3);
    }
  }
  if (rc == 0) rc |= http_families(p, out);
  static const char loaded_help[] = "Plugins running.";
  rc |= hubu_prom_head(out, "hubu_plugins_loaded", "gauge", loaded_help, sizeof loaded_help - 1);
  rc |= hubu_prom_sample_u64(out, "hubu_plugins_loaded", NULL, n);
  /* What plugins publish (im.counter, im.gauge): a family per metric name. */
  hubu_plugins_call_host(p, "metric_families", 0, 1);
  int fams = lua_gettop(L);
  size_t nf = lua_istable(L, fams) ? lua_objlen(L, fams) : 0;
  for (size_t i = 1; i <= nf && rc == 0; i++) {
    lua_rawgeti(L, fams, (int)i);
    int fam = lua_gettop(L);
    size_t help_len = 0;
    lua_getfield(L, fam, "name");
    lua_getfield(L, fam, "kind");
    lua_getfield(L, fam, "help");
    lua_getfield(L, fam, "samples");
    const char *name = lua_tostring(L, fam + 1), *kind = lua_tostring(L, fam + 2),
               *help = lua_tolstring(L, fam + 3, &help_len);
    size_t ns = lua_istable(L, fam + 4) ? lua_objlen(L, fam + 4) : 0;
    if (name && kind && ns > 0) {
      rc |= hubu_prom_head(out, name, kind, help ? help : "", help ? help_len : 0);
      for (size_t j = 1; j <= ns && rc == 0; j++) {
        lua_rawgeti(L, fam + 4, (int)j);
        lua_getfield(L, -1, "labels");
        lua_getfield(L, -2, "value");
        rc |= buf_str(out, name);
        if (lua_istable(L, -2)) rc |= prom_labels(out, L, lua_gettop(L) - 1);
        rc |= buf_str(out, " ");
        rc |= hubu_prom_value(out, lua_tonumber(L, -1));
        rc |= buf_str(out, "\n");
        lua_pop(L, 3);
      }
    }
    lua_settop(L, fams);
  }
  lua_settop(L, top);
  return rc ? -1 : 0;
}

/* ---- GET /v1/admin/plugins ---- */

/* sets key: the field key of the table at t, a string or null. Stack: unchanged. */
static void j_field_str(hubu_json_writer *j, lua_State *L, int t, const char *key) {
  size_t len = 0;
  lua_getfield(L, t, key);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
  hubu_json_strn(j, key, s, len);
  lua_pop(L, 1);
}

/* The number field key of the table at t, printed with fmt ("%.0f" for
 * counts), or null. Stack: unchanged. */
static void j_field_num(hubu_json_writer *j, lua_State *L, int t, const char *key, const char *fmt) {
  lua_getfield(L, t, key);
  if (lua_type(L, -1) == LUA_TNUMBER)
    hubu_json_double(j, key, lua_tonumber(L, -1), fmt);
  else
    hubu_json_null(j, key);
  lua_pop(L, 1);
}

/* The listing's JSON, through the one writer (json.h): every string from a
 * plugin or the host is escaped, a number JSON cannot hold is null. Each
 * plugin on a line of its own. Stack: unchanged. */
int hubu_plugins_list_json(hubu_plugins *p, hubu_buf *out) {
  hubu_json_writer j;
  hubu_json_init(&j, out, NULL);
  lua_State *L = p ? p->L : NULL;
  int top = L ? lua_gettop(L) : 0;
  if (L) hubu_plugins_call_host(p, "list", 0, 2);
  int list = top + 1, failed = top + 2;
  size_t n = L && lua_istable(L, list) ? lua_objlen(L, list) : 0;
  size_t nf = L && lua_istable(L, failed) ? lua_objlen(L, failed) : 0;
  hubu_json_open(&j, NULL, '{', 0);
  hubu_json_str(&j, "dir", p ? p->dir : NULL);
  hubu_json_u64(&j, "count", n);
  hubu_json_open(&j, "plugins", '[', 0);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, list, (int)i);
    int e = lua_gettop(L);
    hubu_json_open(&j, NULL, '{', 1);
    j_field_str(&j, L, e, "name");
    j_field_str(&j, L, e, "version");
    j_field_str(&j, L, e, "summary");
    j_field_str(&j, L, e, "policy");
    j_field_num(&j, L, e, "priority", "%.17g");
    j_field_num(&j, L, e, "budget_ms", "%.0f");
    j_field_str(&j, L, e, "path");
    lua_getfield(L, e, "folder");
    hubu_json_bool(&j, "folder", lua_toboolean(L, -1));
    lua_pop(L, 1);
    j_field_num(&j, L, e, "loaded_at", "%.3f");
    j_field_num(&j, L, e, "reloads", "%.0f");
    hubu_json_open(&j, "hooks", '{', 1);
    lua_getfield(L, e, "hooks"); /* {{event, count}...} in event order */
    size_t nh = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    for (size_t h = 1; h <= nh; h++) {
      lua_rawgeti(L, -1, (int)h);
      lua_getfield(L, -1, "event");
      lua_getfield(L, -2, "count");
      const char *event = lua_tostring(L, -2);
      hubu_json_double(&j, event ? event : "", lua_tonumber(L, -1), "%.0f");
      lua_pop(L, 3);
    }
    lua_pop(L, 1);
    hubu_json_close(&j);
    j_field_num(&j, L, e, "timers", "%.0f");
    j_field_num(&j, L, e, "calls", "%.0f");
    j_field_num(&j, L, e, "errors", "%.0f");
    j_field_num(&j, L, e, "seconds", "%.6f");
    lua_getfield(L, e, "reload_error");
    if (lua_istable(L, -1)) {
      int r = lua_gettop(L);
      hubu_json_open(&j, "reload_error", '{', 1);
      j_field_str(&j, L, r, "error");
      j_field_num(&j, L, r, "at", "%.3f");
      hubu_json_close(&j);
    } else {
      hubu_json_null(&j, "reload_error");
    }
    lua_getfield(L, e, "reserved"); /* the users it reserved (plugin:reserve_user), when any */
    size_t nr = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    if (nr) {
      hubu_json_open(&j, "reserved", '[', 1);
      for (size_t r = 1; r <= nr; r++) {
        lua_rawgeti(L, -1, (int)r);
        hubu_json_str(&j, NULL, lua_tostring(L, -1));
        lua_pop(L, 1);
      }
      hubu_json_close(&j);
    }
    hubu_json_close(&j);
    lua_settop(L, e - 1);
  }
  hubu_json_close(&j);
  hubu_json_open(&j, "not_loaded", '[', 0);
  for (size_t i = 1; i <= nf; i++) {
    lua_rawgeti(L, failed, (int)i);
    int e = lua_gettop(L);
    hubu_json_open(&j, NULL, '{', 1);
    j_field_str(&j, L, e, "name");
    j_field_str(&j, L, e, "path");
    j_field_str(&j, L, e, "error");
    j_field_num(&j, L, e, "at", "%.3f");
    j_field_str(&j, L, e, "version"); /* the header, when the file could be read; null otherwise */
    j_field_str(&j, L, e, "summary");
    j_field_str(&j, L, e, "policy");
    hubu_json_close(&j);
    lua_settop(L, e - 1);
  }
  hubu_json_close(&j);
  hubu_json_close(&j);
  if (L) lua_settop(L, top);
  return hubu_json_failed(&j) ? -1 : 0;
}

/* mariadb_url.c — parsing of mariadb:// store URLs (mariadb_url.h). */
#include "mariadb_url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pct.h"

static int parse_seconds(const char *v, unsigned *out) {
  char *end;
  errno = 0;
  unsigned long s = strtoul(v, &end, 10);
  if (errno || end == v || *end || s == 0 || s > 3600) return -1;
  *out = (unsigned)s;
  return 0;
}

static int parse_option(hubu_mariadb_url *out, const char *item, size_t len, char *err, size_t err_size) {
  const char *eq = memchr(item, '=', len);
  if (!eq) {
    snprintf(err, err_size, "store URL: option \"%.*s\" wants NAME=VALUE", (int)(len > 40 ? 40 : len), item);
    return -1;
  }
  size_t name_len = (size_t)(eq - item);
  char value[256];
  if (hubu_pct_decode(eq + 1, len - name_len - 1, value, sizeof value) != 0) {
    snprintf(err, err_size, "store URL: the value of option \"%.*s\" is malformed or too long", (int)name_len, item);
    return -1;
  }
#define IS(name) (name_len == strlen(name) && !memcmp(item, name, name_len))
  if (IS("socket")) {
    snprintf(out->socket, sizeof out->socket, "%s", value);
  } else if (IS("user")) {
    size_t n = strlen(value);
    if (n >= sizeof out->user) goto too_long;
    memcpy(out->user, value, n + 1);
  } else if (IS("password_file")) {
    snprintf(out->password_file, sizeof out->password_file, "%s", value);
  } else if (IS("connect_timeout") || IS("read_timeout") || IS("write_timeout") || IS("lock_wait_timeout") ||
             IS("idle_transaction_timeout")) {
    unsigned *slot = IS("connect_timeout")     ? &out->connect_timeout_s
                     : IS("read_timeout")      ? &out->read_timeout_s
                     : IS("write_timeout")     ? &out->write_timeout_s
                     : IS("lock_wait_timeout") ? &out->lock_wait_timeout_s
                                               : &out->idle_txn_timeout_s;
    if (parse_seconds(value, slot) != 0) {
      snprintf(err, err_size, "store URL: %.*s wants seconds, 1-3600", (int)name_len, item);
      return -1;
    }
  } else {
    snprintf(err, err_size,
             "store URL: unknown option \"%.*s\" (known: socket, user, password_file, connect_timeout, read_timeout, "
             "write_timeout, lock_wait_timeout, idle_transaction_timeout)",
             (int)(name_len > 40 ? 40 : name_len), item);
    return -1;
  }
#undef IS
  return 0;
too_long:
  snprintf(err, err_size, "store URL: option value too long");
  return -1;
}

int hubu_mariadb_url_parse(const char *url, hubu_mariadb_url *out, char *err, size_t err_size) {
  memset(out, 0, sizeof *out);
  size_t scheme_len = strlen(HUBU_MARIADB_SCHEME);
  if (!url || strncmp(url, HUBU_MARIADB_SCHEME, scheme_len) != 0) {
    snprintf(err, err_size, "store URL: want %sUSER:PASSWORD@HOST:PORT/DATABASE", HUBU_MARIADB_SCHEME);
    return -1;
  }
  const char *p = url + scheme_len;
  const char *slash = strchr(p, '/');
  if (!slash) {
    snprintf(err, err_size, "store URL: no /DATABASE after the host");
    return -1;
  }
  const char *query = strchr(slash, '?');
  const char *db_end = query ? query : slash + strlen(slash);
  /* authority: [user[:password]@]host[:port] */
  const char *auth_end = slash;
  const char *at = NULL;
  for (const char *q = p; q < auth_end; q++)
    if (*q == '@') at = q; /* the last '@': a password may hold one only percent-encoded, but be lenient */
  const char *host = p;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    size_t user_len = colon ? (size_t)(colon - p) : (size_t)(at - p);
    if (hubu_pct_decode(p, user_len, out->user, sizeof out->user) != 0) {
      snprintf(err, err_size, "store URL: the user name is malformed or too long");
      return -1;
    }
    if (colon) {
      if (hubu_pct_decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password) != 0) {
        snprintf(err, err_size, "store URL: the password is malformed or too long");
        return -1;
      }
      out->has_password = 1;
    }
    host = at + 1;
  }
  size_t host_len = (size_t)(auth_end - host);
  const char *port = NULL;
  if (host_len && host[0] == '[') { /* [v6] or [v6]:port */
    const char *close = memchr(host, ']', host_len);
    if (!close) {
      snprintf(err, err_size, "store URL: unterminated [IPv6] host");
      return -1;
    }
    if (close + 1 < auth_end) {
      if (close[1] != ':') {
        snprintf(err, err_size, "store URL: junk after the [IPv6] host");
        return -1;
      }
      port = close + 2;
    }
    if ((size_t)(close - host - 1) >= sizeof out->host) goto host_too_long;
    memcpy(out->host, host + 1, (size_t)(close - host - 1));
    out->host[close - host - 1] = '\0';
  } else {
    const char *colon = memchr(host, ':', host_len);
    size_t name_len = colon ? (size_t)(colon - host) : host_len;
    if (name_len >= sizeof out->host) goto host_too_long;
    memcpy(out->host, host, name_len);
    out->host[name_len] = '\0';
    if (colon) port = colon + 1;
  }
  if (port) {
    char digits[8];
    size_t n = (size_t)(auth_end - port);
    char *end;
    if (n == 0 || n >= sizeof digits) goto bad_port;
    memcpy(digits, port, n);
    digits[n] = '\0';
    unsigned long v = strtoul(digits, &end, 10);
    if (*end || v == 0 || v > 65535) goto bad_port;
    out->port = (unsigned)v;
  }
  if (hubu_pct_decode(slash + 1, (size_t)(db_end - slash - 1), out->database, sizeof out->database) != 0 ||
      !out->database[0]) {
    snprintf(err, err_size, "store URL: want a database name (1-64 bytes) after the host");
    return -1;
  }
  for (const char *d = out->database; *d; d++)
    if (!((*d >= 'a' && *d <= 'z') || (*d >= 'A' && *d <= 'Z') || (*d >= '0' && *d <= '9') || *d == '_' || *d == '$')) {
      snprintf(err, err_size, "store URL: a database name is letters, digits, _ and $");
      return -1;
    }
  if (query) {
    const char *item = query + 1;
    while (*item) {
      const char *amp = strchr(item, '&');
      size_t len = amp ? (size_t)(amp - item) : strlen(item);
      if (len && parse_option(out, item, len, err, err_size) != 0) return -1;
      item += len + (amp ? 1 : 0);
    }
  }
  if (!out->host[0] && !out->socket[0]) {
    snprintf(err, err_size, "store URL: want a host, or ?socket=PATH");
    return -1;
  }
  if (!out->user[0]) {
    snprintf(err, err_size, "store URL: want a user (USER@HOST, or ?user=NAME)");
    return -1;
  }
  return 0;
host_too_long:
  snprintf(err, err_size, "store URL: host name too long");
  return -1;
bad_port:
  snprintf(err, err_size, "store URL: the port is 1-65535");
  return -1;
}

int hubu_mariadb_url_password(hubu_mariadb_url *out, char *err, size_t err_size) {
  if (out->has_password) return 0;
  if (out->password_file[0]) {
    FILE *f = fopen(out->password_file, "r");
    if (!f) {
      snprintf(err, err_size, "store password file %s: %s", out->password_file, strerror(errno));
      return -1;
    }
    char line[sizeof out->password + 2];
    if (!fgets(line, sizeof line, f)) line[0] = '\0';
    fclose(f);
    size_t n = strcspn(line, "\r\n");
    if (n >= sizeof out->password) {
      snprintf(err, err_size, "store password file %s: the password is longer than %zu bytes", out->password_file,
               sizeof out->password - 1);
      return -1;
    }
    memcpy(out->password, line, n);
    out->password[n] = '\0';
    out->has_password = 1;
    return 0;
  }
  const char *env = getenv(HUBU_MARIADB_PASSWORD_ENV);
  if (env) {
    if (strlen(env) >= sizeof out->password) {
      snprintf(err, err_size, "%s: the password is longer than %zu bytes", HUBU_MARIADB_PASSWORD_ENV,
               sizeof out->password - 1);
      return -1;
    }
    snprintf(out->password, sizeof out->password, "%s", env);
    out->has_password = 1;
  }
  return 0;
}

void hubu_mariadb_url_redact(const char *url, char *out, size_t size) {
  /* Whatever the URL's shape, parsed or not: everything between the first ':'
   * after "scheme://" and the last '@' is hidden (at worst, more than the password). */
  const char *rest = url ? strstr(url, "://") : NULL;
  const char *at = rest ? strrchr(rest + 3, '@') : NULL;
  const char *colon = at ? memchr(rest + 3, ':', (size_t)(at - rest - 3)) : NULL;
  if (!colon) {
    snprintf(out, size, "%s", url ? url : "");
    return;
  }
  snprintf(out, size, "%.*s:***%s", (int)(colon - url), url, at);
}

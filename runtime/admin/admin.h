/* admin.h — the admin listener: HTTP/1.1 on loopback (--admin-listen, default
 * 127.0.0.1:7781) for /healthz, /metrics (Prometheus text) and the
 * /v1/admin/ endpoints that hubuctl speaks (stats, conns, kick, reload,
 * plugins).
 * It serves only requests addressed to itself (Host), from no browser page
 * it was not told about (Origin), changes state only on requests a page
 * cannot forge (POST with application/json or a bearer token), and with
 * --admin-token only to holders of the token (docs/security.md). */
#ifndef HUBU_ADMIN_H
#define HUBU_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"
#include "token.h" /* HUBU_ADMIN_TOKEN_MIN, _MAX */

typedef struct hubu_server hubu_server;
typedef struct hubu_admin hubu_admin;

/* The settings the admin listener reads; main fills them from flags and hubu.lua. */
typedef struct {
  int admin_enabled;          /* 0 with --admin-listen off */
  char admin_host[64];        /* loopback by default */
  int admin_port;             /* 0: ephemeral (the port file gets "admin PORT") */
  int on_loopback;            /* admin_host is a loopback address */
  const char *admin_hosts;    /* --admin-host: more names a Host header may give, "name[:port],..."; NULL: none */
  const char *admin_origins;  /* --admin-allow-origin: Origins let through, "scheme://host[:port],..."; NULL: none */
  const uint8_t *admin_token; /* --admin-token's bytes (not owned); NULL: no token */
  size_t admin_token_len;
} hubu_admin_config;

/* Largest request body accepted (the endpoints take none; larger gets 413). */
#define HUBU_ADMIN_MAX_BODY (64 * 1024)

/* "name", "name:port", "[v6]" or "[v6]:port": a Host header's value, an
 * --admin-host item, the host part of an Origin. name points into the
 * parsed text (brackets left out). */
typedef struct {
  const char *name;
  size_t name_len; /* 1-253 bytes of [A-Za-z0-9.-], or an IPv6 literal when ip6 */
  int ip6;
  int port; /* 1-65535, or -1 when none was given */
} hubu_admin_authority;

/* Parses s (len bytes, no NUL needed) into out. 0, or -1 when malformed. */
int hubu_admin_authority_parse(const char *s, size_t len, hubu_admin_authority *out);

/* 1 when s (len bytes) is an origin as browsers send it: http:// or
 * https:// and an authority (hubu_admin_authority_parse), nothing after. */
int hubu_admin_origin_valid(const char *s, size_t len);

/* Binds s->cfg->admin_host:admin_port unless --admin-listen off, and sets
 * s->admin. Call after the client listeners. 0, or -1 (logged; nothing left
 * open that the loop cannot close). */
int hubu_admin_start(hubu_server *s, const hubu_admin_config *cfg);

/* The bound port (for the port file's "admin PORT" line), -1 when off. */
int hubu_admin_port(const hubu_server *s);

/* Closes the listener and every admin connection, even mid-request, and sets
 * s->admin to NULL; the memory goes in the last close callback. Safe to call
 * twice, and when the listener is off. */
void hubu_admin_close(hubu_server *s);

/* The plugin host's reload, called on the loop thread for POST
 * /v1/admin/reload. plugin is the name to reload, or NULL for all of them.
 * Writes a one-line NUL-terminated message into msg (what was reloaded, or why
 * it failed) and returns the HTTP status to answer with: 200 reloaded, 404 no
 * such plugin, 422 the new version failed to load (the old one keeps running),
 * 500 anything else. */
typedef int (*hubu_admin_reload_fn)(void *ud, const char *plugin, char *msg, size_t msg_size);

/* Installs the reload hook (NULL removes it); call it after
 * hubu_server_start. Without one, reload answers 501 "the plugin host is not
 * running". Does nothing while the listener is off. */
void hubu_admin_set_reload(hubu_server *s, hubu_admin_reload_fn fn, void *ud);

#endif

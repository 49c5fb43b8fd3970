/* im.c — the C functions behind the `im` API that host.lua calls: send,
 * event, kick, token, members, config, log, timers, the store-backed calls
 * (group ops, members once loaded, kv), a CALL's reply, HMAC, and im.http's
 * side of the HTTP client (http_client.c).
 * Invariant: a store-backed call returns at once and answers later through
 * host.complete(ticket, ...) from its completion, which finds the host again
 * through core (it may have closed meanwhile) and never runs plugin code
 * outside host.lua's protected call. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "host_internal.h"
#include "http_client.h"
#include "log.h"
#include "messaging.h"
#include "presence.h"
#include "session.h"
#include "store.h"
#include "token.h"
#include "utf8.h"
#include "wire.h"
#include "wordset.h"

/* A timer of plugin:after/every or im.after/every. */
typedef struct plugin_timer {
  uv_timer_t timer; /* first: the handle pointer is the timer pointer */
  hubu_plugins *host;
  UT_hash_handle hh; /* in host->timers, by id */
  int id;
  int every;
} plugin_timer;

/* C.log(level, plugin, event [, msg [, raw]]): one log line, msg escaped
 * into msg="..."; with raw, msg is key=value fields host.lua quoted once
 * already, written as they are (a line break in them ends the field). */
static int c_log(lua_State *L) {
  const char *level = luaL_checkstring(L, 1), *plugin = luaL_checkstring(L, 2), *event = luaL_checkstring(L, 3),
             *msg = luaL_optstring(L, 4, "");
  int lv = hubu_log_level_parse(level);
  if (lua_toboolean(L, 5)) {
    size_t n = strcspn(msg, "\n");
    hubu_log(lv < 0 ? HUBU_LOG_INFO : (hubu_log_level)lv, 0, NULL, event, "plugin=%s %.*s", plugin, (int)n, msg);
    return 0;
  }
  char line[1536]; /* one log line: newlines and quotes escaped */
  size_t n = 0;
  for (const char *c = msg; *c && n + 2 < sizeof line; c++) {
    if (*c == '\n' || *c == '"' || *c == '\\') {
      line[n++] = '\\';
      line[n++] = *c == '\n' ? 'n' : *c;
    } else {
      line[n++] = *c == '\t' ? ' ' : *c;
    }
  }
  line[n] = '\0';
  hubu_log(lv < 0 ? HUBU_LOG_INFO : (hubu_log_level)lv, 0, NULL, event, "plugin=%s msg=\"%s\"", plugin, line);
  return 0;
}

/* C.now() -> wall-clock ms. */
static int c_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)hubu_now_ms());
  return 1;
}

/* C.send(as, device, session, body [, content_type]) -> true, or nil, err. */
static int c_send(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  size_t len = 0;
  const char *as = luaL_checkstring(L, 1), *device = luaL_checkstring(L, 2), *session = luaL_checkstring(L, 3),
             *body = luaL_checklstring(L, 4, &len), *ctype = luaL_optstring(L, 5, "");
  const char *err = hubu_messaging_send_internal(p->core, as, device, session, (const uint8_t *)body, len, ctype);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* C.event(user, name [, payload, sender]) -> the connections that got it. */
static int c_event(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  size_t plen = 0;
  const char *user = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2),
             *payload = luaL_optlstring(L, 3, "", &plen), *sender = luaL_optstring(L, 4, "");
  int n = 0;
  Hubu__V1__Event e = HUBU__V1__EVENT__INIT;
  e.name = (char *)name;
  e.payload.data = (uint8_t *)payload;
  e.payload.len = plen;
  e.sender = (char *)sender;
  for (hubu_peer *c = hubu_core_peers_of(p->core, user); c; c = c->user_next)
    if (hubu_peer_send(c, HUBU_FRAME_EVENT, &e.base) == 0) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* C.kick(user [, reason]) -> the connections kicked. */
static int c_kick(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *user = luaL_checkstring(L, 1), *reason = luaL_optstring(L, 2, "kicked");
  lua_pushinteger(L, hubu_core_kick(p->core, user, reason));
  return 1;
}

/* C.token(user [, ttl_s]) -> a token for user. */
static int c_token(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *user = luaL_checkstring(L, 1);
  lua_Number ttl = luaL_optnumber(L, 2, 86400);
  char tok[HUBU_TOKEN_MAX];
  const hubu_plugin_config *cfg = &p->cfg;
  if (hubu_token_mint(cfg->secret, cfg->secret_len, user, hubu_now_ms() / 1000 + (uint64_t)ttl, tok, sizeof tok) < 0)
    return luaL_error(L, "im.token: invalid user id");
  lua_pushstring(L, tok);
  return 1;
}

/* C.token_verify(token, user) -> ok, status name, whether it is a reserved
 * token (v1r., which may log in as a reserved user). */
static int c_token_verify(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  size_t len = 0;
  const char *tok = luaL_checklstring(L, 1, &len), *user = luaL_checkstring(L, 2);
  const hubu_plugin_config *cfg = &p->cfg;
  int reserved = len > 4 && !memcmp(tok, HUBU_TOKEN_RESERVED_PREFIX, 4);
  hubu_token_status st =
      reserved ? hubu_token_verify_reserved(cfg->secret, cfg->secret_len, tok, len, user, hubu_now_ms() / 1000)
               : hubu_token_verify(cfg->secret, cfg->secret_len, tok, len, user, hubu_now_ms() / 1000);
  lua_pushboolean(L, st == HUBU_TOKEN_OK);
  lua_pushstring(L, hubu_token_status_name(st));
  lua_pushboolean(L, reserved && st == HUBU_TOKEN_OK);
  return 3;
}

/* Stack: pushes a list of sess's members (a direct session's two users included). */
static void push_members(lua_State *L, const hubu_session *sess) {
  hubu_member_names direct;
  const char *const *members;
  size_t n = hubu_session_member_list(sess, &direct, &members);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, members[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

/* C.members(session) -> the list of members, or nil, "loading" (a later
 * call finds it) / "invalid session id". */
static int c_members(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *id = luaL_checkstring(L, 1);
  hubu_session *sess = hubu_session_get(p->core, id);
  if (!sess || !sess->loaded) { /* the load is under way now; a later call finds it */
    lua_pushnil(L);
    lua_pushstring(L, sess ? "loading" : "invalid session id");
    return 2;
  }
  push_members(L, sess);
  return 1;
}

/* C.config(key) -> the setting, or nil for a key plugins do not see. */
static int c_config(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const hubu_core_config *cfg = &p->core->cfg;
  const char *key = luaL_checkstring(L, 1);
  if (!strcmp(key, "heartbeat_ms"))
    lua_pushnumber(L, cfg->heartbeat_ms);
  else if (!strcmp(key, "max_frame"))
    lua_pushnumber(L, cfg->max_frame);
  else if (!strcmp(key, "node_id"))
    lua_pushnumber(L, cfg->node_id);
  else if (!strcmp(key, "data_dir"))
    lua_pushstring(L, p->cfg.data_dir);
  else if (!strcmp(key, "plugins_dir"))
    lua_pushstring(L, p->dir);
  else
    lua_pushnil(L);
  return 1;
}

/* C.label_ok(s) -> can s be a label value on /metrics? UTF-8 without NUL:
 * Prometheus drops a whole scrape for one value that is not UTF-8. */
static int c_label_ok(lua_State *L) {
  size_t len = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, hubu_utf8_valid(s, len, 0));
  return 1;
}

/* ---- store-backed im calls: each answers host.complete(ticket, ...) ---- */

/* Stack: the ticket on top. Completes it with nil, why; leaves the stack
 * as it was below the ticket. */
static void complete_failed(hubu_plugins *p, const char *why) {
  lua_pushnil(p->L);
  lua_pushstring(p->L, why);
  hubu_plugins_call_host(p, "complete", 3, 0);
}

/* The store finished a membership op a plugin asked for. The host is looked
 * up again through core: it may have closed meanwhile. Stack: unchanged. */
static void on_group_op(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = hubu_plugins_of_core(s);
  int ticket = (int)op->request_id;
  int ok = op->status == HUBU_STORE_OK;
  if (op->kind != HUBU_STORE_SYNC) hubu_session_membership_applied(s, op); /* the loaded copy follows the store */
  if (p && p->L) {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_pushinteger(L, ticket);
    if (ok && op->kind == HUBU_STORE_SYNC) {
      lua_createtable(L, (int)op->sync.n_states, 0);
      for (size_t i = 0; i < op->sync.n_states; i++) {
        lua_pushstring(L, op->sync.states[i].session_id);
        lua_rawseti(L, -2, (int)i + 1);
      }
      hubu_plugins_call_host(p, "complete", 2, 0);
    } else if (ok) {
      lua_pushboolean(L, 1);
      hubu_plugins_call_host(p, "complete", 2, 0);
    } else {
      complete_failed(p, op->status == HUBU_STORE_EXISTS      ? "exists"
                         : op->status == HUBU_STORE_NOT_FOUND ? "not found"
                                                              : "store unavailable");
    }
    lua_settop(L, top);
  }
  hubu_store_op_free(op);
}

/* C.group_op(what, ticket, session, user_or_members): what is "create",
 * "add", "remove" or "sessions_of" (then session is the user). Returns
 * nothing; the answer comes through host.complete(ticket, ...). */
static int c_group_op(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *what = luaL_checkstring(L, 1);
  int ticket = (int)luaL_checkinteger(L, 2);
  const char *id = luaL_checkstring(L, 3);
  hubu_store_op_kind kind = !strcmp(what, "create")   ? HUBU_STORE_SESSION_CREATE
                            : !strcmp(what, "add")    ? HUBU_STORE_MEMBER_ADD
                            : !strcmp(what, "remove") ? HUBU_STORE_MEMBER_REMOVE
                                                      : HUBU_STORE_SYNC;
  if (kind == HUBU_STORE_SYNC ? !hubu_id_valid(id, strlen(id))
                              : hubu_session_id_check(id, strlen(id)) != HUBU_SESSION_GROUP)
    return luaL_error(L, "%s: invalid %s '%s'", what, kind == HUBU_STORE_SYNC ? "user" : "group id", id);
  hubu_store_op *op = hubu_store_op_new(kind);
  if (!op) return luaL_error(L, "out of memory");
  if (kind == HUBU_STORE_SYNC) {
    snprintf(op->sync.user, sizeof op->sync.user, "%s", id);
  } else if (kind == HUBU_STORE_SESSION_CREATE) {
    snprintf(op->session_create.session_id, sizeof op->session_create.session_id, "%s", id);
    snprintf(op->session_create.kind, sizeof op->session_create.kind, "group");
  } else {
    snprintf(op->member.session_id, sizeof op->member.session_id, "%s", id);
  }
  if (kind == HUBU_STORE_MEMBER_ADD || kind == HUBU_STORE_MEMBER_REMOVE) {
    const char *user = luaL_checkstring(L, 4);
    if (!hubu_id_valid(user, strlen(user))) {
      hubu_store_op_free(op);
      return luaL_error(L, "%s: invalid user id '%s'", what, user);
    }
    snprintf(op->member.user, sizeof op->member.user, "%s", user);
  } else if (kind == HUBU_STORE_SESSION_CREATE && lua_istable(L, 4)) {
    hubu_store_session_create_op *create = &op->session_create;
    size_t n = lua_objlen(L, 4);
    create->members = calloc(n ? n : 1, sizeof *create->members);
    for (size_t i = 1; create->members && i <= n; i++) {
      lua_rawgeti(L, 4, (int)i);
      const char *u = lua_tostring(L, -1);
      if (u && hubu_id_valid(u, strlen(u))) create->members[create->n_members++] = strdup(u);
      lua_pop(L, 1);
    }
  }
  op->done = on_group_op;
  op->ud2 = p->core;
  op->request_id = (uint64_t)ticket;
  hubu_store_submit(p->core->store, op);
  return 0;
}

/* The store finished an im.kv call. Stack: unchanged. */
static void on_kv_op(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = hubu_plugins_of_core(s);
  if (p && p->L) {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_pushinteger(L, (lua_Integer)op->request_id);
    if (op->status == HUBU_STORE_OK && op->kind == HUBU_STORE_KV_GET) {
      lua_pushlstring(L, (const char *)op->kv.value, op->kv.value_len);
      hubu_plugins_call_host(p, "complete", 2, 0);
    } else if (op->status == HUBU_STORE_OK || op->status == HUBU_STORE_NOT_FOUND) {
      if (op->kind == HUBU_STORE_KV_GET)
        lua_pushnil(L); /* no such key: nil, not an error */
      else
        lua_pushboolean(L, op->status == HUBU_STORE_OK);
      hubu_plugins_call_host(p, "complete", 2, 0);
    } else {
      complete_failed(p, "store unavailable");
    }
    lua_settop(L, top);
  }
  hubu_store_op_free(op);
}

/* C.kv(what, ticket, plugin, key [, value]): what is "get", "set" or
 * "delete". Returns nothing; the answer comes through host.complete. */
static int c_kv(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *what = luaL_checkstring(L, 1);
  int ticket = (int)luaL_checkinteger(L, 2);
  const char *plugin = luaL_checkstring(L, 3);
  size_t klen = 0, vlen = 0;
  const char *key = luaL_checklstring(L, 4, &klen);
  hubu_store_op_kind kind = !strcmp(what, "get")   ? HUBU_STORE_KV_GET
                            : !strcmp(what, "set") ? HUBU_STORE_KV_SET
                                                   : HUBU_STORE_KV_DELETE;
  const char *value = kind == HUBU_STORE_KV_SET ? luaL_checklstring(L, 5, &vlen) : NULL;
  if (klen == 0 || klen > 1024 || strlen(key) != klen) return luaL_error(L, "im.kv: a key is 1-1024 bytes, no NUL");
  if (vlen > (1u << 20)) return luaL_error(L, "im.kv: a value is at most 1 MiB");
  hubu_store_op *op = hubu_store_op_new(kind);
  if (!op || !(op->kv.key = strdup(key)) || (value && !(op->kv.value = malloc(vlen ? vlen : 1)))) {
    hubu_store_op_free(op);
    return luaL_error(L, "out of memory");
  }
  if (value && vlen) memcpy(op->kv.value, value, vlen);
  op->kv.value_len = vlen;
  snprintf(op->kv.plugin, sizeof op->kv.plugin, "%s", plugin);
  op->done = on_kv_op;
  op->ud2 = p->core;
  op->request_id = (uint64_t)ticket;
  hubu_store_submit(p->core->store, op);
  return 0;
}

/* A session a plugin waits on finished loading. */
typedef struct {
  hubu_parked parked;
  int ticket;
} parked_members;

/* Stack: unchanged. */
static void resume_members(hubu_core *s, hubu_session *sess, hubu_parked *parked) {
  parked_members *pm = (parked_members *)parked;
  hubu_plugins *p = hubu_plugins_of_core(s);
  if (p && p->L) {
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_pushinteger(L, pm->ticket);
    if (!sess->loaded || !sess->exists) {
      complete_failed(p, sess->loaded ? "not found" : "store unavailable");
    } else {
      push_members(L, sess);
      hubu_plugins_call_host(p, "complete", 2, 0);
    }
    lua_settop(L, top);
  }
  free(pm);
}

/* C.members_wait(ticket, session): members once the session is loaded,
 * through host.complete(ticket, list) or (ticket, nil, why). */
static int c_members_wait(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  int ticket = (int)luaL_checkinteger(L, 1);
  const char *id = luaL_checkstring(L, 2);
  hubu_session *sess = hubu_session_get(p->core, id);
  parked_members *pm = sess ? calloc(1, sizeof *pm) : NULL;
  if (!pm) return luaL_error(L, "im.members: invalid session id '%s'", id);
  pm->parked.resume = resume_members;
  pm->ticket = ticket;
  hubu_session_park(p->core, sess, &pm->parked);
  return 0;
}

/* C.call_reply(user, conn_id, request_id, code, payload, reason): a CALL's
 * answer, sent if that connection is still there. */
static int c_call_reply(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *user = luaL_checkstring(L, 1);
  uint64_t conn_id = strtoull(luaL_checkstring(L, 2), NULL, 10);
  size_t plen = 0;
  Hubu__V1__CallResult r = HUBU__V1__CALL_RESULT__INIT;
  r.request_id = (uint64_t)luaL_checknumber(L, 3);
  const char *code = luaL_checkstring(L, 4);
  const char *payload = luaL_optlstring(L, 5, "", &plen);
  r.reason = (char *)luaL_optstring(L, 6, "");
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(&hubu__v1__code__descriptor, code);
  r.code = v ? (Hubu__V1__Code)v->value : HUBU__V1__CODE__INTERNAL;
  r.payload.data = (uint8_t *)payload;
  r.payload.len = plen;
  hubu_peer *c = hubu_core_peer_find(p->core, user, conn_id);
  if (c && c->state == HUBU_PEER_READY) hubu_peer_send(c, HUBU_FRAME_CALL_RESULT, &r.base);
  return 0;
}

/* C.hmac(key, data) -> lowercase hex of HMAC-SHA256(key, data). */
static int c_hmac(lua_State *L) {
  size_t klen = 0, dlen = 0;
  const char *key = luaL_checklstring(L, 1, &klen), *data = luaL_checklstring(L, 2, &dlen);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  static const unsigned char empty[1];
  if (!HMAC(EVP_sha256(), klen ? (const void *)key : empty, (int)klen, (const unsigned char *)data, dlen, mac,
            &mac_len))
    return luaL_error(L, "im.hmac_sha256: HMAC failed");
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  for (unsigned int i = 0; i < mac_len; i++) snprintf(hex + 2 * i, 3, "%02x", mac[i]);
  lua_pushlstring(L, hex, 2 * mac_len);
  return 1;
}

/* ---- im.http ---- */

static void on_http_client_closed(void *ud) { hubu_plugins_handle_closed(ud); }

/* Stack: pushes a table of h's "Name: value" lines: lower-case names, a
 * repeated header's values joined with ", ". */
static void push_headers(lua_State *L, const char *h, size_t len) {
  lua_newtable(L);
  const char *end = h + len;
  while (h < end) {
    const char *eol = memchr(h, '\n', (size_t)(end - h));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(h, ':', (size_t)(line_end - h));
    if (colon && colon > h) {
      char name[128];
      size_t n = (size_t)(colon - h) < sizeof name - 1 ? (size_t)(colon - h) : sizeof name - 1;
      for (size_t i = 0; i < n; i++) name[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
      name[n] = '\0';
      const char *v = colon + 1, *ve = line_end;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_getfield(L, -1, name);
      if (lua_isstring(L, -1)) { /* seen before: "a, b" */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_setfield(L, -2, name);
    }
    h = eol ? eol + 1 : end;
  }
}

/* A request finished: host.http_done(ticket, status, body, headers, seconds)
 * or (ticket, nil, "kind: message", nil, seconds). Stack: unchanged. */
static void on_http_done(void *ud, uint64_t id, const hubu_http_result *r) {
  hubu_plugins *p = ud;
  if (!p->L) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushnumber(L, (lua_Number)id);
  if (r->error == HUBU_HTTP_OK) {
    lua_pushnumber(L, (lua_Number)r->status);
    lua_pushlstring(L, (const char *)r->body, r->body_len);
    push_headers(L, r->headers, r->headers_len);
  } else {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", hubu_http_error_name(r->error), r->message);
    lua_pushnil(L);
  }
  lua_pushnumber(L, r->seconds);
  hubu_plugins_call_host(p, "http_done", 5, 0);
  lua_settop(L, top);
}

/* C.http_start(ticket, method, url, header_lines, body, timeout_ms,
 * max_response, redirects, verify, ca_file) -> true, or nil, err (nothing
 * started). host.lua checked every argument; host.http_done answers. */
static int c_http_start(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  uint64_t id = (uint64_t)luaL_checknumber(L, 1);
  hubu_http_request req = {.method = luaL_checkstring(L, 2), .url = luaL_checkstring(L, 3)};
  luaL_checktype(L, 4, LUA_TTABLE);
  req.body = luaL_optlstring(L, 5, NULL, &req.body_len);
  req.timeout_ms = (uint32_t)luaL_checknumber(L, 6);
  req.max_response = (size_t)luaL_checknumber(L, 7);
  req.max_redirects = (uint32_t)luaL_checknumber(L, 8);
  req.verify = lua_toboolean(L, 9);
  req.ca_file = luaL_optstring(L, 10, NULL);
  if (!p->http) {
    if (p->closing || !(p->http = hubu_http_client_new(p->core->loop, on_http_done, p, on_http_client_closed))) {
      lua_pushnil(L);
      lua_pushstring(L, p->closing ? "closing" : "the HTTP client could not start");
      return 2;
    }
    p->open_handles++; /* until the client's last handle closed */
  }
  size_t n = lua_objlen(L, 4);
  const char **lines = calloc(n ? n : 1, sizeof *lines);
  if (!lines) return luaL_error(L, "out of memory");
  for (size_t i = 0; i < n; i++) { /* the strings stay referenced by the table */
    lua_rawgeti(L, 4, (int)i + 1);
    lines[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (!lines[i]) lines[i] = "";
  }
  req.headers = lines;
  req.n_headers = n;
  char err[256];
  int rc = hubu_http_client_start(p->http, id, &req, err, sizeof err);
  free(lines);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* C.http_cancel(ticket) -> whether it was in flight (its answer never comes). */
static int c_http_cancel(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  uint64_t id = (uint64_t)luaL_checknumber(L, 1);
  lua_pushboolean(L, p->http && hubu_http_client_cancel(p->http, id));
  return 1;
}

void hubu_plugins_http_stop(hubu_plugins *p) {
  if (!p->http) return;
  hubu_http_client_close(p->http); /* on_http_client_closed follows */
  p->http = NULL;
}

/* ---- timers ---- */

static void on_timer_closed(uv_handle_t *h) {
  plugin_timer *t = (plugin_timer *)h;
  hubu_plugins *p = t->host;
  free(t);
  hubu_plugins_handle_closed(p);
}

static void timer_destroy(hubu_plugins *p, plugin_timer *t) {
  HASH_DEL(p->timers, t);
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
}

/* Stack: unchanged (host.timer_fired runs the callback under its budget). */
static void on_plugin_timer(uv_timer_t *h) {
  plugin_timer *t = (plugin_timer *)h;
  hubu_plugins *p = t->host;
  int id = t->id;
  if (!t->every) timer_destroy(p, t);
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushinteger(L, id);
  hubu_plugins_call_host(p, "timer_fired", 1, 0);
  lua_settop(L, top);
}

/* C.timer_start(ms, every) -> the timer's id; host.timer_fired(id) when it fires. */
static int c_timer_start(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  lua_Number ms = luaL_checknumber(L, 1);
  int every = lua_toboolean(L, 2);
  if (ms < 1) ms = 1;
  plugin_timer *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "out of memory");
  uv_timer_init(p->core->loop, &t->timer);
  t->host = p;
  t->id = ++p->next_timer_id;
  t->every = every;
  HASH_ADD_INT(p->timers, id, t);
  p->open_handles++;
  uv_timer_start(&t->timer, on_plugin_timer, (uint64_t)ms, every ? (uint64_t)ms : 0);
  lua_pushinteger(L, t->id);
  return 1;
}

/* C.timer_stop(id): stops and forgets a timer (an unknown id: nothing). */
static int c_timer_stop(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  int id = (int)luaL_checkinteger(L, 1);
  plugin_timer *t = NULL;
  HASH_FIND_INT(p->timers, &id, t);
  if (t) timer_destroy(p, t);
  return 0;
}

void hubu_plugins_timers_stop(hubu_plugins *p) {
  while (p->timers) timer_destroy(p, p->timers);
}

const luaL_Reg hubu_plugins_im_lib[] = {
    {"log", c_log},
    {"now", c_now},
    {"send", c_send},
    {"event", c_event},
    {"kick", c_kick},
    {"token", c_token},
    {"token_verify", c_token_verify},
    {"members", c_members},
    {"members_wait", c_members_wait},
    {"config", c_config},
    {"group_op", c_group_op},
    {"kv", c_kv},
    {"call_reply", c_call_reply},
    {"timer_start", c_timer_start},
    {"timer_stop", c_timer_stop},
    {"label_ok", c_label_ok},
    {"hmac", c_hmac},
    {"http_start", c_http_start},
    {"http_cancel", c_http_cancel},
    {"wordset", hubu_wordset_new}, /* wordset.c */
    {NULL, NULL},
};

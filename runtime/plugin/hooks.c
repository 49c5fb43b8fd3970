/* hooks.c — events to handlers: the C entry points of the hooks
 * (message.send, message.route, message.stored, session.read, auth, call,
 * connect, disconnect), core's one dispatch (hubu_plugins_dispatch), and which
 * events have handlers at all, so an event nobody hooks costs nothing.
 * Invariant: each event is one protected call into host.lua, every handler
 * runs under a budget window (opened here around a chain, or by host.lua per
 * handler), and the verdict is read back before the stack is restored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "host_internal.h"
#include "log.h"
#include "messaging.h"
#include "session.h"
#include "token.h"
#include "wire.h"

/* ---- which events have handlers ---- */

/* Does any loaded plugin hook event? Stack: unchanged. */
static int host_has(hubu_plugins *p, const char *event) {
  lua_pushstring(p->L, event);
  hubu_plugins_call_host(p, "has", 1, 1);
  int has = lua_toboolean(p->L, -1);
  lua_pop(p->L, 1);
  return has;
}

/* The session kinds event's handlers want (kind_bit's bits). Stack: unchanged. */
static int kind_mask(hubu_plugins *p, const char *event) {
  lua_pushstring(p->L, event);
  hubu_plugins_call_host(p, "kind_mask", 1, 1);
  int mask = (int)lua_tointeger(p->L, -1);
  lua_pop(p->L, 1);
  return mask;
}

/* The kind bit of a session id, as host.kind_mask counts them. */
static int kind_bit(const char *session_id) {
  if (session_id[0] == 'd' && session_id[1] == ':') return 1;
  if (session_id[0] == 'g' && session_id[1] == ':') return 2;
  return 4;
}

void hubu_plugins_refresh_flags(hubu_plugins *p) {
  p->has_send = (uint8_t)host_has(p, "message.send");
  p->has_stored = (uint8_t)host_has(p, "message.stored");
  p->has_connect = (uint8_t)host_has(p, "connect");
  p->has_disconnect = (uint8_t)host_has(p, "disconnect");
  p->has_route = (uint8_t)host_has(p, "message.route");
  p->has_auth = (uint8_t)host_has(p, "auth");
  p->has_read = (uint8_t)host_has(p, "session.read");
  p->route_kinds = (uint8_t)kind_mask(p, "message.route");
  p->stored_kinds = (uint8_t)kind_mask(p, "message.stored");
  p->send_kinds = (uint8_t)kind_mask(p, "message.send");
}

/* ---- building events, reading verdicts ---- */

/* Stack: a table on top, before and after; sets its field k. */
static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void set_lstr(lua_State *L, const char *k, const void *v, size_t len) {
  lua_pushlstring(L, (const char *)v, len);
  lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

/* Stack: a table on top, before and after; gives it host.lua's metatable name. */
static void set_metatable(hubu_plugins *p, const char *name) {
  lua_State *L = p->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->host_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  lua_setmetatable(L, -2);
}

/* The string field k of the table at idx, or NULL. Stack: unchanged. */
static const char *get_str(lua_State *L, int idx, const char *k, size_t *len) {
  lua_getfield(L, idx, k);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
  lua_pop(L, 1); /* the string stays alive: it is referenced by the event table */
  return s;
}

/* A Code by its name (a verdict's), fallback for a name that is none. */
static Hubu__V1__Code code_by_name(const char *name, Hubu__V1__Code fallback) {
  const ProtobufCEnumValue *v =
      name ? protobuf_c_enum_descriptor_get_value_by_name(&hubu__v1__code__descriptor, name) : NULL;
  return v && v->value != 0 ? (Hubu__V1__Code)v->value : fallback;
}

/* Stack: the event table on top. Runs host.dispatch(event, ev) in one budget
 * window; leaves ev. Returns the failing fail-closed plugin's name (into
 * failed), or 0. */
static int dispatch(hubu_plugins *p, const char *event, char *failed, size_t failed_size) {
  lua_State *L = p->L;
  int evi = lua_gettop(L);
  lua_pushstring(L, event);
  lua_pushvalue(L, evi);
  hubu_plugins_budget_open(p, 0);
  hubu_plugins_call_host(p, "dispatch", 2, 2);
  hubu_plugins_budget_close(p);
  int closed = lua_isstring(L, -2) && !strcmp(lua_tostring(L, -2), "error");
  if (closed) snprintf(failed, failed_size, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
  lua_settop(L, evi);
  return closed;
}

/* ---- the events ---- */

/* Stack: host.send's answer at base..base+3 (what, a, b, c), unchanged.
 * Fills v from it: nothing (every handler let the message through
 * unchanged), "error" (a fail-closed plugin failed), "verdict" (ev:reject)
 * or "rewrite". */
static void read_send_verdict(lua_State *L, int base, hubu_send_verdict *v) {
  memset(v, 0, sizeof *v);
  v->code = HUBU__V1__CODE__OK;
  const char *what = lua_tostring(L, base);
  if (!what) return;
  if (!strcmp(what, "error")) { /* final: a retry would fail the same way */
    v->code = HUBU__V1__CODE__REJECTED;
    snprintf(v->reason, sizeof v->reason, "plugin %s failed",
             lua_tostring(L, base + 1) ? lua_tostring(L, base + 1) : "?");
  } else if (!strcmp(what, "verdict")) {
    const char *reason = lua_tostring(L, base + 2);
    v->code = code_by_name(lua_tostring(L, base + 1), HUBU__V1__CODE__REJECTED);
    snprintf(v->reason, sizeof v->reason, "%s", reason ? reason : "");
    v->retry_after_ms = (uint32_t)lua_tonumber(L, base + 3); /* host.lua checked its range */
  } else if (!strcmp(what, "rewrite")) {
    size_t blen = 0;
    const char *body = lua_tolstring(L, base + 1, &blen), *ctype = lua_tostring(L, base + 2);
    v->rewritten = 1;
    v->body = malloc(blen ? blen : 1);
    v->content_type = strdup(ctype ? ctype : "");
    if (v->body && body) memcpy(v->body, body, blen);
    v->body_len = blen;
    /* meta: the table's string pairs */
    size_t n = 0, cap = 32; /* the SEND limit on meta entries */
    Hubu__V1__Send__MetaEntry *entries = calloc(cap, sizeof *entries), **ptrs = calloc(cap, sizeof *ptrs);
    if (lua_istable(L, base + 3) && entries && ptrs) {
      lua_pushnil(L);
      while (lua_next(L, base + 3) != 0) { /* the strings stay referenced by the table */
        if (n < cap && lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
          hubu__v1__send__meta_entry__init(&entries[n]);
          entries[n].key = (char *)lua_tostring(L, -2);
          entries[n].value = (char *)lua_tostring(L, -1);
          ptrs[n] = &entries[n];
          n++;
        }
        lua_pop(L, 1);
      }
    }
    if (!v->body || !v->content_type || !entries || !ptrs || hubu_msg_pack_meta(n, ptrs, &v->meta, &v->meta_len) != 0) {
      v->code = HUBU__V1__CODE__INTERNAL;
      snprintf(v->reason, sizeof v->reason, "out of memory");
    }
    free(entries);
    free(ptrs);
  }
}

/* The hot path: the SEND's fields go to host.send as arguments (the event
 * table is built there by a table constructor, its keys constants), and the
 * verdict comes back as return values, or "later" when a handler waits
 * (then C.send_verdict brings it). Stack: unchanged. */
static int on_send(hubu_plugins *p, const char *user, const char *device, const char *session_id, uint64_t client_id,
                   uint64_t send_ref, const Hubu__V1__Send *m, hubu_send_verdict *v) {
  memset(v, 0, sizeof *v);
  v->code = HUBU__V1__CODE__OK;
  if (!p || !p->has_send || !(p->send_kinds & kind_bit(session_id))) return 0;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->send_ref);
  lua_pushstring(L, user);
  lua_pushstring(L, device);
  lua_pushstring(L, session_id);
  lua_pushnumber(L, (double)client_id);
  lua_pushlstring(L, (const char *)m->body.data, m->body.len);
  lua_pushstring(L, m->content_type);
  if (m->n_meta) {
    lua_createtable(L, 0, (int)m->n_meta);
    for (size_t i = 0; i < m->n_meta; i++) set_str(L, m->meta[i]->key, m->meta[i]->value);
  } else {
    lua_pushnil(L);
  }
  lua_pushnumber(L, (double)send_ref);
  uint64_t refused = p->mem_refused;
  hubu_plugins_budget_open(p, 0);
  int rc = lua_pcall(L, 8, 4, 0);
  hubu_plugins_budget_close(p);
  if (p->mem_refused != refused) hubu_plugins_memory_full(p, "send");
  if (rc != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_host_failed", "fn=send error=\"%s\"", lua_tostring(L, -1));
    lua_settop(L, top);
    return 0; /* the host itself failed: as if no plugin had spoken */
  }
  const char *what = lua_tostring(L, top + 1);
  int answer = what && !strcmp(what, "later") ? HUBU_HOOK_LATER : 1;
  if (answer == 1) read_send_verdict(L, top + 1, v);
  lua_settop(L, top);
  return answer;
}

/* C.send_verdict(send_ref, what, a, b, c): the verdict of a SEND whose
 * handlers waited (host.send answered "later"), in host.send's form. */
static int c_send_verdict(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  uint64_t send_ref = (uint64_t)luaL_checknumber(L, 1);
  lua_settop(L, 5);
  hubu_send_verdict v;
  read_send_verdict(L, 2, &v);
  hubu_messaging_send_decided(p->core, send_ref, &v);
  return 0;
}

void hubu_plugins_push_stored_event(hubu_plugins *p, const hubu_msg *m, int replayed) {
  lua_State *L = p->L;
  char msg_id[24];
  snprintf(msg_id, sizeof msg_id, "%llu", (unsigned long long)m->msg_id);
  lua_createtable(L, 0, 13);
  set_str(L, "session_id", m->session_id);
  set_num(L, "seq", (double)m->seq);
  set_str(L, "msg_id", msg_id);
  set_str(L, "sender", m->sender);
  set_str(L, "sender_device", m->sender_device);
  set_num(L, "client_id", (double)m->client_id);
  set_lstr(L, "body", m->body, m->body_len);
  set_str(L, "content_type", m->content_type);
  set_num(L, "log_pos", (double)m->log_pos);
  lua_pushboolean(L, replayed);
  lua_setfield(L, -2, "replayed");
  char a[65], b[65];
  if (hubu_session_direct_split(m->session_id, a, b) == 0) { /* the other user of a direct session */
    set_str(L, "kind", "direct");
    set_str(L, "to_user", strcmp(m->sender, a) == 0 ? b : a);
  } else {
    set_str(L, "kind", m->session_id[0] == 'g' && m->session_id[1] == ':' ? "group" : "custom");
  }
  set_metatable(p, "StoredEvent");
}

/* message.stored, live. Stack: unchanged. */
static void on_stored(hubu_plugins *p, const hubu_msg *m, int replayed) {
  if (!p || !p->has_stored || !(p->stored_kinds & kind_bit(m->session_id))) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  hubu_plugins_push_stored_event(p, m, replayed);
  lua_pushnil(L);
  hubu_plugins_call_host(p, "dispatch_stored", 2, 0); /* after the store: nothing to refuse */
  lua_settop(L, top);
}

/* Stack: unchanged; host.run_call answers through C.call_reply. */
void hubu_plugins_on_call(hubu_plugins *p, hubu_peer *c, const Hubu__V1__Call *call) {
  char event[160];
  snprintf(event, sizeof event, "call.%s", call->method);
  if (!p || !call->method[0] || strlen(call->method) > 128 || !host_has(p, event)) {
    Hubu__V1__CallResult r = HUBU__V1__CALL_RESULT__INIT;
    char reason[256];
    r.request_id = call->request_id;
    r.code = HUBU__V1__CODE__NOT_FOUND;
    snprintf(reason, sizeof reason, "no plugin answers %s", call->method);
    r.reason = reason;
    hubu_peer_send(c, HUBU_FRAME_CALL_RESULT, &r.base);
    return;
  }
  lua_State *L = p->L;
  int top = lua_gettop(L);
  char conn_id[24];
  snprintf(conn_id, sizeof conn_id, "%llu", (unsigned long long)c->id);
  lua_pushstring(L, event);
  lua_createtable(L, 0, 8);
  set_str(L, "user", c->user);
  set_str(L, "device", c->device);
  set_str(L, "method", call->method);
  set_lstr(L, "payload", call->payload.data, call->payload.len);
  set_num(L, "request_id", (double)call->request_id);
  set_str(L, "conn_id", conn_id);
  set_metatable(p, "CallEvent");
  hubu_plugins_call_host(p, "run_call", 2, 0); /* answers through C.call_reply, now or after the store */
  lua_settop(L, top);
}

/* message.route: the plan is what the handlers said (all zero when none
 * spoke). Stack: unchanged. */
static int on_route(hubu_plugins *p, const hubu_session *sess, const hubu_msg *m, hubu_route_plan *plan) {
  memset(plan, 0, sizeof *plan);
  if (!p || !p->has_route || !(p->route_kinds & kind_bit(m->session_id))) return 0;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_createtable(L, 0, 10);
  set_str(L, "session_id", m->session_id);
  set_num(L, "seq", (double)m->seq);
  set_str(L, "sender", m->sender);
  set_str(L, "sender_device", m->sender_device);
  set_lstr(L, "body", m->body, m->body_len);
  set_str(L, "content_type", m->content_type);
  set_str(L, "kind",
          sess->kind == HUBU_SESSION_DIRECT  ? "direct"
          : sess->kind == HUBU_SESSION_GROUP ? "group"
                                             : "custom");
  set_num(L, "member_count", sess->kind == HUBU_SESSION_DIRECT ? 2.0 : (double)sess->n_members);
  set_metatable(p, "RouteEvent");
  char failed[128];
  dispatch(p, "message.route", failed, sizeof failed); /* a failure routes as if no plugin had spoken */
  int evi = lua_gettop(L);
  static const char *const names[] = {"push", "hint", "none"};
  const char *def = get_str(L, evi, "_default", NULL);
  for (uint8_t i = 0; def && i < 3; i++)
    if (!strcmp(def, names[i])) plan->default_mode = i;
  lua_getfield(L, evi, "_modes"); /* user -> mode */
  lua_getfield(L, evi, "_extra"); /* user -> true */
  if (lua_istable(L, -2)) {
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) {
      const char *user = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      const char *mode = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
      int mi = -1;
      for (int i = 0; mode && i < 3; i++)
        if (!strcmp(mode, names[i])) mi = i;
      if (user && mi >= 0) {
        if (plan->n == cap) {
          cap = cap ? cap * 2 : 16;
          char **u = realloc(plan->users, cap * sizeof *u);
          uint8_t *md = u ? realloc(plan->modes, cap) : NULL;
          uint8_t *ex = md ? realloc(plan->extra, cap) : NULL;
          if (u) plan->users = u;
          if (md) plan->modes = md;
          if (ex) plan->extra = ex;
          if (!u || !md || !ex) {
            lua_pop(L, 2);
            break;
          }
        }
        plan->extra[plan->n] = 0; /* stack: _modes, _extra, key, value */
        if (lua_istable(L, -3)) {
          lua_pushvalue(L, -2);
          lua_rawget(L, -4);
          plan->extra[plan->n] = (uint8_t)lua_toboolean(L, -1);
          lua_pop(L, 1);
        }
        plan->users[plan->n] = strdup(user);
        plan->modes[plan->n] = (uint8_t)mi;
        if (plan->users[plan->n]) plan->n++;
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  return 1;
}

/* The plugin that reserved user (plugin:reserve_user) into by, or 0 when
 * none did. Stack: unchanged. */
static int reserved_by(hubu_plugins *p, const char *user, char *by, size_t by_size) {
  lua_pushstring(p->L, user);
  hubu_plugins_call_host(p, "reserved_by", 1, 1);
  const char *name = lua_tostring(p->L, -1);
  if (name) snprintf(by, by_size, "%s", name);
  lua_pop(p->L, 1);
  return name != NULL;
}

/* Stack: unchanged. Without an auth hook: -1 (hubud's own token check
 * decides), except for a reserved user, or a reserved token (v1r.), which
 * are checked here (a reserved user needs a reserved token). */
int hubu_plugins_on_auth(hubu_plugins *p, const char *user, const char *device, const char *token,
                         const char *client_info, char *user_out, size_t user_out_size, char *reason,
                         size_t reason_size) {
  if (!p) return -1;
  char by[128];
  int reserved = reserved_by(p, user, by, sizeof by);
  if (!p->has_auth) {
    size_t tlen = strlen(token);
    int reserved_token = tlen > 4 && !memcmp(token, HUBU_TOKEN_RESERVED_PREFIX, 4);
    if (!reserved && !reserved_token) return -1;
    snprintf(user_out, user_out_size, "%s", user);
    hubu_token_status st = reserved_token ? hubu_token_verify_reserved(p->cfg.secret, p->cfg.secret_len, token, tlen,
                                                                       user, hubu_now_ms() / 1000)
                                          : HUBU_TOKEN_MALFORMED;
    if (st == HUBU_TOKEN_OK) return 1;
    if (reserved && !reserved_token)
      snprintf(reason, reason_size, "user %s is reserved by plugin %s: log in with a reserved token", user, by);
    else
      snprintf(reason, reason_size, "%s", st == HUBU_TOKEN_EXPIRED ? "token expired" : "invalid token");
    return 0;
  }
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_createtable(L, 0, 6);
  set_str(L, "user", user);
  set_str(L, "device", device);
  set_str(L, "token", token);
  set_str(L, "client_info", client_info);
  if (reserved) set_str(L, "reserved", by);
  set_metatable(p, "AuthEvent");
  char failed[128];
  int accepted = 0;
  snprintf(reason, reason_size, "invalid token");
  snprintf(user_out, user_out_size, "%s", user);
  if (dispatch(p, "auth", failed, sizeof failed)) {
    snprintf(reason, reason_size, "authentication unavailable");
  } else {
    int evi = lua_gettop(L);
    const char *verdict = get_str(L, evi, "_verdict", NULL);
    if (verdict && !strcmp(verdict, "accept")) {
      const char *as = get_str(L, evi, "_as", NULL);
      if (as && hubu_id_valid(as, strlen(as))) snprintf(user_out, user_out_size, "%s", as);
      accepted = 1;
    } else if (verdict) {
      const char *why = get_str(L, evi, "_reason", NULL);
      if (why && *why) snprintf(reason, reason_size, "%s", why);
    }
  }
  lua_settop(L, top);
  return accepted;
}

/* session.read: 1 allowed, 0 forbidden (reason). Stack: unchanged. */
static int on_read(hubu_plugins *p, const char *user, const char *session_id, const char *op, char *reason,
                   size_t reason_size) {
  if (!p || !p->has_read) return 1;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_createtable(L, 0, 4);
  set_str(L, "user", user);
  set_str(L, "session_id", session_id);
  set_str(L, "op", op);
  set_str(L, "kind", kind_bit(session_id) == 1 ? "direct" : kind_bit(session_id) == 2 ? "group" : "custom");
  set_metatable(p, "ReadEvent");
  char failed[128];
  int allowed = 1;
  if (dispatch(p, "session.read", failed, sizeof failed)) {
    allowed = 0;
    snprintf(reason, reason_size, "plugin %s failed", failed);
  } else if (get_str(L, lua_gettop(L), "_forbid", NULL)) {
    allowed = 0;
    const char *why = get_str(L, lua_gettop(L), "_forbid", NULL);
    snprintf(reason, reason_size, "%s", why);
  }
  lua_settop(L, top);
  return allowed;
}

/* connect (connected 1) and disconnect. Stack: unchanged. */
static void on_connect(hubu_plugins *p, hubu_peer *c, int connected) {
  if (!p || !(connected ? p->has_connect : p->has_disconnect)) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  char conn_id[24];
  snprintf(conn_id, sizeof conn_id, "%llu", (unsigned long long)c->id);
  lua_createtable(L, 0, 4);
  set_str(L, "user", c->user);
  set_str(L, "device", c->device);
  set_str(L, "conn_id", conn_id);
  set_metatable(p, "ConnectEvent");
  lua_pushstring(L, connected ? "connect" : "disconnect");
  lua_insert(L, -2);
  hubu_plugins_budget_open(p, 0);
  hubu_plugins_call_host(p, "dispatch_plain", 2, 0); /* its handlers may wait */
  hubu_plugins_budget_close(p);
  lua_settop(L, top);
}

void hubu_plugins_group_changed(hubu_plugins *p, const char *op, const char *group, const char *const *users,
                                size_t n_users, const char *by) {
  if (!p || !p->L) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushstring(L, op);
  lua_pushstring(L, group);
  lua_createtable(L, (int)n_users, 0);
  for (size_t i = 0; i < n_users; i++) {
    lua_pushstring(L, users[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  lua_pushstring(L, by);
  hubu_plugins_call_host(p, "group_changed", 4, 0); /* its handlers may wait */
  lua_settop(L, top);
}

/* ---- core's hook dispatch ---- */

int hubu_plugins_dispatch(void *host, hubu_hook_call *call) {
  hubu_plugins *p = host;
  switch (call->event) {
    case HUBU_HOOK_CONNECT: on_connect(p, call->peer, 1); return 1;
    case HUBU_HOOK_DISCONNECT: on_connect(p, call->peer, 0); return 1;
    case HUBU_HOOK_SEND:
      return on_send(p, call->user, call->device, call->session_id, call->client_id, call->send_ref, call->send,
                     &call->verdict);
    case HUBU_HOOK_ROUTE: return on_route(p, call->session, call->msg, &call->plan);
    case HUBU_HOOK_STORED: on_stored(p, call->msg, call->replayed); return 1;
    case HUBU_HOOK_READ:
      call->allowed = on_read(p, call->user, call->session_id, call->op, call->reason, sizeof call->reason);
      return 1;
  }
  return 0;
}

const luaL_Reg hubu_plugins_hooks_lib[] = {
    {"send_verdict", c_send_verdict},
    {NULL, NULL},
};

/* replay.c — message.stored never misses a message: each plugin's position
 * in the store's log (saved about once a second and at shutdown), and the
 * replay of what was stored after it, at start and when a plugin comes back
 * while hubud runs, marked replayed, in log order.
 * Invariant: a plugin's saved position moves only past messages it was handed;
 * a replay that fails leaves it where the replay got to, for the next start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_internal.h"
#include "log.h"
#include "store.h"

#define STORED_CURSORS "hubud:stored" /* the kv namespace of the positions (not a plugin name) */

/* The kv namespace of this node's positions. In cluster mode each node keeps
 * its own, "hubud:stored@N", and replays only the messages it stored itself
 * (the node in their msg_id): message.stored runs once per message, on the
 * node that stored it. */
static const char *cursor_namespace(const hubu_core *core, char *buf, size_t size) {
  if (!core->cfg.cluster) return STORED_CURSORS;
  snprintf(buf, size, "%s@%u", STORED_CURSORS, core->cfg.node_id);
  return buf;
}

/* Whether m was stored by this node (every message is, on one node). */
static int stored_here(const hubu_core *core, const hubu_msg *m) {
  return !core->cfg.cluster || ((m->msg_id >> 12) & 1023) == (core->cfg.node_id & 1023);
}
#define REPLAY_BATCH 200

/* A position saved (or not: the next save tries again with a newer one). */
static void on_cursor_saved(hubu_store_op *op) {
  if (op->status != HUBU_STORE_OK)
    hubu_log(HUBU_LOG_WARN, 0, NULL, "stored_cursor_save_failed", "plugin=%s error=\"%s\"", op->kv.key, op->error);
  hubu_store_op_free(op);
}

/* The positions that moved since the last save, one kv write each.
 * Stack: unchanged. */
void hubu_plugins_save_cursors(hubu_plugins *p) {
  if (!p || !p->L || !p->core->store) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  hubu_plugins_call_host(p, "take_dirty_cursors", 0, 1);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      char value[24];
      snprintf(value, sizeof value, "%.0f", lua_tonumber(L, -1));
      hubu_store_op *op = hubu_store_op_new(HUBU_STORE_KV_SET);
      if (op && (op->kv.key = strdup(lua_tostring(L, -2))) && (op->kv.value = (uint8_t *)strdup(value))) {
        op->kv.value_len = strlen(value);
        char ns[64];
        snprintf(op->kv.plugin, sizeof op->kv.plugin, "%s", cursor_namespace(p->core, ns, sizeof ns));
        op->done = on_cursor_saved;
        hubu_store_submit(p->core->store, op);
      } else {
        hubu_store_op_free(op);
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
}

static void replay_read(hubu_core *s, const char *plugin, uint64_t gen, uint64_t after, uint64_t target);

/* Is replay gen of plugin still the one under way (and the plugin loaded)?
 * Stack: unchanged. */
static int replay_current(hubu_plugins *p, const char *plugin, uint64_t gen) {
  lua_pushstring(p->L, plugin);
  lua_pushnumber(p->L, (double)gen);
  hubu_plugins_call_host(p, "replay_current", 2, 1);
  int current = lua_toboolean(p->L, -1);
  lua_pop(p->L, 1);
  return current;
}

/* One batch of a replay. A failure leaves the replay unfinished on purpose:
 * the plugin's saved position stays where the replay got to (live messages
 * do not move it on), so a restart hands over the rest. Stack: unchanged. */
static void on_replay_read(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = hubu_plugins_of_core(s);
  uint64_t gen = op->conn_id;
  uint64_t target = op->request_id ? op->request_id : op->log_read.max_pos; /* the end: the log as the replay began */
  uint64_t last = op->log_read.after_pos;
  if (!p || !p->L) {
    /* hubud is closing */
  } else if (!replay_current(p, op->log_read.plugin, gen)) {
    hubu_log(HUBU_LOG_INFO, 0, NULL, "stored_replay_stopped", "plugin=%s at=%llu why=\"unloaded or replayed anew\"",
             op->log_read.plugin, (unsigned long long)last);
  } else if (op->status != HUBU_STORE_OK) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "stored_replay_failed", "plugin=%s at=%llu error=\"%s\"", op->log_read.plugin,
             (unsigned long long)last, op->error);
    lua_pushstring(p->L, op->log_read.plugin); /* a catch-up tries again; a replay at start waits for a restart */
    lua_pushnumber(p->L, (double)gen);
    lua_pushnumber(p->L, (double)last);
    hubu_plugins_call_host(p, "replay_failed", 3, 0);
  } else {
    lua_State *L = p->L;
    int top = lua_gettop(L), full = 0;
    for (size_t i = 0; i < op->log_read.n_msgs && op->log_read.msgs[i]->log_pos <= target; i++) {
      if (!stored_here(s, op->log_read.msgs[i])) { /* another node's: its own message.stored ran there */
        last = op->log_read.msgs[i]->log_pos;
        continue;
      }
      hubu_plugins_push_stored_event(p, op->log_read.msgs[i], 1);
      lua_pushstring(L, op->log_read.plugin);
      hubu_plugins_call_host(p, "dispatch_stored", 2, 1);
      full = lua_isstring(L, -1); /* "full": too many of its handlers wait; it catches up later */
      lua_settop(L, top);
      if (full) break;
      last = op->log_read.msgs[i]->log_pos;
    }
    if (full) {
      hubu_log(HUBU_LOG_INFO, 0, NULL, "stored_replay_paused", "plugin=%s at=%llu", op->log_read.plugin,
               (unsigned long long)last);
    } else if (op->log_read.has_more && last < target) {
      replay_read(s, op->log_read.plugin, gen, last, target);
    } else {
      hubu_log(HUBU_LOG_INFO, 0, NULL, "stored_replayed", "plugin=%s up_to=%llu", op->log_read.plugin,
               (unsigned long long)last);
      lua_pushstring(L, op->log_read.plugin);
      lua_pushnumber(L, (double)gen);
      lua_pushnumber(L, (double)last);
      hubu_plugins_call_host(p, "replay_end", 3, 0);
    }
  }
  hubu_store_op_free(op);
}

/* Reads the next batch of the log after after, up to target (0: the log's
 * end as this first read finds it). */
static void replay_read(hubu_core *s, const char *plugin, uint64_t gen, uint64_t after, uint64_t target) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_LOG_READ);
  if (!op || !(op->log_read.plugin = strdup(plugin))) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory",
             "where=stored_replay plugin=%s msg=\"the rest is handed over after a restart\"", plugin);
    hubu_store_op_free(op);
    return;
  }
  op->log_read.after_pos = after;
  op->log_read.limit = REPLAY_BATCH;
  op->request_id = target;
  op->conn_id = gen;
  op->done = on_replay_read;
  op->ud2 = s;
  hubu_store_submit(s->store, op);
}

/* A plugin's saved position: what came after it is handed over again
 * (replay_begin, then batches of the log until its end as the replay began);
 * with none saved, the plugin starts from the present (replay_end lets the
 * live positions kept aside meanwhile count). Stack: unchanged. */
static void on_cursor_loaded(hubu_store_op *op) {
  hubu_core *s = op->ud2;
  hubu_plugins *p = hubu_plugins_of_core(s);
  if (p && p->L && op->status == HUBU_STORE_OK) {
    char value[24];
    size_t n = op->kv.value_len < sizeof value - 1 ? op->kv.value_len : sizeof value - 1;
    memcpy(value, op->kv.value, n);
    value[n] = '\0';
    uint64_t pos = strtoull(value, NULL, 10);
    lua_pushstring(p->L, op->kv.key);
    lua_pushnumber(p->L, (double)pos);
    hubu_plugins_call_host(p, "replay_begin", 2, 1);
    uint64_t gen = (uint64_t)lua_tonumber(p->L, -1);
    lua_pop(p->L, 1);
    if (gen) replay_read(s, op->kv.key, gen, pos, 0);           /* 0: the plugin went meanwhile */
  } else if (p && p->L && op->status == HUBU_STORE_NOT_FOUND) { /* none saved: from the present */
    lua_pushstring(p->L, op->kv.key);
    hubu_plugins_call_host(p, "replay_end", 1, 0);
  } else if (p && p->L) { /* its position stays frozen (live messages do not move it): a restart tries again */
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "stored_replay_failed",
             "plugin=%s error=\"%s\" msg=\"the position could not be read; replayed after a restart\"", op->kv.key,
             op->error);
  }
  hubu_store_op_free(op);
}

/* Stack: unchanged. */
void hubu_plugins_replay_plugin(hubu_plugins *p, const char *name) {
  hubu_store_op *op = hubu_store_op_new(HUBU_STORE_KV_GET);
  if (!op || !(op->kv.key = strdup(name))) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=stored_cursor plugin=%s", name);
    hubu_store_op_free(op);
    lua_pushstring(p->L, name); /* no replay: from the present */
    hubu_plugins_call_host(p, "replay_end", 1, 0);
    return;
  }
  char ns[64];
  snprintf(op->kv.plugin, sizeof op->kv.plugin, "%s", cursor_namespace(p->core, ns, sizeof ns));
  op->done = on_cursor_loaded;
  op->ud2 = p->core;
  hubu_store_submit(p->core->store, op);
}

/* At start: every plugin that hooks message.stored reads its position. From
 * then on a plugin that arrives at run time (a new file, one that comes back,
 * or one whose first version failed to load) reads its own when it loads.
 * Stack: unchanged. */
void hubu_plugins_start_replay(hubu_plugins *p) {
  if (!p || !p->L) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  p->replay_started = 1;
  hubu_plugins_call_host(p, "stored_plugins", 0, 1);
  size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    hubu_plugins_replay_plugin(p, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

/* C.replay_from(plugin, gen, after): replay gen hands plugin the log's
 * messages after position after, up to the log's end as it begins (a
 * plugin that fell behind catches up so); host.replay_end follows. */
static int c_replay_from(lua_State *L) {
  hubu_plugins *p = hubu_plugins_of_lua(L);
  const char *plugin = luaL_checkstring(L, 1);
  uint64_t gen = (uint64_t)luaL_checknumber(L, 2), after = (uint64_t)luaL_checknumber(L, 3);
  if (p->core->store) replay_read(p->core, plugin, gen, after, 0);
  return 0;
}

const luaL_Reg hubu_plugins_replay_lib[] = {
    {"replay_from", c_replay_from},
    {NULL, NULL},
};

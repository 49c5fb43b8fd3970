-- host.lua — the plugin host's Lua half, run once in hubud's LuaJIT state.
-- It loads plugins into their own environments, keeps the hook registry in
-- priority order, and dispatches events with one protected call per handler.
-- Invariant: a plugin is swapped in only after its new version loaded and
-- initialised cleanly; on any failure the old version keeps running.
-- C, the C side: 23 functions (host.c hands them over; hubu-bench hooks, stand-ins
-- from tools/bench_hooks.c):
--   im.c      log, now, send, event, kick, token, token_verify, members, members_wait, config,
--             group_op, kv, call_reply, timer_start, timer_stop, label_ok, wordset (wordset.c)
--   budget.c  budget_start, budget_stop, budget_renew, budget_reset, budget_ms, clock
-- The C side calls back: load, unload, note_failure, has, kind_mask, send, dispatch,
-- dispatch_stored, run_call, complete, timer_fired, list, metric_families,
-- take_dirty_cursors, stored_plugins, replay_begin, replay_current, replay_end.
local C = ...
local host = {}

local plugins = {}      -- name -> plugin record
local order = 0         -- load order: ties between equal priorities
local hooks = {}        -- event -> array of {fn, priority, order, plugin}
local loading = nil     -- the plugin whose chunk is running now (actions are refused)
local shared = {}       -- plugin name -> name -> table (survives reload, not restart)
local metrics = {}      -- plugin name -> {calls, errors, ns}
local failures = {}     -- plugin name -> {error, at, path}: its newest version failed to load
local published = {}    -- plugin name -> metric name -> im.counter/im.gauge object (dropped on unload)
local SendEvent = {}    -- the metatable of message.send events (methods below)
local stored_pos = {}    -- plugin -> message.stored log position handled
local stored_dirty = {}  -- plugin -> true while not saved
local catching_up = {}   -- plugin -> highest live position seen while it replays
local replays = {}       -- plugin -> generation of its replay under way
local replay_count = 0

local function log(level, plugin, event, msg)
  C.log(level, plugin and plugin.name or "-", event, msg)
end

-- Sorted by priority (higher first), then load order: never by table iteration.
local function resort(event)
  local list = hooks[event]
  table.sort(list, function(a, b)
    if a.priority ~= b.priority then return a.priority > b.priority end
    return a.order < b.order
  end)
end

local function remove_hooks(p)
  for event, list in pairs(hooks) do
    for i = #list, 1, -1 do
      if list[i].plugin == p then table.remove(list, i) end
    end
    if #list == 0 then hooks[event] = nil end
  end
  for _, t in pairs(p.timers) do C.timer_stop(t); host.forget_timer(t) end
  p.timers = {}
end

-- `--% key: value` lines at the top of a plugin, read before its code runs.
local function read_header(src)
  local h = {}
  for line in src:gmatch("[^\n]*") do
    local k, v = line:match("^%-%-%%%s*([%w_]+)%s*:%s*(.-)%s*$")
    if k then h[k] = v elseif line ~= "" and not line:match("^%-%-") then break end
  end
  return h
end

-- The `plugin` object a plugin's code sees.
local function make_api(p, config)
  local api = { name = p.name }
  -- opts: a priority, or { priority = n, kinds = { "group", ... } } (message.route
  -- and message.stored: the handler only sees those session kinds, and a
  -- message no handler wants is not even turned into an event)
  function api:hook(event, fn, opts)
    assert(type(event) == "string", "plugin:hook(event, fn [, opts]): event must be a string")
    assert(type(fn) == "function", "plugin:hook: fn must be a function")
    local priority, kinds = opts, nil
    if type(opts) == "table" then
      priority = opts.priority
      if opts.kinds then
        kinds = {}
        for _, k in ipairs(opts.kinds) do
          assert(k == "direct" or k == "group" or k == "custom", "plugin:hook: kinds are direct, group, custom")
          kinds[k] = true
        end
      end
    end
    p.pending_hooks[#p.pending_hooks + 1] = { event = event, fn = fn, priority = tonumber(priority) or p.priority,
                                              kinds = kinds }
  end
  local function option(name, default, check)
    local v = config[name]
    if v == nil then return default end
    local ok, err = check(v)
    if not ok then error(("option %s: %s"):format(name, err), 3) end
    return v
  end
  function api:option_string(name, default)
    return option(name, default, function(v) return type(v) == "string", "must be a string" end)
  end
  function api:option_number(name, default, min, max)
    return option(name, default, function(v)
      if type(v) ~= "number" then return false, "must be a number" end
      if (min and v < min) or (max and v > max) then return false, ("must be within [%s, %s]"):format(min or "", max or "") end
      return true
    end)
  end
  function api:option_boolean(name, default)
    return option(name, default, function(v) return type(v) == "boolean", "must be true or false" end)
  end
  function api:option_list(name, default)
    return option(name, default, function(v) return type(v) == "table", "must be a list" end)
  end
  function api:shared(name)
    local mine = shared[p.name] or {}
    shared[p.name] = mine
    mine[name] = mine[name] or {}
    return mine[name]
  end
  function api:every(seconds, fn) p.pending_timers[#p.pending_timers + 1] = { every = true, s = seconds, fn = fn } end
  function api:after(seconds, fn) p.pending_timers[#p.pending_timers + 1] = { every = false, s = seconds, fn = fn } end
  return api
end

local sandbox_globals = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring", "type", "unpack",
  "xpcall", "rawget", "rawset", "rawequal", "setmetatable", "getmetatable", "string", "table", "math", "os",
  "bit", "coroutine", "print", "require", "jit",
}

-- `require` of a folder plugin (DIR/NAME/init.lua): a module of its own
-- folder first, `require "mod"` -> NAME/mod.lua (or NAME/mod/init.lua; dots
-- are directories), run in the plugin's environment and cached in this
-- version of the plugin only (never in package.loaded), so each load reads
-- them fresh; any other name goes to the global require (cjson...).
local function folder_require(p, env)
  local loaded, busy = {}, {}
  return function(modname)
    if type(modname) ~= "string" then return require(modname) end
    local v = loaded[modname]
    if v ~= nil then return v end
    if busy[modname] then error(("loop requiring module '%s' in plugin %s"):format(modname, p.name), 2) end
    local path, f
    if modname:find("^[%w_%-]+[%w_%-%.]*$") and not modname:find("..", 1, true) then
      local rel = modname:gsub("%.", "/")
      for _, cand in ipairs({ p.dir .. "/" .. rel .. ".lua", p.dir .. "/" .. rel .. "/init.lua" }) do
        f = io.open(cand, "rb")
        if f then path = cand; break end
      end
    end
    if not f then return require(modname) end
    local src = f:read("*a")
    f:close()
    local chunk, err = loadstring(src or "", "@" .. path)
    if not chunk then error(err, 2) end
    if p.header.jit ~= "on" then jit.off(chunk, true) end
    setfenv(chunk, env)
    busy[modname] = true
    local ok, res = pcall(chunk, modname)
    busy[modname] = nil
    if not ok then error(res, 0) end
    if res == nil then res = true end
    loaded[modname] = res
    return res
  end
end

local function make_env(p, api)
  local env = { plugin = api, im = host.im, _PLUGIN = p.name }
  for _, k in ipairs(sandbox_globals) do env[k] = _G[k] end
  env.print = function(...)
    local t = {}
    for i = 1, select("#", ...) do t[#t + 1] = tostring((select(i, ...))) end
    log("info", p, "plugin_print", table.concat(t, "\t"))
  end
  env._G = env
  if p.dir then env.require = folder_require(p, env) end
  return env
end

-- Builds a plugin from its source; returns the record or nil, error.
local function build(name, path, src, config)
  local header = read_header(src)
  local p = {
    name = name, path = path, header = header, timers = {}, pending_hooks = {}, pending_timers = {},
    priority = tonumber(header.priority) or 0,
    policy = header.failure == "closed" and "closed" or "open",
    version = header.version or "", summary = header.summary or "",
    pending_metrics = {}, pending_help = {}, -- name -> im.counter/im.gauge object (and help) this version declared
  }
  if path:sub(-(#name + 10)) == "/" .. name .. "/init.lua" then p.dir = path:sub(1, -10) end -- a folder plugin
  if header.budget then -- ms per hook call, instead of the server's --plugin-budget-ms
    local ms = tonumber(header.budget)
    if not ms or ms < 1 or ms > 60000 or ms % 1 ~= 0 then
      return nil, ("%s: header budget: %q is not a whole number of ms from 1 to 60000"):format(path, header.budget), p
    end
    p.budget = ms
  end
  local chunk, err = loadstring(src, "@" .. path)
  if not chunk then return nil, err, p end
  if header.jit ~= "on" then jit.off(chunk, true) end -- interruptible by the budget hook
  local api = make_api(p, config or {})
  p.api = api
  setfenv(chunk, make_env(p, api))
  loading = p
  C.budget_start(p.budget)
  local ok, lerr = xpcall(chunk, debug.traceback)
  C.budget_stop()
  loading = nil
  if not ok then return nil, lerr, p end
  return p
end

local function install(p, old)
  if old then
    local state
    if type(old.api.save) == "function" then
      C.budget_start(old.budget)
      local ok, s = pcall(old.api.save)
      C.budget_stop()
      if ok then state = s else log("warn", old, "plugin_save_failed", tostring(s)) end
    end
    remove_hooks(old)
    if type(p.api.restore) == "function" and state ~= nil then
      C.budget_start(p.budget)
      local ok, err = pcall(p.api.restore, state)
      C.budget_stop()
      if not ok then log("warn", p, "plugin_restore_failed", tostring(err)) end
    end
  end
  order = order + 1
  for _, h in ipairs(p.pending_hooks) do
    hooks[h.event] = hooks[h.event] or {}
    local list = hooks[h.event]
    list[#list + 1] = { fn = h.fn, priority = h.priority, order = order, plugin = p, kinds = h.kinds }
    resort(h.event)
  end
  for _, t in ipairs(p.pending_timers) do host.start_timer(p, t.every, t.s, t.fn) end
  p.pending_hooks, p.pending_timers = nil, nil
  local mine = published[p.name] or {}
  for k, m in pairs(p.pending_metrics) do mine[k], m.help = m, p.pending_help[k] or m.help end
  published[p.name], p.pending_metrics, p.pending_help = mine, nil, nil
  p.loaded_at, p.reloads = C.now() / 1000, old and (old.reloads or 0) + 1 or 0
  failures[p.name] = nil
  plugins[p.name] = p
  metrics[p.name] = metrics[p.name] or { calls = 0, errors = 0, seconds = 0 }
end

-- Records that the newest version of name failed to load (listed by host.list
-- until a version loads or the plugin is unloaded), with what its header says
-- when it could be read (partial); returns false, err.
function host.note_failure(name, path, err, partial)
  failures[name] = { error = tostring(err), at = C.now() / 1000, path = path,
                     version = partial and partial.version, summary = partial and partial.summary,
                     policy = partial and partial.policy }
  return false, tostring(err)
end

-- Loads (or reloads) one plugin from path. Returns true, nil, resume or false
-- and the error. resume: no version of it was running and it hooks
-- message.stored, so C reads its saved log position next (host.replay_begin
-- or host.replay_end follows); until then its live positions are kept aside.
function host.load(name, path, config)
  local t0 = os.clock()
  local f, ferr = io.open(path, "rb")
  if not f then return host.note_failure(name, path, ferr) end
  local src = f:read("*a")
  f:close()
  if not src or not src:find("%S") then -- a file caught half-written, or emptied
    log("error", { name = name }, "plugin_load_failed", "empty plugin file; keeping what runs")
    return host.note_failure(name, path, "empty plugin file")
  end
  local p, err, partial = build(name, path, src, config)
  if not p then
    log("error", partial or { name = name }, "plugin_load_failed", tostring(err))
    return host.note_failure(name, path, err, partial)
  end
  local old = plugins[name]
  local resume = false
  if not old then
    for _, h in ipairs(p.pending_hooks) do resume = resume or h.event == "message.stored" end
  end
  install(p, old)
  if resume then catching_up[name] = catching_up[name] or 0 end
  log("info", p, old and "plugin_reloaded" or "plugin_loaded",
      ("path=%s hooks=%d took_ms=%.2f"):format(path, host.count_hooks(p), (os.clock() - t0) * 1000))
  return true, nil, resume
end

function host.unload(name)
  local p = plugins[name]
  failures[name], published[name] = nil, nil -- its metrics are no longer exported
  catching_up[name], replays[name] = nil, nil -- a replay under way stops: it resumes when the plugin comes back
  if not p then return false end
  remove_hooks(p)
  plugins[name] = nil
  log("info", p, "plugin_unloaded", "")
  return true
end

function host.count_hooks(p)
  local n = 0
  for _, list in pairs(hooks) do for _, h in ipairs(list) do if h.plugin == p then n = n + 1 end end end
  return n
end

-- The running plugins, by name: what GET /v1/admin/plugins lists and /metrics
-- counts. hooks is a list of {event, count} in event order; reload_error is
-- {error, at} when the newest version failed to load (this one still runs).
-- Second result: the plugins whose load failed with no version running.
function host.list()
  local out, by_plugin = {}, {}
  for event, list in pairs(hooks) do
    for _, h in ipairs(list) do
      local counts = by_plugin[h.plugin] or {}
      by_plugin[h.plugin] = counts
      counts[event] = (counts[event] or 0) + 1
    end
  end
  for name, p in pairs(plugins) do
    local m = metrics[name]
    local hooked, ntimers = {}, 0
    for event, n in pairs(by_plugin[p] or {}) do hooked[#hooked + 1] = { event = event, count = n } end
    table.sort(hooked, function(a, b) return a.event < b.event end)
    for _ in pairs(p.timers) do ntimers = ntimers + 1 end
    out[#out + 1] = { name = name, version = p.version, summary = p.summary, policy = p.policy,
                      calls = m.calls, errors = m.errors, seconds = m.seconds, path = p.path,
                      priority = p.priority, budget_ms = p.budget or C.budget_ms(), folder = p.dir ~= nil, loaded_at = p.loaded_at, reloads = p.reloads,
                      hooks = hooked, timers = ntimers, reload_error = failures[name] }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  local failed = {}
  for name, f in pairs(failures) do
    if not plugins[name] then
      failed[#failed + 1] = { name = name, path = f.path, error = f.error, at = f.at,
                              version = f.version, summary = f.summary, policy = f.policy }
    end
  end
  table.sort(failed, function(a, b) return a.name < b.name end)
  return out, failed
end

function host.has(event) return hooks[event] ~= nil end

-- Which session kinds some handler of event wants: bit 1 direct, 2 group, 4 custom.
function host.kind_mask(event)
  local mask = 0
  for _, h in ipairs(hooks[event] or {}) do
    if not h.kinds then return 7 end
    if h.kinds.direct then mask = bit.bor(mask, 1) end
    if h.kinds.group then mask = bit.bor(mask, 2) end
    if h.kinds.custom then mask = bit.bor(mask, 4) end
  end
  return mask
end

-- Runs every handler of event with ev, in order, each in its own protected
-- call. Returns "error" with the failing plugin when a fail-closed plugin raised.
-- The caller holds the budget window (C opens it around its call into the
-- host, a call.<method> coroutine's step() around each resume); each handler
-- starts with its plugin's whole budget.
function host.dispatch(event, ev)
  local list = hooks[event]
  if not list then return nil end
  local kind = rawget(ev, "kind")
  for i = 1, #list do
    local h = list[i]
    if not h.kinds or h.kinds[kind] then
      local m = h.metrics
      if not m then m = metrics[h.plugin.name]; h.metrics = m end
      local calls = m.calls + 1
      m.calls = calls
      host.current = h.plugin
      C.budget_renew(h.plugin.budget)
      local t0 = calls % 16 == 1 and C.clock() or nil -- time is sampled: 1 call in 16
      local ok, err = xpcall(h.fn, debug.traceback, ev)
      if t0 then m.seconds = m.seconds + (C.clock() - t0) * 16 end
      host.current = nil
      if not ok then
        m.errors = m.errors + 1
        log("error", h.plugin, "hook_failed", ("hook=%s policy=%s error=%q"):format(event, h.plugin.policy, tostring(err)))
        if h.plugin.policy == "closed" then return "error", h.plugin.name end
      end
      if rawget(ev, "_stop") then break end
    end
  end
  return nil
end

-- message.send, called by C with the SEND's fields (meta: a table, or nil when
-- the SEND has none; ev.meta is then made on first use). Returns nothing when
-- every handler let the message through unchanged; else one of
--   "error", plugin                        a fail-closed plugin raised
--   "verdict", code, reason, retry_after   ev:reject(code, reason[, retry_after_ms])
--   "rewrite", body, content_type, meta    ev:rewrite{...}
function host.send(user, device, session_id, client_id, body, content_type, meta)
  local ev = setmetatable({ user = user, device = device, session_id = session_id, client_id = client_id,
                            body = body, content_type = content_type, meta = meta }, SendEvent)
  local failed, name = host.dispatch("message.send", ev)
  if failed then return "error", name end
  local verdict = rawget(ev, "_verdict")
  if verdict then return "verdict", verdict, rawget(ev, "_reason"), rawget(ev, "_retry_after") end
  if rawget(ev, "_rewritten") then return "rewrite", rawget(ev, "body"), rawget(ev, "content_type"), rawget(ev, "meta") end
end

-- message.stored from the store's log: each plugin's position (the last
-- message its handlers were given) is saved by C about once a second; after a
-- restart, or when a plugin comes back, the messages past it are given again,
-- marked replayed (stored_pos and friends, declared at the top).

function host.dispatch_stored(ev, only)
  local list = hooks["message.stored"]
  if not list then return end
  local pos = ev.log_pos
  for i = 1, #list do
    local h = list[i]
    local name = h.plugin.name
    if (not only or name == only) and (not h.kinds or h.kinds[ev.kind]) then
      local m = metrics[name]
      local calls = m.calls + 1
      m.calls = calls
      host.current = h.plugin
      C.budget_start(h.plugin.budget)
      local t0 = calls % 16 == 1 and C.clock() or nil
      local ok, err = xpcall(h.fn, debug.traceback, ev)
      if t0 then m.seconds = m.seconds + (C.clock() - t0) * 16 end
      C.budget_stop()
      host.current = nil
      if not ok then -- at least once, not until it succeeds: a failing handler is not called again
        m.errors = m.errors + 1
        log("error", h.plugin, "hook_failed", ("hook=message.stored error=%q"):format(tostring(err)))
      end
      if pos and pos > 0 then
        if only or not catching_up[name] then
          if pos > (stored_pos[name] or 0) then stored_pos[name], stored_dirty[name] = pos, true end
        elseif pos > catching_up[name] then
          catching_up[name] = pos -- saved once the replay is done
        end
      end
    end
    if rawget(ev, "_stop") then break end
  end
end

function host.stored_plugins()
  local out, seen = {}, {}
  for _, h in ipairs(hooks["message.stored"] or {}) do
    if not seen[h.plugin.name] then seen[h.plugin.name] = true; out[#out + 1] = h.plugin.name end
  end
  return out
end

-- A replay hands name's messages from pos on to it again, in batches C reads
-- from the store; it is known by the generation this returns (0: the plugin
-- is gone, no replay). A newer replay of the same plugin, or its unload,
-- makes an older one stale: C stops reading it.
function host.replay_begin(name, pos)
  if not plugins[name] then return 0 end
  if pos > (stored_pos[name] or 0) then stored_pos[name] = pos end
  catching_up[name] = catching_up[name] or 0
  replay_count = replay_count + 1
  replays[name] = replay_count
  return replay_count
end

function host.replay_current(name, gen)
  return plugins[name] ~= nil and replays[name] == gen
end

-- The replay gen of name reached the end of the log as it began (gen nil:
-- no position was saved, there was nothing to replay): the live positions
-- kept aside meanwhile count from now on.
function host.replay_end(name, gen)
  if replays[name] ~= gen then return end -- stale, or a replay under way that this is not
  replays[name] = nil
  local live = catching_up[name]
  catching_up[name] = nil
  if live and plugins[name] and live > (stored_pos[name] or 0) then stored_pos[name], stored_dirty[name] = live, true end
end

function host.take_dirty_cursors()
  local out = {}
  for name in pairs(stored_dirty) do out[name] = stored_pos[name] end
  stored_dirty = {}
  return out
end

-- Timers: C owns the uv_timer; the callback comes back here.
local timer_fns = {}
function host.forget_timer(id) timer_fns[id] = nil end
function host.start_timer(p, every, seconds, fn)
  local id = C.timer_start(math.floor((tonumber(seconds) or 0) * 1000), every)
  timer_fns[id] = { fn = fn, plugin = p, every = every }
  p.timers[id] = id
  return id
end
function host.timer_fired(id)
  local t = timer_fns[id]
  if not t then return end
  if not t.every then timer_fns[id] = nil; t.plugin.timers[id] = nil end
  host.current = t.plugin
  C.budget_start(t.plugin.budget)
  local ok, err = xpcall(t.fn, debug.traceback)
  C.budget_stop()
  host.current = nil
  if not ok then
    metrics[t.plugin.name].errors = metrics[t.plugin.name].errors + 1
    log("error", t.plugin, "timer_failed", tostring(err))
  end
end

-- ---- waiting for the store: tickets ----
-- An im call that needs the store yields the coroutine it runs in (every
-- call.<method> handler runs in one) or, given a callback, calls it later.
local waiting = {}   -- ticket -> coroutine or callback
local next_ticket = 0
local calls = {}     -- coroutine -> the CALL it answers

local function finish_call(co)
  local ev = calls[co]
  calls[co] = nil
  local code, payload, reason
  if rawget(ev, "_failed") then
    code, reason = "INTERNAL", "plugin " .. ev._failed .. " failed"
  elseif rawget(ev, "_result") then
    code, payload = "OK", ev._result
  elseif rawget(ev, "_code") then
    code, reason = ev._code, ev._reason
  else
    code, reason = "INTERNAL", "the plugin did not answer"
  end
  C.call_reply(ev.user, ev.conn_id, ev.request_id, code, payload or "", reason or "")
end

local function step(co, plugin, ...)
  host.current = plugin -- the plugin whose handler this coroutine is in
  C.budget_start(plugin and plugin.budget)
  local ok, err = coroutine.resume(co, ...)
  C.budget_reset() -- done or waiting: either way off the clock
  if not ok then log("error", host.current, "hook_failed", tostring(err)) end
  host.current = nil
  if coroutine.status(co) == "dead" and calls[co] then finish_call(co) end
end

function host.run_call(event, ev)
  local co = coroutine.create(function()
    local failed, name = host.dispatch(event, ev)
    if failed == "error" then rawset(ev, "_failed", name) end
  end)
  calls[co] = ev
  step(co, nil)
end

function host.complete(ticket, ...)
  local w = waiting[ticket]
  waiting[ticket] = nil
  if not w then return end
  if type(w.wake) == "function" then
    host.current = w.plugin
    C.budget_start(w.plugin and w.plugin.budget)
    local ok, err = xpcall(w.wake, debug.traceback, ...)
    C.budget_stop()
    host.current = nil
    if not ok then log("error", w.plugin, "callback_failed", tostring(err)) end
  else
    step(w.wake, w.plugin, ...)
  end
end

-- Runs submit(ticket) and waits: yields the running coroutine, or hands the
-- result to callback. Outside a coroutine and without a callback, an error.
-- queue_only: a write that may also just be queued (outside a call, with no
-- callback): it is applied in order, and a failure is logged.
local function await(what, callback, submit, queue_only)
  next_ticket = next_ticket + 1
  local t = next_ticket
  local plugin = host.current or loading
  local co = coroutine.running()
  local in_call = co and calls[co]
  if not callback and not in_call and queue_only then
    callback = function(ok, err) if not ok then log("warn", plugin, "kv_write_failed", tostring(err)) end end
  end
  if callback then
    waiting[t] = { wake = callback, plugin = plugin }
    submit(t)
    return true
  end
  if not in_call then
    error(what .. " waits for the store: call it from a call.<method> hook, or pass a callback", 3)
  end
  waiting[t] = { wake = co, plugin = plugin }
  submit(t)
  return coroutine.yield()
end
host.await = await

-- Verdict methods of a message.send event. A SEND without meta has no meta
-- table until a handler reads ev.meta.
SendEvent.__index = function(ev, k)
  if k == "meta" then
    local t = {}
    rawset(ev, "meta", t)
    return t
  end
  return SendEvent[k]
end
-- retry_after_ms: for RATE_LIMITED (or UNAVAILABLE), how long the sender
-- should wait; it reaches the client as SendAck.retry_after_ms.
function SendEvent:reject(code, reason, retry_after_ms)
  if retry_after_ms ~= nil then
    if type(retry_after_ms) ~= "number" or retry_after_ms < 0 or retry_after_ms ~= retry_after_ms then
      error(("ev:reject: retry_after_ms must be a number of milliseconds >= 0, got %s"):format(tostring(retry_after_ms)), 2)
    end
    rawset(self, "_retry_after", math.min(math.ceil(retry_after_ms), 4294967295))
  end
  rawset(self, "_verdict", code or "REJECTED"); rawset(self, "_reason", reason or ""); rawset(self, "_stop", true)
end
function SendEvent:rewrite(t)
  if t.body ~= nil then rawset(self, "body", tostring(t.body)); rawset(self, "_rewritten", true) end
  if t.content_type ~= nil then rawset(self, "content_type", tostring(t.content_type)); rawset(self, "_rewritten", true) end
  if t.meta ~= nil then rawset(self, "meta", t.meta); rawset(self, "_rewritten", true) end
end
function SendEvent:stop() rawset(self, "_stop", true) end
host.SendEvent = SendEvent

local CallEvent = {}
CallEvent.__index = CallEvent
function CallEvent:reply(payload) rawset(self, "_result", payload == nil and "" or tostring(payload)); rawset(self, "_stop", true) end
function CallEvent:error(code, reason) rawset(self, "_code", code or "INVALID"); rawset(self, "_reason", reason or ""); rawset(self, "_stop", true) end
host.CallEvent = CallEvent

-- message.route: ev:default(mode), ev:set(user, mode), ev:add(user [, mode]);
-- modes "push", "hint" (PULL_HINT instead of the message), "none".
local modes = { push = true, hint = true, none = true }
local RouteEvent = {}
RouteEvent.__index = RouteEvent
function RouteEvent:default(mode)
  assert(modes[mode], "route mode must be push, hint or none")
  rawset(self, "_default", mode)
end
function RouteEvent:set(user, mode)
  assert(modes[mode], "route mode must be push, hint or none")
  local m = rawget(self, "_modes") or {}
  rawset(self, "_modes", m)
  m[user] = mode
end
function RouteEvent:add(user, mode)
  self:set(user, mode or "push")
  local e = rawget(self, "_extra") or {}
  rawset(self, "_extra", e)
  e[user] = true
end
function RouteEvent:stop() rawset(self, "_stop", true) end
host.RouteEvent = RouteEvent

-- auth: ev:accept([as_user]) or ev:reject(reason); the first verdict stops the chain.
local AuthEvent = {}
AuthEvent.__index = AuthEvent
function AuthEvent:accept(as) rawset(self, "_verdict", "accept"); rawset(self, "_as", as); rawset(self, "_stop", true) end
function AuthEvent:reject(reason) rawset(self, "_verdict", "reject"); rawset(self, "_reason", reason or ""); rawset(self, "_stop", true) end
host.AuthEvent = AuthEvent

-- session.read: ev:forbid(reason).
local ReadEvent = {}
ReadEvent.__index = ReadEvent
function ReadEvent:forbid(reason) rawset(self, "_forbid", reason or "forbidden"); rawset(self, "_stop", true) end
host.ReadEvent = ReadEvent

local Plain = {}
Plain.__index = Plain
function Plain:stop() rawset(self, "_stop", true) end
host.Plain = Plain

-- The im API plugins see. Actions are refused while a plugin loads.
local function not_loading(what)
  if loading then error(what .. " is not allowed while a plugin loads (do it in a hook or a timer)", 3) end
end
host.im = {
  log = function(level, fmt, ...)
    local msg = select("#", ...) > 0 and fmt:format(...) or tostring(fmt)
    local p = loading or host.current
    C.log(level, p and p.name or "-", "plugin_log", msg)
  end,
  now = C.now,
  send = function(t)
    not_loading("im.send")
    assert(type(t) == "table" and t.as and t.session and t.body, "im.send{as=, session=, body= [, content_type=, device=]}")
    return C.send(t.as, t.device or "bot", t.session, tostring(t.body), t.content_type or "")
  end,
  event = function(user, name, payload, sender)
    not_loading("im.event")
    return C.event(user, name, payload or "", sender or "")
  end,
  token = function(user, ttl) return C.token(user, ttl or 86400) end,
  -- Durable per-plugin key/value (the store's kv table). Each call waits for
  -- the store: in a call.<method> hook it returns the result; elsewhere pass a
  -- callback, which gets it later.
  kv = {
    get = function(key, callback)
      local p = host.current or loading
      return await("im.kv.get", callback, function(t) C.kv("get", t, p.name, key) end)
    end,
    set = function(key, value, callback)
      local p = host.current or loading
      return await("im.kv.set", callback, function(t) C.kv("set", t, p.name, key, tostring(value)) end, true)
    end,
    delete = function(key, callback)
      local p = host.current or loading
      return await("im.kv.delete", callback, function(t) C.kv("delete", t, p.name, key) end, true)
    end,
  },
  kick = function(user, reason)
    not_loading("im.kick")
    return C.kick(user, reason or "kicked")
  end,
  token_verify = function(token, user) return C.token_verify(token, user) end,
  members = function(session, callback)
    local list, err = C.members(session)
    if list then
      if callback then callback(list) return true end
      return list
    end
    if err ~= "loading" then return nil, err end
    return await("im.members", callback, function(t) C.members_wait(t, session) end)
  end,
  create_group = function(group, members, callback)
    not_loading("im.create_group")
    return await("im.create_group", callback, function(t) C.group_op("create", t, group, members or {}) end)
  end,
  add_member = function(group, user, callback)
    not_loading("im.add_member")
    return await("im.add_member", callback, function(t) C.group_op("add", t, group, user) end)
  end,
  remove_member = function(group, user, callback)
    not_loading("im.remove_member")
    return await("im.remove_member", callback, function(t) C.group_op("remove", t, group, user) end)
  end,
  sessions_of = function(user, callback)
    not_loading("im.sessions_of")
    return await("im.sessions_of", callback, function(t) C.group_op("sessions_of", t, user) end)
  end,
  config = function(key) return C.config(key) end,
  wordset = function(list) return C.wordset(list) end,
  after = function(seconds, fn)
    not_loading("im.after")
    return host.start_timer(host.current, false, seconds, fn)
  end,
  every = function(seconds, fn)
    not_loading("im.every")
    return host.start_timer(host.current, true, seconds, fn)
  end,
  metrics = function(name) local m = metrics[name or (host.current and host.current.name)]; return m end,
}

-- ---- metrics a plugin publishes: im.counter, im.gauge ----
-- Each metric name is one family on /metrics, hubu_plugin_<name>, labelled
-- plugin="<plugin>" plus the metric's own labels (names fixed when declared,
-- values given per call). The objects live in `published` under their plugin:
-- declaring the same name, kind and labels again (a reloaded version does)
-- returns the same object, so values carry across reloads; an object a new
-- version declares differently replaces the old one when that version is
-- swapped in; an unload drops them all.
local MAX_SERIES = 1000 -- label sets per metric
local MAX_LABELS = 8
local reserved_metric = { calls_total = true, errors_total = true, seconds_total = true } -- the host's own

local Counter, Gauge = {}, {}
Counter.__index, Gauge.__index = Counter, Gauge

-- The series of m for the label table lt (nil: every label empty); created
-- when create is set, else nil when it does not exist. Errors at level.
local function series(m, lt, create, level)
  if lt ~= nil and type(lt) ~= "table" then error(("metric %s: labels must be a table"):format(m.name), level) end
  local key, values = "", nil
  if #m.labels == 0 then
    if lt ~= nil and next(lt) ~= nil then error(("metric %s was declared without labels"):format(m.name), level) end
  else
    for k in pairs(lt or {}) do
      if not m.label_set[k] then error(("metric %s has no label %s"):format(m.name, tostring(k)), level) end
    end
    values = {}
    for i, l in ipairs(m.labels) do
      local v = lt and lt[l]
      if v == nil then
        v = ""
      elseif type(v) ~= "string" and type(v) ~= "number" then
        error(("metric %s: the value of label %s must be a string or a number"):format(m.name, l), level)
      end
      v = tostring(v)
      if not C.label_ok(v) then
        error(("metric %s: the value of label %s must be UTF-8 text without NUL bytes"):format(m.name, l), level)
      end
      values[i] = v
    end
    key = table.concat(values, "\0") -- no value holds a NUL: one key per label set
  end
  local s = m.series[key]
  if not s and create then
    if m.n_series >= MAX_SERIES then
      error(("metric %s: more than %d label sets"):format(m.name, MAX_SERIES), level)
    end
    s = { values = values, v = 0 }
    m.series[key], m.n_series = s, m.n_series + 1
  end
  return s
end

local function amount(n, default, what)
  if n == nil then return default end
  if type(n) ~= "number" or n ~= n or n == math.huge or n == -math.huge then
    error(what .. ": the amount must be a finite number", 3)
  end
  return n
end

local function check_self(m, mt, what)
  if getmetatable(m) ~= mt then error(what .. ": call it as a method (m:" .. what:match("%a+$") .. "(...))", 3) end
end

-- c:inc([n] [, labels]) (n >= 0, default 1); c:inc(labels) adds 1.
function Counter:inc(n, labels)
  check_self(self, Counter, "counter:inc")
  if type(n) == "table" then n, labels = nil, n end
  n = amount(n, 1, "counter:inc")
  if n < 0 then error("counter:inc: a counter only goes up (a gauge goes both ways)", 2) end
  local s = series(self, labels, true, 3)
  s.v = s.v + n
end
function Counter:get(labels)
  check_self(self, Counter, "counter:get")
  local s = series(self, labels, false, 3)
  return s and s.v or 0
end

function Gauge:set(v, labels)
  check_self(self, Gauge, "gauge:set")
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    error("gauge:set: the value must be a finite number", 2)
  end
  series(self, labels, true, 3).v = v
end
function Gauge:inc(n, labels)
  check_self(self, Gauge, "gauge:inc")
  if type(n) == "table" then n, labels = nil, n end
  n = amount(n, 1, "gauge:inc")
  local s = series(self, labels, true, 3)
  s.v = s.v + n
end
function Gauge:dec(n, labels)
  check_self(self, Gauge, "gauge:dec")
  if type(n) == "table" then n, labels = nil, n end
  n = amount(n, 1, "gauge:dec")
  local s = series(self, labels, true, 3)
  s.v = s.v - n
end
function Gauge:get(labels)
  check_self(self, Gauge, "gauge:get")
  local s = series(self, labels, false, 3)
  return s and s.v or 0
end

local function same_labels(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function declare(kind, name, help, label_names)
  local what = "im." .. kind
  local p = loading or host.current
  if not p then error(what .. ": no plugin is running", 3) end
  if type(name) ~= "string" or #name > 128 or not name:find("^[%a_:][%w_:]*$") then
    error(what .. ": a metric name is 1-128 characters of [a-zA-Z0-9_:], not starting with a digit", 3)
  end
  if reserved_metric[name] then error(("%s: %s is the host's (hubu_plugin_%s)"):format(what, name, name), 3) end
  if help ~= nil and type(help) ~= "string" then error(what .. ": help must be a string", 3) end
  local labels, label_set = {}, {}
  if label_names ~= nil then
    if type(label_names) ~= "table" then error(what .. ": labels must be a list of names", 3) end
    for i, l in ipairs(label_names) do
      if type(l) ~= "string" or not l:find("^[%a_][%w_]*$") or l:find("^__") or l == "plugin" or label_set[l] then
        error(("%s: bad label name %s ([a-zA-Z_][a-zA-Z0-9_]*, once each, not plugin, not __...)"):format(
          what, tostring(l)), 3)
      end
      labels[i], label_set[l] = l, true
    end
    if #labels > MAX_LABELS then error(("%s: at most %d labels"):format(what, MAX_LABELS), 3) end
  end
  local staged = loading and p.pending_metrics
  local m = staged and staged[name]
  if m and (m.kind ~= kind or not same_labels(m.labels, labels)) then
    error(("%s: %s is already declared as a %s with other labels"):format(what, name, m.kind), 3)
  end
  m = m or (published[p.name] and published[p.name][name])
  if m and m.kind == kind and same_labels(m.labels, labels) then
    if staged then -- a new help text takes effect with the version that gives it
      staged[name], p.pending_help[name] = m, help
    elseif help then
      m.help = help
    end
    return m
  end
  if m and not staged then
    error(("%s: %s is already declared as a %s with labels {%s}"):format(what, name, m.kind,
      table.concat(m.labels, ",")), 3)
  end
  for other, ms in pairs(published) do
    local o = ms[name]
    if other ~= p.name and o and o.kind ~= kind then
      error(("%s: hubu_plugin_%s is a %s of plugin %s"):format(what, name, o.kind, other), 3)
    end
  end
  m = setmetatable({ name = name, kind = kind, help = help or "", labels = labels, label_set = label_set,
                     series = {}, n_series = 0 }, kind == "counter" and Counter or Gauge)
  if #labels == 0 then series(m, nil, true, 3) end -- exported (0) from the start
  if staged then
    staged[name] = m
  else
    published[p.name] = published[p.name] or {}
    published[p.name][name] = m
  end
  return m
end

-- (not tail calls: declare's errors name the plugin's line)
host.im.counter = function(name, help, labels) local m = declare("counter", name, help, labels); return m end
host.im.gauge = function(name, help, labels) local m = declare("gauge", name, help, labels); return m end

-- The families of the published metrics for /metrics, by name: {name, kind,
-- help, samples = {{labels = {name, value, ...}, value}}}; the plugin label first.
function host.metric_families()
  local fams, by_name, pnames = {}, {}, {}
  for pname in pairs(published) do pnames[#pnames + 1] = pname end
  table.sort(pnames)
  for _, pname in ipairs(pnames) do
    local mnames = {}
    for mname in pairs(published[pname]) do mnames[#mnames + 1] = mname end
    table.sort(mnames)
    for _, mname in ipairs(mnames) do
      local m = published[pname][mname]
      local fam = by_name[mname]
      if not fam then
        fam = { name = "hubu_plugin_" .. mname, kind = m.kind, help = m.help, samples = {} }
        by_name[mname], fams[#fams + 1] = fam, fam
      end
      if fam.kind == m.kind then
        local keys = {}
        for k in pairs(m.series) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do
          local s = m.series[k]
          local labels = { "plugin", pname }
          for i, l in ipairs(m.labels) do labels[#labels + 1] = l; labels[#labels + 1] = s.values[i] end
          fam.samples[#fam.samples + 1] = { labels = labels, value = s.v }
        end
      end
    end
  end
  table.sort(fams, function(a, b) return a.name < b.name end)
  return fams
end

return host

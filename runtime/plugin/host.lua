-- host.lua — the plugin host's Lua half, run once in hubud's LuaJIT state.
-- It loads plugins into their own environments, keeps the hook registry in
-- priority order, and dispatches events with one protected call per handler.
-- Handlers that may wait (message.send, message.stored, call.<method>,
-- connect, disconnect, timers, callbacks) run as jobs in pooled coroutines:
-- an im call that waits (im.http, im.sleep, the store's) yields the job and
-- its completion resumes it.
-- Invariant: a plugin is swapped in only after its new version loaded and
-- initialised cleanly; on any failure the old version keeps running. Nothing
-- of a version that was replaced or unloaded runs again: its requests are
-- cancelled and its waiting handlers given up.
-- C, the C side: 28 functions (host.c hands them over; hubu-bench hooks, stand-ins
-- from tools/bench_hooks.c):
--   im.c      log, now, send, event, kick, token, token_verify, members, members_wait, config,
--             group_op, kv, call_reply, timer_start, timer_stop, label_ok, hmac,
--             http_start, http_cancel, wordset (wordset.c)
--   hooks.c   send_verdict
--   replay.c  replay_from
--   budget.c  budget_start, budget_stop, budget_reset, budget_renew, budget_ms, clock
-- The C side calls back: load, unload, note_failure, has, kind_mask, send, dispatch,
-- dispatch_plain, dispatch_stored, run_call, complete, timer_fired, http_done, list,
-- metric_families, http_metrics, take_dirty_cursors, stored_plugins, replay_begin,
-- replay_current, replay_end, replay_failed, shutdown.
local C = ...
local host = {}

local plugins = {}      -- name -> plugin record
local order = 0         -- load order: ties between equal priorities
local hooks = {}        -- event -> array of {fn, priority, order, plugin}; never changed in place
local loading = nil     -- the plugin whose chunk is running now (actions are refused)
local shared = {}       -- plugin name -> name -> table (survives reload, not restart)
local metrics = {}      -- plugin name -> {calls, errors, seconds [, http]}
local failures = {}     -- plugin name -> {error, at, path}: its newest version failed to load
local published = {}    -- plugin name -> metric name -> im.counter/im.gauge object (dropped on unload)
local SendEvent         -- the metatable of message.send events (below)
local stored_pos = {}    -- plugin -> message.stored log position handled
local stored_dirty = {}  -- plugin -> true while not saved
local catching_up = {}   -- plugin -> highest live position seen while it replays
local replays = {}       -- plugin -> generation of its replay under way
local replay_count = 0
local stored_waiting = {}  -- plugin -> its message.stored handlers waiting now
local stored_inflight = {} -- plugin -> log position -> handlers of that message waiting (hold its position back)
local behind = {}          -- plugin -> {from, skipped, gen}: too many of its handlers waited; it catches up from the log
local EMPTY = {}

-- Limits (docs/plugins.md, "im.http" and "Waiting").
local STORED_WAITING_MAX = 1000 -- message.stored handlers of one plugin waiting at once (header `stored_waiting`)
local DEADLINE_SEND_MS = 2000   -- how long a message.send handler may wait (header `deadline`)
local DEADLINE_CALL_MS = 10000  -- how long a call.<method> handler may wait (header `deadline`)
local HTTP = {
  concurrency = 64,             -- requests of one plugin in flight (header `http_concurrency`)
  total = 1024,                 -- requests of all plugins in flight
  timeout_ms = 10000, timeout_max = 60000,
  max_response = 1048576, max_response_limit = 16777216,
  redirects_max = 20,
}

local function log(level, plugin, event, msg)
  C.log(level, plugin and plugin.name or "-", event, msg)
end

-- A log value quoted once: backslash, quote and control characters escaped
-- (a newline as \n), so a traceback reads as lines once unescaped.
local function lq(s)
  return '"' .. (tostring(s):gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" elseif c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\t" then return "  " end
    return ("\\x%02x"):format(c:byte())
  end)) .. '"'
end

-- One log line of key=value fields, written as given (C.log's raw form):
-- fields quote their values with lq, and nothing is escaped twice.
local function logf(level, plugin, event, fields)
  C.log(level, plugin and plugin.name or "-", event, fields, true)
end

-- An error with its traceback (plugin_traceback's form) as log fields:
-- error="FILE:LINE: message" traceback="FILE:LINE: in ...\n...".
local function error_fields(err)
  local s = tostring(err)
  local msg, frames = s:match("^(.-)\nstack traceback:\n(.*)$")
  if not msg then return "error=" .. lq(s) end
  return "error=" .. lq(msg) .. " traceback=" .. lq(frames)
end

-- The xpcall handler of plugin code: the message and the plugin's own
-- frames, one a line; the host's frames (host.lua, C functions) left out.
local host_sources = { [debug.getinfo(1, "S").short_src] = true } -- this file, and a test harness's (scratch.lua)
host.host_sources = host_sources
local function plugin_traceback(err)
  local msg = type(err) == "string" and err or tostring(err)
  local frames = {}
  local tb = debug.traceback("", 2)
  for line in tb:gmatch("[^\n]+") do
    local f = line:match("^%s+(.*)$")
    local src = f and f:match("^(.-):%d+:")
    if src and host_sources[src] then break end -- the host called the plugin from here: the rest is not the plugin's
    if f and not f:find("^%[C%]") and not f:find("^%(tail call%)") and not f:find("^%[builtin") then
      frames[#frames + 1] = f
    end
  end
  if #frames == 0 then return msg end
  local only = #frames == 1 and frames[1]:match("^(.-:%d+): in main chunk$")
  if only and msg:sub(1, #only + 1) == only .. ":" then return msg end -- the error's own line, nothing more
  return msg .. "\nstack traceback:\n" .. table.concat(frames, "\n")
end
host.traceback = plugin_traceback

-- Raises msg at the plugin's line: the innermost frame of Lua code that is
-- not the host's (tail calls and helpers in between do not matter).
local function raise(msg)
  for level = 2, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.currentline and info.currentline > 0 and not host_sources[info.short_src] then
      error(("%s:%d: %s"):format(info.short_src, info.currentline, msg), 0)
    end
  end
  error(msg, 0)
end

-- How a value shows in an error: its type, and the value when it is short.
local function describe(v)
  local t = type(v)
  if t == "string" then return ("the string %q"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
  if t == "number" or t == "boolean" then return ("%s %s"):format(t, tostring(v)) end
  if t == "nil" then return "nil" end
  if t == "table" and next(v) == nil then return "an empty table" end
  return "a " .. t
end
host.describe = describe

-- Raises "what: expected ..., got ..." at the caller's caller of the
-- function that calls it (level 1: the plugin line that called that function).
local function expected(level, what, wanted, got)
  error(("%s: expected %s, got %s"):format(what, wanted, describe(got)), level + 2)
end

local function by_priority(a, b)
  if a.priority ~= b.priority then return a.priority > b.priority end
  return a.order < b.order
end

-- ---- jobs: plugin code that may wait ----
-- A job runs in a coroutine of its own, taken from a pool (a finished one
-- waits for the next job: no coroutine is made per event). When an im call
-- waits, it yields WAIT; the completion (host.complete) resumes the job with
-- the results. The CPU budget covers each stretch between waits; waiting is
-- off the clock. A message.send or call.<method> handler that waits longer
-- than its deadline is given up: a failure, and its plugin's failure policy
-- decides. A job whose plugin version is replaced or unloaded while it waits
-- is given up too (never resumed), and its request cancelled.
local DONE, WAIT = {}, {}
local jobs = {}        -- coroutine -> the job running in it
local pool = {}        -- idle coroutines
local POOL_MAX = 256       -- idle coroutines kept for jobs
local SEND_POOL_MAX = 1024 -- idle message.send dispatchers kept (one per SEND waiting at once, at most)
local waiting = {}     -- ticket -> { job = | fn = (a callback), plugin = (its version), cancel = fn(ticket, w), arg = }
local next_ticket = 0
local timer_fns = {}   -- timer id -> { fn, plugin, every } (plugin timers) or { fn, host = true }

local function runner(fn, job)
  while true do
    fn(job)
    fn, job = coroutine.yield(DONE)
  end
end

local abandon, chain, catch_up -- below

-- Resumes job's coroutine with ...; then the job is done (its coroutine back
-- in the pool), waiting again, or given up.
local function resume(job, ...)
  local co = job.co
  local saved = host.current
  host.current = job.h and job.h.plugin or job.plugin
  local ok, sig = coroutine.resume(co, ...)
  host.current = saved
  if ok and sig == WAIT then return end
  if ok and sig == DONE and job.pool then -- a message.send dispatcher, ready for the next SEND
    local spool = job.pool
    if #spool < SEND_POOL_MAX then spool[#spool + 1] = co else jobs[co] = nil end
    return
  end
  jobs[co] = nil
  job.co = nil
  if ok and sig == DONE then
    if #pool < POOL_MAX then pool[#pool + 1] = co end
  elseif ok then -- the plugin yielded the job's coroutine itself: it cannot be resumed correctly
    abandon(job, "coroutine.yield in a hook (yield only inside a coroutine of your own)", true)
  else -- an error in this file's code around the handlers
    log("error", job.h and job.h.plugin or job.plugin, "plugin_host_failed", tostring(sig))
    job.h = false
    if job.finish then job.finish(job) end
  end
end

-- Runs fn(job) as a job.
local function start(job, fn)
  local n = #pool
  local co = pool[n]
  if co then pool[n] = nil else co = coroutine.create(runner) end
  job.co = co
  jobs[co] = job
  resume(job, fn, job)
end

-- A one-shot timer of the host's own (not a plugin's: a reload leaves it).
local function host_timer(ms, fn)
  local id = C.timer_start(ms, false)
  timer_fns[id] = { fn = fn, host = true }
  return id
end
local function stop_host_timer(id)
  C.timer_stop(id)
  timer_fns[id] = nil
end

-- Deadlines: one queue per length (ms), in the order they were armed, so
-- each queue is also in the order they fall due, and one host timer for the
-- earliest head. Stopping one only marks it (job.dl_gen moves on); a stale
-- entry is dropped when it reaches its queue's head. No timer per waiting SEND.
local deadline_queues = {}       -- ms -> { head = i, tail = j, [i] = { job, due, gen } }
local deadline_timer, deadline_at = nil, math.huge

local function now_ms() return C.clock() * 1000 end

local function deadline_rearm()
  local first = math.huge
  for _, q in pairs(deadline_queues) do
    local e = q[q.head]
    if e and e.due < first then first = e.due end
  end
  if first == deadline_at then return end
  if deadline_timer then stop_host_timer(deadline_timer); deadline_timer = nil end
  deadline_at = first
  if first < math.huge then
    deadline_timer = host_timer(math.max(1, math.ceil(first - now_ms())), function()
      deadline_timer, deadline_at = nil, math.huge
      local now, late = now_ms(), {}
      for ms, q in pairs(deadline_queues) do
        local e = q[q.head]
        while e and e.due <= now do
          q[q.head], q.head = nil, q.head + 1
          if e.job.dl and e.job.dl_gen == e.gen then late[#late + 1] = { e.job, ms } end
          e = q[q.head]
        end
        if not e then deadline_queues[ms] = nil end
      end
      for _, l in ipairs(late) do
        local job = l[1]
        if job.dl and job.wait then
          job.dl = false
          abandon(job, ("deadline of %d ms passed while it waited"):format(l[2]), true)
        end
      end
      deadline_rearm()
    end)
  end
end

local function stop_deadline(job)
  job.dl = false
  job.dl_gen = (job.dl_gen or 0) + 1
end

-- The waiting handler of job gets its plugin's deadline (counted from its first wait).
local function arm_deadline(job)
  local ms = job.h.plugin.deadline or job.deadline
  local gen = (job.dl_gen or 0) + 1
  job.dl, job.dl_gen = true, gen
  local q = deadline_queues[ms]
  if not q then q = { head = 1, tail = 0 }; deadline_queues[ms] = q end
  local due = now_ms() + ms
  q.tail = q.tail + 1
  q[q.tail] = { job = job, due = due, gen = gen }
  if due < deadline_at then deadline_rearm() end
end

-- Gives up job, which waits (or yielded wrongly): its wait is cancelled and
-- its coroutine dropped. failure: counted and logged as the handler's
-- failure (then a fail-closed plugin's policy ends a chain); else (a reload
-- or unload) the plugin's new version, if any, gets the event instead. why
-- nil: not logged (the caller logs once for many). A chain goes on with its
-- next handler in a fresh coroutine; any other job finishes.
abandon = function(job, why, failure)
  local t = job.wait
  if t then
    job.wait = nil
    local w = waiting[t]
    waiting[t] = nil
    if w and w.cancel then w.cancel(t, w) end
  end
  if job.dl then stop_deadline(job) end
  if job.co then jobs[job.co] = nil; job.co = nil end
  job.pool = nil -- a message.send dispatcher's record goes on as an ordinary job
  local h = job.h
  local p = h and h.plugin or job.plugin
  if failure then
    local m = p and metrics[p.name]
    if m then m.errors = m.errors + 1 end
    logf("error", p, "hook_failed", ("hook=%s policy=%s error=%s"):format(job.event or "callback",
      p and p.policy or "open", lq(why)))
  elseif why then
    logf("info", p, "hook_given_up", ("hook=%s why=%s"):format(job.event or "callback", lq(why)))
  end
  job.h = false
  if job.chain and h then
    if failure and p.policy == "closed" then
      job.failed = p.name
    else
      if not failure then job.gave_up = job.gave_up or {}; job.gave_up[h] = true end
      C.budget_start(nil)
      start(job, chain)
      C.budget_stop()
      return
    end
  end
  if job.finish then job.finish(job) end
end

-- Every wait of version p: cancelled and forgotten. Returns the jobs that
-- waited, for the caller to give up once the swap is done.
local function retire(p)
  local out = {}
  for t, w in pairs(waiting) do
    if w.plugin == p then
      waiting[t] = nil
      if w.cancel then w.cancel(t, w) end
      if w.job then w.job.wait = nil; out[#out + 1] = w.job end
    end
  end
  return out
end

-- Removes p's hooks (new lists: a chain that waits keeps the list it began
-- with) and stops its timers.
local function remove_hooks(p)
  for event, list in pairs(hooks) do
    local kept = {}
    for i = 1, #list do if list[i].plugin ~= p then kept[#kept + 1] = list[i] end end
    if #kept ~= #list then hooks[event] = #kept > 0 and kept or nil end
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

-- The events a plugin may hook (and call.<method>), and those whose events
-- have a session kind (direct, group, custom): `kinds` applies to these only.
local EVENTS = { "message.send", "message.stored", "message.route", "session.read", "auth", "connect", "disconnect",
                 "group.changed", "call.<method>" }
local KIND_EVENTS = { ["message.send"] = true, ["message.stored"] = true, ["message.route"] = true,
                      ["session.read"] = true }
local KNOWN_EVENT = {}
for _, e in ipairs(EVENTS) do KNOWN_EVENT[e] = true end
local HOOK_OPTS = { priority = true, kinds = true }

-- The session kind of a session id, as C names them.
local function kind_of(session_id)
  local a, b = session_id:byte(1, 2)
  if b == 58 then -- ':'
    if a == 100 then return "direct" elseif a == 103 then return "group" end
  end
  return "custom"
end
host.kind_of = kind_of

-- Where key is set in the section of plugin name in the config file at
-- path ("hubu.lua:12"), as near as a scan of its text finds it: the
-- section's line when the key's own is not found, nil without a file.
local function config_where(path, name, key)
  if not path then return nil end
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a") or ""
  f:close()
  local lines, in_section, section_line, depth = {}, false, nil, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local short = path
  for i, line in ipairs(lines) do
    if not in_section then
      local n = line:match("plugin%s*%(?%s*[\"']([^\"']+)[\"']")
      if n == name then
        in_section, section_line, depth = true, i, 0
        line = line:match("plugin%s*%(?%s*[\"'][^\"']+[\"']%s*%)?(.*)$") or ""
      end
    end
    if in_section then
      if key and (line:find("%f[%w_]" .. key:gsub("%p", "%%%0") .. "%s*=") or
                  line:find("%[%s*[\"']" .. key:gsub("%p", "%%%0") .. "[\"']%s*%]%s*=")) and depth <= 1 then
        return short .. ":" .. i
      end
      for c in line:gmatch("[{}]") do depth = depth + (c == "{" and 1 or -1) end
      if depth <= 0 and line:find("}") then break end
    end
  end
  return section_line and (short .. ":" .. section_line) or short
end

-- The `plugin` object a plugin's code sees. Mistakes in its calls are
-- errors at the plugin's line that say what was expected and what came.
local function make_api(p, config, config_file)
  local api = { name = p.name }
  p.options_read = {}
  local where = function(key) return config_where(config_file, p.name, key) end
  -- opts: a priority, or { priority = n, kinds = { "group", ... } } (events
  -- with a session kind: the handler only sees those kinds, and a message no
  -- handler wants is not even turned into an event)
  function api:hook(event, fn, opts)
    if self ~= api then error("plugin:hook: call it with a colon, plugin:hook(event, fn [, opts])", 2) end
    if type(event) ~= "string" then expected(1, "plugin:hook(event, fn [, opts]): event", "a string", event) end
    if not (KNOWN_EVENT[event] or event:find("^call%.[%w_%.%-]+$")) then
      error(("plugin:hook: no event %q; events are %s"):format(event, table.concat(EVENTS, ", ")), 2)
    end
    if type(fn) ~= "function" then expected(1, "plugin:hook(" .. event .. ", fn): fn", "a function", fn) end
    local priority, kinds = opts, nil
    if type(opts) == "table" then
      for k in pairs(opts) do
        if not HOOK_OPTS[k] then
          error(("plugin:hook(%s): unknown option %s; options are priority, kinds"):format(event, tostring(k)), 2)
        end
      end
      priority = opts.priority
      if opts.kinds ~= nil then
        if not KIND_EVENTS[event] then
          error(("plugin:hook(%s): kinds applies to events with a session kind (message.send, message.stored, "
            .. "message.route, session.read), not to %s"):format(event, event), 2)
        end
        if type(opts.kinds) ~= "table" or #opts.kinds == 0 then
          expected(1, "plugin:hook(" .. event .. "): kinds", 'a list such as { "group" }', opts.kinds)
        end
        kinds = {}
        for i, k in ipairs(opts.kinds) do
          if k ~= "direct" and k ~= "group" and k ~= "custom" then
            expected(1, ("plugin:hook(%s): kinds item %d"):format(event, i), '"direct", "group" or "custom"', k)
          end
          kinds[k] = true
        end
      end
    elseif opts ~= nil and type(opts) ~= "number" then
      expected(1, "plugin:hook(" .. event .. ", fn, opts): opts", "a priority (number) or { priority =, kinds = }", opts)
    end
    if priority ~= nil and (type(priority) ~= "number" or priority ~= priority) then
      expected(1, "plugin:hook(" .. event .. "): priority", "a number", priority)
    end
    p.pending_hooks[#p.pending_hooks + 1] = { event = event, fn = fn, priority = priority or p.priority,
                                              kinds = kinds }
  end
  -- An option of the config section: nil (the default) or a value check accepts.
  local function option(fname, name, default, want, check, default_type)
    if type(name) ~= "string" then expected(2, "plugin:" .. fname .. "(name, default): name", "a string", name) end
    if default_type and default ~= nil and type(default) ~= default_type then
      expected(2, ("plugin:%s(%s, default): default"):format(fname, name), "a " .. default_type, default)
    end
    p.options_read[name] = true
    local v = config[name]
    if v == nil then return default end
    if not check(v) then
      error(("option %s (%s): expected %s, got %s"):format(name, where(name) or "config", want, describe(v)), 3)
    end
    return v
  end
  -- (no tail calls to option: its errors name the plugin's line, two levels up)
  function api:option_string(name, default)
    local v = option("option_string", name, default, "a string", function(v) return type(v) == "string" end,
      "string")
    return v
  end
  function api:option_number(name, default, min, max)
    local want = (min and max) and ("a number from %s to %s"):format(min, max) or min and ("a number >= %s"):format(min)
      or max and ("a number <= %s"):format(max) or "a number"
    local n = option("option_number", name, default, want, function(v)
      return type(v) == "number" and v == v and not (min and v < min) and not (max and v > max)
    end, "number")
    return n
  end
  function api:option_boolean(name, default)
    local b = option("option_boolean", name, default, "true or false", function(v) return type(v) == "boolean" end,
      "boolean")
    return b
  end
  -- item_type: what each item must be ("string", "number", "boolean", "table");
  -- default: the type of the default's first item; with an empty default and
  -- no item_type, the items must all be of one type (the first one's).
  local LIST_ITEM = { string = true, number = true, boolean = true, table = true }
  function api:option_list(name, default, item_type)
    if default ~= nil and type(default) ~= "table" then
      expected(1, "plugin:option_list(" .. tostring(name) .. ", default): default", "a list (a table)", default)
    end
    if item_type ~= nil and not LIST_ITEM[item_type] then
      expected(1, "plugin:option_list(" .. tostring(name) .. ", default, item_type): item_type",
        '"string", "number", "boolean" or "table"', item_type)
    end
    item_type = item_type or (default and default[1] ~= nil and type(default[1])) or nil
    if item_type and default then
      for i = 1, #default do
        if type(default[i]) ~= item_type then
          expected(1, ("plugin:option_list(%s, default): default item %d"):format(tostring(name), i),
            "a " .. item_type, default[i])
        end
      end
    end
    local want = item_type and ("a list of %ss"):format(item_type) or "a list of items of one type"
    local bad
    local v = option("option_list", name, default, want, function(v)
      if type(v) ~= "table" then return false end
      local n = #v
      for k in pairs(v) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then bad = "key " .. describe(k); return true end
      end
      local each = item_type or (n > 0 and type(v[1])) or nil
      for i = 1, n do
        if type(v[i]) ~= each then bad = ("item %d: %s"):format(i, describe(v[i])); return true end
      end
      return true
    end)
    if bad then
      error(("option %s (%s): expected %s, got %s"):format(name, where(name) or "config", want, bad), 2)
    end
    return v
  end
  function api:shared(name)
    if type(name) ~= "string" then expected(1, "plugin:shared(name): name", "a string", name) end
    local mine = shared[p.name] or {}
    shared[p.name] = mine
    mine[name] = mine[name] or {}
    return mine[name]
  end
  local function timer(what, every, seconds, fn)
    if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
      expected(2, "plugin:" .. what .. "(seconds, fn): seconds", "a number >= 0", seconds)
    end
    if type(fn) ~= "function" then expected(2, "plugin:" .. what .. "(seconds, fn): fn", "a function", fn) end
    p.pending_timers[#p.pending_timers + 1] = { every = every, s = seconds, fn = fn }
  end
  function api:every(seconds, fn) timer("every", true, seconds, fn) end
  function api:after(seconds, fn) timer("after", false, seconds, fn) end
  -- A user this plugin speaks as (a bot): no client logs in as it with an
  -- ordinary token (docs/plugins.md, "Reserved users"). Returns the name.
  function api:reserve_user(user)
    if type(user) ~= "string" or #user < 1 or #user > 64 or not user:find("^[%w_%.@%-]+$") then
      expected(1, "plugin:reserve_user(user): user", "a user id (1-64 bytes of [A-Za-z0-9_.@-])", user)
    end
    p.reserved[user] = true
    return user
  end
  return api
end

-- The keys of a plugin's config section that its load did not ask for:
-- warnings "option NAME (hubu.lua:LINE) is not an option of PLUGIN; its
-- options are ...".
local function unknown_options(p, config, config_file)
  local out, known = {}, {}
  for k in pairs(p.options_read or EMPTY) do known[#known + 1] = k end
  table.sort(known)
  local keys = {}
  for k in pairs(config or EMPTY) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not p.options_read[k] then
      out[#out + 1] = ("option %s (%s) is not an option of plugin %s, so it does nothing; its options are %s"):format(
        k, config_where(config_file, p.name, k) or "config", p.name, #known > 0 and table.concat(known, ", ") or "none")
    end
  end
  return out
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

-- A table as text, its keys sorted: two sections compare equal as text.
local function serialize(v, depth)
  if type(v) ~= "table" then return type(v) == "string" and ("%q"):format(v) or tostring(v) end
  if (depth or 0) > 32 then return "{...}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) < type(b)
  end)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = "[" .. serialize(k) .. "]=" .. serialize(v[k], (depth or 0) + 1) end
  return "{" .. table.concat(out, ",") .. "}"
end

-- Builds a plugin from its source; returns the record or nil, error.
local function build(name, path, src, config, config_file)
  local header = read_header(src)
  local p = {
    name = name, path = path, header = header, timers = {}, pending_hooks = {}, pending_timers = {}, reserved = {},
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
  -- whole numbers within a range: deadline (ms a waiting message.send or
  -- call.<method> handler may wait), http_concurrency (its im.http requests in
  -- flight), stored_waiting (its message.stored handlers waiting at once)
  for key, max in pairs({ deadline = 60000, http_concurrency = 1024, stored_waiting = 100000 }) do
    if header[key] then
      local n = tonumber(header[key])
      if not n or n < 1 or n > max or n % 1 ~= 0 then
        return nil, ("%s: header %s: %q is not a whole number from 1 to %d"):format(path, key, header[key], max), p
      end
      p[key] = n
    end
  end
  local chunk, err = loadstring(src, "@" .. path)
  if not chunk then return nil, err, p end
  if header.jit ~= "on" then jit.off(chunk, true) end -- interruptible by the budget hook
  local api = make_api(p, config or {}, config_file)
  p.api = api
  setfenv(chunk, make_env(p, api))
  loading = p
  C.budget_start(p.budget)
  local ok, lerr = xpcall(chunk, plugin_traceback)
  C.budget_stop()
  loading = nil
  if not ok then return nil, lerr, p end
  p.warnings = unknown_options(p, config, config_file)
  p.config_sig = serialize(config or {})
  for user in pairs(p.reserved) do
    local owner = host.reserved_by(user)
    if owner and owner ~= name then
      return nil, ("%s: plugin:reserve_user: user %s is reserved by plugin %s already"):format(path, user, owner), p
    end
  end
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
  for _, h in ipairs(p.pending_hooks) do -- a new list each time: a chain that waits keeps the one it began with
    local old_list, list = hooks[h.event] or EMPTY, {}
    for i = 1, #old_list do list[i] = old_list[i] end
    list[#list + 1] = { fn = h.fn, priority = h.priority, order = order, plugin = p, kinds = h.kinds }
    table.sort(list, by_priority) -- by priority (higher first), then load order: never by table iteration
    hooks[h.event] = list
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

local function copy_event(ev)
  local t = {}
  for k, v in pairs(ev) do t[k] = v end
  return setmetatable(t, getmetatable(ev))
end

-- Where plugin name's message.stored position may be saved: every message
-- up to it was handed over and is done (a message whose handler still waits
-- holds the position just before it).
local function effective_position(name)
  local pos = stored_pos[name]
  local inflight = stored_inflight[name]
  if pos and inflight then
    for at in pairs(inflight) do if at - 1 < pos then pos = at - 1 end end
  end
  return pos
end

-- Loads (or reloads) one plugin from path. Returns true, nil, resume or false
-- and the error. resume: no version of it was running and it hooks
-- message.stored, so C reads its saved log position next (host.replay_begin
-- or host.replay_end follows); until then its live positions are kept aside.
-- The old version's waits are cancelled: its waiting message.send and
-- call.<method> handlers are given up and the new version handles those
-- events; the messages its message.stored handlers were waiting on are
-- handed to the new version again, marked replayed.
function host.load(name, path, config, config_file)
  local t0 = os.clock()
  local f, ferr = io.open(path, "rb")
  if not f then return host.note_failure(name, path, ferr) end
  local src = f:read("*a")
  f:close()
  local version = read_header(src or "").version
  version = version and " version=" .. lq(version) or ""
  if not src or not src:find("%S") then -- a file caught half-written, or emptied
    logf("error", { name = name }, "plugin_load_failed", "path=" .. lq(path) .. " error=" ..
      lq("empty plugin file; keeping what runs"))
    return host.note_failure(name, path, "empty plugin file")
  end
  local p, err, partial = build(name, path, src, config, config_file)
  if not p then
    logf("error", partial or { name = name }, "plugin_load_failed", ("path=%s%s %s"):format(lq(path), version,
      error_fields(err)))
    return host.note_failure(name, path, err, partial)
  end
  for _, w in ipairs(p.warnings) do logf("warn", p, "plugin_warning", "warning=" .. lq(w)) end
  local old = plugins[name]
  local resume_pos = false
  if not old then
    for _, h in ipairs(p.pending_hooks) do resume_pos = resume_pos or h.event == "message.stored" end
  end
  local retired = old and retire(old) or EMPTY
  install(p, old)
  if resume_pos then catching_up[name] = catching_up[name] or 0 end
  logf("info", p, old and "plugin_reloaded" or "plugin_loaded",
       ("version=%s%s path=%s hooks=%d took_ms=%.2f"):format(lq(p.version),
         old and " previous_version=" .. lq(old.version) or "", lq(path), host.count_hooks(p), (os.clock() - t0) * 1000))
  if #retired > 0 then
    logf("info", p, "hook_given_up", ("waiting=%d why=%s"):format(#retired, lq("the plugin was reloaded while they waited")))
    local again = {}
    for _, job in ipairs(retired) do
      abandon(job, nil, false)
      if job.event == "message.stored" and job.ev then again[#again + 1] = job end
    end
    table.sort(again, function(a, b) return (a.pos or 0) < (b.pos or 0) end)
    for _, job in ipairs(again) do
      local ev = copy_event(job.ev)
      ev.replayed = true
      host.dispatch_stored(ev, name)
    end
  end
  return true, nil, resume_pos
end

function host.unload(name)
  local p = plugins[name]
  failures[name], published[name] = nil, nil -- its metrics are no longer exported
  if stored_inflight[name] then -- a message still waited on: it is handed over again when the plugin comes back
    stored_pos[name], stored_dirty[name] = effective_position(name), true
  end
  stored_inflight[name], stored_waiting[name], behind[name] = nil, nil, nil
  catching_up[name], replays[name] = nil, nil -- a replay under way stops: it resumes when the plugin comes back
  if not p then return false end
  local retired = retire(p)
  remove_hooks(p)
  plugins[name] = nil
  logf("info", p, "plugin_unloaded", "version=" .. lq(p.version) .. (#retired > 0 and (" given_up=%d"):format(#retired) or ""))
  for _, job in ipairs(retired) do abandon(job, nil, false) end
  return true
end

-- Whether plugin name should be reloaded for its config section now being
-- config: it runs with another section, or its newest version failed to load.
function host.section_changed(name, config)
  if failures[name] then return true end
  local p = plugins[name]
  return p ~= nil and p.config_sig ~= serialize(config)
end

-- The sections of config_file that name no plugin of dir (neither
-- DIR/NAME.lua nor DIR/NAME/init.lua): a plugin_warning each, with the
-- section's line, as `hubuctl plugin check` warns (a misspelled plugin name
-- configures nothing). Read from the file's text, as config_where does:
-- lines that start with plugin "NAME". Returns how many.
function host.warn_orphan_sections(config_file, dir)
  if type(config_file) ~= "string" or type(dir) ~= "string" then return 0 end
  local f = io.open(config_file, "rb")
  if not f then return 0 end
  local text = f:read("*a") or ""
  f:close()
  local n, seen, i = 0, {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    i = i + 1
    local name = line:match("^%s*plugin%s*%(?%s*[\"']([^\"'/]+)[\"']")
    if name and not seen[name] then
      seen[name] = true
      local fh = io.open(dir .. "/" .. name .. ".lua", "rb") or io.open(dir .. "/" .. name .. "/init.lua", "rb")
      if fh then
        fh:close()
      else
        n = n + 1
        logf("warn", { name = name }, "plugin_warning", "warning=" .. lq(("the section of plugin %s (%s:%d) names no "
          .. "file in %s (%s.lua or %s/init.lua), so it does nothing"):format(name, config_file, i, dir, name, name)))
      end
    end
  end
  return n
end

-- The plugin that reserved user (plugin:reserve_user), or nil.
function host.reserved_by(user)
  for name, p in pairs(plugins) do
    if p.reserved and p.reserved[user] then return name end
  end
  return nil
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
    local reserved = {}
    for user in pairs(p.reserved or EMPTY) do reserved[#reserved + 1] = user end
    table.sort(reserved)
    out[#out + 1] = { name = name, version = p.version, summary = p.summary, policy = p.policy,
                      calls = m.calls, errors = m.errors, seconds = m.seconds, path = p.path,
                      priority = p.priority, budget_ms = p.budget or C.budget_ms(), folder = p.dir ~= nil, loaded_at = p.loaded_at, reloads = p.reloads,
                      hooks = hooked, timers = ntimers, reload_error = failures[name], reserved = reserved }
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
-- call, at once: for the events whose verdict C needs now (auth,
-- message.route, session.read). Returns "error" with the failing plugin when
-- a fail-closed plugin raised. The caller holds the budget window (C opens
-- it around its call into the host); each handler starts with its plugin's
-- whole budget.
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
      local saved = host.current
      host.current = h.plugin
      C.budget_renew(h.plugin.budget)
      local t0 = calls % 16 == 1 and C.clock() or nil -- time is sampled: 1 call in 16
      local ok, err = xpcall(h.fn, plugin_traceback, ev)
      if t0 then m.seconds = m.seconds + (C.clock() - t0) * 16 end
      host.current = saved
      if not ok then
        m.errors = m.errors + 1
        logf("error", h.plugin, "hook_failed", ("hook=%s policy=%s %s"):format(event, h.plugin.policy, error_fields(err)))
        if h.plugin.policy == "closed" then return "error", h.plugin.name end
      end
      if rawget(ev, "_stop") then break end
    end
  end
  return nil
end

-- The next handler of job's chain, or nil. A chain that waited may find the
-- event's handlers changed meanwhile (a plugin loaded, reloaded or
-- unloaded): it goes on in the new list with the handlers it has not run; a
-- plugin another version of which ran already is skipped, unless that
-- version's handler was given up by the reload (then its new version runs).
local function next_handler(job)
  local list = hooks[job.event] or EMPTY
  if list ~= job.list then
    local ran, names, gave_up, redo = job.ran or {}, job.ran_names or {}, job.gave_up or EMPTY, {}
    for h in pairs(gave_up) do redo[h.plugin.name] = true end
    for k = 1, job.i do
      local h = job.list[k]
      if not gave_up[h] then
        ran[h] = true
        if not redo[h.plugin.name] then names[h.plugin.name] = h.plugin end
      end
    end
    job.ran, job.ran_names, job.list, job.i = ran, names, list, 0
  end
  local ran, names, kind = job.ran, job.ran_names, rawget(job.ev, "kind")
  for i = job.i + 1, #list do
    local h = list[i]
    if (not h.kinds or h.kinds[kind]) and not (ran and (ran[h] or (names[h.plugin.name] and names[h.plugin.name] ~= h.plugin))) then
      job.i = i
      return h
    end
  end
  job.i = #list
  return nil
end

-- A chain: job.ev through the handlers of job.event in order, each in its own
-- protected call with its plugin's whole budget; a handler may wait.
chain = function(job)
  local ev = job.ev
  local kind = rawget(ev, "kind")
  while true do
    local h
    local list, i = job.list, job.i + 1
    if (hooks[job.event] or EMPTY) == list and not job.ran then -- the usual case: the list it began with
      h = list[i]
      while h and h.kinds and not h.kinds[kind] do i = i + 1; h = list[i] end
      job.i = h and i or #list
    else
      h = next_handler(job)
    end
    if not h then break end
    job.h = h
    local m = h.metrics
    if not m then m = metrics[h.plugin.name]; h.metrics = m end
    local calls = m.calls + 1
    m.calls = calls
    host.current = h.plugin
    C.budget_renew(h.plugin.budget)
    local t0 = calls % 16 == 1 and C.clock() or nil -- time is sampled: 1 call in 16 (not when it waited)
    local ok, err = xpcall(h.fn, plugin_traceback, ev)
    if job.dl then stop_deadline(job) end
    if t0 and not job.waited then m.seconds = m.seconds + (C.clock() - t0) * 16 end
    job.waited = false
    host.current = nil
    if not ok then
      m.errors = m.errors + 1
      logf("error", h.plugin, "hook_failed", ("hook=%s policy=%s %s"):format(job.event, h.plugin.policy,
        error_fields(err)))
      if h.plugin.policy == "closed" then job.failed = h.plugin.name; break end
    end
    if rawget(ev, "_stop") then break end
  end
  job.h = false
  if job.finish then job.finish(job) end
end

-- message.send's answer, in host.send's form.
local function send_result(job)
  local ev = job.ev
  if job.failed then return "error", job.failed end
  local verdict = rawget(ev, "_verdict")
  if verdict then return "verdict", verdict, rawget(ev, "_reason"), rawget(ev, "_retry_after") end
  if rawget(ev, "_rewritten") then return "rewrite", rawget(ev, "body"), rawget(ev, "content_type"), rawget(ev, "meta") end
end

local function finish_send(job)
  if job.later then
    job.later = false
    C.send_verdict(job.ref, send_result(job))
  else
    job.done = true
  end
end

-- The message.send dispatchers: coroutines that each run one SEND's chain
-- at a time with a record of their own (no job or coroutine is made per
-- SEND). host.send resumes the idle one; one whose handler waits stays with
-- its SEND, and the next SEND takes another.
local send_pool = {}
local send_co = nil

local function send_loop(w)
  local user, device, session_id, client_id, body, content_type, meta, ref = coroutine.yield(DONE)
  while true do
    w.ev = setmetatable({ user = user, device = device, session_id = session_id, client_id = client_id,
                          body = body, content_type = content_type, meta = meta, kind = kind_of(session_id) },
                        SendEvent)
    w.list, w.i, w.ref, w.failed, w.done = hooks["message.send"] or EMPTY, 0, ref, false, false
    if w.ran then w.ran, w.ran_names, w.gave_up = false, false, false end -- (false, never nil: no key churn)
    chain(w)
    if w.done then
      user, device, session_id, client_id, body, content_type, meta, ref = coroutine.yield(DONE, send_result(w))
    else -- answered through C.send_verdict
      user, device, session_id, client_id, body, content_type, meta, ref = coroutine.yield(DONE)
    end
  end
end

local function send_dispatcher()
  local n = #send_pool
  if n > 0 then
    local co = send_pool[n]
    send_pool[n] = nil
    return co
  end
  local w = { event = "message.send", chain = true, deadline = DEADLINE_SEND_MS, finish = finish_send, pool = send_pool,
              ev = false, list = EMPTY, i = 0, ref = 0, h = false, failed = false, done = false, later = false,
              ran = false, ran_names = false, gave_up = false, waited = false, wait = false, dl = false, dl_gen = 0 }
  local co = coroutine.create(send_loop)
  w.co = co
  jobs[co] = w
  coroutine.resume(co, w) -- to its first yield
  return co
end

-- message.send, called by C with the SEND's fields (meta: a table, or nil when
-- the SEND has none; ev.meta is then made on first use) and ref, which names
-- the SEND to C.send_verdict. Returns nothing when every handler let the
-- message through unchanged; else one of
--   "error", plugin                        a fail-closed plugin raised
--   "verdict", code, reason, retry_after   ev:reject(code, reason[, retry_after_ms])
--   "rewrite", body, content_type, meta    ev:rewrite{...}
--   "later"                                a handler waits: C.send_verdict(ref, ...) brings the answer
function host.send(user, device, session_id, client_id, body, content_type, meta, ref)
  if not hooks["message.send"] then return end
  local co = send_co or send_dispatcher()
  send_co = nil
  local saved = host.current
  local ok, sig, what, a, b, c = coroutine.resume(co, user, device, session_id, client_id, body, content_type, meta, ref)
  host.current = saved
  if ok and sig == DONE then
    send_co = co
    return what, a, b, c
  end
  local w = jobs[co]
  if ok and sig == WAIT then
    w.later = true
    return "later"
  end
  jobs[co], w.co = nil, nil
  if not ok then -- an error in this file's code around the handlers: as if no plugin had spoken
    log("error", w.h and w.h.plugin, "plugin_host_failed", tostring(sig))
    return nil
  end
  abandon(w, "coroutine.yield in a hook (yield only inside a coroutine of your own)", true)
  if w.done then return send_result(w) end
  w.later = true
  return "later"
end

local function finish_call(job)
  local ev = job.ev
  local code, payload, reason
  if job.failed then
    code, reason = "INTERNAL", "plugin " .. job.failed .. " failed"
  elseif rawget(ev, "_result") then
    code, payload = "OK", ev._result
  elseif rawget(ev, "_code") then
    code, reason = ev._code, ev._reason
  else
    code, reason = "INTERNAL", "the plugin did not answer"
  end
  C.call_reply(ev.user, ev.conn_id, ev.request_id, code, payload or "", reason or "")
end

-- call.<method>: answered through C.call_reply, now or once its handlers waited.
function host.run_call(event, ev)
  C.budget_start(nil)
  start({ event = event, ev = ev, list = hooks[event] or EMPTY, i = 0, chain = true, deadline = DEADLINE_CALL_MS,
          finish = finish_call }, chain)
  C.budget_stop()
end

-- connect, disconnect: handlers may wait; nothing is answered.
function host.dispatch_plain(event, ev)
  local list = hooks[event]
  if not list then return end
  start({ event = event, ev = ev, list = list, i = 0, chain = true }, chain)
end

-- message.stored from the store's log: each plugin's position (the last
-- message its handlers were given) is saved by C about once a second; after a
-- restart, or when a plugin comes back, the messages past it are given again,
-- marked replayed (stored_pos and friends, declared at the top). Each
-- handler runs as a job of its own: one that waits holds its plugin's saved
-- position back until it is done, and a plugin with STORED_WAITING_MAX
-- handlers waiting is handed no more messages until half of them are done;
-- it then catches up from the log (behind).

local function stored_release(job)
  local name, inflight = job.name, stored_inflight[job.name]
  if not inflight then return end -- unloaded meanwhile
  stored_waiting[name] = stored_waiting[name] - 1
  if job.pos and job.pos > 0 then
    local n = (inflight[job.pos] or 1) - 1
    inflight[job.pos] = n > 0 and n or nil
    stored_dirty[name] = true
  end
end

local function finish_stored(job)
  job.done = true
  if not job.held then return end
  job.held = nil
  stored_release(job)
  local b = behind[job.name]
  if b and not b.gen and (stored_waiting[job.name] or 0) <= (job.h_plugin.stored_waiting or STORED_WAITING_MAX) / 2 then
    catch_up(job.name)
  end
end

local function stored_one(job)
  local h = job.h
  local m = metrics[job.name]
  local calls = m.calls + 1
  m.calls = calls
  host.current = h.plugin
  local t0 = calls % 16 == 1 and C.clock() or nil
  local ok, err = xpcall(h.fn, plugin_traceback, job.ev)
  if t0 and not job.waited then m.seconds = m.seconds + (C.clock() - t0) * 16 end
  host.current = nil
  if not ok then -- at least once, not until it succeeds: a failing handler is not called again
    m.errors = m.errors + 1
    logf("error", h.plugin, "hook_failed", "hook=message.stored " .. error_fields(err))
  end
  job.h = false
  finish_stored(job)
end

-- p has too many handlers waiting: from now on it is handed nothing live,
-- and a replay under way stops; once it has room it reads the log from the
-- last position every message up to which it was handed (catch_up).
local function fall_behind(p, pos)
  local name = p.name
  local from = stored_pos[name] or 0
  if pos and pos - 1 < from then from = pos - 1 end -- an earlier handler of its own had this message
  replays[name], catching_up[name] = nil, nil
  stored_pos[name], stored_dirty[name] = from, true
  behind[name] = { from = from, skipped = 0 }
  logf("warn", p, "stored_behind", ("waiting=%d from=%d msg=%s"):format(stored_waiting[name] or 0, from,
    lq("too many message.stored handlers wait; later messages are read from the log once half of them are done")))
end

catch_up = function(name)
  local b = behind[name]
  if not b or b.gen or not plugins[name] then return end
  replay_count = replay_count + 1
  b.gen = replay_count
  replays[name] = b.gen
  C.replay_from(name, b.gen, b.from)
end

-- only: the one plugin a replay is for. Returns "full" when that plugin has
-- too many handlers waiting (C stops the replay's batch; the plugin catches
-- up later).
function host.dispatch_stored(ev, only)
  local list = hooks["message.stored"]
  if not list then return end
  local pos = ev.log_pos
  if only and behind[only] then rawset(ev, "replayed", false) end -- read from the log, but handed over for the first time
  for i = 1, #list do
    local h = list[i]
    local name = h.plugin.name
    if (not only or name == only) and (not h.kinds or h.kinds[ev.kind]) then
      local b = behind[name]
      if b and not only then -- it catches up from the log: this message comes that way
        if pos and pos > b.skipped then b.skipped = pos end
      elseif (stored_waiting[name] or 0) >= (h.plugin.stored_waiting or STORED_WAITING_MAX) then
        fall_behind(h.plugin, pos)
        if only then return "full" end
        if pos and pos > behind[name].skipped then behind[name].skipped = pos end
      else
        local job = { event = "message.stored", ev = ev, h = h, h_plugin = h.plugin, name = name, pos = pos,
                      co = false, wait = false, waited = false, dl = false, done = false, held = false }
        C.budget_start(h.plugin.budget)
        start(job, stored_one)
        C.budget_stop()
        if not job.done then -- it waits: its message holds the plugin's saved position back
          job.held = true
          stored_waiting[name] = (stored_waiting[name] or 0) + 1
          local inflight = stored_inflight[name] or {}
          stored_inflight[name] = inflight
          if pos and pos > 0 then inflight[pos] = (inflight[pos] or 0) + 1 end
        end
        if pos and pos > 0 then
          if only or not catching_up[name] then
            if pos > (stored_pos[name] or 0) then stored_pos[name], stored_dirty[name] = pos, true end
          elseif pos > catching_up[name] then
            catching_up[name] = pos -- saved once the replay is done
          end
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

-- The replay gen of name reached the end of the log as it began, at
-- position last (gen nil: no position was saved, there was nothing to
-- replay): the live positions kept aside meanwhile count from now on. A
-- catch-up that skipped live messages past its end goes round again.
function host.replay_end(name, gen, last)
  if replays[name] ~= gen then return end -- stale, or a replay under way that this is not
  replays[name] = nil
  local b = behind[name]
  if b and b.gen == gen then
    if last and b.skipped > last then
      b.from, b.skipped, b.gen = last, 0, nil
      local p = plugins[name]
      if (stored_waiting[name] or 0) <= (p and p.stored_waiting or STORED_WAITING_MAX) / 2 then catch_up(name) end
    else
      behind[name] = nil
      logf("info", plugins[name], "stored_caught_up", ("at=%d"):format(last or 0))
    end
    return
  end
  local live = catching_up[name]
  catching_up[name] = nil
  if live and plugins[name] and live > (stored_pos[name] or 0) then stored_pos[name], stored_dirty[name] = live, true end
end

-- A batch of replay gen could not be read (at: the last position handed).
-- A catch-up tries again a second later; a replay at start waits for a restart.
function host.replay_failed(name, gen, at)
  local b = behind[name]
  if not (b and b.gen == gen and replays[name] == gen) then return end
  replays[name] = nil
  if at and at > b.from then b.from = at end
  b.gen = nil
  host_timer(1000, function() catch_up(name) end)
end

function host.take_dirty_cursors()
  local out = {}
  for name in pairs(stored_dirty) do out[name] = effective_position(name) end
  stored_dirty = {}
  return out
end

-- Timers: C owns the uv_timer; the callback comes back here and runs as a job.
function host.forget_timer(id) timer_fns[id] = nil end
function host.start_timer(p, every, seconds, fn)
  local id = C.timer_start(math.floor((tonumber(seconds) or 0) * 1000), every)
  timer_fns[id] = { fn = fn, plugin = p, every = every }
  p.timers[id] = id
  return id
end

local function run_timer(job)
  local ok, err = xpcall(job.fn, plugin_traceback)
  if not ok then
    local m = metrics[job.plugin.name]
    if m then m.errors = m.errors + 1 end
    logf("error", job.plugin, "timer_failed", error_fields(err))
  end
end

function host.timer_fired(id)
  local t = timer_fns[id]
  if not t then return end
  if not t.every then timer_fns[id] = nil; if t.plugin then t.plugin.timers[id] = nil end end
  if t.host then return t.fn() end
  C.budget_start(t.plugin.budget)
  start({ event = "timer", plugin = t.plugin, fn = t.fn }, run_timer)
  C.budget_stop()
end

-- ---- waiting: tickets ----

local function run_callback(job)
  local ok, err = xpcall(job.fn, plugin_traceback, unpack(job.args, 1, job.n))
  if not ok then logf("error", job.plugin, "callback_failed", error_fields(err)) end
end

-- The answer of ticket: resumes the job that waits for it, or runs its
-- callback as a job. Nothing runs for a version that is gone.
function host.complete(ticket, ...)
  local w = waiting[ticket]
  if not w then return end
  waiting[ticket] = nil
  local p = w.plugin
  if p and plugins[p.name] ~= p then return end
  C.budget_start(p and p.budget)
  if w.job then
    w.job.wait = nil
    resume(w.job, ...)
  else
    start({ event = "callback", plugin = p, fn = w.fn, n = select("#", ...), args = { ... } }, run_callback)
  end
  C.budget_stop()
end

-- Runs submit(ticket), which returns how to cancel what it started (or
-- nil: a function cancel(ticket, w)) and what that needs (w.arg), and
-- waits: yields the job it runs in, or hands the result to callback later.
-- Outside a job and without a callback, an error.
-- queue_only: a write that may also just be queued (outside a job, with no
-- callback): it is applied in order, and a failure is logged.
local function await(what, callback, submit, queue_only)
  local plugin = host.current or loading
  local co = coroutine.running()
  local job = co and jobs[co]
  if not callback and not job and queue_only then
    callback = function(ok, err) if not ok then log("warn", plugin, "kv_write_failed", tostring(err)) end end
  end
  if not callback and not job then
    raise(what .. " waits: call it in message.send, message.stored, call.<method>, connect, disconnect or a timer,"
      .. " or pass a callback")
  end
  next_ticket = next_ticket + 1
  local t = next_ticket
  local cancel, arg = submit(t)
  if callback then
    waiting[t] = { fn = callback, plugin = plugin, cancel = cancel, arg = arg }
    return true
  end
  waiting[t] = { job = job, plugin = plugin, cancel = cancel, arg = arg }
  job.wait, job.waited = t, true
  if job.deadline and job.h and not job.dl then arm_deadline(job) end
  return coroutine.yield(WAIT)
end
host.await = await

-- At shutdown: every wait is cancelled, and every SEND still waiting for
-- its handlers is answered UNAVAILABLE (its client sends it again).
function host.shutdown()
  for t, w in pairs(waiting) do
    waiting[t] = nil
    if w.cancel then w.cancel(t, w) end
    local job = w.job
    if job and job.later then
      job.later = nil
      C.send_verdict(job.ref, "verdict", "UNAVAILABLE", "the server is shutting down", 1000)
    end
  end
end

-- ---- events: their fields and verdict methods ----
-- Each event's table has a metatable of its kind. Reading a field the event
-- does not have, or calling a verdict it does not have (a typo, a verdict of
-- another hook), is an error at the plugin's line naming what there is:
-- a mistake is not silently nil. Keys starting with "_" are the host's.

local function event_class(what, fields, verdicts, lazy)
  local cls, known = {}, {}
  for _, f in ipairs(fields) do known[f] = true end
  local field_list, verdict_list = table.concat(fields, ", "), table.concat(verdicts, ", ")
  cls.__index = function(ev, k)
    local m = cls[k]
    if m ~= nil and k ~= "__index" then return m end
    if lazy and lazy[k] then return lazy[k](ev) end
    if known[k] or type(k) ~= "string" or k:byte(1) == 95 then return nil end
    error(("%s events have no field or verdict %q; fields: %s; verdicts: %s"):format(what, k, field_list,
      verdict_list ~= "" and verdict_list or "none"), 2)
  end
  return cls
end

-- The Codes a verdict may give (SEND_ACK, CALL_RESULT).
local VERDICT_CODES = { "REJECTED", "RATE_LIMITED", "FORBIDDEN", "INVALID", "NOT_FOUND", "UNAVAILABLE", "INTERNAL",
                        "TIMEOUT" }
local VERDICT_CODE = {}
for _, c in ipairs(VERDICT_CODES) do VERDICT_CODE[c] = true end
local function verdict_code(what, code, default)
  if code == nil then return default end
  if not VERDICT_CODE[code] then
    error(("%s: code must be one of %s; got %s"):format(what, table.concat(VERDICT_CODES, ", "), describe(code)), 3)
  end
  return code
end
local function verdict_reason(what, reason)
  if reason == nil then return "" end
  if type(reason) ~= "string" and type(reason) ~= "number" then
    error(("%s: reason: expected a string, got %s"):format(what, describe(reason)), 3)
  end
  return tostring(reason)
end
local function check_event(self, cls, what)
  if getmetatable(self) ~= cls then error(what .. ": call it with a colon, as ev:" .. what:match("[%w_]+$") .. "(...)", 3) end
end

-- message.send. A SEND without meta has no meta table until a handler reads ev.meta.
SendEvent = event_class("message.send",
  { "user", "device", "session_id", "client_id", "body", "content_type", "meta", "kind" },
  { "reject(code, reason [, retry_after_ms])", "rewrite{ body =, content_type =, meta = }", "stop()" },
  { meta = function(ev) local t = {}; rawset(ev, "meta", t); return t end })
-- retry_after_ms: for RATE_LIMITED (or UNAVAILABLE), how long the sender
-- should wait; it reaches the client as SendAck.retry_after_ms.
function SendEvent:reject(code, reason, retry_after_ms)
  check_event(self, SendEvent, "ev:reject")
  code = verdict_code("ev:reject", code, "REJECTED")
  reason = verdict_reason("ev:reject", reason)
  if retry_after_ms ~= nil then
    if type(retry_after_ms) ~= "number" or retry_after_ms < 0 or retry_after_ms ~= retry_after_ms then
      error(("ev:reject: retry_after_ms must be a number of milliseconds >= 0, got %s"):format(describe(retry_after_ms)), 2)
    end
    rawset(self, "_retry_after", math.min(math.ceil(retry_after_ms), 4294967295))
  end
  rawset(self, "_verdict", code); rawset(self, "_reason", reason); rawset(self, "_stop", true)
end
local REWRITE_KEYS = { body = true, content_type = true, meta = true }
function SendEvent:rewrite(t)
  check_event(self, SendEvent, "ev:rewrite")
  if type(t) ~= "table" then expected(1, "ev:rewrite{ body =, content_type =, meta = }", "a table", t) end
  for k in pairs(t) do
    if not REWRITE_KEYS[k] then
      error(("ev:rewrite: no field %s to rewrite; fields are body, content_type, meta"):format(tostring(k)), 2)
    end
  end
  if t.meta ~= nil and type(t.meta) ~= "table" then expected(1, "ev:rewrite: meta", "a table of string = string", t.meta) end
  if t.body ~= nil then rawset(self, "body", tostring(t.body)); rawset(self, "_rewritten", true) end
  if t.content_type ~= nil then rawset(self, "content_type", tostring(t.content_type)); rawset(self, "_rewritten", true) end
  if t.meta ~= nil then rawset(self, "meta", t.meta); rawset(self, "_rewritten", true) end
end
function SendEvent:stop() rawset(self, "_stop", true) end
host.SendEvent = SendEvent

local CallEvent = event_class("call.<method>", { "user", "device", "conn_id", "method", "payload", "request_id" },
  { "reply(payload)", "error(code, reason)", "stop()" })
function CallEvent:reply(payload)
  check_event(self, CallEvent, "ev:reply")
  if payload ~= nil and type(payload) ~= "string" and type(payload) ~= "number" then
    expected(1, "ev:reply(payload)", "a string (JSON by convention)", payload)
  end
  rawset(self, "_result", payload == nil and "" or tostring(payload)); rawset(self, "_stop", true)
end
function CallEvent:error(code, reason)
  check_event(self, CallEvent, "ev:error")
  code = verdict_code("ev:error", code, "INVALID")
  rawset(self, "_code", code); rawset(self, "_reason", verdict_reason("ev:error", reason)); rawset(self, "_stop", true)
end
function CallEvent:stop() rawset(self, "_stop", true) end
host.CallEvent = CallEvent

-- message.route: ev:default(mode), ev:set(user, mode), ev:add(user [, mode]);
-- modes "push", "hint" (PULL_HINT instead of the message), "none".
local modes = { push = true, hint = true, none = true }
local function route_mode(what, mode)
  if not modes[mode] then error(("%s: mode must be \"push\", \"hint\" or \"none\", got %s"):format(what, describe(mode)), 3) end
end
local RouteEvent = event_class("message.route",
  { "session_id", "seq", "sender", "sender_device", "body", "content_type", "kind", "member_count" },
  { "default(mode)", "set(user, mode)", "add(user [, mode])", "stop()" })
function RouteEvent:default(mode)
  check_event(self, RouteEvent, "ev:default")
  route_mode("ev:default", mode)
  rawset(self, "_default", mode)
end
function RouteEvent:set(user, mode)
  check_event(self, RouteEvent, "ev:set")
  if type(user) ~= "string" then expected(1, "ev:set(user, mode): user", "a user id", user) end
  route_mode("ev:set", mode)
  local m = rawget(self, "_modes") or {}
  rawset(self, "_modes", m)
  m[user] = mode
end
function RouteEvent:add(user, mode)
  check_event(self, RouteEvent, "ev:add")
  if type(user) ~= "string" then expected(1, "ev:add(user [, mode]): user", "a user id", user) end
  route_mode("ev:add", mode or "push")
  local m = rawget(self, "_modes") or {}
  rawset(self, "_modes", m)
  m[user] = mode or "push"
  local e = rawget(self, "_extra") or {}
  rawset(self, "_extra", e)
  e[user] = true
end
function RouteEvent:stop() rawset(self, "_stop", true) end
host.RouteEvent = RouteEvent

-- auth: ev:accept([as_user]) or ev:reject(reason); the first verdict stops
-- the chain. ev.reserved: the plugin that reserved the user (a bot), or nil.
local AuthEvent = event_class("auth", { "user", "device", "token", "client_info", "reserved" },
  { "accept([as_user])", "reject(reason)", "stop()" })
function AuthEvent:accept(as)
  check_event(self, AuthEvent, "ev:accept")
  if as ~= nil and (type(as) ~= "string" or #as < 1 or #as > 64 or not as:find("^[%w_%.@%-]+$")) then
    expected(1, "ev:accept([as_user])", "a user id (1-64 bytes of [A-Za-z0-9_.@-])", as)
  end
  rawset(self, "_verdict", "accept"); rawset(self, "_as", as); rawset(self, "_stop", true)
end
function AuthEvent:reject(reason)
  check_event(self, AuthEvent, "ev:reject")
  rawset(self, "_verdict", "reject"); rawset(self, "_reason", verdict_reason("ev:reject", reason)); rawset(self, "_stop", true)
end
function AuthEvent:stop() rawset(self, "_stop", true) end
host.AuthEvent = AuthEvent

-- session.read: ev:forbid(reason).
local ReadEvent = event_class("session.read", { "user", "session_id", "op", "kind" }, { "forbid(reason)", "stop()" })
function ReadEvent:forbid(reason)
  check_event(self, ReadEvent, "ev:forbid")
  reason = verdict_reason("ev:forbid", reason)
  rawset(self, "_forbid", reason ~= "" and reason or "forbidden"); rawset(self, "_stop", true)
end
function ReadEvent:stop() rawset(self, "_stop", true) end
host.ReadEvent = ReadEvent

-- Events without a verdict but stop(): message.stored, connect and
-- disconnect, group.changed.
local function stop(self) rawset(self, "_stop", true) end
local StoredEvent = event_class("message.stored",
  { "session_id", "seq", "msg_id", "sender", "sender_device", "client_id", "body", "content_type", "kind", "to_user",
    "log_pos", "replayed" }, { "stop()" })
StoredEvent.stop = stop
host.StoredEvent = StoredEvent
local ConnectEvent = event_class("connect and disconnect", { "user", "device", "conn_id" }, { "stop()" })
ConnectEvent.stop = stop
host.ConnectEvent = ConnectEvent
local GroupEvent = event_class("group.changed", { "op", "group", "users", "by" }, { "stop()" })
GroupEvent.stop = stop
host.GroupEvent = GroupEvent
host.Plain = StoredEvent -- (the name C used for message.stored before)

-- ---- im.http: HTTP requests on the event loop (C: http_client.c) ----
-- Each request is a ticket: C.http_start(ticket, ...) starts it and
-- host.http_done(ticket, ...) answers it; a waiting job or a callback gets
-- status, body, headers (or nil, err). The figures per plugin live in its
-- metrics record (m.http) and go to /metrics through host.http_metrics.
local HTTP_METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true, DELETE = true, OPTIONS = true }
local HTTP_BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 } -- seconds
local http_in_flight = 0  -- requests of all plugins
local http_open = {}      -- ticket -> the figures of the plugin that asked (m.http)

local function http_figures(name)
  local m = metrics[name]
  local f = m.http
  if not f then
    f = { requests = 0, errors = 0, in_flight = 0, sum = 0, count = 0, buckets = {} }
    for i = 1, #HTTP_BUCKETS do f.buckets[i] = 0 end
    m.http = f
  end
  return f
end

-- C: the request of ticket finished: status, body, headers (a table), or
-- nil, error; seconds from its start.
function host.http_done(ticket, status, a, b, seconds)
  local f = http_open[ticket]
  if not f then return end
  http_open[ticket] = nil
  f.in_flight, http_in_flight = f.in_flight - 1, http_in_flight - 1
  f.sum, f.count = f.sum + seconds, f.count + 1
  for i = 1, #HTTP_BUCKETS do
    if seconds <= HTTP_BUCKETS[i] then f.buckets[i] = f.buckets[i] + 1 end
  end
  if status then return host.complete(ticket, status, a, b) end
  f.errors = f.errors + 1
  host.complete(ticket, nil, a)
end

-- For /metrics: {name, requests, errors, in_flight, sum, count, buckets = {cumulative...}, le = {...}} per plugin.
function host.http_metrics()
  local out = {}
  for name in pairs(plugins) do
    local f = metrics[name] and metrics[name].http
    if f then
      out[#out + 1] = { name = name, requests = f.requests, errors = f.errors, in_flight = f.in_flight,
                        sum = f.sum, count = f.count, buckets = f.buckets }
    end
  end
  table.sort(out, function(x, y) return x.name < y.name end)
  return out, HTTP_BUCKETS
end

-- A request's cancel (await): its answer never comes.
local function http_cancel(t)
  local f = http_open[t]
  if not f then return end
  http_open[t] = nil
  f.in_flight, http_in_flight = f.in_flight - 1, http_in_flight - 1
  C.http_cancel(t)
end

local function whole_option(req, key, default, min, max)
  local v = req[key]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < min or v > max then
    error(("im.http: %s must be a number from %d to %d, got %s"):format(key, min, max, tostring(v)), 4)
  end
  return math.floor(v)
end

-- im.http{ method =, url =, headers =, body =, timeout_ms =, max_response =, redirects =, verify =, ca_file = }
-- [, callback]: status, body, headers in a job (it waits), else true and
-- callback(status, body, headers) later; nil, err on failure. Too many
-- requests in flight: nil, "busy: ..." at once (the callback is not called).
local function http_request(req, callback)
  local p = host.current
  if loading then error("im.http is not allowed while a plugin loads (do it in a hook or a timer)", 2) end
  if not p then error("im.http: no plugin is running", 2) end
  if type(req) ~= "table" then error("im.http{ url =, method =, headers =, body =, timeout_ms = }: a table is expected", 2) end
  local url = req.url
  if type(url) ~= "string" or not url:find("^[hH][tT][tT][pP][sS]?://[^%s%z]+$") then
    error("im.http: url must be an http:// or https:// URL without spaces, got " .. tostring(url), 2)
  end
  local body = req.body
  if body ~= nil and type(body) ~= "string" then error("im.http: body must be a string", 2) end
  local method = req.method or (body and "POST" or "GET")
  method = type(method) == "string" and method:upper() or method
  if not HTTP_METHODS[method] then
    error("im.http: method must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, got " .. tostring(req.method), 2)
  end
  if body and (method == "GET" or method == "HEAD") then error("im.http: a " .. method .. " has no body", 2) end
  local lines = EMPTY
  if req.headers ~= nil then
    lines = {}
    if type(req.headers) ~= "table" then error("im.http: headers must be a table of name = value", 2) end
    for k, v in pairs(req.headers) do
      if type(k) ~= "string" or not k:find("^[%w!#$%%&'*+.^_`|~-]+$") then
        error(("im.http: header name %s is not a token"):format(tostring(k)), 2)
      end
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" or v:find("[%z\r\n]") then
        error(("im.http: header %s: the value must be a string without CR, LF or NUL"):format(k), 2)
      end
      lines[#lines + 1] = k .. ": " .. v
    end
    table.sort(lines)
  end
  local timeout = whole_option(req, "timeout_ms", HTTP.timeout_ms, 1, HTTP.timeout_max)
  local max_response = whole_option(req, "max_response", HTTP.max_response, 0, HTTP.max_response_limit)
  local redirects = whole_option(req, "redirects", 0, 0, HTTP.redirects_max)
  local verify = req.verify
  if verify == nil then verify = true elseif type(verify) ~= "boolean" then error("im.http: verify must be a boolean", 2) end
  local ca_file = req.ca_file
  if ca_file ~= nil and type(ca_file) ~= "string" then error("im.http: ca_file must be a path", 2) end
  if callback ~= nil and type(callback) ~= "function" then error("im.http: the callback must be a function", 2) end
  local f = http_figures(p.name)
  f.requests = f.requests + 1
  local limit = p.http_concurrency or HTTP.concurrency
  if f.in_flight >= limit or http_in_flight >= HTTP.total then
    f.errors = f.errors + 1
    return nil, f.in_flight >= limit and ("busy: %d requests of plugin %s in flight"):format(f.in_flight, p.name)
      or ("busy: %d requests in flight"):format(http_in_flight)
  end
  return await("im.http", callback, function(t)
    local ok, err = C.http_start(t, method, url, lines, body, timeout, max_response, redirects, verify, ca_file)
    if not ok then error("im.http: " .. tostring(err), 0) end
    http_open[t] = f
    f.in_flight, http_in_flight = f.in_flight + 1, http_in_flight + 1
    return http_cancel
  end)
end

local function sleep_cancel(_, w) stop_host_timer(w.arg) end

-- im.sleep(seconds): waits in a job (a hook that may wait, a timer, a callback).
local function sleep(seconds)
  local s = tonumber(seconds)
  if not s or s < 0 or s ~= s then error("im.sleep(seconds): seconds must be a number >= 0", 2) end
  local co = coroutine.running()
  if loading or not (co and jobs[co]) then
    error("im.sleep waits: call it in message.send, message.stored, call.<method>, connect, disconnect, a timer"
      .. " or a callback (im.after elsewhere)", 2)
  end
  return await("im.sleep", nil, function(t)
    return sleep_cancel, host_timer(math.floor(s * 1000), function() host.complete(t, true) end)
  end)
end

-- group.changed, after the store applied a plugin's group change: handlers
-- may wait, nothing is answered.
local function group_changed(op, group, users, by)
  if not hooks["group.changed"] then return end
  C.budget_start(nil)
  host.dispatch_plain("group.changed", setmetatable({ op = op, group = group, users = users, by = by }, GroupEvent))
  C.budget_stop()
end

-- C: a group changed by hubuctl group through the admin listener (by "admin").
function host.group_changed(op, group, users, by) group_changed(op, group, users, by) end

-- A group op that waits for the store and, once it succeeded, fires group.changed.
local function group_op(what, op, group, users, arg, callback)
  local p = host.current
  local by = p and p.name or "-"
  if callback then
    return await(what, function(ok, err, ...)
      if ok then group_changed(op, group, users, by) end
      return callback(ok, err, ...)
    end, function(t) C.group_op(op, t, group, arg) end)
  end
  local ok, err = await(what, nil, function(t) C.group_op(op, t, group, arg) end)
  if ok then group_changed(op, group, users, by) end
  return ok, err
end

-- The im API plugins see. Actions are refused while a plugin loads.
local function not_loading(what)
  if loading then raise(what .. " is not allowed while a plugin loads (do it in a hook or a timer)") end
end
local LOG_LEVELS = { debug = true, info = true, warn = true, error = true }
local function check_string(what, v, level)
  if type(v) ~= "string" then expected(level + 1, what, "a string", v) end
end
local function check_callback(what, cb)
  if cb ~= nil and type(cb) ~= "function" then expected(2, what .. ": callback", "a function", cb) end
end
local function check_id(what, v)
  if type(v) ~= "string" or #v < 1 or #v > 64 or not v:find("^[%w_%.@%-]+$") then
    expected(2, what, "a user id (1-64 bytes of [A-Za-z0-9_.@-])", v)
  end
end
local function check_group(what, v)
  if type(v) ~= "string" or not v:find("^g:[%w_%.@%-]+$") or #v > 66 then expected(2, what, 'a group id "g:NAME"', v) end
end
local SEND_KEYS = { as = true, session = true, body = true, content_type = true, device = true }
host.im = {
  log = function(level, fmt, ...)
    if not LOG_LEVELS[level] then expected(1, "im.log(level, fmt, ...): level", '"debug", "info", "warn" or "error"', level) end
    local msg
    if select("#", ...) > 0 then
      check_string("im.log(level, fmt, ...): fmt", fmt, 1)
      local ok, m = pcall(string.format, fmt, ...)
      if not ok then error("im.log: " .. tostring(m):gsub("^.-: ", ""), 2) end
      msg = m
    else
      msg = tostring(fmt)
    end
    local p = loading or host.current
    C.log(level, p and p.name or "-", "plugin_log", msg)
  end,
  now = C.now,
  send = function(t)
    not_loading("im.send")
    if type(t) ~= "table" then expected(1, "im.send{ as =, session =, body = [, content_type =, device =] }", "a table", t) end
    for k in pairs(t) do
      if not SEND_KEYS[k] then
        error(("im.send: no field %s; fields are as, session, body, content_type, device"):format(tostring(k)), 2)
      end
    end
    check_id("im.send: as", t.as)
    check_string("im.send: session", t.session, 1)
    if t.body == nil then expected(1, "im.send: body", "a string", nil) end
    if t.content_type ~= nil then check_string("im.send: content_type", t.content_type, 1) end
    if t.device ~= nil then check_id("im.send: device", t.device) end
    return C.send(t.as, t.device or "bot", t.session, tostring(t.body), t.content_type or "")
  end,
  event = function(user, name, payload, sender)
    not_loading("im.event")
    check_id("im.event(user, name, payload [, sender]): user", user)
    check_string("im.event(user, name, payload [, sender]): name", name, 1)
    if payload ~= nil then check_string("im.event: payload", payload, 1) end
    return C.event(user, name, payload or "", sender or "")
  end,
  token = function(user, ttl)
    check_id("im.token(user [, ttl_s]): user", user)
    if ttl ~= nil and (type(ttl) ~= "number" or ttl <= 0) then expected(1, "im.token: ttl_s", "a number > 0", ttl) end
    return C.token(user, ttl or 86400)
  end,
  -- Durable per-plugin key/value (the store's kv table). Each call waits for
  -- the store: in a call.<method> hook it returns the result; elsewhere pass a
  -- callback, which gets it later.
  kv = {
    get = function(key, callback)
      check_string("im.kv.get(key [, callback]): key", key, 1)
      check_callback("im.kv.get", callback)
      local p = host.current or loading
      return await("im.kv.get", callback, function(t) C.kv("get", t, p.name, key) end)
    end,
    set = function(key, value, callback)
      check_string("im.kv.set(key, value [, callback]): key", key, 1)
      if value == nil then expected(1, "im.kv.set(key, value): value", "a string (im.kv.delete removes a key)", nil) end
      check_callback("im.kv.set", callback)
      local p = host.current or loading
      return await("im.kv.set", callback, function(t) C.kv("set", t, p.name, key, tostring(value)) end, true)
    end,
    delete = function(key, callback)
      check_string("im.kv.delete(key [, callback]): key", key, 1)
      check_callback("im.kv.delete", callback)
      local p = host.current or loading
      return await("im.kv.delete", callback, function(t) C.kv("delete", t, p.name, key) end, true)
    end,
  },
  kick = function(user, reason)
    not_loading("im.kick")
    check_id("im.kick(user [, reason]): user", user)
    return C.kick(user, reason or "kicked")
  end,
  token_verify = function(token, user)
    check_string("im.token_verify(token, user): token", token, 1)
    check_string("im.token_verify(token, user): user", user, 1)
    return C.token_verify(token, user)
  end,
  members = function(session, callback)
    check_string("im.members(session [, callback]): session", session, 1)
    check_callback("im.members", callback)
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
    check_group("im.create_group(group, members [, callback]): group", group)
    if type(members) ~= "table" then expected(1, "im.create_group(group, members): members", "a list of user ids", members) end
    check_callback("im.create_group", callback)
    local list = {}
    for i, u in ipairs(members) do check_id(("im.create_group: members item %d"):format(i), u); list[i] = u end
    return group_op("im.create_group", "create", group, list, members, callback)
  end,
  add_member = function(group, user, callback)
    not_loading("im.add_member")
    check_group("im.add_member(group, user [, callback]): group", group)
    check_id("im.add_member(group, user [, callback]): user", user)
    check_callback("im.add_member", callback)
    return group_op("im.add_member", "add", group, { user }, user, callback)
  end,
  remove_member = function(group, user, callback)
    not_loading("im.remove_member")
    check_group("im.remove_member(group, user [, callback]): group", group)
    check_id("im.remove_member(group, user [, callback]): user", user)
    check_callback("im.remove_member", callback)
    return group_op("im.remove_member", "remove", group, { user }, user, callback)
  end,
  sessions_of = function(user, callback)
    not_loading("im.sessions_of")
    check_id("im.sessions_of(user [, callback]): user", user)
    check_callback("im.sessions_of", callback)
    return await("im.sessions_of", callback, function(t) C.group_op("sessions_of", t, user) end)
  end,
  config = function(key) return C.config(key) end,
  wordset = function(list) return C.wordset(list) end,
  after = function(seconds, fn)
    not_loading("im.after")
    if type(seconds) ~= "number" or seconds < 0 then expected(1, "im.after(seconds, fn): seconds", "a number >= 0", seconds) end
    if type(fn) ~= "function" then expected(1, "im.after(seconds, fn): fn", "a function", fn) end
    return host.start_timer(host.current, false, seconds, fn)
  end,
  every = function(seconds, fn)
    not_loading("im.every")
    if type(seconds) ~= "number" or seconds <= 0 then expected(1, "im.every(seconds, fn): seconds", "a number > 0", seconds) end
    if type(fn) ~= "function" then expected(1, "im.every(seconds, fn): fn", "a function", fn) end
    return host.start_timer(host.current, true, seconds, fn)
  end,
  metrics = function(name) local m = metrics[name or (host.current and host.current.name)]; return m end,
  http = http_request,
  sleep = sleep,
  hmac_sha256 = function(key, data)
    if type(key) ~= "string" or type(data) ~= "string" then error("im.hmac_sha256(key, data): two strings", 2) end
    return C.hmac(key, data)
  end,
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
local reserved_metric = { calls_total = true, errors_total = true, seconds_total = true, -- the host's own
                          http_requests_total = true, http_errors_total = true, http_in_flight = true,
                          http_request_seconds = true }

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

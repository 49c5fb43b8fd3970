-- scratch.lua — hubud's plugin host (host.lua, the same code) without a
-- server: in `hubuctl plugin check` and in specs (spec/helpers/plugin.lua),
-- as OpenResty's `resty` runs code outside nginx. host.lua runs as it runs
-- in hubud; the C side it calls is replaced by stand-ins that record what a
-- plugin does (im.send, im.event, im.kick, im.kv, timers, im.http, group
-- changes, log lines) and answer from memory. Nothing waits for real time:
-- timers fire when the test advances the clock (S:advance), the store's and
-- HTTP's answers come when the event that asked is done (S:drain).
--
--   local scratch = chunk(native, host_source)  -- native: C functions (wordset, hmac, ...)
--   local S = scratch.new{ config = { moderation = { mode = "mask" } } }
--   local ok, err = S:load("moderation", "plugins/moderation.lua")
--   local v = S:send{ user = "alice", session = "d:alice:bob", body = "darn" }
--   -- v.code == "REJECTED", v.reason == "...", or v.body (a rewrite), or v.passed
--
-- native (from C: hubuctl, or the hubu_scratch Lua module): wordset, hmac,
-- label_ok, token(user, ttl), token_verify(token, user), clock.
local native, host_source = ...
local M = {}

local function quote_log(s)
  return '"' .. (tostring(s):gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" elseif c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return " "
  end)) .. '"'
end

-- Unquotes one log value written by host.lua (lq): \n, \", \\.
local function unquote(v)
  return (v:gsub("\\(.)", function(c) return c == "n" and "\n" or c end))
end

-- The fields of a log line's text as a table: key=value or key="quoted".
local function parse_fields(text)
  local t, i = {}, 1
  while i <= #text do
    local k, rest = text:match("^%s*([%w_%.]+)=()", i)
    if not k then break end
    i = rest
    if text:sub(i, i) == '"' then
      local j = i + 1
      while j <= #text do
        local c = text:sub(j, j)
        if c == "\\" then j = j + 2 elseif c == '"' then break else j = j + 1 end
      end
      t[k] = unquote(text:sub(i + 1, j - 1))
      i = j + 1
    else
      local v = text:match("^[^%s]*", i)
      t[k] = v
      i = i + #v
    end
  end
  return t
end
M.parse_fields = parse_fields

local Scratch = {}
Scratch.__index = Scratch

-- opts: config = { plugin = { section } } (each plugin's options),
-- config_file (a hubu.lua, for the lines warnings name), members = {
-- ["g:x"] = { users } } (the groups the store has), now_ms (the wall
-- clock; default a fixed time), http = function(req) -> status, body,
-- headers | nil, err (answers im.http at once; without it requests wait
-- for S:http_answer), echo_logs (print log lines as they come).
function M.new(opts)
  opts = opts or {}
  local S = setmetatable({
    logs = {}, sent = {}, events = {}, kicks = {}, kv = {}, http = {}, replies = {}, verdicts = {},
    group_changes = {}, members = {}, config = opts.config or {}, config_file = opts.config_file,
    now = opts.now_ms or 1767225600000, clock_ms = 0, timers = {}, next_timer = 0, pending = {},
    http_fn = opts.http, echo = opts.echo_logs, next_ref = 0, next_conn = 0,
  }, Scratch)
  for g, users in pairs(opts.members or {}) do
    local l = {}
    for i, u in ipairs(users) do l[i] = u end
    S.members[g] = l
  end
  local C = {}
  S.C = C
  C.log = function(level, plugin, event, msg, raw)
    local text = raw and msg or ("msg=" .. quote_log(msg or ""))
    local line = { level = level, plugin = plugin, event = event, text = text }
    line.fields = parse_fields(text)
    S.logs[#S.logs + 1] = line
    if S.echo then S.echo(("level=%s event=%s plugin=%s %s"):format(level, event, plugin, text)) end
  end
  C.now = function() return S.now end
  C.clock = function() return S.clock_ms / 1000 + (native.clock and native.clock() or os.clock()) end
  C.send = function(as, device, session, body, content_type)
    S.sent[#S.sent + 1] = { as = as, device = device, session = session, body = body, content_type = content_type }
    return true
  end
  C.event = function(user, name, payload, sender)
    S.events[#S.events + 1] = { user = user, name = name, payload = payload, sender = sender }
    return 1
  end
  C.kick = function(user, reason)
    S.kicks[#S.kicks + 1] = { user = user, reason = reason }
    return 1
  end
  C.token = function(user, ttl) return native.token(user, ttl) end
  C.token_verify = function(token, user) return native.token_verify(token, user) end
  local function later(ticket, ...)
    S.pending[#S.pending + 1] = { ticket = ticket, n = select("#", ...), ... }
  end
  C.members = function(session)
    local kind = session:sub(1, 2)
    if kind == "d:" then
      local a, b = session:match("^d:([^:]+):([^:]+)$")
      if a then return { a, b } end
      return nil, "invalid session id"
    end
    local m = S.members[session]
    if not m then return nil, "not found" end
    local copy = {}
    for i, u in ipairs(m) do copy[i] = u end
    return copy
  end
  C.members_wait = function(ticket) later(ticket, nil, "not found") end
  C.config = function(key)
    local cfg = { heartbeat_ms = 30000, max_frame = 1048576, node_id = 0, data_dir = "./data", plugins_dir = "./plugins" }
    return cfg[key]
  end
  C.group_op = function(what, ticket, id, arg)
    if what == "sessions_of" then
      local out = {}
      for g, m in pairs(S.members) do
        for _, u in ipairs(m) do if u == id then out[#out + 1] = g end end
      end
      table.sort(out)
      return later(ticket, out)
    end
    local m = S.members[id]
    if what == "create" then
      if m then return later(ticket, nil, "exists") end
      local l = {}
      for i, u in ipairs(type(arg) == "table" and arg or {}) do l[i] = u end
      S.members[id] = l
    elseif what == "add" then
      if not m then return later(ticket, nil, "not found") end
      local has = false
      for _, u in ipairs(m) do has = has or u == arg end
      if not has then m[#m + 1] = arg end
    elseif what == "remove" then
      local at
      for i, u in ipairs(m or {}) do if u == arg then at = i end end
      if not at then return later(ticket, nil, "not found") end
      table.remove(m, at)
    end
    S.group_changes[#S.group_changes + 1] = { op = what, group = id, user = type(arg) == "string" and arg or nil }
    later(ticket, true)
  end
  C.kv = function(op, ticket, plugin, key, value)
    local mine = S.kv[plugin] or {}
    S.kv[plugin] = mine
    if op == "get" then return later(ticket, mine[key]) end
    if op == "set" then mine[key] = value else mine[key] = nil end
    later(ticket, true)
  end
  C.call_reply = function(user, conn_id, request_id, code, payload, reason)
    S.replies[request_id] = { user = user, conn_id = conn_id, code = code, payload = payload, reason = reason }
  end
  C.timer_start = function(ms, every)
    S.next_timer = S.next_timer + 1
    S.timers[S.next_timer] = { due = S.clock_ms + math.max(ms, 1), ms = math.max(ms, 1), every = every }
    return S.next_timer
  end
  C.timer_stop = function(id) S.timers[id] = nil end
  C.label_ok = function(s)
    if native.label_ok then return native.label_ok(s) end
    return true
  end
  C.hmac = function(key, data) return native.hmac(key, data) end
  C.wordset = native.wordset
  C.http_start = function(ticket, method, url, headers, body, timeout_ms)
    local req = { ticket = ticket, method = method, url = url, headers = headers, body = body, timeout_ms = timeout_ms }
    S.http[#S.http + 1] = req
    if S.http_fn then
      local status, a, b = S.http_fn(req)
      req.answered = true
      S.pending[#S.pending + 1] = { http = ticket, n = 3, status, a, b }
    end
    return true
  end
  C.http_cancel = function(ticket)
    for _, r in ipairs(S.http) do if r.ticket == ticket then r.cancelled = true end end
  end
  C.send_verdict = function(ref, what, a, b, c) S.verdicts[ref] = { what, a, b, c } end
  C.replay_from = function() end
  C.budget_start = function() end
  C.budget_stop = function() end
  C.budget_reset = function() end
  C.budget_renew = function() end
  C.budget_ms = function() return 100 end

  local chunk = assert(loadstring(host_source, "@host.lua"))
  S.host = chunk(C)
  S.host.host_sources[debug.getinfo(1, "S").short_src] = true
  return S
end

-- Runs what waits (store answers, HTTP answers given by opts.http) until
-- nothing does; bounded.
function Scratch:drain()
  for _ = 1, 10000 do
    local p = table.remove(self.pending, 1)
    if not p then return end
    if p.http then
      self.host.http_done(p.http, p[1], p[2], p[3], 0.001)
    else
      self.host.complete(p.ticket, unpack(p, 1, p.n))
    end
  end
  error("scratch: more than 10000 answers in a row (a loop of waits?)")
end

-- Answers the i-th im.http request (S.http[i]) with status, body, headers
-- (or nil, err).
function Scratch:http_answer(i, status, body, headers)
  local r = assert(self.http[i], "no im.http request " .. tostring(i))
  r.answered = true
  self.host.http_done(r.ticket, status, body, headers or {}, 0.001)
  self:drain()
end

-- The section of name in opts.config, as hubud hands it over.
local function section(self, name)
  local t = self.config[name]
  if t == nil then return {} end
  return t
end

-- Loads a plugin from its file (name defaults to the file's name); ok, or
-- nil and the error. S:warnings(name) lists what the load warned about.
function Scratch:load(name, path)
  if path == nil then
    path = name
    name = path:match("([^/]+)/init%.lua$") or path:match("([^/]+)%.lua$") or path
  end
  local ok, err = self.host.load(name, path, section(self, name), self.config_file)
  self:drain()
  if ok then return true end
  return nil, err
end

-- Loads a plugin from source text (written to a temporary file).
function Scratch:load_source(name, source)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(source)
  f:close()
  local dir = path:match("^(.*)/") or "."
  local named = dir .. "/" .. name .. ".lua"
  os.rename(path, named)
  local ok, err = self:load(name, named)
  os.remove(named)
  return ok, err
end

function Scratch:unload(name) return self.host.unload(name) end

-- Log lines (each { level, plugin, event, text, fields }) of event, or all.
function Scratch:log_lines(event)
  local out = {}
  for _, l in ipairs(self.logs) do if not event or l.event == event then out[#out + 1] = l end end
  return out
end

function Scratch:warnings(name)
  local out = {}
  for _, l in ipairs(self.logs) do
    if l.event == "plugin_warning" and (not name or l.plugin == name) then out[#out + 1] = l.fields.warning end
  end
  return out
end

-- message.send as hubud fires it for a SEND of user. t: user, session (or
-- session_id), body, content_type, meta, device, client_id. Returns the
-- verdict: { passed = true } (unchanged), { code =, reason =,
-- retry_after_ms = } (refused), { rewritten = true, body =, content_type =,
-- meta = }, or { code = "REJECTED", failed = plugin } (a fail-closed plugin failed).
function Scratch:send(t)
  self.next_ref = self.next_ref + 1
  local ref = self.next_ref
  local what, a, b, c = self.host.send(t.user, t.device or "phone", t.session or t.session_id, t.client_id or ref,
    t.body or "", t.content_type or "", t.meta, ref)
  self:drain()
  if what == "later" then
    local v = self.verdicts[ref]
    if not v then return { waiting = true, ref = ref } end
    what, a, b, c = v[1], v[2], v[3], v[4]
  end
  if what == nil then return { passed = true } end
  if what == "error" then return { code = "REJECTED", reason = "plugin " .. tostring(a) .. " failed", failed = a } end
  if what == "verdict" then return { code = a, reason = b, retry_after_ms = c } end
  return { rewritten = true, body = a, content_type = b, meta = c }
end

-- message.stored for a message stored in t.session by t.sender: fields as
-- hubud gives them (seq, msg_id, log_pos, kind and to_user filled in).
function Scratch:stored(t)
  self.seq = (self.seq or 0) + 1
  local session = t.session or t.session_id
  local kind = self.host.kind_of(session)
  local ev = { session_id = session, seq = t.seq or self.seq, msg_id = t.msg_id or tostring(1000 + self.seq),
               sender = t.sender, sender_device = t.sender_device or "phone", client_id = t.client_id or self.seq,
               body = t.body or "", content_type = t.content_type or "", log_pos = t.log_pos or self.seq,
               replayed = t.replayed or false, kind = kind }
  if kind == "direct" then
    local a, b = session:match("^d:([^:]+):([^:]+)$")
    ev.to_user = a == t.sender and b or a
  end
  self.host.dispatch_stored(setmetatable(ev, self.host.StoredEvent), nil)
  self:drain()
  return ev
end

-- A CALL of t.method by t.user with t.payload: the CALL_RESULT, { code,
-- payload, reason }.
function Scratch:call(t)
  self.next_ref = self.next_ref + 1
  local rid = self.next_ref
  local event = "call." .. t.method
  if not self.host.has(event) then return { code = "NOT_FOUND", payload = "", reason = "no plugin answers " .. t.method } end
  local ev = setmetatable({ user = t.user, device = t.device or "phone", method = t.method, payload = t.payload or "",
                            request_id = rid, conn_id = tostring(rid) }, self.host.CallEvent)
  self.host.run_call(event, ev)
  self:drain()
  return self.replies[rid] or { waiting = true }
end

local function plain(self, event, t, cls)
  self.next_conn = self.next_conn + 1
  local ev = setmetatable({ user = t.user, device = t.device or "phone", conn_id = t.conn_id or tostring(self.next_conn) },
                          cls)
  self.host.dispatch_plain(event, ev)
  self:drain()
  return ev
end
function Scratch:connect(t) return plain(self, "connect", t, self.host.ConnectEvent) end
function Scratch:disconnect(t) return plain(self, "disconnect", t, self.host.ConnectEvent) end

-- message.route: the plan, { default = mode, modes = { user = mode }, extra = { user = true } }.
function Scratch:route(t)
  local session = t.session or t.session_id
  local ev = setmetatable({ session_id = session, seq = t.seq or 1, sender = t.sender, sender_device = t.sender_device or "phone",
                            body = t.body or "", content_type = t.content_type or "", kind = self.host.kind_of(session),
                            member_count = t.member_count or 2 }, self.host.RouteEvent)
  local failed = self.host.dispatch("message.route", ev)
  return { default = rawget(ev, "_default") or "push", modes = rawget(ev, "_modes") or {},
           extra = rawget(ev, "_extra") or {}, failed = failed }
end

-- auth: { accepted = true, as = user } or { accepted = false, reason = }.
function Scratch:auth(t)
  local ev = setmetatable({ user = t.user, device = t.device or "phone", token = t.token or "", client_info = t.client_info or "",
                            reserved = self.host.reserved_by(t.user) }, self.host.AuthEvent)
  local failed = self.host.dispatch("auth", ev)
  if failed then return { accepted = false, reason = "authentication unavailable" } end
  if rawget(ev, "_verdict") == "accept" then return { accepted = true, as = rawget(ev, "_as") or t.user } end
  return { accepted = false, reason = rawget(ev, "_reason") or "invalid token" }
end

-- session.read: true, or false and the reason.
function Scratch:read(t)
  local session = t.session or t.session_id
  local ev = setmetatable({ user = t.user, session_id = session, op = t.op or "pull", kind = self.host.kind_of(session) },
                          self.host.ReadEvent)
  local failed = self.host.dispatch("session.read", ev)
  if failed then return false, "plugin " .. tostring(failed) .. " failed" end
  local why = rawget(ev, "_forbid")
  if why then return false, why end
  return true
end

-- Moves the clock on by seconds: the timers due meanwhile fire in order
-- (an every timer as often as it falls due), and what they wait for is answered.
function Scratch:advance(seconds)
  local target = self.clock_ms + seconds * 1000
  for _ = 1, 100000 do
    local id, t
    for i, x in pairs(self.timers) do
      if x.due <= target and (not t or x.due < t.due or (x.due == t.due and i < id)) then id, t = i, x end
    end
    if not id then break end
    self.now = self.now + (t.due - self.clock_ms) -- the wall clock moves with it
    self.clock_ms = t.due
    if t.every then t.due = t.due + t.ms else self.timers[id] = nil end
    self.host.timer_fired(id)
    self:drain()
  end
  self.now = self.now + (target - self.clock_ms)
  self.clock_ms = target
end

-- The reserved users and what a load listed: host.list's rows.
function Scratch:list() return self.host.list() end

-- ---- hubuctl plugin check ----

-- The plugin sections of a hubu.lua, as hubud reads them (settings are
-- ignored here). nil, err when the file does not run.
function M.read_config(path)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, ferr end
  local src = f:read("*a")
  f:close()
  local chunk, err = loadstring(src, "@" .. path)
  if not chunk then return nil, err end
  local sections = {}
  local env = setmetatable({
    plugin = function(name)
      return function(t)
        if sections[name] then error(("plugin '%s' is configured twice"):format(tostring(name)), 2) end
        sections[name] = t
      end
    end,
    os = { getenv = os.getenv }, string = string, table = table, math = math, tonumber = tonumber,
    tostring = tostring, type = type, pairs = pairs, ipairs = ipairs,
  }, { __index = function() return nil end, __newindex = function(t, k, v) rawset(t, k, v) end })
  setfenv(chunk, env)
  local ok, rerr = pcall(chunk)
  if not ok then return nil, rerr end
  return sections
end

-- The plugins of target (a file, NAME/init.lua, or a directory of them):
-- { name, path } in name order.
local function plugin_files(target, isdir)
  local out = {}
  if not isdir(target) then
    local name = target:match("([^/]+)/init%.lua$") or target:match("([^/]+)%.lua$")
    if not name then return nil, target .. ": not a .lua file or a plugin directory" end
    return { { name = name, path = target } }
  end
  local p = io.popen("ls -1A '" .. target:gsub("'", "'\\''") .. "' 2>/dev/null")
  local seen = {}
  for entry in p:lines() do
    local name = entry:match("^([^%.][^/]*)%.lua$")
    if name then
      seen[name] = true
      out[#out + 1] = { name = name, path = target .. "/" .. entry }
    elseif not entry:find("^%.") then
      local init = target .. "/" .. entry .. "/init.lua"
      local f = io.open(init, "rb")
      if f then f:close(); out[#out + 1] = { name = entry, path = init, folder = true } end
    end
  end
  p:close()
  local kept = {}
  for _, e in ipairs(out) do if not (e.folder and seen[e.name]) then kept[#kept + 1] = e end end
  table.sort(kept, function(a, b) return a.name < b.name end)
  return kept
end

-- hubuctl plugin check TARGET [--config FILE]: each plugin loaded in a
-- scratch host as hubud loads it, with its section of the config file; every
-- error and warning printed (out: a function of one line). Returns the
-- number of errors and of warnings.
function M.check(target, config_file, out, isdir)
  local errors, warnings = 0, 0
  target = target:match("^(.-)/*$") -- plugins/ names its files plugins/NAME.lua
  if target == "" then target = "/" end
  local config = {}
  if config_file then
    local sections, err = M.read_config(config_file)
    if not sections then
      out(("%s: error: %s"):format(config_file, tostring(err)))
      return 1, 0
    end
    config = sections
  end
  local files, ferr = plugin_files(target, isdir)
  if not files then out("error: " .. ferr); return 1, 0 end
  if #files == 0 then out(target .. ": no plugins (NAME.lua or NAME/init.lua)"); return 0, 1 end
  local S = M.new{ config = config, config_file = config_file }
  local names = {}
  for _, e in ipairs(files) do
    names[e.name] = true
    local ok, err = S:load(e.name, e.path)
    if ok then
      local p
      for _, row in ipairs(S:list()) do if row.name == e.name then p = row end end
      local hooks = {}
      for _, h in ipairs(p and p.hooks or {}) do hooks[#hooks + 1] = h.event end
      out(("%s: ok (version %s; hooks: %s)"):format(e.path, p and p.version ~= "" and p.version or "-",
        #hooks > 0 and table.concat(hooks, ", ") or "none"))
    else
      errors = errors + 1
      out(("%s: error: %s"):format(e.path, tostring(err)))
    end
  end
  for _, l in ipairs(S.logs) do
    if l.event == "plugin_warning" then
      warnings = warnings + 1
      out(("%s: warning: %s"):format(l.plugin, l.fields.warning or l.text))
    end
  end
  local cfg_names = {}
  for name in pairs(config) do cfg_names[#cfg_names + 1] = name end
  table.sort(cfg_names)
  for _, name in ipairs(cfg_names) do
    if not names[name] and isdir(target) then
      warnings = warnings + 1
      out(("%s: warning: plugin %q has a section but no file in %s"):format(config_file, name, target))
    end
  end
  return errors, warnings
end

return M

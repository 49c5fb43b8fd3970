-- server.lua — a real hubud for a spec: started on 127.0.0.1 with an
-- ephemeral port, a fresh temporary directory (data, secret, log, port file)
-- and an empty plugin directory unless one is given; stopped with SIGTERM.
--
--   local server = require("spec.helpers.server")
--   local srv = server.start{ groups = { ["g:team"] = { "alice", "bob" } } }
--   local alice = srv:connect("alice")          -- spec/helpers/hubu.lua client
--   ...
--   srv:stop()                                  -- closes srv's clients, then hubud
--
-- hubud runs in a background shell group that records its exit status in a
-- file (the Lua process is not its parent, so it cannot wait for it) and arms
-- a watchdog that SIGKILLs it after `lifetime_s`, so a crashed spec run never
-- leaves a server behind. Every descriptor of that group points at files or
-- /dev/null: a leftover process never holds ctest's output pipe open.
--
-- Environment: HUBUD (default ./build/hubud), HUBUCTL (default
-- ./build/hubuctl), HUBU_SPEC_KEEP=1 keeps the temporary directory.

local ffi = require("ffi")

pcall(ffi.cdef, [[ int poll(void *fds, unsigned long nfds, int timeout); ]])

local M = {}
-- Waits scale with HUBU_SPEC_TIME_SCALE, as the client's do.
M.wait_ms = require("spec.helpers.hubu").wait_ms

local Server = {}
Server.__index = Server

local function sleep_ms(ms)
  ffi.C.poll(nil, 0, ms)
end
M.sleep_ms = sleep_ms

local function quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end
M.quote = quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

-- os.execute's result as a boolean, under Lua 5.1 and 5.2 conventions alike.
local function run(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function tail(text, lines)
  if not text then return "" end
  local all = {}
  for line in text:gmatch("[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  return table.concat(all, "", math.max(1, #all - lines + 1))
end

function M.hubud_path() return os.getenv("HUBUD") or "./build/hubud" end
function M.hubuctl_path() return os.getenv("HUBUCTL") or "./build/hubuctl" end

-- Runs hubuctl with args (a list) and the data directory; raises with its output on failure.
local function hubuctl(data_dir, args)
  local parts = { quote(M.hubuctl_path()) }
  for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
  parts[#parts + 1] = "--data " .. quote(data_dir)
  local out_file = data_dir .. "/../hubuctl.out"
  local ok = run(table.concat(parts, " ") .. " >" .. quote(out_file) .. " 2>&1")
  local out = read_file(out_file) or ""
  os.remove(out_file)
  if not ok then error("hubuctl " .. table.concat(args, " ") .. " failed: " .. out, 3) end
  return out
end

-- Groups as { ["g:a"] = {users...} } or { {"g:a", {users...}}, ... }; created in name order.
local function each_group(groups, fn)
  local list = {}
  for k, v in pairs(groups) do
    if type(k) == "number" then list[#list + 1] = { v[1], v[2] } else list[#list + 1] = { k, v } end
  end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  for _, g in ipairs(list) do fn(g[1], g[2]) end
end

-- Starts hubud. opts (all optional):
--   args        extra hubud arguments (list)
--   plugins     plugin directory (default: an empty one in the temp dir)
--   secret      the token secret (default: a random one; a cluster's nodes share one)
--   groups      created with `hubuctl group create` before the server starts
--   log_level   default "info"
--   lifetime_s  watchdog: SIGKILL after this long (default 300)
--   start_timeout_ms  wait for the port file (default 10000)
function M.start(opts)
  opts = opts or {}
  local dir = capture("mktemp -d /tmp/hubu-spec.XXXXXX"):gsub("%s+$", "")
  assert(dir ~= "" and dir:match("^/tmp/hubu%-spec%."), "mktemp -d failed")
  local srv = setmetatable({
    host = "127.0.0.1",
    dir = dir,
    data = dir .. "/data",
    log = dir .. "/hubud.log",
    port_file = dir .. "/port",
    status_file = dir .. "/status",
    secret = opts.secret or random_hex(32), -- nodes of one cluster share theirs
    secret_file = dir .. "/secret",
    clients = {},
    keep = opts.keep or os.getenv("HUBU_SPEC_KEEP") == "1",
  }, Server)
  local ok, err = pcall(function()
    assert(run("mkdir -m 700 " .. quote(srv.data) .. " " .. quote(dir .. "/plugins")), "mkdir failed")
    write_file(srv.secret_file, srv.secret .. "\n")
    if opts.groups then
      each_group(opts.groups, function(name, members) srv:create_group(name, members) end)
    end
    srv.launch_opts = opts
    srv:_launch(opts)
  end)
  if not ok then
    srv:stop()
    error(err, 2)
  end
  return srv
end

function Server:_launch(opts)
  local args = {
    quote(M.hubud_path()),
    "--listen 127.0.0.1:0",
    "--admin-listen 127.0.0.1:0",
    "--http-listen 127.0.0.1:0",
    "--port-file " .. quote(self.port_file),
    "--data " .. quote(self.data),
    "--secret " .. quote("@" .. self.secret_file),
    "--plugins " .. quote(opts.plugins or (self.dir .. "/plugins")),
    "--log-level " .. quote(opts.log_level or "info"),
  }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = quote(a) end
  local dog = quote(self.dir .. "/watchdog")
  local status = quote(self.status_file)
  local script = table.concat({
    "{",
    table.concat(args, " ") .. " >" .. quote(self.log) .. " 2>&1 &",
    "pid=$!; echo $pid;",
    -- the watchdog: `wait` fails (>128) when its sleep is killed, and then it kills nothing
    "( sleep " .. tonumber(opts.lifetime_s or 300) .. " & echo $! >" .. dog .. "; wait $! && kill -KILL $pid ) >/dev/null 2>&1 &",
    -- once hubud is gone: stop the watchdog, then publish the status (last, so
    -- a reader that sees it may remove the directory)
    "wait $pid; st=$?; i=0;",
    "while [ ! -s " .. dog .. " ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done;",
    "[ -s " .. dog .. " ] && kill $(cat " .. dog .. ");",
    "echo $st >" .. status .. ".tmp && mv " .. status .. ".tmp " .. status .. ";",
    "} </dev/null 2>/dev/null &",
  }, " ")
  local p = assert(io.popen(script, "r"))
  local line = p:read("*l")
  p:close()
  self.pid = tonumber(line)
  assert(self.pid, "could not start hubud")

  local deadline = os.time() + math.ceil((opts.start_timeout_ms or 10000) / 1000)
  while true do
    local text = read_file(self.port_file)
    local port = text and text:match("tcp (%d+)\n")
    if port then
      self.port = tonumber(port)
      self.admin_port = tonumber(text:match("admin (%d+)\n"))
      return
    end
    if read_file(self.status_file) then
      error("hubud exited during startup:\n" .. tail(read_file(self.log), 20))
    end
    if os.time() > deadline then
      error("hubud did not write its port file in time:\n" .. tail(read_file(self.log), 20))
    end
    sleep_ms(10)
  end
end

-- Creates g:NAME with members in the store (before its first message).
function Server:create_group(name, members)
  local args = { "group", "create", name }
  for _, u in ipairs(members or {}) do args[#args + 1] = u end
  return hubuctl(self.data, args)
end

-- Any other hubuctl command against this server's data directory.
function Server:hubuctl(...)
  return hubuctl(self.data, { ... })
end

-- A token for user minted from this server's secret (ttl_s default 3600; negative: expired).
function Server:token(user, ttl_s)
  return require("spec.helpers.hubu").mint_token(self.secret, user, ttl_s or 3600)
end

-- A connected client (spec/helpers/hubu.lua) of user; opts as hubu.connect's.
-- Raises when the connection fails; closed by stop() at the latest.
function Server:connect(user, opts)
  local hubu = require("spec.helpers.hubu")
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.port = self.port
  o.host = self.host
  o.user = user
  o.token = o.token or self:token(user)
  local c, err = hubu.connect(o)
  if not c then error("connect " .. user .. ": " .. tostring(err), 2) end
  self.clients[#self.clients + 1] = c
  return c
end

-- Sends a signal (default TERM) to hubud without waiting.
function Server:signal(sig)
  if self.pid and not self:exit_status() then run("kill -" .. (sig or "TERM") .. " " .. self.pid .. " 2>/dev/null") end
end

-- hubud's exit status, or nil while it runs.
function Server:exit_status()
  local text = read_file(self.status_file)
  return text and tonumber(text:match("%d+"))
end

-- Waits for hubud to exit; its status, or nil after timeout_ms.
function Server:wait(timeout_ms)
  local waited = 0
  while waited <= M.wait_ms(timeout_ms or 10000) do
    local st = self:exit_status()
    if st then return st end
    sleep_ms(10)
    waited = waited + 10
  end
  return nil
end

-- The server's log so far.
function Server:log_text()
  return read_file(self.log) or ""
end

-- Closes the clients made by connect(), stops hubud with SIGTERM (SIGKILL
-- after timeout_ms, default 10000) and removes the temporary directory.
-- Returns hubud's exit status (0: it drained and closed cleanly). Idempotent.
function Server:stop(timeout_ms)
  for _, c in ipairs(self.clients) do c:close() end
  self.clients = {}
  local status = self.stopped_status
  if self.pid and not self.stopped then
    self.stopped = true
    self:signal("TERM")
    status = self:wait(timeout_ms or 10000)
    if not status then
      self:signal("KILL")
      status = self:wait(5000) or -1
      io.stderr:write("hubud did not exit on SIGTERM; killed. Log:\n" .. tail(self:log_text(), 20))
    end
    self.stopped_status = status
  end
  if self.dir and not self.keep then
    run("rm -rf " .. quote(self.dir))
    self.dir = nil
  elseif self.dir then
    io.stderr:write("hubu spec: kept " .. self.dir .. "\n")
  end
  return status
end

-- ---- the admin listener: one HTTP/1.1 request per connection ----

require("spec.helpers.hubu") -- declares the socket calls (ffi.C.socket, connect, poll, ...) used below

-- Sends `METHOD path` to the admin listener (srv.admin_port, from the port
-- file) and reads the answer to the end (the server closes after it).
-- Returns the status, the body and the headers (lower-case names), or nil
-- and why.
function Server:admin(method, path, timeout_ms)
  assert(self.admin_port, "admin: no admin port in the port file")
  local fd = ffi.C.socket(2, 1, 0) -- AF_INET, SOCK_STREAM
  if fd < 0 then return nil, "socket failed" end
  local sa = ffi.new("struct hubu_spec_sockaddr_in")
  sa.sin_family = 2
  sa.sin_port = bit.bor(bit.rshift(self.admin_port, 8), bit.lshift(bit.band(self.admin_port, 0xff), 8))
  ffi.C.inet_pton(2, self.host, ffi.cast("void *", ffi.cast("char *", sa) + 4))
  if ffi.C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    ffi.C.close(fd)
    return nil, "connect failed"
  end
  local req = ("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"):format(method, path, self.host)
  local off = 0
  while off < #req do
    local w = tonumber(ffi.C.write(fd, ffi.cast("const char *", req) + off, #req - off))
    if w <= 0 then ffi.C.close(fd); return nil, "write failed" end
    off = off + w
  end
  local pfd = ffi.new("struct hubu_spec_pollfd")
  pfd.fd, pfd.events = fd, 1 -- POLLIN
  local chunk, parts = ffi.new("char[65536]"), {}
  local deadline = M.now_ms() + M.wait_ms(timeout_ms or 5000)
  while true do
    local left = deadline - M.now_ms()
    if left <= 0 or ffi.C.poll(pfd, 1, math.ceil(left)) <= 0 then ffi.C.close(fd); return nil, "timeout" end
    local n = tonumber(ffi.C.read(fd, chunk, 65536))
    if n <= 0 then break end
    parts[#parts + 1] = ffi.string(chunk, n)
  end
  ffi.C.close(fd)
  local text = table.concat(parts)
  local head, body = text:match("^(.-)\r\n\r\n(.*)$")
  local status = head and tonumber(head:match("^HTTP/1%.1 (%d+)"))
  if not status then return nil, "malformed answer: " .. text:sub(1, 200) end
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  local len = tonumber(headers["content-length"])
  if len and #body ~= len then return nil, ("body of %d bytes, Content-Length %d"):format(#body, len) end
  return status, body, headers
end

-- GET /metrics: the text (raises unless the answer is 200).
function Server:metrics_text()
  local status, body = self:admin("GET", "/metrics")
  assert(status == 200, "GET /metrics: " .. tostring(status) .. " " .. tostring(body))
  return body
end

-- The value of the sample `series` (a name, with its labels as written:
-- 'hubu_plugin_x{plugin="p",room="a"}') in Prometheus text, or nil.
function M.metric_value(text, series)
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #series + 1) == series .. " " then return tonumber(line:sub(#series + 2)) end
  end
  return nil
end

-- ---- plugins: a spec's own plugin directory, edited while hubud runs ----

pcall(ffi.cdef, [[
  struct hubu_spec_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk_id, struct hubu_spec_timespec *tp);
]])

-- Milliseconds on the monotonic clock (fractional), for measuring latencies.
function M.now_ms()
  local ts = ffi.new("struct hubu_spec_timespec")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- plugins/ of this repository (the specs run from the repository root).
function M.plugins_src_dir()
  return os.getenv("HUBU_PLUGINS_SRC") or "plugins"
end

-- The source of a shipped plugin, plugins/NAME.lua, with each {from, to} of
-- edits applied as a plain replacement that must match exactly once (so a
-- spec that edits a default notices when the plugin changes under it).
function M.plugin_source(name, edits)
  local path = M.plugins_src_dir() .. "/" .. name .. ".lua"
  local src = read_file(path)
  if not src then error("no plugin " .. path, 2) end
  for _, e in ipairs(edits or {}) do
    local from, to = e[1], e[2]
    local i, j = src:find(from, 1, true)
    if not i then error(("plugin %s: %q not found"):format(name, from), 2) end
    if src:find(from, j + 1, true) then error(("plugin %s: %q found twice"):format(name, from), 2) end
    src = src:sub(1, i - 1) .. to .. src:sub(j + 1)
  end
  return src
end

-- Starts hubud (opts as M.start's) with a fresh plugin directory holding
-- `plugins`: a list of shipped plugin names to copy ({ "echo", "moderation" })
-- and/or name = source pairs written as given ({ looper = "--% ..." }); a
-- table of file = source instead of a source makes a folder plugin
-- ({ kit = { ["init.lua"] = "...", ["util.lua"] = "..." } }).
-- srv.plugins_dir is that directory; stop() removes it with the rest.
function M.start_with_plugins(plugins, opts)
  local pdir = capture("mktemp -d /tmp/hubu-spec-plugins.XXXXXX"):gsub("%s+$", "")
  assert(pdir ~= "" and pdir:match("^/tmp/hubu%-spec%-plugins%."), "mktemp -d failed")
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.plugins = pdir
  local ok, srv = pcall(function()
    for k, v in pairs(plugins or {}) do
      if type(k) == "number" then
        write_file(pdir .. "/" .. v .. ".lua", M.plugin_source(v))
      elseif type(v) == "table" then
        assert(run("mkdir -p " .. quote(pdir .. "/" .. k)), "mkdir failed")
        for file, src in pairs(v) do write_file(pdir .. "/" .. k .. "/" .. file, src) end
      else
        write_file(pdir .. "/" .. k .. ".lua", v)
      end
    end
    return M.start(o)
  end)
  if not ok then
    run("rm -rf " .. quote(pdir))
    error(srv, 2)
  end
  srv.plugins_dir = pdir
  srv.stop = function(self, timeout_ms)
    local status = Server.stop(self, timeout_ms)
    if self.plugins_dir and not self.keep then
      run("rm -rf " .. quote(self.plugins_dir))
      self.plugins_dir = nil
    end
    return status
  end
  return srv
end

-- Replaces plugin `name` in srv's plugin directory with source, atomically
-- (a dot file renamed over NAME.lua; the watcher ignores dot files), as a
-- careful editor saves. Returns the monotonic time (M.now_ms) just before
-- the rename, so a latency measured from it is never too short.
function Server:write_plugin(name, source)
  local dir = assert(self.plugins_dir, "write_plugin: no plugin directory (use start_with_plugins)")
  local tmp = dir .. "/." .. name .. ".lua.tmp"
  write_file(tmp, source)
  local t = M.now_ms()
  assert(os.rename(tmp, dir .. "/" .. name .. ".lua"))
  return t
end

-- Saves one file of srv's plugin directory atomically, path relative to it
-- ("kit/util.lua": a module of folder plugin kit; its folder is made when
-- missing). Returns the monotonic time just before the rename.
function Server:write_plugin_file(path, source)
  local dir = assert(self.plugins_dir, "write_plugin_file: no plugin directory (use start_with_plugins)")
  local sub, file = path:match("^(.-)/?([^/]+)$")
  local folder = sub ~= "" and dir .. "/" .. sub or dir
  assert(run("mkdir -p " .. quote(folder)), "mkdir failed")
  local tmp = folder .. "/." .. file .. ".tmp"
  write_file(tmp, source)
  local t = M.now_ms()
  assert(os.rename(tmp, folder .. "/" .. file))
  return t
end

-- Removes plugin `name` (NAME.lua, or the folder NAME/) from srv's plugin
-- directory (hubud unloads it).
function Server:remove_plugin(name)
  local dir = assert(self.plugins_dir, "remove_plugin: no plugin directory")
  if not os.remove(dir .. "/" .. name .. ".lua") then
    assert(read_file(dir .. "/" .. name .. "/init.lua"), "remove_plugin: no plugin " .. name)
    assert(run("rm -rf " .. quote(dir .. "/" .. name)), "rm failed")
  end
end

-- How many lines of the log so far contain text (a plain string).
function Server:count_log(text)
  local n = 0
  for line in self:log_text():gmatch("[^\n]+") do
    if line:find(text, 1, true) then n = n + 1 end
  end
  return n
end

-- Waits until at least n lines of the log contain text: true, or nil and
-- the log's tail after timeout_ms (default 5000).
function Server:wait_log(text, n, timeout_ms)
  local deadline = M.now_ms() + M.wait_ms(timeout_ms or 5000)
  repeat
    if self:count_log(text) >= (n or 1) then return true end
    sleep_ms(5)
  until M.now_ms() > deadline
  return nil, tail(self:log_text(), 20)
end

-- Stops hubud and keeps its directory (data, plugins, secret) for relaunch:
-- SIGKILL when kill is true (a crash), else SIGTERM. Clients are closed.
-- Returns the exit status.
function Server:halt(kill)
  for _, c in ipairs(self.clients) do c:close() end
  self.clients = {}
  self:signal(kill and "KILL" or "TERM")
  local status = self:wait(10000)
  os.remove(self.status_file)
  os.remove(self.port_file)
  return status
end

-- Starts hubud again after halt(), on the same directory and options.
function Server:relaunch()
  self:_launch(self.launch_opts or {})
end

return M

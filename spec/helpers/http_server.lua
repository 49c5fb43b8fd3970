-- http_server.lua — a local HTTP service for a spec (spec/helpers/http_server.py):
-- started on 127.0.0.1 with an ephemeral port, every request it gets
-- recorded, stopped by its PID.
--
--   local http_server = require("spec.helpers.http_server")
--   local web = http_server.start()              -- { tls = { cert, key } } for HTTPS
--   web:url("/slow?ms=500")                      -- "http://127.0.0.1:PORT/slow?ms=500"
--   web:requests()                               -- every request so far: {method, path, query, headers, body, client_port}
--   web:wait_requests(3, 2000)                   -- until at least 3 (or nil after 2 s)
--   web:stop()
--
-- The server ends by itself after lifetime_s (default 300), so a spec that
-- dies leaves nothing behind.

local cjson = require("cjson")
local server = require("spec.helpers.server")

local M = {}
local Web = {}
Web.__index = Web

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function run(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

local function script_path()
  local src = debug.getinfo(1, "S").source:sub(2)
  return (src:match("^(.*)/[^/]*$") or ".") .. "/http_server.py"
end

-- opts: tls = { cert, key } (HTTPS), lifetime_s (default 300).
function M.start(opts)
  opts = opts or {}
  local p = io.popen("mktemp -d /tmp/hubu-spec-http.XXXXXX")
  local dir = p:read("*l")
  p:close()
  assert(dir and dir:match("^/tmp/hubu%-spec%-http%."), "mktemp -d failed")
  local web = setmetatable({ dir = dir, port_file = dir .. "/port", log = dir .. "/requests.jsonl",
                             scheme = opts.tls and "https" or "http" }, Web)
  local args = { "python3", server.quote(script_path()), "--port-file", server.quote(web.port_file), "--log",
                 server.quote(web.log), "--lifetime", tostring(opts.lifetime_s or 300) }
  if opts.tls then
    args[#args + 1] = "--tls " .. server.quote(opts.tls[1]) .. " " .. server.quote(opts.tls[2])
  end
  local cmd = table.concat(args, " ") .. " >" .. server.quote(dir .. "/server.out") .. " 2>&1 </dev/null & echo $!"
  p = io.popen(cmd)
  web.pid = tonumber(p:read("*l"))
  p:close()
  assert(web.pid, "could not start the HTTP server")
  local deadline = server.now_ms() + server.wait_ms(30000) -- python3 starts slowly on a loaded machine
  while true do
    local text = read_file(web.port_file)
    if text and text:match("^%d+\n") then
      web.port = tonumber(text:match("^(%d+)"))
      return web
    end
    if server.now_ms() > deadline then
      local out = read_file(dir .. "/server.out") -- before stop removes the directory
      web:stop()
      error("the HTTP server did not start in 30 s: " .. tostring(out))
    end
    server.sleep_ms(10)
  end
end

function Web:url(path)
  return ("%s://127.0.0.1:%d%s"):format(self.scheme, self.port, path or "/")
end

-- Every request recorded so far, in arrival order.
function Web:requests()
  local out = {}
  for line in (read_file(self.log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

-- The requests whose path is path.
function Web:requests_to(path)
  local out = {}
  for _, r in ipairs(self:requests()) do if r.path == path then out[#out + 1] = r end end
  return out
end

-- Waits until at least n requests (to path, when given) were recorded: the
-- list, or nil and the count after timeout_ms (default 5000).
function Web:wait_requests(n, timeout_ms, path)
  local deadline = server.now_ms() + server.wait_ms(timeout_ms or 5000)
  repeat
    local list = path and self:requests_to(path) or self:requests()
    if #list >= n then return list end
    server.sleep_ms(10)
  until server.now_ms() > deadline
  return nil, #(path and self:requests_to(path) or self:requests())
end

function Web:stop()
  if self.pid then
    run("kill " .. self.pid .. " 2>/dev/null")
    local deadline = server.now_ms() + 5000
    while run("kill -0 " .. self.pid .. " 2>/dev/null") and server.now_ms() < deadline do
      server.sleep_ms(10)
    end
    run("kill -9 " .. self.pid .. " 2>/dev/null")
    self.pid = nil
  end
  if self.dir and os.getenv("HUBU_SPEC_KEEP") ~= "1" then
    for _ = 1, 10 do -- a request thread of the dying server may still write into it
      run("rm -rf " .. server.quote(self.dir))
      if not run("test -e " .. server.quote(self.dir)) then break end
      server.sleep_ms(50)
    end
    self.dir = nil
  end
end

return M

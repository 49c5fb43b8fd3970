-- plugin_memory_spec.lua — a plugin that keeps 8 MB per message. The plugin
-- state has a ceiling (--plugin-memory-max): past it an allocation fails with
-- "not enough memory" inside the hook that asked, the hook fails (its
-- plugin's failure policy applies, the log names plugin and hook), hubud's
-- memory stays bounded and everyone else's messages still flow.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

local HOG = [[
local kept = {}
local function grow()
  kept[#kept + 1] = string.rep("x", 8 * 1024 * 1024 - 64) .. #kept
end
plugin:hook("message.send", function(ev)
  if ev.body == "grow" then
    grow()
  elseif ev.body == "try" then
    local ok, err = pcall(grow)
    if not ok then ev:reject("REJECTED", tostring(err)) end
  end
end)
]]

local function rss_kib(pid)
  local f = io.open("/proc/" .. pid .. "/status", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

describe("a plugin that keeps 8 MB per message", function()
  local srv
  teardown(function() if srv then srv:stop() end end)

  it("gets 'not enough memory' at --plugin-memory-max; hubud stays bounded and serves", function()
    srv = server.start_with_plugins({ hog = HOG }, { args = { "--plugin-memory-max", "64" } })
    local alice = srv:connect("alice")
    local bob = srv:connect("bob")
    local peak = 0
    for i = 1, 40 do -- 320 MB without a ceiling
      local ack = assert(alice:send(hubu.direct("alice", "carol"), "grow"))
      assert.equals("OK", ack.code_name) -- the hook failed; the policy is open
      local rss = rss_kib(srv.pid)
      assert.is_number(rss, "hubud is gone")
      peak = math.max(peak, rss)
    end
    assert.is_true(peak < 200 * 1024, "hubud's RSS reached " .. peak .. " KiB")
    -- the plugin gets the error where it asked for the memory
    local ack = assert(alice:send(hubu.direct("alice", "carol"), "try"))
    assert.equals("REJECTED", ack.code_name)
    assert.matches("not enough memory", ack.reason, 1, true)
    -- the log names the plugin and the hook
    local log = srv:log_text()
    assert.matches('event=hook_failed[^\n]*hook=message.send[^\n]*not enough memory', log)
    assert.matches("plugin=hog", log, 1, true)
    assert.matches("event=plugin_memory_full", log, 1, true)
    -- other users' messages still flow
    for i = 1, 10 do
      assert.equals("OK", assert(bob:send(hubu.direct("bob", "carol"), "hello " .. i)).code_name)
    end
    local carol = srv:connect("carol")
    local r = assert(carol:pull(hubu.direct("bob", "carol"), 0, 100))
    assert.equals(10, #r.messages)
  end)
end)

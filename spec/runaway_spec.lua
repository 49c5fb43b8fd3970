-- runaway_spec.lua — a hook that never returns. In interpreted code (the
-- default) the budget aborts the call; in code LuaJIT compiled (`--% jit: on`)
-- nothing inside can stop it, so the watchdog ends hubud loudly (exit 70) and
-- every message acknowledged before is still there after the restart.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

local SPIN_JIT = [[
--% jit: on
plugin:hook("message.send", function(ev)
  if ev.body == "spin" then
    local n = 0
    while true do n = n + 1 end
  end
end)
]]

describe("a runaway hook in compiled code", function()
  local srv
  teardown(function() if srv then srv:stop() end end)

  it("ends hubud with exit status 70, and no acknowledged message is lost", function()
    srv = server.start_with_plugins({ spin = SPIN_JIT }, { args = { "--plugin-budget-ms", "50" } })
    local alice = srv:connect("alice")
    for i = 1, 20 do
      assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "kept " .. i)).code_name)
    end
    alice:send_async(hubu.direct("alice", "bob"), "spin")
    alice:drain(200) -- the client only writes while one of its calls runs
    local status = srv:wait(5000)
    assert.equals(70, status)
    assert.matches("event=plugin_stuck", srv:log_text(), 1, true)
    os.remove(srv.status_file)
    os.remove(srv.port_file)
    srv:relaunch()
    local bob = srv:connect("bob")
    local r = assert(bob:pull(hubu.direct("alice", "bob"), 0, 100))
    assert.equals("OK", r.code_name)
    assert.equals(20, #r.messages)
    for i, m in ipairs(r.messages) do assert.equals("kept " .. i, m.body) end
  end)
end)

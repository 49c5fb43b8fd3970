-- stored_spec.lua — message.stored is driven from the store's log: each
-- plugin's position is saved, and after a restart the messages stored after
-- it are given again, marked replayed (a webhook or audit plugin loses none).

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

local AUDIT = [[
plugin:hook("message.stored", function(ev)
  im.log("info", "audit seq=%d replayed=%s", ev.seq, tostring(ev.replayed))
end)
]]

describe("message.stored from the log", function()
  local srv
  teardown(function() if srv then srv:stop() end end)

  it("gives a plugin every message after its saved position again after a restart, marked replayed", function()
    srv = server.start_with_plugins{ audit = AUDIT }
    local alice = srv:connect("alice")
    for i = 1, 5 do
      assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m" .. i)).code_name)
    end
    assert(srv:wait_log("audit seq=5 replayed=false", 1, 2000))
    assert.equals(0, srv:halt()) -- SIGTERM saves the positions
    -- rewind audit's position to the 2nd message: as if a crash had lost the hook calls of 3, 4 and 5
    local db = srv.data .. "/hubu.db"
    assert.is_true(os.execute(("sqlite3 %q \"UPDATE kv SET value='2' WHERE plugin='hubud:stored' AND key='audit'\"")
      :format(db)) == 0)
    srv:relaunch()
    assert(srv:wait_log("event=stored_replayed plugin=audit", 1, 5000))
    local log = srv:log_text()
    for seq = 3, 5 do assert.matches("audit seq=" .. seq .. " replayed=true", log, 1, true) end
    for seq = 1, 2 do assert.is_nil(log:find("audit seq=" .. seq .. " replayed=true", 1, true)) end
    -- live messages go on, not replayed
    local a2 = srv:connect("alice")
    assert.equals("OK", assert(a2:send(hubu.direct("alice", "bob"), "m6")).code_name)
    assert(srv:wait_log("audit seq=6 replayed=false", 1, 2000))
  end)

  it("after a clean restart with nothing missed, replays nothing", function()
    assert.equals(0, srv:halt())
    srv:relaunch()
    assert(srv:wait_log("event=stored_replayed plugin=audit", 1, 5000))
    assert.is_nil(srv:log_text():find("replayed=true", 1, true))
  end)
end)

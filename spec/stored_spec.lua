-- stored_spec.lua — message.stored is driven from the store's log: each
-- plugin's position is saved, and after a restart the messages stored after
-- it are given again, marked replayed (a webhook or audit plugin loses none),
-- also to a plugin that comes back while hubud runs.

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

-- The saved position of plugin `name` in srv's store, as a number (nil: none yet).
local function saved_position(srv, name)
  local h = io.popen(("sqlite3 %q \"SELECT value FROM kv WHERE plugin='hubud:stored' AND key='%s'\" 2>/dev/null")
    :format(srv.data .. "/hubu.db", name))
  local v = h:read("*a")
  h:close()
  return tonumber(v)
end

local function wait_saved(srv, name, at_least)
  local deadline = server.now_ms() + server.wait_ms(5000) -- positions are saved about once a second
  repeat
    local pos = saved_position(srv, name)
    if pos and pos >= at_least then return pos end
    server.sleep_ms(50)
  until server.now_ms() > deadline
  error(("the position of %s was not saved at %d or later"):format(name, at_least))
end

describe("message.stored for a plugin that comes back while hubud runs", function()
  local srv
  teardown(function() if srv then srv:stop() end end)

  it("hands over, marked replayed, what was stored while its file was gone", function()
    srv = server.start_with_plugins{ audit = AUDIT }
    local alice = srv:connect("alice")
    for i = 1, 3 do assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m" .. i)).code_name) end
    assert(srv:wait_log("audit seq=3 replayed=false", 1, 2000))
    wait_saved(srv, "audit", 3)
    srv:remove_plugin("audit")
    assert(srv:wait_log("event=plugin_unloaded plugin=audit", 1, 2000))
    for i = 4, 5 do assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m" .. i)).code_name) end
    srv:write_plugin("audit", AUDIT)
    assert(srv:wait_log("event=stored_replayed plugin=audit", 1, 5000))
    local log = srv:log_text()
    for seq = 4, 5 do assert.matches("audit seq=" .. seq .. " replayed=true", log, 1, true) end
    for seq = 1, 3 do assert.is_nil(log:find("audit seq=" .. seq .. " replayed=true", 1, true)) end
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m6")).code_name)
    assert(srv:wait_log("audit seq=6 replayed=false", 1, 2000))
    assert.equals(1, srv:count_log("audit seq=6 "))
  end)

  it("and after a restart where its file did not load, once the file is fixed", function()
    assert.equals(0, srv:halt())
    srv:write_plugin("audit", "this does not compile (\n")
    srv:relaunch()
    assert(srv:wait_log("event=plugin_load_failed plugin=audit", 1, 5000))
    local alice = srv:connect("alice")
    for i = 7, 8 do assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m" .. i)).code_name) end
    srv:write_plugin("audit", AUDIT)
    assert(srv:wait_log("event=stored_replayed plugin=audit", 1, 5000))
    local log = srv:log_text()
    for seq = 7, 8 do assert.matches("audit seq=" .. seq .. " replayed=true", log, 1, true) end
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m9")).code_name)
    assert(srv:wait_log("audit seq=9 replayed=false", 1, 2000))
  end)

  it("a plugin seen for the first time starts from the present", function()
    srv:write_plugin("newcomer", [[
plugin:hook("message.stored", function(ev) im.log("info", "newcomer seq=%d replayed=%s", ev.seq, tostring(ev.replayed)) end)
]])
    assert(srv:wait_log("event=plugin_loaded plugin=newcomer", 1, 2000))
    local alice = srv:connect("alice")
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m10")).code_name)
    assert(srv:wait_log("newcomer seq=10 replayed=false", 1, 2000))
    assert.is_nil(srv:log_text():find("newcomer seq=%d+ replayed=true"))
    assert.equals(0, srv:count_log("newcomer seq=9 "))
  end)
end)

describe("message.stored when a plugin goes away in the middle of its replay", function()
  local srv
  teardown(function() if srv then srv:stop() end end)

  -- 5 ms per message: a replay of 1,000 takes five seconds, in batches of 200
  local SLOW_AUDIT = [[
plugin:hook("message.stored", function(ev)
  local t0 = im.now()
  while im.now() - t0 < 5 do end
  im.log("info", "audit seq=%d replayed=%s", ev.seq, tostring(ev.replayed))
end)
]]

  it("stops that replay, and hands the rest over when the plugin comes back", function()
    srv = server.start_with_plugins{ audit = SLOW_AUDIT }
    local alice = srv:connect("alice")
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m1")).code_name)
    assert(srv:wait_log("audit seq=1 replayed=false", 1, 2000))
    wait_saved(srv, "audit", 1)
    srv:remove_plugin("audit")
    assert(srv:wait_log("event=plugin_unloaded plugin=audit", 1, 2000))
    for i = 2, 1001 do assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m" .. i)).code_name) end
    srv:write_plugin("audit", SLOW_AUDIT)
    assert(srv:wait_log("audit seq=50 replayed=true", 1, 5000)) -- the replay is under way
    -- A live message (seq 1002) during the replay; its ACK comes once the loop is
    -- past the replay's batch. The file goes at once, inside the first batch of
    -- 200: hubud sees it between two batches, so the replay stops after one or
    -- two of its five, however slowly this machine runs the test.
    local live = assert(alice:send_async(hubu.direct("alice", "bob"), "live"))
    srv:remove_plugin("audit")
    assert.equals("OK", assert(alice:wait_ack(live, 10000)).code_name)
    assert(srv:wait_log("event=plugin_unloaded plugin=audit", 2, 10000))
    assert(srv:wait_log("event=stored_replay_stopped plugin=audit", 1, 10000))
    assert.equals(0, srv:count_log("event=stored_replayed plugin=audit"))
    server.sleep_ms(1500) -- positions are saved about once a second: the stopped replay must not have moved it past the gap
    srv:write_plugin("audit", SLOW_AUDIT)
    assert(srv:wait_log("event=stored_replayed plugin=audit", 1, 15000))
    local log = srv:log_text()
    local missing = {}
    for seq = 2, 1001 do
      if not log:find("audit seq=" .. seq .. " replayed=", 1, true) then missing[#missing + 1] = seq end
    end
    assert.same({}, missing)
    print(("\nremoved mid-replay: all 1,000 handed over, %d calls in all (at least once)"):format(srv:count_log("audit seq=")))
  end)
end)

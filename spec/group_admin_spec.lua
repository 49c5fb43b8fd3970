-- group_admin_spec.lua — `hubuctl group` while hubud runs goes through the
-- admin listener (found through DATA/hubud.admin), and the server's copy of
-- the group follows at once: a member added during the run may send within
-- a second, one removed is refused, no restart. Without a running server
-- (and with a stale address file after a crash) it writes to the store.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

describe("hubuctl group while hubud runs", function()
  local srv
  setup(function()
    srv = server.start_with_plugins({ watcher = [[
local seen = {}
plugin:hook("group.changed", function(ev)
  im.log("info", "group_changed op=%s group=%s users=%s by=%s", ev.op, ev.group, table.concat(ev.users, ","), ev.by)
end)
]] }, { groups = { ["g:team"] = { "alice", "bob" } } })
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("finds the server through the data directory's hubud.admin", function()
    local f = assert(io.open(srv.data .. "/hubud.admin", "rb"))
    local addr = f:read("*a")
    f:close()
    assert.equals("127.0.0.1:" .. srv.admin_port .. "\n", addr)
  end)

  it("lets a member added during the run send within a second", function()
    local alice = srv:connect("alice", { from_now = true })
    local carol = srv:connect("carol", { from_now = true })
    -- carol is refused, and the server now holds g:team in memory without her
    assert.equals("FORBIDDEN", assert(carol:send("g:team", "may I?")).code_name)
    local out = srv:hubuctl("group", "add", "g:team", "carol")
    assert.matches("g:team: add done %(by the running server%)", out)
    local t0 = server.now_ms()
    local ack = assert(carol:send("g:team", "hello team"))
    assert.equals("OK", ack.code_name)
    assert.is_true(server.now_ms() - t0 < 1000)
    local m = assert(alice:recv(2000))
    assert.equals("hello team", m.body)
    assert.equals("carol", m.sender)
    assert(srv:wait_log("group_changed op=add group=g:team users=carol by=admin", 1, 2000))
    -- members, as the store has them
    local members = srv:hubuctl("group", "members", "g:team")
    assert.equals("alice\nbob\ncarol\n", members)
  end)

  it("refuses a member removed during the run at once", function()
    local carol = srv:connect("carol", { from_now = true })
    assert.matches("remove done", srv:hubuctl("group", "remove", "g:team", "carol"))
    assert.equals("FORBIDDEN", assert(carol:send("g:team", "still here?")).code_name)
  end)

  it("creates a group the server saw refused before, and says what went wrong", function()
    local dave = srv:connect("dave", { from_now = true })
    assert.equals("FORBIDDEN", assert(dave:send("g:late", "anyone?")).code_name) -- g:late: known not to exist
    assert.matches("create done", srv:hubuctl("group", "create", "g:late", "dave", "erin"))
    assert.equals("OK", assert(dave:send("g:late", "now it exists")).code_name)
    local ok, err = pcall(srv.hubuctl, srv, "group", "create", "g:late", "dave")
    assert.is_false(ok)
    assert.matches("409 Conflict: {\"error\": \"g:late already exists\"}", err, 1, true)
    local ok2, err2 = pcall(srv.hubuctl, srv, "group", "remove", "g:late", "zed")
    assert.is_false(ok2)
    assert.matches("not a member of g:late", err2, 1, true)
  end)

  it("writes to the store when no server answers, also after a crash left the address file", function()
    assert.is_not_nil(srv:halt(true)) -- SIGKILL: hubud.admin stays behind
    assert(io.open(srv.data .. "/hubud.admin", "rb")):close()
    local out = srv:hubuctl("group", "add", "g:team", "frank")
    assert.matches("g:team: add done\n", out, 1, true)
    assert.matches("no hubud answers at 127.0.0.1:", out, 1, true)
    srv:relaunch()
    local frank = srv:connect("frank")
    assert.equals("OK", assert(frank:send("g:team", "frank here")).code_name)
  end)
end)

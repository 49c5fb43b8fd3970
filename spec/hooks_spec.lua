-- hooks_spec.lua — the hooks that decide who is who and who gets what:
-- message.route (the bigroup plugin pushes to active members and hints the
-- rest), auth (the auth plugin, and a replacement that maps logins), session.read
-- (a plugin forbids reading a session), and im.kick.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

describe("the bigroup plugin (message.route)", function()
  local srv
  setup(function()
    srv = server.start_with_plugins({ bigroup = server.plugin_source("bigroup", {
      { 'plugin:option_number("threshold", 500, 2)', 'plugin:option_number("threshold", 2, 2)' } }) },
      { groups = { ["g:big"] = { "alice", "bob", "carol" } } })
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("pushes to members who sent recently and sends PULL_HINT to the others", function()
    local bob = assert(hubu.raw_connect{ port = srv.port, user = "bob", token = srv:token("bob") })
    local carol = assert(hubu.raw_connect{ port = srv.port, user = "carol", token = srv:token("carol") })
    local alice = srv:connect("alice")
    -- bob becomes active by sending once
    bob:send_frame("SEND", hubu.pb_encode{ { 1, 1 }, { 2, "g:big" }, { 3, "bob here" } })
    assert(bob:read_frame_of("SEND_ACK", 2000))
    assert.equals("OK", assert(alice:send("g:big", "to the big group")).code_name)
    local push = assert(bob:read_frame_of("PUSH", 2000))
    assert.is_truthy(push[1]) -- messages
    local hint -- bob's own message (seq 1) was hinted too: read until alice's
    repeat hint = assert(carol:read_frame_of("PULL_HINT", 2000)) until hint[2] >= 2
    assert.equals("g:big", hint[1])
    assert.equals(2, hint[2])
    bob:close()
    carol:close()
  end)
end)

describe("the auth plugin (auth)", function()
  local srv
  setup(function() srv = server.start_with_plugins{ "auth" } end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("accepts a valid token and refuses a bad or expired one with UNAUTHENTICATED", function()
    local ok = srv:connect("alice")
    assert.equals("ready", (ok:state()))
    local c, err = hubu.connect{ port = srv.port, user = "alice", token = "v1.alice.1.nope" }
    assert.is_nil(c)
    assert.matches("^UNAUTHENTICATED", err)
    c, err = hubu.connect{ port = srv.port, user = "alice", token = srv:token("alice", -60) }
    assert.is_nil(c)
    assert.matches("token expired", err)
  end)

  it("can be replaced by a plugin that maps a login to another user", function()
    srv:write_plugin("auth", [[
plugin:hook("auth", function(ev)
  if ev.token == "letmein" then return ev:accept("mapped-" .. ev.user) end
  ev:reject("only letmein works here")
end)
]])
    srv:wait_log("event=plugin_reloaded plugin=auth", 1, 2000)
    local c = assert(hubu.connect{ port = srv.port, user = "zed", token = "letmein" })
    local ack = assert(c:send(hubu.direct("mapped-zed", "other"), "as whom?"))
    assert.equals("OK", ack.code_name) -- only mapped-zed may write to d:mapped-zed:other
    c:close()
    local no, err = hubu.connect{ port = srv.port, user = "zed", token = srv:token("zed") }
    assert.is_nil(no)
    assert.matches("only letmein works here", err)
  end)
end)

describe("session.read and im.kick", function()
  local srv
  setup(function()
    srv = server.start_with_plugins({ rules = [[
plugin:hook("session.read", function(ev)
  if ev.session_id == "g:vault" and ev.user ~= "alice" then ev:forbid("the vault is alice's") end
end)
plugin:hook("call.kick.me", function(ev)
  ev:reply(tostring(im.kick(ev.user, "asked for it")))
end)
]] }, { groups = { ["g:vault"] = { "alice", "bob" } } })
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("lets a plugin forbid PULL and hide the session from SYNC", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    assert.equals("OK", assert(alice:send("g:vault", "gold")).code_name)
    local r = assert(alice:pull("g:vault", 0, 10))
    assert.equals("OK", r.code_name)
    local rb = assert(bob:pull("g:vault", 0, 10))
    assert.equals("FORBIDDEN", rb.code_name)
    for _, s in ipairs(assert(bob:sessions())) do assert.not_equals("g:vault", s.session_id) end
  end)

  it("kicks every connection of a user with GOAWAY KICKED", function()
    local dan = srv:connect("dan")
    local code = dan:call("kick.me", "") -- kicked before the answer: the call sees the connection close
    assert.is_nil(code)
    dan:drain(300)
    local g = dan:goaway()
    assert.is_truthy(g)
    assert.equals("KICKED", g.code_name)
    assert.equals("asked for it", g.reason)
  end)
end)

describe("im.kv", function()
  local srv
  setup(function()
    srv = server.start_with_plugins{ notes = [[
plugin:hook("call.notes.put", function(ev)
  local ok, err = im.kv.set("note:" .. ev.user, ev.payload)
  if ok then ev:reply("stored") else ev:error("UNAVAILABLE", err) end
end)
plugin:hook("call.notes.get", function(ev)
  local value = im.kv.get("note:" .. ev.user)
  if value == nil then return ev:error("NOT_FOUND", "no note") end
  ev:reply(value)
end)
plugin:hook("call.notes.drop", function(ev)
  ev:reply(tostring(im.kv.delete("note:" .. ev.user)))
end)
plugin:hook("message.stored", function(ev) -- callback style, outside a call
  im.kv.get("count", function(n)
    im.kv.set("count", tostring((tonumber(n) or 0) + 1))
  end)
end)
plugin:hook("call.notes.count", function(ev) ev:reply(im.kv.get("count") or "0") end)
]] }
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("keeps a plugin's values in the store, per plugin, across a reload", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    assert.equals("NOT_FOUND", (alice:call("notes.get", "")))
    local function call2(c, m, p) local code, v = c:call(m, p) return { code, v } end
    assert.same({ "OK", "stored" }, call2(alice, "notes.put", "buy milk"))
    assert.same({ "OK", "stored" }, call2(bob, "notes.put", "call mum"))
    local code, value = alice:call("notes.get", "")
    assert.equals("OK", code)
    assert.equals("buy milk", value)
    local f = assert(io.open(srv.plugins_dir .. "/notes.lua"))
    local src = f:read("*a")
    f:close()
    srv:write_plugin("notes", src .. "\n-- saved again\n")
    srv:wait_log("event=plugin_reloaded plugin=notes", 1, 2000)
    assert.equals("call mum", select(2, bob:call("notes.get", "")))
    assert.same({ "OK", "true" }, call2(alice, "notes.drop", ""))
    assert.equals("NOT_FOUND", (alice:call("notes.get", "")))
  end)

  it("serves callbacks outside calls (a counter of stored messages)", function()
    local alice = srv:connect("alice")
    for i = 1, 3 do assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "m" .. i)).code_name) end
    local deadline = server.now_ms() + server.wait_ms(2000)
    local count
    repeat
      count = select(2, alice:call("notes.count", ""))
    until count == "3" or server.now_ms() > deadline
    assert.equals("3", count)
  end)
end)

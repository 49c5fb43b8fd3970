-- groups_spec.lua — the group calls of PROTOCOL.md section 8, answered by the
-- shipped groups plugin against a real hubud: create (the caller becomes a
-- member; an existing group is INVALID), join, leave, members (members only),
-- and that a group made this way carries messages to exactly its members.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

describe("the groups plugin", function()
  local srv
  setup(function() srv = server.start_with_plugins{ "groups" } end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("creates a group with the caller as a member and refuses to create it twice", function()
    local alice = srv:connect("alice")
    local code, result = alice:call_json("group.create", { group = "g:team", members = { "bob", "carol", "bob" } })
    assert.equals("OK", code)
    assert.same({ ok = true }, result)
    local code2, _, reason = alice:call("group.create", { group = "g:team", members = {} })
    assert.equals("INVALID", code2)
    assert.matches("already exists", reason)
    local code3, members = alice:call_json("group.members", { group = "g:team" })
    assert.equals("OK", code3)
    table.sort(members.members)
    assert.same({ "alice", "bob", "carol" }, members.members)
  end)

  it("answers group.members to members only", function()
    local eve = srv:connect("eve")
    assert.equals("FORBIDDEN", (eve:call("group.members", { group = "g:team" })))
    assert.equals("FORBIDDEN", (eve:call("group.members", { group = "g:nothing-here" })))
  end)

  it("lets a user join and leave, and delivers group messages to exactly the members", function()
    local alice, bob, dave = srv:connect("alice", { from_now = true }), srv:connect("bob", { from_now = true }),
        srv:connect("dave", { from_now = true })
    assert.equals("OK", (dave:call("group.join", { group = "g:team" })))
    local ack = assert(alice:send("g:team", "welcome dave"))
    assert.equals("OK", ack.code_name)
    assert.equals("welcome dave", assert(dave:recv(2000)).body)
    assert.equals("welcome dave", assert(bob:recv(2000)).body)
    assert.equals("OK", (dave:call("group.leave", { group = "g:team" })))
    assert.equals("NOT_FOUND", (dave:call("group.leave", { group = "g:team" })))
    local ack2 = assert(alice:send("g:team", "dave has left"))
    assert.equals("OK", ack2.code_name)
    assert.equals("dave has left", assert(bob:recv(2000)).body)
    assert.is_nil(dave:recv(300))
    assert.equals("FORBIDDEN", assert(dave:send("g:team", "let me back")).code_name)
  end)

  it("refuses bad payloads with INVALID and unknown groups with NOT_FOUND", function()
    local alice = srv:connect("alice")
    assert.equals("INVALID", (alice:call("group.create", "not json")))
    assert.equals("INVALID", (alice:call("group.create", { group = "team" })))
    assert.equals("INVALID", (alice:call("group.create", { group = "g:x", members = { "bad user" } })))
    assert.equals("NOT_FOUND", (alice:call("group.join", { group = "g:never-made" })))
  end)
end)

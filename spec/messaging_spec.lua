-- messaging_spec.lua — PROTOCOL.md section 5 as a user sees it, with real
-- clients (libhubu-client through FFI) against one real hubud. Each case
-- uses its own sessions, so the seqs it asserts do not depend on the others;
-- a user who appears in several cases connects `from_now` so the SYNC on
-- connect does not hand it an earlier case's messages.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

describe("messaging", function()
  local srv

  setup(function()
    srv = server.start{ groups = { ["g:team"] = { "alice", "bob", "carol" } } }
  end)

  teardown(function()
    if srv then assert.equals(0, srv:stop()) end -- hubud drained and exited cleanly
  end)

  it("delivers a direct message from alice to bob with seq 1 and alice as sender", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local session = hubu.direct("alice", "bob")

    local ack = assert(alice:send(session, "hi bob"))
    assert.equals("OK", ack.code_name)
    assert.equals(1, ack.seq)
    assert.is_false(ack.duplicate)

    local m = assert(bob:recv(2000))
    assert.same({ session, 1, "alice", "spec", "hi bob", "text/plain" },
                { m.session, m.seq, m.sender, m.sender_device, m.body, m.content_type })
    assert.equals(ack.msg_id, m.msg_id)
    assert.equals(ack.client_id, m.client_id)
    assert.equals(0, alice:close())
    assert.equals(0, bob:close())
  end)

  it("carries content_type and meta to the recipient unchanged", function()
    local alice, dave = srv:connect("alice"), srv:connect("dave")
    local ack = assert(alice:send(hubu.direct("alice", "dave"), "{}",
                                  { content_type = "application/json", meta = { lang = "zh", ["x-trace"] = "7" } }))
    assert.equals("OK", ack.code_name)
    local m = assert(dave:recv(2000))
    assert.equals("application/json", m.content_type)
    assert.same({ lang = "zh", ["x-trace"] = "7" }, m.meta)
  end)

  it("delivers a group message created with hubuctl to every member and the sender's other device", function()
    local now = { from_now = true }
    local alice, alice_phone = srv:connect("alice", now), srv:connect("alice", { device = "phone", from_now = true })
    local bob, carol = srv:connect("bob", now), srv:connect("carol", now)

    local ack = assert(alice:send("g:team", "standup in 5"))
    assert.equals("OK", ack.code_name)
    assert.equals(1, ack.seq)

    for _, member in ipairs({ bob, carol, alice_phone }) do
      local m = assert(member:recv(2000), member.user .. "/" .. member.device .. " got nothing")
      assert.same({ "g:team", 1, "alice", "standup in 5" }, { m.session, m.seq, m.sender, m.body })
    end
    -- the sending connection gets the SEND_ACK, not a PUSH of its own message
    assert.is_nil(alice:recv(200))
  end)

  it("refuses with FORBIDDEN a message to other users' direct session, and delivers nothing", function()
    local carol, bob = srv:connect("carol", { from_now = true }), srv:connect("bob", { from_now = true })
    local ack = assert(carol:send("d:bob:erin", "let me in"))
    assert.equals("FORBIDDEN", ack.code_name)
    assert.equals(0, ack.seq)
    assert.equals(0, carol:unacked()) -- a refusal is final: nothing left to resend
    local m, err = bob:recv(300)
    assert.is_nil(m)
    assert.equals("timeout", err)
  end)

  it("refuses with FORBIDDEN a message to a group the sender is not a member of", function()
    local frank = srv:connect("frank")
    assert.equals("FORBIDDEN", assert(frank:send("g:team", "hello?")).code_name)
  end)

  it("stores the same content sent twice as two messages (a new send is not a retry)", function()
    local grace, heidi = srv:connect("grace"), srv:connect("heidi")
    local session = hubu.direct("grace", "heidi")
    local first = assert(grace:send(session, "same words"))
    local second = assert(grace:send(session, "same words"))
    assert.same({ "OK", "OK" }, { first.code_name, second.code_name })
    assert.same({ 1, 2 }, { first.seq, second.seq })
    assert.are_not.equal(first.client_id, second.client_id)
    assert.are_not.equal(first.msg_id, second.msg_id)
    assert.is_false(second.duplicate)

    local got = assert(heidi:recv_n(2, 2000))
    assert.same({ 1, 2 }, { got[1].seq, got[2].seq })
    assert.same({ "same words", "same words" }, { got[1].body, got[2].body })
    assert.is_nil(heidi:recv(200)) -- and nothing more
  end)

  it("keeps one device's pipelined sends in client_id order, with increasing seqs", function()
    local ivan, judy = srv:connect("ivan"), srv:connect("judy")
    local session = hubu.direct("ivan", "judy")
    local ids = {}
    for i = 1, 20 do ids[i] = assert(ivan:send_async(session, "n" .. i)) end
    local acks = assert(ivan:wait_acks(20, 5000))
    assert.equals(20, #acks)
    local seq_of = {}
    for _, a in ipairs(acks) do
      assert.equals("OK", a.code_name)
      seq_of[a.client_id] = a.seq
    end
    for i = 2, 20 do assert.is_true(seq_of[ids[i]] > seq_of[ids[i - 1]]) end

    local got = assert(judy:recv_n(20, 2000))
    for i = 1, 20 do assert.equals("n" .. i, got[i].body) end
  end)

  it("lets a client that was offline catch up by SYNC on connect", function()
    local kim = srv:connect("kim")
    local session = hubu.direct("kim", "leo")
    assert.equals("OK", assert(kim:send(session, "while you were out")).code_name)
    local leo = srv:connect("leo") -- connects after the message was stored
    local m = assert(leo:recv(3000))
    assert.same({ session, 1, "while you were out" }, { m.session, m.seq, m.body })
  end)

  it("returns stored history by PULL, and FORBIDDEN for a session the user may not read", function()
    local mia = srv:connect("mia")
    local session = hubu.direct("mia", "ned")
    for i = 1, 3 do assert(mia:send(session, "h" .. i)) end
    local page = assert(mia:pull(session, 1, 10))
    assert.equals("OK", page.code_name)
    assert.equals(3, page.max_seq)
    assert.same({ 2, 3 }, { page.messages[1].seq, page.messages[2].seq })
    assert.equals("h2", page.messages[1].body)
    assert.equals("FORBIDDEN", assert(mia:pull(hubu.direct("alice", "bob"), 0, 10)).code_name)
  end)

  it("refuses a token minted for another user, and an expired one", function()
    local c, err = hubu.connect{ port = srv.port, user = "alice", token = srv:token("bob") }
    assert.is_nil(c)
    assert.matches("^UNAUTHENTICATED", err)
    c, err = hubu.connect{ port = srv.port, user = "alice", token = srv:token("alice", -60) }
    assert.is_nil(c)
    assert.matches("^UNAUTHENTICATED", err)
  end)

  it("answers a CALL no plugin handles with NOT_FOUND, keeping the connection", function()
    local olga = srv:connect("olga")
    local code, result, reason = olga:call("no.such.method", { x = 1 })
    assert.equals("NOT_FOUND", code)
    assert.equals("", result)
    assert.matches("no plugin answers no.such.method", reason)
    assert.equals("ready", (olga:state()))
    assert.equals("OK", assert(olga:send(hubu.direct("olga", "pat"), "still here")).code_name)
  end)
end)

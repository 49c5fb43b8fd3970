-- webhooks_spec.lua — the shipped webhooks plugin against a real receiver on
-- loopback (spec/helpers/http_server.py): signed JSON for stored messages,
-- connects, disconnects and group changes; retries with backoff; at least
-- once across a restart and a crash; a plugin with too many deliveries
-- waiting catches up from the store's log; the before_send webhook.

local ffi = require("ffi")
local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")
local http_server = require("spec.helpers.http_server")
local cjson = require("cjson")

pcall(ffi.cdef, [[
  const void *EVP_sha256(void);
  unsigned char *HMAC(const void *evp_md, const void *key, int key_len, const unsigned char *d, size_t n,
                      unsigned char *md, unsigned int *md_len);
]])
local crypto = ffi.load("crypto")

local function hmac_hex(key, data)
  local md, len = ffi.new("unsigned char[64]"), ffi.new("unsigned int[1]")
  assert(crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, md, len) ~= nil)
  local out = {}
  for i = 0, len[0] - 1 do out[#out + 1] = ("%02x"):format(md[i]) end
  return table.concat(out)
end

-- A hubu.lua with the webhooks plugin's section (a Lua table constructor's text).
local function config_file(section)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('plugin "webhooks" ' .. section .. "\n")
  f:close()
  return path
end

local function start(section, plugins)
  local cfg = config_file(section)
  local list = plugins or {}
  list[#list + 1] = "webhooks"
  local srv = server.start_with_plugins(list, { args = { "--config", cfg } })
  srv.config = cfg
  return srv
end

local function stop(srv)
  if not srv then return end
  local status = srv:stop()
  os.remove(srv.config)
  return status
end

local function bodies(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = cjson.decode(r.body) end
  return out
end

describe("webhooks", function()
  local web, srv
  setup(function() web = http_server.start() end)
  teardown(function()
    stop(srv)
    if web then web:stop() end
  end)

  it("POSTs each stored message as signed JSON", function()
    srv = start(('{ url = %q, secret = "s3cret", events = { "message.stored", "connect", "disconnect" } }')
      :format(web:url("/hook")))
    local alice = srv:connect("alice")
    local s = hubu.direct("alice", "bob")
    assert.equals("OK", assert(alice:send(s, "hello")).code_name)
    assert.equals("OK", assert(alice:send(s, "\255\254 not utf-8", { content_type = "application/octet-stream" })).code_name)
    local got = {}
    local deadline = server.now_ms() + 5000
    repeat
      got = {}
      for _, r in ipairs(web:requests_to("/hook")) do
        if r.headers["x-hubu-event"] == "message.stored" then got[#got + 1] = r end
      end
      server.sleep_ms(20)
    until #got >= 2 or server.now_ms() > deadline
    assert.equals(2, #got)
    table.sort(got, function(x, y) return cjson.decode(x.body).data.seq < cjson.decode(y.body).data.seq end)
    local r = got[1]
    local doc = cjson.decode(r.body)
    assert.equals("message.stored", doc.event)
    assert.equals(s, doc.data.session_id)
    assert.equals(1, doc.data.seq)
    assert.equals("hello", doc.data.body)
    assert.equals("alice", doc.data.sender)
    assert.equals("bob", doc.data.to_user)
    assert.equals(false, doc.data.replayed)
    assert.equals(doc.data.msg_id, r.headers["x-hubu-delivery"])
    local ts, sig = r.headers["x-hubu-signature"]:match("^t=(%d+),v1=(%x+)$")
    assert.equals(hmac_hex("s3cret", ts .. "." .. r.body), sig)
    assert.equals("//4gbm90IHV0Zi04", cjson.decode(got[2].body).data.body_base64)
    alice:close()
    local events = {}
    assert(web:wait_requests(4, 3000, "/hook"))
    for _, req in ipairs(web:requests_to("/hook")) do
      local e = req.headers["x-hubu-event"]
      events[e] = (events[e] or 0) + 1
    end
    assert.same({ connect = 1, ["message.stored"] = 2, disconnect = 1 }, events)
  end)

  it("retries a failing receiver with growing waits, under the same delivery id", function()
    stop(srv)
    srv = start(('{ url = %q, backoff_ms = 100 }'):format(web:url("/hook?fail=3")))
    local alice = srv:connect("alice")
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "carol"), "retry me")).code_name)
    local list = assert(web:wait_requests(4 + 4, 10000, "/hook")) -- 4 from the first case, then 3 failures and a success
    local mine = {}
    for _, r in ipairs(list) do if r.query.fail then mine[#mine + 1] = r end end
    assert.equals(4, #mine)
    for i = 2, 4 do assert.equals(mine[1].headers["x-hubu-delivery"], mine[i].headers["x-hubu-delivery"]) end
    local gaps = {}
    for i = 2, 4 do gaps[i - 1] = (mine[i].time - mine[i - 1].time) * 1000 end
    assert.is_true(gaps[1] >= 60 and gaps[3] > gaps[1], ("gaps %.0f %.0f %.0f ms"):format(gaps[1], gaps[2], gaps[3]))
    local text = srv:metrics_text()
    assert.equals(3, server.metric_value(text,
      'hubu_plugin_webhook_deliveries_total{plugin="webhooks",event="message.stored",outcome="retried"}'))
    assert.equals(1, server.metric_value(text,
      'hubu_plugin_webhook_deliveries_total{plugin="webhooks",event="message.stored",outcome="delivered"}'))
  end)

  it("reports group changes made through the groups plugin", function()
    stop(srv)
    srv = start(('{ url = %q, events = { "group.changed" } }'):format(web:url("/groups")), { "groups" })
    local alice = srv:connect("alice")
    assert.equals("OK", (alice:call_json("group.create", { group = "g:club", members = { "bob" } })))
    local bob = srv:connect("bob")
    assert.equals("OK", (bob:call_json("group.leave", { group = "g:club" })))
    local got = assert(web:wait_requests(2, 3000, "/groups"))
    local docs = bodies(got)
    assert.equals("create", docs[1].data.op)
    assert.equals("g:club", docs[1].data.group)
    assert.same({ "alice", "bob" }, docs[1].data.users)
    assert.equals("groups", docs[1].data.by)
    assert.equals("remove", docs[2].data.op)
    assert.same({ "bob" }, docs[2].data.users)
  end)
end)

describe("webhooks across a restart", function()
  local web, srv
  setup(function() web = http_server.start() end)
  teardown(function()
    stop(srv)
    if web then web:stop() end
  end)

  -- The receiver fails each delivery 3 times; the plugin waits 400 ms after
  -- the first failure, so every message is in its retries when hubud stops.
  local function deliveries_of(session)
    local ok = {}
    for _, r in ipairs(web:requests_to("/hook")) do
      local doc = cjson.decode(r.body)
      if doc.data.session_id == session then
        ok[doc.data.seq] = ok[doc.data.seq] or {}
        table.insert(ok[doc.data.seq], doc.data.replayed)
      end
    end
    return ok
  end

  for _, how in ipairs({ "stop", "crash" }) do
    it("delivers every message at least once after a " .. how .. " in the middle of its retries", function()
      stop(srv)
      srv = start(('{ url = %q, backoff_ms = 400 }'):format(web:url("/hook?fail=3&how=" .. how)))
      local alice = srv:connect("alice")
      local s = hubu.direct("alice", how)
      for i = 1, 5 do assert.equals("OK", assert(alice:send(s, "m" .. i)).code_name) end
      assert(web:wait_requests(5, 3000, "/hook")) -- the first attempts failed
      server.sleep_ms(1200) -- hubud saves the positions about once a second: they stay before the waiting messages
      local status = srv:halt(how == "crash")
      if how == "stop" then assert.equals(0, status) end
      local before = deliveries_of(s)
      srv:relaunch()
      local deadline = server.now_ms() + 20000
      local delivered
      repeat
        server.sleep_ms(100)
        delivered = 0
        local counts = {}
        for _, r in ipairs(web:requests_to("/hook")) do
          local doc = cjson.decode(r.body)
          if doc.data.session_id == s then counts[doc.id] = (counts[doc.id] or 0) + 1 end
        end
        for _, n in pairs(counts) do if n >= 4 then delivered = delivered + 1 end end -- 3 failures, then 200
      until delivered == 5 or server.now_ms() > deadline
      assert.equals(5, delivered)
      local after = deliveries_of(s)
      for seq = 1, 5 do
        assert.is_truthy(before[seq], "seq " .. seq .. " was not tried before the " .. how)
        local replayed = false
        for _, r in ipairs(after[seq]) do replayed = replayed or r end
        assert.is_true(replayed, "seq " .. seq .. " was not handed over again")
      end
    end)
  end
end)

describe("webhooks with more deliveries waiting than the plugin may hold", function()
  local web, srv
  setup(function() web = http_server.start() end)
  teardown(function()
    stop(srv)
    if web then web:stop() end
  end)

  it("stops taking messages, then catches up from the log: every message once, in the end", function()
    local src = server.plugin_source("webhooks", { { "--% http_concurrency: 64", "--% http_concurrency: 64\n--% stored_waiting: 10" } })
    local cfg = config_file(('{ url = %q, backoff_ms = 700 }'):format(web:url("/hook?fail=1")))
    srv = server.start_with_plugins({ webhooks = src }, { args = { "--config", cfg } })
    srv.config = cfg
    local alice = srv:connect("alice")
    local s = hubu.direct("alice", "zed")
    for i = 1, 40 do assert(alice:send_async(s, "m" .. i)) end
    local acks = assert(alice:wait_acks(40, 10000))
    assert.equals(40, #acks)
    assert(srv:wait_log("event=stored_behind plugin=webhooks", 1, 5000))
    local deadline, ids = server.now_ms() + 30000, {}
    repeat
      server.sleep_ms(100)
      ids = {}
      for _, r in ipairs(web:requests_to("/hook")) do
        local doc = cjson.decode(r.body)
        ids[doc.data.seq] = (ids[doc.data.seq] or 0) + 1
      end
      local n = 0
      for _, c in pairs(ids) do if c >= 2 then n = n + 1 end end -- failed once, then delivered
    until n == 40 or server.now_ms() > deadline
    for seq = 1, 40 do assert.is_true((ids[seq] or 0) >= 2, "seq " .. seq .. " not delivered") end
    assert(srv:wait_log("event=stored_caught_up plugin=webhooks", 1, 5000))
    for _, r in ipairs(web:requests_to("/hook")) do
      assert.equals(false, cjson.decode(r.body).data.replayed) -- never handed over before: not replayed
    end
  end)
end)

describe("the before_send webhook", function()
  local web, srv
  setup(function() web = http_server.start() end)
  teardown(function()
    stop(srv)
    if web then web:stop() end
  end)

  it("allows, rejects or rewrites each SEND as its receiver answers", function()
    srv = start(('{ before_send_url = %q, secret = "k" }'):format(web:url("/moderate")))
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local s = hubu.direct("alice", "bob")
    assert.equals("OK", assert(alice:send(s, "fine")).code_name)
    local ack = assert(alice:send(s, "spam spam"))
    assert.equals("REJECTED", ack.code_name)
    assert.equals("the service says spam", ack.reason)
    assert.equals("OK", assert(alice:send(s, "shout this")).code_name)
    assert.equals("fine", assert(bob:recv(3000)).body)
    assert.equals("SHOUT THIS", assert(bob:recv(3000)).body)
    local req = web:requests_to("/moderate")[1]
    local doc = cjson.decode(req.body)
    assert.equals("message.send", doc.event)
    assert.equals("alice", doc.data.user)
    local ts, sig = req.headers["x-hubu-signature"]:match("^t=(%d+),v1=(%x+)$")
    assert.equals(hmac_hex("k", ts .. "." .. req.body), sig)
  end)

  it("lets a SEND through when the receiver is too slow (failure open), or refuses it (closed)", function()
    stop(srv)
    srv = start(('{ before_send_url = %q, before_send_timeout_ms = 200 }'):format(web:url("/moderate?ms=1000")))
    local alice = srv:connect("alice")
    local t0 = server.now_ms()
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "spam")).code_name)
    assert.is_true(server.now_ms() - t0 < 900)
    stop(srv)
    srv = start(('{ before_send_url = %q, before_send_timeout_ms = 200, before_send_failure = "closed" }')
      :format(web:url("/moderate?ms=1000")))
    alice = srv:connect("alice")
    local ack = assert(alice:send(hubu.direct("alice", "bob"), "hello"))
    assert.equals("REJECTED", ack.code_name)
    assert.equals("before_send webhook unavailable", ack.reason)
  end)
end)

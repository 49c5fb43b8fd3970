-- http_spec.lua — im.http against a real HTTP service on loopback
-- (spec/helpers/http_server.py): answers, failures (timeout, refused,
-- too large, garbage), redirects, HTTPS, a message.send hook that asks a
-- service whether to allow a message, a handler past its deadline, the
-- loop serving others while requests wait, and reloads that cancel.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")
local http_server = require("spec.helpers.http_server")
local cjson = require("cjson")

-- A plugin that answers CALL http.get / http.req with what im.http returned,
-- as JSON: the request is the CALL's payload.
local FETCH = [[
local json = require "cjson"
plugin:hook("call.http.req", function(ev)
  local req = json.decode(ev.payload)
  local t0 = im.now()
  local status, body, headers = im.http(req)
  ev:reply(json.encode{ status = status or json.null, body = #body < 65536 and body or nil, len = #body,
                        headers = headers, ms = im.now() - t0 })
end)
]]

-- The PING round trip of a connection nobody else uses, in ms.
local function ping_rtt(raw)
  local t0 = server.now_ms()
  assert(raw:send_frame("PING", hubu.pb_encode{ { 1, 1 } }))
  assert(raw:read_frame_of("PONG", 5000))
  return server.now_ms() - t0
end

describe("im.http", function()
  local srv, web, alice
  setup(function()
    web = http_server.start()
    srv = server.start_with_plugins{ fetch = FETCH }
    alice = srv:connect("alice")
  end)
  teardown(function()
    if srv then assert.equals(0, srv:stop()) end
    if web then web:stop() end
  end)

  local function fetch(req, timeout_ms)
    local code, res, reason = alice:call_json("http.req", req, timeout_ms or 10000)
    assert.equals("OK", code, reason)
    return res
  end

  it("returns status, body and headers of a GET", function()
    local r = fetch{ url = web:url("/headers") }
    assert.equals(200, r.status)
    assert.equals("h", r.body)
    assert.equals("yes", r.headers["x-test"])
    assert.equals("a=1, b=2", r.headers["set-cookie"]) -- repeated headers joined
  end)

  it("sends the method, headers and body it is given", function()
    local r = fetch{ method = "PUT", url = web:url("/echo"), body = "payload \0 bytes",
                     headers = { ["X-Token"] = "abc", ["Content-Type"] = "application/octet-stream" } }
    assert.equals(200, r.status)
    local echoed = cjson.decode(r.body)
    assert.equals("PUT", echoed.method)
    assert.equals("abc", echoed.headers["x-token"])
    assert.equals("payload \0 bytes", echoed.body)
    assert.is_nil(echoed.headers["expect"]) -- no 100-continue round trip
  end)

  it("gives an error status as an answer, not a failure", function()
    local r = fetch{ url = web:url("/status/503") }
    assert.equals(503, r.status)
    assert.equals("status 503", r.body)
  end)

  it("fails with timeout when the service answers too late", function()
    local r = fetch{ url = web:url("/slow?ms=3000"), timeout_ms = 200 }
    assert.equals(cjson.null, r.status)
    assert.matches("^timeout: ", r.body)
    assert.is_true(r.ms >= 150 and r.ms < 1500, "took " .. r.ms .. " ms")
  end)

  it("fails with connect when nothing listens", function()
    local closed = http_server.start()
    local url = closed:url("/ok")
    closed:stop()
    local r = fetch{ url = url }
    assert.equals(cjson.null, r.status)
    assert.matches("^connect: ", r.body)
  end)

  it("refuses a response larger than max_response, announced or not", function()
    local r = fetch{ url = web:url("/huge?bytes=5000000") } -- default cap: 1 MiB
    assert.equals(cjson.null, r.status)
    assert.matches("^too large: ", r.body)
    r = fetch{ url = web:url("/huge?bytes=5000000&chunked=1"), max_response = 100000 }
    assert.matches("^too large: ", r.body)
    r = fetch{ url = web:url("/huge?bytes=3000000"), max_response = 4000000 }
    assert.equals(200, r.status)
    assert.equals(3000000, r.len)
  end)

  it("fails with protocol on garbage or a closed connection", function()
    local r = fetch{ url = web:url("/garbage") }
    assert.equals(cjson.null, r.status)
    assert.matches("^protocol: ", r.body)
    r = fetch{ url = web:url("/close") }
    assert.matches("^protocol: ", r.body)
  end)

  it("follows no redirect unless asked", function()
    local r = fetch{ url = web:url("/redirect?to=/ok") }
    assert.equals(302, r.status)
    assert.equals("/ok", r.headers["location"])
    r = fetch{ url = web:url("/redirect?to=/ok"), redirects = 2 }
    assert.equals(200, r.status)
    assert.equals("ok", r.body)
  end)

  it("reuses its connection for the next request to the same service", function()
    for _ = 1, 3 do assert.equals(200, fetch{ url = web:url("/ok?reuse=1") }.status) end
    local ports = {}
    for _, req in ipairs(web:requests_to("/ok")) do
      if req.query.reuse then ports[req.client_port] = true end
    end
    local n = 0
    for _ in pairs(ports) do n = n + 1 end
    assert.equals(1, n)
  end)

  it("raises at the plugin's line on a bad request", function()
    srv:write_plugin("bad", [[
plugin:hook("call.bad.http", function(ev)
  local ok, err = pcall(im.http, { url = "ftp://example.org/" })
  ev:reply(tostring(err))
end)
]])
    assert(srv:wait_log("event=plugin_loaded plugin=bad", 1, 3000))
    local code, res = alice:call("bad.http", "")
    assert.equals("OK", code)
    assert.matches("url must be an http:// or https:// URL", res)
  end)

  it("keeps serving other connections while requests wait", function()
    local raw = assert(hubu.raw_connect{ port = srv.port, user = "pinger", token = srv:token("pinger") })
    local quiet = {}
    for i = 1, 5 do quiet[i] = ping_rtt(raw) end
    -- 20 requests of 1 s each in flight, from calls on other connections
    local callers = {}
    for i = 1, 4 do
      callers[i] = assert(hubu.raw_connect{ port = srv.port, user = "caller" .. i, token = srv:token("caller" .. i) })
    end
    for i = 1, 20 do
      callers[(i - 1) % 4 + 1]:send_frame("CALL", hubu.pb_encode{ { 1, i }, { 2, "http.req" },
        { 3, cjson.encode{ url = web:url("/slow?ms=1000") } } })
    end
    assert(web:wait_requests(20, 5000, "/slow"))
    local busy = {}
    for i = 1, 5 do busy[i] = ping_rtt(raw) end
    table.sort(busy)
    print(("\n    PING RTT while 20 requests wait: median %.2f ms, max %.2f ms"):format(busy[3], busy[5]))
    assert.is_true(busy[5] < 200, "PING took " .. busy[5] .. " ms while requests waited")
    raw:close()
    for i = 1, 4 do
      for _ = 1, 5 do assert(callers[i]:read_frame_of("CALL_RESULT", 3000)) end
      callers[i]:close()
    end
  end)
end)

describe("im.http over HTTPS", function()
  local srv, web, alice, dir
  setup(function()
    dir = io.popen("mktemp -d /tmp/hubu-spec-tls.XXXXXX"):read("*l")
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
      .. "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem "
      .. ">/dev/null 2>&1"):format(dir, dir)))
    web = http_server.start{ tls = { dir .. "/cert.pem", dir .. "/key.pem" } }
    srv = server.start_with_plugins{ fetch = FETCH }
    alice = srv:connect("alice")
  end)
  teardown(function()
    if srv then assert.equals(0, srv:stop()) end
    if web then web:stop() end
    if dir then os.execute("rm -rf " .. server.quote(dir)) end
  end)

  it("verifies the certificate by default", function()
    local code, r = alice:call_json("http.req", { url = web:url("/ok") }, 10000)
    assert.equals("OK", code)
    assert.equals(cjson.null, r.status)
    assert.matches("^tls: ", r.body)
  end)

  it("trusts a ca_file it is given, or none with verify = false", function()
    local code, r = alice:call_json("http.req", { url = web:url("/ok"), ca_file = dir .. "/cert.pem" }, 10000)
    assert.equals("OK", code)
    assert.equals(200, r.status)
    code, r = alice:call_json("http.req", { url = web:url("/ok"), verify = false }, 10000)
    assert.equals(200, r.status)
  end)
end)

-- A moderation plugin that asks the service (POST /moderate) about each message.
local ASK = [[
--% summary: asks a local service whether to allow each message
--% failure: FAILURE
--% deadline: 400
local json = require "cjson"
local url = plugin:option_string("url", "")
plugin:hook("message.send", function(ev)
  local status, body = im.http{ method = "POST", url = url, body = json.encode{ user = ev.user, body = ev.body },
                                headers = { ["Content-Type"] = "application/json" }, timeout_ms = 3000 }
  if status ~= 200 then return ev:reject("REJECTED", "moderation service: " .. tostring(body)) end
  local answer = json.decode(body)
  if answer.action == "reject" then ev:reject("REJECTED", answer.reason)
  elseif answer.action == "rewrite" then ev:rewrite{ body = answer.body } end
end)
]]

local function ask_plugin(url, failure)
  return (ASK:gsub("FAILURE", failure or "open"):gsub('option_string%("url", ""%)', ('option_string("url", %q)'):format(url)))
end

describe("a message.send hook that asks a local service", function()
  local srv, web
  setup(function()
    web = http_server.start()
    srv = server.start_with_plugins{ ask = ask_plugin(web:url("/moderate")) }
  end)
  teardown(function()
    if srv then assert.equals(0, srv:stop()) end
    if web then web:stop() end
  end)

  it("allows, rejects or rewrites as the service says", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local s = hubu.direct("alice", "bob")
    assert.equals("OK", assert(alice:send(s, "hello there")).code_name)
    local ack = assert(alice:send(s, "buy spam now"))
    assert.equals("REJECTED", ack.code_name)
    assert.equals("the service says spam", ack.reason)
    assert.equals("OK", assert(alice:send(s, "please shout")).code_name)
    local m1, m2 = assert(bob:recv(3000)), assert(bob:recv(3000))
    assert.equals("hello there", m1.body)
    assert.equals("PLEASE SHOUT", m2.body)
    assert.is_nil(bob:recv(200))
    local asked = web:requests_to("/moderate")
    assert.equals(3, #asked)
    assert.equals("alice", cjson.decode(asked[1].body).user)
  end)

  it("keeps a device's messages in order while their verdicts come back in any order", function()
    local carol, dave = srv:connect("carol"), srv:connect("dave")
    local s = hubu.direct("carol", "dave")
    srv:write_plugin("ask", ask_plugin(web:url("/moderate")):gsub("url = url,", 'url = url .. (ev.body:find("slow") and "?ms=150" or ""),'))
    assert(srv:wait_log("event=plugin_reloaded plugin=ask", 1, 3000))
    local ids = {}
    for i = 1, 20 do ids[i] = assert(carol:send_async(s, (i % 3 == 0 and "slow " or "fast ") .. i)) end
    local acks = assert(carol:wait_acks(20, 10000))
    assert.equals(20, #acks)
    local seq_of = {}
    for _, a in ipairs(acks) do
      assert.equals("OK", a.code_name)
      seq_of[a.client_id] = a.seq
    end
    for i = 2, 20 do assert.is_true(seq_of[ids[i]] > seq_of[ids[i - 1]], "seq order broken at " .. i) end
    local got = assert(dave:recv_n(20, 5000))
    for i = 1, 20 do assert.equals((i % 3 == 0 and "slow " or "fast ") .. i, got[i].body) end
  end)

  it("gives a handler that waits past its deadline its failure policy (open: the message goes through)", function()
    srv:write_plugin("ask", ask_plugin(web:url("/moderate?ms=2000")))
    assert(srv:wait_log("event=plugin_reloaded plugin=ask", 2, 3000))
    local erin = srv:connect("erin")
    local t0 = server.now_ms()
    local ack = assert(erin:send(hubu.direct("erin", "frank"), "spam but late", { timeout_ms = 5000 }))
    local took = server.now_ms() - t0
    assert.equals("OK", ack.code_name)
    assert.is_true(took >= 350 and took < 1500, "answered after " .. took .. " ms")
    assert(srv:wait_log("deadline of 400 ms passed while it waited", 1, 2000))
  end)

  it("and closed: refused", function()
    srv:write_plugin("ask", ask_plugin(web:url("/moderate?ms=2000"), "closed"))
    assert(srv:wait_log("event=plugin_reloaded plugin=ask", 3, 3000))
    local gina = srv:connect("gina")
    local ack = assert(gina:send(hubu.direct("gina", "hank"), "anything", { timeout_ms = 5000 }))
    assert.equals("REJECTED", ack.code_name)
    assert.equals("plugin ask failed", ack.reason)
  end)

  it("is refused by the plugin when the service is down", function()
    local down = http_server.start()
    local url = down:url("/moderate")
    down:stop()
    srv:write_plugin("ask", ask_plugin(url))
    assert(srv:wait_log("event=plugin_reloaded plugin=ask", 4, 3000))
    local ivan = srv:connect("ivan")
    local ack = assert(ivan:send(hubu.direct("ivan", "judy"), "hi"))
    assert.equals("REJECTED", ack.code_name)
    assert.matches("^moderation service: connect: ", ack.reason)
  end)
end)

describe("a reload or unload while requests wait", function()
  local srv, web
  setup(function() web = http_server.start() end)
  teardown(function()
    if srv then assert.equals(0, srv:stop()) end
    if web then web:stop() end
  end)

  local function version(v, url)
    return ([[
plugin:hook("call.slow.get", function(ev)
  local status, body = im.http{ url = %q }
  im.log("info", "VERSION got %%s", tostring(status))
  ev:reply("VERSION " .. tostring(status))
end)
plugin:hook("message.send", function(ev)
  if ev.body == "wait" then im.http{ url = %q } im.log("info", "VERSION send resumed") end
end)
]]):format(url, url):gsub("VERSION", v)
  end

  it("cancels the old version's request; the new version answers the CALL", function()
    srv = server.start_with_plugins{ slow = version("v1", web:url("/slow?ms=1500")) }
    local raw = assert(hubu.raw_connect{ port = srv.port, user = "raw", token = srv:token("raw") })
    raw:send_frame("CALL", hubu.pb_encode{ { 1, 7 }, { 2, "slow.get" }, { 3, "" } })
    assert(web:wait_requests(1, 3000, "/slow"))
    srv:write_plugin("slow", version("v2", web:url("/ok")))
    assert(srv:wait_log("event=plugin_reloaded plugin=slow", 1, 3000))
    local first = assert(raw:read_frame_of("CALL_RESULT", 3000)) -- the waiting CALL, answered by v2
    assert.equals("v2 200", first[3])
    raw:close()
    local alice = srv:connect("alice")
    local code, res = alice:call("slow.get", "", 5000) -- a second CALL, after the reload
    assert.equals("OK", code)
    assert.equals("v2 200", res)
    server.sleep_ms(1800) -- past the old request's answer
    assert.equals(0, srv:count_log("v1 got"))
    assert.equals(2, srv:count_log("v2 got")) -- the waiting CALL ran again in v2, and the new one
  end)

  it("lets a SEND waiting in an unloaded plugin through", function()
    srv:write_plugin("slow", version("v3", web:url("/slow?ms=1500")))
    assert(srv:wait_log("event=plugin_reloaded plugin=slow", 2, 3000))
    local bob = srv:connect("bob")
    local id = assert(bob:send_async(hubu.direct("bob", "carl"), "wait"))
    bob:drain(100) -- the client writes while its loop runs
    assert(web:wait_requests(2, 3000, "/slow"))
    srv:remove_plugin("slow")
    assert(srv:wait_log("event=plugin_unloaded plugin=slow", 1, 3000))
    local ack = assert(bob:wait_ack(id, 3000))
    assert.equals("OK", ack.code_name)
    server.sleep_ms(1700)
    assert.equals(0, srv:count_log("v3 send resumed"))
  end)
end)

describe("im.http limits and metrics", function()
  local srv, web
  setup(function()
    web = http_server.start()
    srv = server.start_with_plugins{ burst = ([[
--%% http_concurrency: 2
plugin:hook("call.burst.go", function(ev)
  local results = {}
  for i = 1, 5 do
    local ok, err = im.http({ url = %q }, function(status) im.log("info", "burst answer %%s", tostring(status)) end)
    results[i] = ok and "started" or err
  end
  ev:reply(table.concat(results, "|"))
end)
plugin:hook("call.burst.sleep", function(ev)
  local t0 = im.now()
  im.sleep(0.2)
  ev:reply(tostring(im.now() - t0))
end)
]]):format(web:url("/slow?ms=300")) }
  end)
  teardown(function()
    if srv then assert.equals(0, srv:stop()) end
    if web then web:stop() end
  end)

  it("refuses requests past the plugin's concurrency at once, and counts them", function()
    local alice = srv:connect("alice")
    local code, res = alice:call("burst.go", "")
    assert.equals("OK", code)
    local parts = {}
    for part in res:gmatch("[^|]+") do parts[#parts + 1] = part end
    assert.same({ "started", "started" }, { parts[1], parts[2] })
    for i = 3, 5 do assert.matches("^busy: 2 requests of plugin burst in flight", parts[i]) end
    assert(srv:wait_log("burst answer 200", 2, 3000))
    local text = srv:metrics_text()
    assert.equals(5, server.metric_value(text, 'hubu_plugin_http_requests_total{plugin="burst"}'))
    assert.equals(3, server.metric_value(text, 'hubu_plugin_http_errors_total{plugin="burst"}'))
    assert.equals(0, server.metric_value(text, 'hubu_plugin_http_in_flight{plugin="burst"}'))
    assert.equals(2, server.metric_value(text, 'hubu_plugin_http_request_seconds_count{plugin="burst"}'))
    assert.equals(0, server.metric_value(text, 'hubu_plugin_http_request_seconds_bucket{plugin="burst",le="0.1"}'))
    assert.equals(2, server.metric_value(text, 'hubu_plugin_http_request_seconds_bucket{plugin="burst",le="+Inf"}'))
  end)

  it("sleeps in a hook without holding the loop", function()
    local alice = srv:connect("alice")
    local code, res = alice:call("burst.sleep", "")
    assert.equals("OK", code)
    assert.is_true(tonumber(res) >= 190, res)
  end)
end)

describe("the bot of docs/plugins.md, backed by its HTTP service", function()
  local srv, service_pid, dir
  local doc = assert(io.open("docs/plugins.md")):read("*a")
  local section = assert(doc:match("## A bot backed by your own HTTP service in 15 lines(.-)\n## "))
  local bot = assert(section:match("```lua\n(.-)```"))
  local service = assert(section:match("```python\n(.-)```"))
  teardown(function()
    if srv then assert.equals(0, srv:stop()) end
    if service_pid then os.execute("kill " .. service_pid .. " 2>/dev/null") end
    if dir then os.execute("rm -rf " .. server.quote(dir)) end
  end)

  it("is 15 lines at most, and answers through the service; without it, says so", function()
    local n = select(2, bot:gsub("\n", "\n"))
    assert.is_true(n <= 15, n .. " lines")
    dir = io.popen("mktemp -d /tmp/hubu-spec-askbot.XXXXXX"):read("*l")
    local f = assert(io.open(dir .. "/answer.py", "w"))
    f:write(service)
    f:close()
    service_pid = tonumber(io.popen(("python3 %s/answer.py 0 >%s/out 2>&1 </dev/null & echo $!"):format(dir, dir)):read("*l"))
    local port
    local deadline = server.now_ms() + 10000
    repeat
      server.sleep_ms(20)
      local out = io.open(dir .. "/out"):read("*a")
      port = out:match("listening on port (%d+)")
    until port or server.now_ms() > deadline
    assert(port, "the service did not start")
    srv = server.start_with_plugins{ askbot = bot:gsub("http://127.0.0.1:8000/answer", "http://127.0.0.1:" .. port .. "/answer") }
    local alice = srv:connect("alice")
    local s = hubu.direct("alice", "ask-bot")
    assert.equals("OK", assert(alice:send(s, "hello there")).code_name)
    local m
    repeat m = assert(alice:recv(5000)) until m.sender == "ask-bot"
    assert.equals("alice, you said: HELLO THERE", m.body)
    os.execute("kill " .. service_pid)
    service_pid = nil
    server.sleep_ms(200)
    assert.equals("OK", assert(alice:send(s, "anyone?")).code_name)
    repeat m = assert(alice:recv(8000)) until m.sender == "ask-bot"
    assert.equals("(my service is away)", m.body)
  end)
end)

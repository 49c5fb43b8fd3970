-- metrics_spec.lua — metrics a plugin publishes (im.counter, im.gauge) as a
-- Prometheus scraper sees them on the admin listener's /metrics: a family
-- hubu_plugin_<name> per metric with its # HELP and # TYPE lines once,
-- labelled plugin="<plugin>" and the metric's own labels, values escaped;
-- declared at the top of the file; values that survive a hot reload (and a
-- reload that fails); gone once the plugin's file is removed.

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

local metric = server.metric_value

-- Counts messages by session kind, holds a settable gauge, counts its own
-- loads (declared and bumped at the top of the file, as a plugin would).
local function pub(version)
  return ([[
--%% summary: publishes counters and gauges
--%% version: %d
local seen = im.counter("messages_seen_total", "Messages this plugin saw, by session kind.", { "kind" })
local depth = im.gauge("queue_depth", "Jobs waiting.\nSecond line of help, with a \\ backslash.")
local loads = im.counter("loads_total", "Times this plugin was loaded.")
loads:inc()
plugin:hook("message.stored", function(ev) seen:inc(1, { kind = ev.kind }) end)
plugin:hook("call.pub.set", function(ev)
  depth:set(tonumber(ev.payload))
  depth:inc(3)
  depth:dec()
  ev:reply(tostring(depth:get()))
end)
plugin:hook("call.pub.odd", function(ev)
  seen:inc(2, { kind = 'we"ird\\one\nline' })
  ev:reply(tostring(seen:get{ kind = 'we"ird\\one\nline' }))
end)
plugin:hook("call.pub.version", function(ev) ev:reply("%d") end)
]]):format(version, version)
end

-- Another plugin publishing a metric of the same name: one family, two plugin labels.
local other = [[
--% summary: shares a family with pub
local loads = im.counter("loads_total", "Times this plugin was loaded.")
loads:inc(5)
]]

-- Each (family, TYPE) and (family, HELP) line appears exactly once; every
-- sample comes after its family's TYPE line.
local function assert_well_formed(text)
  local typed, helped = {}, {}
  for line in text:gmatch("[^\n]+") do
    local kind, name = line:match("^# (%u+) ([%w_:]+)")
    if kind == "TYPE" then
      assert.is_nil(typed[name], "two TYPE lines for " .. name)
      typed[name] = true
    elseif kind == "HELP" then
      assert.is_nil(helped[name], "two HELP lines for " .. name)
      helped[name] = true
    else
      local sample = assert(line:match("^([%a_:][%w_:]*)[{ ]"), "bad sample line: " .. line)
      assert.is_true(typed[sample], "sample before its TYPE line: " .. line)
      assert.is_truthy(line:match(" [-+%w%.]+$"), "bad value: " .. line)
    end
  end
end

-- A CALL's code and result (its reason left out).
local function call(client, method, payload)
  local code, result = client:call(method, payload)
  return { code, result }
end

local function wait_metric(srv, series, want, timeout_ms)
  local deadline, got = server.now_ms() + (timeout_ms or 3000), nil
  repeat
    got = metric(srv:metrics_text(), series)
    if got == want then return got end
    server.sleep_ms(10)
  until server.now_ms() > deadline
  return got
end

describe("metrics a plugin publishes", function()
  local srv
  setup(function()
    srv = server.start_with_plugins({ pub = pub(1), other = other }, { groups = { ["g:metrics"] = { "alice", "bob" } } })
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("are on /metrics from the load on: declared at the top of the file, one family per name", function()
    assert.is_number(srv.admin_port)
    local text = srv:metrics_text()
    assert_well_formed(text)
    assert.equals(1, metric(text, 'hubu_plugin_loads_total{plugin="pub"}'))
    assert.equals(5, metric(text, 'hubu_plugin_loads_total{plugin="other"}'))
    assert.equals(0, metric(text, 'hubu_plugin_queue_depth{plugin="pub"}')) -- a gauge without labels starts at 0
    assert.truthy(text:find("# HELP hubu_plugin_loads_total Times this plugin was loaded.\n" ..
                            "# TYPE hubu_plugin_loads_total counter\n", 1, true))
    assert.truthy(text:find("# HELP hubu_plugin_queue_depth Jobs waiting.\\nSecond line of help, with a \\\\ backslash.\n" ..
                            "# TYPE hubu_plugin_queue_depth gauge\n", 1, true))
    assert.is_nil(text:find("hubu_plugin_messages_seen_total{", 1, true)) -- labelled: no series before the first inc
    -- the host's own per-plugin figures are still there
    assert.is_number(metric(text, 'hubu_plugin_calls_total{plugin="pub"}'))
  end)

  it("count with labels, one series per label set", function()
    local alice = srv:connect("alice")
    for i = 1, 3 do assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "d" .. i)).code_name) end
    assert.equals("OK", assert(alice:send("g:metrics", "hello group")).code_name)
    assert.equals(3, wait_metric(srv, 'hubu_plugin_messages_seen_total{plugin="pub",kind="direct"}', 3))
    assert.equals(1, wait_metric(srv, 'hubu_plugin_messages_seen_total{plugin="pub",kind="group"}', 1))
    local text = srv:metrics_text()
    assert_well_formed(text)
    assert.truthy(text:find('# HELP hubu_plugin_messages_seen_total Messages this plugin saw, by session kind.\n' ..
                            '# TYPE hubu_plugin_messages_seen_total counter\n', 1, true))
  end)

  it("set, raise and lower gauges, and escape label values", function()
    local carol = srv:connect("carol")
    assert.same({ "OK", "44" }, call(carol, "pub.set", "42"))
    assert.same({ "OK", "2" }, call(carol, "pub.odd", ""))
    local text = srv:metrics_text()
    assert_well_formed(text)
    assert.equals(44, metric(text, 'hubu_plugin_queue_depth{plugin="pub"}'))
    assert.equals(2, metric(text, 'hubu_plugin_messages_seen_total{plugin="pub",kind="we\\"ird\\\\one\\nline"}'))
  end)

  it("keep their values across a hot reload: the new version gets the same objects", function()
    srv:write_plugin("pub", pub(2))
    assert(srv:wait_log("event=plugin_reloaded plugin=pub", 1))
    local text = srv:metrics_text()
    assert_well_formed(text)
    assert.equals(2, metric(text, 'hubu_plugin_loads_total{plugin="pub"}')) -- the same counter, bumped by v2
    assert.equals(44, metric(text, 'hubu_plugin_queue_depth{plugin="pub"}'))
    assert.equals(3, metric(text, 'hubu_plugin_messages_seen_total{plugin="pub",kind="direct"}'))
    local dave = srv:connect("dave")
    assert.same({ "OK", "2" }, call(dave, "pub.version", ""))
    assert.equals("OK", assert(dave:send(hubu.direct("dave", "erin"), "after the reload")).code_name)
    assert.equals(4, wait_metric(srv, 'hubu_plugin_messages_seen_total{plugin="pub",kind="direct"}', 4))
  end)

  it("keep their values when a new version fails to load", function()
    srv:write_plugin("pub", "--% version: 3\nim.counter('loads_total', 'Other help.')\nim.gauge('extra', 'x')\n" ..
                            "error('broken')\n")
    assert(srv:wait_log("event=plugin_load_failed plugin=pub", 1))
    local text = srv:metrics_text()
    assert.equals(2, metric(text, 'hubu_plugin_loads_total{plugin="pub"}'))
    assert.truthy(text:find("# HELP hubu_plugin_loads_total Times this plugin was loaded.\n", 1, true))
    assert.is_nil(text:find("hubu_plugin_extra", 1, true)) -- what the failed version declared is not exported
    assert.equals(44, metric(text, 'hubu_plugin_queue_depth{plugin="pub"}'))
    assert.equals(4, metric(text, 'hubu_plugin_messages_seen_total{plugin="pub",kind="direct"}'))
  end)

  it("are gone once the plugin's file is removed; another plugin's series of the family stay", function()
    srv:remove_plugin("pub")
    assert(srv:wait_log("event=plugin_unloaded plugin=pub", 1))
    local text = srv:metrics_text()
    assert_well_formed(text)
    assert.is_nil(text:find('plugin="pub"', 1, true))
    assert.is_nil(text:find("hubu_plugin_queue_depth", 1, true))
    assert.is_nil(text:find("hubu_plugin_messages_seen_total", 1, true))
    assert.equals(5, metric(text, 'hubu_plugin_loads_total{plugin="other"}'))
    -- added again, it starts from zero
    srv:write_plugin("pub", pub(4))
    assert(srv:wait_log("event=plugin_loaded plugin=pub", 2))
    text = srv:metrics_text()
    assert.equals(1, metric(text, 'hubu_plugin_loads_total{plugin="pub"}'))
    assert.equals(0, metric(text, 'hubu_plugin_queue_depth{plugin="pub"}'))
  end)
end)

describe("declaring a metric", function()
  local srv
  local checker = [[
--% summary: what im.counter and im.gauge refuse
local json = require "cjson"
local errs = {}
local function try(label, f)
  local ok, err = pcall(f)
  errs[label] = ok and "ok" or tostring(err)
end
try("digit first", function() im.counter("1st", "x") end)
try("dash", function() im.counter("bad-name", "x") end)
try("host's", function() im.counter("calls_total", "x") end)
try("plugin label", function() im.gauge("g1", "x", { "plugin" }) end)
try("reserved label", function() im.gauge("g2", "x", { "__x" }) end)
try("label twice", function() im.gauge("g3", "x", { "a", "a" }) end)
local c = im.counter("ok_total", "fine", { "a" })
try("kind changes", function() im.gauge("ok_total", "x") end)
try("labels change", function() im.counter("ok_total", "x", { "b" }) end)
try("same again", function() assert(im.counter("ok_total", "fine", { "a" }) == c) end)
try("negative", function() c:inc(-1) end)
try("unknown label", function() c:inc(1, { b = "x" }) end)
try("not UTF-8", function() c:inc(1, { a = "caf\233" }) end)
try("NUL", function() c:inc(1, { a = "a\0b" }) end)
try("UTF-8", function() c:inc(1, { a = "caf\195\169" }) end)
try("not a number", function() c:inc("3") end)
try("dot call", function() c.inc(1) end)
try("colon in name", function() im.gauge("ns:depth", "x"):set(1) end)
plugin:hook("call.check.errors", function(ev) ev:reply(json.encode(errs)) end)
plugin:hook("call.check.runtime", function(ev)
  local out = {}
  -- declared in a hook: fine, and the same object on a second call
  local g = im.gauge("late", "Declared in a hook.")
  g:set(7)
  out.same = im.gauge("late", "Declared in a hook.") == g
  -- a family another plugin holds with another type
  local ok, err = pcall(im.gauge, "shared_total", "x")
  out.conflict = ok and "ok" or tostring(err)
  ev:reply(json.encode(out))
end)
]]
  local holder = [[
--% summary: holds a counter family
im.counter("shared_total", "A counter."):inc()
]]
  setup(function() srv = server.start_with_plugins{ check = checker, holder = holder } end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("checks names, labels, kinds and amounts, with the caller's file:line", function()
    local code, errs = srv:connect("alice"):call_json("check.errors", "")
    assert.equals("OK", code)
    for label, pattern in pairs{
      ["digit first"] = "check.lua:%d+: im.counter: a metric name is 1%-128 characters",
      ["dash"] = "im.counter: a metric name",
      ["host's"] = "calls_total is the host's",
      ["plugin label"] = "bad label name plugin",
      ["reserved label"] = "bad label name __x",
      ["label twice"] = "bad label name a",
      ["kind changes"] = "ok_total is already declared as a counter",
      ["labels change"] = "ok_total is already declared as a counter",
      ["negative"] = "check.lua:%d+: counter:inc: a counter only goes up",
      ["unknown label"] = "check.lua:%d+: metric ok_total has no label b",
      ["not UTF-8"] = "check.lua:%d+: metric ok_total: the value of label a must be UTF%-8 text without NUL bytes",
      ["NUL"] = "the value of label a must be UTF%-8 text without NUL bytes",
      ["not a number"] = "counter:inc: the amount must be a finite number",
      ["dot call"] = "call it as a method",
    } do
      assert.is_truthy(tostring(errs[label]):find(pattern), label .. ": " .. tostring(errs[label]))
    end
    assert.equals("ok", errs["same again"])
    assert.equals("ok", errs["UTF-8"])
    assert.equals("ok", errs["colon in name"])
    assert.equals(1, metric(srv:metrics_text(), 'hubu_plugin_ns:depth{plugin="check"}'))
  end)

  it("works in a hook too, and refuses a family another plugin holds with another type", function()
    local code, out = srv:connect("bob"):call_json("check.runtime", "")
    assert.equals("OK", code)
    assert.is_true(out.same)
    assert.matches("hubu_plugin_shared_total is a counter of plugin holder", out.conflict)
    local text = srv:metrics_text()
    assert.equals(7, metric(text, 'hubu_plugin_late{plugin="check"}'))
    assert.equals(1, metric(text, 'hubu_plugin_shared_total{plugin="holder"}'))
  end)
end)

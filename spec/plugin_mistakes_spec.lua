-- plugin_mistakes_spec.lua — a plugin author's mistakes are reported where
-- they are made: each spec loads a plugin with one mistake into hubud's
-- plugin host (no server: spec/helpers/plugin.lua) and checks the error's
-- text and the plugin line (or hubu.lua line) it names. The two that used to
-- fail open come first: `kinds` on message.send, which never fired.

local plugin = require("spec.helpers.plugin")

-- Writes files into a fresh temporary directory; returns its path.
local function tmpdir(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
  for name, text in pairs(files or {}) do
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(text)
    f:close()
  end
  return dir
end

-- Loads source as plugin `name` (file DIR/name.lua); the host, ok, err, path.
local function load(name, source, opts)
  local dir = tmpdir{ [name .. ".lua"] = source }
  local S = plugin.host(opts)
  local path = dir .. "/" .. name .. ".lua"
  local ok, err = S:load(name, path)
  return S, ok, err, path, dir
end

describe("kinds on message.send", function()
  it("fires a handler for the kinds it names only, and tells the kind", function()
    local S, ok, err = load("groups_only", [[
plugin:hook("message.send", function(ev)
  ev:reject("FORBIDDEN", "no group messages on Sundays (" .. ev.kind .. ")")
end, { kinds = { "group" } })
]])
    assert(ok, err)
    local v = S:send{ user = "alice", session = "g:team", body = "hi" }
    assert.equals("FORBIDDEN", v.code)
    assert.equals("no group messages on Sundays (group)", v.reason)
    assert.is_true(S:send{ user = "alice", session = "d:alice:bob", body = "hi" }.passed)
  end)

  it("gives message.send the session kind: direct, group, custom", function()
    local S, ok, err = load("kinds", [[
plugin:hook("message.send", function(ev) ev:reject("INVALID", ev.kind) end)
]])
    assert(ok, err)
    assert.equals("direct", S:send{ user = "a", session = "d:a:b", body = "x" }.reason)
    assert.equals("group", S:send{ user = "a", session = "g:t", body = "x" }.reason)
    assert.equals("custom", S:send{ user = "a", session = "c:room", body = "x" }.reason)
  end)

  it("works on session.read too, which carries kind as well", function()
    local S, ok, err = load("readers", [[
plugin:hook("session.read", function(ev) ev:forbid("private (" .. ev.kind .. ")") end, { kinds = { "group" } })
]])
    assert(ok, err)
    local allowed, why = S:read{ user = "a", session = "g:x" }
    assert.is_false(allowed)
    assert.equals("private (group)", why)
    assert.is_true(S:read{ user = "a", session = "d:a:b" })
  end)

  it("is an error at the plugin's line for a kind that does not exist", function()
    local _, ok, err, path = load("badkind", [[
local x = 1
plugin:hook("message.send", function(ev) end, { kinds = { "grop" } })
]])
    assert.is_nil(ok)
    assert.equals(path .. ':2: plugin:hook(message.send): kinds item 1: expected "direct", "group" or "custom", got the string "grop"', err)
  end)

  it("is an error for an empty kinds list, which would never fire", function()
    local _, ok, err, path = load("nokinds", 'plugin:hook("message.send", function(ev) end, { kinds = {} })\n')
    assert.is_nil(ok)
    assert.equals(path .. ':1: plugin:hook(message.send): kinds: expected a list such as { "group" }, got an empty table',
      err)
  end)

  it("is an error where an event has no session kind", function()
    local _, ok, err, path = load("connkind", [[
plugin:hook("connect", function(ev) end, { kinds = { "direct" } })
]])
    assert.is_nil(ok)
    assert.matches(path .. ":1: plugin:hook(connect): kinds applies to events with a session kind", err, 1, true)
  end)

  it("is an error for an event name that does not exist", function()
    local _, ok, err, path = load("typo", [[

plugin:hook("message.sent", function(ev) end)
]])
    assert.is_nil(ok)
    assert.matches(path .. ':2: plugin:hook: no event "message.sent"; events are message.send, message.stored', err, 1,
      true)
  end)
end)

describe("options", function()
  local src = [[
--% version: 1
local allow = plugin:option_list("allow", { "alice" })
local mode = plugin:option_string("mode", "warn")
plugin:hook("message.send", function(ev) end)
]]

  it("warns about a misspelled option, naming the hubu.lua line and the options there are", function()
    local cfg = tmpdir{ ["hubu.lua"] = 'heartbeat_ms = 5000\n\nplugin "links" {\n  mode = "block",\n  alow = { "bob" },\n}\n' }
    local S, ok, err = load("links", src, { config = { links = { mode = "block", alow = { "bob" } } },
                                               config_file = cfg .. "/hubu.lua" })
    assert(ok, err)
    assert.same({ ("option alow (%s/hubu.lua:5) is not an option of plugin links, so it does nothing; "
                   .. "its options are allow, mode"):format(cfg) }, S:warnings("links"))
  end)

  it("says what a list option got and where it was set", function()
    local cfg = tmpdir{ ["hubu.lua"] = 'plugin "links" {\n  allow = "bob",\n}\n' }
    local _, ok, err, path = load("links", src, { config = { links = { allow = "bob" } }, config_file = cfg .. "/hubu.lua" })
    assert.is_nil(ok)
    assert.equals(('%s:2: option allow (%s/hubu.lua:2): expected a list of strings, got the string "bob"'):format(path, cfg), err)
  end)

  it("type-checks a list's items", function()
    local _, ok, err, path = load("links", src, { config = { links = { allow = { "bob", 7 } } } })
    assert.is_nil(ok)
    assert.equals(path .. ":2: option allow (config): expected a list of strings, got item 2: number 7", err)
  end)

  it("type-checks the items of a list whose default is empty: all of one type", function()
    local S, ok, err = load("empty", 'local allow = plugin:option_list("allow", {})\n',
      { config = { empty = { allow = { "bob", "carol" } } } })
    assert(ok, err)
    assert.same({}, S:warnings("empty"))
    local _, ok2, err2, path = load("empty", '\nlocal allow = plugin:option_list("allow", {})\n',
      { config = { empty = { allow = { "bob", 7 } } } })
    assert.is_nil(ok2)
    assert.equals(path .. ":2: option allow (config): expected a list of items of one type, got item 2: number 7", err2)
  end)

  it("checks a default against the option's type, and a list's item_type", function()
    local _, ok, err, path = load("d", 'local x = 1\nlocal user = plugin:option_string("user", 5)\n')
    assert.is_nil(ok)
    assert.equals(path .. ":2: plugin:option_string(user, default): default: expected a string, got number 5", err)
    local _, ok2, err2, path2 = load("d", 'local n = plugin:option_number("n", "5")\n')
    assert.is_nil(ok2)
    assert.equals(path2 .. ':1: plugin:option_number(n, default): default: expected a number, got the string "5"', err2)
    local _, ok3, err3, path3 = load("d", 'local l = plugin:option_list("l", { "a", 2 })\n')
    assert.is_nil(ok3)
    assert.equals(path3 .. ":1: plugin:option_list(l, default): default item 2: expected a string, got number 2", err3)
    local _, ok4, err4, path4 = load("d", 'local l = plugin:option_list("l", {}, "strings")\n')
    assert.is_nil(ok4)
    assert.equals(path4 .. ':1: plugin:option_list(l, default, item_type): item_type: expected "string", "number", '
      .. '"boolean" or "table", got the string "strings"', err4)
  end)

  it("says what a number option got, with its range", function()
    local _, ok, err, path = load("nums", 'local n = plugin:option_number("burst", 5, 1, 100)\n',
      { config = { nums = { burst = 0 } } })
    assert.is_nil(ok)
    assert.equals(path .. ":1: option burst (config): expected a number from 1 to 100, got number 0", err)
  end)
end)

describe("verdicts", function()
  it("names the verdicts there are when a plugin calls one that does not exist", function()
    local S, ok, err, path = load("typo_verdict", [[
plugin:hook("message.send", function(ev)
  if ev.body == "spam" then
    ev:rejct("REJECTED", "spam")
  end
end)
]])
    assert(ok, err)
    local v = S:send{ user = "a", session = "d:a:b", body = "spam" }
    assert.is_true(v.passed) -- failure: open; the mistake is logged, at its line
    local line = assert(S:log_lines("hook_failed")[1])
    assert.equals(path .. ':3: message.send events have no field or verdict "rejct"; fields: user, device, session_id, '
      .. "client_id, body, content_type, meta, kind; verdicts: reject(code, reason [, retry_after_ms]), "
      .. "rewrite{ body =, content_type =, meta = }, stop()", line.fields.error)
  end)

  it("names the codes there are for an unknown code", function()
    local S, ok, err, path = load("badcode", [[
--% failure: closed
plugin:hook("message.send", function(ev) ev:reject("SPAM", "no") end)
]])
    assert(ok, err)
    local v = S:send{ user = "a", session = "d:a:b", body = "x" }
    assert.equals("REJECTED", v.code)
    assert.equals("plugin badcode failed", v.reason)
    assert.equals(path .. ':2: ev:reject: code must be one of REJECTED, RATE_LIMITED, FORBIDDEN, INVALID, NOT_FOUND, '
      .. 'UNAVAILABLE, INTERNAL, TIMEOUT; got the string "SPAM"', S:log_lines("hook_failed")[1].fields.error)
  end)

  it("is an error to use a verdict in a hook that has none", function()
    local S, ok, err, path = load("stored_reject", [[
plugin:hook("message.stored", function(ev)
  ev:reject("REJECTED", "too late")
end)
]])
    assert(ok, err)
    S:stored{ session = "d:a:b", sender = "a", body = "x" }
    assert.matches(path .. ':2: message.stored events have no field or verdict "reject"; fields: session_id, seq, msg_id',
      S:log_lines("hook_failed")[1].fields.error, 1, true)
    assert.matches("; verdicts: stop()", S:log_lines("hook_failed")[1].fields.error, 1, true)
  end)

  it("catches a misspelled field instead of reading nil", function()
    local S, ok, err, path = load("field_typo", [[
plugin:hook("message.send", function(ev)
  if ev.sesion_id == "g:x" then ev:reject() end
end)
]])
    assert(ok, err)
    S:send{ user = "a", session = "g:x", body = "x" }
    assert.matches(path .. ':2: message.send events have no field or verdict "sesion_id"',
      S:log_lines("hook_failed")[1].fields.error, 1, true)
  end)
end)

describe("im calls", function()
  it("point at the plugin's line with what they expected and got", function()
    local S, ok, err, path = load("bot", [[
plugin:hook("message.stored", function(ev)
  if ev.sender == "bot" then return end
  im.send{ as = "bot", session = ev.session_id, bdy = "hi" }
end)
]])
    assert(ok, err)
    S:stored{ session = "d:alice:bot", sender = "alice", body = "x" }
    assert.equals(path .. ":3: im.send: no field bdy; fields are as, session, body, content_type, device",
      S:log_lines("hook_failed")[1].fields.error)
  end)

  it("that wait, where nothing may wait, name the plugin's line and where they may", function()
    local S, ok, err, path = load("waits", [[
plugin:hook("message.route", function(ev)
  local v = im.kv.get("x")
end)
]])
    assert(ok, err)
    S:route{ session = "g:x", sender = "a" }
    assert.equals(path .. ":2: im.kv.get waits: call it in message.send, message.stored, call.<method>, connect, "
      .. "disconnect or a timer, or pass a callback", S:log_lines("hook_failed")[1].fields.error)
    local _, ok2, err2, path2 = load("early", 'local x = 1\nim.send{ as = "bot", session = "d:a:bot", body = "hi" }\n')
    assert.is_nil(ok2)
    assert.equals(path2 .. ":2: im.send is not allowed while a plugin loads (do it in a hook or a timer)", err2)
  end)

  it("checks their argument types", function()
    local _, ok, err, path = load("timer", 'plugin:every("5", function() end)\n')
    assert.is_nil(ok)
    assert.equals(path .. ':1: plugin:every(seconds, fn): seconds: expected a number >= 0, got the string "5"', err)
  end)
end)

describe("tracebacks", function()
  it("hold the plugin's frames, one a line, and no host frames", function()
    local S, ok, err, path = load("deep", [[
local function inner(x)
  return x.field.more
end
local function outer(x) return inner(x) + 1 end
plugin:hook("message.send", function(ev)
  outer({})
end)
]])
    assert(ok, err)
    S:send{ user = "a", session = "d:a:b", body = "x" }
    local l = S:log_lines("hook_failed")[1]
    assert.equals(path .. ":2: attempt to index field 'field' (a nil value)", l.fields.error)
    local frames = {}
    for f in l.fields.traceback:gmatch("[^\n]+") do frames[#frames + 1] = f end
    assert.matches("^" .. path:gsub("%p", "%%%0") .. ":2: in function", frames[1])
    assert.matches(":4: in function", frames[2], 1, true)
    assert.matches(":6: in function", frames[3], 1, true)
    assert.is_nil(l.text:find("host.lua", 1, true))
    assert.is_nil(l.text:find("[C]", 1, true))
    -- one escaping: the line's text holds \n between frames, never \\n
    assert.is_nil(l.text:find("\\\\n", 1, true))
    assert.is_not_nil(l.text:find("\\n", 1, true))
  end)
end)

describe("load log lines", function()
  it("carry the version, and the previous one on a reload, and the unloaded one", function()
    local dir = tmpdir{ ["v.lua"] = "--% version: 1.0\nplugin:hook('connect', function() end)\n" }
    local S = plugin.host()
    assert(S:load("v", dir .. "/v.lua"))
    local f = assert(io.open(dir .. "/v.lua", "wb"))
    f:write("--% version: 1.1\nplugin:hook('connect', function() end)\n")
    f:close()
    assert(S:load("v", dir .. "/v.lua"))
    assert.equals("1.0", S:log_lines("plugin_loaded")[1].fields.version)
    local r = S:log_lines("plugin_reloaded")[1].fields
    assert.equals("1.1", r.version)
    assert.equals("1.0", r.previous_version)
    assert.is_true(S:unload("v"))
    local u = assert(S:log_lines("plugin_unloaded")[1])
    assert.equals("1.1", u.fields.version)
    assert.is_nil(u.text:find("msg=", 1, true)) -- fields of their own, not one quoted msg
  end)
end)

describe("hubuctl plugin check", function()
  local hubuctl = os.getenv("HUBUCTL") or "./build/hubuctl"
  local function run(args)
    local p = assert(io.popen(hubuctl .. " plugin check " .. args .. " 2>&1; echo \"exit=$?\""))
    local out = p:read("*a")
    p:close()
    return out, tonumber(out:match("exit=(%d+)\n$"))
  end

  it("prints every error and warning of a plugin directory and exits 1 on an error", function()
    local dir = tmpdir{
      ["good.lua"] = '--% version: 1.2\nlocal n = plugin:option_number("n", 1)\nplugin:hook("connect", function() end)\n',
      ["bad.lua"] = 'plugin:hook("message.send", function(ev) end, { kinds = { "groups" } })\n',
      ["hubu.lua"] = 'heartbeat_ms = 5000\nplugin "good" {\n  m = 2,\n}\nplugin "gone" { }\n',
    }
    os.rename(dir .. "/hubu.lua", dir .. ".hubu.lua")
    local out, status = run(("'%s' --config '%s.hubu.lua'"):format(dir, dir))
    assert.equals(1, status)
    assert.matches(dir .. '/bad.lua: error: ' .. dir .. '/bad.lua:1: plugin:hook(message.send): kinds item 1: expected '
      .. '"direct", "group" or "custom", got the string "groups"\n', out, 1, true)
    assert.matches(dir .. "/good.lua: ok (version 1.2; hooks: connect)\n", out, 1, true)
    assert.matches(("good: warning: option m (%s.hubu.lua:3) is not an option of plugin good, so it does nothing; "
      .. "its options are n\n"):format(dir), out, 1, true)
    assert.matches(('%s.hubu.lua: warning: plugin "gone" has a section but no file in %s\n'):format(dir, dir), out, 1, true)
    assert.matches("1 error, 2 warnings\n", out, 1, true)
    os.remove(dir .. ".hubu.lua")
  end)

  it("exits 0 with warnings, 1 with --strict, 2 on a usage error", function()
    local dir = tmpdir{ ["p.lua"] = 'local x = plugin:option_string("x", "")\n', ["c.lua"] = 'plugin "p" { y = 1 }\n' }
    local out, status = run(("'%s/p.lua' --config '%s/c.lua'"):format(dir, dir))
    assert.equals(0, status, out)
    assert.matches("0 errors, 1 warning\n", out, 1, true)
    local slash = run(("'%s/' --config '%s/c.lua'"):format(dir, dir)) -- a directory named with its slash
    assert.matches(("\n%s/p.lua: ok (version -; hooks: none)\n"):format(dir), "\n" .. slash, 1, true)
    local _, strict = run(("'%s/p.lua' --config '%s/c.lua' --strict"):format(dir, dir))
    assert.equals(1, strict)
    local _, usage = run("")
    assert.equals(2, usage)
  end)
end)

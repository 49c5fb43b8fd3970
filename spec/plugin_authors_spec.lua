-- plugin_authors_spec.lua — what a plugin author sees of a real hubud: the
-- hook_failed line (error at the plugin's line, a traceback of the plugin's
-- frames only, escaped once), a misspelled option warned about with its
-- hubu.lua line, versions in the load lines, message.send's `kind` and
-- `kinds`, and reserved users: a bot's user cannot be logged in as with an
-- ordinary token, only with a reserved one (hubuctl token --reserved).

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- hubuctl token USER --reserved with srv's secret.
local function reserved_token(srv, user)
  local p = assert(io.popen(("%s token %s --reserved --secret %s 2>&1"):format(server.quote(server.hubuctl_path()),
    server.quote(user), server.quote("@" .. srv.secret_file))))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

-- The first log line containing text, or nil.
local function log_line(srv, text)
  for line in srv:log_text():gmatch("[^\n]+") do
    if line:find(text, 1, true) then return line end
  end
end

describe("a plugin author's view of hubud", function()
  local srv, cfg
  setup(function()
    cfg = os.tmpname()
    write(cfg, 'plugin "links" {\n  alow = { "bob" },\n}\n')
    srv = server.start_with_plugins({
      "echo",
      links = [[
--% version: 2.1
local allow = plugin:option_list("allow", {})
local function check(ev)
  local url = ev.body:match("https?://(%S+)")
  if url and not url:find("^example%.org") then error("link to " .. url) end
end
plugin:hook("message.send", function(ev) check(ev) end, { kinds = { "group" } })
plugin:hook("message.send", function(ev)
  if ev.body == "kind?" then ev:reject("INVALID", "kind=" .. ev.kind) end
end)
]],
    }, { args = { "--config", cfg }, groups = { ["g:team"] = { "alice", "bob" } } })
  end)
  teardown(function()
    os.remove(cfg)
    if srv then assert.equals(0, srv:stop()) end
  end)

  it("logs loads with the plugin's version", function()
    assert(srv:wait_log('event=plugin_loaded plugin=links version="2.1"', 1))
  end)

  it("warns about an option the plugin does not have, with its hubu.lua line", function()
    assert(srv:wait_log("event=plugin_warning plugin=links", 1))
    local line = log_line(srv, "event=plugin_warning plugin=links")
    local want = ('warning="option alow (%s:2) is not an option of plugin links, so it does nothing; its options are allow"')
      :format(cfg)
    assert.is_not_nil(line:find(want, 1, true), line)
  end)

  it("runs a kinds = { group } handler on group messages only, and message.send has kind", function()
    local alice = srv:connect("alice")
    assert.equals("kind=direct", assert(alice:send(hubu.direct("alice", "bob"), "kind?")).reason)
    assert.equals("kind=group", assert(alice:send("g:team", "kind?")).reason)
    -- the group handler raises on a foreign link: hook_failed, at the plugin's line
    assert.equals("OK", assert(alice:send("g:team", "see https://evil.example/x")).code_name)
    assert(srv:wait_log("event=hook_failed plugin=links", 1))
    local line = log_line(srv, "event=hook_failed plugin=links")
    local path = srv.plugins_dir .. "/links.lua"
    assert.matches(('hook=message.send policy=open error="%s:5: link to evil.example/x" traceback="%s:5: in function')
      :format(path, path):gsub("%p", "%%%0"), line)
    assert.matches("\\n" .. (path .. ":7: in function"):gsub("%p", "%%%0"), line) -- one escaping: \n, not \\n
    assert.is_nil(line:find("host.lua", 1, true))
    assert.is_nil(line:find("\\\\", 1, true))
    -- a direct message with the same link is not the group handler's
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "see https://evil.example/y")).code_name)
    assert.equals(1, srv:count_log("event=hook_failed plugin=links"))
  end)

  it("reloads a plugin when its hubu.lua section changes, and keeps the running config when the file breaks", function()
    local function save(text) -- atomically, as an editor does
      write(cfg .. ".tmp", text)
      assert(os.rename(cfg .. ".tmp", cfg))
    end
    save('plugin "links" {\n  allow = { "example.org" },\n}\n')
    assert(srv:wait_log("event=plugin_reloaded plugin=links", 1, 3000))
    assert(srv:wait_log("event=config_reloaded file=" .. cfg .. " plugins=1 failed=0", 1, 3000))
    save('plugin "links" {\n  allow = { "example.org" \n}\n') -- broken: a brace missing
    assert(srv:wait_log("event=config_reload_failed file=" .. cfg, 1, 3000))
    assert.equals(1, srv:count_log("event=plugin_reloaded plugin=links"))
    local alice = srv:connect("alice")
    assert.equals("kind=group", assert(alice:send("g:team", "kind?")).reason) -- still runs
    -- hubuctl reload --config says why, and changes nothing
    local function reload_config()
      local p = assert(io.popen(("%s reload --config --admin 127.0.0.1:%d 2>&1; echo \"exit=$?\""):format(
        server.quote(server.hubuctl_path()), srv.admin_port)))
      local out = p:read("*a")
      p:close()
      return out
    end
    local out1 = reload_config()
    assert.matches("422", out1, 1, true)
    assert.matches("exit=1", out1, 1, true)
    save('plugin "links" {\n  allow = { "example.org", "example.net" },\n}\n')
    assert(srv:wait_log("event=plugin_reloaded plugin=links", 2, 3000))
    local out = reload_config()
    assert.matches("exit=0", out, 1, true)
    assert.matches('"reloaded": "config"', out, 1, true)
    assert.matches("no plugin section changed", out, 1, true)
    -- a section whose plugin name is misspelled configures nothing: warned about with its line
    save('plugin "links" {\n  allow = { "example.org", "example.net" },\n}\n\nplugin "lnks" { allow = {} }\n')
    assert(srv:wait_log(('event=plugin_warning plugin=lnks warning="the section of plugin lnks (%s:5) names no file in '
      .. '%s (lnks.lua or lnks/init.lua), so it does nothing"'):format(cfg, srv.plugins_dir), 1, 3000))
  end)

  it("refuses a HELLO as a reserved user with an ordinary token", function()
    local c, err = hubu.connect{ port = srv.port, user = "echo-bot", token = srv:token("echo-bot") }
    assert.is_nil(c)
    assert.matches("UNAUTHENTICATED", err)
    assert.matches("user echo%-bot is reserved by plugin echo: log in with a reserved token", err)
    assert(srv:wait_log('user=echo-bot device=spec reason="user echo-bot is reserved by plugin echo', 1))
  end)

  it("accepts a reserved token for the reserved user, and for others", function()
    local tok = reserved_token(srv, "echo-bot")
    assert.matches("^v1r%.echo%-bot%.%d+%.%x+$", tok)
    local bot = srv:connect("echo-bot", { token = tok })
    assert.is_not_nil(bot)
    local carol = srv:connect("carol", { token = reserved_token(srv, "carol") })
    assert.is_not_nil(carol)
    -- an ordinary user with an ordinary token, as ever
    assert.is_not_nil(srv:connect("dave"))
  end)
end)

describe("--plugins given with a trailing slash", function()
  it("names the files DIR/NAME.lua in load lines and errors", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
    write(dir .. "/ok.lua", "--% version: 3\nplugin:hook('connect', function() end)\n")
    write(dir .. "/broken.lua", "plugin:hook('message.sent', function() end)\n")
    local srv = server.start{ plugins = dir .. "/" }
    local ok, err = pcall(function()
      assert(srv:wait_log(('event=plugin_loaded plugin=ok version="3" path="%s/ok.lua"'):format(dir), 1))
      assert(srv:wait_log(('error="%s/broken.lua:1: plugin:hook: no event'):format(dir), 1))
      assert.is_nil(srv:log_text():find(dir .. "//", 1, true))
    end)
    assert.equals(0, srv:stop())
    os.execute("rm -rf '" .. dir .. "'")
    assert(ok, err)
  end)
end)

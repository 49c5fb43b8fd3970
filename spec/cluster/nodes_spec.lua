-- nodes_spec.lua — plugins across the nodes of one cluster: three hubud
-- nodes (--cluster) on the private MariaDB and redis-server that
-- tests/cluster.cmake starts, each with a plugins folder of its own.
--   * a bot answers on the node that stored the message, once for the whole
--     cluster, and users on the other nodes get both;
--   * a plugin reloaded on one node is the new version there only, and the
--     other nodes' traffic goes on meanwhile, nothing refused or lost.
-- Run by ctest as cluster.spec.nodes (HUBU_MARIADB_ENV, HUBU_REDIS_ENV, ...).

local ffi = require("ffi")
local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")

pcall(ffi.cdef, [[ int setenv(const char *name, const char *value, int overwrite); ]])

local function env_file_value(path, key)
  local f = assert(io.open(path, "r"), "cannot read " .. path)
  for line in f:lines() do
    local v = line:match("^" .. key .. "=(.*)$")
    if v then
      f:close()
      return (v:gsub("^'(.*)'$", "%1"):gsub("'\\''", "'"))
    end
  end
  f:close()
  error(key .. " not in " .. path)
end

local function need(name)
  return assert(os.getenv(name), name .. " is not set: run this spec through ctest (tests/cluster.cmake)")
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function bot(version)
  return ([[
--%% summary: answers "ping" with "pong v%d" in any session it is in
--%% version: %d
local me = plugin:reserve_user("pong-bot")
plugin:hook("message.stored", function(ev)
  if ev.sender ~= me and ev.body == "ping" then
    im.send{ as = me, session = ev.session_id, body = "pong v%d" }
  end
end)
]]):format(version, version, version)
end

local function hex(n)
  local t = {}
  for i = 1, n do t[i] = ("%02x"):format(math.random(0, 255)) end
  return table.concat(t)
end

describe("three cluster nodes", function()
  local nodes, dirs, store, database = {}, {}, nil, nil
  local mdb_script, mdb_dir = need("HUBU_MARIADB_SCRIPT"), need("HUBU_MARIADB_DIR")

  setup(function()
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
    local menv, renv = need("HUBU_MARIADB_ENV"), need("HUBU_REDIS_ENV")
    database = "hubu_spec_" .. hex(4)
    assert(os.execute(("%s sql %s 'CREATE DATABASE %s' >/dev/null"):format(mdb_script, mdb_dir, database)) == 0)
    ffi.C.setenv("HUBU_STORE_PASSWORD", env_file_value(menv, "MARIADB_PASSWORD"), 1)
    store = ("mariadb://%s@127.0.0.1:%s/%s"):format(env_file_value(menv, "MARIADB_USER"),
                                                    env_file_value(menv, "MARIADB_PORT"), database)
    local redis = env_file_value(renv, "REDIS_URL")
    local secret = hex(32)
    for n = 1, 3 do
      dirs[n] = io.popen("mktemp -d /tmp/hubu-spec-plugins.XXXXXX"):read("*l")
      write(dirs[n] .. "/pong.lua", bot(1))
      nodes[n] = server.start{
        secret = secret, plugins = dirs[n],
        args = { "--store", store, "--cluster", redis, "--node-id", tostring(n), "--cluster-lease-ms", "1500" },
      }
    end
    -- the group, made through node 1 as an operator would (the other nodes read it from the store)
    local cmd = ("%s group create g:team alice bob carol pong-bot --admin 127.0.0.1:%d >/dev/null"):format(
      need("HUBUCTL"), nodes[1].admin_port)
    assert(os.execute(cmd) == 0, "hubuctl group create failed")
  end)

  teardown(function()
    for n = 1, 3 do
      if nodes[n] then nodes[n]:stop() end
      if dirs[n] then os.execute("rm -rf '" .. dirs[n] .. "'") end
    end
    if database then os.execute(("%s sql %s 'DROP DATABASE %s' >/dev/null"):format(mdb_script, mdb_dir, database)) end
  end)

  it("a bot answers once, on the node that stored the message, and the other nodes' users get both", function()
    local bob = nodes[1]:connect("bob", { from_now = true })
    local alice = nodes[2]:connect("alice", { from_now = true })
    local carol = nodes[3]:connect("carol", { from_now = true })
    local ack = assert(bob:send("g:team", "ping"))
    assert.equals("OK", ack.code_name)
    for _, c in ipairs({ alice, carol }) do
      local got = {}
      for i = 1, 2 do
        local m = assert(c:recv(3000), c.user .. " got " .. #got .. " of 2")
        got[i] = m.sender .. ": " .. m.body
      end
      assert.same({ "bob: ping", "pong-bot: pong v1" }, got)
      assert.is_nil(c:recv(500)) -- one answer for the whole cluster
    end
    assert.equals("pong-bot: pong v1", (function()
      local m = assert(bob:recv(3000))
      return m.sender .. ": " .. m.body
    end)())
    for _, c in ipairs({ alice, bob, carol }) do c:close() end
  end)

  it("a plugin reloaded on one node is new there only; the others' traffic goes on", function()
    local alice = nodes[2]:connect("alice", { from_now = true })
    local carol = nodes[3]:connect("carol", { from_now = true })
    local session = hubu.direct("alice", "carol")
    local reloads = { nodes[1]:count_log("plugin_reloaded"), nodes[2]:count_log("plugin_reloaded"),
                      nodes[3]:count_log("plugin_reloaded") }
    local n, ids = 60, {}
    for i = 1, n do
      if i == 20 then write(dirs[1] .. "/pong.lua", bot(2)) end -- node 1 picks the file up
      local from = (i % 2 == 0) and alice or carol
      ids[i] = assert(from:send(session, "m" .. i))
      assert.equals("OK", ids[i].code_name)
      server.sleep_ms(10)
    end
    local deadline = os.time() + 5
    while nodes[1]:count_log("plugin_reloaded") == reloads[1] and os.time() < deadline do server.sleep_ms(50) end
    assert.is_true(nodes[1]:count_log("plugin_reloaded") > reloads[1], "node 1 did not reload its plugin")
    assert.equals(reloads[2], nodes[2]:count_log("plugin_reloaded"))
    assert.equals(reloads[3], nodes[3]:count_log("plugin_reloaded"))
    -- everything sent meanwhile reached the other side once, in order
    for _, c in ipairs({ alice, carol }) do
      local got = {}
      while #got < n / 2 do
        local m = assert(c:recv(3000), c.user .. " got " .. #got .. " of " .. n / 2)
        got[#got + 1] = m.body
      end
      assert.is_nil(c:recv(300))
      local want = {}
      for i = 1, n do
        if (i % 2 == 0) ~= (c == alice) then want[#want + 1] = "m" .. i end
      end
      assert.same(want, got)
    end
    -- node 1 answers with the new version, node 2 with the old
    local bob = nodes[1]:connect("bob", { from_now = true })
    assert.equals("OK", assert(bob:send("g:team", "ping")).code_name)
    assert.equals("OK", assert(alice:send("g:team", "ping")).code_name)
    local answers = {}
    for _ = 1, 4 do
      local m = assert(carol:recv(3000))
      if m.sender == "pong-bot" then answers[#answers + 1] = m.body end
    end
    table.sort(answers)
    assert.same({ "pong v1", "pong v2" }, answers)
    for _, c in ipairs({ alice, bob, carol }) do c:close() end
  end)
end)

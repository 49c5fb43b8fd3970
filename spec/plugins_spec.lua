-- plugins_spec.lua — the shipped plugins (moderation, ratelimit, echo,
-- commands) and the plugin host's promises (budget, failure policy, CALL and
-- connect hooks) as a user sees them. Each describe starts a real hubud whose
-- plugin directory holds copies of just the plugins under test; a case that
-- needs other options runs a copy with its defaults edited (options come from
-- the defaults until the config file exists).

local server = require("spec.helpers.server")
local hubu = require("spec.helpers.hubu")
local json = require("cjson")

-- The next message from sender, skipping others (a client also gets its own
-- messages when it fills the gap before a bot's reply); nil, why.
local function recv_from(client, sender, ms)
  while true do
    local m, err = client:recv(ms or 2000)
    if not m then return nil, err end
    if m.sender == sender then return m end
  end
end

-- Sends body to session and marks the sender's own message as held, as an
-- app that shows what it sent does: the bot's reply then arrives without the
-- client first waiting out a gap (its own seq) and pulling it. The ack.
local function say(client, session, body)
  local ack = assert(client:send(session, body))
  if ack.code_name == "OK" and client:cursor(session) == ack.seq - 1 then
    assert(client:set_cursor(session, ack.seq))
  end
  return ack
end

-- Every ack of the n messages sent so far: a table client_id -> ack.
local function collect_acks(client, n, ms)
  local by_id, count = {}, 0
  while count < n do
    local list = assert(client:wait_acks(n - count, ms or 5000))
    if #list == 0 then break end
    for _, a in ipairs(list) do
      by_id[a.client_id] = a
      count = count + 1
    end
  end
  return by_id, count
end

describe("moderation in reject mode (the default)", function()
  local srv
  setup(function() srv = server.start_with_plugins{ "moderation" } end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("refuses a blocked word with REJECTED and a reason that names the rule, not the word", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local ack = assert(alice:send(hubu.direct("alice", "bob"), "well darn it"))
    assert.equals("REJECTED", ack.code_name)
    assert.matches("moderation", ack.reason)
    assert.matches("blocked%-words list", ack.reason)
    assert.is_nil(ack.reason:lower():find("darn", 1, true))
    assert.equals(0, ack.seq)
    assert.equals(0, alice:unacked()) -- a refusal is final
    assert.is_nil(bob:recv(200))
  end)

  it("matches whole words, whatever their case", function()
    local carol = srv:connect("carol")
    local session = hubu.direct("carol", "dave")
    for _, body in ipairs({ "DARN!", "oh, Heck.", "(frak)", "x smeg y" }) do
      assert.equals("REJECTED", assert(carol:send(session, body)).code_name, body)
    end
    for _, body in ipairs({ "darned", "undarn", "heckle", "frakking", "smegma-free" }) do
      assert.equals("OK", assert(carol:send(session, body)).code_name, body)
    end
  end)

  it("finds a word at the very start or end, in mixed case, between any non-word bytes", function()
    local ivan = srv:connect("ivan")
    local session = hubu.direct("ivan", "judy")
    for _, body in ipairs({ "darn", "dArN it", "it is GoRRaM", "heck\0", "\0\1frak\127", "x_smeg_y", "1+darn=2",
                            "\t\r\nHECK\n", "«darn»" .. " darn", "日本 darn", "~darn~" }) do
      assert.equals("REJECTED", assert(ivan:send(session, body)).code_name, ("%q"):format(body))
    end
  end)

  it("does not match a listed word inside a longer word, UTF-8 bytes included", function()
    local kate = srv:connect("kate")
    local session = hubu.direct("kate", "liam")
    for _, body in ipairs({ "darn9", "9darn", "darnDarn", "«darn»", "darné", "édarn", "heck\255", "\200frak",
                            "d-a-r-n", "dar n" }) do
      assert.equals("OK", assert(kate:send(session, body)).code_name, ("%q"):format(body))
    end
  end)

  it("lets clean text through unchanged", function()
    local erin, frank = srv:connect("erin"), srv:connect("frank")
    local ack = assert(erin:send(hubu.direct("erin", "frank"), "Good morning, Frank."))
    assert.equals("OK", ack.code_name)
    assert.equals(1, ack.seq)
    local m = assert(frank:recv(2000))
    assert.equals("Good morning, Frank.", m.body)
  end)

  it("leaves content that is not text alone", function()
    local gina = srv:connect("gina")
    local ack = assert(gina:send(hubu.direct("gina", "hal"), '{"say":"darn"}', { content_type = "application/json" }))
    assert.equals("OK", ack.code_name)
  end)
end)

describe("moderation in mask mode", function()
  local srv
  setup(function()
    srv = server.start_with_plugins{
      moderation = server.plugin_source("moderation", {
        { 'option_string("mode", "reject")', 'option_string("mode", "mask")' },
        { '"gorram" }', '"gorram", "café", "日本語" }' },
      }),
    }
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("stores and delivers each blocked word as asterisks, one per character", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local session = hubu.direct("alice", "bob")
    local ack = assert(alice:send(session, "Well DARN it, heck! darned un café noir"))
    assert.equals("OK", ack.code_name)
    local m = assert(bob:recv(2000))
    assert.equals("Well **** it, ****! darned un **** noir", m.body)
    local page = assert(alice:pull(session, 0, 10)) -- the store holds the masked text too
    assert.equals("Well **** it, ****! darned un **** noir", page.messages[1].body)
  end)

  it("masks words at the very start and end, UTF-8 words with one star per character, and no longer words", function()
    local ivan, judy = srv:connect("ivan"), srv:connect("judy")
    local body = "Café, CAFÉ cafés; 日本語は 日本語 (Gorram)\0smeg\1 heck\255 heckle\tDARN"
    assert.equals("OK", assert(ivan:send(hubu.direct("ivan", "judy"), body)).code_name)
    -- CAFÉ: É is not é (only ASCII letters fold); 日本語は, heck\255 and heckle are longer words
    assert.equals("****, CAFÉ cafés; 日本語は *** (******)\0****\1 heck\255 heckle\t****", assert(judy:recv(2000)).body)
  end)

  it("keeps meta and content type when it masks", function()
    local carol, dave = srv:connect("carol"), srv:connect("dave")
    assert.equals("OK", assert(carol:send(hubu.direct("carol", "dave"), "frak",
                                          { content_type = "text/markdown", meta = { lang = "en" } })).code_name)
    local m = assert(dave:recv(2000))
    assert.same({ "****", "text/markdown", { lang = "en" } }, { m.body, m.content_type, m.meta })
  end)
end)

-- im.wordset outside hubud: runtime/lua/wordset.c built as a Lua C module
-- (tests/tests.cmake passes its path; it sits next to hubud in the build tree).
local function c_wordset()
  local path = os.getenv("HUBU_WORDSET_LIB") or server.hubud_path():gsub("[^/]*$", "") .. "hubu_wordset.so"
  return assert(package.loadlib(path, "hubu_wordset_new"))
end

describe("moderation's word list", function()
  it("refuses to load with an entry that is not a single word, naming the entry", function()
    local srv = server.start_with_plugins{
      moderation = server.plugin_source("moderation", { { '"smeg", "gorram" }', '"smeg", "two words" }' } }),
    }
    assert(srv:wait_log("event=plugin_load_failed plugin=moderation", 1))
    assert.is_truthy(srv:log_text():find("option words: entry 5 is not a single word", 1, true))
    local alice = srv:connect("alice") -- not loaded: nothing is moderated
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), "darn")).code_name)
    assert.equals(0, srv:stop())
  end)
end)

describe("moderation with 1,000 words", function()
  local words = {}
  for i = 1, 1000 do words[i] = ("w%04d"):format(i) end
  local list = '{ "' .. table.concat(words, '", "') .. '" }'
  local source = server.plugin_source("moderation", {
    { 'option_list("words", { "darn", "heck", "frak", "smeg", "gorram" })', 'option_list("words", ' .. list .. ")" },
    { 'option_string("mode", "reject")', 'option_string("mode", "mask")' },
  })

  it("masks the last word of the list in a long message", function()
    local srv = server.start_with_plugins{ moderation = source }
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local body = ("lorem ipsum "):rep(400) .. "W1000 w0001 w10000"
    assert.equals("OK", assert(alice:send(hubu.direct("alice", "bob"), body)).code_name)
    assert.equals(("lorem ipsum "):rep(400) .. "***** ***** w10000", assert(bob:recv(2000)).body)
    assert.equals(0, srv:stop())
  end)

  it("scans a 5 KB message in one pass, far inside the hook budget (interpreted, as in hubud)", function()
    -- The plugin's own code under a stub host, jit.off as hubud runs it, with
    -- the C matcher hubud gives it.
    local hook
    local stub = {
      hook = function(_, _, fn) hook = fn end,
      option_list = function(_, _, d) return d end,
      option_string = function(_, _, d) return d end,
    }
    local chunk = assert(loadstring(source, "=moderation"))
    jit.off(chunk, true)
    local wordset = c_wordset()
    local im = { wordset = function(list) return wordset(list) end }
    setfenv(chunk, setmetatable({ plugin = stub, im = im }, { __index = _G }))
    chunk()
    local ev_mt = { __index = { rewrite = function(self, t) self.out = t.body end } }
    local body = ("lorem ipsum dolor sit amet w0500 "):rep(150) -- 5 KB, 750 words
    local n = 200
    local t0, ev = server.now_ms(), nil
    for _ = 1, n do
      ev = setmetatable({ body = body, content_type = "text/plain" }, ev_mt)
      hook(ev)
      assert(ev.out)
    end
    local per = (server.now_ms() - t0) / n
    assert.equals(("lorem ipsum dolor sit amet ***** "):rep(150), ev.out)
    print(("\nmoderation: 1,000 words, 5 KB body: %.3f ms per message (interpreted, im.wordset in C)"):format(per))
    assert.is_true(per < 10, ("%.3f ms per message"):format(per)) -- the budget is 100 ms
  end)
end)

describe("ratelimit", function()
  local srv
  setup(function() srv = server.start_with_plugins{ "ratelimit" } end) -- user: burst 20, 5/s
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("answers RATE_LIMITED with a retry-after once a user's burst is spent, and accepts again after it", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local session = hubu.direct("alice", "bob")
    local ids = {}
    for i = 1, 25 do ids[i] = assert(alice:send_async(session, "m" .. i)) end
    local acks = collect_acks(alice, 25)
    local ok, retry = 0, nil
    for i = 1, 25 do
      local a = assert(acks[ids[i]], "no ack for message " .. i)
      if i <= 20 then
        assert.equals("OK", a.code_name, "message " .. i .. " of the burst")
      end
      if a.code_name == "OK" then
        ok = ok + 1
      else
        assert.equals("RATE_LIMITED", a.code_name)
        retry = tonumber(a.reason:match("^user rate limit; retry after (%d+) ms$"))
        assert(retry, "reason: " .. a.reason)
        assert.is_true(retry >= 1 and retry <= 200, "retry after " .. retry)
        assert.equals(retry, a.retry_after_ms) -- the same wait in SendAck.retry_after_ms
      end
    end
    assert(retry, "nothing was rate limited")
    assert.equals(0, alice:unacked()) -- RATE_LIMITED is final, not retried
    assert.equals(ok, #assert(bob:recv_n(ok, 2000)))
    assert.is_nil(bob:recv(100)) -- the refused ones were not delivered

    server.sleep_ms(retry + 5)
    assert.equals("OK", assert(alice:send(session, "later")).code_name)
  end)

  it("gives every user a bucket of their own", function()
    local carol, dave = srv:connect("carol"), srv:connect("dave")
    for i = 1, 30 do assert(carol:send_async(hubu.direct("carol", "x" .. i), "hi")) end
    local limited = 0
    for _, a in pairs(collect_acks(carol, 30)) do
      if a.code_name == "RATE_LIMITED" then limited = limited + 1 end
    end
    assert.is_true(limited > 0, "carol was never limited")
    assert.equals("OK", assert(dave:send(hubu.direct("dave", "y"), "me too")).code_name)
  end)
end)

describe("ratelimit's sweep", function()
  -- The plugin's own code under a stub host with a clock the case moves.
  local function instance(clock)
    local hooks, timers, shared = {}, {}, {}
    local stub = {
      hook = function(_, event, fn) hooks[event] = fn end,
      option_number = function(_, _, d) return d end,
      shared = function(_, name) shared[name] = shared[name] or {}; return shared[name] end,
      every = function(_, s, fn) timers[#timers + 1] = { s = s, fn = fn } end,
    }
    local chunk = assert(loadstring(server.plugin_source("ratelimit"), "=ratelimit"))
    setfenv(chunk, setmetatable({ plugin = stub, im = { now = function() return clock.ms end } }, { __index = _G }))
    chunk()
    local ev_mt = { __index = { reject = function(self, code) self.verdict = code end } }
    return {
      send = function(user, session)
        local ev = setmetatable({ user = user, session_id = session }, ev_mt)
        hooks["message.send"](ev)
        return ev.verdict or "OK"
      end,
      period_s = timers[1].s,
      sweep = timers[1].fn,
      size = function()
        local n = 0
        for _, gen in pairs(shared.buckets) do
          for _ in pairs(gen.now) do n = n + 1 end
          for _ in pairs(gen.old) do n = n + 1 end
        end
        return n
      end,
    }
  end

  it("drops only buckets that have refilled: the verdicts equal those of a plugin that never sweeps", function()
    local clock = { ms = 0 }
    local swept, kept = instance(clock), instance(clock)
    local period_ms = swept.period_s * 1000
    local next_sweep, differ, limited = period_ms, 0, 0
    math.randomseed(7)
    for _ = 1, 20000 do
      clock.ms = clock.ms + math.random(0, 20) * (math.random() < 0.01 and 400 or 1) -- bursts and long idles
      while clock.ms >= next_sweep do swept.sweep(); next_sweep = next_sweep + period_ms end
      local user, session = "u" .. math.random(1, 4), "s" .. math.random(1, 3)
      local a, b = swept.send(user, session), kept.send(user, session)
      if a ~= b then differ = differ + 1 end
      if a == "RATE_LIMITED" then limited = limited + 1 end
    end
    assert.equals(0, differ)
    assert.is_true(limited > 100, "the stream never hit a limit: " .. limited)
    swept.sweep(); swept.sweep() -- two idle periods later nothing is left
    assert.equals(0, swept.size())
    assert.is_true(kept.size() > 0)
  end)
end)

describe("ratelimit per session", function()
  local srv
  setup(function()
    srv = server.start_with_plugins({
      ratelimit = server.plugin_source("ratelimit", {
        { 'option_number("session_rate", 20, 0.001)', 'option_number("session_rate", 0.1, 0.001)' }, -- 10 s a token
        { 'option_number("session_burst", 60, 1)', 'option_number("session_burst", 6, 1)' },
      }),
    }, { groups = { ["g:room"] = { "ann", "ben", "cat", "dan" } } })
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("limits a busy group as a whole, though no member is over their own limit", function()
    local users = { srv:connect("ann"), srv:connect("ben"), srv:connect("cat"), srv:connect("dan") }
    local codes = {}
    for round = 1, 2 do
      for _, u in ipairs(users) do
        local ack = assert(u:send("g:room", u.user .. round))
        codes[#codes + 1] = ack.code_name
        if ack.code_name == "RATE_LIMITED" then assert.matches("^session rate limit; retry after %d+ ms$", ack.reason) end
      end
    end
    assert.same({ "OK", "OK", "OK", "OK", "OK", "OK", "RATE_LIMITED", "RATE_LIMITED" }, codes)
    -- and a user's other sessions are not affected
    assert.equals("OK", assert(users[4]:send(hubu.direct("dan", "eve"), "elsewhere")).code_name)
  end)
end)

describe("echo bot", function()
  local srv
  setup(function() srv = server.start_with_plugins{ "echo" } end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("replies with the same body, byte for byte, in the same session", function()
    local alice = srv:connect("alice")
    local session = hubu.direct("alice", "echo-bot")
    local body = "hello, echo \0\1\2 — 你好"
    local ack = say(alice, session, body)
    assert.equals("OK", ack.code_name)
    local m = assert(recv_from(alice, "echo-bot"))
    assert.same({ session, ack.seq + 1, body }, { m.session, m.seq, m.body })
    assert.is_nil(recv_from(alice, "echo-bot", 200)) -- once, not in a loop
  end)
end)

describe("command bot", function()
  local srv
  setup(function() srv = server.start_with_plugins{ "commands" } end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  local function ask(client, line)
    local ack = say(client, hubu.direct(client.user, "bot"), line)
    assert.equals("OK", ack.code_name)
    local m = assert(recv_from(client, "bot"), "no reply to " .. line)
    return m.body, m, ack
  end

  it("lists its commands on /help", function()
    local alice = srv:connect("alice")
    local reply = ask(alice, "/help")
    assert.matches("/help", reply, 1, true)
    assert.matches("/time", reply, 1, true)
    assert.matches("/roll [N]", reply, 1, true)
  end)

  it("tells the server time on /time, in UTC ISO 8601", function()
    local bob = srv:connect("bob")
    local reply = ask(bob, "/time")
    local y, mo, d, h, mi, s = reply:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.%d%d%dZ$")
    assert(y, "not ISO UTC: " .. reply)
    local now = os.date("!*t")
    local then_ = { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
                    min = tonumber(mi), sec = tonumber(s) }
    assert.is_true(math.abs(os.difftime(os.time(now), os.time(then_))) <= 5, reply)
  end)

  it("rolls 1..N on /roll N, and 1..6 on /roll", function()
    local carol = srv:connect("carol")
    local seen = {}
    for _ = 1, 30 do
      local n = tonumber(ask(carol, "/roll 20"):match("^rolled (%d+) %(1%.%.20%)$"))
      assert(n and n >= 1 and n <= 20, "out of range")
      seen[n] = true
    end
    local distinct = 0
    for _ in pairs(seen) do distinct = distinct + 1 end
    assert.is_true(distinct >= 3, "30 rolls of a d20 gave " .. distinct .. " distinct values")
    local n = tonumber(ask(carol, "/roll"):match("^rolled (%d+) %(1%.%.6%)$"))
    assert(n and n >= 1 and n <= 6)
    assert.matches("^usage: /roll", (ask(carol, "/roll 0")))
    assert.matches("^usage: /roll", (ask(carol, "/roll lots")))
  end)

  it("answers an unknown command with a hint, ignores plain text, and never answers itself", function()
    local dave = srv:connect("dave")
    local session = hubu.direct("dave", "bot")
    assert.equals("unknown command /frob; try /help", (ask(dave, "/frob now")))
    assert.equals("OK", say(dave, session, "just chatting").code_name)
    assert.is_nil(recv_from(dave, "bot", 300))
    local page = assert(dave:pull(session, 0, 10))
    assert.equals(3, page.max_seq) -- /frob, its one reply, the chat: no loop
  end)

  it("answers commands over CALL with JSON", function()
    local erin = srv:connect("erin")
    local code, list = erin:call_json("commands.list", "")
    assert.equals("OK", code)
    assert.same({ "help", "time", "roll" }, { list.commands[1].name, list.commands[2].name, list.commands[3].name })
    local result
    code, result = erin:call_json("commands.run", { command = "/roll 20" })
    assert.equals("OK", code)
    assert.matches("^rolled %d+ %(1%.%.20%)$", result.reply)
    local reason
    code, result, reason = erin:call("commands.run", "not json")
    assert.same({ "INVALID", "" }, { code, result })
    assert.matches("payload", reason)
  end)
end)

describe("hook budget and failure policy", function()
  local srv
  setup(function()
    srv = server.start_with_plugins({
      spin_open = [[
--% summary: loops forever on "spin", fail-open (the default)
plugin:hook("message.send", function(ev) if ev.body == "spin" then while true do end end end)
]],
      spin_closed = [[
--% summary: loops forever on "spin closed" and in call.spin
--% failure: closed
plugin:hook("message.send", function(ev) if ev.body == "spin closed" then while true do end end end)
plugin:hook("call.spin", function(ev) local n = 0 while true do n = n + 1 end end)
]],
      spin_stubborn = [[
--% summary: loops on "stubborn", swallowing every error with pcall
--% priority: 10
plugin:hook("message.send", function(ev)
  if ev.body ~= "stubborn" then return end
  while true do pcall(function() while true do end end) end
end)
]],
      after_spin = [[
--% summary: runs after spin_stubborn; tags what it saw
--% priority: 5
plugin:hook("message.send", function(ev)
  if ev.body == "stubborn" then ev:rewrite{ body = "stubborn, then tagged" } end
end)
]],
      slow_ok = [[
--% summary: takes 120 ms on "slow", inside its own budget of 400 ms
--% budget: 400
plugin:hook("message.send", function(ev)
  if ev.body ~= "slow" then return end
  local t0 = im.now()
  while im.now() - t0 < 120 do end
  ev:rewrite{ body = "slow, done" }
end)
]],
      tight = [[
--% summary: loops forever on "tight", with a budget of 10 ms
--% budget: 10
plugin:hook("message.send", function(ev) if ev.body == "tight" then while true do end end end)
]],
    }, { args = { "--plugin-budget-ms", "50" } })
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("aborts a hook that loops forever after its budget and lets the message through (fail-open)", function()
    local alice, bob = srv:connect("alice"), srv:connect("bob")
    local t0 = server.now_ms()
    local ack = assert(alice:send(hubu.direct("alice", "bob"), "spin"))
    local took = server.now_ms() - t0
    print(("\nbudget 50 ms: the looping hook was aborted after %.1f ms"):format(took))
    assert.equals("OK", ack.code_name)
    assert.is_true(took >= 50 and took < 1000, ("took %.1f ms"):format(took))
    assert.equals("spin", assert(bob:recv(2000)).body)
    assert.equals(1, srv:count_log("event=hook_failed plugin=spin_open"))
    assert.matches("budget of 50 ms exceeded", srv:log_text(), 1, true)
  end)

  it("stops a hook that swallows the budget error with pcall, and the next handler gets a budget of its own", function()
    local gus, hal = srv:connect("gus"), srv:connect("hal")
    local t0 = server.now_ms()
    local ack = assert(gus:send(hubu.direct("gus", "hal"), "stubborn"))
    local took = server.now_ms() - t0
    print(("\nbudget 50 ms: the looping hook was aborted after %.1f ms"):format(took))
    assert.equals("OK", ack.code_name)
    assert.is_true(took >= 50 and took < 1000, ("took %.1f ms"):format(took))
    assert.equals("stubborn, then tagged", assert(hal:recv(2000)).body)
    assert.equals(1, srv:count_log("event=hook_failed plugin=spin_stubborn"))
    assert.equals(0, srv:count_log("event=hook_failed plugin=after_spin"))
  end)

  it("gives each plugin the budget its header declares (--% budget: ms)", function()
    local ida, jon = srv:connect("ida"), srv:connect("jon")
    assert.equals("OK", assert(ida:send(hubu.direct("ida", "jon"), "slow")).code_name)
    assert.equals("slow, done", assert(jon:recv(2000)).body) -- 120 ms: over the server's 50, under its own 400
    assert.equals(0, srv:count_log("event=hook_failed plugin=slow_ok"))
    local t0 = server.now_ms()
    assert.equals("OK", assert(ida:send(hubu.direct("ida", "jon"), "tight")).code_name)
    local took = server.now_ms() - t0
    print(("\nbudget 10 ms (header): the looping hook was aborted after %.1f ms"):format(took))
    assert.is_true(took >= 10 and took < 1000, ("took %.1f ms"):format(took))
    assert.matches("budget of 10 ms exceeded", srv:log_text(), 1, true)
    assert.equals("tight", assert(jon:recv(2000)).body)
  end)

  it("refuses to load a plugin whose header budget is not a number of ms", function()
    srv:write_plugin("bad_budget", "--% budget: soon\nplugin:hook('message.send', function() end)\n")
    srv:wait_log("event=plugin_load_failed plugin=bad_budget")
    -- the log line escapes the quotes around the header's value
    assert.matches('header budget: \\"soon\\" is not a whole number of ms from 1 to 60000', srv:log_text(), 1, true)
  end)

  it("refuses the message with a final REJECTED when the looping plugin is fail-closed", function()
    -- read off the wire: the answer is the server's, not the library's
    local w = assert(hubu.raw_connect{ port = srv.port, user = "carol", token = srv:token("carol") })
    w:send_frame("SEND", hubu.pb_encode{ { 1, 1 }, { 2, hubu.direct("carol", "dave") }, { 3, "spin closed" } })
    local ack = assert(w:read_frame_of("SEND_ACK", 2000))
    assert.equals(hubu.codes.REJECTED, ack[2])
    assert.equals("plugin spin_closed failed", ack[7])
    w:send_frame("SEND", hubu.pb_encode{ { 1, 2 }, { 2, hubu.direct("carol", "dave") }, { 3, "fine" } })
    ack = assert(w:read_frame_of("SEND_ACK", 2000))
    assert.equals(hubu.codes.OK, ack[2] or 0) -- proto3: OK (0) is not on the wire
    assert.equals(1, ack[4]) -- seq 1: the refused message was never stored
    w:close()
  end)

  it("answers a CALL whose fail-closed hook overran with INTERNAL, and keeps the connection", function()
    local erin = srv:connect("erin")
    local code, _, reason = erin:call("spin", "")
    assert.equals("INTERNAL", code)
    assert.equals("plugin spin_closed failed", reason)
    assert.equals("ready", (erin:state()))
    assert.equals("OK", assert(erin:send(hubu.direct("erin", "fay"), "still here")).code_name)
  end)
end)

describe("CALL and connect hooks", function()
  local srv
  setup(function()
    srv = server.start_with_plugins{
      profile = [[
--% summary: answers profile.get with JSON; greets on connect
local json = require "cjson"
plugin:hook("call.profile.get", function(ev)
  local ok, req = pcall(json.decode, ev.payload)
  if not ok or type(req) ~= "table" then ev:error("INVALID", "payload must be a JSON object") return end
  ev:reply(json.encode{ user = ev.user, device = ev.device, fields = req.fields, method = ev.method })
end)
plugin:hook("connect", function(ev)
  im.event(ev.user, "welcome", json.encode{ user = ev.user, device = ev.device }, "profile")
end)
]],
    }
  end)
  teardown(function() if srv then assert.equals(0, srv:stop()) end end)

  it("answers a CALL with a JSON payload built from the caller and the request", function()
    local alice = srv:connect("alice", { device = "laptop" })
    local code, result = alice:call_json("profile.get", { fields = { "name", "avatar" } })
    assert.equals("OK", code)
    assert.same({ user = "alice", device = "laptop", fields = { "name", "avatar" }, method = "profile.get" }, result)
    local reason
    code, result, reason = alice:call("profile.get", "[")
    assert.same({ "INVALID", "", "payload must be a JSON object" }, { code, result, reason })
  end)

  it("lets a connect hook greet the user with an EVENT", function()
    local bob = srv:connect("bob", { device = "phone" })
    local e = assert(bob:event(2000))
    assert.same({ "welcome", "profile" }, { e.name, e.sender })
    assert.same({ user = "bob", device = "phone" }, json.decode(e.payload))
  end)
end)

-- shipped_plugins_spec.lua — each shipped plugin (plugins/*.lua) in hubud's
-- plugin host without a server (spec/helpers/plugin.lua): events fired by
-- the spec, verdicts and effects (im.send, im.kv, im.http, timers, group
-- changes) read back. The server specs (plugins_spec, groups_spec,
-- hooks_spec, webhooks_spec) check the same plugins end to end; these run
-- in milliseconds and show a plugin author how to test a plugin alone.

local plugin = require("spec.helpers.plugin")
local json = require("cjson")

describe("echo (no server)", function()
  it("echoes a direct message to echo-bot, and never its own", function()
    local S = plugin.shipped("echo")
    S:stored{ session = "d:alice:echo-bot", sender = "alice", body = "hello" }
    assert.same({ { as = "echo-bot", device = "bot", session = "d:alice:echo-bot", body = "hello", content_type = "" } },
      S.sent)
    S:stored{ session = "d:alice:echo-bot", sender = "echo-bot", body = "hello" }
    S:stored{ session = "g:team", sender = "alice", body = "hello" }
    assert.equals(1, #S.sent)
  end)

  it("reserves its user: an ordinary token does not log in as echo-bot", function()
    local S = plugin.shipped("echo")
    local rows = S:list()
    assert.equals("echo", rows[1].name)
    assert.equals("echo", S.host.reserved_by("echo-bot"))
  end)
end)

describe("commands (no server)", function()
  it("answers /help, /roll and unknown commands in a direct chat with bot", function()
    local S = plugin.shipped("commands", { config = { commands = { max_roll = 10 } } })
    S:stored{ session = "d:alice:bot", sender = "alice", body = "/roll 6" }
    assert.matches("^rolled [1-6] %(1..6%)$", S.sent[1].body)
    S:stored{ session = "d:alice:bot", sender = "alice", body = "/roll 11" }
    assert.equals("usage: /roll [N], N a whole number from 1 to 10", S.sent[2].body)
    S:stored{ session = "d:alice:bot", sender = "alice", body = "/nope" }
    assert.equals("unknown command /nope; try /help", S.sent[3].body)
    S:stored{ session = "d:alice:bot", sender = "alice", body = "plain text" }
    S:stored{ session = "d:alice:bot", sender = "alice", body = "/help", replayed = true }
    assert.equals(3, #S.sent)
  end)

  it("answers the commands.run and commands.list CALLs", function()
    local S = plugin.shipped("commands")
    local r = S:call{ user = "alice", method = "commands.run", payload = json.encode{ command = "/roll 1" } }
    assert.equals("OK", r.code)
    assert.same({ reply = "rolled 1 (1..1)" }, json.decode(r.payload))
    assert.equals("INVALID", S:call{ user = "alice", method = "commands.run", payload = "{}" }.code)
    local list = json.decode(S:call{ user = "alice", method = "commands.list" }.payload)
    assert.equals("help", list.commands[1].name)
  end)
end)

describe("moderation (no server)", function()
  it("rejects a listed word, whole words only, ASCII case-insensitive", function()
    local S = plugin.shipped("moderation", { config = { moderation = { words = { "spam", "café" } } } })
    local v = S:send{ user = "alice", session = "g:team", body = "buy SPAM now" }
    assert.equals("REJECTED", v.code)
    assert.matches("blocked%-words list", v.reason)
    assert.is_true(S:send{ user = "alice", session = "g:team", body = "spammer" }.passed)
    assert.is_true(S:send{ user = "alice", session = "g:team", body = "spam", content_type = "image/png" }.passed)
  end)

  it("masks instead with mode = mask", function()
    local S = plugin.shipped("moderation", { config = { moderation = { mode = "mask" } } })
    local v = S:send{ user = "alice", session = "d:alice:bob", body = "oh darn, heck" }
    assert.is_true(v.rewritten)
    assert.equals("oh ****, ****", v.body)
  end)

  it("refuses a list that is not a list of words", function()
    local S = plugin.host{ config = { moderation = { words = { "two words" } } } }
    local ok, err = S:load("moderation", "plugins/moderation.lua")
    assert.is_nil(ok)
    assert.matches("option words: entry 1 is not a single word", err, 1, true)
  end)
end)

describe("ratelimit (no server)", function()
  it("refuses past the burst with RATE_LIMITED and a retry-after, and refills with time", function()
    local S = plugin.shipped("ratelimit", { config = { ratelimit = { user_rate = 1, user_burst = 3 } } })
    for i = 1, 3 do assert.is_true(S:send{ user = "alice", session = "d:alice:bob", body = "m" .. i }.passed) end
    local v = S:send{ user = "alice", session = "d:alice:bob", body = "m4" }
    assert.equals("RATE_LIMITED", v.code)
    assert.equals("user rate limit; retry after 1000 ms", v.reason)
    assert.equals(1000, v.retry_after_ms)
    assert.is_true(S:send{ user = "bob", session = "d:alice:bob", body = "other user" }.passed)
    S:advance(1)
    assert.is_true(S:send{ user = "alice", session = "d:alice:bob", body = "m5" }.passed)
  end)
end)

describe("groups (no server)", function()
  it("creates, joins, leaves and lists groups through im.create_group and friends", function()
    local S = plugin.shipped("groups")
    local r = S:call{ user = "alice", method = "group.create", payload = json.encode{ group = "g:team", members = { "bob" } } }
    assert.equals("OK", r.code)
    assert.same({ "alice", "bob" }, S.members["g:team"])
    assert.equals("INVALID", S:call{ user = "alice", method = "group.create", payload = json.encode{ group = "g:team" } }.code)
    assert.equals("OK", S:call{ user = "carol", method = "group.join", payload = json.encode{ group = "g:team" } }.code)
    assert.equals("OK", S:call{ user = "bob", method = "group.leave", payload = json.encode{ group = "g:team" } }.code)
    local m = S:call{ user = "carol", method = "group.members", payload = json.encode{ group = "g:team" } }
    assert.same({ ok = true, members = { "alice", "carol" } }, json.decode(m.payload))
    assert.equals("FORBIDDEN", S:call{ user = "eve", method = "group.members", payload = json.encode{ group = "g:team" } }.code)
    assert.equals("NOT_FOUND", S:call{ user = "eve", method = "group.join", payload = json.encode{ group = "g:none" } }.code)
  end)
end)

describe("bigroup (no server)", function()
  it("above the threshold hints everyone but recent senders", function()
    local S = plugin.shipped("bigroup", { config = { bigroup = { threshold = 3 } } })
    S:stored{ session = "g:big", sender = "alice", body = "hi" }
    local plan = S:route{ session = "g:big", sender = "bob", member_count = 10 }
    assert.equals("hint", plan.default)
    assert.same({ alice = "push" }, plan.modes)
    assert.equals("push", S:route{ session = "g:big", sender = "bob", member_count = 3 }.default)
    assert.equals("push", S:route{ session = "d:a:b", sender = "a", member_count = 2 }.default) -- groups only
  end)
end)

describe("auth (no server)", function()
  it("accepts a valid token, refuses a bad one, and keeps reserved users for reserved tokens", function()
    local S = plugin.host()
    assert(S:load("echo", "plugins/echo.lua"))
    assert(S:load("auth", "plugins/auth.lua"))
    assert.same({ accepted = true, as = "alice" }, S:auth{ user = "alice", token = plugin.token("alice") })
    assert.same({ accepted = false, reason = "invalid token" }, S:auth{ user = "alice", token = plugin.token("bob") })
    local r = S:auth{ user = "echo-bot", token = plugin.token("echo-bot") }
    assert.is_false(r.accepted)
    assert.equals("user echo-bot is reserved by plugin echo: log in with a reserved token", r.reason)
    assert.is_true(S:auth{ user = "echo-bot", token = plugin.token("echo-bot", 3600, true) }.accepted)
  end)

  it("lets anonymous users in as guests only with allow_anonymous", function()
    local S = plugin.shipped("auth", { config = { auth = { allow_anonymous = true } } })
    assert.same({ accepted = true, as = "guest-phone" }, S:auth{ user = "x", token = "" })
  end)
end)

describe("webhooks (no server)", function()
  it("POSTs a signed message.stored and retries a 503 after its backoff", function()
    local S = plugin.shipped("webhooks", { config = { webhooks = { url = "http://hooks.example/in", secret = "s3",
                                                                    backoff_ms = 1000 } } })
    S:stored{ session = "d:alice:bob", sender = "alice", body = "hi" }
    assert.equals(1, #S.http)
    local req = S.http[1]
    assert.equals("POST", req.method)
    assert.equals("http://hooks.example/in", req.url)
    local body = json.decode(req.body)
    assert.equals("message.stored", body.event)
    assert.equals("hi", body.data.body)
    local sig
    for _, h in ipairs(req.headers) do sig = sig or h:match("^X%-Hubu%-Signature: (.*)$") end
    local t = sig:match("^t=(%d+),")
    assert.equals("t=" .. t .. ",v1=" .. plugin.scratch.new().C.hmac("s3", t .. "." .. req.body), sig)
    S:http_answer(1, 503, "busy")
    assert.equals(1, #S.http) -- waits for its backoff
    S:advance(2)
    assert.equals(2, #S.http)
    S:http_answer(2, 200, "ok")
    S:advance(120)
    assert.equals(2, #S.http) -- delivered: no third attempt
  end)

  it("lets a before_send receiver reject, with only the codes ev:reject takes", function()
    local answer = { action = "reject", code = "BOGUS", reason = "no" }
    local S = plugin.shipped("webhooks", { config = { webhooks = { before_send_url = "http://hooks.example/check" } },
                                           http = function() return 200, json.encode(answer), {} end })
    local v = S:send{ user = "alice", session = "d:alice:bob", body = "hi" }
    assert.equals("REJECTED", v.code)
    assert.equals("no", v.reason)
    answer = { action = "rewrite", body = "HI" }
    assert.equals("HI", S:send{ user = "alice", session = "d:alice:bob", body = "hi" }.body)
  end)
end)

--% summary: token buckets per user and per session; RATE_LIMITED with a retry-after
--% version: 1
--% priority: 100
--% failure: open
-- Runs in message.send at priority 100, before moderation (50): a flood is
-- refused before any other plugin spends time on it. A message takes one
-- token from its sender's bucket and one from its session's; a message this
-- plugin refuses takes none. Buckets live in plugin:shared: a reload keeps them.
local user_rate = plugin:option_number("user_rate", 5, 0.001) -- tokens per second
local user_burst = plugin:option_number("user_burst", 20, 1)  -- bucket size
local session_rate = plugin:option_number("session_rate", 20, 0.001)
local session_burst = plugin:option_number("session_burst", 60, 1)

-- Two generations per kind: the sweep drops `old` and ages `now` into it, so
-- a bucket goes once it was idle a whole period; the period is at least the
-- time an empty bucket takes to refill, so only full buckets are dropped.
local buckets = plugin:shared("buckets")
buckets.users = buckets.users or { now = {}, old = {} }
buckets.sessions = buckets.sessions or { now = {}, old = {} }
local period_s = math.max(1, user_burst / user_rate, session_burst / session_rate)

local function find(gen, id)
  local b = gen.now[id]
  if not b then
    b = gen.old[id]
    if b then gen.now[id], gen.old[id] = b, nil end
  end
  return b
end

-- Tokens in b at now (ms); a missing bucket is full.
local function level(b, rate, burst, now)
  if not b then return burst end
  local elapsed = math.max(0, now - b.t) -- the clock may step back
  return math.min(burst, b.tokens + elapsed * rate / 1000)
end

-- Milliseconds until a bucket that holds `tokens` has one.
local function wait_ms(tokens, rate)
  if tokens >= 1 then return 0 end
  return math.ceil((1 - tokens) * 1000 / rate)
end

local function take(gen, id, b, tokens, now)
  b = b or {}
  b.tokens, b.t = tokens - 1, now
  gen.now[id] = b
end

plugin:hook("message.send", function(ev)
  local now = im.now()
  local ub, sb = find(buckets.users, ev.user), find(buckets.sessions, ev.session_id)
  local ut = level(ub, user_rate, user_burst, now)
  local st = level(sb, session_rate, session_burst, now)
  local uwait, swait = wait_ms(ut, user_rate), wait_ms(st, session_rate)
  if uwait > 0 or swait > 0 then
    local which = uwait >= swait and "user" or "session"
    ev:reject("RATE_LIMITED", ("%s rate limit; retry after %d ms"):format(which, math.max(uwait, swait)))
    return
  end
  take(buckets.users, ev.user, ub, ut, now)
  take(buckets.sessions, ev.session_id, sb, st, now)
end)

plugin:every(period_s, function()
  for _, gen in pairs(buckets) do gen.old, gen.now = gen.now, {} end
end)

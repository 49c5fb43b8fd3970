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

-- The bucket of id (moved from `old` to `now` when found there) and the
-- tokens it holds at now (ms); a missing bucket is full.
local function level(gen, id, rate, burst, now)
  local b = gen.now[id]
  if not b then
    b = gen.old[id]
    if not b then return burst, nil end
    gen.now[id], gen.old[id] = b, nil
  end
  local elapsed = now - b.t
  if elapsed < 0 then elapsed = 0 end -- the clock may step back
  local tokens = b.tokens + elapsed * rate / 1000
  if tokens > burst then tokens = burst end
  return tokens, b
end

local function take(gen, id, b, tokens, now)
  if b then
    b.tokens, b.t = tokens - 1, now
  else
    gen.now[id] = { tokens = tokens - 1, t = now }
  end
end

local now_ms = im.now
plugin:hook("message.send", function(ev)
  local now = now_ms()
  local user, sid = ev.user, ev.session_id
  local users, sessions = buckets.users, buckets.sessions
  local ut, ub = level(users, user, user_rate, user_burst, now)
  local st, sb = level(sessions, sid, session_rate, session_burst, now)
  if ut < 1 or st < 1 then -- milliseconds until both buckets hold a token
    local uwait = ut < 1 and math.ceil((1 - ut) * 1000 / user_rate) or 0
    local swait = st < 1 and math.ceil((1 - st) * 1000 / session_rate) or 0
    local which = uwait >= swait and "user" or "session"
    local wait = math.max(uwait, swait)
    ev:reject("RATE_LIMITED", ("%s rate limit; retry after %d ms"):format(which, wait), wait)
    return
  end
  take(users, user, ub, ut, now)
  take(sessions, sid, sb, st, now)
end)

plugin:every(period_s, function()
  for _, gen in pairs(buckets) do gen.old, gen.now = gen.now, {} end
end)

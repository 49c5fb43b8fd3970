--% summary: large-group fan-out: push to recently active members, PULL_HINT the rest
--% version: 1
-- Above `threshold` members, a group message is pushed only to members who
-- sent to that group within `active_seconds`; everyone else gets a coalesced
-- PULL_HINT and fetches the window with one PULL (PROTOCOL.md, 推拉结合).
local threshold = plugin:option_number("threshold", 500, 2)
local active_seconds = plugin:option_number("active_seconds", 300, 1)

local active = plugin:shared("active") -- session -> user -> last send (ms)

plugin:hook("message.stored", function(ev)
  local users = active[ev.session_id]
  if not users then
    users = {}
    active[ev.session_id] = users
  end
  users[ev.sender] = im.now()
end, { kinds = { "group" } })

plugin:hook("message.route", function(ev)
  if ev.member_count <= threshold then return end
  ev:default("hint")
  local since = im.now() - active_seconds * 1000
  for user, at in pairs(active[ev.session_id] or {}) do
    if at >= since then ev:set(user, "push") end
  end
end, { kinds = { "group" } })

plugin:every(60, function() -- forget members who went quiet
  local since = im.now() - active_seconds * 1000
  for session, users in pairs(active) do
    local any = false
    for user, at in pairs(users) do
      if at < since then users[user] = nil else any = true end
    end
    if not any then active[session] = nil end
  end
end)

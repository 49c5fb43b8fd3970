--% summary: groups over CALL: group.create, group.join, group.leave, group.members (PROTOCOL.md section 8)
--% version: 1
-- Payloads and results are JSON. The caller of group.create becomes a member;
-- creating an existing group is INVALID; group.members answers members only
-- (anyone else, and any group that does not exist, gets FORBIDDEN).
local json = require "cjson"

local function request(ev)
  local ok, req = pcall(json.decode, ev.payload)
  if not ok or type(req) ~= "table" then return nil end
  if type(req.group) ~= "string" or #req.group > 66 or not req.group:match("^g:[A-Za-z0-9_.@%-]+$") then return nil end
  return req
end

local function user_id(u)
  return type(u) == "string" and #u <= 64 and u:match("^[A-Za-z0-9_.@%-]+$") ~= nil
end

local OK = json.encode{ ok = true }

plugin:hook("call.group.create", function(ev)
  local req = request(ev)
  if not req then return ev:error("INVALID", 'payload: {"group": "g:NAME", "members": ["user", ...]}') end
  local members, seen = { ev.user }, { [ev.user] = true }
  if req.members ~= nil and type(req.members) ~= "table" then return ev:error("INVALID", "members must be a list") end
  for _, u in ipairs(req.members or {}) do
    if not user_id(u) then return ev:error("INVALID", "members must be user ids") end
    if not seen[u] then seen[u], members[#members + 1] = true, u end
  end
  local ok, err = im.create_group(req.group, members)
  if ok then return ev:reply(OK) end
  if err == "exists" then return ev:error("INVALID", req.group .. " already exists") end
  ev:error("UNAVAILABLE", err)
end)

plugin:hook("call.group.join", function(ev)
  local req = request(ev)
  if not req then return ev:error("INVALID", 'payload: {"group": "g:NAME"}') end
  local ok, err = im.add_member(req.group, ev.user)
  if ok then return ev:reply(OK) end
  if err == "not found" then return ev:error("NOT_FOUND", "no group " .. req.group) end
  ev:error("UNAVAILABLE", err)
end)

plugin:hook("call.group.leave", function(ev)
  local req = request(ev)
  if not req then return ev:error("INVALID", 'payload: {"group": "g:NAME"}') end
  local ok, err = im.remove_member(req.group, ev.user)
  if ok then return ev:reply(OK) end
  if err == "not found" then return ev:error("NOT_FOUND", "not a member of " .. req.group) end
  ev:error("UNAVAILABLE", err)
end)

plugin:hook("call.group.members", function(ev)
  local req = request(ev)
  if not req then return ev:error("INVALID", 'payload: {"group": "g:NAME"}') end
  local members, err = im.members(req.group)
  if not members and err ~= "not found" then return ev:error("UNAVAILABLE", err) end
  local member = false
  for _, u in ipairs(members or {}) do
    if u == ev.user then member = true break end
  end
  if not member then return ev:error("FORBIDDEN", "members only") end
  ev:reply(json.encode{ ok = true, members = members })
end)

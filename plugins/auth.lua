--% summary: token authentication (PROTOCOL.md section 6), as a replaceable plugin
--% version: 2
--% failure: closed
-- hubud checks tokens itself when no plugin hooks `auth`; this plugin does the
-- same check in Lua, so a deployment can copy it and change the rule (look a
-- user up elsewhere, map logins to user ids with ev:accept(user), ...).
local allow_anonymous = plugin:option_boolean("allow_anonymous", false)

plugin:hook("auth", function(ev)
  if allow_anonymous and ev.token == "" and not ev.reserved then return ev:accept("guest-" .. ev.device) end
  local ok, why, reserved_token = im.token_verify(ev.token, ev.user)
  -- a user a plugin reserved (a bot) logs in with a reserved token only
  if ok and ev.reserved and not reserved_token then
    return ev:reject(("user %s is reserved by plugin %s: log in with a reserved token"):format(ev.user, ev.reserved))
  end
  if ok then return ev:accept() end
  ev:reject(why == "token expired" and "token expired" or "invalid token")
end)

--% summary: token authentication (PROTOCOL.md section 6), as a replaceable plugin
--% version: 1
--% failure: closed
-- hubud checks tokens itself when no plugin hooks `auth`; this plugin does the
-- same check in Lua, so a deployment can copy it and change the rule (look a
-- user up elsewhere, map logins to user ids with ev:accept(user), ...).
local allow_anonymous = plugin:option_boolean("allow_anonymous", false)

plugin:hook("auth", function(ev)
  if allow_anonymous and ev.token == "" then return ev:accept("guest-" .. ev.device) end
  local ok, why = im.token_verify(ev.token, ev.user)
  if ok then return ev:accept() end
  ev:reject(why == "token expired" and "token expired" or "invalid token")
end)

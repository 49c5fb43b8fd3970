--% summary: echoes what you send to it
--% version: 2
-- the bot speaks as this user, and no client logs in as it with an ordinary token
local me = plugin:reserve_user(plugin:option_string("user", "echo-bot"))
plugin:hook("message.stored", function(ev)
  if ev.to_user == me and ev.sender ~= me then
    im.send{ as = me, session = ev.session_id, body = ev.body }
  end
end)

--% summary: echoes what you send to it
--% version: 1
local me = plugin:option_string("user", "echo-bot")
plugin:hook("message.stored", function(ev)
  if ev.to_user == me and ev.sender ~= me then
    im.send{ as = me, session = ev.session_id, body = ev.body }
  end
end)

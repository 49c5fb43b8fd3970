--% summary: a command bot: /help, /time, /roll [N] in a direct chat, or by CALL commands.run
--% version: 2
--% failure: open
local json = require "cjson"
local me = plugin:reserve_user(plugin:option_string("user", "bot")) -- no client logs in as it with an ordinary token
local max_roll = plugin:option_number("max_roll", 1000000, 2)
math.randomseed(im.now() % 2147483647)

local commands, order = {}, {}
local function command(name, usage, help, fn)
  commands[name] = { usage = usage, help = help, fn = fn }
  order[#order + 1] = name
end

command("help", "/help", "this list", function()
  local lines = { "commands:" }
  for _, name in ipairs(order) do
    lines[#lines + 1] = ("%s  %s"):format(commands[name].usage, commands[name].help)
  end
  return table.concat(lines, "\n")
end)

command("time", "/time", "the server time (UTC)", function()
  local ms = im.now()
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000)) .. (".%03dZ"):format(ms % 1000)
end)

command("roll", "/roll [N]", "a random number from 1 to N (default 6)", function(arg)
  local n = arg == "" and 6 or tonumber(arg)
  if not n or n ~= math.floor(n) or n < 1 or n > max_roll then
    return ("usage: /roll [N], N a whole number from 1 to %d"):format(max_roll)
  end
  return ("rolled %d (1..%d)"):format(math.random(n), n)
end)

-- The reply to a line starting with "/", or nil when it is not a command.
local function run(line)
  local name, arg = line:match("^/(%S*)%s*(.-)%s*$")
  if not name then return nil end
  local c = commands[name:lower()]
  if not c then return ("unknown command /%s; try /help"):format(name) end
  return c.fn(arg)
end

plugin:hook("message.stored", function(ev)
  if ev.kind ~= "direct" or ev.to_user ~= me or ev.sender == me or ev.replayed then return end
  local reply = run(ev.body)
  if reply then
    local ok, err = im.send{ as = me, session = ev.session_id, body = reply }
    if not ok then im.log("warn", "reply to %s failed: %s", ev.sender, err) end
  end
end)

-- CALL commands.run {"command": "/roll 20"} -> {"reply": "..."}
plugin:hook("call.commands.run", function(ev)
  local ok, req = pcall(json.decode, ev.payload)
  local reply = ok and type(req) == "table" and type(req.command) == "string" and run(req.command)
  if not reply then
    ev:error("INVALID", 'payload: {"command": "/name args"}')
    return
  end
  ev:reply(json.encode{ reply = reply })
end)

-- CALL commands.list -> {"commands": [{"name", "usage", "help"}...]}
plugin:hook("call.commands.list", function(ev)
  local list = {}
  for _, name in ipairs(order) do
    list[#list + 1] = { name = name, usage = commands[name].usage, help = commands[name].help }
  end
  ev:reply(json.encode{ commands = list })
end)

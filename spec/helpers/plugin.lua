-- plugin.lua — a plugin in hubud's own plugin host, without a server: the
-- no-server half of testing a plugin (spec/helpers/server.lua is the other).
-- It loads runtime/plugin/host.lua — the same code hubud runs, through the
-- Lua module hubu_scratch.so built next to hubud — into this busted process,
-- with the server's side replaced by recorders: a spec fires events and
-- looks at verdicts, im.send, im.event, im.kv, timers, im.http requests and
-- the log lines the host wrote. As OpenResty's `resty` runs Lua outside
-- nginx.
--
--   local plugin = require("spec.helpers.plugin")
--   local S = plugin.host{ config = { moderation = { mode = "mask" } } }
--   assert(S:load("plugins/moderation.lua"))
--   local v = S:send{ user = "alice", session = "d:alice:bob", body = "oh darn" }
--   assert.equals("oh ****", v.body)
--
-- S:load(path) or S:load(name, path), S:load_source(name, source): true, or
-- nil and the error ("FILE:LINE: ..."). Events: S:send{...} -> { passed } |
-- { code, reason, retry_after_ms } | { rewritten, body, content_type, meta };
-- S:stored{ session, sender, body, ... }; S:call{ user, method, payload } ->
-- { code, payload, reason }; S:connect{ user }, S:disconnect{ user };
-- S:route{ session, sender, member_count } -> { default, modes, extra };
-- S:auth{ user, token } -> { accepted, as | reason }; S:read{ user, session, op }.
-- Effects: S.sent (im.send), S.events (im.event), S.kicks, S.kv[plugin][key],
-- S.http (im.http requests; S:http_answer(i, status, body, headers) answers
-- one, or opts.http = function(req) return status, body, headers end answers
-- each at once), S.group_changes, S.members (the groups), S:log_lines(event),
-- S:warnings(name). Time: S:advance(seconds) fires the timers due.
-- plugin.token(user [, ttl_s [, reserved]]) mints a token the scratch host's
-- im.token_verify accepts.
--
-- Environment: HUBU_SCRATCH_LIB (default ./build/hubu_scratch.so).
local M = {}

local lib = os.getenv("HUBU_SCRATCH_LIB") or "./build/hubu_scratch.so"
local open, err = package.loadlib(lib, "luaopen_hubu_scratch")
if not open then error("spec.helpers.plugin: cannot load " .. lib .. " (build the hubu_scratch target): " .. tostring(err)) end
local scratch = open()
M.scratch = scratch

-- A fresh scratch host; opts as runtime/plugin/scratch.lua's M.new (config,
-- config_file, members, now_ms, http, echo_logs).
function M.host(opts)
  return scratch.new(opts)
end

-- A scratch host with the shipped plugin plugins/NAME.lua loaded (raises
-- with the load error); opts as M.host's.
function M.shipped(name, opts)
  local S = scratch.new(opts)
  local ok, lerr = S:load(name, (os.getenv("HUBU_PLUGINS_SRC") or "plugins") .. "/" .. name .. ".lua")
  if not ok then error(lerr, 2) end
  return S
end

function M.token(user, ttl_s, reserved) return scratch.token(user, ttl_s or 3600, reserved) end

return M

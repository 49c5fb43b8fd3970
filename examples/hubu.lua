-- hubu.lua — a sample hubud config file (docs/config.md has the rules).
--
-- hubud reads ./hubu.lua when it exists, or the file given with --config FILE
-- (--config off: none). It is Lua run in a sandbox: no io, no os apart from
-- os.getenv, no require. Each setting is a flag without "--" and with "-"
-- turned into "_"; a flag on the command line wins over the file, the file
-- over the defaults. An unknown setting, a value of the wrong type or one the
-- flag would refuse stops hubud with "hubu.lua:LINE: ..." (exit status 2).
-- Leave a setting out (or set it to nil) to keep its default.

-- ---- listeners ----------------------------------------------------------
listen = "127.0.0.1:7700"            -- plain TCP; port 0 picks a free port
-- tls_listen = "0.0.0.0:7743"       -- TLS, needs cert and key
-- cert = "/etc/hubu/fullchain.pem"
-- key = "/etc/hubu/privkey.pem"
http_listen = "127.0.0.1:7780"       -- HTTP: WebSocket at /ws (docs/http.md); "off" to disable
-- ws_origins = "https://chat.example" -- browser pages allowed at /ws; no Origin is always allowed
-- proxy_protocol = "tcp,http"         -- behind nginx/HAProxy sending PROXY headers (docs/deploy.md)
admin_listen = "127.0.0.1:7781"      -- /healthz, /metrics, /v1/admin/*; "off" to disable
-- admin_token = "@/etc/hubu/admin-token" -- bearer token; required when admin_listen is off loopback
-- admin_host = "admin.internal"     -- more names a request's Host may give
-- admin_allow_origin = "https://ops.example" -- browser pages allowed to call it
-- port_file = "/run/hubu/ports"     -- "tcp PORT" (and "tls", "http", "admin") lines once listening

-- ---- storage, plugins, secret ---------------------------------------------
data = "./data"                      -- the generated secret, and the store unless `store` says otherwise
-- store = "sqlite:/var/lib/hubu/hubu.db" -- sqlite:PATH (default sqlite:DATA/hubu.db)
-- store = "mariadb://hubu@127.0.0.1:3306/hubu?password_file=/etc/hubu/db-password"
--                                      -- or the password in $HUBU_STORE_PASSWORD (docs/store.md)
plugins = "./plugins"                -- Lua plugins (one section each below)
fsync = "batch"                      -- always | batch | off
node_id = 0                          -- 0-1023, part of every msg_id
secret = os.getenv("HUBU_SECRET")    -- literal or "@FILE"; nil (variable unset): DATA/secret

-- ---- logging --------------------------------------------------------------
log_level = "info"                   -- debug | info | warn | error

-- ---- connections ----------------------------------------------------------
max_frame = 1024 * 1024              -- largest frame body (any Lua expression works)
heartbeat_ms = 30000                 -- idle time before a server PING
hello_timeout_ms = 10000             -- time a new connection has to send HELLO
hello_timeout_pressure_ms = 2000     -- the same while many connections wait for HELLO
hello_max_frame = 4096               -- largest frame body before HELLO_OK
max_conns = 0                        -- 0: below the descriptor limit, with headroom
max_conns_per_ip = 0
write_queue_max = 4 * 1024 * 1024    -- per-connection output before reads pause
write_stall_ms = 30000               -- a paused connection that does not drain is closed
drain_ms = 5000                      -- SIGTERM drain budget
-- tls_ciphers = "..."               -- TLS 1.2 suites (default: ECDHE with AEAD only)
-- tls_ciphersuites = "..."          -- TLS 1.3 suites

-- ---- delivery -------------------------------------------------------------
max_inflight = 256                   -- unacknowledged pushes before PULL_HINT
max_inflight_bytes = 1024 * 1024
ack_timeout_ms = 10000
pull_limit_max = 500
max_pending_sends = 1024
max_pending_send_bytes = 4 * 1024 * 1024 -- SENDs waiting for the store, per connection
tail_cache_bytes = 64 * 1024 * 1024  -- recent messages kept for PULL, all sessions together
session_cache_max = 100000           -- sessions kept in memory
plugin_budget_ms = 100               -- longest a plugin hook call may run
plugin_memory_max = 256              -- MiB all plugins' Lua state may hold

-- ---- plugin sections --------------------------------------------------------
-- plugin "NAME" { ... } is what plugin:option_*(...) of plugins/NAME.lua
-- reads; a plugin without a section gets its defaults. Values are strings,
-- numbers, booleans and tables of them. A plugin reload (file change, SIGHUP,
-- hubuctl reload) reads its section again; the settings above are read once,
-- at start.

plugin "moderation" {
  mode = "mask",                     -- "reject" or "mask"
  words = { "darn", "heck" },
}

plugin "ratelimit" {
  user_rate = 5, user_burst = 20,
  session_rate = 20, session_burst = 60,
}

plugin "echo" { user = "echo-bot" }

plugin "commands" { user = "bot", max_roll = 1000000 }

plugin "webhooks" {
  url = "",                          -- e.g. "https://hooks.example.org/hubu"; "" posts nothing
  events = { "message.stored", "connect", "disconnect", "group.changed" },
  secret = "",                       -- signs each POST: X-Hubu-Signature (docs/plugins.md)
  max_attempts = 10, backoff_ms = 500, backoff_max_ms = 60000,
  before_send_url = "",              -- each SEND asks here first: allow, reject or rewrite
  before_send_failure = "open",      -- "closed": refuse SENDs while that receiver fails
}

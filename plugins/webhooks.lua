--% summary: POSTs signed JSON for stored messages, connects, disconnects and group changes; optional before_send webhook
--% version: 2
--% priority: -10
--% deadline: 5000
--% http_concurrency: 64
-- Each configured event goes to `url` as a POST of JSON, signed with an
-- HMAC-SHA256 of the body (X-Hubu-Signature), and is retried with backoff
-- while the receiver fails (a transport error, 408, 429 or 5xx). Stored
-- messages are delivered at least once across restarts: the handler waits
-- until the receiver took the message, and until then hubud keeps this
-- plugin's message.stored position before it (a restart hands the message
-- over again, marked replayed). Connects, disconnects and group changes are
-- retried the same way but live in memory only. With `before_send_url`, each
-- SEND is first POSTed there and the answer may allow, reject or rewrite it.
-- Without `url` and `before_send_url` the plugin hooks nothing.
local json = require "cjson"

local url = plugin:option_string("url", "")
local events = plugin:option_list("events", { "message.stored" })
local secret = plugin:option_string("secret", "")
local timeout_ms = plugin:option_number("timeout_ms", 5000, 1, 60000)
local max_attempts = plugin:option_number("max_attempts", 10, 1, 1000)
local backoff_ms = plugin:option_number("backoff_ms", 500, 1, 3600000)
local backoff_max_ms = plugin:option_number("backoff_max_ms", 60000, 1, 3600000)
local include_body = plugin:option_boolean("include_body", true)
local max_pending = plugin:option_number("max_pending", 1000, 1, 100000) -- connect/disconnect/group deliveries in memory
local before_url = plugin:option_string("before_send_url", "")
local before_timeout_ms = plugin:option_number("before_send_timeout_ms", 1000, 1, 4000) -- inside the 5 s deadline
local before_failure = plugin:option_string("before_send_failure", "open")
assert(before_failure == "open" or before_failure == "closed", 'option before_send_failure: must be "open" or "closed"')

local wanted = {}
for _, e in ipairs(events) do
  assert(e == "message.stored" or e == "connect" or e == "disconnect" or e == "group.changed",
    "option events: message.stored, connect, disconnect, group.changed")
  wanted[e] = true
end

local deliveries = im.counter("webhook_deliveries_total", "Webhook deliveries by event and outcome.",
  { "event", "outcome" })
local pending = im.gauge("webhook_pending", "Webhook deliveries waiting for their receiver.")
local waiting_now = 0 -- this version's; a reload gives up the old version's and hands the messages over again
local node = tostring(im.config("node_id") or 0)

-- ---- the body of a message as JSON can carry it ----

local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or c >= 0xC2 and c < 0xE0 and 2 or c >= 0xE0 and c < 0xF0 and 3
      or c >= 0xF0 and c < 0xF5 and 4 or nil
    if not len or i + len - 1 > n then return false end
    for k = i + 1, i + len - 1 do
      local b = s:byte(k)
      if b < 0x80 or b > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 1, 4 do
      local v = math.floor(n / 64 ^ (4 - k)) % 64
      q[k] = B64:sub(v + 1, v + 1)
    end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end

local function put_body(t, body)
  if not include_body then return end
  if utf8_valid(body) then t.body = body else t.body_base64 = base64(body) end
end

-- ---- delivering ----

-- Headers of a signed request: X-Hubu-Signature is "t=SECONDS,v1=HEX", HEX
-- the HMAC-SHA256 of "SECONDS.BODY" under the secret.
local function headers_for(event, id, body)
  local h = { ["Content-Type"] = "application/json", ["X-Hubu-Event"] = event, ["X-Hubu-Delivery"] = id }
  if secret ~= "" then
    local ts = tostring(math.floor(im.now() / 1000))
    h["X-Hubu-Signature"] = "t=" .. ts .. ",v1=" .. im.hmac_sha256(secret, ts .. "." .. body)
  end
  return h
end

-- POSTs the event until the receiver answers 2xx, max_attempts fail, or it
-- answers a status that no retry will change (4xx but 408 and 429). Waits in
-- between (im.sleep): call it only where a hook may wait.
local function deliver(event, id, data)
  local body = json.encode{ event = event, id = id, node_id = tonumber(node), time_ms = im.now(), data = data }
  local delay = backoff_ms
  waiting_now = waiting_now + 1
  pending:set(waiting_now)
  for attempt = 1, max_attempts do
    local status, answer = im.http{ method = "POST", url = url, body = body, timeout_ms = timeout_ms,
                                    headers = headers_for(event, id, body) }
    if status and status >= 200 and status < 300 then
      waiting_now = waiting_now - 1
      pending:set(waiting_now)
      deliveries:inc{ event = event, outcome = "delivered" }
      return true
    end
    local again = not status or status == 408 or status == 429 or status >= 500
    if not again or attempt == max_attempts then
      waiting_now = waiting_now - 1
      pending:set(waiting_now)
      deliveries:inc{ event = event, outcome = "failed" }
      im.log("warn", "webhook %s %s not delivered after %d attempts: %s", event, id, attempt,
        status and ("status " .. status) or tostring(answer))
      return false
    end
    deliveries:inc{ event = event, outcome = "retried" }
    im.sleep(delay * (0.75 + math.random() * 0.5) / 1000) -- jitter: receivers that come back are not hit at once
    delay = math.min(delay * 2, backoff_max_ms)
  end
end

if url ~= "" and wanted["message.stored"] then
  plugin:hook("message.stored", function(ev)
    local data = { session_id = ev.session_id, seq = ev.seq, msg_id = ev.msg_id, sender = ev.sender,
                   sender_device = ev.sender_device, client_id = ev.client_id, kind = ev.kind, to_user = ev.to_user,
                   content_type = ev.content_type, log_pos = ev.log_pos, replayed = ev.replayed }
    put_body(data, ev.body)
    deliver("message.stored", ev.msg_id, data) -- the position waits for this
  end)
end

-- Deliveries that live in memory only: at most max_pending at once.
local in_memory = 0
local counter = 0
local function deliver_volatile(event, id, data)
  if in_memory >= max_pending then
    deliveries:inc{ event = event, outcome = "dropped" }
    return
  end
  in_memory = in_memory + 1
  local ok, err = pcall(deliver, event, id, data)
  in_memory = in_memory - 1
  if not ok then error(err, 0) end
end

for _, event in ipairs({ "connect", "disconnect" }) do
  if url ~= "" and wanted[event] then
    plugin:hook(event, function(ev)
      deliver_volatile(event, ("%s-%s-%s"):format(event, node, ev.conn_id),
        { user = ev.user, device = ev.device, conn_id = ev.conn_id })
    end)
  end
end

if url ~= "" and wanted["group.changed"] then
  plugin:hook("group.changed", function(ev)
    counter = counter + 1
    deliver_volatile("group.changed", ("group-%s-%d-%d"):format(node, im.now(), counter),
      { op = ev.op, group = ev.group, users = ev.users, by = ev.by })
  end)
end

-- ---- before_send: the receiver decides, within before_send_timeout_ms ----

if before_url ~= "" then
  -- the codes ev:reject takes; the receiver's answer may name any other
  local REJECT_CODES = { REJECTED = true, RATE_LIMITED = true, FORBIDDEN = true, INVALID = true, NOT_FOUND = true,
                         UNAVAILABLE = true, INTERNAL = true, TIMEOUT = true }
  local function fail(ev, why)
    deliveries:inc{ event = "message.send", outcome = "failed" }
    im.log("warn", "before_send webhook: %s", why)
    if before_failure == "closed" then ev:reject("REJECTED", "before_send webhook unavailable") end
  end
  plugin:hook("message.send", function(ev)
    local data = { user = ev.user, device = ev.device, session_id = ev.session_id, client_id = ev.client_id,
                   content_type = ev.content_type, meta = next(ev.meta) and ev.meta or nil }
    put_body(data, ev.body)
    local body = json.encode{ event = "message.send", id = ev.user .. "-" .. ev.device .. "-" .. ev.client_id,
                              node_id = tonumber(node), time_ms = im.now(), data = data }
    local status, answer = im.http{ method = "POST", url = before_url, body = body, timeout_ms = before_timeout_ms,
                                    headers = headers_for("message.send", "send-" .. ev.client_id, body) }
    if not status then return fail(ev, answer) end
    if status < 200 or status >= 300 then return fail(ev, "status " .. status) end
    local ok, verdict = pcall(json.decode, answer)
    if not ok or type(verdict) ~= "table" then return fail(ev, "the answer is not a JSON object") end
    deliveries:inc{ event = "message.send", outcome = "delivered" }
    if verdict.action == "reject" then
      ev:reject(REJECT_CODES[verdict.code] and verdict.code or "REJECTED", -- a code ev:reject does not take: REJECTED
        type(verdict.reason) == "string" and verdict.reason:sub(1, 255) or "rejected by the before_send webhook")
    elseif verdict.action == "rewrite" then
      ev:rewrite{ body = type(verdict.body) == "string" and verdict.body or nil,
                  content_type = type(verdict.content_type) == "string" and verdict.content_type or nil,
                  meta = type(verdict.meta) == "table" and verdict.meta or nil }
    elseif verdict.action ~= "allow" then
      return fail(ev, "unknown action " .. tostring(verdict.action))
    end
  end, 20) -- after ratelimit (100) and moderation (50): the receiver sees what would be stored
end

-- hubu.lua — real HubuIM clients for busted specs, through LuaJIT FFI.
--
-- Binds client/hubu_sync.h (libhubu-client's blocking face) from the shared
-- library: env HUBU_CLIENT_LIB, default ./build/libhubu-client.so. The
-- declarations are read from the header's ffi-begin/ffi-end region, so the
-- binding cannot drift from the C (env HUBU_SYNC_H overrides the header path).
-- No C code ever calls into Lua: each method runs the client's own libuv loop
-- until its answer arrives or its timeout passes, and queues the rest.
--
--   local hubu = require("spec.helpers.hubu")
--   local alice = assert(hubu.connect{ port = p, user = "alice", token = t })
--   local ack = alice:send(hubu.direct("alice", "bob"), "hi")   -- ack.code_name == "OK", ack.seq
--   local msg = bob:recv(2000)                                  -- msg.body == "hi", or nil, "timeout"
--   local code, result = alice:call("group.members", '{"group":"g:team"}')
--   alice:close()                                               -- 0: its loop closed cleanly
--
-- Failures of the transport come back Lua style, nil plus a word ("timeout",
-- "closed", "not_ready", "invalid", "nomem"); the server's verdicts are the
-- protocol's Code names ("OK", "FORBIDDEN", ...).

local ffi = require("ffi")

local M = {}

local function here()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*/)") or "./"
end

local function read_cdef()
  local path = os.getenv("HUBU_SYNC_H") or (here() .. "../../client/hubu_sync.h")
  local f = assert(io.open(path, "r"), "hubu.lua: cannot open " .. path .. " (set HUBU_SYNC_H)")
  local text = f:read("*a")
  f:close()
  local decl = text:match("/%* ffi%-begin.-%*/(.-)/%* ffi%-end %*/")
  assert(decl, "hubu.lua: no ffi-begin/ffi-end region in " .. path)
  return decl
end

ffi.cdef(read_cdef())
local lib = ffi.load(os.getenv("HUBU_CLIENT_LIB") or "./build/libhubu-client.so")
M.lib = lib

-- PROTOCOL.md section 4, enum Code.
M.codes = {
  OK = 0, BAD_FRAME = 1, UNSUPPORTED_VERSION = 2, UNSUPPORTED_TYPE = 3, FRAME_TOO_LARGE = 4,
  BAD_BODY = 5, UNAUTHENTICATED = 6, FORBIDDEN = 7, INVALID = 8, REJECTED = 9,
  RATE_LIMITED = 10, STALE = 11, NOT_FOUND = 12, UNAVAILABLE = 13, INTERNAL = 14,
  SHUTTING_DOWN = 15, KICKED = 16, TIMEOUT = 17,
}
M.code_names = {}
for name, n in pairs(M.codes) do M.code_names[n] = name end

function M.code_name(code)
  return M.code_names[tonumber(code)] or ("CODE_" .. tostring(code))
end

-- PROTOCOL.md section 2, frame types (for send_frame and last_error().frame_type).
M.frames = {
  HELLO = 0x01, HELLO_OK = 0x02, PING = 0x03, PONG = 0x04, ERROR = 0x05, GOAWAY = 0x06,
  SEND = 0x10, SEND_ACK = 0x11, PUSH = 0x12, DELIVER_ACK = 0x13, SYNC = 0x14, SYNC_RESULT = 0x15,
  PULL = 0x16, PULL_RESULT = 0x17, PULL_HINT = 0x18, CALL = 0x20, CALL_RESULT = 0x21, EVENT = 0x22,
}

M.states = { idle = 0, connecting = 1, hello_sent = 2, ready = 3, backoff = 4, closed = 5 }

local RESULT_BUFFER = 1024 * 1024 + 1 -- a CALL_RESULT fits in one frame (default max_frame 1 MiB)

local function result_name(rc)
  return ffi.string(lib.hubu_sync_result_name(rc))
end

-- uint64 cdata as a decimal string (msg_id uses all 64 bits).
local function u64_string(v)
  return (tostring(ffi.cast("uint64_t", v)):gsub("ULL$", ""))
end
M.u64_string = u64_string

-- The direct session of two users: d:<a>:<b> with a < b bytewise.
function M.direct(a, b)
  if a > b then a, b = b, a end
  return "d:" .. a .. ":" .. b
end

-- A PROTOCOL.md section 6 token (secret: its bytes, or "@FILE").
function M.mint_token(secret, user, ttl_s)
  local buf = ffi.new("char[256]")
  local n = lib.hubu_sync_mint_token(secret, user, ttl_s or 3600, buf, 256)
  if n < 0 then error("mint_token: cannot mint a token for " .. tostring(user), 2) end
  return ffi.string(buf, n)
end

local function meta_table(ptr, len, n)
  local t = {}
  if n == 0 then return t end
  local raw = ffi.string(ptr, len)
  local parts = {}
  for s in raw:gmatch("([^%z]*)%z") do parts[#parts + 1] = s end
  for i = 1, #parts - 1, 2 do t[parts[i]] = parts[i + 1] end
  return t
end

local function message_table(m)
  return {
    session = ffi.string(m.session_id),
    seq = tonumber(m.seq),
    msg_id = u64_string(m.msg_id),
    sender = ffi.string(m.sender),
    sender_device = ffi.string(m.sender_device),
    client_id = tonumber(m.client_id),
    content_type = ffi.string(m.content_type),
    body = ffi.string(m.body, m.body_len),
    server_time_ms = tonumber(m.server_time_ms),
    meta = meta_table(m.meta, m.meta_len, tonumber(m.n_meta)),
  }
end
M.message_table = message_table

local function ack_table(a)
  return {
    code = a.code,
    code_name = M.code_name(a.code),
    ok = a.code == 0,
    client_id = tonumber(a.client_id),
    seq = tonumber(a.seq),
    msg_id = u64_string(a.msg_id),
    duplicate = a.duplicate ~= 0,
    session = ffi.string(a.session_id),
    reason = ffi.string(a.reason),
  }
end

-- meta table -> "k\0v\0..." (keys sorted, so the bytes are deterministic)
local function meta_bytes(meta)
  if not meta then return nil, 0 end
  local keys = {}
  for k in pairs(meta) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = tostring(k) .. "\0" .. tostring(meta[k]) .. "\0"
  end
  local s = table.concat(parts)
  return s, #s
end

local Client = {}
Client.__index = Client
M.Client = Client

-- Connects and waits for HELLO_OK. opts: user, token (required), device
-- (default "spec"), host, port, timeout_ms (5000), reconnect, outbox_path,
-- no_auto_sync, send_timeout_ms, tls, tls_ca_file, tls_verify, client_info,
-- from_now (recv sees only messages stored after the connect: every
-- session's cursor starts at its max_seq).
-- Returns a client, or nil and why ("UNAUTHENTICATED: ...", "timeout ...").
function M.connect(opts)
  assert(type(opts) == "table" and opts.user and opts.token, "hubu.connect{user=..., token=...}")
  -- the option strings stay referenced by `keep` for the duration of the call
  local keep = {
    host = opts.host or "127.0.0.1", user = opts.user, device = opts.device or "spec", token = opts.token,
    client_info = opts.client_info, outbox_path = opts.outbox_path, tls_ca_file = opts.tls_ca_file,
  }
  local o = ffi.new("hubu_sync_options")
  o.host = keep.host
  o.port = opts.port or 7700
  o.tls = opts.tls and 1 or 0
  o.tls_ca_file = keep.tls_ca_file
  o.tls_verify = opts.tls_verify and 1 or 0
  o.user = keep.user
  o.device = keep.device
  o.token = keep.token
  o.client_info = keep.client_info
  o.timeout_ms = opts.timeout_ms or 5000
  o.reconnect = opts.reconnect and 1 or 0
  o.outbox_path = keep.outbox_path
  o.no_auto_sync = opts.no_auto_sync and 1 or 0
  o.send_timeout_ms = opts.send_timeout_ms or 0
  o.start_at_present = opts.from_now and 1 or 0
  local err = ffi.new("char[512]")
  local h = lib.hubu_sync_open(o, err, 512)
  if h == nil then return nil, ffi.string(err) end
  return setmetatable({
    h = ffi.gc(h, lib.hubu_sync_close), -- a forgotten client is closed by the GC
    user = opts.user,
    device = keep.device,
    ack = ffi.new("hubu_sync_ack"),
    msg = ffi.new("hubu_sync_message"),
  }, Client)
end

local function handle(self)
  if not self.h then error("hubu client " .. tostring(self.user) .. " is closed", 3) end
  return self.h
end

-- Closes the connection and frees everything; returns 0 when the client's
-- loop closed cleanly (uv_loop_close), the libuv error otherwise. Idempotent.
function Client:close()
  local h = self.h
  if not h then return 0 end
  self.h = nil
  ffi.gc(h, nil)
  return lib.hubu_sync_close(h)
end

function Client:closed() return self.h == nil end

-- Queues a message; its client_id, or nil, "invalid". opts: content_type, meta (table).
function Client:send_async(session, body, opts)
  opts = opts or {}
  body = body or ""
  local meta, meta_len = meta_bytes(opts.meta)
  local id = lib.hubu_sync_send_async(handle(self), session, body, #body, opts.content_type or "text/plain", meta,
                                      meta_len)
  if id == 0 then return nil, "invalid" end
  return tonumber(id)
end

-- Waits for the answer to client_id: an ack table {code, code_name, ok, seq,
-- msg_id, client_id, duplicate, session, reason}, or nil, "timeout" / "closed".
function Client:wait_ack(client_id, timeout_ms)
  local rc = lib.hubu_sync_wait_ack(handle(self), client_id, timeout_ms or 5000, self.ack)
  if rc ~= 0 then return nil, result_name(rc) end
  return ack_table(self.ack)
end

-- Sends and waits for the ack. opts: content_type, meta, timeout_ms.
function Client:send(session, body, opts)
  local id, err = self:send_async(session, body, opts)
  if not id then return nil, err end
  return self:wait_ack(id, opts and opts.timeout_ms)
end

-- Waits until n answers are queued (or timeout) and takes every queued one:
-- a list of ack tables in arrival order (may be shorter than n), or nil, "closed".
function Client:wait_acks(n, timeout_ms)
  local rc = lib.hubu_sync_wait_acks(handle(self), n, timeout_ms or 5000)
  if rc < 0 then return nil, result_name(rc) end
  local list = {}
  while lib.hubu_sync_next_ack(self.h, self.ack) == 1 do list[#list + 1] = ack_table(self.ack) end
  return list
end

-- Messages sent and not yet answered.
function Client:unacked() return tonumber(lib.hubu_sync_unacked(handle(self))) end

-- The next message (table: session, seq, msg_id, sender, sender_device,
-- client_id, content_type, body, server_time_ms, meta), or nil, "timeout" / "closed".
function Client:recv(timeout_ms)
  local rc = lib.hubu_sync_recv(handle(self), timeout_ms or 2000, self.msg)
  if rc ~= 0 then return nil, result_name(rc) end
  return message_table(self.msg)
end

-- n messages, each within timeout_ms (default 2000) of the one before: the
-- list, or nil, why ("timeout" / "closed") and what did arrive.
function Client:recv_n(n, timeout_ms)
  local list = {}
  while #list < n do
    local m, err = self:recv(timeout_ms)
    if not m then return nil, err, list end
    list[#list + 1] = m
  end
  return list
end

-- Runs the loop for ms, queueing what arrives; how many messages are queued.
function Client:drain(ms) return lib.hubu_sync_drain(handle(self), ms or 100) end

function Client:pending_messages() return tonumber(lib.hubu_sync_pending_messages(handle(self))) end

-- Highest seq delivered in session.
function Client:cursor(session) return tonumber(lib.hubu_sync_cursor(handle(self), session)) end

-- Moves session's cursor forward to seq, dropping queued messages up to it.
function Client:set_cursor(session, seq)
  local rc = lib.hubu_sync_set_cursor(handle(self), session, seq)
  if rc ~= 0 then return nil, result_name(rc) end
  return true
end

-- History: {code, code_name, max_seq, has_more, messages = {...}} or nil, why.
function Client:pull(session, after_seq, limit, timeout_ms)
  local out = ffi.new("hubu_sync_pull_result")
  local rc = lib.hubu_sync_pull(handle(self), session, after_seq or 0, limit or 0, timeout_ms or 5000, out)
  if rc ~= 0 then return nil, result_name(rc) end
  local r = { code = out.code, code_name = M.code_name(out.code), max_seq = tonumber(out.max_seq),
              has_more = out.has_more ~= 0, messages = {} }
  for i = 0, tonumber(out.n_messages) - 1 do r.messages[#r.messages + 1] = message_table(out.messages[i]) end
  return r
end

-- Every session of the user: {code, code_name, sessions = {{session, max_seq, min_seq, kind}...}} or nil, why.
function Client:sessions(timeout_ms)
  local out = ffi.new("hubu_sync_sessions_result")
  local rc = lib.hubu_sync_list_sessions(handle(self), timeout_ms or 5000, out)
  if rc ~= 0 then return nil, result_name(rc) end
  local r = { code = out.code, code_name = M.code_name(out.code), sessions = {} }
  for i = 0, tonumber(out.n_sessions) - 1 do
    local s = out.sessions[i]
    r.sessions[#r.sessions + 1] = { session = ffi.string(s.session_id), max_seq = tonumber(s.max_seq),
                                    min_seq = tonumber(s.min_seq), kind = ffi.string(s.kind) }
  end
  return r
end

-- CALL method with payload (a string, or a table encoded as JSON). Returns the
-- Code name ("OK", "FORBIDDEN", ...), the result payload (string) and the
-- reason; or nil, "timeout" / "closed" / "not_ready".
function Client:call(method, payload, timeout_ms)
  if type(payload) == "table" then payload = require("cjson").encode(payload) end
  payload = payload or ""
  if not self.call_buf then self.call_buf = ffi.new("char[?]", RESULT_BUFFER) end
  local code = ffi.new("int[1]")
  local n = lib.hubu_sync_call(handle(self), method, payload, #payload, timeout_ms or 5000, code, self.call_buf,
                               RESULT_BUFFER)
  if n < 0 then return nil, result_name(n) end
  assert(n < RESULT_BUFFER, "call result larger than the buffer")
  return M.code_name(code[0]), ffi.string(self.call_buf, n), ffi.string(lib.hubu_sync_call_reason(self.h))
end

-- call() with the result decoded from JSON (nil when it is empty or not JSON).
function Client:call_json(method, payload, timeout_ms)
  local code, result, reason = self:call(method, payload, timeout_ms)
  if not code then return nil, result end
  local ok, decoded = pcall(require("cjson").decode, result)
  return code, ok and decoded or nil, reason
end

-- The next EVENT: {name, sender, payload}, or nil, "timeout" / "closed".
function Client:event(timeout_ms)
  local out = ffi.new("hubu_sync_event")
  local rc = lib.hubu_sync_next_event(handle(self), timeout_ms or 2000, out)
  if rc ~= 0 then return nil, result_name(rc) end
  return { name = ffi.string(out.name), sender = ffi.string(out.sender),
           payload = ffi.string(out.payload, out.payload_len) }
end

function Client:pending_events() return tonumber(lib.hubu_sync_pending_events(handle(self))) end

-- Queues a raw frame (type: number or a name of hubu.frames) with a packed body.
function Client:send_frame(frame_type, body)
  if type(frame_type) == "string" then frame_type = assert(M.frames[frame_type], "unknown frame type") end
  body = body or ""
  local rc = lib.hubu_sync_send_frame(handle(self), frame_type, body, #body)
  if rc ~= 0 then return nil, result_name(rc) end
  return true
end

-- "ready", "backoff", "closed", ... and the last state change's code name and reason.
function Client:state()
  local h = handle(self)
  local code = ffi.new("int[1]")
  local reason = ffi.string(lib.hubu_sync_state_reason(h, code))
  return ffi.string(lib.hubu_sync_state_name(lib.hubu_sync_state(h))), M.code_name(code[0]), reason
end

-- Runs the loop until the state is `name`: true, or nil, "timeout" / "closed".
function Client:wait_state(name, timeout_ms)
  local want = assert(M.states[name], "unknown state " .. tostring(name))
  local rc = lib.hubu_sync_wait_state(handle(self), want, timeout_ms or 5000)
  if rc ~= 0 then return nil, result_name(rc) end
  return true
end

-- Successful HELLO_OKs so far.
function Client:hello_count() return tonumber(lib.hubu_sync_hello_count(handle(self))) end

-- The last GOAWAY: {code, code_name, reason, reconnect_after_ms}, or nil.
function Client:goaway()
  local out = ffi.new("hubu_sync_goaway")
  if lib.hubu_sync_last_goaway(handle(self), out) == 0 then return nil end
  return { code = out.code, code_name = M.code_name(out.code), reason = ffi.string(out.reason),
           reconnect_after_ms = tonumber(out.reconnect_after_ms) }
end

-- The last ERROR frame after HELLO_OK: {code, code_name, frame_type, message}, or nil.
function Client:last_error()
  local out = ffi.new("hubu_sync_error")
  if lib.hubu_sync_last_error(handle(self), out) == 0 then return nil end
  return { code = out.code, code_name = M.code_name(out.code), frame_type = tonumber(out.frame_type),
           message = ffi.string(out.message) }
end

return M

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
-- Every wait is multiplied by HUBU_SPEC_TIME_SCALE (default 1): the valgrind
-- runs (tests/spec_valgrind.sh) set it, since hubud runs many times slower there.
local TIME_SCALE = tonumber(os.getenv("HUBU_SPEC_TIME_SCALE")) or 1
local function wait_ms(ms) return math.floor(ms * TIME_SCALE) end

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
    retry_after_ms = tonumber(a.retry_after_ms),
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
  o.timeout_ms = wait_ms(opts.timeout_ms or 5000)
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
  local rc = lib.hubu_sync_wait_ack(handle(self), client_id, wait_ms(timeout_ms or 5000), self.ack)
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
  local rc = lib.hubu_sync_wait_acks(handle(self), n, wait_ms(timeout_ms or 5000))
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
  local rc = lib.hubu_sync_recv(handle(self), wait_ms(timeout_ms or 2000), self.msg)
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
  local rc = lib.hubu_sync_pull(handle(self), session, after_seq or 0, limit or 0, wait_ms(timeout_ms or 5000), out)
  if rc ~= 0 then return nil, result_name(rc) end
  local r = { code = out.code, code_name = M.code_name(out.code), max_seq = tonumber(out.max_seq),
              has_more = out.has_more ~= 0, messages = {} }
  for i = 0, tonumber(out.n_messages) - 1 do r.messages[#r.messages + 1] = message_table(out.messages[i]) end
  return r
end

-- Every session of the user: {code, code_name, sessions = {{session, max_seq, min_seq, kind}...}} or nil, why.
function Client:sessions(timeout_ms)
  local out = ffi.new("hubu_sync_sessions_result")
  local rc = lib.hubu_sync_list_sessions(handle(self), wait_ms(timeout_ms or 5000), out)
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
  local n = lib.hubu_sync_call(handle(self), method, payload, #payload, wait_ms(timeout_ms or 5000), code, self.call_buf,
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
  local rc = lib.hubu_sync_next_event(handle(self), wait_ms(timeout_ms or 2000), out)
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
  local rc = lib.hubu_sync_wait_state(handle(self), want, wait_ms(timeout_ms or 5000))
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

-- ---- raw frames: the wire itself, for what the client library hides ----
-- (e.g. a SEND_ACK INTERNAL, which the library retries instead of reporting).
--
--   local w = assert(hubu.raw_connect{ port = p, user = "alice", token = t })
--   w:send_frame("SEND", hubu.pb_encode{ {1, 7}, {2, "d:alice:bob"}, {3, "hi"} })
--   local ack = w:read_frame_of("SEND_ACK", 2000)   -- ack[2]: the Code, ack[7]: the reason

for _, decl in ipairs{ -- one by one: another helper may have declared some already
  "struct hubu_spec_sockaddr_in { uint16_t sin_family; uint16_t sin_port; uint32_t sin_addr; uint8_t zero[8]; };",
  "struct hubu_spec_pollfd { int fd; short events; short revents; };",
  "int socket(int domain, int type, int protocol);",
  "int connect(int fd, const void *addr, uint32_t len);",
  "long write(int fd, const void *buf, size_t n);",
  "long read(int fd, void *buf, size_t n);",
  "int close(int fd);",
  "int poll(void *fds, unsigned long nfds, int timeout);",
  "int inet_pton(int af, const char *src, void *dst);",
} do pcall(ffi.cdef, decl) end

local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = (n - b) / 128
    out[#out + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(out)
end

-- Protobuf bytes of fields, a list of {number, value}: a number is a varint,
-- a string is length-delimited (strings, bytes, nested messages).
function M.pb_encode(fields)
  local out = {}
  for _, f in ipairs(fields) do
    local num, v = f[1], f[2]
    if type(v) == "number" then
      out[#out + 1] = varint(num * 8) .. varint(v)
    else
      out[#out + 1] = varint(num * 8 + 2) .. varint(#v) .. v
    end
  end
  return table.concat(out)
end

-- A protobuf message as {number = value} (the last of a repeated field wins;
-- varints as Lua numbers, exact below 2^53).
function M.pb_decode(bytes)
  local t, i = {}, 1
  local function read_varint()
    local n, mul = 0, 1
    while true do
      local b = assert(bytes:byte(i), "truncated varint")
      i = i + 1
      n = n + (b % 128) * mul
      if b < 128 then return n end
      mul = mul * 128
    end
  end
  while i <= #bytes do
    local key = read_varint()
    local num, wt = math.floor(key / 8), key % 8
    if wt == 0 then t[num] = read_varint()
    elseif wt == 2 then
      local len = read_varint()
      t[num] = bytes:sub(i, i + len - 1)
      i = i + len
    elseif wt == 1 then i = i + 8
    elseif wt == 5 then i = i + 4
    else error("unsupported wire type " .. wt) end
  end
  return t
end

local Raw = {}
Raw.__index = Raw

-- A bare TCP connection that has sent HELLO and read HELLO_OK; or nil, why.
-- opts: port, user, token, host (127.0.0.1), device ("raw").
function M.raw_connect(opts)
  local fd = ffi.C.socket(2, 1, 0) -- AF_INET, SOCK_STREAM
  if fd < 0 then return nil, "socket failed" end
  local sa = ffi.new("struct hubu_spec_sockaddr_in")
  sa.sin_family = 2
  sa.sin_port = bit.bor(bit.rshift(opts.port, 8), bit.lshift(bit.band(opts.port, 0xff), 8))
  ffi.C.inet_pton(2, opts.host or "127.0.0.1", ffi.cast("void *", ffi.cast("char *", sa) + 4))
  if ffi.C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    ffi.C.close(fd)
    return nil, "connect failed"
  end
  local w = setmetatable({ fd = fd, buf = "" }, Raw)
  w:send_frame("HELLO", M.pb_encode{ { 1, 1 }, { 2, opts.user }, { 3, opts.device or "raw" }, { 4, opts.token } })
  local ftype, fields = w:read_frame(opts.timeout_ms or 5000)
  if ftype ~= M.frames.HELLO_OK then
    w:close()
    return nil, ftype and ("frame 0x%02x: %s"):format(ftype, tostring(fields[2])) or fields
  end
  return w
end

function Raw:send_frame(frame_type, body)
  if type(frame_type) == "string" then frame_type = assert(M.frames[frame_type], "unknown frame type") end
  local n = #body
  local frame = string.char(0xA5, 1, frame_type, 0, bit.band(bit.rshift(n, 24), 0xff), bit.band(bit.rshift(n, 16), 0xff),
                            bit.band(bit.rshift(n, 8), 0xff), bit.band(n, 0xff)) .. body
  local off = 0
  while off < #frame do
    local w = ffi.C.write(self.fd, ffi.cast("const char *", frame) + off, #frame - off)
    if w <= 0 then return nil, "closed" end
    off = off + tonumber(w)
  end
  return true
end

-- The next frame: its type and decoded body (a table, see pb_decode), or nil, "timeout" / "closed".
function Raw:read_frame(timeout_ms)
  local pfd = ffi.new("struct hubu_spec_pollfd")
  pfd.fd, pfd.events = self.fd, 1 -- POLLIN
  local chunk = ffi.new("char[65536]")
  while true do
    if #self.buf >= 8 then
      local b5, b6, b7, b8 = self.buf:byte(5, 8)
      local len = ((b5 * 256 + b6) * 256 + b7) * 256 + b8
      if #self.buf >= 8 + len then
        local ftype, body = self.buf:byte(3), self.buf:sub(9, 8 + len)
        self.buf = self.buf:sub(9 + len)
        return ftype, M.pb_decode(body)
      end
    end
    if ffi.C.poll(pfd, 1, wait_ms(timeout_ms or 2000)) <= 0 then return nil, "timeout" end
    local n = tonumber(ffi.C.read(self.fd, chunk, 65536))
    if n <= 0 then return nil, "closed" end
    self.buf = self.buf .. ffi.string(chunk, n)
  end
end

-- The next frame of type name (others are skipped): its fields, or nil, why.
function Raw:read_frame_of(name, timeout_ms)
  local want = assert(M.frames[name], "unknown frame type")
  while true do
    local ftype, fields = self:read_frame(timeout_ms)
    if not ftype then return nil, fields end
    if ftype == want then return fields end
  end
end

function Raw:close()
  if self.fd then ffi.C.close(self.fd) end
  self.fd = nil
end

M.wait_ms = wait_ms
return M

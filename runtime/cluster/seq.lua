-- seq.lua — a session's next seq from its block cached in Redis
-- (runtime/cluster/redis_seq.c runs it with EVALSHA; DESIGN.md "Cluster mode").
--
-- KEYS[1]  hubu:seq:{SESSION_ID}: a hash {cur, last, gen, mark}: the block
--          [.., last] leased durably by some node, cur the last seq handed
--          out of it, gen the generation it was installed under (these
--          three replicate), and mark: gen again, written on this server
--          only (never replicated, never in the AOF). The hash tag keeps a
--          session's keys in one slot of a Redis Cluster.
-- ARGV[1]  the caller's generation: "RUN_ID:MASTER_REPLID" of the server as
--          the node read them (INFO, on its connection to this very
--          process: the RUN_ID part is always this process's).
-- ARGV[2]  floor: the highest seq the caller knows was handed out for the
--          session (what it assigned, or what the store holds). A cached
--          cur below it went back in time: unusable.
-- ARGV[3]  lo, ARGV[4] hi: a block the caller has just leased durably
--          (every seq in it above every seq ever leased for the session),
--          or 0 0.
-- ARGV[5]  seconds the cached block lives after it is installed (0: for ever).
--
-- Why mark. A block is used only where gen and mark both equal the
-- caller's generation. mark equal to it means this server process itself
-- installed the block (RUN_ID is unique per process) after checking the
-- replication id live; the data of one process goes back in time only when
-- a full resynchronisation from a master replaces it, and the copy it gets
-- then carries the master's marks, not its own. So a restart (new RUN_ID),
-- a promoted replica (its copy's marks are the old master's), and a master
-- demoted, resynchronised and promoted again without a restart (the resync
-- replaced its marks) all find no usable block, lease, and jump. The hot
-- path reads one hash; INFO runs only when a block is installed.
--
-- Answers {1, seq}: seq is above every seq handed out for the session by
-- any node and above floor; or {0, REASON}, REASON one of
--   GEN          (installing) the server's replication id is not the
--                caller's: it must read INFO again and call again
--   MISSING      no cached block (first use, expired, flushed, restarted empty)
--   GENERATION   the cached block is of another generation, or was not
--                installed by this server process (no mark of the caller's)
--   BEHIND       the cached block's cur is below floor
--   EXHAUSTED    the cached block is used up
--   STALE_BLOCK  the caller's block is not above the cached block's end
--                (of any generation: it was leased before that block) or floor
-- Every REASON but GEN asks for a new durable lease and a call with it.
local key = KEYS[1]
local gen = ARGV[1]
local floor = tonumber(ARGV[2])
local lo = tonumber(ARGV[3])
local hi = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])

local b = redis.call('HMGET', key, 'cur', 'last', 'gen', 'mark')
local cur, last = tonumber(b[1]), tonumber(b[2])
local ours = b[3] == gen and b[4] == gen
local valid = cur ~= nil and last ~= nil and ours and cur >= floor and cur <= last

if valid and cur < last then
  return {1, redis.call('HINCRBY', key, 'cur', 1)}
end

if lo > 0 then
  -- Leases only go up, so a block not above the cached one's end was leased
  -- before it; installed now, it would hand out seqs again. A retired block
  -- (a seq of it was taken: last = cur) still counts, as does one of another
  -- generation: a fresh lease is above both.
  if hi < lo or lo <= floor or (last ~= nil and lo <= last) then
    return {0, 'STALE_BLOCK'}
  end
  -- The caller's generation is this process's RUN_ID and the replication
  -- id the caller read; a promotion under an open connection changes the
  -- latter without the caller knowing: check it live.
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%x+)')
  local sep = string.find(gen, ':', 1, true)
  if not replid or not sep or string.sub(gen, sep + 1) ~= replid then
    return {0, 'GEN'}
  end
  redis.call('HSET', key, 'cur', ARGV[3], 'last', ARGV[4], 'gen', gen)
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  redis.set_repl(redis.REPL_NONE)
  redis.call('HSET', key, 'mark', gen)
  redis.set_repl(redis.REPL_ALL)
  return {1, lo}
end

if valid then
  return {0, 'EXHAUSTED'}
end
if cur == nil then
  return {0, 'MISSING'}
end
if not ours then
  return {0, 'GENERATION'}
end
return {0, 'BEHIND'}

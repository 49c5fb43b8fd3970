-- seq.lua — a session's next seq from its block cached in Redis
-- (runtime/cluster/redis_seq.c runs it with EVALSHA; DESIGN.md "Cluster mode").
--
-- KEYS[1]  hubu:seq:{SESSION_ID}: a hash {cur, last, gen}, the block
--          [.., last] leased durably by some node, cur the last seq handed
--          out of it, gen the generation it was installed under. The hash
--          tag keeps a session's keys in one slot of a Redis Cluster.
-- ARGV[1]  the caller's generation: "RUN_ID:MASTER_REPLID" of the server as
--          the node read them when it connected. A restart (new run_id),
--          a failover or a promotion (new replid) makes every cached block
--          unusable, since the data Redis holds may have gone back in time.
-- ARGV[2]  floor: the highest seq the caller knows was handed out for the
--          session (what it assigned, or what the store holds). A cached
--          cur below it went back in time: unusable.
-- ARGV[3]  lo, ARGV[4] hi: a block the caller has just leased durably
--          (every seq in it above every seq ever leased for the session),
--          or 0 0.
-- ARGV[5]  seconds the cached block lives after it is installed (0: for ever).
--
-- Answers {1, seq}: seq is above every seq handed out by any node under this
-- generation and above floor; or {0, REASON}, REASON one of
--   GEN          the server's replication id is not the caller's: it must
--                read INFO again (its generation changes) and call again
--   MISSING      no cached block (first use, expired, flushed, restarted empty)
--   GENERATION   the cached block is of another generation
--   BEHIND       the cached block's cur is below floor
--   EXHAUSTED    the cached block is used up
--   STALE_BLOCK  the caller's block is not above what is cached or floor
-- Every REASON but GEN asks for a new durable lease and a call with it.
local key = KEYS[1]
local gen = ARGV[1]
local floor = tonumber(ARGV[2])
local lo = tonumber(ARGV[3])
local hi = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])

-- The replid is checked live: a replica promoted under an open connection
-- changes it without a reconnect.
local info = redis.call('INFO', 'replication')
local replid = string.match(info, 'master_replid:(%x+)')
local sep = string.find(gen, ':', 1, true)
if not replid or not sep or string.sub(gen, sep + 1) ~= replid then
  return {0, 'GEN'}
end

local b = redis.call('HMGET', key, 'cur', 'last', 'gen')
local cur, last, kgen = tonumber(b[1]), tonumber(b[2]), b[3]
local valid = cur ~= nil and last ~= nil and kgen == gen and cur >= floor and cur <= last

if valid and cur < last then
  return {1, redis.call('HINCRBY', key, 'cur', 1)}
end

if lo > 0 then
  if hi < lo or lo <= floor or (valid and lo <= cur) then
    return {0, 'STALE_BLOCK'}
  end
  redis.call('HSET', key, 'cur', ARGV[3], 'last', ARGV[4], 'gen', gen)
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  return {1, lo}
end

if valid then
  return {0, 'EXHAUSTED'}
end
if cur == nil then
  return {0, 'MISSING'}
end
if kgen ~= gen then
  return {0, 'GENERATION'}
end
return {0, 'BEHIND'}

-- Nodes whose heartbeat is older than `ttl`. Global slot only.
-- KEYS: nodes. ARGV: ttl_ms, limit.
-- Returns up to `limit` node ids.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[2]))

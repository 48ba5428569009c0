-- Renews this node's heartbeat and reports whether Redis still knows it.
-- KEYS: nodes, epoch, this node's token, rooms, the default room's
-- settings, bans (all control keys, one slot).
-- ARGV: node, token, default room, candidate epoch.
-- Returns `{epoch, registered, default room epoch}`: the dataset's epoch
-- (set to the candidate when missing: Redis lost its data or is new),
-- whether this process's registration marker is still there (1) or must be
-- redone (0), and the default room's epoch (the caller makes sure its gate
-- exists, `room_data.lua`).
--
-- Also makes sure the default room exists: it always does, even right after
-- Redis came back empty.
local nodes, epoch_key, token_key, rooms = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rkey, bkey = KEYS[5], KEYS[6]
local node, token, default, candidate = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = redis.call('TIME')
redis.call('ZADD', nodes, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), node)
if redis.call('EXISTS', rkey) == 0 then
  redis.call('HSET', rkey, 'owner', '', 'locked', '0', 'pw', '', 'closed', '0', 'epoch', candidate)
  redis.call('DEL', bkey)
  redis.call('SADD', rooms, default)
end
local epoch = redis.call('GET', epoch_key)
if not epoch then
  epoch = candidate
  redis.call('SET', epoch_key, epoch)
end
local registered = 0
if redis.call('GET', token_key) == token then
  registered = 1
end
return {epoch, registered, redis.call('HGET', rkey, 'epoch') or candidate}

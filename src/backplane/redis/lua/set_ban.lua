-- Bans or unbans a user from a room. One room, one slot.
-- KEYS: the room's settings, bans. ARGV: user, banned ("1"/"0").
-- Returns 1 when something changed. A ban on a missing room changes
-- nothing (it would otherwise outlive the room).
local rkey, bkey = KEYS[1], KEYS[2]
local user, banned = ARGV[1], ARGV[2]
if redis.call('EXISTS', rkey) == 0 then
  return 0
end
if banned == '1' then
  return redis.call('SADD', bkey, user)
end
return redis.call('SREM', bkey, user)

-- Gives a message the next `seq` of its room and publishes its frame. One
-- room, one slot (the channel shares the room's tag).
-- KEYS: the room's settings, seq, channel.
-- ARGV: frame prefix, frame suffix, seq floor (the highest `seq` this node
-- relayed in the room, see `seq_floor.rs`).
-- Returns the new `seq`, or nil (nothing published) when the room is
-- missing or closed.
--
-- INCR and PUBLISH in one script: Redis runs scripts one at a time and
-- delivers a channel's messages in PUBLISH order, so every subscriber of
-- every node sees `seq` 1, 2, 3, ... in that order, with no gap.
local closed = redis.call('HGET', KEYS[1], 'closed')
if (not closed) or closed == '1' then
  return false
end
local seq = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if seq <= floor then
  -- The counter was lost (Redis came back empty): never repeat a number
  -- this node has already relayed in the room.
  seq = floor + 1
  redis.call('SET', KEYS[2], seq)
end
redis.call('PUBLISH', KEYS[3], ARGV[1] .. seq .. ARGV[2])
return seq

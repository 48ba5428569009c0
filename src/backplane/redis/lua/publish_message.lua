-- Gives a message the next `seq` of its room, appends it to the room's
-- history and publishes its frame. One room, one slot (the channel and the
-- history share the room's tag).
-- KEYS: the room's gate, seq, channel, history (the room's message slot).
-- ARGV: frame prefix, frame suffix, seq floor (the highest `seq` this node
-- relayed in the room, see `seq_floor.rs`), history.max_messages (0: no
-- history), history ttl in ms (0: never expires), the publish command
-- (PUBLISH, or SPUBLISH for sharded pub/sub in a Redis Cluster).
-- Returns the new `seq`, or nil (nothing published) when the room has no
-- gate (missing) or its gate is closed.
--
-- INCR, XADD and PUBLISH in one script: Redis runs scripts one at a time
-- and delivers a channel's messages in PUBLISH order, so every subscriber
-- of every node sees `seq` 1, 2, 3, ... in that order, with no gap, and
-- every published message is in history (stream id `<seq>-0`, field `f`:
-- the frame) at the moment it is published: a node that missed it can read
-- it there (`read_history.lua`).
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
local frame = ARGV[1] .. seq .. ARGV[2]
local max, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
if max > 0 then
  -- pcall: a stream whose last id is above `seq` (impossible with one
  -- dataset: delete drops both) must not stop the message, which then
  -- only misses history.
  redis.pcall('XADD', KEYS[4], 'MAXLEN', max, seq .. '-0', 'f', frame)
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
end
redis.call(ARGV[6], KEYS[3], frame)
return seq

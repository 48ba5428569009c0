-- Second step of deleting a room: its name leaves the room list (global
-- slot) unless the room exists again.
-- KEYS: rooms, the room's settings, the deleted room's owner's set of owned
-- rooms (absent without owner). ARGV: room, that owner id.
-- The owner's slot is freed unless the same owner created the room again
-- meanwhile (then it owns it again). A crash between the two steps leaves
-- the slot taken until the owner's next delete of that name.
-- Single-Redis only (two slots), to be split for Redis Cluster (issue 12);
-- there the order is what matters: the room's keys go first
-- (change_room.lua), its name last, so a crash in between leaves a name
-- without settings, which the snapshot skips and prunes, never settings
-- without a name (a room nobody would see).
local rooms, rkey, owned = KEYS[1], KEYS[2], KEYS[3]
if owned and redis.call('HGET', rkey, 'owner') ~= ARGV[2] then
  redis.call('SREM', owned, ARGV[1])
end
if redis.call('EXISTS', rkey) == 1 then
  return 0
end
return redis.call('SREM', rooms, ARGV[1])

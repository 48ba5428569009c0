-- Second step of deleting a room: its name leaves the room list (global
-- slot) unless the room exists again.
-- KEYS: rooms, the room's settings. ARGV: room.
-- Single-Redis only (two slots), to be split for Redis Cluster (issue 12);
-- there the order is what matters: the room's keys go first
-- (change_room.lua), its name last, so a crash in between leaves a name
-- without settings, which the snapshot skips and prunes, never settings
-- without a name (a room nobody would see).
local rooms, rkey = KEYS[1], KEYS[2]
if redis.call('EXISTS', rkey) == 1 then
  return 0
end
return redis.call('SREM', rooms, ARGV[1])

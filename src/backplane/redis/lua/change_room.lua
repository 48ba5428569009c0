-- Changes a room's settings. One room, one slot.
-- KEYS: the room's settings, seq, bans, members, history.
-- ARGV: change (lock|unlock|close|open|delete), password hash.
-- Returns 1 when applied, 0 when the room does not exist; a delete returns
-- `{1, owner id}` ('' without owner) so that `forget_room.lua` frees the
-- owner's slot.
--
-- Delete drops the room's settings (with its `epoch`), `seq`, bans, member
-- list and history: the
-- members themselves are moved by the RoomEvacuated event, whose
-- `join_room(previous_room = deleted)` then finds nothing to remove (like
-- the in-memory backplane, where the room is gone as a whole). The room's
-- name leaves the global room list afterwards (`forget_room.lua`).
local rkey, skey, bkey, mkey, hkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local change, pw = ARGV[1], ARGV[2]
if redis.call('EXISTS', rkey) == 0 then
  return 0
end
if change == 'lock' then
  redis.call('HSET', rkey, 'locked', '1', 'pw', pw)
elseif change == 'unlock' then
  redis.call('HSET', rkey, 'locked', '0', 'pw', '')
elseif change == 'close' then
  redis.call('HSET', rkey, 'closed', '1')
elseif change == 'open' then
  redis.call('HSET', rkey, 'closed', '0')
elseif change == 'delete' then
  local owner = redis.call('HGET', rkey, 'owner') or ''
  redis.call('DEL', rkey, skey, bkey, mkey, hkey)
  return {1, owner}
else
  return redis.error_reply('unknown room change ' .. change)
end
return 1

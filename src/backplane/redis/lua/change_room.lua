-- Changes a room's settings (control slot). The room's gate (message slot)
-- follows in a second step by the caller (`room_data.lua`): `close` and
-- `open` set its flag, `delete` removes it with `seq` and history.
-- KEYS: the room's settings, bans, members; rooms; the rooms by the time
-- they emptied.
-- ARGV (after common's two): change (lock|unlock|close|open|delete),
-- password hash.
-- Returns `{1, epoch}` when applied ('' for a room that has none), `{0}`
-- when the room does not exist.
--
-- Delete drops the room's settings, bans and member list, its name from the
-- room list and the empty rooms, and frees its owner's slot
-- (`limits.rooms_per_user`): the members themselves are moved by the
-- RoomEvacuated event, whose `join_room(previous_room = deleted)` then
-- finds nothing to remove (like the in-memory backplane, where the room is
-- gone as a whole).
local rkey, bkey, mkey, rooms, empty_rooms = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local change, pw = ARGV[3], ARGV[4]
if redis.call('EXISTS', rkey) == 0 then
  return {0}
end
local epoch = redis.call('HGET', rkey, 'epoch') or ''
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
  local room = string.sub(rkey, #B + #'{global}:room:' + 1)
  redis.call('DEL', rkey, bkey, mkey)
  redis.call('SREM', rooms, room)
  redis.call('ZREM', empty_rooms, room)
  if owner ~= '' then
    redis.call('SREM', room_key('owned', owner), room)
  end
else
  return redis.error_reply('unknown room change ' .. change)
end
return {1, epoch}

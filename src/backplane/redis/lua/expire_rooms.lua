-- Deletes rooms that have had no members for `ttl` ms
-- (`limits.empty_room_ttl_secs`), at most `limit` per call, as a delete
-- does (change_room.lua: settings, bans, members, the name in the room
-- list, the owner's slot); the caller then drops each room's message
-- state (`room_data.lua` delete).
-- KEYS: the rooms by the time they emptied, rooms. ARGV (after common's
-- two): ttl ms, limit, default room.
-- Returns `{room, epoch, ...}` for the rooms deleted. Every node runs it;
-- one step per call, so each room is deleted (and returned) once
-- cluster-wide. A due room that has members again, no longer exists or is
-- the default room just leaves the set. Bounded work: `limit` rooms, all
-- control keys (one slot).
local empty_rooms, rooms = KEYS[1], KEYS[2]
local ttl, limit, default_room = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local due = redis.call('ZRANGEBYSCORE', empty_rooms, '-inf', now_ms() - ttl, 'LIMIT', 0, limit)
local out = {}
for _, room in ipairs(due) do
  redis.call('ZREM', empty_rooms, room)
  local rkey = room_key('room', room)
  if room ~= default_room and redis.call('EXISTS', rkey) == 1
      and redis.call('HLEN', room_key('members', room)) == 0 then
    local owner = redis.call('HGET', rkey, 'owner')
    local epoch = redis.call('HGET', rkey, 'epoch') or ''
    redis.call('DEL', rkey, room_key('bans', room), room_key('members', room))
    redis.call('SREM', rooms, room)
    if owner and owner ~= '' then
      redis.call('SREM', room_key('owned', owner), room)
    end
    out[#out + 1] = room
    out[#out + 1] = epoch
  end
end
return out

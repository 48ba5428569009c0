-- Checks ban, closed and lock and moves a user into a room, atomically.
-- KEYS: the room's settings, bans, members; rooms; this node's user
-- list; names; the owner's set of owned rooms; the rooms by the time they
-- emptied (`Keys::empty_rooms`); the previous room's members (absent
-- without one). All control keys: one slot (`{global}`).
-- ARGV: user, display, password given, password hash, create, max rooms,
-- room, node, owner id (stored verbatim as a new room's owner, see
-- `chat::ownership`), most rooms the owner may own (-1: no limit), the
-- previous room's name, the epoch of the room if created (scripts cannot
-- make random ids).
-- The joined room leaves the empty rooms; the previous one, if the user
-- was its last member, enters them (`limits.empty_room_ttl_secs`).
-- A created room is added to the owner's set, checked against that limit
-- in the same step (`too_many_owned`); deleting the room frees it
-- (`forget_room.lua`).
-- Returns `{outcome}` or `{'joined', created, members, previous_members,
-- epoch}`: previous_members is -1 when the user was not a member of the
-- previous room (its `left` was announced by whoever took it out); epoch
-- the room's (a created room's gate is made with it, `room_data.lua`).
--
-- A name held by another node means this node was presumed dead and the
-- name claimed meanwhile: `name_lost`, nothing changes (the stale session
-- must not touch the new holder's membership). A name held by nobody was
-- reaped while this node was alive: it is put back with the membership
-- (the node's re-registration would do the same).
--
-- Same order of checks as the in-memory backplane: missing (create or
-- `no_such_room`), banned, closed, locked.
local rkey, bkey, mkey, rooms, ukey, names, owned, empty_rooms, prev = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local user, display, pw_given, pw, create = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_rooms = tonumber(ARGV[6])
local room, node, owner = ARGV[7], ARGV[8], ARGV[9]
local max_owned, prev_room, new_epoch = tonumber(ARGV[10]), ARGV[11], ARGV[12]
local holder = redis.call('HGET', names, user)
if holder and holder ~= node then
  return {'name_lost'}
end
local created = 0
if redis.call('EXISTS', rkey) == 0 then
  if create ~= '1' then
    return {'no_such_room'}
  end
  if redis.call('SCARD', rooms) >= max_rooms then
    return {'too_many_rooms'}
  end
  if max_owned >= 0 and redis.call('SCARD', owned) >= max_owned then
    return {'too_many_owned'}
  end
  redis.call('SADD', owned, room)
  redis.call('HSET', rkey, 'owner', owner, 'locked', '0', 'pw', '', 'closed', '0', 'epoch', new_epoch)
  redis.call('DEL', bkey)
  redis.call('SADD', rooms, room)
  created = 1
else
  if redis.call('SISMEMBER', bkey, user) == 1 then
    return {'banned'}
  end
  local st = redis.call('HMGET', rkey, 'closed', 'locked', 'pw')
  if st[1] == '1' then
    return {'closed'}
  end
  if st[2] == '1' and (pw_given ~= '1' or pw ~= st[3]) then
    return {'locked'}
  end
end
local prev_members = -1
if prev and redis.call('HDEL', prev, user) == 1 then
  prev_members = redis.call('HLEN', prev)
  if prev_members == 0 then
    local t = redis.call('TIME')
    redis.call('ZADD', empty_rooms, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), prev_room)
  end
end
redis.call('ZREM', empty_rooms, room)
if not holder then
  redis.call('HSET', names, user, node)
end
redis.call('HSET', mkey, user, display)
redis.call('HSET', ukey, user, room)
return {'joined', created, redis.call('HLEN', mkey), prev_members, redis.call('HGET', rkey, 'epoch') or ''}

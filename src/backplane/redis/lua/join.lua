-- Checks ban, closed and lock and moves a user into a room, atomically.
-- KEYS: the room's settings, seq, bans, members; rooms; this node's user
-- list; the previous room's members (absent without one).
-- ARGV: user, display, password given, password hash, create, max rooms.
-- Returns `{outcome}` or `{'joined', created, members, previous_members}`.
--
-- Same order of checks as the in-memory backplane: missing (create or
-- `no_such_room`), banned, closed, locked.
-- Single-Redis only (the room, the previous room and the global user list
-- in one step), to be split for Redis Cluster (issue 12).
local rkey, skey, bkey, mkey, rooms, ukey, prev = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local user, display, pw_given, pw, create = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_rooms = tonumber(ARGV[6])
local room = ARGV[7]
local created = 0
if redis.call('EXISTS', rkey) == 0 then
  if create ~= '1' then
    return {'no_such_room'}
  end
  if redis.call('SCARD', rooms) >= max_rooms then
    return {'too_many_rooms'}
  end
  redis.call('HSET', rkey, 'owner', user, 'locked', '0', 'pw', '', 'closed', '0')
  redis.call('DEL', skey, bkey)
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
local prev_members = 0
if prev then
  redis.call('HDEL', prev, user)
  prev_members = redis.call('HLEN', prev)
end
redis.call('HSET', mkey, user, display)
redis.call('HSET', ukey, user, room)
return {'joined', created, redis.call('HLEN', mkey), prev_members}

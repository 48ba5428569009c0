-- Checks ban, closed and lock and moves a user into a room (join.lua has
-- the contract). `k`: the room's settings, bans, members; rooms; this
-- node's user list; names; the owner's set of owned rooms; the empty rooms;
-- the previous room's members (or nil). `a`: user, display, password given,
-- password hash, create, max rooms, room, node, owner id, most rooms the
-- owner may own (-1: no limit), previous room, epoch if created.
local function join_room(k, a)
  local rkey, bkey, mkey, rooms, ukey, names, owned, empty_rooms, prev = k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9]
  local user, display, pw_given, pw, create = a[1], a[2], a[3], a[4], a[5]
  local max_rooms = tonumber(a[6])
  local room, node, owner = a[7], a[8], a[9]
  local max_owned, prev_room, new_epoch = tonumber(a[10]), a[11], a[12]
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
end

-- Helpers of the scripts that reach keys they learn only while running (a
-- user's recorded room, a dead node's list). Every key they build is a
-- control key (`{global}` slot, see keys.rs), so those scripts still touch
-- one slot.
-- ARGV[1] is the key base (`prefix:`), ARGV[2] the node-list base
-- (`prefix:{global}:node:`); a script's own arguments start at ARGV[3].
local B, NB = ARGV[1], ARGV[2]
-- `prefix:{global}:KIND:room`: the formula of `Keys::control_key` (keys.rs).
local function room_key(kind, room)
  return B .. '{global}:' .. kind .. ':' .. room
end
local function node_users_key(node)
  return NB .. node .. ':users'
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Whether `node` renewed its heartbeat (in the zset `nodes`) within `ttl` ms.
local function alive(nodes, node, now, ttl)
  local hb = redis.call('ZSCORE', nodes, node)
  return hb and tonumber(hb) >= now - ttl
end
-- `prefix:{global}:empty_rooms` (`Keys::empty_rooms`): rooms scored by
-- the time (ms) their last member left, for `limits.empty_room_ttl_secs`;
-- cleared by joins (join.lua), read by expire_rooms.lua.
local function empty_rooms_key()
  return B .. '{global}:empty_rooms'
end
-- Called after a member was removed from `room`: notes when it emptied.
local function note_if_empty(room)
  if room and room ~= '' and redis.call('HLEN', room_key('members', room)) == 0 then
    redis.call('ZADD', empty_rooms_key(), now_ms(), room)
  end
end
-- The room of a `prefix:{global}:members:room` key (the formula of `room_key`).
local function room_of_members_key(mkey)
  return string.sub(mkey, #B + #'{global}:members:' + 1)
end
-- Removes `user` from `room`'s members. Returns `{room, display name,
-- members before the removal}` (what a `left` notice needs) when it was a
-- member, else nil.
local function leave_room(room, user)
  if not room or room == '' then
    return nil
  end
  local mkey = room_key('members', room)
  local display = redis.call('HGET', mkey, user)
  if not display then
    return nil
  end
  local before = redis.call('HLEN', mkey)
  redis.call('HDEL', mkey, user)
  note_if_empty(room)
  return {room, display, before}
end
-- Appends a presence notice (code, room, display name, members counted
-- with the user in) to `out` unless `entry` is nil.
local function add_notice(out, code, entry)
  if entry then
    out[#out + 1] = code
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
    out[#out + 1] = entry[3]
  end
end
-- Removes `user` (held by `holder`) from its room and from the holder's
-- list; the name itself is left to the caller. Returns what `leave_room`
-- returns.
local function forget_user(holder, user)
  local ukey = node_users_key(holder)
  local left = leave_room(redis.call('HGET', ukey, user), user)
  redis.call('HDEL', ukey, user)
  return left
end
-- Creates `room`'s control state (settings with `epoch`, no bans) and lists
-- it in `rooms`; the caller then creates its gate (`room_data.lua`).
local function create_room(rooms, room, owner, epoch)
  redis.call('HSET', room_key('room', room), 'owner', owner, 'locked', '0', 'pw', '', 'closed', '0', 'epoch', epoch)
  redis.call('DEL', room_key('bans', room))
  redis.call('SADD', rooms, room)
end
-- Claims `user` for `node` (claim.lua has the contract): nil when the name
-- is taken, else `{1}` followed by the `left` notice of a dead holder's
-- room the user was taken out of.
local function claim_user(names, nodes, ukey, node, user, ttl)
  local now = now_ms()
  redis.call('ZADD', nodes, now, node)
  local holder = redis.call('HGET', names, user)
  local out = {1}
  if holder then
    if holder == node or alive(nodes, holder, now, ttl) then
      return nil
    end
    add_notice(out, 'left', forget_user(holder, user))
  end
  redis.call('HSET', names, user, node)
  redis.call('HSET', ukey, user, '')
  return out
end

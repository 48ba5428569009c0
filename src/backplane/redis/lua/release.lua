-- Frees a name and takes the user out of its room: the user disconnected.
-- KEYS: names, this node's user list, and the members of the room the
-- session is in (absent when it is in none).
-- ARGV (after common's two): node, user.
-- Returns the members left in that room, or -1 when the user was not a
-- member of it (so that `left` is announced once).
--
-- Only touches name and membership while this node holds the name (or
-- nobody does): if another node took the name over meanwhile, they are its.
-- A room recorded in the node's list but not the session's is cleaned
-- too (control keys: one slot).
local names, ukey, mkey = KEYS[1], KEYS[2], KEYS[3]
local node, user = ARGV[3], ARGV[4]
local holder = redis.call('HGET', names, user)
local removed = 0
if (not holder) or holder == node then
  if holder then
    redis.call('HDEL', names, user)
  end
  local recorded = redis.call('HGET', ukey, user)
  if recorded and recorded ~= '' then
    local rkey = room_key('members', recorded)
    if rkey ~= mkey and redis.call('HDEL', rkey, user) == 1 then
      note_if_empty(recorded)
    end
  end
  if mkey then
    removed = redis.call('HDEL', mkey, user)
    if removed == 1 then
      note_if_empty(room_of_members_key(mkey))
    end
  end
end
redis.call('HDEL', ukey, user)
if removed == 0 then
  return -1
end
return redis.call('HLEN', mkey)

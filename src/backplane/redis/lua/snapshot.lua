-- One consistent view of every room for CACHE_UPDATE.
-- KEYS: names, rooms. ARGV: common's two only.
-- Returns `{users, name, locked, closed, members, ...}`. A listed room
-- without settings (a delete cut off between its two steps) is pruned.
-- Single-Redis only (reads every room), to be split for Redis Cluster
-- (issue 12).
local names, rooms = KEYS[1], KEYS[2]
local out = {redis.call('HLEN', names)}
for _, name in ipairs(redis.call('SMEMBERS', rooms)) do
  local st = redis.call('HMGET', room_key('room', name), 'locked', 'closed')
  if st[1] then
    out[#out + 1] = name
    out[#out + 1] = st[1]
    out[#out + 1] = st[2] or '0'
    out[#out + 1] = redis.call('HLEN', room_key('members', name))
  else
    redis.call('SREM', rooms, name)
  end
end
return out

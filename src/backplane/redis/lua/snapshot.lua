-- One consistent view of the busiest rooms for CACHE_UPDATE and `\rooms`.
-- KEYS: names, rooms. ARGV: common's two, then limit.
-- Returns `{users, rooms_total, name, locked, closed, members, ...}` with at
-- most `limit` rooms: the most members first, ties by name. The reply is
-- bounded by `limit`; the work is not: it reads every room's settings and
-- count (O(rooms), plus sorting them), once per snapshot and shared by the
-- callers of a node that arrive meanwhile (see `Snapshots` in mod.rs). A
-- listed room without settings (a delete cut off between its two steps) is
-- pruned. Reads every room's control keys (one slot).
local names, rooms = KEYS[1], KEYS[2]
local limit = tonumber(ARGV[3])
local found = {}
for _, name in ipairs(redis.call('SMEMBERS', rooms)) do
  local st = redis.call('HMGET', room_key('room', name), 'locked', 'closed')
  if st[1] then
    found[#found + 1] = {name, st[1], st[2] or '0', redis.call('HLEN', room_key('members', name))}
  else
    redis.call('SREM', rooms, name)
  end
end
table.sort(found, function(a, b)
  if a[4] ~= b[4] then
    return a[4] > b[4]
  end
  return a[1] < b[1]
end)
local out = {redis.call('HLEN', names), #found}
for i = 1, math.min(limit, #found) do
  local r = found[i]
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
  out[#out + 1] = r[4]
end
return out

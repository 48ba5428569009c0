-- One consistent view of the busiest rooms for CACHE_UPDATE and `\rooms`.
-- KEYS: names, rooms. ARGV: common's two, then limit, the default room.
-- Returns `{users, rooms_total, name, locked, closed, members, ...}` with at
-- most `limit` rooms: the most members first, ties by name; then the
-- default room if it is not among them. The reply is
-- bounded by `limit`; the work is not: it reads every room's settings and
-- count (O(rooms), plus sorting them), once per snapshot and shared by the
-- callers of a node that arrive meanwhile (see `Snapshots` in mod.rs). A
-- listed room without settings (left by an older version's two-step
-- delete) is pruned. Reads every room's control keys (one slot).
local names, rooms = KEYS[1], KEYS[2]
local limit, default_room = tonumber(ARGV[3]), ARGV[4]
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
local function add(r)
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
  out[#out + 1] = r[4]
end
for i = 1, math.min(limit, #found) do
  add(found[i])
end
for i = limit + 1, #found do
  if found[i][1] == default_room then
    add(found[i])
    break
  end
end
return out

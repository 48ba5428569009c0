-- Some members of a room and how many it has. One room, one slot.
-- KEYS: the room's members. ARGV: limit.
-- Returns `{total, {key, display, ...}}`: every member when there are at
-- most `limit`, otherwise about `limit` of them from HSCAN (bounded work
-- for a crowd; the loop stops once `limit` names are collected).
local key, limit = KEYS[1], tonumber(ARGV[1])
local total = redis.call('HLEN', key)
if total <= limit then
  return {total, redis.call('HGETALL', key)}
end
local out, cursor = {}, '0'
repeat
  local page = redis.call('HSCAN', key, cursor, 'COUNT', limit)
  cursor = page[1]
  local fields = page[2]
  for i = 1, #fields, 2 do
    if #out >= 2 * limit then
      break
    end
    out[#out + 1] = fields[i]
    out[#out + 1] = fields[i + 1]
  end
until cursor == '0' or #out >= 2 * limit
return {total, out}

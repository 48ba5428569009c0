-- Removes one batch of a node's users (names it still holds, their
-- memberships); once none is left, the node's heartbeat and marker too.
-- Batches keep each script short however many users the node had.
-- KEYS: names, nodes, the node's user list, its token.
-- ARGV (after common's two): node, cursor, count, only if dead, ttl_ms.
-- Returns `{remaining, next cursor, 'left', room, display, members, ...}`,
-- or `{-1, 0}` when `only if dead` and the node turned out to be alive.
--
-- For every membership removed, the reply carries what the `left` notice
-- needs: room, display name, and the room's members counted before the
-- removal (as a session leaving by itself would count them). Only the
-- script that removed a membership reports it, so however many nodes reap
-- the same dead node, each `left` is announced once.
-- The users' rooms are control keys: one slot.
local names, nodes, ukey, token_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, cursor, count, only_dead, ttl = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if only_dead == '1' and alive(nodes, node, now_ms(), ttl) then
  return {-1, '0'}
end
local scan = redis.call('HSCAN', ukey, cursor, 'COUNT', count)
local items = scan[2]
local out = {0, scan[1]}
for i = 1, #items, 2 do
  local user, room = items[i], items[i + 1]
  if redis.call('HGET', names, user) == node then
    redis.call('HDEL', names, user)
    add_notice(out, 'left', leave_room(room, user))
  end
  redis.call('HDEL', ukey, user)
end
local remaining = redis.call('HLEN', ukey)
if remaining == 0 then
  redis.call('ZREM', nodes, node)
  redis.call('DEL', token_key)
end
out[1] = remaining
return out

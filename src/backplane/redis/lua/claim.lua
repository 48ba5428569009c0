-- Claims a name for a connection of this node.
-- KEYS: names, nodes, this node's user list.
-- ARGV (after common's two): node, user, ttl_ms.
-- Returns `{1}` when claimed, `{0}` when taken, and `{1, 'left', room,
-- display, members}` when claiming took the user out of a dead node's room
-- (the caller publishes that `left`).
--
-- A name held by a node whose heartbeat is older than `ttl` is taken over
-- (that node died; the reaper may not have run yet, and now will not find
-- this user). Claiming also renews this node's heartbeat: a node that can
-- run scripts is alive, and it keeps other nodes from taking over its fresh
-- names before its first heartbeat.
-- The take-over reaches the dead node's room: control keys, one slot.
local names, nodes, ukey = KEYS[1], KEYS[2], KEYS[3]
local node, user, ttl = ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
redis.call('ZADD', nodes, now, node)
local holder = redis.call('HGET', names, user)
local out = {1}
if holder then
  if holder == node or alive(nodes, holder, now, ttl) then
    return {0}
  end
  add_notice(out, 'left', forget_user(holder, user))
end
redis.call('HSET', names, user, node)
redis.call('HSET', ukey, user, '')
return out

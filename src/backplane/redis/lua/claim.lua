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
local out = claim_user(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], tonumber(ARGV[5]))
if not out then
  return {0}
end
return out

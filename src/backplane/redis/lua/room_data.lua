-- A room's message state (its slot, `{room}`): the gate that publishing
-- checks, `seq` and history. The second step of the room changes whose
-- first step is in the control slot (join.lua, change_room.lua,
-- heartbeat.lua, reregister.lua, expire_rooms.lua).
-- KEYS: the room's gate, seq, history.
-- ARGV: action, epoch.
--   create: a new room: drops any `seq`, history and gate left by an
--     earlier room of that name, then opens the gate with `epoch`.
--   ensure: opens the gate with `epoch` unless one exists (the default
--     room after Redis lost its data; a room re-created after data loss).
--   close / open: sets the gate's flag if the gate exists.
--   delete: drops gate, `seq` and history if the gate's epoch is `epoch`
--     (or it has none): a room deleted and created again meanwhile keeps
--     its new gate.
-- Returns 1 when something changed, else 0.
local gate, seq, history = KEYS[1], KEYS[2], KEYS[3]
local action, epoch = ARGV[1], ARGV[2]
if action == 'create' then
  redis.call('DEL', gate, seq, history)
  redis.call('HSET', gate, 'closed', '0', 'epoch', epoch)
  return 1
elseif action == 'ensure' then
  if redis.call('EXISTS', gate) == 1 then
    return 0
  end
  redis.call('HSET', gate, 'closed', '0', 'epoch', epoch)
  return 1
elseif action == 'close' or action == 'open' then
  if redis.call('EXISTS', gate) == 0 then
    return 0
  end
  local flag = '0'
  if action == 'close' then
    flag = '1'
  end
  redis.call('HSET', gate, 'closed', flag)
  return 1
elseif action == 'delete' then
  local current = redis.call('HGET', gate, 'epoch')
  if current and current ~= '' and epoch ~= '' and current ~= epoch then
    return 0
  end
  return redis.call('DEL', gate, seq, history) > 0 and 1 or 0
end
return redis.error_reply('unknown room data action ' .. action)

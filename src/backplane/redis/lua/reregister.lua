-- Puts this node's connected users back: names, memberships, its list.
-- KEYS: names, nodes, rooms, this node's user list, its token.
-- ARGV (after common's two): node, token, lost, last batch, ttl_ms, epoch
-- for recreated rooms, then (user, display, room) triples.
-- Returns `{{conflicting user, ...}, {gone room, ...}, {code, room,
-- display, members, ...}, {recreated room, ...}}`: the third array lists
-- the presence notices the caller publishes; the caller opens the gates of
-- the recreated rooms (`room_data.lua` ensure).
--
-- A name meanwhile claimed by a live node is a conflict: left to that node
-- (returned, so this node closes its stale connection). A missing room is recreated, ownerless, when Redis lost its data
-- (`lost`); otherwise it was deleted while this node could not hear it, and
-- is returned so the node evacuates its members. An empty display name
-- marks a login in progress: only its name is put back. The last batch sets
-- the registration marker.
--
-- Notices: when Redis kept its data (not `lost`), the node's users were
-- taken out by a reaper that announced `left` for them, so every membership
-- put back is announced as `joined`. A name taken over from another dead
-- node takes that user out of its room there: `left`.
-- Touches control keys only (one slot).
local names, nodes, rooms, ukey, token_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local node, token, lost, last, ttl, epoch = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local now = now_ms()
local conflicts = {}
local gone = {}
local gone_list = {}
local notices = {}
local created = {}
for i = 9, #ARGV, 3 do
  local user, display, room = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local holder = redis.call('HGET', names, user)
  if holder and holder ~= node and alive(nodes, holder, now, ttl) then
    conflicts[#conflicts + 1] = user
  elseif display == '' then
    if holder and holder ~= node then
      add_notice(notices, 'left', forget_user(holder, user))
    end
    redis.call('HSET', names, user, node)
    redis.call('HSETNX', ukey, user, '')
  else
    if holder and holder ~= node then
      add_notice(notices, 'left', forget_user(holder, user))
    end
    redis.call('HSET', names, user, node)
    if room ~= '' and redis.call('EXISTS', room_key('room', room)) == 0 then
      if lost == '1' then
        create_room(rooms, room, '', epoch)
        created[#created + 1] = room
      else
        if not gone[room] then
          gone[room] = true
          gone_list[#gone_list + 1] = room
        end
        room = ''
      end
    end
    local recorded = redis.call('HGET', ukey, user)
    if recorded and recorded ~= '' and recorded ~= room
        and redis.call('HDEL', room_key('members', recorded), user) == 1 then
      note_if_empty(recorded)
    end
    if room ~= '' then
      local mkey = room_key('members', room)
      if redis.call('HSET', mkey, user, display) == 1 and lost ~= '1' then
        add_notice(notices, 'joined', {room, display, redis.call('HLEN', mkey)})
      end
    end
    redis.call('HSET', ukey, user, room)
  end
end
if last == '1' then
  redis.call('SET', token_key, token)
end
return {conflicts, gone_list, notices, created}

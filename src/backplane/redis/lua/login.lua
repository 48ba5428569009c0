-- A login in one step: claims the name (claim.lua) and joins the room
-- (join.lua) atomically, so a login costs one script instead of two, and a
-- refused join leaves no claim behind.
-- KEYS: the room's settings, bans, members; rooms; this node's user list;
-- names; the owner's set of owned rooms; the empty rooms; nodes.
-- ARGV (after common's two): join.lua's arguments (previous room ''), then
-- the node ttl in ms.
-- Returns `{join reply, notices}`: join reply as join.lua's, or
-- `{'name_taken'}`; notices the `left` of a dead holder's room the user
-- was taken out of by the claim (published by the caller, also when the
-- join was refused).
local node, user = ARGV[10], ARGV[3]
local claimed = claim_user(KEYS[6], KEYS[9], KEYS[5], node, user, tonumber(ARGV[15]))
if not claimed then
  return {{'name_taken'}, {}}
end
local notices = {}
for i = 2, #claimed do
  notices[#notices + 1] = claimed[i]
end
local joined = join_room(
  {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], nil},
  {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14]})
if joined[1] ~= 'joined' then
  -- Refused: the name goes back.
  redis.call('HDEL', KEYS[6], user)
  redis.call('HDEL', KEYS[5], user)
end
return {joined, notices}

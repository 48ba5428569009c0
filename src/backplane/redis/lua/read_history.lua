-- A page of a room's history with its `last_seq` and `epoch`, read in one
-- step so the three agree (see `history.rs`). One room, its message slot.
-- KEYS: the room's gate, seq, history.
-- ARGV: after ("" for none), before ("" for none), limit, epoch asked (""
-- for none), candidate epoch (set when the gate has none: scripts cannot
-- make random ids).
-- Returns false when the room has no gate (missing), else `{epoch, last_seq, epoch matched (1/0), id, frame, ...}`
-- in `seq` order. When the epoch asked is not the room's, `after` and
-- `before` are ignored (the latest messages).
local after, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[5])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local matched = 1
if ARGV[4] ~= '' and ARGV[4] ~= epoch then
  matched, after, before = 0, '', ''
end
local hi = '+'
if before ~= '' then
  hi = '(' .. before .. '-0'
end
local out = {epoch, last, matched}
if after ~= '' then
  local entries = redis.call('XRANGE', KEYS[3], '(' .. after .. '-0', hi, 'COUNT', limit)
  for i = 1, #entries do
    out[#out + 1] = entries[i][1]
    out[#out + 1] = entries[i][2][2]
  end
else
  local entries = redis.call('XREVRANGE', KEYS[3], hi, '-', 'COUNT', limit)
  for i = #entries, 1, -1 do
    out[#out + 1] = entries[i][1]
    out[#out + 1] = entries[i][2][2]
  end
end
return out

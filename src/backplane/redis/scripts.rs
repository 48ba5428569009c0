//! The Lua scripts: every check-and-change that must be atomic across nodes
//! runs as one script inside Redis.
//!
//! Conventions: `ARGV[1]` is always the key base (`prefix:`, see
//! `keys.rs`), from which a script builds the keys of rooms and nodes it
//! only learns while running (a dead node's rooms, for instance). Time is
//! Redis server time (`TIME`), so nodes with skewed clocks agree on who is
//! alive. Flags are passed as `"1"`/`"0"`.
//!
//! Scripts that take a user out of a room, or put one back, on behalf of a
//! session that is not there to announce it (a dead node's users, reaped or
//! taken over; a reaped node's users written back) return what the joined or
//! left NOTICE needs: `code, room, display name, members` (members counted
//! with the user in, as the session counts them). The caller builds the
//! frame with [`crate::protocol::notice`], so the wire format has one source,
//! and publishes it: only the script that changed the membership reports
//! it, so each notice is published by exactly one node.
//!
//! Scripts are sent with EVALSHA and loaded on NOSCRIPT
//! ([`redis::Script::invoke_async`]), so a restarted, empty Redis needs no
//! special handling.

use std::sync::LazyLock;

use ::redis::Script;

/// Helpers shared by the scripts (prepended to each body).
const COMMON: &str = r#"
local B = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Whether `node` renewed its heartbeat within `ttl` ms.
local function alive(node, now, ttl)
  local hb = redis.call('ZSCORE', B .. 'nodes', node)
  return hb and tonumber(hb) >= now - ttl
end
-- Removes `user` from `room`'s members. Returns `{room, display name,
-- members before the removal}` (what a `left` notice needs) when it was a
-- member, else nil.
local function leave_room(room, user)
  if not room or room == '' then
    return nil
  end
  local mkey = B .. 'members:' .. room
  local display = redis.call('HGET', mkey, user)
  if not display then
    return nil
  end
  local before = redis.call('HLEN', mkey)
  redis.call('HDEL', mkey, user)
  return {room, display, before}
end
-- Appends a presence notice (code, room, display name, members counted
-- with the user in) to `out` unless `entry` is nil.
local function add_notice(out, code, entry)
  if entry then
    out[#out + 1] = code
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
    out[#out + 1] = entry[3]
  end
end
-- Removes `user` (held by `holder`) from its room and from the holder's
-- list; the name itself is left to the caller. Returns what `leave_room`
-- returns.
local function forget_user(holder, user)
  local ukey = B .. 'node:' .. holder .. ':users'
  local left = leave_room(redis.call('HGET', ukey, user), user)
  redis.call('HDEL', ukey, user)
  return left
end
local function create_room(room, owner)
  redis.call('HSET', B .. 'room:' .. room, 'owner', owner, 'locked', '0', 'pw', '', 'closed', '0')
  redis.call('DEL', B .. 'seq:' .. room, B .. 'bans:' .. room)
  redis.call('SADD', B .. 'rooms', room)
end
"#;

/// ARGV: base, node, user, ttl_ms. Returns `{1}` when claimed, `{0}` when
/// taken, and `{1, 'left', room, display, members}` when claiming took the
/// user out of a dead node's room (the caller publishes that `left`).
///
/// A name held by a node whose heartbeat is older than `ttl` is taken over
/// (that node died; the reaper may not have run yet, and now will not find
/// this user). Claiming also renews this node's heartbeat: a node that can
/// run scripts is alive, and it keeps other nodes from taking over its fresh
/// names before its first heartbeat.
const CLAIM: &str = r#"
local node, user, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
redis.call('ZADD', B .. 'nodes', now, node)
local holder = redis.call('HGET', B .. 'names', user)
local out = {1}
if holder then
  if holder == node or alive(holder, now, ttl) then
    return {0}
  end
  add_notice(out, 'left', forget_user(holder, user))
end
redis.call('HSET', B .. 'names', user, node)
redis.call('HSET', B .. 'node:' .. node .. ':users', user, '')
return out
"#;

/// ARGV: base, node, user, room ("" for none). Returns the members left in
/// `room` (0 without one).
///
/// Only touches name and membership while this node holds the name (or
/// nobody does): if another node took the name over meanwhile, they are its.
const RELEASE: &str = r#"
local node, user, room = ARGV[2], ARGV[3], ARGV[4]
local ukey = B .. 'node:' .. node .. ':users'
local holder = redis.call('HGET', B .. 'names', user)
local removed = 0
if (not holder) or holder == node then
  if holder then
    redis.call('HDEL', B .. 'names', user)
  end
  local recorded = redis.call('HGET', ukey, user)
  if recorded and recorded ~= '' and recorded ~= room then
    redis.call('HDEL', B .. 'members:' .. recorded, user)
  end
  if room ~= '' then
    removed = redis.call('HDEL', B .. 'members:' .. room, user)
  end
end
redis.call('HDEL', ukey, user)
if removed == 0 then
  return -1
end
return redis.call('HLEN', B .. 'members:' .. room)
"#;

/// ARGV: base, node, user, display, room, password given, password hash,
/// create, previous room ("" for none), max rooms, owner id (stored
/// verbatim as the new room's owner).
/// Returns `{outcome}` or `{'joined', created, members, previous_members}`.
///
/// Same order of checks as the in-memory backplane: missing (create or
/// `no_such_room`), banned, closed, locked.
const JOIN: &str = r#"
local node, user, display, room = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pw_given, pw, create, prev = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local max_rooms, owner = tonumber(ARGV[10]), ARGV[11]
local rkey = B .. 'room:' .. room
local created = 0
if redis.call('EXISTS', rkey) == 0 then
  if create ~= '1' then
    return {'no_such_room'}
  end
  if redis.call('SCARD', B .. 'rooms') >= max_rooms then
    return {'too_many_rooms'}
  end
  create_room(room, owner)
  created = 1
else
  if redis.call('SISMEMBER', B .. 'bans:' .. room, user) == 1 then
    return {'banned'}
  end
  local st = redis.call('HMGET', rkey, 'closed', 'locked', 'pw')
  if st[1] == '1' then
    return {'closed'}
  end
  if st[2] == '1' and (pw_given ~= '1' or pw ~= st[3]) then
    return {'locked'}
  end
end
local prev_members = 0
if prev ~= '' then
  redis.call('HDEL', B .. 'members:' .. prev, user)
  prev_members = redis.call('HLEN', B .. 'members:' .. prev)
end
redis.call('HSET', B .. 'members:' .. room, user, display)
redis.call('HSET', B .. 'node:' .. node .. ':users', user, room)
return {'joined', created, redis.call('HLEN', B .. 'members:' .. room), prev_members}
"#;

/// ARGV: base, room, change (lock|unlock|close|open|delete), password hash.
/// Returns 1 when applied, 0 when the room does not exist.
///
/// Delete drops the room's settings, `seq`, bans and member list: the
/// members themselves are moved by the RoomEvacuated event, whose
/// `join_room(previous_room = deleted)` then finds nothing to remove (like
/// the in-memory backplane, where the room is gone as a whole).
const CHANGE: &str = r#"
local room, change, pw = ARGV[2], ARGV[3], ARGV[4]
local rkey = B .. 'room:' .. room
if redis.call('EXISTS', rkey) == 0 then
  return 0
end
if change == 'lock' then
  redis.call('HSET', rkey, 'locked', '1', 'pw', pw)
elseif change == 'unlock' then
  redis.call('HSET', rkey, 'locked', '0', 'pw', '')
elseif change == 'close' then
  redis.call('HSET', rkey, 'closed', '1')
elseif change == 'open' then
  redis.call('HSET', rkey, 'closed', '0')
elseif change == 'delete' then
  redis.call('DEL', rkey, B .. 'seq:' .. room, B .. 'bans:' .. room, B .. 'members:' .. room)
  redis.call('SREM', B .. 'rooms', room)
else
  return redis.error_reply('unknown room change ' .. change)
end
return 1
"#;

/// ARGV: base, room, user, banned. Returns 1 when something changed. A ban
/// on a missing room changes nothing (it would otherwise outlive the room).
const SET_BAN: &str = r#"
local room, user, banned = ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', B .. 'room:' .. room) == 0 then
  return 0
end
if banned == '1' then
  return redis.call('SADD', B .. 'bans:' .. room, user)
end
return redis.call('SREM', B .. 'bans:' .. room, user)
"#;

/// ARGV: base. Returns `{users, name, locked, closed, members, ...}`: one
/// consistent view of every room for CACHE_UPDATE.
const SNAPSHOT: &str = r#"
local out = {redis.call('HLEN', B .. 'names')}
for _, name in ipairs(redis.call('SMEMBERS', B .. 'rooms')) do
  local st = redis.call('HMGET', B .. 'room:' .. name, 'locked', 'closed')
  if st[1] then
    out[#out + 1] = name
    out[#out + 1] = st[1]
    out[#out + 1] = st[2] or '0'
    out[#out + 1] = redis.call('HLEN', B .. 'members:' .. name)
  end
end
return out
"#;

/// KEYS: room hash, seq counter, room channel. ARGV: base, frame prefix,
/// frame suffix, seq floor (the highest `seq` this node relayed in the room,
/// see `seq_floor.rs`). Returns the new `seq`, or nil (nothing published)
/// when the room is missing or closed.
///
/// INCR and PUBLISH in one script: Redis runs scripts one at a time and
/// delivers a channel's messages in PUBLISH order, so every subscriber of
/// every node sees `seq` 1, 2, 3, … in that order, with no gap.
const PUBLISH_MESSAGE: &str = r#"
local closed = redis.call('HGET', KEYS[1], 'closed')
if (not closed) or closed == '1' then
  return false
end
local seq = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[4])
if seq <= floor then
  -- The counter was lost (Redis came back empty): never repeat a number
  -- this node has already relayed in the room.
  seq = floor + 1
  redis.call('SET', KEYS[2], seq)
end
redis.call('PUBLISH', KEYS[3], ARGV[2] .. seq .. ARGV[3])
return seq
"#;

/// ARGV: base, node, token, default room, candidate epoch.
/// Returns `{epoch, registered}`: the dataset's epoch (set to the candidate
/// when missing: Redis lost its data or is new) and whether this process's
/// registration marker is still there (1) or must be redone (0).
///
/// Also makes sure the default room exists: it always does, even right after
/// Redis came back empty.
const HEARTBEAT: &str = r#"
local node, token, default, candidate = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('ZADD', B .. 'nodes', now_ms(), node)
if redis.call('EXISTS', B .. 'room:' .. default) == 0 then
  create_room(default, '')
end
local epoch = redis.call('GET', B .. 'epoch')
if not epoch then
  epoch = candidate
  redis.call('SET', B .. 'epoch', epoch)
end
local registered = 0
if redis.call('GET', B .. 'node:' .. node .. ':token') == token then
  registered = 1
end
return {epoch, registered}
"#;

/// ARGV: base, node, token, lost, last batch, ttl_ms, then (user, display,
/// room) triples. Returns `{conflicts, {gone room, ...}, {code, room,
/// display, members, ...}}`: the last array lists the presence notices the
/// caller publishes (see below).
///
/// Puts this node's connected users back: names, memberships, the node's
/// user list. A name meanwhile claimed by a live node is a conflict (counted,
/// left alone). A missing room is recreated, ownerless, when Redis lost its
/// data (`lost`); otherwise it was deleted while this node could not hear it,
/// and is returned so the node evacuates its members. An empty display name
/// marks a login in progress: only its name is put back. The last batch sets
/// the registration marker.
///
/// Notices: when Redis kept its data (not `lost`), the node's users were
/// taken out by a reaper that announced `left` for them, so every membership
/// put back is announced as `joined`. A name taken over from another dead
/// node takes that user out of its room there: `left`.
const REREGISTER: &str = r#"
local node, token, lost, last, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local now = now_ms()
local ukey = B .. 'node:' .. node .. ':users'
local conflicts = 0
local gone = {}
local gone_list = {}
local notices = {}
for i = 7, #ARGV, 3 do
  local user, display, room = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local holder = redis.call('HGET', B .. 'names', user)
  if holder and holder ~= node and alive(holder, now, ttl) then
    conflicts = conflicts + 1
  elseif display == '' then
    if holder and holder ~= node then
      add_notice(notices, 'left', forget_user(holder, user))
    end
    redis.call('HSET', B .. 'names', user, node)
    redis.call('HSETNX', ukey, user, '')
  else
    if holder and holder ~= node then
      add_notice(notices, 'left', forget_user(holder, user))
    end
    redis.call('HSET', B .. 'names', user, node)
    if room ~= '' and redis.call('EXISTS', B .. 'room:' .. room) == 0 then
      if lost == '1' then
        create_room(room, '')
      else
        if not gone[room] then
          gone[room] = true
          gone_list[#gone_list + 1] = room
        end
        room = ''
      end
    end
    local recorded = redis.call('HGET', ukey, user)
    if recorded and recorded ~= '' and recorded ~= room then
      redis.call('HDEL', B .. 'members:' .. recorded, user)
    end
    if room ~= '' then
      local mkey = B .. 'members:' .. room
      if redis.call('HSET', mkey, user, display) == 1 and lost ~= '1' then
        add_notice(notices, 'joined', {room, display, redis.call('HLEN', mkey)})
      end
    end
    redis.call('HSET', ukey, user, room)
  end
end
if last == '1' then
  redis.call('SET', B .. 'node:' .. node .. ':token', token)
end
return {conflicts, gone_list, notices}
"#;

/// ARGV: base, ttl_ms, limit. Returns up to `limit` node ids whose heartbeat
/// is older than `ttl`.
const DEAD_NODES: &str = r#"
local cutoff = now_ms() - tonumber(ARGV[2])
return redis.call('ZRANGEBYSCORE', B .. 'nodes', '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
"#;

/// ARGV: base, node, cursor, count, only if dead, ttl_ms.
/// Returns `{remaining, next cursor, 'left', room, display, members, ...}`,
/// or `{-1, 0}` when `only if dead` and the node turned out to be alive.
///
/// Removes one batch of a node's users (names it still holds, their
/// memberships); once none is left, the node's heartbeat and marker too.
/// Batches keep each script short however many users the node had.
///
/// For every membership removed, the reply carries what the `left` notice
/// needs: room, display name, and the room's members counted before the
/// removal (as a session leaving by itself would count them). Only the
/// script that removed a membership reports it, so however many nodes reap
/// the same dead node, each `left` is announced once.
const REAP_NODE: &str = r#"
local node, cursor, count, only_dead, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if only_dead == '1' and alive(node, now_ms(), ttl) then
  return {-1, '0'}
end
local ukey = B .. 'node:' .. node .. ':users'
local scan = redis.call('HSCAN', ukey, cursor, 'COUNT', count)
local items = scan[2]
local out = {0, scan[1]}
for i = 1, #items, 2 do
  local user, room = items[i], items[i + 1]
  if redis.call('HGET', B .. 'names', user) == node then
    redis.call('HDEL', B .. 'names', user)
    add_notice(out, 'left', leave_room(room, user))
  end
  redis.call('HDEL', ukey, user)
end
local remaining = redis.call('HLEN', ukey)
if remaining == 0 then
  redis.call('ZREM', B .. 'nodes', node)
  redis.call('DEL', B .. 'node:' .. node .. ':token')
end
out[1] = remaining
return out
"#;

/// KEYS: the room's members hash. ARGV: base, limit. Returns
/// `{total, {key, display, ...}}`: every member when there are at most
/// `limit`, otherwise about `limit` of them from HSCAN (bounded work for a
/// crowd; the loop stops once `limit` names are collected).
const ROOM_MEMBERS: &str = r#"
local key, limit = KEYS[1], tonumber(ARGV[2])
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
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}{body}"))
}

/// The compiled scripts (hashing each once per process).
pub struct Scripts {
    pub claim: Script,
    pub release: Script,
    pub join: Script,
    pub change: Script,
    pub set_ban: Script,
    pub snapshot: Script,
    pub publish_message: Script,
    pub room_members: Script,
    pub heartbeat: Script,
    pub reregister: Script,
    pub dead_nodes: Script,
    pub reap_node: Script,
}

pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: script(CLAIM),
    release: script(RELEASE),
    join: script(JOIN),
    change: script(CHANGE),
    set_ban: script(SET_BAN),
    snapshot: script(SNAPSHOT),
    publish_message: script(PUBLISH_MESSAGE),
    room_members: script(ROOM_MEMBERS),
    heartbeat: script(HEARTBEAT),
    reregister: script(REREGISTER),
    dead_nodes: script(DEAD_NODES),
    reap_node: script(REAP_NODE),
});

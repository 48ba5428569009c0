//! The Lua scripts: every check-and-change that must be atomic across nodes
//! runs as one script inside Redis.
//!
//! Each script is a file under `lua/` and has exactly one typed wrapper
//! here, which builds its KEYS and ARGV and parses its reply: a script's
//! contract lives in the file's header and in its wrapper, nowhere else.
//! Every key a script is given is named by `keys.rs`, and every script
//! touches one slot, so all of them run on a Redis Cluster (issue 12):
//! `publish_message`, `read_history` and `room_data` a room's message slot
//! (`{room}`), all others the control slot (`{global}`). The scripts that
//! learn rooms only while running build their control keys with
//! `lua/common.lua` (same formula as `keys.rs`, checked by a test).
//!
//! A room change that reaches both slots is two scripts, control slot
//! first, then [`room_data`] (see `keys.rs` for why the order keeps them
//! consistent); the backplane sends the second right after the first.
//!
//! Time is Redis server time (`TIME`), so nodes with skewed clocks agree on
//! who is alive. Flags are passed as `"1"`/`"0"`.
//!
//! Scripts that take a user out of a room, or put one back, on behalf of a
//! session that is not there to announce it (a dead node's users, reaped or
//! taken over; a reaped node's users written back) return what the joined or
//! left NOTICE needs: `code, room, display name, members` (members counted
//! with the user in, as the session counts them). The caller builds the
//! frame with [`crate::protocol::presence_notice`], so the wire format has
//! one source, and publishes it: only the script that changed the
//! membership reports it, so each notice is published by exactly one node.
//!
//! Scripts are sent with EVALSHA and loaded on NOSCRIPT
//! ([`redis::Script::invoke_async`]), so a restarted, empty Redis needs no
//! special handling.

use std::sync::LazyLock;

use ::redis::{FromRedisValue, Script, ScriptInvocation, Value};
use async_trait::async_trait;

use super::keys::Keys;
use super::presence::{notices, PresenceNotice};
use super::{flag, int, internal, text};
use crate::backplane::{
    BackplaneResult, ClusterSnapshot, HistoryOutcome, HistoryQuery, JoinOutcome, JoinRequest,
    LocalUser, RoomChange, RoomMembers,
};
use crate::protocol::{MessageDraft, RoomSummary};

/// Runs one script invocation (the node: through its pool, bounded and
/// measured; tests: on a plain connection).
#[async_trait]
pub(super) trait Eval: Send + Sync {
    async fn eval<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        call: ScriptInvocation<'static>,
    ) -> BackplaneResult<T>;
}

const COMMON: &str = include_str!("lua/common.lua");
/// The join logic, shared by `join.lua` and `login.lua`.
const JOIN_ROOM: &str = include_str!("lua/join_room.lua");

fn with_common(body: &str) -> Script {
    Script::new(&format!("{COMMON}{body}"))
}

fn with_join(body: &str) -> Script {
    Script::new(&format!("{COMMON}{JOIN_ROOM}{body}"))
}

/// The compiled scripts (hashing each once per process).
struct Scripts {
    claim: Script,
    release: Script,
    join: Script,
    login: Script,
    change_room: Script,
    room_data: Script,
    set_ban: Script,
    snapshot: Script,
    publish_message: Script,
    read_history: Script,
    room_members: Script,
    heartbeat: Script,
    reregister: Script,
    dead_nodes: Script,
    reap_node: Script,
    expire_rooms: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: with_common(include_str!("lua/claim.lua")),
    release: with_common(include_str!("lua/release.lua")),
    join: with_join(include_str!("lua/join.lua")),
    login: with_join(include_str!("lua/login.lua")),
    change_room: with_common(include_str!("lua/change_room.lua")),
    room_data: Script::new(include_str!("lua/room_data.lua")),
    set_ban: Script::new(include_str!("lua/set_ban.lua")),
    snapshot: with_common(include_str!("lua/snapshot.lua")),
    publish_message: Script::new(include_str!("lua/publish_message.lua")),
    read_history: Script::new(include_str!("lua/read_history.lua")),
    room_members: Script::new(include_str!("lua/room_members.lua")),
    heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
    reregister: with_common(include_str!("lua/reregister.lua")),
    dead_nodes: Script::new(include_str!("lua/dead_nodes.lua")),
    reap_node: with_common(include_str!("lua/reap_node.lua")),
    expire_rooms: with_common(include_str!("lua/expire_rooms.lua")),
});

/// `expire_rooms.lua`: the rooms it deleted, with their epochs (for
/// [`room_data`]'s delete).
pub(super) async fn expire_rooms(
    r: &impl Eval,
    keys: &Keys,
    default_room: &str,
    ttl_ms: u64,
    limit: usize,
) -> BackplaneResult<Vec<(String, String)>> {
    let mut call = common_call(&SCRIPTS.expire_rooms, keys);
    call.key(keys.empty_rooms())
        .key(keys.rooms())
        .arg(ttl_ms)
        .arg(limit)
        .arg(default_room);
    let flat: Vec<String> = r.eval("expire_rooms", call).await?;
    Ok(flat
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect())
}

/// An invocation of a script that includes `lua/common.lua`: its two
/// leading arguments.
fn common_call(script: &'static Script, keys: &Keys) -> ScriptInvocation<'static> {
    let mut call = script.prepare_invoke();
    call.arg(keys.base()).arg(keys.node_base());
    call
}

/// `claim.lua`: `(claimed, left notices of a dead holder's room)`.
pub(super) async fn claim(
    r: &impl Eval,
    keys: &Keys,
    node: &str,
    user: &str,
    ttl_ms: u64,
) -> BackplaneResult<(bool, Vec<PresenceNotice>)> {
    let mut call = common_call(&SCRIPTS.claim, keys);
    call.key(keys.names())
        .key(keys.nodes())
        .key(keys.node_users(node))
        .arg(node)
        .arg(user)
        .arg(ttl_ms);
    let reply: Vec<Value> = r.eval("claim_name", call).await?;
    match reply.first().and_then(int) {
        Some(claimed) => Ok((claimed == 1, notices(&reply[1..]))),
        None => Err(internal("claim_name")),
    }
}

/// `release.lua`: members left in `room`, `None` when the user was not a
/// member of it.
pub(super) async fn release(
    r: &impl Eval,
    keys: &Keys,
    node: &str,
    user: &str,
    room: Option<&str>,
) -> BackplaneResult<Option<u64>> {
    let mut call = common_call(&SCRIPTS.release, keys);
    call.key(keys.names()).key(keys.node_users(node));
    if let Some(room) = room {
        call.key(keys.members(room));
    }
    call.arg(node).arg(user);
    let left: i64 = r.eval("release_name", call).await?;
    // -1: the user was no longer a member (a reaper got there first).
    Ok(u64::try_from(left).ok())
}

/// `join.lua`: the outcome (its `seq` is 0: the room's `seq` lives in the
/// other slot, the caller knows better) and, when joined, the room's epoch.
pub(super) async fn join(
    r: &impl Eval,
    keys: &Keys,
    node: &str,
    request: &JoinRequest<'_>,
    new_epoch: &str,
) -> BackplaneResult<(JoinOutcome, String)> {
    let mut call = common_call(&SCRIPTS.join, keys);
    join_keys(&mut call, keys, node, request);
    if let Some(previous) = request.previous_room {
        call.key(keys.members(previous));
    }
    join_args(&mut call, node, request, new_epoch);
    let reply: Vec<Value> = r.eval("join_room", call).await?;
    let epoch = reply.get(4).and_then(text).unwrap_or_default();
    Ok((join_outcome(&reply)?, epoch))
}

/// The keys `join.lua` and `login.lua` share (`previous room` aside).
fn join_keys(
    call: &mut ScriptInvocation<'static>,
    keys: &Keys,
    node: &str,
    request: &JoinRequest<'_>,
) {
    let room = request.room;
    call.key(keys.room(room))
        .key(keys.bans(room))
        .key(keys.members(room))
        .key(keys.rooms())
        .key(keys.node_users(node))
        .key(keys.names())
        .key(keys.owned(request.owner))
        .key(keys.empty_rooms());
}

/// The arguments `join.lua` and `login.lua` share.
fn join_args(
    call: &mut ScriptInvocation<'static>,
    node: &str,
    request: &JoinRequest<'_>,
    new_epoch: &str,
) {
    let room = request.room;
    call.arg(request.user_key)
        .arg(request.display_name)
        .arg(flag(request.password_hash.is_some()))
        .arg(request.password_hash.unwrap_or(""))
        .arg(flag(request.create))
        .arg(request.max_rooms)
        .arg(room)
        .arg(node)
        .arg(request.owner)
        .arg(
            request
                .max_owned_rooms
                .map_or(-1, |max| max.min(i64::MAX as u64) as i64),
        )
        .arg(request.previous_room.unwrap_or(""))
        .arg(new_epoch);
}

/// What `login.lua` reports.
#[derive(Debug)]
pub(super) struct LoggedIn {
    /// `None`: the name is taken.
    pub outcome: Option<JoinOutcome>,
    /// The room's epoch when joined.
    pub epoch: String,
    /// The `left` of a dead holder's room the claim took the user out of.
    pub notices: Vec<PresenceNotice>,
}

/// `login.lua`: claim and join in one step (`request.previous_room` is
/// ignored: a login has none).
pub(super) async fn login(
    r: &impl Eval,
    keys: &Keys,
    node: &str,
    request: &JoinRequest<'_>,
    new_epoch: &str,
    ttl_ms: u64,
) -> BackplaneResult<LoggedIn> {
    let mut call = common_call(&SCRIPTS.login, keys);
    join_keys(&mut call, keys, node, request);
    call.key(keys.nodes());
    let request = JoinRequest {
        previous_room: None,
        ..*request
    };
    join_args(&mut call, node, &request, new_epoch);
    call.arg(ttl_ms);
    let reply: Vec<Value> = r.eval("login", call).await?;
    let [Value::Array(joined), Value::Array(left)] = reply.as_slice() else {
        return Err(internal("login"));
    };
    let outcome = match joined.first().and_then(text).as_deref() {
        Some("name_taken") => None,
        _ => Some(join_outcome(joined)?),
    };
    Ok(LoggedIn {
        outcome,
        epoch: joined.get(4).and_then(text).unwrap_or_default(),
        notices: notices(left),
    })
}

fn join_outcome(reply: &[Value]) -> BackplaneResult<JoinOutcome> {
    let outcome = reply
        .first()
        .and_then(text)
        .ok_or_else(|| internal("join"))?;
    Ok(match outcome.as_str() {
        "joined" => {
            let number = |i: usize| reply.get(i).and_then(int).ok_or_else(|| internal("join"));
            JoinOutcome::Joined {
                created: number(1)? == 1,
                members: number(2)? as u64,
                previous_members: u64::try_from(number(3)?).ok(),
                seq: 0,
            }
        }
        "no_such_room" => JoinOutcome::NoSuchRoom,
        "banned" => JoinOutcome::Banned,
        "closed" => JoinOutcome::Closed,
        "locked" => JoinOutcome::Locked,
        "too_many_rooms" => JoinOutcome::TooManyRooms,
        "too_many_owned" => JoinOutcome::TooManyOwnedRooms,
        "name_lost" => JoinOutcome::NameLost,
        _ => return Err(internal("join")),
    })
}

/// `change_room.lua` (control slot): the room's epoch when applied,
/// `None` if the room does not exist. The caller then brings the gate in
/// line ([`room_data`], [`RoomData::after`]).
pub(super) async fn change_room(
    r: &impl Eval,
    keys: &Keys,
    room: &str,
    change: &RoomChange,
) -> BackplaneResult<Option<String>> {
    let (name, password_hash) = match change {
        RoomChange::Lock { password_hash } => ("lock", password_hash.as_str()),
        RoomChange::Unlock => ("unlock", ""),
        RoomChange::Close => ("close", ""),
        RoomChange::Open => ("open", ""),
        RoomChange::Delete => ("delete", ""),
    };
    let mut call = common_call(&SCRIPTS.change_room, keys);
    call.key(keys.room(room))
        .key(keys.bans(room))
        .key(keys.members(room))
        .key(keys.rooms())
        .key(keys.empty_rooms())
        .arg(name)
        .arg(password_hash);
    let reply: Vec<Value> = r.eval("change_room", call).await?;
    match reply.first().and_then(int) {
        Some(1) => Ok(Some(reply.get(1).and_then(text).unwrap_or_default())),
        Some(_) => Ok(None),
        None => Err(internal("change_room")),
    }
}

/// What [`room_data`] does to a room's message state (`room_data.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoomData {
    /// A new room: fresh `seq`, no history, an open gate.
    Create,
    /// An open gate unless one exists.
    Ensure,
    Close,
    Open,
    /// Gate, `seq` and history go, unless the gate has another epoch.
    Delete,
}

impl RoomData {
    /// The gate step that follows a settings change, if any.
    pub(super) fn after(change: &RoomChange) -> Option<RoomData> {
        match change {
            RoomChange::Close => Some(RoomData::Close),
            RoomChange::Open => Some(RoomData::Open),
            RoomChange::Delete => Some(RoomData::Delete),
            RoomChange::Lock { .. } | RoomChange::Unlock => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RoomData::Create => "create",
            RoomData::Ensure => "ensure",
            RoomData::Close => "close",
            RoomData::Open => "open",
            RoomData::Delete => "delete",
        }
    }
}

/// `room_data.lua` (the room's message slot): whether anything changed.
pub(super) async fn room_data(
    r: &impl Eval,
    keys: &Keys,
    room: &str,
    action: RoomData,
    epoch: &str,
) -> BackplaneResult<bool> {
    let mut call = SCRIPTS.room_data.prepare_invoke();
    call.key(keys.gate(room))
        .key(keys.seq(room))
        .key(keys.history(room))
        .arg(action.name())
        .arg(epoch);
    Ok(r.eval::<i64>("room_data", call).await? == 1)
}

/// `set_ban.lua`: whether anything changed.
pub(super) async fn set_ban(
    r: &impl Eval,
    keys: &Keys,
    room: &str,
    user: &str,
    banned: bool,
) -> BackplaneResult<bool> {
    let mut call = SCRIPTS.set_ban.prepare_invoke();
    call.key(keys.room(room))
        .key(keys.bans(room))
        .arg(user)
        .arg(flag(banned));
    Ok(r.eval::<i64>("set_ban", call).await? == 1)
}

/// `snapshot.lua`.
pub(super) async fn snapshot(
    r: &impl Eval,
    keys: &Keys,
    limit: usize,
) -> BackplaneResult<ClusterSnapshot> {
    let mut call = common_call(&SCRIPTS.snapshot, keys);
    call.key(keys.names()).key(keys.rooms()).arg(limit);
    let reply: Vec<Value> = r.eval("snapshot", call).await?;
    parse_snapshot(&reply)
}

fn parse_snapshot(reply: &[Value]) -> BackplaneResult<ClusterSnapshot> {
    let (Some(users), Some(rooms_total)) =
        (reply.first().and_then(int), reply.get(1).and_then(int))
    else {
        return Err(internal("snapshot"));
    };
    let mut rooms = reply[2..]
        .chunks(4)
        .map(|room| {
            let [name, locked, closed, members] = room else {
                return Err(internal("snapshot"));
            };
            let locked = text(locked).as_deref() == Some("1");
            let closed = text(closed).as_deref() == Some("1");
            Ok(RoomSummary {
                name: text(name).ok_or_else(|| internal("snapshot"))?,
                available: !locked && !closed,
                locked,
                closed,
                users: int(members).ok_or_else(|| internal("snapshot"))?.max(0) as u64,
            })
        })
        .collect::<BackplaneResult<Vec<_>>>()?;
    rooms.sort_by(crate::backplane::busiest_first);
    Ok(ClusterSnapshot {
        rooms,
        rooms_total: rooms_total.max(0) as u64,
        users: users.max(0) as u64,
    })
}

/// How a frame is published: PUBLISH on one Redis, SPUBLISH (sharded
/// pub/sub, the channel's slot decides its shard) on a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishCommand {
    Publish,
    SPublish,
}

impl PublishCommand {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PublishCommand::Publish => "PUBLISH",
            PublishCommand::SPublish => "SPUBLISH",
        }
    }
}

/// What the publish script keeps of each room's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HistoryLimits {
    /// `history.max_messages` (0: history off).
    pub max_messages: usize,
    /// `history.ttl_secs` in ms (0: never expires).
    pub ttl_ms: u64,
}

/// `publish_message.lua`: the message's `seq`, `None` when the room is
/// missing or closed.
pub(super) async fn publish_message(
    r: &impl Eval,
    keys: &Keys,
    draft: &MessageDraft,
    seq_floor: u64,
    history: HistoryLimits,
    publish: PublishCommand,
) -> BackplaneResult<Option<u64>> {
    let (prefix, suffix) = draft.frame_parts();
    let mut call = SCRIPTS.publish_message.prepare_invoke();
    call.key(keys.gate(&draft.room))
        .key(keys.seq(&draft.room))
        .key(keys.room_channel(&draft.room))
        .key(keys.history(&draft.room))
        .arg(prefix)
        .arg(suffix)
        .arg(seq_floor)
        .arg(history.max_messages)
        .arg(history.ttl_ms)
        .arg(publish.name());
    let seq: Option<i64> = r.eval("publish_message", call).await?;
    Ok(seq.map(|seq| seq.max(0) as u64))
}

/// `read_history.lua`: a page of `room`'s history (see `history.rs`);
/// [`HistoryOutcome::NotMember`] when the room has no gate. Membership
/// (`query.member`) is the caller's check: it lives in the control slot.
pub(super) async fn read_history(
    r: &impl Eval,
    keys: &Keys,
    room: &str,
    query: &HistoryQuery<'_>,
) -> BackplaneResult<HistoryOutcome> {
    let mut call = SCRIPTS.read_history.prepare_invoke();
    call.key(keys.gate(room))
        .key(keys.seq(room))
        .key(keys.history(room));
    for arg in super::history::read_args(query) {
        call.arg(arg);
    }
    let reply: Option<Vec<Value>> = r.eval("read_history", call).await?;
    super::history::parse_read(query, reply)
}

/// `room_members.lua`: at most `limit` display names (sorted by user key)
/// and the member count.
pub(super) async fn room_members(
    r: &impl Eval,
    keys: &Keys,
    room: &str,
    limit: usize,
) -> BackplaneResult<RoomMembers> {
    let mut call = SCRIPTS.room_members.prepare_invoke();
    call.key(keys.members(room)).arg(limit);
    let (total, mut members): (u64, Vec<(String, String)>) = r.eval("room_members", call).await?;
    // Keys are lower-case names: sorting by key sorts case-insensitively.
    members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(RoomMembers {
        names: members.into_iter().map(|(_, display)| display).collect(),
        total,
    })
}

/// What `heartbeat.lua` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Heartbeat {
    /// The dataset's epoch.
    pub epoch: String,
    /// Whether this process's registration marker is still there.
    pub registered: bool,
    /// The default room's epoch (for its gate).
    pub default_room_epoch: String,
}

/// `heartbeat.lua`.
pub(super) async fn heartbeat(
    r: &impl Eval,
    keys: &Keys,
    node: &str,
    token: &str,
    default_room: &str,
    candidate_epoch: &str,
) -> BackplaneResult<Heartbeat> {
    let mut call = SCRIPTS.heartbeat.prepare_invoke();
    call.key(keys.nodes())
        .key(keys.epoch())
        .key(keys.node_token(node))
        .key(keys.rooms())
        .key(keys.room(default_room))
        .key(keys.bans(default_room))
        .arg(node)
        .arg(token)
        .arg(default_room)
        .arg(candidate_epoch);
    let reply: Vec<Value> = r.eval("heartbeat", call).await?;
    let epoch = reply
        .first()
        .and_then(text)
        .ok_or_else(|| internal("heartbeat"))?;
    Ok(Heartbeat {
        epoch,
        registered: reply.get(1).and_then(int) == Some(1),
        default_room_epoch: reply.get(2).and_then(text).unwrap_or_default(),
    })
}

/// What one `reregister.lua` batch reports.
#[derive(Debug, Default)]
pub(super) struct Reregistered {
    /// User keys meanwhile claimed by live nodes (left to them).
    pub conflicts: Vec<String>,
    /// Rooms deleted while this node could not hear it.
    pub gone: Vec<String>,
    pub notices: Vec<PresenceNotice>,
    /// Rooms recreated (Redis lost its data): their gates are the caller's.
    pub created: Vec<String>,
}

/// Arguments of one `reregister.lua` batch.
pub(super) struct ReregisterBatch<'a> {
    pub node: &'a str,
    pub token: &'a str,
    /// Redis lost its data: missing rooms are recreated.
    pub lost: bool,
    /// The last batch sets the registration marker.
    pub last: bool,
    pub ttl_ms: u64,
    /// The epoch of rooms recreated by this batch.
    pub epoch: &'a str,
    pub users: &'a [LocalUser],
}

/// `reregister.lua`.
pub(super) async fn reregister(
    r: &impl Eval,
    keys: &Keys,
    batch: &ReregisterBatch<'_>,
) -> BackplaneResult<Reregistered> {
    let mut call = common_call(&SCRIPTS.reregister, keys);
    call.key(keys.names())
        .key(keys.nodes())
        .key(keys.rooms())
        .key(keys.node_users(batch.node))
        .key(keys.node_token(batch.node))
        .arg(batch.node)
        .arg(batch.token)
        .arg(flag(batch.lost))
        .arg(flag(batch.last))
        .arg(batch.ttl_ms)
        .arg(batch.epoch);
    for user in batch.users {
        call.arg(&user.user_key)
            .arg(&user.display_name)
            .arg(&user.room);
    }
    let reply: Vec<Value> = r.eval("reregister", call).await?;
    let [conflicts, rooms, entries, created] = reply.as_slice() else {
        return Err(internal("reregister"));
    };
    let mut out = Reregistered::default();
    if let Value::Array(conflicts) = conflicts {
        out.conflicts.extend(conflicts.iter().filter_map(text));
    }
    if let Value::Array(rooms) = rooms {
        out.gone.extend(rooms.iter().filter_map(text));
    }
    if let Value::Array(entries) = entries {
        out.notices = notices(entries);
    }
    if let Value::Array(created) = created {
        out.created.extend(created.iter().filter_map(text));
    }
    Ok(out)
}

/// `dead_nodes.lua`: up to `limit` nodes whose heartbeat is older than
/// `ttl_ms`.
pub(super) async fn dead_nodes(
    r: &impl Eval,
    keys: &Keys,
    ttl_ms: u64,
    limit: usize,
) -> BackplaneResult<Vec<String>> {
    let mut call = SCRIPTS.dead_nodes.prepare_invoke();
    call.key(keys.nodes()).arg(ttl_ms).arg(limit);
    r.eval("dead_nodes", call).await
}

/// What one `reap_node.lua` batch reports.
#[derive(Debug)]
pub(super) enum Reaped {
    /// The node turned out to be alive (`only_if_dead`): nothing done.
    Alive,
    /// `remaining` users are left; continue from `cursor`.
    Batch {
        remaining: u64,
        cursor: String,
        notices: Vec<PresenceNotice>,
    },
}

/// `reap_node.lua`.
pub(super) async fn reap_node(
    r: &impl Eval,
    keys: &Keys,
    node: &str,
    cursor: &str,
    count: usize,
    only_if_dead: bool,
    ttl_ms: u64,
) -> BackplaneResult<Reaped> {
    let mut call = common_call(&SCRIPTS.reap_node, keys);
    call.key(keys.names())
        .key(keys.nodes())
        .key(keys.node_users(node))
        .key(keys.node_token(node))
        .arg(node)
        .arg(cursor)
        .arg(count)
        .arg(flag(only_if_dead))
        .arg(ttl_ms);
    let reply: Vec<Value> = r.eval("reap_node", call).await?;
    let remaining = reply
        .first()
        .and_then(int)
        .ok_or_else(|| internal("reap_node"))?;
    if remaining < 0 {
        return Ok(Reaped::Alive);
    }
    Ok(Reaped::Batch {
        remaining: remaining as u64,
        cursor: reply
            .get(1)
            .and_then(text)
            .ok_or_else(|| internal("reap_node"))?,
        notices: reply.get(2..).map(notices).unwrap_or_default(),
    })
}

#[cfg(test)]
#[path = "scripts_tests.rs"]
mod tests;

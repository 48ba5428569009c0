//! The backplane: shared state (names, rooms, memberships, bans, counts,
//! `seq`) and the fan-out of frames and events to every node.
//!
//! The chat rules talk only to [`Backplane`]; they do not know whether the
//! cluster is one process ([`memory::MemoryBackplane`]) or many nodes sharing
//! Redis ([`redis::RedisBackplane`]). What a backplane receives for this node
//! it hands to a [`Delivery`] (the node's local registry), which routes it to
//! local sockets without awaiting anything.
//!
//! Every method that changes or reads shared state may fail with
//! [`BackplaneError::Unavailable`]; the chat rules turn that into NOTICE
//! `unavailable` and change nothing locally.

pub mod memory;
pub mod redis;

#[cfg(test)]
mod contract_tests;
/// A real `redis-server` for the crate's own tests (the integration tests'
/// helper, shared).
#[cfg(test)]
#[path = "../../tests/common/redis_server.rs"]
#[allow(dead_code)]
pub(crate) mod test_redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{MessageDraft, RoomStateReason, RoomSummary};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackplaneError {
    /// The shared store cannot be reached (or did not answer in time).
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
    /// The store answered something we did not expect.
    #[error("backplane error: {0}")]
    Internal(String),
}

pub type BackplaneResult<T> = Result<T, BackplaneError>;

/// A room's shared settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Lower-case room name.
    pub name: String,
    /// Owner id given by the [`JoinRequest`] that created the room (opaque
    /// to the backplane); `None` for the default room.
    pub owner: Option<String>,
    pub locked: bool,
    pub closed: bool,
}

/// Some members of a room, and how many it has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomMembers {
    pub names: Vec<String>,
    pub total: u64,
}

/// Everything CACHE_UPDATE needs, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterSnapshot {
    /// The rooms with the most users (ties by name), at most the `limit`
    /// asked for: a snapshot's size does not grow with the cluster's rooms.
    pub rooms: Vec<RoomSummary>,
    /// Every room of the cluster.
    pub rooms_total: u64,
    /// Logged-in connections in the whole cluster.
    pub users: u64,
}

/// A user entering a room, checked and applied atomically.
#[derive(Debug, Clone)]
pub struct JoinRequest<'a> {
    /// Lower-case user name.
    pub user_key: &'a str,
    /// The name as the user typed it (shown in member lists).
    pub display_name: &'a str,
    /// Lower-case room name.
    pub room: &'a str,
    /// Password hash to check against a locked room (see [`password_hash`]).
    pub password_hash: Option<&'a str>,
    /// Create the room, owned by `owner`, if it does not exist.
    pub create: bool,
    /// Who owns the room if this join creates it: an opaque id chosen by the
    /// chat rules (see `chat::ownership`), stored verbatim and handed back
    /// in [`RoomInfo::owner`].
    pub owner: &'a str,
    /// Rooms the cluster may hold: creating one more is refused with
    /// [`JoinOutcome::TooManyRooms`].
    pub max_rooms: u64,
    /// Rooms `owner` may own at once (`limits.rooms_per_user`): creating
    /// one more is refused with [`JoinOutcome::TooManyOwnedRooms`]; `None`:
    /// no limit (admins). Counted atomically with the creation; deleting a
    /// room frees its slot.
    pub max_owned_rooms: Option<u64>,
    /// The room the user is in now, left as part of the same change.
    pub previous_room: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The user is now a member; `created` when the room was created for it.
    /// `members` counts the room's members now (the user included) and
    /// `previous_members` those left in `previous_room`, `None` when the user
    /// was not a member there (no room given, or its `left` was already
    /// announced by whoever took it out, e.g. the reaper of a node presumed
    /// dead), so the caller can decide on joined/left notices without
    /// another round trip.
    /// `seq` is the room's last `seq` at that moment: the user receives
    /// every message above it (see [`crate::registry::Registry::enter`]).
    Joined {
        created: bool,
        members: u64,
        previous_members: Option<u64>,
        seq: u64,
    },
    NoSuchRoom,
    /// Locked and the password was missing or wrong.
    Locked,
    Closed,
    Banned,
    /// The room does not exist and the cluster already has `max_rooms`.
    TooManyRooms,
    /// The room does not exist and its would-be owner already owns
    /// `max_owned_rooms`.
    TooManyOwnedRooms,
    /// The user's name is held by another connection of the cluster (this
    /// node was presumed dead and the name claimed meanwhile): nothing
    /// changed; the connection is closed once its node re-registers.
    NameLost,
}

/// A change of a room's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomChange {
    Lock { password_hash: String },
    Unlock,
    Close,
    Open,
    Delete,
}

/// A read of a room's history (HISTORY_REQUEST, or a node filling a gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery<'a> {
    /// Only a member of the room may read it (checked atomically with the
    /// read, so a ban or kick that already happened holds); `None` for the
    /// node's own gap fill.
    pub member: Option<&'a str>,
    /// Messages with a greater `seq`, oldest first.
    pub after: Option<u64>,
    /// Messages with a smaller `seq`; without `after`, the latest of them.
    pub before: Option<u64>,
    /// Most messages returned (at least 1).
    pub limit: usize,
    /// The epoch the client knows: when it is not the room's, `after` and
    /// `before` are ignored and the page is not complete.
    pub epoch: Option<&'a str>,
}

/// One page of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// MESSAGE frames as clients receive them, in `seq` order.
    pub messages: Vec<Bytes>,
    /// The room's latest `seq` when the page was read.
    pub last_seq: u64,
    /// The room's numbering: changes when it is deleted and created again.
    pub epoch: String,
    /// See [`page_complete`].
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryOutcome {
    Page(HistoryPage),
    /// The room does not exist or the user is not a member of it.
    NotMember,
}

/// Whether a page holds every message right next to the requested
/// position: the same rule for every backplane. `seqs` are the page's
/// `seq`s in order; `epoch_matched` is false when the client named another
/// epoch (the page then holds the latest messages).
///
/// - With `after = a`: complete when nothing is newer than `a` (below
///   `before`), or the page starts at `a + 1`.
/// - Otherwise (latest, or scrolling back below `before`): complete when the
///   page ends at the newest message below the position and either is full
///   (`limit` messages: older ones are another page) or starts at seq 1.
pub fn page_complete(
    query: &HistoryQuery<'_>,
    last_seq: u64,
    seqs: &[u64],
    epoch_matched: bool,
) -> bool {
    if !epoch_matched {
        return false;
    }
    let upper = query
        .before
        .map_or(last_seq, |b| b.saturating_sub(1).min(last_seq));
    match query.after {
        Some(after) => after >= upper || seqs.first() == Some(&(after + 1)),
        None => {
            upper == 0
                || (seqs.last() == Some(&upper)
                    && (seqs.len() >= query.limit || seqs.first() == Some(&1)))
        }
    }
}

/// Something every node must act on; published by one node, delivered to
/// all (including the publisher) through [`Delivery::deliver_event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// ROOM_STATE to every logged-in client of the cluster.
    RoomState {
        room: String,
        reason: RoomStateReason,
    },
    /// Every member of `room` is moved to the default room (room closed or
    /// deleted).
    RoomEvacuated {
        room: String,
        reason: RoomStateReason,
    },
    /// One user is removed from `room` (kick or ban) wherever it is connected.
    Evict {
        room: String,
        user_key: String,
        banned: bool,
    },
    /// ROOM_STATE `unbanned` for one user wherever it is connected.
    Unbanned { room: String, user_key: String },
    /// The whole cluster shuts down.
    Shutdown { reason: Option<String> },
    /// The node `node_id` drains as on SIGTERM (admin API); the others
    /// ignore it.
    Drain { node_id: String },
}

/// One node as the operator's page shows it: written by the node itself at
/// every heartbeat ([`Backplane::report_node_stats`]) and read by any node
/// ([`Backplane::cluster_nodes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub id: String,
    /// Where the node listens (`host:port`).
    pub address: String,
    /// Unix milliseconds when the node started.
    pub started_ms: u64,
    /// Takes new clients (what its `/readyz` says).
    pub ready: bool,
    /// `ready`, `not_ready` (backplane unavailable) or `draining`.
    pub state: String,
    pub connections: u64,
    pub logged_in: u64,
    /// Chat messages accepted from this node's clients per second, over the
    /// last heartbeat interval.
    pub messages_in_per_sec: f64,
    /// Frames this node queued to its clients per second (room fan-out).
    pub messages_out_per_sec: f64,
    /// Unix milliseconds of this report.
    pub last_heartbeat_ms: u64,
}

/// A user connected to this node, as the backplane needs to re-register it
/// after the shared store lost its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub user_key: String,
    pub display_name: String,
    pub room: String,
}

/// The node side of a backplane: where frames and events for this node go.
///
/// Implementations must not block or await: they are called from the
/// backplane's receive path (for Redis, the push callback of the subscriber
/// connection), so they only `try_send` into bounded queues.
pub trait Delivery: Send + Sync + 'static {
    /// A frame published to `room`: goes verbatim to every local member.
    fn deliver_room(&self, room: &str, frame: Bytes);
    /// A cluster event.
    fn deliver_event(&self, event: ClusterEvent);
    /// This node's logged-in users, for re-registration.
    fn local_users(&self) -> Vec<LocalUser>;
    /// The local connection of `user_key` no longer holds its name: another
    /// node's login claimed it while this node was presumed dead. The
    /// connection is told and closed; it must not act under the name.
    fn name_lost(&self, user_key: &str);
}

/// Shared state and fan-out. See the module docs.
#[async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// Claims `user_key` for a connection of this node; `false` when the name
    /// is taken anywhere in the cluster.
    async fn claim_name(&self, user_key: &str, display_name: &str) -> BackplaneResult<bool>;

    /// Frees the name and removes the user from `room` (if any): the user
    /// disconnected. Must be idempotent. Returns how many members `room` has
    /// left, or `None` when the user was not a member of it (no room given,
    /// or already removed, e.g. by the reaper of a node presumed dead), so
    /// that `left` is announced once.
    async fn release_name(
        &self,
        user_key: &str,
        room: Option<&str>,
    ) -> BackplaneResult<Option<u64>>;

    /// Checks ban, closed and lock and moves the user into the room, all in
    /// one atomic step.
    async fn join_room(&self, request: JoinRequest<'_>) -> BackplaneResult<JoinOutcome>;

    /// A login: [`claim_name`](Self::claim_name) then
    /// [`join_room`](Self::join_room) (no previous room), and the name given
    /// back when the join is refused. `None`: the name is taken. A backplane
    /// that can do both in one round trip does (Redis: `login.lua`).
    async fn login(&self, request: JoinRequest<'_>) -> BackplaneResult<Option<JoinOutcome>> {
        if !self
            .claim_name(request.user_key, request.display_name)
            .await?
        {
            return Ok(None);
        }
        let key = request.user_key;
        let outcome = self.join_room(request).await;
        if !matches!(outcome, Ok(JoinOutcome::Joined { .. })) {
            let _ = self.release_name(key, None).await;
        }
        outcome.map(Some)
    }

    /// A room's settings; `None` if it does not exist.
    async fn room(&self, room: &str) -> BackplaneResult<Option<RoomInfo>>;

    /// Applies a change; `false` if the room does not exist. Deleting a room
    /// also drops its bans, its history and epoch, and its `seq` counter (a new room of the same name
    /// starts at 1). Memberships are not touched: the members are moved by the
    /// [`ClusterEvent::RoomEvacuated`] that the caller publishes.
    async fn change_room(&self, room: &str, change: RoomChange) -> BackplaneResult<bool>;

    /// Bans or unbans `user_key` from `room`; returns whether anything changed.
    async fn set_ban(&self, room: &str, user_key: &str, banned: bool) -> BackplaneResult<bool>;

    /// At most `limit` display names of the members of `room` (sorted
    /// case-insensitively when the room has no more than `limit`; otherwise
    /// an arbitrary sample) and the room's member count. Bounded so that
    /// listing a crowd costs no more than listing a small room.
    async fn room_members(&self, room: &str, limit: usize) -> BackplaneResult<RoomMembers>;

    /// Whether `user_key` is a member of `room`.
    async fn is_member(&self, room: &str, user_key: &str) -> BackplaneResult<bool>;

    /// The `limit` rooms with the most users (ties by name, see
    /// [`busiest_first`]) with their counts, the number of rooms and the
    /// total of logged-in users.
    async fn snapshot(&self, limit: usize) -> BackplaneResult<ClusterSnapshot>;

    /// Deletes, as [`RoomChange::Delete`] does, at most `limit` rooms other
    /// than `default_room` that have had no members for at least `ttl`
    /// (`limits.empty_room_ttl_secs`), each checked and deleted in one
    /// atomic step. Returns the rooms deleted: every node sweeps, and each
    /// room is returned by exactly one call cluster-wide, whose caller
    /// announces it (ROOM_STATE `deleted`).
    async fn expire_empty_rooms(
        &self,
        default_room: &str,
        ttl: std::time::Duration,
        limit: usize,
    ) -> BackplaneResult<Vec<String>>;

    /// Gives the message the next `seq` of its room, appends it to the room's
    /// history (capped by `history.max_messages`) and publishes its frame to
    /// the room, atomically, so every member on every node sees the same `seq`
    /// in the same order. `None` when the room is missing or closed (nothing
    /// published).
    async fn publish_message(&self, draft: &MessageDraft) -> BackplaneResult<Option<u64>>;

    /// A page of `room`'s history, read atomically with its `last_seq` and
    /// `epoch` (and the membership check of `query.member`).
    async fn history(
        &self,
        room: &str,
        query: &HistoryQuery<'_>,
    ) -> BackplaneResult<HistoryOutcome>;

    /// Publishes a ready frame (e.g. a joined/left NOTICE) to every member of
    /// `room` on every node.
    async fn publish_to_room(&self, room: &str, frame: Bytes) -> BackplaneResult<()>;

    /// Publishes an event to every node, this one included.
    async fn publish_event(&self, event: &ClusterEvent) -> BackplaneResult<()>;

    /// Takes one reference on the delivery of `room`'s frames to this node
    /// (a local member, or a join in progress); returns once the delivery
    /// is active, so that the member misses nothing after it. On failure no
    /// reference is held. The backplane counts the references: nobody else.
    async fn subscribe(&self, room: &str) -> BackplaneResult<()>;

    /// Gives one reference back; after the last, the backplane stops
    /// delivering the room here (in the background). Never waits, so a
    /// caller cut off anywhere cannot leak a reference.
    fn unsubscribe(&self, room: &str);

    /// Publishes this node's stats for the admin API; they expire unless
    /// renewed within `redis.node_ttl_secs`.
    async fn report_node_stats(&self, stats: &NodeStats) -> BackplaneResult<()>;

    /// The stats of every node whose last report has not expired, sorted by
    /// id.
    async fn cluster_nodes(&self) -> BackplaneResult<Vec<NodeStats>>;

    /// Whether the node can take new clients as far as the backplane goes
    /// (`/readyz`).
    fn is_ready(&self) -> bool;

    /// Stops background work and releases this node's presence (names,
    /// memberships) at once: a clean drain. Best effort; bounded by the
    /// backplane itself (every call by its command timeout), so callers
    /// await it without a deadline of their own, which could only be
    /// shorter than what the work needs.
    async fn close(&self);
}

/// The handle the rest of the node holds.
pub type SharedBackplane = Arc<dyn Backplane>;

/// The `seq` at the end of a MESSAGE frame (`{"op":0,…,"seq":N}}`).
///
/// Reading the number is not parsing the frame: MESSAGE frames are built by
/// [`crate::protocol::MessageDraft`] and always end with `,"seq":N}}`.
pub(crate) fn message_seq(frame: &[u8]) -> Option<u64> {
    if !frame.starts_with(b"{\"op\":0,") {
        return None;
    }
    let body = frame.strip_suffix(b"}}")?;
    let digits_start = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    if !body[..digits_start].ends_with(b"\"seq\":") {
        return None;
    }
    std::str::from_utf8(&body[digits_start..])
        .ok()?
        .parse()
        .ok()
}

/// The order of [`ClusterSnapshot::rooms`]: most users first, then by name.
pub(crate) fn busiest_first(a: &RoomSummary, b: &RoomSummary) -> std::cmp::Ordering {
    b.users.cmp(&a.users).then_with(|| a.name.cmp(&b.name))
}

/// Hash of a room password as stored by backplanes: SHA-256 over the room
/// name and the password, so equal passwords of different rooms differ.
pub fn password_hash(room: &str, password: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"swiftchat-room-password\0");
    hasher.update(room.as_bytes());
    hasher.update(b"\0");
    hasher.update(password.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(after: Option<u64>, before: Option<u64>, limit: usize) -> HistoryQuery<'static> {
        HistoryQuery {
            member: None,
            after,
            before,
            limit,
            epoch: None,
        }
    }

    #[test]
    fn completeness_forwards() {
        assert!(page_complete(
            &query(Some(3), None, 10),
            6,
            &[4, 5, 6],
            true
        ));
        assert!(
            page_complete(&query(Some(3), None, 2), 6, &[4, 5], true),
            "a page may end early"
        );
        assert!(
            !page_complete(&query(Some(3), None, 10), 6, &[5, 6], true),
            "4 was trimmed"
        );
        assert!(
            !page_complete(&query(Some(3), None, 10), 6, &[], true),
            "all expired"
        );
        assert!(
            page_complete(&query(Some(6), None, 10), 6, &[], true),
            "nothing missed"
        );
        assert!(
            !page_complete(&query(Some(6), None, 10), 6, &[], false),
            "other epoch"
        );
    }

    #[test]
    fn completeness_latest_and_backwards() {
        assert!(page_complete(&query(None, None, 10), 3, &[1, 2, 3], true));
        assert!(
            page_complete(&query(None, None, 2), 3, &[2, 3], true),
            "full page"
        );
        assert!(
            !page_complete(&query(None, None, 10), 5, &[4, 5], true),
            "1-3 trimmed"
        );
        assert!(
            page_complete(&query(None, None, 10), 0, &[], true),
            "empty room"
        );
        assert!(page_complete(&query(None, Some(3), 10), 5, &[1, 2], true));
        assert!(
            !page_complete(&query(None, Some(5), 10), 5, &[], true),
            "all trimmed"
        );
        assert!(
            page_complete(&query(None, Some(1), 10), 5, &[], true),
            "nothing before 1"
        );
    }
}

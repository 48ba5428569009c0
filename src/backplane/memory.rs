//! The in-memory backplane: one node, no Redis. State lives behind one mutex;
//! "publishing" hands frames straight to this node's [`Delivery`].
//!
//! Frames are delivered while the state lock is held, so a room's messages
//! reach the delivery in `seq` order even when several connections post at
//! once. Delivery only does `try_send`, so the lock is held briefly.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    page_complete, Backplane, BackplaneResult, ClusterEvent, ClusterSnapshot, Delivery,
    HistoryOutcome, HistoryPage, HistoryQuery, JoinOutcome, JoinRequest, NodeStats, RoomChange,
    RoomInfo, RoomMembers,
};
use crate::config::HistoryConfig;
use crate::protocol::{MessageDraft, RoomSummary};

pub struct MemoryBackplane {
    state: Mutex<State>,
    /// Listed by every snapshot (see [`Backplane::snapshot`]).
    default_room: String,
    delivery: Arc<dyn Delivery>,
    /// Messages kept per room (0: history off).
    history_max: usize,
    /// A room's history is dropped this long after its last message.
    history_ttl: Option<Duration>,
    /// The one node's last report (admin API).
    node_stats: Mutex<Option<NodeStats>>,
}

#[derive(Default)]
struct State {
    /// user key → display name of every logged-in user.
    names: HashMap<String, String>,
    rooms: BTreeMap<String, Room>,
    /// owner id → the rooms it owns (`limits.rooms_per_user`); an owner
    /// without rooms has no entry.
    owned: HashMap<String, HashSet<String>>,
}

impl State {
    /// Removes a room with everything it holds, freeing its owner's slot.
    fn delete_room(&mut self, name: &str) -> bool {
        let Some(room) = self.rooms.remove(name) else {
            return false;
        };
        if let Some(owner) = room.owner {
            if let Some(owned) = self.owned.get_mut(&owner) {
                owned.remove(name);
                if owned.is_empty() {
                    self.owned.remove(&owner);
                }
            }
        }
        true
    }
}

struct Room {
    owner: Option<String>,
    password_hash: Option<String>,
    closed: bool,
    seq: u64,
    bans: HashSet<String>,
    /// user key → display name.
    members: BTreeMap<String, String>,
    /// The room's numbering, new with every creation of the room.
    epoch: String,
    /// The latest messages: `(seq, MESSAGE frame)`, oldest first, at most
    /// `history_max`.
    history: VecDeque<(u64, Bytes)>,
    last_message_at: Option<Instant>,
    /// When the last member left (`limits.empty_room_ttl_secs`); `None`
    /// while the room has members.
    empty_since: Option<Instant>,
}

impl Default for Room {
    fn default() -> Self {
        Self {
            owner: None,
            password_hash: None,
            closed: false,
            seq: 0,
            bans: HashSet::new(),
            members: BTreeMap::new(),
            epoch: ulid::Ulid::new().to_string(),
            history: VecDeque::new(),
            last_message_at: None,
            empty_since: None,
        }
    }
}

impl Room {
    fn info(&self, name: &str) -> RoomInfo {
        RoomInfo {
            name: name.to_string(),
            owner: self.owner.clone(),
            locked: self.password_hash.is_some(),
            closed: self.closed,
        }
    }
}

impl MemoryBackplane {
    /// A fresh backplane whose only room is `default_room` (ownerless).
    /// With the default `[history]` settings.
    pub fn new(default_room: &str, delivery: Arc<dyn Delivery>) -> Arc<Self> {
        Self::with_history(default_room, &HistoryConfig::default(), delivery)
    }

    pub fn with_history(
        default_room: &str,
        history: &HistoryConfig,
        delivery: Arc<dyn Delivery>,
    ) -> Arc<Self> {
        let mut state = State::default();
        state
            .rooms
            .insert(default_room.to_string(), Room::default());
        Arc::new(Self {
            state: Mutex::new(state),
            default_room: default_room.to_string(),
            delivery,
            history_max: history.max_messages,
            history_ttl: (history.ttl_secs > 0).then(|| Duration::from_secs(history.ttl_secs)),
            node_stats: Mutex::new(None),
        })
    }

    /// Drops `room`'s history if its last message is older than the ttl.
    fn expire_history(&self, room: &mut Room, now: Instant) {
        if let (Some(ttl), Some(at)) = (self.history_ttl, room.last_message_at) {
            if now.duration_since(at) >= ttl {
                room.history.clear();
                room.last_message_at = None;
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes the user from `room`; the members left, or `None` if it was not
/// a member.
fn leave(state: &mut State, user_key: &str, room: Option<&str>) -> Option<u64> {
    let room = state.rooms.get_mut(room?)?;
    room.members.remove(user_key)?;
    if room.members.is_empty() {
        room.empty_since = Some(Instant::now());
    }
    Some(room.members.len() as u64)
}

#[async_trait]
impl Backplane for MemoryBackplane {
    async fn claim_name(&self, user_key: &str, display_name: &str) -> BackplaneResult<bool> {
        let mut state = self.state();
        if state.names.contains_key(user_key) {
            return Ok(false);
        }
        state
            .names
            .insert(user_key.to_string(), display_name.to_string());
        Ok(true)
    }

    async fn release_name(
        &self,
        user_key: &str,
        room: Option<&str>,
    ) -> BackplaneResult<Option<u64>> {
        let mut state = self.state();
        state.names.remove(user_key);
        Ok(leave(&mut state, user_key, room))
    }

    async fn join_room(&self, request: JoinRequest<'_>) -> BackplaneResult<JoinOutcome> {
        let mut state = self.state();
        let created = !state.rooms.contains_key(request.room);
        if created {
            if !request.create {
                return Ok(JoinOutcome::NoSuchRoom);
            }
            if state.rooms.len() as u64 >= request.max_rooms {
                return Ok(JoinOutcome::TooManyRooms);
            }
            let owned = state.owned.get(request.owner).map_or(0, HashSet::len) as u64;
            if request.max_owned_rooms.is_some_and(|max| owned >= max) {
                return Ok(JoinOutcome::TooManyOwnedRooms);
            }
            state
                .owned
                .entry(request.owner.to_string())
                .or_default()
                .insert(request.room.to_string());
            state.rooms.insert(
                request.room.to_string(),
                Room {
                    owner: Some(request.owner.to_string()),
                    ..Room::default()
                },
            );
        }
        let room = state
            .rooms
            .get(request.room)
            .expect("present or just created");
        if room.bans.contains(request.user_key) {
            return Ok(JoinOutcome::Banned);
        }
        if room.closed {
            return Ok(JoinOutcome::Closed);
        }
        if let Some(hash) = &room.password_hash {
            if request.password_hash != Some(hash.as_str()) {
                return Ok(JoinOutcome::Locked);
            }
        }
        let previous_members = leave(&mut state, request.user_key, request.previous_room);
        let room = state.rooms.get_mut(request.room).expect("checked above");
        room.empty_since = None;
        room.members.insert(
            request.user_key.to_string(),
            request.display_name.to_string(),
        );
        Ok(JoinOutcome::Joined {
            created,
            members: room.members.len() as u64,
            previous_members,
            seq: room.seq,
        })
    }

    async fn room(&self, room: &str) -> BackplaneResult<Option<RoomInfo>> {
        Ok(self.state().rooms.get(room).map(|r| r.info(room)))
    }

    async fn change_room(&self, name: &str, change: RoomChange) -> BackplaneResult<bool> {
        let mut state = self.state();
        if change == RoomChange::Delete {
            return Ok(state.delete_room(name));
        }
        let Some(room) = state.rooms.get_mut(name) else {
            return Ok(false);
        };
        match change {
            RoomChange::Lock { password_hash } => room.password_hash = Some(password_hash),
            RoomChange::Unlock => room.password_hash = None,
            RoomChange::Close => room.closed = true,
            RoomChange::Open => room.closed = false,
            RoomChange::Delete => unreachable!("handled above"),
        }
        Ok(true)
    }

    async fn set_ban(&self, room: &str, user_key: &str, banned: bool) -> BackplaneResult<bool> {
        let mut state = self.state();
        let Some(room) = state.rooms.get_mut(room) else {
            return Ok(false);
        };
        Ok(if banned {
            room.bans.insert(user_key.to_string())
        } else {
            room.bans.remove(user_key)
        })
    }

    async fn room_members(&self, room: &str, limit: usize) -> BackplaneResult<RoomMembers> {
        Ok(self
            .state()
            .rooms
            .get(room)
            .map(|r| RoomMembers {
                names: r.members.values().take(limit).cloned().collect(),
                total: r.members.len() as u64,
            })
            .unwrap_or_default())
    }

    async fn is_member(&self, room: &str, user_key: &str) -> BackplaneResult<bool> {
        Ok(self
            .state()
            .rooms
            .get(room)
            .is_some_and(|r| r.members.contains_key(user_key)))
    }

    async fn snapshot(&self, limit: usize) -> BackplaneResult<ClusterSnapshot> {
        let state = self.state();
        let summary = |(name, room): (&String, &Room)| RoomSummary {
            name: name.clone(),
            available: room.password_hash.is_none() && !room.closed,
            locked: room.password_hash.is_some(),
            closed: room.closed,
            users: room.members.len() as u64,
        };
        let mut rooms: Vec<RoomSummary> = state.rooms.iter().map(summary).collect();
        // O(rooms) in memory; only `limit` of them are sorted and kept.
        if rooms.len() > limit && limit > 0 {
            rooms.select_nth_unstable_by(limit - 1, super::busiest_first);
        }
        rooms.truncate(limit);
        rooms.sort_by(super::busiest_first);
        if !rooms.iter().any(|r| r.name == self.default_room) {
            if let Some(default) = state.rooms.get_key_value(&self.default_room) {
                rooms.push(summary(default));
            }
        }
        Ok(ClusterSnapshot {
            rooms,
            rooms_total: state.rooms.len() as u64,
            users: state.names.len() as u64,
        })
    }

    async fn expire_empty_rooms(
        &self,
        default_room: &str,
        ttl: Duration,
        limit: usize,
    ) -> BackplaneResult<Vec<String>> {
        let mut state = self.state();
        let now = Instant::now();
        // O(rooms) under the lock, bounded by `limits.max_rooms`.
        let due: Vec<String> = state
            .rooms
            .iter()
            .filter(|(name, room)| {
                name.as_str() != default_room
                    && room.members.is_empty()
                    && room
                        .empty_since
                        .is_some_and(|since| now.duration_since(since) >= ttl)
            })
            .map(|(name, _)| name.clone())
            .take(limit)
            .collect();
        for name in &due {
            state.delete_room(name);
        }
        Ok(due)
    }

    async fn publish_message(&self, draft: &MessageDraft) -> BackplaneResult<Option<u64>> {
        let mut state = self.state();
        let Some(room) = state.rooms.get_mut(&draft.room).filter(|r| !r.closed) else {
            return Ok(None);
        };
        room.seq += 1;
        let seq = room.seq;
        let frame = draft.frame(seq);
        if self.history_max > 0 {
            let now = Instant::now();
            self.expire_history(room, now);
            if room.history.len() >= self.history_max {
                room.history.pop_front();
            }
            room.history.push_back((seq, frame.clone()));
            room.last_message_at = Some(now);
        }
        self.delivery.deliver_room(&draft.room, frame);
        Ok(Some(seq))
    }

    async fn history(
        &self,
        name: &str,
        query: &HistoryQuery<'_>,
    ) -> BackplaneResult<HistoryOutcome> {
        let mut state = self.state();
        let Some(room) = state.rooms.get_mut(name) else {
            return Ok(HistoryOutcome::NotMember);
        };
        if query
            .member
            .is_some_and(|user| !room.members.contains_key(user))
        {
            return Ok(HistoryOutcome::NotMember);
        }
        self.expire_history(room, Instant::now());
        let epoch_matched = query.epoch.is_none_or(|e| e == room.epoch);
        let (after, before) = if epoch_matched {
            (query.after, query.before)
        } else {
            (None, None)
        };
        let below = |seq: u64| before.is_none_or(|b| seq < b);
        let page: Vec<&(u64, Bytes)> = match after {
            Some(after) => room
                .history
                .iter()
                .filter(|(seq, _)| *seq > after && below(*seq))
                .take(query.limit)
                .collect(),
            None => {
                let mut latest: Vec<_> = room
                    .history
                    .iter()
                    .rev()
                    .filter(|(seq, _)| below(*seq))
                    .take(query.limit)
                    .collect();
                latest.reverse();
                latest
            }
        };
        let seqs: Vec<u64> = page.iter().map(|(seq, _)| *seq).collect();
        let effective = HistoryQuery {
            after,
            before,
            ..*query
        };
        Ok(HistoryOutcome::Page(HistoryPage {
            complete: page_complete(&effective, room.seq, &seqs, epoch_matched),
            messages: page.into_iter().map(|(_, frame)| frame.clone()).collect(),
            last_seq: room.seq,
            epoch: room.epoch.clone(),
        }))
    }

    async fn publish_to_room(&self, room: &str, frame: Bytes) -> BackplaneResult<()> {
        // Under the lock, so it is ordered with the room's messages.
        let _state = self.state();
        self.delivery.deliver_room(room, frame);
        Ok(())
    }

    async fn publish_event(&self, event: &ClusterEvent) -> BackplaneResult<()> {
        self.delivery.deliver_event(event.clone());
        Ok(())
    }

    async fn subscribe(&self, _room: &str) -> BackplaneResult<()> {
        Ok(())
    }

    fn unsubscribe(&self, _room: &str) {}

    async fn report_node_stats(&self, stats: &NodeStats) -> BackplaneResult<()> {
        *self.node_stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats.clone());
        Ok(())
    }

    async fn cluster_nodes(&self) -> BackplaneResult<Vec<NodeStats>> {
        let stats = self.node_stats.lock().unwrap_or_else(|e| e.into_inner());
        Ok(stats.iter().cloned().collect())
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDelivery;
    impl Delivery for NoDelivery {
        fn deliver_room(&self, _: &str, _: Bytes) {}
        fn deliver_event(&self, _: ClusterEvent) {}
        fn local_users(&self) -> Vec<crate::backplane::LocalUser> {
            Vec::new()
        }
        fn name_lost(&self, _: &str) {}
    }

    #[tokio::test]
    async fn release_reports_the_membership_once() {
        let backplane = MemoryBackplane::new("general", Arc::new(NoDelivery));
        assert!(backplane.claim_name("ann", "Ann").await.unwrap());
        let joined = backplane
            .join_room(JoinRequest {
                user_key: "ann",
                display_name: "Ann",
                room: "general",
                password_hash: None,
                create: false,
                owner: "tok:ann",
                previous_room: None,
                max_rooms: 10,
                max_owned_rooms: None,
            })
            .await
            .unwrap();
        assert_eq!(
            joined,
            JoinOutcome::Joined {
                created: false,
                members: 1,
                previous_members: None,
                seq: 0
            }
        );
        assert_eq!(
            backplane
                .release_name("ann", Some("general"))
                .await
                .unwrap(),
            Some(0)
        );
        assert_eq!(
            backplane
                .release_name("ann", Some("general"))
                .await
                .unwrap(),
            None,
            "a second release announces nothing"
        );
        assert!(backplane.claim_name("ann", "Ann").await.unwrap());
    }
}

//! This node's connections: who is logged in, who is in which room, and the
//! bounded queues that lead to their sockets.
//!
//! The backplane hands frames and events to the registry ([`Delivery`]); the
//! registry pushes them into per-connection queues with `try_send` and never
//! waits. A connection whose queue is full is a slow consumer: it is closed
//! with 4009 instead of slowing down its room (see [`crate::conn`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;

use crate::backplane::{Backplane, BackplaneResult, ClusterEvent, Delivery, LocalUser};
use crate::chat::cluster_events::{self, Reaction, UserAction};
use crate::metrics as m;
use crate::protocol::Frame;
use crate::shutdown::Shutdown;

pub use crate::conn::{ConnHandle, ConnId, Control, Deferred, EvictReason};

/// A logged-in user of this node.
struct LocalSession {
    conn: Arc<ConnHandle>,
    display_name: String,
    room: String,
}

#[derive(Default)]
struct Members {
    /// room → its local members.
    rooms: HashMap<String, HashMap<ConnId, Arc<ConnHandle>>>,
    /// user key → session, for events addressed to one user.
    users: HashMap<String, LocalSession>,
    /// room → the frames relayed while joins into it are in progress.
    joining: HashMap<String, JoinReplay>,
}

/// Frames of a room relayed while a join into it is in progress: between
/// [`Registry::acquire_room`] (the subscription is active, the membership
/// about to exist in the backplane) and [`Registry::enter`] (local routing
/// includes the user). Without it, a message published in that window is
/// relayed to the room's other local members but not to the entrant, which
/// then sees a `seq` gap. `enter` replays the messages above the `seq` its
/// join observed, right after the user's CACHE_UPDATE.
#[derive(Default)]
struct JoinReplay {
    /// Joins in progress.
    pending: usize,
    /// The latest relayed frames, oldest first, at most
    /// `Registry::join_replay_frames`.
    frames: VecDeque<Frame>,
    /// The highest `seq` dropped from `frames` for room: an entrant whose
    /// join observed less would miss messages.
    dropped_seq: u64,
}

pub struct Registry {
    members: RwLock<Members>,
    /// Frames kept per room while joins into it are in progress:
    /// `limits.outbound_queue`, since an entrant's replay beyond its own
    /// send queue would close it as a slow consumer anyway. The window is a
    /// few backplane round trips, so this is reached only when a room
    /// relays more messages than that during one join: the entrant would
    /// then miss messages, and is closed as a slow consumer (4009) instead.
    join_replay_frames: usize,
    next_id: AtomicU64,
    connections: AtomicUsize,
    shutdown: Arc<Shutdown>,
    /// This node's id, for [`ClusterEvent::Drain`] (set once at start).
    node_id: OnceLock<String>,
    /// This node's own traffic (the metrics are per process, which may hold
    /// several nodes in tests): the admin API's rates.
    messages_in: AtomicU64,
    frames_out: AtomicU64,
    /// The fan-out's metric handles, looked up once (the macros hash the
    /// name and search the recorder's registry on every call).
    frames_out_metric: metrics::Counter,
    fanout_seconds: metrics::Histogram,
    /// Whether joined/left notices are deferred to the next presence flush
    /// (`limits.presence_delay_ms` > 0; the server runs the flush).
    defer_presence: bool,
    /// Connections with deferred notices waiting, for the next
    /// [`Registry::flush_presence`]. Bounded by the number of connections:
    /// each is listed at most once per flush (see
    /// [`ConnHandle::send_deferred`]).
    presence_due: Mutex<Vec<Arc<ConnHandle>>>,
}

impl Registry {
    /// `join_replay_frames`: `limits.outbound_queue` (see the field).
    pub fn new(shutdown: Arc<Shutdown>, join_replay_frames: usize) -> Arc<Self> {
        Arc::new(Self {
            join_replay_frames: join_replay_frames.max(1),
            members: RwLock::default(),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            shutdown,
            node_id: OnceLock::new(),
            messages_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            // The server installs the recorder before it builds the registry.
            frames_out_metric: metrics::counter!(m::FRAMES_OUT),
            fanout_seconds: metrics::histogram!(m::FANOUT_SECONDS),
            defer_presence: false,
            presence_due: Mutex::default(),
        })
    }

    /// Defers joined/left notices: queued without waking the writers, which
    /// a task then wakes every `every` ([`flush_presence`](Self::flush_presence)).
    /// The task holds the registry weakly and ends within `every` after the
    /// node dropped it; it keeps flushing while the node drains, since
    /// clients on other nodes' rooms still come and go.
    pub fn defer_presence(mut self: Arc<Self>, every: std::time::Duration) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the registry is shared")
            .defer_presence = true;
        let registry = Arc::downgrade(&self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                registry.flush_presence();
            }
        });
        self
    }

    /// Wakes the writers of connections whose deferred presence notices
    /// still wait.
    pub fn flush_presence(&self) {
        let due = std::mem::take(&mut *self.presence_due.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in due {
            conn.flush_deferred();
        }
    }

    /// Names this node for [`ClusterEvent::Drain`]; the first call wins.
    pub(crate) fn set_node_id(&self, node_id: &str) {
        let _ = self.node_id.set(node_id.to_string());
    }

    /// Counts one chat message accepted from a client of this node.
    pub(crate) fn count_message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages accepted and frames fanned out by this node since it
    /// started.
    pub(crate) fn traffic(&self) -> (u64, u64) {
        (
            self.messages_in.load(Ordering::Relaxed),
            self.frames_out.load(Ordering::Relaxed),
        )
    }

    /// Logged-in users of this node.
    pub(crate) fn logged_in_count(&self) -> usize {
        read(&self.members).users.len()
    }

    /// Reserves a connection slot; `None` when `max` (0: unlimited) is
    /// reached. The slot is freed when the guard drops.
    pub fn open_connection(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        let open = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        if max != 0 && open > max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Some(ConnectionSlot {
            registry: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Takes a reference on `room`'s subscription (the backplane counts
    /// them) before a join, so the new member misses nothing published after
    /// its join; frames relayed until [`enter`](Self::enter) are kept for
    /// the replay. Give it back with [`abandon_join`](Self::abandon_join) if
    /// the join does not happen, else with
    /// [`release_room`](Self::release_room) when the member leaves.
    pub async fn acquire_room(&self, backplane: &dyn Backplane, room: &str) -> BackplaneResult<()> {
        backplane.subscribe(room).await?;
        write(&self.members)
            .joining
            .entry(room.to_string())
            .or_default()
            .pending += 1;
        Ok(())
    }

    /// The join for which [`acquire_room`](Self::acquire_room) was called
    /// did not happen.
    pub fn abandon_join(&self, backplane: &dyn Backplane, room: &str) {
        {
            let mut members = write(&self.members);
            if let Some(replay) = members.joining.get_mut(room) {
                replay.pending = replay.pending.saturating_sub(1);
                if replay.pending == 0 {
                    members.joining.remove(room);
                }
            }
        }
        backplane.unsubscribe(room);
    }

    /// Gives back a member's reference on `room` (it left or disconnected).
    /// Never waits.
    pub fn release_room(&self, backplane: &dyn Backplane, room: &str) {
        backplane.unsubscribe(room);
    }

    /// Records a logged-in user in `room` (or moves it there), after
    /// queueing the room's messages relayed since its join: those above
    /// `joined_seq` (the room's last `seq` when the join made the user a
    /// member, see [`crate::backplane::JoinOutcome::Joined`]).
    pub fn enter(
        &self,
        user_key: &str,
        display_name: &str,
        room: &str,
        conn: &Arc<ConnHandle>,
        joined_seq: u64,
    ) {
        let mut members = write(&self.members);
        if let Some(replay) = members.joining.get_mut(room) {
            if replay.dropped_seq > joined_seq {
                conn.close(crate::protocol::close::SLOW_CONSUMER, "slow consumer");
            } else {
                for frame in &replay.frames {
                    if crate::backplane::message_seq(frame.as_bytes())
                        .is_some_and(|seq| seq > joined_seq)
                    {
                        conn.send(frame.clone());
                    }
                }
            }
            replay.pending = replay.pending.saturating_sub(1);
            if replay.pending == 0 {
                members.joining.remove(room);
            }
        }
        if let Some(old) = members.users.get(user_key).map(|s| s.room.clone()) {
            remove_member(&mut members, &old, conn.id);
        } else {
            metrics::gauge!(m::LOGGED_IN).increment(1.0);
        }
        members
            .rooms
            .entry(room.to_string())
            .or_default()
            .insert(conn.id, conn.clone());
        members.users.insert(
            user_key.to_string(),
            LocalSession {
                conn: conn.clone(),
                display_name: display_name.to_string(),
                room: room.to_string(),
            },
        );
    }

    /// Forgets a logged-in user (it disconnected).
    pub fn exit(&self, user_key: &str) {
        let mut members = write(&self.members);
        if let Some(session) = members.users.remove(user_key) {
            remove_member(&mut members, &session.room, session.conn.id);
            metrics::gauge!(m::LOGGED_IN).decrement(1.0);
        }
    }

    fn deliver_to_user(&self, user_key: &str, f: impl FnOnce(&Arc<ConnHandle>)) {
        if let Some(session) = read(&self.members).users.get(user_key) {
            f(&session.conn);
        }
    }

    /// Carries out what the chat rules decided for one local user.
    fn act_on_user(&self, user_key: &str, action: UserAction) {
        self.deliver_to_user(user_key, |conn| match action {
            UserAction::Frame(frame) => {
                conn.send(frame);
            }
            UserAction::Control(control) => {
                conn.send_control(control);
            }
            UserAction::Close {
                frame,
                code,
                reason,
            } => {
                conn.send(frame);
                conn.close(code, reason);
            }
        });
    }

    fn broadcast_logged_in(&self, frame: Frame) {
        for session in read(&self.members).users.values() {
            session.conn.send(frame.clone());
        }
    }
}

/// Queues `frame` for every local member of `room`; returns how many.
/// Presence notices are deferred when `due` is given: connections that need
/// a flush for them are added to it.
fn route(
    members: &Members,
    room: &str,
    frame: &Frame,
    due: Option<&Mutex<Vec<Arc<ConnHandle>>>>,
) -> u64 {
    let Some(conns) = members.rooms.get(room) else {
        return 0;
    };
    match due {
        Some(due) if crate::protocol::is_presence_notice(frame.as_bytes()) => {
            let mut due = due.lock().unwrap_or_else(|e| e.into_inner());
            for conn in conns.values() {
                if conn.send_deferred(frame.clone()) == Deferred::NeedsFlush {
                    due.push(conn.clone());
                }
            }
        }
        _ => {
            for conn in conns.values() {
                conn.send(frame.clone());
            }
        }
    }
    conns.len() as u64
}

fn remove_member(members: &mut Members, room: &str, id: ConnId) {
    if let Some(conns) = members.rooms.get_mut(room) {
        conns.remove(&id);
        if conns.is_empty() {
            members.rooms.remove(room);
        }
    }
}

impl Registry {
    /// Where deferred presence notices are scheduled, when they are.
    fn presence_due(&self) -> Option<&Mutex<Vec<Arc<ConnHandle>>>> {
        self.defer_presence.then_some(&self.presence_due)
    }

    /// Counts one room frame fanned out to `routed` local members.
    fn count_routed(&self, routed: u64, started: std::time::Instant) {
        self.frames_out.fetch_add(routed, Ordering::Relaxed);
        if routed > 0 {
            self.frames_out_metric.increment(routed);
        }
        self.fanout_seconds.record(started.elapsed().as_secs_f64());
    }
}

impl Delivery for Registry {
    fn deliver_room(&self, room: &str, frame: Bytes) {
        let started = std::time::Instant::now();
        // One UTF-8 check, then a reference-count bump per recipient.
        let Ok(frame) = Frame::try_from(frame) else {
            tracing::warn!(room, "dropped a room frame that is not UTF-8");
            return;
        };
        {
            let members = read(&self.members);
            if !members.joining.contains_key(room) {
                let routed = route(&members, room, &frame, self.presence_due());
                drop(members);
                self.count_routed(routed, started);
                return;
            }
        }
        // Rare: a join into the room is in progress on this node. Routing
        // and recording happen under one write lock, so that `enter` (also
        // under it) sees each frame either routed to the entrant or
        // recorded for its replay, never neither.
        let mut members = write(&self.members);
        let routed = route(&members, room, &frame, self.presence_due());
        if let Some(replay) = members.joining.get_mut(room) {
            if replay.frames.len() >= self.join_replay_frames {
                if let Some(old) = replay.frames.pop_front() {
                    let seq = crate::backplane::message_seq(old.as_bytes()).unwrap_or(0);
                    replay.dropped_seq = replay.dropped_seq.max(seq);
                }
            }
            replay.frames.push_back(frame);
        }
        drop(members);
        self.count_routed(routed, started);
    }

    fn deliver_event(&self, event: ClusterEvent) {
        match cluster_events::react(event) {
            Reaction::ToEveryone(frame) => self.broadcast_logged_in(frame),
            Reaction::ToRoomMembers { room, control } => {
                if let Some(conns) = read(&self.members).rooms.get(&room) {
                    for conn in conns.values() {
                        conn.send_control(control.clone());
                    }
                }
            }
            Reaction::ToUser { user_key, action } => self.act_on_user(&user_key, action),
            Reaction::StopCluster { reason } => {
                tracing::info!("cluster-wide shutdown received");
                self.shutdown.trigger(reason, false);
            }
            Reaction::Drain { node_id } => {
                if self.node_id.get() == Some(&node_id) {
                    tracing::info!("drain requested through the admin API");
                    self.shutdown.trigger(None, true);
                }
            }
        }
    }

    fn local_users(&self) -> Vec<LocalUser> {
        read(&self.members)
            .users
            .iter()
            .map(|(key, session)| LocalUser {
                user_key: key.clone(),
                display_name: session.display_name.clone(),
                room: session.room.clone(),
            })
            .collect()
    }

    fn name_lost(&self, user_key: &str) {
        self.act_on_user(user_key, cluster_events::name_lost());
    }
}

/// A reserved connection: its id, and its place in the connection count
/// until dropped.
pub struct ConnectionSlot {
    registry: Arc<Registry>,
    pub id: ConnId,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.registry.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }
}

// Poisoning only means another thread panicked mid-update of plain maps;
// serving on is better than taking the node down.
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::memory::MemoryBackplane;
    use crate::protocol::MessageDraft;

    const REPLAY: usize = 32;

    fn message(room: &str, seq: u64) -> Bytes {
        MessageDraft {
            author: "ann".into(),
            content: format!("m{seq}"),
            room: room.into(),
            id: seq.to_string(),
            ts: 1,
        }
        .frame(seq)
    }

    fn seqs(conn: &ConnHandle) -> Vec<u64> {
        conn.take_frames()
            .iter()
            .filter_map(|f| crate::backplane::message_seq(f.as_bytes()))
            .collect()
    }

    /// Issue 9 item 5b: a message relayed after the join made the user a
    /// member (seq above what the join observed) but before local routing
    /// included it reaches the user, in order, after what was queued before
    /// `enter` (its CACHE_UPDATE).
    #[tokio::test]
    async fn messages_relayed_during_a_join_reach_the_entrant() {
        let registry = Registry::new(Arc::new(Shutdown::new()), REPLAY);
        let backplane = MemoryBackplane::new("general", registry.clone());
        let ann = Arc::new(ConnHandle::new(1, 64, 8));
        let bob = Arc::new(ConnHandle::new(2, 64, 8));
        registry.acquire_room(&*backplane, "r").await.unwrap();
        registry.enter("ann", "Ann", "r", &ann, 0);
        // Bob's join: subscription taken, membership made at seq 2.
        registry.acquire_room(&*backplane, "r").await.unwrap();
        registry.deliver_room("r", message("r", 1));
        registry.deliver_room("r", message("r", 2));
        // Published after bob's join, before bob is routed locally.
        registry.deliver_room("r", message("r", 3));
        registry.deliver_room("r", message("r", 4));
        registry.enter("bob", "Bob", "r", &bob, 2);
        registry.deliver_room("r", message("r", 5));
        assert_eq!(seqs(&ann), [1, 2, 3, 4, 5]);
        assert_eq!(seqs(&bob), [3, 4, 5]);
        // Nothing is kept once no join is in progress.
        assert!(read(&registry.members).joining.is_empty());
    }

    /// Issue 13: presence notices wait for the flush (or the next frame
    /// that is not deferred), in order with everything else.
    #[tokio::test]
    async fn presence_notices_wait_for_the_flush() {
        // The flush task does not tick within the test: it flushes by hand.
        let every = std::time::Duration::from_secs(3600);
        let registry = Registry::new(Arc::new(Shutdown::new()), REPLAY).defer_presence(every);
        let backplane = MemoryBackplane::new("general", registry.clone());
        let ann = Arc::new(ConnHandle::new(1, 64, 8));
        registry.acquire_room(&*backplane, "r").await.unwrap();
        registry.enter("ann", "Ann", "r", &ann, 0);
        let woken = |conn: &Arc<ConnHandle>| {
            let conn = conn.clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_millis(10), conn.frames_ready())
                    .await
                    .is_ok()
            }
        };
        let joined = crate::protocol::presence_notice(true, "Bob", "r");
        registry.deliver_room("r", Bytes::from(joined.clone()));
        registry.deliver_room("r", Bytes::from(joined.clone()));
        assert!(
            !woken(&ann).await,
            "a notice alone does not wake the writer"
        );
        registry.flush_presence();
        assert!(woken(&ann).await, "the flush woke it");
        assert_eq!(ann.take_frames(), [joined.clone(), joined.clone()]);

        // A message takes a waiting notice along, in order.
        registry.deliver_room("r", Bytes::from(joined.clone()));
        registry.deliver_room("r", message("r", 1));
        assert!(woken(&ann).await, "the message woke the writer at once");
        let frames = ann.take_frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], joined);
        assert_eq!(crate::backplane::message_seq(frames[1].as_bytes()), Some(1));
    }

    /// A join given up (refused) leaves no replay buffer behind.
    #[tokio::test]
    async fn an_abandoned_join_stops_recording() {
        let registry = Registry::new(Arc::new(Shutdown::new()), REPLAY);
        let backplane = MemoryBackplane::new("general", registry.clone());
        let ann = Arc::new(ConnHandle::new(1, 64, 8));
        registry.acquire_room(&*backplane, "r").await.unwrap();
        registry.enter("ann", "Ann", "r", &ann, 0);
        registry.acquire_room(&*backplane, "r").await.unwrap();
        registry.abandon_join(&*backplane, "r");
        assert!(read(&registry.members).joining.is_empty());
        registry.deliver_room("r", message("r", 1));
        assert_eq!(seqs(&ann), [1]);
    }

    /// More messages during one join than can be kept: the entrant is
    /// closed as a slow consumer rather than silently missing some.
    #[tokio::test]
    async fn a_replay_overflow_closes_the_entrant() {
        let registry = Registry::new(Arc::new(Shutdown::new()), REPLAY);
        let backplane = MemoryBackplane::new("general", registry.clone());
        let bob = Arc::new(ConnHandle::new(2, 1024, 8));
        registry.acquire_room(&*backplane, "r").await.unwrap();
        for seq in 1..=(REPLAY as u64 + 1) {
            registry.deliver_room("r", message("r", seq));
        }
        registry.enter("bob", "Bob", "r", &bob, 0);
        assert_eq!(
            bob.close_reason().map(|r| r.0),
            Some(crate::protocol::close::SLOW_CONSUMER)
        );
    }
}

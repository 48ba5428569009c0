//! The node's one subscriber connection and what arrives on it.
//!
//! A RESP3 [`ConnectionManager`] with a push sender: pub/sub messages come
//! back as pushes on the same multiplexed socket, and the manager
//! reconnects and resubscribes by itself (`set_automatic_resubscription`).
//! Two traps of redis-rs are handled here (see
//! `../shared/notes/dependencies.md`, section 3):
//! - after its retry budget the manager stops reconnecting until a command
//!   is sent through it, leaving a subscriber deaf after a long outage: it
//!   retries forever (with a capped delay) and [`Subscriber::ping`] is sent
//!   every second by the supervisor;
//! - an UNSUBSCRIBE that fails during an outage stays in the manager's
//!   tracker and is resubscribed on reconnect: our own set of wanted rooms is
//!   the source of truth, and a `subscribe` confirmation for a room that is
//!   neither wanted nor has local members is answered with an UNSUBSCRIBE.
//!
//! On top of the manager's own resubscription, the supervisor subscribes
//! every wanted channel again after each disconnection (subscribing twice is
//! harmless), so a lost tracker entry cannot leave a room deaf either.
//!
//! Room subscriptions are counted here and nowhere else: each local member
//! (or join in progress) holds one reference ([`Subscriber::acquire_room`],
//! [`Subscriber::release_room`]). Changes are serialized per room, not per
//! node, and no lock is held across a Redis round trip: the count changes
//! under a plain mutex, and at most one task per room (spawned, so a
//! cancelled caller cannot stop it half-way) sends SUBSCRIBE/UNSUBSCRIBE
//! until Redis matches the count. Releasing never waits, so a close that
//! is cut off cannot leak a reference.
//!
//! On a Redis Cluster (`redis.cluster`) the connection is the redis crate's
//! cluster connection and rooms use sharded pub/sub: SSUBSCRIBE grouped by
//! slot (never across slots: CROSSSLOT), an unsolicited `sunsubscribe` of a
//! wanted channel (its slot migrated) handled like a disconnection, and a
//! `Disconnection` push (a shard's primary lost, e.g. failover) likewise;
//! see `cluster.rs`.
//!
//! The push sender is a plain closure called by the connection's reader: it
//! only parses, looks up and hands frames to [`Delivery`] (which does
//! `try_send`), and queues stray rooms with `try_send`. It never blocks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, PushInfo, PushKind, RedisResult, Value};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::health::Health;
use super::keys::Keys;
use super::seq_floor::SeqFloors;
use super::telemetry;
use crate::backplane::{BackplaneError, BackplaneResult, ClusterEvent, Delivery};
use crate::protocol::RoomStateReason;

/// Channels per SUBSCRIBE command when resubscribing everything.
const SUBSCRIBE_BATCH: usize = 256;
/// Stray rooms waiting to be unsubscribed; more are dropped (the next
/// confirmation of the same room queues it again).
const STRAY_QUEUE: usize = 256;

/// State shared between the push closure and the async side.
struct Shared {
    keys: Keys,
    probe_channel: String,
    delivery: Arc<dyn Delivery>,
    health: Arc<Health>,
    /// Rooms with local references, and their subscription state.
    rooms: Mutex<HashMap<String, RoomSubscription>>,
    /// Bumped whenever a room's subscription settles (acquirers wait on it).
    settled: watch::Sender<u64>,
    /// The last `seq` relayed per room (no repeats after Redis data loss).
    seq_floors: SeqFloors,
    /// Set on every disconnection: the supervisor subscribes everything again.
    resync: AtomicBool,
    /// Rooms whose gap (what was published while the subscription was
    /// interrupted) is being filled from history: their live frames wait
    /// here, so the missed messages reach clients first. See `gap_fill`.
    gaps: Mutex<HashMap<String, Gap>>,
    /// Live frames held per room during a fill; 0 when history is off
    /// (nothing to fill from: no room is held back).
    gap_buffer: usize,
    stray: mpsc::Sender<String>,
}

/// What [`Subscriber::release_gap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapRelease {
    Released,
    /// Frames were dropped from the room's buffer: read history again.
    Overflowed,
    /// The connection dropped again: wait for the resubscription.
    Pending,
}

/// A room waiting for its gap fill.
#[derive(Default)]
struct Gap {
    /// Live frames that arrived since the interruption, in order.
    frames: VecDeque<Bytes>,
    /// Frames were dropped from `frames` (full): their messages must be
    /// read from history again before the room is released.
    overflowed: bool,
    /// Fill attempts that failed (Redis did not answer).
    failures: u32,
}

impl Shared {
    fn rooms(&self) -> MutexGuard<'_, HashMap<String, RoomSubscription>> {
        // Plain data: a panic elsewhere does not make it invalid.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gaps(&self) -> MutexGuard<'_, HashMap<String, Gap>> {
        self.gaps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a disconnection: every wanted room that has relayed a message
    /// may have missed some, so its live frames wait for its gap fill. A
    /// room that has relayed none has no known position to fill from (its
    /// members can ask HISTORY_REQUEST themselves).
    fn open_gaps(&self) {
        if self.gap_buffer == 0 {
            return;
        }
        let rooms: Vec<String> = self
            .rooms()
            .iter()
            .filter(|(room, sub)| sub.refs > 0 && self.seq_floors.floor(room) > 0)
            .map(|(room, _)| room.clone())
            .collect();
        let mut gaps = self.gaps();
        for room in rooms {
            gaps.entry(room).or_default();
        }
    }

    /// The subscription was (or may have been) interrupted: hold rooms for
    /// their gap fill and have the supervisor subscribe everything again.
    fn interrupted(&self) {
        self.health.set_subscribed(false);
        self.open_gaps();
        self.resync.store(true, Ordering::Release);
    }

    /// Observes and delivers a frame of `room` (not held back), unless it
    /// repeats a MESSAGE just relayed (see `SeqFloors::observe`).
    fn relay(&self, room: &str, frame: Bytes) {
        if !self.seq_floors.observe(room, &frame) {
            metrics::counter!(telemetry::REPEATS_DROPPED).increment(1);
            return;
        }
        self.delivery.deliver_room(room, frame);
    }

    fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                if let (Some(channel), Some(payload)) = (data.next(), data.next()) {
                    if let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) {
                        self.on_message(&channel, payload);
                    }
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                if let Some(channel) = push.data.into_iter().next().and_then(bytes_of) {
                    self.on_subscribed(&channel);
                }
            }
            PushKind::Disconnection => {
                metrics::counter!(telemetry::RECONNECTS).increment(1);
                tracing::warn!("redis subscriber connection lost; reconnecting");
                self.interrupted();
            }
            PushKind::SUnsubscribe => {
                // Solicited (the room was released) unless it is still
                // wanted: then its slot moved to another shard, which does
                // not know the subscription. Subscribe again, fill the gap.
                let Some(channel) = push.data.into_iter().next().and_then(bytes_of) else {
                    return;
                };
                let wanted = match self.keys.room_of_channel(&channel) {
                    Some(room) => self.is_wanted(room),
                    None => true,
                };
                if wanted {
                    metrics::counter!(telemetry::RECONNECTS).increment(1);
                    tracing::info!("redis cluster moved a subscribed slot; subscribing again");
                    self.interrupted();
                }
            }
            // PushKind is non-exhaustive; unsubscribe confirmations and
            // anything else need no action.
            _ => {}
        }
    }

    fn on_message(&self, channel: &[u8], payload: Vec<u8>) {
        if let Some(room) = self.keys.room_of_channel(channel) {
            let frame = Bytes::from(payload);
            {
                let mut gaps = self.gaps();
                if let Some(gap) = gaps.get_mut(room) {
                    if gap.frames.len() < self.gap_buffer {
                        gap.frames.push_back(frame);
                    } else {
                        gap.overflowed = true;
                    }
                    return;
                }
            }
            // Relayed verbatim: the bytes are the frame clients receive.
            self.relay(room, frame);
        } else if channel == self.keys.events_channel().as_bytes() {
            match serde_json::from_slice::<ClusterEvent>(&payload) {
                Ok(event) => {
                    if let ClusterEvent::RoomState {
                        room,
                        reason: RoomStateReason::Deleted,
                    } = &event
                    {
                        self.seq_floors.forget(room);
                    }
                    self.delivery.deliver_event(event)
                }
                Err(e) => {
                    metrics::counter!(telemetry::BAD_PUSHES).increment(1);
                    tracing::warn!(error = %e, "unreadable cluster event ignored");
                }
            }
        } else if channel == self.probe_channel.as_bytes() {
            match self.health.on_probe_echo(&payload) {
                Some(lag) => {
                    metrics::histogram!(telemetry::PUBLISH_TO_DELIVER).record(lag.as_secs_f64())
                }
                None => metrics::counter!(telemetry::BAD_PUSHES).increment(1),
            }
        }
    }

    /// A subscription confirmation. For a room nobody here wants any more
    /// (resubscribed from the manager's tracker after a failed UNSUBSCRIBE),
    /// queue an UNSUBSCRIBE.
    fn on_subscribed(&self, channel: &[u8]) {
        let Some(room) = self.keys.room_of_channel(channel) else {
            return;
        };
        if self.is_wanted(room) {
            return;
        }
        let _ = self.stray.try_send(room.to_string());
    }
}

/// Gives a reference back unless disarmed (see `acquire_room`).
struct ReleaseOnDrop<'a> {
    subscriber: &'a Subscriber,
    room: &'a str,
    armed: bool,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.subscriber.release_room(self.room);
        }
    }
}

impl Shared {
    fn is_wanted(&self, room: &str) -> bool {
        self.rooms().get(room).is_some_and(|r| r.refs > 0)
    }
}

/// One room's local references and where its subscription stands.
#[derive(Debug, Default)]
struct RoomSubscription {
    refs: usize,
    /// Redis confirmed the SUBSCRIBE (and no UNSUBSCRIBE was sent since).
    subscribed: bool,
    /// A task is bringing Redis in line with `refs`.
    in_flight: bool,
    /// The last attempt to subscribe failed (acquirers waiting give up).
    failed: bool,
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// What the subscriber connects to (built once per node: its size is
/// irrelevant).
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// One Redis: a RESP3 client.
    Single(Client),
    /// A Redis Cluster: a builder with the seeds (RESP3), sharded pub/sub.
    Cluster(ClusterClientBuilder),
}

/// The subscriber's connection: plain or sharded pub/sub.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn subscribe(self, channels: Vec<String>) -> RedisResult<()> {
        match self {
            Connection::Single(mut m) => m.subscribe(channels).await,
            Connection::Cluster(mut c) => {
                for group in super::cluster::by_slot(channels) {
                    c.ssubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(self, channels: Vec<String>) -> RedisResult<()> {
        match self {
            Connection::Single(mut m) => m.unsubscribe(channels).await,
            Connection::Cluster(mut c) => {
                for group in super::cluster::by_slot(channels) {
                    c.sunsubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    async fn ping(self) -> RedisResult<()> {
        let ping = ::redis::cmd("PING");
        match self {
            Connection::Single(mut m) => ping.query_async::<Value>(&mut m).await.map(|_| ()),
            Connection::Cluster(mut c) => ping.query_async::<Value>(&mut c).await.map(|_| ()),
        }
    }
}

/// The subscriber connection and the rooms it should be subscribed to.
#[derive(Clone)]
pub struct Subscriber {
    connection: Connection,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl Subscriber {
    /// Creates the connection lazily: nothing is sent until the supervisor's
    /// first PING, so a node can start while Redis is down. Returns the
    /// subscriber and the queue of stray rooms for the supervisor.
    pub fn new(
        target: Target,
        keys: Keys,
        node_id: &str,
        delivery: Arc<dyn Delivery>,
        health: Arc<Health>,
        timeout: Duration,
        gap_buffer: usize,
    ) -> BackplaneResult<(Self, mpsc::Receiver<String>)> {
        let (stray, stray_rx) = mpsc::channel(STRAY_QUEUE);
        let shared = Arc::new(Shared {
            probe_channel: keys.probe_channel(node_id),
            keys,
            delivery,
            health,
            rooms: Mutex::new(HashMap::new()),
            settled: watch::Sender::new(0),
            seq_floors: SeqFloors::default(),
            resync: AtomicBool::new(true),
            gaps: Mutex::new(HashMap::new()),
            gap_buffer,
            stray,
        });
        let sender = Arc::clone(&shared);
        let push_sender = move |push: PushInfo| {
            sender.on_push(push);
            Ok::<(), std::convert::Infallible>(())
        };
        let connection = match target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_push_sender(push_sender)
                    .set_automatic_resubscription()
                    // Never give up (the deaf-after-a-long-outage trap) but
                    // retry at least every second, so recovery takes about a
                    // second.
                    .set_number_of_retries(usize::MAX)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1))
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Connection::Single(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| BackplaneError::Internal(format!("redis subscriber: {e}")))?,
                )
            }
            // Connects in the background; reconnects a shard after its
            // `Disconnection` push; our supervisor resubscribes per slot.
            Target::Cluster(builder) => Connection::Cluster(
                builder
                    .push_sender(push_sender)
                    .build()
                    .map_err(|e| {
                        BackplaneError::Internal(format!("redis subscriber: {}", e.category()))
                    })?
                    .get_pending_async_connection_with_config(
                        ::redis::cluster::ClusterConfig::new()
                            .set_connection_timeout(timeout)
                            .set_response_timeout(timeout),
                    ),
            ),
        };
        Ok((
            Self {
                connection,
                shared,
                timeout,
            },
            stray_rx,
        ))
    }

    /// Takes a reference on `room`'s subscription; returns once Redis
    /// confirmed the subscription (at once when it already stands). On
    /// failure no reference is kept.
    pub async fn acquire_room(&self, room: &str) -> BackplaneResult<()> {
        let mut settled = self.shared.settled.subscribe();
        {
            let mut rooms = self.shared.rooms();
            let entry = rooms.entry(room.to_string()).or_default();
            entry.refs += 1;
            if entry.refs == 1 {
                metrics::gauge!(telemetry::SUBSCRIPTIONS).increment(1.0);
            }
            entry.failed = false;
            if entry.subscribed && !entry.in_flight {
                return Ok(());
            }
            self.start_settling(room, entry);
        }
        // Cancelled before it returns (the caller timed out or went away):
        // the reference goes back, nothing leaks.
        let mut guard = ReleaseOnDrop {
            subscriber: self,
            room,
            armed: true,
        };
        let deadline = tokio::time::Instant::now() + self.timeout * 2;
        loop {
            let (subscribed, failed) = {
                let rooms = self.shared.rooms();
                let entry = rooms.get(room);
                let settled = entry.is_some_and(|e| !e.in_flight);
                (
                    settled && entry.is_some_and(|e| e.subscribed),
                    settled && entry.is_some_and(|e| e.failed),
                )
            };
            if subscribed {
                guard.armed = false;
                return Ok(());
            }
            if failed {
                return Err(BackplaneError::Unavailable(
                    "redis subscriber: could not subscribe".into(),
                ));
            }
            match tokio::time::timeout_at(deadline, settled.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(BackplaneError::Unavailable(
                        "redis subscriber did not answer in time".into(),
                    ));
                }
            }
        }
    }

    /// Gives back a reference taken by [`acquire_room`](Self::acquire_room).
    /// Never waits: after the last one, the room is unsubscribed in the
    /// background (and queued as stray if Redis cannot be told now).
    pub fn release_room(&self, room: &str) {
        let mut rooms = self.shared.rooms();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs > 0 {
            return;
        }
        metrics::gauge!(telemetry::SUBSCRIPTIONS).decrement(1.0);
        self.shared.seq_floors.forget(room);
        self.shared.gaps().remove(room);
        if entry.in_flight {
            return;
        }
        if entry.subscribed {
            self.start_settling(room, entry);
        } else {
            rooms.remove(room);
        }
    }

    /// Starts the room's settling task unless one runs (called under the
    /// rooms lock).
    fn start_settling(&self, room: &str, entry: &mut RoomSubscription) {
        if entry.in_flight {
            return;
        }
        // No runtime: the node is being torn down (a reference dropped
        // during its runtime's shutdown); nothing left to keep in line.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        entry.in_flight = true;
        let this = self.clone();
        let room = room.to_string();
        // Spawned: whoever caused the change may be cancelled; the room's
        // subscription must still end up matching its references.
        runtime.spawn(async move { this.settle(room).await });
    }

    /// Sends SUBSCRIBE/UNSUBSCRIBE until Redis matches the room's
    /// references; the only task doing so for this room.
    async fn settle(self, room: String) {
        loop {
            let want = {
                let mut rooms = self.shared.rooms();
                let Some(entry) = rooms.get_mut(&room) else {
                    return;
                };
                let want = entry.refs > 0;
                if want == entry.subscribed {
                    entry.in_flight = false;
                    if !want {
                        rooms.remove(&room);
                    }
                    drop(rooms);
                    self.shared.settled.send_modify(|n| *n += 1);
                    return;
                }
                want
            };
            let channel = self.shared.keys.room_channel(&room);
            let result = if want {
                self.command(|c| c.subscribe(vec![channel])).await
            } else {
                self.unsubscribe_channel(channel).await
            };
            let mut rooms = self.shared.rooms();
            let Some(entry) = rooms.get_mut(&room) else {
                return;
            };
            match result {
                Ok(()) => entry.subscribed = want,
                Err(e) => {
                    tracing::debug!(room = %room, error = %e, want, "redis (un)subscribe failed");
                    entry.in_flight = false;
                    if want {
                        // Acquirers waiting give up; a SUBSCRIBE that still
                        // reached Redis is undone by its confirmation if
                        // nobody wants the room by then.
                        entry.failed = true;
                    } else {
                        // The supervisor retries; the resubscription after a
                        // reconnect is undone by its confirmation.
                        entry.subscribed = false;
                        let _ = self.shared.stray.try_send(room.clone());
                        if entry.refs == 0 {
                            rooms.remove(&room);
                        }
                    }
                    drop(rooms);
                    self.shared.settled.send_modify(|n| *n += 1);
                    return;
                }
            }
        }
    }

    /// The highest `seq` this node relayed in `room` (0 if none).
    pub fn seq_floor(&self, room: &str) -> u64 {
        self.shared.seq_floors.floor(room)
    }

    /// Unsubscribes a stray room unless it became wanted again. Returns
    /// `false` when Redis could not be told (try again later).
    pub async fn drop_stray(&self, room: &str) -> bool {
        // A room wanted again, or being settled, is its task's business.
        if self
            .shared
            .rooms()
            .get(room)
            .is_some_and(|r| r.refs > 0 || r.in_flight)
        {
            return true;
        }
        let channel = self.shared.keys.room_channel(room);
        self.unsubscribe_channel(channel).await.is_ok()
    }

    async fn unsubscribe_channel(&self, channel: String) -> BackplaneResult<()> {
        self.command(|c| c.unsubscribe(vec![channel])).await
    }

    /// One PING through the subscriber connection: keeps the manager
    /// reconnecting (see the module docs) and tells whether it is up.
    pub async fn ping(&self) -> BackplaneResult<()> {
        self.command(Connection::ping).await
    }

    /// Whether a resubscription is due (a disconnection or a moved slot
    /// since the last successful one).
    pub fn resync_due(&self) -> bool {
        self.shared.resync.load(Ordering::Acquire)
    }

    /// After a disconnection (or at start): subscribes the base channels and
    /// every wanted room again. Returns `true` when a resubscription was
    /// needed and succeeded (the caller then checks presence right away).
    pub async fn resync_if_needed(&self) -> BackplaneResult<bool> {
        if !self.shared.resync.load(Ordering::Acquire) {
            return Ok(false);
        }
        if !self.shared.resync.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let mut channels = vec![
            self.shared.keys.events_channel().to_string(),
            self.shared.probe_channel.clone(),
        ];
        channels.extend(
            self.shared
                .rooms()
                .iter()
                .filter(|(_, r)| r.refs > 0)
                .map(|(room, _)| self.shared.keys.room_channel(room)),
        );
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            let batch = batch.to_vec();
            let result = self.command(|c| c.subscribe(batch)).await;
            if let Err(e) = result {
                self.shared.resync.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if !self.shared.health.is_subscribed() {
            tracing::info!(channels = channels.len(), "redis subscriptions active");
        }
        self.shared.health.set_subscribed(true);
        Ok(true)
    }

    // ---- gap fill (driven by the supervisor, see `gap_fill.rs`) ----------

    /// Rooms waiting for their gap fill.
    pub fn gap_rooms(&self) -> Vec<String> {
        self.shared.gaps().keys().cloned().collect()
    }

    /// Delivers messages read from history for a room being filled: those
    /// after the last `seq` relayed, in order. Returns the new floor.
    pub fn deliver_missed(&self, room: &str, messages: Vec<(u64, Bytes)>) -> u64 {
        let mut floor = self.shared.seq_floors.floor(room);
        for (seq, frame) in messages {
            if seq > floor {
                self.shared.relay(room, frame);
                floor = seq;
            }
        }
        floor
    }

    /// Releases a filled room: its held frames go out (messages already
    /// delivered from history skipped), then live frames flow again. Keeps
    /// the room held when frames were dropped from its buffer (read history
    /// again: [`GapRelease::Overflowed`]) or when the connection dropped
    /// again and is not resubscribed yet (the next fill, after the
    /// resubscription, reads what that outage missed: [`GapRelease::Pending`]).
    /// `force` releases it regardless (the fill gave up, or the room was
    /// deleted meanwhile); `verbatim` also delivers every held frame, known
    /// `seq` or not (the room's numbering is not the one this node knew).
    pub fn release_gap(&self, room: &str, force: bool, verbatim: bool) -> GapRelease {
        let mut gaps = self.shared.gaps();
        let Some(gap) = gaps.get_mut(room) else {
            return GapRelease::Released;
        };
        if !force {
            if self.shared.resync.load(Ordering::Acquire) {
                return GapRelease::Pending;
            }
            if gap.overflowed {
                gap.overflowed = false;
                gap.frames.clear();
                return GapRelease::Overflowed;
            }
        }
        let gap = gaps.remove(room).expect("present");
        // Delivered under the lock: a live frame arriving now waits for the
        // held ones, so the room's order holds.
        let mut floor = self.shared.seq_floors.floor(room);
        for frame in gap.frames {
            match crate::backplane::message_seq(&frame) {
                Some(seq) if seq <= floor && !verbatim => continue,
                Some(seq) => floor = seq,
                None => {}
            }
            self.shared.relay(room, frame);
        }
        GapRelease::Released
    }

    /// Counts a failed fill of `room`; returns the failures so far.
    pub fn gap_failed(&self, room: &str) -> u32 {
        let mut gaps = self.shared.gaps();
        gaps.get_mut(room).map_or(0, |gap| {
            gap.failures += 1;
            gap.failures
        })
    }

    /// Rooms with local references.
    pub fn wanted_rooms(&self) -> usize {
        self.shared.rooms().values().filter(|r| r.refs > 0).count()
    }

    async fn command<F, Fut>(&self, f: F) -> BackplaneResult<()>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<()>>,
    {
        match tokio::time::timeout(self.timeout, f(self.connection.clone())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(super::classify(&e)),
            Err(_) => Err(BackplaneError::Unavailable(
                "redis subscriber did not answer in time".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::LocalUser;
    use crate::protocol::MessageDraft;

    /// Records what reaches the node's clients.
    #[derive(Default)]
    struct Recorder {
        frames: Mutex<Vec<Bytes>>,
    }

    impl Delivery for Recorder {
        fn deliver_room(&self, _room: &str, frame: Bytes) {
            self.frames.lock().unwrap().push(frame);
        }
        fn deliver_event(&self, _: ClusterEvent) {}
        fn local_users(&self) -> Vec<LocalUser> {
            Vec::new()
        }
        fn name_lost(&self, _: &str) {}
    }

    fn frame(seq: u64) -> Bytes {
        MessageDraft {
            author: "a".into(),
            content: format!("m{seq}"),
            room: "r".into(),
            id: "1".into(),
            ts: 1,
        }
        .frame(seq)
    }

    /// A subscriber on no Redis at all (the connection is lazy) whose
    /// pushes the test feeds by hand.
    fn subscriber(gap_buffer: usize) -> (Subscriber, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let keys = Keys::new("t");
        let (subscriber, _stray) = Subscriber::new(
            Target::Single(Client::open("redis://127.0.0.1:1/?protocol=resp3").unwrap()),
            keys,
            "n1",
            recorder.clone(),
            Arc::new(Health::new(Duration::from_secs(1))),
            Duration::from_millis(100),
            gap_buffer,
        )
        .unwrap();
        subscriber.shared.rooms().insert(
            "r".into(),
            RoomSubscription {
                refs: 1,
                subscribed: true,
                ..Default::default()
            },
        );
        (subscriber, recorder)
    }

    fn push(subscriber: &Subscriber, seq: u64) {
        let channel = subscriber.shared.keys.room_channel("r");
        subscriber.shared.on_push(PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(channel.into_bytes()),
                Value::BulkString(frame(seq).to_vec()),
            ],
        });
    }

    fn disconnect(subscriber: &Subscriber) {
        subscriber.shared.on_push(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
    }

    fn seqs(recorder: &Recorder) -> Vec<u64> {
        recorder
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| crate::backplane::message_seq(f).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn missed_messages_go_out_before_held_ones_without_repeats() {
        let (sub, recorder) = subscriber(16);
        push(&sub, 1);
        push(&sub, 2);
        disconnect(&sub);
        // Live frames after the reconnection wait; 5 overlaps history.
        push(&sub, 5);
        push(&sub, 6);
        assert_eq!(seqs(&recorder), [1, 2], "held back during the fill");
        assert_eq!(sub.gap_rooms(), ["r"]);
        sub.shared.resync.store(false, Ordering::Release); // resubscribed
        let floor = sub.deliver_missed("r", (2..=5).map(|s| (s, frame(s))).collect());
        assert_eq!(floor, 5);
        assert_eq!(sub.release_gap("r", false, false), GapRelease::Released);
        push(&sub, 7);
        assert_eq!(seqs(&recorder), [1, 2, 3, 4, 5, 6, 7]);
        assert!(sub.gap_rooms().is_empty());
    }

    #[tokio::test]
    async fn an_overflowed_buffer_or_a_new_drop_keeps_the_room_held() {
        let (sub, recorder) = subscriber(2);
        push(&sub, 1);
        disconnect(&sub);
        for seq in 2..=5 {
            push(&sub, seq);
        }
        assert_eq!(
            sub.release_gap("r", false, false),
            GapRelease::Pending,
            "not resubscribed yet"
        );
        sub.shared.resync.store(false, Ordering::Release);
        sub.deliver_missed("r", (2..=3).map(|s| (s, frame(s))).collect());
        assert_eq!(
            sub.release_gap("r", false, false),
            GapRelease::Overflowed,
            "4 and 5 were dropped from the buffer: read again"
        );
        push(&sub, 6);
        sub.deliver_missed("r", (4..=6).map(|s| (s, frame(s))).collect());
        assert_eq!(sub.release_gap("r", false, false), GapRelease::Released);
        assert_eq!(seqs(&recorder), [1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn history_off_holds_nothing_back() {
        let (sub, recorder) = subscriber(0);
        push(&sub, 1);
        disconnect(&sub);
        push(&sub, 3);
        assert_eq!(seqs(&recorder), [1, 3]);
        assert!(sub.gap_rooms().is_empty());
    }

    #[tokio::test]
    async fn an_exact_repeat_is_not_relayed_twice() {
        let (sub, recorder) = subscriber(16);
        for seq in [1, 2, 3, 2, 3, 4] {
            push(&sub, seq);
        }
        assert_eq!(seqs(&recorder), [1, 2, 3, 4]);
    }
}

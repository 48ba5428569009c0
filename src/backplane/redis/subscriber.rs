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
//! The push sender is a plain closure called by the connection's reader: it
//! only parses, looks up and hands frames to [`Delivery`] (which does
//! `try_send`), and queues stray rooms with `try_send`. It never blocks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, PushInfo, PushKind, Value};
use bytes::Bytes;
use tokio::sync::mpsc;

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
    /// Rooms this node wants to hear: from `subscribe` until `unsubscribe`.
    rooms: Mutex<HashSet<String>>,
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
    fn rooms(&self) -> MutexGuard<'_, HashSet<String>> {
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
            .filter(|room| self.seq_floors.floor(room) > 0)
            .cloned()
            .collect();
        let mut gaps = self.gaps();
        for room in rooms {
            gaps.entry(room).or_default();
        }
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
            PushKind::Message => {
                let mut data = push.data.into_iter();
                if let (Some(channel), Some(payload)) = (data.next(), data.next()) {
                    if let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) {
                        self.on_message(&channel, payload);
                    }
                }
            }
            PushKind::Subscribe => {
                if let Some(channel) = push.data.into_iter().next().and_then(bytes_of) {
                    self.on_subscribed(&channel);
                }
            }
            PushKind::Disconnection => {
                metrics::counter!(telemetry::RECONNECTS).increment(1);
                tracing::warn!("redis subscriber connection lost; reconnecting");
                self.health.set_subscribed(false);
                self.open_gaps();
                self.resync.store(true, Ordering::Release);
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
        if self.rooms().contains(room) || self.delivery.has_local_members(room) {
            return;
        }
        let _ = self.stray.try_send(room.to_string());
    }
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// The subscriber connection and the rooms it should be subscribed to.
pub struct Subscriber {
    manager: ConnectionManager,
    shared: Arc<Shared>,
    timeout: Duration,
    /// Serializes (un)subscription commands with the checks that decide
    /// them: a stray room's UNSUBSCRIBE must not overtake the SUBSCRIBE of
    /// a member that just arrived.
    ops: tokio::sync::Mutex<()>,
}

impl Subscriber {
    /// Creates the connection lazily: nothing is sent until the supervisor's
    /// first PING, so a node can start while Redis is down. Returns the
    /// subscriber and the queue of stray rooms for the supervisor.
    pub fn new(
        client: Client,
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
            rooms: Mutex::new(HashSet::new()),
            seq_floors: SeqFloors::default(),
            resync: AtomicBool::new(true),
            gaps: Mutex::new(HashMap::new()),
            gap_buffer,
            stray,
        });
        let sender = Arc::clone(&shared);
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                sender.on_push(push);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            // Never give up (the deaf-after-a-long-outage trap) but retry at
            // least every second, so recovery takes about a second.
            .set_number_of_retries(usize::MAX)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| BackplaneError::Internal(format!("redis subscriber: {e}")))?;
        Ok((
            Self {
                manager,
                shared,
                timeout,
                ops: tokio::sync::Mutex::new(()),
            },
            stray_rx,
        ))
    }

    /// Subscribes `room`'s channel; returns once Redis confirmed it.
    ///
    /// On failure the room is not wanted (the registry gives its reference
    /// back); should the SUBSCRIBE still reach Redis, its confirmation finds
    /// the room unwanted and undoes it.
    pub async fn subscribe_room(&self, room: &str) -> BackplaneResult<()> {
        let _ops = self.ops.lock().await;
        let added = self.shared.rooms().insert(room.to_string());
        if added {
            metrics::gauge!(telemetry::SUBSCRIPTIONS).increment(1.0);
        }
        let channel = self.shared.keys.room_channel(room);
        let result = self
            .command(|mut m| async move { m.subscribe(channel).await })
            .await;
        if result.is_err() && added && self.shared.rooms().remove(room) {
            metrics::gauge!(telemetry::SUBSCRIPTIONS).decrement(1.0);
        }
        result
    }

    /// Unsubscribes `room`'s channel. If Redis cannot be told now, the room
    /// is queued as stray: the supervisor retries, and a resubscription from
    /// the manager's tracker is undone when its confirmation arrives.
    pub async fn unsubscribe_room(&self, room: &str) -> BackplaneResult<()> {
        let _ops = self.ops.lock().await;
        if self.shared.rooms().remove(room) {
            metrics::gauge!(telemetry::SUBSCRIPTIONS).decrement(1.0);
        }
        self.shared.seq_floors.forget(room);
        self.shared.gaps().remove(room);
        let result = self
            .unsubscribe_channel(self.shared.keys.room_channel(room))
            .await;
        if result.is_err() {
            let _ = self.shared.stray.try_send(room.to_string());
        }
        result
    }

    /// The highest `seq` this node relayed in `room` (0 if none).
    pub fn seq_floor(&self, room: &str) -> u64 {
        self.shared.seq_floors.floor(room)
    }

    /// Unsubscribes a stray room unless it became wanted again. Returns
    /// `false` when Redis could not be told (try again later).
    pub async fn drop_stray(&self, room: &str) -> bool {
        let _ops = self.ops.lock().await;
        if self.shared.rooms().contains(room) || self.shared.delivery.has_local_members(room) {
            return true;
        }
        let channel = self.shared.keys.room_channel(room);
        self.unsubscribe_channel(channel).await.is_ok()
    }

    async fn unsubscribe_channel(&self, channel: String) -> BackplaneResult<()> {
        self.command(|mut m| async move { m.unsubscribe(channel).await })
            .await
    }

    /// One PING through the subscriber connection: keeps the manager
    /// reconnecting (see the module docs) and tells whether it is up.
    pub async fn ping(&self) -> BackplaneResult<()> {
        self.command(|mut m| async move {
            ::redis::cmd("PING")
                .query_async::<Value>(&mut m)
                .await
                .map(|_| ())
        })
        .await
    }

    /// After a disconnection (or at start): subscribes the base channels and
    /// every wanted room again. Returns `true` when a resubscription was
    /// needed and succeeded (the caller then checks presence right away).
    pub async fn resync_if_needed(&self) -> BackplaneResult<bool> {
        if !self.shared.resync.load(Ordering::Acquire) {
            return Ok(false);
        }
        let _ops = self.ops.lock().await;
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
                .map(|room| self.shared.keys.room_channel(room)),
        );
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            let batch = batch.to_vec();
            let result = self
                .command(|mut m| async move { m.subscribe(batch).await })
                .await;
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
            match super::seq_floor::message_seq(&frame) {
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

    /// Number of channels held: wanted rooms plus events and probe.
    pub fn wanted_rooms(&self) -> usize {
        self.shared.rooms().len()
    }

    async fn command<F, Fut>(&self, f: F) -> BackplaneResult<()>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<()>>,
    {
        match tokio::time::timeout(self.timeout, f(self.manager.clone())).await {
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
        fn has_local_members(&self, _: &str) -> bool {
            true
        }
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
            Client::open("redis://127.0.0.1:1/?protocol=resp3").unwrap(),
            keys,
            "n1",
            recorder.clone(),
            Arc::new(Health::new(Duration::from_secs(1))),
            Duration::from_millis(100),
            gap_buffer,
        )
        .unwrap();
        subscriber.shared.rooms().insert("r".into());
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
            .map(|f| super::super::seq_floor::message_seq(f).unwrap())
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

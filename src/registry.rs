//! This node's connections: who is logged in, who is in which room, and the
//! bounded queues that lead to their sockets.
//!
//! The backplane hands frames and events to the registry ([`Delivery`]); the
//! registry pushes them into per-connection queues with `try_send` and never
//! waits. A connection whose queue is full is a slow consumer: it is closed
//! with 4009 instead of slowing down its room (see [`crate::conn`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;

use crate::backplane::{Backplane, BackplaneResult, ClusterEvent, Delivery, LocalUser};
use crate::metrics as m;
use crate::protocol::{self, Frame, RoomStateReason};
use crate::shutdown::Shutdown;

pub use crate::conn::{ConnHandle, ConnId, Control, EvictReason};

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
}

pub struct Registry {
    members: RwLock<Members>,
    /// room → local references (members plus joins in progress); a room is
    /// subscribed exactly while it has one.
    subscriptions: Mutex<HashMap<String, usize>>,
    /// Serializes subscribe/unsubscribe so they reach the backplane in the
    /// order the counts changed.
    subscription_changes: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    shutdown: Arc<Shutdown>,
    /// This node's id, for [`ClusterEvent::Drain`] (set once at start).
    node_id: OnceLock<String>,
    /// This node's own traffic (the metrics are per process, which may hold
    /// several nodes in tests): the admin API's rates.
    messages_in: AtomicU64,
    frames_out: AtomicU64,
}

impl Registry {
    pub fn new(shutdown: Arc<Shutdown>) -> Arc<Self> {
        Arc::new(Self {
            members: RwLock::default(),
            subscriptions: Mutex::default(),
            subscription_changes: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            shutdown,
            node_id: OnceLock::new(),
            messages_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
        })
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

    /// Takes a reference on `room`'s subscription, subscribing on the first.
    /// Taken before a join so the new member misses nothing published after
    /// its join.
    pub async fn acquire_room(&self, backplane: &dyn Backplane, room: &str) -> BackplaneResult<()> {
        let _order = self.subscription_changes.lock().await;
        let first = {
            let mut subs = lock(&self.subscriptions);
            let count = subs.entry(room.to_string()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            if let Err(e) = backplane.subscribe(room).await {
                self.drop_reference(room);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gives back a reference taken by [`acquire_room`](Self::acquire_room),
    /// unsubscribing after the last. A failed unsubscribe is left to the
    /// backplane, which drops subscriptions with no local members.
    pub async fn release_room(&self, backplane: &dyn Backplane, room: &str) {
        let _order = self.subscription_changes.lock().await;
        if self.drop_reference(room) {
            if let Err(e) = backplane.unsubscribe(room).await {
                tracing::debug!(room, error = %e, "unsubscribe failed");
            }
        }
    }

    /// Returns whether it was the last reference.
    fn drop_reference(&self, room: &str) -> bool {
        let mut subs = lock(&self.subscriptions);
        match subs.get_mut(room) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                subs.remove(room);
                true
            }
            None => false,
        }
    }

    /// Records a logged-in user in `room` (or moves it there).
    pub fn enter(&self, user_key: &str, display_name: &str, room: &str, conn: &Arc<ConnHandle>) {
        let mut members = write(&self.members);
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

    fn broadcast_logged_in(&self, frame: Frame) {
        for session in read(&self.members).users.values() {
            session.conn.send(frame.clone());
        }
    }
}

fn remove_member(members: &mut Members, room: &str, id: ConnId) {
    if let Some(conns) = members.rooms.get_mut(room) {
        conns.remove(&id);
        if conns.is_empty() {
            members.rooms.remove(room);
        }
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
        let members = read(&self.members);
        if let Some(conns) = members.rooms.get(room) {
            for conn in conns.values() {
                conn.send(frame.clone());
            }
            metrics::counter!(m::FRAMES_OUT).increment(conns.len() as u64);
            self.frames_out
                .fetch_add(conns.len() as u64, Ordering::Relaxed);
        }
        metrics::histogram!(m::FANOUT_SECONDS).record(started.elapsed().as_secs_f64());
    }

    fn deliver_event(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::RoomState { room, reason } => {
                self.broadcast_logged_in(protocol::room_state(&room, reason));
            }
            ClusterEvent::RoomEvacuated { room, reason } => {
                let reason = if reason == RoomStateReason::Deleted {
                    EvictReason::Deleted
                } else {
                    EvictReason::Closed
                };
                if let Some(conns) = read(&self.members).rooms.get(&room) {
                    for conn in conns.values() {
                        conn.send_control(Control::Evicted {
                            room: room.clone(),
                            reason,
                        });
                    }
                }
            }
            ClusterEvent::Evict {
                room,
                user_key,
                banned,
            } => self.deliver_to_user(&user_key, |conn| {
                let reason = if banned {
                    EvictReason::Banned
                } else {
                    EvictReason::Kicked
                };
                conn.send_control(Control::Evicted { room, reason });
            }),
            ClusterEvent::Unbanned { room, user_key } => self.deliver_to_user(&user_key, |conn| {
                conn.send(protocol::room_state(&room, RoomStateReason::Unbanned));
            }),
            ClusterEvent::Shutdown { reason } => {
                tracing::info!("cluster-wide shutdown received");
                self.shutdown.trigger(reason, false);
            }
            ClusterEvent::Drain { node_id } => {
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

    fn has_local_members(&self, room: &str) -> bool {
        lock(&self.subscriptions).contains_key(room)
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
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

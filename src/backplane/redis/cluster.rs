//! Redis Cluster connection layer (issue 12): the seed list, the redis
//! crate's async cluster client on RESP3, and a sharded subscriber
//! (SSUBSCRIBE) that survives the three known traps:
//!
//! - **CROSSSLOT**: Redis refuses an SSUBSCRIBE whose channels span slots,
//!   and the crate's own resubscription may send one command for all of a
//!   node's channels. We never do: [`ShardedSubscriber::subscribe`] sends one
//!   SSUBSCRIBE per slot, and every resync re-sends per slot.
//! - **Slot migration**: the server pushes an unsolicited `sunsubscribe`
//!   for channels of a moved slot, and the crate neither refreshes nor
//!   resubscribes. We subscribe those channels again (the crate follows the
//!   MOVED reply and refreshes its slot map) and report a [`ShardEvent::Gap`].
//! - **Failover**: a promoted replica sends nothing (redis#12558); the crate
//!   pushes `Disconnection` for the dead primary. We then resync every
//!   wanted channel, retrying every `resync_interval` until it succeeds
//!   (the replica is promoted after `cluster-node-timeout`), and report a
//!   [`ShardEvent::Gap`] so the caller fills the gap from history.
//!
//! Pushes reach us through a bounded queue (`push_buffer`); when it is full
//! pushes are dropped, and the next event is a [`ShardEvent::Gap`] for
//! every channel (the caller reads history), never unbounded memory.
//!
//! Not yet wired into [`super::RedisBackplane`]: see the issue 12 report.
//!
//! Global state decision (recorded here for the wiring): names, the room
//! registry, node presence and the events channel stay under the single
//! `{global}` hash tag. They are written per login, join/leave and
//! heartbeat, not per message, so one slot carries them; messages and
//! history are per room (`{room}`), spread over all shards. The alternative
//! (centrifuge's: N partitions with precomputed tags, one SSUBSCRIBE per
//! partition) bounds subscriptions per shard but turns "is this name free"
//! and "list rooms" into N-slot scatter/gathers; not worth it at per-login
//! load.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

/// Errors of the cluster connection layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `redis.url` holds no seed node.
    #[error("redis.url lists no Redis Cluster seed node")]
    NoSeeds,
    /// A Redis error (connect, SSUBSCRIBE, ...).
    #[error("redis cluster: {0}")]
    Redis(#[from] redis::RedisError),
    /// A call did not finish within the command timeout.
    #[error("redis cluster: timed out after {0:?}")]
    Timeout(Duration),
}

/// Seed nodes from `redis.url`: comma-separated URLs, blanks ignored.
pub fn seed_urls(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Limits of a [`ShardedSubscriber`].
#[derive(Debug, Clone)]
pub struct ShardedSubscriberConfig {
    /// Pushes queued between the connection and [`ShardedSubscriber::next_event`];
    /// beyond it pushes are dropped and a [`ShardEvent::Gap`] follows.
    pub push_buffer: usize,
    /// Bound on connecting and on each SSUBSCRIBE.
    pub command_timeout: Duration,
    /// Retry interval of a resync after a disconnection (failover).
    pub resync_interval: Duration,
}

impl Default for ShardedSubscriberConfig {
    fn default() -> Self {
        ShardedSubscriberConfig {
            push_buffer: 65_536,
            command_timeout: Duration::from_secs(2),
            resync_interval: Duration::from_millis(250),
        }
    }
}

/// What the subscriber hands to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// A message on a subscribed channel.
    Message { channel: String, payload: Vec<u8> },
    /// Messages on these channels may have been missed (migration,
    /// failover, push queue overflow); they are subscribed again now, so
    /// reading history from the last seen offset closes the gap.
    Gap { channels: Vec<String> },
}

/// One cluster connection holding the node's sharded subscriptions.
pub struct ShardedSubscriber {
    conn: ClusterConnection,
    wanted: BTreeSet<String>,
    pushes: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    resync_pending: bool,
    config: ShardedSubscriberConfig,
}

impl ShardedSubscriber {
    /// Connects to the cluster through `seeds` (RESP3, bounded push queue).
    pub async fn connect(
        seeds: &[String],
        config: ShardedSubscriberConfig,
    ) -> Result<ShardedSubscriber, ClusterError> {
        if seeds.is_empty() {
            return Err(ClusterError::NoSeeds);
        }
        let (tx, rx) = mpsc::channel(config.push_buffer.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (o, d) = (overflowed.clone(), dropped.clone());
        let sender = move |info: PushInfo| -> Result<(), ()> {
            // Only the kinds `on_push` acts on take queue space (subscribe
            // confirmations would otherwise crowd out messages).
            if !matches!(
                info.kind,
                PushKind::SMessage | PushKind::SUnsubscribe | PushKind::Disconnection
            ) {
                return Ok(());
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(info) {
                o.store(true, Ordering::Release);
                d.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let client = ClusterClientBuilder::new(seeds.to_vec())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sender)
            .connection_timeout(config.command_timeout)
            .response_timeout(config.command_timeout)
            .build()?;
        let conn = tokio::time::timeout(config.command_timeout, client.get_async_connection())
            .await
            .map_err(|_| ClusterError::Timeout(config.command_timeout))??;
        Ok(ShardedSubscriber {
            conn,
            wanted: BTreeSet::new(),
            pushes: rx,
            overflowed,
            dropped,
            resync_pending: false,
            config,
        })
    }

    /// Pushes dropped because the queue was full, since start.
    pub fn dropped_pushes(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The channels this subscriber keeps subscribed.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.wanted.iter().map(String::as_str)
    }

    /// Subscribes `channels`: one SSUBSCRIBE per hash slot (never one
    /// across slots: CROSSSLOT). They stay wanted even if this fails, so a
    /// later resync retries them.
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<(), ClusterError> {
        self.wanted.extend(channels.iter().cloned());
        self.ssubscribe_per_slot(channels.to_vec()).await
    }

    /// Unsubscribes `channels` (one SUNSUBSCRIBE per slot).
    pub async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), ClusterError> {
        for c in channels {
            self.wanted.remove(c);
        }
        for group in by_slot(channels.to_vec()).into_values() {
            let t = self.config.command_timeout;
            tokio::time::timeout(t, self.conn.sunsubscribe(&group))
                .await
                .map_err(|_| ClusterError::Timeout(t))??;
        }
        Ok(())
    }

    async fn ssubscribe_per_slot(&mut self, channels: Vec<String>) -> Result<(), ClusterError> {
        for group in by_slot(channels).into_values() {
            let t = self.config.command_timeout;
            tokio::time::timeout(t, self.conn.ssubscribe(&group))
                .await
                .map_err(|_| ClusterError::Timeout(t))??;
        }
        Ok(())
    }

    /// Next message or gap. Handles migration pushes, disconnections and
    /// queue overflow internally (see the module docs). `None` when the
    /// connection's push side is gone for good.
    pub async fn next_event(&mut self) -> Option<ShardEvent> {
        loop {
            if self.overflowed.swap(false, Ordering::AcqRel) {
                // Pushes were lost: resync everything and report all.
                self.resync_pending = true;
            }
            if self.resync_pending {
                let all: Vec<String> = self.wanted.iter().cloned().collect();
                match self.ssubscribe_per_slot(all.clone()).await {
                    Ok(()) => {
                        self.resync_pending = false;
                        return Some(ShardEvent::Gap { channels: all });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "sharded resync failed; retrying");
                        // Keep draining pushes meanwhile (messages of other
                        // shards still flow), then retry.
                        let sleep = tokio::time::sleep(self.config.resync_interval);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                _ = &mut sleep => break,
                                push = self.pushes.recv() => {
                                    let push = push?;
                                    if let Some(ev) = self.on_push(push).await {
                                        return Some(ev);
                                    }
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            let push = self.pushes.recv().await?;
            if let Some(ev) = self.on_push(push).await {
                return Some(ev);
            }
        }
    }

    async fn on_push(&mut self, push: PushInfo) -> Option<ShardEvent> {
        match push.kind {
            PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let channel = bytes(data.next()?)?;
                let payload = data.next().and_then(|v| match v {
                    Value::BulkString(b) => Some(b),
                    _ => None,
                })?;
                Some(ShardEvent::Message {
                    channel: String::from_utf8_lossy(&channel).into_owned(),
                    payload,
                })
            }
            PushKind::SUnsubscribe => {
                // Unsolicited when the channel is still wanted: its slot
                // moved. Subscribe again (at the new owner).
                let channel =
                    String::from_utf8_lossy(&bytes(push.data.into_iter().next()?)?).into_owned();
                if !self.wanted.contains(&channel) {
                    return None;
                }
                match self.ssubscribe_per_slot(vec![channel.clone()]).await {
                    Ok(()) => Some(ShardEvent::Gap {
                        channels: vec![channel],
                    }),
                    Err(e) => {
                        tracing::debug!(error = %e, "resubscribe after sunsubscribe failed");
                        self.resync_pending = true;
                        None
                    }
                }
            }
            PushKind::Disconnection => {
                self.resync_pending = true;
                None
            }
            _ => None,
        }
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Channels grouped by hash slot (ordered by first channel, deterministic).
fn by_slot(channels: Vec<String>) -> BTreeMap<String, Vec<String>> {
    let mut slots: Vec<(Slot, Vec<String>)> = Vec::new();
    for c in channels {
        let slot = Slot::for_key(c.as_bytes());
        match slots.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, v)) => v.push(c),
            None => slots.push((slot, vec![c])),
        }
    }
    slots.into_iter().map(|(_, v)| (v[0].clone(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_comma_separated_and_trimmed() {
        assert_eq!(
            seed_urls(" redis://a:1, redis://b:2 ,,"),
            vec!["redis://a:1".to_string(), "redis://b:2".to_string()]
        );
        assert!(seed_urls(" , ").is_empty());
    }

    #[test]
    fn channels_are_grouped_one_slot_per_group() {
        let chans: Vec<String> = ["room:{a}", "x:{a}", "room:{b}", "room:{c}", "y:{b}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let groups = by_slot(chans);
        assert_eq!(groups.len(), 3);
        for g in groups.values() {
            let s = Slot::for_key(g[0].as_bytes());
            assert!(g.iter().all(|c| Slot::for_key(c.as_bytes()) == s), "{g:?}");
        }
        assert_eq!(groups["room:{a}"], vec!["room:{a}", "x:{a}"]);
    }
}

//! Deleting rooms that stayed empty (`limits.empty_room_ttl_secs`,
//! PROTOCOL.md "Ownership"): every node sweeps periodically; the backplane
//! deletes each due room once cluster-wide and tells the sweeping node,
//! which announces it as `\delete` does (ROOM_STATE `deleted`).

use std::sync::Arc;
use std::time::Duration;

use super::Chat;
use crate::backplane::ClusterEvent;
use crate::protocol::RoomStateReason;

/// Rooms one backplane call deletes at most: bounds each step's work.
const ROOMS_PER_CALL: usize = 100;
/// Calls in one sweep at most; what is left waits for the next sweep.
const CALLS_PER_SWEEP: usize = 10;

/// How often a node sweeps for `ttl`: half of it, within 100 ms .. 60 s.
pub(crate) fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Starts the sweeper unless `limits.empty_room_ttl_secs` is 0. It stops
/// when the node shuts down.
pub(crate) fn start(chat: &Arc<Chat>) {
    let ttl_secs = chat.config.limits.empty_room_ttl_secs;
    if ttl_secs == 0 {
        return;
    }
    let ttl = Duration::from_secs(ttl_secs);
    let chat = Arc::clone(chat);
    let stopping = chat.shutdown.token().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_interval(ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = tick.tick() => sweep(&chat, ttl).await,
            }
        }
    });
}

/// One sweep: deletes due rooms in bounded steps and announces each.
async fn sweep(chat: &Chat, ttl: Duration) {
    let default_room = &chat.config.server.default_room;
    for _ in 0..CALLS_PER_SWEEP {
        let deleted = match chat
            .backplane
            .expire_empty_rooms(default_room, ttl, ROOMS_PER_CALL)
            .await
        {
            Ok(deleted) => deleted,
            Err(error) => {
                tracing::debug!(%error, "could not sweep empty rooms");
                return;
            }
        };
        for room in &deleted {
            tracing::info!(room, "deleted a room that stayed empty");
            let event = ClusterEvent::RoomState {
                room: room.clone(),
                reason: RoomStateReason::Deleted,
            };
            if let Err(error) = chat.backplane.publish_event(&event).await {
                tracing::warn!(%error, room, "could not announce an expired room");
            }
        }
        if deleted.len() < ROOMS_PER_CALL {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_half_the_ttl_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }
}

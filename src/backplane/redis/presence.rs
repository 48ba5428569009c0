//! Presence: this node's heartbeat, the reaper of dead nodes, and writing
//! the node's users back when Redis lost them.
//!
//! - Every `heartbeat_secs` the node renews its entry in `P:nodes` (Redis
//!   server time). The same script makes sure the default room exists and
//!   reports whether this process's registration marker is still there and
//!   the dataset's epoch.
//! - Marker missing: Redis lost the node's presence (restarted empty, or
//!   another node presumed this one dead after a long partition and reaped
//!   it). The node writes back `Delivery::local_users()`: names, memberships,
//!   its user list. If the epoch changed too, Redis lost everything: rooms
//!   its users are in are recreated. If not, a missing room was deleted
//!   while this node could not hear it: its local members are evacuated as
//!   if the RoomEvacuated event had arrived.
//! - After each heartbeat, nodes whose heartbeat is older than
//!   `node_ttl_secs` are reaped, by whichever node gets there first (the
//!   scripts are atomic, so several reapers do no harm). With the defaults
//!   (5 s, 15 s) a kill -9'd node's users are gone within 15–20 s.
//! - Presence notices: the sessions of a dead node cannot announce that its
//!   users left, so whoever takes a user out of a room on its behalf does:
//!   the reaper that removed it (each removal is reported by exactly one
//!   script run, so with several reapers each `left` goes out once), or the
//!   node whose login took the name over before any reaper ran. A node that
//!   was reaped while alive and writes its users back announces them as
//!   `joined` again. Rooms above `limits.presence_notice_max_members` get
//!   none, as with the sessions' own notices. Like the sessions' notices,
//!   these are published after the change: if the publishing node loses
//!   Redis or dies in between, they are lost (at most once).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;

use super::scripts::{self, Reaped};
use super::{cmd, int, random_token, telemetry, text, Call, Inner};
use crate::backplane::{BackplaneResult, ClusterEvent, LocalUser};
use crate::protocol::{self, NoticeCode, RoomStateReason};

/// Users per re-registration script, so one script stays short.
const REREGISTER_BATCH: usize = 200;
/// Users removed per reaping script.
const REAP_BATCH: usize = 500;
/// Dead nodes looked at per reaper round.
const DEAD_NODES_PER_ROUND: usize = 16;
/// Upper bound on reaping scripts for one node (`REAP_BATCH` each): a node
/// with more users is finished in the next round.
const REAP_ROUNDS: usize = 1000;
/// Retry delay of the heartbeat after a failure (instead of the interval).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A joined/left NOTICE owed to a room because a script changed a
/// membership on behalf of a session that cannot announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PresenceNotice {
    code: NoticeCode,
    room: String,
    name: String,
    /// The room's members counted with the user in (before it left, after
    /// it joined): what the session's own announcement compares with
    /// `limits.presence_notice_max_members`.
    members: u64,
}

impl PresenceNotice {
    /// The frame the session would have published (`chat::session`'s
    /// `announce`).
    fn frame(&self) -> protocol::Frame {
        protocol::presence_notice(self.code == NoticeCode::Joined, &self.name, &self.room)
    }
}

/// Parses the `code, room, display, members` quadruples of a script reply
/// (see `scripts.rs`). A malformed entry is a bug, logged and skipped: the
/// change it reports is already made and must not fail the caller.
pub(super) fn notices(values: &[Value]) -> Vec<PresenceNotice> {
    let parsed: Option<Vec<PresenceNotice>> = values
        .chunks(4)
        .map(|entry| {
            let [code, room, name, members] = entry else {
                return None;
            };
            let code = match text(code)?.as_str() {
                "joined" => NoticeCode::Joined,
                "left" => NoticeCode::Left,
                _ => return None,
            };
            Some(PresenceNotice {
                code,
                room: text(room)?,
                name: text(name)?,
                members: int(members)?.max(0) as u64,
            })
        })
        .collect();
    parsed.unwrap_or_else(|| {
        tracing::error!(reply = ?values, "unreadable presence notices from a script");
        Vec::new()
    })
}

impl Inner {
    /// Heartbeat and reaper, until cancelled. Runs at once when the
    /// subscriber recovers, so presence is back within a second of Redis.
    pub(super) async fn presence_loop(self: Arc<Self>) {
        loop {
            let wait = match self.heartbeat().await {
                Ok(()) => {
                    if let Err(e) = self.reap_dead().await {
                        tracing::debug!(error = %e, "reaping dead nodes failed");
                    }
                    if self.needs_reconcile.swap(false, Ordering::AcqRel) {
                        if let Err(e) = self.reconcile().await {
                            self.needs_reconcile.store(true, Ordering::Release);
                            tracing::debug!(error = %e, "reconciling names failed");
                        }
                    }
                    self.settings.heartbeat
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed");
                    RETRY_AFTER_FAILURE
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.recovered_presence.notified() => {}
            }
        }
    }

    /// Renews the heartbeat; re-registers when Redis lost this node.
    async fn heartbeat(&self) -> BackplaneResult<()> {
        let beat = scripts::heartbeat(
            self,
            &self.keys,
            &self.node_id,
            &self.token,
            &self.settings.default_room,
            &random_token(),
        )
        .await?;
        // The default room's gate (message slot): made again if Redis (or
        // the shard owning it) lost it. One small script per heartbeat.
        self.room_data(
            &self.settings.default_room,
            scripts::RoomData::Ensure,
            &beat.default_room_epoch,
        )
        .await?;
        let (epoch, registered) = (beat.epoch, beat.registered);
        let known = self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lost = known.as_deref() != Some(epoch.as_str());
        if registered && !lost {
            self.health.set_registered(true);
            return Ok(());
        }
        self.health.set_registered(false);
        // `known` is None at start: "lost" then only means "nothing to
        // keep", and there are no local users yet.
        if known.is_some() {
            tracing::warn!(
                node = %self.node_id,
                redis_lost_data = lost,
                "redis lost this node's presence; registering its users again"
            );
        }
        self.reregister(lost).await?;
        // Whatever Redis still lists for this node beyond its users goes.
        self.needs_reconcile.store(true, Ordering::Release);
        // Only now: if re-registering fails half-way, the next heartbeat
        // must still know that the data was lost.
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = Some(epoch);
        self.health.set_registered(true);
        Ok(())
    }

    /// Writes this node's connected users back, in batches; the last batch
    /// sets the registration marker.
    async fn reregister(&self, lost: bool) -> BackplaneResult<()> {
        let mut users = self.delivery.local_users();
        // Logins in progress (claimed, not yet in the registry): their names
        // only, marked by an empty display name.
        let pending: Vec<LocalUser> = {
            let local: HashSet<&str> = users.iter().map(|u| u.user_key.as_str()).collect();
            self.claims()
                .iter()
                .filter(|key| !local.contains(key.as_str()))
                .map(|key| LocalUser {
                    user_key: key.clone(),
                    display_name: String::new(),
                    room: String::new(),
                })
                .collect()
        };
        users.extend(pending);
        let mut gone = Vec::new();
        let mut conflicts = 0;
        let batches: Vec<&[LocalUser]> = if users.is_empty() {
            vec![&[]]
        } else {
            users.chunks(REREGISTER_BATCH).collect()
        };
        let last = batches.len() - 1;
        let epoch = super::new_epoch();
        for (i, batch) in batches.into_iter().enumerate() {
            let batch = scripts::ReregisterBatch {
                node: &self.node_id,
                token: &self.token,
                lost,
                last: i == last,
                ttl_ms: self.ttl_ms(),
                epoch: &epoch,
                users: batch,
            };
            let reply = scripts::reregister(self, &self.keys, &batch).await?;
            for room in &reply.created {
                self.room_data(room, scripts::RoomData::Ensure, &epoch)
                    .await?;
            }
            for user_key in &reply.conflicts {
                // Issue 9, 5a: the name is someone else's now.
                self.delivery.name_lost(user_key);
            }
            conflicts += reply.conflicts.len();
            gone.extend(reply.gone);
            self.announce(&reply.notices).await;
        }
        metrics::counter!(telemetry::REREGISTERED).increment(users.len() as u64);
        if conflicts > 0 {
            metrics::counter!(telemetry::NAME_CONFLICTS).increment(conflicts as u64);
            tracing::warn!(
                conflicts,
                "names taken by other nodes meanwhile; their connections here are closed"
            );
        }
        gone.sort_unstable();
        gone.dedup();
        for room in gone {
            tracing::info!(room = %room, "room deleted while this node could not hear it; evacuating");
            self.delivery.deliver_event(ClusterEvent::RoomState {
                room: room.clone(),
                reason: RoomStateReason::Deleted,
            });
            self.delivery.deliver_event(ClusterEvent::RoomEvacuated {
                room,
                reason: RoomStateReason::Deleted,
            });
        }
        Ok(())
    }

    /// Removes names Redis lists for this node that no connection of it
    /// holds any more (their release failed while Redis was away and Redis
    /// kept its data): otherwise they would stay taken as long as this node
    /// lives.
    async fn reconcile(&self) -> BackplaneResult<()> {
        let _gate = self.claim_gate.write().await;
        let mut keys = cmd("HKEYS");
        keys.arg(self.keys.node_users(&self.node_id));
        let listed = self
            .run::<Vec<String>>("reconcile", Call::Cmd(keys))
            .await?;
        let leftovers: Vec<String> = {
            let claims = self.claims();
            listed
                .into_iter()
                .filter(|key| !claims.contains(key))
                .collect()
        };
        for user in &leftovers {
            scripts::release(self, &self.keys, &self.node_id, user, None).await?;
        }
        if !leftovers.is_empty() {
            tracing::info!(
                names = leftovers.len(),
                "released names left over from an outage"
            );
        }
        Ok(())
    }

    /// Reaps nodes whose heartbeat expired (except this one).
    async fn reap_dead(&self) -> BackplaneResult<()> {
        let dead =
            scripts::dead_nodes(self, &self.keys, self.ttl_ms(), DEAD_NODES_PER_ROUND).await?;
        for node in dead.iter().filter(|node| **node != self.node_id) {
            if self.reap_node(node, true).await? {
                metrics::counter!(telemetry::REAPED_NODES).increment(1);
                tracing::info!(dead_node = %node, "reaped the users of a dead node");
            }
        }
        Ok(())
    }

    /// Removes a node's users (names, memberships), its heartbeat and its
    /// marker. With `only_if_dead`, stops if the node turns out alive.
    /// Returns whether the node was removed completely.
    pub(super) async fn reap_node(&self, node: &str, only_if_dead: bool) -> BackplaneResult<bool> {
        let mut cursor = "0".to_string();
        for _ in 0..REAP_ROUNDS {
            let reply = scripts::reap_node(
                self,
                &self.keys,
                node,
                &cursor,
                REAP_BATCH,
                only_if_dead,
                self.ttl_ms(),
            )
            .await?;
            match reply {
                Reaped::Alive => return Ok(false),
                Reaped::Batch {
                    remaining,
                    cursor: next,
                    notices,
                } => {
                    self.announce(&notices).await;
                    if remaining == 0 {
                        return Ok(true);
                    }
                    cursor = next;
                }
            }
        }
        Ok(false)
    }

    /// Publishes the notices of rooms small enough for them, in one
    /// pipeline (a script reply holds at most one batch of users). Best
    /// effort, like the sessions' own notices: a failure is logged.
    pub(super) async fn announce(&self, notices: &[PresenceNotice]) {
        let max = self.settings.presence_notice_max_members;
        // The one rule of when joined/left is announced is the chat rules'.
        let frames: Vec<(String, protocol::Frame)> = notices
            .iter()
            .filter(|n| crate::chat::presence::announces(n.members, max))
            .map(|notice| (self.keys.room_channel(&notice.room), notice.frame()))
            .collect();
        let count = frames.len() as u64;
        if count == 0 {
            return;
        }
        let published = match self.publish_command {
            // One pipeline: one round trip.
            scripts::PublishCommand::Publish => {
                let mut pipe = ::redis::pipe();
                for (channel, frame) in &frames {
                    pipe.cmd("PUBLISH")
                        .arg(channel)
                        .arg(frame.as_str())
                        .ignore();
                }
                self.run::<()>("presence_notices", Call::Pipe(pipe)).await
            }
            // The rooms' channels sit in different slots (a pipeline must
            // not span slots): one SPUBLISH each, concurrently.
            scripts::PublishCommand::SPublish => {
                futures_util::future::try_join_all(frames.iter().map(|(channel, frame)| {
                    self.publish("presence_notices", channel, frame.as_str().as_bytes())
                }))
                .await
                .map(|_| ())
            }
        };
        match published {
            Ok(()) => metrics::counter!(telemetry::PRESENCE_NOTICES).increment(count),
            Err(e) => {
                tracing::warn!(error = %e, notices = count, "could not publish presence notices")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn notices_parse_and_build_the_sessions_frames() {
        let reply = [
            bulk("left"),
            bulk("doomroom"),
            bulk("DoomA"),
            Value::Int(3),
            bulk("joined"),
            bulk("general"),
            bulk("Back.Again"),
            Value::Int(1),
        ];
        let parsed = notices(&reply);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].members, 3);
        assert_eq!(
            parsed[0].frame().as_str(),
            r#"{"op":7,"d":{"code":"left","error":false,"message":"DoomA left doomroom.","room":"doomroom","user":"DoomA"}}"#
        );
        assert_eq!(
            parsed[1].frame().as_str(),
            r#"{"op":7,"d":{"code":"joined","error":false,"message":"Back.Again joined general.","room":"general","user":"Back.Again"}}"#
        );
        assert!(notices(&[]).is_empty());
    }

    #[test]
    fn malformed_notices_are_skipped() {
        assert!(notices(&[bulk("left"), bulk("room")]).is_empty());
        assert!(notices(&[bulk("kicked"), bulk("r"), bulk("u"), Value::Int(1)]).is_empty());
    }
}

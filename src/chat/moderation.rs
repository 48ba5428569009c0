//! Owner and admin commands (lock, unlock, close, open, delete, kick, ban,
//! unban, shutdown) and the shutdown payload. Permissions are checked by
//! dispatch from the command table before these run.

use super::commands::Checked;
use super::replies::Refusal;
use super::session::{Flow, Session};
use crate::backplane::{password_hash, ClusterEvent, RoomChange};
use crate::protocol::{close, user_key, NoticeCode, RoomStateReason, ShutdownRequest};

impl Session {
    pub(super) async fn cmd_lock(&mut self, checked: Checked) -> Result<(), Refusal> {
        let room = self.current_room();
        let password = checked.invocation.arg(0).unwrap_or_default();
        let password_hash = password_hash(&room, password);
        self.change_own_room(RoomChange::Lock { password_hash })
            .await
    }

    pub(super) async fn cmd_unlock(&mut self, _: Checked) -> Result<(), Refusal> {
        self.change_own_room(RoomChange::Unlock).await
    }

    pub(super) async fn cmd_close(&mut self, _: Checked) -> Result<(), Refusal> {
        self.change_own_room(RoomChange::Close).await
    }

    pub(super) async fn cmd_delete(&mut self, _: Checked) -> Result<(), Refusal> {
        self.change_own_room(RoomChange::Delete).await
    }

    /// Lock, unlock, close or delete the user's current room.
    async fn change_own_room(&mut self, change: RoomChange) -> Result<(), Refusal> {
        let room = self.current_room();
        let (reason, evacuate, done) = match &change {
            RoomChange::Lock { .. } => (RoomStateReason::Locked, false, "locked"),
            RoomChange::Unlock => (RoomStateReason::Unlocked, false, "unlocked"),
            RoomChange::Close => (RoomStateReason::Closed, true, "closed"),
            RoomChange::Delete => (RoomStateReason::Deleted, true, "deleted"),
            RoomChange::Open => (RoomStateReason::Opened, false, "opened"),
        };
        if !self.chat.backplane.change_room(&room, change).await? {
            return Err(Refusal::no_such_room(&room));
        }
        self.info(&format!("Room {room} {done}."));
        self.publish_room_state(&room, reason).await;
        if evacuate {
            let event = ClusterEvent::RoomEvacuated {
                room: room.clone(),
                reason,
            };
            self.chat.backplane.publish_event(&event).await?;
        }
        Ok(())
    }

    pub(super) async fn cmd_open(&mut self, checked: Checked) -> Result<(), Refusal> {
        let room = checked.invocation.arg(0).unwrap_or_default();
        if checked.room.as_ref().is_some_and(|info| !info.closed) {
            self.info(&format!("Room {room} is not closed."));
            return Ok(());
        }
        if !self
            .chat
            .backplane
            .change_room(room, RoomChange::Open)
            .await?
        {
            return Err(Refusal::no_such_room(room));
        }
        self.info(&format!("Room {room} opened."));
        self.publish_room_state(room, RoomStateReason::Opened).await;
        Ok(())
    }

    pub(super) async fn cmd_kick(&mut self, checked: Checked) -> Result<(), Refusal> {
        self.evict(checked.invocation.arg(0).unwrap_or_default(), false)
            .await
    }

    pub(super) async fn cmd_ban(&mut self, checked: Checked) -> Result<(), Refusal> {
        self.evict(checked.invocation.arg(0).unwrap_or_default(), true)
            .await
    }

    async fn evict(&mut self, target: &str, ban: bool) -> Result<(), Refusal> {
        let room = self.current_room();
        let target_key = user_key(target);
        if target_key == self.user().key {
            return Err(Refusal::new(
                NoticeCode::BadArguments,
                format!("You cannot {} yourself.", if ban { "ban" } else { "kick" }),
            ));
        }
        if ban {
            self.chat
                .backplane
                .set_ban(&room, &target_key, true)
                .await?;
        } else if !self.chat.backplane.is_member(&room, &target_key).await? {
            return Err(Refusal::new(
                NoticeCode::BadArguments,
                format!("{target} is not in {room}."),
            ));
        }
        let event = ClusterEvent::Evict {
            room: room.clone(),
            user_key: target_key,
            banned: ban,
        };
        self.chat.backplane.publish_event(&event).await?;
        let verb = if ban { "banned from" } else { "kicked from" };
        self.info(&format!("{target} was {verb} {room}."));
        Ok(())
    }

    pub(super) async fn cmd_unban(&mut self, checked: Checked) -> Result<(), Refusal> {
        let room = self.current_room();
        let target = checked.invocation.arg(0).unwrap_or_default();
        let target_key = user_key(target);
        if !self
            .chat
            .backplane
            .set_ban(&room, &target_key, false)
            .await?
        {
            self.info(&format!("{target} was not banned from {room}."));
            return Ok(());
        }
        let event = ClusterEvent::Unbanned {
            room: room.clone(),
            user_key: target_key,
        };
        self.chat.backplane.publish_event(&event).await?;
        self.info(&format!("{target} was unbanned from {room}."));
        Ok(())
    }

    pub(super) async fn cmd_shutdown(&mut self, checked: Checked) -> Result<(), Refusal> {
        tracing::info!("cluster-wide shutdown requested by an admin");
        let reason = checked.invocation.arg(0).map(str::to_string);
        self.publish_shutdown(reason).await
    }

    /// The SHUTDOWN payload (op 3): the key, or `forbidden`; enough wrong
    /// keys close with 4003.
    pub(super) async fn on_shutdown_request(&mut self, request: ShutdownRequest) -> Flow {
        // Node-wide backoff; the guard logs every attempt with actor and peer.
        let actor = self
            .user
            .as_ref()
            .map_or("-", |u| u.name.as_str())
            .to_owned();
        let check = self.chat.shutdown.key_guard.check(
            &self.chat.config.admin.shutdown_key,
            &request.key,
            std::time::Duration::from_millis(self.chat.config.limits.shutdown_key_backoff_ms),
            &actor,
            self.conn.peer,
        );
        if check.await == crate::auth::KeyCheck::Accepted {
            tracing::info!(actor, peer = %self.conn.peer, "cluster-wide shutdown requested with the shutdown key");
            let result = self.publish_shutdown(request.reason).await;
            return self.answer(result);
        }
        self.wrong_keys += 1;
        tracing::warn!(
            actor,
            peer = %self.conn.peer,
            attempt = self.wrong_keys,
            "shutdown payload with a wrong key"
        );
        self.notice(NoticeCode::Forbidden, "Wrong shutdown key.");
        if self.wrong_keys >= self.chat.config.limits.shutdown_key_attempts {
            Flow::Close(close::AUTH_FAILED, "too many wrong shutdown keys")
        } else {
            Flow::Continue
        }
    }

    async fn publish_shutdown(&mut self, reason: Option<String>) -> Result<(), Refusal> {
        self.chat
            .backplane
            .publish_event(&ClusterEvent::Shutdown { reason })
            .await?;
        Ok(())
    }
}

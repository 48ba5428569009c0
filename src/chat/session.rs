//! One connection's chat session: its login state, room, counters, and the
//! handling of every client payload, command and control event.
//!
//! The session answers through its connection's bounded queue
//! ([`ConnHandle::send`]); it never writes to the socket itself. A failed
//! backplane call is answered with NOTICE `unavailable` and changes nothing
//! locally.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::commands::{self, Command, CommandError};
use super::rate::{TokenBucket, WindowCounter};
use super::Chat;
use crate::auth::secret_matches;
use crate::backplane::{
    password_hash, BackplaneError, ClusterEvent, JoinOutcome, JoinRequest, RoomChange, RoomInfo,
};
use crate::config::AuthMode;
use crate::metrics as m;
use crate::protocol::{
    self, close, normalize_room_name, parse_client_frame, user_key, valid_user_name, ClientPayload,
    MessageCreate, MessageDraft, NoticeCode, ParseError, RoomStateReason, ShutdownRequest,
};
use crate::registry::{ConnHandle, Control, EvictReason};

/// What the connection should do after a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(u16, &'static str),
}

/// Answers a backplane failure with a NOTICE and leaves the handler.
macro_rules! try_backplane {
    ($self:ident, $call:expr) => {
        match $call.await {
            Ok(value) => value,
            Err(error) => {
                $self.backplane_error(&error);
                return Flow::Continue;
            }
        }
    };
}

struct User {
    key: String,
    name: String,
    room: String,
    admin: bool,
}

pub struct Session {
    chat: Arc<Chat>,
    conn: Arc<ConnHandle>,
    user: Option<User>,
    login_failures: u32,
    wrong_keys: u32,
    bad_payloads: WindowCounter,
    bucket: TokenBucket,
    /// CACHE_REQUEST costs a cluster-wide read, so it has a bucket of its
    /// own (same rate and burst) rather than sharing the message bucket.
    cache_bucket: TokenBucket,
    rate_limited: WindowCounter,
}

impl Session {
    pub fn new(chat: Arc<Chat>, conn: Arc<ConnHandle>) -> Self {
        let limits = &chat.config.limits;
        let window = Duration::from_secs(limits.flood_window_secs);
        Self {
            bad_payloads: WindowCounter::new(window, limits.bad_payload_max),
            bucket: TokenBucket::new(limits.messages_per_second, limits.message_burst),
            cache_bucket: TokenBucket::new(limits.messages_per_second, limits.message_burst),
            rate_limited: WindowCounter::new(window, limits.flood_max_limited),
            chat,
            conn,
            user: None,
            login_failures: 0,
            wrong_keys: 0,
        }
    }

    pub fn is_logged_in(&self) -> bool {
        self.user.is_some()
    }

    /// A text frame from the client.
    pub async fn on_text(&mut self, text: &str) -> Flow {
        match parse_client_frame(text) {
            Err(ParseError::BadPayload(why)) => self.bad_payload(&why),
            Err(ParseError::UnknownOp(op)) => {
                self.notice(NoticeCode::UnknownOp, &format!("Unknown op {op}."));
                Flow::Continue
            }
            Ok(ClientPayload::MessageCreate(create)) => self.on_message_create(create).await,
            Ok(ClientPayload::Identify(identify)) => {
                if self.user.is_some() {
                    self.notice(NoticeCode::AlreadyLoggedIn, "You are already logged in.");
                    return Flow::Continue;
                }
                self.login(
                    &identify.name,
                    identify.token.as_deref(),
                    identify.room.as_deref(),
                    identify.password.as_deref(),
                )
                .await
            }
            Ok(ClientPayload::CacheRequest) => {
                if self.user.is_none() {
                    self.notice(NoticeCode::NotLoggedIn, "Log in first.");
                    return Flow::Continue;
                }
                if !self.cache_bucket.try_take(Instant::now()) {
                    return self.rate_limited();
                }
                self.send_cache_update().await;
                Flow::Continue
            }
            Ok(ClientPayload::Shutdown(request)) => self.on_shutdown_request(request).await,
            Ok(ClientPayload::HistoryRequest(request)) => self.on_history_request(request).await,
        }
    }

    /// HISTORY_REQUEST: counts toward the message rate; see `history.rs`.
    async fn on_history_request(&mut self, request: protocol::HistoryRequest) -> Flow {
        if self.user.is_none() {
            self.notice(NoticeCode::NotLoggedIn, "Log in first.");
            return Flow::Continue;
        }
        if !self.bucket.try_take(Instant::now()) {
            return self.rate_limited();
        }
        let user = self.user.as_ref().expect("checked above");
        let chat = &self.chat;
        let answer = super::history::answer(
            &*chat.backplane,
            &chat.config.history,
            &user.key,
            &user.room,
            &request,
        );
        match try_backplane!(self, answer) {
            super::history::HistoryAnswer::Page(frame) => {
                self.conn.send(frame);
            }
            super::history::HistoryAnswer::Refused(code, message) => self.notice(code, &message),
        }
        Flow::Continue
    }

    /// A binary frame: the protocol is text only.
    pub fn on_binary(&mut self) -> Flow {
        self.bad_payload("Binary frames are not accepted; send JSON text.")
    }

    /// Work sent to this connection by the rest of the cluster.
    pub async fn on_control(&mut self, control: Control) -> Flow {
        let Control::Evicted { room, reason } = control;
        let Some(user) = &self.user else {
            return Flow::Continue;
        };
        if reason == EvictReason::Banned {
            self.conn
                .send(protocol::room_state(&room, RoomStateReason::Banned));
        }
        if user.room != room {
            return Flow::Continue;
        }
        let default_room = self.chat.config.server.default_room.clone();
        match self.move_to(&default_room, None, false).await {
            Ok(JoinOutcome::Joined { .. }) => {
                let what = match reason {
                    EvictReason::Closed => format!("The room {room} was closed"),
                    EvictReason::Deleted => format!("The room {room} was deleted"),
                    EvictReason::Kicked => format!("You were kicked from {room}"),
                    EvictReason::Banned => format!("You were banned from {room}"),
                };
                self.info(&format!("{what}; you are now in {default_room}."));
            }
            Ok(other) => tracing::warn!(?other, "could not move a user to the default room"),
            Err(error) => self.backplane_error(&error),
        }
        Flow::Continue
    }

    /// The connection closed: release the name and the membership.
    pub async fn on_close(&mut self) {
        let Some(user) = self.user.take() else {
            return;
        };
        let chat = self.chat.clone();
        chat.registry.exit(&user.key);
        match chat
            .backplane
            .release_name(&user.key, Some(&user.room))
            .await
        {
            Ok(Some(remaining)) => {
                self.announce(&user.room, &user.name, NoticeCode::Left, remaining + 1)
                    .await
            }
            // Already removed (and announced) by whoever reaped it.
            Ok(None) => {}
            // Presence of a node that cannot reach the store is cleaned up
            // by its heartbeat expiring or by re-registration.
            Err(error) => tracing::warn!(%error, "could not release a name"),
        }
        chat.registry
            .release_room(&*chat.backplane, &user.room)
            .await;
    }

    // ---- payloads ------------------------------------------------------

    fn bad_payload(&mut self, why: &str) -> Flow {
        self.notice(NoticeCode::BadPayload, why);
        if self.bad_payloads.record(Instant::now()) {
            Flow::Close(close::POLICY, "too many bad payloads")
        } else {
            Flow::Continue
        }
    }

    async fn on_message_create(&mut self, create: MessageCreate) -> Flow {
        if !self.bucket.try_take(Instant::now()) {
            return self.rate_limited();
        }
        metrics::counter!(m::MESSAGES_IN).increment(1);
        let Some(user) = &self.user else {
            // The original login: the first MESSAGE_CREATE is the name.
            return self.login(&create.content, None, None, None).await;
        };
        if let Some(room) = &create.room {
            if !room.eq_ignore_ascii_case(&user.room) {
                self.notice(
                    NoticeCode::NotInRoom,
                    &format!("You are in {}, not {room}.", user.room),
                );
                return Flow::Continue;
            }
        }
        let content = create.content;
        let chars = content.chars().count();
        if chars > self.chat.config.limits.max_content_chars {
            self.notice(
                NoticeCode::ContentTooLong,
                &format!(
                    "Messages are limited to {} characters.",
                    self.chat.config.limits.max_content_chars
                ),
            );
            return Flow::Continue;
        }
        if content.trim().is_empty() {
            self.notice(NoticeCode::EmptyContent, "The message is empty.");
            return Flow::Continue;
        }
        let prefix = &self.chat.config.server.command_prefix;
        match content.strip_prefix(prefix.as_str()) {
            // A doubled prefix escapes it: `\\o/` posts `\o/`.
            Some(rest) if rest.starts_with(prefix.as_str()) => self.post(rest.to_string()).await,
            Some(line) => {
                let line = line.to_string();
                self.command(&line).await
            }
            None => self.post(content).await,
        }
    }

    /// Drops a payload over the rate; sustained flooding closes with 4008.
    fn rate_limited(&mut self) -> Flow {
        self.notice(NoticeCode::RateLimited, "Slow down: that was dropped.");
        if self.rate_limited.record(Instant::now()) {
            Flow::Close(close::FLOODING, "flooding")
        } else {
            Flow::Continue
        }
    }

    async fn post(&mut self, content: String) -> Flow {
        let user = self.user.as_ref().expect("only called after login");
        let draft = MessageDraft {
            author: user.name.clone(),
            content,
            room: user.room.clone(),
            id: ulid::Ulid::new().to_string(),
            ts: now_ms(),
        };
        if try_backplane!(self, self.chat.backplane.publish_message(&draft)).is_none() {
            self.notice(NoticeCode::RoomClosed, "The room is closed.");
        }
        Flow::Continue
    }

    async fn on_shutdown_request(&mut self, request: ShutdownRequest) -> Flow {
        if secret_matches(&self.chat.config.admin.shutdown_key, &request.key) {
            tracing::info!("cluster-wide shutdown requested with the shutdown key");
            self.publish_shutdown(request.reason).await
        } else {
            self.wrong_keys += 1;
            tracing::warn!(
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
    }

    async fn publish_shutdown(&mut self, reason: Option<String>) -> Flow {
        try_backplane!(
            self,
            self.chat
                .backplane
                .publish_event(&ClusterEvent::Shutdown { reason })
        );
        Flow::Continue
    }

    // ---- login ---------------------------------------------------------

    async fn login(
        &mut self,
        name: &str,
        token: Option<&str>,
        room: Option<&str>,
        password: Option<&str>,
    ) -> Flow {
        if !valid_user_name(name) {
            return self.login_failed(
                NoticeCode::InvalidName,
                "Names are 1-32 characters of A-Z a-z 0-9 _ - .",
            );
        }
        let config = &self.chat.config;
        let admin = match token {
            Some(token) => match self.chat.tokens.verify(token, name) {
                Ok(grant) => grant.admin,
                Err(error) => {
                    tracing::info!(%error, "login with an invalid token");
                    return self.login_failed(NoticeCode::Unauthorized, "Invalid token.");
                }
            },
            None if config.auth.mode == AuthMode::Token => {
                return self.login_failed(NoticeCode::Unauthorized, "A token is required.");
            }
            None => false,
        };
        let room = match room {
            None => config.server.default_room.clone(),
            Some(raw) => match normalize_room_name(raw) {
                Some(room) => room,
                None => return self.login_failed(NoticeCode::NoSuchRoom, "No such room."),
            },
        };
        let key = user_key(name);
        let backplane = self.chat.backplane.clone();
        match backplane.claim_name(&key, name).await {
            Ok(true) => {}
            Ok(false) => {
                return self
                    .login_failed(NoticeCode::NameTaken, &format!("The name {name} is taken."))
            }
            Err(error) => return self.login_backplane_failed(&error),
        }
        let registry = self.chat.registry.clone();
        if let Err(error) = registry.acquire_room(&*backplane, &room).await {
            let _ = backplane.release_name(&key, None).await;
            return self.login_backplane_failed(&error);
        }
        let outcome = backplane
            .join_room(JoinRequest {
                user_key: &key,
                display_name: name,
                room: &room,
                password_hash: password.map(|p| password_hash(&room, p)).as_deref(),
                create: false,
                previous_room: None,
                max_rooms: self.chat.config.limits.max_rooms,
            })
            .await;
        let members = match outcome {
            Ok(JoinOutcome::Joined { members, .. }) => members,
            other => {
                registry.release_room(&*backplane, &room).await;
                let _ = backplane.release_name(&key, None).await;
                return match other {
                    Ok(refused) => {
                        let (code, message) = refusal(refused, &room);
                        self.login_failed(code, &message)
                    }
                    Err(error) => self.login_backplane_failed(&error),
                };
            }
        };
        self.user = Some(User {
            key: key.clone(),
            name: name.to_string(),
            room: room.clone(),
            admin,
        });
        // CACHE_UPDATE is queued before the connection joins the room
        // locally, so it is the first frame the client sees after login.
        self.send_cache_update().await;
        registry.enter(&key, name, &room, &self.conn);
        metrics::counter!(m::LOGINS).increment(1);
        tracing::debug!(conn = self.conn.id, admin, "logged in");
        self.announce(&room, name, NoticeCode::Joined, members)
            .await;
        Flow::Continue
    }

    fn login_failed(&mut self, code: NoticeCode, message: &str) -> Flow {
        self.notice(code, message);
        self.count_login_failure()
    }

    fn login_backplane_failed(&mut self, error: &BackplaneError) -> Flow {
        self.backplane_error(error);
        self.count_login_failure()
    }

    /// Failures of any kind count; enough of them close with 4003.
    fn count_login_failure(&mut self) -> Flow {
        self.login_failures += 1;
        if self.login_failures >= self.chat.config.limits.login_attempts {
            Flow::Close(close::AUTH_FAILED, "too many failed logins")
        } else {
            Flow::Continue
        }
    }

    // ---- rooms ---------------------------------------------------------

    /// Moves the user to `room` atomically on the backplane, then locally;
    /// announces the move and sends the new CACHE_UPDATE.
    async fn move_to(
        &mut self,
        room: &str,
        password: Option<&str>,
        create: bool,
    ) -> Result<JoinOutcome, BackplaneError> {
        let chat = self.chat.clone();
        let user = self.user.as_ref().expect("only called after login");
        chat.registry.acquire_room(&*chat.backplane, room).await?;
        let outcome = chat
            .backplane
            .join_room(JoinRequest {
                user_key: &user.key,
                display_name: &user.name,
                room,
                password_hash: password.map(|p| password_hash(room, p)).as_deref(),
                create,
                previous_room: Some(&user.room),
                max_rooms: chat.config.limits.max_rooms,
            })
            .await;
        let Ok(JoinOutcome::Joined {
            created,
            members,
            previous_members,
        }) = outcome
        else {
            chat.registry.release_room(&*chat.backplane, room).await;
            return outcome;
        };
        let (key, name) = (user.key.clone(), user.name.clone());
        let user = self.user.as_mut().expect("checked above");
        let previous = std::mem::replace(&mut user.room, room.to_string());
        // The move's CACHE_UPDATE goes out before the new room's traffic.
        self.send_cache_update().await;
        chat.registry.enter(&key, &name, room, &self.conn);
        chat.registry
            .release_room(&*chat.backplane, &previous)
            .await;
        self.announce(&previous, &name, NoticeCode::Left, previous_members + 1)
            .await;
        if created {
            self.publish_room_state(room, RoomStateReason::Created)
                .await;
        }
        self.announce(room, &name, NoticeCode::Joined, members)
            .await;
        Ok(outcome.expect("matched Ok above"))
    }

    /// Publishes joined/left to `room` unless it has too many members
    /// (`members` counts the room with the user in it).
    async fn announce(&self, room: &str, name: &str, code: NoticeCode, members: u64) {
        if members > self.chat.config.limits.presence_notice_max_members {
            return;
        }
        let frame = protocol::presence_notice(code == NoticeCode::Joined, name, room);
        if let Err(error) = self
            .chat
            .backplane
            .publish_to_room(room, frame.into())
            .await
        {
            tracing::debug!(%error, "could not announce a presence change");
        }
    }

    async fn publish_room_state(&self, room: &str, reason: RoomStateReason) {
        let event = ClusterEvent::RoomState {
            room: room.to_string(),
            reason,
        };
        if let Err(error) = self.chat.backplane.publish_event(&event).await {
            tracing::warn!(%error, "could not publish a room state change");
        }
    }

    async fn send_cache_update(&self) {
        let Some(user) = &self.user else { return };
        match self.chat.backplane.snapshot().await {
            Ok(snapshot) => {
                let config = &self.chat.config;
                self.conn.send(protocol::cache_update(
                    &snapshot.rooms,
                    &config.server.command_prefix,
                    &config.public.host,
                    config.public.port,
                    snapshot.users,
                    protocol::Me {
                        name: &user.name,
                        room: &user.room,
                    },
                ));
            }
            Err(error) => self.backplane_error(&error),
        }
    }

    // ---- commands ------------------------------------------------------

    async fn command(&mut self, line: &str) -> Flow {
        let prefix = self.chat.config.server.command_prefix.clone();
        let command = match commands::parse(line, &prefix) {
            Ok(command) => command,
            Err(CommandError::Unknown(..)) => {
                let name = line.split_whitespace().next().unwrap_or("");
                self.notice(
                    NoticeCode::UnknownCommand,
                    &format!("Unknown command {prefix}{name}. Type {prefix}help for the list."),
                );
                return Flow::Continue;
            }
            Err(CommandError::BadArguments(why)) => {
                self.notice(NoticeCode::BadArguments, &why);
                return Flow::Continue;
            }
        };
        match command {
            Command::Help => {
                let lines: Vec<String> = commands::HELP
                    .iter()
                    .map(|(usage, what)| format!("{prefix}{usage} - {what}"))
                    .collect();
                self.info(&format!("Commands:\n{}", lines.join("\n")));
                Flow::Continue
            }
            Command::Join { room, password } => self.join(&room, password.as_deref()).await,
            Command::Leave => {
                let default_room = self.chat.config.server.default_room.clone();
                self.join(&default_room, None).await
            }
            Command::Rooms => self.list_rooms().await,
            Command::Users => self.list_users().await,
            Command::Lock { password } => {
                let room = self.current_room();
                let hash = password_hash(&room, &password);
                self.change_own_room(RoomChange::Lock {
                    password_hash: hash,
                })
                .await
            }
            Command::Unlock => self.change_own_room(RoomChange::Unlock).await,
            Command::Close => self.change_own_room(RoomChange::Close).await,
            Command::Delete => self.change_own_room(RoomChange::Delete).await,
            Command::Open { room } => self.open(&room).await,
            Command::Kick { user } => self.evict(&user, false).await,
            Command::Ban { user } => self.evict(&user, true).await,
            Command::Unban { user } => self.unban(&user).await,
            Command::Shutdown { reason } => {
                if !self.is_admin() {
                    self.notice(
                        NoticeCode::Forbidden,
                        "Only admins can shut the cluster down.",
                    );
                    return Flow::Continue;
                }
                tracing::info!("cluster-wide shutdown requested by an admin");
                self.publish_shutdown(reason).await
            }
        }
    }

    async fn join(&mut self, room: &str, password: Option<&str>) -> Flow {
        if self.current_room() == room {
            self.info(&format!("You are already in {room}."));
            return Flow::Continue;
        }
        let outcome = match self.move_to(room, password, true).await {
            Ok(outcome) => outcome,
            Err(error) => {
                self.backplane_error(&error);
                return Flow::Continue;
            }
        };
        if !matches!(outcome, JoinOutcome::Joined { .. }) {
            let (code, message) = refusal(outcome, room);
            self.notice(code, &message);
        }
        Flow::Continue
    }

    async fn list_rooms(&mut self) -> Flow {
        let snapshot = try_backplane!(self, self.chat.backplane.snapshot());
        let rooms: Vec<String> = snapshot
            .rooms
            .iter()
            .map(|r| {
                let state = match (r.closed, r.locked) {
                    (true, _) => "closed, ",
                    (false, true) => "locked, ",
                    _ => "",
                };
                format!("{} ({state}{} online)", r.name, r.users)
            })
            .collect();
        self.info(&format!(
            "Rooms: {}. {} online in all.",
            rooms.join(", "),
            snapshot.users
        ));
        Flow::Continue
    }

    async fn list_users(&mut self) -> Flow {
        let room = self.current_room();
        let limit = self.chat.config.limits.max_listed_users;
        let members = try_backplane!(self, self.chat.backplane.room_members(&room, limit));
        let more = members.total.saturating_sub(members.names.len() as u64);
        let message = if more == 0 {
            format!(
                "Users in {room} ({}): {}",
                members.total,
                members.names.join(", ")
            )
        } else {
            format!(
                "Users in {room} ({}): {} and {more} more",
                members.total,
                members.names.join(", ")
            )
        };
        self.conn
            .send(protocol::users_notice(&message, &room, &members.names));
        Flow::Continue
    }

    /// Lock, unlock, close or delete the user's current room.
    async fn change_own_room(&mut self, change: RoomChange) -> Flow {
        let room = self.current_room();
        if room == self.chat.config.server.default_room {
            self.notice(
                NoticeCode::Forbidden,
                "The default room cannot be locked, closed or deleted.",
            );
            return Flow::Continue;
        }
        if self.require_owner(&room).await.is_none() {
            return Flow::Continue;
        }
        let (reason, evacuate, done) = match &change {
            RoomChange::Lock { .. } => (RoomStateReason::Locked, false, "locked"),
            RoomChange::Unlock => (RoomStateReason::Unlocked, false, "unlocked"),
            RoomChange::Close => (RoomStateReason::Closed, true, "closed"),
            RoomChange::Delete => (RoomStateReason::Deleted, true, "deleted"),
            RoomChange::Open => (RoomStateReason::Opened, false, "opened"),
        };
        if !try_backplane!(self, self.chat.backplane.change_room(&room, change)) {
            self.notice(NoticeCode::NoSuchRoom, &format!("No room {room}."));
            return Flow::Continue;
        }
        self.info(&format!("Room {room} {done}."));
        self.publish_room_state(&room, reason).await;
        if evacuate {
            let event = ClusterEvent::RoomEvacuated {
                room: room.clone(),
                reason,
            };
            try_backplane!(self, self.chat.backplane.publish_event(&event));
        }
        Flow::Continue
    }

    async fn open(&mut self, room: &str) -> Flow {
        let Some(info) = self.require_owner(room).await else {
            return Flow::Continue;
        };
        if !info.closed {
            self.info(&format!("Room {room} is not closed."));
            return Flow::Continue;
        }
        if try_backplane!(
            self,
            self.chat.backplane.change_room(room, RoomChange::Open)
        ) {
            self.info(&format!("Room {room} opened."));
            self.publish_room_state(room, RoomStateReason::Opened).await;
        } else {
            self.notice(NoticeCode::NoSuchRoom, &format!("No room {room}."));
        }
        Flow::Continue
    }

    async fn evict(&mut self, target: &str, ban: bool) -> Flow {
        let room = self.current_room();
        let target_key = user_key(target);
        let verb = if ban { "banned" } else { "kicked" };
        if room == self.chat.config.server.default_room {
            self.notice(
                NoticeCode::Forbidden,
                &format!("Nobody can be {verb} from the default room."),
            );
            return Flow::Continue;
        }
        if Some(target_key.as_str()) == self.user.as_ref().map(|u| u.key.as_str()) {
            self.notice(
                NoticeCode::BadArguments,
                &format!("You cannot {} yourself.", if ban { "ban" } else { "kick" }),
            );
            return Flow::Continue;
        }
        if self.require_owner(&room).await.is_none() {
            return Flow::Continue;
        }
        if ban {
            try_backplane!(self, self.chat.backplane.set_ban(&room, &target_key, true));
        } else {
            if !try_backplane!(self, self.chat.backplane.is_member(&room, &target_key)) {
                self.notice(
                    NoticeCode::BadArguments,
                    &format!("{target} is not in {room}."),
                );
                return Flow::Continue;
            }
        }
        let event = ClusterEvent::Evict {
            room: room.clone(),
            user_key: target_key,
            banned: ban,
        };
        try_backplane!(self, self.chat.backplane.publish_event(&event));
        self.info(&format!(
            "{target} was {} {room}.",
            if ban { "banned from" } else { "kicked from" }
        ));
        Flow::Continue
    }

    async fn unban(&mut self, target: &str) -> Flow {
        let room = self.current_room();
        if self.require_owner(&room).await.is_none() {
            return Flow::Continue;
        }
        let target_key = user_key(target);
        if !try_backplane!(self, self.chat.backplane.set_ban(&room, &target_key, false)) {
            self.info(&format!("{target} was not banned from {room}."));
            return Flow::Continue;
        }
        let event = ClusterEvent::Unbanned {
            room: room.clone(),
            user_key: target_key,
        };
        try_backplane!(self, self.chat.backplane.publish_event(&event));
        self.info(&format!("{target} was unbanned from {room}."));
        Flow::Continue
    }

    /// The room's settings if the user owns it or is an admin; otherwise
    /// answers `no_such_room` or `forbidden` and returns `None`.
    async fn require_owner(&mut self, room: &str) -> Option<RoomInfo> {
        let info = match self.chat.backplane.room(room).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                self.notice(NoticeCode::NoSuchRoom, &format!("No room {room}."));
                return None;
            }
            Err(error) => {
                self.backplane_error(&error);
                return None;
            }
        };
        let user = self.user.as_ref().expect("commands need a login");
        if user.admin || info.owner.as_deref() == Some(user.key.as_str()) {
            Some(info)
        } else {
            self.notice(
                NoticeCode::Forbidden,
                &format!("Only the owner of {room} or an admin can do that."),
            );
            None
        }
    }

    // ---- helpers -------------------------------------------------------

    fn current_room(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.room.clone())
            .unwrap_or_default()
    }

    fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.admin)
    }

    fn notice(&self, code: NoticeCode, message: &str) {
        metrics::counter!(m::NOTICES, "code" => code.as_str()).increment(1);
        self.conn.send(protocol::notice(code, message, None, None));
    }

    fn info(&self, message: &str) {
        self.notice(NoticeCode::Info, message);
    }

    fn backplane_error(&self, error: &BackplaneError) {
        match error {
            BackplaneError::Unavailable(_) => {
                tracing::warn!(%error, "backplane unavailable");
                self.notice(
                    NoticeCode::Unavailable,
                    "The chat cluster is unavailable right now; nothing was sent. Try again shortly.",
                );
            }
            BackplaneError::Internal(_) => {
                tracing::error!(%error, "backplane error");
                self.notice(NoticeCode::Internal, "Internal error; nothing was changed.");
            }
        }
    }
}

/// The NOTICE for a refused join.
fn refusal(outcome: JoinOutcome, room: &str) -> (NoticeCode, String) {
    match outcome {
        JoinOutcome::NoSuchRoom => (NoticeCode::NoSuchRoom, format!("No room {room}.")),
        JoinOutcome::Locked => (
            NoticeCode::RoomLocked,
            format!("The room {room} is locked; a correct password is needed."),
        ),
        JoinOutcome::Closed => (
            NoticeCode::RoomClosed,
            format!("The room {room} is closed."),
        ),
        JoinOutcome::Banned => (NoticeCode::Banned, format!("You are banned from {room}.")),
        JoinOutcome::TooManyRooms => (
            NoticeCode::Forbidden,
            format!("The room {room} cannot be created: the server holds as many rooms as it may. Join an existing room."),
        ),
        JoinOutcome::Joined { .. } => (NoticeCode::Info, format!("You are now in {room}.")),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

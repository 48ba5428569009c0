//! One connection's chat session: its login state, room and counters, and
//! the routing of every inbound frame.
//!
//! Every inbound frame is metered: MESSAGE_CREATE by the message bucket,
//! CACHE_REQUEST by its own bucket, IDENTIFY by the login-failure count,
//! SHUTDOWN by the wrong-key count, and everything refused before any rule
//! ran (bad payloads, unknown ops, binary frames, IDENTIFY after login,
//! CACHE_REQUEST before login) by the bad-payload window. So no kind of
//! frame can be sent without limit.
//!
//! The session answers through its connection's bounded queue
//! ([`ConnHandle::send`]); it never writes to the socket itself. A failed
//! backplane call is answered with NOTICE `unavailable` and changes nothing
//! locally. Handlers live in `login`, `messages`, `rooms` and `moderation`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commands::{self, Checked, Permission};
use super::ownership;
use super::rate::{TokenBucket, WindowCounter};
use super::replies::Refusal;
use super::Chat;
use crate::backplane::RoomInfo;
use crate::metrics as m;
use crate::protocol::{self, close, parse_client_frame, ClientPayload, NoticeCode, ParseError};
use crate::registry::{ConnHandle, Control};

/// What the connection should do after a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close(u16, &'static str),
}

/// The logged-in user of a session.
pub(super) struct User {
    pub(super) key: String,
    pub(super) name: String,
    pub(super) room: String,
    pub(super) admin: bool,
}

pub(crate) struct Session {
    pub(super) chat: Arc<Chat>,
    pub(super) conn: Arc<ConnHandle>,
    pub(super) user: Option<User>,
    /// This connection's id as a room owner in open mode.
    pub(super) connection_id: ulid::Ulid,
    pub(super) login_failures: u32,
    pub(super) wrong_keys: u32,
    bad_payloads: WindowCounter,
    pub(super) bucket: TokenBucket,
    /// CACHE_REQUEST costs a cluster-wide read, so it has a bucket of its
    /// own (same rate and burst) rather than sharing the message bucket.
    cache_bucket: TokenBucket,
    rate_limited: WindowCounter,
}

impl Session {
    pub(crate) fn new(chat: Arc<Chat>, conn: Arc<ConnHandle>) -> Self {
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
            connection_id: ownership::connection_id(),
            login_failures: 0,
            wrong_keys: 0,
        }
    }

    /// Stored as the owner of the rooms this user creates, and compared with
    /// a room's owner for owner-only commands (see [`ownership`]). Made when
    /// needed rather than kept: every idle session would carry it.
    pub(super) fn owner_id(&self) -> String {
        ownership::owner_id(
            self.chat.config.auth.mode,
            &self.user().key,
            self.connection_id,
        )
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        self.user.is_some()
    }

    /// A text frame from the client.
    pub(crate) async fn on_text(&mut self, text: &str) -> Flow {
        match parse_client_frame(text) {
            Err(ParseError::BadPayload(why)) => self.refuse_frame(NoticeCode::BadPayload, &why),
            Err(ParseError::UnknownOp(op)) => {
                self.refuse_frame(NoticeCode::UnknownOp, &format!("Unknown op {op}."))
            }
            Ok(ClientPayload::MessageCreate(create)) => self.on_message_create(create).await,
            Ok(ClientPayload::Identify(identify)) => {
                if self.user.is_some() {
                    return self
                        .refuse_frame(NoticeCode::AlreadyLoggedIn, "You are already logged in.");
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
                    return self.refuse_frame(NoticeCode::NotLoggedIn, "Log in first.");
                }
                if !self.cache_bucket.try_take(Instant::now()) {
                    return self.rate_limited();
                }
                let sent = self.send_cache_update().await;
                self.answer(sent)
            }
            Ok(ClientPayload::Shutdown(request)) => self.on_shutdown_request(request).await,
            Ok(ClientPayload::HistoryRequest(request)) => self.on_history_request(request).await,
        }
    }

    /// HISTORY_REQUEST: counts toward the message rate; see `history.rs`.
    async fn on_history_request(&mut self, request: protocol::HistoryRequest) -> Flow {
        let Some(user) = &self.user else {
            return self.refuse_frame(NoticeCode::NotLoggedIn, "Log in first.");
        };
        if !self.bucket.try_take(Instant::now()) {
            return self.rate_limited();
        }
        let chat = &self.chat;
        let answer = super::history::answer(
            &*chat.backplane,
            &chat.config.history,
            &user.key,
            &user.room,
            &request,
        )
        .await;
        match answer {
            Ok(super::history::HistoryAnswer::Page(frame)) => {
                self.conn.send(frame);
            }
            Ok(super::history::HistoryAnswer::Refused(code, message)) => {
                self.notice(code, &message)
            }
            Err(error) => {
                let refusal: super::replies::Refusal = error.into();
                self.notice(refusal.code, &refusal.message);
            }
        }
        Flow::Continue
    }

    /// A binary frame: the protocol is text only.
    pub(crate) fn on_binary(&mut self) -> Flow {
        self.refuse_frame(
            NoticeCode::BadPayload,
            "Binary frames are not accepted; send JSON text.",
        )
    }

    /// Work sent to this connection by the rest of the cluster.
    pub(crate) async fn on_control(&mut self, control: Control) -> Flow {
        let Control::Evicted { room, reason } = control;
        let result = self.evicted(&room, reason).await;
        self.answer(result)
    }

    /// The connection closed: release the name and the membership.
    pub(crate) async fn on_close(&mut self) {
        let Some(user) = self.user.take() else {
            return;
        };
        self.released(user).await;
    }

    // ---- answers and limits ----------------------------------------------

    /// Sends the refusal, if any; the connection goes on.
    pub(super) fn answer(&self, result: Result<(), Refusal>) -> Flow {
        if let Err(refusal) = result {
            self.notice(refusal.code, &refusal.message);
        }
        Flow::Continue
    }

    /// A frame refused before any chat rule ran: answered with `code`, and
    /// counted in the bad-payload window (more than the limit closes 1008).
    fn refuse_frame(&mut self, code: NoticeCode, why: &str) -> Flow {
        self.notice(code, why);
        if self.bad_payloads.record(Instant::now()) {
            Flow::Close(close::POLICY, "too many bad payloads")
        } else {
            Flow::Continue
        }
    }

    /// Drops a payload over the rate; sustained flooding closes with 4008.
    pub(super) fn rate_limited(&mut self) -> Flow {
        self.notice(NoticeCode::RateLimited, "Slow down: that was dropped.");
        if self.rate_limited.record(Instant::now()) {
            Flow::Close(close::FLOODING, "flooding")
        } else {
            Flow::Continue
        }
    }

    // ---- commands ------------------------------------------------------

    /// Parses, checks the permission from the command table, and runs the
    /// command's handler.
    pub(super) async fn command(&mut self, line: &str) -> Result<(), Refusal> {
        let invocation = commands::parse(line, &self.chat.config.server.command_prefix)?;
        let room = self
            .authorize(invocation.spec.permission, &invocation)
            .await?;
        let run = invocation.spec.run;
        run(self, Checked { invocation, room }).await
    }

    /// Applies a command's [`Permission`]; for owner-only commands returns
    /// the settings of the room whose owner was checked.
    async fn authorize(
        &self,
        permission: Permission,
        invocation: &commands::Invocation,
    ) -> Result<Option<RoomInfo>, Refusal> {
        match permission {
            Permission::Anyone => Ok(None),
            Permission::Admin { refusal } => {
                if self.user().admin {
                    Ok(None)
                } else {
                    Err(Refusal::forbidden(refusal))
                }
            }
            Permission::OwnerOfCurrentRoom { default_room } => {
                let room = self.user().room.clone();
                if let Some(refusal) = default_room {
                    if room == self.chat.config.server.default_room {
                        return Err(Refusal::forbidden(refusal));
                    }
                }
                self.require_owner(&room).await.map(Some)
            }
            Permission::OwnerOfNamedRoom => {
                let room = invocation.arg(0).unwrap_or_default();
                self.require_owner(room).await.map(Some)
            }
        }
    }

    /// The room's settings if the user owns it or is an admin; otherwise
    /// `no_such_room` or `forbidden`.
    async fn require_owner(&self, room: &str) -> Result<RoomInfo, Refusal> {
        let info = self
            .chat
            .backplane
            .room(room)
            .await?
            .ok_or_else(|| Refusal::no_such_room(room))?;
        let user = self.user();
        if user.admin || info.owner.as_deref() == Some(self.owner_id().as_str()) {
            Ok(info)
        } else {
            Err(Refusal::forbidden(format!(
                "Only the owner of {room} or an admin can do that."
            )))
        }
    }

    pub(super) async fn cmd_help(&mut self, _: Checked) -> Result<(), Refusal> {
        self.info(&commands::help(&self.chat.config.server.command_prefix));
        Ok(())
    }

    // ---- helpers -------------------------------------------------------

    /// The logged-in user. Commands and moves run only after login.
    pub(super) fn user(&self) -> &User {
        self.user.as_ref().expect("only called after login")
    }

    pub(super) fn current_room(&self) -> String {
        self.user().room.clone()
    }

    pub(super) fn notice(&self, code: NoticeCode, message: &str) {
        metrics::counter!(m::NOTICES, "code" => code.as_str()).increment(1);
        self.conn.send(protocol::notice(code, message, None, None));
    }

    pub(super) fn info(&self, message: &str) {
        self.notice(NoticeCode::Info, message);
    }
}

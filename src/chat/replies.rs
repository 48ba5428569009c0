//! What the chat answers: the [`Refusal`] every handler returns with `?`,
//! and the texts of notices that more than one handler sends.

use super::commands::CommandError;
use crate::backplane::{BackplaneError, JoinOutcome};
use crate::protocol::NoticeCode;
use crate::registry::EvictReason;

/// A request the chat refused: answered with an error NOTICE, nothing
/// changed. Handlers return it with `?`; the session sends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub(crate) struct Refusal {
    pub(crate) code: NoticeCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: NoticeCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(NoticeCode::Forbidden, message)
    }

    pub(crate) fn no_such_room(room: &str) -> Self {
        Self::new(NoticeCode::NoSuchRoom, format!("No room {room}."))
    }

    /// The refusal of a join the backplane did not let through.
    pub(crate) fn join(outcome: JoinOutcome, room: &str) -> Self {
        match outcome {
            JoinOutcome::NoSuchRoom => Self::no_such_room(room),
            JoinOutcome::Locked => Self::new(
                NoticeCode::RoomLocked,
                format!("The room {room} is locked; a correct password is needed."),
            ),
            JoinOutcome::Closed => {
                Self::new(NoticeCode::RoomClosed, format!("The room {room} is closed."))
            }
            JoinOutcome::Banned => {
                Self::new(NoticeCode::Banned, format!("You are banned from {room}."))
            }
            JoinOutcome::TooManyRooms => Self::forbidden(format!(
                "The room {room} cannot be created: the server holds as many rooms as it may. Join an existing room."
            )),
            JoinOutcome::TooManyOwnedRooms => Self::forbidden(format!(
                "The room {room} cannot be created: you own as many rooms as you may. Delete one of yours or join an existing room."
            )),
            JoinOutcome::NameLost => Self::new(
                NoticeCode::NameTaken,
                "Your name is held by another connection.",
            ),
            // Not a refusal; callers match it first. Kept total so that a
            // mistake shows as a strange notice, not a panic.
            JoinOutcome::Joined { .. } => {
                Self::new(NoticeCode::Internal, "Internal error; nothing was changed.")
            }
        }
    }
}

/// A failed backplane call: `unavailable` (logged as a warning) or
/// `internal` (logged as an error).
impl From<BackplaneError> for Refusal {
    fn from(error: BackplaneError) -> Self {
        match error {
            BackplaneError::Unavailable(_) => {
                tracing::warn!(%error, "backplane unavailable");
                Self::new(
                    NoticeCode::Unavailable,
                    "The chat cluster is unavailable right now; nothing was sent. Try again shortly.",
                )
            }
            BackplaneError::Internal(_) => {
                tracing::error!(%error, "backplane error");
                Self::new(NoticeCode::Internal, "Internal error; nothing was changed.")
            }
        }
    }
}

impl From<CommandError> for Refusal {
    fn from(error: CommandError) -> Self {
        let code = match error {
            CommandError::Unknown { .. } => NoticeCode::UnknownCommand,
            CommandError::BadArguments(_) => NoticeCode::BadArguments,
        };
        Self::new(code, error.to_string())
    }
}

/// The `info` after a user was moved out of `room` to `default_room`.
pub(crate) fn evicted(reason: EvictReason, room: &str, default_room: &str) -> String {
    let what = match reason {
        EvictReason::Closed => format!("The room {room} was closed"),
        EvictReason::Deleted => format!("The room {room} was deleted"),
        EvictReason::Kicked => format!("You were kicked from {room}"),
        EvictReason::Banned => format!("You were banned from {room}"),
    };
    format!("{what}; you are now in {default_room}.")
}

/// The `info` answering a successful move (`\leave`; `\join` answers with
/// its CACHE_UPDATE alone).
pub(crate) fn moved(room: &str) -> String {
    format!("You are now in {room}.")
}

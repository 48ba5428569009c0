//! MESSAGE_CREATE: the original login, chat messages and commands.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::replies::Refusal;
use super::session::{Flow, Session};
use crate::metrics as m;
use crate::protocol::{MessageCreate, MessageDraft, NoticeCode};

impl Session {
    pub(super) async fn on_message_create(&mut self, create: MessageCreate) -> Flow {
        if !self.bucket.try_take(Instant::now()) {
            return self.rate_limited();
        }
        metrics::counter!(m::MESSAGES_IN).increment(1);
        self.chat.registry.count_message_in();
        if self.user.is_none() {
            // The original login: the first MESSAGE_CREATE is the name.
            return self.login(&create.content, None, None, None).await;
        }
        let result = self.message(create).await;
        self.answer(result)
    }

    async fn message(&mut self, create: MessageCreate) -> Result<(), Refusal> {
        let room = self.current_room();
        if let Some(named) = &create.room {
            if !named.eq_ignore_ascii_case(&room) {
                return Err(Refusal::new(
                    NoticeCode::NotInRoom,
                    format!("You are in {room}, not {named}."),
                ));
            }
        }
        let content = create.content;
        let max = self.chat.config.limits.max_content_chars;
        if content.chars().count() > max {
            return Err(Refusal::new(
                NoticeCode::ContentTooLong,
                format!("Messages are limited to {max} characters."),
            ));
        }
        if content.trim().is_empty() {
            return Err(Refusal::new(
                NoticeCode::EmptyContent,
                "The message is empty.",
            ));
        }
        let prefix = self.chat.config.server.command_prefix.clone();
        match content.strip_prefix(prefix.as_str()) {
            // A doubled prefix escapes it: `\\o/` posts `\o/`.
            Some(rest) if rest.starts_with(prefix.as_str()) => self.post(rest.to_string()).await,
            Some(line) => self.command(line).await,
            None => self.post(content).await,
        }
    }

    async fn post(&mut self, content: String) -> Result<(), Refusal> {
        let user = self.user();
        let draft = MessageDraft {
            author: user.name.clone(),
            content,
            room: user.room.clone(),
            id: ulid::Ulid::new().to_string(),
            ts: now_ms(),
        };
        match self.chat.backplane.publish_message(&draft).await? {
            Some(_) => Ok(()),
            None => Err(Refusal::new(NoticeCode::RoomClosed, "The room is closed.")),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

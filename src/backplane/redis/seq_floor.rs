//! The highest `seq` this node has relayed per room, so that a room's
//! numbering never repeats when Redis comes back without its data.
//!
//! Every node subscribed to a room relays every message of the room, so each
//! of them knows the room's last `seq`. The publish script takes this floor
//! and, when the room's counter is at or below it (the counter was lost),
//! continues from the floor instead of starting again at 1. A deleted room
//! forgets its floor when the deletion's ROOM_STATE arrives (after every
//! message published before it, since one subscriber connection receives
//! in publish order): a new room of the same name starts at 1.
//!
//! Reading the number is not parsing the frame: MESSAGE frames are built by
//! [`crate::protocol::MessageDraft`] and always end with `,"seq":N}}`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Floors of the rooms this node is subscribed to (bounded by them: a room
/// is forgotten when it is unsubscribed or deleted).
#[derive(Default)]
pub struct SeqFloors {
    rooms: Mutex<HashMap<String, u64>>,
}

impl SeqFloors {
    fn rooms(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the `seq` of a frame relayed in `room`, if it is a MESSAGE.
    pub fn observe(&self, room: &str, frame: &[u8]) {
        let Some(seq) = message_seq(frame) else {
            return;
        };
        let mut rooms = self.rooms();
        match rooms.get_mut(room) {
            Some(floor) => *floor = (*floor).max(seq),
            None => {
                rooms.insert(room.to_string(), seq);
            }
        }
    }

    /// The highest `seq` seen in `room` (0 if none).
    pub fn floor(&self, room: &str) -> u64 {
        self.rooms().get(room).copied().unwrap_or(0)
    }

    pub fn forget(&self, room: &str) {
        self.rooms().remove(room);
    }
}

/// The `seq` at the end of a MESSAGE frame (`{"op":0,…,"seq":N}}`).
pub(super) fn message_seq(frame: &[u8]) -> Option<u64> {
    if !frame.starts_with(b"{\"op\":0,") {
        return None;
    }
    let body = frame.strip_suffix(b"}}")?;
    let digits_start = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    if !body[..digits_start].ends_with(b"\"seq\":") {
        return None;
    }
    std::str::from_utf8(&body[digits_start..])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageDraft;

    #[test]
    fn reads_the_seq_of_message_frames_only() {
        let draft = MessageDraft {
            author: "a".into(),
            content: "\"seq\":99}}".into(),
            room: "r".into(),
            id: "1".into(),
            ts: 1,
        };
        assert_eq!(message_seq(&draft.frame(42)), Some(42));
        let notice = crate::protocol::presence_notice(true, "a", "r");
        assert_eq!(message_seq(notice.as_bytes()), None);
    }

    #[test]
    fn keeps_the_highest_and_forgets() {
        let floors = SeqFloors::default();
        let frame = |seq| {
            MessageDraft {
                author: "a".into(),
                content: "x".into(),
                room: "r".into(),
                id: "1".into(),
                ts: 1,
            }
            .frame(seq)
        };
        floors.observe("r", &frame(7));
        floors.observe("r", &frame(5));
        assert_eq!(floors.floor("r"), 7);
        floors.forget("r");
        assert_eq!(floors.floor("r"), 0);
    }
}

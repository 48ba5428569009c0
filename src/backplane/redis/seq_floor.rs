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

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

/// MESSAGE frames of a room remembered (as hashes) to drop exact repeats.
const RECENT: usize = 16;

/// Floors of the rooms this node is subscribed to (bounded by them: a room
/// is forgotten when it is unsubscribed or deleted).
#[derive(Default)]
pub struct SeqFloors {
    rooms: Mutex<HashMap<String, Floor>>,
}

#[derive(Default)]
struct Floor {
    seq: u64,
    /// Hashes of the last [`RECENT`] MESSAGE frames relayed.
    recent: [u64; RECENT],
    next: usize,
}

impl SeqFloors {
    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Floor>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the `seq` of a frame relayed in `room`, if it is a MESSAGE.
    /// Returns `false` for an exact repeat of one of the room's last
    /// MESSAGE frames. In about 1 of 25 runs of `tests/cluster_history.rs`
    /// the members of one node got three messages twice right after its
    /// subscriber connection was killed; the cause is not pinned down (two
    /// connections of the manager subscribed for a moment is the likely
    /// one). Whatever the cause, a repeat must not reach the clients. Frames are compared whole (by hash), so a room numbered
    /// again from 1 (deleted and created) is never taken for a repeat.
    pub fn observe(&self, room: &str, frame: &[u8]) -> bool {
        let Some(seq) = message_seq(frame) else {
            return true;
        };
        let mut hasher = DefaultHasher::new();
        frame.hash(&mut hasher);
        let hash = hasher.finish();
        let mut rooms = self.rooms();
        let floor = rooms.entry(room.to_string()).or_default();
        if floor.recent.contains(&hash) {
            return false;
        }
        floor.seq = floor.seq.max(seq);
        floor.recent[floor.next] = hash;
        floor.next = (floor.next + 1) % RECENT;
        true
    }

    /// The highest `seq` seen in `room` (0 if none).
    pub fn floor(&self, room: &str) -> u64 {
        self.rooms().get(room).map_or(0, |f| f.seq)
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
        assert!(floors.observe("r", &frame(7)));
        assert!(floors.observe("r", &frame(5)));
        assert_eq!(floors.floor("r"), 7);
        assert!(!floors.observe("r", &frame(7)), "an exact repeat");
        floors.forget("r");
        assert_eq!(floors.floor("r"), 0);
    }
}

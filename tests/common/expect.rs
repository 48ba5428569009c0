//! Frame matchers for [`super::client::Client`]'s `expect*`/`recv_until`
//! helpers. Each matcher has a description used in failure messages.
//!
//! The matchers check the wire format of PROTOCOL.md: e.g. [`notice`] also
//! requires `error` to agree with the code's class and `message` to be a
//! string, [`room_state`] requires `available` to agree with `reason`.

use serde_json::Value;

/// A predicate on one server frame (the whole `{"op":..,"d":..}` value).
pub struct Expect {
    pub desc: String,
    pred: Box<dyn Fn(&Value) -> bool + Send + Sync>,
}

impl Expect {
    pub fn new(
        desc: impl Into<String>,
        pred: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Self {
        Expect {
            desc: desc.into(),
            pred: Box::new(pred),
        }
    }

    pub fn matches(&self, v: &Value) -> bool {
        (self.pred)(v)
    }

    /// This matcher and another predicate.
    pub fn and(self, desc: &str, pred: impl Fn(&Value) -> bool + Send + Sync + 'static) -> Self {
        let Expect { desc: d0, pred: p0 } = self;
        Expect {
            desc: format!("{d0} and {desc}"),
            pred: Box::new(move |v| p0(v) && pred(v)),
        }
    }
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.desc)
    }
}

/// The NOTICE codes PROTOCOL.md lists as events (`error: false`).
pub const EVENT_CODES: &[&str] = &["joined", "left", "info"];

/// The NOTICE codes PROTOCOL.md lists as errors (`error: true`).
pub const ERROR_CODES: &[&str] = &[
    "bad_payload",
    "unknown_op",
    "not_logged_in",
    "already_logged_in",
    "invalid_name",
    "name_taken",
    "unauthorized",
    "forbidden",
    "unknown_command",
    "bad_arguments",
    "no_such_room",
    "room_locked",
    "room_closed",
    "banned",
    "not_in_room",
    "empty_content",
    "content_too_long",
    "rate_limited",
    "unavailable",
    "internal",
];

/// Whether `v` is a well-formed NOTICE: op 7, `d.code` a string, `d.error`
/// the bool its code's class requires, `d.message` a string.
pub fn is_well_formed_notice(v: &Value) -> bool {
    if v["op"] != 7 {
        return false;
    }
    let d = &v["d"];
    let Some(code) = d["code"].as_str() else {
        return false;
    };
    let expected_error = if EVENT_CODES.contains(&code) {
        false
    } else if ERROR_CODES.contains(&code) {
        true
    } else {
        return false;
    };
    d["error"] == Value::Bool(expected_error) && d["message"].is_string()
}

/// Any frame with this `op`.
pub fn op(op: i64) -> Expect {
    Expect::new(format!("a frame with op {op}"), move |v| v["op"] == op)
}

/// Any frame at all.
pub fn any() -> Expect {
    Expect::new("any frame", |_| true)
}

/// A well-formed NOTICE with this code.
pub fn notice(code: &'static str) -> Expect {
    Expect::new(format!("NOTICE {code}"), move |v| {
        is_well_formed_notice(v) && v["d"]["code"] == code
    })
}

/// A NOTICE with this code whose `user` is `user` (exactly).
pub fn notice_user(code: &'static str, user: &str) -> Expect {
    let user = user.to_string();
    Expect::new(format!("NOTICE {code} with user {user}"), move |v| {
        is_well_formed_notice(v) && v["d"]["code"] == code && v["d"]["user"] == user.as_str()
    })
}

/// `joined` for `user` in `room`.
pub fn joined(user: &str, room: &str) -> Expect {
    presence("joined", user, room)
}

/// `left` for `user` in `room`.
pub fn left(user: &str, room: &str) -> Expect {
    presence("left", user, room)
}

fn presence(code: &'static str, user: &str, room: &str) -> Expect {
    let (user, room) = (user.to_string(), room.to_string());
    Expect::new(format!("NOTICE {code} user={user} room={room}"), move |v| {
        is_well_formed_notice(v)
            && v["d"]["code"] == code
            && v["d"]["user"] == user.as_str()
            && v["d"]["room"] == room.as_str()
    })
}

/// Whether a ROOM_STATE reason means `available: true`.
pub fn reason_available(reason: &str) -> bool {
    matches!(reason, "created" | "opened" | "unlocked" | "unbanned")
}

/// ROOM_STATE for `room` with `reason`, and `available` as the reason
/// requires.
pub fn room_state(room: &str, reason: &'static str) -> Expect {
    let room = room.to_string();
    let available = reason_available(reason);
    Expect::new(
        format!("ROOM_STATE room={room} reason={reason} available={available}"),
        move |v| {
            v["op"] == 2
                && v["d"]["room"] == room.as_str()
                && v["d"]["reason"] == reason
                && v["d"]["available"] == available
        },
    )
}

/// CACHE_UPDATE whose `me` is `name` in `room`.
pub fn cache_me(name: &str, room: &str) -> Expect {
    let (name, room) = (name.to_string(), room.to_string());
    Expect::new(
        format!("CACHE_UPDATE me={{name:{name}, room:{room}}}"),
        move |v| {
            v["op"] == 4
                && v["d"]["me"]["name"] == name.as_str()
                && v["d"]["me"]["room"] == room.as_str()
        },
    )
}

/// CACHE_UPDATE whose `me.room` is `room`.
pub fn cache_in(room: &str) -> Expect {
    let room = room.to_string();
    Expect::new(format!("CACHE_UPDATE with me.room={room}"), move |v| {
        v["op"] == 4 && v["d"]["me"]["room"] == room.as_str()
    })
}

/// MESSAGE from `author` with `content` (any room).
pub fn message(author: &str, content: &str) -> Expect {
    let (author, content) = (author.to_string(), content.to_string());
    Expect::new(
        format!("MESSAGE author={author} content={content:?}"),
        move |v| {
            v["op"] == 0
                && v["d"]["author"] == author.as_str()
                && v["d"]["content"] == content.as_str()
        },
    )
}

/// SHUTDOWN (server → client) with this `reconnect`.
pub fn shutdown(reconnect: bool) -> Expect {
    Expect::new(format!("SHUTDOWN reconnect={reconnect}"), move |v| {
        v["op"] == 3 && v["d"]["reconnect"] == reconnect
    })
}

/// Each matcher must match a different frame of `frames`; `who` labels the
/// failure message. Returns the matched frames in matcher order.
pub fn assert_has(who: &str, frames: &[Value], es: &[Expect]) -> Vec<Value> {
    let mut used = vec![false; frames.len()];
    let mut out = Vec::new();
    for e in es {
        match (0..frames.len()).find(|&i| !used[i] && e.matches(&frames[i])) {
            Some(i) => {
                used[i] = true;
                out.push(frames[i].clone());
            }
            None => panic!(
                "[{who}] expected {} among the frames received: {}",
                e.desc,
                super::client::show(frames)
            ),
        }
    }
    out
}

/// No frame of `frames` may match `e`.
pub fn assert_lacks(who: &str, frames: &[Value], e: &Expect) {
    if let Some(f) = frames.iter().find(|f| e.matches(f)) {
        panic!("[{who}] did not expect {} but got {f}", e.desc);
    }
}

/// Exactly the frames matched by `es`, nothing else (any order).
pub fn assert_exactly(who: &str, frames: &[Value], es: &[Expect]) {
    assert_has(who, frames, es);
    if frames.len() != es.len() {
        panic!(
            "[{who}] expected exactly {:?}, got {} frames: {}",
            es,
            frames.len(),
            super::client::show(frames)
        );
    }
}

//! The wire protocol (`../shared/PROTOCOL.md`, version 1): opcodes, the
//! payloads a client may send, the frames a server sends, notice and close
//! codes, and name rules.
//!
//! Everything here is pure: parsing a client frame and serializing a server
//! frame. Server frames are serialized once into [`Frame`] (shared bytes), so a
//! message for a thousand members costs one serialization and a thousand
//! reference-count bumps.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A serialized server → client payload, shared by every recipient.
pub type Frame = Utf8Bytes;

/// Opcodes.
pub mod op {
    pub const MESSAGE: i64 = 0;
    pub const MESSAGE_CREATE: i64 = 1;
    pub const ROOM_STATE: i64 = 2;
    pub const SHUTDOWN: i64 = 3;
    pub const CACHE_UPDATE: i64 = 4;
    pub const IDENTIFY: i64 = 5;
    pub const CACHE_REQUEST: i64 = 6;
    pub const NOTICE: i64 = 7;
    pub const HISTORY_REQUEST: i64 = 8;
    pub const HISTORY: i64 = 9;
}

/// WebSocket close codes the server uses.
pub mod close {
    /// Server or node shutting down, after SHUTDOWN.
    pub const GOING_AWAY: u16 = 1001;
    /// Too many bad payloads.
    pub const POLICY: u16 = 1008;
    /// Frame (message) too large.
    pub const TOO_BIG: u16 = 1009;
    /// No login within the login timeout.
    pub const LOGIN_TIMEOUT: u16 = 4001;
    /// Authentication failed too often.
    pub const AUTH_FAILED: u16 = 4003;
    /// Flooding.
    pub const FLOODING: u16 = 4008;
    /// Slow consumer: the outgoing queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4009;
    /// The peer stopped answering pings. The protocol names no code for it;
    /// the peer is presumed gone, so a normal closure is as good as any.
    pub const PING_TIMEOUT: u16 = 1000;
}

/// A payload a client may send, parsed and shape-checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientPayload {
    MessageCreate(MessageCreate),
    Shutdown(ShutdownRequest),
    Identify(Identify),
    CacheRequest,
    HistoryRequest(HistoryRequest),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageCreate {
    pub content: String,
    #[serde(default)]
    pub room: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ShutdownRequest {
    pub key: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Identify {
    pub name: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// HISTORY_REQUEST (op 8). Every field is optional; a field of the wrong
/// type (e.g. `after` as a string or negative) is `bad_payload`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HistoryRequest {
    #[serde(default)]
    pub room: Option<String>,
    /// Messages with a greater `seq`, oldest first.
    #[serde(default)]
    pub after: Option<u64>,
    /// Messages with a smaller `seq` (scrolling back).
    #[serde(default)]
    pub before: Option<u64>,
    #[serde(default)]
    pub limit: Option<u64>,
    /// The room's numbering the client knows.
    #[serde(default)]
    pub epoch: Option<String>,
}

/// Why a client frame was refused before any chat rule saw it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, not an object, `op` missing or not an integer, or `d` of the
    /// wrong shape: NOTICE `bad_payload`.
    #[error("{0}")]
    BadPayload(String),
    /// An op the server does not know or one sent in the wrong direction:
    /// NOTICE `unknown_op`.
    #[error("unknown op {0}")]
    UnknownOp(i64),
}

/// Parses one text frame from a client.
pub fn parse_client_frame(text: &str) -> Result<ClientPayload, ParseError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|_| ParseError::BadPayload("The payload is not valid JSON.".into()))?;
    let Value::Object(mut object) = value else {
        return Err(ParseError::BadPayload(
            "The payload must be a JSON object.".into(),
        ));
    };
    let op = match object.get("op") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ParseError::BadPayload("The field op must be an integer.".into()))?,
        Some(_) => {
            return Err(ParseError::BadPayload(
                "The field op must be an integer.".into(),
            ))
        }
        None => return Err(ParseError::BadPayload("The field op is missing.".into())),
    };
    // The envelope says `d` is an object or null for every op, so a `d` of
    // another shape is a bad payload whatever the op (known or not).
    let d = object.remove("d").unwrap_or(Value::Null);
    if !(d.is_object() || d.is_null()) {
        return Err(ParseError::BadPayload(
            "The field d must be an object or null.".into(),
        ));
    }
    match op {
        op::MESSAGE_CREATE => d_object(d).map(ClientPayload::MessageCreate),
        op::SHUTDOWN => d_object(d).map(ClientPayload::Shutdown),
        op::IDENTIFY => d_object(d).map(ClientPayload::Identify),
        // `d` carries nothing for a cache request: null or any object.
        op::CACHE_REQUEST => Ok(ClientPayload::CacheRequest),
        // Every field is optional: a missing or null `d` asks for the latest.
        op::HISTORY_REQUEST if d.is_null() => {
            Ok(ClientPayload::HistoryRequest(HistoryRequest::default()))
        }
        op::HISTORY_REQUEST => d_object(d).map(ClientPayload::HistoryRequest),
        other => Err(ParseError::UnknownOp(other)),
    }
}

fn d_object<T: for<'de> Deserialize<'de>>(d: Value) -> Result<T, ParseError> {
    if !d.is_object() {
        return Err(ParseError::BadPayload(
            "The field d must be an object.".into(),
        ));
    }
    serde_json::from_value(d).map_err(|e| ParseError::BadPayload(format!("Bad field in d: {e}.")))
}

/// NOTICE codes. `error` is derived from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeCode {
    Joined,
    Left,
    Info,
    BadPayload,
    UnknownOp,
    NotLoggedIn,
    AlreadyLoggedIn,
    InvalidName,
    NameTaken,
    Unauthorized,
    Forbidden,
    UnknownCommand,
    BadArguments,
    NoSuchRoom,
    RoomLocked,
    RoomClosed,
    Banned,
    NotInRoom,
    EmptyContent,
    ContentTooLong,
    RateLimited,
    Unavailable,
    Internal,
}

impl NoticeCode {
    /// The code on the wire (also a bounded metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeCode::Joined => "joined",
            NoticeCode::Left => "left",
            NoticeCode::Info => "info",
            NoticeCode::BadPayload => "bad_payload",
            NoticeCode::UnknownOp => "unknown_op",
            NoticeCode::NotLoggedIn => "not_logged_in",
            NoticeCode::AlreadyLoggedIn => "already_logged_in",
            NoticeCode::InvalidName => "invalid_name",
            NoticeCode::NameTaken => "name_taken",
            NoticeCode::Unauthorized => "unauthorized",
            NoticeCode::Forbidden => "forbidden",
            NoticeCode::UnknownCommand => "unknown_command",
            NoticeCode::BadArguments => "bad_arguments",
            NoticeCode::NoSuchRoom => "no_such_room",
            NoticeCode::RoomLocked => "room_locked",
            NoticeCode::RoomClosed => "room_closed",
            NoticeCode::Banned => "banned",
            NoticeCode::NotInRoom => "not_in_room",
            NoticeCode::EmptyContent => "empty_content",
            NoticeCode::ContentTooLong => "content_too_long",
            NoticeCode::RateLimited => "rate_limited",
            NoticeCode::Unavailable => "unavailable",
            NoticeCode::Internal => "internal",
        }
    }

    pub fn is_error(self) -> bool {
        !matches!(
            self,
            NoticeCode::Joined | NoticeCode::Left | NoticeCode::Info
        )
    }
}

impl Serialize for NoticeCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `reason` of a ROOM_STATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStateReason {
    Created,
    Opened,
    Unlocked,
    Unbanned,
    Deleted,
    Closed,
    Locked,
    Banned,
}

impl RoomStateReason {
    pub fn available(self) -> bool {
        matches!(
            self,
            RoomStateReason::Created
                | RoomStateReason::Opened
                | RoomStateReason::Unlocked
                | RoomStateReason::Unbanned
        )
    }
}

/// One room as CACHE_UPDATE lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: String,
    pub available: bool,
    pub locked: bool,
    pub closed: bool,
    pub users: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Me<'a> {
    pub name: &'a str,
    pub room: &'a str,
}

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    op: i64,
    d: T,
}

fn frame<T: Serialize>(op: i64, d: T) -> Frame {
    let json = serde_json::to_string(&Envelope { op, d })
        .expect("server payloads are plain data and always serialize");
    Frame::from(json)
}

/// NOTICE (op 7).
pub fn notice(code: NoticeCode, message: &str, room: Option<&str>, user: Option<&str>) -> Frame {
    #[derive(Serialize)]
    struct D<'a> {
        code: NoticeCode,
        error: bool,
        message: &'a str,
        room: Option<&'a str>,
        user: Option<&'a str>,
    }
    frame(
        op::NOTICE,
        D {
            code,
            error: code.is_error(),
            message,
            room,
            user,
        },
    )
}

/// A `joined` or `left` NOTICE for `name` in `room`: one wording wherever
/// presence is announced (sessions, and the reaper of a dead node).
pub fn presence_notice(joined: bool, name: &str, room: &str) -> Frame {
    let (code, verb) = if joined {
        (NoticeCode::Joined, "joined")
    } else {
        (NoticeCode::Left, "left")
    };
    notice(
        code,
        &format!("{name} {verb} {room}."),
        Some(room),
        Some(name),
    )
}

/// The answer to `\users`: a NOTICE `info` whose extra field `users` lists
/// the members, so clients need not parse `message`.
pub fn users_notice(message: &str, room: &str, users: &[String]) -> Frame {
    #[derive(Serialize)]
    struct D<'a> {
        code: NoticeCode,
        error: bool,
        message: &'a str,
        room: &'a str,
        user: Option<&'a str>,
        users: &'a [String],
    }
    frame(
        op::NOTICE,
        D {
            code: NoticeCode::Info,
            error: false,
            message,
            room,
            user: None,
            users,
        },
    )
}

/// ROOM_STATE (op 2).
pub fn room_state(room: &str, reason: RoomStateReason) -> Frame {
    #[derive(Serialize)]
    struct D<'a> {
        available: bool,
        room: &'a str,
        reason: RoomStateReason,
    }
    frame(
        op::ROOM_STATE,
        D {
            available: reason.available(),
            room,
            reason,
        },
    )
}

/// SHUTDOWN (op 3), server → client.
pub fn shutdown(reason: Option<&str>, reconnect: bool) -> Frame {
    #[derive(Serialize)]
    struct D<'a> {
        reason: Option<&'a str>,
        reconnect: bool,
    }
    frame(op::SHUTDOWN, D { reason, reconnect })
}

/// CACHE_UPDATE (op 4).
pub fn cache_update(
    rooms: &[RoomSummary],
    rooms_total: u64,
    command_prefix: &str,
    host: &str,
    port: u16,
    users: u64,
    me: Me<'_>,
) -> Frame {
    #[derive(Serialize)]
    struct D<'a> {
        rooms: &'a [RoomSummary],
        rooms_total: u64,
        command_prefix: &'a str,
        host: &'a str,
        port: u16,
        users: u64,
        me: Me<'a>,
    }
    frame(
        op::CACHE_UPDATE,
        D {
            rooms,
            rooms_total,
            command_prefix,
            host,
            port,
            users,
            me,
        },
    )
}

/// The `d` object of a MESSAGE frame built by [`MessageDraft::frame`]
/// (`{"op":0,"d":{…}}`), without parsing it. `None` for any other frame.
pub fn message_d(frame: &[u8]) -> Option<&[u8]> {
    frame.strip_prefix(MESSAGE_FRAME_HEAD)?.strip_suffix(b"}")
}

const MESSAGE_FRAME_HEAD: &[u8] = b"{\"op\":0,\"d\":";

/// Whether `frame` is a `joined` or `left` NOTICE built by
/// [`presence_notice`] (the fan-out may defer those), without parsing it.
pub fn is_presence_notice(frame: &[u8]) -> bool {
    frame.starts_with(PRESENCE_JOINED_HEAD) || frame.starts_with(PRESENCE_LEFT_HEAD)
}

const PRESENCE_JOINED_HEAD: &[u8] = b"{\"op\":7,\"d\":{\"code\":\"joined\",";
const PRESENCE_LEFT_HEAD: &[u8] = b"{\"op\":7,\"d\":{\"code\":\"left\",";

/// HISTORY (op 9). `messages` are MESSAGE frames (as stored by the
/// backplane) in `seq` order; their `d` objects are copied, not re-parsed.
/// Frames that are not MESSAGE frames are skipped.
pub fn history(
    room: &str,
    epoch: &str,
    messages: &[Bytes],
    last_seq: u64,
    complete: bool,
) -> Frame {
    let head = serde_json::json!({ "room": room, "epoch": epoch }).to_string();
    let capacity = head.len() + 64 + messages.iter().map(|m| m.len()).sum::<usize>();
    let mut out = String::with_capacity(capacity);
    out.push_str("{\"op\":9,\"d\":");
    // `head` is `{…}`: reopen it to append the remaining fields.
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"messages\":[");
    let mut first = true;
    for d in messages.iter().filter_map(|m| message_d(m)) {
        if !first {
            out.push(',');
        }
        first = false;
        // The frames were built from a Rust String and sliced at ASCII
        // boundaries, so they are UTF-8.
        out.push_str(std::str::from_utf8(d).unwrap_or("null"));
    }
    out.push_str(&format!(
        "],\"last_seq\":{last_seq},\"complete\":{complete}}}}}"
    ));
    Frame::from(out)
}

/// A chat message before the cluster gives it its `seq`.
///
/// The MESSAGE frame is built as `prefix + seq + suffix` so that whoever
/// assigns `seq` (the in-memory counter, or a Redis script atomically with
/// PUBLISH) can finish the frame without parsing or re-serializing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDraft {
    pub author: String,
    pub content: String,
    pub room: String,
    pub id: String,
    pub ts: u64,
}

impl MessageDraft {
    /// The two halves of the MESSAGE frame around its `seq`.
    pub fn frame_parts(&self) -> (String, String) {
        #[derive(Serialize)]
        struct D<'a> {
            author: &'a str,
            content: &'a str,
            room: &'a str,
            id: &'a str,
            ts: u64,
        }
        let d = serde_json::to_string(&D {
            author: &self.author,
            content: &self.content,
            room: &self.room,
            id: &self.id,
            ts: self.ts,
        })
        .expect("plain data serializes");
        // `d` ends with '}': reopen it to append `seq` as the last field.
        let open = &d[..d.len() - 1];
        (
            format!("{{\"op\":0,\"d\":{open},\"seq\":"),
            "}}".to_string(),
        )
    }

    /// The complete MESSAGE frame for a given `seq`.
    pub fn frame(&self, seq: u64) -> Bytes {
        let (prefix, suffix) = self.frame_parts();
        Bytes::from(format!("{prefix}{seq}{suffix}"))
    }
}

/// Case-insensitive key of a user name; names are compared by it cluster-wide.
pub fn user_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A user name: 1–32 characters of `A-Z a-z 0-9 _ - .`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A room name, normalised to lower case: 1–32 characters of `a-z 0-9 _ -`
/// (case-insensitive). `None` when invalid.
pub fn normalize_room_name(name: &str) -> Option<String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_notices_are_recognised_without_parsing() {
        assert!(is_presence_notice(
            presence_notice(true, "ann", "lobby").as_bytes()
        ));
        assert!(is_presence_notice(
            presence_notice(false, "ann", "lobby").as_bytes()
        ));
        let info = notice(NoticeCode::Info, "joined", Some("lobby"), Some("ann"));
        assert!(!is_presence_notice(info.as_bytes()));
        let message = MessageDraft {
            author: "ann".into(),
            content: "{\"op\":7,\"d\":{\"code\":\"joined\",".into(),
            room: "lobby".into(),
            id: "1".into(),
            ts: 1,
        }
        .frame(1);
        assert!(!is_presence_notice(&message));
    }

    #[test]
    fn parses_each_client_op() {
        assert_eq!(
            parse_client_frame(r#"{"op":1,"d":{"content":"hi","extra":1}}"#),
            Ok(ClientPayload::MessageCreate(MessageCreate {
                content: "hi".into(),
                room: None
            }))
        );
        assert_eq!(
            parse_client_frame(r#"{"op":6,"d":null}"#),
            Ok(ClientPayload::CacheRequest)
        );
        assert!(matches!(
            parse_client_frame(r#"{"op":5,"d":{"name":"a"}}"#),
            Ok(ClientPayload::Identify(_))
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":3,"d":{"key":"k"}}"#),
            Ok(ClientPayload::Shutdown(_))
        ));
        assert_eq!(
            parse_client_frame(
                r#"{"op":8,"d":{"room":"a","after":41,"before":50,"limit":5,"epoch":"E"}}"#
            ),
            Ok(ClientPayload::HistoryRequest(HistoryRequest {
                room: Some("a".into()),
                after: Some(41),
                before: Some(50),
                limit: Some(5),
                epoch: Some("E".into()),
            }))
        );
        assert_eq!(
            parse_client_frame(r#"{"op":8}"#),
            Ok(ClientPayload::HistoryRequest(HistoryRequest::default()))
        );
    }

    #[test]
    fn history_request_fields_are_type_checked() {
        for bad in [
            r#"{"op":8,"d":{"after":"41"}}"#,
            r#"{"op":8,"d":{"after":-1}}"#,
            r#"{"op":8,"d":{"before":1.5}}"#,
            r#"{"op":8,"d":{"limit":"all"}}"#,
            r#"{"op":8,"d":{"epoch":7}}"#,
            r#"{"op":8,"d":{"room":["a"]}}"#,
            r#"{"op":8,"d":"general"}"#,
        ] {
            assert!(
                matches!(parse_client_frame(bad), Err(ParseError::BadPayload(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_client_frame(r#"{"op":9,"d":{}}"#),
            Err(ParseError::UnknownOp(9))
        );
    }

    #[test]
    fn history_frame_holds_the_message_objects() {
        let draft = MessageDraft {
            author: "Jim".into(),
            content: "hi }".into(),
            room: "general".into(),
            id: "01J".into(),
            ts: 5,
        };
        let frame = history("general", "E1", &[draft.frame(1), draft.frame(2)], 7, false);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["op"], 9);
        assert_eq!(v["d"]["room"], "general");
        assert_eq!(v["d"]["epoch"], "E1");
        assert_eq!(v["d"]["last_seq"], 7);
        assert_eq!(v["d"]["complete"], false);
        assert_eq!(v["d"]["messages"][1]["seq"], 2);
        assert_eq!(v["d"]["messages"][0]["content"], "hi }");
        let empty: Value = serde_json::from_str(&history("r", "E", &[], 0, true)).unwrap();
        assert_eq!(empty["d"]["messages"], serde_json::json!([]));
    }

    #[test]
    fn refuses_bad_shapes() {
        for bad in [
            "not json",
            "[1,2]",
            "{}",
            r#"{"op":"1"}"#,
            r#"{"op":1.5}"#,
            r#"{"op":1,"d":null}"#,
            r#"{"op":1,"d":{"content":5}}"#,
            r#"{"op":1,"d":{}}"#,
            r#"{"op":5,"d":"x"}"#,
        ] {
            assert!(
                matches!(parse_client_frame(bad), Err(ParseError::BadPayload(_))),
                "{bad}"
            );
        }
        for (text, op) in [
            (r#"{"op":0,"d":{}}"#, 0),
            (r#"{"op":99}"#, 99),
            (r#"{"op":7}"#, 7),
        ] {
            assert_eq!(parse_client_frame(text), Err(ParseError::UnknownOp(op)));
        }
    }

    #[test]
    fn message_frame_is_valid_json_with_seq_last() {
        let draft = MessageDraft {
            author: "Jim".into(),
            content: "a \"quoted\" }".into(),
            room: "general".into(),
            id: "01J".into(),
            ts: 5,
        };
        let v: Value = serde_json::from_slice(&draft.frame(42)).unwrap();
        assert_eq!(v["op"], 0);
        assert_eq!(v["d"]["seq"], 42);
        assert_eq!(v["d"]["content"], "a \"quoted\" }");
    }

    #[test]
    fn names() {
        assert!(valid_user_name("Jim.my-1_"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("a b"));
        assert!(!valid_user_name(&"a".repeat(33)));
        assert_eq!(normalize_room_name("GenERal"), Some("general".into()));
        assert_eq!(normalize_room_name("a.b"), None);
    }
}

//! Just enough of the SwiftChat wire protocol (shared/PROTOCOL.md) for the
//! load generator: building the few client payloads it sends and pulling the
//! few fields it needs out of server frames without a full JSON parse.
//!
//! The hot path (one call per delivered message) only looks for `"op"`,
//! `"seq"`, `"room"` and `"content"` with a substring search. That is sound
//! for the frames this generator causes: keys are found wherever they sit in
//! the object, and a quote inside a JSON string is always escaped (`\"`), so
//! the pattern `"seq"` followed by `:` cannot start inside a string value.
//! The unit tests compare the fast path with serde_json on several shapes.

use memchr::memmem;

/// Opcodes (PROTOCOL.md).
pub const OP_MESSAGE: i64 = 0;
pub const OP_CACHE_UPDATE: i64 = 4;
pub const OP_NOTICE: i64 = 7;

/// The content prefix of benchmark messages: `b:<phase>:<sender>:<n>:<send_ns>`.
pub const BENCH_PREFIX: &[u8] = b"b:";

/// IDENTIFY (op 5) with an optional start room.
pub fn identify(name: &str, room: Option<&str>) -> String {
    match room {
        Some(room) => format!(r#"{{"op":5,"d":{{"name":"{name}","room":"{room}"}}}}"#),
        None => format!(r#"{{"op":5,"d":{{"name":"{name}"}}}}"#),
    }
}

/// MESSAGE_CREATE (op 1) with content that needs no JSON escaping (the
/// generator only sends ASCII letters, digits, `:`, `-` and a backslash, which
/// it escapes here).
pub fn message_create(content: &str) -> String {
    let mut s = String::with_capacity(content.len() + 32);
    s.push_str(r#"{"op":1,"d":{"content":""#);
    for c in content.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s.push_str("\"}}");
    s
}

/// Appends a benchmark MESSAGE_CREATE to `out` without allocating.
pub fn write_bench_message(out: &mut String, phase: u32, sender: u32, n: u64, send_ns: u64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        r#"{{"op":1,"d":{{"content":"b:{phase}:{sender}:{n}:{send_ns}"}}}}"#
    );
}

static OP_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"op\""));
static SEQ_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"seq\""));
static ROOM_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"room\""));
static CONTENT_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"content\""));
static TS_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"ts\""));
static CODE_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"code\""));

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Position just after `"key"` + optional white space + `:` + optional white
/// space, searching from `from`. Keys that are followed by something else than
/// a colon (the same text used as a value) are skipped.
fn value_start(b: &[u8], finder: &memmem::Finder<'_>, from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let pos = at + finder.find(&b[at..])?;
        let i = skip_ws(b, pos + finder.needle().len());
        if i < b.len() && b[i] == b':' {
            return Some(skip_ws(b, i + 1));
        }
        at = pos + 1;
    }
}

fn parse_int(b: &[u8], i: usize) -> Option<i64> {
    let mut i = i;
    let neg = i < b.len() && b[i] == b'-';
    if neg {
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((b[i] - b'0') as i64)?;
        i += 1;
    }
    if i == start {
        return None;
    }
    Some(if neg { -v } else { v })
}

/// A string value without escapes (room names, bench contents, codes). A
/// value that contains an escape is returned up to the backslash's string end
/// as raw bytes, which never equals a bench room or content, so it is counted
/// as foreign rather than misread.
fn parse_str(b: &[u8], i: usize) -> Option<&[u8]> {
    if i >= b.len() || b[i] != b'"' {
        return None;
    }
    let rest = &b[i + 1..];
    let mut j = 0;
    loop {
        let k = j + memchr::memchr(b'"', &rest[j..])?;
        // count the backslashes before the quote
        let mut bs = 0;
        while bs < k && rest[k - 1 - bs] == b'\\' {
            bs += 1;
        }
        if bs % 2 == 0 {
            return Some(&rest[..k]);
        }
        j = k + 1;
    }
}

/// The frame's `op`, or None if the frame has none.
pub fn op(frame: &[u8]) -> Option<i64> {
    parse_int(frame, value_start(frame, &OP_KEY, 0)?)
}

/// The fields of a MESSAGE (op 0) the generator checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub seq: u64,
    pub room: &'a [u8],
    pub content: &'a [u8],
    /// The server's acceptance time (Unix ms), if the frame has one.
    pub ts: Option<u64>,
}

/// Parses the fields of a MESSAGE frame (op already known to be 0).
pub fn message(frame: &[u8]) -> Option<Delivery<'_>> {
    let seq = parse_int(frame, value_start(frame, &SEQ_KEY, 0)?)?;
    let room = parse_str(frame, value_start(frame, &ROOM_KEY, 0)?)?;
    let content = parse_str(frame, value_start(frame, &CONTENT_KEY, 0)?)?;
    let ts = value_start(frame, &TS_KEY, 0)
        .and_then(|i| parse_int(frame, i))
        .and_then(|v| u64::try_from(v).ok());
    Some(Delivery {
        seq: u64::try_from(seq).ok()?,
        room,
        content,
        ts,
    })
}

/// The `code` of a NOTICE.
pub fn notice_code(frame: &[u8]) -> Option<&[u8]> {
    parse_str(frame, value_start(frame, &CODE_KEY, 0)?)
}

/// A parsed benchmark content `b:<phase>:<sender>:<n>:<send_ns>`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct BenchContent {
    pub phase: u32,
    pub sender: u32,
    pub n: u64,
    pub send_ns: u64,
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

pub fn bench_content(content: &[u8]) -> Option<BenchContent> {
    let rest = content.strip_prefix(BENCH_PREFIX)?;
    let mut it = rest.split(|&c| c == b':');
    let phase = parse_u64(it.next()?)?;
    let sender = parse_u64(it.next()?)?;
    let n = parse_u64(it.next()?)?;
    let send_ns = parse_u64(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    Some(BenchContent {
        phase: u32::try_from(phase).ok()?,
        sender: u32::try_from(sender).ok()?,
        n,
        send_ns,
    })
}

/// From a CACHE_UPDATE: `d.me.room` (full parse; only used during setup).
pub fn cache_update_room(frame: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    v.get("d")?
        .get("me")?
        .get("room")?
        .as_str()
        .map(str::to_owned)
}

/// From a NOTICE: `(code, error, message)` (full parse; setup only).
pub fn notice(frame: &str) -> Option<(String, bool, String)> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    let d = v.get("d")?;
    Some((
        d.get("code")?.as_str()?.to_owned(),
        d.get("error").and_then(|e| e.as_bool()).unwrap_or(false),
        d.get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_message(frame: &str) -> (i64, u64, String, String) {
        let v: serde_json::Value = serde_json::from_str(frame).unwrap();
        (
            v["op"].as_i64().unwrap(),
            v["d"]["seq"].as_u64().unwrap(),
            v["d"]["room"].as_str().unwrap().to_owned(),
            v["d"]["content"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn fast_path_agrees_with_serde() {
        let frames = [
            r#"{"op":0,"d":{"author":"Jimothy","content":"b:1:2:3:4","room":"room-1","id":"01JD","seq":42,"ts":1764133200123}}"#,
            r#"{"d":{"seq":7,"ts":1,"id":"x","room":"general","content":"b:0:0:0:99","author":"a"},"op":0}"#,
            r#"{ "op" : 0 , "d" : { "author" : "seq" , "content" : "b:9:8:7:6" , "room" : "r" , "seq" : 1 } }"#,
            r#"{"op":0,"d":{"author":"x","content":"say \"seq\":5 \\","room":"r","seq":3}}"#,
        ];
        for f in frames {
            let (op_s, seq_s, room_s, content_s) = serde_message(f);
            assert_eq!(op(f.as_bytes()), Some(op_s), "{f}");
            let d = message(f.as_bytes()).unwrap();
            assert_eq!(d.seq, seq_s, "{f}");
            let v: serde_json::Value = serde_json::from_str(f).unwrap();
            assert_eq!(d.ts, v["d"]["ts"].as_u64(), "{f}");
            assert_eq!(d.room, room_s.as_bytes(), "{f}");
            if !content_s.contains('"') && !content_s.contains('\\') {
                assert_eq!(d.content, content_s.as_bytes(), "{f}");
            } else {
                // escaped content is returned raw and never parses as bench content
                assert!(bench_content(d.content).is_none());
            }
        }
    }

    #[test]
    fn bench_content_round_trip() {
        let mut s = String::new();
        write_bench_message(&mut s, 3, 17, 12345, 987654321);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["op"], 1);
        let c = v["d"]["content"].as_str().unwrap();
        assert_eq!(
            bench_content(c.as_bytes()),
            Some(BenchContent {
                phase: 3,
                sender: 17,
                n: 12345,
                send_ns: 987654321
            })
        );
        assert_eq!(bench_content(b"b:1:2:3"), None);
        assert_eq!(bench_content(b"b:1:2:3:4:5"), None);
        assert_eq!(bench_content(b"hello"), None);
    }

    #[test]
    fn notice_and_cache_update() {
        let n = r#"{"op":7,"d":{"code":"rate_limited","error":true,"message":"slow down","room":null,"user":null}}"#;
        assert_eq!(op(n.as_bytes()), Some(7));
        assert_eq!(notice_code(n.as_bytes()), Some(&b"rate_limited"[..]));
        let c = r#"{"op":4,"d":{"rooms":[{"name":"general","users":3}],"me":{"name":"a","room":"room-3"}}}"#;
        assert_eq!(cache_update_room(c).as_deref(), Some("room-3"));
        let m = message_create(r"\join room-1");
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["d"]["content"], r"\join room-1");
        let i: serde_json::Value = serde_json::from_str(&identify("x", Some("r"))).unwrap();
        assert_eq!(i["op"], 5);
        assert_eq!(i["d"]["room"], "r");
    }
}

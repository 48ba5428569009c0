//! Property-based tests of the frame and JSON envelope parser
//! (`protocol::parse_client_frame`), against PROTOCOL.md "Transport" and
//! "Opcodes" written out as an independent oracle: every input is
//! classified exactly as the protocol says (bad_payload, unknown_op, or the
//! payload with its fields), and nothing panics.
//!
//! 2,000 cases per property in the normal suite; set `PROPTEST_CASES` (for
//! example `PROPTEST_CASES=1000000 cargo test --release --test
//! protocol_properties`) for a long run. The command parser has its own
//! properties next to it (`chat::commands` unit tests).

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use swiftchat::protocol::{parse_client_frame, ClientPayload, ParseError};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig::with_cases(cases)
}

/// What the protocol says the server answers to a text frame.
#[derive(Debug, PartialEq)]
enum Expected {
    BadPayload,
    UnknownOp(i64),
    History {
        room: Option<String>,
        after: Option<u64>,
        before: Option<u64>,
        limit: Option<u64>,
        epoch: Option<String>,
    },
    MessageCreate {
        content: String,
        room: Option<String>,
    },
    Shutdown {
        key: String,
        reason: Option<String>,
    },
    Identify {
        name: String,
        token: Option<String>,
        room: Option<String>,
        password: Option<String>,
    },
    CacheRequest,
}

/// The oracle, from PROTOCOL.md: "a frame that is not JSON, a JSON value
/// that is not an object, a missing or non-integer op, or a d of the wrong
/// shape (not an object where one is needed, a required field missing, a
/// field of the wrong type)" is bad_payload; `d` is "an object or null" for
/// every op; "an op the server does not know, or one sent in the wrong
/// direction" is unknown_op. Client ops: 1, 3, 5, 6, 8.
fn oracle(text: &str) -> Expected {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Expected::BadPayload;
    };
    // An integer op; a number outside i64 is not one the server can know,
    // and is treated as not an integer.
    let Some(op) = object.get("op").and_then(Value::as_i64) else {
        return Expected::BadPayload;
    };
    let d = object.get("d").cloned().unwrap_or(Value::Null);
    if !(d.is_object() || d.is_null()) {
        return Expected::BadPayload;
    }
    if op == 6 {
        return Expected::CacheRequest;
    }
    if op == 8 && d.is_null() {
        return Expected::History {
            room: None,
            after: None,
            before: None,
            limit: None,
            epoch: None,
        };
    }
    if ![1, 3, 5, 8].contains(&op) {
        return Expected::UnknownOp(op);
    }
    let Value::Object(d) = d else {
        return Expected::BadPayload;
    };
    // A required string field, or an optional one (absent or null: None).
    let required = |name: &str| match d.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(()),
    };
    let optional = |name: &str| match d.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    };
    // An optional non-negative integer.
    let count = |name: &str| match d.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(()),
    };
    let parsed: Result<Expected, ()> = match op {
        1 => (|| {
            Ok(Expected::MessageCreate {
                content: required("content")?,
                room: optional("room")?,
            })
        })(),
        3 => (|| {
            Ok(Expected::Shutdown {
                key: required("key")?,
                reason: optional("reason")?,
            })
        })(),
        8 => (|| {
            Ok(Expected::History {
                room: optional("room")?,
                after: count("after")?,
                before: count("before")?,
                limit: count("limit")?,
                epoch: optional("epoch")?,
            })
        })(),
        _ => (|| {
            Ok(Expected::Identify {
                name: required("name")?,
                token: optional("token")?,
                room: optional("room")?,
                password: optional("password")?,
            })
        })(),
    };
    parsed.unwrap_or(Expected::BadPayload)
}

fn actual(text: &str) -> Expected {
    match parse_client_frame(text) {
        Err(ParseError::BadPayload(message)) => {
            assert!(!message.is_empty(), "a bad_payload says why");
            Expected::BadPayload
        }
        Err(ParseError::UnknownOp(op)) => Expected::UnknownOp(op),
        Ok(ClientPayload::MessageCreate(m)) => Expected::MessageCreate {
            content: m.content,
            room: m.room,
        },
        Ok(ClientPayload::Shutdown(s)) => Expected::Shutdown {
            key: s.key,
            reason: s.reason,
        },
        Ok(ClientPayload::Identify(i)) => Expected::Identify {
            name: i.name,
            token: i.token,
            room: i.room,
            password: i.password,
        },
        Ok(ClientPayload::CacheRequest) => Expected::CacheRequest,
        Ok(ClientPayload::HistoryRequest(h)) => Expected::History {
            room: h.room,
            after: h.after,
            before: h.before,
            limit: h.limit,
            epoch: h.epoch,
        },
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(field_name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names that the parser cares about, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "op", "d", "content", "room", "key", "reason", "name", "token", "password", "after",
            "before", "limit", "epoch",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,6}",
    ]
}

/// A value for a field of `d`: usually a string or null, sometimes not.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => ".{0,20}".prop_map(Value::String),
        1 => Just(Value::Null),
        1 => (0u64..1000).prop_map(|n| json!(n)),
        1 => any_json(),
    ]
}

/// A `d` close to a valid one for some op: a random subset of the fields
/// the ops use, plus noise.
fn plausible_d() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(field_name(), field_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>()))
}

/// An envelope: an op (client ops, server ops, unknown numbers or not a
/// number), a d (plausible, any, or missing) and maybe extra fields.
fn envelope() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        6 => (-1i64..12).prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any_json(),
    ];
    let d = prop_oneof![
        4 => plausible_d().prop_map(Some),
        1 => any_json().prop_map(Some),
        1 => Just(None),
    ];
    (
        proptest::option::weighted(0.95, op),
        d,
        proptest::collection::btree_map("[a-z]{1,4}", any_json(), 0..2),
    )
        .prop_map(|(op, d, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            object.remove("op");
            object.remove("d");
            if let Some(op) = op {
                object.insert("op".into(), op);
            }
            if let Some(d) = d {
                object.insert("d".into(), d);
            }
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text (mostly not JSON): no panic, and the oracle's answer.
    #[test]
    fn any_text_is_classified(text in any::<String>()) {
        prop_assert_eq!(actual(&text), oracle(&text));
    }

    /// Any JSON value (mostly not an envelope).
    #[test]
    fn any_json_is_classified(value in any_json()) {
        let text = value.to_string();
        prop_assert_eq!(actual(&text), oracle(&text));
    }

    /// Envelopes near valid ones, for every op.
    #[test]
    fn envelopes_are_classified(value in envelope()) {
        let text = value.to_string();
        prop_assert_eq!(actual(&text), oracle(&text));
    }

    /// Envelopes cut short or with a byte changed: still answered, never a
    /// panic.
    #[test]
    fn damaged_envelopes_are_classified(
        value in envelope(),
        cut in any::<prop::sample::Index>(),
        insert in any::<char>(),
    ) {
        let text = value.to_string();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let truncated = &text[..at];
        prop_assert_eq!(actual(truncated), oracle(truncated));
        let mut changed = text.clone();
        changed.insert(at, insert);
        prop_assert_eq!(actual(&changed), oracle(&changed));
    }

    /// Every valid client payload parses to exactly its fields.
    #[test]
    fn valid_payloads_parse(
        op in prop::sample::select(vec![1i64, 3, 5, 6]),
        a in ".{0,40}",
        b in proptest::option::of(".{0,20}"),
        c in proptest::option::of(".{0,20}"),
        e in proptest::option::of(".{0,20}"),
    ) {
        let (d, expected) = match op {
            1 => (
                json!({"content": a, "room": b}),
                Expected::MessageCreate { content: a.clone(), room: b.clone() },
            ),
            3 => (
                json!({"key": a, "reason": b}),
                Expected::Shutdown { key: a.clone(), reason: b.clone() },
            ),
            5 => (
                json!({"name": a, "token": b, "room": c, "password": e}),
                Expected::Identify { name: a.clone(), token: b.clone(), room: c.clone(), password: e.clone() },
            ),
            _ => (Value::Null, Expected::CacheRequest),
        };
        let text = json!({"op": op, "d": d}).to_string();
        prop_assert_eq!(actual(&text), expected);
    }
}

/// The cases PROPTEST_CASES can miss: fixed examples of each rule.
#[test]
fn examples() {
    for (text, expected) in [
        (r#"{"op":6,"d":5}"#, Expected::BadPayload),
        (r#"{"op":99,"d":5}"#, Expected::BadPayload),
        (r#"{"op":99,"d":null}"#, Expected::UnknownOp(99)),
        (r#"{"op":6}"#, Expected::CacheRequest),
        (r#"{"op":6,"d":{"a":1}}"#, Expected::CacheRequest),
        (r#"{"op":1.0,"d":{"content":"x"}}"#, Expected::BadPayload),
        (
            r#"{"op":18446744073709551615,"d":null}"#,
            Expected::BadPayload,
        ),
        (
            r#"{"op":1,"d":{"content":"x","room":null}}"#,
            Expected::MessageCreate {
                content: "x".into(),
                room: None,
            },
        ),
        (
            r#"{"op":3,"d":{"key":"k","reason":[]}}"#,
            Expected::BadPayload,
        ),
    ] {
        assert_eq!(actual(text), expected, "{text}");
        assert_eq!(oracle(text), expected, "{text}");
    }
}

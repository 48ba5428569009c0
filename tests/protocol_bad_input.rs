//! Bad input and limits (PROTOCOL.md "Transport", "Opcodes", close codes):
//! bad_payload for each malformed payload, unknown_op, 1008 after more than
//! 10 bad payloads, 1009 for an oversized (or oversized fragmented)
//! message, 4009 for a slow consumer, HTTP 503 beyond max_connections.
//! After each, another client is still served.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::Event;
use common::expect;
use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};

const QUIET: Duration = Duration::from_millis(300);

backend_tests!(
    malformed_payloads_get_bad_payload,
    wrong_d_shapes_get_bad_payload,
    unknown_ops_get_unknown_op,
    extra_fields_are_ignored,
    more_than_10_bad_payloads_close_1008,
    oversized_message_closes_1009,
    oversized_fragmented_message_closes_1009,
    fragmented_message_within_the_limit_is_accepted,
    slow_consumer_closes_4009,
    max_connections_refuses_upgrade_with_503,
    silent_clients_are_dropped_after_ping_timeout,
);

/// Sends each payload on `c` and expects NOTICE bad_payload for each;
/// then checks that the connection is still open.
async fn expect_bad_payloads(c: &mut client::Client, payloads: &[Message]) {
    for p in payloads {
        c.send_raw(p.clone()).await;
        let what = match p {
            Message::Text(t) => t.as_str().to_string(),
            other => format!("{other:?}"),
        };
        let label = std::mem::replace(&mut c.label, format!("after sending {what:.80}"));
        c.expect_notice("bad_payload").await;
        c.label = label;
    }
    assert!(
        c.is_open().await,
        "[{}] connection closed after {} bad payloads",
        c.label,
        payloads.len()
    );
}

/// Closes `c` (logged in as `name`, in general) and waits until the
/// witness sees its `left`, so the next login gets no stray notice.
async fn leave_and_wait(c: client::Client, name: &str, w: &mut client::Client) {
    c.close().await;
    w.recv_until(&expect::left(name, "general")).await;
}

fn text(s: &str) -> Message {
    Message::text(s.to_string())
}

/// Binary frame, not JSON, not an object, missing or non-integer op.
async fn malformed_payloads_get_bad_payload(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Witness").await;
    let payloads: Vec<Message> = vec![
        Message::binary(br#"{"op":6,"d":null}"#.to_vec()),
        text("not json"),
        text("{"),
        text(""),
        text("[1,2]"),
        text("42"),
        text("\"a string\""),
        text("null"),
        text("true"),
        text("{}"),
        text(r#"{"d":{"content":"no op"}}"#),
        text(r#"{"op":"1","d":{"content":"x"}}"#),
        text(r#"{"op":1.5,"d":{"content":"x"}}"#),
        text(r#"{"op":null,"d":null}"#),
        text(r#"{"op":[1],"d":null}"#),
        text(r#"{"op":{"n":1},"d":null}"#),
    ];
    // Before login, at most 5 per connection (10 bad payloads are allowed).
    for chunk in payloads.chunks(5) {
        let mut c = node.connect().await;
        c.label = "not logged in".into();
        expect_bad_payloads(&mut c, chunk).await;
        // The bad payloads were not logins: this one is.
        let name = unique("late");
        c.identify(&name).await;
        leave_and_wait(c, &name, &mut w).await;
    }
    // After login as well.
    for chunk in payloads.chunks(5) {
        let name = unique("bad");
        let mut c = node.login(&name).await;
        w.recv_until(&expect::joined(&name, "general")).await;
        expect_bad_payloads(&mut c, chunk).await;
        c.roundtrip("served after bad payloads").await;
        w.recv_until(&expect::message(&name, "served after bad payloads"))
            .await;
        leave_and_wait(c, &name, &mut w).await;
    }
    w.roundtrip("witness still served").await;
}

/// "a d of the wrong shape (not an object where one is needed, a required
/// field missing, a field of the wrong type)".
async fn wrong_d_shapes_get_bad_payload(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Witness").await;
    // Before login: IDENTIFY and SHUTDOWN shapes (at most 4 IDENTIFYs per
    // connection, in case they count as failed logins).
    let groups: Vec<Vec<&str>> = vec![
        vec![
            r#"{"op":5,"d":null}"#,
            r#"{"op":5,"d":"Jimothy"}"#,
            r#"{"op":5,"d":{}}"#,
            r#"{"op":5,"d":{"name":5}}"#,
        ],
        vec![
            r#"{"op":5,"d":{"name":"Jim","token":5}}"#,
            r#"{"op":5,"d":{"name":"Jim","room":7}}"#,
            r#"{"op":5,"d":{"name":"Jim","password":1}}"#,
            r#"{"op":5,"d":["Jim"]}"#,
        ],
        vec![
            r#"{"op":1,"d":null}"#,
            r#"{"op":1,"d":{}}"#,
            r#"{"op":1,"d":{"content":5}}"#,
            r#"{"op":1,"d":"Jimothy"}"#,
        ],
        vec![
            r#"{"op":3,"d":null}"#,
            r#"{"op":3,"d":{}}"#,
            r#"{"op":3,"d":{"key":5}}"#,
            r#"{"op":3,"d":{"key":"k","reason":5}}"#,
            r#"{"op":3,"d":"key"}"#,
        ],
    ];
    for group in &groups {
        let mut c = node.connect().await;
        c.label = "not logged in".into();
        let msgs: Vec<Message> = group.iter().map(|s| text(s)).collect();
        expect_bad_payloads(&mut c, &msgs).await;
        let name = unique("shape");
        c.identify(&name).await;
        leave_and_wait(c, &name, &mut w).await;
    }
    // After login: MESSAGE_CREATE shapes.
    let mut c = node.login("Shaper").await;
    let msgs: Vec<Message> = [
        r#"{"op":1,"d":null}"#,
        r#"{"op":1,"d":{}}"#,
        r#"{"op":1,"d":{"content":5}}"#,
        r#"{"op":1,"d":{"content":["a"]}}"#,
        r#"{"op":1,"d":{"content":"x","room":5}}"#,
        r#"{"op":1,"d":[1]}"#,
    ]
    .iter()
    .map(|s| text(s))
    .collect();
    expect_bad_payloads(&mut c, &msgs).await;
    // None of them was sent.
    let frames = w.settle().await;
    assert!(
        frames
            .iter()
            .all(|f| f["op"] == 7 && (f["d"]["code"] == "joined" || f["d"]["code"] == "left")),
        "the witness saw more than joined/left notices: {}",
        client::show(&frames)
    );
    c.roundtrip("shaper served").await;
    w.roundtrip("witness served").await;
}

/// "An op the server does not know, or one sent in the wrong direction,
/// gets a NOTICE unknown_op."
async fn unknown_ops_get_unknown_op(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let ops = [
        r#"{"op":0,"d":{"author":"x","content":"y"}}"#,
        r#"{"op":2,"d":{"available":true,"room":"general"}}"#,
        r#"{"op":4,"d":null}"#,
        r#"{"op":7,"d":{"code":"info"}}"#,
        r#"{"op":9,"d":{"room":"general","messages":[]}}"#,
        r#"{"op":99,"d":{}}"#,
        r#"{"op":-1,"d":null}"#,
    ];
    let mut before = node.connect().await;
    before.label = "not logged in".into();
    let mut after = node.login("Opper").await;
    for c in [&mut before, &mut after] {
        for op in ops {
            c.send_text(op).await;
            let label = std::mem::replace(&mut c.label, format!("after {op}"));
            c.expect_notice("unknown_op").await;
            c.label = label;
        }
        assert!(c.is_open().await);
    }
    after.roundtrip("opper served").await;
    before.identify("LateOpper").await;
}

/// "Unknown extra fields are ignored."
async fn extra_fields_are_ignored(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut c = node.connect().await;
    c.label = "Extra".into();
    c.send_text(r#"{"op":6,"d":{"anything":1},"x":2}"#).await;
    c.expect_notice("not_logged_in").await;
    c.send_text(r#"{"op":5,"d":{"name":"Extra","nonce":"n","color":"red"},"trace":"t"}"#)
        .await;
    c.expect_login_success("Extra", true).await;
    c.send_text(r#"{"op":1,"d":{"content":"with extras","nonce":42},"v":1}"#)
        .await;
    c.expect(&expect::message("Extra", "with extras")).await;
    c.send_text(r#"{"op":6,"d":null,"extra":true}"#).await;
    c.expect(&expect::cache_me("Extra", "general")).await;
}

/// "More than 10 bad payloads within 60 s close the connection with code
/// 1008": 10 are answered with bad_payload, the 11th closes.
async fn more_than_10_bad_payloads_close_1008(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Witness").await;
    for logged_in in [false, true] {
        let mut x = node.connect().await;
        x.label = format!("bad sender (logged in: {logged_in})");
        if logged_in {
            x.identify(&unique("bad")).await;
        }
        for _ in 0..10 {
            x.send_text("this is not json").await;
            x.expect_notice("bad_payload").await;
        }
        assert!(x.is_open().await, "closed after only 10 bad payloads");
        x.send_text("this is not json").await;
        let before = x.expect_close(1008).await;
        assert!(
            before
                .iter()
                .all(|f| expect::notice("bad_payload").matches(f)),
            "frames before the close: {}",
            client::show(&before)
        );
        w.settle().await;
        w.roundtrip("witness still served").await;
    }
    node.assert_serving().await;
}

/// A text frame of exactly `len` bytes: a MESSAGE_CREATE with `content`
/// padded with an ignored extra field.
fn padded(content: &str, len: usize) -> String {
    let base = json!({"op": 1, "d": {"content": content}, "pad": ""}).to_string();
    assert!(base.len() <= len);
    let s = json!({"op": 1, "d": {"content": content}, "pad": "x".repeat(len - base.len())})
        .to_string();
    assert_eq!(s.len(), len);
    s
}

/// A payload larger than max_frame_bytes closes with 1009; exactly
/// max_frame_bytes is accepted.
async fn oversized_message_closes_1009(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Witness").await;
    let mut x = node.login("Bigmouth").await;
    w.expect(&expect::joined("Bigmouth", "general")).await;
    let limit = node.config.limits.max_frame_bytes;
    assert_eq!(limit, 16384, "default max_frame_bytes");
    x.send_text(&padded("exactly at the limit", limit)).await;
    x.expect(&expect::message("Bigmouth", "exactly at the limit"))
        .await;
    w.expect(&expect::message("Bigmouth", "exactly at the limit"))
        .await;

    x.send_text(&padded("one byte too many", limit + 1)).await;
    let before = x.expect_close(1009).await;
    assert!(
        before.is_empty(),
        "frames before the close: {}",
        client::show(&before)
    );
    w.expect(&expect::left("Bigmouth", "general")).await;
    w.assert_no_frame_within(QUIET).await; // the big message was not sent
    w.roundtrip("witness still served").await;

    // Before login too.
    let mut y = node.connect().await;
    y.label = "big before login".into();
    y.send_text(&padded("x", 20_000)).await;
    y.expect_close(1009).await;
    node.assert_serving().await;
}

fn fragment(data: &str, first: bool, last: bool) -> Message {
    let opcode = if first {
        OpCode::Data(Data::Text)
    } else {
        OpCode::Data(Data::Continue)
    };
    Message::Frame(Frame::message(data.as_bytes().to_vec(), opcode, last))
}

/// "for a fragmented message, all its fragments together": three
/// fragments each below the limit, together above it, close with 1009.
async fn oversized_fragmented_message_closes_1009(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Witness").await;
    let mut x = node.login("Fragger").await;
    w.expect(&expect::joined("Fragger", "general")).await;
    let whole = padded("fragmented too big", 18_000);
    let (a, rest) = whole.split_at(6000);
    let (b, c) = rest.split_at(6000);
    x.send_raw(fragment(a, true, false)).await;
    x.send_raw(fragment(b, false, false)).await;
    let _ = x.try_send_raw(fragment(c, false, true)).await;
    x.expect_close(1009).await;
    w.expect(&expect::left("Fragger", "general")).await;
    w.assert_no_frame_within(QUIET).await;
    w.roundtrip("witness still served").await;
}

async fn fragmented_message_within_the_limit_is_accepted(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut x = node.login("Fragment").await;
    let whole = padded("assembled", 15_000);
    let (a, rest) = whole.split_at(5000);
    let (b, c) = rest.split_at(5000);
    x.send_raw(fragment(a, true, false)).await;
    x.send_raw(fragment(b, false, false)).await;
    x.send_raw(fragment(c, false, true)).await;
    x.expect(&expect::message("Fragment", "assembled")).await;
}

/// A client that never reads while others flood its room overflows its
/// bounded queue and is closed with 4009; the room keeps working.
///
/// The senders run closed loops (send, then wait for their own echo), so
/// their own queues never hold more than a few frames, while the victim's
/// socket buffers fill up and then its queue overflows.
async fn slow_consumer_closes_4009(backend: Backend) {
    const CONTENT_CHARS: usize = 60_000;
    const SENDERS: usize = 3;
    let node = TestNode::start(backend, |c| {
        c.limits.outbound_queue = 8;
        c.limits.messages_per_second = 100_000;
        c.limits.message_burst = 100_000;
        c.limits.max_content_chars = CONTENT_CHARS;
        c.limits.max_frame_bytes = 256 * 1024;
        c.limits.close_grace_ms = 10_000;
    })
    .await;
    let mut first = node.login("Flood0").await;
    first.create_room("slowroom").await;
    let mut senders = vec![first];
    for i in 1..SENDERS {
        let mut s = node.login(&format!("Flood{i}")).await;
        s.join_room("slowroom", None).await;
        for prev in senders.iter_mut() {
            prev.expect(&expect::joined(&format!("Flood{i}"), "slowroom"))
                .await;
        }
        senders.push(s);
    }
    let mut victim = node.login("Sleeper").await;
    victim.join_room("slowroom", None).await;
    for s in senders.iter_mut() {
        s.expect(&expect::joined("Sleeper", "slowroom")).await;
    }
    // From here on the victim does not read.

    let victim_left = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicUsize::new(0));
    let content = "z".repeat(CONTENT_CHARS);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for mut s in senders.into_iter() {
        let (victim_left, sent_total, content) =
            (victim_left.clone(), sent_total.clone(), content.clone());
        tasks.push(tokio::spawn(async move {
            let me = s.label.clone();
            while !victim_left.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30)
            {
                s.send_message(&content).await;
                sent_total.fetch_add(1, Ordering::Relaxed);
                // Wait for the own echo; watch for the victim's `left`.
                loop {
                    match s.recv_event().await {
                        Event::Json(v) if v["op"] == 0 => {
                            if v["d"]["author"] == me.as_str() {
                                break;
                            }
                        }
                        Event::Json(v) if expect::left("Sleeper", "slowroom").matches(&v) => {
                            victim_left.store(true, Ordering::SeqCst);
                        }
                        other => panic!("[{me}] (a reading sender) got {other:?} during the flood"),
                    }
                }
            }
            s
        }));
    }
    let mut senders = Vec::new();
    for t in tasks {
        match t.await {
            Ok(s) => senders.push(s),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    assert!(
        victim_left.load(Ordering::SeqCst),
        "the non-reading client was not dropped within 30 s ({} messages of {CONTENT_CHARS} chars sent to its room)",
        sent_total.load(Ordering::Relaxed)
    );
    // The victim now reads what was buffered, then the close frame 4009.
    victim.set_timeout(Duration::from_secs(10));
    let mut messages = 0;
    loop {
        match victim.recv_event().await {
            Event::Json(v) if v["op"] == 0 => messages += 1,
            Event::Json(_) => {}
            Event::Close(Some((4009, _))) => break,
            other => panic!(
                "slow consumer: expected close 4009 after {messages} messages, got {other:?}"
            ),
        }
    }
    // The senders and the room still work.
    for s in senders.iter_mut() {
        s.settle().await;
    }
    senders[0].roundtrip("the room still works").await;
    senders[1]
        .recv_until(&expect::message("Flood0", "the room still works"))
        .await;
    node.assert_serving().await;
}

/// "max_connections ... beyond it new upgrades get HTTP 503".
async fn max_connections_refuses_upgrade_with_503(backend: Backend) {
    let node = TestNode::start(backend, |c| c.limits.max_connections = 2).await;
    let mut a = node.login("One").await;
    let b = node.connect().await;
    match client::Client::try_connect(node.addr()).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(
                resp.status().as_u16(),
                503,
                "upgrade beyond max_connections"
            )
        }
        Err(e) => panic!("expected HTTP 503, got error {e}"),
        Ok(_) => panic!("a third WebSocket was accepted with max_connections = 2"),
    }
    // Plain HTTP is not a WebSocket and still works.
    assert_eq!(http::get(node.addr(), "/healthz").await.status, 200);
    a.roundtrip("existing connections are served").await;
    // A closed connection frees its slot.
    b.close().await;
    let addr = node.addr();
    let ok = poll_until(Duration::from_secs(2), move || async move {
        client::Client::try_connect(addr).await.ok()
    })
    .await;
    let mut c = ok.expect("a slot did not free up within 2 s after a connection closed");
    c.identify("Third").await;
}

/// "The server pings every ping_interval and closes a connection that has
/// not answered (pong or any frame) within ping_timeout." A client that
/// reads (tungstenite answers pings) stays; one that never reads goes.
async fn silent_clients_are_dropped_after_ping_timeout(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.limits.ping_interval_secs = 1;
        c.limits.ping_timeout_secs = 2;
    })
    .await;
    let mut w = node.login("Reader").await;
    let silent = node.login("Silent").await;
    w.expect(&expect::joined("Silent", "general")).await;
    // The silent client neither reads nor writes from now on. The reader
    // keeps reading (and so answers pings) while it waits.
    let start = std::time::Instant::now();
    w.recv_until_within(&expect::left("Silent", "general"), Duration::from_secs(6))
        .await;
    let t = start.elapsed();
    assert!(
        t >= Duration::from_millis(1500),
        "dropped after {t:?}, before ping_timeout (2 s)"
    );
    // The reader, idle but answering pings, outlived the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut w2 = w;
    w2.set_timeout(Duration::from_secs(5));
    // Keep reading through one more ping period before the roundtrip.
    w2.assert_no_frame_within(Duration::from_millis(1500)).await;
    w2.roundtrip("idle reader kept").await;
    drop(silent);
}

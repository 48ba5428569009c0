//! Messages (PROTOCOL.md op 0 MESSAGE, op 1 MESSAGE_CREATE): fields, `seq`
//! (gapless per room, same for every member, restarting for a re-created
//! room), `d.room`, content rules, the command prefix, rate limiting and
//! flooding (4008).

mod common;

use std::time::Duration;

use common::client::Event;
use common::expect::{self, assert_has};
use common::*;
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(300);

backend_tests!(
    message_has_all_fields_and_reaches_the_author,
    messages_go_only_to_the_room,
    seq_is_gapless_and_identical_for_all_members,
    seq_restarts_when_a_room_is_recreated,
    seq_continues_in_an_empty_room,
    d_room_must_name_the_current_room,
    content_rules,
    content_is_delivered_verbatim,
    doubled_prefix_posts_one_prefix,
    custom_command_prefix,
    rate_limit_burst_then_rate_limited,
    commands_count_for_the_rate_limit,
    flooding_closes_4008,
);

/// op 0: author, content, room, id, seq, ts; every member, author included.
async fn message_has_all_fields_and_reaches_the_author(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = node.login("Jimothy").await;
    let mut b = node.login("Pam").await;
    a.expect(&expect::joined("Pam", "general")).await;

    let before = now_millis();
    a.send_json(json!({"op": 1, "d": {"content": "Hello world!"}}))
        .await;
    let ma = a.expect(&expect::message("Jimothy", "Hello world!")).await;
    let mb = b.expect(&expect::message("Jimothy", "Hello world!")).await;
    let after = now_millis();
    let d = &ma["d"];
    assert_eq!(d["room"], "general", "{ma}");
    assert!(
        d["id"].as_str().is_some_and(|s| !s.is_empty()),
        "id must be a non-empty string: {ma}"
    );
    assert_eq!(d["seq"], 1, "{ma}");
    let ts = d["ts"]
        .as_i64()
        .unwrap_or_else(|| panic!("ts must be an integer (Unix ms): {ma}"));
    assert!(
        ts >= before - 5 && ts <= after + 5,
        "ts {ts} not within [{before}, {after}] ms"
    );
    assert_eq!(ma["d"], mb["d"], "every member sees the same message");

    b.send_json(json!({"op": 1, "d": {"content": "second"}}))
        .await;
    let m2 = b.expect(&expect::message("Pam", "second")).await;
    a.expect(&expect::message("Pam", "second")).await;
    assert_eq!(m2["d"]["seq"], 2, "{m2}");
    assert_ne!(m2["d"]["id"], ma["d"]["id"], "ids must be unique");
    a.assert_no_frame_within(QUIET).await;
    b.assert_no_frame_within(Duration::from_millis(10)).await;
}

async fn messages_go_only_to_the_room(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("InGeneral").await;
    let mut b = node.login("Elsewhere").await;
    a.expect(&expect::joined("Elsewhere", "general")).await;
    b.create_room("elsewhere").await;
    a.settle().await;
    a.roundtrip("for general only").await;
    b.assert_no_frame_within(QUIET).await;
    let m = b.roundtrip("for elsewhere only").await;
    assert_eq!(m["room"], "elsewhere");
    assert_eq!(m["seq"], 1, "seq is per room: {m}");
    a.assert_no_frame_within(QUIET).await;
}

/// Sends `n` messages `"{label}-{i}"`, then reads until `total` MESSAGEs
/// arrived (any other frame fails). Returns the MESSAGE `d`s in order.
async fn send_and_collect(c: &mut client::Client, n: usize, total: usize) -> Vec<Value> {
    for i in 0..n {
        let content = format!("{}-{i}", c.label);
        c.send_message(&content).await;
    }
    let mut got = Vec::new();
    while got.len() < total {
        let v = c.expect_op(0).await;
        got.push(v["d"].clone());
    }
    got
}

/// `seq` numbers a room's messages 1, 2, 3, ... with no gaps or repeats;
/// every member sees the same seq for the same message, in the same order;
/// one connection's messages arrive in the order it sent them.
async fn seq_is_gapless_and_identical_for_all_members(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("SeqA").await;
    a.create_room("seqroom").await;
    let mut b = node.login("SeqB").await;
    b.join_room("seqroom", None).await;
    a.expect(&expect::joined("SeqB", "seqroom")).await;
    let mut c = node.login("SeqC").await;
    c.join_room("seqroom", None).await;
    a.expect(&expect::joined("SeqC", "seqroom")).await;
    b.expect(&expect::joined("SeqC", "seqroom")).await;

    const N: usize = 25;
    let (ra, rb, rc) = tokio::join!(
        send_and_collect(&mut a, N, 3 * N),
        send_and_collect(&mut b, N, 3 * N),
        send_and_collect(&mut c, N, 3 * N),
    );
    for (who, got) in [("SeqA", &ra), ("SeqB", &rb), ("SeqC", &rc)] {
        let seqs: Vec<u64> = got
            .iter()
            .map(|d| d["seq"].as_u64().expect("seq"))
            .collect();
        let want: Vec<u64> = (1..=(3 * N) as u64).collect();
        assert_eq!(seqs, want, "[{who}] seqs in the order received");
        for d in got.iter() {
            assert_eq!(d["room"], "seqroom");
        }
        for author in ["SeqA", "SeqB", "SeqC"] {
            let contents: Vec<&str> = got
                .iter()
                .filter(|d| d["author"] == author)
                .map(|d| d["content"].as_str().unwrap())
                .collect();
            let want: Vec<String> = (0..N).map(|i| format!("{author}-{i}")).collect();
            assert_eq!(contents, want, "[{who}] {author}'s messages in send order");
        }
        let mut ids: Vec<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3 * N, "[{who}] ids must be unique");
    }
    assert_eq!(ra, rb, "SeqA and SeqB must see identical messages");
    assert_eq!(ra, rc, "SeqA and SeqC must see identical messages");
}

/// "A room deleted and created again starts again at 1."
async fn seq_restarts_when_a_room_is_recreated(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Phoenix").await;
    a.create_room("phoenix").await;
    assert_eq!(a.roundtrip("one").await["seq"], 1);
    assert_eq!(a.roundtrip("two").await["seq"], 2);
    a.command("\\delete").await;
    let frames = a.settle().await;
    assert_has(
        "Phoenix",
        &frames,
        &[
            expect::room_state("phoenix", "deleted"),
            expect::cache_me("Phoenix", "general"),
        ],
    );
    a.create_room("phoenix").await;
    let m = a.roundtrip("again").await;
    assert_eq!(m["seq"], 1, "a re-created room starts at 1: {m}");
    assert_eq!(a.roundtrip("again2").await["seq"], 2);
}

/// "A room with no members stays until deleted": its numbering continues.
async fn seq_continues_in_an_empty_room(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Keeper").await;
    a.create_room("keep").await;
    assert_eq!(a.roundtrip("k1").await["seq"], 1);
    a.command("\\leave").await;
    a.expect_all(vec![
        expect::cache_me("Keeper", "general"),
        expect::joined("Keeper", "general"),
        expect::notice("info"),
    ])
    .await;
    assert_eq!(a.roundtrip("g1").await["seq"], 1, "general has its own seq");
    a.join_room("keep", None).await; // exists: no ROOM_STATE created
    assert_eq!(a.roundtrip("k2").await["seq"], 2);
    a.assert_no_frame_within(QUIET).await;
}

/// "An optional d.room MUST name the current room (compared
/// case-insensitively), else NOTICE not_in_room."
async fn d_room_must_name_the_current_room(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Roomy").await;
    let mut b = node.login("Listener").await;
    a.expect(&expect::joined("Listener", "general")).await;
    a.send_json(json!({"op": 1, "d": {"content": "exact", "room": "general"}}))
        .await;
    a.expect(&expect::message("Roomy", "exact")).await;
    b.expect(&expect::message("Roomy", "exact")).await;
    a.send_json(json!({"op": 1, "d": {"content": "upper", "room": "GENERAL"}}))
        .await;
    let m = a.expect(&expect::message("Roomy", "upper")).await;
    assert_eq!(m["d"]["room"], "general");
    b.expect(&expect::message("Roomy", "upper")).await;
    a.send_json(json!({"op": 1, "d": {"content": "misdirected", "room": "other"}}))
        .await;
    a.expect_notice("not_in_room").await;
    b.create_room("other").await;
    a.expect_all(vec![
        expect::room_state("other", "created"),
        expect::left("Listener", "general"),
    ])
    .await;
    // A room that exists but is not a's current room.
    a.send_json(json!({"op": 1, "d": {"content": "misdirected", "room": "other"}}))
        .await;
    a.expect_notice("not_in_room").await;
    b.assert_no_frame_within(QUIET).await;
    a.assert_no_frame_within(Duration::from_millis(10)).await;
}

/// content: 1..=max_content_chars characters, not only white space;
/// else empty_content / content_too_long and nothing is sent.
async fn content_rules(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Writer").await;
    let mut b = node.login("Reader").await;
    a.expect(&expect::joined("Reader", "general")).await;
    for empty in ["", " ", "   \t\n  "] {
        a.send_message(empty).await;
        a.expect_notice("empty_content").await;
    }
    let too_long_ascii = "a".repeat(2001);
    a.send_message(&too_long_ascii).await;
    a.expect_notice("content_too_long").await;
    // Characters, not bytes: 2001 two-byte characters are too long...
    let too_long_accented = "é".repeat(2001);
    a.send_message(&too_long_accented).await;
    a.expect_notice("content_too_long").await;
    b.assert_no_frame_within(QUIET).await;
    // ... and 2000 of them (4000 bytes) are fine.
    let max_accented = "é".repeat(2000);
    a.send_message(&max_accented).await;
    a.expect(&expect::message("Writer", &max_accented)).await;
    b.expect(&expect::message("Writer", &max_accented)).await;
    let max_ascii = "z".repeat(2000);
    a.send_message(&max_ascii).await;
    a.expect(&expect::message("Writer", &max_ascii)).await;
    b.expect(&expect::message("Writer", &max_ascii)).await;
    let m = a.roundtrip(" x ").await;
    assert_eq!(m["content"], " x ", "content is not trimmed");
    b.roundtrip("reader still served").await;
}

async fn content_is_delivered_verbatim(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = node.login("Verbatim").await;
    let text = "héllo 🌍 \"quoted\" </script> {\"op\":3} \u{0}nul back\\slash";
    let m = a.roundtrip(text).await;
    assert_eq!(m["content"], text);
}

/// "A doubled prefix sends the text with one prefix: \\o/ posts \o/";
/// commands are not broadcast.
async fn doubled_prefix_posts_one_prefix(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Waver").await;
    let mut b = node.login("Seer").await;
    a.expect(&expect::joined("Seer", "general")).await;
    a.send_message(r"\\o/").await;
    a.expect(&expect::message("Waver", r"\o/")).await;
    b.expect(&expect::message("Waver", r"\o/")).await;
    a.send_message(r"\\help").await;
    a.expect(&expect::message("Waver", r"\help")).await;
    b.expect(&expect::message("Waver", r"\help")).await;
    // A command is not broadcast.
    a.send_message(r"\help").await;
    a.expect_notice("info").await;
    b.assert_no_frame_within(QUIET).await;
    // A prefix inside the text is plain text.
    a.send_message(r"not \help").await;
    b.expect(&expect::message("Waver", r"not \help")).await;
}

/// `server.command_prefix` is what CACHE_UPDATE advertises and what
/// commands start with.
async fn custom_command_prefix(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.server.command_prefix = "/".into();
    })
    .await;
    let mut a = node.connect().await;
    let cache = a.identify("Slasher").await;
    assert_eq!(cache["command_prefix"], "/", "{cache}");
    a.send_message("/help").await;
    a.expect_notice("info").await;
    a.send_message(r"\help").await;
    a.expect(&expect::message("Slasher", r"\help")).await;
    a.send_message("//me waves").await;
    a.expect(&expect::message("Slasher", "/me waves")).await;
    a.send_message("/nosuchcommand").await;
    a.expect_notice("unknown_command").await;
}

/// 5 per second with a burst of 10, then NOTICE rate_limited and the
/// payload is dropped.
async fn rate_limit_burst_then_rate_limited(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = node.login("Rater").await;
    let mut b = node.login("Audience").await;
    a.expect(&expect::joined("Audience", "general")).await;
    for i in 0..12 {
        a.send_message(&format!("m{i}")).await;
    }
    let frames = a.settle().await;
    let delivered: Vec<&str> = frames
        .iter()
        .filter(|f| f["op"] == 0)
        .map(|f| f["d"]["content"].as_str().unwrap())
        .collect();
    let limited = frames
        .iter()
        .filter(|f| expect::notice("rate_limited").matches(f))
        .count();
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(
        delivered,
        want,
        "the burst of 10 is delivered; frames: {}",
        client::show(&frames)
    );
    assert_eq!(
        limited,
        2,
        "payloads 11 and 12 get rate_limited; frames: {}",
        client::show(&frames)
    );
    assert_eq!(frames.len(), 12, "{}", client::show(&frames));
    let seen = b.settle().await;
    assert_eq!(
        seen.len(),
        10,
        "the others see only the 10 accepted: {}",
        client::show(&seen)
    );
    // 5 per second: after a second there are tokens again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.roundtrip("after a pause").await;
    b.expect(&expect::message("Rater", "after a pause")).await;
}

/// "messages and commands alike" count for the rate limit.
async fn commands_count_for_the_rate_limit(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = node.login("Helper").await;
    for _ in 0..10 {
        a.send_message(r"\help").await;
    }
    for _ in 0..10 {
        a.expect_notice("info").await;
    }
    a.send_message("text").await;
    a.expect_notice("rate_limited").await;
    a.send_message(r"\help").await;
    a.expect_notice("rate_limited").await;
    a.assert_no_frame_within(QUIET).await;
}

/// "Sustained flooding (over 100 rate-limited payloads in 60 s) closes
/// with 4008": 100 are tolerated, the 101st closes.
async fn flooding_closes_4008(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Bystander").await;
    let mut x = node.login("Flooder").await;
    w.expect(&expect::joined("Flooder", "general")).await;
    // 110 at once: 10 accepted, about 100 rate-limited.
    for i in 0..110 {
        x.feed_raw(tungstenite_text(&format!("flood{i}")))
            .await
            .expect("feed");
    }
    x.flush().await.expect("flush");
    let mut limited = 0;
    for _ in 0..110 {
        let v = x.recv_json().await;
        if expect::notice("rate_limited").matches(&v) {
            limited += 1;
        } else {
            assert_eq!(v["op"], 0, "expected a message or rate_limited, got {v}");
        }
    }
    assert!(
        limited <= 100,
        "more than 100 rate-limited without a close: {limited}"
    );
    // Top up, one at a time, to exactly 100 rate-limited payloads.
    while limited < 100 {
        x.send_message("top up").await;
        let v = x.recv_json().await;
        if expect::notice("rate_limited").matches(&v) {
            limited += 1;
        } else {
            assert_eq!(v["op"], 0, "expected a message or rate_limited, got {v}");
        }
    }
    assert!(
        x.is_open().await,
        "closed after only 100 rate-limited payloads"
    );
    // The next rate-limited payload (the 101st) closes with 4008.
    loop {
        x.send_message("one too many").await;
        match x.recv_event().await {
            Event::Json(v) if v["op"] == 0 => continue, // a token had refilled
            Event::Json(v) if expect::notice("rate_limited").matches(&v) => {
                x.expect_close(4008).await;
                break;
            }
            Event::Close(Some((4008, _))) => break,
            other => panic!("101st rate-limited payload: expected close 4008, got {other:?}"),
        }
    }
    w.recv_until(&expect::left("Flooder", "general")).await;
    w.roundtrip("bystander still served").await;
    node.assert_serving().await;
}

fn tungstenite_text(content: &str) -> tokio_tungstenite::tungstenite::Message {
    tokio_tungstenite::tungstenite::Message::text(
        json!({"op": 1, "d": {"content": content}}).to_string(),
    )
}

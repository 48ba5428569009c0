//! History (PROTOCOL.md ops 8 HISTORY_REQUEST and 9 HISTORY): paging
//! forwards and backwards, `limit` capped by `history.page_size`, trimmed
//! or expired history (`complete: false`), `epoch` across delete and
//! re-create, access only to the current room (bans hold), `\delete`
//! erasing history, history off, and the rate limit.

mod common;

use std::time::Duration;

use common::expect::{self, assert_has};
use common::*;
use serde_json::{json, Value};

backend_tests!(
    pages_forwards_and_backwards,
    limit_defaults_to_and_is_capped_by_page_size,
    trimmed_history_is_incomplete,
    expired_history_is_incomplete,
    epoch_changes_when_a_room_is_deleted_and_recreated,
    only_the_current_room_can_be_read,
    a_banned_user_cannot_read_the_room,
    bad_fields_are_bad_payload,
    history_off_keeps_nothing,
    requests_count_toward_the_rate_limit,
    long_messages_end_a_page_early,
);

/// Sends op 8 with `d` and returns the HISTORY's `d`.
async fn history(c: &mut Client, d: Value) -> Value {
    c.send_json(json!({"op": 8, "d": d})).await;
    c.recv_until(&expect::op(9)).await["d"].clone()
}

fn seqs(d: &Value) -> Vec<u64> {
    d["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages must be an array: {d}"))
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

/// Sends `n` messages `prefix1..prefixn` and waits for each to come back.
async fn send_many(c: &mut Client, prefix: &str, n: usize) {
    for i in 1..=n {
        c.roundtrip(&format!("{prefix}{i}")).await;
    }
}

async fn pages_forwards_and_backwards(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Hist").await;
    a.create_room("pages").await;
    send_many(&mut a, "m", 7).await;

    let latest = history(&mut a, json!({"limit": 3})).await;
    assert_eq!(seqs(&latest), [5, 6, 7], "{latest}");
    assert_eq!(latest["room"], "pages");
    assert_eq!(latest["last_seq"], 7);
    assert_eq!(latest["complete"], true, "{latest}");
    let epoch = latest["epoch"].as_str().expect("epoch string").to_string();
    assert!(!epoch.is_empty());
    // Every message is the MESSAGE d object.
    let m = &latest["messages"][0];
    assert_eq!(m["author"], "Hist");
    assert_eq!(m["content"], "m5");
    assert_eq!(m["room"], "pages");
    assert!(m["id"].is_string() && m["ts"].is_u64(), "{m}");

    // Forwards from a position, oldest first, pages ending before last_seq.
    let page = history(
        &mut a,
        json!({"room": "PAGES", "after": 2, "limit": 3, "epoch": epoch}),
    )
    .await;
    assert_eq!(seqs(&page), [3, 4, 5], "{page}");
    assert_eq!(page["complete"], true);
    assert_eq!(page["last_seq"], 7);
    let rest = history(&mut a, json!({"after": 5, "epoch": epoch})).await;
    assert_eq!(seqs(&rest), [6, 7]);
    assert_eq!(rest["complete"], true);
    let none = history(&mut a, json!({"after": 7})).await;
    assert_eq!(seqs(&none), Vec::<u64>::new());
    assert_eq!(none["complete"], true, "nothing was missed: {none}");

    // Backwards (scrolling up).
    let back = history(&mut a, json!({"before": 5, "limit": 2})).await;
    assert_eq!(seqs(&back), [3, 4], "{back}");
    assert_eq!(back["complete"], true);
    let first = history(&mut a, json!({"before": 3})).await;
    assert_eq!(seqs(&first), [1, 2]);
    assert_eq!(first["complete"], true);
    // Both bounds: between them, oldest first.
    let between = history(&mut a, json!({"after": 2, "before": 6})).await;
    assert_eq!(seqs(&between), [3, 4, 5]);
    assert_eq!(between["epoch"], epoch.as_str());
}

async fn limit_defaults_to_and_is_capped_by_page_size(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.history.page_size = 4;
    })
    .await;
    let mut a = node.login("Capped").await;
    a.create_room("capped").await;
    send_many(&mut a, "c", 6).await;
    let d = history(&mut a, json!({"limit": 100})).await;
    assert_eq!(seqs(&d), [3, 4, 5, 6], "{d}");
    let d = history(&mut a, json!({})).await;
    assert_eq!(seqs(&d), [3, 4, 5, 6], "default limit is page_size");
    let d = history(&mut a, json!({"after": 0, "limit": 100})).await;
    assert_eq!(seqs(&d), [1, 2, 3, 4]);
    assert_eq!(d["complete"], true, "a page may end before last_seq");
    assert_eq!(d["last_seq"], 6);
}

async fn trimmed_history_is_incomplete(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.history.max_messages = 3;
    })
    .await;
    let mut a = node.login("Trim").await;
    a.create_room("trim").await;
    send_many(&mut a, "t", 5).await;
    let d = history(&mut a, json!({"after": 0})).await;
    assert_eq!(seqs(&d), [3, 4, 5], "{d}");
    assert_eq!(d["complete"], false, "1 and 2 were trimmed: {d}");
    let d = history(&mut a, json!({})).await;
    assert_eq!(seqs(&d), [3, 4, 5]);
    assert_eq!(d["complete"], false, "older ones are gone: {d}");
    let d = history(&mut a, json!({"after": 2})).await;
    assert_eq!(seqs(&d), [3, 4, 5]);
    assert_eq!(d["complete"], true, "nothing after 2 is missing: {d}");
}

async fn expired_history_is_incomplete(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.history.ttl_secs = 1;
    })
    .await;
    let mut a = node.login("Expire").await;
    a.create_room("expire").await;
    send_many(&mut a, "e", 2).await;
    let d = history(&mut a, json!({"after": 0})).await;
    assert_eq!(seqs(&d), [1, 2]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = history(&mut a, json!({"after": 0})).await;
    assert_eq!(seqs(&d), Vec::<u64>::new(), "expired: {d}");
    assert_eq!(d["complete"], false, "{d}");
    assert_eq!(d["last_seq"], 2, "seq continues: {d}");
    a.roundtrip("e3").await;
    let d = history(&mut a, json!({"after": 2})).await;
    assert_eq!(seqs(&d), [3]);
    assert_eq!(d["complete"], true);
}

async fn epoch_changes_when_a_room_is_deleted_and_recreated(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Phoenix").await;
    a.create_room("ashes").await;
    send_many(&mut a, "old", 2).await;
    let before = history(&mut a, json!({})).await;
    let old_epoch = before["epoch"].as_str().unwrap().to_string();
    assert_eq!(seqs(&before), [1, 2]);

    a.command("\\delete").await;
    let frames = a.settle().await;
    assert_has(
        "Phoenix",
        &frames,
        &[expect::cache_me("Phoenix", "general")],
    );
    a.create_room("ashes").await;
    // \delete erased the history: the new room has none.
    let fresh = history(&mut a, json!({})).await;
    assert_eq!(seqs(&fresh), Vec::<u64>::new(), "{fresh}");
    assert_eq!(fresh["last_seq"], 0);
    assert_eq!(fresh["complete"], true);
    let new_epoch = fresh["epoch"].as_str().unwrap().to_string();
    assert_ne!(new_epoch, old_epoch, "a re-created room has a new epoch");

    a.roundtrip("new1").await;
    // A client resuming with the old epoch gets the latest, incomplete.
    let resumed = history(&mut a, json!({"after": 2, "epoch": old_epoch})).await;
    assert_eq!(resumed["epoch"], new_epoch.as_str());
    assert_eq!(seqs(&resumed), [1], "{resumed}");
    assert_eq!(resumed["messages"][0]["content"], "new1");
    assert_eq!(resumed["complete"], false, "{resumed}");
    let same = history(&mut a, json!({"after": 0, "epoch": new_epoch})).await;
    assert_eq!(same["complete"], true);
}

async fn only_the_current_room_can_be_read(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut anon = node.connect().await;
    anon.send_json(json!({"op": 8, "d": {}})).await;
    anon.expect_notice("not_logged_in").await;

    let mut a = node.login("Owner").await;
    a.create_room("secret").await;
    a.command("\\lock pw").await;
    a.expect_notice("info").await;
    a.roundtrip("hidden").await;

    let mut b = node.login("Outsider").await;
    b.roundtrip("in general").await;
    b.send_json(json!({"op": 8, "d": {"room": "secret"}})).await;
    b.expect_notice("not_in_room").await;
    b.send_json(json!({"op": 8, "d": {"room": "nosuchroom"}}))
        .await;
    b.expect_notice("not_in_room").await;
    // Without `room`: the current room's history only.
    let d = history(&mut b, json!({})).await;
    assert_eq!(d["room"], "general");
    let contents: Vec<&str> = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(!contents.contains(&"hidden"), "{d}");
    assert!(contents.contains(&"in general"), "{d}");
}

async fn a_banned_user_cannot_read_the_room(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("Banner").await;
    o.create_room("den").await;
    let mut b = node.login("Outcast").await;
    b.join_room("den", None).await;
    o.expect(&expect::joined("Outcast", "den")).await;
    o.roundtrip("before the ban").await;
    let d = history(&mut b, json!({"room": "den"})).await;
    assert_eq!(seqs(&d), [1]);

    o.command(r"\ban Outcast").await;
    o.expect_all(vec![expect::notice("info"), expect::left("Outcast", "den")])
        .await;
    o.roundtrip("after the ban").await;
    b.recv_until(&expect::cache_me("Outcast", "general")).await;
    b.send_json(json!({"op": 8, "d": {"room": "den", "after": 0}}))
        .await;
    b.recv_until(&expect::notice("not_in_room")).await;
    let d = history(&mut b, json!({"after": 0})).await;
    assert_eq!(d["room"], "general", "{d}");
}

async fn bad_fields_are_bad_payload(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Typos").await;
    for d in [
        json!({"after": "3"}),
        json!({"after": -1}),
        json!({"before": 2.5}),
        json!({"limit": "all"}),
        json!({"epoch": 5}),
        json!({"room": true}),
        json!("general"),
    ] {
        a.send_json(json!({"op": 8, "d": d})).await;
        a.expect_notice("bad_payload").await;
    }
    // Still served, and nothing was lost.
    a.roundtrip("still here").await;
    let d = history(&mut a, json!(null)).await;
    assert_eq!(d["messages"][0]["content"], "still here");
}

async fn history_off_keeps_nothing(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.history.max_messages = 0;
    })
    .await;
    let mut a = node.login("NoHist").await;
    a.create_room("nohist").await;
    send_many(&mut a, "n", 2).await;
    let d = history(&mut a, json!({"after": 0})).await;
    assert_eq!(seqs(&d), Vec::<u64>::new(), "{d}");
    assert_eq!(d["last_seq"], 2);
    assert_eq!(d["complete"], false, "the messages are not kept: {d}");
    if let Some(redis) = &node.redis {
        let key = format!("{}:history:nohist", node.config.redis.key_prefix);
        let exists = redis.cmd(&["EXISTS", &key]).as_int();
        assert_eq!(exists, Some(0), "no stream is written");
    }
}

async fn requests_count_toward_the_rate_limit(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 2;
    })
    .await;
    let mut a = node.login("Eager").await;
    a.send_json(json!({"op": 8, "d": {}})).await;
    a.expect_op(9).await;
    a.send_json(json!({"op": 8, "d": {}})).await;
    a.expect_op(9).await;
    a.send_json(json!({"op": 8, "d": {}})).await;
    a.expect_notice("rate_limited").await;
}

async fn long_messages_end_a_page_early(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.history.max_page_bytes = 1200;
    })
    .await;
    let mut a = node.login("Verbose").await;
    a.create_room("verbose").await;
    for i in 1..=5 {
        a.roundtrip(&format!("{i}{}", "x".repeat(400))).await;
    }
    // About 500 bytes per stored frame: two fit in 1200 bytes.
    let d = history(&mut a, json!({"after": 0})).await;
    assert_eq!(seqs(&d), [1, 2], "{d}");
    assert_eq!(d["complete"], true);
    let d = history(&mut a, json!({"after": 2})).await;
    assert_eq!(seqs(&d), [3, 4]);
    let d = history(&mut a, json!({})).await;
    assert_eq!(seqs(&d), [4, 5], "the latest are kept: {d}");
    assert_eq!(d["complete"], true);
}

//! Login (PROTOCOL.md op 5 IDENTIFY, op 1 first-message login), names,
//! CACHE_UPDATE / CACHE_REQUEST (ops 4 and 6), presence notices, login
//! failures (4003) and the login timeout (4001).

mod common;

use std::time::{Duration, Instant};

use common::expect::{self, assert_has, assert_lacks};
use common::*;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

backend_tests!(
    identify_answers_cache_update_and_joined,
    op1_first_message_is_the_name,
    invalid_names_are_refused,
    valid_name_boundaries,
    names_are_unique_case_insensitively,
    name_is_free_after_close,
    name_is_free_after_abrupt_disconnect,
    cache_request_before_and_after_login,
    identify_after_login_is_already_logged_in,
    five_failed_logins_close_4003,
    login_timeout_closes_4001,
    identify_into_a_room,
    presence_notices_joined_and_left,
    presence_notice_max_members_silences_big_rooms,
);

/// op 4 and op 5: CACHE_UPDATE content and the `joined` notice.
async fn identify_answers_cache_update_and_joined(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.public.host = "chat.example.test".into();
        c.public.port = 4242;
    })
    .await;
    let mut a = node.connect().await;
    a.label = "Alice".into();
    a.send_json(json!({"op": 5, "d": {"name": "Alice"}})).await;
    let frames = a
        .expect_all(vec![expect::op(4), expect::joined("Alice", "general")])
        .await;
    let d = &frames[0]["d"];
    check_cache_shape(d);
    assert_eq!(d["me"]["name"], "Alice", "{d}");
    assert_eq!(d["me"]["room"], "general", "{d}");
    assert_eq!(d["command_prefix"], "\\", "{d}");
    assert_eq!(
        d["host"], "chat.example.test",
        "CACHE_UPDATE host = public.host: {d}"
    );
    assert_eq!(d["port"], 4242, "CACHE_UPDATE port = public.port: {d}");
    assert_eq!(d["users"], 1, "{d}");
    let general = room_entry(d, "general").unwrap_or_else(|| panic!("general not listed: {d}"));
    assert_eq!(general["available"], true, "{general}");
    assert_eq!(general["locked"], false, "{general}");
    assert_eq!(general["closed"], false, "{general}");
    assert_eq!(general["users"], 1, "{general}");
    let joined = &frames[1]["d"];
    assert_eq!(joined["error"], false, "{joined}");

    let mut b = node.connect().await;
    let d = b.identify("Bob").await;
    assert_eq!(d["users"], 2, "{d}");
    assert_eq!(room_entry(&d, "general").unwrap()["users"], 2, "{d}");
    a.expect(&expect::joined("Bob", "general")).await;

    a.send_json(json!({"op": 6, "d": null})).await;
    let v = a.expect(&expect::cache_me("Alice", "general")).await;
    check_cache_shape(&v["d"]);
    assert_eq!(v["d"]["users"], 2, "{v}");
    assert_eq!(v["d"]["host"], "chat.example.test");
    a.assert_no_frame_within(QUIET).await;
    b.assert_no_frame_within(Duration::from_millis(10)).await;
}

/// op 1 before login: its content is the name; after login it is a message.
async fn op1_first_message_is_the_name(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Watcher").await;
    let mut j = node.connect().await;
    j.label = "Jimothy".into();
    j.send_json(json!({"op": 1, "d": {"content": "Jimothy"}}))
        .await;
    let frames = j
        .expect_all(vec![
            expect::cache_me("Jimothy", "general"),
            expect::joined("Jimothy", "general"),
        ])
        .await;
    assert_eq!(frames[0]["d"]["users"], 2);
    // The login is not a chat message.
    w.expect(&expect::joined("Jimothy", "general")).await;
    w.assert_no_frame_within(QUIET).await;
    // After login, op 1 is a message.
    j.send_json(json!({"op": 1, "d": {"content": "Jimothy"}}))
        .await;
    let m = j.expect(&expect::message("Jimothy", "Jimothy")).await;
    assert_eq!(m["d"]["seq"], 1, "first message of a fresh general: {m}");
    w.expect(&expect::message("Jimothy", "Jimothy")).await;
}

/// IDENTIFY and op-1 names: 1-32 of `A-Z a-z 0-9 _ - .`, else invalid_name;
/// a failed login leaves the connection open for another try.
async fn invalid_names_are_refused(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Witness").await;
    let too_long = "a".repeat(33);
    let bad: Vec<&str> = vec![
        "",
        "a b",
        &too_long,
        "naïve",
        "semi;colon",
        "slash/",
        "Ünïcode",
        " lead",
        "tab\t",
    ];
    let mut seen = Vec::new();
    for (i, name) in bad.iter().enumerate() {
        let mut c = node.connect().await;
        if i % 2 == 0 {
            c.send_json(json!({"op": 5, "d": {"name": name}})).await;
        } else {
            c.send_json(json!({"op": 1, "d": {"content": name}})).await;
        }
        c.label = format!("name {name:?}");
        c.expect_notice("invalid_name").await;
        // Still open and not logged in.
        c.send_json(json!({"op": 6, "d": null})).await;
        c.expect_notice("not_logged_in").await;
        // Another try with a valid name succeeds on the same connection.
        let retry = unique("retry");
        c.identify(&retry).await;
        c.close().await;
        // (Wait for its `left` so that the next login sees no stray notice.)
        seen.extend(w.collect_until(&expect::left(&retry, "general")).await);
    }
    // Only the retries (valid names) reached the room: no `joined` for a
    // refused name, no message.
    let mut frames = seen;
    frames.extend(w.settle().await);
    for f in &frames {
        let ok = f["op"] == 7
            && (f["d"]["code"] == "joined" || f["d"]["code"] == "left")
            && f["d"]["user"]
                .as_str()
                .is_some_and(|u| u.starts_with("retry"));
        assert!(ok, "[Witness] unexpected frame {f}");
    }
    w.roundtrip("still served").await;
}

async fn valid_name_boundaries(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let max = "Z".repeat(32);
    let mut a = node.connect().await;
    a.identify(&max).await;
    let mut b = node.connect().await;
    b.identify("a").await;
    let mut c = node.connect().await;
    c.login_op1("Jim.my-1_").await;
}

/// Names are unique, compared case-insensitively, for both logins.
async fn names_are_unique_case_insensitively(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = node.login("Jimothy").await;
    let mut b = node.connect().await;
    b.label = "b".into();
    b.send_json(json!({"op": 5, "d": {"name": "jimothy"}}))
        .await;
    b.expect_notice("name_taken").await;
    b.send_json(json!({"op": 5, "d": {"name": "Jimothy"}}))
        .await;
    b.expect_notice("name_taken").await;
    b.send_json(json!({"op": 1, "d": {"content": "JIMOTHY"}}))
        .await;
    b.expect_notice("name_taken").await;
    b.identify("Other").await;
    a.expect(&expect::joined("Other", "general")).await;
    a.assert_no_frame_within(QUIET).await;
}

/// Tries to log in as `name` with fresh connections until it works or
/// `deadline` passes; returns how long it took from `since`.
async fn login_when_free(
    node: &TestNode,
    name: &str,
    since: Instant,
    deadline: Duration,
) -> Duration {
    loop {
        let mut c = node.connect().await;
        c.label = format!("retaker of {name}");
        c.send_json(json!({"op": 5, "d": {"name": name}})).await;
        let v = c.recv_json().await;
        if v["op"] == 4 {
            assert_eq!(v["d"]["me"]["name"], name, "{v}");
            return since.elapsed();
        }
        assert!(
            v["op"] == 7 && v["d"]["code"] == "name_taken",
            "expected CACHE_UPDATE or name_taken, got {v}"
        );
        if since.elapsed() > deadline {
            panic!(
                "name {name} still taken {:?} after its connection closed",
                since.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// "A name is free again as soon as its connection has closed (within 1 s)."
async fn name_is_free_after_close(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let a = node.login("Reuse").await;
    a.close().await;
    let since = Instant::now();
    login_when_free(&node, "rEUSE", since, Duration::from_secs(1)).await;
}

async fn name_is_free_after_abrupt_disconnect(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Stays").await;
    let a = node.login("Vanish").await;
    w.expect(&expect::joined("Vanish", "general")).await;
    drop(a.into_inner()); // TCP close without a WebSocket close frame
    let since = Instant::now();
    w.expect(&expect::left("Vanish", "general")).await;
    login_when_free(&node, "Vanish", since, Duration::from_secs(1)).await;
}

/// op 6: before login NOTICE not_logged_in; after, CACHE_UPDATE.
async fn cache_request_before_and_after_login(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut c = node.connect().await;
    c.send_json(json!({"op": 6, "d": null})).await;
    let d = c.expect_notice("not_logged_in").await;
    assert_eq!(d["error"], true);
    c.send_json(json!({"op": 6})).await;
    c.expect_notice("not_logged_in").await;
    c.identify("Cachey").await;
    c.send_json(json!({"op": 6, "d": null})).await;
    let v = c.expect(&expect::cache_me("Cachey", "general")).await;
    check_cache_shape(&v["d"]);
    c.send_json(json!({"op": 6})).await;
    c.expect(&expect::cache_me("Cachey", "general")).await;
    c.assert_no_frame_within(QUIET).await;
}

/// IDENTIFY after login: NOTICE already_logged_in, nothing changes.
async fn identify_after_login_is_already_logged_in(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = node.login("First").await;
    a.send_json(json!({"op": 5, "d": {"name": "Second"}})).await;
    a.expect_notice("already_logged_in").await;
    a.send_json(json!({"op": 5, "d": {"name": "First"}})).await;
    a.expect_notice("already_logged_in").await;
    // "Second" was not claimed, and a is still First.
    let mut b = node.login("Second").await;
    a.expect(&expect::joined("Second", "general")).await;
    a.send_json(json!({"op": 6, "d": null})).await;
    a.expect(&expect::cache_me("First", "general")).await;
    b.roundtrip("hi").await;
}

/// "five failures of any kind ... close it with 4003".
async fn five_failed_logins_close_4003(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut w = node.login("Guard").await;
    let mut x = node.connect().await;
    x.label = "failing".into();
    x.send_json(json!({"op": 5, "d": {"name": "bad name"}}))
        .await;
    x.expect_notice("invalid_name").await;
    x.send_json(json!({"op": 5, "d": {"name": "guard"}})).await;
    x.expect_notice("name_taken").await;
    x.send_json(json!({"op": 5, "d": {"name": "Roomless", "room": "nosuchroom"}}))
        .await;
    x.expect_notice("no_such_room").await;
    x.send_json(json!({"op": 1, "d": {"content": "bad name"}}))
        .await;
    x.expect_notice("invalid_name").await;
    // After four failures the connection is still open.
    x.send_json(json!({"op": 6, "d": null})).await;
    x.expect_notice("not_logged_in").await;
    x.send_json(json!({"op": 5, "d": {"name": "bad/name"}}))
        .await;
    let before = x.expect_close(4003).await;
    for f in &before {
        assert!(
            f["op"] == 7 && f["d"]["code"] == "invalid_name",
            "unexpected {f}"
        );
    }
    w.roundtrip("guard still served").await;
    node.assert_serving().await;
}

/// No login within `limits.login_timeout` closes with 4001; a logged-in
/// client is not affected.
async fn login_timeout_closes_4001(backend: Backend) {
    let node = TestNode::start(backend, |c| c.limits.login_timeout_secs = 1).await;
    let mut w = node.login("Early").await;
    let start = Instant::now();
    let mut idle = node.connect().await;
    idle.label = "idle".into();
    let mut busy = node.connect().await;
    busy.label = "busy-but-not-logged-in".into();
    let mut late = node.connect().await;
    late.label = "logs-in-at-0.5s".into();
    let (_, _, _) = tokio::join!(
        async {
            idle.expect_close_within(4001, Duration::from_secs(4)).await;
            let t = start.elapsed();
            assert!(
                t >= Duration::from_millis(900),
                "closed 4001 too early: {t:?}"
            );
            assert!(t <= Duration::from_secs(3), "closed 4001 too late: {t:?}");
        },
        async {
            // Payloads that are not a login do not reset the timer.
            for _ in 0..3 {
                busy.send_json(json!({"op": 6, "d": null})).await;
                busy.expect_notice("not_logged_in").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            busy.expect_close_within(4001, Duration::from_secs(4)).await;
            let t = start.elapsed();
            assert!(t <= Duration::from_secs(3), "closed 4001 too late: {t:?}");
        },
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            late.identify("Late").await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            late.roundtrip("still here after the login timeout").await;
        },
    );
    // Early (logged in before) is still served after the timeout passed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.roundtrip("early still served").await;
}

/// IDENTIFY `room`: must exist and be joinable, with `password` if locked.
async fn identify_into_a_room(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut owner = node.login("Owner").await;
    owner.create_room("lobby").await;

    let mut b = node.connect().await;
    b.label = "Bee".into();
    b.send_json(json!({"op": 5, "d": {"name": "Bee", "room": "LOBBY"}}))
        .await;
    let frames = b
        .expect_all(vec![
            expect::cache_me("Bee", "lobby"),
            expect::joined("Bee", "lobby"),
        ])
        .await;
    assert_eq!(room_entry(&frames[0]["d"], "lobby").unwrap()["users"], 2);
    owner.expect(&expect::joined("Bee", "lobby")).await;

    let mut c = node.connect().await;
    c.label = "Cee".into();
    c.send_json(json!({"op": 5, "d": {"name": "Cee", "room": "nowhere"}}))
        .await;
    c.expect_notice("no_such_room").await;

    // Locked: needs the password.
    owner.command("\\lock s3cret").await;
    assert_has(
        "Owner",
        &owner.settle().await,
        &[
            expect::notice("info"),
            expect::room_state("lobby", "locked"),
        ],
    );
    b.expect(&expect::room_state("lobby", "locked")).await;
    c.send_json(json!({"op": 5, "d": {"name": "Cee", "room": "lobby"}}))
        .await;
    c.expect_notice("room_locked").await;
    c.send_json(json!({"op": 5, "d": {"name": "Cee", "room": "lobby", "password": "wrong"}}))
        .await;
    c.expect_notice("room_locked").await;
    c.send_json(json!({"op": 5, "d": {"name": "Cee", "room": "lobby", "password": "s3cret"}}))
        .await;
    c.label = "Cee".into();
    c.expect_login_success("Cee", true).await;
    assert_has(
        "Owner",
        &owner.settle().await,
        &[expect::joined("Cee", "lobby")],
    );

    // Closed: refused with room_closed.
    owner.command("\\close").await;
    owner.settle().await;
    let mut d = node.connect().await;
    d.label = "Dee".into();
    d.send_json(json!({"op": 5, "d": {"name": "Dee", "room": "lobby", "password": "s3cret"}}))
        .await;
    d.expect_notice("room_closed").await;
    d.identify("Dee").await;
}

/// `joined` goes to every member, the new one included; `left` to those
/// who remain when a user disconnects or moves.
async fn presence_notices_joined_and_left(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Ann").await;
    let mut b = node.login("Ben").await;
    a.expect(&expect::joined("Ben", "general")).await;
    let c = node.login("Cid").await;
    a.expect(&expect::joined("Cid", "general")).await;
    b.expect(&expect::joined("Cid", "general")).await;
    c.close().await;
    a.expect(&expect::left("Cid", "general")).await;
    b.expect(&expect::left("Cid", "general")).await;
    // Moving out causes `left` for those who remain; the mover gets none.
    b.create_room("side").await;
    let frames = a.settle().await;
    assert_has(
        "Ann",
        &frames,
        &[
            expect::room_state("side", "created"),
            expect::left("Ben", "general"),
        ],
    );
    assert_eq!(frames.len(), 2, "Ann: {}", client::show(&frames));
    b.assert_no_frame_within(QUIET).await;
}

/// Rooms with more than `presence_notice_max_members` members send no
/// joined/left; counts stay current in CACHE_UPDATE.
async fn presence_notice_max_members_silences_big_rooms(backend: Backend) {
    let node = TestNode::start(backend, |c| c.limits.presence_notice_max_members = 2).await;
    let mut a = node.login("Pa").await;
    let mut b = node.login("Pb").await; // 2 members: not more than 2, notices
    a.expect(&expect::joined("Pb", "general")).await;
    let mut c = node.connect().await;
    let cache = c.identify_with(json!({"name": "Pc"}), false).await; // 3 > 2
    assert_eq!(
        room_entry(&cache, "general").unwrap()["users"],
        3,
        "{cache}"
    );
    let mut d = node.connect().await;
    d.identify_with(json!({"name": "Pd"}), false).await; // 4
    for (who, cl) in [
        ("Pa", &mut a),
        ("Pb", &mut b),
        ("Pc", &mut c),
        ("Pd", &mut d),
    ] {
        let frames = cl.settle().await;
        assert!(
            frames.is_empty(),
            "[{who}] expected no presence notices in a room of 3-4 > 2 members, got {}",
            client::show(&frames)
        );
    }
    d.close().await; // 4 -> 3 members: still more than 2
    for (who, cl) in [("Pa", &mut a), ("Pb", &mut b), ("Pc", &mut c)] {
        let frames = cl.settle().await;
        assert_lacks(who, &frames, &expect::notice("left"));
        assert!(frames.is_empty(), "[{who}] {}", client::show(&frames));
    }
    a.send_json(json!({"op": 6, "d": null})).await;
    let v = a.expect(&expect::cache_me("Pa", "general")).await;
    assert_eq!(room_entry(&v["d"], "general").unwrap()["users"], 3, "{v}");
    assert_eq!(v["d"]["users"], 3, "{v}");
}

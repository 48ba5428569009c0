//! Hardening of the chat rules (issue 10 items 3, 8, 9), on both backends:
//! - ownership (PROTOCOL.md "Ownership"): in open mode a room belongs to the
//!   connection that created it, so a later user with the same name cannot
//!   manage it; in token mode it belongs to the token's `sub` across
//!   reconnects; and across the nodes of a cluster;
//! - every inbound frame counts toward a limit: unknown ops, IDENTIFY after
//!   login and CACHE_REQUEST before login close with 1008 like bad payloads;
//! - `d` of any op is an object or null (`{"op": 6, "d": 5}` is a bad
//!   payload); `\leave` answers `info`.

mod common;

use std::time::Duration;

use common::client::Client;
use common::expect;
use common::*;
use serde_json::json;
use swiftchat::config::AuthMode;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "hardening-test-secret-0123456789";
const QUIET: Duration = Duration::from_millis(300);

backend_tests!(
    open_mode_ownership_ends_with_the_connection,
    token_mode_ownership_survives_reconnect,
    unknown_ops_count_as_bad_payloads,
    identify_after_login_counts_as_bad_payload,
    cache_request_before_login_counts_as_bad_payload,
    d_must_be_an_object_or_null_for_every_op,
    leave_answers_info,
);

fn configured(c: &mut swiftchat::config::Config) {
    relaxed(c);
    c.auth.jwt_secret = SECRET.into();
}

async fn login_token(node: &TestNode, name: &str, admin: bool) -> Client {
    let mut c = node.connect().await;
    c.label = name.to_string();
    c.identify_with(
        json!({"name": name, "token": jwt(SECRET, name, admin, 3600)}),
        true,
    )
    .await;
    c
}

/// Sends each owner-only command and expects `forbidden` for each; the
/// room is unchanged afterwards (checked by the caller).
async fn expect_all_forbidden(c: &mut Client, room: &str, victim: &str) {
    for cmd in [
        r"\lock secret".to_string(),
        r"\unlock".to_string(),
        r"\close".to_string(),
        r"\delete".to_string(),
        format!(r"\kick {victim}"),
        format!(r"\ban {victim}"),
        format!(r"\unban {victim}"),
        format!(r"\open {room}"),
    ] {
        c.command(&cmd).await;
        let label = std::mem::replace(&mut c.label, cmd.clone());
        let n = c.recv_until(&expect::notice("forbidden")).await;
        c.label = label;
        assert!(n["d"]["error"] == true, "{cmd}: {n}");
    }
}

/// "In open mode it belongs to the connection that created it: when that
/// connection ends the room has no owner (admins can still manage it), and
/// a later user who picks the same name is not its owner."
async fn open_mode_ownership_ends_with_the_connection(backend: Backend) {
    let node = TestNode::start(backend, configured).await;
    let room = unique("owned");
    let mut owner = node.login("Olga").await;
    owner.create_room(&room).await;
    // While connected, the creator owns it.
    owner.command(r"\lock first").await;
    let n = owner.recv_until(&expect::notice("info")).await;
    assert!(
        n["d"]["message"].as_str().unwrap().contains("locked"),
        "{n}"
    );
    owner.command(r"\unlock").await;
    owner.recv_until(&expect::notice("info")).await;
    let mut member = node.login("Mia").await;
    member.join_room(&room, None).await;
    owner.close().await;
    member.recv_until(&expect::left("Olga", &room)).await;

    // A new connection with the same name is not the owner.
    let mut impostor = node.login("Olga").await;
    impostor.join_room(&room, None).await;
    member.recv_until(&expect::joined("Olga", &room)).await;
    expect_all_forbidden(&mut impostor, &room, "Mia").await;
    // Nothing changed: Mia is still in the room, which is neither locked
    // nor closed, and still chats.
    member.roundtrip("still here").await;
    impostor
        .recv_until(&expect::message("Mia", "still here"))
        .await;
    impostor.send_cache_request().await;
    let cache = impostor.recv_until(&expect::op(4)).await;
    let entry = cache["d"]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == room.as_str())
        .cloned()
        .expect("room listed");
    assert_eq!(entry["locked"], false, "{entry}");
    assert_eq!(entry["closed"], false, "{entry}");
    assert_eq!(entry["users"], 2, "{entry}");

    // The room has no owner now, but an admin still manages it.
    let mut admin = login_token(&node, "Root", true).await;
    admin.join_room(&room, None).await;
    admin.command(r"\lock adminpw").await;
    let n = admin.recv_until(&expect::notice("info")).await;
    assert!(
        n["d"]["message"].as_str().unwrap().contains("locked"),
        "{n}"
    );
    member
        .recv_until(&expect::room_state(&room, "locked"))
        .await;
}

/// Ownership is kept by the shared store, so it holds across nodes: on a
/// two-node cluster, the creator's name logging in again on the other node
/// owns nothing, while the creator, still connected, does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_ownership_across_nodes() {
    bounded(async {
        let redis = RedisServer::start();
        let one = TestNode::start_on_redis(&redis, configured).await;
        let two = TestNode::start_on_redis(&redis, configured).await;
        let room = unique("shared");
        let mut owner = one.login("Nadia").await;
        owner.create_room(&room).await;
        let mut member = two.login("Nico").await;
        member.join_room(&room, None).await;
        // The creator moderates from node one a user of node two.
        owner.command(r"\lock pw").await;
        owner.recv_until(&expect::notice("info")).await;
        member
            .recv_until(&expect::room_state(&room, "locked"))
            .await;
        owner.close().await;
        member.recv_until(&expect::left("Nadia", &room)).await;
        let mut again = two.login("Nadia").await;
        again.join_room(&room, Some("pw")).await;
        expect_all_forbidden(&mut again, &room, "Nico").await;
        member.roundtrip("unharmed").await;
    })
    .await
}

/// "In auth.mode = token a room belongs to the token's sub and stays
/// theirs across reconnects."
async fn token_mode_ownership_survives_reconnect(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        configured(c);
        c.auth.mode = AuthMode::Token;
    })
    .await;
    let room = unique("tokroom");
    let mut owner = login_token(&node, "Tina", false).await;
    owner.create_room(&room).await;
    let mut other = login_token(&node, "Otto", false).await;
    other.join_room(&room, None).await;
    owner.close().await;
    other.recv_until(&expect::left("Tina", &room)).await;

    // Otto, in the room, owns nothing.
    expect_all_forbidden(&mut other, &room, "Tina").await;

    // Tina reconnects (new connection, same sub) and still owns the room.
    let mut owner = login_token(&node, "TINA", false).await;
    owner.join_room(&room, None).await;
    owner.command(r"\kick Otto").await;
    let n = owner.recv_until(&expect::notice("info")).await;
    assert!(
        n["d"]["message"].as_str().unwrap().contains("kicked"),
        "{n}"
    );
    other.recv_until(&expect::cache_me("Otto", "general")).await;
    owner.command(r"\lock pw").await;
    let n = owner.recv_until(&expect::notice("info")).await;
    assert!(
        n["d"]["message"].as_str().unwrap().contains("locked"),
        "{n}"
    );
}

/// Sends `frame` 11 times: the first 10 are answered with `code`, the 11th
/// closes with 1008 ("More than 10 bad payloads within 60 s"). Another
/// client is served throughout.
async fn eleven_close_1008(node: &TestNode, c: &mut Client, frame: Message, code: &'static str) {
    for i in 0..10 {
        c.send_raw(frame.clone()).await;
        let label = std::mem::replace(&mut c.label, format!("frame {i}"));
        // Skips presence notices of other tests' probes.
        c.recv_until(&expect::notice(code)).await;
        c.label = label;
    }
    c.send_raw(frame).await;
    c.expect_close(1008).await;
    node.assert_serving().await;
}

async fn unknown_ops_count_as_bad_payloads(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let unknown = Message::text(r#"{"op":42,"d":null}"#);
    let mut before = node.connect().await;
    eleven_close_1008(&node, &mut before, unknown.clone(), "unknown_op").await;
    let mut after = node.login("Opper").await;
    eleven_close_1008(&node, &mut after, unknown, "unknown_op").await;
    // Mixed with bad payloads, they share one window.
    let mut mixed = node.login("Mixer").await;
    for i in 0..10 {
        let (frame, code) = if i % 2 == 0 {
            (Message::text(r#"{"op":0,"d":{}}"#), "unknown_op")
        } else {
            (Message::binary(b"\x00".to_vec()), "bad_payload")
        };
        mixed.send_raw(frame).await;
        mixed.recv_until(&expect::notice(code)).await;
    }
    mixed.send_raw(Message::text("nope")).await;
    mixed.expect_close(1008).await;
}

async fn identify_after_login_counts_as_bad_payload(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut c = node.login("Twice").await;
    let again = Message::text(json!({"op": 5, "d": {"name": "Twice"}}).to_string());
    eleven_close_1008(&node, &mut c, again, "already_logged_in").await;
}

async fn cache_request_before_login_counts_as_bad_payload(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut c = node.connect().await;
    let request = Message::text(r#"{"op":6,"d":null}"#);
    eleven_close_1008(&node, &mut c, request, "not_logged_in").await;
}

/// "`{"op": 6, "d": 5}` (and any op with a non-object, non-null d) gets
/// bad_payload"; null and objects are still accepted.
async fn d_must_be_an_object_or_null_for_every_op(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut c = node.login("Shapes").await;
    for (i, frame) in [
        r#"{"op":6,"d":5}"#,
        r#"{"op":6,"d":"x"}"#,
        r#"{"op":6,"d":[]}"#,
        r#"{"op":6,"d":true}"#,
        r#"{"op":99,"d":5}"#,
        r#"{"op":0,"d":"x"}"#,
        r#"{"op":5,"d":1.5}"#,
    ]
    .iter()
    .enumerate()
    {
        c.send_text(frame).await;
        c.label = format!("frame {i}: {frame}");
        c.expect(&expect::notice("bad_payload")).await;
    }
    c.label = "Shapes".into();
    // Still accepted: null, missing and object `d` for CACHE_REQUEST.
    for frame in [
        r#"{"op":6,"d":null}"#,
        r#"{"op":6}"#,
        r#"{"op":6,"d":{"x":1}}"#,
    ] {
        c.send_text(frame).await;
        c.expect(&expect::cache_me("Shapes", "general")).await;
    }
    c.assert_no_frame_within(QUIET).await;
}

/// "A command that succeeds answers with a NOTICE info": `\leave` too.
async fn leave_answers_info(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut c = node.login("Leaver").await;
    let room = unique("side");
    c.create_room(&room).await;
    c.command(r"\leave").await;
    let frames = c
        .expect_all(vec![
            expect::cache_me("Leaver", "general"),
            expect::joined("Leaver", "general"),
            expect::notice("info"),
        ])
        .await;
    assert_eq!(frames[2]["d"]["message"], "You are now in general.");
    // Already there: `info` as well, nothing else.
    c.command(r"\leave").await;
    c.expect(&expect::notice("info")).await;
    c.assert_no_frame_within(QUIET).await;
}

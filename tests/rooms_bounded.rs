//! Rooms bounded everywhere (PROTOCOL.md, CACHE_UPDATE and "Ownership"):
//! CACHE_UPDATE and `\rooms` list at most `limits.max_listed_rooms` rooms
//! (own room, default room, then the busiest) with `rooms_total`.

mod common;

use common::client::Client;
use common::expect;
use common::*;

backend_tests!(
    cache_update_lists_at_most_max_listed_rooms,
    own_room_is_listed_even_when_small,
    rooms_per_user_limits_creation_until_a_delete,
    rooms_per_user_is_per_subject_in_token_mode_and_admins_have_none,
    empty_rooms_expire_with_their_history,
);

const SECRET: &str = "rooms-bounded-test-secret";

/// `\join` of a new room, refused: `forbidden`, and the room is not created.
async fn refused_creation(client: &mut Client, room: &str) {
    client.command(&format!("\\join {room}")).await;
    let refused = client.expect_notice("forbidden").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains(room),
        "the refusal names the room: {refused}"
    );
}

/// A valid 32-character room name (the longest: the worst case for size).
fn long_room(n: usize) -> String {
    format!("room-{n:0>27}")
}

/// `\join`s every room in `rooms` (creating them), in batches so that the
/// creator's outbound queue never overflows, and waits for the last move.
async fn create_rooms(client: &mut Client, name: &str, rooms: &[String]) {
    for batch in rooms.chunks(20) {
        for room in batch {
            client.command(&format!("\\join {room}")).await;
        }
        let last = batch.last().expect("chunks are not empty");
        client.recv_until(&expect::cache_me(name, last)).await;
    }
    client.settle().await;
}

/// 300 rooms exist (the default room and 299 with the longest names): the
/// CACHE_UPDATE of a login lists the default 100 of them with
/// `rooms_total` 300 and fits in `max_frame_bytes`; `\rooms` says how many
/// more there are.
async fn cache_update_lists_at_most_max_listed_rooms(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.limits.rooms_per_user = 0;
    })
    .await;
    let max_frame_bytes = node.config.limits.max_frame_bytes;
    let mut creator = node.login("Creator").await;
    let rooms: Vec<String> = (0..299).map(long_room).collect();
    create_rooms(&mut creator, "Creator", &rooms).await;

    let mut reader = node.connect().await;
    reader
        .send_identify(serde_json::json!({"name": "Reader"}))
        .await;
    let cache = reader
        .recv_until(&expect::cache_me("Reader", "general"))
        .await;
    let text = cache.to_string();
    eprintln!(
        "CACHE_UPDATE listing 100 of 300 rooms: {} bytes",
        text.len()
    );
    assert!(
        text.len() <= max_frame_bytes,
        "CACHE_UPDATE of {} bytes is over max_frame_bytes {max_frame_bytes}",
        text.len()
    );
    let d = &cache["d"];
    check_cache_shape(d);
    let listed = d["rooms"].as_array().unwrap();
    assert_eq!(listed.len(), 100, "{d}");
    assert_eq!(d["rooms_total"], 300, "{d}");
    assert_eq!(listed[0]["name"], "general", "own room first: {d}");
    // The creator's room (1 user) is the busiest after general (2 users).
    assert_eq!(listed[1]["name"], rooms[298].as_str(), "{d}");
    assert_eq!(listed[1]["users"], 1);
    // Then the empty rooms by name.
    assert_eq!(listed[2]["name"], rooms[0].as_str(), "{d}");

    reader.settle().await;
    reader.command("\\rooms").await;
    let info = reader.expect_notice("info").await;
    let message = info["message"].as_str().unwrap_or_default();
    assert!(message.contains("and 200 more"), "{info}");
    assert!(message.len() <= max_frame_bytes, "{}", message.len());
}

/// With `max_listed_rooms = 3`, a user alone in a small room still sees it
/// (first), then the default room, then the busiest room; the two other
/// rooms are counted in `rooms_total` and by `\rooms`.
async fn own_room_is_listed_even_when_small(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.limits.max_listed_rooms = 3;
    })
    .await;
    let mut crowd = Vec::new();
    for (i, room) in ["crowd", "crowd", "crowd", "pair", "pair", "duo", "duo"]
        .iter()
        .enumerate()
    {
        let name = format!("Member{i}");
        let mut client = node.login(&name).await;
        client.command(&format!("\\join {room}")).await;
        client.recv_until(&expect::cache_me(&name, room)).await;
        crowd.push(client);
    }
    let mut solo = node.login("Solo").await;
    solo.settle().await;
    solo.create_room("tiny").await;
    solo.settle().await;
    solo.send_cache_request().await;
    let cache = solo.recv_until(&expect::cache_me("Solo", "tiny")).await;
    let d = &cache["d"];
    let names: Vec<&str> = d["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tiny", "general", "crowd"], "{d}");
    assert_eq!(d["rooms"][0]["users"], 1);
    assert_eq!(d["rooms"][2]["users"], 3);
    assert_eq!(d["rooms_total"], 5, "{d}");
    solo.command("\\rooms").await;
    let info = solo.expect_notice("info").await;
    let message = info["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Rooms: tiny (1 online), general (0 online), crowd (3 online) and 2 more."
        ),
        "{info}"
    );
}

/// Open mode, `rooms_per_user = 2`: a connection creates two rooms, the
/// third is `forbidden` (joining existing rooms still works); deleting one
/// frees its slot. Another connection has its own quota.
async fn rooms_per_user_limits_creation_until_a_delete(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.limits.rooms_per_user = 2;
    })
    .await;
    let mut owner = node.login("Owner").await;
    owner.create_room("one").await;
    owner.create_room("two").await;
    owner.settle().await;
    refused_creation(&mut owner, "three").await;
    owner.join_room("one", None).await;
    owner.settle().await;
    let mut other = node.login("Other").await;
    other.create_room("others").await;
    owner.settle().await;
    owner.command("\\delete").await;
    owner
        .recv_until(&expect::room_state("one", "deleted"))
        .await;
    owner
        .recv_until(&expect::cache_me("Owner", "general"))
        .await;
    owner.settle().await;
    owner.create_room("three").await;
}

/// Token mode: the quota is the subject's, across its connections; an
/// admin has no quota.
async fn rooms_per_user_is_per_subject_in_token_mode_and_admins_have_none(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.auth.mode = swiftchat::config::AuthMode::Token;
        c.auth.jwt_secret = SECRET.into();
        c.limits.rooms_per_user = 1;
    })
    .await;
    let login = |name: &'static str, admin: bool| {
        let node = &node;
        async move {
            let mut c = node.connect().await;
            c.identify_with(
                serde_json::json!({"name": name, "token": jwt(SECRET, name, admin, 3600)}),
                true,
            )
            .await;
            c
        }
    };
    let mut first = login("Sub", false).await;
    first.create_room("subroom").await;
    first.close().await;
    // The same subject on a new connection (once the name is free again:
    // retried for at most 5 s) still owns subroom.
    let token = jwt(SECRET, "Sub", false, 3600);
    let mut again = poll_until(std::time::Duration::from_secs(5), || {
        let (node, token) = (&node, token.clone());
        async move {
            let mut c = node.connect().await;
            c.send_identify(serde_json::json!({"name": "Sub", "token": token}))
                .await;
            let first = c.recv_json().await;
            (first["op"] == 4).then_some(c)
        }
    })
    .await
    .expect("Sub could log in again within 5 s");
    again.settle().await;
    refused_creation(&mut again, "another").await;
    let mut admin = login("Boss", true).await;
    for room in ["boss1", "boss2", "boss3"] {
        admin.create_room(room).await;
    }
}

/// `empty_room_ttl_secs = 1`: a room whose last member left is deleted
/// within the ttl plus one sweep (bounded wait: 5 s) with ROOM_STATE
/// `deleted` to everyone, and with its history and bans: created again, it
/// is new (ROOM_STATE `created`, empty history). The default room and a
/// room with members stay.
async fn empty_rooms_expire_with_their_history(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.limits.empty_room_ttl_secs = 1;
    })
    .await;
    let mut watcher = node.login("Watcher").await;
    watcher.create_room("busy").await;
    let mut owner = node.login("Leaver").await;
    owner.create_room("brief").await;
    owner.send_message("kept until the room goes").await;
    owner.recv_until(&expect::op(0)).await;
    owner.command("\\ban Watcher").await;
    owner.recv_until(&expect::notice("info")).await;
    owner.command("\\leave").await;
    owner
        .recv_until(&expect::cache_me("Leaver", "general"))
        .await;
    let emptied = std::time::Instant::now();
    let deleted = watcher
        .recv_until_within(
            &expect::room_state("brief", "deleted"),
            std::time::Duration::from_secs(5),
        )
        .await;
    let took = emptied.elapsed();
    eprintln!("empty room deleted {took:?} after its last member left (ttl 1 s)");
    assert!(
        took >= std::time::Duration::from_millis(900),
        "{took:?}: {deleted}"
    );
    owner
        .recv_until(&expect::room_state("brief", "deleted"))
        .await;
    // busy (with a member) stays; the default room stays even when it has
    // been empty for longer than the ttl.
    owner.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    watcher.settle().await;
    watcher.command("\\rooms").await;
    let info = watcher.expect_notice("info").await;
    let message = info["message"].as_str().unwrap_or_default();
    assert!(message.contains("busy (1 online)"), "{info}");
    assert!(message.contains("general (0 online)"), "{info}");
    assert!(!message.contains("brief"), "{info}");
    // Gone with its bans and history: the banned Watcher creates it afresh.
    watcher.create_room("brief").await;
    watcher
        .send_json(serde_json::json!({"op": 8, "d": {}}))
        .await;
    let history = watcher.recv_until(&expect::op(9)).await;
    assert_eq!(
        history["d"]["messages"].as_array().map(Vec::len),
        Some(0),
        "{history}"
    );
}

//! Commands (PROTOCOL.md "Commands"): every command, its permissions (room
//! owner; admin by the JWT `admin` claim), its error notices, and the
//! ROOM_STATE broadcasts (op 2) to every logged-in client.

mod common;

use std::time::Duration;

use common::client::Client;
use common::expect::{self, assert_has, assert_lacks};
use common::*;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);
const SECRET: &str = "commands-test-secret";

backend_tests!(
    help_rooms_users,
    join_switch_leave,
    join_bad_arguments,
    lock_and_unlock,
    close_and_open,
    delete_room,
    kick_user,
    ban_and_unban,
    default_room_is_protected,
    admin_moderates_any_room,
    unknown_command,
    room_state_reaches_all_logged_in_clients_only,
    room_limit_refuses_new_rooms_only,
    users_list_is_bounded,
);

/// Logs in with IDENTIFY and a token.
async fn login_token(node: &TestNode, name: &str, admin: bool) -> Client {
    let mut c = node.connect().await;
    c.identify_with(
        json!({"name": name, "token": jwt(SECRET, name, admin, 3600)}),
        true,
    )
    .await;
    c
}

fn info_message(v: &serde_json::Value) -> String {
    v["d"]["message"].as_str().unwrap_or_default().to_string()
}

async fn help_rooms_users(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Helpy").await;
    let mut b = node.login("Buddy").await;
    a.expect(&expect::joined("Buddy", "general")).await;
    let mut c = node.login("Remote").await;
    a.expect(&expect::joined("Remote", "general")).await;
    b.expect(&expect::joined("Remote", "general")).await;
    c.create_room("annex").await;
    for x in [&mut a, &mut b] {
        x.expect_all(vec![
            expect::room_state("annex", "created"),
            expect::left("Remote", "general"),
        ])
        .await;
    }

    a.command(r"\help").await;
    let help = a.expect(&expect::notice("info")).await;
    let text = info_message(&help);
    for cmd in ["join", "leave", "rooms", "users"] {
        assert!(text.contains(cmd), "\\help should list {cmd}: {help}");
    }
    a.command(r"\rooms").await;
    let rooms = info_message(&a.expect(&expect::notice("info")).await);
    assert!(
        rooms.contains("general") && rooms.contains("annex"),
        "\\rooms: {rooms}"
    );
    a.command(r"\users").await;
    let users = info_message(&a.expect(&expect::notice("info")).await);
    assert!(
        users.contains("Helpy") && users.contains("Buddy"),
        "\\users: {users}"
    );
    assert!(
        !users.contains("Remote"),
        "\\users lists only my room: {users}"
    );
    c.command(r"\users").await;
    let users = info_message(&c.expect(&expect::notice("info")).await);
    assert!(
        users.contains("Remote") && !users.contains("Helpy"),
        "\\users: {users}"
    );
    b.assert_no_frame_within(QUIET).await;
}

/// `\join ROOM` creates (ROOM_STATE created to all logged-in clients) and
/// moves; `\switch` is an alias; `\leave` returns to the default room and
/// says so with `info`.
async fn join_switch_leave(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Mover").await;
    let mut b = node.login("Stayer").await;
    a.expect(&expect::joined("Stayer", "general")).await;

    a.command(r"\join Lobby").await;
    let frames = a
        .expect_all(vec![
            expect::room_state("lobby", "created"),
            expect::cache_me("Mover", "lobby"),
            expect::joined("Mover", "lobby"),
        ])
        .await;
    let cache = &frames[1]["d"];
    check_cache_shape(cache);
    assert_eq!(
        room_entry(cache, "lobby").expect("lobby listed")["users"],
        1,
        "{cache}"
    );
    assert_eq!(room_entry(cache, "general").unwrap()["users"], 1, "{cache}");
    b.expect_all(vec![
        expect::room_state("lobby", "created"),
        expect::left("Mover", "general"),
    ])
    .await;

    b.command(r"\switch LOBBY").await;
    let frames = b
        .expect_all(vec![
            expect::cache_me("Stayer", "lobby"),
            expect::joined("Stayer", "lobby"),
        ])
        .await;
    assert_eq!(room_entry(&frames[0]["d"], "lobby").unwrap()["users"], 2);
    a.expect(&expect::joined("Stayer", "lobby")).await;

    // `\leave` answers `info` like other successful commands (its
    // CACHE_UPDATE as well, like `\join`).
    b.command(r"\leave").await;
    b.expect_all(vec![
        expect::cache_me("Stayer", "general"),
        expect::joined("Stayer", "general"),
        expect::notice("info"),
    ])
    .await;
    a.expect(&expect::left("Stayer", "lobby")).await;
    a.assert_no_frame_within(QUIET).await;
    b.assert_no_frame_within(Duration::from_millis(10)).await;
}

/// "A missing or malformed argument (including an invalid room name) gets
/// bad_arguments" and changes nothing.
async fn join_bad_arguments(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Joiner").await;
    let mut b = node.login("Observer").await;
    a.expect(&expect::joined("Observer", "general")).await;
    let long = format!(r"\join {}", "r".repeat(33));
    for cmd in [
        r"\join",
        r"\join bad.name",
        r"\join sp@ce",
        long.as_str(),
        r"\switch",
        r"\open",
    ] {
        a.command(cmd).await;
        a.label = format!("Joiner after {cmd}");
        a.expect_notice("bad_arguments").await;
    }
    a.label = "Joiner".into();
    b.assert_no_frame_within(QUIET).await;
    a.send_json(json!({"op": 6, "d": null})).await;
    let v = a.expect(&expect::cache_me("Joiner", "general")).await;
    let names: Vec<&str> = v["d"]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["general"], "no room was created: {v}");
}

async fn lock_and_unlock(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("LockOwner").await;
    o.create_room("vault").await;
    let mut m = node.login("Member").await;
    let mut u = node.connect().await; // never logs in
    u.label = "unlogged".into();

    o.command(r"\lock").await;
    o.expect_notice("bad_arguments").await;
    o.command(r"\lock s3cret").await;
    o.expect_all(vec![
        expect::notice("info"),
        expect::room_state("vault", "locked"),
    ])
    .await;
    m.expect(&expect::room_state("vault", "locked")).await;

    m.send_json(json!({"op": 6, "d": null})).await;
    let v = m.expect(&expect::op(4)).await;
    let vault = room_entry(&v["d"], "vault").expect("vault listed").clone();
    assert_eq!(vault["locked"], true, "{vault}");
    assert_eq!(vault["available"], false, "{vault}");
    assert_eq!(vault["closed"], false, "{vault}");

    m.command(r"\join vault").await;
    m.expect_notice("room_locked").await;
    m.command(r"\join vault wrong").await;
    m.expect_notice("room_locked").await;
    m.join_room("vault", Some("s3cret")).await;
    o.expect(&expect::joined("Member", "vault")).await;

    // A member who is not the owner may not lock or unlock.
    m.command(r"\unlock").await;
    m.expect_notice("forbidden").await;
    m.command(r"\lock other").await;
    m.expect_notice("forbidden").await;

    let mut x = node.login("Outsider").await;
    o.command(r"\unlock").await;
    o.expect_all(vec![
        expect::notice("info"),
        expect::room_state("vault", "unlocked"),
    ])
    .await;
    m.expect(&expect::room_state("vault", "unlocked")).await;
    x.expect(&expect::room_state("vault", "unlocked")).await;
    x.join_room("vault", None).await;
    o.expect(&expect::joined("Outsider", "vault")).await;
    m.expect(&expect::joined("Outsider", "vault")).await;
    x.send_json(json!({"op": 6, "d": null})).await;
    let v = x.expect(&expect::op(4)).await;
    let vault = room_entry(&v["d"], "vault").unwrap().clone();
    assert_eq!(vault["locked"], false, "{vault}");
    assert_eq!(vault["available"], true, "{vault}");
    assert_eq!(vault["users"], 3, "{vault}");
    u.assert_no_frame_within(QUIET).await;
}

/// `\close`: no joins, members (owner included) moved to the default room;
/// `\open ROOM` by the owner from anywhere.
async fn close_and_open(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("Closer").await;
    o.create_room("club").await;
    let mut m = node.login("Clubber").await;
    m.join_room("club", None).await;
    o.expect(&expect::joined("Clubber", "club")).await;
    let mut g = node.login("Bystander").await;

    m.command(r"\close").await;
    m.expect_notice("forbidden").await;

    o.command(r"\close").await;
    let fo = o.settle().await;
    assert_has(
        "Closer",
        &fo,
        &[
            expect::notice("info"),
            expect::room_state("club", "closed"),
            expect::cache_me("Closer", "general"),
            expect::joined("Closer", "general"),
        ],
    );
    let fm = m.settle().await;
    assert_has(
        "Clubber",
        &fm,
        &[
            expect::room_state("club", "closed"),
            expect::cache_me("Clubber", "general"),
            expect::joined("Clubber", "general"),
        ],
    );
    let fg = g.settle().await;
    assert_has(
        "Bystander",
        &fg,
        &[
            expect::room_state("club", "closed"),
            expect::joined("Closer", "general"),
            expect::joined("Clubber", "general"),
        ],
    );

    m.command(r"\join club").await;
    m.expect_notice("room_closed").await;
    g.send_json(json!({"op": 6, "d": null})).await;
    let v = g.expect(&expect::op(4)).await;
    let club = room_entry(&v["d"], "club")
        .expect("a closed room is still listed")
        .clone();
    assert_eq!(club["closed"], true, "{club}");
    assert_eq!(club["available"], false, "{club}");
    assert_eq!(club["users"], 0, "{club}");

    m.command(r"\open club").await;
    m.expect_notice("forbidden").await;
    o.command(r"\open nosuchroom").await;
    o.expect_notice("no_such_room").await;
    o.command(r"\open").await;
    o.expect_notice("bad_arguments").await;

    o.command(r"\open club").await; // from general
    o.expect_all(vec![
        expect::notice("info"),
        expect::room_state("club", "opened"),
    ])
    .await;
    m.expect(&expect::room_state("club", "opened")).await;
    g.expect(&expect::room_state("club", "opened")).await;
    m.join_room("club", None).await;
    o.expect(&expect::left("Clubber", "general")).await;
    g.expect(&expect::left("Clubber", "general")).await;
}

/// `\delete`: members moved to the default room, ROOM_STATE deleted to all;
/// the name can be created again by someone else, who owns it.
async fn delete_room(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("Deleter").await;
    o.create_room("gone").await;
    let mut m = node.login("Goner").await;
    m.join_room("gone", None).await;
    o.expect(&expect::joined("Goner", "gone")).await;
    let mut g = node.login("Watcher").await;

    m.command(r"\delete").await;
    m.expect_notice("forbidden").await;

    o.command(r"\delete").await;
    let fo = o.settle().await;
    assert_has(
        "Deleter",
        &fo,
        &[
            expect::notice("info"),
            expect::room_state("gone", "deleted"),
            expect::cache_me("Deleter", "general"),
        ],
    );
    let fm = m.settle().await;
    assert_has(
        "Goner",
        &fm,
        &[
            expect::room_state("gone", "deleted"),
            expect::cache_me("Goner", "general"),
        ],
    );
    let fg = g.settle().await;
    assert_has(
        "Watcher",
        &fg,
        &[
            expect::room_state("gone", "deleted"),
            expect::joined("Deleter", "general"),
            expect::joined("Goner", "general"),
        ],
    );
    g.send_json(json!({"op": 6, "d": null})).await;
    let v = g.expect(&expect::op(4)).await;
    assert!(
        room_entry(&v["d"], "gone").is_none(),
        "deleted room still listed: {v}"
    );

    // Re-created by Goner, who now owns it.
    m.create_room("gone").await;
    m.command(r"\lock pw").await;
    m.expect_all(vec![
        expect::notice("info"),
        expect::room_state("gone", "locked"),
    ])
    .await;
}

async fn kick_user(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("Kicker").await;
    o.create_room("dojo").await;
    let mut b = node.login("Kickee").await;
    b.join_room("dojo", None).await;
    o.expect(&expect::joined("Kickee", "dojo")).await;
    let mut c = node.login("Witness").await;
    c.join_room("dojo", None).await;
    o.expect(&expect::joined("Witness", "dojo")).await;
    b.expect(&expect::joined("Witness", "dojo")).await;

    c.command(r"\kick Kickee").await;
    c.expect_notice("forbidden").await;
    o.command(r"\kick").await;
    o.expect_notice("bad_arguments").await;

    o.command(r"\kick Kickee").await;
    o.expect_all(vec![expect::notice("info"), expect::left("Kickee", "dojo")])
        .await;
    c.expect(&expect::left("Kickee", "dojo")).await;
    let fb = b.settle().await;
    assert_has(
        "Kickee",
        &fb,
        &[
            expect::cache_me("Kickee", "general"),
            expect::joined("Kickee", "general"),
        ],
    );
    assert_lacks("Kickee", &fb, &expect::op(2));

    // A kick is not a ban.
    b.join_room("dojo", None).await;
    o.expect(&expect::joined("Kickee", "dojo")).await;
    c.expect(&expect::joined("Kickee", "dojo")).await;

    // Kicking someone who is not in the room fails and changes nothing.
    o.command(r"\kick Nobody").await;
    let v = o.recv_json().await;
    assert!(
        v["op"] == 7 && v["d"]["error"] == true,
        "\\kick of an absent user must answer an error NOTICE, got {v}"
    );
    b.assert_no_frame_within(QUIET).await;
    c.assert_no_frame_within(Duration::from_millis(10)).await;
}

/// `\ban USER`: ROOM_STATE banned only to USER, moved out, cannot rejoin
/// (also not by IDENTIFY); `\unban`: ROOM_STATE unbanned only to USER.
async fn ban_and_unban(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("Banner").await;
    o.create_room("den").await;
    let mut b = node.login("Outcast").await;
    b.join_room("den", None).await;
    o.expect(&expect::joined("Outcast", "den")).await;
    let mut g = node.login("Onlooker").await;

    g.command(r"\ban Outcast").await;
    g.expect_notice("forbidden").await;
    o.command(r"\ban").await;
    o.expect_notice("bad_arguments").await;
    o.command(r"\unban").await;
    o.expect_notice("bad_arguments").await;

    o.command(r"\ban Outcast").await;
    o.expect_all(vec![expect::notice("info"), expect::left("Outcast", "den")])
        .await;
    let fb = b.settle().await;
    assert_has(
        "Outcast",
        &fb,
        &[
            expect::room_state("den", "banned"),
            expect::cache_me("Outcast", "general"),
            expect::joined("Outcast", "general"),
        ],
    );
    let fg = g.settle().await;
    assert_has("Onlooker", &fg, &[expect::joined("Outcast", "general")]);
    assert_lacks("Onlooker", &fg, &expect::op(2));
    assert_lacks("Banner", &o.settle().await, &expect::op(2));

    b.command(r"\join den").await;
    b.expect_notice("banned").await;

    // Reconnect: IDENTIFY into the room is refused too.
    b.close().await;
    g.expect(&expect::left("Outcast", "general")).await;
    let mut b2 = node.connect().await;
    b2.label = "Outcast again".into();
    let mut refused = false;
    for _ in 0..4 {
        b2.send_json(json!({"op": 5, "d": {"name": "Outcast", "room": "den"}}))
            .await;
        let v = b2.recv_json().await;
        if expect::notice("banned").matches(&v) {
            refused = true;
            break;
        }
        assert!(
            expect::notice("name_taken").matches(&v),
            "expected banned, got {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        refused,
        "IDENTIFY into a room the user is banned from must get `banned`"
    );
    b2.identify("Outcast").await;
    g.expect(&expect::joined("Outcast", "general")).await;

    o.command(r"\unban Outcast").await;
    o.expect_notice("info").await;
    b2.expect(&expect::room_state("den", "unbanned")).await;
    g.assert_no_frame_within(QUIET).await;
    b2.join_room("den", None).await;
    o.expect(&expect::joined("Outcast", "den")).await;
}

/// "The default room cannot be locked, closed or deleted (forbidden)",
/// not even by an admin.
async fn default_room_is_protected(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.auth.jwt_secret = SECRET.into();
    })
    .await;
    let mut n = node.login("Plain").await;
    let mut adm = login_token(&node, "Root", true).await;
    n.expect(&expect::joined("Root", "general")).await;
    for who in [&mut n, &mut adm] {
        for cmd in [r"\lock pw", r"\close", r"\delete"] {
            who.command(cmd).await;
            who.expect_notice("forbidden").await;
        }
    }
    n.send_json(json!({"op": 6, "d": null})).await;
    let v = n.expect(&expect::op(4)).await;
    let general = room_entry(&v["d"], "general").unwrap().clone();
    assert_eq!(general["locked"], false, "{general}");
    assert_eq!(general["closed"], false, "{general}");
    assert_eq!(general["available"], true, "{general}");
    n.roundtrip("general still works").await;
    adm.expect(&expect::message("Plain", "general still works"))
        .await;
}

/// An admin (JWT `admin: true`) may use the owner commands in any room; a
/// valid token without the claim gives no rights.
async fn admin_moderates_any_room(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.auth.jwt_secret = SECRET.into();
    })
    .await;
    let mut o = node.login("RoomOwner").await;
    o.create_room("priv").await;
    let mut t = login_token(&node, "Tokened", false).await;
    t.join_room("priv", None).await;
    o.expect(&expect::joined("Tokened", "priv")).await;
    let mut adm = login_token(&node, "Admin1", true).await;
    adm.join_room("priv", None).await;
    o.expect(&expect::joined("Admin1", "priv")).await;
    t.expect(&expect::joined("Admin1", "priv")).await;

    t.command(r"\lock x").await;
    t.expect_notice("forbidden").await;
    t.command(r"\kick RoomOwner").await;
    t.expect_notice("forbidden").await;

    adm.command(r"\lock pw").await;
    adm.expect_all(vec![
        expect::notice("info"),
        expect::room_state("priv", "locked"),
    ])
    .await;
    o.expect(&expect::room_state("priv", "locked")).await;
    t.expect(&expect::room_state("priv", "locked")).await;
    adm.command(r"\unlock").await;
    adm.expect_all(vec![
        expect::notice("info"),
        expect::room_state("priv", "unlocked"),
    ])
    .await;
    o.expect(&expect::room_state("priv", "unlocked")).await;
    t.expect(&expect::room_state("priv", "unlocked")).await;

    adm.command(r"\kick Tokened").await;
    adm.expect_all(vec![
        expect::notice("info"),
        expect::left("Tokened", "priv"),
    ])
    .await;
    o.expect(&expect::left("Tokened", "priv")).await;
    assert_has(
        "Tokened",
        &t.settle().await,
        &[expect::cache_me("Tokened", "general")],
    );

    adm.command(r"\ban RoomOwner").await;
    adm.expect_all(vec![
        expect::notice("info"),
        expect::left("RoomOwner", "priv"),
    ])
    .await;
    assert_has(
        "RoomOwner",
        &o.settle().await,
        &[
            expect::room_state("priv", "banned"),
            expect::cache_me("RoomOwner", "general"),
        ],
    );
    adm.command(r"\unban RoomOwner").await;
    adm.expect_notice("info").await;
    o.expect(&expect::room_state("priv", "unbanned")).await;

    adm.command(r"\close").await;
    let fa = adm.settle().await;
    assert_has(
        "Admin1",
        &fa,
        &[
            expect::notice("info"),
            expect::room_state("priv", "closed"),
            expect::cache_me("Admin1", "general"),
        ],
    );
    o.settle().await;
    t.settle().await;
    adm.command(r"\open priv").await;
    adm.expect_all(vec![
        expect::notice("info"),
        expect::room_state("priv", "opened"),
    ])
    .await;
    o.expect(&expect::room_state("priv", "opened")).await;
    t.expect(&expect::room_state("priv", "opened")).await;
    adm.join_room("priv", None).await;
    o.settle().await;
    t.settle().await;
    adm.command(r"\delete").await;
    assert_has(
        "Admin1",
        &adm.settle().await,
        &[
            expect::notice("info"),
            expect::room_state("priv", "deleted"),
        ],
    );
    assert_has(
        "RoomOwner",
        &o.settle().await,
        &[expect::room_state("priv", "deleted")],
    );
}

async fn unknown_command(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut a = node.login("Typo").await;
    let mut b = node.login("Peer").await;
    a.expect(&expect::joined("Peer", "general")).await;
    a.command(r"\frobnicate").await;
    a.expect_notice("unknown_command").await;
    a.command(r"\frobnicate with args").await;
    a.expect_notice("unknown_command").await;
    b.assert_no_frame_within(QUIET).await;
    a.assert_no_frame_within(Duration::from_millis(10)).await;
}

/// ROOM_STATE for created/locked/unlocked/closed/opened/deleted goes to
/// every logged-in client (any room), never to a client not logged in.
async fn room_state_reaches_all_logged_in_clients_only(backend: Backend) {
    let node = TestNode::start(backend, relaxed).await;
    let mut o = node.login("Changer").await;
    let mut far = node.login("FarAway").await;
    o.expect(&expect::joined("FarAway", "general")).await;
    far.create_room("faraway").await;
    o.expect_all(vec![
        expect::room_state("faraway", "created"),
        expect::left("FarAway", "general"),
    ])
    .await;
    let mut u = node.connect().await;
    u.label = "unlogged".into();

    o.create_room("stage").await;
    far.expect(&expect::room_state("stage", "created")).await;
    o.command(r"\lock pw").await;
    o.expect_all(vec![
        expect::notice("info"),
        expect::room_state("stage", "locked"),
    ])
    .await;
    far.expect(&expect::room_state("stage", "locked")).await;
    o.command(r"\unlock").await;
    o.expect_all(vec![
        expect::notice("info"),
        expect::room_state("stage", "unlocked"),
    ])
    .await;
    far.expect(&expect::room_state("stage", "unlocked")).await;
    o.command(r"\close").await;
    o.settle().await;
    far.expect(&expect::room_state("stage", "closed")).await;
    o.command(r"\open stage").await;
    o.expect_all(vec![
        expect::notice("info"),
        expect::room_state("stage", "opened"),
    ])
    .await;
    far.expect(&expect::room_state("stage", "opened")).await;
    o.join_room("stage", None).await;
    o.command(r"\delete").await;
    o.settle().await;
    far.expect(&expect::room_state("stage", "deleted")).await;
    far.assert_no_frame_within(QUIET).await;
    u.assert_no_frame_within(Duration::from_millis(10)).await;
}

/// `limits.max_rooms` bounds the rooms of the cluster (the default room
/// counts): creating one more is `forbidden`, joining an existing room still
/// works, and deleting a room makes place for a new one.
async fn room_limit_refuses_new_rooms_only(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.limits.max_rooms = 2;
    })
    .await;
    let mut owner = node.login("Founder").await;
    owner.create_room("first").await;
    let mut other = node.login("Latecomer").await;
    other.command(r"\join second").await;
    let refused = other.expect_notice("forbidden").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("second"),
        "the refusal names the room: {refused}"
    );
    other.join_room("first", None).await;
    owner
        .recv_until(&expect::joined("Latecomer", "first"))
        .await;
    owner.command(r"\delete").await;
    owner
        .recv_until(&expect::room_state("first", "deleted"))
        .await;
    owner
        .recv_until(&expect::cache_me("Founder", "general"))
        .await;
    other
        .recv_until(&expect::cache_me("Latecomer", "general"))
        .await;
    other
        .recv_until(&expect::joined("Latecomer", "general"))
        .await;
    other.settle().await;
    other.create_room("second").await;
}

/// `\users` lists at most `limits.max_listed_users` names, and always the
/// room's full count.
async fn users_list_is_bounded(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        relaxed(c);
        c.limits.max_listed_users = 2;
    })
    .await;
    let mut asker = node.login("Asker").await;
    let _b = node.login("Bee").await;
    let _c = node.login("Cee").await;
    asker.settle().await;
    asker.command(r"\users").await;
    let answer = asker.expect_notice("info").await;
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Users in general (3): ") && message.ends_with(" and 1 more"),
        "{answer}"
    );
    assert_eq!(
        answer["users"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    assert_eq!(answer["room"], "general", "{answer}");
}

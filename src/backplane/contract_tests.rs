//! The backplane contract: the same scenarios run directly against the
//! memory backplane and the Redis backplane (a real `redis-server`), with a
//! recording [`Delivery`], so that the two write the rules once in effect
//! (issue 9, item 2). Each scenario takes milliseconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::memory::MemoryBackplane;
use super::*;
use crate::protocol::MessageDraft;

use super::test_redis as redis_server;
use redis_server::RedisServer;

/// Records what the backplane hands to the node.
#[derive(Default)]
struct Recorder {
    frames: Mutex<Vec<(String, Bytes)>>,
    events: Mutex<Vec<ClusterEvent>>,
}

impl Delivery for Recorder {
    fn deliver_room(&self, room: &str, frame: Bytes) {
        self.frames.lock().unwrap().push((room.to_string(), frame));
    }
    fn deliver_event(&self, event: ClusterEvent) {
        self.events.lock().unwrap().push(event);
    }
    fn local_users(&self) -> Vec<LocalUser> {
        Vec::new()
    }
    fn name_lost(&self, _: &str) {}
}

impl Recorder {
    /// The `seq`s of the MESSAGE frames relayed in `room`, once `count` of
    /// them arrived (Redis relays asynchronously), within 2 s.
    async fn seqs(&self, room: &str, count: usize) -> Vec<u64> {
        let started = Instant::now();
        loop {
            let seqs: Vec<u64> = self
                .frames
                .lock()
                .unwrap()
                .iter()
                .filter(|(r, _)| r == room)
                .filter_map(|(_, f)| message_seq(f))
                .collect();
            if seqs.len() >= count || started.elapsed() > Duration::from_secs(2) {
                return seqs;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One backplane under test, and what keeps it alive.
struct Subject {
    backplane: SharedBackplane,
    recorder: Arc<Recorder>,
    _redis: Option<RedisServer>,
}

async fn memory() -> Subject {
    let recorder = Arc::new(Recorder::default());
    Subject {
        backplane: MemoryBackplane::new("general", recorder.clone()),
        recorder,
        _redis: None,
    }
}

async fn redis() -> Subject {
    let server = RedisServer::start();
    let recorder = Arc::new(Recorder::default());
    let mut config = crate::config::Config::default();
    config.redis.url = server.url();
    config.server.default_room = "general".into();
    let backplane = super::redis::connect(&config, "contract-node", recorder.clone())
        .await
        .expect("connect");
    assert!(backplane.is_ready(), "redis backplane not ready");
    Subject {
        backplane,
        recorder,
        _redis: Some(server),
    }
}

/// Runs `scenario` against both backplanes.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::memory().await).await
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::redis().await).await
                }
            )*
        }
    };
}

contract!(
    claim_and_release_are_idempotent,
    join_checks_missing_banned_closed_locked_in_that_order,
    room_changes_and_bans,
    seq_is_gapless_and_restarts_after_delete,
    snapshot_lists_rooms_and_users,
    member_lists_and_room_count_are_bounded,
    owned_rooms_are_counted_per_owner_and_freed_by_delete,
    rooms_empty_for_the_ttl_are_deleted_once,
    login_claims_and_joins_or_keeps_nothing,
);

fn join<'a>(user: &'a str, room: &'a str, previous: Option<&'a str>) -> JoinRequest<'a> {
    JoinRequest {
        user_key: user,
        display_name: user,
        room,
        password_hash: None,
        create: true,
        owner: user,
        max_rooms: 100,
        max_owned_rooms: None,
        previous_room: previous,
    }
}

fn draft(room: &str) -> MessageDraft {
    MessageDraft {
        author: "ann".into(),
        content: "hi".into(),
        room: room.into(),
        id: "1".into(),
        ts: 1,
    }
}

fn joined_members(outcome: JoinOutcome) -> (u64, Option<u64>) {
    match outcome {
        JoinOutcome::Joined {
            members,
            previous_members,
            ..
        } => (members, previous_members),
        other => panic!("not joined: {other:?}"),
    }
}

async fn claim_and_release_are_idempotent(s: Subject) {
    let b = &s.backplane;
    assert!(b.claim_name("ann", "Ann").await.unwrap());
    assert!(!b.claim_name("ann", "Ann").await.unwrap(), "held");
    assert_eq!(b.release_name("ann", None).await.unwrap(), None);
    assert_eq!(b.release_name("ann", None).await.unwrap(), None);
    assert!(b.claim_name("ann", "Ann").await.unwrap(), "free again");
    let outcome = b.join_room(join("ann", "general", None)).await.unwrap();
    assert_eq!(joined_members(outcome), (1, None));
    assert!(b.is_member("general", "ann").await.unwrap());
    assert_eq!(
        b.release_name("ann", Some("general")).await.unwrap(),
        Some(0)
    );
    assert_eq!(b.release_name("ann", Some("general")).await.unwrap(), None);
    assert!(!b.is_member("general", "ann").await.unwrap());
}

/// A login claims and joins in one step; a taken name is `None`, and a
/// refused join keeps no claim.
async fn login_claims_and_joins_or_keeps_nothing(s: Subject) {
    let b = &s.backplane;
    let mut login = join("ann", "general", None);
    login.create = false;
    let outcome = b.login(login.clone()).await.unwrap().expect("claimed");
    assert_eq!(joined_members(outcome), (1, None));
    assert!(b.is_member("general", "ann").await.unwrap());
    assert_eq!(b.login(login).await.unwrap(), None, "the name is taken");
    let mut missing = join("bob", "nope", None);
    missing.create = false;
    assert_eq!(
        b.login(missing).await.unwrap(),
        Some(JoinOutcome::NoSuchRoom)
    );
    assert!(
        b.claim_name("bob", "bob").await.unwrap(),
        "a refused login keeps no claim"
    );
    let snapshot = b.snapshot(10).await.unwrap();
    assert_eq!(snapshot.users, 2, "ann and bob's own claim");
}

async fn join_checks_missing_banned_closed_locked_in_that_order(s: Subject) {
    let b = &s.backplane;
    for user in ["own", "eve"] {
        assert!(b.claim_name(user, user).await.unwrap());
    }
    let mut missing = join("eve", "nope", None);
    missing.create = false;
    assert_eq!(b.join_room(missing).await.unwrap(), JoinOutcome::NoSuchRoom);
    let created = b.join_room(join("own", "r", None)).await.unwrap();
    assert!(matches!(created, JoinOutcome::Joined { created: true, .. }));
    let hash = password_hash("r", "pw");
    b.change_room(
        "r",
        RoomChange::Lock {
            password_hash: hash.clone(),
        },
    )
    .await
    .unwrap();
    b.change_room("r", RoomChange::Close).await.unwrap();
    b.set_ban("r", "eve", true).await.unwrap();
    let mut with_pw = join("eve", "r", None);
    with_pw.password_hash = Some(&hash);
    assert_eq!(
        b.join_room(with_pw.clone()).await.unwrap(),
        JoinOutcome::Banned
    );
    b.set_ban("r", "eve", false).await.unwrap();
    assert_eq!(
        b.join_room(with_pw.clone()).await.unwrap(),
        JoinOutcome::Closed
    );
    b.change_room("r", RoomChange::Open).await.unwrap();
    assert_eq!(
        b.join_room(join("eve", "r", None)).await.unwrap(),
        JoinOutcome::Locked
    );
    let mut wrong = join("eve", "r", None);
    let wrong_hash = password_hash("r", "nope");
    wrong.password_hash = Some(&wrong_hash);
    assert_eq!(b.join_room(wrong).await.unwrap(), JoinOutcome::Locked);
    let outcome = b.join_room(with_pw).await.unwrap();
    assert_eq!(joined_members(outcome), (2, None));
    // A move reports the members left behind; a move out of a room the
    // user is not in reports none.
    let outcome = b
        .join_room(join("eve", "general", Some("r")))
        .await
        .unwrap();
    assert_eq!(joined_members(outcome), (1, Some(1)));
    let outcome = b.join_room(join("eve", "r2", Some("r"))).await.unwrap();
    assert_eq!(joined_members(outcome).1, None);
}

async fn room_changes_and_bans(s: Subject) {
    let b = &s.backplane;
    assert!(b.claim_name("own", "Own").await.unwrap());
    assert!(!b.change_room("nope", RoomChange::Close).await.unwrap());
    assert!(!b.set_ban("nope", "eve", true).await.unwrap());
    b.join_room(join("own", "r", None)).await.unwrap();
    let info = b.room("r").await.unwrap().expect("exists");
    assert_eq!(info.owner.as_deref(), Some("own"));
    assert!(!info.locked && !info.closed);
    let lock = RoomChange::Lock {
        password_hash: "h".into(),
    };
    for (change, locked, closed) in [
        (lock, true, false),
        (RoomChange::Unlock, false, false),
        (RoomChange::Close, false, true),
        (RoomChange::Open, false, false),
    ] {
        assert!(b.change_room("r", change).await.unwrap());
        let info = b.room("r").await.unwrap().expect("exists");
        assert_eq!((info.locked, info.closed), (locked, closed));
    }
    assert!(b.set_ban("r", "eve", true).await.unwrap());
    assert!(!b.set_ban("r", "eve", true).await.unwrap());
    assert!(b.set_ban("r", "eve", false).await.unwrap());
    assert!(!b.set_ban("r", "eve", false).await.unwrap());
    // Delete drops settings and bans: a room of the same name is new.
    assert!(b.set_ban("r", "eve", true).await.unwrap());
    assert!(b.change_room("r", RoomChange::Delete).await.unwrap());
    assert_eq!(b.room("r").await.unwrap(), None);
    assert!(!b.change_room("r", RoomChange::Delete).await.unwrap());
    assert!(b.claim_name("eve", "Eve").await.unwrap());
    let outcome = b.join_room(join("eve", "r", None)).await.unwrap();
    assert!(matches!(outcome, JoinOutcome::Joined { created: true, .. }));
    assert_eq!(
        b.room("r").await.unwrap().and_then(|r| r.owner).as_deref(),
        Some("eve")
    );
}

async fn seq_is_gapless_and_restarts_after_delete(s: Subject) {
    let b = &s.backplane;
    assert!(b.claim_name("ann", "Ann").await.unwrap());
    b.join_room(join("ann", "r", None)).await.unwrap();
    b.subscribe("r").await.unwrap();
    for expected in 1..=5 {
        assert_eq!(
            b.publish_message(&draft("r")).await.unwrap(),
            Some(expected)
        );
    }
    assert_eq!(s.recorder.seqs("r", 5).await, [1, 2, 3, 4, 5]);
    // A join observes the room's last seq.
    assert!(b.claim_name("bob", "Bob").await.unwrap());
    let outcome = b.join_room(join("bob", "r", None)).await.unwrap();
    assert!(matches!(outcome, JoinOutcome::Joined { seq: 5, .. }));
    b.change_room("r", RoomChange::Close).await.unwrap();
    assert_eq!(b.publish_message(&draft("r")).await.unwrap(), None);
    assert_eq!(b.publish_message(&draft("nope")).await.unwrap(), None);
    b.change_room("r", RoomChange::Delete).await.unwrap();
    // What a node does on the deletion's ROOM_STATE (forgets its floor).
    b.unsubscribe("r");
    b.join_room(join("ann", "r", None)).await.unwrap();
    b.subscribe("r").await.unwrap();
    assert_eq!(b.publish_message(&draft("r")).await.unwrap(), Some(1));
    assert_eq!(s.recorder.seqs("r", 6).await, [1, 2, 3, 4, 5, 1]);
}

async fn snapshot_lists_rooms_and_users(s: Subject) {
    let b = &s.backplane;
    for user in ["a", "b", "c"] {
        assert!(b.claim_name(user, user).await.unwrap());
    }
    b.join_room(join("a", "general", None)).await.unwrap();
    b.join_room(join("b", "zed", None)).await.unwrap();
    b.join_room(join("c", "zed", None)).await.unwrap();
    b.join_room(join("a", "alpha", Some("general")))
        .await
        .unwrap();
    b.change_room("zed", RoomChange::Close).await.unwrap();
    let snapshot = b.snapshot(100).await.unwrap();
    assert_eq!(snapshot.users, 3);
    assert_eq!(snapshot.rooms_total, 3);
    let rows: Vec<_> = snapshot
        .rooms
        .iter()
        .map(|r| (r.name.as_str(), r.users, r.available, r.closed))
        .collect();
    // Busiest first, ties by name.
    assert_eq!(
        rows,
        [
            ("zed", 2, false, true),
            ("alpha", 1, true, false),
            ("general", 0, true, false),
        ]
    );
    // Bounded: the busiest `limit`, while the total counts every room.
    let snapshot = b.snapshot(2).await.unwrap();
    assert_eq!(snapshot.rooms_total, 3);
    let names: Vec<_> = snapshot.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["zed", "alpha"]);
}

async fn member_lists_and_room_count_are_bounded(s: Subject) {
    let b = &s.backplane;
    let users = ["dan", "Bea", "cal", "amy", "eli"];
    for user in users {
        let key = user.to_lowercase();
        assert!(b.claim_name(&key, user).await.unwrap());
        let mut request = join(&key, "general", None);
        request.display_name = user;
        b.join_room(request).await.unwrap();
    }
    let all = b.room_members("general", 10).await.unwrap();
    assert_eq!(all.names, ["amy", "Bea", "cal", "dan", "eli"]);
    assert_eq!(all.total, 5);
    let some = b.room_members("general", 3).await.unwrap();
    assert_eq!((some.names.len(), some.total), (3, 5));
    // max_rooms counts every room, the default one included.
    let mut request = join("amy", "second", Some("general"));
    request.max_rooms = 2;
    assert!(matches!(
        b.join_room(request).await.unwrap(),
        JoinOutcome::Joined { created: true, .. }
    ));
    let mut request = join("amy", "third", Some("second"));
    request.max_rooms = 2;
    assert_eq!(
        b.join_room(request).await.unwrap(),
        JoinOutcome::TooManyRooms
    );
    // An existing room can always be joined.
    let mut request = join("bea", "second", Some("general"));
    request.max_rooms = 2;
    assert!(matches!(
        b.join_room(request).await.unwrap(),
        JoinOutcome::Joined { created: false, .. }
    ));
}

/// Issue 9, item 3: a subscription whose caller is cut off (a timed-out
/// join, a cancelled close) never leaks: references taken by cancelled
/// acquisitions go back, releases never wait, and the channel ends up
/// unsubscribed in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_subscriptions_leak_nothing() {
    let s = redis().await;
    let server = s._redis.as_ref().expect("redis");
    let b = &s.backplane;
    let numsub = |channel: &str| match server.cmd(&["PUBSUB", "NUMSUB", channel]) {
        redis_server::Resp::Array(Some(items)) => items[1].as_int().unwrap(),
        other => panic!("{other:?}"),
    };
    let wait_numsub = |channel: &'static str, want: i64| async move {
        let started = Instant::now();
        while numsub(channel) != want {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "NUMSUB {channel} stays {}, expected {want}",
                numsub(channel)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // Acquisitions cancelled at once, many times over, while others
    // complete: in the end nothing is held.
    for _ in 0..20 {
        let cancelled = tokio::time::timeout(Duration::ZERO, b.subscribe("cut")).await;
        if cancelled.is_ok() {
            b.unsubscribe("cut");
        }
        b.subscribe("cut").await.unwrap();
        b.unsubscribe("cut");
    }
    wait_numsub("swiftchat:ch:{cut}", 0).await;
    // Held by two, released by both (one "close" dropped right after its
    // release): unsubscribed.
    b.subscribe("kept").await.unwrap();
    b.subscribe("kept").await.unwrap();
    wait_numsub("swiftchat:ch:{kept}", 1).await;
    b.unsubscribe("kept");
    wait_numsub("swiftchat:ch:{kept}", 1).await;
    let close = async {
        b.unsubscribe("kept");
        std::future::pending::<()>().await
    };
    let _ = tokio::time::timeout(Duration::from_millis(10), close).await;
    wait_numsub("swiftchat:ch:{kept}", 0).await;
    // A room wanted again while its UNSUBSCRIBE is in flight ends up
    // subscribed.
    b.subscribe("again").await.unwrap();
    b.unsubscribe("again");
    b.subscribe("again").await.unwrap();
    wait_numsub("swiftchat:ch:{again}", 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(numsub("swiftchat:ch:{again}"), 1);
}

async fn owned_rooms_are_counted_per_owner_and_freed_by_delete(s: Subject) {
    let b = &s.backplane;
    assert!(b.claim_name("amy", "amy").await.unwrap());
    assert!(b.claim_name("bea", "bea").await.unwrap());
    let limited = |user: &'static str, room: &'static str, previous| {
        let mut request = join(user, room, previous);
        request.max_owned_rooms = Some(2);
        request
    };
    b.join_room(limited("amy", "a1", None)).await.unwrap();
    b.join_room(limited("amy", "a2", Some("a1"))).await.unwrap();
    assert_eq!(
        b.join_room(limited("amy", "a3", Some("a2"))).await.unwrap(),
        JoinOutcome::TooManyOwnedRooms
    );
    assert!(b.room("a3").await.unwrap().is_none(), "nothing created");
    // Joining an existing room is no creation; another owner has its own.
    assert!(matches!(
        b.join_room(limited("amy", "general", Some("a2")))
            .await
            .unwrap(),
        JoinOutcome::Joined { created: false, .. }
    ));
    assert!(matches!(
        b.join_room(limited("bea", "b1", None)).await.unwrap(),
        JoinOutcome::Joined { created: true, .. }
    ));
    // No limit (admins).
    let mut unlimited = join("amy", "a3", Some("general"));
    unlimited.max_owned_rooms = None;
    assert!(matches!(
        b.join_room(unlimited).await.unwrap(),
        JoinOutcome::Joined { created: true, .. }
    ));
    // Deleting frees a slot: a1 gone, amy owns a2 and a3 (2), so one more
    // is still refused until another is deleted.
    assert!(b.change_room("a1", RoomChange::Delete).await.unwrap());
    assert_eq!(
        b.join_room(limited("amy", "a4", Some("a3"))).await.unwrap(),
        JoinOutcome::TooManyOwnedRooms
    );
    assert!(b.change_room("a2", RoomChange::Delete).await.unwrap());
    assert!(matches!(
        b.join_room(limited("amy", "a4", Some("a3"))).await.unwrap(),
        JoinOutcome::Joined { created: true, .. }
    ));
}

async fn rooms_empty_for_the_ttl_are_deleted_once(s: Subject) {
    use std::time::Duration;
    let b = &s.backplane;
    let ttl = Duration::from_millis(300);
    for user in ["amy", "bea"] {
        assert!(b.claim_name(user, user).await.unwrap());
    }
    let mut request = join("amy", "brief", None);
    request.max_owned_rooms = Some(1);
    b.join_room(request).await.unwrap();
    b.set_ban("brief", "cal", true).await.unwrap();
    b.join_room(join("bea", "kept", None)).await.unwrap();
    b.join_room(join("amy", "general", Some("brief")))
        .await
        .unwrap();
    // Not yet due.
    assert!(b
        .expire_empty_rooms("general", ttl, 10)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    // Due: brief (empty); general is the default room, kept has a member.
    assert_eq!(
        b.expire_empty_rooms("general", ttl, 10).await.unwrap(),
        ["brief"]
    );
    assert!(b.room("brief").await.unwrap().is_none());
    assert!(b.room("general").await.unwrap().is_some());
    assert!(b.room("kept").await.unwrap().is_some());
    // Once.
    assert!(b
        .expire_empty_rooms("general", ttl, 10)
        .await
        .unwrap()
        .is_empty());
    // Its settings, bans and owner slot went with it.
    let mut request = join("amy", "brief", Some("general"));
    request.max_owned_rooms = Some(1);
    assert!(matches!(
        b.join_room(request).await.unwrap(),
        JoinOutcome::Joined { created: true, .. }
    ));
    assert!(
        b.set_ban("brief", "cal", true).await.unwrap(),
        "ban was dropped"
    );
    // A room that emptied and was joined again starts over.
    b.join_room(join("bea", "general", Some("kept")))
        .await
        .unwrap();
    b.join_room(join("bea", "kept", Some("general")))
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    b.join_room(join("bea", "general", Some("kept")))
        .await
        .unwrap();
    assert!(
        b.expire_empty_rooms("general", ttl, 10)
            .await
            .unwrap()
            .is_empty(),
        "kept emptied just now"
    );
}

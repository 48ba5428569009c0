//! Every script run directly against a real `redis-server`, through its
//! typed wrapper (no node around it).

use ::redis::aio::MultiplexedConnection;
use ::redis::AsyncCommands;

use super::*;
use crate::backplane::redis::keys::hash_tag;
use crate::backplane::{BackplaneError, JoinOutcome, RoomChange};

use crate::backplane::test_redis::RedisServer;

const TTL: u64 = 15_000;
const HIST: HistoryLimits = HistoryLimits {
    max_messages: 3,
    ttl_ms: 60_000,
};

struct Conn {
    conn: MultiplexedConnection,
}

#[async_trait]
impl Eval for Conn {
    async fn eval<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        call: ScriptInvocation<'static>,
    ) -> BackplaneResult<T> {
        let mut conn = self.conn.clone();
        call.invoke_async(&mut conn)
            .await
            .map_err(|e| BackplaneError::Internal(format!("{op}: {e}")))
    }
}

struct Fixture {
    _server: RedisServer,
    r: Conn,
    keys: Keys,
}

async fn fixture() -> Fixture {
    let server = RedisServer::start();
    let client = ::redis::Client::open(server.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    Fixture {
        _server: server,
        r: Conn { conn },
        keys: Keys::new("t"),
    }
}

/// The node's two steps of a join (control slot, then a created room's
/// gate), as `RedisBackplane::join_room` sends them.
async fn join_steps(
    r: &Conn,
    keys: &Keys,
    node: &str,
    request: &JoinRequest<'_>,
) -> BackplaneResult<JoinOutcome> {
    let (outcome, epoch) = join(r, keys, node, request, &ulid::Ulid::new().to_string()).await?;
    if let JoinOutcome::Joined { created: true, .. } = outcome {
        room_data(r, keys, request.room, RoomData::Create, &epoch).await?;
    }
    Ok(outcome)
}

/// The node's two steps of a room change, as `RedisBackplane::change_room`.
async fn change_steps(
    r: &Conn,
    keys: &Keys,
    room: &str,
    change: &RoomChange,
) -> BackplaneResult<bool> {
    let Some(epoch) = change_room(r, keys, room, change).await? else {
        return Ok(false);
    };
    if let Some(action) = RoomData::after(change) {
        room_data(r, keys, room, action, &epoch).await?;
    }
    Ok(true)
}

impl Fixture {
    fn conn(&self) -> MultiplexedConnection {
        self.r.conn.clone()
    }

    async fn heartbeat(&self, node: &str) -> Heartbeat {
        let beat = heartbeat(&self.r, &self.keys, node, "tok", "general", "ep1")
            .await
            .unwrap();
        room_data(
            &self.r,
            &self.keys,
            "general",
            RoomData::Ensure,
            &beat.default_room_epoch,
        )
        .await
        .unwrap();
        beat
    }

    async fn join(&self, node: &str, user: &str, room: &str, prev: Option<&str>) -> JoinOutcome {
        join_steps(
            &self.r,
            &self.keys,
            node,
            &JoinRequest {
                user_key: user,
                display_name: user,
                room,
                password_hash: None,
                create: true,
                owner: user,
                max_rooms: 10,
                max_owned_rooms: None,
                previous_room: prev,
            },
        )
        .await
        .unwrap()
    }
}

fn joined(members: u64, previous_members: Option<u64>, created: bool) -> JoinOutcome {
    JoinOutcome::Joined {
        created,
        members,
        previous_members,
        seq: 0,
    }
}

#[test]
fn join_replies_parse() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let ok = [
        bulk("joined"),
        Value::Int(1),
        Value::Int(3),
        Value::Int(0),
        bulk("ep"),
    ];
    assert_eq!(join_outcome(&ok).unwrap(), joined(3, Some(0), true));
    assert_eq!(
        join_outcome(&[bulk("locked")]).unwrap(),
        JoinOutcome::Locked
    );
    assert!(join_outcome(&[bulk("what")]).is_err());
    assert!(join_outcome(&[]).is_err());
}

#[test]
fn snapshot_sorts_rooms_and_derives_available() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let reply = [
        Value::Int(4),
        Value::Int(7),
        bulk("zeta"),
        bulk("1"),
        bulk("0"),
        Value::Int(1),
        bulk("alpha"),
        bulk("0"),
        bulk("0"),
        Value::Int(3),
    ];
    let snapshot = parse_snapshot(&reply).unwrap();
    assert_eq!(snapshot.users, 4);
    assert_eq!(snapshot.rooms_total, 7);
    let names: Vec<_> = snapshot.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"], "busiest first");
    assert!(snapshot.rooms[0].available);
    assert!(!snapshot.rooms[1].available && snapshot.rooms[1].locked);
    assert!(parse_snapshot(&reply[..4]).is_err());
    assert!(parse_snapshot(&reply[..1]).is_err());
}

/// `room_key` in `lua/common.lua` builds the same names as `keys.rs`.
#[tokio::test]
async fn lua_room_keys_match_keys_rs() {
    let f = fixture().await;
    let probe = Script::new(&format!(
        "{COMMON}return {{room_key('room', ARGV[3]), room_key('members', ARGV[3]), room_key('bans', ARGV[3]), node_users_key(ARGV[4]), empty_rooms_key(), room_key('owned', ARGV[4]), room_of_members_key(room_key('members', ARGV[3]))}}"
    ));
    let mut call = probe.prepare_invoke();
    call.arg(f.keys.base())
        .arg(f.keys.node_base())
        .arg("lobby")
        .arg("n1");
    let got: Vec<String> = call.invoke_async(&mut f.conn()).await.unwrap();
    assert_eq!(
        got,
        [
            f.keys.room("lobby"),
            f.keys.members("lobby"),
            f.keys.bans("lobby"),
            f.keys.node_users("n1"),
            f.keys.empty_rooms(),
            f.keys.owned("n1"),
            "lobby".to_string(),
        ]
    );
}

#[tokio::test]
async fn heartbeat_creates_the_default_room_and_reports_registration() {
    let f = fixture().await;
    let beat = f.heartbeat("n1").await;
    assert_eq!(beat.epoch, "ep1");
    assert!(!beat.registered);
    let mut conn = f.conn();
    let rooms: Vec<String> = conn.smembers(f.keys.rooms()).await.unwrap();
    assert_eq!(rooms, ["general"]);
    // The epoch stays; the marker is set by the last re-registration batch.
    let batch = ReregisterBatch {
        node: "n1",
        token: "tok",
        lost: true,
        last: true,
        ttl_ms: TTL,
        epoch: "e1",
        users: &[],
    };
    reregister(&f.r, &f.keys, &batch).await.unwrap();
    let beat = heartbeat(&f.r, &f.keys, "n1", "tok", "general", "other")
        .await
        .unwrap();
    assert_eq!(
        beat,
        Heartbeat {
            epoch: "ep1".into(),
            registered: true,
            default_room_epoch: "ep1".into(),
        }
    );
}

#[tokio::test]
async fn claim_release_and_take_over() {
    let f = fixture().await;
    f.heartbeat("n1").await;
    let (claimed, notices) = claim(&f.r, &f.keys, "n1", "alice", TTL).await.unwrap();
    assert!(claimed && notices.is_empty());
    // Taken: by this node and by another live node.
    assert!(!claim(&f.r, &f.keys, "n1", "alice", TTL).await.unwrap().0);
    f.heartbeat("n2").await;
    assert!(!claim(&f.r, &f.keys, "n2", "alice", TTL).await.unwrap().0);
    assert_eq!(
        f.join("n1", "alice", "lobby", None).await,
        joined(1, None, true)
    );
    // n1's heartbeat is older than a 0 ms ttl: n2 takes the name over and
    // reports alice's `left` in lobby.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (claimed, notices) = claim(&f.r, &f.keys, "n2", "alice", 1).await.unwrap();
    assert!(claimed);
    assert_eq!(notices.len(), 1);
    // n1's late release changes nothing of n2's.
    assert_eq!(
        release(&f.r, &f.keys, "n1", "alice", Some("lobby"))
            .await
            .unwrap(),
        None
    );
    let mut conn = f.conn();
    let holder: Option<String> = conn.hget(f.keys.names(), "alice").await.unwrap();
    assert_eq!(holder.as_deref(), Some("n2"));
    // Release is idempotent: the second one finds no membership.
    f.join("n2", "alice", "lobby", None).await;
    assert_eq!(
        release(&f.r, &f.keys, "n2", "alice", Some("lobby"))
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        release(&f.r, &f.keys, "n2", "alice", Some("lobby"))
            .await
            .unwrap(),
        None
    );
    let holder: Option<String> = conn.hget(f.keys.names(), "alice").await.unwrap();
    assert_eq!(holder, None);
}

#[tokio::test]
async fn join_checks_in_order_and_moves() {
    let f = fixture().await;
    f.heartbeat("n1").await;
    claim(&f.r, &f.keys, "n1", "bob", TTL).await.unwrap();
    claim(&f.r, &f.keys, "n1", "eve", TTL).await.unwrap();
    assert_eq!(
        f.join("n1", "bob", "general", None).await,
        joined(1, None, false)
    );
    assert_eq!(
        f.join("n1", "bob", "r1", Some("general")).await,
        joined(1, Some(0), true)
    );
    let request = |room| JoinRequest {
        user_key: "eve",
        display_name: "Eve",
        room,
        password_hash: None,
        create: false,
        owner: "eve",
        max_rooms: 2,
        max_owned_rooms: None,
        previous_room: None,
    };
    assert_eq!(
        join_steps(&f.r, &f.keys, "n1", &request("nope"))
            .await
            .unwrap(),
        JoinOutcome::NoSuchRoom
    );
    let mut create = request("r2");
    create.create = true;
    assert_eq!(
        join_steps(&f.r, &f.keys, "n1", &create).await.unwrap(),
        JoinOutcome::TooManyRooms
    );
    // Banned beats closed beats locked.
    let lock = RoomChange::Lock {
        password_hash: "h".into(),
    };
    assert!(change_steps(&f.r, &f.keys, "r1", &lock).await.unwrap());
    assert_eq!(
        join_steps(&f.r, &f.keys, "n1", &request("r1"))
            .await
            .unwrap(),
        JoinOutcome::Locked
    );
    let mut with_pw = request("r1");
    with_pw.password_hash = Some("h");
    assert!(change_steps(&f.r, &f.keys, "r1", &RoomChange::Close)
        .await
        .unwrap());
    assert_eq!(
        join_steps(&f.r, &f.keys, "n1", &with_pw).await.unwrap(),
        JoinOutcome::Closed
    );
    assert!(set_ban(&f.r, &f.keys, "r1", "eve", true).await.unwrap());
    assert!(!set_ban(&f.r, &f.keys, "r1", "eve", true).await.unwrap());
    assert_eq!(
        join_steps(&f.r, &f.keys, "n1", &with_pw).await.unwrap(),
        JoinOutcome::Banned
    );
    assert!(set_ban(&f.r, &f.keys, "r1", "eve", false).await.unwrap());
    assert!(change_steps(&f.r, &f.keys, "r1", &RoomChange::Open)
        .await
        .unwrap());
    assert_eq!(
        join_steps(&f.r, &f.keys, "n1", &with_pw).await.unwrap(),
        joined(2, None, false)
    );
    // A ban on a missing room changes nothing.
    assert!(!set_ban(&f.r, &f.keys, "nope", "eve", true).await.unwrap());
    let members = room_members(&f.r, &f.keys, "r1", 10).await.unwrap();
    assert_eq!(members.names, ["bob", "Eve"]);
    assert_eq!(members.total, 2);
    let some = room_members(&f.r, &f.keys, "r1", 1).await.unwrap();
    assert_eq!((some.names.len(), some.total), (1, 2));
}

#[tokio::test]
async fn seq_is_gapless_refuses_closed_rooms_and_restarts_after_delete() {
    let f = fixture().await;
    f.heartbeat("n1").await;
    claim(&f.r, &f.keys, "n1", "bob", TTL).await.unwrap();
    f.join("n1", "bob", "r1", None).await;
    let draft = MessageDraft {
        author: "bob".into(),
        content: "hi".into(),
        room: "r1".into(),
        id: "1".into(),
        ts: 1,
    };
    let client = ::redis::Client::open(
        format!("redis://127.0.0.1:{}/?protocol=resp3", f._server.port()).as_str(),
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ::redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut sub = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    sub.subscribe(f.keys.room_channel("r1")).await.unwrap();
    for expected in 1..=3 {
        assert_eq!(
            publish_message(&f.r, &f.keys, &draft, 0, HIST, PublishCommand::Publish)
                .await
                .unwrap(),
            Some(expected)
        );
    }
    // A floor above the counter (Redis lost it) wins.
    assert_eq!(
        publish_message(&f.r, &f.keys, &draft, 10, HIST, PublishCommand::Publish)
            .await
            .unwrap(),
        Some(11)
    );
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let push = rx.recv().await.unwrap();
        if push.kind == ::redis::PushKind::Message {
            frames.push(push.data[1].clone());
        }
    }
    assert_eq!(frames[0], Value::BulkString(draft.frame(1).to_vec()));
    assert!(change_steps(&f.r, &f.keys, "r1", &RoomChange::Close)
        .await
        .unwrap());
    assert_eq!(
        publish_message(&f.r, &f.keys, &draft, 0, HIST, PublishCommand::Publish)
            .await
            .unwrap(),
        None
    );
    assert!(change_steps(&f.r, &f.keys, "r1", &RoomChange::Delete)
        .await
        .unwrap());
    assert!(!change_steps(&f.r, &f.keys, "r1", &RoomChange::Delete)
        .await
        .unwrap());
    let snap = snapshot(&f.r, &f.keys, 100).await.unwrap();
    assert_eq!(
        snap.rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["general"]
    );
    f.join("n1", "bob", "r1", None).await;
    assert_eq!(
        publish_message(&f.r, &f.keys, &draft, 0, HIST, PublishCommand::Publish)
            .await
            .unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn snapshot_counts_and_prunes_half_deleted_rooms() {
    let f = fixture().await;
    f.heartbeat("n1").await;
    for user in ["a", "b", "c"] {
        claim(&f.r, &f.keys, "n1", user, TTL).await.unwrap();
    }
    f.join("n1", "a", "general", None).await;
    f.join("n1", "b", "r1", None).await;
    f.join("n1", "c", "r1", None).await;
    assert!(change_steps(
        &f.r,
        &f.keys,
        "r1",
        &RoomChange::Lock {
            password_hash: "x".into()
        }
    )
    .await
    .unwrap());
    // A delete cut off after its first step.
    let mut conn = f.conn();
    let _: () = conn.sadd(f.keys.rooms(), "ghost").await.unwrap();
    let snap = snapshot(&f.r, &f.keys, 100).await.unwrap();
    assert_eq!(snap.users, 3);
    let rows: Vec<_> = snap
        .rooms
        .iter()
        .map(|r| (r.name.as_str(), r.users, r.locked, r.available))
        .collect();
    assert_eq!(rows, [("r1", 2, true, false), ("general", 1, false, true)]);
    assert_eq!(snap.rooms_total, 2, "the ghost is not counted");
    let listed: bool = conn.sismember(f.keys.rooms(), "ghost").await.unwrap();
    assert!(!listed);
}

#[tokio::test]
async fn reap_removes_a_dead_nodes_users_in_batches_and_spares_the_living() {
    let f = fixture().await;
    f.heartbeat("dead").await;
    for i in 0..5 {
        let user = format!("u{i}");
        claim(&f.r, &f.keys, "dead", &user, TTL).await.unwrap();
        f.join("dead", &user, "r1", None).await;
    }
    // Alive: nothing happens.
    assert!(matches!(
        reap_node(&f.r, &f.keys, "dead", "0", 2, true, TTL)
            .await
            .unwrap(),
        Reaped::Alive
    ));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(dead_nodes(&f.r, &f.keys, 1, 16).await.unwrap(), ["dead"]);
    let mut cursor = "0".to_string();
    let mut lefts = 0;
    loop {
        match reap_node(&f.r, &f.keys, "dead", &cursor, 2, true, 1)
            .await
            .unwrap()
        {
            Reaped::Alive => panic!("dead node reported alive"),
            Reaped::Batch {
                remaining,
                cursor: next,
                notices,
            } => {
                lefts += notices.len();
                if remaining == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    assert_eq!(lefts, 5, "one left per membership");
    let snap = snapshot(&f.r, &f.keys, 100).await.unwrap();
    assert_eq!(snap.users, 0);
    assert!(dead_nodes(&f.r, &f.keys, 1, 16).await.unwrap().is_empty());
}

#[tokio::test]
async fn reregister_puts_users_back_and_reports_conflicts_and_gone_rooms() {
    let f = fixture().await;
    f.heartbeat("n1").await;
    f.heartbeat("n2").await;
    claim(&f.r, &f.keys, "n2", "taken", TTL).await.unwrap();
    let users = [
        LocalUser {
            user_key: "bob".into(),
            display_name: "Bob".into(),
            room: "general".into(),
        },
        LocalUser {
            user_key: "taken".into(),
            display_name: "Taken".into(),
            room: "general".into(),
        },
        LocalUser {
            user_key: "gus".into(),
            display_name: "Gus".into(),
            room: "vanished".into(),
        },
    ];
    let batch = ReregisterBatch {
        node: "n1",
        token: "tok",
        lost: false,
        last: true,
        ttl_ms: TTL,
        epoch: "e1",
        users: &users,
    };
    let out = reregister(&f.r, &f.keys, &batch).await.unwrap();
    assert_eq!(out.conflicts, ["taken"]);
    assert_eq!(out.gone, ["vanished"]);
    assert_eq!(out.notices.len(), 1, "bob's joined in general");
    let members = room_members(&f.r, &f.keys, "general", 10).await.unwrap();
    assert_eq!(members.names, ["Bob"]);
    // With the data lost, a missing room is recreated.
    let batch = ReregisterBatch {
        lost: true,
        users: &users[2..],
        ..batch
    };
    let out = reregister(&f.r, &f.keys, &batch).await.unwrap();
    assert!(out.gone.is_empty() && out.notices.is_empty());
    assert_eq!(out.created, ["vanished"], "its gate is the caller's");
    let members = room_members(&f.r, &f.keys, "vanished", 10).await.unwrap();
    assert_eq!(members.names, ["Gus"]);
}

/// The scripts really get one slot's keys: checked against the key names
/// the wrappers build (message slot: publish, history, room data; control
/// slot: everything else).
#[test]
fn every_script_gets_one_slots_keys() {
    let keys = Keys::new("p");
    let messages = [
        keys.gate("r"),
        keys.seq("r"),
        keys.history("r"),
        keys.room_channel("r"),
    ];
    assert!(messages.iter().all(|k| hash_tag(k) == "r"));
    let control = [
        keys.room("r"),
        keys.bans("r"),
        keys.members("r"),
        keys.owned("tok:x"),
        keys.names(),
        keys.nodes(),
        keys.rooms(),
        keys.empty_rooms(),
        keys.epoch(),
        keys.node_users("x"),
        keys.node_token("x"),
    ];
    assert!(control.iter().all(|k| hash_tag(k) == "global"));
}

/// Bugs 5a and 5d at the script level: a join by a node that lost the name
/// changes nothing; a move out of a room the user was already taken out of
/// reports no previous membership (no second `left`), and puts a reaped
/// name back.
#[tokio::test]
async fn join_refuses_a_lost_name_and_reports_no_stale_previous_membership() {
    let f = fixture().await;
    f.heartbeat("n1").await;
    f.heartbeat("n2").await;
    claim(&f.r, &f.keys, "n1", "twin", TTL).await.unwrap();
    f.join("n1", "twin", "r1", None).await;
    // Reaped while alive: name and membership gone.
    let mut conn = f.conn();
    let _: () = conn.hdel(f.keys.names(), "twin").await.unwrap();
    let _: () = conn.hdel(f.keys.members("r1"), "twin").await.unwrap();
    assert_eq!(
        f.join("n1", "twin", "general", Some("r1")).await,
        joined(1, None, false)
    );
    let holder: Option<String> = conn.hget(f.keys.names(), "twin").await.unwrap();
    assert_eq!(holder.as_deref(), Some("n1"));
    // Claimed by another node meanwhile: the stale node's join is refused.
    let _: () = conn.hset(f.keys.names(), "twin", "n2").await.unwrap();
    assert_eq!(
        f.join("n1", "twin", "r1", Some("general")).await,
        JoinOutcome::NameLost
    );
    let members = room_members(&f.r, &f.keys, "general", 10).await.unwrap();
    assert_eq!(members.names, ["twin"]);
}

#[tokio::test]
async fn publish_keeps_capped_history_and_delete_erases_it() {
    use crate::backplane::HistoryQuery;
    let f = fixture().await;
    f.heartbeat("n1").await;
    claim(&f.r, &f.keys, "n1", "bob", TTL).await.unwrap();
    f.join("n1", "bob", "r1", None).await;
    let draft = MessageDraft {
        author: "bob".into(),
        content: "hi".into(),
        room: "r1".into(),
        id: "1".into(),
        ts: 1,
    };
    for _ in 0..5 {
        publish_message(&f.r, &f.keys, &draft, 0, HIST, PublishCommand::Publish)
            .await
            .unwrap();
    }
    let len: u64 = f.conn().xlen(f.keys.history("r1")).await.unwrap();
    assert_eq!(len, HIST.max_messages as u64, "capped at max_messages");
    let ttl: i64 = f.conn().pttl(f.keys.history("r1")).await.unwrap();
    assert!(ttl > 0 && ttl <= HIST.ttl_ms as i64, "expires: {ttl}");
    let query = HistoryQuery {
        member: Some("bob"),
        after: Some(0),
        before: None,
        limit: 10,
        epoch: None,
    };
    let HistoryOutcome::Page(page) = read_history(&f.r, &f.keys, "r1", &query).await.unwrap()
    else {
        panic!("bob is a member");
    };
    assert_eq!(
        page.messages,
        [draft.frame(3), draft.frame(4), draft.frame(5)]
    );
    assert_eq!(page.last_seq, 5);
    assert!(!page.complete, "1 and 2 were trimmed");
    assert_eq!(
        read_history(&f.r, &f.keys, "nope", &query).await.unwrap(),
        HistoryOutcome::NotMember,
        "no gate: no such room"
    );
    let epoch = page.epoch;
    assert!(change_steps(&f.r, &f.keys, "r1", &RoomChange::Delete)
        .await
        .unwrap());
    let exists: bool = f.conn().exists(f.keys.history("r1")).await.unwrap();
    assert!(!exists, "delete erases the history");
    f.join("n1", "bob", "r1", None).await;
    let HistoryOutcome::Page(page) = read_history(&f.r, &f.keys, "r1", &query).await.unwrap()
    else {
        panic!("bob is a member");
    };
    assert!(page.messages.is_empty() && page.last_seq == 0);
    assert_ne!(page.epoch, epoch, "a re-created room has a new epoch");
    let off = HistoryLimits {
        max_messages: 0,
        ttl_ms: 0,
    };
    publish_message(&f.r, &f.keys, &draft, 0, off, PublishCommand::Publish)
        .await
        .unwrap();
    let exists: bool = f.conn().exists(f.keys.history("r1")).await.unwrap();
    assert!(!exists, "history off writes nothing");
}

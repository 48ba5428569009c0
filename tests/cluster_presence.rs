//! joined/left notices for users whose own node cannot send them
//! (PROTOCOL.md, Commands: "a user who leaves, is moved, kicked, banned or
//! disconnects causes `left` for the members who remain"; guarantee 2).
//!
//! - A node killed with SIGKILL (the real binary): the reaper that removes
//!   its users publishes `left` to their rooms, once however many nodes
//!   survive, and not in rooms above `limits.presence_notice_max_members`.
//! - A login that takes over a dead node's name before any reaper ran
//!   publishes that user's `left`.
//! - Reaping a large dead node (several reaping batches) announces each user
//!   once, with two reapers racing.
//! - A node reaped while alive (its heartbeat late) writes its users back
//!   and announces them as `joined` again.
//!
//! The dead node of the last three is written into Redis by hand (the key
//! layout of `src/backplane/redis/keys.rs`), so that what happens does not
//! depend on timing. Measured times are printed as `MEASURED ...` lines
//! (`-- --nocapture`).

mod cluster_support;
mod common;

use common::Backend;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_support::*;
use common::redis_server::Resp;
use common::{bounded, expect, Client, RedisServer};
use serde_json::{json, Value};
use swiftchat::config::Config;

/// Short presence timing for these tests only (defaults: 5 s, 15 s).
const HEARTBEAT_SECS: u64 = 1;
const TTL_SECS: u64 = 3;
/// Small enough that a room of four members gets no notices.
const NOTICE_MAX: u64 = 3;

fn short_presence(c: &mut Config) {
    c.redis.heartbeat_secs = HEARTBEAT_SECS;
    c.redis.node_ttl_secs = TTL_SECS;
    c.limits.presence_notice_max_members = NOTICE_MAX;
}

/// The exact frame a session sends when `user` leaves `room`.
fn left_frame(user: &str, room: &str) -> Value {
    json!({"op": 7, "d": {"code": "left", "error": false,
        "message": format!("{user} left {room}."), "room": room, "user": user}})
}

fn count(frames: &[Value], e: &expect::Expect) -> usize {
    frames.iter().filter(|v| e.matches(v)).count()
}

/// SIGKILL of a node process: the members who remain in its users' rooms,
/// on both surviving nodes, get `left` exactly once, within the ttl plus two
/// reaper rounds; a room above `presence_notice_max_members` gets none.
async fn kill9_announces_left_once_with_two_survivors(backend: Backend) {
    bounded(async {
        let cluster = Cluster::start_with_on(backend, 2, short_presence).await;
        let (heartbeat, ttl, max) = (
            HEARTBEAT_SECS.to_string(),
            TTL_SECS.to_string(),
            NOTICE_MAX.to_string(),
        );
        let (mut process, addr, _dir) = cluster
            .spawn_binary(&[
                ("SWIFTCHAT_REDIS__HEARTBEAT_SECS", heartbeat.as_str()),
                ("SWIFTCHAT_REDIS__NODE_TTL_SECS", ttl.as_str()),
                (
                    "SWIFTCHAT_LIMITS__PRESENCE_NOTICE_MAX_MEMBERS",
                    max.as_str(),
                ),
            ])
            .await;
        // On the node that dies: one user in a small room, one in a big one.
        let mut doom_a = Client::connect(addr).await;
        doom_a.identify("DoomA").await;
        doom_a.create_room("doomroom").await;
        let mut doom_b = Client::connect(addr).await;
        doom_b.identify("DoomB").await;
        doom_b.create_room("bigroom").await;
        // doomroom: DoomA + one watcher per survivor = 3 members (notices).
        let mut watchers = Vec::new();
        for (i, name) in ["WatchA", "WatchB"].into_iter().enumerate() {
            let mut c = cluster.node(i).login(name).await;
            c.join_room("doomroom", None).await;
            watchers.push(c);
        }
        // bigroom: DoomB + three = 4 members, above the limit (no notices).
        let mut big = Vec::new();
        for (i, name) in ["BigA", "BigB", "BigC"].into_iter().enumerate() {
            let mut c = cluster.node(i % 2).login(name).await;
            c.command("\\join bigroom").await;
            c.recv_until(&expect::cache_in("bigroom")).await;
            big.push(c);
        }
        for c in watchers.iter_mut().chain(big.iter_mut()) {
            c.settle().await;
        }
        let (_, before) = wait_cache(&mut watchers[0], ONE_SECOND, "everyone in place", |v| {
            room_users(v, "doomroom") == 3 && room_users(v, "bigroom") == 4
        })
        .await;
        assert_eq!(before["users"], 7, "{before}");

        process.signal("KILL");
        let killed = Instant::now();
        process.wait_exit(Duration::from_secs(5)).await;
        let bound = Duration::from_secs(TTL_SECS + 2 * HEARTBEAT_SECS + 3);
        for c in watchers.iter_mut() {
            let v = c
                .recv_until_within(&expect::left("DoomA", "doomroom"), Duration::from_secs(30))
                .await;
            let took = killed.elapsed();
            report(
                &format!("kill -9 (heartbeat 1 s, ttl 3 s): {} got left", c.label),
                took,
            );
            assert_eq!(v, left_frame("DoomA", "doomroom"), "[{}]", c.label);
            assert!(
                took < bound,
                "[{}] left after {took:?}, bound {bound:?}",
                c.label
            );
        }
        // Both survivors run their reaper every second: give each two more
        // rounds, then count.
        let quiet = Duration::from_secs(2 * HEARTBEAT_SECS + 1);
        let left_a = expect::left("DoomA", "doomroom");
        let any_left = expect::notice("left");
        for c in watchers.iter_mut() {
            let frames = c.collect_for(quiet).await;
            assert_eq!(
                count(&frames, &left_a),
                0,
                "[{}] a second left: {frames:?}",
                c.label
            );
        }
        for c in big.iter_mut() {
            let frames = c.collect_for(Duration::from_millis(200)).await;
            assert_eq!(
                count(&frames, &any_left),
                0,
                "[{}] left in a room above the limit: {frames:?}",
                c.label
            );
        }
        let (_, after) = wait_cache(
            &mut watchers[1],
            ONE_SECOND,
            "dead node's users gone",
            |v| v["users"] == 5 && room_users(v, "doomroom") == 2 && room_users(v, "bigroom") == 3,
        )
        .await;
        assert!(common::room_entry(&after, "doomroom").is_some(), "{after}");
        drop((doom_a, doom_b));
    })
    .await
}

/// Writes a dead node `node` into Redis by hand: `users` (user key, display
/// name, room) hold names there and are members of their rooms (which must
/// exist); its heartbeat is ancient. The heartbeat goes last, so a reaper
/// sees the node only once it is complete.
fn write_dead_node(redis: &RedisServer, node: &str, users: &[(String, String, String)]) {
    let users_key = format!("swiftchat:{{global}}:node:{node}:users");
    for chunk in users.chunks(500) {
        let mut names = vec!["HSET".to_string(), "swiftchat:{global}:names".to_string()];
        let mut listed = vec!["HSET".to_string(), users_key.clone()];
        for (key, display, room) in chunk {
            names.extend([key.clone(), node.to_string()]);
            listed.extend([key.clone(), room.clone()]);
            let members = format!("swiftchat:{{global}}:members:{room}");
            redis_ok(redis, &["HSET", &members, key, display]);
        }
        redis_ok(redis, &names.iter().map(String::as_str).collect::<Vec<_>>());
        redis_ok(
            redis,
            &listed.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    redis_ok(redis, &["ZADD", "swiftchat:{global}:nodes", "1", node]);
}

fn redis_ok(redis: &RedisServer, args: &[&str]) {
    if let Resp::Error(e) = redis.cmd(args) {
        panic!("redis {args:?}: {e}");
    }
}

/// A login that takes over the name of a dead node's user before any
/// reaper ran (the survivor's reaper runs every 20 s here) takes that user
/// out of its room: the members who remain get `left`, before the new
/// login's own `joined`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_taking_over_a_dead_nodes_name_announces_left() {
    bounded(async {
        let cluster = Cluster::start_with(1, |c| {
            c.redis.heartbeat_secs = 20;
            c.redis.node_ttl_secs = 40;
        })
        .await;
        let mut watcher = cluster.node(0).login("Keeper").await;
        watcher.create_room("ghostroom").await;
        watcher.settle().await;
        // Past the reaper rounds right after the node started.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ghost = [(
            "ghost".to_string(),
            "Ghost".to_string(),
            "ghostroom".to_string(),
        )];
        write_dead_node(cluster.redis(), "ghostnode", &ghost);
        let (_, v) = wait_cache(&mut watcher, ONE_SECOND, "ghost counted", |v| {
            room_users(v, "ghostroom") == 2
        })
        .await;
        assert_eq!(v["users"], 2, "{v}");

        let started = Instant::now();
        let mut back = cluster.node(0).login("Ghost").await;
        let v = watcher
            .recv_until(&expect::left("Ghost", "ghostroom"))
            .await;
        report("name taken over from a dead node: left", started.elapsed());
        assert_eq!(v, left_frame("Ghost", "ghostroom"));
        // No reaper did it: the dead node is still listed.
        assert!(
            matches!(
                cluster
                    .redis()
                    .cmd(&["ZSCORE", "swiftchat:{global}:nodes", "ghostnode"]),
                Resp::Bulk(Some(_))
            ),
            "the dead node was reaped: the test did not exercise the takeover"
        );
        let frames = watcher.collect_for(Duration::from_millis(500)).await;
        assert_eq!(count(&frames, &expect::notice("left")), 0, "{frames:?}");
        let (_, v) = wait_cache(&mut watcher, ONE_SECOND, "ghost moved", |v| {
            room_users(v, "ghostroom") == 1 && room_users(v, "general") == 1
        })
        .await;
        assert_eq!(v["users"], 2, "{v}");
        back.roundtrip("I am back").await;
    })
    .await
}

/// Counts the `left` notices `c` receives within `dur` by user; all must be
/// for `smallroom`.
async fn tally_left(c: &mut Client, seen: &mut BTreeMap<String, usize>, dur: Duration) {
    for v in c.collect_for(dur).await {
        if expect::notice("left").matches(&v) {
            assert_eq!(v["d"]["room"], "smallroom", "[{}] {v}", c.label);
            let user = v["d"]["user"].as_str().unwrap().to_string();
            *seen.entry(user).or_default() += 1;
        }
    }
}

/// A dead node with 1200 users (three reaping batches), 150 of them in the
/// watchers' room: two survivors reap it at the same time, and each watcher
/// gets each of the 150 `left` notices exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaping_a_large_dead_node_announces_each_user_once() {
    bounded(async {
        let cluster = Cluster::start_with(2, |c| {
            c.redis.heartbeat_secs = HEARTBEAT_SECS;
            c.redis.node_ttl_secs = TTL_SECS;
        })
        .await;
        let mut watchers = Vec::new();
        for (i, name) in ["KeepA", "KeepB"].into_iter().enumerate() {
            let mut c = cluster.node(i).login(name).await;
            if i == 0 {
                c.create_room("smallroom").await;
                c.create_room("crowdroom").await;
                c.join_room("smallroom", None).await;
            } else {
                c.join_room("smallroom", None).await;
            }
            watchers.push(c);
        }
        for c in watchers.iter_mut() {
            c.settle().await;
        }
        let users: Vec<(String, String, String)> = (0..1200)
            .map(|i| {
                let room = if i % 8 == 0 { "smallroom" } else { "crowdroom" };
                (format!("mass{i}"), format!("Mass{i}"), room.to_string())
            })
            .collect();
        write_dead_node(cluster.redis(), "massnode", &users);
        let written = Instant::now();

        let small: Vec<&str> = users
            .iter()
            .filter(|u| u.2 == "smallroom")
            .map(|u| u.1.as_str())
            .collect();
        assert_eq!(small.len(), 150);
        let mut seen = vec![BTreeMap::<String, usize>::new(); watchers.len()];
        for (c, seen) in watchers.iter_mut().zip(seen.iter_mut()) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.len() < small.len() && Instant::now() < deadline {
                tally_left(c, seen, Duration::from_millis(100)).await;
            }
            report(
                &format!("150 left notices of a 1200-user dead node at {}", c.label),
                written.elapsed(),
            );
        }
        // Two more reaper rounds of both survivors, then count.
        for (c, seen) in watchers.iter_mut().zip(seen.iter_mut()) {
            tally_left(c, seen, Duration::from_secs(2 * HEARTBEAT_SECS + 1)).await;
            let missing: Vec<&&str> = small.iter().filter(|u| !seen.contains_key(**u)).collect();
            assert!(missing.is_empty(), "[{}] no left for {missing:?}", c.label);
            let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
            assert!(
                twice.is_empty(),
                "[{}] left more than once: {twice:?}",
                c.label
            );
            assert_eq!(seen.len(), 150, "[{}] {seen:?}", c.label);
        }
        let (_, v) = wait_cache(&mut watchers[0], ONE_SECOND, "dead node reaped", |v| {
            v["users"] == 2 && room_users(v, "smallroom") == 2 && room_users(v, "crowdroom") == 0
        })
        .await;
        assert!(common::room_entry(&v, "crowdroom").is_some(), "{v}");
    })
    .await
}

/// A node whose heartbeat is late for the other node's ttl (as if it had
/// stalled) is reaped while its users are still connected: the others get
/// `left`; when it next renews its presence it writes its users back and
/// they get `joined`, so a member list kept from the notices is right again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reaped_while_alive_announces_its_users_again() {
    bounded(async {
        let redis = RedisServer::start();
        // Renews every 4 s; the other node presumes it dead after 2 s.
        let slow = common::TestNode::start_on_redis(&redis, |c| {
            node_config(c);
            c.redis.heartbeat_secs = 4;
            c.redis.node_ttl_secs = 5;
        })
        .await;
        let quick = common::TestNode::start_on_redis(&redis, |c| {
            node_config(c);
            c.redis.heartbeat_secs = 1;
            c.redis.node_ttl_secs = 2;
        })
        .await;
        let mut stalled = slow.login("Sleeper").await;
        stalled.create_room("napsroom").await;
        let mut watcher = quick.login("Awake").await;
        watcher.join_room("napsroom", None).await;
        stalled.settle().await;
        let started = Instant::now();
        let within = Duration::from_secs(10);
        watcher
            .recv_until_within(&expect::left("Sleeper", "napsroom"), within)
            .await;
        report("reaped while alive: left", started.elapsed());
        let v = watcher
            .recv_until_within(&expect::joined("Sleeper", "napsroom"), within)
            .await;
        report("reaped while alive: joined again", started.elapsed());
        assert_eq!(
            v,
            json!({"op": 7, "d": {"code": "joined", "error": false,
                "message": "Sleeper joined napsroom.", "room": "napsroom", "user": "Sleeper"}})
        );
        // Back in the counts and the member list.
        watcher.command("\\users").await;
        let v = watcher.recv_until(&expect::notice("info")).await;
        let text = v["d"]["message"].as_str().unwrap_or_default();
        assert!(text.contains("Sleeper") && text.contains("Awake"), "{v}");
        stalled.roundtrip("still here").await;
    })
    .await
}

cluster_tests!(kill9_announces_left_once_with_two_survivors);

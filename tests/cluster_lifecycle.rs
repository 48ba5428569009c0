//! Cluster guarantees 2 and 4 of PROTOCOL.md around nodes stopping:
//! a cluster-wide shutdown (payload, `\shutdown`, `POST /admin/shutdown`,
//! `swiftchat shutdown` through Redis) reaches every client of every node
//! and every node stops; a drained node leaves while the others serve; a
//! node killed with SIGKILL (the real binary) leaves names and counts within
//! 30 s.
//!
//! Measured times are printed as `MEASURED ...` lines (`-- --nocapture`).

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::*;
use common::binary;
use common::expect;
use common::{bounded, http, Client, RedisServer, TestNode};
use serde_json::json;

/// How a cluster-wide shutdown is triggered.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// `{"op":3,"d":{"key":...}}` from a client of node 0.
    Payload,
    /// `\shutdown` by an admin on node 0.
    Command,
    /// `POST /admin/shutdown` on node 1.
    Http,
    /// `swiftchat shutdown --redis URL` (the binary), straight to Redis.
    Binary,
}

/// Three nodes, a logged-in and a not-logged-in client on each; the
/// shutdown must reach all six with `reconnect: false`, close them with
/// 1001, and stop every node.
async fn shutdown_reaches_every_node(trigger: Trigger) {
    let mut cluster = Cluster::start(3).await;
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..3 {
        let name = format!("Down{trigger:?}{i}");
        let c = if i == 0 && matches!(trigger, Trigger::Command) {
            login_admin(cluster.node(i), &name).await
        } else {
            cluster.node(i).login(&name).await
        };
        clients.push(c);
        let mut anonymous = cluster.node(i).connect().await;
        anonymous.label = format!("anonymous on node {i}");
        clients.push(anonymous);
    }
    for c in clients.iter_mut() {
        c.settle().await;
    }
    let reason = format!("maintenance by {trigger:?}");
    let started = Instant::now();
    match trigger {
        Trigger::Payload => {
            clients[1]
                .send_json(json!({"op": 3, "d": {"key": SHUTDOWN_KEY, "reason": reason}}))
                .await
        }
        Trigger::Command => clients[0].command(&format!("\\shutdown {reason}")).await,
        Trigger::Http => {
            let body = json!({ "reason": reason }).to_string();
            let auth = format!("Bearer {SHUTDOWN_KEY}");
            let r = http::post(
                cluster.node(1).addr(),
                "/admin/shutdown",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                &body,
            )
            .await;
            assert_eq!(r.status, 202, "{r:?}");
        }
        Trigger::Binary => {
            let dir = tempfile::tempdir().unwrap();
            let mut cmd = binary::command(dir.path());
            cmd.args([
                "shutdown",
                "--redis",
                &cluster.redis().url(),
                "--reason",
                &reason,
            ]);
            let (status, output) = binary::run_to_exit(cmd, Duration::from_secs(15)).await;
            assert!(status.success(), "swiftchat shutdown failed: {output}");
        }
    }
    for c in clients.iter_mut() {
        let v = c.recv_until(&expect::shutdown(false)).await;
        assert_eq!(v["d"]["reason"], reason.as_str(), "[{}] {v}", c.label);
        c.expect_close_within(1001, Duration::from_secs(5)).await;
    }
    report(
        &format!("cluster shutdown by {trigger:?} reaches 6 clients on 3 nodes"),
        started.elapsed(),
    );
    for node in cluster.nodes.iter_mut() {
        node.wait_stopped(Duration::from_secs(15))
            .await
            .expect("node stops cleanly");
    }
    report(
        &format!("cluster shutdown by {trigger:?}: all 3 nodes stopped"),
        started.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_by_payload_stops_every_node() {
    bounded(shutdown_reaches_every_node(Trigger::Payload)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_by_admin_command_stops_every_node() {
    bounded(shutdown_reaches_every_node(Trigger::Command)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_by_http_stops_every_node() {
    bounded(shutdown_reaches_every_node(Trigger::Http)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_by_cli_through_redis_stops_every_node() {
    bounded(shutdown_reaches_every_node(Trigger::Binary)).await
}

/// Draining one node (SIGTERM) sends its clients away with `reconnect:
/// true` and releases their names and counts at once; the other nodes keep
/// serving and talking to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_of_one_node_while_the_others_serve() {
    bounded(async {
        let mut cluster = Cluster::start(3).await;
        let mut a = cluster.node(0).login("DrainA").await;
        a.create_room("drainroom").await;
        let mut b = cluster.node(1).login("DrainB").await;
        b.join_room("drainroom", None).await;
        let mut b2 = cluster.node(1).login("DrainB2").await;
        let mut c = cluster.node(2).login("DrainC").await;
        c.join_room("drainroom", None).await;
        for client in [&mut a, &mut b, &mut b2, &mut c] {
            client.settle().await;
        }
        assert_eq!(cache(&mut a).await["users"], 4);

        let started = Instant::now();
        cluster.nodes[1].drain();
        for client in [&mut b, &mut b2] {
            client.recv_until(&expect::shutdown(true)).await;
            client
                .expect_close_within(1001, Duration::from_secs(5))
                .await;
        }
        a.recv_until(&expect::left("DrainB", "drainroom")).await;
        let (took, _) = wait_cache(&mut a, Duration::from_secs(2), "drained users gone", |v| {
            v["users"] == 2 && room_users(v, "drainroom") == 2
        })
        .await;
        report(
            "drain: the node's users leave the counts",
            started.elapsed(),
        );
        assert!(took < ONE_SECOND + Duration::from_millis(500), "{took:?}");
        cluster.nodes[1]
            .wait_stopped(Duration::from_secs(15))
            .await
            .expect("drained node stops cleanly");
        report("drain: node stopped", started.elapsed());

        // The others still serve, across nodes; the names are free again.
        a.send_message("still here").await;
        c.recv_until(&expect::message("DrainA", "still here")).await;
        c.send_message("me too").await;
        a.recv_until(&expect::message("DrainC", "me too")).await;
        let mut again = cluster.node(2).login("DrainB").await;
        again.roundtrip("back on another node").await;
        cluster.node(0).assert_serving().await;
        cluster.node(2).assert_serving().await;
        assert_eq!(readyz(cluster.node(0)).await, 200);
    })
    .await
}

/// How long a killed node's users may stay: its last heartbeat expires
/// after `ttl`, a survivor's reaper runs within one `heartbeat` after that,
/// plus one more heartbeat and a second of slack for a reaper round and
/// the CACHE_UPDATE.
fn convergence_bound(heartbeat: u64, ttl: u64) -> Duration {
    Duration::from_secs(ttl + 2 * heartbeat + 1)
}

/// SIGKILL of a node process: its users leave names and counts within
/// [`convergence_bound`] (guarantee 2 asks for 30 s with the defaults),
/// measured with `heartbeat_secs`/`node_ttl_secs` as given.
async fn kill9_converges(heartbeat: u64, ttl: u64) {
    let redis = RedisServer::start();
    let heartbeat_text = heartbeat.to_string();
    let ttl_text = ttl.to_string();
    let survivor = TestNode::start_on_redis(&redis, |c| {
        node_config(c);
        c.redis.heartbeat_secs = heartbeat;
        c.redis.node_ttl_secs = ttl;
    })
    .await;
    let (mut process, addr, _dir) = spawn_binary_node(
        &redis,
        &[
            ("SWIFTCHAT_REDIS__HEARTBEAT_SECS", heartbeat_text.as_str()),
            ("SWIFTCHAT_REDIS__NODE_TTL_SECS", ttl_text.as_str()),
        ],
    )
    .await;
    let prefix = format!("Doomed{heartbeat}x");
    let mut doomed = Vec::new();
    for i in 0..3 {
        let mut c = Client::connect(addr).await;
        c.identify(&format!("{prefix}{i}")).await;
        doomed.push(c);
    }
    doomed[0].settle().await;
    doomed[0].create_room("doomroom").await;
    let mut watcher = survivor.login(&format!("Watcher{heartbeat}")).await;
    let (_, before) = wait_cache(&mut watcher, ONE_SECOND, "all logged in", |v| {
        v["users"] == 4
    })
    .await;
    assert_eq!(room_users(&before, "doomroom"), 1, "{before}");

    process.signal("KILL");
    let started = Instant::now();
    process.wait_exit(Duration::from_secs(5)).await;
    let (took, after) = wait_cache(
        &mut watcher,
        Duration::from_secs(30),
        "the killed node's users leave the counts",
        |v| v["users"] == 1 && room_users(v, "doomroom") == 0 && room_users(v, "general") == 1,
    )
    .await;
    report(
        &format!("kill -9 (heartbeat {heartbeat} s, ttl {ttl} s): counts converged"),
        took,
    );
    assert!(
        took < convergence_bound(heartbeat, ttl),
        "{took:?}: {after}"
    );
    // The room itself stays (rooms live until deleted); the names are free.
    assert!(common::room_entry(&after, "doomroom").is_some(), "{after}");
    let mut back = survivor.login(&format!("{prefix}0")).await;
    back.roundtrip("the name is free again").await;
    report(
        &format!("kill -9 (heartbeat {heartbeat} s, ttl {ttl} s): name free again"),
        started.elapsed(),
    );
    drop(doomed);
}

/// With a short heartbeat (1 s) and ttl (3 s), as configured for this test
/// only, to keep the suite fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_node_short_ttl_converges() {
    bounded(kill9_converges(1, 3)).await
}

/// With the default heartbeat (5 s) and ttl (15 s) the bound the test above
/// checks in real time (with the intervals scaled down) is within the 30 s
/// of guarantee 2. Waiting the default 20 s in real time would prove the
/// same timing model again at five times the cost (issue 9, item 6).
#[test]
fn kill9_with_the_default_config_is_bounded_by_30s() {
    let defaults = swiftchat::config::Config::default().redis;
    let bound = convergence_bound(defaults.heartbeat_secs, defaults.node_ttl_secs);
    assert!(bound <= Duration::from_secs(30), "{bound:?}");
}

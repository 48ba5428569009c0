//! Nodes on a real Redis Cluster (3 primaries + 3 replicas, `redis.cluster
//! = true`) through the three known traps of sharded pub/sub (issue 12):
//!
//! - the subscriber's connections are killed on every shard while the node
//!   is subscribed to rooms spanning many slots: every room is subscribed
//!   again (one SSUBSCRIBE per slot: a multi-slot one would get CROSSSLOT)
//!   and chat goes on in all of them, nothing missed;
//! - the slot of a busy room migrates to another primary while its members
//!   chat (the old owner pushes an unsolicited `sunsubscribe`): the nodes
//!   subscribe again at the new owner, every member keeps every message;
//! - the primary owning a busy room is killed (its replica is promoted, no
//!   `sunsubscribe` at all): no client is disconnected, chat resumes within
//!   5 s, and the members get every accepted message exactly once, in `seq`
//!   order (the gap is filled from history).
//!
//! Each test owns its cluster (they stop and move parts of it).

mod cluster_support;
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::chaos::{stop_and_collect, Member};
use cluster_support::node_config;
use common::client::Event;
use common::redis_server::Resp;
use common::{bounded, expect, unique, Client, RedisCluster, TestNode};
use serde_json::json;

/// A node on `cluster` with the cluster tests' settings.
async fn node_on(cluster: &RedisCluster, prefix: &str) -> TestNode {
    let mut config = common::base_config();
    config.redis.url = cluster.url();
    config.redis.cluster = true;
    config.redis.key_prefix = prefix.to_string();
    node_config(&mut config);
    // Keep every message of the run: nothing trimmed.
    config.history.max_messages = 100_000;
    TestNode::start_with_config(config).await
}

/// Logs `name` in on `node` and moves it into `room` (created if needed).
async fn member_in(node: &TestNode, name: &str, room: &str) -> Client {
    let mut client = node.login(name).await;
    client.command(&format!("\\join {room}")).await;
    client.recv_until(&expect::cache_me(name, room)).await;
    client
}

/// Starts `members` chatting until `stop`; returns their tasks.
fn chat(
    members: Vec<Member>,
    stop: &Arc<AtomicBool>,
    fallback: std::net::SocketAddr,
) -> Vec<tokio::task::JoinHandle<Member>> {
    members
        .into_iter()
        .map(|m| tokio::spawn(m.run(stop.clone(), fallback)))
        .collect()
}

/// Reads (and drops) what `client` receives for `dur`; panics if it closes.
async fn read_for(client: &mut Client, dur: Duration) {
    let deadline = Instant::now() + dur;
    loop {
        match client
            .recv_event_within(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Event::Json(_) => {}
            Event::Timeout => return,
            other => panic!("{other:?} while reading"),
        }
    }
}

/// Stops the chat, collects the members, and checks that each holds every
/// `seq` of the room exactly once, with no live gap, and never reconnected.
async fn finish(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<Member>>) {
    let (members, last) = stop_and_collect(&stop, tasks).await;
    let sent: usize = members.iter().map(|m| m.sent).sum();
    println!("MEASURED: {sent} sends, last_seq {last}");
    assert!(last > 50, "too few messages to mean anything: {last}");
    for m in &members {
        m.check(last);
        assert_eq!(m.reconnects, 0, "[{}] was disconnected", m.name);
    }
}

/// Ids of the pub/sub connections on the cluster node at `port`.
fn pubsub_clients(port: u16) -> Vec<String> {
    let Resp::Bulk(Some(list)) =
        common::redis_server::cmd_on_port(port, &["CLIENT", "LIST", "TYPE", "pubsub"])
    else {
        panic!("CLIENT LIST failed on {port}");
    };
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_many_slots_are_subscribed_again_after_the_subscriber_is_cut() {
    bounded(async {
        let cluster = tokio::task::block_in_place(RedisCluster::start);
        let node = node_on(&cluster, "kill").await;
        // 40 rooms: their channels span many slots on all three shards.
        let rooms: Vec<String> = (0..40).map(|i| format!("slot{i}")).collect();
        let mut clients = Vec::new();
        for room in &rooms {
            let name = unique("k");
            clients.push((member_in(&node, &name, room).await, room.clone()));
        }
        let shards: std::collections::BTreeSet<u16> = rooms
            .iter()
            .map(|r| cluster.port_for_slot(cluster.keyslot(&format!("kill:ch:{{{r}}}"))))
            .collect();
        assert_eq!(shards.len(), 3, "the rooms span all three shards");
        for (client, _) in clients.iter_mut() {
            client.roundtrip("before").await;
        }
        // Cut every pub/sub connection on every node of the cluster.
        let mut killed = 0;
        for n in &cluster.nodes {
            for id in pubsub_clients(n.port) {
                if n.cmd(&["CLIENT", "KILL", "ID", &id]).as_int() == Some(1) {
                    killed += 1;
                }
            }
        }
        assert!(killed >= 3, "one subscriber connection per shard: {killed}");
        // Every room hears its messages again (a CROSSSLOT resubscription
        // would leave most of them deaf), with no gap in `seq`.
        let started = Instant::now();
        for (client, room) in clients.iter_mut() {
            let v = client.roundtrip("after").await;
            assert_eq!(v["room"], room.as_str());
        }
        println!(
            "MEASURED: 40 rooms heard again {} ms after the cut",
            started.elapsed().as_millis()
        );
        // Resubscribed on every shard: the node's subscriber connections
        // are back on every primary.
        for n in &cluster.nodes {
            let role = n.cmd(&["ROLE"]);
            if format!("{role:?}").contains("master") {
                assert!(
                    !pubsub_clients(n.port).is_empty(),
                    "no subscriber on primary {}",
                    n.port
                );
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_slot_migrates_while_its_members_chat() {
    bounded(async {
        let cluster = tokio::task::block_in_place(RedisCluster::start);
        let one = node_on(&cluster, "mig").await;
        let two = node_on(&cluster, "mig").await;
        let room = "moving";
        let mut members = Vec::new();
        for (n, node) in [&one, &two].into_iter().enumerate() {
            for i in 0..2 {
                let name = format!("mig{n}x{i}");
                members.push(Member::new(
                    name.clone(),
                    room,
                    member_in(node, &name, room).await,
                ));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = chat(members, &stop, one.addr());
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The room's slot (its channel, seq, history and gate) moves to
        // another primary, and back.
        let slot = cluster.keyslot("mig:ch:{moving}");
        let from = cluster.primary_for_slot(slot);
        let to = (0..cluster.nodes.len())
            .find(|&i| {
                i != from
                    && cluster.port_for_slot(slot) != cluster.nodes[i].port
                    && is_primary(&cluster, i)
            })
            .expect("another primary");
        tokio::task::block_in_place(|| cluster.migrate_slot(slot, to));
        assert_eq!(cluster.primary_for_slot(slot), to, "migrated");
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| cluster.migrate_slot(slot, from));
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(stop, tasks).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primarys_failover_loses_no_client_and_no_message() {
    bounded(async {
        let mut cluster = tokio::task::block_in_place(RedisCluster::start);
        let one = node_on(&cluster, "fo").await;
        let two = node_on(&cluster, "fo").await;
        let room = "sturdy";
        let mut members = Vec::new();
        for (n, node) in [&one, &two].into_iter().enumerate() {
            for i in 0..2 {
                let name = format!("fo{n}x{i}");
                members.push(Member::new(
                    name.clone(),
                    room,
                    member_in(node, &name, room).await,
                ));
            }
        }
        // A client that measures the recovery: same room, no chatter. It
        // keeps reading the room's traffic, as a real client does: one that
        // stops reading for the seconds a failover takes is rightly closed
        // as a slow consumer (4009) once its queue and socket buffers fill.
        let mut probe = member_in(&two, "foprobe", room).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = chat(members, &stop, one.addr());
        read_for(&mut probe, Duration::from_secs(2)).await;
        let slot = cluster.keyslot("fo:ch:{sturdy}");
        let old_port = cluster.port_for_slot(slot);
        let killed_at = Instant::now();
        let failover = tokio::task::spawn_blocking(move || {
            cluster.kill_primary_for_slot(slot);
            let new_port = cluster.wait_failover(slot, old_port, Duration::from_secs(10));
            (cluster, new_port)
        });
        while !failover.is_finished() {
            read_for(&mut probe, Duration::from_millis(50)).await;
        }
        let (_cluster, new_port) = failover.await.expect("failover");
        println!(
            "MEASURED: replica {new_port} promoted {} ms after the kill",
            killed_at.elapsed().as_millis()
        );
        // Recovered: a message of the probe goes round, on the same
        // connection, within 5 s of the kill.
        let mut n = 0;
        'recovery: loop {
            n += 1;
            let content = format!("probe {n}");
            probe.send_message(&content).await;
            let wait_until = Instant::now() + Duration::from_millis(500);
            loop {
                let left = wait_until.saturating_duration_since(Instant::now());
                match probe.recv_event_within(left).await {
                    Event::Json(v) if v["op"] == 0 && v["d"]["content"] == content.as_str() => {
                        break 'recovery;
                    }
                    // Refused (`unavailable`) while the shard fails over.
                    Event::Json(v) if v["op"] == 7 && v["d"]["error"] == true => break,
                    Event::Json(_) => {}
                    Event::Timeout => break,
                    other => panic!("the probe lost its connection: {other:?}"),
                }
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(5),
                "chat not back within 5 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let recovered = killed_at.elapsed();
        println!(
            "MEASURED: chat back {} ms after the kill",
            recovered.as_millis()
        );
        assert!(recovered < Duration::from_secs(5), "{recovered:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        finish(stop, tasks).await;
        assert!(probe.is_open().await, "the probe kept its connection");
    })
    .await
}

fn is_primary(cluster: &RedisCluster, i: usize) -> bool {
    format!("{:?}", cluster.nodes[i].cmd(&["ROLE"])).contains("master")
}

/// Measurement (run with `--ignored --nocapture`), for the choice of one
/// hash tag per room over a fixed number of partitions: the price of a tag
/// per room is one subscription per room and slot, so a resubscription
/// after a cut sends one SSUBSCRIBE per slot in use. `MEASURE_ROOMS` rooms
/// (default 1,000), one member each, on one node; every subscriber
/// connection is cut; prints how long until every room hears a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn measure_resubscription_of_many_rooms() {
    let rooms: usize = std::env::var("MEASURE_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let mut config = common::base_config();
    config.redis.url = cluster.url();
    config.redis.cluster = true;
    config.redis.key_prefix = "many".into();
    node_config(&mut config);
    // Every creation is announced to everyone: room for all of them.
    config.limits.outbound_queue = 4 * rooms + 64;
    let node = TestNode::start_with_config(config).await;
    let mut clients = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let (name, room) = (format!("m{i}"), format!("many{i}"));
        let mut client = node.connect().await;
        client.send_identify(json!({ "name": name })).await;
        client.recv_until(&expect::op(4)).await;
        client.command(&format!("\\join {room}")).await;
        client.recv_until(&expect::cache_me(&name, &room)).await;
        client.label = name;
        clients.push(client);
    }
    for client in clients.iter_mut() {
        client.roundtrip("before").await;
    }
    let cut = Instant::now();
    for n in &cluster.nodes {
        for id in pubsub_clients(n.port) {
            n.cmd(&["CLIENT", "KILL", "ID", &id]);
        }
    }
    for client in clients.iter_mut() {
        client.roundtrip("after").await;
    }
    println!(
        "MEASURED: {rooms} rooms (one SSUBSCRIBE per slot in use) heard again {} ms after the cut",
        cut.elapsed().as_millis()
    );
}

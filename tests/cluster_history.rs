//! Cluster guarantee 1 with history (issue 11): on 3 nodes, with clients
//! sending continuously, while (a) one node's Redis subscriber connection is
//! killed (CLIENT KILL), (b) Redis restarts with its data (append-only file,
//! same port), and (c) a node is drained and its clients reconnect to the
//! others and resume with HISTORY_REQUEST after their last `seq`: at the end
//! every client holds every accepted message of its room exactly once, in
//! `seq` order.
//!
//! "Accepted" is what the room's numbering says: `last_seq` at the end, and
//! every `seq` up to it (a publish whose reply was lost in the restart
//! still counts). Clients that stay connected must see the room's live
//! MESSAGEs as 1, 2, 3, … without a gap or a repeat (their node fills the
//! gaps of (a) and (b) from history); a resumed client may get a message
//! both in HISTORY and live (the protocol allows it; `seq` tells them
//! apart), but its live stream on each connection has no gap or repeat.

mod cluster_support;
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use cluster_support::chaos::{stop_and_collect, Member};
use cluster_support::node_config;
use common::redis_server::Resp;
use common::{bounded, expect, RedisServer, TestNode};

const ROOM: &str = "chaos";
/// Members per node.
const PER_NODE: usize = 2;

/// The id of one subscriber (pub/sub) connection in Redis.
fn one_subscriber_id(redis: &RedisServer) -> String {
    let Resp::Bulk(Some(list)) = redis.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]) else {
        panic!("CLIENT LIST failed");
    };
    let ids: Vec<String> = list
        .lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3, "one subscriber per node: {list}");
    ids[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_misses_a_message_through_kills_restarts_and_drains() {
    bounded(async {
        let mut redis = RedisServer::start_persistent();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                TestNode::start_on_redis(&redis, |c| {
                    node_config(c);
                    // Keep the whole run: nothing trimmed.
                    c.history.max_messages = 100_000;
                })
                .await,
            );
        }
        let mut members = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for i in 0..PER_NODE {
                let name = format!("chaos{n}x{i}");
                let mut client = node.login(&name).await;
                client.command(&format!("\\join {ROOM}")).await;
                client.recv_until(&expect::cache_me(&name, ROOM)).await;
                members.push(Member::new(name, ROOM, client));
            }
        }
        // Drained members of node 2 resume on nodes 0 and 1.
        let fallbacks = [nodes[0].addr(), nodes[1].addr()];
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| tokio::spawn(m.run(stop.clone(), fallbacks[i % 2])))
            .collect();

        tokio::time::sleep(Duration::from_secs(2)).await;
        // (a) a node's subscriber connection is killed, a few times (it
        // reconnects within tens of ms, so one kill may lose nothing).
        for _ in 0..5 {
            let id = one_subscriber_id(&redis);
            assert_eq!(
                redis.cmd(&["CLIENT", "KILL", "ID", &id]).as_int(),
                Some(1),
                "killed one subscriber"
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // (b) Redis restarts with its data.
        tokio::task::block_in_place(|| redis.restart());
        tokio::time::sleep(Duration::from_secs(5)).await;
        // (c) node 2 drains; its clients resume elsewhere.
        nodes[2].drain();
        nodes[2]
            .wait_stopped(Duration::from_secs(15))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The room's numbering at the end: every seq up to it was accepted.
        let (members, last) = stop_and_collect(&stop, tasks).await;
        let sent: usize = members.iter().map(|m| m.sent).sum();
        println!("MEASURED chaos: {sent} sends, last_seq {last}");
        assert!(last > 200, "too few messages to mean anything: {last}");
        for m in &members {
            println!(
                "MEASURED {}: sent {}, reconnects {}, errors {:?}",
                m.name,
                m.sent,
                m.reconnects,
                &m.errors[..m.errors.len().min(5)]
            );
        }
        for m in &members {
            m.check(last);
        }
        let resumed = members.iter().filter(|m| m.reconnects > 0).count();
        assert_eq!(resumed, PER_NODE, "node 2's members resumed elsewhere");
    })
    .await
}

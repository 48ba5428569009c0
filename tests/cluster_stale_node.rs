//! A node reaped while still alive (issue 9, bugs 5a and 5d): the other
//! nodes presumed it dead (a partition or a stall longer than the ttl), took
//! its users out and announced their `left`, and may have given their names
//! to new logins, all before the node notices and writes its users back.
//!
//! The reaping is done here by hand, exactly as the reaper script would
//! (the key layout of `src/backplane/redis/keys.rs`), so the outcome does not
//! depend on timing.

mod cluster_support;
mod common;

use std::time::Duration;

use cluster_support::*;
use common::redis_server::Resp;
use common::{bounded, expect, RedisServer, TestNode};

fn text(resp: Resp) -> Option<String> {
    match resp {
        Resp::Bulk(s) => s,
        other => panic!("expected a string, got {other:?}"),
    }
}

fn strings(resp: Resp) -> Vec<String> {
    match resp {
        Resp::Array(Some(items)) => items
            .into_iter()
            .map(|item| match item {
                Resp::Bulk(Some(s)) => s,
                other => panic!("expected a string, got {other:?}"),
            })
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// Removes `user` (lower-case key) of the only node listed in Redis as its
/// reaper would: name, membership, the node's list entry, and (`token`)
/// the node's registration marker so it writes its users back at its next
/// heartbeat.
fn reap_by_hand(redis: &RedisServer, user: &str, room: &str, token: bool) -> String {
    let nodes = strings(redis.cmd(&["ZRANGE", "swiftchat:{global}:nodes", "0", "-1"]));
    let node = nodes
        .iter()
        .find(|node| {
            text(redis.cmd(&["HGET", "swiftchat:{global}:names", user])).as_deref()
                == Some(node.as_str())
        })
        .unwrap_or_else(|| panic!("no node holds {user}: {nodes:?}"))
        .clone();
    redis.cmd(&["HDEL", "swiftchat:{global}:names", user]);
    redis.cmd(&[
        "HDEL",
        &format!("swiftchat:{{global}}:members:{room}"),
        user,
    ]);
    redis.cmd(&[
        "HDEL",
        &format!("swiftchat:{{global}}:node:{node}:users"),
        user,
    ]);
    if token {
        redis.cmd(&["DEL", &format!("swiftchat:{{global}}:node:{node}:token")]);
    }
    node
}

/// Bug 5d: a user reaped while alive (its `left` already announced by the
/// reaper) who moves before its node re-registers must not cause a second
/// `left` in the room it was taken out of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaped_user_who_moves_causes_no_second_left() {
    bounded(async {
        let redis = RedisServer::start();
        // No heartbeat during the test: the node has not noticed yet.
        let node = TestNode::start_on_redis(&redis, |c| {
            node_config(c);
            c.redis.heartbeat_secs = 60;
            c.redis.node_ttl_secs = 120;
        })
        .await;
        let mut mover = node.login("Mover").await;
        mover.create_room("leftroom").await;
        let mut watcher = node.login("Watcher").await;
        watcher.join_room("leftroom", None).await;
        mover.settle().await;
        watcher.settle().await;

        reap_by_hand(&redis, "mover", "leftroom", false);
        mover.join_room("general", None).await;
        mover.settle().await;
        // Everything the move published to leftroom came before this.
        watcher.send_message("marker").await;
        let frames = watcher
            .collect_until(&expect::message("Watcher", "marker"))
            .await;
        let lefts = frames
            .iter()
            .filter(|v| expect::left("Mover", "leftroom").matches(v))
            .count();
        assert_eq!(lefts, 0, "{}", common::client::show(&frames));
    })
    .await
}

/// Bug 5a: while a node was reaped, someone else logged in under one of its
/// users' names on another node. The stale session must never change the
/// new holder's state (here: moving into and out of the room the new holder
/// is in would overwrite and then delete its membership), and once its node
/// re-registers it is told and closed; the name stays with the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_session_never_touches_the_new_holder_of_its_name() {
    bounded(async {
        let redis = RedisServer::start();
        let stale_node = TestNode::start_on_redis(&redis, |c| {
            node_config(c);
            c.redis.heartbeat_secs = 1;
            c.redis.node_ttl_secs = 120;
        })
        .await;
        let other_node = TestNode::start_on_redis(&redis, |c| {
            node_config(c);
            c.redis.heartbeat_secs = 1;
            c.redis.node_ttl_secs = 120;
        })
        .await;
        let mut stale = stale_node.login("Twin").await;
        stale.create_room("twinroom").await;
        stale.settle().await;

        reap_by_hand(&redis, "twin", "twinroom", true);
        let mut fresh = other_node.login("TWIN").await;
        fresh.settle().await;
        // The stale session tries to move through the new holder's room.
        stale.command("\\join general").await;
        stale.command("\\join twinroom").await;
        // Its node re-registers within a heartbeat and must close it.
        let frames = stale
            .expect_close_within(1008, Duration::from_secs(5))
            .await;
        assert!(
            frames
                .iter()
                .any(|v| expect::notice("name_taken").matches(v)),
            "{}",
            common::client::show(&frames)
        );
        // The name and the membership are the new holder's.
        assert_eq!(
            text(redis.cmd(&["HGET", "swiftchat:{global}:members:general", "twin"])).as_deref(),
            Some("TWIN")
        );
        let holder = text(redis.cmd(&["HGET", "swiftchat:{global}:names", "twin"]));
        let other_id = strings(redis.cmd(&["ZRANGE", "swiftchat:{global}:nodes", "0", "-1"]))
            .into_iter()
            .find(|id| {
                strings(redis.cmd(&["HKEYS", &format!("swiftchat:{{global}}:node:{id}:users")]))
                    .contains(&"twin".to_string())
            })
            .expect("a node lists twin");
        assert_eq!(holder, Some(other_id));
        fresh.roundtrip("still mine").await;
    })
    .await
}

//! Cluster guarantees 1–3 of PROTOCOL.md on three in-process nodes sharing
//! one real `redis-server`: cross-node delivery, one order and gapless `seq`
//! under concurrent senders on different nodes, CACHE_UPDATE agreement,
//! room controls (lock, close, open, delete, kick, ban) across nodes within
//! 1 s, and subscriptions held exactly while a node has local members.
//!
//! Measured times are printed as `MEASURED ...` lines (run with
//! `-- --nocapture` to see them).

mod cluster_support;
mod common;

use common::Backend;

use std::time::{Duration, Instant};

use cluster_support::*;
use common::expect::{self, assert_lacks};
use common::{bounded, Client};
use serde_json::Value;

const QUIET: Duration = Duration::from_millis(300);

/// A message sent on any node reaches the room's members on every node,
/// and only them.
async fn cross_node_delivery(backend: Backend) {
    bounded(async {
        let cluster = Cluster::start_on(backend, 3).await;
        let mut a = cluster.node(0).login("CrossA").await;
        let mut b = cluster.node(1).login("CrossB").await;
        let mut c = cluster.node(2).login("CrossC").await;
        for (i, sender) in ["CrossA", "CrossB", "CrossC"].into_iter().enumerate() {
            let content = format!("hello from node {i}");
            let started = Instant::now();
            match i {
                0 => a.send_message(&content).await,
                1 => b.send_message(&content).await,
                _ => c.send_message(&content).await,
            }
            for client in [&mut a, &mut b, &mut c] {
                let d = client.recv_until(&expect::message(sender, &content)).await["d"].clone();
                assert_eq!(d["room"], "general");
            }
            report(
                &format!("cross-node delivery to 3 nodes, sender on node {i}"),
                started.elapsed(),
            );
        }

        // A room: only its members, on whatever node, get its messages.
        a.create_room("crossroom").await;
        b.recv_until(&expect::room_state("crossroom", "created"))
            .await;
        c.recv_until(&expect::room_state("crossroom", "created"))
            .await;
        b.join_room("crossroom", None).await;
        a.recv_until(&expect::joined("CrossB", "crossroom")).await;
        a.send_message("members only").await;
        a.expect_own_message("members only").await;
        b.recv_until(&expect::message("CrossA", "members only"))
            .await;
        let frames = c.collect_until_quiet(QUIET).await;
        assert_lacks(
            "CrossC",
            &frames,
            &expect::message("CrossA", "members only"),
        );
    })
    .await
}

/// Sends `n` messages, then reads until `total` MESSAGEs arrived (other
/// frames are skipped). Returns the MESSAGE `d`s in order.
async fn send_and_collect(c: &mut Client, n: usize, total: usize) -> Vec<Value> {
    for i in 0..n {
        let content = format!("{}-{i}", c.label);
        c.send_message(&content).await;
    }
    collect_messages(c, total).await
}

async fn collect_messages(c: &mut Client, total: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < total {
        let v = c
            .recv_until_within(&expect::op(0), Duration::from_secs(15))
            .await;
        got.push(v["d"].clone());
    }
    got
}

/// Guarantee 1: senders on three nodes at once; every member on every node
/// sees the same messages with `seq` 1..N in that order, exactly once, and
/// each sender's messages in the order sent.
async fn concurrent_senders_same_order_gapless_seq(backend: Backend) {
    bounded(async {
        let cluster = Cluster::start_on(backend, 3).await;
        let room = "raceroom";
        let mut s0 = cluster.node(0).login("RaceS0").await;
        s0.create_room(room).await;
        let mut s1 = cluster.node(1).login("RaceS1").await;
        s1.join_room(room, None).await;
        let mut s2 = cluster.node(2).login("RaceS2").await;
        s2.join_room(room, None).await;
        let mut watchers = Vec::new();
        for i in 0..3 {
            let mut w = cluster.node(i).login(&format!("RaceW{i}")).await;
            w.join_room(room, None).await;
            watchers.push(w);
        }
        for c in [&mut s0, &mut s1, &mut s2] {
            c.settle().await;
        }
        for w in watchers.iter_mut() {
            w.settle().await;
        }

        const N: usize = 40;
        const TOTAL: usize = 3 * N;
        let started = Instant::now();
        let (r0, r1, r2) = tokio::join!(
            send_and_collect(&mut s0, N, TOTAL),
            send_and_collect(&mut s1, N, TOTAL),
            send_and_collect(&mut s2, N, TOTAL),
        );
        let mut all = vec![("RaceS0", r0), ("RaceS1", r1), ("RaceS2", r2)];
        for (i, w) in watchers.iter_mut().enumerate() {
            let got = collect_messages(w, TOTAL).await;
            all.push((["RaceW0", "RaceW1", "RaceW2"][i], got));
        }
        report(
            &format!("{TOTAL} messages from 3 nodes to 6 members on 3 nodes"),
            started.elapsed(),
        );
        let reference = all[0].1.clone();
        for (who, got) in &all {
            let seqs: Vec<u64> = got
                .iter()
                .map(|d| d["seq"].as_u64().expect("seq"))
                .collect();
            let want: Vec<u64> = (1..=TOTAL as u64).collect();
            assert_eq!(seqs, want, "[{who}] seqs in the order received");
            for author in ["RaceS0", "RaceS1", "RaceS2"] {
                let contents: Vec<&str> = got
                    .iter()
                    .filter(|d| d["author"] == author)
                    .map(|d| d["content"].as_str().unwrap())
                    .collect();
                let want: Vec<String> = (0..N).map(|i| format!("{author}-{i}")).collect();
                assert_eq!(contents, want, "[{who}] {author}'s messages in send order");
            }
            assert_eq!(got, &reference, "[{who}] must see exactly what RaceS0 saw");
        }
        // Exactly once: nothing more arrives.
        for (i, w) in watchers.iter_mut().enumerate() {
            let extra = w.collect_until_quiet(QUIET).await;
            assert_lacks(&format!("RaceW{i}"), &extra, &expect::op(0));
        }
    })
    .await
}

/// Guarantee 2: CACHE_UPDATE (rooms, states, counts) is the same from every
/// node within 1 s.
async fn cache_agreement_across_nodes(backend: Backend) {
    bounded(async {
        let cluster = Cluster::start_on(backend, 3).await;
        let mut a = cluster.node(0).login("CacheA").await;
        a.create_room("alpha").await;
        let mut b = cluster.node(1).login("CacheB").await;
        b.create_room("beta").await;
        b.command("\\lock sesame").await;
        b.recv_until(&expect::room_state("beta", "locked")).await;
        let mut c = cluster.node(2).login("CacheC").await;
        let mut d = cluster.node(2).login("CacheD").await;
        d.join_room("alpha", None).await;
        let started = Instant::now();

        let views = [
            cache(&mut a).await,
            cache(&mut b).await,
            cache(&mut c).await,
            cache(&mut d).await,
        ];
        report(
            "CACHE_UPDATE from 3 nodes after the last change",
            started.elapsed(),
        );
        for v in &views {
            common::check_cache_shape(v);
            assert_eq!(
                shared_view(v),
                shared_view(&views[0]),
                "views differ: {views:?}"
            );
        }
        let v = &views[0];
        assert_eq!(v["users"], 4, "{v}");
        assert_eq!(room_users(v, "general"), 1, "{v}");
        assert_eq!(room_users(v, "alpha"), 2, "{v}");
        assert_eq!(room_users(v, "beta"), 1, "{v}");
        let beta = common::room_entry(v, "beta").unwrap();
        assert_eq!(beta["locked"], true, "{beta}");
        assert_eq!(beta["available"], false, "{beta}");
        let names: Vec<&str> = v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        // CacheA's own room, the default room, then the busiest.
        assert_eq!(
            names,
            ["alpha", "general", "beta"],
            "rooms in listing order"
        );
        assert_eq!(v["rooms_total"], 3, "{v}");

        // A disconnect on one node shows on the others within 1 s.
        c.close().await;
        let (took, _) = wait_cache(&mut a, ONE_SECOND, "CacheC gone from the counts", |v| {
            v["users"] == 3 && room_users(v, "general") == 0
        })
        .await;
        report("count update on another node after a disconnect", took);
    })
    .await
}

/// Concurrent logins and moves on one node: each CACHE_UPDATE already
/// counts the change it answers (the node shares one snapshot between
/// concurrent callers, but only one taken after each of them asked).
async fn concurrent_logins_and_moves_each_count_themselves(backend: Backend) {
    bounded(async {
        const WAVE: usize = 12;
        let cluster = Cluster::start_on(backend, 2).await;
        let addr = cluster.node(0).addr();
        let mut clients: Vec<Client> = Vec::new();
        for wave in 0..2 {
            let mut logins = tokio::task::JoinSet::new();
            for i in 0..WAVE {
                logins.spawn(async move {
                    let mut c = Client::connect(addr).await;
                    c.label = format!("Crowd{wave}x{i}");
                    c.send_identify(serde_json::json!({"name": c.label})).await;
                    let me = c.label.clone();
                    let d = c.recv_until(&expect::cache_me(&me, "general")).await["d"].clone();
                    (c, d)
                });
            }
            while let Some(joined) = logins.join_next().await {
                let (c, d) = joined.expect("login task");
                let least = (wave * WAVE + 1) as u64;
                assert!(
                    d["users"].as_u64().unwrap() >= least,
                    "[{}] login not counted (at least {least}): {d}",
                    c.label
                );
                clients.push(c);
            }
        }
        for round in 0..3 {
            let mut moves = tokio::task::JoinSet::new();
            for (i, mut c) in clients.drain(..).enumerate() {
                moves.spawn(async move {
                    let room = format!("crowd{round}x{i}");
                    c.command(&format!("\\join {room}")).await;
                    let me = c.label.clone();
                    let d = c.recv_until(&expect::cache_me(&me, &room)).await["d"].clone();
                    assert_eq!(room_users(&d, &room), 1, "[{me}] move not counted: {d}");
                    assert_eq!(d["users"], 2 * WAVE, "[{me}] {d}");
                    c
                });
            }
            while let Some(moved) = moves.join_next().await {
                clients.push(moved.expect("move task"));
            }
        }
    })
    .await
}

/// Waits for a frame on several clients; returns the time since `started`
/// when the last one arrived, and checks it against guarantee 3 (1 s).
async fn everyone_gets(
    what: &str,
    started: Instant,
    clients: &mut [&mut Client],
    e: &expect::Expect,
) -> Duration {
    for c in clients.iter_mut() {
        c.recv_until(e).await;
    }
    let took = started.elapsed();
    report(what, took);
    assert!(took < ONE_SECOND, "{what} took {took:?}");
    took
}

/// Guarantee 3: lock, unlock, kick, ban, unban, close, open and delete by an
/// owner on one node take effect for clients on the other nodes within 1 s.
async fn room_controls_across_nodes_within_one_second(backend: Backend) {
    bounded(async {
        let cluster = Cluster::start_on(backend, 3).await;
        let room = "club";
        let mut owner = cluster.node(0).login("ClubOwner").await;
        owner.create_room(room).await;
        let mut m1 = cluster.node(1).login("ClubM1").await;
        m1.join_room(room, None).await;
        let mut m2 = cluster.node(2).login("ClubM2").await;
        m2.join_room(room, None).await;
        let mut spectator = cluster.node(2).login("ClubSpectator").await;
        for c in [&mut owner, &mut m1, &mut m2] {
            c.settle().await;
        }

        // Lock: ROOM_STATE to everyone; the password is checked on any node.
        let t = Instant::now();
        owner.command("\\lock pw1").await;
        everyone_gets(
            "lock reaches 3 nodes",
            t,
            &mut [&mut owner, &mut m1, &mut m2, &mut spectator],
            &expect::room_state(room, "locked"),
        )
        .await;
        let mut newcomer = cluster.node(1).login("ClubNew").await;
        newcomer.command("\\join club").await;
        newcomer.recv_until(&expect::notice("room_locked")).await;
        newcomer.command("\\join club wrong").await;
        newcomer.recv_until(&expect::notice("room_locked")).await;
        newcomer.join_room(room, Some("pw1")).await;
        newcomer.command("\\leave").await;
        newcomer.recv_until(&expect::cache_in("general")).await;

        let t = Instant::now();
        owner.command("\\unlock").await;
        everyone_gets(
            "unlock reaches 3 nodes",
            t,
            &mut [&mut m1, &mut m2, &mut spectator, &mut newcomer],
            &expect::room_state(room, "unlocked"),
        )
        .await;

        // Kick a user on another node.
        let t = Instant::now();
        owner.command("\\kick ClubM1").await;
        everyone_gets(
            "kick moves the user on another node",
            t,
            &mut [&mut m1],
            &expect::cache_in("general"),
        )
        .await;
        m2.recv_until(&expect::left("ClubM1", room)).await;

        // Ban a user on another node: refused on every node afterwards.
        let t = Instant::now();
        owner.command("\\ban ClubM2").await;
        everyone_gets(
            "ban reaches the user on another node",
            t,
            &mut [&mut m2],
            &expect::room_state(room, "banned"),
        )
        .await;
        m2.recv_until(&expect::cache_in("general")).await;
        m2.command("\\join club").await;
        m2.recv_until(&expect::notice("banned")).await;
        m2.close().await;
        let mut m2 = cluster.node(0).login("ClubM2").await;
        m2.command("\\join club").await;
        m2.recv_until(&expect::notice("banned")).await;
        let t = Instant::now();
        owner.command("\\unban ClubM2").await;
        everyone_gets(
            "unban reaches the user",
            t,
            &mut [&mut m2],
            &expect::room_state(room, "unbanned"),
        )
        .await;
        m2.settle().await;
        m2.join_room(room, None).await;
        m1.settle().await;
        m1.join_room(room, None).await;
        owner.roundtrip("before close").await;

        // Close: everyone told, members on every node moved out, no joins.
        let t = Instant::now();
        owner.command("\\close").await;
        everyone_gets(
            "close reaches 3 nodes",
            t,
            &mut [&mut m1, &mut m2, &mut spectator, &mut newcomer],
            &expect::room_state(room, "closed"),
        )
        .await;
        everyone_gets(
            "close evacuates members on 3 nodes",
            t,
            &mut [&mut owner, &mut m1, &mut m2],
            &expect::cache_in("general"),
        )
        .await;
        newcomer.command("\\join club").await;
        newcomer.recv_until(&expect::notice("room_closed")).await;

        // Open from elsewhere; seq continues.
        let t = Instant::now();
        owner.command("\\open club").await;
        everyone_gets(
            "open reaches 3 nodes",
            t,
            &mut [&mut m1, &mut spectator],
            &expect::room_state(room, "opened"),
        )
        .await;
        owner.settle().await;
        owner.join_room(room, None).await;
        m1.settle().await;
        m1.join_room(room, None).await;
        let d = owner.roundtrip("after reopen").await;
        assert!(
            d["seq"].as_u64().unwrap() > 1,
            "seq continues after reopening: {d}"
        );

        // Delete: everyone told, members moved, the name starts afresh at 1.
        let t = Instant::now();
        owner.command("\\delete").await;
        everyone_gets(
            "delete reaches 3 nodes",
            t,
            &mut [&mut m1, &mut m2, &mut spectator],
            &expect::room_state(room, "deleted"),
        )
        .await;
        everyone_gets(
            "delete evacuates members on 2 nodes",
            t,
            &mut [&mut owner, &mut m1],
            &expect::cache_in("general"),
        )
        .await;
        spectator.settle().await;
        spectator.create_room(room).await;
        let d = spectator.roundtrip("fresh club").await;
        assert_eq!(d["seq"], 1, "a re-created room starts at 1: {d}");
        let v = cache(&mut m2).await;
        assert_eq!(
            room_users(&v, room),
            1,
            "only the new owner is in the new room: {v}"
        );
    })
    .await
}

/// A node subscribes a room's channel exactly while it has local members
/// there (one subscription per node, not per client), never by pattern;
/// every key and channel carries the configured prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_local_members_and_prefix() {
    bounded(async {
        let cluster = Cluster::start_with(2, |c| c.redis.key_prefix = "sctest".into()).await;
        let redis = cluster.redis();
        let channel = "sctest:ch:{subs}";
        assert_eq!(numsub(redis, channel), 0);
        let mut a = cluster.node(0).login("SubsA").await;
        a.create_room("subs").await;
        wait_numsub(redis, channel, 1).await;
        let mut b = cluster.node(1).login("SubsB").await;
        b.join_room("subs", None).await;
        wait_numsub(redis, channel, 2).await;
        let mut c = cluster.node(1).login("SubsC").await;
        c.join_room("subs", None).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            numsub(redis, channel),
            2,
            "one subscription per node, not per client"
        );
        b.command("\\leave").await;
        b.recv_until(&expect::cache_in("general")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            numsub(redis, channel),
            2,
            "node 1 still has SubsC in the room"
        );
        c.close().await;
        wait_numsub(redis, channel, 1).await;
        a.command("\\leave").await;
        wait_numsub(redis, channel, 0).await;

        let Some(common::redis_server::Resp::Int(patterns)) =
            Some(redis.cmd(&["PUBSUB", "NUMPAT"]))
        else {
            panic!("PUBSUB NUMPAT");
        };
        assert_eq!(patterns, 0, "no pattern subscriptions");
        for (what, reply) in [
            ("key", redis.cmd(&["KEYS", "*"])),
            ("channel", redis.cmd(&["PUBSUB", "CHANNELS", "*"])),
        ] {
            let common::redis_server::Resp::Array(Some(items)) = reply else {
                panic!("{what}s: {reply:?}");
            };
            assert!(!items.is_empty());
            for item in items {
                let common::redis_server::Resp::Bulk(Some(name)) = &item else {
                    panic!("{what}: {item:?}");
                };
                assert!(
                    name.starts_with("sctest:"),
                    "{what} without the prefix: {name}"
                );
            }
        }
    })
    .await
}

cluster_tests!(
    cross_node_delivery,
    concurrent_senders_same_order_gapless_seq,
    cache_agreement_across_nodes,
    concurrent_logins_and_moves_each_count_themselves,
    room_controls_across_nodes_within_one_second,
);

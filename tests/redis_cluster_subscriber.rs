//! The sharded subscriber of the cluster backplane
//! (`swiftchat::backplane::redis::cluster::ShardedSubscriber`) against a real
//! Redis Cluster of 3 primaries + 3 replicas (issue 12, the known traps):
//!
//! - channels spanning many slots are subscribed (and resubscribed after a
//!   failover) without CROSSSLOT;
//! - a slot migration (unsolicited `sunsubscribe`) is followed by a new
//!   subscription at the new owner and a `Gap` event;
//! - a primary killed (replica promoted): messages flow again within 5 s,
//!   on the same subscriber, with a `Gap` event for the history fill.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::redis_server::{cmd_on_port, try_cmd_on_port, Resp};
use common::RedisCluster;
use swiftchat::backplane::redis::cluster::{
    seed_urls, ShardEvent, ShardedSubscriber, ShardedSubscriberConfig,
};

const ROOMS: usize = 40;

fn channels() -> Vec<String> {
    (0..ROOMS).map(|i| format!("t:room:{{r{i}}}")).collect()
}

/// SPUBLISH on the slot's current primary; the number of receivers.
fn spublish(cluster: &RedisCluster, channel: &str, payload: &str) -> Option<i64> {
    let port = cluster.port_for_slot(cluster.keyslot(channel));
    try_cmd_on_port(port, &["SPUBLISH", channel, payload])
        .ok()
        .and_then(|r| r.as_int())
}

async fn next(sub: &mut ShardedSubscriber, within: Duration) -> Option<ShardEvent> {
    tokio::time::timeout(within, sub.next_event())
        .await
        .ok()
        .flatten()
}

/// Waits for one message on `channel` with `payload`, publishing it again
/// every 100 ms (a publish during a failover may be lost: that is the gap
/// history fills). Returns the gap events seen on the way.
async fn until_delivered(
    cluster: &RedisCluster,
    sub: &mut ShardedSubscriber,
    channel: &str,
    payload: &str,
    within: Duration,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + within;
    let mut gaps = Vec::new();
    loop {
        spublish(cluster, channel, payload);
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{channel}: {payload} not delivered within {within:?}"
        );
        match next(sub, left.min(Duration::from_millis(100))).await {
            Some(ShardEvent::Message {
                channel: c,
                payload: p,
            }) if c == channel && p == payload.as_bytes() => return gaps,
            Some(ShardEvent::Gap { channels }) => gaps.push(channels),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriber_spans_slots_follows_migration_and_failover() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    let chans = channels();
    let mut sub = ShardedSubscriber::connect(&seed_urls(&cluster.url()), Default::default())
        .await
        .expect("connect to the cluster");
    // Many slots over all three primaries: one SSUBSCRIBE per slot.
    let slots: BTreeSet<u16> = chans.iter().map(|c| cluster.keyslot(c)).collect();
    let ports: BTreeSet<u16> = slots.iter().map(|&s| cluster.port_for_slot(s)).collect();
    assert_eq!(slots.len(), ROOMS);
    assert_eq!(ports.len(), 3, "channels should span all shards");
    sub.subscribe(&chans).await.expect("subscribe across slots");
    for c in &chans {
        assert_eq!(
            spublish(&cluster, c, "hello"),
            Some(1),
            "{c} not subscribed"
        );
    }
    let mut seen = BTreeSet::new();
    while seen.len() < ROOMS {
        match next(&mut sub, Duration::from_secs(2)).await {
            Some(ShardEvent::Message { channel, payload }) => {
                assert_eq!(payload, b"hello");
                seen.insert(channel);
            }
            other => panic!("expected messages, got {other:?} ({} seen)", seen.len()),
        }
    }

    // Slot migration: unsolicited sunsubscribe -> subscribed again + Gap.
    let moved = &chans[0];
    let slot = cluster.keyslot(moved);
    let from = cluster.primary_for_slot(slot);
    let to = (0..cluster.nodes.len())
        .find(|&i| {
            i != from
                && matches!(cluster.nodes[i].cmd(&["ROLE"]),
                    Resp::Array(Some(ref r)) if r[0] == Resp::Bulk(Some("master".into())))
        })
        .expect("another primary");
    cluster.migrate_slot(slot, to);
    match next(&mut sub, Duration::from_secs(5)).await {
        Some(ShardEvent::Gap { channels }) => assert_eq!(channels, vec![moved.clone()]),
        other => panic!("expected a Gap for the migrated channel, got {other:?}"),
    }
    assert_eq!(
        spublish(&cluster, moved, "after-move"),
        Some(1),
        "not subscribed at the new owner"
    );
    match next(&mut sub, Duration::from_secs(2)).await {
        Some(ShardEvent::Message { channel, payload }) => {
            assert_eq!((&channel, payload.as_slice()), (moved, &b"after-move"[..]))
        }
        other => panic!("expected the message after the move, got {other:?}"),
    }
    cluster.wait_state_ok(Duration::from_secs(5));

    // Failover: kill the primary owning the most of our channels.
    let victim_slot = cluster.keyslot(&chans[1]);
    let old_port = cluster.port_for_slot(victim_slot);
    let on_victim: Vec<String> = chans
        .iter()
        .filter(|c| cluster.port_for_slot(cluster.keyslot(c)) == old_port)
        .cloned()
        .collect();
    assert!(on_victim.len() > 1, "several slots on the killed shard");
    let killed_at = Instant::now();
    cluster.kill_primary_for_slot(victim_slot);
    let mut gaps = Vec::new();
    for c in &on_victim {
        let left = Duration::from_secs(5).saturating_sub(killed_at.elapsed());
        gaps.extend(until_delivered(&cluster, &mut sub, c, "after-failover", left).await);
    }
    let recovered = killed_at.elapsed();
    eprintln!(
        "failover: {} channels on the killed shard delivering again after {recovered:?}",
        on_victim.len()
    );
    assert!(recovered < Duration::from_secs(5));
    let gap_channels: BTreeSet<&String> = gaps.iter().flatten().collect();
    for c in &on_victim {
        assert!(
            gap_channels.contains(c),
            "no Gap reported for {c}: {gaps:?}"
        );
    }
    // Every other channel still delivers on the same subscriber.
    for c in chans.iter().filter(|c| !on_victim.contains(c)) {
        until_delivered(&cluster, &mut sub, c, "others", Duration::from_secs(2)).await;
    }
    // No duplicate subscriptions: exactly one receiver per channel.
    for c in &chans {
        assert_eq!(spublish(&cluster, c, "count"), Some(1), "{c}");
    }
    eprintln!("whole test {:?}", started.elapsed());
    let _ = cmd_on_port;
    let _ = ShardedSubscriberConfig::default();
}

/// The push queue is bounded: when the owner does not keep up, pushes are
/// dropped (counted) and the next event is a Gap for every channel, after
/// which messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_push_queue_drops_and_reports_a_gap_for_every_channel() {
    let cluster = RedisCluster::start();
    let chans: Vec<String> = channels().into_iter().take(5).collect();
    let config = ShardedSubscriberConfig {
        push_buffer: 4,
        ..Default::default()
    };
    let mut sub = ShardedSubscriber::connect(&seed_urls(&cluster.url()), config)
        .await
        .expect("connect");
    sub.subscribe(&chans).await.expect("subscribe");
    for i in 0..50 {
        let c = &chans[i % chans.len()];
        assert_eq!(spublish(&cluster, c, &format!("m{i}")), Some(1));
    }
    // Let the connection deliver everything into the (full) queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sub.dropped_pushes(), 46, "4 queued, the rest dropped");
    match next(&mut sub, Duration::from_secs(2)).await {
        Some(ShardEvent::Gap { mut channels }) => {
            channels.sort();
            let mut want = chans.clone();
            want.sort();
            assert_eq!(channels, want);
        }
        other => panic!("expected a Gap first, got {other:?}"),
    }
    // The 4 queued messages, then live traffic again.
    for i in 0..4 {
        match next(&mut sub, Duration::from_secs(2)).await {
            Some(ShardEvent::Message { payload, .. }) => {
                assert_eq!(payload, format!("m{i}").as_bytes())
            }
            other => panic!("expected queued message m{i}, got {other:?}"),
        }
    }
    until_delivered(
        &cluster,
        &mut sub,
        &chans[0],
        "live",
        Duration::from_secs(2),
    )
    .await;
}

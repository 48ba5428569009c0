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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_support::node_config;
use common::client::Event;
use common::redis_server::Resp;
use common::{bounded, expect, Client, RedisServer, TestNode};
use serde_json::{json, Value};

const ROOM: &str = "chaos";
/// Members per node.
const PER_NODE: usize = 2;
/// Pause between two messages of one member (about 20 per second each).
const SEND_EVERY: Duration = Duration::from_millis(50);

/// One client: what it has seen of the room and what was wrong.
struct Member {
    name: String,
    client: Client,
    /// seq → content, from MESSAGE and HISTORY.
    seen: BTreeMap<u64, String>,
    /// The last live MESSAGE seq on the current connection.
    live_last: Option<u64>,
    epoch: Option<String>,
    errors: Vec<String>,
    sent: usize,
    reconnects: usize,
}

impl Member {
    fn record(&mut self, v: &Value) {
        match v["op"].as_i64() {
            Some(0) if v["d"]["room"] == ROOM => {
                let seq = v["d"]["seq"].as_u64().expect("seq");
                let content = v["d"]["content"].as_str().unwrap_or("").to_string();
                if let Some(last) = self.live_last {
                    if seq != last + 1 {
                        self.errors
                            .push(format!("live seq {seq} after {last} (gap or disorder)"));
                    }
                }
                self.live_last = Some(seq);
                self.insert(seq, content, "MESSAGE");
            }
            Some(9) => {
                if let Some(epoch) = v["d"]["epoch"].as_str() {
                    self.epoch = Some(epoch.to_string());
                }
                for m in v["d"]["messages"].as_array().into_iter().flatten() {
                    let seq = m["seq"].as_u64().expect("seq");
                    let content = m["content"].as_str().unwrap_or("").to_string();
                    if let Some(known) = self.seen.get(&seq) {
                        if *known != content {
                            self.errors.push(format!("seq {seq} differs in HISTORY"));
                        }
                    } else {
                        self.seen.insert(seq, content);
                    }
                }
            }
            _ => {}
        }
    }

    fn insert(&mut self, seq: u64, content: String, source: &str) {
        if let Some(known) = self.seen.insert(seq, content.clone()) {
            if known != content {
                self.errors.push(format!("seq {seq} differs ({source})"));
            }
        }
    }

    /// Reads and records frames for `dur`; returns the other frames and
    /// whether the connection ended.
    async fn pump(&mut self, dur: Duration) -> (Vec<Value>, bool) {
        let deadline = tokio::time::Instant::now() + dur;
        let mut other = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return (other, false);
            }
            match self.client.recv_event_within(left).await {
                Event::Json(v) => {
                    self.record(&v);
                    if v["op"] != 0 {
                        other.push(v);
                    }
                }
                Event::Timeout => return (other, false),
                Event::Close(_) | Event::Ended(_) => return (other, true),
                Event::Text(_) | Event::Binary(_) => {}
            }
        }
    }

    /// Reads until a frame matches `e` (recording everything), within 10 s.
    async fn pump_until(&mut self, e: &expect::Expect) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let (frames, ended) = self.pump(Duration::from_millis(100)).await;
            if let Some(v) = frames.into_iter().find(|v| e.matches(v)) {
                return v;
            }
            assert!(
                !ended,
                "[{}] connection ended waiting for {}",
                self.name, e.desc
            );
        }
        panic!("[{}] no {} within 10 s", self.name, e.desc);
    }

    /// After its node was drained: logs in on `addr`, joins the room and
    /// asks for what it missed, page by page, from its last seq.
    async fn resume(&mut self, addr: SocketAddr) {
        self.reconnects += 1;
        let resume_from = self.live_last.unwrap_or(0);
        self.client = Client::connect(addr).await;
        self.client.label = self.name.clone();
        self.live_last = None;
        // The drained node releases the name when its connection closes.
        loop {
            self.client.send_identify(json!({"name": self.name})).await;
            let v = self
                .pump_until(&expect::Expect::new("CACHE_UPDATE or name_taken", |v| {
                    v["op"] == 4 || (v["op"] == 7 && v["d"]["code"] == "name_taken")
                }))
                .await;
            if v["op"] == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.client.command(&format!("\\join {ROOM}")).await;
        self.pump_until(&expect::cache_me(&self.name, ROOM)).await;
        // From the last seq of the old connection (live MESSAGEs may
        // already arrive on the new one), page by page.
        let mut after = resume_from;
        loop {
            self.client
                .send_json(json!({"op": 8, "d": {"after": after, "epoch": self.epoch}}))
                .await;
            let page = self.pump_until(&expect::op(9)).await;
            assert_eq!(
                page["d"]["complete"], true,
                "[{}] resume: {page}",
                self.name
            );
            let last_seq = page["d"]["last_seq"].as_u64().unwrap();
            match page["d"]["messages"].as_array().and_then(|m| m.last()) {
                Some(m) => after = m["seq"].as_u64().unwrap(),
                None => break,
            }
            if after >= last_seq {
                break;
            }
        }
    }

    /// Sends continuously until `stop`; resumes on `fallback` if its
    /// connection ends (its node drained).
    async fn run(mut self, stop: Arc<AtomicBool>, fallback: SocketAddr) -> Member {
        while !stop.load(Ordering::Acquire) {
            self.sent += 1;
            let content = format!("{}-{}", self.name, self.sent);
            self.client.send_message(&content).await;
            let (_, ended) = self.pump(SEND_EVERY).await;
            if ended {
                self.resume(fallback).await;
            }
        }
        // Let every node deliver (and fill) what is still in flight.
        loop {
            let (_, ended) = self.pump(Duration::from_millis(1500)).await;
            assert!(!ended, "[{}] connection ended after the run", self.name);
            let (frames, _) = self.pump(Duration::from_millis(10)).await;
            if frames.is_empty() {
                break;
            }
        }
        self
    }
}

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
                members.push(Member {
                    name,
                    client,
                    seen: BTreeMap::new(),
                    live_last: None,
                    epoch: None,
                    errors: Vec::new(),
                    sent: 0,
                    reconnects: 0,
                });
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
        stop.store(true, Ordering::Release);

        let mut members = Vec::new();
        for task in tasks {
            members.push(task.await.expect("member task"));
        }
        // The room's numbering at the end: every seq up to it was accepted.
        let m = &mut members[0];
        m.client
            .send_json(json!({"op": 8, "d": {"limit": 1}}))
            .await;
        let last = m.pump_until(&expect::op(9)).await["d"]["last_seq"]
            .as_u64()
            .unwrap();
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
            let missing: Vec<u64> = (1..=last).filter(|s| !m.seen.contains_key(s)).collect();
            assert!(
                missing.is_empty(),
                "[{}] misses {} of {last}: {:?}",
                m.name,
                missing.len(),
                &missing[..missing.len().min(20)]
            );
            assert_eq!(
                m.seen.len() as u64,
                last,
                "[{}] holds seqs beyond last_seq",
                m.name
            );
            assert!(
                m.errors.is_empty(),
                "[{}] {:?}",
                m.name,
                &m.errors[..m.errors.len().min(10)]
            );
        }
        let resumed = members.iter().filter(|m| m.reconnects > 0).count();
        assert_eq!(resumed, PER_NODE, "node 2's members resumed elsewhere");
    })
    .await
}

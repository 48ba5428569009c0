//! A chatting client for the chaos tests (`cluster_history.rs`,
//! `redis_cluster_backplane.rs`): sends continuously, records every MESSAGE
//! and HISTORY of its room, notes live gaps and repeats, and resumes on
//! another node with HISTORY_REQUEST when its connection ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::client::Event;
use crate::common::{expect, Client};

/// Stops the chat, waits for every member's task, and asks (through the
/// first member) the room's last `seq`: every `seq` up to it was accepted.
pub async fn stop_and_collect(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Member>>,
) -> (Vec<Member>, u64) {
    stop.store(true, Ordering::Release);
    let mut members = Vec::new();
    for task in tasks {
        members.push(task.await.expect("member task"));
    }
    let m = &mut members[0];
    m.client
        .send_json(json!({"op": 8, "d": {"limit": 1}}))
        .await;
    let last = m.pump_until(&expect::op(9)).await["d"]["last_seq"]
        .as_u64()
        .unwrap();
    (members, last)
}

/// Pause between two messages of one member (about 20 per second each).
pub const SEND_EVERY: Duration = Duration::from_millis(50);

/// One client: what it has seen of the room and what was wrong.
pub struct Member {
    pub name: String,
    /// The room it chats in.
    pub room: String,
    pub client: Client,
    /// seq → content, from MESSAGE and HISTORY.
    pub seen: BTreeMap<u64, String>,
    /// The last live MESSAGE seq on the current connection.
    pub live_last: Option<u64>,
    pub epoch: Option<String>,
    pub errors: Vec<String>,
    pub sent: usize,
    pub reconnects: usize,
}

impl Member {
    /// A member of `room`, logged in as `name` on `client` and in the room.
    pub fn new(name: String, room: &str, client: Client) -> Member {
        Member {
            name,
            room: room.to_string(),
            client,
            seen: BTreeMap::new(),
            live_last: None,
            epoch: None,
            errors: Vec::new(),
            sent: 0,
            reconnects: 0,
        }
    }

    /// Every `seq` up to `last` held exactly once, no live gap or repeat.
    pub fn check(&self, last: u64) {
        let missing: Vec<u64> = (1..=last).filter(|s| !self.seen.contains_key(s)).collect();
        assert!(
            missing.is_empty(),
            "[{}] misses {} of {last}: {:?}",
            self.name,
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        assert_eq!(
            self.seen.len() as u64,
            last,
            "[{}] holds seqs beyond last_seq",
            self.name
        );
        assert!(
            self.errors.is_empty(),
            "[{}] {:?}",
            self.name,
            &self.errors[..self.errors.len().min(10)]
        );
    }

    fn record(&mut self, v: &Value) {
        match v["op"].as_i64() {
            Some(0) if v["d"]["room"] == self.room.as_str() => {
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
    pub async fn pump(&mut self, dur: Duration) -> (Vec<Value>, bool) {
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
    pub async fn pump_until(&mut self, e: &expect::Expect) -> Value {
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
    pub async fn resume(&mut self, addr: SocketAddr) {
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
        self.client.command(&format!("\\join {}", self.room)).await;
        self.pump_until(&expect::cache_me(&self.name, &self.room))
            .await;
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
    pub async fn run(mut self, stop: Arc<AtomicBool>, fallback: SocketAddr) -> Member {
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

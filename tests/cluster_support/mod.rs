//! Helpers shared by the cluster tests (`tests/cluster_*.rs`): several
//! in-process nodes on one real `redis-server`, admin logins, and timing.
//!
//! Used next to `tests/common` (the shared harness): `mod common;` must be
//! declared by the test file before `mod cluster_support;`.

#![allow(dead_code)]

pub mod chaos;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use swiftchat::config::Config;

use crate::common::binary::{self, Process};
use crate::common::{self, expect, http, Backend, Client, RedisServer, SharedBackplane, TestNode};

/// JWT secret of every cluster test node.
pub const SECRET: &str = "cluster-test-secret";
/// Shutdown key of every cluster test node.
pub const SHUTDOWN_KEY: &str = "cluster-test-shutdown-key";
/// Guarantee 3 of PROTOCOL.md: changes reach every node within 1 s.
pub const ONE_SECOND: Duration = Duration::from_secs(1);

/// Nodes sharing one Redis, or one key prefix of the shared Redis Cluster
/// ([`Cluster::start_on`] with [`Backend::RedisCluster`]).
pub struct Cluster {
    backplane: SharedBackplane,
    pub nodes: Vec<TestNode>,
}

/// The configuration of cluster test nodes: relaxed rate limits, a JWT
/// secret (for admins) and a shutdown key; `f` may change it further.
pub fn node_config(config: &mut Config) {
    common::relaxed(config);
    config.auth.jwt_secret = SECRET.into();
    config.admin.shutdown_key = SHUTDOWN_KEY.into();
}

impl Cluster {
    /// Starts a fresh `redis-server` and `n` nodes on it.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| {}).await
    }

    /// Like [`Cluster::start`], with `f` applied to every node's config.
    pub async fn start_with(n: usize, f: impl Fn(&mut Config)) -> Cluster {
        Cluster::start_with_on(Backend::Redis, n, f).await
    }

    /// `n` nodes on a fresh `redis-server` ([`Backend::Redis`]) or on the
    /// shared Redis Cluster ([`Backend::RedisCluster`]).
    pub async fn start_on(backend: Backend, n: usize) -> Cluster {
        Cluster::start_with_on(backend, n, |_| {}).await
    }

    /// Like [`Cluster::start_on`], with `f` applied to every node's config.
    pub async fn start_with_on(backend: Backend, n: usize, f: impl Fn(&mut Config)) -> Cluster {
        let backplane = SharedBackplane::start(backend);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(
                backplane
                    .node(|c| {
                        node_config(c);
                        f(c);
                    })
                    .await,
            );
        }
        Cluster { backplane, nodes }
    }

    /// A real `swiftchat` process on this cluster's backplane, with `env`
    /// on top (see [`spawn_binary_node`]).
    pub async fn spawn_binary(
        &self,
        env: &[(&str, &str)],
    ) -> (Process, std::net::SocketAddr, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = binary::command(dir.path());
        cmd.args(["serve", "--bind", "127.0.0.1:0"]);
        for (key, value) in self.backplane.env() {
            cmd.env(key, value);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut process = Process::spawn(cmd);
        let addr = process.wait_listening(Duration::from_secs(20)).await;
        (process, addr, dir)
    }

    /// The single `redis-server` (tests that stop or inspect it).
    pub fn redis(&self) -> &RedisServer {
        self.backplane
            .redis
            .as_ref()
            .expect("this test needs a single redis-server")
    }

    pub fn redis_mut(&mut self) -> &mut RedisServer {
        self.backplane
            .redis
            .as_mut()
            .expect("this test needs a single redis-server")
    }

    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }
}

/// Generates, for each `async fn NAME(backend: Backend)` listed, a module
/// `NAME` with two tests, `redis` and `redis_cluster`: the cluster suites
/// on one Redis and on the shared Redis Cluster.
#[macro_export]
macro_rules! cluster_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$name($crate::common::Backend::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$name($crate::common::Backend::RedisCluster).await
            }
        }
    )+};
}

/// Logs in `name` on `node` as an admin (IDENTIFY with an admin JWT).
pub async fn login_admin(node: &TestNode, name: &str) -> Client {
    let mut c = node.connect().await;
    let token = common::jwt(SECRET, name, true, 3600);
    c.identify_with(json!({"name": name, "token": token}), true)
        .await;
    c
}

/// GET /readyz status.
pub async fn readyz(node: &TestNode) -> u16 {
    http::get(node.addr(), "/readyz").await.status
}

/// Polls /readyz every 50 ms until it answers `status`; returns how long it
/// took, or panics after `within`.
pub async fn wait_readyz(node: &TestNode, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if readyz(node).await == status {
            return started.elapsed();
        }
        if started.elapsed() > within {
            panic!(
                "/readyz of {} did not answer {status} within {within:?}",
                node.addr()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends CACHE_REQUEST and returns the CACHE_UPDATE's `d`, skipping other
/// frames.
pub async fn cache(c: &mut Client) -> Value {
    c.send_cache_request().await;
    c.recv_until(&expect::op(4)).await["d"].clone()
}

/// A CACHE_UPDATE's content without `me`: what every node must agree on.
pub fn shared_view(d: &Value) -> Value {
    // Each user's own room comes first (PROTOCOL.md): compare as sets.
    let mut rooms = d["rooms"].as_array().cloned().unwrap_or_default();
    rooms.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({"rooms": rooms, "users": d["users"], "rooms_total": d["rooms_total"]})
}

/// Polls `c`'s CACHE_UPDATE until `pred` holds; returns the time taken and
/// the last `d`, or panics with the last `d` after `within`.
pub async fn wait_cache(
    c: &mut Client,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Duration, Value) {
    let started = Instant::now();
    loop {
        let d = cache(c).await;
        if pred(&d) {
            return (started.elapsed(), d);
        }
        if started.elapsed() > within {
            panic!(
                "[{}] {what}: not within {within:?}; last CACHE_UPDATE {d}",
                c.label
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `users` of `room` in a CACHE_UPDATE (0 when not listed).
pub fn room_users(d: &Value, room: &str) -> u64 {
    common::room_entry(d, room)
        .and_then(|r| r["users"].as_u64())
        .unwrap_or(0)
}

/// Runs a `redis-cli`-like command on the test Redis and returns integer
/// replies of `PUBSUB NUMSUB channel` for one channel.
pub fn numsub(redis: &RedisServer, channel: &str) -> i64 {
    match redis.cmd(&["PUBSUB", "NUMSUB", channel]) {
        common::redis_server::Resp::Array(Some(items)) => items
            .get(1)
            .and_then(|v| v.as_int())
            .unwrap_or_else(|| panic!("PUBSUB NUMSUB reply {items:?}")),
        other => panic!("PUBSUB NUMSUB reply {other:?}"),
    }
}

/// Polls `numsub` until it equals `want` (subscriptions change
/// asynchronously after a client leaves); panics after 3 s.
pub async fn wait_numsub(redis: &RedisServer, channel: &str, want: i64) {
    let started = Instant::now();
    loop {
        let got = numsub(redis, channel);
        if got == want {
            return;
        }
        if started.elapsed() > Duration::from_secs(3) {
            panic!("PUBSUB NUMSUB {channel} = {got}, expected {want}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints a measurement so that it shows with `--nocapture` and in the
/// output of failing tests.
pub fn report(what: &str, took: Duration) {
    eprintln!("MEASURED {what}: {} ms", took.as_millis());
}

/// Starts the real binary on `redis` with extra environment (e.g.
/// `SWIFTCHAT_REDIS__HEARTBEAT_SECS`); returns the process, its address and
/// its working directory (keep it alive as long as the process).
pub async fn spawn_binary_node(
    redis: &RedisServer,
    env: &[(&str, &str)],
) -> (Process, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--redis", &redis.url()]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut process = Process::spawn(cmd);
    let addr = process.wait_listening(Duration::from_secs(20)).await;
    (process, addr, dir)
}

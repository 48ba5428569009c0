//! Shared test harness for SwiftChat's integration tests (protocol tests of
//! issue 2 and cluster tests of issue 3).
//!
//! Written from `../shared/PROTOCOL.md` and `../shared/OPERATIONS.md`, not
//! from the implementation: tests build literal JSON and check what comes
//! back on the wire.
//!
//! - [`TestNode`]: an in-process node on `127.0.0.1:0` (memory or Redis
//!   backend), started with a config closure.
//! - [`client::Client`]: a tokio-tungstenite client with bounded receive
//!   helpers (`recv_json`, `expect_op`, `expect_notice`, `expect_close`,
//!   `recv_until`, `expect_all`, `assert_no_frame_within`, `identify`, ...).
//! - [`expect`]: frame matchers (`expect::notice("joined")`, ...) used by the
//!   client's `expect*` helpers.
//! - [`redis_server::RedisServer`]: a real `redis-server` on a free port.
//! - [`http`]: a tiny raw HTTP/1.1 client (GET/POST) with no dependency.
//! - [`binary`]: runs the real `swiftchat` binary (config, SIGTERM drain).
//! - [`backend_tests!`]: generates `<name>::memory` and `<name>::redis`
//!   `#[tokio::test]`s from an `async fn <name>(backend: Backend)`.
//!
//! Every wait is bounded: a missing frame fails the test after
//! [`client::DEFAULT_TIMEOUT`], and each generated test is bounded by
//! [`TEST_TIMEOUT`].

#![allow(dead_code, unused_imports, unused_macros)]

pub mod binary;
pub mod client;
pub mod expect;
pub mod http;
pub mod redis_cluster;
pub mod redis_server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use swiftchat::config::Config;
use swiftchat::server::NodeHandle;

pub use client::Client;
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;

/// Upper bound for one generated test (see [`backend_tests!`]).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Which state/backplane implementation a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// No Redis URL: standalone node with in-memory state.
    Memory,
    /// `redis.url` pointing at a fresh `redis-server` started for the node.
    Redis,
    /// `redis.cluster = true` on this process's shared Redis Cluster
    /// (3 primaries, 3 replicas: [`redis_cluster::shared`]), under a key
    /// prefix of its own.
    RedisCluster,
}

/// Generates, for each `async fn NAME(backend: Backend)` listed, a module
/// `NAME` with three multi-threaded `#[tokio::test]`s, `memory`, `redis`
/// and `redis_cluster` (test paths `NAME::memory`, ...), each bounded by
/// [`TEST_TIMEOUT`].
///
/// Run only one backend with `cargo test --test X -- ::memory` (or
/// `--skip ::redis`).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                $crate::common::bounded(super::$name($crate::common::Backend::Memory)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                $crate::common::bounded(super::$name($crate::common::Backend::Redis)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                $crate::common::bounded(super::$name($crate::common::Backend::RedisCluster)).await
            }
        }
    )+};
}

/// Runs a test body with the [`TEST_TIMEOUT`] bound.
pub async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_TIMEOUT, f).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// A name unique within this test process: `<prefix><n>` (valid user and
/// room name: letters, digits).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The base configuration for test nodes: defaults, bound to `127.0.0.1:0`.
pub fn base_config() -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config
}

/// A Redis backplane that several test nodes share: a fresh `redis-server`
/// ([`Backend::Redis`]) or a key prefix of its own on the shared Redis
/// Cluster ([`Backend::RedisCluster`]).
pub struct SharedBackplane {
    pub redis: Option<RedisServer>,
    url: String,
    cluster: bool,
    prefix: String,
}

impl SharedBackplane {
    /// Panics for [`Backend::Memory`], which nodes cannot share.
    pub fn start(backend: Backend) -> SharedBackplane {
        match backend {
            Backend::Memory => panic!("memory nodes share nothing"),
            Backend::Redis => {
                let redis = RedisServer::start();
                SharedBackplane {
                    url: redis.url(),
                    redis: Some(redis),
                    cluster: false,
                    prefix: "swiftchat".into(),
                }
            }
            Backend::RedisCluster => SharedBackplane {
                redis: None,
                url: redis_cluster::shared().to_string(),
                cluster: true,
                prefix: unique("t"),
            },
        }
    }

    /// The environment that points a `swiftchat` process at this backplane.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SWIFTCHAT_REDIS__URL", self.url.clone()),
            ("SWIFTCHAT_REDIS__CLUSTER", self.cluster.to_string()),
            ("SWIFTCHAT_REDIS__KEY_PREFIX", self.prefix.clone()),
        ]
    }

    /// Starts a node on this backplane: base config, the backplane's
    /// settings, then `f`.
    pub async fn node(&self, f: impl FnOnce(&mut Config)) -> TestNode {
        let mut config = base_config();
        config.redis.url = self.url.clone();
        config.redis.cluster = self.cluster;
        config.redis.key_prefix = self.prefix.clone();
        f(&mut config);
        TestNode::start_with_config(config).await
    }
}

/// A node running in this process, on this test's runtime.
///
/// Dropping it leaves the node running until the test's runtime ends (and
/// kills its own `redis-server`, if it started one).
pub struct TestNode {
    handle: Option<NodeHandle>,
    addr: SocketAddr,
    /// The configuration the node was started with (bind as requested, not
    /// the bound port: see [`TestNode::addr`]).
    pub config: Config,
    /// The `redis-server` this node started for itself ([`Backend::Redis`]
    /// via [`TestNode::start`]); `None` for memory nodes and for nodes
    /// started on a caller's Redis.
    pub redis: Option<RedisServer>,
}

impl TestNode {
    /// Starts a node on `127.0.0.1:0` with [`base_config`] changed by `f`.
    /// For [`Backend::Redis`] a fresh `redis-server` is started and owned by
    /// the node (`config.redis.url` is set before `f` runs, so `f` may
    /// still change it).
    pub async fn start(backend: Backend, f: impl FnOnce(&mut Config)) -> TestNode {
        let mut config = base_config();
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => {
                let redis = RedisServer::start();
                config.redis.url = redis.url();
                Some(redis)
            }
            Backend::RedisCluster => {
                config.redis.url = redis_cluster::shared().to_string();
                config.redis.cluster = true;
                config.redis.key_prefix = unique("t");
                None
            }
        };
        f(&mut config);
        let mut node = TestNode::start_with_config(config).await;
        node.redis = redis;
        node
    }

    /// Starts a node on an existing `redis-server` (cluster tests): base
    /// config, `redis.url` = `redis.url()`, then `f`.
    pub async fn start_on_redis(redis: &RedisServer, f: impl FnOnce(&mut Config)) -> TestNode {
        let mut config = base_config();
        config.redis.url = redis.url();
        f(&mut config);
        TestNode::start_with_config(config).await
    }

    /// Starts a node with exactly this configuration (use [`base_config`]
    /// to begin with). Panics if the node does not start.
    pub async fn start_with_config(config: Config) -> TestNode {
        let handle = match tokio::time::timeout(
            Duration::from_secs(15),
            swiftchat::server::start(config.clone()),
        )
        .await
        {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => panic!("node did not start: {e:#}"),
            Err(_) => panic!("swiftchat::server::start did not return within 15 s"),
        };
        let addr = handle.local_addr();
        TestNode {
            handle: Some(handle),
            addr,
            config,
            redis: None,
        }
    }

    /// The bound address (HTTP and WebSocket).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/` (the server accepts the upgrade on `/` and `/ws`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// A connected, not logged-in client.
    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client logged in with IDENTIFY as `name` (CACHE_UPDATE and its own
    /// `joined` notice already consumed).
    pub async fn login(&self, name: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.identify(name).await;
        c
    }

    /// A client logged in as `name` whose CACHE_UPDATE has arrived, without
    /// insisting on the exact frames after it: other users' presence
    /// notices (a closing client's `left`) may come before its own `joined`.
    pub async fn login_amid_traffic(&self, name: &str) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.label = name.to_string();
        c.send_identify(json!({ "name": name })).await;
        c.recv_until(&expect::op(4)).await;
        c
    }

    /// Drains this node (like SIGTERM): SHUTDOWN `reconnect: true`, close
    /// 1001, then it stops.
    pub fn drain(&self) {
        self.handle
            .as_ref()
            .expect("node already waited for")
            .drain()
    }

    /// Waits until the node has stopped (after a drain or a cluster-wide
    /// shutdown); panics if it has not within `within`. Returns what
    /// `NodeHandle::wait` returned.
    pub async fn wait_stopped(&mut self, within: Duration) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("node already waited for");
        match tokio::time::timeout(within, handle.wait()).await {
            Ok(r) => r,
            Err(_) => panic!("node {} did not stop within {within:?}", self.addr),
        }
    }

    /// Checks from outside that the node still serves: a fresh client logs
    /// in, sends a message and sees it come back.
    pub async fn assert_serving(&self) {
        let name = unique("probe");
        let mut c = self.login_amid_traffic(&name).await;
        c.send_message("still serving?").await;
        c.recv_until(&expect::message(&name, "still serving?"))
            .await;
        c.close().await;
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An HS256 JWT with `sub`, `exp = now + exp_in_secs`, and `admin: true`
/// when `admin`.
pub fn jwt(secret: &str, sub: &str, admin: bool, exp_in_secs: i64) -> String {
    let mut claims = json!({"sub": sub, "exp": now_secs() + exp_in_secs});
    if admin {
        claims["admin"] = Value::Bool(true);
    }
    jwt_claims(secret, &claims)
}

/// An HS256 JWT with exactly these claims.
pub fn jwt_claims(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode JWT")
}

/// Polls `f` every 20 ms until it returns `Some`, up to `within`; `None`
/// if it never did.
pub async fn poll_until<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The entry for `room` in a CACHE_UPDATE's `d.rooms`, if listed.
pub fn room_entry<'a>(cache: &'a Value, room: &str) -> Option<&'a Value> {
    cache["rooms"]
        .as_array()
        .expect("CACHE_UPDATE d.rooms must be an array")
        .iter()
        .find(|r| r["name"] == room)
}

/// Checks the shape of a CACHE_UPDATE's `d` (PROTOCOL.md, op 4): `rooms`
/// entries with `name` (string), `available`, `locked`, `closed` (bools),
/// `users` (integer); `command_prefix`, `host` (strings), `port`, `users`
/// (integers); `me` with `name` and `room` (strings).
pub fn check_cache_shape(d: &Value) {
    let rooms = d["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("rooms not an array: {d}"));
    for r in rooms {
        assert!(r["name"].is_string(), "room name: {r}");
        assert!(r["available"].is_boolean(), "room available: {r}");
        assert!(r["locked"].is_boolean(), "room locked: {r}");
        assert!(r["closed"].is_boolean(), "room closed: {r}");
        assert!(r["users"].is_u64(), "room users: {r}");
    }
    assert!(d["command_prefix"].is_string(), "command_prefix: {d}");
    assert!(d["host"].is_string(), "host: {d}");
    assert!(d["port"].is_u64(), "port: {d}");
    assert!(d["users"].is_u64(), "users: {d}");
    assert!(d["me"]["name"].is_string(), "me.name: {d}");
    assert!(d["me"]["room"].is_string(), "me.room: {d}");
}

/// Relaxed message rate limits, for tests that are not about them.
pub fn relaxed(config: &mut Config) {
    config.limits.messages_per_second = 1000;
    config.limits.message_burst = 1000;
}

//! A real Redis Cluster for tests: 3 primaries + 3 replicas, each a
//! `redis-server --cluster-enabled yes` on a free loopback port in its own
//! temp dir (persistence off), joined with `redis-cli --cluster create
//! --cluster-replicas 1 --cluster-yes`. Ready when every node reports
//! `cluster_state:ok` and agrees on all 16384 slots. Killed on drop.
//!
//! `cluster-node-timeout` is 1000 ms so a killed primary's replica is
//! promoted in about 2 s (the failover tests need recovery within 5 s).
//!
//! Every node dies with the thread that started it (`PR_SET_PDEATHSIG`), so
//! no redis-server outlives its test, even one killed by a timeout.
//! [`shared`] is one cluster per test process for the tests that only chat
//! on it (the third backend of the protocol suites, each test under its own
//! key prefix): started once, on a thread that lives as long as the
//! process.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::redis_server::{free_port_pub as free_port, redis_server_path, Resp};

/// `cluster-node-timeout` of every test node, in milliseconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// Path of `redis-cli`, or a panic telling how to install it.
pub fn redis_cli_path() -> PathBuf {
    super::redis_server::program_on_path("redis-cli", "redis-tools")
}

/// The seed list (`redis.url`) of this process's shared cluster, started on
/// first use. Tests on it must not stop or change it.
pub fn shared() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shared-redis-cluster".into())
            .spawn(move || {
                let cluster = RedisCluster::start();
                tx.send(cluster.url()).expect("test waits for the cluster");
                // The nodes die with this thread: keep it (and them) for
                // the life of the process.
                loop {
                    std::thread::park();
                }
            })
            .expect("thread for the shared cluster");
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the shared Redis Cluster did not start (see the panic above)")
    })
}

/// One cluster member process.
pub struct ClusterNode {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl ClusterNode {
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs one command on this node (fresh connection).
    pub fn cmd(&self, args: &[&str]) -> Resp {
        super::redis_server::cmd_on_port(self.port, args)
    }

    /// The node's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A 6-node Redis Cluster (3 primaries with one replica each).
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits (up to 20 s) until it
    /// is `cluster_state:ok` on every node. Panics with the reason (and the
    /// `redis-cli` output) otherwise.
    pub fn start() -> RedisCluster {
        let server = redis_server_path();
        let cli = redis_cli_path();
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(spawn_node(&server));
        }
        let cluster = RedisCluster { nodes };
        for n in &cluster.nodes {
            wait_pong(n.port, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("cluster node {}: {e}; log: {}", n.port, n.log()));
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new(&cli)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_state_ok(Duration::from_secs(20));
        cluster.wait_replicas_synced(Duration::from_secs(20));
        cluster
    }

    /// Waits until every replica's link to its primary is up (its first
    /// full sync done). Panics after `within`.
    pub fn wait_replicas_synced(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for n in &self.nodes {
            loop {
                let info = match n.cmd(&["INFO", "replication"]) {
                    Resp::Bulk(Some(s)) => s,
                    other => format!("{other:?}"),
                };
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!("replica {} not synced within {within:?}: {info}", n.port);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Seed list for `redis.url` with `redis.cluster = true`:
    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,...` (all six nodes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Waits until every running node reports `cluster_state:ok` and knows
    /// all 16384 slots as assigned and ok. Panics after `within`.
    pub fn wait_state_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut all_ok = true;
            let mut last = String::new();
            for n in &self.nodes {
                if n.child.is_none() {
                    continue;
                }
                let info = match n.cmd(&["CLUSTER", "INFO"]) {
                    Resp::Bulk(Some(s)) => s,
                    other => format!("{other:?}"),
                };
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains("cluster_slots_ok:16384");
                if !ok {
                    all_ok = false;
                    last = format!("node {}: {info}", n.port);
                    break;
                }
            }
            if all_ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!("Redis Cluster not ok within {within:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index into `nodes` of the running node that is primary for `slot`.
    pub fn primary_for_slot(&self, slot: u16) -> usize {
        let port = self.port_for_slot(slot);
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("slot owner is one of our nodes")
    }

    /// Port of the primary owning `slot`, as seen by the first running node.
    pub fn port_for_slot(&self, slot: u16) -> u16 {
        let n = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        let Resp::Array(Some(ranges)) = n.cmd(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS: unexpected reply");
        };
        for r in ranges {
            let Resp::Array(Some(parts)) = r else {
                continue;
            };
            let (Some(lo), Some(hi)) = (parts[0].as_int(), parts[1].as_int()) else {
                continue;
            };
            if (lo..=hi).contains(&(slot as i64)) {
                if let Resp::Array(Some(primary)) = &parts[2] {
                    return primary[1].as_int().expect("port") as u16;
                }
            }
        }
        panic!("slot {slot} not assigned");
    }

    /// The hash slot of `key` (asks the cluster: `CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let n = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        n.cmd(&["CLUSTER", "KEYSLOT", key])
            .as_int()
            .expect("CLUSTER KEYSLOT") as u16
    }

    /// Kills (SIGKILL) the primary owning `slot` and returns its index. Its
    /// replica is promoted after `cluster-node-timeout`; use
    /// [`RedisCluster::wait_failover`] to wait for it.
    pub fn kill_primary_for_slot(&mut self, slot: u16) -> usize {
        let i = self.primary_for_slot(slot);
        self.nodes[i].kill();
        i
    }

    /// Waits until `slot` is served by a running primary other than
    /// `old_port` and the cluster is ok again. Returns the new port.
    pub fn wait_failover(&self, slot: u16, old_port: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let port = self.port_for_slot(slot);
            if port != old_port {
                let left = deadline.saturating_duration_since(Instant::now());
                self.wait_state_ok(left.max(Duration::from_millis(100)));
                return port;
            }
            if Instant::now() >= deadline {
                panic!("no replica promoted for slot {slot} within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `slot` from its primary to the primary at index `to` with the
    /// documented sequence (SETSLOT IMPORTING/MIGRATING, MIGRATE each key,
    /// SETSLOT NODE on both and the remaining primaries).
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.primary_for_slot(slot);
        assert_ne!(from, to, "slot {slot} already on node {to}");
        let id = |i: usize| match self.nodes[i].cmd(&["CLUSTER", "MYID"]) {
            Resp::Bulk(Some(s)) => s,
            other => panic!("CLUSTER MYID: {other:?}"),
        };
        let (from_id, to_id) = (id(from), id(to));
        let s = slot.to_string();
        let ok = |r: Resp| assert!(!matches!(r, Resp::Error(_)), "migrate slot {slot}: {r:?}");
        ok(self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]));
        ok(self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]));
        loop {
            let Resp::Array(Some(keys)) =
                self.nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "100"])
            else {
                panic!("GETKEYSINSLOT failed");
            };
            if keys.is_empty() {
                break;
            }
            let mut args: Vec<String> = vec![
                "MIGRATE".into(),
                "127.0.0.1".into(),
                self.nodes[to].port.to_string(),
                "".into(),
                "0".into(),
                "5000".into(),
                "KEYS".into(),
            ];
            for k in keys {
                if let Resp::Bulk(Some(k)) = k {
                    args.push(k);
                }
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(self.nodes[from].cmd(&refs));
        }
        ok(self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]));
        ok(self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]));
        for (i, n) in self.nodes.iter().enumerate() {
            if i != from && i != to && n.child.is_some() {
                // Replicas refuse SETSLOT; gossip updates them.
                let _ = n.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            }
        }
    }

    /// Kills every node (SIGKILL; persistence is off) and waits for them.
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_node(exe: &Path) -> ClusterNode {
    let mut last_err = String::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir for redis cluster node");
        let port = free_port();
        // Cluster bus port is port + 10000: it must be free too.
        if port > 55535 || std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
            continue;
        }
        let log = std::fs::File::create(dir.path().join("redis.log")).expect("log file");
        let mut command = Command::new(exe);
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
            ])
            .arg(dir.path().join("nodes.conf"))
            .args([
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                // A replica with a stale link may still be promoted (tests
                // kill primaries right after writes).
                "--cluster-replica-validity-factor",
                "0",
                // Replicas sync at once (the default waits 5 s for more of
                // them): a failover test must not promote an empty replica.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log));
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        let child = unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        }
        .spawn();
        match child {
            Ok(c) => {
                return ClusterNode {
                    child: Some(c),
                    port,
                    dir,
                }
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    panic!("could not start a cluster redis-server: {last_err}");
}

fn wait_pong(port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Resp::Simple(s)) = super::redis_server::try_cmd_on_port(port, &["PING"]) {
            if s == "PONG" {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no PONG on port {port} within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Stopping the real binary (OPERATIONS.md "Binary and subcommands"):
//! SIGTERM/SIGINT drain (op 3 `reconnect: true`, close 1001, exit 0 within
//! `server.drain_secs`), and `swiftchat shutdown --url --key`.

mod common;

use std::time::{Duration, Instant};

use common::binary::{self, Process};
use common::client::Client;
use common::expect;
use common::*;
use serde_json::json;

const START: Duration = Duration::from_secs(20);

async fn expect_shutdown(c: &mut Client, reconnect: bool, reason: Option<&str>) {
    let v = c.recv_until(&expect::shutdown(reconnect)).await;
    if let Some(r) = reason {
        assert_eq!(v["d"]["reason"], r, "{v}");
    }
    let after = c.expect_close(1001).await;
    assert!(
        after.is_empty(),
        "frames between SHUTDOWN and close: {}",
        client::show(&after)
    );
}

async fn drain_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("SWIFTCHAT_SERVER__DRAIN_SECS", "5");
    let mut p = Process::spawn(cmd);
    let addr = p.wait_listening(START).await;
    let mut logged = Client::connect(addr).await;
    logged.identify("Drained").await;
    let mut idle = Client::connect(addr).await;
    idle.label = "not logged in".into();
    let started = Instant::now();
    p.signal(signal);
    expect_shutdown(&mut logged, true, None).await;
    expect_shutdown(&mut idle, true, None).await;
    let status = p.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status:?}; output:\n{}",
        p.output()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0() {
    drain_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_and_exits_0() {
    drain_on("INT").await;
}

/// A client that never answers the close handshake does not hold the node
/// beyond `server.drain_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_bounded_by_drain_secs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("SWIFTCHAT_SERVER__DRAIN_SECS", "2");
    let mut p = Process::spawn(cmd);
    let addr = p.wait_listening(START).await;
    let mut stubborn = Client::connect(addr).await;
    stubborn.identify("Stubborn").await;
    // From now on it never reads, so it never answers the close.
    let started = Instant::now();
    p.signal("TERM");
    let status = p.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status: {status:?}; output:\n{}",
        p.output()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "exit took {:?} with drain_secs = 2",
        started.elapsed()
    );
    drop(stubborn);
}

/// `swiftchat shutdown --url http://HOST:PORT --key KEY [--reason TEXT]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_subcommand_with_url_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "cli-key-123abc-0123456789";
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", key);
    let mut server = Process::spawn(cmd);
    let addr = server.wait_listening(START).await;
    let mut logged = Client::connect(addr).await;
    logged.identify("Cli").await;
    let mut idle = Client::connect(addr).await;
    idle.label = "not logged in".into();
    let url = format!("http://{addr}");

    // A wrong key: non-zero exit, the node keeps running.
    let mut bad = binary::command(dir.path());
    bad.args([
        "shutdown", "--url", &url, "--key", "wrong", "--reason", "nope",
    ]);
    let (status, output) = binary::run_to_exit(bad, Duration::from_secs(15)).await;
    assert!(
        !status.success(),
        "shutdown with a wrong key must fail; output:\n{output}"
    );
    assert!(
        !output.trim().is_empty(),
        "a failing shutdown must print a message"
    );
    logged.roundtrip("still running").await;

    let mut good = binary::command(dir.path());
    good.args([
        "shutdown", "--url", &url, "--key", key, "--reason", "Bye now",
    ]);
    let (status, output) = binary::run_to_exit(good, Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "shutdown with the key; output:\n{output}"
    );
    expect_shutdown(&mut logged, false, Some("Bye now")).await;
    expect_shutdown(&mut idle, false, Some("Bye now")).await;
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "server exit status; output:\n{}",
        server.output()
    );
}

/// The op-3 key payload makes the real process exit with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_payload_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", "payload-key-0123456789");
    let mut server = Process::spawn(cmd);
    let addr = server.wait_listening(START).await;
    let mut c = Client::connect(addr).await;
    c.send_json(json!({"op": 3, "d": {"key": "payload-key-0123456789", "reason": "Maintenance"}}))
        .await;
    expect_shutdown(&mut c, false, Some("Maintenance")).await;
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "server exit status; output:\n{}",
        server.output()
    );
}

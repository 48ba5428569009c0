//! No token or key in any log line at any level (OPERATIONS.md "Logs"):
//! the real binary with RUST_LOG=trace (tungstenite logs every frame at
//! trace, hyper request heads, redis-rs commands), a JWT login, wrong and
//! right shutdown keys over the WebSocket and over HTTP; none of them may
//! appear in the output. Security events name the actor and the peer.

mod common;

use std::time::Duration;

use common::binary::{self, Process};
use common::client::Client;
use common::expect;
use common::*;
use serde_json::json;

const START: Duration = Duration::from_secs(20);

async fn run_with_trace(redis_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let secret = "jwt-secret-XYZZY-4711-trace";
    let key = "shutdown-key-PLUGH-0815-trace";
    let wrong = "wrong-key-FROTZ-9-at-trace";
    let wrong_http = "wrong-http-key-GNUSTO-1234";
    let mut cmd = binary::command(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "trace")
        .env("SWIFTCHAT_AUTH__JWT_SECRET", secret)
        .env("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", key);
    if let Some(url) = &redis_url {
        cmd.args(["--redis", url]);
    }
    let mut p = Process::spawn(cmd);
    let addr = p.wait_listening(START).await;
    let token = jwt(secret, "Traced", true, 3600);
    let mut c = Client::connect(addr).await;
    c.identify_with(json!({"name": "Traced", "token": token}), true)
        .await;
    c.roundtrip("hello at trace").await;
    c.send_json(json!({"op": 3, "d": {"key": wrong}})).await;
    c.expect_notice("forbidden").await;
    let bearer = format!("Bearer {wrong_http}");
    let r = http::post(
        addr,
        "/admin/shutdown",
        &[("Authorization", bearer.as_str())],
        "{}",
    )
    .await;
    assert_eq!(r.status, 401);
    c.send_json(json!({"op": 3, "d": {"key": key, "reason": "log check"}}))
        .await;
    c.recv_until(&expect::shutdown(false)).await;
    let status = p.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit: {status:?}\n{}", p.output());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = binary::strip_ansi(&p.output());
    assert!(
        out.contains("DEBUG") || out.contains("TRACE"),
        "RUST_LOG=trace took effect:\n{out}"
    );
    let (header, payload_and_signature) = token.split_once('.').unwrap();
    for (what, s) in [
        ("JWT secret", secret),
        ("shutdown key", key),
        ("wrong shutdown key", wrong),
        ("wrong HTTP key", wrong_http),
        ("token", token.as_str()),
        ("token header", header),
        ("token payload", payload_and_signature),
    ] {
        assert!(!out.contains(s), "the logs contain the {what}:\n{out}");
    }
    // The security events: who and from where.
    let wrong_line = out
        .lines()
        .find(|l| l.contains("wrong shutdown key") && l.contains("Traced"))
        .unwrap_or_else(|| panic!("no wrong-key line naming the user:\n{out}"));
    assert!(wrong_line.contains("127.0.0.1"), "{wrong_line}");
    let http_line = out
        .lines()
        .find(|l| l.contains("refused POST /admin/shutdown"))
        .unwrap_or_else(|| panic!("no refused HTTP line:\n{out}"));
    assert!(http_line.contains("127.0.0.1"), "{http_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_standalone() {
    run_with_trace(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_on_redis() {
    let redis = RedisServer::start();
    run_with_trace(Some(redis.url())).await;
}

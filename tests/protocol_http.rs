//! HTTP on the WebSocket port (PROTOCOL.md "Transport", OPERATIONS.md
//! "HTTP endpoints"): `/healthz`, `/readyz`, `/metrics`, `GET /`, the
//! upgrade on `/` and `/ws`, and `POST /admin/shutdown`.

mod common;

use std::time::Duration;

use common::client::Client;
use common::expect;
use common::http;
use common::*;

const KEY: &str = "http-shutdown-key";

backend_tests!(
    health_ready_metrics_and_index,
    websocket_on_root_and_ws,
    admin_shutdown_refused_without_the_right_key,
    admin_shutdown_refused_when_no_key_is_configured,
    admin_shutdown_with_the_key,
    admin_shutdown_with_the_key_and_no_body,
);

async fn health_ready_metrics_and_index(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut c = node.login("Metered").await;
    c.roundtrip("count me").await;

    let r = http::get(node.addr(), "/healthz").await;
    assert_eq!(r.status, 200, "/healthz: {r:?}");
    let r = http::get(node.addr(), "/readyz").await;
    assert_eq!(r.status, 200, "/readyz: {r:?}");

    let r = http::get(node.addr(), "/metrics").await;
    assert_eq!(r.status, 200, "/metrics: {r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "/metrics content-type {ct:?}");
    let names: Vec<&str> = r
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| n.starts_with("swiftchat_"))
        .collect();
    assert!(
        !names.is_empty(),
        "/metrics has no swiftchat_ samples:\n{}",
        r.body
    );

    let r = http::get(node.addr(), "/").await;
    assert_eq!(r.status, 200, "GET /: {r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "GET / content-type {ct:?}");
    assert!(
        r.body.to_ascii_lowercase().contains("<html"),
        "GET / is not an HTML page: {:.200}",
        r.body
    );
}

/// "The server accepts the upgrade on /ws and on /."
async fn websocket_on_root_and_ws(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let mut a = Client::connect_url(&format!("ws://{}/", node.addr())).await;
    a.identify("Rooted").await;
    let mut b = Client::connect_url(&format!("ws://{}/ws", node.addr())).await;
    b.identify("Pathed").await;
    a.expect(&expect::joined("Pathed", "general")).await;
    b.roundtrip("hello from /ws").await;
    a.expect(&expect::message("Pathed", "hello from /ws")).await;
}

/// 401 on a missing or wrong key; the node keeps running.
async fn admin_shutdown_refused_without_the_right_key(backend: Backend) {
    let node = TestNode::start(backend, |c| c.admin.shutdown_key = KEY.into()).await;
    let mut w = node.login("Witness").await;
    let body = r#"{"reason":"nope"}"#;
    let wrong_bearer = format!("Bearer {KEY}x");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no Authorization", vec![]),
        ("wrong key", vec![("Authorization", "Bearer wrong")]),
        (
            "key with a suffix",
            vec![("Authorization", wrong_bearer.as_str())],
        ),
        ("key without Bearer", vec![("Authorization", KEY)]),
        ("empty Bearer", vec![("Authorization", "Bearer ")]),
    ];
    for (what, headers) in cases {
        let mut headers = headers;
        headers.push(("Content-Type", "application/json"));
        let r = http::post(node.addr(), "/admin/shutdown", &headers, body).await;
        assert_eq!(r.status, 401, "POST /admin/shutdown with {what}: {r:?}");
    }
    w.roundtrip("still running").await;
    assert_eq!(http::get(node.addr(), "/healthz").await.status, 200);
}

/// "... and always when no key is configured."
async fn admin_shutdown_refused_when_no_key_is_configured(backend: Backend) {
    let node = TestNode::start(backend, |c| c.admin.shutdown_key = String::new()).await;
    let mut w = node.login("Witness").await;
    for auth in ["Bearer ", "Bearer", "Bearer anything"] {
        let r = http::post(
            node.addr(),
            "/admin/shutdown",
            &[("Authorization", auth)],
            "",
        )
        .await;
        assert_eq!(
            r.status, 401,
            "POST /admin/shutdown with {auth:?} and no key configured: {r:?}"
        );
    }
    let r = http::post(node.addr(), "/admin/shutdown", &[], "").await;
    assert_eq!(r.status, 401, "{r:?}");
    w.roundtrip("still running").await;
}

async fn shutdown_by_http(backend: Backend, body: &str, reason: Option<&str>) {
    let mut node = TestNode::start(backend, |c| c.admin.shutdown_key = KEY.into()).await;
    let mut logged = node.login("Logged").await;
    let mut idle = node.connect().await;
    idle.label = "not logged in".into();
    let bearer = format!("Bearer {KEY}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http::post(node.addr(), "/admin/shutdown", &headers, body).await;
    assert_eq!(r.status, 202, "POST /admin/shutdown with the key: {r:?}");
    for c in [&mut logged, &mut idle] {
        let v = c.recv_until(&expect::shutdown(false)).await;
        if let Some(reason) = reason {
            assert_eq!(v["d"]["reason"], reason, "{v}");
        }
        let after = c.expect_close(1001).await;
        assert!(
            after.is_empty(),
            "frames after SHUTDOWN: {}",
            client::show(&after)
        );
    }
    let r = node.wait_stopped(Duration::from_secs(15)).await;
    assert!(r.is_ok(), "node stopped with an error: {r:?}");
    assert!(
        http::request(node.addr(), "GET", "/healthz", &[], "")
            .await
            .is_err(),
        "a stopped node still answers HTTP"
    );
}

async fn admin_shutdown_with_the_key(backend: Backend) {
    shutdown_by_http(backend, r#"{"reason": "Maintenance"}"#, Some("Maintenance")).await;
}

async fn admin_shutdown_with_the_key_and_no_body(backend: Backend) {
    shutdown_by_http(backend, "", None).await;
}

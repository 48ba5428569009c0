//! Shutdown (PROTOCOL.md op 3, close 1001, 4003): the key payload before
//! and after login, wrong keys, no key configured, `\shutdown` for admins,
//! and the node drain (`NodeHandle::drain`, same as SIGTERM).

mod common;

use std::time::Duration;

use common::client::Client;
use common::expect;
use common::*;
use serde_json::json;

const SECRET: &str = "shutdown-test-secret";
const KEY: &str = "open-sesame-0123456789";

backend_tests!(
    shutdown_key_before_login_shuts_everything_down,
    shutdown_key_after_login_shuts_everything_down,
    wrong_shutdown_keys_close_4003,
    no_configured_key_refuses_every_key,
    admin_shutdown_command,
    drain_sends_reconnect_true_and_stops,
);

/// SHUTDOWN with `reconnect` (and `reason` when given), then close 1001
/// with nothing in between.
pub async fn expect_shutdown(c: &mut Client, reconnect: bool, reason: Option<&str>) {
    let v = c.recv_until(&expect::shutdown(reconnect)).await;
    match reason {
        Some(r) => assert_eq!(v["d"]["reason"], r, "[{}] SHUTDOWN reason: {v}", c.label),
        None => assert!(
            v["d"]["reason"].is_null() || v["d"]["reason"].is_string(),
            "[{}] SHUTDOWN reason must be null or a string: {v}",
            c.label
        ),
    }
    let after = c.expect_close(1001).await;
    assert!(
        after.is_empty(),
        "[{}] frames between SHUTDOWN and the close: {}",
        c.label,
        client::show(&after)
    );
}

async fn assert_stopped(node: &mut TestNode) {
    let r = node.wait_stopped(Duration::from_secs(15)).await;
    assert!(r.is_ok(), "node stopped with an error: {r:?}");
    assert!(
        Client::try_connect(node.addr()).await.is_err(),
        "a stopped node still accepts WebSockets"
    );
}

async fn shutdown_key_before_login_shuts_everything_down(backend: Backend) {
    let mut node = TestNode::start(backend, |c| c.admin.shutdown_key = KEY.into()).await;
    let mut logged = node.login("Logged").await;
    let mut idle = node.connect().await;
    idle.label = "not logged in".into();
    let mut x = node.connect().await;
    x.label = "key sender (not logged in)".into();
    x.send_json(json!({"op": 3, "d": {"key": KEY, "reason": "Maintenance"}}))
        .await;
    for c in [&mut x, &mut logged, &mut idle] {
        expect_shutdown(c, false, Some("Maintenance")).await;
    }
    assert_stopped(&mut node).await;
}

async fn shutdown_key_after_login_shuts_everything_down(backend: Backend) {
    let mut node = TestNode::start(backend, |c| c.admin.shutdown_key = KEY.into()).await;
    let mut other = node.login("Other").await;
    let mut idle = node.connect().await;
    idle.label = "not logged in".into();
    let mut x = node.login("Operator").await;
    x.send_json(json!({"op": 3, "d": {"key": KEY}})).await;
    for c in [&mut x, &mut other, &mut idle] {
        expect_shutdown(c, false, None).await;
    }
    assert_stopped(&mut node).await;
}

/// "Otherwise NOTICE forbidden; three wrong keys on one connection close
/// it with 4003."
async fn wrong_shutdown_keys_close_4003(backend: Backend) {
    let node = TestNode::start(backend, |c| c.admin.shutdown_key = KEY.into()).await;
    let mut w = node.login("Witness").await;
    for logged_in in [true, false] {
        let mut x = node.connect().await;
        x.label = format!("wrong keys (logged in: {logged_in})");
        if logged_in {
            x.identify(&unique("keyer")).await;
        }
        for wrong in ["open-sesam", "open-sesame "] {
            x.send_json(json!({"op": 3, "d": {"key": wrong, "reason": "x"}}))
                .await;
            x.expect_notice("forbidden").await;
        }
        assert!(x.is_open().await, "closed after two wrong keys");
        x.send_json(json!({"op": 3, "d": {"key": "OPEN-SESAME"}}))
            .await;
        let before = x.expect_close(4003).await;
        assert!(
            before
                .iter()
                .all(|f| expect::notice("forbidden").matches(f)),
            "{}",
            client::show(&before)
        );
    }
    w.settle().await;
    w.roundtrip("the node keeps running").await;
    node.assert_serving().await;
}

/// "With no key configured the payload is always refused."
async fn no_configured_key_refuses_every_key(backend: Backend) {
    let node = TestNode::start(backend, |c| c.admin.shutdown_key = String::new()).await;
    let mut w = node.login("Witness").await;
    let mut x = node.connect().await;
    x.label = "empty key".into();
    x.send_json(json!({"op": 3, "d": {"key": ""}})).await;
    x.expect_notice("forbidden").await;
    x.send_json(json!({"op": 3, "d": {"key": "anything"}}))
        .await;
    x.expect_notice("forbidden").await;
    w.roundtrip("the node keeps running").await;
    node.assert_serving().await;
}

/// `\shutdown [REASON]`: admin only; shuts the whole cluster down.
async fn admin_shutdown_command(backend: Backend) {
    let mut node = TestNode::start(backend, |c| c.auth.jwt_secret = SECRET.into()).await;
    let mut plain = node.login("Plain").await;
    plain.command(r"\shutdown").await;
    plain.expect_notice("forbidden").await;
    let mut idle = node.connect().await;
    idle.label = "not logged in".into();
    let mut adm = node.connect().await;
    adm.identify_with(
        json!({"name": "Root", "token": jwt(SECRET, "Root", true, 3600)}),
        true,
    )
    .await;
    adm.command(r"\shutdown Going down now").await;
    for c in [&mut adm, &mut plain, &mut idle] {
        expect_shutdown(c, false, Some("Going down now")).await;
    }
    assert_stopped(&mut node).await;
}

/// A drain (SIGTERM) tells this node's clients `reconnect: true`, closes
/// them with 1001 and stops the node.
async fn drain_sends_reconnect_true_and_stops(backend: Backend) {
    let mut node = TestNode::start(backend, |c| c.server.drain_secs = 3).await;
    let mut logged = node.login("Drained").await;
    let mut idle = node.connect().await;
    idle.label = "not logged in".into();
    node.drain();
    for c in [&mut logged, &mut idle] {
        expect_shutdown(c, true, None).await;
    }
    assert_stopped(&mut node).await;
}

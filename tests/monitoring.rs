//! The monitoring files (issue 14): every metric the Grafana dashboard
//! (deploy/grafana/swiftchat.json) queries exists on a live node's
//! `/metrics` once the events it counts have happened, and
//! deploy/prometheus.yml passes `promtool check config`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::client::Event;
use common::http;
use common::*;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Every `expr` of every panel and template variable.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The `swiftchat_*` metric names in PromQL text, histogram series reduced
/// to their family name (`_bucket`, `_sum`, `_count`).
fn queried_metrics(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find("swiftchat_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            // `job="swiftchat"` is a label value, not a metric.
            if name.len() > "swiftchat_".len() {
                names.insert(family(name).to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// Metric families with at least one sample in Prometheus text.
fn exported_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| family(n).to_string())
        .collect()
}

#[test]
fn the_dashboard_parses_and_covers_what_issue_14_asks() {
    let dashboard: Value = serde_json::from_str(&repo_file("deploy/grafana/swiftchat.json"))
        .expect("deploy/grafana/swiftchat.json is JSON");
    assert_eq!(dashboard["uid"], "swiftchat");
    let queried = queried_metrics(&dashboard_exprs(&dashboard));
    // Connections, logins/s, messages in/out, fan-out latency, Redis latency
    // and errors, slow-consumer and other closes by code.
    for wanted in [
        "swiftchat_connections",
        "swiftchat_logins_total",
        "swiftchat_messages_in_total",
        "swiftchat_frames_out_total",
        "swiftchat_fanout_seconds",
        "swiftchat_redis_command_seconds",
        "swiftchat_redis_errors_total",
        "swiftchat_slow_consumer_closes_total",
        "swiftchat_closes_total",
    ] {
        assert!(
            queried.contains(wanted),
            "the dashboard does not query {wanted}: {queried:?}"
        );
    }
    // Per node: every panel query of a swiftchat_ metric is filtered by the
    // node variable.
    for expr in dashboard_exprs(&dashboard) {
        if expr.contains("swiftchat_") && !expr.starts_with("label_values") {
            assert!(
                expr.contains("instance=~\"$instance\""),
                "not per node: {expr}"
            );
        }
    }
    // The datasource uid the provisioning defines.
    let provisioning = repo_file("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(provisioning.contains("uid: swiftchat-prometheus"));
    assert!(dashboard
        .to_string()
        .contains("\"uid\":\"swiftchat-prometheus\""));
}

/// A node on Redis, driven through the events the dashboard counts: logins,
/// messages, a notice, a slow consumer (closed 4009), an upgrade refused by
/// `limits.max_connections`, and a Redis outage (errors, subscriber
/// reconnect). Then every queried metric must have samples on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists_on_a_live_node() {
    bounded(async {
        let dashboard: Value =
            serde_json::from_str(&repo_file("deploy/grafana/swiftchat.json")).unwrap();
        let queried = queried_metrics(&dashboard_exprs(&dashboard));
        assert!(queried.len() >= 9, "{queried:?}");

        const CONTENT_CHARS: usize = 60_000;
        let mut node = TestNode::start(Backend::Redis, |c| {
            c.limits.outbound_queue = 8;
            c.limits.messages_per_second = 100_000;
            c.limits.message_burst = 100_000;
            c.limits.max_content_chars = CONTENT_CHARS;
            c.limits.max_frame_bytes = 256 * 1024;
            c.limits.max_connections = 3;
        })
        .await;
        let mut sender = node.login("Flooder").await;
        sender.create_room("floodroom").await;
        let mut sleeper = node.login("Sleeper").await;
        sleeper.join_room("floodroom", None).await;
        // A notice (bad_payload).
        sender.send_text("not json").await;
        sender
            .recv_until(&common::expect::notice("bad_payload"))
            .await;

        // The sleeper stops reading; the sender sends big messages in a
        // closed loop until the sleeper is closed as a slow consumer.
        let content = "z".repeat(CONTENT_CHARS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut slow = false;
        while !slow && tokio::time::Instant::now() < deadline {
            sender.send_message(&content).await;
            loop {
                match sender.recv_event().await {
                    Event::Json(v) if v["op"] == 0 && v["d"]["author"] == "Flooder" => break,
                    Event::Json(_) => {}
                    other => panic!("sender got {other:?}"),
                }
            }
            let metrics = http::get(node.addr(), "/metrics").await.body;
            slow = exported_metrics(&metrics).contains("swiftchat_slow_consumer_closes_total");
        }
        assert!(slow, "no slow-consumer close within 30 s");
        drop(sleeper);

        // max_connections = 3: within four more upgrades one is refused.
        let mut open = Vec::new();
        for _ in 0..4 {
            match Client::try_connect(node.addr()).await {
                Ok(c) => open.push(c),
                Err(_) => break,
            }
        }
        assert!(open.len() < 4, "no upgrade was refused beyond max_connections");

        // A Redis outage: errors and a subscriber reconnect.
        let redis = node.redis.as_mut().expect("redis backend");
        redis.stop();
        let seen = poll_until(Duration::from_secs(15), || async {
            let m = exported_metrics(&http::get(node.addr(), "/metrics").await.body);
            (m.contains("swiftchat_redis_errors_total")
                && m.contains("swiftchat_redis_reconnects_total"))
            .then_some(())
        })
        .await;
        assert!(seen.is_some(), "no Redis error/reconnect metrics after stopping Redis");
        node.redis.as_mut().unwrap().restart();

        let text = http::get(node.addr(), "/metrics").await.body;
        let exported = exported_metrics(&text);
        let missing: Vec<&String> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "the dashboard queries metrics this node does not export: {missing:?}\n/metrics:\n{text}"
        );
    })
    .await
}

/// deploy/prometheus.yml passes `promtool check config` (Debian: apt-get
/// install -y prometheus). Skipped, with a message, where promtool is not
/// installed.
#[test]
fn prometheus_config_passes_promtool() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus.yml");
    let output = match Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED prometheus_config_passes_promtool: promtool not found \
                 (apt-get install -y prometheus)"
            );
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    assert!(
        output.status.success(),
        "promtool check config failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

//! Metric families exist from the start, at zero (an alert on slow-consumer
//! closes must not wait for the first one), and closes are counted by code.
//! Its own test binary: the recorder is process-wide.

mod common;

use common::*;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_exist_at_zero_and_closes_count_by_code() {
    let node = TestNode::start(Backend::Memory, |_| {}).await;
    let text = http::get(node.addr(), "/metrics").await.body;
    for series in [
        "swiftchat_slow_consumer_closes_total",
        "swiftchat_closes_total{code=\"4009\"}",
        "swiftchat_closes_total{code=\"1011\"}",
        "swiftchat_closes_total{code=\"4008\"}",
        "swiftchat_connections_rejected_total{reason=\"per_ip\"}",
        "swiftchat_sockets_rejected_total",
        "swiftchat_logins_total",
        "swiftchat_messages_in_total",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    assert!(
        text.contains("# HELP swiftchat_slow_consumer_closes_total"),
        "{text}"
    );
    // A client that sends binary frames until 1008 shows up under its code.
    let mut c = node.login(&unique("m")).await;
    for _ in 0..11 {
        c.send_raw(tokio_tungstenite::tungstenite::Message::binary(vec![1u8]))
            .await;
    }
    c.expect_close(1008).await;
    let counted = poll_until(std::time::Duration::from_secs(3), || async {
        let text = http::get(node.addr(), "/metrics").await.body;
        (value(&text, "swiftchat_closes_total{code=\"1008\"}") == Some(1.0)).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "closes_total{{code=\"1008\"}} counted the close"
    );
}

//! Prometheus metrics: names in one place, the recorder installed once per
//! process (tests start several nodes in one process and share it).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "swiftchat_connections";
pub const CONNECTIONS_TOTAL: &str = "swiftchat_connections_total";
pub const CONNECTIONS_REJECTED: &str = "swiftchat_connections_rejected_total";
pub const SOCKETS_REJECTED: &str = "swiftchat_sockets_rejected_total";
pub const LOGINS: &str = "swiftchat_logins_total";
pub const LOGGED_IN: &str = "swiftchat_logged_in";
pub const MESSAGES_IN: &str = "swiftchat_messages_in_total";
pub const FRAMES_OUT: &str = "swiftchat_frames_out_total";
pub const FANOUT_SECONDS: &str = "swiftchat_fanout_seconds";
pub const SLOW_CONSUMER_CLOSES: &str = "swiftchat_slow_consumer_closes_total";
pub const CLOSES: &str = "swiftchat_closes_total";
pub const NOTICES: &str = "swiftchat_notices_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide exporter handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0,
            ])
            .expect("static buckets are valid")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        // The exporter asks its owner to run upkeep (histogram draining).
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("spawn metrics upkeep thread");
        handle
    })
}

/// Prometheus text of every metric.
pub fn render() -> String {
    handle().render()
}

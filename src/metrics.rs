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
        register_families();
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

/// Close codes the server sends (PROTOCOL.md), each a series of
/// [`CLOSES`] from the start.
const CLOSE_CODES: [u16; 9] = [1000, 1001, 1008, 1009, 1011, 4001, 4003, 4008, 4009];

/// Describes every family of this module and creates it at zero, so that
/// /metrics lists it (and an alert on it works) before its first event.
fn register_families() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS, "Open WebSockets on this node");
    describe_counter!(CONNECTIONS_TOTAL, "WebSockets opened on this node");
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Upgrades refused: reason max_connections (HTTP 503) or per_ip (HTTP 429)"
    );
    describe_counter!(
        SOCKETS_REJECTED,
        "Sockets closed at accept because limits.max_sockets was reached"
    );
    describe_counter!(LOGINS, "Successful logins");
    describe_gauge!(LOGGED_IN, "Logged-in connections on this node");
    describe_counter!(MESSAGES_IN, "Messages accepted from this node's clients");
    describe_counter!(FRAMES_OUT, "Frames queued to this node's clients");
    describe_histogram!(
        FANOUT_SECONDS,
        Unit::Seconds,
        "Time to queue one room frame to this node's members"
    );
    describe_counter!(
        SLOW_CONSUMER_CLOSES,
        "Connections closed with 4009 because their outbound queue overflowed (frames or bytes)"
    );
    describe_counter!(CLOSES, "Connections closed by the server, by close code");
    describe_counter!(NOTICES, "NOTICE frames sent, by code");
    for name in [
        CONNECTIONS_TOTAL,
        SOCKETS_REJECTED,
        LOGINS,
        MESSAGES_IN,
        FRAMES_OUT,
        SLOW_CONSUMER_CLOSES,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for reason in ["max_connections", "per_ip"] {
        metrics::counter!(CONNECTIONS_REJECTED, "reason" => reason).absolute(0);
    }
    for code in CLOSE_CODES {
        metrics::counter!(CLOSES, "code" => code.to_string()).absolute(0);
    }
    metrics::gauge!(CONNECTIONS).set(0.0);
    metrics::gauge!(LOGGED_IN).set(0.0);
}

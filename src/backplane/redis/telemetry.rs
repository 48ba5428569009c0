//! Metric names of the Redis backplane and small recording helpers.
//!
//! Labels are static strings (the operation name, the error class), so the
//! number of series is fixed.

use std::time::Duration;

/// Commands and scripts sent, by `op`.
pub const COMMANDS: &str = "swiftchat_redis_commands_total";
/// Commands that failed, by `op` and `kind` (`unavailable` or `internal`).
pub const ERRORS: &str = "swiftchat_redis_errors_total";
/// Round trip of one command, pool wait included, by `op`.
pub const COMMAND_SECONDS: &str = "swiftchat_redis_command_seconds";
/// Times the subscriber connection was lost (each is followed by a
/// reconnect and a resubscription).
pub const RECONNECTS: &str = "swiftchat_redis_reconnects_total";
/// Channels the node's subscriber holds (rooms with local members, events,
/// probe).
pub const SUBSCRIPTIONS: &str = "swiftchat_redis_subscriptions";
/// From PUBLISH of the node's probe to its arrival through the node's own
/// subscription: the pub/sub lag every room frame sees as well.
pub const PUBLISH_TO_DELIVER: &str = "swiftchat_redis_publish_to_deliver_seconds";
/// Dead nodes whose users this node removed.
pub const REAPED_NODES: &str = "swiftchat_redis_reaped_nodes_total";
/// Users written back after Redis lost them (restart, or this node was
/// presumed dead).
pub const REREGISTERED: &str = "swiftchat_redis_reregistered_users_total";
/// Users that could not be written back because another node had claimed
/// their name meanwhile.
pub const NAME_CONFLICTS: &str = "swiftchat_redis_name_conflicts_total";
/// joined/left notices published for users whose own node could not:
/// reaped or taken over from a dead node, or written back after this node
/// was reaped while alive.
pub const PRESENCE_NOTICES: &str = "swiftchat_redis_presence_notices_total";
/// CACHE_UPDATE snapshots served from a snapshot script that another
/// caller had started after this one asked (see `Snapshots` in `mod.rs`).
pub const SNAPSHOTS_SHARED: &str = "swiftchat_redis_snapshots_shared_total";
/// Messages delivered from history to fill a gap after the subscription
/// was interrupted.
pub const GAP_FILLED: &str = "swiftchat_redis_gap_filled_messages_total";
/// MESSAGE frames Redis delivered twice to this node, dropped.
pub const REPEATS_DROPPED: &str = "swiftchat_redis_repeated_frames_dropped_total";
/// Events or probes from Redis that could not be parsed.
pub const BAD_PUSHES: &str = "swiftchat_redis_bad_pushes_total";

/// Registers descriptions once per process (the recorder may be shared by
/// several nodes in tests).
pub fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(COMMANDS, "Redis commands and scripts sent, by op.");
        metrics::describe_counter!(ERRORS, "Redis commands that failed, by op and kind.");
        metrics::describe_histogram!(
            COMMAND_SECONDS,
            metrics::Unit::Seconds,
            "Redis round trip per command, pool wait included."
        );
        metrics::describe_counter!(RECONNECTS, "Subscriber connection losses to Redis.");
        metrics::describe_gauge!(SUBSCRIPTIONS, "Redis channels subscribed by this node.");
        metrics::describe_histogram!(
            PUBLISH_TO_DELIVER,
            metrics::Unit::Seconds,
            "Redis pub/sub lag measured by the node's own probe."
        );
        metrics::describe_counter!(REAPED_NODES, "Dead nodes whose users were removed.");
        metrics::describe_counter!(REREGISTERED, "Users re-registered after Redis lost them.");
        metrics::describe_counter!(NAME_CONFLICTS, "Users not re-registered: name taken.");
        metrics::describe_counter!(
            PRESENCE_NOTICES,
            "joined/left notices published on behalf of dead or reaped nodes' users."
        );
        metrics::describe_counter!(
            SNAPSHOTS_SHARED,
            "Snapshots served by a script another caller started after this one asked."
        );
        metrics::describe_counter!(
            GAP_FILLED,
            "Messages delivered from history after the subscription was interrupted."
        );
        metrics::describe_counter!(
            REPEATS_DROPPED,
            "MESSAGE frames Redis delivered twice to this node, dropped."
        );
        metrics::describe_counter!(BAD_PUSHES, "Pub/sub payloads that could not be parsed.");
    });
}

pub fn command(op: &'static str, elapsed: Duration) {
    metrics::counter!(COMMANDS, "op" => op).increment(1);
    metrics::histogram!(COMMAND_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}

pub fn error(op: &'static str, kind: &'static str) {
    metrics::counter!(ERRORS, "op" => op, "kind" => kind).increment(1);
}

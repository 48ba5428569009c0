//! Node stats for the admin API: every node writes its own
//! [`NodeStats`] at each heartbeat and any node lists them all.
//!
//! Keys (prefix `P`): `P:{global}:nodeinfo:ID` (string, the JSON stats, expiring
//! after `redis.node_ttl_secs`) and `P:{global}:nodeinfo` (zset, id → Unix ms of the
//! last report, the index to list). A node that stops renewing drops out
//! when its key expires; the reader removes index entries whose key is gone,
//! so the index does not grow with nodes that came and went.

use ::redis::Value;

use super::{cmd, Call, Inner};
use crate::backplane::{BackplaneResult, NodeStats};

/// Most nodes one listing returns: the listing is one MGET, kept bounded
/// even if the index held junk. Far above any cluster this gateway is
/// sized for.
pub(crate) const MAX_LISTED_NODES: isize = 1024;

fn index_key(inner: &Inner) -> String {
    inner.keys.global_key("nodeinfo")
}

fn stats_key(inner: &Inner, node_id: &str) -> String {
    inner.keys.control_key("nodeinfo", node_id)
}

/// Writes this node's stats with the node TTL, atomically with the index.
pub(crate) async fn report(inner: &Inner, stats: &NodeStats) -> BackplaneResult<()> {
    let json = serde_json::to_string(stats)
        .map_err(|e| crate::backplane::BackplaneError::Internal(format!("node stats: {e}")))?;
    let mut pipe = ::redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(stats_key(inner, &inner.node_id))
        .arg(json)
        .arg("PX")
        .arg(inner.ttl_ms())
        .ignore()
        .cmd("ZADD")
        .arg(index_key(inner))
        .arg(stats.last_heartbeat_ms)
        .arg(&inner.node_id)
        .ignore();
    inner.run::<()>("report_node_stats", Call::Pipe(pipe)).await
}

/// Every node whose stats have not expired, sorted by id.
pub(crate) async fn list(inner: &Inner) -> BackplaneResult<Vec<NodeStats>> {
    let ids: Vec<String> = inner
        .run(
            "cluster_nodes",
            Call::Cmd(
                cmd("ZRANGE")
                    .arg(index_key(inner))
                    .arg(0)
                    .arg(MAX_LISTED_NODES - 1)
                    .clone(),
            ),
        )
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut mget = cmd("MGET");
    for id in &ids {
        mget.arg(stats_key(inner, id));
    }
    let values: Vec<Value> = inner.run("cluster_nodes", Call::Cmd(mget)).await?;
    let mut nodes = Vec::with_capacity(ids.len());
    let mut expired = Vec::new();
    for (id, value) in ids.iter().zip(values) {
        let stats = match value {
            Value::BulkString(bytes) => serde_json::from_slice::<NodeStats>(&bytes).ok(),
            _ => None,
        };
        match stats {
            Some(stats) => nodes.push(stats),
            None => expired.push(id.as_str()),
        }
    }
    if !expired.is_empty() {
        // Best effort: the next listing tries again.
        let mut zrem = cmd("ZREM");
        zrem.arg(index_key(inner)).arg(&expired);
        let _ = inner.run::<i64>("cluster_nodes", Call::Cmd(zrem)).await;
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

/// Removes this node's stats at once (clean drain), instead of waiting for
/// them to expire.
pub(crate) async fn forget(inner: &Inner) -> BackplaneResult<()> {
    let mut pipe = ::redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(stats_key(inner, &inner.node_id))
        .ignore()
        .cmd("ZREM")
        .arg(index_key(inner))
        .arg(&inner.node_id)
        .ignore();
    inner.run::<()>("forget_node_stats", Call::Pipe(pipe)).await
}

//! Redis Cluster connections (issue 12, `redis.cluster = true`): the seed
//! list of `redis.url`, the redis crate's async cluster client, and the
//! grouping of channels by slot that sharded subscriptions need.
//!
//! The backplane's logic is the same on one Redis and on a cluster (every
//! script touches one slot, see `keys.rs`); what changes is the transport:
//!
//! - commands and scripts go through one [`ClusterConnection`] (multiplexed
//!   per shard, routed by the first key's slot, following MOVED/ASK and
//!   refreshing its slot map by itself) instead of the pool (`commands.rs`);
//! - room frames are published with SPUBLISH and received with SSUBSCRIBE
//!   (sharded pub/sub: a channel's traffic stays on the shard that owns its
//!   slot instead of being broadcast over the cluster bus to every shard);
//!   the subscriber (`subscriber.rs`) handles the three traps of the crate:
//!   * **CROSSSLOT**: Redis refuses an SSUBSCRIBE whose channels span
//!     slots, and the crate's own resubscription may send one command for
//!     all of a node's channels. The subscriber never does: [`by_slot`]
//!     groups every (re)subscription, one SSUBSCRIBE per slot.
//!   * **Slot migration**: the server pushes an unsolicited `sunsubscribe`
//!     for the channels of a moved slot, and the crate neither refreshes nor
//!     resubscribes. The subscriber treats it like a disconnection of that
//!     room: it subscribes again (the crate follows MOVED to the new owner)
//!     and fills the gap from history.
//!   * **Failover**: a promoted replica sends nothing (redis#12558); the
//!     crate pushes `Disconnection` for the lost primary. The subscriber
//!     resubscribes every wanted channel at each supervisor tick until it
//!     succeeds (once the replica is promoted) and fills gaps from history.
//!
//! One hash tag per room rather than a fixed number of partitions: a
//! partition scheme bounds the subscriptions per shard, but per-room tags
//! keep a room's messages, history and channel on its own slot with
//! nothing to map, and their one cost, one SSUBSCRIBE per slot in use after
//! a cut, is small: measured with 1,000 rooms on one node, every room heard
//! again 840 ms after all subscriber connections were killed (most of it
//! the supervisor's 1 s tick; `cargo test --release --test
//! redis_cluster_backplane -- --ignored --nocapture`).
//!
//! Global state sits in one slot (`{global}`): written per login, move,
//! moderation command and heartbeat, never per message, so one shard
//! carries it. The alternative (centrifuge's: N partitions with
//! precomputed tags, one SSUBSCRIBE per partition) bounds subscriptions per
//! shard but would turn "is this name free", "may this user join" and "list
//! rooms" into scatter/gathers across partitions, losing the one-script
//! atomicity of a join. Measured (tests/redis_cluster_global_slot_bench.rs,
//! `cargo test --release --test redis_cluster_global_slot_bench -- --ignored
//! --nocapture`): 19,551 join-sized scripts/s on the `{global}` slot of one
//! Redis against 18,388/s on a 3-shard cluster, several times the login
//! rate a node sustains.

use std::collections::HashMap;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_routing::Slot;
use redis::io::tcp::TcpSettings;
use redis::{IntoConnectionInfo, ProtocolVersion, TlsCertificates};

use crate::backplane::BackplaneError;
use crate::config::RedisConfig;

/// Seed nodes from `redis.url`: comma-separated URLs, blanks ignored.
pub fn seed_urls(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A cluster client builder for `redis.url`'s seeds with the node's socket
/// settings, on `protocol`. Errors never quote the URL (it may carry a
/// password).
pub(super) fn builder(
    redis: &RedisConfig,
    tcp: TcpSettings,
    protocol: ProtocolVersion,
) -> Result<ClusterClientBuilder, BackplaneError> {
    let seeds = seed_urls(&redis.url);
    if seeds.is_empty() {
        return Err(BackplaneError::Internal(
            "redis.url lists no Redis Cluster seed node".into(),
        ));
    }
    let mut infos = Vec::with_capacity(seeds.len());
    for (i, seed) in seeds.iter().enumerate() {
        let info = seed.as_str().into_connection_info().map_err(|e| {
            BackplaneError::Internal(format!(
                "redis.url seed {} is invalid ({})",
                i + 1,
                e.category()
            ))
        })?;
        infos.push(info);
    }
    if seeds
        .iter()
        .any(|s| s.to_ascii_lowercase().starts_with("rediss://"))
    {
        super::connect::install_crypto_provider();
    }
    let mut builder = ClusterClientBuilder::new(infos)
        .use_protocol(protocol)
        .tcp_settings(tcp);
    if !redis.tls_ca_file.is_empty() {
        let root_cert = std::fs::read(&redis.tls_ca_file).map_err(|e| {
            BackplaneError::Internal(format!(
                "redis.tls_ca_file {:?} cannot be read: {e}",
                redis.tls_ca_file
            ))
        })?;
        builder = builder.certs(TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
    }
    Ok(builder)
}

/// Channels grouped by hash slot, so that no SSUBSCRIBE or SUNSUBSCRIBE
/// spans slots (CROSSSLOT).
pub(super) fn by_slot(channels: Vec<String>) -> Vec<Vec<String>> {
    let mut slots: HashMap<Slot, Vec<String>> = HashMap::new();
    for channel in channels {
        slots
            .entry(Slot::for_key(channel.as_bytes()))
            .or_default()
            .push(channel);
    }
    slots.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_comma_separated_and_trimmed() {
        assert_eq!(
            seed_urls(" redis://a:1, redis://b:2 ,,"),
            vec!["redis://a:1".to_string(), "redis://b:2".to_string()]
        );
        assert!(seed_urls(" , ").is_empty());
    }

    #[test]
    fn channels_are_grouped_one_slot_per_group() {
        let chans: Vec<String> = ["ch:{a}", "x:{a}", "ch:{b}", "ch:{c}", "y:{b}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let groups = by_slot(chans);
        assert_eq!(groups.len(), 3);
        for g in &groups {
            let s = Slot::for_key(g[0].as_bytes());
            assert!(g.iter().all(|c| Slot::for_key(c.as_bytes()) == s), "{g:?}");
        }
        assert!(groups.contains(&vec!["ch:{a}".to_string(), "x:{a}".to_string()]));
    }

    #[test]
    fn bad_seeds_are_refused_without_echoing_them() {
        let redis = RedisConfig {
            url: "redis://:s3cret@[bad, redis://x:1".into(),
            cluster: true,
            ..RedisConfig::default()
        };
        let Err(e) = builder(&redis, TcpSettings::default(), ProtocolVersion::RESP2) else {
            panic!("accepted");
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let empty = RedisConfig {
            url: " , ".into(),
            ..redis
        };
        assert!(builder(&empty, TcpSettings::default(), ProtocolVersion::RESP2).is_err());
    }
}

//! Building Redis connections from `redis.url` (and `redis.tls_ca_file`):
//! `redis://` or `rediss://` (TLS, rustls with the ring provider: no C
//! library beyond the compiler ring's build uses), user and password from
//! the URL (Redis 6 ACL users), and the start-time check that Redis does
//! not evict keys.
//!
//! Owned by the edge hardening (issue 10); the backplane calls
//! [`parse_url`] where it used to parse the URL itself.

use std::time::Duration;

use redis::{Client, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use crate::backplane::BackplaneError;
use crate::config::RedisConfig;

/// Parses `redis.url`; for `rediss://` with `redis.tls_ca_file`, the
/// server's certificate must chain to that CA (otherwise to the system's
/// roots). Errors never quote the URL: it may carry a password.
pub(crate) fn parse_url(redis: &RedisConfig) -> Result<ConnectionInfo, BackplaneError> {
    let invalid = |what: String| BackplaneError::Internal(format!("redis.url is invalid ({what})"));
    let tls = redis
        .url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("rediss://");
    if tls {
        install_crypto_provider();
    }
    if !tls || redis.tls_ca_file.is_empty() {
        return redis
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| invalid(e.category().to_string()));
    }
    let root_cert = std::fs::read(&redis.tls_ca_file).map_err(|e| {
        BackplaneError::Internal(format!(
            "redis.tls_ca_file {:?} cannot be read: {e}",
            redis.tls_ca_file
        ))
    })?;
    let client = Client::build_with_tls(
        redis.url.as_str(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .map_err(|e| invalid(e.category().to_string()))?;
    Ok(client.get_connection_info().clone())
}

/// rustls needs one process-wide crypto provider; only ring is compiled in.
pub(crate) fn install_crypto_provider() {
    // Fails only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Warns when Redis may evict keys (`maxmemory-policy` other than
/// `noeviction`): an evicted name, room or membership key silently breaks
/// the cluster's state. Reads `INFO memory`, which managed Redis services
/// allow more often than CONFIG GET; when neither answers, says so.
pub(crate) async fn warn_if_evicting(redis: &RedisConfig) {
    let timeout = Duration::from_millis(redis.command_timeout_ms.max(100) * 2);
    // A Redis Cluster: the first seed speaks for the others (they are set
    // up alike; a managed cluster applies one policy to all).
    let first_seed;
    let redis = if redis.cluster {
        first_seed = RedisConfig {
            url: super::cluster::seed_urls(&redis.url)
                .into_iter()
                .next()
                .unwrap_or_default(),
            cluster: false,
            ..redis.clone()
        };
        &first_seed
    } else {
        redis
    };
    let check = async {
        let info = parse_url(redis).map_err(|e| e.to_string())?;
        let client = Client::open(info).map_err(|e| e.category().to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.category().to_string())?;
        let text: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.category().to_string())?;
        Ok::<_, String>(eviction_policy(&text).map(str::to_owned))
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(Some(policy))) if policy == "noeviction" => {
            tracing::debug!(policy, "redis does not evict keys");
        }
        Ok(Ok(Some(policy))) => tracing::warn!(
            policy,
            "redis may evict keys (maxmemory-policy is not noeviction): names, rooms and memberships can vanish under memory pressure; set maxmemory-policy noeviction"
        ),
        Ok(Ok(None)) => tracing::info!("redis did not report its maxmemory-policy"),
        Ok(Err(error)) => {
            tracing::info!(%error, "could not read redis's maxmemory-policy (INFO memory)")
        }
        Err(_) => tracing::info!("could not read redis's maxmemory-policy in time"),
    }
}

/// `maxmemory_policy:...` of `INFO memory`.
fn eviction_policy(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("maxmemory_policy:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_policy() {
        let info = "# Memory\r\nused_memory:1\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(eviction_policy(info), Some("allkeys-lru"));
        assert_eq!(eviction_policy("# Memory\r\n"), None);
    }

    #[test]
    fn urls_with_users_and_tls_parse_and_errors_hide_the_password() {
        let mut redis = RedisConfig {
            url: "rediss://chat:s3cret-pw@127.0.0.1:6380/0".into(),
            ..RedisConfig::default()
        };
        let info = parse_url(&redis).unwrap();
        assert_eq!(info.redis_settings().username(), Some("chat"));
        assert_eq!(info.redis_settings().password(), Some("s3cret-pw"));
        redis.url = "redis://chat:s3cret-pw@[bad".into();
        let error = parse_url(&redis).unwrap_err().to_string();
        assert!(!error.contains("s3cret-pw"), "{error}");
        redis.url = "rediss://127.0.0.1:6380".into();
        redis.tls_ca_file = "/nonexistent/ca.pem".into();
        assert!(parse_url(&redis)
            .unwrap_err()
            .to_string()
            .contains("tls_ca_file"));
    }
}

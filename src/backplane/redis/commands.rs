//! Where the backplane's commands, scripts and pipelines go: a pool of
//! shared multiplexed connections to one Redis (`pool.rs`), or one cluster
//! connection to a Redis Cluster (`cluster.rs`), which routes each call by
//! its first key's slot (every script and pipeline touches one slot, see
//! `keys.rs`).

use ::redis::cluster_async::ClusterConnection;
use ::redis::{FromRedisValue, RedisError};

use super::pool::{self, CommandPool};
use super::scripts::PublishCommand;
use super::{classify, classify_pool, Call};
use crate::backplane::BackplaneError;

pub(super) enum Commands {
    Single(CommandPool),
    Cluster(ClusterConnection),
}

impl Commands {
    /// How frames are published: PUBLISH on one Redis, SPUBLISH (sharded
    /// pub/sub) on a cluster.
    pub(super) fn publish_command(&self) -> PublishCommand {
        match self {
            Commands::Single(_) => PublishCommand::Publish,
            Commands::Cluster(_) => PublishCommand::SPublish,
        }
    }

    /// Sends one call (unbounded here: the caller bounds it).
    pub(super) async fn send<T: FromRedisValue>(
        &self,
        call: &Call<'_>,
    ) -> Result<T, BackplaneError> {
        match self {
            Commands::Single(pool) => {
                let mut conn = pool::shared_connection(pool).await.map_err(classify_pool)?;
                call.send(&mut conn).await.map_err(|e: RedisError| {
                    pool::forget_connections(pool, &e);
                    classify(&e)
                })
            }
            Commands::Cluster(conn) => {
                // A clone shares the connection (it is a handle).
                let mut conn = conn.clone();
                call.send(&mut conn).await.map_err(|e| classify(&e))
            }
        }
    }
}

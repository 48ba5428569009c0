//! Measurement behind the `{global}` decision of issue 12 (ignored by
//! default; run with `cargo test --test redis_cluster_global_slot_bench --
//! --ignored --nocapture`): script calls per second on one `{global}` key,
//! through the redis crate's async cluster client on a 3+3 Redis Cluster vs
//! a multiplexed connection on one redis-server. A login costs a few such
//! script calls, so this bounds logins/s when all global state is one slot.

mod common;

use std::time::{Duration, Instant};

use common::{RedisCluster, RedisServer};
use redis::AsyncCommands;

const SCRIPT: &str =
    "redis.call('HINCRBY', KEYS[1], ARGV[1], 1) return redis.call('HLEN', KEYS[1])";
const TASKS: usize = 32;
const RUN: Duration = Duration::from_secs(3);

async fn run<C>(conn: C) -> f64
where
    C: redis::aio::ConnectionLike + Clone + Send + 'static,
{
    let script = redis::Script::new(SCRIPT);
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut conn = conn.clone();
        let script = script.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let _: i64 = script
                    .key("bench:{global}:names")
                    .arg(format!("user{t}-{n}"))
                    .invoke_async(&mut conn)
                    .await
                    .expect("script");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / RUN.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, ~10 s of both cores"]
async fn global_slot_script_rate_cluster_vs_single() {
    let single = RedisServer::start();
    let client = redis::Client::open(single.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.del("bench:{global}:names").await.unwrap();
    let single_rate = run(conn).await;

    let cluster = RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let conn = client.get_async_connection().await.unwrap();
    let cluster_rate = run(conn).await;

    eprintln!(
        "script calls/s on one {{global}} key, {TASKS} tasks, {RUN:?}: single redis-server {single_rate:.0}, \
         Redis Cluster (3+3) {cluster_rate:.0} ({:.0}%)",
        100.0 * cluster_rate / single_rate
    );
    assert!(single_rate > 0.0 && cluster_rate > 0.0);
}

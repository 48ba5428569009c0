//! The Redis backplane (issue 3): any number of stateless nodes sharing one
//! Redis behave as one server.
//!
//! - **Commands** go through a deadpool pool (`pool.rs`) of multiplexed
//!   connections, or on a Redis Cluster (`redis.cluster`) through the
//!   redis crate's cluster connection (`commands.rs`, `cluster.rs`). Every
//!   check-and-change that must be atomic across nodes is one Lua script
//!   on one slot (`scripts.rs`); key layout in `keys.rs`.
//! - **Fan-out**: one subscriber connection per node (`subscriber.rs`),
//!   subscribed to a room's channel exactly while the node has local members
//!   there or joins in progress: the subscriber counts the references
//!   ([`Backplane::subscribe`] takes one, [`Backplane::unsubscribe`] gives
//!   it back without waiting), serializes changes per room and holds no
//!   lock across a round trip; plus the events channel and the node's own
//!   probe channel. Frames are published once, as the bytes clients receive,
//!   and relayed without parsing.
//! - **Presence** (`presence.rs`): a heartbeat keeps this node's names and
//!   memberships alive; any node reaps those of nodes whose heartbeat
//!   expired (kill -9); after Redis lost its data (or presumed this node
//!   dead) the node writes its connected users back.
//! - **Snapshots** (CACHE_UPDATE) cost O(rooms) inside Redis; concurrent
//!   callers on one node share one script, started after each of them
//!   asked ([`Snapshots`]), so a burst of logins does not run one per login.
//! - **Outages**: every call is bounded by `redis.command_timeout_ms` and
//!   fails with [`BackplaneError::Unavailable`]; readiness (`health.rs`)
//!   drops within a few seconds; the subscriber reconnects forever and
//!   resubscribes; presence is re-checked as soon as it is back.
//!
//! A node whose Redis is down at start still starts (not ready) and keeps
//! trying in the background: an orchestrator restarting nodes in a loop
//! because Redis is briefly away helps nobody.

mod cluster;
mod commands;
pub(crate) mod connect;
mod gap_fill;
mod health;
mod history;
mod keys;
mod nodes;
mod pool;
mod presence;
mod scripts;
mod seq_floor;
mod subscriber;
mod telemetry;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionLike;
use ::redis::io::tcp::TcpSettings;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, FromRedisValue, ProtocolVersion, RedisError,
    ScriptInvocation, Value,
};
use async_trait::async_trait;
use bytes::Bytes;
use commands::Commands;
use deadpool_redis::{Manager, PoolError, Runtime};
use pool::{CommandManager, CommandPool};
use scripts::{PublishCommand, RoomData};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Backplane, BackplaneError, BackplaneResult, ClusterEvent, ClusterSnapshot, Delivery,
    HistoryOutcome, HistoryQuery, JoinOutcome, JoinRequest, NodeStats, RoomChange, RoomInfo,
    RoomMembers,
};
use crate::config::Config;
use crate::protocol::MessageDraft;
use health::Health;
use keys::Keys;
use subscriber::Subscriber;

/// How long [`connect`] waits for the node to become ready before it
/// returns anyway (Redis down at start), in command timeouts.
const STARTUP_WAIT_TIMEOUTS: u32 = 3;
/// How long sent data may stay unacknowledged before the kernel drops a
/// Redis connection (Linux): the subscriber's PING each second keeps data
/// in flight, so a silent peer is noticed after about this long.
#[cfg(target_os = "linux")]
const USER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the supervisor pings the subscriber connection.
const SUPERVISOR_TICK: Duration = Duration::from_secs(1);
/// How soon the supervisor tries again while a resubscription is due (a
/// shard failing over answers again as soon as its replica is promoted).
const RESYNC_RETRY: Duration = Duration::from_millis(200);
/// Stray rooms kept for another UNSUBSCRIBE attempt; beyond that they wait
/// for their next subscription confirmation (after a reconnect).
const MAX_PENDING_STRAYS: usize = 1024;

/// Timing and naming settings taken from the configuration.
#[derive(Debug, Clone)]
struct Settings {
    command_timeout: Duration,
    heartbeat: Duration,
    node_ttl: Duration,
    probe_interval: Duration,
    default_room: String,
    /// `limits.presence_notice_max_members`: the reaper announces `left`
    /// only in rooms of at most this many members, like the sessions.
    presence_notice_max_members: u64,
    /// `history.max_messages` (0: history off).
    history_max: usize,
    /// `history.ttl_secs` in ms (0: never expires).
    history_ttl_ms: u64,
}

/// One node's connection to the cluster through Redis.
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    /// Random per process: marks this process's registration in Redis.
    token: String,
    keys: Keys,
    settings: Settings,
    commands: Commands,
    /// PUBLISH, or SPUBLISH on a Redis Cluster.
    publish_command: PublishCommand,
    subscriber: Subscriber,
    health: Arc<Health>,
    delivery: Arc<dyn Delivery>,
    /// Epoch of the Redis dataset this node last registered in.
    epoch: Mutex<Option<String>>,
    /// Names this node's connections hold or are claiming: entered before a
    /// claim is sent, removed before a release is sent. What Redis lists for
    /// this node beyond it is a leftover of a release that failed (Redis was
    /// away), removed by [`Inner::reconcile`].
    claims: Mutex<HashSet<String>>,
    /// Claims take it shared; the reconciliation exclusively, so that no
    /// claim is between "sent" and "recorded" while it compares.
    claim_gate: tokio::sync::RwLock<()>,
    /// Set when a claim or release failed: Redis may hold names this node
    /// no longer has.
    needs_reconcile: AtomicBool,
    /// Wakes the heartbeat (presence check) and the probe right after the
    /// subscriber (re)subscribed: recovery should not wait for a tick.
    recovered_presence: Notify,
    recovered_probe: Notify,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    snapshots: Snapshots,
}

/// Snapshots shared by concurrent callers, like a group commit.
///
/// The snapshot script reads every room's settings and count inside Redis
/// (it returns only the `limit` busiest, so the reply stays bounded) (about 0.3 ms at 200 rooms,
/// 4 ms at 2000), and every login and room move asks for one: during a
/// burst of logins, one script per login would make Redis the bottleneck.
/// Instead at most one snapshot script per node runs at a time, and a
/// caller takes the result of a script that *started after the caller
/// arrived*, so it sees every change completed before it asked (its own
/// join included), exactly as if it had run the script itself. Callers
/// that arrive while a script runs wait for it to finish and share the next
/// one. Without contention nothing changes: one script per call. Results
/// are never reused beyond that, so nothing is stale.
struct Snapshots {
    /// Scripts started so far (incremented under `last`'s lock, before the
    /// script is sent).
    started: AtomicU64,
    /// Held while a script runs; callers queue on it in FIFO order. The
    /// number of the last script and its result (errors too: waiters of a
    /// failed script get its error rather than each waiting out a timeout
    /// in turn).
    /// The number of the last script, the `limit` it listed and its result.
    #[allow(clippy::type_complexity)]
    last: tokio::sync::Mutex<Option<(u64, usize, BackplaneResult<Arc<ClusterSnapshot>>)>>,
}

/// Connects a node to Redis and starts its background tasks.
///
/// Returns once the node is ready, or after a few command timeouts if Redis
/// cannot be reached (the node then starts not ready and keeps trying).
/// Fails only on a configuration error (a URL that does not parse).
pub async fn connect(
    config: &Config,
    node_id: &str,
    delivery: Arc<dyn Delivery>,
) -> Result<Arc<dyn Backplane>, BackplaneError> {
    telemetry::describe();
    let settings = Settings {
        command_timeout: Duration::from_millis(config.redis.command_timeout_ms),
        heartbeat: Duration::from_secs(config.redis.heartbeat_secs),
        node_ttl: Duration::from_secs(config.redis.node_ttl_secs),
        probe_interval: Duration::from_millis(config.redis.probe_interval_ms),
        default_room: config.server.default_room.clone(),
        presence_notice_max_members: config.limits.presence_notice_max_members,
        history_max: config.history.max_messages,
        history_ttl_ms: config.history.ttl_secs.saturating_mul(1000),
    };
    let (commands, target) = if config.redis.cluster {
        let commands = cluster::builder(&config.redis, tcp_settings(), ProtocolVersion::RESP2)?
            .build()
            .map_err(|e| BackplaneError::Internal(format!("redis.url: {}", e.category())))?
            .get_pending_async_connection_with_config(cluster_config(settings.command_timeout));
        let target = subscriber::Target::Cluster(cluster::builder(
            &config.redis,
            tcp_settings(),
            ProtocolVersion::RESP3,
        )?);
        (Commands::Cluster(commands), target)
    } else {
        let info = connection_info(&config.redis)?;
        let pool = command_pool(&info, config.redis.pool_size, settings.command_timeout)?;
        let client = Client::open(with_protocol(&info, ProtocolVersion::RESP3))
            .map_err(|e| BackplaneError::Internal(format!("redis.url: {}", e.category())))?;
        (Commands::Single(pool), subscriber::Target::Single(client))
    };
    let keys = Keys::new(&config.redis.key_prefix);
    let health = Arc::new(Health::new(settings.probe_interval));
    let (subscriber, stray) = Subscriber::new(
        target,
        keys.clone(),
        node_id,
        Arc::clone(&delivery),
        Arc::clone(&health),
        settings.command_timeout,
        if settings.history_max > 0 {
            config.history.gap_buffer
        } else {
            0
        },
    )?;
    let inner = Arc::new(Inner {
        node_id: node_id.to_string(),
        token: random_token(),
        keys,
        settings,
        publish_command: commands.publish_command(),
        commands,
        subscriber,
        health,
        delivery,
        epoch: Mutex::new(None),
        claims: Mutex::new(HashSet::new()),
        claim_gate: tokio::sync::RwLock::new(()),
        // A previous process with the same node id may have left names.
        needs_reconcile: AtomicBool::new(true),
        recovered_presence: Notify::new(),
        recovered_probe: Notify::new(),
        cancel: CancellationToken::new(),
        tasks: Mutex::new(Vec::new()),
        snapshots: Snapshots {
            started: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
        },
    });
    // Events and probe channels.
    metrics::gauge!(telemetry::SUBSCRIPTIONS).increment(2.0);
    inner.spawn_tasks(stray);
    let started = Instant::now();
    let wait = inner.settings.command_timeout * STARTUP_WAIT_TIMEOUTS;
    while !inner.health.is_ready() && started.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if inner.health.is_ready() {
        tracing::info!(node = %inner.node_id, elapsed_ms = started.elapsed().as_millis() as u64, "connected to redis");
    } else {
        tracing::warn!(node = %inner.node_id, "redis not reachable yet; starting not ready and retrying in the background");
    }
    Ok(Arc::new(RedisBackplane { inner }))
}

/// Publishes a cluster-wide shutdown straight to Redis (the `swiftchat
/// shutdown` subcommand without `--url`): every node receives it on its
/// events channel and shuts down.
pub async fn publish_shutdown(config: &Config, reason: Option<String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.redis.url.is_empty(),
        "redis.url is not set: give --url and --key to shut down through a node's HTTP endpoint"
    );
    let timeout = Duration::from_millis(config.redis.command_timeout_ms);
    let keys = Keys::new(&config.redis.key_prefix);
    let payload = serde_json::to_string(&ClusterEvent::Shutdown { reason })?;
    let receivers: i64 = tokio::time::timeout(timeout * 2, async {
        if config.redis.cluster {
            let client = cluster::builder(&config.redis, tcp_settings(), ProtocolVersion::RESP2)?
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            let mut conn = client.get_async_connection().await?;
            return ::redis::cmd("SPUBLISH")
                .arg(keys.events_channel())
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(anyhow::Error::from);
        }
        let info = connection_info(&config.redis)?;
        let client = Client::open(with_protocol(&info, ProtocolVersion::RESP2))?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&connection_config(timeout))
            .await?;
        ::redis::cmd("PUBLISH")
            .arg(keys.events_channel())
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(anyhow::Error::from)
    })
    .await
    .map_err(|_| anyhow::anyhow!("redis did not answer within {} ms", timeout.as_millis() * 2))??;
    if receivers == 0 {
        tracing::warn!(
            prefix = %config.redis.key_prefix,
            "shutdown published, but no node is subscribed under this key prefix"
        );
    } else {
        tracing::info!(receivers, "shutdown published");
    }
    Ok(())
}

/// Parses `redis.url` and sets the socket options every connection gets:
/// TCP_NODELAY (redis-rs leaves Nagle on, which delays a small command
/// behind an unacknowledged one by up to the peer's delayed-ACK time, about
/// 40 ms on Linux: measured in the cluster tests) and, on Linux, a
/// TCP_USER_TIMEOUT so that a connection whose peer vanished without a
/// reset (network partition) fails instead of hanging, and is rebuilt.
fn connection_info(redis: &crate::config::RedisConfig) -> Result<ConnectionInfo, BackplaneError> {
    // rediss:// and redis.tls_ca_file (connect.rs); errors never quote the
    // URL, which may carry a password.
    let info = connect::parse_url(redis)?;
    Ok(info.set_tcp_settings(tcp_settings()))
}

fn tcp_settings() -> TcpSettings {
    let tcp = TcpSettings::default().set_nodelay(true);
    #[cfg(target_os = "linux")]
    let tcp = tcp.set_user_timeout(USER_TIMEOUT);
    tcp
}

/// Every wait of the cluster connection bounded, like the pool's.
fn cluster_config(timeout: Duration) -> ::redis::cluster::ClusterConfig {
    ::redis::cluster::ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
}

fn with_protocol(info: &ConnectionInfo, protocol: ProtocolVersion) -> ConnectionInfo {
    let redis = info.redis_settings().clone().set_protocol(protocol);
    info.clone().set_redis_settings(redis)
}

fn connection_config(timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}

/// The command pool: RESP2 (replies parse the same whatever the URL asks
/// for), and every wait bounded, or `get()` would wait forever while Redis is
/// down.
fn command_pool(
    info: &ConnectionInfo,
    size: usize,
    timeout: Duration,
) -> Result<CommandPool, BackplaneError> {
    let manager = Manager::new_with_config(
        with_protocol(info, ProtocolVersion::RESP2),
        connection_config(timeout),
    )
    .map_err(|e| BackplaneError::Internal(format!("redis.url: {}", e.category())))?;
    CommandPool::builder(CommandManager(manager))
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| BackplaneError::Internal(format!("redis pool: {e}")))
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Sorts a Redis error into "cannot reach Redis now" (the chat layer says
/// `unavailable`) and "Redis answered something unexpected".
pub(crate) fn classify(e: &RedisError) -> BackplaneError {
    use ::redis::{ErrorKind, ServerErrorKind};
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if unavailable {
        BackplaneError::Unavailable(format!("redis: {e}"))
    } else {
        BackplaneError::Internal(format!("redis: {e}"))
    }
}

fn classify_pool(e: PoolError) -> BackplaneError {
    match e {
        PoolError::Backend(e) => classify(&e),
        PoolError::Timeout(_) | PoolError::Closed => {
            BackplaneError::Unavailable("redis: no connection in time".into())
        }
        other => BackplaneError::Internal(format!("redis pool: {other}")),
    }
}

/// What [`Inner::run`] sends: a script, a plain command or a pipeline
/// (on a Redis Cluster, a pipeline's commands must share a slot).
pub(super) enum Call<'a> {
    Script(ScriptInvocation<'a>),
    Cmd(::redis::Cmd),
    Pipe(::redis::Pipeline),
}

impl Call<'_> {
    async fn send<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> Result<T, RedisError> {
        match self {
            Call::Script(invocation) => invocation.invoke_async(conn).await,
            Call::Cmd(cmd) => cmd.query_async(conn).await,
            Call::Pipe(pipe) => pipe.query_async(conn).await,
        }
    }
}

fn kind_label(e: &BackplaneError) -> &'static str {
    match e {
        BackplaneError::Unavailable(_) => "unavailable",
        BackplaneError::Internal(_) => "internal",
    }
}

fn cmd(name: &str) -> ::redis::Cmd {
    ::redis::cmd(name)
}

fn flag(value: bool) -> &'static str {
    if value {
        "1"
    } else {
        "0"
    }
}

#[async_trait]
impl scripts::Eval for Inner {
    async fn eval<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        call: ScriptInvocation<'static>,
    ) -> BackplaneResult<T> {
        self.run(op, Call::Script(call)).await
    }
}

impl Inner {
    /// Sends one call through the pool, bounded by the command timeout as a
    /// whole (waiting for a connection included), with metrics.
    async fn run<T: FromRedisValue>(&self, op: &'static str, call: Call<'_>) -> BackplaneResult<T> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.settings.command_timeout, self.commands.send(&call))
            .await
            .unwrap_or_else(|_| {
                Err(BackplaneError::Unavailable(
                    "redis did not answer in time".into(),
                ))
            });
        telemetry::command(op, started.elapsed());
        if let Err(e) = &result {
            telemetry::error(op, kind_label(e));
        }
        result
    }

    fn claims(&self) -> MutexGuard<'_, HashSet<String>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.node_ttl.as_millis() as u64
    }

    fn spawn_tasks(self: &Arc<Self>, stray: tokio::sync::mpsc::Receiver<String>) {
        let tasks = vec![
            tokio::spawn(Arc::clone(self).supervise(stray)),
            tokio::spawn(Arc::clone(self).presence_loop()),
            tokio::spawn(Arc::clone(self).probe_loop()),
        ];
        *self.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
    }

    /// Keeps the subscriber connected and subscribed: a PING every second
    /// (which also drives reconnection), a full resubscription after each
    /// disconnection, and UNSUBSCRIBE for stray rooms.
    async fn supervise(self: Arc<Self>, mut stray: tokio::sync::mpsc::Receiver<String>) {
        let mut next_tick = tokio::time::Instant::now();
        // Stray rooms whose UNSUBSCRIBE failed, retried every tick.
        let mut pending: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next_tick) => {
                    if self.check_subscriber().await {
                        self.retry_strays(&mut pending).await;
                    }
                    let wait = if self.subscriber.resync_due() { RESYNC_RETRY } else { SUPERVISOR_TICK };
                    next_tick = tokio::time::Instant::now() + wait;
                }
                Some(room) = stray.recv() => {
                    if !self.subscriber.drop_stray(&room).await && pending.len() < MAX_PENDING_STRAYS {
                        pending.insert(room);
                    }
                }
            }
        }
    }

    async fn retry_strays(&self, pending: &mut HashSet<String>) {
        let rooms: Vec<String> = pending.iter().cloned().collect();
        for room in rooms {
            if self.subscriber.drop_stray(&room).await {
                pending.remove(&room);
            }
        }
    }

    /// Returns whether the subscriber connection answered.
    async fn check_subscriber(&self) -> bool {
        if let Err(e) = self.subscriber.ping().await {
            tracing::debug!(error = %e, "redis subscriber ping failed");
            return false;
        }
        match self.subscriber.resync_if_needed().await {
            Ok(true) => {
                self.recovered_presence.notify_one();
                self.recovered_probe.notify_one();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, "redis resubscription failed; retrying");
                return true;
            }
        }
        // Resubscribed: what was published meanwhile comes from history
        // (also retries fills that failed at an earlier tick).
        self.fill_gaps().await;
        true
    }

    /// Publishes a probe to this node's own channel every probe interval;
    /// the subscriber's echo keeps the node ready (see `health.rs`).
    async fn probe_loop(self: Arc<Self>) {
        let channel = self.keys.probe_channel(&self.node_id);
        loop {
            let mut publish = cmd(self.publish_command.name());
            publish.arg(&channel).arg(self.health.probe_payload());
            let result = self.run::<i64>("probe", Call::Cmd(publish)).await;
            self.health.set_probe_failed(result.is_err());
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.settings.probe_interval) => {}
                _ = self.recovered_probe.notified() => {}
            }
        }
    }

    async fn publish(
        &self,
        op: &'static str,
        channel: &str,
        payload: &[u8],
    ) -> BackplaneResult<()> {
        let mut publish = cmd(self.publish_command.name());
        publish.arg(channel).arg(payload);
        self.run::<i64>(op, Call::Cmd(publish)).await.map(|_| ())
    }

    /// Brings a room's message state in line after a change in the control
    /// slot (the second of the two steps, see `keys.rs`).
    async fn room_data(&self, room: &str, action: RoomData, epoch: &str) -> BackplaneResult<bool> {
        scripts::room_data(self, &self.keys, room, action, epoch).await
    }
}

/// A new random epoch (a room's history, a recreated room's gate).
fn new_epoch() -> String {
    ulid::Ulid::new().to_string()
}

fn internal(what: &str) -> BackplaneError {
    BackplaneError::Internal(format!("unexpected reply from redis to {what}"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn claim_name(&self, user_key: &str, _display_name: &str) -> BackplaneResult<bool> {
        let inner = &self.inner;
        let gate = inner.claim_gate.read().await;
        if !inner.claims().insert(user_key.to_string()) {
            // Held by a connection of this node.
            return Ok(false);
        }
        let result = scripts::claim(
            &**inner,
            &inner.keys,
            &inner.node_id,
            user_key,
            inner.ttl_ms(),
        )
        .await;
        if !matches!(result, Ok((true, _))) {
            inner.claims().remove(user_key);
        }
        if result.is_err() {
            // The claim may have been applied before the answer was lost.
            inner.needs_reconcile.store(true, Ordering::Release);
        }
        drop(gate);
        let (claimed, notices) = result?;
        // The name was taken over from a dead node not reaped yet: its
        // room hears `left` (before this login's `joined`).
        inner.announce(&notices).await;
        Ok(claimed)
    }

    async fn release_name(
        &self,
        user_key: &str,
        room: Option<&str>,
    ) -> BackplaneResult<Option<u64>> {
        let inner = &self.inner;
        inner.claims().remove(user_key);
        scripts::release(&**inner, &inner.keys, &inner.node_id, user_key, room)
            .await
            .inspect_err(|_| inner.needs_reconcile.store(true, Ordering::Release))
    }

    /// `login.lua`: claim and join in one script (see `join_room` for the
    /// `seq`); the claim is recorded like [`Backplane::claim_name`]'s.
    async fn login(&self, request: JoinRequest<'_>) -> BackplaneResult<Option<JoinOutcome>> {
        let inner = &self.inner;
        let gate = inner.claim_gate.read().await;
        if !inner.claims().insert(request.user_key.to_string()) {
            // Held by a connection of this node.
            return Ok(None);
        }
        let floor = inner.subscriber.seq_floor(request.room);
        let result = scripts::login(
            &**inner,
            &inner.keys,
            &inner.node_id,
            &request,
            &new_epoch(),
            inner.ttl_ms(),
        )
        .await;
        if !matches!(
            result,
            Ok(scripts::LoggedIn {
                outcome: Some(JoinOutcome::Joined { .. }),
                ..
            })
        ) {
            inner.claims().remove(request.user_key);
        }
        if result.is_err() {
            // The claim may have been applied before the answer was lost.
            inner.needs_reconcile.store(true, Ordering::Release);
        }
        drop(gate);
        let logged_in = result?;
        // A dead node's user taken over: its room hears `left` first.
        inner.announce(&logged_in.notices).await;
        Ok(match logged_in.outcome {
            Some(JoinOutcome::Joined {
                created,
                members,
                previous_members,
                ..
            }) => {
                if created {
                    inner
                        .room_data(request.room, RoomData::Create, &logged_in.epoch)
                        .await?;
                }
                Some(JoinOutcome::Joined {
                    created,
                    members,
                    previous_members,
                    seq: if created { 0 } else { floor },
                })
            }
            other => other,
        })
    }

    /// The join script (control slot), then for a created room its gate
    /// (message slot). The `seq` the membership began at is the highest
    /// this node relayed in the room *before* the script: the room is
    /// subscribed already, so every message after it is either relayed
    /// before the entrant's local routing exists (and replayed to it by the
    /// registry) or after. Reading the room's counter instead would take a
    /// round trip to another slot.
    async fn join_room(&self, request: JoinRequest<'_>) -> BackplaneResult<JoinOutcome> {
        let inner = &self.inner;
        let floor = inner.subscriber.seq_floor(request.room);
        let (outcome, epoch) = scripts::join(
            &**inner,
            &inner.keys,
            &inner.node_id,
            &request,
            &new_epoch(),
        )
        .await?;
        Ok(match outcome {
            JoinOutcome::Joined {
                created,
                members,
                previous_members,
                ..
            } => {
                if created {
                    inner
                        .room_data(request.room, RoomData::Create, &epoch)
                        .await?;
                }
                JoinOutcome::Joined {
                    created,
                    members,
                    previous_members,
                    seq: if created { 0 } else { floor },
                }
            }
            other => other,
        })
    }

    async fn room(&self, room: &str) -> BackplaneResult<Option<RoomInfo>> {
        let mut get = cmd("HMGET");
        get.arg(self.inner.keys.room(room))
            .arg("owner")
            .arg("locked")
            .arg("closed");
        let [owner, locked, closed] = self
            .inner
            .run::<[Option<String>; 3]>("room", Call::Cmd(get))
            .await?;
        // Every room hash has an owner field (empty for none).
        Ok(owner.map(|owner| RoomInfo {
            name: room.to_string(),
            owner: (!owner.is_empty()).then_some(owner),
            locked: locked.as_deref() == Some("1"),
            closed: closed.as_deref() == Some("1"),
        }))
    }

    async fn change_room(&self, room: &str, change: RoomChange) -> BackplaneResult<bool> {
        let inner = &self.inner;
        let Some(epoch) = scripts::change_room(&**inner, &inner.keys, room, &change).await? else {
            return Ok(false);
        };
        if let Some(action) = RoomData::after(&change) {
            inner.room_data(room, action, &epoch).await?;
        }
        Ok(true)
    }

    async fn set_ban(&self, room: &str, user_key: &str, banned: bool) -> BackplaneResult<bool> {
        let inner = &self.inner;
        scripts::set_ban(&**inner, &inner.keys, room, user_key, banned).await
    }

    async fn room_members(&self, room: &str, limit: usize) -> BackplaneResult<RoomMembers> {
        let inner = &self.inner;
        scripts::room_members(&**inner, &inner.keys, room, limit).await
    }

    async fn is_member(&self, room: &str, user_key: &str) -> BackplaneResult<bool> {
        let mut hexists = cmd("HEXISTS");
        hexists.arg(self.inner.keys.members(room)).arg(user_key);
        self.inner
            .run::<bool>("is_member", Call::Cmd(hexists))
            .await
    }

    /// See [`Snapshots`].
    async fn snapshot(&self, limit: usize) -> BackplaneResult<ClusterSnapshot> {
        let inner = &self.inner;
        let arrived = inner.snapshots.started.load(Ordering::Acquire);
        let mut last = inner.snapshots.last.lock().await;
        if let Some((number, shared_limit, result)) = &*last {
            // A script that listed at least as many rooms serves this call.
            if *number > arrived && *shared_limit >= limit {
                metrics::counter!(telemetry::SNAPSHOTS_SHARED).increment(1);
                return result
                    .as_deref()
                    .cloned()
                    .map(|mut snapshot| {
                        // Same limit: keep the default room listed beyond it.
                        if *shared_limit > limit {
                            snapshot.rooms.truncate(limit);
                        }
                        snapshot
                    })
                    .map_err(Clone::clone);
            }
        }
        let number = inner.snapshots.started.fetch_add(1, Ordering::AcqRel) + 1;
        let result = scripts::snapshot(&**inner, &inner.keys, limit, &inner.settings.default_room)
            .await
            .map(Arc::new);
        let snapshot = result.as_deref().cloned().map_err(Clone::clone);
        *last = Some((number, limit, result));
        snapshot
    }

    async fn expire_empty_rooms(
        &self,
        default_room: &str,
        ttl: Duration,
        limit: usize,
    ) -> BackplaneResult<Vec<String>> {
        let inner = &self.inner;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let expired =
            scripts::expire_rooms(&**inner, &inner.keys, default_room, ttl_ms, limit).await?;
        let mut rooms = Vec::with_capacity(expired.len());
        for (room, epoch) in expired {
            // Deleted in the control slot already: its message state goes
            // now, or with the history's expiry if Redis is away.
            if let Err(e) = inner.room_data(&room, RoomData::Delete, &epoch).await {
                tracing::debug!(room = %room, error = %e, "expired room's messages not dropped");
            }
            rooms.push(room);
        }
        Ok(rooms)
    }

    async fn publish_message(&self, draft: &MessageDraft) -> BackplaneResult<Option<u64>> {
        let inner = &self.inner;
        let floor = inner.subscriber.seq_floor(&draft.room);
        let history = scripts::HistoryLimits {
            max_messages: inner.settings.history_max,
            ttl_ms: inner.settings.history_ttl_ms,
        };
        scripts::publish_message(
            &**inner,
            &inner.keys,
            draft,
            floor,
            history,
            inner.publish_command,
        )
        .await
    }

    async fn history(
        &self,
        room: &str,
        query: &HistoryQuery<'_>,
    ) -> BackplaneResult<HistoryOutcome> {
        let inner = &self.inner;
        if let Some(member) = query.member {
            if !self.is_member(room, member).await? {
                return Ok(HistoryOutcome::NotMember);
            }
        }
        scripts::read_history(&**inner, &inner.keys, room, query).await
    }

    async fn publish_to_room(&self, room: &str, frame: Bytes) -> BackplaneResult<()> {
        let channel = self.inner.keys.room_channel(room);
        self.inner
            .publish("publish_to_room", &channel, &frame)
            .await
    }

    async fn publish_event(&self, event: &ClusterEvent) -> BackplaneResult<()> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| BackplaneError::Internal(format!("event does not serialize: {e}")))?;
        let channel = self.inner.keys.events_channel();
        self.inner.publish("publish_event", channel, &payload).await
    }

    async fn subscribe(&self, room: &str) -> BackplaneResult<()> {
        self.inner.subscriber.acquire_room(room).await
    }

    fn unsubscribe(&self, room: &str) {
        self.inner.subscriber.release_room(room)
    }

    async fn report_node_stats(&self, stats: &NodeStats) -> BackplaneResult<()> {
        nodes::report(&self.inner, stats).await
    }

    async fn cluster_nodes(&self) -> BackplaneResult<Vec<NodeStats>> {
        nodes::list(&self.inner).await
    }

    fn is_ready(&self) -> bool {
        self.inner.health.is_ready()
    }

    async fn close(&self) {
        let inner = &self.inner;
        if inner.health.is_closed() {
            return;
        }
        inner.health.set_closed();
        inner.cancel.cancel();
        // Stop a heartbeat in flight from re-adding the node after the reap.
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        let rooms = inner.subscriber.wanted_rooms();
        metrics::gauge!(telemetry::SUBSCRIPTIONS).decrement(2.0 + rooms as f64);
        // No deadline over the whole reap (issue 9, 5c: one shorter than the
        // reap needed cut it off silently): each batch is bounded by the
        // command timeout and removes up to `REAP_BATCH` users, and the
        // batches by `REAP_ROUNDS`, so the reap takes time in proportion to
        // the node's users and stops at the first batch Redis does not
        // answer in time.
        match inner.reap_node(&inner.node_id, false).await {
            Ok(true) => tracing::info!(node = %inner.node_id, "presence released in redis"),
            Ok(false) => tracing::warn!("releasing presence in redis stopped after its last round"),
            Err(e) => tracing::warn!(error = %e, "could not release presence in redis"),
        }
        // The admin API lists the node until this (or the key's expiry).
        let _ = nodes::forget(inner).await;
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        // The tasks hold `Inner`; without this they would outlive the node.
        self.inner.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_urls_do_not_echo_the_url() {
        let redis = crate::config::RedisConfig {
            url: "nonsense://user:secret@host".into(),
            ..Default::default()
        };
        let Err(e) = connection_info(&redis) else {
            panic!("accepted");
        };
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}

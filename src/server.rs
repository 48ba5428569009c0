//! Starting and stopping a node.
//!
//! Shutdown is one [`Shutdown`] token: SIGTERM/SIGINT (drain, clients told
//! to reconnect elsewhere) or a cluster-wide shutdown event (clients told
//! the cluster is gone). Every connection task watches the token and is
//! tracked by a [`TaskTracker`]; the node waits for them up to
//! `server.drain_secs`, then releases its presence and returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::memory::MemoryBackplane;
use crate::backplane::SharedBackplane;
use crate::chat::Chat;
use crate::config::Config;
use crate::net::http::{router, AppState, EdgeState};
use crate::registry::Registry;
use crate::shutdown::Shutdown;

/// A running node.
pub struct NodeHandle {
    addr: SocketAddr,
    node_id: String,
    shutdown: Arc<Shutdown>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl NodeHandle {
    /// The address the node listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Drains this node only, as on SIGTERM: its clients get SHUTDOWN with
    /// `reconnect: true` and close 1001; the rest of the cluster goes on.
    pub fn drain(&self) {
        self.shutdown.trigger(None, true);
    }

    /// Whether the node has begun to stop (drain or cluster shutdown).
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Resolves when the node begins to stop, whoever triggered it.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.shutdown.token().clone().cancelled_owned()
    }

    /// Waits until the node has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("node task panicked")?
    }
}

/// Binds, connects the backplane and starts serving.
pub async fn start(config: Config) -> anyhow::Result<NodeHandle> {
    config.validate()?;
    crate::metrics::handle();
    let config = Arc::new(config);
    let node_id = node_id(&config);
    let shutdown = Arc::new(Shutdown::new());
    let mut registry = Registry::new(shutdown.clone(), config.limits.outbound_queue);
    if let Some(every) = config.presence_delay() {
        registry = registry.defer_presence(every);
    }
    let backplane: SharedBackplane = if config.redis.url.is_empty() {
        MemoryBackplane::with_history(
            &config.server.default_room,
            &config.history,
            registry.clone(),
        )
    } else {
        let backplane = crate::backplane::redis::connect(&config, &node_id, registry.clone())
            .await
            .context("connecting to Redis")?;
        crate::backplane::redis::connect::warn_if_evicting(&config.redis).await;
        backplane
    };
    let listener = TcpListener::bind(config.server.bind)
        .await
        .with_context(|| format!("binding {}", config.server.bind))?;
    let addr = listener.local_addr()?;
    let mode = if config.redis.url.is_empty() {
        "standalone"
    } else {
        "cluster"
    };
    tracing::info!(node_id, mode, "listening on {addr}");

    let chat = Chat::new(config.clone(), backplane, registry, shutdown.clone());
    let tracker = TaskTracker::new();
    let app = router(AppState {
        chat: chat.clone(),
        tracker: tracker.clone(),
        edge: EdgeState::new(&config)?,
    });
    crate::net::admin::start(&chat, &node_id, addr, &tracker);
    crate::chat::expiry::start(&chat);
    let task = tokio::spawn(run(listener, app, chat, tracker));
    Ok(NodeHandle {
        addr,
        node_id,
        shutdown,
        task,
    })
}

async fn run(
    listener: TcpListener,
    app: axum::Router,
    chat: Arc<Chat>,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let stopping = chat.shutdown.token().clone();
    // HTTP stops only after the WebSockets have drained: meanwhile /readyz
    // answers 503 (the load balancer stops sending clients) instead of
    // refusing connections, new upgrades get 503, and an upgrade whose 101
    // was already sent completes and is told to go (SHUTDOWN, then 1001)
    // rather than being cut by hyper's graceful shutdown.
    let http_stopping = CancellationToken::new();
    let grace = Duration::from_millis(chat.config.limits.close_grace_ms);
    let http = tokio::spawn(crate::net::edge::serve(
        listener,
        app,
        chat.config.limits.clone(),
        http_stopping.clone(),
        grace,
    ));
    stopping.cancelled().await;
    let reconnect = chat.shutdown.notice().is_some_and(|n| n.reconnect);
    tracing::info!(
        connections = chat.registry.connection_count(),
        reconnect,
        "stopping"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(chat.config.server.drain_secs);
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = chat.registry.connection_count(),
            "drain deadline passed with connections still open"
        );
    }
    // Plain HTTP requests in flight get `close_grace_ms` to finish.
    http_stopping.cancel();
    let http_abort = http.abort_handle();
    if tokio::time::timeout(grace * 2, http).await.is_err() {
        http_abort.abort();
    }
    // Whatever presence the sessions could not release, release it now
    // (bounded by the backplane itself: see `Backplane::close`).
    chat.backplane.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `server.node_id`, or hostname and process id. A second node in the same
/// process (tests) gets a numeric suffix so ids stay unique.
fn node_id(config: &Config) -> String {
    static NODES_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);
    if !config.server.node_id.is_empty() {
        return config.server.node_id.clone();
    }
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into());
    let base = format!("{host}-{}", std::process::id());
    match NODES_IN_PROCESS.fetch_add(1, Ordering::Relaxed) {
        0 => base,
        n => format!("{base}-{}", n + 1),
    }
}

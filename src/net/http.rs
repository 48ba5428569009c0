//! HTTP on the WebSocket's port: the web client, health, readiness, metrics,
//! the admin shutdown, and the WebSocket upgrade on `/` and `/ws`.
//!
//! The upgrade is done by hand with tungstenite's handshake helpers (axum's
//! `ws` feature would pull a second tungstenite), and every upgraded socket
//! is spawned on the node's [`TaskTracker`]: axum stops tracking a connection
//! once it is upgraded, so the tracker is what lets shutdown wait for them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::server::create_response_with_body;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use crate::auth::KeyCheck;
use crate::backplane::ClusterEvent;
use crate::chat::Chat;
use crate::metrics as m;
use crate::net::edge::{client_ip, parse_cidrs, Cidr, PeerAddr, PerIpLimiter};

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_CSS: &str = include_str!("../../static/app.css");
const APP_JS: &str = include_str!("../../static/app.js");

#[derive(Clone)]
pub struct AppState {
    pub chat: Arc<Chat>,
    pub tracker: TaskTracker,
    pub(crate) edge: Arc<EdgeState>,
}

/// What the upgrade needs to know about the client's address.
pub(crate) struct EdgeState {
    pub trusted_proxies: Vec<Cidr>,
    pub per_ip: Arc<PerIpLimiter>,
}

impl EdgeState {
    pub(crate) fn new(config: &crate::config::Config) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            trusted_proxies: parse_cidrs(&config.server.trusted_proxies)
                .map_err(anyhow::Error::msg)?,
            per_ip: PerIpLimiter::new(config.limits.connections_per_ip),
        }))
    }

    /// The client's address of a request (X-Forwarded-For only from a
    /// trusted proxy).
    pub(crate) fn client_ip(&self, request: &Request) -> IpAddr {
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        client_ip(peer, request.headers(), &self.trusted_proxies)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index_or_upgrade))
        .route("/ws", get(upgrade))
        .route(
            "/app.css",
            get(|| async { static_file("text/css", APP_CSS) }),
        )
        .route(
            "/app.js",
            get(|| async { static_file("text/javascript", APP_JS) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/shutdown", post(admin_shutdown))
        .merge(crate::net::admin::routes())
        .with_state(state)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index_or_upgrade(state: State<AppState>, request: Request) -> Response {
    let wants_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_upgrade {
        upgrade(state, request).await
    } else {
        static_file("text/html; charset=utf-8", INDEX_HTML)
    }
}

async fn upgrade(State(state): State<AppState>, mut request: Request) -> Response {
    let chat = &state.chat;
    if chat.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // Validates the upgrade headers and builds the 101 response.
    let response = match create_response_with_body(&request, Body::empty) {
        Ok(response) => response,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let peer = state.edge.client_ip(&request);
    let Some(ip_slot) = state.edge.per_ip.acquire(peer) else {
        metrics::counter!(m::CONNECTIONS_REJECTED, "reason" => "per_ip").increment(1);
        tracing::info!(%peer, "refused an upgrade: limits.connections_per_ip reached");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address\n",
        )
            .into_response();
    };
    let Some(slot) = chat
        .registry
        .open_connection(chat.config.limits.max_connections)
    else {
        metrics::counter!(m::CONNECTIONS_REJECTED, "reason" => "max_connections").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let ws_config = websocket_config(&chat.config);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let chat = chat.clone();
    state.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    crate::net::connection::ReleasingWriter::new(
                        TokioIo::new(upgraded),
                        &chat.config.websocket,
                    ),
                    Role::Server,
                    Some(ws_config),
                )
                .await;
                crate::net::connection::serve(chat, ws, slot, peer).await;
                drop(ip_slot);
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    response.into_response()
}

fn websocket_config(config: &crate::config::Config) -> WebSocketConfig {
    let ws = &config.websocket;
    let max = config.limits.max_frame_bytes;
    WebSocketConfig::default()
        .read_buffer_size(ws.read_buffer_bytes)
        // Frames pass straight to ReleasingWriter, which coalesces up to
        // write_buffer_bytes and frees its buffer when a flush empties it.
        .write_buffer_size(0)
        .max_write_buffer_size(ws.max_write_buffer_bytes)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let chat = &state.chat;
    if chat.shutdown.is_triggered() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !chat.backplane.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "backplane unavailable\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ShutdownBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn admin_shutdown(State(state): State<AppState>, request: Request) -> Response {
    let chat = &state.chat;
    let peer = state.edge.client_ip(&request);
    let (parts, body) = request.into_parts();
    // The body is a short JSON object: read at most 64 KiB of it.
    let body = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response(),
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let backoff = std::time::Duration::from_millis(chat.config.limits.shutdown_key_backoff_ms);
    let check = chat
        .shutdown
        .key_guard
        .check(
            &chat.config.admin.shutdown_key,
            presented,
            backoff,
            "http",
            peer,
        )
        .await;
    if check != KeyCheck::Accepted {
        tracing::warn!(actor = "http", %peer, "refused POST /admin/shutdown: missing or wrong key");
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<ShutdownBody>(&body) {
            Ok(parsed) => parsed.reason,
            Err(error) => {
                return (StatusCode::BAD_REQUEST, format!("bad body: {error}\n")).into_response()
            }
        }
    };
    tracing::info!(actor = "http", %peer, "cluster-wide shutdown requested over HTTP");
    match chat
        .backplane
        .publish_event(&ClusterEvent::Shutdown { reason })
        .await
    {
        Ok(()) => (StatusCode::ACCEPTED, "shutting down\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "could not publish the shutdown");
            (StatusCode::SERVICE_UNAVAILABLE, "backplane unavailable\n").into_response()
        }
    }
}

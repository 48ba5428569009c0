//! The operator's view (issue 14): `GET /admin` (a page embedded like the
//! web client), `GET /admin/api/cluster` and `POST /admin/nodes/{id}/drain`,
//! both authorized by an admin JWT (`Authorization: Bearer`, claim
//! `admin: true`).
//!
//! Every node answers the same: the node list is what the nodes report
//! through the backplane at each heartbeat ([`spawn_stats_reporter`]), the
//! rooms come from the backplane's snapshot. A drain is a
//! [`ClusterEvent::Drain`] that only the named node acts on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::backplane::{BackplaneError, ClusterEvent, NodeStats};
use crate::chat::Chat;
use crate::net::http::AppState;

const ADMIN_HTML: &str = include_str!("../../static/admin.html");
const ADMIN_CSS: &str = include_str!("../../static/admin.css");
const ADMIN_JS: &str = include_str!("../../static/admin.js");

/// Room owners looked up at once for one answer (one backplane read each).
const OWNER_LOOKUPS_IN_FLIGHT: usize = 8;

/// The admin routes, merged into the node's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin_page))
        .route(
            "/admin/admin.css",
            get(|| async { page("text/css", ADMIN_CSS) }),
        )
        .route(
            "/admin/admin.js",
            get(|| async { page("text/javascript", ADMIN_JS) }),
        )
        .route("/admin/api/cluster", get(cluster))
        .route("/admin/nodes/{node_id}/drain", post(drain))
}

/// The page holds an admin token: it runs only its own script, talks only
/// to its own origin and cannot be framed.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

async fn admin_page() -> Response {
    let mut response = page("text/html; charset=utf-8", ADMIN_HTML);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page never needs to be framed; keeps the buttons from being
            // clickjacked.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// Why a request was refused; the body never echoes the token.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `Ok` for a valid admin token, else why it was refused (sent with 401).
fn authorize(chat: &Chat, headers: &HeaderMap) -> Result<(), &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err("admin token required");
    }
    match TokenVerifier::new(&chat.config.auth.jwt_secret).grant(token) {
        Ok(grant) if grant.admin => Ok(()),
        Ok(_) => Err("not an admin token"),
        Err(e) => {
            tracing::debug!(error = %e, "admin API: token refused");
            Err("invalid token")
        }
    }
}

fn unavailable(e: BackplaneError) -> Response {
    tracing::warn!(error = %e, "admin API: backplane read failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "backplane unavailable")
}

#[derive(Debug, Serialize)]
struct ClusterView {
    /// Unix milliseconds when this answer was built.
    generated_ms: u64,
    nodes: Vec<NodeStats>,
    /// The busiest rooms (most users first, then by name), at most
    /// `limits.max_listed_rooms`; `totals.rooms` counts them all.
    rooms: Vec<RoomView>,
    totals: Totals,
}

#[derive(Debug, Serialize)]
struct RoomView {
    name: String,
    users: u64,
    locked: bool,
    closed: bool,
    /// Lower-case name of the owner (in open mode, of the connection that
    /// created the room, which owns it only while it lasts); `null` for the
    /// default room (and for a room deleted while the answer was built).
    owner: Option<String>,
}

#[derive(Debug, Serialize)]
struct Totals {
    nodes: usize,
    connections: u64,
    logged_in: u64,
    rooms: u64,
    messages_in_per_sec: f64,
    messages_out_per_sec: f64,
}

async fn cluster(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let chat = &state.chat;
    if let Err(why) = authorize(chat, &headers) {
        return error(StatusCode::UNAUTHORIZED, why);
    }
    let nodes = match chat.backplane.cluster_nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return unavailable(e),
    };
    // Each listed room costs one backplane read for its owner.
    let snapshot = match chat
        .backplane
        .snapshot(chat.config.limits.max_listed_rooms)
        .await
    {
        Ok(snapshot) => snapshot,
        Err(e) => return unavailable(e),
    };
    let room_count = snapshot.rooms_total;
    let mut busiest = snapshot.rooms;
    // The snapshot may add the default room beyond the limit.
    busiest.truncate(chat.config.limits.max_listed_rooms);
    let names: Vec<String> = busiest.iter().map(|r| r.name.clone()).collect();
    let owners: Vec<Option<String>> = futures_util::stream::iter(names)
        .map(|name| {
            let backplane = chat.backplane.clone();
            async move {
                backplane
                    .room(&name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|info| info.owner)
                    .map(|id| crate::chat::ownership::owner_name(&id).to_string())
            }
        })
        .buffered(OWNER_LOOKUPS_IN_FLIGHT)
        .collect()
        .await;
    let rooms = busiest
        .into_iter()
        .zip(owners)
        .map(|(room, owner)| RoomView {
            name: room.name,
            users: room.users,
            locked: room.locked,
            closed: room.closed,
            owner,
        })
        .collect();
    let totals = Totals {
        nodes: nodes.len(),
        connections: nodes.iter().map(|n| n.connections).sum(),
        logged_in: snapshot.users,
        rooms: room_count,
        messages_in_per_sec: nodes.iter().map(|n| n.messages_in_per_sec).sum(),
        messages_out_per_sec: nodes.iter().map(|n| n.messages_out_per_sec).sum(),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(ClusterView {
            generated_ms: unix_ms(),
            nodes,
            rooms,
            totals,
        }),
    )
        .into_response()
}

async fn drain(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let chat = &state.chat;
    if let Err(why) = authorize(chat, &headers) {
        return error(StatusCode::UNAUTHORIZED, why);
    }
    let known = match chat.backplane.cluster_nodes().await {
        Ok(nodes) => nodes.iter().any(|n| n.id == node_id),
        Err(e) => return unavailable(e),
    };
    if !known {
        return error(StatusCode::NOT_FOUND, "no such node");
    }
    tracing::info!(node = %node_id, "drain requested over HTTP");
    match chat
        .backplane
        .publish_event(&ClusterEvent::Drain { node_id })
        .await
    {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "draining": true })),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// Makes this node answer [`ClusterEvent::Drain`] for `node_id` and starts
/// the task that reports its stats every `redis.heartbeat_secs` (also in
/// standalone mode). The task is on `tracker`, so the node's stop waits for
/// its last report (`draining`), which keeps it from landing after the
/// backplane removed the node's stats.
pub(crate) fn start(chat: &Arc<Chat>, node_id: &str, addr: SocketAddr, tracker: &TaskTracker) {
    chat.registry.set_node_id(node_id);
    tracker.spawn(report_stats(
        chat.clone(),
        node_id.to_string(),
        address(addr),
    ));
}

async fn report_stats(chat: Arc<Chat>, node_id: String, address: String) {
    let interval = Duration::from_secs(chat.config.redis.heartbeat_secs);
    let started_ms = unix_ms();
    let mut last = (Instant::now(), chat.registry.traffic());
    let stopping = chat.shutdown.token().clone();
    loop {
        let now = Instant::now();
        let traffic = chat.registry.traffic();
        let secs = now.duration_since(last.0).as_secs_f64();
        let rate = |now: u64, before: u64| {
            if secs > 0.0 {
                now.saturating_sub(before) as f64 / secs
            } else {
                0.0
            }
        };
        let draining = stopping.is_cancelled();
        let state = if draining {
            "draining"
        } else if chat.backplane.is_ready() {
            "ready"
        } else {
            "not_ready"
        };
        let stats = NodeStats {
            id: node_id.clone(),
            address: address.clone(),
            started_ms,
            ready: state == "ready",
            state: state.into(),
            connections: chat.registry.connection_count() as u64,
            logged_in: chat.registry.logged_in_count() as u64,
            messages_in_per_sec: rate(traffic.0, last.1 .0),
            messages_out_per_sec: rate(traffic.1, last.1 .1),
            last_heartbeat_ms: unix_ms(),
        };
        last = (now, traffic);
        if let Err(e) = chat.backplane.report_node_stats(&stats).await {
            tracing::debug!(error = %e, "could not report node stats");
        }
        if draining {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.cancelled() => {}
        }
    }
}

/// The listening address as others can read it: the host name instead of
/// an unspecified address (`0.0.0.0`).
fn address(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| addr.ip().to_string());
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

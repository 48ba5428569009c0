//! Configuration (`../shared/OPERATIONS.md`): built-in defaults < TOML file <
//! `SWIFTCHAT_<SECTION>__<KEY>` environment variables < command-line flags.
//!
//! Every struct denies unknown fields, so a typo stops the node with a message
//! naming the key instead of being silently ignored.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Upper bound of `limits.presence_delay_ms`.
const MAX_PRESENCE_DELAY_MS: u64 = 5_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub public: PublicConfig,
    pub redis: RedisConfig,
    pub history: HistoryConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for HTTP and WebSocket on one port.
    pub bind: SocketAddr,
    /// Name of this node in logs, metrics and Redis keys. Empty: hostname
    /// and process id, unique per process.
    #[serde(deserialize_with = "string_or_number")]
    pub node_id: String,
    /// Room every user starts in and returns to; it cannot be locked, closed
    /// or deleted.
    pub default_room: String,
    /// Prefix that turns a message into a command.
    #[serde(deserialize_with = "string_or_number")]
    pub command_prefix: String,
    /// How long a draining node waits for its clients to close before it
    /// exits anyway. Larger is gentler to slow clients; smaller restarts
    /// faster. Keep the orchestrator's stop grace period above it.
    pub drain_secs: u64,
    /// CIDRs (or single addresses) of the load balancers whose
    /// X-Forwarded-For names the client's address; from anyone else the
    /// header is ignored (a client could write any address into it). The
    /// address counts for `limits.connections_per_ip` and security logs.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:8765".parse().expect("valid default address"),
            node_id: String::new(),
            default_room: "general".into(),
            command_prefix: "\\".into(),
            drain_secs: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

/// What CACHE_UPDATE advertises: the address clients should connect to (in a
/// cluster, the load balancer's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublicConfig {
    #[serde(deserialize_with = "string_or_number")]
    pub host: String,
    pub port: u16,
}

impl Default for PublicConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 8765,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Empty: a standalone node with in-memory state.
    #[serde(deserialize_with = "string_or_number")]
    pub url: String,
    /// `true`: `url` lists seed nodes (comma-separated) of a Redis Cluster
    /// (7.0+); room channels use sharded pub/sub (SSUBSCRIBE/SPUBLISH) so a
    /// room's traffic stays on the shard that owns its slot. `false`: one
    /// Redis (or a primary behind a proxy). Cluster mode spreads message
    /// load over shards and survives a primary's failover, at the cost of
    /// one connection per shard per node and a topology refresh after
    /// failovers and slot migrations (see docs/deployment.md).
    pub cluster: bool,
    /// PEM file of the CA that signed Redis's certificate, for `rediss://`
    /// URLs; empty: the system's roots (the runtime image carries them).
    /// The URL's host must match the certificate.
    pub tls_ca_file: String,
    /// Every key and channel starts with this, so clusters can share a Redis.
    #[serde(deserialize_with = "string_or_number")]
    pub key_prefix: String,
    /// Connections in the command pool. More allows more commands in flight
    /// when Redis is slow; each is one socket on Redis.
    pub pool_size: usize,
    /// Longest wait for one Redis command (and for a pooled connection).
    /// Shorter reports an outage sooner; too short fails under load spikes.
    pub command_timeout_ms: u64,
    /// How often a node renews its presence in Redis and, right after, looks
    /// for dead nodes to reap (see `node_ttl_secs`). Each renewal is one
    /// small script per node, each reaper round one more; the reaper round
    /// is also when a dead node's users leave the counts, so this adds up to
    /// one interval to `node_ttl_secs` before they do.
    pub heartbeat_secs: u64,
    /// How long a node's presence lives without renewal; must be greater
    /// than `heartbeat_secs` (keep it at least three heartbeats, so one slow
    /// renewal is not taken for a death).
    ///
    /// When a node dies without warning (kill -9), its users' names are free
    /// again `node_ttl_secs` after its last renewal (a login then takes the
    /// name over); until then a login with one of those names gets
    /// `name_taken`, which counts toward `limits.login_attempts`. Its users
    /// leave the counts, with `left` to their rooms, at the next reaper round
    /// of any surviving node: at most `node_ttl_secs + heartbeat_secs` after
    /// the death (15-20 s with the defaults; PROTOCOL.md promises 30 s).
    ///
    /// The trade-off: a shorter ttl (and heartbeat) frees a dead node's
    /// names and counts sooner, but costs more Redis writes (every node
    /// renews and reaps more often), and makes it likelier that a node which
    /// is alive but stalled (paused VM, overloaded host, slow or cut link to
    /// Redis) for longer than the ttl is reaped: its users then get `left`
    /// and leave the counts, their names can be taken by new logins, and at
    /// its next renewal it registers them again (with `joined`), except a
    /// name taken meanwhile, which stays with its new holder.
    ///
    /// Use the same values on every node: a node judges the others with its
    /// own ttl, so a node whose heartbeat is longer than another node's ttl
    /// is reaped and re-registered over and over.
    pub node_ttl_secs: u64,
    /// How often a node checks that its own subscription still delivers
    /// (a message sent to itself); /readyz fails when the probe is lost.
    pub probe_interval_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster: false,
            tls_ca_file: String::new(),
            key_prefix: "swiftchat".into(),
            pool_size: 8,
            command_timeout_ms: 1000,
            heartbeat_secs: 5,
            node_ttl_secs: 15,
            probe_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Pick a free name; a token is only needed for admin rights.
    #[default]
    Open,
    /// A valid JWT is required to log in.
    Token,
}

/// A room's latest messages, kept for HISTORY_REQUEST and for filling the
/// gap after a node's subscription was interrupted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Messages kept per room; 0 turns history off (HISTORY answers hold no
    /// messages, and nothing fills a node's gap). More keeps a longer
    /// reconnect window at the cost of memory: each message is stored once
    /// per room, as the frame clients receive (in Redis: one stream entry).
    pub max_messages: usize,
    /// A room's history expires this long after its last message. Shorter
    /// frees idle rooms' memory sooner; a client that comes back later gets
    /// `complete: false`. 0: never expires (still capped by `max_messages`).
    pub ttl_secs: u64,
    /// Most messages in one HISTORY answer (the default and the maximum of
    /// `limit`). Larger pages mean fewer round trips for a reconnecting
    /// client, but bigger frames: keep a page of long messages well under
    /// the client's frame limit and `limits.outbound_queue`.
    pub page_size: usize,
    /// Most bytes of messages in one HISTORY answer: a page of long
    /// messages ends earlier (it always holds at least one). Bounds what a
    /// client's requests can put in its outgoing queue; larger pages mean
    /// fewer round trips for rooms with long messages.
    pub max_page_bytes: usize,
    /// Frames of one room held back while the node fills that room's gap
    /// from history after an interruption of its subscription. Beyond it
    /// the newest frames are dropped from the buffer and their messages are
    /// read from history instead (joined/left notices among them are lost).
    pub gap_buffer: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_messages: 200,
            ttl_secs: 86400,
            page_size: 100,
            max_page_bytes: 65536,
            gap_buffer: 1024,
        }
    }
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// HS256 secret for login tokens. Empty: every token is refused.
    #[serde(deserialize_with = "string_or_number")]
    pub jwt_secret: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .finish()
    }
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Key for the shutdown payload and `POST /admin/shutdown`. Empty: both
    /// are refused.
    #[serde(deserialize_with = "string_or_number")]
    pub shutdown_key: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("shutdown_key", &redacted(&self.shutdown_key))
            .finish()
    }
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open WebSockets per node; beyond it new upgrades get HTTP 503. 0: no
    /// limit other than the process's open-file limit.
    pub max_connections: usize,
    /// Open WebSockets per client address (see `server.trusted_proxies`);
    /// beyond it new upgrades from that address get HTTP 429. 0: no limit.
    /// Users behind one NAT share an address, so keep it well above what
    /// one office needs.
    pub connections_per_ip: usize,
    /// Open sockets per node, WebSockets and plain HTTP (also ones that
    /// never send a request); a socket accepted beyond it is closed at
    /// once. Keep it above `max_connections` plus room for HTTP probes, and
    /// below the process's open-file limit. 0: no cap.
    pub max_sockets: usize,
    /// Time a client has to send a complete HTTP request head, also between
    /// two requests on a keep-alive socket; then the socket is closed.
    /// Shorter frees sockets held by slow or idle clients sooner; too short
    /// cuts clients on bad links.
    pub header_read_timeout_secs: u64,
    /// A keep-alive HTTP socket with no traffic for this long is closed
    /// (probes reconnect cheaply; idle sockets cost a file descriptor each).
    /// Only matters below `header_read_timeout_secs`, which bounds the wait
    /// for the next request too.
    pub keep_alive_idle_secs: u64,
    /// Largest message (all fragments together); larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Longest message content in characters.
    pub max_content_chars: usize,
    /// Sustained MESSAGE_CREATE rate per connection (token bucket refill).
    pub messages_per_second: u32,
    /// Bucket size: how many MESSAGE_CREATE may come at once.
    pub message_burst: u32,
    /// Rate-limited payloads within `flood_window_secs` that close with 4008.
    pub flood_max_limited: u32,
    /// Window for `flood_max_limited` and `bad_payload_max`.
    pub flood_window_secs: u64,
    /// Bad payloads within `flood_window_secs` beyond which the connection is
    /// closed with 1008.
    pub bad_payload_max: u32,
    /// Wrong shutdown keys on one connection before it is closed with 4003.
    pub shutdown_key_attempts: u32,
    /// Node-wide spacing of shutdown-key checks after a wrong key, doubled
    /// per further wrong key (at most 2 s; attempts queued more than 5 s
    /// ahead are refused unchecked) and reset by a right key. Larger slows
    /// guessing over many connections; a right key may wait that long.
    pub shutdown_key_backoff_ms: u64,
    /// Failed logins on one connection before it is closed with 4003.
    pub login_attempts: u32,
    /// Time to log in before the connection is closed with 4001.
    pub login_timeout_secs: u64,
    /// How often the server pings each connection.
    pub ping_interval_secs: u64,
    /// Silence (no pong, no frame) after which a connection is closed.
    pub ping_timeout_secs: u64,
    /// Frames queued per connection before it counts as a slow consumer and
    /// is closed with 4009. Larger absorbs longer stalls and costs memory
    /// per connection only while it is used.
    pub outbound_queue: usize,
    /// Bytes of frames queued per connection before it counts as a slow
    /// consumer (4009), whatever their number: `outbound_queue` alone lets
    /// 256 large frames (histories, room lists) pile up to megabytes. Must
    /// hold at least one `max_frame_bytes` frame; larger absorbs longer
    /// stalls of a reader of big frames at the cost of memory while used.
    pub outbound_queue_bytes: usize,
    /// Control events (moves, kicks) queued per connection; overflow is
    /// treated like a slow consumer.
    pub control_queue: usize,
    /// Rooms larger than this send no joined/left notices.
    pub presence_notice_max_members: u64,
    /// Longest a joined/left notice waits in a member's queue before the
    /// member's writer is woken for it; any other frame for that member
    /// takes it along at once, in order. Default 250: a burst of logins into
    /// a room costs each member one socket write per 250 ms instead of one
    /// per notice (the bulk of a login's cost in rooms with members), while
    /// a person does not notice presence a quarter second late. 0: notices
    /// go out at once, each waking the writer.
    pub presence_delay_ms: u64,
    /// Most names `\users` lists (it also gives the room's count): listing
    /// a crowd costs no more than listing a small room.
    pub max_listed_users: usize,
    /// Most rooms one CACHE_UPDATE or `\rooms` answer lists (the user's
    /// own room, the default room, then the busiest; `rooms_total` counts
    /// them all), and the admin API's room list. Default 100: every login
    /// and room move sends this list, so it bounds that frame whatever the number of rooms; raise it only with
    /// `max_frame_bytes`.
    pub max_listed_rooms: usize,
    /// Rooms one user owns at once (token mode: per subject; open mode: per
    /// connection); creating one more is refused with `forbidden`, deleting
    /// one frees its slot. Admins have no limit. Default 10: enough for a
    /// person, while one client can no longer fill `max_rooms` alone. 0: no
    /// limit.
    pub rooms_per_user: u64,
    /// A room other than the default room that has had no members this
    /// long is deleted with its settings, bans and history (ROOM_STATE
    /// `deleted`), so rooms do not pile up forever. Every node sweeps every
    /// `min(ttl / 2, 60 s)` (at least 100 ms), so a room goes between ttl
    /// and ttl + that interval after it emptied. Default 86400 (one day):
    /// long enough for a room's regulars to come back. 0: never.
    pub empty_room_ttl_secs: u64,
    /// Rooms the whole cluster may hold (rooms stay until deleted, so without
    /// a bound clients could create them forever). Creating one more is
    /// refused with NOTICE `forbidden`; joining existing rooms still works.
    pub max_rooms: u64,
    /// How long a closing connection's writer may take to flush and send
    /// its close frame before the socket is dropped.
    pub close_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            connections_per_ip: 0,
            max_sockets: 65_536,
            header_read_timeout_secs: 10,
            keep_alive_idle_secs: 5,
            max_frame_bytes: 16 * 1024,
            max_content_chars: 2000,
            messages_per_second: 5,
            message_burst: 10,
            flood_max_limited: 100,
            flood_window_secs: 60,
            bad_payload_max: 10,
            shutdown_key_attempts: 3,
            shutdown_key_backoff_ms: 100,
            login_attempts: 5,
            login_timeout_secs: 10,
            ping_interval_secs: 20,
            ping_timeout_secs: 45,
            outbound_queue: 256,
            outbound_queue_bytes: 1024 * 1024,
            control_queue: 16,
            presence_notice_max_members: 200,
            presence_delay_ms: 250,
            max_rooms: 10_000,
            max_listed_users: 100,
            max_listed_rooms: 100,
            rooms_per_user: 10,
            empty_room_ttl_secs: 86_400,
            close_grace_ms: 1000,
        }
    }
}

impl LimitsConfig {
    /// The [`crate::backplane::JoinRequest::max_owned_rooms`] of a user:
    /// none for admins and with `rooms_per_user = 0`.
    pub(crate) fn owned_rooms_limit(&self, admin: bool) -> Option<u64> {
        (!admin && self.rooms_per_user > 0).then_some(self.rooms_per_user)
    }
}

/// tungstenite buffers per connection. The library defaults (128 KiB each)
/// cost about 145 KiB per idle socket; chat frames are small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Read buffer, allocated and touched per socket, and the most one read
    /// call takes. Chat payloads are mostly well under 512 bytes, so 512
    /// keeps idle connections small (measured: 4096 costs about 3.5 KB more
    /// per connection); a frame larger than the buffer still arrives whole,
    /// in more read calls.
    pub read_buffer_bytes: usize,
    /// Bytes collected before a socket write. The writer flushes after each
    /// batch anyway, so this only bounds one batch's coalescing.
    pub write_buffer_bytes: usize,
    /// Most bytes a socket may hold unwritten before writes fail; must be
    /// larger than `write_buffer_bytes`.
    pub max_write_buffer_bytes: usize,
    /// Most frames the writer feeds between two flushes. The writer takes
    /// the whole queue at once; a larger value means fewer write calls per
    /// burst, a smaller one gets the first frames of a burst out sooner.
    pub write_batch: usize,
    /// Slots of the writer's batch buffer (and of the queue it swaps with)
    /// kept between batches. Enough for the one or two frames per batch of
    /// a busy room at moderate rates, so those allocate nothing per frame;
    /// a burst that grew it beyond is freed once written. Each slot costs
    /// an idle connection 2 x 32 bytes; 0 frees the buffers after every
    /// batch (one allocation per batch).
    pub retained_batch_frames: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            read_buffer_bytes: 512,
            write_buffer_bytes: 16 * 1024,
            max_write_buffer_bytes: 256 * 1024,
            write_batch: 64,
            retained_batch_frames: 4,
        }
    }
}

/// Environment variables read as raw strings, and their keys.
const RAW_SECRETS: [(&str, &str); 2] = [
    ("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", "admin.shutdown_key"),
    ("SWIFTCHAT_AUTH__JWT_SECRET", "auth.jwt_secret"),
];

/// Whether an environment key (after the prefix, split or not) is one of
/// [`RAW_SECRETS`].
fn is_raw_secret(key: &str) -> bool {
    let dotted = key.replace("__", ".");
    RAW_SECRETS
        .iter()
        .any(|(_, secret)| dotted.eq_ignore_ascii_case(secret))
}

impl Config {
    /// Loads defaults < TOML < environment. `file` given explicitly must
    /// exist; otherwise `swiftchat.toml` in the working directory is read if
    /// present.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match file {
            Some(path) => figment.merge(Toml::file_exact(path)),
            None => {
                let local = Path::new("swiftchat.toml");
                if local.is_file() {
                    figment.merge(Toml::file_exact(local))
                } else {
                    figment
                }
            }
        };
        figment = figment.merge(
            Env::prefixed("SWIFTCHAT_")
                .split("__")
                .ignore(&["config", "log_format"])
                .filter(|key| !is_raw_secret(key.as_str())),
        );
        // Secrets are taken as the raw string: parsed like TOML, a key such
        // as 0012345678901234 would become a number and lose its zeros.
        for (var, key) in RAW_SECRETS {
            if let Ok(value) = std::env::var(var) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        figment
    }

    /// Extracts and validates.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Figment(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if crate::protocol::normalize_room_name(&self.server.default_room).as_deref()
            != Some(self.server.default_room.as_str())
        {
            return bad(
                "server.default_room",
                "must be 1-32 characters of a-z 0-9 _ -",
            );
        }
        if self.server.command_prefix.is_empty() {
            return bad("server.command_prefix", "must not be empty");
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_frame_bytes", l.max_frame_bytes as u64),
            ("limits.max_content_chars", l.max_content_chars as u64),
            ("limits.messages_per_second", l.messages_per_second as u64),
            ("limits.message_burst", l.message_burst as u64),
            ("limits.login_timeout_secs", l.login_timeout_secs),
            ("limits.ping_interval_secs", l.ping_interval_secs),
            ("limits.ping_timeout_secs", l.ping_timeout_secs),
            ("limits.outbound_queue", l.outbound_queue as u64),
            ("limits.control_queue", l.control_queue as u64),
            ("limits.flood_window_secs", l.flood_window_secs),
            ("limits.max_rooms", l.max_rooms),
            ("limits.max_listed_users", l.max_listed_users as u64),
            ("limits.max_listed_rooms", l.max_listed_rooms as u64),
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("limits.keep_alive_idle_secs", l.keep_alive_idle_secs),
            (
                "websocket.read_buffer_bytes",
                self.websocket.read_buffer_bytes as u64,
            ),
            ("websocket.write_batch", self.websocket.write_batch as u64),
            ("redis.pool_size", self.redis.pool_size as u64),
            ("redis.command_timeout_ms", self.redis.command_timeout_ms),
            ("redis.heartbeat_secs", self.redis.heartbeat_secs),
            ("redis.probe_interval_ms", self.redis.probe_interval_ms),
            ("history.page_size", self.history.page_size as u64),
            ("history.gap_buffer", self.history.gap_buffer as u64),
            ("history.max_page_bytes", self.history.max_page_bytes as u64),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if self.redis.cluster && self.redis.url.trim().is_empty() {
            return bad(
                "redis.cluster",
                "needs redis.url: the seed nodes of the Redis Cluster",
            );
        }
        if let Err(why) = crate::net::edge::parse_cidrs(&self.server.trusted_proxies) {
            return bad("server.trusted_proxies", &why);
        }
        if l.outbound_queue_bytes < l.max_frame_bytes {
            return bad(
                "limits.outbound_queue_bytes",
                "must be at least limits.max_frame_bytes",
            );
        }
        if l.presence_delay_ms > MAX_PRESENCE_DELAY_MS {
            return bad(
                "limits.presence_delay_ms",
                &format!("must be at most {MAX_PRESENCE_DELAY_MS} (presence that late misleads)"),
            );
        }
        if self.websocket.max_write_buffer_bytes <= self.websocket.write_buffer_bytes {
            return bad(
                "websocket.max_write_buffer_bytes",
                "must be greater than websocket.write_buffer_bytes",
            );
        }
        if self.redis.node_ttl_secs <= self.redis.heartbeat_secs {
            return bad(
                "redis.node_ttl_secs",
                "must be greater than redis.heartbeat_secs",
            );
        }
        let key_chars = self.admin.shutdown_key.chars().count();
        if key_chars > 0 && key_chars < crate::auth::MIN_SHUTDOWN_KEY_CHARS {
            // The length only, never the key.
            return bad(
                "admin.shutdown_key",
                &format!(
                    "must be at least {} characters (it has {key_chars}); leave it empty to refuse every shutdown by key",
                    crate::auth::MIN_SHUTDOWN_KEY_CHARS
                ),
            );
        }
        if self.auth.mode == AuthMode::Token && self.auth.jwt_secret.is_empty() {
            return bad("auth.jwt_secret", "must be set when auth.mode = \"token\"");
        }
        Ok(())
    }

    /// How often deferred presence notices are flushed; `None`: they are
    /// not deferred (`limits.presence_delay_ms = 0`).
    pub fn presence_delay(&self) -> Option<Duration> {
        (self.limits.presence_delay_ms > 0)
            .then(|| Duration::from_millis(self.limits.presence_delay_ms))
    }

    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.login_timeout_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: {0}")]
    Figment(Box<figment::Error>),
    #[error("configuration error: {0}")]
    Invalid(String),
}

/// Accepts a number where a string is expected: environment values are
/// parsed like TOML, so `SWIFTCHAT_ADMIN__SHUTDOWN_KEY=12345` arrives as an
/// integer.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::I(i) => i.to_string(),
        Raw::U(u) => u.to_string(),
        Raw::F(f) => f.to_string(),
        Raw::B(b) => b.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_operations_md() {
        let c = Config::default();
        assert_eq!(c.server.bind.to_string(), "0.0.0.0:8765");
        assert_eq!(c.server.command_prefix, "\\");
        assert_eq!(c.limits.max_frame_bytes, 16384);
        assert_eq!(c.limits.outbound_queue, 256);
        assert_eq!(c.redis.key_prefix, "swiftchat");
        assert_eq!(c.history.max_messages, 200);
        assert_eq!(c.history.ttl_secs, 86400);
        assert_eq!(c.history.page_size, 100);
        c.validate().unwrap();
    }

    #[test]
    fn secrets_from_the_environment_are_raw_strings() {
        // The only test that sets these variables.
        std::env::set_var("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", "0012345678901234");
        std::env::set_var("SWIFTCHAT_AUTH__JWT_SECRET", "1e3");
        let config = Config::from_figment(Config::figment(None));
        std::env::remove_var("SWIFTCHAT_ADMIN__SHUTDOWN_KEY");
        std::env::remove_var("SWIFTCHAT_AUTH__JWT_SECRET");
        let config = config.unwrap();
        assert_eq!(config.admin.shutdown_key, "0012345678901234");
        assert_eq!(config.auth.jwt_secret, "1e3");
    }

    #[test]
    fn short_shutdown_keys_stop_the_node_without_showing_them() {
        let mut c = Config::default();
        c.admin.shutdown_key = "short-key-12345".into();
        let error = c.validate().unwrap_err().to_string();
        assert!(
            error.contains("admin.shutdown_key") && error.contains("16"),
            "{error}"
        );
        assert!(!error.contains("short-key-12345"), "{error}");
        c.admin.shutdown_key = "long-enough-key-".into();
        c.validate().unwrap();
        c.admin.shutdown_key = String::new();
        c.validate().unwrap();
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let mut c = Config::default();
        c.auth.jwt_secret = "hunter2".into();
        c.admin.shutdown_key = "sesame".into();
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2") && !text.contains("sesame"));
    }
}

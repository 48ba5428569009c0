//! SwiftChat: a horizontally scalable WebSocket chat gateway.
//!
//! The layout follows the architecture:
//! - [`protocol`]: the wire protocol (payloads, codes, name rules), pure.
//! - [`chat`]: the chat rules: sessions, rooms, commands, permissions. They
//!   talk to a [`backplane::Backplane`] and never know whether Redis is there.
//! - [`backplane`]: shared state and fan-out, in memory or on Redis.
//! - [`registry`]: this node's connections and room memberships; it routes
//!   what the backplane delivers into each connection's bounded queues
//!   ([`conn`]) without waiting.
//! - [`net`]: the network edge: HTTP routes, WebSocket upgrade, the
//!   connection task with its reader, writer and bounded queue.
//! - [`config`], [`auth`], [`metrics`], and [`server`] (starting and stopping
//!   a node), used by the thin `main.rs`.

pub mod auth;
pub mod backplane;
pub mod chat;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod shutdown;

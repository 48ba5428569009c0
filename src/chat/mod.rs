//! The chat rules: logins, rooms, messages, commands and permissions.
//!
//! A [`Session`] per connection holds that connection's state and applies
//! the rules; shared state goes through the [`Backplane`](crate::backplane::Backplane)
//! trait, so nothing here knows whether Redis is there.
//!
//! One job per file:
//! - [`session`]: the session's state, and each inbound frame metered and
//!   routed (every frame counts toward a rate or bad-payload limit);
//! - [`commands`]: the command table (name, aliases, arguments, help,
//!   permission, handler) read by parsing, `\help` and dispatch;
//! - `login`, `messages`, `rooms`, `moderation`: the handlers, which
//!   return a [`Refusal`](replies::Refusal) with `?` instead of answering
//!   and returning early;
//! - [`replies`]: the refusal type and the texts of notices;
//! - [`presence`] and [`ownership`]: the policies other layers must follow
//!   (when joined/left is announced; who owns a room).

pub(crate) mod cluster_events;
pub(crate) mod commands;
pub(crate) mod expiry;
pub(crate) mod history;
mod login;
mod messages;
mod moderation;
pub(crate) mod ownership;
pub(crate) mod presence;
pub(crate) mod rate;
pub(crate) mod replies;
mod rooms;
pub(crate) mod session;

use std::sync::Arc;

pub(crate) use session::{Flow, Session};

use crate::auth::TokenVerifier;
use crate::backplane::SharedBackplane;
use crate::config::Config;
use crate::registry::Registry;
use crate::shutdown::Shutdown;

/// What every session of a node shares.
pub struct Chat {
    pub config: Arc<Config>,
    pub backplane: SharedBackplane,
    pub registry: Arc<Registry>,
    pub shutdown: Arc<Shutdown>,
    tokens: TokenVerifier,
}

impl Chat {
    pub fn new(
        config: Arc<Config>,
        backplane: SharedBackplane,
        registry: Arc<Registry>,
        shutdown: Arc<Shutdown>,
    ) -> Arc<Self> {
        let tokens = TokenVerifier::new(&config.auth.jwt_secret);
        Arc::new(Self {
            config,
            backplane,
            registry,
            shutdown,
            tokens,
        })
    }
}

//! The chat rules: logins, rooms, messages, commands and permissions.
//!
//! A [`Session`] per connection holds that connection's state and applies
//! the rules; shared state goes through the [`Backplane`](crate::backplane::Backplane)
//! trait, so nothing here knows whether Redis is there.

pub mod commands;
pub(crate) mod history;
pub mod rate;
pub mod session;

use std::sync::Arc;

pub use session::{Flow, Session};

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

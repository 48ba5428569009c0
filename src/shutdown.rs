//! Node shutdown: one [`CancellationToken`] that every connection task
//! watches, and the SHUTDOWN notice its writers send before closing.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use crate::protocol::{self, Frame};

/// Why the node is stopping; set once, by whoever triggers first.
#[derive(Debug, Clone)]
pub struct ShutdownNotice {
    pub reason: Option<String>,
    /// `true` when only this node goes away (drain), `false` for the whole
    /// cluster.
    pub reconnect: bool,
    /// The SHUTDOWN frame, serialized once for every client.
    pub frame: Frame,
}

#[derive(Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    notice: OnceLock<ShutdownNotice>,
    /// Node-wide backoff for shutdown keys (payload and HTTP).
    pub key_guard: crate::auth::KeyGuard,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown. The first call decides the notice; later calls
    /// change nothing.
    pub fn trigger(&self, reason: Option<String>, reconnect: bool) {
        let frame = protocol::shutdown(reason.as_deref(), reconnect);
        let _ = self.notice.set(ShutdownNotice {
            reason,
            reconnect,
            frame,
        });
        self.token.cancel();
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// One atomic load (`trigger` sets the notice before it cancels the
    /// token): every writer asks this per batch, and the token's
    /// `is_cancelled` would take a mutex shared by the whole node.
    pub fn is_triggered(&self) -> bool {
        self.notice.get().is_some()
    }

    pub fn notice(&self) -> Option<&ShutdownNotice> {
        self.notice.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggered_once_trigger_ran_and_the_first_notice_wins() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        assert!(!shutdown.token().is_cancelled());
        shutdown.trigger(Some("maintenance".into()), true);
        assert!(shutdown.is_triggered());
        assert!(shutdown.token().is_cancelled());
        shutdown.trigger(None, false);
        let notice = shutdown.notice().expect("notice set");
        assert_eq!(notice.reason.as_deref(), Some("maintenance"));
        assert!(notice.reconnect);
    }
}

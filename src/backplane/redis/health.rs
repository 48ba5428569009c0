//! Readiness of the Redis backplane, from what the background tasks observe.
//!
//! A node is ready when all of these hold:
//! - its own probe, published through the command pool, came back through its
//!   subscriber connection recently (so both halves work end to end, not
//!   merely "a PING answered": a subscriber that silently stopped delivering
//!   fails the probe too);
//! - the last probe PUBLISH did not fail (reports an outage at once instead
//!   of after the probe window);
//! - the base channels (events, probe) are subscribed;
//! - the node's presence is registered in Redis (after Redis came back empty
//!   it is written back first);
//! - the backplane is not closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Health {
    start: Instant,
    /// Milliseconds since `start` when the last probe came back; 0 = never.
    last_echo_ms: AtomicU64,
    probe_failed: AtomicBool,
    subscribed: AtomicBool,
    registered: AtomicBool,
    closed: AtomicBool,
    /// How old the last echo may be.
    window: Duration,
}

impl Health {
    /// `probe_interval`: how often probes are sent. A probe may be late by
    /// two intervals plus half a second before the node reports not ready,
    /// so one slow round trip does not flap readiness; with the default
    /// 1 s interval an outage shows within 2.5 s.
    pub fn new(probe_interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            last_echo_ms: AtomicU64::new(0),
            probe_failed: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            window: probe_interval * 2 + Duration::from_millis(500),
        }
    }

    pub fn is_ready(&self) -> bool {
        let echo = self.last_echo_ms.load(Ordering::Acquire);
        let fresh =
            echo != 0 && self.now_ms().saturating_sub(echo) <= self.window.as_millis() as u64;
        fresh
            && !self.probe_failed.load(Ordering::Acquire)
            && self.subscribed.load(Ordering::Acquire)
            && self.registered.load(Ordering::Acquire)
            && !self.closed.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        // +1 so that an echo in the first millisecond is not "never".
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// The payload of a new probe: when it was sent.
    pub fn probe_payload(&self) -> String {
        self.start.elapsed().as_nanos().to_string()
    }

    /// A probe came back; returns its round trip, or `None` for a payload
    /// that is not one of this process's probes.
    pub fn on_probe_echo(&self, payload: &[u8]) -> Option<Duration> {
        let sent: u64 = std::str::from_utf8(payload).ok()?.parse().ok()?;
        let lag = self
            .start
            .elapsed()
            .checked_sub(Duration::from_nanos(sent))?;
        self.last_echo_ms.store(self.now_ms(), Ordering::Release);
        Some(lag)
    }

    pub fn set_probe_failed(&self, failed: bool) {
        self.probe_failed.store(failed, Ordering::Release);
    }

    pub fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Release);
    }

    pub fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_a_fresh_echo_and_everything_set() {
        let health = Health::new(Duration::from_millis(100));
        assert!(!health.is_ready());
        health.set_subscribed(true);
        health.set_registered(true);
        assert!(!health.is_ready(), "no probe came back yet");
        let payload = health.probe_payload();
        assert!(health.on_probe_echo(payload.as_bytes()).is_some());
        assert!(health.is_ready());
        health.set_probe_failed(true);
        assert!(!health.is_ready());
        health.set_probe_failed(false);
        std::thread::sleep(Duration::from_millis(800));
        assert!(!health.is_ready(), "the echo is stale");
    }

    #[test]
    fn foreign_payloads_are_ignored() {
        let health = Health::new(Duration::from_secs(1));
        assert!(health.on_probe_echo(b"hello").is_none());
        assert!(health
            .on_probe_echo(u64::MAX.to_string().as_bytes())
            .is_none());
    }
}

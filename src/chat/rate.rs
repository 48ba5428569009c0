//! Per-connection counters: a token bucket for MESSAGE_CREATE and a sliding
//! window count for repeated misbehaviour (bad payloads, rate-limited
//! payloads). Both are O(1) in memory except the window, which is bounded by
//! its limit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Allows `rate` events per second with bursts up to `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts events within a sliding window; says when more than `max` happened.
#[derive(Debug)]
pub(crate) struct WindowCounter {
    window: Duration,
    max: usize,
    events: VecDeque<Instant>,
}

impl WindowCounter {
    pub(crate) fn new(window: Duration, max: u32) -> Self {
        Self {
            window,
            max: max as usize,
            events: VecDeque::new(),
        }
    }

    /// Records an event; `true` when the window now holds more than `max`.
    /// Keeps at most `max + 1` timestamps.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.events.front() {
            if now.saturating_duration_since(first) >= self.window {
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.events.push_back(now);
        if self.events.len() > self.max + 1 {
            self.events.pop_front();
        }
        self.events.len() > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(5, 10);
        assert_eq!((0..12).filter(|_| b.try_take(start)).count(), 10);
        assert!(b.try_take(start + Duration::from_millis(200)));
        assert!(!b.try_take(start + Duration::from_millis(201)));
    }

    #[test]
    fn window_trips_after_max() {
        let start = Instant::now();
        let mut w = WindowCounter::new(Duration::from_secs(60), 10);
        for i in 0..10 {
            assert!(!w.record(start + Duration::from_millis(i)));
        }
        assert!(w.record(start + Duration::from_millis(11)));
        let mut w = WindowCounter::new(Duration::from_secs(60), 2);
        assert!(!w.record(start));
        assert!(!w.record(start));
        assert!(!w.record(start + Duration::from_secs(61)));
    }
}

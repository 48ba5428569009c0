//! One connection's bounded queues, shared by whoever sends to it (the
//! registry's fan-out, the session, cluster events) and the connection's two
//! tasks (the writer drains frames, the session drains control work).
//!
//! The queues are plain `VecDeque`s behind a mutex with a [`Notify`] each,
//! not channels: a tokio channel allocates its first block of slots and a
//! padded shared state up front (about 1.5 KiB for the two), which every
//! idle connection would carry. An empty `VecDeque` allocates nothing, and
//! the writer takes the whole queue at once, leaving an empty one behind.
//! Pushing never waits: a full queue closes the connection with 4009.
//!
//! Presence notices may be *deferred* ([`ConnHandle::send_deferred`]): they
//! are queued in order like any frame, but the writer is not woken for them;
//! the registry's next presence flush (or the next frame that is not
//! deferred) wakes it. A burst of logins into a room then costs each member
//! one socket write per flush instead of one per notice.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::protocol::{close, Frame};

pub type ConnId = u64;

/// Close code for a frame the server could not send (PROTOCOL.md: 1011).
pub(crate) const INTERNAL_ERROR: u16 = 1011;

/// Work for a connection's session that comes from elsewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Leave `room` for the default room: it was closed or deleted, or the
    /// user was kicked or banned from it.
    Evicted { room: String, reason: EvictReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    Closed,
    Deleted,
    Kicked,
    Banned,
}

#[derive(Default)]
struct Queues {
    frames: VecDeque<Frame>,
    /// Bytes of `frames`, bounded by `max_frame_bytes`.
    frame_bytes: usize,
    controls: VecDeque<Control>,
    /// The writer was woken for what `frames` holds and has not taken it
    /// yet: later pushes need not wake it again (one wake-up per batch).
    writer_woken: bool,
    /// Deferred frames wait in `frames` and a flush is scheduled
    /// ([`ConnHandle::flush_deferred`]).
    flush_scheduled: bool,
    /// The reader asked the writer to ping the client
    /// ([`ConnHandle::request_ping`]).
    ping_requested: bool,
}

/// What [`ConnHandle::send_deferred`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// Queued; the writer is already due, or a flush is scheduled.
    Queued,
    /// Queued; the caller must call [`ConnHandle::flush_deferred`] later.
    NeedsFlush,
    /// Not queued: the connection is closing or its queue overflowed.
    Dropped,
}

/// The shared end of one connection.
pub struct ConnHandle {
    pub id: ConnId,
    queues: Mutex<Queues>,
    frames_ready: Notify,
    controls_ready: Notify,
    max_frames: usize,
    max_frame_bytes: usize,
    max_controls: usize,
    /// The client's address (after `server.trusted_proxies`), for security
    /// logs.
    pub peer: IpAddr,
    closing: CancellationToken,
    close_reason: OnceLock<(u16, &'static str)>,
}

impl ConnHandle {
    /// `max_frames` frames may wait for the writer and `max_controls` control
    /// events for the session; one more closes the connection with 4009.
    pub fn new(id: ConnId, max_frames: usize, max_controls: usize) -> Self {
        Self {
            id,
            queues: Mutex::default(),
            frames_ready: Notify::new(),
            controls_ready: Notify::new(),
            max_frames,
            max_frame_bytes: usize::MAX,
            max_controls,
            peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            closing: CancellationToken::new(),
            close_reason: OnceLock::new(),
        }
    }

    /// Bounds the queued frames' bytes too: one more byte closes with 4009.
    pub fn with_max_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = max_frame_bytes;
        self
    }

    /// Records the client's address.
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = peer;
        self
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        // Plain data: a panic elsewhere does not make it invalid.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame for the socket; returns whether it was queued. Nothing
    /// is queued once the connection is closing, and a full queue closes it
    /// with 4009 (slow consumer).
    pub fn send(&self, frame: Frame) -> bool {
        self.push(frame, false) != Deferred::Dropped
    }

    /// Queues a frame that may wait up to the next presence flush: the
    /// writer is not woken for it (a later [`send`](Self::send) takes it
    /// along, in order). [`Deferred::NeedsFlush`] asks the caller to call
    /// [`flush_deferred`](Self::flush_deferred) later; it is returned once
    /// per flush, so a connection is scheduled at most once.
    pub fn send_deferred(&self, frame: Frame) -> Deferred {
        self.push(frame, true)
    }

    fn push(&self, frame: Frame, deferred: bool) -> Deferred {
        if self.is_closing() {
            return Deferred::Dropped;
        }
        let mut queues = self.queues();
        if queues.frames.len() >= self.max_frames
            || queues.frame_bytes + frame.len() > self.max_frame_bytes
        {
            drop(queues);
            self.slow_consumer();
            return Deferred::Dropped;
        }
        queues.frame_bytes += frame.len();
        queues.frames.push_back(frame);
        if queues.writer_woken {
            return Deferred::Queued;
        }
        // Deferral saves socket writes, never queue room: once an eighth of
        // the queue's bound waits, the writer is woken as for any frame, so
        // a busy room's notices cannot bring a reader near 4009.
        if deferred && queues.frames.len() < self.max_deferred_frames() {
            if queues.flush_scheduled {
                return Deferred::Queued;
            }
            queues.flush_scheduled = true;
            return Deferred::NeedsFlush;
        }
        self.wake_writer_once(queues);
        Deferred::Queued
    }

    /// Wakes the writer for what `queues` holds unless it is already due:
    /// one wake-up per batch, whoever asks (a frame, a flush, a ping).
    fn wake_writer_once(&self, mut queues: MutexGuard<'_, Queues>) {
        if queues.writer_woken {
            return;
        }
        queues.writer_woken = true;
        drop(queues);
        self.frames_ready.notify_one();
    }

    /// Frames that may wait for a flush (see `push`).
    fn max_deferred_frames(&self) -> usize {
        (self.max_frames / 8).max(1)
    }

    /// The scheduled flush of deferred frames: wakes the writer if they
    /// still wait (nothing else took them along).
    pub fn flush_deferred(&self) {
        let mut queues = self.queues();
        queues.flush_scheduled = false;
        if !queues.frames.is_empty() {
            self.wake_writer_once(queues);
        }
    }

    /// Queues control work for the session; overflow is a slow consumer too.
    pub fn send_control(&self, control: Control) -> bool {
        if self.is_closing() {
            return false;
        }
        {
            let mut queues = self.queues();
            if queues.controls.len() >= self.max_controls {
                drop(queues);
                self.slow_consumer();
                return false;
            }
            queues.controls.push_back(control);
        }
        self.controls_ready.notify_one();
        true
    }

    /// Resolves when frames may be waiting (a permit is kept if nobody
    /// waits, so a push is never missed).
    pub async fn frames_ready(&self) {
        self.frames_ready.notified().await
    }

    /// Asks the writer to send a ping (the reader keeps the connection's
    /// one timer, so that the writer needs none).
    pub fn request_ping(&self) {
        let mut queues = self.queues();
        queues.ping_requested = true;
        self.wake_writer_once(queues);
    }

    /// Takes every queued frame, oldest first.
    pub fn take_frames(&self) -> VecDeque<Frame> {
        let mut queues = self.queues();
        queues.frame_bytes = 0;
        queues.writer_woken = false;
        std::mem::take(&mut queues.frames)
    }

    /// Moves every queued frame into `out` (which must be empty), oldest
    /// first, and leaves `out`'s former buffer as the queue: the writer and
    /// the queue swap two buffers, so a busy connection allocates nothing
    /// per frame. The caller bounds what `out` keeps while idle (see
    /// `websocket.retained_batch_frames`). Returns whether a ping was
    /// requested since the last take.
    pub fn take_frames_into(&self, out: &mut VecDeque<Frame>) -> bool {
        debug_assert!(out.is_empty());
        let mut queues = self.queues();
        queues.frame_bytes = 0;
        queues.writer_woken = false;
        std::mem::swap(&mut queues.frames, out);
        std::mem::take(&mut queues.ping_requested)
    }

    /// Wakes the writer so that it looks at [`closing`](Self::closing) and
    /// the node's shutdown (it does not wait on those itself).
    pub fn wake_writer(&self) {
        self.frames_ready.notify_one();
    }

    /// Resolves when control work may be waiting.
    pub async fn controls_ready(&self) {
        self.controls_ready.notified().await
    }

    /// Takes the oldest control event.
    pub fn next_control(&self) -> Option<Control> {
        let mut queues = self.queues();
        let control = queues.controls.pop_front();
        if queues.controls.is_empty() && queues.controls.capacity() > 0 {
            // Drained: an idle connection keeps no queue capacity.
            queues.controls = VecDeque::new();
        }
        control
    }

    fn slow_consumer(&self) {
        if self.close_reason.get().is_none() {
            metrics::counter!(m::SLOW_CONSUMER_CLOSES).increment(1);
        }
        self.close(close::SLOW_CONSUMER, "slow consumer");
    }

    /// Asks the connection to close with `code`. The first reason wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.close_reason.set((code, reason));
        self.closing.cancel();
        self.wake_writer();
    }

    /// Cancelled once [`close`](Self::close) was called.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Whether [`close`](Self::close) was called. One atomic load: the hot
    /// path asks this per frame, and `CancellationToken::is_cancelled` takes
    /// the token's mutex (2.3% of a node's CPU under fan-out, perf).
    pub fn is_closing(&self) -> bool {
        // `close` sets the reason before it cancels the token.
        self.close_reason.get().is_some()
    }

    pub fn close_reason(&self) -> Option<(u16, &'static str)> {
        self.close_reason.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::from(text.to_string())
    }

    /// Whether the writer is woken within 50 ms.
    async fn woken(conn: &ConnHandle) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), conn.frames_ready())
            .await
            .is_ok()
    }

    #[test]
    fn overflow_closes_with_4009_and_keeps_what_was_queued() {
        let conn = ConnHandle::new(1, 2, 1);
        assert!(conn.send(frame("a")));
        assert!(conn.send(frame("b")));
        assert!(!conn.send(frame("c")));
        assert_eq!(
            conn.close_reason(),
            Some((close::SLOW_CONSUMER, "slow consumer"))
        );
        assert!(!conn.send(frame("d")), "nothing is queued once closing");
        let taken: Vec<_> = conn.take_frames().into_iter().collect();
        assert_eq!(taken, vec![frame("a"), frame("b")]);
    }

    #[test]
    fn closing_is_seen_by_the_flag_and_the_token() {
        let conn = ConnHandle::new(1, 8, 8);
        assert!(!conn.is_closing());
        assert!(!conn.closing().is_cancelled());
        conn.close(close::SLOW_CONSUMER, "slow consumer");
        assert!(conn.is_closing());
        assert!(conn.closing().is_cancelled());
        assert!(!conn.send(frame("a")));
        assert!(!conn.send_control(Control::Evicted {
            room: "r".into(),
            reason: EvictReason::Kicked,
        }));
    }

    #[test]
    fn control_overflow_is_a_slow_consumer() {
        let conn = ConnHandle::new(1, 8, 1);
        let evict = || Control::Evicted {
            room: "r".into(),
            reason: EvictReason::Kicked,
        };
        assert!(conn.send_control(evict()));
        assert!(!conn.send_control(evict()));
        assert_eq!(conn.close_reason().map(|r| r.0), Some(close::SLOW_CONSUMER));
        assert_eq!(conn.next_control(), Some(evict()));
        assert_eq!(conn.next_control(), None);
        assert_eq!(conn.queues().controls.capacity(), 0, "drained: freed");
    }

    #[test]
    fn byte_overflow_closes_with_4009() {
        let conn = ConnHandle::new(1, 100, 1).with_max_bytes(10);
        assert!(conn.send(frame("12345")));
        assert!(conn.send(frame("67890")), "exactly at the limit is fine");
        assert!(!conn.send(frame("x")));
        assert_eq!(conn.close_reason().map(|r| r.0), Some(close::SLOW_CONSUMER));
        // Taking the frames frees their bytes.
        let conn = ConnHandle::new(1, 100, 1).with_max_bytes(10);
        assert!(conn.send(frame("1234567890")));
        assert_eq!(conn.take_frames().len(), 1);
        assert!(conn.send(frame("1234567890")));
        assert_eq!(conn.close_reason(), None);
    }

    #[tokio::test]
    async fn one_wake_up_per_batch_and_none_is_missed() {
        let conn = ConnHandle::new(1, 8, 8);
        let mut batch = VecDeque::new();
        conn.send(frame("a"));
        conn.send(frame("b"));
        assert!(woken(&conn).await, "the first push woke the writer");
        conn.take_frames_into(&mut batch);
        assert_eq!(batch, [frame("a"), frame("b")]);
        assert!(!woken(&conn).await, "the second push did not wake it again");
        // After a take the next push wakes it again, and the queue reuses the
        // writer's empty buffer.
        batch.clear();
        let capacity = batch.capacity();
        conn.take_frames_into(&mut batch);
        conn.send(frame("c"));
        assert!(
            woken(&conn).await,
            "a push into an emptied queue wakes the writer"
        );
        assert!(capacity >= 2);
        assert_eq!(
            conn.queues().frames.capacity(),
            capacity,
            "no new allocation"
        );
        conn.take_frames_into(&mut batch);
        assert_eq!(batch, [frame("c")]);
        // Closing wakes it too.
        conn.close(1000, "");
        assert!(woken(&conn).await, "close wakes the writer");
    }

    #[tokio::test]
    async fn deferred_frames_wait_for_a_flush_or_the_next_frame() {
        let conn = ConnHandle::new(1, 64, 8);
        let mut batch = VecDeque::new();
        assert_eq!(conn.send_deferred(frame("j1")), Deferred::NeedsFlush);
        assert_eq!(
            conn.send_deferred(frame("j2")),
            Deferred::Queued,
            "scheduled once per flush"
        );
        assert!(
            !woken(&conn).await,
            "deferred frames do not wake the writer"
        );
        conn.flush_deferred();
        assert!(woken(&conn).await, "the flush woke the writer");
        conn.take_frames_into(&mut batch);
        assert_eq!(batch, [frame("j1"), frame("j2")]);
        batch.clear();

        // A frame that is not deferred takes the waiting ones along, in order.
        assert_eq!(conn.send_deferred(frame("j3")), Deferred::NeedsFlush);
        assert!(conn.send(frame("m1")));
        assert!(woken(&conn).await, "a plain frame wakes the writer");
        conn.take_frames_into(&mut batch);
        assert_eq!(batch, [frame("j3"), frame("m1")]);
        batch.clear();
        // The flush scheduled for j3 finds nothing left: no wake-up.
        conn.flush_deferred();
        assert!(!woken(&conn).await, "nothing waited: no wake-up");

        // While the writer is due anyway, a deferred frame needs no flush.
        assert!(conn.send(frame("m2")));
        assert_eq!(conn.send_deferred(frame("j4")), Deferred::Queued);
        assert!(woken(&conn).await, "woken for m2");
        conn.take_frames_into(&mut batch);
        assert_eq!(batch, [frame("m2"), frame("j4")]);

        // Once an eighth of the queue's bound waits, a deferred frame wakes
        // the writer at once: deferral never fills the queue.
        let conn = ConnHandle::new(1, 16, 1);
        assert_eq!(conn.send_deferred(frame("a")), Deferred::NeedsFlush);
        assert!(!woken(&conn).await, "1 of 16 waits: no wake-up yet");
        assert_eq!(conn.send_deferred(frame("b")), Deferred::Queued);
        assert!(woken(&conn).await, "2 of 16 wait: woken at once");
        assert_eq!(conn.take_frames().len(), 2);
    }

    #[tokio::test]
    async fn a_ping_request_wakes_the_writer_once() {
        let conn = ConnHandle::new(1, 8, 8);
        let mut batch = VecDeque::new();
        conn.request_ping();
        assert!(woken(&conn).await, "a ping request wakes the writer");
        assert!(
            conn.take_frames_into(&mut batch),
            "the writer sees the request"
        );
        assert!(batch.is_empty());
        assert!(!conn.take_frames_into(&mut batch), "once");
        // With frames already due, the request rides along.
        assert!(conn.send(frame("a")));
        conn.request_ping();
        assert!(woken(&conn).await, "woken for the frame");
        assert!(conn.take_frames_into(&mut batch));
        assert_eq!(batch, [frame("a")]);
        assert!(!woken(&conn).await, "one wake-up for both");
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_missed() {
        let conn = ConnHandle::new(1, 8, 8);
        conn.send(frame("x"));
        tokio::time::timeout(std::time::Duration::from_secs(1), conn.frames_ready())
            .await
            .expect("the permit was kept");
        assert_eq!(conn.take_frames().len(), 1);
    }
}

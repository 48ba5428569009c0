//! Gap fill (cluster guarantee 1): after the node's subscription was
//! interrupted (killed connection, Redis restart), each subscribed room's
//! messages published meanwhile are read from history, from the last `seq`
//! this node relayed, and delivered before the room's newer frames.
//!
//! The subscriber holds a room's live frames back from the moment the
//! connection drops (`Subscriber::open_gaps`, bounded by
//! `history.gap_buffer`); once resubscribed, the supervisor runs
//! [`Inner::fill_gaps`]: one history read per room (a read covers the whole
//! retention, `history.max_messages`), then the held frames, skipping what
//! history already delivered. A room whose buffer overflowed is read again;
//! one whose connection dropped again meanwhile stays held until the next
//! fill, after the resubscription.
//! If Redis does not answer, the fill is retried at the next supervisor tick,
//! and after [`MAX_FILL_FAILURES`] the room is released as it is (its
//! clients then see a gap in `seq`, as they would without history).

use super::subscriber::GapRelease;
use super::Inner;
use crate::backplane::{HistoryOutcome, HistoryQuery};

/// Failed fills of a room before it is released without its gap.
const MAX_FILL_FAILURES: u32 = 10;
/// Missed messages delivered between two yields to the writers (an eighth
/// of the default `limits.outbound_queue`).
const MISSED_PER_SLICE: usize = 32;
/// Reads of one room in one fill (each after an overflow of its buffer).
const MAX_READS_PER_FILL: usize = 8;

impl Inner {
    /// Fills every held room's gap; see the module docs.
    pub(super) async fn fill_gaps(&self) {
        for room in self.subscriber.gap_rooms() {
            self.fill_gap(&room).await;
        }
    }

    async fn fill_gap(&self, room: &str) {
        for _ in 0..MAX_READS_PER_FILL {
            let floor = self.subscriber.seq_floor(room);
            let query = HistoryQuery {
                member: None,
                after: Some(floor),
                before: None,
                limit: self.settings.history_max.max(1),
                epoch: None,
            };
            let outcome = match super::scripts::read_history(self, &self.keys, room, &query).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    let failures = self.subscriber.gap_failed(room);
                    tracing::warn!(%room, error = %e, failures, "gap fill failed; retrying");
                    if failures >= MAX_FILL_FAILURES {
                        self.subscriber.release_gap(room, true, false);
                    }
                    return;
                }
            };
            let page = match outcome {
                // Deleted meanwhile: nothing to fill.
                HistoryOutcome::NotMember => {
                    self.subscriber.release_gap(room, true, false);
                    return;
                }
                HistoryOutcome::Page(page) => page,
            };
            if page.last_seq < floor {
                // A numbering this node does not know: the room was deleted
                // and created again, or Redis lost its counter (the floor
                // is kept: the next publish continues above it, see
                // `seq_floor.rs`). Nothing to fill from; pass on what came.
                self.subscriber.release_gap(room, true, true);
                return;
            }
            let missed = page
                .messages
                .into_iter()
                .filter_map(|frame| {
                    let seq = crate::backplane::message_seq(&frame)?;
                    Some((seq, frame))
                })
                .collect::<Vec<_>>();
            let filled = missed.len();
            // In slices, letting the writers run between them: a whole
            // retention's worth (`history.max_messages`) at once could
            // exceed a healthy client's queue (`limits.outbound_queue`)
            // before its writer drains any of it, and close it with 4009.
            // Live frames stay held meanwhile, so the order holds.
            let mut new_floor = self.subscriber.seq_floor(room);
            let mut missed = missed.into_iter().peekable();
            while missed.peek().is_some() {
                let slice: Vec<_> = missed.by_ref().take(MISSED_PER_SLICE).collect();
                new_floor = self.subscriber.deliver_missed(room, slice);
                tokio::task::yield_now().await;
            }
            if filled > 0 {
                metrics::counter!(super::telemetry::GAP_FILLED).increment(filled as u64);
                tracing::info!(%room, from = floor + 1, to = new_floor, "gap filled from history");
            }
            match self.subscriber.release_gap(room, false, false) {
                GapRelease::Released | GapRelease::Pending => return,
                GapRelease::Overflowed => {}
            }
        }
        self.subscriber.release_gap(room, true, false);
    }
}

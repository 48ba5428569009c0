//! A room's history in Redis: a stream per room whose entry ids are
//! `<seq>-0` and whose one field `f` holds the MESSAGE frame as clients
//! receive it. The publish script appends to it atomically with INCR and
//! PUBLISH (capped at `history.max_messages`, expiring `history.ttl_secs`
//! after the last message); `read_history.lua` returns a page together with
//! the room's `last_seq` and `epoch` in one script, so the three agree. Its
//! arguments and reply are built and parsed here, for the wrapper in
//! `scripts.rs`.
//!
//! A room's `epoch` is the `epoch` field of its gate (`keys.rs`): the gate
//! is created with the room (with the epoch the room's settings got) and
//! deleted with it, so a re-created room gets a new one. A gate without one
//! (made by an older version) gets it on the first read, from a ULID the
//! caller passes (scripts cannot make random ids): as good as at creation,
//! since nobody can have seen an epoch before it was read.
//!
//! Whether the reader is a member is checked before the read, in the
//! control slot (`is_member`): a user taken out between the check and the
//! read still gets the page it was entitled to a moment earlier.

use ::redis::Value;
use bytes::Bytes;

use super::{int, internal, text};
use crate::backplane::{page_complete, BackplaneResult, HistoryOutcome, HistoryPage, HistoryQuery};

/// The arguments of `read_history.lua` after its keys.
pub(super) fn read_args(query: &HistoryQuery<'_>) -> [String; 5] {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    [
        opt(query.after),
        opt(query.before),
        query.limit.max(1).to_string(),
        query.epoch.unwrap_or_default().to_string(),
        ulid::Ulid::new().to_string(),
    ]
}

/// Parses the reply of `read_history.lua`.
pub(super) fn parse_read(
    query: &HistoryQuery<'_>,
    reply: Option<Vec<Value>>,
) -> BackplaneResult<HistoryOutcome> {
    let Some(reply) = reply else {
        return Ok(HistoryOutcome::NotMember);
    };
    let bad = || internal("read_history");
    let (Some(epoch), Some(last_seq), Some(matched)) = (
        reply.first().and_then(text),
        reply.get(1).and_then(int),
        reply.get(2).and_then(int),
    ) else {
        return Err(bad());
    };
    let mut seqs = Vec::with_capacity((reply.len() - 3) / 2);
    let mut messages = Vec::with_capacity(seqs.capacity());
    for entry in reply[3..].chunks(2) {
        let [id, Value::BulkString(frame)] = entry else {
            return Err(bad());
        };
        let seq = text(id)
            .and_then(|id| id.split('-').next()?.parse::<u64>().ok())
            .ok_or_else(bad)?;
        seqs.push(seq);
        messages.push(Bytes::copy_from_slice(frame));
    }
    let epoch_matched = matched == 1;
    let effective = if epoch_matched {
        *query
    } else {
        HistoryQuery {
            after: None,
            before: None,
            ..*query
        }
    };
    let last_seq = last_seq.max(0) as u64;
    Ok(HistoryOutcome::Page(HistoryPage {
        complete: page_complete(&effective, last_seq, &seqs, epoch_matched),
        messages,
        last_seq,
        epoch,
    }))
}

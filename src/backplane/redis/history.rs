//! A room's history in Redis: a stream per room whose entry ids are
//! `<seq>-0` and whose one field `f` holds the MESSAGE frame as clients
//! receive it. The publish script appends to it atomically with INCR and
//! PUBLISH (capped at `history.max_messages`, expiring `history.ttl_secs`
//! after the last message); the read below returns a page together with the
//! room's `last_seq` and `epoch` in one script, so the three agree.
//!
//! A room's `epoch` is the `epoch` field of its settings hash: the hash is
//! created with the room and deleted with it, so a re-created room gets a
//! new one. It is set on the first read (from a ULID the caller passes, as
//! scripts cannot make random ids), which is as good as at creation: nobody
//! can have seen an epoch before it was read.

use std::sync::LazyLock;

use ::redis::{Script, Value};
use bytes::Bytes;

use super::{int, internal, text};
use crate::backplane::{page_complete, BackplaneResult, HistoryOutcome, HistoryPage, HistoryQuery};

/// KEYS: room hash, seq counter, history stream, members hash (all of one
/// room). ARGV: member ("" for none: the node's own gap fill), after ("" for
/// none), before ("" for none), limit, epoch asked ("" for none), candidate
/// epoch. Returns false when the room is missing or `member` is not one of
/// its members, else `{epoch, last_seq, epoch matched, id, frame, ...}` in
/// `seq` order.
const READ_HISTORY: &str = r#"
local member, after, before, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
if member ~= '' and redis.call('HEXISTS', KEYS[4], member) == 0 then
  return false
end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[6])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local matched = 1
if ARGV[5] ~= '' and ARGV[5] ~= epoch then
  matched, after, before = 0, '', ''
end
local hi = '+'
if before ~= '' then
  hi = '(' .. before .. '-0'
end
local out = {epoch, last, matched}
if after ~= '' then
  local entries = redis.call('XRANGE', KEYS[3], '(' .. after .. '-0', hi, 'COUNT', limit)
  for i = 1, #entries do
    out[#out + 1] = entries[i][1]
    out[#out + 1] = entries[i][2][2]
  end
else
  local entries = redis.call('XREVRANGE', KEYS[3], hi, '-', 'COUNT', limit)
  for i = #entries, 1, -1 do
    out[#out + 1] = entries[i][1]
    out[#out + 1] = entries[i][2][2]
  end
end
return out
"#;

pub(super) static READ: LazyLock<Script> = LazyLock::new(|| Script::new(READ_HISTORY));

/// The arguments of [`READ_HISTORY`] after its keys.
pub(super) fn read_args(query: &HistoryQuery<'_>) -> [String; 6] {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    [
        query.member.unwrap_or_default().to_string(),
        opt(query.after),
        opt(query.before),
        query.limit.max(1).to_string(),
        query.epoch.unwrap_or_default().to_string(),
        ulid::Ulid::new().to_string(),
    ]
}

/// Parses the reply of [`READ_HISTORY`].
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

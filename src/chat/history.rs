//! HISTORY_REQUEST (op 8): a page of the current room's latest messages.
//!
//! Only the user's current room may be read, and the backplane checks the
//! membership atomically with the read, so bans, kicks and locks hold for
//! history as they do for messages. The session has already checked the
//! login and taken a token from the message rate limit.

use crate::backplane::{BackplaneResult, HistoryOutcome, HistoryQuery};
use crate::config::HistoryConfig;
use crate::protocol::{self, Frame, HistoryRequest, NoticeCode};

/// What the session sends back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HistoryAnswer {
    /// The HISTORY frame.
    Page(Frame),
    /// A NOTICE to send: the request named another room, or the user is
    /// no longer a member of its room.
    Refused(NoticeCode, String),
}

/// Answers `request` for the user `user_key` whose current room is `room`.
pub(crate) async fn answer(
    backplane: &dyn crate::backplane::Backplane,
    config: &HistoryConfig,
    user_key: &str,
    room: &str,
    request: &HistoryRequest,
) -> BackplaneResult<HistoryAnswer> {
    if let Some(asked) = &request.room {
        if !asked.eq_ignore_ascii_case(room) {
            return Ok(not_in_room(room, asked));
        }
    }
    let query = HistoryQuery {
        member: Some(user_key),
        after: request.after,
        before: request.before,
        limit: page_limit(request.limit, config.page_size),
        epoch: request.epoch.as_deref(),
    };
    Ok(match backplane.history(room, &query).await? {
        HistoryOutcome::Page(mut page) => {
            let forwards =
                request.after.is_some() && request.epoch.as_ref().is_none_or(|e| *e == page.epoch);
            trim_to_bytes(&mut page.messages, config.max_page_bytes, forwards);
            HistoryAnswer::Page(protocol::history(
                room,
                &page.epoch,
                &page.messages,
                page.last_seq,
                page.complete,
            ))
        }
        HistoryOutcome::NotMember => not_in_room(room, room),
    })
}

/// `limit` defaults to the page size and is capped by it; 0 is taken as 1
/// (an empty page tells a client nothing about what it missed).
fn page_limit(asked: Option<u64>, page_size: usize) -> usize {
    let page_size = page_size.max(1);
    asked
        .map_or(page_size, |l| usize::try_from(l).unwrap_or(usize::MAX))
        .clamp(1, page_size)
}

/// Ends a page at `max_bytes` of messages (keeping at least one): paging
/// forwards keeps the oldest (the client asks again after the last), the
/// latest or scrolling back keeps the newest (the client scrolls on before
/// the first). `complete` is about the end next to the requested position,
/// which is kept, so it does not change.
fn trim_to_bytes(messages: &mut Vec<bytes::Bytes>, max_bytes: usize, forwards: bool) {
    let mut total = 0;
    let fits = |m: &bytes::Bytes, total: &mut usize| {
        *total += m.len();
        *total <= max_bytes
    };
    if forwards {
        let keep = messages
            .iter()
            .take_while(|m| fits(m, &mut total))
            .count()
            .max(1);
        messages.truncate(keep);
    } else {
        let keep = messages
            .iter()
            .rev()
            .take_while(|m| fits(m, &mut total))
            .count()
            .max(1);
        let drop = messages.len().saturating_sub(keep);
        messages.drain(..drop);
    }
}

fn not_in_room(current: &str, asked: &str) -> HistoryAnswer {
    HistoryAnswer::Refused(
        NoticeCode::NotInRoom,
        format!(
            "You are not in {asked}; history is read only by its members (you are in {current})."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_to_and_is_capped_by_the_page_size() {
        assert_eq!(page_limit(None, 100), 100);
        assert_eq!(page_limit(Some(5), 100), 5);
        assert_eq!(page_limit(Some(1000), 100), 100);
        assert_eq!(page_limit(Some(u64::MAX), 100), 100);
        assert_eq!(page_limit(Some(0), 100), 1);
    }

    #[test]
    fn pages_end_at_the_byte_budget_on_the_far_side() {
        let page = || -> Vec<bytes::Bytes> {
            (1..=4)
                .map(|i| bytes::Bytes::from(format!("m{i}--")))
                .collect()
        };
        let mut forwards = page();
        trim_to_bytes(&mut forwards, 10, true);
        assert_eq!(forwards, [&b"m1--"[..], b"m2--"]);
        let mut latest = page();
        trim_to_bytes(&mut latest, 10, false);
        assert_eq!(latest, [&b"m3--"[..], b"m4--"]);
        let mut one = page();
        trim_to_bytes(&mut one, 1, false);
        assert_eq!(one, [&b"m4--"[..]], "at least one message");
    }
}

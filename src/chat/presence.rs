//! When joined/left is announced: the one rule, for the sessions and for
//! whoever announces on behalf of users that cannot (the Redis backplane's
//! reaper of dead nodes, `backplane/redis/presence.rs`, which still compares
//! with the limit itself: the lead wires it to [`announces`]).

/// Whether a `joined` or `left` for a room is published. `members` counts
/// the room with the user in it (after a join, before a leave), so a room is
/// silent from the same size on whichever way a user crosses it.
///
/// Rooms above `limits.presence_notice_max_members` stay silent so that a
/// crowd logging into one room does not cost the square of its size.
pub(crate) fn announces(members: u64, max_members: u64) -> bool {
    members <= max_members
}

/// `members` for [`announces`] after a user left a room that now has
/// `remaining` members.
pub(crate) fn members_before_leaving(remaining: u64) -> u64 {
    remaining.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_the_user_in_the_room() {
        assert!(announces(200, 200));
        assert!(!announces(201, 200));
        // 200 remain after a leave: the room had 201, silent.
        assert!(!announces(members_before_leaving(200), 200));
        assert!(announces(members_before_leaving(199), 200));
        assert!(!announces(1, 0));
    }
}

//! Who owns a room (PROTOCOL.md "Ownership"). The backplane stores the
//! owner id verbatim and never interprets it; only this module makes one.
//!
//! - `auth.mode = "token"`: the token's subject (`tok:<user key>`; the
//!   subject is the name, compared case-insensitively), so the room stays
//!   its owner's across reconnects and nodes.
//! - open mode: the connection that created the room (`conn:<ulid>:<user
//!   key>`, the ulid new for every connection; the name only labels the id
//!   for operators). When it ends, no live session carries that id: the
//!   room has no owner (admins can still manage it), and a later user who
//!   picks the same name does not inherit it.

use crate::config::AuthMode;

/// A fresh id for one connection, unique across the cluster. Kept as the
/// 16-byte ulid, not as text: every open connection holds one.
pub(crate) fn connection_id() -> ulid::Ulid {
    ulid::Ulid::new()
}

/// The owner id of rooms created by a user logged in as `user_key` on the
/// connection whose id is `connection`.
pub(crate) fn owner_id(mode: AuthMode, user_key: &str, connection: ulid::Ulid) -> String {
    match mode {
        AuthMode::Token => format!("tok:{user_key}"),
        AuthMode::Open => format!("conn:{connection}:{user_key}"),
    }
}

/// The user key an owner id was made for, for display (the admin API): the
/// subject in token mode, the name of the creating connection in open mode.
pub(crate) fn owner_name(owner_id: &str) -> &str {
    match owner_id.strip_prefix("tok:") {
        Some(subject) => subject,
        None => owner_id.rsplit(':').next().unwrap_or(owner_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_owners_are_the_subject_and_open_owners_the_connection() {
        let (a, b) = (connection_id(), connection_id());
        assert_ne!(a, b);
        assert_eq!(owner_id(AuthMode::Token, "ann", a), "tok:ann");
        assert_eq!(
            owner_id(AuthMode::Token, "ann", a),
            owner_id(AuthMode::Token, "ann", b)
        );
        assert_eq!(owner_id(AuthMode::Open, "ann", a), format!("conn:{a}:ann"));
        assert_eq!(owner_name(&owner_id(AuthMode::Open, "ann", a)), "ann");
        assert_eq!(owner_name(&owner_id(AuthMode::Token, "ann", a)), "ann");
        assert_ne!(
            owner_id(AuthMode::Open, "ann", a),
            owner_id(AuthMode::Open, "ann", b)
        );
    }
}

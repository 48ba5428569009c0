//! Names of every Redis key and channel the backplane uses: the one place
//! that decides them.
//!
//! Everything starts with `redis.key_prefix` + `:` so that several clusters
//! (or other applications) can share one Redis. Keys carry a Redis Cluster
//! hash tag (the part between `{` and `}`), which decides their slot:
//!
//! - **Per room**, tag `{room}`: every key of one room and its channel share
//!   one slot, so a script about one room touches one slot (room names are
//!   `a-z 0-9 _ -`, so they never contain a brace).
//! - **Global** state (names, rooms, nodes, the node user lists, the dataset
//!   epoch), tag `{global}`: one slot, touched per login, move and
//!   heartbeat, never per message (a room named `global` lands in the same
//!   slot, which is harmless).
//!
//! With the prefix `P`:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:room:{r}` | hash | `owner` (owner id chosen by the chat rules, empty for none), `locked`, `pw`, `closed` |
//! | `P:seq:{r}` | string | last `seq` given in the room |
//! | `P:bans:{r}` | set | banned user keys |
//! | `P:history:{r}` | stream | the latest messages: id `<seq>-0`, field `f` = MESSAGE frame (see `history.rs`); `epoch` is a field of `P:room:{r}` |
//! | `P:members:{r}` | hash | user key → display name |
//! | `P:{global}:rooms` | set | names of existing rooms |
//! | `P:{global}:names` | hash | user key → node id holding the name |
//! | `P:{global}:node:ID:users` | hash | user key → room ("" before the first join): what to reap |
//! | `P:{global}:node:ID:token` | string | the live process's token: missing means "re-register" |
//! | `P:{global}:nodes` | zset | node id → last heartbeat (Redis server time, ms) |
//! | `P:{global}:epoch` | string | random id of this Redis dataset: changes when Redis lost its data |
//!
//! Channels: `P:ch:{r}` (a room's frames, verbatim, same slot as the room's
//! keys, ready for sharded pub/sub), `P:ch:events` (JSON
//! [`super::super::ClusterEvent`]s), `P:ch:probe:ID` (a node's own probe).
//!
//! Scripts receive their keys in KEYS, built here. The scripts that learn a
//! room only while running (a dead node's rooms, a user's recorded room)
//! build its keys with `room_key` in `lua/common.lua`, the same formula as
//! [`Keys::room_key`]; a test checks that the two agree.

/// The kinds of per-room keys (the word before the tag).
pub(crate) const ROOM: &str = "room";
pub(crate) const SEQ: &str = "seq";
pub(crate) const BANS: &str = "bans";
pub(crate) const MEMBERS: &str = "members";
pub(crate) const HISTORY: &str = "history";

/// Key and channel names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
    global: String,
    room_channel_prefix: String,
    events_channel: String,
}

impl Keys {
    pub fn new(key_prefix: &str) -> Self {
        let base = format!("{key_prefix}:");
        Self {
            global: format!("{base}{{global}}:"),
            room_channel_prefix: format!("{base}ch:{{"),
            events_channel: format!("{base}ch:events"),
            base,
        }
    }

    /// `prefix:`: what the multi-room scripts get to build room keys
    /// (`room_key` in `lua/common.lua`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `prefix:KIND:{room}`.
    pub fn room_key(&self, kind: &str, room: &str) -> String {
        format!("{}{kind}:{{{room}}}", self.base)
    }

    pub fn room(&self, room: &str) -> String {
        self.room_key(ROOM, room)
    }

    pub fn seq(&self, room: &str) -> String {
        self.room_key(SEQ, room)
    }

    pub fn bans(&self, room: &str) -> String {
        self.room_key(BANS, room)
    }

    pub fn history(&self, room: &str) -> String {
        self.room_key(HISTORY, room)
    }

    pub fn members(&self, room: &str) -> String {
        self.room_key(MEMBERS, room)
    }

    /// `prefix:owned:{owner}`: the set of rooms an owner id owns
    /// (`limits.rooms_per_user`), under the owner's hash tag.
    pub fn owned(&self, owner: &str) -> String {
        self.room_key("owned", owner)
    }

    pub fn rooms(&self) -> String {
        format!("{}rooms", self.global)
    }

    /// `prefix:{global}:empty_rooms`: rooms scored by the time (ms) their
    /// last member left (`limits.empty_room_ttl_secs`).
    pub fn empty_rooms(&self) -> String {
        format!("{}empty_rooms", self.global)
    }

    pub fn names(&self) -> String {
        format!("{}names", self.global)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes", self.global)
    }

    pub fn epoch(&self) -> String {
        format!("{}epoch", self.global)
    }

    /// `prefix:{global}:node:`: what the scripts that reach other nodes'
    /// lists (reaping, take-over) build them from.
    pub fn node_base(&self) -> String {
        format!("{}node:", self.global)
    }

    pub fn node_users(&self, node_id: &str) -> String {
        format!("{}{node_id}:users", self.node_base())
    }

    pub fn node_token(&self, node_id: &str) -> String {
        format!("{}{node_id}:token", self.node_base())
    }

    pub fn room_channel(&self, room: &str) -> String {
        format!("{}{room}}}", self.room_channel_prefix)
    }

    pub fn events_channel(&self) -> &str {
        &self.events_channel
    }

    pub fn probe_channel(&self, node_id: &str) -> String {
        format!("{}ch:probe:{node_id}", self.base)
    }

    /// The room whose channel this is, if it is a room channel.
    pub fn room_of_channel<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.room_channel_prefix.as_bytes())?;
        let room = rest.strip_suffix(b"}")?;
        std::str::from_utf8(room).ok()
    }
}

/// The hash tag of a key (what Redis Cluster hashes), as Redis computes it.
#[cfg(test)]
pub(crate) fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_the_prefix() {
        let keys = Keys::new("sc");
        for name in [
            keys.room("a"),
            keys.seq("a"),
            keys.bans("a"),
            keys.members("a"),
            keys.history("a"),
            keys.rooms(),
            keys.names(),
            keys.nodes(),
            keys.epoch(),
            keys.node_users("n1"),
            keys.node_token("n1"),
            keys.room_channel("a"),
            keys.events_channel().to_string(),
            keys.probe_channel("n1"),
        ] {
            assert!(name.starts_with("sc:"), "{name}");
        }
    }

    #[test]
    fn a_rooms_keys_and_channel_share_one_tag() {
        let keys = Keys::new("sc");
        for name in [
            keys.room("lobby"),
            keys.seq("lobby"),
            keys.bans("lobby"),
            keys.members("lobby"),
            keys.history("lobby"),
            keys.room_channel("lobby"),
        ] {
            assert_eq!(hash_tag(&name), "lobby", "{name}");
        }
        for name in [
            keys.rooms(),
            keys.names(),
            keys.nodes(),
            keys.epoch(),
            keys.node_users("n1"),
            keys.node_token("n1"),
        ] {
            assert_eq!(hash_tag(&name), "global", "{name}");
        }
    }

    #[test]
    fn room_channels_round_trip() {
        let keys = Keys::new("sc");
        let channel = keys.room_channel("lobby");
        assert_eq!(channel, "sc:ch:{lobby}");
        assert_eq!(keys.room_of_channel(channel.as_bytes()), Some("lobby"));
        assert_eq!(keys.room_of_channel(keys.events_channel().as_bytes()), None);
        assert_eq!(
            keys.room_of_channel(keys.probe_channel("n").as_bytes()),
            None
        );
    }
}

//! Names of every Redis key and channel the backplane uses: the one place
//! that decides them.
//!
//! Everything starts with `redis.key_prefix` + `:` so that several clusters
//! (or other applications) can share one Redis. Keys carry a Redis Cluster
//! hash tag (the part between `{` and `}`), which decides their slot:
//!
//! - **A room's messages**, tag `{room}`: its `seq`, history, message gate
//!   and channel share one slot, so publishing a message (the hot path)
//!   and reading history touch that slot only, and in a Redis Cluster each
//!   room's traffic stays on the shard that owns it (room names are
//!   `a-z 0-9 _ -`, so they never contain a brace).
//! - **Control state**, tag `{global}`: names, the room registry, every
//!   room's settings, bans and members, owners' room sets, nodes, the node
//!   user lists, the dataset epoch. One slot, touched per login, move,
//!   moderation command and heartbeat, never per message: a join checks
//!   name, ban, lock and room limits and moves the membership in one
//!   atomic script, which a Redis Cluster allows only within one slot
//!   (issue 12). Measured: 19,551 such scripts/s on one Redis against
//!   18,388/s on a 3-shard cluster (tests/redis_cluster_global_slot_bench.rs),
//!   far above the login rates a node serves.
//!
//! A room therefore has state in two slots. What must agree between them is
//! kept by the node in order (see `scripts.rs`): a room is created in the
//! control slot first, then its gate; closed in the control slot, then in
//! the gate; deleted in the control slot, then its message keys (a gate
//! only goes if it carries the deleted room's epoch, so a room re-created
//! meanwhile keeps its own).
//!
//! With the prefix `P`:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:seq:{r}` | string | last `seq` given in the room |
//! | `P:history:{r}` | stream | the latest messages: id `<seq>-0`, field `f` = MESSAGE frame (see `history.rs`) |
//! | `P:gate:{r}` | hash | `closed` ("1": messages refused), `epoch` (the room's history epoch); missing: no such room for messages |
//! | `P:{global}:room:r` | hash | `owner` (owner id chosen by the chat rules, empty for none), `locked`, `pw`, `closed`, `epoch` (same as the gate's) |
//! | `P:{global}:bans:r` | set | banned user keys |
//! | `P:{global}:members:r` | hash | user key → display name |
//! | `P:{global}:owned:OWNER` | set | rooms an owner id owns (`limits.rooms_per_user`) |
//! | `P:{global}:rooms` | set | names of existing rooms |
//! | `P:{global}:empty_rooms` | zset | rooms by the time (ms) their last member left |
//! | `P:{global}:names` | hash | user key → node id holding the name |
//! | `P:{global}:node:ID:users` | hash | user key → room ("" before the first join): what to reap |
//! | `P:{global}:node:ID:token` | string | the live process's token: missing means "re-register" |
//! | `P:{global}:nodes` | zset | node id → last heartbeat (Redis server time, ms) |
//! | `P:{global}:epoch` | string | random id of this Redis dataset: changes when Redis lost its data |
//!
//! Channels: `P:ch:{r}` (a room's frames, verbatim, same slot as the room's
//! messages: sharded pub/sub in cluster mode), `P:ch:events` (JSON
//! [`super::super::ClusterEvent`]s), `P:ch:probe:ID` (a node's own probe).
//!
//! Scripts receive their keys in KEYS, built here. The scripts that learn a
//! room only while running (a dead node's rooms, a user's recorded room)
//! build its control keys with `room_key` in `lua/common.lua`, the same
//! formula as [`Keys::control_key`]; a test checks that the two agree.

/// The kinds of per-room keys (the word before the room's name or tag).
pub(crate) const ROOM: &str = "room";
pub(crate) const SEQ: &str = "seq";
pub(crate) const BANS: &str = "bans";
pub(crate) const MEMBERS: &str = "members";
pub(crate) const HISTORY: &str = "history";
pub(crate) const GATE: &str = "gate";
pub(crate) const OWNED: &str = "owned";

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

    /// `prefix:KIND:{room}`: a key of the room's message slot.
    pub fn room_key(&self, kind: &str, room: &str) -> String {
        format!("{}{kind}:{{{room}}}", self.base)
    }

    /// `prefix:{global}:KIND:room`: a room's (or owner's) control key.
    pub fn control_key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.global)
    }

    /// The room's settings (control slot).
    pub fn room(&self, room: &str) -> String {
        self.control_key(ROOM, room)
    }

    pub fn bans(&self, room: &str) -> String {
        self.control_key(BANS, room)
    }

    pub fn members(&self, room: &str) -> String {
        self.control_key(MEMBERS, room)
    }

    /// `prefix:{global}:owned:OWNER`: the set of rooms an owner id owns
    /// (`limits.rooms_per_user`).
    pub fn owned(&self, owner: &str) -> String {
        self.control_key(OWNED, owner)
    }

    pub fn seq(&self, room: &str) -> String {
        self.room_key(SEQ, room)
    }

    pub fn history(&self, room: &str) -> String {
        self.room_key(HISTORY, room)
    }

    /// The room's message gate (message slot): `closed` and `epoch`.
    pub fn gate(&self, room: &str) -> String {
        self.room_key(GATE, room)
    }

    /// `prefix:{global}:NAME`.
    pub fn global_key(&self, name: &str) -> String {
        format!("{}{name}", self.global)
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
            keys.gate("a"),
            keys.owned("o"),
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
    fn messages_sit_in_the_rooms_slot_and_control_state_in_the_global_one() {
        let keys = Keys::new("sc");
        for name in [
            keys.seq("lobby"),
            keys.history("lobby"),
            keys.gate("lobby"),
            keys.room_channel("lobby"),
        ] {
            assert_eq!(hash_tag(&name), "lobby", "{name}");
        }
        for name in [
            keys.room("lobby"),
            keys.bans("lobby"),
            keys.members("lobby"),
            keys.owned("tok:ann"),
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

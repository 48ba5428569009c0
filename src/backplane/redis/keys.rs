//! Names of every Redis key and channel the backplane uses.
//!
//! Everything starts with `redis.key_prefix` + `:` so that several clusters
//! (or other applications) can share one Redis. With the prefix `P`:
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:rooms` | set | names of existing rooms |
//! | `P:room:{room}` | hash | `owner` (user key, empty for none), `locked`, `pw`, `closed` |
//! | `P:seq:{room}` | string | last `seq` given in the room |
//! | `P:bans:{room}` | set | banned user keys |
//! | `P:history:{room}` | stream | the latest messages: id `<seq>-0`, field `f` = MESSAGE frame (see `history.rs`) |
//! | `P:members:{room}` | hash | user key → display name |
//! | `P:names` | hash | user key → node id holding the name |
//! | `P:node:{id}:users` | hash | user key → room ("" before the first join): what to reap |
//! | `P:node:{id}:token` | string | the live process's token: missing means "re-register" |
//! | `P:nodes` | zset | node id → last heartbeat (Redis server time, ms) |
//! | `P:epoch` | string | random id of this Redis dataset: changes when Redis lost its data |
//!
//! Channels: `P:ch:room:{room}` (frames, verbatim), `P:ch:events` (JSON
//! [`super::super::ClusterEvent`]s), `P:ch:probe:{id}` (a node's own probe).
//!
//! The Lua scripts build room keys themselves from the same base (they
//! receive [`Keys::base`]), so the layout above is defined twice: here and in
//! `scripts.rs`. Keep them in step.

/// Key and channel names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
    room_channel_prefix: String,
    events_channel: String,
}

impl Keys {
    pub fn new(key_prefix: &str) -> Self {
        let base = format!("{key_prefix}:");
        Self {
            room_channel_prefix: format!("{base}ch:room:"),
            events_channel: format!("{base}ch:events"),
            base,
        }
    }

    /// `prefix:`: what the scripts get to build their keys.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn room(&self, room: &str) -> String {
        format!("{}room:{room}", self.base)
    }

    pub fn seq(&self, room: &str) -> String {
        format!("{}seq:{room}", self.base)
    }

    pub fn bans(&self, room: &str) -> String {
        format!("{}bans:{room}", self.base)
    }

    pub fn history(&self, room: &str) -> String {
        format!("{}history:{room}", self.base)
    }

    pub fn members(&self, room: &str) -> String {
        format!("{}members:{room}", self.base)
    }

    pub fn room_channel(&self, room: &str) -> String {
        format!("{}{room}", self.room_channel_prefix)
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
        std::str::from_utf8(rest).ok()
    }
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
            keys.room_channel("a"),
            keys.events_channel().to_string(),
            keys.probe_channel("n1"),
        ] {
            assert!(name.starts_with("sc:"), "{name}");
        }
    }

    #[test]
    fn room_channels_round_trip() {
        let keys = Keys::new("sc");
        let channel = keys.room_channel("lobby");
        assert_eq!(keys.room_of_channel(channel.as_bytes()), Some("lobby"));
        assert_eq!(keys.room_of_channel(keys.events_channel().as_bytes()), None);
    }
}

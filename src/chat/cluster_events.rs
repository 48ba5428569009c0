//! What a cluster event means for this node's clients. The rules live here;
//! the registry only carries the reaction out on its local connections.
//!
//! Every node receives every [`ClusterEvent`] (the publisher included), so
//! the reaction is the same everywhere: who on this node is concerned, and
//! with which frame, control or close.

use crate::backplane::ClusterEvent;
use crate::conn::{Control, EvictReason};
use crate::protocol::{self, close, Frame, NoticeCode, RoomStateReason};

/// What this node does with one cluster event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reaction {
    /// The frame goes to every logged-in connection of this node.
    ToEveryone(Frame),
    /// The control goes to every local member of `room`.
    ToRoomMembers { room: String, control: Control },
    /// One user, if it is connected to this node.
    ToUser {
        user_key: String,
        action: UserAction,
    },
    /// The whole cluster stops: this node too, clients told not to come back.
    StopCluster { reason: Option<String> },
    /// The node named `node_id` drains as on SIGTERM (clients reconnect
    /// elsewhere); other nodes do nothing.
    Drain { node_id: String },
}

/// What reaches one user's connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UserAction {
    Frame(Frame),
    Control(Control),
    /// The frame, then a close with the code.
    Close {
        frame: Frame,
        code: u16,
        reason: &'static str,
    },
}

/// The reaction to `event`.
pub(crate) fn react(event: ClusterEvent) -> Reaction {
    match event {
        ClusterEvent::RoomState { room, reason } => {
            Reaction::ToEveryone(protocol::room_state(&room, reason))
        }
        ClusterEvent::RoomEvacuated { room, reason } => {
            let reason = if reason == RoomStateReason::Deleted {
                EvictReason::Deleted
            } else {
                EvictReason::Closed
            };
            Reaction::ToRoomMembers {
                control: Control::Evicted {
                    room: room.clone(),
                    reason,
                },
                room,
            }
        }
        ClusterEvent::Evict {
            room,
            user_key,
            banned,
        } => {
            let reason = if banned {
                EvictReason::Banned
            } else {
                EvictReason::Kicked
            };
            Reaction::ToUser {
                user_key,
                action: UserAction::Control(Control::Evicted { room, reason }),
            }
        }
        // `banned`/`unbanned` go only to the user concerned (PROTOCOL.md,
        // ROOM_STATE); `banned` is sent by the session as it leaves.
        ClusterEvent::Unbanned { room, user_key } => Reaction::ToUser {
            user_key,
            action: UserAction::Frame(protocol::room_state(&room, RoomStateReason::Unbanned)),
        },
        ClusterEvent::Shutdown { reason } => Reaction::StopCluster { reason },
        ClusterEvent::Drain { node_id } => Reaction::Drain { node_id },
    }
}

/// The local connection of a user whose name another node's login claimed
/// while this node was presumed dead (issue 9, 5a): it must not go on
/// under the name. PROTOCOL.md names no close code for it: 1008.
pub(crate) fn name_lost() -> UserAction {
    UserAction::Close {
        frame: protocol::notice(
            NoticeCode::NameTaken,
            "Your name was taken by another login while this server was cut off from the cluster.",
            None,
            None,
        ),
        code: close::POLICY,
        reason: "name taken elsewhere",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_events_reach_the_right_connections() {
        let state = react(ClusterEvent::RoomState {
            room: "r".into(),
            reason: RoomStateReason::Locked,
        });
        assert_eq!(
            state,
            Reaction::ToEveryone(protocol::room_state("r", RoomStateReason::Locked))
        );
        let evacuated = react(ClusterEvent::RoomEvacuated {
            room: "r".into(),
            reason: RoomStateReason::Deleted,
        });
        assert_eq!(
            evacuated,
            Reaction::ToRoomMembers {
                room: "r".into(),
                control: Control::Evicted {
                    room: "r".into(),
                    reason: EvictReason::Deleted
                }
            }
        );
        let ban = react(ClusterEvent::Evict {
            room: "r".into(),
            user_key: "ann".into(),
            banned: true,
        });
        assert!(matches!(
            ban,
            Reaction::ToUser { ref user_key, action: UserAction::Control(Control::Evicted { reason: EvictReason::Banned, .. }) } if user_key == "ann"
        ));
        assert!(matches!(
            react(ClusterEvent::Unbanned {
                room: "r".into(),
                user_key: "ann".into()
            }),
            Reaction::ToUser {
                action: UserAction::Frame(_),
                ..
            }
        ));
    }
}

//! Moving between rooms, listing rooms and users, CACHE_UPDATE, presence
//! notices and ROOM_STATE announcements.

use super::commands::Checked;
use super::presence;
use super::replies::{self, Refusal};
use super::session::Session;
use crate::backplane::{password_hash, BackplaneError, ClusterEvent, JoinOutcome, JoinRequest};
use crate::protocol::{self, NoticeCode, RoomStateReason, RoomSummary};
use crate::registry::EvictReason;

impl Session {
    pub(super) async fn cmd_join(&mut self, checked: Checked) -> Result<(), Refusal> {
        let args = &checked.invocation;
        let room = args.arg(0).unwrap_or_default().to_string();
        let password = args.arg(1).map(str::to_string);
        if self.current_room() == room {
            self.info(&format!("You are already in {room}."));
            return Ok(());
        }
        // The CACHE_UPDATE of the move is the answer.
        self.move_or_refuse(&room, password.as_deref()).await
    }

    pub(super) async fn cmd_leave(&mut self, _: Checked) -> Result<(), Refusal> {
        let room = self.chat.config.server.default_room.clone();
        if self.current_room() == room {
            self.info(&format!("You are already in {room}."));
            return Ok(());
        }
        self.move_or_refuse(&room, None).await?;
        self.info(&replies::moved(&room));
        Ok(())
    }

    async fn move_or_refuse(&mut self, room: &str, password: Option<&str>) -> Result<(), Refusal> {
        match self.move_to(room, password, true).await? {
            JoinOutcome::Joined { .. } => Ok(()),
            refused => Err(Refusal::join(refused, room)),
        }
    }

    pub(super) async fn cmd_rooms(&mut self, _: Checked) -> Result<(), Refusal> {
        let listed = self.listed_rooms(&self.current_room()).await?;
        let rooms: Vec<String> = listed
            .rooms
            .iter()
            .map(|r| {
                let state = match (r.closed, r.locked) {
                    (true, _) => "closed, ",
                    (false, true) => "locked, ",
                    _ => "",
                };
                format!("{} ({state}{} online)", r.name, r.users)
            })
            .collect();
        let more = listed.rooms_total.saturating_sub(listed.rooms.len() as u64);
        let more = if more == 0 {
            String::new()
        } else {
            format!(" and {more} more")
        };
        self.info(&format!(
            "Rooms: {}{more}. {} online in all.",
            rooms.join(", "),
            listed.users
        ));
        Ok(())
    }

    pub(super) async fn cmd_users(&mut self, _: Checked) -> Result<(), Refusal> {
        let room = self.current_room();
        let limit = self.chat.config.limits.max_listed_users;
        let members = self.chat.backplane.room_members(&room, limit).await?;
        let more = members.total.saturating_sub(members.names.len() as u64);
        let names = members.names.join(", ");
        let message = if more == 0 {
            format!("Users in {room} ({}): {names}", members.total)
        } else {
            format!(
                "Users in {room} ({}): {names} and {more} more",
                members.total
            )
        };
        self.conn
            .send(protocol::users_notice(&message, &room, &members.names));
        Ok(())
    }

    /// The cluster moved this user out of `room` (closed, deleted, kicked,
    /// banned): to the default room, with an `info` saying why.
    pub(super) async fn evicted(&mut self, room: &str, reason: EvictReason) -> Result<(), Refusal> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        if reason == EvictReason::Banned {
            self.conn
                .send(protocol::room_state(room, RoomStateReason::Banned));
        }
        if user.room != room {
            return Ok(());
        }
        let default_room = self.chat.config.server.default_room.clone();
        match self.move_to(&default_room, None, false).await? {
            JoinOutcome::Joined { .. } => {
                self.info(&replies::evicted(reason, room, &default_room));
            }
            other => tracing::warn!(?other, "could not move a user to the default room"),
        }
        Ok(())
    }

    /// Moves the user to `room` atomically on the backplane, then locally;
    /// announces the move and sends the new CACHE_UPDATE.
    pub(super) async fn move_to(
        &mut self,
        room: &str,
        password: Option<&str>,
        create: bool,
    ) -> Result<JoinOutcome, BackplaneError> {
        let chat = self.chat.clone();
        let user = self.user();
        let owner_id = self.owner_id();
        chat.registry.acquire_room(&*chat.backplane, room).await?;
        let outcome = chat
            .backplane
            .join_room(JoinRequest {
                user_key: &user.key,
                display_name: &user.name,
                room,
                password_hash: password.map(|p| password_hash(room, p)).as_deref(),
                create,
                owner: &owner_id,
                previous_room: Some(&user.room),
                max_rooms: chat.config.limits.max_rooms,
                max_owned_rooms: chat.config.limits.owned_rooms_limit(user.admin),
            })
            .await;
        let Ok(JoinOutcome::Joined {
            created,
            members,
            previous_members,
            seq: joined_seq,
        }) = outcome
        else {
            chat.registry.abandon_join(&*chat.backplane, room);
            return outcome;
        };
        let (key, name) = (user.key.clone(), user.name.clone());
        let user = self.user.as_mut().expect("checked above");
        let previous = std::mem::replace(&mut user.room, room.to_string());
        // The move's CACHE_UPDATE goes out before the new room's traffic.
        if let Err(refusal) = self.send_cache_update().await {
            self.notice(refusal.code, &refusal.message);
        }
        chat.registry
            .enter(&key, &name, room, &self.conn, joined_seq);
        chat.registry.release_room(&*chat.backplane, &previous);
        // None: already taken out (and announced) by whoever reaped it.
        if let Some(previous_members) = previous_members {
            let left_members = presence::members_before_leaving(previous_members);
            self.announce(&previous, &name, NoticeCode::Left, left_members)
                .await;
        }
        if created {
            self.publish_room_state(room, RoomStateReason::Created)
                .await;
        }
        self.announce(room, &name, NoticeCode::Joined, members)
            .await;
        outcome
    }

    /// Publishes joined/left to `room` when [`presence::announces`] says so
    /// (`members` counts the room with the user in it).
    pub(super) async fn announce(&self, room: &str, name: &str, code: NoticeCode, members: u64) {
        if !presence::announces(members, self.chat.config.limits.presence_notice_max_members) {
            return;
        }
        let frame = protocol::presence_notice(code == NoticeCode::Joined, name, room);
        if let Err(error) = self
            .chat
            .backplane
            .publish_to_room(room, frame.into())
            .await
        {
            tracing::debug!(%error, "could not announce a presence change");
        }
    }

    /// ROOM_STATE to every logged-in client of the cluster; best effort.
    pub(super) async fn publish_room_state(&self, room: &str, reason: RoomStateReason) {
        let event = ClusterEvent::RoomState {
            room: room.to_string(),
            reason,
        };
        if let Err(error) = self.chat.backplane.publish_event(&event).await {
            tracing::warn!(%error, "could not publish a room state change");
        }
    }

    /// The rooms a user is shown (CACHE_UPDATE, `\rooms`): at most
    /// `limits.max_listed_rooms`, the user's own room first, then the default
    /// room, then the busiest (ties by name). A pinned room that is not
    /// among the busiest costs two small reads; nothing costs O(rooms) in
    /// frame size.
    async fn listed_rooms(&self, own_room: &str) -> Result<ListedRooms, BackplaneError> {
        let chat = &self.chat;
        let limit = chat.config.limits.max_listed_rooms;
        let snapshot = chat.backplane.snapshot(limit).await?;
        let mut busiest = snapshot.rooms;
        let mut rooms = Vec::with_capacity(limit.min(busiest.len() + 2));
        for name in [own_room, chat.config.server.default_room.as_str()] {
            if rooms.iter().any(|r: &RoomSummary| r.name == name) {
                continue;
            }
            if let Some(at) = busiest.iter().position(|r| r.name == name) {
                rooms.push(busiest.remove(at));
            } else if let Some(info) = chat.backplane.room(name).await? {
                let members = chat.backplane.room_members(name, 1).await?;
                rooms.push(RoomSummary {
                    name: info.name,
                    available: !info.locked && !info.closed,
                    locked: info.locked,
                    closed: info.closed,
                    users: members.total,
                });
            }
        }
        rooms.extend(busiest);
        rooms.truncate(limit);
        Ok(ListedRooms {
            // A pinned room read after the snapshot may be one more.
            rooms_total: snapshot.rooms_total.max(rooms.len() as u64),
            rooms,
            users: snapshot.users,
        })
    }

    pub(super) async fn send_cache_update(&self) -> Result<(), Refusal> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let listed = self.listed_rooms(&user.room).await?;
        let config = &self.chat.config;
        self.conn.send(protocol::cache_update(
            &listed.rooms,
            listed.rooms_total,
            &config.server.command_prefix,
            &config.public.host,
            config.public.port,
            listed.users,
            protocol::Me {
                name: &user.name,
                room: &user.room,
            },
        ));
        Ok(())
    }
}

/// What [`Session::listed_rooms`] shows.
struct ListedRooms {
    rooms: Vec<RoomSummary>,
    rooms_total: u64,
    users: u64,
}

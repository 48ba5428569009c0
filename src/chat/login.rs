//! Logging in (IDENTIFY, or the original first MESSAGE_CREATE) and out.

use super::ownership;
use super::presence;
use super::replies::Refusal;
use super::session::{Flow, Session, User};
use crate::backplane::{password_hash, JoinOutcome, JoinRequest};
use crate::config::AuthMode;
use crate::metrics as m;
use crate::protocol::{close, normalize_room_name, user_key, valid_user_name, NoticeCode};

impl Session {
    /// Logs in; a refusal is answered and counted (enough close with 4003).
    pub(super) async fn login(
        &mut self,
        name: &str,
        token: Option<&str>,
        room: Option<&str>,
        password: Option<&str>,
    ) -> Flow {
        match self.try_login(name, token, room, password).await {
            Ok(()) => Flow::Continue,
            Err(refusal) => {
                self.notice(refusal.code, &refusal.message);
                self.count_login_failure()
            }
        }
    }

    async fn try_login(
        &mut self,
        name: &str,
        token: Option<&str>,
        room: Option<&str>,
        password: Option<&str>,
    ) -> Result<(), Refusal> {
        if !valid_user_name(name) {
            return Err(Refusal::new(
                NoticeCode::InvalidName,
                "Names are 1-32 characters of A-Z a-z 0-9 _ - .",
            ));
        }
        let config = self.chat.config.clone();
        let admin = match token {
            Some(token) => match self.chat.tokens.verify(token, name) {
                Ok(grant) => grant.admin,
                Err(error) => {
                    tracing::info!(%error, "login with an invalid token");
                    return Err(Refusal::new(NoticeCode::Unauthorized, "Invalid token."));
                }
            },
            None if config.auth.mode == AuthMode::Token => {
                return Err(Refusal::new(
                    NoticeCode::Unauthorized,
                    "A token is required.",
                ));
            }
            None => false,
        };
        let room = match room {
            None => config.server.default_room.clone(),
            Some(raw) => normalize_room_name(raw)
                .ok_or_else(|| Refusal::new(NoticeCode::NoSuchRoom, "No such room."))?,
        };
        let key = user_key(name);
        let backplane = self.chat.backplane.clone();
        // Subscribed before the login makes the user a member, so that no
        // message of the room falls between the two (see the registry).
        let registry = self.chat.registry.clone();
        registry.acquire_room(&*backplane, &room).await?;
        let owner_id = ownership::owner_id(config.auth.mode, &key, self.connection_id);
        // Name claim and join in one step (one round trip on Redis).
        let outcome = backplane
            .login(JoinRequest {
                user_key: &key,
                display_name: name,
                room: &room,
                password_hash: password.map(|p| password_hash(&room, p)).as_deref(),
                create: false,
                owner: &owner_id,
                previous_room: None,
                max_rooms: config.limits.max_rooms,
                // Login never creates a room.
                max_owned_rooms: None,
            })
            .await;
        let (members, joined_seq) = match outcome {
            Ok(Some(JoinOutcome::Joined { members, seq, .. })) => (members, seq),
            other => {
                registry.abandon_join(&*backplane, &room);
                return Err(match other {
                    Ok(None) => {
                        Refusal::new(NoticeCode::NameTaken, format!("The name {name} is taken."))
                    }
                    Ok(Some(refused)) => Refusal::join(refused, &room),
                    Err(error) => error.into(),
                });
            }
        };
        self.user = Some(User {
            key: key.clone(),
            name: name.to_string(),
            room: room.clone(),
            admin,
        });
        // CACHE_UPDATE is queued before the connection joins the room
        // locally, so it is the first frame the client sees after login. A
        // failed snapshot is answered but does not undo the login.
        if let Err(refusal) = self.send_cache_update().await {
            self.notice(refusal.code, &refusal.message);
        }
        registry.enter(&key, name, &room, &self.conn, joined_seq);
        metrics::counter!(m::LOGINS).increment(1);
        tracing::debug!(conn = self.conn.id, admin, "logged in");
        self.announce(&room, name, NoticeCode::Joined, members)
            .await;
        Ok(())
    }

    /// Failures of any kind count; enough of them close with 4003.
    fn count_login_failure(&mut self) -> Flow {
        self.login_failures += 1;
        if self.login_failures >= self.chat.config.limits.login_attempts {
            Flow::Close(close::AUTH_FAILED, "too many failed logins")
        } else {
            Flow::Continue
        }
    }

    /// The connection ended: frees the name and the membership, and
    /// announces `left` unless someone else already removed the user.
    pub(super) async fn released(&mut self, user: User) {
        let chat = self.chat.clone();
        chat.registry.exit(&user.key);
        // Before any await: a close cut off later leaks nothing.
        chat.registry.release_room(&*chat.backplane, &user.room);
        match chat
            .backplane
            .release_name(&user.key, Some(&user.room))
            .await
        {
            Ok(Some(remaining)) => {
                let members = presence::members_before_leaving(remaining);
                self.announce(&user.room, &user.name, NoticeCode::Left, members)
                    .await
            }
            // Already removed (and announced) by whoever reaped it.
            Ok(None) => {}
            // Presence of a node that cannot reach the store is cleaned up
            // by its heartbeat expiring or by re-registration.
            Err(error) => tracing::warn!(%error, "could not release a name"),
        }
    }
}

//! Parsing of commands typed after the command prefix.

/// A parsed command. Room and user arguments are checked for shape here;
/// whether they exist is the session's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Join {
        room: String,
        password: Option<String>,
    },
    Leave,
    Rooms,
    Users,
    Lock {
        password: String,
    },
    Unlock,
    Close,
    Open {
        room: String,
    },
    Delete,
    Kick {
        user: String,
    },
    Ban {
        user: String,
    },
    Unban {
        user: String,
    },
    Shutdown {
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Unknown command {0}. Type {1}help for the list.")]
    Unknown(String, String),
    #[error("{0}")]
    BadArguments(String),
}

/// One line per command, for `\help` (the prefix is prepended).
pub const HELP: &[(&str, &str)] = &[
    ("help", "list the commands"),
    (
        "join ROOM [PASSWORD]",
        "move to ROOM, creating it if needed (alias: switch)",
    ),
    ("leave", "back to the default room"),
    ("rooms", "list rooms with their state and user counts"),
    ("users", "list the users in your room"),
    ("lock PASSWORD", "lock your room (owner, admin)"),
    ("unlock", "unlock your room (owner, admin)"),
    (
        "close",
        "close your room and move its members out (owner, admin)",
    ),
    ("open ROOM", "reopen a closed room (owner of ROOM, admin)"),
    ("delete", "delete your room (owner, admin)"),
    ("kick USER", "move USER out of your room (owner, admin)"),
    (
        "ban USER",
        "remove USER from your room for good (owner, admin)",
    ),
    ("unban USER", "lift a ban (owner, admin)"),
    ("shutdown [REASON]", "shut the whole cluster down (admin)"),
];

/// Parses `line`, the content after the prefix.
pub fn parse(line: &str, prefix: &str) -> Result<Command, CommandError> {
    let line = line.trim_start();
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    let bad = |usage: &str| CommandError::BadArguments(format!("Usage: {prefix}{usage}"));
    let one = |usage: &str| match args.as_slice() {
        [a] => Ok(a.to_string()),
        _ => Err(bad(usage)),
    };
    let none = |cmd: Command, usage: &str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(bad(usage))
        }
    };
    let room = |usage: &str, raw: &str| {
        crate::protocol::normalize_room_name(raw).ok_or_else(|| {
            CommandError::BadArguments(format!(
                "Invalid room name {raw:?}: use 1-32 characters of a-z 0-9 _ -. Usage: {prefix}{usage}"
            ))
        })
    };
    let user = |usage: &str| {
        let name = one(usage)?;
        if crate::protocol::valid_user_name(&name) {
            Ok(name)
        } else {
            Err(CommandError::BadArguments(format!(
                "Invalid user name {name:?}. Usage: {prefix}{usage}"
            )))
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "help" => Ok(Command::Help),
        "join" | "switch" => match args.as_slice() {
            [r] => Ok(Command::Join {
                room: room("join ROOM [PASSWORD]", r)?,
                password: None,
            }),
            [r, p] => Ok(Command::Join {
                room: room("join ROOM [PASSWORD]", r)?,
                password: Some(p.to_string()),
            }),
            _ => Err(bad("join ROOM [PASSWORD]")),
        },
        "leave" => none(Command::Leave, "leave"),
        "rooms" => none(Command::Rooms, "rooms"),
        "users" => none(Command::Users, "users"),
        "lock" => Ok(Command::Lock {
            password: one("lock PASSWORD")?,
        }),
        "unlock" => none(Command::Unlock, "unlock"),
        "close" => none(Command::Close, "close"),
        "open" => Ok(Command::Open {
            room: room("open ROOM", &one("open ROOM")?)?,
        }),
        "delete" => none(Command::Delete, "delete"),
        "kick" => Ok(Command::Kick {
            user: user("kick USER")?,
        }),
        "ban" => Ok(Command::Ban {
            user: user("ban USER")?,
        }),
        "unban" => Ok(Command::Unban {
            user: user("unban USER")?,
        }),
        "shutdown" => {
            let reason = rest.trim();
            Ok(Command::Shutdown {
                reason: (!reason.is_empty()).then(|| reason.to_string()),
            })
        }
        other => Err(CommandError::Unknown(
            format!("{prefix}{other}"),
            prefix.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("join Lobby pw", "\\"),
            Ok(Command::Join {
                room: "lobby".into(),
                password: Some("pw".into())
            })
        );
        assert_eq!(
            parse("switch x", "\\"),
            Ok(Command::Join {
                room: "x".into(),
                password: None
            })
        );
        assert_eq!(
            parse("shutdown  going down now ", "\\"),
            Ok(Command::Shutdown {
                reason: Some("going down now".into())
            })
        );
        assert!(matches!(
            parse("join", "\\"),
            Err(CommandError::BadArguments(_))
        ));
        assert!(matches!(
            parse("join a.b", "\\"),
            Err(CommandError::BadArguments(_))
        ));
        assert!(matches!(
            parse("kick", "\\"),
            Err(CommandError::BadArguments(_))
        ));
        assert!(matches!(
            parse("leave now", "\\"),
            Err(CommandError::BadArguments(_))
        ));
        assert!(matches!(
            parse("dance", "\\"),
            Err(CommandError::Unknown(..))
        ));
    }
}

//! The command table: every command's name, aliases, arguments, help text,
//! permission and handler, in one row. Parsing, `\help` and dispatch all
//! read [`COMMANDS`], so adding a command is one row plus its handler.

use futures_util::future::BoxFuture;

use super::replies::Refusal;
use super::session::Session;
use crate::backplane::RoomInfo;
use crate::protocol::{normalize_room_name, valid_user_name};

/// One argument of a command, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A room name, normalised to lower case.
    Room,
    /// One word.
    Password,
    /// One word, may be left out (only last).
    OptionalPassword,
    /// A user name.
    User,
    /// The rest of the line, trimmed; may be empty (only last).
    Reason,
}

impl Arg {
    fn usage(self) -> &'static str {
        match self {
            Arg::Room => "ROOM",
            Arg::Password => "PASSWORD",
            Arg::OptionalPassword => "[PASSWORD]",
            Arg::User => "USER",
            Arg::Reason => "[REASON]",
        }
    }

    fn optional(self) -> bool {
        matches!(self, Arg::OptionalPassword | Arg::Reason)
    }
}

/// Who may run a command. Dispatch checks it before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    Anyone,
    /// Admins only; `refusal` is the `forbidden` text for others.
    Admin {
        refusal: &'static str,
    },
    /// The owner of the user's current room, or an admin. In the default
    /// room the command is refused with `default_room` (`forbidden`) when
    /// set; otherwise the default room, which has no owner, is for admins.
    OwnerOfCurrentRoom {
        default_room: Option<&'static str>,
    },
    /// The owner of the room named by the first argument, or an admin.
    OwnerOfNamedRoom,
}

impl Permission {
    fn help_suffix(self) -> &'static str {
        match self {
            Permission::Anyone => "",
            Permission::Admin { .. } => " (admin)",
            Permission::OwnerOfCurrentRoom { .. } => " (owner, admin)",
            Permission::OwnerOfNamedRoom => " (owner of ROOM, admin)",
        }
    }
}

/// What a handler gets: the parsed arguments and, for owner-only commands,
/// the settings of the room whose ownership was checked.
pub(crate) struct Checked {
    pub(crate) invocation: Invocation,
    pub(crate) room: Option<RoomInfo>,
}

/// Runs a command for a session once its permission is checked.
pub(crate) type Handler =
    for<'s> fn(&'s mut Session, Checked) -> BoxFuture<'s, Result<(), Refusal>>;

/// One command.
pub(crate) struct CommandSpec {
    pub(crate) name: &'static str,
    pub(crate) aliases: &'static [&'static str],
    pub(crate) args: &'static [Arg],
    /// What it does, for `\help` (aliases and permission are appended).
    pub(crate) help: &'static str,
    pub(crate) permission: Permission,
    pub(crate) run: Handler,
}

impl CommandSpec {
    /// `join ROOM [PASSWORD]`.
    pub(crate) fn usage(&self) -> String {
        let mut usage = self.name.to_string();
        for arg in self.args {
            usage.push(' ');
            usage.push_str(arg.usage());
        }
        usage
    }

    /// The `\help` line, with `prefix`.
    pub(crate) fn help_line(&self, prefix: &str) -> String {
        let aliases = if self.aliases.is_empty() {
            String::new()
        } else {
            format!(" (alias: {})", self.aliases.join(", "))
        };
        format!(
            "{prefix}{} - {}{aliases}{}",
            self.usage(),
            self.help,
            self.permission.help_suffix()
        )
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// Makes a [`Handler`] of a `Session` method
/// `async fn(&mut self, Checked) -> Result<(), Refusal>`.
macro_rules! handler {
    ($method:ident) => {{
        fn run(session: &mut Session, checked: Checked) -> BoxFuture<'_, Result<(), Refusal>> {
            Box::pin(session.$method(checked))
        }
        run as Handler
    }};
}

/// Every command, in `\help` order.
pub(crate) static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        aliases: &[],
        args: &[],
        help: "list the commands",
        permission: Permission::Anyone,
        run: handler!(cmd_help),
    },
    CommandSpec {
        name: "join",
        aliases: &["switch"],
        args: &[Arg::Room, Arg::OptionalPassword],
        help: "move to ROOM, creating it if needed",
        permission: Permission::Anyone,
        run: handler!(cmd_join),
    },
    CommandSpec {
        name: "leave",
        aliases: &[],
        args: &[],
        help: "back to the default room",
        permission: Permission::Anyone,
        run: handler!(cmd_leave),
    },
    CommandSpec {
        name: "rooms",
        aliases: &[],
        args: &[],
        help: "list rooms with their state and user counts",
        permission: Permission::Anyone,
        run: handler!(cmd_rooms),
    },
    CommandSpec {
        name: "users",
        aliases: &[],
        args: &[],
        help: "list the users in your room",
        permission: Permission::Anyone,
        run: handler!(cmd_users),
    },
    CommandSpec {
        name: "lock",
        aliases: &[],
        args: &[Arg::Password],
        help: "lock your room",
        permission: Permission::OwnerOfCurrentRoom {
            default_room: Some(DEFAULT_ROOM_SETTINGS),
        },
        run: handler!(cmd_lock),
    },
    CommandSpec {
        name: "unlock",
        aliases: &[],
        args: &[],
        help: "unlock your room",
        permission: Permission::OwnerOfCurrentRoom {
            default_room: Some(DEFAULT_ROOM_SETTINGS),
        },
        run: handler!(cmd_unlock),
    },
    CommandSpec {
        name: "close",
        aliases: &[],
        args: &[],
        help: "close your room and move its members out",
        permission: Permission::OwnerOfCurrentRoom {
            default_room: Some(DEFAULT_ROOM_SETTINGS),
        },
        run: handler!(cmd_close),
    },
    CommandSpec {
        name: "open",
        aliases: &[],
        args: &[Arg::Room],
        help: "reopen a closed room",
        permission: Permission::OwnerOfNamedRoom,
        run: handler!(cmd_open),
    },
    CommandSpec {
        name: "delete",
        aliases: &[],
        args: &[],
        help: "delete your room",
        permission: Permission::OwnerOfCurrentRoom {
            default_room: Some(DEFAULT_ROOM_SETTINGS),
        },
        run: handler!(cmd_delete),
    },
    CommandSpec {
        name: "kick",
        aliases: &[],
        args: &[Arg::User],
        help: "move USER out of your room",
        permission: Permission::OwnerOfCurrentRoom {
            default_room: Some("Nobody can be kicked from the default room."),
        },
        run: handler!(cmd_kick),
    },
    CommandSpec {
        name: "ban",
        aliases: &[],
        args: &[Arg::User],
        help: "remove USER from your room for good",
        permission: Permission::OwnerOfCurrentRoom {
            default_room: Some("Nobody can be banned from the default room."),
        },
        run: handler!(cmd_ban),
    },
    CommandSpec {
        name: "unban",
        aliases: &[],
        args: &[Arg::User],
        help: "lift a ban",
        permission: Permission::OwnerOfCurrentRoom { default_room: None },
        run: handler!(cmd_unban),
    },
    CommandSpec {
        name: "shutdown",
        aliases: &[],
        args: &[Arg::Reason],
        help: "shut the whole cluster down",
        permission: Permission::Admin {
            refusal: "Only admins can shut the cluster down.",
        },
        run: handler!(cmd_shutdown),
    },
];

const DEFAULT_ROOM_SETTINGS: &str = "The default room cannot be locked, closed or deleted.";

/// A parsed command: its row and its checked arguments (room names
/// normalised; an optional argument left out is absent).
#[derive(Clone)]
pub(crate) struct Invocation {
    pub(crate) spec: &'static CommandSpec,
    pub(crate) args: Vec<String>,
}

impl Invocation {
    /// The `i`th argument; present for every required argument.
    pub(crate) fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }

    /// The command line that parses back to this invocation.
    #[cfg(test)]
    pub(crate) fn line(&self) -> String {
        let mut line = self.spec.name.to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("command", &self.spec.name)
            .field("args", &self.args)
            .finish()
    }
}

impl PartialEq for Invocation {
    fn eq(&self, other: &Self) -> bool {
        self.spec.name == other.spec.name && self.args == other.args
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CommandError {
    /// NOTICE `unknown_command`.
    #[error("Unknown command {prefix}{name}. Type {prefix}help for the list.")]
    Unknown { name: String, prefix: String },
    /// NOTICE `bad_arguments`, with the usage.
    #[error("{0}")]
    BadArguments(String),
}

/// The `\help` text.
pub(crate) fn help(prefix: &str) -> String {
    let lines: Vec<String> = COMMANDS.iter().map(|c| c.help_line(prefix)).collect();
    format!("Commands:\n{}", lines.join("\n"))
}

/// Parses `line`, the content after the prefix. Never panics; an unknown
/// name is [`CommandError::Unknown`] (with the name as typed), a wrong
/// argument count or shape [`CommandError::BadArguments`] with the usage.
pub(crate) fn parse(line: &str, prefix: &str) -> Result<Invocation, CommandError> {
    let line = line.trim_start();
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let lower = name.to_ascii_lowercase();
    let spec = COMMANDS
        .iter()
        .find(|c| c.answers_to(&lower))
        .ok_or_else(|| CommandError::Unknown {
            name: name.to_string(),
            prefix: prefix.to_string(),
        })?;
    let usage = || format!("Usage: {prefix}{}", spec.usage());
    if spec.args == [Arg::Reason] {
        let reason = rest.trim();
        let args = if reason.is_empty() {
            vec![]
        } else {
            vec![reason.to_string()]
        };
        return Ok(Invocation { spec, args });
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let required = spec.args.iter().filter(|a| !a.optional()).count();
    if words.len() < required || words.len() > spec.args.len() {
        return Err(CommandError::BadArguments(usage()));
    }
    let mut args = Vec::with_capacity(words.len());
    for (kind, word) in spec.args.iter().zip(words) {
        let checked = match kind {
            Arg::Room => normalize_room_name(word).ok_or_else(|| {
                CommandError::BadArguments(format!(
                    "Invalid room name {word:?}: use 1-32 characters of a-z 0-9 _ -. {}",
                    usage()
                ))
            })?,
            Arg::User if !valid_user_name(word) => {
                return Err(CommandError::BadArguments(format!(
                    "Invalid user name {word:?}. {}",
                    usage()
                )))
            }
            _ => word.to_string(),
        };
        args.push(checked);
    }
    Ok(Invocation { spec, args })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> (String, Vec<String>) {
        let inv = parse(line, "\\").unwrap_or_else(|e| panic!("{line}: {e}"));
        (inv.spec.name.to_string(), inv.args)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            ok("join Lobby pw"),
            ("join".into(), strings(&["lobby", "pw"]))
        );
        assert_eq!(ok("switch x"), ("join".into(), strings(&["x"])));
        assert_eq!(ok("SWITCH x"), ("join".into(), strings(&["x"])));
        assert_eq!(
            ok("shutdown  going down  now "),
            ("shutdown".into(), strings(&["going down  now"]))
        );
        assert_eq!(ok("shutdown"), ("shutdown".into(), vec![]));
        for bad in [
            "join",
            "join a.b",
            "join a b c",
            "kick",
            "kick a!b",
            "leave now",
        ] {
            assert!(
                matches!(parse(bad, "\\"), Err(CommandError::BadArguments(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse("Dance now", "\\").unwrap_err().to_string(),
            "Unknown command \\Dance. Type \\help for the list."
        );
        assert_eq!(
            parse("join", "/").unwrap_err().to_string(),
            "Usage: /join ROOM [PASSWORD]"
        );
    }

    #[test]
    fn help_lists_every_command_with_its_permission() {
        let help = help("\\");
        assert_eq!(help.lines().count(), COMMANDS.len() + 1);
        assert!(help.contains(
            "\\join ROOM [PASSWORD] - move to ROOM, creating it if needed (alias: switch)"
        ));
        assert!(help.contains("\\lock PASSWORD - lock your room (owner, admin)"));
        assert!(help.contains("\\open ROOM - reopen a closed room (owner of ROOM, admin)"));
        assert!(help.contains("\\shutdown [REASON] - shut the whole cluster down (admin)"));
    }

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            for name in std::iter::once(&c.name).chain(c.aliases) {
                assert!(seen.insert(*name), "{name} twice");
                assert_eq!(*name, name.to_ascii_lowercase());
            }
            // Optional arguments only at the end.
            let first_optional = c.args.iter().position(|a| a.optional());
            if let Some(i) = first_optional {
                assert!(c.args[i..].iter().all(|a| a.optional()), "{}", c.name);
            }
        }
    }

    /// Case count: `PROPTEST_CASES` raises it for a long run (proptest reads
    /// it itself); the suite runs 2,000 per property.
    fn config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        ProptestConfig::with_cases(cases)
    }

    fn word() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.\\-]{1,40}"
    }

    /// A command line built from a real command name (any case, any
    /// alias) and words that may or may not be valid arguments.
    fn plausible_line() -> impl Strategy<Value = String> {
        let names: Vec<&'static str> = COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
            .collect();
        (
            proptest::sample::select(names),
            any::<bool>(),
            proptest::collection::vec(word(), 0..4),
            "[ \t]{1,3}",
        )
            .prop_map(|(name, upper, words, gap)| {
                let name = if upper {
                    name.to_ascii_uppercase()
                } else {
                    name.to_string()
                };
                std::iter::once(name)
                    .chain(words)
                    .collect::<Vec<_>>()
                    .join(&gap)
            })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any text: no panic; an error is one of the two the protocol
        /// names; a success names a real command and parses back to itself.
        #[test]
        fn any_line_is_answered(line in any::<String>()) {
            check(&line)?;
        }

        #[test]
        fn plausible_lines_are_answered(line in plausible_line()) {
            check(&line)?;
        }

        /// Valid invocations built from the table round-trip through
        /// `line()` and parse.
        #[test]
        fn valid_commands_round_trip(
            index in 0..COMMANDS.len(),
            room in "[A-Za-z0-9_\\-]{1,32}",
            user in "[A-Za-z0-9_.\\-]{1,32}",
            password in "[!-~]{1,20}",
            reason in "[ -~]{0,40}",
            give_optional in any::<bool>(),
        ) {
            let spec = &COMMANDS[index];
            let mut words = Vec::new();
            for arg in spec.args {
                match arg {
                    Arg::Room => words.push(room.clone()),
                    Arg::User => words.push(user.clone()),
                    Arg::Password => words.push(password.clone()),
                    Arg::OptionalPassword if give_optional => words.push(password.clone()),
                    Arg::OptionalPassword => {}
                    Arg::Reason => words.push(reason.clone()),
                }
            }
            let line = format!("{} {}", spec.name, words.join(" "));
            let parsed = parse(&line, "\\").map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
            prop_assert_eq!(parsed.spec.name, spec.name);
            for (arg, value) in spec.args.iter().zip(&parsed.args) {
                if *arg == Arg::Room {
                    prop_assert_eq!(value, &room.to_ascii_lowercase());
                }
            }
            let again = parse(&parsed.line(), "\\").map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, parsed);
        }
    }

    fn check(line: &str) -> Result<(), TestCaseError> {
        match parse(line, "\\") {
            Ok(invocation) => {
                let first = line.split_whitespace().next().unwrap_or("");
                prop_assert!(invocation.spec.answers_to(&first.to_ascii_lowercase()));
                let required = invocation
                    .spec
                    .args
                    .iter()
                    .filter(|a| !a.optional())
                    .count();
                prop_assert!(required <= invocation.args.len());
                prop_assert!(invocation.args.len() <= invocation.spec.args.len());
                let again = parse(&invocation.line(), "\\").map_err(|e| {
                    TestCaseError::fail(format!("{line:?} → {:?}: {e}", invocation.line()))
                })?;
                prop_assert_eq!(again, invocation);
            }
            Err(CommandError::Unknown { name, .. }) => {
                prop_assert!(!COMMANDS
                    .iter()
                    .any(|c| c.answers_to(&name.to_ascii_lowercase())));
            }
            Err(CommandError::BadArguments(message)) => {
                prop_assert!(message.contains("Usage: \\"), "{}", message);
            }
        }
        Ok(())
    }
}

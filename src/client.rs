//! The terminal client: `swiftchat client ws://HOST:PORT/ws --name NAME [--token T]`.
//!
//! Line-oriented: it logs in with IDENTIFY (op 5), then sends every line read
//! from standard input as a MESSAGE_CREATE (op 1), so commands typed with the
//! server's prefix (`\join random`, `\help`, …) just work, since the server
//! parses them. It prints what the server sends:
//!
//! ```text
//! [general] ada: hello            a message (op 0)
//! * bob joined general            a notice (op 7): joined, left, command answers
//! ! The name ada is taken. (name_taken)   an error notice
//! * room lounge was locked        a room state change (op 2)
//! * server shutting down: Maintenance     SHUTDOWN (op 3)
//! ```
//!
//! After the login and after each change of room it asks for the room's
//! latest messages (HISTORY_REQUEST, op 8) and prints them between two
//! marker lines, so they read as what was said before you came:
//!
//! ```text
//! --- earlier messages in general ---
//! [general] bob: anyone around?
//! --- end of earlier messages ---
//! ```
//!
//! A message that arrives live while that answer is on its way is printed
//! at once and left out of the earlier block (`seq` tells them apart), so no
//! line is printed twice.
//!
//! It exits when the server closes the connection, or after the end of
//! standard input (it then closes the connection itself). A refused login
//! ends it with an error. It does not reconnect: it is a tool for a person
//! or a script, who can start it again.
//!
//! Control characters in what the server sends are replaced, so a message
//! cannot drive the terminal with escape sequences.

use std::collections::VecDeque;
use std::io::{BufRead, Write};

use anyhow::{anyhow, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// Runs the terminal client on standard input and output.
pub async fn run(url: &str, name: &str, token: Option<&str>) -> Result<()> {
    // Standard input is read on a thread of its own, not with tokio's stdin:
    // a read blocked on a terminal would keep the runtime from shutting down
    // after the server has closed the connection.
    let (tx, rx) = mpsc::channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the stdin reader")?;
    run_with(url, name, token, rx, std::io::stdout()).await
}

/// Runs the client with lines from `input` (its end is the end of input)
/// and prints to `out`; usable in-process, e.g. in tests.
pub async fn run_with<W: Write>(
    url: &str,
    name: &str,
    token: Option<&str>,
    mut input: mpsc::Receiver<String>,
    mut out: W,
) -> Result<()> {
    let (ws, _) = connect_async(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let (mut sink, mut stream) = ws.split();
    let identify = json!({"op": 5, "d": {"name": name, "token": token}});
    sink.send(Message::text(identify.to_string())).await?;

    let mut input_open = true;
    let mut closing = false;
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut view = View::default();

    loop {
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    None => break,
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        if closing {
                            break;
                        }
                        line(&mut out, &format!("* connection lost: {e}"))?;
                        return Err(anyhow!("connection lost: {e}"));
                    }
                };
                match frame {
                    Message::Text(text) => {
                        let Ok(payload) = serde_json::from_str::<Value>(text.as_str()) else {
                            continue;
                        };
                        let was_logged_in = view.logged_in;
                        let event = view.handle(&payload);
                        for text in &event.lines {
                            line(&mut out, text)?;
                        }
                        for request in &event.requests {
                            sink.send(Message::text(request.to_string())).await?;
                        }
                        if let Some(refusal) = event.login_refused {
                            let _ = sink.send(Message::Close(None)).await;
                            return Err(anyhow!("login refused: {refusal}"));
                        }
                        if view.logged_in && !was_logged_in {
                            while let Some(text) = pending.pop_front() {
                                sink.send(message_create(&text)).await?;
                            }
                            if !input_open && !closing {
                                closing = true;
                                sink.send(Message::Close(None)).await?;
                            }
                        }
                    }
                    Message::Close(frame) => {
                        let text = match frame {
                            Some(f) if !f.reason.is_empty() => {
                                format!("* disconnected (code {}: {})", u16::from(f.code), clean(&f.reason))
                            }
                            Some(f) => format!("* disconnected (code {})", u16::from(f.code)),
                            None => "* disconnected".to_string(),
                        };
                        line(&mut out, &text)?;
                    }
                    _ => {}
                }
            }
            next = input.recv(), if input_open => {
                match next {
                    Some(text) => {
                        let text = text.trim_end_matches('\r').to_string();
                        if text.trim().is_empty() || closing {
                            continue;
                        }
                        if view.logged_in {
                            sink.send(message_create(&text)).await?;
                        } else {
                            pending.push_back(text);
                        }
                    }
                    None => {
                        input_open = false;
                        if view.logged_in && !closing {
                            closing = true;
                            sink.send(Message::Close(None)).await?;
                        }
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn message_create(content: &str) -> Message {
    Message::text(json!({"op": 1, "d": {"content": content}}).to_string())
}

fn line<W: Write>(out: &mut W, text: &str) -> Result<()> {
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Replaces control characters (escape sequences, carriage returns…) except
/// new lines and tabs.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn field(d: &Value, key: &str) -> String {
    match d.get(key) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Null) | None => String::new(),
        Some(other) => clean(&other.to_string()),
    }
}

/// How many earlier messages are printed on login and on a change of room:
/// a screenful, not the whole history.
const EARLIER_MESSAGES: u64 = 20;

/// What the client knows, and how it turns payloads into lines.
#[derive(Debug, Default)]
struct View {
    logged_in: bool,
    name: String,
    room: String,
    /// The room whose HISTORY answer is awaited, with the smallest `seq` of
    /// its live messages printed meanwhile (earlier lines must stay below it).
    history_for: Option<(String, Option<i64>)>,
}

#[derive(Debug, Default)]
struct Event {
    lines: Vec<String>,
    /// Payloads to send (the HISTORY_REQUEST after a login or a move).
    requests: Vec<Value>,
    /// Set when the login was refused, with the server's message.
    login_refused: Option<String>,
}

impl View {
    fn handle(&mut self, payload: &Value) -> Event {
        let mut event = Event::default();
        let Some(op) = payload.get("op").and_then(Value::as_i64) else {
            return event;
        };
        let empty = Value::Null;
        let d = payload.get("d").unwrap_or(&empty);
        match op {
            0 => {
                if let Some((room, first_live)) = &mut self.history_for {
                    if d.get("room").and_then(Value::as_str) == Some(room.as_str()) {
                        if let Some(seq) = d.get("seq").and_then(Value::as_i64) {
                            *first_live = Some(first_live.map_or(seq, |s| s.min(seq)));
                        }
                    }
                }
                event.lines.push(message_line(d));
            }
            9 => self.earlier(d, &mut event),
            2 => {
                let room = field(d, "room");
                let text = match field(d, "reason").as_str() {
                    "banned" => format!("* you are banned from room {room}"),
                    "unbanned" => format!("* you may join room {room} again"),
                    "created" => format!("* room {room} was created"),
                    "deleted" => format!("* room {room} was deleted"),
                    "closed" => format!("* room {room} was closed"),
                    "opened" => format!("* room {room} was reopened"),
                    "locked" => format!("* room {room} was locked"),
                    "unlocked" => format!("* room {room} was unlocked"),
                    other => format!("* room {room}: {other}"),
                };
                event.lines.push(text);
            }
            3 => {
                let reason = field(d, "reason");
                let reason = if reason.is_empty() {
                    "no reason given".to_string()
                } else {
                    reason
                };
                let again = if d.get("reconnect").and_then(Value::as_bool) == Some(true) {
                    " (only this node: connect again to reach another)"
                } else {
                    ""
                };
                event
                    .lines
                    .push(format!("* server shutting down: {reason}{again}"));
            }
            4 => {
                let me = d.get("me").unwrap_or(&empty);
                let room = field(me, "room");
                if !self.logged_in {
                    self.logged_in = true;
                    let prefix = match field(d, "command_prefix") {
                        p if p.is_empty() => "\\".to_string(),
                        p => p,
                    };
                    let users = d.get("users").and_then(Value::as_u64).unwrap_or(0);
                    event.lines.push(format!(
                        "* logged in as {} in room {room} ({users} online); type {prefix}help for the commands",
                        field(me, "name"),
                    ));
                    event.requests.push(self.ask_history(&room));
                } else if room != self.room && !room.is_empty() {
                    event.lines.push(format!("* now in room {room}"));
                    event.requests.push(self.ask_history(&room));
                }
                self.room = room;
                let name = field(me, "name");
                if !name.is_empty() {
                    self.name = name;
                }
            }
            7 => {
                let code = field(d, "code");
                let message = field(d, "message");
                let error = d.get("error").and_then(Value::as_bool).unwrap_or(false);
                let user = field(d, "user");
                if code == "joined" && user.eq_ignore_ascii_case(&self.name) {
                    // Our own arrival: the login or "now in room" line said it.
                    return event;
                }
                if code == "unknown_op" && self.history_for.take().is_some() {
                    // A server without history refused our HISTORY_REQUEST:
                    // nothing the person typed, so nothing to print.
                    return event;
                }
                let text = match code.as_str() {
                    "joined" => format!("* {} joined {}", field(d, "user"), field(d, "room")),
                    "left" => format!("* {} left {}", field(d, "user"), field(d, "room")),
                    _ if error => format!("! {message} ({code})"),
                    _ => format!("* {message}"),
                };
                event.lines.push(text);
                if error && !self.logged_in {
                    event.login_refused = Some(format!("{message} ({code})"));
                }
                if error && matches!(code.as_str(), "unknown_op" | "not_in_room") {
                    // Our history request was refused (a server without
                    // history, or we moved on): no answer will come.
                    self.history_for = None;
                }
            }
            _ => {}
        }
        event
    }

    /// The HISTORY_REQUEST for `room`'s latest messages.
    fn ask_history(&mut self, room: &str) -> Value {
        self.history_for = Some((room.to_string(), None));
        json!({"op": 8, "d": {"room": room, "limit": EARLIER_MESSAGES}})
    }

    /// Prints a HISTORY answer as the block of earlier messages.
    fn earlier(&mut self, d: &Value, event: &mut Event) {
        let room = d.get("room").and_then(Value::as_str).unwrap_or_default();
        let first_live = match &self.history_for {
            Some((awaited, first_live)) if awaited == room => *first_live,
            _ => return, // not the answer we wait for (we moved on)
        };
        self.history_for = None;
        let Some(messages) = d.get("messages").and_then(Value::as_array) else {
            return;
        };
        let earlier: Vec<&Value> = messages
            .iter()
            .filter(
                |m| match (m.get("seq").and_then(Value::as_i64), first_live) {
                    (Some(seq), Some(live)) => seq < live,
                    _ => true,
                },
            )
            .collect();
        if earlier.is_empty() {
            return;
        }
        let room = clean(room);
        event
            .lines
            .push(format!("--- earlier messages in {room} ---"));
        event.lines.extend(earlier.into_iter().map(message_line));
        event
            .lines
            .push("--- end of earlier messages ---".to_string());
    }
}

fn message_line(d: &Value) -> String {
    format!(
        "[{}] {}: {}",
        field(d, "room"),
        field(d, "author"),
        field(d, "content")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(view: &mut View, payload: Value) -> Vec<String> {
        view.handle(&payload).lines
    }

    #[test]
    fn prints_each_op() {
        let mut v = View::default();
        let login = lines(
            &mut v,
            json!({"op":4,"d":{"rooms":[],"command_prefix":"\\","users":2,
                                "me":{"name":"ada","room":"general"}}}),
        );
        assert_eq!(
            login,
            ["* logged in as ada in room general (2 online); type \\help for the commands"]
        );
        assert!(v.logged_in);
        assert_eq!(
            lines(
                &mut v,
                json!({"op":0,"d":{"author":"bob","content":"hi","room":"general","seq":1}})
            ),
            ["[general] bob: hi"]
        );
        assert_eq!(
            lines(
                &mut v,
                json!({"op":7,"d":{"code":"joined","error":false,"message":"","room":"general","user":"cy"}})
            ),
            ["* cy joined general"]
        );
        assert!(lines(
            &mut v,
            json!({"op":7,"d":{"code":"joined","error":false,"message":"","room":"general","user":"ADA"}})
        )
        .is_empty());
        assert_eq!(
            lines(
                &mut v,
                json!({"op":7,"d":{"code":"forbidden","error":true,"message":"No.","room":null,"user":null}})
            ),
            ["! No. (forbidden)"]
        );
        assert_eq!(
            lines(
                &mut v,
                json!({"op":2,"d":{"available":false,"room":"x","reason":"banned"}})
            ),
            ["* you are banned from room x"]
        );
        assert_eq!(
            lines(
                &mut v,
                json!({"op":3,"d":{"reason":null,"reconnect":false}})
            ),
            ["* server shutting down: no reason given"]
        );
        assert_eq!(
            lines(
                &mut v,
                json!({"op":4,"d":{"me":{"name":"ada","room":"lounge"}}})
            ),
            ["* now in room lounge"]
        );
    }

    #[test]
    fn earlier_messages_are_asked_for_and_printed_once() {
        let mut v = View::default();
        let e = v.handle(&json!({"op":4,"d":{"users":1,"me":{"name":"ada","room":"general"}}}));
        assert_eq!(
            e.requests,
            [json!({"op":8,"d":{"room":"general","limit":EARLIER_MESSAGES}})]
        );
        // seq 3 arrives live before the answer, which holds it too.
        assert_eq!(
            lines(
                &mut v,
                json!({"op":0,"d":{"author":"bob","content":"three","room":"general","seq":3}})
            ),
            ["[general] bob: three"]
        );
        let history = json!({"op":9,"d":{"room":"general","epoch":"e1","last_seq":3,"complete":true,
            "messages":[{"author":"cy","content":"one","room":"general","seq":1},
                        {"author":"bob","content":"two","room":"general","seq":2},
                        {"author":"bob","content":"three","room":"general","seq":3}]}});
        assert_eq!(
            lines(&mut v, history.clone()),
            [
                "--- earlier messages in general ---",
                "[general] cy: one",
                "[general] bob: two",
                "--- end of earlier messages ---"
            ]
        );
        // A second answer nobody asked for prints nothing.
        assert!(lines(&mut v, history).is_empty());
        // An unknown_op that answers our request is not printed; another one is.
        let unknown = json!({"op":7,"d":{"code":"unknown_op","error":true,"message":"Unknown op 8.",
            "room":null,"user":null}});
        v.history_for = Some(("general".into(), None));
        assert!(lines(&mut v, unknown.clone()).is_empty());
        assert_eq!(lines(&mut v, unknown), ["! Unknown op 8. (unknown_op)"]);
        // A move asks again, for the new room; an empty history prints nothing.
        let e = v.handle(&json!({"op":4,"d":{"me":{"name":"ada","room":"lounge"}}}));
        assert_eq!(e.lines, ["* now in room lounge"]);
        assert_eq!(e.requests[0]["d"]["room"], "lounge");
        assert!(lines(
            &mut v,
            json!({"op":9,"d":{"room":"lounge","epoch":"e2","last_seq":0,"complete":true,"messages":[]}})
        )
        .is_empty());
    }

    #[test]
    fn refused_login_is_reported() {
        let mut v = View::default();
        let e = v.handle(&json!({"op":7,"d":{"code":"name_taken","error":true,
            "message":"The name ada is taken.","room":null,"user":null}}));
        assert_eq!(
            e.login_refused.as_deref(),
            Some("The name ada is taken. (name_taken)")
        );
    }

    #[test]
    fn control_characters_are_replaced() {
        let mut v = View::default();
        let out = lines(
            &mut v,
            json!({"op":0,"d":{"author":"e\u{1b}[31mvil","content":"a\rb","room":"r"}}),
        );
        assert_eq!(out, ["[r] e\u{FFFD}[31mvil: a\u{FFFD}b"]);
    }
}

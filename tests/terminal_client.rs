//! The terminal client (`swiftchat client URL --name NAME`) against a real
//! node: both are the real binary, the client's stdin is a pipe and its
//! stdout is read line by line. Also: the room's earlier messages printed
//! as a block on login and on `\join`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_swiftchat");
const KEY: &str = "terminal-test-key";
/// Generous: the assertions are about what is printed, not how fast.
const WAIT: Duration = Duration::from_secs(20);

struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn start() -> Node {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(BIN);
        // The node reads every SWIFTCHAT_* variable as configuration and stops
        // on an unknown one: none may leak in from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWIFTCHAT_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("SWIFTCHAT_ADMIN__SHUTDOWN_KEY", KEY)
            .env("SWIFTCHAT_AUTH__JWT_SECRET", "terminal-test-secret")
            .env("SWIFTCHAT_REDIS__URL", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the node");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the node did not listen");
            thread::sleep(Duration::from_millis(50));
        }
        Node { child, port }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// POST /admin/shutdown; returns the HTTP status line.
    fn shutdown(&self, reason: &str) -> String {
        let body = format!("{{\"reason\":\"{reason}\"}}");
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "POST /admin/shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.lines().next().unwrap_or_default().to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `swiftchat client` with its stdin and the lines it printed.
struct Client {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Receiver<String>,
}

impl Client {
    fn start(node: &Node, name: &str) -> Client {
        let mut child = Command::new(BIN)
            .args(["client", &node.url(), "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the client");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err).read_to_string(&mut text);
            let _ = etx.send(text);
        });
        Client {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn type_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a printed line satisfying `pred`; returns it.
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line {what} within {WAIT:?}; printed so far:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: output ended without a line {what}; printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn expect_line(&mut self, exact: &str) {
        self.expect(&format!("{exact:?}"), |l| l == exact);
    }

    /// Waits for the process to exit; returns (success, stderr).
    fn wait_exit(&mut self) -> (bool, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Drain what is left of stdout.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                let err = self
                    .stderr
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default();
                return (status.success(), err);
            }
            assert!(
                Instant::now() < deadline,
                "{}: the client did not exit; printed:\n{}",
                self.name,
                self.seen.join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_terminal_clients_chat_use_commands_and_exit_on_shutdown() {
    let node = Node::start();
    let mut alice = Client::start(&node, "alice");
    alice.expect("alice logged in", |l| {
        l.starts_with("* logged in as alice in room general (1 online)") && l.contains("\\help")
    });
    let mut bob = Client::start(&node, "bob");
    bob.expect("bob logged in", |l| {
        l.starts_with("* logged in as bob in room general (2 online)")
    });
    alice.expect_line("* bob joined general");

    // Messages both ways, as "[room] author: content".
    alice.type_line("hello from alice");
    bob.expect_line("[general] alice: hello from alice");
    alice.expect_line("[general] alice: hello from alice");
    bob.type_line("hi alice, \u{e9}t\u{e9} \\o/");
    alice.expect_line("[general] bob: hi alice, \u{e9}t\u{e9} \\o/");

    // Commands typed with the prefix just work.
    bob.type_line("\\join side");
    bob.expect_line("* now in room side");
    alice.expect_line("* bob left general");
    alice.expect_line("* room side was created");
    bob.type_line("\\users");
    bob.expect_line("* Users in side (1): bob");
    bob.type_line("\\frobnicate");
    let err = bob.expect("an unknown_command error", |l| l.starts_with("! "));
    assert!(err.ends_with("(unknown_command)"), "{err}");
    // The doubled prefix sends the text with one prefix.
    bob.type_line("\\\\o/ in side");
    bob.expect_line("[side] bob: \\o/ in side");
    // Room state changes are printed.
    bob.type_line("\\lock hunter2");
    bob.expect("the lock's answer", |l| {
        l.starts_with("* ") && l.contains("lock")
    });
    alice.expect_line("* room side was locked");

    // A cluster shutdown is printed and both clients exit by themselves.
    assert!(node.shutdown("Maintenance").contains("202"));
    for c in [&mut alice, &mut bob] {
        c.expect_line("* server shutting down: Maintenance");
        c.expect("the close", |l| l.starts_with("* disconnected (code 1001"));
        let (ok, err) = c.wait_exit();
        assert!(ok, "{} exits with success; stderr: {err}", c.name);
    }
}

#[test]
fn lines_typed_before_login_are_sent_and_end_of_input_closes() {
    let node = Node::start();
    let mut watcher = Client::start(&node, "watcher");
    watcher.expect("watcher logged in", |l| {
        l.starts_with("* logged in as watcher")
    });

    // The whole input is written and closed before the client has logged in.
    let mut early = Client::start(&node, "early");
    early.type_line("first line");
    early.type_line("");
    early.type_line("second line");
    early.close_stdin();
    watcher.expect_line("[general] early: first line");
    watcher.expect_line("[general] early: second line");
    let (ok, err) = early.wait_exit();
    assert!(ok, "end of input ends the client cleanly; stderr: {err}");
    watcher.expect_line("* early left general");
    assert!(
        !watcher.seen.iter().any(|l| l == "[general] early: "),
        "blank lines are not sent"
    );
}

#[test]
fn a_refused_login_ends_the_client_with_an_error() {
    let node = Node::start();
    let mut first = Client::start(&node, "sam");
    first.expect("sam logged in", |l| l.starts_with("* logged in as sam"));

    let mut second = Client::start(&node, "SAM");
    let line = second.expect("the name_taken error", |l| l.starts_with("! "));
    assert!(line.ends_with("(name_taken)"), "{line}");
    let (ok, err) = second.wait_exit();
    assert!(!ok, "a refused login is a failure");
    assert!(err.contains("login refused"), "stderr: {err}");

    let mut bad = Client::start(&node, "not a name");
    let line = bad.expect("the invalid_name error", |l| l.starts_with("! "));
    assert!(line.ends_with("(invalid_name)"), "{line}");
    assert!(!bad.wait_exit().0);
}

#[test]
fn an_unreachable_server_is_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "client",
            &format!("ws://127.0.0.1:{port}/ws"),
            "--name",
            "nobody",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "stderr: {err}");
}

#[test]
fn earlier_messages_are_printed_on_login_and_on_join() {
    let node = Node::start();
    let mut alice = Client::start(&node, "alice");
    alice.expect("alice logged in", |l| l.starts_with("* logged in as alice"));
    for text in ["one", "two", "three"] {
        alice.type_line(text);
    }
    alice.expect_line("[general] alice: three");

    // bob logs in after them: they are printed as a block of earlier messages.
    let mut bob = Client::start(&node, "bob");
    bob.expect("bob logged in", |l| l.starts_with("* logged in as bob"));
    bob.expect_line("--- end of earlier messages ---");
    let block: Vec<&str> = bob.seen.iter().map(String::as_str).collect();
    let start = block
        .iter()
        .position(|l| *l == "--- earlier messages in general ---")
        .unwrap_or_else(|| panic!("no header; printed:\n{}", block.join("\n")));
    assert_eq!(
        block[start..],
        [
            "--- earlier messages in general ---",
            "[general] alice: one",
            "[general] alice: two",
            "[general] alice: three",
            "--- end of earlier messages ---",
        ]
    );

    // Joining a room prints its earlier messages too.
    alice.type_line("\\join side");
    alice.expect_line("* now in room side");
    alice.type_line("said in side");
    alice.expect_line("[side] alice: said in side");
    bob.type_line("\\join side");
    bob.expect_line("* now in room side");
    bob.expect_line("--- earlier messages in side ---");
    bob.expect_line("[side] alice: said in side");
    bob.expect_line("--- end of earlier messages ---");

    // New messages are printed once, as they come.
    alice.type_line("live now");
    bob.expect_line("[side] alice: live now");
    bob.close_stdin();
    let (ok, err) = bob.wait_exit();
    assert!(ok, "stderr: {err}");
    for line in [
        "[general] alice: one",
        "[side] alice: said in side",
        "[side] alice: live now",
    ] {
        assert_eq!(
            bob.seen.iter().filter(|l| *l == line).count(),
            1,
            "{line:?} printed once; printed:\n{}",
            bob.seen.join("\n")
        );
    }
}

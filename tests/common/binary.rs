//! Runs the real `swiftchat` binary (`env!("CARGO_BIN_EXE_swiftchat")`).
//!
//! Commands start in a fresh temp working directory (so no stray
//! `swiftchat.toml` is read), with every inherited `SWIFTCHAT_*` variable
//! removed, `NO_COLOR=1` and `RUST_LOG=info`. The server's address is taken
//! from its `listening on <addr>` log line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Path of the binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_swiftchat")
}

/// A command for the binary with a clean environment and working
/// directory `cwd`.
pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(exe());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWIFTCHAT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A free loopback port (bound then released; racy but fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The address in a `listening on <addr>` log line (plain or JSON
/// format, with or without `addr=`), if the line has one.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let at = line.find("listening on")?;
    let rest = &line[at + "listening on".len()..];
    // Also look at the rest of the line: a JSON log may put the address in
    // a field after the message.
    for token in rest
        .split(|c: char| {
            c.is_whitespace() || c == ',' || c == '"' || c == '=' || c == '{' || c == '}'
        })
        .chain(line.split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '='))
    {
        let token = token.trim_matches(|c: char| c == '\'' || c == '`' || c == '(' || c == ')');
        if let Ok(addr) = token.parse::<SocketAddr>() {
            return Some(addr);
        }
    }
    None
}

/// A running binary whose stdout and stderr are collected.
pub struct Process {
    pub child: Child,
    output: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Process {
    /// Spawns `cmd` and starts collecting its output.
    pub fn spawn(mut cmd: Command) -> Process {
        let mut child = cmd.spawn().expect("spawn swiftchat");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout_only = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            collect(
                stdout,
                vec![output.clone(), stdout_only.clone()],
                tx.clone(),
            );
        }
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, vec![output.clone()], tx);
        }
        Process {
            child,
            output,
            stdout: stdout_only,
            lines,
        }
    }

    /// Everything the process printed so far (stdout and stderr mixed).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// What the process printed so far on stdout only.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the `listening on <addr>` line; panics with the output if
    /// the process exits first or nothing comes within `within`.
    pub async fn wait_listening(&mut self, within: Duration) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(addr) = parse_listening(&line) {
                        return addr;
                    }
                }
                Ok(None) => {
                    let status = self.child.wait().await;
                    panic!(
                        "swiftchat exited ({status:?}) before logging `listening on`; output:\n{}",
                        self.output()
                    );
                }
                Err(_) => panic!(
                    "no `listening on` line within {within:?}; output:\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill -s`.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("process still running");
        let status = std::process::Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {sig} {pid} failed");
    }

    /// Waits for the process to exit; panics (after killing it) if it has
    /// not within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for swiftchat"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "swiftchat did not exit within {within:?}; output:\n{}",
                    self.output()
                );
            }
        }
    }
}

fn collect<R: AsyncRead + Unpin + Send + 'static>(
    r: R,
    outputs: Vec<Arc<Mutex<String>>>,
    tx: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            for output in &outputs {
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
            let _ = tx.send(line);
        }
    });
}

/// Runs the binary to completion (bounded by `within`, killed after);
/// returns its exit status and output (stdout and stderr).
pub async fn run_to_exit(cmd: Command, within: Duration) -> (ExitStatus, String) {
    let mut p = Process::spawn(cmd);
    let status = p.wait_exit(within).await;
    // Let the collectors catch the last lines.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (status, p.output())
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write file");
    path
}

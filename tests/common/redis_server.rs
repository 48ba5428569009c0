//! A real `redis-server` for tests: started on a free loopback port with
//! persistence off (`--save "" --appendonly no`) in its own temp dir,
//! stoppable and restartable on the same port, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Append-only file on (fsync always): a restart keeps the data.
    persistent: bool,
}

/// Path of `redis-server`, or a panic telling how to install it.
pub fn redis_server_path() -> PathBuf {
    program_on_path("redis-server", "redis-server")
}

/// Path of `program` on PATH, or a panic naming the Debian `package` to
/// install.
pub fn program_on_path(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{program} not found on PATH: install it with `apt-get install -y {package}`");
}

/// A free loopback port (for the cluster harness).
pub fn free_port_pub() -> u16 {
    free_port()
}

/// Runs one command on `127.0.0.1:port` (fresh connection, 5 s read
/// timeout); panics on an I/O error.
pub fn cmd_on_port(port: u16, args: &[&str]) -> Resp {
    try_cmd_on_port(port, args).expect("redis command")
}

/// Like [`cmd_on_port`], returning I/O errors (e.g. connection refused).
pub fn try_cmd_on_port(port: u16, args: &[&str]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    read_resp(&mut r)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

impl RedisServer {
    /// Starts a fresh `redis-server` on a free port and waits until it
    /// answers PING (up to 5 s). Panics if it cannot be started.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// Like [`RedisServer::start`], with the append-only file on (fsync
    /// always), so that [`RedisServer::restart`] comes back with every
    /// write acknowledged before the kill.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        let exe = redis_server_path();
        let mut last_err = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for redis");
            let port = free_port();
            match spawn(&exe, dir.path(), port, persistent) {
                Ok(child) => {
                    let mut server = RedisServer {
                        child: Some(child),
                        port,
                        dir,
                        persistent,
                    };
                    match server.wait_ready(Duration::from_secs(5)) {
                        Ok(()) => return server,
                        // e.g. another process took the port: try another.
                        Err(e) => last_err = e,
                    }
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running (it may still be starting).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL) and waits for the process to end. Its
    /// data is gone (persistence is off). No-op if already stopped.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port (empty, unless started with
    /// [`RedisServer::start_persistent`]) and waits until it
    /// answers PING. Stops it first if it is running.
    pub fn restart(&mut self) {
        self.kill();
        let exe = redis_server_path();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = spawn(&exe, self.dir.path(), self.port, self.persistent)
                .expect("spawn redis-server");
            self.child = Some(child);
            match self.wait_ready(Duration::from_secs(5)) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    // e.g. the port still in use for a moment: retry.
                    let _ = e;
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("redis-server did not restart on port {}: {e}", self.port),
            }
        }
    }

    /// Runs one command (e.g. `["PUBSUB", "NUMSUB", "ch"]`) on a fresh
    /// connection and returns the reply.
    pub fn cmd(&self, args: &[&str]) -> Resp {
        cmd_on_port(self.port, args)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "redis-server exited with {status}; log: {}",
                        std::fs::read_to_string(self.dir.path().join("redis.log"))
                            .unwrap_or_default()
                    ));
                }
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 7];
                    if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no PONG on port {} within {within:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(exe: &Path, dir: &Path, port: u16, persistent: bool) -> std::io::Result<Child> {
    let appendonly = if persistent { "yes" } else { "no" };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))?;
    Command::new(exe)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            appendonly,
            "--appendfsync",
            "always",
            "--dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
}

/// A Redis reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }
}

pub fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1.min(line.len()));
    let bad = || std::io::Error::other(format!("bad RESP line {line:?}"));
    Ok(match kind {
        "+" => Resp::Simple(rest.into()),
        "-" => Resp::Error(rest.into()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Resp::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_resp(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        _ => return Err(bad()),
    })
}

//! `idle`: N logged-in connections that do nothing; server RSS per connection.
//!
//! The per-process open-file limit (20,000 here, hard) caps one process at a
//! little under 20k sockets, so the coordinator runs this binary again as
//! `idle-worker` processes, each holding a share of the connections (from
//! source addresses 127.0.0.2.. so that no source address runs out of
//! ephemeral ports). The coordinator reads each node's VmRSS before the first
//! connection and after all are logged in and settled.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, SourceIps, Target};
use crate::procfs::{self, Watched};
use crate::proto;
use crate::stats::fmt_n;

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Node URLs, comma-separated; connection i goes to node i % len.
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// Connections in total.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Node PIDs in the same order as --urls (`LABEL=PID` or `PID`).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<String>,
    /// Connections per generator process (each process may open at most
    /// ~19,900 files here).
    #[arg(long, default_value_t = 10_000)]
    pub per_process: usize,
    /// Source addresses 127.0.0.2.. to spread connections over.
    #[arg(long, default_value_t = 16)]
    pub source_ips: u32,
    /// Logins in flight at once per process.
    #[arg(long, default_value_t = 256)]
    pub login_concurrency: usize,
    /// Seconds to wait after the last login (and the messages) before
    /// reading RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Rooms to spread the connections over (connection i joins
    /// `room-{i % rooms}` after IDENTIFY); 0 keeps everyone in the default
    /// room. With rooms of at most `presence_notice_max_members` (200)
    /// members, every login sends a joined notice to the room's members, so
    /// the connections receive traffic before they go quiet.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Messages each room's first member sends once everyone is logged in
    /// (every member receives them); needs --rooms.
    #[arg(long, default_value_t = 0)]
    pub messages: usize,
    /// Give up if the logins are not all done after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub out: crate::stats::Output,
    #[arg(long, default_value = "idle")]
    pub label: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct IdleWorkerArgs {
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    #[arg(long)]
    pub connections: usize,
    /// `s/P`: this process takes the connections i with i % P == s.
    #[arg(long)]
    pub shard: String,
    #[arg(long)]
    pub run_id: String,
    #[arg(long, default_value_t = 16)]
    pub source_ips: u32,
    #[arg(long, default_value_t = 256)]
    pub login_concurrency: usize,
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    #[arg(long, default_value_t = 0)]
    pub messages: usize,
    /// Hold the connections until stdin closes or says STOP (default), or for
    /// this many seconds when given.
    #[arg(long)]
    pub hold: Option<f64>,
}

pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("shard must be s/P"))?;
    let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
    if b == 0 || a >= b {
        bail!("shard s/P needs 0 <= s < P");
    }
    Ok((a, b))
}

/// A worker: log in its share, print `READY ok failed first_error`; on a
/// `SEND` line on stdin each room's first member (of this worker's share)
/// sends `--messages` messages; hold until `STOP` (or `--hold` seconds), then
/// print `DONE frames` (frames received after login, over all connections).
pub async fn worker(a: IdleWorkerArgs) -> Result<()> {
    let targets = Target::parse_all(&a.urls)?;
    let (s, p) = parse_shard(&a.shard)?;
    let src = SourceIps {
        count: a.source_ips,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (send_tx, send_rx) = watch::channel(false);
    let frames = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(Semaphore::new(a.login_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut holders = Vec::new();
    let rooms = a.rooms;
    for i in (s..a.connections).step_by(p) {
        let sem = sem.clone();
        let target = targets[i % targets.len()].clone();
        let name = format!("i{}{}", a.run_id, i);
        let srcip = src.for_index(i);
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let mut ws = conn::open(&target, srcip, 4096).await?;
            let room = (rooms > 0).then(|| format!("room-{}", i % rooms));
            conn::login(&mut ws, &name, room.as_deref(), Duration::from_secs(30)).await?;
            anyhow::Ok((i, ws))
        });
    }
    let (mut ok, mut failed, mut first_err) = (0usize, 0usize, String::new());
    while let Some(j) = set.join_next().await {
        match j? {
            Ok((i, mut ws)) => {
                ok += 1;
                let mut stop = stop_rx.clone();
                let mut send = send_rx.clone();
                let frames = frames.clone();
                // The first member of each room sends; everyone reads.
                let messages = if rooms > 0 && i < rooms {
                    a.messages
                } else {
                    0
                };
                let run_id = a.run_id.clone();
                // Keep reading so the server's pings are answered.
                holders.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.changed() => break,
                            r = send.changed(), if messages > 0 => {
                                if r.is_err() { continue; }
                                for n in 0..messages {
                                    let text = proto::message_create(&format!("idle-{run_id}-{i}-{n}"));
                                    if ws.send(Message::text(text)).await.is_err() { break; }
                                }
                            }
                            m = ws.next() => match m {
                                Some(Ok(Message::Text(_))) => { frames.fetch_add(1, Ordering::Relaxed); }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                        }
                    }
                }));
            }
            Err(e) => {
                failed += 1;
                if first_err.is_empty() {
                    first_err = format!("{e:#}").replace('\n', " ");
                }
            }
        }
    }
    println!("READY {ok} {failed} {first_err}");
    std::io::stdout().flush()?;
    match a.hold {
        Some(secs) => {
            let _ = send_tx.send(true);
            tokio::time::sleep(Duration::from_secs_f64(secs)).await
        }
        None => {
            tokio::task::spawn_blocking(move || {
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    match line {
                        Ok(l) if l.trim() == "STOP" => break,
                        Ok(l) if l.trim() == "SEND" => {
                            let _ = send_tx.send(true);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
            .await?;
        }
    }
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    println!("DONE {}", frames.load(Ordering::Relaxed));
    Ok(())
}

pub async fn run(a: IdleArgs) -> Result<()> {
    let targets = Target::parse_all(&a.urls)?;
    let watched = Watched::parse_nodes(&a.pids)?;
    if !watched.is_empty() && watched.len() != targets.len() {
        bail!("--pids must list one PID per --urls entry, in the same order");
    }
    let procs = a.connections.div_ceil(a.per_process.max(1)).max(1);
    let run_id = conn::run_id();
    let rss0: Vec<u64> = watched
        .iter()
        .map(|w| procfs::rss_bytes(w.pid))
        .collect::<Result<_>>()?;
    let cpu0 = procfs::snap(&watched);
    eprintln!(
        "idle: {} connections over {} node(s) from {} generator process(es)...",
        a.connections,
        targets.len(),
        procs
    );
    let exe = std::env::current_exe().context("current_exe")?;
    let t0 = Instant::now();
    let mut children = Vec::new();
    for s in 0..procs {
        let child = Command::new(&exe)
            .arg("idle-worker")
            .arg("--urls")
            .arg(a.urls.join(","))
            .arg("--connections")
            .arg(a.connections.to_string())
            .arg("--shard")
            .arg(format!("{s}/{procs}"))
            .arg("--run-id")
            .arg(&run_id)
            .arg("--source-ips")
            .arg(a.source_ips.to_string())
            .arg("--login-concurrency")
            .arg(a.login_concurrency.to_string())
            .arg("--rooms")
            .arg(a.rooms.to_string())
            .arg("--messages")
            .arg(a.messages.to_string())
            .args(
                if conn::DELAYED_ACK.load(std::sync::atomic::Ordering::Relaxed) {
                    &[][..]
                } else {
                    &["--quickack"][..]
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn idle-worker")?;
        children.push(child);
    }
    // Wait for every worker's READY line (blocking reads, off the runtime).
    let timeout = Duration::from_secs_f64(a.timeout);
    let mut readers = Vec::new();
    for c in &mut children {
        let out = c.stdout.take().expect("piped");
        readers.push(tokio::task::spawn_blocking(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return (None, r);
                }
                if line.starts_with("READY") {
                    return (Some(line.trim().to_owned()), r);
                }
            }
        }));
    }
    let (mut ok, mut failed, mut first_err) = (0usize, 0usize, String::new());
    let mut outs = Vec::new();
    for rd in readers {
        let (line, r) = tokio::time::timeout(timeout, rd)
            .await
            .map_err(|_| anyhow!("idle workers not ready within {:?}", timeout))??;
        outs.push(r);
        let line = line.ok_or_else(|| anyhow!("an idle worker exited before READY"))?;
        let mut f = line.splitn(4, ' ').skip(1);
        ok += f.next().unwrap_or("0").parse::<usize>().unwrap_or(0);
        failed += f.next().unwrap_or("0").parse::<usize>().unwrap_or(0);
        if let Some(e) = f.next() {
            if first_err.is_empty() && !e.is_empty() {
                first_err = e.to_owned();
            }
        }
    }
    let login_secs = t0.elapsed().as_secs_f64();
    let cpu1 = procfs::snap(&watched);
    // Everyone is in: the rooms' first members send their messages, then
    // everything goes quiet for --settle seconds.
    let mut stdins: Vec<_> = children.iter_mut().map(|c| c.stdin.take()).collect();
    for stdin in stdins.iter_mut().flatten() {
        let _ = writeln!(stdin, "SEND");
        let _ = stdin.flush();
    }
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss1: Vec<u64> = watched
        .iter()
        .map(|w| procfs::rss_bytes(w.pid))
        .collect::<Result<_>>()?;
    // Stop the workers.
    for mut stdin in stdins.into_iter().flatten() {
        let _ = writeln!(stdin, "STOP");
    }
    // Each worker ends with `DONE frames`.
    let mut frames_received = 0u64;
    for mut r in outs {
        let n = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return 0;
                }
                if let Some(n) = line.trim().strip_prefix("DONE") {
                    return n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        })
        .await
        .unwrap_or(0);
        frames_received += n;
    }
    for mut c in children {
        let _ = tokio::task::spawn_blocking(move || c.wait()).await;
    }

    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {}: {} logged-in idle connections over {} node(s), {} generator process(es), {} source addresses; {}, held {} s after the last login\n",
        a.label,
        a.connections,
        targets.len(),
        procs,
        a.source_ips,
        if a.rooms > 0 {
            format!(
                "{} rooms of ~{} members, {} messages per room",
                a.rooms,
                a.connections / a.rooms,
                a.messages
            )
        } else {
            "default room".to_owned()
        },
        a.settle
    );
    let _ = writeln!(
        md,
        "| node | connections | RSS before | RSS after | RSS per connection | per logged-in connection | node CPU s during logins |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    // Failed logins hold no memory: also divide by the node's share of the
    // logged-in connections (exact with one node).
    let logged_in_share = ok as f64 / a.connections.max(1) as f64;
    for (n, w) in watched.iter().enumerate() {
        let conns = (0..a.connections)
            .filter(|i| i % targets.len() == n)
            .count();
        let per = (rss1[n] as f64 - rss0[n] as f64) / conns.max(1) as f64;
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.2} KB ({:.2} KiB) | {:.2} KB | {:.2} |",
            w.label,
            fmt_n(conns as f64),
            rss0[n] as f64 / 1048576.0,
            rss1[n] as f64 / 1048576.0,
            per / 1000.0,
            per / 1024.0,
            per / logged_in_share.max(1e-9) / 1000.0,
            cpu1.per_proc[n] - cpu0.per_proc[n]
        );
    }
    let _ = writeln!(
        md,
        "\nFrames received after login: {} ({:.1} per connection)\n\nLogged in: {} ok, {} failed, in {:.2} s ({} logins/s overall){}",
        frames_received,
        frames_received as f64 / ok.max(1) as f64,
        ok,
        failed,
        login_secs,
        fmt_n(ok as f64 / login_secs),
        if first_err.is_empty() {
            String::new()
        } else {
            format!("; first error: {first_err}")
        }
    );
    println!("{md}");
    a.out.report(&md)?;
    for (n, w) in watched.iter().enumerate() {
        let conns = (0..a.connections)
            .filter(|i| i % targets.len() == n)
            .count();
        let per = (rss1[n] as f64 - rss0[n] as f64) / conns.max(1) as f64;
        let j = serde_json::json!({
            "bench": "idle", "label": a.label, "node": w.label, "connections": conns,
            "logged_in": ok, "failed": failed, "rss_before": rss0[n], "rss_after": rss1[n],
            "bytes_per_connection": per,
            "bytes_per_logged_in": per / logged_in_share.max(1e-9), "rooms": a.rooms, "messages": a.messages,
            "frames_received": frames_received,
        });
        a.out.summary(&j)?;
    }
    if failed > 0 {
        bail!("{failed} idle logins failed");
    }
    Ok(())
}

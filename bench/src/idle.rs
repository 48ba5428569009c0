//! `idle`: N logged-in connections that do nothing; server RSS per connection.
//!
//! The per-process open-file limit (20,000 here, hard) caps one process at a
//! little under 20k sockets, so the coordinator runs this binary again as
//! `idle-worker` processes, each holding a share of the connections (from
//! source addresses 127.0.0.2.. so that no source address runs out of
//! ephemeral ports). The coordinator reads each node's VmRSS before the first
//! connection and after all are logged in and settled.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};

use crate::conn::{self, SourceIps, Target};
use crate::procfs::{self, Watched};
use crate::stats::{self, fmt_n};

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
    /// Seconds to wait after the last login before reading RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Give up if the logins are not all done after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Append the markdown result to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Append a one-line JSON summary to this file (read by `summary`).
    #[arg(long)]
    pub summary: Option<PathBuf>,
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

/// A worker: log in its share, print `READY ok failed first_error`, hold.
pub async fn worker(a: IdleWorkerArgs) -> Result<()> {
    let targets = Target::parse_all(&a.urls)?;
    let (s, p) = parse_shard(&a.shard)?;
    let src = SourceIps {
        count: a.source_ips,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(a.login_concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut holders = Vec::new();
    for i in (s..a.connections).step_by(p) {
        let sem = sem.clone();
        let target = targets[i % targets.len()].clone();
        let name = format!("i{}{}", a.run_id, i);
        let srcip = src.for_index(i);
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let mut ws = conn::open(&target, srcip, 4096).await?;
            conn::login(&mut ws, &name, None, Duration::from_secs(30)).await?;
            anyhow::Ok(ws)
        });
    }
    let (mut ok, mut failed, mut first_err) = (0usize, 0usize, String::new());
    while let Some(j) = set.join_next().await {
        match j? {
            Ok(mut ws) => {
                ok += 1;
                let mut stop = stop_rx.clone();
                // Keep reading so the server's pings are answered.
                holders.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.changed() => break,
                            m = ws.next() => if !matches!(m, Some(Ok(_))) { break },
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
        Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
        None => {
            tokio::task::spawn_blocking(|| {
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    match line {
                        Ok(l) if l.trim() == "STOP" => break,
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
    println!("DONE");
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
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss1: Vec<u64> = watched
        .iter()
        .map(|w| procfs::rss_bytes(w.pid))
        .collect::<Result<_>>()?;
    // Stop the workers.
    for c in &mut children {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = writeln!(stdin, "STOP");
        }
    }
    for mut c in children {
        let _ = tokio::task::spawn_blocking(move || c.wait()).await;
    }
    drop(outs);

    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {}: {} logged-in idle connections over {} node(s), {} generator process(es), {} source addresses\n",
        a.label,
        a.connections,
        targets.len(),
        procs,
        a.source_ips
    );
    let _ = writeln!(
        md,
        "| node | connections | RSS before | RSS after | RSS per connection | node CPU s during logins |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (n, w) in watched.iter().enumerate() {
        let conns = (0..a.connections)
            .filter(|i| i % targets.len() == n)
            .count();
        let per = (rss1[n] as f64 - rss0[n] as f64) / conns.max(1) as f64;
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.2} KB ({:.2} KiB) | {:.2} |",
            w.label,
            fmt_n(conns as f64),
            rss0[n] as f64 / 1048576.0,
            rss1[n] as f64 / 1048576.0,
            per / 1000.0,
            per / 1024.0,
            cpu1.per_proc[n] - cpu0.per_proc[n]
        );
    }
    let _ = writeln!(
        md,
        "\nLogged in: {} ok, {} failed, in {:.2} s ({} logins/s overall){}",
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
    stats::append_report(a.report.as_deref(), &md)?;
    for (n, w) in watched.iter().enumerate() {
        let conns = (0..a.connections)
            .filter(|i| i % targets.len() == n)
            .count();
        let per = (rss1[n] as f64 - rss0[n] as f64) / conns.max(1) as f64;
        let j = serde_json::json!({
            "bench": "idle", "label": a.label, "node": w.label, "connections": conns,
            "logged_in": ok, "failed": failed, "rss_before": rss0[n], "rss_after": rss1[n],
            "bytes_per_connection": per,
        });
        stats::append_report(a.summary.as_deref(), &format!("{j}\n"))?;
    }
    if failed > 0 {
        bail!("{failed} idle logins failed");
    }
    Ok(())
}

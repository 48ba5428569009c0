//! `connect`: how fast a node takes new users. Each login is TCP connect +
//! WebSocket upgrade + IDENTIFY, timed until its CACHE_UPDATE arrives; at most
//! `--concurrency` are in flight. Logged-in connections stay open until the
//! run ends (as real users would), so the count is bounded by the open-file
//! limit of this process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::SinkExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, SourceIps, Target};
use crate::procfs::{self, Watched};
use crate::proto;
use crate::stats::{self, fmt_n, fmt_us, Lat};

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Node URLs, comma-separated; login i goes to node i % len.
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// Logins in total (at most ~19,000 in one process: open-file limit).
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Node PIDs (`LABEL=PID` or `PID`), for CPU per login.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<String>,
    /// The redis-server process.
    #[arg(long)]
    pub redis_pid: Option<String>,
    /// Source addresses 127.0.0.2.. (0: the kernel's choice).
    #[arg(long, default_value_t = 16)]
    pub source_ips: u32,
    /// A login slower than this counts as failed.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Append the markdown result to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Append a one-line JSON summary to this file (read by `summary`).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Before starting, wait up to this many seconds for the rest of the
    /// machine to go quiet (below 0.1 core); 0: don't.
    #[arg(long, default_value_t = 0.0)]
    pub quiet_wait: f64,
    #[arg(long, default_value = "connect")]
    pub label: String,
}

struct One {
    upgrade_us: u64,
    identify_us: u64,
    total_us: u64,
}

pub async fn run(a: ConnectArgs) -> Result<()> {
    if a.count > 19_000 {
        bail!("--count above 19,000 would exceed this process's open-file limit; run several processes");
    }
    let targets = Target::parse_all(&a.urls)?;
    let watched = Watched::parse_nodes(&a.pids)?;
    let redis = a
        .redis_pid
        .as_deref()
        .map(|p| Watched::parse(p, "redis"))
        .transpose()?;
    let mut all = watched.clone();
    if let Some(r) = &redis {
        all.push(r.clone());
    }
    let run_id = conn::run_id();
    let src = SourceIps {
        count: a.source_ips,
    };
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let timeout = Duration::from_secs_f64(a.timeout);
    eprintln!(
        "connect: {} logins over {} node(s), {} in flight...",
        a.count,
        targets.len(),
        a.concurrency
    );
    if a.quiet_wait > 0.0 {
        let other = procfs::wait_quiet(&all, Duration::from_secs_f64(a.quiet_wait), 0.1).await;
        if other >= 0.1 {
            eprintln!("connect: machine not quiet ({other:.2} other cores busy); running anyway");
        }
    }
    let cpu0 = procfs::snap(&all);
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.count {
        let sem = sem.clone();
        let target = targets[i % targets.len()].clone();
        let name = format!("c{run_id}{i}");
        let srcip = src.for_index(i);
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let start = Instant::now();
            let r = tokio::time::timeout(timeout, async {
                let ws_open = Instant::now();
                let mut ws = conn::open(&target, srcip, 4096).await?;
                let opened = Instant::now();
                ws.send(Message::text(proto::identify(&name, None))).await?;
                conn::wait_cache_update(&mut ws, start + timeout).await?;
                let done = Instant::now();
                anyhow::Ok((ws, ws_open, opened, done))
            })
            .await;
            match r {
                Ok(Ok((ws, ws_open, opened, done))) => Ok((
                    ws,
                    One {
                        upgrade_us: (opened - ws_open).as_micros() as u64,
                        identify_us: (done - opened).as_micros() as u64,
                        total_us: (done - start).as_micros() as u64,
                    },
                    done,
                )),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("timed out".to_owned()),
            }
        });
    }
    let mut held = Vec::with_capacity(a.count);
    let (mut total, mut upgrade, mut identify) =
        (stats::new_total(), stats::new_total(), stats::new_total());
    let mut failed = 0usize;
    let mut first_err = None;
    let mut last_done = t0;
    while let Some(j) = set.join_next().await {
        match j? {
            Ok((ws, one, done)) => {
                let _ = total.record(one.total_us.clamp(1, stats::MAX_US));
                let _ = upgrade.record(one.upgrade_us.clamp(1, stats::MAX_US));
                let _ = identify.record(one.identify_us.clamp(1, stats::MAX_US));
                last_done = last_done.max(done);
                held.push(ws);
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    let cpu1 = procfs::snap(&all);
    let secs = (last_done - t0).as_secs_f64();
    let ok = held.len();
    drop(held);

    let (lt, lu, li) = (Lat::of(&total), Lat::of(&upgrade), Lat::of(&identify));
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {}: {} logins over {} node(s), {} in flight\n",
        a.label,
        a.count,
        targets.len(),
        a.concurrency
    );
    let _ = writeln!(
        md,
        "| logins ok | failed | seconds | logins/s | step | p50 | p90 | p99 | p99.9 | max |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for (name, l) in [
        ("total (connect+upgrade+IDENTIFY→CACHE_UPDATE)", &lt),
        ("TCP connect + upgrade", &lu),
        ("IDENTIFY → CACHE_UPDATE", &li),
    ] {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_n(ok as f64),
            failed,
            secs,
            fmt_n(ok as f64 / secs),
            name,
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max)
        );
    }
    let node_cpu: f64 = (0..watched.len())
        .map(|i| cpu1.per_proc[i] - cpu0.per_proc[i])
        .sum();
    if !watched.is_empty() {
        let _ = write!(md, "\nCPU during the logins: ");
        for (i, w) in all.iter().enumerate() {
            let _ = write!(
                md,
                "{} {:.2} s, ",
                w.label,
                cpu1.per_proc[i] - cpu0.per_proc[i]
            );
        }
        let _ = writeln!(
            md,
            "generator {:.2} s, everything else on the machine {:.2} s; node CPU per login {:.1} µs.",
            cpu1.generator - cpu0.generator,
            cpu1.other_since(&cpu0),
            node_cpu * 1e6 / ok.max(1) as f64
        );
    }
    if let Some(e) = first_err {
        let _ = writeln!(md, "\nFirst error: {e}");
    }
    println!("{md}");
    stats::append_report(a.report.as_deref(), &md)?;
    let j = serde_json::json!({
        "bench": "connect", "label": a.label, "nodes": targets.len(), "count": a.count,
        "ok": ok, "failed": failed, "seconds": secs, "logins_per_s": ok as f64 / secs,
        "p50_us": lt.p50, "p99_us": lt.p99, "max_us": lt.max,
        "node_cpu_us_per_login": node_cpu * 1e6 / ok.max(1) as f64,
    });
    stats::append_report(a.summary.as_deref(), &format!("{j}\n"))?;
    Ok(())
}

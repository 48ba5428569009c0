//! `connect`: how fast a node takes new users. Each login is TCP connect +
//! WebSocket upgrade + IDENTIFY, timed until its CACHE_UPDATE arrives; at most
//! `--concurrency` are in flight. Logged-in connections stay open until the
//! run ends (as real users would), so the count is bounded by the open-file
//! limit of this process.
//!
//! With `--rooms R --prefill P` (issue 13, "logins into rooms with
//! members"): P members first log in untimed (IDENTIFY, `\join room-{j % R}`),
//! then each timed login is an IDENTIFY straight into `room-{i % R}`, so
//! every login joins a room that has members (who get its joined notice).
//! Every connection keeps reading, so nobody becomes a slow consumer. With
//! `--redis-metric` the nodes' `/metrics` are read before and after the timed
//! logins, and the change of that counter (summed over its labels) per login
//! is reported: the Redis round trips per login.

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
    #[command(flatten)]
    pub out: crate::stats::Output,
    /// Before starting, wait up to this many seconds for the rest of the
    /// machine to go quiet (below 0.1 core); 0: don't.
    #[arg(long, default_value_t = 0.0)]
    pub quiet_wait: f64,
    #[arg(long, default_value = "connect")]
    pub label: String,
    /// Rooms to log into (login i: IDENTIFY with room `room-{i % rooms}`);
    /// 0: the default room.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Members logged in (untimed, IDENTIFY then `\join room-{j % rooms}`)
    /// before the timed logins, so that those join rooms with members.
    #[arg(long, default_value_t = 0)]
    pub prefill: usize,
    /// A counter in the nodes' `/metrics` (summed over its labels) read before
    /// and after the timed logins: its change per login is reported, e.g.
    /// `swiftchat_redis_commands_total` (one per Redis call: a round trip).
    #[arg(long)]
    pub redis_metric: Option<String>,
}

/// Sum of every sample of `metric` (all label sets) in one node's `/metrics`.
async fn read_counter(target: &Target, metric: &str) -> Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(target.addr).await?;
    s.write_all(
        format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.addr
        )
        .as_bytes(),
    )
    .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body)).await??;
    let mut sum = 0.0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
        }
    }
    Ok(sum)
}

/// The counter summed over every node.
async fn read_counters(targets: &[Target], metric: &str) -> Result<f64> {
    let mut sum = 0.0;
    for t in targets {
        sum += read_counter(t, metric).await?;
    }
    Ok(sum)
}

/// Reads (and counts) whatever the server sends until `stop`, so that a held
/// connection never becomes a slow consumer.
fn keep_reading(
    mut ws: conn::Ws,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                m = ws.next() => match m {
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    })
}

struct One {
    upgrade_us: u64,
    identify_us: u64,
    total_us: u64,
}

pub async fn run(a: ConnectArgs) -> Result<()> {
    if a.count + a.prefill > 19_000 {
        bail!("--count + --prefill above 19,000 would exceed this process's open-file limit; run several processes");
    }
    if a.prefill > 0 && a.rooms == 0 {
        bail!("--prefill needs --rooms");
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    if a.prefill > 0 {
        eprintln!(
            "connect: {} members into {} rooms first (untimed)...",
            a.prefill, a.rooms
        );
        let mut set = tokio::task::JoinSet::new();
        for j in 0..a.prefill {
            let sem = sem.clone();
            let target = targets[j % targets.len()].clone();
            let name = format!("p{run_id}{j}");
            // Other source addresses than the timed logins' (same spread).
            let srcip = src.for_index(j + a.count);
            let room = format!("room-{}", j % a.rooms);
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                let mut ws = conn::open(&target, srcip, 4096).await?;
                conn::login(&mut ws, &name, Some(&room), timeout * 3).await?;
                anyhow::Ok(ws)
            });
        }
        let mut failed = 0usize;
        let mut first = None;
        while let Some(j) = set.join_next().await {
            match j? {
                Ok(ws) => readers.push(keep_reading(ws, stop_rx.clone())),
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(format!("{e:#}"));
                }
            }
        }
        if failed > 0 {
            bail!(
                "{failed} of {} prefill members failed to log in; first error: {}",
                a.prefill,
                first.unwrap_or_default()
            );
        }
        // Let the joined notices of the last members drain.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Background Redis traffic (heartbeats, probes), to subtract.
    let mut background_per_s = 0.0;
    if let Some(metric) = &a.redis_metric {
        let c0 = read_counters(&targets, metric).await?;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c1 = read_counters(&targets, metric).await?;
        background_per_s = (c1 - c0) / t.elapsed().as_secs_f64();
    }
    let metric0 = match &a.redis_metric {
        Some(metric) => Some(read_counters(&targets, metric).await?),
        None => None,
    };
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
        let room = (a.rooms > 0).then(|| format!("room-{}", i % a.rooms));
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let start = Instant::now();
            let r = tokio::time::timeout(timeout, async {
                let ws_open = Instant::now();
                let mut ws = conn::open(&target, srcip, 4096).await?;
                let opened = Instant::now();
                ws.send(Message::text(proto::identify(&name, room.as_deref())))
                    .await?;
                let now_in = conn::wait_cache_update(&mut ws, start + timeout).await?;
                if let Some(room) = &room {
                    if &now_in != room {
                        bail!("IDENTIFY into {room}: CACHE_UPDATE says room {now_in}");
                    }
                }
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
                if a.rooms > 0 {
                    // Joined notices keep coming: read them.
                    readers.push(keep_reading(ws, stop_rx.clone()));
                } else {
                    held.push(ws);
                }
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    let cpu1 = procfs::snap(&all);
    let secs = (last_done - t0).as_secs_f64();
    let metric_secs = t0.elapsed().as_secs_f64();
    let metric1 = match &a.redis_metric {
        Some(metric) => Some(read_counters(&targets, metric).await?),
        None => None,
    };
    let ok = held.len() + readers.len() - a.prefill;
    drop(held);
    let _ = stop_tx.send(true);
    for r in readers {
        let _ = r.await;
    }

    let (lt, lu, li) = (Lat::of(&total), Lat::of(&upgrade), Lat::of(&identify));
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {}: {} logins over {} node(s), {} in flight{}\n",
        a.label,
        a.count,
        targets.len(),
        a.concurrency,
        if a.rooms > 0 {
            format!(
                ", IDENTIFY into {} rooms that already have {} members in all",
                a.rooms, a.prefill
            )
        } else {
            String::new()
        }
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
    let mut round_trips = None;
    if let (Some(metric), Some(m0), Some(m1)) = (&a.redis_metric, metric0, metric1) {
        let background = background_per_s * metric_secs;
        let per_login = (m1 - m0 - background).max(0.0) / ok.max(1) as f64;
        round_trips = Some(per_login);
        let _ = writeln!(
            md,
            "\nRedis round trips per login: {per_login:.2} (`{metric}` summed over the nodes rose by {:.0} during the {metric_secs:.2} s of logins; {background:.0} of that is the nodes' background traffic, {background_per_s:.1}/s measured for 3 s before, subtracted).",
            m1 - m0
        );
    }
    if let Some(e) = first_err {
        let _ = writeln!(md, "\nFirst error: {e}");
    }
    println!("{md}");
    a.out.report(&md)?;
    let j = serde_json::json!({
        "bench": "connect", "label": a.label, "nodes": targets.len(), "count": a.count,
        "ok": ok, "failed": failed, "seconds": secs, "logins_per_s": ok as f64 / secs,
        "p50_us": lt.p50, "p99_us": lt.p99, "max_us": lt.max,
        "node_cpu_us_per_login": node_cpu * 1e6 / ok.max(1) as f64,
        "rooms": a.rooms, "prefill": a.prefill, "redis_round_trips_per_login": round_trips,
    });
    a.out.summary(&j)?;
    Ok(())
}

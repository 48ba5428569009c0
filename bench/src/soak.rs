//! `soak`: chatting clients with churn for a fixed time (bench/soak.sh
//! samples the node and Redis meanwhile).
//!
//! Each of `--clients` slots loops until the end: connect, log in with a new
//! name, join one of `--rooms` rooms, send a message every `--interval-ms`
//! (within the default rate limit) while reading everything, and after a
//! lifetime of 1 to `--max-life-secs` seconds leave: a clean close, or, one
//! time in four, a dropped socket without a close. So logins, joins,
//! leaves, presence notices, fan-out and both kinds of disconnect go on
//! for the whole run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Target};
use crate::proto;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Node URL (ws://HOST:PORT/ws).
    #[arg(long)]
    url: String,
    /// How long to run.
    #[arg(long, default_value_t = 120)]
    secs: u64,
    /// Concurrent client slots.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Rooms the clients spread over.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Time between two messages of one client.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Longest life of one connection (uniform from 1 s).
    #[arg(long, default_value_t = 20)]
    max_life_secs: u64,
}

#[derive(Default)]
struct Counts {
    logins: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    clean_closes: AtomicU64,
    dropped: AtomicU64,
}

/// A small xorshift generator per slot: no dependency, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub async fn run(args: SoakArgs) -> Result<()> {
    let target = Target::parse(&args.url)?;
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + Duration::from_secs(args.secs);
    let run = conn::run_id();
    let mut slots = Vec::new();
    for slot in 0..args.clients {
        let target = Target {
            url: target.url.clone(),
            addr: target.addr,
        };
        let counts = counts.clone();
        let run = run.clone();
        let rooms = args.rooms;
        let interval = Duration::from_millis(args.interval_ms);
        let max_life = args.max_life_secs.max(1);
        slots.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((slot as u64 + 1) * 0x1000_0001));
            // Spread the first logins over a second.
            tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
            let mut generation = 0u64;
            while Instant::now() < end {
                generation += 1;
                let name = format!("s{run}-{slot}-{generation}");
                let room = format!("soak-{}", rng.below(rooms as u64));
                let life = Duration::from_millis(1000 + rng.below(max_life * 1000 - 999));
                let drop_socket = rng.below(4) == 0;
                if let Err(error) = client_life(
                    &target,
                    &name,
                    &room,
                    life.min(end - Instant::now()),
                    interval,
                    drop_socket,
                    &counts,
                )
                .await
                {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    if counts.failed.load(Ordering::Relaxed) <= 5 {
                        eprintln!("soak: {name}: {error:#}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    let started = Instant::now();
    let mut last = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10).min(end - Instant::now())).await;
        let logins = counts.logins.load(Ordering::Relaxed);
        eprintln!(
            "soak: {:>4}s logins {} (+{}) sent {} received {} failed {}",
            started.elapsed().as_secs(),
            logins,
            logins - last,
            counts.sent.load(Ordering::Relaxed),
            counts.received.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed)
        );
        last = logins;
    }
    for slot in slots {
        let _ = tokio::time::timeout(Duration::from_secs(10), slot).await;
    }
    println!(
        "soak summary: secs={} clients={} logins={} sent={} received={} clean_closes={} dropped={} failed={}",
        args.secs,
        args.clients,
        counts.logins.load(Ordering::Relaxed),
        counts.sent.load(Ordering::Relaxed),
        counts.received.load(Ordering::Relaxed),
        counts.clean_closes.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn client_life(
    target: &Target,
    name: &str,
    room: &str,
    life: Duration,
    interval: Duration,
    drop_socket: bool,
    counts: &Counts,
) -> Result<()> {
    let mut ws = conn::open(target, None, 4096).await?;
    conn::login(&mut ws, name, Some(room), Duration::from_secs(10)).await?;
    counts.logins.fetch_add(1, Ordering::Relaxed);
    let until = Instant::now() + life;
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = tick.tick() => {
                n += 1;
                ws.send(Message::text(proto::message_create(&format!("soak {name} {n}")))).await?;
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(_))) => {
                    counts.received.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(c))) => anyhow::bail!("closed by the server: {c:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("read: {e}"),
                None => anyhow::bail!("stream ended"),
            }
        }
    }
    if drop_socket {
        counts.dropped.fetch_add(1, Ordering::Relaxed);
        drop(ws);
    } else {
        ws.close(None).await?;
        // Read until the server's close (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        counts.clean_closes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

//! `fanout`: C connections over N nodes, K rooms with members on every node,
//! S senders at a paced, open-loop total rate; counts what arrives where it
//! should, and how late.
//!
//! Layout: connection `i` goes to node `i % N` and room `(i / N) % K`, so each
//! run of N consecutive connections covers every node for one room. Sender `j`
//! is in room `j % K` and is member `(j / K + j % K) % members` of that room's
//! list, which spreads the senders evenly over the nodes.
//!
//! Each message's content is `b:<phase>:<sender>:<n>:<send_ns>`, `send_ns`
//! being taken from this process's monotonic clock just before the write. A
//! receiver counts a delivery only if the frame is a MESSAGE of its own room,
//! the content is a bench message of the current phase from a sender of that
//! room, and it has not seen `(sender, n)` before. Out-of-order means a `seq`
//! not above the highest `seq` this receiver has seen in its room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, SourceIps, Target, Ws};
use crate::procfs::{self, Watched};
use crate::proto;
use crate::stats::{self, fmt_n, fmt_us, Lat};

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Node URLs, comma-separated (ws://127.0.0.1:PORT/ws or 127.0.0.1:PORT).
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// Connections in total.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Sending connections (spread over rooms and nodes).
    #[arg(long, default_value_t = 50)]
    pub senders: usize,
    /// Total messages per second over all senders.
    #[arg(long, conflicts_with = "deliveries")]
    pub rate: Option<f64>,
    /// Or: target deliveries per second (rate = deliveries / members per room).
    #[arg(long)]
    pub deliveries: Option<f64>,
    /// Seconds of sending per run (per step with --search).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start of each run whose messages count for loss but not
    /// for latency.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait after the last send for outstanding deliveries; what has
    /// not arrived by then is lost.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Server node processes to measure, comma-separated `LABEL=PID` or `PID`.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<String>,
    /// The redis-server process (its CPU is reported separately and added to
    /// the cluster's cost per delivery).
    #[arg(long)]
    pub redis_pid: Option<String>,
    /// Raise the rate until a run fails (p99 above --p99-ms, or any loss,
    /// duplicate, out-of-order or misrouted delivery), then bisect; reports the
    /// highest passing rate.
    #[arg(long)]
    pub search: bool,
    /// The p99 bound for --search, in ms.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
    /// Rate multiplier between search steps before the first failure.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// At most this many runs in a search.
    #[arg(long, default_value_t = 10)]
    pub max_steps: u32,
    /// Stop bisecting when the gap between pass and fail is below this fraction.
    #[arg(long, default_value_t = 0.08)]
    pub resolution: f64,
    /// Without --search: run this many times at the same rate (each row is
    /// reported; the summary takes the run with the least other CPU).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Room names are PREFIX-0 .. PREFIX-(K-1).
    #[arg(long, default_value = "room")]
    pub room_prefix: String,
    /// Source addresses 127.0.0.2.. (0: the kernel's choice).
    #[arg(long, default_value_t = 0)]
    pub source_ips: u32,
    /// Logins in flight at once during setup.
    #[arg(long, default_value_t = 128)]
    pub login_concurrency: usize,
    /// Client read buffer per connection, bytes (tungstenite zero-fills the
    /// free part before every read, so bigger costs CPU per read).
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,
    #[command(flatten)]
    pub out: crate::stats::Output,
    /// Before each run, wait up to this many seconds for the rest of the
    /// machine to go quiet (other processes below --quiet-cores); 0: don't.
    #[arg(long, default_value_t = 0.0)]
    pub quiet_wait: f64,
    /// What counts as quiet: CPU used by everything but the watched
    /// processes and the generator, in cores.
    #[arg(long, default_value_t = 0.1)]
    pub quiet_cores: f64,
    /// A label for the report section.
    #[arg(long, default_value = "fanout")]
    pub label: String,
}

/// This process's time base for `send_ns`.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

#[inline]
fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// Latency and send-lag histograms, one per runtime worker thread (a
/// per-connection histogram would cost ~70 KB per connection and its page
/// faults showed up in the generator's profile).
struct Shard {
    lat: Histogram<u64>,
    lag: Histogram<u64>,
    /// send → the server's `ts` (wall clock, ms resolution), µs
    accept: Histogram<u64>,
    /// the server's `ts` → arrival (wall clock, ms resolution), µs
    after_accept: Histogram<u64>,
}

static SHARDS: Mutex<Vec<Arc<Mutex<Shard>>>> = Mutex::new(Vec::new());

thread_local! {
    static MY_SHARD: Arc<Mutex<Shard>> = {
        let s = Arc::new(Mutex::new(Shard {
            lat: stats::new_total(),
            lag: stats::new_total(),
            accept: stats::new_total(),
            after_accept: stats::new_total(),
        }));
        SHARDS.lock().expect("shards").push(s.clone());
        s
    };
}

#[inline]
fn shard_record(which: impl Fn(&mut Shard) -> &mut Histogram<u64>, us: u64) {
    MY_SHARD.with(|s| {
        let mut g = s.lock().expect("shard");
        let _ = which(&mut g).record(us.clamp(1, stats::MAX_US));
    });
}

fn reset_shards() {
    for s in SHARDS.lock().expect("shards").iter() {
        let mut g = s.lock().expect("shard");
        g.lat.reset();
        g.lag.reset();
        g.accept.reset();
        g.after_accept.reset();
    }
}

struct Collected {
    lat: Histogram<u64>,
    lag: Histogram<u64>,
    accept: Histogram<u64>,
    after_accept: Histogram<u64>,
}

fn collect_shards() -> Collected {
    let mut c = Collected {
        lat: stats::new_total(),
        lag: stats::new_total(),
        accept: stats::new_total(),
        after_accept: stats::new_total(),
    };
    for s in SHARDS.lock().expect("shards").iter() {
        let g = s.lock().expect("shard");
        let _ = c.lat.add(&g.lat);
        let _ = c.lag.add(&g.lag);
        let _ = c.accept.add(&g.accept);
        let _ = c.after_accept.add(&g.after_accept);
    }
    c
}

/// Unix time in ms of `ns` on the base clock (the offset is taken once).
fn wall_ms(ns: u64) -> u64 {
    static WALL_AT_BASE_NS: OnceLock<u64> = OnceLock::new();
    let w = *WALL_AT_BASE_NS.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        now - now_ns()
    });
    (w + ns) / 1_000_000
}

static DELIVERED: AtomicU64 = AtomicU64::new(0);
static EXPECTED: AtomicU64 = AtomicU64::new(0);
static SENDERS_DONE: AtomicU64 = AtomicU64::new(0);

/// One run's instructions, shared by every connection.
struct PhaseCfg {
    phase: u32,
    start: Instant,
    end: Instant,
    /// Time between two messages of one sender.
    interval: Duration,
    senders: usize,
    /// Messages sent before this (ns on the base clock) count for loss only.
    warmup_until_ns: u64,
    /// Upper bound of `n` per sender in this phase (for the duplicate bitsets).
    max_n: u64,
}

enum Cmd {
    Start(Arc<PhaseCfg>),
    Report(oneshot::Sender<ConnReport>),
    Close,
}

/// What one connection saw during one phase.
struct ConnReport {
    sent: u64,
    delivered: u64,
    duplicated: u64,
    out_of_order: u64,
    sender_reorder: u64,
    misrouted: u64,
    stale: u64,
    foreign: u64,
    notices: BTreeMap<String, u64>,
    /// When the last counted delivery arrived (ns on the base clock).
    last_ns: u64,
    error: Option<String>,
}

impl ConnReport {
    fn new() -> ConnReport {
        ConnReport {
            sent: 0,
            delivered: 0,
            duplicated: 0,
            out_of_order: 0,
            sender_reorder: 0,
            misrouted: 0,
            stale: 0,
            foreign: 0,
            notices: BTreeMap::new(),
            last_ns: 0,
            error: None,
        }
    }
}

/// A connection's fixed facts.
struct Ctx {
    room: usize,
    room_name: String,
    rooms: usize,
    /// This connection's sender id, if it sends.
    sender: Option<u32>,
    /// Members of this connection's room (each message it sends is expected
    /// this many times).
    room_members: u64,
    /// Senders per room (upper bound), for the duplicate bitsets.
    sender_slots: usize,
}

/// Per-phase receive state.
struct RecvState {
    phase: u32,
    warmup_until_ns: u64,
    max_n: u64,
    /// Bitset of seen `n` per sender slot of this room.
    seen: Vec<Vec<u64>>,
    /// Highest `n` seen per sender slot (+1), for per-sender order.
    last_n: Vec<u64>,
    /// Highest seq seen in this room, over the connection's life.
    last_seq: u64,
    rep: ConnReport,
}

impl RecvState {
    fn on_message(&mut self, frame: &[u8], ctx: &Ctx) {
        let now = now_ns();
        let Some(d) = proto::message(frame) else {
            self.rep.foreign += 1;
            return;
        };
        if d.room != ctx.room_name.as_bytes() {
            self.rep.misrouted += 1;
            return;
        }
        let Some(c) = proto::bench_content(d.content) else {
            self.rep.foreign += 1;
            return;
        };
        if c.phase != self.phase {
            self.rep.stale += 1;
            return;
        }
        let sender = c.sender as usize;
        if sender % ctx.rooms != ctx.room {
            self.rep.misrouted += 1;
            return;
        }
        let slot = sender / ctx.rooms;
        if slot >= self.seen.len() || c.n >= self.max_n {
            self.rep.foreign += 1;
            return;
        }
        let bits = &mut self.seen[slot];
        let (w, b) = ((c.n / 64) as usize, c.n % 64);
        if bits.len() <= w {
            bits.resize(w + 1, 0);
        }
        if bits[w] & (1 << b) != 0 {
            self.rep.duplicated += 1;
            return;
        }
        bits[w] |= 1 << b;
        if d.seq <= self.last_seq {
            self.rep.out_of_order += 1;
        } else {
            self.last_seq = d.seq;
        }
        if c.n + 1 < self.last_n[slot] {
            self.rep.sender_reorder += 1;
        } else {
            self.last_n[slot] = c.n + 1;
        }
        self.rep.delivered += 1;
        self.rep.last_ns = now;
        DELIVERED.fetch_add(1, Ordering::Relaxed);
        if c.send_ns >= self.warmup_until_ns {
            let lat_us = now.saturating_sub(c.send_ns) / 1000;
            MY_SHARD.with(|s| {
                let mut g = s.lock().expect("shard");
                let _ = g.lat.record(lat_us.clamp(1, stats::MAX_US));
                if let Some(ts) = d.ts {
                    // ms resolution: +1 ms so that a same-millisecond
                    // acceptance still records (values are coarse anyway)
                    let sent = wall_ms(c.send_ns);
                    let got = wall_ms(now);
                    let _ = g
                        .accept
                        .record((ts.saturating_sub(sent) * 1000 + 1000).min(stats::MAX_US));
                    let _ = g
                        .after_accept
                        .record((got.saturating_sub(ts) * 1000 + 1000).min(stats::MAX_US));
                }
            });
        }
    }

    fn on_notice(&mut self, frame: &[u8]) {
        let code = proto::notice_code(frame).unwrap_or(b"?");
        // joined/left/info are events; count everything, report errors
        let code = String::from_utf8_lossy(code).into_owned();
        *self.rep.notices.entry(code).or_insert(0) += 1;
    }

    fn start(&mut self, cfg: &PhaseCfg) {
        self.phase = cfg.phase;
        self.warmup_until_ns = cfg.warmup_until_ns;
        self.max_n = cfg.max_n;
        for s in &mut self.seen {
            s.clear();
        }
        self.last_n.iter_mut().for_each(|v| *v = 0);
    }

    fn take_report(&mut self) -> ConnReport {
        std::mem::replace(&mut self.rep, ConnReport::new())
    }
}

struct SendState {
    phase: u32,
    next: Instant,
    end: Instant,
    interval: Duration,
    n: u64,
}

async fn conn_task(mut ws: Ws, ctx: Ctx, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut st = RecvState {
        phase: u32::MAX,
        warmup_until_ns: 0,
        max_n: 0,
        seen: vec![Vec::new(); ctx.sender_slots],
        last_n: vec![0; ctx.sender_slots],
        last_seq: 0,
        rep: ConnReport::new(),
    };
    let mut send: Option<SendState> = None;
    let mut dead = false;
    let mut buf = String::with_capacity(96);
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let sleep = tokio::time::sleep_until(far);
    tokio::pin!(sleep);

    loop {
        let sending = send.is_some() && !dead;
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Cmd::Start(cfg)) => {
                    st.start(&cfg);
                    if let (Some(_), true) = (ctx.sender, dead) {
                        SENDERS_DONE.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(id) = ctx.sender {
                        let offset = cfg.interval.mul_f64(id as f64 / cfg.senders as f64);
                        let s = SendState {
                            phase: cfg.phase,
                            next: cfg.start + offset,
                            end: cfg.end,
                            interval: cfg.interval,
                            n: 0,
                        };
                        sleep.as_mut().reset(s.next.into());
                        send = Some(s);
                    }
                }
                Some(Cmd::Report(tx)) => {
                    let _ = tx.send(st.take_report());
                }
                Some(Cmd::Close) | None => break,
            },
            () = &mut sleep, if sending => {
                let s = send.as_mut().expect("sending");
                let now = Instant::now();
                let mut batch = 0;
                let mut failed = None;
                while s.next <= now && s.next < s.end && batch < 256 {
                    let send_ns = now_ns();
                    proto::write_bench_message(&mut buf, s.phase, ctx.sender.unwrap_or(0), s.n, send_ns);
                    shard_record(|s| &mut s.lag, (now - s.next).as_micros() as u64);
                    if let Err(e) = ws.feed(Message::text(buf.as_str())).await {
                        failed = Some(format!("send: {e}"));
                        break;
                    }
                    EXPECTED.fetch_add(ctx.room_members, Ordering::Relaxed);
                    st.rep.sent += 1;
                    s.n += 1;
                    s.next += s.interval;
                    batch += 1;
                }
                if failed.is_none() {
                    if let Err(e) = ws.flush().await {
                        failed = Some(format!("flush: {e}"));
                    }
                }
                if let Some(e) = failed {
                    st.rep.error.get_or_insert(e);
                    dead = true;
                }
                if dead || s.next >= s.end {
                    send = None;
                    SENDERS_DONE.fetch_add(1, Ordering::Relaxed);
                    sleep.as_mut().reset(far);
                } else {
                    sleep.as_mut().reset(s.next.into());
                }
            },
            msg = ws.next(), if !dead => match msg {
                Some(Ok(Message::Text(t))) => {
                    let b = t.as_bytes();
                    match proto::op(b) {
                        Some(proto::OP_MESSAGE) => st.on_message(b, &ctx),
                        Some(proto::OP_NOTICE) => st.on_notice(b),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    st.rep.error.get_or_insert(format!("closed by server: {c:?}"));
                    dead = true;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    st.rep.error.get_or_insert(format!("read: {e}"));
                    dead = true;
                }
                None => {
                    st.rep.error.get_or_insert("connection closed".into());
                    dead = true;
                }
            },
        }
        if dead && send.take().is_some() {
            SENDERS_DONE.fetch_add(1, Ordering::Relaxed);
        }
    }
    if !dead {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
}

struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

/// The result of one run (one rate).
#[derive(Clone, Debug)]
pub struct RunResult {
    pub rate: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: i64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub sender_reorder: u64,
    pub misrouted: u64,
    pub stale: u64,
    pub foreign: u64,
    pub error_notices: BTreeMap<String, u64>,
    pub conn_errors: u64,
    pub first_error: Option<String>,
    pub deliveries_per_s: f64,
    pub lat: Lat,
    pub lag: Lat,
    /// send → server `ts`, and server `ts` → arrival (ms resolution, +1 ms).
    pub accept: Lat,
    pub after_accept: Lat,
    pub proc_cpu: Vec<(String, f64)>,
    pub redis_cpu: Option<f64>,
    pub gen_cpu: f64,
    pub other_cpu: f64,
    pub window: f64,
    pub pass: bool,
    pub why: String,
}

impl RunResult {
    fn node_cpu(&self) -> f64 {
        self.proc_cpu.iter().fold(0.0, |a, (_, c)| a + c)
    }
    fn us_per_delivery(&self, with_redis: bool) -> f64 {
        let cpu = self.node_cpu()
            + if with_redis {
                self.redis_cpu.unwrap_or(0.0)
            } else {
                0.0
            };
        if self.delivered == 0 {
            f64::NAN
        } else {
            cpu * 1e6 / self.delivered as f64
        }
    }
}

pub async fn run(a: FanoutArgs) -> Result<()> {
    let targets = Target::parse_all(&a.urls)?;
    let nodes = targets.len();
    if a.rooms == 0 || a.connections < nodes * a.rooms {
        bail!(
            "need at least nodes x rooms = {} connections so that every room has a member on every node",
            nodes * a.rooms
        );
    }
    let watched = Watched::parse_nodes(&a.pids)?;
    let redis = a
        .redis_pid
        .as_deref()
        .map(|p| Watched::parse(p, "redis"))
        .transpose()?;

    // Layout.
    let room_of = |i: usize| (i / nodes) % a.rooms;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); a.rooms];
    for i in 0..a.connections {
        members[room_of(i)].push(i);
    }
    let min_members = members.iter().map(Vec::len).min().unwrap_or(0);
    if a.senders == 0 || a.senders.div_ceil(a.rooms) > min_members {
        bail!("senders must be 1..={}", min_members * a.rooms);
    }
    let mut sender_of: Vec<Option<u32>> = vec![None; a.connections];
    for j in 0..a.senders {
        let k = j % a.rooms;
        let m = &members[k];
        let i = m[(j / a.rooms + k) % m.len()];
        assert!(sender_of[i].is_none(), "sender layout collision");
        sender_of[i] = Some(j as u32);
    }
    let avg_members = a.connections as f64 / a.rooms as f64;
    let mut rate = match (a.rate, a.deliveries) {
        (Some(r), _) => r,
        (None, Some(d)) => d / avg_members,
        (None, None) => 1000.0,
    };

    let run_id = conn::run_id();
    let src = SourceIps {
        count: a.source_ips,
    };
    eprintln!(
        "fanout: {} connections over {} node(s), {} rooms (~{:.0} members), {} senders; logging in...",
        a.connections, nodes, a.rooms, avg_members, a.senders
    );

    // Login: the first member of each room first (it creates the room), then the rest.
    let t_login = Instant::now();
    let mut wss: Vec<Option<Ws>> = (0..a.connections).map(|_| None).collect();
    let first: Vec<usize> = members.iter().map(|m| m[0]).collect();
    let rest: Vec<usize> = (0..a.connections).filter(|i| !first.contains(i)).collect();
    for batch in [first, rest] {
        let sem = Arc::new(Semaphore::new(a.login_concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for i in batch {
            let sem = sem.clone();
            let target = targets[i % nodes].clone();
            let name = format!("f{run_id}{i}");
            let room = format!("{}-{}", a.room_prefix, room_of(i));
            let srcip = src.for_index(i);
            let rb = a.read_buffer;
            set.spawn(async move {
                let _p = sem.acquire_owned().await;
                let r = async {
                    let mut ws = conn::open(&target, srcip, rb).await?;
                    conn::login(&mut ws, &name, Some(&room), Duration::from_secs(20)).await?;
                    anyhow::Ok(ws)
                }
                .await;
                (i, r)
            });
        }
        let mut errors = Vec::new();
        while let Some(j) = set.join_next().await {
            let (i, r) = j?;
            match r {
                Ok(ws) => wss[i] = Some(ws),
                Err(e) => errors.push(format!("conn {i}: {e:#}")),
            }
        }
        if !errors.is_empty() {
            bail!(
                "{} of {} logins failed; first: {}",
                errors.len(),
                a.connections,
                errors[..errors.len().min(3)].join(" | ")
            );
        }
    }
    eprintln!(
        "fanout: {} logged in in {:.2}s",
        a.connections,
        t_login.elapsed().as_secs_f64()
    );

    // One task per connection.
    let mut handles = Vec::with_capacity(a.connections);
    for (i, ws) in wss.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        let k = room_of(i);
        let ctx = Ctx {
            room: k,
            room_name: format!("{}-{}", a.room_prefix, k),
            rooms: a.rooms,
            sender: sender_of[i],
            room_members: members[k].len() as u64,
            sender_slots: a.senders.div_ceil(a.rooms),
        };
        let task = tokio::spawn(conn_task(ws.expect("logged in"), ctx, rx));
        handles.push(Handle { tx, task });
    }
    // Let join notices and the like settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bound_us = (a.p99_ms * 1000.0) as u64;
    let mut results: Vec<RunResult> = Vec::new();
    let mut best: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let steps = if a.search {
        a.max_steps.max(1)
    } else {
        a.repeat.max(1)
    };
    for phase in 0..steps {
        let r = run_phase(
            &a,
            &handles,
            phase,
            rate,
            &watched,
            redis.as_ref(),
            bound_us,
        )
        .await?;
        eprintln!("{}", one_line(&r));
        let passed = r.pass;
        results.push(r);
        if !a.search {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if passed {
            best = Some(best.map_or(rate, |b: f64| b.max(rate)));
        } else {
            fail = Some(fail.map_or(rate, |f: f64| f.min(rate)));
        }
        rate = match (best, fail) {
            (Some(b), None) => b * a.factor,
            (None, Some(f)) => f / a.factor.powi(2),
            (Some(b), Some(f)) => {
                if (f - b) / b < a.resolution {
                    break;
                }
                (b + f) / 2.0
            }
            (None, None) => unreachable!(),
        };
        if rate < 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for h in &handles {
        let _ = h.tx.send(Cmd::Close);
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h.task).await;
    }

    let md = markdown(
        &a,
        nodes,
        avg_members,
        &results,
        best,
        a.search,
        &watched,
        redis.as_ref(),
    );
    println!("{md}");
    a.out.report(&md)?;
    let pick = if a.search {
        results.iter().rfind(|r| r.pass && Some(r.rate) == best)
    } else {
        // With --repeat, the run that shared the machine least.
        results
            .iter()
            .min_by(|x, y| x.other_cpu.total_cmp(&y.other_cpu))
    };
    if let Some(r) = pick {
        let j = serde_json::json!({
            "bench": "fanout",
            "label": a.label,
            "search": a.search,
            "p99_bound_ms": a.p99_ms,
            "connections": a.connections,
            "rooms": a.rooms,
            "senders": a.senders,
            "nodes": nodes,
            "rate": r.rate,
            "deliveries_per_s": r.deliveries_per_s,
            "delivered": r.delivered,
            "lost": r.lost,
            "duplicated": r.duplicated,
            "out_of_order": r.out_of_order + r.sender_reorder,
            "p50_us": r.lat.p50,
            "p99_us": r.lat.p99,
            "p999_us": r.lat.p999,
            "max_us": r.lat.max,
            "node_cpu_s": r.node_cpu(),
            "redis_cpu_s": r.redis_cpu,
            "gen_cpu_s": r.gen_cpu,
            "other_cpu_s": r.other_cpu,
            "window_s": r.window,
            "node_us_per_delivery": r.us_per_delivery(false),
            "cluster_us_per_delivery": r.us_per_delivery(true),
            "pass": r.pass,
            "why": r.why,
            "runs": results.len(),
        });
        a.out.summary(&j)?;
    } else if a.search {
        let j = serde_json::json!({"bench": "fanout", "label": a.label, "search": true, "pass": false,
            "why": "no rate passed", "p99_bound_ms": a.p99_ms});
        a.out.summary(&j)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    a: &FanoutArgs,
    handles: &[Handle],
    phase: u32,
    rate: f64,
    watched: &[Watched],
    redis: Option<&Watched>,
    bound_us: u64,
) -> Result<RunResult> {
    let mut all: Vec<Watched> = watched.to_vec();
    if let Some(r) = redis {
        all.push(r.clone());
    }
    if a.quiet_wait > 0.0 {
        let other =
            procfs::wait_quiet(&all, Duration::from_secs_f64(a.quiet_wait), a.quiet_cores).await;
        if other >= a.quiet_cores {
            eprintln!("fanout: machine not quiet ({other:.2} other cores busy); running anyway");
        }
    }
    DELIVERED.store(0, Ordering::SeqCst);
    EXPECTED.store(0, Ordering::SeqCst);
    SENDERS_DONE.store(0, Ordering::SeqCst);
    let interval = Duration::from_secs_f64(a.senders as f64 / rate);
    let duration = Duration::from_secs_f64(a.duration);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let warm = start + Duration::from_secs_f64(a.warmup.min(a.duration / 2.0));
    let cfg = Arc::new(PhaseCfg {
        phase,
        start,
        end,
        interval,
        senders: a.senders,
        warmup_until_ns: (warm - base()).as_nanos() as u64,
        max_n: (a.duration / interval.as_secs_f64()).ceil() as u64 + 2,
    });
    reset_shards();
    let cpu0 = procfs::snap(&all);
    for h in handles {
        let _ = h.tx.send(Cmd::Start(cfg.clone()));
    }
    tokio::time::sleep_until(end.into()).await;
    // Drain: until every sender has finished and everything expected arrived,
    // or the drain time is over.
    let deadline = end + Duration::from_secs_f64(a.drain);
    let done_at = loop {
        let senders_done = SENDERS_DONE.load(Ordering::SeqCst) as usize >= a.senders;
        let delivered = DELIVERED.load(Ordering::SeqCst);
        let expected = EXPECTED.load(Ordering::SeqCst);
        let now = Instant::now();
        if (senders_done && delivered >= expected) || now >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu1 = procfs::snap(&all);

    // Collect.
    let mut rxs = Vec::with_capacity(handles.len());
    for h in handles {
        let (tx, rx) = oneshot::channel();
        if h.tx.send(Cmd::Report(tx)).is_ok() {
            rxs.push(rx);
        }
    }
    let col = collect_shards();
    let mut last_ns = 0u64;
    let mut r = RunResult {
        rate,
        sent: 0,
        expected: 0,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        sender_reorder: 0,
        misrouted: 0,
        stale: 0,
        foreign: 0,
        error_notices: BTreeMap::new(),
        conn_errors: 0,
        first_error: None,
        deliveries_per_s: 0.0,
        lat: Lat::default(),
        lag: Lat::default(),
        accept: Lat::default(),
        after_accept: Lat::default(),
        proc_cpu: Vec::new(),
        redis_cpu: None,
        gen_cpu: cpu1.generator - cpu0.generator,
        other_cpu: cpu1.other_since(&cpu0),
        window: (done_at - start).as_secs_f64(),
        pass: false,
        why: String::new(),
    };
    let missing = handles.len() - rxs.len();
    r.conn_errors += missing as u64;
    for rx in rxs {
        let Ok(c) = rx.await else {
            r.conn_errors += 1;
            continue;
        };
        r.sent += c.sent;
        r.delivered += c.delivered;
        r.duplicated += c.duplicated;
        r.out_of_order += c.out_of_order;
        r.sender_reorder += c.sender_reorder;
        r.misrouted += c.misrouted;
        r.stale += c.stale;
        r.foreign += c.foreign;
        for (k, v) in c.notices {
            if !matches!(k.as_str(), "joined" | "left" | "info") {
                *r.error_notices.entry(k).or_insert(0) += v;
            }
        }
        if let Some(e) = c.error {
            r.conn_errors += 1;
            r.first_error.get_or_insert(e);
        }
        last_ns = last_ns.max(c.last_ns);
    }
    // Deliveries per second over the time from the first send to the last
    // counted delivery (not to the end of a drain wait for lost messages).
    let start_ns = (start - base()).as_nanos() as u64;
    if last_ns > start_ns {
        r.window = (last_ns - start_ns) as f64 / 1e9;
    }
    r.expected = EXPECTED.load(Ordering::SeqCst);
    r.lost = r.expected as i64 - r.delivered as i64;
    r.lat = Lat::of(&col.lat);
    r.lag = Lat::of(&col.lag);
    r.accept = Lat::of(&col.accept);
    r.after_accept = Lat::of(&col.after_accept);
    r.deliveries_per_s = r.delivered as f64 / r.window;
    for (i, w) in watched.iter().enumerate() {
        r.proc_cpu
            .push((w.label.clone(), cpu1.per_proc[i] - cpu0.per_proc[i]));
    }
    if redis.is_some() {
        let n = watched.len();
        r.redis_cpu = Some(cpu1.per_proc[n] - cpu0.per_proc[n]);
    }
    let planned = (a.duration * rate).round();
    let mut why = Vec::new();
    if r.lost != 0 {
        why.push(format!("lost {}", r.lost));
    }
    if r.duplicated + r.out_of_order + r.sender_reorder + r.misrouted + r.stale > 0 {
        why.push("dup/order/misrouted".to_string());
    }
    if r.conn_errors > 0 {
        why.push(format!("{} connection errors", r.conn_errors));
    }
    if !r.error_notices.is_empty() {
        why.push(format!("error notices {:?}", r.error_notices));
    }
    if r.lat.p99 > bound_us {
        why.push(format!("p99 {} > {}", fmt_us(r.lat.p99), fmt_us(bound_us)));
    }
    if (r.sent as f64) < planned * 0.98 {
        why.push(format!(
            "generator sent only {} of {} planned",
            r.sent, planned
        ));
    }
    r.pass = why.is_empty();
    r.why = if r.pass {
        "pass".into()
    } else {
        why.join("; ")
    };
    Ok(r)
}

fn one_line(r: &RunResult) -> String {
    format!(
        "rate {:.0} msg/s: sent {} expected {} delivered {} lost {} dup {} ooo {} -> {} deliveries/s; {} latency samples: p50 {} p99 {} p99.9 {} max {}; send lag p99 {}; send->ts p50/p99 {}/{} ts->arrival p50/p99 {}/{} (ms-resolution, +1 ms); node CPU {:.2}s{}; gen CPU {:.2}s; other CPU {:.2}s; {}",
        r.rate,
        r.sent,
        r.expected,
        r.delivered,
        r.lost,
        r.duplicated,
        r.out_of_order,
        fmt_n(r.deliveries_per_s),
        r.lat.count,
        fmt_us(r.lat.p50),
        fmt_us(r.lat.p99),
        fmt_us(r.lat.p999),
        fmt_us(r.lat.max),
        fmt_us(r.lag.p99),
        fmt_us(r.accept.p50),
        fmt_us(r.accept.p99),
        fmt_us(r.after_accept.p50),
        fmt_us(r.after_accept.p99),
        r.node_cpu(),
        r.redis_cpu.map(|c| format!(" redis {c:.2}s")).unwrap_or_default(),
        r.gen_cpu,
        r.other_cpu,
        r.why
    )
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    a: &FanoutArgs,
    nodes: usize,
    avg_members: f64,
    results: &[RunResult],
    best: Option<f64>,
    search: bool,
    watched: &[Watched],
    redis: Option<&Watched>,
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### {}: {} connections on {} node(s), {} rooms (~{:.0} members each), {} senders, {} s per run{}\n",
        a.label,
        a.connections,
        nodes,
        a.rooms,
        avg_members,
        a.senders,
        a.duration,
        if search {
            format!(", search for p99 <= {} ms and zero loss", a.p99_ms)
        } else {
            String::new()
        }
    );
    let cpu_cols: Vec<String> = watched
        .iter()
        .map(|w| format!("{} CPU s", w.label))
        .collect();
    let _ = writeln!(
        s,
        "| msg/s | sent | expected | delivered | lost | dup | out-of-order | deliveries/s | p50 | p90 | p99 | p99.9 | max | send lag p99 | send→ts p50/p99 | ts→arrival p50/p99 | {}{}gen CPU s | other CPU s | node µs/delivery | +redis µs/delivery | result |",
        cpu_cols.iter().map(|c| format!("{c} | ")).collect::<String>(),
        if redis.is_some() { "redis CPU s | " } else { "" }
    );
    let ncols = 21 + cpu_cols.len() + usize::from(redis.is_some());
    let _ = writeln!(s, "|{}", "---|".repeat(ncols));
    // (send→ts and ts→arrival use the server's `ts`, a wall clock in ms:
    // coarse, +1 ms, for telling the inbound half from the outbound half.)
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {}{}{:.2} | {:.2} | {:.2} | {} | {} |",
            fmt_n(r.rate),
            fmt_n(r.sent as f64),
            fmt_n(r.expected as f64),
            fmt_n(r.delivered as f64),
            r.lost,
            r.duplicated,
            r.out_of_order + r.sender_reorder,
            fmt_n(r.deliveries_per_s),
            fmt_us(r.lat.p50),
            fmt_us(r.lat.p90),
            fmt_us(r.lat.p99),
            fmt_us(r.lat.p999),
            fmt_us(r.lat.max),
            fmt_us(r.lag.p99),
            fmt_us(r.accept.p50),
            fmt_us(r.accept.p99),
            fmt_us(r.after_accept.p50),
            fmt_us(r.after_accept.p99),
            r.proc_cpu.iter().map(|(_, c)| format!("{c:.2} | ")).collect::<String>(),
            r.redis_cpu.map(|c| format!("{c:.2} | ")).unwrap_or_default(),
            r.gen_cpu,
            r.other_cpu,
            r.us_per_delivery(false),
            if r.redis_cpu.is_some() { format!("{:.2}", r.us_per_delivery(true)) } else { "-".into() },
            r.why
        );
    }
    if search {
        let _ = writeln!(s);
        match best {
            Some(b) => {
                let d = results
                    .iter()
                    .filter(|r| r.pass && r.rate == b)
                    .map(|r| r.deliveries_per_s)
                    .next()
                    .unwrap_or(b * avg_members);
                let _ = writeln!(
                    s,
                    "**Highest passing rate: {} msg/s = {} deliveries/s** (p99 <= {} ms, zero loss).",
                    fmt_n(b),
                    fmt_n(d),
                    a.p99_ms
                );
            }
            None => {
                let _ = writeln!(s, "**No rate passed.**");
            }
        }
    }
    if let Some(e) = results.iter().find_map(|r| r.first_error.clone()) {
        let _ = writeln!(s, "\nFirst connection error: {e}");
    }
    s
}

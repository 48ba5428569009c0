//! swiftchat-bench: a load generator for SwiftChat clusters over real
//! WebSockets. See bench/README.md.

mod conn;
mod connect;
mod fanout;
mod floor;
mod idle;
mod mock;
mod procfs;
mod proto;
mod soak;
mod stats;
mod summary;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "swiftchat-bench",
    about = "Load generator for SwiftChat (loopback only)"
)]
struct Cli {
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Let the kernel ACK every read as it does by default for receive-only
    /// sockets, instead of re-arming delayed ACKs after each read (see
    /// conn::Stream: the default saves the generator ~40% CPU on loopback).
    #[arg(long, global = true)]
    quickack: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Fan-out throughput, loss and latency across rooms and nodes.
    Fanout(fanout::FanoutArgs),
    /// Server RSS per idle logged-in connection.
    Idle(idle::IdleArgs),
    /// (internal) one process's share of `idle`.
    #[command(hide = true)]
    IdleWorker(idle::IdleWorkerArgs),
    /// Logins per second and handshake latency.
    Connect(connect::ConnectArgs),
    /// The targets against the JSON lines written with --summary.
    Summary(summary::SummaryArgs),
    /// Clients chatting with churn for a while (bench/soak.sh samples the
    /// node and Redis).
    Soak(soak::SoakArgs),
    /// A minimal stand-in server to check the generator itself (not SwiftChat).
    Mock(mock::MockArgs),
    /// CPU of one bare socket write per delivery on this machine (no server).
    WriteFloor(floor::FloorArgs),
    /// (internal) the reading side of `write-floor`.
    #[command(hide = true)]
    WriteFloorReader(floor::FloorReaderArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    conn::DELAYED_ACK.store(!cli.quickack, std::sync::atomic::Ordering::Relaxed);
    // The writer is one plain thread; a runtime's idle workers would only
    // blur its CPU figure.
    if let Cmd::WriteFloor(a) = cli.cmd {
        return floor::run(a);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Fanout(a) => fanout::run(a).await,
            Cmd::Idle(a) => idle::run(a).await,
            Cmd::IdleWorker(a) => idle::worker(a).await,
            Cmd::Connect(a) => connect::run(a).await,
            Cmd::Mock(a) => mock::run(a).await,
            Cmd::Soak(a) => soak::run(a).await,
            Cmd::Summary(a) => summary::run(a),
            Cmd::WriteFloorReader(a) => floor::reader(a).await,
            Cmd::WriteFloor(_) => unreachable!("handled before the runtime starts"),
        }
    })
}

//! `write-floor`: what one socket write per delivery costs on this machine,
//! with no server around it. It answers "how low can CPU per delivery go
//! while every delivery is its own write?", the floor under issue 13's
//! fan-out target.
//!
//! One process (the writer) accepts C loopback TCP connections from a child
//! process (the reader, a tokio runtime reading 4 KB at a time with delayed
//! ACKs as the generator does) and writes B-byte buffers round-robin over
//! them at R writes/s from a single thread with non-blocking `write`s, paced
//! every millisecond. No WebSocket, no tasks, no queues, no allocation: the
//! least a server can do. Reported: writer CPU per write (utime + stime of
//! the process, which on loopback also carries the receiver's TCP receive
//! work done in softirq on the sender's CPU) and the reader's CPU per write.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;

use crate::procfs;

#[derive(clap::Args, Debug, Clone)]
pub struct FloorArgs {
    /// Connections (the fan-out benchmark holds 1000 over two nodes).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Writes per second, spread round-robin over the connections (each
    /// node writes ~57,000/s at 114k deliveries/s over two nodes).
    #[arg(long, default_value_t = 57_000)]
    pub rate: u64,
    /// Bytes per write (a MESSAGE frame of the fan-out benchmark is ~230).
    #[arg(long, default_value_t = 230)]
    pub bytes: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    #[command(flatten)]
    pub out: crate::stats::Output,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FloorReaderArgs {
    #[arg(long)]
    pub addr: String,
    #[arg(long)]
    pub connections: usize,
}

pub fn run(a: FloorArgs) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut reader = std::process::Command::new(std::env::current_exe()?)
        .args(["write-floor-reader", "--addr", &addr.to_string()])
        .args(["--connections", &a.connections.to_string()])
        .spawn()
        .context("start the reader process")?;
    let mut socks: Vec<TcpStream> = Vec::with_capacity(a.connections as usize);
    for _ in 0..a.connections {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    let buf = vec![b'x'; a.bytes];
    let me = std::process::id();
    let (cpu0, rcpu0) = (procfs::cpu_seconds(me)?, procfs::cpu_seconds(reader.id())?);
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let (mut written, mut would_block, mut next) = (0u64, 0u64, 0usize);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = (now - start).as_nanos() as u64 * a.rate / 1_000_000_000;
        while written < due {
            match socks[next].write(&buf) {
                Ok(n) if n == buf.len() => {}
                Ok(_) => bail!("short write: the reader fell behind"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => return Err(e.into()),
            }
            written += 1;
            next = (next + 1) % socks.len();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu, rcpu) = (
        procfs::cpu_seconds(me)? - cpu0,
        procfs::cpu_seconds(reader.id())? - rcpu0,
    );
    let _ = reader.kill();
    let _ = reader.wait();
    let (writer_us, reader_us) = (cpu * 1e6 / written as f64, rcpu * 1e6 / written as f64);
    let line = format!(
        "write-floor: {} connections, {} writes of {} B in {:.1} s ({:.0}/s, {} would block): \
         writer CPU {:.2} s = {:.2} µs/write; reader CPU {:.2} s = {:.2} µs/write",
        a.connections,
        written,
        a.bytes,
        secs,
        written as f64 / secs,
        would_block,
        cpu,
        writer_us,
        rcpu,
        reader_us,
    );
    println!("{line}");
    a.out.report(&format!("{line}\n"))?;
    let j = serde_json::json!({
        "bench": "write-floor", "connections": a.connections, "writes_per_s": written as f64 / secs,
        "bytes": a.bytes, "writer_us_per_write": writer_us, "reader_us_per_write": reader_us,
    });
    a.out.summary(&j)?;
    Ok(())
}

pub async fn reader(a: FloorReaderArgs) -> Result<()> {
    let mut tasks = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let s = tokio::net::TcpStream::connect(&a.addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut s = crate::conn::Stream::new(s);
            let mut buf = vec![0u8; 4096];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

//! Opening WebSocket connections (optionally from a chosen 127.0.0.x source
//! address) and logging in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::proto;

pub type Ws = WebSocketStream<Stream>;

/// A TCP stream that can put the socket back into delayed-ACK ("pingpong")
/// mode after each read (`TCP_QUICKACK` 0).
///
/// Why: a receive-only socket is never in pingpong mode, so Linux sends an
/// ACK on every read that drains the socket; on loopback that ACK is built,
/// sent and processed for the server's socket inside the reader's system
/// call. In the fan-out benchmark (one small frame per read) that was 40% of
/// the generator's CPU (perf, `tcp_recvmsg_locked -> __tcp_transmit_skb`).
/// With delayed ACKs the kernel still ACKs at least every second full-sized
/// segment and on its delayed-ACK timer, so the server's send window never
/// starves. One `setsockopt` per read is far cheaper than one ACK.
pub struct Stream {
    inner: TcpStream,
    delayed_ack: bool,
}

impl Stream {
    /// Wraps a connected socket with the generator's ACK behaviour.
    pub fn new(inner: TcpStream) -> Self {
        Stream {
            inner,
            delayed_ack: DELAYED_ACK.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn set_quickack_off(&self) {
        let zero: libc::c_int = 0;
        // SAFETY: plain setsockopt on a socket we own, with a valid int.
        unsafe {
            libc::setsockopt(
                self.inner.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                &zero as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.delayed_ack
            && matches!(r, std::task::Poll::Ready(Ok(())))
            && buf.filled().len() > before
        {
            self.set_quickack_off();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A node to connect to: the ws:// URL and the socket address it names.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Accepts `ws://HOST:PORT[/path]`, `HOST:PORT` (path `/ws`). Only
    /// loopback addresses are accepted: load traffic stays on this machine.
    pub fn parse(s: &str) -> Result<Target> {
        let (url, hostport) = if let Some(rest) = s.strip_prefix("ws://") {
            let hostport = rest.split('/').next().unwrap_or(rest);
            (s.to_owned(), hostport.to_owned())
        } else {
            (format!("ws://{s}/ws"), s.to_owned())
        };
        let hostport = hostport.replace("localhost", "127.0.0.1");
        let addr: SocketAddr = hostport
            .parse()
            .with_context(|| format!("node address {hostport:?} must be IP:PORT"))?;
        if !addr.ip().is_loopback() {
            bail!("refusing non-loopback target {addr}: load traffic stays on 127.0.0.0/8 or ::1");
        }
        Ok(Target { url, addr })
    }

    /// Every `--urls` entry, in order.
    pub fn parse_all(urls: &[String]) -> Result<Vec<Target>> {
        urls.iter().map(|u| Target::parse(u)).collect()
    }
}

/// Source addresses 127.0.0.2, 127.0.0.3, ... so that many connections to one
/// node do not exhaust one address's ephemeral ports. `count` 0 = let the
/// kernel choose (127.0.0.1).
#[derive(Clone, Copy, Debug)]
pub struct SourceIps {
    pub count: u32,
}

impl SourceIps {
    pub fn for_index(&self, i: usize) -> Option<Ipv4Addr> {
        if self.count == 0 {
            return None;
        }
        let k = 2 + (i as u32 % self.count);
        Some(Ipv4Addr::new(127, 0, (k >> 8) as u8, (k & 0xff) as u8))
    }
}

/// Client-side tungstenite buffers. Small read buffers keep thousands of idle
/// generator connections cheap; write_buffer_size 0 writes each frame at once
/// (the sender batches with feed + flush itself).
pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Whether new connections re-arm delayed ACKs after each read (see
/// [`Stream`]); set once at start from the command line.
pub static DELAYED_ACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// TCP connect (from `src` if given) and WebSocket upgrade.
pub async fn open(target: &Target, src: Option<Ipv4Addr>, read_buffer: usize) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        // Pick the port at connect() time (per destination) instead of at
        // bind() time (per source address only): IP_BIND_ADDRESS_NO_PORT.
        let one: libc::c_int = 1;
        // SAFETY: plain setsockopt on a socket we own, with a valid int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    stream.set_nodelay(true)?;
    let stream = Stream::new(stream);
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(
        target.url.as_str(),
        stream,
        Some(ws_config(read_buffer)),
    )
    .await
    .with_context(|| format!("upgrade {}", target.url))?;
    Ok(ws)
}

/// Waits for the next CACHE_UPDATE, skipping event notices (joined/left and
/// the like). An error NOTICE, a close or the deadline is an error. Returns
/// the room in `d.me.room`.
pub async fn wait_cache_update(ws: &mut Ws, deadline: Instant) -> Result<String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .map_err(|_| anyhow!("no CACHE_UPDATE in time"))?;
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(anyhow!("socket error: {e}")),
            None => bail!("connection closed"),
        };
        match msg {
            Message::Text(t) => match proto::op(t.as_bytes()) {
                Some(proto::OP_CACHE_UPDATE) => {
                    return proto::cache_update_room(t.as_str())
                        .ok_or_else(|| anyhow!("CACHE_UPDATE without d.me.room: {}", t.as_str()));
                }
                Some(proto::OP_NOTICE) => {
                    if let Some((code, true, message)) = proto::notice(t.as_str()) {
                        bail!("NOTICE {code}: {message}");
                    }
                }
                _ => {}
            },
            Message::Close(c) => bail!("closed by server: {c:?}"),
            _ => {}
        }
    }
}

/// IDENTIFY with `name`, then, if `room` is given, `\join room`. Waits for the
/// CACHE_UPDATE of each step and checks that `me.room` is the room asked for.
pub async fn login(ws: &mut Ws, name: &str, room: Option<&str>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    ws.send(Message::text(proto::identify(name, None))).await?;
    let first = wait_cache_update(ws, deadline)
        .await
        .with_context(|| format!("IDENTIFY {name}"))?;
    if let Some(room) = room {
        if first != room {
            ws.send(Message::text(proto::message_create(&format!(
                "\\join {room}"
            ))))
            .await?;
            let now_in = wait_cache_update(ws, deadline)
                .await
                .with_context(|| format!("{name}: \\join {room}"))?;
            if now_in != room {
                bail!("{name}: after \\join {room} CACHE_UPDATE says room {now_in}");
            }
        }
    }
    Ok(())
}

/// A short id for this run, so that names do not collide with a previous run
/// whose connections the server may still be releasing.
pub fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut x = (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 40);
    const A: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    for _ in 0..5 {
        s.push(A[(x % 36) as usize] as char);
        x /= 36;
    }
    s
}

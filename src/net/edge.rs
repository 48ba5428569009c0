//! The TCP and HTTP/1 edge in front of the router: the accept loop with its
//! cap on open sockets, hyper's header-read timeout, the keep-alive idle
//! timeout, the client's address (X-Forwarded-For only from
//! `server.trusted_proxies`) and the per-address WebSocket limit.
//!
//! axum's own `serve` has none of these bounds: a client that sends half a
//! request head, or opens sockets and never upgrades, would hold a file
//! descriptor forever.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::LimitsConfig;
use crate::metrics as m;

/// The TCP peer of a request, put in its extensions by the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// An IPv4 or IPv6 network, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) count as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Parses `server.trusted_proxies`.
pub(crate) fn parse_cidrs(list: &[String]) -> Result<Vec<Cidr>, String> {
    list.iter().map(|c| c.parse()).collect()
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then the right-most X-Forwarded-For address that is not itself a trusted
/// proxy (addresses further left were written by the client and prove
/// nothing).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { break };
        for hop in value.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Garbage in the chain: trust nothing to its left.
                return client;
            };
            client = canonical(ip);
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

/// WebSockets open per client address, bounded by `limits.connections_per_ip`.
#[derive(Debug, Default)]
pub(crate) struct PerIpLimiter {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpLimiter {
    /// `max` 0: no limit (and no bookkeeping).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::default(),
        })
    }

    /// A slot for one more WebSocket from `ip`, or `None` at the limit. The
    /// map holds only addresses with open sockets, so it is bounded by them.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
            return Some(IpSlot { limiter: None, ip });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limiter: Some(self.clone()),
            ip,
        })
    }
}

/// One WebSocket counted against its address; released on drop.
pub(crate) struct IpSlot {
    limiter: Option<Arc<PerIpLimiter>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(limiter) = &self.limiter else { return };
        let mut open = limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts sockets and serves HTTP/1 on them until `stop`; then asks every
/// connection to finish its request and waits up to `grace` for them.
/// Upgraded WebSockets are not waited for here (the node's tracker has them).
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: LimitsConfig,
    stop: CancellationToken,
    grace: Duration,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let connections = TaskTracker::new();
    let header_timeout = Duration::from_secs(limits.header_read_timeout_secs);
    let idle_timeout = Duration::from_secs(limits.keep_alive_idle_secs);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: wait instead of
                    // spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = OpenSocket::new(&open);
        if limits.max_sockets != 0 && slot.count > limits.max_sockets {
            metrics::counter!(m::SOCKETS_REJECTED).increment(1);
            tracing::debug!(%peer, "socket cap reached: closing a new socket");
            drop(tcp);
            continue;
        }
        if let Err(error) = tcp.set_nodelay(true) {
            // Chat frames are small and latency-bound: no Nagle delay.
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(serve_socket(
            tcp,
            slot,
            peer,
            app,
            header_timeout,
            idle_timeout,
            stop,
        ));
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(grace, connections.wait()).await;
}

/// Counts a socket from accept until it is dropped: the slot lives in the
/// socket's IO, which an upgrade hands on to the WebSocket.
struct OpenSocket {
    open: Arc<AtomicUsize>,
    count: usize,
}

impl OpenSocket {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        let count = open.fetch_add(1, Ordering::AcqRel) + 1;
        Self {
            open: open.clone(),
            count,
        }
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_socket(
    tcp: TcpStream,
    slot: OpenSocket,
    peer: SocketAddr,
    app: axum::Router,
    header_timeout: Duration,
    idle_timeout: Duration,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
        _slot: slot,
    });
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        let mut app = app.clone();
        async move { app.call(request.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    let mut idle_check = tokio::time::interval(idle_timeout.min(Duration::from_secs(1)));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "HTTP connection ended");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            // An idle keep-alive socket is let go. hyper's header timer
            // also runs between requests, so this matters when it is the
            // shorter of the two; `graceful_shutdown` lets a request in
            // flight finish.
            _ = idle_check.tick(), if !stopping => {
                if activity.idle_for() >= idle_timeout {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Time of the last read or write on a socket, in milliseconds since the
/// socket was accepted.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// A TCP stream that records its activity for the keep-alive idle timeout.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    _slot: OpenSocket,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_ready() {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if poll.is_ready() {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if poll.is_ready() {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "mapped IPv4");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let odd: Cidr = "192.168.0.0/23".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.200")) && !odd.contains(ip("192.168.2.1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = parse_cidrs(&["10.0.0.0/8".into()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.7".parse().unwrap(),
        );
        // From a trusted proxy: the right-most untrusted hop.
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &trusted), ip("1.2.3.4"));
        // From anyone else: the header is ignored.
        assert_eq!(client_ip(ip("5.5.5.5"), &headers, &trusted), ip("5.5.5.5"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last good hop.
        headers.insert(
            "x-forwarded-for",
            "1.2.3.4, junk, 10.0.0.9".parse().unwrap(),
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn per_ip_limit_releases_on_drop() {
        let limiter = PerIpLimiter::new(2);
        let a = limiter.acquire(ip("1.1.1.1")).unwrap();
        let _b = limiter.acquire(ip("1.1.1.1")).unwrap();
        assert!(limiter.acquire(ip("1.1.1.1")).is_none());
        assert!(limiter.acquire(ip("2.2.2.2")).is_some());
        drop(a);
        assert!(limiter.acquire(ip("1.1.1.1")).is_some());
        assert!(limiter.open.lock().unwrap().len() <= 2, "no stale entries");
    }
}

//! The HTTP edge (OPERATIONS.md limits): half-sent request heads and idle
//! keep-alive sockets are closed after their timeouts, the cap on open
//! sockets holds (sockets that never upgrade included), upgrades beyond
//! `limits.connections_per_ip` get 429, and X-Forwarded-For counts only
//! from `server.trusted_proxies`.
//!
//! The edge does not depend on the backplane, so these run on the memory
//! backend.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http::StatusCode};

/// Reads until the server closes the socket (EOF or reset); returns how
/// long that took, or `None` if it was still open after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    result.ok().map(|()| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_heads_are_closed_after_the_header_timeout() {
    let node = TestNode::start(Backend::Memory, |c| {
        c.limits.header_read_timeout_secs = 1;
        c.limits.keep_alive_idle_secs = 60;
    })
    .await;
    // Slowloris: a request head that never ends, one header at a time.
    let mut slow = TcpStream::connect(node.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(3))
        .await
        .expect("a trickled request head is closed");
    assert!(took < Duration::from_secs(3));
    // A socket that sends nothing at all.
    let mut silent = TcpStream::connect(node.addr()).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(4))
        .await
        .expect("a silent socket is closed");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    // A complete request on a fresh socket is still answered.
    assert_eq!(http::get(node.addr(), "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_sockets_are_closed() {
    let node = TestNode::start(Backend::Memory, |c| {
        c.limits.header_read_timeout_secs = 30;
        c.limits.keep_alive_idle_secs = 1;
    })
    .await;
    let mut tcp = TcpStream::connect(node.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive socket is closed well before the header timeout");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_cap_holds_for_sockets_that_never_upgrade() {
    let node = TestNode::start(Backend::Memory, |c| {
        c.limits.max_sockets = 4;
        c.limits.header_read_timeout_secs = 30;
        c.limits.keep_alive_idle_secs = 30;
    })
    .await;
    // Two WebSockets and two sockets that never send anything.
    let mut a = node.login(&unique("cap")).await;
    let _b = node.login(&unique("cap")).await;
    let _idle1 = TcpStream::connect(node.addr()).await.unwrap();
    let _idle2 = TcpStream::connect(node.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fifth is closed at once, whatever it sends.
    let mut fifth = TcpStream::connect(node.addr()).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let took = closed_within(&mut fifth, Duration::from_secs(2))
        .await
        .expect("a socket beyond the cap is closed");
    assert!(took < Duration::from_secs(1));
    assert!(Client::try_connect(node.addr()).await.is_err());
    // The ones inside the cap are served; freeing one lets a new one in.
    a.roundtrip("inside the cap").await;
    drop(_idle1);
    let ok = poll_until(Duration::from_secs(3), || async {
        let mut tcp = TcpStream::connect(node.addr()).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.ok()?;
        text.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(ok.is_some(), "a freed slot is usable again");
}

/// Upgrades to `node` with an optional X-Forwarded-For header.
async fn upgrade(
    node: &TestNode,
    forwarded_for: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, u16> {
    let mut request = node.ws_url().into_client_request().unwrap();
    if let Some(xff) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected upgrade error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_beyond_connections_per_ip_get_429() {
    let node = TestNode::start(Backend::Memory, |c| c.limits.connections_per_ip = 2).await;
    let first = upgrade(&node, None).await.expect("first");
    let _second = upgrade(&node, None).await.expect("second");
    assert_eq!(
        upgrade(&node, None).await.err(),
        Some(StatusCode::TOO_MANY_REQUESTS.as_u16())
    );
    // Plain HTTP is not counted.
    assert_eq!(http::get(node.addr(), "/healthz").await.status, 200);
    drop(first);
    let again = poll_until(Duration::from_secs(3), || async {
        upgrade(&node, None).await.ok()
    })
    .await;
    assert!(again.is_some(), "a closed WebSocket frees its slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // Loopback is the trusted proxy: each forwarded address has its own
    // limit.
    let node = TestNode::start(Backend::Memory, |c| {
        c.limits.connections_per_ip = 1;
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let _a = upgrade(&node, Some("203.0.113.1")).await.expect("client 1");
    let _b = upgrade(&node, Some("203.0.113.2")).await.expect("client 2");
    assert_eq!(upgrade(&node, Some("203.0.113.1")).await.err(), Some(429));
    // A spoofed left-most entry does not help: the proxy's right-most
    // entry is the client.
    assert_eq!(
        upgrade(&node, Some("198.51.100.7, 203.0.113.1"))
            .await
            .err(),
        Some(429)
    );

    // Loopback is not trusted: the header is ignored, every upgrade is
    // 127.0.0.1's.
    let node = TestNode::start(Backend::Memory, |c| {
        c.limits.connections_per_ip = 1;
        c.server.trusted_proxies = vec!["10.0.0.0/8".into()];
    })
    .await;
    let _a = upgrade(&node, Some("203.0.113.1")).await.expect("client 1");
    assert_eq!(upgrade(&node, Some("203.0.113.2")).await.err(), Some(429));
}

#[tokio::test]
async fn bad_trusted_proxies_stop_the_node() {
    let mut config = base_config();
    config.server.trusted_proxies = vec!["10.0.0.0/40".into()];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.trusted_proxies"), "{error}");
}

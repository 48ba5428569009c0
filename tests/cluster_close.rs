//! A node's close releases all of its presence even when that takes several
//! reaping batches on a slow Redis (issue 9, bug 5c: the node gave the reap
//! less time than the reap's own deadline, so reaping a node with many users
//! was cut off silently and their names stayed taken until the ttl).
//!
//! Redis is reached through a proxy that delays every request by a fixed
//! latency once switched on, so the reap's duration is set by the number of
//! its batches, not by the machine's speed.

mod cluster_support;
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::*;
use common::{bounded, RedisServer, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards TCP to `upstream`, delaying each chunk sent towards it by the
/// current latency.
async fn latency_proxy(upstream: SocketAddr, latency_ms: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let latency_ms = latency_ms.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let delay = latency_ms.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_every_name_even_when_the_reap_needs_many_batches() {
    bounded(async {
        let redis = RedisServer::start();
        let latency_ms = Arc::new(AtomicU64::new(0));
        let proxy = latency_proxy(
            format!("127.0.0.1:{}", redis.port()).parse().unwrap(),
            latency_ms.clone(),
        )
        .await;
        let mut node = TestNode::start_with_config({
            let mut c = common::base_config();
            node_config(&mut c);
            c.redis.url = format!("redis://{proxy}");
            c.server.node_id = "closing-node".into();
            c.redis.command_timeout_ms = 500;
            c.server.drain_secs = 0;
            c
        })
        .await;
        // 5,100 users of this node, as its sessions would have left them
        // had their own releases failed: several reaping batches of 500.
        const USERS: usize = 5100;
        let mut names = vec!["HSET".to_string(), "swiftchat:{global}:names".to_string()];
        let mut list = vec![
            "HSET".to_string(),
            "swiftchat:{global}:node:closing-node:users".to_string(),
        ];
        for i in 0..USERS {
            names.extend([format!("user{i}"), "closing-node".to_string()]);
            list.extend([format!("user{i}"), String::new()]);
        }
        for cmd in [names, list] {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            redis.cmd(&args);
        }
        // Each request now waits 120 ms (a call may take three: a pooled
        // connection checked with PING, EVALSHA, then EVAL for a script new to
        // Redis),
        // so each call stays under one command timeout and the eleven
        // batches take well over two.
        latency_ms.store(120, Ordering::Relaxed);
        let started = Instant::now();
        node.drain();
        node.wait_stopped(Duration::from_secs(30)).await.unwrap();
        report("close with a slow reap", started.elapsed());
        let left = redis
            .cmd(&["HLEN", "swiftchat:{global}:names"])
            .as_int()
            .unwrap();
        assert_eq!(left, 0, "names still held after the node's close");
    })
    .await
}

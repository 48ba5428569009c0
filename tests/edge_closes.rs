//! Every close the server starts reaches a client that keeps sending
//! (PROTOCOL.md "Transport": the lingering close): the notices queued before
//! it, then the close frame with its code, never a TCP reset (1006).
//! Also 1011 for a frame the server cannot send.
//!
//! The clients here are raw tokio-tungstenite sockets whose sending half
//! keeps writing while the receiving half reads, so the server always has
//! unread input when it closes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

backend_tests!(
    flood_gets_rate_limited_notices_then_4008,
    burst_of_150_gets_rate_limited_notices_then_4008,
    burst_of_fragments_gets_1009,
    burst_of_bad_payloads_gets_1008,
    oversized_fragmented_message_gets_1009_while_sending,
    bad_payloads_get_1008_while_sending,
    wrong_shutdown_keys_get_4003_while_sending,
    unsendable_frame_closes_1011,
);

/// Connects with a small receive buffer, so that what the server sends
/// while the client is not reading stays in the server's send queue (which
/// a reset throws away) instead of in the client's kernel.
async fn connect_small_window(
    node: &TestNode,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(node.addr()).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(node.ws_url(), tcp)
        .await
        .expect("handshake");
    ws
}

/// What a hammering client saw.
struct Seen {
    frames: Vec<Value>,
    /// The close frame's code; `None` when the stream ended without one
    /// (what a reset looks like: 1006).
    close: Option<u16>,
    ended: String,
    sent: usize,
}

/// Connects, sends `first` (e.g. IDENTIFY), then writes `next(i)` as fast
/// as the socket takes it until the server closes, while reading every
/// frame until the close frame or the end of the stream.
async fn hammer(
    node: &TestNode,
    first: Vec<Message>,
    next: impl Fn(usize) -> Message + Send + 'static,
) -> Seen {
    let ws = connect_small_window(node).await;
    let (mut sink, mut stream) = ws.split();
    for m in first {
        sink.send(m).await.expect("first frames");
    }
    fill(node).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_by_writer = sent.clone();
    let writer = tokio::spawn(async move {
        let mut i = 0;
        loop {
            if sink.send(next(i)).await.is_err() {
                break;
            }
            i += 1;
            sent_by_writer.store(i, Ordering::Relaxed);
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut frames = Vec::new();
    let mut close = None;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Some(Ok(Message::Close(f))) => {
                    close = f.map(|f| u16::from(f.code));
                    // Keep reading until the server ends the TCP stream, as
                    // a client does after the closing handshake.
                    while let Some(Ok(_)) = stream.next().await {}
                    return "close frame".to_string();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("read error: {e}"),
                None => return "stream ended".to_string(),
            }
        }
    })
    .await
    .expect("the server closed within 20 s");
    writer.abort();
    Seen {
        frames,
        close,
        ended,
        sent: sent.load(Ordering::Relaxed),
    }
}

/// Like the client: writes `first` and `count` payloads without
/// reading, pauses, writes once more, then reads what came back.
async fn burst(
    node: &TestNode,
    first: Vec<Message>,
    count: usize,
    next: impl Fn(usize) -> Message,
) -> Seen {
    let ws = connect_small_window(node).await;
    let (mut sink, mut stream) = ws.split();
    let mut sent = 0;
    for m in first {
        sink.send(m).await.expect("first frames");
    }
    fill(node).await;
    for m in (0..count).map(next) {
        if sink.send(m).await.is_err() {
            break;
        }
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = sink.send(Message::text("{}")).await;
    let mut frames = Vec::new();
    let mut close = None;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Some(Ok(Message::Close(f))) => {
                    close = f.map(|f| u16::from(f.code));
                    return "close frame".to_string();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("read error: {e}"),
                None => return "stream ended".to_string(),
            }
        }
    })
    .await
    .expect("the server closed within 20 s");
    Seen {
        frames,
        close,
        ended,
        sent,
    }
}

/// Fills the (not reading) client's receive window: another user sends
/// ten long messages to the default room, which the client has joined. What
/// the server sends next waits in its send queue, where a reset would
/// destroy it.
async fn fill(node: &TestNode) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut filler = node.login(&unique("filler")).await;
    for i in 0..10 {
        filler.roundtrip(&format!("{i}{}", "f".repeat(1900))).await;
    }
}

fn identify(name: &str) -> Message {
    Message::text(json!({"op": 5, "d": {"name": name}}).to_string())
}

fn notices<'a>(seen: &'a Seen, code: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    seen.frames
        .iter()
        .filter(move |f| f["op"] == 7 && f["d"]["code"] == code)
}

fn assert_closed_with(seen: &Seen, code: u16) {
    assert_eq!(
        seen.close,
        Some(code),
        "expected close {code}, got {:?} ({}) after {} frames sent; last frames: {:?}",
        seen.close,
        seen.ended,
        seen.sent,
        seen.frames.iter().rev().take(3).collect::<Vec<_>>()
    );
}

/// The case: a burst of 150 messages (and more) gets the
/// rate_limited notices and then 4008, not a reset.
async fn flood_gets_rate_limited_notices_then_4008(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let name = unique("flood");
    let seen = hammer(&node, vec![identify(&name)], |i| {
        Message::text(json!({"op": 1, "d": {"content": format!("spam {i}")}}).to_string())
    })
    .await;
    assert_closed_with(&seen, 4008);
    let limited = notices(&seen, "rate_limited").count();
    assert!(
        limited >= 1,
        "no rate_limited notice before 4008; frames: {:?}",
        seen.frames.len()
    );
    assert!(seen.sent >= 100, "the client sent only {}", seen.sent);
    node.assert_serving().await;
}

fn fragment(data: &[u8], first: bool, last: bool) -> Message {
    let opcode = if first {
        OpCode::Data(Data::Text)
    } else {
        OpCode::Data(Data::Continue)
    };
    Message::Frame(Frame::message(data.to_vec(), opcode, last))
}

/// A 40,000-byte message in 8 fragments of 5,000 gets 1009 although the
/// client goes on sending fragments (and then more messages).
async fn oversized_fragmented_message_gets_1009_while_sending(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let body = vec![b'a'; 5000];
    let seen = hammer(&node, vec![identify(&unique("frag"))], move |i| {
        match i % 8 {
            0 => fragment(&body, true, false),
            7 => fragment(&body, false, true),
            _ => fragment(&body, false, false),
        }
    })
    .await;
    assert_closed_with(&seen, 1009);
    assert!(seen.sent >= 3, "sent {}", seen.sent);
    node.assert_serving().await;
}

/// Bad payloads, sent without pause: the bad_payload notices, then 1008.
async fn bad_payloads_get_1008_while_sending(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let seen = hammer(&node, vec![identify(&unique("bad"))], |_| {
        Message::text("this is not JSON")
    })
    .await;
    assert_closed_with(&seen, 1008);
    assert!(notices(&seen, "bad_payload").count() >= 1);
    node.assert_serving().await;
}

/// Wrong shutdown keys, sent without pause: forbidden, then 4003.
async fn wrong_shutdown_keys_get_4003_while_sending(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.admin.shutdown_key = "the-right-key-0123456789".into()
    })
    .await;
    let seen = hammer(&node, vec![identify(&unique("key"))], |i| {
        Message::text(json!({"op": 3, "d": {"key": format!("wrong-key-{i:016}")}}).to_string())
    })
    .await;
    assert_closed_with(&seen, 4003);
    assert!(notices(&seen, "forbidden").count() >= 1);
    node.assert_serving().await;
}

/// A frame larger than the socket's write buffer cannot be sent: the
/// connection is closed with 1011 (not left logged in with a dead writer),
/// and the other clients go on.
async fn unsendable_frame_closes_1011(backend: Backend) {
    let node = TestNode::start(backend, |c| {
        c.websocket.write_buffer_bytes = 512;
        c.websocket.max_write_buffer_bytes = 1024;
    })
    .await;
    let mut witness = node.login(&unique("w")).await;
    let mut x = node.login(&unique("big")).await;
    x.send_message(&"x".repeat(1500)).await;
    x.expect_close(1011).await;
    // The witness got the same message it cannot be sent either: it is
    // closed too; a new client is served.
    let _ = witness.recv_event().await;
    node.assert_serving().await;
    let mut y = node.login_amid_traffic(&unique("after")).await;
    y.roundtrip("still served").await;
}

/// The reproduction: 150 messages written without reading, then
/// one more frame after a pause; the client must still read the
/// rate_limited notices and the 4008 close frame.
async fn burst_of_150_gets_rate_limited_notices_then_4008(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let seen = burst(&node, vec![identify(&unique("burst"))], 150, |i| {
        Message::text(json!({"op": 1, "d": {"content": format!("spam {i}")}}).to_string())
    })
    .await;
    assert_closed_with(&seen, 4008);
    assert!(notices(&seen, "rate_limited").count() >= 1);
}

/// 40,000 bytes in 8 fragments written without reading: 1009.
async fn burst_of_fragments_gets_1009(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let body = vec![b'a'; 5000];
    let seen = burst(
        &node,
        vec![identify(&unique("frag"))],
        8,
        move |i| match i {
            0 => fragment(&body, true, false),
            7 => fragment(&body, false, true),
            _ => fragment(&body, false, false),
        },
    )
    .await;
    assert_closed_with(&seen, 1009);
}

/// 30 bad payloads written without reading: the notices, then 1008.
async fn burst_of_bad_payloads_gets_1008(backend: Backend) {
    let node = TestNode::start(backend, |_| {}).await;
    let seen = burst(&node, vec![identify(&unique("bad"))], 30, |_| {
        Message::text("not JSON")
    })
    .await;
    assert_closed_with(&seen, 1008);
    assert!(notices(&seen, "bad_payload").count() >= 1);
}

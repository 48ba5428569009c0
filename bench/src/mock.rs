//! `mock`: a tiny single-process stand-in for a SwiftChat node, only for
//! checking the generator itself (its accounting and its own CPU ceiling)
//! when no real server is at hand. It implements just what the generator
//! uses: IDENTIFY → CACHE_UPDATE, `\join ROOM` → CACHE_UPDATE, and messages
//! fanned out to the room with a per-room `seq`. No rate limits, no notices,
//! no cluster. Its figures say nothing about SwiftChat.
//!
//! `--drop-every N` drops every Nth delivery and `--dup-every N` sends every
//! Nth delivery twice, to check that the generator reports loss and
//! duplicates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:18765")]
    pub bind: String,
    #[arg(long, default_value_t = 0)]
    pub drop_every: u64,
    #[arg(long, default_value_t = 0)]
    pub dup_every: u64,
    /// Write coalescing: after the first queued frame, wait this many ms for
    /// more before one write (0: write at once). For estimating what
    /// batching writes would save a server.
    #[arg(long, default_value_t = 0)]
    pub write_delay_ms: u64,
}

#[derive(Default)]
struct Room {
    seq: u64,
    members: HashMap<u64, mpsc::UnboundedSender<Utf8Bytes>>,
}

struct State {
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
    deliveries: AtomicU64,
    args: MockArgs,
}

pub async fn run(a: MockArgs) -> Result<()> {
    let listener = TcpListener::bind(&a.bind).await?;
    eprintln!("mock: listening on {}", a.bind);
    let st = Arc::new(State {
        rooms: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        deliveries: AtomicU64::new(0),
        args: a,
    });
    loop {
        let (sock, _) = listener.accept().await?;
        let st = st.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let cfg = crate::conn::ws_config(4096).write_buffer_size(64 << 10);
            if let Ok(ws) = tokio_tungstenite::accept_async_with_config(sock, Some(cfg)).await {
                let _ = conn(st, ws).await;
            }
        });
    }
}

fn cache_update(name: &str, room: &str) -> Message {
    Message::text(format!(
        r#"{{"op":4,"d":{{"rooms":[],"command_prefix":"\\","host":"localhost","port":0,"users":0,"me":{{"name":"{name}","room":"{room}"}}}}}}"#
    ))
}

async fn conn(
    st: Arc<State>,
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Result<()> {
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let mut name: Option<String> = None;
    let mut room = String::from("general");
    let mut batch = Vec::with_capacity(64);
    let result = async {
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, 64) => {
                    if n == 0 { break; }
                    if st.args.write_delay_ms > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(st.args.write_delay_ms)).await;
                        while let Ok(f) = rx.try_recv() {
                            batch.push(f);
                        }
                    }
                    for f in batch.drain(..) {
                        ws.feed(Message::Text(f)).await?;
                    }
                    ws.flush().await?;
                }
                m = ws.next() => {
                    let Some(m) = m else { break };
                    let Message::Text(t) = m? else { continue };
                    let v: serde_json::Value = match serde_json::from_str(t.as_str()) {
                        Ok(v) => v,
                        Err(_) => continue,
                    };
                    match v["op"].as_i64() {
                        Some(5) => {
                            let n = v["d"]["name"].as_str().unwrap_or("x").to_owned();
                            st.rooms.lock().unwrap().entry(room.clone()).or_default().members.insert(id, tx.clone());
                            ws.send(cache_update(&n, &room)).await?;
                            name = Some(n);
                        }
                        Some(1) if name.is_some() => {
                            let content = v["d"]["content"].as_str().unwrap_or("");
                            if let Some(r) = content.strip_prefix("\\join ") {
                                let r = r.trim().to_lowercase();
                                {
                                    let mut rooms = st.rooms.lock().unwrap();
                                    if let Some(old) = rooms.get_mut(&room) { old.members.remove(&id); }
                                    rooms.entry(r.clone()).or_default().members.insert(id, tx.clone());
                                }
                                room = r;
                                ws.send(cache_update(name.as_deref().unwrap_or(""), &room)).await?;
                            } else {
                                let mut rooms = st.rooms.lock().unwrap();
                                let rm = rooms.entry(room.clone()).or_default();
                                rm.seq += 1;
                                let frame = Utf8Bytes::from(serde_json::json!({"op":0,"d":{
                                    "author": name, "content": content, "room": room,
                                    "id": format!("{}-{}", room, rm.seq), "seq": rm.seq, "ts": 0}}).to_string());
                                for m in rm.members.values() {
                                    let k = st.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
                                    if st.args.drop_every > 0 && k.is_multiple_of(st.args.drop_every) { continue; }
                                    let _ = m.send(frame.clone());
                                    if st.args.dup_every > 0 && k.is_multiple_of(st.args.dup_every) { let _ = m.send(frame.clone()); }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(r) = st.rooms.lock().unwrap().get_mut(&room) {
        r.members.remove(&id);
    }
    result
}

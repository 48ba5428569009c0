//! A WebSocket test client (tokio-tungstenite) with bounded receive helpers.
//!
//! Receive helpers skip WebSocket pings/pongs (tungstenite answers pings by
//! itself while reading) and fail the test with the offending frame and the
//! client's label when something else arrives or nothing arrives within the
//! client's timeout ([`DEFAULT_TIMEOUT`], see [`Client::set_timeout`]).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::expect::{self, Expect};

/// How long a receive helper waits for a frame by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one read from the server gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A text frame holding JSON (any JSON value).
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame: `Some((code, reason))`, or `None` for a close frame
    /// without a code.
    Close(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    Ended(String),
    /// Nothing within the timeout.
    Timeout,
}

/// A test client.
pub struct Client {
    ws: Ws,
    /// Name used in failure messages (the login name once logged in).
    pub label: String,
    timeout: Duration,
    /// Set once a close frame or the end of the stream was seen.
    pub closed: Option<Event>,
}

impl Client {
    /// Connects to `ws://addr/`; panics on failure.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_url(&format!("ws://{addr}/")).await
    }

    /// Connects to a full `ws://` URL (e.g. `ws://addr/ws`); panics on
    /// failure.
    pub async fn connect_url(url: &str) -> Client {
        match Client::try_connect_url(url).await {
            Ok(c) => c,
            Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
        }
    }

    /// Connects to `ws://addr/`; the error (e.g. `Error::Http` with a 503
    /// response) is returned.
    pub async fn try_connect(addr: SocketAddr) -> Result<Client, tungstenite::Error> {
        Client::try_connect_url(&format!("ws://{addr}/")).await
    }

    /// Connects to a full URL, returning the error.
    pub async fn try_connect_url(url: &str) -> Result<Client, tungstenite::Error> {
        let (ws, _response) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| tungstenite::Error::Io(std::io::Error::other("connect timed out")))??;
        Ok(Client {
            ws,
            label: "client".into(),
            timeout: DEFAULT_TIMEOUT,
            closed: None,
        })
    }

    /// Changes how long receive helpers wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The underlying stream, for tests that need raw access (e.g. split).
    pub fn into_inner(self) -> Ws {
        self.ws
    }

    // ----- sending -------------------------------------------------------

    /// Sends a JSON value as one text frame; panics if the send fails.
    pub async fn send_json(&mut self, v: Value) {
        let text = v.to_string();
        self.send_text(&text).await;
    }

    /// Sends one text frame; panics if the send fails.
    pub async fn send_text(&mut self, text: &str) {
        if let Err(e) = self.ws.send(Message::text(text.to_string())).await {
            panic!("[{}] sending {text:.200} failed: {e}", self.label);
        }
    }

    /// Sends any message (binary, raw fragments, ...); panics on failure.
    pub async fn send_raw(&mut self, m: Message) {
        if let Err(e) = self.ws.send(m).await {
            panic!("[{}] sending a raw message failed: {e}", self.label);
        }
    }

    /// Sends any message, returning the error (for tests where the server
    /// may already have closed).
    pub async fn try_send_raw(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(m).await
    }

    /// Queues a message without flushing (see [`Client::flush`]).
    pub async fn feed_raw(&mut self, m: Message) -> Result<(), tungstenite::Error> {
        self.ws.feed(m).await
    }

    pub async fn flush(&mut self) -> Result<(), tungstenite::Error> {
        self.ws.flush().await
    }

    /// MESSAGE_CREATE `{"op":1,"d":{"content":content}}`.
    pub async fn send_message(&mut self, content: &str) {
        self.send_json(json!({"op": 1, "d": {"content": content}}))
            .await;
    }

    /// Same as [`Client::send_message`]; reads better for commands
    /// (`c.command("\\join x")`).
    pub async fn command(&mut self, content: &str) {
        self.send_message(content).await;
    }

    /// IDENTIFY with exactly this `d`.
    pub async fn send_identify(&mut self, d: Value) {
        self.send_json(json!({"op": 5, "d": d})).await;
    }

    /// CACHE_REQUEST `{"op":6,"d":null}`.
    pub async fn send_cache_request(&mut self) {
        self.send_json(json!({"op": 6, "d": null})).await;
    }

    // ----- receiving -----------------------------------------------------

    /// Reads the next event within `timeout`, skipping pings and pongs.
    pub async fn recv_event_within(&mut self, timeout: Duration) -> Event {
        if let Some(closed) = &self.closed {
            return closed.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Event::Timeout,
                Ok(next) => next,
            };
            let event = match next {
                None => Event::Ended("stream ended".into()),
                Some(Err(e)) => Event::Ended(format!("read error: {e}")),
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => Event::Json(v),
                    Err(_) => Event::Text(t.as_str().to_string()),
                },
                Some(Ok(Message::Binary(b))) => Event::Binary(b.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(f))) => {
                    Event::Close(f.map(|f| (u16::from(f.code), f.reason.as_str().to_string())))
                }
            };
            if matches!(event, Event::Close(_) | Event::Ended(_)) {
                self.closed = Some(event.clone());
            }
            return event;
        }
    }

    /// Reads the next event within the client's timeout.
    pub async fn recv_event(&mut self) -> Event {
        self.recv_event_within(self.timeout).await
    }

    /// The next frame, which must be a JSON object; panics otherwise (close,
    /// timeout, non-JSON, binary).
    pub async fn recv_json(&mut self) -> Value {
        let timeout = self.timeout;
        match self.recv_event_within(timeout).await {
            Event::Json(v) if v.is_object() => v,
            Event::Timeout => panic!("[{}] no frame within {timeout:?}", self.label),
            other => panic!(
                "[{}] expected a JSON object frame, got {other:?}",
                self.label
            ),
        }
    }

    /// The next frame must match `e`; returns it.
    pub async fn expect(&mut self, e: &Expect) -> Value {
        let timeout = self.timeout;
        match self.recv_event_within(timeout).await {
            Event::Json(v) if e.matches(&v) => v,
            Event::Timeout => panic!(
                "[{}] expected {}, got nothing within {timeout:?}",
                self.label, e.desc
            ),
            other => panic!("[{}] expected {}, got {other:?}", self.label, e.desc),
        }
    }

    /// The next frame must have `op`; returns the whole frame.
    pub async fn expect_op(&mut self, op: i64) -> Value {
        self.expect(&expect::op(op)).await
    }

    /// The next frame must be a well-formed NOTICE with `code`; returns its
    /// `d`.
    pub async fn expect_notice(&mut self, code: &'static str) -> Value {
        let v = self.expect(&expect::notice(code)).await;
        v["d"].clone()
    }

    /// The next `es.len()` frames must match the matchers, in any order
    /// (each frame matches a different matcher). Returns the frames in the
    /// order of the matchers.
    pub async fn expect_all(&mut self, es: Vec<Expect>) -> Vec<Value> {
        let mut got: Vec<Option<Value>> = vec![None; es.len()];
        let deadline = Instant::now() + self.timeout;
        for _ in 0..es.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.recv_event_within(left).await;
            let missing: Vec<&str> = es
                .iter()
                .zip(&got)
                .filter(|(_, g)| g.is_none())
                .map(|(e, _)| e.desc.as_str())
                .collect();
            let v = match ev {
                Event::Json(v) => v,
                other => panic!(
                    "[{}] still expecting {missing:?}, got {other:?}",
                    self.label
                ),
            };
            let slot = es
                .iter()
                .zip(&got)
                .position(|(e, g)| g.is_none() && e.matches(&v));
            match slot {
                Some(i) => got[i] = Some(v),
                None => panic!(
                    "[{}] still expecting {missing:?}, got unexpected frame {v}",
                    self.label
                ),
            }
        }
        got.into_iter().map(|g| g.unwrap()).collect()
    }

    /// Reads frames, skipping (and discarding) those that do not match,
    /// until one matches `e`, within the client's timeout in total. Panics
    /// on close, end or timeout, listing what was skipped.
    pub async fn recv_until(&mut self, e: &Expect) -> Value {
        let timeout = self.timeout;
        self.recv_until_within(e, timeout).await
    }

    /// [`Client::recv_until`] with an explicit total timeout.
    pub async fn recv_until_within(&mut self, e: &Expect, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event_within(left).await {
                Event::Json(v) if e.matches(&v) => return v,
                Event::Json(v) => skipped.push(v),
                other => panic!(
                    "[{}] waiting for {}, got {other:?}; skipped before: {}",
                    self.label,
                    e.desc,
                    show(&skipped)
                ),
            }
        }
    }

    /// Like [`Client::recv_until`], but returns every frame read, the
    /// matching one last.
    pub async fn collect_until(&mut self, e: &Expect) -> Vec<Value> {
        let deadline = Instant::now() + self.timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event_within(left).await {
                Event::Json(v) => {
                    let done = e.matches(&v);
                    frames.push(v);
                    if done {
                        return frames;
                    }
                }
                other => panic!(
                    "[{}] waiting for {}, got {other:?}; frames before: {}",
                    self.label,
                    e.desc,
                    show(&frames)
                ),
            }
        }
    }

    /// Reads frames until the connection is closed; the close frame must
    /// carry `code`. Frames received before the close are returned (they
    /// are not checked). Panics if the stream ends without a close frame, on
    /// another code, or if nothing closes it within `within`.
    pub async fn expect_close_within(&mut self, code: u16, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event_within(left).await {
                Event::Json(v) => before.push(v),
                Event::Close(Some((c, _))) if c == code => return before,
                Event::Timeout => panic!(
                    "[{}] expected close {code}, not closed within {within:?}; frames: {}",
                    self.label,
                    show(&before)
                ),
                other => panic!(
                    "[{}] expected close {code}, got {other:?}; frames before: {}",
                    self.label,
                    show(&before)
                ),
            }
        }
    }

    /// [`Client::expect_close_within`] with the client's timeout.
    pub async fn expect_close(&mut self, code: u16) -> Vec<Value> {
        let timeout = self.timeout;
        self.expect_close_within(code, timeout).await
    }

    /// Fails if any frame (or a close) arrives within `dur`.
    pub async fn assert_no_frame_within(&mut self, dur: Duration) {
        match self.recv_event_within(dur).await {
            Event::Timeout => {}
            other => panic!(
                "[{}] expected nothing within {dur:?}, got {other:?}",
                self.label
            ),
        }
    }

    /// Reads everything that arrives within `dur` (stops early on close);
    /// returns the JSON frames.
    pub async fn collect_for(&mut self, dur: Duration) -> Vec<Value> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event_within(left).await {
                Event::Json(v) => out.push(v),
                _ => return out,
            }
        }
    }

    /// Reads until nothing arrives for `quiet` (or the connection closes,
    /// or 10 s pass); returns the JSON frames. For steps whose frames come
    /// in no specified order: check them with [`expect::assert_has`] and
    /// [`expect::assert_lacks`].
    pub async fn collect_until_quiet(&mut self, quiet: Duration) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match self.recv_event_within(quiet).await {
                Event::Json(v) => out.push(v),
                _ => break,
            }
        }
        out
    }

    /// [`Client::collect_until_quiet`] with 300 ms of quiet.
    pub async fn settle(&mut self) -> Vec<Value> {
        self.collect_until_quiet(Duration::from_millis(300)).await
    }

    /// Whether the connection is still open: sends a CACHE_REQUEST and
    /// expects some frame back (skipping others) rather than a close.
    pub async fn is_open(&mut self) -> bool {
        if self.closed.is_some() {
            return false;
        }
        if self
            .ws
            .send(Message::text(json!({"op": 6, "d": null}).to_string()))
            .await
            .is_err()
        {
            return false;
        }
        loop {
            match self.recv_event().await {
                Event::Json(v) if v["op"] == 4 => return true,
                Event::Json(v)
                    if v["op"] == 7
                        && (v["d"]["code"] == "not_logged_in"
                            || v["d"]["code"] == "rate_limited") =>
                {
                    return true
                }
                Event::Json(_) => continue,
                _ => return false,
            }
        }
    }

    // ----- login ---------------------------------------------------------

    /// Logs in with IDENTIFY `{"name": name}` and checks the success
    /// answer: a CACHE_UPDATE with `me.name == name`, and the NOTICE
    /// `joined` for `name` in `me.room`, in either order. Returns the
    /// CACHE_UPDATE's `d`. Sets the label to `name`.
    pub async fn identify(&mut self, name: &str) -> Value {
        self.identify_with(json!({"name": name}), true).await
    }

    /// IDENTIFY with this `d` (which must contain `name`); expects success:
    /// CACHE_UPDATE with `me.name == d.name` and, when `joined`, the own
    /// `joined` notice (pass `false` for rooms above
    /// `presence_notice_max_members`). Returns the CACHE_UPDATE's `d`.
    pub async fn identify_with(&mut self, d: Value, joined: bool) -> Value {
        let name = d["name"].as_str().expect("d.name").to_string();
        self.label = name.clone();
        self.send_identify(d).await;
        self.expect_login_success(&name, joined).await
    }

    /// The original login: `{"op":1,"d":{"content":name}}`; same checks as
    /// [`Client::identify`].
    pub async fn login_op1(&mut self, name: &str) -> Value {
        self.label = name.to_string();
        self.send_message(name).await;
        self.expect_login_success(name, true).await
    }

    /// Expects the answer to a successful login as `name`; returns the
    /// CACHE_UPDATE's `d`.
    pub async fn expect_login_success(&mut self, name: &str, joined: bool) -> Value {
        if joined {
            let frames = self
                .expect_all(vec![
                    expect::op(4).and("me.name matches", {
                        let name = name.to_string();
                        move |v| v["d"]["me"]["name"] == name.as_str()
                    }),
                    expect::notice_user("joined", name),
                ])
                .await;
            let cache = frames[0]["d"].clone();
            assert_eq!(
                frames[1]["d"]["room"], cache["me"]["room"],
                "[{name}] joined notice room vs CACHE_UPDATE me.room"
            );
            cache
        } else {
            let want = name.to_string();
            let v = self
                .expect(&expect::op(4).and("me.name matches", move |v| {
                    v["d"]["me"]["name"] == want.as_str()
                }))
                .await;
            v["d"].clone()
        }
    }

    // ----- rooms and messages -------------------------------------------

    /// `\join room` for a room that does NOT exist yet: expects ROOM_STATE
    /// created (every logged-in client gets it), the CACHE_UPDATE of the
    /// move and the own `joined` notice, in any order.
    pub async fn create_room(&mut self, room: &str) {
        let me = self.label.clone();
        self.command(&format!("\\join {room}")).await;
        self.expect_all(vec![
            expect::room_state(room, "created"),
            expect::cache_me(&me, room),
            expect::joined(&me, room),
        ])
        .await;
    }

    /// `\join room [password]` for an existing, joinable room: expects the
    /// CACHE_UPDATE of the move and the own `joined`, in any order.
    pub async fn join_room(&mut self, room: &str, password: Option<&str>) {
        let me = self.label.clone();
        let cmd = match password {
            Some(p) => format!("\\join {room} {p}"),
            None => format!("\\join {room}"),
        };
        self.command(&cmd).await;
        self.expect_all(vec![expect::cache_me(&me, room), expect::joined(&me, room)])
            .await;
    }

    /// Waits (skipping other frames) for this client's own MESSAGE with
    /// `content`; returns its `d`.
    pub async fn expect_own_message(&mut self, content: &str) -> Value {
        let me = self.label.clone();
        self.recv_until(&expect::message(&me, content)).await["d"].clone()
    }

    /// Sends a message and waits (skipping other frames) until it comes
    /// back; returns its `d`. Proves the connection is served.
    pub async fn roundtrip(&mut self, content: &str) -> Value {
        self.send_message(content).await;
        self.expect_own_message(content).await
    }

    /// Closes the connection cleanly (close frame 1000, waits up to 2 s for
    /// the end of the stream).
    pub async fn close(mut self) {
        if self.closed.is_none() {
            let _ = self
                .ws
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                })))
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
    }
}

/// Short rendering of frames for failure messages.
pub fn show(frames: &[Value]) -> String {
    let mut s = String::from("[");
    for (i, f) in frames.iter().enumerate() {
        if i == 20 {
            s.push_str(&format!(" ... {} more", frames.len() - 20));
            break;
        }
        let t = f.to_string();
        if t.chars().count() > 300 {
            s.extend(t.chars().take(300));
            s.push_str("...");
        } else {
            s.push_str(&t);
        }
        s.push_str(", ");
    }
    s.push(']');
    s
}

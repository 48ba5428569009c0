//! One WebSocket connection: a reader loop that feeds the chat session, and a
//! writer task that drains the connection's bounded queue ([`ConnHandle`]).
//!
//! The writer takes every queued frame at once, feeds them and flushes once
//! (or every `websocket.write_batch` frames), so a burst of messages costs
//! one socket write. Nobody else writes to the socket: the session and the
//! registry only push into the queue without waiting, and a full queue
//! closes the connection (4009) rather than blocking its room.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::chat::{Chat, Flow, Session};
use crate::conn::INTERNAL_ERROR;
use crate::metrics as m;
use crate::protocol::{close, Frame};
use crate::registry::{ConnHandle, ConnectionSlot};
use crate::shutdown::Shutdown;

/// Serves one upgraded WebSocket until it closes.
pub async fn serve<S>(chat: Arc<Chat>, ws: WebSocketStream<S>, slot: ConnectionSlot, peer: IpAddr)
where
    S: AsyncRead + AsyncWrite + HasOutbox + Unpin + Send + 'static,
{
    let limits = &chat.config.limits;
    let conn = Arc::new(
        ConnHandle::new(slot.id, limits.outbound_queue, limits.control_queue)
            .with_max_bytes(limits.outbound_queue_bytes)
            .with_peer(peer),
    );
    metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
    let outbox = ws.get_ref().outbox();
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        outbox,
        conn.clone(),
        chat.shutdown.clone(),
        chat.config.websocket.write_batch,
        chat.config.websocket.retained_batch_frames,
    ));

    let mut session = Session::new(chat.clone(), conn.clone());
    let ended = read_loop(&chat, &mut session, &conn, &mut stream).await;
    if let Flow::Close(code, reason) = ended.flow {
        conn.close(code, reason);
    }
    // The writer waits on its queue only: it looks at the node's shutdown
    // when woken.
    conn.wake_writer();
    // What follows runs once, at the close: boxed, so that the task of every
    // open connection does not carry its state (the lingering close and the
    // release), only the reader's.
    Box::pin(close(chat, session, conn, stream, writer, ended.peer)).await;
    drop(slot);
}

/// Closes a connection whose reader ended: releases the session and sends
/// the close (lingering), in the order that suits who closed.
async fn close<S>(
    chat: Arc<Chat>,
    mut session: Session,
    conn: Arc<ConnHandle>,
    stream: SplitStream<WebSocketStream<S>>,
    writer: JoinHandle<Option<SplitSink<WebSocketStream<S>, Message>>>,
    peer: PeerState,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Release the name and membership, bounded so a dead store cannot hold
    // the task (the store's own expiry cleans up after a node that failed).
    let release = Duration::from_millis(chat.config.redis.command_timeout_ms * 3);
    let release = async {
        if tokio::time::timeout(release, Box::pin(session.on_close()))
            .await
            .is_err()
        {
            tracing::warn!(conn = conn.id, "timed out releasing a session");
        }
    };
    let grace = Duration::from_millis(chat.config.limits.close_grace_ms);
    if conn.close_reason().is_some() || chat.shutdown.is_triggered() {
        // The server closes: the close goes out (and the client's input is
        // read away) while the session is released.
        tokio::join!(release, linger(stream, writer, peer, grace));
    } else {
        // The client closed or went away: release first, then answer, so
        // that once the client sees our close its name is free again.
        release.await;
        conn.close(1000, "");
        linger(stream, writer, peer, grace).await;
    }
    // Every close is counted by its code (a node shutdown closes with 1001).
    let (code, reason) = conn
        .close_reason()
        .unwrap_or((close::GOING_AWAY, "going away"));
    metrics::counter!(m::CLOSES, "code" => code.to_string()).increment(1);
    tracing::debug!(conn = conn.id, code, reason, "closed connection");
}

/// The lingering close: the writer sends what is queued and the close frame
/// while this reads and discards what the client still sends, until the
/// client's close (or its end of the socket) or `grace`. Dropping a socket
/// with unread input makes the kernel answer with a reset, and the client's
/// kernel then throws away our close frame before its reader sees it.
async fn linger<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    writer: JoinHandle<Option<SplitSink<WebSocketStream<S>, Message>>>,
    peer: PeerState,
    grace: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + grace;
    let abort = writer.abort_handle();
    // Read through the WebSocket while it parses: it stops at the client's
    // close frame. After a read error (e.g. the oversized message of a 1009)
    // the stream is fused and the rest is read raw below.
    let discard = async {
        match peer {
            PeerState::Done => return false,
            PeerState::Fused => return true,
            PeerState::Open => {}
        }
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(_))) | None => return false,
                Some(Ok(_)) => {}
                Some(Err(_)) => return true,
            }
        }
    };
    let (writer, read_raw) = tokio::join!(
        tokio::time::timeout_at(deadline, writer),
        tokio::time::timeout_at(deadline, discard)
    );
    let sink = match writer {
        Ok(Ok(sink)) => sink,
        Ok(Err(_)) => None,
        Err(_) => {
            abort.abort();
            None
        }
    };
    if read_raw != Ok(true) {
        return;
    }
    let Some(Ok(mut ws)) = sink.map(|sink| stream.reunite(sink)) else {
        return;
    };
    let raw = ws.get_mut();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(n) = raw.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// How the reader ended.
struct ReadEnd {
    flow: Flow,
    peer: PeerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// The WebSocket still parses what the client sends.
    Open,
    /// The client closed, or its end of the socket is gone.
    Done,
    /// A read error fused the WebSocket stream: only raw reads remain.
    Fused,
}

/// Reads frames until the connection should close; returns the session's
/// verdict when it decided.
async fn read_loop<S>(
    chat: &Arc<Chat>,
    session: &mut Session,
    conn: &Arc<ConnHandle>,
    stream: &mut SplitStream<WebSocketStream<S>>,
) -> ReadEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &chat.config.limits;
    // One timer for the connection's three deadlines: the login timeout,
    // liveness (`ping_timeout` after the client was last heard from) and
    // the next ping, which the writer sends when asked. A tokio `Sleep` is
    // 112 bytes of every idle connection's task; one serves all three. It
    // fires at most once per deadline while the peer talks: liveness is
    // checked when it fires, not reset on every frame.
    let started = Instant::now();
    let login_deadline = started + chat.config.login_timeout();
    let ping_timeout = Duration::from_secs(limits.ping_timeout_secs);
    let ping_interval = Duration::from_secs(limits.ping_interval_secs);
    let mut last_seen = started;
    let mut next_ping = started + ping_interval;
    let next_deadline = |logged_in: bool, last_seen: Instant, next_ping: Instant| {
        let due = (last_seen + ping_timeout).min(next_ping);
        if logged_in {
            due
        } else {
            due.min(login_deadline)
        }
    };
    let timer = sleep_until(next_deadline(false, last_seen, next_ping));
    tokio::pin!(timer);
    let node_stopping = chat.shutdown.token().clone();

    let open = |flow| ReadEnd {
        flow,
        peer: PeerState::Open,
    };
    loop {
        let flow = tokio::select! {
            biased;
            _ = conn.closing().cancelled() => return open(Flow::Continue),
            _ = node_stopping.cancelled() => return open(Flow::Continue),
            // The session's handlers are boxed while they run: their state
            // machines are large, and an idle connection should not carry
            // them (one allocation per incoming payload instead).
            _ = conn.controls_ready() => {
                let mut flow = Flow::Continue;
                while flow == Flow::Continue {
                    let Some(control) = conn.next_control() else { break };
                    flow = Box::pin(session.on_control(control)).await;
                }
                flow
            }
            frame = stream.next() => {
                last_seen = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => Box::pin(session.on_text(text.as_str())).await,
                    Some(Ok(Message::Binary(_))) => session.on_binary(),
                    Some(Ok(Message::Close(_))) | None => {
                        return ReadEnd { flow: Flow::Continue, peer: PeerState::Done };
                    }
                    // Pongs and pings only prove liveness; tungstenite
                    // answers pings by itself.
                    Some(Ok(_)) => Flow::Continue,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        return ReadEnd {
                            flow: Flow::Close(close::TOO_BIG, "message too big"),
                            peer: PeerState::Fused,
                        };
                    }
                    Some(Err(error)) => {
                        tracing::debug!(conn = conn.id, %error, "read error");
                        // A socket error leaves nothing to read; a protocol
                        // error leaves the client's bytes behind.
                        let peer = match error {
                            WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => {
                                PeerState::Done
                            }
                            _ => PeerState::Fused,
                        };
                        return ReadEnd { flow: Flow::Continue, peer };
                    }
                }
            }
            _ = &mut timer => {
                let now = Instant::now();
                if !session.is_logged_in() && now >= login_deadline {
                    return open(Flow::Close(close::LOGIN_TIMEOUT, "login timeout"));
                }
                if now >= last_seen + ping_timeout {
                    return open(Flow::Close(close::PING_TIMEOUT, "ping timeout"));
                }
                if now >= next_ping {
                    conn.request_ping();
                    next_ping = now + ping_interval;
                }
                timer
                    .as_mut()
                    .reset(next_deadline(session.is_logged_in(), last_seen, next_ping));
                Flow::Continue
            }
        };
        if let Flow::Close(..) = flow {
            return open(flow);
        }
    }
}

/// Drains the queue into the socket, batching writes, and pings when the
/// reader asks ([`ConnHandle::request_ping`]). On close it sends what the
/// session queued last (e.g. the NOTICE that explains a close), the SHUTDOWN
/// frame when the node is stopping, and the close frame. A frame it cannot
/// send closes the connection with 1011 (the reader sees the close and
/// stops) unless the socket itself is gone. Returns the sink for the lingering close, unless the socket failed.
async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    outbox: Arc<Outbox>,
    conn: Arc<ConnHandle>,
    shutdown: Arc<Shutdown>,
    batch_size: usize,
    retained_batch_frames: usize,
) -> Option<SplitSink<WebSocketStream<S>, Message>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The writer and the queue swap this buffer (see
    // `ConnHandle::take_frames_into`): no allocation per batch.
    let mut batch = VecDeque::new();
    loop {
        // Not select! branches: a cancellation future registers with its
        // token on every poll, and the node's shutdown token is shared by
        // every connection (one lock for all, per frame). `close` and the
        // reader's end wake this task instead.
        if conn.is_closing() || shutdown.is_triggered() {
            break;
        }
        conn.frames_ready().await;
        if conn.is_closing() || shutdown.is_triggered() {
            break;
        }
        let ping = conn.take_frames_into(&mut batch);
        let sent = async {
            if ping {
                sink.send(Message::Ping(Bytes::new())).await?;
            }
            write_batch(&mut sink, &outbox, &mut batch, batch_size).await
        }
        .await;
        if batch.capacity() > retained_batch_frames {
            // A burst grew it: give the memory back (an idle connection
            // keeps at most `websocket.retained_batch_frames` slots in each
            // buffer).
            batch = VecDeque::new();
        }
        if let Err(error) = sent {
            if !write_failed(&conn, error) {
                return None;
            }
            break;
        }
    }

    let (code, reason) = match (conn.close_reason(), shutdown.notice()) {
        (Some(reason), _) => reason,
        (None, Some(_)) => (close::GOING_AWAY, "going away"),
        (None, None) => (1000, ""),
    };
    // A slow consumer's backlog is dropped: it is why it is being closed;
    // after a failed write the rest is not sent either.
    if code != close::SLOW_CONSUMER && code != INTERNAL_ERROR {
        let mut last = conn.take_frames();
        if code == close::GOING_AWAY {
            if let Some(notice) = shutdown.notice() {
                last.push_back(notice.frame.clone());
            }
        }
        if let Err(error) = write_batch(&mut sink, &outbox, &mut last, batch_size).await {
            if !write_failed(&conn, error) {
                return None;
            }
        }
    }
    let (code, reason) = conn.close_reason().unwrap_or((code, reason));
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    match sink.send(Message::Close(Some(frame))).await {
        Ok(()) => Some(sink),
        Err(error) => {
            tracing::debug!(conn = conn.id, %error, "could not send the close frame");
            None
        }
    }
}

/// Handles a failed write; returns whether the socket can still take the
/// close frame. A frame that cannot be sent (too large for the write buffer,
/// a protocol error) closes with 1011 and is logged: the client would
/// otherwise stay logged in and miss everything from then on.
fn write_failed(conn: &ConnHandle, error: WsError) -> bool {
    match error {
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => {
            tracing::debug!(conn = conn.id, %error, "socket closed while writing");
            conn.close(1000, "");
            false
        }
        error => {
            tracing::warn!(conn = conn.id, peer = %conn.peer, %error, "could not send a frame: closing with 1011");
            conn.close(INTERNAL_ERROR, "internal error");
            true
        }
    }
}

/// Frames the texts into the socket's buffer and flushes once per
/// `batch_size` frames (and at the end), so a burst costs few socket writes.
/// Leaves `frames` empty (its capacity kept for the next batch).
async fn write_batch<S>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    outbox: &Outbox,
    frames: &mut VecDeque<Frame>,
    batch_size: usize,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if frames.is_empty() {
        return Ok(());
    }
    let result = async {
        let mut fed = 0usize;
        while let Some(frame) = frames.pop_front() {
            if outbox.is_full_for(frame.len() + MAX_HEADER) {
                sink.flush().await?;
            }
            outbox.push_text(frame.as_bytes())?;
            fed += 1;
            if fed.is_multiple_of(batch_size) {
                sink.flush().await?;
            }
        }
        sink.flush().await
    }
    .await;
    frames.clear();
    result
}

/// The socket under a WebSocket: collects what tungstenite writes (pings,
/// pongs, close frames) and the text frames the writer task encodes itself
/// ([`Outbox::push_text`]), sends them on flush (or once `coalesce_bytes`
/// are waiting), then gives the buffer's memory back as soon as it is empty.
///
/// Why: tungstenite's own write buffers keep their largest capacity (a `Vec`
/// drained but never shrunk). Its frame buffer (`out_buffer`) keeps the size
/// of the largest single frame it ever formatted: for most connections the
/// CACHE_UPDATE, about 8.5 KB when it lists 100 rooms (heap profile,
/// bench/results/issue13-memory-cpu.md). Text frames therefore do not go
/// through tungstenite: the writer task frames them here (a server frame is
/// a 2-10 byte header and the payload, unmasked: the same bytes tungstenite
/// would write), and this buffer is freed whenever a flush empties it. An
/// idle connection holds no write buffer; a burst still costs one socket
/// write per flush, and each outgoing frame is copied once, as tungstenite
/// would.
///
/// Bounded: once `max_bytes` are waiting and the socket takes no more,
/// tungstenite's writes wait and the writer task flushes before it adds
/// more (its queue then fills, and the connection is closed as a slow
/// consumer).
pub(crate) struct ReleasingWriter<S> {
    inner: S,
    out: Arc<Outbox>,
}

/// The bytes waiting for the socket, shared by the connection's writer task
/// (text frames) and tungstenite (everything else, in call order).
pub struct Outbox {
    state: std::sync::Mutex<OutState>,
    coalesce_bytes: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct OutState {
    buf: Vec<u8>,
    /// Bytes of `buf` already written to the socket.
    written: usize,
    /// A close frame was queued: nothing may follow it.
    closed: bool,
}

impl OutState {
    fn waiting(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Drops what was written, before more is appended.
    fn compact(&mut self) {
        if self.written > 0 {
            self.buf.drain(..self.written);
            self.written = 0;
        }
    }
}

impl Outbox {
    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `len` more bytes would exceed `max_bytes` while something is
    /// waiting: the socket must take some first.
    fn is_full_for(&self, len: usize) -> bool {
        let waiting = self.state().waiting();
        waiting > 0 && waiting + len > self.max_bytes
    }

    /// Queues one text frame (server to client: FIN, opcode text, no mask).
    /// After a close frame nothing more is queued, as tungstenite refuses to
    /// write after closing.
    fn push_text(&self, payload: &[u8]) -> Result<(), WsError> {
        let mut state = self.state();
        if state.closed {
            return Err(WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::SendAfterClosing,
            ));
        }
        let len = payload.len();
        let header = match len {
            0..126 => 2,
            126..=0xffff => 4,
            _ => MAX_HEADER,
        };
        if header + len > self.max_bytes {
            // As tungstenite: a frame larger than the whole write buffer
            // cannot be sent (the connection closes with 1011).
            return Err(WsError::WriteBufferFull(Box::new(Message::Text(
                "frame larger than websocket.max_write_buffer_bytes".into(),
            ))));
        }
        state.compact();
        state.buf.reserve(len + MAX_HEADER);
        state.buf.push(0x81);
        if len < 126 {
            state.buf.push(len as u8);
        } else if len <= u16::MAX as usize {
            state.buf.push(126);
            state.buf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            state.buf.push(127);
            state.buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        state.buf.extend_from_slice(payload);
        Ok(())
    }

    /// Whether an unflushed write of this size should go out now.
    fn over_coalesce(&self) -> bool {
        self.state().waiting() > self.coalesce_bytes
    }
}

/// The longest header of an unmasked frame.
const MAX_HEADER: usize = 10;

/// Whether `data`, whole frames as tungstenite writes them, holds a close
/// frame.
fn holds_close_frame(mut data: &[u8]) -> bool {
    while data.len() >= 2 {
        if data[0] & 0x0f == 0x8 {
            return true;
        }
        let (len, header) = match data[1] & 0x7f {
            126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
            127 if data.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => return false,
            n => (n as usize, 2),
        };
        let mask: usize = if data[1] & 0x80 != 0 { 4 } else { 0 };
        data = &data[(header + mask).saturating_add(len).min(data.len())..];
    }
    false
}

impl<S> ReleasingWriter<S> {
    pub(crate) fn new(inner: S, config: &crate::config::WebSocketConfig) -> Self {
        Self {
            inner,
            out: Arc::new(Outbox {
                state: std::sync::Mutex::default(),
                coalesce_bytes: config.write_buffer_bytes,
                max_bytes: config.max_write_buffer_bytes,
            }),
        }
    }

    /// Capacity of the buffer (for tests: 0 once a flush emptied it).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.out.state().buf.capacity()
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.out.state().waiting()
    }
}

/// A socket whose writes the connection's writer task can add text frames
/// to directly.
pub trait HasOutbox {
    fn outbox(&self) -> Arc<Outbox>;
}

impl<S> HasOutbox for ReleasingWriter<S> {
    fn outbox(&self) -> Arc<Outbox> {
        self.out.clone()
    }
}

impl<S: AsyncWrite + Unpin> ReleasingWriter<S> {
    /// Writes everything waiting; frees the buffer once it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut state = self.out.state();
        while state.written < state.buf.len() {
            let from = state.written;
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &state.buf[from..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            state.written += n;
        }
        // Empty: give the memory back (an idle connection keeps nothing).
        state.buf = Vec::new();
        state.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReleasingWriter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReleasingWriter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.is_full_for(data.len()) {
            // Full: wait until the socket took what is waiting.
            ready!(this.poll_drain(cx))?;
        }
        {
            let mut state = this.out.state();
            state.compact();
            state.buf.extend_from_slice(data);
            if holds_close_frame(data) {
                state.closed = true;
            }
        }
        if this.out.over_coalesce() {
            // Enough for a full write: send what the socket takes now.
            if let Poll::Ready(Err(error)) = this.poll_drain(cx) {
                return Poll::Ready(Err(error));
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(coalesce: usize, max: usize) -> crate::config::WebSocketConfig {
        crate::config::WebSocketConfig {
            write_buffer_bytes: coalesce,
            max_write_buffer_bytes: max,
            ..Default::default()
        }
    }

    /// The writer's own text frames are byte for byte what tungstenite
    /// writes, and a close frame written through tungstenite stops them.
    #[test]
    fn text_frames_match_tungstenite_and_stop_after_a_close() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
        let (a, _b) = tokio::io::duplex(16);
        let w = ReleasingWriter::new(a, &config(4096, 1 << 20));
        let outbox = w.outbox();
        let mut expected = Vec::new();
        for len in [0usize, 5, 125, 126, 200, 65535, 65536, 70000] {
            let payload = "x".repeat(len);
            outbox.push_text(payload.as_bytes()).unwrap();
            WsFrame::message(payload.into_bytes(), OpCode::Data(Data::Text), true)
                .format(&mut expected)
                .unwrap();
        }
        assert_eq!(outbox.state().buf, expected);
        let mut close = Vec::new();
        WsFrame::close(None).format(&mut close).unwrap();
        let mut ping = Vec::new();
        WsFrame::ping(vec![1, 2, 3]).format(&mut ping).unwrap();
        assert!(!holds_close_frame(&ping));
        assert!(holds_close_frame(&close));
        assert!(holds_close_frame(&[ping.clone(), close].concat()));
        assert!(!holds_close_frame(&expected));
    }

    #[tokio::test]
    async fn nothing_follows_a_close_frame() {
        let (a, _b) = tokio::io::duplex(1 << 16);
        let mut w = ReleasingWriter::new(a, &config(4096, 65536));
        let outbox = w.outbox();
        outbox.push_text(b"before").unwrap();
        w.write_all(&[0x88, 0x00]).await.unwrap();
        assert!(matches!(
            outbox.push_text(b"after"),
            Err(WsError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn writes_are_held_until_flush_then_the_buffer_is_freed() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = ReleasingWriter::new(a, &config(4096, 65536));
        w.write_all(b"hello ").await.unwrap();
        w.write_all(b"world").await.unwrap();
        let mut got = [0u8; 11];
        // Nothing reached the socket before the flush.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.read_exact(&mut got))
                .await
                .is_err()
        );
        assert!(w.capacity() >= 11);
        w.flush().await.unwrap();
        assert_eq!(w.capacity(), 0, "an emptied buffer is given back");
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[tokio::test]
    async fn a_blocked_socket_bounds_the_buffer_and_loses_nothing() {
        // The socket takes 16 bytes; the writer may hold 64 more.
        let (a, mut b) = tokio::io::duplex(16);
        let mut w = ReleasingWriter::new(a, &config(8, 64));
        let chunk = [7u8; 10];
        let mut accepted = 0;
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_millis(50), w.write_all(&chunk)).await {
                Ok(r) => {
                    r.unwrap();
                    accepted += chunk.len();
                }
                Err(_) => break,
            }
        }
        assert!(accepted < 200, "writes wait once the buffer is full");
        assert!(w.waiting() <= 64 + chunk.len());
        // Reading frees the socket: the flush then completes, all in order.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            all
        });
        w.flush().await.unwrap();
        assert_eq!(w.capacity(), 0);
        w.shutdown().await.unwrap();
        drop(w);
        let all = reader.await.unwrap();
        assert!(all.len() >= accepted && all.iter().all(|&x| x == 7));
    }
}

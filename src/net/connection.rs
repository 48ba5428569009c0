//! One WebSocket connection: a reader loop that feeds the chat session, and a
//! writer task that drains the connection's bounded queue ([`ConnHandle`]).
//!
//! The writer takes every queued frame at once, feeds them and flushes once
//! (or every `websocket.write_batch` frames), so a burst of messages costs
//! one socket write. Nobody else writes to the socket: the session and the
//! registry only push into the queue without waiting, and a full queue
//! closes the connection (4009) rather than blocking its room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{interval_at, sleep, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::chat::{Chat, Flow, Session};
use crate::metrics as m;
use crate::protocol::{close, Frame};
use crate::registry::{ConnHandle, ConnectionSlot};
use crate::shutdown::Shutdown;

/// Serves one upgraded WebSocket until it closes.
pub async fn serve<S>(chat: Arc<Chat>, ws: WebSocketStream<S>, slot: ConnectionSlot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &chat.config.limits;
    let conn = Arc::new(ConnHandle::new(
        slot.id,
        limits.outbound_queue,
        limits.control_queue,
    ));
    metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
    let (sink, stream) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        conn.clone(),
        chat.shutdown.clone(),
        chat.config.websocket.write_batch,
        Duration::from_secs(limits.ping_interval_secs),
    ));

    let mut session = Session::new(chat.clone(), conn.clone());
    let flow = read_loop(&chat, &mut session, &conn, stream).await;
    if let Flow::Close(code, reason) = flow {
        conn.close(code, reason);
    }
    if let Some((code, reason)) = conn.close_reason() {
        metrics::counter!(m::CLOSES, "code" => code.to_string()).increment(1);
        tracing::debug!(conn = conn.id, code, reason, "closing connection");
    }
    // Release the name and membership; bounded so a dead store cannot hold
    // the task (the store's own expiry cleans up after a node that failed).
    let release = Duration::from_millis(chat.config.redis.command_timeout_ms * 3);
    if tokio::time::timeout(release, Box::pin(session.on_close()))
        .await
        .is_err()
    {
        tracing::warn!(conn = conn.id, "timed out releasing a session");
    }
    if !chat.shutdown.is_triggered() {
        // Tell the writer to finish (the peer left, or the session ended).
        conn.close(1000, "");
    }
    let grace = Duration::from_millis(chat.config.limits.close_grace_ms);
    let abort = writer.abort_handle();
    if tokio::time::timeout(grace, writer).await.is_err() {
        abort.abort();
    }
    drop(slot);
}

/// Reads frames until the connection should close; returns the session's
/// verdict when it decided.
async fn read_loop<S>(
    chat: &Arc<Chat>,
    session: &mut Session,
    conn: &Arc<ConnHandle>,
    mut stream: SplitStream<WebSocketStream<S>>,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &chat.config.limits;
    let login_deadline = sleep(chat.config.login_timeout());
    tokio::pin!(login_deadline);
    // The liveness timer fires at most once per `ping_timeout` while the
    // peer talks: when it fires early it is pushed to `last_seen + timeout`
    // instead of being reset on every frame.
    let ping_timeout = Duration::from_secs(limits.ping_timeout_secs);
    let mut last_seen = Instant::now();
    let liveness = sleep(ping_timeout);
    tokio::pin!(liveness);
    let node_stopping = chat.shutdown.token().clone();

    loop {
        let flow = tokio::select! {
            biased;
            _ = conn.closing().cancelled() => return Flow::Continue,
            _ = node_stopping.cancelled() => return Flow::Continue,
            _ = &mut login_deadline, if !session.is_logged_in() => {
                return Flow::Close(close::LOGIN_TIMEOUT, "login timeout");
            }
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
                    Some(Ok(Message::Close(_))) | None => return Flow::Continue,
                    // Pongs and pings only prove liveness; tungstenite
                    // answers pings by itself.
                    Some(Ok(_)) => Flow::Continue,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        return Flow::Close(close::TOO_BIG, "message too big");
                    }
                    Some(Err(error)) => {
                        tracing::debug!(conn = conn.id, %error, "read error");
                        return Flow::Continue;
                    }
                }
            }
            _ = &mut liveness => {
                let deadline = last_seen + ping_timeout;
                if Instant::now() >= deadline {
                    return Flow::Close(close::PING_TIMEOUT, "ping timeout");
                }
                liveness.as_mut().reset(deadline);
                Flow::Continue
            }
        };
        if let Flow::Close(..) = flow {
            return flow;
        }
    }
}

/// Drains the queue into the socket, batching writes, and pings on an
/// interval. On close it sends what the session queued last (e.g. the NOTICE
/// that explains a close), the SHUTDOWN frame when the node is stopping,
/// and the close frame.
async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    conn: Arc<ConnHandle>,
    shutdown: Arc<Shutdown>,
    batch_size: usize,
    ping_interval: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = conn.closing().cancelled() => break,
            _ = shutdown.token().cancelled() => break,
            _ = conn.frames_ready() => {
                if write_batch(&mut sink, conn.take_frames(), batch_size).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }

    let (code, reason) = match (conn.close_reason(), shutdown.notice()) {
        (Some(reason), _) => reason,
        (None, Some(_)) => (close::GOING_AWAY, "going away"),
        (None, None) => (1000, ""),
    };
    // A slow consumer's backlog is dropped: it is why it is being closed.
    if code != close::SLOW_CONSUMER {
        let mut last = conn.take_frames();
        if code == close::GOING_AWAY {
            if let Some(notice) = shutdown.notice() {
                last.push_back(notice.frame.clone());
            }
        }
        if write_batch(&mut sink, last, batch_size).await.is_err() {
            return;
        }
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

/// Feeds the frames and flushes once per `batch_size` frames (and at the
/// end), so a burst costs few socket writes.
async fn write_batch<S>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    frames: VecDeque<Frame>,
    batch_size: usize,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if frames.is_empty() {
        return Ok(());
    }
    for (i, frame) in frames.into_iter().enumerate() {
        sink.feed(Message::Text(frame)).await?;
        if (i + 1) % batch_size == 0 {
            sink.flush().await?;
        }
    }
    sink.flush().await
}

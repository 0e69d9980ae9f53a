//! One simulator connection: the WebSocket upgrade (or the `refuse`/`http503` faults), then
//! the loop that feeds frames to the protocol [`Agent`], sends its paced output, and applies
//! the `close-after` and `stall-after` faults.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::agent::{Agent, AgentCtx};
use crate::fault::Faults;
use crate::openai::OpenAiAgent;
use crate::pacing::AudioMode;
use crate::twilio::TwilioAgent;
use crate::SimProtocol;

/// Longest a client may take to complete the WebSocket (or TLS) handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one batch of frames may take to write before the connection is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest we wait for the peer to finish a close handshake we started.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a stalled connection is held open.
const MAX_STALL: Duration = Duration::from_secs(600);
/// How often a `mute` agent pings (its only sign of life).
pub const MUTE_PING_INTERVAL: Duration = Duration::from_secs(1);

/// What every connection of one simulator shares.
#[derive(Debug)]
pub struct Shared {
    pub protocol: SimProtocol,
    pub faults: Faults,
    pub ctx: Arc<AgentCtx>,
    pub max_frame: usize,
}

impl Shared {
    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_frame))
            .max_frame_size(Some(self.max_frame))
            .max_write_buffer_size(4 * self.max_frame)
    }
}

type Ws<S> = WebSocketStream<S>;

/// Upgrades `stream` and runs the session until either side ends it or `shutdown` flips.
// The upgrade callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    conn: u64,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let refuse_upgrade = shared.faults.http503();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        tracing::debug!(%peer, path = %req.uri(), "agent-sim: upgrade request");
        if refuse_upgrade {
            return Err(service_unavailable());
        }
        Ok(resp)
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(shared.ws_config()));
    let ws = match timeout(HANDSHAKE_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "agent-sim: upgrade not completed");
            shared.ctx.stats.update(|s| s.rejected += 1);
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "agent-sim: upgrade timed out");
            shared.ctx.stats.update(|s| s.rejected += 1);
            return;
        }
    };
    shared.ctx.stats.update(|s| s.connections += 1);
    tracing::info!(%peer, conn, protocol = ?shared.protocol, "agent-sim: connected");
    let agent: Box<dyn Agent> = match shared.protocol {
        SimProtocol::TwilioMediaStreams => Box::new(TwilioAgent::new(shared.ctx.clone(), conn)),
        SimProtocol::OpenAiRealtime => Box::new(OpenAiAgent::new(shared.ctx.clone(), conn)),
    };
    match session(ws, agent, &shared, shutdown).await {
        End::Error(error) => tracing::info!(%peer, conn, %error, "agent-sim: connection failed"),
        end => tracing::info!(%peer, conn, ?end, "agent-sim: connection ended"),
    }
}

/// The `http503` fault's answer to the upgrade.
fn service_unavailable() -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some("agent-sim fault: http503".into()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Shutdown,
    FaultClose,
    FaultStall,
    Binary,
    Error(String),
}

async fn session<S>(
    mut ws: Ws<S>,
    mut agent: Box<dyn Agent>,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let opened = Instant::now();
    let close_at = shared.faults.close_after().map(|d| opened + d);
    let stall_at = shared.faults.stall_after().map(|d| opened + d);
    let stats = &shared.ctx.stats;
    let mute = shared.ctx.audio == AudioMode::Mute;
    let mut ping_at = mute.then(|| opened + MUTE_PING_INTERVAL);
    let mut replies = agent.on_open(opened);
    loop {
        let now = Instant::now();
        if ping_at.is_some_and(|t| now >= t) {
            ping_at = Some(now + MUTE_PING_INTERVAL);
            stats.update(|s| s.pings_sent += 1);
            match timeout(SEND_TIMEOUT, ws.send(Message::Ping(Vec::new().into()))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return End::Error(e.to_string()),
                Err(_) => return End::Error("ping timed out".into()),
            }
        }
        if close_at.is_some_and(|t| now >= t) {
            stats.update(|s| s.fault_closes += 1);
            close(&mut ws, CloseCode::Error, "agent-sim fault: close-after").await;
            return End::FaultClose;
        }
        if stall_at.is_some_and(|t| now >= t) {
            stats.update(|s| s.fault_stalls += 1);
            stall(ws.into_inner(), &mut shutdown).await;
            return End::FaultStall;
        }
        loop {
            let frames = agent.poll(now);
            if frames.is_empty() {
                break;
            }
            replies.extend(frames);
        }
        if let Err(e) = send_all(&mut ws, std::mem::take(&mut replies)).await {
            return End::Error(e);
        }
        let wake = [agent.next_deadline(), close_at, stall_at, ping_at].into_iter().flatten().min();
        tokio::select! {
            _ = shutdown.changed() => {
                close(&mut ws, CloseCode::Away, "agent-sim shutting down").await;
                return End::Shutdown;
            }
            () = sleep_until(wake) => {}
            msg = ws.next() => match msg {
                None => return End::PeerClosed,
                Some(Ok(Message::Text(text))) => {
                    replies = agent.on_text(Instant::now(), text.as_str());
                }
                Some(Ok(Message::Binary(_))) => {
                    stats.update(|s| s.protocol_errors += 1);
                    close(&mut ws, CloseCode::Unsupported, "binary frames are not supported").await;
                    return End::Binary;
                }
                Some(Ok(other)) => {
                    tracing::debug!(frame = ?other, "agent-sim: control frame");
                }
                Some(Err(WsError::Capacity(e))) => {
                    stats.update(|s| s.protocol_errors += 1);
                    close(&mut ws, CloseCode::Size, "frame too large").await;
                    return End::Error(e.to_string());
                }
                Some(Err(WsError::ConnectionClosed)) => return End::PeerClosed,
                Some(Err(e)) => return End::Error(e.to_string()),
            },
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => pending().await,
    }
}

async fn send_all<S>(ws: &mut Ws<S>, frames: Vec<String>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if frames.is_empty() {
        return Ok(());
    }
    let write = async {
        for frame in frames {
            ws.feed(Message::text(frame)).await?;
        }
        ws.flush().await
    };
    match timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("send timed out".into()),
    }
}

/// Starts a close handshake and waits (bounded) for the peer to finish it.
async fn close<S>(ws: &mut Ws<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let frame = CloseFrame { code, reason: reason.into() };
    let finish = async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = timeout(CLOSE_TIMEOUT, finish).await;
}

/// The `stall-after` fault: read and discard whatever arrives, answer nothing (no pongs, no
/// close), until the peer goes away, shutdown, or [`MAX_STALL`].
async fn stall<S>(mut raw: S, shutdown: &mut watch::Receiver<bool>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 4096];
    let give_up = tokio::time::sleep(MAX_STALL);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = &mut give_up => return,
            read = raw.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

//! WebSocket connections to the AI agents (tokio-tungstenite over rustls): one task per
//! connection, opened when the core asks, with its outcome, frames and closing reported back
//! as [`NetEvent`]s. Credentials travel in the upgrade headers and are never logged. We close
//! cleanly: our close frame, then the agent's reply awaited (bounded) before the TCP close.
//! Health probes of endpoints with a `health_url` are plain HTTP GETs (reqwest), reported as
//! `AiHealthy` (2xx) or `AiClosed`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::Connector;

use super::net::{NetEvent, NetTx};
use crate::core::ai::{FailureKind, DEFAULT_MAX_FRAME};

/// Frames queued toward one agent before new ones are dropped.
const WRITE_QUEUE: usize = 1024;
/// How long we wait for the agent's close frame after sending ours.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A frame the agent does not take within this is a dead connection (an agent that stops
/// reading must not hold the task, and its close, forever).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the drive loop asks of one connection.
#[derive(Debug)]
pub enum WsCommand {
    Text(String),
    Ping,
    Close,
}

/// Every agent connection of the appliance.
pub struct AiConnections {
    tls: Arc<ClientConfig>,
    /// For `health_url` probes (`None` if it could not be built: those probes then fail).
    http: Option<reqwest::Client>,
    tasks: HashMap<u64, JoinHandle<()>>,
    writers: HashMap<u64, mpsc::Sender<WsCommand>>,
}

impl AiConnections {
    /// Trusts the system's CA certificates, plus `ca_bundle` when given (PEM).
    pub fn new(ca_bundles: &[&Path]) -> Result<Self, rustls::Error> {
        let tls = super::tls::client_config(ca_bundles)?;
        let http = match health_client(tls.clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no HTTP client for agent health URLs");
                None
            }
        };
        Ok(AiConnections {
            tls: Arc::new(tls),
            http,
            tasks: HashMap::new(),
            writers: HashMap::new(),
        })
    }

    /// One health probe: GET `url`, 2xx by `deadline` is healthy.
    pub fn health_get(&mut self, conn: u64, url: String, deadline: Instant, events: NetTx) {
        let client = self.http.clone();
        let task = tokio::spawn(async move {
            let outcome = match client {
                Some(c) => {
                    let get = c.get(&url).send();
                    match tokio::time::timeout_at(deadline.into(), get).await {
                        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                        Ok(Ok(resp)) => Err(FailureKind::HttpStatus(resp.status().as_u16())),
                        Ok(Err(e)) if e.is_connect() && refused(&e) => Err(FailureKind::Refused),
                        Ok(Err(e)) if e.is_timeout() => Err(FailureKind::ConnectTimeout),
                        Ok(Err(_)) => Err(FailureKind::Dropped),
                        Err(_) => Err(FailureKind::ConnectTimeout),
                    }
                }
                None => Err(FailureKind::Protocol),
            };
            let ev = match outcome {
                Ok(()) => NetEvent::AiHealthy { conn },
                Err(kind) => NetEvent::AiClosed { conn, kind },
            };
            let _ = events.send(ev).await;
        });
        self.tasks.insert(conn, task);
    }

    /// Opens connection `conn`; the outcome arrives as `AiOpened` or `AiClosed`.
    pub fn connect(
        &mut self,
        conn: u64,
        url: String,
        headers: Vec<(String, String)>,
        deadline: Instant,
        events: NetTx,
    ) {
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            let outcome = tokio::time::timeout_at(deadline.into(), open(&url, &headers, tls)).await;
            let ws = match outcome {
                Ok(Ok(ws)) => ws,
                Ok(Err(kind)) => {
                    let _ = events.send(NetEvent::AiClosed { conn, kind }).await;
                    return;
                }
                Err(_) => {
                    let _ = events
                        .send(NetEvent::AiClosed { conn, kind: FailureKind::ConnectTimeout })
                        .await;
                    return;
                }
            };
            run_connection(conn, ws, events).await;
        });
        self.tasks.insert(conn, task);
    }

    /// The connection is open: frames for it go to `writer`.
    pub fn opened(&mut self, conn: u64, writer: mpsc::Sender<WsCommand>) {
        self.writers.insert(conn, writer);
    }

    /// The connection is gone (reported by its task).
    pub fn closed(&mut self, conn: u64) {
        self.writers.remove(&conn);
        self.tasks.remove(&conn);
    }

    pub fn send(&mut self, conn: u64, cmd: WsCommand) {
        if let Some(w) = self.writers.get(&conn) {
            if w.try_send(cmd).is_err() {
                tracing::debug!(conn, "agent writer full or gone; frame dropped");
            }
        }
    }

    /// Closes `conn` cleanly if open (or at once when its writer is full: a flooding or
    /// stuck agent is cut off), or stops its connect attempt.
    pub fn close(&mut self, conn: u64) {
        match self.writers.remove(&conn) {
            Some(w) => {
                let task = self.tasks.remove(&conn);
                if w.try_send(WsCommand::Close).is_err() {
                    if let Some(task) = task {
                        task.abort();
                    }
                }
            }
            None => {
                if let Some(task) = self.tasks.remove(&conn) {
                    task.abort();
                }
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(
    url: &str,
    headers: &[(String, String)],
    tls: Arc<ClientConfig>,
) -> Result<Ws, FailureKind> {
    let mut request = url.into_client_request().map_err(|_| FailureKind::Protocol)?;
    for (name, value) in headers {
        let (Ok(n), Ok(v)) =
            (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
        else {
            return Err(FailureKind::Protocol);
        };
        request.headers_mut().insert(n, v);
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(DEFAULT_MAX_FRAME);
    config.max_frame_size = Some(DEFAULT_MAX_FRAME);
    let connector = Some(Connector::Rustls(tls));
    match tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector)
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(classify(&e)),
    }
}

/// The HTTP client of `health_url` probes: rustls as for the WebSockets, no redirects, no
/// proxy, no credentials sent.
fn health_client(mut tls: ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("trunkguard/", env!("CARGO_PKG_VERSION"), " health-probe"))
        .build()
}

/// Whether a reqwest error was a refused TCP connection.
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

/// Reads (and drops) frames until the agent's close frame or the end of the stream.
async fn close_reply(stream: &mut futures_util::stream::SplitStream<Ws>) {
    while let Some(Ok(m)) = stream.next().await {
        if m.is_close() {
            break;
        }
    }
}

fn classify(e: &WsError) -> FailureKind {
    match e {
        WsError::Http(resp) => FailureKind::HttpStatus(resp.status().as_u16()),
        WsError::Tls(_) => FailureKind::Tls,
        WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            FailureKind::Refused
        }
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => FailureKind::Dropped,
        _ => FailureKind::Protocol,
    }
}

/// How a read error counts: frames over the size limit, bad UTF-8 or framing are the agent
/// breaking the protocol (its breaker trips); anything else is a dropped connection.
fn stream_failure(e: &WsError) -> FailureKind {
    match e {
        WsError::Capacity(_) | WsError::Protocol(_) | WsError::Utf8(_) | WsError::AttackAttempt => {
            FailureKind::Protocol
        }
        _ => FailureKind::Dropped,
    }
}

/// Sends one message within [`SEND_TIMEOUT`]; false when the connection is unusable.
async fn send(sink: &mut futures_util::stream::SplitSink<Ws, Message>, msg: Message) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, sink.send(msg)).await, Ok(Ok(())))
}

/// Pumps one open connection until it closes, then reports how.
async fn run_connection(conn: u64, ws: Ws, events: NetTx) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<WsCommand>(WRITE_QUEUE);
    if events.send(NetEvent::AiOpened { conn, writer: tx }).await.is_err() {
        return;
    }
    let kind = loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(WsCommand::Text(t)) => {
                    if !send(&mut sink, Message::text(t)).await { break FailureKind::Dropped; }
                }
                Some(WsCommand::Ping) => {
                    if !send(&mut sink, Message::Ping(Vec::new().into())).await { break FailureKind::Dropped; }
                }
                Some(WsCommand::Close) | None => {
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    if send(&mut sink, Message::Close(Some(frame))).await {
                        // the closing handshake: wait (bounded) for the agent's close frame
                        let _ = tokio::time::timeout(CLOSE_WAIT, close_reply(&mut stream)).await;
                        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.close()).await;
                    }
                    return; // we closed it: nothing to report
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let ev = NetEvent::AiText { conn, text: t.to_string() };
                    if events.send(ev).await.is_err() { return; }
                }
                Some(Ok(Message::Binary(_))) => {
                    if events.send(NetEvent::AiBinary { conn }).await.is_err() { return; }
                }
                Some(Ok(Message::Pong(_))) | Some(Ok(Message::Ping(_))) => {
                    if events.send(NetEvent::AiPong { conn }).await.is_err() { return; }
                }
                Some(Ok(Message::Close(frame))) => {
                    let clean = frame.as_ref().is_none_or(|f| f.code == CloseCode::Normal);
                    break if clean { FailureKind::CleanClose } else { FailureKind::Dropped };
                }
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(e)) => break stream_failure(&e),
                None => break FailureKind::Dropped,
            },
        }
    };
    let _ = events.send(NetEvent::AiClosed { conn, kind }).await;
}

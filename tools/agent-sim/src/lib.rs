//! `trunkguard-agent-sim`: a WebSocket server that plays a cloud AI voice agent speaking Twilio
//! Media Streams or the OpenAI Realtime API, for tests, demos and on-site drills when no cloud
//! is at hand.
//!
//! It is written from the protocols' documents and does not depend on the appliance: its
//! messages, μ-law codec and greeting reader are its own, so tests that drive the appliance
//! against it check the appliance against the protocols rather than against itself.
//!
//! - [`fault`]: the `--fault` modes (refuse, http503, close-after, stall-after, slow-first-audio).
//! - [`pacing`]: the `--audio` modes (paced, jitter, burst, odd-size, mute).
//! - [`stats`]: counters and records that in-process tests assert on.
//! - [`ulaw`], `audio`, `greeting`: G.711 μ-law, formats and VAD, the prompt-mode greeting.
//! - `player`: the output queue, timed by the audio mode.
//! - `twilio_msg`, `twilio`, `openai`: the agent side of each protocol; `conn`: one connection.
//!
//! Use [`SimServer::bind`] then [`SimServer::spawn`] (tests) or [`run`] (the binary).

mod agent;
mod audio;
mod conn;
pub mod fault;
mod greeting;
mod openai;
pub mod pacing;
mod player;
pub mod stats;
pub mod tls;
mod twilio;
mod twilio_msg;
pub mod ulaw;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

pub use fault::{Fault, FaultParseError, Faults};
pub use pacing::{AudioMode, AudioModeParseError};
pub use stats::{BargeIn, CreatedItem, SimCounters, SimStats, Truncate};

/// Largest WebSocket frame or message accepted by default (256 KiB).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024;

use agent::AgentCtx;
use conn::Shared;

/// Which protocol the simulated agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimProtocol {
    /// `twilio-media-streams` (alias `twilio`).
    TwilioMediaStreams,
    /// `openai-realtime` (alias `openai`).
    OpenAiRealtime,
}

impl FromStr for SimProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<SimProtocol, String> {
        match s {
            "twilio-media-streams" | "twilio" => Ok(SimProtocol::TwilioMediaStreams),
            "openai-realtime" | "openai" => Ok(SimProtocol::OpenAiRealtime),
            other => {
                Err(format!("unknown protocol `{other}` (twilio-media-streams, openai-realtime)"))
            }
        }
    }
}

/// What the simulated agent says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimMode {
    /// Echo the caller's audio back after the echo delay.
    #[default]
    Echo,
    /// Speak the built-in greeting at the start and after each caller utterance; caller
    /// speech over it interrupts it (Twilio `clear`, OpenAI cancelled response).
    Prompt,
}

impl FromStr for SimMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SimMode, String> {
        match s {
            "echo" => Ok(SimMode::Echo),
            "prompt" => Ok(SimMode::Prompt),
            other => Err(format!("unknown mode `{other}` (echo, prompt)")),
        }
    }
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port (see [`SimServer::local_addr`]).
    pub listen: SocketAddr,
    pub protocol: SimProtocol,
    pub mode: SimMode,
    pub faults: Vec<Fault>,
    /// How agent audio is timed and sized (`--audio`).
    pub audio: AudioMode,
    /// Seed of the `jitter` offsets (`--seed`).
    pub seed: u64,
    /// Delay before caller audio (and DTMF beeps) are echoed.
    pub echo_delay: Duration,
    /// Serve `wss://` with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest frame or message accepted; larger ones close the connection with 1009.
    pub max_frame: usize,
    /// Concurrent connections; more are dropped at once.
    pub max_connections: usize,
    /// Most audio queued for playout per connection; the excess is dropped.
    pub max_queue: Duration,
}

impl SimConfig {
    /// Echo mode, no faults, paced audio, seed 0, 200 ms echo delay, 256 KiB frames, 64 connections, 60 s queue.
    pub fn new(listen: SocketAddr, protocol: SimProtocol) -> SimConfig {
        SimConfig {
            listen,
            protocol,
            mode: SimMode::Echo,
            faults: Vec::new(),
            audio: AudioMode::Paced,
            seed: 0,
            echo_delay: Duration::from_millis(200),
            tls: None,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 64,
            max_queue: Duration::from_secs(60),
        }
    }
}

/// A bound, not yet running simulator.
pub struct SimServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
}

impl SimServer {
    /// Binds the listener and loads the greeting (prompt mode).
    pub async fn bind(cfg: SimConfig) -> io::Result<SimServer> {
        let greeting = match cfg.mode {
            SimMode::Prompt => {
                let samples = greeting::from_wav(greeting::BUILT_IN)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Some(Arc::from(samples))
            }
            SimMode::Echo => None,
        };
        let faults = Faults(cfg.faults);
        let ctx = AgentCtx {
            mode: cfg.mode,
            echo_delay: cfg.echo_delay,
            max_frame: cfg.max_frame,
            max_queue: cfg.max_queue,
            first_audio_hold: faults.slow_first_audio(),
            audio: cfg.audio,
            seed: cfg.seed,
            stats: Arc::new(SimStats::default()),
            greeting,
        };
        let listener = TcpListener::bind(cfg.listen).await?;
        Ok(SimServer {
            listener,
            shared: Arc::new(Shared {
                protocol: cfg.protocol,
                faults,
                ctx: Arc::new(ctx),
                max_frame: cfg.max_frame,
            }),
            tls: cfg.tls.map(tokio_rustls::TlsAcceptor::from),
            max_connections: cfg.max_connections.max(1),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<SimStats> {
        self.shared.ctx.stats.clone()
    }

    /// Serves until `shutdown` completes; open connections are then closed with 1001.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut next_conn = 0u64;
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Per-connection failures (e.g. reset before accept): keep serving.
                        tracing::warn!(error = %e, "agent-sim: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while tasks.try_join_next().is_some() {}
            let stats = &self.shared.ctx.stats;
            stats.update(|s| s.tcp_accepted += 1);
            if self.shared.faults.refuse() || tasks.len() >= self.max_connections {
                tracing::info!(%peer, "agent-sim: connection refused");
                stats.update(|s| s.rejected += 1);
                drop(tcp);
                continue;
            }
            next_conn += 1;
            let task = connection(tcp, peer, next_conn, self.shared.clone(), self.tls.clone());
            tasks.spawn(task(stop_rx.clone()));
        }
        tracing::info!("agent-sim: shutting down");
        let _ = stop_tx.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(3), drain).await.is_err() {
            tasks.abort_all();
        }
        Ok(())
    }

    /// Runs on a background task; stop it with [`SimHandle::shutdown`].
    pub fn spawn(self) -> io::Result<SimHandle> {
        let addr = self.local_addr()?;
        let stats = self.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = stopped.await;
        }));
        Ok(SimHandle { addr, stats, stop, task })
    }
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("listener", &self.listener)
            .field("protocol", &self.shared.protocol)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The future serving one accepted TCP connection (TLS first when configured).
fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    conn: u64,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> impl FnOnce(watch::Receiver<bool>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    move |stop| {
        Box::pin(async move {
            let _ = tcp.set_nodelay(true);
            match tls {
                None => conn::serve(tcp, peer, conn, shared, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => conn::serve(stream, peer, conn, shared, stop).await,
                        _ => {
                            tracing::info!(%peer, "agent-sim: TLS handshake failed");
                            shared.ctx.stats.update(|s| s.rejected += 1);
                        }
                    }
                }
            }
        })
    }
}

/// A simulator running on a background task.
#[derive(Debug)]
pub struct SimHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its live counters.
    pub stats: Arc<SimStats>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl SimHandle {
    /// Stops accepting, closes open connections with 1001, and waits for the server task.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn run(cfg: SimConfig, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    SimServer::bind(cfg).await?.run(shutdown).await
}

//! The thin tokio I/O shell: it binds the sockets named in the config, runs one task per
//! socket or connection, and drives the sans-IO [`Endpoint`] from a single loop that owns it.
//! The loop is the only place that reads the clock ([`clock::now`]).
//!
//! Drive loop: feed each network event with `now`, then drain `poll_output()` (transmit,
//! bind/close media ports, log events) until it returns `Timeout(t)`; sleep until `t` or the
//! next event, whichever is first; on wake-up call `handle_timeout(now)`.

mod ai;
pub mod callbacks;
pub mod calls;
pub mod clock;
pub mod conns;
pub mod http;
mod media;
pub mod mgmt;
mod net;
mod notify;
mod setup;
pub mod state;
pub mod storage;
mod stream;
pub mod tls;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

pub use setup::{endpoint_config, SetupError};

use self::media::MediaSockets;
use self::net::{NetEvent, NetTx};
use crate::config::Config;
use crate::core::endpoint::{Endpoint, Event, Input, Output, RecordPhase, Transmit};
use crate::core::sip::{Peer, Transport};

/// The drive loop wakes at least this often, so `/livez` sees it turn.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How often the drive loop publishes a fresh status snapshot (and heartbeat).
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// Events buffered between socket tasks and the drive loop.
const EVENT_QUEUE: usize = 4096;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot bind {what} {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Mgmt(#[from] mgmt::MgmtError),
}

/// Runs the appliance until ctrl-c / SIGTERM, with the state directory of [`mgmt::state_dir`].
pub async fn run(config: Config) -> Result<(), RunError> {
    let management = mgmt::Management::prepare(&config.status, &mgmt::state_dir(None))?;
    run_with(config, management).await
}

/// Runs the appliance with management (password, HTTPS) prepared by the caller.
pub async fn run_with(config: Config, management: mgmt::Management) -> Result<(), RunError> {
    let started = clock::now();
    let ep_cfg = endpoint_config(&config)?;
    let (events_tx, mut events_rx) = mpsc::channel::<NetEvent>(EVENT_QUEUE);
    let stream_policy = stream_policy(&config);
    let udp = bind_sip(&config, &events_tx, &stream_policy).await?;
    let (commands_tx, mut commands_rx) = mpsc::channel::<http::CommandRequest>(16);
    let shared = http::Shared::with_commands(started, commands_tx);
    let (status_tx, mut status_rx) =
        mpsc::channel::<tokio::sync::oneshot::Sender<crate::core::endpoint::EndpointStatus>>(16);
    shared.set_status_source(status_tx);
    shared.set_state_db(open_state_db(&config).await);
    let call_log = start_call_log(&config);
    let callbacks = start_callbacks(&config);
    shared.set_storage(storage::StorageSources {
        call_log: call_log.as_ref().map(|l| l.counters().clone()),
        callbacks: callbacks.as_ref().map(|c| c.counters().clone()),
    });
    shared.set_connections(http::ConnCounters {
        sip: stream_policy.conns.clone(),
        http: conns::Conns::http(&config.connections),
    });
    serve_http(&config, shared.clone(), &management).await?;
    let mut shell = Shell {
        endpoint: Endpoint::new(ep_cfg.clone(), started, rand::random()),
        udp,
        streams: HashMap::new(),
        media: MediaSockets::new(ep_cfg.media_ip),
        ai: ai::AiConnections::new(&setup::ca_bundles(&config))
            .map_err(tls::TlsSetupError::Rustls)?,
        events: events_tx,
        stream_policy,
        call_log,
        callbacks,
    };
    tracing::info!(listen = ?ep_cfg.listen, status = %config.status.listen, "trunkguard running");
    let mut notifier = notify::Notifier::from_env();
    let mut last_status: Option<std::time::Instant> = None;
    let mut stale = false;
    notifier.ready();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let now = clock::now();
        let deadline = shell.drain();
        // the status snapshot is rebuilt a few times a second, not for every packet, and never
        // left more than STATUS_EVERY behind
        if last_status.is_none_or(|t| now.saturating_duration_since(t) >= STATUS_EVERY) {
            shared.beat(now, shell.endpoint.status(now));
            last_status = Some(now);
            stale = false;
        }
        notifier.alive(now);
        let mut sleep_until = deadline.min(now + MAX_SLEEP);
        if let (true, Some(t)) = (stale, last_status) {
            sleep_until = sleep_until.min(t + STATUS_EVERY);
        }
        stale = true;
        tokio::select! {
            ev = events_rx.recv() => match ev {
                Some(ev) => shell.on_net_event(ev),
                None => break,
            },
            _ = tokio::time::sleep_until(sleep_until.into()) => shell.endpoint.handle_timeout(clock::now()),
            Some(reply) = status_rx.recv() => {
                let now = clock::now();
                let _ = reply.send(shell.endpoint.status(now));
            }
            Some((command, reply)) = commands_rx.recv() => {
                let _ = reply.send(shell.endpoint.admin(command));
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                notifier.stopping();
                break;
            }
        }
    }
    Ok(())
}

/// The state database, written once at start so a bad `[state] dir` is logged at once (the
/// appliance still runs: `/readyz` reports the failure until the disk takes writes).
async fn open_state_db(config: &Config) -> Arc<state::StateDb> {
    let db = Arc::new(state::StateDb::new(config.state.dir.clone()));
    let probe = db.clone();
    match tokio::task::spawn_blocking(move || probe.check_writable(clock::unix_ms())).await {
        Ok(Ok(())) => tracing::info!(path = %db.path().display(), "state database ready"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "state database not writable; /readyz reports not ready")
        }
        Err(e) => tracing::error!(error = %e, "state database check failed"),
    }
    db
}

/// The call-record writer thread; without it calls go on unrecorded.
fn start_call_log(config: &Config) -> Option<calls::CallLog> {
    let retention =
        calls::Retention { keep_days: config.state.keep_days, max_rows: config.state.max_rows };
    match calls::CallLog::start(config.state.dir.clone(), retention) {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the call record writer; calls are not recorded");
            None
        }
    }
}

/// The callback writer thread and webhook worker; without them requests are only logged.
fn start_callbacks(config: &Config) -> Option<callbacks::Callbacks> {
    let retention =
        calls::Retention { keep_days: config.state.keep_days, max_rows: config.state.max_rows };
    match callbacks::Callbacks::start(config.state.dir.clone(), &config.callback, retention) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "callback requests are not stored");
            None
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Who may hold a SIP stream connection: carriers' sources, their proxies privileged.
fn stream_policy(config: &Config) -> stream::StreamPolicy {
    let acl = crate::core::carrier::acl::InboundAcl::new(
        config.carriers.iter().enumerate().map(|(i, c)| (i, c.inbound_from.clone())),
    );
    let proxies = config.carriers.iter().filter_map(|c| c.proxy.map(|p| p.addr.ip())).collect();
    stream::StreamPolicy {
        acl: Arc::new(acl),
        proxies: Arc::new(proxies),
        conns: conns::Conns::sip(&config.connections),
        timeouts: conns::Timeouts::of(&config.connections),
    }
}

/// Binds every `[sip] listen` address and starts its reader or acceptor.
async fn bind_sip(
    config: &Config,
    events: &NetTx,
    policy: &stream::StreamPolicy,
) -> Result<HashMap<SocketAddr, Arc<UdpSocket>>, RunError> {
    let mut udp = HashMap::new();
    let acceptor = match &config.sip.tls {
        Some(t) => Some(TlsAcceptor::from(tls::server_config(&tls::TlsFiles {
            cert: &t.cert,
            key: &t.key,
            client_ca: t.client_ca.as_deref(),
            require_client_cert: t.require_client_cert,
        })?)),
        None => None,
    };
    for listen in &config.sip.listen {
        let addr = listen.addr;
        let bind_err = |source| RunError::Bind { what: "SIP", addr, source };
        match listen.transport {
            Transport::Udp => {
                let socket = udp::bind(addr).await.map_err(bind_err)?;
                udp::spawn_reader(socket.clone(), events.clone());
                udp.insert(addr, socket);
            }
            Transport::Tcp => {
                let l = TcpListener::bind(addr).await.map_err(bind_err)?;
                stream::spawn_tcp_acceptor(l, events.clone(), policy.clone());
            }
            Transport::Tls => {
                let l = TcpListener::bind(addr).await.map_err(bind_err)?;
                match &acceptor {
                    Some(a) => {
                        stream::spawn_tls_acceptor(l, a.clone(), events.clone(), policy.clone())
                    }
                    None => return Err(SetupError::TlsWithoutCert.into()),
                }
            }
        }
    }
    Ok(udp)
}

/// The status server, over HTTPS (with HSTS) when `[status] tls` is set; handlers see the
/// client address. Connections are capped and timed out ([`http::serve`]).
async fn serve_http(
    config: &Config,
    shared: Arc<http::Shared>,
    management: &mgmt::Management,
) -> Result<(), RunError> {
    let addr = config.status.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| RunError::Bind {
        what: "HTTP",
        addr,
        source,
    })?;
    let mut app = http::auth::with_auth(http::app(shared.clone()), management.auth());
    let tls = management.tls.as_ref().map(|tls| TlsAcceptor::from(tls.clone()));
    if tls.is_some() {
        app = http::serve::with_hsts(app);
    }
    let conns = shared
        .connections()
        .map(|c| c.http.clone())
        .unwrap_or_else(|| conns::Conns::http(&config.connections));
    let timeouts = conns::Timeouts::of(&config.connections);
    tokio::spawn(http::serve::serve(listener, app, tls, conns, timeouts));
    Ok(())
}

/// The drive loop's state: the endpoint and the sockets it speaks through.
struct Shell {
    endpoint: Endpoint,
    udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    streams: HashMap<Peer, mpsc::Sender<Vec<u8>>>,
    media: MediaSockets,
    ai: ai::AiConnections,
    events: NetTx,
    /// Who may hold a SIP stream connection (outbound connections count too).
    stream_policy: stream::StreamPolicy,
    /// The call-record writer thread (`None` if it could not be started).
    call_log: Option<calls::CallLog>,
    /// Callback requests: writer thread and webhook worker (`None` if it could not be started).
    callbacks: Option<callbacks::Callbacks>,
}

impl Shell {
    fn on_net_event(&mut self, ev: NetEvent) {
        let now = clock::now();
        match ev {
            NetEvent::Sip { peer, data } => {
                self.endpoint.handle_input(now, Input::Sip { peer, data: &data })
            }
            NetEvent::Rtp { port, from, data } => {
                self.endpoint.handle_input(now, Input::Rtp { local_port: port, from, data: &data })
            }
            NetEvent::Connected { peer, writer } => {
                self.streams.insert(peer, writer);
            }
            NetEvent::Disconnected { peer } => {
                self.streams.remove(&peer);
            }
            NetEvent::Unreachable { peer } => {
                self.endpoint.handle_input(now, Input::SipUnreachable { peer })
            }
            NetEvent::AiOpened { conn, writer } => {
                self.ai.opened(conn, writer);
                self.endpoint.handle_input(now, Input::AiOpened { conn });
            }
            NetEvent::AiHealthy { conn } => {
                self.endpoint.handle_input(now, Input::AiOpened { conn })
            }
            NetEvent::AiClosed { conn, kind } => {
                self.ai.closed(conn);
                self.endpoint.handle_input(now, Input::AiClosed { conn, kind });
            }
            NetEvent::AiText { conn, text } => {
                self.endpoint.handle_input(now, Input::AiText { conn, text: &text })
            }
            NetEvent::AiBinary { conn } => {
                self.endpoint.handle_input(now, Input::AiBinary { conn })
            }
            NetEvent::AiPong { conn } => self.endpoint.handle_input(now, Input::AiPong { conn }),
        }
    }

    /// Performs every queued output; returns the endpoint's next deadline.
    fn drain(&mut self) -> std::time::Instant {
        loop {
            match self.endpoint.poll_output() {
                Output::Transmit(Transmit::Sip { peer, data }) => self.send_sip(peer, data),
                Output::Transmit(Transmit::Rtp { local_port, to, data }) => {
                    self.media.send(local_port, to, &data)
                }
                Output::Transmit(Transmit::AiText { conn, text }) => {
                    self.ai.send(conn, ai::WsCommand::Text(text))
                }
                Output::Transmit(Transmit::AiPing { conn }) => {
                    self.ai.send(conn, ai::WsCommand::Ping)
                }
                Output::Event(ev) => self.on_event(ev),
                Output::Timeout(t) => return t,
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::MediaOpen { port } => {
                self.media.open(port, self.events.clone());
                self.media.open(port + 1, self.events.clone());
            }
            Event::MediaClose { port } => {
                self.media.close(port);
                self.media.close(port + 1);
            }
            Event::Dtmf { call_id, digit } => tracing::info!(%call_id, %digit, "DTMF received"),
            Event::AiConnect { conn, url, headers, deadline } => {
                tracing::debug!(conn, %url, "connecting to agent");
                self.ai.connect(conn, url, headers, deadline, self.events.clone());
            }
            Event::AiClose { conn } => self.ai.close(conn),
            Event::AiHealthGet { conn, url, deadline } => {
                self.ai.health_get(conn, url, deadline, self.events.clone())
            }
            Event::CallAnswered { call_id, carrier } => {
                tracing::info!(%call_id, %carrier, "call answered")
            }
            Event::CallEnded { call_id, reason } => tracing::info!(%call_id, reason, "call ended"),
            Event::CallRecord(record) => match &self.call_log {
                // the answer's record is queued before its 200 OK: wait (bounded) for the commit
                Some(log) if record.phase == RecordPhase::Answered => {
                    log.submit_and_wait(record, clock::unix_ms(), calls::ANSWER_WAIT);
                }
                Some(log) => log.submit(record, clock::unix_ms()),
                None => {
                    tracing::debug!(call_id = %record.call_id, "no call record writer; record not kept")
                }
            },
            Event::CallbackRequested(req) => match &self.callbacks {
                // never waits: the writer thread commits it, then the worker delivers it
                Some(c) => {
                    c.submit(req, clock::unix_ms());
                }
                None => {
                    tracing::error!(call_id = %req.call_id, caller = %req.caller, called = %req.called,
                    reason = req.reason.as_str(), "callback requested but not stored (no callback writer)")
                }
            },
            Event::CarrierState { carrier, up } => tracing::info!(%carrier, up, "carrier state"),
            Event::Registration { carrier, registered } => {
                tracing::info!(%carrier, registered, "registration")
            }
        }
    }

    fn send_sip(&mut self, peer: Peer, data: Vec<u8>) {
        match peer.transport {
            Transport::Udp => self.send_udp(peer.addr, &data),
            Transport::Tcp | Transport::Tls => match self.streams.get(&peer) {
                Some(w) => {
                    if w.try_send(data).is_err() {
                        tracing::debug!(%peer.addr, "stream writer full or closed; message dropped");
                    }
                }
                None if peer.transport == Transport::Tcp => {
                    let policy = self.stream_policy.clone();
                    stream::spawn_tcp_connect(peer.addr, data, self.events.clone(), policy);
                }
                None => tracing::debug!(%peer.addr, "no TLS connection to peer; message dropped"),
            },
        }
    }

    /// Sends from the UDP socket of the same address family (the first one bound).
    fn send_udp(&self, to: SocketAddr, data: &[u8]) {
        let socket = self
            .udp
            .iter()
            .find(|(a, _)| a.is_ipv4() == to.is_ipv4())
            .or_else(|| self.udp.iter().next())
            .map(|(_, s)| s);
        match socket {
            Some(s) => {
                if let Err(e) = s.try_send_to(data, to) {
                    tracing::debug!(%to, error = %e, "udp send failed");
                    if unreachable(&e) {
                        let peer = Peer { transport: Transport::Udp, addr: to };
                        let _ = self.events.try_send(NetEvent::Unreachable { peer });
                    }
                }
            }
            None => tracing::debug!(%to, "no UDP socket to send from"),
        }
    }
}

/// A send error that says the peer cannot be reached (not a full buffer).
fn unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | NetworkUnreachable | HostUnreachable | AddrNotAvailable)
}

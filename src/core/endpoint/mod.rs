//! The endpoint: the appliance's SIP user agent as one sans-IO state machine. It owns the
//! transaction layer, every call (dialog, RTP port, prompt) and every carrier link (probes,
//! registration), and turns datagrams and timeouts into datagrams, events and a next deadline.
//!
//! Drive loop (after str0m): feed [`Endpoint::handle_input`] or [`Endpoint::handle_timeout`],
//! then call [`Endpoint::poll_output`] until it returns [`Output::Timeout`].

mod admin;
mod ai;
mod ai_probe;
mod bridge;
mod build;
mod call;
mod calls;
mod carrier;
mod carrier_drive;
mod human;
mod human_media;
mod ladder;
mod outbound;
mod ports;
mod record;
mod status;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

pub use admin::{AdminCommand, AdminError, AdminState};
pub use ai_probe::AiEndpointStatus;
pub use bridge::{AiEndpointSettings, AiHub};
pub use build::host_port;
pub use call::CallState;
pub use carrier::{CarrierSettings, TransferMode};
pub use outbound::{OutboundSettings, OutboundStatus};
pub use ports::PortPool;
pub use record::{CallEnd, CallQuality, CallRecord, HumanRecord, RecordPhase};
pub use status::{ActiveCall, CallsStatus, CarrierStatus, Counters, EndpointStatus, FailureRecord};

use self::call::Call;
use self::carrier::CarrierLink;
use crate::core::carrier::acl::InboundAcl;
use crate::core::carrier::probe::ProbeOutput;
use crate::core::carrier::register::RegisterOutput;
use crate::core::ladder::{LadderConfig, LadderPrompts};
pub use crate::core::limits::Limits;
use crate::core::limits::{Budget, RateLimiter};
use crate::core::media::codec::opus::OpusTuning;
use crate::core::media::codec::pipeline::AiFormat;
use crate::core::media::jitter::JitterConfig;
use crate::core::media::prompt::Prompt;
use crate::core::media::session::{MediaEvent, MediaLatency, MediaParams, MediaSession};
use crate::core::sdp::{self, AnswerParams, SdpError};
use crate::core::sip::dialog::{random_token, Dialog};
use crate::core::sip::message::{Method, Request, Response, SipMessage};
use crate::core::sip::transaction::{new_branch, ClientTxId, TransactionLayer, TxEvent};
use crate::core::sip::validate::{check_request_with, Policy};
use crate::core::sip::{parse, Peer, SipHeaders, Transport};
use crate::core::timer::{SipTimers, Timer, TimerTable};

/// Everything the endpoint needs to know, in core terms (the I/O shell maps the config file).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Local SIP addresses per transport (Via and Contact use them).
    pub listen: Vec<(Transport, SocketAddr)>,
    pub user_agent: String,
    /// Address written in SDP answers and where RTP sockets bind.
    pub media_ip: IpAddr,
    pub rtp_ports: (u16, u16),
    pub carriers: Vec<CarrierSettings>,
    /// The high-demand prompt and the ladder's others (menu, confirmation, apology, ...).
    pub prompts: LadderPrompts,
    /// The degradation ladder below the agents (`[fallback]`).
    pub ladder: LadderConfig,
    pub timers: SipTimers,
    /// Delay between 180 Ringing and 200 OK.
    pub answer_delay: Duration,
    /// Calls are hung up after this long whatever happens.
    pub max_call_duration: Duration,
    /// Silence after the prompt ends, before BYE.
    pub hangup_after_prompt: Duration,
    /// Jitter buffer bounds and tuning for every call.
    pub jitter: JitterConfig,
    /// Opus encoder complexity and bitrate.
    pub opus: OpusTuning,
    /// The audio format calls hand to (and take from) the AI side.
    pub ai_format: AiFormat,
    /// Wall-clock time at an instant, in NTP format, for RTCP sender reports.
    pub ntp_anchor: Option<(Instant, u64)>,
    /// The AI agents calls are bridged to; `None`: every call gets the canned prompt.
    pub ai: Option<AiHub>,
    /// The short prompt that covers a mid-call failover ("one moment, please").
    pub filler: Prompt,
    /// Load shedding: calls in progress and per-source request rate.
    pub limits: Limits,
    /// Outbound INVITEs (carrier failover) and the human of the fallback ladder.
    pub outbound: OutboundSettings,
}

/// Something that happened on the network, handed in by the I/O shell.
#[derive(Debug)]
pub enum Input<'a> {
    /// A SIP datagram, or one framed message from a stream, from `peer`.
    Sip { peer: Peer, data: &'a [u8] },
    /// An RTP or RTCP datagram received on our media port `local_port`.
    Rtp { local_port: u16, from: SocketAddr, data: &'a [u8] },
    /// The WebSocket `conn` to an agent is open.
    AiOpened { conn: u64 },
    /// The WebSocket `conn` failed to open, or it closed (how, in `kind`).
    AiClosed { conn: u64, kind: crate::core::ai::FailureKind },
    /// A text frame from the agent on `conn`.
    AiText { conn: u64, text: &'a str },
    /// A binary frame on `conn` (not part of either protocol).
    AiBinary { conn: u64 },
    /// A pong (or any sign of life) on `conn`.
    AiPong { conn: u64 },
    /// SIP could not be sent to `peer` (TCP connect refused, network unreachable): client
    /// transactions towards it fail now instead of at Timer B.
    SipUnreachable { peer: Peer },
}

/// What the endpoint wants the I/O shell to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // drained one at a time; boxing would allocate per packet
pub enum Output {
    Transmit(Transmit),
    Event(Event),
    /// Nothing more to do until this instant (or until new input arrives).
    Timeout(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    Sip {
        peer: Peer,
        data: Vec<u8>,
    },
    Rtp {
        local_port: u16,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// A text frame for the agent on WebSocket `conn`.
    AiText {
        conn: u64,
        text: String,
    },
    /// A WebSocket ping on `conn`.
    AiPing {
        conn: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bind the RTP socket on this (even) port and RTCP on the one above, before the next
    /// transmit that names them.
    MediaOpen {
        port: u16,
    },
    /// The call on this port is over; close its RTP and RTCP sockets.
    MediaClose {
        port: u16,
    },
    /// The caller pressed a key (RFC 4733).
    Dtmf {
        call_id: String,
        digit: char,
    },
    CallAnswered {
        call_id: String,
        carrier: String,
    },
    CallEnded {
        call_id: String,
        reason: &'static str,
    },
    /// The durable record of an answered call, as of one step (see [`record`]): persist it.
    /// The answer's record is queued before its 200 OK.
    CallRecord(CallRecord),
    /// The ladder decided the caller is to be called back: store it durably and deliver it.
    CallbackRequested(crate::core::callback::CallbackRequest),
    CarrierState {
        carrier: String,
        up: bool,
    },
    Registration {
        carrier: String,
        registered: bool,
    },
    /// Open a WebSocket `conn` to `url` with `headers`; report `AiOpened` or `AiClosed` (with
    /// `ConnectTimeout` after `deadline`).
    AiConnect {
        conn: u64,
        url: String,
        headers: Vec<(String, String)>,
        deadline: Instant,
    },
    /// Close WebSocket `conn` with code 1000 (after sending what was queued for it).
    AiClose {
        conn: u64,
    },
    /// A health probe: HTTP GET `url`; report a 2xx as `AiOpened`, anything else (or nothing
    /// by `deadline`) as `AiClosed`.
    AiHealthGet {
        conn: u64,
        url: String,
        deadline: Instant,
    },
}

/// What a client transaction was started for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Probe {
        carrier: usize,
        probe_id: u64,
    },
    Register {
        carrier: usize,
        attempt_id: u64,
    },
    Bye {
        call: u64,
    },
    /// Attempt `attempt` of call `call`'s outbound leg to the human (its INVITE).
    Outbound {
        call: u64,
        attempt: u32,
    },
    /// The REFER that hands call `call` to the human.
    Refer {
        call: u64,
    },
    /// BYE of call `call`'s human leg.
    HumanBye {
        call: u64,
    },
}

pub struct Endpoint {
    cfg: EndpointConfig,
    tx: TransactionLayer,
    rng: SmallRng,
    out: VecDeque<Output>,
    calls: HashMap<u64, Call>,
    next_call: u64,
    ports: PortPool,
    port_to_call: HashMap<u16, u64>,
    carriers: Vec<CarrierLink>,
    acl: InboundAcl,
    pending: HashMap<ClientTxId, Pending>,
    counters: Counters,
    last_now: Instant,
    ai: Option<AiHub>,
    /// Which call owns which agent connection.
    ai_conns: HashMap<u64, u64>,
    /// Health probes of the primary and standby agent endpoints.
    ai_probes: Vec<(crate::core::ai::Endpoint, ai_probe::AiProbe)>,
    latencies: crate::core::metrics::Latencies,
    /// Operator switches: draining, and carriers taken out of service (by index).
    draining: bool,
    carriers_out: Vec<bool>,
    rate: RateLimiter,
    failures: VecDeque<(Instant, &'static str, String)>,
    /// Human legs, outbound carrier state and attempts.
    human: outbound::HumanState,
}

/// Failures kept for the status page.
const RECENT_FAILURES: usize = 20;

impl Endpoint {
    pub fn new(cfg: EndpointConfig, now: Instant, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let acl = InboundAcl::new(
            cfg.carriers
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.inbound_from.clone()))
                .collect::<Vec<_>>(),
        );
        let carriers = cfg
            .carriers
            .iter()
            .map(|c| {
                let call_id = format!("{}@trunkguard", random_token(&mut rng));
                CarrierLink::new(c.clone(), now, call_id, random_token(&mut rng))
            })
            .collect();
        let cfg_ai = cfg.ai.clone();
        let carriers_len = cfg.carriers.len();
        let limits = cfg.limits;
        let cfg_outbound = cfg.outbound.clone();
        Endpoint {
            tx: TransactionLayer::new(cfg.timers),
            ports: PortPool::new(cfg.rtp_ports.0, cfg.rtp_ports.1),
            cfg,
            rng,
            out: VecDeque::new(),
            calls: HashMap::new(),
            next_call: 1,
            port_to_call: HashMap::new(),
            carriers,
            acl,
            pending: HashMap::new(),
            counters: Counters::default(),
            last_now: now,
            ai_probes: ai::probes_for(cfg_ai.as_ref(), now),
            ai: cfg_ai,
            ai_conns: HashMap::new(),
            latencies: Default::default(),
            draining: false,
            carriers_out: vec![false; carriers_len],
            rate: RateLimiter::new(&limits),
            failures: VecDeque::new(),
            human: outbound::HumanState::new(&cfg_outbound, carriers_len),
        }
    }

    /// Feeds one input. Outputs are queued for [`Endpoint::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.last_now = now;
        match input {
            Input::Sip { peer, data } => self.handle_sip(now, peer, data),
            Input::Rtp { local_port, from, data } => self.handle_rtp(now, local_port, from, data),
            Input::SipUnreachable { peer } => self.on_unreachable(now, peer),
            other => self.handle_ai_input(now, other),
        }
        self.pump(now);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        self.tx.handle_timeout(now);
        self.carrier_timeouts(now);
        let due: Vec<u64> = self
            .calls
            .values()
            .filter(|c| {
                [c.timers.next_timeout(), c.ladder_timeout()]
                    .into_iter()
                    .flatten()
                    .any(|t| t <= now)
            })
            .map(|c| c.id)
            .collect();
        for id in due {
            self.call_timeouts(now, id);
        }
        let media_due: Vec<u64> = self
            .calls
            .values()
            .filter(|c| c.media.poll_timeout().is_some_and(|t| t <= now))
            .map(|c| c.id)
            .collect();
        for id in media_due {
            if let Some(call) = self.calls.get_mut(&id) {
                call.media.handle_timeout(now);
            }
            self.drain_media(now, id);
        }
        self.bridge_timeouts(now);
        self.breaker_timeouts(now);
        self.probe_timeouts(now);
        self.human_timeouts(now);
        self.pump(now);
    }

    /// The next thing to do: a transmit, an event, or the deadline to be woken at.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.poll_timeout().unwrap_or(self.last_now + Duration::from_secs(3600)))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let calls = self
            .calls
            .values()
            .flat_map(|c| {
                [
                    c.timers.next_timeout(),
                    c.media.poll_timeout(),
                    c.bridge.as_ref().and_then(|b| b.poll_timeout()),
                    c.ladder_timeout(),
                ]
            })
            .flatten();
        let carriers = self.carriers.iter().filter_map(CarrierLink::poll_timeout);
        let probes = self.ai_probes.iter().filter_map(|(_, p)| p.poll_timeout());
        calls
            .chain(carriers)
            .chain(probes)
            .chain(self.breaker_poll_timeout())
            .chain(self.tx.poll_timeout())
            .chain(self.human_poll_timeout())
            .min()
    }

    /// A snapshot for the status page and tests.
    pub fn status(&self, now: Instant) -> EndpointStatus {
        EndpointStatus {
            carriers: self
                .carriers
                .iter()
                .zip(&self.carriers_out)
                .map(|(c, out)| {
                    let mut s = CarrierStatus::of(
                        &c.settings.name,
                        c.prober.as_ref(),
                        c.registrar.as_ref(),
                        now,
                    );
                    self.outbound_carrier_status(now, &mut s);
                    if *out {
                        s.state = "out-of-service";
                    }
                    s
                })
                .collect(),
            calls: CallsStatus {
                active: self.calls.len(),
                answered_total: self.counters.calls_answered,
                rtp_packets_received_total: self.counters.rtp_received,
            },
            counters: self.counters.clone(),
            outbound: self.outbound_status(),
            ai_reachable: self.ai_reachable(now, Duration::from_secs(10)),
            admin: self.admin_state(),
            ai_failovers: self.ai.as_ref().map_or(0, |h| h.failovers),
            ai_fallbacks: self.ai.as_ref().map_or(0, |h| h.fallbacks),
            latency: self.latencies.snapshot(),
            ai_endpoints: self.ai_status(now),
            active_calls: self
                .calls
                .values()
                .map(|c| ActiveCall {
                    call_id: c.dialog.call_id.clone(),
                    carrier: self.cfg.carriers[c.carrier].name.clone(),
                    caller: c.dialog.remote_uri.uri.clone(),
                    caller_name: c.dialog.remote_uri.display_name(),
                    state: format!("{:?}", c.state),
                    codec: c.negotiated.codec.name.encoding_name().to_string(),
                    duration_ms: now.saturating_duration_since(c.started).as_millis() as u64,
                    ai_endpoint: c
                        .bridge
                        .as_ref()
                        .and_then(|b| b.live_endpoint())
                        .and_then(|e| self.ai.as_ref().and_then(|h| h.settings(e)))
                        .map(|s| s.name.clone()),
                    media: c.media.stats(),
                    counters: c.media.counters(),
                })
                .collect(),
            recent_failures: self
                .failures
                .iter()
                .rev()
                .map(|(at, kind, detail)| FailureRecord {
                    ms_ago: now.saturating_duration_since(*at).as_millis() as u64,
                    kind,
                    detail: detail.clone(),
                })
                .collect(),
        }
    }

    /// Remembers something that went wrong for the status page (bounded).
    pub(super) fn note_failure(&mut self, now: Instant, kind: &'static str, detail: String) {
        if self.failures.len() == RECENT_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back((now, kind, detail));
    }

    // ---- SIP input ---------------------------------------------------------------------

    fn handle_sip(&mut self, now: Instant, peer: Peer, data: &[u8]) {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive
        }
        let allowed = self.acl.classify(peer.addr.ip()).is_some();
        match parse::parse_message(data) {
            Ok(SipMessage::Request(req)) if allowed => {
                if self.rate_limited(now, peer, &req) {
                    return;
                }
                self.tx.handle_request(now, peer, req)
            }
            Ok(SipMessage::Request(_)) => self.counters.dropped_unknown_source += 1,
            // a response from outside every carrier's networks reaches the transactions only
            // when it answers a request we sent to that very address
            Ok(SipMessage::Response(resp))
                if allowed || self.tx.expects_response_from(peer.addr.ip(), &resp) =>
            {
                self.tx.handle_response(now, peer, resp)
            }
            Ok(SipMessage::Response(_)) => self.counters.dropped_unknown_source += 1,
            Err(err) => self.bad_message(peer, data, &err, allowed),
        }
    }

    /// The per-source rate limits on new out-of-dialog requests (never ACK, CANCEL or requests
    /// inside a call); INVITEs have their own budget. An INVITE over the limit gets 503 with
    /// Retry-After; anything else is dropped. True when the request was refused.
    fn rate_limited(&mut self, now: Instant, peer: Peer, req: &Request) -> bool {
        let in_dialog = req.to_hdr().is_ok_and(|t| t.tag().is_some());
        let budget = if req.method == Method::Invite { Budget::Invite } else { Budget::Other };
        if in_dialog
            || matches!(req.method, Method::Ack | Method::Cancel)
            || self.rate.allow(now, peer.addr.ip(), budget)
        {
            return false;
        }
        self.counters.rate_limited += 1;
        if req.method == Method::Invite {
            let mut resp = self.response(req, 503, None);
            resp.headers.push("Retry-After", self.cfg.limits.retry_after.as_secs().to_string());
            self.tx.send_stateless(peer, SipMessage::Response(resp));
        }
        true
    }

    /// A message that does not parse: requests get 400 (or 505) when the headers needed to
    /// address a response can be recovered; responses and hopeless garbage are dropped.
    fn bad_message(&mut self, peer: Peer, data: &[u8], err: &parse::ParseError, allowed: bool) {
        self.counters.sip_parse_errors += 1;
        tracing::debug!(%peer.addr, error = %err, "unparseable SIP message");
        if !allowed || data.starts_with(b"SIP/") {
            return;
        }
        let Some(headers) = parse::parse_headers_lenient(data) else {
            return;
        };
        if data.starts_with(b"ACK ") {
            return; // never answer an ACK
        }
        let mut resp = build::response_to(
            &headers,
            err.status(),
            Some(&random_token(&mut self.rng)),
            &self.cfg.user_agent,
        );
        resp.headers.push("Warning", format!("399 trunkguard \"{}\"", sanitize(&err.to_string())));
        self.tx.send_stateless(peer, SipMessage::Response(resp));
    }

    /// RTP arrives on the call's even port, RTCP on the odd one above it.
    fn handle_rtp(&mut self, now: Instant, local_port: u16, from: SocketAddr, data: &[u8]) {
        let rtp_port = local_port & !1;
        if self.human_rtp(now, local_port, from, data) {
            return;
        }
        let Some(call) = self.port_to_call.get(&rtp_port).and_then(|id| self.calls.get_mut(id))
        else {
            self.counters.rtp_invalid += 1;
            return;
        };
        let before = call.media.counters();
        if local_port == rtp_port {
            call.media.on_rtp(now, from, data);
        } else {
            call.media.on_rtcp(now, from, data);
        }
        let after = call.media.counters();
        self.counters.rtp_received += after.rtp_received - before.rtp_received;
        self.counters.media_refused_source += (after.rtp_wrong_source - before.rtp_wrong_source)
            + (after.rtcp_wrong_source - before.rtcp_wrong_source);
        self.counters.rtp_invalid += (after.rtp_invalid - before.rtp_invalid)
            + (after.rtp_unknown_payload_type - before.rtp_unknown_payload_type)
            + (after.rtcp_invalid - before.rtcp_invalid);
        let id = call.id;
        self.drain_media(now, id);
    }

    /// Moves transaction-layer output into our queue and dispatches its events.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some((peer, data)) = self.tx.poll_transmit() {
                self.out.push_back(Output::Transmit(Transmit::Sip { peer, data }));
                progressed = true;
            }
            if let Some(ev) = self.tx.poll_event() {
                self.on_tx_event(now, ev);
                progressed = true;
            }
            if self.carrier_outputs(now) {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_tx_event(&mut self, now: Instant, ev: TxEvent) {
        match ev {
            TxEvent::Request { peer, req } => self.on_request(now, peer, req),
            TxEvent::Response { id, resp } => self.on_response(now, id, resp),
            TxEvent::Timeout { id } => self.on_client_timeout(now, id),
            TxEvent::AckTimeout { call_id } => {
                tracing::debug!(%call_id, "no ACK for a final response");
            }
        }
    }

    fn on_request(&mut self, now: Instant, peer: Peer, req: Request) {
        if req.method == Method::Ack {
            self.on_ack(now, &req);
            return;
        }
        if let Err(rejection) = check_request_with(&req, &Policy::endpoint()) {
            let mut resp = self.response(&req, rejection.status, None);
            resp.reason = rejection.reason.clone();
            for h in &rejection.headers {
                resp.headers.push(h.name.clone(), h.value.clone());
            }
            self.send_response(now, resp);
            return;
        }
        let in_dialog = req.to_hdr().is_ok_and(|t| t.tag().is_some());
        match req.method {
            Method::Cancel => self.on_cancel(now, &req),
            Method::Invite if !in_dialog => self.on_invite(now, peer, req),
            Method::Options => {
                let resp = self.options_response(&req);
                self.send_response(now, resp);
            }
            _ if in_dialog => self.on_in_dialog(now, req),
            Method::Bye | Method::Update | Method::Info | Method::Prack => {
                let resp = self.response(&req, 481, None);
                self.send_response(now, resp);
            }
            Method::Other(_) => {
                let mut resp = self.response(&req, 501, None);
                resp.headers.push("Allow", build::ALLOW);
                self.send_response(now, resp);
            }
            _ => {
                let mut resp = self.response(&req, 405, None);
                resp.headers.push("Allow", build::ALLOW);
                self.send_response(now, resp);
            }
        }
    }

    // ---- helpers -----------------------------------------------------------------------

    fn response(&self, req: &Request, status: u16, to_tag: Option<&str>) -> Response {
        build::response_to(&req.headers, status, to_tag, &self.cfg.user_agent)
    }

    fn options_response(&mut self, req: &Request) -> Response {
        let tag = random_token(&mut self.rng);
        let mut resp = self.response(req, 200, Some(&tag));
        resp.headers.push("Allow", build::ALLOW);
        resp.headers.push("Accept", build::ACCEPT);
        resp
    }

    fn send_response(&mut self, now: Instant, resp: Response) {
        if let Err(e) = self.tx.send_response(now, resp) {
            tracing::debug!(error = %e, "response matched no server transaction");
        }
    }

    fn local_addr(&self, transport: Transport) -> SocketAddr {
        self.cfg
            .listen
            .iter()
            .find(|(t, _)| *t == transport)
            .or_else(|| self.cfg.listen.first())
            .map(|(_, a)| *a)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    fn contact_uri(&self, transport: Transport) -> String {
        let local = build::host_port(self.local_addr(transport));
        match transport {
            Transport::Udp => format!("sip:trunkguard@{local}"),
            Transport::Tcp => format!("sip:trunkguard@{local};transport=tcp"),
            Transport::Tls => format!("sips:trunkguard@{local}"),
        }
    }

    fn rng_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut self.rng)
    }
}

/// The expiry the registrar granted: our Contact's `expires` parameter, else the Expires header.
fn granted_expires(resp: &Response, contact_user: &str) -> Option<u32> {
    let from_contact = resp
        .headers
        .get_all("Contact")
        .flat_map(|v| crate::core::sip::headers::params::split_outside_quotes(v, ','))
        .filter_map(|c| crate::core::sip::headers::NameAddr::parse(c).ok())
        .find(|c| c.uri.contains(&format!("sip:{contact_user}@")))
        .and_then(|c| c.params.value("expires").and_then(|e| e.parse().ok()));
    from_contact.or_else(|| resp.headers.get("Expires").and_then(|e| e.trim().parse().ok()))
}

/// A duration in NTP's 32.32 fixed-point format.
fn ntp_duration(d: Duration) -> u64 {
    (d.as_secs() << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Keeps a reason printable inside a quoted Warning text.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').take(120).collect()
}

#[cfg(test)]
mod tests;

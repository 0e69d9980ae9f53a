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
mod carrier;
mod ports;
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
pub use carrier::CarrierSettings;
pub use ports::PortPool;
pub use status::{ActiveCall, CallsStatus, CarrierStatus, Counters, EndpointStatus};

use self::call::Call;
use self::carrier::CarrierLink;
use crate::core::carrier::acl::InboundAcl;
use crate::core::carrier::probe::ProbeOutput;
use crate::core::carrier::register::RegisterOutput;
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
    pub prompt: Prompt,
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
}

/// What the endpoint wants the I/O shell to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    Event(Event),
    /// Nothing more to do until this instant (or until new input arrives).
    Timeout(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    Sip { peer: Peer, data: Vec<u8> },
    Rtp { local_port: u16, to: SocketAddr, data: Vec<u8> },
    /// A text frame for the agent on WebSocket `conn`.
    AiText { conn: u64, text: String },
    /// A WebSocket ping on `conn`.
    AiPing { conn: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bind the RTP socket on this (even) port and RTCP on the one above, before the next
    /// transmit that names them.
    MediaOpen { port: u16 },
    /// The call on this port is over; close its RTP and RTCP sockets.
    MediaClose { port: u16 },
    /// The caller pressed a key (RFC 4733).
    Dtmf { call_id: String, digit: char },
    CallAnswered { call_id: String, carrier: String },
    CallEnded { call_id: String, reason: &'static str },
    CarrierState { carrier: String, up: bool },
    Registration { carrier: String, registered: bool },
    /// Open a WebSocket `conn` to `url` with `headers`; report `AiOpened` or `AiClosed` (with
    /// `ConnectTimeout` after `deadline`).
    AiConnect { conn: u64, url: String, headers: Vec<(String, String)>, deadline: Instant },
    /// Close WebSocket `conn` with code 1000 (after sending what was queued for it).
    AiClose { conn: u64 },
}

/// What a client transaction was started for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Probe { carrier: usize, probe_id: u64 },
    Register { carrier: usize, attempt_id: u64 },
    Bye { call: u64 },
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
}

impl Endpoint {
    pub fn new(cfg: EndpointConfig, now: Instant, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let acl = InboundAcl::new(cfg.carriers.iter().enumerate().map(|(i, c)| (i, c.inbound_from.clone())).collect::<Vec<_>>());
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
        }
    }

    /// Feeds one input. Outputs are queued for [`Endpoint::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.last_now = now;
        match input {
            Input::Sip { peer, data } => self.handle_sip(now, peer, data),
            Input::Rtp { local_port, from, data } => self.handle_rtp(now, local_port, from, data),
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
            .filter(|c| c.timers.next_timeout().is_some_and(|t| t <= now))
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
        self.probe_timeouts(now);
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
            .flat_map(|c| [c.timers.next_timeout(), c.media.poll_timeout(), c.bridge.as_ref().and_then(|b| b.poll_timeout())])
            .flatten();
        let carriers = self.carriers.iter().filter_map(CarrierLink::poll_timeout);
        let probes = self.ai_probes.iter().filter_map(|(_, p)| p.poll_timeout());
        calls.chain(carriers).chain(probes).chain(self.tx.poll_timeout()).min()
    }

    /// A snapshot for the status page and tests.
    pub fn status(&self, now: Instant) -> EndpointStatus {
        EndpointStatus {
            carriers: self
                .carriers
                .iter()
                .zip(&self.carriers_out)
                .map(|(c, out)| {
                    let mut s = CarrierStatus::of(&c.settings.name, c.prober.as_ref(), c.registrar.as_ref(), now);
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
                    media: c.media.stats(),
                    counters: c.media.counters(),
                })
                .collect(),
        }
    }

    // ---- SIP input ---------------------------------------------------------------------

    fn handle_sip(&mut self, now: Instant, peer: Peer, data: &[u8]) {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive
        }
        let allowed = self.acl.classify(peer.addr.ip()).is_some();
        match parse::parse_message(data) {
            Ok(SipMessage::Request(req)) if allowed => self.tx.handle_request(now, peer, req),
            Ok(SipMessage::Request(_)) => self.counters.dropped_unknown_source += 1,
            Ok(SipMessage::Response(resp)) => self.tx.handle_response(now, peer, resp),
            Err(err) => self.bad_message(peer, data, &err, allowed),
        }
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
        let mut resp = build::response_to(&headers, err.status(), Some(&random_token(&mut self.rng)), &self.cfg.user_agent);
        resp.headers.push("Warning", format!("399 trunkguard \"{}\"", sanitize(&err.to_string())));
        self.tx.send_stateless(peer, SipMessage::Response(resp));
    }

    /// RTP arrives on the call's even port, RTCP on the odd one above it.
    fn handle_rtp(&mut self, now: Instant, local_port: u16, from: SocketAddr, data: &[u8]) {
        let rtp_port = local_port & !1;
        let Some(call) = self.port_to_call.get(&rtp_port).and_then(|id| self.calls.get_mut(id)) else {
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
        self.counters.rtp_invalid += (after.rtp_invalid - before.rtp_invalid)
            + (after.rtp_wrong_source - before.rtp_wrong_source)
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

    // ---- inbound INVITE ----------------------------------------------------------------

    fn on_invite(&mut self, now: Instant, peer: Peer, req: Request) {
        let Some(carrier) = self.acl.classify(peer.addr.ip()) else {
            return; // filtered before the transaction layer; kept as a second line of defence
        };
        if let Some(existing) = self.find_call_by_invite(&req) {
            tracing::debug!(call = existing, "INVITE for an existing call absorbed");
            return;
        }
        if self.refused_by_admin(carrier) {
            let mut resp = self.response(&req, 503, None);
            resp.headers.push("Retry-After", "30");
            self.send_response(now, resp);
            return;
        }
        let Some(port) = self.ports.allocate() else {
            let resp = self.response(&req, 503, None);
            self.send_response(now, resp);
            return;
        };
        let params = AnswerParams {
            local_ip: self.cfg.media_ip,
            local_port: port,
            session_id: self.rng_u32() as u64,
            session_version: 1,
        };
        let (negotiated, answer) = match self.negotiate(&req, &params) {
            Ok(ok) => ok,
            Err(status) => {
                self.ports.release(port);
                let resp = self.response(&req, status, None);
                self.send_response(now, resp);
                return;
            }
        };
        let local_tag = random_token(&mut self.rng);
        let dialog = match Dialog::new_uas(&req, &local_tag, peer, self.rng_u32() & 0x7fff) {
            Ok(d) => d,
            Err(_) => {
                self.ports.release(port);
                let resp = self.response(&req, 400, None);
                self.send_response(now, resp);
                return;
            }
        };
        let id = self.next_call;
        self.next_call += 1;
        let invite_branch = req.top_via().ok().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default();
        let media = match self.media_session(now, &negotiated, &dialog.call_id) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up media for the negotiated codec");
                self.ports.release(port);
                let resp = self.response(&req, 488, None);
                self.send_response(now, resp);
                return;
            }
        };
        let mut timers = TimerTable::default();
        if !self.cfg.answer_delay.is_zero() {
            timers.set(Timer::Answer, now + self.cfg.answer_delay);
        }
        timers.set(Timer::Hangup, now + self.cfg.max_call_duration);
        let call = Call {
            id,
            carrier,
            state: CallState::Ringing,
            dialog,
            invite: req,
            invite_branch,
            local_port: port,
            negotiated,
            answer_sdp: answer,
            pending_2xx: None,
            media,
            timers,
            started: now,
            bridge: None,
        };
        self.out.push_back(Output::Event(Event::MediaOpen { port }));
        self.port_to_call.insert(port, id);
        for status in [100, 180] {
            let resp = self.response(&call.invite, status, Some(&call.dialog.local_tag));
            self.send_response(now, resp);
        }
        self.calls.insert(id, call);
        self.counters.calls_offered += 1;
        if self.ai.is_some() {
            // ringing covers the agent setup; the call is answered when an agent is live or
            // the fallback takes it
            self.start_bridge(now, id);
        } else if self.cfg.answer_delay.is_zero() {
            self.answer_call(now, id);
        }
    }

    /// SDP offer/answer for an INVITE: its offer, or ours when it has none.
    fn negotiate(&mut self, req: &Request, params: &AnswerParams) -> Result<(sdp::Negotiated, String), u16> {
        if req.body.is_empty() {
            return Err(488); // offer-less INVITE: not supported by the foundation yet
        }
        sdp::answer(&req.body, params).map_err(|e| match e {
            SdpError::NoCommonCodec => 488,
            _ => 488,
        })
    }

    fn media_session(&mut self, now: Instant, negotiated: &sdp::Negotiated, call_id: &str) -> Result<MediaSession, crate::core::media::session::MediaError> {
        let ntp_now = self
            .cfg
            .ntp_anchor
            .map(|(at, ntp)| ntp.wrapping_add(ntp_duration(now.saturating_duration_since(at))))
            .unwrap_or(0);
        let params = MediaParams {
            negotiated: negotiated.clone(),
            ai_format: self.cfg.ai_format,
            jitter: self.cfg.jitter.clone(),
            opus: self.cfg.opus,
            ssrc: self.rng_u32(),
            initial_seq: self.rng_u32() as u16,
            initial_timestamp: self.rng_u32(),
            cname: format!("trunkguard-{}", sanitize(call_id)),
            ntp_now,
            seed: rand::RngCore::next_u64(&mut self.rng),
        };
        MediaSession::new(params, now)
    }

    fn find_call_by_invite(&self, req: &Request) -> Option<u64> {
        let call_id = req.call_id().ok()?;
        let from_tag = req.from_hdr().ok()?.tag().map(str::to_string);
        self.calls
            .values()
            .find(|c| c.dialog.call_id == call_id && c.dialog.remote_tag == from_tag)
            .map(|c| c.id)
    }

    fn answer_call(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get(&id) else { return };
        if call.state != CallState::Ringing {
            return;
        }
        let mut ok = self.response(&call.invite, 200, Some(&call.dialog.local_tag));
        ok.headers.push("Contact", format!("<{}>", self.contact_uri(call.dialog.peer.transport)));
        ok.headers.push("Allow", build::ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = call.answer_sdp.clone().into_bytes();
        let carrier = self.cfg.carriers[call.carrier].name.clone();
        let call_id = call.dialog.call_id.clone();
        self.latencies.call_setup.record(now.saturating_duration_since(call.started));
        self.send_response(now, ok.clone());
        let t1 = self.cfg.timers.t1;
        if let Some(call) = self.calls.get_mut(&id) {
            call.state = CallState::Answered;
            call.arm_2xx(now, ok, t1);
        }
        self.counters.calls_answered += 1;
        self.out.push_back(Output::Event(Event::CallAnswered { call_id, carrier }));
    }

    fn on_ack(&mut self, now: Instant, ack: &Request) {
        let Some(id) = self.find_dialog(ack) else {
            return; // stray ACK: nothing to answer
        };
        let prompt = self.cfg.prompt.clone();
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.acknowledge() || call.state != CallState::Answered {
            return; // ACK of a re-INVITE, or a retransmitted ACK
        }
        call.state = CallState::Confirmed;
        if !call.bridge.as_ref().is_some_and(|b| b.is_live()) {
            call.media.play_prompt(prompt);
        }
        call.media.start(now);
        call.media.handle_timeout(now);
        self.drain_media(now, id);
    }

    fn on_cancel(&mut self, now: Instant, cancel: &Request) {
        let branch = cancel.top_via().ok().and_then(|v| v.branch().map(str::to_string));
        let call_id = cancel.call_id().ok().map(str::to_string);
        let found = self
            .calls
            .values()
            .find(|c| Some(&c.dialog.call_id) == call_id.as_ref() && Some(&c.invite_branch) == branch.as_ref())
            .map(|c| (c.id, c.state));
        let status = if found.is_some() { 200 } else { 481 };
        let resp = self.response(cancel, status, None);
        self.send_response(now, resp);
        if let Some((id, CallState::Ringing)) = found {
            if let Some(call) = self.calls.get(&id) {
                let resp = self.response(&call.invite, 487, Some(&call.dialog.local_tag));
                self.send_response(now, resp);
            }
            self.end_call(id, "cancelled");
        }
    }

    // ---- in-dialog requests ------------------------------------------------------------

    fn find_dialog(&self, req: &Request) -> Option<u64> {
        self.calls.values().find(|c| c.dialog.matches(req)).map(|c| c.id)
    }

    fn on_in_dialog(&mut self, now: Instant, req: Request) {
        let Some(id) = self.find_dialog(&req) else {
            let resp = self.response(&req, 481, None);
            self.send_response(now, resp);
            return;
        };
        let cseq_ok = self.calls.get_mut(&id).map(|c| c.dialog.accept_remote_cseq(&req).is_ok());
        if cseq_ok != Some(true) {
            let resp = self.response(&req, 500, None);
            self.send_response(now, resp);
            return;
        }
        match req.method {
            Method::Bye => {
                let resp = self.response(&req, 200, None);
                self.send_response(now, resp);
                self.end_call(id, "remote BYE");
            }
            Method::Invite | Method::Update => self.on_reoffer(now, id, req),
            Method::Info | Method::Options => {
                let resp = self.response(&req, 200, None);
                self.send_response(now, resp);
            }
            _ => {
                let mut resp = self.response(&req, 405, None);
                resp.headers.push("Allow", build::ALLOW);
                self.send_response(now, resp);
            }
        }
    }

    /// re-INVITE or UPDATE: answer a new offer on the same RTP port (or repeat our last
    /// answer when there is no offer). A re-INVITE's 2xx is retransmitted until its ACK.
    fn on_reoffer(&mut self, now: Instant, id: u64, req: Request) {
        let Some(call) = self.calls.get(&id) else { return };
        let params = AnswerParams {
            local_ip: self.cfg.media_ip,
            local_port: call.local_port,
            session_id: 1,
            session_version: 2,
        };
        let renegotiated = if req.body.is_empty() { None } else { Some(sdp::answer(&req.body, &params)) };
        let (status, body) = match renegotiated {
            Some(Ok((neg, answer))) => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.media.set_remote(neg.remote_rtp);
                    call.negotiated = neg;
                    call.answer_sdp = answer.clone();
                }
                (200, Some(answer))
            }
            Some(Err(_)) => (488, None),
            None => (200, Some(call.answer_sdp.clone())),
        };
        let Some(call) = self.calls.get(&id) else { return };
        let mut resp = self.response(&req, status, Some(&call.dialog.local_tag));
        if status == 200 {
            resp.headers.push("Contact", format!("<{}>", self.contact_uri(call.dialog.peer.transport)));
            if let Some(body) = body {
                resp.headers.push("Content-Type", "application/sdp");
                resp.body = body.into_bytes();
            }
        }
        self.send_response(now, resp.clone());
        if status == 200 && req.method == Method::Invite {
            let t1 = self.cfg.timers.t1;
            if let Some(call) = self.calls.get_mut(&id) {
                call.arm_2xx(now, resp, t1);
            }
        }
    }

    // ---- call timers and hang-up -------------------------------------------------------

    fn call_timeouts(&mut self, now: Instant, id: u64) {
        let expired = match self.calls.get_mut(&id) {
            Some(call) => call.timers.take_expired(now),
            None => return,
        };
        for timer in expired {
            match timer {
                Timer::Answer => self.answer_call(now, id),
                Timer::Retransmit2xx => self.retransmit_2xx(now, id),
                Timer::AckWait => self.hang_up(now, id, "no ACK"),
                Timer::Hangup => self.hang_up(now, id, "prompt played"),
                _ => {}
            }
        }
    }

    fn retransmit_2xx(&mut self, now: Instant, id: u64) {
        let t2 = self.cfg.timers.t2;
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.dialog.peer.transport.is_reliable() {
            return;
        }
        if let Some(resp) = call.retransmit_2xx(now, t2) {
            let peer = call.dialog.peer;
            self.tx.send_stateless(peer, SipMessage::Response(resp));
        }
    }

    /// Sends what the call's media queued and handles its events.
    fn drain_media(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let port = call.local_port;
        while let Some(t) = call.media.poll_transmit() {
            let local_port = if t.rtcp { port + 1 } else { port };
            if !t.rtcp {
                self.counters.rtp_sent += 1;
            }
            self.out.push_back(Output::Transmit(Transmit::Rtp { local_port, to: t.to, data: t.data }));
        }
        for latency in call.media.take_latencies() {
            match latency {
                MediaLatency::RtpToAi(d) => self.latencies.rtp_to_ai.record(d),
                MediaLatency::AiToRtp(d) => self.latencies.ai_to_rtp.record(d),
            }
        }
        let mut digits = Vec::new();
        while let Some(ev) = call.media.poll_event() {
            match ev {
                // the filler ending during a failover is not the end of the call
                MediaEvent::PromptFinished if call.bridge.as_ref().is_some_and(|b| !b.is_fallback()) => {}
                MediaEvent::PromptFinished => call.timers.set(Timer::Hangup, now + self.cfg.hangup_after_prompt),
                MediaEvent::Dtmf { digit, .. } => {
                    tracing::info!(call_id = %call.dialog.call_id, %digit, "DTMF");
                    let call_id = call.dialog.call_id.clone();
                    self.out.push_back(Output::Event(Event::Dtmf { call_id, digit }));
                    digits.push(digit);
                }
            }
        }
        self.feed_bridge(now, id, &digits);
    }

    /// Sends BYE for an answered call (or 487/end for one still ringing).
    fn hang_up(&mut self, now: Instant, id: u64, reason: &'static str) {
        let Some(call) = self.calls.get(&id) else { return };
        match call.state {
            CallState::Ending => return,
            CallState::Ringing => {
                let resp = self.response(&call.invite, 480, Some(&call.dialog.local_tag));
                self.send_response(now, resp);
                self.end_call(id, reason);
                return;
            }
            CallState::Answered | CallState::Confirmed => {}
        }
        let transport = call.dialog.peer.transport;
        let via = build::via(transport, self.local_addr(transport), &new_branch(&mut self.rng));
        let contact = self.contact_uri(transport);
        let user_agent = self.cfg.user_agent.clone();
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.state = CallState::Ending;
        call.timers.stop_all();
        call.media.close(now, reason);
        self.close_bridge(now, id);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let bye = call.dialog.new_request(Method::Bye, via, &contact, &user_agent);
        let peer = call.dialog.peer;
        self.drain_media(now, id);
        let Some(call) = self.calls.get(&id) else { return };
        tracing::info!(call_id = %call.dialog.call_id, reason, "hanging up");
        let tx = self.tx.send_request(now, peer, bye);
        self.pending.insert(tx, Pending::Bye { call: id });
    }

    fn end_call(&mut self, id: u64, reason: &'static str) {
        self.close_bridge(self.last_now, id);
        let Some(call) = self.calls.remove(&id) else { return };
        self.port_to_call.remove(&call.local_port);
        self.ports.release(call.local_port);
        self.counters.calls_ended += 1;
        self.out.push_back(Output::Event(Event::MediaClose { port: call.local_port }));
        self.out.push_back(Output::Event(Event::CallEnded {
            call_id: call.dialog.call_id,
            reason,
        }));
    }

    // ---- client transaction results ----------------------------------------------------

    fn on_response(&mut self, now: Instant, id: ClientTxId, resp: Response) {
        let Some(pending) = self.pending.get(&id).copied() else {
            return;
        };
        if resp.is_provisional() {
            return;
        }
        self.pending.remove(&id);
        match pending {
            Pending::Probe { carrier, probe_id } => {
                if let Some(p) = self.carriers[carrier].prober.as_mut() {
                    p.on_response(now, probe_id, resp.status);
                }
            }
            Pending::Register { carrier, attempt_id } => self.on_register_response(now, carrier, attempt_id, &resp),
            Pending::Bye { call } => self.end_call(call, "local BYE"),
        }
    }

    fn on_client_timeout(&mut self, now: Instant, id: ClientTxId) {
        let Some(pending) = self.pending.remove(&id) else { return };
        match pending {
            Pending::Probe { carrier, probe_id } => {
                if let Some(p) = self.carriers[carrier].prober.as_mut() {
                    p.on_transport_error(now, probe_id);
                }
            }
            Pending::Register { carrier, attempt_id } => {
                let rng = &mut self.rng;
                if let Some(r) = self.carriers[carrier].registrar.as_mut() {
                    r.on_timeout(now, attempt_id, rng);
                }
            }
            Pending::Bye { call } => self.end_call(call, "BYE timed out"),
        }
    }

    fn on_register_response(&mut self, now: Instant, carrier: usize, attempt_id: u64, resp: &Response) {
        let granted = granted_expires(resp, &self.carriers[carrier].settings.contact_user);
        let www = resp.headers.get("WWW-Authenticate").map(str::to_string);
        let proxy = resp.headers.get("Proxy-Authenticate").map(str::to_string);
        let min_expires = resp.headers.get("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok());
        let rng = &mut self.rng;
        if let Some(r) = self.carriers[carrier].registrar.as_mut() {
            let granted = if resp.status == 423 { min_expires } else { granted };
            r.on_response(now, attempt_id, resp.status, www.as_deref(), proxy.as_deref(), granted, rng);
        }
    }

    // ---- carriers ----------------------------------------------------------------------

    fn carrier_timeouts(&mut self, now: Instant) {
        let rng = &mut self.rng;
        for link in &mut self.carriers {
            if let Some(p) = link.prober.as_mut() {
                if p.poll_timeout().is_some_and(|t| t <= now) {
                    p.handle_timeout(now);
                }
            }
            if let Some(r) = link.registrar.as_mut() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now, rng);
                }
            }
        }
    }

    /// Turns prober and registrar outputs into requests and events. True if anything happened.
    fn carrier_outputs(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        for i in 0..self.carriers.len() {
            while let Some(out) = self.carriers[i].prober.as_mut().and_then(|p| p.poll_output()) {
                progressed = true;
                match out {
                    ProbeOutput::SendProbe { probe_id } => self.send_probe(now, i, probe_id),
                    ProbeOutput::StateChanged { up } => {
                        let carrier = self.carriers[i].settings.name.clone();
                        tracing::info!(%carrier, up, "carrier state changed");
                        self.out.push_back(Output::Event(Event::CarrierState { carrier, up }));
                    }
                }
            }
            while let Some(out) = self.carriers[i].registrar.as_mut().and_then(|r| r.poll_output()) {
                progressed = true;
                self.on_register_output(now, i, out);
            }
        }
        progressed
    }

    fn send_probe(&mut self, now: Instant, carrier: usize, probe_id: u64) {
        let Some(proxy) = self.carriers[carrier].settings.proxy else { return };
        let local = self.local_addr(proxy.transport);
        let via = build::via(proxy.transport, local, &new_branch(&mut self.rng));
        let call_id = format!("{}@trunkguard", random_token(&mut self.rng));
        let tag = random_token(&mut self.rng);
        let Some(req) = self.carriers[carrier].options(local, via, &call_id, &tag, &self.cfg.user_agent) else {
            return;
        };
        let tx = self.tx.send_request(now, proxy, req);
        self.pending.insert(tx, Pending::Probe { carrier, probe_id });
    }

    fn on_register_output(&mut self, now: Instant, carrier: usize, out: RegisterOutput) {
        let name = self.carriers[carrier].settings.name.clone();
        match out {
            RegisterOutput::SendRegister { attempt_id, expires, authorization } => {
                let Some(proxy) = self.carriers[carrier].settings.proxy else { return };
                let local = self.local_addr(proxy.transport);
                let via = build::via(proxy.transport, local, &new_branch(&mut self.rng));
                let ua = self.cfg.user_agent.clone();
                if let Some(req) = self.carriers[carrier].register(local, via, expires, authorization, &ua) {
                    let tx = self.tx.send_request(now, proxy, req);
                    self.pending.insert(tx, Pending::Register { carrier, attempt_id });
                }
            }
            RegisterOutput::Registered { expires } => {
                tracing::info!(carrier = %name, ?expires, "registered");
                self.out.push_back(Output::Event(Event::Registration { carrier: name, registered: true }));
            }
            RegisterOutput::Failed { reason } => {
                tracing::warn!(carrier = %name, %reason, "registration failed");
                self.out.push_back(Output::Event(Event::Registration { carrier: name, registered: false }));
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

//! One call's bridge to the AI agent: setup (primary, else standby, retries inside the budget,
//! else fallback), the live session, and mid-call failover with the conversation carried over.
//! It speaks in [`BridgeOutput`]s; the endpoint turns them into WebSocket work for the shell
//! and into media actions (play, flush, filler, fallback) for the call. What the operator must
//! read about (a refused attempt, a switch of endpoint, an agent lost mid-call) comes out as
//! [`BridgeNote`]s with the cause and the timing; the endpoint logs them under the call id and
//! the endpoint's configured name.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use crate::core::ai::selector::{
    Action, AiBreakers, AttemptId, Endpoint, SelectorConfig, SetupAttempt,
};
use crate::core::ai::session::{
    AiAudio, AiEvent, AiProtocol, AiSession, CallInfo, SessionConfig, Transcript,
};
use crate::core::ai::{FailureKind, ProtocolError};
use crate::core::media::codec::pipeline::AiFormat;
use crate::core::media::g711::Law;
use crate::core::media::session::CallerFrame;

/// One configured agent endpoint, in core terms. `Debug` never shows header values (they
/// carry credentials).
#[derive(Clone)]
pub struct AiEndpointSettings {
    pub name: String,
    pub protocol: AiProtocol,
    /// ws:// or wss:// URL (the shell connects; the core only names it).
    pub url: String,
    /// Extra HTTP headers for the upgrade (credentials included; never logged).
    pub headers: Vec<(String, String)>,
    /// When set, the health probe is an HTTP GET of this URL instead of a WebSocket.
    pub health_url: Option<String>,
}

impl std::fmt::Debug for AiEndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AiEndpointSettings")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("url", &self.url)
            .field("headers", &names)
            .field("health_url", &self.health_url)
            .finish()
    }
}

/// AI settings shared by every call: the endpoints, their breakers, and the policies.
#[derive(Debug, Clone)]
pub struct AiHub {
    pub primary: AiEndpointSettings,
    pub standby: Option<AiEndpointSettings>,
    pub breakers: AiBreakers,
    pub selector: SelectorConfig,
    pub session: SessionConfig,
    /// The audio format calls exchange with the agents (both endpoints share it).
    pub format: AiFormat,
    /// Counted mid-call failovers and fallbacks, for the status page.
    pub failovers: u64,
    pub fallbacks: u64,
}

impl AiHub {
    pub fn settings(&self, endpoint: Endpoint) -> Option<&AiEndpointSettings> {
        match endpoint {
            Endpoint::Primary => Some(&self.primary),
            Endpoint::Standby => self.standby.as_ref(),
        }
    }
}

/// What the endpoint must do for the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeOutput {
    /// Open a WebSocket `conn` to `endpoint`; report the outcome by `deadline`.
    Connect { conn: u64, endpoint: Endpoint, deadline: Instant },
    /// Send a text frame on `conn`.
    Text { conn: u64, text: String },
    /// Send a WebSocket ping on `conn`.
    Ping { conn: u64 },
    /// Close `conn` (code 1000).
    Close { conn: u64 },
    /// An agent is live (first time, or again after a failover).
    Live { endpoint: Endpoint, resumed: bool },
    /// Agent audio for the caller, in the hub's PCM format.
    Audio(Vec<i16>),
    /// Barge-in: flush agent audio now.
    Clear,
    /// The agent went away mid-call: cover the gap with the filler prompt.
    Filler,
    /// The first audio of a live agent: how long after it went live, and (after a failover)
    /// how long after the failure was detected.
    FirstAudio { after_live: std::time::Duration, after_failure: Option<std::time::Duration> },
    /// No agent within the budget: the fallback ladder takes the call. `last` is the last
    /// failed attempt (`None`: no endpoint admitted one, every breaker open); `attempts` counts
    /// the connections tried.
    Fallback { last: Option<(Endpoint, FailureKind)>, attempts: u32 },
    /// Something for the operator's log and the status page.
    Note(BridgeNote),
    /// The agent closed cleanly: it has finished with the call.
    AgentDone,
}

/// What the operator should read about a call's bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeNote {
    /// A setup attempt to `endpoint` failed (refused, timed out, an HTTP error) after `took`.
    AttemptFailed { endpoint: Endpoint, kind: FailureKind, took: Duration },
    /// Setup moves on to the other endpoint because `from` just failed (how: `kind`).
    Switch { from: Endpoint, to: Endpoint, kind: FailureKind },
    /// The live agent at `endpoint` was lost after `live_for`: filler, then re-bridging.
    Lost { endpoint: Endpoint, kind: FailureKind, live_for: Duration },
}

/// A connection being opened during setup.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    conn: u64,
    id: AttemptId,
    endpoint: Endpoint,
    started: Instant,
}

#[allow(clippy::large_enum_variant)] // one per call, moved rarely: boxing buys nothing
enum Phase {
    Setup { attempt: SetupAttempt, in_flight: Option<InFlight> },
    Live { endpoint: Endpoint, conn: u64, session: AiSession, since: Instant },
    Fallback,
    Closed,
}

pub struct Bridge {
    info: CallInfo,
    phase: Phase,
    resume: Option<Transcript>,
    played: u64,
    next_conn: u64,
    conn_base: u64,
    /// When the last failover was detected (for measuring the gap until audio).
    pub failover_detected_at: Option<Instant>,
    /// When the current agent went live, until its first audio.
    live_at: Option<Instant>,
    /// The last failed attempt or lost agent, and how (for the switch and fallback causes).
    last_failure: Option<(Endpoint, FailureKind)>,
    /// Connections tried since the last setup began.
    attempts: u32,
    /// Mid-call failovers of this call so far (the second and later back off).
    failovers: u32,
}

/// Backoff of repeated mid-call failovers: the first re-bridges at once, the n-th (n ≥ 2)
/// waits a jittered delay in [c/2, c] with c = min(MAX, BASE·2^(n-2)): 0.25-0.5 s, 0.5-1 s, ...
/// up to 4-8 s, so a call with a broken agent makes a few reconnects, never dozens.
const FAILOVER_BACKOFF_BASE: Duration = Duration::from_millis(500);
const FAILOVER_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// The delay before re-bridging after failover number `n` (1-based) of one call.
pub fn failover_delay(n: u32, rng: &mut impl RngCore) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (n - 2).min(16);
    let ceiling = FAILOVER_BACKOFF_BASE.saturating_mul(factor).min(FAILOVER_BACKOFF_MAX);
    let half = ceiling / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.gen_range(0..=nanos))
}

impl Bridge {
    /// Starts setup at once. `conn_base` makes connection ids unique across calls.
    pub fn start(
        now: Instant,
        info: CallInfo,
        conn_base: u64,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> (Bridge, Vec<BridgeOutput>) {
        let mut bridge = Bridge {
            info,
            phase: Phase::Setup { attempt: SetupAttempt::new(now, hub.selector), in_flight: None },
            resume: None,
            played: 0,
            next_conn: 0,
            conn_base,
            failover_detected_at: None,
            live_at: None,
            last_failure: None,
            attempts: 0,
            failovers: 0,
        };
        let mut out = Vec::new();
        bridge.poll_setup(now, hub, rng, &mut out);
        (bridge, out)
    }

    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live { .. })
    }

    /// The endpoint the call is bridged to right now.
    pub fn live_endpoint(&self) -> Option<Endpoint> {
        match self.phase {
            Phase::Live { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    pub fn is_fallback(&self) -> bool {
        matches!(self.phase, Phase::Fallback)
    }

    fn poll_setup(
        &mut self,
        now: Instant,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
        out: &mut Vec<BridgeOutput>,
    ) {
        let Phase::Setup { attempt, in_flight } = &mut self.phase else { return };
        let action = attempt.poll(now, &mut hub.breakers, rng);
        let stale = match action {
            Action::Connect { .. } | Action::Fallback => in_flight.take(),
            Action::Wait(_) | Action::Connected(_) => None,
        };
        if let Some(old) = stale {
            // the selector gave up on it (its deadline, or the budget's end): drop it
            out.push(BridgeOutput::Close { conn: old.conn });
            self.attempt_failed(now, old, FailureKind::ConnectTimeout, out);
        }
        match action {
            Action::Connect { id, endpoint, deadline } => {
                self.next_conn += 1;
                self.attempts += 1;
                let conn = self.conn_base + self.next_conn;
                if let Some((from, kind)) = self.last_failure.filter(|(from, _)| *from != endpoint)
                {
                    out.push(BridgeOutput::Note(BridgeNote::Switch { from, to: endpoint, kind }));
                }
                if let Phase::Setup { in_flight, .. } = &mut self.phase {
                    *in_flight = Some(InFlight { conn, id, endpoint, started: now });
                }
                out.push(BridgeOutput::Connect { conn, endpoint, deadline });
            }
            Action::Wait(_) => {}
            Action::Connected(endpoint) => {
                let conn = match &self.phase {
                    Phase::Setup { in_flight: Some(f), .. } => f.conn,
                    _ => 0,
                };
                self.go_live(now, endpoint, conn, hub, out);
            }
            Action::Fallback => {
                hub.fallbacks += 1;
                self.phase = Phase::Fallback;
                out.push(BridgeOutput::Fallback {
                    last: self.last_failure,
                    attempts: self.attempts,
                });
            }
        }
    }

    /// Notes a failed setup attempt and remembers it for the next switch or the fallback.
    fn attempt_failed(
        &mut self,
        now: Instant,
        f: InFlight,
        kind: FailureKind,
        out: &mut Vec<BridgeOutput>,
    ) {
        self.last_failure = Some((f.endpoint, kind));
        let took = now.saturating_duration_since(f.started);
        out.push(BridgeOutput::Note(BridgeNote::AttemptFailed {
            endpoint: f.endpoint,
            kind,
            took,
        }));
    }

    fn go_live(
        &mut self,
        now: Instant,
        endpoint: Endpoint,
        conn: u64,
        hub: &mut AiHub,
        out: &mut Vec<BridgeOutput>,
    ) {
        let Some(settings) = hub.settings(endpoint) else { return };
        let resumed = self.resume.is_some();
        let mut session = AiSession::new(
            hub.session,
            settings.protocol.clone(),
            self.info.clone(),
            self.resume.take(),
            now,
        );
        let events = session.on_open(now);
        self.played = 0;
        self.live_at = Some(now);
        self.last_failure = None;
        self.phase = Phase::Live { endpoint, conn, session, since: now };
        out.push(BridgeOutput::Live { endpoint, resumed });
        self.on_events(now, events, hub, out);
        self.drain(out);
    }

    /// The WebSocket `conn` opened.
    pub fn on_opened(
        &mut self,
        now: Instant,
        conn: u64,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        if let Phase::Setup { attempt, in_flight: Some(f) } = &mut self.phase {
            if f.conn == conn {
                attempt.on_connect_result(now, f.id, Ok(()), &mut hub.breakers, rng);
                self.poll_setup(now, hub, rng, &mut out);
                return out;
            }
        }
        out.push(BridgeOutput::Close { conn }); // a late connection nobody wants
        out
    }

    /// The WebSocket `conn` failed to open, or closed.
    pub fn on_failed(
        &mut self,
        now: Instant,
        conn: u64,
        kind: FailureKind,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::Setup { attempt, in_flight } if in_flight.is_some_and(|f| f.conn == conn) => {
                if let Some(f) = in_flight.take() {
                    attempt.on_connect_result(now, f.id, Err(kind), &mut hub.breakers, rng);
                    self.attempt_failed(now, f, kind, &mut out);
                }
                self.poll_setup(now, hub, rng, &mut out);
            }
            Phase::Live { conn: c, endpoint, .. } if *c == conn => {
                let endpoint = *endpoint;
                if kind == FailureKind::CleanClose {
                    self.phase = Phase::Closed;
                    out.push(BridgeOutput::AgentDone);
                } else {
                    if let Some(b) = hub.breakers.get_mut(endpoint) {
                        match kind {
                            // Oversized or malformed WebSocket frames: the agent broke the protocol.
                            FailureKind::Protocol => b.on_violation(now),
                            _ => b.record(now, Err(kind)),
                        }
                    }
                    self.fail_over(now, kind, hub, rng, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// A text frame on `conn`.
    pub fn on_text(
        &mut self,
        now: Instant,
        conn: u64,
        text: &str,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        let events = match &mut self.phase {
            Phase::Live { conn: c, session, .. } if *c == conn => session.on_text(now, text),
            _ => return out,
        };
        self.after_events(now, events, hub, rng, &mut out);
        out
    }

    /// A binary frame (not part of either protocol) on `conn`.
    pub fn on_binary(
        &mut self,
        now: Instant,
        conn: u64,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        let events = match &mut self.phase {
            Phase::Live { conn: c, session, .. } if *c == conn => {
                session.on_protocol_error(now, ProtocolError::Binary)
            }
            _ => return out,
        };
        self.after_events(now, events, hub, rng, &mut out);
        out
    }

    /// Any sign of life on `conn` (a pong).
    pub fn on_activity(&mut self, now: Instant, conn: u64) {
        if let Phase::Live { conn: c, session, .. } = &mut self.phase {
            if *c == conn {
                session.on_activity(now);
            }
        }
    }

    fn after_events(
        &mut self,
        now: Instant,
        events: Vec<AiEvent>,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
        out: &mut Vec<BridgeOutput>,
    ) {
        let stalled = events.iter().any(|e| matches!(e, AiEvent::Stalled | AiEvent::Mute));
        let violated = events.iter().any(|e| matches!(e, AiEvent::Violation(_)));
        if events.contains(&AiEvent::Mute) {
            tracing::warn!("AI agent mute: no audio and no sign of speech since it went live");
        }
        self.on_events(now, events, hub, out);
        self.drain(out);
        if violated {
            if let Some(b) = self.live_endpoint().and_then(|e| hub.breakers.get_mut(e)) {
                b.on_violation(now);
            }
        }
        if stalled || violated {
            let kind = if violated { FailureKind::Protocol } else { FailureKind::Stalled };
            self.fail_over(now, kind, hub, rng, out);
        }
    }

    fn on_events(
        &mut self,
        now: Instant,
        events: Vec<AiEvent>,
        hub: &AiHub,
        out: &mut Vec<BridgeOutput>,
    ) {
        for ev in events {
            match ev {
                AiEvent::Audio(audio) => {
                    if let Some(pcm) = to_pcm(audio, hub.format) {
                        if let Some(live) = self.live_at.take() {
                            let after_failure = self
                                .failover_detected_at
                                .take()
                                .map(|t| now.saturating_duration_since(t));
                            if let Some(gap) = after_failure {
                                tracing::info!(?gap, "audio from the new agent after failover");
                            }
                            out.push(BridgeOutput::FirstAudio {
                                after_live: now.saturating_duration_since(live),
                                after_failure,
                            });
                        }
                        out.push(BridgeOutput::Audio(pcm));
                    }
                }
                AiEvent::Clear => out.push(BridgeOutput::Clear),
                AiEvent::Error(e) => tracing::debug!(error = %e, "agent frame refused"),
                AiEvent::Violation(v) => {
                    tracing::warn!(violation = %v, "agent broke its bounds: failing over")
                }
                AiEvent::Ready
                | AiEvent::Mark(_)
                | AiEvent::SpeechStarted
                | AiEvent::Transcript(_)
                | AiEvent::Stalled
                | AiEvent::Mute => {}
            }
        }
    }

    /// Queued outgoing frames and pings of the live session.
    fn drain(&mut self, out: &mut Vec<BridgeOutput>) {
        if let Phase::Live { conn, session, .. } = &mut self.phase {
            while let Some(text) = session.poll_text() {
                out.push(BridgeOutput::Text { conn: *conn, text });
            }
            if session.poll_ping() {
                out.push(BridgeOutput::Ping { conn: *conn });
            }
        }
    }

    /// Mid-call: keep the SIP leg, cover with the filler, and re-bridge with the conversation.
    fn fail_over(
        &mut self,
        now: Instant,
        kind: FailureKind,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
        out: &mut Vec<BridgeOutput>,
    ) {
        let old = std::mem::replace(&mut self.phase, Phase::Closed);
        let mut failed = None;
        if let Phase::Live { conn, mut session, endpoint, since } = old {
            failed = Some(endpoint);
            session.close(now);
            if let Some(b) = hub.breakers.get_mut(endpoint) {
                if matches!(b.state(now), crate::core::ai::BreakerState::Closed) {
                    b.record(now, Err(kind));
                }
            }
            out.push(BridgeOutput::Close { conn });
            self.resume = Some(session.into_transcript());
            let live_for = now.saturating_duration_since(since);
            out.push(BridgeOutput::Note(BridgeNote::Lost { endpoint, kind, live_for }));
            self.last_failure = Some((endpoint, kind));
        }
        hub.failovers += 1;
        self.failover_detected_at = Some(now);
        self.attempts = 0;
        out.push(BridgeOutput::Filler);
        let mut attempt = SetupAttempt::new(now, hub.selector);
        if let Some(endpoint) = failed {
            attempt = attempt.after_failure_of(endpoint);
        }
        self.failovers = self.failovers.saturating_add(1);
        let delay = failover_delay(self.failovers, rng);
        if !delay.is_zero() {
            attempt = attempt.not_before(now + delay);
        }
        self.phase = Phase::Setup { attempt, in_flight: None };
        self.poll_setup(now, hub, rng, out);
    }

    /// A caller frame (the hub's format) for the agent.
    pub fn caller_audio(&mut self, now: Instant, frame: &CallerFrame) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        if let Phase::Live { session, .. } = &mut self.phase {
            let sent = match frame {
                CallerFrame::Pcm(pcm) => session.send_caller_pcm24k(now, pcm),
                CallerFrame::G711(_, codes) => session.send_caller_audio(now, codes),
            };
            if let Err(e) = sent {
                tracing::trace!(error = %e, "caller audio not sent");
            }
        }
        self.drain(&mut out);
        out
    }

    pub fn dtmf(&mut self, digit: char) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        if let Phase::Live { session, .. } = &mut self.phase {
            let _ = session.send_dtmf(digit);
        }
        self.drain(&mut out);
        out
    }

    /// The caller has now heard `total` samples of agent audio in all.
    pub fn played(
        &mut self,
        now: Instant,
        total: u64,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        let delta = total.saturating_sub(self.played);
        self.played = total;
        if delta == 0 {
            return out;
        }
        let events = match &mut self.phase {
            Phase::Live { session, .. } => session.on_played(now, delta),
            _ => return out,
        };
        self.after_events(now, events, hub, rng, &mut out);
        out
    }

    /// The call is over: close the session (Twilio `stop`) or abandon the setup.
    pub fn close(&mut self, now: Instant, hub: &mut AiHub) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Live { conn, mut session, .. } => {
                session.close(now);
                while let Some(text) = session.poll_text() {
                    out.push(BridgeOutput::Text { conn, text });
                }
                out.push(BridgeOutput::Close { conn });
            }
            Phase::Setup { mut attempt, in_flight } => {
                attempt.abandon(now, &mut hub.breakers);
                if let Some(f) = in_flight {
                    out.push(BridgeOutput::Close { conn: f.conn });
                }
            }
            Phase::Fallback | Phase::Closed => {}
        }
        out
    }

    pub fn handle_timeout(
        &mut self,
        now: Instant,
        hub: &mut AiHub,
        rng: &mut impl RngCore,
    ) -> Vec<BridgeOutput> {
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::Setup { .. } => self.poll_setup(now, hub, rng, &mut out),
            Phase::Live { session, .. } => {
                let events = session.handle_timeout(now);
                self.after_events(now, events, hub, rng, &mut out);
            }
            _ => {}
        }
        out
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Setup { attempt, .. } => attempt.poll_timeout(),
            Phase::Live { session, .. } => session.poll_timeout(),
            _ => None,
        }
    }
}

/// Agent audio in the hub's PCM format (μ-law decoded; 24 kHz PCM as is).
fn to_pcm(audio: AiAudio, format: AiFormat) -> Option<Vec<i16>> {
    match (audio, format) {
        (AiAudio::Ulaw8k(bytes), AiFormat::G711(_)) => Some(Law::Ulaw.decode(&bytes)),
        (AiAudio::Pcm24k(pcm), AiFormat::Pcm(_)) => Some(pcm),
        _ => None, // the formats are validated to match; anything else is dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_credentials() {
        let s = AiEndpointSettings {
            name: "a".into(),
            protocol: AiProtocol::Twilio,
            url: "wss://agent.example/media".into(),
            headers: vec![("Authorization".into(), "Bearer sk-secret".into())],
            health_url: None,
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("Authorization") && !shown.contains("sk-secret"), "{shown}");
    }
}

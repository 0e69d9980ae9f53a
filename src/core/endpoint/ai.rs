//! The endpoint's side of the AI bridge: starting a call's bridge, feeding it caller audio,
//! digits and playout progress, routing WebSocket input to the right call, and carrying out
//! what the bridge asks (answer, play agent audio, flush, filler, fallback, hang up).
//! It also writes the operator's view of the bridge: every refused attempt, switch of endpoint,
//! mid-call loss, fallback and breaker change is logged (INFO or WARN) with the call id, the
//! endpoint's configured name, the cause and the timing, and kept for the status page.

use std::collections::BTreeMap;
use std::time::Instant;

use super::ai_probe::{AiEndpointStatus, AiProbe, ProbeAction, ProbeStyle, PROBE_CONN_BASE};
use super::bridge::{AiHub, Bridge, BridgeNote, BridgeOutput};
use super::{CallState, Endpoint, Event, Input, Output, RecordPhase, Transmit};
use crate::core::ai::session::AiProtocol;
use crate::core::ai::session::CallInfo;
use crate::core::ai::BreakerState;
use crate::core::sip::dialog::random_token;

/// The call record's fallback reason when no agent took the call within the budget.
const FALLBACK_REASON: &str = "no agent within the budget";
/// Connection ids of one call live in their own block of this size.
const CONNS_PER_CALL: u64 = 1 << 20;
/// How often each agent endpoint is probed, and how long a probe may take.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One probe per configured agent endpoint.
pub(super) fn probes_for(
    hub: Option<&AiHub>,
    now: Instant,
) -> Vec<(crate::core::ai::Endpoint, AiProbe)> {
    let Some(hub) = hub else { return Vec::new() };
    let mut probes = Vec::new();
    let endpoints = [
        (crate::core::ai::Endpoint::Primary, Some(&hub.primary)),
        (crate::core::ai::Endpoint::Standby, hub.standby.as_ref()),
    ];
    for (i, (endpoint, settings)) in endpoints.into_iter().enumerate() {
        if let Some(s) = settings {
            let style = match (&s.health_url, &s.protocol) {
                (Some(_), _) => ProbeStyle::Http,
                (None, AiProtocol::OpenAi(_)) => ProbeStyle::OpenAi,
                (None, AiProtocol::Twilio) => ProbeStyle::Twilio,
            };
            probes.push((
                endpoint,
                AiProbe::new(now, i as u64, PROBE_INTERVAL, PROBE_TIMEOUT, style),
            ));
        }
    }
    probes
}

impl Endpoint {
    /// Starts the bridge of a ringing call.
    pub(super) fn start_bridge(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get(&id) else { return };
        let Some(hub) = self.ai.as_mut() else { return };
        let mut custom = BTreeMap::new();
        custom.insert("from".to_string(), call.dialog.remote_uri.uri.clone());
        custom.insert("to".to_string(), call.dialog.local_uri.uri.clone());
        custom.insert("carrier".to_string(), self.cfg.carriers[call.carrier].name.clone());
        custom.insert("sipCallId".to_string(), call.dialog.call_id.clone());
        let info = CallInfo {
            call_sid: format!("CA{}{}", random_token(&mut self.rng), random_token(&mut self.rng)),
            stream_sid: format!("MZ{}{}", random_token(&mut self.rng), random_token(&mut self.rng)),
            account_sid: "ACtrunkguard".to_string(),
            custom_parameters: custom,
        };
        let (bridge, out) = Bridge::start(now, info, id * CONNS_PER_CALL, hub, &mut self.rng);
        if let Some(call) = self.calls.get_mut(&id) {
            call.bridge = Some(bridge);
        }
        self.apply_bridge(now, id, out);
    }

    /// WebSocket input, routed to the call that owns the connection.
    pub(super) fn handle_ai_input(&mut self, now: Instant, input: Input<'_>) {
        let conn = match &input {
            Input::AiOpened { conn }
            | Input::AiClosed { conn, .. }
            | Input::AiText { conn, .. }
            | Input::AiBinary { conn }
            | Input::AiPong { conn } => *conn,
            Input::Sip { .. } | Input::Rtp { .. } | Input::SipUnreachable { .. } => return,
        };
        if self.probe_input(now, &input, conn) {
            return;
        }
        let Some(&id) = self.ai_conns.get(&conn) else {
            if matches!(input, Input::AiOpened { .. }) {
                self.out.push_back(Output::Event(Event::AiClose { conn })); // its call is gone
            }
            return;
        };
        let (Some(hub), Some(call)) = (self.ai.as_mut(), self.calls.get_mut(&id)) else { return };
        let Some(bridge) = call.bridge.as_mut() else { return };
        let rng = &mut self.rng;
        let out = match input {
            Input::AiOpened { conn } => bridge.on_opened(now, conn, hub, rng),
            Input::AiClosed { conn, kind } => {
                self.ai_conns.remove(&conn);
                bridge.on_failed(now, conn, kind, hub, rng)
            }
            Input::AiText { conn, text } => bridge.on_text(now, conn, text, hub, rng),
            Input::AiBinary { conn } => bridge.on_binary(now, conn, hub, rng),
            Input::AiPong { conn } => {
                bridge.on_activity(now, conn);
                Vec::new()
            }
            Input::Sip { .. } | Input::Rtp { .. } | Input::SipUnreachable { .. } => Vec::new(),
        };
        self.apply_bridge(now, id, out);
    }

    /// Runs the bridges' timers (setup retries and budget, stall detection, pings).
    pub(super) fn bridge_timeouts(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .calls
            .values()
            .filter(|c| c.bridge.as_ref().and_then(Bridge::poll_timeout).is_some_and(|t| t <= now))
            .map(|c| c.id)
            .collect();
        for id in due {
            let (Some(hub), Some(call)) = (self.ai.as_mut(), self.calls.get_mut(&id)) else {
                continue;
            };
            let Some(bridge) = call.bridge.as_mut() else { continue };
            let out = bridge.handle_timeout(now, hub, &mut self.rng);
            self.apply_bridge(now, id, out);
        }
    }

    /// Hands the bridge what the call's media produced: decoded caller audio, digits, and how
    /// much agent audio has been played.
    pub(super) fn feed_bridge(&mut self, now: Instant, id: u64, digits: &[char]) {
        let (Some(hub), Some(call)) = (self.ai.as_mut(), self.calls.get_mut(&id)) else { return };
        let Some(bridge) = call.bridge.as_mut() else {
            while call.media.poll_caller_frame().is_some() {} // nobody listens: do not hoard
            return;
        };
        let mut out = Vec::new();
        while let Some(frame) = call.media.poll_caller_frame() {
            out.extend(bridge.caller_audio(now, &frame));
        }
        for digit in digits {
            out.extend(bridge.dtmf(*digit));
        }
        out.extend(bridge.played(now, call.media.ai_samples_played(), hub, &mut self.rng));
        self.apply_bridge(now, id, out);
    }

    pub(super) fn close_bridge(&mut self, now: Instant, id: u64) {
        let (Some(hub), Some(call)) = (self.ai.as_mut(), self.calls.get_mut(&id)) else { return };
        let Some(mut bridge) = call.bridge.take() else { return };
        let out = bridge.close(now, hub);
        self.apply_bridge(now, id, out);
    }

    /// Carries out the bridge's requests for call `id`.
    pub(super) fn apply_bridge(&mut self, now: Instant, id: u64, outputs: Vec<BridgeOutput>) {
        for output in outputs {
            match output {
                BridgeOutput::Connect { conn, endpoint, deadline } => {
                    let Some(settings) = self.ai.as_ref().and_then(|h| h.settings(endpoint)) else {
                        continue;
                    };
                    let (url, headers) = (settings.url.clone(), settings.headers.clone());
                    self.ai_conns.insert(conn, id);
                    self.out.push_back(Output::Event(Event::AiConnect {
                        conn,
                        url,
                        headers,
                        deadline,
                    }));
                }
                BridgeOutput::Text { conn, text } => {
                    self.out.push_back(Output::Transmit(Transmit::AiText { conn, text }))
                }
                BridgeOutput::Ping { conn } => {
                    self.out.push_back(Output::Transmit(Transmit::AiPing { conn }))
                }
                BridgeOutput::Close { conn } => {
                    self.ai_conns.remove(&conn);
                    self.out.push_back(Output::Event(Event::AiClose { conn }));
                }
                BridgeOutput::Live { endpoint, resumed } => {
                    self.on_agent_live(now, id, endpoint, resumed)
                }
                BridgeOutput::Audio(pcm) => self.on_agent_audio(now, id, &pcm),
                BridgeOutput::FirstAudio { after_live, after_failure } => {
                    self.latencies.ai_first_audio.record(after_live);
                    if let Some(gap) = after_failure {
                        self.latencies.failover_gap.record(gap);
                    }
                }
                BridgeOutput::Clear => {
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.media.flush_ai_audio();
                    }
                }
                BridgeOutput::Filler => {
                    let filler = self.cfg.filler.clone();
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.media.flush_ai_audio();
                        call.media.play_prompt(filler);
                        call.record.failovers += 1;
                    }
                    self.record(id, RecordPhase::Failover, None);
                }
                BridgeOutput::Fallback { last, attempts } => {
                    self.on_fallback(now, id, last, attempts)
                }
                BridgeOutput::Note(note) => self.on_bridge_note(now, id, note),
                BridgeOutput::AgentDone => self.hang_up(now, id, "agent finished"),
            }
        }
        let call_id = self.calls.get(&id).map(|c| c.dialog.call_id.clone());
        self.log_breaker_changes(now, call_id.as_deref());
    }

    /// The configured name of `endpoint` (empty when it is not configured).
    fn endpoint_name(&self, endpoint: crate::core::ai::Endpoint) -> String {
        self.ai
            .as_ref()
            .and_then(|h| h.settings(endpoint))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }

    /// The call's SIP Call-ID and the milliseconds since it arrived.
    fn call_clock(&self, now: Instant, id: u64) -> (String, u64) {
        self.calls
            .get(&id)
            .map(|c| (c.dialog.call_id.clone(), ms(now.saturating_duration_since(c.started))))
            .unwrap_or_default()
    }

    /// Logs what the bridge reported and keeps the failures for the status page.
    fn on_bridge_note(&mut self, now: Instant, id: u64, note: BridgeNote) {
        let (call_id, call_ms) = self.call_clock(now, id);
        match note {
            BridgeNote::AttemptFailed { endpoint, kind, took } => {
                let name = self.endpoint_name(endpoint);
                let cause = kind.describe(&name);
                let attempt_ms = ms(took);
                tracing::warn!(
                    %call_id, endpoint = %name, %cause, attempt_ms, call_ms,
                    "agent connection refused at call setup"
                );
                let detail = format!("{cause} (call {call_id}, attempt of {attempt_ms} ms)");
                self.note_failure(now, "agent-connect", detail);
            }
            BridgeNote::Switch { from, to, kind } => {
                let (from, to) = (self.endpoint_name(from), self.endpoint_name(to));
                let cause = kind.describe(&from);
                tracing::info!(
                    %call_id, %from, endpoint = %to, %cause, call_ms,
                    "failing over to the other agent endpoint"
                );
            }
            BridgeNote::Lost { endpoint, kind, live_for } => {
                let name = self.endpoint_name(endpoint);
                let cause = kind.describe(&name);
                let live_ms = ms(live_for);
                tracing::warn!(
                    %call_id, endpoint = %name, %cause, live_ms, call_ms,
                    "agent lost mid-call: filler, failing over"
                );
                let detail = format!(
                    "{cause} mid-call (call {call_id}, {call_ms} ms into the call): \
                     filler, re-bridging"
                );
                self.note_failure(now, "agent-failover", detail);
            }
        }
    }

    /// Logs the breakers' changes of state (`call_id`: the call whose attempt caused them).
    pub(super) fn log_breaker_changes(&mut self, now: Instant, call_id: Option<&str>) {
        let Some(hub) = self.ai.as_mut() else { return };
        let mut changes = Vec::new();
        for endpoint in [crate::core::ai::Endpoint::Primary, crate::core::ai::Endpoint::Standby] {
            if let Some(b) = hub.breakers.get_mut(endpoint) {
                changes.extend(b.take_changes().into_iter().map(|c| (endpoint, c)));
            }
        }
        for (endpoint, change) in changes {
            let name = self.endpoint_name(endpoint);
            let cause = change.cause.describe(&name);
            let (from, to) = (breaker_word(change.from), breaker_word(change.to));
            // how long the breaker was in `from` ("-": closed since the start)
            let held_ms = change
                .from_since
                .map_or("-".to_string(), |t| ms(now.saturating_duration_since(t)).to_string());
            let call_id = call_id.unwrap_or("-");
            if change.to == BreakerState::Open {
                tracing::warn!(
                    %call_id, endpoint = %name, from, to, %cause, %held_ms,
                    "agent breaker opened"
                );
                let detail = format!("breaker of {name} {from} -> {to}: {cause}");
                self.note_failure(now, "agent-breaker", detail);
            } else {
                tracing::info!(
                    %call_id, endpoint = %name, from, to, %cause, %held_ms,
                    "agent breaker changed"
                );
            }
        }
    }

    /// The breakers' own timers: a cooldown ends (open -> half-open) even when no call asks.
    pub(super) fn breaker_timeouts(&mut self, now: Instant) {
        let Some(hub) = self.ai.as_mut() else { return };
        hub.breakers.primary.handle_timeout(now);
        if let Some(b) = hub.breakers.standby.as_mut() {
            b.handle_timeout(now);
        }
        self.log_breaker_changes(now, None);
    }

    /// The next instant a breaker changes state by itself.
    pub(super) fn breaker_poll_timeout(&self) -> Option<Instant> {
        let hub = self.ai.as_ref()?;
        let standby = hub.breakers.standby.as_ref().and_then(|b| b.poll_timeout());
        [hub.breakers.primary.poll_timeout(), standby].into_iter().flatten().min()
    }

    /// Input for a health probe's connection; true when it was one.
    fn probe_input(&mut self, now: Instant, input: &Input<'_>, conn: u64) -> bool {
        let Some((_, probe)) = self.ai_probes.iter_mut().find(|(_, p)| p.owns(conn)) else {
            return conn >= PROBE_CONN_BASE; // a stale probe connection: ignore it
        };
        let actions = match input {
            Input::AiOpened { .. } => probe.on_opened(now, conn),
            Input::AiText { text, .. } => probe.on_text(now, conn, text),
            Input::AiClosed { .. } => {
                probe.on_closed(now, conn);
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.apply_probe(None, actions);
        true
    }

    /// Starts due probes and fails late ones.
    pub(super) fn probe_timeouts(&mut self, now: Instant) {
        for i in 0..self.ai_probes.len() {
            let (endpoint, probe) = &mut self.ai_probes[i];
            if probe.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let endpoint = *endpoint;
            let actions = probe.handle_timeout(now);
            self.apply_probe(Some(endpoint), actions);
        }
    }

    fn apply_probe(
        &mut self,
        endpoint: Option<crate::core::ai::Endpoint>,
        actions: Vec<ProbeAction>,
    ) {
        for action in actions {
            match action {
                ProbeAction::Connect { conn, deadline } => {
                    let settings =
                        endpoint.and_then(|e| self.ai.as_ref().and_then(|h| h.settings(e)));
                    if let Some(s) = settings {
                        let (url, headers) = (s.url.clone(), s.headers.clone());
                        self.out.push_back(Output::Event(Event::AiConnect {
                            conn,
                            url,
                            headers,
                            deadline,
                        }));
                    }
                }
                ProbeAction::HttpGet { conn, deadline } => {
                    let url = endpoint
                        .and_then(|e| self.ai.as_ref().and_then(|h| h.settings(e)))
                        .and_then(|s| s.health_url.clone());
                    if let Some(url) = url {
                        self.out.push_back(Output::Event(Event::AiHealthGet {
                            conn,
                            url,
                            deadline,
                        }));
                    }
                }
                ProbeAction::Text { conn, text } => {
                    self.out.push_back(Output::Transmit(Transmit::AiText { conn, text }))
                }
                ProbeAction::Close { conn } => {
                    self.out.push_back(Output::Event(Event::AiClose { conn }))
                }
            }
        }
    }

    /// Whether some agent endpoint passed a health probe within `window` (true when no agent is
    /// configured: the canned prompt needs nothing upstream).
    pub fn ai_reachable(&self, now: Instant, window: std::time::Duration) -> bool {
        self.ai.is_none() || self.ai_probes.iter().any(|(_, p)| p.healthy_within(now, window))
    }

    /// The endpoints' breakers and probe results, for the status page.
    pub(super) fn ai_status(&self, now: Instant) -> Vec<AiEndpointStatus> {
        let Some(hub) = self.ai.as_ref() else { return Vec::new() };
        self.ai_probes
            .iter()
            .filter_map(|(endpoint, probe)| {
                let settings = hub.settings(*endpoint)?;
                let breaker = match endpoint {
                    crate::core::ai::Endpoint::Primary => Some(&hub.breakers.primary),
                    crate::core::ai::Endpoint::Standby => hub.breakers.standby.as_ref(),
                }?;
                Some(AiEndpointStatus {
                    name: settings.name.clone(),
                    role: match endpoint {
                        crate::core::ai::Endpoint::Primary => "primary",
                        crate::core::ai::Endpoint::Standby => "standby",
                    },
                    breaker: breaker_word(breaker.state(now)),
                    breaker_trips: breaker.stats().trips,
                    last_probe_ok_ms_ago: probe
                        .last_success
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    last_probe_rtt_ms: probe.last_rtt.map(|d| d.as_millis() as u64),
                    probe_successes: probe.successes,
                    probe_failures: probe.failures,
                })
            })
            .collect()
    }

    fn on_agent_live(
        &mut self,
        now: Instant,
        id: u64,
        endpoint: crate::core::ai::Endpoint,
        resumed: bool,
    ) {
        let name = self.endpoint_name(endpoint);
        let (call_id, call_ms) = self.call_clock(now, id);
        let Some(call) = self.calls.get_mut(&id) else { return };
        tracing::info!(%call_id, endpoint = %name, resumed, call_ms, "agent live");
        call.record.ai_endpoint = Some(name);
        if call.state == CallState::Ringing {
            self.answer_call(now, id); // its record names the agent
        } else {
            self.record(id, RecordPhase::AgentLive, None);
        }
    }

    fn on_agent_audio(&mut self, now: Instant, id: u64, pcm: &[i16]) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        // the agent speaks: the filler (if any) stops at once
        call.media.stop_prompt();
        if let Err(e) = call.media.push_ai_audio_at(now, pcm) {
            tracing::debug!(error = %e, "agent audio dropped");
        }
    }

    /// No agent: answer (if still ringing) and let the ladder start at the ACK; mid-call, the
    /// ladder starts now (the canned prompt, then the menu).
    fn on_fallback(
        &mut self,
        now: Instant,
        id: u64,
        last: Option<(crate::core::ai::Endpoint, crate::core::ai::FailureKind)>,
        attempts: u32,
    ) {
        let (call_id, call_ms) = self.call_clock(now, id);
        let endpoint = last.map(|(e, _)| self.endpoint_name(e)).unwrap_or_else(|| "-".into());
        let cause = match last {
            Some((_, kind)) => kind.describe(&endpoint),
            None => "no agent endpoint admitted a connection (breakers open)".to_string(),
        };
        tracing::warn!(
            %call_id, %endpoint, %cause, attempts, call_ms,
            "no AI agent within the budget: fallback to the ladder"
        );
        let detail = format!(
            "no agent within the budget for call {call_id} after {attempts} attempt(s), \
             {call_ms} ms: {cause}"
        );
        self.note_failure(now, "fallback", detail);
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.record.fallback_reason = Some(FALLBACK_REASON.to_string());
        match call.state {
            CallState::Ringing => self.answer_call(now, id), // its record gives the reason
            CallState::Confirmed => self.start_ladder(now, id), // its first record is the fallback
            CallState::Answered => self.record(id, RecordPhase::Fallback, None),
            CallState::Ending => {}
        }
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn breaker_word(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    }
}

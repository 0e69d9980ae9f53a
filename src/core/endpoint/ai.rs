//! The endpoint's side of the AI bridge: starting a call's bridge, feeding it caller audio,
//! digits and playout progress, routing WebSocket input to the right call, and carrying out
//! what the bridge asks (answer, play agent audio, flush, filler, fallback, hang up).

use std::collections::BTreeMap;
use std::time::Instant;

use super::ai_probe::{AiEndpointStatus, AiProbe, ProbeAction, PROBE_CONN_BASE};
use super::bridge::{AiHub, Bridge, BridgeOutput};
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
            let openai = matches!(s.protocol, AiProtocol::OpenAi(_));
            probes.push((
                endpoint,
                AiProbe::new(now, i as u64, PROBE_INTERVAL, PROBE_TIMEOUT, openai),
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
        if let Input::AiClosed { kind, .. } = &input {
            if *kind != crate::core::ai::FailureKind::CleanClose {
                let call_id =
                    self.calls.get(&id).map(|c| c.dialog.call_id.clone()).unwrap_or_default();
                self.note_failure(now, "agent", format!("{kind:?} (call {call_id})"));
            }
        }
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
                    self.note_failure(
                        now,
                        "agent-failover",
                        "agent lost mid-call: filler, re-bridging".to_string(),
                    );
                    let filler = self.cfg.filler.clone();
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.media.flush_ai_audio();
                        call.media.play_prompt(filler);
                        call.record.failovers += 1;
                    }
                    self.record(id, RecordPhase::Failover, None);
                }
                BridgeOutput::Fallback => self.on_fallback(now, id),
                BridgeOutput::AgentDone => self.hang_up(now, id, "agent finished"),
            }
        }
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
                    breaker: match breaker.state(now) {
                        BreakerState::Closed => "closed",
                        BreakerState::Open => "open",
                        BreakerState::HalfOpen => "half-open",
                    },
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
        let name = self.ai.as_ref().and_then(|h| h.settings(endpoint)).map(|s| s.name.clone());
        let Some(call) = self.calls.get_mut(&id) else { return };
        tracing::info!(call_id = %call.dialog.call_id, ?endpoint, resumed, "agent live");
        call.record.ai_endpoint = name;
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
    fn on_fallback(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        tracing::warn!(call_id = %call.dialog.call_id, "no AI agent within the budget: canned prompt");
        let detail = format!("no agent within the budget for call {}", call.dialog.call_id);
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

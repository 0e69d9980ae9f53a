//! A serializable snapshot of the endpoint for the status page and `/status`: carrier states,
//! call counts and counters of what was dropped and why.

use std::time::Instant;

use serde::Serialize;

use crate::core::carrier::probe::Prober;
use crate::core::carrier::register::Registrar;
use crate::core::media::session::MediaCounters;
use crate::core::media::stats::CallMediaStats;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub calls_offered: u64,
    pub calls_answered: u64,
    pub calls_ended: u64,
    pub rtp_received: u64,
    pub rtp_sent: u64,
    pub rtp_invalid: u64,
    pub sip_parse_errors: u64,
    pub dropped_unknown_source: u64,
    /// New INVITEs refused because `max_calls` calls were in progress.
    pub shed_calls: u64,
    /// Requests refused by the per-source rate limit.
    pub rate_limited: u64,
    /// Agent audio that ran out mid-speech and came back (a gap the caller heard), all calls.
    pub ai_underruns: u64,
    /// RTP and RTCP packets refused because of their source address (strict source).
    pub media_refused_source: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarrierStatus {
    pub name: String,
    /// `up`, `down`, `unknown` (not yet decided), or `unprobed` (no proxy configured).
    pub state: &'static str,
    pub registered: bool,
    /// Whether this carrier registers at all.
    pub registers: bool,
    /// How long ago the last OPTIONS probe was answered (`None`: never, or not probed).
    pub last_probe_ok_ms_ago: Option<u64>,
    /// The probe interval (`None` when the carrier has no proxy and is not probed).
    pub probe_interval_ms: Option<u64>,
    /// Round-trip time of the last answered probe.
    pub last_probe_rtt_ms: Option<f64>,
    /// The carrier's outbound breaker: `closed`, `open` or `half-open`.
    pub outbound_breaker: &'static str,
    /// How long a 503 Retry-After still keeps outbound calls off this carrier.
    pub outbound_hold_ms: Option<u64>,
    /// Outbound INVITEs sent through this carrier, those that failed for a carrier reason
    /// (re-routed or final), and the times its outbound breaker opened.
    pub outbound_attempts: u64,
    pub outbound_failures: u64,
    pub outbound_breaker_trips: u64,
}

impl CarrierStatus {
    pub fn of(
        name: &str,
        prober: Option<&Prober>,
        registrar: Option<&Registrar>,
        now: Instant,
    ) -> Self {
        let state = match prober.map(Prober::is_up) {
            None => "unprobed",
            Some(None) => "unknown",
            Some(Some(true)) => "up",
            Some(Some(false)) => "down",
        };
        CarrierStatus {
            name: name.to_string(),
            state,
            registered: registrar.is_some_and(|r| r.is_registered(now)),
            registers: registrar.is_some(),
            last_probe_ok_ms_ago: prober
                .and_then(Prober::last_success)
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            probe_interval_ms: prober.map(|p| p.settings().interval.as_millis() as u64),
            last_probe_rtt_ms: prober
                .and_then(Prober::last_rtt)
                .map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
            outbound_breaker: "closed",
            outbound_hold_ms: None,
            outbound_attempts: 0,
            outbound_failures: 0,
            outbound_breaker_trips: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallsStatus {
    pub active: usize,
    pub answered_total: u64,
    pub rtp_packets_received_total: u64,
}

/// One call in progress, with its media statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveCall {
    pub call_id: String,
    pub carrier: String,
    /// The caller's From URI (caller-controlled: escape before display).
    pub caller: String,
    /// The From display name as written, quotes removed (caller-controlled: escape it too).
    pub caller_name: Option<String>,
    pub state: String,
    pub codec: String,
    pub duration_ms: u64,
    /// The AI endpoint the call is bridged to (`None`: connecting, fallback, or no agents).
    pub ai_endpoint: Option<String>,
    pub media: CallMediaStats,
    pub counters: MediaCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStatus {
    pub carriers: Vec<CarrierStatus>,
    pub calls: CallsStatus,
    pub counters: Counters,
    /// Outbound calls to the human: attempts, failovers, outcomes.
    pub outbound: super::OutboundStatus,
    /// Some agent endpoint passed a real health probe in the last 10 s.
    pub ai_reachable: bool,
    /// Operator switches (drain, out of service).
    pub admin: super::admin::AdminState,
    /// Mid-call failovers between agents, and calls that got the fallback instead of an agent.
    pub ai_failovers: u64,
    pub ai_fallbacks: u64,
    /// Latency histograms (p50/p99 and Prometheus-style buckets).
    pub latency: crate::core::metrics::LatencySnapshot,
    /// The AI agent endpoints (empty when none is configured).
    pub ai_endpoints: Vec<super::ai_probe::AiEndpointStatus>,
    pub active_calls: Vec<ActiveCall>,
    /// The last things that went wrong (newest first, at most 20): what a site engineer
    /// looks at first.
    pub recent_failures: Vec<FailureRecord>,
}

/// Something that went wrong, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRecord {
    pub ms_ago: u64,
    /// `carrier-down`, `agent-connect`, `agent-failover`, `fallback`, `call-refused`, ...
    pub kind: &'static str,
    pub detail: String,
}

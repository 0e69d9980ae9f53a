//! `/metrics`: the status snapshot in the Prometheus text format (0.0.4), encoded by
//! `prometheus-client` from a registry built afresh on each scrape (the snapshot is the source
//! of truth; nothing is double-counted between scrapes).
//!
//! Labels are bounded: `carrier` and `endpoint` take configured names only, `state` and `check`
//! a fixed set. Nothing is labelled per call: media quality is aggregated over the calls in
//! progress (min/avg MOS, max jitter, ...), and those gauges are absent when no call is up.
//! Latency histograms are real histograms rebuilt from the core's cumulative buckets (seconds).

use std::fmt;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::readiness::Readiness;
use crate::core::endpoint::EndpointStatus;
use crate::core::metrics::HistogramSnapshot;
use crate::io::storage::StorageStatus;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// Every value `CarrierStatus::state` takes (a one-hot gauge per carrier).
pub const CARRIER_STATES: [&str; 5] = ["up", "down", "unknown", "unprobed", "out-of-service"];

/// Breaker states as numbers for `trunkguard_ai_endpoint_breaker_state`.
pub fn breaker_value(state: &str) -> i64 {
    match state {
        "closed" => 0,
        "half-open" => 1,
        _ => 2,
    }
}

/// Stream connections (SIP over TCP/TLS, the status server): open now and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub sip_open: u64,
    /// Refused by a cap (total or per source).
    pub sip_refused_cap: u64,
    /// Closed at once: the source is no carrier's.
    pub sip_refused_source: u64,
    pub sip_timed_out: u64,
    pub http_open: u64,
    pub http_refused_cap: u64,
    pub http_timed_out: u64,
}

/// Renders the scrape body.
pub fn render(
    s: &EndpointStatus,
    readiness: &Readiness,
    storage: &StorageStatus,
    conns: &ConnStats,
) -> Result<String, fmt::Error> {
    let mut r = Registry::with_prefix("trunkguard");
    readiness_metrics(&mut r, readiness);
    call_metrics(&mut r, s);
    carrier_metrics(&mut r, s);
    outbound_metrics(&mut r, s);
    ai_metrics(&mut r, s);
    latency_metrics(&mut r, s);
    media_metrics(&mut r, s);
    wire_metrics(&mut r, s);
    storage_metrics(&mut r, storage);
    connection_metrics(&mut r, conns);
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &r)?;
    Ok(out)
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    r.register(name, help, ConstGauge::new(v));
}

fn gauge_f(r: &mut Registry, name: &str, help: &str, v: f64) {
    r.register(name, help, ConstGauge::new(v));
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn readiness_metrics(r: &mut Registry, readiness: &Readiness) {
    gauge(r, "ready", "1 when /readyz answers 200", readiness.ready as i64);
    let checks = Family::<Labels, Gauge>::default();
    for (name, c) in readiness.named() {
        checks.get_or_create(&labels(&[("check", name)])).set(c.ok as i64);
    }
    r.register("readiness_check_ok", "1 when the readiness check passes", checks);
}

fn call_metrics(r: &mut Registry, s: &EndpointStatus) {
    gauge(r, "calls_active", "Calls in progress", s.calls.active as i64);
    counter(r, "calls_offered", "INVITEs that created a call", s.counters.calls_offered);
    counter(r, "calls_answered", "Calls answered with 200 OK", s.counters.calls_answered);
    counter(r, "calls_ended", "Calls that ended", s.counters.calls_ended);
    gauge(r, "draining", "1 while the operator drains the appliance", s.admin.draining as i64);
    let by_carrier = Family::<Labels, Gauge>::default();
    for c in &s.carriers {
        by_carrier.get_or_create(&labels(&[("carrier", &c.name)])).set(0);
    }
    for call in &s.active_calls {
        by_carrier.get_or_create(&labels(&[("carrier", &call.carrier)])).inc();
    }
    r.register("carrier_calls_active", "Calls in progress by carrier", by_carrier);
}

fn carrier_metrics(r: &mut Registry, s: &EndpointStatus) {
    let state = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    let registered = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, GaugeF>::default();
    for c in &s.carriers {
        for st in CARRIER_STATES {
            state
                .get_or_create(&labels(&[("carrier", &c.name), ("state", st)]))
                .set((c.state == st) as i64);
        }
        up.get_or_create(&labels(&[("carrier", &c.name)])).set((c.state == "up") as i64);
        if c.registers {
            registered.get_or_create(&labels(&[("carrier", &c.name)])).set(c.registered as i64);
        }
        if let Some(ms) = c.last_probe_ok_ms_ago {
            age.get_or_create(&labels(&[("carrier", &c.name)])).set(ms as f64 / 1000.0);
        }
    }
    r.register(
        "carrier_state",
        "Carrier state, one-hot over up/down/unknown/unprobed/out-of-service",
        state,
    );
    r.register("carrier_up", "1 when the carrier's OPTIONS probes say up", up);
    r.register("carrier_registered", "1 while the carrier holds a valid registration", registered);
    r.register(
        "carrier_last_probe_ok_age_seconds",
        "Time since the carrier last answered a probe",
        age,
    );
}

/// Outbound calls (the human leg): attempts, failovers, outcomes, and each carrier's
/// outbound breaker.
fn outbound_metrics(r: &mut Registry, s: &EndpointStatus) {
    let o = &s.outbound;
    counter(r, "outbound_attempts", "Outbound INVITEs sent (every carrier attempt)", o.attempts);
    counter(
        r,
        "outbound_failovers",
        "Outbound attempts re-routed to another carrier by SIP cause",
        o.failovers,
    );
    let outcomes = Family::<Labels, Counter>::default();
    for (outcome, n) in
        [("connected", o.connected), ("no-answer", o.no_answer), ("unavailable", o.unavailable)]
    {
        outcomes.get_or_create(&labels(&[("outcome", outcome)])).inc_by(n);
    }
    r.register("human_transfers", "Transfers to the human by outcome", outcomes);
    let breaker = Family::<Labels, Gauge>::default();
    let attempts = Family::<Labels, Counter>::default();
    let failures = Family::<Labels, Counter>::default();
    for c in &s.carriers {
        let l = labels(&[("carrier", &c.name)]);
        breaker.get_or_create(&l).set(breaker_value(c.outbound_breaker));
        attempts.get_or_create(&l).inc_by(c.outbound_attempts);
        failures.get_or_create(&l).inc_by(c.outbound_failures);
    }
    r.register(
        "carrier_outbound_breaker_state",
        "Outbound breaker: 0 closed, 1 half-open, 2 open",
        breaker,
    );
    r.register("carrier_outbound_attempts", "Outbound INVITEs sent through the carrier", attempts);
    r.register(
        "carrier_outbound_failures",
        "Outbound attempts that failed for a carrier reason",
        failures,
    );
}

fn ai_metrics(r: &mut Registry, s: &EndpointStatus) {
    gauge(
        r,
        "ai_reachable",
        "1 when an AI endpoint passed a health probe within 10 s (or none is configured)",
        s.ai_reachable as i64,
    );
    counter(r, "ai_failovers", "Mid-call failovers between AI endpoints", s.ai_failovers);
    counter(
        r,
        "ai_fallbacks",
        "Calls that got the canned prompt instead of an agent",
        s.ai_fallbacks,
    );
    let breaker = Family::<Labels, Gauge>::default();
    let trips = Family::<Labels, Counter>::default();
    let ok = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let rtt = Family::<Labels, GaugeF>::default();
    let age = Family::<Labels, GaugeF>::default();
    for e in &s.ai_endpoints {
        let l = labels(&[("endpoint", &e.name), ("role", e.role)]);
        breaker.get_or_create(&l).set(breaker_value(e.breaker));
        trips.get_or_create(&l).inc_by(e.breaker_trips);
        ok.get_or_create(&l).inc_by(e.probe_successes);
        failed.get_or_create(&l).inc_by(e.probe_failures);
        if let Some(ms) = e.last_probe_rtt_ms {
            rtt.get_or_create(&l).set(ms as f64 / 1000.0);
        }
        if let Some(ms) = e.last_probe_ok_ms_ago {
            age.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    r.register(
        "ai_endpoint_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open",
        breaker,
    );
    r.register("ai_endpoint_breaker_trips", "Times the breaker opened", trips);
    r.register("ai_endpoint_probe_successes", "Health probes passed", ok);
    r.register("ai_endpoint_probe_failures", "Health probes failed", failed);
    r.register(
        "ai_endpoint_probe_rtt_seconds",
        "Round-trip time of the last passed health probe",
        rtt,
    );
    r.register(
        "ai_endpoint_last_probe_ok_age_seconds",
        "Time since the endpoint last passed a health probe",
        age,
    );
}

/// A histogram rebuilt from a snapshot's cumulative millisecond buckets.
#[derive(Debug)]
struct SnapshotHistogram {
    sum_s: f64,
    count: u64,
    /// (upper bound in seconds, count in this bucket alone); the encoder accumulates.
    buckets: Vec<(f64, u64)>,
}

impl SnapshotHistogram {
    fn of(h: &HistogramSnapshot) -> SnapshotHistogram {
        let mut prev = 0;
        let buckets = h
            .buckets
            .iter()
            .map(|(le_ms, cumulative)| {
                let n = cumulative.saturating_sub(prev);
                prev = *cumulative;
                (le_ms / 1000.0, n)
            })
            .collect();
        SnapshotHistogram {
            sum_s: h.mean_ms.unwrap_or(0.0) * h.count as f64 / 1000.0,
            count: h.count,
            buckets,
        }
    }
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum_s, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn latency_metrics(r: &mut Registry, s: &EndpointStatus) {
    let l = &s.latency;
    let series = [
        (
            "latency_rtp_to_ai_seconds",
            "Caller RTP arriving to its audio handed to the agent",
            &l.rtp_to_ai,
        ),
        (
            "latency_ai_to_rtp_seconds",
            "Agent audio arriving to its first sample sent as RTP",
            &l.ai_to_rtp,
        ),
        (
            "latency_ai_first_audio_seconds",
            "Agent connection live to its first audio",
            &l.ai_first_audio,
        ),
        ("latency_call_setup_seconds", "INVITE received to 200 OK sent", &l.call_setup),
        (
            "latency_failover_gap_seconds",
            "Mid-call failover: failure detected to first audio from the new agent",
            &l.failover_gap,
        ),
    ];
    for (name, help, h) in series {
        r.register(name, help, SnapshotHistogram::of(h));
    }
}

fn media_metrics(r: &mut Registry, s: &EndpointStatus) {
    let calls = &s.active_calls;
    if calls.is_empty() {
        return;
    }
    let n = calls.len() as f64;
    let media = calls.iter().map(|c| &c.media);
    // calls without media have no MOS and stay out of both
    let scored: Vec<f64> = media.clone().filter_map(|m| m.mos).collect();
    let mos_min = scored.iter().copied().fold(f64::INFINITY, f64::min);
    let mos_avg = scored.iter().sum::<f64>() / scored.len().max(1) as f64;
    let jitter_max = media.clone().map(|m| m.jitter_ms).fold(0.0, f64::max);
    let depth_avg = media.clone().map(|m| m.jitter_buffer_depth_ms as f64).sum::<f64>() / n;
    let depth_max = media.clone().map(|m| m.jitter_buffer_depth_ms as f64).fold(0.0, f64::max);
    let loss_max = media.clone().map(|m| m.loss_percent).fold(0.0, f64::max);
    let lost: u64 = media.clone().map(|m| m.packets_lost).sum();
    let concealed: u64 = media.map(|m| m.concealed_ms).sum();
    if !scored.is_empty() {
        let help = "Lowest E-model MOS (worse direction) among calls in progress with media";
        gauge_f(r, "media_mos_min", help, mos_min);
        let help = "Average E-model MOS (worse direction) over calls in progress with media";
        gauge_f(r, "media_mos_avg", help, mos_avg);
    }
    gauge_f(
        r,
        "media_jitter_max_seconds",
        "Highest RFC 3550 interarrival jitter among calls in progress",
        jitter_max / 1000.0,
    );
    gauge_f(
        r,
        "media_jitter_buffer_depth_avg_seconds",
        "Average jitter-buffer depth over calls in progress",
        depth_avg / 1000.0,
    );
    gauge_f(
        r,
        "media_jitter_buffer_depth_max_seconds",
        "Deepest jitter buffer among calls in progress",
        depth_max / 1000.0,
    );
    gauge_f(
        r,
        "media_loss_max_ratio",
        "Highest loss heard by a listener among calls in progress (0-1)",
        loss_max / 100.0,
    );
    gauge(
        r,
        "media_packets_lost_active",
        "RTP packets lost in the network, summed over calls in progress",
        lost as i64,
    );
    gauge_f(
        r,
        "media_concealed_active_seconds",
        "Audio concealed (PLC or silence), summed over calls in progress",
        concealed as f64 / 1000.0,
    );
}

fn wire_metrics(r: &mut Registry, s: &EndpointStatus) {
    let c = &s.counters;
    counter(r, "sip_parse_errors", "SIP messages that did not parse", c.sip_parse_errors);
    counter(
        r,
        "sip_dropped_unknown_source",
        "SIP requests dropped: source in no carrier's inbound_from",
        c.dropped_unknown_source,
    );
    counter(r, "rtp_received", "RTP packets received", c.rtp_received);
    counter(r, "rtp_sent", "RTP packets sent", c.rtp_sent);
    counter(r, "rtp_invalid", "RTP packets dropped as invalid", c.rtp_invalid);
    counter(
        r,
        "ai_playout_underruns",
        "Agent audio that ran out mid-speech and came back (a gap the caller heard)",
        c.ai_underruns,
    );
    counter(
        r,
        "media_refused_source",
        "RTP and RTCP packets refused: not from the SDP's or the latched address",
        c.media_refused_source,
    );
}

/// Stream connections: what is open, what the caps and the source rule refused, timeouts.
fn connection_metrics(r: &mut Registry, c: &ConnStats) {
    gauge(r, "sip_stream_connections", "SIP TCP/TLS connections open", c.sip_open as i64);
    counter(
        r,
        "sip_stream_refused_cap",
        "SIP TCP/TLS connections refused: total or per-source cap reached",
        c.sip_refused_cap,
    );
    counter(
        r,
        "sip_stream_refused_source",
        "SIP TCP/TLS connections closed unanswered: source in no carrier's inbound_from",
        c.sip_refused_source,
    );
    counter(
        r,
        "sip_stream_timeouts",
        "SIP TCP/TLS connections closed: idle, message head too slow, or TLS handshake",
        c.sip_timed_out,
    );
    gauge(r, "http_connections", "Status server connections open", c.http_open as i64);
    counter(
        r,
        "http_refused_cap",
        "Status server connections refused: total or per-source cap reached",
        c.http_refused_cap,
    );
    counter(
        r,
        "http_timeouts",
        "Status server connections closed: request head too slow, idle, or TLS handshake",
        c.http_timed_out,
    );
}

/// The state database writers: call records, and callback requests with their deliveries
/// (absent when that writer is not running).
fn storage_metrics(r: &mut Registry, s: &StorageStatus) {
    if let Some(c) = &s.call_records {
        counter(
            r,
            "call_records_written",
            "Call records committed to the state database",
            c.written,
        );
        counter(r, "call_records_dropped", "Call records dropped: writer queue full", c.dropped);
        counter(
            r,
            "call_records_failed",
            "Call record writes (or prunes) that failed in the database",
            c.failed,
        );
        counter(
            r,
            "call_records_late",
            "Answer records committed later than the answer waited",
            c.late,
        );
    }
    if let Some(c) = &s.callbacks {
        let by_state = Family::<Labels, Gauge>::default();
        for (state, n) in [("pending", c.pending), ("delivered", c.delivered), ("failed", c.failed)]
        {
            by_state
                .get_or_create(&labels(&[("state", state)]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        r.register("callbacks", "Callback requests in the state database by state", by_state);
        counter(r, "callbacks_requested", "Callback requests made by the ladder", c.requested);
        counter(
            r,
            "callbacks_stored",
            "Callback requests committed to the state database",
            c.stored,
        );
        counter(
            r,
            "callbacks_dropped",
            "Callback requests lost before storage (queue full, database failing too long)",
            c.dropped,
        );
        gauge(
            r,
            "callbacks_unstored",
            "Callback requests held in memory because the database refused them",
            c.unstored as i64,
        );
        counter(
            r,
            "callback_write_failures",
            "Callback database operations that failed",
            c.write_failures,
        );
        gauge(
            r,
            "callback_webhook_configured",
            "1 when a webhook is configured and its client is up",
            c.webhook as i64,
        );
        counter(r, "callback_delivery_attempts", "Webhook delivery attempts", c.attempts);
        counter(
            r,
            "callback_delivery_failures",
            "Webhook delivery attempts without a 2xx (error, timeout, non-2xx)",
            c.attempt_failures,
        );
        counter(
            r,
            "callbacks_given_up",
            "Callback requests not delivered within give_up_after_h",
            c.gave_up,
        );
    }
}

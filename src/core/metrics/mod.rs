//! Measurements the core keeps as plain data for the status page and metrics: latency
//! histograms with fixed buckets (bounded memory, no per-call labels).

mod histogram;

pub use histogram::{Histogram, HistogramSnapshot};

use serde::Serialize;

/// The appliance's latency picture.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// A caller's RTP packet arriving → its audio handed to the agent (jitter buffer included).
    pub rtp_to_ai: Histogram,
    /// Agent audio arriving → its first sample sent to the caller as RTP.
    pub ai_to_rtp: Histogram,
    /// The agent connection live → its first audio.
    pub ai_first_audio: Histogram,
    /// INVITE received → 200 OK sent.
    pub call_setup: Histogram,
    /// Mid-call failover: failure detected → first audio from the new agent.
    pub failover_gap: Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySnapshot {
    pub rtp_to_ai: HistogramSnapshot,
    pub ai_to_rtp: HistogramSnapshot,
    pub ai_first_audio: HistogramSnapshot,
    pub call_setup: HistogramSnapshot,
    pub failover_gap: HistogramSnapshot,
}

impl Latencies {
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            rtp_to_ai: self.rtp_to_ai.snapshot(),
            ai_to_rtp: self.ai_to_rtp.snapshot(),
            ai_first_audio: self.ai_first_audio.snapshot(),
            call_setup: self.call_setup.snapshot(),
            failover_gap: self.failover_gap.snapshot(),
        }
    }
}

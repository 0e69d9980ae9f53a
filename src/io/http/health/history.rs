//! A server-side ring of latency samples for the status page's chart: one sample every
//! [`SAMPLE_EVERY`], the last hour kept. Each sample is the p99 of what was recorded *during*
//! its interval (the difference of two cumulative histogram snapshots), not the all-time p99,
//! so a bad minute shows as a spike. Fed from `Shared::beat` with the loop's time.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::core::metrics::LatencySnapshot;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// One hour of samples.
pub const CAPACITY: usize = 360;

/// p99 of one interval per series, ms (`None`: nothing recorded in that interval).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the appliance started, at the end of the interval.
    pub t_s: u64,
    pub rtp_to_ai_p99_ms: Option<f64>,
    pub ai_to_rtp_p99_ms: Option<f64>,
    pub call_setup_p99_ms: Option<f64>,
}

/// The body of `/api/latency-history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryView {
    pub interval_s: u64,
    /// Seconds since start now, to place samples on a time axis.
    pub now_s: u64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Default)]
pub struct LatencyHistory {
    next_ms: u64,
    prev: Option<[Vec<(f64, u64)>; 3]>,
    samples: VecDeque<Sample>,
    now_ms: u64,
}

impl LatencyHistory {
    /// Called every drive-loop turn with milliseconds since start; takes a sample when due.
    pub fn on_beat(&mut self, ms: u64, latency: &LatencySnapshot) {
        self.now_ms = ms;
        let cur = [
            latency.rtp_to_ai.buckets.clone(),
            latency.ai_to_rtp.buckets.clone(),
            latency.call_setup.buckets.clone(),
        ];
        let Some(prev) = self.prev.as_ref() else {
            self.prev = Some(cur);
            self.next_ms = ms + SAMPLE_EVERY.as_millis() as u64;
            return;
        };
        if ms < self.next_ms {
            return;
        }
        let sample = Sample {
            t_s: ms / 1000,
            rtp_to_ai_p99_ms: interval_quantile(&prev[0], &cur[0], 0.99),
            ai_to_rtp_p99_ms: interval_quantile(&prev[1], &cur[1], 0.99),
            call_setup_p99_ms: interval_quantile(&prev[2], &cur[2], 0.99),
        };
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.prev = Some(cur);
        // stay on the 10 s grid; after a long stall, restart it from now
        self.next_ms = (self.next_ms + SAMPLE_EVERY.as_millis() as u64).max(ms);
    }

    pub fn view(&self) -> HistoryView {
        HistoryView {
            interval_s: SAMPLE_EVERY.as_secs(),
            now_s: self.now_ms / 1000,
            samples: self.samples.iter().cloned().collect(),
        }
    }
}

/// The upper bound of the bucket holding quantile `q` among the observations made between two
/// cumulative snapshots of the same histogram (the last finite bound for the +Inf bucket).
pub fn interval_quantile(prev: &[(f64, u64)], cur: &[(f64, u64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = cur
        .iter()
        .enumerate()
        .map(|(i, (le, n))| (*le, n.saturating_sub(prev.get(i).map_or(0, |p| p.1))))
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let last_finite = cur.iter().rev().map(|b| b.0).find(|le| le.is_finite());
    delta.iter().find(|(_, n)| *n >= rank).and_then(|(le, _)| {
        if le.is_finite() {
            Some(*le)
        } else {
            last_finite
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::Latencies;

    #[test]
    fn samples_show_the_interval_not_all_time() {
        let mut lat = Latencies::default();
        let mut h = LatencyHistory::default();
        h.on_beat(0, &lat.snapshot());
        for _ in 0..100 {
            lat.ai_to_rtp.record(Duration::from_millis(15)); // 20 ms bucket
        }
        h.on_beat(9_999, &lat.snapshot());
        assert!(h.view().samples.is_empty());
        h.on_beat(10_000, &lat.snapshot());
        lat.ai_to_rtp.record(Duration::from_millis(150)); // one slow one in the next interval
        h.on_beat(20_100, &lat.snapshot());
        h.on_beat(30_000, &lat.snapshot()); // nothing new
        let v = h.view();
        let p99: Vec<Option<f64>> = v.samples.iter().map(|s| s.ai_to_rtp_p99_ms).collect();
        assert_eq!(p99, vec![Some(20.0), Some(200.0), None]);
        assert_eq!(v.samples.iter().map(|s| s.t_s).collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(v.samples[0].rtp_to_ai_p99_ms, None);
        assert_eq!(lat.snapshot().ai_to_rtp.buckets.last().unwrap().1, 101);
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let lat = Latencies::default().snapshot();
        let mut h = LatencyHistory::default();
        for i in 0..=(CAPACITY as u64 + 50) {
            h.on_beat(i * 10_000, &lat);
        }
        let v = h.view();
        assert_eq!(v.samples.len(), CAPACITY);
        assert_eq!(v.samples.last().unwrap().t_s, (CAPACITY as u64 + 50) * 10);
    }

    #[test]
    fn beyond_the_last_bound_reports_the_last_finite_bound() {
        let prev = vec![(1.0, 0), (5000.0, 0), (f64::INFINITY, 0)];
        let cur = vec![(1.0, 0), (5000.0, 0), (f64::INFINITY, 3)];
        assert_eq!(interval_quantile(&prev, &cur, 0.99), Some(5000.0));
        assert_eq!(interval_quantile(&cur, &cur, 0.99), None);
    }
}

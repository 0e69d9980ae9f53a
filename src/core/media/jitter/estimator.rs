//! Network delay estimation for the jitter buffer: the RFC 3550 §6.4.1 interarrival jitter and
//! the mean and standard deviation of transit-time deviations over a sliding window.
//!
//! Transit times are in seconds, relative to the current stream section's epoch (see the
//! module doc of [`super`]); only their differences matter.

use std::collections::VecDeque;

/// Fewer samples than this give no delay proposal.
const MIN_SAMPLES: usize = 8;
/// Weight of the RFC 3550 jitter in the proposal's floor.
const JITTER_FACTOR: f64 = 3.0;

/// Transit statistics of the packets received recently.
#[derive(Debug, Clone)]
pub struct DelayEstimator {
    window: VecDeque<f64>,
    capacity: usize,
    k: f64,
    jitter: f64,
    last_transit: Option<f64>,
}

impl DelayEstimator {
    /// An estimator over the last `capacity` packets proposing `mean + k·σ`.
    pub fn new(capacity: usize, k: f64) -> DelayEstimator {
        let capacity = capacity.max(2);
        DelayEstimator {
            window: VecDeque::with_capacity(capacity),
            capacity,
            k: if k.is_finite() { k.max(0.0) } else { 2.0 },
            jitter: 0.0,
            last_transit: None,
        }
    }

    /// Records one packet's transit (seconds), in arrival order.
    pub fn observe(&mut self, transit: f64) {
        if !transit.is_finite() {
            return;
        }
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(transit);
    }

    /// Forgets transits (a new section has a new time base); the jitter estimate stays.
    pub fn reset_section(&mut self) {
        self.window.clear();
        self.last_transit = None;
    }

    /// RFC 3550 interarrival jitter, in seconds.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Packets in the window.
    pub fn samples(&self) -> usize {
        self.window.len()
    }

    /// Smallest transit in the window (0 when empty).
    pub fn min_transit(&self) -> f64 {
        self.window.iter().copied().reduce(f64::min).unwrap_or(0.0)
    }

    /// Proposed buffering delay in seconds (unclamped), once the window holds enough packets:
    /// `max(mean(d) + k·σ(d), 3·J)` with `d` the deviations from the minimum transit.
    pub fn proposal(&self) -> Option<f64> {
        let n = self.window.len();
        if n < MIN_SAMPLES {
            return None;
        }
        let min = self.min_transit();
        let count = n as f64;
        let mean = self.window.iter().map(|t| t - min).sum::<f64>() / count;
        let var = self.window.iter().map(|t| (t - min - mean).powi(2)).sum::<f64>() / count;
        Some((mean + self.k * var.sqrt()).max(JITTER_FACTOR * self.jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_transit_has_no_jitter() {
        let mut e = DelayEstimator::new(10, 2.0);
        for _ in 0..20 {
            e.observe(0.05);
        }
        assert_eq!(e.jitter(), 0.0);
        assert_eq!(e.proposal(), Some(0.0));
        assert_eq!(e.min_transit(), 0.05);
    }

    #[test]
    fn needs_a_few_samples() {
        let mut e = DelayEstimator::new(10, 2.0);
        for _ in 0..MIN_SAMPLES - 1 {
            e.observe(0.0);
        }
        assert_eq!(e.proposal(), None);
        e.observe(0.0);
        assert!(e.proposal().is_some());
    }

    #[test]
    fn alternating_transit_converges_to_rfc3550_value() {
        let mut e = DelayEstimator::new(10, 2.0);
        for i in 0..1000 {
            e.observe(if i % 2 == 0 { 0.0 } else { 0.010 });
        }
        assert!((e.jitter() - 0.010).abs() < 1e-6);
        // d alternates 0 / 10 ms: mean 5 ms, σ 5 ms -> 15 ms, below 3·J = 30 ms.
        assert!((e.proposal().unwrap() - 0.030).abs() < 1e-6);
    }

    #[test]
    fn window_forgets_old_outliers() {
        let mut e = DelayEstimator::new(10, 2.0);
        e.observe(0.5);
        for _ in 0..10 {
            e.observe(0.0);
        }
        assert_eq!(e.samples(), 10);
        assert_eq!(e.proposal().unwrap().max(0.0), 3.0 * e.jitter());
        e.reset_section();
        assert_eq!(e.samples(), 0);
        assert!(e.jitter() > 0.0);
        e.observe(f64::NAN);
        assert_eq!(e.samples(), 0);
    }
}

//! A latency histogram with fixed millisecond buckets: constant memory, mergeable, and
//! quantiles read as the upper bound of the bucket that holds them.

use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the buckets, in milliseconds (a last bucket takes everything above).
pub const BUCKETS_MS: [f64; 14] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: [u64; BUCKETS_MS.len() + 1],
    count: u64,
    sum_ms: f64,
    max_ms: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; BUCKETS_MS.len() + 1], count: 0, sum_ms: 0.0, max_ms: 0.0 }
    }
}

/// What the status page shows of a histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// (upper bound ms, cumulative count) per bucket, Prometheus style; the last is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1); the maximum for the last.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS_MS.get(i).copied().unwrap_or(self.max_ms).min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = BUCKETS_MS
            .iter()
            .zip(self.counts.iter())
            .map(|(b, c)| {
                cumulative += c;
                (*b, cumulative)
            })
            .collect();
        buckets.push((f64::INFINITY, self.count));
        HistogramSnapshot {
            count: self.count,
            mean_ms: (self.count > 0).then(|| self.sum_ms / self.count as f64),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            max_ms: (self.count > 0).then_some(self.max_ms),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(3500)); // the 5 ms bucket
        }
        h.record(Duration::from_millis(150));
        h.record(Duration::from_millis(7000)); // beyond the last bound
        assert_eq!(h.quantile_ms(0.5), Some(5.0));
        assert_eq!(h.quantile_ms(0.99), Some(200.0));
        assert_eq!(h.quantile_ms(1.0), Some(7000.0));
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.buckets.last().unwrap().1, 100);
        assert_eq!(s.buckets[2], (5.0, 98));
        assert!(s.mean_ms.unwrap() > 70.0);
    }

    #[test]
    fn a_small_sample_never_reports_above_its_maximum() {
        let mut h = Histogram::default();
        h.record(Duration::from_millis(12));
        assert_eq!(h.quantile_ms(0.99), Some(12.0));
    }
}

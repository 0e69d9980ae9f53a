//! Exponential backoff with "full jitter" above a floor, for registration retries.
//!
//! Attempt `n` (from 0) waits a uniform delay in `[floor, max(floor, min(max, base·2ⁿ))]`.
//! The floor keeps a failing peer from being hammered in a tight loop.

use std::time::Duration;

use rand::{Rng, RngCore};

/// Retry delays that grow exponentially up to a cap, jittered, never below a floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    floor: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, floor: Duration) -> Self {
        Backoff { base, max, floor, attempt: 0 }
    }

    /// The delay before the next retry; advances the attempt counter.
    pub fn next_delay(&mut self, rng: &mut impl RngCore) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let lo = duration_nanos(self.floor);
        let hi = duration_nanos(ceiling);
        Duration::from_nanos(rng.gen_range(lo..=hi))
    }

    /// The upper bound of the next delay: `max(floor, min(max, base·2^attempt))`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let grown = self.base.checked_mul(factor).unwrap_or(Duration::MAX);
        grown.min(self.max).max(self.floor)
    }

    /// How many delays have been handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first attempt (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::SmallRng, SeedableRng};

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delays_stay_within_floor_and_growing_ceiling() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut b = Backoff::new(S(2), S(300), S(1));
        for n in 0..20u32 {
            let cap = S(2u64.saturating_mul(1 << n.min(20))).min(S(300));
            assert_eq!(b.ceiling(), cap.max(S(1)));
            let d = b.next_delay(&mut rng);
            assert!(d >= S(1) && d <= cap, "attempt {n}: {d:?} not in [1s, {cap:?}]");
        }
        assert_eq!(b.attempt(), 20);
        assert_eq!(b.ceiling(), S(300));
    }

    #[test]
    fn delays_grow_on_average_and_are_capped() {
        let mut rng = SmallRng::seed_from_u64(42);
        let mut early = Duration::ZERO;
        let mut late = Duration::ZERO;
        for _ in 0..200 {
            let mut b = Backoff::new(S(2), S(300), S(1));
            early += b.next_delay(&mut rng) + b.next_delay(&mut rng);
            for _ in 0..10 {
                b.next_delay(&mut rng);
            }
            let d = b.next_delay(&mut rng);
            assert!(d <= S(300));
            late += d;
        }
        // Attempts 0-1 average 4 s in total (at most 6 s); attempt 12 averages 150.5 s.
        assert!(early < S(200 * 5), "{early:?}");
        assert!(late > S(200 * 100), "{late:?}");
    }

    #[test]
    fn jitter_is_deterministic_per_seed_and_varies() {
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut b = Backoff::new(S(2), S(300), S(1));
            (0..8).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let delays = run(1);
        assert!(delays.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn reset_restarts_and_floor_wins_over_tiny_base() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut b = Backoff::new(Duration::from_millis(10), S(300), S(1));
        for _ in 0..5 {
            assert_eq!(b.next_delay(&mut rng), S(1));
        }
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), S(1));
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX, S(1));
        for _ in 0..40 {
            assert!(huge.next_delay(&mut rng) >= S(1));
        }
    }
}

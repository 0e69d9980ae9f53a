//! A circuit breaker for one agent endpoint, on an injected clock.
//!
//! Closed → Open after `failure_threshold` consecutive failures; Open for `cooldown`; then
//! Half-open admits exactly one trial ([`CircuitBreaker::try_acquire`]). The trial's success
//! closes the breaker, its failure reopens it for a new cooldown. A trial that never reports
//! (a lost task) is presumed failed after `trial_timeout`, so the breaker cannot stick.
//! Outcomes are judged by [`FailureKind::verdict`]: a clean close (1000) is not a failure.

use std::time::{Duration, Instant};

use super::{FailureKind, Verdict};
use crate::core::timer::{Timer, TimerTable};

/// Breaker tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that trip the breaker (default 5, at least 1).
    pub failure_threshold: u32,
    /// How long the breaker stays Open (default 30 s).
    pub cooldown: Duration,
    /// A half-open trial without a reported outcome counts as failed after this (default 10 s).
    pub trial_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
            trial_timeout: Duration::from_secs(10),
        }
    }
}

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    Open {
        until: Instant,
    },
    /// `trial` is when the single trial was handed out, if it has been.
    HalfOpen {
        trial: Option<Instant>,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// Transitions into Open (from Closed or from a failed trial).
    pub trips: u64,
    pub failures: u64,
    pub successes: u64,
    /// `try_acquire` calls refused.
    pub rejected: u64,
}

/// One endpoint's breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
    consecutive_failures: u32,
    timers: TimerTable,
    stats: BreakerStats,
    /// Taken out of service by an operator: refuses every attempt until put back.
    out_of_service: bool,
}

impl CircuitBreaker {
    /// An operator takes the endpoint out of service (or puts it back).
    pub fn set_in_service(&mut self, in_service: bool) {
        self.out_of_service = !in_service;
    }

    pub fn in_service(&self) -> bool {
        !self.out_of_service
    }

    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            inner: Inner::Closed,
            consecutive_failures: 0,
            timers: TimerTable::default(),
            stats: BreakerStats::default(),
            out_of_service: false,
        }
    }

    /// The state at `now` (an expired cooldown reads as Half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// May a connection be attempted now? In Half-open, true exactly once per trial.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        if self.out_of_service {
            self.stats.rejected += 1;
            return false;
        }
        let granted = match self.inner {
            Inner::Closed => true,
            Inner::Open { .. } => false,
            Inner::HalfOpen { trial: Some(_) } => false,
            Inner::HalfOpen { trial: None } => {
                self.inner = Inner::HalfOpen { trial: Some(now) };
                self.timers.set(Timer::BreakerCooldown, now + self.config.trial_timeout);
                true
            }
        };
        if !granted {
            self.stats.rejected += 1;
        }
        granted
    }

    /// When the breaker can next change state by itself: end of cooldown or of a trial.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Applies an expired cooldown (→ Half-open) or an unreported trial (→ Open).
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.timers.is_expired(Timer::BreakerCooldown, now) {
            return;
        }
        self.timers.stop(Timer::BreakerCooldown);
        match self.inner {
            Inner::Open { .. } => self.inner = Inner::HalfOpen { trial: None },
            Inner::HalfOpen { trial: Some(_) } => self.trip(now),
            Inner::Closed | Inner::HalfOpen { trial: None } => {}
        }
    }

    /// Records the outcome of a connection: `Ok` or a [`FailureKind`] judged by its verdict.
    pub fn record(&mut self, now: Instant, outcome: Result<(), FailureKind>) {
        let verdict = match outcome {
            Ok(()) => Verdict::Success,
            Err(kind) => kind.verdict(),
        };
        self.handle_timeout(now);
        match verdict {
            Verdict::Success => self.on_success(),
            Verdict::Failure => self.on_failure(now),
            Verdict::Neutral => self.on_neutral(),
        }
    }

    pub fn on_success(&mut self) {
        self.stats.successes += 1;
        match self.inner {
            Inner::Closed => self.consecutive_failures = 0,
            Inner::HalfOpen { .. } => self.close(),
            // A late success from before the trip: the cooldown stands.
            Inner::Open { .. } => {}
        }
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.stats.failures += 1;
        match self.inner {
            Inner::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= self.config.failure_threshold.max(1) {
                    self.trip(now);
                }
            }
            Inner::HalfOpen { .. } => self.trip(now),
            Inner::Open { .. } => {}
        }
    }

    /// The endpoint broke the protocol (a flood, oversized frames, too many marks): a failure
    /// that opens the breaker at once, whatever the count. A connection that opens and then
    /// misbehaves would otherwise reset the count with every successful connect.
    pub fn on_violation(&mut self, now: Instant) {
        self.handle_timeout(now);
        self.stats.failures += 1;
        if !matches!(self.inner, Inner::Open { .. }) {
            self.trip(now);
        }
    }

    /// A neutral outcome frees a half-open trial slot without deciding anything.
    fn on_neutral(&mut self) {
        if let Inner::HalfOpen { trial: Some(_) } = self.inner {
            self.inner = Inner::HalfOpen { trial: None };
            self.timers.stop(Timer::BreakerCooldown);
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn stats(&self) -> BreakerStats {
        self.stats
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn trip(&mut self, now: Instant) {
        let until = now + self.config.cooldown;
        self.inner = Inner::Open { until };
        self.timers.set(Timer::BreakerCooldown, until);
        self.stats.trips += 1;
    }

    fn close(&mut self) {
        self.inner = Inner::Closed;
        self.consecutive_failures = 0;
        self.timers.stop(Timer::BreakerCooldown);
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new(BreakerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn tripped(t0: Instant) -> CircuitBreaker {
        let mut b = CircuitBreaker::default();
        for _ in 0..5 {
            assert!(b.try_acquire(t0));
            b.record(t0, Err(FailureKind::Dropped));
        }
        b
    }

    #[test]
    fn a_violation_trips_at_once_even_between_successful_connects() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::default();
        assert!(b.try_acquire(t0));
        b.record(t0, Ok(()));
        b.on_violation(t0);
        assert!(matches!(b.state(t0), BreakerState::Open));
        assert!(!b.try_acquire(t0 + Duration::from_secs(1)), "refused during the cooldown");
        assert_eq!(b.stats().trips, 1);
        b.on_violation(t0 + Duration::from_secs(2));
        assert_eq!(b.stats().trips, 1, "an open breaker is not tripped again");
    }

    #[test]
    fn closed_trips_after_five_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::default();
        for _ in 0..4 {
            b.record(t0, Err(FailureKind::ConnectTimeout));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.record(t0, Ok(()));
        assert_eq!(b.consecutive_failures(), 0);
        for _ in 0..4 {
            b.record(t0, Err(FailureKind::HttpStatus(503)));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.try_acquire(t0));
        b.record(t0, Err(FailureKind::HttpStatus(429)));
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.stats().trips, 1);
        assert_eq!(b.poll_timeout(), Some(t0 + S(30)));
    }

    #[test]
    fn clean_close_and_client_errors_do_not_count() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::default();
        for _ in 0..20 {
            b.record(t0, Err(FailureKind::CleanClose));
            b.record(t0, Err(FailureKind::HttpStatus(404)));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.stats().trips, 0);
    }

    #[test]
    fn open_refuses_until_cooldown_then_half_open_admits_exactly_one() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert!(!b.try_acquire(t0 + S(29)));
        assert!(!b.try_acquire(t0 + S(30) - MS(1)));
        assert_eq!(b.state(t0 + S(30) - MS(1)), BreakerState::Open);
        assert_eq!(b.state(t0 + S(30)), BreakerState::HalfOpen);
        assert!(b.try_acquire(t0 + S(30)));
        for i in 0..10 {
            assert!(!b.try_acquire(t0 + S(30) + MS(i)), "second trial admitted");
        }
        assert_eq!(b.state(t0 + S(31)), BreakerState::HalfOpen);
        assert_eq!(b.stats().rejected, 12);
    }

    #[test]
    fn trial_success_closes() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert!(b.try_acquire(t0 + S(30)));
        b.record(t0 + S(31), Ok(()));
        assert_eq!(b.state(t0 + S(31)), BreakerState::Closed);
        assert_eq!(b.poll_timeout(), None);
        assert!(b.try_acquire(t0 + S(31)));
        assert!(b.try_acquire(t0 + S(31)));
    }

    #[test]
    fn trial_failure_reopens_for_a_new_cooldown() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert!(b.try_acquire(t0 + S(30)));
        b.record(t0 + S(32), Err(FailureKind::Tls));
        assert_eq!(b.state(t0 + S(32)), BreakerState::Open);
        assert_eq!(b.stats().trips, 2);
        assert_eq!(b.poll_timeout(), Some(t0 + S(62)));
        assert!(!b.try_acquire(t0 + S(61)));
        assert!(b.try_acquire(t0 + S(62)));
    }

    #[test]
    fn clean_close_of_trial_closes_and_neutral_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert!(b.try_acquire(t0 + S(30)));
        b.record(t0 + S(30), Err(FailureKind::HttpStatus(401)));
        assert_eq!(b.state(t0 + S(30)), BreakerState::HalfOpen);
        assert!(b.try_acquire(t0 + S(30)));
        b.record(t0 + S(30), Err(FailureKind::CleanClose));
        assert_eq!(b.state(t0 + S(30)), BreakerState::Closed);
    }

    #[test]
    fn unreported_trial_times_out_as_failure() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert!(b.try_acquire(t0 + S(30)));
        assert_eq!(b.poll_timeout(), Some(t0 + S(40)));
        b.handle_timeout(t0 + S(40));
        assert_eq!(b.state(t0 + S(40)), BreakerState::Open);
        assert_eq!(b.stats().trips, 2);
        assert!(b.try_acquire(t0 + S(70)));
    }

    #[test]
    fn late_success_while_open_does_not_close() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        b.record(t0 + S(1), Ok(()));
        assert_eq!(b.state(t0 + S(1)), BreakerState::Open);
        b.record(t0 + S(2), Err(FailureKind::Dropped));
        assert_eq!(b.poll_timeout(), Some(t0 + S(30)), "failure while open extends nothing");
    }

    #[test]
    fn handle_timeout_moves_open_to_half_open() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        b.handle_timeout(t0 + S(10));
        assert_eq!(b.poll_timeout(), Some(t0 + S(30)));
        b.handle_timeout(t0 + S(30));
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.state(t0 + S(30)), BreakerState::HalfOpen);
    }
}

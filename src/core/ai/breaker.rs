//! A circuit breaker for one agent endpoint, on an injected clock.
//!
//! Closed → Open after `failure_threshold` consecutive failures; Open for `cooldown`; then
//! Half-open admits exactly one trial ([`CircuitBreaker::try_acquire`]). The trial's success
//! closes the breaker, its failure reopens it for a new cooldown. A trial that never reports
//! (a lost task) is presumed failed after `trial_timeout`, so the breaker cannot stick.
//! Outcomes are judged by [`FailureKind::verdict`]: a clean close (1000) is not a failure.
//! Every change of state is kept as a [`BreakerChange`] (with its cause) until the owner takes
//! it with [`CircuitBreaker::take_changes`] to log it under the endpoint's name.

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

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeCause {
    /// `count` failures in a row tripped it; `last` is the last one (when known).
    Failures { count: u32, last: Option<FailureKind> },
    /// The cooldown is over: one trial may go through.
    CooldownOver,
    /// The half-open trial succeeded.
    TrialSucceeded,
    /// The half-open trial failed (how, when known).
    TrialFailed(Option<FailureKind>),
    /// The half-open trial never reported within the trial timeout.
    TrialUnreported,
    /// The endpoint broke the protocol (a flood, oversized frames, too many marks).
    Violation,
}

impl ChangeCause {
    /// The cause in words, naming the endpoint.
    pub fn describe(self, endpoint: &str) -> String {
        let last = |k: Option<FailureKind>| k.map(|k| k.describe(endpoint));
        match self {
            ChangeCause::Failures { count, last: l } => match last(l) {
                Some(l) => format!("{count} failures in a row, the last: {l}"),
                None => format!("{count} failures in a row"),
            },
            ChangeCause::CooldownOver => "cooldown over: one trial admitted".to_string(),
            ChangeCause::TrialSucceeded => "the trial connection succeeded".to_string(),
            ChangeCause::TrialFailed(k) => match last(k) {
                Some(l) => format!("the trial failed: {l}"),
                None => "the trial failed".to_string(),
            },
            ChangeCause::TrialUnreported => "the trial never reported".to_string(),
            ChangeCause::Violation => format!("{endpoint} broke the protocol's bounds"),
        }
    }
}

/// One change of state, kept until taken by [`CircuitBreaker::take_changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerChange {
    pub from: BreakerState,
    pub to: BreakerState,
    pub cause: ChangeCause,
    /// When the breaker entered `from` (`None`: closed since it was made).
    pub from_since: Option<Instant>,
}

/// Changes kept when nobody takes them (the oldest are dropped).
const MAX_CHANGES: usize = 16;

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
    /// When the current state was entered (`None`: closed since it was made).
    since: Option<Instant>,
    changes: Vec<BreakerChange>,
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
            since: None,
            changes: Vec::new(),
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
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen { trial: None };
                self.note(Some(now), BreakerState::Open, ChangeCause::CooldownOver);
            }
            Inner::HalfOpen { trial: Some(_) } => self.trip(now, ChangeCause::TrialUnreported),
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
        match (verdict, outcome) {
            (Verdict::Success, _) => self.succeeded(Some(now)),
            (Verdict::Failure, Err(kind)) => self.failed(now, Some(kind)),
            (Verdict::Failure, Ok(())) => self.failed(now, None),
            (Verdict::Neutral, _) => self.on_neutral(),
        }
    }

    pub fn on_success(&mut self) {
        self.succeeded(None);
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.failed(now, None);
    }

    /// The changes of state since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<BreakerChange> {
        std::mem::take(&mut self.changes)
    }

    fn succeeded(&mut self, now: Option<Instant>) {
        self.stats.successes += 1;
        match self.inner {
            Inner::Closed => self.consecutive_failures = 0,
            Inner::HalfOpen { .. } => self.close(now),
            // A late success from before the trip: the cooldown stands.
            Inner::Open { .. } => {}
        }
    }

    fn failed(&mut self, now: Instant, kind: Option<FailureKind>) {
        self.stats.failures += 1;
        match self.inner {
            Inner::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let count = self.consecutive_failures;
                if count >= self.config.failure_threshold.max(1) {
                    self.trip(now, ChangeCause::Failures { count, last: kind });
                }
            }
            Inner::HalfOpen { .. } => self.trip(now, ChangeCause::TrialFailed(kind)),
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
            self.trip(now, ChangeCause::Violation);
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

    fn trip(&mut self, now: Instant, cause: ChangeCause) {
        let from = match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        let until = now + self.config.cooldown;
        self.inner = Inner::Open { until };
        self.timers.set(Timer::BreakerCooldown, until);
        self.stats.trips += 1;
        self.note(Some(now), from, cause);
    }

    fn close(&mut self, now: Option<Instant>) {
        self.inner = Inner::Closed;
        self.consecutive_failures = 0;
        self.timers.stop(Timer::BreakerCooldown);
        self.note(now, BreakerState::HalfOpen, ChangeCause::TrialSucceeded);
    }

    /// Keeps a change into the current state; `now` (when known) starts the new state.
    fn note(&mut self, now: Option<Instant>, from: BreakerState, cause: ChangeCause) {
        let to = match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        if self.changes.len() == MAX_CHANGES {
            self.changes.remove(0);
        }
        self.changes.push(BreakerChange { from, to, cause, from_since: self.since });
        self.since = now;
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

    #[test]
    fn every_change_of_state_is_kept_with_its_cause_and_start() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::default();
        for _ in 0..4 {
            b.record(t0, Err(FailureKind::Refused));
        }
        assert!(b.take_changes().is_empty(), "still closed");
        b.record(t0 + MS(10), Err(FailureKind::Refused));
        let trip = BreakerChange {
            from: BreakerState::Closed,
            to: BreakerState::Open,
            cause: ChangeCause::Failures { count: 5, last: Some(FailureKind::Refused) },
            from_since: None,
        };
        assert_eq!(b.take_changes(), vec![trip]);
        assert_eq!(
            trip.cause.describe("eu"),
            "5 failures in a row, the last: connection refused by eu"
        );
        // the cooldown ends by the timer alone
        b.handle_timeout(t0 + MS(10) + S(30));
        let half = b.take_changes();
        assert_eq!(half.len(), 1);
        assert_eq!((half[0].from, half[0].to), (BreakerState::Open, BreakerState::HalfOpen));
        assert_eq!(half[0].cause, ChangeCause::CooldownOver);
        assert_eq!(half[0].from_since, Some(t0 + MS(10)));
        // the trial fails: open again
        assert!(b.try_acquire(t0 + S(31)));
        b.record(t0 + S(31), Err(FailureKind::HttpStatus(503)));
        let again = b.take_changes();
        assert_eq!((again[0].from, again[0].to), (BreakerState::HalfOpen, BreakerState::Open));
        assert_eq!(again[0].cause, ChangeCause::TrialFailed(Some(FailureKind::HttpStatus(503))));
        // the next trial succeeds: closed
        b.handle_timeout(t0 + S(62));
        assert!(b.try_acquire(t0 + S(62)));
        b.record(t0 + S(62), Ok(()));
        let changes = b.take_changes();
        let last = changes.last().unwrap();
        assert_eq!((last.from, last.to), (BreakerState::HalfOpen, BreakerState::Closed));
        assert_eq!(last.cause, ChangeCause::TrialSucceeded);
        assert_eq!(last.from_since, Some(t0 + S(62)));
    }
}

//! Call setup policy: which agent endpoint to connect to, when to retry, when to give up.
//!
//! One [`SetupAttempt`] per answered call. It prefers the primary endpoint when its breaker
//! admits a connection, else the standby; after a failed attempt the next one prefers the
//! other endpoint. Every retry waits an exponential, fully jittered delay ([`Backoff`], never
//! below a floor: no tight loop). Everything happens inside a total budget (default 1.5 s,
//! hard maximum 2 s): when it is spent, or no attempt can start before it ends, the answer is
//! [`Action::Fallback`] (the ladder / canned prompt). Each attempt also has its own connect
//! deadline, so a hanging primary still leaves time for the standby.
//!
//! Breakers outlive calls, so they are passed in ([`AiBreakers`]); outcomes are recorded into
//! them here, including an attempt that times out. Randomness is injected.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::breaker::CircuitBreaker;
use super::FailureKind;
use crate::core::carrier::Backoff;
use crate::core::timer::{Timer, TimerTable};

/// The budget can never be configured above this.
pub const MAX_BUDGET: Duration = Duration::from_secs(2);

/// Setup tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// Total time from answer to fallback (default 1.5 s; clamped to [`MAX_BUDGET`]).
    pub budget: Duration,
    /// One connect attempt (TCP + TLS + upgrade) gives up after this (default 700 ms).
    pub attempt_timeout: Duration,
    /// Backoff ceiling of the first retry, doubling (default 100 ms).
    pub backoff_base: Duration,
    /// Largest backoff ceiling (default 600 ms).
    pub backoff_max: Duration,
    /// Smallest retry delay (default 20 ms).
    pub backoff_floor: Duration,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            budget: Duration::from_millis(1500),
            attempt_timeout: Duration::from_millis(700),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(600),
            backoff_floor: Duration::from_millis(20),
        }
    }
}

impl SelectorConfig {
    /// The budget actually used: at most [`MAX_BUDGET`].
    pub fn effective_budget(&self) -> Duration {
        self.budget.min(MAX_BUDGET)
    }
}

/// Which configured agent endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Primary,
    Standby,
}

/// The breakers of the configured endpoints (standby is optional). Shared across calls.
#[derive(Debug, Clone, Default)]
pub struct AiBreakers {
    pub primary: CircuitBreaker,
    pub standby: Option<CircuitBreaker>,
}

impl AiBreakers {
    pub fn get_mut(&mut self, endpoint: Endpoint) -> Option<&mut CircuitBreaker> {
        match endpoint {
            Endpoint::Primary => Some(&mut self.primary),
            Endpoint::Standby => self.standby.as_mut(),
        }
    }

    /// Earliest moment a currently refusing breaker may admit again.
    fn next_admission(&self) -> Option<Instant> {
        let standby = self.standby.as_ref().and_then(CircuitBreaker::poll_timeout);
        [self.primary.poll_timeout(), standby].into_iter().flatten().min()
    }
}

/// Identifies one connect attempt, so late results of abandoned attempts are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(pub u32);

/// What the I/O layer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a WebSocket to `endpoint`; give up at `deadline` and report `ConnectTimeout`.
    Connect { id: AttemptId, endpoint: Endpoint, deadline: Instant },
    /// Nothing to do until this instant (or until the pending attempt reports).
    Wait(Instant),
    /// Setup succeeded: bridge the call to this endpoint.
    Connected(Endpoint),
    /// Budget spent: play the fallback (ladder / canned prompt).
    Fallback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Free to start an attempt (possibly after the retry timer).
    Idle,
    InFlight {
        id: AttemptId,
        endpoint: Endpoint,
    },
    Connected(Endpoint),
    Fallback,
}

/// Setup of one call's agent connection.
#[derive(Debug, Clone)]
pub struct SetupAttempt {
    config: SelectorConfig,
    phase: Phase,
    backoff: Backoff,
    timers: TimerTable,
    next_id: u32,
    last_failed: Option<Endpoint>,
    attempts: u32,
}

impl SetupAttempt {
    pub fn new(now: Instant, config: SelectorConfig) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::AiSetupBudget, now + config.effective_budget());
        SetupAttempt {
            backoff: Backoff::new(config.backoff_base, config.backoff_max, config.backoff_floor),
            config,
            phase: Phase::Idle,
            timers,
            next_id: 0,
            last_failed: None,
            attempts: 0,
        }
    }

    /// The next step. Call after creation, after every result and at [`Self::poll_timeout`].
    pub fn poll(
        &mut self,
        now: Instant,
        breakers: &mut AiBreakers,
        rng: &mut impl RngCore,
    ) -> Action {
        if let Phase::InFlight { id, .. } = self.phase {
            if self.timers.is_expired(Timer::AiConnectTimeout, now) {
                self.on_connect_result(now, id, Err(FailureKind::ConnectTimeout), breakers, rng);
            }
        }
        match self.phase {
            Phase::Connected(endpoint) => return Action::Connected(endpoint),
            Phase::Fallback => return Action::Fallback,
            Phase::InFlight { .. } => return self.wait_action(),
            Phase::Idle => {}
        }
        if self.budget_spent(now) {
            return self.fall_back();
        }
        if let Some(retry_at) = self.timers.get(Timer::AiConnectRetry) {
            if now < retry_at {
                return Action::Wait(retry_at);
            }
            self.timers.stop(Timer::AiConnectRetry);
        }
        match self.choose(now, breakers) {
            Some(endpoint) => self.start(now, endpoint),
            None => self.wait_for_breakers(breakers),
        }
    }

    /// A setup that starts with the other endpoint, because `failed` just failed (mid-call
    /// failover: re-bridge to the standby first, not to the agent that dropped the call).
    pub fn after_failure_of(mut self, failed: Endpoint) -> Self {
        self.last_failed = Some(failed);
        self
    }

    /// A setup whose first connect waits until `at` (repeated mid-call failovers back off);
    /// the full budget starts then. The caller hears the filler meanwhile.
    pub fn not_before(mut self, at: Instant) -> Self {
        self.timers.set(Timer::AiConnectRetry, at);
        self.timers.set(Timer::AiSetupBudget, at + self.config.effective_budget());
        self
    }

    /// Reports how attempt `id` ended. Results of attempts no longer in flight are ignored.
    pub fn on_connect_result(
        &mut self,
        now: Instant,
        id: AttemptId,
        result: Result<(), FailureKind>,
        breakers: &mut AiBreakers,
        rng: &mut impl RngCore,
    ) {
        let Phase::InFlight { id: current, endpoint } = self.phase else {
            return;
        };
        if current != id {
            return;
        }
        self.timers.stop(Timer::AiConnectTimeout);
        if let Some(breaker) = breakers.get_mut(endpoint) {
            breaker.record(now, result);
        }
        match result {
            Ok(()) => {
                self.phase = Phase::Connected(endpoint);
                self.timers.stop_all();
            }
            Err(_) => {
                self.phase = Phase::Idle;
                self.last_failed = Some(endpoint);
                let retry_at = now + self.backoff.next_delay(rng);
                self.timers.set(Timer::AiConnectRetry, retry_at);
                if self.timers.get(Timer::AiSetupBudget).is_some_and(|end| retry_at >= end) {
                    self.fall_back();
                }
            }
        }
    }

    /// Gives up now (e.g. the call ended). An attempt in flight counts as a connect timeout
    /// for its breaker, so a half-open trial is never left dangling.
    pub fn abandon(&mut self, now: Instant, breakers: &mut AiBreakers) {
        if let Phase::Connected(_) = self.phase {
            return;
        }
        if let Phase::InFlight { endpoint, .. } = self.phase {
            if let Some(breaker) = breakers.get_mut(endpoint) {
                breaker.record(now, Err(FailureKind::ConnectTimeout));
            }
        }
        self.fall_back();
    }

    /// The next instant [`Self::poll`] must be called even without a result.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Connect attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The instant the budget ends.
    pub fn budget_end(&self) -> Option<Instant> {
        self.timers.get(Timer::AiSetupBudget)
    }

    fn budget_spent(&self, now: Instant) -> bool {
        self.timers.is_expired(Timer::AiSetupBudget, now)
    }

    /// Primary first, except right after the primary failed and a standby exists.
    fn choose(&self, now: Instant, breakers: &mut AiBreakers) -> Option<Endpoint> {
        let order = match (self.last_failed, breakers.standby.is_some()) {
            (Some(Endpoint::Primary), true) => [Endpoint::Standby, Endpoint::Primary],
            _ => [Endpoint::Primary, Endpoint::Standby],
        };
        order.into_iter().find(|&e| breakers.get_mut(e).is_some_and(|b| b.try_acquire(now)))
    }

    fn start(&mut self, now: Instant, endpoint: Endpoint) -> Action {
        let id = AttemptId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.attempts += 1;
        let budget_end = self.budget_end().unwrap_or(now);
        let deadline = (now + self.config.attempt_timeout).min(budget_end);
        self.timers.set(Timer::AiConnectTimeout, deadline);
        self.phase = Phase::InFlight { id, endpoint };
        Action::Connect { id, endpoint, deadline }
    }

    /// Every breaker refuses: wait for the earliest to reopen if that is within budget.
    fn wait_for_breakers(&mut self, breakers: &AiBreakers) -> Action {
        match (breakers.next_admission(), self.budget_end()) {
            (Some(at), Some(end)) if at < end => {
                self.timers.set(Timer::AiConnectRetry, at);
                Action::Wait(at)
            }
            _ => self.fall_back(),
        }
    }

    fn wait_action(&self) -> Action {
        match self.timers.next_timeout() {
            Some(at) => Action::Wait(at),
            None => Action::Fallback,
        }
    }

    fn fall_back(&mut self) -> Action {
        self.phase = Phase::Fallback;
        self.timers.stop_all();
        Action::Fallback
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::SmallRng, SeedableRng};

    use super::super::breaker::{BreakerConfig, BreakerState};
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn both() -> AiBreakers {
        AiBreakers { primary: CircuitBreaker::default(), standby: Some(CircuitBreaker::default()) }
    }

    /// Drives a setup where every connect fails after `latency`; returns the trace.
    fn run_failing(
        seed: u64,
        config: SelectorConfig,
        breakers: &mut AiBreakers,
        latency: Duration,
        kind: FailureKind,
    ) -> (Vec<(Duration, Endpoint)>, Duration) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let mut setup = SetupAttempt::new(now, config);
        let mut trace = Vec::new();
        for _ in 0..1000 {
            match setup.poll(now, breakers, &mut rng) {
                Action::Connect { id, endpoint, deadline } => {
                    assert!(deadline <= t0 + config.effective_budget());
                    assert!(deadline > now);
                    trace.push((now - t0, endpoint));
                    let done = (now + latency).min(deadline);
                    let result = if done == deadline && latency > deadline - now {
                        Err(FailureKind::ConnectTimeout)
                    } else {
                        Err(kind)
                    };
                    now = done;
                    setup.on_connect_result(now, id, result, breakers, &mut rng);
                }
                Action::Wait(until) => {
                    assert!(until > now, "tight loop: wait until {until:?} at {now:?}");
                    assert_eq!(Some(until), setup.poll_timeout());
                    now = until;
                }
                Action::Fallback => return (trace, now - t0),
                Action::Connected(_) => panic!("cannot connect"),
            }
        }
        panic!("no fallback after 1000 steps");
    }

    #[test]
    fn budget_is_respected_exactly_for_many_seeds() {
        for seed in 0..200 {
            let mut breakers = AiBreakers {
                primary: CircuitBreaker::new(BreakerConfig {
                    failure_threshold: 1000,
                    ..BreakerConfig::default()
                }),
                standby: None,
            };
            let (trace, elapsed) = run_failing(
                seed,
                SelectorConfig::default(),
                &mut breakers,
                MS(30),
                FailureKind::Dropped,
            );
            assert!(elapsed <= MS(1500), "seed {seed}: fallback at {elapsed:?}");
            assert!(trace.len() >= 3, "seed {seed}: only {} attempts", trace.len());
            assert!(trace.iter().all(|(at, _)| *at < MS(1500)));
            // Consecutive attempts are separated by latency plus at least the floor.
            for w in trace.windows(2) {
                assert!(w[1].0 - w[0].0 >= MS(30) + MS(20), "seed {seed}: {trace:?}");
            }
        }
    }

    #[test]
    fn budget_is_clamped_to_two_seconds() {
        let config =
            SelectorConfig { budget: Duration::from_secs(10), ..SelectorConfig::default() };
        let mut breakers = AiBreakers {
            primary: CircuitBreaker::new(BreakerConfig {
                failure_threshold: 1000,
                ..BreakerConfig::default()
            }),
            standby: None,
        };
        let (_, elapsed) = run_failing(9, config, &mut breakers, MS(10), FailureKind::Tls);
        assert!(elapsed <= MAX_BUDGET, "{elapsed:?}");
        assert!(elapsed > MS(1500), "clamped budget used: {elapsed:?}");
    }

    #[test]
    fn hanging_attempts_time_out_and_standby_gets_its_turn() {
        let mut breakers = both();
        let (trace, elapsed) = run_failing(
            1,
            SelectorConfig::default(),
            &mut breakers,
            Duration::from_secs(60),
            FailureKind::Dropped,
        );
        assert_eq!(trace[0], (Duration::ZERO, Endpoint::Primary));
        assert_eq!(trace[1].1, Endpoint::Standby);
        assert!(trace[1].0 >= MS(700));
        assert!(elapsed <= MS(1500));
        let on = |e| trace.iter().filter(|(_, x)| *x == e).count() as u32;
        assert_eq!(breakers.primary.consecutive_failures(), on(Endpoint::Primary));
        let standby = breakers.standby.as_ref().map(|b| b.consecutive_failures());
        assert_eq!(standby, Some(on(Endpoint::Standby)));
        for w in trace.windows(2) {
            assert_ne!(w[0].1, w[1].1, "attempts alternate: {trace:?}");
        }
    }

    #[test]
    fn poll_timeout_handles_attempt_timeout_without_a_result() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut breakers = both();
        let t0 = Instant::now();
        let mut setup = SetupAttempt::new(t0, SelectorConfig::default());
        let Action::Connect { id, deadline, .. } = setup.poll(t0, &mut breakers, &mut rng) else {
            panic!("expected connect");
        };
        assert_eq!(deadline, t0 + MS(700));
        assert_eq!(setup.poll(t0 + MS(10), &mut breakers, &mut rng), Action::Wait(deadline));
        let next = setup.poll(deadline, &mut breakers, &mut rng);
        assert!(matches!(next, Action::Wait(at) if at > deadline && at <= deadline + MS(100)));
        // The late result of the abandoned attempt is ignored.
        setup.on_connect_result(deadline + MS(5), id, Ok(()), &mut breakers, &mut rng);
        assert!(matches!(setup.poll(deadline + MS(5), &mut breakers, &mut rng), Action::Wait(_)));
        assert_eq!(breakers.primary.consecutive_failures(), 1);
    }

    #[test]
    fn success_connects_and_records() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut breakers = both();
        let t0 = Instant::now();
        let mut setup = SetupAttempt::new(t0, SelectorConfig::default());
        let Action::Connect { id, endpoint, .. } = setup.poll(t0, &mut breakers, &mut rng) else {
            panic!("expected connect");
        };
        assert_eq!(endpoint, Endpoint::Primary);
        setup.on_connect_result(t0 + MS(80), id, Ok(()), &mut breakers, &mut rng);
        let done = setup.poll(t0 + MS(80), &mut breakers, &mut rng);
        assert_eq!(done, Action::Connected(Endpoint::Primary));
        assert_eq!(setup.poll_timeout(), None);
        assert_eq!(breakers.primary.stats().successes, 1);
    }

    #[test]
    fn standby_used_when_primary_breaker_open() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(4);
        let mut breakers = both();
        for _ in 0..5 {
            breakers.primary.record(t0, Err(FailureKind::Dropped));
        }
        assert_eq!(breakers.primary.state(t0), BreakerState::Open);
        let mut setup = SetupAttempt::new(t0, SelectorConfig::default());
        let Action::Connect { endpoint, .. } = setup.poll(t0, &mut breakers, &mut rng) else {
            panic!("expected connect");
        };
        assert_eq!(endpoint, Endpoint::Standby);
    }

    #[test]
    fn breaker_consulted_all_open_means_immediate_fallback() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(5);
        let mut breakers = both();
        for _ in 0..5 {
            breakers.primary.record(t0, Err(FailureKind::Dropped));
            if let Some(s) = breakers.standby.as_mut() {
                s.record(t0, Err(FailureKind::HttpStatus(502)));
            }
        }
        let mut setup = SetupAttempt::new(t0, SelectorConfig::default());
        assert_eq!(setup.poll(t0, &mut breakers, &mut rng), Action::Fallback);
        assert_eq!(setup.attempts(), 0);
    }

    #[test]
    fn waits_for_a_breaker_reopening_within_budget() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(6);
        let mut breakers = AiBreakers::default();
        for _ in 0..5 {
            breakers.primary.record(t0, Err(FailureKind::Dropped));
        }
        let now = t0 + Duration::from_secs(30) - MS(400);
        let mut setup = SetupAttempt::new(now, SelectorConfig::default());
        assert_eq!(
            setup.poll(now, &mut breakers, &mut rng),
            Action::Wait(t0 + Duration::from_secs(30))
        );
        let at = t0 + Duration::from_secs(30);
        assert!(matches!(
            setup.poll(at, &mut breakers, &mut rng),
            Action::Connect { endpoint: Endpoint::Primary, .. }
        ));
        // The half-open trial is taken: a concurrent call gets nothing.
        let mut other = SetupAttempt::new(at, SelectorConfig::default());
        assert_eq!(other.poll(at, &mut breakers, &mut rng), Action::Fallback);
    }

    #[test]
    fn failover_alternates_and_abandon_releases_trial() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut breakers = both();
        let mut setup = SetupAttempt::new(t0, SelectorConfig::default());
        let Action::Connect { id, endpoint, .. } = setup.poll(t0, &mut breakers, &mut rng) else {
            panic!();
        };
        assert_eq!(endpoint, Endpoint::Primary);
        setup.on_connect_result(t0 + MS(5), id, Err(FailureKind::Tls), &mut breakers, &mut rng);
        let Action::Wait(at) = setup.poll(t0 + MS(5), &mut breakers, &mut rng) else {
            panic!();
        };
        let Action::Connect { endpoint, .. } = setup.poll(at, &mut breakers, &mut rng) else {
            panic!();
        };
        assert_eq!(endpoint, Endpoint::Standby);
        setup.abandon(at + MS(1), &mut breakers);
        assert_eq!(setup.poll(at + MS(1), &mut breakers, &mut rng), Action::Fallback);
        assert_eq!(breakers.standby.as_ref().map(|b| b.stats().failures), Some(1));
    }

    #[test]
    fn deterministic_per_seed() {
        let run = |seed| {
            let mut breakers = both();
            run_failing(
                seed,
                SelectorConfig::default(),
                &mut breakers,
                MS(15),
                FailureKind::Dropped,
            )
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11).0, run(12).0);
    }
}

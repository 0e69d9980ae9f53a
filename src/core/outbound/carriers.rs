//! Which carrier an outbound INVITE goes to: the preferred carrier when healthy, then the
//! other healthy ones in configuration order, then those whose health is not known yet. A
//! carrier is usable when it has a proxy, is in service (operator), its OPTIONS probes do not
//! say it is down, it is not held by a `Retry-After`, and its outbound breaker admits a call
//! (closed, or the one half-open trial). Carrier failures (see [`super::policy`]) feed a
//! per-carrier [`CircuitBreaker`]: `breaker_failures` in a row open it for the cooldown.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::ai::{BreakerConfig, BreakerState, CircuitBreaker};

/// What the endpoint knows about a carrier when choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarrierView {
    /// It has a proxy to send INVITEs to.
    pub has_proxy: bool,
    /// OPTIONS health: `Some(true)` up, `Some(false)` down, `None` not known yet.
    pub probe_up: Option<bool>,
    /// Not taken out of service by an operator.
    pub in_service: bool,
}

/// Per-carrier outbound counters, for /status and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboundCarrierStats {
    /// INVITEs sent through this carrier.
    pub attempts: u64,
    /// Attempts that failed for a carrier reason and moved to the next carrier (or failed).
    pub failures: u64,
    /// Retry-After holds taken.
    pub holds: u64,
}

/// Outbound state of every carrier (index = configuration order).
#[derive(Debug, Clone)]
pub struct OutboundCarriers {
    breakers: Vec<CircuitBreaker>,
    hold_until: Vec<Option<Instant>>,
    preferred: Option<usize>,
    stats: Vec<OutboundCarrierStats>,
}

impl OutboundCarriers {
    pub fn new(count: usize, breaker: BreakerConfig, preferred: Option<usize>) -> Self {
        OutboundCarriers {
            breakers: vec![CircuitBreaker::new(breaker); count],
            hold_until: vec![None; count],
            preferred: preferred.filter(|p| *p < count),
            stats: vec![OutboundCarrierStats::default(); count],
        }
    }

    /// Usable carriers not yet `tried`, best first (nothing is acquired).
    pub fn candidates(&self, now: Instant, views: &[CarrierView], tried: &[usize]) -> Vec<usize> {
        let mut usable: Vec<usize> = (0..self.breakers.len().min(views.len()))
            .filter(|i| !tried.contains(i) && self.usable(now, *i, &views[*i]))
            .collect();
        usable.sort_by_key(|&i| {
            let health = match views[i].probe_up {
                Some(true) => 0,
                _ => 1,
            };
            (health, Some(i) != self.preferred, i)
        });
        usable
    }

    fn usable(&self, now: Instant, i: usize, view: &CarrierView) -> bool {
        view.has_proxy
            && view.in_service
            && view.probe_up != Some(false)
            && !self.held(now, i)
            && self.breakers[i].state(now) != BreakerState::Open
    }

    /// Whether a Retry-After hold keeps carrier `i` out of use at `now`.
    pub fn held(&self, now: Instant, i: usize) -> bool {
        self.hold_until.get(i).copied().flatten().is_some_and(|t| now < t)
    }

    /// The best usable carrier not yet `tried` whose breaker admits a call (taking the
    /// half-open trial if that is what it is); counts the attempt.
    pub fn acquire(
        &mut self,
        now: Instant,
        views: &[CarrierView],
        tried: &[usize],
    ) -> Option<usize> {
        let chosen = self
            .candidates(now, views, tried)
            .into_iter()
            .find(|&i| self.breakers[i].try_acquire(now))?;
        self.stats[chosen].attempts += 1;
        Some(chosen)
    }

    /// Carrier `i` answered (any response that is not a carrier failure).
    pub fn on_success(&mut self, i: usize) {
        if let Some(b) = self.breakers.get_mut(i) {
            b.on_success();
        }
    }

    /// Carrier `i` failed an attempt for a carrier reason; `hold` from a Retry-After.
    pub fn on_failure(&mut self, now: Instant, i: usize, hold: Option<Duration>) {
        let Some(b) = self.breakers.get_mut(i) else { return };
        b.on_failure(now);
        self.stats[i].failures += 1;
        if let Some(hold) = hold {
            self.hold_until[i] = Some(now + hold);
            self.stats[i].holds += 1;
        }
    }

    /// Carrier `i`'s outbound breaker at `now`.
    pub fn breaker_state(&self, now: Instant, i: usize) -> Option<BreakerState> {
        self.breakers.get(i).map(|b| b.state(now))
    }

    /// How long carrier `i` is still held by a Retry-After.
    pub fn hold_remaining(&self, now: Instant, i: usize) -> Option<Duration> {
        self.hold_until.get(i).copied().flatten().filter(|t| now < *t).map(|t| t - now)
    }

    pub fn stats(&self, i: usize) -> OutboundCarrierStats {
        self.stats.get(i).copied().unwrap_or_default()
    }

    /// Times carrier `i`'s breaker opened.
    pub fn trips(&self, i: usize) -> u64 {
        self.breakers.get(i).map_or(0, |b| b.stats().trips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: CarrierView = CarrierView { has_proxy: true, probe_up: Some(true), in_service: true };
    const UNKNOWN: CarrierView = CarrierView { has_proxy: true, probe_up: None, in_service: true };

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
            trial_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn preferred_healthy_first_then_others_then_unknown() {
        let c = OutboundCarriers::new(3, cfg(), Some(1));
        let t0 = Instant::now();
        assert_eq!(c.candidates(t0, &[UP, UP, UP], &[]), vec![1, 0, 2]);
        // preferred but health unknown: healthy ones go first
        assert_eq!(c.candidates(t0, &[UP, UNKNOWN, UP], &[]), vec![0, 2, 1]);
        assert_eq!(c.candidates(t0, &[UP, UP, UP], &[1]), vec![0, 2]);
    }

    #[test]
    fn down_out_of_service_and_proxyless_carriers_are_skipped() {
        let c = OutboundCarriers::new(4, cfg(), None);
        let t0 = Instant::now();
        let views = [
            CarrierView { probe_up: Some(false), ..UP },
            CarrierView { in_service: false, ..UP },
            CarrierView { has_proxy: false, ..UP },
            UP,
        ];
        assert_eq!(c.candidates(t0, &views, &[]), vec![3]);
    }

    #[test]
    fn retry_after_holds_a_carrier_for_that_long() {
        let mut c = OutboundCarriers::new(2, cfg(), None);
        let t0 = Instant::now();
        c.on_failure(t0, 0, Some(Duration::from_secs(60)));
        assert_eq!(c.candidates(t0, &[UP, UP], &[]), vec![1]);
        assert_eq!(c.candidates(t0 + Duration::from_secs(59), &[UP, UP], &[]), vec![1]);
        assert_eq!(c.candidates(t0 + Duration::from_secs(60), &[UP, UP], &[]), vec![0, 1]);
        assert_eq!(c.stats(0).holds, 1);
    }

    #[test]
    fn five_failures_open_the_breaker_for_30_s_then_one_trial() {
        let mut c = OutboundCarriers::new(2, cfg(), None);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(c.acquire(t0, &[UP, UP], &[]), Some(0));
            c.on_failure(t0, 0, None);
        }
        assert_eq!(c.breaker_state(t0, 0), Some(BreakerState::Closed));
        assert_eq!(c.acquire(t0, &[UP, UP], &[]), Some(0));
        c.on_failure(t0, 0, None);
        assert_eq!(c.breaker_state(t0, 0), Some(BreakerState::Open));
        assert_eq!(c.acquire(t0, &[UP, UP], &[]), Some(1));
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(c.breaker_state(t1, 0), Some(BreakerState::HalfOpen));
        // one trial only
        assert_eq!(c.acquire(t1, &[UP, UP], &[]), Some(0));
        assert_eq!(c.acquire(t1, &[UP, UP], &[]), Some(1));
        c.on_success(0);
        assert_eq!(c.breaker_state(t1, 0), Some(BreakerState::Closed));
        assert_eq!(c.acquire(t1, &[UP, UP], &[]), Some(0));
        assert_eq!(c.trips(0), 1);
        assert_eq!(c.stats(0).attempts, 7);
    }

    #[test]
    fn nothing_usable_gives_none() {
        let mut c = OutboundCarriers::new(1, cfg(), Some(5));
        assert_eq!(c.acquire(Instant::now(), &[UP], &[0]), None);
        assert_eq!(c.acquire(Instant::now(), &[], &[]), None);
    }
}

//! One outbound call leg across carriers, sans-IO: which attempt is current, when to give up
//! on it (no provisional response in time, the ring timeout), and what a failure leads to
//! (the next carrier, or the end). The endpoint builds and sends the SIP messages the
//! [`LegAction`]s ask for and feeds responses back with the attempt number they belong to.
//!
//! Attempts without any 1xx are abandoned, not cancelled (RFC 3261 §9.1 forbids a CANCEL
//! before a provisional response): the endpoint CANCELs a late 1xx and ACKs + BYEs a late 2xx
//! of an abandoned attempt.

use std::time::{Duration, Instant};

use super::carriers::{CarrierView, OutboundCarriers};
use super::policy::{decide, AttemptFailure, Decision};
use crate::core::timer::{Timer, TimerTable};

/// Tuning of a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegConfig {
    /// No 1xx within this long: the attempt is abandoned and the next carrier tried.
    pub no_provisional: Duration,
    /// The whole leg (every attempt, ringing included) gives up after this long: NoAnswer.
    pub ring_timeout: Duration,
    /// Carrier names by index, for causes ("carrier-b: 503 Service Unavailable").
    pub carrier_names: Vec<String>,
}

/// Where the leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// Not started.
    Idle,
    /// INVITE sent on the current attempt, no 1xx yet.
    Trying,
    /// A 1xx arrived on the current attempt (ringing once a 180/183 came).
    Proceeding,
    /// A 2xx arrived: the human answered.
    Answered,
    /// Over: failed, not answered in time, or stopped.
    Ended,
}

/// What the endpoint is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegAction {
    /// Send an INVITE through carrier `carrier`, as attempt `attempt`.
    Invite { carrier: usize, attempt: u32 },
    /// Attempt `attempt` got no 1xx and is given up: CANCEL it if a 1xx still comes, ACK and
    /// BYE a late 2xx.
    Abandon { attempt: u32 },
    /// CANCEL attempt `attempt` (it has had a provisional response).
    Cancel { attempt: u32 },
    /// The first 180/183: the human's phone rings.
    Ringing,
    /// The human answered (2xx) through `carrier`: ACK, dialog, media.
    Answered { carrier: usize },
    /// No carrier could reach the human; `cause` is what was seen last.
    Unavailable { cause: String },
    /// The ring timeout passed without an answer.
    NoAnswer,
}

/// A response to an attempt's INVITE, as the leg needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    pub status: u16,
    pub reason: &'a str,
    /// Its `Retry-After`, parsed.
    pub retry_after: Option<Duration>,
}

/// One failed attempt, for the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    pub carrier: usize,
    pub failure: AttemptFailure,
    /// True when it led to another carrier being tried (a failover).
    pub rerouted: bool,
}

/// The leg (see the module docs).
#[derive(Debug, Clone)]
pub struct OutboundLeg {
    cfg: LegConfig,
    state: LegState,
    /// Current attempt number (1-based) and its carrier.
    attempt: u32,
    carrier: Option<usize>,
    ringing: bool,
    tried: Vec<usize>,
    failed: Vec<FailedAttempt>,
    timers: TimerTable,
}

impl OutboundLeg {
    pub fn new(cfg: LegConfig) -> Self {
        OutboundLeg {
            cfg,
            state: LegState::Idle,
            attempt: 0,
            carrier: None,
            ringing: false,
            tried: Vec::new(),
            failed: Vec::new(),
            timers: TimerTable::default(),
        }
    }

    /// Starts the leg: the ring timeout runs from now; the first INVITE goes out (or the leg
    /// fails at once when no carrier is usable).
    pub fn start(
        &mut self,
        now: Instant,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
    ) -> Vec<LegAction> {
        if self.state != LegState::Idle {
            return Vec::new();
        }
        self.timers.set(Timer::HumanRing, now + self.cfg.ring_timeout);
        let mut out = Vec::new();
        self.next_attempt(now, pool, views, &mut out);
        out
    }

    fn next_attempt(
        &mut self,
        now: Instant,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
        out: &mut Vec<LegAction>,
    ) {
        let Some(carrier) = pool.acquire(now, views, &self.tried) else {
            let cause = match self.failed.last() {
                Some(f) => format!("{}: {}", self.name(f.carrier), f.failure.cause()),
                None => "no carrier available".to_string(),
            };
            if let Some(last) = self.failed.last_mut() {
                last.rerouted = false;
            }
            self.end();
            out.push(LegAction::Unavailable { cause });
            return;
        };
        self.tried.push(carrier);
        self.attempt += 1;
        self.carrier = Some(carrier);
        self.state = LegState::Trying;
        self.timers.set(Timer::OutboundProvisional, now + self.cfg.no_provisional);
        out.push(LegAction::Invite { carrier, attempt: self.attempt });
    }

    fn name(&self, carrier: usize) -> &str {
        self.cfg.carrier_names.get(carrier).map_or("carrier", String::as_str)
    }

    fn is_current(&self, attempt: u32) -> bool {
        attempt == self.attempt && matches!(self.state, LegState::Trying | LegState::Proceeding)
    }

    /// A response to attempt `attempt`'s INVITE (`retry_after` from its header).
    pub fn on_response(
        &mut self,
        now: Instant,
        attempt: u32,
        reply: Reply<'_>,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
    ) -> Vec<LegAction> {
        let Reply { status, reason, retry_after } = reply;
        let mut out = Vec::new();
        if !self.is_current(attempt) {
            return out;
        }
        let Some(carrier) = self.carrier else { return out };
        match status {
            100..=199 => {
                if self.state == LegState::Trying {
                    pool.on_success(carrier);
                }
                self.timers.stop(Timer::OutboundProvisional);
                self.state = LegState::Proceeding;
                if matches!(status, 180 | 183) && !self.ringing {
                    self.ringing = true;
                    out.push(LegAction::Ringing);
                }
            }
            200..=299 => {
                if self.state == LegState::Trying {
                    pool.on_success(carrier);
                }
                self.timers.stop_all();
                self.state = LegState::Answered;
                out.push(LegAction::Answered { carrier });
            }
            _ => {
                let failure =
                    AttemptFailure::Status { status, reason: reason.to_string(), retry_after };
                self.fail(now, failure, pool, views, &mut out);
            }
        }
        out
    }

    /// The INVITE of attempt `attempt` could not be delivered.
    pub fn on_transport_error(
        &mut self,
        now: Instant,
        attempt: u32,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
    ) -> Vec<LegAction> {
        let mut out = Vec::new();
        if self.is_current(attempt) {
            self.fail(now, AttemptFailure::TransportError, pool, views, &mut out);
        }
        out
    }

    /// The INVITE transaction of attempt `attempt` timed out (Timer B or C).
    pub fn on_timeout(
        &mut self,
        now: Instant,
        attempt: u32,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
    ) -> Vec<LegAction> {
        let mut out = Vec::new();
        if self.is_current(attempt) {
            self.fail(now, AttemptFailure::Timeout, pool, views, &mut out);
        }
        out
    }

    fn fail(
        &mut self,
        now: Instant,
        failure: AttemptFailure,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
        out: &mut Vec<LegAction>,
    ) {
        let Some(carrier) = self.carrier else { return };
        self.timers.stop(Timer::OutboundProvisional);
        let decision = decide(&failure);
        match decision {
            Decision::Reroute { hold } => pool.on_failure(now, carrier, hold),
            Decision::Final => pool.on_success(carrier),
        }
        let cause = failure.cause();
        self.failed.push(FailedAttempt {
            carrier,
            failure,
            rerouted: decision.is_carrier_failure(),
        });
        match decision {
            Decision::Reroute { .. } => self.next_attempt(now, pool, views, out),
            Decision::Final => {
                self.end();
                out.push(LegAction::Unavailable { cause });
            }
        }
    }

    /// Runs the leg's timers: no provisional response in time, the ring timeout.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        pool: &mut OutboundCarriers,
        views: &[CarrierView],
    ) -> Vec<LegAction> {
        let mut out = Vec::new();
        for timer in self.timers.take_expired(now) {
            match timer {
                Timer::HumanRing => {
                    out.extend(self.stop());
                    out.push(LegAction::NoAnswer);
                    return out;
                }
                Timer::OutboundProvisional if self.state == LegState::Trying => {
                    out.push(LegAction::Abandon { attempt: self.attempt });
                    self.fail(now, AttemptFailure::NoProvisional, pool, views, &mut out);
                }
                _ => {}
            }
        }
        out
    }

    /// Gives the leg up (the caller left, or the ring timeout): the current attempt is
    /// cancelled or abandoned. An answered leg is the endpoint's to BYE.
    pub fn stop(&mut self) -> Vec<LegAction> {
        let out = match self.state {
            LegState::Trying => vec![LegAction::Abandon { attempt: self.attempt }],
            LegState::Proceeding => vec![LegAction::Cancel { attempt: self.attempt }],
            _ => Vec::new(),
        };
        if self.state != LegState::Answered {
            self.end();
        }
        out
    }

    fn end(&mut self) {
        self.state = LegState::Ended;
        self.timers.stop_all();
    }

    pub fn state(&self) -> LegState {
        self.state
    }

    /// The current (or last) attempt number and its carrier.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn carrier(&self) -> Option<usize> {
        self.carrier
    }

    /// Every failed attempt so far, in order.
    pub fn failed(&self) -> &[FailedAttempt] {
        &self.failed
    }

    /// Attempts that moved the call to another carrier.
    pub fn failovers(&self) -> usize {
        self.failed.iter().filter(|f| f.rerouted).count()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ai::BreakerConfig;

    const UP: CarrierView = CarrierView { has_proxy: true, probe_up: Some(true), in_service: true };
    const VIEWS: [CarrierView; 2] = [UP, UP];

    fn setup() -> (OutboundLeg, OutboundCarriers, Instant) {
        let cfg = LegConfig {
            no_provisional: Duration::from_secs(2),
            ring_timeout: Duration::from_secs(25),
            carrier_names: vec!["carrier-a".into(), "carrier-b".into()],
        };
        (
            OutboundLeg::new(cfg),
            OutboundCarriers::new(2, BreakerConfig::default(), Some(0)),
            Instant::now(),
        )
    }

    #[test]
    fn a_503_moves_to_the_next_carrier_and_an_answer_there_connects() {
        let (mut leg, mut pool, t0) = setup();
        assert_eq!(
            leg.start(t0, &mut pool, &VIEWS),
            vec![LegAction::Invite { carrier: 0, attempt: 1 }]
        );
        let out = leg.on_response(
            t0,
            1,
            Reply { status: 503, reason: "Service Unavailable", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        assert_eq!(out, vec![LegAction::Invite { carrier: 1, attempt: 2 }]);
        // a late response for attempt 1 is ignored
        assert!(leg
            .on_response(
                t0,
                1,
                Reply { status: 180, reason: "Ringing", retry_after: None },
                &mut pool,
                &VIEWS
            )
            .is_empty());
        assert_eq!(
            leg.on_response(
                t0,
                2,
                Reply { status: 180, reason: "Ringing", retry_after: None },
                &mut pool,
                &VIEWS
            ),
            vec![LegAction::Ringing]
        );
        assert!(leg
            .on_response(
                t0,
                2,
                Reply { status: 183, reason: "Session Progress", retry_after: None },
                &mut pool,
                &VIEWS
            )
            .is_empty());
        assert_eq!(
            leg.on_response(
                t0,
                2,
                Reply { status: 200, reason: "OK", retry_after: None },
                &mut pool,
                &VIEWS
            ),
            vec![LegAction::Answered { carrier: 1 }]
        );
        assert_eq!(leg.failovers(), 1);
        assert_eq!(leg.poll_timeout(), None);
    }

    #[test]
    fn busy_is_final_and_not_rerouted() {
        let (mut leg, mut pool, t0) = setup();
        leg.start(t0, &mut pool, &VIEWS);
        leg.on_response(
            t0,
            1,
            Reply { status: 100, reason: "Trying", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        let out = leg.on_response(
            t0,
            1,
            Reply { status: 486, reason: "Busy Here", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        assert_eq!(out, vec![LegAction::Unavailable { cause: "486 Busy Here".into() }]);
        assert_eq!(leg.state(), LegState::Ended);
        assert_eq!(leg.failovers(), 0);
    }

    #[test]
    fn no_provisional_in_2_s_abandons_and_tries_the_other() {
        let (mut leg, mut pool, t0) = setup();
        leg.start(t0, &mut pool, &VIEWS);
        assert!(leg.handle_timeout(t0 + Duration::from_millis(1999), &mut pool, &VIEWS).is_empty());
        assert_eq!(leg.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        let out = leg.handle_timeout(t0 + Duration::from_secs(2), &mut pool, &VIEWS);
        assert_eq!(
            out,
            vec![LegAction::Abandon { attempt: 1 }, LegAction::Invite { carrier: 1, attempt: 2 }]
        );
        // the other answers 100 in time: no more failover
        leg.on_response(
            t0 + Duration::from_secs(3),
            2,
            Reply { status: 100, reason: "Trying", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        assert!(leg.handle_timeout(t0 + Duration::from_secs(10), &mut pool, &VIEWS).is_empty());
    }

    #[test]
    fn both_failing_is_unavailable_with_the_last_cause() {
        let (mut leg, mut pool, t0) = setup();
        leg.start(t0, &mut pool, &VIEWS);
        leg.on_transport_error(t0, 1, &mut pool, &VIEWS);
        let out = leg.on_response(
            t0,
            2,
            Reply { status: 503, reason: "Service Unavailable", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        assert_eq!(
            out,
            vec![LegAction::Unavailable { cause: "carrier-b: 503 Service Unavailable".into() }]
        );
        assert_eq!(leg.failovers(), 1);
        assert_eq!(leg.failed().len(), 2);
    }

    #[test]
    fn ringing_past_the_timeout_is_cancelled_as_no_answer() {
        let (mut leg, mut pool, t0) = setup();
        leg.start(t0, &mut pool, &VIEWS);
        leg.on_response(
            t0,
            1,
            Reply { status: 180, reason: "Ringing", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        assert!(leg.handle_timeout(t0 + Duration::from_secs(24), &mut pool, &VIEWS).is_empty());
        let out = leg.handle_timeout(t0 + Duration::from_secs(25), &mut pool, &VIEWS);
        assert_eq!(out, vec![LegAction::Cancel { attempt: 1 }, LegAction::NoAnswer]);
        assert_eq!(leg.state(), LegState::Ended);
        // the 487 that follows the CANCEL changes nothing
        assert!(leg
            .on_response(
                t0,
                1,
                Reply { status: 487, reason: "Request Terminated", retry_after: None },
                &mut pool,
                &VIEWS
            )
            .is_empty());
    }

    #[test]
    fn no_usable_carrier_fails_at_once() {
        let (mut leg, mut pool, t0) = setup();
        let down = [CarrierView { probe_up: Some(false), ..UP }; 2];
        assert_eq!(
            leg.start(t0, &mut pool, &down),
            vec![LegAction::Unavailable { cause: "no carrier available".into() }]
        );
    }

    #[test]
    fn stop_while_trying_abandons_while_ringing_cancels() {
        let (mut leg, mut pool, t0) = setup();
        leg.start(t0, &mut pool, &VIEWS);
        assert_eq!(leg.stop(), vec![LegAction::Abandon { attempt: 1 }]);
        let (mut leg, mut pool, t0) = setup();
        leg.start(t0, &mut pool, &VIEWS);
        leg.on_response(
            t0,
            1,
            Reply { status: 183, reason: "Session Progress", retry_after: None },
            &mut pool,
            &VIEWS,
        );
        assert_eq!(leg.stop(), vec![LegAction::Cancel { attempt: 1 }]);
        assert!(leg.stop().is_empty());
    }
}

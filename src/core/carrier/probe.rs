//! OPTIONS health probing of one carrier: when to send a probe, and the Up/Down verdict.
//!
//! One probe is outstanding at a time. The next probe is due `interval` after the previous one
//! was sent (or at once, if the previous one took longer than that to resolve). A probe fails
//! on its own [`Timer::ProbeTimeout`], independent of the transaction's Timer F; a response
//! arriving after that is ignored, as are responses for any id but the outstanding one.
//!
//! Result classification: any final response (2xx-6xx) proves the carrier is reachable and
//! counts as success, except 503 (overloaded / unavailable) and 408 (the endpoint may
//! synthesise it for a local transaction timeout), which count as failure. 1xx is ignored.
//!
//! The state starts `Unknown` and becomes Up after `up_after` consecutive successes or Down
//! after `down_after` consecutive failures (the same thresholds apply from Unknown).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::timer::{Timer, TimerTable};

/// Probe policy for one carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the carrier is marked Down (at least 1).
    pub down_after: u32,
    /// Consecutive successes before the carrier is marked Up (at least 1).
    pub up_after: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            down_after: 3,
            up_after: 2,
        }
    }
}

/// What the prober wants from the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutput {
    /// Send an OPTIONS to the carrier and report its fate with this id.
    SendProbe { probe_id: u64 },
    /// The carrier's health verdict changed.
    StateChanged { up: bool },
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    id: u64,
    sent_at: Instant,
}

/// The health-probe state machine for one carrier.
#[derive(Debug, Clone)]
pub struct Prober {
    cfg: ProbeSettings,
    timers: TimerTable,
    up: Option<bool>,
    successes: u32,
    failures: u32,
    next_id: u64,
    outstanding: Option<Outstanding>,
    last_success: Option<Instant>,
    last_rtt: Option<std::time::Duration>,
    outputs: VecDeque<ProbeOutput>,
}

impl Prober {
    /// A prober whose first probe is due at `now`.
    pub fn new(cfg: ProbeSettings, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Probe, now);
        Prober {
            cfg,
            timers,
            up: None,
            successes: 0,
            failures: 0,
            next_id: 1,
            outstanding: None,
            last_success: None,
            last_rtt: None,
            outputs: VecDeque::new(),
        }
    }

    /// Fires due timers: `Probe` sends the next probe, `ProbeTimeout` fails the outstanding one.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.take_expired(now) {
            match timer {
                Timer::Probe => self.send_probe(now),
                Timer::ProbeTimeout => {
                    if let Some(o) = self.outstanding {
                        self.resolve(now, o.id, false);
                    }
                }
                _ => {}
            }
        }
    }

    /// A response to probe `probe_id`; see the module docs for how `status` is classified.
    pub fn on_response(&mut self, now: Instant, probe_id: u64, status: u16) {
        if status < 200 {
            return;
        }
        self.resolve(now, probe_id, !matches!(status, 408 | 503));
    }

    /// The probe could not be sent or its transaction failed at the transport level.
    pub fn on_transport_error(&mut self, now: Instant, probe_id: u64) {
        self.resolve(now, probe_id, false);
    }

    pub fn poll_output(&mut self) -> Option<ProbeOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// `None` until enough results have come in to decide.
    pub fn is_up(&self) -> Option<bool> {
        self.up
    }

    /// When the last successful probe response arrived.
    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// Round-trip time of the last probe that was answered.
    pub fn last_rtt(&self) -> Option<std::time::Duration> {
        self.last_rtt
    }

    /// The probe policy this prober runs.
    pub fn settings(&self) -> &ProbeSettings {
        &self.cfg
    }

    /// The id of the probe currently awaiting a result, if any.
    pub fn outstanding(&self) -> Option<u64> {
        self.outstanding.map(|o| o.id)
    }

    fn send_probe(&mut self, now: Instant) {
        if self.outstanding.is_some() {
            return; // the next probe is scheduled when the outstanding one resolves
        }
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding = Some(Outstanding { id, sent_at: now });
        self.timers.set(Timer::ProbeTimeout, now + self.cfg.timeout);
        self.outputs.push_back(ProbeOutput::SendProbe { probe_id: id });
    }

    fn resolve(&mut self, now: Instant, probe_id: u64, success: bool) {
        let Some(o) = self.outstanding.filter(|o| o.id == probe_id) else {
            return; // stale or unknown id
        };
        self.outstanding = None;
        self.timers.stop(Timer::ProbeTimeout);
        self.timers.set(Timer::Probe, (o.sent_at + self.cfg.interval).max(now));
        if success {
            self.last_success = Some(now);
            self.last_rtt = Some(now.saturating_duration_since(o.sent_at));
            self.record(true);
        } else {
            self.record(false);
        }
    }

    fn record(&mut self, success: bool) {
        let (streak, threshold) = if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes, self.cfg.up_after.max(1))
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures, self.cfg.down_after.max(1))
        };
        if streak >= threshold && self.up != Some(success) {
            self.up = Some(success);
            self.outputs.push_back(ProbeOutput::StateChanged { up: success });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn settings() -> ProbeSettings {
        ProbeSettings { interval: S(30), timeout: S(5), down_after: 3, up_after: 2 }
    }

    /// Advances the fake clock to the next deadline and fires it.
    fn step(p: &mut Prober) -> Instant {
        let t = p.poll_timeout().unwrap();
        p.handle_timeout(t);
        t
    }

    fn expect_probe(p: &mut Prober) -> u64 {
        match p.poll_output() {
            Some(ProbeOutput::SendProbe { probe_id }) => probe_id,
            other => panic!("expected SendProbe, got {other:?}"),
        }
    }

    /// Runs one probe answered `delay` after sending with `status`; returns the send time.
    fn answered(p: &mut Prober, delay: Duration, status: u16) -> Instant {
        let sent = step(p);
        let id = expect_probe(p);
        p.on_response(sent + delay, id, status);
        sent
    }

    #[test]
    fn first_probe_due_at_creation_then_every_interval() {
        let t0 = Instant::now();
        let mut p = Prober::new(settings(), t0);
        assert_eq!(p.poll_timeout(), Some(t0));
        assert_eq!(p.is_up(), None);
        let sent = answered(&mut p, Duration::from_millis(80), 200);
        assert_eq!(sent, t0);
        assert_eq!(p.poll_timeout(), Some(t0 + S(30)));
        assert_eq!(p.last_success(), Some(t0 + Duration::from_millis(80)));
        assert_eq!(answered(&mut p, Duration::from_millis(80), 200), t0 + S(30));
        assert_eq!(p.poll_output(), Some(ProbeOutput::StateChanged { up: true }));
        assert_eq!(p.is_up(), Some(true));
        assert_eq!(p.poll_output(), None);
    }

    #[test]
    fn dead_carrier_is_marked_down_at_the_exact_instant() {
        let t0 = Instant::now();
        let cfg = settings();
        let mut p = Prober::new(cfg, t0);
        answered(&mut p, S(1), 200);
        answered(&mut p, S(1), 200);
        assert_eq!(p.poll_output(), Some(ProbeOutput::StateChanged { up: true }));
        // The carrier dies; probes from t0+60 s on go unanswered.
        let dead_from = t0 + cfg.interval * 2;
        let mut down_at = None;
        for _ in 0..10 {
            let t = step(&mut p);
            while let Some(out) = p.poll_output() {
                if out == (ProbeOutput::StateChanged { up: false }) {
                    down_at = Some(t);
                }
            }
            if down_at.is_some() {
                break;
            }
        }
        let expected = dead_from + cfg.interval * (cfg.down_after - 1) + cfg.timeout;
        assert_eq!(down_at, Some(expected));
        assert!(expected <= dead_from + cfg.interval * cfg.down_after + cfg.timeout);
        assert_eq!(p.is_up(), Some(false));
        assert_eq!(p.last_success(), Some(t0 + cfg.interval + S(1)));
    }

    #[test]
    fn late_response_after_probe_timeout_is_ignored() {
        let t0 = Instant::now();
        let mut p = Prober::new(settings(), t0);
        step(&mut p);
        let id = expect_probe(&mut p);
        assert_eq!(step(&mut p), t0 + S(5)); // ProbeTimeout: one failure
        assert_eq!(p.outstanding(), None);
        p.on_response(t0 + S(6), id, 200);
        assert_eq!(p.last_success(), None);
        assert_eq!(p.poll_timeout(), Some(t0 + S(30)));
        // A stale id never resolves a newer probe.
        step(&mut p);
        let id2 = expect_probe(&mut p);
        p.on_response(t0 + S(31), id, 200);
        assert_eq!(p.outstanding(), Some(id2));
    }

    #[test]
    fn recovery_marks_up_after_up_after_successes() {
        let t0 = Instant::now();
        let mut p = Prober::new(settings(), t0);
        for _ in 0..3 {
            let t = step(&mut p);
            let id = expect_probe(&mut p);
            p.on_transport_error(t, id);
        }
        assert_eq!(p.poll_output(), Some(ProbeOutput::StateChanged { up: false }));
        answered(&mut p, S(1), 200);
        assert_eq!(p.is_up(), Some(false));
        assert_eq!(p.poll_output(), None);
        let second = answered(&mut p, S(1), 404); // any final response proves reachability
        assert_eq!(p.poll_output(), Some(ProbeOutput::StateChanged { up: true }));
        assert_eq!(second, t0 + S(4 * 30));
        assert_eq!(p.is_up(), Some(true));
    }

    #[test]
    fn flapping_below_thresholds_does_not_change_state() {
        let t0 = Instant::now();
        let mut p = Prober::new(settings(), t0);
        answered(&mut p, S(1), 200);
        answered(&mut p, S(1), 200);
        assert_eq!(p.poll_output(), Some(ProbeOutput::StateChanged { up: true }));
        // Never more than two failures (503, timeout, transport, 408) in a row.
        for _ in 0..5 {
            answered(&mut p, S(1), 503);
            step(&mut p);
            expect_probe(&mut p);
            step(&mut p); // ProbeTimeout
            answered(&mut p, S(1), 200);
            let t = step(&mut p);
            let id = expect_probe(&mut p);
            p.on_transport_error(t, id);
            answered(&mut p, S(1), 408);
            answered(&mut p, S(1), 486); // any other final response is a success
            answered(&mut p, S(1), 180); // provisional: ignored, the probe then times out
            step(&mut p);
            answered(&mut p, S(1), 200);
        }
        assert_eq!(p.poll_output(), None);
        assert_eq!(p.is_up(), Some(true));
    }

    #[test]
    fn status_classification() {
        let cfg = ProbeSettings { down_after: 1, up_after: 1, ..settings() };
        let verdict = |status| {
            let t0 = Instant::now();
            let mut p = Prober::new(cfg, t0);
            answered(&mut p, S(1), status);
            p.is_up()
        };
        for status in [200, 202, 404, 405, 481, 500, 603] {
            assert_eq!(verdict(status), Some(true), "{status}");
        }
        assert_eq!(verdict(503), Some(false));
        assert_eq!(verdict(408), Some(false));
        assert_eq!(verdict(183), None);
    }

    #[test]
    fn slow_probe_delays_the_next_but_never_overlaps() {
        let t0 = Instant::now();
        let cfg = ProbeSettings { interval: S(2), timeout: S(5), down_after: 1, up_after: 1 };
        let mut p = Prober::new(cfg, t0);
        step(&mut p);
        let id = expect_probe(&mut p);
        assert_eq!(p.poll_timeout(), Some(t0 + S(5)));
        p.on_response(t0 + S(4), id, 200);
        assert_eq!(p.poll_timeout(), Some(t0 + S(4)));
        p.handle_timeout(t0 + S(4));
        assert_eq!(p.poll_output(), Some(ProbeOutput::StateChanged { up: true }));
        assert!(matches!(p.poll_output(), Some(ProbeOutput::SendProbe { .. })));
        assert_eq!(p.poll_output(), None);
    }
}

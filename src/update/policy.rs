//! The A/B update policy, sans-IO: after a new version is written to the inactive slot, switch
//! to it, restart the service and probe `/readyz` until it answers ready a few times in a row;
//! if it does not within the ready timeout (or the restart itself fails), switch back, restart
//! the previous version and watch it the same way. The outcome says why.
//!
//! Phases: (Written →) `Switched` → `Confirmed`, or `Switched` → `RollingBack` → `RolledBack`.
//! Sans-IO like the appliance's core (no clock reads, sleeps or sockets: `now` is passed in),
//! but it lives beside the updater, not in the appliance's core. The file and process work
//! (writing slots, the symlink, the restart command, HTTP probes) is the rest of
//! `crate::update`'s (`run`, `probe`, `layout`): it performs each [`Action`] and reports back
//! with [`UpdateWatch::restarted`] and [`UpdateWatch::probed`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// One of the two install slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot's directory name (`a` or `b`).
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(name: &str) -> Option<Slot> {
        match name {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a started version is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// From the switch until the version must be ready (the restart counts against it).
    pub ready_timeout: Duration,
    /// Between two `/readyz` probes.
    pub probe_interval: Duration,
    /// Consecutive ready answers needed (at least 1).
    pub ready_streak: u32,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            ready_timeout: Duration::from_secs(120),
            probe_interval: Duration::from_secs(1),
            ready_streak: 3,
        }
    }
}

/// What one `/readyz` probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ready,
    /// Not ready, with what was seen (`connection refused`, `HTTP 503: ...`).
    NotReady(String),
}

/// Work for the I/O layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Point `current` at this slot (atomically).
    Switch(Slot),
    /// Run the restart command, then call [`UpdateWatch::restarted`].
    Restart,
    /// Probe `/readyz` once, then call [`UpdateWatch::probed`].
    Probe,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new version is ready and stays.
    Confirmed { ready_after: Duration },
    /// Switched back to the previous version; `reason` says why, `previous_ready` whether the
    /// previous version answered ready again.
    RolledBack { reason: String, previous_ready: bool },
}

/// What the I/O layer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Action(Action),
    /// Nothing to do until this deadline: then call [`UpdateWatch::handle_timeout`].
    Timeout(Instant),
    /// Waiting for the result of a restart or probe.
    Waiting,
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Switched,
    RollingBack,
    Confirmed,
    RolledBack,
}

/// The watch's two deadlines (its own: the updater is not a call, so it has no place in the
/// core's per-call timer table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WatchTimers {
    /// The next `/readyz` probe of the version being judged.
    probe: Option<Instant>,
    /// The version being judged must be ready by then (else switch back, or give up).
    ready: Option<Instant>,
}

impl WatchTimers {
    /// The earlier deadline.
    fn next(&self) -> Option<Instant> {
        [self.probe, self.ready].into_iter().flatten().min()
    }
}

/// One update being judged: the new slot after a switch, or the previous one after a rollback.
#[derive(Debug)]
pub struct UpdateWatch {
    phase: Phase,
    from: Slot,
    settings: WatchSettings,
    timers: WatchTimers,
    actions: VecDeque<Action>,
    /// Since the switch to the slot now judged.
    started: Instant,
    streak: u32,
    /// The last not-ready answer (or restart failure) of the slot now judged.
    last_failure: Option<String>,
    reason: Option<String>,
    waiting: bool,
    outcome: Option<Outcome>,
}

impl UpdateWatch {
    /// The new version is written to `to`: switch to it, restart, then watch.
    pub fn install(now: Instant, from: Slot, to: Slot, settings: WatchSettings) -> UpdateWatch {
        let mut w = UpdateWatch::new(now, from, settings);
        w.actions.push_back(Action::Switch(to));
        w.actions.push_back(Action::Restart);
        w
    }

    /// After a reboot in the middle of an update: `current` already names the new slot and the
    /// service was started by the boot; watch it (and roll back to `from` if needed).
    pub fn resume(now: Instant, from: Slot, settings: WatchSettings) -> UpdateWatch {
        let mut w = UpdateWatch::new(now, from, settings);
        w.timers.probe = Some(now);
        w
    }

    fn new(now: Instant, from: Slot, settings: WatchSettings) -> UpdateWatch {
        let timers =
            WatchTimers { ready: Some(now + settings.ready_timeout), ..Default::default() };
        UpdateWatch {
            phase: Phase::Switched,
            from,
            settings: WatchSettings { ready_streak: settings.ready_streak.max(1), ..settings },
            timers,
            actions: VecDeque::new(),
            started: now,
            streak: 0,
            last_failure: None,
            reason: None,
            waiting: false,
            outcome: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Output {
        if let Some(outcome) = &self.outcome {
            return Output::Done(outcome.clone());
        }
        if let Some(action) = self.actions.pop_front() {
            if matches!(action, Action::Restart | Action::Probe) {
                self.waiting = true;
            }
            return Output::Action(action);
        }
        if self.waiting {
            return Output::Waiting;
        }
        match self.timers.next() {
            Some(t) => Output::Timeout(t),
            // unreachable while running: the ready deadline is always set
            None => Output::Waiting,
        }
    }

    /// The latest moment the I/O layer may spend on a restart or probe.
    pub fn deadline(&self) -> Option<Instant> {
        self.timers.ready
    }

    /// The restart command finished (`Err` with what went wrong).
    pub fn restarted(&mut self, now: Instant, result: Result<(), String>) {
        self.waiting = false;
        match result {
            Err(why) if self.phase == Phase::Switched => {
                self.roll_back(now, format!("restarting the new version failed: {why}"));
            }
            Err(why) => {
                self.last_failure = Some(format!("restart failed: {why}"));
                self.timers.probe = Some(now);
            }
            Ok(()) => self.timers.probe = Some(now),
        }
        self.handle_timeout(now);
    }

    /// A `/readyz` probe's result.
    pub fn probed(&mut self, now: Instant, probe: Probe) {
        self.waiting = false;
        if self.outcome.is_some() {
            return;
        }
        match probe {
            Probe::Ready => self.streak += 1,
            Probe::NotReady(why) => {
                self.streak = 0;
                self.last_failure = Some(why);
            }
        }
        if self.streak >= self.settings.ready_streak {
            self.finish_ready(now);
            return;
        }
        self.timers.probe = Some(now + self.settings.probe_interval);
        self.handle_timeout(now);
    }

    /// Timers due at `now`: the ready deadline wins over a probe due at the same time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_some() || self.waiting {
            return;
        }
        if self.timers.ready.is_some_and(|t| t <= now) {
            self.timers.ready = None;
            self.deadline_passed(now);
            return;
        }
        if self.timers.probe.is_some_and(|t| t <= now) {
            self.timers.probe = None;
            self.actions.push_back(Action::Probe);
        }
    }

    fn deadline_passed(&mut self, now: Instant) {
        let seen = self.last_failure.clone().unwrap_or_else(|| "no probe answered".to_owned());
        match self.phase {
            Phase::Switched => {
                let secs = self.settings.ready_timeout.as_secs_f64();
                self.roll_back(
                    now,
                    format!("the new version was not ready within {secs} s (last probe: {seen})"),
                );
            }
            Phase::RollingBack => {
                let reason = self.reason.clone().unwrap_or_default();
                self.finish(
                    Phase::RolledBack,
                    Outcome::RolledBack { reason, previous_ready: false },
                );
            }
            Phase::Confirmed | Phase::RolledBack => {}
        }
    }

    fn roll_back(&mut self, now: Instant, reason: String) {
        self.phase = Phase::RollingBack;
        self.reason = Some(reason);
        self.streak = 0;
        self.last_failure = None;
        self.started = now;
        self.timers = WatchTimers::default();
        self.timers.ready = Some(now + self.settings.ready_timeout);
        self.actions.clear();
        self.actions.push_back(Action::Switch(self.from));
        self.actions.push_back(Action::Restart);
    }

    fn finish_ready(&mut self, now: Instant) {
        match self.phase {
            Phase::Switched => {
                let ready_after = now.saturating_duration_since(self.started);
                self.finish(Phase::Confirmed, Outcome::Confirmed { ready_after });
            }
            Phase::RollingBack => {
                let reason = self.reason.clone().unwrap_or_default();
                self.finish(
                    Phase::RolledBack,
                    Outcome::RolledBack { reason, previous_ready: true },
                );
            }
            Phase::Confirmed | Phase::RolledBack => {}
        }
    }

    fn finish(&mut self, phase: Phase, outcome: Outcome) {
        self.phase = phase;
        self.timers = WatchTimers::default();
        self.actions.clear();
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WatchSettings {
        WatchSettings {
            ready_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_secs(1),
            ready_streak: 2,
        }
    }

    /// Plays the I/O layer: performs actions with the given probe answers on a fake clock.
    /// Returns the actions seen and the outcome.
    fn drive(
        w: &mut UpdateWatch,
        t0: Instant,
        mut answer: impl FnMut(Duration) -> Probe,
    ) -> (Vec<Action>, Outcome) {
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..1000 {
            match w.poll_output() {
                Output::Action(Action::Probe) => {
                    seen.push(Action::Probe);
                    let p = answer(now - t0);
                    w.probed(now, p);
                }
                Output::Action(Action::Restart) => {
                    seen.push(Action::Restart);
                    w.restarted(now, Ok(()));
                }
                Output::Action(a) => seen.push(a),
                Output::Timeout(t) => {
                    assert!(t >= now, "a deadline in the past");
                    now = t;
                    w.handle_timeout(now);
                }
                Output::Waiting => panic!("waiting with nothing outstanding"),
                Output::Done(o) => return (seen, o),
            }
        }
        panic!("no outcome");
    }

    #[test]
    fn ready_twice_in_a_row_confirms() {
        let t0 = Instant::now();
        let mut w = UpdateWatch::install(t0, Slot::A, Slot::B, settings());
        // refused for 3 s, then ready
        let (seen, outcome) = drive(&mut w, t0, |t| {
            if t < Duration::from_secs(3) {
                Probe::NotReady("connection refused".into())
            } else {
                Probe::Ready
            }
        });
        assert_eq!(seen[..2], [Action::Switch(Slot::B), Action::Restart]);
        assert!(!seen.contains(&Action::Switch(Slot::A)));
        assert_eq!(outcome, Outcome::Confirmed { ready_after: Duration::from_secs(4) });
        assert_eq!(w.phase(), Phase::Confirmed);
    }

    #[test]
    fn a_not_ready_answer_resets_the_streak() {
        let t0 = Instant::now();
        let mut w = UpdateWatch::install(t0, Slot::A, Slot::B, settings());
        // ready, not ready, ready, ready
        let mut n = 0;
        let (_, outcome) = drive(&mut w, t0, |_| {
            n += 1;
            if n == 2 {
                Probe::NotReady("HTTP 503".into())
            } else {
                Probe::Ready
            }
        });
        assert_eq!(outcome, Outcome::Confirmed { ready_after: Duration::from_secs(3) });
    }

    #[test]
    fn never_ready_rolls_back_at_the_deadline_naming_the_last_probe() {
        let t0 = Instant::now();
        let mut w = UpdateWatch::install(t0, Slot::A, Slot::B, settings());
        let (seen, outcome) = drive(&mut w, t0, |t| {
            if t < Duration::from_secs(10) {
                Probe::NotReady("HTTP 503: sip not bound".into())
            } else {
                Probe::Ready // the previous version, after the switch back
            }
        });
        let switch_back = seen.iter().position(|a| *a == Action::Switch(Slot::A)).unwrap();
        assert_eq!(seen[switch_back + 1], Action::Restart);
        // probes at 0..=9 s, none after the deadline before the switch back
        assert_eq!(seen[..switch_back].iter().filter(|a| **a == Action::Probe).count(), 10);
        match outcome {
            Outcome::RolledBack { reason, previous_ready } => {
                assert!(previous_ready);
                assert!(reason.contains("not ready within 10 s"), "{reason}");
                assert!(reason.contains("HTTP 503: sip not bound"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.phase(), Phase::RolledBack);
    }

    #[test]
    fn a_failed_restart_rolls_back_at_once() {
        let t0 = Instant::now();
        let mut w = UpdateWatch::install(t0, Slot::B, Slot::A, settings());
        assert_eq!(w.poll_output(), Output::Action(Action::Switch(Slot::A)));
        assert_eq!(w.poll_output(), Output::Action(Action::Restart));
        assert_eq!(w.poll_output(), Output::Waiting);
        let t1 = t0 + Duration::from_secs(2);
        w.restarted(t1, Err("exit status 1".into()));
        assert_eq!(w.phase(), Phase::RollingBack);
        assert_eq!(w.poll_output(), Output::Action(Action::Switch(Slot::B)));
        assert_eq!(w.poll_output(), Output::Action(Action::Restart));
        w.restarted(t1, Ok(()));
        assert_eq!(w.poll_output(), Output::Action(Action::Probe));
        w.probed(t1, Probe::Ready);
        assert_eq!(w.poll_output(), Output::Timeout(t1 + Duration::from_secs(1)));
        w.handle_timeout(t1 + Duration::from_secs(1));
        assert_eq!(w.poll_output(), Output::Action(Action::Probe));
        w.probed(t1 + Duration::from_secs(1), Probe::Ready);
        match w.poll_output() {
            Output::Done(Outcome::RolledBack { reason, previous_ready: true }) => {
                assert!(
                    reason.contains("restarting the new version failed: exit status 1"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn previous_version_not_ready_either_ends_without_looping() {
        let t0 = Instant::now();
        let mut w = UpdateWatch::install(t0, Slot::A, Slot::B, settings());
        let (seen, outcome) = drive(&mut w, t0, |_| Probe::NotReady("connection refused".into()));
        assert_eq!(
            seen.iter().filter(|a| matches!(a, Action::Switch(_))).count(),
            2,
            "one switch back only"
        );
        match outcome {
            Outcome::RolledBack { reason, previous_ready } => {
                assert!(!previous_ready);
                assert!(reason.contains("connection refused"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resume_after_reboot_probes_without_switching() {
        let t0 = Instant::now();
        let mut w = UpdateWatch::resume(t0, Slot::A, settings());
        assert_eq!(w.poll_output(), Output::Timeout(t0));
        w.handle_timeout(t0);
        let (seen, outcome) = drive(&mut w, t0, |_| Probe::Ready);
        assert_eq!(seen, vec![Action::Probe, Action::Probe]);
        assert_eq!(outcome, Outcome::Confirmed { ready_after: Duration::from_secs(1) });
        // and one that never gets ready goes back to A
        let mut w = UpdateWatch::resume(t0, Slot::A, settings());
        let (seen, outcome) = drive(&mut w, t0, |t| {
            if t < Duration::from_secs(10) {
                Probe::NotReady("connection refused".into())
            } else {
                Probe::Ready
            }
        });
        assert!(seen.contains(&Action::Switch(Slot::A)));
        assert!(matches!(outcome, Outcome::RolledBack { previous_ready: true, .. }));
    }

    #[test]
    fn slot_names() {
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::parse("b"), Some(Slot::B));
        assert_eq!(Slot::parse("c"), None);
        assert_eq!(Slot::B.to_string(), "b");
    }
}

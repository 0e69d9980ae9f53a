//! Health probes of the AI endpoints: every few seconds a real connection (TLS + WebSocket
//! upgrade; for OpenAI Realtime, until `session.created` arrives) to each endpoint, then a clean
//! close. The time of the last success feeds readiness and the status page.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Probe connection ids live above every call's block.
pub const PROBE_CONN_BASE: u64 = 1 << 62;

/// One endpoint's probe schedule and results.
#[derive(Debug, Clone)]
pub struct AiProbe {
    interval: Duration,
    timeout: Duration,
    /// OpenAI Realtime: success only once the server sent its first event.
    wait_for_text: bool,
    next_at: Instant,
    in_flight: Option<(u64, Instant)>,
    pub last_success: Option<Instant>,
    pub last_failure: Option<Instant>,
    pub last_rtt: Option<Duration>,
    pub successes: u64,
    pub failures: u64,
    seq: u64,
    base: u64,
}

/// What the endpoint must do for a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAction {
    Connect { conn: u64, deadline: Instant },
    Close { conn: u64 },
}

impl AiProbe {
    /// `index` separates the connection ids of the endpoints' probes.
    pub fn new(
        now: Instant,
        index: u64,
        interval: Duration,
        timeout: Duration,
        wait_for_text: bool,
    ) -> Self {
        AiProbe {
            interval,
            timeout,
            wait_for_text,
            next_at: now,
            in_flight: None,
            last_success: None,
            last_failure: None,
            last_rtt: None,
            successes: 0,
            failures: 0,
            seq: 0,
            base: PROBE_CONN_BASE + (index << 40),
        }
    }

    pub fn owns(&self, conn: u64) -> bool {
        self.in_flight.is_some_and(|(c, _)| c == conn)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.in_flight {
            Some((_, started)) => started + self.timeout,
            None => self.next_at,
        })
    }

    /// Starts a probe when one is due; fails one that ran out of time.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ProbeAction> {
        let mut out = Vec::new();
        if let Some((conn, started)) = self.in_flight {
            if now >= started + self.timeout {
                self.fail(now);
                out.push(ProbeAction::Close { conn });
            }
        }
        if self.in_flight.is_none() && now >= self.next_at {
            self.seq += 1;
            let conn = self.base + self.seq;
            self.in_flight = Some((conn, now));
            self.next_at = now + self.interval;
            out.push(ProbeAction::Connect { conn, deadline: now + self.timeout });
        }
        out
    }

    /// The probe's connection opened.
    pub fn on_opened(&mut self, now: Instant, conn: u64) -> Vec<ProbeAction> {
        if !self.owns(conn) || self.wait_for_text {
            return Vec::new();
        }
        self.succeed(now);
        vec![ProbeAction::Close { conn }]
    }

    /// The server spoke first (OpenAI `session.created`): the session really works.
    pub fn on_text(&mut self, now: Instant, conn: u64, text: &str) -> Vec<ProbeAction> {
        if !self.owns(conn) {
            return Vec::new();
        }
        if text.contains("\"error\"") && !text.contains("session.created") {
            self.fail(now);
        } else {
            self.succeed(now);
        }
        vec![ProbeAction::Close { conn }]
    }

    /// The probe's connection failed (or closed before it proved anything).
    pub fn on_closed(&mut self, now: Instant, conn: u64) {
        if self.owns(conn) {
            self.fail(now);
        }
    }

    fn succeed(&mut self, now: Instant) {
        if let Some((_, started)) = self.in_flight.take() {
            self.last_rtt = Some(now.saturating_duration_since(started));
        }
        self.last_success = Some(now);
        self.successes += 1;
    }

    fn fail(&mut self, now: Instant) {
        self.in_flight = None;
        self.last_failure = Some(now);
        self.failures += 1;
    }

    /// Whether the endpoint passed a probe within `window` of `now`.
    pub fn healthy_within(&self, now: Instant, window: Duration) -> bool {
        self.last_success.is_some_and(|t| now.saturating_duration_since(t) <= window)
    }
}

/// A probe's results for the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AiEndpointStatus {
    pub name: String,
    pub role: &'static str,
    /// `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    pub breaker_trips: u64,
    pub last_probe_ok_ms_ago: Option<u64>,
    pub last_probe_rtt_ms: Option<u64>,
    pub probe_successes: u64,
    pub probe_failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_run_on_schedule_and_record_success_and_failure() {
        let t0 = Instant::now();
        let mut p = AiProbe::new(t0, 0, Duration::from_secs(5), Duration::from_secs(2), false);
        let a = p.handle_timeout(t0);
        let ProbeAction::Connect { conn, .. } = a[0] else { panic!("{a:?}") };
        assert_eq!(
            p.on_opened(t0 + Duration::from_millis(30), conn),
            vec![ProbeAction::Close { conn }]
        );
        assert_eq!(p.last_rtt, Some(Duration::from_millis(30)));
        assert!(p.healthy_within(t0 + Duration::from_secs(10), Duration::from_secs(10)));
        assert!(!p.healthy_within(t0 + Duration::from_secs(11), Duration::from_secs(10)));
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        // the next probe times out
        let b = p.handle_timeout(t0 + Duration::from_secs(5));
        let ProbeAction::Connect { conn: c2, .. } = b[0] else { panic!() };
        assert_ne!(c2, conn);
        let c = p.handle_timeout(t0 + Duration::from_secs(7));
        assert_eq!(c, vec![ProbeAction::Close { conn: c2 }]);
        assert_eq!(p.failures, 1);
    }

    #[test]
    fn an_openai_probe_needs_the_servers_first_event() {
        let t0 = Instant::now();
        let mut p = AiProbe::new(t0, 1, Duration::from_secs(5), Duration::from_secs(2), true);
        let ProbeAction::Connect { conn, .. } = p.handle_timeout(t0)[0] else { panic!() };
        assert!(p.on_opened(t0, conn).is_empty(), "open is not enough");
        p.on_text(t0 + Duration::from_millis(80), conn, r#"{"type":"session.created"}"#);
        assert_eq!(p.successes, 1);
        assert_eq!(p.last_rtt, Some(Duration::from_millis(80)));
    }
}

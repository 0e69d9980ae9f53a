//! Health probes of the AI endpoints: every few seconds a real connection to each endpoint that
//! completes the protocol's opening, so a strict agent sees a well-formed (short) stream, never
//! a connection dropped half-way:
//!
//! - Twilio Media Streams: on open, `connected` and `start` (marked as a probe: the stream and
//!   call SIDs begin `MZtrunkguardprobe` / `CAtrunkguardprobe`, and `customParameters` holds
//!   `trunkguard_probe = "1"`), then `stop`, then a clean close (the shell sends the close
//!   frame and waits for the agent's).
//! - OpenAI Realtime: success once `session.created` arrives, then a clean close.
//! - An endpoint configured with a `health_url`: an HTTP GET of that URL instead (2xx is
//!   healthy), no WebSocket at all.
//!
//! The time of the last success feeds readiness and the status page.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::ai::twilio;

/// The `customParameters` entry that marks a Twilio probe stream.
pub const PROBE_PARAMETER: (&str, &str) = ("trunkguard_probe", "1");

/// Probe connection ids live above every call's block.
pub const PROBE_CONN_BASE: u64 = 1 << 62;

/// How an endpoint is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStyle {
    /// Twilio Media Streams: `connected`, `start`, `stop`, clean close.
    Twilio,
    /// OpenAI Realtime: until `session.created`, then a clean close.
    OpenAi,
    /// An HTTP GET of the endpoint's `health_url` (2xx is healthy).
    Http,
}

/// One endpoint's probe schedule and results.
#[derive(Debug, Clone)]
pub struct AiProbe {
    interval: Duration,
    timeout: Duration,
    style: ProbeStyle,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Open the endpoint's WebSocket as `conn`.
    Connect { conn: u64, deadline: Instant },
    /// GET the endpoint's `health_url`; report a 2xx as opened, anything else as closed.
    HttpGet { conn: u64, deadline: Instant },
    /// Send a text frame on `conn`.
    Text { conn: u64, text: String },
    /// Close `conn` cleanly.
    Close { conn: u64 },
}

impl AiProbe {
    /// `index` separates the connection ids of the endpoints' probes.
    pub fn new(
        now: Instant,
        index: u64,
        interval: Duration,
        timeout: Duration,
        style: ProbeStyle,
    ) -> Self {
        AiProbe {
            interval,
            timeout,
            style,
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
            let deadline = now + self.timeout;
            out.push(match self.style {
                ProbeStyle::Http => ProbeAction::HttpGet { conn, deadline },
                ProbeStyle::Twilio | ProbeStyle::OpenAi => ProbeAction::Connect { conn, deadline },
            });
        }
        out
    }

    /// The probe's connection opened (or its HTTP GET answered 2xx).
    pub fn on_opened(&mut self, now: Instant, conn: u64) -> Vec<ProbeAction> {
        if !self.owns(conn) {
            return Vec::new();
        }
        match self.style {
            ProbeStyle::OpenAi => Vec::new(), // not before `session.created`
            ProbeStyle::Http => {
                self.succeed(now);
                Vec::new()
            }
            ProbeStyle::Twilio => {
                self.succeed(now);
                twilio_probe_stream(conn, self.seq)
            }
        }
    }

    /// The server spoke first (OpenAI `session.created`): the session really works.
    pub fn on_text(&mut self, now: Instant, conn: u64, text: &str) -> Vec<ProbeAction> {
        if !self.owns(conn) || self.style != ProbeStyle::OpenAi {
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

/// A whole, short Media Streams stream marked as a probe: `connected`, `start`, `stop`, close.
fn twilio_probe_stream(conn: u64, seq: u64) -> Vec<ProbeAction> {
    let info = twilio::StartInfo {
        stream_sid: format!("MZtrunkguardprobe{seq:017}"),
        account_sid: "ACtrunkguard".to_string(),
        call_sid: format!("CAtrunkguardprobe{seq:017}"),
        custom_parameters: BTreeMap::from([(
            PROBE_PARAMETER.0.to_string(),
            PROBE_PARAMETER.1.to_string(),
        )]),
    };
    let stop = twilio::encode_stop(2, &info.stream_sid, &info.account_sid, &info.call_sid);
    vec![
        ProbeAction::Text { conn, text: twilio::encode_connected() },
        ProbeAction::Text { conn, text: twilio::encode_start(1, &info) },
        ProbeAction::Text { conn, text: stop },
        ProbeAction::Close { conn },
    ]
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
        let mut p =
            AiProbe::new(t0, 0, Duration::from_secs(5), Duration::from_secs(2), ProbeStyle::Twilio);
        let a = p.handle_timeout(t0);
        let ProbeAction::Connect { conn, .. } = a[0] else { panic!("{a:?}") };
        let opened = p.on_opened(t0 + Duration::from_millis(30), conn);
        assert_eq!(opened.last(), Some(&ProbeAction::Close { conn }));
        assert_eq!(p.last_rtt, Some(Duration::from_millis(30)));
        assert!(p.healthy_within(t0 + Duration::from_secs(10), Duration::from_secs(10)));
        assert!(!p.healthy_within(t0 + Duration::from_secs(11), Duration::from_secs(10)));
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        // the next probe times out
        let b = p.handle_timeout(t0 + Duration::from_secs(5));
        let ProbeAction::Connect { conn: c2, .. } = b[0].clone() else { panic!() };
        assert_ne!(c2, conn);
        let c = p.handle_timeout(t0 + Duration::from_secs(7));
        assert_eq!(c, vec![ProbeAction::Close { conn: c2 }]);
        assert_eq!(p.failures, 1);
    }

    #[test]
    fn an_openai_probe_needs_the_servers_first_event() {
        let t0 = Instant::now();
        let mut p =
            AiProbe::new(t0, 1, Duration::from_secs(5), Duration::from_secs(2), ProbeStyle::OpenAi);
        let ProbeAction::Connect { conn, .. } = p.handle_timeout(t0)[0] else { panic!() };
        assert!(p.on_opened(t0, conn).is_empty(), "open is not enough");
        let after =
            p.on_text(t0 + Duration::from_millis(80), conn, r#"{"type":"session.created"}"#);
        assert_eq!(after, vec![ProbeAction::Close { conn }], "then a clean close, nothing sent");
        assert_eq!(p.successes, 1);
        assert_eq!(p.last_rtt, Some(Duration::from_millis(80)));
    }

    #[test]
    fn a_twilio_probe_completes_the_opening_marked_as_a_probe_then_stops_and_closes() {
        let t0 = Instant::now();
        let mut p =
            AiProbe::new(t0, 0, Duration::from_secs(5), Duration::from_secs(2), ProbeStyle::Twilio);
        let ProbeAction::Connect { conn, .. } = p.handle_timeout(t0)[0] else { panic!() };
        let actions = p.on_opened(t0, conn);
        let texts: Vec<serde_json::Value> = actions
            .iter()
            .filter_map(|a| match a {
                ProbeAction::Text { conn: c, text } if *c == conn => {
                    Some(serde_json::from_str(text).unwrap())
                }
                _ => None,
            })
            .collect();
        let events: Vec<&str> = texts.iter().map(|t| t["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["connected", "start", "stop"]);
        let start = &texts[1];
        assert_eq!(start["start"]["customParameters"]["trunkguard_probe"], "1");
        let sid = start["streamSid"].as_str().unwrap();
        assert!(sid.starts_with("MZtrunkguardprobe") && sid.len() == 34, "{sid}");
        assert!(start["start"]["callSid"].as_str().unwrap().starts_with("CAtrunkguardprobe"));
        assert_eq!(texts[2]["streamSid"], sid);
        assert_eq!(actions.last(), Some(&ProbeAction::Close { conn }), "closed last");
        assert_eq!(p.successes, 1);
    }

    #[test]
    fn an_http_probe_gets_the_health_url_and_needs_no_close() {
        let t0 = Instant::now();
        let mut p =
            AiProbe::new(t0, 0, Duration::from_secs(5), Duration::from_secs(2), ProbeStyle::Http);
        let ProbeAction::HttpGet { conn, deadline } = p.handle_timeout(t0)[0] else { panic!() };
        assert_eq!(deadline, t0 + Duration::from_secs(2));
        assert!(p.on_opened(t0 + Duration::from_millis(9), conn).is_empty());
        assert_eq!((p.successes, p.last_rtt), (1, Some(Duration::from_millis(9))));
        let ProbeAction::HttpGet { conn: c2, .. } =
            p.handle_timeout(t0 + Duration::from_secs(5))[0]
        else {
            panic!()
        };
        p.on_closed(t0 + Duration::from_secs(5), c2);
        assert_eq!(p.failures, 1);
    }
}

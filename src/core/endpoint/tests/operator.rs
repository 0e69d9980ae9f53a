//! The operator's view of the AI bridge on a fake clock: every refused setup, switch of
//! endpoint, mid-call loss, fallback and breaker change is logged at INFO or WARN with the call
//! id, the endpoint's configured name, the cause and the timing, and the status page's recent
//! failures name the endpoint and the real cause.

use std::sync::{Arc, Mutex};

use super::ai::{ai_config, ai_in, bridged_call, take_connects};
use super::*;
use crate::core::ai::FailureKind;

/// A log sink for one test (what the appliance's journal would hold).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with INFO-and-above logging captured; returns its result and the log text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    (out, text)
}

/// The one log line with `message`; it must be at `level` and carry every field in `fields`.
fn line<'a>(log: &'a str, level: &str, message: &str, fields: &[&str]) -> &'a str {
    let found: Vec<&str> = log.lines().filter(|l| l.contains(message)).collect();
    assert!(!found.is_empty(), "no {message:?} line in:\n{log}");
    let l = found[0];
    assert!(l.contains(&format!(" {level} ")), "not at {level}: {l}");
    for f in fields {
        assert!(l.contains(f), "{f:?} missing from: {l}");
    }
    l
}

#[test]
fn a_primary_refused_at_setup_is_a_warning_naming_call_endpoint_cause_and_timing() {
    let (status, log) = logged(|| {
        let mut h = Harness::new(ai_config());
        h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
        let (conn, _) = take_connects(&mut h).remove(0);
        h.advance(Duration::from_millis(12));
        ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Refused });
        for _ in 0..200 {
            h.advance(Duration::from_millis(5));
            if let Some((c, _)) = take_connects(&mut h).pop() {
                ai_in(&mut h, Input::AiOpened { conn: c });
                break;
            }
        }
        h.ep.status(h.now)
    });
    line(
        &log,
        "WARN",
        "agent connection refused at call setup",
        &["call_id=c1", "endpoint=primary", "cause=connection refused by primary", "attempt_ms="],
    );
    line(
        &log,
        "INFO",
        "failing over to the other agent endpoint",
        &[
            "call_id=c1",
            "from=primary",
            "endpoint=standby",
            "cause=connection refused by primary",
            "call_ms=",
        ],
    );
    line(&log, "INFO", "agent live", &["call_id=c1", "endpoint=standby", "call_ms="]);
    let failure = &status.recent_failures[0];
    assert_eq!(failure.kind, "agent-connect");
    assert!(
        failure.detail.starts_with("connection refused by primary (call c1, attempt of "),
        "{failure:?}"
    );
    assert!(!failure.detail.contains("Dropped") && !failure.detail.contains("Refused"));
}

#[test]
fn a_mid_call_failover_is_a_warning_with_call_endpoint_cause_and_timing() {
    let (status, log) = logged(|| {
        let mut h = Harness::new(ai_config());
        let (_, conn, _) = bridged_call(&mut h);
        h.advance(Duration::from_millis(700));
        ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
        h.ep.status(h.now)
    });
    let l = line(
        &log,
        "WARN",
        "agent lost mid-call",
        &["call_id=c1", "endpoint=primary", "cause=connection to primary dropped", "call_ms="],
    );
    assert!(l.contains("live_ms=700"), "{l}");
    line(&log, "INFO", "failing over to the other agent endpoint", &["endpoint=standby"]);
    let failure = &status.recent_failures[0];
    assert_eq!(failure.kind, "agent-failover");
    assert!(failure.detail.starts_with("connection to primary dropped mid-call (call c1, "));
}

#[test]
fn a_fallback_names_the_last_cause_and_the_time_spent() {
    let (status, log) = logged(|| {
        let mut h = Harness::new(ai_config());
        h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
        for _ in 0..500 {
            for (conn, _) in take_connects(&mut h) {
                ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::HttpStatus(503) });
            }
            if h.statuses().contains(&200) {
                break;
            }
            h.advance(Duration::from_millis(10));
        }
        h.ep.status(h.now)
    });
    line(
        &log,
        "WARN",
        "no AI agent within the budget",
        &["call_id=c1", "endpoint=", "answered with HTTP 503", "attempts=", "call_ms=1"],
    );
    let fallback = status.recent_failures.iter().find(|f| f.kind == "fallback").unwrap();
    assert!(fallback.detail.contains("answered with HTTP 503"), "{fallback:?}");
}

#[test]
fn every_breaker_change_is_logged_with_the_endpoint_and_the_cause() {
    let (status, log) = logged(|| {
        let mut config = EndpointConfig { rtp_ports: (20000, 20100), ..ai_config() };
        // the standby stays live without a word for the whole test (no mute failovers taking
        // the primary's half-open trial)
        if let Some(ai) = config.ai.as_mut() {
            ai.session.first_audio_timeout = Duration::from_secs(3600);
        }
        let mut h = Harness::new(config);
        for i in 0..5 {
            h.send(CARRIER_A, &invite(&format!("c{i}"), &format!("z9hG4bK-{i}"), PCMU_OFFER));
            let (conn, _) = take_connects(&mut h).remove(0);
            ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Refused });
            for _ in 0..200 {
                if let Some((c, _)) = take_connects(&mut h).pop() {
                    ai_in(&mut h, Input::AiOpened { conn: c });
                    break;
                }
                h.advance(Duration::from_millis(5));
            }
        }
        // the cooldown (30 s) ends by the endpoint's own timer, with no call asking
        for _ in 0..31 {
            h.advance(Duration::from_secs(1));
        }
        let half_open = h.ep.status(h.now).ai_endpoints[0].breaker;
        h.send(CARRIER_A, &invite("c9", "z9hG4bK-9", PCMU_OFFER));
        let (conn, url) = take_connects(&mut h).remove(0);
        assert!(url.ends_with(":9001/media"), "the trial goes to the primary");
        ai_in(&mut h, Input::AiOpened { conn });
        (half_open, h.ep.status(h.now))
    });
    let (half_open, status) = status;
    assert_eq!(half_open, "half-open");
    line(
        &log,
        "WARN",
        "agent breaker opened",
        &[
            "call_id=c4",
            "endpoint=primary",
            "from=\"closed\"",
            "to=\"open\"",
            "cause=5 failures in a row, the last: connection refused by primary",
        ],
    );
    let half =
        line(&log, "INFO", "agent breaker changed", &["endpoint=primary", "to=\"half-open\""]);
    assert!(half.contains("call_id=-") && half.contains("held_ms=30"), "{half}");
    let closed: Vec<&str> = log.lines().filter(|l| l.contains("to=\"closed\"")).collect();
    assert_eq!(closed.len(), 1, "{log}");
    assert!(
        closed[0].contains("call_id=c9") && closed[0].contains("the trial connection succeeded")
    );
    let breaker = status.recent_failures.iter().find(|f| f.kind == "agent-breaker").unwrap();
    assert!(breaker.detail.starts_with("breaker of primary closed -> open: 5 failures"));
}

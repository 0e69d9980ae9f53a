//! A hostile or broken agent on a fake clock: a mark flood or a frame over the WebSocket limit
//! ends its session, trips its breaker and sends the call to the filler and the standby; a call
//! whose agents keep breaking backs off between reconnects instead of looping.

use super::ai::{ai_config, ai_in, bridged_call, take_connects};
use super::*;
use crate::core::ai::{twilio, BreakerState, FailureKind};

fn is_open(h: &Harness, primary: bool) -> bool {
    let ai = h.ep.ai.as_ref().unwrap();
    let b = if primary { &ai.breakers.primary } else { ai.breakers.standby.as_ref().unwrap() };
    matches!(b.state(h.now), BreakerState::Open)
}

fn closed_conn(h: &Harness, conn: u64) -> bool {
    h.out.iter().any(|o| matches!(o, Output::Event(Event::AiClose { conn: c }) if *c == conn))
}

/// The next connect request within `max`, advancing the clock in 5 ms steps.
fn next_connect(h: &mut Harness, max: Duration) -> Option<(u64, String, Duration)> {
    let t0 = h.now;
    while h.now - t0 <= max {
        if let Some((conn, url)) = take_connects(h).pop() {
            return Some((conn, url, h.now - t0));
        }
        h.advance(Duration::from_millis(5));
    }
    None
}

#[test]
fn a_mark_flood_trips_the_primary_and_the_call_goes_to_the_filler_and_the_standby() {
    let mut h = Harness::new(ai_config());
    let (_, conn, sid) = bridged_call(&mut h);
    ai_in(&mut h, Input::AiText { conn, text: &twilio::encode_agent_media(&sid, &[0x2a; 800]) });
    h.advance(Duration::from_millis(40));
    h.take_rtp();
    let mark = twilio::encode_agent_mark(&sid, "flood");
    let mut sent = 0;
    while !closed_conn(&h, conn) {
        h.ep.handle_input(h.now, Input::AiText { conn, text: &mark });
        h.drain();
        sent += 1;
        assert!(sent <= 5000, "the flood was never stopped");
    }
    assert!(sent <= 1025, "stopped at the first bound: {sent} marks");
    assert!(is_open(&h, true), "a protocol violation trips the primary's breaker at once");
    assert_eq!(h.ep.ai.as_ref().unwrap().failovers, 1);
    h.advance(Duration::from_millis(40));
    assert!(h.take_rtp() >= 2, "the filler plays");
    let (conn2, url, after) = next_connect(&mut h, Duration::from_millis(500)).expect("standby");
    assert_eq!(url, "ws://127.0.0.1:9002/media");
    assert!(after < Duration::from_millis(50), "the first failover is immediate: {after:?}");
    ai_in(&mut h, Input::AiOpened { conn: conn2 });
    assert_eq!(h.ep.calls.len(), 1, "the SIP leg stayed up");
    // More frames from the hostile connection are ignored.
    ai_in(&mut h, Input::AiText { conn, text: &mark });
    assert_eq!(h.ep.ai.as_ref().unwrap().failovers, 1);
}

#[test]
fn an_oversized_frame_is_a_protocol_failure_that_trips_the_breaker() {
    let mut h = Harness::new(ai_config());
    let (_, conn, _) = bridged_call(&mut h);
    ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Protocol });
    assert!(is_open(&h, true));
    let (_, url, _) = next_connect(&mut h, Duration::from_millis(500)).expect("standby");
    assert_eq!(url, "ws://127.0.0.1:9002/media");
}

#[test]
fn agents_that_keep_breaking_are_reconnected_with_backoff_not_in_a_loop() {
    // One endpoint only, with a breaker that never trips: the per-call backoff alone must
    // space the reconnects (the issue saw 42 reconnects in 14 s).
    let mut config = ai_config();
    if let Some(hub) = config.ai.as_mut() {
        hub.standby = None;
        hub.breakers.standby = None;
        hub.breakers.primary =
            crate::core::ai::CircuitBreaker::new(crate::core::ai::BreakerConfig {
                failure_threshold: 1000,
                ..Default::default()
            });
    }
    let mut h = Harness::new(config);
    let (_, mut conn, _) = bridged_call(&mut h);
    let t0 = h.now;
    let mut gaps = Vec::new();
    while h.now - t0 < Duration::from_secs(14) {
        ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
        match next_connect(&mut h, Duration::from_secs(14)) {
            Some((c, _, gap)) => {
                gaps.push(gap);
                conn = c;
                ai_in(&mut h, Input::AiOpened { conn });
            }
            None => break,
        }
    }
    assert!((4..=8).contains(&gaps.len()), "{} reconnects in 14 s: {gaps:?}", gaps.len());
    assert!(gaps[0] < Duration::from_millis(50), "the first failover is immediate: {gaps:?}");
    for (i, gap) in gaps.iter().enumerate().skip(1) {
        let floor = Duration::from_millis(250 << (i - 1).min(4));
        assert!(*gap >= floor.min(Duration::from_secs(4)), "reconnect {i} after {gap:?}: {gaps:?}");
    }
    assert_eq!(h.ep.calls.len(), 1, "the caller is still there");
}

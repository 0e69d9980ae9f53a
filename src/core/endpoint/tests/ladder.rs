//! The ladder in the endpoint, on a fake clock: prompt → menu → key (RFC 4733 over RTP) →
//! callback request → confirmation → BYE; key 2 to the human rung; no key; the caller leaving
//! mid-menu; and the silence between rungs measured on the RTP the caller receives.

use super::*;
use crate::core::callback::{CallbackReason, CallbackRequest};
use crate::core::ladder::{HumanOutcome, LadderConfig, Rung};

fn ladder_config(human: bool) -> EndpointConfig {
    let ladder = LadderConfig {
        menu: true,
        menu_timeout: Duration::from_secs(2),
        menu_attempts: 2,
        human,
        ..LadderConfig::default()
    };
    EndpointConfig { ladder, ..config() }
}

/// A call answered and acknowledged: the ladder starts with the high-demand prompt.
fn confirmed(h: &mut Harness) -> String {
    let tag = answered(h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    tag
}

/// One key press as RFC 4733 packets (payload type 101 as offered): a start packet, then three
/// end packets.
fn press(h: &mut Harness, digit: u8, seq: u16) {
    let from: SocketAddr = "127.0.0.2:6000".parse().unwrap();
    let ts = 160_000u32 + u32::from(seq) * 160;
    for (i, (end, duration)) in
        [(false, 160u16), (true, 800), (true, 800), (true, 800)].into_iter().enumerate()
    {
        let mut pkt = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
        pkt.extend_from_slice(&(seq + i as u16).to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend_from_slice(&[digit, if end { 0x80 | 10 } else { 10 }]);
        pkt.extend_from_slice(&duration.to_be_bytes());
        h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &pkt });
    }
    h.drain();
}

fn callbacks(h: &mut Harness) -> Vec<CallbackRequest> {
    h.out
        .iter()
        .filter_map(|o| {
            if let Output::Event(Event::CallbackRequested(r)) = o {
                Some(r.clone())
            } else {
                None
            }
        })
        .collect()
}

fn phases(h: &Harness) -> Vec<RecordPhase> {
    h.out
        .iter()
        .filter_map(
            |o| if let Output::Event(Event::CallRecord(r)) = o { Some(r.phase) } else { None },
        )
        .collect()
}

fn last_record(h: &Harness) -> CallRecord {
    h.out
        .iter()
        .rev()
        .find_map(
            |o| if let Output::Event(Event::CallRecord(r)) = o { Some(r.clone()) } else { None },
        )
        .expect("a record")
}

fn bye_sent(h: &mut Harness) -> bool {
    h.take_sip().iter().any(|(_, m)| matches!(m, SipMessage::Request(r) if r.method == Method::Bye))
}

/// Advances in 20 ms steps until `until` returns true (or `limit` passes); returns the instants
/// at which RTP left for the caller.
fn run_collecting(
    h: &mut Harness,
    limit: Duration,
    mut until: impl FnMut(&mut Harness) -> bool,
) -> Vec<Instant> {
    let mut sent = Vec::new();
    let end = h.now + limit;
    let comfort =
        |h: &Harness| h.ep.calls.values().next().map(|c| c.media.counters().comfort_frames);
    while h.now < end {
        let before = comfort(h);
        h.advance(Duration::from_millis(20));
        // prompt audio only: RTCP goes out from the port above, and comfort noise (the
        // stream never stops) is not something said
        let packets = h
            .out
            .iter()
            .filter(|o| matches!(o, Output::Transmit(Transmit::Rtp { local_port: 20000, .. })))
            .count() as u64;
        let noise = comfort(h).zip(before).map_or(0, |(a, b)| a - b);
        h.take_rtp();
        if packets > noise {
            sent.push(h.now);
        }
        if until(h) {
            break;
        }
    }
    sent
}

/// The silences between consecutive RTP packets (and from the last one to `end`).
fn gaps(sent: &[Instant], end: Instant) -> Vec<Duration> {
    let mut g: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    if let Some(last) = sent.last() {
        g.push(end - *last);
    }
    g
}

#[test]
fn prompt_menu_key_1_requests_a_callback_confirms_and_hangs_up() {
    let mut h = Harness::new(ladder_config(false));
    confirmed(&mut h);
    let start = h.now;
    // the 3 s high-demand prompt, then the 0.8 s menu; press 1 at 3.5 s
    let mut sent = run_collecting(&mut h, Duration::from_millis(3500), |_| false);
    assert!(callbacks(&mut h).is_empty());
    assert_eq!(phases(&h), vec![RecordPhase::Answered, RecordPhase::Fallback, RecordPhase::Menu]);
    press(&mut h, 1, 100);
    let requests = callbacks(&mut h);
    assert_eq!(requests.len(), 1, "one request at the key");
    let r = &requests[0];
    assert_eq!(
        (r.call_id.as_str(), r.caller.as_str(), r.called.as_str(), r.carrier.as_str()),
        ("c1", "+15550001", "bot", "carrier-a")
    );
    assert_eq!(r.reason, CallbackReason::CallerAsked);
    assert_eq!(r.failure, "no AI agent configured");
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::Dtmf { digit: '1', .. }))));
    // the 0.7 s confirmation, 200 ms, BYE
    let mut bye_at = None;
    sent.extend(run_collecting(&mut h, Duration::from_secs(3), |h| {
        let bye = bye_sent(h);
        if bye {
            bye_at = Some(h.now);
        }
        bye
    }));
    let bye_at = bye_at.expect("BYE after the confirmation");
    let took = bye_at - start;
    assert!(
        (Duration::from_millis(4300)..=Duration::from_millis(4600)).contains(&took),
        "BYE at {took:?}"
    );
    let largest = gaps(&sent, bye_at).into_iter().max().unwrap();
    println!("endpoint_ladder_key1_largest_gap_ms: {}", largest.as_millis());
    assert!(largest <= Duration::from_secs(1), "{largest:?} of silence");
    let rec = last_record(&h);
    assert_eq!(rec.phase, RecordPhase::Callback);
    assert_eq!(rec.ladder, vec![Rung::Prompt, Rung::Menu, Rung::Callback]);
    assert_eq!(rec.callback, Some(CallbackReason::CallerAsked));
    assert_eq!(rec.fallback_reason.as_deref(), Some("no AI agent configured"));
}

#[test]
fn key_2_goes_to_the_human_rung_and_down_to_a_callback_when_no_leg_starts() {
    let mut h = Harness::new(ladder_config(true));
    confirmed(&mut h);
    h.advance(Duration::from_millis(3500)); // prompt, then the menu with the person option
    press(&mut h, 2, 100);
    // start_human was asked; with no carrier able to place the call it says no, and the ladder
    // goes down a rung at once: callback request, apology
    let requests = callbacks(&mut h);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].reason, CallbackReason::HumanUnavailable);
    assert!(
        requests[0].failure.starts_with("no AI agent configured; human: "),
        "{}",
        requests[0].failure
    );
    assert_eq!(
        phases(&h)[1..],
        [RecordPhase::Fallback, RecordPhase::Menu, RecordPhase::Human, RecordPhase::Callback]
    );
    let call = h.ep.calls.values().next().unwrap();
    assert!(call.media.is_playing_prompt(), "the apology plays at once");
    h.advance(Duration::from_millis(1200));
    assert!(bye_sent(&mut h), "BYE after the 0.9 s apology");
}

#[test]
fn the_human_rung_reports_through_on_human_outcome() {
    let mut h = Harness::new(ladder_config(true));
    confirmed(&mut h);
    h.advance(Duration::from_millis(3500));
    // put the ladder on the human rung directly (the stub leg cannot start)
    let id = *h.ep.calls.keys().next().unwrap();
    let now = h.now;
    let ladder = h.ep.calls.get_mut(&id).unwrap().ladder.as_mut().unwrap();
    let actions = ladder.digit(now, '2');
    assert!(actions.contains(&crate::core::ladder::LadderAction::StartHuman));
    h.ep.on_human_outcome(now, id, HumanOutcome::NoAnswer);
    h.drain();
    let requests = callbacks(&mut h);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].reason, CallbackReason::HumanNoAnswer);
    h.advance(Duration::from_millis(1200));
    assert!(bye_sent(&mut h));
    assert_eq!(last_record(&h).callback, Some(CallbackReason::HumanNoAnswer));
}

#[test]
fn no_key_replays_the_menu_then_a_callback_and_only_the_callers_turns_are_silent() {
    let mut h = Harness::new(ladder_config(false));
    confirmed(&mut h);
    let mut bye_at = None;
    let sent = run_collecting(&mut h, Duration::from_secs(20), |h| {
        let bye = bye_sent(h);
        if bye {
            bye_at = Some(h.now);
        }
        bye
    });
    let bye_at = bye_at.expect("BYE");
    let requests = callbacks(&mut h);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].reason, CallbackReason::MenuNoAnswer);
    // 3 s prompt, (0.8 s menu + 2 s wait) x 2, 0.9 s apology, 0.2 s
    let g = gaps(&sent, bye_at);
    let long: Vec<Duration> = g.iter().copied().filter(|d| *d > Duration::from_secs(1)).collect();
    assert_eq!(long.len(), 2, "two caller's turns: {long:?}");
    for d in long {
        assert!(
            (Duration::from_millis(1980)..=Duration::from_millis(2060)).contains(&d),
            "a turn is the menu timeout: {d:?}"
        );
    }
    assert_eq!(last_record(&h).ladder, vec![Rung::Prompt, Rung::Menu, Rung::Callback]);
}

#[test]
fn rtp_never_stops_during_the_menu_wait_comfort_noise_fills_the_callers_turn() {
    let mut h = Harness::new(ladder_config(false));
    confirmed(&mut h);
    // 3 s prompt, 0.8 s menu, then the 2 s wait for a key: 50 packets every second
    h.take_rtp(); // the first packet, sent at the ACK
    let mut per_step = Vec::new();
    for _ in 0..300 {
        h.advance(Duration::from_millis(20));
        let n = h
            .out
            .iter()
            .filter(|o| matches!(o, Output::Transmit(Transmit::Rtp { local_port: 20000, .. })))
            .count();
        h.take_rtp();
        per_step.push(n);
    }
    assert!(per_step.iter().all(|n| *n == 1), "one packet every 20 ms: {per_step:?}");
    let call = h.ep.calls.values().next().unwrap();
    assert!(call.media.counters().comfort_frames >= 90, "{:?}", call.media.counters());
}

#[test]
fn an_unknown_key_says_so_and_plays_the_menu_again() {
    let mut h = Harness::new(ladder_config(false));
    confirmed(&mut h);
    h.advance(Duration::from_millis(3500));
    press(&mut h, 9, 100); // '9'
    assert!(callbacks(&mut h).is_empty());
    // 0.6 s "not a valid choice", then the menu again (a new Menu record is not written: same rung)
    h.advance(Duration::from_millis(1000));
    press(&mut h, 1, 200);
    assert_eq!(callbacks(&mut h)[0].reason, CallbackReason::CallerAsked);
}

#[test]
fn the_caller_hanging_up_mid_menu_ends_cleanly_and_the_record_says_where() {
    let mut h = Harness::new(ladder_config(false));
    let tag = confirmed(&mut h);
    h.advance(Duration::from_millis(3300));
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    assert_eq!(h.statuses(), vec![200]);
    let rec = last_record(&h);
    assert_eq!(rec.phase, RecordPhase::Ended);
    assert_eq!(rec.end.as_ref().unwrap().reason, "remote BYE");
    assert_eq!(rec.ladder, vec![Rung::Prompt, Rung::Menu]);
    assert_eq!(rec.callback, None);
    assert!(callbacks(&mut h).is_empty());
    assert_eq!(h.ep.status(h.now).calls.active, 0);
    h.take_rtp();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.take_rtp(), 0);
    assert!(callbacks(&mut h).is_empty(), "no callback after the caller left");
}

/// With agents configured, a call that loses its agent mid-call and gets no other falls to the
/// ladder at once: the prompt replaces the filler, then the menu; the key is the ladder's.
#[test]
fn a_call_that_loses_every_agent_mid_call_falls_to_the_ladder() {
    use super::ai::{ai_config, ai_in, bridged_call, take_connects};
    use crate::core::ai::FailureKind;
    let mut h = Harness::new(EndpointConfig { ladder: ladder_config(false).ladder, ..ai_config() });
    let (_, conn, _) = bridged_call(&mut h);
    h.advance(Duration::from_millis(100));
    ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
    let mut fell = false;
    for _ in 0..400 {
        for (c, _) in take_connects(&mut h) {
            ai_in(&mut h, Input::AiClosed { conn: c, kind: FailureKind::Dropped });
        }
        if h.ep.calls.values().next().is_some_and(|c| c.ladder.is_some()) {
            fell = true;
            break;
        }
        h.advance(Duration::from_millis(10));
    }
    assert!(fell, "the call did not fall to the ladder");
    let call = h.ep.calls.values().next().unwrap();
    assert!(call.media.is_playing_prompt(), "the high-demand prompt plays at once");
    assert_eq!(call.record.ladder, vec![Rung::Prompt]);
    assert!(phases(&h).contains(&RecordPhase::Fallback));
    h.advance(Duration::from_millis(3500)); // the prompt, into the menu
    assert!(phases(&h).contains(&RecordPhase::Menu));
    press(&mut h, 1, 100);
    let requests = callbacks(&mut h);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].reason, CallbackReason::CallerAsked);
    assert!(
        requests[0].failure.starts_with("no agent within the budget"),
        "{}",
        requests[0].failure
    );
}

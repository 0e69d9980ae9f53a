//! Call records: one per step of an answered call, the answer's before its 200 OK.

use super::ai::{ai_config, ai_in, bridged_call, take_connects};
use super::*;
use crate::core::ai::FailureKind;

fn records(h: &mut Harness) -> Vec<CallRecord> {
    let mut v = Vec::new();
    h.out.retain(|o| match o {
        Output::Event(Event::CallRecord(r)) => {
            v.push(r.clone());
            false
        }
        _ => true,
    });
    v
}

#[test]
fn the_answer_record_precedes_the_200_and_the_end_record_has_duration_and_quality() {
    let mut h = Harness::new(config());
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    let record_at = h.out.iter().position(|o| matches!(o, Output::Event(Event::CallRecord(_))));
    let ok_at = h.out.iter().position(|o| match o {
        Output::Transmit(Transmit::Sip { data, .. }) => data.starts_with(b"SIP/2.0 200"),
        _ => false,
    });
    assert!(record_at.expect("a record") < ok_at.expect("a 200"));
    let tag = answered_tag(&mut h);
    let recs = records(&mut h);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].phase, RecordPhase::Answered);
    assert_eq!(recs[0].call_id, "c1");
    assert_eq!(recs[0].carrier, "carrier-a");
    assert_eq!(recs[0].caller, "sip:+15550001@carrier");
    assert!(recs[0].called.starts_with("sip:"), "{}", recs[0].called);
    assert!(recs[0].end.is_none());

    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    h.advance(Duration::from_millis(700));
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    let mut recs = records(&mut h);
    // no agent configured: the ladder took the call at the ACK (its prompt rung is recorded)
    assert_eq!(
        recs.iter().map(|r| r.phase).collect::<Vec<_>>(),
        vec![RecordPhase::Fallback, RecordPhase::Ended]
    );
    recs.remove(0);
    let end = recs[0].end.as_ref().expect("end details");
    assert_eq!(recs[0].phase, RecordPhase::Ended);
    assert_eq!(
        recs[0].ladder,
        vec![crate::core::ladder::Rung::Prompt],
        "the caller left during the prompt"
    );
    assert_eq!(end.reason, "remote BYE");
    assert_eq!(end.duration_ms, 700);
    // the caller sent no RTP; the box played its prompt: only that direction is scored
    let mos = end.quality.mos.expect("the prompt was sent: the outbound direction has a MOS");
    assert!((1.0..=4.5).contains(&mos), "{:?}", end.quality);
}

fn answered_tag(h: &mut Harness) -> String {
    let sip = h.take_sip();
    let ok = sip.iter().find_map(|(_, m)| match m {
        SipMessage::Response(r) if r.status == 200 => Some(r.clone()),
        _ => None,
    });
    ok.expect("200 OK").to_hdr().unwrap().tag().unwrap().to_string()
}

#[test]
fn a_call_cancelled_while_ringing_leaves_no_record() {
    let mut h = Harness::new(EndpointConfig { answer_delay: Duration::from_secs(5), ..config() });
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    h.send(CARRIER_A, &cancel("c1", "z9hG4bK-inv1"));
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::CallEnded { .. }))));
    assert!(records(&mut h).is_empty());
}

#[test]
fn the_ladder_is_recorded_agent_failover_and_the_standby() {
    let mut h = Harness::new(ai_config());
    let (_, conn, _) = bridged_call(&mut h);
    let recs = records(&mut h);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].phase, recs[0].ai_endpoint.as_deref()),
        (RecordPhase::Answered, Some("primary"))
    );
    h.advance(Duration::from_millis(100));
    ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
    let mut next = None;
    for _ in 0..200 {
        if let Some(c) = take_connects(&mut h).pop() {
            next = Some(c);
            break;
        }
        h.advance(Duration::from_millis(5));
    }
    ai_in(&mut h, Input::AiOpened { conn: next.expect("re-bridge").0 });
    let steps: Vec<(RecordPhase, Option<String>, u32)> =
        records(&mut h).into_iter().map(|r| (r.phase, r.ai_endpoint, r.failovers)).collect();
    assert_eq!(
        steps,
        vec![
            (RecordPhase::Failover, Some("primary".to_string()), 1),
            (RecordPhase::AgentLive, Some("standby".to_string()), 1),
        ]
    );
}

#[test]
fn a_fallback_answer_records_its_reason() {
    let mut h = Harness::new(ai_config());
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    for _ in 0..500 {
        for (conn, _) in take_connects(&mut h) {
            ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
        }
        if h.statuses().contains(&200) {
            break;
        }
        h.advance(Duration::from_millis(10));
    }
    let recs = records(&mut h);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].phase, RecordPhase::Answered);
    assert_eq!(recs[0].fallback_reason.as_deref(), Some("no agent within the budget"));
    assert_eq!(recs[0].ai_endpoint, None);
}

//! The AI bridge through the endpoint on a fake clock: setup before answering, audio both ways,
//! standby at setup, fallback within the budget, mid-call failover with filler and resume, and
//! breakers that stop trying a dead primary.

use serde_json::Value;

use super::*;
use crate::core::ai::session::{AiProtocol, SessionConfig};
use crate::core::ai::{
    twilio, AiBreakers, BreakerConfig, CircuitBreaker, Endpoint as AiEndpoint, FailureKind,
    SelectorConfig,
};

fn hub() -> AiHub {
    let settings = |name: &str, port: u16| AiEndpointSettings {
        name: name.into(),
        protocol: AiProtocol::Twilio,
        url: format!("ws://127.0.0.1:{port}/media"),
        headers: vec![("Authorization".into(), "Bearer secret".into())],
        health_url: None,
    };
    AiHub {
        primary: settings("primary", 9001),
        standby: Some(settings("standby", 9002)),
        breakers: AiBreakers {
            primary: CircuitBreaker::new(BreakerConfig::default()),
            standby: Some(CircuitBreaker::new(BreakerConfig::default())),
        },
        selector: SelectorConfig::default(),
        session: SessionConfig::default(),
        format: AiFormat::G711(Law::Ulaw),
        failovers: 0,
        fallbacks: 0,
    }
}

pub(super) fn ai_config() -> EndpointConfig {
    EndpointConfig { ai: Some(hub()), ..config() }
}

/// Connection requests of calls (conn, url) emitted so far, forgotten (health probes are
/// dropped too: their connections have ids from `PROBE_CONN_BASE` up).
pub(super) fn take_connects(h: &mut Harness) -> Vec<(u64, String)> {
    let mut v = Vec::new();
    h.out.retain(|o| match o {
        Output::Event(Event::AiConnect { conn, .. })
            if *conn >= super::super::ai_probe::PROBE_CONN_BASE =>
        {
            false
        }
        Output::Event(Event::AiConnect { conn, url, .. }) => {
            v.push((*conn, url.clone()));
            false
        }
        _ => true,
    });
    v
}

/// Text frames sent to the agent so far (parsed JSON), forgotten.
fn take_frames(h: &mut Harness) -> Vec<(u64, Value)> {
    let mut v = Vec::new();
    h.out.retain(|o| match o {
        Output::Transmit(Transmit::AiText { conn, text }) => {
            v.push((*conn, serde_json::from_str(text).expect("we send JSON")));
            false
        }
        _ => true,
    });
    v
}

/// Answers every ping the endpoint sent with a pong (a healthy, quiet agent).
fn pong(h: &mut Harness) {
    let pings: Vec<u64> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit::AiPing { conn }) => Some(*conn),
            _ => None,
        })
        .collect();
    h.out.retain(|o| !matches!(o, Output::Transmit(Transmit::AiPing { .. })));
    for conn in pings {
        h.ep.handle_input(h.now, Input::AiPong { conn });
        h.drain();
    }
}

pub(super) fn ai_in(h: &mut Harness, input: Input<'_>) {
    h.ep.handle_input(h.now, input);
    h.drain();
}

fn stream_sid(frames: &[(u64, Value)]) -> String {
    frames
        .iter()
        .find(|(_, f)| f["event"] == "start")
        .map(|(_, f)| f["streamSid"].as_str().unwrap().to_string())
        .unwrap()
}

/// An INVITE answered through the primary; returns (our To tag, conn, streamSid).
pub(super) fn bridged_call(h: &mut Harness) -> (String, u64, String) {
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    assert_eq!(h.statuses(), vec![100, 180], "not answered before an agent is there");
    let connects = take_connects(h);
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0].1, "ws://127.0.0.1:9001/media", "primary first");
    let conn = connects[0].0;
    ai_in(h, Input::AiOpened { conn });
    let sip = h.take_sip();
    let ok = sip
        .iter()
        .find_map(|(_, m)| match m {
            SipMessage::Response(r) if r.status == 200 => Some(r.clone()),
            _ => None,
        })
        .expect("200 once the agent is live");
    let frames = take_frames(h);
    assert_eq!(frames[0].1["event"], "connected");
    assert_eq!(frames[1].1["event"], "start");
    assert_eq!(frames[1].1["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert_eq!(frames[1].1["start"]["customParameters"]["carrier"], "carrier-a");
    let sid = stream_sid(&frames);
    let tag = ok.to_hdr().unwrap().tag().unwrap().to_string();
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    (tag, conn, sid)
}

fn caller_rtp(seq: u16) -> Vec<u8> {
    let mut pkt = vec![0x80, 0x00];
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0, 42]);
    pkt.extend_from_slice(&[0x55; 160]);
    pkt
}

#[test]
fn a_call_is_answered_when_the_agent_is_live_and_audio_flows_both_ways() {
    let mut h = Harness::new(ai_config());
    let (_, conn, sid) = bridged_call(&mut h);
    // no canned prompt when an agent is live: comfort noise until the agent speaks
    h.advance(Duration::from_millis(200));
    let comfort = |h: &Harness| h.ep.calls.values().next().unwrap().media.counters().comfort_frames;
    let rtp = h.take_rtp();
    assert!((10..=11).contains(&rtp), "{rtp}");
    assert_eq!(comfort(&h), rtp as u64, "nothing said yet");
    // the agent speaks: 100 ms of audio reaches the caller as RTP (after the cushion)
    let agent = twilio::encode_agent_media(&sid, &[0x2a; 800]);
    ai_in(&mut h, Input::AiText { conn, text: &agent });
    let before = comfort(&h);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.take_rtp(), 10, "the stream goes on at 50 packets/s");
    assert_eq!(comfort(&h) - before, 5, "5 frames of agent audio among them");
    // the caller speaks: 1 s of RTP becomes ~50 media frames to the agent
    let from: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    for seq in 0..50u16 {
        h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &caller_rtp(seq) });
        h.advance(Duration::from_millis(20));
        pong(&mut h);
    }
    h.advance(Duration::from_millis(300));
    assert_eq!(
        h.ep.ai.as_ref().unwrap().failovers,
        0,
        "a quiet agent that answers pings is not stalled"
    );
    let media: Vec<Value> = take_frames(&mut h)
        .into_iter()
        .filter(|(_, f)| f["event"] == "media")
        .map(|(_, f)| f)
        .collect();
    assert!(media.len() >= 45, "caller audio forwarded: {}", media.len());
    assert_eq!(media[0]["media"]["track"], "inbound");
    // BYE from the caller: Twilio gets `stop` and the socket is closed
    let tag = h.ep.calls.values().next().unwrap().dialog.local_tag.clone();
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    let frames = take_frames(&mut h);
    assert!(frames.iter().any(|(_, f)| f["event"] == "stop"));
    assert!(h
        .out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::AiClose { conn: c }) if *c == conn)));
}

#[test]
fn a_refusing_primary_sends_the_call_to_the_standby_within_the_budget() {
    let mut h = Harness::new(ai_config());
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    let (conn, _) = take_connects(&mut h).remove(0);
    let t0 = h.now;
    ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::HttpStatus(503) });
    let mut standby = None;
    for _ in 0..200 {
        h.advance(Duration::from_millis(5));
        if let Some(c) = take_connects(&mut h).pop() {
            standby = Some(c);
            break;
        }
    }
    let (conn, url) = standby.expect("a second attempt");
    assert_eq!(url, "ws://127.0.0.1:9002/media");
    assert!(h.now - t0 < Duration::from_millis(700), "retried after a short jittered backoff");
    ai_in(&mut h, Input::AiOpened { conn });
    assert!(h.statuses().contains(&200));
}

#[test]
fn with_no_agent_the_call_is_answered_with_the_canned_prompt_within_the_budget() {
    let mut h = Harness::new(ai_config());
    let t0 = h.now;
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    h.take_sip();
    let mut answered_at = None;
    for _ in 0..500 {
        for (conn, _) in take_connects(&mut h) {
            ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
        }
        if h.statuses().contains(&200) {
            answered_at = Some(h.now);
            break;
        }
        h.advance(Duration::from_millis(10));
    }
    let answered_at = answered_at.expect("answered by the fallback");
    assert!(
        answered_at - t0 <= Duration::from_millis(1600),
        "within the 1.5 s budget: {:?}",
        answered_at - t0
    );
    let tag = h.ep.calls.values().next().unwrap().dialog.local_tag.clone();
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    h.advance(Duration::from_millis(1000));
    assert!(h.take_rtp() >= 49, "the canned prompt plays");
}

#[test]
fn a_mid_call_drop_plays_the_filler_and_resumes_on_the_standby() {
    let mut h = Harness::new(ai_config());
    let (_, conn, _) = bridged_call(&mut h);
    h.advance(Duration::from_millis(100));
    h.take_rtp();
    ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::Dropped });
    // the filler starts at once; a new connection is requested
    h.advance(Duration::from_millis(40));
    assert!(h.take_rtp() >= 2, "filler within a frame or two");
    let mut next = None;
    for _ in 0..200 {
        if let Some(c) = take_connects(&mut h).pop() {
            next = Some(c);
            break;
        }
        h.advance(Duration::from_millis(5));
    }
    let (conn2, url) = next.expect("re-bridge attempt");
    assert_eq!(url, "ws://127.0.0.1:9002/media", "the other endpoint");
    ai_in(&mut h, Input::AiOpened { conn: conn2 });
    let frames = take_frames(&mut h);
    let start = frames.iter().find(|(_, f)| f["event"] == "start").expect("a new start").1.clone();
    assert_eq!(start["start"]["customParameters"]["resumed"], "true");
    assert_eq!(h.ep.calls.len(), 1, "the SIP leg stayed up");
    assert_eq!(h.ep.ai.as_ref().unwrap().failovers, 1);
    // the new agent speaks: the filler stops and the gap is measured
    let sid = start["streamSid"].as_str().unwrap().to_string();
    h.advance(Duration::from_millis(30));
    ai_in(
        &mut h,
        Input::AiText { conn: conn2, text: &twilio::encode_agent_media(&sid, &[0x2a; 800]) },
    );
    let status = h.ep.status(h.now);
    assert_eq!(status.latency.failover_gap.count, 1);
    assert!(
        status.latency.failover_gap.max_ms.unwrap() < 1000.0,
        "{:?}",
        status.latency.failover_gap
    );
    assert_eq!(status.latency.ai_first_audio.count, 1, "the first agent never spoke");
    let kinds: Vec<&str> = status.recent_failures.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec!["agent-failover"], "one entry, naming the endpoint: {kinds:?}");
    assert!(
        status.recent_failures[0].detail.starts_with("connection to primary dropped mid-call"),
        "{:?}",
        status.recent_failures
    );
}

#[test]
fn a_stalled_agent_is_failed_over_while_the_caller_talks() {
    let mut h = Harness::new(ai_config());
    let (_, conn, _) = bridged_call(&mut h);
    let from: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    let mut failover_at = None;
    let t0 = h.now;
    for seq in 0..100u16 {
        h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &caller_rtp(seq) });
        h.advance(Duration::from_millis(20));
        if h.out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::AiClose { conn: c }) if *c == conn))
        {
            failover_at = Some(h.now);
            break;
        }
    }
    let at = failover_at.expect("stall detected");
    // the jitter buffer holds the first frames ~40 ms, then 500 ms of silence from the agent
    assert!(at - t0 <= Duration::from_millis(800), "detected after {:?}", at - t0);
    assert!(!take_connects(&mut h).is_empty() || h.ep.ai.as_ref().unwrap().failovers == 1);
}

#[test]
fn a_mute_agent_that_answers_pings_gets_the_filler_and_the_standby_after_the_first_audio_timeout() {
    let mut h = Harness::new(ai_config());
    let (_, conn, _) = bridged_call(&mut h);
    let from: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    let t0 = h.now;
    h.take_rtp();
    let (mut failover_at, mut rtp, mut seq) = (None, 0, 0u16);
    // the caller says hello and waits; the agent answers every ping and never speaks
    while h.now - t0 < Duration::from_secs(6) {
        h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &caller_rtp(seq) });
        seq += 1;
        h.advance(Duration::from_millis(20));
        pong(&mut h);
        rtp += h.take_rtp();
        let closed = h
            .out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::AiClose { conn: c }) if *c == conn));
        if closed && failover_at.is_none() {
            failover_at = Some(h.now);
            break;
        }
    }
    let at = failover_at.expect("mute agent detected");
    // the default first_audio_timeout_ms (4000) after the agent went live, within a frame
    assert!(at - t0 >= Duration::from_millis(4000), "{:?}", at - t0);
    assert!(at - t0 <= Duration::from_millis(4040), "{:?}", at - t0);
    assert_eq!(h.ep.ai.as_ref().unwrap().failovers, 1);
    let call = h.ep.calls.values().next().unwrap();
    assert!(call.media.is_playing_prompt(), "the filler at once");
    // meanwhile the caller got comfort noise: 50 packets/s, never a stopped stream
    assert!(rtp as u128 + 1 >= (at - t0).as_millis() / 20, "{rtp} packets");
    let mut next = None;
    for _ in 0..200 {
        if let Some(c) = take_connects(&mut h).pop() {
            next = Some(c);
            break;
        }
        h.advance(Duration::from_millis(5));
    }
    assert_eq!(next.expect("re-bridge").1, "ws://127.0.0.1:9002/media", "the standby");
}

#[test]
fn five_failures_open_the_primary_breaker_and_later_calls_go_straight_to_the_standby() {
    let mut h = Harness::new(EndpointConfig { rtp_ports: (20000, 20100), ..ai_config() });
    for i in 0..5 {
        h.send(CARRIER_A, &invite(&format!("c{i}"), &format!("z9hG4bK-{i}"), PCMU_OFFER));
        let (conn, url) = take_connects(&mut h).remove(0);
        assert!(url.ends_with(":9001/media"));
        ai_in(&mut h, Input::AiClosed { conn, kind: FailureKind::ConnectTimeout });
        // let the standby take the call
        for _ in 0..200 {
            if let Some((c, _)) = take_connects(&mut h).pop() {
                ai_in(&mut h, Input::AiOpened { conn: c });
                break;
            }
            h.advance(Duration::from_millis(5));
        }
    }
    let breaker = h.ep.ai.as_ref().unwrap().breakers.primary.state(h.now);
    assert!(matches!(breaker, crate::core::ai::BreakerState::Open), "{breaker:?}");
    h.send(CARRIER_A, &invite("c9", "z9hG4bK-9", PCMU_OFFER));
    let connects = take_connects(&mut h);
    assert_eq!(connects.len(), 1);
    assert!(connects[0].1.ends_with(":9002/media"), "primary skipped while open: {connects:?}");
    let _ = AiEndpoint::Primary;
}

#[test]
fn each_endpoint_is_probed_and_the_result_is_in_the_status() {
    let mut h = Harness::new(ai_config());
    h.advance(Duration::from_millis(1));
    let probes: Vec<(u64, String)> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::AiConnect { conn, url, .. }) => Some((*conn, url.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(probes.len(), 2, "primary and standby probed at start: {probes:?}");
    ai_in(&mut h, Input::AiOpened { conn: probes[0].0 });
    ai_in(&mut h, Input::AiClosed { conn: probes[1].0, kind: FailureKind::HttpStatus(503) });
    assert!(h
        .out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::AiClose { conn }) if *conn == probes[0].0)));
    let status = h.ep.status(h.now);
    assert_eq!(status.ai_endpoints.len(), 2);
    assert_eq!(status.ai_endpoints[0].probe_successes, 1);
    assert_eq!(status.ai_endpoints[0].last_probe_ok_ms_ago, Some(0));
    assert_eq!(status.ai_endpoints[1].probe_failures, 1);
    assert_eq!(status.ai_endpoints[1].last_probe_ok_ms_ago, None);
    assert_eq!(status.ai_endpoints[0].breaker, "closed");
}

#[test]
fn an_ai_endpoint_out_of_service_gets_no_calls() {
    let mut h = Harness::new(ai_config());
    h.ep.admin(AdminCommand::AiEndpointInService { name: "primary".into(), in_service: false })
        .unwrap();
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    let connects = take_connects(&mut h);
    assert_eq!(connects.len(), 1);
    assert!(connects[0].1.ends_with(":9002/media"), "straight to the standby: {connects:?}");
    assert_eq!(h.ep.status(h.now).admin.ai_endpoints_out_of_service, vec!["primary".to_string()]);
}

/// PCMU packets carrying audible audio sent to the caller so far (comfort noise and RTCP not
/// counted), forgotten with the rest of the RTP and RTCP.
fn take_pcmu(h: &mut Harness) -> usize {
    // μ-law codes of magnitude 0x70-0x7F are within a few steps of zero: comfort noise
    let audible = |payload: &[u8]| payload.iter().any(|b| b & 0x7f < 0x60);
    let mut n = 0;
    h.out.retain(|o| match o {
        Output::Transmit(Transmit::Rtp { data, .. }) => {
            n += usize::from(data.len() > 12 && data[1] & 0x7f == 0 && audible(&data[12..]));
            false
        }
        _ => true,
    });
    n
}

#[test]
fn a_clear_with_seconds_of_agent_audio_queued_stops_it_at_the_next_frame() {
    let mut h = Harness::new(ai_config());
    let (_, conn, sid) = bridged_call(&mut h);
    // the agent sends 5 s of audio at once (a burst), then a mark after it
    for _ in 0..25 {
        let agent = twilio::encode_agent_media(&sid, &[0x2a; 1600]);
        ai_in(&mut h, Input::AiText { conn, text: &agent });
    }
    ai_in(&mut h, Input::AiText { conn, text: &twilio::encode_agent_mark(&sid, "end") });
    h.advance(Duration::from_millis(1000));
    assert_eq!(take_pcmu(&mut h), 50, "played at the caller's pace: 1 s of the 5");
    take_frames(&mut h);
    pong(&mut h);

    // barge-in: the agent clears while the box still holds 4 s
    ai_in(&mut h, Input::AiText { conn, text: &twilio::encode_clear(&sid) });
    let marks: Vec<Value> = take_frames(&mut h)
        .into_iter()
        .filter(|(_, f)| f["event"] == "mark")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(marks.len(), 1, "the cleared mark goes back to the agent at once: {marks:?}");
    assert_eq!(marks[0]["mark"]["name"], "end");
    h.advance(Duration::from_millis(20));
    assert_eq!(take_pcmu(&mut h), 0, "the next frame carries none of the cleared audio");
    for _ in 0..40 {
        h.advance(Duration::from_millis(100));
        pong(&mut h);
    }
    assert_eq!(take_pcmu(&mut h), 0, "the 4 s still queued were dropped, not played later");

    // the agent's next turn plays normally
    ai_in(&mut h, Input::AiText { conn, text: &twilio::encode_agent_media(&sid, &[0x2a; 800]) });
    h.advance(Duration::from_millis(200));
    assert_eq!(take_pcmu(&mut h), 5);
}

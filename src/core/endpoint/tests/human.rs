//! The human rung on a fake clock: fake carriers answer the outbound INVITE with scripted SIP
//! text; failover by cause, Retry-After, no provisional, transport errors, the ring timeout,
//! the media bridge between caller and human, and the REFER path.

use super::*;
use crate::core::endpoint::ladder::HumanOutcome;
use crate::core::ladder::LadderConfig;

const PROXY_A: &str = "127.0.0.2:5070";
const PROXY_B: &str = "127.0.0.3:5070";
const HUMAN_RTP: &str = "127.0.0.5:7000";
const CALLER_RTP: &str = "127.0.0.2:6000";
const HUMAN: &str = "sip:+15559999@human.example";

/// Carriers with proxies whose OPTIONS health stays unknown (one probe, unanswered, then none
/// for an hour): usable, like healthy ones.
fn proxied(name: &str, net: &str, proxy: &str) -> CarrierSettings {
    let mut c = carrier(name, net, Some(proxy));
    c.probe.interval = Duration::from_secs(3600);
    c
}

fn human_config() -> EndpointConfig {
    EndpointConfig {
        carriers: vec![
            proxied("carrier-a", "127.0.0.2/32", PROXY_A),
            proxied("carrier-b", "127.0.0.3/32", PROXY_B),
        ],
        outbound: OutboundSettings {
            human: Some(HUMAN.into()),
            preferred_carrier: Some(0),
            ..OutboundSettings::default()
        },
        ladder: LadderConfig {
            menu: true,
            human: true,
            human_timeout: Duration::from_secs(25),
            ..LadderConfig::default()
        },
        rtp_ports: (20000, 20003), // the caller on 20000, the human on 20002
        ..config()
    }
}

fn refer_config() -> EndpointConfig {
    let mut cfg = human_config();
    cfg.carriers[0].transfer = TransferMode::Refer;
    cfg
}

/// An answered, acknowledged inbound call from carrier A; returns its id and our To tag.
fn confirmed_call(h: &mut Harness, call_id: &str) -> (u64, String) {
    h.send(CARRIER_A, &invite(call_id, &format!("z9hG4bK-inv-{call_id}"), PCMU_OFFER));
    let sip = h.take_sip();
    let ok = sip.iter().find_map(|(_, m)| match m {
        SipMessage::Response(r) if r.status == 200 => Some(r.clone()),
        _ => None,
    });
    let tag = ok.expect("200 OK").to_hdr().unwrap().tag().unwrap().to_string();
    h.send(CARRIER_A, &in_dialog("ACK", call_id, &tag, 1, &format!("z9hG4bK-ack-{call_id}")));
    let id = h.ep.calls.values().find(|c| c.dialog.call_id == call_id).map(|c| c.id).unwrap();
    h.take_sip();
    (id, tag)
}

/// Requests we sent, with where they went.
fn requests(h: &mut Harness) -> Vec<(SocketAddr, Request)> {
    h.take_sip()
        .into_iter()
        .filter_map(|(to, m)| match m {
            SipMessage::Request(r) if r.method != Method::Options => Some((to, r)),
            _ => None,
        })
        .collect()
}

fn only_invite(h: &mut Harness) -> (SocketAddr, Request) {
    let reqs = requests(h);
    let mut invites: Vec<(SocketAddr, Request)> = Vec::new();
    for (to, r) in reqs.into_iter().filter(|(_, r)| r.method == Method::Invite) {
        // retransmissions (Timer A) are the same INVITE
        if !invites.iter().any(|(_, i)| i.call_id().ok() == r.call_id().ok()) {
            invites.push((to, r));
        }
    }
    assert_eq!(invites.len(), 1, "{invites:?}");
    invites.into_iter().next().unwrap()
}

fn reply(h: &mut Harness, from: &str, req: &Request, status: u16, extra: &[(&str, &str)]) {
    let mut resp = build::response_to(&req.headers, status, Some("humantag"), "fake-carrier");
    for (n, v) in extra {
        resp.headers.push(*n, *v);
    }
    h.send(from, &String::from_utf8(resp.to_bytes()).unwrap());
}

const HUMAN_SDP: &str = "v=0\r\no=- 5 5 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn answer(h: &mut Harness, from: &str, req: &Request) {
    let mut resp = build::response_to(&req.headers, 200, Some("humantag"), "fake-carrier");
    resp.headers.push("Contact", format!("<sip:human@{from}>"));
    resp.headers.push("Content-Type", "application/sdp");
    resp.body = HUMAN_SDP.as_bytes().to_vec();
    h.send(from, &String::from_utf8(resp.to_bytes()).unwrap());
}

/// The caller waits for the menu and presses 2: the ladder starts the human rung. True when
/// a human leg (REFER or INVITE) is under way.
fn start(h: &mut Harness, id: u64) -> bool {
    h.advance(Duration::from_millis(3500)); // the high-demand prompt, then the menu
    h.take_sip();
    press(h, id, 2);
    h.ep.human.legs.contains_key(&id)
}

/// One key press as RFC 4733 packets on call `id`'s RTP port.
fn press(h: &mut Harness, id: u64, digit: u8) {
    let port = h.ep.calls[&id].local_port;
    let from: SocketAddr = CALLER_RTP.parse().unwrap();
    // each key its own event (timestamp) and sequence numbers
    let (seq, ts) = (100 + u16::from(digit) * 10, 160_000 + u32::from(digit) * 8000);
    for (i, (end, duration)) in
        [(false, 160u16), (true, 800), (true, 800), (true, 800)].into_iter().enumerate()
    {
        let mut pkt = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
        pkt.extend_from_slice(&(seq + i as u16).to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend_from_slice(&[digit, if end { 0x80 | 10 } else { 10 }]);
        pkt.extend_from_slice(&duration.to_be_bytes());
        h.ep.handle_input(h.now, Input::Rtp { local_port: port, from, data: &pkt });
    }
    h.drain();
}

fn outcomes(h: &Harness) -> Vec<HumanOutcome> {
    h.ep.human.reported.iter().map(|(_, o)| o.clone()).collect()
}

#[test]
fn a_503_on_carrier_a_leaves_through_carrier_b_and_the_human_is_bridged() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (to, inv_a) = only_invite(&mut h);
    assert_eq!(to, PROXY_A.parse().unwrap());
    assert_eq!(inv_a.uri, "sip:+15559999@127.0.0.2:5070", "human's user part at the carrier");
    assert!(inv_a.from_hdr().unwrap().uri.starts_with("sip:+15550001@"), "the caller's number");
    let offer = String::from_utf8_lossy(&inv_a.body).to_string();
    assert!(offer.contains("m=audio 20002 RTP/AVP 0 8 101"), "{offer}");
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::MediaOpen { port: 20002 }))));
    reply(&mut h, PROXY_A, &inv_a, 100, &[]);
    reply(&mut h, PROXY_A, &inv_a, 503, &[]);
    // the transaction layer ACKs the 503; the INVITE goes to B
    let reqs = requests(&mut h);
    assert!(reqs.iter().any(|(to, r)| r.method == Method::Ack && *to == PROXY_A.parse().unwrap()));
    let (to, inv_b) =
        reqs.into_iter().find(|(_, r)| r.method == Method::Invite).expect("INVITE to B");
    assert_eq!(to, PROXY_B.parse().unwrap());
    assert_ne!(inv_b.call_id().unwrap(), inv_a.call_id().unwrap());
    reply(&mut h, PROXY_B, &inv_b, 180, &[]);
    // the caller hears ringback meanwhile
    assert!(h.ep.calls[&id].media.is_playing_prompt());
    answer(&mut h, PROXY_B, &inv_b);
    let reqs = requests(&mut h);
    let (to, ack) = reqs.iter().find(|(_, r)| r.method == Method::Ack).expect("ACK of the 2xx");
    assert_eq!(*to, PROXY_B.parse().unwrap());
    assert_eq!(ack.uri, format!("sip:human@{PROXY_B}"));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.to_hdr().unwrap().tag(), Some("humantag"));
    assert_ne!(
        ack.top_via().unwrap().branch(),
        inv_b.top_via().unwrap().branch(),
        "a new transaction-less ACK"
    );
    assert_eq!(outcomes(&h), vec![HumanOutcome::Connected]);
    assert!(!h.ep.calls[&id].media.is_playing_prompt(), "ringback stops");
    let rec = h.ep.calls[&id].record.human.clone().expect("human record");
    assert_eq!(rec.carrier.as_deref(), Some("carrier-b"));
    assert_eq!(rec.failed_attempts, vec!["carrier-a: 503 Service Unavailable".to_string()]);
    assert_eq!((rec.failovers, rec.outcome, rec.refer), (1, Some("connected"), false));
    // a retransmitted 2xx is ACKed again
    answer(&mut h, PROXY_B, &inv_b);
    assert_eq!(requests(&mut h).iter().filter(|(_, r)| r.method == Method::Ack).count(), 1);
    let status = h.ep.status(h.now);
    assert_eq!(
        (status.outbound.attempts, status.outbound.failovers, status.outbound.connected),
        (2, 1, 1)
    );
    assert_eq!(status.carriers[0].outbound_failures, 1);

    // media both ways: caller RTP reaches the human leg, human RTP reaches the caller
    h.take_rtp();
    let caller_from: SocketAddr = CALLER_RTP.parse().unwrap();
    let human_from: SocketAddr = HUMAN_RTP.parse().unwrap();
    for i in 0..50u16 {
        h.ep.handle_input(
            h.now,
            Input::Rtp { local_port: 20000, from: caller_from, data: &pcmu_packet(i, 0x1111) },
        );
        h.ep.handle_input(
            h.now,
            Input::Rtp { local_port: 20002, from: human_from, data: &pcmu_packet(i, 0x2222) },
        );
        h.advance(Duration::from_millis(20));
    }
    let (to_human, to_caller) = rtp_counts(&mut h);
    println!("bridge: {to_human} packets to the human, {to_caller} to the caller in 1 s");
    assert!(to_human >= 40, "caller audio reaches the human: {to_human}");
    assert!(to_caller >= 40, "human audio reaches the caller: {to_caller}");

    // the caller's keys reach the human as RFC 4733 events
    h.take_rtp();
    press(&mut h, id, 5);
    // (no deadline in the past while the key waits for the next frame tick: the clock moves)
    assert!(h.ep.poll_timeout().is_some_and(|t| t > h.now));
    h.advance(Duration::from_millis(200));
    let events = h
        .out
        .iter()
        .filter(|o| matches!(o, Output::Transmit(Transmit::Rtp { local_port: 20002, data, .. }) if data.len() == 16 && data[1] & 0x7f == 101 && data[12] == 5))
        .count();
    assert!(events >= 3, "key 5 relayed to the human: {events} event packets");

    // the human hangs up: 200, the leg's port closes, the ladder hears Ended
    let bye = format!(
        "BYE sip:trunkguard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PROXY_B};branch=z9hG4bK-hb\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        ack.to_hdr().unwrap(),
        ack.from_hdr().unwrap(),
        ack.call_id().unwrap()
    );
    h.send(PROXY_B, &bye);
    assert_eq!(h.statuses(), vec![200]);
    assert_eq!(outcomes(&h), vec![HumanOutcome::Connected, HumanOutcome::Ended]);
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::MediaClose { port: 20002 }))));
    assert_eq!(h.ep.status(h.now).outbound.active_legs, 0);
    // the ladder hangs the caller up
    h.advance(Duration::from_millis(500));
    let reqs = requests(&mut h);
    assert!(
        reqs.iter().any(|(to, r)| r.method == Method::Bye && *to == CARRIER_A.parse().unwrap()),
        "{reqs:?}"
    );
}

/// A PCMU packet with a non-silent payload.
fn pcmu_packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let ts = u32::from(seq) * 160;
    let mut pkt = vec![0x80, 0x00];
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(&ts.to_be_bytes());
    pkt.extend_from_slice(&ssrc.to_be_bytes());
    pkt.extend((0..160).map(|i| if i % 8 < 4 { 0x20 } else { 0xa0 }));
    pkt
}

/// RTP sent so far: (from the human leg's port to the human, from the caller's port to the
/// caller); forgets them.
fn rtp_counts(h: &mut Harness) -> (usize, usize) {
    let (mut to_human, mut to_caller) = (0, 0);
    h.out.retain(|o| match o {
        Output::Transmit(Transmit::Rtp { local_port: 20002, to, .. })
            if *to == HUMAN_RTP.parse().unwrap() =>
        {
            to_human += 1;
            false
        }
        Output::Transmit(Transmit::Rtp { local_port: 20000, to, .. })
            if *to == CALLER_RTP.parse().unwrap() =>
        {
            to_caller += 1;
            false
        }
        _ => true,
    });
    (to_human, to_caller)
}

#[test]
fn retry_after_on_a_503_keeps_carrier_a_out_for_that_long() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    reply(&mut h, PROXY_A, &inv_a, 503, &[("Retry-After", "60")]);
    let (to, inv_b) = only_invite(&mut h);
    assert_eq!(to, PROXY_B.parse().unwrap());
    reply(&mut h, PROXY_B, &inv_b, 486, &[]);
    assert_eq!(h.ep.status(h.now).carriers[0].outbound_hold_ms, Some(60_000));

    // 30 s later another transfer goes straight to B
    h.advance(Duration::from_secs(30));
    let (id2, _) = confirmed_call(&mut h, "c2");
    assert!(start(&mut h, id2));
    let (to, inv) = only_invite(&mut h);
    assert_eq!(to, PROXY_B.parse().unwrap(), "A is held");
    reply(&mut h, PROXY_B, &inv, 486, &[]);

    // after the 60 s, A is first again
    h.advance(Duration::from_secs(31));
    let (id3, _) = confirmed_call(&mut h, "c3");
    assert!(start(&mut h, id3));
    assert_eq!(only_invite(&mut h).0, PROXY_A.parse().unwrap());
}

#[test]
fn busy_here_is_not_rerouted() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    reply(&mut h, PROXY_A, &inv_a, 180, &[]);
    reply(&mut h, PROXY_A, &inv_a, 486, &[]);
    h.advance(Duration::from_secs(5));
    let reqs = requests(&mut h);
    assert!(reqs.iter().all(|(to, _)| *to != PROXY_B.parse().unwrap()), "nothing to B: {reqs:?}");
    assert_eq!(outcomes(&h), vec![HumanOutcome::Unavailable { cause: "486 Busy Here".into() }]);
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::MediaClose { port: 20002 }))));
    // busy is the callee's answer: it does not count against the carrier
    assert_eq!(h.ep.status(h.now).carriers[0].outbound_failures, 0);
}

#[test]
fn no_provisional_within_2_s_moves_to_b_and_a_late_1xx_on_a_is_cancelled() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    h.advance(Duration::from_millis(1990));
    assert!(
        requests(&mut h)
            .iter()
            .all(|(to, r)| r.method == Method::Invite && *to == PROXY_A.parse().unwrap()),
        "only A's retransmissions"
    );
    h.advance(Duration::from_millis(10));
    let (to, inv_b) = only_invite(&mut h);
    assert_eq!(to, PROXY_B.parse().unwrap());
    // A wakes up late: its attempt is cancelled, not connected
    reply(&mut h, PROXY_A, &inv_a, 180, &[]);
    let reqs = requests(&mut h);
    let cancel =
        reqs.iter().find(|(_, r)| r.method == Method::Cancel).expect("CANCEL of A's attempt");
    assert_eq!(cancel.0, PROXY_A.parse().unwrap());
    assert_eq!(cancel.1.top_via().unwrap().branch(), inv_a.top_via().unwrap().branch());
    assert_eq!(cancel.1.cseq().unwrap().seq, 1);
    reply(&mut h, PROXY_B, &inv_b, 180, &[]);
    answer(&mut h, PROXY_B, &inv_b);
    assert_eq!(outcomes(&h), vec![HumanOutcome::Connected]);
}

#[test]
fn a_late_2xx_on_an_abandoned_attempt_is_acked_and_hung_up() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    h.advance(Duration::from_secs(2));
    let reqs = requests(&mut h);
    assert!(reqs
        .iter()
        .any(|(to, r)| r.method == Method::Invite && *to == PROXY_B.parse().unwrap()));
    answer(&mut h, PROXY_A, &inv_a);
    let reqs = requests(&mut h);
    let methods: Vec<_> = reqs
        .iter()
        .filter(|(to, _)| *to == PROXY_A.parse().unwrap())
        .map(|(_, r)| r.method.clone())
        .collect();
    assert_eq!(methods, vec![Method::Ack, Method::Bye]);
    assert!(outcomes(&h).is_empty(), "the abandoned attempt does not connect");
}

#[test]
fn a_transport_error_moves_to_b_at_once() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let _ = only_invite(&mut h);
    let peer = Peer { transport: Transport::Udp, addr: PROXY_A.parse().unwrap() };
    h.ep.handle_input(h.now, Input::SipUnreachable { peer });
    h.drain();
    let (to, _) = only_invite(&mut h);
    assert_eq!(to, PROXY_B.parse().unwrap());
}

#[test]
fn both_carriers_failing_is_unavailable_with_the_last_cause() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    reply(&mut h, PROXY_A, &inv_a, 500, &[]);
    let (_, inv_b) = only_invite(&mut h);
    reply(&mut h, PROXY_B, &inv_b, 503, &[]);
    assert_eq!(
        outcomes(&h),
        vec![HumanOutcome::Unavailable { cause: "carrier-b: 503 Service Unavailable".into() }]
    );
    assert_eq!(h.ep.status(h.now).outbound.unavailable, 1);
    // the caller is still on the line (the ladder decides what comes next)
    assert_eq!(h.ep.calls.len(), 1);
}

#[test]
fn no_human_or_no_carrier_returns_false_at_once() {
    let mut h =
        Harness::new(EndpointConfig { outbound: OutboundSettings::default(), ..human_config() });
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(!h.ep.start_human(h.now, id));
    let mut h = Harness::new(EndpointConfig { carriers: config().carriers, ..human_config() });
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(!h.ep.start_human(h.now, id), "no carrier has a proxy");
    assert!(outcomes(&h).is_empty());
    assert!(requests(&mut h).is_empty());
    // through the ladder: key 2, no leg, the ladder goes down to a callback at once
    assert!(!start(&mut h, id));
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::CallbackRequested(_)))));
}

#[test]
fn ringing_past_the_human_timeout_is_cancelled_and_reported_as_no_answer() {
    let mut h = Harness::new(human_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    reply(&mut h, PROXY_A, &inv_a, 180, &[]);
    h.advance(Duration::from_secs(24));
    assert!(outcomes(&h).is_empty());
    assert!(h.ep.calls[&id].media.is_playing_prompt(), "ringback all along");
    h.advance(Duration::from_secs(1));
    assert_eq!(outcomes(&h), vec![HumanOutcome::NoAnswer]);
    let reqs = requests(&mut h);
    let cancel = reqs.iter().find(|(_, r)| r.method == Method::Cancel).expect("CANCEL");
    assert_eq!(cancel.0, PROXY_A.parse().unwrap());
    reply(&mut h, PROXY_A, &cancel.1, 200, &[]);
    reply(&mut h, PROXY_A, &inv_a, 487, &[]);
    assert!(requests(&mut h).iter().any(|(_, r)| r.method == Method::Ack), "the 487 is ACKed");
    assert_eq!(outcomes(&h), vec![HumanOutcome::NoAnswer]);
    assert_eq!(h.ep.status(h.now).outbound.no_answer, 1);
}

#[test]
fn the_caller_hanging_up_cancels_a_ringing_human_leg() {
    let mut h = Harness::new(human_config());
    let (id, tag) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    reply(&mut h, PROXY_A, &inv_a, 180, &[]);
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    let reqs = requests(&mut h);
    assert!(reqs
        .iter()
        .any(|(to, r)| r.method == Method::Cancel && *to == PROXY_A.parse().unwrap()));
    assert!(outcomes(&h).is_empty(), "nothing to report for a caller who left");
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::MediaClose { port: 20002 }))));
}

#[test]
fn the_caller_hanging_up_ends_a_connected_human_leg_with_bye() {
    let mut h = Harness::new(human_config());
    let (id, tag) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv_a) = only_invite(&mut h);
    answer(&mut h, PROXY_A, &inv_a);
    h.take_sip();
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    let reqs = requests(&mut h);
    let bye = reqs
        .iter()
        .find(|(to, r)| r.method == Method::Bye && *to == PROXY_A.parse().unwrap())
        .expect("BYE to the human");
    assert_eq!(bye.1.uri, format!("sip:human@{PROXY_A}"));
    assert_eq!(bye.1.cseq().unwrap().seq, 2);
}

#[test]
fn five_carrier_failures_open_the_outbound_breaker() {
    let mut h = Harness::new(human_config());
    for i in 0..5 {
        let (id, tag) = confirmed_call(&mut h, &format!("c{i}"));
        assert!(start(&mut h, id));
        let (to, inv) = only_invite(&mut h);
        assert_eq!(to, PROXY_A.parse().unwrap());
        reply(&mut h, PROXY_A, &inv, 500, &[]);
        let (_, inv_b) = only_invite(&mut h);
        reply(&mut h, PROXY_B, &inv_b, 486, &[]);
        h.send(CARRIER_A, &in_dialog("BYE", &format!("c{i}"), &tag, 2, &format!("z9hG4bK-bye{i}")));
        h.take_sip();
    }
    assert_eq!(h.ep.status(h.now).carriers[0].outbound_breaker, "open");
    let (id, _) = confirmed_call(&mut h, "c9");
    assert!(start(&mut h, id));
    assert_eq!(only_invite(&mut h).0, PROXY_B.parse().unwrap());
}

#[test]
fn a_407_is_answered_with_digest_credentials_once() {
    use crate::core::carrier::register::RegisterSettings;
    let mut cfg = human_config();
    cfg.carriers[0].register = Some(RegisterSettings::new("sip:127.0.0.2:5070", "alice", "secret"));
    let mut h = Harness::new(cfg);
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv) = only_invite(&mut h);
    let challenge = [("Proxy-Authenticate", "Digest realm=\"trunk\", nonce=\"n0nce\"")];
    reply(&mut h, PROXY_A, &inv, 407, &challenge);
    let reqs = requests(&mut h);
    let (to, authed) =
        reqs.iter().find(|(_, r)| r.method == Method::Invite).expect("INVITE with credentials");
    assert_eq!(*to, PROXY_A.parse().unwrap());
    assert_eq!(authed.call_id().unwrap(), inv.call_id().unwrap());
    assert_eq!(authed.cseq().unwrap().seq, 2);
    let value = authed.headers.get("Proxy-Authorization").expect("Proxy-Authorization");
    assert!(crate::core::sip::digest::verify(value, "INVITE", "secret", "trunk"), "{value}");
    // challenged again: final (no loop), and 407 is not a carrier failure to re-route
    reply(&mut h, PROXY_A, authed, 407, &challenge);
    assert_eq!(outcomes(&h), vec![HumanOutcome::Unavailable { cause: "407 Unknown".into() }]);
}

#[test]
fn a_challenged_invite_is_answered_and_connects() {
    use crate::core::carrier::register::RegisterSettings;
    let mut cfg = human_config();
    cfg.carriers[0].register = Some(RegisterSettings::new("sip:127.0.0.2:5070", "alice", "secret"));
    let mut h = Harness::new(cfg);
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let (_, inv) = only_invite(&mut h);
    reply(
        &mut h,
        PROXY_A,
        &inv,
        401,
        &[("WWW-Authenticate", "Digest realm=\"trunk\", nonce=\"n1\", qop=\"auth\"")],
    );
    let reqs = requests(&mut h);
    let (_, authed) =
        reqs.iter().find(|(_, r)| r.method == Method::Invite).expect("INVITE with credentials");
    assert!(authed.headers.get("Authorization").is_some());
    answer(&mut h, PROXY_A, authed);
    assert_eq!(outcomes(&h), vec![HumanOutcome::Connected]);
}

// ---- REFER ---------------------------------------------------------------------------------

fn notify(call_id: &str, tag: &str, cseq: u32, frag: &str) -> String {
    format!(
        "NOTIFY sip:trunkguard@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-n{cseq}
Max-Forwards: 70
From: <sip:+15550001@carrier>;tag=caller1
To: <sip:bot@127.0.0.1>;tag={tag}
Call-ID: {call_id}
CSeq: {cseq} NOTIFY
Event: refer
Subscription-State: active;expires=60
Content-Type: message/sipfrag;version=2.0
Content-Length: {}

{frag}",
        frag.len()
    )
}

#[test]
fn refer_with_a_200_sipfrag_connects_and_hangs_up_our_leg() {
    let mut h = Harness::new(refer_config());
    let (id, tag) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let reqs = requests(&mut h);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let (to, refer) = &reqs[0];
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(*to, CARRIER_A.parse().unwrap());
    assert_eq!(refer.uri, "sip:caller@127.0.0.2:5070");
    assert_eq!(refer.headers.get("Refer-To"), Some(format!("<{HUMAN}>").as_str()));
    assert_eq!(refer.to_hdr().unwrap().tag(), Some("caller1"));
    reply(&mut h, CARRIER_A, refer, 202, &[]);
    h.send(CARRIER_A, &notify("c1", &tag, 2, "SIP/2.0 100 Trying"));
    assert_eq!(h.statuses(), vec![200]);
    // longer than REFER_WAIT: the carrier is calling the human
    h.advance(Duration::from_secs(6));
    assert!(outcomes(&h).is_empty());
    h.send(CARRIER_A, &notify("c1", &tag, 3, "SIP/2.0 200 OK"));
    assert_eq!(outcomes(&h), vec![HumanOutcome::Connected]);
    let sip = h.take_sip();
    assert!(sip.iter().any(|(_, m)| matches!(m, SipMessage::Response(r) if r.status == 200)));
    assert!(sip
        .iter()
        .any(|(to, m)| matches!(m, SipMessage::Request(r) if r.method == Method::Bye)
            && *to == CARRIER_A.parse().unwrap()));
    assert_eq!(h.ep.status(h.now).outbound.refers, 1);
}

#[test]
fn a_refused_refer_falls_back_to_the_bridged_invite() {
    let mut h = Harness::new(refer_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let reqs = requests(&mut h);
    reply(&mut h, CARRIER_A, &reqs[0].1, 403, &[]);
    let (to, inv) = only_invite(&mut h);
    assert_eq!(to, PROXY_A.parse().unwrap());
    answer(&mut h, PROXY_A, &inv);
    assert_eq!(outcomes(&h), vec![HumanOutcome::Connected]);
    assert_eq!(h.ep.status(h.now).outbound.refer_fallbacks, 1);
}

#[test]
fn a_failed_sipfrag_or_silence_falls_back_to_the_bridged_invite() {
    let mut h = Harness::new(refer_config());
    let (id, tag) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    let reqs = requests(&mut h);
    reply(&mut h, CARRIER_A, &reqs[0].1, 202, &[]);
    h.send(CARRIER_A, &notify("c1", &tag, 2, "SIP/2.0 503 Service Unavailable"));
    assert_eq!(only_invite(&mut h).0, PROXY_A.parse().unwrap());

    // a REFER nobody answers: after REFER_WAIT, the INVITE
    let mut h = Harness::new(refer_config());
    let (id, _) = confirmed_call(&mut h, "c1");
    assert!(start(&mut h, id));
    h.take_sip();
    h.advance(super::super::human::REFER_WAIT);
    let reqs = requests(&mut h);
    assert!(
        reqs.iter().any(|(to, r)| r.method == Method::Invite && *to == PROXY_A.parse().unwrap()),
        "{reqs:?}"
    );
}

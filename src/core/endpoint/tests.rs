//! The endpoint on a fake clock: whole calls, failure paths and carrier probing, each driven
//! by handing in text messages and draining outputs, in microseconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

mod ai;
mod hostile_agent;
mod human;
mod ladder;
mod operator;
mod records;
use crate::core::carrier::probe::ProbeSettings;
use crate::core::ladder::{NoAnswer, PromptId};
use crate::core::media::g711::Law;
use crate::core::sip::headers::NameAddr;

const CARRIER_A: &str = "127.0.0.2:5070";
const STRANGER: &str = "127.0.0.9:5070";

/// A 3-second 8 kHz tone as a WAV file, so tests do not depend on the shipped prompt.
fn tone_wav() -> Vec<u8> {
    tone_wav_ms(3000)
}

/// A tone of `ms` milliseconds as a WAV file.
fn tone_wav_ms(ms: usize) -> Vec<u8> {
    let samples: Vec<i16> =
        (0..ms * 8).map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16).collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

/// Test prompts: the 3 s tone for the high-demand prompt, shorter tones of distinct lengths for
/// the others (so a test can tell them apart by their packet count).
fn test_prompts() -> LadderPrompts {
    let mut p = LadderPrompts::uniform(Prompt::from_wav_bytes(&tone_wav()).unwrap());
    for (id, ms) in TEST_PROMPT_MS {
        p.set(id, Prompt::from_wav_bytes(&tone_wav_ms(ms)).unwrap());
    }
    p
}

const TEST_PROMPT_MS: [(PromptId, usize); 8] = [
    (PromptId::HighDemand, 3000),
    (PromptId::Menu, 1000),
    (PromptId::MenuNoHuman, 800),
    (PromptId::MenuInvalid, 600),
    (PromptId::CallbackConfirm, 700),
    (PromptId::TransferHold, 500),
    (PromptId::SorryCallback, 900),
    (PromptId::Goodbye, 300),
];

fn probe_settings() -> ProbeSettings {
    ProbeSettings {
        interval: Duration::from_millis(1000),
        timeout: Duration::from_millis(500),
        down_after: 2,
        up_after: 2,
    }
}

fn carrier(name: &str, net: &str, proxy: Option<&str>) -> CarrierSettings {
    CarrierSettings {
        name: name.into(),
        proxy: proxy.map(|p| Peer { transport: Transport::Udp, addr: p.parse().unwrap() }),
        inbound_from: vec![net.parse().unwrap()],
        probe: probe_settings(),
        register: None,
        domain: None,
        contact_user: "trunkguard".into(),
        transfer: TransferMode::Invite,
    }
}

fn config() -> EndpointConfig {
    EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.1:5060".parse().unwrap())],
        user_agent: "trunkguard-test".into(),
        media_ip: "127.0.0.1".parse().unwrap(),
        rtp_ports: (20000, 20003), // two ports: the first call gets 20000, the next 20002
        carriers: vec![
            carrier("carrier-a", "127.0.0.2/32", None),
            carrier("carrier-b", "127.0.0.3/32", None),
        ],
        prompts: test_prompts(),
        // the old path for the tests that predate the menu: prompt, goodbye, BYE
        ladder: LadderConfig {
            menu: false,
            no_answer: NoAnswer::Goodbye,
            ..LadderConfig::default()
        },
        timers: SipTimers::default(),
        answer_delay: Duration::ZERO,
        max_call_duration: Duration::from_secs(3600),
        hangup_after_prompt: Duration::from_millis(200),
        jitter: JitterConfig::default(),
        opus: OpusTuning::default(),
        ai_format: AiFormat::G711(Law::Ulaw),
        ntp_anchor: None,
        ai: None,
        filler: Prompt::one_moment().unwrap(),
        limits: Limits::default(),
        outbound: OutboundSettings::default(),
    }
}

struct Harness {
    ep: Endpoint,
    now: Instant,
    out: Vec<Output>,
}

impl Harness {
    fn new(cfg: EndpointConfig) -> Self {
        let now = Instant::now();
        Harness { ep: Endpoint::new(cfg, now, 7), now, out: Vec::new() }
    }

    fn send(&mut self, from: &str, text: &str) {
        let peer = Peer { transport: Transport::Udp, addr: from.parse().unwrap() };
        let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
        self.ep.handle_input(self.now, Input::Sip { peer, data: text.as_bytes() });
        self.drain();
    }

    fn drain(&mut self) -> Instant {
        loop {
            match self.ep.poll_output() {
                Output::Timeout(t) => return t,
                o => self.out.push(o),
            }
        }
    }

    /// Advances the fake clock by `d`, firing every timer on the way at its own instant.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1_000_000 {
            let next = self.drain();
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            self.ep.handle_timeout(self.now);
        }
        self.now = end;
        self.drain();
    }

    /// SIP messages sent so far (to anyone), parsed, and forgotten.
    fn take_sip(&mut self) -> Vec<(SocketAddr, SipMessage)> {
        let mut sip = Vec::new();
        self.out.retain(|o| match o {
            Output::Transmit(Transmit::Sip { peer, data }) => {
                sip.push((peer.addr, parse_or_status_line(data)));
                false
            }
            _ => true,
        });
        sip
    }

    fn take_rtp(&mut self) -> usize {
        let before = self.out.len();
        self.out.retain(|o| !matches!(o, Output::Transmit(Transmit::Rtp { .. })));
        before - self.out.len()
    }

    fn statuses(&mut self) -> Vec<u16> {
        self.take_sip()
            .into_iter()
            .filter_map(|(_, m)| match m {
                SipMessage::Response(r) => Some(r.status),
                _ => None,
            })
            .collect()
    }
}

/// Our messages parse, except responses that echo a request's broken headers (a 400): for
/// those only the status line is kept.
fn parse_or_status_line(data: &[u8]) -> SipMessage {
    parse::parse_message(data).unwrap_or_else(|e| {
        let text = String::from_utf8_lossy(data);
        let status = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("we sent unparseable SIP ({e}): {text}"));
        SipMessage::Response(Response::new(status, "echo"))
    })
}

fn cancel(call_id: &str, branch: &str) -> String {
    in_dialog("CANCEL", call_id, "x", 1, branch)
        .replace("To: <sip:bot@127.0.0.1>;tag=x", "To: <sip:bot@127.0.0.1>")
}

fn invite(call_id: &str, branch: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:bot@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:5070;branch={branch}
Max-Forwards: 70
From: <sip:+15550001@carrier>;tag=caller1
To: <sip:bot@127.0.0.1>
Call-ID: {call_id}
CSeq: 1 INVITE
Contact: <sip:caller@127.0.0.2:5070>
Content-Type: application/sdp
Content-Length: {}

{sdp}",
        sdp.replace('\n', "\r\n").len()
    )
}

const PCMU_OFFER: &str = "v=0
o=- 1 1 IN IP4 127.0.0.2
s=-
c=IN IP4 127.0.0.2
t=0 0
m=audio 6000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
";

fn in_dialog(method: &str, call_id: &str, to_tag: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} sip:trunkguard@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:5070;branch={branch}
Max-Forwards: 70
From: <sip:+15550001@carrier>;tag=caller1
To: <sip:bot@127.0.0.1>;tag={to_tag}
Call-ID: {call_id}
CSeq: {cseq} {method}
Content-Length: 0

"
    )
}

/// Answers a call and returns the 200 OK's To tag.
fn answered(h: &mut Harness, call_id: &str) -> String {
    h.send(CARRIER_A, &invite(call_id, "z9hG4bK-inv1", PCMU_OFFER));
    let sip = h.take_sip();
    let ok = sip
        .iter()
        .find_map(|(_, m)| match m {
            SipMessage::Response(r) if r.status == 200 => Some(r.clone()),
            _ => None,
        })
        .expect("200 OK");
    ok.to_hdr().unwrap().tag().unwrap().to_string()
}

#[test]
fn inbound_call_is_answered_plays_the_prompt_and_hangs_up() {
    let mut h = Harness::new(config());
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    // the RTP port is opened before the 200 OK that names it
    let open_at = h.out.iter().position(|o| matches!(o, Output::Event(Event::MediaOpen { .. })));
    let ok_at = h.out.iter().position(|o| match o {
        Output::Transmit(Transmit::Sip { data, .. }) => data.starts_with(b"SIP/2.0 200"),
        _ => false,
    });
    assert!(open_at.unwrap() < ok_at.unwrap());
    let sip = h.take_sip();
    let statuses: Vec<u16> = sip
        .iter()
        .filter_map(|(_, m)| match m {
            SipMessage::Response(r) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![100, 180, 200]);
    let ok = match &sip[2].1 {
        SipMessage::Response(r) => r.clone(),
        _ => unreachable!(),
    };
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 2000"));
    let tag = ok.to_hdr().unwrap().tag().unwrap().to_string();

    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack1"));
    h.advance(Duration::from_millis(1000));
    let packets = h.take_rtp();
    assert!((49..=52).contains(&packets), "about 50 packets per second, got {packets}");
    // 3 s prompt, 0.3 s goodbye, then 200 ms, then BYE
    h.advance(Duration::from_millis(3000));
    let bye = h
        .take_sip()
        .into_iter()
        .find(|(_, m)| matches!(m, SipMessage::Request(r) if r.method == Method::Bye));
    let (to, SipMessage::Request(bye)) = bye.expect("BYE after the prompt") else { unreachable!() };
    assert_eq!(to, CARRIER_A.parse().unwrap());
    assert_eq!(bye.uri, "sip:caller@127.0.0.2:5070");
    // the carrier answers the BYE: the call ends and its port closes
    let mut ok = build::response_to(&bye.headers, 200, None, "carrier");
    ok.headers.set("To", bye.headers.get("To").unwrap());
    h.send(CARRIER_A, &String::from_utf8(ok.to_bytes()).unwrap());
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::CallEnded { .. }))));
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::MediaClose { port: 20000 }))));
    assert_eq!(h.ep.status(h.now).calls.active, 0);
    assert_eq!(h.ep.status(h.now).calls.answered_total, 1);
}

#[test]
fn invite_from_an_unknown_source_gets_no_answer_at_all() {
    let mut h = Harness::new(config());
    h.send(STRANGER, &invite("c1", "z9hG4bK-x", PCMU_OFFER).replace("127.0.0.2:5070", STRANGER));
    h.advance(Duration::from_secs(5));
    assert!(h.take_sip().is_empty());
    assert_eq!(h.ep.status(h.now).counters.dropped_unknown_source, 1);
    // a legitimate OPTIONS still works
    h.send(CARRIER_A, &in_dialog("OPTIONS", "o1", "x", 1, "z9hG4bK-o1").replace(";tag=x", ""));
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn a_2xx_is_retransmitted_until_ack_then_bye_after_64_t1() {
    let mut h = Harness::new(config());
    answered(&mut h, "c1");
    h.advance(Duration::from_millis(3600));
    // retransmissions at 0.5, 1.5, 3.5 s
    assert_eq!(h.statuses(), vec![200, 200, 200]);
    h.advance(Duration::from_secs(29));
    let sip = h.take_sip();
    assert!(
        sip.iter().any(|(_, m)| matches!(m, SipMessage::Request(r) if r.method == Method::Bye)),
        "BYE after no ACK"
    );
    let retrans =
        sip.iter().filter(|(_, m)| matches!(m, SipMessage::Response(r) if r.status == 200)).count();
    assert_eq!(retrans, 7, "T2-capped retransmissions at 7.5, 11.5, ..., 31.5 s");
}

#[test]
fn ack_stops_retransmission_and_a_retransmitted_invite_is_absorbed() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    h.advance(Duration::from_millis(2000));
    let statuses = h.statuses();
    assert!(statuses.iter().all(|s| *s < 200), "no 200 retransmission after ACK: {statuses:?}");
    assert_eq!(h.ep.status(h.now).calls.active, 1);
}

#[test]
fn cancel_before_answer_gets_200_and_the_invite_487() {
    let mut cfg = config();
    cfg.answer_delay = Duration::from_secs(2);
    let mut h = Harness::new(cfg);
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", PCMU_OFFER));
    assert_eq!(h.statuses(), vec![100, 180]);
    h.send(CARRIER_A, &cancel("c1", "z9hG4bK-inv1"));
    let mut statuses = h.statuses();
    statuses.sort();
    assert_eq!(statuses, vec![200, 487]);
    h.advance(Duration::from_secs(3));
    assert!(!h.statuses().contains(&200), "a cancelled call is never answered");
    assert_eq!(h.ep.status(h.now).calls.active, 0);
}

#[test]
fn cancel_after_answer_does_not_end_the_call() {
    let mut h = Harness::new(config());
    answered(&mut h, "c1");
    h.send(CARRIER_A, &cancel("c1", "z9hG4bK-inv1"));
    assert_eq!(h.statuses(), vec![200]);
    assert_eq!(h.ep.status(h.now).calls.active, 1);
}

#[test]
fn bye_from_the_caller_ends_the_call_and_unknown_dialogs_get_481() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    h.advance(Duration::from_millis(300));
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    assert_eq!(h.statuses(), vec![200]);
    assert_eq!(h.ep.status(h.now).calls.active, 0);
    h.take_rtp();
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take_rtp(), 0, "media stops with the call");
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 3, "z9hG4bK-bye2"));
    assert_eq!(h.statuses(), vec![481]);
}

#[test]
fn reinvite_and_update_are_answered_with_sdp() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    let body = PCMU_OFFER.replace("6000", "6002").replace('\n', "\r\n");
    let reinvite = in_dialog("INVITE", "c1", &tag, 2, "z9hG4bK-re").replace(
        "Content-Length: 0",
        &format!("Content-Type: application/sdp\nContent-Length: {}", body.len()),
    ) + &body.replace("\r\n", "\n");
    h.send(CARRIER_A, &reinvite);
    let sip = h.take_sip();
    let ok = sip
        .iter()
        .find_map(|(_, m)| match m {
            SipMessage::Response(r) if r.status == 200 => Some(r),
            _ => None,
        })
        .expect("200 to re-INVITE");
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 20000"), "same local port");
    h.send(CARRIER_A, &in_dialog("UPDATE", "c1", &tag, 3, "z9hG4bK-up"));
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn no_common_codec_gets_488_and_frees_the_port() {
    let mut h = Harness::new(config());
    let offer = PCMU_OFFER
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-inv1", &offer));
    assert_eq!(h.statuses(), vec![488]);
    assert_eq!(h.ep.status(h.now).calls.active, 0);
    assert_eq!(h.ep.ports.available(), 2);
}

#[test]
fn garbage_gets_400_and_the_endpoint_keeps_answering() {
    let mut h = Harness::new(config());
    let broken = "INVITE sip:bot@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-g
From: <sip:a@carrier>;tag=1
To: <sip:bot@127.0.0.1>
Call-ID: g1
CSeq: notanumber INVITE
Content-Length: 0

";
    h.send(CARRIER_A, broken);
    assert_eq!(h.statuses(), vec![400]);
    h.send(CARRIER_A, "\u{0}\u{1}garbage");
    h.send(CARRIER_A, "SIP/2.0 200 OK\nVia: broken\n\n");
    assert!(h.take_sip().is_empty());
    h.send(CARRIER_A, &in_dialog("OPTIONS", "o1", "x", 1, "z9hG4bK-o1").replace(";tag=x", ""));
    assert_eq!(h.statuses(), vec![200]);
}

#[test]
fn rtp_is_counted_and_symmetric() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    let mut pkt = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0, 0, 0, 42];
    pkt.extend_from_slice(&[0xff; 160]);
    let from: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    h.out.clear(); // the first prompt frame left at the ACK, to the SDP address
    h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &pkt });
    h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &[1, 2, 3] });
    assert_eq!(h.ep.status(h.now).counters.rtp_received, 1);
    assert_eq!(h.ep.status(h.now).counters.rtp_invalid, 1);
    h.advance(Duration::from_millis(100));
    let dests: Vec<SocketAddr> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit::Rtp { to, .. }) => Some(*to),
            _ => None,
        })
        .collect();
    assert!(
        !dests.is_empty() && dests.iter().all(|d| *d == from),
        "RTP follows the source: {dests:?}"
    );
}

#[test]
fn media_from_outside_the_carrier_is_refused_counted_and_never_answered() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    let mut pkt = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0, 0, 0, 42];
    pkt.extend_from_slice(&[0xff; 160]);
    let attacker: SocketAddr = "198.51.100.66:7000".parse().unwrap();
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
    h.out.clear();
    for _ in 0..3 {
        h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from: attacker, data: &pkt });
    }
    h.ep.handle_input(h.now, Input::Rtp { local_port: 20001, from: attacker, data: &rr });
    let carrier: SocketAddr = "127.0.0.2:7000".parse().unwrap();
    h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from: carrier, data: &pkt });
    let status = h.ep.status(h.now);
    assert_eq!(status.counters.media_refused_source, 4);
    assert_eq!(status.counters.rtp_received, 1);
    assert_eq!(status.active_calls[0].counters.rtp_wrong_source, 3);
    assert_eq!(status.active_calls[0].counters.rtcp_wrong_source, 1);
    h.advance(Duration::from_secs(6));
    let dests: Vec<SocketAddr> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit::Rtp { to, .. }) => Some(*to),
            _ => None,
        })
        .collect();
    assert!(!dests.is_empty());
    assert!(dests.iter().all(|d| d.ip() == carrier.ip()), "nothing to the attacker: {dests:?}");
}

#[test]
fn the_media_source_is_fixed_until_a_re_invite_moves_it() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    let mut pkt = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0, 0, 0, 42];
    pkt.extend_from_slice(&[0xff; 160]);
    let rtp = |h: &mut Harness, from: &str| {
        let from: SocketAddr = from.parse().unwrap();
        h.ep.handle_input(h.now, Input::Rtp { local_port: 20000, from, data: &pkt });
    };
    rtp(&mut h, "127.0.0.2:7000"); // NAT rewrote the port: latched
    rtp(&mut h, "127.0.0.2:6000"); // the SDP address, too late: refused
    assert_eq!(h.ep.status(h.now).counters.media_refused_source, 1);
    let body = PCMU_OFFER.replace("6000", "6002").replace('\n', "\r\n");
    let reinvite = in_dialog("INVITE", "c1", &tag, 2, "z9hG4bK-re").replace(
        "Content-Length: 0",
        &format!("Content-Type: application/sdp\nContent-Length: {}", body.len()),
    ) + &body.replace("\r\n", "\n");
    h.send(CARRIER_A, &reinvite);
    h.out.clear();
    rtp(&mut h, "127.0.0.2:6002"); // the new offer's address latches
    rtp(&mut h, "127.0.0.2:7000"); // the old source is refused now
    let status = h.ep.status(h.now);
    assert_eq!(status.counters.media_refused_source, 2);
    assert_eq!(status.counters.rtp_received, 2);
    h.advance(Duration::from_millis(100));
    let dests: Vec<SocketAddr> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit::Rtp { local_port: 20000, to, .. }) => Some(*to),
            _ => None,
        })
        .collect();
    assert!(!dests.is_empty());
    assert!(dests.iter().all(|d| *d == "127.0.0.2:6002".parse().unwrap()), "{dests:?}");
}

#[test]
fn carrier_probing_marks_down_then_up() {
    let mut cfg = config();
    cfg.carriers[0] = carrier("carrier-a", "127.0.0.2/32", Some(CARRIER_A));
    let mut h = Harness::new(cfg);
    h.advance(Duration::from_millis(1));
    let first = h.take_sip();
    assert_eq!(first.len(), 1, "one OPTIONS probe at start");
    // no answers: down after 2 probes (t=0, t=1 s) each timing out after 500 ms -> 1.5 s
    h.advance(Duration::from_millis(1400));
    assert_eq!(h.ep.status(h.now).carriers[0].state, "unknown");
    h.advance(Duration::from_millis(200));
    assert_eq!(h.ep.status(h.now).carriers[0].state, "down");
    assert!(h
        .out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::CarrierState { up: false, .. }))));
    // the carrier comes back: answer every probe at once; up after two good probes
    let back = h.now;
    for _ in 0..500 {
        h.advance(Duration::from_millis(10));
        for (_, m) in h.take_sip() {
            if let SipMessage::Request(opt) = m {
                let ok = build::response_to(&opt.headers, 200, Some("p"), "carrier");
                h.send(CARRIER_A, &String::from_utf8(ok.to_bytes()).unwrap());
            }
        }
        if h.ep.status(h.now).carriers[0].state == "up" {
            break;
        }
    }
    assert!(
        h.now - back <= Duration::from_millis(2100),
        "up after two probe intervals, took {:?}",
        h.now - back
    );
    assert_eq!(h.ep.status(h.now).carriers[0].state, "up");
}

#[test]
fn responses_from_outside_the_carriers_reach_no_transaction_unless_we_asked_that_address() {
    // the proxy (203.0.113.5) is outside the carrier's inbound_from: its answers to our
    // probes count; the same answers forged from another address outside are dropped
    const PROXY: &str = "203.0.113.5:5060";
    const FORGER: &str = "198.51.100.66:5060";
    let mut cfg = config();
    cfg.carriers[0] = carrier("carrier-a", "127.0.0.2/32", Some(PROXY));
    let mut h = Harness::new(cfg);
    let answer_from = |h: &mut Harness, from: &str| {
        for (_, m) in h.take_sip() {
            if let SipMessage::Request(opt) = m {
                let ok = build::response_to(&opt.headers, 200, Some("p"), "carrier");
                h.send(from, &String::from_utf8(ok.to_bytes()).unwrap());
            }
        }
    };
    for _ in 0..300 {
        h.advance(Duration::from_millis(10));
        answer_from(&mut h, FORGER);
    }
    let status = h.ep.status(h.now);
    assert_ne!(status.carriers[0].state, "up", "forged answers must not bring it up");
    assert!(status.counters.dropped_unknown_source >= 2, "{:?}", status.counters);
    for _ in 0..300 {
        h.advance(Duration::from_millis(10));
        answer_from(&mut h, PROXY);
        if h.ep.status(h.now).carriers[0].state == "up" {
            break;
        }
    }
    assert_eq!(h.ep.status(h.now).carriers[0].state, "up", "the proxy's own answers count");
}

#[test]
fn a_carrier_b_call_is_classified_as_carrier_b() {
    let mut h = Harness::new(config());
    h.send(
        "127.0.0.3:5070",
        &invite("c2", "z9hG4bK-b", PCMU_OFFER).replace("127.0.0.2:5070", "127.0.0.3:5070"),
    );
    assert!(h.out.iter().any(|o| matches!(o, Output::Event(Event::CallAnswered { carrier, .. }) if carrier == "carrier-b")));
    let _ = NameAddr::parse("<sip:x@y>");
}

#[test]
fn drain_and_out_of_service_turn_new_calls_away_with_503_and_keep_current_ones() {
    let mut h = Harness::new(config());
    let tag = answered(&mut h, "c1");
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    h.ep.admin(AdminCommand::Drain(true)).unwrap();
    h.send(CARRIER_A, &invite("c2", "z9hG4bK-inv2", PCMU_OFFER));
    assert_eq!(h.statuses(), vec![503]);
    assert_eq!(h.ep.status(h.now).calls.active, 1, "the call in progress goes on");
    assert!(h.ep.status(h.now).admin.draining);
    h.ep.admin(AdminCommand::Drain(false)).unwrap();
    h.ep.admin(AdminCommand::CarrierInService { name: "carrier-b".into(), in_service: false })
        .unwrap();
    h.send(
        "127.0.0.3:5070",
        &invite("c3", "z9hG4bK-b", PCMU_OFFER).replace("127.0.0.2:5070", "127.0.0.3:5070"),
    );
    assert_eq!(h.statuses(), vec![503]);
    assert_eq!(h.ep.status(h.now).carriers[1].state, "out-of-service");
    h.send(CARRIER_A, &invite("c4", "z9hG4bK-inv4", PCMU_OFFER));
    assert!(h.statuses().contains(&200), "carrier A still served");
    assert_eq!(
        h.ep.admin(AdminCommand::CarrierInService { name: "nope".into(), in_service: false }),
        Err(AdminError::NoSuchCarrier("nope".into()))
    );
}

#[test]
fn over_max_calls_new_invites_get_503_with_retry_after_and_calls_go_on() {
    let mut h = Harness::new(EndpointConfig {
        limits: Limits { max_calls: 2, ..Limits::default() },
        ..config()
    });
    for i in 0..2 {
        h.send(CARRIER_A, &invite(&format!("c{i}"), &format!("z9hG4bK-{i}"), PCMU_OFFER));
        assert!(h.statuses().contains(&200));
    }
    h.send(CARRIER_A, &invite("c9", "z9hG4bK-9", PCMU_OFFER));
    let sip = h.take_sip();
    let SipMessage::Response(r) = &sip[0].1 else { panic!("{sip:?}") };
    assert_eq!(r.status, 503);
    assert_eq!(r.headers.get("Retry-After"), Some("30"));
    assert_eq!(h.ep.status(h.now).calls.active, 2);
    assert_eq!(h.ep.status(h.now).counters.shed_calls, 1);
}

#[test]
fn a_flooding_source_is_rate_limited_but_calls_in_progress_are_not() {
    let limits = Limits {
        requests_per_second: 1.0,
        burst: 3.0,
        invites_per_second: 1.0,
        invite_burst: 1.0,
        ..Limits::default()
    };
    let mut h = Harness::new(EndpointConfig { limits, ..config() });
    let tag = answered(&mut h, "c1"); // the INVITE's one token
    h.send(CARRIER_A, &in_dialog("ACK", "c1", &tag, 1, "z9hG4bK-ack"));
    for i in 0..5 {
        h.send(
            CARRIER_A,
            &in_dialog("OPTIONS", &format!("o{i}"), "x", 1, &format!("z9hG4bK-o{i}"))
                .replace(";tag=x", ""),
        );
    }
    assert_eq!(h.statuses(), vec![200, 200, 200], "the burst of three, then nothing");
    h.send(CARRIER_A, &invite("c2", "z9hG4bK-c2", PCMU_OFFER));
    assert_eq!(h.statuses(), vec![503], "an INVITE over the limit is told to go elsewhere");
    // in-dialog requests of the call in progress still work
    h.send(CARRIER_A, &in_dialog("BYE", "c1", &tag, 2, "z9hG4bK-bye"));
    assert_eq!(h.statuses(), vec![200]);
    assert_eq!(h.ep.status(h.now).counters.rate_limited, 3);
}

#[test]
fn an_options_flood_leaves_the_same_carriers_invites_answered() {
    let limits = Limits {
        requests_per_second: 1.0,
        burst: 3.0,
        invites_per_second: 1.0,
        invite_burst: 2.0,
        ..Limits::default()
    };
    let mut h = Harness::new(EndpointConfig { limits, ..config() });
    for i in 0..50 {
        h.send(
            CARRIER_A,
            &in_dialog("OPTIONS", &format!("o{i}"), "x", 1, &format!("z9hG4bK-o{i}"))
                .replace(";tag=x", ""),
        );
    }
    assert_eq!(h.statuses().len(), 3, "the OPTIONS burst, then dropped");
    h.send(CARRIER_A, &invite("c1", "z9hG4bK-c1", PCMU_OFFER));
    let statuses = h.statuses();
    assert!(!statuses.contains(&503), "the INVITE has its own budget: {statuses:?}");
    assert_eq!(h.ep.status(h.now).calls.active, 1);
}

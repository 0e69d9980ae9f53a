//! End-to-end human transfer and outbound carrier failover against the real `trunkguard`
//! binary: a raw caller (SIP + RTP on 127.0.0.2, carrier A's network) reaches the ladder (no
//! AI configured), presses 2 (RFC 4733); the human leg goes out to SIPp carriers, each SIPp
//! listening on its own loopback address as that carrier's proxy (and answering its OPTIONS
//! probes):
//!
//! - carrier A answers 503 → the call leaves through carrier B, where SIPp answers as the human
//!   with RTP echo: what the caller says comes back to the caller through the bridge; the
//!   caller hangs up → the human gets BYE;
//! - carrier A never answers (no 1xx) → after `no_provisional_ms` the call leaves through B;
//! - carrier A answers 486 → not re-routed (B never sees an INVITE), the ladder goes down to
//!   a callback;
//! - the human rings past `human_timeout_s` → CANCEL, and the ladder goes down to a callback;
//! - the human hangs up → their BYE is answered and the caller gets BYE;
//! - a carrier with `transfer = "refer"` (SIPp as the caller, uac_refer.xml) gets REFER, answers
//!   202 and a 200 sipfrag NOTIFY → connected, our leg gets BYE, no INVITE goes out.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const CALLER_IP: &str = "127.0.0.2";
const CARRIER_A_IP: &str = "127.0.0.2";
const CARRIER_B_IP: &str = "127.0.0.3";
const HUMAN: &str = "sip:+15559999@human.example";

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("{name}: {value}");
}

fn config(ports: Ports, human_timeout_s: u32) -> String {
    let probe = "probe = { interval_ms = 500, timeout_ms = 300, down_after = 2, up_after = 1 }";
    format!(
        "{}[fallback]\nhuman = \"{HUMAN}\"\nhuman_timeout_s = {human_timeout_s}\nmenu_timeout_s = 20\n\n\
         [outbound]\npreferred_carrier = \"carrier-a\"\nno_provisional_ms = 2000\n\n\
         [[carrier]]\nname = \"carrier-a\"\nproxy = \"udp:{CARRIER_A_IP}:{}\"\ninbound_from = [\"{CARRIER_A_IP}/32\"]\n{probe}\n\n\
         [[carrier]]\nname = \"carrier-b\"\nproxy = \"udp:{CARRIER_B_IP}:{}\"\ninbound_from = [\"{CARRIER_B_IP}/32\"]\n{probe}\n",
        base_config(ports),
        ports.peer(1),
        ports.peer(2)
    )
}

/// Carrier A's proxy answering every INVITE with `code` (503 or 486), or never (`silent`).
fn refusing_carrier(ports: Ports, code: &str) -> Sipp {
    let (port, media) = (ports.peer(1).to_string(), ports.sipp_media(0).to_string());
    let mut sipp = Sipp::spawn_with_timeout(
        "carrier_a",
        ports.sipp_control(0),
        90,
        &[
            "-sf",
            &scenario(&format!("uas_carrier_{code}.xml")),
            "-i",
            CARRIER_A_IP,
            "-p",
            &port,
            "-mp",
            &media,
        ],
    );
    thread::sleep(Duration::from_millis(200));
    assert!(sipp.is_running(), "carrier A SIPp did not start:\n{}", sipp.diagnostics());
    sipp
}

/// Carrier B's proxy with the human behind it (`scenario_name`), RTP echo on.
fn human_carrier(ports: Ports, scenario_name: &str) -> Sipp {
    let (port, media) = (ports.peer(2).to_string(), ports.sipp_media(1).to_string());
    let mut sipp = Sipp::spawn_with_timeout(
        "carrier_b",
        ports.sipp_control(1),
        90,
        &[
            "-sf",
            &scenario(scenario_name),
            "-i",
            CARRIER_B_IP,
            "-p",
            &port,
            "-mp",
            &media,
            "-rtp_echo",
        ],
    );
    thread::sleep(Duration::from_millis(200));
    assert!(sipp.is_running(), "carrier B SIPp did not start:\n{}", sipp.diagnostics());
    sipp
}

fn both_carriers_up(app: &Appliance) {
    let up = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        app.carrier_state("carrier-a") == "up" && app.carrier_state("carrier-b") == "up"
    });
    assert!(up, "carriers not up: {}", app.status_json());
}

fn outbound(app: &Appliance, field: &str) -> u64 {
    app.status_json()["outbound"][field].as_u64().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The caller: raw SIP over UDP, an RTP peer that talks on a 20 ms clock and records
// ---------------------------------------------------------------------------

const SILENCE: u8 = 0xFF;

enum Frame {
    Audio(Vec<u8>),
    Event { event: u8, duration: u16, end: bool, first: bool },
}

struct Caller {
    sip: RawSip,
    target: SocketAddr,
    call_id: String,
    from_hdr: String,
    to_hdr: String,
    received: Arc<Mutex<Vec<(Instant, RtpPacket)>>>,
    queue: Arc<Mutex<std::collections::VecDeque<Frame>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Caller {
    /// INVITE, 200, ACK; the RTP peer then sends silence (unless told otherwise).
    fn call(ports: Ports, name: &str) -> Caller {
        let sip = RawSip::bind(CALLER_IP, ports.peer(0));
        let rtp = UdpSocket::bind((CALLER_IP, ports.audio(0))).expect("bind caller RTP");
        rtp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let target = sip_addr(ports);
        let call_id = format!("{name}-{}@{CALLER_IP}", ports.base);
        sip.send(
            target,
            invite_request("UDP", sip.local, target, &call_id, rtp.local_addr().unwrap())
                .as_bytes(),
        );
        let (msgs, ok) =
            sip.recv_until(Duration::from_secs(5), |m| status_code(m).is_some_and(|c| c >= 200));
        let ok_msg = msgs.last().filter(|_| ok).expect("final response to the INVITE");
        assert_eq!(status_code(ok_msg), Some(200), "{ok_msg}");
        let sdp = body_of(ok_msg);
        let port: u16 = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("m=audio");
        let media: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut caller = Caller {
            sip,
            target,
            call_id,
            from_hdr: header(ok_msg, "From", Some("f")).expect("From"),
            to_hdr: header(ok_msg, "To", Some("t")).expect("To"),
            received: Arc::default(),
            queue: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        caller.in_dialog("ACK", 1);
        let (rx, received, stop) =
            (rtp.try_clone().unwrap(), caller.received.clone(), caller.stop.clone());
        caller.threads.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                if let Ok((len, from)) = rx.recv_from(&mut buf) {
                    if let Some(p) = parse_rtp(&buf[..len], from) {
                        received.lock().unwrap().push((Instant::now(), p));
                    }
                }
            }
        }));
        let (queue, stop) = (caller.queue.clone(), caller.stop.clone());
        caller.threads.push(thread::spawn(move || talk(rtp, media, queue, stop)));
        caller
    }

    fn in_dialog(&self, method: &str, cseq: u32) {
        let msg = format!(
            "{method} sip:agent@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            branch(),
            self.from_hdr,
            self.to_hdr,
            self.call_id,
            to = self.target,
            local = self.sip.local,
        );
        self.sip.send(self.target, msg.as_bytes());
    }

    /// Queues a key press (RFC 4733, payload type 101 as offered) of 100 ms.
    fn press(&self, digit: u8) {
        let mut q = self.queue.lock().unwrap();
        for i in 0..5u16 {
            q.push_back(Frame::Event {
                event: digit,
                duration: (i + 1) * 160,
                end: false,
                first: i == 0,
            });
        }
        for _ in 0..3 {
            q.push_back(Frame::Event { event: digit, duration: 800, end: true, first: false });
        }
    }

    /// Queues μ-law audio in 20 ms frames.
    fn say(&self, audio: &[u8]) {
        let mut q = self.queue.lock().unwrap();
        for c in audio.chunks(160) {
            let mut f = c.to_vec();
            f.resize(160, SILENCE);
            q.push_back(Frame::Audio(f));
        }
    }

    /// RMS of the PCMU audio received between `from` and `to`, and the packet count.
    fn heard(&self, from: Instant, to: Instant) -> (f64, usize) {
        let got = self.received.lock().unwrap();
        let pkts: Vec<RtpPacket> =
            got.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, p)| p.clone()).collect();
        let s = SpeechStats::of(&pkts);
        (s.rms, pkts.len())
    }

    /// Waits (bounded) for a BYE from the appliance and answers it.
    fn wait_bye(&self, timeout: Duration) -> bool {
        let (msgs, ok) = self.sip.recv_until(timeout, |m| m.starts_with("BYE "));
        if let Some(bye) = msgs.last().filter(|_| ok) {
            let resp = format!(
                "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
                header(bye, "Via", Some("v")).unwrap_or_default(),
                header(bye, "From", Some("f")).unwrap_or_default(),
                header(bye, "To", Some("t")).unwrap_or_default(),
                self.call_id,
                header(bye, "CSeq", None).unwrap_or_default(),
            );
            self.sip.send(self.target, resp.as_bytes());
        }
        ok
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn talk(
    sock: UdpSocket,
    to: SocketAddr,
    queue: Arc<Mutex<std::collections::VecDeque<Frame>>>,
    stop: Arc<AtomicBool>,
) {
    let t0 = Instant::now();
    let (mut ts, mut event_ts): (u32, Option<u32>) = (0, None);
    for i in 0u32.. {
        if stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(90) {
            return;
        }
        let frame = queue.lock().unwrap().pop_front().unwrap_or(Frame::Audio(vec![SILENCE; 160]));
        let (pt, marker, stamp, payload) = match frame {
            Frame::Audio(p) => (0u8, i == 0 || event_ts.take().is_some(), ts, p),
            Frame::Event { event, duration, end, first } => {
                let at = *event_ts.get_or_insert(ts);
                let mut p = vec![event, if end { 0x80 | 10 } else { 10 }];
                p.extend_from_slice(&duration.to_be_bytes());
                (101u8, first, at, p)
            }
        };
        let mut pkt = vec![0x80, if marker { 0x80 | pt } else { pt }];
        pkt.extend_from_slice(&(i as u16).to_be_bytes());
        pkt.extend_from_slice(&stamp.to_be_bytes());
        pkt.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        pkt.extend_from_slice(&payload);
        let _ = sock.send_to(&pkt, to);
        ts = ts.wrapping_add(160);
        thread::sleep(
            (t0 + Duration::from_millis(20) * (i + 1)).saturating_duration_since(Instant::now()),
        );
    }
}

fn caller_speech() -> Vec<u8> {
    std::fs::read(repo_root().join("tests/sipp/caller.ulaw")).expect("tests/sipp/caller.ulaw")
}

// ---------------------------------------------------------------------------

#[test]
fn carrier_a_503_the_call_leaves_through_b_and_caller_and_human_hear_each_other() {
    let ports = Ports::new(34000);
    let carrier_a = refusing_carrier(ports, "503");
    let carrier_b = human_carrier(ports, "uas_human.xml");
    let mut app = Appliance::start(&config(ports, 20));
    both_carriers_up(&app);

    let caller = Caller::call(ports, "human503");
    thread::sleep(Duration::from_millis(1000));
    let pressed = Instant::now();
    caller.press(2); // barge-in on the high-demand prompt: "2" is the person
    let connected = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        outbound(&app, "connected") == 1
    });
    assert!(
        connected,
        "human not connected: {}\nA:\n{}\nB:\n{}",
        app.status_json(),
        carrier_a.diagnostics(),
        carrier_b.diagnostics()
    );
    figure("human_connected_after_key_ms", pressed.elapsed().as_millis());
    assert_eq!(carrier_a.received_requests("INVITE"), 1, "carrier A was tried first");
    assert_eq!(carrier_b.received_requests("INVITE"), 1, "then carrier B");
    assert_eq!(outbound(&app, "attempts"), 2);
    assert_eq!(outbound(&app, "failovers"), 1);
    assert_eq!(app.carrier("carrier-a")["outbound_failures"].as_u64(), Some(1));

    // the caller is quiet for 1.5 s, then talks for 2.8 s: what comes back is the human's side
    // (SIPp echoes what it hears), so it must follow the caller's speech
    let quiet_from = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    let talk_from = Instant::now();
    let speech = caller_speech();
    caller.say(&speech);
    thread::sleep(Duration::from_millis(speech.len() as u64 / 8 + 300));
    let (quiet_rms, quiet_pkts) = caller.heard(quiet_from + Duration::from_millis(300), talk_from);
    let (talk_rms, talk_pkts) =
        caller.heard(talk_from + Duration::from_millis(300), Instant::now());
    figure("bridge_quiet_rms", format!("{quiet_rms:.0}"));
    figure("bridge_echo_rms", format!("{talk_rms:.0}"));
    figure("bridge_packets_to_caller", talk_pkts);
    assert!(talk_pkts >= 100, "the human's audio reaches the caller: {talk_pkts} packets in 2.8 s");
    assert!(talk_rms > 300.0 && talk_rms > 5.0 * quiet_rms.max(1.0), "the caller's speech went to the human and back: quiet {quiet_rms:.0} ({quiet_pkts} pkts), talking {talk_rms:.0}");

    // the caller hangs up: the human gets BYE
    caller.in_dialog("BYE", 2);
    let byed = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        carrier_b.received_requests("BYE") >= 1
    });
    assert!(byed, "no BYE to the human:\n{}", carrier_b.diagnostics());
    assert!(wait_until(Duration::from_secs(3), Duration::from_millis(50), || app.status_json()
        ["calls"]["active"]
        == 0));
    // the call record says how the human was reached
    let record = ended_record(&app);
    assert_eq!(
        record["human"], "carrier-b; failed carrier-a: 503 Service Unavailable; connected",
        "{record:#}"
    );
    assert_eq!(record["ladder"], "prompt>human>human-connected", "{record:#}");
    app.assert_alive();
}

#[test]
fn a_carrier_that_never_answers_is_left_after_no_provisional_ms() {
    let ports = Ports::new(35000);
    let carrier_a = refusing_carrier(ports, "silent");
    let carrier_b = human_carrier(ports, "uas_human.xml");
    let mut app = Appliance::start(&config(ports, 20));
    both_carriers_up(&app);

    let caller = Caller::call(ports, "humansilent");
    thread::sleep(Duration::from_millis(1000));
    let pressed = Instant::now();
    caller.press(2);
    let at_b = wait_until(Duration::from_secs(8), Duration::from_millis(10), || {
        carrier_b.received_requests("INVITE") >= 1
    });
    assert!(at_b, "no INVITE at B: {}\nA:\n{}", app.status_json(), carrier_a.diagnostics());
    let waited = pressed.elapsed();
    figure("failover_after_no_provisional_ms", waited.as_millis());
    assert!(waited >= Duration::from_millis(1900), "moved on before no_provisional_ms: {waited:?}");
    assert!(waited < Duration::from_millis(4000), "not Timer B: {waited:?}");
    assert!(
        carrier_a.received_requests("INVITE") >= 2,
        "A got the INVITE (and its retransmissions)"
    );
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || outbound(
        &app,
        "connected"
    ) == 1));
    caller.in_dialog("BYE", 2);
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(50), || carrier_b
        .received_requests("BYE")
        >= 1));
    app.assert_alive();
}

#[test]
fn carrier_a_486_is_not_rerouted_and_the_ladder_goes_down_to_a_callback() {
    let ports = Ports::new(34200);
    let carrier_a = refusing_carrier(ports, "486");
    let carrier_b = human_carrier(ports, "uas_human.xml");
    let mut app = Appliance::start(&config(ports, 20));
    both_carriers_up(&app);

    let caller = Caller::call(ports, "human486");
    thread::sleep(Duration::from_millis(1000));
    caller.press(2);
    let refused = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        outbound(&app, "unavailable") == 1
    });
    assert!(
        refused,
        "no unavailable outcome: {}\nA:\n{}",
        app.status_json(),
        carrier_a.diagnostics()
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(carrier_a.received_requests("INVITE"), 1);
    assert_eq!(carrier_b.received_requests("INVITE"), 0, "486 must not ring another phone");
    assert_eq!(outbound(&app, "failovers"), 0);
    // the apology, then BYE
    assert!(caller.wait_bye(Duration::from_secs(15)), "no BYE after the apology");
    assert!(app.log().contains("callback requested"), "no callback request in the log");
    let record = ended_record(&app);
    assert_eq!(record["human"], "failed carrier-a: 486 Busy Here; unavailable", "{record:#}");
    assert_eq!(record["callback_reason"], "human-unavailable", "{record:#}");
    app.assert_alive();
}

#[test]
fn a_human_who_does_not_answer_is_cancelled_and_the_caller_gets_a_callback() {
    let ports = Ports::new(34400);
    let carrier_a = refusing_carrier(ports, "503");
    let carrier_b = human_carrier(ports, "uas_human_no_answer.xml");
    let mut app = Appliance::start(&config(ports, 5));
    both_carriers_up(&app);

    let caller = Caller::call(ports, "humannoanswer");
    thread::sleep(Duration::from_millis(1000));
    let pressed = Instant::now();
    caller.press(2);
    let cancelled = wait_until(Duration::from_secs(12), Duration::from_millis(50), || {
        carrier_b.received_requests("CANCEL") >= 1
    });
    assert!(
        cancelled,
        "no CANCEL to the ringing human: {}\nB:\n{}",
        app.status_json(),
        carrier_b.diagnostics()
    );
    figure("human_cancelled_after_key_ms", pressed.elapsed().as_millis());
    assert!(pressed.elapsed() >= Duration::from_secs(5), "cancelled before human_timeout_s");
    assert!(wait_until(Duration::from_secs(3), Duration::from_millis(50), || outbound(
        &app,
        "no_answer"
    ) == 1));
    // ringback covered the wait: the caller heard audio throughout the ringing
    let (rms, pkts) =
        caller.heard(pressed + Duration::from_secs(2), pressed + Duration::from_secs(5));
    figure("ringback_packets_in_3_s", pkts);
    assert!(
        pkts >= 140 && rms > 100.0,
        "the caller hears something while the human rings: {pkts} packets, rms {rms:.0}"
    );
    assert!(caller.wait_bye(Duration::from_secs(15)), "no BYE after the apology");
    assert_eq!(carrier_a.received_requests("INVITE"), 1);
    app.assert_alive();
}

#[test]
fn the_human_hanging_up_ends_the_callers_leg_too() {
    let ports = Ports::new(34600);
    let _carrier_a = refusing_carrier(ports, "503");
    let carrier_b = human_carrier(ports, "uas_human_hangs_up.xml");
    let mut app = Appliance::start(&config(ports, 20));
    both_carriers_up(&app);

    let caller = Caller::call(ports, "humanbye");
    thread::sleep(Duration::from_millis(1000));
    caller.press(2);
    let connected = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        outbound(&app, "connected") == 1
    });
    assert!(
        connected,
        "human not connected: {}\nB:\n{}",
        app.status_json(),
        carrier_b.diagnostics()
    );
    let at = Instant::now();
    // 2 s later the human hangs up: the appliance answers their BYE and hangs the caller up
    assert!(
        caller.wait_bye(Duration::from_secs(8)),
        "the caller got no BYE after the human hung up:\n{}",
        carrier_b.diagnostics()
    );
    figure("caller_bye_after_human_connected_ms", at.elapsed().as_millis());
    let answered = |m: &str| {
        m.split("-----------------------------------------------").any(|seg| {
            seg.contains("message received")
                && seg.contains("SIP/2.0 200")
                && seg.contains("CSeq: 2 BYE")
        })
    };
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(50), || answered(
            &carrier_b.messages()
        )),
        "the human's BYE was not answered 200:\n{}",
        carrier_b.diagnostics()
    );
    assert!(!carrier_b.errors().contains("Aborting call"), "{}", carrier_b.errors());
    assert!(wait_until(Duration::from_secs(3), Duration::from_millis(50), || app.status_json()
        ["calls"]["active"]
        == 0));
    app.assert_alive();
}

#[test]
fn a_carrier_that_allows_refer_gets_refer_and_connects_the_human_itself() {
    let dtmf = "/usr/share/sip-tester/dtmf_2833_2.pcap";
    assert!(std::path::Path::new(dtmf).exists(), "{dtmf} missing (apt-get install sip-tester)");
    let ports = Ports::new(34800);
    let _carrier_b = human_carrier(ports, "uas_human.xml");
    let probe = "probe = { interval_ms = 500, timeout_ms = 300, down_after = 2, up_after = 1 }";
    let config = format!(
        "{}[fallback]\nhuman = \"{HUMAN}\"\nhuman_timeout_s = 20\n\n\
         [[carrier]]\nname = \"carrier-a\"\ninbound_from = [\"{CARRIER_A_IP}/32\"]\ntransfer = \"refer\"\n\n\
         [[carrier]]\nname = \"carrier-b\"\nproxy = \"udp:{CARRIER_B_IP}:{}\"\ninbound_from = [\"{CARRIER_B_IP}/32\"]\n{probe}\n",
        base_config(ports),
        ports.peer(2)
    );
    let mut app = Appliance::start(&config);
    let (target, peer, media) =
        (sip_addr(ports).to_string(), ports.peer(0).to_string(), ports.sipp_media(0).to_string());
    let mut caller = Sipp::spawn(
        "uac_refer",
        ports.sipp_control(0),
        &[
            "-sf",
            &scenario("uac_refer.xml"),
            &target,
            "-i",
            CALLER_IP,
            "-p",
            &peer,
            "-mi",
            CALLER_IP,
            "-mp",
            &media,
            "-d",
            "1000",
            "-m",
            "1",
        ],
    );
    assert!(
        caller.wait_success(Duration::from_secs(30)),
        "REFER flow failed:\n{}\n{}",
        caller.diagnostics(),
        app.log()
    );
    let trace = caller.messages();
    assert!(trace.contains(&format!("Refer-To: <{HUMAN}>")), "{trace}");
    assert_eq!(outbound(&app, "refers"), 1);
    assert_eq!(outbound(&app, "connected"), 1);
    assert_eq!(outbound(&app, "attempts"), 0, "no bridged INVITE when the REFER works");
    let record = ended_record(&app);
    assert_eq!(record["human"], "refer; connected", "{record:#}");
    assert_eq!(record["end_reason"], "local BYE", "{record:#}");
    app.assert_alive();
}

//! End-to-end calls against the real `trunkguard` binary with SIPp as the
//! carrier: answered calls from two carriers with a spoken prompt as RTP,
//! hang-up from either side, a burst of 10 calls, silence towards unknown
//! sources, and the `/status` call counters.
//!
//! The `selftest_*` tests run the same scenarios and checks against a SIPp
//! stand-in for the appliance (`tests/sipp/selftest_fake_appliance.xml`),
//! so the harness itself is known to work without the binary.

mod common;

use common::*;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

const CARRIER_A_IP: &str = "127.0.0.2";
const CARRIER_B_IP: &str = "127.0.0.3";
const UNKNOWN_IP: &str = "127.0.0.9";

/// carrier-a (127.0.0.2) and carrier-b (127.0.0.3), inbound only.
fn two_carriers_config(ports: Ports) -> String {
    format!(
        "{}{}{}",
        base_config(ports),
        inbound_carrier("carrier-a", CARRIER_A_IP),
        inbound_carrier("carrier-b", CARRIER_B_IP)
    )
}

/// Runs `scenario` (uac_pcmu.xml / uac_wait_bye.xml) from `ip` against
/// `target` with the SDP pointing at a test-owned symmetric RTP peer on
/// `ip` that records the prompt and talks back.
fn run_uac(ports: Ports, target: SocketAddr, ip: &str, scenario_file: &str) -> (Sipp, RtpSink) {
    let sink = RtpSink::bind_talking(ip, ports.audio(0));
    let (target, peer, media, audio) = (
        target.to_string(),
        ports.peer(0).to_string(),
        ports.sipp_media(0).to_string(),
        ports.audio(0).to_string(),
    );
    let mut sipp = Sipp::spawn(
        scenario_file,
        ports.sipp_control(0),
        &[
            "-sf",
            &scenario(scenario_file),
            &target,
            "-i",
            ip,
            "-p",
            &peer,
            "-mi",
            ip,
            "-mp",
            &media,
            "-key",
            "audio_port",
            &audio,
            "-m",
            "1",
        ],
    );
    let ok = sipp.wait_success(Duration::from_secs(25));
    assert!(ok, "{scenario_file} from {ip} failed (sipp diagnostics below)");
    (sipp, sink)
}

/// The audio port in the SDP of the 200 OK that sipp received.
fn answered_rtp_port(sipp: &Sipp) -> Option<u16> {
    let trace = sipp.messages();
    let ok = trace
        .split("message received")
        .skip(1)
        .map(|m| {
            let m = m.trim_start_matches(|c: char| c != '\n').trim_start();
            m.split("\n-----").next().unwrap_or(m)
        })
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE") && m.contains("m=audio"))?;
    let m_line = ok.lines().find(|l| l.trim_start().starts_with("m=audio"))?;
    m_line.split_whitespace().nth(1)?.parse().ok()
}

/// Speech arrived from the appliance's media address, from the port its
/// SDP answer advertised (symmetric RTP), and stopped after the hang-up.
fn assert_prompt_received(ports: Ports, sipp: &Sipp, sink: &RtpSink, min_packets: usize) {
    let n = sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(5));
    let speech = sink.speech();
    speech.assert_speech(min_packets);
    assert_eq!(speech.ssrcs, 1, "one SSRC per call expected: {speech:?}");
    let rtp_lo = ports.base + 100;
    let rtp_hi = ports.base + 199;
    let advertised = answered_rtp_port(sipp);
    for p in sink.packets() {
        assert_eq!(p.from.ip().to_string(), "127.0.0.1", "RTP from outside media.bind: {p:?}");
        assert!(
            (rtp_lo..=rtp_hi).contains(&p.from.port()),
            "RTP source port outside rtp_ports: {p:?}"
        );
        assert_eq!(Some(p.from.port()), advertised, "RTP not sent from the SDP answer's port");
    }
    thread::sleep(Duration::from_millis(700));
    assert_eq!(sink.count(), n, "RTP kept flowing after the call ended");
}

fn assert_no_active_calls(app: &Appliance) {
    let idle = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        app.calls_counter("active") == 0
    });
    assert!(idle, "calls.active did not return to 0: {}", app.status_json());
}

fn caller_hangs_up(ports: Ports, carrier_ip: &str) {
    let mut app = Appliance::start(&two_carriers_config(ports));
    assert_eq!(app.calls_counter("answered_total"), 0);
    assert_eq!(app.calls_counter("rtp_packets_received_total"), 0);

    let (sipp, sink) = run_uac(ports, sip_addr(ports), carrier_ip, "uac_pcmu.xml");

    // The caller talked for 2.4 s: ~120 packets of prompt reached us.
    assert_prompt_received(ports, &sipp, &sink, 100);
    assert_eq!(sipp.errors().trim(), "", "unexpected messages at the caller");
    assert_no_active_calls(&app);
    assert_eq!(app.calls_counter("answered_total"), 1, "{}", app.status_json());
    // The test's peer talked back (50 packets/s) for the ~2.4 s call.
    let (received, sent) = (app.calls_counter("rtp_packets_received_total"), sink.sent() as u64);
    assert!(sent > 50, "the test peer sent only {sent} RTP packets");
    assert!(
        received * 2 >= sent && received <= sent,
        "appliance counted {received} received RTP packets, the peer sent {sent}"
    );
    app.assert_alive();
}

#[test]
fn call_from_carrier_a_is_answered_with_speech_and_caller_hangs_up() {
    caller_hangs_up(Ports::new(22000), CARRIER_A_IP);
}

#[test]
fn call_from_carrier_b_is_answered_with_speech_and_caller_hangs_up() {
    caller_hangs_up(Ports::new(22200), CARRIER_B_IP);
}

#[test]
fn appliance_hangs_up_after_the_prompt() {
    let ports = Ports::new(22400);
    // the ladder without its menu: the prompt, goodbye, BYE (docs/fallback.md)
    let config =
        format!("{}[fallback]\nmenu = false\nno_answer = \"hangup\"\n", two_carriers_config(ports));
    let mut app = Appliance::start(&config);
    let (sipp, sink) = run_uac(ports, sip_addr(ports), CARRIER_A_IP, "uac_wait_bye.xml");

    assert!(sipp.received_requests("BYE") >= 1, "no BYE from the appliance:\n{}", sipp.messages());
    assert_prompt_received(ports, &sipp, &sink, 100);
    let n = sink.count();
    // The prompt (~4.2 s) and goodbye (~2.7 s): under 8 s of 20 ms packets.
    assert!(n < 400, "prompts too long ({n} packets) - did they stop before BYE?");
    assert_no_active_calls(&app);
    assert_eq!(app.calls_counter("answered_total"), 1);
    app.assert_alive();
}

#[test]
fn call_with_sipp_rtp_stream_is_answered_and_its_rtp_counted() {
    let ports = Ports::new(23600);
    let mut app = Appliance::start(&two_carriers_config(ports));
    let mut sipp = sipp_rtp_stream_call(ports, sip_addr(ports));
    assert!(
        sipp.wait_success(Duration::from_secs(25)),
        "uac_rtp_stream failed (sipp diagnostics below)"
    );
    assert_no_active_calls(&app);
    assert_eq!(app.calls_counter("answered_total"), 1);
    // SIPp streamed caller.ulaw (50 packets/s) for the 2.4 s call.
    let received = app.calls_counter("rtp_packets_received_total");
    assert!((60..=150).contains(&received), "appliance counted {received} received RTP packets");
    app.assert_alive();
}

/// uac_rtp_stream.xml from carrier A: SIPp's own symmetric RTP.
fn sipp_rtp_stream_call(ports: Ports, target: SocketAddr) -> Sipp {
    let (target, peer, media) =
        (target.to_string(), ports.peer(0).to_string(), ports.sipp_media(0).to_string());
    Sipp::spawn(
        "uac_rtp_stream",
        ports.sipp_control(0),
        &[
            "-sf",
            &scenario("uac_rtp_stream.xml"),
            &target,
            "-i",
            CARRIER_A_IP,
            "-p",
            &peer,
            "-mi",
            CARRIER_A_IP,
            "-mp",
            &media,
            "-m",
            "1",
        ],
    )
}

/// SIPp's built-in `uac` scenario from carrier address `ip`, with `extra` arguments.
fn embedded_uac(ports: Ports, ip: &str, extra: &[&str]) -> Sipp {
    let (target, peer, media) =
        (sip_addr(ports).to_string(), ports.peer(0).to_string(), ports.sipp_media(0).to_string());
    let mut args = vec!["-sn", "uac", &target, "-i", ip, "-p", &peer, "-mi", ip, "-mp", &media];
    args.extend_from_slice(extra);
    Sipp::spawn("uac-embedded", ports.sipp_control(0), &args)
}

#[test]
fn ten_calls_from_sipp_embedded_uac_all_succeed() {
    let ports = Ports::new(22600);
    let mut app = Appliance::start(&two_carriers_config(ports));
    let mut sipp = embedded_uac(ports, CARRIER_A_IP, &["-m", "10", "-r", "5"]);
    let ok = sipp.wait_success(Duration::from_secs(30));
    assert!(ok, "sipp -sn uac -m 10 -r 5 failed (sipp diagnostics below)");
    assert_eq!(sipp.received_requests("INVITE"), 0);
    assert_no_active_calls(&app);
    let answered = app.calls_counter("answered_total");
    assert_eq!(answered, 10, "{}", app.status_json());
    app.assert_alive();
}

#[test]
fn invite_from_unknown_source_gets_no_response_and_carriers_still_served() {
    let ports = Ports::new(22800);
    let mut app = Appliance::start(&two_carriers_config(ports));
    let target = sip_addr(ports);

    let scanner = RawSip::bind(UNKNOWN_IP, ports.peer(0));
    let scanner_rtp = RtpSink::bind(UNKNOWN_IP, ports.audio(0));
    let invite =
        invite_request("UDP", scanner.local, target, "scanner-1@127.0.0.9", scanner_rtp.addr);
    scanner.send(target, invite.as_bytes());
    let reply = scanner.recv(Duration::from_millis(1500));
    assert_eq!(reply, None, "the appliance answered an unknown source");
    // A retransmission is dropped just the same.
    scanner.send(target, invite.as_bytes());
    assert_eq!(scanner.recv(Duration::from_millis(500)), None);
    assert_eq!(scanner_rtp.count(), 0, "RTP sent to an unknown source");

    let carrier = RawSip::bind(CARRIER_A_IP, ports.peer(1));
    assert!(
        carrier.options_ok(target, "after-scanner@127.0.0.2", Duration::from_secs(2)),
        "no 200 to OPTIONS from carrier-a after the scanner's INVITE"
    );
    assert_eq!(app.calls_counter("answered_total"), 0);
    assert_eq!(app.calls_counter("active"), 0);
    app.assert_alive();
}

#[test]
fn options_from_each_carrier_get_200() {
    let ports = Ports::new(23400);
    let mut app = Appliance::start(&two_carriers_config(ports));
    let target = sip_addr(ports);
    for (i, ip) in [CARRIER_A_IP, CARRIER_B_IP].iter().enumerate() {
        let raw = RawSip::bind(ip, ports.peer(i as u16));
        let call_id = format!("options-{i}@{ip}");
        assert!(
            raw.options_ok(target, &call_id, Duration::from_secs(2)),
            "no 200 to OPTIONS from {ip}"
        );
    }
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// Harness self-tests (no trunkguard binary involved)
// ---------------------------------------------------------------------------

/// SIPp playing the appliance's role on 127.0.0.1:<sip>.
fn fake_appliance(ports: Ports) -> Sipp {
    let (sip, media) = (ports.sip().to_string(), ports.sipp_media(1).to_string());
    let mut uas = Sipp::spawn(
        "fake-appliance",
        ports.sipp_control(1),
        &[
            "-sf",
            &scenario("selftest_fake_appliance.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            &sip,
            "-mi",
            "127.0.0.1",
            "-mp",
            &media,
            "-m",
            "1",
        ],
    );
    thread::sleep(Duration::from_millis(300));
    assert!(uas.is_running(), "fake appliance did not start (sipp diagnostics below)");
    uas
}

#[test]
fn selftest_uac_pcmu_against_sipp_fake_appliance() {
    let ports = Ports::new(23000);
    let mut uas = fake_appliance(ports);
    let (sipp, sink) = run_uac(ports, sip_addr(ports), CARRIER_A_IP, "uac_pcmu.xml");
    let n = sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(5));
    sink.speech().assert_speech(100);
    assert!(n < 160, "caller hung up at 2.4 s but got {n} packets");
    assert_eq!(answered_rtp_port(&sipp), Some(ports.sipp_media(1)));
    assert!(sink.sent() > 50, "the talking peer sent {} packets", sink.sent());
    assert!(uas.wait_success(Duration::from_secs(10)), "fake appliance failed");
}

#[test]
fn selftest_uac_wait_bye_against_sipp_fake_appliance() {
    let ports = Ports::new(23200);
    let mut uas = fake_appliance(ports);
    let (sipp, sink) = run_uac(ports, sip_addr(ports), CARRIER_B_IP, "uac_wait_bye.xml");
    assert_eq!(sipp.received_requests("BYE"), 1);
    sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(5));
    // caller.ulaw is 2.85 s: ~142 packets.
    let speech = sink.speech();
    speech.assert_speech(130);
    assert!(uas.wait_success(Duration::from_secs(10)), "fake appliance failed");
}

#[test]
fn selftest_uac_rtp_stream_against_sipp_fake_appliance() {
    let ports = Ports::new(23800);
    let mut uas = fake_appliance(ports);
    let mut sipp = sipp_rtp_stream_call(ports, sip_addr(ports));
    assert!(
        sipp.wait_success(Duration::from_secs(25)),
        "uac_rtp_stream failed (sipp diagnostics below)"
    );
    assert!(uas.wait_success(Duration::from_secs(10)), "fake appliance failed");
}

#[test]
fn selftest_speech_check_rejects_silence() {
    let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let silent: Vec<RtpPacket> = (0..150u16)
        .map(|i| {
            let mut b = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            b[2..4].copy_from_slice(&i.to_be_bytes());
            b.extend(std::iter::repeat_n(0xFF, 160));
            parse_rtp(&b, from).unwrap()
        })
        .collect();
    let stats = SpeechStats::of(&silent);
    assert_eq!(stats.packets, 150);
    assert!(stats.rms < 1.0, "{stats:?}");
    assert!(std::panic::catch_unwind(|| stats.assert_speech(100)).is_err());
    assert_eq!(ulaw_to_linear(0x00), -32124);
    assert_eq!(ulaw_to_linear(0x80), 32124);
    assert_eq!(alaw_to_linear(0xD5), 8);
    assert_eq!(alaw_to_linear(0x2A), -32256);
}

#[test]
fn calls_over_tcp_are_answered() {
    let ports = Ports::new(38000);
    let mut app = Appliance::start(&two_carriers_config(ports));
    let mut sipp = embedded_uac(ports, CARRIER_B_IP, &["-t", "t1", "-m", "3", "-r", "3"]);
    assert!(
        sipp.wait_success(Duration::from_secs(30)),
        "sipp -sn uac -t t1 failed (sipp diagnostics below)"
    );
    assert_no_active_calls(&app);
    assert_eq!(app.calls_counter("answered_total"), 3, "{}", app.status_json());
    app.assert_alive();
}

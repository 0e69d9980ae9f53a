//! Load shedding end to end (issue 5, rung 5): with `[limits] max_calls = 2`, two SIPp calls in
//! progress fill the box; a third INVITE gets `503 Service Unavailable` with `Retry-After` (so
//! the carrier routes it elsewhere) while the two calls go on and finish normally; once they
//! have ended, a new call is answered again.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const CARRIER_IP: &str = "127.0.0.2";
const PORTS: Ports = Ports::new(37400);

fn config() -> String {
    format!(
        "{}[limits]\nmax_calls = 2\nretry_after_s = 17\n\n{}",
        base_config(PORTS),
        inbound_carrier("carrier-a", CARRIER_IP)
    )
}

/// Sends one INVITE from a raw socket and returns the final response.
fn final_answer(app: &Appliance, call_id: &str, peer: u16, audio: u16) -> String {
    let sip = RawSip::bind(CARRIER_IP, PORTS.peer(peer));
    let rtp: SocketAddr = format!("{CARRIER_IP}:{}", PORTS.audio(audio)).parse().unwrap();
    let invite = invite_request("UDP", sip.local, sip_addr(PORTS), call_id, rtp);
    sip.send(sip_addr(PORTS), invite.as_bytes());
    let (got, done) =
        sip.recv_until(Duration::from_secs(4), |m| status_code(m).is_some_and(|c| c >= 200));
    assert!(done, "no final answer to {call_id}: {got:?}\n{}", app.log());
    got.last().cloned().unwrap_or_default()
}

#[test]
fn over_max_calls_new_invites_get_503_with_retry_after_while_calls_in_progress_go_on() {
    let mut app = Appliance::start(&config());
    // two simultaneous calls that each stay up 2.4 s, listening for the prompt on one socket
    let sink = RtpSink::bind_talking(CARRIER_IP, PORTS.audio(0));
    let (target, peer, media, audio) = (
        sip_addr(PORTS).to_string(),
        PORTS.peer(0).to_string(),
        PORTS.sipp_media(0).to_string(),
        PORTS.audio(0).to_string(),
    );
    let mut sipp = Sipp::spawn(
        "uac_pcmu.xml",
        PORTS.sipp_control(0),
        &[
            "-sf",
            &scenario("uac_pcmu.xml"),
            &target,
            "-i",
            CARRIER_IP,
            "-p",
            &peer,
            "-mi",
            CARRIER_IP,
            "-mp",
            &media,
            "-key",
            "audio_port",
            &audio,
            "-m",
            "2",
            "-l",
            "2",
            "-r",
            "20",
        ],
    );
    let full = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        app.calls_counter("active") == 2
    });
    assert!(
        full,
        "the two SIPp calls did not both get up: {}\n{}",
        app.status_json(),
        sipp.diagnostics()
    );

    let refused = final_answer(&app, "limits-e2e-over", 1, 1);
    assert_eq!(status_code(&refused), Some(503), "{refused}");
    assert_eq!(header(&refused, "Retry-After", None).as_deref(), Some("17"), "{refused}");
    assert_eq!(app.calls_counter("active"), 2, "the refused INVITE touched the calls in progress");

    // the calls in progress were not disturbed: both finish (SIPp's BYE gets its 200) with speech
    assert!(sipp.wait_success(Duration::from_secs(15)), "calls in progress failed after the 503");
    assert_eq!(sipp.errors().trim(), "", "unexpected messages at the caller");
    sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(5));
    let speech = sink.speech();
    speech.assert_speech(150); // two calls of ~2.4 s of prompt each
    assert_eq!(speech.ssrcs, 2, "both calls should have had their own stream: {speech:?}");
    assert_eq!(app.calls_counter("answered_total"), 2, "{}", app.status_json());
    let shed = app.status_json()["counters"]["shed_calls"].as_u64();
    assert_eq!(shed, Some(1), "shed counter: {}", app.status_json());

    // room again: the next INVITE is answered
    let idle = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        app.calls_counter("active") == 0
    });
    assert!(idle, "calls did not end: {}", app.status_json());
    let answered = final_answer(&app, "limits-e2e-after", 2, 2);
    assert_eq!(status_code(&answered), Some(200), "{answered}");
    app.assert_alive();
}

//! End-to-end carrier handling against the real `trunkguard` binary with
//! SIPp as the carrier's proxy/registrar: OPTIONS probing (up, down within
//! its bound after the proxy dies, up again after it returns) and
//! REGISTER with digest authentication (success; wrong password neither
//! registers nor hammers the registrar).
//!
//! The `selftest_*` tests drive the same SIPp scenarios from a handwritten
//! Rust client, so the scenarios are known to work without the binary.

mod common;

use common::*;
use md5::{Digest, Md5};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const CARRIER_IP: &str = "127.0.0.2";
const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 300;
const DOWN_AFTER: u64 = 2;
const UP_AFTER: u64 = 2;
/// Poll slack on top of the contract's detection bound.
const SLACK_MS: u64 = 300;

fn proxy_addr(ports: Ports) -> SocketAddr {
    SocketAddr::new(CARRIER_IP.parse().unwrap(), ports.peer(0))
}

fn probe_config(ports: Ports) -> String {
    format!(
        "{}[[carrier]]\n\
         name = \"carrier-a\"\n\
         proxy = \"udp:{}\"\n\
         inbound_from = [\"{CARRIER_IP}/32\"]\n\
         probe = {{ interval_ms = {INTERVAL_MS}, timeout_ms = {TIMEOUT_MS}, down_after = {DOWN_AFTER}, up_after = {UP_AFTER} }}\n\n\
         [[carrier]]\n\
         name = \"carrier-b\"\n\
         inbound_from = [\"127.0.0.3/32\"]\n",
        base_config(ports),
        proxy_addr(ports)
    )
}

fn register_config(ports: Ports, password_file: &std::path::Path) -> String {
    format!(
        "{}[[carrier]]\n\
         name = \"carrier-a\"\n\
         proxy = \"udp:{}\"\n\
         inbound_from = [\"{CARRIER_IP}/32\"]\n\
         register = {{ user = \"alice\", password_file = \"{}\", expires = 300 }}\n",
        base_config(ports),
        proxy_addr(ports),
        password_file.display()
    )
}

/// uas_options.xml on the carrier's proxy address (the i-th SIPp slot).
fn options_responder(ports: Ports, slot: u16) -> Sipp {
    let (port, media) = (ports.peer(0).to_string(), ports.sipp_media(slot).to_string());
    let mut sipp = Sipp::spawn_with_timeout(
        "uas_options",
        ports.sipp_control(slot),
        60,
        &["-sf", &scenario("uas_options.xml"), "-i", CARRIER_IP, "-p", &port, "-mp", &media],
    );
    thread::sleep(Duration::from_millis(200));
    assert!(sipp.is_running(), "uas_options did not start (diagnostics below)");
    sipp
}

/// uas_register_401.xml on the carrier's proxy address, accepting alice/secret.
fn registrar(ports: Ports, slot: u16, expires: u32) -> Sipp {
    let (port, media, expires) =
        (ports.peer(0).to_string(), ports.sipp_media(slot).to_string(), expires.to_string());
    let mut sipp = Sipp::spawn_with_timeout(
        "uas_register_401",
        ports.sipp_control(slot),
        60,
        &[
            "-sf",
            &scenario("uas_register_401.xml"),
            "-i",
            CARRIER_IP,
            "-p",
            &port,
            "-mp",
            &media,
            "-key",
            "auth_user",
            "alice",
            "-key",
            "auth_pass",
            "secret",
            "-key",
            "expires",
            &expires,
        ],
    );
    thread::sleep(Duration::from_millis(200));
    assert!(sipp.is_running(), "uas_register_401 did not start (diagnostics below)");
    sipp
}

/// Polls the carrier's state every 25 ms until it is `want`; the time it took.
fn time_until_state(app: &Appliance, want: &str, max: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    wait_until(max, Duration::from_millis(25), || app.carrier_state("carrier-a") == want)
        .then(|| t0.elapsed())
}

#[test]
fn probe_marks_carrier_up_then_down_when_proxy_dies_then_up_again() {
    let ports = Ports::new(24000);
    let mut app = Appliance::start(&probe_config(ports));
    assert_ne!(app.carrier_state("carrier-a"), "up", "up before any proxy exists");
    let b = app.carrier_state("carrier-b");
    assert!(b != "up" && b != "down", "carrier-b has no proxy to probe, yet it is {b}");

    let mut proxy = options_responder(ports, 0);
    let t_up = time_until_state(&app, "up", Duration::from_secs(5));
    assert!(t_up.is_some(), "carrier-a never came up: {}", app.status_json());

    // Probing rate while up: one OPTIONS per interval, not a flood.
    let before = proxy.received_requests("OPTIONS");
    thread::sleep(Duration::from_millis(2000));
    let during = proxy.received_requests("OPTIONS") - before;
    assert!((2..=6).contains(&during), "{during} OPTIONS in 2 s at interval {INTERVAL_MS} ms");

    proxy.kill();
    let bound = INTERVAL_MS * DOWN_AFTER + TIMEOUT_MS + SLACK_MS;
    let t_down = time_until_state(&app, "down", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("carrier-a never went down: {}", app.status_json()));
    assert!(
        t_down <= Duration::from_millis(bound),
        "down after {t_down:?}, bound {bound} ms (interval*down_after + timeout + slack)"
    );
    assert!(
        t_down >= Duration::from_millis(DOWN_AFTER * TIMEOUT_MS),
        "down after {t_down:?}: sooner than {DOWN_AFTER} probe timeouts"
    );

    let _proxy_again = options_responder(ports, 1);
    let t_up_again = time_until_state(&app, "up", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("carrier-a did not come back up: {}", app.status_json()));
    let up_bound = INTERVAL_MS * UP_AFTER + TIMEOUT_MS + SLACK_MS;
    assert!(
        t_up_again <= Duration::from_millis(up_bound),
        "up again after {t_up_again:?}, bound {up_bound} ms"
    );
    assert!(
        t_up_again >= Duration::from_millis(INTERVAL_MS * (UP_AFTER - 1) - 100),
        "up again after {t_up_again:?}: fewer than {UP_AFTER} successful probes?"
    );
    app.assert_alive();
}

#[test]
fn register_with_digest_auth_marks_carrier_registered() {
    let ports = Ports::new(24200);
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("carrier-a.pw");
    // As written by `echo secret > file`: the trailing newline is not part of it.
    std::fs::write(&pw, "secret\n").unwrap();
    let registrar = registrar(ports, 0, 300);
    let mut app = Appliance::start(&register_config(ports, &pw));

    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        app.carrier_registered("carrier-a")
    });
    assert!(ok, "carrier-a not registered: {}", app.status_json());

    let trace = registrar.messages();
    let registers = registrar.received_requests("REGISTER");
    assert!((2..=3).contains(&registers), "{registers} REGISTERs for one digest round trip");
    assert!(trace.contains("Authorization: Digest"), "no Authorization header sent");
    assert!(trace.contains("username=\"alice\""), "wrong digest username");
    assert!(trace.contains("qop=auth") && trace.contains("cnonce="), "qop=auth not honoured");
    // Still registered a moment later (no flapping), refresh not yet due.
    thread::sleep(Duration::from_millis(1000));
    assert!(app.carrier_registered("carrier-a"), "{}", app.status_json());
    assert_eq!(
        registrar.received_requests("REGISTER"),
        registers,
        "re-REGISTER long before 85% of 300 s"
    );
    app.assert_alive();
}

#[test]
fn register_with_wrong_password_stays_unregistered_without_hammering() {
    let ports = Ports::new(24400);
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("carrier-a.pw");
    std::fs::write(&pw, "not-the-secret\n").unwrap();
    let registrar = registrar(ports, 0, 300);
    let mut app = Appliance::start(&register_config(ports, &pw));

    let tried = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        registrar.received_requests("REGISTER") >= 2
    });
    assert!(tried, "no authenticated REGISTER attempt within 5 s");
    thread::sleep(Duration::from_secs(3));
    // Two for the first attempt (challenge, credentials); retries back off
    // (>= 1 s apart), so at most three more fit into 3 s.
    let registers = registrar.received_requests("REGISTER");
    assert!(
        registers <= 5,
        "{registers} REGISTERs within ~3 s after a 403: hammering the registrar"
    );
    assert!(
        !app.carrier_registered("carrier-a"),
        "registered with a wrong password: {}",
        app.status_json()
    );
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// Harness self-tests (no trunkguard binary involved)
// ---------------------------------------------------------------------------

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// `name="value"` or `name=value` from a WWW-Authenticate header value.
fn auth_param(header: &str, name: &str) -> Option<String> {
    let i = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[i..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?.to_string(),
        None => rest.split([',', ' ']).next()?.to_string(),
    })
}

fn register_request(
    from: SocketAddr,
    to: SocketAddr,
    call_id: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    format!(
        "REGISTER sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{to}>;tag=selftest\r\n\
         To: <sip:alice@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:alice@{from}>\r\n\
         Expires: 300\r\n\
         {}Content-Length: 0\r\n\r\n",
        branch(),
        auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default()
    )
}

/// One REGISTER round trip: challenge, then credentials; the final status.
fn register_once(client: &RawSip, to: SocketAddr, call_id: &str, password: &str) -> u16 {
    client.send(to, register_request(client.local, to, call_id, 1, None).as_bytes());
    let challenge = client.recv(Duration::from_secs(2)).expect("no answer to REGISTER");
    assert_eq!(status_code(&challenge), Some(401), "{challenge}");
    let www = header(&challenge, "WWW-Authenticate", None).expect("WWW-Authenticate");
    let realm = auth_param(&www, "realm").expect("realm");
    let nonce = auth_param(&www, "nonce").expect("nonce");
    assert_eq!(auth_param(&www, "qop").as_deref(), Some("auth"));
    let uri = format!("sip:{to}");
    let (cnonce, nc) = ("0a4f113b", "00000001");
    let ha1 = md5_hex(&format!("alice:{realm}:{password}"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    let auth = format!(
        "Digest username=\"alice\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc={nc}"
    );
    client.send(to, register_request(client.local, to, call_id, 2, Some(&auth)).as_bytes());
    let answer = client.recv(Duration::from_secs(2)).expect("no answer to authenticated REGISTER");
    let code = status_code(&answer).expect("not a response");
    if code == 200 {
        assert_eq!(header(&answer, "Expires", None).as_deref(), Some("300"), "{answer}");
        let contact = header(&answer, "Contact", Some("m")).expect("Contact");
        assert!(
            contact.ends_with(";expires=300") && contact.contains(&client.local.to_string()),
            "{contact}"
        );
    }
    code
}

#[test]
fn selftest_uas_register_401_verifies_digest_with_qop_auth() {
    let ports = Ports::new(24600);
    let registrar = registrar(ports, 0, 300);
    let client = RawSip::bind("127.0.0.1", ports.peer(1));
    let to = proxy_addr(ports);
    // An interleaved OPTIONS probe is answered too.
    assert!(client.options_ok(to, "selftest-probe", Duration::from_secs(2)));
    assert_eq!(register_once(&client, to, "selftest-reg-ok", "secret"), 200);
    // A refresh on the same Call-ID without credentials is challenged again.
    client.send(to, register_request(client.local, to, "selftest-reg-ok", 3, None).as_bytes());
    let again = client.recv(Duration::from_secs(2)).expect("no answer to refresh");
    assert_eq!(status_code(&again), Some(401), "{again}");
    assert_eq!(register_once(&client, to, "selftest-reg-bad", "wrong"), 403);
    assert_eq!(registrar.received_requests("REGISTER"), 5);
    assert_eq!(received_requests(&registrar.messages(), "OPTIONS"), 1);
}

#[test]
fn selftest_uas_options_answers_fresh_and_reused_call_ids_and_restarts() {
    let ports = Ports::new(24800);
    let client = RawSip::bind("127.0.0.1", ports.peer(1));
    let to = proxy_addr(ports);
    let mut first = options_responder(ports, 0);
    for i in 0..3 {
        assert!(client.options_ok(to, &format!("fresh-{i}"), Duration::from_secs(2)), "fresh {i}");
    }
    for i in 0..3 {
        assert!(client.options_ok(to, "reused", Duration::from_secs(2)), "reused {i}");
    }
    first.kill();
    assert!(!client.options_ok(to, "while-dead", Duration::from_millis(500)));
    let second = options_responder(ports, 1);
    assert!(client.options_ok(to, "after-restart", Duration::from_secs(2)));
    assert_eq!(second.received_requests("OPTIONS"), 1);
}

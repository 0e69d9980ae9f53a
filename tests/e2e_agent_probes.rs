//! Agent health probes against the real binary, seen from the agent's side.
//!
//! A *strict agent* (a small WebSocket server in this test, written from the Twilio Media
//! Streams documents) logs an error whenever a client leaves without completing the stream:
//! `connected`, then `start`, then `stop`, then a clean close (our close frame answered, the
//! peer's close frame before the TCP close). A Pipecat agent behind a box whose probe only
//! opened and dropped the socket logged exactly such an error every 5 s. Here the appliance
//! probes the strict agent several times and the agent must count zero errors; every probe's
//! `start` carries the probe marker (`customParameters.trunkguard_probe = "1"`, SIDs beginning
//! `MZtrunkguardprobe` / `CAtrunkguardprobe`), so an agent can tell it from a call.
//!
//! The standby endpoint is configured with a `health_url`: its probes are HTTP GETs of that
//! URL (answered 200 by a tiny HTTP server here) and its WebSocket sees no connection at all.
//!
//! The operator's view (second test): a primary whose port refuses connections and a standby
//! (`trunkguard agent-sim`); a SIPp call is refused by the primary at setup and bridged to the
//! standby. The appliance's log has a WARN naming the call, the endpoint and "connection
//! refused by <endpoint>" with the attempt's duration, and an INFO for the switch; the status
//! page's recent failures say the same (not "Dropped").
//!
//! An OpenAI Realtime agent (third test) sees each probe wait for its `session.created`, send
//! nothing, and close cleanly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::{self, Message};

const PORTS: Ports = Ports::new(39000);
/// The appliance probes every 5 s: three clean probes need about 10 s.
const PROBES: usize = 3;
const WAIT: Duration = Duration::from_secs(30);

/// What the strict agent saw.
#[derive(Default)]
struct AgentLog {
    /// Streams completed with the whole handshake.
    clean: usize,
    /// Every protocol error, as a Pipecat-style agent would log it.
    errors: Vec<String>,
    /// `start` messages received (to check the probe marker).
    starts: Vec<serde_json::Value>,
}

/// A WebSocket server that accepts connections until the test ends (bounded by `WAIT`).
fn strict_agent(port: u16) -> Arc<Mutex<AgentLog>> {
    let log = Arc::new(Mutex::new(AgentLog::default()));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the strict agent");
    let shared = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten().take(50) {
            let log = shared.clone();
            thread::spawn(move || serve_stream(stream, &log));
        }
    });
    log
}

/// One connection: the Media Streams sequence, then the closing handshake.
fn serve_stream(stream: TcpStream, log: &Mutex<AgentLog>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut ws = match tungstenite::accept(stream) {
        Ok(ws) => ws,
        Err(e) => return log.lock().unwrap().errors.push(format!("upgrade failed: {e}")),
    };
    let mut events: Vec<String> = Vec::new();
    let mut closed_by_client = false;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(e) => {
                        log.lock().unwrap().errors.push(format!("bad JSON {t}: {e}"));
                        continue;
                    }
                };
                let event = v["event"].as_str().unwrap_or("?").to_string();
                if event == "start" {
                    log.lock().unwrap().starts.push(v.clone());
                }
                events.push(event);
            }
            Ok(Message::Close(_)) => {
                closed_by_client = true;
                if events != ["connected", "start", "stop"] {
                    log.lock().unwrap().errors.push(format!(
                        "client closed after {events:?}, not after connected, start, stop"
                    ));
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) if closed_by_client => {
                log.lock().unwrap().clean += 1;
                return;
            }
            Err(e) => {
                log.lock().unwrap().errors.push(format!(
                    "connection lost without the closing handshake after {events:?}: {e}"
                ));
                return;
            }
        }
    }
}

/// Answers `GET /healthz` with 200 and counts the GETs (and anything else, as errors).
fn health_server(port: u16) -> (Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let gets = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the health server");
    let (g, o) = (gets.clone(), other.clone());
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten().take(50) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                    break;
                }
            }
            if line.starts_with("GET /healthz ") {
                g.fetch_add(1, Ordering::SeqCst);
            } else {
                o.lock().unwrap().push(line.trim().to_string());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (gets, other)
}

/// Counts WebSocket (TCP) connections on a port that must never see one.
fn unused_agent(port: u16) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the unused agent");
    let c = count.clone();
    thread::spawn(move || {
        for _ in listener.incoming().flatten().take(50) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    count
}

fn config(strict: u16, unused: u16, health: u16) -> String {
    format!(
        "{base}{carrier}\
         [[ai_endpoint]]\n\
         name = \"strict-agent\"\n\
         role = \"primary\"\n\
         protocol = \"twilio-media-streams\"\n\
         url = \"ws://127.0.0.1:{strict}/media\"\n\n\
         [[ai_endpoint]]\n\
         name = \"http-checked\"\n\
         role = \"standby\"\n\
         protocol = \"twilio-media-streams\"\n\
         url = \"ws://127.0.0.1:{unused}/media\"\n\
         health_url = \"http://127.0.0.1:{health}/healthz\"\n",
        base = base_config(PORTS),
        carrier = inbound_carrier("carrier", "127.0.0.2"),
    )
}

fn endpoint(app: &Appliance, role: &str) -> serde_json::Value {
    let status = app.status_json();
    let eps = status["ai_endpoints"].as_array().cloned().unwrap_or_default();
    eps.into_iter().find(|e| e["role"] == role).unwrap_or_else(|| panic!("no {role}: {status}"))
}

#[test]
fn a_strict_agent_sees_complete_probe_streams_and_a_health_url_replaces_the_websocket() {
    let (strict, unused, health) = (PORTS.peer(0), PORTS.peer(1), PORTS.peer(2));
    let agent = strict_agent(strict);
    let ws_connections = unused_agent(unused);
    let (gets, other_requests) = health_server(health);
    let mut app = Appliance::start(&config(strict, unused, health));

    let done = wait_until(WAIT, Duration::from_millis(200), || {
        agent.lock().unwrap().clean >= PROBES && gets.load(Ordering::SeqCst) >= PROBES
    });
    app.assert_alive();
    let log = agent.lock().unwrap();
    assert!(
        done,
        "{} clean probe streams and {} health GETs within {WAIT:?}; agent errors: {:?}",
        log.clean,
        gets.load(Ordering::SeqCst),
        log.errors
    );
    assert!(log.errors.is_empty(), "the strict agent logged errors: {:#?}", log.errors);
    for start in &log.starts {
        assert_eq!(start["start"]["customParameters"]["trunkguard_probe"], "1", "{start}");
        let sid = start["streamSid"].as_str().unwrap_or_default();
        assert!(sid.starts_with("MZtrunkguardprobe"), "a probe's streamSid: {start}");
        let call = start["start"]["callSid"].as_str().unwrap_or_default();
        assert!(call.starts_with("CAtrunkguardprobe"), "a probe's callSid: {start}");
    }
    println!("strict agent: {} clean probe streams, 0 errors", log.clean);
    drop(log);

    assert_eq!(ws_connections.load(Ordering::SeqCst), 0, "health_url: no WebSocket probe");
    assert!(other_requests.lock().unwrap().is_empty(), "{:?}", other_requests.lock().unwrap());
    let primary = endpoint(&app, "primary");
    let standby = endpoint(&app, "standby");
    assert!(primary["probe_successes"].as_u64() >= Some(PROBES as u64), "{primary}");
    assert_eq!(primary["probe_failures"], 0, "{primary}");
    assert!(standby["probe_successes"].as_u64() >= Some(PROBES as u64), "{standby}");
    assert_eq!(standby["probe_failures"], 0, "{standby}");
    app.kill_hard();
}

const REFUSED_PORTS: Ports = Ports::new(39400);
const CARRIER_IP: &str = "127.0.0.2";

#[test]
fn a_primary_refusing_at_setup_is_logged_and_listed_with_its_name_and_cause() {
    let ports = REFUSED_PORTS;
    let refusing = ports.peer(3); // nothing listens there
    let sim_port = ports.base + 95;
    let _sim = spawn_agent_sim(sim_port);
    let config = format!(
        "{base}{carrier}\
         [[ai_endpoint]]\nname = \"refusing-agent\"\nrole = \"primary\"\n\
         protocol = \"twilio-media-streams\"\nurl = \"ws://127.0.0.1:{refusing}/media\"\n\n\
         [[ai_endpoint]]\nname = \"sim-agent\"\nrole = \"standby\"\n\
         protocol = \"twilio-media-streams\"\nurl = \"ws://127.0.0.1:{sim_port}/media\"\n",
        base = base_config(ports),
        carrier = inbound_carrier("carrier-a", CARRIER_IP),
    );
    let mut app = Appliance::start(&config);
    let _sink = RtpSink::bind_talking(CARRIER_IP, ports.audio(0));
    let (target, peer, media, audio) = (
        sip_addr(ports).to_string(),
        ports.peer(1).to_string(),
        ports.sipp_media(0).to_string(),
        ports.audio(0).to_string(),
    );
    let mut sipp = Sipp::spawn(
        "uac_pcmu",
        ports.sipp_control(0),
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
            "1",
        ],
    );
    assert!(sipp.wait_success(Duration::from_secs(25)), "the call failed\n{}", sipp.diagnostics());
    app.assert_alive();

    let log = app.log();
    let refused = log
        .lines()
        .find(|l| l.contains("agent connection refused at call setup"))
        .unwrap_or_else(|| panic!("no refused-setup line in the log:\n{log}"));
    assert!(refused.contains(" WARN "), "{refused}");
    for field in [
        "call_id=",
        "endpoint=refusing-agent",
        "cause=connection refused by refusing-agent",
        "attempt_ms=",
        "call_ms=",
    ] {
        assert!(refused.contains(field), "{field} missing: {refused}");
    }
    let switch = log
        .lines()
        .find(|l| l.contains("failing over to the other agent endpoint"))
        .unwrap_or_else(|| panic!("no switch line in the log:\n{log}"));
    assert!(
        switch.contains(" INFO ")
            && switch.contains("from=refusing-agent")
            && switch.contains("endpoint=sim-agent"),
        "{switch}"
    );
    println!("{refused}\n{switch}");
    let status = app.status_json();
    let failures = status["recent_failures"].as_array().cloned().unwrap_or_default();
    let connect = failures
        .iter()
        .find(|f| f["kind"] == "agent-connect")
        .unwrap_or_else(|| panic!("no agent-connect failure: {status}"));
    let detail = connect["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("connection refused by refusing-agent (call "), "{detail}");
    assert!(!failures.iter().any(|f| f["detail"].as_str().is_some_and(|d| d.contains("Dropped"))));
    app.kill_hard();
}

const OPENAI_PORTS: Ports = Ports::new(39600);

/// An OpenAI Realtime server that greets with `session.created` and logs an error for any
/// client that leaves without the closing handshake (or sends anything: a probe must not).
fn strict_openai_agent(port: u16) -> Arc<Mutex<AgentLog>> {
    let log = Arc::new(Mutex::new(AgentLog::default()));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the OpenAI agent");
    let shared = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten().take(50) {
            let log = shared.clone();
            thread::spawn(move || serve_openai(stream, &log));
        }
    });
    log
}

fn serve_openai(stream: TcpStream, log: &Mutex<AgentLog>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut ws = match tungstenite::accept(stream) {
        Ok(ws) => ws,
        Err(e) => return log.lock().unwrap().errors.push(format!("upgrade failed: {e}")),
    };
    let created = r#"{"type":"session.created","event_id":"event_1","session":{"id":"sess_1"}}"#;
    if let Err(e) = ws.send(Message::text(created)) {
        return log.lock().unwrap().errors.push(format!("cannot send session.created: {e}"));
    }
    let mut closed_by_client = false;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                log.lock().unwrap().errors.push(format!("a probe sent {t}"));
            }
            Ok(Message::Close(_)) => closed_by_client = true,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) if closed_by_client => {
                log.lock().unwrap().clean += 1;
                return;
            }
            Err(e) => {
                let error = format!("connection lost without the closing handshake: {e}");
                log.lock().unwrap().errors.push(error);
                return;
            }
        }
    }
}

#[test]
fn an_openai_agent_sees_probes_wait_for_session_created_then_close_cleanly() {
    let ports = OPENAI_PORTS;
    let agent_port = ports.peer(0);
    let agent = strict_openai_agent(agent_port);
    let config = format!(
        "{base}{carrier}\
         [[ai_endpoint]]\nname = \"realtime\"\nrole = \"primary\"\n\
         protocol = \"openai-realtime\"\nurl = \"ws://127.0.0.1:{agent_port}/v1/realtime\"\n",
        base = base_config(ports),
        carrier = inbound_carrier("carrier", CARRIER_IP),
    );
    let mut app = Appliance::start(&config);
    let done = wait_until(WAIT, Duration::from_millis(200), || agent.lock().unwrap().clean >= 2);
    app.assert_alive();
    let log = agent.lock().unwrap();
    assert!(done, "{} clean probes within {WAIT:?}; errors: {:?}", log.clean, log.errors);
    assert!(log.errors.is_empty(), "the OpenAI agent logged errors: {:#?}", log.errors);
    drop(log);
    let primary = endpoint(&app, "primary");
    assert!(primary["probe_successes"].as_u64() >= Some(2), "{primary}");
    assert_eq!(primary["probe_failures"], 0, "{primary}");
    app.kill_hard();
}

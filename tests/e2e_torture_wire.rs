//! RFC 4475 torture messages on the wire against the real `trunkguard`
//! binary: every message in `tests/data/rfc4475` is sent over UDP from a
//! known carrier address (127.0.0.1), after which the box must still answer
//! an OPTIONS within 2 s. Invalid requests get 400 Bad Request (505 is also
//! accepted for the SIP/7.0 one); requests whose Via is too broken to
//! answer may go unanswered but never get another status; no response is
//! ever answered; requests of class `valid` never get a 400.

mod common;

use common::*;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Invalid requests an implementation may be unable to answer (broken Via).
const MAY_BE_UNANSWERABLE: &[&str] = &["badinv01.dat", "badvers.dat"];
/// Invalid requests where another error status is also correct.
const ALSO_ACCEPTED: &[(&str, u16)] = &[("badvers.dat", 505)];

struct Torture {
    file: String,
    class: String,
    bytes: Vec<u8>,
}

impl Torture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
    fn is_response(&self) -> bool {
        self.bytes.starts_with(b"SIP/")
    }
    fn call_id(&self) -> Option<String> {
        call_id_of(&self.text())
    }
}

fn corpus_dir() -> PathBuf {
    repo_root().join("tests").join("data").join("rfc4475")
}

fn load_corpus() -> Vec<Torture> {
    let dir = corpus_dir();
    let manifest =
        fs::read_to_string(dir.join("MANIFEST.tsv")).expect("tests/data/rfc4475/MANIFEST.tsv");
    manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "bad MANIFEST line {line:?}");
            let bytes = fs::read(dir.join(cols[0])).unwrap_or_else(|e| panic!("{}: {e}", cols[0]));
            Torture { file: cols[0].to_string(), class: cols[2].to_string(), bytes }
        })
        .collect()
}

/// What came back for one torture message: responses carrying its Call-ID.
fn replies_for(msg: &Torture, got: &[String]) -> Vec<u16> {
    let Some(call_id) = msg.call_id() else {
        return Vec::new();
    };
    got.iter()
        .filter(|r| call_id_of(r).as_deref() == Some(call_id.as_str()))
        .filter_map(|r| status_code(r))
        .collect()
}

fn check_replies(msg: &Torture, codes: &[u16]) -> Result<(), String> {
    let name = msg.file.as_str();
    if msg.is_response() {
        return match codes.is_empty() {
            true => Ok(()),
            false => Err(format!("{name}: a response was answered with {codes:?}")),
        };
    }
    match msg.class.as_str() {
        "invalid" => {
            let allowed = |c: u16| c == 400 || ALSO_ACCEPTED.contains(&(name, c));
            if let Some(bad) = codes.iter().find(|&&c| !allowed(c)) {
                return Err(format!("{name}: invalid request answered {bad} (all: {codes:?})"));
            }
            if codes.is_empty() && !MAY_BE_UNANSWERABLE.contains(&name) {
                return Err(format!("{name}: invalid request got no 400"));
            }
            Ok(())
        }
        // `semantics` etc. may rightly get 400/4xx (e.g. insuf.dat); only
        // syntactically valid messages must never be called malformed.
        "valid" if codes.contains(&400) => Err(format!("{name} (valid): answered 400")),
        _ => Ok(()),
    }
}

#[test]
fn every_rfc4475_message_on_the_wire_leaves_the_box_answering() {
    let ports = Ports::new(25000);
    // ~100 requests in a second from one source: lift the per-source rate limit (load shedding
    // is tested in the core), this test is about message handling
    let limits = "[limits]\nrequests_per_second = 10000\nburst = 10000\n\n";
    let config = format!("{}{limits}{}", base_config(ports), inbound_carrier("local", "127.0.0.1"));
    let mut app = Appliance::start(&config);
    let target: SocketAddr = sip_addr(ports);
    let client = RawSip::bind("127.0.0.1", ports.peer(0));
    let corpus = load_corpus();
    let mut failures = Vec::new();

    for (i, msg) in corpus.iter().enumerate() {
        client.send(target, &msg.bytes);
        let probe_id = format!("torture-probe-{i}@127.0.0.1");
        client.send(target, options_request(client.local, target, &probe_id).as_bytes());
        let (mut got, answered) = client.recv_until(Duration::from_secs(2), |m| {
            status_code(m) == Some(200) && call_id_of(m).as_deref() == Some(probe_id.as_str())
        });
        if !answered {
            app.assert_alive();
            failures.push(format!("{}: no 200 to the OPTIONS sent after it", msg.file));
            continue;
        }
        let wants_400 = !msg.is_response() && msg.class == "invalid";
        if wants_400 && replies_for(msg, &got).is_empty() {
            // The 400 may trail the probe's 200 if handled concurrently.
            let (late, _) = client.recv_until(Duration::from_millis(500), |m| {
                msg.call_id().is_some_and(|id| call_id_of(m).as_deref() == Some(id.as_str()))
            });
            got.extend(late);
        }
        if let Err(e) = check_replies(msg, &replies_for(msg, &got)) {
            failures.push(e);
        }
    }

    app.assert_alive();
    assert_eq!(http_get(app.http, "/livez").map(|r| r.0).ok(), Some(200));
    assert!(
        failures.is_empty(),
        "{} of {} torture messages failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn selftest_rfc4475_corpus_is_complete_and_classified() {
    let corpus = load_corpus();
    assert_eq!(corpus.len(), 49);
    let invalid: Vec<&Torture> = corpus.iter().filter(|m| m.class == "invalid").collect();
    assert_eq!(invalid.len(), 19);
    assert_eq!(invalid.iter().filter(|m| m.is_response()).count(), 2, "scalarlg, bigcode");
    for name in MAY_BE_UNANSWERABLE.iter().chain(ALSO_ACCEPTED.iter().map(|(n, _)| n)) {
        assert!(invalid.iter().any(|m| m.file == *name), "{name} is not an invalid message");
    }
    // Every invalid request carries a Call-ID we can match a 400 against.
    for m in invalid.iter().filter(|m| !m.is_response()) {
        assert!(m.call_id().is_some(), "{} has no Call-ID", m.file);
    }
    // The checker itself: a 400 to a response, a 200 to an invalid request,
    // silence to an answerable invalid request, a 400 to a valid one all fail.
    let find = |f: &str| corpus.iter().find(|m| m.file == f).unwrap();
    assert!(check_replies(find("bigcode.dat"), &[400]).is_err());
    assert!(check_replies(find("bigcode.dat"), &[]).is_ok());
    assert!(check_replies(find("clerr.dat"), &[100, 180, 200]).is_err());
    assert!(check_replies(find("clerr.dat"), &[]).is_err());
    assert!(check_replies(find("clerr.dat"), &[400]).is_ok());
    assert!(check_replies(find("badvers.dat"), &[505]).is_ok());
    assert!(check_replies(find("badinv01.dat"), &[]).is_ok());
    assert!(check_replies(find("wsinv.dat"), &[400]).is_err());
    assert!(check_replies(find("wsinv.dat"), &[100, 180, 200]).is_ok());
}

//! Durable call records against the real binary: three SIPp calls leave three records that
//! `trunkguard calls --json` shows, and a kill -9 under load leaves an intact database with a
//! record for every call SIPp saw answered.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;

const CARRIER_IP: &str = "127.0.0.2";

fn config(ports: Ports) -> String {
    format!("{}{}", base_config(ports), inbound_carrier("telco", CARRIER_IP))
}

fn embedded_uac(ports: Ports, timeout_s: u32, extra: &[&str]) -> Sipp {
    let (target, peer, media) =
        (sip_addr(ports).to_string(), ports.peer(0).to_string(), ports.sipp_media(0).to_string());
    let mut args = vec![
        "-sn", "uac", &target, "-i", CARRIER_IP, "-p", &peer, "-mi", CARRIER_IP, "-mp", &media,
    ];
    args.extend_from_slice(extra);
    Sipp::spawn_with_timeout("uac-records", ports.sipp_control(0), timeout_s, &args)
}

/// Call-IDs of the INVITEs sipp received a 200 OK for, from its message trace.
fn answered_call_ids(trace: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for block in trace.split("message received").skip(1) {
        let lines: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let Some(first) = lines.iter().position(|l| l.starts_with("SIP/2.0 ")) else { continue };
        if !lines[first].starts_with("SIP/2.0 200") {
            continue;
        }
        let header = |name: &str| {
            lines[first..].iter().take_while(|l| !l.starts_with("-----")).find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        if header("CSeq").is_some_and(|c| c.ends_with("INVITE")) {
            if let Some(id) = header("Call-ID") {
                ids.insert(id);
            }
        }
    }
    ids
}

#[test]
fn three_calls_leave_three_records_shown_by_trunkguard_calls() {
    let ports = Ports::new(33600);
    let mut app = Appliance::start(&config(ports));
    let mut sipp = embedded_uac(ports, 30, &["-m", "3", "-r", "3"]);
    assert!(sipp.wait_success(Duration::from_secs(30)), "sipp -sn uac -m 3 failed");
    let state = app.dir().join("trunkguard-state");
    let mut rows = Vec::new();
    // the end records are written by the writer thread just after the BYE
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        rows = calls_json(&state);
        rows.len() == 3 && rows.iter().all(|r| !r["end_reason"].is_null())
    });
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let sipp_ids = answered_call_ids(&sipp.messages());
    for r in &rows {
        assert_eq!(r["carrier"], "telco", "{r}");
        assert!(r["caller"].as_str().is_some_and(|c| c.starts_with("sip:")), "{r}");
        assert_eq!(r["end_reason"], "remote BYE", "{r}");
        assert!(r["answered_at_ms"].as_i64().is_some(), "{r}");
        let duration = r["duration_ms"].as_i64().expect("a duration");
        assert!((0..10_000).contains(&duration), "{r}");
        assert!(sipp_ids.contains(r["call_id"].as_str().unwrap()), "{r} not in {sipp_ids:?}");
    }
    // the table form works too
    let out = Command::new(Appliance::binary())
        .args(["calls", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.contains("telco") && table.contains("remote BYE"), "{table}");
    app.assert_alive();
}

#[test]
fn kill_9_under_load_leaves_an_intact_database_with_every_answered_call() {
    let ports = Ports::new(33800);
    let mut app = Appliance::start(&config(ports));
    // sipp's global timeout ends it (with its logs flushed) once the appliance is gone
    let mut sipp = embedded_uac(ports, 8, &["-m", "20", "-r", "10", "-d", "500"]);
    let started = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        app.calls_counter("answered_total") >= 5
    });
    assert!(started, "calls did not start: {}", app.status_json());
    app.kill_hard();
    let _ = sipp.wait_success(Duration::from_secs(20)); // fails: the appliance is gone
    let sipp_ids = answered_call_ids(&sipp.messages());
    assert!(sipp_ids.len() >= 5, "sipp saw {} answers", sipp_ids.len());

    let db = app.dir().join("trunkguard-state").join("trunkguard.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let mut stmt = conn.prepare("SELECT call_id, answered_at_ms FROM calls").unwrap();
    let rows: Vec<(String, Option<i64>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert!(rows.iter().all(|(_, at)| at.is_some()), "every record has its answer time: {rows:?}");
    let recorded: BTreeSet<String> = rows.into_iter().map(|(id, _)| id).collect();
    eprintln!("sipp saw {} answers; {} records", sipp_ids.len(), recorded.len());
    let missing: Vec<&String> = sipp_ids.difference(&recorded).collect();
    assert!(missing.is_empty(), "answered at the caller but not recorded: {missing:?}");
}

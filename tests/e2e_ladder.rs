//! The degradation ladder against the real binary, with SIPp as the carrier and no agent
//! configured: the canned prompt, the DTMF menu, key 1 sent as RFC 4733 telephone-events
//! (SIPp's `dtmf_2833_1.pcap`) → a callback request (logged) → the confirmation → the
//! appliance's BYE; and a caller who hangs up mid-menu. Both leave a call record that says
//! which rungs the call reached (`trunkguard calls --json`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const CARRIER_IP: &str = "127.0.0.2";
const DTMF_PCAP: &str = "/usr/share/sip-tester/dtmf_2833_1.pcap";

fn config(ports: Ports) -> String {
    format!("{}{}", base_config(ports), inbound_carrier("telco", CARRIER_IP))
}

/// SIPp from the carrier's address, its media on `-mp`, `mode` ("-sf FILE" or "-sn uac"),
/// pausing `pause_ms` after the ACK, one call.
fn spawn_sipp(ports: Ports, name: &str, mode: [&str; 2], pause_ms: u32) -> Sipp {
    let (target, peer, media, pause) = (
        sip_addr(ports).to_string(),
        ports.peer(0).to_string(),
        ports.sipp_media(0).to_string(),
        pause_ms.to_string(),
    );
    let args = [
        mode[0], mode[1], &target, "-i", CARRIER_IP, "-p", &peer, "-mi", CARRIER_IP, "-mp", &media,
        "-d", &pause, "-m", "1",
    ];
    Sipp::spawn(name, ports.sipp_control(0), &args)
}

#[test]
fn no_agent_prompt_menu_key_1_records_a_callback_request_confirms_and_hangs_up() {
    assert!(Path::new(DTMF_PCAP).exists(), "{DTMF_PCAP} missing (apt-get install sip-tester)");
    let ports = Ports::new(35600);
    let mut app = Appliance::start(&config(ports));
    // the 4.2 s high-demand prompt, then 1.8 s into the menu: press 1
    let mut sipp = spawn_sipp(ports, "uac-dtmf", ["-sf", &scenario("uac_dtmf.xml")], 6000);
    let ok = sipp.wait_success(Duration::from_secs(30));
    assert!(
        ok,
        "the appliance did not hang up after the key press:\n{}\n{}",
        sipp.diagnostics(),
        app.log()
    );
    assert_eq!(sipp.received_requests("BYE"), 1);

    let log = app.log();
    let line = log
        .lines()
        .find(|l| l.contains("callback requested"))
        .unwrap_or_else(|| panic!("no callback request logged:\n{log}"));
    assert!(line.contains("+15550001") && line.contains("caller-pressed-1"), "{line}");
    assert!(log.contains("DTMF") && log.contains("digit=1"), "the key press was not seen:\n{log}");

    let r = ended_record(&app);
    assert_eq!(r["ladder"], "prompt>menu>callback", "{r}");
    assert_eq!(r["callback_reason"], "caller-pressed-1", "{r}");
    assert_eq!(r["fallback_reason"], "no AI agent configured", "{r}");
    assert_eq!(r["end_reason"], "local BYE", "the appliance hung up: {r}");
    // 6 s to the key, ~5 s of confirmation, then BYE
    let duration = r["duration_ms"].as_i64().expect("a duration");
    figure("ladder_key1_call_ms", duration);
    assert!((10_000..16_000).contains(&duration), "{r}");
    app.assert_alive();
}

#[test]
fn a_caller_hanging_up_mid_menu_leaves_a_record_that_says_so() {
    let ports = Ports::new(35800);
    let mut app = Appliance::start(&config(ports));
    // SIPp's built-in caller hangs up 6 s after the ACK: 1.8 s into the menu
    let mut sipp = spawn_sipp(ports, "uac-hangup-menu", ["-sn", "uac"], 6000);
    assert!(sipp.wait_success(Duration::from_secs(30)), "{}", sipp.diagnostics());

    let r = ended_record(&app);
    assert_eq!(r["ladder"], "prompt>menu", "the record says the caller left at the menu: {r}");
    assert_eq!(r["end_reason"], "remote BYE", "{r}");
    assert!(r["callback_reason"].is_null(), "{r}");
    assert!(!app.log().contains("callback requested"), "no callback for a caller who left");
    // the table shows it too
    let out = Command::new(Appliance::binary())
        .args(["calls", "--state-dir"])
        .arg(app.dir().join("trunkguard-state"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("LADDER") && table.contains("prompt>menu"), "{table}");
    app.assert_alive();
}

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("{name}: {value}");
}

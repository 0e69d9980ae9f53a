//! Hostile networks against the real binary (issue 14), on loopback with several 127.0.0.x
//! addresses: 127.0.0.1 is the carrier (its `inbound_from`), 127.0.0.66 an attacker outside it,
//! 127.0.0.2 a host inside a carrier's range that misbehaves.
//!
//! - the hijack race plus a spray of the whole RTP range leave the call's audio identical to an
//!   undisturbed call, and nothing reaches the attacker;
//! - idle connections and slowloris (SIP over TCP and the status server) leave `/livez` and a
//!   carrier call working; figures: RSS before / after (`name: value`);
//! - a carrier's OPTIONS flood leaves its INVITEs answered;
//! - `Server` carries no version.
//!
//! Every loop is bounded in count and time; every process is killed on drop.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const CARRIER_IP: &str = "127.0.0.1";
const ATTACKER_IP: &str = "127.0.0.66";

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Sends an INVITE from `sip` offering `rtp`, waits for its 200, ACKs it; the 200's text.
fn place_call(sip: &RawSip, to: SocketAddr, call_id: &str, rtp: SocketAddr) -> Option<String> {
    let invite = invite_request("UDP", sip.local, to, call_id, rtp);
    sip.send(to, invite.as_bytes());
    let (got, ok) = sip.recv_until(Duration::from_secs(8), |m| {
        status_code(m) == Some(200) && call_id_of(m).as_deref() == Some(call_id)
    });
    if !ok {
        return None;
    }
    let ok200 = got.last()?.clone();
    let from = header(&invite, "From", Some("f"))?;
    let to_hdr = header(&ok200, "To", Some("t"))?;
    let ack = format!(
        "ACK sip:agent@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={}\r\nMax-Forwards: 70\r\n\
         From: {from}\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        sip.local,
        branch()
    );
    sip.send(to, ack.as_bytes());
    Some(ok200)
}

/// The appliance's RTP port named in an SDP answer.
fn answered_port(ok200: &str) -> Option<u16> {
    body_of(ok200)
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// Payloads (PCMU) by position from the first packet, from what a sink received.
fn audio_by_position(sink: &RtpSink) -> BTreeMap<u16, Vec<u8>> {
    let packets: Vec<RtpPacket> =
        sink.packets().into_iter().filter(|p| p.payload_type == 0).collect();
    let Some(first) = packets.first().map(|p| p.seq) else { return BTreeMap::new() };
    packets.iter().map(|p| (p.seq.wrapping_sub(first), p.payload.clone())).collect()
}

/// An RTP packet (PCMU or a telephone-event for key 1) from the attacker.
fn attack_rtp(seq: u16, event: bool) -> Vec<u8> {
    let pt = if event { 101 } else { 0 };
    let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x0bad_f00du32.to_be_bytes());
    if event {
        p.extend_from_slice(&[1, 0x0a, 0x03, 0x20]); // key 1, volume 10, 800 ticks
    } else {
        p.extend_from_slice(&[0x11; 160]);
    }
    p
}

/// Sprays every port of `range` (RTP, telephone-events and RTCP) from `socket` until `stop`,
/// at most `max`; returns datagrams sent.
fn spray(
    socket: &UdpSocket,
    target: std::net::IpAddr,
    range: (u16, u16),
    stop: &AtomicBool,
    max: Duration,
) -> usize {
    let started = Instant::now();
    let rr = [0x80, 201, 0, 1, 0x0b, 0xad, 0xf0, 0x0d];
    let mut sent = 0;
    let mut seq = 0u16;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < max {
        for port in (range.0..=range.1).step_by(2) {
            let rtp = SocketAddr::new(target, port);
            let rtcp = SocketAddr::new(target, port + 1);
            let _ = socket.send_to(&attack_rtp(seq, seq % 2 == 1), rtp);
            let _ = socket.send_to(&rr, rtcp);
            sent += 2;
        }
        seq = seq.wrapping_add(1);
        thread::sleep(Duration::from_millis(10));
    }
    sent
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Whether this machine can bind 127.0.0.66 (all of 127/8 is loopback on Linux).
fn attacker_address_usable() -> bool {
    UdpSocket::bind((ATTACKER_IP, 0)).is_ok()
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED: {test}: {why}");
}

// ---------------------------------------------------------------------------
// audio hijack
// ---------------------------------------------------------------------------

/// One call from the carrier; its audio as received by the carrier's talking sink for 3 s.
fn carrier_call(
    app: &Appliance,
    sip: &RawSip,
    ports: Ports,
    i: u16,
) -> (BTreeMap<u16, Vec<u8>>, u16, serde_json::Value) {
    carrier_call_to(app, sip, sip_addr(ports), ports, i)
}

fn carrier_call_to(
    app: &Appliance,
    sip: &RawSip,
    box_sip: SocketAddr,
    ports: Ports,
    i: u16,
) -> (BTreeMap<u16, Vec<u8>>, u16, serde_json::Value) {
    let sink = RtpSink::bind_talking(CARRIER_IP, ports.audio(i));
    let call_id = format!("hijack-{i}-{}", std::process::id());
    let ok = place_call(sip, box_sip, &call_id, sink.addr)
        .unwrap_or_else(|| panic!("call {i} not answered\n{}", app.log()));
    let port = answered_port(&ok).expect("m=audio in the 200");
    thread::sleep(Duration::from_secs(3));
    let status = app.status_json();
    let call = status["active_calls"]
        .as_array()
        .and_then(|calls| calls.iter().find(|c| c["call_id"] == call_id.as_str()).cloned())
        .unwrap_or_else(|| panic!("call {call_id} not in /status: {status}"));
    (audio_by_position(&sink), port, call)
}

#[test]
fn a_hijack_race_and_a_port_spray_leave_the_call_audio_identical() {
    let test = "a_hijack_race_and_a_port_spray_leave_the_call_audio_identical";
    if !attacker_address_usable() {
        return skip(test, "cannot bind 127.0.0.66");
    }
    let ports = Ports::new(36400);
    let config = format!("{}{}", base_config(ports), inbound_carrier("carrier", CARRIER_IP));
    let app = Appliance::start(&config);
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));

    // the undisturbed call
    let (quiet, _, quiet_call) = carrier_call(&app, &sip, ports, 0);
    assert!(quiet.len() >= 100, "the undisturbed call got {} packets", quiet.len());

    // the attacked call: the spray starts before the INVITE, so it wins every race
    let attacker = Arc::new(UdpSocket::bind((ATTACKER_IP, ports.audio(10))).expect("bind"));
    attacker.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let range = (ports.base + 100, ports.base + 199);
    let sprayer = {
        let (socket, stop) = (attacker.clone(), stop.clone());
        let target = CARRIER_IP.parse().unwrap();
        thread::spawn(move || spray(&socket, target, range, &stop, Duration::from_secs(20)))
    };
    let heard = Arc::new(AtomicUsize::new(0));
    let listener = {
        let (socket, stop, heard) = (attacker.clone(), stop.clone(), heard.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                if socket.recv_from(&mut buf).is_ok() {
                    heard.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(200));
    let (attacked, port, attacked_call) = carrier_call(&app, &sip, ports, 1);
    stop.store(true, Ordering::Relaxed);
    let sprayed = sprayer.join().unwrap();
    listener.join().unwrap();

    let common: Vec<u16> = quiet.keys().filter(|k| attacked.contains_key(k)).copied().collect();
    assert!(
        common.len() >= 100,
        "the attacked call's audio went elsewhere: {} of {} packets reached the carrier",
        attacked.len(),
        quiet.len()
    );
    let differ = common.iter().filter(|k| quiet[k] != attacked[k]).count();
    assert_eq!(differ, 0, "audio differs from the undisturbed call in {differ} packets");
    assert_eq!(heard.load(Ordering::Relaxed), 0, "the box sent media or RTCP to the attacker");
    let counters = &attacked_call["counters"];
    assert!(
        counters["rtp_wrong_source"].as_u64().unwrap_or(0) > 0,
        "the spray reached port {port} and was refused: {counters}"
    );
    assert_eq!(counters["dtmf_received"], 0, "the attacker's keys were heard: {counters}");
    let metrics = http_get(app.http, "/metrics").expect("/metrics").1;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trunkguard_media_refused_source_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(refused > 0, "refused packets in /metrics");
    let quiet_received = quiet_call["counters"]["rtp_received"].as_u64().unwrap_or(0);
    let attacked_received = counters["rtp_received"].as_u64().unwrap_or(0);
    println!("hijack_sprayed_datagrams: {sprayed}");
    println!("hijack_media_refused_source_total: {refused}");
    println!("hijack_audio_packets_compared: {}", common.len());
    println!("hijack_rtp_received_quiet_vs_attacked: {quiet_received} {attacked_received}");
    assert!(attacked_received > 0, "the carrier's own audio was accepted");
}

// ---------------------------------------------------------------------------
// the same race from another network namespace
// ---------------------------------------------------------------------------

/// A network namespace holding the attacker, joined to the host by a veth pair (a /30 out of
/// 198.51.100.0/24 picked from the process id). Removed on drop, even after a failed assert.
struct AttackerNet {
    ns: String,
    host_if: String,
    host_ip: String,
    attacker_ip: String,
}

impl AttackerNet {
    fn create() -> Result<AttackerNet, String> {
        let pid = std::process::id();
        let k = pid % 60;
        let net = AttackerNet {
            ns: format!("tgh-{pid}"),
            host_if: format!("tgh0{}", pid % 100_000),
            host_ip: format!("198.51.100.{}", 4 * k + 1),
            attacker_ip: format!("198.51.100.{}", 4 * k + 2),
        };
        let ns_if = format!("tgh1{}", pid % 100_000);
        let host_cidr = format!("{}/30", net.host_ip);
        let att_cidr = format!("{}/30", net.attacker_ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &net.ns],
            vec!["link", "add", &net.host_if, "type", "veth", "peer", "name", &ns_if],
            vec!["link", "set", &ns_if, "netns", &net.ns],
            vec!["addr", "add", &host_cidr, "dev", &net.host_if],
            vec!["link", "set", &net.host_if, "up"],
            vec!["-n", &net.ns, "addr", "add", &att_cidr, "dev", &ns_if],
            vec!["-n", &net.ns, "link", "set", &ns_if, "up"],
            vec!["-n", &net.ns, "link", "set", "lo", "up"],
        ];
        for args in steps {
            let out = std::process::Command::new("ip")
                .args(&args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(net)
    }
}

impl Drop for AttackerNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Not a test on its own: the attacker process the namespace test starts inside its namespace
/// (`TG_ATTACK=target_ip,first_port,last_port,seconds,bind_ip`). Without the variable it does
/// nothing.
#[test]
fn netns_attacker_helper() {
    let Ok(spec) = std::env::var("TG_ATTACK") else { return };
    let f: Vec<&str> = spec.split(',').collect();
    let target: std::net::IpAddr = f[0].parse().unwrap();
    let range = (f[1].parse().unwrap(), f[2].parse().unwrap());
    let secs: u64 = f[3].parse().unwrap();
    let socket = Arc::new(UdpSocket::bind((f[4], 0)).expect("attacker bind"));
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let heard = {
        let (socket, stop) = (socket.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0usize;
            let mut buf = [0u8; 2048];
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                if socket.recv_from(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        })
    };
    let sent = spray(&socket, target, range, &AtomicBool::new(false), Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let heard = heard.join().unwrap();
    println!("TG_ATTACKER sent={sent} heard={heard}");
}

#[test]
fn from_another_network_namespace_the_race_and_spray_leave_the_audio_identical() {
    let test = "from_another_network_namespace_the_race_and_spray_leave_the_audio_identical";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, "needs root for ip netns / veth");
    }
    let net = match AttackerNet::create() {
        Ok(n) => n,
        Err(e) => return skip(test, &format!("cannot build the namespaces: {e}")),
    };
    let ports = Ports::new(37200);
    let box_sip = SocketAddr::new(net.host_ip.parse().unwrap(), ports.sip());
    let config = format!(
        "[sip]\nlisten = [\"udp:{box_sip}\"]\n\n[media]\nbind = \"{}\"\nrtp_ports = \"{}\"\n\n\
         [status]\nlisten = \"127.0.0.1:{}\"\n\n{}",
        net.host_ip,
        ports.rtp_range(),
        ports.http(),
        inbound_carrier("carrier", CARRIER_IP)
    );
    let app = Appliance::start(&config);
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));
    let (quiet, _, _) = carrier_call_to(&app, &sip, box_sip, ports, 0);
    assert!(quiet.len() >= 100, "the undisturbed call got {} packets", quiet.len());

    let spec =
        format!("{},{},{},8,{}", net.host_ip, ports.base + 100, ports.base + 199, net.attacker_ip);
    let attacker = std::process::Command::new("ip")
        .args(["netns", "exec", &net.ns])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "netns_attacker_helper", "--nocapture", "--test-threads=1"])
        .env("TG_ATTACK", &spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the attacker in its namespace");
    let attacker = Reap(attacker);
    thread::sleep(Duration::from_millis(500));
    let (attacked, port, call) = carrier_call_to(&app, &sip, box_sip, ports, 1);
    let mut attacker = attacker;
    let mut out = String::new();
    if let Some(mut stdout) = attacker.0.stdout.take() {
        let _ = stdout.read_to_string(&mut out); // the helper ends after its 8 s
    }
    let line = out
        .lines()
        .find_map(|l| l.find("TG_ATTACKER").map(|at| l[at..].to_string()))
        .unwrap_or_default();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("attacker output: {out}"))
    };
    let (sent, heard) = (field("sent="), field("heard="));
    let common: Vec<u16> = quiet.keys().filter(|k| attacked.contains_key(k)).copied().collect();
    println!("netns_attacker_sent: {sent}");
    println!("netns_attacker_heard: {heard}");
    println!("netns_audio_packets_compared: {}", common.len());
    println!("netns_call_counters: {}", call["counters"]);
    assert!(sent > 1000, "the attacker sprayed ({sent})");
    assert!(common.len() >= 100, "the attacked call's audio went elsewhere");
    let differ = common.iter().filter(|k| quiet[k] != attacked[k]).count();
    assert_eq!(differ, 0, "audio differs from the undisturbed call in {differ} packets");
    assert_eq!(heard, 0, "the box sent media or RTCP to the attacker's namespace");
    assert!(
        call["counters"]["rtp_wrong_source"].as_u64().unwrap_or(0) > 0,
        "the spray reached port {port} and was refused: {call}"
    );
    drop(net);
}

// ---------------------------------------------------------------------------
// connections
// ---------------------------------------------------------------------------

/// Whether the server closed `s` (read gives 0 or an error) within `within`.
fn closed_within(s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    let mut r = s;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// A TCP connection from `from_ip` to `to` (tokio lets the test pick the source address).
fn connect_from(rt: &tokio::runtime::Runtime, from_ip: &str, to: SocketAddr) -> Option<TcpStream> {
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(from_ip.parse().ok()?, 0)).ok()?;
        let stream =
            tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await.ok()?.ok()?;
        stream.into_std().ok()
    })
    .inspect(|s| {
        let _ = s.set_nonblocking(false);
    })
}

/// A carrier's OPTIONS over TCP answered 200.
fn tcp_options_ok(to: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else { return false };
    let local = s.local_addr().unwrap();
    let msg = options_request(local, to, "tcp-options").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    if s.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"SIP/2.0 200"))
}

#[test]
fn idle_connections_and_slowloris_leave_livez_and_a_carrier_call_working() {
    let test = "idle_connections_and_slowloris_leave_livez_and_a_carrier_call_working";
    if !attacker_address_usable() {
        return skip(test, "cannot bind 127.0.0.66");
    }
    let ports = Ports::new(36600);
    let config = format!(
        "{}{}[[carrier]]\nname = \"wide\"\ninbound_from = [\"127.0.0.2/32\"]\n\n\
         [connections]\nsip_max = 64\nsip_max_per_source = 8\nhttp_max = 32\n\
         http_max_per_source = 8\nhead_timeout_ms = 1500\nidle_timeout_s = 30\n",
        base_config(ports),
        inbound_carrier("carrier", CARRIER_IP)
    );
    let app = Appliance::start(&config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sip_tcp = sip_addr(ports);
    let rss_before = rss_kb(app.pid());

    // N connections from a non-carrier address: every one closed at once, unanswered
    let n = (nofile_limit().saturating_sub(200) / 2).min(3000) as usize;
    let mut closed = 0;
    let mut held = Vec::new();
    for _ in 0..n {
        let Some(s) = connect_from(&rt, ATTACKER_IP, sip_tcp) else { continue };
        held.push(s);
    }
    for s in held.iter_mut() {
        if closed_within(s, Duration::from_millis(500)) {
            closed += 1;
        }
    }
    println!("non_carrier_sip_connections_opened: {}", held.len());
    println!("non_carrier_sip_connections_closed_unanswered: {closed}");
    assert_eq!(closed, held.len(), "every non-carrier SIP connection is closed at once");
    drop(held);

    // a host inside a carrier's range: at most 8 connections held, and slowloris is cut
    let slow_from = "127.0.0.2";
    let mut loris: Vec<TcpStream> =
        (0..20).filter_map(|_| connect_from(&rt, slow_from, sip_tcp)).collect();
    let started = Instant::now();
    for s in loris.iter_mut() {
        let _ = s.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP ");
    }
    // HTTP: idle and slow heads from the attacker (the status server cannot be silent)
    let http = app.http;
    let mut http_loris: Vec<TcpStream> =
        (0..4).filter_map(|_| connect_from(&rt, ATTACKER_IP, http)).collect();
    for s in http_loris.iter_mut() {
        let _ = s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n");
    }
    let http_idle: Vec<TcpStream> =
        (0..100).filter_map(|_| connect_from(&rt, ATTACKER_IP, http)).collect();
    // trickle one byte a connection every 300 ms for 6 s; the head timeout is 1.5 s
    let mut alive_at_end = 0;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(300));
        for s in loris.iter_mut().chain(http_loris.iter_mut()) {
            let _ = s.write_all(b"a");
        }
        // meanwhile the operator and the carrier are served
        assert!(matches!(http_get(http, "/livez"), Ok((200, _))), "/livez under attack");
    }
    for s in loris.iter_mut().chain(http_loris.iter_mut()) {
        if !closed_within(s, Duration::from_millis(100)) {
            alive_at_end += 1;
        }
    }
    println!("slowloris_connections_open_after_6s: {alive_at_end}");
    assert_eq!(alive_at_end, 0, "slow heads are cut after the head timeout");
    assert!(started.elapsed() < Duration::from_secs(30));
    let idle_refused =
        http_idle.iter().filter(|s| closed_within(s, Duration::from_millis(200))).count();
    println!("http_idle_connections_closed: {idle_refused} of {}", http_idle.len());
    assert_eq!(idle_refused, http_idle.len(), "over the cap at once, the others by timeout");

    assert!(tcp_options_ok(sip_tcp), "a carrier's OPTIONS over TCP still answered");
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));
    let sink = RtpSink::bind_talking(CARRIER_IP, ports.audio(0));
    assert!(
        place_call(&sip, sip_addr(ports), "after-flood", sink.addr).is_some(),
        "a carrier call is answered\n{}",
        app.log()
    );
    drop(http_idle);
    drop(loris);
    drop(http_loris);
    thread::sleep(Duration::from_millis(500));
    let metrics = http_get(http, "/metrics").expect("/metrics").1;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    println!("rss_before_kb: {rss_before}");
    println!("rss_after_kb: {}", rss_kb(app.pid()));
    println!(
        "sip_stream_refused_source_total: {}",
        value("trunkguard_sip_stream_refused_source_total")
    );
    println!("sip_stream_timeouts_total: {}", value("trunkguard_sip_stream_timeouts_total"));
    println!("http_refused_cap_total: {}", value("trunkguard_http_refused_cap_total"));
    println!("http_timeouts_total: {}", value("trunkguard_http_timeouts_total"));
    assert_eq!(value("trunkguard_http_refused_cap_total"), 96.0, "8 per source: 4 slow + 4 idle");
    assert!(value("trunkguard_sip_stream_refused_source_total") >= closed as f64);
    assert!(value("trunkguard_sip_stream_timeouts_total") >= 1.0);
}

// ---------------------------------------------------------------------------
// budgets
// ---------------------------------------------------------------------------

#[test]
fn a_carriers_options_flood_leaves_its_invites_answered() {
    let ports = Ports::new(36800);
    let config = format!(
        "{}{}[limits]\nrequests_per_second = 20\nburst = 20\ninvites_per_second = 5\ninvite_burst = 10\n",
        base_config(ports),
        inbound_carrier("carrier", CARRIER_IP)
    );
    let app = Appliance::start(&config);
    let to = sip_addr(ports);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let sock = RawSip::bind(CARRIER_IP, ports.peer(1));
        thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                for _ in 0..20 {
                    let msg = options_request(sock.local, to, &format!("flood-{sent}"));
                    sock.send(to, msg.as_bytes());
                    sent += 1;
                }
                thread::sleep(Duration::from_millis(10)); // ~2000 a second
            }
            sock.sock.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            let mut answered = 0;
            let mut buf = [0u8; 4096];
            while sock.sock.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
            (sent, answered)
        })
    };
    thread::sleep(Duration::from_millis(500));
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));
    let mut answered = 0;
    let mut refused = 0;
    for i in 0..10 {
        let call_id = format!("flood-call-{i}-{}", std::process::id());
        let sink = RtpSink::bind(CARRIER_IP, ports.audio(i));
        let invite = invite_request("UDP", sip.local, to, &call_id, sink.addr);
        sip.send(to, invite.as_bytes());
        let (got, _) = sip.recv_until(Duration::from_secs(5), |m| {
            call_id_of(m).as_deref() == Some(call_id.as_str())
                && status_code(m).is_some_and(|c| c >= 200)
        });
        match got.iter().rev().find_map(|m| status_code(m).filter(|c| *c >= 200)) {
            Some(200) => answered += 1,
            _ => refused += 1,
        }
        thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, options_answered) = flood.join().unwrap();
    println!("options_flood_sent: {sent}");
    println!("options_flood_answered: {options_answered}");
    println!("invites_answered_during_flood: {answered} of 10");
    assert!(sent > 1000, "the flood ran ({sent})");
    assert!(options_answered < sent / 4, "the OPTIONS flood was throttled");
    assert_eq!((answered, refused), (10, 0), "every INVITE answered during the flood");
    let status = app.status_json();
    assert!(status["counters"]["rate_limited"].as_u64().unwrap_or(0) > 0, "{status}");
}

// ---------------------------------------------------------------------------
// headers
// ---------------------------------------------------------------------------

#[test]
fn the_server_header_tells_no_version() {
    let ports = Ports::new(37000);
    let config = format!("{}{}", base_config(ports), inbound_carrier("carrier", CARRIER_IP));
    let _app = Appliance::start(&config);
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));
    let to = sip_addr(ports);
    sip.send(to, options_request(sip.local, to, "server-header").as_bytes());
    let (got, ok) = sip.recv_until(Duration::from_secs(5), |m| status_code(m) == Some(200));
    assert!(ok, "OPTIONS answered");
    let server = header(got.last().unwrap(), "Server", None);
    assert_eq!(server.as_deref(), Some("trunkguard"), "no version unless asked for");
}

// ---------------------------------------------------------------------------
// TLS handshakes
// ---------------------------------------------------------------------------

/// Waits until the server closes `s`; the time it took, or `None` after `max`. Panics if the
/// server sent a single byte.
fn time_to_close(s: &TcpStream, max: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut r = s;
    let mut buf = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while started.elapsed() < max {
        match r.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(n) => panic!("the server answered {n} bytes"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn tls_strangers_get_nothing_and_a_silent_handshake_is_dropped() {
    let test = "tls_strangers_get_nothing_and_a_silent_handshake_is_dropped";
    if !attacker_address_usable() {
        return skip(test, "cannot bind 127.0.0.66");
    }
    let ports = Ports::new(37600);
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let config = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:{sip}\", \"tls:127.0.0.1:{tls}\"]\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [media]\nbind = \"127.0.0.1\"\nrtp_ports = \"{}\"\n\n[status]\nlisten = \"127.0.0.1:{}\"\n\n\
         {}[connections]\ntls_handshake_timeout_ms = 1000\n",
        cert_path.display(),
        key_path.display(),
        ports.rtp_range(),
        ports.http(),
        inbound_carrier("carrier", CARRIER_IP),
        sip = ports.sip(),
        tls = ports.tls(),
    );
    let _app = Appliance::start(&config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], ports.tls()));

    // a stranger's ClientHello-looking bytes get no byte back, and the stream is closed at once
    let mut stranger = connect_from(&rt, ATTACKER_IP, tls_addr).expect("connect");
    let _ = stranger.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
    let closed = time_to_close(&stranger, Duration::from_secs(5));
    println!("tls_stranger_closed_after_ms: {:?}", closed.map(|d| d.as_millis()));
    assert!(closed.is_some(), "a stranger's TLS connection is closed unanswered");

    // the carrier's address opening a connection and saying nothing: dropped at the timeout
    let silent = connect_from(&rt, CARRIER_IP, tls_addr).expect("connect");
    let dropped = time_to_close(&silent, Duration::from_secs(8));
    println!("tls_silent_handshake_dropped_after_ms: {:?}", dropped.map(|d| d.as_millis()));
    assert!(dropped.is_some(), "a silent handshake is dropped (tls_handshake_timeout_ms = 1000)");
    assert!(dropped.unwrap() >= Duration::from_millis(500), "not before its timeout");
}

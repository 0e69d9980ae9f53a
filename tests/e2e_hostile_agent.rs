//! A hostile agent against the real `trunkguard` binary (issue 14, bounded agents): the primary
//! agent is a small WebSocket server in this test that floods marks, sends giant media frames
//! or frames over the WebSocket size limit; the standby is the in-process agent simulator. The
//! caller (raw SIP over UDP, an RTP sink) must stay on the line, hear the filler and then the
//! standby, the hostile agent must get one connection per test (no reconnect loop: its breaker
//! trips), and the appliance's memory (VmRSS of the process) must stay bounded.
//!
//! Figures are printed as `name: value` (run with `--nocapture`); the RSS bound is generous.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use trunkguard::core::ai::twilio::{encode_agent_mark, encode_agent_media};
use trunkguard_agent_sim::{SimConfig, SimHandle, SimMode, SimProtocol, SimServer};

const CARRIER_IP: &str = "127.0.0.2";
/// Generous: the appliance idles near 25 MB; the unbounded queues reached 328-545 MB.
const RSS_BOUND_KB: u64 = 200 * 1024;
/// How long the hostile agent keeps at it (unless the appliance hangs up on it first).
const HOSTILE_FOR: Duration = Duration::from_secs(8);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug)]
enum Hostility {
    /// Marks of 200-byte names as fast as the socket takes them, after some audio.
    MarkFlood,
    /// Valid media frames just under the frame limit (~23 s of audio each), back to back.
    GiantFrames,
    /// Text frames of 1 MiB, over the WebSocket limit.
    OversizeFrames,
}

/// The hostile agent: counts call sessions (`start` received; a health probe's `start` carries
/// `trunkguard_probe` and is not counted), and what it managed to send.
struct Hostile {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    frames_sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

async fn serve(
    listener: tokio::net::TcpListener,
    mode: Hostility,
    calls: Arc<AtomicUsize>,
    frames_sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok((tcp, _))) =
            tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
        else {
            continue;
        };
        let (calls, frames_sent, stop) = (calls.clone(), frames_sent.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
            let attack = attack(ws, mode, calls, frames_sent, stop);
            let _ = tokio::time::timeout(HOSTILE_FOR, attack).await;
        });
    }
}

async fn attack(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    mode: Hostility,
    calls: Arc<AtomicUsize>,
    frames_sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let (mut tx, mut rx) = ws.split();
    // Wait for `start` to learn the stream SID.
    let sid = loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if v["event"] == "start"
                    && v["start"]["customParameters"]["trunkguard_probe"] == "1"
                {
                    return; // a health probe's stream (docs/ai.md): not a call
                }
                if v["event"] == "start" {
                    calls.fetch_add(1, Ordering::Relaxed);
                    break v["streamSid"].as_str().unwrap_or_default().to_string();
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    };
    // Keep reading (and dropping) what the appliance sends, so it never blocks on us.
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let name = "m".repeat(200);
    let frame = |i: usize| -> String {
        match mode {
            Hostility::MarkFlood if i < 5 => encode_agent_media(&sid, &[0x2a; 8000]),
            Hostility::MarkFlood => encode_agent_mark(&sid, &format!("{i}{name}")),
            Hostility::GiantFrames => encode_agent_media(&sid, &vec![0x2a; 190_000]),
            Hostility::OversizeFrames => encode_agent_media(&sid, &vec![0x2a; 800_000]),
        }
    };
    for i in 0.. {
        if stop.load(Ordering::Relaxed) || tx.send(Message::text(frame(i))).await.is_err() {
            return;
        }
        frames_sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl Hostile {
    fn start(rt: &tokio::runtime::Runtime, mode: Hostility) -> Hostile {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().unwrap();
        let h = Hostile {
            addr,
            calls: Arc::default(),
            frames_sent: Arc::default(),
            stop: Arc::default(),
        };
        let (c, f, s) = (h.calls.clone(), h.frames_sent.clone(), h.stop.clone());
        rt.spawn(serve(listener, mode, c, f, s));
        h
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// VmRSS of the appliance process in kB (found by its config path on the command line).
fn rss_kb(app: &Appliance) -> u64 {
    let needle = app.config_path.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(&needle) || !cmdline.contains(" run ") {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok());
        if let Some(kb) = kb {
            return kb;
        }
    }
    panic!("appliance process not found in /proc");
}

fn config(ports: Ports, primary: SocketAddr, standby: SocketAddr) -> String {
    format!(
        "{}{}[ai]\nsetup_budget_ms = 1500\n\n\
         [[ai_endpoint]]\nname = \"hostile\"\nrole = \"primary\"\nprotocol = \"twilio-media-streams\"\n\
         url = \"ws://{primary}/media\"\n\n\
         [[ai_endpoint]]\nname = \"sim\"\nrole = \"standby\"\nprotocol = \"twilio-media-streams\"\n\
         url = \"ws://{standby}/media\"\n\n",
        base_config(ports),
        inbound_carrier("carrier-a", CARRIER_IP)
    )
}

/// An INVITE from the carrier; returns (the SIP socket, call-id, From, To) once answered.
fn call(ports: Ports, rtp: SocketAddr) -> (RawSip, String, String, String) {
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));
    let target = sip_addr(ports);
    let call_id = format!("hostile-{}@{CARRIER_IP}", ports.base);
    sip.send(target, invite_request("UDP", sip.local, target, &call_id, rtp).as_bytes());
    let (msgs, ok) = sip.recv_until(Duration::from_secs(5), |m| {
        call_id_of(m).as_deref() == Some(call_id.as_str()) && status_code(m) == Some(200)
    });
    assert!(ok, "the call was not answered: {msgs:?}");
    let msg = msgs.last().cloned().unwrap_or_default();
    let from = header(&msg, "From", Some("f")).expect("From");
    let to = header(&msg, "To", Some("t")).expect("To");
    let ack = in_dialog("ACK", 1, &sip, target, &call_id, &from, &to);
    sip.send(target, ack.as_bytes());
    (sip, call_id, from, to)
}

fn in_dialog(
    method: &str,
    cseq: u32,
    sip: &RawSip,
    target: SocketAddr,
    call_id: &str,
    from: &str,
    to: &str,
) -> String {
    format!(
        "{method} sip:agent@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        sip.local,
        branch()
    )
}

/// The longest stretch without RTP from the appliance.
fn longest_gap(packets: &[RtpPacket]) -> Duration {
    packets.windows(2).map(|w| w[1].at.saturating_duration_since(w[0].at)).max().unwrap_or_default()
}

fn standby_sim(rt: &tokio::runtime::Runtime) -> SimHandle {
    let mut cfg = SimConfig::new("127.0.0.1:0".parse().unwrap(), SimProtocol::TwilioMediaStreams);
    cfg.mode = SimMode::Prompt;
    let _guard = rt.enter();
    let server = rt.block_on(SimServer::bind(cfg)).expect("bind agent-sim");
    server.spawn().expect("spawn agent-sim")
}

fn hostile_agent(base: u16, mode: Hostility) {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ports = Ports::new(base);
    // The standby on a runtime of its own: the hostile agent's floods keep its workers busy,
    // and a standby starved of them would look like a standby that never answers.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("standby runtime");
    let hostile = Hostile::start(&rt, mode);
    let sim = standby_sim(&sim_rt);
    let app = Appliance::start(&config(ports, hostile.addr, sim.addr));
    let rss_idle = rss_kb(&app);
    let sink = RtpSink::bind(CARRIER_IP, ports.audio(0));
    let (sip, call_id, from, to) = call(ports, sink.addr);
    let t0 = Instant::now();
    // The standby takes the call.
    let on_standby = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        sim.stats.snapshot().starts >= 1
    });
    let failover_s = t0.elapsed().as_secs_f64();
    let mut rss_peak = rss_kb(&app);
    // Let the hostile agent keep trying for a while; watch the memory.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        rss_peak = rss_peak.max(rss_kb(&app));
        std::thread::sleep(Duration::from_millis(100));
    }
    let packets = sink.packets();
    let heard_from_standby = sim.stats.snapshot().media_out;
    // Still on the line: BYE is answered.
    let target = sip_addr(ports);
    sip.send(target, in_dialog("BYE", 2, &sip, target, &call_id, &from, &to).as_bytes());
    let (_, bye_ok) = sip.recv_until(Duration::from_secs(3), |m| {
        status_code(m) == Some(200) && header(m, "CSeq", None).is_some_and(|c| c.ends_with("BYE"))
    });
    let name = format!("{mode:?}").to_lowercase();
    println!("hostile_{name}_frames_sent: {}", hostile.frames_sent.load(Ordering::Relaxed));
    println!("hostile_{name}_call_sessions: {}", hostile.calls.load(Ordering::Relaxed));
    println!("hostile_{name}_failover_s: {failover_s:.2}");
    println!("hostile_{name}_rss_idle_kb: {rss_idle}");
    println!("hostile_{name}_rss_peak_kb: {rss_peak}");
    println!("hostile_{name}_longest_rtp_gap_ms: {}", longest_gap(&packets).as_millis());
    assert!(on_standby, "the call never reached the standby\n{}", app.log());
    assert_eq!(
        hostile.calls.load(Ordering::Relaxed),
        1,
        "one call session on the hostile agent, no reconnect loop"
    );
    assert!(heard_from_standby > 0, "the standby spoke to the caller");
    assert!(packets.len() > 100, "the caller heard the filler and the standby: {}", packets.len());
    assert!(
        longest_gap(&packets) < Duration::from_secs(2),
        "the caller was left in silence for {:?}",
        longest_gap(&packets)
    );
    assert!(bye_ok, "the call stayed up until the caller hung up");
    assert!(rss_peak < RSS_BOUND_KB, "VmRSS {rss_peak} kB over {RSS_BOUND_KB} kB");
    drop(app);
    sim_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(3), sim.shutdown()).await })
        .ok();
    drop(hostile);
    rt.shutdown_timeout(Duration::from_secs(2));
    sim_rt.shutdown_timeout(Duration::from_secs(2));
}

#[test]
fn a_mark_flood_leaves_the_caller_on_the_filler_then_the_standby_with_bounded_memory() {
    hostile_agent(32200, Hostility::MarkFlood);
}

#[test]
fn giant_media_frames_leave_the_caller_on_the_filler_then_the_standby_with_bounded_memory() {
    hostile_agent(32400, Hostility::GiantFrames);
}

#[test]
fn oversize_frames_leave_the_caller_on_the_filler_then_the_standby_without_a_reconnect_loop() {
    hostile_agent(32600, Hostility::OversizeFrames);
}

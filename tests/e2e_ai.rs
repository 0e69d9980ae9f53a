//! End-to-end AI bridge tests against the real `trunkguard` binary: a carrier (raw SIP over
//! UDP, or SIPp) calls in, a test-owned RTP peer talks and listens, and in-process agent
//! simulators (`trunkguard::sim`) play the AI agents: echo both ways (cross-correlated),
//! DTMF to the agent, barge-in `clear`, setup failover to the standby inside the budget,
//! mid-call failover with the filler, both agents down (canned prompt), and the breaker.
//!
//! Figures for the issue are printed as `name: value` lines (run with `--nocapture`);
//! assertions are functional bounds only (the setup budget, the filler within 500 ms, ...).
//! Tests take a file-wide lock: they are timing-sensitive and the machine is small.

mod common;

use common::*;
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use trunkguard::core::media::g711::Law;
use trunkguard::core::media::prompt::Prompt;
use trunkguard::sim::{Fault, SimConfig, SimHandle, SimMode, SimProtocol, SimServer};

const CARRIER_IP: &str = "127.0.0.2";
/// `[ai] setup_budget_ms` in every test.
const BUDGET_MS: u64 = 1500;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prints a figure for the issue note.
fn figure(name: &str, value: impl std::fmt::Display) {
    println!("{name}: {value}");
}

// ---------------------------------------------------------------------------
// Agent simulators (in-process, on their own tokio runtime)
// ---------------------------------------------------------------------------

struct Sims {
    rt: Option<tokio::runtime::Runtime>,
    handles: Vec<SimHandle>,
}

impl Sims {
    fn new() -> Sims {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Sims { rt: Some(rt), handles: Vec::new() }
    }

    /// Starts a simulator on an ephemeral loopback port; returns its index.
    fn start(&mut self, protocol: SimProtocol, mode: SimMode, faults: &[&str]) -> usize {
        let mut cfg = SimConfig::new("127.0.0.1:0".parse().unwrap(), protocol);
        cfg.mode = mode;
        cfg.faults = faults.iter().map(|f| f.parse::<Fault>().expect("fault")).collect();
        let rt = self.rt.as_ref().unwrap();
        let _guard = rt.enter();
        let server = rt.block_on(SimServer::bind(cfg)).expect("bind agent-sim");
        self.handles.push(server.spawn().expect("spawn agent-sim"));
        self.handles.len() - 1
    }

    fn url(&self, i: usize) -> String {
        format!("ws://{}/media", self.handles[i].addr)
    }

    fn stats(&self, i: usize) -> trunkguard::sim::SimCounters {
        self.handles[i].stats.snapshot()
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            for h in self.handles.drain(..) {
                let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), h.shutdown()).await });
            }
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// `[ai]` and the `[[ai_endpoint]]`s (primary, then standby when given).
fn ai_config(ports: Ports, protocol: &str, format: &str, primary: &str, standby: Option<&str>) -> String {
    let mut s = format!(
        "{}{}[ai]\nsetup_budget_ms = {BUDGET_MS}\n\n",
        base_config(ports),
        inbound_carrier("carrier-a", CARRIER_IP)
    );
    let eps = [("primary", Some(primary)), ("standby", standby)];
    for (role, url) in eps {
        if let Some(url) = url {
            s += &format!(
                "[[ai_endpoint]]\nname = \"agent-{role}\"\nrole = \"{role}\"\nprotocol = \"{protocol}\"\n\
                 url = \"{url}\"\naudio_format = \"{format}\"\n\n"
            );
        }
    }
    s
}

fn twilio_config(ports: Ports, primary: &str, standby: Option<&str>) -> String {
    ai_config(ports, "twilio-media-streams", "g711_ulaw", primary, standby)
}

/// A loopback URL nothing listens on (offset 90 of the block is unused by the harness).
fn dead_url(ports: Ports, i: u16) -> String {
    format!("ws://127.0.0.1:{}/media", ports.base + 90 + i)
}

// ---------------------------------------------------------------------------
// A raw SIP caller over UDP
// ---------------------------------------------------------------------------

struct Uac {
    sip: RawSip,
    target: SocketAddr,
    call_id: String,
    from_hdr: String,
    to_hdr: String,
    cseq: u32,
    invited_at: Instant,
}

/// How the INVITE ended.
struct Answer {
    codes: Vec<u16>,
    /// INVITE sent → 200 received.
    setup: Duration,
    /// The appliance's RTP address from the SDP answer.
    rtp: SocketAddr,
}

impl Uac {
    fn call(ports: Ports, peer: u16, rtp: SocketAddr, name: &str) -> Uac {
        let sip = RawSip::bind(CARRIER_IP, ports.peer(peer));
        let target = sip_addr(ports);
        let call_id = format!("{name}-{}@{CARRIER_IP}", ports.base);
        let invite = invite_request("UDP", sip.local, target, &call_id, rtp);
        let invited_at = Instant::now();
        sip.send(target, invite.as_bytes());
        Uac { sip, target, call_id, from_hdr: String::new(), to_hdr: String::new(), cseq: 1, invited_at }
    }

    /// Waits for the final response; panics unless it is a 200 with an SDP answer.
    fn answered(&mut self, timeout: Duration) -> Answer {
        let mut codes = Vec::new();
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(msg) = self.sip.recv(left) else { continue };
            if call_id_of(&msg).as_deref() != Some(self.call_id.as_str()) {
                continue;
            }
            let Some(code) = status_code(&msg) else { continue };
            codes.push(code);
            if code < 200 {
                continue;
            }
            assert_eq!(code, 200, "INVITE failed: {codes:?}\n{msg}");
            let setup = self.invited_at.elapsed();
            self.from_hdr = header(&msg, "From", Some("f")).expect("From");
            self.to_hdr = header(&msg, "To", Some("t")).expect("To");
            let sdp = body_of(&msg);
            let port: u16 = sdp
                .lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no m=audio in the 200 OK:\n{msg}"));
            let ip = sdp
                .lines()
                .find_map(|l| l.strip_prefix("c=IN IP4 "))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| "127.0.0.1".into());
            let rtp = format!("{ip}:{port}").parse().expect("RTP address");
            self.send_in_dialog("ACK", 1);
            return Answer { codes, setup, rtp };
        }
        panic!("no final response to INVITE within {timeout:?}; got {codes:?}");
    }

    fn send_in_dialog(&self, method: &str, cseq: u32) {
        let msg = format!(
            "{method} sip:agent@{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={}\r\n\
             Max-Forwards: 70\r\n\
             From: {}\r\n\
             To: {}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            branch(),
            self.from_hdr,
            self.to_hdr,
            self.call_id,
            to = self.target,
            local = self.sip.local,
        );
        self.sip.send(self.target, msg.as_bytes());
    }

    /// Sends BYE; true when its 200 arrives.
    fn hang_up(&mut self) -> bool {
        self.cseq += 1;
        self.send_in_dialog("BYE", self.cseq);
        let (_, ok) = self.sip.recv_until(Duration::from_secs(3), |m| {
            status_code(m) == Some(200) && header(m, "CSeq", None).is_some_and(|c| c.ends_with("BYE"))
        });
        ok
    }
}

// ---------------------------------------------------------------------------
// The caller's RTP peer: talks on a 20 ms clock (silence by default), records what it hears
// ---------------------------------------------------------------------------

const SILENCE: u8 = 0xFF;
const DTMF_PT: u8 = 101;

enum TxFrame {
    Audio(Vec<u8>),
    /// One RFC 4733 packet of `event`, `duration` samples so far; `end` on the last three.
    Event { event: u8, duration: u16, end: bool, first: bool },
}

/// One packet the peer sent.
#[derive(Clone)]
struct Sent {
    at: Instant,
    payload_type: u8,
    payload: Vec<u8>,
}

struct RtpPeer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<RtpPacket>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    queue: Arc<Mutex<std::collections::VecDeque<TxFrame>>>,
    target: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

const PEER_MAX: Duration = Duration::from_secs(60);

impl RtpPeer {
    fn bind(ip: &str, port: u16) -> RtpPeer {
        let sock = UdpSocket::bind((ip, port)).unwrap_or_else(|e| panic!("bind RTP peer {ip}:{port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut peer = RtpPeer {
            addr,
            received: Arc::default(),
            sent: Arc::default(),
            queue: Arc::default(),
            target: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        let (rx, received, stop) = (sock.try_clone().unwrap(), peer.received.clone(), peer.stop.clone());
        peer.threads.push(thread::spawn(move || {
            let started = Instant::now();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < PEER_MAX {
                if let Ok((len, from)) = rx.recv_from(&mut buf) {
                    if let Some(p) = parse_rtp(&buf[..len], from) {
                        received.lock().unwrap().push(p);
                    }
                }
            }
        }));
        let (sent, queue, target, stop) = (peer.sent.clone(), peer.queue.clone(), peer.target.clone(), peer.stop.clone());
        peer.threads.push(thread::spawn(move || talk(sock, sent, queue, target, stop)));
        peer
    }

    /// Starts sending (silence unless something is queued) to the appliance's RTP address.
    fn start(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = Some(to);
    }

    /// Queues `audio` (μ-law) in 20 ms frames after whatever is queued.
    fn say(&self, audio: &[u8]) {
        let mut q = self.queue.lock().unwrap();
        for c in audio.chunks(160) {
            let mut f = c.to_vec();
            f.resize(160, SILENCE);
            q.push_back(TxFrame::Audio(f));
        }
    }

    /// Queues a key press (RFC 4733) of `frames` x 20 ms.
    fn press(&self, digit: char, frames: u16) {
        let event = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("digit {digit}"),
        };
        let mut q = self.queue.lock().unwrap();
        for i in 0..frames {
            q.push_back(TxFrame::Event { event, duration: (i + 1) * 160, end: false, first: i == 0 });
        }
        for _ in 0..3 {
            q.push_back(TxFrame::Event { event, duration: frames * 160, end: true, first: false });
        }
    }

    /// Waits (bounded) until everything queued has been sent.
    fn drained(&self, max: Duration) -> bool {
        wait_until(max, Duration::from_millis(10), || self.queue.lock().unwrap().is_empty())
    }

    fn received(&self) -> Vec<RtpPacket> {
        self.received.lock().unwrap().clone()
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
}

impl Drop for RtpPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn talk(
    sock: UdpSocket,
    sent: Arc<Mutex<Vec<Sent>>>,
    queue: Arc<Mutex<std::collections::VecDeque<TxFrame>>>,
    target: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < PEER_MAX;
    let to = loop {
        if !alive() {
            return;
        }
        if let Some(t) = *target.lock().unwrap() {
            break t;
        }
        thread::sleep(Duration::from_millis(2));
    };
    let ssrc = 0x5eed_0000 | (std::process::id() & 0xffff);
    let t0 = Instant::now();
    let mut ts: u32 = 0;
    let mut event_ts: Option<u32> = None;
    for i in 0u32.. {
        if !alive() {
            return;
        }
        let frame = queue.lock().unwrap().pop_front().unwrap_or(TxFrame::Audio(vec![SILENCE; 160]));
        let (pt, marker, stamp, payload) = match frame {
            TxFrame::Audio(p) => {
                let was_event = event_ts.take().is_some();
                (0u8, i == 0 || was_event, ts, p)
            }
            TxFrame::Event { event, duration, end, first } => {
                let at = *event_ts.get_or_insert(ts);
                let mut p = vec![event, if end { 0x80 | 10 } else { 10 }];
                p.extend_from_slice(&duration.to_be_bytes());
                (DTMF_PT, first, at, p)
            }
        };
        let mut pkt = Vec::with_capacity(12 + payload.len());
        pkt.extend_from_slice(&[0x80, if marker { 0x80 | pt } else { pt }]);
        pkt.extend_from_slice(&(i as u16).to_be_bytes());
        pkt.extend_from_slice(&stamp.to_be_bytes());
        pkt.extend_from_slice(&ssrc.to_be_bytes());
        pkt.extend_from_slice(&payload);
        if sock.send_to(&pkt, to).is_ok() {
            sent.lock().unwrap().push(Sent { at: Instant::now(), payload_type: pt, payload });
        }
        ts = ts.wrapping_add(160);
        let next = t0 + Duration::from_millis(20) * (i + 1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn caller_speech() -> Vec<u8> {
    std::fs::read(repo_root().join("tests/sipp/caller.ulaw")).expect("tests/sipp/caller.ulaw")
}

// ---------------------------------------------------------------------------
// Signal analysis
// ---------------------------------------------------------------------------

const RATE: f64 = 8000.0;

fn rms(payload: &[u8]) -> f64 {
    let sq: f64 = payload.iter().map(|&b| (ulaw_to_linear(b) as f64).powi(2)).sum();
    (sq / payload.len().max(1) as f64).sqrt()
}

fn voiced(p: &RtpPacket) -> bool {
    p.payload_type == 0 && rms(&p.payload) > VOICED_RMS
}

/// What the peer sent, on a sample timeline from `t0` (packets are paced: the send instant
/// places each one).
fn sent_timeline(sent: &[Sent], t0: Instant, len: usize) -> Vec<f64> {
    let mut x = vec![0.0; len];
    for s in sent.iter().filter(|s| s.payload_type == 0) {
        let start = (s.at.saturating_duration_since(t0).as_secs_f64() * RATE) as usize;
        place(&mut x, start, &s.payload);
    }
    x
}

/// What the peer heard, on a sample timeline from `t0`: the RTP timestamps place packets
/// relative to each other (the appliance's clock), the first packet's arrival anchors them.
fn received_timeline(received: &[RtpPacket], t0: Instant, len: usize) -> Vec<f64> {
    let mut x = vec![0.0; len];
    let audio: Vec<&RtpPacket> = received.iter().filter(|p| p.payload_type == 0).collect();
    let Some(&first) = audio.first() else { return x };
    let anchor = first.at.saturating_duration_since(t0).as_secs_f64() * RATE;
    for p in &audio {
        let offset = p.timestamp.wrapping_sub(first.timestamp) as i32 as f64;
        let start = anchor + offset;
        if start >= 0.0 {
            place(&mut x, start as usize, &p.payload);
        }
    }
    x
}

fn place(x: &mut [f64], start: usize, payload: &[u8]) {
    for (k, &b) in payload.iter().enumerate() {
        if let Some(v) = x.get_mut(start + k) {
            *v = ulaw_to_linear(b) as f64;
        }
    }
}

/// Normalized cross-correlation of `b` against `a` delayed by `lag` samples.
fn ncc(a: &[f64], b: &[f64], lag: usize) -> f64 {
    let n = a.len().min(b.len().saturating_sub(lag));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a[i], b[i + lag]);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Mean |x| per millisecond.
fn envelope(x: &[f64]) -> Vec<f64> {
    x.chunks(8).map(|c| c.iter().map(|v| v.abs()).sum::<f64>() / c.len() as f64).collect()
}

/// The echo's lag: envelopes (1 ms bins) over 0..max_lag_ms, refined on the waveform
/// around it. Returns (lag ms, envelope correlation, waveform correlation).
fn echo_lag(sent: &[f64], heard: &[f64], max_lag_ms: usize) -> (f64, f64, f64) {
    let (es, eh) = (envelope(sent), envelope(heard));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (ms, mh) = (mean(&es), mean(&eh));
    let es: Vec<f64> = es.iter().map(|v| v - ms).collect();
    let eh: Vec<f64> = eh.iter().map(|v| v - mh).collect();
    let (mut best, mut best_c) = (0usize, f64::MIN);
    for lag in 0..max_lag_ms {
        let c = ncc(&es, &eh, lag);
        if c > best_c {
            best_c = c;
            best = lag;
        }
    }
    let centre = best * 8;
    let (mut fine, mut fine_c) = (centre, f64::MIN);
    for lag in centre.saturating_sub(24)..=centre + 24 {
        let c = ncc(sent, heard, lag);
        if c > fine_c {
            fine_c = c;
            fine = lag;
        }
    }
    (fine as f64 / 8.0, best_c, fine_c)
}

fn status_latency(app: &Appliance, name: &str) -> serde_json::Value {
    app.status_json()["latency"][name].clone()
}

fn print_latencies(app: &Appliance, prefix: &str, names: &[&str]) {
    let status = app.status_json();
    for name in names {
        let h = &status["latency"][name];
        figure(&format!("{prefix}{name}_count"), &h["count"]);
        figure(&format!("{prefix}{name}_p50_ms"), &h["p50_ms"]);
        figure(&format!("{prefix}{name}_p99_ms"), &h["p99_ms"]);
    }
}

fn assert_no_active_calls(app: &Appliance) {
    let idle = wait_until(Duration::from_secs(3), Duration::from_millis(100), || app.calls_counter("active") == 0);
    assert!(idle, "calls.active did not return to 0: {}", app.status_json());
}

// ---------------------------------------------------------------------------
// 1. Echo both ways
// ---------------------------------------------------------------------------

/// Places a call to an echo agent, talks caller.ulaw once, and cross-correlates what comes
/// back with what was said.
fn echo_round_trip(ports: Ports, protocol: SimProtocol, config_protocol: &str, format: &str, label: &str) {
    let _serial = serial();
    let mut sims = Sims::new();
    let a = sims.start(protocol, SimMode::Echo, &[]);
    let mut app = Appliance::start(&ai_config(ports, config_protocol, format, &sims.url(a), None));
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, label);
    let answer = uac.answered(Duration::from_secs(5));
    assert!(answer.codes.starts_with(&[100, 180]), "expected 100, 180 before 200: {:?}", answer.codes);
    assert!(answer.setup < Duration::from_millis(BUDGET_MS), "answered after {:?}", answer.setup);

    let speech = caller_speech();
    let t0 = Instant::now();
    peer.start(answer.rtp);
    peer.say(&speech);
    assert!(peer.drained(Duration::from_secs(6)), "the peer did not finish talking");
    // the echo: 200 ms behind, plus buffering
    thread::sleep(Duration::from_millis(1200));
    assert!(uac.hang_up(), "no 200 to BYE");
    assert_no_active_calls(&app);

    let received = peer.received();
    let voiced_heard = received.iter().filter(|p| voiced(p)).count();
    assert!(voiced_heard > 60, "heard only {voiced_heard} voiced packets of echo ({} packets)", received.len());
    assert!(received.iter().all(|p| p.from == answer.rtp), "RTP not from the SDP answer's address");
    let len = (t0.elapsed().as_secs_f64() * RATE) as usize + 8000;
    let (said, heard) = (sent_timeline(&peer.sent(), t0, len), received_timeline(&received, t0, len));
    let (lag_ms, env_c, wave_c) = echo_lag(&said, &heard, 1500);
    figure(&format!("{label}_echo_lag_ms"), format!("{lag_ms:.1}"));
    figure(&format!("{label}_echo_envelope_correlation"), format!("{env_c:.3}"));
    figure(&format!("{label}_echo_waveform_correlation"), format!("{wave_c:.3}"));
    assert!(env_c > 0.8, "echo envelope does not match the caller's speech (r = {env_c:.3}, lag {lag_ms} ms)");
    assert!(wave_c > 0.5, "echo waveform does not match the caller's speech (r = {wave_c:.3}, lag {lag_ms} ms)");
    assert!((200.0..1000.0).contains(&lag_ms), "echo lag {lag_ms} ms (sim echo delay 200 ms)");

    let seen = sims.stats(a);
    assert_eq!(seen.starts, 1, "{seen:?}");
    assert!(seen.media_in > 100, "agent got {} caller frames", seen.media_in);
    assert!(seen.media_out > 100, "agent sent {} frames", seen.media_out);
    print_latencies(&app, &format!("{label}_"), &["rtp_to_ai", "ai_to_rtp", "ai_first_audio", "call_setup"]);
    app.assert_alive();
}

#[test]
fn twilio_echo_comes_back_to_the_caller() {
    echo_round_trip(Ports::new(29000), SimProtocol::TwilioMediaStreams, "twilio-media-streams", "g711_ulaw", "twilio");
}

#[test]
fn openai_ulaw_echo_comes_back_to_the_caller() {
    echo_round_trip(Ports::new(29200), SimProtocol::OpenAiRealtime, "openai-realtime", "g711_ulaw", "openai_ulaw");
}

#[test]
fn openai_pcm16_echo_comes_back_to_the_caller() {
    echo_round_trip(Ports::new(29400), SimProtocol::OpenAiRealtime, "openai-realtime", "pcm16", "openai_pcm16");
}

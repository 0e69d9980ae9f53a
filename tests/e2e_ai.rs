//! End-to-end AI bridge tests against the real `trunkguard` binary: a carrier (raw SIP over
//! UDP, or SIPp) calls in, a test-owned RTP peer talks and listens, and in-process agent
//! simulators (`trunkguard-agent-sim`, written from the protocols' documents, independent of
//! the appliance) play the AI agents: echo both ways (cross-correlated), DTMF to the agent,
//! barge-in `clear`, barge-in over seconds of bursted agent audio (Twilio `clear`, OpenAI
//! `speech_started`), setup failover to the standby inside the budget,
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
use trunkguard_agent_sim::{
    AudioMode, Fault, SimConfig, SimHandle, SimMode, SimProtocol, SimServer,
};

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
        self.start_with(protocol, mode, faults, AudioMode::Paced)
    }

    /// [`Sims::start`] with an `--audio` mode.
    fn start_with(
        &mut self,
        protocol: SimProtocol,
        mode: SimMode,
        faults: &[&str],
        audio: AudioMode,
    ) -> usize {
        let mut cfg = SimConfig::new("127.0.0.1:0".parse().unwrap(), protocol);
        cfg.mode = mode;
        cfg.faults = faults.iter().map(|f| f.parse::<Fault>().expect("fault")).collect();
        cfg.audio = audio;
        let rt = self.rt.as_ref().unwrap();
        let _guard = rt.enter();
        let server = rt.block_on(SimServer::bind(cfg)).expect("bind agent-sim");
        self.handles.push(server.spawn().expect("spawn agent-sim"));
        self.handles.len() - 1
    }

    fn url(&self, i: usize) -> String {
        format!("ws://{}/media", self.handles[i].addr)
    }

    fn stats(&self, i: usize) -> trunkguard_agent_sim::SimCounters {
        self.handles[i].stats.snapshot()
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            for h in self.handles.drain(..) {
                let _ = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(3), h.shutdown()).await
                });
            }
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// `[ai]` and the `[[ai_endpoint]]`s (primary, then standby when given).
fn ai_config(
    ports: Ports,
    protocol: &str,
    format: &str,
    primary: &str,
    standby: Option<&str>,
) -> String {
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
        Uac {
            sip,
            target,
            call_id,
            from_hdr: String::new(),
            to_hdr: String::new(),
            cseq: 1,
            invited_at,
        }
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
            status_code(m) == Some(200)
                && header(m, "CSeq", None).is_some_and(|c| c.ends_with("BYE"))
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
    Event {
        event: u8,
        duration: u16,
        end: bool,
        first: bool,
    },
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
        let sock = UdpSocket::bind((ip, port))
            .unwrap_or_else(|e| panic!("bind RTP peer {ip}:{port}: {e}"));
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
        let (rx, received, stop) =
            (sock.try_clone().unwrap(), peer.received.clone(), peer.stop.clone());
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
        let (sent, queue, target, stop) =
            (peer.sent.clone(), peer.queue.clone(), peer.target.clone(), peer.stop.clone());
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
            q.push_back(TxFrame::Event {
                event,
                duration: (i + 1) * 160,
                end: false,
                first: i == 0,
            });
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
            // the packet's slot on the sender's clock (what its RTP timestamp says)
            let at = t0 + Duration::from_millis(20) * i;
            sent.lock().unwrap().push(Sent { at, payload_type: pt, payload });
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

/// What the peer sent, on a sample timeline from `t0` (each packet at its slot on the
/// sender's 20 ms clock).
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

/// The echo talk spurt by talk spurt: the box's playout cushion may start each spurt a few
/// frames earlier or later than the last (it adapts between spurts, never inside one), so the
/// waveform is compared per voiced stretch of what was heard (quiet gaps of 200 ms or more
/// split them), each at its own best lag within ±30 ms of `lag` (samples). Returns the
/// energy-weighted mean correlation and each stretch's lag in ms.
fn spurt_correlation(sent: &[f64], heard: &[f64], lag: usize) -> (f64, Vec<f64>) {
    const WIN: usize = 160;
    let loud: Vec<bool> = heard
        .chunks(WIN)
        .map(|w| w.iter().map(|v| v.abs()).sum::<f64>() / w.len() as f64 > 300.0)
        .collect();
    let mut stretches = Vec::new();
    let (mut start, mut quiet) = (None, 0usize);
    for (i, &l) in loud.iter().enumerate() {
        match (l, start) {
            (true, None) => (start, quiet) = (Some(i), 0),
            (true, Some(_)) => quiet = 0,
            (false, Some(s)) => {
                quiet += 1;
                if quiet >= 10 {
                    stretches.push((s, i + 1 - quiet));
                    start = None;
                }
            }
            (false, None) => {}
        }
    }
    if let Some(s) = start {
        stretches.push((s, loud.len() - quiet));
    }
    let (mut weighted, mut energy, mut lags) = (0.0, 0.0, Vec::new());
    for (a, b) in stretches.into_iter().filter(|(a, b)| b - a >= 20) {
        let (a, b) = (a * WIN, (b * WIN).min(heard.len()));
        let seg = &heard[a..b];
        let (mut best, mut best_c) = (lag, f64::MIN);
        for l in lag.saturating_sub(240)..=lag + 240 {
            if l > a {
                continue;
            }
            let c = ncc(&sent[a - l..b - l], seg, 0);
            if c > best_c {
                (best, best_c) = (l, c);
            }
        }
        let e: f64 = seg.iter().map(|v| v * v).sum();
        weighted += best_c * e;
        energy += e;
        lags.push(best as f64 / 8.0);
    }
    (if energy > 0.0 { weighted / energy } else { 0.0 }, lags)
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
        // p50/p99 are bucket upper bounds (clamped to the max): mean and max add resolution
        figure(&format!("{prefix}{name}_mean_ms"), &h["mean_ms"]);
        figure(&format!("{prefix}{name}_max_ms"), &h["max_ms"]);
    }
}

fn assert_no_active_calls(app: &Appliance) {
    let idle = wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        app.calls_counter("active") == 0
    });
    assert!(idle, "calls.active did not return to 0: {}", app.status_json());
}

// ---------------------------------------------------------------------------
// 1. Echo both ways
// ---------------------------------------------------------------------------

/// Places a call to an echo agent, talks caller.ulaw once, and cross-correlates what comes
/// back with what was said.
fn echo_round_trip(
    ports: Ports,
    protocol: SimProtocol,
    config_protocol: &str,
    format: &str,
    label: &str,
) {
    let _serial = serial();
    let mut sims = Sims::new();
    let a = sims.start(protocol, SimMode::Echo, &[]);
    let mut app = Appliance::start(&ai_config(ports, config_protocol, format, &sims.url(a), None));
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, label);
    let answer = uac.answered(Duration::from_secs(5));
    assert!(
        answer.codes.starts_with(&[100, 180]),
        "expected 100, 180 before 200: {:?}",
        answer.codes
    );
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
    assert!(
        voiced_heard > 60,
        "heard only {voiced_heard} voiced packets of echo ({} packets)",
        received.len()
    );
    assert!(received.iter().all(|p| p.from == answer.rtp), "RTP not from the SDP answer's address");
    let len = (t0.elapsed().as_secs_f64() * RATE) as usize + 8000;
    let (said, heard) =
        (sent_timeline(&peer.sent(), t0, len), received_timeline(&received, t0, len));
    let (lag_ms, env_c, wave_c) = echo_lag(&said, &heard, 1500);
    figure(&format!("{label}_echo_lag_ms"), format!("{lag_ms:.1}"));
    figure(&format!("{label}_echo_envelope_correlation"), format!("{env_c:.3}"));
    figure(&format!("{label}_echo_waveform_correlation"), format!("{wave_c:.3}"));
    // the lag over each third of the speech (a drifting lag would show here)
    let first_sent = peer
        .sent()
        .first()
        .map_or(0, |p| (p.at.saturating_duration_since(t0).as_secs_f64() * RATE) as usize);
    let third = speech.len() / 3;
    let segments: Vec<String> = (0..3)
        .map(|k| {
            let (a, b) = (first_sent + k * third, first_sent + (k + 1) * third);
            let (seg_lag, _, seg_c) = echo_lag(&said[a..b], &heard[a..], 1500);
            format!("{seg_lag:.1}@r={seg_c:.2}")
        })
        .collect();
    figure(&format!("{label}_echo_lag_by_third_ms"), segments.join(" "));
    let (spurt_c, spurt_lags) = spurt_correlation(&said, &heard, (lag_ms * 8.0) as usize);
    let lags: Vec<String> = spurt_lags.iter().map(|l| format!("{l:.1}")).collect();
    figure(&format!("{label}_echo_spurt_waveform_correlation"), format!("{spurt_c:.3}"));
    figure(&format!("{label}_echo_spurt_lags_ms"), lags.join(" "));
    assert!(
        env_c > 0.7,
        "echo envelope does not match the caller's speech (r = {env_c:.3}, lag {lag_ms} ms)"
    );
    assert!(
        spurt_c > 0.9 && !spurt_lags.is_empty(),
        "echo waveform does not match the caller's speech spurt by spurt (r = {spurt_c:.3}, \
         whole-call r = {wave_c:.3}, lags {lags:?} ms)"
    );
    assert!((200.0..1000.0).contains(&lag_ms), "echo lag {lag_ms} ms (sim echo delay 200 ms)");
    assert!(
        spurt_lags.iter().all(|l| (200.0..1000.0).contains(l)),
        "echo lags {lags:?} ms (sim echo delay 200 ms)"
    );

    let seen = sims.stats(a);
    assert_eq!(seen.starts, 1, "{seen:?}");
    assert!(seen.media_in > 100, "agent got {} caller frames", seen.media_in);
    assert!(seen.media_out > 100, "agent sent {} frames", seen.media_out);
    print_latencies(
        &app,
        &format!("{label}_"),
        &["rtp_to_ai", "ai_to_rtp", "ai_first_audio", "call_setup"],
    );
    app.assert_alive();
}

#[test]
fn twilio_echo_comes_back_to_the_caller() {
    echo_round_trip(
        Ports::new(29000),
        SimProtocol::TwilioMediaStreams,
        "twilio-media-streams",
        "g711_ulaw",
        "twilio",
    );
}

#[test]
fn openai_ulaw_echo_comes_back_to_the_caller() {
    echo_round_trip(
        Ports::new(29200),
        SimProtocol::OpenAiRealtime,
        "openai-realtime",
        "g711_ulaw",
        "openai_ulaw",
    );
}

#[test]
fn openai_pcm16_echo_comes_back_to_the_caller() {
    echo_round_trip(
        Ports::new(29400),
        SimProtocol::OpenAiRealtime,
        "openai-realtime",
        "pcm16",
        "openai_pcm16",
    );
}

// ---------------------------------------------------------------------------
// 2. DTMF reaches the agent
// ---------------------------------------------------------------------------

#[test]
fn dtmf_from_the_caller_reaches_the_agent() {
    let _serial = serial();
    let ports = Ports::new(29600);
    let mut sims = Sims::new();
    let a = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &[]);
    let mut app = Appliance::start(&twilio_config(ports, &sims.url(a), None));
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, "dtmf");
    let answer = uac.answered(Duration::from_secs(5));
    peer.start(answer.rtp);
    thread::sleep(Duration::from_millis(200));
    let pressed = Instant::now();
    peer.press('5', 5);
    peer.say(&[SILENCE; 160 * 10]);
    peer.press('#', 5);
    assert!(peer.drained(Duration::from_secs(3)));
    let got = wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
        sims.stats(a).dtmf.len() >= 2
    });
    let seen = sims.stats(a);
    assert!(got, "agent saw digits {:?}", seen.dtmf);
    assert_eq!(seen.dtmf, vec!['5', '#']);
    // the sim answers each digit with a 200 ms beep: the caller hears it
    thread::sleep(Duration::from_millis(600));
    let beeps = peer.received().iter().filter(|p| p.at > pressed && voiced(p)).count();
    figure("dtmf_beep_packets_heard", beeps);
    assert!(
        beeps >= 10,
        "heard {beeps} voiced packets after the key presses (two 200 ms beeps expected)"
    );
    assert!(uac.hang_up(), "no 200 to BYE");
    assert_no_active_calls(&app);
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// 3. Barge-in: the agent's `clear` flushes playout
// ---------------------------------------------------------------------------

#[test]
fn agent_clear_on_barge_in_stops_the_greeting_at_once() {
    let _serial = serial();
    let ports = Ports::new(29800);
    let mut sims = Sims::new();
    let a = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Prompt, &[]);
    let mut app = Appliance::start(&twilio_config(ports, &sims.url(a), None));
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, "clear");
    let answer = uac.answered(Duration::from_secs(5));
    peer.start(answer.rtp);
    let greeting = wait_until(Duration::from_secs(3), Duration::from_millis(5), || {
        peer.received().iter().filter(|p| voiced(p)).count() >= 40
    });
    assert!(greeting, "no greeting from the agent ({} packets)", peer.received().len());

    // the caller talks over the greeting
    let talk = Instant::now();
    peer.say(&caller_speech());
    let mut cleared_at = None;
    let deadline = talk + Duration::from_secs(3);
    while Instant::now() < deadline {
        if sims.stats(a).clears_sent >= 1 {
            cleared_at = Some(Instant::now());
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let cleared_at =
        cleared_at.expect("the agent sent no clear while the caller talked over the greeting");
    thread::sleep(Duration::from_millis(600));
    let received = peer.received();

    // the greeting's last packet: the end of the run of voiced packets that was playing at the
    // clear (comfort noise goes on around it: the stream never stops)
    let playing: Vec<&RtpPacket> = received.iter().filter(|p| p.at >= talk && voiced(p)).collect();
    let mut last =
        playing.first().map(|p| p.at).expect("greeting stopped before the caller talked");
    for p in &playing {
        if p.at.saturating_duration_since(last) > Duration::from_millis(80) {
            break;
        }
        last = p.at;
    }
    let stop_after_clear_ms = last.saturating_duration_since(cleared_at).as_secs_f64() * 1000.0
        - cleared_at.saturating_duration_since(last).as_secs_f64() * 1000.0;
    let silent_until = received.iter().find(|p| p.at > last && voiced(p)).map(|p| p.at);
    let silence_ms =
        silent_until.map_or(f64::INFINITY, |t| t.duration_since(last).as_secs_f64() * 1000.0);
    figure("clear_to_last_greeting_packet_ms", format!("{stop_after_clear_ms:.1}"));
    figure("clear_talk_to_clear_ms", cleared_at.duration_since(talk).as_millis());
    figure("clear_silence_after_ms", format!("{silence_ms:.0}"));
    assert!(
        stop_after_clear_ms < 200.0,
        "greeting went on {stop_after_clear_ms:.0} ms after the clear"
    );
    assert!(silence_ms >= 150.0, "audio resumed {silence_ms:.0} ms after the greeting stopped");
    assert!(uac.hang_up(), "no 200 to BYE");
    app.assert_alive();
}

/// The box holds seconds of agent audio (the agent sent its 4.2 s greeting in one burst) when
/// the caller talks over it and the agent signals the barge-in (Twilio `clear`, OpenAI
/// `input_audio_buffer.speech_started`): what the caller hears of the greeting stops within
/// two 20 ms frames of that message, and once the caller stops, the agent's next turn (the
/// greeting again, in a new burst) is heard: playout works after the flush.
fn barge_in_over_a_burst(ports: Ports, protocol: SimProtocol, config_protocol: &str, label: &str) {
    let _serial = serial();
    let mut sims = Sims::new();
    let burst = AudioMode::Burst(Duration::from_secs(5));
    let a = sims.start_with(protocol, SimMode::Prompt, &[], burst);
    let config = ai_config(ports, config_protocol, "g711_ulaw", &sims.url(a), None);
    let mut app = Appliance::start(&config);
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, label);
    let answer = uac.answered(Duration::from_secs(5));
    peer.start(answer.rtp);
    // half a second of the greeting heard: the box still holds the rest of the burst
    let greeting = wait_until(Duration::from_secs(4), Duration::from_millis(5), || {
        peer.received().iter().filter(|p| voiced(p)).count() >= 25
    });
    assert!(greeting, "no greeting from the agent ({} packets)", peer.received().len());

    // the caller talks over it: 1.5 s of a steady tone (no pause: the agent waits for its end)
    let tone: Vec<i16> =
        (0..12_000).map(|i| (8000.0 * (i as f64 * 2.0 * 0.0549778).sin()) as i16).collect();
    let mut codes = Vec::new();
    Law::Ulaw.encode_into(&tone, &mut codes);
    peer.say(&codes);
    let barged = wait_until(Duration::from_secs(3), Duration::from_millis(5), || {
        !sims.stats(a).barge_ins.is_empty()
    });
    assert!(barged, "the agent signalled no barge-in: {:?}", sims.stats(a));
    let barge = sims.stats(a).barge_ins[0];
    // the tone ends about 1.5 s after the barge-in; the agent speaks again 300 ms later
    let heard_again = wait_until(Duration::from_secs(4), Duration::from_millis(10), || {
        let resumed = barge.at + Duration::from_millis(1000);
        peer.received().iter().filter(|p| p.at > resumed && voiced(p)).count() >= 10
    });
    let received = peer.received();
    assert!(uac.hang_up(), "no 200 to BYE");

    // before the agent may speak again (300 ms of caller silence at the earliest)
    let window = barge.at + Duration::from_millis(250);
    let greeting_after: Vec<f64> = received
        .iter()
        .filter(|p| p.at >= barge.at && p.at <= window && voiced(p))
        .map(|p| p.at.duration_since(barge.at).as_secs_f64() * 1000.0)
        .collect();
    let last_ms = greeting_after.iter().copied().fold(0.0, f64::max);
    let resumed_ms = received
        .iter()
        .find(|p| p.at > window && voiced(p))
        .map_or(f64::INFINITY, |p| p.at.duration_since(barge.at).as_secs_f64() * 1000.0);
    figure(&format!("{label}_barge_in_queued_agent_audio_ms"), barge.ahead.as_millis());
    figure(&format!("{label}_barge_in_greeting_frames_after"), greeting_after.len());
    figure(&format!("{label}_barge_in_last_greeting_frame_after_ms"), format!("{last_ms:.1}"));
    figure(&format!("{label}_barge_in_next_turn_heard_after_ms"), format!("{resumed_ms:.0}"));
    assert!(
        barge.ahead >= Duration::from_secs(2),
        "the box held only {:?} of agent audio at the barge-in",
        barge.ahead
    );
    assert!(
        greeting_after.len() <= 2,
        "{} frames of the greeting after the barge-in, the last {last_ms:.0} ms after",
        greeting_after.len()
    );
    assert!(heard_again, "the agent's next turn was not heard after the flush");
    app.assert_alive();
}

#[test]
fn twilio_clear_flushes_seconds_of_queued_agent_audio_within_two_frames() {
    barge_in_over_a_burst(
        Ports::new(38200),
        SimProtocol::TwilioMediaStreams,
        "twilio-media-streams",
        "twilio",
    );
}

#[test]
fn openai_speech_started_flushes_seconds_of_queued_agent_audio_within_two_frames() {
    barge_in_over_a_burst(
        Ports::new(38400),
        SimProtocol::OpenAiRealtime,
        "openai-realtime",
        "openai",
    );
}

// ---------------------------------------------------------------------------
// 4 + 7. Primary refusing at setup: the standby answers within the budget; the breaker opens
// ---------------------------------------------------------------------------

/// `scenario_file` from the carrier, its SDP naming a test-owned sink (talking back or
/// silent); panics unless sipp exits 0.
fn sipp_call(ports: Ports, scenario_file: &str, talking: bool) -> (Sipp, RtpSink) {
    let sink = if talking {
        RtpSink::bind_talking(CARRIER_IP, ports.audio(1))
    } else {
        RtpSink::bind(CARRIER_IP, ports.audio(1))
    };
    let (target, peer, media, audio) = (
        sip_addr(ports).to_string(),
        ports.peer(1).to_string(),
        ports.sipp_media(0).to_string(),
        ports.audio(1).to_string(),
    );
    let mut sipp = Sipp::spawn(
        scenario_file,
        ports.sipp_control(0),
        &[
            "-sf",
            &scenario(scenario_file),
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
    let ok = sipp.wait_success(Duration::from_secs(25));
    assert!(ok, "{scenario_file} failed (sipp diagnostics below)");
    (sipp, sink)
}

#[test]
fn primary_answering_503_gives_the_call_to_the_standby_within_the_budget() {
    let _serial = serial();
    let ports = Ports::new(30000);
    let mut sims = Sims::new();
    let p = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &["http503"]);
    let s = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Prompt, &[]);
    let mut app = Appliance::start(&twilio_config(ports, &sims.url(p), Some(&sims.url(s))));
    let (sipp, sink) = sipp_call(ports, "uac_pcmu.xml", false);
    assert_eq!(sipp.errors().trim(), "", "unexpected messages at the caller");
    let setup = status_latency(&app, "call_setup");
    let setup_ms = setup["max_ms"].as_f64().expect("call_setup.max_ms");
    figure("setup_503_invite_to_200_ms", format!("{setup_ms:.1}"));
    assert_eq!(setup["count"], 1);
    assert!(setup_ms < BUDGET_MS as f64, "INVITE -> 200 took {setup_ms} ms");
    let (primary, standby) = (sims.stats(p), sims.stats(s));
    assert!(primary.rejected >= 1, "primary never refused: {primary:?}");
    assert_eq!(primary.starts, 0, "{primary:?}");
    assert_eq!(standby.starts, 1, "{standby:?}");
    // the standby (prompt mode) greeted the caller for the 2.4 s the call lasted
    sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(3));
    let heard = sink.speech();
    assert!(
        heard.voiced_packets > 30,
        "the standby's greeting did not reach the caller: {heard:?}"
    );
    assert_eq!(app.status_json()["ai_fallbacks"], 0);
    assert_no_active_calls(&app);
    app.assert_alive();
}

#[test]
fn primary_refusing_gives_calls_to_the_standby_and_opens_its_breaker() {
    let _serial = serial();
    let ports = Ports::new(30200);
    let mut sims = Sims::new();
    let p = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &["refuse"]);
    let s = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &[]);
    let mut app = Appliance::start(&twilio_config(ports, &sims.url(p), Some(&sims.url(s))));
    let breaker = |app: &Appliance| {
        let status = app.status_json();
        let eps = status["ai_endpoints"].as_array().cloned().unwrap_or_default();
        eps.iter()
            .find(|e| e["role"] == "primary")
            .map(|e| e["breaker"].as_str().unwrap_or("?").to_string())
            .unwrap_or_else(|| panic!("no primary in ai_endpoints: {status}"))
    };
    assert_eq!(breaker(&app), "closed");
    let mut setups = Vec::new();
    for i in 0..5u16 {
        let peer = RtpPeer::bind(CARRIER_IP, ports.audio(i));
        let mut uac = Uac::call(ports, i, peer.addr, &format!("refuse{i}"));
        let answer = uac.answered(Duration::from_secs(5));
        setups.push(answer.setup.as_secs_f64() * 1000.0);
        assert!(
            answer.setup < Duration::from_millis(BUDGET_MS),
            "call {i} answered after {:?}",
            answer.setup
        );
        if i == 0 {
            wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
                sims.stats(s).starts >= 1
            });
            let standby = sims.stats(s);
            assert_eq!(standby.starts, 1, "{standby:?}");
            assert_eq!(sims.stats(p).starts, 0);
        }
        assert!(uac.hang_up(), "no 200 to BYE of call {i}");
    }
    figure("setup_refuse_invite_to_200_ms", format!("{setups:.1?}"));
    wait_until(Duration::from_secs(2), Duration::from_millis(10), || sims.stats(s).starts >= 5);
    assert_eq!(sims.stats(s).starts, 5, "{:?}", sims.stats(s));
    assert!(sims.stats(p).rejected >= 5, "{:?}", sims.stats(p));
    // /status is a snapshot refreshed a few times a second
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || breaker(&app) == "open");
    assert_eq!(breaker(&app), "open", "{}", app.status_json());
    assert_eq!(app.status_json()["ai_fallbacks"], 0);
    assert_no_active_calls(&app);
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// 5. Primary lost mid-call: filler at once, then the standby, the call goes on
// ---------------------------------------------------------------------------

#[test]
fn primary_closing_mid_call_plays_the_filler_then_the_standby_takes_over() {
    let figures =
        mid_call_failover(Ports::new(30400), SimProtocol::TwilioMediaStreams, "close-after:2", "");
    assert!(figures.detection_ms < 500.0, "filler {:.0} ms after the close", figures.detection_ms);
}

#[test]
fn primary_stalling_mid_call_plays_the_filler_then_the_standby_takes_over() {
    // stall_timeout_ms 500 (the default): detection is bounded by it plus a few frames
    let figures = mid_call_failover(
        Ports::new(30800),
        SimProtocol::TwilioMediaStreams,
        "stall-after:2",
        "stall_timeout_ms = 500\n",
    );
    assert!(
        (400.0..1000.0).contains(&figures.detection_ms),
        "filler {:.0} ms after the stall (stall_timeout_ms 500)",
        figures.detection_ms
    );
}

#[test]
fn openai_primary_closing_mid_call_fails_over_to_the_openai_standby() {
    let figures =
        mid_call_failover(Ports::new(31000), SimProtocol::OpenAiRealtime, "close-after:2", "");
    assert!(figures.detection_ms < 500.0, "filler {:.0} ms after the close", figures.detection_ms);
}

struct FailoverFigures {
    detection_ms: f64,
}

/// A call to a Twilio echo primary with `fault`, and a healthy echo standby: the caller talks
/// throughout; the filler covers the failover; the standby resumes; the call survives.
fn mid_call_failover(
    ports: Ports,
    protocol: SimProtocol,
    fault: &str,
    ai_extra: &str,
) -> FailoverFigures {
    let _serial = serial();
    let twilio = protocol == SimProtocol::TwilioMediaStreams;
    let label = match (twilio, fault.starts_with("stall")) {
        (true, true) => "failover_stall",
        (true, false) => "failover_close",
        (false, _) => "failover_openai_close",
    };
    let mut sims = Sims::new();
    let p = sims.start(protocol, SimMode::Echo, &[fault]);
    let s = sims.start(protocol, SimMode::Echo, &[]);
    let config_protocol = if twilio { "twilio-media-streams" } else { "openai-realtime" };
    let config = ai_config(ports, config_protocol, "g711_ulaw", &sims.url(p), Some(&sims.url(s)))
        .replace("[ai]\n", &format!("[ai]\n{ai_extra}"));
    let mut app = Appliance::start(&config);
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, "failover");
    let answer = uac.answered(Duration::from_secs(5));
    peer.start(answer.rtp);
    let speech = caller_speech();
    for _ in 0..3 {
        peer.say(&speech);
    }
    // the primary fails 2 s after its upgrade: timestamp it
    let mut dropped_at = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let seen = sims.stats(p);
        if seen.fault_closes + seen.fault_stalls >= 1 {
            dropped_at = Some(Instant::now());
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let dropped_at = dropped_at.expect("the primary did not fail");
    thread::sleep(Duration::from_millis(2500));
    assert!(uac.hang_up(), "the call did not survive the failover (no 200 to BYE)");
    assert_no_active_calls(&app);

    let filler_frames: HashSet<Vec<u8>> = {
        let filler = Prompt::one_moment().expect("filler prompt");
        let mut codes = Vec::new();
        Law::Ulaw.encode_into(filler.samples(), &mut codes);
        codes.chunks(160).filter(|c| c.len() == 160).map(<[u8]>::to_vec).collect()
    };
    let received = peer.received();
    let is_filler = |p: &RtpPacket| filler_frames.contains(&p.payload) && voiced(p);
    let first_filler = received.iter().find(|p| is_filler(p)).unwrap_or_else(|| {
        panic!("the caller never heard the filler ({} packets)", received.len())
    });
    let filler_packets = received.iter().filter(|p| is_filler(p)).count();
    let last_primary = received
        .iter()
        .rfind(|p| p.at < first_filler.at && voiced(p) && !is_filler(p))
        .expect("no echo from the primary before the filler");
    let first_standby = received
        .iter()
        .find(|p| p.at > first_filler.at && voiced(p) && !is_filler(p))
        .expect("no echo from the standby after the filler");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // signed: the test notices the close by polling the sim's counters (every 2 ms)
    let detection = ms(first_filler.at.saturating_duration_since(dropped_at))
        - ms(dropped_at.saturating_duration_since(first_filler.at));
    let gap = ms(first_standby.at.duration_since(last_primary.at));
    figure(&format!("{label}_detection_ms"), format!("{detection:.1}"));
    figure(&format!("{label}_audio_gap_ms"), format!("{gap:.1}"));
    figure(&format!("{label}_filler_packets_heard"), filler_packets);
    figure(
        &format!("{label}_filler_to_standby_audio_ms"),
        format!("{:.1}", ms(first_standby.at.duration_since(first_filler.at))),
    );
    assert!(first_filler.at + Duration::from_millis(50) >= dropped_at, "filler before the drop?");
    let standby_voiced =
        received.iter().filter(|p| p.at > first_standby.at && voiced(p) && !is_filler(p)).count();
    assert!(standby_voiced > 50, "only {standby_voiced} voiced packets of standby echo");

    let (primary, standby) = (sims.stats(p), sims.stats(s));
    assert_eq!(primary.starts, 1, "{primary:?}");
    assert_eq!(standby.starts, 1, "{standby:?}");
    if twilio {
        assert_eq!(standby.resumed, 1, "the standby's start did not say resumed: {standby:?}");
    }
    let status = app.status_json();
    assert_eq!(status["ai_failovers"], 1, "{status}");
    assert_eq!(status["latency"]["failover_gap"]["count"], 1, "{status}");
    figure(&format!("{label}_gap_status_p50_ms"), &status["latency"]["failover_gap"]["p50_ms"]);
    figure(&format!("{label}_gap_status_max_ms"), &status["latency"]["failover_gap"]["max_ms"]);
    app.assert_alive();
    FailoverFigures { detection_ms: detection }
}

// ---------------------------------------------------------------------------
// 6. Both agents down: the canned prompt, then BYE
// ---------------------------------------------------------------------------

#[test]
fn both_agents_down_the_caller_hears_the_canned_prompt_and_the_appliance_hangs_up() {
    let _serial = serial();
    let ports = Ports::new(30600);
    let mut sims = Sims::new();
    let p = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &["refuse"]);
    // the ladder without its menu: the canned prompt, goodbye, BYE (docs/fallback.md)
    let config = format!(
        "{}[fallback]\nmenu = false\nno_answer = \"hangup\"\n\n",
        twilio_config(ports, &sims.url(p), Some(&dead_url(ports, 0)))
    );
    let mut app = Appliance::start(&config);
    let (sipp, sink) = sipp_call(ports, "uac_wait_bye.xml", true);
    assert!(sipp.received_requests("BYE") >= 1, "no BYE from the appliance:\n{}", sipp.messages());
    sink.wait_quiet(Duration::from_millis(400), Duration::from_secs(3));
    let heard = sink.speech();
    heard.assert_speech(100);
    let secs = heard.packets as f64 * 0.02;
    figure("fallback_prompt_heard_s", format!("{secs:.2}"));
    // high-demand (~4.2 s) then goodbye (~2.7 s)
    assert!((6.0..=8.0).contains(&secs), "canned prompt and goodbye lasted {secs:.2} s");
    let setup = status_latency(&app, "call_setup");
    let setup_ms = setup["max_ms"].as_f64().expect("call_setup.max_ms");
    figure("fallback_invite_to_200_ms", format!("{setup_ms:.1}"));
    assert!(
        setup_ms <= BUDGET_MS as f64 + 50.0,
        "answered after {setup_ms} ms (budget {BUDGET_MS})"
    );
    assert!(sims.stats(p).rejected >= 1);
    let status = app.status_json();
    assert_eq!(status["ai_fallbacks"], 1, "{status}");
    assert_no_active_calls(&app);
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// 8. The caller-bound stream never stops: barge-ins, pauses, a mute agent
// ---------------------------------------------------------------------------

/// Inter-arrival figures of the packets heard in `[from, to]`: (packets, packets/s, gaps over
/// 40 ms, longest gap, sequence holes, timestamp steps other than one frame).
fn stream_figures(
    received: &[RtpPacket],
    from: Instant,
    to: Instant,
) -> (usize, f64, usize, Duration, usize, usize) {
    let window: Vec<&RtpPacket> =
        received.iter().filter(|p| p.at >= from && p.at <= to && p.payload_type == 0).collect();
    let gaps: Vec<Duration> = window.windows(2).map(|w| w[1].at - w[0].at).collect();
    let over = gaps.iter().filter(|g| **g > Duration::from_millis(40)).count();
    let longest = gaps.iter().copied().max().unwrap_or_default();
    let holes = window.windows(2).filter(|w| w[1].seq != w[0].seq.wrapping_add(1)).count();
    let steps =
        window.windows(2).filter(|w| w[1].timestamp != w[0].timestamp.wrapping_add(160)).count();
    let span = match (window.first(), window.last()) {
        (Some(a), Some(b)) => (b.at - a.at).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if span > 0.0 { (window.len() - 1) as f64 / span } else { 0.0 };
    (window.len(), rate, over, longest, holes, steps)
}

#[test]
fn a_caller_who_pauses_and_barges_in_hears_50_packets_a_second_without_gaps() {
    let _serial = serial();
    let ports = Ports::new(39800);
    let mut sims = Sims::new();
    let a = sims.start(SimProtocol::OpenAiRealtime, SimMode::Echo, &[]);
    let config = ai_config(ports, "openai-realtime", "g711_ulaw", &sims.url(a), None);
    let mut app = Appliance::start(&config);
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, "barge-stream");
    let answer = uac.answered(Duration::from_secs(5));
    peer.start(answer.rtp);
    let t0 = Instant::now();
    // speech, a pause, speech (barging in on the echo), a pause, speech
    let speech = caller_speech();
    for i in 0..3 {
        if i > 0 {
            peer.say(&[SILENCE; 160 * 40]);
        }
        peer.say(&speech);
    }
    assert!(peer.drained(Duration::from_secs(15)), "the peer did not finish talking");
    thread::sleep(Duration::from_millis(1000));
    let t1 = Instant::now();
    let status = app.status_json();
    assert!(uac.hang_up(), "no 200 to BYE");
    assert_no_active_calls(&app);

    let received = peer.received();
    let from = t0 + Duration::from_millis(200);
    let (n, rate, over, longest, holes, steps) = stream_figures(&received, from, t1);
    let seen = sims.stats(a);
    figure("barge_stream_packets", n);
    figure("barge_stream_packets_per_s", format!("{rate:.2}"));
    figure("barge_stream_gaps_over_40ms", over);
    figure(
        "barge_stream_gaps_over_40ms_share_percent",
        format!("{:.3}", over as f64 * 100.0 / n.max(1) as f64),
    );
    figure("barge_stream_longest_gap_ms", longest.as_millis());
    figure("barge_stream_speech_started", seen.speech_started);
    figure("barge_stream_underruns", &status["counters"]["ai_underruns"]);
    print_latencies(&app, "barge_stream_", &["ai_to_rtp"]);
    assert!(seen.speech_started >= 3, "the agent saw the caller barge in: {seen:?}");
    let voiced_heard = received.iter().filter(|p| voiced(p)).count();
    figure("barge_stream_voiced_packets", voiced_heard);
    assert!(voiced_heard > 60, "the echo was heard: {voiced_heard} voiced packets");
    // at the source: one packet per 20 ms slot, sequence and timestamps continuous
    assert_eq!(holes, 0, "sequence numbers skipped: the stream stopped");
    assert_eq!(steps, 0, "timestamp jumps: the stream stopped");
    assert!(rate > 49.0 && rate < 51.0, "{rate:.2} packets/s");
    // on arrival: the bug left 100-240 ms without a packet at every barge-in
    assert!(longest < Duration::from_millis(100), "{longest:?} without a packet");
    app.assert_alive();
}

#[test]
fn a_mute_agent_gets_the_filler_then_the_standby_and_the_stream_never_stops() {
    let _serial = serial();
    let ports = Ports::new(40000);
    let mut sims = Sims::new();
    // the primary connects, answers pings, and holds all audio back for 20 s: mute
    let p = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &["slow-first-audio:20000"]);
    let s = sims.start(SimProtocol::TwilioMediaStreams, SimMode::Echo, &[]);
    let config = twilio_config(ports, &sims.url(p), Some(&sims.url(s)))
        .replace("[ai]\n", "[ai]\nfirst_audio_timeout_ms = 1500\n");
    let mut app = Appliance::start(&config);
    let peer = RtpPeer::bind(CARRIER_IP, ports.audio(0));
    let mut uac = Uac::call(ports, 0, peer.addr, "mute");
    let answer = uac.answered(Duration::from_secs(5));
    let t0 = Instant::now();
    peer.start(answer.rtp);
    let speech = caller_speech();
    for _ in 0..2 {
        peer.say(&speech);
    }
    let standby_live =
        wait_until(Duration::from_secs(6), Duration::from_millis(10), || sims.stats(s).starts >= 1);
    assert!(standby_live, "no failover to the standby: {:?}", sims.stats(p));
    thread::sleep(Duration::from_millis(2500));
    let t1 = Instant::now();
    assert!(uac.hang_up(), "the call did not survive the failover (no 200 to BYE)");
    assert_no_active_calls(&app);

    let filler_frames: HashSet<Vec<u8>> = {
        let filler = Prompt::one_moment().expect("filler prompt");
        let mut codes = Vec::new();
        Law::Ulaw.encode_into(filler.samples(), &mut codes);
        codes.chunks(160).filter(|c| c.len() == 160).map(<[u8]>::to_vec).collect()
    };
    let received = peer.received();
    let is_filler = |p: &RtpPacket| filler_frames.contains(&p.payload) && voiced(p);
    let first_filler = received.iter().find(|p| is_filler(p)).expect("the caller heard no filler");
    let before: Vec<&RtpPacket> =
        received.iter().filter(|p| p.at < first_filler.at && voiced(p)).collect();
    assert!(before.is_empty(), "the mute primary said nothing: {} voiced", before.len());
    let first_standby = received
        .iter()
        .find(|p| p.at > first_filler.at && voiced(p) && !is_filler(p))
        .expect("no echo from the standby after the filler");
    let detection = first_filler.at.saturating_duration_since(t0);
    let (n, rate, over, longest, holes, steps) =
        stream_figures(&received, t0 + Duration::from_millis(100), t1);
    figure("mute_filler_after_answer_ms", detection.as_millis());
    figure(
        "mute_filler_to_standby_audio_ms",
        first_standby.at.duration_since(first_filler.at).as_millis(),
    );
    figure("mute_stream_packets", n);
    figure("mute_stream_packets_per_s", format!("{rate:.2}"));
    figure("mute_stream_gaps_over_40ms", over);
    figure("mute_stream_longest_gap_ms", longest.as_millis());
    // first_audio_timeout_ms 1500 after the agent went live (just before the answer)
    assert!(detection >= Duration::from_millis(1200), "filler after {detection:?}");
    assert!(detection <= Duration::from_millis(2500), "filler after {detection:?}");
    assert_eq!(holes, 0, "sequence numbers skipped: the stream stopped");
    assert_eq!(steps, 0, "timestamp jumps: the stream stopped");
    assert!(rate > 49.0 && rate < 51.0, "{rate:.2} packets/s");
    let status = app.status_json();
    assert_eq!(status["ai_failovers"], 1, "{status}");
    assert_eq!(sims.stats(s).resumed, 1, "{:?}", sims.stats(s));
    app.assert_alive();
}

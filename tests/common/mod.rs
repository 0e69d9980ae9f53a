//! Shared harness for the end-to-end tests: runs the real `trunkguard`
//! binary ([`Appliance`]) against real peers (SIPp via [`Sipp`], raw
//! sockets, an RTP sink via [`RtpSink`]), all on loopback addresses.
//!
//! Every process started here is killed on drop; every wait is bounded.
//! Tests in one binary run in parallel, so each test takes its own
//! [`Ports`] block (a distinct base per test function).
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The repository root (where `tests/sipp/*.xml` and the `.ulaw` media live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Absolute path of a SIPp scenario in `tests/sipp/`.
pub fn scenario(name: &str) -> String {
    let p = repo_root().join("tests").join("sipp").join(name);
    assert!(p.is_file(), "missing scenario {}", p.display());
    p.display().to_string()
}

/// Polls `cond` every `every` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A block of 200 loopback ports owned by one test function.
///
/// Layout (offsets from `base`): SIP 0, SIP/TLS 1, HTTP 2, peers 10..19
/// (SIPp `-p` / raw sockets), test RTP sockets 20..39, SIPp media ports
/// 40..79 (4 per instance: SIPp binds mp and mp+2), SIPp control ports
/// 80..89, appliance RTP range 100..199.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    pub const fn new(base: u16) -> Self {
        Ports { base }
    }
    pub fn sip(&self) -> u16 {
        self.base
    }
    pub fn tls(&self) -> u16 {
        self.base + 1
    }
    pub fn http(&self) -> u16 {
        self.base + 2
    }
    /// SIP port of the i-th peer (SIPp instance or raw socket), i < 10.
    pub fn peer(&self, i: u16) -> u16 {
        assert!(i < 10);
        self.base + 10 + i
    }
    /// The i-th RTP socket owned by the test, i < 20.
    pub fn audio(&self, i: u16) -> u16 {
        assert!(i < 20);
        self.base + 20 + i
    }
    /// Media port (`-mp`) of the i-th SIPp instance, i < 10.
    pub fn sipp_media(&self, i: u16) -> u16 {
        assert!(i < 10);
        self.base + 40 + 4 * i
    }
    /// Control port (`-cp`) of the i-th SIPp instance, i < 10.
    pub fn sipp_control(&self, i: u16) -> u16 {
        assert!(i < 10);
        self.base + 80 + i
    }
    /// The appliance's RTP port range, as the config's `rtp_ports` string.
    pub fn rtp_range(&self) -> String {
        format!("{}-{}", self.base + 100, self.base + 199)
    }
}

// ---------------------------------------------------------------------------
// Appliance
// ---------------------------------------------------------------------------

/// The real `trunkguard` binary running `run --config <temp file>`.
pub struct Appliance {
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    pub config_path: PathBuf,
    pub http: SocketAddr,
}

/// How long the appliance may take to answer `GET /livez`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Appliance {
    /// Writes `config_toml` to a temp file, starts the binary with
    /// `RUST_LOG=debug` (stdout+stderr to a log file) and waits until
    /// `GET /livez` answers 200. Panics (printing the log) otherwise.
    pub fn start(config_toml: &str) -> Appliance {
        let dir = tempfile::Builder::new().prefix("trunkguard-e2e-").tempdir().expect("tempdir");
        let config_path = dir.path().join("trunkguard.toml");
        fs::write(&config_path, config_toml).expect("write config");
        let http = status_listen(config_toml);
        let log_path = dir.path().join("trunkguard.log");
        let log = File::create(&log_path).expect("create log");
        let log_err = log.try_clone().expect("clone log");
        let child = Command::new(appliance_binary())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "debug")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("spawn trunkguard");
        let mut app = Appliance { child, dir, log_path, config_path, http };
        app.wait_live();
        app
    }

    fn wait_live(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                panic!("trunkguard exited during startup ({status}); its log is printed below");
            }
            if matches!(http_get(self.http, "/livez"), Ok((200, _))) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "trunkguard did not answer GET /livez on {} within {START_TIMEOUT:?}; its log is printed below",
                    self.http
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id (for /proc figures such as RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics (with the log) if the process has died.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!("trunkguard died ({status}); its log is printed below");
        }
    }

    /// Everything the binary has written to stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// SIGKILL (no clean shutdown) and reap.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The binary, for running other subcommands.
    pub fn binary() -> PathBuf {
        appliance_binary()
    }

    /// The directory holding the config and log (alive as long as `self`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /status` parsed as JSON (panics on a non-200 or bad JSON).
    pub fn status_json(&self) -> serde_json::Value {
        let (code, body) = http_get(self.http, "/status").expect("GET /status");
        assert_eq!(code, 200, "GET /status -> {code}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status JSON ({e}): {body}"))
    }

    /// The `/status` entry of the carrier called `name`.
    pub fn carrier(&self, name: &str) -> serde_json::Value {
        let status = self.status_json();
        status["carriers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_else(|| panic!("carrier {name} not in /status: {status}"))
    }

    /// `/status` `carriers[name].state` ("up" | "down" | "unknown").
    pub fn carrier_state(&self, name: &str) -> String {
        self.carrier(name)["state"].as_str().unwrap_or("<missing>").to_string()
    }

    /// `/status` `carriers[name].registered`.
    pub fn carrier_registered(&self, name: &str) -> bool {
        self.carrier(name)["registered"].as_bool().unwrap_or(false)
    }

    /// `/status` `calls.<field>` as u64 (panics when missing).
    pub fn calls_counter(&self, field: &str) -> u64 {
        let status = self.status_json();
        status["calls"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("calls.{field} missing in /status: {status}"))
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "===== trunkguard log ({}) =====\n{}\n===== end of trunkguard log =====",
                self.config_path.display(),
                self.log()
            );
        }
    }
}

/// The binary under test: `trunkguard` built by cargo, unless
/// `TRUNKGUARD_E2E_BIN` names a stand-in (used to check the harness itself).
fn appliance_binary() -> PathBuf {
    std::env::var_os("TRUNKGUARD_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_trunkguard")))
}

/// `[status] listen` from the config (the embedded default otherwise).
fn status_listen(config_toml: &str) -> SocketAddr {
    let value: toml::Value = toml::from_str(config_toml).expect("test config is not TOML");
    value
        .get("status")
        .and_then(|s| s.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .expect("status.listen is not an address")
}

/// A plain HTTP/1.0 GET over a std TcpStream: `(status code, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head:?}")))?;
    Ok((code, body.to_string()))
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// A running `sipp` with diagnostics (`-trace_err`, `-trace_msg`) in a temp
/// dir. Always `-timeout <N>s -timeout_error -nostdin`; killed on drop.
pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
    name: String,
    args: Vec<String>,
    exit: Option<ExitStatus>,
}

impl Sipp {
    /// Starts sipp with `args` and the default 30 s global timeout.
    /// `control_port` is its `-cp` (take it from [`Ports::sipp_control`]).
    pub fn spawn(name: &str, control_port: u16, args: &[&str]) -> Sipp {
        Self::spawn_with_timeout(name, control_port, 30, args)
    }

    /// Like [`Sipp::spawn`] with an explicit global timeout in seconds.
    pub fn spawn_with_timeout(
        name: &str,
        control_port: u16,
        timeout_s: u32,
        args: &[&str],
    ) -> Sipp {
        let dir =
            tempfile::Builder::new().prefix(&format!("sipp-{name}-")).tempdir().expect("tempdir");
        let d = dir.path();
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let timeout = format!("{timeout_s}s");
        let cp = control_port.to_string();
        let errors = d.join("errors.log").display().to_string();
        let messages = d.join("messages.log").display().to_string();
        all.extend(
            [
                "-timeout",
                &timeout,
                "-timeout_error",
                "-nostdin",
                "-cp",
                &cp,
                "-trace_err",
                "-error_file",
                &errors,
                "-trace_msg",
                "-message_file",
                &messages,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let stdout = File::create(d.join("stdout.log")).expect("sipp stdout");
        let stderr = File::create(d.join("stderr.log")).expect("sipp stderr");
        let child = Command::new("sipp")
            .args(&all)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sipp (apt-get install sip-tester): {e}"));
        Sipp { child, dir, name: name.to_string(), args: all, exit: None }
    }

    /// Waits (bounded) for sipp to exit; true iff its exit code is 0
    /// (all calls succeeded). Kills it when `timeout` passes.
    pub fn wait_success(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return status.code() == Some(0);
            }
            if Instant::now() >= deadline {
                eprintln!("sipp {} still running after {timeout:?}; killing it", self.name);
                self.kill();
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// True while sipp runs (false once it exited, e.g. on a bind error).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Kills sipp (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    fn read(&self, file: &str) -> String {
        fs::read(self.dir.path().join(file))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The `-trace_msg` log: every SIP message sent and received.
    pub fn messages(&self) -> String {
        self.read("messages.log")
    }

    /// The `-trace_err` log: unexpected messages and errors.
    pub fn errors(&self) -> String {
        self.read("errors.log")
    }

    /// Received requests with this method, counted from the message trace.
    pub fn received_requests(&self, method: &str) -> usize {
        received_requests(&self.messages(), method)
    }

    /// Everything useful for a failure report.
    pub fn diagnostics(&self) -> String {
        let stdout = self.read("stdout.log");
        let tail: String = {
            let lines: Vec<&str> = stdout.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "sipp {} {:?} exit={:?}\n--- errors ---\n{}\n--- stderr ---\n{}\n--- stdout (tail) ---\n{}\n--- messages ---\n{}",
            self.name,
            self.args,
            self.exit,
            self.errors(),
            self.read("stderr.log"),
            tail,
            self.messages()
        )
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("===== {} =====", self.diagnostics());
        }
    }
}

/// Counts requests of `method` that sipp logged as received in its
/// `-trace_msg` file (a message's first line follows "... message received").
pub fn received_requests(trace: &str, method: &str) -> usize {
    let prefix = format!("{method} ");
    let mut count = 0;
    let mut lines = trace.lines();
    while let Some(line) = lines.next() {
        if line.contains("message received") {
            let first = lines.by_ref().find(|l| !l.trim().is_empty());
            if first.is_some_and(|l| l.starts_with(&prefix)) {
                count += 1;
            }
        }
    }
    count
}

// ---------------------------------------------------------------------------
// RTP sink and speech check
// ---------------------------------------------------------------------------

/// One RTP packet received by the test.
#[derive(Clone, Debug)]
pub struct RtpPacket {
    pub from: SocketAddr,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
    pub at: Instant,
}

/// A UDP socket owned by the test that records RTP packets (the address
/// the test's SDP offers). A background thread reads until dropped.
///
/// A *talking* sink is a symmetric RTP peer (RFC 4961), like a real
/// carrier: once the appliance's first packet arrives, it answers from the
/// same socket with `tests/sipp/caller.ulaw` (PCMU, 20 ms, looped) to that
/// packet's source, until the appliance has been silent for 500 ms.
pub struct RtpSink {
    pub addr: SocketAddr,
    packets: Arc<Mutex<Vec<RtpPacket>>>,
    non_rtp: Arc<Mutex<usize>>,
    sent: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Upper bound on how long an [`RtpSink`] thread runs.
const RTP_SINK_MAX: Duration = Duration::from_secs(120);
/// A talking sink stops once the appliance has been silent this long.
const TALK_UNTIL_QUIET: Duration = Duration::from_millis(500);

impl RtpSink {
    /// A silent sink: records, never sends.
    pub fn bind(ip: &str, port: u16) -> RtpSink {
        Self::start(ip, port, None)
    }

    /// A symmetric peer that answers with `tests/sipp/caller.ulaw`.
    pub fn bind_talking(ip: &str, port: u16) -> RtpSink {
        let audio =
            fs::read(repo_root().join("tests/sipp/caller.ulaw")).expect("tests/sipp/caller.ulaw");
        Self::start(ip, port, Some(audio))
    }

    fn start(ip: &str, port: u16, talk: Option<Vec<u8>>) -> RtpSink {
        let sock = UdpSocket::bind((ip, port))
            .unwrap_or_else(|e| panic!("bind RTP sink {ip}:{port}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let addr = sock.local_addr().expect("local addr");
        let mut sink = RtpSink {
            addr,
            packets: Arc::new(Mutex::new(Vec::new())),
            non_rtp: Arc::new(Mutex::new(0usize)),
            sent: Arc::new(Mutex::new(0usize)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        if let Some(audio) = talk {
            let (tx, p, sent, stop) = (
                sock.try_clone().expect("clone RTP socket"),
                sink.packets.clone(),
                sink.sent.clone(),
                sink.stop.clone(),
            );
            sink.threads.push(thread::spawn(move || talk_back(tx, audio, p, sent, stop)));
        }
        let (p, n, stop) = (sink.packets.clone(), sink.non_rtp.clone(), sink.stop.clone());
        sink.threads.push(thread::spawn(move || {
            let started = Instant::now();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < RTP_SINK_MAX {
                if let Ok((len, from)) = sock.recv_from(&mut buf) {
                    match parse_rtp(&buf[..len], from) {
                        Some(pkt) => p.lock().unwrap().push(pkt),
                        None => *n.lock().unwrap() += 1,
                    }
                }
            }
        }));
        sink
    }

    pub fn count(&self) -> usize {
        self.packets.lock().unwrap().len()
    }

    pub fn packets(&self) -> Vec<RtpPacket> {
        self.packets.lock().unwrap().clone()
    }

    /// Datagrams that did not look like RTP.
    pub fn non_rtp(&self) -> usize {
        *self.non_rtp.lock().unwrap()
    }

    /// RTP packets a talking sink has sent to the appliance.
    pub fn sent(&self) -> usize {
        *self.sent.lock().unwrap()
    }

    /// Waits (bounded) until no packet arrived for `quiet`; returns the count.
    pub fn wait_quiet(&self, quiet: Duration, max: Duration) -> usize {
        let deadline = Instant::now() + max;
        loop {
            let last = self.packets.lock().unwrap().last().map(|p| p.at);
            let idle = last.is_none_or(|t| t.elapsed() >= quiet);
            if idle || Instant::now() >= deadline {
                return self.count();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn speech(&self) -> SpeechStats {
        SpeechStats::of(&self.packets())
    }
}

/// The talking half of [`RtpSink::bind_talking`]: waits for the first
/// received packet, then sends 20 ms PCMU packets to its source.
fn talk_back(
    sock: UdpSocket,
    audio: Vec<u8>,
    received: Arc<Mutex<Vec<RtpPacket>>>,
    sent: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < RTP_SINK_MAX;
    let peer = loop {
        if !alive() {
            return;
        }
        if let Some(p) = received.lock().unwrap().first() {
            break p.from;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let ssrc = 0x7e57_0000 | (std::process::id() & 0xffff);
    let frames: Vec<&[u8]> = audio.chunks(160).filter(|c| c.len() == 160).collect();
    let t0 = Instant::now();
    for i in 0u32.. {
        let last_heard = received.lock().unwrap().last().map(|p| p.at);
        if !alive() || last_heard.is_some_and(|t| t.elapsed() > TALK_UNTIL_QUIET) {
            return;
        }
        let mut pkt = Vec::with_capacity(172);
        pkt.extend_from_slice(&[0x80, if i == 0 { 0x80 } else { 0x00 }]);
        pkt.extend_from_slice(&(i as u16).to_be_bytes());
        pkt.extend_from_slice(&(i.wrapping_mul(160)).to_be_bytes());
        pkt.extend_from_slice(&ssrc.to_be_bytes());
        pkt.extend_from_slice(frames[i as usize % frames.len()]);
        if sock.send_to(&pkt, peer).is_ok() {
            *sent.lock().unwrap() += 1;
        }
        let next = t0 + Duration::from_millis(20) * (i + 1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Parses an RTP packet (RFC 3550 fixed header, CSRCs, extension, padding).
pub fn parse_rtp(b: &[u8], from: SocketAddr) -> Option<RtpPacket> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    let cc = (b[0] & 0x0f) as usize;
    let mut off = 12 + 4 * cc;
    if b[0] & 0x10 != 0 {
        let ext = b.get(off + 2..off + 4)?;
        off += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
    }
    let mut end = b.len();
    if b[0] & 0x20 != 0 {
        end = end.checked_sub(*b.last()? as usize)?;
    }
    let payload = b.get(off..end)?.to_vec();
    Some(RtpPacket {
        from,
        payload_type: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload,
        at: Instant::now(),
    })
}

/// G.711 μ-law to linear PCM.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law to linear PCM.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// What an RTP stream sounds like, from its decoded G.711 payloads.
#[derive(Debug, Default)]
pub struct SpeechStats {
    pub packets: usize,
    /// Packets whose payload type is PCMU (0) or PCMA (8).
    pub g711_packets: usize,
    /// Packets carrying 160 bytes (20 ms at 8 kHz).
    pub ptime20_packets: usize,
    /// RMS over all decoded samples (16-bit scale).
    pub rms: f64,
    /// Packets whose own RMS exceeds [`VOICED_RMS`].
    pub voiced_packets: usize,
    /// Loudest and quietest per-packet RMS among voiced packets.
    pub max_packet_rms: f64,
    pub min_voiced_rms: f64,
    /// Distinct SSRCs seen.
    pub ssrcs: usize,
}

/// A 20 ms packet above this RMS is treated as voiced (silence is ~0,
/// line noise a few tens; espeak speech is in the thousands).
pub const VOICED_RMS: f64 = 300.0;

impl SpeechStats {
    pub fn of(packets: &[RtpPacket]) -> SpeechStats {
        let mut s =
            SpeechStats { packets: packets.len(), min_voiced_rms: f64::MAX, ..Default::default() };
        let (mut sum_sq, mut samples) = (0f64, 0usize);
        let mut ssrcs: Vec<u32> = Vec::new();
        for p in packets {
            if !ssrcs.contains(&p.ssrc) {
                ssrcs.push(p.ssrc);
            }
            let decode: fn(u8) -> i16 = match p.payload_type {
                0 => ulaw_to_linear,
                8 => alaw_to_linear,
                _ => continue,
            };
            s.g711_packets += 1;
            if p.payload.len() == 160 {
                s.ptime20_packets += 1;
            }
            let sq: f64 = p.payload.iter().map(|&b| (decode(b) as f64).powi(2)).sum();
            sum_sq += sq;
            samples += p.payload.len();
            let rms = (sq / p.payload.len().max(1) as f64).sqrt();
            if rms > VOICED_RMS {
                s.voiced_packets += 1;
                s.min_voiced_rms = s.min_voiced_rms.min(rms);
            }
            s.max_packet_rms = s.max_packet_rms.max(rms);
        }
        s.rms = (sum_sq / samples.max(1) as f64).sqrt();
        s.ssrcs = ssrcs.len();
        if s.voiced_packets == 0 {
            s.min_voiced_rms = 0.0;
        }
        s
    }

    /// Panics unless this looks like real speech in 20 ms G.711 packets:
    /// more than `min_packets` packets, mostly voiced, with a varying
    /// envelope (not silence, not a constant tone).
    pub fn assert_speech(&self, min_packets: usize) {
        assert!(
            self.packets > min_packets,
            "expected more than {min_packets} RTP packets: {self:?}"
        );
        assert_eq!(self.g711_packets, self.packets, "non-G.711 payload types: {self:?}");
        assert!(
            self.ptime20_packets * 10 >= self.packets * 9,
            "expected 20 ms (160-byte) packets: {self:?}"
        );
        assert!(self.rms > 500.0, "prompt is (near) silence: {self:?}");
        assert!(
            self.voiced_packets * 10 >= self.packets * 4,
            "too few voiced packets for speech: {self:?}"
        );
        assert!(
            self.max_packet_rms > 2.0 * self.min_voiced_rms,
            "flat envelope (a tone, not speech?): {self:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Raw SIP over UDP
// ---------------------------------------------------------------------------

/// A UDP socket on a chosen loopback address for handwritten SIP.
pub struct RawSip {
    pub sock: UdpSocket,
    pub local: SocketAddr,
}

impl RawSip {
    pub fn bind(ip: &str, port: u16) -> RawSip {
        let sock = UdpSocket::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
        let local = sock.local_addr().expect("local addr");
        RawSip { sock, local }
    }

    pub fn send(&self, to: SocketAddr, msg: &[u8]) {
        self.sock.send_to(msg, to).expect("send_to");
    }

    /// Next datagram within `timeout` (None when nothing arrives).
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).expect("timeout");
        let mut buf = vec![0u8; 65536];
        match self.sock.recv_from(&mut buf) {
            Ok((len, _)) => Some(String::from_utf8_lossy(&buf[..len]).into_owned()),
            Err(_) => None,
        }
    }

    /// Collects datagrams until `done` accepts one or `timeout` passes;
    /// returns everything received (in order) and whether `done` fired.
    pub fn recv_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> (Vec<String>, bool) {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(msg) = self.recv(left) {
                let finished = done(&msg);
                got.push(msg);
                if finished {
                    return (got, true);
                }
            }
        }
        (got, false)
    }

    /// Sends an OPTIONS to `to` and waits for its 200 (matched by Call-ID).
    pub fn options_ok(&self, to: SocketAddr, call_id: &str, timeout: Duration) -> bool {
        self.send(to, options_request(self.local, to, call_id).as_bytes());
        let (_, ok) = self.recv_until(timeout, |m| {
            status_code(m) == Some(200) && call_id_of(m) == Some(call_id.to_string())
        });
        ok
    }
}

static BRANCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh RFC 3261 branch.
pub fn branch() -> String {
    format!("z9hG4bK-e2e-{}-{}", std::process::id(), BRANCH.fetch_add(1, Ordering::Relaxed))
}

/// A fresh From tag (a token: no '@' or other separators).
pub fn tag() -> String {
    format!("e2e{}x{}", std::process::id(), BRANCH.fetch_add(1, Ordering::Relaxed))
}

/// A handwritten OPTIONS from `from` to `to` (UDP).
pub fn options_request(from: SocketAddr, to: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:e2e@{from}>;tag={}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        branch(),
        tag()
    )
}

/// A PCMU/PCMA offer whose media goes to `rtp`.
pub fn sdp_offer(rtp: SocketAddr) -> String {
    let ip = rtp.ip();
    format!(
        "v=0\r\no=e2e 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
        rtp.port()
    )
}

/// A handwritten INVITE with an SDP offer (`transport` is "UDP", "TCP", "TLS").
pub fn invite_request(
    transport: &str,
    from: SocketAddr,
    to: SocketAddr,
    call_id: &str,
    rtp: SocketAddr,
) -> String {
    let sdp = sdp_offer(rtp);
    format!(
        "INVITE sip:agent@{to} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: \"e2e\" <sip:caller@{from}>;tag={}\r\n\
         To: <sip:agent@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{from}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        branch(),
        tag(),
        sdp.len()
    )
}

/// Status code of a SIP response (None for requests / garbage).
pub fn status_code(msg: &str) -> Option<u16> {
    let first = msg.lines().next()?;
    let rest = first.strip_prefix("SIP/2.0 ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Value of the first header `name` (or its compact form), case-insensitive.
pub fn header(msg: &str, name: &str, compact: Option<&str>) -> Option<String> {
    let head = msg.split("\r\n\r\n").next().unwrap_or(msg);
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        let hit =
            n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c));
        hit.then(|| v.trim().to_string())
    })
}

pub fn call_id_of(msg: &str) -> Option<String> {
    header(msg, "Call-ID", Some("i"))
}

/// Body of a SIP message (after the blank line).
pub fn body_of(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

// ---------------------------------------------------------------------------
// Config snippets
// ---------------------------------------------------------------------------

/// `[sip]`, `[media]`, `[status]` for UDP+TCP on 127.0.0.1 with `ports`.
pub fn base_config(ports: Ports) -> String {
    format!(
        "[sip]\n\
         listen = [\"udp:127.0.0.1:{sip}\", \"tcp:127.0.0.1:{sip}\"]\n\n\
         [media]\n\
         bind = \"127.0.0.1\"\n\
         rtp_ports = \"{rtp}\"\n\n\
         [status]\n\
         listen = \"127.0.0.1:{http}\"\n\n",
        sip = ports.sip(),
        rtp = ports.rtp_range(),
        http = ports.http()
    )
}

/// A `[[carrier]]` accepting calls from one address, without probing.
pub fn inbound_carrier(name: &str, ip: &str) -> String {
    format!("[[carrier]]\nname = \"{name}\"\ninbound_from = [\"{ip}/32\"]\n\n")
}

/// The appliance's UDP SIP address for `ports`.
pub fn sip_addr(ports: Ports) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports.sip()))
}

/// Kills the child when dropped (a failing test must not leave processes behind).
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent simulator (`trunkguard-agent-sim`'s library, in this test process on its own
/// tokio runtime) on 127.0.0.1:`port`: Twilio Media Streams, echo. Dropping it stops it: open
/// connections are closed and the port no longer accepts. (In-process because a test can only
/// name binaries of its own package; the simulator is a separate crate.)
pub struct AgentSim {
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<trunkguard_agent_sim::SimHandle>,
}

impl Drop for AgentSim {
    fn drop(&mut self) {
        if let (Some(rt), Some(handle)) = (self.rt.take(), self.handle.take()) {
            // the timer is created inside the runtime (it needs its reactor)
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(3), handle.shutdown()).await
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Starts an [`AgentSim`] on 127.0.0.1:`port` (retrying the bind for up to 5 s).
pub fn spawn_agent_sim(port: u16) -> AgentSim {
    use trunkguard_agent_sim::{SimConfig, SimProtocol, SimServer};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("agent-sim runtime");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    let server = loop {
        let cfg = SimConfig::new(addr, SimProtocol::TwilioMediaStreams);
        match rt.block_on(SimServer::bind(cfg)) {
            Ok(server) => break server,
            Err(e) if Instant::now() < deadline => {
                eprintln!("agent-sim: bind {addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("agent-sim: bind {addr}: {e}"),
        }
    };
    let handle = {
        let _entered = rt.enter();
        server.spawn().expect("agent-sim spawn")
    };
    AgentSim { rt: Some(rt), handle: Some(handle) }
}

// ---------------------------------------------------------------------------
// Call records
// ---------------------------------------------------------------------------

/// `trunkguard calls --json --last 1000 --state-dir <dir>`, parsed.
pub fn calls_json(state_dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(Appliance::binary())
        .args(["calls", "--json", "--last", "1000", "--state-dir"])
        .arg(state_dir)
        .output()
        .expect("run trunkguard calls");
    assert!(
        out.status.success(),
        "trunkguard calls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
        .collect()
}

/// The appliance's one call record once the call has ended (the writer thread commits just
/// after the BYE), waiting up to 5 s.
pub fn ended_record(app: &Appliance) -> serde_json::Value {
    let state = app.dir().join("trunkguard-state");
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        rows = calls_json(&state);
        rows.len() == 1 && !rows[0]["end_reason"].is_null()
    });
    assert_eq!(rows.len(), 1, "{rows:#?}\n{}", app.log());
    rows.remove(0)
}

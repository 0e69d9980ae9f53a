//! Media quality of the call path, measured in-process on a fake clock: caller RTP carrying
//! real speech goes through a `MediaSession` (jitter buffer, decoder, concealment, resampling)
//! to the AI side, and AI audio back to RTP. Run with
//! `cargo test --test media_quality -- --nocapture` to see the figures (`name: value` lines and
//! a summary block per test, for docs/media.md).
//!
//! Test audio `tests/data/speech/caller-8k.wav` (espeak-ng 1.51, 6.25 s, 8 kHz mono s16):
//!
//! ```sh
//! espeak-ng -v en-us -s 165 -w /tmp/s.wav "Thank you for calling. Your account number is \
//!   four five six. Please hold while we connect you." &&
//! sox /tmp/s.wav -D -r 8000 -c 1 -b 16 tests/data/speech/caller-8k.wav
//! ```
//!
//! Labelling: `MediaSession` hands out PCM frames without their RTP timestamps. Each run feeds
//! a shadow `JitterBuffer` (same config, same pushes, polled at the same instants: it is
//! deterministic) to learn which slot every frame belongs to and whether it was concealed; the
//! tests check that the shadow agrees with the session (frame counts, concealment counter,
//! G.711 samples).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use trunkguard::core::media::codec::opus::{OpusConfig, OpusEncoder, OpusTuning};
use trunkguard::core::media::codec::{AiFormat, Rate, Resampler, Transcoder};
use trunkguard::core::media::g711::Law;
use trunkguard::core::media::jitter::{Frame, JitterBuffer, JitterConfig};
use trunkguard::core::media::prompt::Prompt;
use trunkguard::core::media::rtp::inspect;
use trunkguard::core::media::rtp_out::RtpOut;
use trunkguard::core::media::session::{MediaCounters, MediaParams, MediaSession};
use trunkguard::core::media::stats::CallMediaStats;
use trunkguard::core::sdp::{Codec, Negotiated};

const SPEECH_WAV: &[u8] = include_bytes!("data/speech/caller-8k.wav");
const CARRIER: &str = "127.0.0.2:6000";
const FRAME: Duration = Duration::from_millis(20);
const CALLER_SSRC: u32 = 0xca11_e500;
const SEQ0: u16 = 65_500; // wraps during every run
const TS0: u32 = 4_294_000_000; // wraps during every run

// ---------------------------------------------------------------- audio and packets

/// The speech at 8 kHz, cut to whole 20 ms frames.
fn speech() -> Vec<i16> {
    let prompt = Prompt::from_wav_bytes(SPEECH_WAV).unwrap();
    let s = prompt.samples();
    s[..s.len() / 160 * 160].to_vec()
}

/// The speech `times` over (longer traces give steadier loss figures).
fn speech_repeated(times: usize) -> Vec<i16> {
    let s = speech();
    (0..times).flat_map(|_| s.iter().copied()).collect()
}

fn ulaw_payloads(x8k: &[i16]) -> Vec<Vec<u8>> {
    x8k.chunks_exact(160)
        .map(|f| {
            let mut p = Vec::with_capacity(160);
            Law::Ulaw.encode_into(f, &mut p);
            p
        })
        .collect()
}

/// What an Opus phone sends: the speech at 48 kHz (8 kHz upsampled), 20 ms per packet.
fn opus_payloads(x8k: &[i16]) -> Vec<Vec<u8>> {
    let mut up = Resampler::new(Rate::Hz8000, Rate::Hz48000).unwrap();
    let mut enc =
        OpusEncoder::new(OpusConfig { rate: Rate::Hz48000, ..OpusConfig::default() }).unwrap();
    x8k.chunks_exact(160)
        .map(|f| {
            let s48 = up.process(f).unwrap().to_vec();
            enc.encode(&s48).unwrap().to_vec()
        })
        .collect()
}

/// Reference upsampling by linear interpolation (independent of the resampler under test;
/// it dulls the top of the band a little, which only lowers the correlation).
fn upsample_linear(x: &[i16], factor: usize) -> Vec<i16> {
    let mut out = Vec::with_capacity(x.len() * factor);
    for (i, &a) in x.iter().enumerate() {
        let b = x.get(i + 1).copied().unwrap_or(a);
        for j in 0..factor {
            let v = f64::from(a) + (f64::from(b) - f64::from(a)) * j as f64 / factor as f64;
            out.push(v.round() as i16);
        }
    }
    out
}

// ---------------------------------------------------------------- signal measures

/// Normalized cross-correlation of `a` and `b` over their common length.
fn ncc(a: &[i16], b: &[i16]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let (x, y) = (f64::from(a[i]), f64::from(b[i]));
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

/// The lag (samples `out` trails `reference` by, within ±`max_lag`) of best correlation.
fn best_lag(reference: &[i16], out: &[i16], max_lag: usize) -> (i64, f64) {
    let mut best = (0i64, f64::MIN);
    for lag in -(max_lag as i64)..=max_lag as i64 {
        let c = if lag >= 0 {
            ncc(reference, &out[lag as usize..])
        } else {
            ncc(&reference[(-lag) as usize..], out)
        };
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

/// Correlation of the 10 ms energy envelopes (dB, floored at 20 dB): how well the loudness
/// contour survives, which is what concealment preserves and zero-filling does not.
fn envelope_correlation(a: &[i16], b: &[i16], chunk: usize) -> f64 {
    let env = |x: &[i16]| -> Vec<f64> {
        x.chunks_exact(chunk)
            .map(|c| {
                let p = c.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / chunk as f64;
                (10.0 * p.max(1.0).log10()).max(20.0)
            })
            .collect()
    };
    let (ea, eb) = (env(a), env(b));
    let n = ea.len().min(eb.len());
    let ma = ea[..n].iter().sum::<f64>() / n as f64;
    let mb = eb[..n].iter().sum::<f64>() / n as f64;
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for i in 0..n {
        ab += (ea[i] - ma) * (eb[i] - mb);
        aa += (ea[i] - ma).powi(2);
        bb += (eb[i] - mb).powi(2);
    }
    ab / (aa * bb).sqrt()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

// ---------------------------------------------------------------- the session on a fake clock

fn params(codec: Codec, ai: AiFormat) -> MediaParams {
    MediaParams {
        negotiated: Negotiated {
            codec,
            dtmf_payload_type: Some(101),
            remote_rtp: CARRIER.parse().unwrap(),
            ptime_ms: 20,
            fmtp: None,
        },
        ai_format: ai,
        jitter: JitterConfig::default(),
        opus: OpusTuning::default(),
        ssrc: 0x7261_6e6b,
        initial_seq: 7,
        initial_timestamp: 0,
        cname: "quality@trunkguard".into(),
        ntp_now: 0,
        seed: 11,
    }
}

/// The caller's RTP stream for `payloads`, one packet per 20 ms slot.
fn rtp_stream(pt: u8, ticks: u32, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = RtpOut::new(pt, CALLER_SSRC, SEQ0, TS0);
    payloads.iter().map(|p| out.packet(p, ticks)).collect()
}

/// One frame handed to the AI side.
#[derive(Debug, Clone)]
struct OutFrame {
    /// The 20 ms slot (packet index) it stands for.
    slot: usize,
    /// Concealed (no packet in time) rather than decoded.
    concealed: bool,
    /// When it reached the AI side, since t0.
    at: Duration,
    pcm: Vec<i16>,
}

/// Everything one run produced.
struct Run {
    frames: Vec<OutFrame>,
    stats: CallMediaStats,
    counters: MediaCounters,
    /// Frames released but dropped by the session's caller queue before the AI side could
    /// take them (more than 10 released at one instant): (slot, concealed).
    dropped: Vec<(usize, bool)>,
}

/// Feeds packet `k` of `packets` at `t0 + arrival[k]` (None: lost in the network) into a
/// session for `codec` / `ai`, driving `handle_timeout` on a fake clock until 1 s after the
/// last arrival; collects every caller frame the AI side gets, labelled by the shadow buffer.
fn run_session(
    codec: Codec,
    ai: AiFormat,
    packets: &[Vec<u8>],
    arrival: &[Option<Duration>],
) -> Run {
    let ticks = codec.clock_rate / 50;
    let t0 = Instant::now();
    let mut s = MediaSession::new(params(codec, ai), t0).unwrap();
    let mut shadow = JitterBuffer::new(JitterConfig {
        clock_rate: codec.clock_rate,
        frame_ms: 20,
        ..JitterConfig::default()
    });
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut order: Vec<(Duration, usize)> =
        arrival.iter().enumerate().filter_map(|(k, a)| a.map(|a| (a, k))).collect();
    order.sort(); // by arrival, then by send order
    let end = t0 + order.last().map_or(Duration::ZERO, |a| a.0) + Duration::from_secs(1);
    let (mut next_packet, mut frames, mut dropped) = (0, Vec::new(), Vec::new());
    let mut last_handled: Option<Instant> = None;
    loop {
        let arrival_due = order.get(next_packet).map(|a| t0 + a.0);
        let Some(mut now) = [arrival_due, s.poll_timeout()].into_iter().flatten().min() else {
            break;
        };
        if let Some(last) = last_handled {
            now = now.max(last + Duration::from_millis(1));
        }
        if now > end {
            break;
        }
        while order.get(next_packet).is_some_and(|a| t0 + a.0 <= now) {
            let data = &packets[order[next_packet].1];
            let info = inspect(data).unwrap();
            s.on_rtp(now, from, data);
            shadow.push(
                now,
                &info,
                &data[info.payload_offset..info.payload_offset + info.payload_len],
            );
            next_packet += 1;
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
            last_handled = Some(now);
            let labels: Vec<Frame> = std::iter::from_fn(|| shadow.poll_frame(now)).collect();
            let audio: Vec<Vec<i16>> = std::iter::from_fn(|| s.poll_caller_audio()).collect();
            assert!(audio.len() <= labels.len(), "the shadow buffer lost step");
            // An overflow of the session's caller queue drops the oldest frames.
            let skip = labels.len() - audio.len();
            let mut labels = labels.into_iter().map(|label| match label {
                Frame::Audio { timestamp, .. } => {
                    ((timestamp.wrapping_sub(TS0) / ticks) as usize, false)
                }
                Frame::Lost { timestamp } => ((timestamp.wrapping_sub(TS0) / ticks) as usize, true),
            });
            dropped.extend(labels.by_ref().take(skip));
            for ((slot, concealed), pcm) in labels.zip(audio) {
                frames.push(OutFrame { slot, concealed, at: now - t0, pcm });
            }
        }
        while s.poll_transmit().is_some() {}
    }
    let counters = s.counters();
    assert_eq!(counters.decode_errors, 0);
    assert_eq!(
        counters.caller_frames,
        (frames.len() + dropped.len()) as u64,
        "shadow and session release the same frames"
    );
    assert_eq!(counters.caller_frames_unconsumed, dropped.len() as u64);
    let concealed =
        frames.iter().filter(|f| f.concealed).count() + dropped.iter().filter(|d| d.1).count();
    assert_eq!(
        counters.concealed_frames, concealed as u64,
        "shadow and session conceal the same frames"
    );
    Run { frames, stats: s.stats(), counters, dropped }
}

/// Arrival times with no impairment: every packet 10 ms after it was sent.
fn clean_arrivals(n: usize) -> Vec<Option<Duration>> {
    (0..n).map(|k| Some(FRAME * k as u32 + Duration::from_millis(10))).collect()
}

/// The AI-side audio laid out by slot (slots never played stay silent), `frame_len` per slot.
fn timeline(run: &Run, slots: usize, frame_len: usize) -> Vec<i16> {
    let mut y = vec![0i16; slots * frame_len];
    for f in run.frames.iter().filter(|f| f.slot < slots) {
        y[f.slot * frame_len..(f.slot + 1) * frame_len].copy_from_slice(&f.pcm);
    }
    y
}

// ---------------------------------------------------------------- traces

/// One network condition: per packet, the delay after its send time, or lost.
struct Trace {
    name: &'static str,
    seed: u64,
    arrivals: Vec<Option<Duration>>,
}

const BASE_DELAY: Duration = Duration::from_millis(10);

fn send_time(k: usize) -> Duration {
    FRAME * k as u32
}

/// (a) independent 5 % loss.
fn trace_loss(n: usize, p: f64, seed: u64) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let arrivals = (0..n).map(|k| (!rng.gen_bool(p)).then(|| send_time(k) + BASE_DELAY)).collect();
    Trace { name: "loss 5 %", seed, arrivals }
}

/// (b) 30 ms jitter: each packet delayed by a uniform 0..60 ms on top of the base delay
/// (mean 30 ms; packets overtake each other whenever the delays differ by more than 20 ms).
fn trace_jitter(n: usize, seed: u64) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let arrivals = (0..n)
        .map(|k| Some(send_time(k) + BASE_DELAY + Duration::from_micros(rng.gen_range(0..60_000))))
        .collect();
    Trace { name: "jitter 30 ms", seed, arrivals }
}

/// (c) both: 5 % loss and 30 ms jitter.
fn trace_loss_and_jitter(n: usize, seed: u64) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let arrivals = (0..n)
        .map(|k| {
            let delay = Duration::from_micros(rng.gen_range(0..60_000));
            (!rng.gen_bool(0.05)).then(|| send_time(k) + BASE_DELAY + delay)
        })
        .collect();
    Trace { name: "loss 5 % + jitter 30 ms", seed, arrivals }
}

/// (d) a 500 ms stall: from 5 s on the network holds packets for 500 ms and delivers them
/// in one burst (each also with ±2 ms of ordinary jitter outside the stall).
fn trace_burst(n: usize, seed: u64) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let stall_start = Duration::from_secs(5);
    let stall_end = stall_start + Duration::from_millis(500);
    let arrivals = (0..n)
        .map(|k| {
            let normal = send_time(k) + BASE_DELAY + Duration::from_micros(rng.gen_range(0..2_000));
            Some(if normal >= stall_start && normal < stall_end { stall_end } else { normal })
        })
        .collect();
    Trace { name: "500 ms stall", seed, arrivals }
}

/// Figures of one PCMU trace run (G.711 AI side, so slots line up sample-exactly).
#[derive(Debug)]
struct Figures {
    frames: usize,
    concealed: usize,
    skipped: usize,
    concealment_rate: f64,
    mean_delay_ms: f64,
    p95_delay_ms: f64,
    max_delay_ms: f64,
    late: u64,
    target_ms: u32,
    mos: f64,
    loss_percent: f64,
    dropped_at_ai_queue: usize,
    corr_plc: f64,
    corr_zero_fill: f64,
    /// Mean correlation with the lost audio inside concealed frames with speech in them
    /// (zero-filling scores 0 there), and the energy of the concealment relative to it (total
    /// over those frames).
    corr_in_concealed: f64,
    energy_ratio_in_concealed: f64,
    env_plc: f64,
    env_zero_fill: f64,
}

/// A 20 ms frame with more than this energy (rms ~80) holds speech.
const SPEECH_FRAME_ENERGY: f64 = 1e6;

fn pcmu_trace(trace: &Trace, x8k: &[i16]) -> (Run, Figures) {
    let payloads = ulaw_payloads(x8k);
    let n = payloads.len();
    let packets = rtp_stream(0, 160, &payloads);
    let run = run_session(Codec::PCMU, AiFormat::G711(Law::Ulaw), &packets, &trace.arrivals);
    // What a perfect network would have handed over: the payloads decoded.
    let clean: Vec<i16> = payloads.iter().flat_map(|p| Law::Ulaw.decode(p)).collect();
    let in_stream: Vec<&OutFrame> = run.frames.iter().filter(|f| f.slot < n).collect();
    let mut played = vec![false; n];
    let mut zero_fill = clean.clone();
    for f in &in_stream {
        played[f.slot] = true;
        if f.concealed {
            zero_fill[f.slot * 160..(f.slot + 1) * 160].fill(0);
        }
    }
    for (slot, _) in played.iter().enumerate().filter(|(_, p)| !**p) {
        zero_fill[slot * 160..(slot + 1) * 160].fill(0);
    }
    // The labels are right: a frame decoded (not concealed, not cross-faded after a
    // concealed one) is exactly its payload decoded.
    for w in run.frames.windows(2).filter(|w| w[1].slot < n && !w[0].concealed && !w[1].concealed) {
        assert_eq!(
            w[1].pcm[..],
            clean[w[1].slot * 160..(w[1].slot + 1) * 160],
            "slot {}",
            w[1].slot
        );
    }
    let (mut corr_in, mut energy_in) = (Vec::new(), Vec::new());
    let energy = |a: &[i16]| a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    for f in in_stream.iter().filter(|f| f.concealed) {
        let lost = &clean[f.slot * 160..(f.slot + 1) * 160];
        if energy(lost) > SPEECH_FRAME_ENERGY {
            corr_in.push(ncc(lost, &f.pcm));
            energy_in.push((energy(&f.pcm), energy(lost)));
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let y = timeline(&run, n, 160);
    let mut delays: Vec<f64> =
        in_stream.iter().map(|f| (f.at - send_time(f.slot)).as_secs_f64() * 1000.0).collect();
    delays.sort_by(f64::total_cmp);
    let concealed = in_stream.iter().filter(|f| f.concealed).count();
    let figures = Figures {
        frames: in_stream.len(),
        concealed,
        skipped: played.iter().filter(|p| !**p).count(),
        concealment_rate: concealed as f64 / in_stream.len() as f64,
        mean_delay_ms: delays.iter().sum::<f64>() / delays.len() as f64,
        p95_delay_ms: percentile(&delays, 0.95),
        max_delay_ms: percentile(&delays, 1.0),
        late: run.stats.packets_late,
        target_ms: run.stats.jitter_buffer_target_ms,
        mos: run.stats.mos_inbound.unwrap_or(0.0),
        loss_percent: run.stats.loss_percent,
        dropped_at_ai_queue: run.dropped.iter().filter(|d| d.0 < n).count(),
        corr_in_concealed: mean(&corr_in),
        energy_ratio_in_concealed: energy_in.iter().map(|e| e.0).sum::<f64>()
            / energy_in.iter().map(|e| e.1).sum::<f64>(),
        corr_plc: ncc(&clean, &y),
        corr_zero_fill: ncc(&clean, &zero_fill),
        env_plc: envelope_correlation(&clean, &y, 80),
        env_zero_fill: envelope_correlation(&clean, &zero_fill, 80),
    };
    (run, figures)
}

fn print_figures(tag: &str, trace: &Trace, f: &Figures) {
    eprintln!("== media_quality: {} (PCMU caller -> G.711 AI, seed {}) ==", trace.name, trace.seed);
    eprintln!("{tag}.frames: {}", f.frames);
    eprintln!("{tag}.concealed_frames: {}", f.concealed);
    eprintln!("{tag}.concealment_rate: {:.2} %", f.concealment_rate * 100.0);
    eprintln!("{tag}.slots_never_played: {}", f.skipped);
    eprintln!("{tag}.late_packets: {}", f.late);
    eprintln!("{tag}.frames_dropped_at_ai_queue: {}", f.dropped_at_ai_queue);
    eprintln!("{tag}.added_delay_mean: {:.1} ms", f.mean_delay_ms);
    eprintln!("{tag}.added_delay_p95: {:.1} ms", f.p95_delay_ms);
    eprintln!("{tag}.added_delay_max: {:.1} ms", f.max_delay_ms);
    eprintln!("{tag}.jitter_buffer_target_end: {} ms", f.target_ms);
    eprintln!("{tag}.heard_loss: {:.2} %", f.loss_percent);
    eprintln!("{tag}.mos: {:.2}", f.mos);
    eprintln!("{tag}.correlation_plc: {:.4}", f.corr_plc);
    eprintln!("{tag}.correlation_zero_fill: {:.4}", f.corr_zero_fill);
    eprintln!("{tag}.correlation_inside_concealed_frames: {:.3}", f.corr_in_concealed);
    eprintln!("{tag}.energy_ratio_inside_concealed_frames: {:.2}", f.energy_ratio_in_concealed);
    eprintln!("{tag}.envelope_correlation_plc: {:.4}", f.env_plc);
    eprintln!("{tag}.envelope_correlation_zero_fill: {:.4}", f.env_zero_fill);
    eprintln!("== end {} ==", trace.name);
}

/// Speech repeated three times: 18.7 s, 936 packets per trace.
const TRACE_REPEATS: usize = 3;

fn no_impairment(n: usize) -> Trace {
    Trace { name: "no impairment", seed: 0, arrivals: clean_arrivals(n) }
}

// ---------------------------------------------------------------- G.711 bit-exactness

#[test]
fn g711_passes_through_the_session_unaltered_both_ways() {
    let x = speech();
    let payloads = ulaw_payloads(&x);
    let n = payloads.len();
    let packets = rtp_stream(0, 160, &payloads);
    // μ-law has two codes for 0: 0xFF and 0x7F ("negative zero", what small negative
    // samples encode to). Quiet speech is full of 0x7F.
    let negative_zeros = payloads.iter().flatten().filter(|b| **b == 0x7F).count();
    assert!(negative_zeros > 100, "the speech exercises negative zero: {negative_zeros}");

    // Caller -> AI through the session: the AI side gets PCM; μ-law again, it is the payload,
    // except that PCM cannot tell negative zero from zero.
    let run = run_session(Codec::PCMU, AiFormat::G711(Law::Ulaw), &packets, &clean_arrivals(n));
    let in_stream: Vec<&OutFrame> = run.frames.iter().filter(|f| f.slot < n).collect();
    assert_eq!(in_stream.len(), n);
    assert!(in_stream.iter().enumerate().all(|(i, f)| f.slot == i && !f.concealed));
    let (mut changed, mut frames_exact) = (0, 0);
    for f in &in_stream {
        let mut bytes = Vec::new();
        Law::Ulaw.encode_into(&f.pcm, &mut bytes);
        let mut exact = true;
        for (a, b) in bytes.iter().zip(&payloads[f.slot]) {
            if a != b {
                assert_eq!((*b, *a), (0x7F, 0xFF), "only negative zero may change on the PCM path");
                changed += 1;
                exact = false;
            }
        }
        frames_exact += usize::from(exact);
    }
    assert_eq!(changed, negative_zeros, "every other byte arrives unchanged");

    // The byte path of the same pipeline keeps even negative zero.
    let mut t =
        Transcoder::new(&Codec::PCMU, &Default::default(), AiFormat::G711(Law::Ulaw)).unwrap();
    for p in &payloads {
        assert_eq!(t.caller_to_ai_bytes(Some(p)).unwrap(), &p[..]);
        let mut back = Vec::new();
        t.ai_bytes_to_caller(p, &mut back).unwrap();
        assert_eq!(&back, p);
    }

    // AI -> caller: μ-law AI audio pushed (as PCM, the session's AI interface) comes out as
    // the same bytes (negative zero aside) in consecutive RTP packets on the 20 ms clock.
    let ai_bytes: Vec<u8> = ulaw_payloads(&x).concat();
    let t0 = Instant::now();
    let mut s = MediaSession::new(params(Codec::PCMU, AiFormat::G711(Law::Ulaw)), t0).unwrap();
    for chunk in Law::Ulaw.decode(&ai_bytes).chunks(160) {
        s.push_ai_audio(t0, chunk).unwrap();
    }
    s.start(t0);
    let mut sent = Vec::new();
    let mut now = t0;
    while now <= t0 + FRAME * (n as u32 + 5) {
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        while let Some(tx) = s.poll_transmit() {
            if !tx.rtcp {
                sent.push((now, tx.data));
            }
        }
        now += Duration::from_millis(1);
    }
    // one packet per 20 ms of AI audio, then comfort noise: the stream never stops
    assert_eq!(sent.len(), n + 6, "one packet per 20 ms, all along");
    for (_, data) in &sent[n..] {
        let info = inspect(data).unwrap();
        let payload = &data[info.payload_offset..info.payload_offset + info.payload_len];
        assert!(!info.marker && Law::Ulaw.decode(payload).iter().all(|s| s.abs() <= 8));
    }
    sent.truncate(n);
    let mut rx = Vec::new();
    for (k, (at, data)) in sent.iter().enumerate() {
        let info = inspect(data).unwrap();
        assert_eq!(info.payload_type, 0);
        assert_eq!(info.seq, 7u16.wrapping_add(k as u16));
        assert_eq!(info.timestamp, 160 * k as u32);
        assert_eq!(*at - t0, FRAME * k as u32, "on the 20 ms clock");
        rx.extend_from_slice(&data[info.payload_offset..info.payload_offset + info.payload_len]);
    }
    assert_eq!(rx.len(), ai_bytes.len());
    let mut reverse_changed = 0;
    for (sent_byte, ai_byte) in rx.iter().zip(&ai_bytes) {
        if sent_byte != ai_byte {
            assert_eq!(
                (*ai_byte, *sent_byte),
                (0x7F, 0xFF),
                "AI μ-law reaches the caller unchanged"
            );
            reverse_changed += 1;
        }
    }
    assert_eq!(reverse_changed, negative_zeros, "every other byte arrives unchanged");

    eprintln!("== media_quality: G.711 passthrough ==");
    eprintln!("g711.caller_to_ai_session_frames_bit_exact: {frames_exact}/{n}");
    eprintln!("g711.caller_to_ai_session_bytes_changed: {changed} of {} (all 0x7F -> 0xFF, both decode to 0)", n * 160);
    eprintln!("g711.caller_to_ai_transcoder_bytes_path: {} bytes bit-exact (incl. 0x7F)", n * 160);
    eprintln!(
        "g711.ai_to_caller_session_bytes_changed: {reverse_changed} of {} in {} packets (all 0x7F -> 0xFF)",
        rx.len(),
        sent.len()
    );
    eprintln!("== end G.711 passthrough ==");
}

// ---------------------------------------------------------------- transcoded paths

/// Clean network; the AI-side audio as one signal (slots in order, none concealed).
fn transcoded_ai_audio(codec: Codec, ai: AiFormat, payloads: &[Vec<u8>]) -> (Vec<i16>, Run) {
    let ticks = codec.clock_rate / 50;
    let pt = codec.payload_type;
    let packets = rtp_stream(pt, ticks, payloads);
    let run = run_session(codec, ai, &packets, &clean_arrivals(payloads.len()));
    let n = payloads.len();
    let in_stream: Vec<&OutFrame> = run.frames.iter().filter(|f| f.slot < n).collect();
    assert_eq!(in_stream.len(), n);
    assert!(in_stream.iter().enumerate().all(|(i, f)| f.slot == i && !f.concealed));
    let frame_len = ai.rate().frame_len();
    assert!(in_stream.iter().all(|f| f.pcm.len() == frame_len));
    (timeline(&run, n, frame_len), run)
}

fn report_transcoded(tag: &str, title: &str, rate: Rate, lag: i64, corr: f64, run: &Run) {
    let delays: Vec<f64> =
        run.frames.iter().map(|f| (f.at - send_time(f.slot)).as_secs_f64() * 1000.0).collect();
    let mean = delays.iter().sum::<f64>() / delays.len() as f64;
    eprintln!("== media_quality: {title} ==");
    eprintln!("{tag}.correlation_at_best_lag: {corr:.4}");
    eprintln!(
        "{tag}.codec_delay: {lag} samples at {} Hz = {:.2} ms",
        rate.hz(),
        lag as f64 * 1000.0 / f64::from(rate.hz())
    );
    eprintln!(
        "{tag}.jitter_buffer_delay_mean: {mean:.1} ms (send -> AI side, incl. 10 ms network)"
    );
    eprintln!("{tag}.mos: {:.2}", run.stats.mos_inbound.unwrap_or(0.0));
    eprintln!("== end {title} ==");
}

#[test]
fn opus_caller_to_24k_ai_keeps_the_speech() {
    let x = speech();
    let (y, run) =
        transcoded_ai_audio(Codec::opus(111), AiFormat::Pcm(Rate::Hz24000), &opus_payloads(&x));
    let reference = upsample_linear(&x, 3);
    // Opus look-ahead plus the caller's 8 -> 48 kHz resampler: well under 20 ms.
    let (lag, corr) = best_lag(&reference, &y, 24 * 20);
    report_transcoded("opus24k", "Opus caller -> 24 kHz PCM AI", Rate::Hz24000, lag, corr, &run);
    assert!(corr > 0.85, "correlation {corr} at lag {lag}");
    assert!(
        (24..=24 * 15).contains(&lag),
        "codec delay {lag} samples at 24 kHz: 1 to 15 ms expected"
    );
    // A misaligned comparison must not pass: 5 ms off, speech decorrelates.
    let off = lag as usize + 120;
    let c_off = ncc(&reference, &y[off..]);
    assert!(c_off < 0.5, "correlation {c_off} 5 ms off the best lag");
    assert!(run.stats.mos_inbound.unwrap_or(0.0) > 4.0, "{:?}", run.stats);
}

#[test]
fn pcmu_caller_to_16k_ai_keeps_the_speech() {
    let x = speech();
    let (y, run) =
        transcoded_ai_audio(Codec::PCMU, AiFormat::Pcm(Rate::Hz16000), &ulaw_payloads(&x));
    let reference = upsample_linear(&x, 2);
    let (lag, corr) = best_lag(&reference, &y, 16 * 20);
    report_transcoded("pcmu16k", "PCMU caller -> 16 kHz PCM AI", Rate::Hz16000, lag, corr, &run);
    assert!(corr > 0.95, "correlation {corr} at lag {lag}");
    // The resampler documents 2.0 to 2.25 ms.
    assert!((32..=36).contains(&lag), "resampling delay {lag} samples at 16 kHz");
    let c_off = ncc(&reference, &y[lag as usize + 80..]);
    assert!(c_off < 0.5, "correlation {c_off} 5 ms off the best lag");
}

// ---------------------------------------------------------------- loss and jitter traces

#[test]
fn trace_no_impairment_baseline() {
    let x = speech_repeated(TRACE_REPEATS);
    let trace = no_impairment(x.len() / 160);
    let (run, f) = pcmu_trace(&trace, &x);
    print_figures("clean", &trace, &f);
    assert_eq!((f.concealed, f.skipped, f.late), (0, 0, 0));
    assert!(f.corr_plc > 0.9999, "clean decode must be exact: {}", f.corr_plc);
    // Constant 10 ms network delay: the buffer settles near its 20 ms floor.
    assert!(f.mean_delay_ms < 60.0 && f.p95_delay_ms < 60.0, "{f:?}");
    assert!(f.target_ms <= 30, "{f:?}");
    assert!(run.stats.mos_inbound.unwrap_or(0.0) > 4.3, "{:?}", run.stats);
}

#[test]
fn trace_5_percent_loss_is_concealed() {
    let x = speech_repeated(TRACE_REPEATS);
    let n = x.len() / 160;
    let trace = trace_loss(n, 0.05, 0x105);
    let lost_in_network = trace.arrivals.iter().filter(|a| a.is_none()).count();
    let (run, f) = pcmu_trace(&trace, &x);
    let (_, clean) = pcmu_trace(&no_impairment(n), &x);
    print_figures("loss5", &trace, &f);
    eprintln!("loss5.lost_in_network: {lost_in_network}");
    eprintln!("loss5.mos_without_loss: {:.2}", clean.mos);
    eprintln!("loss5.concealed_frames_incl_end_of_stream: {}", run.counters.concealed_frames);
    // Every packet lost in the network, and nothing else, is concealed in place.
    assert_eq!(f.concealed, lost_in_network, "{f:?}");
    assert_eq!(f.skipped, 0);
    assert!((0.03..=0.09).contains(&f.concealment_rate), "{f:?}");
    assert_eq!(run.stats.packets_lost as usize, lost_in_network);
    // after the last packet the buffer conceals up to max_conceal (3) frames, then stops
    assert!(run.counters.concealed_frames - f.concealed as u64 <= 3, "{:?}", run.counters);
    assert!(f.mos < clean.mos - 0.3, "MOS {} with loss vs {} without", f.mos, clean.mos);
    assert!(f.corr_plc > 0.7, "{f:?}");
    // Concealment is pitch repetition: inside the concealed frames it follows the lost speech
    // (noise or a wrong phase would score about 0, zero-filling scores 0) at its level.
    assert!(f.corr_in_concealed > 0.25, "{f:?}");
    assert!((0.5..=1.6).contains(&f.energy_ratio_in_concealed), "{f:?}");
    // With the next packet at hand the lost frame is interpolated between both sides
    // (extrapolation alone followed the lost speech at 0.43): above about 0.5 inside the gaps,
    // concealment beats zero-filling on waveform correlation over the whole signal too.
    assert!(f.corr_in_concealed > 0.55, "{f:?}");
    assert!(f.corr_plc > f.corr_zero_fill + 0.005, "{f:?}");
    // It also keeps the loudness contour, which zero-filling punches holes in.
    assert!(f.env_plc > f.env_zero_fill + 0.04, "{f:?}");
    // No loss means no added delay: the buffer stays as for a clean stream.
    assert!(f.mean_delay_ms < clean.mean_delay_ms + 5.0, "{f:?} vs {clean:?}");
}

#[test]
fn trace_30ms_jitter_is_absorbed() {
    let x = speech_repeated(TRACE_REPEATS);
    let n = x.len() / 160;
    let trace = trace_jitter(n, 0x30);
    let reordered = trace.arrivals.windows(2).filter(|w| w[1] < w[0]).count();
    let (run, f) = pcmu_trace(&trace, &x);
    print_figures("jitter30", &trace, &f);
    eprintln!("jitter30.reordered_pairs_sent: {reordered}");
    eprintln!("jitter30.rfc3550_jitter: {:.1} ms", run.stats.jitter_ms);
    assert!(reordered > n / 10, "the trace must reorder: {reordered}");
    assert!(f.concealment_rate < 0.03, "{f:?}");
    assert!((f.late as f64) < 0.03 * n as f64, "{f:?}");
    assert!(f.mean_delay_ms < 120.0, "{f:?}");
    // The buffer has to hold more than the 60 ms spread, but not the 200 ms maximum.
    assert!((60..=150).contains(&f.target_ms), "{f:?}");
    assert!(f.mean_delay_ms > 60.0, "delay below the jitter spread cannot be: {f:?}");
    assert!(f.corr_plc > 0.97, "{f:?}");
    assert!(f.mos > 3.8, "{:?}", run.stats);
}

#[test]
fn trace_5_percent_loss_with_30ms_jitter() {
    let x = speech_repeated(TRACE_REPEATS);
    let n = x.len() / 160;
    let trace = trace_loss_and_jitter(n, 0xC0);
    let lost_in_network = trace.arrivals.iter().filter(|a| a.is_none()).count();
    let (run, f) = pcmu_trace(&trace, &x);
    let (_, clean) = pcmu_trace(&no_impairment(n), &x);
    print_figures("loss5jitter30", &trace, &f);
    eprintln!("loss5jitter30.lost_in_network: {lost_in_network}");
    assert!(f.concealed >= lost_in_network, "{f:?}");
    assert!(f.concealed <= lost_in_network + n * 3 / 100, "late frames beyond 3 %: {f:?}");
    assert!((0.03..=0.12).contains(&f.concealment_rate), "{f:?}");
    assert!(f.mean_delay_ms < 120.0, "{f:?}");
    assert!(f.corr_plc > 0.7 && f.corr_plc > f.corr_zero_fill - 0.02, "{f:?}");
    assert!(f.corr_in_concealed > 0.25, "{f:?}");
    assert!(f.env_plc > f.env_zero_fill + 0.04, "{f:?}");
    assert!(f.mos < clean.mos - 0.3, "{:?}", run.stats);
}

#[test]
fn trace_500ms_stall_recovers() {
    let x = speech_repeated(TRACE_REPEATS);
    let n = x.len() / 160;
    let trace = trace_burst(n, 0x500);
    let (run, f) = pcmu_trace(&trace, &x);
    print_figures("stall500", &trace, &f);
    // Delay before, right after and long after the stall (slots by send time).
    let window = |from_s: f64, to_s: f64| -> (f64, usize) {
        let d: Vec<f64> = run
            .frames
            .iter()
            .filter(|fr| fr.slot < n && !fr.concealed)
            .filter(|fr| {
                let t = send_time(fr.slot).as_secs_f64();
                t >= from_s && t < to_s
            })
            .map(|fr| (fr.at - send_time(fr.slot)).as_secs_f64() * 1000.0)
            .collect();
        (d.iter().sum::<f64>() / d.len().max(1) as f64, d.len())
    };
    let before = window(3.0, 5.0);
    let after = window(5.6, 7.0);
    let end = window(16.0, 18.7);
    eprintln!("stall500.added_delay_before: {:.1} ms", before.0);
    eprintln!("stall500.added_delay_0.6_2s_after: {:.1} ms", after.0);
    eprintln!("stall500.added_delay_11s_after: {:.1} ms", end.0);
    let recovered_at = run
        .frames
        .iter()
        .filter(|fr| fr.slot < n && send_time(fr.slot) > Duration::from_millis(5500))
        .find(|fr| fr.at - send_time(fr.slot) < Duration::from_secs_f64((before.0 + 5.0) / 1000.0))
        .map(|fr| send_time(fr.slot).as_secs_f64() - 5.0);
    eprintln!("stall500.delay_back_to_normal_after: {:.1} s", recovered_at.unwrap_or(f64::NAN));
    // The stall becomes a pause: the buffer conceals up to max_conceal (3) frames, stops its
    // clock, and plays the burst; only packets whose slots were concealed are late.
    assert!((1..=6).contains(&f.concealed), "{f:?}");
    assert!(f.late <= 5, "{f:?}");
    assert_eq!(
        (f.skipped, f.dropped_at_ai_queue),
        (0, 0),
        "the burst reaches the AI side whole: {f:?}"
    );
    assert!(before.0 < 40.0, "{before:?}");
    // Then the buffer protects against a repeat (target up to max_delay, 200 ms) ...
    assert!((150.0..=240.0).contains(&after.0), "{after:?}");
    // ... and shrinks back (1 ms per frame once the stall leaves the 100-packet window).
    let back = recovered_at.expect("the delay comes back down");
    assert!((3.0..=8.0).contains(&back), "back to normal {back} s after the stall");
    assert!(end.0 < before.0 + 5.0, "before {before:?}, end {end:?}");
}

/// (e) silence suppression (VAD/DTX, as some carriers send): only frames with speech are
/// sent, with continuous sequence numbers, timestamps that skip the silences and the marker
/// bit at each talk spurt. No packet is lost.
#[test]
fn trace_silence_suppression_loses_nothing() {
    let x = speech_repeated(TRACE_REPEATS);
    let payloads = ulaw_payloads(&x);
    let n = payloads.len();
    let energy =
        |p: &Vec<u8>| Law::Ulaw.decode(p).iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    // active: speech, plus 2 frames of hangover
    let voiced: Vec<bool> = payloads.iter().map(|p| energy(p) > SPEECH_FRAME_ENERGY).collect();
    let active: Vec<bool> = (0..n).map(|k| (k.saturating_sub(2)..=k).any(|j| voiced[j])).collect();
    let mut out = RtpOut::new(0, CALLER_SSRC, SEQ0, TS0);
    let (mut packets, mut arrivals, mut spurts) = (Vec::new(), Vec::new(), 0);
    for k in 0..n {
        if !active[k] {
            continue;
        }
        let starts = k == 0 || !active[k - 1];
        if starts {
            out.mark_spurt();
            spurts += 1;
        }
        packets.push(out.packet_at(0, &payloads[k], TS0.wrapping_add(160 * k as u32), false));
        arrivals.push(Some(send_time(k) + BASE_DELAY));
    }
    let run = run_session(Codec::PCMU, AiFormat::G711(Law::Ulaw), &packets, &arrivals);
    let clean: Vec<i16> = payloads.iter().flat_map(|p| Law::Ulaw.decode(p)).collect();
    let decoded: Vec<&OutFrame> =
        run.frames.iter().filter(|f| f.slot < n && !f.concealed).collect();
    let concealed = run.frames.iter().filter(|f| f.concealed).count();
    let y = timeline(&run, n, 160);
    let masked: Vec<i16> = clean
        .chunks_exact(160)
        .zip(&active)
        .flat_map(|(f, a)| f.iter().map(move |v| if *a { *v } else { 0 }))
        .collect();
    let corr = ncc(&masked, &y);
    eprintln!("== media_quality: silence suppression (PCMU caller -> G.711 AI) ==");
    eprintln!("dtx.slots: {n}");
    eprintln!("dtx.packets_sent: {}", packets.len());
    eprintln!("dtx.talk_spurts: {spurts}");
    eprintln!("dtx.frames_decoded: {}", decoded.len());
    eprintln!("dtx.frames_concealed: {concealed}");
    eprintln!("dtx.packets_lost: {}", run.stats.packets_lost);
    eprintln!("dtx.heard_loss: {:.2} %", run.stats.loss_percent);
    eprintln!("dtx.mos: {:.2}", run.stats.mos_inbound.unwrap_or(0.0));
    eprintln!("dtx.jitter_buffer_target_end: {} ms", run.stats.jitter_buffer_target_ms);
    eprintln!("dtx.correlation_with_sent_audio: {corr:.4}");
    eprintln!("== end silence suppression ==");
    assert!(
        spurts >= 6 && packets.len() < n * 9 / 10,
        "the trace suppresses silences: {spurts} spurts"
    );
    assert_eq!(decoded.len(), packets.len(), "every packet played");
    assert_eq!(run.stats.packets_lost, 0);
    assert!(corr > 0.99, "{corr}");
    // The buffer cannot tell a pause from a loss: it conceals up to 3 frames after each spurt
    // (faded PLC, harmless to hear) and counts them as heard loss.
    assert!(concealed <= 3 * spurts, "{concealed} concealed for {spurts} spurts");
}

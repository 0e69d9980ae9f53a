//! A call's media on a fake clock: the prompt in each codec, the receive path through the
//! jitter buffer, symmetric RTP, bad input, telephone-events both ways, RTCP, AI audio.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::core::media::codec::opus::OpusDecoder;
use crate::core::media::codec::opus::OpusTuning;
use crate::core::media::dtmf::{build_rtp, DtmfKey};
use crate::core::media::g711::Law;
use crate::core::media::rtp::inspect;
use crate::core::sdp::Codec;

const CARRIER: &str = "127.0.0.2:6000";

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
        ssrc: 0x1234_5678,
        initial_seq: 100,
        initial_timestamp: 1000,
        cname: "test@trunkguard".into(),
        ntp_now: 0,
        seed: 3,
    }
}

fn pcmu_session(t0: Instant) -> MediaSession {
    MediaSession::new(params(Codec::PCMU, AiFormat::G711(Law::Ulaw)), t0).unwrap()
}

/// Advances in 1 ms steps, collecting every datagram sent.
fn run(s: &mut MediaSession, from: Instant, to: Instant) -> Vec<MediaTransmit> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        while let Some(t) = s.poll_transmit() {
            out.push(t);
        }
        now += Duration::from_millis(1);
    }
    out
}

fn rtp_packets(out: &[MediaTransmit]) -> Vec<&MediaTransmit> {
    out.iter().filter(|t| !t.rtcp).collect()
}

fn caller_packet(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = RtpOut::new(pt, 0xcafe, seq, ts);
    out.packet_at(pt, payload, ts, false)
}

#[test]
fn the_prompt_plays_in_pcmu_at_50_packets_per_second_and_matches_the_wav() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let prompt = Prompt::high_demand().unwrap();
    s.play_prompt(prompt.clone());
    s.start(t0);
    let out = run(&mut s, t0, t0 + Duration::from_millis(999));
    let rtp = rtp_packets(&out);
    assert_eq!(rtp.len(), 50);
    assert!(rtp.iter().all(|t| t.to == CARRIER.parse::<SocketAddr>().unwrap()));
    let first = inspect(&rtp[0].data).unwrap();
    assert!(first.marker);
    assert_eq!((first.payload_type, first.seq, first.timestamp), (0, 100, 1000));
    let second = inspect(&rtp[1].data).unwrap();
    assert_eq!((second.seq, second.timestamp), (101, 1160));
    // decoded back, the first second is the WAV's first second within G.711 error
    let decoded: Vec<i16> = rtp
        .iter()
        .flat_map(|t| {
            let i = inspect(&t.data).unwrap();
            Law::Ulaw.decode(&t.data[i.payload_offset..i.payload_offset + i.payload_len])
        })
        .collect();
    for (a, b) in decoded.iter().zip(prompt.samples()) {
        let err = (*a as i32 - *b as i32).abs();
        assert!(err <= (b.unsigned_abs() as i32 / 16).max(8), "{a} vs {b}");
    }
}

#[test]
fn the_prompt_finishes_once_and_comfort_noise_carries_on_unmarked() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let prompt = Prompt::from_samples(vec![1000; 800]).unwrap(); // 100 ms
    s.play_prompt(prompt);
    s.start(t0);
    let out = run(&mut s, t0, t0 + Duration::from_millis(499));
    let rtp = rtp_packets(&out);
    assert_eq!(rtp.len(), 25, "50 packets per second, prompt or not");
    assert_eq!(s.poll_event(), Some(MediaEvent::PromptFinished));
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.counters().rtp_sent, 25);
    assert_eq!(s.counters().comfort_frames, 20);
    assert_continuous(&rtp, 100, 1000, 160);
    assert_eq!(markers(&rtp), vec![0], "only the prompt's start is a talk spurt");
    for t in &rtp[5..] {
        assert!(level(t) <= 8, "comfort noise is low-level: {}", level(t));
    }
}

/// Sequence numbers and timestamps go up by one packet and one frame, from `seq` and `ts`.
fn assert_continuous(rtp: &[&MediaTransmit], seq: u16, ts: u32, ticks: u32) {
    for (k, t) in rtp.iter().enumerate() {
        let i = inspect(&t.data).unwrap();
        assert_eq!(i.seq, seq.wrapping_add(k as u16), "packet {k}");
        assert_eq!(i.timestamp, ts.wrapping_add(ticks * k as u32), "packet {k}");
    }
}

/// Indexes of the packets with the marker bit.
fn markers(rtp: &[&MediaTransmit]) -> Vec<usize> {
    rtp.iter()
        .enumerate()
        .filter(|(_, t)| inspect(&t.data).unwrap().marker)
        .map(|(k, _)| k)
        .collect()
}

/// The loudest sample of a PCMU packet.
fn level(t: &MediaTransmit) -> i16 {
    let i = inspect(&t.data).unwrap();
    let payload = &t.data[i.payload_offset..i.payload_offset + i.payload_len];
    Law::Ulaw.decode(payload).iter().map(|s| s.saturating_abs()).max().unwrap_or(0)
}

#[test]
fn fifty_packets_a_second_whatever_the_agent_does() {
    // quiet, a 300 ms response, a barge-in flush mid-response, a mute stretch, jittered
    // chunks, a burst: the caller-bound stream holds 50 packets/s with continuous sequence
    // numbers and timestamps, and a marker only where agent speech starts after quiet
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let ms = Duration::from_millis;
    let speech: Vec<i16> = (0..160).map(|i| ((i as f32 * 0.3).sin() * 6000.0) as i16).collect();
    let mut out = run(&mut s, t0, t0 + ms(199));
    for k in 0..15u32 {
        s.push_ai_audio_at(t0 + ms(200) + ms(20) * k, &speech).unwrap();
        out.extend(run(&mut s, t0 + ms(200) + ms(20) * k, t0 + ms(219) + ms(20) * k));
    }
    s.flush_ai_audio(); // barge-in at 500 ms
    out.extend(run(&mut s, t0 + ms(500), t0 + ms(1999)));
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(5);
    let mut at = t0 + ms(2000);
    for k in 0..50u32 {
        let late = ms(rand::Rng::gen_range(&mut rng, 0..40));
        let next = (t0 + ms(2000) + ms(20) * k + late).max(at);
        out.extend(run(&mut s, at, next - ms(1)));
        s.push_ai_audio_at(next, &speech).unwrap();
        at = next;
    }
    out.extend(run(&mut s, at, t0 + ms(3999)));
    s.push_ai_audio_at(t0 + ms(4000), &speech.repeat(100)).unwrap(); // a 2 s burst
    out.extend(run(&mut s, t0 + ms(4000), t0 + ms(6999)));
    let rtp = rtp_packets(&out);
    assert_eq!(rtp.len(), 350, "7 s at 50 packets/s");
    assert_continuous(&rtp, 100, 1000, 160);
    let spurts = markers(&rtp);
    assert_eq!(spurts.len(), 3, "three responses (comfort noise is never marked): {spurts:?}");
    assert!(spurts[0] >= 10 && spurts[0] <= 13, "{spurts:?}");
    assert!(s.playout_stats().spurts == 3, "{:?}", s.playout_stats());
    assert!(spurts[1] >= 100 && spurts[1] <= 106, "{spurts:?}");
    assert!(spurts[2] >= 200 && spurts[2] <= 203, "{spurts:?}");
    assert!(s.counters().comfort_frames > 100);
}

#[test]
fn the_prompt_plays_in_opus_for_an_opus_only_caller() {
    let t0 = Instant::now();
    let mut s =
        MediaSession::new(params(Codec::opus(111), AiFormat::Pcm(Rate::Hz24000)), t0).unwrap();
    s.play_prompt(Prompt::high_demand().unwrap());
    s.start(t0);
    let out = run(&mut s, t0, t0 + Duration::from_millis(999));
    let rtp = rtp_packets(&out);
    assert_eq!(rtp.len(), 50);
    let mut dec = OpusDecoder::new(Rate::Hz48000, 1).unwrap();
    let mut energy = 0f64;
    let mut last_ts = None;
    for t in &rtp {
        let i = inspect(&t.data).unwrap();
        assert_eq!(i.payload_type, 111);
        if let Some(prev) = last_ts {
            assert_eq!(i.timestamp.wrapping_sub(prev), 960, "48 kHz RTP clock, 20 ms");
        }
        last_ts = Some(i.timestamp);
        let pcm = dec.decode(&t.data[i.payload_offset..i.payload_offset + i.payload_len]).unwrap();
        energy += pcm.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
    }
    assert!(energy / (50.0 * 960.0) > 1e4, "the Opus prompt is speech, not silence");
}

#[test]
fn received_rtp_goes_through_the_jitter_buffer_to_the_ai_side() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut now = t0;
    for i in 0..50u16 {
        s.on_rtp(now, from, &caller_packet(i, u32::from(i) * 160, 0, &[0x55; 160]));
        run(&mut s, now, now + Duration::from_millis(19));
        now += Duration::from_millis(20);
    }
    // while the stream runs: nothing lost, nothing concealed
    let stats = s.stats();
    assert_eq!(stats.packets_received, 50);
    assert_eq!(stats.concealed_ms, 0, "{stats:?}");
    assert!(stats.mos.is_some_and(|m| m > 4.0), "clean G.711 call: {stats:?}");
    run(&mut s, now, now + Duration::from_millis(300));
    let c = s.counters();
    assert_eq!(c.rtp_received, 50);
    assert!(c.caller_frames >= 50, "every frame decoded: {c:?}");
    let frame = s.poll_caller_audio().expect("decoded caller audio");
    assert_eq!(frame.len(), 160);
    assert!(frame.iter().all(|x| *x == Law::Ulaw.decode(&[0x55])[0]));
}

#[test]
fn rtp_latches_to_the_first_source_and_drops_others() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let real: SocketAddr = "127.0.0.2:7002".parse().unwrap();
    let other: SocketAddr = "127.0.0.66:7002".parse().unwrap();
    s.on_rtp(t0, real, &caller_packet(1, 160, 0, &[0xff; 160]));
    s.on_rtp(t0, other, &caller_packet(2, 320, 0, &[0xff; 160]));
    assert_eq!(s.counters().rtp_wrong_source, 1);
    assert_eq!(s.remote_rtp(), real);
    s.play_prompt(Prompt::from_samples(vec![1; 1600]).unwrap());
    s.start(t0);
    let out = run(&mut s, t0, t0 + Duration::from_millis(100));
    assert!(rtp_packets(&out).iter().all(|t| t.to == real));
}

#[test]
fn bad_rtp_is_counted_never_fatal() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut v1 = caller_packet(1, 160, 0, &[0; 160]);
    v1[0] = 0x40; // version 1
    s.on_rtp(t0, from, &v1);
    s.on_rtp(t0, from, &[0x80, 0]); // short
    s.on_rtp(t0, from, &caller_packet(2, 320, 99, &[0; 160])); // unknown payload type
    let mut pad = caller_packet(3, 480, 0, &[0; 10]);
    pad[0] |= 0x20;
    let last = pad.len() - 1;
    pad[last] = 200; // padding longer than the payload
    s.on_rtp(t0, from, &pad);
    let c = s.counters();
    assert_eq!(c.rtp_invalid, 3);
    assert_eq!(c.rtp_unknown_payload_type, 1);
    assert_eq!(c.rtp_received, 0);
    s.on_rtcp(t0, from, &[1, 2, 3]);
    assert_eq!(s.counters().rtcp_invalid, 1);
}

#[test]
fn a_telephone_event_becomes_one_digit() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut tx = DtmfSender::new(101, 8000);
    tx.send_digit(t0, DtmfKey::from_char('5').unwrap(), Duration::from_millis(100)).unwrap();
    let mut seq = 10;
    let mut now = t0;
    for _ in 0..400 {
        while let Some(p) = tx.poll_packet(now, 5000) {
            s.on_rtp(now, from, &build_rtp(&p, 0xcafe, seq).unwrap());
            seq += 1;
        }
        now += Duration::from_millis(1);
    }
    s.handle_timeout(now);
    let digits: Vec<MediaEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(digits.len(), 1, "{digits:?}");
    assert!(matches!(digits[0], MediaEvent::Dtmf { digit: '5', .. }));
}

#[test]
fn digits_are_sent_as_telephone_events_pausing_audio() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.play_prompt(Prompt::high_demand().unwrap());
    s.start(t0);
    assert!(s.send_digits(t0, "1", Duration::from_millis(100)));
    let out = run(&mut s, t0, t0 + Duration::from_millis(400));
    let pts: Vec<u8> =
        rtp_packets(&out).iter().map(|t| inspect(&t.data).unwrap().payload_type).collect();
    assert!(pts.iter().filter(|pt| **pt == 101).count() >= 4, "start, updates, 3 ends: {pts:?}");
    assert!(pts.contains(&0), "audio resumes after the event");
    let first_audio = pts.iter().position(|pt| *pt == 0).unwrap();
    assert!(pts[first_audio..].iter().all(|pt| *pt == 0), "no audio during the event: {pts:?}");
}

#[test]
fn rtcp_reports_go_to_the_port_above_rtp() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.play_prompt(Prompt::high_demand().unwrap());
    s.start(t0);
    let out = run(&mut s, t0, t0 + Duration::from_secs(8));
    let rtcp: Vec<&MediaTransmit> = out.iter().filter(|t| t.rtcp).collect();
    assert!(!rtcp.is_empty());
    assert!(rtcp.iter().all(|t| t.to == "127.0.0.2:6001".parse::<SocketAddr>().unwrap()));
    assert_eq!(rtcp[0].data[1], 200, "a sender report: we sent media");
}

#[test]
fn ai_audio_is_played_after_the_prompt_and_flushed_at_barge_in() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let tone: Vec<i16> = (0..8000).map(|i| ((i as f32 * 0.3).sin() * 6000.0) as i16).collect();
    for chunk in tone.chunks(160) {
        s.push_ai_audio(t0, chunk).unwrap();
    }
    let out = run(&mut s, t0, t0 + Duration::from_millis(499));
    assert_eq!(rtp_packets(&out).len(), 25);
    assert_eq!(s.ai_samples_played(), 25 * 160);
    let dropped = s.flush_ai_audio();
    assert_eq!(dropped, 8000 - 25 * 160);
    let out = run(&mut s, t0 + Duration::from_millis(500), t0 + Duration::from_millis(699));
    let rtp = rtp_packets(&out);
    assert_eq!(rtp.len(), 10, "comfort noise after the flush: the stream goes on");
    assert!(rtp.iter().all(|t| level(t) <= 8 && !inspect(&t.data).unwrap().marker));
    assert_eq!(s.ai_samples_played(), 25 * 160, "what the truncate reports");
}

#[test]
fn a_large_release_reaches_the_ai_side_whole_and_only_old_frames_are_dropped() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    // 15 packets arrive on time, but the shell wakes only once, late: one release of 15 frames
    // (as when the jitter buffer catches up after a network stall).
    let send = |s: &mut MediaSession, i: u16| {
        let at = t0 + Duration::from_millis(20) * u32::from(i);
        s.on_rtp(at, from, &caller_packet(i, u32::from(i) * 160, 0, &[0x80 + i as u8; 160]));
    };
    for i in 0..16u16 {
        send(&mut s, i);
    }
    s.handle_timeout(t0 + Duration::from_millis(320));
    let first = s.counters().caller_frames;
    assert!(first > 10, "one release larger than the queue: {first}");
    assert_eq!(s.counters().caller_frames_unconsumed, 0);
    // Nobody reads: the next release drops the oldest, keeping 10 frames.
    send(&mut s, 16);
    send(&mut s, 17);
    s.handle_timeout(t0 + Duration::from_millis(380));
    let c = s.counters();
    assert!(c.caller_frames > first);
    assert_eq!(c.caller_frames_unconsumed, c.caller_frames - 10, "{c:?}");
    let frames: Vec<Vec<i16>> = std::iter::from_fn(|| s.poll_caller_audio()).collect();
    assert_eq!(frames.len(), 10);
    let last = Law::Ulaw.decode(&[0x80 + 17])[0];
    // the newest frames are kept: packet 17, then one concealed slot after it
    assert!(frames[8].iter().all(|x| *x == last), "packet 17 is kept");
}

#[test]
fn g711_caller_frames_reach_the_ai_side_bit_exact_even_negative_zero() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    let payload: Vec<u8> =
        (0..160u32).map(|i| if i % 3 == 0 { 0x7F } else { (i * 7 % 256) as u8 }).collect();
    let mut now = t0;
    for i in 0..20u16 {
        s.on_rtp(now, from, &caller_packet(i, u32::from(i) * 160, 0, &payload));
        run(&mut s, now, now + Duration::from_millis(19));
        now += Duration::from_millis(20);
    }
    let mut frames = 0;
    while let Some(frame) = s.poll_caller_frame() {
        assert_eq!(frame, CallerFrame::G711(Law::Ulaw, payload.clone()));
        frames += 1;
    }
    assert!(frames >= 5, "{frames}");
}

#[test]
fn latencies_are_measured_both_ways() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut now = t0;
    for i in 0..10u16 {
        s.on_rtp(now, from, &caller_packet(i, u32::from(i) * 160, 0, &[0x55; 160]));
        run(&mut s, now, now + Duration::from_millis(19));
        now += Duration::from_millis(20);
    }
    let rtp_to_ai: Vec<Duration> = s
        .take_latencies()
        .into_iter()
        .filter_map(|l| match l {
            MediaLatency::RtpToAi(d) => Some(d),
            _ => None,
        })
        .collect();
    assert!(rtp_to_ai.len() >= 5);
    // the jitter buffer's initial 40 ms target, give or take a millisecond of driving
    assert!(
        rtp_to_ai
            .iter()
            .all(|d| *d >= Duration::from_millis(20) && *d <= Duration::from_millis(80)),
        "{rtp_to_ai:?}"
    );
    // agent audio pushed between two frames starts once the 40 ms cushion has passed, with
    // the next frame after it: under 60 ms
    s.push_ai_audio_at(now + Duration::from_millis(5), &[1000; 800]).unwrap();
    run(&mut s, now + Duration::from_millis(5), now + Duration::from_millis(100));
    let ai: Vec<Duration> = s
        .take_latencies()
        .into_iter()
        .filter_map(|l| match l {
            MediaLatency::AiToRtp(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(ai.len(), 1);
    assert!(ai[0] >= Duration::from_millis(40) && ai[0] <= Duration::from_millis(60), "{ai:?}");
}

/// An Opus call losing packet 20 of 40 (speech); counters afterwards.
fn opus_call_losing_one_packet(fec: bool) -> MediaCounters {
    use crate::core::media::codec::opus::{OpusConfig, OpusEncoder};
    let t0 = Instant::now();
    let mut s =
        MediaSession::new(params(Codec::opus(111), AiFormat::Pcm(Rate::Hz24000)), t0).unwrap();
    s.start(t0);
    let mut enc =
        OpusEncoder::new(OpusConfig { rate: Rate::Hz48000, fec, ..OpusConfig::default() }).unwrap();
    let speech = Prompt::high_demand().unwrap();
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut now = t0;
    for i in 0..40u16 {
        // 8 kHz speech upsampled by repetition to 48 kHz: good enough to make real Opus packets
        let pcm: Vec<i16> = speech.samples()[usize::from(i) * 160..usize::from(i + 1) * 160]
            .iter()
            .flat_map(|x| [*x; 6])
            .collect();
        let payload = enc.encode(&pcm).unwrap().to_vec();
        if i != 20 {
            s.on_rtp(now, from, &caller_packet(i, u32::from(i) * 960, 111, &payload));
        }
        run(&mut s, now, now + Duration::from_millis(19));
        now += Duration::from_millis(20);
    }
    s.counters()
}

#[test]
fn a_lost_opus_frame_is_rebuilt_from_the_next_packets_fec() {
    let c = opus_call_losing_one_packet(true);
    assert_eq!(c.fec_recovered, 1, "{c:?}");
    assert_eq!(c.concealed_frames, 1);
}

#[test]
fn a_lost_opus_frame_without_fec_data_is_concealed_not_counted_as_recovered() {
    let c = opus_call_losing_one_packet(false);
    assert_eq!(c.fec_recovered, 0, "{c:?}");
    assert_eq!(c.concealed_frames, 1);
}

#[test]
fn a_lost_g711_frame_is_interpolated_into_the_waiting_next_packet() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let speech = Prompt::high_demand().unwrap();
    let samples = speech.samples();
    // a voiced stretch of the prompt
    let start = (0..samples.len() / 160 - 40)
        .map(|f| f * 160)
        .max_by_key(|&o| {
            samples[o + 3200..o + 3520].iter().map(|x| i64::from(*x).abs()).sum::<i64>()
        })
        .unwrap();
    let payloads: Vec<Vec<u8>> = samples[start..start + 30 * 160]
        .chunks_exact(160)
        .map(|f| {
            let mut p = Vec::new();
            Law::Ulaw.encode_into(f, &mut p);
            p
        })
        .collect();
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut now = t0;
    let mut heard = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if i != 20 {
            s.on_rtp(now, from, &caller_packet(i as u16, i as u32 * 160, 0, p));
        }
        run(&mut s, now, now + Duration::from_millis(19));
        while let Some(CallerFrame::G711(_, codes)) = s.poll_caller_frame() {
            heard.push(codes);
        }
        now += Duration::from_millis(20);
    }
    assert_eq!(s.counters().concealed_frames, 1);
    assert!(heard.len() >= 25, "{} frames", heard.len());
    // frames line up one to one; the one after the gap is played bit-exact (no recovery
    // cross-fade is needed: the concealment already ends where it begins)
    assert_eq!(heard[21], payloads[21]);
    assert_eq!(heard[19], payloads[19]);
    let truth = Law::Ulaw.decode(&payloads[20]);
    let concealed = Law::Ulaw.decode(&heard[20]);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in truth.iter().zip(&concealed) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let r = ab / (aa * bb).sqrt();
    assert!(r > 0.3, "concealed frame correlation {r:.2}");
}

#[test]
fn a_key_press_is_neither_loss_nor_concealed() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let from: SocketAddr = CARRIER.parse().unwrap();
    let mut now = t0;
    // audio 0..20, a key press in place of packets 20..26 (same SSRC, sequence numbers go
    // on, the event's timestamp is its start), audio again from 26 with the marker bit
    for i in 0..50u16 {
        let ts = u32::from(i) * 160;
        let packet = if (20..26).contains(&i) {
            let duration = (i - 19) * 160;
            let end = if i == 25 { 0x80 } else { 0 };
            let mut p = vec![5u8, end | 10];
            p.extend_from_slice(&duration.to_be_bytes());
            let mut out = RtpOut::new(101, 0xcafe, i, 20 * 160);
            out.packet_at(101, &p, 20 * 160, i == 20)
        } else {
            let mut out = RtpOut::new(0, 0xcafe, i, ts);
            out.packet_at(0, &[0x55; 160], ts, i == 26)
        };
        s.on_rtp(now, from, &packet);
        run(&mut s, now, now + Duration::from_millis(19));
        now += Duration::from_millis(20);
    }
    let c = s.counters();
    assert_eq!(c.dtmf_received, 1, "{c:?}");
    assert_eq!(c.concealed_frames, 0, "the key press was concealed: {c:?}");
    let stats = s.stats();
    assert_eq!(stats.packets_lost, 0, "{stats:?}");
    assert_eq!(stats.loss_percent, 0.0, "{stats:?}");
}

#[test]
fn a_call_without_media_has_no_mos() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    run(&mut s, t0, t0 + Duration::from_secs(2));
    let stats = s.stats();
    assert_eq!(stats.media, crate::core::media::stats::MediaFlow::None, "{stats:?}");
    assert_eq!((stats.mos, stats.mos_inbound, stats.mos_outbound), (None, None, None));
    // the box plays a prompt, the caller still sends nothing: only box -> caller is scored
    s.play_prompt(Prompt::high_demand().unwrap());
    let t1 = t0 + Duration::from_secs(2);
    run(&mut s, t1, t1 + Duration::from_millis(500));
    let stats = s.stats();
    assert_eq!(stats.media, crate::core::media::stats::MediaFlow::OutboundOnly);
    assert_eq!(stats.mos_inbound, None);
    assert!(stats.mos.is_some() && stats.mos == stats.mos_outbound, "{stats:?}");
}

#[test]
fn agent_audio_arriving_late_counts_as_send_underruns() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let frame = vec![3000i16; 160];
    let mut now = t0;
    // 10 frames, a hole of 60 ms (the next chunk comes late), 10 frames
    for _ in 0..10 {
        s.push_ai_audio(now, &frame).unwrap();
    }
    let mut out = run(&mut s, now, now + Duration::from_millis(259));
    now += Duration::from_millis(260);
    for _ in 0..10 {
        s.push_ai_audio(now, &frame).unwrap();
    }
    out.extend(run(&mut s, now, now + Duration::from_millis(400)));
    let stats = s.stats();
    assert!((1..=5).contains(&stats.send_underrun_frames), "{stats:?}");
    assert!(stats.outbound_loss_percent > 5.0, "{stats:?}");
    assert!(stats.mos_outbound.unwrap() < 4.0, "{stats:?}");
    assert_eq!(stats.mos, stats.mos_outbound);
    // a barge-in flush is not an underrun
    let before = stats.send_underrun_frames;
    now += Duration::from_millis(401);
    for _ in 0..5 {
        s.push_ai_audio(now, &frame).unwrap();
    }
    run(&mut s, now, now + Duration::from_millis(40));
    s.flush_ai_audio();
    now += Duration::from_millis(41);
    run(&mut s, now, now + Duration::from_millis(60));
    now += Duration::from_millis(61);
    s.push_ai_audio(now, &frame).unwrap();
    run(&mut s, now, now + Duration::from_millis(60));
    assert_eq!(s.stats().send_underrun_frames, before, "{:?}", s.stats());
    assert!(!out.is_empty());
}

/// Drives the session event by event (its own timers) up to `to`, collecting RTP packets with
/// the instant they left.
fn run_events(s: &mut MediaSession, to: Instant, sent: &mut Vec<(Instant, Vec<u8>)>) {
    while let Some(t) = s.poll_timeout().filter(|t| *t <= to) {
        s.handle_timeout(t);
        while let Some(tx) = s.poll_transmit() {
            if !tx.rtcp {
                sent.push((t, tx.data));
            }
        }
    }
}

/// What one simulated call gave: (sent packets, underruns, silent frames they put into
/// speech, speech frames, cushion delays).
type CallRun = (Vec<(Instant, Vec<u8>)>, u64, u64, u64, Vec<Duration>);

/// One simulated call against an agent whose 20 ms chunks arrive 0-60 ms late (±30 ms
/// around a 30 ms mean, in order as over TCP); responses of 1-5 s, pauses of 0.5-3 s, and
/// a barge-in (flush) in a third of the responses. Returns (sent packets, underruns,
/// speech frames, cushion delays).
fn jittery_call(seed: u64, secs: u64) -> CallRun {
    use rand::{Rng, SeedableRng};
    let ms = Duration::from_millis;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.start(t0);
    let end = t0 + Duration::from_secs(secs);
    let speech: Vec<i16> = (0..160).map(|i| ((i as f32 * 0.3).sin() * 6000.0) as i16).collect();
    let mut sent = Vec::new();
    let mut delays = Vec::new();
    let mut speech_frames = 0;
    let mut at = t0 + ms(rng.gen_range(200..1000));
    while at < end {
        let chunks = rng.gen_range(50..250u32);
        let barge = rng.gen_bool(0.33).then(|| rng.gen_range(10..chunks));
        let mut last = at;
        for k in 0..chunks {
            if barge == Some(k) {
                run_events(&mut s, last, &mut sent);
                s.flush_ai_audio();
                break;
            }
            let arrival = (at + ms(20) * k + ms(rng.gen_range(0..=60))).max(last);
            run_events(&mut s, arrival, &mut sent);
            s.push_ai_audio_at(arrival, &speech).unwrap();
            speech_frames += 1;
            last = arrival;
        }
        run_events(&mut s, last, &mut sent);
        delays.extend(s.take_latencies().into_iter().filter_map(|l| match l {
            MediaLatency::AiToRtp(d) => Some(d),
            MediaLatency::RtpToAi(_) => None,
        }));
        at = last + ms(rng.gen_range(500..3000));
    }
    run_events(&mut s, end, &mut sent);
    sent.retain(|(t, _)| *t <= end); // the last response may run past the end
    delays.extend(s.take_latencies().into_iter().filter_map(|l| match l {
        MediaLatency::AiToRtp(d) => Some(d),
        MediaLatency::RtpToAi(_) => None,
    }));
    let holes = s.playout_stats().underrun_frames;
    (sent, s.counters().ai_underruns, holes, speech_frames, delays)
}

#[test]
fn cushion_figures_with_30_ms_of_agent_jitter() {
    // 100 seeded calls of 36 s: one call-hour. Figures printed as `name: value`; the
    // assertions are the stream's shape (50 packets/s, no gap), not timings.
    let (calls, secs) = (100u64, 36u64);
    let (mut packets, mut gaps, mut underruns, mut frames) = (0usize, 0usize, 0u64, 0u64);
    let mut holes = 0u64;
    let mut delays = Vec::new();
    for seed in 0..calls {
        let (sent, u, h, f, d) = jittery_call(seed, secs);
        holes += h;
        assert_eq!(sent.len() as u64, secs * 50 + 1, "call {seed}: 50 packets/s");
        gaps += sent.windows(2).filter(|w| w[1].0 - w[0].0 > Duration::from_millis(40)).count();
        let seqs: Vec<u16> = sent.iter().map(|(_, p)| inspect(p).unwrap().seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "call {seed}");
        packets += sent.len();
        underruns += u;
        frames += f;
        delays.extend(d);
    }
    delays.sort();
    let pct = |p: usize| delays[(delays.len() - 1) * p / 100].as_millis();
    let hours = (calls * secs) as f64 / 3600.0;
    println!("cushion_sim_calls: {calls}");
    println!("cushion_sim_caller_packets: {packets}");
    println!(
        "cushion_sim_gap_over_40ms_share_percent: {:.4}",
        gaps as f64 * 100.0 / packets as f64
    );
    println!("cushion_sim_underruns_per_call_hour: {:.1}", underruns as f64 / hours);
    println!(
        "cushion_sim_underrun_share_of_agent_frames_percent: {:.3}",
        underruns as f64 * 100.0 / frames as f64
    );
    println!(
        "cushion_sim_silent_frames_in_speech_percent: {:.3}",
        holes as f64 * 100.0 / frames as f64
    );
    println!("cushion_added_delay_p50_ms: {}", pct(50));
    println!("cushion_added_delay_p99_ms: {}", pct(99));
    assert_eq!(gaps, 0);
}

/// An RTCP receiver report with no report blocks.
fn empty_rr(ssrc: u32) -> Vec<u8> {
    let mut rr = vec![0x80, 201, 0, 1];
    rr.extend_from_slice(&ssrc.to_be_bytes());
    rr
}

#[test]
fn an_attacker_racing_the_carrier_neither_latches_nor_is_heard() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    let attacker: SocketAddr = "198.51.100.66:7002".parse().unwrap();
    let carrier: SocketAddr = CARRIER.parse().unwrap();
    // the attacker's packets arrive first, then the carrier's
    for i in 0..5 {
        s.on_rtp(t0, attacker, &caller_packet(i, 160 * u32::from(i), 0, &[0x11; 160]));
        s.on_rtp(t0, attacker, &caller_packet(i, 160 * u32::from(i), 101, &[1, 0x80, 0, 160]));
    }
    for i in 0..5 {
        s.on_rtp(t0, carrier, &caller_packet(i, 160 * u32::from(i), 0, &[0x55; 160]));
    }
    let c = s.counters();
    assert_eq!((c.rtp_wrong_source, c.rtp_received, c.dtmf_received), (10, 5, 0));
    assert_eq!(s.remote_rtp(), carrier);
    s.on_rtcp(t0, "198.51.100.66:7003".parse().unwrap(), &empty_rr(9));
    assert_eq!(s.counters().rtcp_wrong_source, 1);
    assert_eq!(s.counters().rtcp_received, 0);
    s.play_prompt(Prompt::high_demand().unwrap());
    s.start(t0);
    let out = run(&mut s, t0, t0 + Duration::from_secs(8));
    assert!(out.iter().filter(|t| t.rtcp).count() > 0);
    assert!(out.iter().filter(|t| t.rtcp).all(|t| t.to == "127.0.0.2:6001".parse().unwrap()));
    assert!(out.iter().filter(|t| !t.rtcp).all(|t| t.to == carrier));
    let frame = s.poll_caller_audio().expect("the carrier's audio");
    assert!(frame.iter().all(|x| *x == Law::Ulaw.decode(&[0x55])[0]), "never the attacker's");
}

#[test]
fn nat_latching_needs_an_allowed_network_and_re_latches_only_on_a_new_offer() {
    let t0 = Instant::now();
    let mut s = pcmu_session(t0);
    s.allow_latch_from(vec!["203.0.113.0/24".parse().unwrap()]);
    let nat: SocketAddr = "203.0.113.9:31000".parse().unwrap();
    s.on_rtp(t0, "198.51.100.66:31000".parse().unwrap(), &caller_packet(1, 160, 0, &[0; 160]));
    assert_eq!(s.remote_rtp(), CARRIER.parse().unwrap(), "outside the carrier: refused");
    s.on_rtp(t0, nat, &caller_packet(2, 320, 0, &[0; 160]));
    assert_eq!(s.remote_rtp(), nat);
    s.on_rtp(t0, "203.0.113.10:31000".parse().unwrap(), &caller_packet(3, 480, 0, &[0; 160]));
    assert_eq!(s.remote_rtp(), nat, "fixed once latched");
    assert_eq!(s.counters().rtp_wrong_source, 2);
    let moved: SocketAddr = "203.0.113.20:40000".parse().unwrap();
    s.set_remote(moved);
    s.on_rtp(t0, nat, &caller_packet(4, 640, 0, &[0; 160]));
    assert_eq!(s.remote_rtp(), nat, "after a new offer a carrier address may latch again");
}

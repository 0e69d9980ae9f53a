//! Codecs, one 20 ms frame of real speech (the built-in prompt) each: G.711 encode/decode,
//! Opus encode/decode at the pipeline's rates (complexity 5), and the per-call Transcoder both
//! ways for the product's pairings.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use trunkguard::core::media::codec::opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusFmtp};
use trunkguard::core::media::codec::pipeline::{AiFormat, G711Decoder, Transcoder};
use trunkguard::core::media::codec::{Rate, Resampler};
use trunkguard::core::media::g711::Law;
use trunkguard::core::media::prompt::Prompt;
use trunkguard::core::sdp::Codec;

/// Frames of speech used round robin.
const FRAMES: usize = 100;

/// The prompt's first `FRAMES` 20 ms frames at `rate`.
fn speech(rate: Rate) -> Vec<Vec<i16>> {
    let prompt = Prompt::high_demand().expect("built-in prompt");
    let mut up =
        (rate != Rate::Hz8000).then(|| Resampler::new(Rate::Hz8000, rate).expect("resampler"));
    prompt
        .samples()
        .chunks_exact(Rate::Hz8000.frame_len())
        .take(FRAMES)
        .map(|f| match up.as_mut() {
            Some(r) => r.process(f).expect("resample").to_vec(),
            None => f.to_vec(),
        })
        .collect()
}

fn opus_packets(rate: Rate) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(OpusConfig { rate, ..OpusConfig::default() }).expect("encoder");
    speech(rate).iter().map(|f| enc.encode(f).expect("encode").to_vec()).collect()
}

fn ulaw_frames() -> Vec<Vec<u8>> {
    speech(Rate::Hz8000)
        .iter()
        .map(|f| {
            let mut p = Vec::new();
            Law::Ulaw.encode_into(f, &mut p);
            p
        })
        .collect()
}

fn g711(c: &mut Criterion) {
    let pcm = speech(Rate::Hz8000);
    let codes = ulaw_frames();
    let mut g = c.benchmark_group("g711");
    let mut out = Vec::with_capacity(160);
    let mut i = 0;
    g.bench_function("ulaw_encode_20ms", |b| {
        b.iter(|| {
            out.clear();
            Law::Ulaw.encode_into(black_box(&pcm[i % FRAMES]), &mut out);
            i += 1;
        })
    });
    let mut dec = G711Decoder::new(Law::Ulaw);
    g.bench_function("ulaw_decode_20ms_with_plc_history", |b| {
        b.iter(|| {
            black_box(dec.decode(black_box(&codes[i % FRAMES])).expect("decode").len());
            i += 1;
        })
    });
    g.finish();
}

fn opus(c: &mut Criterion) {
    let mut g = c.benchmark_group("opus");
    for rate in [Rate::Hz24000, Rate::Hz48000] {
        let pcm = speech(rate);
        let packets = opus_packets(Rate::Hz48000);
        let mut enc =
            OpusEncoder::new(OpusConfig { rate, ..OpusConfig::default() }).expect("encoder");
        let mut out = Vec::with_capacity(1500);
        let mut i = 0;
        g.bench_function(format!("encode_20ms_{}k_c5", rate.hz() / 1000), |b| {
            b.iter(|| {
                out.clear();
                enc.encode_into(black_box(&pcm[i % FRAMES]), &mut out).expect("encode");
                i += 1;
            })
        });
        let mut dec = OpusDecoder::new(rate, 1).expect("decoder");
        g.bench_function(format!("decode_20ms_{}k", rate.hz() / 1000), |b| {
            b.iter(|| {
                black_box(dec.decode(black_box(&packets[i % FRAMES])).expect("decode").len());
                i += 1;
            })
        });
    }
    g.finish();
}

/// (name, caller codec, AI format, caller payloads)
fn pairings() -> Vec<(&'static str, Codec, AiFormat, Vec<Vec<u8>>)> {
    vec![
        (
            "opus_pcm24k",
            Codec::opus(111),
            AiFormat::Pcm(Rate::Hz24000),
            opus_packets(Rate::Hz48000),
        ),
        ("pcmu_ulaw8k", Codec::PCMU, AiFormat::G711(Law::Ulaw), ulaw_frames()),
        ("pcmu_pcm24k_resampled", Codec::PCMU, AiFormat::Pcm(Rate::Hz24000), ulaw_frames()),
    ]
}

fn transcoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("transcoder");
    for (name, codec, ai, payloads) in pairings() {
        let ai_audio = speech(ai.rate());
        let mut t = Transcoder::new(&codec, &OpusFmtp::default(), ai).expect("transcoder");
        let mut i = 0;
        g.bench_function(format!("{name}/caller_to_ai"), |b| {
            b.iter(|| {
                black_box(
                    t.caller_to_ai(Some(black_box(&payloads[i % FRAMES]))).expect("decode").len(),
                );
                i += 1;
            })
        });
        let mut out = Vec::with_capacity(1500);
        g.bench_function(format!("{name}/ai_to_caller"), |b| {
            b.iter(|| {
                out.clear();
                t.ai_to_caller_into(black_box(&ai_audio[i % FRAMES]), &mut out).expect("encode");
                i += 1;
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = g711, opus, transcoder
}
criterion_main!(benches);

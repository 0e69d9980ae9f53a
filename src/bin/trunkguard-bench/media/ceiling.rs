//! The codec ceiling: the bare codec work of one call per 20 ms, nothing else. One decode of
//! the caller's frame and one encode of a 20 ms frame back (the decoded audio, echoed), at the
//! rates the pipeline uses (Opus straight to and from the AI rate; G.711 at 8 kHz), over as
//! many codec pairs as the pipeline run has calls, round robin, so caches see the same
//! number of codec states.

use std::time::Duration;

use trunkguard::core::media::codec::opus::{
    OpusConfig, OpusDecoder, OpusEncoder, OpusFmtp, OpusTuning,
};
use trunkguard::core::media::codec::pipeline::G711Decoder;
use trunkguard::core::media::g711::Law;

use super::signal::CallerSignal;
use super::{BenchCodec, BenchError};
use crate::cpu::CpuStopwatch;

/// Rounds run before the stopwatch starts.
const WARM_UP_ROUNDS: usize = 5;

/// One call's codecs.
enum CodecPair {
    G711 { dec: G711Decoder, law: Law },
    Opus { dec: OpusDecoder, enc: OpusEncoder },
}

impl CodecPair {
    fn new(codec: BenchCodec) -> Result<CodecPair, BenchError> {
        match codec {
            BenchCodec::Pcmu => {
                Ok(CodecPair::G711 { dec: G711Decoder::new(Law::Ulaw), law: Law::Ulaw })
            }
            BenchCodec::Opus => {
                let rate = codec.ai_format().rate();
                let config =
                    OpusConfig::for_remote_tuned(&OpusFmtp::default(), rate, OpusTuning::default());
                Ok(CodecPair::Opus {
                    dec: OpusDecoder::new(rate, 1)?,
                    enc: OpusEncoder::new(config)?,
                })
            }
        }
    }

    /// Decodes `payload` and encodes the result into `out`.
    fn round_trip(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), BenchError> {
        out.clear();
        match self {
            CodecPair::G711 { dec, law } => law.encode_into(dec.decode(payload)?, out),
            CodecPair::Opus { dec, enc } => {
                enc.encode_into(dec.decode(payload)?, out)?;
            }
        }
        Ok(())
    }
}

/// What the ceiling run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    /// Decode + encode pairs run while measuring.
    pub frame_pairs: u64,
    /// CPU time they took.
    pub cpu: Duration,
}

impl Ceiling {
    /// CPU time per frame pair.
    pub fn per_frame(&self) -> Duration {
        self.cpu.div_f64(self.frame_pairs.max(1) as f64)
    }

    /// Calls one core could carry on codec work alone: 20 ms / cost per frame pair.
    pub fn calls_per_core(&self) -> f64 {
        let per = self.per_frame().as_secs_f64();
        if per > 0.0 {
            0.020 / per
        } else {
            0.0
        }
    }
}

/// Runs `pairs` codec pairs round robin on the speech until `budget` of CPU time is spent.
pub fn measure(
    codec: BenchCodec,
    signal: &CallerSignal,
    pairs: usize,
    budget: Duration,
) -> Result<Ceiling, BenchError> {
    let mut codecs =
        (0..pairs.max(1)).map(|_| CodecPair::new(codec)).collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(4096);
    let mut frame = 0usize;
    let mut round = |codecs: &mut [CodecPair], frame: usize| -> Result<u64, BenchError> {
        for (i, c) in codecs.iter_mut().enumerate() {
            c.round_trip(signal.payload(frame + i * 37), &mut out)?;
        }
        Ok(codecs.len() as u64)
    };
    for _ in 0..WARM_UP_ROUNDS {
        round(&mut codecs, frame)?;
        frame += 1;
    }
    let watch = CpuStopwatch::start();
    let mut frame_pairs = 0;
    loop {
        frame_pairs += round(&mut codecs, frame)?;
        frame += 1;
        let cpu = watch.elapsed();
        if cpu >= budget {
            return Ok(Ceiling { frame_pairs, cpu });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_codecs_round_trip_and_report_a_positive_ceiling() {
        for codec in [BenchCodec::Pcmu, BenchCodec::Opus] {
            let signal = CallerSignal::new(codec).unwrap();
            let c = measure(codec, &signal, 2, Duration::from_millis(5)).unwrap();
            assert!(c.frame_pairs >= 2, "{codec:?}: {c:?}");
            assert!(c.calls_per_core() > 0.0, "{codec:?}: {c:?}");
        }
    }
}

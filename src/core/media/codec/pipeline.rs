//! Per-call transcoding between the caller's negotiated codec and the AI side, frame by frame.
//!
//! Owns, for one call:
//!
//! - [`Decoder`]: caller RTP payload -> PCM at the codec's rate, with concealment of lost
//!   frames (G.711: [`G711Plc`]; Opus: decoder PLC, or FEC from the next packet).
//! - [`Encoder`]: PCM -> caller RTP payload.
//! - [`Transcoder`]: both directions between the caller codec and an [`AiFormat`] (G.711 at
//!   8 kHz, or 16-bit PCM at 8/16/24/48 kHz), plus the prompt (8 kHz PCM) in any caller codec.
//!
//! Route choice keeps latency low: an Opus leg decodes and encodes directly at the AI rate
//! (libopus converts internally); a G.711 leg uses a [`Resampler`] only when the AI rate is not
//! 8 kHz; same-law G.711 on both sides is passed through bit-exact. Buffers are allocated at
//! construction for 20 ms frames (a longer packet grows them once); the `_into` methods allocate
//! nothing per frame.

use crate::core::media::g711::{Law, ALAW_TO_LINEAR, ULAW_TO_LINEAR};
use crate::core::media::plc::G711Plc;
use crate::core::sdp::{Codec, CodecName};

use super::opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusFmtp, OpusTuning};
use super::resample::Resampler;
use super::{CodecError, Rate, Result};

/// PCM buffers are sized at construction for the call path's largest frame, 20 ms at 48 kHz
/// stereo; a longer packet (Opus allows up to 120 ms) grows them once. Sizing them for 120 ms
/// instead costs about 90 KB per call that is never touched.
const PREALLOC_FRAME: usize = 48 * 20 * 2;

fn law_table(law: Law) -> &'static [i16; 256] {
    match law {
        Law::Ulaw => &ULAW_TO_LINEAR,
        Law::Alaw => &ALAW_TO_LINEAR,
    }
}

/// A G.711 decoder with its packet loss concealment.
#[derive(Debug, Clone)]
pub struct G711Decoder {
    law: Law,
    plc: G711Plc,
    pcm: Vec<i16>,
    last_len: usize,
}

impl G711Decoder {
    /// A decoder for `law`.
    pub fn new(law: Law) -> G711Decoder {
        G711Decoder {
            law,
            plc: G711Plc::new(8000),
            pcm: Vec::with_capacity(Rate::Hz8000.frame_len()),
            last_len: Rate::Hz8000.frame_len(),
        }
    }

    /// Which law.
    pub fn law(&self) -> Law {
        self.law
    }

    /// Whether the last frame was concealed (the next good one will be cross-faded).
    pub fn is_concealing(&self) -> bool {
        self.plc.is_concealing()
    }

    /// Decodes one payload (any length; empty is an error).
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[i16]> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        let table = law_table(self.law);
        self.pcm.clear();
        self.pcm.extend(payload.iter().map(|&c| table[usize::from(c)]));
        self.plc.good_frame(&mut self.pcm);
        self.last_len = payload.len();
        Ok(&self.pcm)
    }

    /// Conceals one lost frame as long as the last payload.
    pub fn conceal(&mut self) -> &[i16] {
        self.pcm.clear();
        self.pcm.resize(self.last_len, 0);
        self.plc.conceal(&mut self.pcm);
        &self.pcm
    }

    /// Conceals one lost frame that `next` (the following payload, already received)
    /// continues: interpolated between both sides, so `next` is then decoded untouched.
    pub fn conceal_before(&mut self, next: &[u8]) -> &[i16] {
        let table = law_table(self.law);
        let next: Vec<i16> = next.iter().map(|&c| table[usize::from(c)]).collect();
        self.pcm.clear();
        self.pcm.resize(self.last_len, 0);
        self.plc.conceal_before(&mut self.pcm, &next);
        &self.pcm
    }
}

/// Caller payload -> PCM at the codec's rate.
#[derive(Debug)]
pub enum Decoder {
    /// G.711 at 8 kHz, mono.
    G711(G711Decoder),
    /// Opus at its configured output rate and channels.
    Opus(OpusDecoder),
}

impl Decoder {
    /// The decoder for a negotiated `codec`; Opus decodes at `opus_rate` with the channels
    /// the peer's fmtp announces (`sprop-stereo`).
    pub fn for_codec(codec: &Codec, fmtp: &OpusFmtp, opus_rate: Rate) -> Result<Decoder> {
        match caller_kind(codec)? {
            CallerKind::G711(law) => Ok(Decoder::G711(G711Decoder::new(law))),
            CallerKind::Opus => {
                Ok(Decoder::Opus(OpusDecoder::new(opus_rate, fmtp.recv_channels())?))
            }
        }
    }

    /// Output rate.
    pub fn rate(&self) -> Rate {
        match self {
            Decoder::G711(_) => Rate::Hz8000,
            Decoder::Opus(d) => d.rate(),
        }
    }

    /// Output channels (interleaved when 2).
    pub fn channels(&self) -> u8 {
        match self {
            Decoder::G711(_) => 1,
            Decoder::Opus(d) => d.channels(),
        }
    }

    /// Decodes one RTP payload.
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[i16]> {
        match self {
            Decoder::G711(d) => d.decode(payload),
            Decoder::Opus(d) => d.decode(payload),
        }
    }

    /// Conceals one lost frame. With the `next` payload at hand, Opus recovers the frame
    /// from that packet's FEC and G.711 interpolates towards it (decode `next` itself
    /// afterwards, as usual).
    pub fn conceal(&mut self, next: Option<&[u8]>) -> Result<&[i16]> {
        match self {
            Decoder::G711(d) => match next {
                Some(next) if !next.is_empty() => Ok(d.conceal_before(next)),
                _ => Ok(d.conceal()),
            },
            Decoder::Opus(d) => match next {
                Some(next) if !next.is_empty() => d.decode_fec(next),
                _ => d.conceal(),
            },
        }
    }
}

/// PCM -> caller payload.
#[derive(Debug)]
pub enum Encoder {
    /// G.711 at 8 kHz, any frame length.
    G711(Law),
    /// Opus at its configured input rate and channels.
    Opus(OpusEncoder),
}

impl Encoder {
    /// The encoder for a negotiated `codec`; Opus takes PCM at `opus_rate`, with channels and
    /// bitrate per the peer's fmtp (`stereo`, `maxaveragebitrate`).
    pub fn for_codec(codec: &Codec, fmtp: &OpusFmtp, opus_rate: Rate) -> Result<Encoder> {
        Encoder::for_codec_tuned(codec, fmtp, opus_rate, OpusTuning::default())
    }

    /// As [`Encoder::for_codec`], with the operator's Opus complexity and bitrate.
    pub fn for_codec_tuned(
        codec: &Codec,
        fmtp: &OpusFmtp,
        opus_rate: Rate,
        tuning: OpusTuning,
    ) -> Result<Encoder> {
        match caller_kind(codec)? {
            CallerKind::G711(law) => Ok(Encoder::G711(law)),
            CallerKind::Opus => Ok(Encoder::Opus(OpusEncoder::new(OpusConfig::for_remote_tuned(
                fmtp, opus_rate, tuning,
            ))?)),
        }
    }

    /// Input rate.
    pub fn rate(&self) -> Rate {
        match self {
            Encoder::G711(_) => Rate::Hz8000,
            Encoder::Opus(e) => e.config().rate,
        }
    }

    /// Input channels (interleaved when 2).
    pub fn channels(&self) -> u8 {
        match self {
            Encoder::G711(_) => 1,
            Encoder::Opus(e) => e.config().channels,
        }
    }

    /// Encodes `pcm`, appending the payload to `out`; returns its length.
    pub fn encode_into(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize> {
        match self {
            Encoder::G711(law) => {
                law.encode_into(pcm, out);
                Ok(pcm.len())
            }
            Encoder::Opus(e) => e.encode_into(pcm, out),
        }
    }
}

/// Which codec the caller leg runs.
enum CallerKind {
    G711(Law),
    Opus,
}

fn caller_kind(codec: &Codec) -> Result<CallerKind> {
    let unsupported = || CodecError::UnsupportedCodec(format!("{codec:?}"));
    match codec.name {
        CodecName::Pcmu | CodecName::Pcma if codec.clock_rate != 8000 => Err(unsupported()),
        CodecName::Pcmu => Ok(CallerKind::G711(Law::Ulaw)),
        CodecName::Pcma => Ok(CallerKind::G711(Law::Alaw)),
        CodecName::Opus if codec.clock_rate != super::opus::RTP_CLOCK_RATE => Err(unsupported()),
        CodecName::Opus => Ok(CallerKind::Opus),
    }
}

/// What the AI side speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiFormat {
    /// G.711 bytes at 8 kHz (e.g. `g711_ulaw` streams).
    G711(Law),
    /// 16-bit mono PCM at a rate (bytes: little-endian).
    Pcm(Rate),
}

impl AiFormat {
    /// PCM rate of the AI side.
    pub fn rate(self) -> Rate {
        match self {
            AiFormat::G711(_) => Rate::Hz8000,
            AiFormat::Pcm(rate) => rate,
        }
    }
}

/// Both directions of one call's media: caller codec <-> AI format.
#[derive(Debug)]
pub struct Transcoder {
    ai: AiFormat,
    decoder: Decoder,
    /// Decoder rate -> AI rate (G.711 caller with an AI rate above 8 kHz).
    up: Option<Resampler>,
    encoder: Encoder,
    /// AI rate -> encoder rate.
    down: Option<Resampler>,
    /// 8 kHz prompt -> encoder rate.
    prompt_rs: Option<Resampler>,
    ai_pcm: Vec<i16>,
    ai_bytes: Vec<u8>,
    scratch: Vec<i16>,
}

impl Transcoder {
    /// A transcoder for a call negotiated with `caller` (`fmtp`: the caller's Opus fmtp
    /// parameters, default when absent) and an AI side speaking `ai`.
    pub fn new(caller: &Codec, fmtp: &OpusFmtp, ai: AiFormat) -> Result<Transcoder> {
        Transcoder::tuned(caller, fmtp, ai, OpusTuning::default())
    }

    /// As [`Transcoder::new`], with the operator's Opus encoder settings.
    pub fn tuned(
        caller: &Codec,
        fmtp: &OpusFmtp,
        ai: AiFormat,
        tuning: OpusTuning,
    ) -> Result<Transcoder> {
        let ai_rate = ai.rate();
        let decoder = Decoder::for_codec(caller, fmtp, ai_rate)?;
        let encoder = Encoder::for_codec_tuned(caller, fmtp, ai_rate, tuning)?;
        let up = resampler(decoder.rate(), ai_rate)?;
        let down = resampler(ai_rate, encoder.rate())?;
        let prompt_rs = resampler(Rate::Hz8000, encoder.rate())?;
        Ok(Transcoder {
            ai,
            decoder,
            up,
            encoder,
            down,
            prompt_rs,
            ai_pcm: Vec::with_capacity(PREALLOC_FRAME),
            ai_bytes: Vec::with_capacity(2 * PREALLOC_FRAME),
            scratch: Vec::with_capacity(PREALLOC_FRAME),
        })
    }

    /// The AI-side format.
    pub fn ai_format(&self) -> AiFormat {
        self.ai
    }

    /// The caller-side decoder (for inspection or benches).
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The caller-side encoder (for inspection or benches).
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Resampling delay added (caller -> AI, AI -> caller), in microseconds.
    pub fn resampling_delay_us(&self) -> (u64, u64) {
        let us = |r: &Option<Resampler>| r.as_ref().map_or(0, Resampler::delay_us);
        (us(&self.up), us(&self.down))
    }

    /// One caller payload (None: the frame was lost, conceal it) -> mono PCM at the AI rate.
    pub fn caller_to_ai(&mut self, payload: Option<&[u8]>) -> Result<&[i16]> {
        let channels = self.decoder_channels();
        let pcm = match payload {
            Some(p) => self.decoder.decode(p)?,
            None => self.decoder.conceal(None)?,
        };
        to_ai(pcm, channels, &mut self.up, &mut self.ai_pcm)
    }

    /// A lost caller frame, recovered from `next` (the following payload, if already
    /// received) by Opus FEC, else concealed -> mono PCM at the AI rate.
    pub fn caller_to_ai_lost(&mut self, next: Option<&[u8]>) -> Result<&[i16]> {
        let channels = self.decoder_channels();
        let pcm = self.decoder.conceal(next)?;
        to_ai(pcm, channels, &mut self.up, &mut self.ai_pcm)
    }

    /// [`Self::caller_to_ai`] as AI-side bytes: G.711 codes (bit-exact passthrough when both
    /// sides use the same law and no concealment is being recovered from) or s16le PCM.
    pub fn caller_to_ai_bytes(&mut self, payload: Option<&[u8]>) -> Result<&[u8]> {
        let recovering = matches!(&self.decoder, Decoder::G711(d) if d.is_concealing());
        let passthrough = match (&self.decoder, self.ai) {
            (Decoder::G711(d), AiFormat::G711(ai_law)) => d.law() == ai_law && !recovering,
            _ => false,
        };
        self.caller_to_ai(payload)?;
        self.ai_bytes.clear();
        match (payload, self.ai) {
            (Some(p), _) if passthrough => self.ai_bytes.extend_from_slice(p),
            (_, AiFormat::G711(law)) => law.encode_into(&self.ai_pcm, &mut self.ai_bytes),
            (_, AiFormat::Pcm(_)) => {
                for s in &self.ai_pcm {
                    self.ai_bytes.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        Ok(&self.ai_bytes)
    }

    /// Mono PCM at the AI rate (20 ms frames; any length for a G.711 caller) -> caller
    /// RTP payload.
    pub fn ai_to_caller(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(pcm.len() * 2);
        self.ai_to_caller_into(pcm, &mut out)?;
        Ok(out)
    }

    /// [`Self::ai_to_caller`], appending the payload to `out`; returns its length (0 when a
    /// partial frame is held back by the resampler).
    pub fn ai_to_caller_into(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize> {
        encode_from(pcm, &mut self.down, &mut self.encoder, &mut self.scratch, out)
    }

    /// AI-side bytes (G.711 codes or s16le PCM, per the [`AiFormat`]) -> caller payload;
    /// bit-exact passthrough between same-law G.711 sides.
    pub fn ai_bytes_to_caller(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let mut pcm = std::mem::take(&mut self.ai_pcm);
        pcm.clear();
        match (self.ai, &self.encoder) {
            (AiFormat::G711(ai_law), Encoder::G711(law)) if ai_law == *law => {
                out.extend_from_slice(bytes);
                self.ai_pcm = pcm;
                return Ok(bytes.len());
            }
            (AiFormat::G711(ai_law), _) => {
                let table = law_table(ai_law);
                pcm.extend(bytes.iter().map(|&c| table[usize::from(c)]));
            }
            (AiFormat::Pcm(_), _) => {
                pcm.extend(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])))
            }
        }
        let result = self.ai_to_caller_into(&pcm, out);
        self.ai_pcm = pcm;
        result
    }

    /// One 20 ms frame of the 8 kHz prompt -> caller payload, in whatever codec the call
    /// negotiated (so Opus-only callers hear the prompt too).
    pub fn encode_prompt_frame(&mut self, pcm8k: &[i16]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(pcm8k.len());
        self.encode_prompt_frame_into(pcm8k, &mut out)?;
        Ok(out)
    }

    /// [`Self::encode_prompt_frame`], appending to `out`; returns the payload length.
    pub fn encode_prompt_frame_into(&mut self, pcm8k: &[i16], out: &mut Vec<u8>) -> Result<usize> {
        encode_from(pcm8k, &mut self.prompt_rs, &mut self.encoder, &mut self.scratch, out)
    }

    fn decoder_channels(&self) -> u8 {
        self.decoder.channels()
    }
}

fn resampler(from: Rate, to: Rate) -> Result<Option<Resampler>> {
    if from == to {
        Ok(None)
    } else {
        Resampler::new(from, to).map(Some)
    }
}

/// Downmixes (if stereo) and resamples (if needed) decoded PCM into `ai_pcm`.
fn to_ai<'a>(
    pcm: &[i16],
    channels: u8,
    up: &mut Option<Resampler>,
    ai_pcm: &'a mut Vec<i16>,
) -> Result<&'a [i16]> {
    ai_pcm.clear();
    if channels == 2 {
        ai_pcm.extend(
            pcm.chunks_exact(2).map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) / 2) as i16),
        );
    } else {
        ai_pcm.extend_from_slice(pcm);
    }
    if let Some(r) = up {
        // The resampler's output lives in its own buffer (borrowed from `r` only).
        let resampled = r.process(ai_pcm)?;
        ai_pcm.clear();
        ai_pcm.extend_from_slice(resampled);
    }
    Ok(ai_pcm)
}

/// Resamples (if needed), upmixes (if the encoder is stereo) and encodes mono `pcm`.
fn encode_from(
    pcm: &[i16],
    rs: &mut Option<Resampler>,
    encoder: &mut Encoder,
    scratch: &mut Vec<i16>,
    out: &mut Vec<u8>,
) -> Result<usize> {
    let mono = match rs {
        Some(r) => r.process(pcm)?,
        None => pcm,
    };
    if mono.is_empty() {
        return Ok(0);
    }
    if encoder.channels() == 2 {
        scratch.clear();
        scratch.extend(mono.iter().flat_map(|&s| [s, s]));
        encoder.encode_into(scratch, out)
    } else {
        encoder.encode_into(mono, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::codec::opus::tests::{aligned_correlation, rms, tone};
    use crate::core::media::prompt::Prompt;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn no_fmtp() -> OpusFmtp {
        OpusFmtp::default()
    }

    fn prompt() -> Vec<i16> {
        let p = Prompt::high_demand().unwrap();
        let s = p.samples();
        s[..s.len() / 160 * 160].to_vec()
    }

    #[test]
    fn ulaw_to_ulaw_is_bit_exact_both_ways() {
        let mut t = Transcoder::new(&Codec::PCMU, &no_fmtp(), AiFormat::G711(Law::Ulaw)).unwrap();
        let mut rng = SmallRng::seed_from_u64(0x711);
        for i in 0..100 {
            let mut frame: Vec<u8> = (0..160).map(|_| rng.gen()).collect();
            frame[i % 160] = 0x7F; // negative zero: a decode/encode round trip would change it
            assert_eq!(t.caller_to_ai_bytes(Some(&frame)).unwrap(), &frame[..]);
            let mut out = Vec::new();
            assert_eq!(t.ai_bytes_to_caller(&frame, &mut out).unwrap(), 160);
            assert_eq!(out, frame);
        }
        assert_eq!(t.resampling_delay_us(), (0, 0));
    }

    #[test]
    fn ulaw_loss_is_concealed_then_recovered() {
        let mut t = Transcoder::new(&Codec::PCMU, &no_fmtp(), AiFormat::G711(Law::Ulaw)).unwrap();
        let x = tone(220.0, Rate::Hz8000, 1600, 9000.0);
        for f in x.chunks(160) {
            let mut p = Vec::new();
            Law::Ulaw.encode_into(f, &mut p);
            t.caller_to_ai_bytes(Some(&p)).unwrap();
        }
        let concealed = t.caller_to_ai(None).unwrap();
        assert_eq!(concealed.len(), 160);
        assert!(rms(concealed) > 3000.0, "concealed rms {}", rms(concealed));
        // Next good frame is cross-faded (re-encoded), the one after passes through again.
        let next = vec![0xFFu8; 160];
        let first = t.caller_to_ai_bytes(Some(&next)).unwrap().to_vec();
        assert_ne!(first, next);
        assert_eq!(t.caller_to_ai_bytes(Some(&next)).unwrap(), &next[..]);
    }

    #[test]
    fn pcma_caller_to_ulaw_ai_transcodes() {
        let mut t = Transcoder::new(&Codec::PCMA, &no_fmtp(), AiFormat::G711(Law::Ulaw)).unwrap();
        let x = tone(500.0, Rate::Hz8000, 160, 12000.0);
        let mut p = Vec::new();
        Law::Alaw.encode_into(&x, &mut p);
        let ai = t.caller_to_ai_bytes(Some(&p)).unwrap().to_vec();
        let back = Law::Ulaw.decode(&ai);
        let (_, c) = aligned_correlation(&x, &back, 1);
        assert!(c > 0.999, "correlation {c}");
        let mut out = Vec::new();
        t.ai_bytes_to_caller(&ai, &mut out).unwrap();
        let (_, c) = aligned_correlation(&x, &Law::Alaw.decode(&out), 1);
        assert!(c > 0.999, "correlation {c}");
    }

    #[test]
    fn g711_caller_with_16k_ai_round_trip() {
        let mut t =
            Transcoder::new(&Codec::PCMU, &no_fmtp(), AiFormat::Pcm(Rate::Hz16000)).unwrap();
        let x = prompt();
        let mut back = Vec::new();
        for f in x.chunks_exact(160) {
            let mut p = Vec::new();
            Law::Ulaw.encode_into(f, &mut p);
            let ai = t.caller_to_ai(Some(&p)).unwrap().to_vec();
            assert_eq!(ai.len(), 320);
            let payload = t.ai_to_caller(&ai).unwrap();
            assert_eq!(payload.len(), 160);
            back.extend(Law::Ulaw.decode(&payload));
        }
        let (up, down) = t.resampling_delay_us();
        let (lag, c) = aligned_correlation(&x[..x.len() - 400], &back, 80);
        eprintln!(
            "pipeline PCMU<->16k PCM: loop delay {lag} samples at 8 kHz, resampler delays \
             {up}/{down} us, correlation {c:.4}"
        );
        assert!(c > 0.9, "correlation {c}");
        assert!(up < 3000 && down < 3000);
        assert!(lag <= 48, "loop delay {lag} samples");
    }

    /// Caller's side of an Opus call: the prompt upsampled to 16 kHz and encoded.
    fn caller_opus_packets(x8k: &[i16]) -> (Vec<i16>, Vec<Vec<u8>>) {
        let mut up = Resampler::new(Rate::Hz8000, Rate::Hz16000).unwrap();
        let mut enc =
            OpusEncoder::new(OpusConfig { rate: Rate::Hz16000, ..OpusConfig::default() }).unwrap();
        let mut x16 = Vec::new();
        let mut packets = Vec::new();
        for f in x8k.chunks_exact(160) {
            let s = up.process(f).unwrap().to_vec();
            packets.push(enc.encode(&s).unwrap().to_vec());
            x16.extend(s);
        }
        (x16, packets)
    }

    #[test]
    fn opus_caller_to_16k_ai_and_back() {
        let opus = Codec::opus(111);
        let mut t = Transcoder::new(&opus, &no_fmtp(), AiFormat::Pcm(Rate::Hz16000)).unwrap();
        assert_eq!(t.resampling_delay_us(), (0, 0), "Opus leg runs at the AI rate");
        let (x16, packets) = caller_opus_packets(&prompt());
        let mut ai = Vec::new();
        for p in &packets {
            let pcm = t.caller_to_ai(Some(p)).unwrap();
            assert_eq!(pcm.len(), 320);
            ai.extend_from_slice(pcm);
        }
        let (lag, c) = aligned_correlation(&x16[..x16.len() - 1600], &ai, 16 * 30);
        eprintln!("pipeline Opus->16k: delay {lag} samples, correlation {c:.4}");
        assert!(c > 0.9, "caller->AI correlation {c}");
        // AI -> caller: encode the AI audio, decode as the caller would.
        let mut dec = OpusDecoder::new(Rate::Hz16000, 1).unwrap();
        let mut heard = Vec::new();
        for f in x16.chunks_exact(320) {
            let payload = t.ai_to_caller(f).unwrap();
            heard.extend_from_slice(dec.decode(&payload).unwrap());
        }
        let (_, c) = aligned_correlation(&x16[..x16.len() - 1600], &heard, 16 * 30);
        assert!(c > 0.9, "AI->caller correlation {c}");
        assert!(matches!(t.ai_to_caller(&[0; 100]), Err(CodecError::BadFrameLen { .. })));
    }

    #[test]
    fn opus_loss_conceals_and_fec_recovers() {
        let opus = Codec::opus(111);
        let fmtp = OpusFmtp::parse("useinbandfec=1");
        let mut t = Transcoder::new(&opus, &fmtp, AiFormat::Pcm(Rate::Hz16000)).unwrap();
        let (_, packets) = caller_opus_packets(&prompt());
        for p in &packets[..30] {
            t.caller_to_ai(Some(p)).unwrap();
        }
        let concealed = t.caller_to_ai(None).unwrap();
        assert_eq!(concealed.len(), 320);
        assert!(rms(concealed) > 50.0, "PLC frame silent: rms {}", rms(concealed));
        let recovered = t.caller_to_ai_lost(Some(&packets[32])).unwrap();
        assert_eq!(recovered.len(), 320);
        assert!(rms(recovered) > 50.0);
        assert_eq!(t.caller_to_ai(Some(&packets[32])).unwrap().len(), 320);
    }

    #[test]
    fn prompt_plays_in_opus_and_g711() {
        let x = prompt();
        // Opus caller with a 24 kHz AI side: the prompt goes 8k -> 24k -> Opus. Compare at
        // 24 kHz against the same upsampling, so the alignment is sample-exact.
        let mut t =
            Transcoder::new(&Codec::opus(96), &no_fmtp(), AiFormat::Pcm(Rate::Hz24000)).unwrap();
        let mut up = Resampler::new(Rate::Hz8000, Rate::Hz24000).unwrap();
        let mut dec24 = OpusDecoder::new(Rate::Hz24000, 1).unwrap();
        let (mut sent, mut heard) = (Vec::new(), Vec::new());
        for f in x.chunks_exact(160) {
            let payload = t.encode_prompt_frame(f).unwrap();
            assert!(!payload.is_empty());
            heard.extend_from_slice(dec24.decode(&payload).unwrap());
            sent.extend_from_slice(up.process(f).unwrap());
        }
        let (lag, c) = aligned_correlation(&sent[..sent.len() - 2400], &heard, 24 * 40);
        eprintln!("prompt through Opus: codec delay {lag} samples at 24 kHz, correlation {c:.4}");
        assert!(c > 0.9, "prompt correlation {c}");
        let mut dec = OpusDecoder::new(Rate::Hz8000, 1).unwrap();
        // Stereo-preferring Opus peer: payloads still decode to the prompt.
        let mut t = Transcoder::new(
            &Codec::opus(96),
            &OpusFmtp::parse("stereo=1"),
            AiFormat::Pcm(Rate::Hz8000),
        )
        .unwrap();
        assert_eq!(t.encoder().channels(), 2);
        let p = t.encode_prompt_frame(&x[1600..1760]).unwrap();
        assert_eq!(dec.decode(&p).unwrap().len(), 160);
        // G.711: the same bytes PromptPlayer would send.
        let mut t =
            Transcoder::new(&Codec::PCMA, &no_fmtp(), AiFormat::Pcm(Rate::Hz16000)).unwrap();
        let mut expect = Vec::new();
        Law::Alaw.encode_into(&x[..160], &mut expect);
        assert_eq!(t.encode_prompt_frame(&x[..160]).unwrap(), expect);
    }

    #[test]
    fn stereo_caller_is_downmixed_for_ai() {
        let fmtp = OpusFmtp::parse("sprop-stereo=1");
        let mut t =
            Transcoder::new(&Codec::opus(111), &fmtp, AiFormat::Pcm(Rate::Hz48000)).unwrap();
        assert_eq!(t.decoder().channels(), 2);
        let mut enc =
            OpusEncoder::new(OpusConfig { channels: 2, ..OpusConfig::default() }).unwrap();
        let mono = tone(440.0, Rate::Hz48000, 960, 8000.0);
        let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s]).collect();
        for _ in 0..5 {
            let p = enc.encode(&stereo).unwrap().to_vec();
            assert_eq!(t.caller_to_ai(Some(&p)).unwrap().len(), 960);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(0xBAD);
        let setups = [
            (Codec::PCMU, AiFormat::Pcm(Rate::Hz16000)),
            (Codec::PCMA, AiFormat::G711(Law::Ulaw)),
            (Codec::opus(111), AiFormat::Pcm(Rate::Hz24000)),
            (Codec::opus(111), AiFormat::G711(Law::Alaw)),
        ];
        for (codec, ai) in setups {
            let mut t = Transcoder::new(&codec, &no_fmtp(), ai).unwrap();
            for _ in 0..500 {
                let len = rng.gen_range(0..500);
                let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let payload = if rng.gen_bool(0.2) { None } else { Some(&junk[..]) };
                let _ = t.caller_to_ai_bytes(payload);
                let _ = t.caller_to_ai_lost(Some(&junk));
                let pcm: Vec<i16> = (0..rng.gen_range(0..700)).map(|_| rng.gen()).collect();
                let _ = t.ai_to_caller(&pcm);
                let mut out = Vec::new();
                let _ = t.ai_bytes_to_caller(&junk, &mut out);
                let _ = t.encode_prompt_frame(&pcm);
            }
        }
    }

    #[test]
    fn unsupported_codecs_are_refused() {
        let odd = Codec { clock_rate: 16000, ..Codec::PCMU };
        assert!(matches!(
            Transcoder::new(&odd, &no_fmtp(), AiFormat::G711(Law::Ulaw)),
            Err(CodecError::UnsupportedCodec(_))
        ));
        let odd = Codec { clock_rate: 8000, ..Codec::opus(111) };
        assert!(matches!(
            Transcoder::new(&odd, &no_fmtp(), AiFormat::G711(Law::Ulaw)),
            Err(CodecError::UnsupportedCodec(_))
        ));
        assert!(matches!(Rate::from_hz(44100), Err(CodecError::UnsupportedRate(44100))));
    }
}

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
//! construction; the `_into` methods allocate nothing per frame.

use crate::core::media::g711::{Law, ALAW_TO_LINEAR, ULAW_TO_LINEAR};
use crate::core::media::plc::G711Plc;
use crate::core::sdp::{Codec, CodecName};

use super::opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusFmtp};
use super::resample::Resampler;
use super::{CodecError, Rate, Result};

/// Largest PCM frame handled without growing buffers (120 ms at 48 kHz, stereo).
const MAX_FRAME: usize = 48 * 120 * 2;

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
            pcm: Vec::with_capacity(MAX_FRAME),
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
        self.pcm
            .extend(payload.iter().map(|&c| table[usize::from(c)]));
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
            CallerKind::Opus => Ok(Decoder::Opus(OpusDecoder::new(
                opus_rate,
                fmtp.recv_channels(),
            )?)),
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

    /// Conceals one lost frame. With Opus and the `next` payload at hand, the frame is
    /// recovered from that packet's FEC (decode `next` itself afterwards, as usual).
    pub fn conceal(&mut self, next: Option<&[u8]>) -> Result<&[i16]> {
        match self {
            Decoder::G711(d) => Ok(d.conceal()),
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
        match caller_kind(codec)? {
            CallerKind::G711(law) => Ok(Encoder::G711(law)),
            CallerKind::Opus => Ok(Encoder::Opus(OpusEncoder::new(OpusConfig::for_remote(
                fmtp, opus_rate,
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
        let ai_rate = ai.rate();
        let decoder = Decoder::for_codec(caller, fmtp, ai_rate)?;
        let encoder = Encoder::for_codec(caller, fmtp, ai_rate)?;
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
            ai_pcm: Vec::with_capacity(MAX_FRAME),
            ai_bytes: Vec::with_capacity(2 * MAX_FRAME),
            scratch: Vec::with_capacity(MAX_FRAME),
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
        encode_from(
            pcm,
            &mut self.down,
            &mut self.encoder,
            &mut self.scratch,
            out,
        )
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
            (AiFormat::Pcm(_), _) => pcm.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            ),
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
        encode_from(
            pcm8k,
            &mut self.prompt_rs,
            &mut self.encoder,
            &mut self.scratch,
            out,
        )
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
            pcm.chunks_exact(2)
                .map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) / 2) as i16),
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

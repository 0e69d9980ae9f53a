//! The canned prompt: 8 kHz mono 16-bit audio loaded from WAV, and [`PromptPlayer`], which cuts
//! it into 20 ms G.711 RTP packets for the negotiated codec.
//!
//! The player does not keep time: the caller sends one packet per [`PACKET_INTERVAL`], and can
//! ask [`PromptPlayer::packet_due_at`] when the next one is due relative to the first.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_rtp::{Header, Packet};
use rtc_shared::marshal::Marshal;

use super::g711::Law;
use crate::core::sdp::{Codec, CodecName};

/// The only sample rate prompts may have, and the G.711 RTP clock rate.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples (and G.711 bytes, and RTP timestamp units) per 20 ms packet.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Time between packets.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// The built-in "We are experiencing high demand. Please stay on the line." prompt
/// (see docs/prompts.md for how it is made).
pub const HIGH_DEMAND_WAV: &[u8] = include_bytes!("../../../firmware/prompts/high-demand.wav");

/// The failover filler ("One moment, please."), built into the binary.
pub const ONE_MOMENT_WAV: &[u8] = include_bytes!("../../../firmware/prompts/one-moment.wav");

/// Why a prompt cannot be loaded or played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// Not a readable WAV file.
    #[error("prompt is not a readable WAV file: {0}")]
    Wav(String),
    /// A WAV file, but not the one format we play.
    #[error(
        "prompt must be 8000 Hz mono 16-bit integer PCM, got {sample_rate} Hz, \
         {channels} channel(s), {bits_per_sample}-bit {sample_format}"
    )]
    Format {
        /// Sample rate found.
        sample_rate: u32,
        /// Channels found.
        channels: u16,
        /// Bits per sample found.
        bits_per_sample: u16,
        /// "integer" or "float".
        sample_format: &'static str,
    },
    /// The WAV file holds no samples.
    #[error("prompt WAV has no samples")]
    Empty,
    /// The negotiated codec cannot be played yet (Opus needs the media engine).
    #[error("cannot play the prompt with {0:?} (only PCMU/PCMA at 8000 Hz)")]
    UnsupportedCodec(CodecName),
}

/// Prompt audio: 8 kHz mono 16-bit samples, cheap to clone and share between calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    samples: Arc<[i16]>,
}

impl Prompt {
    /// Loads a prompt from a WAV file's bytes; it must be 8000 Hz, mono, 16-bit PCM, non-empty.
    pub fn from_wav_bytes(bytes: &[u8]) -> Result<Prompt, PromptError> {
        let mut reader = hound::WavReader::new(Cursor::new(bytes))
            .map_err(|e| PromptError::Wav(e.to_string()))?;
        check_spec(reader.spec())?;
        let samples = reader
            .samples::<i16>()
            .collect::<Result<Vec<i16>, _>>()
            .map_err(|e| PromptError::Wav(e.to_string()))?;
        Prompt::from_samples(samples)
    }

    /// Wraps 8 kHz mono samples already in memory; they must be non-empty.
    pub fn from_samples(samples: Vec<i16>) -> Result<Prompt, PromptError> {
        if samples.is_empty() {
            return Err(PromptError::Empty);
        }
        Ok(Prompt { samples: samples.into() })
    }

    /// The built-in high-demand prompt.
    pub fn high_demand() -> Result<Prompt, PromptError> {
        Prompt::from_wav_bytes(HIGH_DEMAND_WAV)
    }

    /// The embedded failover filler.
    pub fn one_moment() -> Result<Prompt, PromptError> {
        Prompt::from_wav_bytes(ONE_MOMENT_WAV)
    }

    /// The samples, at 8000 Hz.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Length of the audio itself, rounded down to whole milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE)
    }
}

fn check_spec(spec: hound::WavSpec) -> Result<(), PromptError> {
    let is_int = spec.sample_format == hound::SampleFormat::Int;
    if spec.sample_rate == SAMPLE_RATE && spec.channels == 1 && spec.bits_per_sample == 16 && is_int
    {
        return Ok(());
    }
    Err(PromptError::Format {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        sample_format: if is_int { "integer" } else { "float" },
    })
}

/// Plays a [`Prompt`] as a stream of 20 ms G.711 RTP packets.
///
/// Every packet carries 160 samples; the last one is padded with silence. Sequence numbers
/// and timestamps wrap. The marker bit is set on the first packet (start of a talk spurt).
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    prompt: Prompt,
    law: Law,
    payload_type: u8,
    ssrc: u32,
    next_seq: u16,
    next_timestamp: u32,
    position: usize,
    packets_sent: u32,
}

impl PromptPlayer {
    /// A player for `codec`, which must be PCMU or PCMA at 8000 Hz.
    pub fn new(
        prompt: Prompt,
        codec: &Codec,
        ssrc: u32,
        initial_seq: u16,
        initial_ts: u32,
    ) -> Result<PromptPlayer, PromptError> {
        let law = match (codec.name, codec.clock_rate) {
            (CodecName::Pcmu, SAMPLE_RATE) => Law::Ulaw,
            (CodecName::Pcma, SAMPLE_RATE) => Law::Alaw,
            (name, _) => return Err(PromptError::UnsupportedCodec(name)),
        };
        Ok(PromptPlayer {
            prompt,
            law,
            payload_type: codec.payload_type,
            ssrc,
            next_seq: initial_seq,
            next_timestamp: initial_ts,
            position: 0,
            packets_sent: 0,
        })
    }

    /// The next RTP packet, ready to send; `None` once the whole prompt has been sent.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        let samples = self.prompt.samples();
        if self.position >= samples.len() {
            return None;
        }
        let end = (self.position + SAMPLES_PER_PACKET).min(samples.len());
        let mut payload = Vec::with_capacity(SAMPLES_PER_PACKET);
        self.law.encode_into(&samples[self.position..end], &mut payload);
        let silence = [0i16; SAMPLES_PER_PACKET];
        self.law.encode_into(&silence[..SAMPLES_PER_PACKET - (end - self.position)], &mut payload);

        let packet = Packet {
            header: Header {
                version: 2,
                marker: self.packets_sent == 0,
                payload_type: self.payload_type,
                sequence_number: self.next_seq,
                timestamp: self.next_timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        // marshal() sizes its own buffer, so it cannot fail for a header without extensions.
        let wire = packet.marshal().ok()?.to_vec();

        self.position = end;
        self.packets_sent += 1;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
        Some(wire)
    }

    /// Packets returned by [`next_packet`](Self::next_packet) so far.
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// Packets the whole prompt takes.
    pub fn total_packets(&self) -> u32 {
        let n = self.prompt.samples().len().div_ceil(SAMPLES_PER_PACKET);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Playback time of the whole prompt: packets × 20 ms.
    pub fn duration_ms(&self) -> u64 {
        u64::from(self.total_packets()) * PACKET_INTERVAL.as_millis() as u64
    }

    /// True once every packet has been returned.
    pub fn is_done(&self) -> bool {
        self.packets_sent >= self.total_packets()
    }

    /// When the next packet should go out, if the first went out at `started`; `None` when done.
    pub fn packet_due_at(&self, started: Instant) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        started.checked_add(PACKET_INTERVAL * self.packets_sent)
    }

    /// SSRC of the stream.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sequence number the next packet gets (or the stream's continuation, once done).
    pub fn next_seq(&self) -> u16 {
        self.next_seq
    }

    /// RTP timestamp the next packet gets (or the stream's continuation, once done).
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::g711::{alaw_to_linear, ulaw_to_linear};
    use crate::core::media::rtp::inspect;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn wav_bytes(spec: hound::WavSpec, samples: &[i16]) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
            for s in samples {
                match spec.sample_format {
                    hound::SampleFormat::Int if spec.bits_per_sample == 8 => {
                        w.write_sample((*s >> 8) as i8).unwrap()
                    }
                    hound::SampleFormat::Int => w.write_sample(*s).unwrap(),
                    hound::SampleFormat::Float => w.write_sample(f32::from(*s) / 32768.0).unwrap(),
                }
            }
            w.finalize().unwrap();
        }
        cursor.into_inner()
    }

    fn spec(
        sample_rate: u32,
        channels: u16,
        bits: u16,
        fmt: hound::SampleFormat,
    ) -> hound::WavSpec {
        hound::WavSpec { channels, sample_rate, bits_per_sample: bits, sample_format: fmt }
    }

    fn good_spec() -> hound::WavSpec {
        spec(8000, 1, 16, hound::SampleFormat::Int)
    }

    /// Half a G.711 quantization step, generously: see the g711 tests for the exact bounds.
    fn g711_bound(x: i16) -> i32 {
        i32::from(x).abs() / 32 + 140 / 32 + 16
    }

    #[test]
    fn builtin_prompt_loads_and_is_2_to_5_seconds() {
        let p = Prompt::high_demand().unwrap();
        let ms = p.duration_ms();
        assert!((2000..=5000).contains(&ms), "prompt is {ms} ms");
        // Not silence: speech has real energy.
        let peak = p.samples().iter().map(|s| i32::from(*s).abs()).max().unwrap();
        assert!(peak > 5000, "peak {peak}");
    }

    #[test]
    fn rejects_wrong_formats_clearly() {
        let samples = [0i16, 100, -100, 200];
        let cases = [
            (spec(16_000, 1, 16, hound::SampleFormat::Int), "16000 Hz"),
            (spec(8000, 2, 16, hound::SampleFormat::Int), "2 channel"),
            (spec(8000, 1, 8, hound::SampleFormat::Int), "8-bit"),
            (spec(8000, 1, 32, hound::SampleFormat::Float), "32-bit float"),
        ];
        for (s, needle) in cases {
            let err = Prompt::from_wav_bytes(&wav_bytes(s, &samples)).unwrap_err();
            assert!(matches!(err, PromptError::Format { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(needle) && msg.contains("8000 Hz mono 16-bit"), "{msg}");
        }
    }

    #[test]
    fn rejects_empty_and_garbage() {
        let empty = wav_bytes(good_spec(), &[]);
        assert_eq!(Prompt::from_wav_bytes(&empty).unwrap_err(), PromptError::Empty);
        assert!(matches!(Prompt::from_wav_bytes(b"not a wav"), Err(PromptError::Wav(_))));
        assert!(matches!(Prompt::from_wav_bytes(&[]), Err(PromptError::Wav(_))));
        assert_eq!(Prompt::from_samples(vec![]).unwrap_err(), PromptError::Empty);
    }

    #[test]
    fn truncated_or_mutated_wav_never_panics() {
        let wav = wav_bytes(good_spec(), &[1000; 400]);
        for n in 0..wav.len() {
            let _ = Prompt::from_wav_bytes(&wav[..n]);
        }
        let mut rng = SmallRng::seed_from_u64(711);
        for _ in 0..500 {
            let mut m = wav.clone();
            let i = rng.gen_range(0..60);
            m[i] = rng.gen();
            let _ = Prompt::from_wav_bytes(&m);
        }
    }

    #[test]
    fn round_trips_samples_through_wav() {
        let samples: Vec<i16> = (0..1000).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        let p = Prompt::from_wav_bytes(&wav_bytes(good_spec(), &samples)).unwrap();
        assert_eq!(p.samples(), &samples[..]);
        assert_eq!(p.duration_ms(), 125);
    }

    #[test]
    fn opus_is_unsupported_for_now() {
        let p = Prompt::from_samples(vec![0; 160]).unwrap();
        let err = PromptPlayer::new(p, &Codec::opus(111), 1, 2, 3).unwrap_err();
        assert_eq!(err, PromptError::UnsupportedCodec(CodecName::Opus));
    }

    #[test]
    fn pcmu_packets_decode_back_to_the_wav() {
        let prompt = Prompt::high_demand().unwrap();
        let samples = prompt.samples().to_vec();
        let mut player =
            PromptPlayer::new(prompt, &Codec::PCMU, 0xCAFE_F00D, 65_530, u32::MAX - 300).unwrap();
        let expected_packets = samples.len().div_ceil(160) as u32;
        assert_eq!(player.total_packets(), expected_packets);
        assert_eq!(player.duration_ms(), u64::from(expected_packets) * 20);
        assert!((2000..=5000).contains(&player.duration_ms()));

        let mut decoded = Vec::new();
        let mut i = 0u32;
        while let Some(pkt) = player.next_packet() {
            let info = inspect(&pkt).unwrap();
            assert_eq!(info.payload_type, 0);
            assert_eq!(info.ssrc, 0xCAFE_F00D);
            assert_eq!(info.seq, 65_530u16.wrapping_add(i as u16));
            assert_eq!(info.timestamp, (u32::MAX - 300).wrapping_add(160 * i));
            assert_eq!(info.marker, i == 0);
            assert_eq!(info.payload_len, 160);
            assert_eq!(pkt.len(), 12 + 160);
            decoded.extend(pkt[12..].iter().map(|c| ulaw_to_linear(*c)));
            i += 1;
            assert_eq!(player.packets_sent(), i);
        }
        assert_eq!(i, expected_packets);
        assert!(player.is_done());
        assert!(player.next_packet().is_none());
        assert_eq!(player.packets_sent(), expected_packets);

        for (n, (x, y)) in samples.iter().zip(&decoded).enumerate() {
            let err = (i32::from(*x) - i32::from(*y)).abs();
            assert!(err <= g711_bound(*x), "sample {n}: {x} vs {y}");
        }
        // The tail past the prompt is silence.
        assert!(decoded[samples.len()..].iter().all(|s| *s == 0));
    }

    #[test]
    fn pcma_packets_decode_back_and_keep_the_offered_payload_type() {
        let samples: Vec<i16> =
            (0..400).map(|i| ((i as f64 / 8.0).sin() * 12_000.0) as i16).collect();
        let prompt = Prompt::from_samples(samples.clone()).unwrap();
        let codec = Codec { payload_type: 98, ..Codec::PCMA };
        let mut player = PromptPlayer::new(prompt, &codec, 7, 0, 0).unwrap();
        let packets: Vec<Vec<u8>> = std::iter::from_fn(|| player.next_packet()).collect();
        assert_eq!(packets.len(), 3); // 400 samples = 2.5 packets
        let mut decoded = Vec::new();
        for p in &packets {
            assert_eq!(inspect(p).unwrap().payload_type, 98);
            decoded.extend(p[12..].iter().map(|c| alaw_to_linear(*c)));
        }
        for (x, y) in samples.iter().zip(&decoded) {
            assert!((i32::from(*x) - i32::from(*y)).abs() <= g711_bound(*x));
        }
        // A-law silence decodes to ±8.
        assert!(decoded[400..].iter().all(|s| s.abs() == 8));
    }

    #[test]
    fn pacing_follows_packets_sent() {
        let prompt = Prompt::from_samples(vec![0; 320]).unwrap();
        let mut player = PromptPlayer::new(prompt, &Codec::PCMU, 1, 10, 1000).unwrap();
        let t0 = Instant::now();
        assert_eq!(player.packet_due_at(t0), Some(t0));
        player.next_packet().unwrap();
        assert_eq!(player.packet_due_at(t0), Some(t0 + Duration::from_millis(20)));
        player.next_packet().unwrap();
        assert_eq!(player.packet_due_at(t0), None);
        assert_eq!((player.next_seq(), player.next_timestamp(), player.ssrc()), (12, 1320, 1));
    }
}

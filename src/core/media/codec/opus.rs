//! Opus (RFC 6716 / RFC 7587) over the system libopus, through `audiopus`.
//!
//! Owns the Opus encoder and decoder state of one stream and their configuration:
//!
//! - The RTP clock is always 48 kHz; the PCM side runs at any [`Rate`] (libopus converts
//!   internally, so no extra resampler is needed on an Opus leg).
//! - Mono or stereo per the remote `a=fmtp` ([`OpusFmtp`]: `stereo`, `sprop-stereo`).
//! - The encoder uses the VoIP application, configurable complexity (default 5) and bitrate,
//!   with in-band FEC on and a packet loss hint.
//! - The decoder conceals a lost frame (PLC) or recovers it from the next packet's FEC.
//!
//! Empty or malformed payloads give a [`CodecError`], never a panic.

use audiopus::coder::{Decoder as RawDecoder, Encoder as RawEncoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate};

use super::{CodecError, Rate, Result, FRAME_MS};

/// RTP clock rate of Opus, whatever the audio bandwidth (RFC 7587 §4.1).
pub const RTP_CLOCK_RATE: u32 = 48_000;
/// Longest packet duration Opus allows, in milliseconds.
const MAX_PACKET_MS: usize = 120;
/// Room for one encoded packet (1275 bytes per frame, up to 3 frames in 60 ms).
const MAX_PAYLOAD: usize = 4000;
/// Default encoder complexity (0..=10): a fair quality/CPU point for many calls per core.
pub const DEFAULT_COMPLEXITY: u8 = 5;
/// Default encoder bitrate for speech.
pub const DEFAULT_BITRATE: u32 = 32_000;
/// Default packet loss hint for the encoder's FEC.
pub const DEFAULT_LOSS_PERCENT: u8 = 10;

/// The Opus parameters of an `a=fmtp` line that matter here (RFC 7587 §6.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpusFmtp {
    /// `stereo=1`: the receiver of this fmtp prefers stereo.
    pub stereo: bool,
    /// `sprop-stereo=1`: the sender of this fmtp is likely to send stereo.
    pub sprop_stereo: bool,
    /// `useinbandfec=1`: the receiver can use in-band FEC.
    pub useinbandfec: bool,
    /// `maxaveragebitrate`: the most the receiver wants, in bit/s.
    pub maxaveragebitrate: Option<u32>,
}

impl OpusFmtp {
    /// Parses the parameter part of `a=fmtp:<pt> <params>` (`key=value` separated by `;`).
    /// Unknown or malformed parameters are ignored.
    pub fn parse(params: &str) -> OpusFmtp {
        let mut f = OpusFmtp::default();
        for item in params.split(';') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "stereo" => f.stereo = value == "1",
                "sprop-stereo" => f.sprop_stereo = value == "1",
                "useinbandfec" => f.useinbandfec = value == "1",
                "maxaveragebitrate" => f.maxaveragebitrate = value.parse().ok(),
                _ => {}
            }
        }
        f
    }

    /// Channels to encode when sending to the peer that sent this fmtp.
    pub fn send_channels(&self) -> u8 {
        if self.stereo {
            2
        } else {
            1
        }
    }

    /// Channels to decode what the peer that sent this fmtp sends us.
    pub fn recv_channels(&self) -> u8 {
        if self.sprop_stereo {
            2
        } else {
            1
        }
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// PCM rate of the encoder input.
    pub rate: Rate,
    /// 1 or 2 (interleaved input).
    pub channels: u8,
    /// 0..=10.
    pub complexity: u8,
    /// Target bitrate, bit/s (6000..=510000).
    pub bitrate: u32,
    /// In-band FEC (LBRR) in the packets.
    pub fec: bool,
    /// Expected packet loss, percent (0..=100): how much the encoder invests in FEC.
    pub loss_percent: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            rate: Rate::Hz48000,
            channels: 1,
            complexity: DEFAULT_COMPLEXITY,
            bitrate: DEFAULT_BITRATE,
            fec: true,
            loss_percent: DEFAULT_LOSS_PERCENT,
        }
    }
}

/// The operator's Opus encoder settings (`[media] opus_complexity`, `opus_bitrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusTuning {
    /// 0..=10.
    pub complexity: u8,
    /// Target bitrate, bit/s; the peer's `maxaveragebitrate` lowers it.
    pub bitrate: u32,
}

impl Default for OpusTuning {
    fn default() -> Self {
        OpusTuning { complexity: DEFAULT_COMPLEXITY, bitrate: DEFAULT_BITRATE }
    }
}

impl OpusConfig {
    /// Settings for sending to the peer whose fmtp is `remote`, from PCM at `rate`.
    pub fn for_remote(remote: &OpusFmtp, rate: Rate) -> OpusConfig {
        OpusConfig::for_remote_tuned(remote, rate, OpusTuning::default())
    }

    /// As [`OpusConfig::for_remote`], with the operator's complexity and bitrate.
    pub fn for_remote_tuned(remote: &OpusFmtp, rate: Rate, tuning: OpusTuning) -> OpusConfig {
        let bitrate = remote
            .maxaveragebitrate
            .map_or(tuning.bitrate, |max| tuning.bitrate.min(max.max(6000)));
        OpusConfig {
            rate,
            channels: remote.send_channels(),
            bitrate,
            complexity: tuning.complexity.min(10),
            ..OpusConfig::default()
        }
    }
}

fn sample_rate(rate: Rate) -> SampleRate {
    match rate {
        Rate::Hz8000 => SampleRate::Hz8000,
        Rate::Hz16000 => SampleRate::Hz16000,
        Rate::Hz24000 => SampleRate::Hz24000,
        Rate::Hz48000 => SampleRate::Hz48000,
    }
}

fn channels(n: u8) -> Result<Channels> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        other => Err(CodecError::UnsupportedChannels(other)),
    }
}

/// RTP timestamp increment for `samples_per_channel` samples at `rate`.
pub fn rtp_ticks(samples_per_channel: usize, rate: Rate) -> u32 {
    (samples_per_channel as u64 * u64::from(RTP_CLOCK_RATE) / u64::from(rate.hz())) as u32
}

/// Whether `samples_per_channel` is an Opus frame duration (2.5, 5, 10, 20, 40 or 60 ms).
fn is_frame_len(samples_per_channel: usize, rate: Rate) -> bool {
    let per_2_5_ms = rate.per_ms() * 5 / 2;
    [1, 2, 4, 8, 16, 24].contains(&(samples_per_channel / per_2_5_ms))
        && samples_per_channel.is_multiple_of(per_2_5_ms)
}

/// An Opus encoder for one outgoing stream.
#[derive(Debug)]
pub struct OpusEncoder {
    raw: RawEncoder,
    config: OpusConfig,
    payload: Vec<u8>,
}

impl OpusEncoder {
    /// An encoder with `config` (VoIP application, FEC as configured).
    pub fn new(config: OpusConfig) -> Result<OpusEncoder> {
        if config.complexity > 10 {
            return Err(CodecError::BadComplexity(config.complexity));
        }
        if !(6000..=510_000).contains(&config.bitrate) {
            return Err(CodecError::BadBitrate(config.bitrate));
        }
        let mut raw = RawEncoder::new(
            sample_rate(config.rate),
            channels(config.channels)?,
            Application::Voip,
        )?;
        raw.set_complexity(config.complexity)?;
        raw.set_bitrate(Bitrate::BitsPerSecond(config.bitrate as i32))?;
        raw.set_inband_fec(config.fec)?;
        raw.set_packet_loss_perc(config.loss_percent.min(100))?;
        Ok(OpusEncoder { raw, config, payload: vec![0; MAX_PAYLOAD] })
    }

    /// The settings this encoder was built with (loss hint as last set).
    pub fn config(&self) -> &OpusConfig {
        &self.config
    }

    /// Updates the packet loss hint (e.g. from RTCP receiver reports).
    pub fn set_loss_percent(&mut self, percent: u8) -> Result<()> {
        self.raw.set_packet_loss_perc(percent.min(100))?;
        self.config.loss_percent = percent.min(100);
        Ok(())
    }

    /// Updates the target bitrate.
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<()> {
        if !(6000..=510_000).contains(&bitrate) {
            return Err(CodecError::BadBitrate(bitrate));
        }
        self.raw.set_bitrate(Bitrate::BitsPerSecond(bitrate as i32))?;
        self.config.bitrate = bitrate;
        Ok(())
    }

    /// Encoder look-ahead in samples at the PCM rate (the codec's algorithmic delay).
    pub fn lookahead(&self) -> Result<usize> {
        Ok(self.raw.lookahead()? as usize)
    }

    /// Encodes one frame of interleaved PCM (2.5 to 60 ms; 20 ms on the call path) and
    /// returns the RTP payload.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8]> {
        let ch = usize::from(self.config.channels);
        let per_channel = pcm.len() / ch;
        if !pcm.len().is_multiple_of(ch) || !is_frame_len(per_channel, self.config.rate) {
            return Err(CodecError::BadFrameLen {
                samples: pcm.len(),
                rate: self.config.rate.hz(),
            });
        }
        let n = self.raw.encode(pcm, &mut self.payload)?;
        Ok(&self.payload[..n])
    }

    /// [`Self::encode`], appending the payload to `out`; returns its length.
    pub fn encode_into(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<usize> {
        let payload = self.encode(pcm)?;
        out.extend_from_slice(payload);
        Ok(payload.len())
    }
}

/// An Opus decoder for one incoming stream, with PLC and FEC.
#[derive(Debug)]
pub struct OpusDecoder {
    raw: RawDecoder,
    rate: Rate,
    channels: u8,
    pcm: Vec<i16>,
    /// Samples per channel of the last decoded packet: the size of a frame to conceal.
    last_frame: usize,
}

impl OpusDecoder {
    /// A decoder producing interleaved PCM at `rate` with `channels` (1 or 2) channels.
    pub fn new(rate: Rate, channels_out: u8) -> Result<OpusDecoder> {
        let raw = RawDecoder::new(sample_rate(rate), channels(channels_out)?)?;
        Ok(OpusDecoder {
            raw,
            rate,
            channels: channels_out,
            pcm: vec![0; rate.per_ms() * MAX_PACKET_MS * usize::from(channels_out)],
            last_frame: rate.per_ms() * FRAME_MS as usize,
        })
    }

    /// Output rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Output channels.
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Decodes one RTP payload to interleaved PCM.
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[i16]> {
        let packet = Packet::try_from(payload).map_err(|_| CodecError::EmptyPayload)?;
        let out = MutSignals::try_from(&mut self.pcm[..])?;
        let n = self.raw.decode(Some(packet), out, false)?;
        if n > 0 {
            self.last_frame = n;
        }
        Ok(self.interleaved(n))
    }

    /// Conceals one lost frame (as long as the last packet) with the decoder's PLC.
    pub fn conceal(&mut self) -> Result<&[i16]> {
        let len = self.last_frame * usize::from(self.channels);
        let out = MutSignals::try_from(&mut self.pcm[..len])?;
        let n = self.raw.decode(None, out, false)?;
        Ok(self.interleaved(n))
    }

    /// Recovers the lost frame *before* `next_payload` from the FEC data that packet carries
    /// (plain PLC when it carries none). Decode `next_payload` itself afterwards.
    pub fn decode_fec(&mut self, next_payload: &[u8]) -> Result<&[i16]> {
        let packet = Packet::try_from(next_payload).map_err(|_| CodecError::EmptyPayload)?;
        let len = self.last_frame * usize::from(self.channels);
        let out = MutSignals::try_from(&mut self.pcm[..len])?;
        let n = self.raw.decode(Some(packet), out, true)?;
        Ok(self.interleaved(n))
    }

    /// Whether `payload` carries in-band FEC (SILK LBRR data) for the frame before it, so
    /// [`Self::decode_fec`] really rebuilds that frame instead of falling back to PLC.
    pub fn has_fec(payload: &[u8]) -> bool {
        has_lbrr(payload)
    }

    fn interleaved(&self, per_channel: usize) -> &[i16] {
        let len = (per_channel * usize::from(self.channels)).min(self.pcm.len());
        &self.pcm[..len]
    }
}

/// RFC 6716: whether the first Opus frame of `packet` has its LBRR flag set. Only SILK and
/// hybrid configurations (TOC config 0-15) carry LBRR. Their range-coded data starts with one
/// VAD flag per 20 ms SILK frame and then the LBRR flag, each coded with probability one half,
/// so they are the leading bits of the frame's first byte. Packets of 2 or more frames with
/// explicit lengths (codes 2 and 3) are not parsed and count as carrying none.
fn has_lbrr(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else { return false };
    let config = toc >> 3;
    if config >= 16 {
        return false; // CELT only
    }
    if toc & 0x3 >= 2 {
        return false;
    }
    let Some(&first) = packet.get(1) else { return false };
    // SILK frames per Opus frame: 10/20 ms -> 1, 40 ms -> 2, 60 ms -> 3 (hybrid: 10/20 ms)
    let silk_frames = match config & 0x3 {
        2 if config < 12 => 2,
        3 if config < 12 => 3,
        _ => 1,
    };
    first & (0x80 >> silk_frames) != 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::media::prompt::Prompt;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    pub(crate) fn tone(hz: f64, rate: Rate, len: usize, amp: f64) -> Vec<i16> {
        (0..len)
            .map(|i| {
                let t = i as f64 / f64::from(rate.hz());
                (amp * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    /// Best normalized cross-correlation of `y` against `x` over lags 0..max_lag (y later).
    pub(crate) fn aligned_correlation(x: &[i16], y: &[i16], max_lag: usize) -> (usize, f64) {
        let mut best = (0, f64::MIN);
        for lag in 0..max_lag {
            let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for (i, &a) in x.iter().enumerate() {
                let Some(&b) = y.get(i + lag) else { break };
                let (a, b) = (f64::from(a), f64::from(b));
                xy += a * b;
                xx += a * a;
                yy += b * b;
            }
            let c = xy / (xx * yy).sqrt().max(1e-9);
            if c > best.1 {
                best = (lag, c);
            }
        }
        best
    }

    pub(crate) fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    }

    fn round_trip(signal: &[i16], rate: Rate) -> Vec<i16> {
        let mut enc = OpusEncoder::new(OpusConfig { rate, ..OpusConfig::default() }).unwrap();
        let mut dec = OpusDecoder::new(rate, 1).unwrap();
        let mut out = Vec::new();
        for frame in signal.chunks_exact(rate.frame_len()) {
            let payload = enc.encode(frame).unwrap().to_vec();
            assert!(!payload.is_empty() && payload.len() < 400);
            out.extend_from_slice(dec.decode(&payload).unwrap());
        }
        out
    }

    #[test]
    fn tone_round_trip_correlates() {
        for rate in Rate::ALL {
            let x = tone(1000.0, rate, rate.hz() as usize, 10000.0);
            let y = round_trip(&x, rate);
            assert_eq!(y.len(), x.len());
            // Skip the codec's start-up; compare 0.5 s after alignment.
            let skip = rate.frame_len() * 5;
            let (lag, c) = aligned_correlation(
                &x[skip..skip + rate.hz() as usize / 2],
                &y[skip..],
                rate.per_ms() * 30,
            );
            eprintln!(
                "opus 1 kHz tone at {} Hz: best lag {lag} samples (periodic), correlation {c:.4}",
                rate.hz()
            );
            assert!(c > 0.9, "{rate:?}: correlation {c}");
        }
    }

    #[test]
    fn speech_round_trip_correlates() {
        let prompt = Prompt::high_demand().unwrap();
        let x = prompt.samples();
        let y = round_trip(x, Rate::Hz8000);
        let n = x.len() / 160 * 160;
        let (lag, c) = aligned_correlation(&x[..n - 800], &y, 8 * 30);
        eprintln!("opus speech at 8 kHz: delay {lag} samples, correlation {c:.4}");
        assert!(c > 0.9, "speech correlation {c}");
    }

    #[test]
    fn stereo_round_trip() {
        let mono = tone(440.0, Rate::Hz48000, 48000, 8000.0);
        let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s / 2]).collect();
        let mut enc =
            OpusEncoder::new(OpusConfig { channels: 2, ..OpusConfig::default() }).unwrap();
        let mut dec = OpusDecoder::new(Rate::Hz48000, 2).unwrap();
        let mut out = Vec::new();
        for frame in stereo.chunks_exact(960 * 2) {
            let p = enc.encode(frame).unwrap().to_vec();
            out.extend_from_slice(dec.decode(&p).unwrap());
        }
        assert_eq!(out.len(), stereo.len());
        let left: Vec<i16> = out.iter().step_by(2).copied().collect();
        let right: Vec<i16> = out.iter().skip(1).step_by(2).copied().collect();
        let ratio = rms(&right[9600..]) / rms(&left[9600..]);
        assert!((0.35..0.65).contains(&ratio), "right/left {ratio}");
    }

    #[test]
    fn rejects_bad_frames_and_settings() {
        let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap();
        assert!(matches!(enc.encode(&[0; 100]), Err(CodecError::BadFrameLen { .. })));
        assert!(matches!(enc.encode(&[]), Err(CodecError::BadFrameLen { .. })));
        assert!(enc.encode(&[0; 480]).is_ok()); // 10 ms
        assert!(matches!(
            OpusEncoder::new(OpusConfig { complexity: 11, ..OpusConfig::default() }),
            Err(CodecError::BadComplexity(11))
        ));
        assert!(matches!(
            OpusEncoder::new(OpusConfig { bitrate: 10, ..OpusConfig::default() }),
            Err(CodecError::BadBitrate(10))
        ));
        assert!(matches!(
            OpusEncoder::new(OpusConfig { channels: 3, ..OpusConfig::default() }),
            Err(CodecError::UnsupportedChannels(3))
        ));
        assert!(matches!(
            OpusDecoder::new(Rate::Hz8000, 0),
            Err(CodecError::UnsupportedChannels(0))
        ));
    }

    #[test]
    fn empty_and_garbage_payloads_error_never_panic() {
        let mut dec = OpusDecoder::new(Rate::Hz16000, 1).unwrap();
        assert!(matches!(dec.decode(&[]), Err(CodecError::EmptyPayload)));
        assert!(matches!(dec.decode_fec(&[]), Err(CodecError::EmptyPayload)));
        // Code 3 packet announcing zero frames: malformed.
        assert!(matches!(dec.decode(&[0x03, 0x00]), Err(CodecError::Opus(_))));
        let mut rng = SmallRng::seed_from_u64(0x0945);
        let mut errors = 0;
        for i in 0..3000 {
            let len = rng.gen_range(0..1600);
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let result = if i % 3 == 0 { dec.decode_fec(&junk) } else { dec.decode(&junk) };
            match result {
                Ok(pcm) => assert!(pcm.len() <= 16 * 120),
                Err(_) => errors += 1,
            }
            // Whatever came before, concealment still works.
            assert!(dec.conceal().unwrap().len() <= 16 * 120);
        }
        assert!(errors > 1000, "only {errors} of 3000 random payloads rejected");
    }

    #[test]
    fn plc_first_lost_frame_is_not_silent() {
        let rate = Rate::Hz16000;
        let x = tone(300.0, rate, rate.frame_len() * 10, 8000.0);
        let mut enc = OpusEncoder::new(OpusConfig { rate, ..OpusConfig::default() }).unwrap();
        let mut dec = OpusDecoder::new(rate, 1).unwrap();
        for frame in x.chunks_exact(rate.frame_len()) {
            let p = enc.encode(frame).unwrap().to_vec();
            dec.decode(&p).unwrap();
        }
        let concealed = dec.conceal().unwrap();
        assert_eq!(concealed.len(), rate.frame_len());
        assert!(rms(concealed) > 1000.0, "concealed rms {}", rms(concealed));
    }

    #[test]
    fn lbrr_flag_is_read_from_the_packet() {
        // CELT-only, empty, too short and multi-frame packets carry no FEC
        assert!(!has_lbrr(&[]));
        assert!(!has_lbrr(&[0x08]));
        assert!(!has_lbrr(&[0xF8, 0xFF]));
        assert!(!has_lbrr(&[0x0A, 0xFF, 0xFF]));
        // SILK 20 ms (config 1), one frame: VAD bit then LBRR bit
        assert!(has_lbrr(&[0x08, 0b0100_0000]));
        assert!(!has_lbrr(&[0x08, 0b1000_0000]));
        // SILK 40 ms (config 2): two VAD bits, then LBRR
        assert!(has_lbrr(&[0x10, 0b0010_0000]));
        assert!(!has_lbrr(&[0x10, 0b0100_0000]));
        // hybrid FB 10 ms (config 14): one SILK frame
        assert!(has_lbrr(&[14 << 3, 0b0100_0000]));
        // a real encoder with FEC on and loss expected sets it once speech runs, never without
        let p = Prompt::high_demand().unwrap();
        let speech = p.samples();
        let flagged = |fec: bool| {
            let cfg = OpusConfig { rate: Rate::Hz8000, fec, ..OpusConfig::default() };
            let mut enc = OpusEncoder::new(cfg).unwrap();
            enc.set_loss_percent(10).unwrap();
            speech.chunks_exact(160).filter(|f| has_lbrr(enc.encode(f).unwrap())).count()
        };
        assert!(flagged(true) > 20, "FEC on: {} packets with LBRR", flagged(true));
        assert_eq!(flagged(false), 0);
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_plc() {
        // Speech-like: the FEC (LBRR) lives in the SILK layer, so use the prompt at 8 kHz.
        let prompt = Prompt::high_demand().unwrap();
        let x = &prompt.samples()[..160 * 100];
        let rate = Rate::Hz8000;
        let config = OpusConfig { rate, loss_percent: 20, ..OpusConfig::default() };
        let mut enc = OpusEncoder::new(config).unwrap();
        let packets: Vec<Vec<u8>> =
            x.chunks_exact(160).map(|f| enc.encode(f).unwrap().to_vec()).collect();
        let reference: Vec<Vec<i16>> = {
            let mut d = OpusDecoder::new(rate, 1).unwrap();
            packets.iter().map(|p| d.decode(p).unwrap().to_vec()).collect()
        };
        let (mut fec_err, mut plc_err, mut energy) = (0.0, 0.0, 0.0);
        for lost in (20..95).step_by(7) {
            let mut with_fec = OpusDecoder::new(rate, 1).unwrap();
            let mut with_plc = OpusDecoder::new(rate, 1).unwrap();
            for p in &packets[..lost] {
                with_fec.decode(p).unwrap();
                with_plc.decode(p).unwrap();
            }
            let f = with_fec.decode_fec(&packets[lost + 1]).unwrap().to_vec();
            let c = with_plc.conceal().unwrap().to_vec();
            assert_eq!(f.len(), 160);
            let truth = &reference[lost];
            for ((&t, &a), &b) in truth.iter().zip(&f).zip(&c) {
                let t = f64::from(t);
                fec_err += (t - f64::from(a)).powi(2);
                plc_err += (t - f64::from(b)).powi(2);
                energy += t * t;
            }
        }
        eprintln!(
            "opus lost-frame error energy vs truth: FEC {:.3}, PLC {:.3}",
            fec_err / energy,
            plc_err / energy
        );
        assert!(fec_err < plc_err, "FEC {fec_err} not better than PLC {plc_err}");
    }

    #[test]
    fn fmtp_parsing() {
        let f = OpusFmtp::parse(
            "minptime=10; useinbandfec=1; stereo=1; sprop-stereo=0; maxaveragebitrate=20000",
        );
        assert!(f.stereo && !f.sprop_stereo && f.useinbandfec);
        assert_eq!(f.maxaveragebitrate, Some(20000));
        assert_eq!((f.send_channels(), f.recv_channels()), (2, 1));
        let c = OpusConfig::for_remote(&f, Rate::Hz16000);
        assert_eq!((c.channels, c.bitrate, c.rate, c.complexity), (2, 20000, Rate::Hz16000, 5));
        assert!(c.fec);
        let junk = OpusFmtp::parse(";;=;stereo;maxaveragebitrate=x;SPROP-STEREO=1");
        assert_eq!(junk, OpusFmtp { sprop_stereo: true, ..OpusFmtp::default() });
        assert_eq!(rtp_ticks(160, Rate::Hz8000), 960);
        assert_eq!(rtp_ticks(320, Rate::Hz16000), 960);
    }
}

//! The caller's side of a benchmark call: real speech (the built-in prompt, 8 kHz) encoded
//! once in the codec under test and looped, and RTP packets written around it.

use trunkguard::core::media::codec::opus::{OpusConfig, OpusEncoder};
use trunkguard::core::media::codec::{Rate, Resampler};
use trunkguard::core::media::g711::Law;
use trunkguard::core::media::prompt::Prompt;

use super::{BenchCodec, BenchError};

/// Length of the fixed RTP header written by [`CallerStream`].
const RTP_HEADER: usize = 12;

/// The caller's encoded speech, one payload per 20 ms frame.
#[derive(Debug, Clone)]
pub struct CallerSignal {
    payloads: Vec<Vec<u8>>,
    payload_type: u8,
    frame_ticks: u32,
}

impl CallerSignal {
    /// The prompt's speech in `codec` (Opus: upsampled to 48 kHz as a phone would send it,
    /// encoded at the default complexity, bitrate and FEC).
    pub fn new(codec: BenchCodec) -> Result<CallerSignal, BenchError> {
        let prompt = Prompt::high_demand()?;
        let frames = prompt.samples().chunks_exact(Rate::Hz8000.frame_len());
        let payloads = match codec {
            BenchCodec::Pcmu => frames
                .map(|f| {
                    let mut p = Vec::with_capacity(f.len());
                    Law::Ulaw.encode_into(f, &mut p);
                    p
                })
                .collect(),
            BenchCodec::Opus => {
                let mut up = Resampler::new(Rate::Hz8000, Rate::Hz48000)?;
                let mut enc = OpusEncoder::new(OpusConfig::default())?;
                let mut out = Vec::new();
                for f in frames {
                    out.push(enc.encode(up.process(f)?)?.to_vec());
                }
                out
            }
        };
        let codec_info = codec.codec();
        Ok(CallerSignal {
            payloads,
            payload_type: codec_info.payload_type,
            frame_ticks: codec_info.clock_rate / 50,
        })
    }

    /// Frames in the loop.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    /// Payload of frame `n` of the endless loop.
    pub fn payload(&self, n: usize) -> &[u8] {
        match self.payloads.len() {
            0 => &[],
            len => &self.payloads[n % len],
        }
    }
}

/// One caller's RTP stream: sequence numbers and timestamps advancing by one frame a packet.
#[derive(Debug, Clone)]
pub struct CallerStream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// Where in the speech loop this caller starts (calls do not speak in unison).
    frame: usize,
}

impl CallerStream {
    /// Caller `index`'s stream.
    pub fn new(index: usize) -> CallerStream {
        let i = index as u32;
        CallerStream {
            ssrc: 0x5eed_0000 ^ i,
            seq: (i.wrapping_mul(7919) & 0xffff) as u16,
            timestamp: i.wrapping_mul(104_729),
            frame: index.wrapping_mul(37),
        }
    }

    /// Writes the next packet into `buf` (reused, so nothing is allocated once it has grown).
    pub fn next_packet<'a>(&mut self, signal: &CallerSignal, buf: &'a mut Vec<u8>) -> &'a [u8] {
        let marker = if self.frame == 0 { 0x80 } else { 0 };
        buf.clear();
        buf.push(0x80);
        buf.push(marker | signal.payload_type);
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.timestamp.to_be_bytes());
        buf.extend_from_slice(&self.ssrc.to_be_bytes());
        debug_assert_eq!(buf.len(), RTP_HEADER);
        buf.extend_from_slice(signal.payload(self.frame));
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(signal.frame_ticks);
        self.frame = self.frame.wrapping_add(1);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trunkguard::core::media::rtp::inspect;

    #[test]
    fn pcmu_speech_is_160_byte_frames_in_valid_rtp() {
        let signal = CallerSignal::new(BenchCodec::Pcmu).unwrap();
        assert!(signal.len() > 50, "seconds of speech");
        let mut stream = CallerStream::new(3);
        let mut buf = Vec::new();
        let first = inspect(stream.next_packet(&signal, &mut buf)).unwrap();
        let second = inspect(stream.next_packet(&signal, &mut buf)).unwrap();
        assert_eq!((first.payload_type, first.payload_len), (0, 160));
        assert_eq!(second.seq, first.seq.wrapping_add(1));
        assert_eq!(second.timestamp, first.timestamp.wrapping_add(160));
        assert_eq!(second.ssrc, first.ssrc);
    }

    #[test]
    fn opus_speech_is_compressed_and_loops() {
        let signal = CallerSignal::new(BenchCodec::Opus).unwrap();
        let mean = (0..signal.len()).map(|n| signal.payload(n).len()).sum::<usize>() / signal.len();
        assert!((20..200).contains(&mean), "about 32 kbit/s: {mean} bytes a frame");
        assert_eq!(signal.payload(signal.len() + 2), signal.payload(2));
        let mut buf = Vec::new();
        let info = inspect(CallerStream::new(0).next_packet(&signal, &mut buf)).unwrap();
        assert_eq!((info.payload_type, info.marker), (111, true));
    }
}

//! The codec pipeline of one call, sans-IO: turning caller RTP payloads into PCM for the AI side
//! and AI-side audio back into caller RTP payloads, 20 ms frame by frame.
//!
//! - [`opus`]: Opus encoder / decoder wrappers over the system libopus (FEC, PLC, fmtp).
//! - [`resample`]: low-latency rate conversion between 8, 16, 24 and 48 kHz (rubato).
//! - [`pipeline`]: per-codec [`pipeline::Decoder`] / [`pipeline::Encoder`] and the per-call
//!   [`pipeline::Transcoder`] (caller codec <-> AI-side format, prompt playback in any codec).
//!
//! This module owns the shared vocabulary: [`Rate`] and [`CodecError`].

pub mod opus;
pub mod pipeline;
pub mod resample;

pub use opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusFmtp};
pub use pipeline::{AiFormat, Decoder, Encoder, G711Decoder, Transcoder};

pub use resample::Resampler;

/// Frame duration of the pipeline (RTP ptime).
pub const FRAME_MS: u32 = 20;

/// A PCM sample rate the pipeline supports (all are also Opus rates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    /// 8 kHz: G.711, telephone band.
    Hz8000,
    /// 16 kHz: wideband.
    Hz16000,
    /// 24 kHz: super-wideband (a common AI voice rate).
    Hz24000,
    /// 48 kHz: fullband, the Opus RTP clock.
    Hz48000,
}

impl Rate {
    /// Every supported rate, lowest first.
    pub const ALL: [Rate; 4] = [Rate::Hz8000, Rate::Hz16000, Rate::Hz24000, Rate::Hz48000];

    /// The rate for `hz`, if supported.
    pub fn from_hz(hz: u32) -> Result<Rate> {
        match hz {
            8000 => Ok(Rate::Hz8000),
            16000 => Ok(Rate::Hz16000),
            24000 => Ok(Rate::Hz24000),
            48000 => Ok(Rate::Hz48000),
            other => Err(CodecError::UnsupportedRate(other)),
        }
    }

    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            Rate::Hz8000 => 8000,
            Rate::Hz16000 => 16000,
            Rate::Hz24000 => 24000,
            Rate::Hz48000 => 48000,
        }
    }

    /// Samples (per channel) in one millisecond.
    pub const fn per_ms(self) -> usize {
        (self.hz() / 1000) as usize
    }

    /// Samples (per channel) in one 20 ms frame.
    pub const fn frame_len(self) -> usize {
        self.per_ms() * FRAME_MS as usize
    }
}

/// Why a codec operation failed. Bad input yields one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused (invalid packet, bad argument, ...).
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
    /// An empty payload where a coded frame was expected.
    #[error("empty payload")]
    EmptyPayload,
    /// A PCM frame whose length is not a frame size the codec can take.
    #[error("{samples} samples is not a valid frame at {rate} Hz")]
    BadFrameLen {
        /// Samples given (all channels).
        samples: usize,
        /// The sample rate expected.
        rate: u32,
    },
    /// A sample rate the pipeline does not support.
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedRate(u32),
    /// A channel count other than 1 or 2.
    #[error("unsupported channel count {0}")]
    UnsupportedChannels(u8),
    /// Opus complexity outside 0..=10.
    #[error("opus complexity {0} outside 0..=10")]
    BadComplexity(u8),
    /// An encoder bitrate outside 6..=510 kbit/s.
    #[error("opus bitrate {0} bit/s outside 6000..=510000")]
    BadBitrate(u32),
    /// A codec the pipeline cannot handle.
    #[error("unsupported codec {0}")]
    UnsupportedCodec(String),
    /// The resampler could not be built.
    #[error("resampler construction: {0}")]
    ResamplerBuild(#[from] rubato::ResamplerConstructionError),
    /// A resampler buffer view could not be made (internal sizing bug, reported not panicked).
    #[error("resampler buffer size")]
    ResampleBuffer,
    /// The resampler failed on a chunk.
    #[error("resampling: {0}")]
    Resample(#[from] rubato::ResampleError),
}

/// Result of codec operations.
pub type Result<T> = std::result::Result<T, CodecError>;

//! Media for the call path: G.711 codecs, the canned prompt, and RTP packetization.
//!
//! - [`g711`]: μ-law / A-law companding.
//! - [`prompt`]: a prompt loaded from WAV and the player that cuts it into 20 ms RTP packets.
//! - [`rtp`]: inspecting received RTP packets without trusting them.
//! - [`jitter`]: the adaptive jitter buffer that turns received RTP into 20 ms frames.
//! - [`plc`]: G.711 packet loss concealment for the frames the jitter buffer reports lost.
//! - [`codec`]: the per-call codec pipeline (Opus, resampling, caller <-> AI transcoding).

pub mod g711;
pub mod prompt;
pub mod rtp;
pub mod jitter;
pub mod plc;
pub mod codec;

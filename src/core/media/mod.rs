//! Media for the call path: G.711 codecs, the canned prompt, and RTP packetization.
//!
//! - [`g711`]: μ-law / A-law companding.
//! - [`prompt`]: a prompt loaded from WAV and the player that cuts it into 20 ms RTP packets.
//! - [`rtp`]: inspecting received RTP packets without trusting them.
//! - [`jitter`]: the adaptive jitter buffer that turns received RTP into 20 ms frames.
//! - [`plc`]: G.711 packet loss concealment for the frames the jitter buffer reports lost.
//! - [`dtmf`]: RFC 4733 telephone-events, received (one event per key press) and sent.
//! - [`rtcp`]: RTCP sender/receiver reports per call (RFC 3550), loss, jitter and RTT.
//! - [`stats`]: per-call media statistics and the E-model (ITU-T G.107) MOS estimate.
//! - [`playout`]: the playout buffer for bursty audio from the AI (barge-in flush, marks).

pub mod g711;
pub mod prompt;
pub mod rtp;
pub mod jitter;
pub mod plc;
pub mod dtmf;
pub mod rtcp;
pub mod stats;
pub mod playout;

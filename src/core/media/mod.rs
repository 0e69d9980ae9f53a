//! Media for the call path: everything between RTP on the wire and audio frames.
//!
//! - [`g711`]: μ-law / A-law companding.
//! - [`prompt`]: a prompt loaded from WAV (8 kHz mono PCM).
//! - [`rtp`]: inspecting received RTP packets without trusting them.
//! - [`rtp_out`]: the sending side of an RTP stream (SSRC, sequence, timestamp, marker).
//! - [`jitter`]: the adaptive jitter buffer that turns received RTP into 20 ms frames.
//! - [`plc`]: G.711 packet loss concealment for the frames the jitter buffer reports lost.
//! - [`codec`]: the per-call codec pipeline (Opus, resampling, caller <-> AI transcoding).
//! - [`dtmf`]: RFC 4733 telephone-events, received (one event per key press) and sent.
//! - [`rtcp`]: RTCP sender/receiver reports per call (RFC 3550), loss, jitter and RTT.
//! - [`stats`]: per-call media statistics and the E-model (ITU-T G.107) MOS estimate.
//! - [`cushion`]: the playout cushion's target from the agent's measured arrival jitter.
//! - [`playout`]: the playout buffer for bursty audio from the AI (cushion, talk spurts,
//!   underruns, barge-in flush, marks).
//! - [`source`]: strict media source rules: accept the SDP's address or latch once, then fixed.
//! - [`session`]: one call's media, tying all of the above to a 20 ms clock.

pub mod codec;
pub mod cushion;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod playout;
pub mod plc;
pub mod prompt;
pub mod rtcp;
pub mod rtp;
pub mod rtp_out;
pub mod session;
pub mod source;
pub mod stats;

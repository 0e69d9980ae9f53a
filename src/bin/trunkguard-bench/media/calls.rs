//! A set of benchmark calls, each a full [`MediaSession`] fed by a [`CallerStream`], and the
//! one step every call takes per 20 ms: a caller packet in, everything due run, all output
//! drained, and the decoded caller audio pushed straight back as the AI's audio (echo).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use trunkguard::core::media::codec::opus::OpusTuning;
use trunkguard::core::media::jitter::JitterConfig;
use trunkguard::core::media::session::{MediaParams, MediaSession};
use trunkguard::core::sdp::Negotiated;

use super::signal::{CallerSignal, CallerStream};
use super::{BenchCodec, BenchError};

/// One benchmark call.
struct Call {
    session: MediaSession,
    stream: CallerStream,
    from: SocketAddr,
}

/// What one call's step produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutput {
    /// RTP/RTCP datagrams sent to the caller.
    pub datagrams: usize,
    /// Decoded caller frames handed to the AI side (and echoed back).
    pub caller_frames: usize,
}

/// Benchmark calls sharing one caller signal.
pub struct Calls<'s> {
    calls: Vec<Call>,
    signal: &'s CallerSignal,
    packet: Vec<u8>,
    /// AI audio refused by a full playout buffer (never expected: the echo is real time).
    pub push_errors: u64,
}

impl<'s> Calls<'s> {
    /// `n` calls in `codec`, created at `now` and started (their send clock runs).
    pub fn new(
        codec: BenchCodec,
        signal: &'s CallerSignal,
        n: usize,
        now: Instant,
    ) -> Result<Calls<'s>, BenchError> {
        let mut calls = Vec::with_capacity(n);
        for i in 0..n {
            let from = caller_address(i);
            let mut session = MediaSession::new(params(codec, i, from), now)?;
            session.start(now);
            calls.push(Call { session, stream: CallerStream::new(i), from });
        }
        Ok(Calls { calls, signal, packet: Vec::with_capacity(1500), push_errors: 0 })
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Call `i`'s 20 ms step at `now`: its caller's next packet arrives, the session runs what
    /// is due, every datagram is taken (and dropped: no socket), every decoded caller frame
    /// is echoed back as AI audio.
    pub fn step(&mut self, i: usize, now: Instant) -> StepOutput {
        let Some(call) = self.calls.get_mut(i) else { return StepOutput::default() };
        let packet = call.stream.next_packet(self.signal, &mut self.packet);
        call.session.on_rtp(now, call.from, packet);
        call.session.handle_timeout(now);
        let mut out = StepOutput::default();
        while let Some(frame) = call.session.poll_caller_audio() {
            out.caller_frames += 1;
            if call.session.push_ai_audio(now, &frame).is_err() {
                self.push_errors += 1;
            }
        }
        while let Some(datagram) = call.session.poll_transmit() {
            out.datagrams += 1;
            drop(datagram);
        }
        while call.session.poll_event().is_some() {}
        out
    }

    /// Every call's step at `now`; returns the caller frames processed.
    pub fn step_all(&mut self, now: Instant) -> u64 {
        (0..self.calls.len()).map(|i| self.step(i, now).caller_frames as u64).sum()
    }

    /// Concealed caller frames over all calls (the benchmark feeds no loss: expected 0 after
    /// the start).
    pub fn concealed_frames(&self) -> u64 {
        self.calls.iter().map(|c| c.session.counters().concealed_frames).sum()
    }

    /// RTP packets sent to the callers over all calls.
    #[cfg(test)]
    pub fn rtp_sent(&self) -> u64 {
        self.calls.iter().map(|c| c.session.counters().rtp_sent).sum()
    }
}

/// Caller `i`'s RTP address (never used on the network: nothing is sent).
fn caller_address(i: usize) -> SocketAddr {
    let port = 10_000 + (i % 25_000) as u16 * 2;
    let host = (i / 25_000) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, host)), port)
}

fn params(codec: BenchCodec, i: usize, remote_rtp: SocketAddr) -> MediaParams {
    MediaParams {
        negotiated: Negotiated {
            codec: codec.codec(),
            dtmf_payload_type: Some(101),
            remote_rtp,
            ptime_ms: 20,
            fmtp: None,
        },
        ai_format: codec.ai_format(),
        jitter: JitterConfig::default(),
        opus: OpusTuning::default(),
        ssrc: 0xbe9c_0000 ^ i as u32,
        initial_seq: (i as u16).wrapping_mul(13),
        initial_timestamp: (i as u32).wrapping_mul(7777),
        cname: format!("bench-{i}@trunkguard"),
        ntp_now: 0,
        seed: i as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trunkguard::core::media::session::FRAME;

    #[test]
    fn echoed_calls_send_one_packet_per_frame_without_concealment() {
        for codec in [BenchCodec::Pcmu, BenchCodec::Opus] {
            let signal = CallerSignal::new(codec).unwrap();
            let t0 = Instant::now();
            let mut calls = Calls::new(codec, &signal, 3, t0).unwrap();
            let mut frames = 0;
            for k in 0..100u32 {
                frames += calls.step_all(t0 + FRAME * k);
            }
            // the jitter buffer holds a few frames back; the rest came through, none concealed
            assert!((3 * 90..=3 * 100).contains(&frames), "{codec:?}: {frames}");
            assert_eq!(calls.concealed_frames(), 0, "{codec:?}");
            assert_eq!(calls.push_errors, 0);
            assert!(calls.rtp_sent() + 3 * 6 >= frames, "{codec:?}: every echoed frame is sent");
        }
    }
}

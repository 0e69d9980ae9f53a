//! Adaptive jitter buffer for received audio RTP (sans-IO).
//!
//! Owns: ordering received packets, deciding when each frame is played out, and telling the
//! caller which frames are missing ([`Frame::Lost`], the caller conceals them, e.g. with
//! [`crate::core::media::plc::G711Plc`]). It never touches sockets or clocks: packets come in
//! with [`JitterBuffer::push`], frames go out with [`JitterBuffer::poll_frame`], and
//! [`JitterBuffer::poll_timeout`] says when the next frame is due (`Timer::MediaTick`).
//!
//! - [`buffer`]: the buffer, its playout clock and stream-section tracking.
//! - [`estimator`]: RFC 3550 interarrival jitter and windowed transit statistics.
//! - [`stats`]: counters and gauges for monitoring.
//!
//! # Playout clock
//!
//! Sequence numbers order packets; RTP timestamps schedule them. A *section* is a run of packets
//! from one SSRC without discontinuity. Its first packet sets the epoch (arrival instant and RTP
//! timestamp); every packet has a *transit* `arrival - epoch - (ts - epoch_ts) / clock_rate`.
//! The frame with timestamp `ts` is due at `epoch + (ts - epoch_ts) / clock_rate + offset`,
//! where the applied `offset` follows `min transit over the window + target`. The first frame
//! of a section is therefore due `target` after the first packet, then one frame per frame
//! duration (20 ms by default; learnt from timestamp deltas of consecutive packets).
//!
//! When a frame is due: the next queued packet plays if its timestamp is the expected one;
//! a packet whose slot has passed is dropped as late; a missing slot yields `Lost`. After
//! `max_conceal` consecutive `Lost` frames with nothing queued the clock stops, and the next
//! packet restarts it (a talk-spurt boundary). A timestamp gap longer than `max_delay` with a
//! packet queued is treated the same way (the clock pauses until that packet is due).
//!
//! # Adaptation rule
//!
//! The estimator proposes `desired = max(mean(d) + k·σ(d), 3·J)` clamped to
//! `[min_delay, max_delay]`, where `d` are transit deviations from the window's minimum
//! transit (last `window` packets, late ones included) and `J` is the RFC 3550 jitter. It is
//! used once the window holds 8 packets; until then the target stays at `initial_delay`.
//!
//! - At a talk-spurt boundary (clock restart after silence or loss, or a packet with the marker
//!   bit) the target jumps to `desired` and the clock offset to its ideal value at once: the
//!   change lands in silence. Growing there pauses output; shrinking releases frames at once.
//! - Otherwise, per frame released, the target moves toward `desired` by at most `grow_step`
//!   (5 ms) up or `shrink_step` (1 ms) down, and the clock offset slews toward its ideal value by
//!   the same bounds: frame intervals vary by a few milliseconds, never by a frame.
//!
//! # Discontinuities
//!
//! A packet with a new SSRC, a sequence jump of at least `resync_seq_jump` (3000) forward or
//! more than `max_misorder` (100, as RFC 3550 A.1) backward, or a timestamp that disagrees
//! with its arrival time by more than `max_ts_skew` (1 s; e.g. a ±2^31 jump) is held as a
//! candidate. When the next packet continues from the candidate, the buffer resyncs: the
//! queue is flushed and a new section starts at the candidate. A lone stray packet is
//! discarded without disturbing playout. Sequence numbers and timestamps are extended across
//! wraps (65535 -> 0, 2^32 -> 0).

pub mod buffer;
pub mod estimator;
pub mod stats;

pub use buffer::JitterBuffer;
pub use stats::JitterStats;

use std::time::Duration;

/// One frame released by the playout clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A received packet, played in its slot.
    Audio {
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp.
        timestamp: u32,
        /// The packet's payload.
        payload: Vec<u8>,
    },
    /// No packet for this slot: the caller conceals one frame.
    Lost {
        /// The RTP timestamp the missing frame would have had.
        timestamp: u32,
    },
}

/// Jitter buffer parameters. Out-of-range values are corrected by [`JitterBuffer::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate in Hz (8000 for G.711).
    pub clock_rate: u32,
    /// Nominal frame duration in ms, used until timestamp deltas say otherwise.
    pub frame_ms: u32,
    /// Lower bound of the target delay.
    pub min_delay: Duration,
    /// Upper bound of the target delay.
    pub max_delay: Duration,
    /// Target delay before any estimate exists.
    pub initial_delay: Duration,
    /// Most packets held; beyond, the oldest is dropped.
    pub max_packets: usize,
    /// Packets in the transit window of the estimator.
    pub window: usize,
    /// Weight of the standard deviation in `mean + k·σ`.
    pub k: f64,
    /// Forward sequence jump that starts a new section.
    pub resync_seq_jump: u16,
    /// Backward sequence jump beyond which a packet is not a late one but a new section.
    pub max_misorder: u16,
    /// Disagreement between timestamp and arrival time that starts a new section.
    pub max_ts_skew: Duration,
    /// Consecutive `Lost` frames with an empty queue before the clock stops.
    pub max_conceal: u32,
    /// Most the target grows per frame outside talk-spurt boundaries.
    pub grow_step: Duration,
    /// Most the target shrinks per frame outside talk-spurt boundaries.
    pub shrink_step: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate: 8000,
            frame_ms: 20,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            initial_delay: Duration::from_millis(40),
            max_packets: 50,
            window: 100,
            k: 2.0,
            resync_seq_jump: 3000,
            max_misorder: 100,
            max_ts_skew: Duration::from_secs(1),
            max_conceal: 3,
            grow_step: Duration::from_millis(5),
            shrink_step: Duration::from_millis(1),
        }
    }
}

impl JitterConfig {
    /// A copy with every field in a usable range.
    fn sanitized(mut self) -> JitterConfig {
        let d = JitterConfig::default();
        if self.clock_rate == 0 {
            self.clock_rate = d.clock_rate;
        }
        self.frame_ms = self.frame_ms.clamp(1, 200);
        if self.max_delay < self.min_delay {
            self.max_delay = self.min_delay;
        }
        self.max_delay = self.max_delay.min(Duration::from_secs(10));
        self.min_delay = self.min_delay.min(self.max_delay);
        self.initial_delay = self.initial_delay.clamp(self.min_delay, self.max_delay);
        self.max_packets = self.max_packets.clamp(1, 10_000);
        self.window = self.window.clamp(2, 10_000);
        if !self.k.is_finite() || self.k < 0.0 {
            self.k = d.k;
        }
        self.resync_seq_jump = self.resync_seq_jump.clamp(2, 32_000);
        self.max_misorder = self.max_misorder.clamp(1, self.resync_seq_jump);
        self.max_ts_skew =
            self.max_ts_skew.clamp(Duration::from_millis(100), Duration::from_secs(3600));
        self.max_conceal = self.max_conceal.max(1);
        self
    }
}

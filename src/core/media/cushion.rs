//! The playout cushion's target for agent audio, from the measured arrival jitter of the
//! agent's chunks (sans-IO: every input carries its `now`).
//!
//! Owns: how late each chunk of a talk spurt arrives compared with the agent's own best pace,
//! and the cushion (audio held before a talk spurt starts playing) that would have covered
//! it. The lateness of chunk *i* is the Lindley recursion
//! `L(i) = max(0, L(i-1) + (t(i) - t(i-1)) - duration(i-1))`: it stays 0 while the agent
//! sends in real time or faster (a burst ahead of real time is lead, never lateness) and grows
//! by how much later than its predecessor's audio ran out a chunk arrived; the reference drifts
//! later at the decay rate, so lateness is forgotten while the agent is steady. The target is the
//! peak lateness seen, decaying linearly with the time the agent spends sending steadily (a
//! pause between responses is no evidence either way), plus one frame (the 20 ms
//! clock's granularity), bounded to `[MIN_TARGET, MAX_TARGET]`. It starts at [`START_TARGET`].

use std::time::{Duration, Instant};

/// The smallest cushion: one frame.
pub const MIN_TARGET: Duration = Duration::from_millis(20);
/// The largest cushion: beyond it the agent is too slow to hide, and delay hurts more.
pub const MAX_TARGET: Duration = Duration::from_millis(200);
/// The cushion before anything is measured.
pub const START_TARGET: Duration = Duration::from_millis(40);
/// How fast the peak lateness is forgotten while the agent is steady: 10 ms per second.
pub const DECAY_PER_SECOND: Duration = Duration::from_millis(10);
/// The 20 ms frame clock the cushion is released on.
const FRAME: Duration = Duration::from_millis(20);

/// Arrival jitter of one agent's chunks, and the cushion it asks for.
#[derive(Debug, Clone)]
pub struct CushionTarget {
    /// Lateness of the last chunk of the current spurt (Lindley recursion).
    lateness: Duration,
    /// Peak lateness, decayed only by time the agent spent sending (quiet is no evidence
    /// that it became steady).
    peak: Duration,
    /// Arrival of the previous chunk of this spurt and the audio it carried.
    last: Option<(Instant, Duration)>,
}

impl Default for CushionTarget {
    fn default() -> Self {
        CushionTarget {
            lateness: Duration::ZERO,
            peak: START_TARGET.saturating_sub(FRAME),
            last: None,
        }
    }
}

impl CushionTarget {
    /// A chunk of `audio` arrived at `now`.
    pub fn on_chunk(&mut self, now: Instant, audio: Duration) {
        if let Some((at, dur)) = self.last {
            let gap = now.saturating_duration_since(at);
            self.lateness = if gap >= dur {
                self.lateness + (gap - dur)
            } else {
                self.lateness.saturating_sub(dur - gap)
            };
            // the reference pace drifts later at the decay rate, so a steady agent is not
            // held to the earliest instant it ever reached, and the peak is forgotten as fast
            let decay = DECAY_PER_SECOND.mul_f64(gap.as_secs_f64());
            self.lateness = self.lateness.saturating_sub(decay).min(MAX_TARGET);
            self.peak = self.peak.saturating_sub(decay);
        }
        self.last = Some((now, audio));
        self.peak = self.peak.max(self.lateness);
    }

    /// The agent went quiet (end of a talk spurt, or a flush): the next chunk has no
    /// predecessor to be late against. The peak is kept (the agent's link is the same).
    pub fn new_spurt(&mut self) {
        self.last = None;
        self.lateness = Duration::ZERO;
    }

    /// The cushion to build before a talk spurt starts playing.
    pub fn target(&self) -> Duration {
        (self.peak + FRAME).clamp(MIN_TARGET, MAX_TARGET)
    }

    /// Lateness of the last chunk (for tests and figures).
    pub fn lateness(&self) -> Duration {
        self.lateness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_40_ms_and_a_steady_agent_shrinks_it_to_one_frame() {
        let t0 = Instant::now();
        let mut c = CushionTarget::default();
        assert_eq!(c.target(), START_TARGET);
        for i in 0..250 {
            c.on_chunk(t0 + ms(20) * i, ms(20));
        }
        assert_eq!(c.lateness(), Duration::ZERO);
        assert_eq!(c.target(), MIN_TARGET);
    }

    #[test]
    fn a_burst_ahead_of_real_time_is_lead_not_lateness() {
        let t0 = Instant::now();
        let mut c = CushionTarget::default();
        // 5 s of audio in 100 ms, then real-time 100 ms chunks
        for i in 0..50 {
            c.on_chunk(t0 + ms(2) * i, ms(100));
        }
        for i in 0..20 {
            c.on_chunk(t0 + ms(100) + ms(100) * i, ms(100));
        }
        assert_eq!(c.lateness(), Duration::ZERO);
        assert!(c.target() <= START_TARGET);
    }

    #[test]
    fn late_chunks_raise_the_target_which_decays_when_steady_again() {
        let t0 = Instant::now();
        let mut c = CushionTarget::default();
        // chunk 3 is 70 ms late, chunk 4 on its own time again
        let times = [0, 20, 40, 130, 140, 160];
        for t in times {
            c.on_chunk(t0 + ms(t), ms(20));
        }
        let target = c.target();
        assert!(target > ms(85) && target <= ms(90), "about 70 ms late + one frame: {target:?}");
        // steady for 5 s: 50 ms forgotten
        for i in 0..250 {
            c.on_chunk(t0 + ms(180) + ms(20) * i, ms(20));
        }
        assert!(c.target() < ms(45), "{:?}", c.target());
        // a pause is no evidence: the target holds
        c.new_spurt();
        let held = c.target();
        c.on_chunk(t0 + ms(60_000), ms(20));
        assert_eq!(c.target(), held);
        for i in 1..500 {
            c.on_chunk(t0 + ms(60_000) + ms(20) * i, ms(20));
        }
        assert_eq!(c.target(), MIN_TARGET);
    }

    #[test]
    fn the_target_is_bounded() {
        let t0 = Instant::now();
        let mut c = CushionTarget::default();
        // an agent at half real time: lateness grows without bound, the target does not
        for i in 0..100 {
            c.on_chunk(t0 + ms(40) * i, ms(20));
        }
        assert_eq!(c.target(), MAX_TARGET);
    }

    #[test]
    fn a_new_spurt_does_not_count_the_pause_as_lateness() {
        let t0 = Instant::now();
        let mut c = CushionTarget::default();
        c.on_chunk(t0, ms(20));
        c.new_spurt();
        c.on_chunk(t0 + ms(3000), ms(20));
        assert_eq!(c.lateness(), Duration::ZERO);
    }
}

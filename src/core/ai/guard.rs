//! What one agent connection may send during a call, sans-IO on the caller's `now`: frames and
//! bytes per second, undecodable frames per second, marks waiting for playout (count and name
//! length) and agent audio queued ahead of the caller. Breaking a bound is a [`Violation`]: the
//! session ends, the agent's breaker trips and the call fails over (filler, then the standby),
//! so a hostile or broken agent cannot grow a call's memory or hold it in a reconnect loop.

use std::time::{Duration, Instant};

/// The bounds (defaults sized for real agents with a wide margin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Text frames per one-second window (real agents: 50 media frames/s, bursts of deltas).
    pub max_frames_per_s: u32,
    /// Text bytes per one-second window (24 kHz PCM in base64 is 64 KB per second of audio).
    pub max_bytes_per_s: usize,
    /// Undecodable or binary frames per one-second window.
    pub max_bad_frames_per_s: u32,
    /// Marks waiting for their audio to be played.
    pub max_marks: usize,
    /// Bytes of one mark's name.
    pub max_mark_name: usize,
    /// Agent audio queued and not yet played.
    pub max_unplayed: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_frames_per_s: 1000,
            max_bytes_per_s: 8 * 1024 * 1024,
            max_bad_frames_per_s: 20,
            max_marks: 1024,
            max_mark_name: 256,
            max_unplayed: Duration::from_secs(120),
        }
    }
}

/// A bound the agent broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("more than {max} frames in one second")]
    FrameRate { max: u32 },
    #[error("more than {max} bytes in one second")]
    ByteRate { max: usize },
    #[error("more than {max} bad frames in one second")]
    BadFrames { max: u32 },
    #[error("more than {max} marks waiting for playout")]
    Marks { max: usize },
    #[error("mark name of {len} bytes (at most {max})")]
    MarkName { len: usize, max: usize },
    #[error("more than {max_ms} ms of agent audio queued ahead of the caller")]
    Unplayed { max_ms: u64 },
}

/// Counts one connection's frames in fixed one-second windows.
#[derive(Debug, Clone)]
pub struct AgentGuard {
    config: GuardConfig,
    window_start: Option<Instant>,
    frames: u32,
    bytes: usize,
    bad: u32,
}

impl AgentGuard {
    pub fn new(config: GuardConfig) -> Self {
        AgentGuard { config, window_start: None, frames: 0, bytes: 0, bad: 0 }
    }

    /// A text frame of `len` bytes arrived.
    pub fn on_frame(&mut self, now: Instant, len: usize) -> Result<(), Violation> {
        self.roll(now);
        self.frames = self.frames.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len);
        if self.frames > self.config.max_frames_per_s {
            return Err(Violation::FrameRate { max: self.config.max_frames_per_s });
        }
        if self.bytes > self.config.max_bytes_per_s {
            return Err(Violation::ByteRate { max: self.config.max_bytes_per_s });
        }
        Ok(())
    }

    /// A frame could not be used (undecodable, binary, for another stream).
    pub fn on_bad_frame(&mut self, now: Instant) -> Result<(), Violation> {
        self.roll(now);
        self.bad = self.bad.saturating_add(1);
        if self.bad > self.config.max_bad_frames_per_s {
            return Err(Violation::BadFrames { max: self.config.max_bad_frames_per_s });
        }
        Ok(())
    }

    /// One more mark named `name` would wait behind `pending` others.
    pub fn check_mark(&self, pending: usize, name: &str) -> Result<(), Violation> {
        if name.len() > self.config.max_mark_name {
            return Err(Violation::MarkName { len: name.len(), max: self.config.max_mark_name });
        }
        if pending >= self.config.max_marks {
            return Err(Violation::Marks { max: self.config.max_marks });
        }
        Ok(())
    }

    /// `unplayed` samples at `rate` Hz would be queued ahead of the caller.
    pub fn check_unplayed(&self, unplayed: u64, rate: u64) -> Result<(), Violation> {
        let max_ms = u64::try_from(self.config.max_unplayed.as_millis()).unwrap_or(u64::MAX);
        if unplayed > max_ms.saturating_mul(rate) / 1000 {
            return Err(Violation::Unplayed { max_ms });
        }
        Ok(())
    }

    fn roll(&mut self, now: Instant) {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if fresh {
            self.window_start = Some(now);
            self.frames = 0;
            self.bytes = 0;
            self.bad = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuardConfig {
        GuardConfig {
            max_frames_per_s: 10,
            max_bytes_per_s: 1000,
            max_bad_frames_per_s: 3,
            max_marks: 4,
            max_mark_name: 8,
            max_unplayed: Duration::from_secs(2),
        }
    }

    #[test]
    fn frame_rate_is_counted_per_second_window() {
        let t0 = Instant::now();
        let mut g = AgentGuard::new(cfg());
        for i in 0..10 {
            assert_eq!(g.on_frame(t0 + Duration::from_millis(i * 50), 10), Ok(()));
        }
        assert_eq!(
            g.on_frame(t0 + Duration::from_millis(600), 10),
            Err(Violation::FrameRate { max: 10 })
        );
        // A new window forgives the past: 10 frames per second forever is fine.
        let mut g = AgentGuard::new(cfg());
        for i in 0..100 {
            assert_eq!(g.on_frame(t0 + Duration::from_millis(i * 100), 10), Ok(()), "frame {i}");
        }
    }

    #[test]
    fn byte_rate_and_bad_frames() {
        let t0 = Instant::now();
        let mut g = AgentGuard::new(cfg());
        assert_eq!(g.on_frame(t0, 600), Ok(()));
        assert_eq!(g.on_frame(t0, 401), Err(Violation::ByteRate { max: 1000 }));
        assert_eq!(g.on_frame(t0 + Duration::from_secs(1), 1000), Ok(()));
        for _ in 0..3 {
            assert_eq!(g.on_bad_frame(t0 + Duration::from_secs(2)), Ok(()));
        }
        assert_eq!(
            g.on_bad_frame(t0 + Duration::from_secs(2)),
            Err(Violation::BadFrames { max: 3 })
        );
        assert_eq!(g.on_bad_frame(t0 + Duration::from_secs(3)), Ok(()));
    }

    #[test]
    fn marks_and_unplayed_audio_are_capped() {
        let g = AgentGuard::new(cfg());
        assert_eq!(g.check_mark(3, "12345678"), Ok(()));
        assert_eq!(g.check_mark(4, "m"), Err(Violation::Marks { max: 4 }));
        assert_eq!(g.check_mark(0, "123456789"), Err(Violation::MarkName { len: 9, max: 8 }));
        assert_eq!(g.check_unplayed(16_000, 8000), Ok(()));
        assert_eq!(g.check_unplayed(16_001, 8000), Err(Violation::Unplayed { max_ms: 2000 }));
        assert_eq!(g.check_unplayed(48_000, 24_000), Ok(()));
    }
}

//! What every simulated agent protocol implements, and the per-simulator context they share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::{self, Format};
use crate::pacing::AudioMode;
use crate::player::Player;
use crate::stats::SimStats;
use crate::SimMode;

/// One connection's protocol logic, driven by the connection loop with an explicit `now`.
pub trait Agent: Send {
    /// Frames to send right after the upgrade.
    fn on_open(&mut self, now: Instant) -> Vec<String>;
    /// A text frame from the bridge; returns frames to send at once.
    fn on_text(&mut self, now: Instant, text: &str) -> Vec<String>;
    /// When [`Agent::poll`] may next have something.
    fn next_deadline(&self) -> Option<Instant>;
    /// Paced output due at `now` (empty when nothing is).
    fn poll(&mut self, now: Instant) -> Vec<String>;
}

/// Settings and shared state every connection of one simulator uses.
#[derive(Debug)]
pub struct AgentCtx {
    pub mode: SimMode,
    pub echo_delay: Duration,
    pub max_frame: usize,
    pub max_queue: Duration,
    pub first_audio_hold: Option<Duration>,
    /// How agent audio is timed and sized.
    pub audio: AudioMode,
    /// Seed of the `jitter` offsets (mixed with the connection number).
    pub seed: u64,
    pub stats: Arc<SimStats>,
    /// The greeting at 8 kHz (prompt mode).
    pub greeting: Option<Arc<[i16]>>,
}

impl AgentCtx {
    /// A fresh playout queue in `format` for connection `conn`.
    pub fn player(&self, format: Format, conn: u64) -> Player {
        let seed = self.seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Player::new(format, self.max_queue, self.first_audio_hold, self.audio, seed)
    }

    /// Counts one audio message of `samples` at `format`'s rate.
    pub fn count_audio_out(&self, format: Format, samples: usize) {
        let us = samples as u64 * 1_000_000 / u64::from(format.rate());
        self.stats.update(|s| {
            s.media_out += 1;
            s.audio_out_us += us;
        });
    }

    /// Records a barge-in signalled at `at`, `ahead` of real time.
    pub fn record_barge_in(&self, at: Instant, ahead: Duration) {
        let b = crate::stats::BargeIn { at, ahead };
        self.stats.update(|s| crate::stats::record(&mut s.barge_ins, b));
    }

    /// The greeting converted to `format`'s rate.
    pub fn greeting(&self, format: Format) -> Option<Vec<i16>> {
        let samples = self.greeting.as_deref()?;
        Some(audio::convert(samples, Format::Ulaw8k, format))
    }

    /// Decodes base64 audio; counts a protocol error when it is not.
    pub fn b64(&self, data: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                self.stats.update(|s| s.protocol_errors += 1);
                None
            }
        }
    }
}

/// Base64 of raw audio bytes.
pub fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

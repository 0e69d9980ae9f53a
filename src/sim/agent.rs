//! What every simulated agent protocol implements, and the per-simulator context they share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audio::{self, Format};
use super::player::Player;
use super::stats::SimStats;
use super::SimMode;

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
    pub stats: Arc<SimStats>,
    /// The greeting at 8 kHz (prompt mode).
    pub greeting: Option<Arc<[i16]>>,
}

impl AgentCtx {
    /// A fresh playout queue at `format`'s rate.
    pub fn player(&self, format: Format) -> Player {
        Player::new(format.rate(), self.max_queue, self.first_audio_hold)
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

//! What the agent simulator saw, for in-process tests and drills to assert on.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most entries kept in each list of [`SimCounters`]; later ones are only counted.
pub const MAX_RECORDED: usize = 1000;

/// A `conversation.item.truncate` received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub item_id: String,
    pub audio_end_ms: u64,
}

/// A `conversation.item.create` received (first text part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedItem {
    pub role: String,
    pub text: String,
}

/// A barge-in the simulator signalled: Twilio `clear`, or OpenAI
/// `input_audio_buffer.speech_started` while the agent was speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BargeIn {
    /// Just before the message was written to the socket.
    pub at: Instant,
    /// How far the agent audio already sent was ahead of real time then: what the bridge still
    /// held to play, if it plays at real time.
    pub ahead: Duration,
}

/// Counters and records over all connections of one simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// TCP connections accepted (before any fault).
    pub tcp_accepted: u64,
    /// WebSocket sessions established.
    pub connections: u64,
    /// Connections turned away: `refuse`, `http503`, over the connection limit, failed
    /// handshakes.
    pub rejected: u64,
    /// Twilio `start` messages, or OpenAI `session.update` events (health probes excluded).
    pub starts: u64,
    /// Twilio probe streams (`customParameters.trunkguard_probe = "1"`).
    pub probes: u64,
    /// Starts that carried `customParameters.resumed` = `true`.
    pub resumed: u64,
    /// Twilio call SIDs from `start`.
    pub call_sids: Vec<String>,
    /// Caller audio messages received (`media` / `input_audio_buffer.append`).
    pub media_in: u64,
    /// Agent audio messages sent (`media` / `response.output_audio.delta`).
    pub media_out: u64,
    /// DTMF digits received (Twilio).
    pub dtmf: Vec<char>,
    /// Mark names echoed back by the bridge (Twilio).
    pub marks: Vec<String>,
    /// Marks (Twilio) or `response.done` (OpenAI) the simulator sent.
    pub marks_sent: u64,
    /// `input_audio_buffer.speech_started` events sent (OpenAI).
    pub speech_started: u64,
    /// `clear` messages sent on barge-in (Twilio, prompt mode).
    pub clears_sent: u64,
    /// Every `clear` (Twilio) or `speech_started` over agent speech (OpenAI), in order.
    pub barge_ins: Vec<BargeIn>,
    /// Agent audio sent, in microseconds of audio.
    pub audio_out_us: u64,
    /// WebSocket pings sent (`mute`).
    pub pings_sent: u64,
    pub truncates: Vec<Truncate>,
    pub items_created: Vec<CreatedItem>,
    /// Twilio `stop` messages.
    pub stops: u64,
    /// Frames that could not be used (bad JSON, fields, base64, binary, oversize).
    pub protocol_errors: u64,
    /// Connections ended by `close-after`.
    pub fault_closes: u64,
    /// Connections that went silent through `stall-after`.
    pub fault_stalls: u64,
}

/// Shared, lock-protected [`SimCounters`].
#[derive(Debug, Default)]
pub struct SimStats {
    inner: Mutex<SimCounters>,
}

impl SimStats {
    /// A copy of the counters now.
    pub fn snapshot(&self) -> SimCounters {
        self.lock().clone()
    }

    /// Applies `f` to the counters.
    pub(crate) fn update(&self, f: impl FnOnce(&mut SimCounters)) {
        f(&mut self.lock());
    }

    fn lock(&self) -> MutexGuard<'_, SimCounters> {
        // The counters stay usable even if a task panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pushes onto a record list unless it is full.
pub(crate) fn record<T>(list: &mut Vec<T>, item: T) {
    if list.len() < MAX_RECORDED {
        list.push(item);
    }
}

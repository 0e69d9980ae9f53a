//! The per-call AI bridge state machine for one connected agent endpoint, sans-IO and
//! protocol-agnostic: the same API drives a Twilio Media Streams agent or OpenAI Realtime.
//!
//! The I/O layer feeds text frames ([`AiSession::on_text`]), caller audio
//! ([`AiSession::send_caller_audio`] / [`AiSession::send_caller_pcm24k`]) and playout progress
//! ([`AiSession::on_played`]); it drains outgoing frames ([`AiSession::poll_text`]), WebSocket
//! pings ([`AiSession::poll_ping`]) and acts on [`AiEvent`]s. The session owns playout
//! accounting (what the caller really heard) for mark echoes and `conversation.item.truncate`,
//! stall detection (no frame at all while the caller talks), mute detection (no audio and no
//! sign of speech within the first-audio timeout after open: pongs and other frames are not
//! life), and a bounded transcript carried into a resumed session.
//! Resampling and G.711 transcoding stay outside.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::guard::{AgentGuard, GuardConfig, Violation};
use super::openai::{self, AudioFormat, AudioInput, AudioOutput, RealtimeSession, SessionAudio};
use super::twilio::{self, StartInfo};
use super::{ProtocolError, DEFAULT_MAX_FRAME};
use crate::core::timer::{Timer, TimerTable};

/// Audio format of an OpenAI Realtime session (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenAiFormat {
    /// G.711 μ-law 8 kHz (`audio/pcmu`): no transcoding needed for PCMU calls.
    #[default]
    G711Ulaw,
    /// PCM16 LE mono 24 kHz (`audio/pcm`): the caller resamples.
    Pcm24k,
}

/// OpenAI Realtime session options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiSettings {
    pub format: OpenAiFormat,
    /// Usually given in the URL (`?model=`); sent in `session.update` when set.
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
    /// Input transcription model (needed for the user side of the transcript).
    pub transcription_model: Option<String>,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            format: OpenAiFormat::G711Ulaw,
            model: None,
            instructions: None,
            voice: None,
            transcription_model: Some("whisper-1".into()),
        }
    }
}

/// Which wire protocol the agent speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiProtocol {
    Twilio,
    OpenAi(OpenAiSettings),
}

/// Identity of the call toward the agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallInfo {
    pub call_sid: String,
    pub stream_sid: String,
    pub account_sid: String,
    pub custom_parameters: BTreeMap<String, String>,
}

/// Session tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// No frame from the agent for this long while the caller talks → `Stalled` (500 ms).
    pub stall_timeout: Duration,
    /// No audio and no sign of speech from the agent this long after open → `Mute` (4 s).
    pub first_audio_timeout: Duration,
    /// Caller audio sent within this window means "the caller is talking" (100 ms).
    pub talk_window: Duration,
    /// Quiet this long while the caller talks → ask the I/O layer for a ping (250 ms).
    pub ping_after: Duration,
    /// Largest accepted text frame (256 KiB).
    pub max_frame: usize,
    /// Outgoing frames kept when the I/O layer does not drain; further caller audio is dropped.
    pub max_outgoing: usize,
    pub transcript_max_entries: usize,
    pub transcript_max_chars: usize,
    /// What the agent may send (rates, marks, queued audio): breaking it ends the session.
    pub guard: GuardConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            stall_timeout: Duration::from_millis(500),
            first_audio_timeout: Duration::from_millis(4000),
            talk_window: Duration::from_millis(100),
            ping_after: Duration::from_millis(250),
            max_frame: DEFAULT_MAX_FRAME,
            max_outgoing: 500,
            transcript_max_entries: 64,
            transcript_max_chars: 8000,
            guard: GuardConfig::default(),
        }
    }
}

/// Agent audio to play to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiAudio {
    /// μ-law bytes, 8 kHz.
    Ulaw8k(Vec<u8>),
    /// Linear PCM, 24 kHz.
    Pcm24k(Vec<i16>),
}

impl AiAudio {
    pub fn samples(&self) -> usize {
        match self {
            AiAudio::Ulaw8k(b) => b.len(),
            AiAudio::Pcm24k(s) => s.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    pub role: Role,
    pub text: String,
}

/// The conversation so far, bounded by entries and characters (oldest dropped first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    entries: VecDeque<TranscriptEntry>,
    max_entries: usize,
    max_chars: usize,
    chars: usize,
}

impl Transcript {
    pub fn new(max_entries: usize, max_chars: usize) -> Self {
        Transcript { entries: VecDeque::new(), max_entries, max_chars, chars: 0 }
    }

    pub fn push(&mut self, role: Role, text: &str) {
        let text = text.trim();
        if text.is_empty() || self.max_entries == 0 {
            return;
        }
        let text = tail_chars(text, self.max_chars);
        self.chars += text.chars().count();
        self.entries.push_back(TranscriptEntry { role, text });
        while self.entries.len() > self.max_entries || self.chars > self.max_chars {
            match self.entries.pop_front() {
                Some(old) => self.chars -= old.text.chars().count(),
                None => break,
            }
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &TranscriptEntry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn tail_chars(text: &str, max: usize) -> String {
    let n = text.chars().count();
    text.chars().skip(n.saturating_sub(max)).collect()
}

/// What the I/O layer must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiEvent {
    /// The agent is ready (Twilio: at open; OpenAI: first `session.updated`).
    Ready,
    /// Queue this audio for playout to the caller.
    Audio(AiAudio),
    /// Flush unplayed agent audio now (barge-in).
    Clear,
    /// A mark was echoed: the agent audio before it has been played (or flushed).
    Mark(String),
    /// The caller started talking over the agent (OpenAI server VAD).
    SpeechStarted,
    /// A finished transcript line.
    Transcript(TranscriptEntry),
    /// A bad frame or an agent error; the session goes on.
    Error(String),
    /// No frame for the stall timeout while the caller talks: consider failing over.
    Stalled,
    /// Connected, but no audio and no sign of speech within the first-audio timeout (pings
    /// answered or not): fail over as for a dead socket.
    Mute,
    /// The agent broke a bound (flood, too many marks, too much audio ahead): the session is
    /// over; a failure for the agent's breaker, and the call fails over.
    Violation(Violation),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session is not open yet")]
    NotOpen,
    #[error("the session is closed")]
    Closed,
    #[error("audio format does not match the session")]
    WrongFormat,
    #[error("not supported by this protocol")]
    Unsupported,
    #[error("invalid DTMF digit {0:?}")]
    InvalidDigit(char),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub frames_in: u64,
    pub frames_out: u64,
    /// Well-formed frames of unknown event/type.
    pub unknown_in: u64,
    /// Undecodable frames.
    pub errors_in: u64,
    /// `error` events from the agent.
    pub agent_errors: u64,
    /// Caller audio dropped because the outgoing queue was full.
    pub dropped_out: u64,
    pub truncates: u64,
    pub marks_echoed: u64,
    pub stalls: u64,
    /// Sessions given up for sending no audio and no sign of speech after open.
    pub mutes: u64,
    /// Bounds broken by the agent (at most one per session: it ends the session).
    pub violations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Open,
    Closed,
}

/// Playout span of one assistant item, in samples of the output format.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ItemPlayout {
    item_id: String,
    start: u64,
    end: u64,
}

/// Assistant items truncated at barge-in; their late deltas are dropped.
const TRUNCATED_MEMORY: usize = 16;

/// One call's bridge to one agent connection.
#[derive(Debug, Clone)]
pub struct AiSession {
    config: SessionConfig,
    protocol: AiProtocol,
    call: CallInfo,
    resumed: bool,
    state: State,
    transcript: Transcript,
    out: VecDeque<String>,
    timers: TimerTable,
    opened_at: Instant,
    last_rx: Instant,
    last_caller_audio: Option<Instant>,
    stalled: bool,
    /// Until the agent's first audio or sign of speech: when it counts as mute.
    first_audio_deadline: Option<Instant>,
    ping_due: bool,
    ready: bool,
    /// Twilio `sequenceNumber` of the last message sent, and `chunk` of the last media.
    seq: u64,
    chunk: u64,
    /// Agent audio samples handed to playout and played, since open.
    queued: u64,
    played: u64,
    marks: VecDeque<(String, u64)>,
    current_item: Option<ItemPlayout>,
    truncated: VecDeque<String>,
    pending_assistant: Option<(String, String)>,
    stats: SessionStats,
    guard: AgentGuard,
}

impl AiSession {
    /// A session for a connected endpoint; `resume` carries the transcript of the session it
    /// replaces (None for a fresh call).
    pub fn new(
        config: SessionConfig,
        protocol: AiProtocol,
        call: CallInfo,
        resume: Option<Transcript>,
        now: Instant,
    ) -> Self {
        let resumed = resume.is_some();
        let transcript = resume.unwrap_or_else(|| {
            Transcript::new(config.transcript_max_entries, config.transcript_max_chars)
        });
        AiSession {
            config,
            protocol,
            call,
            resumed,
            state: State::New,
            transcript,
            out: VecDeque::new(),
            timers: TimerTable::default(),
            opened_at: now,
            last_rx: now,
            last_caller_audio: None,
            stalled: false,
            first_audio_deadline: None,
            ping_due: false,
            ready: false,
            seq: 0,
            chunk: 0,
            queued: 0,
            played: 0,
            marks: VecDeque::new(),
            current_item: None,
            truncated: VecDeque::new(),
            pending_assistant: None,
            stats: SessionStats::default(),
            guard: AgentGuard::new(config.guard),
        }
    }

    /// The WebSocket is open: queues the opening messages.
    pub fn on_open(&mut self, now: Instant) -> Vec<AiEvent> {
        if self.state != State::New {
            return Vec::new();
        }
        self.state = State::Open;
        self.opened_at = now;
        self.last_rx = now;
        self.first_audio_deadline = Some(now + self.config.first_audio_timeout);
        match self.protocol.clone() {
            AiProtocol::Twilio => {
                self.push(twilio::encode_connected());
                let mut info = StartInfo {
                    stream_sid: self.call.stream_sid.clone(),
                    account_sid: self.call.account_sid.clone(),
                    call_sid: self.call.call_sid.clone(),
                    custom_parameters: self.call.custom_parameters.clone(),
                };
                if self.resumed {
                    info.custom_parameters.insert("resumed".into(), "true".into());
                }
                let seq = self.next_seq();
                self.push(twilio::encode_start(seq, &info));
                self.ready = true;
                vec![AiEvent::Ready]
            }
            AiProtocol::OpenAi(settings) => {
                self.push(openai::encode_session_update(realtime_session(&settings)));
                let items: Vec<String> = self
                    .transcript
                    .entries()
                    .map(|e| openai::encode_text_item(e.role == Role::Assistant, &e.text))
                    .collect();
                for item in items {
                    self.push(item);
                }
                Vec::new()
            }
        }
    }

    /// Sends 20 ms of caller audio as μ-law 8 kHz (Twilio, or OpenAI in μ-law mode).
    pub fn send_caller_audio(&mut self, now: Instant, ulaw: &[u8]) -> Result<(), SessionError> {
        self.check_open()?;
        let frame = match &self.protocol {
            AiProtocol::Twilio => {
                self.seq += 1;
                self.chunk += 1;
                let ts = millis(now.saturating_duration_since(self.opened_at));
                twilio::encode_media(self.seq, &self.call.stream_sid, self.chunk, ts, ulaw)
            }
            AiProtocol::OpenAi(s) if s.format == OpenAiFormat::G711Ulaw => {
                openai::encode_append(ulaw)
            }
            AiProtocol::OpenAi(_) => return Err(SessionError::WrongFormat),
        };
        self.push_audio(frame);
        self.note_caller_audio(now);
        Ok(())
    }

    /// Sends caller audio as PCM16 24 kHz (OpenAI in PCM mode only).
    pub fn send_caller_pcm24k(&mut self, now: Instant, pcm: &[i16]) -> Result<(), SessionError> {
        self.check_open()?;
        match &self.protocol {
            AiProtocol::OpenAi(s) if s.format == OpenAiFormat::Pcm24k => {}
            _ => return Err(SessionError::WrongFormat),
        }
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.push_audio(openai::encode_append(&bytes));
        self.note_caller_audio(now);
        Ok(())
    }

    /// Forwards a caller DTMF digit (Twilio only; Realtime has no DTMF event).
    pub fn send_dtmf(&mut self, digit: char) -> Result<(), SessionError> {
        self.check_open()?;
        if !matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D') {
            return Err(SessionError::InvalidDigit(digit));
        }
        match self.protocol {
            AiProtocol::Twilio => {
                let seq = self.next_seq();
                self.push(twilio::encode_dtmf(seq, &self.call.stream_sid, digit));
                Ok(())
            }
            AiProtocol::OpenAi(_) => Err(SessionError::Unsupported),
        }
    }

    /// A text frame from the agent.
    pub fn on_text(&mut self, now: Instant, text: &str) -> Vec<AiEvent> {
        if self.state != State::Open {
            return Vec::new();
        }
        self.on_activity(now);
        self.stats.frames_in += 1;
        let mut events = Vec::new();
        if let Err(v) = self.guard.on_frame(now, text.len()) {
            self.violate(v, &mut events);
            return events;
        }
        let result = match self.protocol {
            AiProtocol::Twilio => twilio::decode_with_limit(text, self.config.max_frame)
                .map(|m| self.on_twilio(m, &mut events)),
            AiProtocol::OpenAi(_) => openai::decode_with_limit(text, self.config.max_frame)
                .map(|m| self.on_openai(m, &mut events)),
        };
        if let Err(e) = result {
            self.stats.errors_in += 1;
            events.push(AiEvent::Error(e.to_string()));
            self.bad_frame(now, &mut events);
        }
        events
    }

    /// A frame the session cannot take (binary): counted as a protocol error.
    pub fn on_protocol_error(&mut self, now: Instant, error: ProtocolError) -> Vec<AiEvent> {
        if self.state != State::Open {
            return Vec::new();
        }
        self.on_activity(now);
        self.stats.errors_in += 1;
        let mut events = vec![AiEvent::Error(error.to_string())];
        self.bad_frame(now, &mut events);
        events
    }

    fn bad_frame(&mut self, now: Instant, events: &mut Vec<AiEvent>) {
        if let Err(v) = self.guard.on_bad_frame(now) {
            self.violate(v, events);
        }
    }

    /// The agent broke a bound: the session ends here (nothing more is read or queued).
    fn violate(&mut self, v: Violation, events: &mut Vec<AiEvent>) {
        self.stats.violations += 1;
        self.state = State::Closed;
        self.timers.stop_all();
        self.marks.clear();
        events.push(AiEvent::Violation(v));
    }

    /// Any sign of life from the agent (every frame, including WebSocket pongs).
    pub fn on_activity(&mut self, now: Instant) {
        self.last_rx = now;
        self.stalled = false;
        if self.talking(now) {
            self.arm_stall(now);
        } else {
            self.timers.stop(Timer::AiStall);
            self.timers.stop(Timer::AiPing);
        }
    }

    /// The playout has played `samples` more agent samples (8 kHz for μ-law, 24 kHz for PCM).
    pub fn on_played(&mut self, _now: Instant, samples: u64) -> Vec<AiEvent> {
        self.played = self.played.saturating_add(samples).min(self.queued);
        let mut events = Vec::new();
        while self.marks.front().is_some_and(|(_, at)| *at <= self.played) {
            if let Some((name, _)) = self.marks.pop_front() {
                self.echo_mark(name, &mut events);
            }
        }
        events
    }

    /// The next outgoing text frame.
    pub fn poll_text(&mut self) -> Option<String> {
        let frame = self.out.pop_front();
        if frame.is_some() {
            self.stats.frames_out += 1;
        }
        frame
    }

    /// True once when a WebSocket ping should be sent.
    pub fn poll_ping(&mut self) -> bool {
        std::mem::take(&mut self.ping_due)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timers.next_timeout(), self.first_audio_deadline].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<AiEvent> {
        let mut events = Vec::new();
        if self.first_audio_deadline.is_some_and(|t| t <= now) && self.state == State::Open {
            self.first_audio_deadline = None;
            self.stats.mutes += 1;
            events.push(AiEvent::Mute);
        }
        for timer in self.timers.take_expired(now) {
            match timer {
                Timer::AiPing if self.talking(now) => self.ping_due = true,
                Timer::AiStall if self.talking(now) && !self.stalled => {
                    self.stalled = true;
                    self.stats.stalls += 1;
                    events.push(AiEvent::Stalled);
                }
                _ => {}
            }
        }
        events
    }

    /// Ends the session: Twilio gets `stop`; the I/O layer then closes with code 1000.
    pub fn close(&mut self, _now: Instant) {
        if self.state == State::Open {
            if let AiProtocol::Twilio = self.protocol {
                let seq = self.next_seq();
                let stop = twilio::encode_stop(
                    seq,
                    &self.call.stream_sid,
                    &self.call.account_sid,
                    &self.call.call_sid,
                );
                self.out.push_back(stop);
            }
        }
        self.finish_assistant(false);
        self.state = State::Closed;
        self.first_audio_deadline = None;
        self.timers.stop_all();
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// The transcript to carry into a resumed session (pending assistant text included).
    pub fn into_transcript(mut self) -> Transcript {
        self.finish_assistant(false);
        self.transcript
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Agent samples queued for playout and not yet played.
    pub fn unplayed(&self) -> u64 {
        self.queued - self.played
    }

    fn on_twilio(&mut self, msg: twilio::Inbound, events: &mut Vec<AiEvent>) {
        let sid = match &msg {
            twilio::Inbound::Media { stream_sid, .. }
            | twilio::Inbound::Mark { stream_sid, .. }
            | twilio::Inbound::Clear { stream_sid } => stream_sid.as_deref(),
            twilio::Inbound::Unknown(_) => None,
        };
        if sid.is_some_and(|s| s != self.call.stream_sid) {
            self.stats.errors_in += 1;
            events.push(AiEvent::Error(format!("frame for another stream {sid:?}")));
            return;
        }
        match msg {
            twilio::Inbound::Media { ulaw, .. } => {
                self.heard_speech();
                if let Err(v) = self.guard.check_unplayed(self.unplayed() + ulaw.len() as u64, 8000)
                {
                    return self.violate(v, events);
                }
                self.queued += ulaw.len() as u64;
                events.push(AiEvent::Audio(AiAudio::Ulaw8k(ulaw)));
            }
            twilio::Inbound::Mark { name, .. } if self.queued <= self.played => {
                self.echo_mark(name, events);
            }
            twilio::Inbound::Mark { name, .. } => {
                if let Err(v) = self.guard.check_mark(self.marks.len(), &name) {
                    return self.violate(v, events);
                }
                self.marks.push_back((name, self.queued));
            }
            twilio::Inbound::Clear { .. } => {
                self.heard_speech();
                self.flush(events);
                // As Twilio does: marks still pending are echoed when cleared.
                while let Some((name, _)) = self.marks.pop_front() {
                    self.echo_mark(name, events);
                }
            }
            twilio::Inbound::Unknown(_) => self.stats.unknown_in += 1,
        }
    }

    fn on_openai(&mut self, msg: openai::Inbound, events: &mut Vec<AiEvent>) {
        match msg {
            openai::Inbound::SessionUpdated if !self.ready => {
                self.ready = true;
                events.push(AiEvent::Ready);
            }
            openai::Inbound::AudioDelta { item_id, audio, .. } => {
                self.on_delta(item_id, audio, events)
            }
            openai::Inbound::SpeechStarted { .. } => {
                self.heard_speech();
                self.barge_in(events);
                events.push(AiEvent::SpeechStarted);
            }
            openai::Inbound::AssistantTranscriptDelta { item_id, delta } => {
                self.heard_speech();
                if !self.truncated.contains(&item_id) {
                    self.assistant_delta(item_id, &delta, events);
                }
            }
            openai::Inbound::AssistantTranscriptDone { item_id, transcript } => {
                if !self.truncated.contains(&item_id) {
                    self.pending_assistant = Some((item_id, transcript));
                    self.finish_assistant_into(false, events);
                }
            }
            openai::Inbound::UserTranscript { transcript, .. } => {
                self.heard_speech();
                self.record(Role::User, &transcript, events);
            }
            openai::Inbound::Error { code, message } => {
                self.stats.agent_errors += 1;
                let code = code.unwrap_or_default();
                events.push(AiEvent::Error(format!("agent error {code}: {message}")));
            }
            openai::Inbound::Unknown(_) => self.stats.unknown_in += 1,
            openai::Inbound::Ignored(kind) if is_speech_sign(&kind) => self.heard_speech(),
            openai::Inbound::SessionCreated
            | openai::Inbound::SessionUpdated
            | openai::Inbound::Ignored(_) => {}
        }
    }

    fn on_delta(&mut self, item_id: String, audio: Vec<u8>, events: &mut Vec<AiEvent>) {
        self.heard_speech();
        if self.truncated.contains(&item_id) {
            return;
        }
        let audio = match self.output_format() {
            OpenAiFormat::G711Ulaw => AiAudio::Ulaw8k(audio),
            OpenAiFormat::Pcm24k => match pcm_from_le(&audio) {
                Some(pcm) => AiAudio::Pcm24k(pcm),
                None => {
                    self.stats.errors_in += 1;
                    let e = ProtocolError::OddPcm("response.output_audio.delta".into());
                    events.push(AiEvent::Error(e.to_string()));
                    return;
                }
            },
        };
        let ahead = self.unplayed() + audio.samples() as u64;
        if let Err(v) = self.guard.check_unplayed(ahead, self.output_rate()) {
            return self.violate(v, events);
        }
        if self.current_item.as_ref().is_none_or(|i| i.item_id != item_id) {
            self.current_item = Some(ItemPlayout { item_id, start: self.queued, end: self.queued });
        }
        self.queued += audio.samples() as u64;
        if let Some(item) = self.current_item.as_mut() {
            item.end = self.queued;
        }
        events.push(AiEvent::Audio(audio));
    }

    /// Caller speech over the agent: flush playout and truncate the item to what was heard.
    fn barge_in(&mut self, events: &mut Vec<AiEvent>) {
        if let Some(item) = self.current_item.take() {
            if self.played < item.end {
                let heard = self.played.saturating_sub(item.start).min(item.end - item.start);
                let ms = heard * 1000 / self.output_rate();
                self.push(openai::encode_truncate(&item.item_id, ms));
                self.stats.truncates += 1;
                if self.pending_assistant.as_ref().is_some_and(|(id, _)| *id == item.item_id) {
                    self.finish_assistant_into(true, events);
                }
                if self.truncated.len() == TRUNCATED_MEMORY {
                    self.truncated.pop_front();
                }
                self.truncated.push_back(item.item_id);
            }
        }
        self.flush(events);
    }

    fn flush(&mut self, events: &mut Vec<AiEvent>) {
        if self.queued > self.played {
            self.queued = self.played;
            events.push(AiEvent::Clear);
        }
    }

    fn assistant_delta(&mut self, item_id: String, delta: &str, events: &mut Vec<AiEvent>) {
        if self.pending_assistant.as_ref().is_some_and(|(id, _)| *id != item_id) {
            self.finish_assistant_into(false, events);
        }
        let max = self.config.transcript_max_chars;
        let (_, text) = self.pending_assistant.get_or_insert_with(|| (item_id, String::new()));
        if text.len() < max.saturating_mul(4) {
            text.push_str(delta);
        }
    }

    fn finish_assistant(&mut self, interrupted: bool) {
        let mut sink = Vec::new();
        self.finish_assistant_into(interrupted, &mut sink);
    }

    /// Moves the pending assistant text into the transcript; `interrupted` marks a barge-in.
    fn finish_assistant_into(&mut self, interrupted: bool, events: &mut Vec<AiEvent>) {
        if let Some((_, mut text)) = self.pending_assistant.take() {
            if interrupted {
                text.push('…');
            }
            self.record(Role::Assistant, &text, events);
        }
    }

    fn record(&mut self, role: Role, text: &str, events: &mut Vec<AiEvent>) {
        if text.trim().is_empty() || self.transcript.max_entries == 0 {
            return;
        }
        self.transcript.push(role, text);
        if let Some(last) = self.transcript.entries.back() {
            events.push(AiEvent::Transcript(last.clone()));
        }
    }

    /// Audio or a sign of speech (the agent heard the caller, or is answering): not mute.
    fn heard_speech(&mut self) {
        self.first_audio_deadline = None;
    }

    fn echo_mark(&mut self, name: String, events: &mut Vec<AiEvent>) {
        let seq = self.next_seq();
        self.push(twilio::encode_mark(seq, &self.call.stream_sid, &name));
        self.stats.marks_echoed += 1;
        events.push(AiEvent::Mark(name));
    }

    fn note_caller_audio(&mut self, now: Instant) {
        let was_talking = self.talking(now);
        self.last_caller_audio = Some(now);
        if !self.stalled && (!was_talking || !self.timers.is_set(Timer::AiStall)) {
            self.arm_stall(now);
        }
    }

    /// The stall clock starts at the later of the last frame and the start of talking.
    fn arm_stall(&mut self, now: Instant) {
        self.timers.set(Timer::AiStall, now + self.config.stall_timeout);
        self.timers.set(Timer::AiPing, now + self.config.ping_after);
    }

    fn talking(&self, now: Instant) -> bool {
        self.last_caller_audio
            .is_some_and(|t| now.saturating_duration_since(t) <= self.config.talk_window)
    }

    fn check_open(&self) -> Result<(), SessionError> {
        match self.state {
            State::New => Err(SessionError::NotOpen),
            State::Open => Ok(()),
            State::Closed => Err(SessionError::Closed),
        }
    }

    fn output_format(&self) -> OpenAiFormat {
        match &self.protocol {
            AiProtocol::OpenAi(s) => s.format,
            AiProtocol::Twilio => OpenAiFormat::G711Ulaw,
        }
    }

    fn output_rate(&self) -> u64 {
        match self.output_format() {
            OpenAiFormat::G711Ulaw => 8000,
            OpenAiFormat::Pcm24k => 24000,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push(&mut self, frame: String) {
        self.out.push_back(frame);
    }

    fn push_audio(&mut self, frame: String) {
        if self.out.len() >= self.config.max_outgoing {
            self.stats.dropped_out += 1;
        } else {
            self.out.push_back(frame);
        }
    }
}

fn realtime_session(s: &OpenAiSettings) -> RealtimeSession {
    let format = match s.format {
        OpenAiFormat::G711Ulaw => AudioFormat::Pcmu,
        OpenAiFormat::Pcm24k => AudioFormat::Pcm { rate: 24000 },
    };
    RealtimeSession {
        kind: "realtime".into(),
        model: s.model.clone(),
        instructions: s.instructions.clone(),
        output_modalities: vec!["audio".into()],
        audio: SessionAudio {
            input: AudioInput {
                format,
                transcription: s
                    .transcription_model
                    .clone()
                    .map(|model| openai::Transcription { model }),
                turn_detection: Some(openai::TurnDetection { kind: "server_vad".into() }),
            },
            output: AudioOutput { format, voice: s.voice.clone() },
        },
    }
}

/// OpenAI events that show the agent hearing the caller or answering (not mute), among those
/// the session otherwise ignores: speech detection, input transcription, a response under way.
fn is_speech_sign(kind: &str) -> bool {
    kind.starts_with("input_audio_buffer.speech")
        || kind.starts_with("conversation.item.input_audio_transcription")
        || kind.starts_with("response.")
        || kind.starts_with("output_audio_buffer.")
}

fn pcm_from_le(bytes: &[u8]) -> Option<Vec<i16>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

//! The simulated agent's side of Twilio Media Streams: reads `connected`/`start`/`media`/
//! `dtmf`/`mark`/`stop`, answers with agent `media` (echo or greeting), `mark` and `clear`.
//! A stream whose `start` carries `customParameters.trunkguard_probe = "1"` is a health probe:
//! it is counted as a probe (not a start) and gets no greeting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{b64_encode, Agent, AgentCtx};
use crate::audio::{self, Format, Vad, VadEvent};
use crate::player::{Played, Player};
use crate::stats::record;
use crate::twilio_msg::{self as msg, FromBridge, Start};
use crate::SimMode;

/// Length of the beep answering a DTMF digit.
const DTMF_BEEP: Duration = Duration::from_millis(200);

/// One Twilio-protocol connection.
#[derive(Debug)]
pub struct TwilioAgent {
    ctx: Arc<AgentCtx>,
    player: Player,
    vad: Vad,
    stream_sid: String,
    marks: u64,
    /// This stream is a trunkguard health probe.
    probe: bool,
}

impl TwilioAgent {
    /// `conn` seeds the connection's jitter.
    pub fn new(ctx: Arc<AgentCtx>, conn: u64) -> TwilioAgent {
        TwilioAgent {
            player: ctx.player(Format::Ulaw8k, conn),
            vad: Vad::new(Format::Ulaw8k.rate()),
            ctx,
            stream_sid: String::new(),
            marks: 0,
            probe: false,
        }
    }

    fn mark_name(&mut self, what: &str) -> String {
        self.marks += 1;
        format!("{what}-{}", self.marks)
    }

    fn on_start(&mut self, now: Instant, start: Start) {
        self.probe = start.probe;
        if self.probe {
            self.ctx.stats.update(|s| s.probes += 1);
            return;
        }
        let resumed = start.resumed;
        tracing::info!(
            stream_sid = %start.stream_sid,
            call_sid = %start.call_sid,
            resumed,
            "agent-sim: twilio start"
        );
        self.stream_sid = start.stream_sid;
        let call_sid = start.call_sid;
        self.ctx.stats.update(|s| {
            s.starts += 1;
            s.resumed += u64::from(resumed);
            record(&mut s.call_sids, call_sid);
        });
        if self.ctx.mode == SimMode::Prompt {
            self.queue_greeting(now);
        }
    }

    fn queue_greeting(&mut self, now: Instant) {
        if let Some(greeting) = self.ctx.greeting(Format::Ulaw8k) {
            self.player.push_audio(now, greeting);
            let name = self.mark_name("greeting");
            self.player.push_mark(now, name);
        }
    }

    fn on_media(&mut self, now: Instant, stream_sid: Option<String>, payload: &str) -> Vec<String> {
        let Some(ulaw) = self.ctx.b64(payload) else {
            return Vec::new();
        };
        if self.stream_sid.is_empty() {
            self.stream_sid = stream_sid.unwrap_or_default();
        }
        self.ctx.stats.update(|s| s.media_in += 1);
        let samples = Format::Ulaw8k.decode(&ulaw).unwrap_or_default();
        let events = self.vad.feed(&samples);
        let due = now + self.ctx.echo_delay;
        if self.ctx.mode == SimMode::Echo {
            self.player.push_audio(due, samples);
        }
        let mut out = Vec::new();
        for event in events {
            match (self.ctx.mode, event) {
                (SimMode::Echo, VadEvent::SpeechStopped { .. }) => {
                    let name = self.mark_name("utterance");
                    self.player.push_mark(due, name);
                }
                (SimMode::Prompt, VadEvent::SpeechStarted { .. }) => {
                    if let Some(ahead) = self.player.clear(now) {
                        self.ctx.stats.update(|s| s.clears_sent += 1);
                        self.ctx.record_barge_in(now, ahead);
                        out.push(msg::clear(&self.stream_sid));
                    }
                }
                (SimMode::Prompt, VadEvent::SpeechStopped { .. }) => self.queue_greeting(now),
                _ => {}
            }
        }
        out
    }

    fn on_dtmf(&mut self, now: Instant, digit: &str) {
        let Some(digit) = digit.chars().next() else {
            self.ctx.stats.update(|s| s.protocol_errors += 1);
            return;
        };
        tracing::info!(%digit, "agent-sim: twilio dtmf");
        self.ctx.stats.update(|s| record(&mut s.dtmf, digit));
        let due = now + self.ctx.echo_delay;
        self.player.push_audio(due, audio::beep(Format::Ulaw8k, DTMF_BEEP));
        let name = self.mark_name(&format!("dtmf-{digit}"));
        self.player.push_mark(due, name);
    }
}

impl Agent for TwilioAgent {
    fn on_open(&mut self, _now: Instant) -> Vec<String> {
        Vec::new()
    }

    fn on_text(&mut self, now: Instant, text: &str) -> Vec<String> {
        if text.len() > self.ctx.max_frame {
            self.ctx.stats.update(|s| s.protocol_errors += 1);
            return Vec::new();
        }
        let message = match msg::parse(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "agent-sim: bad twilio frame");
                self.ctx.stats.update(|s| s.protocol_errors += 1);
                return Vec::new();
            }
        };
        tracing::debug!(event = message.name(), "agent-sim: twilio event");
        match message {
            FromBridge::Start(start) => self.on_start(now, start),
            FromBridge::Media { stream_sid, payload } => {
                return self.on_media(now, stream_sid, &payload)
            }
            FromBridge::Dtmf { digit } => self.on_dtmf(now, &digit),
            FromBridge::Mark { name } => self.ctx.stats.update(|s| record(&mut s.marks, name)),
            FromBridge::Stop if self.probe => {}
            FromBridge::Stop => self.ctx.stats.update(|s| s.stops += 1),
            FromBridge::Connected => {}
            FromBridge::Other(event) => {
                tracing::debug!(%event, "agent-sim: twilio event ignored");
            }
        }
        Vec::new()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.player.next_deadline()
    }

    fn poll(&mut self, now: Instant) -> Vec<String> {
        let Some(played) = self.player.poll(now) else {
            return Vec::new();
        };
        let frame = match played {
            Played::Audio(samples) => {
                self.ctx.count_audio_out(Format::Ulaw8k, samples.len());
                msg::media(&self.stream_sid, &b64_encode(&Format::Ulaw8k.encode(&samples)))
            }
            Played::Mark(name) => {
                self.ctx.stats.update(|s| s.marks_sent += 1);
                msg::mark(&self.stream_sid, &name)
            }
            Played::Drained => {
                self.ctx.stats.update(|s| s.marks_sent += 1);
                let name = self.mark_name("burst");
                msg::mark(&self.stream_sid, &name)
            }
        };
        vec![frame]
    }
}

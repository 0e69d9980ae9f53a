//! The simulated agent's side of Twilio Media Streams: reads `connected`/`start`/`media`/
//! `dtmf`/`mark`/`stop`, answers with agent `media` (echo or greeting), `mark` and `clear`.
//! A stream whose `start` carries `customParameters.trunkguard_probe = "1"` is a health probe:
//! it is counted as a probe (not a start) and gets no greeting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::ai::twilio::{self, Message};

use super::agent::{Agent, AgentCtx};
use super::audio::{self, Format, Vad, VadEvent};
use super::player::{Played, Player};
use super::stats::record;
use super::SimMode;

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
    pub fn new(ctx: Arc<AgentCtx>) -> TwilioAgent {
        TwilioAgent {
            player: ctx.player(Format::Ulaw8k),
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

    fn on_start(&mut self, now: Instant, start: twilio::StartMsg) {
        self.probe =
            start.start.custom_parameters.get("trunkguard_probe").is_some_and(|v| v == "1");
        if self.probe {
            self.ctx.stats.update(|s| s.probes += 1);
            return;
        }
        let resumed = start
            .start
            .custom_parameters
            .get("resumed")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        tracing::info!(
            stream_sid = %start.stream_sid,
            call_sid = %start.start.call_sid,
            resumed,
            "agent-sim: twilio start"
        );
        self.stream_sid = start.stream_sid;
        let call_sid = start.start.call_sid;
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

    fn on_media(&mut self, now: Instant, media: twilio::MediaMsg) -> Vec<String> {
        let Some(ulaw) = self.ctx.b64(&media.media.payload) else {
            return Vec::new();
        };
        if self.stream_sid.is_empty() {
            self.stream_sid = media.stream_sid.unwrap_or_default();
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
                (SimMode::Prompt, VadEvent::SpeechStarted { .. }) if self.player.clear() => {
                    self.ctx.stats.update(|s| s.clears_sent += 1);
                    out.push(twilio::encode_clear(&self.stream_sid));
                }
                (SimMode::Prompt, VadEvent::SpeechStopped { .. }) => self.queue_greeting(now),
                _ => {}
            }
        }
        out
    }

    fn on_dtmf(&mut self, now: Instant, dtmf: twilio::DtmfMsg) {
        let Some(digit) = dtmf.dtmf.digit.chars().next() else {
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
        let msg = match twilio::parse_message(text, self.ctx.max_frame) {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                tracing::debug!(frame = %text, "agent-sim: twilio event ignored");
                return Vec::new();
            }
            Err(e) => {
                tracing::debug!(error = %e, "agent-sim: bad twilio frame");
                self.ctx.stats.update(|s| s.protocol_errors += 1);
                return Vec::new();
            }
        };
        tracing::debug!(event = event_name(&msg), "agent-sim: twilio event received");
        match msg {
            Message::Start(start) => self.on_start(now, start),
            Message::Media(media) => return self.on_media(now, media),
            Message::Dtmf(dtmf) => self.on_dtmf(now, dtmf),
            Message::Mark(mark) => self.ctx.stats.update(|s| record(&mut s.marks, mark.mark.name)),
            Message::Stop(_) if self.probe => {}
            Message::Stop(_) => self.ctx.stats.update(|s| s.stops += 1),
            Message::Connected(_) | Message::Clear(_) => {}
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
                self.ctx.stats.update(|s| s.media_out += 1);
                twilio::encode_agent_media(&self.stream_sid, &Format::Ulaw8k.encode(&samples))
            }
            Played::Mark(name) => {
                self.ctx.stats.update(|s| s.marks_sent += 1);
                twilio::encode_agent_mark(&self.stream_sid, &name)
            }
            Played::Drained => {
                self.ctx.stats.update(|s| s.marks_sent += 1);
                let name = self.mark_name("burst");
                twilio::encode_agent_mark(&self.stream_sid, &name)
            }
        };
        vec![frame]
    }
}

fn event_name(msg: &Message) -> &'static str {
    match msg {
        Message::Connected(_) => "connected",
        Message::Start(_) => "start",
        Message::Media(_) => "media",
        Message::Dtmf(_) => "dtmf",
        Message::Mark(_) => "mark",
        Message::Clear(_) => "clear",
        Message::Stop(_) => "stop",
    }
}

//! The simulated agent's side of the OpenAI Realtime API, written from OpenAI's client- and
//! server-event references: sends `session.created`, answers `session.update` (GA
//! `audio.{input,output}.format` objects or the beta `*_audio_format` strings) with
//! `session.updated`, echoes `input_audio_buffer.append` audio (or speaks a greeting) as
//! `response.created`, `response.output_audio.delta`s, `response.output_audio.done` and
//! `response.done`, runs a simple server VAD for `input_audio_buffer.speech_started` /
//! `speech_stopped`, answers `conversation.item.truncate` with `conversation.item.truncated`
//! and `conversation.item.create` with `conversation.item.added`, and `error` for the rest.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::agent::{b64_encode, Agent, AgentCtx};
use crate::audio::{self, Format, Vad, VadEvent};
use crate::player::{Played, Player};
use crate::stats::{record, CreatedItem, Truncate};
use crate::SimMode;

/// The response whose audio is being sent.
#[derive(Debug)]
struct Response {
    id: String,
    item_id: String,
}

/// One Realtime-protocol connection.
#[derive(Debug)]
pub struct OpenAiAgent {
    ctx: Arc<AgentCtx>,
    conn: u64,
    input: Format,
    output: Format,
    player: Player,
    vad: Vad,
    events: u64,
    ids: u64,
    response: Option<Response>,
    speech_item: Option<String>,
    greeted: bool,
}

impl OpenAiAgent {
    /// `conn` makes ids unique across connections.
    pub fn new(ctx: Arc<AgentCtx>, conn: u64) -> OpenAiAgent {
        OpenAiAgent {
            player: ctx.player(Format::Pcm24k, conn),
            vad: Vad::new(Format::Pcm24k.rate()),
            ctx,
            conn,
            input: Format::Pcm24k,
            output: Format::Pcm24k,
            events: 0,
            ids: 0,
            response: None,
            speech_item: None,
            greeted: false,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}_sim{}_{}", self.conn, self.ids)
    }

    /// A server event: `body` plus `type` and a fresh `event_id`.
    fn event(&mut self, kind: &str, mut body: Value) -> String {
        self.events += 1;
        if let Value::Object(map) = &mut body {
            map.insert("type".into(), kind.into());
            map.insert("event_id".into(), format!("event_sim{}_{}", self.conn, self.events).into());
        }
        body.to_string()
    }

    fn error(&mut self, code: &str, message: String) -> String {
        self.ctx.stats.update(|s| s.protocol_errors += 1);
        self.event(
            "error",
            json!({"error": {"type": "invalid_request_error", "code": code, "message": message}}),
        )
    }

    fn session_object(&self, id: &str) -> Value {
        json!({
            "id": id,
            "object": "realtime.session",
            "type": "realtime",
            "model": "agent-sim",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": format_json(self.input), "turn_detection": {"type": "server_vad"}},
                "output": {"format": format_json(self.output)}
            }
        })
    }

    fn on_session_update(&mut self, now: Instant, value: &Value) -> Vec<String> {
        let session = value.get("session").unwrap_or(&Value::Null);
        let input = session_format(session, "input");
        let output = session_format(session, "output");
        let mut out = Vec::new();
        for (format, slot) in [(&input, "input"), (&output, "output")] {
            if let Some(Err(shown)) = format {
                let msg = format!("unsupported {slot} audio format {shown}");
                out.push(self.error("invalid_value", msg));
            }
        }
        if let Some(Ok(f)) = input {
            if f != self.input {
                self.input = f;
                self.vad = Vad::new(f.rate());
            }
        }
        if let Some(Ok(f)) = output {
            if f != self.output {
                self.output = f;
                self.player = self.ctx.player(f, self.conn);
                self.response = None;
            }
        }
        self.ctx.stats.update(|s| s.starts += 1);
        let id = self.id("sess");
        let session = self.session_object(&id);
        out.push(self.event("session.updated", json!({ "session": session })));
        self.greet_once(now);
        out
    }

    fn greet_once(&mut self, now: Instant) {
        if self.ctx.mode == SimMode::Prompt && !self.greeted {
            self.greeted = true;
            self.queue_greeting(now);
        }
    }

    fn queue_greeting(&mut self, now: Instant) {
        if let Some(greeting) = self.ctx.greeting(self.output) {
            self.player.push_audio(now, greeting);
            self.player.push_mark(now, "greeting".into());
        }
    }

    fn on_append(&mut self, now: Instant, b64: &str) -> Vec<String> {
        let Some(bytes) = self.ctx.b64(b64) else {
            return vec![self.error("invalid_value", "audio is not valid base64".into())];
        };
        let Ok(samples) = self.input.decode(&bytes) else {
            return vec![self.error("invalid_value", "PCM16 audio has an odd length".into())];
        };
        self.ctx.stats.update(|s| s.media_in += 1);
        self.greet_once(now);
        let events = self.vad.feed(&samples);
        let due = now + self.ctx.echo_delay;
        if self.ctx.mode == SimMode::Echo {
            let converted = audio::convert(&samples, self.input, self.output);
            self.player.push_audio(due, converted);
        }
        let mut out = Vec::new();
        for event in events {
            out.extend(self.on_vad(now, event));
        }
        out
    }

    fn on_vad(&mut self, now: Instant, event: VadEvent) -> Vec<String> {
        let mut out = Vec::new();
        match event {
            VadEvent::SpeechStarted { at_ms } => {
                let item_id = self.id("item");
                self.speech_item = Some(item_id.clone());
                self.ctx.stats.update(|s| s.speech_started += 1);
                let body = json!({"audio_start_ms": at_ms, "item_id": item_id});
                out.push(self.event("input_audio_buffer.speech_started", body));
                // A real agent cancels its answer when the caller talks over it.
                if self.ctx.mode == SimMode::Prompt {
                    if let Some(ahead) = self.player.clear(now) {
                        self.ctx.record_barge_in(now, ahead);
                        out.extend(self.finish_response("cancelled"));
                    }
                }
            }
            VadEvent::SpeechStopped { at_ms } => {
                let item_id = self.speech_item.take().unwrap_or_default();
                let body = json!({"audio_end_ms": at_ms, "item_id": item_id});
                out.push(self.event("input_audio_buffer.speech_stopped", body));
                match self.ctx.mode {
                    SimMode::Echo => {
                        let due = now + self.ctx.echo_delay;
                        self.player.push_mark(due, "utterance".into());
                    }
                    SimMode::Prompt => self.queue_greeting(now),
                }
            }
        }
        out
    }

    /// `conversation.item.truncate`: `item_id`, `content_index`, `audio_end_ms`.
    fn on_truncate(&mut self, value: &Value) -> Vec<String> {
        let item_id = value.get("item_id").and_then(Value::as_str);
        let audio_end_ms = value.get("audio_end_ms").and_then(Value::as_u64);
        let (Some(item_id), Some(audio_end_ms)) = (item_id, audio_end_ms) else {
            let msg = "conversation.item.truncate needs item_id and audio_end_ms".into();
            return vec![self.error("missing_required_parameter", msg)];
        };
        let content_index = value.get("content_index").and_then(Value::as_u64).unwrap_or(0);
        let t = Truncate { item_id: item_id.to_owned(), audio_end_ms };
        self.ctx.stats.update(|s| record(&mut s.truncates, t));
        let body = json!({"item_id": item_id, "content_index": content_index,
                          "audio_end_ms": audio_end_ms});
        vec![self.event("conversation.item.truncated", body)]
    }

    /// `conversation.item.create`: a message `item` with `role` and `content` parts.
    fn on_item_create(&mut self, value: &Value) -> Vec<String> {
        let Some(Value::Object(item)) = value.get("item") else {
            return vec![self.error("missing_required_parameter", "item is missing".into())];
        };
        let role = item.get("role").and_then(Value::as_str).unwrap_or_default().to_owned();
        let text = item
            .get("content")
            .and_then(|c| c.get(0))
            .and_then(|part| part.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.ctx.stats.update(|s| record(&mut s.items_created, CreatedItem { role, text }));
        let mut item = item.clone();
        item.insert("id".into(), self.id("item").into());
        vec![self.event("conversation.item.added", json!({ "item": item }))]
    }

    /// Ends the current response, if any.
    fn finish_response(&mut self, status: &str) -> Vec<String> {
        let Some(resp) = self.response.take() else {
            return Vec::new();
        };
        self.ctx.stats.update(|s| s.marks_sent += 1);
        let done = json!({"response_id": resp.id, "item_id": resp.item_id,
                          "output_index": 0, "content_index": 0});
        let response = json!({"response": {"id": resp.id, "object": "realtime.response",
                                           "status": status}});
        vec![self.event("response.output_audio.done", done), self.event("response.done", response)]
    }

    fn audio_delta(&mut self, samples: &[i16]) -> Vec<String> {
        let mut out = Vec::new();
        if self.response.is_none() {
            let resp = Response { id: self.id("resp"), item_id: self.id("item") };
            let body = json!({"response": {"id": resp.id, "object": "realtime.response",
                                           "status": "in_progress"}});
            out.push(self.event("response.created", body));
            self.response = Some(resp);
        }
        let (response_id, item_id) = match &self.response {
            Some(r) => (r.id.clone(), r.item_id.clone()),
            None => return out,
        };
        self.ctx.count_audio_out(self.output, samples.len());
        let delta = b64_encode(&self.output.encode(samples));
        let body = json!({"response_id": response_id, "item_id": item_id,
                          "output_index": 0, "content_index": 0, "delta": delta});
        out.push(self.event("response.output_audio.delta", body));
        out
    }
}

impl Agent for OpenAiAgent {
    fn on_open(&mut self, _now: Instant) -> Vec<String> {
        let id = self.id("sess");
        let session = self.session_object(&id);
        vec![self.event("session.created", json!({ "session": session }))]
    }

    fn on_text(&mut self, now: Instant, text: &str) -> Vec<String> {
        if text.len() > self.ctx.max_frame {
            return vec![self.error("invalid_event", "event too large".into())];
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return vec![self.error("invalid_json", e.to_string())],
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
        tracing::debug!(event = %kind, "agent-sim: openai event received");
        match kind.as_str() {
            "session.update" => self.on_session_update(now, &value),
            "input_audio_buffer.append" => match value.get("audio").and_then(Value::as_str) {
                Some(audio) => self.on_append(now, audio),
                None => vec![self.error("missing_required_parameter", "audio is missing".into())],
            },
            "conversation.item.truncate" => self.on_truncate(&value),
            "conversation.item.create" => self.on_item_create(&value),
            "response.cancel" => {
                self.player.clear(now);
                self.finish_response("cancelled")
            }
            "input_audio_buffer.commit" | "input_audio_buffer.clear" | "response.create" => {
                Vec::new()
            }
            "" => vec![self.error("invalid_event", "The 'type' field is missing.".into())],
            other => {
                let msg = format!("Invalid value: '{other}'");
                vec![self.error("invalid_event", msg)]
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.player.next_deadline()
    }

    fn poll(&mut self, now: Instant) -> Vec<String> {
        match self.player.poll(now) {
            None => Vec::new(),
            Some(Played::Audio(samples)) => self.audio_delta(&samples),
            Some(Played::Mark(_) | Played::Drained) => self.finish_response("completed"),
        }
    }
}

fn format_json(format: Format) -> Value {
    match format {
        Format::Ulaw8k => json!({"type": "audio/pcmu"}),
        Format::Pcm24k => json!({"type": "audio/pcm", "rate": 24000}),
    }
}

/// The `input`/`output` format of a session object: GA `audio.<slot>.format` objects, or the
/// beta `<slot>_audio_format` strings. `Err` holds an unsupported format as JSON text.
fn session_format(session: &Value, slot: &str) -> Option<Result<Format, String>> {
    if let Some(f) = session.pointer(&format!("/audio/{slot}/format")) {
        return Some(match (f.get("type").and_then(Value::as_str), f.get("rate")) {
            (Some("audio/pcmu"), _) => Ok(Format::Ulaw8k),
            (Some("audio/pcm"), None) => Ok(Format::Pcm24k),
            (Some("audio/pcm"), Some(r)) if r.as_u64() == Some(24000) => Ok(Format::Pcm24k),
            _ => Err(f.to_string()),
        });
    }
    let beta = session.get(format!("{slot}_audio_format"))?;
    Some(match beta.as_str() {
        Some("g711_ulaw") => Ok(Format::Ulaw8k),
        Some("pcm16") => Ok(Format::Pcm24k),
        _ => Err(beta.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_formats_ga_and_beta() {
        let ga = json!({"audio": {"input": {"format": {"type": "audio/pcmu"}},
                                  "output": {"format": {"type": "audio/pcm", "rate": 24000}}}});
        assert_eq!(session_format(&ga, "input"), Some(Ok(Format::Ulaw8k)));
        assert_eq!(session_format(&ga, "output"), Some(Ok(Format::Pcm24k)));
        let beta = json!({"input_audio_format": "pcm16", "output_audio_format": "g711_alaw"});
        assert_eq!(session_format(&beta, "input"), Some(Ok(Format::Pcm24k)));
        assert!(matches!(session_format(&beta, "output"), Some(Err(_))));
        let odd = json!({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}});
        assert!(matches!(session_format(&odd, "input"), Some(Err(_))));
        assert_eq!(session_format(&json!({}), "input"), None);
    }
}

//! OpenAI Realtime API (WebSocket) wire events, GA shape.
//!
//! We send `session.update` with the GA session object (`session.type = "realtime"`, formats
//! under `session.audio.input.format` / `session.audio.output.format` as `{"type":"audio/pcm",
//! "rate":24000}` or `{"type":"audio/pcmu"}`, server VAD so `speech_started` is produced, and
//! input transcription for the resume transcript), `input_audio_buffer.append`,
//! `conversation.item.truncate` and `conversation.item.create` (resume context: user items as
//! `input_text`, assistant items as `output_text`). We accept both the GA names of server
//! events (`response.output_audio.delta`, `response.output_audio_transcript.*`) and the older
//! beta names (`response.audio.delta`, `response.audio_transcript.*`). Text frames only.

use serde::{Deserialize, Serialize};

use super::{
    b64_decode, b64_encode, parse_tagged, to_json, typed, ProtocolError, DEFAULT_MAX_FRAME,
};

/// Client events we send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientEvent {
    #[serde(rename = "session.update")]
    SessionUpdate { session: RealtimeSession },
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend { audio: String },
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate { item_id: String, content_index: u32, audio_end_ms: u64 },
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate { item: MessageItem },
}

/// The GA realtime session object (only the fields we set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealtimeSession {
    /// Always `"realtime"`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    pub output_modalities: Vec<String>,
    pub audio: SessionAudio,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAudio {
    pub input: AudioInput,
    pub output: AudioOutput,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioInput {
    pub format: AudioFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<Transcription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<TurnDetection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioOutput {
    pub format: AudioFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
}

/// GA audio formats: PCM16 little-endian mono at 24 kHz, or G.711 μ-law at 8 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AudioFormat {
    #[serde(rename = "audio/pcm")]
    Pcm { rate: u32 },
    #[serde(rename = "audio/pcmu")]
    Pcmu,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcription {
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnDetection {
    #[serde(rename = "type")]
    pub kind: String,
}

/// A conversation message item (`conversation.item.create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageItem {
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `"user"` or `"assistant"`.
    pub role: String,
    pub content: Vec<ContentPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `"input_text"` (user) or `"output_text"` (assistant).
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// Server events we act on, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    SessionCreated,
    SessionUpdated,
    /// Agent audio in the session's output format (raw bytes: μ-law, or PCM16 LE).
    AudioDelta {
        response_id: String,
        item_id: String,
        audio: Vec<u8>,
    },
    SpeechStarted {
        item_id: Option<String>,
        audio_start_ms: Option<u64>,
    },
    AssistantTranscriptDelta {
        item_id: String,
        delta: String,
    },
    AssistantTranscriptDone {
        item_id: String,
        transcript: String,
    },
    UserTranscript {
        item_id: String,
        transcript: String,
    },
    Error {
        code: Option<String>,
        message: String,
    },
    /// A documented server event we do not act on (`response.created`, `rate_limits.updated`…).
    Ignored(String),
    /// An event type we do not know (counted by the session).
    Unknown(String),
}

/// Documented server events that need no action from the bridge.
const IGNORED: &[&str] = &[
    "conversation.created",
    "conversation.item.created",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.retrieved",
    "conversation.item.truncated",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.failed",
    "conversation.item.input_audio_transcription.segment",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.timeout_triggered",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.text.delta",
    "response.text.done",
    "response.output_audio.done",
    "response.audio.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "rate_limits.updated",
    "transcription_session.updated",
];

#[derive(Deserialize)]
struct AudioDeltaWire {
    #[serde(default)]
    response_id: String,
    item_id: String,
    delta: String,
}

#[derive(Deserialize)]
struct SpeechStartedWire {
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    audio_start_ms: Option<u64>,
}

#[derive(Deserialize)]
struct TextDeltaWire {
    item_id: String,
    delta: String,
}

#[derive(Deserialize)]
struct TranscriptWire {
    item_id: String,
    transcript: String,
}

#[derive(Deserialize)]
struct ErrorWire {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: String,
}

pub fn encode(event: &ClientEvent) -> String {
    to_json(event)
}

/// `session.update` in the GA shape.
pub fn encode_session_update(session: RealtimeSession) -> String {
    encode(&ClientEvent::SessionUpdate { session })
}

/// `input_audio_buffer.append` of raw bytes in the session's input format.
pub fn encode_append(audio: &[u8]) -> String {
    encode(&ClientEvent::InputAudioBufferAppend { audio: b64_encode(audio) })
}

pub fn encode_truncate(item_id: &str, audio_end_ms: u64) -> String {
    encode(&ClientEvent::ConversationItemTruncate {
        item_id: item_id.into(),
        content_index: 0,
        audio_end_ms,
    })
}

/// `conversation.item.create` of a text message; `assistant` selects role and content type.
pub fn encode_text_item(assistant: bool, text: &str) -> String {
    let (role, kind) =
        if assistant { ("assistant", "output_text") } else { ("user", "input_text") };
    encode(&ClientEvent::ConversationItemCreate {
        item: MessageItem {
            kind: "message".into(),
            role: role.into(),
            content: vec![ContentPart { kind: kind.into(), text: text.into() }],
        },
    })
}

/// Parses one of our client events (tests, simulators).
pub fn parse_client_event(text: &str) -> Result<ClientEvent, ProtocolError> {
    let (value, kind) = parse_tagged(text, DEFAULT_MAX_FRAME, "type")?;
    typed(value, &kind)
}

/// Decodes a server event with the default 256 KiB limit.
pub fn decode(text: &str) -> Result<Inbound, ProtocolError> {
    decode_with_limit(text, DEFAULT_MAX_FRAME)
}

/// Decodes a server event. Never panics; unknown types are `Inbound::Unknown`.
pub fn decode_with_limit(text: &str, max_frame: usize) -> Result<Inbound, ProtocolError> {
    let (value, kind) = parse_tagged(text, max_frame, "type")?;
    let inbound = match kind.as_str() {
        "session.created" => Inbound::SessionCreated,
        "session.updated" => Inbound::SessionUpdated,
        "response.output_audio.delta" | "response.audio.delta" => {
            let w: AudioDeltaWire = typed(value, &kind)?;
            Inbound::AudioDelta {
                audio: b64_decode(&w.delta, &kind)?,
                response_id: w.response_id,
                item_id: w.item_id,
            }
        }
        "input_audio_buffer.speech_started" => {
            let w: SpeechStartedWire = typed(value, &kind)?;
            Inbound::SpeechStarted { item_id: w.item_id, audio_start_ms: w.audio_start_ms }
        }
        "response.output_audio_transcript.delta" | "response.audio_transcript.delta" => {
            let w: TextDeltaWire = typed(value, &kind)?;
            Inbound::AssistantTranscriptDelta { item_id: w.item_id, delta: w.delta }
        }
        "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
            let w: TranscriptWire = typed(value, &kind)?;
            Inbound::AssistantTranscriptDone { item_id: w.item_id, transcript: w.transcript }
        }
        "conversation.item.input_audio_transcription.completed" => {
            let w: TranscriptWire = typed(value, &kind)?;
            Inbound::UserTranscript { item_id: w.item_id, transcript: w.transcript }
        }
        "error" => {
            let w: ErrorWire = typed(value, &kind)?;
            Inbound::Error { code: w.error.code, message: w.error.message }
        }
        other if IGNORED.contains(&other) => Inbound::Ignored(kind),
        _ => Inbound::Unknown(kind),
    };
    Ok(inbound)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    fn value(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    fn session(format: AudioFormat) -> RealtimeSession {
        RealtimeSession {
            kind: "realtime".into(),
            model: None,
            instructions: Some("Be brief.".into()),
            output_modalities: vec!["audio".into()],
            audio: SessionAudio {
                input: AudioInput {
                    format,
                    transcription: Some(Transcription { model: "whisper-1".into() }),
                    turn_detection: Some(TurnDetection { kind: "server_vad".into() }),
                },
                output: AudioOutput { format, voice: Some("marin".into()) },
            },
        }
    }

    #[test]
    fn session_update_has_the_ga_shape() {
        assert_eq!(
            value(&encode_session_update(session(AudioFormat::Pcmu))),
            json!({
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "output_modalities": ["audio"],
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcmu"},
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad"}
                        },
                        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}
                    }
                }
            })
        );
        let pcm = value(&encode_session_update(session(AudioFormat::Pcm { rate: 24000 })));
        assert_eq!(
            pcm["session"]["audio"]["input"]["format"],
            json!({"type": "audio/pcm", "rate": 24000})
        );
    }

    #[test]
    fn client_events_match_the_reference() {
        assert_eq!(
            value(&encode_append(&[0xFF, 0x7F])),
            json!({"type": "input_audio_buffer.append", "audio": "/38="})
        );
        assert_eq!(
            value(&encode_truncate("msg_002", 1500)),
            json!({"type": "conversation.item.truncate", "item_id": "msg_002",
                   "content_index": 0, "audio_end_ms": 1500})
        );
        assert_eq!(
            value(&encode_text_item(false, "hi")),
            json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "hi"}]}})
        );
        assert_eq!(
            value(&encode_text_item(true, "hello")),
            json!({"type": "conversation.item.create", "item": {"type": "message",
                   "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]}})
        );
    }

    #[test]
    fn client_events_round_trip() {
        let texts = [
            encode_session_update(session(AudioFormat::Pcm { rate: 24000 })),
            encode_append(&[1, 2, 3]),
            encode_truncate("item_1", 0),
            encode_text_item(true, "ok"),
        ];
        for text in texts {
            let event = parse_client_event(&text).unwrap();
            assert_eq!(value(&encode(&event)), value(&text));
        }
    }

    #[test]
    fn decodes_server_events_from_the_reference() {
        let cases = [
            (
                r#"{"event_id":"event_1","type":"session.created","session":{"type":"realtime"}}"#,
                Inbound::SessionCreated,
            ),
            (r#"{"event_id":"e","type":"session.updated","session":{}}"#, Inbound::SessionUpdated),
            (
                r#"{"event_id":"e","type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"/38="}"#,
                Inbound::AudioDelta {
                    response_id: "resp_1".into(),
                    item_id: "item_1".into(),
                    audio: vec![0xFF, 0x7F],
                },
            ),
            (
                r#"{"event_id":"e","type":"response.audio.delta","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":""}"#,
                Inbound::AudioDelta { response_id: "r".into(), item_id: "i".into(), audio: vec![] },
            ),
            (
                r#"{"event_id":"e","type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"msg_003"}"#,
                Inbound::SpeechStarted {
                    item_id: Some("msg_003".into()),
                    audio_start_ms: Some(1000),
                },
            ),
            (
                r#"{"event_id":"e","type":"response.output_audio_transcript.delta","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"Hel"}"#,
                Inbound::AssistantTranscriptDelta { item_id: "i".into(), delta: "Hel".into() },
            ),
            (
                r#"{"event_id":"e","type":"response.audio_transcript.done","response_id":"r","item_id":"i","output_index":0,"content_index":0,"transcript":"Hello."}"#,
                Inbound::AssistantTranscriptDone {
                    item_id: "i".into(),
                    transcript: "Hello.".into(),
                },
            ),
            (
                r#"{"event_id":"e","type":"conversation.item.input_audio_transcription.completed","item_id":"msg_003","content_index":0,"transcript":"Hello, how are you?"}"#,
                Inbound::UserTranscript {
                    item_id: "msg_003".into(),
                    transcript: "Hello, how are you?".into(),
                },
            ),
            (
                r#"{"event_id":"e","type":"error","error":{"type":"invalid_request_error","code":"invalid_event","message":"The 'type' field is missing.","param":null,"event_id":"x"}}"#,
                Inbound::Error {
                    code: Some("invalid_event".into()),
                    message: "The 'type' field is missing.".into(),
                },
            ),
            (r#"{"type":"response.done","response":{}}"#, Inbound::Ignored("response.done".into())),
            (r#"{"type":"brand.new"}"#, Inbound::Unknown("brand.new".into())),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(decode("nope"), Err(ProtocolError::Json(_))));
        assert_eq!(decode(r#"{"event":"media"}"#), Err(ProtocolError::MissingType("type")));
        assert_eq!(
            decode(r#"{"type":"response.output_audio.delta","item_id":"i","delta":"%%%"}"#),
            Err(ProtocolError::Base64("response.output_audio.delta".into()))
        );
        assert!(matches!(
            decode(r#"{"type":"response.output_audio.delta","delta":"AAAA"}"#),
            Err(ProtocolError::BadField { .. })
        ));
        let big = format!(
            r#"{{"type":"response.output_audio.delta","item_id":"i","delta":"{}"}}"#,
            "A".repeat(DEFAULT_MAX_FRAME)
        );
        assert!(matches!(decode(&big), Err(ProtocolError::Oversize { .. })));
    }

    #[test]
    fn fuzzish_inputs_never_panic() {
        let mut rng = SmallRng::seed_from_u64(0x0A1);
        let seeds = [
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"/38="}"#,
            r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":10,"item_id":"m"}"#,
            r#"{"type":"error","error":{"code":"x","message":"m"}}"#,
            r#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"m","transcript":"t"}"#,
        ];
        for i in 0..5000 {
            let mut bytes = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..6) {
                let pos = rng.gen_range(0..bytes.len().max(1));
                match rng.gen_range(0..3) {
                    0 if pos < bytes.len() => {
                        bytes.remove(pos);
                    }
                    1 => bytes.insert(pos, b"{}[]\":,0a-/=\\"[rng.gen_range(0..13)]),
                    _ if pos < bytes.len() => bytes[pos] = rng.gen(),
                    _ => {}
                }
            }
            let _ = decode_with_limit(&String::from_utf8_lossy(&bytes), 4096);
        }
    }
}

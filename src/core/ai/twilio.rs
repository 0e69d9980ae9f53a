//! Twilio Media Streams (bidirectional) wire messages: we play Twilio's role toward an agent
//! that speaks this protocol.
//!
//! We send `connected`, `start`, `media` (caller audio, base64 μ-law 8 kHz, 20 ms), `dtmf`,
//! `mark` (echo, once the agent audio queued before it was played) and `stop`. We receive
//! `media` (audio to play), `mark` and `clear` (barge-in: flush playout). As Twilio does,
//! `sequenceNumber`, `chunk` and `timestamp` are decimal strings. Text frames only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    b64_decode, b64_encode, parse_tagged, to_json, typed, ProtocolError, DEFAULT_MAX_FRAME,
};

/// Every Media Streams message, both directions, exactly as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Message {
    Connected(Connected),
    Start(StartMsg),
    Media(MediaMsg),
    Dtmf(DtmfMsg),
    Mark(MarkMsg),
    Clear(ClearMsg),
    Stop(StopMsg),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    pub protocol: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMsg {
    pub sequence_number: String,
    pub start: StartMeta,
    pub stream_sid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMeta {
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
    pub tracks: Vec<String>,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

impl Default for MediaFormat {
    fn default() -> Self {
        MediaFormat { encoding: "audio/x-mulaw".into(), sample_rate: 8000, channels: 1 }
    }
}

/// `media`: ours carries track/chunk/timestamp; the agent's carries only the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaMsg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    pub media: MediaBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Base64 μ-law.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtmfMsg {
    pub stream_sid: String,
    pub sequence_number: String,
    pub dtmf: DtmfBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtmfBody {
    pub track: String,
    pub digit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkMsg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    pub mark: MarkBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkBody {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearMsg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopMsg {
    pub sequence_number: String,
    pub stream_sid: String,
    pub stop: StopBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopBody {
    pub account_sid: String,
    pub call_sid: String,
}

/// What an agent sent us, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// μ-law 8 kHz audio to play to the caller.
    Media {
        stream_sid: Option<String>,
        ulaw: Vec<u8>,
    },
    Mark {
        stream_sid: Option<String>,
        name: String,
    },
    Clear {
        stream_sid: Option<String>,
    },
    /// A well-formed message with an event we do not act on (counted by the session).
    Unknown(String),
}

/// Identity of the stream for the `start` message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartInfo {
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
    pub custom_parameters: BTreeMap<String, String>,
}

pub fn encode(msg: &Message) -> String {
    to_json(msg)
}

pub fn encode_connected() -> String {
    encode(&Message::Connected(Connected { protocol: "Call".into(), version: "1.0.0".into() }))
}

pub fn encode_start(seq: u64, info: &StartInfo) -> String {
    encode(&Message::Start(StartMsg {
        sequence_number: seq.to_string(),
        start: StartMeta {
            stream_sid: info.stream_sid.clone(),
            account_sid: info.account_sid.clone(),
            call_sid: info.call_sid.clone(),
            tracks: vec!["inbound".into()],
            custom_parameters: info.custom_parameters.clone(),
            media_format: MediaFormat::default(),
        },
        stream_sid: info.stream_sid.clone(),
    }))
}

/// Caller audio: `chunk` counts media messages from 1, `timestamp_ms` is since stream start.
pub fn encode_media(
    seq: u64,
    stream_sid: &str,
    chunk: u64,
    timestamp_ms: u64,
    ulaw: &[u8],
) -> String {
    encode(&Message::Media(MediaMsg {
        sequence_number: Some(seq.to_string()),
        media: MediaBody {
            track: Some("inbound".into()),
            chunk: Some(chunk.to_string()),
            timestamp: Some(timestamp_ms.to_string()),
            payload: b64_encode(ulaw),
        },
        stream_sid: Some(stream_sid.into()),
    }))
}

pub fn encode_dtmf(seq: u64, stream_sid: &str, digit: char) -> String {
    encode(&Message::Dtmf(DtmfMsg {
        stream_sid: stream_sid.into(),
        sequence_number: seq.to_string(),
        dtmf: DtmfBody { track: "inbound_track".into(), digit: digit.to_string() },
    }))
}

/// Our echo of an agent's mark.
pub fn encode_mark(seq: u64, stream_sid: &str, name: &str) -> String {
    encode(&Message::Mark(MarkMsg {
        stream_sid: Some(stream_sid.into()),
        sequence_number: Some(seq.to_string()),
        mark: MarkBody { name: name.into() },
    }))
}

pub fn encode_stop(seq: u64, stream_sid: &str, account_sid: &str, call_sid: &str) -> String {
    encode(&Message::Stop(StopMsg {
        sequence_number: seq.to_string(),
        stream_sid: stream_sid.into(),
        stop: StopBody { account_sid: account_sid.into(), call_sid: call_sid.into() },
    }))
}

/// Agent side (for simulators and tests): audio to play.
pub fn encode_agent_media(stream_sid: &str, ulaw: &[u8]) -> String {
    encode(&Message::Media(MediaMsg {
        sequence_number: None,
        media: MediaBody { track: None, chunk: None, timestamp: None, payload: b64_encode(ulaw) },
        stream_sid: Some(stream_sid.into()),
    }))
}

/// Agent side: a mark after queued audio.
pub fn encode_agent_mark(stream_sid: &str, name: &str) -> String {
    encode(&Message::Mark(MarkMsg {
        stream_sid: Some(stream_sid.into()),
        sequence_number: None,
        mark: MarkBody { name: name.into() },
    }))
}

/// Agent side: flush playout.
pub fn encode_clear(stream_sid: &str) -> String {
    encode(&Message::Clear(ClearMsg { stream_sid: Some(stream_sid.into()) }))
}

/// Parses any Media Streams message; `Ok(None)` for a well-formed message with another event.
pub fn parse_message(text: &str, max_frame: usize) -> Result<Option<Message>, ProtocolError> {
    let (value, event) = parse_tagged(text, max_frame, "event")?;
    match event.as_str() {
        "connected" | "start" | "media" | "dtmf" | "mark" | "clear" | "stop" => {
            typed(value, &event).map(Some)
        }
        _ => Ok(None),
    }
}

/// Decodes an agent's frame with the default 256 KiB limit.
pub fn decode(text: &str) -> Result<Inbound, ProtocolError> {
    decode_with_limit(text, DEFAULT_MAX_FRAME)
}

/// Decodes an agent's frame. Never panics; unknown events are `Inbound::Unknown`.
pub fn decode_with_limit(text: &str, max_frame: usize) -> Result<Inbound, ProtocolError> {
    let (value, event) = parse_tagged(text, max_frame, "event")?;
    let inbound = match event.as_str() {
        "media" => {
            let m: MediaMsg = typed(value, &event)?;
            Inbound::Media { ulaw: b64_decode(&m.media.payload, &event)?, stream_sid: m.stream_sid }
        }
        "mark" => {
            let m: MarkMsg = typed(value, &event)?;
            Inbound::Mark { stream_sid: m.stream_sid, name: m.mark.name }
        }
        "clear" => {
            let m: ClearMsg = typed(value, &event)?;
            Inbound::Clear { stream_sid: m.stream_sid }
        }
        _ => Inbound::Unknown(event),
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

    #[test]
    fn outgoing_messages_match_twilio_examples() {
        assert_eq!(
            value(&encode_connected()),
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        );
        let info = StartInfo {
            stream_sid: "MZ18ad3ab5a668481ce02b83e7395059f0".into(),
            account_sid: "AC123".into(),
            call_sid: "CA123".into(),
            custom_parameters: [("FirstName".to_string(), "Jane".to_string())].into(),
        };
        assert_eq!(
            value(&encode_start(1, &info)),
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
                    "accountSid": "AC123",
                    "callSid": "CA123",
                    "tracks": ["inbound"],
                    "customParameters": {"FirstName": "Jane"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                },
                "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0"
            })
        );
        assert_eq!(
            value(&encode_media(3, "MZ1", 2, 20, &[0xFF, 0x7F])),
            json!({
                "event": "media", "sequenceNumber": "3",
                "media": {"track": "inbound", "chunk": "2", "timestamp": "20", "payload": "/38="},
                "streamSid": "MZ1"
            })
        );
        assert_eq!(
            value(&encode_dtmf(5, "MZ1", '1')),
            json!({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5",
                   "dtmf": {"track": "inbound_track", "digit": "1"}})
        );
        assert_eq!(
            value(&encode_mark(4, "MZ1", "my label")),
            json!({"event": "mark", "streamSid": "MZ1", "sequenceNumber": "4",
                   "mark": {"name": "my label"}})
        );
        assert_eq!(
            value(&encode_stop(6, "MZ1", "AC1", "CA1")),
            json!({"event": "stop", "sequenceNumber": "6", "streamSid": "MZ1",
                   "stop": {"accountSid": "AC1", "callSid": "CA1"}})
        );
    }

    #[test]
    fn decodes_agent_messages_from_twilio_docs() {
        let media = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/38="}}"#;
        assert_eq!(
            decode(media).unwrap(),
            Inbound::Media { stream_sid: Some("MZ1".into()), ulaw: vec![0xFF, 0x7F] }
        );
        let mark = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"my label"}}"#;
        assert_eq!(
            decode(mark).unwrap(),
            Inbound::Mark { stream_sid: Some("MZ1".into()), name: "my label".into() }
        );
        let clear = r#"{"event":"clear","streamSid":"MZ1"}"#;
        assert_eq!(decode(clear).unwrap(), Inbound::Clear { stream_sid: Some("MZ1".into()) });
        assert_eq!(decode(r#"{"event":"hello","x":1}"#).unwrap(), Inbound::Unknown("hello".into()));
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(decode("{not json"), Err(ProtocolError::Json(_))));
        assert_eq!(decode(r#"{"x":1}"#), Err(ProtocolError::MissingType("event")));
        assert_eq!(decode(r#"{"event":7}"#), Err(ProtocolError::MissingType("event")));
        assert_eq!(
            decode(r#"{"event":"media","media":{"payload":"!!!"}}"#),
            Err(ProtocolError::Base64("media".into()))
        );
        assert!(matches!(
            decode(r#"{"event":"media","media":{}}"#),
            Err(ProtocolError::BadField { .. })
        ));
        assert!(matches!(decode(r#"{"event":"mark"}"#), Err(ProtocolError::BadField { .. })));
        let big = encode_agent_media("MZ1", &vec![0u8; 300 * 1024]);
        assert!(matches!(decode(&big), Err(ProtocolError::Oversize { .. })));
        assert!(decode_with_limit(&big, 1 << 20).is_ok());
    }

    #[test]
    fn every_message_round_trips() {
        let info = StartInfo {
            stream_sid: "MZ9".into(),
            account_sid: "AC9".into(),
            call_sid: "CA9".into(),
            custom_parameters: [("resumed".to_string(), "true".to_string())].into(),
        };
        let texts = [
            encode_connected(),
            encode_start(1, &info),
            encode_media(2, "MZ9", 1, 0, &[1, 2, 3]),
            encode_dtmf(3, "MZ9", '#'),
            encode_mark(4, "MZ9", "m"),
            encode_stop(5, "MZ9", "AC9", "CA9"),
            encode_agent_media("MZ9", &[9; 160]),
            encode_agent_mark("MZ9", "x"),
            encode_clear("MZ9"),
        ];
        for text in texts {
            let msg = parse_message(&text, DEFAULT_MAX_FRAME).unwrap().unwrap();
            assert_eq!(value(&encode(&msg)), value(&text), "{text}");
        }
        assert_eq!(parse_message(r#"{"event":"other"}"#, 100).unwrap(), None);
    }

    #[test]
    fn fuzzish_inputs_never_panic() {
        let mut rng = SmallRng::seed_from_u64(0xF022);
        let seeds = [
            encode_agent_media("MZ1", &[1, 2, 3, 4]),
            encode_agent_mark("MZ1", "m1"),
            encode_clear("MZ1"),
            encode_start(1, &StartInfo::default()),
        ];
        let alphabet = br#"{}[]":,\0123456789abcdefeventmediapayloadmark /+=-."#;
        for i in 0..5000 {
            let mut bytes = seeds[i % seeds.len()].clone().into_bytes();
            for _ in 0..rng.gen_range(1..6) {
                let pos = rng.gen_range(0..=bytes.len());
                match rng.gen_range(0..3) {
                    0 if pos < bytes.len() => {
                        bytes.remove(pos);
                    }
                    1 => bytes.insert(pos, alphabet[rng.gen_range(0..alphabet.len())]),
                    _ if pos < bytes.len() => bytes[pos] = rng.gen(),
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = decode_with_limit(&text, 4096);
            let random: String = (0..rng.gen_range(0..64)).map(|_| rng.gen::<char>()).collect();
            let _ = decode(&random);
        }
    }
}

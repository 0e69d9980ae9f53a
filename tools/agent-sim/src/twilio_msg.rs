//! Twilio Media Streams messages as the agent's server sees them, written from Twilio's
//! "Media Streams - WebSocket Messages" document: JSON text frames with an `event` field.
//!
//! From Twilio (the bridge): `connected` (protocol, version), `start` (`streamSid`, and in
//! `start`: `callSid`, `accountSid`, `tracks`, `mediaFormat`, `customParameters`), `media`
//! (`media.payload`: base64 μ-law, 8 kHz, mono), `dtmf` (`dtmf.digit`), `mark` (`mark.name`, once
//! the audio before it played) and `stop`. To Twilio (the agent): `media`, `mark` and `clear`,
//! each with the `streamSid`.

use serde_json::{json, Value};

/// A message from the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromBridge {
    Connected,
    Start(Start),
    Media {
        /// Absent on some bridges; the `start`'s is used then.
        stream_sid: Option<String>,
        /// Base64 of μ-law bytes.
        payload: String,
    },
    Dtmf {
        digit: String,
    },
    Mark {
        name: String,
    },
    Stop,
    /// An event this simulator does not act on (named).
    Other(String),
}

impl FromBridge {
    /// The `event` name, for logs.
    pub fn name(&self) -> &str {
        match self {
            FromBridge::Connected => "connected",
            FromBridge::Start(_) => "start",
            FromBridge::Media { .. } => "media",
            FromBridge::Dtmf { .. } => "dtmf",
            FromBridge::Mark { .. } => "mark",
            FromBridge::Stop => "stop",
            FromBridge::Other(name) => name,
        }
    }
}

/// The `start` message's fields the simulator uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub stream_sid: String,
    pub call_sid: String,
    /// `customParameters.resumed` is `true` or `1`: the bridge resumes a call after failover.
    pub resumed: bool,
    /// `customParameters.trunkguard_probe` is `1`: a health probe, not a call.
    pub probe: bool,
}

/// Why a frame is not a usable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("no `event` field")]
    NoEvent,
    #[error("`{event}` without `{field}`")]
    Missing { event: &'static str, field: &'static str },
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<FromBridge, TwilioParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| TwilioParseError::Json(e.to_string()))?;
    let event = v.get("event").and_then(Value::as_str).ok_or(TwilioParseError::NoEvent)?;
    let top_sid = v.get("streamSid").and_then(Value::as_str).map(str::to_owned);
    Ok(match event {
        "connected" => FromBridge::Connected,
        "start" => FromBridge::Start(start(&v, top_sid)?),
        "media" => FromBridge::Media {
            stream_sid: top_sid,
            payload: text_at(&v, "/media/payload", "media", "media.payload")?,
        },
        "dtmf" => FromBridge::Dtmf { digit: text_at(&v, "/dtmf/digit", "dtmf", "dtmf.digit")? },
        "mark" => FromBridge::Mark { name: text_at(&v, "/mark/name", "mark", "mark.name")? },
        "stop" => FromBridge::Stop,
        other => FromBridge::Other(other.to_owned()),
    })
}

fn start(v: &Value, top_sid: Option<String>) -> Result<Start, TwilioParseError> {
    let stream_sid = match top_sid {
        Some(sid) => sid,
        None => text_at(v, "/start/streamSid", "start", "streamSid")?,
    };
    let call_sid = text_at(v, "/start/callSid", "start", "start.callSid")?;
    let resumed = v
        .pointer("/start/customParameters/resumed")
        .and_then(Value::as_str)
        .is_some_and(|r| r.eq_ignore_ascii_case("true") || r == "1");
    let probe = v
        .pointer("/start/customParameters/trunkguard_probe")
        .and_then(Value::as_str)
        .is_some_and(|p| p == "1");
    Ok(Start { stream_sid, call_sid, resumed, probe })
}

fn text_at(
    v: &Value,
    pointer: &str,
    event: &'static str,
    field: &'static str,
) -> Result<String, TwilioParseError> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(TwilioParseError::Missing { event, field })
}

/// Agent audio: `payload` is base64 of μ-law bytes.
pub fn media(stream_sid: &str, payload: &str) -> String {
    json!({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}).to_string()
}

/// A mark after the audio sent so far.
pub fn mark(stream_sid: &str, name: &str) -> String {
    json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).to_string()
}

/// Barge-in: the bridge drops the agent audio it has not played yet.
pub fn clear(stream_sid: &str) -> String {
    json!({"event": "clear", "streamSid": stream_sid}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        assert_eq!(parse(connected), Ok(FromBridge::Connected));
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1",
            "streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":
            {"resumed":"true"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,
            "channels":1}},"streamSid":"MZ1"}"#;
        let want =
            Start { stream_sid: "MZ1".into(), call_sid: "CA1".into(), resumed: true, probe: false };
        assert_eq!(parse(start), Ok(FromBridge::Start(want)));
        let media = r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound",
            "chunk":"1","timestamp":"5","payload":"/////w=="},"streamSid":"MZ1"}"#;
        assert_eq!(
            parse(media),
            Ok(FromBridge::Media { stream_sid: Some("MZ1".into()), payload: "/////w==".into() })
        );
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5",
            "dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert_eq!(parse(dtmf), Ok(FromBridge::Dtmf { digit: "1".into() }));
        let mark = r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1",
            "mark":{"name":"greeting-1"}}"#;
        assert_eq!(parse(mark), Ok(FromBridge::Mark { name: "greeting-1".into() }));
        let stop = r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1",
            "stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert_eq!(parse(stop), Ok(FromBridge::Stop));
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(parse("{"), Err(TwilioParseError::Json(_))));
        assert_eq!(parse(r#"{"x":1}"#), Err(TwilioParseError::NoEvent));
        assert!(matches!(
            parse(r#"{"event":"media","media":{}}"#),
            Err(TwilioParseError::Missing { .. })
        ));
        assert_eq!(parse(r#"{"event":"future"}"#), Ok(FromBridge::Other("future".into())));
    }

    #[test]
    fn agent_messages_have_the_documented_shape() {
        let m: Value = serde_json::from_str(&media("MZ1", "AAAA")).unwrap();
        assert_eq!(m, json!({"event":"media","streamSid":"MZ1","media":{"payload":"AAAA"}}));
        let k: Value = serde_json::from_str(&mark("MZ1", "m")).unwrap();
        assert_eq!(k, json!({"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}));
        let c: Value = serde_json::from_str(&clear("MZ1")).unwrap();
        assert_eq!(c, json!({"event":"clear","streamSid":"MZ1"}));
    }
}

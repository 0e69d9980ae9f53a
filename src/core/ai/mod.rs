//! The sans-IO core of the AI bridge: each answered call is bridged to a cloud voice agent over
//! a WebSocket. This module owns the policy and the protocols, never the socket:
//!
//! - [`breaker`]: a circuit breaker per agent endpoint, on an injected clock.
//! - [`selector`]: call setup — primary or standby, retries with jittered backoff inside a
//!   hard time budget, else fall back to the canned prompt.
//! - [`twilio`] and [`openai`]: typed messages of the two wire protocols (Twilio Media Streams,
//!   OpenAI Realtime), JSON encoders and panic-free decoders.
//! - [`session`]: the per-call bridge state machine over one connected endpoint.
//! - [`guard`]: what one agent may send per call (rates, marks, queued audio).
//!
//! The I/O layer (tokio-tungstenite) feeds text frames in, drains text frames out, maps binary
//! frames to [`ProtocolError::Binary`] and reports connect outcomes as [`FailureKind`].

pub mod breaker;
pub mod guard;
pub mod openai;
pub mod selector;
pub mod session;
pub mod twilio;

pub use breaker::{BreakerChange, BreakerConfig, BreakerState, ChangeCause, CircuitBreaker};
pub use selector::{Action, AiBreakers, AttemptId, Endpoint, SelectorConfig, SetupAttempt};
pub use session::{
    AiAudio, AiEvent, AiProtocol, AiSession, CallInfo, OpenAiFormat, OpenAiSettings, Role,
    SessionConfig, SessionError, Transcript, TranscriptEntry,
};

/// Largest text frame accepted from an agent by default (256 KiB).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024;

/// Why a connection to an agent endpoint failed or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// TCP or WebSocket handshake did not complete in time.
    ConnectTimeout,
    /// The TCP connection was refused (nothing listens there).
    Refused,
    /// TLS handshake or certificate failure.
    Tls,
    /// The WebSocket upgrade was answered with this HTTP status.
    HttpStatus(u16),
    /// The agent broke the protocol (undecodable frames, binary frames, wrong sequence).
    Protocol,
    /// The connection dropped without a close handshake, or closed with an error code.
    Dropped,
    /// The live agent stopped answering (no audio, marks or pongs within the stall timeout).
    Stalled,
    /// A clean WebSocket close (code 1000): not a failure of the endpoint.
    CleanClose,
}

/// How an outcome counts for a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint works.
    Success,
    /// The endpoint is unavailable: counts toward tripping.
    Failure,
    /// Says nothing about availability (e.g. 401/404: the endpoint answered).
    Neutral,
}

impl FailureKind {
    /// Availability verdict: 429 and 5xx are failures, other HTTP statuses are neutral, a clean
    /// close proves the endpoint worked.
    pub fn verdict(self) -> Verdict {
        match self {
            FailureKind::CleanClose => Verdict::Success,
            FailureKind::HttpStatus(s) if s == 429 || (500..=599).contains(&s) => Verdict::Failure,
            FailureKind::HttpStatus(_) => Verdict::Neutral,
            FailureKind::ConnectTimeout
            | FailureKind::Refused
            | FailureKind::Stalled
            | FailureKind::Tls
            | FailureKind::Protocol
            | FailureKind::Dropped => Verdict::Failure,
        }
    }
}

impl FailureKind {
    /// What happened, naming the endpoint (its configured name): for the log and the status
    /// page's recent failures.
    pub fn describe(self, endpoint: &str) -> String {
        match self {
            FailureKind::ConnectTimeout => format!("no connection to {endpoint} in time"),
            FailureKind::Refused => format!("connection refused by {endpoint}"),
            FailureKind::Tls => format!("TLS handshake with {endpoint} failed"),
            FailureKind::HttpStatus(s) => format!("{endpoint} answered with HTTP {s}"),
            FailureKind::Protocol => format!("{endpoint} broke the protocol"),
            FailureKind::Dropped => format!("connection to {endpoint} dropped"),
            FailureKind::Stalled => format!("{endpoint} stopped answering"),
            FailureKind::CleanClose => format!("{endpoint} closed the stream cleanly"),
        }
    }
}

/// A frame from an agent that could not be used. Decoders return it; they never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversize { len: usize, max: usize },
    /// Both protocols are JSON text only; the I/O layer maps binary frames to this.
    #[error("binary frames are not part of the protocol")]
    Binary,
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("message has no string `{0}` field")]
    MissingType(&'static str),
    #[error("bad `{kind}` message: {detail}")]
    BadField { kind: String, detail: String },
    #[error("invalid base64 audio in `{0}`")]
    Base64(String),
    #[error("PCM16 audio in `{0}` has an odd number of bytes")]
    OddPcm(String),
}

/// Parses `text` as a JSON object and returns it with the string under `tag`.
fn parse_tagged(
    text: &str,
    max: usize,
    tag: &'static str,
) -> Result<(serde_json::Value, String), ProtocolError> {
    if text.len() > max {
        return Err(ProtocolError::Oversize { len: text.len(), max });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let kind = value
        .get(tag)
        .and_then(serde_json::Value::as_str)
        .ok_or(ProtocolError::MissingType(tag))?
        .to_owned();
    Ok((value, kind))
}

/// Deserializes a whole message of a known kind.
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    kind: &str,
) -> Result<T, ProtocolError> {
    serde_json::from_value(value)
        .map_err(|e| ProtocolError::BadField { kind: kind.to_owned(), detail: e.to_string() })
}

fn b64_decode(data: &str, kind: &str) -> Result<Vec<u8>, ProtocolError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| ProtocolError::Base64(kind.to_owned()))
}

fn b64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// JSON text of a message. Our message types have only string keys and no floats, so
/// serialization cannot fail; the fallback is never produced in practice.
fn to_json<T: serde::Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(FailureKind::CleanClose.verdict(), Verdict::Success);
        assert_eq!(FailureKind::HttpStatus(429).verdict(), Verdict::Failure);
        assert_eq!(FailureKind::HttpStatus(503).verdict(), Verdict::Failure);
        assert_eq!(FailureKind::HttpStatus(401).verdict(), Verdict::Neutral);
        assert_eq!(FailureKind::Dropped.verdict(), Verdict::Failure);
        assert_eq!(FailureKind::Tls.verdict(), Verdict::Failure);
        assert_eq!(FailureKind::Refused.verdict(), Verdict::Failure);
        assert_eq!(FailureKind::Stalled.verdict(), Verdict::Failure);
    }

    #[test]
    fn descriptions_name_the_endpoint_and_the_cause() {
        assert_eq!(FailureKind::Refused.describe("eu-agent"), "connection refused by eu-agent");
        assert_eq!(FailureKind::HttpStatus(503).describe("b"), "b answered with HTTP 503");
        assert_eq!(FailureKind::ConnectTimeout.describe("b"), "no connection to b in time");
    }

    #[test]
    fn parse_tagged_rejects_before_parsing_oversize() {
        let big = format!("{{\"event\":\"x\",\"p\":\"{}\"}}", "a".repeat(100));
        assert_eq!(
            parse_tagged(&big, 50, "event").unwrap_err(),
            ProtocolError::Oversize { len: big.len(), max: 50 }
        );
        assert_eq!(
            parse_tagged("[1,2]", 50, "event").unwrap_err(),
            ProtocolError::MissingType("event")
        );
    }
}

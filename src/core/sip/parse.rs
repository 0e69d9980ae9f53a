//! Parsing wire bytes into a [`SipMessage`]: start line, header unfolding, compact-name
//! expansion, body by Content-Length, and the validation rsip alone does not do.
//!
//! (Minimal version: being hardened against RFC 4475 / RFC 5118.)

use thiserror::Error;

use super::headers::{self, CSeq, HeaderError, NameAddr, Via};
use super::message::{Headers, Method, Request, Response, SipMessage};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("message is not UTF-8 in its head")]
    NotUtf8,
    #[error("no blank line ends the headers")]
    Incomplete,
    #[error("bad start line: {0}")]
    StartLine(String),
    #[error("bad header line: {0}")]
    HeaderLine(String),
    #[error("unsupported SIP version {0}")]
    Version(String),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("Content-Length {declared} but {actual} body bytes")]
    BodyLength { declared: usize, actual: usize },
}

/// Expands a compact header name (RFC 3261 §7.3.3) to its long form.
pub fn expand_compact(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "k" | "K" => "Supported",
        "s" | "S" => "Subject",
        "e" | "E" => "Content-Encoding",
        other => other,
    }
}

/// Parses one complete datagram (or one framed stream message).
pub fn parse_message(buf: &[u8]) -> Result<SipMessage, ParseError> {
    let head_end = find_head_end(buf).ok_or(ParseError::Incomplete)?;
    let head = std::str::from_utf8(&buf[..head_end.0]).map_err(|_| ParseError::NotUtf8)?;
    let body = &buf[head_end.1..];
    let mut lines = unfold(head);
    if lines.is_empty() {
        return Err(ParseError::StartLine("empty".into()));
    }
    let start = lines.remove(0);
    let mut headers = Headers::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::HeaderLine(line.clone()))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::HeaderLine(line.clone()));
        }
        headers.push(expand_compact(name).to_string(), value.trim().to_string());
    }
    let body = take_body(&headers, body)?;
    let msg = build(&start, headers, body)?;
    validate(&msg)?;
    Ok(msg)
}

/// Position of the end of the head and the start of the body.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
}

/// Splits the head into logical lines, joining continuation lines (leading SP/HT).
fn unfold(head: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if (line.starts_with(' ') || line.starts_with('\t')) && !out.is_empty() {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            out.push(line.to_string());
        }
    }
    out
}

fn take_body(headers: &Headers, rest: &[u8]) -> Result<Vec<u8>, ParseError> {
    match headers.get("Content-Length") {
        Some(v) => {
            let declared: usize = v
                .trim()
                .parse()
                .map_err(|_| HeaderError::Malformed { header: "Content-Length", reason: v.to_string() })?;
            if declared > rest.len() {
                return Err(ParseError::BodyLength { declared, actual: rest.len() });
            }
            Ok(rest[..declared].to_vec())
        }
        None => Ok(rest.to_vec()),
    }
}

fn build(start: &str, headers: Headers, body: Vec<u8>) -> Result<SipMessage, ParseError> {
    if let Some(rest) = start.strip_prefix("SIP/") {
        let mut it = rest.splitn(3, ' ');
        let version = it.next().unwrap_or_default();
        if version != "2.0" {
            return Err(ParseError::Version(version.to_string()));
        }
        let status = it
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..700).contains(s))
            .ok_or_else(|| ParseError::StartLine(start.to_string()))?;
        let reason = it.next().unwrap_or_default().to_string();
        return Ok(SipMessage::Response(Response { status, reason, headers, body }));
    }
    let mut it = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(ParseError::StartLine(start.to_string()));
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::Version(version.to_string()));
    }
    if method.is_empty() || uri.is_empty() || !uri.contains(':') {
        return Err(ParseError::StartLine(start.to_string()));
    }
    Ok(SipMessage::Request(Request {
        method: Method::from_token(method),
        uri: uri.to_string(),
        headers,
        body,
    }))
}

/// The mandatory headers every message must carry in a usable form.
fn validate(msg: &SipMessage) -> Result<(), ParseError> {
    let h = msg.headers();
    let via = h.get("Via").ok_or(HeaderError::Missing("Via"))?;
    Via::parse_all(via)?;
    headers::call_id(h.get("Call-ID").ok_or(HeaderError::Missing("Call-ID"))?)?;
    let cseq = CSeq::parse(h.get("CSeq").ok_or(HeaderError::Missing("CSeq"))?)?;
    NameAddr::parse(h.get("From").ok_or(HeaderError::Missing("From"))?)?;
    NameAddr::parse(h.get("To").ok_or(HeaderError::Missing("To"))?)?;
    if let SipMessage::Request(r) = msg {
        if cseq.method != r.method {
            return Err(ParseError::Header(HeaderError::Malformed {
                header: "CSeq",
                reason: "method does not match the request line".into(),
            }));
        }
    }
    Ok(())
}

/// Typed access to the headers every transaction and dialog needs. Messages that came out of
/// [`parse_message`] have passed validation, so these only fail on messages built by hand.
pub trait SipHeaders {
    fn headers_ref(&self) -> &Headers;

    fn top_via(&self) -> Result<Via, HeaderError> {
        let v = self.headers_ref().get("Via").ok_or(HeaderError::Missing("Via"))?;
        Via::parse_all(v)?
            .into_iter()
            .next()
            .ok_or(HeaderError::Missing("Via"))
    }

    fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.headers_ref().get("CSeq").ok_or(HeaderError::Missing("CSeq"))?)
    }

    fn call_id(&self) -> Result<&str, HeaderError> {
        headers::call_id(self.headers_ref().get("Call-ID").ok_or(HeaderError::Missing("Call-ID"))?)
    }

    fn from_hdr(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.headers_ref().get("From").ok_or(HeaderError::Missing("From"))?)
    }

    fn to_hdr(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.headers_ref().get("To").ok_or(HeaderError::Missing("To"))?)
    }

    fn contact(&self) -> Option<NameAddr> {
        self.headers_ref().get("Contact").and_then(|c| NameAddr::parse(c).ok())
    }
}

impl SipHeaders for Request {
    fn headers_ref(&self) -> &Headers {
        &self.headers
    }
}

impl SipHeaders for Response {
    fn headers_ref(&self) -> &Headers {
        &self.headers
    }
}

impl SipHeaders for SipMessage {
    fn headers_ref(&self) -> &Headers {
        self.headers()
    }
}

//! Parsing wire bytes into a [`SipMessage`]: start line, header unfolding, compact-name
//! expansion, body by Content-Length, and the validation the grammar requires.
//!
//! Conformance: every message of RFC 4475 and RFC 5118 is classified as the RFCs ask
//! (see `tests/torture.rs`). Policy rejections of well-formed requests (416, 420, 483, ...)
//! live in [`super::validate`].

use thiserror::Error;

use super::headers::syntax;
use super::headers::{self, CSeq, Contact, HeaderError, NameAddr, Uri, Via};
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
    /// A well-formed `SIP/x.y` other than 2.0: answer 505.
    #[error("unsupported SIP version {0}")]
    Version(String),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("Content-Length {declared} but {actual} body bytes")]
    BodyLength { declared: usize, actual: usize },
    #[error("bad Request-URI: {0}")]
    RequestUri(String),
    /// A header that must appear once (Call-ID, CSeq, From, To, Content-Length) appears again.
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    #[error("CSeq method {cseq} does not match request method {method}")]
    MethodMismatch { method: String, cseq: String },
}

impl ParseError {
    /// Status a UAS answers with when a request fails to parse (if it can answer at all, see
    /// [`parse_headers_lenient`]): 505 for an unsupported version, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version(_) => 505,
            _ => 400,
        }
    }
}

/// Headers that must appear at most once; a second copy makes the message ambiguous.
const SINGLE: [&str; 5] = ["Call-ID", "CSeq", "From", "To", "Content-Length"];

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
        "o" | "O" => "Event",
        "r" | "R" => "Refer-To",
        "u" | "U" => "Allow-Events",
        other => other,
    }
}

/// Parses one complete datagram (or one framed stream message).
///
/// Strict per RFC 3261 §25 as exercised by RFC 4475 §3.1: the start line must be exactly
/// `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP reason`; header names are
/// tokens; folded lines are unfolded; Via, From, To, Contact, Call-ID and CSeq must parse;
/// Call-ID/CSeq/From/To/Content-Length appear once; a request's CSeq method matches. The body
/// is cut to Content-Length (bytes after it, e.g. a second message in one datagram, are
/// ignored); without Content-Length the body runs to the end (RFC 2543 datagrams).
pub fn parse_message(buf: &[u8]) -> Result<SipMessage, ParseError> {
    let buf = skip_leading_crlf(buf);
    let head_end = find_head_end(buf).ok_or(ParseError::Incomplete)?;
    let head = std::str::from_utf8(&buf[..head_end.0]).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = unfold(head).into_iter();
    let start = lines.next().ok_or_else(|| ParseError::StartLine("empty".into()))?;
    let mut headers = Headers::new();
    for line in lines {
        let (name, value) =
            split_header_line(&line).ok_or_else(|| ParseError::HeaderLine(line.clone()))?;
        headers.push(expand_compact(name).to_string(), value.to_string());
    }
    let body = take_body(&headers, &buf[head_end.1..])?;
    let msg = build(&start, headers, body)?;
    validate(&msg)?;
    Ok(msg)
}

fn skip_leading_crlf(buf: &[u8]) -> &[u8] {
    let n = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    &buf[n..]
}

/// `name HCOLON value`: name is a token, optionally followed by SP/HTAB before the colon.
fn split_header_line(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim_end_matches([' ', '\t']);
    syntax::is_token(name).then(|| (name, value.trim_matches([' ', '\t'])))
}

/// Position of the end of the head and the start of the body.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Splits the head into logical lines, joining continuation lines (leading SP/HT) with one SP.
fn unfold(head: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        match out.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                let cont = line.trim_matches([' ', '\t']);
                if !cont.is_empty() {
                    last.truncate(last.trim_end_matches([' ', '\t']).len());
                    last.push(' ');
                    last.push_str(cont);
                }
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

fn take_body(headers: &Headers, rest: &[u8]) -> Result<Vec<u8>, ParseError> {
    if headers.count("Content-Length") > 1 {
        return Err(ParseError::Duplicate("Content-Length"));
    }
    match headers.get("Content-Length") {
        Some(v) => {
            let declared = headers::content_length(v)?;
            if declared > rest.len() {
                return Err(ParseError::BodyLength { declared, actual: rest.len() });
            }
            Ok(rest[..declared].to_vec())
        }
        None => Ok(rest.to_vec()),
    }
}

/// Classifies a `SIP/x.y` token: Ok for 2.0, `Version` for another well-formed version.
fn check_version(v: &str, line: &str) -> Result<(), ParseError> {
    let Some(num) = v.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/")).map(|_| &v[4..]) else {
        return Err(ParseError::StartLine(line.to_string()));
    };
    if num == "2.0" {
        return Ok(());
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match num.split_once('.') {
        Some((a, b)) if digits(a) && digits(b) => Err(ParseError::Version(v.to_string())),
        _ => Err(ParseError::StartLine(line.to_string())),
    }
}

fn build(start: &str, headers: Headers, body: Vec<u8>) -> Result<SipMessage, ParseError> {
    if start.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        return build_response(start, headers, body);
    }
    let mut it = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(ParseError::StartLine(start.to_string()));
    };
    check_version(version, start)?;
    if !syntax::is_token(method) {
        return Err(ParseError::StartLine(start.to_string()));
    }
    Uri::parse(uri).map_err(|e| ParseError::RequestUri(e.to_string()))?;
    Ok(SipMessage::Request(Request {
        method: Method::from_token(method),
        uri: uri.to_string(),
        headers,
        body,
    }))
}

fn build_response(start: &str, headers: Headers, body: Vec<u8>) -> Result<SipMessage, ParseError> {
    let mut it = start.splitn(3, ' ');
    let version = it.next().unwrap_or_default();
    check_version(version, start)?;
    let code = it.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::StartLine(start.to_string()));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..700).contains(s))
        .ok_or_else(|| ParseError::StartLine(start.to_string()))?;
    let reason = it.next().unwrap_or_default();
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::StartLine(start.to_string()));
    }
    Ok(SipMessage::Response(Response { status, reason: reason.to_string(), headers, body }))
}

fn required<'a>(h: &'a Headers, name: &'static str) -> Result<&'a str, ParseError> {
    h.get(name).ok_or(ParseError::Header(HeaderError::Missing(name)))
}

/// The mandatory headers every message must carry in a usable form.
fn validate(msg: &SipMessage) -> Result<(), ParseError> {
    let h = msg.headers();
    for name in SINGLE {
        if h.count(name) > 1 {
            return Err(ParseError::Duplicate(name));
        }
    }
    if h.count("Via") == 0 {
        return Err(HeaderError::Missing("Via").into());
    }
    for via in h.get_all("Via") {
        Via::parse_all(via)?;
    }
    headers::call_id(required(h, "Call-ID")?)?;
    let cseq = CSeq::parse(required(h, "CSeq")?)?;
    NameAddr::parse_for("From", required(h, "From")?)?;
    NameAddr::parse_for("To", required(h, "To")?)?;
    Contact::parse_lines(h.get_all("Contact"))?;
    if let SipMessage::Request(r) = msg {
        if cseq.method != r.method {
            return Err(ParseError::MethodMismatch {
                method: r.method.to_string(),
                cseq: cseq.method.to_string(),
            });
        }
    }
    Ok(())
}

/// Best-effort recovery of what a UAS needs to answer an unparseable request with 400 (or 505):
/// the Via lines (copied verbatim, the top one must parse, since the response goes there) and
/// the first From, To, Call-ID and CSeq lines as received, compact names expanded.
///
/// Returns `None` when no response may or can be sent: the bytes look like a response, the
/// request is an ACK (never answered), or the top Via has no usable sent-protocol and sent-by
/// (its parameters and SIP version are not checked). Other values are not validated; they are
/// echoed as received, as RFC 3261 §8.2.6 asks. Build the answer with
/// [`super::validate::Rejection::response_for`] and [`ParseError::status`].
pub fn parse_headers_lenient(buf: &[u8]) -> Option<Headers> {
    let buf = skip_leading_crlf(buf);
    let head = match find_head_end(buf) {
        Some((end, _)) => &buf[..end],
        None => buf,
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = unfold(&head).into_iter();
    let start = lines.next()?;
    if start.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) || start.starts_with("ACK ") {
        return None;
    }
    let mut out = Headers::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = expand_compact(name.trim());
        let value = value.trim();
        let wanted = ["Via", "From", "To", "Call-ID", "CSeq"]
            .into_iter()
            .find(|w| w.eq_ignore_ascii_case(name));
        match wanted {
            Some("Via") if !value.is_empty() => out.push("Via", value),
            Some(w) if out.get(w).is_none() && !value.is_empty() => out.push(w, value),
            _ => {}
        }
    }
    if !usable_via(out.get("Via")?) {
        return None;
    }
    if out.get("CSeq").is_some_and(|c| c.split_whitespace().nth(1) == Some("ACK")) {
        return None;
    }
    Some(out)
}

/// Whether a Via line's first value has a sent-protocol and sent-by a response can be routed
/// by. Its parameters and SIP version are not checked, so a 400 can answer a broken parameter
/// list and a 505 can reach a `SIP/7.0` sender.
fn usable_via(line: &str) -> bool {
    let v = first_value(line).trim();
    let v = v.split(';').next().unwrap_or_default();
    let normalized = match v.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/")) {
        Some(_) => match v[4..].split_once('/') {
            Some((_, rest)) => format!("SIP/2.0/{rest}"),
            None => return false,
        },
        None => return false,
    };
    Via::parse_one(&normalized).is_ok()
}

/// The first comma-separated value of a header line (commas inside quotes do not count).
fn first_value(v: &str) -> &str {
    let mut in_quotes = false;
    for (i, c) in v.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => return &v[..i],
            _ => {}
        }
    }
    v
}

/// Typed access to the headers every transaction and dialog needs. Messages that came out of
/// [`parse_message`] have passed validation, so these only fail on messages built by hand.
pub trait SipHeaders {
    fn headers_ref(&self) -> &Headers;

    fn top_via(&self) -> Result<Via, HeaderError> {
        let v = self.headers_ref().get("Via").ok_or(HeaderError::Missing("Via"))?;
        Via::parse_all(v)?.into_iter().next().ok_or(HeaderError::Missing("Via"))
    }

    fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.headers_ref().get("CSeq").ok_or(HeaderError::Missing("CSeq"))?)
    }

    fn call_id(&self) -> Result<&str, HeaderError> {
        headers::call_id(self.headers_ref().get("Call-ID").ok_or(HeaderError::Missing("Call-ID"))?)
    }

    #[allow(clippy::wrong_self_convention)] // the From header, not a conversion
    fn from_hdr(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.headers_ref().get("From").ok_or(HeaderError::Missing("From"))?)
    }

    fn to_hdr(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.headers_ref().get("To").ok_or(HeaderError::Missing("To"))?)
    }

    /// The first Contact value (of possibly several).
    fn contact(&self) -> Option<NameAddr> {
        self.contacts().ok().flatten().and_then(|c| c.first().cloned())
    }

    /// Every Contact value of every Contact line; `None` when there is no Contact.
    fn contacts(&self) -> Result<Option<Contact>, HeaderError> {
        Contact::parse_lines(self.headers_ref().get_all("Contact"))
    }

    /// Max-Forwards; `None` when absent (RFC 2543 peers omit it).
    fn max_forwards(&self) -> Option<Result<u8, HeaderError>> {
        self.headers_ref().get("Max-Forwards").map(headers::max_forwards)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_and_expands() {
        let raw = b"\r\nOPTIONS sip:a@example.com SIP/2.0\r\nv: SIP/2.0/UDP h.example.com\r\n ;branch=z9hG4bK1\r\n\
                    f: <sip:b@example.com>;tag=1\r\nt: sip:a@example.com\r\ni: x\r\nCSeq :\r\n  1\r\n\tOPTIONS\r\nl: 0\r\n\r\n";
        let m = parse_message(raw).unwrap();
        assert_eq!(m.headers().get("CSeq"), Some("1 OPTIONS"));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(m.call_id(), Ok("x"));
    }

    #[test]
    fn error_statuses() {
        assert_eq!(ParseError::Version("SIP/7.0".into()).status(), 505);
        assert_eq!(ParseError::Incomplete.status(), 400);
        let r = parse_message(b"OPTIONS sip:a@b.com SIP/3.1\r\n\r\n").unwrap_err();
        assert_eq!(r, ParseError::Version("SIP/3.1".into()));
        let r = parse_message(b"OPTIONS sip:a@b.com SIPX\r\n\r\n").unwrap_err();
        assert!(matches!(r, ParseError::StartLine(_)));
    }

    #[test]
    fn lenient_recovery() {
        let raw = b"INVITE sip:a@b.com SIP/7.0\r\nVia: SIP/7.0/UDP c.example.com;;\r\nVia: SIP/2.0/UDP d.example.com\r\n\
                    To: broken \"\r\nCSeq: 1 INVITE\r\nCall-ID: z\r\nCall-ID: y\r\n";
        let h = parse_headers_lenient(raw).unwrap();
        assert_eq!(h.count("Via"), 2);
        assert_eq!(h.get("To"), Some("broken \""));
        assert_eq!(h.get_all("Call-ID").collect::<Vec<_>>(), vec!["z"]);
        assert!(
            parse_headers_lenient(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a.com\r\n\r\n").is_none()
        );
        assert!(parse_headers_lenient(
            b"ACK sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/UDP a.com\r\n\r\n"
        )
        .is_none());
        assert!(parse_headers_lenient(
            b"FOO sip:a@b.com SIP/2.0\r\nCSeq: 1 ACK\r\nVia: SIP/2.0/UDP a.com\r\n\r\n"
        )
        .is_none());
        assert!(
            parse_headers_lenient(b"INVITE sip:a@b.com SIP/2.0\r\nVia: garbage\r\n\r\n").is_none()
        );
        assert!(parse_headers_lenient(b"").is_none());
    }
}

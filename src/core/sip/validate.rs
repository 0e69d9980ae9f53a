//! UAS checks of a request that parsed but must still be refused (RFC 3261 §8.2, RFC 4475
//! §3.1.2 / §3.3): which final response to send, with the extra headers it needs
//! (`Unsupported` for 420, `Accept` for 415).
//!
//! Order follows RFC 3261 §8.2: malformed-but-parseable (400), Max-Forwards (483), URI scheme
//! (416), extensions (420), body type (415), acceptable response bodies (406).
//!
//! ACK is never answered: a caller that gets `Err` for an ACK drops the ACK silently.

use super::headers::{self, Accept, MediaType, NameAddr, SipDate, Uri};
use super::message::{reason_phrase, Header, Headers, Method, Request, Response};
use super::parse::{ParseError, SipHeaders};

/// The final response a UAS must send instead of processing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    /// Headers the response must carry besides the copied ones (e.g. `Unsupported`).
    pub headers: Vec<Header>,
}

impl Rejection {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejection { status, reason: reason.into(), headers: Vec::new() }
    }

    fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(Header { name: name.to_string(), value: value.into() });
        self
    }

    fn bad(why: impl std::fmt::Display) -> Self {
        Rejection::new(400, format!("Bad Request ({why})"))
    }

    /// Builds the response (RFC 3261 §8.2.6): Via lines, From, To (plus `to_tag` when it has
    /// none), Call-ID and CSeq copied from `request_headers` — either a parsed request's
    /// headers or the output of [`super::parse::parse_headers_lenient`] — then the extra headers.
    pub fn response_for(&self, request_headers: &Headers, to_tag: Option<&str>) -> Response {
        let mut resp = Response::new(self.status, self.reason.clone());
        for via in request_headers.get_all("Via") {
            resp.headers.push("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            let Some(v) = request_headers.get(name) else { continue };
            let needs_tag = name == "To" && NameAddr::parse(v).is_ok_and(|n| n.tag().is_none());
            match to_tag {
                Some(tag) if needs_tag => resp.headers.push(name, format!("{v};tag={tag}")),
                _ => resp.headers.push(name, v),
            }
        }
        for h in &self.headers {
            resp.headers.push(h.name.clone(), h.value.clone());
        }
        resp
    }
}

impl From<&ParseError> for Rejection {
    /// 400 (or 505 for a SIP version other than 2.0) for a request that did not parse.
    fn from(e: &ParseError) -> Self {
        let status = e.status();
        Rejection::new(status, reason_phrase(status))
    }
}

/// What this UAS supports. [`Policy::default`] is trunkguard's: SIP/SIPS/tel URIs, no option
/// tags, SDP bodies, and Max-Forwards 0 refused with 483 (trunkguard relays calls onward, so it
/// treats a spent Max-Forwards as a forwarding element would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Lower-case URI schemes accepted in the Request-URI (and a REGISTER's To).
    pub schemes: Vec<String>,
    /// Option tags this UAS implements (checked against Require).
    pub extensions: Vec<String>,
    /// Body types (`type/subtype`, lower-case) understood in INVITE/UPDATE/PRACK/ACK.
    pub body_types: Vec<String>,
    /// Refuse Max-Forwards 0 with 483. RFC 4475 §3.3.11: a proxy must, a pure endpoint should
    /// process the request as if the value were positive (see [`Policy::endpoint`]).
    pub reject_zero_max_forwards: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            schemes: vec!["sip".into(), "sips".into(), "tel".into()],
            extensions: Vec::new(),
            body_types: vec!["application/sdp".into()],
            reject_zero_max_forwards: true,
        }
    }
}

impl Policy {
    /// A terminating endpoint: like the default but processes Max-Forwards 0 normally.
    pub fn endpoint() -> Self {
        Policy { reject_zero_max_forwards: false, ..Policy::default() }
    }
}

/// [`check_request_with`] under [`Policy::default`].
pub fn check_request(req: &Request) -> Result<(), Rejection> {
    check_request_with(req, &Policy::default())
}

/// Decides whether a parsed request may be processed, or which response refuses it.
pub fn check_request_with(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    check_well_formed(req)?;
    check_max_forwards(req, policy)?;
    check_schemes(req, policy)?;
    check_require(req, policy)?;
    check_body(req, policy)?;
    check_accept(req, policy)
}

/// Single-value headers whose repetition makes a request ambiguous (RFC 4475 §3.3.8).
const SINGLE_VALUED: [&str; 14] = [
    "Call-ID",
    "CSeq",
    "From",
    "To",
    "Content-Length",
    "Max-Forwards",
    "Content-Type",
    "Content-Disposition",
    "Expires",
    "Date",
    "Min-Expires",
    "MIME-Version",
    "Priority",
    "Timestamp",
];

/// 400s for requests the parser lets through but that are still malformed or ambiguous.
fn check_well_formed(req: &Request) -> Result<(), Rejection> {
    let h = &req.headers;
    if let Some(name) = SINGLE_VALUED.iter().find(|n| h.count(n) > 1) {
        return Err(Rejection::bad(format!("multiple {name} headers")));
    }
    if let Some(Err(e)) = req.max_forwards() {
        return Err(Rejection::bad(e));
    }
    if let Some(cl) = h.get("Content-Length") {
        let declared = headers::content_length(cl).map_err(Rejection::bad)?;
        if declared != req.body.len() {
            return Err(Rejection::bad("Content-Length does not match the body"));
        }
    }
    match Uri::parse(&req.uri) {
        Err(e) => return Err(Rejection::bad(e)),
        Ok(Uri::Sip(u)) if !u.headers.is_empty() => {
            return Err(Rejection::bad("Request-URI carries escaped headers"));
        }
        Ok(_) => {}
    }
    if let Some(d) = h.get("Date") {
        SipDate::parse(d).map_err(Rejection::bad)?;
    }
    if let Some(ct) = h.get("Content-Type") {
        MediaType::parse(ct).map_err(Rejection::bad)?;
    }
    for name in ["Require", "Proxy-Require", "Supported"] {
        for line in h.get_all(name) {
            headers::option_tags(line).map_err(Rejection::bad)?;
        }
    }
    // RFC 4475 §3.2.1: the RFC 3261 magic cookie with no transaction id after it.
    let via = req.top_via().map_err(Rejection::bad)?;
    if via.branch() == Some("z9hG4bK") {
        return Err(Rejection::bad("branch is only the magic cookie"));
    }
    Ok(())
}

fn check_max_forwards(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    if policy.reject_zero_max_forwards && matches!(req.max_forwards(), Some(Ok(0))) {
        return Err(Rejection::new(483, reason_phrase(483)));
    }
    Ok(())
}

fn scheme_ok(policy: &Policy, uri: &Uri) -> bool {
    policy.schemes.iter().any(|s| s.eq_ignore_ascii_case(uri.scheme()))
}

fn check_schemes(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    let unsupported = || Rejection::new(416, reason_phrase(416));
    let uri = Uri::parse(&req.uri).map_err(Rejection::bad)?;
    if !scheme_ok(policy, &uri) {
        return Err(unsupported());
    }
    // A REGISTER's To is the address-of-record being bound (RFC 4475 §3.3.4).
    if req.method == Method::Register {
        let to = req.to_hdr().and_then(|t| t.parsed_uri()).map_err(Rejection::bad)?;
        if !scheme_ok(policy, &to) {
            return Err(unsupported());
        }
    }
    Ok(())
}

/// 420 with `Unsupported` listing the unknown Require tags (not for ACK and CANCEL, RFC 3261
/// §8.2.2.3). Proxy-Require is for proxies; a UAS ignores it.
fn check_require(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    if matches!(req.method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    let unknown: Vec<String> = req
        .headers
        .get_all("Require")
        .flat_map(|l| headers::option_tags(l).unwrap_or_default())
        .filter(|t| !policy.extensions.iter().any(|e| e.eq_ignore_ascii_case(t)))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Rejection::new(420, reason_phrase(420)).with_header("Unsupported", unknown.join(", ")))
}

/// Methods whose body is a session description this UAS must understand.
fn carries_session(m: &Method) -> bool {
    matches!(m, Method::Invite | Method::Update | Method::Prack | Method::Ack)
}

/// 415 with `Accept` for a session body of a type we do not understand (RFC 4475 §3.3.6).
fn check_body(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    if req.body.is_empty() || !carries_session(&req.method) {
        return Ok(());
    }
    let Some(ct) = req.headers.get("Content-Type") else {
        return Err(Rejection::bad("body without Content-Type"));
    };
    let essence = MediaType::parse(ct).map_err(Rejection::bad)?.essence();
    if policy.body_types.iter().any(|t| t.eq_ignore_ascii_case(&essence)) {
        return Ok(());
    }
    Err(Rejection::new(415, reason_phrase(415)).with_header("Accept", policy.body_types.join(", ")))
}

/// 406 when an INVITE's Accept rules out every body type we could answer with (RFC 4475
/// §3.3.15): the 2xx to an INVITE carries the SDP answer.
fn check_accept(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    if req.method != Method::Invite || req.headers.count("Accept") == 0 {
        return Ok(());
    }
    let mut ranges = Vec::new();
    for line in req.headers.get_all("Accept") {
        ranges.extend(Accept::parse(line).map_err(Rejection::bad)?.0);
    }
    let accept = Accept(ranges);
    if policy.body_types.iter().any(|t| accept.accepts(t)) {
        return Ok(());
    }
    Err(Rejection::new(406, "Not Acceptable").with_header("Accept", policy.body_types.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sip::parse::{parse_headers_lenient, parse_message};
    use crate::core::sip::SipMessage;

    fn req(extra: &str, method: &str, uri: &str, body: &str) -> Request {
        let raw = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse_message(raw.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("response"),
        }
    }

    fn status(r: &Request) -> Option<u16> {
        check_request(r).err().map(|e| e.status)
    }

    #[test]
    fn plain_request_passes() {
        assert_eq!(status(&req("", "OPTIONS", "sip:x@example.com", "")), None);
        let sdp = "Content-Type: application/sdp\r\n";
        assert_eq!(status(&req(sdp, "INVITE", "sip:x@example.com", "v=0\r\n")), None);
    }

    #[test]
    fn each_rejection() {
        assert_eq!(status(&req("", "OPTIONS", "urn:x:y", "")), Some(416));
        let mut zero = req("", "OPTIONS", "sip:x@example.com", "");
        zero.headers.set("Max-Forwards", "0");
        assert_eq!(status(&zero), Some(483));
        assert_eq!(check_request_with(&zero, &Policy::endpoint()), Ok(()));
        let r = check_request(&req("Require: foo, 100rel\r\n", "OPTIONS", "sip:x@example.com", ""))
            .unwrap_err();
        assert_eq!((r.status, r.headers[0].value.as_str()), (420, "foo, 100rel"));
        let ok = Policy { extensions: vec!["foo".into(), "100rel".into()], ..Policy::default() };
        assert!(check_request_with(
            &req("Require: foo, 100rel\r\n", "OPTIONS", "sip:x@example.com", ""),
            &ok
        )
        .is_ok());
        assert_eq!(
            status(&req("Content-Type: text/plain\r\n", "INVITE", "sip:x@example.com", "hi")),
            Some(415)
        );
        assert_eq!(
            status(&req(
                "Content-Type: application/sdp\r\nAccept: text/plain\r\n",
                "INVITE",
                "sip:x@example.com",
                "v=0"
            )),
            Some(406)
        );
        assert_eq!(
            status(&req(
                "Date: Fri, 01 Jan 2010 16:00:00 EST\r\n",
                "OPTIONS",
                "sip:x@example.com",
                ""
            )),
            Some(400)
        );
        assert_eq!(
            status(&req("Expires: 1\r\nExpires: 2\r\n", "OPTIONS", "sip:x@example.com", "")),
            Some(400)
        );
        assert_eq!(
            status(&req("", "OPTIONS", "sip:x@example.com?Route=%3Csip:a.com%3E", "")),
            Some(400)
        );
        let mut short = req("", "OPTIONS", "sip:x@example.com", "");
        short.headers.set("Content-Length", "10");
        assert_eq!(status(&short), Some(400));
        let mut mf = req("", "OPTIONS", "sip:x@example.com", "");
        mf.headers.set("Max-Forwards", "256");
        assert_eq!(status(&mf), Some(400));
    }

    #[test]
    fn response_for_copies_and_tags() {
        let raw = b"INVITE sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
                    Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\nTo: <sip:x@example.com>\r\n\
                    From: <sip:y@example.com>;tag=9\r\nCall-ID: abc\r\nCSeq: 5 INVITE\r\nContent-Length: 99\r\n\r\n";
        let err = parse_message(raw).unwrap_err();
        let head = parse_headers_lenient(raw).unwrap();
        let resp = Rejection::from(&err).response_for(&head, Some("t1"));
        assert_eq!(resp.status, 400);
        assert_eq!(resp.headers.count("Via"), 2);
        assert_eq!(resp.headers.get("To"), Some("<sip:x@example.com>;tag=t1"));
        assert_eq!(resp.headers.get("CSeq"), Some("5 INVITE"));
        assert_eq!(resp.headers.get("Call-ID"), Some("abc"));
    }
}

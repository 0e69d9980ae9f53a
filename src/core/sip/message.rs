//! The SIP message model every other module uses: requests, responses, an ordered header list
//! with case-insensitive lookup (compact forms expanded), and serialization to wire bytes.
//!
//! Parsing lives in [`super::parse`]; typed header values in [`super::headers`].

use std::fmt;

/// A SIP method. Unknown methods are kept verbatim (RFC 3261 allows extension methods).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Update,
    Info,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Other(String),
}

impl Method {
    /// Parses a method token; methods are case-sensitive in SIP.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line, name as received (compact forms expanded to the long name), value unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Ordered header list. Lookup is case-insensitive; compact names (`v`, `f`, `t`, `i`, `m`,
/// `l`, `c`, `k`, `s`, `e`) are expanded by the parser, so callers always use long names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// First value of the header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// Every header line named `name`, in order (values are not split on commas).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header { name: name.into(), value: value.into() });
    }

    /// Replaces every `name` header by one with `value` (placed where the first one was).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name.eq_ignore_ascii_case(name)) {
            Some(pos) => {
                self.0[pos].value = value;
                let mut i = 0;
                self.0.retain(|h| {
                    let keep = i <= pos || !h.name.eq_ignore_ascii_case(name);
                    i += 1;
                    keep
                });
            }
            None => self.push(name.to_string(), value),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Inserts a header before all others (used for the top Via).
    pub fn prepend(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(0, Header { name: name.into(), value: value.into() });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI exactly as received (validated by the parser).
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

fn write_headers_and_body(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Request {
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Request { method, uri: uri.into(), headers: Headers::new(), body: Vec::new() }
    }

    /// Wire form. Content-Length is always written from the body's real length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }
}

impl Response {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Response { status, reason: reason.into(), headers: Headers::new(), body: Vec::new() }
    }

    /// Wire form. Content-Length is always written from the body's real length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
        write_headers_and_body(&mut out, &self.headers, &self.body);
        out
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    pub fn is_final(&self) -> bool {
        self.status >= 200
    }
}

/// Standard reason phrase for the status codes the appliance sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

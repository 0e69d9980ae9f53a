//! Builders for the SIP messages the endpoint originates: responses to requests (RFC 3261
//! §8.2.6), and out-of-dialog OPTIONS and REGISTER requests.

use std::net::SocketAddr;

use crate::core::sip::message::{reason_phrase, Headers, Method, Request, Response};
use crate::core::sip::Transport;

/// What the endpoint says about itself in Allow and Accept.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";
pub const ACCEPT: &str = "application/sdp";

/// A response to `req` per RFC 3261 §8.2.6.2: Via, From, Call-ID and CSeq copied, To copied with
/// `to_tag` added when it has none (never for 100 Trying).
pub fn response_to(
    req_headers: &Headers,
    status: u16,
    to_tag: Option<&str>,
    user_agent: &str,
) -> Response {
    let mut resp = Response::new(status, reason_phrase(status));
    for via in req_headers.get_all("Via") {
        resp.headers.push("Via", via.to_string());
    }
    copy(req_headers, &mut resp.headers, "From");
    if let Some(to) = req_headers.get("To") {
        let needs_tag = status != 100 && !has_tag(to);
        let to = match (needs_tag, to_tag) {
            (true, Some(tag)) => format!("{to};tag={tag}"),
            _ => to.to_string(),
        };
        resp.headers.push("To", to);
    }
    copy(req_headers, &mut resp.headers, "Call-ID");
    copy(req_headers, &mut resp.headers, "CSeq");
    if status != 100 {
        resp.headers.push("Server", user_agent.to_string());
    }
    if status == 100 {
        copy(req_headers, &mut resp.headers, "Timestamp");
    }
    resp
}

fn copy(from: &Headers, to: &mut Headers, name: &str) {
    if let Some(v) = from.get(name) {
        to.push(name, v.to_string());
    }
}

fn has_tag(to: &str) -> bool {
    crate::core::sip::headers::NameAddr::parse(to).is_ok_and(|n| n.tag().is_some())
}

/// `sip:host:port` form of a socket address (IPv6 in brackets).
pub fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A top Via value for a request we send from `local` over `transport`.
pub fn via(transport: Transport, local: SocketAddr, branch: &str) -> String {
    format!("SIP/2.0/{} {};branch={};rport", transport.via_token(), host_port(local), branch)
}

/// Everything an out-of-dialog request from the appliance needs.
pub struct OutOfDialog<'a> {
    pub method: Method,
    pub request_uri: String,
    pub from_uri: String,
    pub from_tag: &'a str,
    pub to_uri: String,
    pub call_id: &'a str,
    pub cseq: u32,
    pub via: String,
    pub contact: Option<String>,
    pub user_agent: &'a str,
}

pub fn out_of_dialog(p: OutOfDialog<'_>) -> Request {
    let mut req = Request::new(p.method.clone(), p.request_uri);
    let h = &mut req.headers;
    h.push("Via", p.via);
    h.push("Max-Forwards", "70");
    h.push("From", format!("<{}>;tag={}", p.from_uri, p.from_tag));
    h.push("To", format!("<{}>", p.to_uri));
    h.push("Call-ID", p.call_id.to_string());
    h.push("CSeq", format!("{} {}", p.cseq, p.method));
    if let Some(c) = p.contact {
        h.push("Contact", c);
    }
    h.push("User-Agent", p.user_agent.to_string());
    if p.method == Method::Options {
        h.push("Accept", ACCEPT);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sip::{parse_message, SipHeaders, SipMessage};

    const INVITE: &str = "INVITE sip:bot@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1\r\n\
        Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0\r\n\
        From: <sip:alice@carrier>;tag=abc\r\n\
        To: <sip:bot@127.0.0.1>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match parse_message(INVITE.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_copies_vias_and_adds_to_tag_except_on_100() {
        let req = invite();
        let trying = response_to(&req.headers, 100, Some("t1"), "tg");
        assert_eq!(trying.headers.count("Via"), 2);
        assert_eq!(trying.to_hdr().unwrap().tag(), None);
        let ok = response_to(&req.headers, 200, Some("t1"), "tg");
        assert_eq!(ok.to_hdr().unwrap().tag(), Some("t1"));
        assert_eq!(ok.cseq().unwrap().seq, 1);
        assert!(parse_message(&ok.to_bytes()).is_ok());
    }

    #[test]
    fn options_request_parses_back() {
        let req = out_of_dialog(OutOfDialog {
            method: Method::Options,
            request_uri: "sip:127.0.0.2:5070".into(),
            from_uri: "sip:trunkguard@127.0.0.1:5060".into(),
            from_tag: "f1",
            to_uri: "sip:127.0.0.2:5070".into(),
            call_id: "cid",
            cseq: 3,
            via: via(Transport::Udp, "127.0.0.1:5060".parse().unwrap(), "z9hG4bKabc"),
            contact: None,
            user_agent: "tg",
        });
        let parsed = parse_message(&req.to_bytes()).unwrap();
        assert_eq!(parsed.top_via().unwrap().branch(), Some("z9hG4bKabc"));
        assert_eq!(parsed.cseq().unwrap().method, Method::Options);
    }
}

//! SIP dialogs (RFC 3261 §12): the state two user agents share after an INVITE is answered:
//! identifiers, route set, remote target and both CSeq spaces. It builds in-dialog requests
//! and checks that incoming ones belong here.

use rand::RngCore;

use super::headers::NameAddr;
use super::message::{Headers, Method, Request};
use super::parse::SipHeaders;
use super::transport::Peer;

/// Why an in-dialog request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("CSeq {got} is lower than the last seen {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
    #[error("request has no usable {0} header")]
    BadHeader(&'static str),
}

/// The UAS side of a dialog created by an INVITE we answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our identity as the peer wrote it (their To), re-used as From in our requests.
    pub local_uri: NameAddr,
    /// Their identity (their From), used as To in our requests.
    pub remote_uri: NameAddr,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Record-Route of the INVITE, in order (UAS keeps it as received).
    pub route_set: Vec<String>,
    pub local_seq: u32,
    pub remote_seq: u32,
    /// The transport peer that sent the INVITE; in-dialog requests go back over it.
    pub peer: Peer,
}

impl Dialog {
    /// Creates the UAS dialog for `invite`, which the parser has validated.
    pub fn new_uas(
        invite: &Request,
        local_tag: &str,
        peer: Peer,
        local_seq: u32,
    ) -> Result<Dialog, DialogError> {
        let call_id = invite.call_id().map_err(|_| DialogError::BadHeader("Call-ID"))?;
        let from = invite.from_hdr().map_err(|_| DialogError::BadHeader("From"))?;
        let to = invite.to_hdr().map_err(|_| DialogError::BadHeader("To"))?;
        let cseq = invite.cseq().map_err(|_| DialogError::BadHeader("CSeq"))?;
        let remote_target = invite.contact().map(|c| c.uri).unwrap_or_else(|| from.uri.clone());
        let route_set = invite
            .headers
            .get_all("Record-Route")
            .flat_map(|v| super::headers::params::split_outside_quotes(v, ','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Dialog {
            call_id: call_id.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().map(str::to_string),
            local_uri: to.with_tag(local_tag),
            remote_uri: from,
            remote_target,
            route_set,
            local_seq,
            remote_seq: cseq.seq,
            peer,
        })
    }

    /// Creates the UAC dialog from our `invite` and the 2xx that answered it (RFC 3261
    /// §12.1.2): the route set is the 2xx's Record-Route reversed, the remote target its
    /// Contact, the remote tag its To tag; `peer` is where in-dialog requests go (the carrier's
    /// proxy the INVITE went to).
    pub fn new_uac(
        invite: &Request,
        ok: &super::message::Response,
        peer: Peer,
    ) -> Result<Dialog, DialogError> {
        let call_id = invite.call_id().map_err(|_| DialogError::BadHeader("Call-ID"))?;
        let from = invite.from_hdr().map_err(|_| DialogError::BadHeader("From"))?;
        let to = ok.to_hdr().map_err(|_| DialogError::BadHeader("To"))?;
        let cseq = invite.cseq().map_err(|_| DialogError::BadHeader("CSeq"))?;
        let local_tag = from.tag().ok_or(DialogError::BadHeader("From"))?.to_string();
        let remote_target = ok.contact().map(|c| c.uri).unwrap_or_else(|| to.uri.clone());
        let mut route_set: Vec<String> = ok
            .headers
            .get_all("Record-Route")
            .flat_map(|v| super::headers::params::split_outside_quotes(v, ','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        route_set.reverse();
        Ok(Dialog {
            call_id: call_id.to_string(),
            local_tag,
            remote_tag: to.tag().map(str::to_string),
            local_uri: from,
            remote_uri: to,
            remote_target,
            route_set,
            local_seq: cseq.seq,
            remote_seq: 0,
            peer,
        })
    }

    /// True when `req` (a request inside a dialog) carries this dialog's identifiers.
    pub fn matches(&self, req: &Request) -> bool {
        let (Ok(call_id), Ok(from), Ok(to)) = (req.call_id(), req.from_hdr(), req.to_hdr()) else {
            return false;
        };
        call_id == self.call_id
            && to.tag() == Some(self.local_tag.as_str())
            && from.tag() == self.remote_tag.as_deref()
    }

    /// Accepts the CSeq of a new in-dialog request (RFC 3261 §12.2.2): lower ones get 500.
    pub fn accept_remote_cseq(&mut self, req: &Request) -> Result<(), DialogError> {
        let cseq = req.cseq().map_err(|_| DialogError::BadHeader("CSeq"))?;
        if cseq.seq < self.remote_seq && req.method != Method::Ack && req.method != Method::Cancel {
            return Err(DialogError::CSeqOutOfOrder { got: cseq.seq, last: self.remote_seq });
        }
        self.remote_seq = self.remote_seq.max(cseq.seq);
        Ok(())
    }

    /// Builds an in-dialog request (e.g. BYE) with a fresh CSeq. `via` is the full top Via
    /// value including the branch.
    pub fn new_request(
        &mut self,
        method: Method,
        via: String,
        contact: &str,
        user_agent: &str,
    ) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.request(method, self.local_seq, via, Some(contact), user_agent)
    }

    /// The ACK for a 2xx to this dialog's INVITE (RFC 3261 §13.2.2.4): a request of its own in
    /// the dialog, with the INVITE's CSeq number (the current local sequence number).
    pub fn ack(&self, via: String, user_agent: &str) -> Request {
        self.request(Method::Ack, self.local_seq, via, None, user_agent)
    }

    fn request(
        &self,
        method: Method,
        seq: u32,
        via: String,
        contact: Option<&str>,
        user_agent: &str,
    ) -> Request {
        let mut headers = Headers::new();
        headers.push("Via", via);
        headers.push("Max-Forwards", "70");
        for route in &self.route_set {
            headers.push("Route", route.clone());
        }
        headers.push("From", self.local_uri.to_string());
        headers.push("To", self.remote_uri.to_string());
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{seq} {method}"));
        if let Some(contact) = contact {
            headers.push("Contact", format!("<{contact}>"));
        }
        headers.push("User-Agent", user_agent.to_string());
        Request { method, uri: self.request_uri(), headers, body: Vec::new() }
    }

    /// The Request-URI for in-dialog requests: the remote target, unless the first route is a
    /// strict router (no `;lr`), in which case RFC 3261 §12.2.1.1 puts that route there.
    fn request_uri(&self) -> String {
        self.remote_target.clone()
    }
}

/// A random token for tags, Call-IDs and branches: 16 hex characters from the injected RNG.
pub fn random_token(rng: &mut impl RngCore) -> String {
    format!("{:016x}", rng.next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sip::{parse_message, SipMessage, Transport};

    fn invite() -> Request {
        let text = "INVITE sip:bot@127.0.0.1 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1\r\n\
            Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
            From: \"Caller\" <sip:alice@carrier>;tag=abc\r\n\
            To: <sip:bot@127.0.0.1>\r\n\
            Call-ID: call-1@carrier\r\n\
            CSeq: 7 INVITE\r\n\
            Contact: <sip:alice@127.0.0.2:5070>\r\n\
            Content-Length: 0\r\n\r\n";
        match parse_message(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("bad fixture: {other:?}"),
        }
    }

    fn peer() -> Peer {
        Peer { transport: Transport::Udp, addr: "127.0.0.2:5070".parse().unwrap() }
    }

    #[test]
    fn uas_dialog_takes_ids_route_set_and_target() {
        let d = Dialog::new_uas(&invite(), "ourtag", peer(), 1).unwrap();
        assert_eq!(d.call_id, "call-1@carrier");
        assert_eq!(d.remote_tag.as_deref(), Some("abc"));
        assert_eq!(d.remote_target, "sip:alice@127.0.0.2:5070");
        assert_eq!(d.route_set, vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]);
        assert_eq!(d.local_uri.tag(), Some("ourtag"));
        assert_eq!(d.remote_seq, 7);
    }

    #[test]
    fn bye_goes_to_remote_target_with_routes_and_next_cseq() {
        let mut d = Dialog::new_uas(&invite(), "ourtag", peer(), 1).unwrap();
        let bye = d.new_request(
            Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx".into(),
            "sip:tg@127.0.0.1:5060",
            "tg",
        );
        assert_eq!(bye.uri, "sip:alice@127.0.0.2:5070");
        assert_eq!(bye.cseq().unwrap().seq, 2);
        assert_eq!(bye.headers.count("Route"), 2);
        assert_eq!(bye.from_hdr().unwrap().tag(), Some("ourtag"));
        assert_eq!(bye.to_hdr().unwrap().tag(), Some("abc"));
        // it re-parses as a valid message
        assert!(parse_message(&bye.to_bytes()).is_ok());
    }

    #[test]
    fn uac_dialog_from_our_invite_and_its_2xx() {
        let mut inv = invite();
        inv.headers.set("From", "<sip:tg@127.0.0.1>;tag=ours");
        inv.headers.set("To", "<sip:human@carrier>");
        let ok_text = "SIP/2.0 200 OK\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n\
            Record-Route: <sip:p1.example.com;lr>\r\n\
            Record-Route: <sip:p2.example.com;lr>\r\n\
            From: <sip:tg@127.0.0.1>;tag=ours\r\n\
            To: <sip:human@carrier>;tag=theirs\r\n\
            Call-ID: call-1@carrier\r\n\
            CSeq: 7 INVITE\r\n\
            Contact: <sip:human@127.0.0.5:5090>\r\n\
            Content-Length: 0\r\n\r\n";
        let Ok(SipMessage::Response(ok)) = parse_message(ok_text.as_bytes()) else { panic!() };
        let mut d = Dialog::new_uac(&inv, &ok, peer()).unwrap();
        assert_eq!((d.local_tag.as_str(), d.remote_tag.as_deref()), ("ours", Some("theirs")));
        assert_eq!(d.remote_target, "sip:human@127.0.0.5:5090");
        assert_eq!(d.route_set, vec!["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]);
        let bye = d.new_request(
            Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb".into(),
            "sip:tg@127.0.0.1",
            "tg",
        );
        assert_eq!(bye.cseq().unwrap().seq, 8);
        assert_eq!(bye.to_hdr().unwrap().tag(), Some("theirs"));
        // their BYE (From: them, To: us) matches
        let mut theirs = invite();
        theirs.method = Method::Bye;
        theirs.headers.set("From", "<sip:human@carrier>;tag=theirs");
        theirs.headers.set("To", "<sip:tg@127.0.0.1>;tag=ours");
        assert!(d.matches(&theirs));
    }

    #[test]
    fn in_dialog_matching_and_cseq_order() {
        let mut d = Dialog::new_uas(&invite(), "ourtag", peer(), 1).unwrap();
        let mut bye = invite();
        bye.method = Method::Bye;
        bye.headers.set("To", "<sip:bot@127.0.0.1>;tag=ourtag");
        bye.headers.set("CSeq", "8 BYE");
        assert!(d.matches(&bye));
        assert!(d.accept_remote_cseq(&bye).is_ok());
        bye.headers.set("CSeq", "3 BYE");
        assert!(matches!(d.accept_remote_cseq(&bye), Err(DialogError::CSeqOutOfOrder { .. })));
        bye.headers.set("To", "<sip:bot@127.0.0.1>;tag=other");
        assert!(!d.matches(&bye));
    }
}

//! Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3 for responses to
//! client transactions, §17.2.3 for requests to server transactions, including the RFC 2543
//! fallback for branches without the magic cookie), and branch generation.

use rand::RngCore;

use crate::core::sip::headers::{HeaderError, Via};
use crate::core::sip::message::{Method, Request, Response};
use crate::core::sip::parse::SipHeaders;

/// The RFC 3261 branch prefix; a branch starting with it is globally unique.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A fresh RFC 3261 branch: the magic cookie and 96 random bits in hex.
pub fn new_branch(rng: &mut impl RngCore) -> String {
    format!("{MAGIC_COOKIE}{:016x}{:08x}", rng.next_u64(), rng.next_u32())
}

/// A client transaction: the top Via branch it sent and its CSeq method (§17.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: Method,
}

impl ClientKey {
    /// Key of an outgoing request (its top Via must carry a branch).
    pub fn from_request(req: &Request) -> Result<ClientKey, HeaderError> {
        Ok(ClientKey { branch: branch_of(&req.top_via()?)?, method: req.method.clone() })
    }

    /// Key a response is matched by: its top Via branch and CSeq method.
    pub fn from_response(resp: &Response) -> Result<ClientKey, HeaderError> {
        Ok(ClientKey { branch: branch_of(&resp.top_via()?)?, method: resp.cseq()?.method })
    }
}

fn branch_of(via: &Via) -> Result<String, HeaderError> {
    via.branch()
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .ok_or(HeaderError::Missing("Via branch"))
}

/// A server transaction key. ACK is keyed as INVITE so it finds the INVITE transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerKey {
    /// Branch with the magic cookie: branch + sent-by + method.
    Rfc3261 { branch: String, sent_by: String, method: Method },
    /// No magic cookie: the RFC 2543 field comparison of §17.2.3.
    Rfc2543(Rfc2543Key),
}

/// The fields RFC 2543 matching compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rfc2543Key {
    pub uri: String,
    pub to_tag: Option<String>,
    pub from_tag: Option<String>,
    pub call_id: String,
    pub cseq: u32,
    pub method: Method,
    /// The top Via in canonical form.
    pub top_via: String,
}

impl ServerKey {
    pub fn from_request(req: &Request) -> Result<ServerKey, HeaderError> {
        let via = req.top_via()?;
        let method = tx_method(&req.method);
        match via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
            Some(branch) => Ok(ServerKey::Rfc3261 {
                branch: branch.to_string(),
                sent_by: sent_by_key(&via),
                method,
            }),
            None => Ok(ServerKey::Rfc2543(Rfc2543Key::from_request(req, &via, method)?)),
        }
    }

    /// Key of the transaction a response with a magic-cookie branch belongs to; `None` when
    /// the branch has no cookie (then [`Rfc2543Key::matches_response`] is used).
    pub fn from_response(resp: &Response) -> Result<Option<ServerKey>, HeaderError> {
        let via = resp.top_via()?;
        let method = resp.cseq()?.method;
        Ok(via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)).map(|branch| ServerKey::Rfc3261 {
            branch: branch.to_string(),
            sent_by: sent_by_key(&via),
            method: tx_method(&method),
        }))
    }
}

impl Rfc2543Key {
    fn from_request(req: &Request, via: &Via, method: Method) -> Result<Rfc2543Key, HeaderError> {
        Ok(Rfc2543Key {
            uri: req.uri.clone(),
            to_tag: req.to_hdr()?.tag().map(str::to_string),
            from_tag: req.from_hdr()?.tag().map(str::to_string),
            call_id: req.call_id()?.to_string(),
            cseq: req.cseq()?.seq,
            method,
            top_via: via.to_string(),
        })
    }

    /// True when `ack` (keyed as INVITE) matches this INVITE key except for the To tag, which
    /// RFC 2543 matching compares against the tag of the response sent (`response_to_tag`).
    pub fn matches_ack(&self, ack: &Rfc2543Key, response_to_tag: Option<&str>) -> bool {
        self.uri == ack.uri
            && self.from_tag == ack.from_tag
            && self.call_id == ack.call_id
            && self.cseq == ack.cseq
            && self.method == ack.method
            && self.top_via == ack.top_via
            && ack.to_tag.as_deref() == response_to_tag
    }

    /// True when a response the TU built from this request belongs to it (the Request-URI is
    /// not in a response; the copied top Via, Call-ID, From tag and CSeq are).
    pub fn matches_response(&self, resp: &Response) -> bool {
        let (Ok(via), Ok(call_id), Ok(from), Ok(cseq)) =
            (resp.top_via(), resp.call_id(), resp.from_hdr(), resp.cseq())
        else {
            return false;
        };
        self.top_via == via.to_string()
            && self.call_id == call_id
            && self.from_tag.as_deref() == from.tag()
            && self.cseq == cseq.seq
            && self.method == tx_method(&cseq.method)
    }
}

/// The method a transaction is keyed by: ACK belongs to the INVITE transaction.
fn tx_method(method: &Method) -> Method {
    match method {
        Method::Ack => Method::Invite,
        other => other.clone(),
    }
}

/// sent-by compared case-insensitively on the host.
fn sent_by_key(via: &Via) -> String {
    via.sent_by().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn branches_carry_the_cookie_and_differ() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (a, b) = (new_branch(&mut rng), new_branch(&mut rng));
        assert!(a.starts_with(MAGIC_COOKIE) && b.starts_with(MAGIC_COOKIE));
        assert_ne!(a, b);
        assert_eq!(a.len(), MAGIC_COOKIE.len() + 24);
    }
}

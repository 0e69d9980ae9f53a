//! Typed SIP header values, one header per file (after kbalt/ezk). Each type parses from the
//! unfolded header value and prints back to wire form with `Display`.

mod accept;
mod call_id;
mod contact;
mod content_length;
mod content_type;
mod cseq;
mod date;
mod max_forwards;
mod name_addr;
mod option_tags;
pub(crate) mod params;
pub(crate) mod syntax;
mod uri;
mod via;

pub use accept::Accept;
pub use call_id::call_id;
pub use contact::Contact;
pub use content_length::content_length;
pub use content_type::MediaType;
pub use cseq::CSeq;
pub use date::SipDate;
pub use max_forwards::max_forwards;
pub use name_addr::NameAddr;
pub use option_tags::option_tags;
pub use params::Params;
pub use uri::{parse_host_port, Host, SipUri, Uri};
pub use via::Via;

use thiserror::Error;

/// A header that is missing or whose value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {header} header: {reason}")]
    Malformed { header: &'static str, reason: String },
}

pub(crate) fn malformed(header: &'static str, reason: impl Into<String>) -> HeaderError {
    HeaderError::Malformed { header, reason: reason.into() }
}

//! Typed SIP header values, one header per file (after kbalt/ezk). Each type parses from the
//! unfolded header value and prints back to wire form with `Display`.

mod call_id;
mod cseq;
mod name_addr;
pub(crate) mod params;
mod via;

pub use call_id::call_id;
pub use cseq::CSeq;
pub use name_addr::NameAddr;
pub use params::Params;
pub use via::Via;

use thiserror::Error;

/// A header that is missing or whose value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {header} header: {reason}")]
    Malformed {
        header: &'static str,
        reason: String,
    },
}

pub(crate) fn malformed(header: &'static str, reason: impl Into<String>) -> HeaderError {
    HeaderError::Malformed {
        header,
        reason: reason.into(),
    }
}

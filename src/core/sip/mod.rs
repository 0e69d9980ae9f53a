//! SIP per RFC 3261, sans-IO: the message model and its parsing, typed headers, stream framing,
//! the transaction layer (timers A-K), dialogs, and digest authentication.

pub mod dialog;
pub mod digest;
pub mod framing;
pub mod headers;
pub mod message;
pub mod parse;
pub mod transaction;
pub mod transport;
pub mod validate;

pub use message::{Header, Headers, Method, Request, Response, SipMessage};
pub use parse::{parse_headers_lenient, parse_message, ParseError, SipHeaders};
pub use transport::{Peer, Transport};

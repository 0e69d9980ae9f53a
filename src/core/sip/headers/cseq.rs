//! The CSeq header: sequence number and method.

use std::fmt;

use super::{malformed, HeaderError};
use crate::core::sip::message::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let mut it = value.split_whitespace();
        let seq = it
            .next()
            .ok_or_else(|| malformed("CSeq", "empty"))?
            .parse::<u32>()
            .map_err(|_| malformed("CSeq", "sequence number is not a 32-bit integer"))?;
        let method = it.next().ok_or_else(|| malformed("CSeq", "no method"))?;
        if it.next().is_some() {
            return Err(malformed("CSeq", "trailing data"));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

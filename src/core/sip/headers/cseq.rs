//! The CSeq header: sequence number and method.

use std::fmt;

use super::syntax::is_token;
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
        let seq = it.next().ok_or_else(|| malformed("CSeq", "empty"))?;
        if !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("CSeq", "sequence number is not 1*DIGIT"));
        }
        let seq = seq
            .parse::<u32>()
            .map_err(|_| malformed("CSeq", "sequence number is not a 32-bit integer"))?;
        let method = it.next().ok_or_else(|| malformed("CSeq", "no method"))?;
        if !is_token(method) {
            return Err(malformed("CSeq", "method is not a token"));
        }
        if it.next().is_some() {
            return Err(malformed("CSeq", "trailing data"));
        }
        Ok(CSeq { seq, method: Method::from_token(method) })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_range() {
        let c = CSeq::parse(" 0009   INVITE").unwrap();
        assert_eq!(c, CSeq { seq: 9, method: Method::Invite });
        assert_eq!(c.to_string(), "9 INVITE");
        assert_eq!(
            CSeq::parse("29344 RE%47IST%45R").unwrap().method,
            Method::Other("RE%47IST%45R".into())
        );
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("+5 INVITE").is_err());
        assert!(CSeq::parse("5").is_err());
        assert!(CSeq::parse("5 INVITE x").is_err());
        assert!(CSeq::parse("5 IN,VITE").is_err());
    }
}

//! The Content-Type header (`c`): `type/subtype *( ; parameter )` (RFC 3261 §20.15).

use std::fmt;

use super::params::Params;
use super::syntax::is_token;
use super::{malformed, HeaderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Lower-case type, e.g. `application`.
    pub kind: String,
    /// Lower-case subtype, e.g. `sdp`.
    pub subtype: String,
    pub params: Params,
}

impl MediaType {
    pub fn parse(value: &str) -> Result<MediaType, HeaderError> {
        let v = value.trim();
        let (essence, params) = match v.find(';') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        };
        let (kind, subtype) =
            essence.split_once('/').ok_or_else(|| malformed("Content-Type", "no /"))?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if !is_token(kind) || !is_token(subtype) {
            return Err(malformed("Content-Type", "type or subtype is not a token"));
        }
        Ok(MediaType {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params: Params::parse_strict("Content-Type", params)?,
        })
    }

    /// `type/subtype`, lower-case.
    pub fn essence(&self) -> String {
        format!("{}/{}", self.kind, self.subtype)
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.kind, self.subtype, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let m = MediaType::parse("Multipart/Mixed;boundary=7a9cbec02ceef655").unwrap();
        assert_eq!(m.essence(), "multipart/mixed");
        assert_eq!(m.params.value("boundary"), Some("7a9cbec02ceef655"));
        assert_eq!(m.to_string(), "multipart/mixed;boundary=7a9cbec02ceef655");
        assert!(MediaType::parse("application").is_err());
        assert!(MediaType::parse("a/b;;").is_err());
    }
}

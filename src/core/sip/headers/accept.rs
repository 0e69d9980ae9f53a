//! The Accept header: a comma-separated list of media ranges (`type/sub`, `type/*`, `*/*`).

use super::content_type::MediaType;
use super::params::split_outside_quotes;
use super::{malformed, HeaderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept(pub Vec<MediaType>);

impl Accept {
    /// Parses one Accept line; an empty value is an empty list (nothing acceptable).
    pub fn parse(value: &str) -> Result<Accept, HeaderError> {
        if value.trim().is_empty() {
            return Ok(Accept(Vec::new()));
        }
        split_outside_quotes(value, ',')
            .into_iter()
            .map(|r| {
                if r.trim().is_empty() {
                    return Err(malformed("Accept", "empty media range"));
                }
                MediaType::parse(r)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Accept)
    }

    /// Whether `essence` (`type/subtype`) matches one of the ranges.
    pub fn accepts(&self, essence: &str) -> bool {
        let (kind, sub) = essence.split_once('/').unwrap_or((essence, ""));
        self.0.iter().any(|m| {
            (m.kind == "*" || m.kind.eq_ignore_ascii_case(kind))
                && (m.subtype == "*" || m.subtype.eq_ignore_ascii_case(sub))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let a =
            Accept::parse("application/sdp, application/pkcs7-mime, multipart/mixed, message/*")
                .unwrap();
        assert_eq!(a.0.len(), 4);
        assert!(a.accepts("application/sdp"));
        assert!(a.accepts("message/sipfrag"));
        assert!(!a.accepts("text/plain"));
        assert!(Accept::parse("*/*").unwrap().accepts("text/plain"));
        assert!(!Accept::parse("text/nobodyKnowsThis").unwrap().accepts("application/sdp"));
        assert!(Accept::parse("").unwrap().0.is_empty());
        assert!(Accept::parse("a/b,,c/d").is_err());
    }
}

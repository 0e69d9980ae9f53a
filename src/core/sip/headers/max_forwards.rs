//! The Max-Forwards header: 1*DIGIT, 0..=255 (RFC 3261 §20.22).

use super::{malformed, HeaderError};

/// Parses a Max-Forwards value. Values above 255 are malformed.
pub fn max_forwards(value: &str) -> Result<u8, HeaderError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("Max-Forwards", "not a number"));
    }
    v.parse::<u8>().map_err(|_| malformed("Max-Forwards", "above 255"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range() {
        assert_eq!(max_forwards(" 0068 "), Ok(68));
        assert_eq!(max_forwards("0"), Ok(0));
        assert_eq!(max_forwards("255"), Ok(255));
        assert!(max_forwards("300").is_err());
        assert!(max_forwards("-1").is_err());
        assert!(max_forwards("").is_err());
    }
}

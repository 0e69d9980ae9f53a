//! The Content-Length header (`l`): 1*DIGIT octets of body.

use super::{malformed, HeaderError};

pub fn content_length(value: &str) -> Result<usize, HeaderError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("Content-Length", format!("not a length: {v:?}")));
    }
    v.parse().map_err(|_| malformed("Content-Length", "too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only() {
        assert_eq!(content_length(" 150"), Ok(150));
        assert_eq!(content_length("0"), Ok(0));
        assert!(content_length("-999").is_err());
        assert!(content_length("+5").is_err());
        assert!(content_length("99999999999999999999999999").is_err());
    }
}

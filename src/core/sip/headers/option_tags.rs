//! Option-tag lists of Require, Proxy-Require, Supported (`k`) and Unsupported: comma-separated
//! tokens (RFC 3261 §20.32, §20.37).

use super::syntax::is_token;
use super::{malformed, HeaderError};

/// Parses one line of option tags. An empty value is an empty list (allowed for Supported).
pub fn option_tags(value: &str) -> Result<Vec<String>, HeaderError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|t| {
            let t = t.trim();
            if is_token(t) {
                Ok(t.to_string())
            } else {
                Err(malformed("Require/Supported", format!("bad option tag {t:?}")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(
            option_tags("nothingSupportsThis, nothingSupportsThisEither").unwrap(),
            vec!["nothingSupportsThis", "nothingSupportsThisEither"]
        );
        assert!(option_tags("").unwrap().is_empty());
        assert!(option_tags("a,,b").is_err());
        assert!(option_tags("a b").is_err());
    }
}

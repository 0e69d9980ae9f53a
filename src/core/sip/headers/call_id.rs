//! The Call-ID header: a word, optionally `word@word`.

use super::{malformed, HeaderError};

/// Validates a Call-ID value and returns it trimmed.
pub fn call_id(value: &str) -> Result<&str, HeaderError> {
    let v = value.trim();
    if v.is_empty() || v.chars().any(char::is_whitespace) {
        return Err(malformed("Call-ID", "must be one word"));
    }
    Ok(v)
}

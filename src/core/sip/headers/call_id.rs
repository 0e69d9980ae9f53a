//! The Call-ID header: a word, optionally `word@word`.

use super::syntax::is_token_char;
use super::{malformed, HeaderError};

fn is_word(s: &str, ok: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(ok)
}

/// Validates a Call-ID value and returns it trimmed.
pub fn call_id(value: &str) -> Result<&str, HeaderError> {
    let v = value.trim();
    let word_char = |c: char| is_token_char(c) || "()<>:\\\"/[]?{}".contains(c);
    let ok = match v.split_once('@') {
        Some((a, b)) => is_word(a, word_char) && is_word(b, word_char),
        None => is_word(v, word_char),
    };
    if !ok {
        return Err(malformed("Call-ID", "must be word or word@word"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(call_id("  wsinv.ndaksdj@192.0.2.1 "), Ok("wsinv.ndaksdj@192.0.2.1"));
        assert!(call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(call_id("a b").is_err());
        assert!(call_id("").is_err());
        assert!(call_id("a@b@c").is_err());
        assert!(call_id("a;b").is_err());
    }
}

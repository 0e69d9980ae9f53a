//! Generic `;name=value` parameter lists shared by Via, From/To and Contact.

use std::fmt;

use super::syntax::{is_token, is_token_char, quoted_string_len};
use super::{malformed, HeaderError};

/// Parameters in order; names compared case-insensitively, values kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `;a=b;c` (the leading `;` optional). Quoted values may contain `;`.
    pub fn parse(s: &str) -> Params {
        let mut out = Vec::new();
        for part in split_outside_quotes(s, ';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => out.push((k.trim().to_string(), Some(v.trim().to_string()))),
                None => out.push((part.to_string(), None)),
            }
        }
        Params(out)
    }

    /// Strict `*( SEMI generic-param )` (RFC 3261 §25.1): every parameter is a token name with
    /// an optional token / host / quoted-string value; LWS around `;` and `=` is allowed,
    /// empty parameters (`;;`) are not. `s` must be empty or start with `;`.
    pub fn parse_strict(header: &'static str, s: &str) -> Result<Params, HeaderError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Params::default());
        }
        let rest =
            s.strip_prefix(';').ok_or_else(|| malformed(header, "junk before parameters"))?;
        let mut out = Vec::new();
        for part in split_outside_quotes(rest, ';') {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (part.trim(), None),
            };
            if !is_token(name) || !value.is_none_or(is_gen_value) {
                return Err(malformed(header, format!("bad parameter {:?}", part.trim())));
            }
            out.push((name.to_string(), value.map(str::to_string)));
        }
        Ok(Params(out))
    }

    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }

    /// Value of `name` when present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    pub fn set(&mut self, name: &str, value: Option<String>) {
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// gen-value = token / host / quoted-string (host chars beyond token: `:` `[` `]`).
fn is_gen_value(v: &str) -> bool {
    if v.starts_with('"') {
        return quoted_string_len(v) == Some(v.len());
    }
    !v.is_empty() && v.chars().all(|c| is_token_char(c) || c == ':' || c == '[' || c == ']')
}

/// Splits on `sep` where it stands outside double quotes and angle brackets.
pub(crate) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_quotes, mut angle, mut escaped, mut start) = (false, 0u32, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => angle += 1,
            '>' if !in_quotes => angle = angle.saturating_sub(1),
            c if c == sep && !in_quotes && angle == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_params() {
        let p = Params::parse_strict("To", " ;   tag    = 1918181833n ; q = 0.33;x=\"a;b\";lr")
            .unwrap();
        assert_eq!(p.value("tag"), Some("1918181833n"));
        assert_eq!(p.value("q"), Some("0.33"));
        assert_eq!(p.value("x"), Some("\"a;b\""));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.to_string(), ";tag=1918181833n;q=0.33;x=\"a;b\";lr");
        assert!(Params::parse_strict("Via", ";received=[2001:db8::9:255]").is_ok());
        assert!(Params::parse_strict("Via", ";received=2001:db8::9:255").is_ok());
        for bad in [";;", ";a;;b", ";a=", ";a b=c", "x;a", ";a=\"open", ";a=b c"] {
            assert!(Params::parse_strict("To", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lenient_params_keep_working() {
        let p = Params::parse(";a=1;;b");
        assert_eq!(p.0.len(), 2);
        assert!(Params::parse("").0.is_empty());
    }
}

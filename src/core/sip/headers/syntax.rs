//! Lexical building blocks of the RFC 3261 §25 grammar shared by the typed headers: tokens,
//! quoted strings, escapes and whitespace. No header type lives here.

/// `token` characters: alphanum and `-.!%*_+`'~`.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// A non-empty `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// `unreserved` = alphanum / mark.
pub(crate) fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c)
}

/// SIP linear whitespace inside an unfolded value: SP or HTAB.
pub(crate) fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// True when every `%` in `s` starts a `%HH` escape and every other char satisfies `allowed`.
pub(crate) fn all_escaped_or(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
            continue;
        }
        // multi-byte chars are never allowed in URIs; check the char at this boundary
        let Some(c) = s[i..].chars().next() else { return false };
        if !allowed(c) {
            return false;
        }
        i += c.len_utf8();
    }
    true
}

/// Given `s` starting with `"`, returns the byte length of the quoted-string including both
/// quotes, or `None` when it is unterminated or holds a char a quoted-string cannot hold.
pub(crate) fn quoted_string_len(s: &str) -> Option<usize> {
    let mut it = s.char_indices();
    if it.next()?.1 != '"' {
        return None;
    }
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Some(i + 1),
            // quoted-pair: "\" followed by any octet except CR and LF
            '\\' => {
                let (_, e) = it.next()?;
                if e == '\r' || e == '\n' {
                    return None;
                }
            }
            // qdtext: LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
            c if is_ws(c) || (c as u32 >= 0x21 && c != '\x7f') => {}
            _ => return None,
        }
    }
    None
}

/// Removes the quotes and quoted-pair backslashes of a quoted-string.
pub(crate) fn unquote(s: &str) -> String {
    let inner = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_escapes() {
        assert!(is_token("z9hG4bK-.!%66*_+`'~"));
        assert!(!is_token("a,b"));
        assert!(!is_token(""));
        assert!(all_escaped_or("a%20b", is_unreserved));
        assert!(!all_escaped_or("a%2", is_unreserved));
        assert!(!all_escaped_or("a%zzb", is_unreserved));
        assert!(!all_escaped_or("é", is_unreserved));
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(quoted_string_len(r#""a \"b\"" rest"#), Some(9));
        assert_eq!(quoted_string_len("\"BEL:\\\x07 NUL:\\\x00\" x"), Some(15));
        assert_eq!(quoted_string_len(r#""unterminated"#), None);
        assert_eq!(quoted_string_len("\"ctl\x01\""), None);
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
    }
}

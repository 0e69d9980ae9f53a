//! name-addr / addr-spec values of From, To, Contact and Route (RFC 3261 §20.10, §25.1):
//! `"Name" <sip:u@h>;tag=x`, `Name Tokens <sip:u@h>` or `sip:u@h;tag=x`.
//!
//! Strict: the display name is one quoted-string or a run of tokens, no LWS inside `<>`, the URI
//! must parse, an addr-spec without `<>` may not contain `,` `?` or `;`, and parameters follow
//! the generic-param grammar.

use std::fmt;

use super::params::Params;
use super::syntax::{is_token, is_ws, quoted_string_len, unquote};
use super::uri::Uri;
use super::{malformed, HeaderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (a quoted-string keeps its quotes).
    pub display: Option<String>,
    /// The URI as written (validated by [`NameAddr::parse`]).
    pub uri: String,
    /// Header parameters (after the URI, outside `<>`), e.g. `tag`.
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        NameAddr::parse_for("From/To", value)
    }

    /// [`NameAddr::parse`] naming `header` in errors.
    pub fn parse_for(header: &'static str, value: &str) -> Result<NameAddr, HeaderError> {
        let v = value.trim_matches(is_ws);
        if v.is_empty() {
            return Err(malformed(header, "empty"));
        }
        let (display, rest) = split_display(header, v)?;
        if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or_else(|| malformed(header, "unclosed <"))?;
            let uri = &inner[..gt];
            if uri.is_empty() || uri.contains(char::is_whitespace) {
                return Err(malformed(header, "empty URI or whitespace inside <>"));
            }
            Uri::parse(uri)?;
            return Ok(NameAddr {
                display,
                uri: uri.to_string(),
                params: Params::parse_strict(header, &inner[gt + 1..])?,
            });
        }
        if display.is_some() {
            return Err(malformed(header, "display name without <URI>"));
        }
        // addr-spec form: parameters after the URI belong to the header
        let (uri, params) = match v.find(';') {
            Some(i) => (v[..i].trim_end_matches(is_ws), &v[i..]),
            None => (v, ""),
        };
        if uri.contains(|c: char| c.is_whitespace() || c == ',' || c == '?') {
            return Err(malformed(header, "addr-spec with whitespace, comma or ? needs <>"));
        }
        Uri::parse(uri)?;
        Ok(NameAddr {
            display: None,
            uri: uri.to_string(),
            params: Params::parse_strict(header, params)?,
        })
    }

    /// The URI, parsed.
    pub fn parsed_uri(&self) -> Result<Uri, HeaderError> {
        Uri::parse(&self.uri)
    }

    /// The display name with quotes and quoted-pair escapes removed.
    pub fn display_name(&self) -> Option<String> {
        self.display.as_deref().map(unquote)
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    pub fn with_tag(mut self, tag: &str) -> Self {
        self.params.set("tag", Some(tag.to_string()));
        self
    }
}

/// Splits off a display name (quoted-string, or tokens before `<`). Returns the rest.
fn split_display<'a>(
    header: &'static str,
    v: &'a str,
) -> Result<(Option<String>, &'a str), HeaderError> {
    if v.starts_with('"') {
        let n = quoted_string_len(v).ok_or_else(|| malformed(header, "unbalanced quotes"))?;
        let rest = v[n..].trim_start_matches(is_ws);
        if !rest.starts_with('<') {
            return Err(malformed(header, "quoted display name without <URI>"));
        }
        return Ok((Some(v[..n].to_string()), rest));
    }
    match v.find('<') {
        Some(lt) => {
            let d = v[..lt].trim_matches(is_ws);
            if !d.split(is_ws).filter(|w| !w.is_empty()).all(is_token) {
                return Err(malformed(header, "display name is neither tokens nor quoted"));
            }
            Ok(((!d.is_empty()).then(|| d.to_string()), &v[lt..]))
        }
        None => Ok((None, v)),
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display.as_deref(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(a.uri, "sip:jdrosen@example.com");
        assert_eq!(a.display_name().as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        let b = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(b.display.as_deref(), Some("caller"));
        let c = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(c.uri, "sip:+19725552222@gw1.example.net");
        assert_eq!(c.params.get("unknownparam"), Some(None));
        let d = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(d.params.0.is_empty());
        assert_eq!(
            NameAddr::parse("isbn:2983792873").unwrap().parsed_uri().unwrap().scheme(),
            "isbn"
        );
        assert_eq!(b.with_tag("x").to_string(), "caller <sip:caller@example.com>;tag=x");
    }

    #[test]
    fn rejects() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Watson, Thomas <sip:t.watson@example.org>",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:user@example.com",
            "<>",
            "\"x\" sip:a@b.com",
            "",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }
}

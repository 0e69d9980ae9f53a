//! name-addr / addr-spec values of From, To and Contact: `"Name" <sip:u@h>;tag=x` or `sip:u@h;tag=x`.

use std::fmt;

use super::params::Params;
use super::{malformed, HeaderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    /// Header parameters (after the URI, outside `<>`), e.g. `tag`.
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(malformed("From/To", "empty"));
        }
        if let Some(lt) = find_unquoted(v, '<') {
            let display = v[..lt].trim();
            let gt = v[lt..].find('>').ok_or_else(|| malformed("From/To", "unclosed <"))? + lt;
            let uri = v[lt + 1..gt].trim().to_string();
            if uri.is_empty() {
                return Err(malformed("From/To", "empty URI"));
            }
            let display = (!display.is_empty()).then(|| display.to_string());
            return Ok(NameAddr {
                display,
                uri,
                params: Params::parse(&v[gt + 1..]),
            });
        }
        // addr-spec form: parameters after the URI belong to the header
        let (uri, params) = match v.find(';') {
            Some(i) => (&v[..i], Params::parse(&v[i..])),
            None => (v, Params::default()),
        };
        if uri.contains(char::is_whitespace) || !uri.contains(':') {
            return Err(malformed("From/To", "not a URI"));
        }
        Ok(NameAddr {
            display: None,
            uri: uri.to_string(),
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    pub fn with_tag(mut self, tag: &str) -> Self {
        self.params.set("tag", Some(tag.to_string()));
        self
    }
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && in_quotes {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == needle && !in_quotes {
            return Some(i);
        }
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

//! The Contact header: `*` or a comma-separated list of name-addr / addr-spec values.

use super::name_addr::NameAddr;
use super::params::split_outside_quotes;
use super::{malformed, HeaderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *` (REGISTER: remove all bindings).
    Star,
    List(Vec<NameAddr>),
}

impl Contact {
    /// Parses one Contact header line (which may hold several values).
    pub fn parse(value: &str) -> Result<Contact, HeaderError> {
        if value.trim() == "*" {
            return Ok(Contact::Star);
        }
        split_outside_quotes(value, ',')
            .into_iter()
            .map(|part| {
                if part.trim().is_empty() {
                    return Err(malformed("Contact", "empty value"));
                }
                NameAddr::parse_for("Contact", part)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Contact::List)
    }

    /// All values of several Contact header lines, in order. `*` must stand alone.
    pub fn parse_lines<'a>(
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Contact>, HeaderError> {
        let mut out: Option<Contact> = None;
        for line in lines {
            out = Some(match (out, Contact::parse(line)?) {
                (None, c) => c,
                (Some(Contact::List(mut a)), Contact::List(b)) => {
                    a.extend(b);
                    Contact::List(a)
                }
                _ => return Err(malformed("Contact", "* mixed with other values")),
            });
        }
        Ok(out)
    }

    pub fn first(&self) -> Option<&NameAddr> {
        match self {
            Contact::Star => None,
            Contact::List(l) => l.first(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_star() {
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Star);
        let c = Contact::parse(r#""A, B" <sip:a@x.com>;q=0.5, sip:b@y.com;expires=60"#).unwrap();
        let Contact::List(l) = &c else { panic!() };
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].params.value("expires"), Some("60"));
        assert_eq!(c.first().unwrap().uri, "sip:a@x.com");
        let all = Contact::parse_lines(["<sip:a@x.com>", "<sip:b@x.com>"]).unwrap().unwrap();
        assert_eq!(
            all,
            Contact::List(vec![
                NameAddr::parse("<sip:a@x.com>").unwrap(),
                NameAddr::parse("<sip:b@x.com>").unwrap()
            ])
        );
        assert!(Contact::parse_lines(["*", "<sip:b@x.com>"]).is_err());
        assert!(Contact::parse("<sip:a@x.com>,,").is_err());
        assert!(Contact::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert_eq!(Contact::parse_lines([]).unwrap(), None);
    }
}

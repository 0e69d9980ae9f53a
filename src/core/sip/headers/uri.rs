//! URIs as they appear in the Request-URI, From/To/Contact and Route: strict SIP/SIPS URI
//! grammar (RFC 3261 §19.1, §25.1) with IPv6 references (RFC 5118), and opaque
//! `scheme:rest` URIs of other schemes (kept verbatim; whether they are supported is a policy
//! decision made in `validate`).
//!
//! rsip 0.4 accepts several malformed URIs and rejects IPv6 hosts, so this grammar is the gate
//! (rsip is only a dev-dependency: a test checks that both agree where rsip parses).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::syntax::{all_escaped_or, is_unreserved};
use super::{malformed, HeaderError};

/// Host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, as written.
    Name(String),
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname`, `IPv4address` or `[IPv6address]`.
    pub fn parse(s: &str) -> Result<Host, HeaderError> {
        if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            return parse_ipv6(inner)
                .map(Host::V6)
                .ok_or_else(|| malformed("URI", "bad IPv6 reference"));
        }
        if let Some(v4) = parse_ipv4(s) {
            return Ok(Host::V4(v4));
        }
        if is_hostname(s) {
            return Ok(Host::Name(s.to_string()));
        }
        Err(malformed("URI", format!("bad host {s:?}")))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// `IPv4address` = four dotted decimal octets (1-3 digits, at most 255).
pub(crate) fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// An IPv6 address without brackets. Also accepts the `x::` `:` IPv4 form with three colons
/// that the RFC 3261 ABNF erroneously allows (RFC 5118 §4.3), read as `x::IPv4`.
pub(crate) fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Some(a);
    }
    let (hex, v4) = s.rsplit_once(":::")?;
    parse_ipv4(v4)?;
    format!("{hex}::{v4}").parse().ok()
}

/// `hostname` = *( domainlabel "." ) toplabel [ "." ]; the top label starts with a letter.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(|l| label_ok(l))
        && labels.last().is_some_and(|t| t.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Splits `host[:port]` (host may be an IPv6 reference) and validates both.
pub fn parse_host_port(s: &str) -> Result<(Host, Option<u16>), HeaderError> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or_else(|| malformed("URI", "unclosed IPv6 reference"))?;
        match &s[end + 1..] {
            "" => (&s[..=end], None),
            rest => (
                &s[..=end],
                Some(rest.strip_prefix(':').ok_or_else(|| malformed("URI", "junk after ]"))?),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = port.map(parse_port).transpose()?;
    Ok((Host::parse(host)?, port))
}

fn parse_port(p: &str) -> Result<u16, HeaderError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("URI", "bad port"));
    }
    p.parse().map_err(|_| malformed("URI", "port out of range"))
}

/// A parsed `sip:` / `sips:` URI. User, password, params and headers keep their escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub sips: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    /// uri-parameters in order (`;lr`, `;transport=tcp`, ...).
    pub params: Vec<(String, Option<String>)>,
    /// `?h=v&...` headers in order.
    pub headers: Vec<(String, String)>,
}

/// Any URI: SIP/SIPS parsed, others kept as scheme and opaque rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Other { scheme: String, rest: String },
}

impl Uri {
    pub fn parse(s: &str) -> Result<Uri, HeaderError> {
        let (scheme, rest) = s.split_once(':').ok_or_else(|| malformed("URI", "no scheme"))?;
        let mut sc = scheme.chars();
        let scheme_ok = sc.next().is_some_and(|c| c.is_ascii_alphabetic())
            && sc.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err(malformed("URI", format!("bad scheme {scheme:?}")));
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            return SipUri::parse_rest(scheme.eq_ignore_ascii_case("sips"), rest).map(Uri::Sip);
        }
        // absoluteURI: uric chars (reserved / unreserved / escaped), brackets for IPv6 hosts
        let uric = |c: char| is_unreserved(c) || ";/?:@&=+$,[]".contains(c);
        if rest.is_empty() || !all_escaped_or(rest, uric) {
            return Err(malformed("URI", "bad absoluteURI"));
        }
        Ok(Uri::Other { scheme: scheme.to_ascii_lowercase(), rest: rest.to_string() })
    }

    /// Lower-case scheme.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.sips => "sips",
            Uri::Sip(_) => "sip",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }
}

impl SipUri {
    pub fn parse(s: &str) -> Result<SipUri, HeaderError> {
        match Uri::parse(s)? {
            Uri::Sip(u) => Ok(u),
            Uri::Other { .. } => Err(malformed("URI", "not a sip/sips URI")),
        }
    }

    /// Parses what follows `sip:`.
    fn parse_rest(sips: bool, s: &str) -> Result<SipUri, HeaderError> {
        // '@' can appear only as the userinfo delimiter (user, password, params, headers
        // cannot hold it unescaped), so there is at most one.
        let (userinfo, rest) = match s.split_once('@') {
            Some((u, r)) if !r.contains('@') => (Some(u), r),
            Some(_) => return Err(malformed("URI", "more than one @")),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            Some(u) => {
                let (user, pw) = parse_userinfo(u)?;
                (Some(user), pw)
            }
            None => (None, None),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, parse_uri_headers(h)?),
            None => (rest, Vec::new()),
        };
        let (hostport, params) = match rest.split_once(';') {
            Some((hp, p)) => (hp, parse_uri_params(p)?),
            None => (rest, Vec::new()),
        };
        let (host, port) = parse_host_port(hostport)?;
        Ok(SipUri { sips, user, password, host, port, params, headers })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }
}

fn parse_userinfo(u: &str) -> Result<(String, Option<String>), HeaderError> {
    let (user, pw) = match u.split_once(':') {
        Some((user, pw)) => (user, Some(pw)),
        None => (u, None),
    };
    let user_ok = |c: char| is_unreserved(c) || "&=+$,;?/".contains(c);
    if user.is_empty() || !all_escaped_or(user, user_ok) {
        return Err(malformed("URI", "bad user part"));
    }
    let pw_ok = |c: char| is_unreserved(c) || "&=+$,".contains(c);
    if let Some(pw) = pw {
        if !all_escaped_or(pw, pw_ok) {
            return Err(malformed("URI", "bad password"));
        }
    }
    Ok((user.to_string(), pw.map(str::to_string)))
}

fn paramchar(c: char) -> bool {
    is_unreserved(c) || "[]/:&+$".contains(c)
}

fn parse_uri_params(s: &str) -> Result<Vec<(String, Option<String>)>, HeaderError> {
    s.split(';')
        .map(|p| {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            let ok = |x: &str| !x.is_empty() && all_escaped_or(x, paramchar);
            if !ok(name) || !value.is_none_or(ok) {
                return Err(malformed("URI", format!("bad uri-parameter {p:?}")));
            }
            Ok((name.to_string(), value.map(str::to_string)))
        })
        .collect()
}

fn parse_uri_headers(s: &str) -> Result<Vec<(String, String)>, HeaderError> {
    let hnv = |c: char| is_unreserved(c) || "[]/?:+$".contains(c);
    s.split('&')
        .map(|h| {
            let (name, value) =
                h.split_once('=').ok_or_else(|| malformed("URI", "header without ="))?;
            if name.is_empty() || !all_escaped_or(name, hnv) || !all_escaped_or(value, hnv) {
                return Err(malformed("URI", format!("bad uri header {h:?}")));
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.sips { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        for (i, (k, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => write!(f, "{u}"),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u =
            SipUri::parse("sips:alice:pw@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi").unwrap();
        assert!(u.sips);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.headers, vec![("Subject".to_string(), "hi".to_string())]);
        assert_eq!(u.to_string(), "sips:alice:pw@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi");
    }

    #[test]
    fn torture_uris_accepted() {
        for s in [
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
            "sip:user;par=u%40example.net@example.com",
            "sip:%00@host5.example.com",
            "sip:[2001:db8::10:5070]",
            "sip:user@[2001:db8:::192.0.2.1]",
            "sip:[::ffff:192.0.2.2]",
            "sip:example.com.",
        ] {
            assert!(Uri::parse(s).is_ok(), "{s}");
        }
        assert_eq!(
            SipUri::parse("sip:user@[2001:db8:::192.0.2.1]").unwrap().host,
            Host::V6("2001:db8::192.0.2.1".parse().unwrap())
        );
        let other = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(other.scheme(), "soap.beep");
    }

    #[test]
    fn malformed_uris_rejected() {
        for s in [
            "<sip:user@example.com>",
            "sip:2001:db8::10",
            "sip:user@example.com; lr",
            "sip:a@b@c",
            "sip:user@-bad.example.com",
            "sip:user@host:99999",
            "sip:user@1.2.3",
            "sip:us%zzer@example.com",
            "sip:user@example.com;;",
            "sip:[2001:db8::1",
            "sip:",
            "1sip:x",
            "http:",
        ] {
            assert!(Uri::parse(s).is_err(), "{s}");
        }
    }

    /// The same URI as rsip's typed value (rsip types the well-known params).
    fn to_rsip(uri: &SipUri) -> rsip::Uri {
        let host = match &uri.host {
            Host::Name(n) => rsip::Host::Domain(n.clone().into()),
            Host::V4(a) => rsip::Host::IpAddr(IpAddr::V4(*a)),
            Host::V6(a) => rsip::Host::IpAddr(IpAddr::V6(*a)),
        };
        let params = uri
            .params
            .iter()
            .map(|(k, v)| {
                rsip::Param::try_from((k.as_str(), v.as_deref())).unwrap_or_else(|_| {
                    rsip::Param::Other(k.clone().into(), v.clone().map(Into::into))
                })
            })
            .collect();
        rsip::Uri {
            scheme: Some(if uri.sips { rsip::Scheme::Sips } else { rsip::Scheme::Sip }),
            auth: uri
                .user
                .as_ref()
                .map(|u| rsip::Auth { user: u.clone(), password: uri.password.clone() }),
            host_with_port: rsip::HostWithPort { host, port: uri.port.map(Into::into) },
            params,
            headers: Vec::new(),
        }
    }

    #[test]
    fn agrees_with_rsip_where_rsip_parses() {
        for s in [
            "sip:alice@example.com:5070;transport=tcp",
            "sip:192.0.2.1",
            "sips:bob@host.example.net",
        ] {
            let ours = to_rsip(&SipUri::parse(s).unwrap());
            let theirs = rsip::Uri::try_from(s).unwrap();
            assert_eq!(ours.host_with_port, theirs.host_with_port, "{s}");
            assert_eq!(ours.auth, theirs.auth, "{s}");
            assert_eq!(ours.params, theirs.params, "{s}");
        }
        // rsip cannot parse IPv6 references; ours converts them.
        let v6 = to_rsip(&SipUri::parse("sip:[2001:db8::9:1]:5060").unwrap());
        assert_eq!(v6.host_with_port.host, rsip::Host::IpAddr("2001:db8::9:1".parse().unwrap()));
    }
}

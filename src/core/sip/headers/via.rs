//! The Via header: `SIP/2.0/UDP host:port;branch=...;received=...;rport`.

use std::fmt;

use super::params::{split_outside_quotes, Params};
use super::syntax::is_token;
use super::uri::parse_host_port;
use super::{malformed, HeaderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-case (`UDP`, `TCP`, `TLS`, ...).
    pub transport: String,
    /// Host as written (IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// Parses one header line, which may hold several comma-separated Via values.
    pub fn parse_all(value: &str) -> Result<Vec<Via>, HeaderError> {
        split_outside_quotes(value, ',').into_iter().map(|v| Via::parse_one(v.trim())).collect()
    }

    pub fn parse_one(value: &str) -> Result<Via, HeaderError> {
        let (proto, rest) = split_protocol(value)?;
        let mut parts = proto.split('/').map(str::trim);
        let (name, version, transport) = (parts.next(), parts.next(), parts.next());
        if !matches!(name, Some(n) if n.eq_ignore_ascii_case("SIP"))
            || version != Some("2.0")
            || !transport.is_some_and(is_token)
            || parts.next().is_some()
        {
            return Err(malformed("Via", "sent-protocol is not SIP/2.0/<transport>"));
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), Params::parse_strict("Via", &rest[i..])?),
            None => (rest.trim(), Params::default()),
        };
        parse_host_port(sent_by).map_err(|_| malformed("Via", "bad sent-by"))?;
        let (host, port) =
            split_host_port(sent_by).ok_or_else(|| malformed("Via", "bad sent-by"))?;
        Ok(Via {
            transport: transport.unwrap_or_default().to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// `host[:port]` as written in the header.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

/// Splits `SIP / 2.0 / UDP host...` into the protocol part and the rest; LWS may surround `/`.
fn split_protocol(value: &str) -> Result<(String, &str), HeaderError> {
    let mut proto = String::new();
    let mut slashes = 0;
    let chars = value.char_indices().peekable();
    for (i, c) in chars {
        if c == '/' {
            slashes += 1;
            proto.push(c);
        } else if c.is_whitespace() {
            // whitespace is allowed around '/', otherwise it ends the protocol part
            let next_non_ws = value[i..].trim_start().chars().next();
            let prev_is_slash = proto.ends_with('/');
            if slashes == 2 && !prev_is_slash && next_non_ws != Some('/') {
                return Ok((proto, &value[i..]));
            }
            if !prev_is_slash && next_non_ws != Some('/') {
                return Err(malformed("Via", "sent-protocol is incomplete"));
            }
        } else {
            proto.push(c);
        }
    }
    Err(malformed("Via", "no sent-by"))
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = format!("[{}]", &rest[..end]);
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.trim().parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.trim().parse().ok()?))),
        Some(_) => None,
        None => Some((s.to_string(), None)),
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}{}", self.transport, self.sent_by(), self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_and_multi() {
        let v = Via::parse_all("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].transport, "TCP");
        assert_eq!(v[0].host, "spindle.example.com");
        assert_eq!(v[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(v[1].sent_by(), "192.168.255.111");
        assert_eq!(v[1].branch(), Some("z9hG4bK30239"));
    }

    #[test]
    fn ipv6_sent_by_and_received() {
        let v = Via::parse_one(
            "SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKas3",
        )
        .unwrap();
        assert_eq!(v.host, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.params.value("received"), Some("2001:db8::9:255"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKas3"
        );
        assert!(Via::parse_one("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255]").is_ok());
    }

    #[test]
    fn rejects() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP host:port",
            "SIP/2.0 host",
        ] {
            assert!(Via::parse_one(bad).is_err(), "{bad}");
        }
        assert!(Via::parse_all("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
    }
}

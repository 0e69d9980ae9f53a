//! The Via header: `SIP/2.0/UDP host:port;branch=...;received=...;rport`.

use std::fmt;

use super::params::{split_outside_quotes, Params};
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
        split_outside_quotes(value, ',')
            .into_iter()
            .map(|v| Via::parse_one(v.trim()))
            .collect()
    }

    pub fn parse_one(value: &str) -> Result<Via, HeaderError> {
        let (proto, rest) = split_protocol(value)?;
        let mut parts = proto.split('/').map(str::trim);
        let (name, version, transport) = (parts.next(), parts.next(), parts.next());
        if !matches!(name, Some(n) if n.eq_ignore_ascii_case("SIP"))
            || version != Some("2.0")
            || transport.is_none_or(str::is_empty)
            || parts.next().is_some()
        {
            return Err(malformed("Via", "sent-protocol is not SIP/2.0/<transport>"));
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), Params::parse(&rest[i..])),
            None => (rest.trim(), Params::default()),
        };
        let (host, port) = split_host_port(sent_by).ok_or_else(|| malformed("Via", "bad sent-by"))?;
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
    let mut chars = value.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
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

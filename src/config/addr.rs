//! Address-like values written as strings in the file: `udp:IP:PORT` transport addresses,
//! `START-END` port ranges and `inbound_from` networks.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::core::sip::{Peer, Transport};

/// Default SIP port when a transport address omits it.
pub const SIP_PORT: u16 = 5060;
/// Default SIP-over-TLS port when a `tls:` address omits it.
pub const SIPS_PORT: u16 = 5061;

/// A value that failed to parse; the message is user-facing and names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddrError(String);

/// A SIP listening socket: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`, `tls:0.0.0.0:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl ListenAddr {
    /// The same transport and address as a core [`Peer`].
    pub fn peer(self) -> Peer {
        Peer { transport: self.transport, addr: self.addr }
    }
}

impl FromStr for ListenAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (transport, addr) = parse_transport_addr(s)?;
        Ok(ListenAddr { transport, addr })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// Parses `TRANSPORT:IP[:PORT]`; a missing port defaults to 5060 (5061 for tls).
pub fn parse_transport_addr(s: &str) -> Result<(Transport, SocketAddr), AddrError> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(AddrError(format!(
            "{s:?}: expected TRANSPORT:IP:PORT, e.g. \"udp:127.0.0.1:5060\""
        )));
    };
    let transport = parse_transport(scheme).ok_or_else(|| {
        AddrError(format!("{s:?}: unknown transport {scheme:?} (expected udp, tcp or tls)"))
    })?;
    let addr = parse_socket_addr(rest, default_port(transport)).ok_or_else(|| {
        AddrError(format!("{s:?}: invalid address {rest:?} (expected IP:PORT or [IPv6]:PORT)"))
    })?;
    Ok((transport, addr))
}

fn parse_transport(token: &str) -> Option<Transport> {
    match token.to_ascii_lowercase().as_str() {
        "udp" => Some(Transport::Udp),
        "tcp" => Some(Transport::Tcp),
        "tls" => Some(Transport::Tls),
        _ => None,
    }
}

fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls => SIPS_PORT,
        Transport::Udp | Transport::Tcp => SIP_PORT,
    }
}

fn parse_socket_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}

/// An inclusive UDP port range for RTP: even start, at least one RTP/RTCP pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }

    /// Always false: a valid range holds at least two ports.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Even ports usable for RTP (RTCP takes the odd port above): start, start+2, ...
    pub fn rtp_ports(&self) -> impl Iterator<Item = u16> {
        let end = self.end;
        (self.start..end).step_by(2)
    }
}

impl FromStr for PortRange {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let parsed = s.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        let Some((start, end)) = parsed else {
            return Err(AddrError(format!("{s:?}: expected START-END, e.g. \"20000-20999\"")));
        };
        if start == 0 {
            return Err(AddrError(format!("{s:?}: start must be at least 1")));
        }
        if start > end {
            return Err(AddrError(format!("{s:?}: start {start} is greater than end {end}")));
        }
        if start % 2 != 0 {
            return Err(AddrError(format!(
                "{s:?}: start {start} must be even (RTP even, RTCP odd)"
            )));
        }
        if end - start < 1 {
            return Err(AddrError(format!(
                "{s:?}: must hold at least 2 ports (one RTP/RTCP pair)"
            )));
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Parses a network (`10.0.0.0/8`) or a bare address (→ /32 or /128). Host bits are cleared.
pub fn parse_net(s: &str) -> Result<IpNet, AddrError> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        AddrError(format!("{s:?}: expected an IP address or CIDR network, e.g. \"192.0.2.0/24\""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        let a: ListenAddr = "udp:127.0.0.1:5060".parse().unwrap();
        assert_eq!(a.transport, Transport::Udp);
        assert_eq!(a.addr, "127.0.0.1:5060".parse().unwrap());
        let b: ListenAddr = "tcp:[::1]:5070".parse().unwrap();
        assert_eq!(b.transport, Transport::Tcp);
        assert_eq!(b.addr, "[::1]:5070".parse().unwrap());
        let c: ListenAddr = "TLS:10.0.0.1".parse().unwrap();
        assert_eq!(c.transport, Transport::Tls);
        assert_eq!(c.addr.port(), 5061);
        let d: ListenAddr = "udp:[::1]".parse().unwrap();
        assert_eq!(d.addr, "[::1]:5060".parse().unwrap());
        assert_eq!(a.to_string(), "udp:127.0.0.1:5060");
        assert_eq!(b.to_string(), "tcp:[::1]:5070");
        assert_eq!(a.peer(), Peer { transport: Transport::Udp, addr: a.addr });
    }

    #[test]
    fn listen_addr_errors() {
        let e = "udpx:1.2.3.4:5060".parse::<ListenAddr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"udpx:1.2.3.4:5060\": unknown transport \"udpx\" (expected udp, tcp or tls)"
        );
        let e = "1.2.3.4".parse::<ListenAddr>().unwrap_err();
        assert!(e.to_string().contains("expected TRANSPORT:IP:PORT"), "{e}");
        let e = "udp:host.example:5060".parse::<ListenAddr>().unwrap_err();
        assert!(e.to_string().contains("invalid address \"host.example:5060\""), "{e}");
        assert!("udp:1.2.3.4:99999".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn port_range() {
        let r: PortRange = "20000-20999".parse().unwrap();
        assert_eq!(r, PortRange { start: 20000, end: 20999 });
        assert_eq!(r.len(), 1000);
        assert!(r.contains(20000) && r.contains(20999) && !r.contains(21000));
        assert_eq!(r.rtp_ports().count(), 500);
        let pair: PortRange = "30000-30001".parse().unwrap();
        assert_eq!(pair.rtp_ports().collect::<Vec<_>>(), vec![30000]);
        assert_eq!(r.to_string(), "20000-20999");
    }

    #[test]
    fn port_range_errors() {
        for (text, expect) in [
            ("20001-20999", "must be even"),
            ("20000-20000", "at least 2 ports"),
            ("20999-20000", "greater than end"),
            ("0-100", "at least 1"),
            ("20000", "expected START-END"),
            ("a-b", "expected START-END"),
            ("20000-70000", "expected START-END"),
        ] {
            let e = text.parse::<PortRange>().unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net("127.0.0.2").unwrap(), "127.0.0.2/32".parse::<IpNet>().unwrap());
        assert_eq!(parse_net("::1").unwrap(), "::1/128".parse::<IpNet>().unwrap());
        assert_eq!(parse_net("10.1.2.3/8").unwrap(), "10.0.0.0/8".parse::<IpNet>().unwrap());
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").unwrap_err().to_string().contains("CIDR"));
    }
}

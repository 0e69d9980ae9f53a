//! Inbound source ACL: maps a packet's source address to the carrier it belongs to.

use std::net::IpAddr;

use ipnet::IpNet;

/// Per-carrier lists of source networks, checked in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundAcl {
    entries: Vec<(usize, Vec<IpNet>)>,
}

impl InboundAcl {
    /// Builds the ACL from `(carrier index, networks)` pairs; earlier pairs win on overlap.
    pub fn new(entries: impl IntoIterator<Item = (usize, Vec<IpNet>)>) -> Self {
        InboundAcl { entries: entries.into_iter().collect() }
    }

    /// The first carrier whose networks contain `src`. An IPv4-mapped IPv6 source
    /// (`::ffff:a.b.c.d`, as seen on dual-stack sockets) also matches IPv4 networks.
    pub fn classify(&self, src: IpAddr) -> Option<usize> {
        let canonical = canonical(src);
        self.entries
            .iter()
            .find(|(_, nets)| nets.iter().any(|net| net.contains(&src) || net.contains(&canonical)))
            .map(|(carrier, _)| *carrier)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|(_, nets)| nets.is_empty())
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn acl() -> InboundAcl {
        InboundAcl::new([
            (0, nets(&["203.0.113.0/24", "2001:db8:1::/48"])),
            (1, nets(&["198.51.100.7/32", "203.0.113.128/25"])),
        ])
    }

    #[test]
    fn classifies_v4_and_v6_sources() {
        let acl = acl();
        assert_eq!(acl.classify(ip("203.0.113.9")), Some(0));
        assert_eq!(acl.classify(ip("198.51.100.7")), Some(1));
        assert_eq!(acl.classify(ip("198.51.100.8")), None);
        assert_eq!(acl.classify(ip("2001:db8:1::5")), Some(0));
        assert_eq!(acl.classify(ip("2001:db8:2::5")), None);
        assert_eq!(acl.classify(ip("10.0.0.1")), None);
    }

    #[test]
    fn first_carrier_wins_on_overlap() {
        assert_eq!(acl().classify(ip("203.0.113.200")), Some(0));
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_ipv4_networks() {
        let acl = acl();
        assert_eq!(acl.classify(ip("::ffff:198.51.100.7")), Some(1));
        assert_eq!(acl.classify(ip("::ffff:203.0.113.1")), Some(0));
        assert_eq!(acl.classify(ip("::ffff:10.0.0.1")), None);
        // IPv4-compatible (deprecated ::a.b.c.d) is not treated as mapped.
        assert_eq!(acl.classify(ip("::198.51.100.7")), None);
    }

    #[test]
    fn empty_acl_matches_nothing() {
        let acl = InboundAcl::new([(0, Vec::new())]);
        assert!(acl.is_empty());
        assert_eq!(acl.classify(ip("203.0.113.9")), None);
        assert!(!InboundAcl::new([(3, nets(&["0.0.0.0/0"]))]).is_empty());
        assert_eq!(InboundAcl::new([(3, nets(&["0.0.0.0/0"]))]).classify(ip("1.2.3.4")), Some(3));
    }
}

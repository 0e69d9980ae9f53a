//! Media source rules for one call's RTP/RTCP pair (strict source, as rtpengine's
//! `strict-source`): packets are accepted only from the address the SDP named or, where NAT
//! rewrote it, latched once from an address the peer may send from (the SDP's own IP at any
//! port, or a network the endpoint allows for the peer: a carrier's `inbound_from`). After the
//! first accepted packet the source is fixed; only a new offer (re-INVITE/UPDATE) lets it
//! latch again. Replies (RTP and RTCP reports) only ever go to the expected or latched address.
//!
//! Pure data: [`SourceGuard::rtp_allowed`] decides, [`SourceGuard::latch_rtp`] fixes the
//! source once the packet proved valid; the same for RTCP.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Where one call's media may come from and where it goes.
#[derive(Debug, Clone)]
pub struct SourceGuard {
    /// The SDP's connection address and port.
    expected_rtp: SocketAddr,
    /// The RTCP address that goes with it (port + 1).
    expected_rtcp: SocketAddr,
    /// Networks a NATed peer may be latched from (besides the SDP's own IP).
    latch_nets: Vec<IpNet>,
    rtp: Option<SocketAddr>,
    rtcp: Option<SocketAddr>,
}

impl SourceGuard {
    /// A guard for the SDP's address `expected_rtp`; no extra networks yet.
    pub fn new(expected_rtp: SocketAddr) -> Self {
        SourceGuard {
            expected_rtp,
            expected_rtcp: rtcp_of(expected_rtp),
            latch_nets: Vec::new(),
            rtp: None,
            rtcp: None,
        }
    }

    /// Networks a NATed peer may also be latched from (the carrier's `inbound_from`).
    pub fn set_latch_nets(&mut self, nets: Vec<IpNet>) {
        self.latch_nets = nets;
    }

    /// A new offer: expect `rtp` and let the source latch once more.
    pub fn reoffer(&mut self, rtp: SocketAddr) {
        self.expected_rtp = rtp;
        self.expected_rtcp = rtcp_of(rtp);
        self.rtp = None;
        self.rtcp = None;
    }

    /// Whether an RTP packet from `from` may be looked at (it latches only via `latch_rtp`).
    pub fn rtp_allowed(&self, from: SocketAddr) -> bool {
        match self.rtp {
            Some(latched) => same(latched, from),
            None => same(from, self.expected_rtp) || self.may_latch(from.ip()),
        }
    }

    /// Fixes the RTP source at `from` if it is not fixed yet (call after `rtp_allowed`).
    pub fn latch_rtp(&mut self, from: SocketAddr) {
        if self.rtp.is_none() && self.rtp_allowed(from) {
            self.rtp = Some(from);
        }
    }

    /// Whether an RTCP packet from `from` may be looked at.
    pub fn rtcp_allowed(&self, from: SocketAddr) -> bool {
        match self.rtcp {
            Some(latched) => same(latched, from),
            None => {
                same(from, self.expected_rtcp)
                    || self.may_latch(from.ip())
                    || self.rtp.is_some_and(|r| canonical(r.ip()) == canonical(from.ip()))
            }
        }
    }

    /// Fixes the RTCP source at `from` if it is not fixed yet (call after `rtcp_allowed`).
    pub fn latch_rtcp(&mut self, from: SocketAddr) {
        if self.rtcp.is_none() && self.rtcp_allowed(from) {
            self.rtcp = Some(from);
        }
    }

    pub fn rtp_latched(&self) -> bool {
        self.rtp.is_some()
    }

    /// Where RTP goes: the latched source, else the SDP's address.
    pub fn rtp_target(&self) -> SocketAddr {
        self.rtp.unwrap_or(self.expected_rtp)
    }

    /// Where RTCP reports go: the latched RTCP source, else beside the latched RTP source,
    /// else the SDP's RTCP address. Never an address that was refused.
    pub fn rtcp_target(&self) -> SocketAddr {
        match (self.rtcp, self.rtp) {
            (Some(rtcp), _) => rtcp,
            (None, Some(rtp)) if !same(rtp, self.expected_rtp) => rtcp_of(rtp),
            _ => self.expected_rtcp,
        }
    }

    /// An unlatched source may latch from the SDP's own IP (a port-rewriting NAT) or from one
    /// of the allowed networks.
    fn may_latch(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip == canonical(self.expected_rtp.ip()) || self.latch_nets.iter().any(|n| n.contains(&ip))
    }
}

/// The RTCP address beside an RTP address (RFC 3550: port + 1).
pub fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

/// Equal addresses, treating `::ffff:a.b.c.d` as `a.b.c.d`.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_sdp_address_is_accepted_and_others_refused() {
        let mut g = SourceGuard::new(a("203.0.113.5:4000"));
        assert!(!g.rtp_allowed(a("198.51.100.66:4000")), "an attacker before any packet");
        assert!(g.rtp_allowed(a("203.0.113.5:4000")));
        g.latch_rtp(a("203.0.113.5:4000"));
        assert!(!g.rtp_allowed(a("198.51.100.66:4000")), "an attacker after the latch");
        assert!(!g.rtp_allowed(a("203.0.113.5:4002")), "another port of the peer, once fixed");
        assert_eq!(g.rtp_target(), a("203.0.113.5:4000"));
        assert_eq!(g.rtcp_target(), a("203.0.113.5:4001"));
    }

    #[test]
    fn a_refused_source_never_latches() {
        let mut g = SourceGuard::new(a("203.0.113.5:4000"));
        g.latch_rtp(a("198.51.100.66:5000"));
        assert!(!g.rtp_latched());
        assert_eq!(g.rtp_target(), a("203.0.113.5:4000"));
    }

    #[test]
    fn nat_latches_once_inside_the_carrier_networks_then_fixed() {
        let mut g = SourceGuard::new(a("10.0.0.7:4000")); // private SDP address behind NAT
        g.set_latch_nets(vec!["203.0.113.0/24".parse().unwrap()]);
        assert!(!g.rtp_allowed(a("198.51.100.66:31000")), "outside inbound_from");
        assert!(g.rtp_allowed(a("203.0.113.9:31000")));
        g.latch_rtp(a("203.0.113.9:31000"));
        assert!(!g.rtp_allowed(a("203.0.113.10:31000")), "no re-latch inside the network");
        assert!(!g.rtp_allowed(a("10.0.0.7:4000")), "nor back to the SDP address");
        assert_eq!(g.rtp_target(), a("203.0.113.9:31000"));
        assert_eq!(g.rtcp_target(), a("203.0.113.9:31001"));
    }

    #[test]
    fn a_port_rewriting_nat_on_the_sdp_ip_latches() {
        let mut g = SourceGuard::new(a("203.0.113.5:4000"));
        assert!(g.rtp_allowed(a("203.0.113.5:61000")));
        g.latch_rtp(a("203.0.113.5:61000"));
        assert_eq!(g.rtp_target(), a("203.0.113.5:61000"));
    }

    #[test]
    fn only_a_new_offer_re_latches() {
        let mut g = SourceGuard::new(a("203.0.113.5:4000"));
        g.latch_rtp(a("203.0.113.5:4000"));
        g.reoffer(a("203.0.113.6:5000"));
        assert!(!g.rtp_allowed(a("203.0.113.5:4000")), "the old source is gone");
        assert!(g.rtp_allowed(a("203.0.113.6:5000")));
        g.latch_rtp(a("203.0.113.6:5000"));
        assert_eq!(g.rtp_target(), a("203.0.113.6:5000"));
    }

    #[test]
    fn rtcp_from_an_attacker_is_refused_and_never_becomes_the_report_target() {
        let mut g = SourceGuard::new(a("203.0.113.5:4000"));
        assert!(!g.rtcp_allowed(a("198.51.100.66:4001")));
        g.latch_rtcp(a("198.51.100.66:4001"));
        assert_eq!(g.rtcp_target(), a("203.0.113.5:4001"));
        assert!(g.rtcp_allowed(a("203.0.113.5:4001")));
        g.latch_rtcp(a("203.0.113.5:4001"));
        assert!(!g.rtcp_allowed(a("203.0.113.5:4003")), "fixed once latched");
    }

    #[test]
    fn rtcp_beside_a_nat_latched_rtp_source() {
        let mut g = SourceGuard::new(a("10.0.0.7:4000"));
        g.set_latch_nets(vec!["203.0.113.0/24".parse().unwrap()]);
        g.latch_rtp(a("203.0.113.9:31000"));
        assert_eq!(g.rtcp_target(), a("203.0.113.9:31001"));
        assert!(g.rtcp_allowed(a("203.0.113.9:31555")));
        g.latch_rtcp(a("203.0.113.9:31555"));
        assert_eq!(g.rtcp_target(), a("203.0.113.9:31555"));
    }

    #[test]
    fn ipv4_mapped_sources_match_ipv4() {
        let mut g = SourceGuard::new(a("203.0.113.5:4000"));
        assert!(g.rtp_allowed(a("[::ffff:203.0.113.5]:4000")));
        g.latch_rtp(a("[::ffff:203.0.113.5]:4000"));
        assert!(g.rtp_allowed(a("203.0.113.5:4000")));
    }
}

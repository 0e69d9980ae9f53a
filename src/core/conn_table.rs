//! Connection admission for stream listeners (SIP over TCP/TLS, the status server): a cap on
//! connections open at once, a cap per source address, and a share of the total reserved for
//! privileged sources (a carrier's proxy, the operator on loopback) that ordinary sources can
//! never take. Pure bookkeeping: the I/O shell asks [`ConnTable::admit`] at accept time and
//! calls [`ConnTable::release`] when the connection goes.

use std::collections::HashMap;
use std::net::IpAddr;

use thiserror::Error;

/// The caps as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCaps {
    /// Connections open at once, all sources together.
    pub total: usize,
    /// Connections open at once from one ordinary source address.
    pub per_source: usize,
    /// Of `total`, slots only privileged sources may take.
    pub reserved: usize,
}

impl ConnCaps {
    /// `total` with `percent` of it reserved for privileged sources.
    pub fn with_reserve(total: usize, per_source: usize, percent: u8) -> Self {
        let reserved = total * usize::from(percent.min(100)) / 100;
        ConnCaps { total, per_source, reserved }
    }
}

/// Who is connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClass {
    /// May use the reserved share; bounded by the total only.
    Privileged,
    /// Bounded by its per-source cap and by the total minus the reserve.
    Ordinary,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConnRefusal {
    #[error("connections from this source at their cap")]
    PerSource,
    #[error("connections at the total cap")]
    Total,
}

/// Connections open now, by source.
#[derive(Debug, Clone)]
pub struct ConnTable {
    caps: ConnCaps,
    by_source: HashMap<IpAddr, usize>,
    open: usize,
    /// Connections refused since start, for the counters.
    pub refused: u64,
}

impl ConnTable {
    pub fn new(caps: ConnCaps) -> Self {
        ConnTable { caps, by_source: HashMap::new(), open: 0, refused: 0 }
    }

    /// Takes a slot for a new connection from `source`, or says why not.
    pub fn admit(&mut self, source: IpAddr, class: ConnClass) -> Result<(), ConnRefusal> {
        let verdict = self.check(source, class);
        match verdict {
            Ok(()) => {
                *self.by_source.entry(source).or_insert(0) += 1;
                self.open += 1;
            }
            Err(_) => self.refused += 1,
        }
        verdict
    }

    fn check(&self, source: IpAddr, class: ConnClass) -> Result<(), ConnRefusal> {
        let from_source = self.by_source.get(&source).copied().unwrap_or(0);
        match class {
            ConnClass::Privileged if self.open >= self.caps.total => Err(ConnRefusal::Total),
            ConnClass::Privileged => Ok(()),
            ConnClass::Ordinary if from_source >= self.caps.per_source => {
                Err(ConnRefusal::PerSource)
            }
            ConnClass::Ordinary
                if self.open >= self.caps.total.saturating_sub(self.caps.reserved) =>
            {
                Err(ConnRefusal::Total)
            }
            ConnClass::Ordinary => Ok(()),
        }
    }

    /// The connection from `source` went; its slot (and its entry, when the last) is freed.
    pub fn release(&mut self, source: IpAddr) {
        if let Some(n) = self.by_source.get_mut(&source) {
            *n -= 1;
            self.open -= 1;
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }

    /// Distinct sources with a connection open (memory is per open source only).
    pub fn sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_is_held_to_its_cap_others_still_get_in() {
        let mut t = ConnTable::new(ConnCaps { total: 100, per_source: 3, reserved: 10 });
        let a = ip("198.51.100.7");
        for _ in 0..3 {
            assert_eq!(t.admit(a, ConnClass::Ordinary), Ok(()));
        }
        assert_eq!(t.admit(a, ConnClass::Ordinary), Err(ConnRefusal::PerSource));
        assert_eq!(t.admit(ip("198.51.100.8"), ConnClass::Ordinary), Ok(()));
        assert_eq!(t.refused, 1);
    }

    #[test]
    fn the_reserve_is_left_for_privileged_sources() {
        let mut t = ConnTable::new(ConnCaps::with_reserve(10, 100, 30));
        let many = ip("198.51.100.7");
        let n = (0..20).filter(|_| t.admit(many, ConnClass::Ordinary).is_ok()).count();
        assert_eq!(n, 7, "ordinary sources stop at total minus the reserve");
        let carrier = ip("203.0.113.5");
        let m = (0..20).filter(|_| t.admit(carrier, ConnClass::Privileged).is_ok()).count();
        assert_eq!(m, 3, "the carrier gets the reserved share, and no more than the total");
        assert_eq!(t.admit(carrier, ConnClass::Privileged), Err(ConnRefusal::Total));
    }

    #[test]
    fn slots_and_entries_are_returned_when_connections_go() {
        let mut t = ConnTable::new(ConnCaps { total: 4, per_source: 2, reserved: 0 });
        let a = ip("198.51.100.7");
        t.admit(a, ConnClass::Ordinary).unwrap();
        t.admit(a, ConnClass::Ordinary).unwrap();
        assert!(t.admit(a, ConnClass::Ordinary).is_err());
        t.release(a);
        t.release(a);
        t.release(a); // a release too many is harmless
        assert_eq!((t.open(), t.sources()), (0, 0));
        assert_eq!(t.admit(a, ConnClass::Ordinary), Ok(()));
    }
}

//! Login throttling: after each failed login the next attempt is refused for an exponentially
//! growing delay, and after too many failures everyone is locked out for a while. Counted per
//! client address (IPv6 per /64) and globally (an attacker with many addresses).
//! Plain state told the time; the caller refuses attempts while [`Lockout::allowed`] is false.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a lockout lasts; failures older than this are forgotten.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Delay after the first failure that slows down; it doubles with each further failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// When slowdown starts and when lockout starts, in failures.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub slow_after: u32,
    pub lock_after: u32,
}

/// One client address: 1, 2, 4, 8 s after failures 1-4, locked after the 5th.
pub const PER_CLIENT: Policy = Policy { slow_after: 1, lock_after: 5 };
/// Everyone: 1, 2, 4 ... s after failures 10-19, locked after the 20th.
pub const GLOBAL: Policy = Policy { slow_after: 10, lock_after: 20 };

impl Policy {
    /// How long attempts are refused after the `failures`-th failure.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures >= self.lock_after {
            LOCKOUT
        } else if failures >= self.slow_after {
            let doublings = (failures - self.slow_after).min(16);
            FIRST_DELAY.saturating_mul(1 << doublings).min(LOCKOUT)
        } else {
            Duration::ZERO
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

impl Failures {
    fn record(slot: &mut Option<Failures>, policy: Policy, now: Instant) {
        let count = slot.map_or(0, |f| f.count).saturating_add(1);
        *slot = Some(Failures { count, last: now, blocked_until: now + policy.delay(count) });
    }

    fn blocked(&self, now: Instant) -> bool {
        now < self.blocked_until
    }

    fn forgotten(&self, now: Instant) -> bool {
        !self.blocked(now) && now.saturating_duration_since(self.last) >= LOCKOUT
    }
}

/// Failed logins per client and overall.
#[derive(Debug, Default)]
pub struct Lockout {
    clients: HashMap<IpAddr, Failures>,
    global: Option<Failures>,
}

impl Lockout {
    pub fn new() -> Lockout {
        Lockout::default()
    }

    /// Whether `client` may try a password now.
    pub fn allowed(&mut self, client: IpAddr, now: Instant) -> bool {
        self.forget(now);
        let blocked = |f: Option<&Failures>| f.is_some_and(|f| f.blocked(now));
        !blocked(self.global.as_ref()) && !blocked(self.clients.get(&key(client)))
    }

    pub fn failed(&mut self, client: IpAddr, now: Instant) {
        self.forget(now);
        let mut slot = self.clients.get(&key(client)).copied();
        Failures::record(&mut slot, PER_CLIENT, now);
        if let Some(f) = slot {
            self.clients.insert(key(client), f);
        }
        Failures::record(&mut self.global, GLOBAL, now);
    }

    /// A correct password clears the client's failures (not the global count: a successful
    /// login must not help an attacker spreading guesses over many addresses).
    pub fn succeeded(&mut self, client: IpAddr) {
        self.clients.remove(&key(client));
    }

    fn forget(&mut self, now: Instant) {
        self.clients.retain(|_, f| !f.forgotten(now));
        if self.global.is_some_and(|f| f.forgotten(now)) {
            self.global = None;
        }
    }
}

/// IPv4 (also IPv4-mapped IPv6) as is; IPv6 by its /64, which one host usually controls.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn exponential_delay_then_lockout() {
        assert_eq!(PER_CLIENT.delay(1), Duration::from_secs(1));
        assert_eq!(PER_CLIENT.delay(4), Duration::from_secs(8));
        assert_eq!(PER_CLIENT.delay(5), LOCKOUT);
        assert_eq!(GLOBAL.delay(9), Duration::ZERO);
        assert_eq!(GLOBAL.delay(10), Duration::from_secs(1));
        assert_eq!(GLOBAL.delay(19), Duration::from_secs(512));
        assert_eq!(GLOBAL.delay(20), LOCKOUT);
    }

    #[test]
    fn client_slowed_then_locked_then_forgiven() {
        let t0 = Instant::now();
        let mut l = Lockout::new();
        let mut now = t0;
        for i in 1..=4u32 {
            assert!(l.allowed(A, now), "attempt {i}");
            l.failed(A, now);
            assert!(!l.allowed(A, now), "refused right after failure {i}");
            assert!(l.allowed(B, now), "another client is not slowed");
            now += PER_CLIENT.delay(i);
        }
        assert!(l.allowed(A, now));
        l.failed(A, now);
        assert!(!l.allowed(A, now + LOCKOUT - Duration::from_secs(1)));
        assert!(l.allowed(A, now + LOCKOUT));
        // after the lockout the count starts over: one failure is a 1 s delay again
        l.failed(A, now + LOCKOUT);
        assert!(l.allowed(A, now + LOCKOUT + Duration::from_secs(1)));
    }

    #[test]
    fn success_clears_the_client() {
        let t0 = Instant::now();
        let mut l = Lockout::new();
        l.failed(A, t0);
        l.succeeded(A);
        assert!(l.allowed(A, t0));
    }

    #[test]
    fn many_addresses_hit_the_global_lockout() {
        let t0 = Instant::now();
        let mut l = Lockout::new();
        let mut now = t0;
        for i in 0..GLOBAL.lock_after {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8));
            assert!(l.allowed(ip, now), "failure {i}");
            l.failed(ip, now);
            now += GLOBAL.delay(i + 1).min(Duration::from_secs(600));
        }
        // a fresh address, even after the longest slowdown, is locked out
        assert!(!l.allowed(B, now));
        assert!(l.allowed(B, now + LOCKOUT));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key(mapped), A);
    }
}

//! Login throttling: after each failed login the same client's next attempt is refused for an
//! exponentially growing delay, and after too many failures that client is locked out for a
//! while (per client address; IPv6 per /64). Failures from everyone together only slow every
//! login down by a few seconds ([`Lockout::global_delay`]): an attacker with many addresses can
//! never lock the operator out, and the operator on the box (loopback) is never locked out.
//! Plain state told the time; the caller refuses attempts while [`Lockout::allowed`] is false
//! and waits [`Lockout::global_delay`] before checking a password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a lockout lasts; failures older than this are forgotten.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Delay after the first failure that slows down; it doubles with each further failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// When slowdown starts and when lockout starts, in failures, and the longest slowdown.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub slow_after: u32,
    pub lock_after: u32,
    pub max_delay: Duration,
}

/// One client address: 1, 2, 4, 8 s after failures 1-4, locked after the 5th.
pub const PER_CLIENT: Policy = Policy { slow_after: 1, lock_after: 5, max_delay: LOCKOUT };
/// The operator on loopback: slowed down like anyone (1, 2, 4, 8 s), never locked out.
pub const LOOPBACK: Policy =
    Policy { slow_after: 1, lock_after: u32::MAX, max_delay: Duration::from_secs(8) };
/// Everyone together: every login waits 1, 2, 4 s after failures 10, 11, 12+ (never a lockout).
pub const GLOBAL: Policy =
    Policy { slow_after: 10, lock_after: u32::MAX, max_delay: Duration::from_secs(4) };

impl Policy {
    /// How long attempts are refused after the `failures`-th failure.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures >= self.lock_after {
            LOCKOUT
        } else if failures >= self.slow_after {
            let doublings = (failures - self.slow_after).min(16);
            FIRST_DELAY.saturating_mul(1 << doublings).min(self.max_delay)
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

    /// Whether `client` may try a password now (its own failures only).
    pub fn allowed(&mut self, client: IpAddr, now: Instant) -> bool {
        self.forget(now);
        !self.clients.get(&key(client)).is_some_and(|f| f.blocked(now))
    }

    /// How long every login waits before its password is checked, because of everyone's recent
    /// failures (at most [`GLOBAL`]'s `max_delay`; nothing for the operator on loopback).
    pub fn global_delay(&mut self, client: IpAddr, now: Instant) -> Duration {
        self.forget(now);
        match self.global {
            Some(f) if !is_loopback(client) => f.blocked_until.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    pub fn failed(&mut self, client: IpAddr, now: Instant) {
        self.forget(now);
        let mut slot = self.clients.get(&key(client)).copied();
        let policy = if is_loopback(client) { LOOPBACK } else { PER_CLIENT };
        Failures::record(&mut slot, policy, now);
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

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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
        assert_eq!(GLOBAL.delay(12), Duration::from_secs(4));
        assert_eq!(GLOBAL.delay(1000), Duration::from_secs(4), "a slowdown, never a lockout");
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
    fn many_addresses_only_slow_everyone_down_never_lock_out() {
        let t0 = Instant::now();
        let mut l = Lockout::new();
        for i in 0..200u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8));
            assert!(l.allowed(ip, t0), "failure {i}");
            l.failed(ip, t0);
        }
        // a fresh address may still try, after at most the global slowdown
        assert!(l.allowed(B, t0));
        let wait = l.global_delay(B, t0);
        assert!(wait > Duration::ZERO && wait <= GLOBAL.max_delay, "{wait:?}");
        assert_eq!(l.global_delay(B, t0 + GLOBAL.max_delay), Duration::ZERO);
    }

    #[test]
    fn the_operator_on_loopback_is_never_locked_out() {
        let t0 = Instant::now();
        let mut l = Lockout::new();
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        let mut now = t0;
        for _ in 0..50 {
            l.failed(me, now);
            l.failed(A, now); // and an attacker failing along
            now += Duration::from_secs(1);
        }
        assert!(!l.allowed(A, now), "the attacker is locked");
        assert!(l.allowed(me, now + LOOPBACK.max_delay), "loopback only waits its slowdown");
        assert_eq!(l.global_delay(me, now), Duration::ZERO);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(l.allowed(mapped, now + LOOPBACK.max_delay));
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

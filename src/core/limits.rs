//! Load shedding: a cap on calls in progress, and per-source rate limits on new requests. Each
//! source has two token buckets: one for INVITEs and one for every other out-of-dialog request
//! (OPTIONS, REGISTER, ...). An INVITE takes from its own bucket first and may borrow from the
//! other; nothing else ever takes an INVITE's token, so a carrier's OPTIONS flood cannot starve
//! its calls. Beyond the limits new INVITEs get 503 with Retry-After so the carrier routes
//! elsewhere; calls in progress (and requests inside their dialogs) are never touched.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Calls in progress beyond which new INVITEs are refused.
    pub max_calls: usize,
    /// New out-of-dialog requests other than INVITE per second from one source (sustained).
    pub requests_per_second: f64,
    /// How many may come at once before the rate applies.
    pub burst: f64,
    /// New INVITEs per second from one source, from their own bucket (sustained).
    pub invites_per_second: f64,
    /// How many INVITEs may come at once before their rate applies.
    pub invite_burst: f64,
    /// Seconds a refused carrier is asked to wait (Retry-After).
    pub retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 100,
            requests_per_second: 200.0,
            burst: 400.0,
            invites_per_second: 100.0,
            invite_burst: 200.0,
            retry_after: Duration::from_secs(30),
        }
    }
}

/// What a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A new INVITE: its own bucket first, then the other one.
    Invite,
    /// Any other out-of-dialog request: its own bucket only.
    Other,
}

/// Sources remembered at most (oldest forgotten first), so a spoofed flood cannot grow memory.
const MAX_SOURCES: usize = 4096;

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket { tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A source's two buckets.
#[derive(Debug, Clone, Copy)]
struct Source {
    invite: Bucket,
    other: Bucket,
    last: Instant,
}

/// Token buckets per source address.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    invite_rate: f64,
    invite_burst: f64,
    buckets: HashMap<IpAddr, Source>,
    pub refused: u64,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        RateLimiter {
            rate: limits.requests_per_second.max(0.0),
            burst: limits.burst.max(1.0),
            invite_rate: limits.invites_per_second.max(0.0),
            invite_burst: limits.invite_burst.max(1.0),
            buckets: HashMap::new(),
            refused: 0,
        }
    }

    /// Takes one token for a request of kind `budget` from `source`; false when refused.
    pub fn allow(&mut self, now: Instant, source: IpAddr, budget: Budget) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_SOURCES {
            self.forget_oldest();
        }
        let (burst, invite_burst) = (self.burst, self.invite_burst);
        let s = self.buckets.entry(source).or_insert(Source {
            invite: Bucket::full(invite_burst, now),
            other: Bucket::full(burst, now),
            last: now,
        });
        s.invite.refill(now, self.invite_rate, invite_burst);
        s.other.refill(now, self.rate, burst);
        s.last = now;
        let ok = match budget {
            Budget::Invite => s.invite.take() || s.other.take(),
            Budget::Other => s.other.take(),
        };
        if !ok {
            self.refused += 1;
        }
        ok
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.buckets.iter().min_by_key(|(_, s)| s.last).map(|(ip, _)| *ip) {
            self.buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_source() {
        let t0 = Instant::now();
        let limits = Limits { requests_per_second: 10.0, burst: 5.0, ..Limits::default() };
        let mut r = RateLimiter::new(&limits);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let o = Budget::Other;
        assert_eq!((0..10).filter(|_| r.allow(t0, a, o)).count(), 5, "the burst");
        assert!(r.allow(t0, b, o), "another source has its own bucket");
        // 1 s later: 10 more tokens, capped at the burst of 5
        assert_eq!((0..10).filter(|_| r.allow(t0 + Duration::from_secs(1), a, o)).count(), 5);
        // 100 ms later: one token
        assert!(r.allow(t0 + Duration::from_millis(1100), a, o));
        assert!(!r.allow(t0 + Duration::from_millis(1100), a, o));
        assert_eq!(r.refused, 11);
    }

    #[test]
    fn memory_is_bounded_under_a_spoofed_flood() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&Limits::default());
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.allow(t0 + Duration::from_micros(u64::from(i)), ip, Budget::Other);
        }
        assert_eq!(r.buckets.len(), MAX_SOURCES);
    }

    #[test]
    fn an_options_flood_never_takes_an_invites_token() {
        let t0 = Instant::now();
        let limits = Limits {
            requests_per_second: 10.0,
            burst: 10.0,
            invites_per_second: 2.0,
            invite_burst: 4.0,
            ..Limits::default()
        };
        let mut r = RateLimiter::new(&limits);
        let carrier: IpAddr = "203.0.113.5".parse().unwrap();
        // 1000 OPTIONS a second for 5 s, with 2 INVITEs a second among them
        let mut invites_ok = 0;
        let mut options_ok = 0;
        for ms in 0..5000u64 {
            let now = t0 + Duration::from_millis(ms);
            if r.allow(now, carrier, Budget::Other) {
                options_ok += 1;
            }
            if ms % 500 == 0 && r.allow(now, carrier, Budget::Invite) {
                invites_ok += 1;
            }
        }
        assert_eq!(invites_ok, 10, "every INVITE answered during the flood");
        assert!((58..=61).contains(&options_ok), "OPTIONS held to burst + rate: {options_ok}");
    }

    #[test]
    fn invites_first_they_may_borrow_from_the_other_bucket() {
        let t0 = Instant::now();
        let limits = Limits {
            requests_per_second: 1.0,
            burst: 3.0,
            invites_per_second: 1.0,
            invite_burst: 2.0,
            ..Limits::default()
        };
        let mut r = RateLimiter::new(&limits);
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let n = (0..10).filter(|_| r.allow(t0, a, Budget::Invite)).count();
        assert_eq!(n, 5, "its own 2, then the other bucket's 3");
        assert!(!r.allow(t0, a, Budget::Other), "the INVITEs used the shared tokens");
    }
}

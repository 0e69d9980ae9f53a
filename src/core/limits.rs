//! Load shedding: a cap on calls in progress, and a per-source rate limit on new requests.
//! Beyond either, new INVITEs get 503 with Retry-After so the carrier routes elsewhere; calls
//! in progress (and requests inside their dialogs) are never touched.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Calls in progress beyond which new INVITEs are refused.
    pub max_calls: usize,
    /// New out-of-dialog requests per second from one source address (sustained).
    pub requests_per_second: f64,
    /// How many may come at once before the rate applies.
    pub burst: f64,
    /// Seconds a refused carrier is asked to wait (Retry-After).
    pub retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 100,
            requests_per_second: 200.0,
            burst: 400.0,
            retry_after: Duration::from_secs(30),
        }
    }
}

/// Sources remembered at most (oldest forgotten first), so a spoofed flood cannot grow memory.
const MAX_SOURCES: usize = 4096;

/// Token buckets per source address.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
    pub refused: u64,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        RateLimiter {
            rate: limits.requests_per_second.max(0.0),
            burst: limits.burst.max(1.0),
            buckets: HashMap::new(),
            refused: 0,
        }
    }

    /// Takes one token for `source`; false when its bucket is empty.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_SOURCES {
            self.forget_oldest();
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, last) = self.buckets.entry(source).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) =
            self.buckets.iter().min_by_key(|(_, (_, last))| *last).map(|(ip, _)| *ip)
        {
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
        assert_eq!((0..10).filter(|_| r.allow(t0, a)).count(), 5, "the burst");
        assert!(r.allow(t0, b), "another source has its own bucket");
        // 1 s later: 10 more tokens, capped at the burst of 5
        assert_eq!((0..10).filter(|_| r.allow(t0 + Duration::from_secs(1), a)).count(), 5);
        // 100 ms later: one token
        assert!(r.allow(t0 + Duration::from_millis(1100), a));
        assert!(!r.allow(t0 + Duration::from_millis(1100), a));
        assert_eq!(r.refused, 11);
    }

    #[test]
    fn memory_is_bounded_under_a_spoofed_flood() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&Limits::default());
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            r.allow(t0 + Duration::from_micros(u64::from(i)), ip);
        }
        assert_eq!(r.buckets.len(), MAX_SOURCES);
    }
}

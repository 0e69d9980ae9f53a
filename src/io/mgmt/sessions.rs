//! Logged-in operator sessions, in memory: a random 256-bit token (the cookie) with its own
//! random CSRF token, ending 8 h after login or 30 min after the last request. Plain state
//! told the time; randomness is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngCore;

/// A session ends this long after login, however active.
pub const MAX_AGE: Duration = Duration::from_secs(8 * 3600);
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// At most this many sessions; logging in beyond evicts the least recently used.
pub const MAX_SESSIONS: usize = 64;

#[derive(Debug)]
struct Session {
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) >= MAX_AGE
            || now.saturating_duration_since(self.last_seen) >= IDLE
    }
}

/// What a login hands out: the cookie value and the CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    pub fn create(&mut self, now: Instant, rng: &mut impl RngCore) -> NewSession {
        self.by_token.retain(|_, s| !s.expired(now));
        while self.by_token.len() >= MAX_SESSIONS {
            let oldest =
                self.by_token.iter().min_by_key(|(_, s)| s.last_seen).map(|(t, _)| t.clone());
            match oldest {
                Some(t) => self.by_token.remove(&t),
                None => break,
            };
        }
        let fresh = NewSession { token: random_token(rng), csrf: random_token(rng) };
        self.by_token.insert(
            fresh.token.clone(),
            Session { csrf: fresh.csrf.clone(), created: now, last_seen: now },
        );
        fresh
    }

    /// The session's CSRF token if `token` is a live session; the request counts as activity.
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<String> {
        let session = self.by_token.get_mut(token)?;
        if session.expired(now) {
            self.by_token.remove(token);
            return None;
        }
        session.last_seen = now;
        Some(session.csrf.clone())
    }

    pub fn remove(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// 256 random bits as 64 hex digits.
pub fn random_token(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Equality that takes the same time wherever the inputs differ (for CSRF tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn session_lives_until_idle_or_max_age() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut s = Sessions::new();
        let a = s.create(t0, &mut rng);
        assert_eq!(a.token.len(), 64);
        assert_ne!(a.token, a.csrf);
        assert_eq!(s.touch(&a.token, t0 + IDLE - Duration::from_secs(1)), Some(a.csrf.clone()));
        // activity keeps it alive past IDLE after login...
        let mut now = t0;
        while now + IDLE / 2 < t0 + MAX_AGE {
            now += IDLE / 2;
            assert!(s.touch(&a.token, now).is_some());
        }
        // ...but not past MAX_AGE
        assert!(s.touch(&a.token, t0 + MAX_AGE).is_none());
        assert!(s.is_empty());
        let b = s.create(t0, &mut rng);
        assert!(s.touch(&b.token, t0 + IDLE).is_none(), "idle for 30 min");
        assert!(s.touch("nonsense", t0).is_none());
    }

    #[test]
    fn remove_and_cap() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut s = Sessions::new();
        let first = s.create(t0, &mut rng);
        for i in 1..=MAX_SESSIONS as u64 {
            s.create(t0 + Duration::from_secs(i), &mut rng);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.touch(&first.token, t0 + Duration::from_secs(100)).is_none(),
            "least recently used evicted"
        );
        let x = s.create(t0 + Duration::from_secs(200), &mut rng);
        assert!(s.remove(&x.token));
        assert!(!s.remove(&x.token));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

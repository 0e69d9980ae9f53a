//! Client registration of the appliance with one carrier: when to send REGISTER, answering
//! digest challenges, refreshing before expiry, and backing off on failure.
//!
//! The endpoint builds and sends the REGISTER (Request-URI [`RegisterSettings::request_uri`])
//! for each [`RegisterOutput::SendRegister`] and reports the transaction's outcome with the
//! same `attempt_id`. Nothing is persisted: a new `Registrar` registers at once.
//!
//! - 2xx: registered for the granted expiry; refresh at 85 % of it (preemptively authorised
//!   with the cached challenge and the next nonce count).
//! - 401/407: answered at once with digest credentials. The same nonce challenged again
//!   without `stale=true` means the credentials were rejected; that, or more than
//!   [`MAX_CHALLENGES`] challenges in a row, fails the attempt.
//! - 423: retried at once with the Min-Expires value (passed in `granted_expires`).
//! - Anything else, timeouts included: [`RegisterOutput::Failed`] and a retry after a
//!   jittered exponential [`Backoff`] of at least `min_retry`, so never a tight loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::backoff::Backoff;
use crate::core::sip::digest::{authorization, Challenge};
use crate::core::timer::{Timer, TimerTable};

/// Consecutive 401/407 answers tolerated within one attempt chain before backing off.
pub const MAX_CHALLENGES: u32 = 3;

/// Registration policy for one carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterSettings {
    /// Request-URI of the REGISTER, also the digest `uri` (e.g. `sip:carrier.example.com`).
    pub request_uri: String,
    /// Digest username.
    pub user: String,
    pub password: String,
    /// Requested expiry in seconds.
    pub expires: u32,
    /// Ceiling of the first retry delay; doubles per failure.
    pub retry_base: Duration,
    /// No retry is ever sooner than this.
    pub min_retry: Duration,
    pub max_retry: Duration,
}

impl RegisterSettings {
    /// Settings with defaults: 3600 s expiry, retries from 1 s (first ≤ 2 s) up to 300 s.
    pub fn new(request_uri: &str, user: &str, password: &str) -> Self {
        RegisterSettings {
            request_uri: request_uri.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            expires: 3600,
            retry_base: Duration::from_secs(2),
            min_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(300),
        }
    }
}

/// What the registrar wants from the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutput {
    /// Send a REGISTER with this `Expires`; `authorization` is `(header name, value)` where the
    /// name is `Authorization` or `Proxy-Authorization`.
    SendRegister { attempt_id: u64, expires: u32, authorization: Option<(String, String)> },
    /// The carrier accepted the registration for this long.
    Registered { expires: Duration },
    /// An attempt failed; a retry is scheduled after backoff.
    Failed { reason: String },
}

#[derive(Debug, Clone)]
struct AuthState {
    challenge: Challenge,
    header: &'static str,
    nc: u32,
}

#[derive(Debug, Clone)]
struct Attempt {
    id: u64,
    /// The nonce this attempt answered, if it carried credentials.
    nonce: Option<String>,
}

/// The client-registration state machine for one carrier.
#[derive(Debug, Clone)]
pub struct Registrar {
    settings: RegisterSettings,
    timers: TimerTable,
    backoff: Backoff,
    next_id: u64,
    outstanding: Option<Attempt>,
    auth: Option<AuthState>,
    expires: u32,
    registered_until: Option<Instant>,
    challenges_in_row: u32,
    outputs: VecDeque<RegisterOutput>,
}

impl Registrar {
    /// A registrar whose first REGISTER is due at `now`.
    pub fn new(settings: RegisterSettings, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Register, now);
        Registrar {
            backoff: Backoff::new(settings.retry_base, settings.max_retry, settings.min_retry),
            expires: settings.expires,
            settings,
            timers,
            next_id: 1,
            outstanding: None,
            auth: None,
            registered_until: None,
            challenges_in_row: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Fires the `Register` timer (first registration, refresh or retry) when due.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl RngCore) {
        if self.timers.take_expired(now).contains(&Timer::Register) {
            self.send(rng);
        }
    }

    /// The final (or provisional, ignored) response to attempt `attempt_id`. `granted_expires`
    /// is the granted expiry for a 2xx (Contact `expires` or `Expires`), Min-Expires for a 423.
    #[allow(clippy::too_many_arguments)]
    pub fn on_response(
        &mut self,
        now: Instant,
        attempt_id: u64,
        status: u16,
        www_authenticate: Option<&str>,
        proxy_authenticate: Option<&str>,
        granted_expires: Option<u32>,
        rng: &mut impl RngCore,
    ) {
        if status < 200 || !self.is_outstanding(attempt_id) {
            return;
        }
        let Some(attempt) = self.outstanding.take() else {
            return;
        };
        match status {
            200..=299 => self.registered(now, granted_expires, rng),
            401 => self.challenged(now, &attempt, www_authenticate, "Authorization", rng),
            407 => self.challenged(now, &attempt, proxy_authenticate, "Proxy-Authorization", rng),
            423 => self.interval_too_brief(now, granted_expires, rng),
            _ => self.fail(now, format!("registrar answered {status}"), rng),
        }
    }

    /// Attempt `attempt_id` got no response (transaction timeout or transport error).
    pub fn on_timeout(&mut self, now: Instant, attempt_id: u64, rng: &mut impl RngCore) {
        if self.is_outstanding(attempt_id) {
            self.outstanding = None;
            self.fail(now, "no response to REGISTER".to_string(), rng);
        }
    }

    pub fn poll_output(&mut self) -> Option<RegisterOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// True while a granted registration has not yet expired.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|until| now < until)
    }

    pub fn registered_until(&self) -> Option<Instant> {
        self.registered_until
    }

    /// The Request-URI the endpoint must use (the digest was computed over it).
    pub fn uri_for_digest(&self) -> &str {
        &self.settings.request_uri
    }

    /// The expiry currently requested (raised by 423 Min-Expires).
    pub fn requested_expires(&self) -> u32 {
        self.expires
    }

    /// The attempt awaiting a response, if any.
    pub fn outstanding(&self) -> Option<u64> {
        self.outstanding.as_ref().map(|a| a.id)
    }

    fn is_outstanding(&self, attempt_id: u64) -> bool {
        self.outstanding.as_ref().is_some_and(|a| a.id == attempt_id)
    }

    fn send(&mut self, rng: &mut impl RngCore) {
        if self.outstanding.is_some() {
            return;
        }
        self.timers.stop(Timer::Register);
        let id = self.next_id;
        self.next_id += 1;
        let credentials = self.credentials(rng);
        self.outstanding =
            Some(Attempt { id, nonce: credentials.as_ref().map(|(nonce, _)| nonce.clone()) });
        self.outputs.push_back(RegisterOutput::SendRegister {
            attempt_id: id,
            expires: self.expires,
            authorization: credentials.map(|(_, header)| header),
        });
    }

    /// `(nonce, (header name, value))` from the cached challenge, with the next nonce count.
    fn credentials(&mut self, rng: &mut impl RngCore) -> Option<(String, (String, String))> {
        let auth = self.auth.as_mut()?;
        auth.nc = auth.nc.wrapping_add(1).max(1);
        let cnonce = format!("{:016x}", rng.next_u64());
        let s = &self.settings;
        let value = authorization(
            &auth.challenge,
            "REGISTER",
            &s.request_uri,
            &s.user,
            &s.password,
            &cnonce,
            auth.nc,
        )
        .ok()?;
        Some((auth.challenge.nonce.clone(), (auth.header.to_string(), value)))
    }

    fn registered(&mut self, now: Instant, granted: Option<u32>, rng: &mut impl RngCore) {
        let granted = granted.unwrap_or(self.expires);
        if granted == 0 {
            self.fail(now, "registrar granted expires=0".to_string(), rng);
            return;
        }
        let expires = Duration::from_secs(u64::from(granted));
        self.registered_until = Some(now + expires);
        self.backoff.reset();
        self.challenges_in_row = 0;
        let refresh = Duration::from_millis(u64::from(granted) * 850).max(self.settings.min_retry);
        self.timers.set(Timer::Register, now + refresh);
        self.outputs.push_back(RegisterOutput::Registered { expires });
    }

    fn challenged(
        &mut self,
        now: Instant,
        attempt: &Attempt,
        header_value: Option<&str>,
        auth_header: &'static str,
        rng: &mut impl RngCore,
    ) {
        self.challenges_in_row += 1;
        let challenge = match header_value.map(Challenge::parse) {
            None => return self.auth_fail(now, "challenge without a digest header".into(), rng),
            Some(Err(e)) => return self.auth_fail(now, format!("bad challenge: {e}"), rng),
            Some(Ok(ch)) => ch,
        };
        if attempt.nonce.as_deref() == Some(challenge.nonce.as_str()) && !challenge.stale {
            return self.auth_fail(now, "credentials rejected".into(), rng);
        }
        if self.challenges_in_row > MAX_CHALLENGES {
            return self.auth_fail(now, "too many challenges in a row".into(), rng);
        }
        let s = &self.settings;
        let probe = authorization(&challenge, "REGISTER", &s.request_uri, &s.user, "", "", 1);
        if let Err(e) = probe {
            return self.auth_fail(now, format!("cannot answer challenge: {e}"), rng);
        }
        let nc = match &self.auth {
            Some(old) if old.challenge.nonce == challenge.nonce => old.nc,
            _ => 0,
        };
        self.auth = Some(AuthState { challenge, header: auth_header, nc });
        self.send(rng);
    }

    fn interval_too_brief(&mut self, now: Instant, min: Option<u32>, rng: &mut impl RngCore) {
        match min {
            Some(min) if min > self.expires => {
                self.expires = min;
                self.send(rng);
            }
            _ => self.fail(now, "423 without a usable Min-Expires".to_string(), rng),
        }
    }

    /// A failure that invalidates the cached challenge: the next attempt starts fresh.
    fn auth_fail(&mut self, now: Instant, reason: String, rng: &mut impl RngCore) {
        self.auth = None;
        self.fail(now, reason, rng);
    }

    fn fail(&mut self, now: Instant, reason: String, rng: &mut impl RngCore) {
        self.challenges_in_row = 0;
        let delay = self.backoff.next_delay(rng);
        self.timers.set(Timer::Register, now + delay);
        self.outputs.push_back(RegisterOutput::Failed { reason });
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::SmallRng, SeedableRng};

    use super::*;
    use crate::core::sip::digest::verify;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const URI: &str = "sip:carrier.example";
    const REALM: &str = "carrier.example";

    fn settings(password: &str) -> RegisterSettings {
        RegisterSettings::new(URI, "trunk42", password)
    }

    fn challenge(nonce: &str, stale: bool) -> String {
        format!(
            "Digest realm=\"{REALM}\", nonce=\"{nonce}\", qop=\"auth,auth-int\", \
             opaque=\"op\", algorithm=MD5, stale={stale}"
        )
    }

    type Send = (u64, u32, Option<(String, String)>);

    fn expect_send(r: &mut Registrar) -> Send {
        match r.poll_output() {
            Some(RegisterOutput::SendRegister { attempt_id, expires, authorization }) => {
                (attempt_id, expires, authorization)
            }
            other => panic!("expected SendRegister, got {other:?}"),
        }
    }

    fn expect_failed(r: &mut Registrar) -> String {
        match r.poll_output() {
            Some(RegisterOutput::Failed { reason }) => reason,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    fn fire(r: &mut Registrar, rng: &mut SmallRng) -> (Instant, Send) {
        let t = r.poll_timeout().unwrap();
        r.handle_timeout(t, rng);
        (t, expect_send(r))
    }

    #[test]
    fn challenge_then_authorised_200_then_refresh_at_85_percent() {
        let mut rng = SmallRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("s3cret"), t0);
        assert_eq!(r.poll_timeout(), Some(t0));
        assert!(!r.is_registered(t0));
        let (_, (id1, expires, auth)) = fire(&mut r, &mut rng);
        assert_eq!((expires, auth), (3600, None));
        assert_eq!(r.poll_timeout(), None);

        let t1 = t0 + Duration::from_millis(40);
        r.on_response(t1, id1, 401, Some(&challenge("n1", false)), None, None, &mut rng);
        let (id2, _, auth) = expect_send(&mut r);
        let (name, value) = auth.unwrap();
        assert_eq!(name, "Authorization");
        assert!(verify(&value, "REGISTER", "s3cret", REALM), "{value}");
        assert!(!verify(&value, "REGISTER", "other", REALM));
        assert!(value.contains("uri=\"sip:carrier.example\"") && value.contains("nc=00000001"));
        assert!(value.contains("username=\"trunk42\"") && value.contains("opaque=\"op\""));
        assert_eq!(r.uri_for_digest(), URI);

        let t2 = t1 + Duration::from_millis(40);
        r.on_response(t2, id2, 200, None, None, Some(1800), &mut rng);
        assert_eq!(r.poll_output(), Some(RegisterOutput::Registered { expires: S(1800) }));
        assert!(r.is_registered(t2));
        assert!(r.is_registered(t2 + S(1799)));
        assert!(!r.is_registered(t2 + S(1800)));
        assert_eq!(r.poll_timeout(), Some(t2 + S(1530)));
        r.handle_timeout(t2 + S(1529), &mut rng);
        assert_eq!(r.poll_output(), None);

        // The refresh reuses the nonce with the next nonce count.
        let (t3, (id3, _, auth)) = fire(&mut r, &mut rng);
        assert_eq!(t3, t2 + S(1530));
        let (_, value) = auth.unwrap();
        assert!(value.contains("nc=00000002"), "{value}");
        assert!(verify(&value, "REGISTER", "s3cret", REALM));
        r.on_response(t3, id3, 200, None, None, None, &mut rng);
        assert_eq!(r.poll_output(), Some(RegisterOutput::Registered { expires: S(3600) }));
        assert_eq!(r.poll_timeout(), Some(t3 + S(3060)));
    }

    #[test]
    fn proxy_challenge_uses_proxy_authorization() {
        let mut rng = SmallRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("pw"), t0);
        let (_, (id, _, _)) = fire(&mut r, &mut rng);
        r.on_response(t0, id, 407, None, Some(&challenge("p1", false)), None, &mut rng);
        let (_, _, auth) = expect_send(&mut r);
        let (name, value) = auth.unwrap();
        assert_eq!(name, "Proxy-Authorization");
        assert!(verify(&value, "REGISTER", "pw", REALM));
    }

    #[test]
    fn stale_nonce_is_answered_at_once_with_a_fresh_count() {
        let mut rng = SmallRng::seed_from_u64(3);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("pw"), t0);
        let (_, (id, _, _)) = fire(&mut r, &mut rng);
        r.on_response(t0, id, 401, Some(&challenge("n1", false)), None, None, &mut rng);
        let (id, _, _) = expect_send(&mut r);
        r.on_response(t0, id, 401, Some(&challenge("n2", true)), None, None, &mut rng);
        let (_, _, auth) = expect_send(&mut r);
        let value = auth.unwrap().1;
        assert!(value.contains("nonce=\"n2\"") && value.contains("nc=00000001"), "{value}");
    }

    #[test]
    fn failures_back_off_with_growing_jittered_delays() {
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let t0 = Instant::now();
            let mut r = Registrar::new(settings("pw"), t0);
            let mut delays = Vec::new();
            for k in 0..12u32 {
                let (t, (id, _, _)) = fire(&mut r, &mut rng);
                if k % 2 == 0 {
                    r.on_response(t, id, 503, None, None, None, &mut rng);
                } else {
                    r.on_timeout(t + S(32), id, &mut rng);
                }
                assert!(!expect_failed(&mut r).is_empty());
                assert_eq!(r.poll_output(), None, "no immediate retry");
                let failed_at = if k % 2 == 0 { t } else { t + S(32) };
                let delay = r.poll_timeout().unwrap() - failed_at;
                let cap = S(2u64 << k).min(S(300));
                assert!(delay >= S(1) && delay <= cap, "attempt {k}: {delay:?} > {cap:?}");
                delays.push(delay);
            }
            delays
        };
        let delays = run(11);
        assert_eq!(delays, run(11));
        assert_ne!(delays, run(12));
        assert!(delays[..2].iter().all(|d| *d <= S(4)));
        assert!(delays[6..].iter().any(|d| *d > S(30)), "{delays:?}");
    }

    #[test]
    fn success_resets_the_backoff() {
        let mut rng = SmallRng::seed_from_u64(4);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("pw"), t0);
        for _ in 0..8 {
            let (t, (id, _, _)) = fire(&mut r, &mut rng);
            r.on_response(t, id, 500, None, None, None, &mut rng);
            expect_failed(&mut r);
        }
        let (t, (id, _, _)) = fire(&mut r, &mut rng);
        r.on_response(t, id, 200, None, None, Some(60), &mut rng);
        assert!(matches!(r.poll_output(), Some(RegisterOutput::Registered { .. })));
        let (t, (id, _, _)) = fire(&mut r, &mut rng);
        assert_eq!(t, r.registered_until().unwrap() - S(60) + S(51));
        r.on_response(t, id, 500, None, None, None, &mut rng);
        expect_failed(&mut r);
        assert!(r.poll_timeout().unwrap() - t <= S(2));
        assert!(r.is_registered(t), "an earlier registration stays valid until it expires");
    }

    /// A carrier that challenges every REGISTER and checks credentials with `verify`.
    fn carrier_answer(auth: &Option<(String, String)>, password: &str) -> (u16, String) {
        match auth {
            Some((_, v)) if verify(v, "REGISTER", password, REALM) => (200, String::new()),
            _ => (401, challenge("fixed-nonce", false)),
        }
    }

    #[test]
    fn wrong_password_backs_off_instead_of_hammering() {
        let mut rng = SmallRng::seed_from_u64(5);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("wrong"), t0);
        let mut sends = 0;
        let mut rejections = 0;
        let mut now = t0;
        while now < t0 + S(3600) {
            now = r.poll_timeout().unwrap();
            r.handle_timeout(now, &mut rng);
            while let Some(out) = r.poll_output() {
                match out {
                    RegisterOutput::SendRegister { attempt_id, authorization, .. } => {
                        sends += 1;
                        let (status, ch) = carrier_answer(&authorization, "right");
                        r.on_response(now, attempt_id, status, Some(&ch), None, None, &mut rng);
                    }
                    RegisterOutput::Failed { reason } => {
                        assert_eq!(reason, "credentials rejected");
                        rejections += 1;
                        assert!(r.poll_timeout().unwrap() >= now + S(1));
                    }
                    RegisterOutput::Registered { .. } => panic!("wrong password registered"),
                }
            }
        }
        // Two REGISTERs (unauthenticated, then rejected digest) per backoff cycle.
        assert_eq!(sends, 2 * rejections);
        assert!((10..40).contains(&rejections), "{rejections} cycles in an hour");
        assert!(!r.is_registered(now));
    }

    #[test]
    fn endless_fresh_challenges_are_capped() {
        let mut rng = SmallRng::seed_from_u64(6);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("pw"), t0);
        let (_, (mut id, _, _)) = fire(&mut r, &mut rng);
        for n in 0..MAX_CHALLENGES {
            let ch = challenge(&format!("n{n}"), false);
            r.on_response(t0, id, 401, Some(&ch), None, None, &mut rng);
            id = expect_send(&mut r).0;
        }
        r.on_response(t0, id, 401, Some(&challenge("again", false)), None, None, &mut rng);
        assert_eq!(expect_failed(&mut r), "too many challenges in a row");
        assert!(r.poll_timeout().unwrap() >= t0 + S(1));
    }

    #[test]
    fn unanswerable_challenges_fail_with_backoff() {
        let mut rng = SmallRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("pw"), t0);
        let (_, (id, _, _)) = fire(&mut r, &mut rng);
        let sha = format!("Digest realm=\"{REALM}\", nonce=\"x\", algorithm=SHA-256");
        r.on_response(t0, id, 401, Some(&sha), None, None, &mut rng);
        assert!(expect_failed(&mut r).contains("SHA-256"));
        let (t, (id, _, auth)) = fire(&mut r, &mut rng);
        assert!(t >= t0 + S(1) && auth.is_none());
        r.on_response(t, id, 401, None, None, None, &mut rng);
        assert!(expect_failed(&mut r).contains("without"));
        let (t, (id, _, _)) = fire(&mut r, &mut rng);
        r.on_response(t, id, 401, Some("Digest garbage"), None, None, &mut rng);
        assert!(expect_failed(&mut r).starts_with("bad challenge"));
    }

    #[test]
    fn interval_too_brief_retries_with_min_expires() {
        let mut rng = SmallRng::seed_from_u64(8);
        let t0 = Instant::now();
        let mut s = settings("pw");
        s.expires = 60;
        let mut r = Registrar::new(s, t0);
        let (_, (id, expires, _)) = fire(&mut r, &mut rng);
        assert_eq!(expires, 60);
        r.on_response(t0, id, 423, None, None, Some(300), &mut rng);
        let (id, expires, _) = expect_send(&mut r);
        assert_eq!(expires, 300);
        assert_eq!(r.requested_expires(), 300);
        r.on_response(t0, id, 200, None, None, Some(300), &mut rng);
        assert_eq!(r.poll_output(), Some(RegisterOutput::Registered { expires: S(300) }));
        assert_eq!(r.poll_timeout(), Some(t0 + S(255)));
        let (t, (id, expires, _)) = fire(&mut r, &mut rng);
        assert_eq!(expires, 300);
        // A 423 that does not raise the expiry cannot loop: it backs off.
        r.on_response(t, id, 423, None, None, Some(300), &mut rng);
        assert!(expect_failed(&mut r).contains("Min-Expires"));
        assert_eq!(r.poll_output(), None);
        let (t, (id, _, _)) = fire(&mut r, &mut rng);
        r.on_response(t, id, 423, None, None, None, &mut rng);
        expect_failed(&mut r);
    }

    #[test]
    fn stale_ids_provisionals_and_zero_expiry() {
        let mut rng = SmallRng::seed_from_u64(9);
        let t0 = Instant::now();
        let mut r = Registrar::new(settings("pw"), t0);
        let (_, (id, _, _)) = fire(&mut r, &mut rng);
        r.on_response(t0, id + 1, 200, None, None, Some(60), &mut rng);
        r.on_response(t0, id, 100, None, None, None, &mut rng);
        r.on_timeout(t0, id + 7, &mut rng);
        assert_eq!(r.poll_output(), None);
        assert_eq!(r.outstanding(), Some(id));
        r.on_response(t0, id, 200, None, None, Some(0), &mut rng);
        assert!(expect_failed(&mut r).contains("expires=0"));
        assert!(!r.is_registered(t0));
        // A late answer to the finished attempt changes nothing.
        r.on_response(t0, id, 200, None, None, Some(60), &mut rng);
        assert_eq!(r.poll_output(), None);
        assert!(!r.is_registered(t0));
    }
}

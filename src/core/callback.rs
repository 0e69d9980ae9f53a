//! Callback requests: what the degradation ladder hands the I/O shell when a caller is to be
//! called back (the caller pressed 1, the menu got no answer, the human did not answer). The
//! shell stores each request durably and delivers it to the configured webhook; the core only
//! says who, why and what failed (it has no wall clock: the shell stamps the time).
//!
//! The delivery policy lives here too, as plain functions of wall-clock milliseconds the shell
//! reads: the retry schedule (exponential backoff with full jitter, [`RetrySchedule`]), when to
//! give up, and which HTTP answers count as delivered.

use std::time::Duration;

use rand::{Rng, RngCore};

/// Why a callback was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackReason {
    /// The caller pressed 1 at the menu.
    CallerAsked,
    /// The menu was played without a usable key (no key, unknown keys).
    MenuNoAnswer,
    /// The human transfer was tried but nobody answered in time.
    HumanNoAnswer,
    /// The human could not be reached (every carrier refused or failed the outbound call).
    HumanUnavailable,
}

impl CallbackReason {
    /// The stable name used in the database and the webhook payload.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackReason::CallerAsked => "caller-pressed-1",
            CallbackReason::MenuNoAnswer => "menu-no-answer",
            CallbackReason::HumanNoAnswer => "human-no-answer",
            CallbackReason::HumanUnavailable => "human-unavailable",
        }
    }
}

/// One callback request, as the ladder decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRequest {
    /// SIP Call-ID of the inbound call (links the request to its call record).
    pub call_id: String,
    /// The caller's number or URI user part (From), as received.
    pub caller: String,
    /// The number that was called (To / Request-URI user part), as received.
    pub called: String,
    /// Name of the carrier the call came from.
    pub carrier: String,
    pub reason: CallbackReason,
    /// The failure that sent the call down the ladder (e.g. "no agent within the budget").
    pub failure: String,
}

/// The retry schedule of a request's webhook deliveries (from `[callback]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Ceiling of the first retry delay; it doubles with each failed attempt.
    pub initial: Duration,
    /// The ceiling never grows past this.
    pub max: Duration,
    /// A request still undelivered this long after it was made is given up.
    pub give_up_after: Duration,
}

/// No retry is scheduled sooner than `min(initial, RETRY_FLOOR)` after a failed attempt,
/// whatever the jitter draws: a failing webhook is never hammered.
pub const RETRY_FLOOR: Duration = Duration::from_millis(100);

impl RetrySchedule {
    /// The shortest delay between two attempts of one request.
    pub fn floor(&self) -> Duration {
        self.initial.min(RETRY_FLOOR)
    }

    /// Upper bound of the delay after `failed` failed attempts (1 after the first):
    /// `min(max, initial · 2^(failed-1))`, never below the floor.
    pub fn ceiling(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        let grown = self.initial.checked_mul(1u32 << doublings).unwrap_or(Duration::MAX);
        grown.min(self.max).max(self.floor())
    }

    /// The delay before the next attempt after `failed` failed attempts: full jitter, uniform
    /// in `[floor, ceiling(failed)]`.
    pub fn retry_delay(&self, failed: u32, rng: &mut impl RngCore) -> Duration {
        let lo = nanos(self.floor());
        let hi = nanos(self.ceiling(failed)).max(lo);
        Duration::from_nanos(rng.gen_range(lo..=hi))
    }

    /// What follows a failed attempt, at wall-clock `now_ms`, for a request made at
    /// `created_ms` that has now failed `failed` times. The last retry is placed at the give-up
    /// time at the latest; a failure at or after it gives up.
    pub fn after_failure(
        &self,
        created_ms: u64,
        now_ms: u64,
        failed: u32,
        rng: &mut impl RngCore,
    ) -> AfterFailure {
        let deadline = created_ms.saturating_add(millis(self.give_up_after));
        if now_ms >= deadline {
            return AfterFailure::GiveUp;
        }
        let next = now_ms.saturating_add(millis(self.retry_delay(failed, rng)));
        AfterFailure::RetryAt(next.min(deadline).max(now_ms.saturating_add(millis(self.floor()))))
    }
}

/// The decision after a failed delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this wall-clock time (ms since the Unix epoch).
    RetryAt(u64),
    /// The request is older than `give_up_after`: mark it failed, stop retrying.
    GiveUp,
}

/// Whether a webhook's HTTP status means the request was delivered: any 2xx. Everything
/// else (redirects are not followed, 4xx, 5xx) is a failed attempt, retried.
pub fn delivered(status: u16) -> bool {
    (200..300).contains(&status)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            initial: MS(1000),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(72 * 3600),
        }
    }

    #[test]
    fn the_ceiling_doubles_from_initial_up_to_max() {
        let s = schedule();
        let ceilings: Vec<u64> = (1..=11).map(|n| s.ceiling(n).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000]
        );
        assert_eq!(s.ceiling(0), MS(1000));
        assert_eq!(s.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn delays_are_full_jitter_between_floor_and_ceiling() {
        let s = schedule();
        let mut rng = SmallRng::seed_from_u64(5);
        for failed in 1..40 {
            let mut lo = Duration::MAX;
            let mut hi = Duration::ZERO;
            for _ in 0..200 {
                let d = s.retry_delay(failed, &mut rng);
                assert!(d >= RETRY_FLOOR && d <= s.ceiling(failed), "attempt {failed}: {d:?}");
                lo = lo.min(d);
                hi = hi.max(d);
            }
            // full jitter: the draws spread over the whole range, not around the ceiling
            let c = s.ceiling(failed);
            assert!(
                lo < RETRY_FLOOR + (c - RETRY_FLOOR) / 4 && hi > c - (c - RETRY_FLOOR) / 4,
                "{failed}: {lo:?}..{hi:?}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (1..10).map(|n| schedule().retry_delay(n, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn a_tiny_initial_is_its_own_floor() {
        let s =
            RetrySchedule { initial: MS(20), max: MS(20), give_up_after: Duration::from_secs(60) };
        let mut rng = SmallRng::seed_from_u64(1);
        for n in 1..50 {
            assert_eq!(s.retry_delay(n, &mut rng), MS(20));
        }
    }

    #[test]
    fn retries_stop_at_the_give_up_time() {
        let s = RetrySchedule {
            initial: MS(1000),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(3600),
        };
        let mut rng = SmallRng::seed_from_u64(2);
        let created = 1_700_000_000_000;
        match s.after_failure(created, created + 500, 1, &mut rng) {
            AfterFailure::RetryAt(t) => {
                assert!(t >= created + 500 + 100 && t <= created + 1500, "{t}")
            }
            other => panic!("{other:?}"),
        }
        // close to the deadline: the last retry is at the deadline, not after it
        let deadline = created + 3_600_000;
        let mut at_deadline = 0;
        for _ in 0..100 {
            match s.after_failure(created, deadline - 10_000, 30, &mut rng) {
                AfterFailure::RetryAt(t) => {
                    assert!(t >= deadline - 10_000 + 100 && t <= deadline, "{t}");
                    at_deadline += usize::from(t == deadline);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(at_deadline > 80, "{at_deadline}");
        assert_eq!(s.after_failure(created, deadline, 31, &mut rng), AfterFailure::GiveUp);
        assert_eq!(s.after_failure(created, deadline + 1, 32, &mut rng), AfterFailure::GiveUp);
        // a clock that went backwards still waits at least the floor
        match s.after_failure(created, created - 10_000, 3, &mut rng) {
            AfterFailure::RetryAt(t) => assert!(t >= created - 10_000 + 100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_2xx_is_delivered() {
        for s in [200, 201, 202, 204, 299] {
            assert!(delivered(s), "{s}");
        }
        for s in [0, 100, 199, 300, 301, 302, 307, 400, 404, 409, 429, 500, 502, 503, 599, 999] {
            assert!(!delivered(s), "{s}");
        }
    }
}

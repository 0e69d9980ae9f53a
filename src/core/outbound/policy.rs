//! Failover by SIP cause: what a failed outbound attempt means for the call.
//!
//! Re-routed to the next carrier: 408, 480, 500, 503, 504, a transport error, Timer B/C, or no
//! provisional response within `no_provisional_ms`. Everything else is final: 404, 486, 600,
//! 603 and every other 3xx-6xx (re-routing a busy or a decline would ring a person twice, and
//! an unknown number is unknown everywhere). A 503 with `Retry-After` keeps that carrier out
//! of use for the time it asks (capped at [`MAX_HOLD`]).

use std::time::Duration;

/// The longest Retry-After hold honoured.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);

/// Why one attempt on one carrier did not reach the human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptFailure {
    /// A final non-2xx response.
    Status { status: u16, reason: String, retry_after: Option<Duration> },
    /// The transport could not deliver the INVITE (connect refused, unreachable).
    TransportError,
    /// No 1xx within `no_provisional_ms`.
    NoProvisional,
    /// The transaction timed out (Timer B or C) without a final response.
    Timeout,
}

impl AttemptFailure {
    /// A short description for logs, call records and the ladder ("503 Service Unavailable").
    pub fn cause(&self) -> String {
        match self {
            AttemptFailure::Status { status, reason, .. } => format!("{status} {reason}"),
            AttemptFailure::TransportError => "transport error".to_string(),
            AttemptFailure::NoProvisional => "no provisional response".to_string(),
            AttemptFailure::Timeout => "timeout".to_string(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try the next carrier; `hold`: keep this one out of use that long (Retry-After).
    Reroute { hold: Option<Duration> },
    /// Give up: the answer is the human's (busy, declined, unknown number, ...).
    Final,
}

impl Decision {
    /// Whether the failure says the carrier (not the callee) is unavailable: it counts against
    /// the carrier's outbound breaker.
    pub fn is_carrier_failure(self) -> bool {
        matches!(self, Decision::Reroute { .. })
    }
}

/// Classifies a failed attempt.
pub fn decide(failure: &AttemptFailure) -> Decision {
    match failure {
        AttemptFailure::Status { status, retry_after, .. } => match status {
            503 => Decision::Reroute { hold: retry_after.map(|d| d.min(MAX_HOLD)) },
            408 | 480 | 500 | 504 => Decision::Reroute { hold: None },
            _ => Decision::Final,
        },
        AttemptFailure::TransportError
        | AttemptFailure::NoProvisional
        | AttemptFailure::Timeout => Decision::Reroute { hold: None },
    }
}

/// The delta-seconds of a `Retry-After` value (RFC 3261 §20.33: `120`, `120 (lunch)`,
/// `120;duration=3600`); `None` when it does not parse.
pub fn retry_after(value: &str) -> Option<Duration> {
    let digits: String = value.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry: Option<u64>) -> AttemptFailure {
        AttemptFailure::Status {
            status,
            reason: "x".into(),
            retry_after: retry.map(Duration::from_secs),
        }
    }

    #[test]
    fn reroutes_on_carrier_failures_only() {
        for s in [408, 480, 500, 503, 504] {
            assert_eq!(decide(&status(s, None)), Decision::Reroute { hold: None }, "{s}");
        }
        for s in [300, 302, 400, 403, 404, 484, 486, 487, 488, 501, 502, 600, 603, 604, 606] {
            assert_eq!(decide(&status(s, None)), Decision::Final, "{s}");
        }
        for f in
            [AttemptFailure::TransportError, AttemptFailure::NoProvisional, AttemptFailure::Timeout]
        {
            assert!(decide(&f).is_carrier_failure());
        }
    }

    #[test]
    fn retry_after_on_503_holds_the_carrier_capped() {
        assert_eq!(
            decide(&status(503, Some(60))),
            Decision::Reroute { hold: Some(Duration::from_secs(60)) }
        );
        assert_eq!(decide(&status(503, Some(86_400))), Decision::Reroute { hold: Some(MAX_HOLD) });
        // Retry-After on other codes does not hold (only 503 means "this server, later")
        assert_eq!(decide(&status(480, Some(60))), Decision::Reroute { hold: None });
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 18000;duration=3600"), Some(Duration::from_secs(18000)));
        assert_eq!(retry_after("120 (I'm in a meeting)"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after(""), None);
        assert_eq!(retry_after("99999999999999999999999"), None);
    }

    #[test]
    fn causes_read_well() {
        assert_eq!(status(486, None).cause(), "486 x");
        assert_eq!(AttemptFailure::NoProvisional.cause(), "no provisional response");
    }
}

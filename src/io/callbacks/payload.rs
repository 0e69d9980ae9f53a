//! The webhook's request: the JSON body and headers of one delivery attempt, as documented in
//! `docs/callbacks.md` (a contract with SMS and CRM integrations: add fields, never rename).

use serde::Serialize;

use super::store::StoredCallback;

/// `event` of every callback payload.
pub const EVENT: &str = "callback.requested";
/// Header carrying the request id, so a receiver can drop re-deliveries.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Header carrying the attempt number (1 for the first).
pub const ATTEMPT_HEADER: &str = "X-Trunkguard-Attempt";

/// `User-Agent` of the deliveries.
pub fn user_agent() -> String {
    format!("trunkguard/{}", env!("CARGO_PKG_VERSION"))
}

/// The JSON body POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload<'a> {
    pub event: &'static str,
    pub id: &'a str,
    pub created_at: &'a str,
    pub call_id: &'a str,
    pub caller: &'a str,
    pub called: &'a str,
    pub carrier: &'a str,
    pub reason: &'a str,
    pub failure: &'a str,
    pub attempt: i64,
}

impl<'a> Payload<'a> {
    /// The body of attempt `attempt` (from 1) of `r`.
    pub fn of(r: &'a StoredCallback, attempt: i64) -> Payload<'a> {
        Payload {
            event: EVENT,
            id: &r.id,
            created_at: &r.created_at,
            call_id: &r.call_id,
            caller: &r.caller,
            called: &r.called,
            carrier: &r.carrier,
            reason: &r.reason,
            failure: &r.failure,
            attempt,
        }
    }
}

/// RFC 3339 in UTC with milliseconds (`2026-11-24T21:37:15.123Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    let civil = crate::io::calls::show::utc(ms); // "YYYY-MM-DD HH:MM:SS"
    format!("{}.{:03}Z", civil.replacen(' ', "T", 1), ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn the_documented_body() {
        let r = StoredCallback {
            id: "5f0c6a1e9d3b4c2a8e7f6d5c4b3a2910".into(),
            call_id: "a84b4c76e66710@198.51.100.7".into(),
            caller: "+15550100".into(),
            called: "+15550199".into(),
            carrier: "telco".into(),
            reason: "caller-pressed-1".into(),
            failure: "no AI endpoint within the setup budget".into(),
            created_at: rfc3339(1_700_000_000_123),
            created_at_ms: 1_700_000_000_123,
            attempts: 0,
            next_attempt_at_ms: Some(1_700_000_000_123),
            last_attempt_at_ms: None,
            last_status: None,
            last_error: None,
            delivered_at_ms: None,
            state: "pending".into(),
        };
        let v = serde_json::to_value(Payload::of(&r, 1)).unwrap();
        let expected = serde_json::json!({
            "event": "callback.requested",
            "id": "5f0c6a1e9d3b4c2a8e7f6d5c4b3a2910",
            "created_at": "2023-11-14T22:13:20.123Z",
            "call_id": "a84b4c76e66710@198.51.100.7",
            "caller": "+15550100",
            "called": "+15550199",
            "carrier": "telco",
            "reason": "caller-pressed-1",
            "failure": "no AI endpoint within the setup budget",
            "attempt": 1
        });
        assert_eq!(v, expected);
        // docs/callbacks.md shows this very example
        let doc = include_str!("../../../docs/callbacks.md");
        let start = doc.find("```json\n").expect("json example in docs/callbacks.md") + 8;
        let end = start + doc[start..].find("```").unwrap();
        let documented: serde_json::Value = serde_json::from_str(&doc[start..end]).unwrap();
        assert_eq!(documented, expected);
    }
}

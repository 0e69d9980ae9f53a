//! How `trunkguard callbacks` prints requests: an aligned table or JSON lines.

use super::store::StoredCallback;
use crate::io::calls::show::utc;

/// JSON lines, one object per request.
pub fn json_lines(rows: &[StoredCallback]) -> String {
    rows.iter().filter_map(|r| serde_json::to_string(r).ok()).map(|line| line + "\n").collect()
}

/// A table: time made (UTC), caller, called, reason, state, attempts, last outcome.
pub fn table(rows: &[StoredCallback]) -> String {
    let header = ["TIME (UTC)", "CALLER", "CALLED", "REASON", "STATE", "ATTEMPTS", "LAST"]
        .map(str::to_string);
    let mut lines = vec![header];
    for r in rows {
        lines.push([
            utc(r.created_at_ms),
            r.caller.clone(),
            r.called.clone(),
            r.reason.clone(),
            r.state.clone(),
            r.attempts.to_string(),
            last(r),
        ]);
    }
    let widths: Vec<usize> =
        (0..7).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The last outcome, in a few words.
fn last(r: &StoredCallback) -> String {
    match (r.delivered_at_ms, r.last_status, &r.last_error) {
        (Some(at), _, _) => format!("delivered {}", utc(at)),
        (None, _, Some(e)) => e.chars().take(60).collect(),
        (None, Some(s), None) => format!("HTTP {s}"),
        (None, None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_request() {
        let r = StoredCallback {
            id: "ab".into(),
            call_id: "c1".into(),
            caller: "+15550100".into(),
            called: "+15550199".into(),
            carrier: "telco".into(),
            reason: "caller-pressed-1".into(),
            failure: "no agent".into(),
            created_at: "1970-01-01T00:00:00.000Z".into(),
            created_at_ms: 0,
            attempts: 3,
            next_attempt_at_ms: Some(9000),
            last_attempt_at_ms: Some(5000),
            last_status: Some(503),
            last_error: Some("HTTP 503 Service Unavailable".into()),
            delivered_at_ms: None,
            state: "pending".into(),
        };
        let t = table(std::slice::from_ref(&r));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].starts_with(
                "1970-01-01 00:00:00  +15550100  +15550199  caller-pressed-1  pending"
            ),
            "{t}"
        );
        assert!(lines[1].ends_with("3         HTTP 503 Service Unavailable"), "{t}");
        let json: serde_json::Value = serde_json::from_str(json_lines(&[r]).trim()).unwrap();
        assert_eq!((json["state"].as_str(), json["attempts"].as_i64()), (Some("pending"), Some(3)));
    }
}

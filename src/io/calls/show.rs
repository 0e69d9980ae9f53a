//! How `trunkguard calls` prints records: an aligned table or JSON lines.

use super::StoredCall;

/// JSON lines, one object per call.
pub fn json_lines(rows: &[StoredCall]) -> String {
    rows.iter().filter_map(|r| serde_json::to_string(r).ok()).map(|line| line + "\n").collect()
}

/// A table: answer time (UTC), carrier, caller, AI endpoint, duration, end reason, MOS, the
/// ladder's rungs and the callback request.
pub fn table(rows: &[StoredCall]) -> String {
    let header = [
        "TIME (UTC)",
        "CARRIER",
        "CALLER",
        "AI ENDPOINT",
        "DURATION",
        "END",
        "MOS",
        "LADDER",
        "CALLBACK",
    ]
    .map(str::to_string);
    let mut lines = vec![header];
    for r in rows {
        lines.push([
            r.answered_at_ms.map_or_else(|| "-".to_string(), utc),
            r.carrier.clone(),
            r.caller.clone(),
            r.ai_endpoint
                .clone()
                .or_else(|| r.fallback_reason.as_ref().map(|_| "(fallback)".to_string()))
                .unwrap_or_else(|| "-".into()),
            r.duration_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            r.end_reason.clone().unwrap_or_else(|| {
                if r.ended_at_ms.is_none() {
                    "(in progress)".into()
                } else {
                    "-".into()
                }
            }),
            r.mos.map_or_else(|| "-".to_string(), |m| format!("{m:.2}")),
            r.ladder.clone().unwrap_or_else(|| "-".into()),
            r.callback_reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> =
        (0..9).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` for milliseconds since the Unix epoch (UTC).
pub fn utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn a_table_row_per_call() {
        let row = StoredCall {
            call_id: "c1".into(),
            carrier: "telco".into(),
            caller: "sip:alice@x".into(),
            called: "sip:bot@y".into(),
            answered_at_ms: Some(0),
            ended_at_ms: Some(4200),
            duration_ms: Some(4200),
            ai_endpoint: Some("primary".into()),
            failovers: 0,
            fallback_reason: None,
            end_reason: Some("remote BYE".into()),
            mos: Some(4.3),
            loss_percent: Some(0.0),
            jitter_ms: Some(1.0),
            concealed_ms: Some(0),
            updated_at_ms: 4200,
            ladder: Some("prompt>menu>callback".into()),
            callback_reason: Some("caller-pressed-1".into()),
            human: None,
        };
        let t = table(std::slice::from_ref(&row));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("1970-01-01 00:00:00  telco"), "{t}");
        assert!(
            lines[1].contains("4.2s")
                && lines[1].contains("remote BYE")
                && lines[1].contains("4.30"),
            "{t}"
        );
        assert!(lines[1].ends_with("prompt>menu>callback  caller-pressed-1"), "{t}");
        let json: serde_json::Value = serde_json::from_str(json_lines(&[row]).trim()).unwrap();
        assert_eq!(json["carrier"], "telco");
    }
}

//! The update log: one JSON object per line in `<state>/updates.log`, appended and synced, so
//! the box remembers each install, confirmation, rollback and refusal with its reason. Past
//! [`MAX_BYTES`] the oldest half is dropped (a small disk never fills).

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::io::mgmt::files;

/// Size at which the log keeps only its newer half.
pub const MAX_BYTES: u64 = 1 << 20;

/// One line of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, `2026-11-24T21:50:01Z`.
    pub time: String,
    pub unix_ms: u64,
    /// `init`, `install`, `confirm` or `rollback`.
    pub action: String,
    /// `installed`, `confirmed`, `rolled_back`, `refused`, `failed`, `switched`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ready_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bundle: Option<String>,
}

impl Record {
    pub fn new(action: &str, result: &str, unix_ms: u64) -> Record {
        Record {
            time: utc(unix_ms),
            unix_ms,
            action: action.to_owned(),
            result: result.to_owned(),
            ..Record::default()
        }
    }
}

/// Appends `record` as one line (creating the file and its directory), synced.
pub fn append(path: &Path, record: &Record) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        files::ensure_dir(dir)?;
    }
    let mut line = serde_json::to_string(record).map_err(io::Error::other)?;
    line.push('\n');
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    if f.metadata()?.len() > MAX_BYTES {
        trim(path)?;
    }
    Ok(())
}

/// Keeps the lines of the newer half of the file.
fn trim(path: &Path) -> io::Result<()> {
    let bytes = std::fs::read(path)?;
    let cut = bytes.len() / 2;
    let start = bytes[cut..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| cut + i + 1);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    files::write_atomic(dir, name, &bytes[start..], files::PUBLIC).map(|_| ())
}

/// The last well-formed record (reads at most the last 64 KiB).
pub fn last(path: &Path) -> Option<Record> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024))).ok()?;
    let mut bytes = Vec::new();
    f.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    // the window may start inside a line (or a character): that line never parses
    let text = String::from_utf8_lossy(&bytes);
    text.lines().rev().find_map(|l| serde_json::from_str(l).ok())
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_987_801_000), "2026-11-29T21:30:01Z");
    }

    #[test]
    fn appends_and_reads_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/updates.log");
        assert_eq!(last(&path), None);
        let mut r = Record::new("install", "confirmed", 1000);
        r.version = Some("1.0".into());
        append(&path, &r).unwrap();
        let mut r2 = Record::new("install", "rolled_back", 2000);
        r2.reason = Some("not ready".into());
        append(&path, &r2).unwrap();
        assert_eq!(last(&path), Some(r2));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.contains("\"bundle\""), "absent fields are left out");
    }

    #[test]
    fn the_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updates.log");
        let mut r = Record::new("install", "refused", 1);
        r.reason = Some("é".repeat(2500)); // multi-byte: the cut never splits a character
        for i in 0..400 {
            r.unix_ms = i;
            append(&path, &r).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= MAX_BYTES && len > MAX_BYTES / 4, "{len}");
        assert_eq!(last(&path).unwrap().unix_ms, 399);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().all(|l| serde_json::from_str::<Record>(l).is_ok()),
            "only whole lines kept"
        );
    }
}

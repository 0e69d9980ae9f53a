//! How the state database's writer threads are doing, for readiness: each writer (call
//! records, callback requests) records the outcome of its writes in a [`WriterHealth`], and
//! [`WriterHealth::problem`] says whether storage is failing right now.
//!
//! A failed write makes the writer unhealthy until a later write of the same writer succeeds,
//! for at most [`FAILURE_HOLD`] after the last failure: a writer that has nothing more to write
//! cannot prove the disk is back, and readiness must not stay down forever on a quiet box (the
//! state database's own write check, run every second, keeps reporting a disk that is still
//! full or read-only).
//!
//! [`StorageSources`] gathers the writers' counters for the HTTP side (`/api/status`,
//! `/metrics`, `/readyz`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::callbacks::{CallbackCounters, CallbackSnapshot};
use super::calls::{CallLogSnapshot, LogCounters};

/// A failure without a later success keeps the writer unhealthy this long.
pub const FAILURE_HOLD: Duration = Duration::from_secs(60);

/// The latest failure of a writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteFailure {
    /// Wall clock, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub error: String,
}

/// Outcomes of one writer's database writes.
#[derive(Debug)]
pub struct WriterHealth {
    name: &'static str,
    last_ok_ms: AtomicU64,
    last_failure: Mutex<Option<WriteFailure>>,
}

impl WriterHealth {
    pub fn new(name: &'static str) -> WriterHealth {
        WriterHealth { name, last_ok_ms: AtomicU64::new(0), last_failure: Mutex::new(None) }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A write committed at `unix_ms`.
    pub fn ok(&self, unix_ms: u64) {
        self.last_ok_ms.fetch_max(unix_ms, Ordering::Relaxed);
    }

    /// A write failed at `unix_ms`.
    pub fn failed(&self, unix_ms: u64, error: impl ToString) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = Some(WriteFailure { at_unix_ms: unix_ms, error: error.to_string() });
        }
    }

    /// The latest failure, if any.
    pub fn last_failure(&self) -> Option<WriteFailure> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Why this writer is unhealthy at `now_ms`: its last write failed (no success since) and
    /// that was less than [`FAILURE_HOLD`] ago.
    pub fn problem(&self, now_ms: u64) -> Option<String> {
        let failure = self.last_failure()?;
        if self.last_ok_ms.load(Ordering::Relaxed) > failure.at_unix_ms {
            return None;
        }
        let ago = now_ms.saturating_sub(failure.at_unix_ms);
        (ago < FAILURE_HOLD.as_millis() as u64).then(|| {
            format!(
                "{} writer failed {:.1} s ago: {}",
                self.name,
                ago as f64 / 1000.0,
                failure.error
            )
        })
    }
}

/// The writers' counters, as the drive loop started them (`None`: that writer is not running).
#[derive(Debug, Clone, Default)]
pub struct StorageSources {
    pub call_log: Option<Arc<LogCounters>>,
    pub callbacks: Option<Arc<CallbackCounters>>,
}

/// `call_records` and `callbacks` of `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageStatus {
    pub call_records: Option<CallLogSnapshot>,
    pub callbacks: Option<CallbackSnapshot>,
}

impl StorageSources {
    pub fn snapshot(&self) -> StorageStatus {
        StorageStatus {
            call_records: self.call_log.as_ref().map(|c| c.snapshot()),
            callbacks: self.callbacks.as_ref().map(|c| c.snapshot()),
        }
    }

    /// Why storage is failing at `now_ms`, over every writer (`None`: it is not); also names
    /// callback requests held in memory because the database refused them.
    pub fn problem(&self, now_ms: u64) -> Option<String> {
        let mut problems: Vec<String> = Vec::new();
        if let Some(p) = self.call_log.as_ref().and_then(|c| c.health.problem(now_ms)) {
            problems.push(p);
        }
        if let Some(c) = &self.callbacks {
            let unstored = c.unstored.load(std::sync::atomic::Ordering::Relaxed);
            if unstored > 0 {
                problems.push(format!(
                    "{unstored} callback request(s) not stored yet (kept in memory, retried)"
                ));
            }
            if let Some(p) = c.health.problem(now_ms) {
                problems.push(p);
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_counts_until_a_later_success_or_the_hold_ends() {
        let h = WriterHealth::new("call-record");
        assert_eq!(h.problem(1000), None);
        h.ok(1000);
        h.failed(2000, "disk I/O error");
        let p = h.problem(2500).unwrap();
        assert!(p.contains("call-record writer failed 0.5 s ago: disk I/O error"), "{p}");
        assert!(h.problem(2000 + FAILURE_HOLD.as_millis() as u64 - 1).is_some());
        assert_eq!(h.problem(2000 + FAILURE_HOLD.as_millis() as u64), None);
        h.ok(3000);
        assert_eq!(h.problem(3001), None);
        assert_eq!(h.last_failure().map(|f| f.at_unix_ms), Some(2000));
        // an older success does not clear a newer failure
        h.failed(4000, "readonly");
        h.ok(3500);
        assert!(h.problem(4001).is_some());
    }
}

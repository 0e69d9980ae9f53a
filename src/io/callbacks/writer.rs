//! The callback writer thread: commits each new request (its own transaction,
//! `synchronous=FULL`), then wakes the delivery worker; prunes old delivered and failed rows at
//! start and hourly.
//!
//! When the database refuses a request (disk full, read-only), the request is kept in memory
//! (at most [`MAX_UNSTORED`]; beyond that new ones are dropped and counted) and the insert is
//! retried every [`RETRY_UNSTORED`], so a disk that comes back loses nothing the process still
//! holds. The failure is logged (at most once a minute while it lasts) and reported in the
//! writer's health (readiness).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::store::{CallbackDb, StoredCallback};
use super::CallbackCounters;
use crate::io::calls::Retention;
use crate::io::clock;

/// Unstored requests are retried this often.
pub const RETRY_UNSTORED: Duration = Duration::from_secs(5);
/// At most this many requests wait in memory for a failing database.
pub const MAX_UNSTORED: usize = 1024;
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A failure that lasts is logged again this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
const DAY_MS: u64 = 86_400_000;

pub struct Writer {
    db: CallbackDb,
    retention: Retention,
    counters: Arc<CallbackCounters>,
    wake: Arc<Notify>,
    unstored: VecDeque<StoredCallback>,
    last_logged: Option<Instant>,
}

impl Writer {
    pub fn new(
        dir: PathBuf,
        retention: Retention,
        counters: Arc<CallbackCounters>,
        wake: Arc<Notify>,
    ) -> Writer {
        Writer {
            db: CallbackDb::new(dir),
            retention,
            counters,
            wake,
            unstored: VecDeque::new(),
            last_logged: None,
        }
    }

    /// Runs until every sender is gone (then makes a last attempt at what it holds).
    pub fn run(mut self, rx: Receiver<StoredCallback>) {
        self.refresh_counts();
        let mut next_prune = Instant::now();
        loop {
            if Instant::now() >= next_prune {
                self.prune();
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            let mut wait = next_prune.saturating_duration_since(Instant::now());
            if !self.unstored.is_empty() {
                wait = wait.min(RETRY_UNSTORED);
            }
            match rx.recv_timeout(wait) {
                Ok(row) => {
                    self.hold(row);
                    // take whatever else is queued, then commit in order
                    while let Ok(row) = rx.try_recv() {
                        self.hold(row);
                    }
                    self.flush();
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    self.drop_unstored();
                    return;
                }
            }
        }
    }

    fn hold(&mut self, row: StoredCallback) {
        if self.unstored.len() >= MAX_UNSTORED {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(call_id = %row.call_id, caller = %row.caller, dropped = n,
                "callback request dropped: too many requests waiting for a failing database");
            return;
        }
        self.unstored.push_back(row);
        self.counters.unstored.store(self.unstored.len() as u64, Ordering::Relaxed);
    }

    /// Commits the held requests in order; stops at the first failure (kept for later).
    fn flush(&mut self) {
        if self.unstored.is_empty() {
            return;
        }
        let mut stored = false;
        while let Some(row) = self.unstored.front() {
            match self.db.insert(row) {
                Ok(()) => {
                    self.counters.stored.fetch_add(1, Ordering::Relaxed);
                    self.counters.health.ok(clock::unix_ms());
                    tracing::info!(id = %row.id, call_id = %row.call_id, caller = %row.caller, reason = %row.reason,
                        "callback request stored");
                    self.unstored.pop_front();
                    stored = true;
                }
                Err(e) => {
                    self.counters.write_failed(clock::unix_ms(), &e);
                    if self.last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        tracing::error!(error = %e, unstored = self.unstored.len(),
                            "callback requests not stored; kept in memory and retried");
                        self.last_logged = Some(Instant::now());
                    }
                    break;
                }
            }
        }
        if self.unstored.is_empty() {
            self.last_logged = None;
        }
        self.counters.unstored.store(self.unstored.len() as u64, Ordering::Relaxed);
        if stored {
            self.refresh_counts();
            self.wake.notify_one();
        }
    }

    fn drop_unstored(&mut self) {
        for row in self.unstored.drain(..) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(call_id = %row.call_id, caller = %row.caller, "callback request lost at shutdown: never stored");
        }
        self.counters.unstored.store(0, Ordering::Relaxed);
    }

    fn refresh_counts(&mut self) {
        match self.db.counts() {
            Ok(c) => self.counters.set_counts(c),
            Err(e) => tracing::debug!(error = %e, "callback counts not read"),
        }
    }

    fn prune(&mut self) {
        let keep_ms = u64::from(self.retention.keep_days).saturating_mul(DAY_MS);
        match self.db.prune(clock::unix_ms(), keep_ms, self.retention.max_rows) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(deleted = n, "old callback requests pruned");
                self.refresh_counts();
            }
            Err(e) => {
                self.counters.write_failed(clock::unix_ms(), &e);
                tracing::error!(error = %e, "callback requests not pruned");
            }
        }
    }
}

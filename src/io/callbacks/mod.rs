//! Callback requests, durable and delivered: the drive loop hands each
//! [`CallbackRequest`](crate::core::callback::CallbackRequest) of the ladder to
//! [`Callbacks::submit`], which never blocks (a bounded queue; a request that does not fit is
//! dropped and counted). A writer thread ([`writer`]) commits it to the `callbacks` table of the
//! state database ([`store`]); only then does the delivery worker ([`deliver`], a tokio task)
//! POST it to `[callback] webhook_url` as JSON ([`payload`], `docs/callbacks.md`), retrying
//! with exponential backoff and full jitter (the core's
//! [`RetrySchedule`](crate::core::callback::RetrySchedule)) until a 2xx or the give-up time.
//! The schedule is in the database (`next_attempt_at_ms`), so delivery survives restarts.
//!
//! Storage failures (disk full, read-only database) never reach the drive loop: the writer
//! keeps a bounded number of unstored requests in memory, retries them every
//! [`writer::RETRY_UNSTORED`], logs, counts, and reports through its [`WriterHealth`] (readiness).
//! `trunkguard callbacks` lists the table ([`show`]).

pub mod deliver;
pub mod payload;
pub mod show;
pub mod store;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use self::store::{StateCounts, StoredCallback};
use super::calls::Retention;
use super::storage::{WriteFailure, WriterHealth};
use crate::config::CallbackConfig;
use crate::core::callback::{CallbackRequest, RetrySchedule};

/// Requests waiting for the writer thread; more are dropped.
pub const QUEUE: usize = 256;
/// At shutdown, the writer gets this long to commit what it holds.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Counters and gauges of the callback pipeline, readable from any thread.
#[derive(Debug)]
pub struct CallbackCounters {
    /// Requests handed over by the drive loop.
    pub requested: AtomicU64,
    /// Requests committed to the database.
    pub stored: AtomicU64,
    /// Requests lost: queue full, or too many unstored while the database failed.
    pub dropped: AtomicU64,
    /// Database operations (insert, update, prune) that failed.
    pub write_failures: AtomicU64,
    /// Requests held in memory because the database did not take them (gauge).
    pub unstored: AtomicU64,
    /// Rows per state, as last counted (gauges).
    pub pending: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Webhook delivery attempts made, and those that did not get a 2xx.
    pub attempts: AtomicU64,
    pub attempt_failures: AtomicU64,
    /// Requests given up after `give_up_after_h`.
    pub gave_up: AtomicU64,
    /// Whether a webhook is configured (and its client could be built).
    pub webhook: AtomicBool,
    pub last_delivery_error: Mutex<Option<String>>,
    /// Outcomes of the database writes (for readiness).
    pub health: WriterHealth,
}

impl Default for CallbackCounters {
    fn default() -> Self {
        CallbackCounters {
            requested: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            unstored: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            attempt_failures: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            webhook: AtomicBool::new(false),
            last_delivery_error: Mutex::new(None),
            health: WriterHealth::new("callback"),
        }
    }
}

impl CallbackCounters {
    pub(crate) fn set_counts(&self, c: StateCounts) {
        self.pending.store(c.pending, Ordering::Relaxed);
        self.delivered.store(c.delivered, Ordering::Relaxed);
        self.failed.store(c.failed, Ordering::Relaxed);
    }

    pub(crate) fn write_failed(&self, unix_ms: u64, error: &impl ToString) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        self.health.failed(unix_ms, error.to_string());
    }

    /// A serializable copy for `/api/status`.
    pub fn snapshot(&self) -> CallbackSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallbackSnapshot {
            webhook: self.webhook.load(Ordering::Relaxed),
            requested: get(&self.requested),
            stored: get(&self.stored),
            dropped: get(&self.dropped),
            write_failures: get(&self.write_failures),
            unstored: get(&self.unstored),
            pending: get(&self.pending),
            delivered: get(&self.delivered),
            failed: get(&self.failed),
            attempts: get(&self.attempts),
            attempt_failures: get(&self.attempt_failures),
            gave_up: get(&self.gave_up),
            last_delivery_error: self.last_delivery_error.lock().ok().and_then(|e| e.clone()),
            last_write_failure: self.health.last_failure(),
        }
    }
}

/// The `callbacks` object of `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallbackSnapshot {
    pub webhook: bool,
    pub requested: u64,
    pub stored: u64,
    pub dropped: u64,
    pub write_failures: u64,
    pub unstored: u64,
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub attempts: u64,
    pub attempt_failures: u64,
    pub gave_up: u64,
    pub last_delivery_error: Option<String>,
    pub last_write_failure: Option<WriteFailure>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallbacksError {
    #[error("cannot start the callback writer thread: {0}")]
    Thread(std::io::Error),
}

/// The drive loop's handle on the callback pipeline. Dropping it stops the delivery worker;
/// the writer thread commits what it holds and ends.
#[derive(Debug)]
pub struct Callbacks {
    tx: Option<SyncSender<StoredCallback>>,
    counters: Arc<CallbackCounters>,
    worker: Option<tokio::task::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Callbacks {
    /// Starts the writer thread for `<dir>/trunkguard.db` and, when `cfg` names a webhook, the
    /// delivery worker (on the current tokio runtime). A webhook client that cannot be built
    /// (bad TLS setup) is logged: requests are then stored only.
    pub fn start(
        dir: PathBuf,
        cfg: &CallbackConfig,
        retention: Retention,
    ) -> Result<Callbacks, CallbacksError> {
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(CallbackCounters::default());
        let wake = Arc::new(Notify::new());
        let writer = writer::Writer::new(dir.clone(), retention, counters.clone(), wake.clone());
        let writer = std::thread::Builder::new()
            .name("callbacks".into())
            .spawn(move || writer.run(rx))
            .map_err(CallbacksError::Thread)?;
        let worker = match &cfg.webhook_url {
            None => {
                tracing::info!("no [callback] webhook_url: callback requests are stored only");
                None
            }
            Some(url) => match deliver::client(cfg) {
                Ok(client) => {
                    counters.webhook.store(true, Ordering::Relaxed);
                    let worker = deliver::Worker::new(
                        client,
                        url.clone(),
                        Duration::from_millis(cfg.timeout_ms),
                        schedule(cfg),
                        dir,
                        counters.clone(),
                        wake,
                    );
                    Some(tokio::spawn(worker.run()))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook client; callback requests are stored only");
                    None
                }
            },
        };
        Ok(Callbacks { tx: Some(tx), counters, worker, writer: Some(writer) })
    }

    /// Queues `request`, made at wall-clock `unix_ms`, for storage then delivery; never blocks.
    /// Returns the request's id, or `None` when it was dropped (queue full).
    pub fn submit(&self, request: CallbackRequest, unix_ms: u64) -> Option<String> {
        self.counters.requested.fetch_add(1, Ordering::Relaxed);
        let row = new_row(request, unix_ms, &format!("{:032x}", rand::random::<u128>()));
        let id = row.id.clone();
        let sent = match &self.tx {
            Some(tx) => tx.try_send(row),
            None => Err(TrySendError::Disconnected(row)),
        };
        match sent {
            Ok(()) => Some(id),
            Err(TrySendError::Full(r)) | Err(TrySendError::Disconnected(r)) => {
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(call_id = %r.call_id, caller = %r.caller, dropped = n, "callback queue full; request dropped");
                None
            }
        }
    }

    pub fn counters(&self) -> &Arc<CallbackCounters> {
        &self.counters
    }
}

impl Drop for Callbacks {
    /// Stops the worker (an attempt cut short is made again after the restart), then gives
    /// the writer up to [`SHUTDOWN_WAIT`] to commit the requests it still holds.
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.abort();
        }
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let end = std::time::Instant::now() + SHUTDOWN_WAIT;
            while !writer.is_finished() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            if writer.is_finished() {
                let _ = writer.join();
            } else {
                tracing::warn!("callback writer still busy at shutdown");
            }
        }
    }
}

/// The delivery schedule of `[callback]`.
pub fn schedule(cfg: &CallbackConfig) -> RetrySchedule {
    RetrySchedule {
        initial: Duration::from_millis(cfg.backoff_initial_ms),
        max: Duration::from_secs(cfg.backoff_max_s),
        give_up_after: Duration::from_secs(cfg.give_up_after_h.saturating_mul(3600)),
    }
}

/// A new pending row for `r`, due at once.
fn new_row(r: CallbackRequest, unix_ms: u64, id: &str) -> StoredCallback {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    StoredCallback {
        id: id.to_string(),
        call_id: r.call_id,
        caller: r.caller,
        called: r.called,
        carrier: r.carrier,
        reason: r.reason.as_str().to_string(),
        failure: r.failure,
        created_at: payload::rfc3339(unix_ms),
        created_at_ms: ms,
        attempts: 0,
        next_attempt_at_ms: Some(ms),
        last_attempt_at_ms: None,
        last_status: None,
        last_error: None,
        delivered_at_ms: None,
        state: store::PENDING.to_string(),
    }
}

#[cfg(test)]
mod tests;

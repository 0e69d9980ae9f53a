//! The webhook delivery worker: one tokio task that reads the pending requests due now from the
//! database (committed ones only), POSTs each (at most [`MAX_IN_FLIGHT`] at a time, never two
//! attempts of one request at once), and commits each outcome: delivered on a 2xx; otherwise
//! the next attempt time from the core's [`RetrySchedule`], or failed past the give-up time.
//!
//! It sleeps until the earliest `next_attempt_at_ms` (at most [`IDLE_RECHECK`]), or until the
//! writer commits a new request or an attempt ends. An outcome the database does not take is
//! kept in memory and its request stays "in flight", so it is neither re-sent nor lost while
//! the process lives; the worker then retries the database every [`DB_RETRY`] and starts
//! nothing new. A crash between a delivery and its commit re-sends the request after the
//! restart: receivers drop duplicates by its id (`Idempotency-Key`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::payload::{self, Payload};
use super::store::{AttemptOutcome, AttemptUpdate, CallbackDb, StoredCallback};
use super::CallbackCounters;
use crate::config::CallbackConfig;
use crate::core::callback::{delivered, AfterFailure, RetrySchedule};
use crate::io::clock;
use crate::io::state::StateError;

/// Deliveries in flight at once, over all requests.
pub const MAX_IN_FLIGHT: usize = 4;
/// With nothing due, the worker still looks at the table this often.
pub const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// After a database failure, the worker tries again this much later.
pub const DB_RETRY: Duration = Duration::from_secs(5);
/// At most this much of a webhook's answer body is read (then the connection is dropped).
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("webhook TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("webhook client: {0}")]
    Build(#[from] reqwest::Error),
}

/// The HTTP client of the deliveries: rustls (ring) trusting the system roots plus
/// `ca_bundle`, HTTP/1.1, `timeout_ms` per attempt, no redirects followed, no proxy.
pub fn client(cfg: &CallbackConfig) -> Result<reqwest::Client, ClientError> {
    let bundles: Vec<&std::path::Path> = cfg.ca_bundle.as_deref().into_iter().collect();
    let mut tls = crate::io::tls::client_config(&bundles)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(payload::user_agent())
        .build()?)
}

/// What one attempt came to.
#[derive(Debug)]
struct Attempted {
    row: StoredCallback,
    status: Option<u16>,
    error: Option<String>,
}

pub struct Worker {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    schedule: RetrySchedule,
    db: Arc<Mutex<CallbackDb>>,
    counters: Arc<CallbackCounters>,
    wake: Arc<Notify>,
    rng: SmallRng,
    /// Requests with an attempt running or an outcome not yet committed.
    in_flight: HashSet<String>,
    unsaved: VecDeque<AttemptUpdate>,
    tasks: JoinSet<Attempted>,
    /// The request each running attempt sends (to account for an attempt whose task failed).
    task_rows: HashMap<tokio::task::Id, StoredCallback>,
}

impl Worker {
    pub fn new(
        client: reqwest::Client,
        url: String,
        timeout: Duration,
        schedule: RetrySchedule,
        dir: PathBuf,
        counters: Arc<CallbackCounters>,
        wake: Arc<Notify>,
    ) -> Worker {
        Worker {
            client,
            url,
            timeout,
            schedule,
            db: Arc::new(Mutex::new(CallbackDb::new(dir))),
            counters,
            wake,
            rng: SmallRng::from_entropy(),
            in_flight: HashSet::new(),
            unsaved: VecDeque::new(),
            tasks: JoinSet::new(),
            task_rows: HashMap::new(),
        }
    }

    /// Runs until aborted.
    pub async fn run(mut self) {
        loop {
            let wait = self.step().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(done) = self.tasks.join_next_with_id() => self.finished(done),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Commits held outcomes, then starts the attempts that are due; returns how long to
    /// sleep at most.
    async fn step(&mut self) -> Duration {
        if !self.save_outcomes().await {
            return DB_RETRY;
        }
        let free = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        if free == 0 {
            return IDLE_RECHECK; // an attempt ending wakes the loop
        }
        let limit = self.in_flight.len() + free + 1;
        let rows = match self.with_db(move |db| db.next_pending(limit)).await {
            Ok(rows) => rows,
            Err(e) => {
                self.db_failed(&e, "pending callback requests not read");
                return DB_RETRY;
            }
        };
        let now = ms(clock::unix_ms());
        let mut started = 0;
        let mut wait = IDLE_RECHECK;
        for row in rows {
            if self.in_flight.contains(&row.id) {
                continue;
            }
            let due = row.next_attempt_at_ms.unwrap_or(row.created_at_ms);
            if due > now {
                wait =
                    wait.min(Duration::from_millis(u64::try_from(due - now).unwrap_or(u64::MAX)));
                break;
            }
            if started < free {
                self.start(row);
                started += 1;
            }
        }
        wait
    }

    fn start(&mut self, row: StoredCallback) {
        self.in_flight.insert(row.id.clone());
        let attempt = attempt(self.client.clone(), self.url.clone(), self.timeout, row.clone());
        let handle = self.tasks.spawn(attempt);
        self.task_rows.insert(handle.id(), row);
    }

    /// An attempt ended: decide what follows and queue it for the database.
    fn finished(&mut self, done: Result<(tokio::task::Id, Attempted), tokio::task::JoinError>) {
        let a = match done {
            Ok((task, a)) => {
                self.task_rows.remove(&task);
                a
            }
            // the attempt's task panicked: a failed attempt like any other (backoff applies)
            Err(e) => match self.task_rows.remove(&e.id()) {
                Some(row) => Attempted {
                    row,
                    status: None,
                    error: Some(format!("delivery task failed: {e}")),
                },
                None => return,
            },
        };
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        let now = clock::unix_ms();
        let attempts = a.row.attempts.saturating_add(1);
        let status = a.status.map(i64::from);
        let r = &a.row;
        let outcome = if a.status.is_some_and(delivered) {
            tracing::info!(id = %r.id, call_id = %r.call_id, attempts, status, "callback request delivered");
            AttemptOutcome::Delivered
        } else {
            self.counters.attempt_failures.fetch_add(1, Ordering::Relaxed);
            let error = a.error.clone().unwrap_or_default();
            if let Ok(mut last) = self.counters.last_delivery_error.lock() {
                *last = Some(error.clone());
            }
            let created = u64::try_from(r.created_at_ms).unwrap_or(0);
            let failed = u32::try_from(attempts).unwrap_or(u32::MAX);
            match self.schedule.after_failure(created, now, failed, &mut self.rng) {
                AfterFailure::RetryAt(t) => {
                    tracing::warn!(id = %r.id, call_id = %r.call_id, attempts, %error,
                        retry_in_ms = t.saturating_sub(now), "callback delivery failed; will retry");
                    AttemptOutcome::RetryAt(ms(t))
                }
                AfterFailure::GiveUp => {
                    self.counters.gave_up.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(id = %r.id, call_id = %r.call_id, caller = %r.caller, attempts, %error,
                        "callback request given up: not delivered within give_up_after_h");
                    AttemptOutcome::GaveUp
                }
            }
        };
        self.unsaved.push_back(AttemptUpdate {
            id: a.row.id,
            attempts,
            at_ms: ms(now),
            status,
            error: a.error,
            outcome,
        });
    }

    /// Commits the held outcomes in order; false if the database failed (they stay held).
    async fn save_outcomes(&mut self) -> bool {
        if self.unsaved.is_empty() {
            return true;
        }
        let updates: Vec<AttemptUpdate> = self.unsaved.iter().cloned().collect();
        let result = self
            .with_db(move |db| {
                let mut saved = 0;
                for u in &updates {
                    if let Err(e) = db.record_attempt(u) {
                        return Ok((saved, Some(e)));
                    }
                    saved += 1;
                }
                Ok((saved, None))
            })
            .await;
        let (saved, error) = match result {
            Ok(r) => r,
            Err(e) => (0, Some(e)),
        };
        for u in self.unsaved.drain(..saved) {
            self.in_flight.remove(&u.id);
        }
        if saved > 0 {
            self.counters.health.ok(clock::unix_ms());
            self.refresh_counts().await;
        }
        match error {
            Some(e) => {
                self.db_failed(&e, "callback delivery outcome not stored; kept in memory");
                false
            }
            None => true,
        }
    }

    async fn refresh_counts(&mut self) {
        if let Ok(c) = self.with_db(|db| db.counts()).await {
            self.counters.set_counts(c);
        }
    }

    fn db_failed(&self, e: &StateError, what: &str) {
        self.counters.write_failed(clock::unix_ms(), e);
        tracing::error!(error = %e, "{what}");
    }

    /// Runs `f` on the worker's connection off the async threads.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CallbackDb) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let db = self.db.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut guard = db.lock().map_err(|_| StateError::Poisoned)?;
            f(&mut guard)
        });
        task.await.unwrap_or(Err(StateError::Poisoned))
    }
}

/// One POST of `row` (its attempt number is `attempts + 1`).
async fn attempt(
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    row: StoredCallback,
) -> Attempted {
    let n = row.attempts.saturating_add(1);
    let request = client
        .post(&url)
        .header(payload::IDEMPOTENCY_KEY, &row.id)
        .header(payload::ATTEMPT_HEADER, n.to_string())
        .json(&Payload::of(&row, n));
    let exchange = async {
        let mut response = request.send().await?;
        let status = response.status();
        let mut read = 0;
        while let Some(chunk) = response.chunk().await? {
            read += chunk.len();
            if read >= MAX_BODY {
                break;
            }
        }
        Ok::<_, reqwest::Error>(status)
    };
    // the client's own timeout is the same; this one also bounds what the client does not
    let outcome = tokio::time::timeout(timeout, exchange).await;
    match outcome {
        Ok(Ok(status)) if delivered(status.as_u16()) => {
            Attempted { row, status: Some(status.as_u16()), error: None }
        }
        Ok(Ok(status)) => {
            let error = if status.is_redirection() {
                format!("HTTP {status} (redirects are not followed)")
            } else {
                format!("HTTP {status}")
            };
            Attempted { row, status: Some(status.as_u16()), error: Some(error) }
        }
        Ok(Err(e)) if e.is_timeout() => {
            Attempted { row, status: None, error: Some(timed_out(timeout)) }
        }
        Ok(Err(e)) => Attempted { row, status: None, error: Some(describe(&e)) },
        Err(_) => Attempted { row, status: None, error: Some(timed_out(timeout)) },
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {} ms", timeout.as_millis())
}

/// A reqwest error with its causes, one line.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() { "cannot connect" } else { "request failed" };
    let mut text = kind.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn ms(unix_ms: u64) -> i64 {
    i64::try_from(unix_ms).unwrap_or(i64::MAX)
}

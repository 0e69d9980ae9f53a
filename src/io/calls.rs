//! Durable call records: the `calls` table of the state database, written by one dedicated
//! thread so the drive loop never waits on the disk.
//!
//! The drive loop hands each [`CallRecord`] (with the wall-clock time it saw it) to
//! [`CallLog::submit`], which never blocks: the queue is bounded and a record that does not
//! fit is dropped and counted. The writer thread upserts each record in its own transaction
//! (`journal_mode=WAL`, `synchronous=FULL`: a committed record survives power loss) and prunes
//! by age and row count at start and hourly. A database failure (read-only, disk full) is
//! logged, counted and reported in the writer's [`WriterHealth`] (readiness); calls go on, and
//! the connection is reopened on the next record.
//!
//! Ordering: the answer's record is queued before the 200 OK is sent, and the drive loop waits
//! for its commit ([`CallLog::submit_and_wait`]) at most [`ANSWER_WAIT`] before going on to
//! send the 200. So a call the caller saw answered has a committed record, unless the disk
//! took longer than that (counted in [`LogCounters::late`]) or the queue was full (counted in
//! `dropped`). Every other record is fire-and-forget.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde::Serialize;

use super::state::{open_read_only, open_with, LazyDb, StateError, DB_FILE};
use super::storage::{WriteFailure, WriterHealth};
use crate::core::endpoint::{CallRecord, RecordPhase};

/// Records waiting for the writer thread; more are dropped.
pub const QUEUE: usize = 1024;
/// The longest the drive loop waits for the commit of an answer's record.
pub const ANSWER_WAIT: Duration = Duration::from_millis(20);
/// How often the writer prunes old records.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const DAY_MS: u64 = 86_400_000;

/// How long call records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_days: u32,
    pub max_rows: u32,
}

/// Counters of the writer, readable from any thread.
#[derive(Debug)]
pub struct LogCounters {
    /// Records committed.
    pub written: AtomicU64,
    /// Records dropped because the queue was full (or the writer gone).
    pub dropped: AtomicU64,
    /// Records (or prunes) that failed in the database.
    pub failed: AtomicU64,
    /// Answer records whose commit took longer than the drive loop waited.
    pub late: AtomicU64,
    /// Outcomes of the writes (for readiness).
    pub health: WriterHealth,
}

impl Default for LogCounters {
    fn default() -> Self {
        LogCounters {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            late: AtomicU64::new(0),
            health: WriterHealth::new("call-record"),
        }
    }
}

impl LogCounters {
    /// A serializable copy for `/api/status`.
    pub fn snapshot(&self) -> CallLogSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallLogSnapshot {
            written: get(&self.written),
            dropped: get(&self.dropped),
            failed: get(&self.failed),
            late: get(&self.late),
            last_write_failure: self.health.last_failure(),
        }
    }
}

/// The `call_records` object of `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallLogSnapshot {
    pub written: u64,
    pub dropped: u64,
    pub failed: u64,
    pub late: u64,
    pub last_write_failure: Option<WriteFailure>,
}

/// One record for the writer, and who waits for its commit.
type Job = (CallRecord, u64, Option<SyncSender<()>>);

/// The drive loop's handle on the call-record writer thread.
#[derive(Debug)]
pub struct CallLog {
    tx: SyncSender<Job>,
    counters: Arc<LogCounters>,
}

impl CallLog {
    /// Starts the writer thread for `<dir>/trunkguard.db`.
    pub fn start(dir: PathBuf, retention: Retention) -> std::io::Result<CallLog> {
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(LogCounters::default());
        let writer = Writer { db: CallDb::new(dir), retention, counters: counters.clone() };
        std::thread::Builder::new().name("call-records".into()).spawn(move || writer.run(rx))?;
        Ok(CallLog { tx, counters })
    }

    /// Queues `record`, seen at wall-clock `unix_ms`; never blocks.
    pub fn submit(&self, record: CallRecord, unix_ms: u64) {
        self.enqueue((record, unix_ms, None));
    }

    /// Queues `record` and waits for the writer to be done with it (committed or failed), at
    /// most `max`. True if it was done in time.
    pub fn submit_and_wait(&self, record: CallRecord, unix_ms: u64, max: Duration) -> bool {
        let (done_tx, done_rx) = sync_channel(1);
        if !self.enqueue((record, unix_ms, Some(done_tx))) {
            return false;
        }
        let done = done_rx.recv_timeout(max).is_ok();
        if !done {
            let n = self.counters.late.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(late = n, ?max, "call record commit slower than the answer waits");
        }
        done
    }

    fn enqueue(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full((r, ..))) | Err(TrySendError::Disconnected((r, ..))) => {
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(call_id = %r.call_id, dropped = n, "call record queue full; record dropped");
                false
            }
        }
    }

    pub fn counters(&self) -> &Arc<LogCounters> {
        &self.counters
    }
}

struct Writer {
    db: CallDb,
    retention: Retention,
    counters: Arc<LogCounters>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        let mut next_prune = Instant::now();
        loop {
            if Instant::now() >= next_prune {
                self.prune();
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            match rx.recv_timeout(next_prune.saturating_duration_since(Instant::now())) {
                Ok((record, unix_ms, done)) => {
                    self.write(&record, unix_ms);
                    if let Some(done) = done {
                        let _ = done.try_send(()); // the waiter may have given up
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn write(&mut self, record: &CallRecord, unix_ms: u64) {
        match self.db.upsert(record, unix_ms) {
            Ok(()) => {
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                self.counters.health.ok(super::clock::unix_ms());
            }
            Err(e) => {
                self.counters.health.failed(super::clock::unix_ms(), &e);
                let n = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(error = %e, call_id = %record.call_id, failed = n, "call record not written");
            }
        }
    }

    fn prune(&mut self) {
        match self.db.prune(super::clock::unix_ms(), self.retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "old call records pruned"),
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.counters.health.failed(super::clock::unix_ms(), &e);
                tracing::error!(error = %e, "call records not pruned");
            }
        }
    }
}

/// The `calls` table through one connection, opened lazily and dropped after a failure.
#[derive(Debug)]
pub struct CallDb {
    db: LazyDb,
}

impl CallDb {
    pub fn new(dir: impl Into<PathBuf>) -> CallDb {
        CallDb { db: LazyDb::new(dir.into(), open) }
    }

    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        self.db.with(f)
    }

    /// Inserts or updates the call's row and commits. Times: `unix_ms` stamps the answer (on
    /// [`RecordPhase::Answered`]), the end (on [`RecordPhase::Ended`]) and the update.
    pub fn upsert(&mut self, r: &CallRecord, unix_ms: u64) -> Result<(), StateError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let at = unix_ms as i64;
            let answered = (r.phase == RecordPhase::Answered).then_some(at);
            let ended = (r.phase == RecordPhase::Ended).then_some(at);
            let end = r.end.as_ref();
            tx.execute(
                "INSERT INTO calls (call_id, carrier, caller, called, answered_at_ms, ended_at_ms,
                     duration_ms, ai_endpoint, failovers, fallback_reason, end_reason, mos,
                     loss_percent, jitter_ms, concealed_ms, updated_at_ms, ladder, callback_reason, human)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
                 ON CONFLICT(call_id) DO UPDATE SET
                     carrier = excluded.carrier, caller = excluded.caller, called = excluded.called,
                     answered_at_ms = COALESCE(calls.answered_at_ms, excluded.answered_at_ms),
                     ended_at_ms = COALESCE(excluded.ended_at_ms, calls.ended_at_ms),
                     duration_ms = COALESCE(excluded.duration_ms, calls.duration_ms),
                     ai_endpoint = COALESCE(excluded.ai_endpoint, calls.ai_endpoint),
                     failovers = MAX(excluded.failovers, calls.failovers),
                     fallback_reason = COALESCE(excluded.fallback_reason, calls.fallback_reason),
                     end_reason = COALESCE(excluded.end_reason, calls.end_reason),
                     mos = COALESCE(excluded.mos, calls.mos),
                     loss_percent = COALESCE(excluded.loss_percent, calls.loss_percent),
                     jitter_ms = COALESCE(excluded.jitter_ms, calls.jitter_ms),
                     concealed_ms = COALESCE(excluded.concealed_ms, calls.concealed_ms),
                     ladder = COALESCE(excluded.ladder, calls.ladder),
                     callback_reason = COALESCE(excluded.callback_reason, calls.callback_reason),
                     human = COALESCE(excluded.human, calls.human),
                     updated_at_ms = excluded.updated_at_ms",
                params![
                    r.call_id,
                    r.carrier,
                    r.caller,
                    r.called,
                    answered,
                    ended,
                    end.map(|e| e.duration_ms as i64),
                    r.ai_endpoint,
                    i64::from(r.failovers),
                    r.fallback_reason,
                    end.map(|e| e.reason),
                    end.and_then(|e| e.quality.mos),
                    end.map(|e| e.quality.loss_percent),
                    end.map(|e| e.quality.jitter_ms),
                    end.map(|e| e.quality.concealed_ms as i64),
                    at,
                    ladder_text(r),
                    r.callback.map(|c| c.as_str()),
                    human_text(r),
                ],
            )?;
            tx.commit()
        })
    }

    /// Deletes rows last updated more than `keep_days` before `now_ms`, then all but the
    /// `max_rows` most recent. Returns how many went.
    pub fn prune(&mut self, now_ms: u64, retention: Retention) -> Result<usize, StateError> {
        let cutoff = now_ms.saturating_sub(u64::from(retention.keep_days) * DAY_MS) as i64;
        self.with(|conn| {
            let tx = conn.transaction()?;
            let old = tx.execute("DELETE FROM calls WHERE updated_at_ms < ?1", [cutoff])?;
            let extra = tx.execute(
                "DELETE FROM calls WHERE call_id IN
                     (SELECT call_id FROM calls ORDER BY updated_at_ms DESC, rowid DESC LIMIT -1 OFFSET ?1)",
                [i64::from(retention.max_rows)],
            )?;
            tx.commit()?;
            Ok(old + extra)
        })
    }
}

/// The ladder's rungs as stored: `prompt>menu>callback`; `None` when the call never left
/// its agent.
fn ladder_text(r: &CallRecord) -> Option<String> {
    (!r.ladder.is_empty())
        .then(|| r.ladder.iter().map(|rung| rung.as_str()).collect::<Vec<_>>().join(">"))
}

/// The human transfer as stored: `refer; carrier-b; failed carrier-a: 503 Service Unavailable;
/// connected` (the parts that apply, in that order); `None` when none was tried.
fn human_text(r: &CallRecord) -> Option<String> {
    let h = r.human.as_ref()?;
    let mut parts = Vec::new();
    if h.refer {
        parts.push("refer".to_string());
    }
    if let Some(c) = &h.carrier {
        parts.push(c.clone());
    }
    parts.extend(h.failed_attempts.iter().map(|f| format!("failed {f}")));
    if let Some(o) = h.outcome {
        parts.push(o.to_string());
    }
    Some(parts.join("; "))
}

/// Columns added after the first release of the table, created on databases made before them.
const ADDED_COLUMNS: [(&str, &str); 3] =
    [("ladder", "TEXT"), ("callback_reason", "TEXT"), ("human", "TEXT")];

fn open(dir: &Path) -> Result<Connection, StateError> {
    let conn = open_schema(dir)?;
    let path = dir.join(DB_FILE);
    add_missing_columns(&conn).map_err(|source| StateError::Sqlite { path, source })?;
    Ok(conn)
}

fn columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA table_info(calls)")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    names.collect()
}

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let have = columns(conn)?;
    for (name, kind) in ADDED_COLUMNS {
        if !have.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

fn open_schema(dir: &Path) -> Result<Connection, StateError> {
    open_with(
        dir,
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS calls (
             call_id TEXT PRIMARY KEY,
             carrier TEXT NOT NULL,
             caller TEXT NOT NULL,
             called TEXT NOT NULL,
             answered_at_ms INTEGER,
             ended_at_ms INTEGER,
             duration_ms INTEGER,
             ai_endpoint TEXT,
             failovers INTEGER NOT NULL DEFAULT 0,
             fallback_reason TEXT,
             end_reason TEXT,
             mos REAL,
             loss_percent REAL,
             jitter_ms REAL,
             concealed_ms INTEGER,
             updated_at_ms INTEGER NOT NULL,
             ladder TEXT,
             callback_reason TEXT,
             human TEXT
         );
         CREATE INDEX IF NOT EXISTS calls_updated ON calls (updated_at_ms);",
    )
}

/// One row of the `calls` table, as `trunkguard calls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCall {
    pub call_id: String,
    pub carrier: String,
    pub caller: String,
    pub called: String,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub ai_endpoint: Option<String>,
    pub failovers: i64,
    pub fallback_reason: Option<String>,
    pub end_reason: Option<String>,
    pub mos: Option<f64>,
    pub loss_percent: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub concealed_ms: Option<i64>,
    pub updated_at_ms: i64,
    /// The ladder's rungs the call reached (`prompt>menu>callback`), if it fell to the ladder.
    pub ladder: Option<String>,
    /// Why a callback was requested (`caller-pressed-1`, ...), if one was.
    pub callback_reason: Option<String>,
    /// The transfer to the human (`refer; carrier-b; failed carrier-a: 503 ...; connected`).
    pub human: Option<String>,
}

/// The `last` most recently answered calls in `<dir>/trunkguard.db`, oldest first, read
/// through a read-only connection. No database or no table yet: an empty list.
pub fn read_recent(dir: &Path, last: usize) -> Result<Vec<StoredCall>, StateError> {
    let Some(conn) = open_read_only(dir, "calls")? else {
        return Ok(Vec::new());
    };
    let path = dir.join(DB_FILE);
    let sqlite = |source| StateError::Sqlite { path: path.clone(), source };
    // a database older than the added columns (read-only here: shown as NULL)
    let have = columns(&conn).map_err(sqlite)?;
    let added = ADDED_COLUMNS
        .map(|(name, _)| {
            if have.iter().any(|c| c == name) {
                name.to_string()
            } else {
                format!("NULL AS {name}")
            }
        })
        .join(", ");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT * FROM (SELECT call_id, carrier, caller, called, answered_at_ms, ended_at_ms, duration_ms,
                 ai_endpoint, failovers, fallback_reason, end_reason, mos, loss_percent, jitter_ms,
                 concealed_ms, updated_at_ms, {added}, rowid AS r FROM calls
                 ORDER BY COALESCE(answered_at_ms, updated_at_ms) DESC, r DESC LIMIT ?1)
             ORDER BY COALESCE(answered_at_ms, updated_at_ms), r"
        ))
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([i64::try_from(last).unwrap_or(i64::MAX)], |r| {
            Ok(StoredCall {
                call_id: r.get(0)?,
                carrier: r.get(1)?,
                caller: r.get(2)?,
                called: r.get(3)?,
                answered_at_ms: r.get(4)?,
                ended_at_ms: r.get(5)?,
                duration_ms: r.get(6)?,
                ai_endpoint: r.get(7)?,
                failovers: r.get(8)?,
                fallback_reason: r.get(9)?,
                end_reason: r.get(10)?,
                mos: r.get(11)?,
                loss_percent: r.get(12)?,
                jitter_ms: r.get(13)?,
                concealed_ms: r.get(14)?,
                updated_at_ms: r.get(15)?,
                ladder: r.get(16)?,
                callback_reason: r.get(17)?,
                human: r.get(18)?,
            })
        })
        .map_err(sqlite)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
}

pub mod show;

#[cfg(test)]
mod tests;

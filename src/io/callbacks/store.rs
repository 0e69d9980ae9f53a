//! The `callbacks` table of the state database: one row per callback request, from the commit
//! that makes it durable to its delivery (or the give-up). Every call blocks on disk I/O: the
//! writer thread and the delivery worker (through `spawn_blocking`) call it, never the drive
//! loop.
//!
//! Times are wall-clock milliseconds since the Unix epoch (`*_ms`), plus `created_at` as
//! RFC 3339 text, the value the webhook payload carries.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use crate::io::state::{open_read_only, open_with, LazyDb, StateError, DB_FILE};

/// The state of a request.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// A request as stored (and shown by `trunkguard callbacks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCallback {
    /// Random 128-bit id (32 hex digits): the idempotency key of its deliveries.
    pub id: String,
    pub call_id: String,
    pub caller: String,
    pub called: String,
    pub carrier: String,
    pub reason: String,
    pub failure: String,
    /// RFC 3339, UTC, milliseconds.
    pub created_at: String,
    pub created_at_ms: i64,
    /// Delivery attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at_ms: Option<i64>,
    pub last_attempt_at_ms: Option<i64>,
    /// The HTTP status of the last attempt (none: no answer, see `last_error`).
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
}

/// What an attempt changed: the row's new delivery fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptUpdate {
    pub id: String,
    pub attempts: i64,
    pub at_ms: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    RetryAt(i64),
    GaveUp,
}

/// Rows per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// The `callbacks` table through one connection, opened lazily and dropped after a failure
/// (so a disk that comes back is used again).
#[derive(Debug)]
pub struct CallbackDb {
    db: LazyDb,
}

const COLUMNS: &str = "id, call_id, caller, called, carrier, reason, failure, created_at, created_at_ms, attempts, \
                       next_attempt_at_ms, last_attempt_at_ms, last_status, last_error, delivered_at_ms, state";

impl CallbackDb {
    pub fn new(dir: impl Into<PathBuf>) -> CallbackDb {
        CallbackDb { db: LazyDb::new(dir.into(), open) }
    }

    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        self.db.with(f)
    }

    /// Stores a new pending request, due at once, and commits. Inserting an id that is already
    /// there changes nothing (a retried insert whose first commit did happen).
    pub fn insert(&mut self, r: &StoredCallback) -> Result<(), StateError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO callbacks (id, call_id, caller, called, carrier, reason, failure,
                     created_at, created_at_ms, attempts, next_attempt_at_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, 'pending')",
                params![
                    r.id,
                    r.call_id,
                    r.caller,
                    r.called,
                    r.carrier,
                    r.reason,
                    r.failure,
                    r.created_at,
                    r.created_at_ms,
                    r.next_attempt_at_ms.unwrap_or(r.created_at_ms),
                ],
            )?;
            tx.commit()
        })
    }

    /// The `limit` pending requests due first (due or not), earliest first.
    pub fn next_pending(&mut self, limit: usize) -> Result<Vec<StoredCallback>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM callbacks WHERE state = 'pending'
                 ORDER BY next_attempt_at_ms, created_at_ms, id LIMIT ?1"
            ))?;
            let rows = stmt.query_map([limit_param(limit)], stored)?;
            rows.collect()
        })
    }

    /// Records an attempt's outcome, in one commit. Only a pending row changes (a row already
    /// delivered or failed is left alone).
    pub fn record_attempt(&mut self, u: &AttemptUpdate) -> Result<(), StateError> {
        let (state, next, delivered) = match u.outcome {
            AttemptOutcome::Delivered => (DELIVERED, None, Some(u.at_ms)),
            AttemptOutcome::RetryAt(t) => (PENDING, Some(t), None),
            AttemptOutcome::GaveUp => (FAILED, None, None),
        };
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE callbacks SET attempts = ?2, last_attempt_at_ms = ?3, last_status = ?4, last_error = ?5,
                     next_attempt_at_ms = ?6, delivered_at_ms = ?7, state = ?8
                 WHERE id = ?1 AND state = 'pending'",
                params![u.id, u.attempts, u.at_ms, u.status, u.error, next, delivered, state],
            )?;
            tx.commit()
        })
    }

    /// How many rows are in each state.
    pub fn counts(&mut self) -> Result<StateCounts, StateError> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT state, COUNT(*) FROM callbacks GROUP BY state")?;
            let mut counts = StateCounts::default();
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                match state.as_str() {
                    PENDING => counts.pending = n,
                    DELIVERED => counts.delivered = n,
                    _ => counts.failed += n,
                }
            }
            Ok(counts)
        })
    }

    /// Deletes delivered and failed requests made more than `keep_ms` before `now_ms`, then all
    /// but the `max_rows` most recent of them. Pending requests are never pruned (they end by
    /// delivery or give-up). Returns how many went.
    pub fn prune(&mut self, now_ms: u64, keep_ms: u64, max_rows: u32) -> Result<usize, StateError> {
        let cutoff = i64::try_from(now_ms.saturating_sub(keep_ms)).unwrap_or(i64::MAX);
        self.with(|conn| {
            let tx = conn.transaction()?;
            let old = tx.execute(
                "DELETE FROM callbacks WHERE state != 'pending' AND created_at_ms < ?1",
                [cutoff],
            )?;
            let extra = tx.execute(
                "DELETE FROM callbacks WHERE id IN
                     (SELECT id FROM callbacks WHERE state != 'pending'
                      ORDER BY created_at_ms DESC, rowid DESC LIMIT -1 OFFSET ?1)",
                [i64::from(max_rows)],
            )?;
            tx.commit()?;
            Ok(old + extra)
        })
    }
}

fn limit_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn stored(r: &Row<'_>) -> rusqlite::Result<StoredCallback> {
    Ok(StoredCallback {
        id: r.get(0)?,
        call_id: r.get(1)?,
        caller: r.get(2)?,
        called: r.get(3)?,
        carrier: r.get(4)?,
        reason: r.get(5)?,
        failure: r.get(6)?,
        created_at: r.get(7)?,
        created_at_ms: r.get(8)?,
        attempts: r.get(9)?,
        next_attempt_at_ms: r.get(10)?,
        last_attempt_at_ms: r.get(11)?,
        last_status: r.get(12)?,
        last_error: r.get(13)?,
        delivered_at_ms: r.get(14)?,
        state: r.get(15)?,
    })
}

fn open(dir: &Path) -> Result<Connection, StateError> {
    open_with(
        dir,
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS callbacks (
             id TEXT PRIMARY KEY,
             call_id TEXT NOT NULL,
             caller TEXT NOT NULL,
             called TEXT NOT NULL,
             carrier TEXT NOT NULL,
             reason TEXT NOT NULL,
             failure TEXT NOT NULL,
             created_at TEXT NOT NULL,
             created_at_ms INTEGER NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             next_attempt_at_ms INTEGER,
             last_attempt_at_ms INTEGER,
             last_status INTEGER,
             last_error TEXT,
             delivered_at_ms INTEGER,
             state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed'))
         );
         CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (state, next_attempt_at_ms);
         CREATE INDEX IF NOT EXISTS callbacks_created ON callbacks (created_at_ms);",
    )
}

/// The `last` most recent requests in `<dir>/trunkguard.db`, oldest first, read through a
/// read-only connection. No database or no table yet: an empty list.
pub fn read_recent(dir: &Path, last: usize) -> Result<Vec<StoredCallback>, StateError> {
    let Some(conn) = open_read_only(dir, "callbacks")? else {
        return Ok(Vec::new());
    };
    let path = dir.join(DB_FILE);
    let sqlite = |source| StateError::Sqlite { path: path.clone(), source };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM (SELECT *, rowid AS r FROM callbacks ORDER BY created_at_ms DESC, r DESC LIMIT ?1)
             ORDER BY created_at_ms, r"
        ))
        .map_err(sqlite)?;
    let rows = stmt.query_map([limit_param(last)], stored).map_err(sqlite)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
}

//! The state database: one SQLite file, `<[state] dir>/trunkguard.db`, in WAL mode.
//!
//! Today it holds only the `health` table, a single row rewritten by [`StateDb::check_writable`]
//! so readiness proves the disk takes a committed write. It is the place where later features
//! keep what must survive a restart (callback requests, call records): add one table per
//! concern here, keep this module small, and keep every call off the drive loop (callers run
//! it in `spawn_blocking`; every call blocks on disk I/O).
//!
//! The connection is opened lazily and reopened after a failure, so a disk that comes back
//! (remounted, space freed) makes the appliance ready again without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;
use thiserror::Error;

/// The database file inside the state directory.
pub const DB_FILE: &str = "trunkguard.db";

/// A write waits at most this long for a lock held by another connection.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot create state directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("state database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("state database lock poisoned")]
    Poisoned,
}

/// The state database of one appliance.
#[derive(Debug)]
pub struct StateDb {
    dir: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl StateDb {
    /// A handle on `<dir>/trunkguard.db`; nothing is opened until first use.
    pub fn new(dir: impl Into<PathBuf>) -> StateDb {
        StateDb { dir: dir.into(), conn: Mutex::new(None) }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// Writes and commits the single `health` row (an upsert: the table never grows), with the
    /// caller's timestamp. Opens (creating directory, file and schema) if needed; on error the
    /// connection is dropped so the next call starts afresh.
    pub fn check_writable(&self, unix_ms: u64) -> Result<(), StateError> {
        let mut guard = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        if guard.is_none() {
            *guard = Some(open(&self.dir)?);
        }
        let result = match guard.as_mut() {
            Some(conn) => write_health(conn, unix_ms)
                .map_err(|source| StateError::Sqlite { path: self.path(), source }),
            None => Ok(()),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

fn open(dir: &Path) -> Result<Connection, StateError> {
    open_with(
        dir,
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS health (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             checked_unix_ms INTEGER NOT NULL,
             writes INTEGER NOT NULL
         );",
    )
}

/// Opens (creating the directory and file) the state database in WAL mode with a busy
/// timeout, then runs `setup` (the caller's pragmas and schema). Every user of the database
/// opens it through here.
pub(crate) fn open_with(dir: &Path, setup: &str) -> Result<Connection, StateError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| StateError::CreateDir { dir: dir.to_path_buf(), source })?;
    let path = dir.join(DB_FILE);
    let sqlite = |source| StateError::Sqlite { path: path.clone(), source };
    let conn = Connection::open(&path).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // journal_mode returns the mode it set as a row.
    let _mode: String =
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sqlite)?;
    conn.execute_batch(setup).map_err(sqlite)?;
    Ok(conn)
}

fn write_health(conn: &mut Connection, unix_ms: u64) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO health (id, checked_unix_ms, writes) VALUES (1, ?1, 1)
         ON CONFLICT(id) DO UPDATE SET checked_unix_ms = excluded.checked_unix_ms, writes = writes + 1",
        [unix_ms as i64],
    )?;
    tx.commit()
}

/// A connection to the state database, opened on first use by `open` (which also sets up the
/// table it needs) and dropped after any failure, so the next use opens it again: a writer
/// thread survives a database that was locked, read-only or full for a while.
#[derive(Debug)]
pub struct LazyDb {
    dir: PathBuf,
    open: fn(&Path) -> Result<Connection, StateError>,
    conn: Option<Connection>,
}

impl LazyDb {
    pub fn new(dir: PathBuf, open: fn(&Path) -> Result<Connection, StateError>) -> LazyDb {
        LazyDb { dir, open, conn: None }
    }

    /// Runs `f` on the connection (opening it first); a failure drops the connection.
    pub fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => (self.open)(&self.dir)?,
        };
        let conn = self.conn.insert(conn);
        let result =
            f(conn).map_err(|source| StateError::Sqlite { path: self.dir.join(DB_FILE), source });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Whether a connection is open (tests: a failure drops it).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// Puts `conn` in place of the current connection (tests: a read-only one).
    #[cfg(test)]
    pub(crate) fn replace_connection(&mut self, conn: Connection) {
        self.conn = Some(conn);
    }
}

/// Opens the state database in `dir` read-only for a listing (`trunkguard calls`,
/// `trunkguard callbacks`): `None` while the database or its `table` does not exist yet.
pub fn open_read_only(dir: &Path, table: &str) -> Result<Option<Connection>, StateError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let sqlite = |source| StateError::Sqlite { path: path.clone(), source };
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    let found: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    ))
    .map_err(sqlite)?;
    Ok(found.map(|_| conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_directory_and_keeps_one_row_in_wal_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("state");
        let db = StateDb::new(&dir);
        db.check_writable(1).unwrap();
        db.check_writable(2).unwrap();
        db.check_writable(3).unwrap();
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        let (rows, last, writes): (i64, i64, i64) = conn
            .query_row("SELECT COUNT(*), MAX(checked_unix_ms), MAX(writes) FROM health", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((rows, last, writes), (1, 3, 3));
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_directory_that_cannot_exist_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let db = StateDb::new(file.join("state"));
        let err = db.check_writable(1).unwrap_err();
        assert!(matches!(err, StateError::CreateDir { .. }), "{err}");
        // and it recovers once the path is usable
        std::fs::remove_file(&file).unwrap();
        db.check_writable(2).unwrap();
    }
}

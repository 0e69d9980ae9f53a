//! Connection admission for the stream listeners (SIP over TCP/TLS and the status server): the
//! core's [`ConnTable`] behind a mutex, a guard that gives the slot back when the connection's
//! task ends (however it ends), and the idle / head / handshake timeouts as durations.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ConnectionsConfig;
use crate::core::conn_table::{ConnCaps, ConnClass, ConnTable};

/// One listener family's connection table, shared by its accept loop and connection tasks.
#[derive(Debug, Clone)]
pub struct Conns {
    table: Arc<Mutex<ConnTable>>,
    /// Connections closed at accept because their source is no carrier's (SIP only).
    pub refused_source: Arc<AtomicU64>,
    /// Connections closed for a timeout (head, idle, handshake).
    pub timed_out: Arc<AtomicU64>,
}

impl Conns {
    pub fn new(caps: ConnCaps) -> Self {
        Conns {
            table: Arc::new(Mutex::new(ConnTable::new(caps))),
            refused_source: Arc::default(),
            timed_out: Arc::default(),
        }
    }

    /// The SIP stream listeners' table.
    pub fn sip(cfg: &ConnectionsConfig) -> Self {
        Self::new(ConnCaps::with_reserve(
            to_usize(cfg.sip_max),
            to_usize(cfg.sip_max_per_source),
            cfg.sip_reserved_percent.min(100) as u8,
        ))
    }

    /// The status server's table.
    pub fn http(cfg: &ConnectionsConfig) -> Self {
        Self::new(ConnCaps::with_reserve(
            to_usize(cfg.http_max),
            to_usize(cfg.http_max_per_source),
            cfg.http_reserved_percent.min(100) as u8,
        ))
    }

    /// A slot for a connection from `source`, held until the guard is dropped; `None` when a
    /// cap is reached (the caller closes the connection without a word).
    pub fn admit(&self, source: IpAddr, class: ConnClass) -> Option<ConnGuard> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.admit(source, class) {
            Ok(()) => Some(ConnGuard { table: self.table.clone(), source }),
            Err(why) => {
                tracing::debug!(%source, reason = %why, "connection refused");
                None
            }
        }
    }

    /// (open now, refused by a cap since start).
    pub fn counts(&self) -> (usize, u64) {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        (table.open(), table.refused)
    }

    pub fn note_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// Gives a connection's slot back when dropped.
#[derive(Debug)]
pub struct ConnGuard {
    table: Arc<Mutex<ConnTable>>,
    source: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).release(self.source);
    }
}

/// The stream timeouts as durations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub head: Duration,
    pub idle: Duration,
    pub http_idle: Duration,
    pub handshake: Duration,
}

impl Timeouts {
    pub fn of(cfg: &ConnectionsConfig) -> Self {
        Timeouts {
            head: Duration::from_millis(cfg.head_timeout_ms),
            idle: Duration::from_secs(cfg.idle_timeout_s),
            http_idle: Duration::from_secs(cfg.http_idle_timeout_s),
            handshake: Duration::from_millis(cfg.tls_handshake_timeout_ms),
        }
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

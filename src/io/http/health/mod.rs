//! Health that means something: `/readyz` (readiness with a reason per check), `/metrics`
//! (Prometheus), the status page `/` with its embedded assets, `/api/status` (the `/status`
//! JSON) and `/api/latency-history` (a server-side ring of p99 samples for the page's chart).
//!
//! [`HealthState`] lives in `Shared`: the state database handle, the cached result of its write
//! check (run at most once a second, in `spawn_blocking`, never on the drive loop) and the
//! latency ring fed by `Shared::beat`.

pub mod history;
pub mod metrics;
mod page;
pub mod readiness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;

use self::history::LatencyHistory;
use self::readiness::{Check, Readiness};
use super::Shared;
use crate::core::endpoint::EndpointStatus;
use crate::io::clock;
use crate::io::state::StateDb;
use crate::io::storage::{StorageSources, StorageStatus};

/// The state database is written at most this often; readiness reuses the last result.
pub const DB_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A write that takes longer than this fails the check (a hung disk).
pub const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the health endpoints keep between requests.
#[derive(Debug, Default)]
pub struct HealthState {
    db: OnceLock<Arc<StateDb>>,
    db_check: tokio::sync::Mutex<Option<(Instant, Check)>>,
    /// A write is still running (timed out, disk hung): do not queue another.
    db_in_flight: Arc<AtomicBool>,
    history: Mutex<LatencyHistory>,
    /// The writers' counters (call records, callback requests).
    storage: OnceLock<StorageSources>,
}

impl HealthState {
    /// Feeds the latency ring (called from `Shared::beat`).
    pub fn on_beat(&self, ms_since_start: u64, status: &EndpointStatus) {
        if let Ok(mut h) = self.history.lock() {
            h.on_beat(ms_since_start, &status.latency);
        }
    }
}

impl Shared {
    /// Gives readiness its state database (once; later calls are ignored).
    pub fn set_state_db(&self, db: Arc<StateDb>) {
        let _ = self.health.db.set(db);
    }

    /// Gives the health endpoints the writers' counters (once; later calls are ignored).
    pub fn set_storage(&self, sources: StorageSources) {
        let _ = self.health.storage.set(sources);
    }

    /// The writers' counters for `/api/status` (empty before [`Shared::set_storage`]).
    pub fn storage_status(&self) -> StorageStatus {
        self.health.storage.get().map(|s| s.snapshot()).unwrap_or_default()
    }

    /// Evaluates every readiness check (the database check may be up to 1 s old). The
    /// `state_db` check also fails while a writer's last write failed.
    pub async fn readiness(&self) -> Readiness {
        let state_db = self.state_db_check().await;
        let writers = self.health.storage.get().and_then(|s| s.problem(clock::unix_ms()));
        let state_db = with_writers(state_db, writers);
        let now = clock::now();
        let drive_loop = if self.alive(now) {
            Check::pass("turning")
        } else {
            Check::fail(format!(
                "drive loop stalled for more than {} s",
                super::LIVENESS_WINDOW.as_secs()
            ))
        };
        Readiness::evaluate(self.status().as_ref(), drive_loop, state_db)
    }

    async fn state_db_check(&self) -> Check {
        let Some(db) = self.health.db.get().cloned() else {
            return Check::fail("no state database configured");
        };
        let mut cache = self.health.db_check.lock().await;
        if let Some((at, check)) = cache.as_ref() {
            if clock::now().saturating_duration_since(*at) < DB_CHECK_EVERY {
                return check.clone();
            }
        }
        let check = run_db_check(db, self.health.db_in_flight.clone()).await;
        *cache = Some((clock::now(), check.clone()));
        check
    }
}

/// The database check, failed (and saying why) when a writer reports a problem.
fn with_writers(db: Check, writers: Option<String>) -> Check {
    match (db.ok, writers) {
        (_, None) => db,
        (true, Some(w)) => Check::fail(w),
        (false, Some(w)) => Check::fail(format!("{}; {w}", db.reason)),
    }
}

async fn run_db_check(db: Arc<StateDb>, in_flight: Arc<AtomicBool>) -> Check {
    if in_flight.swap(true, Ordering::AcqRel) {
        return Check::fail(format!("a write to {} has not completed", db.path().display()));
    }
    let path = db.path();
    let flag = in_flight.clone();
    let task = tokio::task::spawn_blocking(move || {
        let r = db.check_writable(clock::unix_ms());
        flag.store(false, Ordering::Release);
        r
    });
    match tokio::time::timeout(DB_CHECK_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => Check::pass(format!("{} writable", path.display())),
        Ok(Ok(Err(e))) => Check::fail(e.to_string()),
        Ok(Err(e)) => {
            in_flight.store(false, Ordering::Release);
            Check::fail(format!("write check failed: {e}"))
        }
        Err(_) => Check::fail(format!(
            "a write to {} took more than {} s",
            path.display(),
            DB_CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// The routes this module adds to the app.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/api/status", get(super::status))
        .route("/api/latency-history", get(latency_history))
        .merge(page::routes())
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let r = shared.readiness().await;
    let code = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CACHE_CONTROL, "no-store")], Json(r)).into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    let readiness = shared.readiness().await;
    let Some(status) = shared.status() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let conns = shared.connection_stats();
    match metrics::render(&status, &readiness, &shared.storage_status(), &conns) {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n").into_response(),
    }
}

async fn latency_history(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.health.history.lock().ok().map(|h| h.view());
    match view {
        Some(v) => ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "history unavailable\n").into_response(),
    }
}

#[cfg(test)]
mod tests;

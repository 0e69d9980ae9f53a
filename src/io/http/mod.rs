//! The local HTTP server, built as `fn app() -> Router` so it is tested with `oneshot`:
//! `/livez` (the drive loop turns), `/status` (a JSON snapshot of carriers, agents and calls),
//! and operator commands, which reach the drive loop through [`Shared::command`]. Readiness,
//! metrics and the status page are in [`health`].

pub mod health;

pub mod admin;
pub mod auth;
pub mod serve;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::core::endpoint::{AdminCommand, AdminError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;

use crate::core::endpoint::EndpointStatus;

/// The drive loop is considered stuck when it has not turned for this long.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(5);

/// An operator command on its way to the drive loop, with where to send the outcome.
pub type CommandRequest = (AdminCommand, oneshot::Sender<Result<(), AdminError>>);

/// What the drive loop shares with the HTTP handlers.
pub struct Shared {
    started: Instant,
    /// Milliseconds since `started` at the drive loop's last turn.
    heartbeat_ms: AtomicU64,
    status: RwLock<Option<EndpointStatus>>,
    commands: Option<mpsc::Sender<CommandRequest>>,
    /// Asks the drive loop for a snapshot taken now (for `/status`, so it is never stale).
    status_source: std::sync::OnceLock<mpsc::Sender<oneshot::Sender<EndpointStatus>>>,
    health: health::HealthState,
    /// The stream listeners' connection tables (set once at start).
    connections: std::sync::OnceLock<ConnCounters>,
}

/// The connection tables of the SIP stream listeners and of the status server.
#[derive(Debug, Clone)]
pub struct ConnCounters {
    pub sip: crate::io::conns::Conns,
    pub http: crate::io::conns::Conns,
}

impl Shared {
    pub fn new(started: Instant) -> Arc<Shared> {
        Arc::new(Shared {
            started,
            heartbeat_ms: AtomicU64::new(0),
            status: RwLock::new(None),
            commands: None,
            status_source: Default::default(),
            health: Default::default(),
            connections: Default::default(),
        })
    }

    /// As [`Shared::new`], with a channel to the drive loop for operator commands.
    pub fn with_commands(started: Instant, commands: mpsc::Sender<CommandRequest>) -> Arc<Shared> {
        Arc::new(Shared {
            started,
            heartbeat_ms: AtomicU64::new(0),
            status: RwLock::new(None),
            commands: Some(commands),
            status_source: Default::default(),
            health: Default::default(),
            connections: Default::default(),
        })
    }

    /// Runs an operator command in the drive loop and waits for its outcome.
    pub async fn command(
        &self,
        command: AdminCommand,
    ) -> Result<Result<(), AdminError>, CommandUnavailable> {
        let tx = self.commands.as_ref().ok_or(CommandUnavailable)?;
        let (reply, rx) = oneshot::channel();
        tx.send((command, reply)).await.map_err(|_| CommandUnavailable)?;
        rx.await.map_err(|_| CommandUnavailable)
    }

    /// The connection tables, for `/metrics` (set once by the shell at start).
    pub fn set_connections(&self, conns: ConnCounters) {
        let _ = self.connections.set(conns);
    }

    pub fn connections(&self) -> Option<&ConnCounters> {
        self.connections.get()
    }

    /// Connection figures for `/metrics` (zero before [`Shared::set_connections`]).
    pub fn connection_stats(&self) -> health::metrics::ConnStats {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(c) = self.connections.get() else { return Default::default() };
        let ((sip_open, sip_cap), (http_open, http_cap)) = (c.sip.counts(), c.http.counts());
        health::metrics::ConnStats {
            sip_open: sip_open as u64,
            sip_refused_cap: sip_cap,
            sip_refused_source: c.sip.refused_source.load(Relaxed),
            sip_timed_out: c.sip.timed_out.load(Relaxed),
            http_open: http_open as u64,
            http_refused_cap: http_cap,
            http_timed_out: c.http.timed_out.load(Relaxed),
        }
    }

    /// Lets `/status` ask the drive loop for a snapshot taken at the moment of the request.
    pub fn set_status_source(&self, source: mpsc::Sender<oneshot::Sender<EndpointStatus>>) {
        let _ = self.status_source.set(source);
    }

    /// A snapshot taken now by the drive loop, else (busy, shutting down) the latest one.
    pub async fn fresh_status(&self) -> Option<EndpointStatus> {
        if let Some(source) = self.status_source.get() {
            let (tx, rx) = oneshot::channel();
            if source.try_send(tx).is_ok() {
                if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_millis(300), rx).await {
                    return Some(status);
                }
            }
        }
        self.status()
    }

    /// The latest status snapshot, once the drive loop has turned.
    pub fn status(&self) -> Option<EndpointStatus> {
        self.status.read().ok().and_then(|s| s.clone())
    }

    /// Called by the drive loop each turn with the time it read.
    pub fn beat(&self, now: Instant, status: EndpointStatus) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
        self.health.on_beat(ms, &status);
        if let Ok(mut s) = self.status.write() {
            *s = Some(status);
        }
    }

    pub fn alive(&self, now: Instant) -> bool {
        let last = self.started + Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last) <= LIVENESS_WINDOW
    }
}

pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/status", get(status))
        .merge(admin::routes())
        .merge(health::routes())
        .with_state(shared)
}

async fn livez(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.alive(super::clock::now()) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "drive loop stalled\n")
    }
}

/// The endpoint's snapshot, with the state database writers' `call_records` and `callbacks`.
async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let snapshot = shared.fresh_status().await;
    match snapshot {
        Some(s) => {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let (Some(obj), Ok(serde_json::Value::Object(storage))) =
                (v.as_object_mut(), serde_json::to_value(shared.storage_status()))
            {
                obj.extend(storage);
            }
            (StatusCode::OK, Json(v)).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
    }
}

/// The drive loop is gone (shutting down): the command could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the appliance is not accepting commands")]
pub struct CommandUnavailable;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn livez_follows_the_heartbeat() {
        let t0 = Instant::now() - Duration::from_secs(60);
        let shared = Shared::new(t0);
        // never beat since t0, 60 s ago: stalled
        let resp = app(shared.clone())
            .oneshot(Request::get("/livez").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let status = EndpointStatus {
            carriers: vec![],
            calls: crate::core::endpoint::CallsStatus {
                active: 0,
                answered_total: 3,
                rtp_packets_received_total: 9,
            },
            counters: Default::default(),
            outbound: Default::default(),
            ai_reachable: true,
            admin: Default::default(),
            ai_failovers: 0,
            ai_fallbacks: 0,
            latency: crate::core::metrics::Latencies::default().snapshot(),
            ai_endpoints: vec![],
            active_calls: vec![],
            recent_failures: vec![],
        };
        shared.beat(Instant::now(), status);
        let resp = app(shared.clone())
            .oneshot(Request::get("/livez").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = app(shared)
            .oneshot(Request::get("/status").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["calls"]["answered_total"], 3);
    }
}

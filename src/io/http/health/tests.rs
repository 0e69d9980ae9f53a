//! Handler tests without sockets (`oneshot`), on hand-built status snapshots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::readiness::tests::{ai_endpoint, carrier, status};
use crate::core::endpoint::{ActiveCall, EndpointStatus};
use crate::core::media::stats::{CallMediaStats, MosCodec};
use crate::io::http::{app, Shared};
use crate::io::state::StateDb;
use crate::io::storage::StorageSources;

async fn get(shared: &Arc<Shared>, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp =
        app(shared.clone()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, 1 << 22).await.unwrap();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

fn shared_with(s: EndpointStatus, db_dir: &std::path::Path) -> Arc<Shared> {
    shared_with_storage(s, db_dir).0
}

/// As [`shared_with`], with the writers' counters (as the drive loop registers them).
fn shared_with_storage(
    s: EndpointStatus,
    db_dir: &std::path::Path,
) -> (Arc<Shared>, StorageSources) {
    let t0 = Instant::now();
    let shared = Shared::new(t0);
    shared.set_state_db(Arc::new(StateDb::new(db_dir)));
    let sources =
        StorageSources { call_log: Some(Default::default()), callbacks: Some(Default::default()) };
    shared.set_storage(sources.clone());
    shared.beat(Instant::now(), s);
    (shared, sources)
}

#[tokio::test]
async fn a_failing_writer_fails_the_state_db_check_and_shows_in_status_and_metrics() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let (shared, sources) = shared_with_storage(
        status(vec![carrier("local", "unprobed", None, None)], vec![], true),
        tmp.path(),
    );
    assert_eq!(get(&shared, "/readyz").await.0, StatusCode::OK);
    let (log, cb) = (sources.call_log.unwrap(), sources.callbacks.unwrap());
    // the database itself is writable (the health write passes), but a writer failed just now
    log.failed.fetch_add(2, Ordering::Relaxed);
    log.health.failed(crate::io::clock::unix_ms(), "database or disk is full");
    cb.pending.store(3, Ordering::Relaxed);
    cb.delivered.store(5, Ordering::Relaxed);
    cb.attempts.store(9, Ordering::Relaxed);
    cb.unstored.store(1, Ordering::Relaxed);
    let (code, _, body) = get(&shared, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = v["checks"]["state_db"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("call-record writer failed") && reason.contains("database or disk is full"),
        "{reason}"
    );
    assert!(reason.contains("1 callback request(s) not stored yet"), "{reason}");
    let (_, _, body) = get(&shared, "/api/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["call_records"]["failed"], 2);
    assert_eq!(v["call_records"]["last_write_failure"]["error"], "database or disk is full");
    assert_eq!(
        (v["callbacks"]["pending"].as_u64(), v["callbacks"]["delivered"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(v["calls"]["active"], 0, "the endpoint's fields are still there");
    let (_, _, body) = get(&shared, "/metrics").await;
    for line in [
        "trunkguard_call_records_failed_total 2",
        "trunkguard_callbacks{state=\"pending\"} 3",
        "trunkguard_callbacks{state=\"delivered\"} 5",
        "trunkguard_callback_delivery_attempts_total 9",
        "trunkguard_callbacks_unstored 1",
        "trunkguard_readiness_check_ok{check=\"state_db\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    // stored at last, and a later write succeeds: ready again
    cb.unstored.store(0, Ordering::Relaxed);
    log.health.ok(crate::io::clock::unix_ms() + 1);
    assert_eq!(get(&shared, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn readyz_200_names_every_passing_check() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_with(
        status(vec![carrier("local", "unprobed", None, None)], vec![], true),
        tmp.path(),
    );
    let (code, _, body) = get(&shared, "/readyz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    for check in ["drive_loop", "carriers", "ai", "state_db"] {
        assert_eq!(v["checks"][check]["ok"], true, "{check}: {body}");
    }
    assert_eq!(v["checks"]["ai"]["reason"], "no AI endpoints: canned prompt");
    assert!(v["checks"]["carriers"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("inbound-only peering"));
    assert!(tmp.path().join("trunkguard.db").is_file());
}

#[tokio::test]
async fn readyz_503_names_each_failing_check() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let s = status(
        vec![
            carrier("carrier-a", "down", Some(5000), Some(30_000)),
            carrier("carrier-b", "unprobed", None, None),
        ],
        vec![ai_endpoint("agent-1", "open", None)],
        false,
    );
    let shared = shared_with(s, &blocker.join("state"));
    let (code, _, body) = get(&shared, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["drive_loop"]["ok"], true);
    let reason = |c: &str| v["checks"][c]["reason"].as_str().unwrap().to_string();
    assert_eq!(v["checks"]["carriers"]["ok"], false);
    assert!(reason("carriers").contains("carrier-a down, last answer 30.0 s ago"), "{body}");
    assert_eq!(v["checks"]["ai"]["ok"], false);
    assert!(reason("ai").contains("agent-1 (primary): breaker open, never passed"), "{body}");
    assert_eq!(v["checks"]["state_db"]["ok"], false);
    assert!(reason("state_db").contains("cannot create state directory"), "{body}");
}

#[tokio::test]
async fn readyz_fails_when_the_drive_loop_stalls_or_has_not_started() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Shared::new(Instant::now() - Duration::from_secs(60));
    shared.set_state_db(Arc::new(StateDb::new(tmp.path())));
    let (code, _, body) = get(&shared, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"]["drive_loop"]["ok"], false);
    assert!(v["checks"]["carriers"]["reason"].as_str().unwrap().contains("starting"));
    // no database configured at all
    let bare = Shared::new(Instant::now());
    bare.beat(Instant::now(), status(vec![carrier("local", "unprobed", None, None)], vec![], true));
    let (code, _, body) = get(&bare, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no state database configured"), "{body}");
}

#[tokio::test]
async fn the_database_is_written_at_most_once_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_with(
        status(vec![carrier("local", "unprobed", None, None)], vec![], true),
        tmp.path(),
    );
    for _ in 0..5 {
        assert_eq!(get(&shared, "/readyz").await.0, StatusCode::OK);
    }
    let conn = rusqlite::Connection::open(tmp.path().join("trunkguard.db")).unwrap();
    let writes: i64 = conn.query_row("SELECT writes FROM health", [], |r| r.get(0)).unwrap();
    assert_eq!(writes, 1, "five checks within a second write once");
    tokio::time::sleep(super::DB_CHECK_EVERY + Duration::from_millis(50)).await;
    assert_eq!(get(&shared, "/readyz").await.0, StatusCode::OK);
    let writes: i64 = conn.query_row("SELECT writes FROM health", [], |r| r.get(0)).unwrap();
    assert_eq!(writes, 2);
}

fn call(id: &str, carrier: &str, mos: f64, jitter_ms: f64) -> ActiveCall {
    ActiveCall {
        call_id: id.into(),
        carrier: carrier.into(),
        caller: "sip:+15551230000@198.51.100.7".into(),
        caller_name: Some("<b>x</b>".into()),
        state: "Confirmed".into(),
        codec: "PCMU".into(),
        duration_ms: 65_000,
        ai_endpoint: Some("agent-a".into()),
        media: CallMediaStats {
            codec: MosCodec::G711,
            packets_received: 3000,
            packets_sent: 3000,
            packets_lost: 12,
            packets_late: 1,
            duplicates: 0,
            jitter_ms,
            jitter_buffer_depth_ms: 40,
            jitter_buffer_target_ms: 40,
            concealed_ms: 260,
            rtt_ms: Some(20.0),
            remote_loss_percent: None,
            remote_jitter_ms: None,
            loss_percent: 0.4,
            one_way_delay_ms: 80.0,
            r_factor: 90.0,
            media: crate::core::media::stats::MediaFlow::Both,
            mos: Some(mos),
            mos_inbound: Some(mos),
            mos_outbound: Some(4.4),
            outbound_loss_percent: 0.0,
            send_underrun_frames: 0,
        },
        counters: Default::default(),
    }
}

fn busy_status() -> EndpointStatus {
    let mut s = status(
        vec![
            carrier("carrier-a", "up", Some(5000), Some(1200)),
            carrier("carrier-b", "unprobed", None, None),
        ],
        vec![ai_endpoint("agent-1", "half-open", Some(800))],
        true,
    );
    s.active_calls = vec![call("c1@x", "carrier-a", 4.2, 3.0), call("c2@x", "carrier-b", 3.6, 9.0)];
    s.calls.active = 2;
    s.counters.calls_offered = 7;
    s.counters.calls_answered = 6;
    s.counters.calls_ended = 4;
    s.counters.sip_parse_errors = 3;
    s.ai_failovers = 1;
    s.ai_fallbacks = 2;
    s.outbound.attempts = 5;
    s.outbound.failovers = 2;
    s.outbound.connected = 1;
    s.carriers[0].outbound_breaker = "open";
    s.carriers[0].outbound_failures = 5;
    let mut lat = crate::core::metrics::Latencies::default();
    for ms in [3, 4, 15, 15, 150] {
        lat.ai_to_rtp.record(Duration::from_millis(ms));
    }
    s.latency = lat.snapshot();
    s
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_bounded_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_with(busy_status(), tmp.path());
    let (code, headers, body) = get(&shared, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let families = prom::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let value = |name: &str, labels: &[(&str, &str)]| {
        prom::value(&families, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?}\n{body}"))
    };
    assert_eq!(value("trunkguard_ready", &[]), 1.0);
    assert_eq!(value("trunkguard_readiness_check_ok", &[("check", "state_db")]), 1.0);
    assert_eq!(value("trunkguard_calls_active", &[]), 2.0);
    assert_eq!(value("trunkguard_calls_offered_total", &[]), 7.0);
    assert_eq!(value("trunkguard_calls_answered_total", &[]), 6.0);
    assert_eq!(value("trunkguard_calls_ended_total", &[]), 4.0);
    assert_eq!(value("trunkguard_carrier_calls_active", &[("carrier", "carrier-b")]), 1.0);
    assert_eq!(
        value("trunkguard_carrier_state", &[("carrier", "carrier-a"), ("state", "up")]),
        1.0
    );
    assert_eq!(
        value("trunkguard_carrier_state", &[("carrier", "carrier-a"), ("state", "down")]),
        0.0
    );
    assert_eq!(
        value("trunkguard_carrier_state", &[("carrier", "carrier-b"), ("state", "unprobed")]),
        1.0
    );
    assert_eq!(value("trunkguard_carrier_up", &[("carrier", "carrier-a")]), 1.0);
    assert_eq!(
        value("trunkguard_carrier_last_probe_ok_age_seconds", &[("carrier", "carrier-a")]),
        1.2
    );
    let ai = [("endpoint", "agent-1"), ("role", "primary")];
    assert_eq!(value("trunkguard_ai_endpoint_breaker_state", &ai), 1.0);
    assert_eq!(value("trunkguard_ai_endpoint_breaker_trips_total", &ai), 2.0);
    assert_eq!(value("trunkguard_ai_endpoint_probe_successes_total", &ai), 10.0);
    assert_eq!(value("trunkguard_ai_endpoint_probe_failures_total", &ai), 3.0);
    assert_eq!(value("trunkguard_ai_failovers_total", &[]), 1.0);
    assert_eq!(value("trunkguard_ai_fallbacks_total", &[]), 2.0);
    assert_eq!(value("trunkguard_outbound_attempts_total", &[]), 5.0);
    assert_eq!(value("trunkguard_outbound_failovers_total", &[]), 2.0);
    assert_eq!(value("trunkguard_human_transfers_total", &[("outcome", "connected")]), 1.0);
    assert_eq!(
        value("trunkguard_carrier_outbound_breaker_state", &[("carrier", "carrier-a")]),
        2.0
    );
    assert_eq!(
        value("trunkguard_carrier_outbound_failures_total", &[("carrier", "carrier-a")]),
        5.0
    );
    assert_eq!(value("trunkguard_sip_parse_errors_total", &[]), 3.0);
    assert_eq!(value("trunkguard_media_mos_min", &[]), 3.6);
    assert!((value("trunkguard_media_mos_avg", &[]) - 3.9).abs() < 1e-9);
    assert_eq!(value("trunkguard_media_jitter_max_seconds", &[]), 0.009);
    // the histogram: cumulative buckets in seconds, +Inf equals the count
    let h = "trunkguard_latency_ai_to_rtp_seconds";
    assert_eq!(families[h].kind, "histogram");
    assert_eq!(value(&format!("{h}_count"), &[]), 5.0);
    assert!((value(&format!("{h}_sum"), &[]) - 0.187).abs() < 1e-9);
    assert_eq!(value(&format!("{h}_bucket"), &[("le", "0.005")]), 2.0);
    assert_eq!(value(&format!("{h}_bucket"), &[("le", "0.02")]), 4.0);
    assert_eq!(value(&format!("{h}_bucket"), &[("le", "+Inf")]), 5.0);
    for name in ["rtp_to_ai", "ai_first_audio", "call_setup", "failover_gap"] {
        assert_eq!(families[&format!("trunkguard_latency_{name}_seconds")].kind, "histogram");
    }
    // bounded cardinality: only known label names, no call ids anywhere
    let allowed = ["carrier", "state", "endpoint", "role", "check", "le", "outcome"];
    for f in families.values() {
        for s in &f.samples {
            for (k, _) in &s.labels {
                assert!(allowed.contains(&k.as_str()), "unexpected label {k} on {}", s.name);
            }
        }
    }
    assert!(!body.contains("c1@x"));
}

#[tokio::test]
async fn calls_without_media_stay_out_of_the_mos_aggregates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut silent = call("c-silent", "local", 4.0, 0.0);
    silent.media.mos = None;
    silent.media.mos_inbound = None;
    silent.media.mos_outbound = None;
    silent.media.media = crate::core::media::stats::MediaFlow::None;
    let mut s = status(vec![carrier("local", "unprobed", None, None)], vec![], true);
    s.active_calls = vec![call("c-1", "local", 3.7, 2.0), silent.clone()];
    let shared = shared_with(s, tmp.path());
    let (_, _, body) = get(&shared, "/metrics").await;
    let families = prom::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(prom::value(&families, "trunkguard_media_mos_min", &[]), Some(3.7));
    assert_eq!(prom::value(&families, "trunkguard_media_mos_avg", &[]), Some(3.7));
    // only calls without media: no MOS aggregate at all
    let mut s = status(vec![carrier("local", "unprobed", None, None)], vec![], true);
    s.active_calls = vec![silent];
    let shared = shared_with(s, tmp.path());
    let (_, _, body) = get(&shared, "/metrics").await;
    let families = prom::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert!(!families.contains_key("trunkguard_media_mos_min"), "{body}");
    let (_, _, json) = get(&shared, "/api/status").await;
    assert!(json.contains("\"mos\":null"), "{json}");
    assert!(json.contains("\"media\":\"none\""), "{json}");
}

#[tokio::test]
async fn metrics_without_calls_omit_the_media_aggregates() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_with(
        status(vec![carrier("local", "unprobed", None, None)], vec![], true),
        tmp.path(),
    );
    let (_, _, body) = get(&shared, "/metrics").await;
    let families = prom::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert!(!families.contains_key("trunkguard_media_mos_min"));
    assert_eq!(prom::value(&families, "trunkguard_calls_active", &[]), Some(0.0));
}

#[tokio::test]
async fn api_status_is_the_status_json_and_history_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_with(busy_status(), tmp.path());
    let (c1, _, a) = get(&shared, "/status").await;
    let (c2, _, b) = get(&shared, "/api/status").await;
    assert_eq!((c1, c2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["active_calls"][0]["caller_name"], "<b>x</b>");
    assert_eq!(v["carriers"][0]["last_probe_ok_ms_ago"], 1200);
    let (code, _, h) = get(&shared, "/api/latency-history").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&h).unwrap();
    assert_eq!(v["interval_s"], 10);
    assert!(v["samples"].is_array());
}

#[tokio::test]
async fn the_page_and_its_assets_are_self_contained() {
    let shared = Shared::new(Instant::now());
    let (code, headers, html) = get(&shared, "/").await;
    assert_eq!(code, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    // nothing fetched from elsewhere: no absolute URLs, no inline script
    assert!(
        !html.contains("http:") && !html.contains("https:") && !html.contains("//"),
        "external reference in the page"
    );
    assert!(
        !html.contains("<script>")
            && html.contains(r#"<script src="/assets/app.js" defer></script>"#)
    );
    assert!(html.contains("name=\"viewport\""));
    for (path, kind) in [
        ("/assets/style.css", "text/css"),
        ("/assets/app.js", "text/javascript"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let (code, headers, body) = get(&shared, path).await;
        assert_eq!(code, StatusCode::OK, "{path}");
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        assert!(!body.is_empty());
    }
    let (_, _, css) = get(&shared, "/assets/style.css").await;
    assert!(!css.contains("url(") && !css.contains("@import") && !css.contains("@font-face"));
    // data goes in as text: no HTML sinks at all in the script
    let (_, _, js) = get(&shared, "/assets/app.js").await;
    for sink in
        ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]
    {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
    let external: Vec<&str> = js.matches("http").collect();
    assert_eq!(external.len(), 1, "only the SVG namespace URI may appear");
    assert!(js.contains("\"http://www.w3.org/2000/svg\""));
}

/// The Operator card's markup, and every management route the script calls exists with the
/// method and body kind it sends.
#[tokio::test]
async fn the_operator_card_uses_existing_routes_with_csrf_and_json() {
    let shared = Shared::new(Instant::now());
    let (_, _, html) = get(&shared, "/").await;
    for id in [
        "operator",
        "login",
        "password",
        "actions",
        "drain",
        "op-targets",
        "logout",
        "op-result",
        "drain-banner",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "#{id} missing from the page");
    }
    // the login form and the actions start hidden until /api/session answers
    for hidden in [
        r#"<form id="login" class="op-login" hidden>"#,
        r#"<div id="actions" hidden>"#,
        r#"id="logout" type="button" hidden"#,
    ] {
        assert!(html.contains(hidden), "{hidden}");
    }
    assert!(html.contains(r#"type="password" autocomplete="current-password""#));
    // no inline handlers (the CSP would block them) and no form that submits by itself
    let lower = html.to_ascii_lowercase();
    for attr in [" onclick=", " onsubmit=", " onload=", " action=", "javascript:"] {
        assert!(!lower.contains(attr), "inline {attr} in the page");
    }
    let js = super::page::APP_JS;
    for needle in [
        "\"X-CSRF-Token\"",
        "\"Content-Type\"] = \"application/json\"",
        "JSON.stringify(payload)",
        "new URLSearchParams()",
        "field.value = \"\"",
        "{ on: on }",
        "{ name: name, in_service: out }",
        "preventDefault()",
    ] {
        assert!(js.contains(needle), "app.js lacks {needle}");
    }
    // GET routes answer; POST routes exist (without the Auth layer they fail closed: 500, not 404/405)
    for path in ["/api/session", "/api/status", "/readyz", "/api/latency-history"] {
        assert!(js.contains(&format!("\"{path}\"")), "app.js does not fetch {path}");
    }
    for path in
        ["/login", "/logout", "/api/admin/drain", "/api/admin/carrier", "/api/admin/ai-endpoint"]
    {
        assert!(js.contains(&format!("\"{path}\"")), "app.js does not post to {path}");
        let resp = app(shared.clone())
            .oneshot(Request::post(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            resp.status() != StatusCode::NOT_FOUND
                && resp.status() != StatusCode::METHOD_NOT_ALLOWED,
            "POST {path}: {}",
            resp.status()
        );
    }
}

#[tokio::test]
async fn the_shipped_alert_rules_use_exported_metrics_and_existing_runbooks() {
    let rules = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/firmware/prometheus/trunkguard-alerts.yml"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let mut s = busy_status();
    s.carriers[0].registers = true;
    let shared = shared_with(s, tmp.path());
    let (_, _, body) = get(&shared, "/metrics").await;
    let families = prom::parse(&body).unwrap();
    let mut used = 0;
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find("trunkguard_") {
            let name: String =
                rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let family = name.strip_suffix("_bucket").unwrap_or(&name);
            let exported = families.contains_key(family)
                || families.values().flat_map(|f| &f.samples).any(|x| x.name == name);
            assert!(exported, "alert rule uses {name}, which /metrics does not export");
            used += 1;
            rest = &rest[i + name.len()..];
        }
    }
    assert!(used >= 9, "only {used} metric references found");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let runbooks: Vec<&str> = rules.lines().filter_map(|l| l.split("runbook: ").nth(1)).collect();
    assert!(runbooks.len() >= 10);
    for r in runbooks {
        assert!(root.join(r.trim()).is_file(), "missing runbook {r}");
    }
}

/// A strict parser for the Prometheus text format 0.0.4, enough to reject malformed output:
/// every sample belongs to a family announced by `# TYPE` before it, names and label names are
/// valid, label values are quoted with only `\\`, `\"`, `\n` escapes, values are floats, no
/// series repeats, and histogram buckets are cumulative and end with `+Inf` = `_count`.
mod prom {
    use std::collections::{BTreeMap, HashSet};

    #[derive(Debug, Default)]
    pub struct Family {
        pub kind: String,
        pub samples: Vec<Sample>,
    }

    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> Option<&'a str> {
        if families.contains_key(name) {
            return Some(name);
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if families.get(base).is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
                {
                    return Some(base);
                }
            }
        }
        None
    }

    type Labels = Vec<(String, String)>;

    fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
        let mut labels = Vec::new();
        let mut rest = s;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                return Ok((labels, r));
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let name = rest[..eq].trim();
            if !valid_name(name) || name.contains(':') {
                return Err(format!("bad label name {name:?}"));
            }
            rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) | None => return Err("unterminated label value".into()),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((name.to_string(), value));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    fn parse_value(s: &str) -> Result<f64, String> {
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
        }
    }

    pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut seen = HashSet::new();
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        for (n, line) in text.lines().enumerate() {
            let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
            if line.is_empty() {
                return Err(err("empty line".into()));
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
                let name =
                    name.filter(|n| valid_name(n)).ok_or_else(|| err("bad metric name".into()))?;
                match (kw, arg) {
                    (Some("HELP"), Some(_)) => {}
                    (
                        Some("TYPE"),
                        Some(kind @ ("counter" | "gauge" | "histogram" | "summary" | "untyped")),
                    ) => {
                        let f = families.entry(name.to_string()).or_default();
                        if !f.kind.is_empty() {
                            return Err(err("TYPE repeated".into()));
                        }
                        f.kind = kind.to_string();
                    }
                    _ => return Err(err("bad comment".into())),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value".into()))?;
            let name = &line[..name_end];
            if !valid_name(name) {
                return Err(err("bad metric name".into()));
            }
            let (labels, rest) = match line[name_end..].strip_prefix('{') {
                Some(r) => parse_labels(r).map_err(err)?,
                None => (Vec::new(), &line[name_end..]),
            };
            let value_text =
                rest.strip_prefix(' ').ok_or_else(|| err("no space before value".into()))?;
            let value = parse_value(value_text.split(' ').next().unwrap_or("")).map_err(err)?;
            let family = family_of(name, &families)
                .ok_or_else(|| err("sample before its TYPE".into()))?
                .to_string();
            let mut key_labels = labels.clone();
            key_labels.sort();
            if !seen.insert((name.to_string(), key_labels)) {
                return Err(err("duplicate series".into()));
            }
            if let Some(f) = families.get_mut(&family) {
                if f.kind == "counter" && !name.ends_with("_total") {
                    return Err(err("counter without _total".into()));
                }
                f.samples.push(Sample { name: name.to_string(), labels, value });
            }
        }
        for (name, f) in &families {
            if f.kind == "histogram" {
                check_histogram(name, f)?;
            }
        }
        Ok(families)
    }

    fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
        let buckets: Vec<&Sample> =
            f.samples.iter().filter(|s| s.name.ends_with("_bucket")).collect();
        let les: Vec<f64> = buckets
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.as_str())
                    .ok_or("bucket without le")
                    .and_then(|v| parse_value(v).map_err(|_| "bad le"))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{name}: {e}"))?;
        if les.last() != Some(&f64::INFINITY) || les.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("{name}: bucket bounds not increasing to +Inf"));
        }
        if buckets.windows(2).any(|w| w[0].value > w[1].value) {
            return Err(format!("{name}: buckets not cumulative"));
        }
        let count = f
            .samples
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .ok_or(format!("{name}: no _count"))?;
        f.samples.iter().find(|s| s.name.ends_with("_sum")).ok_or(format!("{name}: no _sum"))?;
        if buckets.last().map(|b| b.value) != Some(count.value) {
            return Err(format!("{name}: +Inf bucket differs from _count"));
        }
        Ok(())
    }

    pub fn value(
        families: &BTreeMap<String, Family>,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        families.values().flat_map(|f| &f.samples).find_map(|s| {
            let same = s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v));
            same.then_some(s.value)
        })
    }

    #[test]
    fn the_parser_rejects_malformed_text() {
        assert!(parse("# TYPE a gauge\na 1\n").is_ok());
        assert!(parse("a 1\n").is_err(), "no TYPE");
        assert!(parse("# TYPE a gauge\na{x=\"1} 1\n").is_err(), "unterminated");
        assert!(parse("# TYPE a gauge\na{x=1} 1\n").is_err(), "unquoted");
        assert!(parse("# TYPE a gauge\na one\n").is_err(), "bad value");
        assert!(parse("# TYPE a gauge\na 1\na 2\n").is_err(), "duplicate");
        assert!(parse("# TYPE a counter\na 1\n").is_err(), "counter name");
        assert!(parse("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n").is_err());
        assert!(parse("# TYPE a gauge\na 1").is_err(), "final newline");
    }
}

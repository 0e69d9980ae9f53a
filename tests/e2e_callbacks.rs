//! Callback requests, stored then delivered to a real webhook (an HTTP server on loopback),
//! with a real SQLite state database.
//!
//! In-process: the I/O layer's callback pipeline exactly as the drive loop drives it on
//! `Event::CallbackRequested` (`Callbacks::submit`): a webhook that is down then up, that
//! answers 500, garbage or nothing, that keeps failing (not hammered), a restart with requests
//! pending, an HTTPS webhook, the give-up. Against the real binary: a SIPp call with the agent
//! down falls to the ladder, presses 1 (RFC 4733) and its request reaches the webhook; one made
//! while the webhook is down reaches it after a kill -9 and restart; requests left pending by a
//! previous run are delivered after the start and shown by `trunkguard callbacks`,
//! `/api/status` and `/metrics`; a locked state database is reported by `/readyz` while calls
//! go on.

mod common;
#[path = "common/webhook.rs"]
mod webhook;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use trunkguard::config::CallbackConfig;
use trunkguard::core::callback::{CallbackReason, CallbackRequest};
use trunkguard::io::callbacks::store::{read_recent, StoredCallback};
use trunkguard::io::callbacks::Callbacks;
use trunkguard::io::calls::Retention;
use webhook::{unused_addr, Answer, Webhook};

const RETENTION: Retention = Retention { keep_days: 30, max_rows: 10_000 };

fn request(n: u32) -> CallbackRequest {
    CallbackRequest {
        call_id: format!("call-{n}@198.51.100.7"),
        caller: format!("+1555010{n}"),
        called: "+15550199".into(),
        carrier: "telco".into(),
        reason: CallbackReason::CallerAsked,
        failure: "no AI endpoint within the setup budget".into(),
    }
}

/// A fast schedule: attempts time out after 300 ms, retries 100 ms .. 1 s apart.
fn config(url: &str) -> CallbackConfig {
    CallbackConfig {
        webhook_url: Some(url.to_string()),
        timeout_ms: 300,
        backoff_initial_ms: 100,
        backoff_max_s: 1,
        give_up_after_h: 72,
        ca_bundle: None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn wait_for(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn rows(dir: &Path) -> Vec<StoredCallback> {
    read_recent(dir, 1000).unwrap()
}

fn delivered(dir: &Path) -> usize {
    rows(dir).iter().filter(|r| r.state == "delivered").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_then_up_gets_the_request_once() {
    let state = tempfile::tempdir().unwrap();
    let addr = unused_addr().await;
    let url = format!("http://{addr}/hooks/callback");
    let cb = Callbacks::start(state.path().to_path_buf(), &config(&url), RETENTION).unwrap();
    let created = now_ms();
    let id = cb.submit(request(1), created).unwrap();
    // down: attempts are made, refused, and scheduled later
    assert!(
        wait_for(Duration::from_secs(10), || rows(state.path())
            .first()
            .is_some_and(|r| r.attempts >= 2))
        .await
    );
    let r = rows(state.path()).remove(0);
    assert_eq!((r.id.as_str(), r.state.as_str(), r.last_status), (id.as_str(), "pending", None));
    assert!(r.last_error.as_deref().unwrap().starts_with("cannot connect"), "{r:?}");
    let (last, next) = (r.last_attempt_at_ms.unwrap(), r.next_attempt_at_ms.unwrap());
    assert!(
        next >= last + 100 && next <= last + 1000,
        "retry {} ms after the attempt",
        next - last
    );
    // up: delivered, exactly once
    let hook = Webhook::start(addr, Answer::Status(204)).await;
    assert!(
        wait_for(Duration::from_secs(10), || delivered(state.path()) == 1).await,
        "{:?}",
        rows(state.path())
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let hit = &hits[0];
    let r = rows(state.path()).remove(0);
    assert_eq!(hit.header(":request-line"), Some("POST /hooks/callback HTTP/1.1"));
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(hit.header("user-agent"), Some(concat!("trunkguard/", env!("CARGO_PKG_VERSION"))));
    assert_eq!(hit.header("idempotency-key"), Some(id.as_str()));
    assert_eq!(hit.header("x-trunkguard-attempt"), Some(r.attempts.to_string().as_str()));
    let b = &hit.body;
    assert_eq!(b["event"], "callback.requested");
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["call_id"], "call-1@198.51.100.7");
    assert_eq!(b["caller"], "+15550101");
    assert_eq!(b["called"], "+15550199");
    assert_eq!(b["carrier"], "telco");
    assert_eq!(b["reason"], "caller-pressed-1");
    assert_eq!(b["failure"], "no AI endpoint within the setup budget");
    assert_eq!(b["attempt"], r.attempts);
    assert_eq!(b["created_at"], r.created_at.as_str());
    assert!(r.created_at.ends_with('Z') && r.created_at.len() == 24, "{}", r.created_at);
    assert_eq!(
        (r.last_status, r.next_attempt_at_ms, r.last_error.as_deref()),
        (Some(204), None, None)
    );
    assert!(r.delivered_at_ms.is_some());
    let c = cb.counters().snapshot();
    assert_eq!((c.pending, c.delivered, c.failed, c.stored), (0, 1, 0, 1));
    assert_eq!(c.attempts, r.attempts as u64);
    assert_eq!(c.attempt_failures, r.attempts as u64 - 1);
    println!("callback_attempts_until_webhook_up: {}", r.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_garbage_and_a_hang_are_retried_then_delivered() {
    let state = tempfile::tempdir().unwrap();
    let hook = Webhook::start("127.0.0.1:0".parse().unwrap(), Answer::Status(200)).await;
    hook.script(&[
        Answer::Status(500),
        Answer::Garbage,
        Answer::Hang,
        Answer::Status(302),
        Answer::Status(404),
    ]);
    let cb = Callbacks::start(state.path().to_path_buf(), &config(&hook.url()), RETENTION).unwrap();
    let id = cb.submit(request(2), now_ms()).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || delivered(state.path()) == 1).await,
        "{:?}",
        rows(state.path())
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = hook.hits();
    let answers: Vec<Answer> = hits.iter().map(|h| h.answer).collect();
    assert_eq!(
        answers,
        [
            Answer::Status(500),
            Answer::Garbage,
            Answer::Hang,
            Answer::Status(302),
            Answer::Status(404),
            Answer::Status(200)
        ]
    );
    let attempts: Vec<&str> =
        hits.iter().map(|h| h.header("x-trunkguard-attempt").unwrap()).collect();
    assert_eq!(attempts, ["1", "2", "3", "4", "5", "6"]);
    assert!(hits.iter().all(|h| h.header("idempotency-key") == Some(id.as_str())));
    // the hang was cut at timeout_ms by the client
    let hang = hits[2].closed_after.expect("the client closed the hung connection");
    assert!(hang >= Duration::from_millis(250) && hang < Duration::from_secs(3), "{hang:?}");
    // the redirect was not followed: no request elsewhere, attempt 5 came back here
    let r = rows(state.path()).remove(0);
    assert_eq!((r.attempts, r.state.as_str(), r.last_status), (6, "delivered", Some(200)));
    let c = cb.counters().snapshot();
    assert_eq!((c.attempts, c.attempt_failures), (6, 5));
    println!("callback_hang_cut_after_ms: {}", hang.as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_not_hammered() {
    let state = tempfile::tempdir().unwrap();
    let hook = Webhook::start("127.0.0.1:0".parse().unwrap(), Answer::Status(503)).await;
    let cb = Callbacks::start(state.path().to_path_buf(), &config(&hook.url()), RETENTION).unwrap();
    cb.submit(request(3), now_ms()).unwrap();
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let hits = hook.hits();
    // retries are at least the floor (100 ms) apart and back off towards 1 s: ~10 in 4 s; a
    // tight loop would make thousands
    println!("callback_attempts_in_4s_failing_webhook: {}", hits.len());
    assert!(hits.len() >= 3, "retried: {}", hits.len());
    assert!(
        hits.len() <= 1 + (window.as_millis() / 100) as usize,
        "{} attempts in {window:?}",
        hits.len()
    );
    for w in hits.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(90), "two attempts {gap:?} apart");
    }
    let late_gaps: Vec<Duration> = hits.windows(2).skip(4).map(|w| w[1].at - w[0].at).collect();
    let r = rows(state.path()).remove(0);
    assert_eq!(r.state, "pending");
    assert_eq!(r.last_status, Some(503));
    assert_eq!(r.last_error.as_deref(), Some("HTTP 503 Service Unavailable"));
    println!(
        "callback_late_retry_gaps_ms: {:?}",
        late_gaps.iter().map(|g| g.as_millis()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_attempt_per_request_at_a_time_and_at_most_four_in_flight() {
    let state = tempfile::tempdir().unwrap();
    let hook = Webhook::start("127.0.0.1:0".parse().unwrap(), Answer::Hang).await;
    let cb = Callbacks::start(state.path().to_path_buf(), &config(&hook.url()), RETENTION).unwrap();
    for n in 0..8 {
        cb.submit(request(n), now_ms()).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(15), || hook.hits().len() >= 24).await,
        "{}",
        hook.hits().len()
    );
    let (per_request, total) = hook.max_open();
    assert_eq!(per_request, 1, "two attempts of one request at once");
    assert!((2..=4).contains(&total), "{total} deliveries in flight at once");
    // every request gets its turn
    let keys: std::collections::HashSet<String> = hook
        .hits()
        .iter()
        .filter_map(|h| h.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_are_delivered_after_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let addr = unused_addr().await;
    let url = format!("http://{addr}/hooks/callback");
    let first = Callbacks::start(state.path().to_path_buf(), &config(&url), RETENTION).unwrap();
    let ids: Vec<String> = (4..6).map(|n| first.submit(request(n), now_ms()).unwrap()).collect();
    // one snapshot: both rows stored and each tried at least once (two separate reads could see
    // no rows, then two untried ones)
    let tried = || {
        let now = rows(state.path());
        now.len() == 2 && now.iter().all(|r| r.attempts >= 1)
    };
    assert!(wait_for(Duration::from_secs(10), tried).await);
    drop(first); // the process stops with both pending
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<i64> = rows(state.path()).iter().map(|r| r.attempts).collect();
    assert!(rows(state.path()).iter().all(|r| r.state == "pending"));
    let hook = Webhook::start(addr, Answer::Status(200)).await;
    let second = Callbacks::start(state.path().to_path_buf(), &config(&url), RETENTION).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || delivered(state.path()) == 2).await,
        "{:?}",
        rows(state.path())
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hits = hook.hits();
    assert_eq!(hits.len(), 2, "each delivered once: {hits:?}");
    let mut got: Vec<String> =
        hits.iter().map(|h| h.body["id"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    // the attempt count carries on across the restart
    for h in &hits {
        let n: i64 = h.header("x-trunkguard-attempt").unwrap().parse().unwrap();
        assert!(n >= 2, "attempt {n} after {before:?}");
    }
    assert_eq!(second.counters().snapshot().delivered, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_older_than_give_up_after_h_gets_one_last_attempt_then_fails() {
    let state = tempfile::tempdir().unwrap();
    let hook = Webhook::start("127.0.0.1:0".parse().unwrap(), Answer::Status(503)).await;
    // left pending by a run 73 hours ago (give_up_after_h = 72)
    let old = now_ms() - 73 * 3_600_000;
    let row = StoredCallback {
        id: "0123456789abcdef0123456789abcdef".into(),
        call_id: "old@198.51.100.7".into(),
        caller: "+15550100".into(),
        called: "+15550199".into(),
        carrier: "telco".into(),
        reason: "menu-no-answer".into(),
        failure: "no AI endpoint within the setup budget".into(),
        created_at: trunkguard::io::callbacks::payload::rfc3339(old),
        created_at_ms: old as i64,
        attempts: 0,
        next_attempt_at_ms: Some(old as i64 + 1000),
        last_attempt_at_ms: None,
        last_status: None,
        last_error: None,
        delivered_at_ms: None,
        state: "pending".into(),
    };
    trunkguard::io::callbacks::store::CallbackDb::new(state.path()).insert(&row).unwrap();
    let cb = Callbacks::start(state.path().to_path_buf(), &config(&hook.url()), RETENTION).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || rows(state.path())[0].state == "failed").await,
        "{:?}",
        rows(state.path())
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(hook.hits().len(), 1, "one last attempt, then no more");
    let r = rows(state.path()).remove(0);
    assert_eq!((r.attempts, r.last_status, r.next_attempt_at_ms), (1, Some(503), None));
    let c = cb.counters().snapshot();
    assert_eq!((c.gave_up, c.failed, c.pending), (1, 1, 0));
}

/// A TLS acceptor for a self-signed certificate of 127.0.0.1, and that certificate as PEM.
fn self_signed() -> (tokio_rustls::TlsAcceptor, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = generated.cert.pem();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(generated.key_pair.serialize_der()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)), cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_trusted_through_ca_bundle_only() {
    let (acceptor, cert_pem) = self_signed();
    let hook =
        Webhook::start_tls("127.0.0.1:0".parse().unwrap(), Answer::Status(200), acceptor).await;
    // without the bundle the certificate is not trusted: attempts fail, nothing is delivered
    let untrusted = tempfile::tempdir().unwrap();
    let cb =
        Callbacks::start(untrusted.path().to_path_buf(), &config(&hook.https_url()), RETENTION)
            .unwrap();
    cb.submit(request(1), now_ms()).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || rows(untrusted.path())
            .first()
            .is_some_and(|r| r.attempts >= 2))
        .await
    );
    let r = rows(untrusted.path()).remove(0);
    assert_eq!(r.state, "pending");
    assert!(r.last_error.as_deref().unwrap().contains("certificate"), "{r:?}");
    assert!(hook.hits().is_empty());
    drop(cb);
    // with it: delivered over TLS
    let state = tempfile::tempdir().unwrap();
    let bundle = state.path().join("webhook-ca.pem");
    std::fs::write(&bundle, cert_pem).unwrap();
    let cfg = CallbackConfig { ca_bundle: Some(bundle), ..config(&hook.https_url()) };
    let cb = Callbacks::start(state.path().join("db"), &cfg, RETENTION).unwrap();
    let id = cb.submit(request(2), now_ms()).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || delivered(&state.path().join("db")) == 1).await,
        "{:?}",
        rows(&state.path().join("db"))
    );
    let hits = hook.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["id"], id.as_str());
}

// ---------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------

const CARRIER_IP: &str = "127.0.0.2";

fn appliance_config(ports: Ports, state: &Path, callback: &str) -> String {
    format!(
        "{}{}[state]\ndir = \"{}\"\n\n{callback}",
        base_config(ports),
        inbound_carrier("telco", CARRIER_IP),
        state.display()
    )
}

/// `trunkguard callbacks --json --state-dir <dir>`, parsed.
fn callbacks_json(state: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(Appliance::binary())
        .args(["callbacks", "--json", "--last", "100", "--state-dir"])
        .arg(state)
        .output()
        .expect("run trunkguard callbacks");
    assert!(
        out.status.success(),
        "trunkguard callbacks failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
        .collect()
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn the_appliance_delivers_requests_a_previous_run_left_pending() {
    let ports = Ports::new(41200);
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // a previous run stored two requests without a webhook
    {
        let _guard = rt.enter();
        let stored_only =
            Callbacks::start(state.path().to_path_buf(), &CallbackConfig::default(), RETENTION)
                .unwrap();
        stored_only.submit(request(7), now_ms()).unwrap();
        stored_only.submit(request(8), now_ms()).unwrap();
        let c = stored_only.counters().clone();
        assert!(common::wait_until(Duration::from_secs(5), Duration::from_millis(20), || c
            .stored
            .load(std::sync::atomic::Ordering::Relaxed)
            == 2));
    }
    let table = Command::new(Appliance::binary())
        .args(["callbacks", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.starts_with("TIME (UTC)") && table.lines().count() == 3 && table.contains("pending"),
        "{table}"
    );
    let hook = rt.block_on(Webhook::start(
        format!("127.0.0.1:{}", ports.base + 90).parse().unwrap(),
        Answer::Status(202),
    ));
    let callback = format!(
        "[callback]\nwebhook_url = \"{}\"\nbackoff_initial_ms = 100\nbackoff_max_s = 1\n",
        hook.url()
    );
    let mut app = Appliance::start(&appliance_config(ports, state.path(), &callback));
    let all_delivered =
        common::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            let rows = callbacks_json(state.path());
            rows.len() == 2 && rows.iter().all(|r| r["state"] == "delivered")
        });
    assert!(all_delivered, "{:#?}\n{}", callbacks_json(state.path()), app.log());
    assert_eq!(hook.hits().len(), 2);
    let rows = callbacks_json(state.path());
    assert_eq!(rows[0]["caller"], "+15550107");
    assert_eq!(
        (rows[1]["attempts"].as_i64(), rows[1]["last_status"].as_i64()),
        (Some(1), Some(202))
    );
    // /api/status and /metrics count them
    let mut status = serde_json::Value::Null;
    common::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        status = serde_json::from_str(&http_get(app.http, "/api/status").unwrap().1).unwrap();
        status["callbacks"]["delivered"] == 2
    });
    let c = &status["callbacks"];
    assert_eq!(
        (
            c["webhook"].as_bool(),
            c["pending"].as_u64(),
            c["delivered"].as_u64(),
            c["attempts"].as_u64()
        ),
        (Some(true), Some(0), Some(2), Some(2))
    );
    assert!(status["call_records"]["written"].is_u64(), "{status:#}");
    let (_, metrics) = http_get(app.http, "/metrics").unwrap();
    assert_eq!(
        metric(&metrics, "trunkguard_callbacks{state=\"delivered\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "trunkguard_callbacks{state=\"pending\"}"), Some(0.0));
    assert_eq!(metric(&metrics, "trunkguard_callback_delivery_attempts_total"), Some(2.0));
    assert_eq!(metric(&metrics, "trunkguard_callback_webhook_configured"), Some(1.0));
    assert_eq!(metric(&metrics, "trunkguard_call_records_failed_total"), Some(0.0));
    app.assert_alive();
}

#[test]
fn a_locked_state_database_fails_readiness_while_calls_go_on() {
    let ports = Ports::new(41400);
    let state = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(&appliance_config(ports, state.path(), ""));
    let http = app.http;
    let ready = || http_get(http, "/readyz").unwrap();
    assert!(
        common::wait_until(Duration::from_secs(5), Duration::from_millis(50), || ready().0 == 200),
        "{:?}",
        ready()
    );
    // another process holds the write lock: every write of the appliance fails after its
    // busy timeout (as with a read-only database or a full disk)
    let locker = rusqlite::Connection::open(state.path().join("trunkguard.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let call = |i: u16| {
        let (target, peer, media) = (
            sip_addr(ports).to_string(),
            ports.peer(i).to_string(),
            ports.sipp_media(i).to_string(),
        );
        let args = [
            "-sn", "uac", &target, "-i", CARRIER_IP, "-p", &peer, "-mi", CARRIER_IP, "-mp", &media,
            "-m", "1",
        ];
        let mut sipp = Sipp::spawn_with_timeout("uac-locked", ports.sipp_control(i), 30, &args);
        sipp.wait_success(Duration::from_secs(30))
    };
    assert!(call(0), "a call while the database is locked is still answered and ends cleanly");
    let failing = common::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let (code, body) = ready();
        code == 503 && body.contains("call-record writer failed")
    });
    let (code, body) = ready();
    assert!(failing, "{code} {body}\n{}", app.log());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"]["state_db"]["ok"], false);
    assert!(v["checks"]["state_db"]["reason"].as_str().unwrap().contains("locked"), "{body}");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(http, "/api/status").unwrap().1).unwrap();
    assert!(status["call_records"]["failed"].as_u64() >= Some(1), "{status:#}");
    assert!(status["call_records"]["last_write_failure"]["error"]
        .as_str()
        .unwrap()
        .contains("locked"));
    let (_, metrics) = http_get(app.http, "/metrics").unwrap();
    assert!(metric(&metrics, "trunkguard_call_records_failed_total") >= Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "trunkguard_readiness_check_ok{check=\"state_db\"}"), Some(0.0));
    app.assert_alive();
    // the lock goes: the next call is recorded and readiness comes back
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert!(call(1));
    let back = common::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        ready().0 == 200
    });
    assert!(back, "{:?}", ready());
    app.assert_alive();
}

// ---------------------------------------------------------------------------
// The whole path: a call, AI down, the ladder's prompt, DTMF 1, the row, the webhook
// ---------------------------------------------------------------------------

/// A caller on raw sockets: INVITE with an SDP offer (PCMU + telephone-event 101), ACK, then
/// RTP from its own socket: silence, and RFC 4733 keys.
struct Caller {
    sip: RawSip,
    rtp: std::net::UdpSocket,
    target: std::net::SocketAddr,
    call_id: String,
    from_hdr: String,
    to_hdr: String,
    media: Option<std::net::SocketAddr>,
    seq: u16,
    ts: u32,
}

impl Caller {
    fn invite(ports: Ports, i: u16, name: &str) -> Caller {
        let sip = RawSip::bind(CARRIER_IP, ports.peer(i));
        let rtp = std::net::UdpSocket::bind((CARRIER_IP, ports.audio(2 * i))).unwrap();
        let target = sip_addr(ports);
        let call_id = format!("{name}-{}@{CARRIER_IP}", ports.base);
        let invite = invite_request("UDP", sip.local, target, &call_id, rtp.local_addr().unwrap());
        sip.send(target, invite.as_bytes());
        Caller {
            sip,
            rtp,
            target,
            call_id,
            from_hdr: String::new(),
            to_hdr: String::new(),
            media: None,
            seq: 1,
            ts: 0,
        }
    }

    /// Waits for the 200 OK (ringing while the AI is tried), then ACKs.
    fn answered(&mut self, timeout: Duration) {
        let call_id = self.call_id.clone();
        let (msgs, ok) = self.sip.recv_until(timeout, |m| {
            call_id_of(m).as_deref() == Some(call_id.as_str())
                && status_code(m).is_some_and(|c| c >= 200)
        });
        assert!(ok, "no final response to the INVITE: {msgs:#?}");
        let msg = msgs.last().unwrap();
        assert_eq!(status_code(msg), Some(200), "{msg}");
        self.from_hdr = header(msg, "From", Some("f")).unwrap();
        self.to_hdr = header(msg, "To", Some("t")).unwrap();
        let sdp = body_of(msg);
        let port: u16 = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        let ip = sdp
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .map(|s| s.trim().to_string())
            .unwrap();
        self.media = Some(format!("{ip}:{port}").parse().unwrap());
        let ack = format!(
            "ACK sip:agent@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            branch(),
            self.from_hdr,
            self.to_hdr,
            self.call_id,
            to = self.target,
            local = self.sip.local,
        );
        self.sip.send(self.target, ack.as_bytes());
    }

    fn send_rtp(&mut self, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        self.rtp.send_to(&p, self.media.unwrap()).unwrap();
        self.seq = self.seq.wrapping_add(1);
    }

    /// `frames` × 20 ms of PCMU silence, on the 20 ms clock.
    fn silence(&mut self, frames: usize) {
        for _ in 0..frames {
            let ts = self.ts;
            self.send_rtp(0, false, ts, &[0xFF; 160]);
            self.ts = self.ts.wrapping_add(160);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Presses `key` (0-9) for 160 ms: RFC 4733 packets every 20 ms, the end sent three times.
    fn press(&mut self, key: u8) {
        let start = self.ts;
        for i in 1..=8u16 {
            let end = i == 8;
            let duration = (i * 160).to_be_bytes();
            let payload = [key, if end { 0x80 } else { 0 } | 10, duration[0], duration[1]];
            for _ in 0..if end { 3 } else { 1 } {
                self.send_rtp(101, i == 1, start, &payload);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.ts = self.ts.wrapping_add(8 * 160);
    }

    /// Waits for the appliance's BYE and answers it 200.
    fn bye_received(&self, timeout: Duration) -> bool {
        let call_id = self.call_id.clone();
        let (msgs, ok) = self.sip.recv_until(timeout, |m| {
            m.starts_with("BYE ") && call_id_of(m).as_deref() == Some(call_id.as_str())
        });
        if let Some(bye) = msgs.last().filter(|_| ok) {
            let mut reply = String::from("SIP/2.0 200 OK\r\n");
            for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                if let Some(v) = header(bye, name, None) {
                    reply.push_str(&format!("{name}: {v}\r\n"));
                }
            }
            reply.push_str("Content-Length: 0\r\n\r\n");
            self.sip.send(self.target, reply.as_bytes());
        }
        ok
    }
}

/// The appliance with one agent that is down (nothing listens) and the webhook at `url`.
fn ladder_config(ports: Ports, state: &Path, url: &str) -> String {
    let agent = format!("ws://127.0.0.1:{}/media", ports.base + 91);
    let callback = format!(
        "[ai]\nsetup_budget_ms = 500\n\n[[ai_endpoint]]\nname = \"agent\"\nrole = \"primary\"\nprotocol = \"twilio-media-streams\"\n\
         url = \"{agent}\"\naudio_format = \"g711_ulaw\"\n\n[callback]\nwebhook_url = \"{url}\"\nbackoff_initial_ms = 200\nbackoff_max_s = 1\n"
    );
    appliance_config(ports, state, &callback)
}

/// A call that falls to the ladder (the agent is down) and presses 1 during the prompt.
fn call_and_press_1(ports: Ports, i: u16, name: &str) -> Caller {
    let mut caller = Caller::invite(ports, i, name);
    caller.answered(Duration::from_secs(10));
    caller.silence(10);
    caller.press(1);
    caller.silence(5);
    caller
}

#[test]
fn sipp_call_ai_down_prompt_key_1_row_then_webhook() {
    let dtmf_pcap = "/usr/share/sip-tester/dtmf_2833_1.pcap";
    assert!(Path::new(dtmf_pcap).exists(), "{dtmf_pcap} missing (apt-get install sip-tester)");
    let ports = Ports::new(41600);
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hook = rt.block_on(Webhook::start(
        format!("127.0.0.1:{}", ports.base + 90).parse().unwrap(),
        Answer::Status(200),
    ));
    let mut app = Appliance::start(&ladder_config(ports, state.path(), &hook.url()));
    // the agent is down: after the 0.5 s budget the 4.2 s prompt, the menu; SIPp presses 1
    // (RFC 4733, SIPp's pcap) 6 s after its ACK
    let (target, peer, media) =
        (sip_addr(ports).to_string(), ports.peer(0).to_string(), ports.sipp_media(0).to_string());
    let scenario_file = scenario("uac_dtmf.xml");
    let args = [
        "-sf",
        &scenario_file,
        &target,
        "-i",
        CARRIER_IP,
        "-p",
        &peer,
        "-mi",
        CARRIER_IP,
        "-mp",
        &media,
        "-d",
        "6000",
        "-m",
        "1",
    ];
    let mut sipp = Sipp::spawn("uac-dtmf-callback", ports.sipp_control(0), &args);
    let ok = sipp.wait_success(Duration::from_secs(40));
    assert!(
        ok,
        "the appliance did not hang up after the key press:\n{}\n{}",
        sipp.diagnostics(),
        app.log()
    );
    let got = common::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        !hook.hits().is_empty()
    });
    assert!(got, "the webhook got nothing\n{}", app.log());
    let hit = hook.hits().remove(0);
    let b = &hit.body;
    assert_eq!(
        (b["caller"].as_str(), b["carrier"].as_str()),
        (Some("+15550001"), Some("telco")),
        "{b}"
    );
    assert_eq!(b["reason"], "caller-pressed-1");
    assert!(b["failure"].as_str().is_some_and(|f| !f.is_empty()), "{b}");
    let rows = callbacks_json(state.path());
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0]["id"].as_str(), rows[0]["state"].as_str()),
        (b["id"].as_str(), Some("delivered"))
    );
    assert_eq!(rows[0]["call_id"], b["call_id"]);
    // the call record names the callback too
    let calls = Command::new(Appliance::binary())
        .args(["calls", "--json", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    let calls = String::from_utf8_lossy(&calls.stdout).into_owned();
    assert!(
        calls.contains(b["call_id"].as_str().unwrap())
            && calls.contains("\"callback_reason\":\"caller-pressed-1\""),
        "{calls}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(hook.hits().len(), 1, "delivered once");
    app.assert_alive();
}

#[test]
fn a_request_made_while_the_webhook_is_down_reaches_it_after_a_restart() {
    let ports = Ports::new(41800);
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hook_addr: std::net::SocketAddr = format!("127.0.0.1:{}", ports.base + 90).parse().unwrap();
    let url = format!("http://{hook_addr}/hooks/callback");
    let config = ladder_config(ports, state.path(), &url);
    let mut app = Appliance::start(&config);
    let caller = call_and_press_1(ports, 0, "press-1-down");
    let tried = common::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        callbacks_json(state.path()).first().is_some_and(|r| r["attempts"].as_i64() >= Some(1))
    });
    assert!(tried, "{:#?}\n{}", callbacks_json(state.path()), app.log());
    let row = callbacks_json(state.path()).remove(0);
    assert_eq!(row["state"], "pending");
    assert!(row["last_error"].as_str().unwrap().starts_with("cannot connect"), "{row}");
    caller.bye_received(Duration::from_secs(15));
    app.kill_hard(); // kill -9 with the request pending
    drop(app);
    let hook = rt.block_on(Webhook::start(hook_addr, Answer::Status(200)));
    let mut app = Appliance::start(&config);
    let delivered = common::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        callbacks_json(state.path()).first().is_some_and(|r| r["state"] == "delivered")
    });
    assert!(delivered, "{:#?}\n{}", callbacks_json(state.path()), app.log());
    std::thread::sleep(Duration::from_millis(1000));
    let hits = hook.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].body["id"], row["id"]);
    assert_eq!(hits[0].body["call_id"], caller.call_id.as_str());
    assert!(hits[0].body["attempt"].as_i64() >= Some(2));
    app.assert_alive();
}

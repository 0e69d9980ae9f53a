use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::store::*;
use super::*;
use crate::core::callback::CallbackReason;

const RET: Retention = Retention { keep_days: 30, max_rows: 1000 };

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

fn row(n: u32, created_ms: i64) -> StoredCallback {
    new_row(request(n), created_ms as u64, &format!("{n:032x}"))
}

fn wait_for(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn a_new_request_is_pending_and_due_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallbackDb::new(tmp.path());
    let r = row(1, 1_700_000_000_123);
    db.insert(&r).unwrap();
    db.insert(&r).unwrap(); // a retried insert of the same id changes nothing
    let pending = db.next_pending(10).unwrap();
    assert_eq!(pending, vec![r.clone()]);
    assert_eq!(pending[0].created_at, "2023-11-14T22:13:20.123Z");
    assert_eq!(pending[0].reason, "caller-pressed-1");
    assert_eq!(pending[0].next_attempt_at_ms, Some(1_700_000_000_123));
    assert_eq!(db.counts().unwrap(), StateCounts { pending: 1, delivered: 0, failed: 0 });
    assert_eq!(read_recent(tmp.path(), 10).unwrap(), vec![r]);
}

#[test]
fn attempts_move_a_request_to_delivered_or_failed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallbackDb::new(tmp.path());
    for n in 1..=3 {
        db.insert(&row(n, 1000 * i64::from(n))).unwrap();
    }
    let id = |n: u32| format!("{n:032x}");
    let update = |n, attempts, outcome| AttemptUpdate {
        id: id(n),
        attempts,
        at_ms: 5000,
        status: Some(503),
        error: Some("HTTP 503 Service Unavailable".into()),
        outcome,
    };
    db.record_attempt(&update(1, 1, AttemptOutcome::RetryAt(9000))).unwrap();
    db.record_attempt(&AttemptUpdate {
        status: Some(204),
        error: None,
        ..update(2, 1, AttemptOutcome::Delivered)
    })
    .unwrap();
    db.record_attempt(&update(3, 7, AttemptOutcome::GaveUp)).unwrap();
    // a late outcome for a request already delivered changes nothing
    db.record_attempt(&update(2, 2, AttemptOutcome::GaveUp)).unwrap();
    let rows = read_recent(tmp.path(), 10).unwrap();
    let by = |n: u32| rows.iter().find(|r| r.id == id(n)).unwrap().clone();
    let (r1, r2, r3) = (by(1), by(2), by(3));
    assert_eq!(
        (r1.state.as_str(), r1.attempts, r1.next_attempt_at_ms, r1.last_status),
        ("pending", 1, Some(9000), Some(503))
    );
    assert_eq!(r1.last_error.as_deref(), Some("HTTP 503 Service Unavailable"));
    assert_eq!(
        (r2.state.as_str(), r2.attempts, r2.delivered_at_ms, r2.next_attempt_at_ms),
        ("delivered", 1, Some(5000), None)
    );
    assert_eq!((r3.state.as_str(), r3.attempts, r3.next_attempt_at_ms), ("failed", 7, None));
    assert_eq!(db.counts().unwrap(), StateCounts { pending: 1, delivered: 1, failed: 1 });
    assert_eq!(
        db.next_pending(10).unwrap().iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![id(1)]
    );
}

#[test]
fn pending_requests_come_earliest_due_first() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallbackDb::new(tmp.path());
    for (n, created, due) in [(1, 100, 900), (2, 200, 300), (3, 300, 300), (4, 400, 50)] {
        let mut r = row(n, created);
        r.next_attempt_at_ms = Some(due);
        db.insert(&r).unwrap();
    }
    let order: Vec<i64> = db.next_pending(3).unwrap().iter().map(|r| r.created_at_ms).collect();
    assert_eq!(order, [400, 200, 300]);
}

#[test]
fn pruning_keeps_pending_requests_whatever_their_age() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallbackDb::new(tmp.path());
    let day = 86_400_000;
    for n in 0..6 {
        db.insert(&row(n, i64::from(n) * day)).unwrap();
    }
    for n in [0, 1] {
        let outcome = if n == 0 { AttemptOutcome::Delivered } else { AttemptOutcome::GaveUp };
        db.record_attempt(&AttemptUpdate {
            id: format!("{n:032x}"),
            attempts: 1,
            at_ms: 0,
            status: None,
            error: None,
            outcome,
        })
        .unwrap();
    }
    for n in [3, 4] {
        let u = AttemptUpdate {
            id: format!("{n:032x}"),
            attempts: 1,
            at_ms: 0,
            status: Some(200),
            error: None,
            outcome: AttemptOutcome::Delivered,
        };
        db.record_attempt(&u).unwrap();
    }
    // kept 2 days at day 5: 0, 1 (done, old) go; 2 (pending, old) stays; 3, 4 stay
    assert_eq!(db.prune(5 * day as u64, 2 * day as u64, 1000).unwrap(), 2);
    // at most one finished row
    assert_eq!(db.prune(5 * day as u64, 2 * day as u64, 1).unwrap(), 1);
    let left: Vec<i64> =
        read_recent(tmp.path(), 10).unwrap().iter().map(|r| r.created_at_ms / day).collect();
    assert_eq!(left, [2, 4, 5]);
}

#[test]
fn no_database_yet_lists_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(read_recent(tmp.path(), 5).unwrap().is_empty());
    // a database without the table (made by the call log or the health check)
    crate::io::state::StateDb::new(tmp.path()).check_writable(1).unwrap();
    assert!(read_recent(tmp.path(), 5).unwrap().is_empty());
}

#[test]
fn the_writer_stores_without_a_webhook_and_keeps_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = CallbackConfig::default(); // no webhook: no runtime needed
    let cb = Callbacks::start(tmp.path().to_path_buf(), &cfg, RET).unwrap();
    let ids: Vec<String> =
        (1..=3).map(|n| cb.submit(request(n), 1_700_000_000_000 + u64::from(n)).unwrap()).collect();
    assert!(ids.iter().all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
    let c = cb.counters().clone();
    assert!(
        wait_for(Duration::from_secs(5), || c.pending.load(Ordering::Relaxed) == 3),
        "{:?}",
        c.snapshot()
    );
    let s = c.snapshot();
    assert_eq!((s.requested, s.stored, s.dropped, s.unstored, s.webhook), (3, 3, 0, 0, false));
    let rows = read_recent(tmp.path(), 10).unwrap();
    assert_eq!(rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(rows[1].caller, "+15550102");
}

#[test]
fn a_locked_database_holds_requests_in_memory_until_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    // the table exists; another connection then holds the write lock
    CallbackDb::new(tmp.path()).counts().unwrap();
    let locker = Connection::open(tmp.path().join(crate::io::state::DB_FILE)).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let cb = Callbacks::start(tmp.path().to_path_buf(), &CallbackConfig::default(), RET).unwrap();
    cb.submit(request(1), 1000).unwrap();
    let c = cb.counters().clone();
    let sources = crate::io::storage::StorageSources { call_log: None, callbacks: Some(c.clone()) };
    // the start's prune, then the insert wait for the lock (busy timeout) and fail: counted,
    // held, reported
    assert!(wait_for(Duration::from_secs(15), || c.write_failures.load(Ordering::Relaxed) >= 2));
    assert_eq!(c.unstored.load(Ordering::Relaxed), 1);
    let problem = sources.problem(crate::io::clock::unix_ms()).expect("storage problem reported");
    assert!(
        problem.contains("1 callback request(s) not stored yet")
            && problem.contains("callback writer failed"),
        "{problem}"
    );
    assert!(
        c.snapshot().last_write_failure.unwrap().error.contains("locked"),
        "{:?}",
        c.snapshot()
    );
    // the disk comes back: the held request is stored on the next retry
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(wait_for(writer::RETRY_UNSTORED + Duration::from_secs(5), || c
        .stored
        .load(Ordering::Relaxed)
        == 1));
    assert_eq!(c.unstored.load(Ordering::Relaxed), 0);
    assert_eq!(sources.problem(crate::io::clock::unix_ms()), None);
    assert_eq!(read_recent(tmp.path(), 10).unwrap().len(), 1);
    assert_eq!(c.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_state_directory_that_cannot_exist_is_counted_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let cb = Callbacks::start(file.join("state"), &CallbackConfig::default(), RET).unwrap();
    cb.submit(request(1), 1000).unwrap();
    let c = cb.counters().clone();
    // (the start's prune fails first, then the insert: the request is held)
    assert!(wait_for(Duration::from_secs(5), || c.write_failures.load(Ordering::Relaxed) >= 2));
    assert_eq!((c.unstored.load(Ordering::Relaxed), c.stored.load(Ordering::Relaxed)), (1, 0));
    assert!(c
        .health
        .problem(crate::io::clock::unix_ms())
        .unwrap()
        .contains("cannot create state directory"));
}

#[test]
fn requests_handed_over_just_before_shutdown_are_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let cb = Callbacks::start(tmp.path().to_path_buf(), &CallbackConfig::default(), RET).unwrap();
    for n in 0..10 {
        assert!(cb.submit(request(n), 1000 + u64::from(n)).is_some());
    }
    drop(cb); // at once: the writer gets its bounded time to commit the queue
    assert_eq!(read_recent(tmp.path(), 100).unwrap().len(), 10);
}

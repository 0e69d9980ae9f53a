use super::*;
use crate::core::endpoint::{CallEnd, CallQuality};

const RET: Retention = Retention { keep_days: 90, max_rows: 100_000 };

fn record(call_id: &str, phase: RecordPhase) -> CallRecord {
    CallRecord {
        call_id: call_id.to_string(),
        carrier: "telco".to_string(),
        caller: "sip:alice@example.com".to_string(),
        called: "sip:+15550100@trunkguard".to_string(),
        phase,
        ai_endpoint: None,
        failovers: 0,
        fallback_reason: None,
        human: None,
        ladder: Vec::new(),
        callback: None,
        end: None,
    }
}

fn ended(call_id: &str) -> CallRecord {
    let mut r = record(call_id, RecordPhase::Ended);
    r.ai_endpoint = Some("standby".to_string());
    r.failovers = 1;
    r.end = Some(CallEnd {
        duration_ms: 4200,
        reason: "remote BYE",
        quality: CallQuality {
            mos: Some(4.3),
            loss_percent: 0.5,
            jitter_ms: 3.25,
            concealed_ms: 40,
        },
    });
    r
}

#[test]
fn answer_then_steps_then_end_make_one_row() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path().join("state"));
    let mut answered = record("c1", RecordPhase::Answered);
    answered.ai_endpoint = Some("primary".to_string());
    db.upsert(&answered, 1000).unwrap();
    let mut failover = record("c1", RecordPhase::Failover);
    failover.ai_endpoint = Some("primary".to_string());
    failover.failovers = 1;
    db.upsert(&failover, 2000).unwrap();
    db.upsert(&ended("c1"), 5200).unwrap();
    let rows = read_recent(&tmp.path().join("state"), 10).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.answered_at_ms, Some(1000)); // not moved by later steps
    assert_eq!(row.ended_at_ms, Some(5200));
    assert_eq!(row.duration_ms, Some(4200));
    assert_eq!(row.ai_endpoint.as_deref(), Some("standby"));
    assert_eq!(row.failovers, 1);
    assert_eq!(row.end_reason.as_deref(), Some("remote BYE"));
    assert_eq!(row.mos, Some(4.3));
    assert_eq!(row.loss_percent, Some(0.5));
    assert_eq!(row.jitter_ms, Some(3.25));
    assert_eq!(row.concealed_ms, Some(40));
    assert_eq!(row.updated_at_ms, 5200);
    assert_eq!((row.carrier.as_str(), row.caller.as_str()), ("telco", "sip:alice@example.com"));
}

#[test]
fn a_fallback_reason_survives_the_end_record() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path());
    let mut fallback = record("c1", RecordPhase::Answered);
    fallback.fallback_reason = Some("no agent within the budget".to_string());
    db.upsert(&fallback, 1).unwrap();
    let mut end = ended("c1");
    end.fallback_reason = None;
    end.ai_endpoint = None;
    db.upsert(&end, 2).unwrap();
    let row = &read_recent(tmp.path(), 1).unwrap()[0];
    assert_eq!(row.fallback_reason.as_deref(), Some("no agent within the budget"));
    assert_eq!(row.ai_endpoint, None);
}

#[test]
fn wal_and_synchronous_full_are_set() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path());
    db.upsert(&record("c1", RecordPhase::Answered), 1).unwrap();
    let mode: String =
        db.with(|conn| conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))).unwrap();
    let sync: i64 = db.with(|conn| conn.query_row("PRAGMA synchronous", [], |r| r.get(0))).unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2)); // 2 = FULL
}

#[test]
fn prune_by_age_then_by_count() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path());
    let day = DAY_MS;
    for (i, at) in [day, 2 * day, 50 * day, 51 * day, 52 * day].into_iter().enumerate() {
        db.upsert(&record(&format!("c{i}"), RecordPhase::Answered), at).unwrap();
    }
    // at day 93, keep 90 days: c0 (day 1) and c1 (day 2) are too old
    let deleted = db.prune(93 * day, Retention { keep_days: 90, max_rows: 100 }).unwrap();
    assert_eq!(deleted, 2);
    let deleted = db.prune(93 * day, Retention { keep_days: 90, max_rows: 2 }).unwrap();
    assert_eq!(deleted, 1);
    let ids: Vec<String> =
        read_recent(tmp.path(), 10).unwrap().into_iter().map(|r| r.call_id).collect();
    assert_eq!(ids, ["c3", "c4"]);
    assert_eq!(db.prune(93 * day, RET).unwrap(), 0);
}

#[test]
fn read_recent_gives_the_last_n_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path());
    for i in 0..5 {
        db.upsert(&record(&format!("c{i}"), RecordPhase::Answered), 100 + i).unwrap();
    }
    let ids: Vec<String> =
        read_recent(tmp.path(), 3).unwrap().into_iter().map(|r| r.call_id).collect();
    assert_eq!(ids, ["c2", "c3", "c4"]);
    assert!(read_recent(&tmp.path().join("missing"), 3).unwrap().is_empty());
}

#[test]
fn a_read_only_database_is_an_error_then_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path());
    db.upsert(&record("c1", RecordPhase::Answered), 1).unwrap();
    // (tests may run as root, where file modes do not stop writes: use a read-only connection)
    let ro = Connection::open_with_flags(
        tmp.path().join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.db.replace_connection(ro);
    let err = db.upsert(&record("c2", RecordPhase::Answered), 2).unwrap_err();
    assert!(matches!(err, StateError::Sqlite { .. }), "{err}");
    assert!(!db.db.is_open(), "the failed connection is dropped");
    assert!(db.prune(3, RET).is_ok(), "reopened read-write");
    db.upsert(&record("c2", RecordPhase::Answered), 4).unwrap();
    assert_eq!(read_recent(tmp.path(), 10).unwrap().len(), 2);
}

#[test]
fn a_directory_that_cannot_exist_does_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let mut db = CallDb::new(file.join("state"));
    assert!(matches!(
        db.upsert(&record("c1", RecordPhase::Answered), 1),
        Err(StateError::CreateDir { .. })
    ));
}

#[test]
fn the_writer_thread_commits_and_counts_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let log = CallLog::start(tmp.path().to_path_buf(), RET).unwrap();
    assert!(log.submit_and_wait(record("c1", RecordPhase::Answered), 10, Duration::from_secs(10)));
    assert_eq!(read_recent(tmp.path(), 10).unwrap().len(), 1, "committed when the wait returns");
    log.submit(ended("c1"), 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.counters().written.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.counters().written.load(Ordering::Relaxed), 2);
    assert_eq!(read_recent(tmp.path(), 10).unwrap()[0].end_reason.as_deref(), Some("remote BYE"));

    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let broken = CallLog::start(file.join("state"), RET).unwrap();
    broken.submit(record("c1", RecordPhase::Answered), 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    // one failed prune at start, one failed record
    while broken.counters().failed.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(broken.counters().failed.load(Ordering::Relaxed), 2);
    assert_eq!(broken.counters().written.load(Ordering::Relaxed), 0);
}

#[test]
fn the_ladder_and_the_callback_reason_are_kept_across_steps() {
    use crate::core::callback::CallbackReason;
    use crate::core::ladder::Rung;
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path().join("state"));
    db.upsert(&record("c1", RecordPhase::Answered), 1000).unwrap();
    let mut cb = record("c1", RecordPhase::Callback);
    cb.ladder = vec![Rung::Prompt, Rung::Menu, Rung::Callback];
    cb.callback = Some(CallbackReason::CallerAsked);
    db.upsert(&cb, 2000).unwrap();
    db.upsert(&ended("c1"), 3000).unwrap(); // an end record that says nothing of the ladder
    let rows = read_recent(&tmp.path().join("state"), 10).unwrap();
    assert_eq!(rows[0].ladder.as_deref(), Some("prompt>menu>callback"));
    assert_eq!(rows[0].callback_reason.as_deref(), Some("caller-pressed-1"));
}

#[test]
fn the_human_transfer_is_kept_across_steps() {
    use crate::core::endpoint::HumanRecord;
    let tmp = tempfile::tempdir().unwrap();
    let mut db = CallDb::new(tmp.path().join("state"));
    db.upsert(&record("c1", RecordPhase::Answered), 1000).unwrap();
    let mut human = record("c1", RecordPhase::Callback);
    human.human = Some(HumanRecord {
        refer: false,
        carrier: Some("carrier-b".into()),
        failed_attempts: vec!["carrier-a: 503 Service Unavailable".into()],
        failovers: 1,
        outcome: Some("connected"),
    });
    db.upsert(&human, 2000).unwrap();
    db.upsert(&ended("c1"), 3000).unwrap();
    let rows = read_recent(&tmp.path().join("state"), 10).unwrap();
    assert_eq!(
        rows[0].human.as_deref(),
        Some("carrier-b; failed carrier-a: 503 Service Unavailable; connected")
    );
}

#[test]
fn a_database_from_before_the_ladder_columns_gets_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE calls (call_id TEXT PRIMARY KEY, carrier TEXT NOT NULL, caller TEXT NOT NULL,
                 called TEXT NOT NULL, answered_at_ms INTEGER, ended_at_ms INTEGER, duration_ms INTEGER,
                 ai_endpoint TEXT, failovers INTEGER NOT NULL DEFAULT 0, fallback_reason TEXT,
                 end_reason TEXT, mos REAL, loss_percent REAL, jitter_ms REAL, concealed_ms INTEGER,
                 updated_at_ms INTEGER NOT NULL);
             INSERT INTO calls (call_id, carrier, caller, called, answered_at_ms, updated_at_ms)
                 VALUES ('old', 'telco', 'a', 'b', 5, 5);",
        )
        .unwrap();
    }
    // read-only before any migration: the new columns read as NULL
    let rows = read_recent(&dir, 10).unwrap();
    assert_eq!((rows.len(), rows[0].ladder.clone()), (1, None));
    let mut db = CallDb::new(dir.clone());
    let mut r = record("new", RecordPhase::Answered);
    r.ladder = vec![crate::core::ladder::Rung::Prompt];
    db.upsert(&r, 10).unwrap();
    let rows = read_recent(&dir, 10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].ladder.as_deref(), Some("prompt"));
}

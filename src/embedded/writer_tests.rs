//! The writer thread's batching, per-job rollback and failure modes. The store-level
//! behaviour (conflicts, sync, busy) is covered by `store_tests.rs` and the contract suite.

use std::time::Duration;

use super::super::migrate;
use super::*;

fn open(dir: &std::path::Path) -> (Arc<Db>, Arc<Writer>) {
    let db = Arc::new(Db::open(dir, "state.db", Synchronous::Normal, migrate::STATE).unwrap());
    let writer = Arc::new(Writer::start(Arc::clone(&db), None).unwrap());
    (db, writer)
}

fn insert_company(conn: &Connection, id: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO companies (company_id, name, allow_unsigned_calcom, created_at)
         VALUES (?1, 'x', 0, 0)",
    )?
    .execute([id])
}

fn companies(db: &Db) -> Vec<String> {
    let conn = db.reader().unwrap();
    let mut stmt = conn
        .prepare("SELECT company_id FROM companies ORDER BY company_id")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

/// Occupies the writer thread until the returned sender is used (or dropped).
async fn hold_writer(
    writer: &Arc<Writer>,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<StoreResult<()>>,
) {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = oneshot::channel::<()>();
    let held = {
        let writer = Arc::clone(writer);
        tokio::spawn(async move {
            writer
                .submit("hold", "none", false, move |_| {
                    let _ = started_tx.send(());
                    let _ = gate.recv();
                    Ok(())
                })
                .await
        })
    };
    started.await.unwrap();
    (release, held)
}

#[tokio::test]
async fn queued_writes_share_one_commit_and_a_failing_one_rolls_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (db, writer) = open(dir.path());
    let (release, held) = hold_writer(&writer).await;

    let writes = (0..20).map(|i| {
        let writer = Arc::clone(&writer);
        async move {
            writer
                .submit("insert", "companies", false, move |conn| {
                    insert_company(conn, &format!("c{i:02}"))?;
                    if i == 7 {
                        // The second insert breaks the primary key: the job's first insert
                        // must go too, and nobody else's.
                        insert_company(conn, "c07")?;
                    }
                    Ok(i)
                })
                .await
        }
    });
    let mut all = std::pin::pin!(futures::future::join_all(writes));
    // One poll queues every job (submit sends before it first waits) while the writer is
    // still busy, so they all land in the next batch.
    assert!(futures::poll!(all.as_mut()).is_pending());
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let results = all.await;

    for (i, result) in results.iter().enumerate() {
        match result {
            Err(StoreError::Conflict(_)) if i == 7 => {}
            Ok(value) if i != 7 => assert_eq!(*value, i),
            other => panic!("job {i}: {other:?}"),
        }
    }
    let expected: Vec<String> = (0..20)
        .filter(|i| *i != 7)
        .map(|i| format!("c{i:02}"))
        .collect();
    assert_eq!(companies(&db), expected);
    assert_eq!(
        writer.commits(),
        2,
        "the hold, then all twenty in one transaction"
    );
}

#[tokio::test]
async fn a_panicking_job_panics_its_caller_and_the_writer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (db, writer) = open(dir.path());
    let panicking = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            writer
                .submit("boom", "companies", false, |conn| -> Res<()> {
                    insert_company(conn, "half-done")?;
                    panic!("job bug");
                })
                .await
        })
    };
    assert!(panicking.await.unwrap_err().is_panic());
    writer
        .submit("insert", "companies", false, |conn| {
            Ok(insert_company(conn, "after")?)
        })
        .await
        .unwrap();
    assert_eq!(companies(&db), vec!["after".to_owned()]);
}

#[tokio::test]
async fn a_barrier_batch_commits_with_full_and_the_writer_returns_to_normal() {
    let dir = tempfile::tempdir().unwrap();
    let (db, writer) = open(dir.path());
    let level = writer
        .submit("sync", "sync_barrier", true, |conn| {
            Ok(conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?)
        })
        .await
        .unwrap();
    assert_eq!(level, 2, "FULL while the barrier's batch runs");
    let level: i64 = db
        .writer()
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(level, 1, "NORMAL afterwards");
}

#[tokio::test]
async fn a_stopped_writer_answers_unavailable_instead_of_hanging() {
    let unavailable = |result: StoreResult<()>| {
        assert!(
            matches!(result, Err(StoreError::Unavailable { operation: "w", .. })),
            "{result:?}"
        );
    };
    let job = |_: &Connection| Ok(());

    // The thread is gone and the channel closed.
    let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
    drop(queue);
    let closed = Writer {
        jobs: Some(jobs),
        thread: None,
        commits: Arc::default(),
    };
    unavailable(closed.submit("w", "t", false, job).await);

    // The thread died holding the job, without answering.
    let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
    let thread = std::thread::spawn(move || drop(queue.recv()));
    let dying = Writer {
        jobs: Some(jobs),
        thread: Some(thread),
        commits: Arc::default(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), dying.submit("w", "t", false, job));
    unavailable(answer.await.expect("must not hang"));
}

#[tokio::test]
async fn dropping_the_writer_stops_its_thread_and_lets_go_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db, writer) = open(dir.path());
    writer
        .submit("insert", "companies", false, |conn| {
            Ok(insert_company(conn, "a")?)
        })
        .await
        .unwrap();
    assert_eq!(Arc::strong_count(&db), 2);
    drop(writer);
    assert_eq!(Arc::strong_count(&db), 1, "the thread has exited");
}

//! Retry tiers on tokio's paused clock: routing by attempt, the forwarder's due times and
//! offsets, and the pipeline walking a transiently failing booking through the tiers to the
//! dead-letter log.

use std::time::Duration;

use super::*;
use crate::clock::TokioClock;
use crate::domain::{AppointmentStatus, EventRow, EventStatus};
use crate::handlers::call_booking_key;
use crate::ids::CompanyId;
use crate::metrics::PipelineMetrics;
use crate::pipeline::Pipeline;
use crate::record::RecordMeta;
use crate::store::StateStore;
use crate::testkit::booking::{
    call_analyzed_booking, transient, BookingFixture, Method, BRANCH_PHONE,
};
use crate::testkit::{self, call_ended, received, stored, t0, yield_turns, MemLog};

const GROUP: &str = "askpro-retry";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Tiers with these delays (each a 2-partition [`MemLog`]) and a dead-letter log.
fn topology(delays: &[u64]) -> (RetryTopology, Vec<Arc<MemLog>>, Arc<MemLog>) {
    let logs: Vec<Arc<MemLog>> = delays.iter().map(|_| Arc::new(MemLog::new(2))).collect();
    let dead = Arc::new(MemLog::new(2));
    let tiers = delays
        .iter()
        .zip(&logs)
        .map(|(delay, log)| RetryTier {
            delay: secs(*delay),
            log: Arc::clone(log) as Arc<dyn EventLog>,
        })
        .collect();
    let topology = RetryTopology {
        tiers,
        dead_letters: Arc::clone(&dead) as Arc<dyn EventLog>,
    };
    (topology, logs, dead)
}

fn same_log(a: &Arc<dyn EventLog>, b: &Arc<MemLog>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Every record of a log, partition by partition.
async fn records(log: &MemLog) -> Vec<StoredRecord> {
    let mut all = Vec::new();
    for partition in 0..log.partitions() {
        all.extend(log.fetch(partition, 0, 1000, Duration::ZERO).await.unwrap());
    }
    all
}

/// Lets the forwarder tasks react to a moved clock.
async fn settle() {
    yield_turns(50).await;
}

#[test]
fn route_sends_each_attempt_to_its_tier_and_the_last_to_the_dead_letters() {
    let (three, logs, dead) = topology(&[10, 60, 300]);
    // Attempt 0 is read as a first delivery.
    for (attempt, tier_no, delay) in [(0, 1, 10), (1, 1, 10), (2, 2, 60), (3, 3, 300)] {
        match three.route(attempt) {
            Route::Retry(no, tier) => {
                assert_eq!(
                    (no, tier.delay),
                    (tier_no, secs(delay)),
                    "attempt {attempt}"
                );
                assert!(same_log(&tier.log, &logs[no - 1]), "attempt {attempt}");
            }
            Route::DeadLetter(_) => panic!("attempt {attempt} was dead-lettered"),
        }
    }
    for attempt in [4, 5, u32::MAX] {
        match three.route(attempt) {
            Route::DeadLetter(log) => assert!(same_log(log, &dead)),
            Route::Retry(no, _) => panic!("attempt {attempt} went to tier {no}"),
        }
    }
    let (no_tiers, _, dead) = topology(&[]);
    assert!(matches!(no_tiers.route(1), Route::DeadLetter(log) if same_log(log, &dead)));
}

#[test]
fn retry_copy_keeps_the_event_and_sets_the_retry_header() {
    let original = stored(call_ended(CompanyId::new(), "call_1"), 1, 7);
    let due = t0() + chrono::Duration::seconds(60);

    let copy = retry_copy(&original, 3, due, "cal.com transient failure: 503");

    assert_eq!(copy.value, original.value);
    assert_eq!(copy.meta.event_id, original.meta.event_id);
    assert_eq!(copy.meta.dedup_key, original.meta.dedup_key);
    assert_eq!(copy.meta.attempt(), 3);
    let retry = copy.meta.retry.as_ref().unwrap();
    assert_eq!(retry.due_at, due);
    assert_eq!(retry.last_error, "cal.com transient failure: 503");
    assert_eq!(
        RecordMeta {
            retry: None,
            ..copy.meta.clone()
        },
        original.meta
    );
}

struct Forwarding {
    clock: Arc<TokioClock>,
    tier: Arc<MemLog>,
    main: Arc<MemLog>,
    shutdown: CancellationToken,
}

impl Forwarding {
    fn new() -> Self {
        Self {
            clock: Arc::new(TokioClock::starting_at(t0())),
            tier: Arc::new(MemLog::new(4)),
            main: Arc::new(MemLog::new(4)),
            shutdown: CancellationToken::new(),
        }
    }

    /// Appends a retry copy of a fresh `call_ended` of `company`, due `due_in` from now.
    async fn put(&self, company: CompanyId, call_id: &str, due_in: Duration) -> LogRecord {
        let original = stored(call_ended(company, call_id), 0, 0);
        let due_at = self.clock.now() + chrono::Duration::from_std(due_in).unwrap();
        let copy = retry_copy(&original, 2, due_at, "cal.com transient failure: 503");
        self.tier.append(vec![copy.clone()]).await.unwrap();
        copy
    }

    fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let tier = RetryTier {
            delay: secs(10),
            log: Arc::clone(&self.tier) as Arc<dyn EventLog>,
        };
        tokio::spawn(forward(
            1,
            tier,
            Arc::clone(&self.main) as Arc<dyn EventLog>,
            GROUP.into(),
            Arc::clone(&self.clock) as Arc<dyn Clock>,
            self.shutdown.clone(),
        ))
    }

    fn partition_of(&self, company: CompanyId) -> u32 {
        crate::partition::partition_for(company.to_string().as_bytes(), 4)
    }
}

#[tokio::test(start_paused = true)]
async fn forward_appends_a_due_record_to_the_main_log_then_commits_the_tier() {
    let fw = Forwarding::new();
    let company = CompanyId::new();
    let copy = fw.put(company, "call_1", secs(10)).await;
    let partition = fw.partition_of(company);
    let task = fw.spawn();
    settle().await;

    tokio::time::advance(Duration::from_millis(9_900)).await;
    settle().await;
    assert!(records(&fw.main).await.is_empty(), "not due yet");
    assert_eq!(fw.main.append_calls(), 0);
    assert_eq!(fw.tier.committed_offset(GROUP, partition), None);

    tokio::time::advance(Duration::from_millis(200)).await;
    settle().await;
    let main = records(&fw.main).await;
    assert_eq!(main.len(), 1, "exactly the record");
    let forwarded = &main[0];
    assert_eq!(
        (forwarded.partition, forwarded.offset),
        (partition, 0),
        "same key, same partition"
    );
    assert_eq!(forwarded.meta, copy.meta);
    assert_eq!(forwarded.meta.event_id, copy.meta.event_id);
    assert_eq!(forwarded.meta.attempt(), 2);
    assert_eq!(forwarded.value, copy.value);
    assert_eq!(fw.main.batch_sizes(), vec![1]);
    assert_eq!(fw.tier.committed_offset(GROUP, partition), Some(1));

    fw.shutdown.cancel();
    tokio::time::timeout(secs(5), task)
        .await
        .expect("the forwarder stops on shutdown")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn records_of_one_partition_are_forwarded_in_order_each_at_its_due_time() {
    let fw = Forwarding::new();
    let company = CompanyId::new();
    let first = fw.put(company, "call_1", secs(10)).await;
    let second = fw.put(company, "call_2", secs(20)).await;
    let partition = fw.partition_of(company);
    let task = fw.spawn();
    settle().await;

    tokio::time::advance(Duration::from_millis(10_100)).await;
    settle().await;
    let main = records(&fw.main).await;
    assert_eq!(main.len(), 1);
    assert_eq!(main[0].meta.event_id, first.meta.event_id);
    assert_eq!(fw.tier.committed_offset(GROUP, partition), Some(1));

    tokio::time::advance(Duration::from_millis(9_800)).await; // 19.9 s
    settle().await;
    assert_eq!(
        records(&fw.main).await.len(),
        1,
        "the second is not due yet"
    );

    tokio::time::advance(Duration::from_millis(200)).await; // 20.1 s
    settle().await;
    let ids: Vec<_> = records(&fw.main)
        .await
        .iter()
        .map(|r| (r.offset, r.meta.event_id))
        .collect();
    assert_eq!(
        ids,
        vec![(0, first.meta.event_id), (1, second.meta.event_id)]
    );
    assert_eq!(fw.tier.committed_offset(GROUP, partition), Some(2));

    fw.shutdown.cancel();
    tokio::time::timeout(secs(5), task).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_overdue_record_is_forwarded_at_once() {
    let fw = Forwarding::new();
    let company = CompanyId::new();
    // Due before the forwarder starts (it was down): no wait.
    fw.put(company, "call_1", secs(5)).await;
    tokio::time::advance(secs(30)).await;
    let task = fw.spawn();
    settle().await;

    assert_eq!(records(&fw.main).await.len(), 1);
    fw.shutdown.cancel();
    tokio::time::timeout(secs(5), task).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restarted_forwarder_resumes_after_the_committed_offset() {
    let fw = Forwarding::new();
    let company = CompanyId::new();
    fw.put(company, "call_1", secs(10)).await;
    let task = fw.spawn();
    settle().await;
    tokio::time::advance(secs(11)).await;
    settle().await;
    assert_eq!(records(&fw.main).await.len(), 1);
    fw.shutdown.cancel();
    tokio::time::timeout(secs(5), task).await.unwrap().unwrap();

    let restarted = Forwarding {
        shutdown: CancellationToken::new(),
        ..fw
    };
    let later = restarted.put(company, "call_2", secs(10)).await;
    let task = restarted.spawn();
    settle().await;
    tokio::time::advance(secs(11)).await;
    settle().await;

    let main = records(&restarted.main).await;
    assert_eq!(main.len(), 2, "the committed record is not forwarded again");
    assert_eq!(main[1].meta.event_id, later.meta.event_id);
    restarted.shutdown.cancel();
    tokio::time::timeout(secs(5), task).await.unwrap().unwrap();
}

// ---- the pipeline's retry routing ---------------------------------------------------------

fn ledger_row(f: &BookingFixture, record: &StoredRecord) -> EventRow {
    f.store
        .rows(f.company)
        .into_iter()
        .find(|r| r.id == record.meta.event_id)
        .expect("ledger row exists")
}

/// The single record of a tier, as the main log would hold it after forwarding.
async fn forwarded_from(log: &MemLog, main_offset: u64) -> StoredRecord {
    let mut all = records(log).await;
    assert_eq!(all.len(), 1, "one record in the tier");
    let record = all.remove(0);
    stored(
        LogRecord {
            meta: record.meta,
            value: record.value,
        },
        0,
        main_offset,
    )
}

#[tokio::test(start_paused = true)]
async fn a_transiently_failing_booking_walks_the_tiers_then_is_dead_lettered() {
    let f = BookingFixture::new().await;
    for _ in 0..3 {
        f.api.fail_create(transient("503 service unavailable"));
    }
    let (retries, tiers, dead) = topology(&[10, 60]);
    let pipeline = Pipeline {
        store: Arc::clone(&f.store) as Arc<dyn StateStore>,
        clock: Arc::clone(&f.clock) as Arc<dyn Clock>,
        settings: testkit::settings(),
        metrics: PipelineMetrics::unregistered(),
        fault: None,
        booker: Some(Arc::clone(&f.booker)),
        retries: Some(retries),
    };
    let metrics = &f.booker.metrics;
    let first = stored(
        call_analyzed_booking(f.company, "call_1", BRANCH_PHONE, "2026-12-01 10:00"),
        0,
        0,
    );
    f.store.record_events(&[received(&first)]).await.unwrap();
    let cal_error = "cal.com transient failure: 503 service unavailable";

    // Attempt 1 fails: tier 1, due in 10 s.
    let finished = pipeline.process(&first, 1).await.unwrap();

    assert_eq!(finished.status, EventStatus::Retrying);
    let error = finished.error.unwrap();
    assert!(error.starts_with("attempt 1 failed: "), "{error}");
    assert!(
        error.contains("retry 2 due at 2026-11-25T10:00:10Z"),
        "{error}"
    );
    let appointment = f
        .store
        .appointment_by_key(f.company, &call_booking_key(f.company, "call_1"))
        .await
        .unwrap()
        .expect("the call's appointment is stored");
    assert_eq!(appointment.status, AppointmentStatus::PendingSync);
    assert_eq!(appointment.sync_attempts, 1);
    let second = forwarded_from(&tiers[0], 1).await;
    assert_eq!(second.meta.event_id, first.meta.event_id);
    assert_eq!(second.meta.attempt(), 2);
    let retry = second.meta.retry.clone().unwrap();
    assert_eq!(retry.due_at, t0() + chrono::Duration::seconds(10));
    assert_eq!(retry.last_error, cal_error);
    assert!(records(&tiers[1]).await.is_empty());
    let row = ledger_row(&f, &first);
    assert_eq!((row.status, row.attempts), (EventStatus::Retrying, 1));
    let claim = f.store.dedup_row(f.company, &first.meta.dedup_key).unwrap();
    assert_eq!(
        (claim.holder, claim.completed),
        (first.meta.event_id, false),
        "the claim stays while the event waits"
    );
    assert_eq!(
        metrics
            .retries_scheduled_total
            .with_label_values(&["1"])
            .get(),
        1
    );

    // Attempt 2 (forwarded after 10 s) fails again: tier 2.
    tokio::time::advance(secs(10)).await;
    f.store.record_events(&[received(&second)]).await.unwrap();
    let finished = pipeline.process(&second, 1).await.unwrap();

    assert_eq!(finished.status, EventStatus::Retrying);
    assert!(
        finished
            .error
            .as_deref()
            .unwrap()
            .starts_with("attempt 2 failed: "),
        "{finished:?}"
    );
    let third = forwarded_from(&tiers[1], 2).await;
    assert_eq!(third.meta.event_id, first.meta.event_id);
    assert_eq!(third.meta.attempt(), 3);
    assert_eq!(
        third.meta.retry.as_ref().unwrap().due_at,
        t0() + chrono::Duration::seconds(70)
    );
    assert_eq!(records(&tiers[0]).await.len(), 1, "tier 1 got nothing new");
    let row = ledger_row(&f, &first);
    assert_eq!((row.status, row.attempts), (EventStatus::Retrying, 2));
    assert_eq!(
        metrics
            .retries_scheduled_total
            .with_label_values(&["2"])
            .get(),
        1
    );

    // Attempt 3, with only two tiers: dead letter, failed, key released.
    tokio::time::advance(secs(60)).await;
    let finished = pipeline.process(&third, 1).await.unwrap();

    assert_eq!(finished.status, EventStatus::Failed);
    let error = finished.error.unwrap();
    assert_eq!(error, format!("gave up after 3 attempts: {cal_error}"));
    let dead_letters = records(&dead).await;
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].meta.event_id, first.meta.event_id);
    assert_eq!(dead_letters[0].meta.attempt(), 3);
    assert_eq!(
        dead_letters[0].meta.retry.as_ref().unwrap().last_error,
        cal_error
    );
    assert_eq!(records(&tiers[0]).await.len(), 1);
    assert_eq!(records(&tiers[1]).await.len(), 1);
    assert_eq!(
        f.store.dedup_row(f.company, &first.meta.dedup_key),
        None,
        "key released for a replay"
    );
    let row = ledger_row(&f, &first);
    assert_eq!(
        (row.status, row.attempts, row.error.as_deref()),
        (EventStatus::Failed, 3, Some(error.as_str()))
    );
    assert_eq!(metrics.dead_letters_total.get(), 1);

    // Cal.com saw three creates, each retry preceded by a lookup; the appointment waits for
    // the reconciler or a replay.
    assert_eq!(f.api.calls(Method::Create), 3);
    assert_eq!(f.api.calls(Method::Find), 2);
    assert!(f.api.bookings().is_empty());
    let appointment = f.appointment(appointment.id).await;
    assert_eq!(appointment.status, AppointmentStatus::PendingSync);
    assert_eq!(appointment.sync_attempts, 3);
    assert_eq!(
        pipeline
            .metrics
            .events_total
            .with_label_values(&["retrying"])
            .get(),
        2
    );
}

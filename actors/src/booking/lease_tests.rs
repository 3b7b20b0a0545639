//! The sync lease on tokio's paused clock: a lease held by another process is respected
//! without holding up the tenant (the appointment is parked and the reconciler books it when
//! the lease ends), a restarted worker takes its own leases over at once, and a lease that
//! lapsed during a long rate-limit wait is checked before sending.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;

use super::*;
use crate::booking::SyncOutcome;
use crate::domain::{AppointmentStatus, DedupClaim};
use crate::reconciler::{self, ReconcileSettings, ReconcilerActor, ReconcilerArgs, Run};
use crate::testkit::booking::{rate_limited, BookingFixture, Method};
use crate::testkit::yield_turns;

const MINUTE: Duration = Duration::from_secs(60);

fn key(id: Uuid) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// Another process takes the appointment's lease (as a worker of the old owner would).
async fn take_lease(f: &BookingFixture, id: Uuid) -> EventId {
    let (holder, now) = (EventId::new(), f.clock.now());
    let claim = f
        .store
        .dedup_claim(ClaimRequest {
            company_id: f.company,
            key: &key(id),
            holder,
            now,
            lease_until: now + LEASE,
            expires_at: now + LEASE,
        })
        .await
        .unwrap();
    assert_eq!(
        claim,
        DedupClaim::Claimed,
        "the other process gets the lease"
    );
    holder
}

/// The other process (holding the lease as `other`) books the appointment and releases.
async fn book_elsewhere(f: &BookingFixture, id: Uuid, other: EventId) {
    let mut booked = f.appointment(id).await;
    booked.status = AppointmentStatus::Scheduled;
    booked.calcom_uid = Some("bk_other".into());
    booked.version += 1;
    assert!(f.store.upsert_appointment(&booked).await.unwrap());
    f.store
        .dedup_release(f.company, &key(id), other)
        .await
        .unwrap();
}

fn deferred(outcome: SyncOutcome) -> String {
    match outcome {
        SyncOutcome::Deferred { reason } => reason,
        other => panic!("expected Deferred, got {other:?}"),
    }
}

/// Syncs on a task of its own and returns its outcome if it finished without any time
/// passing (paused clock: a sync that waits for a timer is not finished).
async fn sync_at_once(
    f: &BookingFixture,
    booker: &Arc<crate::booking::Booker>,
    id: Uuid,
) -> SyncOutcome {
    let started = tokio::time::Instant::now();
    let task = f.spawn_sync_on(booker, id);
    yield_turns(20).await;
    assert!(task.is_finished(), "the sync must not wait");
    assert_eq!(tokio::time::Instant::now(), started);
    task.await.unwrap().unwrap()
}

/// The parked appointments of the fixture's tenant that are due now, synced.
async fn run_parked(f: &BookingFixture) -> Run {
    let mut run = Run::default();
    reconciler::reconcile_parked(&*f.store, &*f.clock, &f.booker, f.company, &mut run).await;
    run
}

#[tokio::test(start_paused = true)]
async fn a_restarted_worker_takes_its_own_lease_over_at_once() {
    let f = BookingFixture::new().await;
    let worker = Uuid::now_v7();
    let first = f.add_pending().await;
    let id = f.add_pending().await;
    // Incarnation 1 takes the lease, then waits ten minutes for the key's rate limit (a 429
    // on another appointment), and is killed there: its lease is left behind.
    let before = f.booker_of_worker(worker);
    f.api.fail_create(rate_limited(10 * MINUTE));
    assert!(matches!(
        f.spawn_sync_on(&before, first).await.unwrap().unwrap(),
        SyncOutcome::Transient { .. }
    ));
    let killed = f.spawn_sync_on(&before, id);
    yield_turns(20).await;
    assert!(!killed.is_finished(), "waiting for the rate limit");
    killed.abort();
    let _ = killed.await;
    assert!(f
        .store
        .dedup_entry(f.company, &key(id), f.clock.now())
        .await
        .unwrap()
        .is_some_and(|e| e.holder == holder_for(worker, id)));

    // Any other worker respects it...
    let other = f.booker_of_worker(Uuid::now_v7());
    deferred(sync_at_once(&f, &other, id).await);
    assert_eq!(
        f.api.calls(Method::Create),
        1,
        "only the rate-limited create"
    );

    // ...but the restarted worker (same identity, fresh process) books at once.
    let restarted = f.booker_of_worker(worker);
    let outcome = sync_at_once(&f, &restarted, id).await;
    assert!(
        matches!(outcome, SyncOutcome::Booked { found: false, .. }),
        "{outcome:?}"
    );
    assert_eq!(f.api.calls(Method::Create), 2);
    assert_eq!(f.appointment(id).await.status, AppointmentStatus::Scheduled);
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_elsewhere_defers_at_once_and_the_tenant_books_its_next_appointment() {
    let f = BookingFixture::new().await;
    let leased = f.add_pending().await;
    let next = f.add_pending().await;
    take_lease(&f, leased).await;

    let reason = deferred(sync_at_once(&f, &f.booker, leased).await);
    assert!(reason.contains("another process"), "{reason}");
    assert!(f.booker.parked.contains(f.company, leased));
    assert_eq!(f.api.total_calls(), 0, "nothing sent while it is held");
    assert_eq!(
        f.appointment(leased).await.status,
        AppointmentStatus::PendingSync
    );

    // The tenant's lock is free: its next appointment books without waiting.
    assert!(matches!(
        sync_at_once(&f, &f.booker, next).await,
        SyncOutcome::Booked { .. }
    ));
    assert_eq!(f.api.calls(Method::Create), 1);
}

#[tokio::test(start_paused = true)]
async fn a_live_foreign_lease_is_respected_and_an_early_release_is_noticed() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    let other = take_lease(&f, id).await;
    deferred(f.sync(id).await);

    // Rechecked every few seconds while it is held: still nothing sent.
    for _ in 0..3 {
        tokio::time::advance(crate::booking::parked::PARKED_RECHECK).await;
        let run = run_parked(&f).await;
        assert_eq!((run.pending, run.synced, run.stopped), (1, 0, false));
    }
    assert_eq!(f.api.total_calls(), 0);

    // The other process books it and releases early: the next recheck finds it booked.
    book_elsewhere(&f, id, other).await;
    tokio::time::advance(crate::booking::parked::PARKED_RECHECK).await;
    assert_eq!(run_parked(&f).await.synced, 1);
    assert!(!f.booker.parked.contains(f.company, id));
    assert_eq!(f.api.total_calls(), 0);
    assert_eq!(
        f.appointment(id).await.calcom_uid.as_deref(),
        Some("bk_other")
    );
}

#[tokio::test(start_paused = true)]
async fn the_reconciler_books_a_parked_appointment_once_the_foreign_lease_runs_out() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    take_lease(&f, id).await; // its holder dies now
    deferred(f.sync(id).await);

    // The regular runs would wait an hour: only the lease watch can book it in time.
    let args = ReconcilerArgs {
        store: Arc::clone(&f.store) as _,
        clock: Arc::clone(&f.clock) as _,
        booker: Arc::clone(&f.booker),
        settings: ReconcileSettings {
            interval: 60 * MINUTE,
            min_age: 60 * MINUTE,
            batch: 100,
        },
        owns: Arc::new(|_| true),
        shutdown: f.shutdown.clone(),
    };
    let (actor, handle) = Actor::spawn(None, ReconcilerActor, args).await.unwrap();
    for _ in 0..59 {
        tokio::time::advance(Duration::from_secs(1)).await;
        yield_turns(20).await;
    }
    assert_eq!(f.api.total_calls(), 0, "the lease still holds");
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(1)).await;
        yield_turns(20).await;
    }
    assert_eq!(f.appointment(id).await.status, AppointmentStatus::Scheduled);
    assert_eq!(f.api.calls(Method::Create), 1);
    assert!(!f.booker.parked.contains(f.company, id));
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_regular_run_steps_over_a_parked_appointment_and_books_the_younger_ones() {
    let f = BookingFixture::new().await;
    let older = f.pending(Duration::from_secs(300));
    f.put(&older).await;
    let younger = f.pending(Duration::from_secs(200));
    f.put(&younger).await;
    take_lease(&f, older.id).await;
    deferred(f.sync(older.id).await);

    let settings = ReconcileSettings {
        min_age: MINUTE,
        ..ReconcileSettings::default()
    };
    let run =
        reconciler::reconcile_tenant(&*f.store, &*f.clock, &f.booker, f.company, &settings).await;

    assert_eq!((run.synced, run.stopped), (1, false));
    assert_eq!(
        f.appointment(younger.id).await.status,
        AppointmentStatus::Scheduled
    );
    assert_eq!(
        f.appointment(older.id).await.status,
        AppointmentStatus::PendingSync
    );
    assert_eq!(f.api.calls(Method::Create), 1);
}

#[tokio::test(start_paused = true)]
async fn every_sync_releases_its_lease() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    assert!(matches!(f.sync(id).await, SyncOutcome::Booked { .. }));
    let entry = f
        .store
        .dedup_entry(f.company, &key(id), f.clock.now())
        .await
        .unwrap();
    assert_eq!(entry, None, "the lease is released");
}

/// A sync waits ten minutes for the rate limit (a 429 on another appointment), so its
/// lease runs out. Another process then either still holds the lease when the wait ends
/// (`still_held`), or took it, booked the appointment and released it.
async fn lapsed_while_waiting(still_held: bool) -> (BookingFixture, Uuid, SyncOutcome) {
    let f = BookingFixture::new().await;
    let first = f.add_pending().await;
    let id = f.add_pending().await;
    f.api.fail_create(rate_limited(10 * MINUTE));
    assert!(matches!(f.sync(first).await, SyncOutcome::Transient { .. }));

    let waiting = f.spawn_sync(id);
    yield_turns(10).await;
    tokio::time::advance(6 * MINUTE).await;
    yield_turns(10).await;
    if still_held {
        // Taken at 9:30, so still held when the wait ends at 10:00.
        tokio::time::advance(3 * MINUTE + MINUTE / 2).await;
        take_lease(&f, id).await;
        tokio::time::advance(MINUTE / 2).await;
    } else {
        let other = take_lease(&f, id).await;
        book_elsewhere(&f, id, other).await;
        tokio::time::advance(4 * MINUTE).await;
    }
    yield_turns(10).await;
    assert!(waiting.is_finished());
    let outcome = waiting.await.unwrap().unwrap();
    (f, id, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_lease_retaken_after_another_process_synced_sends_nothing() {
    let (f, id, outcome) = lapsed_while_waiting(false).await;
    let reason = deferred(outcome);
    assert!(reason.contains("meanwhile"), "{reason}");
    assert_eq!(
        f.api.calls(Method::Create),
        1,
        "only the rate-limited create"
    );
    assert_eq!(
        f.appointment(id).await.calcom_uid.as_deref(),
        Some("bk_other")
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_by_another_process_at_send_time_sends_nothing() {
    let (f, _, outcome) = lapsed_while_waiting(true).await;
    deferred(outcome);
    assert_eq!(
        f.api.calls(Method::Create),
        1,
        "only the rate-limited create"
    );
}

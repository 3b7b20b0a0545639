//! `reconcile_tenant` against a scripted Cal.com, on tokio's paused clock.

use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::domain::Appointment;
use crate::testkit::booking::{
    appointment_of, permanent, transient, BookingFixture, CreateStep, Method,
};

fn settings(min_age: Duration) -> ReconcileSettings {
    ReconcileSettings {
        min_age,
        ..ReconcileSettings::default()
    }
}

async fn run(f: &BookingFixture, settings: &ReconcileSettings) -> Run {
    reconcile_tenant(&*f.store, &*f.clock, &f.booker, f.company, settings).await
}

/// Stores `pending_sync` appointments last changed `ages` ago, in the given order.
async fn pending_aged(f: &BookingFixture, ages_secs: &[u64]) -> Vec<Appointment> {
    let mut stored = Vec::new();
    for age in ages_secs {
        let appointment = f.pending(Duration::from_secs(*age));
        f.put(&appointment).await;
        stored.push(appointment);
    }
    stored
}

fn created_order(f: &BookingFixture) -> Vec<Uuid> {
    f.api
        .create_requests()
        .iter()
        .map(|r| appointment_of(r).expect("create carries the appointment id"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pushes_pending_appointments_oldest_first() {
    let f = BookingFixture::new().await;
    // Stored out of age order (ids grow with insertion, so id order is not age order).
    let a = pending_aged(&f, &[200, 100, 300]).await;
    let (middle, newest, oldest) = (a[0].id, a[1].id, a[2].id);

    let run = run(&f, &settings(Duration::from_secs(60))).await;

    assert_eq!(
        run,
        Run {
            pending: 3,
            synced: 3,
            failed: 0,
            stopped: false
        }
    );
    assert_eq!(created_order(&f), vec![oldest, middle, newest]);
    for appointment in &a {
        let stored = f.appointment(appointment.id).await;
        assert_eq!(stored.status, AppointmentStatus::Scheduled);
    }
    assert_eq!(f.api.calls(Method::Find), 0);
}

#[tokio::test(start_paused = true)]
async fn stops_at_the_first_transient_failure_and_leaves_younger_ones_untouched() {
    let f = BookingFixture::new().await;
    let a = pending_aged(&f, &[300, 200, 100]).await;
    f.api.script_create(CreateStep::Succeed);
    f.api.fail_create(transient("503 service unavailable"));

    let run = run(&f, &settings(Duration::from_secs(60))).await;

    assert_eq!(
        run,
        Run {
            pending: 3,
            synced: 1,
            failed: 0,
            stopped: true
        }
    );
    assert_eq!(created_order(&f), vec![a[0].id, a[1].id]);
    assert_eq!(
        f.appointment(a[0].id).await.status,
        AppointmentStatus::Scheduled
    );
    let failed = f.appointment(a[1].id).await;
    assert_eq!(failed.status, AppointmentStatus::PendingSync);
    assert!(failed.last_error.is_some());
    assert_eq!(f.appointment(a[2].id).await, a[2], "never touched");
    assert_eq!(f.api.total_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_refusal_is_counted_and_the_run_goes_on() {
    let f = BookingFixture::new().await;
    let a = pending_aged(&f, &[300, 200]).await;
    f.api
        .fail_create(permanent(409, "ConflictException", "slot taken"));

    let run = run(&f, &settings(Duration::from_secs(60))).await;

    assert_eq!(
        run,
        Run {
            pending: 2,
            synced: 1,
            failed: 1,
            stopped: false
        }
    );
    assert_eq!(
        f.appointment(a[0].id).await.status,
        AppointmentStatus::Failed
    );
    assert_eq!(
        f.appointment(a[1].id).await.status,
        AppointmentStatus::Scheduled
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_min_age_skips_nothing() {
    let f = BookingFixture::new().await;
    let a = pending_aged(&f, &[0, 0, 0]).await;

    let run = run(&f, &settings(Duration::ZERO)).await;

    assert_eq!(
        run,
        Run {
            pending: 3,
            synced: 3,
            failed: 0,
            stopped: false
        }
    );
    assert_eq!(f.api.calls(Method::Create), 3);
    for appointment in &a {
        let stored = f.appointment(appointment.id).await;
        assert_eq!(stored.status, AppointmentStatus::Scheduled);
    }
}

#[tokio::test(start_paused = true)]
async fn appointments_younger_than_min_age_are_left_to_their_own_retries() {
    let f = BookingFixture::new().await;
    let a = pending_aged(&f, &[120, 30]).await;
    let min_age = settings(Duration::from_secs(60));

    let first = run(&f, &min_age).await;

    assert_eq!(
        first,
        Run {
            pending: 2,
            synced: 1,
            failed: 0,
            stopped: false
        }
    );
    assert_eq!(created_order(&f), vec![a[0].id]);
    assert_eq!(f.appointment(a[1].id).await, a[1], "too young: untouched");

    // 29 s later it is still younger than a minute; at 30 s it is old enough.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(run(&f, &min_age).await.synced, 0);
    assert_eq!(f.api.total_calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    let later = run(&f, &min_age).await;
    assert_eq!((later.pending, later.synced), (1, 1));
    assert_eq!(created_order(&f), vec![a[0].id, a[1].id]);
}

#[tokio::test(start_paused = true)]
async fn a_recently_changed_older_appointment_holds_back_the_younger_ones() {
    let f = BookingFixture::new().await;
    // The older one was created first but changed 10 s ago (its own retry is running); the
    // younger one has not changed for 200 s. Oldest first means it must not overtake.
    let mut older = f.pending(Duration::from_secs(300));
    older.updated_at = older.created_at + chrono::Duration::seconds(290);
    older.version = older.updated_at.timestamp_millis();
    f.put(&older).await;
    let younger = pending_aged(&f, &[200]).await.remove(0);

    let run = run(&f, &settings(Duration::from_secs(60))).await;

    assert_eq!(
        run,
        Run {
            pending: 2,
            synced: 0,
            failed: 0,
            stopped: false
        }
    );
    assert_eq!(f.api.total_calls(), 0);
    assert_eq!(f.appointment(younger.id).await, younger);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_the_run_without_a_call() {
    let f = BookingFixture::new().await;
    for _ in 0..5 {
        f.api.fail_create(transient("503"));
    }
    let a = pending_aged(&f, &[500, 400, 300, 200, 100]).await;
    let no_wait = settings(Duration::ZERO);
    // Five first attempts (the tenant actor's) fail transiently and open the breaker.
    for appointment in &a {
        assert!(matches!(
            f.sync(appointment.id).await,
            SyncOutcome::Transient { .. }
        ));
    }
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Open);
    assert_eq!(f.api.total_calls(), 5);

    let deferred = run(&f, &no_wait).await;

    assert_eq!(
        deferred,
        Run {
            pending: 5,
            synced: 0,
            failed: 0,
            stopped: true
        }
    );
    assert_eq!(f.api.total_calls(), 5, "zero calls while open");

    // Half-open: the run's first push is the probe; the rest follow once it closes.
    tokio::time::advance(Duration::from_secs(60)).await;
    let recovered = run(&f, &no_wait).await;
    assert_eq!((recovered.synced, recovered.stopped), (5, false));
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Closed);
    for appointment in &a {
        assert_eq!(
            f.appointment(appointment.id).await.status,
            AppointmentStatus::Scheduled
        );
    }
    assert_eq!(f.api.bookings().len(), 5);
    // Each had been attempted, so each was looked up before its new create.
    assert_eq!(f.api.calls(Method::Find), 5);
    assert_eq!(f.api.calls(Method::Create), 10);
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_store_stops_the_run() {
    let f = BookingFixture::new().await;
    pending_aged(&f, &[300]).await;
    f.store.set_unavailable(true);

    let run = run(&f, &settings(Duration::ZERO)).await;

    assert_eq!(
        run,
        Run {
            pending: 0,
            synced: 0,
            failed: 0,
            stopped: true
        }
    );
    assert_eq!(f.api.total_calls(), 0);
}

//! The booker against a scripted Cal.com, on tokio's paused clock: exactly-once creates, the
//! lookup after a lost answer, the breaker, the rate limit, `Retry-After` and shutdown.

use std::time::Duration;

use super::*;
use crate::booking::{Booking, IDEMPOTENCY_METADATA_KEY};
use crate::testkit::booking::{
    calcom_config, permanent, rate_limited, transient, BookingFixture, Method, CALLER_PHONE,
};
use crate::testkit::yield_turns;

const MINUTE: Duration = Duration::from_secs(60);

fn booked(outcome: SyncOutcome) -> (Appointment, bool) {
    match outcome {
        SyncOutcome::Booked { appointment, found } => (appointment, found),
        other => panic!("expected Booked, got {other:?}"),
    }
}

fn transient_error(outcome: SyncOutcome) -> BookingError {
    match outcome {
        SyncOutcome::Transient { error } => error,
        other => panic!("expected Transient, got {other:?}"),
    }
}

fn permanent_reason(outcome: SyncOutcome) -> String {
    match outcome {
        SyncOutcome::Permanent { reason } => reason,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

fn outcomes(f: &BookingFixture, status: &str) -> u64 {
    f.booker
        .metrics
        .bookings_total
        .with_label_values(&[status])
        .get()
}

fn transitions(f: &BookingFixture, from: BreakerState, to: BreakerState) -> u64 {
    f.booker
        .metrics
        .breaker_transitions_total
        .with_label_values(&[from.as_str(), to.as_str()])
        .get()
}

/// Five first-time syncs that each fail transiently: the breaker opens (the fifth error is
/// `last`). Returns the five appointments, still `pending_sync`.
async fn open_the_breaker(f: &BookingFixture, last: BookingError) -> Vec<Uuid> {
    for _ in 0..4 {
        f.api.fail_create(transient("503 service unavailable"));
    }
    f.api.fail_create(last);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = f.add_pending().await;
        transient_error(f.sync(id).await);
        ids.push(id);
    }
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Open);
    ids
}

#[tokio::test(start_paused = true)]
async fn a_successful_create_books_the_appointment() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;

    let (appointment, found) = booked(f.sync(id).await);

    assert!(!found);
    let stored = f.appointment(id).await;
    assert_eq!(stored, appointment);
    assert_eq!(stored.status, AppointmentStatus::Scheduled);
    assert_eq!(stored.calcom_uid.as_deref(), Some("bk_1"));
    assert_eq!(stored.sync_attempts, 1);
    assert_eq!(stored.last_error, None);
    assert_eq!(f.api.calls(Method::Create), 1);
    assert_eq!(f.api.calls(Method::Find), 0);
    assert_eq!(f.api.total_calls(), 1);
    // What was sent: the branch's event type, the caller, our idempotency key.
    let request = &f.api.create_requests()[0];
    assert_eq!(request.event_type_id, 4711);
    assert_eq!(request.start, stored.start_at.unwrap());
    assert_eq!(request.attendee.phone.as_deref(), Some(CALLER_PHONE));
    assert_eq!(request.attendee.time_zone, "Europe/Berlin");
    assert_eq!(
        request.metadata.get(IDEMPOTENCY_METADATA_KEY),
        stored.idempotency_key.as_ref()
    );
    assert_eq!(outcomes(&f, "booked"), 1);
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_is_looked_up_at_once_and_found_not_repeated() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    f.api.create_commits_but_unknown();

    let (appointment, found) = booked(f.sync(id).await);

    assert!(found);
    assert_eq!(f.api.calls(Method::Create), 1);
    assert_eq!(f.api.calls(Method::Find), 1);
    let bookings = f.api.bookings();
    assert_eq!(bookings.len(), 1, "exactly one booking in cal.com");
    assert_eq!(
        appointment.calcom_uid.as_deref(),
        Some(bookings[0].uid.as_str())
    );
    assert_eq!(appointment.status, AppointmentStatus::Scheduled);
    assert_eq!(appointment.sync_attempts, 1);
    assert_eq!(f.appointment(id).await, appointment);
    assert_eq!(outcomes(&f, "found"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_whose_lookup_fails_is_found_by_the_next_sync() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    f.api.create_commits_but_unknown();
    f.api.script_find(Err(transient("503 on lookup")));

    let error = transient_error(f.sync(id).await);

    assert!(matches!(error, BookingError::Unknown { .. }), "{error:?}");
    let stored = f.appointment(id).await;
    assert_eq!(stored.status, AppointmentStatus::PendingSync);
    assert_eq!(stored.last_error, Some(error.to_string()));

    let (appointment, found) = booked(f.sync(id).await);

    assert!(found);
    assert_eq!(f.api.calls(Method::Create), 1, "never created twice");
    assert_eq!(f.api.calls(Method::Find), 2);
    assert_eq!(f.api.bookings().len(), 1);
    assert_eq!(appointment.calcom_uid.as_deref(), Some("bk_1"));
}

/// A lookup that answers with a booking whose metadata carries our key but names another
/// tenant (two tenants on one Cal.com account) is never adopted: the sync creates our own.
#[tokio::test(start_paused = true)]
async fn a_looked_up_booking_of_another_tenant_is_never_adopted() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    f.api.fail_create(transient("503 service unavailable"));
    transient_error(f.sync(id).await);
    let key = f.appointment(id).await.idempotency_key.unwrap();
    let start = f.appointment(id).await.start_at.unwrap();
    let foreign = Booking {
        id: 99,
        uid: "bk_other_tenant".into(),
        start,
        end: start + chrono::Duration::minutes(30),
        status: "accepted".into(),
        event_type_id: Some(1),
        metadata: [
            (IDEMPOTENCY_METADATA_KEY.to_owned(), key),
            (
                crate::booking::COMPANY_METADATA_KEY.to_owned(),
                crate::ids::CompanyId::new().to_string(),
            ),
            (
                crate::booking::APPOINTMENT_METADATA_KEY.to_owned(),
                id.to_string(),
            ),
        ]
        .into(),
        rescheduled_to_uid: None,
    };
    f.api.script_find(Ok(Some(foreign)));

    let (appointment, found) = booked(f.sync(id).await);

    assert!(!found, "the other tenant's booking was adopted");
    assert_ne!(appointment.calcom_uid.as_deref(), Some("bk_other_tenant"));
    assert_eq!(f.api.calls(Method::Create), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_keeps_it_pending_and_the_next_sync_looks_before_creating() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    f.api.fail_create(transient("503 service unavailable"));

    let error = transient_error(f.sync(id).await);

    assert_eq!(error, transient("503 service unavailable"));
    let stored = f.appointment(id).await;
    assert_eq!(stored.status, AppointmentStatus::PendingSync);
    assert_eq!(stored.last_error, Some(error.to_string()));
    assert_eq!(stored.sync_attempts, 1);
    assert_eq!(stored.calcom_uid, None);
    assert_eq!(f.api.calls(Method::Create), 1);
    assert_eq!(f.api.calls(Method::Find), 0);

    let (appointment, found) = booked(f.sync(id).await);

    assert!(
        !found,
        "nothing was booked before, so a fresh create books it"
    );
    assert_eq!(appointment.sync_attempts, 2);
    assert_eq!(appointment.last_error, None);
    assert_eq!(f.api.calls(Method::Create), 2);
    assert_eq!(f.api.calls(Method::Find), 1);
    let order: Vec<Method> = f.api.call_log().iter().map(|c| c.method).collect();
    assert_eq!(order, [Method::Create, Method::Find, Method::Create]);
    assert_eq!(f.api.bookings().len(), 1);
    assert_eq!(outcomes(&f, "transient"), 1);
    assert_eq!(outcomes(&f, "booked"), 1);
}

#[tokio::test(start_paused = true)]
async fn five_transient_failures_open_the_breaker_and_a_probe_after_sixty_seconds_closes_it() {
    let f = BookingFixture::new().await;
    open_the_breaker(&f, transient("503 service unavailable")).await;
    assert_eq!(f.breaker_gauge(), 1);
    assert_eq!(f.api.total_calls(), 5);
    assert_eq!(transitions(&f, BreakerState::Closed, BreakerState::Open), 1);

    // Open: nothing goes out.
    let sixth = f.add_pending().await;
    let outcome = f.sync(sixth).await;
    match &outcome {
        SyncOutcome::Deferred { reason } => {
            assert!(reason.contains("circuit breaker is open"), "{reason}");
            assert!(reason.contains("next probe in 60 s"), "{reason}");
        }
        other => panic!("expected Deferred, got {other:?}"),
    }
    assert_eq!(f.api.total_calls(), 5, "zero calls while open");
    assert_eq!(
        f.appointment(sixth).await.status,
        AppointmentStatus::PendingSync
    );
    assert_eq!(outcomes(&f, "deferred"), 1);

    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::HalfOpen);

    // The probe: one call, and its success closes the breaker.
    let seventh = f.add_pending().await;
    let (_, found) = booked(f.sync(seventh).await);
    assert!(!found);
    assert_eq!(f.api.total_calls(), 6, "exactly one probe");
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Closed);
    assert_eq!(f.breaker_gauge(), 0);
    assert_eq!(
        transitions(&f, BreakerState::Open, BreakerState::HalfOpen),
        1
    );
    assert_eq!(
        transitions(&f, BreakerState::HalfOpen, BreakerState::Closed),
        1
    );
    assert_eq!(
        f.booker.breaker_states(),
        vec![(f.company, BreakerState::Closed)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_breaker_for_another_minute() {
    let f = BookingFixture::new().await;
    open_the_breaker(&f, transient("503")).await;
    tokio::time::advance(MINUTE).await;
    f.api.fail_create(transient("still 503"));

    let probe = f.add_pending().await;
    transient_error(f.sync(probe).await);

    assert_eq!(f.api.total_calls(), 6);
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Open);
    assert_eq!(f.breaker_gauge(), 1);
    assert_eq!(
        transitions(&f, BreakerState::HalfOpen, BreakerState::Open),
        1
    );
    let other = f.add_pending().await;
    assert!(matches!(f.sync(other).await, SyncOutcome::Deferred { .. }));
    assert_eq!(f.api.total_calls(), 6);
}

/// `Appointment::sync_attempts` is documented as "create requests sent to Cal.com", and the
/// booker's module doc says it is stored "before a create is sent". A sync the open breaker
/// defers sends nothing, yet it is counted, so the appointment's next sync spends a lookup.
#[tokio::test(start_paused = true)]
async fn a_deferred_sync_counts_no_create_attempt() {
    let f = BookingFixture::new().await;
    open_the_breaker(&f, transient("503")).await;
    let id = f.add_pending().await;

    assert!(matches!(f.sync(id).await, SyncOutcome::Deferred { .. }));
    assert_eq!(f.appointment(id).await.sync_attempts, 0, "nothing was sent");

    tokio::time::advance(MINUTE).await;
    booked(f.sync(id).await);
    assert_eq!(f.api.total_calls(), 6, "one create, no lookup");
}

#[tokio::test(start_paused = true)]
async fn permanent_refusals_fail_each_appointment_and_leave_the_breaker_closed() {
    let f = BookingFixture::new().await;
    let refusal = permanent(409, "ConflictException", "slot taken");
    for _ in 0..5 {
        f.api.fail_create(refusal.clone());
    }

    for _ in 0..5 {
        let id = f.add_pending().await;
        let reason = permanent_reason(f.sync(id).await);
        assert_eq!(reason, refusal.to_string());
        assert!(
            reason.contains("409") && reason.contains("slot taken"),
            "{reason}"
        );
        let stored = f.appointment(id).await;
        assert_eq!(stored.status, AppointmentStatus::Failed);
        assert_eq!(stored.last_error.as_deref(), Some(reason.as_str()));
        assert_eq!(stored.calcom_uid, None);
    }

    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Closed);
    assert_eq!(f.breaker_gauge(), 0);
    assert_eq!(f.api.calls(Method::Create), 5);
    assert_eq!(f.api.calls(Method::Find), 0);
    assert!(f.api.bookings().is_empty());
    assert_eq!(outcomes(&f, "permanent"), 5);
    // Cal.com is up: the next one goes straight through.
    let id = f.add_pending().await;
    booked(f.sync(id).await);
    assert_eq!(f.api.total_calls(), 6);
}

/// breaker.rs's module doc: permanent 4xx answers "do not count; they do not reset the count
/// either" (ARCHITECTURE.md: "other 4xx → … breaker untouched"). `Booker::gated` answers every
/// non-tripping result with `on_success`, which resets the count, so 4 transient + 1 permanent
/// + 1 transient leaves the breaker closed.
#[tokio::test(start_paused = true)]
async fn a_permanent_refusal_does_not_reset_the_failure_count() {
    let f = BookingFixture::new().await;
    for _ in 0..4 {
        f.api.fail_create(transient("503"));
    }
    f.api
        .fail_create(permanent(409, "ConflictException", "slot taken"));
    f.api.fail_create(transient("503"));

    for _ in 0..6 {
        let id = f.add_pending().await;
        f.sync(id).await;
    }

    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn an_appointment_that_is_not_pending_sync_is_left_alone() {
    let f = BookingFixture::new().await;
    let mut scheduled = f.pending(Duration::ZERO);
    scheduled.status = AppointmentStatus::Scheduled;
    scheduled.calcom_uid = Some("bk_existing".into());
    f.put(&scheduled).await;

    let outcome = f.sync(scheduled.id).await;

    assert_eq!(outcome, SyncOutcome::NothingToDo(scheduled.clone()));
    assert_eq!(f.api.total_calls(), 0);
    assert_eq!(f.appointment(scheduled.id).await, scheduled);
}

#[tokio::test(start_paused = true)]
async fn a_missing_appointment_is_a_store_error() {
    let f = BookingFixture::new().await;
    let err = f
        .booker
        .sync(&*f.store, &*f.clock, f.company, Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(f.api.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_branch_without_calcom_fails_the_appointment_naming_the_command() {
    let f = BookingFixture::with_calcom(None).await;
    let id = f.add_pending().await;

    let reason = permanent_reason(f.sync(id).await);

    assert!(reason.contains("askpro branch set-calcom"), "{reason}");
    assert!(reason.contains(&f.branch.id.to_string()), "{reason}");
    let stored = f.appointment(id).await;
    assert_eq!(stored.status, AppointmentStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(stored.sync_attempts, 0);
    assert_eq!(f.api.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_anonymous_appointment_fails_naming_the_reason() {
    let f = BookingFixture::new().await;
    let mut anonymous = f.pending(Duration::ZERO);
    anonymous.attendee_phone = None;
    anonymous.attendee_email = None;
    f.put(&anonymous).await;

    let reason = permanent_reason(f.sync(anonymous.id).await);

    assert!(reason.contains("anonymous"), "{reason}");
    assert!(reason.contains("email or phone"), "{reason}");
    assert!(
        reason.contains(&format!(
            "askpro branch update --branch {} --fallback-email EMAIL",
            f.branch.id
        )),
        "{reason}"
    );
    let stored = f.appointment(anonymous.id).await;
    assert_eq!(stored.status, AppointmentStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(f.api.total_calls(), 0);
    assert_eq!(outcomes(&f, "permanent"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_branch_rate_limit_makes_the_second_sync_wait_a_minute() {
    let f = BookingFixture::with_calcom(Some(calcom_config(Some(1)))).await;
    let first = f.add_pending().await;
    let second = f.add_pending().await;
    let started = Instant::now();
    booked(f.sync(first).await);
    assert_eq!(f.booker.metrics.rate_limit_waits_total.get(), 0);

    let waiting = f.spawn_sync(second);
    yield_turns(10).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    yield_turns(10).await;
    assert!(!waiting.is_finished(), "still waiting after 59 s");
    assert_eq!(f.api.calls(Method::Create), 1);

    tokio::time::advance(Duration::from_secs(1)).await;
    yield_turns(10).await;
    assert!(waiting.is_finished(), "done after 60 s");
    let (appointment, found) = booked(waiting.await.unwrap().unwrap());

    assert!(!found);
    assert_eq!(appointment.id, second);
    assert_eq!(f.api.calls(Method::Create), 2);
    let log = f.api.call_log();
    assert_eq!(log[0].at - started, Duration::ZERO);
    assert_eq!(log[1].at - started, MINUTE);
    assert_eq!(f.booker.metrics.rate_limit_waits_total.get(), 1);
    assert_eq!(
        f.booker.metrics.rate_limit_wait_seconds.get_sample_sum(),
        60.0
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_holds_the_next_request_back_until_it_has_passed() {
    let f = BookingFixture::new().await;
    let id = f.add_pending().await;
    f.api.fail_create(rate_limited(Duration::from_secs(30)));
    let started = Instant::now();

    let error = transient_error(f.sync(id).await);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));

    let retry = f.spawn_sync(id);
    yield_turns(10).await;
    tokio::time::advance(Duration::from_secs(29)).await;
    yield_turns(10).await;
    assert!(!retry.is_finished());
    assert_eq!(f.api.total_calls(), 1, "nothing sent during Retry-After");

    tokio::time::advance(Duration::from_secs(1)).await;
    yield_turns(10).await;
    assert!(retry.is_finished());
    booked(retry.await.unwrap().unwrap());
    let log: Vec<(Method, Duration)> = f
        .api
        .call_log()
        .iter()
        .map(|c| (c.method, c.at - started))
        .collect();
    let thirty = Duration::from_secs(30);
    assert_eq!(
        log,
        [
            (Method::Create, Duration::ZERO),
            (Method::Find, thirty),
            (Method::Create, thirty)
        ]
    );
    assert_eq!(f.booker.metrics.rate_limit_waits_total.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_rate_limit_wait_interrupts_without_a_call() {
    let f = BookingFixture::with_calcom(Some(calcom_config(Some(1)))).await;
    let first = f.add_pending().await;
    let second = f.add_pending().await;
    booked(f.sync(first).await);

    let waiting = f.spawn_sync(second);
    yield_turns(10).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    yield_turns(10).await;
    assert!(!waiting.is_finished());
    f.shutdown.cancel();
    let outcome = waiting.await.unwrap().unwrap();

    assert_eq!(outcome, SyncOutcome::Interrupted);
    assert_eq!(f.api.total_calls(), 1, "no call after the interruption");
    let stored = f.appointment(second).await;
    assert_eq!(stored.status, AppointmentStatus::PendingSync);
    assert_eq!(stored.calcom_uid, None);
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Closed);
    assert_eq!(f.booker.metrics.rate_limit_waits_total.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_the_wait_of_a_half_open_probe_leaves_no_probe_out() {
    let f = BookingFixture::new().await;
    // The fifth failure is a 429 that blocks the key for two minutes.
    open_the_breaker(&f, rate_limited(Duration::from_secs(120))).await;
    tokio::time::advance(MINUTE).await;
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::HalfOpen);

    let would_probe = f.add_pending().await;
    let waiting = f.spawn_sync(would_probe);
    yield_turns(10).await;
    assert!(!waiting.is_finished(), "waiting for Retry-After");
    f.shutdown.cancel();
    assert_eq!(waiting.await.unwrap().unwrap(), SyncOutcome::Interrupted);
    assert_eq!(f.api.total_calls(), 5);
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::HalfOpen);

    // Once Retry-After has passed (no wait, so shutdown does not interrupt), the next caller
    // gets the probe: it was not left out by the interrupted one.
    tokio::time::advance(MINUTE).await;
    let probe = f.add_pending().await;
    booked(f.sync(probe).await);
    assert_eq!(f.api.total_calls(), 6);
    assert_eq!(f.booker.breaker_state(f.company), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn concurrent_syncs_of_one_appointment_create_it_once() {
    let f = BookingFixture::with_calcom(Some(calcom_config(Some(1)))).await;
    let warm_up = f.add_pending().await;
    booked(f.sync(warm_up).await);
    let id = f.add_pending().await;

    // The first holds the tenant lock while it waits for the rate limit; the second waits
    // for the lock and then finds the appointment booked.
    let a = f.spawn_sync(id);
    let b = f.spawn_sync(id);
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());

    let mut booked_count = 0;
    for outcome in [a, b] {
        match outcome {
            SyncOutcome::Booked { found: false, .. } => booked_count += 1,
            SyncOutcome::NothingToDo(appointment) => {
                assert_eq!(appointment.status, AppointmentStatus::Scheduled)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(booked_count, 1);
    assert_eq!(f.api.calls(Method::Create), 2, "warm-up plus exactly one");
    assert_eq!(f.api.calls(Method::Find), 0);
    assert_eq!(f.api.bookings().len(), 2);
}

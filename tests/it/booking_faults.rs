//! The booking path when Cal.com misbehaves: the circuit breaker and the reconciler, rate
//! limits that must not leak across tenants, retry tiers and the dead-letter log.

use askpro::calcom::fake::{FakeCalcom, FakeConfig, FaultUpdate};
use askpro::config::Config;
use askpro::embedded::EmbeddedLog;
use askpro_actors::domain::{Appointment, AppointmentStatus, EventStatus};
use askpro_actors::{CompanyId, EventLog, StateStore};

use crate::booking::{analyzed, connect_calcom, replay_cli};
use askpro_actors::partition::partition_for;

use crate::harness::{eventually, tenant, Tenant, TestServer};

async fn by_status(
    store: &dyn StateStore,
    company: CompanyId,
    status: AppointmentStatus,
) -> Vec<Appointment> {
    store
        .appointments(company)
        .await
        .expect("appointments")
        .into_iter()
        .filter(|a| a.status == status)
        .collect()
}

/// A new tenant whose company id hashes onto `other`'s partition (4 in tests). Tenants that
/// land elsewhere are left unused; `number` seeds their distinct phone numbers.
async fn same_partition_tenant(
    store: &dyn StateStore,
    other: &Tenant,
    name: &str,
    number: u32,
) -> Tenant {
    let target = partition_for(other.company.to_string().as_bytes(), 4);
    for i in 0..64 {
        let t = tenant(store, name, &format!("+4930{}", number * 100 + i)).await;
        if partition_for(t.company.to_string().as_bytes(), 4) == target {
            return t;
        }
    }
    panic!("no tenant on partition {target} in 64 tries");
}

fn tuned(config: &mut Config) {
    config.booking.retry_delays_ms = vec![200, 400];
    config.booking.reconcile_interval_ms = 100;
    config.booking.reconcile_min_age_ms = 0;
    config.booking.breaker_open_ms = 1_500;
}

#[tokio::test]
async fn an_open_breaker_keeps_bookings_pending_until_the_reconciler_syncs_each_once() {
    let failing = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let healthy = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    failing
        .set_faults(FaultUpdate {
            fail_next: Some(5),
            ..Default::default()
        })
        .unwrap();
    let server = TestServer::start_with(tuned, Default::default()).await;
    let store = server.store.as_ref();
    let a = tenant(store, "Tenant A", "+4930200001").await;
    let b = same_partition_tenant(store, &a, "Tenant B", 200_002).await;
    connect_calcom(store, &a, &failing, None).await;
    connect_calcom(store, &b, &healthy, None).await;

    for i in 0..7 {
        let body = analyzed(
            &format!("a_{i}"),
            &a.phone,
            &format!("2027-09-{:02} 10:00", i + 1),
        );
        server.post_retell(a.company, &body, &a.retell_secret).await;
    }
    for i in 0..3 {
        let body = analyzed(
            &format!("b_{i}"),
            &b.phone,
            &format!("2027-09-{:02} 10:00", i + 1),
        );
        server.post_retell(b.company, &body, &b.retell_secret).await;
    }

    // Five transient failures open A's breaker; its later bookings wait as pending_sync.
    eventually("tenant A's breaker opens", || async {
        server
            .metric("askproai_breaker_transitions_total{from=\"closed\",to=\"open\"}")
            .await
            >= 1.0
    })
    .await;
    // B books normally meanwhile: it is done while A still has bookings waiting.
    eventually("tenant B booked", || async {
        by_status(store, b.company, AppointmentStatus::Scheduled)
            .await
            .len()
            == 3
    })
    .await;
    let a_waiting = by_status(store, a.company, AppointmentStatus::PendingSync).await;
    assert!(
        !a_waiting.is_empty(),
        "A's bookings wait while its breaker is open"
    );

    // The breaker half-opens, the reconciler's probe succeeds and every booking is pushed.
    eventually("tenant A fully synced", || async {
        by_status(store, a.company, AppointmentStatus::Scheduled)
            .await
            .len()
            == 7
    })
    .await;
    let bookings = failing.bookings();
    assert_eq!(bookings.len(), 7, "each appointment booked exactly once");
    assert_eq!(distinct_keys(&bookings), 7, "seven distinct appointments");
    assert_eq!(healthy.bookings().len(), 3);
    let health: serde_json::Value = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state = &health["checks"]["calcom"]["breakers"][a.company.to_string()];
    assert_eq!(state, "closed", "{health}");
    // Retried events come back and find their appointment booked: no event is left failed.
    let events = server.settled_events(a.company, 7).await;
    eventually("retries drained", || async {
        let events = store.events(a.company, None, 100).await.unwrap();
        events.iter().all(|e| e.status == EventStatus::Processed)
    })
    .await;
    assert_eq!(events.len(), 7);
}

#[tokio::test]
async fn a_tenant_at_its_rate_limit_does_not_hold_up_another() {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let server = TestServer::start_with(tuned, Default::default()).await;
    let store = server.store.as_ref();
    let a = tenant(store, "Slow A", "+4930200011").await;
    // B shares A's partition (4 in tests), so both wait on the same consumer: B's progress
    // then shows that a tenant waiting for its budget holds up only itself.
    let b = same_partition_tenant(store, &a, "Fast B", 200_012).await;
    // One request per minute: A's second booking has to wait a minute.
    connect_calcom(store, &a, &fake, Some(1)).await;
    connect_calcom(store, &b, &fake, None).await;

    for i in 0..3 {
        let body = analyzed(
            &format!("ra_{i}"),
            &a.phone,
            &format!("2027-10-{:02} 10:00", i + 1),
        );
        server.post_retell(a.company, &body, &a.retell_secret).await;
    }
    for i in 0..5 {
        let body = analyzed(
            &format!("rb_{i}"),
            &b.phone,
            &format!("2027-10-{:02} 12:00", i + 1),
        );
        server.post_retell(b.company, &body, &b.retell_secret).await;
    }
    eventually("B booked all five", || async {
        by_status(store, b.company, AppointmentStatus::Scheduled)
            .await
            .len()
            == 5
    })
    .await;
    // A made progress (its first booking) and is still waiting for its budget.
    let a_booked = by_status(store, a.company, AppointmentStatus::Scheduled).await;
    assert_eq!(a_booked.len(), 1, "A is held to one request per minute");
    // B's bookings reached Cal.com in B's order.
    let mut b_order: Vec<_> = fake
        .bookings()
        .into_iter()
        .filter(|bk| {
            bk.metadata
                .get("askpro_key")
                .is_some_and(|k| k.contains(":retell-call:rb_"))
        })
        .map(|bk| (bk.id, bk.metadata["askpro_key"].clone()))
        .collect();
    b_order.sort();
    let keys: Vec<_> = b_order.into_iter().map(|(_, k)| k).collect();
    let expected: Vec<_> = (0..5)
        .map(|i| askpro_actors::handlers::call_booking_key(b.company, &format!("rb_{i}")))
        .collect();
    assert_eq!(keys, expected, "B's bookings in B's event order");
}

#[tokio::test]
async fn transient_failures_go_through_the_retry_tiers_to_the_dead_letter_log_and_replay() {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    fake.set_faults(FaultUpdate {
        error_rate: Some(1.0),
        ..Default::default()
    })
    .unwrap();
    let server = TestServer::start_with(
        |c| {
            tuned(c);
            // Keep the breaker and the reconciler out of it: this test is about the retry
            // schedule and the replay.
            c.booking.breaker_failure_threshold = 1_000;
            c.booking.reconcile_interval_ms = 600_000;
        },
        Default::default(),
    )
    .await;
    let store = server.store.as_ref();
    let t = tenant(store, "Retry Salon", "+4930200021").await;
    connect_calcom(store, &t, &fake, None).await;

    let body = analyzed("call_retry", &t.phone, "2027-11-02 10:00");
    server.post_retell(t.company, &body, &t.retell_secret).await;
    // First run, then two retries (200 ms, 400 ms), then the dead-letter log.
    eventually("event dead-lettered", || async {
        let events = store.events(t.company, None, 10).await.unwrap();
        events.len() == 1 && events[0].status == EventStatus::Failed
    })
    .await;
    let event = store.events(t.company, None, 10).await.unwrap().remove(0);
    assert_eq!(event.attempts, 3, "first run plus two retries");
    let error = event.error.clone().unwrap_or_default();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(error.contains("500"), "{error}");
    // The caller's booking is not lost: it is kept locally for the reconciler.
    assert_eq!(
        by_status(store, t.company, AppointmentStatus::PendingSync)
            .await
            .len(),
        1
    );
    // Each tier carried the record once; the dead-letter log holds the last copy.
    for (file, attempt) in [("retry-1.db", 2), ("retry-2.db", 3)] {
        let log = EmbeddedLog::open_file(server.dir.path(), file, 4).unwrap();
        let records = all_records(&log).await;
        assert_eq!(records.len(), 1, "{file}");
        assert_eq!(records[0].meta.event_id, event.id);
        assert_eq!(records[0].meta.attempt(), attempt, "{file}");
    }
    let dead = EmbeddedLog::open_file(server.dir.path(), "dead-letters.db", 4).unwrap();
    let dead = all_records(&dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].meta.event_id, event.id);
    assert!(dead[0]
        .meta
        .retry
        .as_ref()
        .unwrap()
        .last_error
        .contains("500"));
    assert!(fake.bookings().is_empty());

    // Cal.com recovers; staff replay the tenant's failed events.
    fake.set_faults(FaultUpdate {
        error_rate: Some(0.0),
        ..Default::default()
    })
    .unwrap();
    let company = t.company.to_string();
    let report = replay_cli(&server, &["--status", "failed", "--company", &company]);
    assert_eq!(report["replayed"].as_array().map(Vec::len), Some(1));
    eventually("replayed event booked", || async {
        by_status(store, t.company, AppointmentStatus::Scheduled)
            .await
            .len()
            == 1
    })
    .await;
    assert_eq!(fake.bookings().len(), 1);
    eventually("replayed event processed", || async {
        let e = store.event(t.company, event.id).await.unwrap().unwrap();
        e.status == EventStatus::Processed
    })
    .await;
}

async fn all_records(log: &EmbeddedLog) -> Vec<askpro_actors::StoredRecord> {
    let mut out = Vec::new();
    for p in 0..log.partitions() {
        out.extend(
            log.fetch(p, 0, 1000, std::time::Duration::ZERO)
                .await
                .unwrap(),
        );
    }
    out
}

/// How many distinct idempotency keys the fake's bookings carry.
pub fn distinct_keys(bookings: &[askpro::calcom::fake::FakeBooking]) -> usize {
    let keys: std::collections::BTreeSet<_> = bookings
        .iter()
        .filter_map(|b| b.metadata.get("askpro_key"))
        .collect();
    keys.len()
}

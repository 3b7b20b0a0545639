//! SIGKILL of the real binary while many bookings are queued and some are mid-sync: the
//! restarted worker takes the sync leases its previous incarnation left over at once, so
//! every booking lands well within the lease's 60 s, each exactly once.

use std::path::Path;
use std::sync::Arc;

use askpro::calcom::fake::{FakeCalcom, FakeConfig, Faults};
use askpro::embedded::EmbeddedStore;
use askpro_actors::booking::lease::KEY_PREFIX;
use askpro_actors::domain::AppointmentStatus;
use askpro_actors::StateStore;

use crate::booking::{analyzed, connect_calcom};
use crate::booking_faults::distinct_keys;
use crate::crash::{free_port, spawn_role, wait_up, Proc};
use crate::harness::*;

const TENANTS: usize = 15;
const BOOKINGS: usize = 150;

fn spawn_serve(dir: &Path, port: u16) -> Proc {
    spawn_role("serve", dir, port)
}

/// A distinct slot per call (the fake refuses two bookings of one host at one start).
fn slot(i: usize) -> String {
    let day = chrono::NaiveDate::from_ymd_opt(2027, 5, 3).unwrap() + chrono::Days::new(i as u64);
    format!("{day} 10:00")
}

async fn scheduled(store: &dyn StateStore, tenants: &[Tenant]) -> usize {
    let mut n = 0;
    for t in tenants {
        let all = store.appointments(t.company).await.expect("appointments");
        n += all
            .iter()
            .filter(|a| a.status == AppointmentStatus::Scheduled)
            .count();
    }
    n
}

/// Sync leases left behind on appointments that are still `pending_sync`.
async fn stale_leases(store: &dyn StateStore, tenants: &[Tenant]) -> usize {
    let now = chrono::Utc::now();
    let mut n = 0;
    for t in tenants {
        for a in store.appointments(t.company).await.expect("appointments") {
            let key = format!("{KEY_PREFIX}{}", a.id);
            let entry = store
                .dedup_entry(t.company, &key, now)
                .await
                .expect("entry");
            if a.status == AppointmentStatus::PendingSync && entry.is_some() {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test]
async fn sigkill_with_bookings_mid_sync_restarts_without_waiting_out_its_own_leases() {
    // Every Cal.com request takes 300 ms, so each tenant has a sync in flight at the kill.
    let faults = Faults {
        latency_ms: 300,
        ..Faults::default()
    };
    let fake = FakeCalcom::start(FakeConfig {
        faults,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let t = tenant(
            store.as_ref(),
            &format!("lease{i}"),
            &format!("+49301234700{i:02}"),
        )
        .await;
        connect_calcom(store.as_ref(), &t, &fake, None).await;
        tenants.push(t);
    }
    let port = free_port();
    let mut child = spawn_serve(dir.path(), port);
    let client = reqwest::Client::new();
    wait_up(&client, port).await;

    for i in 0..BOOKINGS {
        let t = &tenants[i % TENANTS];
        let body = analyzed(&format!("call_lease_{i}"), &t.phone, &slot(i));
        let signature = askpro::signature::sign_retell(&t.retell_secret, body.as_bytes(), now_ms());
        let response = client
            .post(format!(
                "http://127.0.0.1:{port}/webhooks/retell/{}",
                t.company
            ))
            .header("x-retell-signature", signature)
            .body(body)
            .send()
            .await
            .expect("the server is up");
        assert_eq!(response.status(), 202);
    }
    eventually("some bookings made", || async {
        fake.bookings().len() >= 20
    })
    .await;
    child.kill().expect("sigkill");
    child.wait().unwrap();
    let left = stale_leases(store.as_ref(), &tenants).await;
    assert!(left > 0, "the kill left syncs mid-flight");
    assert!(scheduled(store.as_ref(), &tenants).await < BOOKINGS);

    // Within `eventually`'s 30 s: waiting out a left lease would take up to 60 s.
    let _child = spawn_serve(dir.path(), port);
    wait_up(&client, port).await;
    eventually("every booking made after the restart", || async {
        scheduled(store.as_ref(), &tenants).await == BOOKINGS
    })
    .await;
    let bookings = fake.bookings();
    assert_eq!(
        bookings.len(),
        BOOKINGS,
        "exactly one cal.com booking per call"
    );
    assert_eq!(distinct_keys(&bookings), BOOKINGS, "no call booked twice");
}

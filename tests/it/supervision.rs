//! TenantActor panics: restart, redelivery, bounded crash loops, other tenants unaffected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askpro::app::RunOptions;
use askpro_actors::domain::EventStatus;
use askpro_actors::pipeline::FaultHook;
use askpro_actors::record::StoredRecord;

use crate::harness::*;

/// Panics on events whose body contains `boom` (the first `flaky_panics` times per event)
/// or `poison` (always).
struct Faults {
    flaky_panics: u32,
    seen: Mutex<HashMap<u64, u32>>,
}

impl FaultHook for Faults {
    fn before_process(&self, record: &StoredRecord) {
        let body = String::from_utf8_lossy(&record.value);
        if body.contains("poison") {
            panic!("poison event {}", record.meta.event_id);
        }
        if body.contains("boom") {
            let n = {
                let mut seen = self.seen.lock().unwrap();
                let n = seen.entry(record.offset).or_insert(0);
                *n += 1;
                *n
            }; // released before panicking, so the lock is not poisoned
            if n <= self.flaky_panics {
                panic!("flaky panic {n}");
            }
        }
    }
}

#[tokio::test]
async fn tenant_panic_restarts_redelivers_and_spares_other_tenants() {
    let faults = Arc::new(Faults {
        flaky_panics: 2,
        seen: Mutex::new(HashMap::new()),
    });
    let options = RunOptions {
        fault: Some(faults.clone()),
        ..Default::default()
    };
    let server = TestServer::start_with(|c| c.log.partitions = 1, options).await;
    // One partition: both tenants share it, so isolation is by actor, not by partition.
    let a = tenant(server.store.as_ref(), "crashy", "+49301234580").await;
    let b = tenant(server.store.as_ref(), "calm", "+49301234581").await;

    for call in ["call_a1", "call_boom", "call_a3"] {
        let body = retell_body("call_ended", call, &a.phone);
        assert_eq!(
            server
                .post_retell(a.company, &body, &a.retell_secret)
                .await
                .status(),
            202
        );
    }
    for i in 0..5 {
        let body = retell_body("call_ended", &format!("call_b{i}"), &b.phone);
        assert_eq!(
            server
                .post_retell(b.company, &body, &b.retell_secret)
                .await
                .status(),
            202
        );
    }

    let events_b = server.settled_events(b.company, 5).await;
    assert_eq!(count(&events_b, EventStatus::Processed), 5);
    let events_a = server.settled_events(a.company, 3).await;
    assert_eq!(count(&events_a, EventStatus::Processed), 3, "{events_a:?}");
    let boom = events_a
        .iter()
        .find(|e| e.dedup_key.ends_with("call_boom"))
        .unwrap();
    assert_eq!(
        boom.attempts, 3,
        "two panics, then success on the third delivery"
    );
    assert!(server
        .store
        .call(a.company, "call_a3")
        .await
        .unwrap()
        .is_some());
    assert!(server.metric("askproai_actor_restarts_total").await >= 2.0);
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn poison_event_fails_after_bounded_panics_and_the_tenant_moves_on() {
    let faults = Arc::new(Faults {
        flaky_panics: 0,
        seen: Mutex::new(HashMap::new()),
    });
    let options = RunOptions {
        fault: Some(faults),
        ..Default::default()
    };
    let server = TestServer::start_with(|_| {}, options).await;
    let t = tenant(server.store.as_ref(), "poisoned", "+49301234582").await;
    for call in ["call_poison", "call_after"] {
        let body = retell_body("call_ended", call, &t.phone);
        assert_eq!(
            server
                .post_retell(t.company, &body, &t.retell_secret)
                .await
                .status(),
            202
        );
    }
    let events = server.settled_events(t.company, 2).await;
    let poison = events
        .iter()
        .find(|e| e.dedup_key.ends_with("call_poison"))
        .unwrap();
    assert_eq!(poison.status, EventStatus::Failed);
    assert_eq!(poison.attempts, 3, "max_panics_per_event defaults to 3");
    let error = poison.error.as_deref().unwrap();
    assert!(
        error.contains("panicked 3 times") && error.contains("poison event"),
        "{error}"
    );
    let after = events
        .iter()
        .find(|e| e.dedup_key.ends_with("call_after"))
        .unwrap();
    assert_eq!(after.status, EventStatus::Processed);
    server.stop().await.0.unwrap();
}

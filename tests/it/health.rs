//! `/health` tells the truth: breaker state re-learned after a start, and a full disk.

use std::sync::Arc;

use askpro::app::{Backends, Role, RunOptions};
use askpro::calcom::fake::{FakeCalcom, FakeConfig};
use askpro::embedded::{DiskReserve, EmbeddedLog, EmbeddedStore};
use serde_json::Value;

use crate::booking::{analyzed, connect_calcom};
use crate::harness::{eventually, json_body, retell_body, tenant, TestServer};

pub async fn health(server: &TestServer) -> (u16, Value) {
    let response = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    let status = response.status().as_u16();
    (status, response.json().await.expect("health json"))
}

#[tokio::test]
async fn breaker_state_is_reported_as_relearned_after_a_start_until_calcom_answers() {
    let fake = FakeCalcom::start(FakeConfig::default()).await.unwrap();
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "Salon Relearn", "+4930100077").await;
    connect_calcom(server.store.as_ref(), &t, &fake, None).await;

    // Breakers are in memory: a fresh process knows nothing of Cal.com's health yet.
    let (_, body) = health(&server).await;
    let calcom = &body["checks"]["calcom"];
    assert!(calcom["relearning_since"].is_string(), "{body}");
    assert_eq!(calcom["relearning"], serde_json::json!([]), "{body}");

    let call = analyzed("call_relearn", &t.phone, "2030-05-06 10:00");
    let response = server.post_retell(t.company, &call, &t.retell_secret).await;
    assert_eq!(response.status(), 202);
    let (fake_ref, server_ref, company) = (&fake, &server, t.company.to_string());
    eventually("booked at cal.com", || async move {
        fake_ref.bookings().len() == 1
    })
    .await;
    eventually("the breaker has learned", || {
        let company = company.clone();
        async move {
            let (_, body) = health(server_ref).await;
            let calcom = &body["checks"]["calcom"];
            calcom["relearning_since"].is_null() && calcom["breakers"][&company] == "closed"
        }
    })
    .await;
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_full_disk_turns_health_and_webhooks_to_disk_full_until_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // The same reserve as the server's config (tests/it/harness.rs), so /health sees it.
    let reserve = DiskReserve::new(dir.path(), 256 * 1024);
    let log = Arc::new(EmbeddedLog::open_reserved(dir.path(), 4, reserve.clone()).unwrap());
    let store = Arc::new(EmbeddedStore::open_reserved(dir.path(), reserve.clone()).unwrap());
    let options = RunOptions {
        role: Role::Ingress,
        backends: Some(Backends {
            log: log.clone(),
            store,
        }),
        ..Default::default()
    };
    let server = TestServer::start_in(dir, |_| {}, options).await;
    let t = tenant(server.store.as_ref(), "Salon Full", "+4930100078").await;
    let data_dir = server.dir.path().display().to_string();

    // The disk fills up: log.db cannot grow (SQLITE_FULL, as on ENOSPC). Records still fit
    // into the last page for a while; the first that needs a new one is refused.
    log.simulate_full_disk(true).unwrap();
    let mut refused = None;
    for n in 0..100 {
        let body = retell_body("call_ended", &format!("call_full_{n}"), &t.phone);
        let response = server.post_retell(t.company, &body, &t.retell_secret).await;
        if response.status() == 503 {
            refused = Some(json_body(response).await.1);
            break;
        }
        assert_eq!(response.status(), 202);
    }
    let refused = refused.expect("a full log refuses webhooks");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk full"), "{refused}");
    assert!(
        !message.contains(&data_dir) && !message.contains(".db"),
        "no path: {refused}"
    );

    let (status, body) = health(&server).await;
    assert_eq!(status, 503, "{body}");
    let log_check = &body["checks"]["log"];
    assert_eq!(log_check["status"], "unhealthy", "{body}");
    assert!(
        log_check["error"].as_str().unwrap().contains("disk full"),
        "{body}"
    );
    assert_eq!(body["checks"]["disk"]["reserve"], "released", "{body}");
    assert!(!body.to_string().contains(&data_dir), "no path: {body}");

    // Space is freed: /health finds out by itself (no webhook needed), and webhooks are
    // accepted again.
    log.simulate_full_disk(false).unwrap();
    let (status, body) = health(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["log"]["status"], "healthy", "{body}");
    let body = retell_body("call_ended", "call_after_full", &t.phone);
    let response = server.post_retell(t.company, &body, &t.retell_secret).await;
    assert_eq!(response.status(), 202);
    server.stop().await.0.unwrap();
}

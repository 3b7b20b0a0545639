//! The webhook ingress over real HTTP against the service on the embedded backend.

use askpro_actors::domain::EventStatus;
use askpro_actors::{CompanyId, EventId, EventLog, Provider};

use crate::harness::*;

#[tokio::test]
async fn signed_call_ended_is_processed_onto_its_branch() {
    let server = TestServer::start().await;
    let a = tenant(server.store.as_ref(), "a", "+49301234567").await;
    let b = tenant(server.store.as_ref(), "b", "+49301234568").await;
    // National format on the wire: the handler normalizes before resolving the branch.
    let body = retell_body("call_ended", "call_onto_branch", "030 1234567");
    let (status, reply) =
        json_body(server.post_retell(a.company, &body, &a.retell_secret).await).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["duplicate"], false);
    let event_id: EventId = reply["event_id"].as_str().unwrap().parse().unwrap();

    let events = server.settled_events(a.company, 1).await;
    assert_eq!(events[0].id, event_id);
    assert_eq!(
        events[0].status,
        EventStatus::Processed,
        "{:?}",
        events[0].error
    );
    assert_eq!(events[0].dedup_key, "retell:call_ended:call_onto_branch");
    let call = server
        .store
        .call(a.company, "call_onto_branch")
        .await
        .unwrap()
        .expect("call stored");
    assert_eq!(call.branch_id, Some(a.branch));
    assert_eq!(call.to_number.as_deref(), Some("+49301234567"));
    assert_eq!(
        call.from_number, None,
        "anonymous caller must have no number"
    );
    assert_eq!(call.status, "ended");
    // Tenant isolation: the other tenant cannot see the call or the event.
    assert!(server
        .store
        .call(b.company, "call_onto_branch")
        .await
        .unwrap()
        .is_none());
    assert!(server
        .store
        .event(b.company, event_id)
        .await
        .unwrap()
        .is_none());
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn twenty_concurrent_deliveries_are_processed_once() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "dup", "+49301234569").await;
    let body = retell_body("call_analyzed", "call_dup", &t.phone);
    let sends = (0..20).map(|_| server.post_retell(t.company, &body, &t.retell_secret));
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 200),
        "{statuses:?}"
    );
    let acked_new = statuses.iter().filter(|s| **s == 202).count();
    let events = server.settled_events(t.company, acked_new).await;
    assert_eq!(events.len(), acked_new, "every 202 is one ledger event");
    assert_eq!(count(&events, EventStatus::Processed), 1);
    let ingress_duplicates = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        count(&events, EventStatus::Duplicate) + ingress_duplicates,
        19
    );

    // A later redelivery is recognised at the ingress.
    let (status, reply) =
        json_body(server.post_retell(t.company, &body, &t.retell_secret).await).await;
    assert_eq!(
        (status, reply["duplicate"].as_bool()),
        (200, Some(true)),
        "{reply}"
    );
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn signature_vectors_over_http() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "sig", "+49301234570").await;
    let path = format!("/webhooks/retell/{}", t.company);
    let body = retell_body("call_started", "call_sig", &t.phone);
    let sign =
        |key: &str, body: &str, ts: i64| askpro::signature::sign_retell(key, body.as_bytes(), ts);

    let valid = sign(&t.retell_secret, &body, now_ms());
    let refused = [
        (
            "wrong key",
            sign("key_wrong", &body, now_ms()),
            body.clone(),
        ),
        (
            "tampered body",
            valid.clone(),
            body.replace("call_sig", "call_sih"),
        ),
        (
            "6 minutes old",
            sign(&t.retell_secret, &body, now_ms() - 360_000),
            body.clone(),
        ),
        ("malformed", "v=abc,d=xyz".to_owned(), body.clone()),
        ("no digest", format!("v={}", now_ms()), body.clone()),
    ];
    for (case, header, sent) in &refused {
        let (status, reply) = json_body(
            server
                .post_raw(&path, sent, Some(("x-retell-signature", header)))
                .await,
        )
        .await;
        assert_eq!(status, 401, "{case}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}"
        );
    }
    let (status, _) = json_body(server.post_raw(&path, &body, None).await).await;
    assert_eq!(status, 401, "missing header");

    // Rotation: a second active secret verifies, and the ledger names it.
    add_secret(
        server.store.as_ref(),
        t.company,
        Provider::Retell,
        "sec_retell_2",
        "key_rotated",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await; // tenant cache ttl
    let rotated = sign("key_rotated", &body, now_ms());
    let (status, reply) = json_body(
        server
            .post_raw(&path, &body, Some(("x-retell-signature", &rotated)))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(events.len(), 1, "nothing is stored for refused signatures");
    assert_eq!(events[0].secret_id, "sec_retell_2");
    let unauthorized = server
        .metric("askproai_webhook_total{outcome=\"unauthorized\",provider=\"retell\"}")
        .await;
    assert_eq!(unauthorized, 6.0);
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn oversized_body_is_413_and_malformed_json_is_kept_as_rejected() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "bad", "+49301234571").await;
    let huge = format!(
        "{{\"event\":\"call_ended\",\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let (status, reply) =
        json_body(server.post_retell(t.company, &huge, &t.retell_secret).await).await;
    assert_eq!(status, 413, "{reply}");

    let broken = "{\"event\": \"call_ended\", \"call\": ";
    let (status, reply) = json_body(
        server
            .post_retell(t.company, broken, &t.retell_secret)
            .await,
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["stored"], true);
    let message = reply["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("json"),
        "the error says what was wrong: {message}"
    );
    let event_id: EventId = reply["event_id"].as_str().unwrap().parse().unwrap();

    let missing_call_id = r#"{"event":"call_ended","call":{"to_number":"+49301234571"}}"#;
    let (status, reply) = json_body(
        server
            .post_retell(t.company, missing_call_id, &t.retell_secret)
            .await,
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("call_id"),
        "{reply}"
    );

    let events = server.settled_events(t.company, 2).await;
    assert_eq!(count(&events, EventStatus::Rejected), 2);
    let kept = server
        .store
        .event(t.company, event_id)
        .await
        .unwrap()
        .unwrap();
    assert!(kept.error.unwrap().to_lowercase().contains("json"));
    // The raw body is stored once: in the log, which the ledger row points at.
    assert!(kept.payload.is_empty(), "the ledger row copies the body");
    let (_, dir) = server.stop().await;
    let log = askpro::embedded::EmbeddedLog::open(dir.path(), 4).unwrap();
    let logged = log
        .fetch(kept.partition, kept.offset, 1, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(logged[0].meta.event_id, event_id);
    assert_eq!(
        logged[0].value.as_ref(),
        broken.as_bytes(),
        "the raw body is kept"
    );
    // `askpro events show` still shows it, read from the log.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_askpro"))
        .args(["events", "show", &event_id.to_string(), "--json"])
        .args(["--data-dir".as_ref(), dir.path().as_os_str()])
        .current_dir(dir.path())
        .env_remove("ASKPRO_CONFIG")
        .env("ASKPRO_LOG__PARTITIONS", "4")
        .output()
        .expect("run askpro");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "events show failed: {stderr}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["payload"], broken, "{shown}");
}

#[tokio::test]
async fn unknown_company_is_404_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let body = retell_body("call_ended", "call_x", "+49301234572");
    for company in [CompanyId::new().to_string(), "not-a-uuid".to_owned()] {
        let path = format!("/webhooks/retell/{company}");
        let (status, reply) = json_body(
            server
                .post_raw(&path, &body, Some(("x-retell-signature", "v=1,d=00")))
                .await,
        )
        .await;
        assert_eq!(status, 404, "{reply}");
        assert_eq!(reply["error"]["code"], "unknown_company");
    }
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn account_level_url_routes_by_number_or_keeps_unrouted() {
    let server = TestServer::start_with(
        |c| c.retell.global_secret = "key_account".into(),
        Default::default(),
    )
    .await;
    let t = tenant(server.store.as_ref(), "routed", "+49301234573").await;
    let routed = retell_body("call_ended", "call_routed", "+49 30 1234573");
    let signature = askpro::signature::sign_retell("key_account", routed.as_bytes(), now_ms());
    let response = server
        .post_raw(
            "/webhooks/retell",
            &routed,
            Some(("x-retell-signature", &signature)),
        )
        .await;
    assert_eq!(response.status(), 202);
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(events[0].status, EventStatus::Processed);
    assert_eq!(events[0].secret_id, "global");

    let stray = retell_body("call_ended", "call_stray", "+49301239999");
    let signature = askpro::signature::sign_retell("key_account", stray.as_bytes(), now_ms());
    let response = server
        .post_raw(
            "/webhooks/retell",
            &stray,
            Some(("x-retell-signature", &signature)),
        )
        .await;
    assert_eq!(
        response.status(),
        202,
        "stored, so the provider does not retry forever"
    );
    let unrouted = server.settled_events(CompanyId::UNROUTED, 1).await;
    assert_eq!(unrouted[0].status, EventStatus::Unrouted);
    assert!(unrouted[0]
        .error
        .as_deref()
        .unwrap()
        .contains("+49301239999"));
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn calcom_webhooks_upsert_the_appointment_in_any_order() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "cal", "+49301234574").await;
    let fixture = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    // The cancellation (createdAt 2024-01-12) arrives before the creation (2024-01-10).
    let cancelled = fixture("calcom_BOOKING_CANCELLED_docs-example.json");
    let created = fixture("calcom_BOOKING_CREATED_docs-example.json");
    for body in [&cancelled, &created] {
        let response = server.post_calcom(t.company, body, &t.calcom_secret).await;
        assert_eq!(response.status(), 202);
    }
    let events = server.settled_events(t.company, 2).await;
    assert_eq!(count(&events, EventStatus::Processed), 2, "{events:?}");
    let appointment = server
        .store
        .appointment_by_calcom_uid(t.company, "abc123-def456")
        .await
        .unwrap()
        .expect("appointment stored");
    assert_eq!(
        appointment.status.as_str(),
        "cancelled",
        "the older creation must not resurrect it"
    );

    let unsigned = server
        .post_raw(
            &format!("/webhooks/calcom/{}", t.company),
            &created,
            Some(("x-cal-signature-256", "no-secret-provided")),
        )
        .await;
    assert_eq!(unsigned.status(), 401);
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn call_events_out_of_order_keep_the_newest_state() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "order", "+49301234575").await;
    for event in ["call_analyzed", "call_started"] {
        let body = retell_body(event, "call_order", &t.phone);
        assert_eq!(
            server
                .post_retell(t.company, &body, &t.retell_secret)
                .await
                .status(),
            202
        );
    }
    server.settled_events(t.company, 2).await;
    let call = server
        .store
        .call(t.company, "call_order")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.last_event, "call_analyzed");
    assert_eq!(call.summary.as_deref(), Some("summary of call_order"));
    assert_eq!(call.status, "ended");
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn reschedule_closes_the_original_and_schedules_its_successor() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "resched", "+49301234576").await;
    // Real Cal.com semantics: `uid` is the new booking and `rescheduleUid` the original (the
    // docs example in tests/fixtures has the two the other way round).
    let created = serde_json::json!({
        "triggerEvent": "BOOKING_CREATED", "createdAt": "2026-12-01T09:00:00.000Z",
        "payload": {"uid": "orig-1", "startTime": "2026-12-10T10:00:00.000Z",
                    "endTime": "2026-12-10T10:30:00.000Z",
                    "attendees": [{"name": "Max", "email": "max@example.com"}]}
    });
    let rescheduled = serde_json::json!({
        "triggerEvent": "BOOKING_RESCHEDULED", "createdAt": "2026-12-02T09:00:00.000Z",
        "payload": {"uid": "new-1", "rescheduleUid": "orig-1",
                    "startTime": "2026-12-11T14:00:00.000Z", "endTime": "2026-12-11T14:30:00.000Z",
                    "attendees": [{"name": "Max"}]}
    });
    for body in [rescheduled.to_string(), created.to_string()] {
        assert_eq!(
            server
                .post_calcom(t.company, &body, &t.calcom_secret)
                .await
                .status(),
            202
        );
    }
    let events = server.settled_events(t.company, 2).await;
    assert_eq!(count(&events, EventStatus::Processed), 2, "{events:?}");
    let original = server
        .store
        .appointment_by_calcom_uid(t.company, "orig-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        original.status.as_str(),
        "cancelled",
        "the late creation must not revive it"
    );
    assert_eq!(original.rescheduled_to_uid.as_deref(), Some("new-1"));
    let successor = server
        .store
        .appointment_by_calcom_uid(t.company, "new-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(successor.status.as_str(), "scheduled");
    assert_eq!(
        successor.start_at.unwrap().to_rfc3339(),
        "2026-12-11T14:00:00+00:00"
    );
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn an_unreadable_caller_number_does_not_cost_the_call_record() {
    let server = TestServer::start().await;
    let t = tenant(server.store.as_ref(), "oddcaller", "+49301234577").await;
    let body =
        retell_body("call_ended", "call_odd", &t.phone).replace("\"anonymous\"", "\"+1 555 0100\"");
    assert_eq!(
        server
            .post_retell(t.company, &body, &t.retell_secret)
            .await
            .status(),
        202
    );
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(
        events[0].status,
        EventStatus::Processed,
        "{:?}",
        events[0].error
    );
    let call = server
        .store
        .call(t.company, "call_odd")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.from_number, None, "never guessed");
    assert_eq!(call.branch_id, Some(t.branch));
    server.stop().await.0.unwrap();
}

//! Retell `call_inbound` (`POST /webhooks/retell/inbound`): synchronous routing by number.

use std::collections::BTreeMap;
use std::time::Duration;

use askpro::app::RunOptions;
use askpro::signature::sign_retell;
use askpro_actors::catalog::Service;
use askpro_actors::domain::{Branch, Company, EventStatus};
use askpro_actors::{BranchId, CompanyId, Provider, StateStore};
use serde_json::{json, Value};

use crate::harness::*;

const PATH: &str = "/webhooks/retell/inbound";
const GLOBAL: &str = "key_account_inbound";

/// A company with a branch answered by `agent`, two services and a Retell secret.
struct Routed {
    company: CompanyId,
    branch: Branch,
    secret: String,
}

async fn routed_tenant(store: &dyn StateStore, phone: &str, agent: Option<&str>) -> Routed {
    let company = Company {
        id: CompanyId::new(),
        name: "Salon Berlin".into(),
        allow_unsigned_calcom: false,
        created_at: chrono::Utc::now(),
    };
    store.create_company(&company).await.expect("company");
    let branch = Branch {
        id: BranchId::new(),
        company_id: company.id,
        name: "Mitte".into(),
        phone: phone.into(),
        timezone: "Europe/Berlin".into(),
        retell_agent_id: agent.map(str::to_owned),
        retell_llm_id: None,
        calcom: None,
        created_at: chrono::Utc::now(),
        fallback_email: None,
    };
    store.create_branch(&branch).await.expect("branch");
    for (name, active) in [
        ("Herrenhaarschnitt", true),
        ("Dauerwelle", false),
        ("Färben", true),
    ] {
        let service = Service {
            company_id: company.id,
            id: uuid::Uuid::now_v7(),
            branch_id: None,
            name: name.into(),
            duration_minutes: 30,
            price_cents: 2_500,
            currency: "EUR".into(),
            calcom_event_type_id: None,
            active,
            metadata: BTreeMap::new(),
            created_at: chrono::Utc::now(),
        };
        store.create_service(&service).await.expect("service");
    }
    let secret = format!("key_{}", uuid::Uuid::now_v7().simple());
    add_secret(store, company.id, Provider::Retell, "sec_inbound", &secret).await;
    Routed {
        company: company.id,
        branch,
        secret,
    }
}

/// The request as Retell sends it (shape of the upstream fixture).
fn inbound_body(to_number: &str) -> String {
    json!({
        "event": "call_inbound",
        "call_inbound": {
            "agent_id": "agent_default",
            "agent_version": 3,
            "from_number": "+491511234567",
            "to_number": to_number,
        }
    })
    .to_string()
}

async fn post_inbound(server: &TestServer, body: &str, secret: &str, at_ms: i64) -> (u16, Value) {
    let signature = sign_retell(secret, body.as_bytes(), at_ms);
    let response = server
        .post_raw(PATH, body, Some(("x-retell-signature", &signature)))
        .await;
    json_body(response).await
}

async fn with_global() -> TestServer {
    TestServer::start_with(
        |c| {
            c.retell.global_secret = GLOBAL.into();
            c.inbound.version_poll_ms = 50;
        },
        RunOptions::default(),
    )
    .await
}

#[tokio::test]
async fn a_known_number_gets_its_agent_and_variables_under_call_inbound() {
    let server = with_global().await;
    let t = routed_tenant(server.store.as_ref(), "+49301234580", Some("agent_mitte")).await;
    let body = inbound_body("+49301234580");
    let expected = json!({"call_inbound": {
        "override_agent_id": "agent_mitte",
        "dynamic_variables": {
            "company_name": "Salon Berlin",
            "branch_name": "Mitte",
            "timezone": "Europe/Berlin",
            "services": "Herrenhaarschnitt, Färben",
        },
    }});
    // The tenant's own secret and the account-level one both verify.
    for secret in [t.secret.as_str(), GLOBAL] {
        let (status, reply) = post_inbound(&server, &body, secret, now_ms()).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply, expected);
    }
    assert_eq!(
        server
            .metric("askproai_inbound_total{outcome=\"routed\"}")
            .await,
        2.0
    );
    assert!(
        server
            .metric("askproai_inbound_resolve_seconds_count{cache=\"hit\"}")
            .await
            >= 1.0
    );
    // Routing is a read: nothing was appended for the tenant.
    let events = server.store.events(t.company, None, 10).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_branch_without_agent_gets_variables_but_no_override() {
    let server = TestServer::start().await;
    let t = routed_tenant(server.store.as_ref(), "+49301234581", None).await;
    let (status, reply) = post_inbound(
        &server,
        &inbound_body("+49 30 1234581"),
        &t.secret,
        now_ms(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["call_inbound"].get("override_agent_id").is_none(),
        "{reply}"
    );
    assert_eq!(
        reply["call_inbound"]["dynamic_variables"]["branch_name"],
        "Mitte"
    );
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn an_unknown_number_gets_no_override_and_is_kept_unrouted() {
    let server = with_global().await;
    let (status, reply) =
        post_inbound(&server, &inbound_body("+49301239990"), GLOBAL, now_ms()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"call_inbound": {}}));
    let unrouted = server.settled_events(CompanyId::UNROUTED, 1).await;
    assert_eq!(unrouted[0].status, EventStatus::Unrouted);
    assert_eq!(unrouted[0].event_type, "call_inbound");
    assert_eq!(unrouted[0].secret_id, "global");
    assert!(unrouted[0]
        .error
        .as_deref()
        .unwrap()
        .contains("+49301239990"));
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn an_unknown_number_without_a_global_secret_cannot_be_verified() {
    let server = TestServer::start().await;
    let (status, reply) =
        post_inbound(&server, &inbound_body("+49301239991"), "whatever", now_ms()).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"]["code"], "no_secret");
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn bad_or_stale_signatures_are_refused_and_nothing_is_stored() {
    let server = with_global().await;
    let t = routed_tenant(server.store.as_ref(), "+49301234582", Some("agent_x")).await;
    let known = inbound_body("+49301234582");
    let unknown = inbound_body("+49301239992");
    let stale = now_ms() - 10 * 60 * 1000;
    let cases = [
        (&known, "not-the-secret", now_ms()),
        (&known, t.secret.as_str(), stale),
        (&unknown, "not-the-secret", now_ms()),
        (&unknown, GLOBAL, stale),
    ];
    for (body, secret, at) in cases {
        let (status, reply) = post_inbound(&server, body, secret, at).await;
        assert_eq!(status, 401, "{reply}");
        assert_eq!(reply["error"]["code"], "bad_signature");
    }
    let unsigned = server.post_raw(PATH, &known, None).await;
    assert_eq!(unsigned.status(), 401);
    assert!(json_body(unsigned).await.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-retell-signature"));
    assert_eq!(
        server
            .metric("askproai_inbound_total{outcome=\"unauthorized\"}")
            .await,
        5.0
    );
    // A later valid unrouted request settles; nothing from the refused ones was stored.
    let (status, _) = post_inbound(&server, &unknown, GLOBAL, now_ms()).await;
    assert_eq!(status, 200);
    let unrouted = server.settled_events(CompanyId::UNROUTED, 1).await;
    assert_eq!(unrouted.len(), 1);
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_missing_or_invalid_to_number_is_a_bad_request_naming_the_field() {
    let server = with_global().await;
    let bodies = [
        json!({"event": "call_inbound", "call_inbound": {"from_number": "+491511234567"}}),
        json!({"event": "call_inbound"}),
        json!({"event": "call_inbound", "call_inbound": {"to_number": 49301234583_i64}}),
        json!({"event": "call_inbound", "call_inbound": {"to_number": "anonymous"}}),
    ];
    for body in bodies.iter().map(Value::to_string) {
        let (status, reply) = post_inbound(&server, &body, GLOBAL, now_ms()).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_call_inbound");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("call_inbound.to_number"), "{message}");
    }
    // What can be verified is verified first: a wrong signature is a 401, not a 400.
    let body = bodies[0].to_string();
    let (status, _) = post_inbound(&server, &body, "not-the-secret", now_ms()).await;
    assert_eq!(status, 401);
    let too_big = inbound_body(&"9".repeat(300 * 1024));
    let (status, reply) = post_inbound(&server, &too_big, GLOBAL, now_ms()).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(
        server
            .metric("askproai_inbound_total{outcome=\"bad_request\"}")
            .await,
        4.0
    );
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn a_phone_change_by_another_process_reaches_the_cache() {
    let server = with_global().await;
    let mut t = routed_tenant(server.store.as_ref(), "+49301234584", Some("agent_move")).await;
    let (old, new) = (inbound_body("+49301234584"), inbound_body("+49301234585"));
    let (status, reply) = post_inbound(&server, &old, &t.secret, now_ms()).await;
    assert_eq!(status, 200);
    assert_eq!(reply["call_inbound"]["override_agent_id"], "agent_move");

    // The test's own store handle stands in for the CLI: the server is not told directly.
    t.branch.phone = "+49301234585".into();
    server.store.update_branch(&t.branch).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Signed with the global secret, which verifies both routed and unrouted numbers.
        let (status, reply) = post_inbound(&server, &old, GLOBAL, now_ms()).await;
        assert_eq!(status, 200, "{reply}");
        if reply == json!({"call_inbound": {}}) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old number still routes: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, reply) = post_inbound(&server, &new, &t.secret, now_ms()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["call_inbound"]["override_agent_id"], "agent_move");
    let unrouted = server.settled_events(CompanyId::UNROUTED, 1).await;
    assert!(unrouted
        .iter()
        .all(|e| e.error.as_deref().unwrap().contains("+49301234584")));
    server.stop().await.0.unwrap();
}

#[tokio::test]
async fn the_company_route_still_takes_call_events_beside_the_inbound_route() {
    let server = with_global().await;
    let t = routed_tenant(server.store.as_ref(), "+49301234586", None).await;
    let body = retell_body("call_ended", "call_beside_inbound", "+49301234586");
    let (status, reply) = json_body(server.post_retell(t.company, &body, &t.secret).await).await;
    assert_eq!(status, 202, "{reply}");
    let events = server.settled_events(t.company, 1).await;
    assert_eq!(
        events[0].status,
        EventStatus::Processed,
        "{:?}",
        events[0].error
    );
    // A call event posted to the inbound URL by mistake is refused, not taken for a tenant.
    let (status, reply) = post_inbound(&server, &body, GLOBAL, now_ms()).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("call_ended"));
    server.stop().await.0.unwrap();
}

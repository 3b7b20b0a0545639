//! `askpro agent provision|deprovision` (the real binary) against the fake Retell API, with a
//! running server on the same data dir: one LLM and one agent however often it runs, the
//! number bound through `inbound_agents`, and `call_inbound` answering the stored agent.

use askpro::app::RunOptions;
use askpro::retell::{FakeRetell, FakeRetellConfig};
use askpro::signature::sign_retell;
use askpro_actors::domain::EventStatus;
use askpro_actors::Provider;
use serde_json::{json, Value};

use crate::harness::*;

const API_KEY: &str = "key_retell_api";
const TOOLS: [&str; 5] = [
    "check_availability",
    "book_appointment",
    "find_appointment",
    "reschedule_appointment",
    "cancel_appointment",
];

struct Setup {
    server: TestServer,
    fake: FakeRetell,
    tenant: Tenant,
}

async fn setup(phone: &str, with_key: bool) -> Setup {
    let server =
        TestServer::start_with(|c| c.inbound.version_poll_ms = 50, RunOptions::default()).await;
    let tenant = tenant(server.store.as_ref(), "Salon", phone).await;
    if with_key {
        add_secret(
            server.store.as_ref(),
            tenant.company,
            Provider::RetellApi,
            "sec_api_1",
            API_KEY,
        )
        .await;
    }
    let fake = FakeRetell::start(FakeRetellConfig {
        api_key: Some(API_KEY.into()),
        phone_numbers: vec![phone.to_owned()],
    })
    .await
    .expect("fake retell");
    Setup {
        server,
        fake,
        tenant,
    }
}

impl Setup {
    fn public(&self) -> String {
        self.server.url("")
    }

    async fn agent_cmd(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_askpro"))
            .arg("agent")
            .args(args)
            .args(["--branch", &self.tenant.branch.to_string()])
            .args(["--retell-base-url", &self.fake.base_url()])
            .arg("--data-dir")
            .arg(self.server.dir.path())
            .env("ASKPRO_LOG__PARTITIONS", "4")
            .env_remove("ASKPRO_CONFIG")
            .output()
            .await
            .expect("run askpro agent")
    }

    async fn provision(&self) -> Value {
        let public = self.public();
        let out = self
            .agent_cmd(&["provision", "--json", "--public-url", &public])
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "provision failed: {stderr}");
        serde_json::from_slice(&out.stdout).expect("provision prints json")
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
}

#[tokio::test]
async fn provisioning_twice_makes_one_agent_and_one_llm_and_binds_the_number() {
    let s = setup("+49301234591", true).await;
    let first = s.provision().await;
    for step in ["/llm/action", "/agent/action"] {
        assert_eq!(text(&first, step), "created", "{first}");
    }
    assert_eq!(text(&first, "/phone/action"), "updated", "{first}");
    assert_eq!(first["service"]["created"], true, "{first}");
    let writes = s.fake.writes();

    let second = s.provision().await;
    for step in ["/llm/action", "/agent/action", "/phone/action"] {
        assert_eq!(text(&second, step), "unchanged", "{second}");
    }
    assert_eq!(second["service"]["created"], false, "{second}");
    assert_eq!(
        s.fake.writes(),
        writes,
        "a second run writes nothing at Retell"
    );
    let (agent_id, llm_id) = (text(&first, "/agent/id"), text(&first, "/llm/id"));
    assert_eq!(text(&second, "/agent/id"), agent_id);
    assert_eq!(text(&second, "/llm/id"), llm_id);
    assert_eq!(s.fake.agents().len(), 1);
    assert_eq!(s.fake.llms().len(), 1);

    let company = s.tenant.company;
    let public = s.public();
    let agent = serde_json::to_value(&s.fake.agents()[0]).unwrap();
    assert_eq!(text(&agent, "/response_engine/llm_id"), llm_id);
    assert_eq!(text(&agent, "/timezone"), "Europe/Berlin");
    assert_eq!(text(&agent, "/language"), "de-DE");
    assert_eq!(
        text(&agent, "/webhook_url"),
        format!("{public}/webhooks/retell/{company}")
    );
    let analysis: Vec<&str> = agent["post_call_analysis_data"]
        .as_array()
        .expect("analysis")
        .iter()
        .map(|item| item["name"].as_str().unwrap_or_default())
        .collect();
    for key in [
        "appointment_made",
        "appointment_date_time",
        "caller_full_name",
    ] {
        assert!(analysis.contains(&key), "{key} missing in {analysis:?}");
    }
    let llm = serde_json::to_value(&s.fake.llms()[0]).unwrap();
    let tools = llm["general_tools"].as_array().expect("tools");
    let urls: Vec<(&str, &str)> = tools
        .iter()
        .map(|t| (text(t, "/name"), text(t, "/url")))
        .collect();
    let expected: Vec<(&str, String)> = TOOLS
        .iter()
        .map(|t| {
            (
                *t,
                format!("{public}/webhooks/retell/{company}/functions/{t}"),
            )
        })
        .collect();
    assert_eq!(
        urls,
        expected
            .iter()
            .map(|(t, u)| (*t, u.as_str()))
            .collect::<Vec<_>>()
    );
    for tool in tools {
        assert_eq!(tool["type"], "custom");
        assert_eq!(tool["parameters"]["type"], "object", "{tool}");
    }

    let phone = s.fake.phone(&s.tenant.phone).expect("number");
    assert_eq!(phone.inbound_agents.len(), 1);
    assert_eq!(phone.inbound_agents[0].agent_id, agent_id);
    assert_eq!(phone.inbound_agents[0].weight, 1.0);
    assert_eq!(
        phone.inbound_webhook_url.as_deref(),
        Some(format!("{public}/webhooks/retell/inbound").as_str())
    );

    let branch = s
        .server
        .store
        .branch(company, s.tenant.branch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(branch.retell_agent_id.as_deref(), Some(agent_id));
    assert_eq!(branch.retell_llm_id.as_deref(), Some(llm_id));
    let services = s.server.store.services(company).await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].name, "Standardberatung");
    let events = s.server.settled_events(company, 1).await;
    assert_eq!(events[0].event_type, "default_service_created");
    assert_eq!(events[0].status, EventStatus::Processed, "{:?}", events[0]);
}

#[tokio::test]
async fn call_inbound_answers_the_provisioned_agent() {
    let s = setup("+49301234592", true).await;
    let done = s.provision().await;
    let body = json!({"event": "call_inbound", "call_inbound": {
        "from_number": "+4917612345678", "to_number": s.tenant.phone}})
    .to_string();
    let signature = sign_retell(&s.tenant.retell_secret, body.as_bytes(), now_ms());
    let response = s
        .server
        .post_raw(
            "/webhooks/retell/inbound",
            &body,
            Some(("x-retell-signature", &signature)),
        )
        .await;
    let (status, answer) = json_body(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        text(&answer, "/call_inbound/override_agent_id"),
        text(&done, "/agent/id"),
        "{answer}"
    );
}

#[tokio::test]
async fn lost_ids_are_found_again_by_listing() {
    let s = setup("+49301234593", true).await;
    let first = s.provision().await;
    let store = s.server.store.as_ref();
    let mut branch = store
        .branch(s.tenant.company, s.tenant.branch)
        .await
        .unwrap()
        .unwrap();
    branch.retell_agent_id = None;
    branch.retell_llm_id = None;
    store.update_branch(&branch).await.unwrap();

    let again = s.provision().await;
    assert_eq!(
        text(&again, "/agent/id"),
        text(&first, "/agent/id"),
        "{again}"
    );
    assert_eq!(text(&again, "/llm/id"), text(&first, "/llm/id"), "{again}");
    assert_eq!(text(&again, "/agent/action"), "unchanged", "{again}");
    assert_eq!((s.fake.agents().len(), s.fake.llms().len()), (1, 1));
}

#[tokio::test]
async fn deprovision_unbinds_and_deletes_and_a_missing_key_is_named() {
    let s = setup("+49301234594", true).await;
    s.provision().await;
    let out = s.agent_cmd(&["deprovision", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.fake.agents().is_empty() && s.fake.llms().is_empty());
    assert!(s
        .fake
        .phone(&s.tenant.phone)
        .unwrap()
        .inbound_agents
        .is_empty());
    let branch = s
        .server
        .store
        .branch(s.tenant.company, s.tenant.branch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((branch.retell_agent_id, branch.retell_llm_id), (None, None));

    let keyless = setup("+49301234595", false).await;
    let public = keyless.public();
    let out = keyless
        .agent_cmd(&["provision", "--public-url", &public])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--provider retell-api"), "{stderr}");
    assert!(!stderr.contains(API_KEY), "{stderr}");
}

use serde_json::{json, Value};

use super::{FakeRetell, FakeRetellConfig};

const KEY: &str = "key_test";
const NUMBER: &str = "+493012345678";

async fn fake() -> FakeRetell {
    FakeRetell::start(FakeRetellConfig {
        api_key: Some(KEY.into()),
        phone_numbers: vec![NUMBER.into()],
    })
    .await
    .expect("fake starts")
}

async fn send(fake: &FakeRetell, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", fake.base_url());
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, url).bearer_auth(KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn llm_and_agent(fake: &FakeRetell) -> (String, String) {
    let (status, llm) = send(
        fake,
        "POST",
        "/create-retell-llm",
        Some(json!({"general_prompt": "hi"})),
    )
    .await;
    assert_eq!(status, 201, "{llm}");
    let llm_id = llm["llm_id"].as_str().expect("llm_id").to_owned();
    let body = json!({"response_engine": {"type": "retell-llm", "llm_id": llm_id}, "voice_id": "11labs-Anna"});
    let (status, agent) = send(fake, "POST", "/create-agent", Some(body)).await;
    assert_eq!(status, 201, "{agent}");
    (
        llm_id,
        agent["agent_id"].as_str().expect("agent_id").to_owned(),
    )
}

fn message(body: &Value) -> &str {
    body["error_message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn refuses_the_removed_inbound_agent_id() {
    let fake = fake().await;
    let (_, agent) = llm_and_agent(&fake).await;
    let path = format!("/update-phone-number/{}", NUMBER.replace('+', "%2B"));
    let (status, body) = send(
        &fake,
        "PATCH",
        &path,
        Some(json!({"inbound_agent_id": agent})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("inbound_agents"), "{body}");
    assert!(fake
        .phone(NUMBER)
        .expect("number")
        .inbound_agents
        .is_empty());

    let bound = json!({"inbound_agents": [{"agent_id": agent, "weight": 1}]});
    let (status, body) = send(&fake, "PATCH", &path, Some(bound)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["inbound_agents"][0]["agent_id"], agent.as_str());
}

#[tokio::test]
async fn refuses_unknown_fields() {
    let fake = fake().await;
    let (llm_id, agent) = llm_and_agent(&fake).await;
    let cases = [
        (
            "POST",
            "/create-retell-llm".to_owned(),
            json!({"general_promt": "typo"}),
        ),
        (
            "PATCH",
            format!("/update-agent/{agent}"),
            json!({"time_zone": "Europe/Berlin"}),
        ),
        (
            "POST",
            "/create-agent".to_owned(),
            json!({"response_engine": {"type": "retell-llm", "llm_id": llm_id, "extra": 1}, "voice_id": "v"}),
        ),
    ];
    for (method, path, body) in cases {
        let (status, answer) = send(&fake, method, &path, Some(body)).await;
        assert_eq!(status, 400, "{method} {path}: {answer}");
        assert!(message(&answer).contains("unknown field"), "{answer}");
    }
}

#[tokio::test]
async fn create_agent_needs_an_existing_llm_and_a_voice() {
    let fake = fake().await;
    let (llm_id, _) = llm_and_agent(&fake).await;
    let cases = [
        json!({"response_engine": {"type": "retell-llm", "llm_id": "llm_missing"}, "voice_id": "v"}),
        json!({"response_engine": {"type": "retell-llm", "llm_id": llm_id}}),
        json!({"voice_id": "v"}),
        json!({"response_engine": {"type": "retell-llm", "llm_id": llm_id}, "voice_id": "v", "timezone": "Berlin"}),
    ];
    for body in cases {
        let (status, answer) = send(&fake, "POST", "/create-agent", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    assert_eq!(fake.agents().len(), 1);
}

#[tokio::test]
async fn inbound_agents_must_exist_and_weigh_one() {
    let fake = fake().await;
    let (_, agent) = llm_and_agent(&fake).await;
    let path = format!("/update-phone-number/{}", NUMBER.replace('+', "%2B"));
    for agents in [
        json!([{"agent_id": agent, "weight": 0.5}]),
        json!([{"agent_id": "agent_missing", "weight": 1}]),
    ] {
        let (status, body) = send(
            &fake,
            "PATCH",
            &path,
            Some(json!({"inbound_agents": agents})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }
}

#[tokio::test]
async fn refuses_removed_calcom_tools_and_wrong_keys() {
    let fake = fake().await;
    let tool = json!({"type": "check_availability_cal", "name": "check"});
    let (status, body) = send(
        &fake,
        "POST",
        "/create-retell-llm",
        Some(json!({"general_tools": [tool]})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("custom"), "{body}");

    let response = reqwest::Client::new()
        .get(format!("{}/list-agents", fake.base_url()))
        .bearer_auth("key_wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_llm_in_use_is_not_deleted() {
    let fake = fake().await;
    let (llm_id, agent) = llm_and_agent(&fake).await;
    let (status, _) = send(
        &fake,
        "DELETE",
        &format!("/delete-retell-llm/{llm_id}"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(&fake, "DELETE", &format!("/delete-agent/{agent}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = send(
        &fake,
        "DELETE",
        &format!("/delete-retell-llm/{llm_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(fake.llms().is_empty());
}

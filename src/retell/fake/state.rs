//! The fake's memory: LLMs, agents and phone numbers, and the rules that tie them together
//! (an agent's LLM exists, a number's agents exist, an LLM in use is not deleted).

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::wire::{check_weights, AgentBody, CreatePhoneBody, LlmBody, PhoneBody, WeightedAgent};

/// An error answer: Retell answers `{"error_message": ..}` with the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} {id} not found"),
        }
    }
}

pub type Answer<T> = Result<T, Refusal>;

/// A Retell LLM as `get-retell-llm` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FakeLlm {
    pub llm_id: String,
    pub version: u64,
    pub is_published: bool,
    pub last_modification_timestamp: i64,
    #[serde(flatten)]
    pub body: LlmBody,
}

/// An agent as `get-agent` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FakeAgent {
    pub agent_id: String,
    pub version: u64,
    pub is_published: bool,
    pub last_modification_timestamp: i64,
    #[serde(flatten)]
    pub body: AgentBody,
}

/// A phone number as `get-phone-number` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FakePhone {
    pub phone_number: String,
    pub phone_number_type: String,
    pub inbound_agents: Vec<WeightedAgent>,
    pub outbound_agents: Vec<WeightedAgent>,
    pub inbound_webhook_url: Option<String>,
    pub nickname: Option<String>,
    pub last_modification_timestamp: i64,
}

/// Everything the fake holds; `writes` counts accepted creates, updates and deletes, so a
/// test can prove that a second provisioning run wrote nothing.
#[derive(Debug, Default)]
pub struct FakeState {
    pub llms: BTreeMap<String, FakeLlm>,
    pub agents: BTreeMap<String, FakeAgent>,
    pub phones: BTreeMap<String, FakePhone>,
    pub writes: u64,
}

pub struct Shared {
    pub api_key: Option<String>,
    state: Mutex<FakeState>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// `patch`'s present fields over `base` (Retell's PATCH semantics: absent means unchanged).
fn overlay<T: Serialize + serde::de::DeserializeOwned>(base: &T, patch: &T) -> Answer<T> {
    let mut merged = serde_json::to_value(base).map_err(internal)?;
    let patch = serde_json::to_value(patch).map_err(internal)?;
    if let (Some(target), Some(fields)) = (merged.as_object_mut(), patch.as_object()) {
        for (key, value) in fields {
            target.insert(key.clone(), value.clone());
        }
    }
    serde_json::from_value(merged).map_err(internal)
}

fn internal(err: serde_json::Error) -> Refusal {
    Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("fake retell: {err}"),
    }
}

impl Shared {
    pub fn new(api_key: Option<String>, phones: &[String]) -> Self {
        let mut state = FakeState::default();
        for number in phones {
            state
                .phones
                .insert(number.clone(), phone(number, None, None, Vec::new()));
        }
        Self {
            api_key,
            state: Mutex::new(state),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> Answer<T>) -> Answer<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    pub fn snapshot<T>(&self, f: impl FnOnce(&FakeState) -> T) -> T {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    pub fn create_llm(&self, body: LlmBody) -> Answer<FakeLlm> {
        check_tools(&body)?;
        self.with(|s| {
            let llm = FakeLlm {
                llm_id: new_id("llm_"),
                version: 0,
                is_published: false,
                last_modification_timestamp: now_ms(),
                body,
            };
            s.llms.insert(llm.llm_id.clone(), llm.clone());
            s.writes += 1;
            Ok(llm)
        })
    }

    pub fn update_llm(&self, id: &str, patch: LlmBody) -> Answer<FakeLlm> {
        check_tools(&patch)?;
        self.with(|s| {
            let llm = s
                .llms
                .get_mut(id)
                .ok_or_else(|| Refusal::not_found("llm", id))?;
            llm.body = overlay(&llm.body, &patch)?;
            llm.last_modification_timestamp = now_ms();
            s.writes += 1;
            Ok(llm.clone())
        })
    }

    pub fn llm(&self, id: &str) -> Answer<FakeLlm> {
        self.with(|s| {
            s.llms
                .get(id)
                .cloned()
                .ok_or_else(|| Refusal::not_found("llm", id))
        })
    }

    pub fn delete_llm(&self, id: &str) -> Answer<()> {
        self.with(|s| {
            if let Some(agent) = s.agents.values().find(|a| uses_llm(a, id)) {
                return Err(Refusal::bad_request(format!(
                    "llm {id} is used by agent {}; delete or repoint the agent first",
                    agent.agent_id
                )));
            }
            s.llms
                .remove(id)
                .ok_or_else(|| Refusal::not_found("llm", id))?;
            s.writes += 1;
            Ok(())
        })
    }

    pub fn create_agent(&self, body: AgentBody) -> Answer<FakeAgent> {
        body.check().map_err(Refusal::bad_request)?;
        let Some(engine) = &body.response_engine else {
            return Err(Refusal::bad_request("response_engine is required"));
        };
        if body.voice_id.as_deref().is_none_or(str::is_empty) {
            return Err(Refusal::bad_request("voice_id is required"));
        }
        let llm_id = engine.llm_id.clone().unwrap_or_default();
        self.with(|s| {
            known_llm(s, &llm_id)?;
            let agent = FakeAgent {
                agent_id: new_id("agent_"),
                version: 0,
                is_published: false,
                last_modification_timestamp: now_ms(),
                body,
            };
            s.agents.insert(agent.agent_id.clone(), agent.clone());
            s.writes += 1;
            Ok(agent)
        })
    }

    pub fn update_agent(&self, id: &str, patch: AgentBody) -> Answer<FakeAgent> {
        patch.check().map_err(Refusal::bad_request)?;
        if patch.voice_id.as_deref() == Some("") {
            return Err(Refusal::bad_request("voice_id must not be empty"));
        }
        self.with(|s| {
            if let Some(llm_id) = patch
                .response_engine
                .as_ref()
                .and_then(|e| e.llm_id.as_deref())
            {
                known_llm(s, llm_id)?;
            }
            let agent = s
                .agents
                .get_mut(id)
                .ok_or_else(|| Refusal::not_found("agent", id))?;
            agent.body = overlay(&agent.body, &patch)?;
            agent.last_modification_timestamp = now_ms();
            s.writes += 1;
            Ok(agent.clone())
        })
    }

    pub fn agent(&self, id: &str) -> Answer<FakeAgent> {
        self.with(|s| {
            s.agents
                .get(id)
                .cloned()
                .ok_or_else(|| Refusal::not_found("agent", id))
        })
    }

    pub fn delete_agent(&self, id: &str) -> Answer<()> {
        self.with(|s| {
            s.agents
                .remove(id)
                .ok_or_else(|| Refusal::not_found("agent", id))?;
            // A number bound to a deleted agent no longer routes to it.
            for phone in s.phones.values_mut() {
                phone.inbound_agents.retain(|a| a.agent_id != id);
                phone.outbound_agents.retain(|a| a.agent_id != id);
            }
            s.writes += 1;
            Ok(())
        })
    }

    pub fn create_phone(&self, body: CreatePhoneBody) -> Answer<FakePhone> {
        if !is_e164(&body.phone_number) {
            return Err(Refusal::bad_request(format!(
                "phone_number `{}` is not E.164",
                body.phone_number
            )));
        }
        let agents = body.inbound_agents.unwrap_or_default();
        check_weights("inbound_agents", &agents).map_err(Refusal::bad_request)?;
        self.with(|s| {
            known_agents(s, &agents)?;
            if s.phones.contains_key(&body.phone_number) {
                return Err(Refusal {
                    status: StatusCode::CONFLICT,
                    message: format!("phone number {} already exists", body.phone_number),
                });
            }
            let created = phone(
                &body.phone_number,
                body.nickname,
                body.inbound_webhook_url,
                agents,
            );
            s.phones
                .insert(created.phone_number.clone(), created.clone());
            s.writes += 1;
            Ok(created)
        })
    }

    pub fn update_phone(&self, number: &str, patch: PhoneBody) -> Answer<FakePhone> {
        for (field, list) in [
            ("inbound_agents", &patch.inbound_agents),
            ("outbound_agents", &patch.outbound_agents),
        ] {
            check_weights(field, list.as_deref().unwrap_or_default())
                .map_err(Refusal::bad_request)?;
        }
        self.with(|s| {
            for list in [&patch.inbound_agents, &patch.outbound_agents]
                .into_iter()
                .flatten()
            {
                known_agents(s, list)?;
            }
            let phone = s
                .phones
                .get_mut(number)
                .ok_or_else(|| Refusal::not_found("phone number", number))?;
            if let Some(agents) = patch.inbound_agents {
                phone.inbound_agents = agents;
            }
            if let Some(agents) = patch.outbound_agents {
                phone.outbound_agents = agents;
            }
            if let Some(url) = patch.inbound_webhook_url {
                phone.inbound_webhook_url = url;
            }
            if let Some(nickname) = patch.nickname {
                phone.nickname = Some(nickname);
            }
            phone.last_modification_timestamp = now_ms();
            s.writes += 1;
            Ok(phone.clone())
        })
    }

    pub fn phone(&self, number: &str) -> Answer<FakePhone> {
        self.with(|s| {
            s.phones
                .get(number)
                .cloned()
                .ok_or_else(|| Refusal::not_found("phone number", number))
        })
    }
}

fn phone(
    number: &str,
    nickname: Option<String>,
    inbound_webhook_url: Option<String>,
    inbound_agents: Vec<WeightedAgent>,
) -> FakePhone {
    FakePhone {
        phone_number: number.to_owned(),
        phone_number_type: "retell-twilio".into(),
        inbound_agents,
        outbound_agents: Vec::new(),
        inbound_webhook_url,
        nickname,
        last_modification_timestamp: now_ms(),
    }
}

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
    })
}

fn uses_llm(agent: &FakeAgent, llm_id: &str) -> bool {
    agent
        .body
        .response_engine
        .as_ref()
        .and_then(|e| e.llm_id.as_deref())
        == Some(llm_id)
}

fn known_llm(state: &FakeState, llm_id: &str) -> Answer<()> {
    match state.llms.contains_key(llm_id) {
        true => Ok(()),
        false => Err(Refusal::bad_request(format!(
            "response_engine.llm_id {llm_id} does not exist"
        ))),
    }
}

fn known_agents(state: &FakeState, agents: &[WeightedAgent]) -> Answer<()> {
    match agents
        .iter()
        .find(|a| !state.agents.contains_key(&a.agent_id))
    {
        Some(missing) => Err(Refusal::bad_request(format!(
            "agent {} does not exist",
            missing.agent_id
        ))),
        None => Ok(()),
    }
}

fn check_tools(body: &LlmBody) -> Answer<()> {
    let tools = body.general_tools.as_deref().unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    for (i, tool) in tools.iter().enumerate() {
        tool.check(i).map_err(Refusal::bad_request)?;
        if !names.insert(tool.name.as_str()) {
            return Err(Refusal::bad_request(format!(
                "general_tools[{i}].name `{}` appears twice",
                tool.name
            )));
        }
    }
    Ok(())
}

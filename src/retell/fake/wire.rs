//! The request bodies the fake accepts, with Retell's field names (docs.retellai.com API
//! reference, SDK `src/resources/{llm,agent,phone-number}.ts`). Every struct refuses unknown
//! fields, so a misspelt or invented field fails here instead of being ignored in production.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /create-retell-llm` and `PATCH /update-retell-llm/{id}` (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub general_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub begin_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_speaker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub general_tools: Option<Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_dynamic_variables: Option<BTreeMap<String, String>>,
}

/// One entry of `general_tools`. The `type` decides which fields are allowed; see
/// [`Tool::check`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speak_during_execution: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speak_after_execution: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_message_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_at_root: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_variables: Option<BTreeMap<String, String>>,
}

/// The tool types Retell removed (built-in Cal.com tools, refused since 2026-09-30).
const REMOVED_TOOL_TYPES: &[&str] = &["check_availability_cal", "book_appointment_cal"];
/// Tool types without a `url` of ours.
const BUILT_IN_TOOL_TYPES: &[&str] = &["end_call", "transfer_call", "press_digit"];
const TOOL_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;

impl Tool {
    /// Retell's rules for one tool, as a message naming the field.
    pub fn check(&self, index: usize) -> Result<(), String> {
        let at = format!("general_tools[{index}]");
        if REMOVED_TOOL_TYPES.contains(&self.kind.as_str()) {
            return Err(format!(
                "{at}.type `{}` was removed on 2026-09-30; use a `custom` tool",
                self.kind
            ));
        }
        if !valid_name(&self.name) {
            return Err(format!(
                "{at}.name `{}` must be 1..64 of a-z, A-Z, 0-9, _ and -",
                self.name
            ));
        }
        match self.kind.as_str() {
            "custom" => self.check_custom(&at),
            kind if BUILT_IN_TOOL_TYPES.contains(&kind) => Ok(()),
            kind => Err(format!("{at}.type `{kind}` is not a known tool type")),
        }
    }

    fn check_custom(&self, at: &str) -> Result<(), String> {
        let url = self.url.as_deref().unwrap_or_default();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("{at}.url must be an http(s) url, got `{url}`"));
        }
        if self
            .description
            .as_deref()
            .is_none_or(|d| d.trim().is_empty())
        {
            return Err(format!("{at}.description is required for a custom tool"));
        }
        if self.speak_after_execution.is_none() {
            return Err(format!(
                "{at}.speak_after_execution is required for a custom tool"
            ));
        }
        if let Some(timeout) = self.timeout_ms.filter(|t| !TOOL_TIMEOUT_MS.contains(t)) {
            return Err(format!(
                "{at}.timeout_ms must be 1000..=600000, got {timeout}"
            ));
        }
        if let Some(method) = self.method.as_deref().filter(|m| *m != "POST") {
            return Err(format!(
                "{at}.method `{method}`: tools with arguments are POST"
            ));
        }
        match &self.parameters {
            Some(schema) => check_parameters(schema).map_err(|e| format!("{at}.parameters {e}")),
            None => Ok(()),
        }
    }
}

/// `parameters` is a JSON Schema object: `{"type":"object","properties":{..},"required":[..]}`
/// whose required names are properties.
fn check_parameters(schema: &Value) -> Result<(), String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("must have \"type\": \"object\"".into());
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Err("must have an object `properties`".into());
    };
    for (name, property) in properties {
        if property.get("type").and_then(Value::as_str).is_none() {
            return Err(format!("property `{name}` has no type"));
        }
    }
    let required = schema.get("required").map_or(Some(Vec::new()), |r| {
        r.as_array()
            .map(|names| names.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .unwrap_or_default()
    });
    match required {
        Some(names) => match names.iter().find(|n| !properties.contains_key(**n)) {
            Some(missing) => Err(format!("requires `{missing}`, which is no property")),
            None => Ok(()),
        },
        None => Err("`required` must be an array of names".into()),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `response_engine` of an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseEngine {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// One `post_call_analysis_data` item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisItem {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
}

/// `POST /create-agent` and `PATCH /update-agent/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_engine: Option<ResponseEngine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_call_analysis_data: Option<Vec<AnalysisItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize_for_speech: Option<bool>,
}

const WEBHOOK_EVENTS: &[&str] = &[
    "call_started",
    "call_ended",
    "call_analyzed",
    "transcript_updated",
    "transfer_started",
    "transfer_bridged",
    "transfer_cancelled",
    "transfer_ended",
];
const ANALYSIS_TYPES: &[&str] = &["string", "enum", "boolean", "number"];

impl AgentBody {
    /// Field rules shared by create and update (create also needs the required fields).
    pub fn check(&self) -> Result<(), String> {
        if let Some(engine) = &self.response_engine {
            if engine.kind != "retell-llm" {
                return Err(format!(
                    "response_engine.type `{}`: this fake knows only retell-llm",
                    engine.kind
                ));
            }
            if engine.llm_id.as_deref().is_none_or(str::is_empty) {
                return Err("response_engine.llm_id is required for retell-llm".into());
            }
        }
        if let Some(zone) = &self.timezone {
            if zone.parse::<chrono_tz::Tz>().is_err() {
                return Err(format!("timezone `{zone}` is not an IANA time zone"));
            }
        }
        if let Some(language) = &self.language {
            if !valid_language(language) {
                return Err(format!(
                    "language `{language}` is not a language tag like de-DE"
                ));
            }
        }
        if let Some(unknown) = self
            .webhook_events
            .iter()
            .flatten()
            .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
        {
            return Err(format!("webhook_events: unknown event `{unknown}`"));
        }
        self.check_analysis()
    }

    fn check_analysis(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, item) in self.post_call_analysis_data.iter().flatten().enumerate() {
            let at = format!("post_call_analysis_data[{i}]");
            if !ANALYSIS_TYPES.contains(&item.kind.as_str()) {
                return Err(format!(
                    "{at}.type `{}` is not one of {ANALYSIS_TYPES:?}",
                    item.kind
                ));
            }
            if item.kind == "enum" && item.choices.as_ref().is_none_or(Vec::is_empty) {
                return Err(format!("{at}.choices is required for an enum"));
            }
            if !seen.insert(item.name.as_str()) {
                return Err(format!("{at}.name `{}` appears twice", item.name));
            }
        }
        Ok(())
    }
}

fn valid_language(tag: &str) -> bool {
    tag == "multi"
        || matches!(tag.split_once('-'), Some((lang, region))
            if lang.len() == 2 && region.len() == 2
                && lang.chars().all(|c| c.is_ascii_lowercase())
                && region.chars().all(|c| c.is_ascii_uppercase()))
}

/// One entry of `inbound_agents` / `outbound_agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedAgent {
    pub agent_id: String,
    pub weight: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<Value>,
}

/// `PATCH /update-phone-number/{number}` (and the optional part of the fake's create).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_agents: Option<Vec<WeightedAgent>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_agents: Option<Vec<WeightedAgent>>,
    /// `null` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_webhook_url: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
}

/// Fields removed on 2026-03-31, named so the refusal can say what to use instead.
pub const REMOVED_PHONE_FIELDS: &[&str] = &["inbound_agent_id", "outbound_agent_id"];

/// Weights of a non-empty list must sum to 1 (Retell splits traffic by them).
pub fn check_weights(field: &str, agents: &[WeightedAgent]) -> Result<(), String> {
    if agents.is_empty() {
        return Ok(());
    }
    if let Some(bad) = agents.iter().find(|a| !(a.weight > 0.0 && a.weight <= 1.0)) {
        return Err(format!(
            "{field}: weight {} of {} must be in (0, 1]",
            bad.weight, bad.agent_id
        ));
    }
    let sum: f64 = agents.iter().map(|a| a.weight).sum();
    if (sum - 1.0).abs() > 1e-9 {
        return Err(format!("{field}: weights must sum to 1, got {sum}"));
    }
    Ok(())
}

/// `POST /create-phone-number` in the fake: registers a number directly (the real endpoint
/// buys one by area code; tests and demos need a known number instead).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePhoneBody {
    pub phone_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_agents: Option<Vec<WeightedAgent>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_webhook_url: Option<String>,
}

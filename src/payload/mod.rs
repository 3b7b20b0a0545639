//! Parsing and schema validation of provider payloads.
//!
//! Bodies are parsed once into JSON, checked against the JSON Schemas in `schemas/json/`
//! (draft 2020-12, embedded at compile time, compiled once) and only then read. The schemas
//! require just what AskPro relies on, so a provider adding fields never breaks ingestion;
//! errors name the JSON pointer and the problem so the sender can fix its side.

use std::sync::LazyLock;

use askpro_actors::dedup::{body_key, calcom_key, retell_key};
use askpro_actors::handlers::{read_calcom_webhook, read_retell_event};
use askpro_actors::Provider;
use jsonschema::Validator;
use serde_json::Value;

/// Schema of Retell call event webhooks (`{"event", "call": {call_id, ...}}`).
pub const RETELL_WEBHOOK_SCHEMA: &str =
    include_str!("../../schemas/json/retell_webhook.schema.json");
/// Schema of Retell's synchronous `call_inbound` request.
pub const RETELL_CALL_INBOUND_SCHEMA: &str =
    include_str!("../../schemas/json/retell_call_inbound.schema.json");
/// Schema of Cal.com webhooks (default payload template).
pub const CALCOM_WEBHOOK_SCHEMA: &str =
    include_str!("../../schemas/json/calcom_webhook.schema.json");
/// Schema of our log record (raw body + `askpro-*` headers).
pub const LOG_RECORD_SCHEMA: &str = include_str!("../../schemas/json/log_record.schema.json");

/// At most this many schema errors are reported (the first ones are the useful ones).
const MAX_SCHEMA_ERRORS: usize = 20;
/// Each schema error message is cut to this many characters (they quote the offending value).
const MAX_ERROR_CHARS: usize = 300;

/// Why a body was refused. The messages are meant for the sender.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("body is empty; expected a JSON object")]
    Empty,
    #[error("body is not valid JSON: {message} at line {line}, column {column}")]
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "body is form-encoded (application/x-www-form-urlencoded), not JSON; Cal.com sends form \
         bodies when the webhook uses a custom payload template: remove the template so Cal.com \
         sends its default JSON payload"
    )]
    FormEncoded,
    #[error("body does not match {schema}: {}", errors.join("; "))]
    Schema {
        schema: &'static str,
        /// One entry per violation: `<JSON pointer>: <message>`.
        errors: Vec<String>,
    },
    /// The schema admits it, but the worker's own reader refuses it. The agreement tests
    /// keep this rare; checking at the door means the sender hears of it, not a ledger row.
    #[error("body matches {schema} but cannot be processed: {reason}")]
    Unreadable {
        schema: &'static str,
        reason: String,
    },
}

fn compile(name: &str, text: &str) -> Validator {
    let schema: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("embedded schema {name} is not JSON: {e}"));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("embedded schema {name} does not compile: {e}"))
}

static RETELL_WEBHOOK: LazyLock<Validator> =
    LazyLock::new(|| compile("retell_webhook.schema.json", RETELL_WEBHOOK_SCHEMA));
static RETELL_CALL_INBOUND: LazyLock<Validator> = LazyLock::new(|| {
    compile(
        "retell_call_inbound.schema.json",
        RETELL_CALL_INBOUND_SCHEMA,
    )
});
static CALCOM_WEBHOOK: LazyLock<Validator> =
    LazyLock::new(|| compile("calcom_webhook.schema.json", CALCOM_WEBHOOK_SCHEMA));
static LOG_RECORD: LazyLock<Validator> =
    LazyLock::new(|| compile("log_record.schema.json", LOG_RECORD_SCHEMA));

/// True when the body looks like `name=value&...` (and not like JSON).
fn looks_form_encoded(body: &[u8]) -> bool {
    let body = body.trim_ascii_start();
    let Some(eq) = body.iter().position(|&b| b == b'=') else {
        return false;
    };
    eq > 0
        && body[..eq]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_-.%+[]".contains(&b))
}

/// Parses `body` as JSON, telling form bodies and broken JSON apart.
fn parse(body: &[u8]) -> Result<Value, PayloadError> {
    if body.trim_ascii().is_empty() {
        return Err(PayloadError::Empty);
    }
    serde_json::from_slice(body).map_err(|e| {
        if looks_form_encoded(body) {
            PayloadError::FormEncoded
        } else {
            let message = e.to_string();
            // serde_json appends " at line L column C"; we report those separately.
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m)
                .to_owned();
            PayloadError::NotJson {
                line: e.line(),
                column: e.column(),
                message,
            }
        }
    })
}

fn truncate(mut s: String) -> String {
    if let Some((idx, _)) = s.char_indices().nth(MAX_ERROR_CHARS) {
        s.truncate(idx);
        s.push('…');
    }
    s
}

/// Validates `value` and lists every violation as `<pointer>: <message>`.
fn check(validator: &Validator, schema: &'static str, value: &Value) -> Result<(), PayloadError> {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(MAX_SCHEMA_ERRORS)
        .map(|e| {
            let path = e.instance_path.as_str();
            let path = if path.is_empty() { "(root)" } else { path };
            truncate(format!("{path}: {e}"))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PayloadError::Schema { schema, errors })
    }
}

fn str_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// What the ingress needs from a Retell call event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetellEvent {
    pub event: String,
    pub call_id: String,
    pub direction: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
}

impl RetellEvent {
    /// `retell:<event>:<call_id>`.
    pub fn dedup_key(&self) -> String {
        retell_key(&self.event, &self.call_id)
    }
}

/// Parses and validates a Retell call event webhook (`call_started`, `call_ended`, ...).
pub fn inspect_retell(body: &[u8]) -> Result<RetellEvent, PayloadError> {
    let value = parse(body)?;
    let schema = "retell_webhook.schema.json";
    check(&RETELL_WEBHOOK, schema, &value)?;
    read_retell_event(&value).map_err(|reason| PayloadError::Unreadable { schema, reason })?;
    Ok(RetellEvent {
        event: str_at(&value, "/event").unwrap_or_default(),
        call_id: str_at(&value, "/call/call_id").unwrap_or_default(),
        direction: str_at(&value, "/call/direction"),
        from_number: str_at(&value, "/call/from_number"),
        to_number: str_at(&value, "/call/to_number"),
    })
}

/// What routing needs from Retell's `call_inbound` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetellInbound {
    pub from_number: Option<String>,
    pub to_number: String,
    pub agent_id: Option<String>,
}

/// Parses and validates Retell's `call_inbound` request.
pub fn inspect_retell_inbound(body: &[u8]) -> Result<RetellInbound, PayloadError> {
    let value = parse(body)?;
    check(
        &RETELL_CALL_INBOUND,
        "retell_call_inbound.schema.json",
        &value,
    )?;
    Ok(RetellInbound {
        from_number: str_at(&value, "/call_inbound/from_number"),
        to_number: str_at(&value, "/call_inbound/to_number").unwrap_or_default(),
        agent_id: str_at(&value, "/call_inbound/agent_id"),
    })
}

/// What the ingress needs from a Cal.com webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalcomEvent {
    pub trigger_event: String,
    pub uid: Option<String>,
    pub created_at: Option<String>,
}

impl CalcomEvent {
    /// `calcom:<triggerEvent>:<uid>:<createdAt>` when both are present, else the body hash.
    pub fn dedup_key(&self, body: &[u8]) -> String {
        match (self.uid.as_deref(), self.created_at.as_deref()) {
            (Some(uid), Some(created_at)) => calcom_key(&self.trigger_event, uid, created_at),
            _ => body_key(Provider::Calcom, body),
        }
    }
}

/// Parses and validates a Cal.com webhook.
pub fn inspect_calcom(body: &[u8]) -> Result<CalcomEvent, PayloadError> {
    let value = parse(body)?;
    let schema = "calcom_webhook.schema.json";
    check(&CALCOM_WEBHOOK, schema, &value)?;
    read_calcom_webhook(&value).map_err(|reason| PayloadError::Unreadable { schema, reason })?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(CalcomEvent {
        trigger_event: str_at(&value, "/triggerEvent").unwrap_or_default(),
        uid: non_empty(str_at(&value, "/payload/uid")),
        created_at: non_empty(str_at(&value, "/createdAt")),
    })
}

/// Validates a log record rendered as JSON (`{key, value, headers: {askpro-*: ...}}`)
/// against `log_record.schema.json`.
pub fn validate_log_record(record: &Value) -> Result<(), PayloadError> {
    check(&LOG_RECORD, "log_record.schema.json", record)
}

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_compile() {
        for v in [
            &RETELL_WEBHOOK,
            &RETELL_CALL_INBOUND,
            &CALCOM_WEBHOOK,
            &LOG_RECORD,
        ] {
            LazyLock::force(v);
        }
    }

    #[test]
    fn every_schema_has_a_description() {
        for text in [
            RETELL_WEBHOOK_SCHEMA,
            RETELL_CALL_INBOUND_SCHEMA,
            CALCOM_WEBHOOK_SCHEMA,
            LOG_RECORD_SCHEMA,
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert!(v["description"].as_str().is_some_and(|d| d.len() > 20));
            assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
        }
    }

    #[test]
    fn retell_minimal_and_type_errors() {
        let ev = inspect_retell(br#"{"event":"call_ended","call":{"call_id":"c1"}}"#).unwrap();
        assert_eq!(ev.dedup_key(), "retell:call_ended:c1");
        assert_eq!(ev.direction, None);

        let err = inspect_retell(br#"{"event":"call_ended","call":{"call_id":null}}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/call/call_id: null is not of type \"string\""),
            "{msg}"
        );

        let body = br#"{"event":"call_ended","call":{"call_id":"c","direction":"sideways","duration_ms":"1"}}"#;
        let PayloadError::Schema { errors, .. } = inspect_retell(body).unwrap_err() else {
            panic!("expected schema error");
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("/call/direction:")));
        assert!(errors.iter().any(|e| e.starts_with("/call/duration_ms:")));
    }

    #[test]
    fn not_json_form_and_empty() {
        match inspect_retell(b"{\n\"event\":").unwrap_err() {
            PayloadError::NotJson { line, column, .. } => assert_eq!((line, column), (2, 8)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            inspect_calcom(b"triggerEvent=BOOKING_CREATED&uid=x"),
            Err(PayloadError::FormEncoded)
        ));
        assert!(matches!(inspect_calcom(b"  "), Err(PayloadError::Empty)));
        let err = inspect_retell(b"[1,2]").unwrap_err();
        assert!(err.to_string().contains("(root): "), "{err}");
    }

    #[test]
    fn calcom_booking_requires_uid_others_do_not() {
        let err =
            inspect_calcom(br#"{"triggerEvent":"BOOKING_CREATED","payload":{}}"#).unwrap_err();
        assert!(err.to_string().contains("uid"), "{err}");
        let ping = inspect_calcom(br#"{"triggerEvent":"PING","payload":{}}"#).unwrap();
        assert_eq!(ping.uid, None);
    }
}
